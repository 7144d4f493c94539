// ControlServer end to end: a real server on a loopback port over FakeModuleCore, called through
// the generated C++ stubs, so translation, error codes, auth, streaming and health are checked as
// a client sees them.
#include "ailb/server/control_server.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/common/hash.h"
#include "fakes/fake_module_core.h"
#include "gmock/gmock.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "marchproxy/module_service.grpc.pb.h"

namespace ailb::server {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr char kToken[] = "s3cret-token";

// The marchproxy.Error packed in a failed call's grpc-status-details-bin (a google.rpc.Status).
std::optional<marchproxy::Error> ErrorDetails(const grpc::Status& status) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(status.error_details())) return std::nullopt;
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& field = fields.field(i);
    if (field.number() != 3 ||
        field.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      continue;
    }
    google::protobuf::Any any;
    marchproxy::Error error;
    if (any.ParseFromString(field.length_delimited()) && any.UnpackTo(&error)) return error;
  }
  return std::nullopt;
}

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(""); }

  void StartServer(const std::string& token) {
    stub_.reset();
    server_.reset();
    token_ = token;
    ControlServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.auth_token = token;
    auto started = ControlServer::Start(options, core_);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = marchproxy::ModuleService::NewStub(channel_);
  }

  // A context with a deadline and, when the server has a token, the credentials.
  std::unique_ptr<grpc::ClientContext> Context(bool with_token = true) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (with_token && !token_.empty()) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    }
    return context;
  }

  testing::FakeModuleCore core_;  // outlives the server, which calls into it
  std::string token_;
  std::unique_ptr<ControlServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<marchproxy::ModuleService::Stub> stub_;
};

// --- Status and health ------------------------------------------------------------------------

TEST_F(ControlServerTest, GetStatusTranslatesTheReport) {
  marchproxy::GetStatusRequest request;
  marchproxy::GetStatusResponse response;
  grpc::Status status = stub_->GetStatus(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const marchproxy::ModuleInstance& instance = response.instance();
  EXPECT_EQ(instance.instance_id(), "ailb-test-1");
  EXPECT_EQ(instance.module_type(), marchproxy::MODULE_TYPE_AILB);
  // The fake does not know the address: the server fills in where it listens.
  EXPECT_EQ(instance.address(), absl::StrCat("127.0.0.1:", server_->port()));
  EXPECT_EQ(instance.health_status(), marchproxy::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(instance.started_at().seconds(), 1'700'000'000);
  EXPECT_EQ(instance.current_connections(), 3);
  EXPECT_EQ(instance.max_connections(), 100);
  EXPECT_EQ(instance.version(), "v1");
  EXPECT_EQ(instance.traffic_weight(), 100);
  EXPECT_THAT(instance.metadata(), UnorderedElementsAre(Pair("region", "test")));
  EXPECT_EQ(response.status(), marchproxy::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(response.message(), "all deployments healthy");
  EXPECT_GT(response.last_updated().seconds(), 1'700'000'000);
  EXPECT_THAT(response.details(), Contains(Pair("num_connectors", "2")));
  EXPECT_THAT(response.details(), Contains(Pair("rag_enabled", "false")));
}

TEST_F(ControlServerTest, HealthMapsEveryModuleHealth) {
  const std::vector<std::pair<control::ModuleHealth, marchproxy::HealthStatus>> cases = {
      {control::ModuleHealth::kHealthy, marchproxy::HEALTH_STATUS_HEALTHY},
      {control::ModuleHealth::kDegraded, marchproxy::HEALTH_STATUS_DEGRADED},
      {control::ModuleHealth::kUnhealthy, marchproxy::HEALTH_STATUS_UNHEALTHY},
      {control::ModuleHealth::kStarting, marchproxy::HEALTH_STATUS_STARTING},
      {control::ModuleHealth::kStopping, marchproxy::HEALTH_STATUS_STOPPING},
  };
  for (const auto& [health, expected] : cases) {
    core_.SetHealth(health, "why");
    marchproxy::GetStatusResponse status;
    ASSERT_TRUE(stub_->GetStatus(Context().get(), {}, &status).ok());
    EXPECT_EQ(status.status(), expected);
    EXPECT_EQ(status.instance().health_status(), expected);
    marchproxy::HealthCheckResponse check;
    ASSERT_TRUE(stub_->HealthCheck(Context().get(), {}, &check).ok());
    EXPECT_EQ(check.status(), expected);
    EXPECT_EQ(check.message(), "why");
  }
}

TEST_F(ControlServerTest, HealthCheckPassesDeepAndReturnsChecks) {
  marchproxy::HealthCheckRequest request;
  request.set_deep_check(true);
  marchproxy::HealthCheckResponse response;
  ASSERT_TRUE(stub_->HealthCheck(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "HealthCheck(deep=1)");
  EXPECT_THAT(response.checks(), Contains(Pair("deployment:gpt-4o", "ok")));
  EXPECT_GT(response.checked_at().seconds(), 0);

  request.set_deep_check(false);
  ASSERT_TRUE(stub_->HealthCheck(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "HealthCheck(deep=0)");
}

TEST_F(ControlServerTest, AnotherInstanceIdIsNotFound) {
  marchproxy::GetStatusRequest status_request;
  status_request.set_instance_id("ailb-test-1");
  marchproxy::GetStatusResponse status_response;
  EXPECT_TRUE(stub_->GetStatus(Context().get(), status_request, &status_response).ok());
  status_request.set_instance_id("someone-else");
  EXPECT_EQ(stub_->GetStatus(Context().get(), status_request, &status_response).error_code(),
            grpc::StatusCode::NOT_FOUND);

  marchproxy::SetTrafficWeightRequest weight;
  weight.set_instance_id("someone-else");
  weight.set_version("v2");
  weight.set_weight(10);
  marchproxy::SetTrafficWeightResponse weight_response;
  EXPECT_EQ(stub_->SetTrafficWeight(Context().get(), weight, &weight_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(core_.CallCount("SetTrafficWeight"), 0);

  marchproxy::HealthCheckRequest health;
  health.set_instance_id("someone-else");
  health.set_deep_check(true);
  marchproxy::HealthCheckResponse health_response;
  EXPECT_EQ(stub_->HealthCheck(Context().get(), health, &health_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(core_.CallCount("HealthCheck"), 0) << "a deep check must not run for another id";
}

TEST_F(ControlServerTest, InstanceIdFollowsAReloadWithoutAGetStatus) {
  marchproxy::GetStatusRequest status_request;
  marchproxy::GetStatusResponse status_response;
  ASSERT_TRUE(stub_->GetStatus(Context().get(), status_request, &status_response).ok());
  EXPECT_EQ(status_response.instance().instance_id(), "ailb-test-1");

  core_.SetInstanceId("ailb-renamed");  // e.g. a reload changed MODULE_ID
  marchproxy::GetMetricsRequest metrics_request;
  marchproxy::GetMetricsResponse metrics_response;
  ASSERT_TRUE(stub_->GetMetrics(Context().get(), metrics_request, &metrics_response).ok());
  EXPECT_EQ(metrics_response.metrics().instance_id(), "ailb-renamed");
  marchproxy::GetStatsResponse stats_response;
  ASSERT_TRUE(stub_->GetStats(Context().get(), {}, &stats_response).ok());
  EXPECT_EQ(stats_response.stats().instance_id(), "ailb-renamed");

  marchproxy::SetTrafficWeightRequest weight;
  weight.set_version("v2");
  weight.set_weight(10);
  marchproxy::SetTrafficWeightResponse weight_response;
  weight.set_instance_id("ailb-test-1");
  EXPECT_EQ(stub_->SetTrafficWeight(Context().get(), weight, &weight_response).error_code(),
            grpc::StatusCode::NOT_FOUND)
      << "the old id is no longer this instance";
  weight.set_instance_id("ailb-renamed");
  EXPECT_TRUE(stub_->SetTrafficWeight(Context().get(), weight, &weight_response).ok());
  EXPECT_EQ(core_.CallCount("Status"), 1) << "the id is read without a status report";
}

TEST_F(ControlServerTest, GetInstancesFiltersByTypeAndStatus) {
  auto instances = [this](marchproxy::ModuleType type, marchproxy::HealthStatus filter) {
    marchproxy::GetInstancesRequest request;
    request.set_module_type(type);
    request.set_status_filter(filter);
    marchproxy::GetInstancesResponse response;
    EXPECT_TRUE(stub_->GetInstances(Context().get(), request, &response).ok());
    EXPECT_EQ(response.total_instances(), response.instances_size());
    return response;
  };
  marchproxy::GetInstancesResponse all =
      instances(marchproxy::MODULE_TYPE_UNSPECIFIED, marchproxy::HEALTH_STATUS_UNSPECIFIED);
  ASSERT_EQ(all.instances_size(), 1);
  EXPECT_EQ(all.instances(0).instance_id(), "ailb-test-1");
  EXPECT_EQ(all.instances(0).module_type(), marchproxy::MODULE_TYPE_AILB);
  EXPECT_EQ(
      instances(marchproxy::MODULE_TYPE_AILB, marchproxy::HEALTH_STATUS_HEALTHY).instances_size(),
      1);
  EXPECT_EQ(instances(marchproxy::MODULE_TYPE_ALB, marchproxy::HEALTH_STATUS_UNSPECIFIED)
                .instances_size(),
            0);
  EXPECT_EQ(
      instances(marchproxy::MODULE_TYPE_AILB, marchproxy::HEALTH_STATUS_UNHEALTHY).instances_size(),
      0);
}

// --- Metrics and stats ------------------------------------------------------------------------

TEST_F(ControlServerTest, GetMetricsTranslatesSamples) {
  marchproxy::GetMetricsRequest request;
  request.add_metric_names("ailb_requests_total");
  request.add_metric_names("ai_requests_per_minute");
  marchproxy::GetMetricsResponse response;
  ASSERT_TRUE(stub_->GetMetrics(Context().get(), request, &response).ok());
  EXPECT_THAT(core_.Calls(), Contains("Metrics(ailb_requests_total,ai_requests_per_minute)"));
  const marchproxy::ModuleMetrics& metrics = response.metrics();
  EXPECT_EQ(metrics.instance_id(), "ailb-test-1");
  EXPECT_EQ(metrics.module_type(), marchproxy::MODULE_TYPE_AILB);
  ASSERT_EQ(metrics.metrics_size(), 2);
  std::map<std::string, marchproxy::MetricDataPoint> by_name;
  for (const auto& point : metrics.metrics()) by_name[point.name()] = point;
  EXPECT_DOUBLE_EQ(by_name["ai_requests_per_minute"].value(), 12);
  EXPECT_DOUBLE_EQ(by_name["ailb_requests_total"].value(), 42);
  EXPECT_THAT(by_name["ailb_requests_total"].labels(),
              UnorderedElementsAre(Pair("model", "gpt-4o")));
  EXPECT_GT(by_name["ailb_requests_total"].timestamp().seconds(), 0);
  EXPECT_EQ(response.collected_at().seconds(), metrics.collected_at().seconds());

  // No names: everything.
  ASSERT_TRUE(stub_->GetMetrics(Context().get(), {}, &response).ok());
  EXPECT_EQ(response.metrics().metrics_size(), 3);
}

TEST_F(ControlServerTest, GetStatsTranslatesTheWindowAndPassesReset) {
  marchproxy::GetStatsRequest request;
  marchproxy::GetStatsResponse response;
  ASSERT_TRUE(stub_->GetStats(Context().get(), request, &response).ok());
  EXPECT_THAT(core_.Calls(), Contains("Stats(reset=0)"));
  const marchproxy::ModuleStats& stats = response.stats();
  EXPECT_EQ(stats.instance_id(), "ailb-test-1");
  EXPECT_EQ(stats.total_requests(), 100);
  EXPECT_EQ(stats.successful_requests(), 95);
  EXPECT_EQ(stats.failed_requests(), 5);
  EXPECT_EQ(stats.active_connections(), 3);
  EXPECT_EQ(stats.total_connections(), 57);
  EXPECT_DOUBLE_EQ(stats.avg_latency_ms(), 120.5);
  EXPECT_DOUBLE_EQ(stats.p50_latency_ms(), 100);
  EXPECT_DOUBLE_EQ(stats.p95_latency_ms(), 250);
  EXPECT_DOUBLE_EQ(stats.p99_latency_ms(), 400);
  EXPECT_EQ(stats.bytes_received(), 1000);
  EXPECT_EQ(stats.bytes_sent(), 2000);
  EXPECT_DOUBLE_EQ(stats.cpu_usage_percent(), 1.5);
  EXPECT_DOUBLE_EQ(stats.memory_usage_mb(), 64);
  EXPECT_EQ(stats.since().seconds(), 1'700'000'000);
  EXPECT_THAT(stats.custom_stats(), UnorderedElementsAre(Pair("streams_open", "1")));

  request.set_reset_counters(true);
  ASSERT_TRUE(stub_->GetStats(Context().get(), request, &response).ok());
  EXPECT_THAT(core_.Calls(), Contains("Stats(reset=1)"));
  ASSERT_TRUE(stub_->GetStats(Context().get(), {}, &response).ok());
  EXPECT_EQ(response.stats().total_requests(), 0);
  EXPECT_GT(response.stats().since().seconds(), 1'700'000'000);
}

TEST_F(ControlServerTest, StreamMetricsPushesEveryIntervalUntilCancelled) {
  marchproxy::StreamMetricsRequest request;
  request.set_interval_seconds(1);
  request.add_metric_names("ai_requests_per_minute");
  grpc::ClientContext context;
  const auto started = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<marchproxy::StreamMetricsResponse>> reader =
      stub_->StreamMetrics(&context, request);
  marchproxy::StreamMetricsResponse message;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(reader->Read(&message)) << "message " << i;
    ASSERT_EQ(message.metrics().metrics_size(), 1);
    EXPECT_EQ(message.metrics().metrics(0).name(), "ai_requests_per_minute");
    EXPECT_GT(message.timestamp().seconds(), 0);
  }
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_GE(elapsed, std::chrono::milliseconds(900)) << "the second message waits one interval";
  EXPECT_LT(elapsed, std::chrono::seconds(3));

  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server side noticed: it stops collecting.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int calls = core_.CallCount("Metrics");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(core_.CallCount("Metrics"), calls);
}

TEST_F(ControlServerTest, MetricStreamsAreBounded) {
  marchproxy::StreamMetricsRequest request;
  request.set_interval_seconds(60);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<marchproxy::StreamMetricsResponse>>> readers;
  marchproxy::StreamMetricsResponse message;
  for (int i = 0; i < 16; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->StreamMetrics(contexts.back().get(), request));
    ASSERT_TRUE(readers.back()->Read(&message)) << "stream " << i;
  }
  grpc::ClientContext extra;
  auto refused = stub_->StreamMetrics(&extra, request);
  EXPECT_FALSE(refused->Read(&message));
  EXPECT_EQ(refused->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // A cancelled stream frees its slot.
  contexts[0]->TryCancel();
  while (readers[0]->Read(&message)) {
  }
  EXPECT_EQ(readers[0]->Finish().error_code(), grpc::StatusCode::CANCELLED);
  bool admitted = false;
  for (int attempt = 0; attempt < 50 && !admitted; ++attempt) {
    grpc::ClientContext again;
    auto reader = stub_->StreamMetrics(&again, request);
    admitted = reader->Read(&message);
    again.TryCancel();
    while (reader->Read(&message)) {
    }
    reader->Finish();
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(admitted);
  for (size_t i = 1; i < readers.size(); ++i) {
    contexts[i]->TryCancel();
    while (readers[i]->Read(&message)) {
    }
    readers[i]->Finish();
  }
}

TEST_F(ControlServerTest, ServerShutdownEndsMetricStreams) {
  marchproxy::StreamMetricsRequest request;
  request.set_interval_seconds(60);
  grpc::ClientContext context;
  auto reader = stub_->StreamMetrics(&context, request);
  marchproxy::StreamMetricsResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const auto started = std::chrono::steady_clock::now();
  server_->Shutdown(std::chrono::seconds(10));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// --- Blue/green -------------------------------------------------------------------------------

TEST_F(ControlServerTest, SetTrafficWeightShiftsAndReportsTheSplit) {
  marchproxy::SetTrafficWeightRequest request;
  request.set_version("v2");
  request.set_weight(10);
  marchproxy::SetTrafficWeightResponse response;
  grpc::Status status = stub_->SetTrafficWeight(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(core_.LastCall(), "SetTrafficWeight(v2,10)");
  EXPECT_TRUE(response.success());
  EXPECT_THAT(response.message(), HasSubstr("10%"));
  const marchproxy::BlueGreenConfig& config = response.current_config();
  EXPECT_EQ(config.blue_version(), "v1");
  EXPECT_EQ(config.green_version(), "v2");
  EXPECT_EQ(config.blue_weight(), 90);
  EXPECT_EQ(config.green_weight(), 10);
  EXPECT_EQ(config.active_version(), "v1");
  EXPECT_FALSE(config.canary_enabled());
  EXPECT_GT(config.deployment_started().seconds(), 1'700'000'000);
}

TEST_F(ControlServerTest, SetTrafficWeightRejectsOutOfRangeBeforeTheCore) {
  for (int weight : {101, -1}) {
    marchproxy::SetTrafficWeightRequest request;
    request.set_version("v2");
    request.set_weight(weight);
    marchproxy::SetTrafficWeightResponse response;
    grpc::Status status = stub_->SetTrafficWeight(Context().get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << weight;
    EXPECT_THAT(status.error_message(), HasSubstr("0..100"));
    std::optional<marchproxy::Error> error = ErrorDetails(status);
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), marchproxy::STATUS_CODE_INVALID_ARGUMENT);
    EXPECT_EQ(error->message(), status.error_message());
    EXPECT_THAT(error->details(), Contains(Pair("grpc_code", "INVALID_ARGUMENT")));
    EXPECT_GT(error->occurred_at().seconds(), 0);
  }
  marchproxy::SetTrafficWeightRequest no_version;
  no_version.set_weight(10);
  marchproxy::SetTrafficWeightResponse response;
  EXPECT_EQ(stub_->SetTrafficWeight(Context().get(), no_version, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(core_.CallCount("SetTrafficWeight"), 0);
}

TEST_F(ControlServerTest, UnknownVersionIsNotFound) {
  marchproxy::SetTrafficWeightRequest request;
  request.set_version("v9");
  request.set_weight(10);
  marchproxy::SetTrafficWeightResponse response;
  grpc::Status status = stub_->SetTrafficWeight(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("v9"));
  std::optional<marchproxy::Error> error = ErrorDetails(status);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), marchproxy::STATUS_CODE_NOT_FOUND);

  marchproxy::RollbackRequest rollback;
  rollback.set_target_version("v9");
  marchproxy::RollbackResponse rollback_response;
  EXPECT_EQ(stub_->Rollback(Context().get(), rollback, &rollback_response).error_code(),
            grpc::StatusCode::NOT_FOUND);

  marchproxy::PromoteVersionRequest promote;
  promote.set_version("v9");
  marchproxy::PromoteVersionResponse promote_response;
  EXPECT_EQ(stub_->PromoteVersion(Context().get(), promote, &promote_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ControlServerTest, GetActiveVersionReportsWeights) {
  marchproxy::SetTrafficWeightRequest shift;
  shift.set_version("v2");
  shift.set_weight(60);
  marchproxy::SetTrafficWeightResponse shifted;
  ASSERT_TRUE(stub_->SetTrafficWeight(Context().get(), shift, &shifted).ok());

  marchproxy::GetActiveVersionResponse response;
  ASSERT_TRUE(stub_->GetActiveVersion(Context().get(), {}, &response).ok());
  EXPECT_EQ(response.active_version(), "v2");
  EXPECT_THAT(response.version_weights(), UnorderedElementsAre(Pair("v1", 40), Pair("v2", 60)));
  EXPECT_EQ(response.config().active_version(), "v2");
  EXPECT_EQ(response.config().blue_weight(), 40);
  EXPECT_EQ(response.config().green_weight(), 60);
}

TEST_F(ControlServerTest, RollbackRestoresAndReportsVersions) {
  marchproxy::RollbackResponse response;
  // Nothing to roll back to yet.
  EXPECT_EQ(stub_->Rollback(Context().get(), {}, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  marchproxy::SetTrafficWeightRequest shift;
  shift.set_version("v2");
  shift.set_weight(80);
  marchproxy::SetTrafficWeightResponse shifted;
  ASSERT_TRUE(stub_->SetTrafficWeight(Context().get(), shift, &shifted).ok());

  grpc::Status status = stub_->Rollback(Context().get(), {}, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(core_.LastCall(), "Rollback()");
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.previous_version(), "v2");
  EXPECT_EQ(response.current_version(), "v1");

  marchproxy::RollbackRequest to_v2;
  to_v2.set_target_version("v2");
  ASSERT_TRUE(stub_->Rollback(Context().get(), to_v2, &response).ok());
  EXPECT_EQ(core_.LastCall(), "Rollback(v2)");
  EXPECT_EQ(response.previous_version(), "v1");
  EXPECT_EQ(response.current_version(), "v2");
}

TEST_F(ControlServerTest, PromoteVersionValidatesAndTranslates) {
  marchproxy::PromoteVersionRequest request;
  request.set_version("v2");
  request.set_promotion_rate(101);
  marchproxy::PromoteVersionResponse response;
  EXPECT_EQ(stub_->PromoteVersion(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(core_.CallCount("Promote"), 0);

  request.set_promotion_rate(25);
  ASSERT_TRUE(stub_->PromoteVersion(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "Promote(v2,immediate=0,rate=25)");
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.promoted_version(), "v2");
  EXPECT_THAT(response.message(), HasSubstr("25% per step"));
  marchproxy::GetActiveVersionResponse active;
  ASSERT_TRUE(stub_->GetActiveVersion(Context().get(), {}, &active).ok());
  EXPECT_TRUE(active.config().canary_enabled());
  EXPECT_EQ(active.config().canary_percent(), 25);

  request.set_immediate(true);
  request.set_promotion_rate(0);
  ASSERT_TRUE(stub_->PromoteVersion(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "Promote(v2,immediate=1,rate=0)");
  EXPECT_THAT(response.message(), HasSubstr("100%"));
  ASSERT_TRUE(stub_->GetActiveVersion(Context().get(), {}, &active).ok());
  EXPECT_EQ(active.active_version(), "v2");
  EXPECT_FALSE(active.config().canary_enabled());
}

// --- Configuration ----------------------------------------------------------------------------

TEST_F(ControlServerTest, ReloadAndGetConfig) {
  marchproxy::ReloadResponse reload;
  ASSERT_TRUE(stub_->Reload(Context().get(), {}, &reload).ok());
  EXPECT_TRUE(reload.success());
  EXPECT_EQ(reload.message(), "reloaded from disk");
  EXPECT_EQ(core_.LastCall(), "Reload");

  marchproxy::GetConfigResponse config;
  ASSERT_TRUE(stub_->GetConfig(Context().get(), {}, &config).ok());
  ASSERT_EQ(config.configs_size(), 1);
  EXPECT_EQ(config.configs(0).config_id(), "ailb-test-1");
  EXPECT_EQ(config.configs(0).config_type(), "yaml");
  EXPECT_THAT(config.configs(0).config_data(), HasSubstr("model_list"));
  EXPECT_EQ(config.configs(0).checksum(), Sha256Hex(config.configs(0).config_data()));
  EXPECT_EQ(config.configs(0).updated_at().seconds(), 1'700'000'000);
  EXPECT_EQ(config.last_updated().seconds(), 1'700'000'000);

  marchproxy::GetConfigRequest json;
  json.set_config_type("json");
  ASSERT_TRUE(stub_->GetConfig(Context().get(), json, &config).ok());
  EXPECT_EQ(config.configs_size(), 0);
}

TEST_F(ControlServerTest, UpdateConfigAppliesValidatesAndRejects) {
  const std::string document = "server:\n  port: 9090\n";
  marchproxy::UpdateConfigRequest request;
  request.mutable_config()->set_config_type("yaml");
  request.mutable_config()->set_config_data(document);
  request.mutable_config()->set_checksum(absl::StrCat("sha256:", Sha256Hex(document)));
  marchproxy::UpdateConfigResponse response;
  grpc::Status status = stub_->UpdateConfig(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.success());
  EXPECT_TRUE(response.validation_passed());
  EXPECT_EQ(core_.LastCall(), "UpdateConfig(validate_only=0)");
  EXPECT_EQ(core_.last_config_document(), document);

  // validate_only: a failed validation is the answer, with the errors.
  request.mutable_config()->set_config_data("invalid: true\n");
  request.mutable_config()->clear_checksum();
  request.set_validate_only(true);
  status = stub_->UpdateConfig(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.success());
  EXPECT_FALSE(response.validation_passed());
  EXPECT_THAT(response.validation_errors(),
              ElementsAre("line 1: unknown key 'invalid'", "model_list: must not be empty"));
  EXPECT_EQ(response.error().code(), marchproxy::STATUS_CODE_INVALID_ARGUMENT);
  EXPECT_THAT(response.error().message(), HasSubstr("unknown key"));

  // Applying an invalid document is an invalid request.
  request.set_validate_only(false);
  status = stub_->UpdateConfig(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("model_list: must not be empty"));

  // Checked before the core sees it.
  const int calls = core_.CallCount("UpdateConfig");
  request.mutable_config()->set_config_data(document);
  request.mutable_config()->set_checksum("0000");
  EXPECT_EQ(stub_->UpdateConfig(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.mutable_config()->clear_checksum();
  request.mutable_config()->set_config_type("toml");
  EXPECT_EQ(stub_->UpdateConfig(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stub_->UpdateConfig(Context().get(), {}, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(core_.CallCount("UpdateConfig"), calls);
}

// --- Rate limits ------------------------------------------------------------------------------

TEST_F(ControlServerTest, RateLimitsRoundTrip) {
  marchproxy::SetRateLimitRequest set;
  marchproxy::RateLimit* limit = set.mutable_limit();
  limit->set_target("model:gpt-4o");
  limit->set_requests_per_minute(60);
  limit->set_burst_size(5);
  limit->set_enabled(true);
  (*limit->mutable_metadata())["owner"] = "ops";
  marchproxy::SetRateLimitResponse set_response;
  grpc::Status status = stub_->SetRateLimit(Context().get(), set, &set_response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(set_response.success());
  const std::string id = set_response.message();
  ASSERT_FALSE(id.empty());

  marchproxy::GetRateLimitsResponse limits;
  ASSERT_TRUE(stub_->GetRateLimits(Context().get(), {}, &limits).ok());
  ASSERT_EQ(limits.total_limits(), 1);
  ASSERT_EQ(limits.limits_size(), 1);
  EXPECT_EQ(limits.limits(0).limit_id(), id);
  EXPECT_EQ(limits.limits(0).target(), "model:gpt-4o");
  EXPECT_EQ(limits.limits(0).requests_per_minute(), 60);
  EXPECT_EQ(limits.limits(0).burst_size(), 5);
  EXPECT_TRUE(limits.limits(0).enabled());
  EXPECT_THAT(limits.limits(0).metadata(), Contains(Pair("owner", "ops")));

  marchproxy::GetRateLimitsRequest by_target;
  by_target.set_target("model:llama3");
  ASSERT_TRUE(stub_->GetRateLimits(Context().get(), by_target, &limits).ok());
  EXPECT_EQ(limits.total_limits(), 0);

  marchproxy::RemoveRateLimitRequest remove;
  remove.set_limit_id(id);
  marchproxy::RemoveRateLimitResponse removed;
  ASSERT_TRUE(stub_->RemoveRateLimit(Context().get(), remove, &removed).ok());
  EXPECT_TRUE(removed.success());
  EXPECT_EQ(stub_->RemoveRateLimit(Context().get(), remove, &removed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(stub_->RemoveRateLimit(Context().get(), {}, &removed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // The limiter's own validation surfaces as INVALID_ARGUMENT.
  EXPECT_EQ(stub_->SetRateLimit(Context().get(), {}, &set_response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  set.mutable_limit()->set_target("");
  EXPECT_EQ(stub_->SetRateLimit(Context().get(), set, &set_response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// --- Routes -----------------------------------------------------------------------------------

TEST_F(ControlServerTest, GetRoutesTranslatesRoutes) {
  marchproxy::GetRoutesResponse response;
  ASSERT_TRUE(stub_->GetRoutes(Context().get(), {}, &response).ok());
  ASSERT_EQ(response.routes_size(), 2);
  EXPECT_EQ(response.total_routes(), 2);
  const marchproxy::Route& route = response.routes(0);
  EXPECT_EQ(route.route_id(), "model:gpt-4o");
  EXPECT_EQ(route.protocol(), marchproxy::PROTOCOL_HTTP);
  EXPECT_EQ(route.path_pattern(), "/v1/chat/completions");
  EXPECT_EQ(route.priority(), 100);
  EXPECT_THAT(route.metadata(),
              UnorderedElementsAre(Pair("model", "gpt-4o"), Pair("target", "gpt-4o"),
                                   Pair("deployments", "2"), Pair("source", "config")));
  EXPECT_EQ(response.pagination().page(), 1);
  EXPECT_EQ(response.pagination().total_items(), 2);
  EXPECT_EQ(response.pagination().total_pages(), 1);
}

TEST_F(ControlServerTest, GetRoutesPaginates) {
  core_.AddConfiguredModels(5);  // 7 routes
  auto page = [this](int number, int size) {
    marchproxy::GetRoutesRequest request;
    request.mutable_query()->mutable_pagination()->set_page(number);
    request.mutable_query()->mutable_pagination()->set_page_size(size);
    marchproxy::GetRoutesResponse response;
    grpc::Status status = stub_->GetRoutes(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> ids;
    for (const auto& route : response.routes()) ids.push_back(route.route_id());
    EXPECT_EQ(response.total_routes(), 7);
    EXPECT_EQ(response.pagination().total_items(), 7);
    return std::make_pair(ids, response.pagination());
  };
  auto [first, first_page] = page(1, 3);
  EXPECT_THAT(first, ElementsAre("model:gpt-4o", "model:llama3", "model:m0"));
  EXPECT_EQ(first_page.total_pages(), 3);
  EXPECT_EQ(first_page.page_size(), 3);
  EXPECT_THAT(page(2, 3).first, ElementsAre("model:m1", "model:m2", "model:m3"));
  EXPECT_THAT(page(3, 3).first, ElementsAre("model:m4"));
  EXPECT_THAT(page(4, 3).first, IsEmpty());
  EXPECT_THAT(page(0, 3).first, ElementsAre("model:gpt-4o", "model:llama3", "model:m0"));
  EXPECT_EQ(page(1, 0).first.size(), 7u);
  EXPECT_EQ(page(1, 0).second.total_pages(), 1);

  marchproxy::GetRoutesRequest negative;
  negative.mutable_query()->mutable_pagination()->set_page(-1);
  marchproxy::GetRoutesResponse response;
  EXPECT_EQ(stub_->GetRoutes(Context().get(), negative, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControlServerTest, GetRoutesFiltersAndSorts) {
  core_.AddConfiguredModels(2);
  marchproxy::GetRoutesRequest request;
  marchproxy::Filter* filter = request.mutable_query()->add_filters();
  filter->set_field("model");
  filter->set_operator_("prefix");
  filter->set_value("m");
  request.mutable_query()->set_sort_by("model");
  request.mutable_query()->set_sort_desc(true);
  marchproxy::GetRoutesResponse response;
  ASSERT_TRUE(stub_->GetRoutes(Context().get(), request, &response).ok());
  ASSERT_EQ(response.routes_size(), 2);
  EXPECT_EQ(response.routes(0).route_id(), "model:m1");
  EXPECT_EQ(response.routes(1).route_id(), "model:m0");
  EXPECT_EQ(response.total_routes(), 2);

  filter->set_field("colour");
  EXPECT_EQ(stub_->GetRoutes(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  filter->set_field("model");
  filter->set_operator_("~=");
  EXPECT_EQ(stub_->GetRoutes(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControlServerTest, UpdateAndDeleteRoutes) {
  marchproxy::UpdateRoutesRequest request;
  marchproxy::Route* by_metadata = request.add_routes();
  (*by_metadata->mutable_metadata())["model"] = "fast";
  (*by_metadata->mutable_metadata())["target"] = "llama3";
  marchproxy::Route* by_id = request.add_routes();
  by_id->set_route_id("model:smart");
  by_id->set_priority(7);
  by_id->set_path_pattern("/v1/chat/completions");
  (*by_id->mutable_metadata())["target"] = "gpt-4o";
  marchproxy::UpdateRoutesResponse response;
  grpc::Status status = stub_->UpdateRoutes(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.routes_updated(), 2);
  EXPECT_EQ(core_.LastCall(), "UpdateRoutes(n=2,replace_all=0)");
  std::vector<control::RouteInfo> sent = core_.last_route_update();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].route_id, "model:fast");
  EXPECT_EQ(sent[0].model, "fast");
  EXPECT_EQ(sent[0].target, "llama3");
  EXPECT_EQ(sent[0].priority, 100);
  EXPECT_FALSE(sent[0].from_config);
  EXPECT_EQ(sent[1].route_id, "model:smart");
  EXPECT_EQ(sent[1].model, "smart");
  EXPECT_EQ(sent[1].target, "gpt-4o");
  EXPECT_EQ(sent[1].priority, 7);

  marchproxy::GetRoutesResponse routes;
  ASSERT_TRUE(stub_->GetRoutes(Context().get(), {}, &routes).ok());
  ASSERT_EQ(routes.routes_size(), 4);
  EXPECT_THAT(routes.routes(2).metadata(), Contains(Pair("source", "runtime")));

  // Rejected by the adapter (no target) or by the core (unknown target).
  marchproxy::UpdateRoutesRequest no_target;
  no_target.add_routes()->set_route_id("model:x");
  EXPECT_EQ(stub_->UpdateRoutes(Context().get(), no_target, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  marchproxy::UpdateRoutesRequest bad_target;
  (*bad_target.add_routes()->mutable_metadata())["model"] = "x";
  (*bad_target.mutable_routes(0)->mutable_metadata())["target"] = "nope";
  status = stub_->UpdateRoutes(Context().get(), bad_target, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("nope"));

  marchproxy::DeleteRouteRequest remove;
  remove.set_route_id("model:fast");
  marchproxy::DeleteRouteResponse removed;
  ASSERT_TRUE(stub_->DeleteRoute(Context().get(), remove, &removed).ok());
  EXPECT_TRUE(removed.success());
  EXPECT_EQ(stub_->DeleteRoute(Context().get(), remove, &removed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  remove.set_route_id("model:gpt-4o");
  EXPECT_EQ(stub_->DeleteRoute(Context().get(), remove, &removed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(stub_->DeleteRoute(Context().get(), {}, &removed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ControlServerTest, CanHandleTakesTheModelFromRouteOrContext) {
  marchproxy::CanHandleRequest request;
  request.mutable_route()->set_path_pattern("/v1/chat/completions");
  (*request.mutable_route()->mutable_metadata())["model"] = "gpt-4o";
  marchproxy::CanHandleResponse response;
  ASSERT_TRUE(stub_->CanHandle(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "CanHandle(/v1/chat/completions,gpt-4o)");
  EXPECT_TRUE(response.can_handle());
  EXPECT_EQ(response.priority(), 100);
  EXPECT_THAT(response.reason(), HasSubstr("gpt-4o"));

  request.mutable_route()->clear_metadata();
  (*request.mutable_context())["model"] = "llama3";
  ASSERT_TRUE(stub_->CanHandle(Context().get(), request, &response).ok());
  EXPECT_EQ(core_.LastCall(), "CanHandle(/v1/chat/completions,llama3)");
  EXPECT_TRUE(response.can_handle());

  (*request.mutable_context())["model"] = "unknown";
  ASSERT_TRUE(stub_->CanHandle(Context().get(), request, &response).ok());
  EXPECT_FALSE(response.can_handle());
}

// --- Lifecycle and scaling --------------------------------------------------------------------

TEST_F(ControlServerTest, ShutdownRepliesThenAsksTheCore) {
  // Had the server asked the core before replying (say, from the handler), the hook below would
  // wait in vain for the reply to reach the client.
  std::atomic<bool> replied{false};
  std::atomic<bool> asked_after_reply{false};
  std::atomic<bool> hook_done{false};
  core_.OnShutdown([&](bool, int) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!replied && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    asked_after_reply = replied.load();
    hook_done = true;
  });
  marchproxy::ShutdownRequest request;
  request.set_graceful(true);
  request.set_timeout_seconds(30);
  marchproxy::ShutdownResponse response;
  grpc::Status status = stub_->Shutdown(Context().get(), request, &response);
  replied = true;
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.success());
  EXPECT_THAT(response.message(), HasSubstr("30"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!hook_done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(core_.shutdown_request().has_value());
  EXPECT_TRUE(core_.shutdown_request()->graceful);
  EXPECT_EQ(core_.shutdown_request()->timeout_seconds, 30);
  EXPECT_TRUE(asked_after_reply);

  marchproxy::ShutdownRequest bad;
  bad.set_timeout_seconds(-1);
  EXPECT_EQ(stub_->Shutdown(Context().get(), bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  bad.set_timeout_seconds(0);
  bad.set_instance_id("someone-else");
  EXPECT_EQ(stub_->Shutdown(Context().get(), bad, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(core_.CallCount("RequestShutdown"), 1);
}

TEST_F(ControlServerTest, ScaleRecordsTheConfigForTheOrchestrator) {
  marchproxy::ScaleRequest request;
  marchproxy::ScalingConfig* config = request.mutable_config();
  config->set_min_instances(2);
  config->set_max_instances(5);
  config->set_target_cpu_percent(70);
  config->set_cooldown_seconds(60);
  config->set_auto_scaling_enabled(true);
  marchproxy::ScaleResponse response;
  grpc::Status status = stub_->Scale(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.current_instances(), 1);
  EXPECT_EQ(response.desired_instances(), 2);
  EXPECT_THAT(response.message(), HasSubstr("orchestrator"));
  std::optional<control::ScalingRecord> recorded = core_.Scaling();
  ASSERT_TRUE(recorded.has_value());
  EXPECT_EQ(recorded->min_instances, 2);
  EXPECT_EQ(recorded->max_instances, 5);
  EXPECT_EQ(recorded->target_cpu_percent, 70);
  EXPECT_EQ(recorded->cooldown_seconds, 60);
  EXPECT_TRUE(recorded->auto_scaling_enabled);

  config->set_min_instances(0);
  config->set_max_instances(0);
  ASSERT_TRUE(stub_->Scale(Context().get(), request, &response).ok());
  EXPECT_EQ(response.desired_instances(), 1);

  config->set_min_instances(6);
  config->set_max_instances(5);
  EXPECT_EQ(stub_->Scale(Context().get(), request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stub_->Scale(Context().get(), {}, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(core_.CallCount("RecordScaling"), 2);
}

// --- Auth and health --------------------------------------------------------------------------

TEST_F(ControlServerTest, TokenIsRequiredOnEveryModuleServiceMethod) {
  StartServer(kToken);
  // Each entry calls one RPC without credentials and returns its status code.
  std::vector<std::pair<std::string, std::function<grpc::StatusCode(grpc::ClientContext*)>>> calls;
  auto unary = [&](const std::string& name, auto method, auto request, auto response) {
    calls.emplace_back(name, [this, method, request, response](grpc::ClientContext* context) {
      auto reply = response;
      return ((*stub_).*method)(context, request, &reply).error_code();
    });
  };
  using S = marchproxy::ModuleService::Stub;
  unary("GetStatus", &S::GetStatus, marchproxy::GetStatusRequest(),
        marchproxy::GetStatusResponse());
  unary("Reload", &S::Reload, marchproxy::ReloadRequest(), marchproxy::ReloadResponse());
  unary("Shutdown", &S::Shutdown, marchproxy::ShutdownRequest(), marchproxy::ShutdownResponse());
  unary("CanHandle", &S::CanHandle, marchproxy::CanHandleRequest(),
        marchproxy::CanHandleResponse());
  unary("GetRoutes", &S::GetRoutes, marchproxy::GetRoutesRequest(),
        marchproxy::GetRoutesResponse());
  unary("UpdateRoutes", &S::UpdateRoutes, marchproxy::UpdateRoutesRequest(),
        marchproxy::UpdateRoutesResponse());
  unary("DeleteRoute", &S::DeleteRoute, marchproxy::DeleteRouteRequest(),
        marchproxy::DeleteRouteResponse());
  unary("GetRateLimits", &S::GetRateLimits, marchproxy::GetRateLimitsRequest(),
        marchproxy::GetRateLimitsResponse());
  unary("SetRateLimit", &S::SetRateLimit, marchproxy::SetRateLimitRequest(),
        marchproxy::SetRateLimitResponse());
  unary("RemoveRateLimit", &S::RemoveRateLimit, marchproxy::RemoveRateLimitRequest(),
        marchproxy::RemoveRateLimitResponse());
  unary("GetMetrics", &S::GetMetrics, marchproxy::GetMetricsRequest(),
        marchproxy::GetMetricsResponse());
  unary("Scale", &S::Scale, marchproxy::ScaleRequest(), marchproxy::ScaleResponse());
  unary("GetInstances", &S::GetInstances, marchproxy::GetInstancesRequest(),
        marchproxy::GetInstancesResponse());
  unary("SetTrafficWeight", &S::SetTrafficWeight, marchproxy::SetTrafficWeightRequest(),
        marchproxy::SetTrafficWeightResponse());
  unary("GetActiveVersion", &S::GetActiveVersion, marchproxy::GetActiveVersionRequest(),
        marchproxy::GetActiveVersionResponse());
  unary("Rollback", &S::Rollback, marchproxy::RollbackRequest(), marchproxy::RollbackResponse());
  unary("PromoteVersion", &S::PromoteVersion, marchproxy::PromoteVersionRequest(),
        marchproxy::PromoteVersionResponse());
  unary("HealthCheck", &S::HealthCheck, marchproxy::HealthCheckRequest(),
        marchproxy::HealthCheckResponse());
  unary("GetStats", &S::GetStats, marchproxy::GetStatsRequest(), marchproxy::GetStatsResponse());
  unary("GetConfig", &S::GetConfig, marchproxy::GetConfigRequest(),
        marchproxy::GetConfigResponse());
  unary("UpdateConfig", &S::UpdateConfig, marchproxy::UpdateConfigRequest(),
        marchproxy::UpdateConfigResponse());
  calls.emplace_back("StreamMetrics", [this](grpc::ClientContext* context) {
    auto reader = stub_->StreamMetrics(context, marchproxy::StreamMetricsRequest());
    marchproxy::StreamMetricsResponse message;
    while (reader->Read(&message)) {
    }
    return reader->Finish().error_code();
  });
  ASSERT_EQ(calls.size(), 22u);

  for (const auto& [name, call] : calls) {
    auto missing = Context(/*with_token=*/false);
    EXPECT_EQ(call(missing.get()), grpc::StatusCode::UNAUTHENTICATED) << name << ": no token";
    auto wrong = Context(/*with_token=*/false);
    wrong->AddMetadata("authorization", "Bearer not-the-token");
    EXPECT_EQ(call(wrong.get()), grpc::StatusCode::UNAUTHENTICATED) << name << ": wrong token";
    auto not_bearer = Context(/*with_token=*/false);
    not_bearer->AddMetadata("authorization", kToken);
    EXPECT_EQ(call(not_bearer.get()), grpc::StatusCode::UNAUTHENTICATED) << name << ": no scheme";
  }
  EXPECT_THAT(core_.Calls(), IsEmpty()) << "nothing reaches the core unauthenticated";

  marchproxy::GetStatusResponse response;
  EXPECT_TRUE(stub_->GetStatus(Context().get(), {}, &response).ok());
  auto lower = Context(/*with_token=*/false);
  lower->AddMetadata("authorization", absl::StrCat("bearer ", kToken));
  EXPECT_TRUE(stub_->GetStatus(lower.get(), {}, &response).ok());
}

TEST_F(ControlServerTest, HealthServiceFollowsSetServingAndNeedsNoToken) {
  StartServer(kToken);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&](const std::string& service) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::ClientContext context;
    grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << service << ": " << status.error_message();
    return response.status();
  };
  using grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("marchproxy.ModuleService"), HealthCheckResponse::SERVING);
  server_->SetServing(false);
  EXPECT_EQ(check(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(check("marchproxy.ModuleService"), HealthCheckResponse::NOT_SERVING);
  server_->SetServing(true);
  EXPECT_EQ(check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("marchproxy.ModuleService"), HealthCheckResponse::SERVING);

  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  EXPECT_EQ(health->Check(&context, unknown, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ControlServerTest, StartFailsOnABusyPort) {
  ControlServerOptions options;
  options.host = "127.0.0.1";
  options.port = server_->port();
  auto second = ControlServer::Start(options, core_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ControlServerTest, ShutdownIsIdempotent) {
  server_->Shutdown(std::chrono::milliseconds(100));
  server_->Shutdown(std::chrono::milliseconds(100));
  server_->SetServing(true);  // ignored after shutdown
  marchproxy::GetStatusResponse response;
  auto context = Context();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_FALSE(stub_->GetStatus(context.get(), {}, &response).ok());
}

}  // namespace
}  // namespace ailb::server
