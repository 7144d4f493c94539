// The ModuleCore of the running process: wired by bootstrap to the real components.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/config/config.h"
#include "ailb/control/module_core.h"
#include "ailb/gateway/gateway.h"
#include "ailb/metrics/registry.h"
#include "ailb/metrics/request_metrics.h"
#include "ailb/ratelimit/rate_limiter.h"
#include "ailb/router/aliases.h"
#include "ailb/router/health.h"
#include "ailb/router/traffic_split.h"
#include "ailb/upstream/http_client.h"

namespace ailb::control {

using ConfigPtr = std::shared_ptr<const config::Config>;

struct LiveModuleDeps {
  const Clock* clock = nullptr;
  config::ConfigStore* config = nullptr;
  // Re-reads the environment and the configuration file.
  std::function<absl::StatusOr<ConfigPtr>()> reload;
  // Builds a configuration from a YAML/JSON document (plus the environment).
  std::function<absl::StatusOr<ConfigPtr>(const std::string& document)> parse_document;
  // Makes a configuration current (and everything that follows from it).
  std::function<void(ConfigPtr)> publish;
  // The configuration the process started with: settings read once at start keep its values, and
  // a reload that changes one says so (config::RestartOnlyChanges). Null: compared with the
  // current configuration.
  ConfigPtr startup;
  gateway::Gateway* gateway = nullptr;
  router::HealthTracker* health = nullptr;
  router::TrafficSplit* split = nullptr;
  router::ModelAliases* aliases = nullptr;
  ratelimit::RateLimiter* rate_limiter = nullptr;
  metrics::Registry* registry = nullptr;
  metrics::RequestMetrics* request_metrics = nullptr;
  upstream::HttpClient* client = nullptr;
  std::function<int64_t()> open_connections;
  std::function<int64_t()> total_connections;
  // Server-sent event streams open now (the ailb_open_streams gauge; optional).
  std::function<int64_t()> open_streams;
  // Starts a graceful shutdown of the process.
  std::function<void(bool graceful, int timeout_seconds)> shutdown;
  std::chrono::milliseconds promotion_interval{30'000};
  std::chrono::milliseconds deep_check_timeout{5'000};
};

class LiveModule : public ModuleCore {
 public:
  // STARTING until MarkServing, STOPPING after MarkStopping.
  virtual void MarkServing() = 0;
  virtual void MarkStopping() = 0;
  // The control server's bound "host:port" (known once it listens).
  virtual void SetGrpcAddress(const std::string& address) = 0;
};

std::unique_ptr<LiveModule> NewLiveModule(LiveModuleDeps deps);

}  // namespace ailb::control
