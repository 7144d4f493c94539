#include "server/control/convert.h"

#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ailb::server::control_rpc {

void SetTimestamp(WallTime time, google::protobuf::Timestamp* out) {
  if (time == WallTime()) return;
  const auto since_epoch = time.time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds);
  // Timestamp wants nanos in [0, 1e9): floor toward -inf for times before 1970.
  if (nanos.count() < 0) {
    seconds -= std::chrono::seconds(1);
    nanos += std::chrono::seconds(1);
  }
  out->set_seconds(seconds.count());
  out->set_nanos(static_cast<int32_t>(nanos.count()));
}

marchproxy::HealthStatus ToHealthStatus(control::ModuleHealth health) {
  switch (health) {
    case control::ModuleHealth::kHealthy:
      return marchproxy::HEALTH_STATUS_HEALTHY;
    case control::ModuleHealth::kDegraded:
      return marchproxy::HEALTH_STATUS_DEGRADED;
    case control::ModuleHealth::kUnhealthy:
      return marchproxy::HEALTH_STATUS_UNHEALTHY;
    case control::ModuleHealth::kStarting:
      return marchproxy::HEALTH_STATUS_STARTING;
    case control::ModuleHealth::kStopping:
      return marchproxy::HEALTH_STATUS_STOPPING;
  }
  return marchproxy::HEALTH_STATUS_UNSPECIFIED;
}

void ToModuleInstance(const control::InstanceInfo& info, marchproxy::ModuleInstance* out) {
  out->set_instance_id(info.instance_id);
  out->set_module_type(marchproxy::MODULE_TYPE_AILB);
  out->set_address(info.address);
  out->set_health_status(ToHealthStatus(info.health));
  out->mutable_metadata()->insert(info.metadata.begin(), info.metadata.end());
  SetTimestamp(info.started_at, out->mutable_started_at());
  out->set_current_connections(info.current_connections);
  out->set_max_connections(info.max_connections);
  out->set_version(info.version);
  out->set_traffic_weight(info.traffic_weight);
}

void ToBlueGreenConfig(const control::BlueGreenState& state, marchproxy::BlueGreenConfig* out) {
  auto weight_of = [&state](const std::string& version) {
    auto it = state.weights.find(version);
    return it == state.weights.end() ? 0 : it->second;
  };
  out->set_blue_version(state.blue_version);
  out->set_green_version(state.green_version);
  out->set_blue_weight(state.blue_version.empty() ? 0 : weight_of(state.blue_version));
  out->set_green_weight(state.green_version.empty() ? 0 : weight_of(state.green_version));
  out->set_active_version(state.active_version);
  out->set_canary_enabled(state.promotion_in_progress);
  out->set_canary_percent(state.promotion_in_progress ? out->green_weight() : 0);
  SetTimestamp(state.changed_at, out->mutable_deployment_started());
}

void ToRateLimit(const ratelimit::RateLimitSpec& spec, marchproxy::RateLimit* out) {
  out->set_limit_id(spec.id);
  out->set_target(spec.target);
  out->set_requests_per_second(spec.requests_per_second);
  out->set_requests_per_minute(spec.requests_per_minute);
  out->set_requests_per_hour(spec.requests_per_hour);
  out->set_burst_size(spec.burst_size);
  out->set_enabled(spec.enabled);
  out->mutable_metadata()->insert(spec.metadata.begin(), spec.metadata.end());
}

ratelimit::RateLimitSpec FromRateLimit(const marchproxy::RateLimit& limit) {
  ratelimit::RateLimitSpec spec;
  spec.id = limit.limit_id();
  spec.target = limit.target();
  spec.requests_per_second = limit.requests_per_second();
  spec.requests_per_minute = limit.requests_per_minute();
  spec.requests_per_hour = limit.requests_per_hour();
  spec.burst_size = limit.burst_size();
  spec.enabled = limit.enabled();
  spec.metadata.insert(limit.metadata().begin(), limit.metadata().end());
  return spec;
}

void ToRoute(const control::RouteInfo& info, marchproxy::Route* out) {
  out->set_route_id(info.route_id);
  out->set_protocol(marchproxy::PROTOCOL_HTTP);
  out->set_path_pattern(info.path_pattern);
  out->set_priority(info.priority);
  auto& metadata = *out->mutable_metadata();
  metadata[kRouteModelKey] = info.model;
  metadata[kRouteTargetKey] = info.target;
  metadata[kRouteDeploymentsKey] = absl::StrCat(info.deployments);
  metadata[kRouteSourceKey] = info.from_config ? "config" : "runtime";
}

absl::StatusOr<control::RouteInfo> FromRoute(const marchproxy::Route& route) {
  std::string from_id;
  if (!route.route_id().empty()) {
    absl::string_view id = route.route_id();
    if (!absl::StartsWith(id, kRouteIdPrefix) || id.size() == sizeof(kRouteIdPrefix) - 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route_id '", route.route_id(), "': expected \"model:<alias>\" (or leave it empty)"));
    }
    from_id = std::string(id.substr(sizeof(kRouteIdPrefix) - 1));
  }
  std::string model;
  if (auto it = route.metadata().find(kRouteModelKey); it != route.metadata().end()) {
    model = it->second;
  }
  if (model.empty()) model = from_id;
  if (model.empty()) {
    return absl::InvalidArgumentError(
        "route needs the alias: metadata[\"model\"] or route_id \"model:<alias>\"");
  }
  if (!from_id.empty() && from_id != model) {
    return absl::InvalidArgumentError(absl::StrCat(
        "route_id '", route.route_id(), "' disagrees with metadata[\"model\"] '", model, "'"));
  }
  control::RouteInfo info;
  info.route_id = absl::StrCat(kRouteIdPrefix, model);
  info.model = model;
  if (auto it = route.metadata().find(kRouteTargetKey); it != route.metadata().end()) {
    info.target = it->second;
  }
  if (info.target.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "route '", info.route_id, "' needs metadata[\"target\"]: the model group that serves it"));
  }
  info.path_pattern = route.path_pattern();
  // 0 is proto3's "unset": keep RouteInfo's default priority then.
  if (route.priority() != 0) info.priority = route.priority();
  info.from_config = false;
  return info;
}

void ToMetricDataPoint(const metrics::Sample& sample, WallTime at,
                       marchproxy::MetricDataPoint* out) {
  out->set_name(sample.name);
  out->set_value(sample.value);
  for (const auto& [name, value] : sample.labels) (*out->mutable_labels())[name] = value;
  SetTimestamp(at, out->mutable_timestamp());
}

void ToModuleStats(const control::StatsReport& report, const std::string& instance_id,
                   marchproxy::ModuleStats* out) {
  const metrics::StatsWindow& window = report.window;
  out->set_instance_id(instance_id);
  out->set_total_requests(window.total_requests);
  out->set_successful_requests(window.successful_requests);
  out->set_failed_requests(window.failed_requests);
  out->set_active_connections(report.active_connections);
  out->set_total_connections(report.total_connections);
  out->set_avg_latency_ms(window.avg_latency_ms);
  out->set_p50_latency_ms(window.p50_latency_ms);
  out->set_p95_latency_ms(window.p95_latency_ms);
  out->set_p99_latency_ms(window.p99_latency_ms);
  out->set_bytes_received(window.bytes_received);
  out->set_bytes_sent(window.bytes_sent);
  out->set_cpu_usage_percent(report.cpu_usage_percent);
  out->set_memory_usage_mb(report.memory_usage_mb);
  SetTimestamp(window.since, out->mutable_since());
  out->mutable_custom_stats()->insert(report.custom.begin(), report.custom.end());
}

void ToConfigUpdate(const control::ConfigDocument& document, marchproxy::ConfigUpdate* out) {
  out->set_config_id(document.config_id);
  out->set_config_type(document.config_type);
  out->set_config_data(document.data);
  out->set_checksum(document.checksum);
  SetTimestamp(document.updated_at, out->mutable_updated_at());
}

control::ScalingRecord FromScalingConfig(const marchproxy::ScalingConfig& config) {
  control::ScalingRecord record;
  record.min_instances = config.min_instances();
  record.max_instances = config.max_instances();
  record.target_cpu_percent = config.target_cpu_percent();
  record.target_memory_percent = config.target_memory_percent();
  record.target_connections = config.target_connections();
  record.scale_up_threshold = config.scale_up_threshold();
  record.scale_down_threshold = config.scale_down_threshold();
  record.cooldown_seconds = config.cooldown_seconds();
  record.auto_scaling_enabled = config.auto_scaling_enabled();
  return record;
}

}  // namespace ailb::server::control_rpc
