// Helpers shared by the environment and YAML loaders and by validation. Private to src/config/.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/config/config.h"

namespace ailb::config::internal {

namespace cat_internal {
inline void Append(std::string* out, std::string_view piece) { out->append(piece); }
template <typename T>
requires std::is_arithmetic_v<T> &&
    (!std::is_same_v<T, char>)void Append(std::string* out, T number) {
  out->append(absl::StrCat(number));
}
}  // namespace cat_internal

// absl::StrCat for std::string_view pieces: Debian's absl::string_view is a distinct type, so
// absl::StrCat does not accept std::string_view.
template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (cat_internal::Append(&out, pieces), ...);
  return out;
}

std::string_view Trim(std::string_view text);
std::string AsciiLower(std::string_view text);

// true/false/1/0/yes/no/on/off, any case. nullopt for anything else.
std::optional<bool> ParseBool(std::string_view text);

// Parses a whole decimal integer into `*out`. On failure appends "<key>: not an integer: <text>"
// (or "out of range") to `errors` and leaves `*out` untouched, so a bad value never cascades into
// a second, misleading range error from validation.
bool ParseInt64(std::string_view key, std::string_view text, int64_t* out,
                std::vector<std::string>* errors);
template <typename T>
bool ParseInteger(std::string_view key, std::string_view text, T* out,
                  std::vector<std::string>* errors) {
  int64_t value = 0;
  if (!ParseInt64(key, text, &value, errors)) return false;
  if (value < std::numeric_limits<T>::min() || value > std::numeric_limits<T>::max()) {
    errors->push_back(Cat(key, ": out of range: ", Trim(text)));
    return false;
  }
  *out = static_cast<T>(value);
  return true;
}

// Parses a whole decimal floating-point number; errors as for ParseInt64 ("not a number").
bool ParseDouble(std::string_view key, std::string_view text, double* out,
                 std::vector<std::string>* errors);

// Splits a comma-separated list, trimming entries and dropping empty ones.
std::vector<std::string> SplitList(std::string_view text);

// Trims and removes trailing slashes, so callers can append "/chat/completions" blindly.
std::string NormalizeApiBase(std::string_view api_base);

// `url` with any "user:password@" replaced by "***@", for messages.
std::string RedactUrl(std::string_view url);

// The built-in endpoint of each provider (what *_BASE_URL defaults to).
std::string_view BuiltinApiBase(ProviderKind kind);
// "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL".
std::string_view BaseUrlEnvName(ProviderKind kind);
// "OPENAI_API_KEY", "ANTHROPIC_API_KEY"; empty for Ollama, which has no key.
std::string_view ApiKeyEnvName(ProviderKind kind);
// The endpoint a deployment of `kind` gets when it names none: *_BASE_URL from `env` if set,
// else the built-in one (the same convention as the providers' own SDKs).
std::string DefaultApiBase(ProviderKind kind, const Environment& env);

// True when `api_base` is the provider's public cloud, which rejects requests without a key.
// OpenAI-compatible local servers (vLLM, llama.cpp, LM Studio) need none.
bool RequiresApiKey(ProviderKind kind, std::string_view api_base);

// Value of `name` in `env`, trimmed; nullopt when absent or blank (compose files often pass
// VAR= meaning "unset").
std::optional<std::string> EnvValue(const Environment& env, std::string_view name);

// "<provider>/<upstream_model>".
std::string DefaultDeploymentId(const Deployment& deployment);

// Gives later duplicates the suffix "#2", "#3", ... so every id is unique.
void MakeIdsUnique(std::vector<Deployment>* deployments);

// The candidate nearest to `word` by edit distance if it is close enough to be a likely typo.
std::optional<std::string_view> ClosestMatch(std::string_view word,
                                             const std::vector<std::string_view>& candidates);

// How a deployment was written, which decides the key path its problems are reported under.
enum class DeploymentStyle {
  kPlain,    // unknown origin: "deployments[3].weight"
  kFlat,     // ailb's flat YAML keys: "model_list[3].weight", "model_list[3].model"
  kLiteLLM,  // LiteLLM nesting: "model_list[3].litellm_params.weight"
  kEnv,      // an entry of *_MODELS: "OPENAI_MODELS[0]"
};

struct DeploymentSource {
  std::string path;  // "model_list[2]", "OPENAI_MODELS[0]"
  DeploymentStyle style = DeploymentStyle::kPlain;
  // Set when api_base came from an environment variable (e.g. "OPENAI_BASE_URL").
  std::string api_base_label;
};

// Where each setting came from, so problems name the key the operator actually wrote
// ("HTTP_PORT" rather than "server.http_port", "model_list[2].litellm_params.rpm" rather than
// "deployments[2].rpm").
class SourceMap {
 public:
  // `key` is the canonical path used by validation, e.g. "server.http_port".
  void SetSetting(std::string_view key, std::string_view label);
  std::string Setting(std::string_view key) const;

  // Call once per deployment, in the order they are appended to Config::deployments.
  void AddDeployment(DeploymentSource source);
  // Path of `field` (a Deployment member name) of deployment `index`.
  std::string DeploymentField(size_t index, std::string_view field) const;

 private:
  std::map<std::string, std::string, std::less<>> settings_;
  std::vector<DeploymentSource> deployments_;
};

}  // namespace ailb::config::internal
