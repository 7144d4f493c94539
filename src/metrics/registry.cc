#include "ailb/metrics/registry.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ailb::metrics {
namespace {

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// HELP text escapes only backslashes and line feeds.
std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RenderLabels(const Labels& labels, std::string_view extra_name = {},
                         std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : labels) {
    absl::StrAppend(&out, first ? "" : ",", name, "=\"", EscapeLabelValue(value), "\"");
    first = false;
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, first ? "" : ",", absl::string_view(extra_name.data(), extra_name.size()),
                    "=\"", absl::string_view(extra_value.data(), extra_value.size()), "\"");
  }
  out += "}";
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrFormat("%.9g", value);
}

void AtomicAdd(std::atomic<double>& target, double by) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + by, std::memory_order_relaxed)) {
  }
}

bool Contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// A counter family `x_total` is also found as `x`, the name a client library registers it under.
bool Matches(const std::vector<std::string>& names, const std::string& family, bool counter,
             const std::string& sample) {
  if (names.empty() || Contains(names, family) || Contains(names, sample)) return true;
  constexpr std::string_view kTotal = "_total";
  return counter && family.size() > kTotal.size() && family.ends_with(kTotal) &&
         Contains(names, std::string_view(family).substr(0, family.size() - kTotal.size()));
}

}  // namespace

double HistogramSnapshot::Quantile(double q) const {
  if (count == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(count);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const uint64_t before = cumulative;
    cumulative += counts[i];
    if (static_cast<double>(cumulative) >= rank && counts[i] > 0) {
      if (i >= upper_bounds.size()) return upper_bounds.empty() ? 0 : upper_bounds.back();
      const double lower = i == 0 ? 0 : upper_bounds[i - 1];
      const double upper = upper_bounds[i];
      const double within = (rank - static_cast<double>(before)) / static_cast<double>(counts[i]);
      return lower + (upper - lower) * std::clamp(within, 0.0, 1.0);
    }
  }
  return upper_bounds.empty() ? 0 : upper_bounds.back();
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double value) {
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  snapshot.counts.resize(upper_bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    snapshot.counts[i] = counts_[i].load(std::memory_order_relaxed);
    total += snapshot.counts[i];
  }
  // Buckets are read one by one while others record: derive the count from them so the
  // snapshot is self-consistent.
  snapshot.count = total;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> LatencyBucketsSeconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
          2.5,   5,      10,    20,   30,    60,   120, 300,  600};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

Registry::Series& Registry::GetSeries(std::string_view name, std::string_view help, Kind kind,
                                      Labels labels) {
  std::sort(labels.begin(), labels.end());
  auto family = families_.find(name);
  if (family == families_.end()) {
    Family created;
    created.help = std::string(help);
    created.kind = kind;
    family = families_.emplace(std::string(name), std::move(created)).first;
  }
  std::string key = RenderLabels(labels);
  auto series = family->second.series.find(key);
  if (series == family->second.series.end()) {
    series = family->second.series.emplace(key, Series{}).first;
    series->second.labels = std::move(labels);
  }
  return series->second;
}

Counter& Registry::GetCounter(std::string_view name, std::string_view help, Labels labels) {
  std::lock_guard lock(mu_);
  Series& series = GetSeries(name, help, Kind::kCounter, std::move(labels));
  if (!series.counter) series.counter = std::make_unique<Counter>();
  return *series.counter;
}

Gauge& Registry::GetGauge(std::string_view name, std::string_view help, Labels labels) {
  std::lock_guard lock(mu_);
  Series& series = GetSeries(name, help, Kind::kGauge, std::move(labels));
  if (!series.gauge) series.gauge = std::make_unique<Gauge>();
  return *series.gauge;
}

Histogram& Registry::GetHistogram(std::string_view name, std::string_view help, Labels labels,
                                  const std::vector<double>& upper_bounds) {
  std::lock_guard lock(mu_);
  Series& series = GetSeries(name, help, Kind::kHistogram, std::move(labels));
  if (!series.histogram) series.histogram = std::make_unique<Histogram>(upper_bounds);
  return *series.histogram;
}

void Registry::AddCallbackGauge(std::string_view name, std::string_view help, Labels labels,
                                std::function<double()> read) {
  std::lock_guard lock(mu_);
  GetSeries(name, help, Kind::kCallback, std::move(labels)).callback = std::move(read);
}

void Registry::AddCallbackCounter(std::string_view name, std::string_view help, Labels labels,
                                  std::function<double()> read) {
  std::lock_guard lock(mu_);
  GetSeries(name, help, Kind::kCallback, std::move(labels)).callback = std::move(read);
  Family& family = families_.find(name)->second;
  if (family.kind == Kind::kCallback) family.callback_type = MetricType::kCounter;
}

void Registry::AddCallbackFamily(std::string_view name, std::string_view help, MetricType type,
                                 std::function<std::vector<LabelledValue>()> collect) {
  std::lock_guard lock(mu_);
  auto family = families_.find(name);
  if (family == families_.end()) {
    Family created;
    created.kind = Kind::kCallbackFamily;
    family = families_.emplace(std::string(name), std::move(created)).first;
  }
  if (family->second.kind != Kind::kCallbackFamily) return;
  family->second.help = std::string(help);
  family->second.callback_type = type;
  family->second.collect = std::move(collect);
}

std::map<std::string, LabelledValue> Registry::CollectFamily(const Family& family) {
  std::map<std::string, LabelledValue> out;
  if (!family.collect) return out;
  for (LabelledValue& series : family.collect()) {
    std::sort(series.first.begin(), series.first.end());
    out.insert_or_assign(RenderLabels(series.first), std::move(series));
  }
  return out;
}

std::string Registry::RenderPrometheus() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    // callback_type is only ever set on callback families.
    const char* type = family.kind == Kind::kCounter || family.callback_type == MetricType::kCounter
                           ? "counter"
                       : family.kind == Kind::kHistogram ? "histogram"
                                                         : "gauge";
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family.help), "\n# TYPE ", name, " ",
                    type, "\n");
    if (family.kind == Kind::kCallbackFamily) {
      for (const auto& [key, series] : CollectFamily(family)) {
        absl::StrAppend(&out, name, key, " ", FormatValue(series.second), "\n");
      }
      continue;
    }
    for (const auto& [key, series] : family.series) {
      switch (family.kind) {
        case Kind::kCounter:
          absl::StrAppend(&out, name, key, " ", FormatValue(series.counter->value()), "\n");
          break;
        case Kind::kGauge:
          absl::StrAppend(&out, name, key, " ", FormatValue(series.gauge->value()), "\n");
          break;
        case Kind::kCallback:
          absl::StrAppend(&out, name, key, " ", FormatValue(series.callback()), "\n");
          break;
        case Kind::kCallbackFamily:
          break;
        case Kind::kHistogram: {
          HistogramSnapshot snapshot = series.histogram->Snapshot();
          uint64_t cumulative = 0;
          for (size_t i = 0; i < snapshot.counts.size(); ++i) {
            cumulative += snapshot.counts[i];
            const std::string le =
                i < snapshot.upper_bounds.size() ? FormatValue(snapshot.upper_bounds[i]) : "+Inf";
            absl::StrAppend(&out, name, "_bucket", RenderLabels(series.labels, "le", le), " ",
                            cumulative, "\n");
          }
          absl::StrAppend(&out, name, "_sum", key, " ", FormatValue(snapshot.sum), "\n", name,
                          "_count", key, " ", snapshot.count, "\n");
          break;
        }
      }
    }
  }
  return out;
}

std::vector<Sample> Registry::Collect(const std::vector<std::string>& names) const {
  std::lock_guard lock(mu_);
  std::vector<Sample> out;
  for (const auto& [name, family] : families_) {
    const bool counter =
        family.kind == Kind::kCounter || family.callback_type == MetricType::kCounter;
    if (family.kind == Kind::kCallbackFamily) {
      if (!Matches(names, name, counter, name)) continue;
      for (auto& [key, series] : CollectFamily(family)) {
        out.push_back({name, std::move(series.first), series.second});
      }
      continue;
    }
    for (const auto& [key, series] : family.series) {
      auto add = [&](const std::string& sample_name, double value) {
        if (Matches(names, name, counter, sample_name)) {
          out.push_back({sample_name, series.labels, value});
        }
      };
      switch (family.kind) {
        case Kind::kCounter:
          add(name, series.counter->value());
          break;
        case Kind::kGauge:
          add(name, series.gauge->value());
          break;
        case Kind::kCallback:
          add(name, series.callback());
          break;
        case Kind::kCallbackFamily:
          break;
        case Kind::kHistogram: {
          HistogramSnapshot snapshot = series.histogram->Snapshot();
          add(name + "_count", static_cast<double>(snapshot.count));
          add(name + "_sum", snapshot.sum);
          add(name + "_p50", snapshot.Quantile(0.50));
          add(name + "_p95", snapshot.Quantile(0.95));
          add(name + "_p99", snapshot.Quantile(0.99));
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace ailb::metrics
