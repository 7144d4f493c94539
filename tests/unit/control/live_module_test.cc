// The live module's configuration updates: settings fixed at start are reported by name when a
// reload changes them, and the instance id follows the published configuration.
#include "ailb/control/live_module.h"

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/clock.h"
#include "ailb/config/config.h"
#include "ailb/metrics/registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace ailb::control {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class LiveModuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Capture what the module logs.
    previous_logger_ = spdlog::default_logger();
    auto logger = std::make_shared<spdlog::logger>(
        "live_module_test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);

    auto started = std::make_shared<config::Config>();
    started->module_id = "ailb-a";
    started->server.control_token = "start-token-value";
    startup_ = started;
    store_ = std::make_unique<config::ConfigStore>(started);

    LiveModuleDeps deps;
    deps.clock = &clock_;
    deps.config = store_.get();
    deps.reload = [this]() -> absl::StatusOr<ConfigPtr> { return next_; };
    deps.parse_document = [this](const std::string&) -> absl::StatusOr<ConfigPtr> { return next_; };
    deps.publish = [this](ConfigPtr next) { store_->Publish(std::move(next)); };
    deps.startup = startup_;
    deps.registry = &registry_;
    deps.open_connections = [] { return int64_t{0}; };
    deps.total_connections = [] { return int64_t{0}; };
    module_ = NewLiveModule(std::move(deps));
  }

  void TearDown() override {
    module_.reset();
    spdlog::set_default_logger(previous_logger_);
  }

  // The next configuration a reload reads: the start-up one with `edit` applied.
  template <typename Edit>
  void NextConfig(Edit edit) {
    auto next = std::make_shared<config::Config>(*startup_);
    edit(*next);
    next_ = next;
  }

  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_logger_;
  ManualClock clock_;
  metrics::Registry registry_;
  ConfigPtr startup_;
  std::unique_ptr<config::ConfigStore> store_;
  absl::StatusOr<ConfigPtr> next_ = absl::InternalError("no next configuration");
  std::unique_ptr<LiveModule> module_;
};

TEST_F(LiveModuleTest, ReloadNamesEveryFixedSettingItChangesAndPublishesTheRest) {
  NextConfig([](config::Config& c) {
    c.server.http_port = 9090;
    c.data_dir = "/srv/ailb";
    c.server.control_token = "new-token-value";
    c.routing_strategy = "least_busy";
  });
  const ConfigUpdateResult result = module_->Reload();
  EXPECT_TRUE(result.applied);
  EXPECT_EQ(result.message,
            "configuration reloaded; takes effect after restart: server.http_port, "
            "AILB_CONTROL_TOKEN, data_dir");
  EXPECT_EQ(store_->Current()->routing_strategy, "least_busy");

  const std::string log = log_.str();
  EXPECT_THAT(log, HasSubstr("server.http_port changed from 8080 to 9090; takes effect after "
                             "restart"));
  EXPECT_THAT(log, HasSubstr("data_dir changed from \"./data\" to \"/srv/ailb\"; takes effect "
                             "after restart"));
  EXPECT_THAT(log, HasSubstr("AILB_CONTROL_TOKEN changed; takes effect after restart"));
  EXPECT_THAT(log, Not(HasSubstr("token-value")));
}

TEST_F(LiveModuleTest, APendingRestartIsReportedAgainAtTheNextReload) {
  NextConfig([](config::Config& c) { c.server.grpc_port = 6000; });
  ASSERT_TRUE(module_->Reload().applied);
  // The published snapshot now says 6000, but the listener is still on the start-up port.
  const ConfigUpdateResult again = module_->Reload();
  EXPECT_THAT(again.message, HasSubstr("takes effect after restart: server.grpc_port"));

  NextConfig([](config::Config&) {});  // back to the start-up values
  EXPECT_EQ(module_->Reload().message, "configuration reloaded");
}

TEST_F(LiveModuleTest, ValidateOnlySaysWhatWouldNeedARestartWithoutLogging) {
  NextConfig([](config::Config& c) { c.log_format = "json"; });
  const ConfigUpdateResult result = module_->UpdateConfig("ignored", /*validate_only=*/true);
  EXPECT_TRUE(result.validation_passed);
  EXPECT_FALSE(result.applied);
  EXPECT_THAT(result.message, HasSubstr("takes effect after restart: log_format"));
  EXPECT_THAT(log_.str(), Not(HasSubstr("log_format changed")));
  EXPECT_EQ(store_->Current(), startup_);
}

TEST_F(LiveModuleTest, InstanceIdFollowsTheConfiguration) {
  EXPECT_EQ(module_->InstanceId(), "ailb-a");
  NextConfig([](config::Config& c) { c.module_id = "ailb-b"; });
  const ConfigUpdateResult result = module_->Reload();
  ASSERT_TRUE(result.applied);
  EXPECT_EQ(result.message, "configuration reloaded") << "module_id applies live";
  EXPECT_EQ(module_->InstanceId(), "ailb-b");
  EXPECT_EQ(module_->CurrentConfig().config_id, "ailb-b");
}

}  // namespace
}  // namespace ailb::control
