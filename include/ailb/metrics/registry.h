// Metrics that are measured, never made up: counters, gauges and fixed-bucket histograms whose
// percentiles are read from the buckets. One registry feeds /metrics (Prometheus text) and the
// control plane's GetMetrics/GetStats.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ailb::metrics {

// Label name/value pairs; order does not matter (they are sorted on registration).
using Labels = std::vector<std::pair<std::string, std::string>>;

// Thread-safe, lock-free.
class Counter {
 public:
  void Increment(double by = 1) {
    double current = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(current, current + by, std::memory_order_relaxed)) {
    }
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Thread-safe, lock-free.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double by) {
    double current = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(current, current + by, std::memory_order_relaxed)) {
    }
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A point-in-time copy of a histogram.
struct HistogramSnapshot {
  std::vector<double> upper_bounds;  // ascending; the last bucket (+Inf) is implicit
  std::vector<uint64_t> counts;      // per bucket (not cumulative); size = upper_bounds + 1
  uint64_t count = 0;
  double sum = 0;
  // The q-quantile (0..1) by linear interpolation inside the bucket that holds it, as
  // Prometheus's histogram_quantile does; 0 when empty. Values in the +Inf bucket report the
  // largest finite bound.
  double Quantile(double q) const;
  double Mean() const { return count ? sum / static_cast<double>(count) : 0; }
};

// Thread-safe, lock-free recording.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  HistogramSnapshot Snapshot() const;

 private:
  const std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Bucket bounds for latencies in seconds: 1 ms to 10 minutes.
std::vector<double> LatencyBucketsSeconds();
// Bucket bounds for sizes and token counts.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// One flattened value for the control plane: histograms appear as <name>_count, <name>_sum and
// <name>_p50/_p95/_p99.
struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

// The type a callback-read family is exposed as.
enum class MetricType { kCounter, kGauge };

// One series of a callback family: its labels and its current value.
using LabelledValue = std::pair<Labels, double>;

// Owns every metric. Getters return stable references (metrics are never removed), so callers
// may keep them. Thread-safe.
class Registry {
 public:
  Counter& GetCounter(std::string_view name, std::string_view help, Labels labels = {});
  Gauge& GetGauge(std::string_view name, std::string_view help, Labels labels = {});
  Histogram& GetHistogram(std::string_view name, std::string_view help, Labels labels,
                          const std::vector<double>& upper_bounds);
  // A gauge read when collected (process memory, open streams ...).
  void AddCallbackGauge(std::string_view name, std::string_view help, Labels labels,
                        std::function<double()> read);
  // A counter read when collected (a total kept elsewhere, such as process CPU seconds).
  void AddCallbackCounter(std::string_view name, std::string_view help, Labels labels,
                          std::function<double()> read);
  // A whole family whose labelled series are listed when collected (one per deployment ...).
  // `collect` runs under the registry's lock, so it must not call the registry. Label order
  // within a series does not matter; when two series have the same labels the last one wins.
  // A later call with the same name replaces `collect`; a name already used by another kind of
  // metric is left as it is.
  void AddCallbackFamily(std::string_view name, std::string_view help, MetricType type,
                         std::function<std::vector<LabelledValue>()> collect);

  // The Prometheus text exposition format (version 0.0.4).
  std::string RenderPrometheus() const;
  // Every value, flattened; `names` (if non-empty) keeps samples whose name or family matches.
  std::vector<Sample> Collect(const std::vector<std::string>& names = {}) const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram, kCallback, kCallbackFamily };
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> callback;
  };
  struct Family {
    std::string help;
    Kind kind = Kind::kGauge;
    std::map<std::string, Series> series;                 // keyed by rendered labels
    MetricType callback_type = MetricType::kGauge;        // kCallback, kCallbackFamily
    std::function<std::vector<LabelledValue>()> collect;  // kCallbackFamily
  };
  // The series of a callback family now, sorted by their rendered labels.
  static std::map<std::string, LabelledValue> CollectFamily(const Family& family);
  Series& GetSeries(std::string_view name, std::string_view help, Kind kind, Labels labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::metrics
