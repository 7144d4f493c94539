// ailb's configuration: an immutable snapshot built from environment variables and an optional
// YAML file (environment wins), validated as a whole before anything uses it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace ailb::config {

enum class ProviderKind { kOpenAI, kAnthropic, kOllama };

// "openai", "anthropic", "ollama".
std::string_view ProviderName(ProviderKind kind);
std::optional<ProviderKind> ParseProviderName(std::string_view name);

// One upstream that can serve a public model name.
struct Deployment {
  std::string id;          // unique; "<provider>/<upstream_model>" unless configured
  std::string model_name;  // the public name clients send (the model group)
  ProviderKind provider = ProviderKind::kOpenAI;
  std::string upstream_model;        // the model name sent to the provider
  std::string api_base;              // e.g. https://api.openai.com/v1 (no trailing slash)
  std::string api_key;               // resolved secret; never logged
  std::string api_key_env;           // the environment variable it came from, if any
  double weight = 1.0;               // relative share for weighted strategies (>= 0)
  int64_t rpm = 0;                   // requests per sliding 60 s, enforced (0 = no limit)
  int64_t tpm = 0;                   // prompt + completion tokens per 60 s, enforced (0 = none)
  int priority = 0;                  // lower is tried first by the failover strategy
  double input_cost_per_token = 0;   // USD
  double output_cost_per_token = 0;  // USD
  std::string version;               // blue/green tag; empty = untagged
};

struct ServerConfig {
  std::string host = "0.0.0.0";
  int http_port = 8080;
  int grpc_port = 50051;
  int http_threads = 2;                // Pistache reactor threads
  int64_t max_body_bytes = 8 << 20;    // request body limit
  int drain_timeout_ms = 30'000;       // graceful shutdown budget
  std::string grpc_host;               // control-plane bind address; empty = `host`
  std::string control_token;           // AILB_CONTROL_TOKEN; empty = control plane open
  int promotion_interval_ms = 30'000;  // step interval of gradual PromoteVersion
};

struct TimeoutConfig {
  int connect_ms = 5'000;        // TCP+TLS connect to an upstream
  int first_byte_ms = 120'000;   // request sent -> first response byte
  int total_ms = 600'000;        // whole request, all attempts
  int stream_idle_ms = 120'000;  // longest silence inside a stream
};

// Per model group settings (YAML `model_groups:`); a group without an entry uses the defaults.
struct ModelGroupConfig {
  std::string routing_strategy;  // empty: the global routing_strategy
  // Groups tried in order once every deployment of this one has failed (deployment faults only).
  std::vector<std::string> fallbacks;
  // Groups tried in order when the prompt is too long for this one: an upstream reported a
  // context-length error, or the estimated prompt exceeds max_input_tokens.
  std::vector<std::string> context_window_fallbacks;
  int64_t max_input_tokens = 0;  // 0 = unknown (only upstream errors trigger the fallback)
  // Hedging: start a second attempt on another deployment when the first has produced no byte
  // after this delay; the loser is cancelled. 0 = off; kHedgeAfterP95 = the group's observed
  // 95th percentile time to first byte (off until enough samples exist).
  int hedge_after_ms = 0;
};
inline constexpr int kHedgeAfterP95 = -1;

// Retries move to another deployment. The first failover is immediate (a different deployment,
// nothing to wait for); later ones back off exponentially with equal jitter, within the
// request's deadline.
struct RetryConfig {
  int backoff_base_ms = 25;
  int backoff_max_ms = 2'000;
  int max_attempts = 10;  // per request, across deployments and fallback groups
};

// Limits of one data-plane API key; 0 (or an empty list) means no limit.
struct KeyLimits {
  std::vector<std::string> models;  // public model names the key may use
  int64_t rpm = 0;                  // requests per minute
  int64_t tpm = 0;                  // tokens (prompt + completion) per minute
  int64_t tokens_per_day = 0;       // budgets per UTC day and month
  int64_t tokens_per_month = 0;
  double cost_usd_per_day = 0;
  double cost_usd_per_month = 0;
};

// A configured data-plane key with its name and limits.
struct ApiKeySettings {
  std::string name;
  KeyLimits limits;
};

struct Config {
  std::string module_id = "ailb-1";
  ServerConfig server;
  TimeoutConfig timeouts;
  std::string routing_strategy = "weighted";
  // Requests of one session_id prefer the deployment that served the session last, while it
  // admits traffic (keeps provider-side prompt caches warm).
  bool session_affinity = false;
  bool enable_memory = true;
  bool enable_rag = true;
  std::string data_dir = "./data";
  std::string log_level = "info";     // trace, debug, info, warn, error, critical, off
  std::string log_format = "text";    // text or json
  std::vector<std::string> api_keys;  // data-plane keys (plain or sha256:<hex>)
  // Names and limits of api_keys, index for index; shorter (or empty) when keys have none.
  std::vector<ApiKeySettings> api_key_settings;
  // AILB_ADMIN_KEY: RAG, session and key administration (plain or sha256:<hex>). With neither
  // api_keys nor an admin key (nor keys created earlier), the data plane is open.
  std::string admin_key;
  std::vector<Deployment> deployments;  // in configuration order
  std::map<std::string, ModelGroupConfig, std::less<>> model_groups;
  RetryConfig retries;
  // Active health checks: every interval, each deployment gets a free call (its model listing);
  // failures count against its breaker and a success ends a cooldown early. 0 = off.
  int health_check_interval_ms = 0;
  std::string source_file;  // the YAML file used, if any

  // Public model names in first-seen order.
  std::vector<std::string> ModelNames() const;
  // The settings of `group` (defaults when it has no entry).
  const ModelGroupConfig& GroupSettings(std::string_view group) const;
  // The strategy for `group`: its own, else the global one.
  const std::string& StrategyFor(std::string_view group) const;
};

// Environment variables as a map, so tests need not touch the process environment.
using Environment = std::map<std::string, std::string>;
Environment ProcessEnvironment();

// Builds a snapshot from `env` and, when `config_file` is set (or AILB_CONFIG is in `env`), the
// YAML file. Returns InvalidArgument listing every problem, each naming its key.
absl::StatusOr<Config> LoadConfig(const Environment& env,
                                  const std::optional<std::string>& config_file);

// The same, with the YAML document given as text (for UpdateConfig over gRPC).
absl::StatusOr<Config> LoadConfigFromYamlText(const Environment& env, std::string_view yaml_text,
                                              std::string_view source_name);

// Every problem with `config`, each naming its key; empty when valid.
std::vector<std::string> Validate(const Config& config);

// Publishes the current snapshot. Readers keep the snapshot they took for as long as they hold
// it, so requests in flight finish on the configuration they started with. Thread-safe.
class ConfigStore {
 public:
  explicit ConfigStore(std::shared_ptr<const Config> initial) : current_(std::move(initial)) {}
  std::shared_ptr<const Config> Current() const {
    std::lock_guard lock(mu_);
    return current_;
  }
  void Publish(std::shared_ptr<const Config> next) {
    std::lock_guard lock(mu_);
    current_ = std::move(next);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Config> current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::config
