// RAII owners for SQLite handles and a small Status-returning API over them.
//
// One database file in AILB_DATA_DIR (WAL, synchronous=FULL for acknowledged writes) is the source
// of truth for sessions, RAG collections, documents, chunks and their vectors. Every component
// opens its own Database on that file; WAL lets readers run beside the one writer, and a busy
// timeout turns writer contention into waiting rather than SQLITE_BUSY errors.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ailb::storage {

class Database;

// A prepared statement. Not thread-safe: use it on one thread at a time (its Database's mutex,
// if the Database is shared, is the caller's business). Bind indexes are 1-based, columns 0-based.
class Statement {
 public:
  Statement(Statement&&) noexcept;
  Statement& operator=(Statement&&) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, const void* data, size_t size);
  Statement& BindNull(int index);

  // Advances: true when a row is available, false when done; errors (incl. bind errors recorded
  // earlier) as a Status with the SQLite message. After false or an error, Reset() before
  // running the statement again. A recorded bind error is returned by every Step until Reset.
  absl::StatusOr<bool> Step();
  // Runs to completion, discarding rows.
  absl::Status Run();
  // Clears bindings (to NULL) and any recorded bind error and rewinds, so the statement can be
  // reused.
  void Reset();

  int64_t ColumnInt(int column) const;
  double ColumnDouble(int column) const;
  std::string ColumnText(int column) const;
  // The blob's bytes (valid until the next Step/Reset).
  std::string_view ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  absl::Status bind_error_;
};

struct DatabaseOptions {
  // FULL makes every commit durable before it returns (acknowledged writes survive power loss);
  // NORMAL survives process crashes (kill -9) but not power loss.
  bool synchronous_full = true;
  int busy_timeout_ms = 5'000;
  bool read_only = false;
};

// One connection. Not thread-safe: guard it with a mutex or give each thread its own.
class Database {
 public:
  // Opens (creating when absent, unless read-only) `path` in WAL mode with foreign keys on, and
  // reads the file's header, so a file that is not a database fails here with DataLoss. NotFound
  // when a read-only database or a new database's directory does not exist. Read-only
  // connections follow the journal mode stored in the file instead of setting it.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        DatabaseOptions options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements without results (schema, pragmas).
  absl::Status Exec(std::string_view sql);
  // Exactly one statement: InvalidArgument when `sql` holds none or more than one.
  absl::StatusOr<Statement> Prepare(std::string_view sql);
  int64_t LastInsertRowId() const;
  int64_t Changes() const;
  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless Commit() succeeded (a failed
// Commit leaves the transaction open for the destructor to roll back). A moved-from Transaction
// does nothing; Commit on it, or a second Commit, is FailedPrecondition. Begin on a read-only
// connection is FailedPrecondition.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Database& db);
  Transaction(Transaction&&) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
};

// Maps a SQLite result code (primary or extended) to a canonical status: BUSY/LOCKED →
// Unavailable, FULL → ResourceExhausted ("disk full"), IOERR → Unavailable, NOMEM →
// ResourceExhausted, READONLY → FailedPrecondition, CONSTRAINT → AlreadyExists for the extended
// UNIQUE/PRIMARYKEY/ROWID codes and InvalidArgument for the others (CHECK, NOT NULL, FOREIGN KEY),
// TOOBIG → InvalidArgument, CORRUPT/NOTADB → DataLoss, PERM/AUTH → PermissionDenied, CANTOPEN →
// FailedPrecondition, else Internal. The message is "<context>: <message> (sqlite code N)".
// Connections opened by Database::Open report extended codes.
absl::Status SqliteError(int code, std::string_view context, std::string_view message);

}  // namespace ailb::storage
