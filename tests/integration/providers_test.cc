// Anthropic and Ollama deployments through the real binary: clients speak OpenAI, the fake
// upstream speaks each provider's own protocol.
#include <set>

#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace ailb::testing {
namespace {

using nlohmann::json;

class ProvidersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = FakeLlmServer::Start();
    ASSERT_TRUE(upstream.ok());
    upstream_ = *std::move(upstream);
    FakeBehavior behavior;
    behavior.reply_text = "Bonjour from the provider.";
    behavior.stream_chunks = 4;
    behavior.prompt_tokens = 17;
    behavior.completion_tokens = 6;
    upstream_->SetDefaultBehavior(behavior);
  }

  void ExpectBothShapes(const std::string& model, const std::string& expected_path) {
    HttpResult plain = HttpCall("POST", ailb_->Url("/v1/chat/completions"),
                                ChatBody(model, false,
                                         {{"messages",
                                           {{{"role", "system"}, {"content", "Be brief."}},
                                            {{"role", "user"}, {"content", "Hi"}}}}}));
    ASSERT_EQ(plain.status, 200) << plain.body;
    json reply = plain.Json();
    EXPECT_EQ(reply["object"], "chat.completion");
    EXPECT_EQ(reply["choices"][0]["message"]["content"], "Bonjour from the provider.");
    EXPECT_EQ(reply["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(reply["usage"]["prompt_tokens"], 17);
    EXPECT_EQ(reply["usage"]["completion_tokens"], 6);

    HttpResult streamed =
        HttpStream(ailb_->Url("/v1/chat/completions"),
                   ChatBody(model, true, {{"stream_options", {{"include_usage", true}}}}), nullptr);
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_EQ(StreamedContent(streamed.body), "Bonjour from the provider.");
    std::vector<std::string> payloads = SseDataPayloads(streamed.body);
    ASSERT_GE(payloads.size(), 3u);
    EXPECT_EQ(payloads.back(), "[DONE]");
    json usage = json::parse(payloads[payloads.size() - 2], nullptr, false);
    EXPECT_EQ(usage["usage"]["completion_tokens"], 6) << payloads[payloads.size() - 2];

    ASSERT_GE(upstream_->RequestCount(), 2u);
    for (const RecordedRequest& request : upstream_->Requests()) {
      EXPECT_EQ(request.path, expected_path);
    }
  }

  std::unique_ptr<FakeLlmServer> upstream_;
  std::unique_ptr<AilbProcess> ailb_;
};

TEST_F(ProvidersTest, AnthropicDeploymentServesOpenAIClients) {
  ailb_ = AilbProcess::Start({{"ANTHROPIC_BASE_URL", upstream_->BaseUrl()},
                              {"ANTHROPIC_MODELS", "claude-test"},
                              {"ANTHROPIC_API_KEY", "sk-ant-test-key"}});
  ASSERT_NE(ailb_, nullptr);
  ExpectBothShapes("claude-test", "/v1/messages");
  RecordedRequest first = upstream_->Requests()[0];
  EXPECT_EQ(first.Header("x-api-key"), "sk-ant-test-key");
  EXPECT_FALSE(first.Header("anthropic-version").empty());
  json body = first.JsonBody();
  EXPECT_EQ(body["system"], "Be brief.");
  EXPECT_EQ(body["messages"][0]["role"], "user");
  EXPECT_TRUE(body["max_tokens"].is_number_integer());
}

TEST_F(ProvidersTest, OllamaDeploymentServesOpenAIClients) {
  ailb_ = AilbProcess::Start(
      {{"OLLAMA_BASE_URL", upstream_->BaseUrl()}, {"OLLAMA_MODELS", "llama-test"}});
  ASSERT_NE(ailb_, nullptr);
  ExpectBothShapes("llama-test", "/api/chat");
  json body = upstream_->Requests()[0].JsonBody();
  EXPECT_EQ(body["stream"], false);
  EXPECT_EQ(body["model"], "llama-test");
}

TEST_F(ProvidersTest, OneModelServedByTwoProvidersFailsOverBetweenThem) {
  auto other = FakeLlmServer::Start();
  ASSERT_TRUE(other.ok());
  FakeBehavior down;
  down.status = 503;
  (*other)->SetDefaultBehavior(down);
  ailb_ = AilbProcess::Start({{"OPENAI_BASE_URL", (*other)->BaseUrl() + "/v1"},
                              {"OPENAI_MODELS", "shared"},
                              {"OLLAMA_BASE_URL", upstream_->BaseUrl()},
                              {"OLLAMA_MODELS", "shared"},
                              {"ROUTING_STRATEGY", "round_robin"}});
  ASSERT_NE(ailb_, nullptr);
  for (int i = 0; i < 6; ++i) {
    HttpResult result =
        HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody("shared", i % 2 == 0));
    ASSERT_EQ(result.status, 200) << result.body;
    EXPECT_EQ(result.Header("x-ailb-provider"), "ollama");
  }
}

}  // namespace
}  // namespace ailb::testing

namespace ailb::testing {
namespace {

TEST(SessionAffinityTest, ASessionSticksToItsDeploymentWhileOthersRotate) {
  auto first = FakeLlmServer::Start();
  auto second = FakeLlmServer::Start();
  ASSERT_TRUE(first.ok() && second.ok());
  auto ailb = AilbProcess::Start({{"OPENAI_BASE_URL", (*first)->BaseUrl() + "/v1"},
                                  {"OPENAI_MODELS", "shared"},
                                  {"OLLAMA_BASE_URL", (*second)->BaseUrl()},
                                  {"OLLAMA_MODELS", "shared"},
                                  {"ROUTING_STRATEGY", "round_robin"},
                                  {"AILB_SESSION_AFFINITY", "true"}});
  ASSERT_NE(ailb, nullptr);
  auto deployment_for = [&](const nlohmann::json& extra) {
    HttpResult result =
        HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("shared", false, extra));
    EXPECT_EQ(result.status, 200) << result.body;
    return result.Header("x-ailb-deployment");
  };
  std::set<std::string> without_session;
  for (int i = 0; i < 4; ++i) without_session.insert(deployment_for(nlohmann::json::object()));
  EXPECT_EQ(without_session.size(), 2u) << "round robin should use both deployments";

  const std::string pinned = deployment_for({{"session_id", "conversation-1"}});
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(deployment_for({{"session_id", "conversation-1"}}), pinned);
  }
}

}  // namespace
}  // namespace ailb::testing
