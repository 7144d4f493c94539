// An in-memory control::ModuleCore for control-plane tests: deterministic state, simple but
// consistent behaviour (blue/green weights, aliases, config validation), a real RateLimiter, and
// a log of every call so tests can check what the gRPC adapter asked for.
//
// Initial state:
//   instance "ailb-test-1", healthy, started at 2023-11-14T22:13:20Z, 3 of 100 connections
//   versions "v1" (100 %) and "v2" (0 %) known; blue "v1", green "v2"
//   routes "model:gpt-4o" (target gpt-4o, 2 deployments) and "model:llama3" (1), from config;
//   path "/v1/chat/completions"
//   config: a small YAML document (config_id = instance id, type "yaml", sha256 checksum)
//   metrics: ai_requests_per_minute 12, ailb_requests_total{model=gpt-4o} 42,
//            ailb_request_duration_seconds_p95 0.25
//
// Behaviour:
//   SetTrafficWeight(v, w): unknown v -> NotFound; else v gets w %, the other version carrying
//     traffic (the blue) gets 100 - w.
//   Rollback(""): the weights before the last change (FailedPrecondition when there is none);
//     Rollback(v): all traffic to v (NotFound when unknown).
//   Promote(v, immediate, rate): unknown v -> NotFound; immediate -> 100 %; else +rate (0 -> 10)
//     now and promotion_in_progress until 100.
//   UpdateConfig/Reload: a document containing "invalid" fails validation.
//   UpdateRoutes: a target that is not a configured model -> InvalidArgument.
//   DeleteRoute: a configured route -> FailedPrecondition, unknown -> NotFound.
//   CanHandle: chat/completions/embeddings paths and a known model (or no model).

#ifndef AILB_TESTS_FAKES_FAKE_MODULE_CORE_H_
#define AILB_TESTS_FAKES_FAKE_MODULE_CORE_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "ailb/common/clock.h"
#include "ailb/control/module_core.h"
#include "ailb/ratelimit/rate_limiter.h"

namespace ailb::testing {

class FakeModuleCore final : public control::ModuleCore {
 public:
  FakeModuleCore();

  // --- control::ModuleCore ---
  std::string InstanceId() override;  // not recorded in Calls()
  control::StatusReport Status() override;
  control::StatusReport HealthCheck(bool deep) override;
  std::vector<metrics::Sample> Metrics(const std::vector<std::string>& names) override;
  control::StatsReport Stats(bool reset_counters) override;
  absl::StatusOr<control::BlueGreenState> SetTrafficWeight(const std::string& version,
                                                           int weight) override;
  control::BlueGreenState BlueGreen() override;
  absl::StatusOr<control::BlueGreenState> Rollback(const std::string& target_version) override;
  absl::StatusOr<control::BlueGreenState> Promote(const std::string& version, bool immediate,
                                                  int rate_percent) override;
  control::ConfigUpdateResult Reload() override;
  control::ConfigUpdateResult UpdateConfig(const std::string& document,
                                           bool validate_only) override;
  control::ConfigDocument CurrentConfig() override;
  ratelimit::RateLimiter& rate_limiter() override { return rate_limiter_; }
  std::vector<control::RouteInfo> Routes() override;
  absl::StatusOr<int> UpdateRoutes(const std::vector<control::RouteInfo>& routes,
                                   bool replace_all) override;
  absl::Status DeleteRoute(const std::string& route_id) override;
  control::CanHandleResult CanHandle(const std::string& path, const std::string& model) override;
  void RequestShutdown(bool graceful, int timeout_seconds) override;
  void RecordScaling(const control::ScalingRecord& record) override;
  std::optional<control::ScalingRecord> Scaling() override;

  // --- Test controls ---
  void SetHealth(control::ModuleHealth health, std::string message = "");
  void SetInstanceId(std::string id);
  void SetMetrics(std::vector<metrics::Sample> samples);
  // Adds `count` configured routes "model:m<i>" (i from 0), for pagination tests.
  void AddConfiguredModels(int count);
  // Called (on the caller's thread) by RequestShutdown.
  void OnShutdown(std::function<void(bool graceful, int timeout_seconds)> hook);

  // --- What was asked ---
  // One entry per call, e.g. "Status", "HealthCheck(deep=1)", "SetTrafficWeight(v2,10)".
  std::vector<std::string> Calls() const;
  // How many calls were made to `method` (the entry up to its "(").
  int CallCount(std::string_view method) const;
  std::optional<std::string> LastCall() const;
  struct ShutdownArgs {
    bool graceful = false;
    int timeout_seconds = 0;
  };
  std::optional<ShutdownArgs> shutdown_request() const;
  // The document last passed to UpdateConfig.
  std::string last_config_document() const;
  // The routes last passed to UpdateRoutes.
  std::vector<control::RouteInfo> last_route_update() const;

 private:
  void Record(std::string call) ABSL_LOCKS_EXCLUDED(mu_);
  control::StatusReport StatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  control::BlueGreenState BlueGreenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ChangeWeights(std::map<std::string, int> weights) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  ratelimit::RateLimiter rate_limiter_;

  mutable absl::Mutex mu_;
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::string instance_id_ ABSL_GUARDED_BY(mu_) = "ailb-test-1";
  control::ModuleHealth health_ ABSL_GUARDED_BY(mu_) = control::ModuleHealth::kHealthy;
  std::string health_message_ ABSL_GUARDED_BY(mu_) = "all deployments healthy";
  std::vector<metrics::Sample> metrics_ ABSL_GUARDED_BY(mu_);
  metrics::StatsWindow stats_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> weights_ ABSL_GUARDED_BY(mu_);
  std::vector<std::map<std::string, int>> weight_history_ ABSL_GUARDED_BY(mu_);
  std::string blue_ ABSL_GUARDED_BY(mu_);
  std::string green_ ABSL_GUARDED_BY(mu_);
  bool promoting_ ABSL_GUARDED_BY(mu_) = false;
  WallTime changed_at_ ABSL_GUARDED_BY(mu_);
  std::vector<control::RouteInfo> configured_routes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, control::RouteInfo> aliases_ ABSL_GUARDED_BY(mu_);
  std::vector<control::RouteInfo> last_route_update_ ABSL_GUARDED_BY(mu_);
  control::ConfigDocument config_ ABSL_GUARDED_BY(mu_);
  std::string last_config_document_ ABSL_GUARDED_BY(mu_);
  std::optional<control::ScalingRecord> scaling_ ABSL_GUARDED_BY(mu_);
  std::optional<ShutdownArgs> shutdown_ ABSL_GUARDED_BY(mu_);
  std::function<void(bool, int)> shutdown_hook_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::testing

#endif  // AILB_TESTS_FAKES_FAKE_MODULE_CORE_H_
