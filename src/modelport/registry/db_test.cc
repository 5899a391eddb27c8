// The metadata database layer, run against both backends: SQLite on a temporary file and a real
// PostgreSQL server (tests/pg_server.h; skipped when the server binaries are absent).
#include "modelport/registry/db.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "pg_server.h"
#include "test_util.h"

namespace mp::registry {
namespace {

using ::mp::testing::TempDir;

class DbTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      std::string why;
      conninfo_ = ::mp::testing::PostgresConninfo(&why);
      if (conninfo_.empty()) GTEST_SKIP() << why;
    }
    auto db = Open();
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  /// A new connection to the test's database.
  Result<std::unique_ptr<Db>> Open() {
    if (GetParam() == "sqlite") return OpenSqlite(tmp_.File("registry.db"));
    return OpenPostgres(conninfo_);
  }

  /// What every message of this backend starts with.
  std::string Prefix() const { return GetParam() == "sqlite" ? "sqlite " : "postgresql "; }

  int64_t Count(Db& db, const std::string& table) {
    auto rows = db.Query("SELECT COUNT(*) FROM " + table);
    EXPECT_TRUE(rows.ok()) << rows.error().ToString();
    if (!rows.ok() || rows->size() != 1) return -1;
    EXPECT_TRUE(std::holds_alternative<int64_t>((*rows)[0][0]));
    return AsInt((*rows)[0][0]);
  }

  TempDir tmp_;
  std::string conninfo_;
  std::unique_ptr<Db> db_;
};

::testing::AssertionResult OneLineError(const Status& s, const std::string& prefix,
                                        const std::string& words) {
  if (s.ok()) return ::testing::AssertionFailure() << "expected an error, got OK";
  const std::string& m = s.message();
  if (m.find('\n') != std::string::npos) {
    return ::testing::AssertionFailure() << "message spans lines: " << m;
  }
  if (m.rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure() << "message does not start with '" << prefix << "': " << m;
  }
  if (m.find(words) == std::string::npos) {
    return ::testing::AssertionFailure() << "message does not name '" << words << "': " << m;
  }
  return ::testing::AssertionSuccess();
}

TEST_P(DbTest, ReportsItsDialect) { EXPECT_EQ(db_->dialect(), GetParam()); }

TEST_P(DbTest, RoundTripsEveryValueType) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE t (id BIGINT PRIMARY KEY, i BIGINT, "
                              "d DOUBLE PRECISION, s TEXT)")
                  .ok());
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  const std::string kText = "it's \"quoted\"; \\ back\\slash -- not a comment, ünïcødé 模型 🚀";
  const std::vector<SqlRow> rows = {
      {int64_t{1}, kMax, 0.1, kText},
      {int64_t{2}, kMin, -1.7976931348623157e308, std::string()},
      {int64_t{3}, nullptr, nullptr, nullptr},
      {int64_t{4}, int64_t{0}, 4.9406564584124654e-324, std::string("$1 ? :x")},
  };
  for (const SqlRow& row : rows) {
    auto r = db_->Query("INSERT INTO t (id, i, d, s) VALUES ($1, $2, $3, $4)", row);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_TRUE(r->empty());
  }
  auto got = db_->Query("SELECT id, i, d, s FROM t ORDER BY id");
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  ASSERT_EQ(got->size(), rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    ASSERT_EQ((*got)[r].size(), 4u);
    for (size_t c = 0; c < 4; ++c) {
      EXPECT_EQ((*got)[r][c].index(), rows[r][c].index()) << "row " << r << " column " << c;
      EXPECT_TRUE((*got)[r][c] == rows[r][c]) << "row " << r << " column " << c;
    }
  }
  EXPECT_EQ(AsText((*got)[0][3]), kText);
  EXPECT_TRUE(IsNull((*got)[2][1]));

  // Computed columns are typed too: counts are integers, decimal literals doubles.
  auto computed = db_->Query("SELECT COUNT(*), 1.5, MAX(i) FROM t");
  ASSERT_TRUE(computed.ok()) << computed.error().ToString();
  ASSERT_EQ(computed->size(), 1u);
  EXPECT_TRUE((*computed)[0][0] == SqlValue(int64_t{4}));
  EXPECT_TRUE((*computed)[0][1] == SqlValue(1.5));
  EXPECT_TRUE((*computed)[0][2] == SqlValue(kMax));
}

TEST_P(DbTest, BindsNumberedPlaceholdersInAnyOrderAndRepeated) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT);"
                              "INSERT INTO kv VALUES ('a', 1);"
                              "INSERT INTO kv VALUES ('b', 2);"
                              "INSERT INTO kv VALUES ('c', 3);")
                  .ok());
  auto r = db_->Query("SELECT k FROM kv WHERE v >= $2 AND v <= $2 + $1 ORDER BY k",
                      {int64_t{1}, int64_t{2}});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ(AsText((*r)[0][0]), "b");
  EXPECT_EQ(AsText((*r)[1][0]), "c");

  // An update reports no rows; RETURNING does.
  auto u = db_->Query("UPDATE kv SET v = $1 WHERE k = $2 RETURNING k, v",
                      {int64_t{10}, std::string("a")});
  ASSERT_TRUE(u.ok()) << u.error().ToString();
  ASSERT_EQ(u->size(), 1u);
  EXPECT_TRUE((*u)[0][1] == SqlValue(int64_t{10}));
}

TEST_P(DbTest, ParameterMismatchesAreErrors) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT)").ok());
  auto missing = db_->Query("SELECT k FROM kv WHERE k = $1 AND v = $2", {std::string("a")});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), StatusCode::kIoError) << missing.error().ToString();
  EXPECT_TRUE(OneLineError(missing.error(), Prefix(), "SELECT k FROM kv"));

  auto unused = db_->Query("SELECT k FROM kv", {std::string("a")});
  ASSERT_FALSE(unused.ok());
  EXPECT_EQ(unused.error().code(), StatusCode::kIoError) << unused.error().ToString();
  EXPECT_TRUE(OneLineError(unused.error(), Prefix(), "SELECT k FROM kv"));

  auto two = db_->Query("SELECT 1; SELECT 2");
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().code(), StatusCode::kIoError) << two.error().ToString();
}

TEST_P(DbTest, ConstraintViolationsMapToCodes) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE models (id BIGINT PRIMARY KEY, name TEXT NOT NULL "
                              "UNIQUE);"
                              "CREATE TABLE versions (model_id BIGINT NOT NULL REFERENCES "
                              "models(id), n BIGINT NOT NULL, PRIMARY KEY (model_id, n));")
                  .ok());
  ASSERT_TRUE(
      db_->Query("INSERT INTO models (id, name) VALUES ($1, $2)", {int64_t{1}, std::string("bert")})
          .ok());

  auto dup_name = db_->Query("INSERT INTO models (id, name) VALUES ($1, $2)",
                             {int64_t{2}, std::string("bert")});
  ASSERT_FALSE(dup_name.ok());
  EXPECT_EQ(dup_name.error().code(), StatusCode::kAlreadyExists) << dup_name.error().ToString();
  EXPECT_TRUE(OneLineError(dup_name.error(), Prefix(), "INSERT INTO models"));

  auto dup_key =
      db_->Query("INSERT INTO models (id, name) VALUES ($1, $2)", {int64_t{1}, std::string("gpt")});
  ASSERT_FALSE(dup_key.ok());
  EXPECT_EQ(dup_key.error().code(), StatusCode::kAlreadyExists) << dup_key.error().ToString();

  auto null_name =
      db_->Query("INSERT INTO models (id, name) VALUES ($1, $2)", {int64_t{3}, nullptr});
  ASSERT_FALSE(null_name.ok());
  EXPECT_EQ(null_name.error().code(), StatusCode::kInvalidArgument) << null_name.error().ToString();
  EXPECT_TRUE(OneLineError(null_name.error(), Prefix(), "INSERT INTO models"));

  // Foreign keys are enforced (SQLite needs PRAGMA foreign_keys=ON for that).
  auto orphan =
      db_->Query("INSERT INTO versions (model_id, n) VALUES ($1, $2)", {int64_t{99}, int64_t{1}});
  ASSERT_FALSE(orphan.ok());
  EXPECT_EQ(orphan.error().code(), StatusCode::kInvalidArgument) << orphan.error().ToString();
  EXPECT_TRUE(OneLineError(orphan.error(), Prefix(), "INSERT INTO versions"));

  EXPECT_EQ(Count(*db_, "models"), 1);
  EXPECT_EQ(Count(*db_, "versions"), 0);
}

TEST_P(DbTest, OtherErrorsAreOneLineIoErrors) {
  auto r = db_->Query("SELECT nope FROM no_such_table WHERE x = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(r.error(), Prefix(), "SELECT nope FROM no_such_table"));
  EXPECT_NE(r.error().message().find("no_such_table"), std::string::npos) << r.error().message();

  Status s = db_->ExecScript("CREATE TABLE a (x BIGINT);\nCREATE TABLE a (x BIGINT);");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(s, Prefix(), "CREATE TABLE a"));
}

TEST_P(DbTest, TransactionRollsBackOnScopeExit) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE t (x BIGINT)").ok());
  {
    auto tx = Transaction::Begin(*db_);
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    ASSERT_TRUE(db_->Query("INSERT INTO t (x) VALUES ($1)", {int64_t{1}}).ok());
    EXPECT_EQ(Count(*db_, "t"), 1);  // visible inside the transaction
    Status nested = db_->Begin();
    EXPECT_EQ(nested.code(), StatusCode::kIoError) << nested.ToString();
    EXPECT_TRUE(OneLineError(nested, Prefix(), "BEGIN"));
  }
  EXPECT_EQ(Count(*db_, "t"), 0);
  // The write lock went with it: a new transaction starts and commits.
  {
    auto tx = Transaction::Begin(*db_);
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    ASSERT_TRUE(db_->Query("INSERT INTO t (x) VALUES ($1)", {int64_t{2}}).ok());
    ASSERT_TRUE(tx->Commit().ok());
  }
  EXPECT_EQ(Count(*db_, "t"), 1);
  // A failed statement inside a transaction still rolls back everything before it.
  {
    auto tx = Transaction::Begin(*db_);
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    ASSERT_TRUE(db_->Query("INSERT INTO t (x) VALUES ($1)", {int64_t{3}}).ok());
    EXPECT_FALSE(db_->Query("INSERT INTO nowhere (x) VALUES (1)").ok());
  }
  EXPECT_EQ(Count(*db_, "t"), 1);
  EXPECT_TRUE(db_->Rollback().ok());  // nothing open: a no-op
  // Another connection sees the committed row only.
  auto other = Open();
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  EXPECT_EQ(Count(**other, "t"), 1);
}

TEST_P(DbTest, BeginSerializesWriters) {
  ASSERT_TRUE(db_->ExecScript("CREATE TABLE counter (n BIGINT NOT NULL)").ok());
  ASSERT_TRUE(db_->Query("INSERT INTO counter (n) VALUES (0)").ok());
  auto second = Open();
  ASSERT_TRUE(second.ok()) << second.error().ToString();

  ASSERT_TRUE(db_->Begin().ok());
  ASSERT_TRUE(db_->Query("UPDATE counter SET n = n + 1").ok());

  std::atomic<bool> first_committed{false};
  bool began_after_commit = false;
  Status second_status;
  int64_t seen = -1;
  std::thread writer([&] {
    Db& db = **second;
    second_status = db.Begin();
    if (!second_status.ok()) return;
    began_after_commit = first_committed.load();
    // A read-modify-write under the lock sees the first writer's committed value.
    auto rows = db.Query("SELECT n FROM counter");
    if (rows.ok() && rows->size() == 1) seen = AsInt((*rows)[0][0]);
    second_status = db.Query("UPDATE counter SET n = $1", {seen + 1}).status();
    if (second_status.ok()) second_status = db.Commit();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  first_committed = true;
  ASSERT_TRUE(db_->Commit().ok());
  writer.join();

  ASSERT_TRUE(second_status.ok()) << second_status.ToString();
  EXPECT_TRUE(began_after_commit) << "the second Begin returned while the first held the lock";
  EXPECT_EQ(seen, 1);
  auto rows = db_->Query("SELECT n FROM counter");
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE((*rows)[0][0] == SqlValue(int64_t{2}));
}

INSTANTIATE_TEST_SUITE_P(Backends, DbTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST(DbSqlite, OpensWithWalFullSyncAndForeignKeys) {
  TempDir tmp;
  auto db = OpenSqlite(tmp.File("r.db"));
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  auto mode = (*db)->Query("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  EXPECT_TRUE((*mode)[0][0] == SqlValue(std::string("wal")));
  auto sync = (*db)->Query("PRAGMA synchronous");
  ASSERT_TRUE(sync.ok());
  EXPECT_TRUE((*sync)[0][0] == SqlValue(int64_t{2}));  // FULL
  auto fk = (*db)->Query("PRAGMA foreign_keys");
  ASSERT_TRUE(fk.ok());
  EXPECT_TRUE((*fk)[0][0] == SqlValue(int64_t{1}));
}

TEST(DbSqlite, BeginGivesUpAfterTheBusyTimeout) {
  TempDir tmp;
  auto a = OpenSqlite(tmp.File("r.db"));
  auto b = OpenSqlite(tmp.File("r.db"), /*busy_timeout_ms=*/100);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Begin().ok());
  Status s = (*b)->Begin();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_TRUE(
      OneLineError(s, "sqlite " + tmp.File("r.db") + ": BEGIN IMMEDIATE: ", "database is locked"));
  ASSERT_TRUE((*a)->Commit().ok());
  EXPECT_TRUE((*b)->Begin().ok());
  EXPECT_TRUE((*b)->Rollback().ok());
}

TEST(DbSqlite, OpenFailureIsOneLineIoError) {
  auto db = OpenSqlite("/nonexistent-dir/sub/r.db");
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), StatusCode::kIoError);
  EXPECT_EQ(db.error().message(),
            "sqlite /nonexistent-dir/sub/r.db: open: unable to open "
            "database file");
}

TEST(DbSqlite, NotADatabaseIsAnError) {
  TempDir tmp;
  ::mp::testing::WriteBytes(tmp.File("junk.db"), std::vector<uint8_t>(4096, 'x'));
  auto db = OpenSqlite(tmp.File("junk.db"));
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(db.error(), "sqlite " + tmp.File("junk.db") + ": PRAGMA journal_mode",
                           "file is not a database"));
}

// Needs no server: port 1 on loopback refuses the connection.
TEST(DbOpen, BadConninfoIsOneLineIoErrorWithoutThePassword) {
  auto refused = OpenPostgres(
      "host=127.0.0.1 port=1 user=someone password=hunter2secret dbname=nope connect_timeout=5");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(refused.error(), "postgresql 127.0.0.1:1/nope: connect: ", "refused"));
  EXPECT_EQ(refused.error().message().find("hunter2secret"), std::string::npos);

  auto uri = OpenPostgres("postgresql://someone:hunter2secret@127.0.0.1:1/nope");
  ASSERT_FALSE(uri.ok());
  EXPECT_EQ(uri.error().code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(uri.error(), "postgresql 127.0.0.1:1/nope: connect: ", "refused"));
  EXPECT_EQ(uri.error().message().find("hunter2secret"), std::string::npos);

  auto garbage = OpenPostgres("postgresql://someone:hunter2secret@127.0.0.1:1/nope?bogus=1");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code(), StatusCode::kIoError);
  EXPECT_TRUE(OneLineError(garbage.error(),
                           "postgresql (unparsable connection string): connect: ", "bogus"));
  EXPECT_EQ(garbage.error().message().find("hunter2secret"), std::string::npos);
}

}  // namespace
}  // namespace mp::registry
