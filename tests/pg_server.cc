#include "pg_server.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace mp::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadTrimmed(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string ConninfoQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

struct Server {
  std::string admin;        ///< superuser conninfo; "" when unavailable
  std::string skip_reason;  ///< why unavailable, when the binaries are missing
  std::string error;        ///< why unavailable, when starting failed
  std::string own_state;    ///< state folder of a server this process started
  bool drop_databases = false;
  std::vector<std::string> databases;  ///< made by this process, dropped at exit
};

std::mutex mu;
Server* server = nullptr;  // leaked on purpose: the exit handler still needs it

// The same conninfo, pointing at another database (works for URIs and key=value alike).
std::string WithDbname(const std::string& conninfo, const std::string& dbname) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err != nullptr) PQfreemem(err);
  if (opts == nullptr) return conninfo + " dbname=" + dbname;
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) == "dbname" || o->val == nullptr || *o->val == '\0') continue;
    out += std::string(o->keyword) + "=" + ConninfoQuote(o->val) + " ";
  }
  PQconninfoFree(opts);
  return out + "dbname=" + dbname;
}

// Runs one statement as the admin; "" or libpq's error.
std::string AdminExec(const std::string& admin, const std::string& sql) {
  PGconn* conn = PQconnectdb(admin.c_str());
  std::string error;
  if (PQstatus(conn) != CONNECTION_OK) {
    error = PQerrorMessage(conn);
  } else {
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) != PGRES_COMMAND_OK) error = PQerrorMessage(conn);
    PQclear(res);
  }
  PQfinish(conn);
  return error;
}

void AtExit() {
  std::lock_guard<std::mutex> lock(mu);
  if (server == nullptr) return;
  if (server->drop_databases) {
    for (const std::string& db : server->databases) {
      (void)AdminExec(server->admin, "DROP DATABASE IF EXISTS \"" + db + "\" WITH (FORCE)");
    }
  }
  if (!server->own_state.empty()) {
    const std::string script = (SourceDir() / "tests/pg_server.sh").string();
    (void)std::system(("bash " + ShellQuote(script) + " stop " + ShellQuote(server->own_state) +
                       " >/dev/null 2>&1 </dev/null")
                          .c_str());
    std::error_code ec;
    fs::remove_all(server->own_state, ec);
  }
}

// Reads a state folder pg_server.sh wrote; false when it holds neither answer.
bool FromState(const fs::path& state, Server& s) {
  if (fs::exists(state / "conninfo")) {
    s.admin = ReadTrimmed(state / "conninfo");
    return true;
  }
  if (fs::exists(state / "skip")) {
    s.skip_reason = ReadTrimmed(state / "skip");
    return true;
  }
  return false;
}

void Start(Server& s) {
  if (const char* env = std::getenv("MODELPORT_TEST_PG"); env != nullptr && *env != '\0') {
    s.admin = env;
    s.drop_databases = true;
    return;
  }
  if (const char* dir = std::getenv("MODELPORT_TEST_PG_DIR"); dir != nullptr && *dir != '\0') {
    s.drop_databases = true;
    if (FromState(dir, s)) return;
    s.error = std::string("MODELPORT_TEST_PG_DIR=") + dir +
              " holds no server (did ctest's pg_server_start fixture fail? see its output)";
    return;
  }
  std::string tmpl = (fs::temp_directory_path() / "modelport-pgstate.XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    s.error = "mkdtemp failed for " + tmpl;
    return;
  }
  s.own_state = tmpl;
  const std::string script = (SourceDir() / "tests/pg_server.sh").string();
  const auto t0 = std::chrono::steady_clock::now();
  CommandResult r = Run("bash " + ShellQuote(script) + " start " + ShellQuote(tmpl) + " " +
                        std::to_string(getpid()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.exit_code != 0 || !FromState(tmpl, s)) {
    s.error = "pg_server.sh start failed (exit " + std::to_string(r.exit_code) + "): " + r.err;
    return;
  }
  if (!s.admin.empty()) {
    std::fprintf(stderr, "[pg_server] started a PostgreSQL server for this process in %.2f s\n",
                 seconds);
  }
}

}  // namespace

std::string PostgresConninfo(std::string* skip_reason) {
  std::lock_guard<std::mutex> lock(mu);
  if (server == nullptr) {
    server = new Server;
    Start(*server);
    std::atexit(AtExit);
  }
  Server& s = *server;
  if (!s.skip_reason.empty()) {
    if (skip_reason != nullptr) *skip_reason = s.skip_reason;
    return "";
  }
  if (!s.error.empty()) {
    ADD_FAILURE() << "PostgreSQL test server: " << s.error;
    if (skip_reason != nullptr) *skip_reason = "the PostgreSQL test server did not start";
    return "";
  }
  // Unique across processes sharing the server, and across pid reuse within one run.
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  const std::string db = "mp_test_" + std::to_string(getpid()) + "_" +
                         std::to_string(s.databases.size()) + "_" +
                         std::to_string(static_cast<uint64_t>(ticks) % 1000000000);
  const std::string error = AdminExec(s.admin, "CREATE DATABASE \"" + db + "\"");
  if (!error.empty()) {
    ADD_FAILURE() << "PostgreSQL test server: CREATE DATABASE " << db << ": " << error;
    if (skip_reason != nullptr) *skip_reason = "could not create a test database";
    return "";
  }
  s.databases.push_back(db);
  return WithDbname(s.admin, db);
}

}  // namespace mp::testing
