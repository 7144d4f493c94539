#include "ailb/control/live_module.h"

#include <algorithm>
#include <condition_variable>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "ailb/common/hash.h"
#include "ailb/common/strings.h"
#include "ailb/config/reload.h"
#include "ailb/gateway/health_checker.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ailb::control {
namespace {

using nlohmann::json;

constexpr char kChatPath[] = "/v1/chat/completions";

std::vector<std::string> SplitErrors(const absl::Status& status) {
  std::vector<std::string> errors;
  for (absl::string_view part : absl::StrSplit(status.message(), "; ")) {
    if (!part.empty()) errors.emplace_back(part);
  }
  if (errors.empty()) errors.emplace_back(status.ToString());
  return errors;
}

// The effective configuration as a document UpdateConfig accepts back. Secrets are left out:
// deployments name the environment variable that holds their key, never the key.
json ConfigDocumentJson(const config::Config& c) {
  json models = json::array();
  for (const config::Deployment& d : c.deployments) {
    json entry = {{"model_name", d.model_name},
                  {"id", d.id},
                  {"provider", std::string(config::ProviderName(d.provider))},
                  {"model", d.upstream_model},
                  {"api_base", d.api_base},
                  {"weight", d.weight},
                  {"rpm", d.rpm},
                  {"tpm", d.tpm},
                  {"priority", d.priority},
                  {"input_cost_per_token", d.input_cost_per_token},
                  {"output_cost_per_token", d.output_cost_per_token}};
    if (!d.api_key_env.empty()) entry["api_key_env"] = d.api_key_env;
    if (!d.version.empty()) entry["version"] = d.version;
    models.push_back(std::move(entry));
  }
  return {{"module_id", c.module_id},
          {"routing_strategy", c.routing_strategy},
          {"enable_memory", c.enable_memory},
          {"enable_rag", c.enable_rag},
          {"data_dir", c.data_dir},
          {"log_level", c.log_level},
          {"log_format", c.log_format},
          {"server",
           {{"host", c.server.host},
            {"http_port", c.server.http_port},
            {"grpc_port", c.server.grpc_port},
            {"http_threads", c.server.http_threads},
            {"max_body_bytes", c.server.max_body_bytes},
            {"drain_timeout_ms", c.server.drain_timeout_ms}}},
          {"timeouts",
           {{"connect_ms", c.timeouts.connect_ms},
            {"first_byte_ms", c.timeouts.first_byte_ms},
            {"total_ms", c.timeouts.total_ms},
            {"stream_idle_ms", c.timeouts.stream_idle_ms}}},
          {"model_list", std::move(models)}};
}

// Collects the answers of deep-check probes. Thread-safe.
struct ProbeResults {
  std::mutex mu;
  std::condition_variable done;
  std::map<std::string, std::string> checks;
  size_t pending = 0;
};

class LiveModuleImpl final : public LiveModule {
 public:
  explicit LiveModuleImpl(LiveModuleDeps deps) : deps_(std::move(deps)) {
    started_at_ = deps_.clock->WallNow();
    config_updated_at_ = started_at_;
    deps_.registry->AddCallbackGauge("process_resident_memory_bytes", "Resident memory", {},
                                     [this] { return process_.ResidentMemoryMiB() * 1048576.0; });
    deps_.registry->AddCallbackCounter("process_cpu_seconds_total",
                                       "Total user and system CPU time spent in seconds", {},
                                       [this] { return process_.CpuSecondsTotal(); });
    deps_.registry->AddCallbackGauge(
        "ailb_open_connections", "Client connections open", {},
        [this] { return static_cast<double>(deps_.open_connections()); });
    if (deps_.open_streams) {
      deps_.registry->AddCallbackGauge(
          "ailb_open_streams", "Server-sent event streams open to clients", {},
          [this] { return static_cast<double>(deps_.open_streams()); });
    }
  }

  ~LiveModuleImpl() override { StopPromotion(); }

  void MarkServing() override { lifecycle_.store(ModuleHealth::kHealthy); }
  void MarkStopping() override { lifecycle_.store(ModuleHealth::kStopping); }
  void SetGrpcAddress(const std::string& address) override {
    std::lock_guard lock(config_mu_);
    grpc_address_ = address;
  }

  std::string InstanceId() override { return deps_.config->Current()->module_id; }

  StatusReport Status() override {
    ConfigPtr config = deps_.config->Current();
    gateway::Gateway::Health health = deps_.gateway->CheckHealth();
    StatusReport report;
    report.checked_at = deps_.clock->WallNow();
    const std::string state = health.body.value("status", "unavailable");
    const ModuleHealth lifecycle = lifecycle_.load();
    if (lifecycle != ModuleHealth::kHealthy) {
      report.status = lifecycle;
    } else if (state == "ok") {
      report.status = ModuleHealth::kHealthy;
    } else if (state == "degraded") {
      report.status = ModuleHealth::kDegraded;
    } else if (state == "draining") {
      report.status = ModuleHealth::kStopping;
    } else {
      report.status = ModuleHealth::kUnhealthy;
    }
    int groups = 0;
    int available = 0;
    for (const auto& [name, group] : health.body["models"].items()) {
      ++groups;
      if (group.value("available", 0) > 0) ++available;
      report.details[absl::StrCat("model.", name)] =
          absl::StrCat(group.value("available", 0), "/", group.value("deployments", 0),
                       " deployments available");
    }
    for (const json& d : health.body["deployments"]) {
      std::string value = d.value("state", "unknown");
      if (d.contains("last_error"))
        absl::StrAppend(&value, " (last error: ", d.value("last_error", ""), ")");
      report.details[absl::StrCat("deployment.", d.value("id", ""))] = value;
    }
    report.message = groups == 0 ? "no model deployments are configured"
                                 : absl::StrCat(available, " of ", groups,
                                                " model groups have an available deployment");
    if (lifecycle == ModuleHealth::kStarting) report.message = "starting";
    if (lifecycle == ModuleHealth::kStopping || state == "draining") report.message = "draining";
    report.details["num_connectors"] = std::to_string(config->deployments.size());
    report.details["memory_enabled"] = config->enable_memory ? "true" : "false";
    report.details["rag_enabled"] = config->enable_rag ? "true" : "false";
    // Honest about what this build has: the stores arrive with the memory/RAG milestone.
    report.details["memory_store"] = "not built in this version";
    report.details["rag_store"] = "not built in this version";
    report.details["routing_strategy"] = config->routing_strategy;
    report.details["in_flight"] = std::to_string(health.body.value("in_flight", 0));

    InstanceInfo& instance = report.instance;
    instance.instance_id = config->module_id;
    {
      std::lock_guard lock(config_mu_);
      instance.address = grpc_address_;
    }
    instance.health = report.status;
    instance.started_at = started_at_;
    instance.current_connections = static_cast<int>(deps_.open_connections());
    const router::SplitState split = deps_.split->State();
    const std::string active = deps_.split->ActiveVersion();
    instance.version = active.empty() ? AILB_VERSION : active;
    instance.traffic_weight = active.empty() ? 100 : split.weights.at(active);
    instance.metadata["ailb_version"] = AILB_VERSION;
    instance.metadata["models"] = std::to_string(groups);
    return report;
  }

  StatusReport HealthCheck(bool deep) override {
    StatusReport report = Status();
    if (!deep) return report;
    ConfigPtr config = deps_.config->Current();
    auto results = std::make_shared<ProbeResults>();
    results->pending = config->deployments.size();
    for (const config::Deployment& d : config->deployments) {
      gateway::ProbeDeployment(*deps_.client, d, deps_.deep_check_timeout,
                               [results, key = absl::StrCat("probe.", d.id)](
                                   const absl::Status& status, std::chrono::milliseconds elapsed) {
                                 const std::string verdict =
                                     status.ok() ? absl::StrCat("ok (", elapsed.count(), " ms)")
                                                 : absl::StrCat("error: ", status.message());
                                 std::lock_guard lock(results->mu);
                                 results->checks[key] = verdict;
                                 if (--results->pending == 0) results->done.notify_all();
                               });
    }
    const size_t probes = config->deployments.size();
    std::unique_lock lock(results->mu);
    results->done.wait_for(lock, deps_.deep_check_timeout + std::chrono::seconds(1),
                           [&] { return results->pending == 0; });
    int failed = 0;
    for (const auto& [key, verdict] : results->checks) {
      report.details[key] = verdict;
      if (verdict.rfind("ok", 0) != 0) ++failed;
    }
    if (failed > 0 && report.status == ModuleHealth::kHealthy) {
      report.status = static_cast<size_t>(failed) == probes ? ModuleHealth::kUnhealthy
                                                            : ModuleHealth::kDegraded;
      report.instance.health = report.status;
    }
    absl::StrAppend(&report.message, "; deep check: ", probes - failed, " of ", probes,
                    " deployments answered");
    return report;
  }

  std::vector<metrics::Sample> Metrics(const std::vector<std::string>& names) override {
    return deps_.registry->Collect(names);
  }

  StatsReport Stats(bool reset_counters) override {
    StatsReport report;
    report.window = deps_.request_metrics->Stats();
    report.active_connections = deps_.open_connections();
    report.total_connections = deps_.total_connections();
    report.cpu_usage_percent = process_.CpuPercent();
    report.memory_usage_mb = process_.ResidentMemoryMiB();
    report.custom["in_flight"] = std::to_string(deps_.request_metrics->in_flight());
    report.custom["requests_per_minute"] =
        std::to_string(static_cast<int64_t>(deps_.request_metrics->RequestsPerMinute()));
    if (reset_counters) deps_.request_metrics->ResetStats();
    return report;
  }

  BlueGreenState BlueGreen() override {
    router::SplitState split = deps_.split->State();
    BlueGreenState state;
    state.weights = split.weights;
    state.active_version = deps_.split->ActiveVersion();
    state.blue_version = split.previous_active;
    state.green_version = split.target;
    state.changed_at = split.changed_at;
    std::lock_guard lock(promotion_mu_);
    state.promotion_in_progress = promotion_running_;
    return state;
  }

  absl::StatusOr<BlueGreenState> SetTrafficWeight(const std::string& version, int weight) override {
    StopPromotion();
    absl::StatusOr<router::SplitState> split = deps_.split->SetWeight(version, weight);
    if (!split.ok()) return split.status();
    spdlog::info("traffic weight: version {} now {} %", version, weight);
    return BlueGreen();
  }

  absl::StatusOr<BlueGreenState> Rollback(const std::string& target_version) override {
    StopPromotion();
    absl::StatusOr<router::SplitState> split = deps_.split->Rollback(target_version);
    if (!split.ok()) return split.status();
    spdlog::info("traffic weights rolled back; active version {}", deps_.split->ActiveVersion());
    return BlueGreen();
  }

  absl::StatusOr<BlueGreenState> Promote(const std::string& version, bool immediate,
                                         int rate_percent) override {
    StopPromotion();
    if (immediate || rate_percent <= 0 || rate_percent >= 100) {
      return SetTrafficWeight(version, 100);
    }
    const router::SplitState split = deps_.split->State();
    auto it = split.weights.find(version);
    if (it == split.weights.end()) {
      return absl::NotFoundError(absl::StrCat("no deployment has version '", version, "'"));
    }
    absl::StatusOr<router::SplitState> first =
        deps_.split->SetWeight(version, std::min(100, it->second + rate_percent));
    if (!first.ok()) return first.status();
    if (first->weights.at(version) < 100) {
      std::lock_guard lock(promotion_mu_);
      promotion_running_ = true;
      promotion_thread_ =
          std::thread([this, version, rate_percent] { RunPromotion(version, rate_percent); });
    }
    return BlueGreen();
  }

  ConfigUpdateResult Reload() override {
    return Apply(deps_.reload(), /*validate_only=*/false, "configuration reloaded");
  }

  ConfigUpdateResult UpdateConfig(const std::string& document, bool validate_only) override {
    return Apply(deps_.parse_document(document), validate_only,
                 validate_only ? "configuration is valid (not applied)" : "configuration applied");
  }

  ConfigDocument CurrentConfig() override {
    ConfigPtr config = deps_.config->Current();
    ConfigDocument doc;
    doc.config_id = config->module_id;
    doc.config_type = "yaml";  // written in JSON syntax, which every YAML parser reads
    doc.data = ConfigDocumentJson(*config).dump(2);
    doc.checksum = Sha256Hex(doc.data);
    std::lock_guard lock(config_mu_);
    doc.updated_at = config_updated_at_;
    return doc;
  }

  ratelimit::RateLimiter& rate_limiter() override { return *deps_.rate_limiter; }

  std::vector<RouteInfo> Routes() override {
    ConfigPtr config = deps_.config->Current();
    std::vector<RouteInfo> routes;
    for (const std::string& name : config->ModelNames()) {
      routes.push_back(MakeRoute(*config, name, name, true));
    }
    for (const auto& [alias, target] : deps_.aliases->All()) {
      routes.push_back(MakeRoute(*config, alias, target, false));
    }
    return routes;
  }

  absl::StatusOr<int> UpdateRoutes(const std::vector<RouteInfo>& routes,
                                   bool replace_all) override {
    ConfigPtr config = deps_.config->Current();
    const std::vector<std::string> groups = config->ModelNames();
    auto is_group = [&](const std::string& name) {
      return std::find(groups.begin(), groups.end(), name) != groups.end();
    };
    for (const RouteInfo& route : routes) {
      if (route.model.empty()) {
        return absl::InvalidArgumentError("every route needs a model name (metadata.model)");
      }
      if (is_group(route.model)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", route.model, "' is a configured model group; aliases cannot replace it"));
      }
      if (!is_group(route.target)) {
        return absl::InvalidArgumentError(absl::StrCat("route '", route.model, "': target '",
                                                       route.target,
                                                       "' is not a configured model group"));
      }
    }
    if (replace_all) deps_.aliases->Clear();
    for (const RouteInfo& route : routes) deps_.aliases->Set(route.model, route.target);
    return static_cast<int>(routes.size());
  }

  absl::Status DeleteRoute(const std::string& route_id) override {
    const std::string name = route_id.rfind("model:", 0) == 0 ? route_id.substr(6) : route_id;
    const std::vector<std::string> groups = deps_.config->Current()->ModelNames();
    if (std::find(groups.begin(), groups.end(), name) != groups.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "route '", route_id, "' comes from the configuration; change the configuration"));
    }
    if (!deps_.aliases->Remove(name)) {
      return absl::NotFoundError(absl::StrCat("no route '", route_id, "'"));
    }
    return absl::OkStatus();
  }

  CanHandleResult CanHandle(const std::string& path, const std::string& model) override {
    CanHandleResult result;
    if (path != kChatPath && path != "/chat/completions" && path != "/v1/models") {
      result.reason = absl::StrCat("path '", path, "' is not served by ailb");
      return result;
    }
    if (path == "/v1/models" || model.empty()) {
      result.can_handle = path == "/v1/models";
      result.priority = result.can_handle ? 100 : 0;
      result.reason = result.can_handle ? "model listing is always served"
                                        : "a chat route needs a model (metadata.model)";
      return result;
    }
    const std::string group = deps_.aliases->Resolve(model).value_or(model);
    gateway::Gateway::Health health = deps_.gateway->CheckHealth();
    const json& models = health.body["models"];
    if (!models.contains(group)) {
      result.reason = absl::StrCat("model '", model, "' is not served here");
      return result;
    }
    const int available = models[group].value("available", 0);
    result.can_handle = available > 0 && health.can_serve;
    result.priority = result.can_handle ? (group == model ? 100 : 90) : 0;
    result.reason =
        result.can_handle
            ? absl::StrCat("model '", model, "' has ", available, " available deployment(s)")
            : absl::StrCat("model '", model, "' has no available deployment now");
    return result;
  }

  void RequestShutdown(bool graceful, int timeout_seconds) override {
    deps_.shutdown(graceful, timeout_seconds);
  }

  void RecordScaling(const ScalingRecord& record) override {
    std::lock_guard lock(config_mu_);
    scaling_ = record;
  }
  std::optional<ScalingRecord> Scaling() override {
    std::lock_guard lock(config_mu_);
    return scaling_;
  }

 private:
  RouteInfo MakeRoute(const config::Config& config, const std::string& name,
                      const std::string& target, bool from_config) {
    RouteInfo route;
    route.route_id = absl::StrCat("model:", name);
    route.model = name;
    route.target = target;
    route.path_pattern = kChatPath;
    route.priority = from_config ? 100 : 90;
    route.from_config = from_config;
    route.deployments = static_cast<int>(
        std::count_if(config.deployments.begin(), config.deployments.end(),
                      [&](const config::Deployment& d) { return d.model_name == target; }));
    return route;
  }

  ConfigUpdateResult Apply(absl::StatusOr<ConfigPtr> next, bool validate_only,
                           const std::string& success_message) {
    ConfigUpdateResult result;
    if (!next.ok()) {
      result.errors = SplitErrors(next.status());
      result.message = absl::StrCat("configuration rejected (", result.errors.size(),
                                    " problem(s)); the previous configuration keeps serving");
      spdlog::error("{}: {}", result.message, next.status().message());
      return result;
    }
    result.validation_passed = true;
    result.message = success_message;
    // Settings fixed at start keep their start-up values whatever the snapshot says: compare
    // with what is in effect, so a change stays reported until a restart applies it.
    const ConfigPtr in_effect = deps_.startup ? deps_.startup : deps_.config->Current();
    const std::vector<config::SettingChange> fixed = config::RestartOnlyChanges(*in_effect, **next);
    if (!fixed.empty()) {
      std::vector<std::string> names;
      for (const config::SettingChange& change : fixed) names.push_back(change.name);
      absl::StrAppend(&result.message,
                      "; takes effect after restart: ", absl::StrJoin(names, ", "));
    }
    if (validate_only) return result;
    for (const config::SettingChange& change : fixed) spdlog::warn("{}", change.RestartWarning());
    deps_.publish(*next);
    result.applied = true;
    std::lock_guard lock(config_mu_);
    config_updated_at_ = deps_.clock->WallNow();
    return result;
  }

  void RunPromotion(const std::string& version, int rate_percent) {
    std::unique_lock lock(promotion_mu_);
    while (promotion_running_) {
      promotion_wake_.wait_for(lock, deps_.promotion_interval,
                               [this] { return !promotion_running_; });
      if (!promotion_running_) break;
      lock.unlock();
      const router::SplitState split = deps_.split->State();
      auto it = split.weights.find(version);
      bool finished = it == split.weights.end();
      if (!finished) {
        const int next = std::min(100, it->second + rate_percent);
        absl::StatusOr<router::SplitState> applied = deps_.split->SetWeight(version, next);
        spdlog::info("promotion: version {} now {} %", version, next);
        finished = !applied.ok() || next >= 100;
      }
      lock.lock();
      if (finished) promotion_running_ = false;
    }
  }

  void StopPromotion() {
    std::thread finished;
    {
      std::lock_guard lock(promotion_mu_);
      promotion_running_ = false;
      finished = std::move(promotion_thread_);
    }
    promotion_wake_.notify_all();
    if (finished.joinable()) finished.join();
  }

  LiveModuleDeps deps_;
  metrics::ProcessStats process_;
  WallTime started_at_;
  std::atomic<ModuleHealth> lifecycle_{ModuleHealth::kStarting};

  std::mutex config_mu_;
  WallTime config_updated_at_ ABSL_GUARDED_BY(config_mu_);
  std::optional<ScalingRecord> scaling_ ABSL_GUARDED_BY(config_mu_);
  std::string grpc_address_ ABSL_GUARDED_BY(config_mu_);

  std::mutex promotion_mu_;
  std::condition_variable promotion_wake_;
  bool promotion_running_ ABSL_GUARDED_BY(promotion_mu_) = false;
  std::thread promotion_thread_ ABSL_GUARDED_BY(promotion_mu_);
};

}  // namespace

std::unique_ptr<LiveModule> NewLiveModule(LiveModuleDeps deps) {
  return std::make_unique<LiveModuleImpl>(std::move(deps));
}

}  // namespace ailb::control
