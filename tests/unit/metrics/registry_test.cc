// Metrics registry (histogram quantiles, Prometheus text, Collect) and RequestMetrics.
#include "ailb/metrics/registry.h"

#include <chrono>
#include <string>
#include <vector>

#include "ailb/common/clock.h"
#include "ailb/metrics/request_metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::metrics {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Names(const std::vector<Sample>& samples) {
  std::vector<std::string> names;
  for (const Sample& s : samples) names.push_back(s.name);
  return names;
}

// The value of the only sample named `name` with `labels` (sorted); fails when absent.
double ValueOf(const std::vector<Sample>& samples, const std::string& name,
               const Labels& labels = {}) {
  int found = 0;
  double value = 0;
  for (const Sample& s : samples) {
    if (s.name == name && s.labels == labels) {
      ++found;
      value = s.value;
    }
  }
  EXPECT_EQ(found, 1) << name;
  return value;
}

TEST(HistogramTest, QuantilesInterpolateInsideTheBucket) {
  Histogram histogram({1, 2, 4});
  for (int i = 0; i < 100; ++i) histogram.Observe(1.5);
  HistogramSnapshot snapshot = histogram.Snapshot();
  EXPECT_EQ(snapshot.count, 100u);
  EXPECT_DOUBLE_EQ(snapshot.sum, 150);
  EXPECT_DOUBLE_EQ(snapshot.Mean(), 1.5);
  EXPECT_THAT(snapshot.counts, ElementsAre(0, 100, 0, 0));
  // All 100 in (1, 2]: the q-quantile is 1 + q.
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.5), 1.5);
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.95), 1.95);
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.99), 1.99);
}

TEST(HistogramTest, QuantilesAcrossBucketsAndOverflow) {
  Histogram histogram({1, 2, 4});
  for (int i = 0; i < 50; ++i) histogram.Observe(0.5);
  for (int i = 0; i < 40; ++i) histogram.Observe(2);  // on a bound: counts in le="2"
  for (int i = 0; i < 10; ++i) histogram.Observe(100);
  HistogramSnapshot snapshot = histogram.Snapshot();
  EXPECT_THAT(snapshot.counts, ElementsAre(50, 40, 0, 10));
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.25), 0.5);
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.5), 1.0);
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.7), 1.5);
  // The +Inf bucket reports the largest finite bound.
  EXPECT_DOUBLE_EQ(snapshot.Quantile(0.99), 4);
  EXPECT_DOUBLE_EQ(Histogram({1}).Snapshot().Quantile(0.5), 0);  // empty
}

TEST(RegistryTest, PrometheusTextHasHelpTypeAndCumulativeBuckets) {
  Registry registry;
  registry.GetCounter("requests_total", "All requests", {{"code", "200"}}).Increment(3);
  registry.GetGauge("temperature", "Current temperature").Set(21.5);
  Histogram& latency =
      registry.GetHistogram("latency_seconds", "Latency", {{"route", "chat"}}, {0.1, 0.5, 1});
  latency.Observe(0.05);
  latency.Observe(0.3);
  latency.Observe(0.3);
  latency.Observe(7);
  const std::string text = registry.RenderPrometheus();

  EXPECT_THAT(text, HasSubstr("# HELP requests_total All requests\n"
                              "# TYPE requests_total counter\n"
                              "requests_total{code=\"200\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("# HELP temperature Current temperature\n"
                              "# TYPE temperature gauge\n"
                              "temperature 21.5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE latency_seconds histogram\n"
                              "latency_seconds_bucket{route=\"chat\",le=\"0.1\"} 1\n"
                              "latency_seconds_bucket{route=\"chat\",le=\"0.5\"} 3\n"
                              "latency_seconds_bucket{route=\"chat\",le=\"1\"} 3\n"
                              "latency_seconds_bucket{route=\"chat\",le=\"+Inf\"} 4\n"
                              "latency_seconds_sum{route=\"chat\"} 7.65\n"
                              "latency_seconds_count{route=\"chat\"} 4\n"));
}

TEST(RegistryTest, LabelValuesAreEscapedAndLabelOrderDoesNotMatter) {
  Registry registry;
  Counter& c = registry.GetCounter("escaped_total", "h", {{"z", "1"}, {"a", "q\"b\\s\nn"}});
  c.Increment();
  // The same labels in another order are the same series.
  EXPECT_EQ(&registry.GetCounter("escaped_total", "h", {{"a", "q\"b\\s\nn"}, {"z", "1"}}), &c);
  const std::string text = registry.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("escaped_total{a=\"q\\\"b\\\\s\\nn\",z=\"1\"} 1\n"));
  // Escaping also applies to histogram bucket lines.
  registry.GetHistogram("h_seconds", "h", {{"path", "a\"b"}}, {1}).Observe(0.5);
  EXPECT_THAT(registry.RenderPrometheus(),
              HasSubstr("h_seconds_bucket{path=\"a\\\"b\",le=\"1\"} 1\n"));
}

TEST(RegistryTest, CollectFiltersByFamilyAndSampleName) {
  Registry registry;
  registry.GetCounter("c_total", "c").Increment(2);
  registry.GetGauge("g", "g").Set(-4);
  registry.AddCallbackGauge("cb", "callback", {}, [] { return 42.0; });
  Histogram& h = registry.GetHistogram("h", "h", {}, {1, 2, 4});
  for (int i = 0; i < 100; ++i) h.Observe(1.5);

  const std::vector<Sample> all = registry.Collect();
  EXPECT_DOUBLE_EQ(ValueOf(all, "c_total"), 2);
  EXPECT_DOUBLE_EQ(ValueOf(all, "g"), -4);
  EXPECT_DOUBLE_EQ(ValueOf(all, "cb"), 42);
  EXPECT_DOUBLE_EQ(ValueOf(all, "h_count"), 100);
  EXPECT_DOUBLE_EQ(ValueOf(all, "h_sum"), 150);
  EXPECT_DOUBLE_EQ(ValueOf(all, "h_p50"), 1.5);
  EXPECT_DOUBLE_EQ(ValueOf(all, "h_p95"), 1.95);
  EXPECT_DOUBLE_EQ(ValueOf(all, "h_p99"), 1.99);
  EXPECT_EQ(all.size(), 8u);

  EXPECT_THAT(Names(registry.Collect({"h"})),
              UnorderedElementsAre("h_count", "h_sum", "h_p50", "h_p95", "h_p99"));
  const std::vector<Sample> p50 = registry.Collect({"h_p50"});
  ASSERT_EQ(p50.size(), 1u);
  EXPECT_EQ(p50[0].name, "h_p50");
  EXPECT_DOUBLE_EQ(p50[0].value, 1.5);
  EXPECT_THAT(Names(registry.Collect({"g", "cb"})), UnorderedElementsAre("g", "cb"));
  EXPECT_TRUE(registry.Collect({"nothing"}).empty());
}

TEST(RegistryTest, CallbackFamilyRendersEverySeriesUnderOneHelpAndType) {
  Registry registry;
  double healthy = 0;
  registry.AddCallbackFamily("deployment_state", "State: 0 ok,\nhelp \\ escaped",
                             MetricType::kGauge, [&healthy] {
                               // Labels in any order; values read at collection time.
                               return std::vector<LabelledValue>{
                                   {{{"model_id", "b"}, {"api_base", "http://b"}}, 2},
                                   {{{"api_base", "http://a"}, {"model_id", "a"}}, healthy},
                                   {{{"model_id", "q\"b\\s\nn"}, {"api_base", ""}}, 1.5},
                               };
                             });
  healthy = 1;
  const std::string text = registry.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("# HELP deployment_state State: 0 ok,\\nhelp \\\\ escaped\n"
                              "# TYPE deployment_state gauge\n"
                              "deployment_state{api_base=\"\",model_id=\"q\\\"b\\\\s\\nn\"} 1.5\n"
                              "deployment_state{api_base=\"http://a\",model_id=\"a\"} 1\n"
                              "deployment_state{api_base=\"http://b\",model_id=\"b\"} 2\n"));
  // HELP and TYPE appear once.
  size_t type_lines = 0;
  for (size_t at = text.find("# TYPE deployment_state"); at != std::string::npos;
       at = text.find("# TYPE deployment_state", at + 1)) {
    ++type_lines;
  }
  EXPECT_EQ(type_lines, 1u);
  healthy = 0;
  EXPECT_THAT(registry.RenderPrometheus(),
              HasSubstr("deployment_state{api_base=\"http://a\",model_id=\"a\"} 0\n"));
}

TEST(RegistryTest, CallbackCountersAreTypedAsCounters) {
  Registry registry;
  registry.AddCallbackCounter("cpu_seconds_total", "CPU", {}, [] { return 12.5; });
  registry.AddCallbackGauge("open_streams", "Streams", {}, [] { return 3.0; });
  registry.AddCallbackFamily("cooled_down_total", "Cooldowns", MetricType::kCounter, [] {
    return std::vector<LabelledValue>{{{{"model_id", "a"}}, 4}, {{{"model_id", "b"}}, 0}};
  });
  const std::string text = registry.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("# HELP cpu_seconds_total CPU\n"
                              "# TYPE cpu_seconds_total counter\n"
                              "cpu_seconds_total 12.5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE open_streams gauge\nopen_streams 3\n"));
  EXPECT_THAT(text, HasSubstr("# HELP cooled_down_total Cooldowns\n"
                              "# TYPE cooled_down_total counter\n"
                              "cooled_down_total{model_id=\"a\"} 4\n"
                              "cooled_down_total{model_id=\"b\"} 0\n"));
}

TEST(RegistryTest, CallbackFamiliesAreCollectedWithSortedLabels) {
  Registry registry;
  int calls = 0;
  registry.AddCallbackFamily("cooled_down_total", "Cooldowns", MetricType::kCounter, [&calls] {
    ++calls;
    return std::vector<LabelledValue>{{{{"z", "1"}, {"model_id", "a"}}, 4},
                                      {{{"model_id", "b"}, {"z", "1"}}, 7}};
  });
  registry.AddCallbackFamily("state", "State", MetricType::kGauge,
                             [] { return std::vector<LabelledValue>{}; });
  registry.GetGauge("other", "Other").Set(1);

  const std::vector<Sample> all = registry.Collect();
  EXPECT_DOUBLE_EQ(ValueOf(all, "cooled_down_total", {{"model_id", "a"}, {"z", "1"}}), 4);
  EXPECT_DOUBLE_EQ(ValueOf(all, "cooled_down_total", {{"model_id", "b"}, {"z", "1"}}), 7);
  EXPECT_EQ(all.size(), 3u);  // the two series and the gauge (the empty family has none)
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(Names(registry.Collect({"cooled_down_total"})),
              ElementsAre("cooled_down_total", "cooled_down_total"));
  // A counter is also found under its name without _total (as client libraries name it).
  EXPECT_EQ(registry.Collect({"cooled_down"}).size(), 2u);
  EXPECT_EQ(registry.Collect({"other"}).size(), 1u);
  EXPECT_EQ(calls, 3);  // a family filtered out is not read
  EXPECT_TRUE(registry.Collect({"state"}).empty());
  EXPECT_TRUE(registry.Collect({"oth"}).empty());
  // An empty family still renders its HELP and TYPE (a valid, empty family).
  EXPECT_THAT(registry.RenderPrometheus(),
              ::testing::EndsWith("# HELP state State\n# TYPE state gauge\n"));
}

TEST(RegistryTest, CallbackFamilyDoesNotTakeANameInUse) {
  Registry registry;
  registry.GetCounter("requests_total", "Requests").Increment(2);
  registry.AddCallbackFamily("requests_total", "Replaced?", MetricType::kGauge, [] {
    return std::vector<LabelledValue>{{{{"a", "b"}}, 9}};
  });
  EXPECT_THAT(registry.RenderPrometheus(), HasSubstr("# HELP requests_total Requests\n"
                                                     "# TYPE requests_total counter\n"
                                                     "requests_total 2\n"));
  // Registering a family again replaces its collector.
  registry.AddCallbackFamily("f", "F", MetricType::kGauge, [] {
    return std::vector<LabelledValue>{{{}, 1}};
  });
  registry.AddCallbackFamily("f", "F2", MetricType::kGauge, [] {
    return std::vector<LabelledValue>{{{}, 2}};
  });
  EXPECT_THAT(registry.RenderPrometheus(), HasSubstr("# HELP f F2\n# TYPE f gauge\nf 2\n"));
}

class RequestMetricsTest : public ::testing::Test {
 protected:
  RequestRecord Record(int status, double seconds = 0.2) {
    RequestRecord r;
    r.model = "gpt";
    r.deployment = "gpt-east";
    r.provider = "openai";
    r.http_status = status;
    r.total_seconds = seconds;
    r.upstream_seconds = seconds / 2;
    r.bytes_received = 100;
    r.bytes_sent = 1000;
    return r;
  }
  void Serve(int status, double seconds = 0.2) {
    metrics_.RequestStarted();
    metrics_.RequestFinished(Record(status, seconds));
  }
  static Labels RouteLabels(const std::string& status) {
    return {{"deployment", "gpt-east"},
            {"model", "gpt"},
            {"provider", "openai"},
            {"status_code", status}};
  }

  ManualClock clock_;
  Registry registry_;
  RequestMetrics metrics_{registry_, clock_};
};

TEST_F(RequestMetricsTest, CountsRequestsByOutcome) {
  Serve(200);
  Serve(200);
  Serve(500);
  Serve(429);
  // The names LiteLLM registers find the counters it exposes with a _total suffix.
  const std::vector<Sample> samples = registry_.Collect(
      {"litellm_proxy_total_requests_metric", "litellm_proxy_failed_requests_metric"});
  EXPECT_DOUBLE_EQ(
      ValueOf(samples, "litellm_proxy_total_requests_metric_total", RouteLabels("200")), 2);
  EXPECT_DOUBLE_EQ(
      ValueOf(samples, "litellm_proxy_total_requests_metric_total", RouteLabels("500")), 1);
  EXPECT_DOUBLE_EQ(
      ValueOf(samples, "litellm_proxy_total_requests_metric_total", RouteLabels("429")), 1);
  EXPECT_DOUBLE_EQ(
      ValueOf(samples, "litellm_proxy_failed_requests_metric_total", RouteLabels("500")), 1);
  EXPECT_DOUBLE_EQ(
      ValueOf(samples, "litellm_proxy_failed_requests_metric_total", RouteLabels("429")), 1);
  // Successes are not failures.
  for (const Sample& s : samples) {
    if (s.name == "litellm_proxy_failed_requests_metric_total") {
      EXPECT_NE(s.labels, RouteLabels("200"));
    }
  }
  EXPECT_THAT(registry_.RenderPrometheus(),
              HasSubstr("litellm_proxy_total_requests_metric_total{deployment=\"gpt-east\","
                        "model=\"gpt\",provider=\"openai\",status_code=\"200\"} 2\n"));

  const StatsWindow stats = metrics_.Stats();
  EXPECT_EQ(stats.total_requests, 4);
  EXPECT_EQ(stats.successful_requests, 2);
  EXPECT_EQ(stats.failed_requests, 2);
  EXPECT_EQ(stats.bytes_received, 400);
  EXPECT_EQ(stats.bytes_sent, 4000);
}

TEST_F(RequestMetricsTest, StatsWindowPercentilesAndReset) {
  for (int i = 0; i < 100; ++i) Serve(200, 0.2);  // all in the (0.1, 0.25] s bucket
  StatsWindow stats = metrics_.Stats();
  EXPECT_EQ(stats.total_requests, 100);
  EXPECT_NEAR(stats.avg_latency_ms, 200, 1e-6);
  EXPECT_NEAR(stats.p50_latency_ms, 175, 1e-6);
  EXPECT_NEAR(stats.p95_latency_ms, 242.5, 1e-6);
  EXPECT_EQ(stats.since, clock_.WallNow());

  clock_.Advance(std::chrono::seconds(30));
  metrics_.ResetStats();
  stats = metrics_.Stats();
  EXPECT_EQ(stats.total_requests, 0);
  EXPECT_EQ(stats.successful_requests, 0);
  EXPECT_EQ(stats.bytes_sent, 0);
  EXPECT_EQ(stats.p50_latency_ms, 0);
  EXPECT_EQ(stats.avg_latency_ms, 0);
  EXPECT_EQ(stats.since, clock_.WallNow());
  // The Prometheus counters are cumulative and unaffected by the reset.
  EXPECT_DOUBLE_EQ(ValueOf(registry_.Collect({"litellm_proxy_total_requests_metric_total"}),
                           "litellm_proxy_total_requests_metric_total", RouteLabels("200")),
                   100);
  Serve(200, 3);  // (2.5, 5] s
  stats = metrics_.Stats();
  EXPECT_EQ(stats.total_requests, 1);
  EXPECT_NEAR(stats.avg_latency_ms, 3000, 1e-6);
}

TEST_F(RequestMetricsTest, RequestsPerMinuteForgetsOldRequests) {
  for (int i = 0; i < 5; ++i) Serve(200);
  EXPECT_EQ(metrics_.RequestsPerMinute(), 5);
  clock_.Advance(std::chrono::seconds(30));
  Serve(200);
  Serve(200);
  EXPECT_EQ(metrics_.RequestsPerMinute(), 7);
  EXPECT_DOUBLE_EQ(ValueOf(registry_.Collect({"ai_requests_per_minute"}), "ai_requests_per_minute"),
                   7);
  clock_.Advance(std::chrono::seconds(31));  // the first five are 61 s old
  EXPECT_EQ(metrics_.RequestsPerMinute(), 2);
  clock_.Advance(std::chrono::seconds(61));
  EXPECT_EQ(metrics_.RequestsPerMinute(), 0);
}

TEST_F(RequestMetricsTest, CountsSuccessfulFallbacksByRequestedAndServingGroup) {
  auto serve = [this](int status, int fallbacks, const std::string& served_group) {
    RequestRecord r = Record(status);
    r.fallbacks = fallbacks;
    r.served_group = served_group;
    metrics_.RequestStarted();
    metrics_.RequestFinished(r);
  };
  serve(200, 1, "gpt-backup");
  serve(200, 2, "gpt-backup");
  serve(200, 1, "gpt-other");
  serve(502, 1, "gpt-backup");  // the fallback failed too
  serve(200, 0, "gpt");         // served by the requested group
  serve(200, 0, "preferred");   // another group, but not by falling back (X-Preferred-Model)
  serve(200, 1, "gpt");         // fell back and came back to the requested group
  const std::vector<Sample> samples =
      registry_.Collect({"litellm_deployment_successful_fallbacks_total"});
  EXPECT_DOUBLE_EQ(ValueOf(samples, "litellm_deployment_successful_fallbacks_total",
                           {{"fallback_model", "gpt-backup"}, {"requested_model", "gpt"}}),
                   2);
  EXPECT_DOUBLE_EQ(ValueOf(samples, "litellm_deployment_successful_fallbacks_total",
                           {{"fallback_model", "gpt-other"}, {"requested_model", "gpt"}}),
                   1);
  EXPECT_EQ(samples.size(), 2u);
  EXPECT_THAT(registry_.RenderPrometheus(),
              HasSubstr("# TYPE litellm_deployment_successful_fallbacks_total counter\n"
                        "litellm_deployment_successful_fallbacks_total{fallback_model=\"gpt-"
                        "backup\",requested_model=\"gpt\"} 2\n"));
}

TEST_F(RequestMetricsTest, InFlightReturnsToZero) {
  metrics_.RequestStarted();
  metrics_.RequestStarted();
  metrics_.RequestStarted();
  EXPECT_EQ(metrics_.in_flight(), 3);
  EXPECT_DOUBLE_EQ(
      ValueOf(registry_.Collect({"ailb_requests_in_flight"}), "ailb_requests_in_flight"), 3);
  metrics_.RequestFinished(Record(200));
  metrics_.RequestFinished(Record(502));
  EXPECT_EQ(metrics_.in_flight(), 1);
  metrics_.RequestFinished(Record(200));
  EXPECT_EQ(metrics_.in_flight(), 0);
}

}  // namespace
}  // namespace ailb::metrics
