// Routing features through the real binary and fake upstreams: hedging, fallback chains across
// model groups (also for prompts too long for a model), per-request deadlines and strategies, and
// active health checks.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace ailb::testing {
namespace {

using nlohmann::json;

std::unique_ptr<FakeLlmServer> StartFake(const FakeBehavior& behavior) {
  auto server = FakeLlmServer::Start();
  EXPECT_TRUE(server.ok());
  if (!server.ok()) return nullptr;
  (*server)->SetDefaultBehavior(behavior);
  return *std::move(server);
}

// Writes `yaml` to a file unique to the running test and returns its path.
std::string WriteConfig(const std::string& yaml) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/ailb-routing-", info->name(), "-", getpid(), ".yaml");
  std::ofstream(path) << yaml;
  return path;
}

std::string Deployment(const std::string& id, const std::string& model, const FakeLlmServer& fake,
                       int priority) {
  return absl::StrCat("  - {model_name: ", model, ", id: ", id, ", provider: openai, model: up-",
                      id, ", api_base: \"", fake.BaseUrl(), "/v1\", priority: ", priority, "}\n");
}

TEST(RoutingTest, HedgedAttemptWinsOverAHangingDeployment) {
  FakeBehavior hang;
  hang.hang = true;
  auto slow = StartFake(hang);
  FakeBehavior ok;
  ok.reply_text = "fast answer";
  auto fast = StartFake(ok);
  ASSERT_TRUE(slow && fast);
  const std::string config = WriteConfig(
      absl::StrCat("routing_strategy: failover\n"
                   "model_groups:\n"
                   "  m: {hedge_after_ms: 150}\n"
                   "model_list:\n",
                   Deployment("slow", "m", *slow, 0), Deployment("fast", "m", *fast, 1)));
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config}});
  ASSERT_NE(ailb, nullptr);
  for (bool stream : {false, true}) {
    HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", stream));
    ASSERT_EQ(result.status, 200) << result.body;
    EXPECT_EQ(result.Header("x-ailb-deployment"), "fast");
    EXPECT_EQ(result.Header("x-ailb-attempts"), "2");
    if (stream) {
      EXPECT_EQ(StreamedContent(result.body), "fast answer");
    } else {
      EXPECT_EQ(result.Json()["choices"][0]["message"]["content"], "fast answer");
    }
  }
  // The losers were cancelled: the hanging upstream sees its connections closed.
  for (int i = 0; i < 100 && slow->OpenConnections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(slow->OpenConnections(), 0);
  HttpResult stats = HttpCall("GET", ailb->Url("/api/routing/stats"));
  ASSERT_EQ(stats.status, 200);
  // Slow is not failed: a hedge loser's verdict is neutral.
  EXPECT_EQ(stats.Json()["provider_stats"]["slow"]["failed_requests"], 0);
  EXPECT_EQ(stats.Json()["model_groups"]["m"]["hedge_after_ms"], 150);
  HttpResult metrics = HttpCall("GET", ailb->Url("/metrics"));
  EXPECT_NE(metrics.body.find("ailb_hedges_total{model=\"m\"} 2"), std::string::npos)
      << metrics.body;
  std::remove(config.c_str());
}

TEST(RoutingTest, FallbackChainServesWhenTheWholeGroupFails) {
  FakeBehavior down;
  down.status = 503;
  auto primary = StartFake(down);
  FakeBehavior ok;
  ok.reply_text = "from the fallback";
  auto backup = StartFake(ok);
  ASSERT_TRUE(primary && backup);
  const std::string config = WriteConfig(
      absl::StrCat("retries: {backoff_base_ms: 1}\n"
                   "model_groups:\n"
                   "  big: {fallbacks: [small]}\n"
                   "model_list:\n",
                   Deployment("big-1", "big", *primary, 0), Deployment("big-2", "big", *primary, 1),
                   Deployment("small-1", "small", *backup, 0)));
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config}});
  ASSERT_NE(ailb, nullptr);
  for (int i = 0; i < 6; ++i) {
    const bool stream = i % 2 == 1;
    HttpResult result =
        HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("big", stream));
    ASSERT_EQ(result.status, 200) << result.body;
    EXPECT_EQ(result.Header("x-ailb-model-group"), "small");
    EXPECT_EQ(result.Header("x-ailb-deployment"), "small-1");
    EXPECT_EQ(stream ? StreamedContent(result.body)
                     : result.Json()["choices"][0]["message"]["content"].get<std::string>(),
              "from the fallback");
  }
  // The big group's breakers are open by now, and requests still succeed through the fallback.
  HttpResult stats = HttpCall("GET", ailb->Url("/api/routing/stats"));
  EXPECT_EQ(stats.Json()["provider_stats"]["big-1"]["state"], "cooling_down");
  // /metrics says so too: six successful fallbacks from big to small, big-1 in a complete outage
  // after entering cooldown, small-1 healthy.
  const std::string metrics = HttpCall("GET", ailb->Url("/metrics")).body;
  auto value_of = [&metrics](const std::string& family, const std::string& label) {
    for (size_t at = metrics.find("\n" + family + "{"); at != std::string::npos;
         at = metrics.find("\n" + family + "{", at + 1)) {
      const std::string line = metrics.substr(at + 1, metrics.find('\n', at + 1) - at - 1);
      if (line.find(label) != std::string::npos) return std::stod(line.substr(line.rfind(' ')));
    }
    return -1.0;
  };
  EXPECT_EQ(value_of("litellm_deployment_successful_fallbacks_total",
                     "{fallback_model=\"small\",requested_model=\"big\"}"),
            6)
      << metrics;
  EXPECT_EQ(value_of("litellm_deployment_state", "litellm_model_name=\"big\",model_id=\"big-1\""),
            2)
      << metrics;
  EXPECT_GE(value_of("litellm_deployment_cooled_down_total", "model_id=\"big-1\""), 1) << metrics;
  EXPECT_EQ(value_of("litellm_deployment_state", "model_id=\"small-1\""), 0) << metrics;
  EXPECT_EQ(value_of("litellm_deployment_cooled_down_total", "model_id=\"small-1\""), 0) << metrics;
  std::remove(config.c_str());
}

TEST(RoutingTest, DeploymentRpmIsEnforcedOverTheLastMinute) {
  FakeBehavior ok;
  ok.reply_text = "fine";
  auto fake = StartFake(ok);
  ASSERT_TRUE(fake);
  // "a" allows 2 requests per minute and is tried first; "b" allows 1.
  const std::string config = WriteConfig(absl::StrCat(
      "routing_strategy: failover\n"
      "model_list:\n"
      "  - {model_name: m, id: a, provider: openai, model: up-a, rpm: 2, priority: 0, api_base: \"",
      fake->BaseUrl(),
      "/v1\"}\n"
      "  - {model_name: m, id: b, provider: openai, model: up-b, rpm: 1, priority: 1, api_base: \"",
      fake->BaseUrl(), "/v1\"}\n"));
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config}});
  ASSERT_NE(ailb, nullptr);
  std::vector<std::string> served;
  for (int i = 0; i < 3; ++i) {
    HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", i == 1));
    ASSERT_EQ(result.status, 200) << result.body;
    served.push_back(result.Header("x-ailb-deployment"));
  }
  EXPECT_EQ(served, (std::vector<std::string>{"a", "a", "b"}));

  HttpResult refused = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false));
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.Json()["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(refused.Json()["error"]["type"], "rate_limit_error");
  const int retry_after = std::atoi(refused.Header("retry-after").c_str());
  EXPECT_GE(retry_after, 55);
  EXPECT_LE(retry_after, 61);
  EXPECT_EQ(fake->RequestCount(), 3u) << "the refused request never reached an upstream";

  HttpResult stats = HttpCall("GET", ailb->Url("/api/routing/stats"));
  ASSERT_EQ(stats.status, 200);
  const json a = stats.Json()["provider_stats"]["a"];
  EXPECT_EQ(a["rpm"], 2);
  EXPECT_EQ(a["requests_last_60s"], 2);
  EXPECT_EQ(a["at_rate_limit"], true);
  std::remove(config.c_str());
}

TEST(RoutingTest, PromptTooLongMovesToTheLongContextGroup) {
  FakeBehavior too_long;
  too_long.status = 400;
  too_long.error_body =
      R"({"error":{"message":"This model's maximum context length is 4096 tokens.",)"
      R"("type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}})";
  auto short_ctx = StartFake(too_long);
  FakeBehavior ok;
  ok.reply_text = "long context answer";
  auto long_ctx = StartFake(ok);
  ASSERT_TRUE(short_ctx && long_ctx);
  const std::string config = WriteConfig(absl::StrCat(
      "model_groups:\n"
      "  chat: {context_window_fallbacks: [chat-long]}\n"
      "model_list:\n",
      Deployment("chat-1", "chat", *short_ctx, 0), Deployment("chat-2", "chat", *short_ctx, 1),
      Deployment("long-1", "chat-long", *long_ctx, 0)));
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config}});
  ASSERT_NE(ailb, nullptr);
  HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("chat", false));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.Header("x-ailb-model-group"), "chat-long");
  EXPECT_EQ(result.Header("x-ailb-attempts"), "2");  // chat-2 shares the window: skipped
  EXPECT_EQ(short_ctx->RequestCount(), 1u);
  // The client's prompt is not the deployment's fault.
  HttpResult stats = HttpCall("GET", ailb->Url("/api/routing/stats"));
  EXPECT_EQ(stats.Json()["provider_stats"]["chat-1"]["failed_requests"], 0);
  std::remove(config.c_str());
}

TEST(RoutingTest, PerRequestDeadlineAndStrategyHeaders) {
  FakeBehavior hang;
  hang.hang = true;
  auto stuck = StartFake(hang);
  ASSERT_TRUE(stuck);
  auto ailb =
      AilbProcess::Start({{"OPENAI_BASE_URL", stuck->BaseUrl() + "/v1"}, {"OPENAI_MODELS", "m"}});
  ASSERT_NE(ailb, nullptr);
  HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false),
                               {"Content-Type: application/json", "X-Ailb-Timeout-Ms: 300"},
                               /*timeout_ms=*/20'000);
  ASSERT_EQ(result.status, 504) << result.body;
  EXPECT_EQ(result.Json()["error"]["code"], "upstream_timeout");

  HttpResult bad = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false),
                            {"Content-Type: application/json", "X-Ailb-Routing-Strategy: psychic"});
  ASSERT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.Json()["error"]["param"], "X-Ailb-Routing-Strategy");
  EXPECT_NE(bad.Json()["error"]["message"].get<std::string>().find("round_robin"),
            std::string::npos);
}

TEST(RoutingTest, ActiveHealthChecksTripADeadDeploymentWithoutTraffic) {
  FakeBehavior down;
  down.status = 503;
  auto dead = StartFake(down);
  auto alive = StartFake(FakeBehavior{});
  ASSERT_TRUE(dead && alive);
  const std::string config = WriteConfig(
      absl::StrCat("health_check_interval_ms: 100\n"
                   "model_list:\n",
                   Deployment("dead", "m", *dead, 0), Deployment("alive", "m", *alive, 1)));
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config}});
  ASSERT_NE(ailb, nullptr);
  json stats;
  for (int i = 0; i < 100; ++i) {
    stats = HttpCall("GET", ailb->Url("/api/routing/stats")).Json();
    if (stats["provider_stats"]["dead"]["state"] == "cooling_down") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(stats["provider_stats"]["dead"]["state"], "cooling_down") << stats.dump();
  EXPECT_GE(stats["provider_stats"]["dead"]["health_checks_failed"].get<int>(), 3);
  EXPECT_EQ(stats["provider_stats"]["dead"]["total_requests"], 0);
  EXPECT_EQ(stats["provider_stats"]["alive"]["state"], "healthy");
  // The probes were the providers' free calls.
  for (const RecordedRequest& request : dead->Requests()) {
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.path, "/v1/models");
  }
  std::remove(config.c_str());
}

}  // namespace
}  // namespace ailb::testing
