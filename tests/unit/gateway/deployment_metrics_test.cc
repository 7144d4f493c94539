// Per-deployment breaker metrics: litellm_deployment_state, the cooldown countdown and the
// cooldown count, read from a real HealthTracker driven by a manual clock.
#include "ailb/gateway/deployment_metrics.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::gateway {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

config::Deployment Dep(const std::string& id, const std::string& model, const std::string& api_base,
                       config::ProviderKind provider) {
  config::Deployment d;
  d.id = id;
  d.model_name = model;
  d.upstream_model = model;
  d.api_base = api_base;
  d.provider = provider;
  return d;
}

class DeploymentMetricsTest : public ::testing::Test {
 protected:
  DeploymentMetricsTest() {
    auto config = std::make_shared<config::Config>();
    config->deployments = {
        Dep("east", "gpt", "http://east/v1", config::ProviderKind::kOpenAI),
        Dep("west", "gpt", "http://west/v1", config::ProviderKind::kOpenAI),
        Dep("local", "llama", "http://ollama:11434", config::ProviderKind::kOllama)};
    store_.Publish(config);
    RegisterDeploymentMetrics(registry_, store_, health_);
  }

  void Fail(const std::string& id) {
    health_.OnAttemptStart(id);
    health_.OnFailure(id, absl::UnavailableError("down"));
  }
  void Succeed(const std::string& id) {
    health_.OnAttemptStart(id);
    health_.OnSuccess(id, std::chrono::microseconds(1000));
  }
  static metrics::Labels LabelsOf(const std::string& model, const std::string& id,
                                  const std::string& api_base, const std::string& provider) {
    return {{"api_base", api_base},
            {"api_provider", provider},
            {"litellm_model_name", model},
            {"model_id", id}};
  }
  // The value of `name` for deployment `id` (of the configuration above); fails when absent.
  double Value(const std::string& name, const std::string& id) {
    const metrics::Labels labels =
        id == "east"   ? LabelsOf("gpt", "east", "http://east/v1", "openai")
        : id == "west" ? LabelsOf("gpt", "west", "http://west/v1", "openai")
                       : LabelsOf("llama", "local", "http://ollama:11434", "ollama");
    int found = 0;
    double value = -1;
    for (const metrics::Sample& s : registry_.Collect({name})) {
      if (s.name == name && s.labels == labels) {
        ++found;
        value = s.value;
      }
    }
    EXPECT_EQ(found, 1) << name << " " << id;
    return value;
  }

  ManualClock clock_;
  router::HealthTracker health_{clock_, router::HealthPolicy{}};
  config::ConfigStore store_{std::make_shared<config::Config>()};
  metrics::Registry registry_;
};

TEST_F(DeploymentMetricsTest, EveryDeploymentStartsHealthy) {
  for (const std::string id : {"east", "west", "local"}) {
    EXPECT_EQ(Value("litellm_deployment_state", id), 0) << id;
    EXPECT_EQ(Value("ailb_deployment_cooldown_remaining_seconds", id), 0) << id;
    EXPECT_EQ(Value("litellm_deployment_cooled_down_total", id), 0) << id;
  }
  EXPECT_EQ(registry_.Collect({"litellm_deployment_state"}).size(), 3u);
  const std::string text = registry_.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("# TYPE litellm_deployment_state gauge\n"
                              "litellm_deployment_state{api_base=\"http://east/v1\","
                              "api_provider=\"openai\",litellm_model_name=\"gpt\","
                              "model_id=\"east\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE litellm_deployment_cooled_down_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE ailb_deployment_cooldown_remaining_seconds gauge\n"));
}

TEST_F(DeploymentMetricsTest, StateFollowsTheBreakerThroughAnOutageAndRecovery) {
  for (int i = 0; i < 3; ++i) Fail("east");
  // Complete outage for east only.
  EXPECT_EQ(Value("litellm_deployment_state", "east"), 2);
  EXPECT_EQ(Value("ailb_deployment_cooldown_remaining_seconds", "east"), 5);
  EXPECT_EQ(Value("litellm_deployment_cooled_down_total", "east"), 1);
  EXPECT_EQ(Value("litellm_deployment_state", "west"), 0);
  EXPECT_EQ(Value("litellm_deployment_cooled_down_total", "west"), 0);
  clock_.Advance(milliseconds(1500));
  EXPECT_DOUBLE_EQ(Value("ailb_deployment_cooldown_remaining_seconds", "east"), 3.5);

  // Half-open: a partial outage, no countdown.
  clock_.Advance(milliseconds(3500));
  EXPECT_EQ(Value("litellm_deployment_state", "east"), 1);
  EXPECT_EQ(Value("ailb_deployment_cooldown_remaining_seconds", "east"), 0);
  // The probe fails: cooling down again, twice as long, counted again.
  Fail("east");
  EXPECT_EQ(Value("litellm_deployment_state", "east"), 2);
  EXPECT_EQ(Value("ailb_deployment_cooldown_remaining_seconds", "east"), 10);
  EXPECT_EQ(Value("litellm_deployment_cooled_down_total", "east"), 2);

  // The next probe succeeds: ramping back is still a partial outage until the ramp ends.
  clock_.Advance(seconds(10));
  Succeed("east");
  EXPECT_EQ(Value("litellm_deployment_state", "east"), 1);
  clock_.Advance(seconds(30));
  EXPECT_EQ(Value("litellm_deployment_state", "east"), 0);
  EXPECT_EQ(Value("litellm_deployment_cooled_down_total", "east"), 2);  // never goes down
}

TEST_F(DeploymentMetricsTest, SeriesFollowTheCurrentConfiguration) {
  auto config = std::make_shared<config::Config>();
  config->deployments = {Dep("east", "gpt", "http://east/v1", config::ProviderKind::kOpenAI)};
  store_.Publish(config);
  EXPECT_EQ(registry_.Collect({"litellm_deployment_state"}).size(), 1u);
  EXPECT_THAT(registry_.RenderPrometheus(), Not(HasSubstr("model_id=\"west\"")));
}

TEST(DeploymentStateOfTest, MapsBreakerStatesAndTheRamp) {
  router::DeploymentHealth h;
  EXPECT_EQ(DeploymentStateOf(h), DeploymentState::kHealthy);
  h.traffic_share = 0.4;
  EXPECT_EQ(DeploymentStateOf(h), DeploymentState::kPartialOutage);
  h.traffic_share = 1;
  h.state = router::BreakerState::kHalfOpen;
  EXPECT_EQ(DeploymentStateOf(h), DeploymentState::kPartialOutage);
  h.state = router::BreakerState::kCoolingDown;
  EXPECT_EQ(DeploymentStateOf(h), DeploymentState::kCompleteOutage);
}

}  // namespace
}  // namespace ailb::gateway
