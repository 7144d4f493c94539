// SessionMemory over SQLite (tables memory_sessions and memory_turns in `data_dir`/ailb.db, beside
// the RAG store's rag_ tables) with one float32 vector per turn from the injected embedder.
//
// Why exact search: a session holds at most max_turns_per_session turns (200 by default), so a
// linear scan over its vectors costs well under a millisecond and needs no index to keep in sync.
//
// Locking: one connection guarded by one mutex. Embedding (the slow part) runs outside it; the
// critical sections are short SQLite reads or one write transaction.
#include "ailb/memory/session_memory.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/common/utf8.h"
#include "ailb/rag/chunker.h"
#include "ailb/rag/vector_index.h"
#include "ailb/storage/sqlite.h"

namespace ailb::memory {
namespace {

using json = nlohmann::json;

// Turns are ordered by rowid: it only grows while rows exist after it (SQLite picks max+1), which
// is all the ordering inside one session needs, so AUTOINCREMENT's extra table is not.
constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS memory_sessions (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  turn_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS memory_turns (
  id INTEGER PRIMARY KEY,
  session_id TEXT NOT NULL REFERENCES memory_sessions(id) ON DELETE CASCADE,
  role TEXT NOT NULL,
  content TEXT NOT NULL,
  tokens INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  vector BLOB
);
CREATE INDEX IF NOT EXISTS memory_turns_by_session ON memory_turns(session_id, id);
CREATE INDEX IF NOT EXISTS memory_turns_by_time ON memory_turns(created_at);
)sql";

constexpr char kRecentHeader[] =
    "Conversation memory for this session (earlier exchanges, oldest first):";
constexpr char kRelevantOnlyHeader[] = "Conversation memory for this session.";
constexpr char kRelevantHeader[] = "Earlier turns that may be relevant:";

int64_t UnixMillis(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string Iso8601Millis(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// Stored text ends up in JSON replies (History), whose serialiser throws on malformed UTF-8; the
// assistant reply comes from an upstream and is not guaranteed well-formed, so repair it once here.
std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t length = DecodeUtf8(s, i).length;
    if (length == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(s.substr(i, length));
      i += length;
    }
  }
  return out;
}

// Cuts well-formed UTF-8 to at most `max_bytes` without splitting a sequence.
void TruncateUtf8(std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  s.resize(cut);
}

std::string_view Trim(std::string_view s) { return ToStd(absl::StripAsciiWhitespace(ToAbsl(s))); }

// Message text of an OpenAI message: a string content, or the text parts of a parts array joined
// by newlines (images, audio and unknown parts ignored). Empty for anything else, including the
// null content of tool-call messages. Never throws, whatever the JSON holds.
std::string MessageText(const json& message) {
  if (!message.is_object()) return "";
  const auto content = message.find("content");
  if (content == message.end()) return "";
  if (content->is_string()) return content->get_ref<const std::string&>();
  if (!content->is_array()) return "";
  std::string text;
  for (const json& part : *content) {
    if (!part.is_object()) continue;
    const auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get_ref<const std::string&>() != "text") {
      continue;
    }
    const auto part_text = part.find("text");
    if (part_text == part.end() || !part_text->is_string()) continue;
    if (!text.empty()) text += '\n';
    text += part_text->get_ref<const std::string&>();
  }
  return text;
}

std::string_view MessageRole(const json& message) {
  if (!message.is_object()) return {};
  const auto role = message.find("role");
  if (role == message.end() || !role->is_string()) return {};
  return role->get_ref<const std::string&>();
}

absl::Status CheckMessages(const json& request_messages) {
  if (!request_messages.is_array()) {
    return absl::InvalidArgumentError("messages must be an array of message objects");
  }
  return absl::OkStatus();
}

struct NewTurn {
  std::string role;
  std::string content;
};

struct StoredTurn {
  int64_t id = 0;
  std::string role;
  std::string content;
  int tokens = 0;
  std::vector<float> vector;  // empty when absent or of another dimension
};

void AppendTurnLine(const StoredTurn& turn, std::string& out) {
  absl::StrAppend(&out, "\n[", turn.role, "] ", turn.content);
}

class SqliteSessionMemory final : public SessionMemory {
 public:
  SqliteSessionMemory(std::unique_ptr<storage::Database> db,
                      std::shared_ptr<rag::Embedder> embedder, const Clock& clock,
                      MemoryOptions options)
      : embedder_(std::move(embedder)), clock_(clock), options_(options), db_(std::move(db)) {}

  absl::Status AppendExchange(const std::string& session_id, const json& request_messages,
                              const std::string& assistant_reply) override {
    AILB_RETURN_IF_ERROR(CheckSessionId(session_id));
    AILB_RETURN_IF_ERROR(CheckMessages(request_messages));

    // The user messages after the last assistant message are what this exchange answered; earlier
    // ones were stored with earlier exchanges (or predate the session's memory).
    std::vector<NewTurn> turns;
    for (const json& message : request_messages) {
      const std::string_view role = MessageRole(message);
      if (role == "assistant") {
        turns.clear();
      } else if (role == "user") {
        std::string text = MessageText(message);
        if (!Trim(text).empty()) turns.push_back({"user", std::move(text)});
      }
    }
    if (!Trim(assistant_reply).empty()) turns.push_back({"assistant", assistant_reply});
    if (turns.empty()) return absl::OkStatus();

    std::vector<std::string> texts;
    texts.reserve(turns.size());
    for (NewTurn& turn : turns) {
      turn.content = SanitizeUtf8(turn.content);
      TruncateUtf8(turn.content, options_.max_turn_bytes);
      texts.push_back(turn.content);
    }
    AILB_ASSIGN_OR_RETURN(std::vector<rag::Vector> vectors, embedder_->Embed(texts));
    if (vectors.size() != turns.size()) {
      return absl::InternalError(absl::StrCat("embedder returned ", vectors.size(), " vectors for ",
                                              turns.size(), " texts"));
    }

    const int64_t now_ms = UnixMillis(clock_.WallNow());
    std::lock_guard lock(mu_);
    AILB_ASSIGN_OR_RETURN(storage::Transaction transaction, storage::Transaction::Begin(*db_));
    // The session row first: the turns reference it.
    AILB_ASSIGN_OR_RETURN(storage::Statement upsert, db_->Prepare(R"sql(
        INSERT INTO memory_sessions (id, created_at, updated_at, turn_count) VALUES (?1, ?2, ?2, 0)
        ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at)sql"));
    AILB_RETURN_IF_ERROR(upsert.Bind(1, session_id).Bind(2, now_ms).Run());

    AILB_ASSIGN_OR_RETURN(storage::Statement insert, db_->Prepare(R"sql(
        INSERT INTO memory_turns (session_id, role, content, tokens, created_at, vector)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6))sql"));
    for (size_t i = 0; i < turns.size(); ++i) {
      insert.Reset();
      insert.Bind(1, session_id)
          .Bind(2, turns[i].role)
          .Bind(3, turns[i].content)
          .Bind(4, int64_t{rag::EstimateTokens(turns[i].content)})
          .Bind(5, now_ms)
          .BindBlob(6, vectors[i].data(), vectors[i].size() * sizeof(float));
      AILB_RETURN_IF_ERROR(insert.Run());
    }

    // Everything older than the newest max_turns_per_session turns goes, vectors included.
    AILB_ASSIGN_OR_RETURN(storage::Statement trim, db_->Prepare(R"sql(
        DELETE FROM memory_turns WHERE session_id = ?1 AND id <= (
          SELECT id FROM memory_turns WHERE session_id = ?1
          ORDER BY id DESC LIMIT 1 OFFSET ?2))sql"));
    AILB_RETURN_IF_ERROR(
        trim.Bind(1, session_id).Bind(2, int64_t{options_.max_turns_per_session}).Run());
    AILB_RETURN_IF_ERROR(RecountTurns(session_id));
    return transaction.Commit();
  }

  absl::StatusOr<std::optional<std::string>> BuildContext(const std::string& session_id,
                                                          const json& request_messages) override {
    AILB_RETURN_IF_ERROR(CheckSessionId(session_id));
    AILB_RETURN_IF_ERROR(CheckMessages(request_messages));

    std::unordered_set<std::string> carried;  // trimmed texts the request already holds
    std::string new_message;
    for (const json& message : request_messages) {
      std::string text = MessageText(message);
      const std::string_view trimmed = Trim(text);
      if (trimmed.empty()) continue;
      carried.emplace(trimmed);
      if (MessageRole(message) == "user") new_message = std::move(text);
    }

    std::vector<StoredTurn> turns;  // newest first
    {
      std::lock_guard lock(mu_);
      AILB_ASSIGN_OR_RETURN(turns, LoadRecentTurns(session_id));
    }
    std::erase_if(turns, [&](const StoredTurn& turn) {
      return carried.contains(std::string(Trim(turn.content)));
    });
    if (turns.empty()) return std::nullopt;

    std::vector<const StoredTurn*> recent;  // newest first
    size_t older_begin = 0;
    int64_t recent_tokens = 0;
    for (; older_begin < turns.size(); ++older_begin) {
      recent_tokens += turns[older_begin].tokens;
      if (recent_tokens > options_.recent_token_budget) break;
      recent.push_back(&turns[older_begin]);
    }

    std::vector<const StoredTurn*> relevant;
    if (older_begin < turns.size() && options_.similar_turns > 0 && !Trim(new_message).empty()) {
      AILB_ASSIGN_OR_RETURN(relevant,
                            FindRelevant(new_message, std::span(turns).subspan(older_begin)));
    }
    if (recent.empty() && relevant.empty()) return std::nullopt;

    std::string text;
    if (!recent.empty()) {
      text = kRecentHeader;
      for (auto it = recent.rbegin(); it != recent.rend(); ++it) AppendTurnLine(**it, text);
    }
    if (!relevant.empty()) {
      // Oldest first here too, so the model reads them in the order they happened.
      std::sort(relevant.begin(), relevant.end(),
                [](const StoredTurn* a, const StoredTurn* b) { return a->id < b->id; });
      absl::StrAppend(&text, recent.empty() ? kRelevantOnlyHeader : "\n", "\n", kRelevantHeader);
      for (const StoredTurn* turn : relevant) AppendTurnLine(*turn, text);
    }
    return text;
  }

  absl::StatusOr<json> History(const std::string& session_id) override {
    AILB_RETURN_IF_ERROR(CheckSessionId(session_id));
    std::lock_guard lock(mu_);
    AILB_ASSIGN_OR_RETURN(storage::Statement session,
                          db_->Prepare("SELECT turn_count FROM memory_sessions WHERE id = ?1"));
    AILB_ASSIGN_OR_RETURN(bool found, session.Bind(1, session_id).Step());
    if (!found) return NotFound(session_id);
    json history = {
        {"session_id", session_id}, {"turn_count", session.ColumnInt(0)}, {"turns", json::array()}};
    json& turns = history["turns"];

    AILB_ASSIGN_OR_RETURN(storage::Statement select, db_->Prepare(R"sql(
        SELECT role, content, created_at FROM memory_turns WHERE session_id = ?1 ORDER BY id)sql"));
    select.Bind(1, session_id);
    while (true) {
      AILB_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      turns.push_back({{"role", select.ColumnText(0)},
                       {"content", select.ColumnText(1)},
                       {"created_at", Iso8601Millis(select.ColumnInt(2))}});
    }
    return history;
  }

  absl::Status Forget(const std::string& session_id) override {
    AILB_RETURN_IF_ERROR(CheckSessionId(session_id));
    std::lock_guard lock(mu_);
    AILB_ASSIGN_OR_RETURN(storage::Transaction transaction, storage::Transaction::Begin(*db_));
    // Explicit rather than relying on ON DELETE CASCADE alone, which needs foreign_keys on for
    // this connection.
    AILB_ASSIGN_OR_RETURN(storage::Statement turns,
                          db_->Prepare("DELETE FROM memory_turns WHERE session_id = ?1"));
    AILB_RETURN_IF_ERROR(turns.Bind(1, session_id).Run());
    AILB_ASSIGN_OR_RETURN(storage::Statement session,
                          db_->Prepare("DELETE FROM memory_sessions WHERE id = ?1"));
    AILB_RETURN_IF_ERROR(session.Bind(1, session_id).Run());
    if (db_->Changes() == 0) return NotFound(session_id);  // the transaction rolls back
    return transaction.Commit();
  }

  absl::StatusOr<int64_t> EnforceRetention() override {
    const int64_t cutoff_ms = OldestKeptMillis();
    std::lock_guard lock(mu_);
    AILB_ASSIGN_OR_RETURN(storage::Transaction transaction, storage::Transaction::Begin(*db_));
    // Counts first, while the expiring rows still say which sessions they belong to.
    AILB_ASSIGN_OR_RETURN(storage::Statement recount, db_->Prepare(R"sql(
        UPDATE memory_sessions SET turn_count = (
          SELECT COUNT(*) FROM memory_turns t WHERE t.session_id = memory_sessions.id
            AND t.created_at >= ?1)
        WHERE id IN (SELECT session_id FROM memory_turns WHERE created_at < ?1))sql"));
    AILB_RETURN_IF_ERROR(recount.Bind(1, cutoff_ms).Run());
    AILB_ASSIGN_OR_RETURN(storage::Statement expire,
                          db_->Prepare("DELETE FROM memory_turns WHERE created_at < ?1"));
    AILB_RETURN_IF_ERROR(expire.Bind(1, cutoff_ms).Run());
    const int64_t removed = db_->Changes();
    AILB_RETURN_IF_ERROR(db_->Exec(R"sql(
        DELETE FROM memory_sessions WHERE NOT EXISTS (
          SELECT 1 FROM memory_turns t WHERE t.session_id = memory_sessions.id))sql"));
    AILB_RETURN_IF_ERROR(transaction.Commit());
    return removed;
  }

 private:
  absl::Status CheckSessionId(const std::string& session_id) const {
    if (session_id.empty()) return absl::InvalidArgumentError("session id is empty");
    if (session_id.size() > options_.max_session_id_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("session id is longer than ", options_.max_session_id_bytes, " bytes"));
    }
    // It is echoed in replies and logs: well-formed UTF-8 without C0/C1 control characters.
    for (size_t i = 0; i < session_id.size();) {
      const Utf8Char c = DecodeUtf8(session_id, i);
      if (c.length == 0) return absl::InvalidArgumentError("session id is not valid UTF-8");
      if (c.code_point < 0x20 || (c.code_point >= 0x7F && c.code_point <= 0x9F)) {
        return absl::InvalidArgumentError("session id contains control characters");
      }
      i += c.length;
    }
    return absl::OkStatus();
  }

  static absl::Status NotFound(const std::string& session_id) {
    return absl::NotFoundError(absl::StrCat("session '", session_id, "' not found"));
  }

  int64_t OldestKeptMillis() const {
    return UnixMillis(clock_.WallNow()) -
           std::chrono::duration_cast<std::chrono::milliseconds>(options_.max_age).count();
  }

  absl::Status RecountTurns(const std::string& session_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    AILB_ASSIGN_OR_RETURN(storage::Statement recount, db_->Prepare(R"sql(
        UPDATE memory_sessions
        SET turn_count = (SELECT COUNT(*) FROM memory_turns WHERE session_id = ?1)
        WHERE id = ?1)sql"));
    return recount.Bind(1, session_id).Run();
  }

  // The session's turns younger than max_age, newest first, at most max_turns_per_session.
  absl::StatusOr<std::vector<StoredTurn>> LoadRecentTurns(const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    AILB_ASSIGN_OR_RETURN(storage::Statement select, db_->Prepare(R"sql(
        SELECT id, role, content, tokens, vector FROM memory_turns
        WHERE session_id = ?1 AND created_at >= ?2 ORDER BY id DESC LIMIT ?3)sql"));
    select.Bind(1, session_id)
        .Bind(2, OldestKeptMillis())
        .Bind(3, int64_t{options_.max_turns_per_session});
    const size_t vector_bytes = static_cast<size_t>(embedder_->dimensions()) * sizeof(float);
    std::vector<StoredTurn> turns;
    while (true) {
      AILB_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      StoredTurn& turn = turns.emplace_back();
      turn.id = select.ColumnInt(0);
      turn.role = select.ColumnText(1);
      turn.content = select.ColumnText(2);
      turn.tokens = static_cast<int>(select.ColumnInt(3));
      // A vector of another size was written with another embedder: the turn stays usable as
      // recent context but cannot be compared.
      const std::string_view blob = select.ColumnBlob(4);
      if (blob.size() == vector_bytes && vector_bytes > 0) {
        turn.vector.resize(blob.size() / sizeof(float));
        std::memcpy(turn.vector.data(), blob.data(), blob.size());
      }
    }
    return turns;
  }

  // Up to similar_turns of `candidates` most similar to `message` (cosine > 0) within
  // similar_token_budget.
  absl::StatusOr<std::vector<const StoredTurn*>> FindRelevant(
      const std::string& message, std::span<const StoredTurn> candidates) {
    std::string query_text = SanitizeUtf8(message);
    TruncateUtf8(query_text, options_.max_turn_bytes);
    AILB_ASSIGN_OR_RETURN(std::vector<rag::Vector> embedded, embedder_->Embed({query_text}));
    const int dimensions = embedder_->dimensions();
    if (embedded.size() != 1 || embedded[0].size() != static_cast<size_t>(dimensions)) {
      return absl::InternalError("embedder returned a malformed query vector");
    }
    const rag::Vector& query = embedded[0];
    // A zero vector (all stopwords, say) is orthogonal to everything: nothing can be relevant.
    if (std::all_of(query.begin(), query.end(), [](float x) { return x == 0; })) {
      return std::vector<const StoredTurn*>{};
    }

    std::vector<float> vectors;
    std::vector<uint64_t> labels;  // index into `candidates`
    vectors.reserve(candidates.size() * static_cast<size_t>(dimensions));
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (candidates[i].vector.empty()) continue;
      vectors.insert(vectors.end(), candidates[i].vector.begin(), candidates[i].vector.end());
      labels.push_back(i);
    }
    // Every candidate ranked (a session is small), so that a turn over the budget can be passed
    // over for the next best.
    std::vector<const StoredTurn*> relevant;
    int64_t tokens = 0;
    for (const rag::SearchHit& hit :
         rag::ExactSearch(vectors, labels, dimensions, query, labels.size())) {
      if (relevant.size() >= static_cast<size_t>(options_.similar_turns) || hit.score <= 0) break;
      if (hit.label >= candidates.size()) continue;
      const StoredTurn& turn = candidates[hit.label];
      if (tokens + turn.tokens > options_.similar_token_budget) continue;
      tokens += turn.tokens;
      relevant.push_back(&turn);
    }
    return relevant;
  }

  const std::shared_ptr<rag::Embedder> embedder_;
  const Clock& clock_;
  const MemoryOptions options_;

  std::mutex mu_;
  const std::unique_ptr<storage::Database> db_ ABSL_GUARDED_BY(mu_);
};

absl::Status ValidateOptions(const MemoryOptions& options) {
  if (options.max_turns_per_session <= 0) {
    return absl::InvalidArgumentError("memory max_turns_per_session must be positive");
  }
  if (options.max_age <= std::chrono::seconds::zero()) {
    return absl::InvalidArgumentError("memory max_age must be positive");
  }
  if (options.recent_token_budget < 0 || options.similar_turns < 0 ||
      options.similar_token_budget < 0) {
    return absl::InvalidArgumentError(
        "memory recent_token_budget, similar_turns and similar_token_budget must not be negative");
  }
  if (options.max_session_id_bytes == 0 || options.max_turn_bytes == 0) {
    return absl::InvalidArgumentError(
        "memory max_session_id_bytes and max_turn_bytes must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SessionMemory>> SessionMemory::Open(
    const std::string& data_dir, std::shared_ptr<rag::Embedder> embedder, const Clock& clock,
    MemoryOptions options) {
  if (embedder == nullptr) return absl::InvalidArgumentError("session memory needs an embedder");
  if (embedder->dimensions() <= 0) {
    return absl::InvalidArgumentError("session memory embedder has no dimensions");
  }
  AILB_RETURN_IF_ERROR(ValidateOptions(options));
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create data directory ", data_dir, ": ", error.message()));
  }
  AILB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db,
                        storage::Database::Open(data_dir + "/ailb.db"));
  AILB_RETURN_IF_ERROR(db->Exec(kSchema));
  return std::make_unique<SqliteSessionMemory>(std::move(db), std::move(embedder), clock, options);
}

}  // namespace ailb::memory
