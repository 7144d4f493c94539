// Token-bucket rate limits: windows, bursts, targets, admission errors and validation.
#include "ailb/ratelimit/rate_limiter.h"

#include <chrono>
#include <string>

#include "ailb/common/clock.h"
#include "ailb/common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::ratelimit {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

// SHA-256("abc").
constexpr char kAbcSha256[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

RateLimitSpec Spec(std::string target, int64_t rps, int64_t rpm = 0, int64_t burst = 0) {
  RateLimitSpec spec;
  spec.target = std::move(target);
  spec.requests_per_second = rps;
  spec.requests_per_minute = rpm;
  spec.burst_size = burst;
  return spec;
}

Requester Who(std::string model = "gpt", std::string ip = "10.0.0.1", std::string key = "") {
  Requester who;
  who.model = std::move(model);
  who.ip = std::move(ip);
  who.api_key = std::move(key);
  return who;
}

// How many requests `who` gets admitted in a row (up to `max`).
int AdmitRun(RateLimiter& limiter, const Requester& who, int max = 1000) {
  int admitted = 0;
  while (admitted < max && limiter.Admit(who).ok()) ++admitted;
  return admitted;
}

class RateLimiterTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  RateLimiter limiter_{clock_};
};

TEST_F(RateLimiterTest, PerSecondWithBurst) {
  ASSERT_TRUE(limiter_.Set(Spec("*", /*rps=*/2, 0, /*burst=*/5)).ok());
  EXPECT_EQ(AdmitRun(limiter_, Who()), 5);  // the burst
  absl::Status refused = limiter_.Admit(Who());
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfterOf(refused), 1);
  // 2 per second refill: half a second buys one request.
  clock_.Advance(milliseconds(500));
  EXPECT_EQ(AdmitRun(limiter_, Who()), 1);
  // A long pause refills only up to the burst.
  clock_.Advance(seconds(100));
  EXPECT_EQ(AdmitRun(limiter_, Who()), 5);
}

TEST_F(RateLimiterTest, PerSecondWithoutBurstAllowsTheRate) {
  ASSERT_TRUE(limiter_.Set(Spec("*", 3)).ok());
  EXPECT_EQ(AdmitRun(limiter_, Who()), 3);
  clock_.Advance(seconds(1));
  EXPECT_EQ(AdmitRun(limiter_, Who()), 3);
}

TEST_F(RateLimiterTest, PerMinuteRefillsAfterAdvancing) {
  ASSERT_TRUE(limiter_.Set(Spec("*", 0, /*rpm=*/30)).ok());
  EXPECT_EQ(AdmitRun(limiter_, Who()), 30);
  absl::Status refused = limiter_.Admit(Who());
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfterOf(refused), 2);  // one request per 2 s
  clock_.Advance(seconds(1));
  EXPECT_FALSE(limiter_.Admit(Who()).ok());
  clock_.Advance(seconds(1));
  EXPECT_EQ(AdmitRun(limiter_, Who()), 1);
  clock_.Advance(seconds(60));
  EXPECT_EQ(AdmitRun(limiter_, Who()), 30);
}

TEST_F(RateLimiterTest, FailedAdmitReportsTargetAndTakesNothingFromOtherLimits) {
  ASSERT_TRUE(limiter_.Set(Spec("*", 0, /*rpm=*/10)).ok());
  ASSERT_TRUE(limiter_.Set(Spec("model:x", 0, /*rpm=*/1)).ok());
  EXPECT_TRUE(limiter_.Admit(Who("x")).ok());  // takes from both
  for (int i = 0; i < 5; ++i) {
    std::string limited;
    absl::Status refused = limiter_.Admit(Who("x"), &limited);
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(limited, "model:x");
    EXPECT_EQ(ErrorCodeOf(refused), "rate_limit_exceeded");
    EXPECT_EQ(RetryAfterOf(refused), 60);
  }
  // The refusals took nothing from "*": 9 of its 10 remain for another model.
  EXPECT_EQ(AdmitRun(limiter_, Who("y")), 9);
  std::string limited;
  EXPECT_FALSE(limiter_.Admit(Who("y"), &limited).ok());
  EXPECT_EQ(limited, "*");
}

TEST_F(RateLimiterTest, ModelAndIpTargetsApplyOnlyToTheirRequests) {
  ASSERT_TRUE(limiter_.Set(Spec("model:x", 1)).ok());
  ASSERT_TRUE(limiter_.Set(Spec("ip:1.2.3.4", 2)).ok());
  EXPECT_EQ(AdmitRun(limiter_, Who("x", "9.9.9.9")), 1);
  EXPECT_EQ(AdmitRun(limiter_, Who("y", "9.9.9.9")), 1000);  // no limit applies
  EXPECT_EQ(AdmitRun(limiter_, Who("y", "1.2.3.4")), 2);
  // Prefixes must match exactly, not as prefixes.
  EXPECT_EQ(AdmitRun(limiter_, Who("xx", "1.2.3.40")), 1000);
}

TEST_F(RateLimiterTest, ApiKeyTargetsAreStoredHashed) {
  absl::StatusOr<std::string> plain_id = limiter_.Set(Spec("abc", 1));
  ASSERT_TRUE(plain_id.ok()) << plain_id.status();
  const std::string hashed = std::string("key:sha256:") + kAbcSha256;
  for (const RateLimitSpec& spec : limiter_.List()) {
    EXPECT_EQ(spec.target, hashed);
    EXPECT_THAT(spec.target, Not(HasSubstr(":abc")));
  }
  // Listing by the plain key, by key:<key> or by its hash finds it.
  EXPECT_EQ(limiter_.List("abc").size(), 1u);
  EXPECT_EQ(limiter_.List("key:abc").size(), 1u);
  EXPECT_EQ(limiter_.List(hashed).size(), 1u);
  EXPECT_EQ(limiter_.List("other").size(), 0u);

  EXPECT_EQ(AdmitRun(limiter_, Who("gpt", "1.1.1.1", "abc")), 1);
  EXPECT_EQ(AdmitRun(limiter_, Who("gpt", "1.1.1.1", "other-key")), 1000);
  EXPECT_EQ(AdmitRun(limiter_, Who("gpt", "1.1.1.1", "")), 1000);
}

TEST_F(RateLimiterTest, ApiKeyGivenAsHashLimitsThatKey) {
  const std::string hashed = std::string("key:sha256:") + kAbcSha256;
  ASSERT_TRUE(limiter_.Set(Spec(hashed, 2)).ok());
  ASSERT_EQ(limiter_.List().size(), 1u);
  EXPECT_EQ(limiter_.List()[0].target, hashed);
  EXPECT_EQ(AdmitRun(limiter_, Who("gpt", "1.1.1.1", "abc")), 2);
  std::string limited;
  EXPECT_FALSE(limiter_.Admit(Who("gpt", "1.1.1.1", "abc"), &limited).ok());
  EXPECT_EQ(limited, hashed);
}

TEST_F(RateLimiterTest, DisabledLimitsAreIgnored) {
  RateLimitSpec spec = Spec("*", 1);
  spec.enabled = false;
  ASSERT_TRUE(limiter_.Set(spec).ok());
  EXPECT_EQ(AdmitRun(limiter_, Who(), 50), 50);
  EXPECT_EQ(limiter_.List().size(), 1u);
}

TEST_F(RateLimiterTest, SetReplacesByIdAndRemoveUnknownIsNotFound) {
  absl::StatusOr<std::string> id = limiter_.Set(Spec("*", 1));
  ASSERT_TRUE(id.ok());
  EXPECT_FALSE(id->empty());
  RateLimitSpec replacement = Spec("*", 3);
  replacement.id = *id;
  ASSERT_EQ(limiter_.Set(replacement).value(), *id);
  ASSERT_EQ(limiter_.List().size(), 1u);
  EXPECT_EQ(limiter_.List()[0].requests_per_second, 3);
  EXPECT_EQ(AdmitRun(limiter_, Who()), 3);

  EXPECT_EQ(limiter_.Remove("no-such-limit").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(limiter_.List().size(), 1u);
  EXPECT_TRUE(limiter_.Remove(*id).ok());
  EXPECT_TRUE(limiter_.List().empty());
  EXPECT_EQ(AdmitRun(limiter_, Who(), 20), 20);
  EXPECT_EQ(limiter_.Remove(*id).code(), absl::StatusCode::kNotFound);
}

TEST_F(RateLimiterTest, InvalidSpecsAreRejected) {
  const RateLimitSpec invalid[] = {
      Spec("", 1),                // no target
      Spec("model:", 1),          // names no model
      Spec("ip:", 1),             // names no address
      Spec("key:", 1),            // names no key
      Spec("key:sha256:abc", 1),  // not 64 hex digits
      Spec(std::string("key:sha256:") + std::string(64, 'G'), 1),
      Spec("*", 0),         // no rate at all
      Spec("*", -1),        // negative
      Spec("*", 1, -5),     // negative minute rate
      Spec("*", 1, 0, -2),  // negative burst
  };
  for (const RateLimitSpec& spec : invalid) {
    absl::StatusOr<std::string> id = limiter_.Set(spec);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument)
        << "target '" << spec.target << "' rps " << spec.requests_per_second;
  }
  EXPECT_TRUE(limiter_.List().empty());
}

}  // namespace
}  // namespace ailb::ratelimit
