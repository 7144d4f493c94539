// The chat request as clients send it: parsing and validation, then encoding for every provider
// (a request that validates must always encode or be refused with a status, never crash).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ailb/config/config.h"
#include "ailb/llm/chat.h"
#include "ailb/provider/adapter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ailb::llm::ChatRequest> request = ailb::llm::ParseChatRequest(body);
  if (!request.ok()) return 0;
  for (ailb::config::ProviderKind kind :
       {ailb::config::ProviderKind::kOpenAI, ailb::config::ProviderKind::kAnthropic,
        ailb::config::ProviderKind::kOllama}) {
    absl::StatusOr<std::shared_ptr<const ailb::provider::ProviderAdapter>> adapter =
        ailb::provider::AdapterFor(kind);
    if (!adapter.ok()) continue;
    ailb::config::Deployment deployment;
    deployment.id = "fuzz";
    deployment.model_name = request->model;
    deployment.provider = kind;
    deployment.upstream_model = "up-fuzz";
    deployment.api_base = "http://127.0.0.1:1/v1";
    (void)(*adapter)->EncodeChat(*request, deployment);
  }
  (void)ailb::llm::EstimatePromptTokens(request->body);
  return 0;
}
