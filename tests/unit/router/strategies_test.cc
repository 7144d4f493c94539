// Score-based routing strategies (latency_optimized, cost_optimized, usage_based, load_balanced)
// and blue/green traffic splitting on top of them.
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "ailb/common/clock.h"
#include "ailb/common/random.h"
#include "ailb/config/config.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "ailb/router/traffic_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::router {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;

config::Deployment Dep(std::string id, std::string version = "") {
  config::Deployment d;
  d.id = std::move(id);
  d.model_name = "gpt";
  d.provider = config::ProviderKind::kOpenAI;
  d.upstream_model = d.id;
  d.api_base = "http://" + d.id + ".test/v1";
  d.weight = 1;
  d.version = std::move(version);
  return d;
}

config::Config MakeConfig(std::string strategy, std::vector<config::Deployment> deployments) {
  config::Config config;
  config.routing_strategy = std::move(strategy);
  config.deployments = std::move(deployments);
  return config;
}

class StrategiesTest : public ::testing::Test {
 protected:
  std::vector<std::string> PlanIds(const config::Config& config, bool stream = false) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan =
        router_.Plan(config, "gpt", stream);
    EXPECT_TRUE(plan.ok()) << plan.status();
    std::vector<std::string> ids;
    if (plan.ok()) {
      for (const config::Deployment* d : *plan) ids.push_back(d->id);
    }
    return ids;
  }
  // How often each deployment is first over `n` plans.
  std::map<std::string, int> FirstCounts(const config::Config& config, int n, bool stream = false) {
    std::map<std::string, int> counts;
    for (int i = 0; i < n; ++i) counts[PlanIds(config, stream).at(0)]++;
    return counts;
  }
  void Succeed(const std::string& id, int latency_ms, std::optional<int> ttft_ms = std::nullopt) {
    health_.OnAttemptStart(id);
    std::optional<std::chrono::microseconds> ttft;
    if (ttft_ms) ttft = milliseconds(*ttft_ms);
    health_.OnSuccess(id, milliseconds(latency_ms), ttft);
  }

  ManualClock clock_;
  HealthTracker health_{clock_, HealthPolicy{}};
  SeededRandom random_{777};
  Router router_{health_, random_};
};

TEST_F(StrategiesTest, LatencyOptimizedTriesUnmeasuredDeploymentFirst) {
  const config::Config config = MakeConfig("latency_optimized", {Dep("a"), Dep("b"), Dep("c")});
  Succeed("a", 100);
  Succeed("c", 300);
  for (int i = 0; i < 50; ++i) {
    EXPECT_THAT(PlanIds(config), ElementsAre("b", "a", "c"));
  }
}

TEST_F(StrategiesTest, LatencyOptimizedPrefersFastestByRecentLatency) {
  const config::Config config = MakeConfig("latency_optimized", {Dep("a"), Dep("b"), Dep("c")});
  Succeed("a", 500);
  Succeed("b", 100);
  Succeed("c", 250);
  for (int i = 0; i < 50; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("b", "c", "a"));
  // Recent samples dominate: b slows down a lot, c becomes the fastest.
  for (int i = 0; i < 10; ++i) Succeed("b", 2000);
  EXPECT_THAT(PlanIds(config), ElementsAre("c", "a", "b"));
}

TEST_F(StrategiesTest, LatencyOptimizedSharesLoadWithinTenPercent) {
  const config::Config config = MakeConfig("latency_optimized", {Dep("a"), Dep("b"), Dep("c")});
  Succeed("a", 100);
  Succeed("b", 105);  // within 10 % of a
  Succeed("c", 115);  // outside
  const std::map<std::string, int> counts = FirstCounts(config, 2000);
  EXPECT_GT(counts.count("a") ? counts.at("a") : 0, 800);
  EXPECT_GT(counts.count("b") ? counts.at("b") : 0, 800);
  EXPECT_EQ(counts.count("c"), 0u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(PlanIds(config).back(), "c");
}

TEST_F(StrategiesTest, LatencyOptimizedUsesTimeToFirstByteForStreams) {
  const config::Config config = MakeConfig("latency_optimized", {Dep("a"), Dep("b")});
  // a: slow overall but fast first byte; b the reverse.
  Succeed("a", 1000, 50);
  Succeed("b", 300, 200);
  for (int i = 0; i < 20; ++i) {
    EXPECT_THAT(PlanIds(config, /*stream=*/false), ElementsAre("b", "a"));
    EXPECT_THAT(PlanIds(config, /*stream=*/true), ElementsAre("a", "b"));
  }
}

TEST_F(StrategiesTest, CostOptimizedOrdersByInputPlusOutputCost) {
  config::Deployment a = Dep("a");
  a.input_cost_per_token = 1e-6;
  a.output_cost_per_token = 9e-6;  // total 10e-6
  config::Deployment b = Dep("b");
  b.input_cost_per_token = 5e-6;
  b.output_cost_per_token = 1e-6;  // total 6e-6: cheapest, though its input is dearer than a's
  config::Deployment c = Dep("c");
  c.input_cost_per_token = 3e-6;
  c.output_cost_per_token = 5e-6;  // total 8e-6
  const config::Config config = MakeConfig("cost_optimized", {a, b, c});
  for (int i = 0; i < 50; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("b", "c", "a"));
}

TEST_F(StrategiesTest, UsageBasedPrefersLowerShareOfTpmAndResetsEachMinute) {
  config::Deployment a = Dep("a");
  a.tpm = 1000;
  config::Deployment b = Dep("b");
  b.tpm = 100'000;
  const config::Config config = MakeConfig("usage_based", {a, b});
  health_.RecordTokens("a", 500);    // 50 % of its budget
  health_.RecordTokens("b", 5'000);  // 5 %: more tokens, but a smaller share
  for (int i = 0; i < 30; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("b", "a"));
  health_.RecordTokens("b", 90'000);  // 95 %
  for (int i = 0; i < 30; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("a", "b"));

  // A new minute forgets the usage: both at 0, so both come first sometimes.
  clock_.Advance(std::chrono::seconds(60));
  EXPECT_EQ(health_.Snapshot("b").tokens_this_minute, 0);
  const std::map<std::string, int> counts = FirstCounts(config, 400);
  EXPECT_GT(counts.count("a") ? counts.at("a") : 0, 100);
  EXPECT_GT(counts.count("b") ? counts.at("b") : 0, 100);
  health_.RecordTokens("a", 10);
  for (int i = 0; i < 30; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("b", "a"));
}

TEST_F(StrategiesTest, UsageBasedWithoutTpmRanksByRawTokens) {
  const config::Config config = MakeConfig("usage_based", {Dep("a"), Dep("b"), Dep("c")});
  health_.RecordTokens("a", 300);
  health_.RecordTokens("b", 100);
  health_.RecordTokens("c", 200);
  for (int i = 0; i < 30; ++i) EXPECT_THAT(PlanIds(config), ElementsAre("b", "c", "a"));
}

TEST_F(StrategiesTest, LoadBalancedPrefersFewerInFlightAtEqualLatency) {
  const config::Config config = MakeConfig("load_balanced", {Dep("a"), Dep("b")});
  Succeed("a", 100);
  Succeed("b", 100);
  for (int i = 0; i < 3; ++i) health_.OnAttemptStart("a");
  const std::map<std::string, int> counts = FirstCounts(config, 1000);
  EXPECT_GE(counts.count("b") ? counts.at("b") : 0, 990);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(PlanIds(config).size(), 2u);

  // Once a's requests finish and b gets busier, the preference flips.
  for (int i = 0; i < 3; ++i) health_.OnSuccess("a", milliseconds(100));
  for (int i = 0; i < 3; ++i) health_.OnAttemptStart("b");
  const std::map<std::string, int> flipped = FirstCounts(config, 1000);
  EXPECT_GE(flipped.count("a") ? flipped.at("a") : 0, 990);
}

class BlueGreenTest : public StrategiesTest {
 protected:
  BlueGreenTest() { split_.SyncVersions({"v1", "v2"}); }

  TrafficSplit split_{clock_, ""};
  Router split_router_{health_, random_, &split_};
};

TEST_F(BlueGreenTest, FirstChoiceFollowsWeightsAndOtherVersionIsFallback) {
  const config::Config config =
      MakeConfig("round_robin", {Dep("blue-1", "v1"), Dep("blue-2", "v1"), Dep("green-1", "v2")});
  ASSERT_TRUE(split_.SetWeight("v2", 30).ok());
  constexpr int kPlans = 20000;
  int green_first = 0;
  for (int i = 0; i < kPlans; ++i) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = split_router_.Plan(config, "gpt");
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->size(), 3u);
    const std::string first_version = (*plan)[0]->version;
    if (first_version == "v2") {
      ++green_first;
      // The v1 deployments follow as fallback.
      EXPECT_EQ((*plan)[1]->version, "v1");
      EXPECT_EQ((*plan)[2]->version, "v1");
    } else {
      EXPECT_EQ((*plan)[1]->version, "v1");
      EXPECT_EQ((*plan)[2]->version, "v2");
    }
  }
  EXPECT_NEAR(static_cast<double>(green_first) / kPlans, 0.30, 0.02);
}

TEST_F(BlueGreenTest, AllTrafficToOneVersionAndUntaggedAlwaysInFirstGroup) {
  const config::Config config =
      MakeConfig("random", {Dep("blue", "v1"), Dep("shared"), Dep("green", "v2")});
  ASSERT_TRUE(split_.SetWeight("v2", 100).ok());
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = split_router_.Plan(config, "gpt");
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->size(), 3u);
    // First group: green and the untagged deployment (in either order); blue last.
    EXPECT_NE((*plan)[0]->id, "blue");
    EXPECT_NE((*plan)[1]->id, "blue");
    EXPECT_EQ((*plan)[2]->id, "blue");
  }
  ASSERT_TRUE(split_.Rollback("v1").ok());
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = split_router_.Plan(config, "gpt");
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ((*plan)[2]->id, "green");
  }
}

TEST_F(BlueGreenTest, SplitAtFiftyPercentWithUntaggedSharesFirstPlace) {
  const config::Config config =
      MakeConfig("weighted", {Dep("blue", "v1"), Dep("shared"), Dep("green", "v2")});
  ASSERT_TRUE(split_.SetWeight("v2", 50).ok());
  constexpr int kPlans = 20000;
  std::map<std::string, int> first_group_has;
  for (int i = 0; i < kPlans; ++i) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = split_router_.Plan(config, "gpt");
    ASSERT_TRUE(plan.ok()) << plan.status();
    // The tagged deployment in the first two places is the chosen version.
    for (int j = 0; j < 2; ++j) {
      if (!(*plan)[j]->version.empty()) first_group_has[(*plan)[j]->version]++;
    }
    EXPECT_TRUE((*plan)[0]->id == "shared" || (*plan)[1]->id == "shared");
  }
  EXPECT_NEAR(static_cast<double>(first_group_has["v2"]) / kPlans, 0.50, 0.02);
  EXPECT_EQ(first_group_has["v1"] + first_group_has["v2"], kPlans);
}

}  // namespace
}  // namespace ailb::router
