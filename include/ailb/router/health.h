// Passive health of each deployment: outcomes of real requests drive a circuit breaker, so one
// deployment's errors never take its model group down with it.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "ailb/common/clock.h"

namespace ailb::router {

enum class BreakerState { kHealthy, kCoolingDown, kHalfOpen };
std::string_view BreakerStateName(BreakerState state);  // "healthy", "cooling_down", "half_open"

struct HealthPolicy {
  int failures_to_trip = 3;  // consecutive deployment faults that open the breaker
  // The breaker also opens when at least this share of the last `failure_rate_window` outcomes
  // (once there are `failure_rate_min_samples`) were faults: flapping deployments trip too.
  double failure_rate_to_trip = 0.5;
  int failure_rate_window = 20;  // at most 64
  int failure_rate_min_samples = 10;
  std::chrono::milliseconds base_cooldown{5'000};
  std::chrono::milliseconds max_cooldown{300'000};
  // After a half-open probe succeeds, the deployment's share of traffic ramps linearly from
  // `ramp_initial_share` to all of it over `ramp_duration`, so a recovering upstream is not
  // flooded at once.
  std::chrono::milliseconds ramp_duration{30'000};
  double ramp_initial_share = 0.1;
};

struct DeploymentHealth {
  BreakerState state = BreakerState::kHealthy;
  int consecutive_failures = 0;
  int64_t total_requests = 0;
  int64_t successful_requests = 0;
  int64_t failed_requests = 0;
  int in_flight = 0;
  double avg_latency_ms = 0;     // mean over successful requests
  double recent_latency_ms = 0;  // exponentially weighted (recent requests count most)
  double recent_ttft_ms = 0;     // the same for time to first byte of streams; 0 = no sample
  int64_t tokens_this_minute = 0;
  double failure_rate = 0;           // share of faults among the recent outcomes
  double traffic_share = 1;          // below 1 while ramping back after recovery
  int64_t health_checks_failed = 0;  // active checks
  int64_t cooldowns = 0;             // times the breaker opened (entered cooldown), ever
  std::string last_error;
  std::optional<WallTime> last_success;
  std::optional<WallTime> last_failure;
  std::chrono::milliseconds cooldown_remaining{0};
};

// True when `status` is the deployment's fault (connect failures, timeouts, 408, 429, 5xx,
// malformed replies, and 401/403/404 from the upstream, which mean a misconfigured deployment).
// A client's bad request (other 4xx) is not: it would fail anywhere.
bool IsDeploymentFault(const absl::Status& status);

// True when an upstream refused the request because the prompt exceeds the model's context
// window (OpenAI's context_length_exceeded, Anthropic's "prompt is too long", and the wordings of
// compatible servers). Not a deployment fault: a model with a longer context may take it.
bool IsContextWindowError(const absl::Status& status);

// Thread-safe.
class HealthTracker {
 public:
  HealthTracker(const Clock& clock, HealthPolicy policy) : clock_(clock), policy_(policy) {}

  // Whether a new request may go to `id` now. A half-open deployment admits one probe at a time.
  bool Admits(std::string_view id) const;
  // Time until `id` admits requests again (zero when it does now).
  std::chrono::milliseconds TimeUntilAdmitted(std::string_view id) const;

  void OnAttemptStart(std::string_view id);
  // `ttft`: time to the first streamed byte, for streams.
  void OnSuccess(std::string_view id, std::chrono::microseconds latency,
                 std::optional<std::chrono::microseconds> ttft = std::nullopt);
  // Tokens a deployment served (prompt + completion), for usage-based routing.
  void RecordTokens(std::string_view id, int64_t tokens);
  // Counts against the breaker only when IsDeploymentFault(status). `retry_after` (from the
  // upstream) sets the cooldown when longer than the policy's.
  void OnFailure(std::string_view id, const absl::Status& status);
  // The attempt ended without a verdict on the deployment (the client left, a client error).
  void OnNeutral(std::string_view id);
  // Time from sending a request to its first response byte, for the p95 that hedging uses.
  void RecordFirstByte(std::string_view id, std::chrono::microseconds elapsed);
  // The 95th percentile of recent first-byte times over the deployments `ids`, or nullopt with
  // fewer than `min_samples` samples.
  std::optional<std::chrono::milliseconds> FirstByteP95(const std::vector<std::string>& ids,
                                                        size_t min_samples = 20) const;
  // The share of its usual traffic `id` should get now: 1, or less while ramping back.
  double TrafficShare(std::string_view id) const;
  // An active health check's result: a fault counts like a failed request (without touching
  // request counters); a success ends a cooldown early (a real request still probes).
  void OnHealthCheck(std::string_view id, const absl::Status& status);

  DeploymentHealth Snapshot(std::string_view id) const;

 private:
  static constexpr size_t kFirstByteSamples = 64;
  struct Entry {
    DeploymentHealth health;
    SteadyTime cooldown_until;
    int trips = 0;
    bool probe_in_flight = false;
    double latency_sum_ms = 0;
    int64_t minute = 0;  // the minute tokens_this_minute counts
    // Recent outcomes as bits (1 = fault), newest in bit 0.
    uint64_t outcomes = 0;
    int outcome_count = 0;
    std::optional<SteadyTime> recovered_at;  // set while ramping back
    std::vector<float> first_byte_ms;        // ring of recent samples
    size_t first_byte_next = 0;
  };
  // Moves a deployment whose cooldown has passed to half-open.
  void Refresh(Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordOutcome(Entry& entry, bool fault) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a deployment fault and opens the breaker when the policy says so.
  void RecordFault(Entry& entry, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double ShareOf(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const HealthPolicy policy_;
  mutable std::mutex mu_;
  mutable absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
