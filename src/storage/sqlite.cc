#include "ailb/storage/sqlite.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ailb::storage {
namespace {

// Debian's Abseil has its own string_view; the public API uses std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Enough of a statement to recognise it in an error message without flooding logs with a
// multi-kilobyte schema.
std::string Abbreviate(std::string_view sql) {
  constexpr size_t kMax = 120;
  if (sql.size() <= kMax) return std::string(sql);
  return absl::StrCat(Av(sql.substr(0, kMax)), "...");
}

// The connection's message when it describes `code`; SQLite's generic text otherwise (the
// connection may be null, or its last error may belong to another call).
std::string ErrorText(sqlite3* db, int code) {
  if (db != nullptr && sqlite3_extended_errcode(db) == code) return sqlite3_errmsg(db);
  return sqlite3_errstr(code);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status SqliteError(int code, std::string_view context, std::string_view message) {
  const std::string text =
      absl::StrCat(Av(context), ": ", Av(message), " (sqlite code ", code, ")");
  switch (code & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
      // Callers only map failures; a success code reaching here is a bug in the caller.
      return absl::InternalError(absl::StrCat("unexpected success code: ", text));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(text);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat("disk full: ", text));
    case SQLITE_IOERR:
      return absl::UnavailableError(text);
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(text);
    case SQLITE_READONLY:
      return absl::FailedPreconditionError(text);
    case SQLITE_CONSTRAINT:
      // Duplicate keys are a conflict the caller may want to tell apart (409); CHECK, NOT NULL
      // and foreign-key failures mean the data itself was unacceptable.
      if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY ||
          code == SQLITE_CONSTRAINT_ROWID) {
        return absl::AlreadyExistsError(text);
      }
      return absl::InvalidArgumentError(text);
    case SQLITE_TOOBIG:
      return absl::InvalidArgumentError(text);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(text);
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(text);
    case SQLITE_CANTOPEN:
      return absl::FailedPreconditionError(text);
    default:
      return absl::InternalError(text);
  }
}

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_error_(std::move(other.bind_error_)) {
  other.bind_error_ = absl::OkStatus();
}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_error_ = std::move(other.bind_error_);
    other.bind_error_ = absl::OkStatus();
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

namespace {

// Keeps the first bind failure: later ones are usually consequences of it.
void RecordBind(int rc, int index, sqlite3* db, absl::Status& bind_error) {
  if (rc == SQLITE_OK || !bind_error.ok()) return;
  bind_error = SqliteError(rc, absl::StrCat("bind parameter ", index), ErrorText(db, rc));
}

absl::Status MovedFromError() { return absl::FailedPreconditionError("statement was moved from"); }

}  // namespace

Statement& Statement::Bind(int index, int64_t value) {
  if (stmt_ == nullptr) {
    if (bind_error_.ok()) bind_error_ = MovedFromError();
    return *this;
  }
  RecordBind(sqlite3_bind_int64(stmt_, index, value), index, db_, bind_error_);
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  if (stmt_ == nullptr) {
    if (bind_error_.ok()) bind_error_ = MovedFromError();
    return *this;
  }
  RecordBind(sqlite3_bind_double(stmt_, index, value), index, db_, bind_error_);
  return *this;
}

Statement& Statement::Bind(int index, std::string_view text) {
  if (stmt_ == nullptr) {
    if (bind_error_.ok()) bind_error_ = MovedFromError();
    return *this;
  }
  // A null pointer would bind SQL NULL; an empty view (whose data() may be null) is ''.
  const char* data = text.data() != nullptr ? text.data() : "";
  RecordBind(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
             index, db_, bind_error_);
  return *this;
}

Statement& Statement::BindBlob(int index, const void* data, size_t size) {
  if (stmt_ == nullptr) {
    if (bind_error_.ok()) bind_error_ = MovedFromError();
    return *this;
  }
  // A null pointer would bind SQL NULL; an empty blob stays a (zero-length) blob.
  const int rc = (data == nullptr || size == 0)
                     ? sqlite3_bind_zeroblob(stmt_, index, 0)
                     : sqlite3_bind_blob64(stmt_, index, data, size, SQLITE_TRANSIENT);
  RecordBind(rc, index, db_, bind_error_);
  return *this;
}

Statement& Statement::BindNull(int index) {
  if (stmt_ == nullptr) {
    if (bind_error_.ok()) bind_error_ = MovedFromError();
    return *this;
  }
  RecordBind(sqlite3_bind_null(stmt_, index), index, db_, bind_error_);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_error_.ok()) return bind_error_;
  if (stmt_ == nullptr) return MovedFromError();
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  const char* sql = sqlite3_sql(stmt_);
  return SqliteError(rc, absl::StrCat("step \"", Abbreviate(sql != nullptr ? sql : ""), "\""),
                     ErrorText(db_, rc));
}

absl::Status Statement::Run() {
  for (;;) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

void Statement::Reset() {
  bind_error_ = absl::OkStatus();
  if (stmt_ == nullptr) return;
  // sqlite3_reset repeats the last step's error; Step already reported it.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::ColumnInt(int column) const {
  return stmt_ != nullptr ? sqlite3_column_int64(stmt_, column) : 0;
}

double Statement::ColumnDouble(int column) const {
  return stmt_ != nullptr ? sqlite3_column_double(stmt_, column) : 0.0;
}

std::string Statement::ColumnText(int column) const {
  if (stmt_ == nullptr) return std::string();
  // The pointer first, then the size: asking for the text may convert the value in place.
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return std::string();
  const int size = sqlite3_column_bytes(stmt_, column);
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

std::string_view Statement::ColumnBlob(int column) const {
  if (stmt_ == nullptr) return std::string_view();
  const void* blob = sqlite3_column_blob(stmt_, column);
  if (blob == nullptr) return std::string_view();
  const int size = sqlite3_column_bytes(stmt_, column);
  return std::string_view(static_cast<const char*>(blob), static_cast<size_t>(size));
}

bool Statement::ColumnIsNull(int column) const {
  return stmt_ == nullptr || sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

// ---------------------------------------------------------------------------------------------
// Database

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path,
                                                         DatabaseOptions options) {
  const int flags =
      options.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  // From here on the Database owns the handle (sqlite3_open_v2 may allocate one even when it
  // fails), so every early return below closes it.
  std::unique_ptr<Database> db(new Database(raw, path));
  if (rc != SQLITE_OK) {
    const std::string context = absl::StrCat("open ", path);
    if ((rc & 0xff) == SQLITE_CANTOPEN &&
        !PathExists(options.read_only ? path : ParentDirectory(path))) {
      return absl::NotFoundError(
          absl::StrCat(context, ": ", options.read_only ? "no such file" : "no such directory"));
    }
    return SqliteError(rc, context, ErrorText(raw, rc));
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms > 0 ? options.busy_timeout_ms : 0);

  const auto annotate = [&path](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " [database ", path, "]"));
  };

  // sqlite3_open_v2 does not read the file; this does, so a file that is not a database (or a
  // damaged header) fails here rather than at some later first query.
  if (absl::Status s = db->Exec("SELECT count(*) FROM sqlite_master"); !s.ok()) {
    return annotate(s);
  }

  if (!options.read_only) {
    // The journal mode is stored in the file, so only writers set it; readers follow it.
    absl::StatusOr<Statement> stmt = db->Prepare("PRAGMA journal_mode=WAL");
    if (!stmt.ok()) return annotate(stmt.status());
    absl::StatusOr<bool> row = stmt->Step();
    if (!row.ok()) return annotate(row.status());
    const std::string mode = *row ? absl::AsciiStrToLower(stmt->ColumnText(0)) : "";
    // In-memory databases (tests) cannot use WAL and have nothing to make durable.
    if (mode != "wal" && mode != "memory") {
      return absl::FailedPreconditionError(absl::StrCat(
          "open ", path, ": could not enable WAL journal mode (journal_mode is '", mode, "')"));
    }
  }
  const std::string pragmas =
      absl::StrCat("PRAGMA synchronous=", options.synchronous_full ? "FULL" : "NORMAL",
                   "; PRAGMA foreign_keys=ON;");
  if (absl::Status s = db->Exec(pragmas); !s.ok()) return annotate(s);
  return db;
}

Database::~Database() {
  // close_v2 defers the close until outstanding Statements are finalized, so a Statement that
  // outlives its Database is still safe to destroy.
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

absl::Status Database::Exec(std::string_view sql) {
  const std::string statement(sql);  // sqlite3_exec needs a NUL-terminated string
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, statement.c_str(), nullptr, nullptr, &error);
  if (rc == SQLITE_OK) return absl::OkStatus();
  const std::string message = error != nullptr ? std::string(error) : ErrorText(db_, rc);
  sqlite3_free(error);
  return SqliteError(rc, absl::StrCat("exec \"", Abbreviate(sql), "\""), message);
}

absl::StatusOr<Statement> Database::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, &tail);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return SqliteError(rc, absl::StrCat("prepare \"", Abbreviate(sql), "\""), ErrorText(db_, rc));
  }
  if (stmt == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare \"", Abbreviate(sql), "\": no SQL statement"));
  }
  Statement statement(db_, stmt);
  // A second statement would be silently ignored by sqlite3_prepare_v2; refuse it instead.
  // Preparing the tail tells real SQL apart from trailing whitespace, semicolons and comments.
  const size_t consumed = static_cast<size_t>(tail - sql.data());
  if (consumed < sql.size()) {
    sqlite3_stmt* extra = nullptr;
    const int tail_rc =
        sqlite3_prepare_v2(db_, tail, static_cast<int>(sql.size() - consumed), &extra, nullptr);
    sqlite3_finalize(extra);
    if (tail_rc != SQLITE_OK || extra != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("prepare \"", Abbreviate(sql), "\": Prepare takes exactly one statement"));
    }
  }
  return statement;
}

int64_t Database::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

int64_t Database::Changes() const { return sqlite3_changes64(db_); }

// ---------------------------------------------------------------------------------------------
// Transaction

absl::StatusOr<Transaction> Transaction::Begin(Database& db) {
  // IMMEDIATE takes the write lock now, so contention shows up here (and waits out the busy
  // timeout) instead of as an unretryable SQLITE_BUSY when a deferred read upgrades to a write.
  // SQLite grants BEGIN IMMEDIATE on a read-only WAL connection and only refuses the first
  // write; refusing here keeps a read-only caller from believing it holds the write lock.
  if (sqlite3_db_readonly(db.raw(), "main") == 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("begin transaction: database ", db.path(), " is open read-only"));
  }
  if (absl::Status s = db.Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  return Transaction(&db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ == nullptr) return;
  // SQLite rolls back by itself after some errors (disk full, I/O); a second ROLLBACK would only
  // fail, so roll back only while a transaction is still open.
  if (sqlite3_get_autocommit(db_->raw()) == 0) {
    absl::Status ignored = db_->Exec("ROLLBACK");
    (void)ignored;  // nothing useful to do in a destructor; the connection stays usable
  }
}

absl::Status Transaction::Commit() {
  if (db_ == nullptr) return absl::FailedPreconditionError("transaction already finished");
  // On failure the transaction stays open (e.g. SQLITE_BUSY) and the destructor rolls it back.
  if (absl::Status s = db_->Exec("COMMIT"); !s.ok()) return s;
  db_ = nullptr;
  return absl::OkStatus();
}

}  // namespace ailb::storage
