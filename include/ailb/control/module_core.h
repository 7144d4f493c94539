// What the control plane can see and change on the live module, in plain C++ types. The gRPC
// ModuleService (src/server/control) is a thin translation of this; nothing here knows protobuf.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/metrics/registry.h"
#include "ailb/metrics/request_metrics.h"
#include "ailb/ratelimit/rate_limiter.h"

namespace ailb::control {

enum class ModuleHealth { kHealthy, kDegraded, kUnhealthy, kStarting, kStopping };

struct InstanceInfo {
  std::string instance_id;  // MODULE_ID
  std::string address;      // "host:port" of the gRPC server
  std::string version;      // the active blue/green version, else ailb's own version
  ModuleHealth health = ModuleHealth::kStarting;
  WallTime started_at;
  int current_connections = 0;  // open HTTP client connections
  int max_connections = 0;      // 0 = no configured limit
  int traffic_weight = 100;     // weight of the active version (0-100)
  std::map<std::string, std::string> metadata;
};

struct StatusReport {
  InstanceInfo instance;
  ModuleHealth status = ModuleHealth::kStarting;
  std::string message;
  std::map<std::string, std::string> details;  // per deployment, memory, rag, counts
  WallTime checked_at;
};

struct StatsReport {
  metrics::StatsWindow window;
  int64_t active_connections = 0;
  int64_t total_connections = 0;
  double cpu_usage_percent = 0;
  double memory_usage_mb = 0;
  std::map<std::string, std::string> custom;
};

struct BlueGreenState {
  std::map<std::string, int> weights;  // every known version -> percent (sums to 100)
  std::string active_version;          // the version with the largest weight
  std::string blue_version;            // the version that was active before the last shift
  std::string green_version;           // the version being shifted to
  WallTime changed_at;
  bool promotion_in_progress = false;
};

struct ConfigDocument {
  std::string config_id;    // MODULE_ID
  std::string config_type;  // "yaml"
  std::string data;         // the effective configuration, secrets redacted
  std::string checksum;     // sha256 of data
  WallTime updated_at;
};

struct ConfigUpdateResult {
  bool validation_passed = false;
  bool applied = false;
  std::vector<std::string> errors;
  std::string message;
};

struct RouteInfo {
  std::string route_id;      // "model:<public name>"
  std::string model;         // the public name clients send
  std::string target;        // the model group that serves it (== model unless an alias)
  std::string path_pattern;  // "/v1/chat/completions"
  int priority = 100;
  bool from_config = true;  // false for aliases added at run time
  int deployments = 0;
};

struct CanHandleResult {
  bool can_handle = false;
  int priority = 0;
  std::string reason;
};

struct ScalingRecord {
  int min_instances = 0;
  int max_instances = 0;
  int target_cpu_percent = 0;
  int target_memory_percent = 0;
  int target_connections = 0;
  int scale_up_threshold = 0;
  int scale_down_threshold = 0;
  int cooldown_seconds = 0;
  bool auto_scaling_enabled = false;
};

// Thread-safe. Methods may block briefly (deep health checks wait for provider probes, config
// reloads read a file); call them from control-plane threads, never from a Pistache reactor.
class ModuleCore {
 public:
  virtual ~ModuleCore() = default;

  // The instance id (MODULE_ID) in effect now: it follows configuration reloads. Cheap; every
  // RPC that names an instance_id is checked against it.
  virtual std::string InstanceId() = 0;
  virtual StatusReport Status() = 0;
  // `deep`: also probe every deployment with a free call (list models) and wait for the answers.
  virtual StatusReport HealthCheck(bool deep) = 0;

  virtual std::vector<metrics::Sample> Metrics(const std::vector<std::string>& names) = 0;
  virtual StatsReport Stats(bool reset_counters) = 0;

  // Blue/green. Weights survive restarts.
  virtual absl::StatusOr<BlueGreenState> SetTrafficWeight(const std::string& version,
                                                          int weight) = 0;
  virtual BlueGreenState BlueGreen() = 0;
  // Back to the weights before the last change (or all traffic to `target_version` when set).
  virtual absl::StatusOr<BlueGreenState> Rollback(const std::string& target_version) = 0;
  // Immediately, or `rate_percent` more traffic per step on the configured interval.
  virtual absl::StatusOr<BlueGreenState> Promote(const std::string& version, bool immediate,
                                                 int rate_percent) = 0;

  // Configuration.
  virtual ConfigUpdateResult Reload() = 0;
  virtual ConfigUpdateResult UpdateConfig(const std::string& document, bool validate_only) = 0;
  virtual ConfigDocument CurrentConfig() = 0;

  virtual ratelimit::RateLimiter& rate_limiter() = 0;

  // Routes: one per public model name, plus aliases added at run time.
  virtual std::vector<RouteInfo> Routes() = 0;
  // Adds or replaces aliases (`model` -> `target`); `replace_all` drops every other alias first.
  // InvalidArgument (nothing changed) when a target is not a configured model group.
  virtual absl::StatusOr<int> UpdateRoutes(const std::vector<RouteInfo>& routes,
                                           bool replace_all) = 0;
  // NotFound for an unknown id; FailedPrecondition for a route that comes from configuration.
  virtual absl::Status DeleteRoute(const std::string& route_id) = 0;
  virtual CanHandleResult CanHandle(const std::string& path, const std::string& model) = 0;

  // Starts a graceful shutdown (drain up to `timeout_seconds`, 0 = configured default).
  virtual void RequestShutdown(bool graceful, int timeout_seconds) = 0;
  virtual void RecordScaling(const ScalingRecord& record) = 0;
  virtual std::optional<ScalingRecord> Scaling() = 0;
};

}  // namespace ailb::control
