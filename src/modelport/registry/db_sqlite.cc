// The SQLite backend of the registry's metadata database (see db.h).
#include <sqlite3.h>

#include <cctype>
#include <charconv>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "modelport/registry/db.h"

namespace mp::registry {
namespace internal {

// Shared with db_postgres.cc (declared there): the pieces of every error message.
std::string OneLine(std::string_view text) {
  // Runs of white space become one space; a line break between sentences becomes "; ".
  std::string out;
  bool space = false, line_break = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      line_break = line_break || (space && (c == '\n' || c == '\r'));
      continue;
    }
    if (space) out += line_break && out.back() != '.' && out.back() != ':' ? "; " : " ";
    space = line_break = false;
    out += c;
  }
  return out;
}

std::string StatementWords(std::string_view sql) {
  constexpr size_t kMaxWords = 4, kMaxChars = 48;
  std::string out;
  size_t words = 0;
  for (size_t i = 0; i < sql.size() && words < kMaxWords;) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
    const size_t start = i;
    while (i < sql.size() && !std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
    if (i == start) break;
    if (!out.empty()) out += ' ';
    out.append(sql.substr(start, i - start));
    ++words;
  }
  if (out.size() > kMaxChars) out = out.substr(0, kMaxChars);
  if (out.size() < OneLine(sql).size()) out += " ...";
  return out;
}

}  // namespace internal

namespace {

using internal::OneLine;
using internal::StatementWords;

struct StmtDeleter {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

bool IsBlank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  }
  return true;
}

class SqliteDb final : public Db {
 public:
  SqliteDb(std::string path, sqlite3* db, int busy_timeout_ms)
      : path_(std::move(path)), db_(db), busy_timeout_ms_(busy_timeout_ms) {}
  ~SqliteDb() override {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close_v2(db_);
  }

  std::string_view dialect() const override { return "sqlite"; }

  Status Configure() {
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, busy_timeout_ms_);
    // journal_mode answers with the mode now in force; anything but "wal" means the file
    // system (or an in-memory database) refused it.
    MP_ASSIGN_OR_RETURN(auto rows, Query("PRAGMA journal_mode=WAL", {}));
    const std::string mode = rows.empty() ? std::string() : AsText(rows[0][0]);
    if (mode != "wal" && !(path_ == ":memory:" && mode == "memory")) {
      return IoError("sqlite " + path_ + ": PRAGMA journal_mode=WAL: journal mode stayed '" + mode +
                     "'");
    }
    return ExecScript("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
  }

  Result<std::vector<SqlRow>> Query(std::string_view sql,
                                    const std::vector<SqlValue>& params) override {
    const char* tail = nullptr;
    MP_ASSIGN_OR_RETURN(Stmt stmt, Prepare(sql, &tail));
    const std::string_view rest(tail, sql.data() + sql.size() - tail);
    if (!IsBlank(rest)) {
      return IoError(Where(sql) + "more than one statement (Query runs one; use ExecScript)");
    }
    if (stmt == nullptr) return std::vector<SqlRow>();  // only whitespace or comments
    MP_RETURN_IF_ERROR(Bind(stmt.get(), sql, params));
    return Step(stmt.get(), sql);
  }

  Status ExecScript(std::string_view sql) override {
    while (!IsBlank(sql)) {
      const char* tail = nullptr;
      MP_ASSIGN_OR_RETURN(Stmt stmt, Prepare(sql, &tail));
      const std::string_view this_sql(sql.data(), tail - sql.data());
      if (stmt != nullptr) {
        if (sqlite3_bind_parameter_count(stmt.get()) != 0) {
          return IoError(Where(this_sql) + "a script cannot take parameters");
        }
        MP_RETURN_IF_ERROR(Step(stmt.get(), this_sql).status());
      }
      sql.remove_prefix(tail - sql.data());
    }
    return Status::Ok();
  }

  Status Begin() override {
    Status s = ExecScript("BEGIN IMMEDIATE");
    if (!s.ok() && s.message().find("database is locked") != std::string::npos) {
      return IoError(Where("BEGIN IMMEDIATE") + "database is locked (another writer held it for " +
                     std::to_string(busy_timeout_ms_) + " ms, the busy timeout)");
    }
    return s;
  }

  Status Commit() override {
    Status s = ExecScript("COMMIT");
    // A COMMIT that failed may leave the transaction open; nobody would roll it back later
    // (Transaction forgets the database before committing), so end it here.
    if (!s.ok()) (void)Rollback();
    return s;
  }

  Status Rollback() override {
    if (sqlite3_get_autocommit(db_) != 0) return Status::Ok();
    return ExecScript("ROLLBACK");
  }

 private:
  std::string Where(std::string_view sql) const {
    return "sqlite " + path_ + ": " + StatementWords(sql) + ": ";
  }

  Status Error(int rc, std::string_view sql) const {
    std::string msg = Where(sql) + OneLine(sqlite3_errmsg(db_));
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return AlreadyExists(std::move(msg));
    }
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return InvalidArgument(std::move(msg));
    return IoError(std::move(msg));
  }

  Result<Stmt> Prepare(std::string_view sql, const char** tail) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, tail);
    Stmt stmt(raw);
    if (rc != SQLITE_OK) return Error(rc, sql);
    return stmt;
  }

  // Every parameter the statement names must be one of $1..$N, and every given value must be
  // used: PostgreSQL rejects both mistakes too, so a statement behaves alike in both backends.
  Status Bind(sqlite3_stmt* stmt, std::string_view sql, const std::vector<SqlValue>& params) {
    const int count = sqlite3_bind_parameter_count(stmt);
    std::vector<bool> used(params.size(), false);
    for (int i = 1; i <= count; ++i) {
      const char* name = sqlite3_bind_parameter_name(stmt, i);
      const std::string_view n = name == nullptr ? std::string_view("?") : name;
      size_t k = 0;
      const bool numbered =
          n.size() >= 2 && n[0] == '$' && n[1] != '0' &&
          std::from_chars(n.data() + 1, n.data() + n.size(), k).ptr == n.data() + n.size();
      if (!numbered) {
        return IoError(Where(sql) + "parameter '" + std::string(n) +
                       "' is not of the form $1, $2, ...");
      }
      if (k > params.size()) {
        return IoError(Where(sql) + "the statement uses $" + std::to_string(k) + " but " + "only " +
                       std::to_string(params.size()) + " given");
      }
      used[k - 1] = true;
      const SqlValue& v = params[k - 1];
      int rc = SQLITE_OK;
      if (const auto* iv = std::get_if<int64_t>(&v)) {
        rc = sqlite3_bind_int64(stmt, i, *iv);
      } else if (const auto* dv = std::get_if<double>(&v)) {
        rc = sqlite3_bind_double(stmt, i, *dv);
      } else if (const auto* sv = std::get_if<std::string>(&v)) {
        rc = sqlite3_bind_text64(stmt, i, sv->data(), sv->size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      } else {
        rc = sqlite3_bind_null(stmt, i);
      }
      if (rc != SQLITE_OK) return Error(rc, sql);
    }
    for (size_t k = 0; k < used.size(); ++k) {
      if (!used[k]) {
        return IoError(Where(sql) + "parameter $" + std::to_string(k + 1) +
                       " was given but the statement does not use it");
      }
    }
    return Status::Ok();
  }

  Result<std::vector<SqlRow>> Step(sqlite3_stmt* stmt, std::string_view sql) {
    std::vector<SqlRow> rows;
    const int columns = sqlite3_column_count(stmt);
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) return rows;
      if (rc != SQLITE_ROW) return Error(rc, sql);
      SqlRow& row = rows.emplace_back();
      row.reserve(columns);
      for (int c = 0; c < columns; ++c) {
        switch (sqlite3_column_type(stmt, c)) {
          case SQLITE_INTEGER:
            row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(stmt, c)));
            break;
          case SQLITE_FLOAT:
            row.emplace_back(sqlite3_column_double(stmt, c));
            break;
          case SQLITE_TEXT: {
            const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
            row.emplace_back(std::string(p, sqlite3_column_bytes(stmt, c)));
            break;
          }
          case SQLITE_BLOB: {
            const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, c));
            const int n = sqlite3_column_bytes(stmt, c);
            row.emplace_back(n == 0 ? std::string() : std::string(p, n));
            break;
          }
          default:
            row.emplace_back(nullptr);
        }
      }
    }
  }

  std::string path_;
  sqlite3* db_;
  int busy_timeout_ms_;
};

}  // namespace

Result<std::unique_ptr<Db>> OpenSqlite(const std::string& path, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close_v2(raw);
    return IoError("sqlite " + path + ": open: " + OneLine(msg));
  }
  auto db = std::make_unique<SqliteDb>(path, raw, busy_timeout_ms);
  MP_RETURN_IF_ERROR(db->Configure());
  return std::unique_ptr<Db>(std::move(db));
}

}  // namespace mp::registry
