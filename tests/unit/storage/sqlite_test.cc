// The SQLite wrapper against real database files: pragmas, every column type, statement reuse,
// transactions, error mapping, read-only connections and files that are not databases.
#include "ailb/storage/sqlite.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace ailb::storage {
namespace {

using ::testing::HasSubstr;

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ailb::testing::MakeTestDir("sqlite");
    ASSERT_FALSE(dir_.empty());
    path_ = dir_ + "/test.db";
  }

  void TearDown() override { ailb::testing::RemoveTestDir(dir_); }

  std::unique_ptr<Database> OpenOrDie(DatabaseOptions options = {}) {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_, options);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? std::move(*db) : nullptr;
  }

  // Runs a query that yields one integer.
  static int64_t QueryInt(Database& db, std::string_view sql) {
    absl::StatusOr<Statement> stmt = db.Prepare(sql);
    EXPECT_TRUE(stmt.ok()) << stmt.status();
    if (!stmt.ok()) return -1;
    absl::StatusOr<bool> row = stmt->Step();
    EXPECT_TRUE(row.ok()) << row.status();
    EXPECT_TRUE(row.ok() && *row) << sql;
    if (!row.ok() || !*row) return -1;
    return stmt->ColumnInt(0);
  }

  static std::string QueryText(Database& db, std::string_view sql) {
    absl::StatusOr<Statement> stmt = db.Prepare(sql);
    EXPECT_TRUE(stmt.ok()) << stmt.status();
    if (!stmt.ok()) return "<error>";
    absl::StatusOr<bool> row = stmt->Step();
    EXPECT_TRUE(row.ok() && *row) << sql;
    if (!row.ok() || !*row) return "<error>";
    return stmt->ColumnText(0);
  }

  static absl::Status InsertValue(Database& db, int64_t value) {
    absl::StatusOr<Statement> stmt = db.Prepare("INSERT INTO t(v) VALUES (?)");
    if (!stmt.ok()) return stmt.status();
    return stmt->Bind(1, value).Run();
  }

  std::string dir_;
  std::string path_;
};

TEST_F(SqliteTest, OpenCreatesDatabaseWithPragmas) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_EQ(db->path(), path_);
  EXPECT_EQ(QueryText(*db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryInt(*db, "PRAGMA synchronous"), 2);  // FULL
  EXPECT_EQ(QueryInt(*db, "PRAGMA foreign_keys"), 1);
  EXPECT_EQ(QueryInt(*db, "PRAGMA busy_timeout"), 5000);
}

TEST_F(SqliteTest, SynchronousNormalAndBusyTimeoutFromOptions) {
  DatabaseOptions options;
  options.synchronous_full = false;
  options.busy_timeout_ms = 1234;
  std::unique_ptr<Database> db = OpenOrDie(options);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryInt(*db, "PRAGMA synchronous"), 1);  // NORMAL
  EXPECT_EQ(QueryInt(*db, "PRAGMA busy_timeout"), 1234);
  EXPECT_EQ(QueryText(*db, "PRAGMA journal_mode"), "wal");
}

TEST_F(SqliteTest, InMemoryDatabaseOpensWithoutWal) {
  // Other components' tests use ":memory:", which cannot be in WAL mode.
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(":memory:");
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(QueryText(**db, "PRAGMA journal_mode"), "memory");
  EXPECT_EQ(QueryInt(**db, "PRAGMA foreign_keys"), 1);
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t(v INTEGER); INSERT INTO t(v) VALUES (3);").ok());
  EXPECT_EQ(QueryInt(**db, "SELECT v FROM t"), 3);
}

TEST_F(SqliteTest, InsertAndSelectEveryType) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, d REAL, s TEXT, b BLOB, "
                       "n TEXT, es TEXT, eb BLOB)")
                  .ok());

  const std::string blob("\x00\x01\xff\x00zz", 6);
  const std::string text = "h\xc3\xa9llo, 'world'";
  {
    absl::StatusOr<Statement> insert =
        db->Prepare("INSERT INTO t(i, d, s, b, n, es, eb) VALUES (?, ?, ?, ?, ?, ?, ?)");
    ASSERT_TRUE(insert.ok()) << insert.status();
    insert->Bind(1, int64_t{-9'000'000'000'000})
        .Bind(2, 2.5)
        .Bind(3, std::string_view(text))
        .BindBlob(4, blob.data(), blob.size())
        .BindNull(5)
        .Bind(6, std::string_view())
        .BindBlob(7, nullptr, 0);
    ASSERT_TRUE(insert->Run().ok());
  }
  EXPECT_EQ(db->LastInsertRowId(), 1);
  EXPECT_EQ(db->Changes(), 1);

  absl::StatusOr<Statement> select =
      db->Prepare("SELECT i, d, s, b, n, es, eb, typeof(es), typeof(eb) FROM t WHERE id = ?");
  ASSERT_TRUE(select.ok()) << select.status();
  select->Bind(1, int64_t{1});
  absl::StatusOr<bool> row = select->Step();
  ASSERT_TRUE(row.ok()) << row.status();
  ASSERT_TRUE(*row);
  EXPECT_EQ(select->ColumnInt(0), -9'000'000'000'000);
  EXPECT_DOUBLE_EQ(select->ColumnDouble(1), 2.5);
  EXPECT_EQ(select->ColumnText(2), text);
  EXPECT_EQ(select->ColumnBlob(3), std::string_view(blob));
  EXPECT_FALSE(select->ColumnIsNull(3));
  EXPECT_TRUE(select->ColumnIsNull(4));
  EXPECT_EQ(select->ColumnText(4), "");
  EXPECT_EQ(select->ColumnBlob(4), std::string_view());
  // Empty text and empty blobs stay values, not NULL.
  EXPECT_FALSE(select->ColumnIsNull(5));
  EXPECT_FALSE(select->ColumnIsNull(6));
  EXPECT_EQ(select->ColumnText(7), "text");
  EXPECT_EQ(select->ColumnText(8), "blob");
  row = select->Step();
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_FALSE(*row);
}

TEST_F(SqliteTest, ResetAllowsReuseAndClearsBindings) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(v INTEGER)").ok());
  absl::StatusOr<Statement> insert = db->Prepare("INSERT INTO t(v) VALUES (?)");
  ASSERT_TRUE(insert.ok()) << insert.status();
  for (int64_t v = 1; v <= 3; ++v) {
    ASSERT_TRUE(insert->Bind(1, v).Run().ok());
    insert->Reset();
  }
  // After Reset the parameter is NULL again.
  ASSERT_TRUE(insert->Run().ok());
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t"), 4);
  EXPECT_EQ(QueryInt(*db, "SELECT sum(v) FROM t"), 6);
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t WHERE v IS NULL"), 1);
}

TEST_F(SqliteTest, MovedStatementKeepsWorkingAndMovedFromFails) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement> stmt = db->Prepare("SELECT 7");
  ASSERT_TRUE(stmt.ok());
  Statement moved = std::move(*stmt);
  absl::StatusOr<bool> row = moved.Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(moved.ColumnInt(0), 7);
  absl::StatusOr<bool> stale = stmt->Step();  // NOLINT(bugprone-use-after-move): on purpose
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<Statement> other = db->Prepare("SELECT 8");
  ASSERT_TRUE(other.ok());
  moved = std::move(*other);
  row = moved.Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(moved.ColumnInt(0), 8);
}

TEST_F(SqliteTest, PrepareRejectsBadSqlEmptySqlAndSeveralStatements) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement> bad = db->Prepare("SELEC 1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(bad.status().message(), HasSubstr("syntax error"));
  EXPECT_THAT(bad.status().message(), HasSubstr("SELEC 1"));

  absl::StatusOr<Statement> missing = db->Prepare("SELECT * FROM no_such_table");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no such table"));

  EXPECT_EQ(db->Prepare("  ").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(db->Prepare("SELECT 1; SELECT 2").status().code(), absl::StatusCode::kInvalidArgument);
  // Trailing separators and comments are not a second statement.
  EXPECT_TRUE(db->Prepare("SELECT 1; ; -- done").ok());
}

TEST_F(SqliteTest, StepReportsRuntimeErrors) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement> stmt = db->Prepare("SELECT abs(-9223372036854775807 - 1)");
  ASSERT_TRUE(stmt.ok()) << stmt.status();
  absl::StatusOr<bool> row = stmt->Step();
  ASSERT_FALSE(row.ok());
  EXPECT_THAT(row.status().message(), HasSubstr("integer overflow"));
  EXPECT_THAT(row.status().message(), HasSubstr("step"));
}

TEST_F(SqliteTest, BindErrorIsReportedByStepUntilReset) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement> stmt = db->Prepare("SELECT ?");
  ASSERT_TRUE(stmt.ok());
  stmt->Bind(5, int64_t{1}).Bind(1, int64_t{42});  // index 5 is out of range
  absl::StatusOr<bool> row = stmt->Step();
  ASSERT_FALSE(row.ok());
  EXPECT_THAT(row.status().message(), HasSubstr("bind parameter 5"));
  EXPECT_FALSE(stmt->Run().ok());
  stmt->Reset();
  row = stmt->Bind(1, int64_t{42}).Step();
  ASSERT_TRUE(row.ok()) << row.status();
  ASSERT_TRUE(*row);
  EXPECT_EQ(stmt->ColumnInt(0), 42);
}

TEST_F(SqliteTest, TransactionRollsBackWhenDestroyedWithoutCommit) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(v INTEGER)").ok());
  {
    absl::StatusOr<Transaction> txn = Transaction::Begin(*db);
    ASSERT_TRUE(txn.ok()) << txn.status();
    ASSERT_TRUE(InsertValue(*db, 1).ok());
    EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t"), 1);
  }
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t"), 0);
  EXPECT_NE(sqlite3_get_autocommit(db->raw()), 0) << "transaction still open";
}

TEST_F(SqliteTest, CommittedTransactionPersistsAcrossReopen) {
  {
    std::unique_ptr<Database> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Exec("CREATE TABLE t(v INTEGER)").ok());
    absl::StatusOr<Transaction> txn = Transaction::Begin(*db);
    ASSERT_TRUE(txn.ok()) << txn.status();
    ASSERT_TRUE(InsertValue(*db, 10).ok());
    ASSERT_TRUE(InsertValue(*db, 20).ok());
    ASSERT_TRUE(txn->Commit().ok());
    EXPECT_EQ(txn->Commit().code(), absl::StatusCode::kFailedPrecondition);
  }
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryInt(*db, "SELECT sum(v) FROM t"), 30);
}

TEST_F(SqliteTest, MovedFromTransactionDoesNothing) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(v INTEGER)").ok());
  {
    absl::StatusOr<Transaction> txn = Transaction::Begin(*db);
    ASSERT_TRUE(txn.ok()) << txn.status();
    Transaction owner = std::move(*txn);
    ASSERT_TRUE(InsertValue(*db, 1).ok());
    EXPECT_EQ(txn->Commit().code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(owner.Commit().ok());
  }  // both destructors run here; neither may roll back or fail
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t"), 1);
}

TEST_F(SqliteTest, ConstraintViolationsMapToCodes) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                       "  parent_id INTEGER REFERENCES parent(id));"
                       "INSERT INTO parent(id) VALUES (1);"
                       "INSERT INTO child(id, name, parent_id) VALUES (1, 'a', 1);")
                  .ok());
  absl::Status duplicate = db->Exec("INSERT INTO child(id, name) VALUES (2, 'a')");
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists) << duplicate;
  EXPECT_THAT(duplicate.message(), HasSubstr("UNIQUE"));
  absl::Status duplicate_key = db->Exec("INSERT INTO child(id, name) VALUES (1, 'b')");
  EXPECT_EQ(duplicate_key.code(), absl::StatusCode::kAlreadyExists) << duplicate_key;

  absl::StatusOr<Statement> insert = db->Prepare("INSERT INTO child(name) VALUES (?)");
  ASSERT_TRUE(insert.ok());
  absl::Status not_null = insert->BindNull(1).Run();
  EXPECT_EQ(not_null.code(), absl::StatusCode::kInvalidArgument) << not_null;

  // Proves foreign_keys=ON: the default would accept the dangling reference.
  absl::Status foreign = db->Exec("INSERT INTO child(name, parent_id) VALUES ('c', 99)");
  EXPECT_EQ(foreign.code(), absl::StatusCode::kInvalidArgument) << foreign;
  EXPECT_THAT(foreign.message(), HasSubstr("FOREIGN KEY"));
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM child"), 1);
}

TEST_F(SqliteTest, ReadOnlyConnectionReadsButRefusesWrites) {
  {
    std::unique_ptr<Database> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Exec("CREATE TABLE t(v INTEGER); INSERT INTO t(v) VALUES (5);").ok());
  }
  DatabaseOptions options;
  options.read_only = true;
  std::unique_ptr<Database> db = OpenOrDie(options);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryInt(*db, "SELECT v FROM t"), 5);
  EXPECT_EQ(QueryText(*db, "PRAGMA journal_mode"), "wal");

  absl::Status insert = InsertValue(*db, 6);
  EXPECT_EQ(insert.code(), absl::StatusCode::kFailedPrecondition) << insert;
  absl::Status create = db->Exec("CREATE TABLE u(v INTEGER)");
  EXPECT_EQ(create.code(), absl::StatusCode::kFailedPrecondition) << create;
  absl::StatusOr<Transaction> txn = Transaction::Begin(*db);
  EXPECT_EQ(txn.status().code(), absl::StatusCode::kFailedPrecondition) << txn.status();
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM t"), 1);
}

TEST_F(SqliteTest, ReadOnlyOpenOfMissingFileIsNotFound) {
  DatabaseOptions options;
  options.read_only = true;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_, options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kNotFound) << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr(path_));
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(SqliteTest, OpenInMissingDirectoryIsNotFound) {
  const std::string path = dir_ + "/no/such/dir/test.db";
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kNotFound) << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr(path));
}

TEST_F(SqliteTest, NonDatabaseFileIsDataLoss) {
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 256; ++i) out << "this is not an sqlite database, just text\n";
  }
  for (const bool read_only : {false, true}) {
    DatabaseOptions options;
    options.read_only = read_only;
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_, options);
    ASSERT_FALSE(db.ok()) << "read_only=" << read_only;
    EXPECT_EQ(db.status().code(), absl::StatusCode::kDataLoss) << db.status();
    EXPECT_THAT(db.status().message(), HasSubstr(path_));
    EXPECT_THAT(db.status().message(), HasSubstr("not a database"));
  }
}

TEST_F(SqliteTest, WriterContentionWaitsForBusyTimeoutThenUnavailable) {
  std::unique_ptr<Database> writer = OpenOrDie();
  ASSERT_NE(writer, nullptr);
  DatabaseOptions options;
  options.busy_timeout_ms = 100;
  std::unique_ptr<Database> other = OpenOrDie(options);
  ASSERT_NE(other, nullptr);
  absl::StatusOr<Transaction> held = Transaction::Begin(*writer);
  ASSERT_TRUE(held.ok()) << held.status();

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Transaction> blocked = Transaction::Begin(*other);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kUnavailable) << blocked.status();
  EXPECT_GE(waited, std::chrono::milliseconds(80));

  // WAL: a reader is not blocked by the open write transaction.
  EXPECT_EQ(QueryInt(*other, "SELECT 1"), 1);
  ASSERT_TRUE(held->Commit().ok());
  absl::StatusOr<Transaction> after = Transaction::Begin(*other);
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST_F(SqliteTest, StatementMayOutliveItsDatabase) {
  std::unique_ptr<Database> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement> stmt = db->Prepare("SELECT 1");
  ASSERT_TRUE(stmt.ok());
  db.reset();  // close_v2 defers the close; finalizing afterwards must be safe (ASan checks)
  Statement last = std::move(*stmt);
  (void)last;
}

TEST(SqliteErrorTest, MapsPrimaryAndExtendedCodes) {
  struct Case {
    int code;
    absl::StatusCode expected;
  };
  const std::vector<Case> cases = {
      {SQLITE_BUSY, absl::StatusCode::kUnavailable},
      {SQLITE_BUSY_SNAPSHOT, absl::StatusCode::kUnavailable},
      {SQLITE_LOCKED, absl::StatusCode::kUnavailable},
      {SQLITE_FULL, absl::StatusCode::kResourceExhausted},
      {SQLITE_IOERR_WRITE, absl::StatusCode::kUnavailable},
      {SQLITE_NOMEM, absl::StatusCode::kResourceExhausted},
      {SQLITE_READONLY, absl::StatusCode::kFailedPrecondition},
      {SQLITE_READONLY_DBMOVED, absl::StatusCode::kFailedPrecondition},
      {SQLITE_CONSTRAINT_UNIQUE, absl::StatusCode::kAlreadyExists},
      {SQLITE_CONSTRAINT_PRIMARYKEY, absl::StatusCode::kAlreadyExists},
      {SQLITE_CONSTRAINT_CHECK, absl::StatusCode::kInvalidArgument},
      {SQLITE_CONSTRAINT_FOREIGNKEY, absl::StatusCode::kInvalidArgument},
      {SQLITE_CONSTRAINT, absl::StatusCode::kInvalidArgument},
      {SQLITE_CORRUPT, absl::StatusCode::kDataLoss},
      {SQLITE_NOTADB, absl::StatusCode::kDataLoss},
      {SQLITE_PERM, absl::StatusCode::kPermissionDenied},
      {SQLITE_CANTOPEN, absl::StatusCode::kFailedPrecondition},
      {SQLITE_ERROR, absl::StatusCode::kInternal},
      {SQLITE_MISUSE, absl::StatusCode::kInternal},
  };
  for (const Case& c : cases) {
    const absl::Status status = SqliteError(c.code, "ctx", "msg");
    EXPECT_EQ(status.code(), c.expected) << "sqlite code " << c.code;
    EXPECT_THAT(status.message(), HasSubstr("ctx: msg")) << "sqlite code " << c.code;
  }
  EXPECT_THAT(SqliteError(SQLITE_FULL, "insert", "database or disk is full").message(),
              HasSubstr("disk full"));
}

}  // namespace
}  // namespace ailb::storage
