// The PostgreSQL backend of the registry's metadata database (see db.h), through libpq.
#include <libpq-fe.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "modelport/registry/db.h"

namespace mp::registry {
namespace internal {
// Defined in db_sqlite.cc: message text on one line, and a statement's first words.
std::string OneLine(std::string_view text);
std::string StatementWords(std::string_view sql);
}  // namespace internal

namespace {

using internal::OneLine;
using internal::StatementWords;

// Type OIDs from PostgreSQL's catalog (src/include/catalog/pg_type.dat); they are fixed, and
// libpq-dev does not ship the server header that names them.
constexpr Oid kBoolOid = 16, kInt8Oid = 20, kInt2Oid = 21, kInt4Oid = 23, kFloat4Oid = 700,
              kFloat8Oid = 701, kNumericOid = 1700;

// The key of the advisory lock that serializes writers: "modelpor" as a big-endian integer, so
// it is unlikely to collide with another application's lock on a shared server.
constexpr int64_t kWriteLockKey = 0x6d6f64656c706f72;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

struct ConninfoDeleter {
  void operator()(PQconninfoOption* o) const { PQconninfoFree(o); }
};

// The parts of a conninfo that are safe to print, and its password (to scrub from messages,
// should libpq ever quote it back).
struct ConnTarget {
  std::string where;  ///< "host:port/dbname" as far as the conninfo says
  std::string password;
};

ConnTarget DescribeConninfo(const std::string& conninfo) {
  ConnTarget t;
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> opts(PQconninfoParse(conninfo.c_str(), &err));
  if (err != nullptr) PQfreemem(err);
  if (opts == nullptr) {
    t.where = "(unparsable connection string)";
    // Best effort for the scrub: the text between "user:" and "@" of a URI, or password=...
    const size_t scheme = conninfo.find("://");
    if (scheme != std::string::npos) {
      const size_t at = conninfo.find('@', scheme + 3);
      const size_t colon = conninfo.find(':', scheme + 3);
      if (at != std::string::npos && colon != std::string::npos && colon < at) {
        t.password = conninfo.substr(colon + 1, at - colon - 1);
      }
    }
    const size_t pw = conninfo.find("password=");
    if (t.password.empty() && pw != std::string::npos) {
      const size_t end = conninfo.find_first_of(" &", pw);
      t.password = conninfo.substr(pw + 9, end == std::string::npos ? end : end - pw - 9);
    }
    return t;
  }
  std::string host, hostaddr, port, dbname;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    const std::string_view key = o->keyword;
    const std::string value = o->val != nullptr ? o->val : "";
    if (key == "host") host = value;
    if (key == "hostaddr") hostaddr = value;
    if (key == "port") port = value;
    if (key == "dbname") dbname = value;
    if (key == "password") t.password = value;
  }
  if (host.empty()) host = hostaddr.empty() ? "localhost" : hostaddr;
  t.where = host + (port.empty() ? "" : ":" + port) + (dbname.empty() ? "" : "/" + dbname);
  return t;
}

std::string Scrub(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

std::string FormatDouble(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", d);
  return buf;
}

class PostgresDb final : public Db {
 public:
  PostgresDb(PGconn* conn, ConnTarget target) : conn_(conn), target_(std::move(target)) {}
  ~PostgresDb() override { PQfinish(conn_); }

  std::string_view dialect() const override { return "postgresql"; }

  Result<std::vector<SqlRow>> Query(std::string_view sql,
                                    const std::vector<SqlValue>& params) override {
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (size_t i = 0; i < params.size(); ++i) {
      const SqlValue& v = params[i];
      if (const auto* iv = std::get_if<int64_t>(&v)) {
        text[i] = std::to_string(*iv);
      } else if (const auto* dv = std::get_if<double>(&v)) {
        text[i] = FormatDouble(*dv);
      } else if (const auto* sv = std::get_if<std::string>(&v)) {
        if (sv->find('\0') != std::string::npos) {
          return InvalidArgument(Where(sql) + "parameter $" + std::to_string(i + 1) +
                                 " holds a NUL character, which PostgreSQL text cannot store");
        }
        text[i] = *sv;
      } else {
        continue;  // NULL: the pointer stays null
      }
      values[i] = text[i].c_str();
    }
    const std::string statement(sql);
    PgResult res(PQexecParams(conn_, statement.c_str(), static_cast<int>(params.size()), nullptr,
                              values.data(), nullptr, nullptr, 0));
    MP_RETURN_IF_ERROR(Check(res.get(), sql));
    return Rows(res.get());
  }

  Status ExecScript(std::string_view sql) override {
    const std::string script(sql);
    // PQexec runs every statement of the script; its result is the last one's, and it stops at
    // the first error, which is then the result.
    PgResult res(PQexec(conn_, script.c_str()));
    return Check(res.get(), sql);
  }

  Status Begin() override {
    // PostgreSQL only warns about a nested BEGIN; refuse it as SQLite does.
    if (PQtransactionStatus(conn_) != PQTRANS_IDLE) {
      return IoError(Where("BEGIN") + "a transaction is already open on this connection");
    }
    MP_RETURN_IF_ERROR(ExecScript("BEGIN"));
    Status s =
        Query("SELECT pg_advisory_xact_lock(" + std::to_string(kWriteLockKey) + ")", {}).status();
    if (!s.ok()) (void)Rollback();
    return s;
  }

  Status Commit() override {
    Status s = ExecScript("COMMIT");
    if (!s.ok()) (void)Rollback();
    return s;
  }

  Status Rollback() override {
    const PGTransactionStatusType ts = PQtransactionStatus(conn_);
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR) return Status::Ok();
    return ExecScript("ROLLBACK");
  }

 private:
  std::string Where(std::string_view sql) const {
    return "postgresql " + target_.where + ": " + StatementWords(sql) + ": ";
  }

  Status Check(const PGresult* res, std::string_view sql) const {
    const ExecStatusType st = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
      return Status::Ok();
    }
    const char* state = res == nullptr ? nullptr : PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char* primary =
        res == nullptr ? nullptr : PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char* detail = res == nullptr ? nullptr : PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    std::string why = primary != nullptr ? primary : PQerrorMessage(conn_);
    if (st != PGRES_FATAL_ERROR && primary == nullptr) {
      why = std::string("unexpected result ") + PQresStatus(st);
    }
    if (detail != nullptr) why += std::string(" (") + detail + ")";
    std::string msg = Where(sql) + Scrub(OneLine(why), target_.password);
    const std::string_view code = state != nullptr ? state : "";
    if (code == "23505") return AlreadyExists(std::move(msg));
    if (code.size() == 5 && code.substr(0, 2) == "23") return InvalidArgument(std::move(msg));
    return IoError(std::move(msg));
  }

  static std::vector<SqlRow> Rows(const PGresult* res) {
    const int n = PQntuples(res), columns = PQnfields(res);
    std::vector<SqlRow> rows(n);
    for (int r = 0; r < n; ++r) {
      rows[r].reserve(columns);
      for (int c = 0; c < columns; ++c) {
        if (PQgetisnull(res, r, c)) {
          rows[r].emplace_back(nullptr);
          continue;
        }
        const char* v = PQgetvalue(res, r, c);
        switch (PQftype(res, c)) {
          case kInt2Oid:
          case kInt4Oid:
          case kInt8Oid:
            rows[r].emplace_back(static_cast<int64_t>(std::strtoll(v, nullptr, 10)));
            break;
          case kFloat4Oid:
          case kFloat8Oid:
          case kNumericOid:
            rows[r].emplace_back(std::strtod(v, nullptr));
            break;
          case kBoolOid:  // SQLite has no booleans; 0/1 keeps the backends alike
            rows[r].emplace_back(static_cast<int64_t>(v[0] == 't' ? 1 : 0));
            break;
          default:
            rows[r].emplace_back(std::string(v, PQgetlength(res, r, c)));
        }
      }
    }
    return rows;
  }

  PGconn* conn_;
  ConnTarget target_;
};

void IgnoreNotice(void*, const char*) {}

}  // namespace

Result<std::unique_ptr<Db>> OpenPostgres(const std::string& conninfo) {
  ConnTarget target = DescribeConninfo(conninfo);
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (conn == nullptr) return IoError("postgresql " + target.where + ": connect: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = Scrub(OneLine(PQerrorMessage(conn)), target.password);
    PQfinish(conn);
    return IoError("postgresql " + target.where + ": connect: " + msg);
  }
  // Notices ("relation already exists, skipping") would go to stderr; the registry reports
  // through Status only.
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  auto db = std::make_unique<PostgresDb>(conn, std::move(target));
  // Text results must parse back exactly: shortest round-trip float output, UTF-8 text.
  MP_RETURN_IF_ERROR(db->ExecScript("SET extra_float_digits = 3; SET client_encoding = 'UTF8'"));
  return std::unique_ptr<Db>(std::move(db));
}

}  // namespace mp::registry
