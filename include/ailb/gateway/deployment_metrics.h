// Per-deployment breaker state on /metrics, under LiteLLM's names: read from the health tracker
// each time the registry is collected, for the deployments of the current configuration.
#pragma once

#include "ailb/config/config.h"
#include "ailb/metrics/registry.h"
#include "ailb/router/health.h"

namespace ailb::gateway {

// litellm_deployment_state: 0 healthy, 1 partial outage, 2 complete outage.
enum class DeploymentState { kHealthy = 0, kPartialOutage = 1, kCompleteOutage = 2 };
// Cooling down (breaker open) is a complete outage; half-open (probing) or ramping traffic back
// after recovery is a partial one.
DeploymentState DeploymentStateOf(const router::DeploymentHealth& health);

// Registers, each labelled litellm_model_name (the public model name), model_id, api_base and
// api_provider:
//   litellm_deployment_state                    gauge, DeploymentStateOf
//   ailb_deployment_cooldown_remaining_seconds  gauge, 0 unless cooling down
//   litellm_deployment_cooled_down_total        counter, times the deployment entered cooldown
// `registry`, `config` and `health` must outlive every collection of the registry.
void RegisterDeploymentMetrics(metrics::Registry& registry, const config::ConfigStore& config,
                               const router::HealthTracker& health);

}  // namespace ailb::gateway
