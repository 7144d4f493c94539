#include "ailb/router/health.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"

namespace ailb::router {

std::string_view BreakerStateName(BreakerState state) {
  switch (state) {
    case BreakerState::kHealthy:
      return "healthy";
    case BreakerState::kCoolingDown:
      return "cooling_down";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

bool IsDeploymentFault(const absl::Status& status) {
  if (status.ok() || status.code() == absl::StatusCode::kCancelled) return false;
  if (std::optional<int> http = HttpStatusOverride(status)) {
    const int code = *http;
    return code >= 500 || code == 408 || code == 429 || code == 401 || code == 403 || code == 404;
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return false;
    default:
      return true;
  }
}

bool IsContextWindowError(const absl::Status& status) {
  if (status.ok() || IsDeploymentFault(status)) return false;
  const std::string code = ErrorCodeOf(status);
  if (code == "context_length_exceeded" || code == "string_above_max_length") return true;
  const std::string message = absl::AsciiStrToLower(status.message());
  for (std::string_view phrase :
       {"context length", "context_length", "context window", "maximum context",
        "prompt is too long", "input is too long", "too many tokens", "prompt too long",
        "exceeds the model's maximum", "reduce the length of the messages"}) {
    if (absl::StrContains(message, ToAbsl(phrase))) return true;
  }
  return false;
}

void HealthTracker::Refresh(Entry& entry) const {
  if (entry.health.state == BreakerState::kCoolingDown && clock_.Now() >= entry.cooldown_until) {
    entry.health.state = BreakerState::kHalfOpen;
    entry.probe_in_flight = false;
  }
}

bool HealthTracker::Admits(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  if (it == entries_.end()) return true;
  Refresh(it->second);
  switch (it->second.health.state) {
    case BreakerState::kHealthy:
      return true;
    case BreakerState::kHalfOpen:
      return !it->second.probe_in_flight;
    case BreakerState::kCoolingDown:
      return false;
  }
  return false;
}

std::chrono::milliseconds HealthTracker::TimeUntilAdmitted(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  if (it == entries_.end()) return std::chrono::milliseconds(0);
  Refresh(it->second);
  if (it->second.health.state != BreakerState::kCoolingDown) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(it->second.cooldown_until -
                                                               clock_.Now());
}

void HealthTracker::OnAttemptStart(std::string_view id) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  Refresh(entry);
  entry.health.in_flight++;
  entry.health.total_requests++;
  if (entry.health.state == BreakerState::kHalfOpen) entry.probe_in_flight = true;
}

namespace {
constexpr double kRecentWeight = 0.3;  // weight of the newest sample in the moving averages

double Blend(double average, double sample) {
  return average == 0 ? sample : (1 - kRecentWeight) * average + kRecentWeight * sample;
}

int64_t MinuteOf(SteadyTime t) {
  return std::chrono::duration_cast<std::chrono::minutes>(t.time_since_epoch()).count();
}
}  // namespace

void HealthTracker::RecordTokens(std::string_view id, int64_t tokens) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  const int64_t minute = MinuteOf(clock_.Now());
  if (entry.minute != minute) {
    entry.minute = minute;
    entry.health.tokens_this_minute = 0;
  }
  entry.health.tokens_this_minute += tokens;
}

void HealthTracker::RecordOutcome(Entry& entry, bool fault) const {
  entry.outcomes = (entry.outcomes << 1) | (fault ? 1 : 0);
  const int window = std::clamp(policy_.failure_rate_window, 1, 64);
  entry.outcome_count = std::min(entry.outcome_count + 1, window);
  const uint64_t mask = window == 64 ? ~uint64_t{0} : (uint64_t{1} << window) - 1;
  const int faults = std::popcount(entry.outcomes & mask);
  entry.health.failure_rate = static_cast<double>(faults) / entry.outcome_count;
}

double HealthTracker::ShareOf(const Entry& entry) const {
  if (!entry.recovered_at || entry.health.state != BreakerState::kHealthy) return 1;
  const double elapsed = std::chrono::duration<double>(clock_.Now() - *entry.recovered_at).count();
  const double ramp = std::chrono::duration<double>(policy_.ramp_duration).count();
  if (ramp <= 0 || elapsed >= ramp) return 1;
  return policy_.ramp_initial_share + (1 - policy_.ramp_initial_share) * (elapsed / ramp);
}

double HealthTracker::TrafficShare(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  if (it == entries_.end()) return 1;
  Refresh(it->second);
  const double share = ShareOf(it->second);
  if (share >= 1) it->second.recovered_at.reset();
  return share;
}

void HealthTracker::RecordFirstByte(std::string_view id, std::chrono::microseconds elapsed) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  const float ms = static_cast<float>(elapsed.count()) / 1000.0f;
  if (entry.first_byte_ms.size() < kFirstByteSamples) {
    entry.first_byte_ms.push_back(ms);
  } else {
    entry.first_byte_ms[entry.first_byte_next] = ms;
  }
  entry.first_byte_next = (entry.first_byte_next + 1) % kFirstByteSamples;
}

std::optional<std::chrono::milliseconds> HealthTracker::FirstByteP95(
    const std::vector<std::string>& ids, size_t min_samples) const {
  std::vector<float> samples;
  {
    std::lock_guard lock(mu_);
    for (const std::string& id : ids) {
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;
      samples.insert(samples.end(), it->second.first_byte_ms.begin(),
                     it->second.first_byte_ms.end());
    }
  }
  if (samples.empty() || samples.size() < min_samples) return std::nullopt;
  const size_t rank = std::min(samples.size() - 1, (samples.size() * 95 + 99) / 100 - 1);
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(rank),
                   samples.end());
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(samples[rank])));
}

void HealthTracker::OnHealthCheck(std::string_view id, const absl::Status& status) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  Refresh(entry);
  if (!status.ok()) {
    if (!IsDeploymentFault(status)) return;
    entry.health.health_checks_failed++;
    RecordFault(entry, status);
    return;
  }
  if (entry.health.state == BreakerState::kCoolingDown) {
    entry.health.state = BreakerState::kHalfOpen;
    entry.probe_in_flight = false;
  }
}

void HealthTracker::OnSuccess(std::string_view id, std::chrono::microseconds latency,
                              std::optional<std::chrono::microseconds> ttft) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  entry.health.in_flight = std::max(0, entry.health.in_flight - 1);
  entry.health.successful_requests++;
  entry.health.consecutive_failures = 0;
  if (entry.health.state != BreakerState::kHealthy) entry.recovered_at = clock_.Now();
  entry.health.state = BreakerState::kHealthy;
  entry.probe_in_flight = false;
  entry.trips = 0;
  RecordOutcome(entry, /*fault=*/false);
  entry.latency_sum_ms += latency.count() / 1000.0;
  entry.health.avg_latency_ms = entry.latency_sum_ms / entry.health.successful_requests;
  entry.health.recent_latency_ms = Blend(entry.health.recent_latency_ms, latency.count() / 1000.0);
  if (ttft)
    entry.health.recent_ttft_ms = Blend(entry.health.recent_ttft_ms, ttft->count() / 1000.0);
  entry.health.last_success = clock_.WallNow();
}

void HealthTracker::OnFailure(std::string_view id, const absl::Status& status) {
  if (!IsDeploymentFault(status)) {
    OnNeutral(id);
    return;
  }
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  Refresh(entry);
  entry.health.in_flight = std::max(0, entry.health.in_flight - 1);
  entry.health.failed_requests++;
  RecordFault(entry, status);
}

void HealthTracker::RecordFault(Entry& entry, const absl::Status& status) {
  RecordOutcome(entry, /*fault=*/true);
  const bool already_open = entry.health.state == BreakerState::kCoolingDown;
  entry.health.consecutive_failures++;
  entry.health.last_error = std::string(status.message());
  entry.health.last_failure = clock_.WallNow();
  const std::optional<int> retry_after = RetryAfterOf(status);
  const bool half_open_probe_failed = entry.health.state == BreakerState::kHalfOpen;
  const bool rate_tripped = entry.outcome_count >= policy_.failure_rate_min_samples &&
                            entry.health.failure_rate >= policy_.failure_rate_to_trip;
  const bool tripped = entry.health.consecutive_failures >= policy_.failures_to_trip ||
                       rate_tripped || half_open_probe_failed || retry_after.has_value();
  entry.probe_in_flight = false;
  // Requests that were in flight when the breaker opened fail too; they must not extend the
  // cooldown, which only failed half-open probes escalate.
  if (!tripped || already_open) return;
  // Each consecutive trip doubles the cooldown, so a dead deployment is probed less and less.
  std::chrono::milliseconds cooldown = policy_.base_cooldown * (1 << std::min(entry.trips, 6));
  if (retry_after) cooldown = std::max(cooldown, std::chrono::milliseconds(*retry_after * 1000));
  cooldown = std::min(cooldown, policy_.max_cooldown);
  entry.trips++;
  entry.health.cooldowns++;
  entry.health.state = BreakerState::kCoolingDown;
  entry.cooldown_until = clock_.Now() + cooldown;
  entry.recovered_at.reset();
  // A fresh window after recovery: old faults must not re-trip it at once.
  entry.outcomes = 0;
  entry.outcome_count = 0;
}

void HealthTracker::OnNeutral(std::string_view id) {
  std::lock_guard lock(mu_);
  Entry& entry = entries_[std::string(id)];
  entry.health.in_flight = std::max(0, entry.health.in_flight - 1);
  entry.probe_in_flight = false;
}

DeploymentHealth HealthTracker::Snapshot(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ToAbsl(id));
  if (it == entries_.end()) return DeploymentHealth();
  Refresh(it->second);
  DeploymentHealth health = it->second.health;
  health.traffic_share = ShareOf(it->second);
  if (it->second.minute != MinuteOf(clock_.Now())) health.tokens_this_minute = 0;
  if (health.state == BreakerState::kCoolingDown) {
    health.cooldown_remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
        it->second.cooldown_until - clock_.Now());
  }
  return health;
}

}  // namespace ailb::router
