// Conversation memory keyed by session_id: every completed exchange is stored (SQLite, with one
// vector per turn from the local embedder), and a new request of the session gets a system message
// with the most recent turns that fit a token budget plus older turns most similar to its last
// user message (exact search over the session's vectors; sessions are small).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/rag/embedder.h"
#include "nlohmann/json.hpp"

namespace ailb::memory {

struct MemoryOptions {
  int max_turns_per_session = 200;  // older turns are dropped (with their vectors)
  std::chrono::seconds max_age{30 * 24 * 3600};
  int recent_token_budget = 1500;  // most recent turns, newest first, while they fit
  int similar_turns = 3;           // plus this many older turns most similar to the new message
  // ...whose tokens together fit this budget (best first; a turn too large is passed over), so one
  // huge old turn cannot flood the prompt.
  int similar_token_budget = 1000;
  size_t max_session_id_bytes = 256;
  size_t max_turn_bytes = 256 << 10;  // longer turns are stored truncated
};

// Thread-safe. Blocking (disk, embedder): call from worker threads only.
class SessionMemory {
 public:
  // Opens (creating) `data_dir`/ailb.db. The embedder must be local (no network) in practice.
  static absl::StatusOr<std::unique_ptr<SessionMemory>> Open(
      const std::string& data_dir, std::shared_ptr<rag::Embedder> embedder, const Clock& clock,
      MemoryOptions options = {});
  virtual ~SessionMemory() = default;

  // Stores one exchange: the request's trailing user message(s) (from `request_messages`, an
  // OpenAI messages array) and the assistant's reply text. Durable when it returns.
  // InvalidArgument for a bad session id or a `request_messages` that is not an array; malformed
  // elements inside the array are ignored.
  virtual absl::Status AppendExchange(const std::string& session_id,
                                      const nlohmann::json& request_messages,
                                      const std::string& assistant_reply) = 0;
  // The system-message text to inject for a request carrying `request_messages`, or nullopt when
  // the session has nothing to add. Turns whose content the request already carries are skipped.
  // The text lists the newest turns within recent_token_budget, then (labelled "Earlier turns that
  // may be relevant:") older turns similar to the last user message, each part oldest first.
  // Turns older than max_age are ignored even before EnforceRetention removes them.
  virtual absl::StatusOr<std::optional<std::string>> BuildContext(
      const std::string& session_id, const nlohmann::json& request_messages) = 0;
  // {"session_id", "turns": [{"role","content","created_at"}], "turn_count"}, oldest first;
  // created_at is ISO 8601 UTC with milliseconds ("2026-11-25T06:00:00.123Z"), turn_count the
  // number of turns stored. NotFound if unknown.
  virtual absl::StatusOr<nlohmann::json> History(const std::string& session_id) = 0;
  // Deletes the session's turns and vectors. NotFound if unknown.
  virtual absl::Status Forget(const std::string& session_id) = 0;
  // Applies max_age to every session; returns the number of turns removed.
  virtual absl::StatusOr<int64_t> EnforceRetention() = 0;
};

}  // namespace ailb::memory
