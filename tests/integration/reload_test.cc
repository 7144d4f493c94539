// SIGHUP through the real binary: settings fixed at start are named in warnings and keep their
// start-up values, log_level and module_id apply at once (also for the control plane).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "marchproxy/module_service.grpc.pb.h"

namespace ailb::testing {
namespace {

using std::chrono::milliseconds;

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = FakeLlmServer::Start();
    ASSERT_TRUE(server.ok());
    fake_ = *std::move(server);
    config_path_ = absl::StrCat(::testing::TempDir(), "/ailb-reload-", getpid(), ".yaml");
  }
  void TearDown() override { std::remove(config_path_.c_str()); }

  void WriteConfig(const std::string& settings) {
    std::ofstream(config_path_) << settings << "model_list:\n"
                                << "  - {model_name: m, provider: openai, model: up, api_base: \""
                                << fake_->BaseUrl() << "/v1\"}\n";
  }

  // Sends SIGHUP and waits for the log to contain `needle`.
  bool Reload(const std::string& needle) {
    ailb_->Signal(SIGHUP);
    return ailb_->WaitForLog(needle, milliseconds(10'000));
  }

  int Chat(const std::string& request_id) {
    return static_cast<int>(
        HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody("m", false),
                 {"Content-Type: application/json", absl::StrCat("X-Request-Id: ", request_id)})
            .status);
  }

  std::unique_ptr<FakeLlmServer> fake_;
  std::string config_path_;
  std::unique_ptr<AilbProcess> ailb_;
};

TEST_F(ReloadTest, FixedSettingsAreNamedAndLogLevelAndModuleIdApplyAtOnce) {
  WriteConfig("module_id: first\nlog_level: info\n");
  ailb_ = AilbProcess::Start(
      {{"AILB_CONFIG", config_path_}, {"AILB_CONTROL_TOKEN", "control-token-secret"}});
  ASSERT_NE(ailb_, nullptr);

  // Everything changes at once: two settings fixed at start, the module id and the log level.
  WriteConfig(
      "module_id: second\nlog_level: warn\nlog_format: json\n"
      "server: {max_body_bytes: 2097152, promotion_interval_ms: 5000}\n");
  ASSERT_TRUE(Reload("log_level changed from info to warn")) << ailb_->Logs();
  const std::string logs = ailb_->Logs();
  EXPECT_NE(logs.find("server.max_body_bytes changed from 8388608 to 2097152; takes effect after "
                      "restart"),
            std::string::npos)
      << logs;
  EXPECT_NE(logs.find("server.promotion_interval_ms changed from 30000 to 5000; takes effect "
                      "after restart"),
            std::string::npos);
  EXPECT_NE(logs.find("log_format changed from \"text\" to \"json\"; takes effect after restart"),
            std::string::npos);
  EXPECT_EQ(logs.find("module_id changed"), std::string::npos) << "module_id applies live";
  EXPECT_EQ(logs.find("control-token-secret"), std::string::npos);

  // module_id: at once in /healthz and on the control plane.
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/healthz")).Json()["module_id"], "second");
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", ailb_->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = marchproxy::ModuleService::NewStub(channel);
  auto context = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    c->AddMetadata("authorization", "Bearer control-token-secret");
    return c;
  };
  marchproxy::GetMetricsResponse metrics;
  ASSERT_TRUE(stub->GetMetrics(context().get(), {}, &metrics).ok());
  EXPECT_EQ(metrics.metrics().instance_id(), "second");
  marchproxy::HealthCheckRequest health;
  marchproxy::HealthCheckResponse health_response;
  health.set_instance_id("first");
  EXPECT_EQ(stub->HealthCheck(context().get(), health, &health_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  health.set_instance_id("second");
  EXPECT_TRUE(stub->HealthCheck(context().get(), health, &health_response).ok());

  // log_level warn: a successful request writes no (info) access line. The format stays text.
  EXPECT_EQ(Chat("quiet-request"), 200);
  // Back to info: the access line of the next request shows, and the still pending restart-only
  // changes are reported again (the comparison is with the start-up values).
  WriteConfig(
      "module_id: second\nlog_level: info\nlog_format: json\n"
      "server: {max_body_bytes: 2097152, promotion_interval_ms: 5000}\n");
  ASSERT_TRUE(
      Reload("SIGHUP: configuration reloaded; takes effect after restart: "
             "server.max_body_bytes, server.promotion_interval_ms, log_format"))
      << ailb_->Logs();
  EXPECT_NE(ailb_->Logs().find("log_level changed from warn to info"), std::string::npos);
  EXPECT_EQ(Chat("loud-request"), 200);
  EXPECT_TRUE(ailb_->WaitForLog("request_id=loud-request", milliseconds(5'000))) << ailb_->Logs();
  EXPECT_EQ(ailb_->Logs().find("request_id=quiet-request"), std::string::npos);
  std::istringstream lines(ailb_->Logs());
  for (std::string line; std::getline(lines, line);) {
    EXPECT_FALSE(!line.empty() && line[0] == '{') << "log_format needs a restart: " << line;
  }
  // The body limit is still the start-up one: 3 MiB is not refused with 413.
  const std::string big(3 << 20, 'x');
  EXPECT_NE(
      HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody("m", false, {{"user", big}}))
          .status,
      413);
}

}  // namespace
}  // namespace ailb::testing
