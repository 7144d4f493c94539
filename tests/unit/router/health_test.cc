// The passive health tracker: which failures count against a deployment, the circuit breaker's
// states and cooldowns (driven by a manual clock), Retry-After, and the counters it reports.
#include "ailb/router/health.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/clock.h"
#include "ailb/common/status.h"
#include "gtest/gtest.h"

namespace ailb::router {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

absl::Status Http(int status) {
  return WithHttpStatus(absl::Status(StatusCodeForHttp(status), "upstream said no"), status);
}

// --- IsDeploymentFault ------------------------------------------------------------------------

TEST(IsDeploymentFaultTest, CanonicalCodesWithoutHttpStatus) {
  EXPECT_FALSE(IsDeploymentFault(absl::OkStatus()));
  EXPECT_FALSE(IsDeploymentFault(absl::CancelledError("client left")));
  EXPECT_FALSE(IsDeploymentFault(absl::InvalidArgumentError("bad")));
  EXPECT_FALSE(IsDeploymentFault(absl::FailedPreconditionError("bad")));
  EXPECT_FALSE(IsDeploymentFault(absl::OutOfRangeError("bad")));
  EXPECT_TRUE(IsDeploymentFault(absl::UnavailableError("connection refused")));
  EXPECT_TRUE(IsDeploymentFault(absl::DeadlineExceededError("first byte timeout")));
  EXPECT_TRUE(IsDeploymentFault(absl::InternalError("x")));
  EXPECT_TRUE(IsDeploymentFault(absl::UnknownError("x")));
  EXPECT_TRUE(IsDeploymentFault(absl::ResourceExhaustedError("x")));
  EXPECT_TRUE(IsDeploymentFault(absl::UnauthenticatedError("x")));
  EXPECT_TRUE(IsDeploymentFault(absl::DataLossError("x")));
}

TEST(IsDeploymentFaultTest, HttpStatusTable) {
  struct Case {
    int http;
    bool fault;
  };
  const Case cases[] = {{400, false}, {401, true},  {403, true},  {404, true},  {405, false},
                        {408, true},  {409, false}, {413, false}, {415, false}, {422, false},
                        {429, true},  {500, true},  {501, true},  {502, true},  {503, true},
                        {504, true},  {529, true}};
  for (const Case& c : cases) {
    EXPECT_EQ(IsDeploymentFault(Http(c.http)), c.fault) << "HTTP " << c.http;
  }
}

TEST(IsDeploymentFaultTest, HttpStatusWinsOverCanonicalCode) {
  // A 400 is the client's fault even on a code that would otherwise count.
  EXPECT_FALSE(IsDeploymentFault(WithHttpStatus(absl::UnavailableError("x"), 400)));
  EXPECT_TRUE(IsDeploymentFault(WithHttpStatus(absl::InvalidArgumentError("x"), 503)));
  // Cancellation is never the deployment's fault.
  EXPECT_FALSE(IsDeploymentFault(WithHttpStatus(absl::CancelledError("x"), 500)));
}

TEST(IsDeploymentFaultTest, GatewayHelpers) {
  EXPECT_TRUE(IsDeploymentFault(BadGatewayError("malformed reply")));
  EXPECT_FALSE(IsDeploymentFault(PayloadTooLargeError("too big")));
  EXPECT_FALSE(IsDeploymentFault(InvalidFieldError("model", "bad")));
}

TEST(BreakerStateNameTest, Names) {
  EXPECT_EQ(BreakerStateName(BreakerState::kHealthy), "healthy");
  EXPECT_EQ(BreakerStateName(BreakerState::kCoolingDown), "cooling_down");
  EXPECT_EQ(BreakerStateName(BreakerState::kHalfOpen), "half_open");
}

// --- HealthTracker ----------------------------------------------------------------------------

class HealthTrackerTest : public ::testing::Test {
 protected:
  // One complete failed attempt.
  void Fail(const std::string& id, const absl::Status& status = absl::UnavailableError("down")) {
    health_.OnAttemptStart(id);
    health_.OnFailure(id, status);
  }
  void Succeed(const std::string& id, milliseconds latency = milliseconds(10)) {
    health_.OnAttemptStart(id);
    health_.OnSuccess(id, latency);
  }
  void Trip(const std::string& id) {
    for (int i = 0; i < 3; ++i) Fail(id);
    ASSERT_EQ(health_.Snapshot(id).state, BreakerState::kCoolingDown);
  }

  ManualClock clock_;
  HealthTracker health_{clock_, HealthPolicy{}};
};

TEST_F(HealthTrackerTest, UnknownDeploymentIsHealthy) {
  EXPECT_TRUE(health_.Admits("nobody"));
  EXPECT_EQ(health_.TimeUntilAdmitted("nobody"), milliseconds(0));
  const DeploymentHealth h = health_.Snapshot("nobody");
  EXPECT_EQ(h.state, BreakerState::kHealthy);
  EXPECT_EQ(h.total_requests, 0);
  EXPECT_EQ(h.in_flight, 0);
  EXPECT_FALSE(h.last_success.has_value());
  EXPECT_FALSE(h.last_failure.has_value());
}

TEST_F(HealthTrackerTest, TripsAfterThreeConsecutiveFaults) {
  Fail("a");
  Fail("a");
  EXPECT_TRUE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kHealthy);
  EXPECT_EQ(health_.Snapshot("a").consecutive_failures, 2);
  Fail("a");
  EXPECT_FALSE(health_.Admits("a"));
  const DeploymentHealth h = health_.Snapshot("a");
  EXPECT_EQ(h.state, BreakerState::kCoolingDown);
  EXPECT_EQ(h.consecutive_failures, 3);
  EXPECT_EQ(h.cooldown_remaining, milliseconds(5000));
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(5000));
}

TEST_F(HealthTrackerTest, DeploymentsAreIndependent) {
  Trip("a");
  EXPECT_TRUE(health_.Admits("b"));
  EXPECT_EQ(health_.Snapshot("b").state, BreakerState::kHealthy);
}

TEST_F(HealthTrackerTest, SuccessResetsTheConsecutiveCount) {
  Fail("a");
  Fail("a");
  Succeed("a");
  Fail("a");
  Fail("a");
  EXPECT_TRUE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").consecutive_failures, 2);
}

TEST_F(HealthTrackerTest, ClientErrorsNeverTrip) {
  for (int i = 0; i < 10; ++i) {
    Fail("a", WithHttpStatus(absl::InvalidArgumentError("bad request"), 400));
  }
  Fail("a", InvalidFieldError("messages", "bad"));
  Fail("a", absl::CancelledError("client left"));
  EXPECT_TRUE(health_.Admits("a"));
  const DeploymentHealth h = health_.Snapshot("a");
  EXPECT_EQ(h.state, BreakerState::kHealthy);
  EXPECT_EQ(h.consecutive_failures, 0);
  EXPECT_EQ(h.failed_requests, 0);
  EXPECT_EQ(h.total_requests, 12);
  EXPECT_EQ(h.in_flight, 0);
  EXPECT_TRUE(h.last_error.empty());
}

TEST_F(HealthTrackerTest, ClientErrorsDoNotResetTheConsecutiveCount) {
  Fail("a");
  Fail("a");
  Fail("a", WithHttpStatus(absl::InvalidArgumentError("bad request"), 400));
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kCoolingDown);
}

TEST_F(HealthTrackerTest, CooldownThenHalfOpenAdmitsExactlyOneProbe) {
  Trip("a");
  clock_.Advance(milliseconds(4999));
  EXPECT_FALSE(health_.Admits("a"));
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(1));
  EXPECT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(1));
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kHalfOpen);
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(0));
  EXPECT_TRUE(health_.Admits("a"));
  EXPECT_TRUE(health_.Admits("a"));  // asking is not taking
  health_.OnAttemptStart("a");       // the probe
  EXPECT_FALSE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").in_flight, 1);
  clock_.Advance(seconds(60));
  EXPECT_FALSE(health_.Admits("a"));  // still waiting on the probe
}

TEST_F(HealthTrackerTest, ProbeSuccessRestoresHealth) {
  Trip("a");
  clock_.Advance(milliseconds(5000));
  ASSERT_TRUE(health_.Admits("a"));
  health_.OnAttemptStart("a");
  health_.OnSuccess("a", milliseconds(20));
  EXPECT_TRUE(health_.Admits("a"));
  const DeploymentHealth h = health_.Snapshot("a");
  EXPECT_EQ(h.state, BreakerState::kHealthy);
  EXPECT_EQ(h.consecutive_failures, 0);
  EXPECT_EQ(h.in_flight, 0);
  // Health restored: concurrent requests flow again.
  health_.OnAttemptStart("a");
  EXPECT_TRUE(health_.Admits("a"));
  health_.OnSuccess("a", milliseconds(20));
  // The cooldown escalation was reset: the next trip is back to the base cooldown.
  Trip("a");
  EXPECT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(5000));
}

TEST_F(HealthTrackerTest, ProbeFailureCoolsDownLonger) {
  Trip("a");
  clock_.Advance(milliseconds(5000));
  ASSERT_TRUE(health_.Admits("a"));
  Fail("a");  // a single failed probe re-trips
  EXPECT_FALSE(health_.Admits("a"));
  DeploymentHealth h = health_.Snapshot("a");
  EXPECT_EQ(h.state, BreakerState::kCoolingDown);
  EXPECT_EQ(h.cooldown_remaining, milliseconds(10000));

  clock_.Advance(milliseconds(10000));
  ASSERT_TRUE(health_.Admits("a"));
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(20000));
  clock_.Advance(milliseconds(19999));
  EXPECT_FALSE(health_.Admits("a"));
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(health_.Admits("a"));
}

TEST_F(HealthTrackerTest, CooldownIsCappedAtMax) {
  HealthTracker health(clock_, HealthPolicy{.failures_to_trip = 1,
                                            .base_cooldown = milliseconds(1000),
                                            .max_cooldown = milliseconds(3000)});
  std::vector<int64_t> cooldowns;
  for (int i = 0; i < 6; ++i) {
    health.OnAttemptStart("a");
    health.OnFailure("a", absl::UnavailableError("down"));
    const milliseconds remaining = health.Snapshot("a").cooldown_remaining;
    cooldowns.push_back(remaining.count());
    clock_.Advance(remaining);
    ASSERT_TRUE(health.Admits("a"));
  }
  EXPECT_EQ(cooldowns, (std::vector<int64_t>{1000, 2000, 3000, 3000, 3000, 3000}));
}

TEST_F(HealthTrackerTest, ProbeNeutralOutcomeAllowsAnotherProbe) {
  Trip("a");
  clock_.Advance(milliseconds(5000));
  health_.OnAttemptStart("a");
  ASSERT_FALSE(health_.Admits("a"));
  health_.OnNeutral("a");  // the client left: no verdict
  EXPECT_TRUE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kHalfOpen);
}

TEST_F(HealthTrackerTest, RetryAfterTripsImmediatelyWithItsCooldown) {
  health_.OnAttemptStart("a");
  health_.OnFailure("a", WithRetryAfter(Http(429), 30));
  EXPECT_FALSE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kCoolingDown);
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(30000));
  clock_.Advance(seconds(29));
  EXPECT_FALSE(health_.Admits("a"));
  clock_.Advance(seconds(1));
  EXPECT_TRUE(health_.Admits("a"));
}

TEST_F(HealthTrackerTest, ShortRetryAfterKeepsThePolicyCooldown) {
  health_.OnAttemptStart("a");
  health_.OnFailure("a", WithRetryAfter(Http(429), 1));
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(5000));
}

TEST_F(HealthTrackerTest, RetryAfterIsCappedAtMax) {
  health_.OnAttemptStart("a");
  health_.OnFailure("a", WithRetryAfter(Http(503), 100000));
  EXPECT_EQ(health_.TimeUntilAdmitted("a"), milliseconds(300000));
}

TEST_F(HealthTrackerTest, CountersAndAverageLatency) {
  Succeed("a", milliseconds(100));
  Succeed("a", milliseconds(300));
  clock_.Advance(seconds(2));
  Fail("a", absl::DeadlineExceededError("first byte timeout"));
  const DeploymentHealth h = health_.Snapshot("a");
  EXPECT_EQ(h.total_requests, 3);
  EXPECT_EQ(h.successful_requests, 2);
  EXPECT_EQ(h.failed_requests, 1);
  EXPECT_EQ(h.consecutive_failures, 1);
  EXPECT_DOUBLE_EQ(h.avg_latency_ms, 200.0);  // failures do not count towards latency
  EXPECT_EQ(h.last_error, "first byte timeout");
  ASSERT_TRUE(h.last_success.has_value());
  ASSERT_TRUE(h.last_failure.has_value());
  EXPECT_EQ(*h.last_failure - *h.last_success, seconds(2));
  EXPECT_EQ(*h.last_failure, clock_.WallNow());
}

TEST_F(HealthTrackerTest, SubMillisecondLatencyIsAveragedPrecisely) {
  health_.OnAttemptStart("a");
  health_.OnSuccess("a", std::chrono::microseconds(500));
  health_.OnAttemptStart("a");
  health_.OnSuccess("a", std::chrono::microseconds(1500));
  EXPECT_DOUBLE_EQ(health_.Snapshot("a").avg_latency_ms, 1.0);
}

TEST_F(HealthTrackerTest, InFlightCounting) {
  health_.OnAttemptStart("a");
  health_.OnAttemptStart("a");
  health_.OnAttemptStart("a");
  EXPECT_EQ(health_.Snapshot("a").in_flight, 3);
  health_.OnSuccess("a", milliseconds(1));
  EXPECT_EQ(health_.Snapshot("a").in_flight, 2);
  health_.OnFailure("a", absl::UnavailableError("x"));
  EXPECT_EQ(health_.Snapshot("a").in_flight, 1);
  health_.OnNeutral("a");
  EXPECT_EQ(health_.Snapshot("a").in_flight, 0);
  health_.OnNeutral("a");  // never negative
  health_.OnFailure("a", WithHttpStatus(absl::InvalidArgumentError("x"), 400));
  EXPECT_EQ(health_.Snapshot("a").in_flight, 0);
}

TEST_F(HealthTrackerTest, CustomFailuresToTrip) {
  HealthTracker health(clock_, HealthPolicy{.failures_to_trip = 1});
  health.OnAttemptStart("a");
  health.OnFailure("a", Http(500));
  EXPECT_FALSE(health.Admits("a"));
}

TEST_F(HealthTrackerTest, StragglersOfOneBurstDoNotEscalateTheCooldown) {
  // Five requests are in flight when the deployment goes down. The third failure trips the
  // breaker; the fourth and fifth were sent before the trip and carry no new information.
  for (int i = 0; i < 5; ++i) health_.OnAttemptStart("a");
  for (int i = 0; i < 3; ++i) health_.OnFailure("a", absl::UnavailableError("reset"));
  ASSERT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(5000));
  health_.OnFailure("a", absl::UnavailableError("reset"));
  health_.OnFailure("a", absl::UnavailableError("reset"));
  // Regression: these used to re-trip the breaker, doubling the cooldown for each straggler
  // (5 s -> 20 s here; ten concurrent failures reached the 300 s cap).
  EXPECT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(5000));
  EXPECT_EQ(health_.Snapshot("a").failed_requests, 5);
  // And the escalation still applies to a failed probe after that cooldown.
  clock_.Advance(milliseconds(5000));
  ASSERT_TRUE(health_.Admits("a"));
  health_.OnAttemptStart("a");
  health_.OnFailure("a", absl::UnavailableError("still down"));
  EXPECT_EQ(health_.Snapshot("a").cooldown_remaining, milliseconds(10000));
}

TEST_F(HealthTrackerTest, CountsEveryEntryIntoCooldown) {
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 0);
  Fail("a");
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 0);  // not tripped yet
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 1);
  // Stragglers failing while it cools down do not open it again.
  Fail("a");
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 1);
  // A failed half-open probe is a second entry into cooldown.
  clock_.Advance(milliseconds(5000));
  ASSERT_EQ(health_.Snapshot("a").state, BreakerState::kHalfOpen);
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 1);  // half-open is not a new cooldown
  Fail("a");
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 2);
  // Recovery resets the escalation but not the count.
  clock_.Advance(milliseconds(10000));
  Succeed("a");
  ASSERT_EQ(health_.Snapshot("a").state, BreakerState::kHealthy);
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 2);
  health_.OnAttemptStart("a");
  health_.OnFailure("a", WithRetryAfter(Http(429), 1));  // Retry-After trips at once
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 3);
  // Failed active checks trip it too; other deployments keep their own count.
  clock_.Advance(seconds(5));
  for (int i = 0; i < 3; ++i) health_.OnHealthCheck("b", absl::UnavailableError("refused"));
  EXPECT_EQ(health_.Snapshot("b").cooldowns, 1);
  EXPECT_EQ(health_.Snapshot("a").cooldowns, 3);
  EXPECT_EQ(health_.Snapshot("nobody").cooldowns, 0);
}

// --- Failure rate, ramp-back, first-byte percentiles, active checks -------------------------

class HealthExtrasTest : public ::testing::Test {
 protected:
  void Fail(const std::string& id) {
    health_.OnAttemptStart(id);
    health_.OnFailure(id, absl::UnavailableError("down"));
  }
  void Succeed(const std::string& id) {
    health_.OnAttemptStart(id);
    health_.OnSuccess(id, std::chrono::microseconds(1000));
  }
  ManualClock clock_;
  HealthTracker health_{clock_, HealthPolicy{}};
};

TEST_F(HealthExtrasTest, FlappingDeploymentTripsOnFailureRate) {
  // Never three faults in a row, but half of all outcomes are faults.
  for (int i = 0; i < 4; ++i) {
    Fail("a");
    Succeed("a");
  }
  EXPECT_TRUE(health_.Admits("a"));  // 8 outcomes: under the 10-sample minimum
  Fail("a");
  EXPECT_TRUE(health_.Admits("a"));  // 9 outcomes
  Succeed("a");
  Fail("a");  // 11 outcomes, 6 faults
  EXPECT_FALSE(health_.Admits("a"));
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kCoolingDown);
}

TEST_F(HealthExtrasTest, OccasionalFaultsDoNotTrip) {
  for (int i = 0; i < 60; ++i) {
    if (i % 4 == 0) {
      Fail("a");
    } else {
      Succeed("a");
    }
  }
  EXPECT_TRUE(health_.Admits("a"));
  EXPECT_NEAR(health_.Snapshot("a").failure_rate, 0.25, 0.06);
}

TEST_F(HealthExtrasTest, TrafficRampsBackLinearlyAfterRecovery) {
  EXPECT_EQ(health_.TrafficShare("a"), 1.0);
  for (int i = 0; i < 3; ++i) Fail("a");
  clock_.Advance(seconds(6));  // past the 5 s cooldown: half-open
  ASSERT_TRUE(health_.Admits("a"));
  Succeed("a");  // the probe succeeded
  EXPECT_NEAR(health_.TrafficShare("a"), 0.1, 1e-9);
  EXPECT_NEAR(health_.Snapshot("a").traffic_share, 0.1, 1e-9);
  clock_.Advance(seconds(15));
  EXPECT_NEAR(health_.TrafficShare("a"), 0.55, 1e-6);
  clock_.Advance(seconds(15));
  EXPECT_EQ(health_.TrafficShare("a"), 1.0);
  // A new trip during the ramp ends it.
  for (int i = 0; i < 3; ++i) Fail("a");
  EXPECT_EQ(health_.TrafficShare("a"), 1.0);  // cooling down: admission decides, not the share
  EXPECT_FALSE(health_.Admits("a"));
}

TEST_F(HealthExtrasTest, FirstByteP95NeedsSamplesAndSpansTheGroup) {
  EXPECT_FALSE(health_.FirstByteP95({"a", "b"}).has_value());
  for (int i = 1; i <= 10; ++i) health_.RecordFirstByte("a", std::chrono::microseconds(i * 1000));
  EXPECT_FALSE(health_.FirstByteP95({"a", "b"}).has_value());  // 10 < 20 samples
  for (int i = 11; i <= 100; ++i) {
    health_.RecordFirstByte("b", std::chrono::microseconds(i * 1000));
  }
  // b keeps only its most recent 64 samples (37..100 ms) beside a's 1..10 ms.
  std::optional<milliseconds> p95 = health_.FirstByteP95({"a", "b"});
  ASSERT_TRUE(p95.has_value());
  EXPECT_GE(*p95, milliseconds(96));
  EXPECT_LE(*p95, milliseconds(98));
  EXPECT_EQ(health_.FirstByteP95({"a"}, /*min_samples=*/5), milliseconds(10));
}

TEST_F(HealthExtrasTest, ActiveChecksTripAndEndCooldownsEarly) {
  for (int i = 0; i < 3; ++i) health_.OnHealthCheck("a", absl::UnavailableError("refused"));
  EXPECT_FALSE(health_.Admits("a"));
  const DeploymentHealth tripped = health_.Snapshot("a");
  EXPECT_EQ(tripped.health_checks_failed, 3);
  EXPECT_EQ(tripped.total_requests, 0);  // checks are not requests
  EXPECT_EQ(tripped.in_flight, 0);
  health_.OnHealthCheck("a", absl::OkStatus());
  EXPECT_EQ(health_.Snapshot("a").state, BreakerState::kHalfOpen);
  EXPECT_TRUE(health_.Admits("a"));
  // A client-side problem (the probe cannot be built) says nothing about the deployment.
  health_.OnHealthCheck("b", absl::InvalidArgumentError("no probe for this provider"));
  EXPECT_EQ(health_.Snapshot("b").consecutive_failures, 0);
}

TEST(IsContextWindowErrorTest, RecognisesProviderWordings) {
  auto upstream400 = [](const char* message) {
    return WithHttpStatus(absl::InvalidArgumentError(message), 400);
  };
  EXPECT_TRUE(
      IsContextWindowError(WithErrorCode(upstream400("too long"), "context_length_exceeded")));
  EXPECT_TRUE(IsContextWindowError(
      upstream400("This model's maximum context length is 8192 tokens. However, you requested "
                  "9000 tokens")));
  EXPECT_TRUE(IsContextWindowError(upstream400("prompt is too long: 210000 tokens > 200000")));
  EXPECT_TRUE(IsContextWindowError(upstream400("input is too long for requested model")));
  EXPECT_FALSE(IsContextWindowError(upstream400("temperature must be <= 2")));
  // A deployment fault is never a context error, whatever it says.
  EXPECT_FALSE(IsContextWindowError(
      WithHttpStatus(absl::UnavailableError("context length service down"), 503)));
  EXPECT_FALSE(IsContextWindowError(absl::OkStatus()));
}

}  // namespace
}  // namespace ailb::router
