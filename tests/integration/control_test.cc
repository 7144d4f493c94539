// The control plane end to end: the real ailb binary, a gRPC client built from the project's
// proto over a real socket, and the effects of each RPC on the data plane.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <map>
#include <thread>

#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "marchproxy/module_service.grpc.pb.h"

namespace ailb::testing {
namespace {

using marchproxy::ModuleService;
using nlohmann::json;

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* slot : {&blue_, &green_}) {
      auto server = FakeLlmServer::Start();
      ASSERT_TRUE(server.ok());
      *slot = *std::move(server);
    }
    char dir_template[] = "/tmp/ailb-control-XXXXXX";
    data_dir_ = mkdtemp(dir_template);
    config_path_ = data_dir_ + "/ailb.yaml";
    WriteConfig(/*with_extra_model=*/false);
  }

  void WriteConfig(bool with_extra_model) {
    std::ofstream out(config_path_);
    out << "model_list:\n"
        << "  - {model_name: m, provider: openai, model: m-blue, id: blue, version: v1, api_base: "
        << blue_->BaseUrl() << "/v1}\n"
        << "  - {model_name: m, provider: openai, model: m-green, id: green, version: v2, "
           "api_base: "
        << green_->BaseUrl() << "/v1}\n";
    if (with_extra_model) {
      out << "  - {model_name: extra, provider: openai, model: x, api_base: " << blue_->BaseUrl()
          << "/v1}\n";
    }
  }

  void StartAilb() {
    ailb_ = AilbProcess::Start({{"AILB_CONFIG", config_path_},
                                {"AILB_DATA_DIR", data_dir_},
                                {"AILB_PROMOTION_INTERVAL_MS", "200"}});
    ASSERT_NE(ailb_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(ailb_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = ModuleService::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return context;
  }

  // Sends `n` chat requests to model `model`; counts answers by deployment (or status).
  std::map<std::string, int> SendChats(int n, const std::string& model = "m") {
    std::map<std::string, int> by_deployment;
    for (int i = 0; i < n; ++i) {
      HttpResult result =
          HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody(model, false));
      by_deployment[result.status == 200 ? result.Header("x-ailb-deployment")
                                         : std::to_string(result.status)]++;
    }
    return by_deployment;
  }

  std::map<std::string, int> Weights() {
    marchproxy::GetActiveVersionRequest request;
    marchproxy::GetActiveVersionResponse response;
    EXPECT_TRUE(stub_->GetActiveVersion(Context().get(), request, &response).ok());
    return {response.version_weights().begin(), response.version_weights().end()};
  }

  std::unique_ptr<FakeLlmServer> blue_;
  std::unique_ptr<FakeLlmServer> green_;
  std::string data_dir_;
  std::string config_path_;
  std::unique_ptr<AilbProcess> ailb_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ModuleService::Stub> stub_;
};

TEST_F(ControlTest, BlueGreenWeightsMoveRealTrafficAndSurviveRestart) {
  StartAilb();
  EXPECT_EQ(Weights(), (std::map<std::string, int>{{"v1", 100}, {"v2", 0}}));
  EXPECT_EQ(SendChats(20)["blue"], 20);

  marchproxy::SetTrafficWeightRequest shift;
  shift.set_version("v2");
  shift.set_weight(30);
  marchproxy::SetTrafficWeightResponse shifted;
  ASSERT_TRUE(stub_->SetTrafficWeight(Context().get(), shift, &shifted).ok());
  EXPECT_TRUE(shifted.success());
  EXPECT_EQ(shifted.current_config().green_version(), "v2");
  EXPECT_EQ(Weights(), (std::map<std::string, int>{{"v1", 70}, {"v2", 30}}));

  constexpr int kRequests = 400;
  std::map<std::string, int> split = SendChats(kRequests);
  EXPECT_EQ(split["blue"] + split["green"], kRequests);
  const double green_share = static_cast<double>(split["green"]) / kRequests;
  EXPECT_NEAR(green_share, 0.30, 0.07) << "green got " << split["green"] << " of " << kRequests;

  // Invalid input changes nothing.
  marchproxy::SetTrafficWeightRequest bad = shift;
  bad.set_weight(101);
  marchproxy::SetTrafficWeightResponse ignored;
  EXPECT_EQ(stub_->SetTrafficWeight(Context().get(), bad, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  bad.set_weight(50);
  bad.set_version("v9");
  EXPECT_EQ(stub_->SetTrafficWeight(Context().get(), bad, &ignored).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Weights(), (std::map<std::string, int>{{"v1", 70}, {"v2", 30}}));

  marchproxy::RollbackRequest rollback;
  marchproxy::RollbackResponse rolled;
  ASSERT_TRUE(stub_->Rollback(Context().get(), rollback, &rolled).ok());
  EXPECT_TRUE(rolled.success());
  EXPECT_EQ(rolled.current_version(), "v1");
  EXPECT_EQ(Weights(), (std::map<std::string, int>{{"v1", 100}, {"v2", 0}}));

  // Gradual promotion: 50 % per step every 200 ms reaches 100 %.
  marchproxy::PromoteVersionRequest promote;
  promote.set_version("v2");
  promote.set_promotion_rate(50);
  marchproxy::PromoteVersionResponse promoted;
  ASSERT_TRUE(stub_->PromoteVersion(Context().get(), promote, &promoted).ok());
  EXPECT_EQ(promoted.promoted_version(), "v2");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Weights()["v2"] < 100 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Weights()["v2"], 100);
  EXPECT_EQ(SendChats(20)["green"], 20);

  marchproxy::GetStatusRequest status_request;
  marchproxy::GetStatusResponse status;
  ASSERT_TRUE(stub_->GetStatus(Context().get(), status_request, &status).ok());
  EXPECT_EQ(status.instance().version(), "v2");
  EXPECT_EQ(status.instance().traffic_weight(), 100);

  // Weights live in AILB_DATA_DIR and come back after a restart.
  ailb_.reset();
  StartAilb();
  EXPECT_EQ(Weights(), (std::map<std::string, int>{{"v1", 0}, {"v2", 100}}));
}

TEST_F(ControlTest, RateLimitsProduce429sUntilRemoved) {
  StartAilb();
  marchproxy::SetRateLimitRequest set;
  set.mutable_limit()->set_target("model:m");
  set.mutable_limit()->set_requests_per_minute(3);
  set.mutable_limit()->set_enabled(true);
  marchproxy::SetRateLimitResponse set_response;
  ASSERT_TRUE(stub_->SetRateLimit(Context().get(), set, &set_response).ok());
  ASSERT_TRUE(set_response.success()) << set_response.message();

  marchproxy::GetRateLimitsRequest list;
  marchproxy::GetRateLimitsResponse limits;
  ASSERT_TRUE(stub_->GetRateLimits(Context().get(), list, &limits).ok());
  ASSERT_EQ(limits.total_limits(), 1);
  const std::string limit_id = limits.limits(0).limit_id();

  std::map<std::string, int> outcome = SendChats(6);
  EXPECT_EQ(outcome["429"], 3);
  HttpResult limited = HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody("m", false));
  EXPECT_EQ(limited.status, 429);
  EXPECT_FALSE(limited.Header("retry-after").empty());
  EXPECT_EQ(limited.Json()["error"]["code"], "rate_limit_exceeded");

  marchproxy::RemoveRateLimitRequest remove;
  remove.set_limit_id(limit_id);
  marchproxy::RemoveRateLimitResponse removed;
  ASSERT_TRUE(stub_->RemoveRateLimit(Context().get(), remove, &removed).ok());
  EXPECT_EQ(SendChats(5)["429"], 0);
  remove.set_limit_id("no-such-limit");
  EXPECT_EQ(stub_->RemoveRateLimit(Context().get(), remove, &removed).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ControlTest, ReloadAndUpdateConfigSwapAtomicallyOrChangeNothing) {
  StartAilb();
  auto model_ids = [&] {
    std::vector<std::string> ids;
    const json list = HttpCall("GET", ailb_->Url("/v1/models")).Json();
    for (const auto& model : list["data"]) {
      ids.push_back(model["id"]);
    }
    return ids;
  };
  EXPECT_EQ(model_ids(), (std::vector<std::string>{"m"}));

  WriteConfig(/*with_extra_model=*/true);
  marchproxy::ReloadRequest reload;
  marchproxy::ReloadResponse reloaded;
  ASSERT_TRUE(stub_->Reload(Context().get(), reload, &reloaded).ok());
  EXPECT_TRUE(reloaded.success()) << reloaded.message();
  EXPECT_EQ(model_ids(), (std::vector<std::string>{"m", "extra"}));

  std::ofstream(config_path_) << "model_list:\n  - {model_name: broken, wieght: 3}\n";
  grpc::Status rejected = stub_->Reload(Context().get(), reload, &reloaded);
  // The request was fine; the file it asked to load is not.
  EXPECT_EQ(rejected.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(rejected.error_message().find("wieght"), std::string::npos) << rejected.error_message();
  EXPECT_EQ(model_ids(), (std::vector<std::string>{"m", "extra"}));

  marchproxy::UpdateConfigRequest update;
  update.mutable_config()->set_config_data(
      "routing_strategy: nonsense\nmodel_list: [{model_name: '', provider: openai}]\n");
  update.set_validate_only(true);
  marchproxy::UpdateConfigResponse validated;
  ASSERT_TRUE(stub_->UpdateConfig(Context().get(), update, &validated).ok());
  EXPECT_FALSE(validated.validation_passed());
  EXPECT_GE(validated.validation_errors_size(), 2);

  update.mutable_config()->set_config_data(
      "model_list:\n  - {model_name: solo, api_base: " + blue_->BaseUrl() + "/v1}\n");
  update.set_validate_only(true);
  ASSERT_TRUE(stub_->UpdateConfig(Context().get(), update, &validated).ok());
  EXPECT_TRUE(validated.validation_passed());
  EXPECT_EQ(model_ids(), (std::vector<std::string>{"m", "extra"}));
  update.set_validate_only(false);
  ASSERT_TRUE(stub_->UpdateConfig(Context().get(), update, &validated).ok());
  EXPECT_TRUE(validated.success());
  EXPECT_EQ(model_ids(), (std::vector<std::string>{"solo"}));
  EXPECT_EQ(SendChats(3, "solo")["openai/solo"], 3);

  marchproxy::GetConfigRequest get;
  marchproxy::GetConfigResponse config;
  ASSERT_TRUE(stub_->GetConfig(Context().get(), get, &config).ok());
  ASSERT_EQ(config.configs_size(), 1);
  json document = json::parse(config.configs(0).config_data(), nullptr, false);
  ASSERT_TRUE(document.is_object());
  EXPECT_EQ(document["model_list"][0]["model_name"], "solo");
}

TEST_F(ControlTest, StatusMetricsAndStatsReflectRealRequests) {
  StartAilb();
  SendChats(7);
  marchproxy::GetStatusRequest status_request;
  marchproxy::GetStatusResponse status;
  ASSERT_TRUE(stub_->GetStatus(Context().get(), status_request, &status).ok());
  EXPECT_EQ(status.instance().module_type(), marchproxy::MODULE_TYPE_AILB);
  EXPECT_EQ(status.status(), marchproxy::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(status.instance().address(), "127.0.0.1:" + std::to_string(ailb_->grpc_port()));
  EXPECT_EQ(status.details().at("num_connectors"), "2");

  marchproxy::HealthCheckRequest deep;
  deep.set_deep_check(true);
  marchproxy::HealthCheckResponse checked;
  ASSERT_TRUE(stub_->HealthCheck(Context().get(), deep, &checked).ok());
  EXPECT_EQ(checked.checks().at("probe.blue").rfind("ok", 0), 0u)
      << checked.checks().at("probe.blue");
  // The probe is a free model listing, never a completion.
  bool probed_models = false;
  for (const RecordedRequest& r : blue_->Requests()) {
    EXPECT_EQ(r.path == "/v1/chat/completions" && r.method == "GET", false);
    if (r.path == "/v1/models") probed_models = true;
  }
  EXPECT_TRUE(probed_models);

  marchproxy::GetMetricsRequest metrics_request;
  // LiteLLM's registered name finds the counter it exposes as ..._total.
  metrics_request.add_metric_names("litellm_proxy_total_requests_metric");
  marchproxy::GetMetricsResponse metrics;
  ASSERT_TRUE(stub_->GetMetrics(Context().get(), metrics_request, &metrics).ok());
  double total = 0;
  for (const auto& point : metrics.metrics().metrics()) {
    EXPECT_EQ(point.name(), "litellm_proxy_total_requests_metric_total");
    total += point.value();
  }
  EXPECT_EQ(total, 7);

  marchproxy::GetStatsRequest stats_request;
  stats_request.set_reset_counters(true);
  marchproxy::GetStatsResponse stats;
  ASSERT_TRUE(stub_->GetStats(Context().get(), stats_request, &stats).ok());
  EXPECT_EQ(stats.stats().total_requests(), 7);
  EXPECT_EQ(stats.stats().successful_requests(), 7);
  EXPECT_GT(stats.stats().p50_latency_ms(), 0);
  EXPECT_GE(stats.stats().p99_latency_ms(), stats.stats().p50_latency_ms());
  EXPECT_GT(stats.stats().memory_usage_mb(), 0);
  stats_request.set_reset_counters(false);
  ASSERT_TRUE(stub_->GetStats(Context().get(), stats_request, &stats).ok());
  EXPECT_EQ(stats.stats().total_requests(), 0);

  // The Prometheus view agrees.
  std::string text = HttpCall("GET", ailb_->Url("/metrics")).body;
  EXPECT_NE(text.find("litellm_proxy_total_requests_metric_total{"), std::string::npos);
  EXPECT_NE(text.find("ai_requests_per_minute 7"), std::string::npos) << text;

  marchproxy::StreamMetricsRequest stream_request;
  stream_request.set_interval_seconds(1);
  stream_request.add_metric_names("ai_requests_per_minute");
  grpc::ClientContext stream_context;
  auto reader = stub_->StreamMetrics(&stream_context, stream_request);
  marchproxy::StreamMetricsResponse pushed;
  int received = 0;
  while (received < 2 && reader->Read(&pushed)) {
    ASSERT_EQ(pushed.metrics().metrics_size(), 1);
    EXPECT_EQ(pushed.metrics().metrics(0).value(), 7);
    ++received;
  }
  EXPECT_EQ(received, 2);
  stream_context.TryCancel();
  reader->Finish();
}

TEST_F(ControlTest, RoutesAliasesCanHandleScaleInstancesAndShutdown) {
  StartAilb();
  marchproxy::GetRoutesRequest get_routes;
  marchproxy::GetRoutesResponse routes;
  ASSERT_TRUE(stub_->GetRoutes(Context().get(), get_routes, &routes).ok());
  ASSERT_EQ(routes.total_routes(), 1);
  EXPECT_EQ(routes.routes(0).route_id(), "model:m");
  EXPECT_EQ(routes.routes(0).path_pattern(), "/v1/chat/completions");

  marchproxy::UpdateRoutesRequest update;
  auto* alias = update.add_routes();
  (*alias->mutable_metadata())["model"] = "fast";
  (*alias->mutable_metadata())["target"] = "m";
  marchproxy::UpdateRoutesResponse updated;
  ASSERT_TRUE(stub_->UpdateRoutes(Context().get(), update, &updated).ok());
  EXPECT_EQ(updated.routes_updated(), 1);
  EXPECT_EQ(SendChats(3, "fast")["blue"], 3);
  // The alias is a model clients can discover.
  const json listed = HttpCall("GET", ailb_->Url("/v1/models")).Json();
  ASSERT_EQ(listed["data"].size(), 2u);
  EXPECT_EQ(listed["data"][0]["id"], "m");
  EXPECT_EQ(listed["data"][1]["id"], "fast");
  EXPECT_EQ(listed["data"][1]["owned_by"], "ailb");
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/models/fast")).status, 200);

  marchproxy::CanHandleRequest can;
  can.mutable_route()->set_path_pattern("/v1/chat/completions");
  (*can.mutable_route()->mutable_metadata())["model"] = "fast";
  marchproxy::CanHandleResponse answer;
  ASSERT_TRUE(stub_->CanHandle(Context().get(), can, &answer).ok());
  EXPECT_TRUE(answer.can_handle()) << answer.reason();
  (*can.mutable_route()->mutable_metadata())["model"] = "unknown";
  ASSERT_TRUE(stub_->CanHandle(Context().get(), can, &answer).ok());
  EXPECT_FALSE(answer.can_handle());

  marchproxy::DeleteRouteRequest remove;
  remove.set_route_id("model:fast");
  marchproxy::DeleteRouteResponse removed;
  ASSERT_TRUE(stub_->DeleteRoute(Context().get(), remove, &removed).ok());
  EXPECT_EQ(SendChats(1, "fast")["404"], 1);
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/models")).Json()["data"].size(), 1u);
  remove.set_route_id("model:m");
  EXPECT_EQ(stub_->DeleteRoute(Context().get(), remove, &removed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  marchproxy::ScaleRequest scale;
  scale.mutable_config()->set_min_instances(2);
  scale.mutable_config()->set_max_instances(4);
  marchproxy::ScaleResponse scaled;
  ASSERT_TRUE(stub_->Scale(Context().get(), scale, &scaled).ok());
  EXPECT_EQ(scaled.current_instances(), 1);
  EXPECT_FALSE(scaled.message().empty());

  marchproxy::GetInstancesRequest instances_request;
  marchproxy::GetInstancesResponse instances;
  ASSERT_TRUE(stub_->GetInstances(Context().get(), instances_request, &instances).ok());
  ASSERT_EQ(instances.total_instances(), 1);
  EXPECT_EQ(instances.instances(0).instance_id(), "ailb-1");

  marchproxy::ShutdownRequest shutdown;
  shutdown.set_graceful(true);
  shutdown.set_timeout_seconds(5);
  marchproxy::ShutdownResponse shut;
  ASSERT_TRUE(stub_->Shutdown(Context().get(), shutdown, &shut).ok());
  EXPECT_TRUE(shut.success());
  EXPECT_EQ(ailb_->WaitForExit(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace ailb::testing
