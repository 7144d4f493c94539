// The router: which deployments of a model group a request may use, and in what order, for each
// strategy; exclusion of cooling-down deployments; and the strategy registry.
#include "ailb/router/router.h"

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/clock.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/config/config.h"
#include "ailb/router/health.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::router {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

config::Deployment Dep(std::string id, std::string model, double weight = 1, int priority = 0) {
  config::Deployment d;
  d.id = std::move(id);
  d.model_name = std::move(model);
  d.provider = config::ProviderKind::kOpenAI;
  d.upstream_model = d.id;
  d.api_base = "http://" + d.id + ".test/v1";
  d.weight = weight;
  d.priority = priority;
  return d;
}

std::vector<std::string> Ids(const std::vector<const config::Deployment*>& plan) {
  std::vector<std::string> ids;
  for (const config::Deployment* d : plan) ids.push_back(d->id);
  return ids;
}

class RouterTest : public ::testing::Test {
 protected:
  config::Config MakeConfig(std::string strategy, std::vector<config::Deployment> deployments) {
    config::Config config;
    config.routing_strategy = std::move(strategy);
    config.deployments = std::move(deployments);
    return config;
  }
  std::vector<std::string> PlanIds(const config::Config& config, std::string_view model) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, model);
    EXPECT_TRUE(plan.ok()) << plan.status();
    return plan.ok() ? Ids(*plan) : std::vector<std::string>();
  }
  void Trip(const std::string& id) {
    for (int i = 0; i < 3; ++i) {
      health_.OnAttemptStart(id);
      health_.OnFailure(id, absl::UnavailableError("down"));
    }
    ASSERT_FALSE(health_.Admits(id));
  }

  ManualClock clock_;
  HealthTracker health_{clock_, HealthPolicy{}};
  SeededRandom random_{12345};
  Router router_{health_, random_};
};

TEST_F(RouterTest, UnknownModelIsNotFound) {
  const config::Config config = MakeConfig("weighted", {Dep("a", "gpt")});
  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "claude");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(plan.status()), "model_not_found");
  EXPECT_EQ(ErrorParamOf(plan.status()), "model");
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("'claude'"));
  EXPECT_EQ(ToHttpError(plan.status()).http_status, 404);
}

TEST_F(RouterTest, EmptyConfigIsNotFound) {
  const config::Config config = MakeConfig("weighted", {});
  EXPECT_EQ(router_.Plan(config, "gpt").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RouterTest, ModelNamesAreExactAndCaseSensitive) {
  const config::Config config = MakeConfig("weighted", {Dep("a", "gpt")});
  EXPECT_FALSE(router_.Plan(config, "GPT").ok());
  EXPECT_FALSE(router_.Plan(config, "gp").ok());
  EXPECT_FALSE(router_.Plan(config, "").ok());
}

TEST_F(RouterTest, PlanHoldsOnlyTheGroupAndPointsIntoTheConfig) {
  const config::Config config =
      MakeConfig("failover", {Dep("a1", "a"), Dep("b1", "b"), Dep("a2", "a"), Dep("b2", "b")});
  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "a");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Ids(*plan), ElementsAre("a1", "a2"));
  EXPECT_EQ((*plan)[0], &config.deployments[0]);
  EXPECT_EQ((*plan)[1], &config.deployments[2]);
}

TEST_F(RouterTest, SingleDeployment) {
  for (const char* strategy : {"round_robin", "weighted", "random", "failover", "least_busy"}) {
    const config::Config config = MakeConfig(strategy, {Dep("only", "gpt")});
    EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("only")) << strategy;
  }
}

TEST_F(RouterTest, EveryStrategyReturnsEachAdmittedDeploymentOnce) {
  for (const char* strategy : {"round_robin", "weighted", "random", "failover", "least_busy"}) {
    const config::Config config =
        MakeConfig(strategy, {Dep("a", "gpt", 1, 2), Dep("b", "gpt", 2, 1), Dep("c", "gpt", 3, 0),
                              Dep("d", "gpt", 0, 3)});
    for (int i = 0; i < 20; ++i) {
      EXPECT_THAT(PlanIds(config, "gpt"), UnorderedElementsAre("a", "b", "c", "d")) << strategy;
    }
  }
}

TEST_F(RouterTest, RoundRobinRotatesEvenly) {
  const config::Config config =
      MakeConfig("round_robin", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("c", "gpt")});
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("b", "c", "a"));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("c", "a", "b"));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b", "c"));
  std::map<std::string, int> first;
  for (int i = 0; i < 300; ++i) first[PlanIds(config, "gpt")[0]]++;
  EXPECT_EQ(first["a"], 100);
  EXPECT_EQ(first["b"], 100);
  EXPECT_EQ(first["c"], 100);
}

TEST_F(RouterTest, RoundRobinCountsPerModelGroup) {
  const config::Config config =
      MakeConfig("round_robin", {Dep("a1", "a"), Dep("a2", "a"), Dep("b1", "b"), Dep("b2", "b")});
  EXPECT_EQ(PlanIds(config, "a")[0], "a1");
  EXPECT_EQ(PlanIds(config, "b")[0], "b1");  // not advanced by group a
  EXPECT_EQ(PlanIds(config, "a")[0], "a2");
  EXPECT_EQ(PlanIds(config, "b")[0], "b2");
}

TEST_F(RouterTest, RoundRobinSkipsCoolingDeployments) {
  const config::Config config =
      MakeConfig("round_robin", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("c", "gpt")});
  Trip("b");
  std::map<std::string, int> first;
  for (int i = 0; i < 100; ++i) {
    const std::vector<std::string> ids = PlanIds(config, "gpt");
    EXPECT_THAT(ids, UnorderedElementsAre("a", "c"));
    if (!ids.empty()) first[ids[0]]++;
  }
  EXPECT_EQ(first["a"], 50);
  EXPECT_EQ(first["c"], 50);
}

TEST_F(RouterTest, WeightedFirstChoiceFollowsWeights) {
  for (uint64_t seed : {1u, 42u, 20240601u}) {
    SeededRandom random(seed);
    Router router(health_, random);
    const config::Config config = MakeConfig("weighted", {Dep("a", "gpt", 1), Dep("b", "gpt", 3)});
    constexpr int kPlans = 20000;
    int b_first = 0;
    for (int i = 0; i < kPlans; ++i) {
      absl::StatusOr<std::vector<const config::Deployment*>> plan = router.Plan(config, "gpt");
      ASSERT_TRUE(plan.ok());
      ASSERT_EQ(plan->size(), 2u);
      if ((*plan)[0]->id == "b") ++b_first;
    }
    EXPECT_NEAR(static_cast<double>(b_first) / kPlans, 0.75, 0.02) << "seed " << seed;
  }
}

TEST_F(RouterTest, WeightedThreeWayDistribution) {
  const config::Config config =
      MakeConfig("weighted", {Dep("a", "gpt", 1), Dep("b", "gpt", 2), Dep("c", "gpt", 5)});
  constexpr int kPlans = 20000;
  std::map<std::string, int> first;
  for (int i = 0; i < kPlans; ++i) first[PlanIds(config, "gpt")[0]]++;
  EXPECT_NEAR(first["a"] / double{kPlans}, 1.0 / 8, 0.02);
  EXPECT_NEAR(first["b"] / double{kPlans}, 2.0 / 8, 0.02);
  EXPECT_NEAR(first["c"] / double{kPlans}, 5.0 / 8, 0.02);
}

TEST_F(RouterTest, WeightZeroIsNeverFirstButStaysAsFallback) {
  const config::Config config =
      MakeConfig("weighted", {Dep("zero", "gpt", 0), Dep("a", "gpt", 1), Dep("b", "gpt", 0.001)});
  for (int i = 0; i < 5000; ++i) {
    const std::vector<std::string> ids = PlanIds(config, "gpt");
    ASSERT_EQ(ids.size(), 3u);
    EXPECT_NE(ids[0], "zero");
    EXPECT_EQ(ids[2], "zero");  // after every deployment with a positive weight
  }
}

TEST_F(RouterTest, WeightZeroIsUsedWhenItIsAllThereIs) {
  const config::Config config = MakeConfig("weighted", {Dep("zero", "gpt", 0), Dep("a", "gpt", 1)});
  Trip("a");
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("zero"));
}

TEST_F(RouterTest, UnknownStrategyNameFallsBackToWeighted) {
  const config::Config config =
      MakeConfig("something_else", {Dep("zero", "gpt", 0), Dep("a", "gpt", 1)});
  for (int i = 0; i < 200; ++i) EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "zero"));
}

TEST_F(RouterTest, RandomIsUniformOverFirstChoice) {
  const config::Config config = MakeConfig(
      "random", {Dep("a", "gpt", 100), Dep("b", "gpt", 1), Dep("c", "gpt", 1), Dep("d", "gpt", 1)});
  constexpr int kPlans = 20000;
  std::map<std::string, int> first;
  std::set<std::vector<std::string>> orders;
  for (int i = 0; i < kPlans; ++i) {
    const std::vector<std::string> ids = PlanIds(config, "gpt");
    first[ids[0]]++;
    orders.insert(ids);
  }
  for (const char* id : {"a", "b", "c", "d"}) {
    EXPECT_NEAR(first[id] / double{kPlans}, 0.25, 0.02) << id;  // weights are ignored
  }
  EXPECT_EQ(orders.size(), 24u);  // every permutation occurs
}

TEST_F(RouterTest, SameSeedSamePlans) {
  const config::Config config =
      MakeConfig("random", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("c", "gpt")});
  SeededRandom r1(7), r2(7);
  Router router1(health_, r1), router2(health_, r2);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(Ids(*router1.Plan(config, "gpt")), Ids(*router2.Plan(config, "gpt")));
  }
}

TEST_F(RouterTest, FailoverOrdersByPriority) {
  const config::Config config =
      MakeConfig("failover", {Dep("backup", "gpt", 1, 10), Dep("primary", "gpt", 1, 0),
                              Dep("secondary", "gpt", 1, 5), Dep("negative", "gpt", 1, -1)});
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("negative", "primary", "secondary", "backup"));
  }
}

TEST_F(RouterTest, FailoverKeepsConfigOrderForEqualPriorities) {
  const config::Config config =
      MakeConfig("failover", {Dep("x", "gpt", 1, 1), Dep("y", "gpt", 1, 0), Dep("z", "gpt", 1, 1)});
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("y", "x", "z"));
}

TEST_F(RouterTest, FailoverSkipsCoolingPrimary) {
  const config::Config config =
      MakeConfig("failover", {Dep("primary", "gpt", 1, 0), Dep("secondary", "gpt", 1, 1)});
  Trip("primary");
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("secondary"));
  clock_.Advance(milliseconds(5000));  // half-open: the primary gets its probe, first
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("primary", "secondary"));
}

TEST_F(RouterTest, LeastBusyPrefersFewestInFlight) {
  const config::Config config =
      MakeConfig("least_busy", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("c", "gpt")});
  for (int i = 0; i < 3; ++i) health_.OnAttemptStart("a");
  health_.OnAttemptStart("b");
  for (int i = 0; i < 20; ++i) EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("c", "b", "a"));
  health_.OnAttemptStart("c");
  health_.OnAttemptStart("c");
  for (int i = 0; i < 20; ++i) EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("b", "c", "a"));
  health_.OnSuccess("a", milliseconds(1));
  health_.OnSuccess("a", milliseconds(1));
  health_.OnSuccess("a", milliseconds(1));
  for (int i = 0; i < 20; ++i) EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b", "c"));
}

TEST_F(RouterTest, LeastBusyBreaksTiesRandomly) {
  const config::Config config =
      MakeConfig("least_busy", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("busy", "gpt")});
  health_.OnAttemptStart("busy");
  std::map<std::string, int> first;
  for (int i = 0; i < 2000; ++i) {
    const std::vector<std::string> ids = PlanIds(config, "gpt");
    ASSERT_EQ(ids.size(), 3u);
    EXPECT_EQ(ids[2], "busy");
    first[ids[0]]++;
  }
  EXPECT_NEAR(first["a"] / 2000.0, 0.5, 0.05);
  EXPECT_NEAR(first["b"] / 2000.0, 0.5, 0.05);
}

TEST_F(RouterTest, CoolingDeploymentsAreExcludedForEveryStrategy) {
  for (const char* strategy : {"round_robin", "weighted", "random", "failover", "least_busy"}) {
    ManualClock clock;
    HealthTracker health(clock, HealthPolicy{});
    SeededRandom random(3);
    Router router(health, random);
    for (int i = 0; i < 3; ++i) {
      health.OnAttemptStart("b");
      health.OnFailure("b", absl::UnavailableError("down"));
    }
    const config::Config config =
        MakeConfig(strategy, {Dep("a", "gpt"), Dep("b", "gpt", 100, -1), Dep("c", "gpt")});
    for (int i = 0; i < 50; ++i) {
      absl::StatusOr<std::vector<const config::Deployment*>> plan = router.Plan(config, "gpt");
      ASSERT_TRUE(plan.ok()) << strategy;
      EXPECT_THAT(Ids(*plan), UnorderedElementsAre("a", "c")) << strategy;
    }
  }
}

TEST_F(RouterTest, HalfOpenWithProbeInFlightIsExcluded) {
  const config::Config config = MakeConfig("failover", {Dep("a", "gpt"), Dep("b", "gpt", 1, 1)});
  Trip("a");
  clock_.Advance(milliseconds(5000));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b"));
  health_.OnAttemptStart("a");  // the probe
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("b"));
}

TEST_F(RouterTest, AllCoolingIsUnavailableWithRetryAfter) {
  const config::Config config =
      MakeConfig("weighted", {Dep("a", "gpt"), Dep("b", "gpt"), Dep("other", "x")});
  Trip("a");
  clock_.Advance(milliseconds(2000));
  Trip("b");  // cools down until 7000 ms; a until 5000 ms
  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "gpt");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorCodeOf(plan.status()), "no_deployment_available");
  EXPECT_EQ(RetryAfterOf(plan.status()), 3);  // the soonest: a, 3000 ms from now
  EXPECT_EQ(ToHttpError(plan.status()).http_status, 503);
  EXPECT_EQ(ToHttpError(plan.status()).retry_after_seconds, 3);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("'gpt'"));

  clock_.Advance(milliseconds(1));  // 2999 ms left: rounds up
  EXPECT_EQ(RetryAfterOf(router_.Plan(config, "gpt").status()), 3);
  clock_.Advance(milliseconds(2000));  // 999 ms left
  EXPECT_EQ(RetryAfterOf(router_.Plan(config, "gpt").status()), 1);
  clock_.Advance(milliseconds(999));  // a is half-open
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a"));
  // Another group is unaffected throughout.
  EXPECT_THAT(PlanIds(config, "x"), ElementsAre("other"));
}

TEST_F(RouterTest, AllProbesInFlightIsUnavailableWithMinimalRetryAfter) {
  const config::Config config = MakeConfig("weighted", {Dep("a", "gpt")});
  Trip("a");
  clock_.Advance(milliseconds(5000));
  health_.OnAttemptStart("a");
  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "gpt");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RetryAfterOf(plan.status()), 1);
}

TEST(CheckStrategyImplementedTest, KnownAndUnknown) {
  for (const char* name : {"round_robin", "weighted", "random", "failover", "least_busy"}) {
    EXPECT_TRUE(CheckStrategyImplemented(name).ok()) << name;
  }
  for (const char* name : {"", "latency", "Weighted", "round-robin", "least_busy "}) {
    const absl::Status status = CheckStrategyImplemented(name);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << name;
    EXPECT_THAT(std::string(status.message()), HasSubstr("least_busy")) << name;
  }
  EXPECT_THAT(std::string(CheckStrategyImplemented("latency").message()), HasSubstr("'latency'"));
}

TEST_F(RouterTest, RecoveringDeploymentGetsARampedShareOfFirstPlaces) {
  const config::Config config =
      MakeConfig("failover", {Dep("a", "gpt", 1, /*priority=*/0), Dep("b", "gpt", 1, 1)});
  Trip("a");
  clock_.Advance(std::chrono::seconds(6));
  health_.OnAttemptStart("a");
  health_.OnSuccess("a", std::chrono::microseconds(1000));  // the half-open probe succeeded
  int a_first = 0;
  constexpr int kPlans = 2000;
  for (int i = 0; i < kPlans; ++i) a_first += PlanIds(config, "gpt")[0] == "a";
  // Failover always puts a first when healthy; ramping from 10 %, it keeps first place ~10 %.
  EXPECT_GT(a_first, kPlans * 5 / 100);
  EXPECT_LT(a_first, kPlans * 16 / 100);
  // Demoted, not dropped: it is still in every plan as a fallback.
  EXPECT_EQ(PlanIds(config, "gpt").size(), 2u);
  clock_.Advance(std::chrono::seconds(31));
  a_first = 0;
  for (int i = 0; i < 100; ++i) a_first += PlanIds(config, "gpt")[0] == "a";
  EXPECT_EQ(a_first, 100);
}

TEST_F(RouterTest, StrategyArgumentAndGroupSettingOverrideTheGlobalStrategy) {
  config::Config config = MakeConfig("failover", {Dep("a", "gpt", 1, 0), Dep("b", "gpt", 1, 1)});
  auto firsts = [&](std::string_view strategy) {
    std::vector<std::string> out;
    for (int i = 0; i < 4; ++i) {
      absl::StatusOr<std::vector<const config::Deployment*>> plan =
          router_.Plan(config, "gpt", false, strategy);
      EXPECT_TRUE(plan.ok());
      out.push_back(plan.ok() ? (*plan)[0]->id : "");
    }
    return out;
  };
  EXPECT_EQ(firsts(""), (std::vector<std::string>{"a", "a", "a", "a"}));
  EXPECT_EQ(firsts("round_robin"), (std::vector<std::string>{"a", "b", "a", "b"}));
  config.model_groups["gpt"].routing_strategy = "round_robin";
  EXPECT_EQ(firsts(""), (std::vector<std::string>{"a", "b", "a", "b"}));
  EXPECT_EQ(firsts("failover"), (std::vector<std::string>{"a", "a", "a", "a"}));
}

}  // namespace
}  // namespace ailb::router
