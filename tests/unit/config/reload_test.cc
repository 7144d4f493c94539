// Which settings a reload cannot apply (read once at start), and how a change is described.
#include "ailb/config/reload.h"

#include <string>
#include <vector>

#include "ailb/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

std::vector<std::string> Warnings(const Config& started, const Config& next) {
  std::vector<std::string> warnings;
  for (const SettingChange& change : RestartOnlyChanges(started, next)) {
    warnings.push_back(change.RestartWarning());
  }
  return warnings;
}

TEST(RestartOnlyChangesTest, SameConfigurationHasNone) {
  Config config;
  EXPECT_THAT(RestartOnlyChanges(config, config), IsEmpty());
}

TEST(RestartOnlyChangesTest, SettingsAppliedLiveAreNotReported) {
  Config started;
  Config next = started;
  next.module_id = "ailb-2";
  next.log_level = "debug";  // applied at once by the reload
  next.routing_strategy = "least_busy";
  next.enable_memory = false;
  next.enable_rag = false;
  next.session_affinity = true;
  next.api_keys = {"another-key-1"};
  next.server.drain_timeout_ms = 1;
  next.timeouts.connect_ms = 1;
  next.retries.max_attempts = 1;
  next.health_check_interval_ms = 1000;
  next.deployments.emplace_back();
  next.deployments.back().id = "a";
  next.deployments.back().model_name = "gpt";
  EXPECT_THAT(RestartOnlyChanges(started, next), IsEmpty());
}

TEST(RestartOnlyChangesTest, EveryFixedSettingIsNamedWithBothValues) {
  Config started;
  Config next = started;
  next.server.host = "127.0.0.1";
  next.server.http_port = 9090;
  next.server.http_threads = 4;
  next.server.max_body_bytes = 1 << 20;
  next.timeouts.total_ms = 900'000;
  next.server.grpc_host = "10.0.0.1";
  next.server.grpc_port = 50052;
  next.server.promotion_interval_ms = 5'000;
  next.data_dir = "/var/lib/ailb";
  next.log_format = "json";
  EXPECT_THAT(
      Warnings(started, next),
      ElementsAre(
          "server.host changed from \"0.0.0.0\" to \"127.0.0.1\"; takes effect after restart",
          "server.http_port changed from 8080 to 9090; takes effect after restart",
          "server.http_threads changed from 2 to 4; takes effect after restart",
          "server.max_body_bytes changed from 8388608 to 1048576; takes effect after restart",
          "HTTP keep-alive timeout in ms (timeouts.total_ms + 60000) changed from 660000 to "
          "960000; takes effect after restart",
          "server.grpc_host changed from \"0.0.0.0\" to \"10.0.0.1\"; takes effect after restart",
          "server.grpc_port changed from 50051 to 50052; takes effect after restart",
          "server.promotion_interval_ms changed from 30000 to 5000; takes effect after restart",
          "data_dir changed from \"./data\" to \"/var/lib/ailb\"; takes effect after restart",
          "log_format changed from \"text\" to \"json\"; takes effect after restart"));
}

TEST(RestartOnlyChangesTest, GrpcHostComparesTheEffectiveBindAddress) {
  Config started;
  started.server.host = "127.0.0.1";  // grpc_host empty: the gRPC listener binds here too
  Config next = started;
  next.server.grpc_host = "127.0.0.1";
  EXPECT_THAT(RestartOnlyChanges(started, next), IsEmpty()) << "the same address, spelled out";
  next.server.grpc_host = "";
  next.server.host = "0.0.0.0";
  std::vector<SettingChange> changes = RestartOnlyChanges(started, next);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].name, "server.host");
  EXPECT_EQ(changes[1].name, "server.grpc_host");
  EXPECT_EQ(changes[1].to, "\"0.0.0.0\"");
}

TEST(RestartOnlyChangesTest, TheControlTokenIsReportedWithoutItsValues) {
  Config started;
  started.server.control_token = "old-secret-token";
  Config next = started;
  next.server.control_token = "new-secret-token";
  std::vector<SettingChange> changes = RestartOnlyChanges(started, next);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].secret);
  EXPECT_THAT(changes[0].from, IsEmpty());
  EXPECT_THAT(changes[0].to, IsEmpty());
  EXPECT_EQ(changes[0].RestartWarning(), "AILB_CONTROL_TOKEN changed; takes effect after restart");
  EXPECT_THAT(changes[0].Describe(), Not(HasSubstr("secret-token")));

  next.server.control_token = "";  // removing it is a change too
  EXPECT_THAT(Warnings(started, next),
              ElementsAre("AILB_CONTROL_TOKEN changed; takes effect after restart"));
}

TEST(RestartOnlyChangesTest, ComparesWithTheStartUpValuesNotThePreviousReload) {
  // A second reload that keeps a pending change still reports it; one that restores the
  // start-up value reports nothing.
  Config started;
  Config first = started;
  first.server.http_port = 9090;
  Config second = first;
  EXPECT_THAT(
      Warnings(started, second),
      ElementsAre("server.http_port changed from 8080 to 9090; takes effect after restart"));
  EXPECT_THAT(RestartOnlyChanges(started, started), IsEmpty());
}

}  // namespace
}  // namespace ailb::config
