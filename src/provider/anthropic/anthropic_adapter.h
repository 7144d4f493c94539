#pragma once

#include "ailb/provider/adapter.h"

namespace ailb::provider {

// Anthropic's Messages API: POST {api_base}/v1/messages with x-api-key and
// anthropic-version: 2023-06-01. api_base is the bare origin (https://api.anthropic.com).
//
// Request translation, where OpenAI and Anthropic disagree:
// - system and developer messages, wherever they appear, become the top-level `system` string:
//   the text parts of one message joined with "\n", messages joined with "\n\n". Anthropic has
//   no mid-conversation system turn, so their position is lost. Non-text parts are rejected.
// - response_format json_object / json_schema has no native equivalent; an instruction (with the
//   schema, when given) is appended to `system` as the last paragraph.
// - Anthropic requires strictly alternating user/assistant turns starting with user. Tool
//   results travel as user turns; consecutive messages of the same (translated) role merge into
//   one message with several content blocks; messages that translate to no blocks (empty text)
//   are dropped. When the conversation does not start with a user turn (or has no turns at all)
//   a user turn "(continued)" is prepended. In a user turn tool_result blocks are moved before
//   other blocks (stable), as Anthropic requires them first.
// - A final assistant turn is a prefill; Anthropic rejects trailing whitespace there, so it is
//   trimmed (and the block dropped if nothing remains).
// - Content is always sent as block arrays. Images: base64 data URLs become base64 sources,
//   http(s) URLs become url sources; anything else is InvalidArgument. Other part types (audio,
//   file) are InvalidArgument: silently dropping them would change the question.
// - tool_calls become tool_use blocks; `arguments` must be a JSON object encoded as a string
//   (an empty string means {}), anything else is InvalidArgument. Tool messages become
//   tool_result blocks. Legacy role "function" messages are InvalidArgument (no call id to
//   pair them with).
// - max_tokens is required by Anthropic: max_completion_tokens, else max_tokens, else 4096.
// - temperature is clamped to Anthropic's 0..1 (min(value, 1)), not rescaled: OpenAI values
//   above 1 are rare and mean "more random", which 1 is the closest to. top_p is sent only
//   without temperature: current Claude models reject the pair.
// - stop (string or array) -> stop_sequences; user -> metadata.user_id; n > 1 is
//   InvalidArgument (Anthropic returns one choice).
// - tools -> {name, description, input_schema}; tool_choice auto -> {type:auto},
//   required -> {type:any}, none -> {type:none}, a named function -> {type:tool, name};
//   parallel_tool_calls:false -> disable_parallel_tool_use. tool_choice is omitted without tools.
// - Dropped (no Anthropic meaning): frequency_penalty, presence_penalty, logit_bias, logprobs,
//   top_logprobs, seed, service_tier, store, metadata, modalities, audio, prediction,
//   reasoning_effort, web_search_options, stream_options, functions, function_call, message
//   `name` fields and tool `strict`.
//
// Responses: thinking and server-tool blocks are dropped; id comes from Anthropic, created is 0
// (the gateway stamps both). Prompt tokens include cache writes and reads.
//
// Errors: the HTTP status picks the code, with Anthropic's own 529 ("overloaded") reported as
// 503 so retry policies recognise it; the body's message and error type are kept, Retry-After
// is carried. A mid-stream error event is a 502, except overloaded_error, which stays a
// retryable 503.
class AnthropicAdapter final : public ProviderAdapter {
 public:
  config::ProviderKind kind() const override { return config::ProviderKind::kAnthropic; }
  absl::StatusOr<upstream::Request> EncodeChat(const llm::ChatRequest& request,
                                               const config::Deployment& deployment) const override;
  absl::StatusOr<nlohmann::json> DecodeChat(std::string_view body) const override;
  std::unique_ptr<StreamDecoder> NewStreamDecoder() const override;
  absl::Status DecodeError(int http_status, const upstream::Headers& headers,
                           std::string_view body) const override;
  absl::StatusOr<upstream::Request> EncodeHealthProbe(
      const config::Deployment& deployment) const override;
};

}  // namespace ailb::provider
