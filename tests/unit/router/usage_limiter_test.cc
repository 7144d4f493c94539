// Per-deployment rpm/tpm over a sliding 60 s window, and the router planning around deployments
// at their limit (429 with Retry-After when every deployment of the group is).
#include "ailb/router/usage_limiter.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/clock.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/config/config.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::router {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

config::Deployment Dep(std::string id, std::string model, int64_t rpm = 0, int64_t tpm = 0) {
  config::Deployment d;
  d.id = std::move(id);
  d.model_name = std::move(model);
  d.upstream_model = d.id;
  d.api_base = absl::StrCat("http://", d.id, ".test/v1");
  d.rpm = rpm;
  d.tpm = tpm;
  return d;
}

class UsageLimiterTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  UsageLimiter usage_{clock_};
};

TEST_F(UsageLimiterTest, NoLimitsAlwaysAdmitsButStillCounts) {
  const config::Deployment d = Dep("a", "gpt");
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(usage_.TryAcquire(d));
  usage_.RecordTokens("a", 1'000'000);
  EXPECT_TRUE(usage_.Admits(d));
  EXPECT_EQ(usage_.TimeUntilAdmitted(d), milliseconds(0));
  EXPECT_EQ(usage_.InWindow("a").requests, 1000);
  EXPECT_EQ(usage_.InWindow("a").tokens, 1'000'000);
}

TEST_F(UsageLimiterTest, RpmIsASlidingWindowOfSixtySeconds) {
  const config::Deployment d = Dep("a", "gpt", /*rpm=*/3);
  ASSERT_TRUE(usage_.TryAcquire(d));  // t = 0
  clock_.Advance(seconds(20));
  ASSERT_TRUE(usage_.TryAcquire(d));  // t = 20
  clock_.Advance(seconds(20));
  ASSERT_TRUE(usage_.TryAcquire(d));  // t = 40
  EXPECT_FALSE(usage_.Admits(d));
  EXPECT_FALSE(usage_.TryAcquire(d)) << "the fourth request within 60 s";
  EXPECT_EQ(usage_.InWindow("a").requests, 3) << "a refused request is not counted";
  // The request at t = 0 leaves the window at t = 60 (within one 100 ms slot).
  EXPECT_EQ(usage_.TimeUntilAdmitted(d), milliseconds(20'100));

  clock_.Advance(seconds(19));  // t = 59: still three in the last 60 s
  EXPECT_FALSE(usage_.TryAcquire(d));
  clock_.Advance(milliseconds(1'100));  // t = 60.1
  EXPECT_TRUE(usage_.Admits(d));
  EXPECT_EQ(usage_.InWindow("a").requests, 2);
  EXPECT_TRUE(usage_.TryAcquire(d));
  EXPECT_FALSE(usage_.TryAcquire(d));
}

TEST_F(UsageLimiterTest, NeverCountsARequestForLessThanTheWindow) {
  const config::Deployment d = Dep("a", "gpt", /*rpm=*/1);
  clock_.Advance(milliseconds(99));  // late in a 100 ms slot
  ASSERT_TRUE(usage_.TryAcquire(d));
  clock_.Advance(seconds(60));
  EXPECT_FALSE(usage_.Admits(d)) << "60 s after the request: its slot has not ended 60 s ago";
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(usage_.Admits(d)) << "its slot ended 60 s ago";
}

TEST_F(UsageLimiterTest, TpmCountsReportedTokens) {
  const config::Deployment d = Dep("a", "gpt", /*rpm=*/0, /*tpm=*/1000);
  ASSERT_TRUE(usage_.TryAcquire(d));
  usage_.RecordTokens("a", 600);
  EXPECT_TRUE(usage_.Admits(d));
  clock_.Advance(seconds(30));
  ASSERT_TRUE(usage_.TryAcquire(d));
  usage_.RecordTokens("a", 400);
  EXPECT_FALSE(usage_.Admits(d)) << "1000 tokens in the last 60 s";
  EXPECT_FALSE(usage_.TryAcquire(d));
  // The first 600 tokens age out at t = 60, leaving 400 < 1000.
  EXPECT_EQ(usage_.TimeUntilAdmitted(d), milliseconds(30'100));
  clock_.Advance(milliseconds(30'100));
  EXPECT_TRUE(usage_.TryAcquire(d));
  EXPECT_EQ(usage_.InWindow("a").tokens, 400);
  usage_.RecordTokens("a", 0);  // nothing reported: nothing counted
  usage_.RecordTokens("a", -5);
  EXPECT_EQ(usage_.InWindow("a").tokens, 400);
}

TEST_F(UsageLimiterTest, LimitsFollowTheDeploymentPassedIn) {
  // A reload may change a deployment's rpm: the usage already counted stays.
  ASSERT_TRUE(usage_.TryAcquire(Dep("a", "gpt")));
  ASSERT_TRUE(usage_.TryAcquire(Dep("a", "gpt")));
  EXPECT_FALSE(usage_.Admits(Dep("a", "gpt", /*rpm=*/2)));
  EXPECT_TRUE(usage_.Admits(Dep("a", "gpt", /*rpm=*/3)));
  EXPECT_TRUE(usage_.Admits(Dep("b", "gpt", /*rpm=*/1))) << "usage is per deployment id";
}

TEST_F(UsageLimiterTest, ConcurrentDispatchesNeverExceedRpm) {
  const config::Deployment d = Dep("a", "gpt", /*rpm=*/100);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (usage_.TryAcquire(d)) admitted++;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 100);
  EXPECT_EQ(usage_.InWindow("a").requests, 100);
}

// --- The router with a UsageLimiter ------------------------------------------------------------

class RouterUsageTest : public ::testing::Test {
 protected:
  config::Config MakeConfig(std::vector<config::Deployment> deployments) {
    config::Config config;
    config.routing_strategy = "failover";
    config.deployments = std::move(deployments);
    return config;
  }
  std::vector<std::string> PlanIds(const config::Config& config, std::string_view model) {
    absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, model);
    EXPECT_TRUE(plan.ok()) << plan.status();
    std::vector<std::string> ids;
    if (plan.ok()) {
      for (const config::Deployment* d : *plan) ids.push_back(d->id);
    }
    return ids;
  }

  ManualClock clock_;
  HealthTracker health_{clock_, HealthPolicy{}};
  SeededRandom random_{7};
  UsageLimiter usage_{clock_};
  Router router_{health_, random_, nullptr, &usage_};
};

TEST_F(RouterUsageTest, DeploymentAtItsRpmIsLeftOutOfThePlan) {
  const config::Config config = MakeConfig({Dep("a", "gpt", /*rpm=*/2), Dep("b", "gpt")});
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b"));
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[0]).ok());
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[0]).ok());
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("b")) << "a used its 2 requests per minute";
  clock_.Advance(seconds(61));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a", "b"));
}

TEST_F(RouterUsageTest, EveryDeploymentAtItsLimitIs429WithRetryAfter) {
  const config::Config config =
      MakeConfig({Dep("a", "gpt", /*rpm=*/1), Dep("b", "gpt", /*rpm=*/0, /*tpm=*/100)});
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[0]).ok());  // t = 0
  clock_.Advance(seconds(10));
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[1]).ok());
  router_.RecordTokens(config.deployments[1], 150);  // t = 10
  clock_.Advance(seconds(5));

  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "gpt");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  const HttpError error = ToHttpError(plan.status());
  EXPECT_EQ(error.http_status, 429);
  EXPECT_EQ(error.type, "rate_limit_error");
  EXPECT_EQ(error.code, "rate_limit_exceeded");
  EXPECT_THAT(error.message, HasSubstr("'gpt'"));
  // "a" frees first: its request leaves the window 45.1 s from now.
  EXPECT_EQ(error.retry_after_seconds, 46);
  // A deployment fault (its 429), so a request moves on to the group's fallbacks.
  EXPECT_TRUE(IsDeploymentFault(plan.status()));
}

TEST_F(RouterUsageTest, CoolingDownAndRateLimitedTogetherIs503) {
  const config::Config config = MakeConfig({Dep("a", "gpt", /*rpm=*/1), Dep("b", "gpt")});
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[0]).ok());
  for (int i = 0; i < 3; ++i) {
    health_.OnAttemptStart("b");
    health_.OnFailure("b", absl::UnavailableError("down"));
  }
  absl::StatusOr<std::vector<const config::Deployment*>> plan = router_.Plan(config, "gpt");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorCodeOf(plan.status()), "no_deployment_available");
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("1 cooling down after failures, 1 at their rpm/tpm limit"));
  EXPECT_EQ(RetryAfterOf(plan.status()), 5) << "b's 5 s cooldown ends before a's window";
}

TEST_F(RouterUsageTest, AcquireDispatchRefusesADeploymentThatReachedItsLimitSincePlanning) {
  const config::Config config = MakeConfig({Dep("a", "gpt", /*rpm=*/1)});
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a"));
  EXPECT_THAT(PlanIds(config, "gpt"), ElementsAre("a"));  // two requests planned on it
  ASSERT_TRUE(router_.AcquireDispatch(config.deployments[0]).ok());
  const absl::Status second = router_.AcquireDispatch(config.deployments[0]);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ToHttpError(second).http_status, 429);
  EXPECT_EQ(RetryAfterOf(second), 61);  // 60.1 s, rounded up
  EXPECT_EQ(usage_.InWindow("a").requests, 1);
}

TEST(RouterWithoutUsageLimiterTest, RpmIsNotEnforced) {
  ManualClock clock;
  HealthTracker health(clock, HealthPolicy{});
  SeededRandom random(1);
  Router router(health, random);
  config::Config config;
  config.deployments = {Dep("a", "gpt", /*rpm=*/1)};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(router.AcquireDispatch(config.deployments[0]).ok());
  EXPECT_TRUE(router.Plan(config, "gpt").ok());
}

}  // namespace
}  // namespace ailb::router
