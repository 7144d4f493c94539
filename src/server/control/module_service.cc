#include "server/control/module_service.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "ailb/common/clock.h"
#include "ailb/common/hash.h"
#include "server/control/convert.h"
#include "server/control/status_mapping.h"

namespace ailb::server::control_rpc {
namespace {

#define AILB_RPC_RETURN_IF_ERROR(expr)        \
  do {                                        \
    ::grpc::Status ailb_rpc_status_ = (expr); \
    if (!ailb_rpc_status_.ok()) {             \
      return ailb_rpc_status_;                \
    }                                         \
  } while (0)

using ::grpc::Status;

constexpr int kDefaultStreamIntervalSeconds = 5;
constexpr int kMaxStreamIntervalSeconds = 3600;
constexpr int kMaxMetricStreams = 16;
// How often a waiting metric stream looks at cancellation: bounds how long a cancelled stream
// holds its server thread.
constexpr std::chrono::milliseconds kStreamPollStep{100};

WallTime Now() { return SystemClock::Instance().WallNow(); }

Status InvalidArgument(std::string message) {
  return GrpcError(absl::StatusCode::kInvalidArgument, std::move(message));
}

// The response's `error` for a failure that is still answered with an OK RPC status.
template <typename Response>
void SetFailure(const absl::Status& status, Response* response) {
  response->set_success(false);
  response->set_message(std::string(status.message()));
  FillError(status, Now(), response->mutable_error());
}

// A ServerUnaryReactor that runs `after` once the RPC is over (reply sent or call cancelled).
class AfterReplyReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit AfterReplyReactor(std::function<void()> after) : after_(std::move(after)) {}
  void OnDone() override {
    if (after_) after_();
    delete this;
  }

 private:
  std::function<void()> after_;
};

// --- GetRoutes query --------------------------------------------------------------------------

// The value of a route field as the client sees it, for filters and sorting: a Route field or a
// metadata key (also as "metadata.<key>"). nullopt for an unknown field.
std::optional<std::string> RouteField(const marchproxy::Route& route, absl::string_view field) {
  absl::ConsumePrefix(&field, "metadata.");
  if (field == "route_id") return route.route_id();
  if (field == "path_pattern") return route.path_pattern();
  if (field == "priority") return absl::StrCat(route.priority());
  if (field == "protocol") return marchproxy::Protocol_Name(route.protocol());
  if (field == kRouteModelKey || field == kRouteTargetKey || field == kRouteDeploymentsKey ||
      field == kRouteSourceKey) {
    auto it = route.metadata().find(std::string(field));
    return it == route.metadata().end() ? "" : it->second;
  }
  return std::nullopt;
}

constexpr absl::string_view kRouteFields =
    "route_id, path_pattern, priority, protocol, model, target, deployments, source";

absl::StatusOr<bool> Matches(const marchproxy::Route& route, const marchproxy::Filter& filter) {
  std::optional<std::string> value = RouteField(route, filter.field());
  if (!value) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown filter field '", filter.field(), "' (one of ", kRouteFields, ")"));
  }
  const std::string op = absl::AsciiStrToLower(filter.operator_());
  if (op.empty() || op == "=" || op == "==" || op == "eq" || op == "equals") {
    return *value == filter.value();
  }
  if (op == "!=" || op == "ne" || op == "neq") return *value != filter.value();
  if (op == "contains") return absl::StrContains(*value, filter.value());
  if (op == "prefix" || op == "starts_with") return absl::StartsWith(*value, filter.value());
  return absl::InvalidArgumentError(absl::StrCat("unknown filter operator '", filter.operator_(),
                                                 "' (eq, ne, contains, prefix)"));
}

// Applies the query's filters and sort to `routes`, then cuts the requested page.
absl::Status ApplyQuery(const marchproxy::Query& query, std::vector<marchproxy::Route>* routes,
                        marchproxy::Pagination* pagination) {
  // Validate up front, so that a bad filter is reported even when there are no routes.
  for (const marchproxy::Filter& filter : query.filters()) {
    absl::StatusOr<bool> valid = Matches(marchproxy::Route(), filter);
    if (!valid.ok()) return valid.status();
  }
  std::vector<marchproxy::Route> kept;
  for (marchproxy::Route& route : *routes) {
    bool keep = true;
    for (const marchproxy::Filter& filter : query.filters()) {
      absl::StatusOr<bool> match = Matches(route, filter);
      if (!match.ok()) return match.status();
      keep = keep && *match;
    }
    if (keep) kept.push_back(std::move(route));
  }
  if (!query.sort_by().empty()) {
    if (!RouteField(marchproxy::Route(), query.sort_by())) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown sort_by '", query.sort_by(), "' (one of ", kRouteFields, ")"));
    }
    const bool numeric = query.sort_by() == "priority";
    std::stable_sort(kept.begin(), kept.end(),
                     [&](const marchproxy::Route& a, const marchproxy::Route& b) {
                       const marchproxy::Route& x = query.sort_desc() ? b : a;
                       const marchproxy::Route& y = query.sort_desc() ? a : b;
                       if (numeric) return x.priority() < y.priority();
                       return *RouteField(x, query.sort_by()) < *RouteField(y, query.sort_by());
                     });
  }

  const marchproxy::Pagination& asked = query.pagination();
  if (asked.page() < 0 || asked.page_size() < 0) {
    return absl::InvalidArgumentError("pagination.page and pagination.page_size must be >= 0");
  }
  const int64_t total = static_cast<int64_t>(kept.size());
  // page_size 0 = everything on one page; page is 1-based and 0 means the first.
  const int64_t page_size = asked.page_size() > 0 ? asked.page_size() : std::max<int64_t>(total, 1);
  const int64_t page = asked.page_size() > 0 ? std::max(asked.page(), 1) : 1;
  const int64_t first = std::min(total, (page - 1) * page_size);
  const int64_t last = std::min(total, first + page_size);
  routes->assign(std::make_move_iterator(kept.begin() + first),
                 std::make_move_iterator(kept.begin() + last));
  pagination->set_page(static_cast<int32_t>(page));
  pagination->set_page_size(static_cast<int32_t>(page_size));
  pagination->set_total_items(static_cast<int32_t>(total));
  pagination->set_total_pages(static_cast<int32_t>((total + page_size - 1) / page_size));
  return absl::OkStatus();
}

// "sha256:<hex>" or "<hex>", any case.
bool ChecksumMatches(absl::string_view checksum, const std::string& data) {
  std::string expected = absl::AsciiStrToLower(checksum);
  absl::string_view hex = expected;
  absl::ConsumePrefix(&hex, "sha256:");
  return hex == Sha256Hex(data);
}

}  // namespace

ModuleServiceImpl::ModuleServiceImpl(control::ModuleCore& core, std::string auth_token)
    : core_(core), token_hash_(auth_token.empty() ? "" : Sha256Hex(auth_token)) {}

ModuleServiceImpl::~ModuleServiceImpl() {
  std::vector<std::thread> deferred;
  {
    std::lock_guard lock(mu_);
    deferred.swap(deferred_);
  }
  for (std::thread& thread : deferred) {
    // The deferred shutdown request may be what destroys the server: never join oneself.
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
}

void ModuleServiceImpl::SetAddress(std::string address) {
  std::lock_guard lock(mu_);
  address_ = std::move(address);
}

std::string ModuleServiceImpl::Address() const {
  std::lock_guard lock(mu_);
  return address_;
}

void ModuleServiceImpl::StopStreams() {
  {
    std::lock_guard lock(mu_);
    streams_stopped_ = true;
  }
  streams_cv_.notify_all();
}

Status ModuleServiceImpl::Authorize(const grpc::ServerContextBase& context) const {
  if (token_hash_.empty()) return Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return GrpcError(absl::StatusCode::kUnauthenticated,
                     "missing metadata 'authorization: Bearer <token>' (AILB_CONTROL_TOKEN)");
  }
  absl::string_view value =
      absl::StripAsciiWhitespace(absl::string_view(it->second.data(), it->second.size()));
  std::string presented;
  if (absl::StartsWithIgnoreCase(value, "bearer ")) {
    presented = std::string(absl::StripAsciiWhitespace(value.substr(7)));
  }
  // Compare digests: equal lengths, so the comparison time says nothing about the token.
  if (presented.empty() || !ConstantTimeEquals(Sha256Hex(presented), token_hash_)) {
    return GrpcError(absl::StatusCode::kUnauthenticated, "invalid control-plane token");
  }
  return Status::OK;
}

// Asked every time rather than cached: a reload may change MODULE_ID.
std::string ModuleServiceImpl::ModuleId() { return core_.InstanceId(); }

Status ModuleServiceImpl::CheckInstance(const std::string& requested,
                                        const std::string& own) const {
  if (requested.empty() || requested == own) return Status::OK;
  return GrpcError(absl::StatusCode::kNotFound,
                   absl::StrCat("instance '", requested, "' is not this module ('", own, "')"));
}

Status ModuleServiceImpl::CheckInstance(const std::string& requested) {
  // Only a named instance costs a look-up.
  if (requested.empty()) return Status::OK;
  return CheckInstance(requested, ModuleId());
}

void ModuleServiceImpl::FillModuleMetrics(const std::vector<std::string>& names,
                                          marchproxy::ModuleMetrics* out) {
  const std::vector<metrics::Sample> samples = core_.Metrics(names);
  const WallTime now = Now();
  out->set_instance_id(ModuleId());
  out->set_module_type(marchproxy::MODULE_TYPE_AILB);
  for (const metrics::Sample& sample : samples) {
    ToMetricDataPoint(sample, now, out->add_metrics());
  }
  SetTimestamp(now, out->mutable_collected_at());
}

void ModuleServiceImpl::RunAfterReply(std::function<void()> task) {
  std::lock_guard lock(mu_);
  deferred_.emplace_back(std::move(task));
}

// --- Status and health ------------------------------------------------------------------------

Status ModuleServiceImpl::GetStatus(grpc::ServerContext* context,
                                    const marchproxy::GetStatusRequest* request,
                                    marchproxy::GetStatusResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  control::StatusReport report = core_.Status();
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id(), report.instance.instance_id));
  if (report.instance.address.empty()) report.instance.address = Address();
  ToModuleInstance(report.instance, response->mutable_instance());
  response->set_status(ToHealthStatus(report.status));
  response->set_message(report.message);
  SetTimestamp(report.checked_at, response->mutable_last_updated());
  response->mutable_details()->insert(report.details.begin(), report.details.end());
  return Status::OK;
}

Status ModuleServiceImpl::HealthCheck(grpc::ServerContext* context,
                                      const marchproxy::HealthCheckRequest* request,
                                      marchproxy::HealthCheckResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  // Before the check: a deep one probes every deployment.
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  control::StatusReport report = core_.HealthCheck(request->deep_check());
  response->set_status(ToHealthStatus(report.status));
  response->set_message(report.message);
  response->mutable_checks()->insert(report.details.begin(), report.details.end());
  SetTimestamp(report.checked_at, response->mutable_checked_at());
  return Status::OK;
}

Status ModuleServiceImpl::GetInstances(grpc::ServerContext* context,
                                       const marchproxy::GetInstancesRequest* request,
                                       marchproxy::GetInstancesResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  // A module knows only itself; the NLB aggregates instances across modules.
  const marchproxy::ModuleType type = request->module_type();
  if (type == marchproxy::MODULE_TYPE_UNSPECIFIED || type == marchproxy::MODULE_TYPE_AILB) {
    control::StatusReport report = core_.Status();
    if (report.instance.address.empty()) report.instance.address = Address();
    marchproxy::ModuleInstance instance;
    ToModuleInstance(report.instance, &instance);
    if (request->status_filter() == marchproxy::HEALTH_STATUS_UNSPECIFIED ||
        request->status_filter() == instance.health_status()) {
      *response->add_instances() = std::move(instance);
    }
  }
  response->set_total_instances(response->instances_size());
  return Status::OK;
}

// --- Metrics and stats ------------------------------------------------------------------------

Status ModuleServiceImpl::GetMetrics(grpc::ServerContext* context,
                                     const marchproxy::GetMetricsRequest* request,
                                     marchproxy::GetMetricsResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  // Values are current readings: start_time/end_time are accepted but the module keeps no
  // history (Prometheus scraping /metrics does).
  const std::vector<std::string> names(request->metric_names().begin(),
                                       request->metric_names().end());
  FillModuleMetrics(names, response->mutable_metrics());
  *response->mutable_collected_at() = response->metrics().collected_at();
  return Status::OK;
}

Status ModuleServiceImpl::StreamMetrics(
    grpc::ServerContext* context, const marchproxy::StreamMetricsRequest* request,
    grpc::ServerWriter<marchproxy::StreamMetricsResponse>* writer) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const int interval_seconds =
      request->interval_seconds() <= 0
          ? kDefaultStreamIntervalSeconds
          : std::min(request->interval_seconds(), kMaxStreamIntervalSeconds);
  const std::chrono::seconds interval(interval_seconds);
  const std::vector<std::string> names(request->metric_names().begin(),
                                       request->metric_names().end());
  // Each stream holds a server thread for its whole life: bound them, so that streams cannot
  // starve the unary calls the NLB's health checks depend on.
  {
    std::lock_guard lock(mu_);
    if (open_streams_ >= kMaxMetricStreams) {
      return GrpcError(absl::StatusCode::kResourceExhausted,
                       absl::StrCat("too many metric streams open (", kMaxMetricStreams, ")"));
    }
    ++open_streams_;
  }
  absl::Cleanup release_slot = [this] {
    std::lock_guard lock(mu_);
    --open_streams_;
  };
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (streams_stopped_) break;
    }
    marchproxy::StreamMetricsResponse message;
    FillModuleMetrics(names, message.mutable_metrics());
    *message.mutable_timestamp() = message.metrics().collected_at();
    // Write fails once the client has gone.
    if (!writer->Write(message)) return Status::CANCELLED;

    const auto deadline = std::chrono::steady_clock::now() + interval;
    std::unique_lock lock(mu_);
    while (!streams_stopped_) {
      if (context->IsCancelled()) return Status::CANCELLED;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      streams_cv_.wait_for(
          lock, std::min<std::chrono::steady_clock::duration>(deadline - now, kStreamPollStep));
    }
  }
  return GrpcError(absl::StatusCode::kUnavailable, "the control server is shutting down");
}

Status ModuleServiceImpl::GetStats(grpc::ServerContext* context,
                                   const marchproxy::GetStatsRequest* request,
                                   marchproxy::GetStatsResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const control::StatsReport report = core_.Stats(request->reset_counters());
  ToModuleStats(report, ModuleId(), response->mutable_stats());
  return Status::OK;
}

// --- Blue/green -------------------------------------------------------------------------------

Status ModuleServiceImpl::SetTrafficWeight(grpc::ServerContext* context,
                                           const marchproxy::SetTrafficWeightRequest* request,
                                           marchproxy::SetTrafficWeightResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (request->version().empty()) return InvalidArgument("version is required");
  if (request->weight() < 0 || request->weight() > 100) {
    return InvalidArgument(
        absl::StrCat("weight must be within 0..100 (percent), got ", request->weight()));
  }
  absl::StatusOr<control::BlueGreenState> state =
      core_.SetTrafficWeight(request->version(), request->weight());
  if (!state.ok()) return ToGrpcStatus(state.status());
  response->set_success(true);
  response->set_message(absl::StrCat("version '", request->version(), "' now receives ",
                                     request->weight(), "% of traffic; active version '",
                                     state->active_version, "'"));
  ToBlueGreenConfig(*state, response->mutable_current_config());
  return Status::OK;
}

Status ModuleServiceImpl::GetActiveVersion(grpc::ServerContext* context,
                                           const marchproxy::GetActiveVersionRequest* request,
                                           marchproxy::GetActiveVersionResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const control::BlueGreenState state = core_.BlueGreen();
  response->set_active_version(state.active_version);
  ToBlueGreenConfig(state, response->mutable_config());
  response->mutable_version_weights()->insert(state.weights.begin(), state.weights.end());
  return Status::OK;
}

Status ModuleServiceImpl::Rollback(grpc::ServerContext* context,
                                   const marchproxy::RollbackRequest* request,
                                   marchproxy::RollbackResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const std::string previous = core_.BlueGreen().active_version;
  absl::StatusOr<control::BlueGreenState> state = core_.Rollback(request->target_version());
  if (!state.ok()) return ToGrpcStatus(state.status());
  response->set_success(true);
  response->set_previous_version(previous);
  response->set_current_version(state->active_version);
  response->set_message(
      request->target_version().empty()
          ? absl::StrCat("restored the weights before the last change; active version '",
                         state->active_version, "'")
          : absl::StrCat("all traffic to version '", request->target_version(), "'"));
  return Status::OK;
}

Status ModuleServiceImpl::PromoteVersion(grpc::ServerContext* context,
                                         const marchproxy::PromoteVersionRequest* request,
                                         marchproxy::PromoteVersionResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (request->promotion_rate() < 0 || request->promotion_rate() > 100) {
    return InvalidArgument(
        absl::StrCat("promotion_rate must be within 0..100 (percent per step), got ",
                     request->promotion_rate()));
  }
  absl::StatusOr<control::BlueGreenState> state =
      core_.Promote(request->version(), request->immediate(), request->promotion_rate());
  if (!state.ok()) return ToGrpcStatus(state.status());
  const std::string promoted =
      request->version().empty() ? state->green_version : request->version();
  auto weight = state->weights.find(promoted);
  const int now_percent = weight == state->weights.end() ? 0 : weight->second;
  response->set_success(true);
  response->set_promoted_version(promoted);
  response->set_message(
      state->promotion_in_progress
          ? absl::StrCat("promoting '", promoted, "' by ", request->promotion_rate(),
                         "% per step; now ", now_percent, "%")
          : absl::StrCat("promoted '", promoted, "': ", now_percent, "% of traffic"));
  return Status::OK;
}

// --- Configuration ----------------------------------------------------------------------------

Status ModuleServiceImpl::Reload(grpc::ServerContext* context,
                                 const marchproxy::ReloadRequest* request,
                                 marchproxy::ReloadResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  // A reload is always graceful (requests in flight finish on the configuration they started
  // with), so `graceful` and `timeout_seconds` have nothing to change.
  const control::ConfigUpdateResult result = core_.Reload();
  if (!result.validation_passed) {
    return GrpcError(absl::StatusCode::kFailedPrecondition,
                     absl::StrCat("the configuration file is invalid; still running the previous "
                                  "one: ",
                                  absl::StrJoin(result.errors, "; ")));
  }
  if (!result.applied) {
    return GrpcError(absl::StatusCode::kFailedPrecondition,
                     result.message.empty() ? "the configuration was not applied" : result.message);
  }
  response->set_success(true);
  response->set_message(result.message.empty() ? "configuration reloaded" : result.message);
  return Status::OK;
}

Status ModuleServiceImpl::GetConfig(grpc::ServerContext* context,
                                    const marchproxy::GetConfigRequest* request,
                                    marchproxy::GetConfigResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const control::ConfigDocument document = core_.CurrentConfig();
  // There is one document; a config_type filter naming another type selects nothing.
  const std::string wanted = absl::AsciiStrToLower(request->config_type());
  const std::string type = absl::AsciiStrToLower(document.config_type);
  const bool yaml_alias =
      (wanted == "yml" && type == "yaml") || (wanted == "yaml" && type == "yml");
  if (wanted.empty() || wanted == type || yaml_alias) {
    ToConfigUpdate(document, response->add_configs());
  }
  SetTimestamp(document.updated_at, response->mutable_last_updated());
  return Status::OK;
}

Status ModuleServiceImpl::UpdateConfig(grpc::ServerContext* context,
                                       const marchproxy::UpdateConfigRequest* request,
                                       marchproxy::UpdateConfigResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  const marchproxy::ConfigUpdate& config = request->config();
  if (config.config_data().empty()) {
    return InvalidArgument("config.config_data is required (the YAML or JSON document)");
  }
  const std::string type = absl::AsciiStrToLower(config.config_type());
  if (!type.empty() && type != "yaml" && type != "yml" && type != "json") {
    return InvalidArgument(
        absl::StrCat("config.config_type '", config.config_type(), "': expected yaml or json"));
  }
  if (!config.checksum().empty() && !ChecksumMatches(config.checksum(), config.config_data())) {
    return InvalidArgument("config.checksum is not the sha256 of config.config_data");
  }
  const control::ConfigUpdateResult result =
      core_.UpdateConfig(config.config_data(), request->validate_only());
  response->set_validation_passed(result.validation_passed);
  response->mutable_validation_errors()->Add(result.errors.begin(), result.errors.end());
  const std::string errors = absl::StrJoin(result.errors, "; ");
  if (request->validate_only()) {
    // Asked for a verdict: a failed validation is the answer, not an RPC error.
    if (result.validation_passed) {
      response->set_success(true);
      response->set_message(result.message.empty() ? "configuration is valid" : result.message);
    } else {
      SetFailure(absl::InvalidArgumentError(absl::StrCat("configuration is invalid: ", errors)),
                 response);
    }
    return Status::OK;
  }
  if (!result.validation_passed) {
    return InvalidArgument(absl::StrCat("configuration is invalid: ", errors));
  }
  if (!result.applied) {
    return GrpcError(absl::StatusCode::kFailedPrecondition,
                     result.message.empty() ? "the configuration was not applied" : result.message);
  }
  response->set_success(true);
  response->set_message(result.message.empty() ? "configuration applied" : result.message);
  return Status::OK;
}

// --- Rate limits ------------------------------------------------------------------------------

Status ModuleServiceImpl::GetRateLimits(grpc::ServerContext* context,
                                        const marchproxy::GetRateLimitsRequest* request,
                                        marchproxy::GetRateLimitsResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  for (const ratelimit::RateLimitSpec& spec : core_.rate_limiter().List(request->target())) {
    ToRateLimit(spec, response->add_limits());
  }
  response->set_total_limits(response->limits_size());
  return Status::OK;
}

Status ModuleServiceImpl::SetRateLimit(grpc::ServerContext* context,
                                       const marchproxy::SetRateLimitRequest* request,
                                       marchproxy::SetRateLimitResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (!request->has_limit()) return InvalidArgument("limit is required");
  absl::StatusOr<std::string> id = core_.rate_limiter().Set(FromRateLimit(request->limit()));
  if (!id.ok()) return ToGrpcStatus(id.status());
  response->set_success(true);
  // The id alone, so that clients can keep it for RemoveRateLimit.
  response->set_message(*id);
  return Status::OK;
}

Status ModuleServiceImpl::RemoveRateLimit(grpc::ServerContext* context,
                                          const marchproxy::RemoveRateLimitRequest* request,
                                          marchproxy::RemoveRateLimitResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (request->limit_id().empty()) return InvalidArgument("limit_id is required");
  AILB_RPC_RETURN_IF_ERROR(ToGrpcStatus(core_.rate_limiter().Remove(request->limit_id())));
  response->set_success(true);
  response->set_message(absl::StrCat("removed rate limit '", request->limit_id(), "'"));
  return Status::OK;
}

// --- Routes -----------------------------------------------------------------------------------

Status ModuleServiceImpl::GetRoutes(grpc::ServerContext* context,
                                    const marchproxy::GetRoutesRequest* request,
                                    marchproxy::GetRoutesResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  std::vector<marchproxy::Route> routes;
  for (const control::RouteInfo& info : core_.Routes()) ToRoute(info, &routes.emplace_back());
  AILB_RPC_RETURN_IF_ERROR(
      ToGrpcStatus(ApplyQuery(request->query(), &routes, response->mutable_pagination())));
  response->set_total_routes(response->pagination().total_items());
  for (marchproxy::Route& route : routes) *response->add_routes() = std::move(route);
  return Status::OK;
}

Status ModuleServiceImpl::UpdateRoutes(grpc::ServerContext* context,
                                       const marchproxy::UpdateRoutesRequest* request,
                                       marchproxy::UpdateRoutesResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  std::vector<control::RouteInfo> routes;
  for (int i = 0; i < request->routes_size(); ++i) {
    absl::StatusOr<control::RouteInfo> route = FromRoute(request->routes(i));
    if (!route.ok()) {
      return InvalidArgument(absl::StrCat("routes[", i, "]: ", route.status().message()));
    }
    routes.push_back(*std::move(route));
  }
  absl::StatusOr<int> updated = core_.UpdateRoutes(routes, request->replace_all());
  if (!updated.ok()) return ToGrpcStatus(updated.status());
  response->set_success(true);
  response->set_routes_updated(*updated);
  response->set_message(absl::StrCat(request->replace_all() ? "replaced all aliases; " : "",
                                     *updated, " route(s) updated"));
  return Status::OK;
}

Status ModuleServiceImpl::DeleteRoute(grpc::ServerContext* context,
                                      const marchproxy::DeleteRouteRequest* request,
                                      marchproxy::DeleteRouteResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (request->route_id().empty()) return InvalidArgument("route_id is required");
  AILB_RPC_RETURN_IF_ERROR(ToGrpcStatus(core_.DeleteRoute(request->route_id())));
  response->set_success(true);
  response->set_message(absl::StrCat("deleted route '", request->route_id(), "'"));
  return Status::OK;
}

Status ModuleServiceImpl::CanHandle(grpc::ServerContext* context,
                                    const marchproxy::CanHandleRequest* request,
                                    marchproxy::CanHandleResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  const marchproxy::Route& route = request->route();
  std::string model;
  if (auto it = route.metadata().find(kRouteModelKey); it != route.metadata().end()) {
    model = it->second;
  }
  if (model.empty()) {
    if (auto it = request->context().find("model"); it != request->context().end()) {
      model = it->second;
    }
  }
  const control::CanHandleResult result = core_.CanHandle(route.path_pattern(), model);
  response->set_can_handle(result.can_handle);
  response->set_priority(result.priority);
  response->set_reason(result.reason);
  (*response->mutable_metadata())["path"] = route.path_pattern();
  (*response->mutable_metadata())["model"] = model;
  return Status::OK;
}

// --- Lifecycle and scaling --------------------------------------------------------------------

grpc::ServerUnaryReactor* ModuleServiceImpl::Shutdown(grpc::CallbackServerContext* context,
                                                      const marchproxy::ShutdownRequest* request,
                                                      marchproxy::ShutdownResponse* response) {
  Status status = Authorize(*context);
  if (status.ok()) status = CheckInstance(request->instance_id());
  if (status.ok() && request->timeout_seconds() < 0) {
    status = InvalidArgument("timeout_seconds must be >= 0 (0 = the configured drain timeout)");
  }
  std::function<void()> after;
  if (status.ok()) {
    const bool graceful = request->graceful();
    const int timeout_seconds = request->timeout_seconds();
    response->set_success(true);
    response->set_message(graceful
                              ? absl::StrCat("shutting down gracefully (draining for up to ",
                                             timeout_seconds == 0 ? std::string("the configured")
                                                                  : absl::StrCat(timeout_seconds),
                                             " seconds)")
                              : std::string("shutting down now"));
    // On a thread of our own: the core's shutdown stops this server, which waits for gRPC's
    // callback threads, OnDone's among them.
    after = [this, graceful, timeout_seconds] {
      RunAfterReply(
          [this, graceful, timeout_seconds] { core_.RequestShutdown(graceful, timeout_seconds); });
    };
  }
  auto* reactor = new AfterReplyReactor(std::move(after));
  reactor->Finish(status);
  return reactor;
}

Status ModuleServiceImpl::Scale(grpc::ServerContext* context,
                                const marchproxy::ScaleRequest* request,
                                marchproxy::ScaleResponse* response) {
  AILB_RPC_RETURN_IF_ERROR(Authorize(*context));
  AILB_RPC_RETURN_IF_ERROR(CheckInstance(request->instance_id()));
  if (!request->has_config()) return InvalidArgument("config is required");
  const marchproxy::ScalingConfig& config = request->config();
  if (config.min_instances() < 0 || config.max_instances() < 0 || config.cooldown_seconds() < 0 ||
      config.target_connections() < 0) {
    return InvalidArgument("instance counts, target_connections and cooldown_seconds must be >= 0");
  }
  if (config.max_instances() > 0 && config.min_instances() > config.max_instances()) {
    return InvalidArgument(absl::StrCat("min_instances ", config.min_instances(),
                                        " exceeds max_instances ", config.max_instances()));
  }
  for (int percent : {config.target_cpu_percent(), config.target_memory_percent(),
                      config.scale_up_threshold(), config.scale_down_threshold()}) {
    if (percent < 0 || percent > 100) {
      return InvalidArgument("target_*_percent and scale_*_threshold must be within 0..100");
    }
  }
  core_.RecordScaling(FromScalingConfig(config));
  // max_instances 0 = no upper bound given.
  const int upper = config.max_instances() > 0 ? config.max_instances() : INT_MAX;
  response->set_success(true);
  response->set_current_instances(1);
  response->set_desired_instances(std::clamp(1, config.min_instances(), upper));
  response->set_message(
      "a single AILB module cannot add instances itself: the scaling configuration was recorded "
      "for the orchestrator (scale on the ai_requests_per_minute gauge)");
  return Status::OK;
}

}  // namespace ailb::server::control_rpc
