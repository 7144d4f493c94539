#include "ailb/gateway/deployment_metrics.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ailb::gateway {
namespace {

// One value per configured deployment, labelled as LiteLLM labels its deployment metrics.
std::function<std::vector<metrics::LabelledValue>()> PerDeployment(
    const config::ConfigStore& config, const router::HealthTracker& health,
    std::function<double(const router::DeploymentHealth&)> value) {
  return [&config, &health, value = std::move(value)] {
    std::shared_ptr<const config::Config> current = config.Current();
    std::vector<metrics::LabelledValue> out;
    out.reserve(current->deployments.size());
    for (const config::Deployment& d : current->deployments) {
      metrics::Labels labels = {{"litellm_model_name", d.model_name},
                                {"model_id", d.id},
                                {"api_base", d.api_base},
                                {"api_provider", std::string(config::ProviderName(d.provider))}};
      out.emplace_back(std::move(labels), value(health.Snapshot(d.id)));
    }
    return out;
  };
}

}  // namespace

DeploymentState DeploymentStateOf(const router::DeploymentHealth& health) {
  switch (health.state) {
    case router::BreakerState::kCoolingDown:
      return DeploymentState::kCompleteOutage;
    case router::BreakerState::kHalfOpen:
      return DeploymentState::kPartialOutage;
    case router::BreakerState::kHealthy:
      break;
  }
  return health.traffic_share < 1 ? DeploymentState::kPartialOutage : DeploymentState::kHealthy;
}

void RegisterDeploymentMetrics(metrics::Registry& registry, const config::ConfigStore& config,
                               const router::HealthTracker& health) {
  registry.AddCallbackFamily(
      "litellm_deployment_state",
      "Deployment state: 0 healthy, 1 partial outage (half-open or ramping back), 2 complete "
      "outage (cooling down)",
      metrics::MetricType::kGauge,
      PerDeployment(config, health, [](const router::DeploymentHealth& h) {
        return static_cast<double>(DeploymentStateOf(h));
      }));
  registry.AddCallbackFamily(
      "ailb_deployment_cooldown_remaining_seconds",
      "Seconds until a cooling-down deployment is probed again; 0 when not cooling down",
      metrics::MetricType::kGauge,
      PerDeployment(config, health, [](const router::DeploymentHealth& h) {
        if (h.state != router::BreakerState::kCoolingDown) return 0.0;
        return std::max(0.0, std::chrono::duration<double>(h.cooldown_remaining).count());
      }));
  registry.AddCallbackFamily("litellm_deployment_cooled_down_total",
                             "Times the deployment entered cooldown", metrics::MetricType::kCounter,
                             PerDeployment(config, health, [](const router::DeploymentHealth& h) {
                               return static_cast<double>(h.cooldowns);
                             }));
}

}  // namespace ailb::gateway
