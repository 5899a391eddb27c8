// The registry's metadata database behind one small interface, so one piece of SQL serves both
// backends: SQLite (embedded, the default: one file beside the blobs) and PostgreSQL (a team's
// shared server, through libpq).
//
// SQL text uses PostgreSQL's positional placeholders $1, $2, ... in both backends (SQLite binds
// "$1" as a named parameter). Values are NULL, 64-bit integers, doubles or text (JSON is text).
//
// Writers are serialized: Begin() takes the database's single write lock (SQLite: BEGIN
// IMMEDIATE, waiting up to the busy timeout; PostgreSQL: BEGIN plus a transaction-scoped
// advisory lock), so read-modify-write sequences such as "next version number" or
// "compare-and-swap the production version" are atomic in both, with no retry loops. Writes
// are rare and short (blobs are stored before the transaction), so one lock is no bottleneck.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "modelport/core/status.h"

namespace mp::registry {

using SqlValue = std::variant<std::nullptr_t, int64_t, double, std::string>;
using SqlRow = std::vector<SqlValue>;

class Db {
 public:
  virtual ~Db() = default;

  /// "sqlite" or "postgresql": for the few statements whose syntax differs (schema types).
  virtual std::string_view dialect() const = 0;

  /// Runs one statement with `params` bound to $1, $2, ...; returns the rows it produced.
  /// Constraint violations are AlreadyExists (unique, primary key) or InvalidArgument (others);
  /// other failures IoError; every message names the backend and the statement's first words.
  virtual Result<std::vector<SqlRow>> Query(std::string_view sql,
                                            const std::vector<SqlValue>& params = {}) = 0;

  /// Runs a script of statements without parameters (schema creation, migrations).
  virtual Status ExecScript(std::string_view sql) = 0;

  /// Starts a write transaction holding the database's write lock (see above).
  virtual Status Begin() = 0;
  virtual Status Commit() = 0;
  /// Rolls back the open transaction; a no-op when none is open.
  virtual Status Rollback() = 0;
};

/// Opens (creating when missing) an SQLite database file: WAL journal, synchronous=FULL,
/// foreign keys on, a busy timeout of `busy_timeout_ms`.
Result<std::unique_ptr<Db>> OpenSqlite(const std::string& path, int busy_timeout_ms = 30000);

/// Connects to PostgreSQL with a libpq connection string ("postgresql://user@host:port/db" or
/// "host=... port=... dbname=...").
Result<std::unique_ptr<Db>> OpenPostgres(const std::string& conninfo);

/// Rolls back on scope exit unless Commit() was called: every early return inside a
/// transaction leaves the database as it was.
class Transaction {
 public:
  static Result<Transaction> Begin(Db& db);
  Transaction(Transaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction() {
    if (db_ != nullptr) (void)db_->Rollback();
  }
  Status Commit() {
    Db* db = db_;
    db_ = nullptr;
    return db->Commit();
  }

 private:
  explicit Transaction(Db& db) : db_(&db) {}
  Db* db_;
};

inline Result<Transaction> Transaction::Begin(Db& db) {
  MP_RETURN_IF_ERROR(db.Begin());
  return Transaction(db);
}

/// Accessors for result cells: InvalidArgument-free conveniences for code that knows its schema.
inline int64_t AsInt(const SqlValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (const auto* s = std::get_if<std::string>(&v)) return std::strtoll(s->c_str(), nullptr, 10);
  return 0;
}
inline std::string AsText(const SqlValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return std::to_string(*d);
  return {};
}
inline bool IsNull(const SqlValue& v) { return std::holds_alternative<std::nullptr_t>(v); }

}  // namespace mp::registry
