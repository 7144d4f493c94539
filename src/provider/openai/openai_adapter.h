#pragma once

#include "ailb/provider/adapter.h"

namespace ailb::provider {

// OpenAI's Chat Completions API and the many servers compatible with it (vLLM, Groq,
// OpenRouter, Together, LM Studio ...). The request body passes through with the upstream model
// name substituted; usage is always requested for streams so ailb can account for tokens even
// when the client did not ask for them (the gateway drops what the client did not ask for).
class OpenAIAdapter final : public ProviderAdapter {
 public:
  config::ProviderKind kind() const override { return config::ProviderKind::kOpenAI; }
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
