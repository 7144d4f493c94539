#include "ailb/metrics/request_metrics.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

namespace ailb::metrics {
namespace {

int64_t SecondOf(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.Now().time_since_epoch()).count();
}

}  // namespace

RequestMetrics::RequestMetrics(Registry& registry, const Clock& clock)
    : registry_(registry),
      clock_(clock),
      in_flight_(registry.GetGauge("ailb_requests_in_flight", "Chat requests being served now")),
      window_latency_(std::make_unique<Histogram>(LatencyBucketsSeconds())) {
  window_.since = clock_.WallNow();
  ring_second_ = SecondOf(clock_);
  registry_.AddCallbackGauge("ai_requests_per_minute",
                             "Chat requests finished in the last 60 seconds (autoscaling signal)",
                             {}, [this] { return RequestsPerMinute(); });
}

void RequestMetrics::RequestStarted() { in_flight_.Add(1); }

void RequestMetrics::RequestFinished(const RequestRecord& r) {
  in_flight_.Add(-1);
  const std::string status = std::to_string(r.http_status);
  const bool ok = r.http_status >= 200 && r.http_status < 400;
  const Labels by_route = {{"model", r.model},
                           {"deployment", r.deployment.empty() ? "none" : r.deployment},
                           {"provider", r.provider.empty() ? "none" : r.provider}};
  Labels with_status = by_route;
  with_status.emplace_back("status_code", status);
  registry_
      .GetCounter("litellm_proxy_total_requests_metric_total", "Chat requests served, by outcome",
                  with_status)
      .Increment();
  if (!ok) {
    registry_
        .GetCounter("litellm_proxy_failed_requests_metric_total", "Chat requests that failed",
                    with_status)
        .Increment();
  }
  registry_
      .GetHistogram("litellm_request_total_latency_metric",
                    "Whole request latency in seconds, as the client saw it", {{"model", r.model}},
                    LatencyBucketsSeconds())
      .Observe(r.total_seconds);
  if (!r.deployment.empty()) {
    registry_
        .GetHistogram("litellm_llm_api_latency_metric", "Time spent waiting on upstreams, seconds",
                      by_route, LatencyBucketsSeconds())
        .Observe(r.upstream_seconds);
    registry_
        .GetHistogram("litellm_overhead_latency_metric",
                      "ailb's own time (total minus upstream), seconds", {{"model", r.model}},
                      LatencyBucketsSeconds())
        .Observe(std::max(0.0, r.total_seconds - r.upstream_seconds));
  }
  if (r.ttft_seconds) {
    registry_
        .GetHistogram("litellm_llm_api_time_to_first_token_metric",
                      "Time to the first streamed byte sent to the client, seconds", by_route,
                      LatencyBucketsSeconds())
        .Observe(*r.ttft_seconds);
  }
  if (r.prompt_tokens > 0) {
    registry_
        .GetCounter("litellm_input_tokens_total", "Prompt tokens reported by upstreams", by_route)
        .Increment(static_cast<double>(r.prompt_tokens));
  }
  if (r.completion_tokens > 0) {
    registry_
        .GetCounter("litellm_output_tokens_total", "Completion tokens reported by upstreams",
                    by_route)
        .Increment(static_cast<double>(r.completion_tokens));
  }
  if (r.cost_usd > 0) {
    registry_.GetCounter("litellm_spend_metric_total", "Spend in USD by price table", by_route)
        .Increment(r.cost_usd);
  }
  if (r.attempts > 1) {
    registry_
        .GetCounter("ailb_retries_total", "Upstream attempts beyond the first, by requested model",
                    {{"model", r.model}})
        .Increment(static_cast<double>(r.attempts - 1));
  }
  if (r.fallbacks > 0) {
    registry_
        .GetCounter("ailb_fallbacks_total", "Moves to a fallback model group", {{"model", r.model}})
        .Increment(static_cast<double>(r.fallbacks));
  }
  if (ok && r.http_status < 300 && r.fallbacks > 0 && !r.served_group.empty() &&
      r.served_group != r.model) {
    registry_
        .GetCounter("litellm_deployment_successful_fallbacks_total",
                    "Requests a fallback model group served successfully",
                    {{"requested_model", r.model}, {"fallback_model", r.served_group}})
        .Increment();
  }
  if (r.hedges > 0) {
    registry_.GetCounter("ailb_hedges_total", "Hedged attempts started", {{"model", r.model}})
        .Increment(static_cast<double>(r.hedges));
  }
  registry_.GetCounter("ailb_request_bytes_total", "Request body bytes received")
      .Increment(static_cast<double>(r.bytes_received));
  registry_.GetCounter("ailb_response_bytes_total", "Response bytes sent")
      .Increment(static_cast<double>(r.bytes_sent));

  std::lock_guard lock(mu_);
  window_.total_requests++;
  (ok ? window_.successful_requests : window_.failed_requests)++;
  window_.bytes_received += r.bytes_received;
  window_.bytes_sent += r.bytes_sent;
  window_latency_->Observe(r.total_seconds);
  const int64_t now = SecondOf(clock_);
  AdvanceMinute(now);
  per_second_[static_cast<size_t>(now % 60)]++;
}

void RequestMetrics::RateLimited(const std::string& target) {
  registry_
      .GetCounter("ailb_rate_limited_requests_total", "Requests refused by a rate limit",
                  {{"target", target}})
      .Increment();
}

void RequestMetrics::AdvanceMinute(int64_t now_second) const {
  if (now_second - ring_second_ >= 60) {
    per_second_.fill(0);
  } else {
    for (int64_t s = ring_second_ + 1; s <= now_second; ++s) per_second_[s % 60] = 0;
  }
  ring_second_ = std::max(ring_second_, now_second);
}

double RequestMetrics::RequestsPerMinute() const {
  std::lock_guard lock(mu_);
  AdvanceMinute(SecondOf(clock_));
  int64_t total = 0;
  for (int64_t count : per_second_) total += count;
  return static_cast<double>(total);
}

StatsWindow RequestMetrics::Stats() const {
  std::lock_guard lock(mu_);
  StatsWindow stats = window_;
  HistogramSnapshot latency = window_latency_->Snapshot();
  stats.avg_latency_ms = latency.Mean() * 1000;
  stats.p50_latency_ms = latency.Quantile(0.50) * 1000;
  stats.p95_latency_ms = latency.Quantile(0.95) * 1000;
  stats.p99_latency_ms = latency.Quantile(0.99) * 1000;
  return stats;
}

void RequestMetrics::ResetStats() {
  std::lock_guard lock(mu_);
  window_ = StatsWindow();
  window_.since = clock_.WallNow();
  window_latency_ = std::make_unique<Histogram>(LatencyBucketsSeconds());
}

double ProcessStats::ResidentMemoryMiB() const {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0;
  long pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

double ProcessStats::CpuSecondsTotal() const {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  double utime = 0;
  double stime = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::strtod(field.c_str(), nullptr);
    if (i == 15) {
      stime = std::strtod(field.c_str(), nullptr);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ProcessStats::CpuPercent() {
  const double cpu = CpuSecondsTotal();
  const SteadyTime now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  const double elapsed = std::chrono::duration<double>(now - last_sample_).count();
  const double used = cpu - last_cpu_seconds_;
  last_cpu_seconds_ = cpu;
  last_sample_ = now;
  return elapsed > 0 ? 100.0 * used / elapsed : 0;
}

}  // namespace ailb::metrics
