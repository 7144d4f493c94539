#include "fakes/fake_module_core.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ailb/common/hash.h"

namespace ailb::testing {
namespace {

constexpr char kChatPath[] = "/v1/chat/completions";
const WallTime kStartedAt = WallTime(std::chrono::seconds(1'700'000'000));

control::RouteInfo ConfiguredRoute(const std::string& model, int deployments) {
  control::RouteInfo route;
  route.route_id = absl::StrCat("model:", model);
  route.model = model;
  route.target = model;
  route.path_pattern = kChatPath;
  route.priority = 100;
  route.from_config = true;
  route.deployments = deployments;
  return route;
}

}  // namespace

FakeModuleCore::FakeModuleCore()
    : clock_(SystemClock::Instance()), rate_limiter_(SystemClock::Instance()) {
  absl::MutexLock lock(&mu_);
  metrics_ = {
      {"ai_requests_per_minute", {}, 12},
      {"ailb_requests_total", {{"model", "gpt-4o"}}, 42},
      {"ailb_request_duration_seconds_p95", {}, 0.25},
  };
  stats_.total_requests = 100;
  stats_.successful_requests = 95;
  stats_.failed_requests = 5;
  stats_.bytes_received = 1000;
  stats_.bytes_sent = 2000;
  stats_.avg_latency_ms = 120.5;
  stats_.p50_latency_ms = 100;
  stats_.p95_latency_ms = 250;
  stats_.p99_latency_ms = 400;
  stats_.since = kStartedAt;
  weights_ = {{"v1", 100}, {"v2", 0}};
  blue_ = "v1";
  green_ = "v2";
  changed_at_ = kStartedAt;
  configured_routes_ = {ConfiguredRoute("gpt-4o", 2), ConfiguredRoute("llama3", 1)};
  config_.config_id = instance_id_;
  config_.config_type = "yaml";
  config_.data = "server:\n  port: 8080\nmodel_list:\n  - model_name: gpt-4o\n";
  config_.checksum = Sha256Hex(config_.data);
  config_.updated_at = kStartedAt;
}

void FakeModuleCore::Record(std::string call) {
  absl::MutexLock lock(&mu_);
  calls_.push_back(std::move(call));
}

control::StatusReport FakeModuleCore::StatusLocked() const {
  control::StatusReport report;
  control::BlueGreenState state = BlueGreenLocked();
  report.instance.instance_id = instance_id_;
  report.instance.version = state.active_version;
  report.instance.health = health_;
  report.instance.started_at = kStartedAt;
  report.instance.current_connections = 3;
  report.instance.max_connections = 100;
  report.instance.traffic_weight = state.weights[state.active_version];
  report.instance.metadata = {{"region", "test"}};
  report.status = health_;
  report.message = health_message_;
  report.details = {{"num_connectors", "2"},
                    {"memory_enabled", "false"},
                    {"rag_enabled", "false"},
                    {"deployments", "3"}};
  report.checked_at = clock_.WallNow();
  return report;
}

control::StatusReport FakeModuleCore::Status() {
  Record("Status");
  absl::MutexLock lock(&mu_);
  return StatusLocked();
}

control::StatusReport FakeModuleCore::HealthCheck(bool deep) {
  Record(absl::StrCat("HealthCheck(deep=", deep, ")"));
  absl::MutexLock lock(&mu_);
  control::StatusReport report = StatusLocked();
  if (deep) {
    for (const control::RouteInfo& route : configured_routes_) {
      report.details[absl::StrCat("deployment:", route.model)] = "ok";
    }
  }
  return report;
}

std::vector<metrics::Sample> FakeModuleCore::Metrics(const std::vector<std::string>& names) {
  Record(absl::StrCat("Metrics(", absl::StrJoin(names, ","), ")"));
  absl::MutexLock lock(&mu_);
  std::vector<metrics::Sample> out;
  for (const metrics::Sample& sample : metrics_) {
    if (names.empty() || std::find(names.begin(), names.end(), sample.name) != names.end()) {
      out.push_back(sample);
    }
  }
  return out;
}

control::StatsReport FakeModuleCore::Stats(bool reset_counters) {
  Record(absl::StrCat("Stats(reset=", reset_counters, ")"));
  absl::MutexLock lock(&mu_);
  control::StatsReport report;
  report.window = stats_;
  report.active_connections = 3;
  report.total_connections = 57;
  report.cpu_usage_percent = 1.5;
  report.memory_usage_mb = 64;
  report.custom = {{"streams_open", "1"}};
  if (reset_counters) {
    stats_ = metrics::StatsWindow();
    stats_.since = clock_.WallNow();
  }
  return report;
}

control::BlueGreenState FakeModuleCore::BlueGreenLocked() const {
  control::BlueGreenState state;
  state.weights = weights_;
  int best = -1;
  for (const auto& [version, weight] : weights_) {
    if (weight > best) {
      best = weight;
      state.active_version = version;
    }
  }
  state.blue_version = blue_;
  state.green_version = green_;
  state.changed_at = changed_at_;
  state.promotion_in_progress = promoting_;
  return state;
}

void FakeModuleCore::ChangeWeights(std::map<std::string, int> weights) {
  weight_history_.push_back(weights_);
  weights_ = std::move(weights);
  changed_at_ = clock_.WallNow();
}

control::BlueGreenState FakeModuleCore::BlueGreen() {
  Record("BlueGreen");
  absl::MutexLock lock(&mu_);
  return BlueGreenLocked();
}

absl::StatusOr<control::BlueGreenState> FakeModuleCore::SetTrafficWeight(const std::string& version,
                                                                         int weight) {
  Record(absl::StrCat("SetTrafficWeight(", version, ",", weight, ")"));
  absl::MutexLock lock(&mu_);
  if (!weights_.contains(version)) {
    return absl::NotFoundError(absl::StrCat("unknown version '", version, "'"));
  }
  if (version != green_) {
    const std::string active = BlueGreenLocked().active_version;
    blue_ = active != version ? active : green_;
    green_ = version;
  }
  std::map<std::string, int> weights;
  for (const auto& entry : weights_) weights[entry.first] = 0;
  weights[green_] = weight;
  weights[blue_] = 100 - weight;
  ChangeWeights(std::move(weights));
  promoting_ = false;
  return BlueGreenLocked();
}

absl::StatusOr<control::BlueGreenState> FakeModuleCore::Rollback(
    const std::string& target_version) {
  Record(absl::StrCat("Rollback(", target_version, ")"));
  absl::MutexLock lock(&mu_);
  if (target_version.empty()) {
    if (weight_history_.empty()) {
      return absl::FailedPreconditionError("no earlier weights to roll back to");
    }
    weights_ = weight_history_.back();
    weight_history_.pop_back();
    changed_at_ = clock_.WallNow();
  } else {
    if (!weights_.contains(target_version)) {
      return absl::NotFoundError(absl::StrCat("unknown version '", target_version, "'"));
    }
    std::map<std::string, int> weights;
    for (const auto& entry : weights_) weights[entry.first] = 0;
    weights[target_version] = 100;
    ChangeWeights(std::move(weights));
  }
  promoting_ = false;
  return BlueGreenLocked();
}

absl::StatusOr<control::BlueGreenState> FakeModuleCore::Promote(const std::string& version,
                                                                bool immediate, int rate_percent) {
  Record(absl::StrCat("Promote(", version, ",immediate=", immediate, ",rate=", rate_percent, ")"));
  absl::MutexLock lock(&mu_);
  const std::string target = version.empty() ? green_ : version;
  if (!weights_.contains(target)) {
    return absl::NotFoundError(absl::StrCat("unknown version '", target, "'"));
  }
  if (target != green_) {
    const std::string active = BlueGreenLocked().active_version;
    blue_ = active != target ? active : green_;
    green_ = target;
  }
  const int step = rate_percent == 0 ? 10 : rate_percent;
  const int next = immediate ? 100 : std::min(100, weights_[target] + step);
  std::map<std::string, int> weights;
  for (const auto& entry : weights_) weights[entry.first] = 0;
  weights[target] = next;
  if (next < 100) weights[blue_] = 100 - next;
  ChangeWeights(std::move(weights));
  promoting_ = next < 100;
  return BlueGreenLocked();
}

control::ConfigUpdateResult FakeModuleCore::Reload() {
  Record("Reload");
  absl::MutexLock lock(&mu_);
  control::ConfigUpdateResult result;
  if (absl::StrContains(config_.data, "invalid")) {
    result.errors = {"line 1: unknown key 'invalid'"};
    result.message = "validation failed";
    return result;
  }
  result.validation_passed = true;
  result.applied = true;
  result.message = "reloaded from disk";
  return result;
}

control::ConfigUpdateResult FakeModuleCore::UpdateConfig(const std::string& document,
                                                         bool validate_only) {
  Record(absl::StrCat("UpdateConfig(validate_only=", validate_only, ")"));
  absl::MutexLock lock(&mu_);
  last_config_document_ = document;
  control::ConfigUpdateResult result;
  if (absl::StrContains(document, "invalid")) {
    result.errors = {"line 1: unknown key 'invalid'", "model_list: must not be empty"};
    result.message = "validation failed";
    return result;
  }
  result.validation_passed = true;
  if (validate_only) {
    result.message = "configuration is valid";
    return result;
  }
  result.applied = true;
  result.message = "configuration applied";
  config_.data = document;
  config_.checksum = Sha256Hex(document);
  config_.updated_at = clock_.WallNow();
  return result;
}

control::ConfigDocument FakeModuleCore::CurrentConfig() {
  Record("CurrentConfig");
  absl::MutexLock lock(&mu_);
  return config_;
}

std::vector<control::RouteInfo> FakeModuleCore::Routes() {
  Record("Routes");
  absl::MutexLock lock(&mu_);
  std::vector<control::RouteInfo> routes = configured_routes_;
  for (const auto& entry : aliases_) routes.push_back(entry.second);
  return routes;
}

absl::StatusOr<int> FakeModuleCore::UpdateRoutes(const std::vector<control::RouteInfo>& routes,
                                                 bool replace_all) {
  Record(absl::StrCat("UpdateRoutes(n=", routes.size(), ",replace_all=", replace_all, ")"));
  absl::MutexLock lock(&mu_);
  last_route_update_ = routes;
  auto configured = [this](const std::string& model) -> const control::RouteInfo* {
    for (const control::RouteInfo& route : configured_routes_) {
      if (route.model == model) return &route;
    }
    return nullptr;
  };
  for (const control::RouteInfo& route : routes) {
    if (configured(route.target) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("target '", route.target, "' is not a configured model group"));
    }
    if (configured(route.model) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", route.model, "' is a configured model, not an alias"));
    }
  }
  if (replace_all) aliases_.clear();
  for (control::RouteInfo route : routes) {
    route.from_config = false;
    route.deployments = configured(route.target)->deployments;
    if (route.path_pattern.empty()) route.path_pattern = kChatPath;
    aliases_[route.route_id] = std::move(route);
  }
  return static_cast<int>(routes.size());
}

absl::Status FakeModuleCore::DeleteRoute(const std::string& route_id) {
  Record(absl::StrCat("DeleteRoute(", route_id, ")"));
  absl::MutexLock lock(&mu_);
  for (const control::RouteInfo& route : configured_routes_) {
    if (route.route_id == route_id) {
      return absl::FailedPreconditionError(
          absl::StrCat("route '", route_id, "' comes from the configuration file"));
    }
  }
  if (aliases_.erase(route_id) == 0) {
    return absl::NotFoundError(absl::StrCat("no route '", route_id, "'"));
  }
  return absl::OkStatus();
}

control::CanHandleResult FakeModuleCore::CanHandle(const std::string& path,
                                                   const std::string& model) {
  Record(absl::StrCat("CanHandle(", path, ",", model, ")"));
  absl::MutexLock lock(&mu_);
  control::CanHandleResult result;
  if (path != kChatPath && path != "/v1/completions" && path != "/v1/embeddings") {
    result.reason = absl::StrCat("path '", path, "' is not served");
    return result;
  }
  if (model.empty()) {
    result.can_handle = true;
    result.priority = 100;
    result.reason = "path served";
    return result;
  }
  std::vector<control::RouteInfo> routes = configured_routes_;
  for (const auto& entry : aliases_) routes.push_back(entry.second);
  for (const control::RouteInfo& route : routes) {
    if (route.model == model) {
      result.can_handle = true;
      result.priority = route.priority;
      result.reason = absl::StrCat("model '", model, "' is served by '", route.target, "'");
      return result;
    }
  }
  result.reason = absl::StrCat("unknown model '", model, "'");
  return result;
}

void FakeModuleCore::RequestShutdown(bool graceful, int timeout_seconds) {
  Record(absl::StrCat("RequestShutdown(graceful=", graceful, ",timeout=", timeout_seconds, ")"));
  std::function<void(bool, int)> hook;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = ShutdownArgs{graceful, timeout_seconds};
    hook = shutdown_hook_;
  }
  if (hook) hook(graceful, timeout_seconds);
}

void FakeModuleCore::RecordScaling(const control::ScalingRecord& record) {
  Record(
      absl::StrCat("RecordScaling(min=", record.min_instances, ",max=", record.max_instances, ")"));
  absl::MutexLock lock(&mu_);
  scaling_ = record;
}

std::optional<control::ScalingRecord> FakeModuleCore::Scaling() {
  Record("Scaling");
  absl::MutexLock lock(&mu_);
  return scaling_;
}

void FakeModuleCore::SetHealth(control::ModuleHealth health, std::string message) {
  absl::MutexLock lock(&mu_);
  health_ = health;
  health_message_ = std::move(message);
}

std::string FakeModuleCore::InstanceId() {
  absl::MutexLock lock(&mu_);
  return instance_id_;
}

void FakeModuleCore::SetInstanceId(std::string id) {
  absl::MutexLock lock(&mu_);
  instance_id_ = std::move(id);
}

void FakeModuleCore::SetMetrics(std::vector<metrics::Sample> samples) {
  absl::MutexLock lock(&mu_);
  metrics_ = std::move(samples);
}

void FakeModuleCore::AddConfiguredModels(int count) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < count; ++i) {
    configured_routes_.push_back(ConfiguredRoute(absl::StrCat("m", i), 1));
  }
}

void FakeModuleCore::OnShutdown(std::function<void(bool, int)> hook) {
  absl::MutexLock lock(&mu_);
  shutdown_hook_ = std::move(hook);
}

std::vector<std::string> FakeModuleCore::Calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

int FakeModuleCore::CallCount(std::string_view method) const {
  absl::MutexLock lock(&mu_);
  int count = 0;
  for (const std::string& call : calls_) {
    const std::string_view name = std::string_view(call).substr(0, call.find('('));
    if (name == method) ++count;
  }
  return count;
}

std::optional<std::string> FakeModuleCore::LastCall() const {
  absl::MutexLock lock(&mu_);
  if (calls_.empty()) return std::nullopt;
  return calls_.back();
}

std::optional<FakeModuleCore::ShutdownArgs> FakeModuleCore::shutdown_request() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}

std::string FakeModuleCore::last_config_document() const {
  absl::MutexLock lock(&mu_);
  return last_config_document_;
}

std::vector<control::RouteInfo> FakeModuleCore::last_route_update() const {
  absl::MutexLock lock(&mu_);
  return last_route_update_;
}

}  // namespace ailb::testing
