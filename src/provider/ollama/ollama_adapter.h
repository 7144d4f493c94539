#pragma once

#include "ailb/provider/adapter.h"

namespace ailb::provider {

// Ollama's native chat API: POST {api_base}/api/chat, streamed as newline-delimited JSON.
// api_base is the bare origin (http://localhost:11434). An api_key, when configured (Ollama
// behind an authenticating proxy), is sent as a bearer token.
//
// Request translation, where OpenAI and Ollama disagree:
// - Messages keep their order and roles (developer becomes system). Content parts collapse to
//   one string (text parts joined with "\n") plus `images` (base64 only: the codec does no I/O,
//   so http(s) image URLs are InvalidArgument). Audio and file parts are InvalidArgument.
// - tool_calls keep OpenAI's shape but `arguments` is sent as an object, as Ollama requires: a
//   string that is not a JSON object is InvalidArgument ("" means {}). Tool messages carry
//   `tool_name`, found from the assistant call with the same id, since Ollama matches results
//   by name rather than id.
// - `stream` is always explicit because Ollama streams by default.
// - options: temperature, top_p, num_predict (max_completion_tokens, else max_tokens), stop,
//   seed, presence_penalty, frequency_penalty.
// - format: "json" for response_format json_object, the schema object for json_schema.
// - tools pass through. Ollama has no tool_choice: "none" omits the tools; "required" and named
//   choices cannot be enforced and are dropped.
// - n > 1 is InvalidArgument. Dropped: user, logit_bias, logprobs, top_logprobs, service_tier,
//   store, metadata, modalities, audio, prediction, reasoning_effort, parallel_tool_calls,
//   stream_options, functions, function_call and message `name` fields.
//
// Responses: Ollama has no response id, so id is "" and created 0 (the gateway stamps both);
// tool calls get ids call_<n>, numbered across the reply. `thinking` text is dropped.
class OllamaAdapter final : public ProviderAdapter {
 public:
  config::ProviderKind kind() const override { return config::ProviderKind::kOllama; }
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
