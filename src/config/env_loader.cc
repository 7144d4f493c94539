#include "config/env_loader.h"

#include <optional>
#include <string_view>

namespace ailb::config::internal {
namespace {

// Names of the per-provider model lists, in the order their deployments are appended.
struct ProviderModelsVar {
  ProviderKind kind;
  std::string_view name;
};
constexpr ProviderModelsVar kModelsVars[] = {
    {ProviderKind::kOpenAI, "OPENAI_MODELS"},
    {ProviderKind::kAnthropic, "ANTHROPIC_MODELS"},
    {ProviderKind::kOllama, "OLLAMA_MODELS"},
};

void AppendProviderDeployments(const Environment& env, ProviderKind kind,
                               std::string_view models_var, Config* config, SourceMap* sources,
                               std::vector<std::string>* errors) {
  std::optional<std::string> models = EnvValue(env, models_var);
  if (!models) return;

  std::string api_base = DefaultApiBase(kind, env);
  std::string base_label(EnvValue(env, BaseUrlEnvName(kind)) ? BaseUrlEnvName(kind) : "");
  std::string_view key_var = ApiKeyEnvName(kind);
  std::string api_key;
  if (!key_var.empty()) api_key = EnvValue(env, key_var).value_or("");
  if (api_key.empty() && RequiresApiKey(kind, api_base)) {
    errors->push_back(Cat(key_var, ": not set, but ", models_var, " uses ", RedactUrl(api_base),
                          ", which requires an API key"));
  }

  std::vector<std::string> entries = SplitList(*models);
  for (size_t i = 0; i < entries.size(); ++i) {
    std::string path = Cat(models_var, "[", i, "]");
    std::string_view entry = entries[i];
    std::string_view public_name = entry;
    std::string_view upstream_model = entry;
    // "public=upstream" publishes an upstream model under another name.
    if (size_t eq = entry.find('='); eq != std::string_view::npos) {
      public_name = Trim(entry.substr(0, eq));
      upstream_model = Trim(entry.substr(eq + 1));
      if (public_name.empty() || upstream_model.empty()) {
        errors->push_back(
            Cat(path, ": expected \"model\" or \"public=upstream\", got \"", entry, "\""));
        continue;
      }
    }
    Deployment deployment;
    deployment.model_name = std::string(public_name);
    deployment.provider = kind;
    deployment.upstream_model = std::string(upstream_model);
    deployment.api_base = api_base;
    deployment.api_key = api_key;
    deployment.api_key_env = std::string(key_var);
    deployment.id = DefaultDeploymentId(deployment);
    config->deployments.push_back(std::move(deployment));
    sources->AddDeployment({std::move(path), DeploymentStyle::kEnv, base_label});
  }
}

}  // namespace

void ApplyEnvironment(const Environment& env, Config* config, SourceMap* sources,
                      std::vector<std::string>* errors) {
  // `lower` for enumerations, so "INFO" or "JSON" work as operators expect.
  auto apply_string = [&](std::string_view var, std::string_view key, std::string* field,
                          bool lower) {
    std::optional<std::string> value = EnvValue(env, var);
    if (!value) return;
    *field = lower ? AsciiLower(*value) : *value;
    sources->SetSetting(key, var);
  };
  auto apply_integer = [&]<typename T>(std::string_view var, std::string_view key, T* field) {
    std::optional<std::string> value = EnvValue(env, var);
    if (value && ParseInteger(var, *value, field, errors)) sources->SetSetting(key, var);
  };
  auto apply_bool = [&](std::string_view var, std::string_view key, bool* field) {
    std::optional<std::string> value = EnvValue(env, var);
    if (!value) return;
    if (std::optional<bool> parsed = ParseBool(*value)) {
      *field = *parsed;
      sources->SetSetting(key, var);
    } else {
      errors->push_back(Cat(var, ": not a boolean (true/false, 1/0, yes/no, on/off): ", *value));
    }
  };

  apply_string("HOST", "server.host", &config->server.host, false);
  apply_integer("HTTP_PORT", "server.http_port", &config->server.http_port);
  apply_integer("GRPC_PORT", "server.grpc_port", &config->server.grpc_port);
  apply_integer("HTTP_THREADS", "server.http_threads", &config->server.http_threads);
  apply_integer("AILB_MAX_BODY_BYTES", "server.max_body_bytes", &config->server.max_body_bytes);
  apply_integer("AILB_DRAIN_TIMEOUT_MS", "server.drain_timeout_ms",
                &config->server.drain_timeout_ms);
  apply_string("AILB_GRPC_HOST", "server.grpc_host", &config->server.grpc_host, false);
  apply_string("AILB_CONTROL_TOKEN", "server.control_token", &config->server.control_token, false);
  apply_integer("AILB_PROMOTION_INTERVAL_MS", "server.promotion_interval_ms",
                &config->server.promotion_interval_ms);
  apply_string("MODULE_ID", "module_id", &config->module_id, false);
  apply_string("ROUTING_STRATEGY", "routing_strategy", &config->routing_strategy, true);
  apply_bool("AILB_SESSION_AFFINITY", "session_affinity", &config->session_affinity);
  apply_bool("ENABLE_MEMORY", "enable_memory", &config->enable_memory);
  apply_bool("ENABLE_RAG", "enable_rag", &config->enable_rag);
  apply_string("AILB_DATA_DIR", "data_dir", &config->data_dir, false);
  apply_string("LOG_LEVEL", "log_level", &config->log_level, true);
  apply_string("LOG_FORMAT", "log_format", &config->log_format, true);
  apply_integer("AILB_CONNECT_TIMEOUT_MS", "timeouts.connect_ms", &config->timeouts.connect_ms);
  apply_integer("AILB_FIRST_BYTE_TIMEOUT_MS", "timeouts.first_byte_ms",
                &config->timeouts.first_byte_ms);
  apply_integer("AILB_TOTAL_TIMEOUT_MS", "timeouts.total_ms", &config->timeouts.total_ms);
  apply_integer("AILB_STREAM_IDLE_TIMEOUT_MS", "timeouts.stream_idle_ms",
                &config->timeouts.stream_idle_ms);
  apply_integer("AILB_RETRY_BACKOFF_MS", "retries.backoff_base_ms",
                &config->retries.backoff_base_ms);
  apply_integer("AILB_RETRY_BACKOFF_MAX_MS", "retries.backoff_max_ms",
                &config->retries.backoff_max_ms);
  apply_integer("AILB_MAX_ATTEMPTS", "retries.max_attempts", &config->retries.max_attempts);
  apply_integer("AILB_HEALTH_CHECK_INTERVAL_MS", "health_check_interval_ms",
                &config->health_check_interval_ms);

  // A list is replaced as a whole: merging keys from two places would make it hard to revoke one.
  if (std::optional<std::string> keys = EnvValue(env, "AILB_API_KEYS")) {
    config->api_keys = SplitList(*keys);
    config->api_key_settings.clear();
    sources->SetSetting("api_keys", "AILB_API_KEYS");
  }
  apply_string("AILB_ADMIN_KEY", "admin_key", &config->admin_key, false);

  for (const ProviderModelsVar& var : kModelsVars) {
    AppendProviderDeployments(env, var.kind, var.name, config, sources, errors);
  }
}

}  // namespace ailb::config::internal
