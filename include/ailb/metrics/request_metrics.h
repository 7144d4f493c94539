// What ailb measures about the requests it serves, under the metric names users already have
// dashboards for (LiteLLM's, as its Prometheus client exposes them: counters end in _total),
// plus a resettable window for the control plane's GetStats.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "ailb/common/clock.h"
#include "ailb/metrics/registry.h"

namespace ailb::metrics {

// One finished chat request.
struct RequestRecord {
  std::string model;       // the public model name requested
  std::string deployment;  // "" when it never reached one
  std::string provider;
  int http_status = 0;
  bool stream = false;
  int attempts = 0;
  int fallbacks = 0;         // model groups moved to after the requested one
  std::string served_group;  // the model group tried last (a fallback's when fallbacks > 0)
  int hedges = 0;            // hedged (second, parallel) attempts started
  double total_seconds = 0;
  double upstream_seconds = 0;         // time spent waiting on upstreams, all attempts
  std::optional<double> ttft_seconds;  // first byte to the client
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t bytes_received = 0;
  int64_t bytes_sent = 0;
  double cost_usd = 0;
};

// Totals since start or the last reset.
struct StatsWindow {
  int64_t total_requests = 0;
  int64_t successful_requests = 0;
  int64_t failed_requests = 0;
  int64_t bytes_received = 0;
  int64_t bytes_sent = 0;
  double avg_latency_ms = 0;
  double p50_latency_ms = 0;
  double p95_latency_ms = 0;
  double p99_latency_ms = 0;
  WallTime since;
};

// Thread-safe.
class RequestMetrics {
 public:
  RequestMetrics(Registry& registry, const Clock& clock);

  void RequestStarted();
  void RequestFinished(const RequestRecord& record);
  void RateLimited(const std::string& target);

  StatsWindow Stats() const;
  void ResetStats();
  // Requests finished in the last 60 seconds.
  double RequestsPerMinute() const;
  int64_t in_flight() const { return static_cast<int64_t>(in_flight_.value()); }

 private:
  void AdvanceMinute(int64_t now_second) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Registry& registry_;
  const Clock& clock_;
  Gauge& in_flight_;

  mutable std::mutex mu_;
  std::unique_ptr<Histogram> window_latency_ ABSL_GUARDED_BY(mu_);
  StatsWindow window_ ABSL_GUARDED_BY(mu_);
  // Finished requests per second over the last minute (a ring indexed by second).
  mutable std::array<int64_t, 60> per_second_ ABSL_GUARDED_BY(mu_) = {};
  mutable int64_t ring_second_ ABSL_GUARDED_BY(mu_) = 0;
};

// Resident memory of this process in MiB, and its CPU use in percent of one core since the
// previous call (from /proc). Thread-safe.
class ProcessStats {
 public:
  double ResidentMemoryMiB() const;
  double CpuPercent();
  double CpuSecondsTotal() const;

 private:
  std::mutex mu_;
  double last_cpu_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  SteadyTime last_sample_ ABSL_GUARDED_BY(mu_) = std::chrono::steady_clock::now();
};

}  // namespace ailb::metrics
