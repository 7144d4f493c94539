#include "config/validate.h"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace ailb::config::internal {
namespace {

constexpr std::string_view kRoutingStrategies[] = {
    "round_robin",   "weighted", "least_busy", "latency_optimized", "cost_optimized", "usage_based",
    "load_balanced", "failover", "random",
};
constexpr std::string_view kLogLevels[] = {"trace", "debug",    "info", "warn",
                                           "error", "critical", "off"};
constexpr std::string_view kLogFormats[] = {"text", "json"};

constexpr int64_t kMinBodyBytes = 1 << 10;
constexpr int64_t kMaxBodyBytes = 1 << 30;
constexpr size_t kMinApiKeyLength = 8;
constexpr std::string_view kSha256KeyPrefix = "sha256:";
constexpr size_t kSha256HexDigits = 64;

bool HasWhitespace(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

template <size_t N>
std::string ChoiceList(const std::string_view (&choices)[N]) {
  std::string list;
  for (std::string_view choice : choices) list += Cat(list.empty() ? "" : ", ", choice);
  return list;
}

class Validator {
 public:
  Validator(const SourceMap& sources, std::vector<std::string>* problems)
      : sources_(sources), problems_(problems) {}

  template <typename... Pieces>
  void Problem(std::string_view label, const Pieces&... message) {
    problems_->push_back(Cat(label, ": ", message...));
  }

  void Range(std::string_view key, int64_t value, int64_t min, int64_t max) {
    if (value < min || value > max) {
      Problem(sources_.Setting(key), "must be between ", min, " and ", max, ", got ", value);
    }
  }

  void Positive(std::string_view key, int64_t value) {
    if (value <= 0) Problem(sources_.Setting(key), "must be greater than 0, got ", value);
  }

  void NotEmpty(std::string_view key, std::string_view value) {
    if (value.empty()) Problem(sources_.Setting(key), "must not be empty");
  }

  template <size_t N>
  void OneOf(std::string_view key, std::string_view value, const std::string_view (&choices)[N]) {
    if (std::find(std::begin(choices), std::end(choices), value) == std::end(choices)) {
      Problem(sources_.Setting(key), "must be one of ", ChoiceList(choices), " (got \"", value,
              "\")");
    }
  }

  // A key written "sha256:<hex>" is the SHA-256 of the real key: anything but 64 hex digits after
  // the prefix can never match, so it is refused. Never echoes the key (messages are logged).
  void KeyDigest(std::string_view label, std::string_view key) {
    if (!key.starts_with(kSha256KeyPrefix)) return;
    const std::string_view hex = key.substr(kSha256KeyPrefix.size());
    const bool all_hex = std::all_of(hex.begin(), hex.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    });
    if (hex.size() != kSha256HexDigits || !all_hex) {
      Problem(label, "a \"", kSha256KeyPrefix, "\" key must be followed by exactly ",
              kSha256HexDigits, " hex digits (the SHA-256 of the key), got ", hex.size(),
              " character(s)", all_hex ? "" : " including non-hex ones");
    }
  }

  void Deployment(size_t index, const config::Deployment& deployment) {
    auto field = [&](std::string_view name) { return sources_.DeploymentField(index, name); };
    if (deployment.model_name.empty()) {
      Problem(field("model_name"), "must not be empty");
    } else if (HasWhitespace(deployment.model_name)) {
      Problem(field("model_name"), "must not contain whitespace (got \"", deployment.model_name,
              "\")");
    }
    if (deployment.upstream_model.empty()) {
      Problem(field("upstream_model"), "must not be empty");
    }
    if (deployment.id.empty()) Problem(field("id"), "must not be empty");
    std::string base = AsciiLower(deployment.api_base);
    bool http = base.starts_with("http://") && base.size() > std::string_view("http://").size();
    bool https = base.starts_with("https://") && base.size() > std::string_view("https://").size();
    if (!http && !https) {
      Problem(field("api_base"), "must start with http:// or https:// (got \"",
              RedactUrl(deployment.api_base), "\")");
    }
    if (!std::isfinite(deployment.weight) || deployment.weight < 0) {
      Problem(field("weight"), "must be a finite number >= 0, got ", deployment.weight);
    }
    if (deployment.rpm < 0) Problem(field("rpm"), "must be >= 0, got ", deployment.rpm);
    if (deployment.tpm < 0) Problem(field("tpm"), "must be >= 0, got ", deployment.tpm);
    Cost(field("input_cost_per_token"), deployment.input_cost_per_token);
    Cost(field("output_cost_per_token"), deployment.output_cost_per_token);
  }

 private:
  void Cost(std::string_view label, double cost) {
    if (!std::isfinite(cost) || cost < 0) {
      Problem(label, "must be a finite number >= 0, got ", cost);
    }
  }

  const SourceMap& sources_;
  std::vector<std::string>* problems_;
};

}  // namespace

std::vector<std::string> ValidateConfig(const Config& config, const SourceMap& sources) {
  std::vector<std::string> problems;
  Validator v(sources, &problems);

  const ServerConfig& server = config.server;
  v.NotEmpty("server.host", server.host);
  // Port 0 asks the kernel for a free port, which tests rely on.
  v.Range("server.http_port", server.http_port, 0, 65535);
  v.Range("server.grpc_port", server.grpc_port, 0, 65535);
  v.Range("server.http_threads", server.http_threads, 1, 64);
  v.Range("server.max_body_bytes", server.max_body_bytes, kMinBodyBytes, kMaxBodyBytes);
  v.Positive("server.drain_timeout_ms", server.drain_timeout_ms);
  v.Positive("server.promotion_interval_ms", server.promotion_interval_ms);

  const TimeoutConfig& timeouts = config.timeouts;
  v.Positive("timeouts.connect_ms", timeouts.connect_ms);
  v.Positive("timeouts.first_byte_ms", timeouts.first_byte_ms);
  v.Positive("timeouts.total_ms", timeouts.total_ms);
  v.Positive("timeouts.stream_idle_ms", timeouts.stream_idle_ms);

  v.Range("retries.backoff_base_ms", config.retries.backoff_base_ms, 0, 60'000);
  v.Range("retries.backoff_max_ms", config.retries.backoff_max_ms, 0, 600'000);
  v.Range("retries.max_attempts", config.retries.max_attempts, 1, 100);
  v.Range("health_check_interval_ms", config.health_check_interval_ms, 0, 86'400'000);

  const std::vector<std::string> models = config.ModelNames();
  auto known_group = [&](const std::string& name) {
    return std::find(models.begin(), models.end(), name) != models.end();
  };
  for (const auto& [group, settings] : config.model_groups) {
    const std::string path = Cat("model_groups.", group);
    if (!known_group(group)) v.Problem(path, "no deployment serves this model");
    if (!settings.routing_strategy.empty()) {
      v.OneOf(Cat(path, ".routing_strategy"), settings.routing_strategy, kRoutingStrategies);
    }
    auto check_chain = [&](std::string_view key, const std::vector<std::string>& chain) {
      for (size_t i = 0; i < chain.size(); ++i) {
        const std::string entry = Cat(path, ".", key, "[", i, "]");
        if (chain[i] == group) {
          v.Problem(entry, "a group cannot fall back to itself");
        } else if (!known_group(chain[i])) {
          v.Problem(entry, "unknown model \"", chain[i], "\"");
        }
      }
    };
    check_chain("fallbacks", settings.fallbacks);
    check_chain("context_window_fallbacks", settings.context_window_fallbacks);
    if (settings.max_input_tokens < 0) {
      v.Problem(Cat(path, ".max_input_tokens"), "must not be negative");
    }
    if (settings.hedge_after_ms < 0 && settings.hedge_after_ms != kHedgeAfterP95) {
      v.Problem(Cat(path, ".hedge_after_ms"), "must be a number of milliseconds or \"p95\"");
    }
  }

  v.NotEmpty("module_id", config.module_id);
  v.NotEmpty("data_dir", config.data_dir);
  v.OneOf("routing_strategy", config.routing_strategy, kRoutingStrategies);
  v.OneOf("log_level", config.log_level, kLogLevels);
  v.OneOf("log_format", config.log_format, kLogFormats);

  std::string keys_label = sources.Setting("api_keys");
  for (size_t i = 0; i < config.api_keys.size(); ++i) {
    // Never echo the key itself: this message is logged.
    if (config.api_keys[i].size() < kMinApiKeyLength) {
      v.Problem(Cat(keys_label, "[", i, "]"), "must be at least ", kMinApiKeyLength,
                " characters long");
    }
    v.KeyDigest(Cat(keys_label, "[", i, "]"), config.api_keys[i]);
  }
  v.KeyDigest(sources.Setting("admin_key"), config.admin_key);
  if (!config.admin_key.empty() && config.admin_key.size() < kMinApiKeyLength) {
    v.Problem(sources.Setting("admin_key"), "must be at least ", kMinApiKeyLength,
              " characters long");
  }
  for (size_t i = 0; i < config.api_key_settings.size(); ++i) {
    const KeyLimits& limits = config.api_key_settings[i].limits;
    const std::string path = Cat(keys_label, "[", i, "]");
    for (const auto& [name, value] : {std::pair<const char*, int64_t>{"rpm", limits.rpm},
                                      {"tpm", limits.tpm},
                                      {"tokens_per_day", limits.tokens_per_day},
                                      {"tokens_per_month", limits.tokens_per_month}}) {
      if (value < 0) v.Problem(Cat(path, ".", name), "must not be negative (0 = no limit)");
    }
    for (const auto& [name, value] :
         {std::pair<const char*, double>{"cost_usd_per_day", limits.cost_usd_per_day},
          {"cost_usd_per_month", limits.cost_usd_per_month}}) {
      if (!(value >= 0)) v.Problem(Cat(path, ".", name), "must not be negative (0 = no limit)");
    }
  }

  for (size_t i = 0; i < config.deployments.size(); ++i) v.Deployment(i, config.deployments[i]);
  return problems;
}

}  // namespace ailb::config::internal
