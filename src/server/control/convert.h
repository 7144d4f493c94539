// Translation between control::ModuleCore's plain C++ types and the marchproxy messages. Pure
// functions, no gRPC: the service (module_service.cc) only sequences them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/control/module_core.h"
#include "ailb/metrics/registry.h"
#include "ailb/ratelimit/rate_limiter.h"
#include "google/protobuf/timestamp.pb.h"
#include "marchproxy/types.pb.h"

namespace ailb::server::control_rpc {

// Leaves `out` untouched for the epoch (an unset WallTime), so "never" stays an unset field.
void SetTimestamp(WallTime time, google::protobuf::Timestamp* out);

marchproxy::HealthStatus ToHealthStatus(control::ModuleHealth health);
void ToModuleInstance(const control::InstanceInfo& info, marchproxy::ModuleInstance* out);

// blue/green versions and weights, active_version, deployment_started = changed_at,
// canary_enabled = a promotion in progress, canary_percent = the green weight while it is.
void ToBlueGreenConfig(const control::BlueGreenState& state, marchproxy::BlueGreenConfig* out);

void ToRateLimit(const ratelimit::RateLimitSpec& spec, marchproxy::RateLimit* out);
ratelimit::RateLimitSpec FromRateLimit(const marchproxy::RateLimit& limit);

// Route metadata keys.
inline constexpr char kRouteModelKey[] = "model";
inline constexpr char kRouteTargetKey[] = "target";
inline constexpr char kRouteDeploymentsKey[] = "deployments";
inline constexpr char kRouteSourceKey[] = "source";  // "config" or "runtime"
inline constexpr char kRouteIdPrefix[] = "model:";

// protocol HTTP, path_pattern, priority, metadata {model, target, deployments, source}.
void ToRoute(const control::RouteInfo& info, marchproxy::Route* out);
// An alias to add: the model from metadata["model"] or a "model:<alias>" route_id, the target
// from metadata["target"]. InvalidArgument when either is missing or they disagree.
absl::StatusOr<control::RouteInfo> FromRoute(const marchproxy::Route& route);

void ToMetricDataPoint(const metrics::Sample& sample, WallTime at,
                       marchproxy::MetricDataPoint* out);
void ToModuleStats(const control::StatsReport& report, const std::string& instance_id,
                   marchproxy::ModuleStats* out);
void ToConfigUpdate(const control::ConfigDocument& document, marchproxy::ConfigUpdate* out);
control::ScalingRecord FromScalingConfig(const marchproxy::ScalingConfig& config);

}  // namespace ailb::server::control_rpc
