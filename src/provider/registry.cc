#include "absl/strings/str_cat.h"
#include "ailb/provider/adapter.h"
#include "provider/anthropic/anthropic_adapter.h"
#include "provider/ollama/ollama_adapter.h"
#include "provider/openai/openai_adapter.h"

namespace ailb::provider {

absl::StatusOr<std::shared_ptr<const ProviderAdapter>> AdapterFor(config::ProviderKind kind) {
  // Adapters are stateless, so one shared instance per kind serves every deployment. No default
  // label: -Wswitch then flags a new ProviderKind that has no adapter here.
  switch (kind) {
    case config::ProviderKind::kOpenAI: {
      static const auto* const kOpenAI =
          new std::shared_ptr<const ProviderAdapter>(std::make_shared<OpenAIAdapter>());
      return *kOpenAI;
    }
    case config::ProviderKind::kAnthropic: {
      static const auto* const kAnthropic =
          new std::shared_ptr<const ProviderAdapter>(std::make_shared<AnthropicAdapter>());
      return *kAnthropic;
    }
    case config::ProviderKind::kOllama: {
      static const auto* const kOllama =
          new std::shared_ptr<const ProviderAdapter>(std::make_shared<OllamaAdapter>());
      return *kOllama;
    }
  }
  // Only reachable through a value cast outside the enum's range.
  const std::string_view name = config::ProviderName(kind);
  return absl::UnimplementedError(absl::StrCat(
      "provider '", absl::string_view(name.data(), name.size()), "' has no adapter in this build"));
}

}  // namespace ailb::provider
