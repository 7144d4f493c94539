// The provider-neutral chat schema. ailb speaks OpenAI's Chat Completions format as its lingua
// franca (as LiteLLM, Portkey and Bifrost do): a request is the OpenAI body, validated, with
// ailb's extension fields lifted out; responses and stream chunks are OpenAI-shaped JSON. Each
// provider adapter translates between this and its own wire format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ailb::llm {

// ailb's own request fields; removed before a request is forwarded.
inline constexpr char kSessionIdField[] = "session_id";
// Longest session_id and rag_collection (also the X-Session-ID header).
inline constexpr size_t kMaxSessionIdBytes = 256;
inline constexpr char kRagCollectionField[] = "rag_collection";
inline constexpr char kRagTopKField[] = "rag_top_k";
inline constexpr int kDefaultRagTopK = 3;
inline constexpr int kMaxRagTopK = 50;
// Deeper request bodies are refused (400) before parsing.
inline constexpr int kMaxJsonNesting = 64;

struct ChatRequest {
  std::string model;
  bool stream = false;
  bool include_usage = false;  // the client asked for stream_options.include_usage
  std::optional<std::string> session_id;
  std::optional<std::string> rag_collection;
  int rag_top_k = kDefaultRagTopK;
  // The OpenAI request body without the extension fields; every other field is kept untouched.
  nlohmann::json body;
};

// Parses a request body that must be a JSON object, without throwing: InvalidArgument (code
// invalid_json) for malformed JSON or UTF-8 and for nesting deeper than kMaxJsonNesting.
absl::StatusOr<nlohmann::json> ParseJsonObject(std::string_view text);

// Parses and validates a /v1/chat/completions body. Never throws. Errors are InvalidArgument
// naming the offending field (OpenAI's `param`).
absl::StatusOr<ChatRequest> ParseChatRequest(std::string_view body);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool reported = false;  // the upstream told us (as opposed to zero by default)
};

// Reads `usage` from an OpenAI response or chunk; nullopt when it has none.
std::optional<Usage> UsageOf(const nlohmann::json& response);

// A tokenizer-free estimate of a request's prompt size (about 4 characters per token plus a
// small overhead per message), for context-window checks before sending.
int64_t EstimatePromptTokens(const nlohmann::json& body);

// Serialises without throwing: invalid UTF-8 is replaced rather than rejected.
std::string DumpJson(const nlohmann::json& value);

}  // namespace ailb::llm
