// The data plane end to end: the real ailb binary in front of a real (fake) upstream.
#include <curl/curl.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace ailb::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

class ChatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = FakeLlmServer::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
  }

  std::map<std::string, std::string> Env(const std::string& models = "gpt-test") const {
    return {{"OPENAI_BASE_URL", upstream_->BaseUrl() + "/v1"},
            {"OPENAI_MODELS", models},
            {"OPENAI_API_KEY", "sk-upstream-secret-0123456789"}};
  }

  void StartAilb(std::map<std::string, std::string> env) {
    ailb_ = AilbProcess::Start(std::move(env));
    ASSERT_NE(ailb_, nullptr);
  }

  HttpResult Chat(const std::string& body,
                  std::vector<std::string> headers = {"Content-Type: application/json"}) {
    return HttpCall("POST", ailb_->Url("/v1/chat/completions"), body, headers);
  }

  std::unique_ptr<FakeLlmServer> upstream_;
  std::unique_ptr<AilbProcess> ailb_;
};

// Asserts the OpenAI error shape and returns the error object.
json ExpectOpenAIError(const HttpResult& result, long status) {
  EXPECT_EQ(result.status, status) << result.body;
  json body = result.Json();
  EXPECT_TRUE(body.is_object()) << result.body;
  if (!body.is_object() || !body.contains("error")) {
    ADD_FAILURE() << "no error object: " << result.body;
    return json::object();
  }
  const json& error = body["error"];
  EXPECT_TRUE(error.contains("message") && error["message"].is_string()) << result.body;
  EXPECT_TRUE(error.contains("type") && error["type"].is_string()) << result.body;
  EXPECT_TRUE(error.contains("param")) << result.body;
  EXPECT_TRUE(error.contains("code")) << result.body;
  EXPECT_EQ(result.Header("content-type"), "application/json");
  return error;
}

TEST_F(ChatTest, NonStreamReturnsUpstreamAnswerAndForwardsFieldsUntouched) {
  StartAilb(Env("public-name=upstream-model"));
  FakeBehavior behavior;
  behavior.reply_text = "The answer is 42.";
  behavior.prompt_tokens = 21;
  behavior.completion_tokens = 5;
  upstream_->SetDefaultBehavior(behavior);

  json extra = {
      {"session_id", "sess-1"},
      {"rag_collection", "docs"},
      {"rag_top_k", 4},
      {"seed", 7},
      {"logprobs", true},
      {"response_format", {{"type", "json_object"}}},
      {"tools", json::array({{{"type", "function"},
                              {"function", {{"name", "f"}, {"parameters", json::object()}}}}})},
      {"vendor_field", {{"nested", {1, 2, 3}}}}};
  HttpResult result = Chat(ChatBody("public-name", false, extra));
  ASSERT_EQ(result.status, 200) << result.body;
  json reply = result.Json();
  EXPECT_EQ(reply["choices"][0]["message"]["content"], "The answer is 42.");
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(reply["usage"]["prompt_tokens"], 21);
  EXPECT_EQ(reply["usage"]["completion_tokens"], 5);
  EXPECT_EQ(reply["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(result.Header("x-ailb-deployment"), "openai/upstream-model");
  EXPECT_EQ(result.Header("x-ailb-attempts"), "1");
  EXPECT_EQ(result.Header("x-ailb-provider"), "openai");
  ASSERT_FALSE(result.Header("x-ailb-overhead-ms").empty());
  EXPECT_GE(std::stod(result.Header("x-ailb-overhead-ms")), 0.0);

  ASSERT_EQ(upstream_->RequestCount(), 1u);
  RecordedRequest sent = upstream_->Requests()[0];
  EXPECT_EQ(sent.path, "/v1/chat/completions");
  EXPECT_EQ(sent.Header("Authorization"), "Bearer sk-upstream-secret-0123456789");
  json forwarded = sent.JsonBody();
  EXPECT_EQ(forwarded["model"], "upstream-model");
  EXPECT_FALSE(forwarded.contains("session_id"));
  EXPECT_FALSE(forwarded.contains("rag_collection"));
  EXPECT_FALSE(forwarded.contains("rag_top_k"));
  for (const char* field : {"seed", "logprobs", "response_format", "tools", "vendor_field"}) {
    EXPECT_EQ(forwarded[field], extra[field]) << field;
  }
  // The upstream key must never reach the logs.
  EXPECT_EQ(ailb_->Logs().find("sk-upstream-secret"), std::string::npos);
}

TEST_F(ChatTest, EveryCompletionGetsItsOwnId) {
  StartAilb(Env());
  std::string first = Chat(ChatBody("gpt-test", false)).Json()["id"];
  std::string second = Chat(ChatBody("gpt-test", false)).Json()["id"];
  EXPECT_NE(first, second);
}

TEST_F(ChatTest, StreamDeliversFirstChunkBeforeUpstreamFinishes) {
  StartAilb(Env());
  FakeBehavior behavior;
  behavior.reply_text = "one two three four five six";
  behavior.stream_chunks = 6;
  behavior.chunk_interval_ms = 250;
  upstream_->SetDefaultBehavior(behavior);

  std::atomic<int> completed_when_first_content_arrived{-1};
  std::string seen;
  HttpResult result =
      HttpStream(ailb_->Url("/v1/chat/completions"), ChatBody("gpt-test", true),
                 [&](const std::string& piece) {
                   seen += piece;
                   if (completed_when_first_content_arrived < 0 && !StreamedContent(seen).empty()) {
                     completed_when_first_content_arrived = upstream_->StreamsCompleted();
                   }
                   return true;
                 });
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.Header("content-type"), "text/event-stream");
  // The first content reached the client while the upstream was still producing.
  EXPECT_EQ(completed_when_first_content_arrived.load(), 0);
  EXPECT_EQ(StreamedContent(result.body), "one two three four five six");
  std::vector<std::string> payloads = SseDataPayloads(result.body);
  ASSERT_FALSE(payloads.empty());
  EXPECT_EQ(payloads.back(), "[DONE]");
  // No usage chunk unless the client asked for it.
  for (const std::string& payload : payloads) {
    EXPECT_EQ(payload.find("\"usage\""), std::string::npos) << payload;
  }
  EXPECT_EQ(upstream_->StreamsCompleted(), 1);
}

TEST_F(ChatTest, StreamHonoursIncludeUsage) {
  StartAilb(Env());
  FakeBehavior behavior;
  behavior.prompt_tokens = 13;
  behavior.completion_tokens = 9;
  upstream_->SetDefaultBehavior(behavior);
  HttpResult result = HttpStream(
      ailb_->Url("/v1/chat/completions"),
      ChatBody("gpt-test", true, {{"stream_options", {{"include_usage", true}}}}), nullptr);
  ASSERT_EQ(result.status, 200);
  std::vector<std::string> payloads = SseDataPayloads(result.body);
  ASSERT_GE(payloads.size(), 2u);
  json usage_chunk = json::parse(payloads[payloads.size() - 2]);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["prompt_tokens"], 13);
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 9);
}

TEST_F(ChatTest, TwoHundredConcurrentStreamsOnTwoThreadsWhileHealthAnswers) {
  auto env = Env();
  env["HTTP_THREADS"] = "2";
  StartAilb(env);
  FakeBehavior behavior;
  behavior.reply_text = "a b c d e f g h";
  behavior.stream_chunks = 8;
  behavior.chunk_interval_ms = 250;  // each stream lasts about 2 s
  upstream_->SetDefaultBehavior(behavior);

  constexpr int kStreams = 200;
  std::atomic<bool> streams_done{false};
  std::atomic<int> health_ok{0};
  std::atomic<int> health_failed{0};
  std::thread prober([&] {
    while (!streams_done) {
      HttpResult health = HttpCall("GET", ailb_->Url("/healthz"), "", {}, 5'000);
      (health.status == 200 ? health_ok : health_failed)++;
      std::this_thread::sleep_for(milliseconds(50));
    }
  });

  CURLM* multi = curl_multi_init();
  std::vector<CURL*> handles;
  std::vector<std::string> bodies(kStreams);
  const std::string request = ChatBody("gpt-test", true);
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  for (int i = 0; i < kStreams; ++i) {
    CURL* easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, ailb_->Url("/v1/chat/completions").c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 60'000L);
    curl_easy_setopt(
        easy, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* user) {
          static_cast<std::string*>(user)->append(data, size * count);
          return size * count;
        });
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &bodies[i]);
    curl_multi_add_handle(multi, easy);
    handles.push_back(easy);
  }
  int running = 0;
  int completed_ok = 0;
  do {
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
      if (message->msg == CURLMSG_DONE && message->data.result == CURLE_OK) ++completed_ok;
    }
    curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  } while (running > 0);
  streams_done = true;
  prober.join();

  EXPECT_EQ(completed_ok, kStreams);
  int intact = 0;
  for (const std::string& body : bodies) {
    std::vector<std::string> payloads = SseDataPayloads(body);
    if (StreamedContent(body) == "a b c d e f g h" && !payloads.empty() &&
        payloads.back() == "[DONE]") {
      ++intact;
    }
  }
  EXPECT_EQ(intact, kStreams);
  EXPECT_GE(health_ok.load(), 5) << "health should keep answering while streams run";
  EXPECT_EQ(health_failed.load(), 0);
  for (CURL* easy : handles) {
    curl_multi_remove_handle(multi, easy);
    curl_easy_cleanup(easy);
  }
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
}

TEST_F(ChatTest, BadInputGetsClearClientErrors) {
  auto env = Env();
  env["AILB_MAX_BODY_BYTES"] = "4096";
  StartAilb(env);

  json error = ExpectOpenAIError(Chat("{not json"), 400);
  EXPECT_EQ(error["code"], "invalid_json");
  EXPECT_EQ(error["type"], "invalid_request_error");

  error = ExpectOpenAIError(Chat(R"({"messages":[{"role":"user","content":"x"}]})"), 400);
  EXPECT_EQ(error["param"], "model");
  error = ExpectOpenAIError(Chat(R"({"model":"gpt-test","messages":"hello"})"), 400);
  EXPECT_EQ(error["param"], "messages");
  error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false, {{"temperature", "hot"}})), 400);
  EXPECT_EQ(error["param"], "temperature");
  error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false, {{"stream", "yes"}})), 400);
  EXPECT_EQ(error["param"], "stream");
  error = ExpectOpenAIError(Chat("[1,2,3]"), 400);

  ExpectOpenAIError(Chat(ChatBody("gpt-test", false), {"Content-Type: text/plain"}), 415);
  std::string big = ChatBody("gpt-test", false, {{"padding", std::string(8000, 'x')}});
  error = ExpectOpenAIError(Chat(big), 413);
  EXPECT_EQ(error["code"], "request_too_large");

  error = ExpectOpenAIError(Chat(ChatBody("no-such-model", false)), 404);
  EXPECT_EQ(error["code"], "model_not_found");
  ExpectOpenAIError(HttpCall("GET", ailb_->Url("/v1/nothing-here")), 404);
  HttpResult wrong_method = HttpCall("GET", ailb_->Url("/v1/chat/completions"));
  ExpectOpenAIError(wrong_method, 405);
  EXPECT_EQ(wrong_method.Header("allow"), "POST");
  ExpectOpenAIError(HttpCall("DELETE", ailb_->Url("/healthz")), 405);

  // Nothing reached the upstream, and the server still serves.
  EXPECT_EQ(upstream_->RequestCount(), 0u);
  EXPECT_EQ(Chat(ChatBody("gpt-test", false)).status, 200);
}

TEST_F(ChatTest, ApiKeysAreEnforcedWhenConfigured) {
  auto env = Env();
  env["AILB_API_KEYS"] =
      "client-key-123456,sha256:" +
      std::string("0f2a83a3f3b6b8b1a0c74e4bf3cf5c5b7d4b7a0c7c1ef2a7f0f1d1a1c0e2d3f4");
  StartAilb(env);
  json error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false)), 401);
  EXPECT_EQ(error["type"], "authentication_error");
  ExpectOpenAIError(Chat(ChatBody("gpt-test", false),
                         {"Content-Type: application/json", "Authorization: Bearer wrong-key-000"}),
                    401);
  EXPECT_EQ(Chat(ChatBody("gpt-test", false),
                 {"Content-Type: application/json", "Authorization: Bearer client-key-123456"})
                .status,
            200);
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/models"), "", {"x-api-key: client-key-123456"}).status,
            200);
  ExpectOpenAIError(HttpCall("GET", ailb_->Url("/v1/models")), 401);
  // Health stays open for load balancers and probes.
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/healthz")).status, 200);
  EXPECT_EQ(ailb_->Logs().find("client-key-123456"), std::string::npos);
}

TEST_F(ChatTest, UpstreamErrorsMapToGatewayStatuses) {
  auto env = Env();
  env["AILB_FIRST_BYTE_TIMEOUT_MS"] = "400";
  StartAilb(env);

  FakeBehavior rate_limited;
  rate_limited.status = 429;
  rate_limited.extra_headers = {{"Retry-After", "7"}};
  upstream_->EnqueueBehavior(rate_limited);
  HttpResult result = Chat(ChatBody("gpt-test", false));
  ExpectOpenAIError(result, 429);
  EXPECT_EQ(result.Header("retry-after"), "7");

  // The deployment is now cooling down (429 with Retry-After): no deployment is available.
  result = Chat(ChatBody("gpt-test", false));
  json error = ExpectOpenAIError(result, 503);
  EXPECT_EQ(error["code"], "no_deployment_available");
  EXPECT_FALSE(result.Header("retry-after").empty());
  json health = HttpCall("GET", ailb_->Url("/healthz")).Json();
  EXPECT_EQ(health["deployments"][0]["state"], "cooling_down");
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/healthz")).status, 503);
}

TEST_F(ChatTest, MalformedUpstreamReplyIs502AndHangIs504) {
  auto env = Env();
  env["AILB_FIRST_BYTE_TIMEOUT_MS"] = "400";
  StartAilb(env);
  FakeBehavior malformed;
  malformed.malformed_json = true;
  upstream_->EnqueueBehavior(malformed);
  json error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false)), 502);
  EXPECT_EQ(error["type"], "upstream_error");

  FakeBehavior hang;
  hang.hang = true;
  upstream_->EnqueueBehavior(hang);
  error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false)), 504);
  EXPECT_EQ(error["code"], "upstream_timeout");

  // A client's bad request relayed from the upstream stays a 400 and does not count against it.
  FakeBehavior bad_request;
  bad_request.status = 400;
  bad_request.error_body =
      R"({"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":"bad_max"}})";
  upstream_->EnqueueBehavior(bad_request);
  error = ExpectOpenAIError(Chat(ChatBody("gpt-test", false)), 400);
  EXPECT_EQ(error["message"], "max_tokens is too large");
  EXPECT_EQ(error["param"], "max_tokens");
}

TEST_F(ChatTest, StreamCutMidwayEndsWithErrorEventAndDone) {
  StartAilb(Env());
  FakeBehavior cut;
  cut.stream_chunks = 5;
  cut.cut_after_chunks = 2;
  upstream_->EnqueueBehavior(cut);
  HttpResult result =
      HttpStream(ailb_->Url("/v1/chat/completions"), ChatBody("gpt-test", true), nullptr);
  ASSERT_EQ(result.status, 200);
  EXPECT_TRUE(result.transport_error.empty()) << result.transport_error;
  std::vector<std::string> payloads = SseDataPayloads(result.body);
  ASSERT_GE(payloads.size(), 2u);
  EXPECT_EQ(payloads.back(), "[DONE]");
  json error_event = json::parse(payloads[payloads.size() - 2], nullptr, false);
  ASSERT_TRUE(error_event.contains("error")) << payloads[payloads.size() - 2];
  EXPECT_TRUE(error_event["error"]["message"].is_string());
}

TEST_F(ChatTest, ClientDisconnectCancelsTheUpstreamStream) {
  StartAilb(Env());
  FakeBehavior slow;
  slow.stream_chunks = 20;
  slow.chunk_interval_ms = 200;
  upstream_->SetDefaultBehavior(slow);
  HttpResult result = HttpStream(
      ailb_->Url("/v1/chat/completions"), ChatBody("gpt-test", true),
      [](const std::string& piece) { return piece.find("\"content\"") == std::string::npos; });
  EXPECT_FALSE(result.transport_error.empty());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (upstream_->StreamsAbortedByPeer() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(upstream_->StreamsAbortedByPeer(), 1);
  EXPECT_EQ(upstream_->StreamsCompleted(), 0);
}

TEST_F(ChatTest, ClientDisconnectWhileUpstreamThinksCancelsIt) {
  StartAilb(Env());
  FakeBehavior slow;
  slow.delay_before_headers_ms = 10'000;
  upstream_->SetDefaultBehavior(slow);
  HttpResult result =
      HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody("gpt-test", true),
               {"Content-Type: application/json"}, /*timeout_ms=*/300);
  EXPECT_FALSE(result.transport_error.empty());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (upstream_->OpenConnections() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(upstream_->OpenConnections(), 0) << "the upstream request should be abandoned";
}

TEST_F(ChatTest, SigtermDrainsStreamsInFlight) {
  StartAilb(Env());
  FakeBehavior slow;
  slow.reply_text = "draining works";
  slow.stream_chunks = 4;
  slow.chunk_interval_ms = 300;
  upstream_->SetDefaultBehavior(slow);
  std::atomic<bool> signalled{false};
  HttpResult result = HttpStream(ailb_->Url("/v1/chat/completions"), ChatBody("gpt-test", true),
                                 [&](const std::string&) {
                                   if (!signalled.exchange(true)) ailb_->Signal(SIGTERM);
                                   return true;
                                 });
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(StreamedContent(result.body), "draining works");
  EXPECT_EQ(SseDataPayloads(result.body).back(), "[DONE]");
  EXPECT_EQ(ailb_->WaitForExit(std::chrono::seconds(10)), 0);
}

TEST_F(ChatTest, RequestIdIsHonouredAndEchoed) {
  StartAilb(Env());
  HttpResult given = Chat(ChatBody("gpt-test", false),
                          {"Content-Type: application/json", "X-Request-Id: trace-abc-123"});
  EXPECT_EQ(given.Header("x-request-id"), "trace-abc-123");
  EXPECT_TRUE(ailb_->WaitForLog("request_id=trace-abc-123", milliseconds(2000)));
  HttpResult generated = Chat(ChatBody("gpt-test", false));
  EXPECT_FALSE(generated.Header("x-request-id").empty());
}

TEST_F(ChatTest, ModelsAreListed) {
  StartAilb(Env("gpt-test,other-model"));
  json list = HttpCall("GET", ailb_->Url("/v1/models")).Json();
  ASSERT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0]["id"], "gpt-test");
  EXPECT_EQ(list["data"][1]["id"], "other-model");
  HttpResult one = HttpCall("GET", ailb_->Url("/v1/models/other-model"));
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(one.Json()["id"], "other-model");
  ExpectOpenAIError(HttpCall("GET", ailb_->Url("/v1/models/missing")), 404);
}

TEST(ChatStartupTest, HealthIs503WithoutDeployments) {
  std::unique_ptr<AilbProcess> ailb = AilbProcess::Start({});
  ASSERT_NE(ailb, nullptr);
  HttpResult health = HttpCall("GET", ailb->Url("/healthz"));
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.Json()["status"], "unavailable");
}

TEST(ChatStartupTest, InvalidConfigurationStopsStartupNamingTheKey) {
  auto [code, output] = AilbProcess::RunToExit({{"HTTP_PORT", "not-a-port"}});
  EXPECT_NE(code, 0);
  EXPECT_NE(output.find("HTTP_PORT"), std::string::npos) << output;
}

class FailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* slot : {&first_, &second_}) {
      auto server = FakeLlmServer::Start();
      ASSERT_TRUE(server.ok());
      *slot = *std::move(server);
    }
    // ctest runs test cases in parallel processes: each needs a file of its own.
    config_path_ = ::testing::TempDir() + "/ailb-failover-" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml";
  }

  void WriteConfig(const std::string& first_base, const std::string& second_base) {
    std::ofstream(config_path_) << "routing_strategy: failover\n"
                                   "model_list:\n"
                                   "  - model_name: m\n"
                                   "    provider: openai\n"
                                   "    model: m-primary\n"
                                   "    id: primary\n"
                                   "    priority: 0\n"
                                   "    api_base: "
                                << first_base
                                << "\n"
                                   "  - model_name: m\n"
                                   "    provider: openai\n"
                                   "    model: m-secondary\n"
                                   "    id: secondary\n"
                                   "    priority: 1\n"
                                   "    api_base: "
                                << second_base << "\n";
  }

  std::unique_ptr<FakeLlmServer> first_;
  std::unique_ptr<FakeLlmServer> second_;
  std::string config_path_;
};

TEST_F(FailoverTest, ServerErrorMovesToTheNextDeployment) {
  WriteConfig(first_->BaseUrl() + "/v1", second_->BaseUrl() + "/v1");
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config_path_}});
  ASSERT_NE(ailb, nullptr);
  FakeBehavior failing;
  failing.status = 500;
  first_->SetDefaultBehavior(failing);
  FakeBehavior ok;
  ok.reply_text = "from secondary";
  second_->SetDefaultBehavior(ok);

  HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.Json()["choices"][0]["message"]["content"], "from secondary");
  EXPECT_EQ(result.Header("x-ailb-deployment"), "secondary");
  EXPECT_EQ(result.Header("x-ailb-attempts"), "2");

  HttpResult streamed = HttpStream(ailb->Url("/v1/chat/completions"), ChatBody("m", true), nullptr);
  ASSERT_EQ(streamed.status, 200);
  EXPECT_EQ(StreamedContent(streamed.body), "from secondary");
}

TEST_F(FailoverTest, RefusedConnectionMovesToTheNextDeployment) {
  // A port that was just free: nothing listens there.
  std::string refused_base;
  {
    auto closed = FakeLlmServer::Start();
    ASSERT_TRUE(closed.ok());
    refused_base = (*closed)->BaseUrl() + "/v1";
  }
  WriteConfig(refused_base, second_->BaseUrl() + "/v1");
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config_path_}});
  ASSERT_NE(ailb, nullptr);
  for (int i = 0; i < 5; ++i) {
    HttpResult result = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false));
    ASSERT_EQ(result.status, 200) << result.body;
    EXPECT_EQ(result.Header("x-ailb-deployment"), "secondary");
  }
  // After three refusals the primary's breaker is open and requests go straight to secondary.
  json health = HttpCall("GET", ailb->Url("/healthz")).Json();
  EXPECT_EQ(health["deployments"][0]["state"], "cooling_down");
  EXPECT_EQ(health["status"], "ok");
  json stats = HttpCall("GET", ailb->Url("/api/routing/stats")).Json();
  EXPECT_EQ(stats["routing_strategy"], "failover");
  const json& primary = stats["provider_stats"]["primary"];
  EXPECT_EQ(primary["state"], "cooling_down");
  EXPECT_EQ(primary["failed_requests"], 3);
  EXPECT_EQ(primary["consecutive_failures"], 3);
  EXPECT_EQ(primary["success_rate"], 0.0);
  EXPECT_TRUE(primary["last_failure"].is_number());
  EXPECT_TRUE(primary["last_success"].is_null());
  const json& secondary = stats["provider_stats"]["secondary"];
  EXPECT_EQ(secondary["successful_requests"], 5);
  EXPECT_EQ(secondary["success_rate"], 1.0);
  EXPECT_GT(secondary["avg_latency_ms"].get<double>(), 0);
}

}  // namespace
}  // namespace ailb::testing

namespace ailb::testing {
namespace {

TEST(FaultMixTest, OneHealthyDeploymentLeftServesEveryRequest) {
  std::vector<std::unique_ptr<FakeLlmServer>> upstreams;
  for (int i = 0; i < 4; ++i) {
    auto server = FakeLlmServer::Start();
    ASSERT_TRUE(server.ok());
    upstreams.push_back(*std::move(server));
  }
  FakeBehavior failing;
  failing.status = 500;
  upstreams[0]->SetDefaultBehavior(failing);
  FakeBehavior hanging;
  hanging.hang = true;
  upstreams[1]->SetDefaultBehavior(hanging);
  FakeBehavior stalls_mid_stream;
  stalls_mid_stream.hang_mid_stream = true;
  stalls_mid_stream.stream_chunks = 5;
  upstreams[2]->SetDefaultBehavior(stalls_mid_stream);
  FakeBehavior healthy;
  healthy.reply_text = "still here";
  upstreams[3]->SetDefaultBehavior(healthy);

  const std::string config_path = ::testing::TempDir() + "/ailb-fault-mix.yaml";
  {
    std::ofstream out(config_path);
    out << "routing_strategy: round_robin\nmodel_list:\n";
    for (int i = 0; i < 4; ++i) {
      out << "  - {model_name: m, provider: openai, model: m, id: d" << i
          << ", api_base: " << upstreams[i]->BaseUrl() << "/v1}\n";
    }
  }
  auto ailb = AilbProcess::Start({{"AILB_CONFIG", config_path},
                                  {"AILB_FIRST_BYTE_TIMEOUT_MS", "300"},
                                  {"AILB_STREAM_IDLE_TIMEOUT_MS", "300"}});
  ASSERT_NE(ailb, nullptr);
  // Three of four deployments misbehave; the breaker takes them out of rotation, and until it
  // does, failover before the first byte covers the rest (every deployment may be tried).
  int succeeded = 0;
  constexpr int kRequests = 30;
  for (int i = 0; i < kRequests; ++i) {
    HttpResult result =
        HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", /*stream=*/false));
    if (result.status == 200 && result.Json()["choices"][0]["message"]["content"] == "still here") {
      ++succeeded;
    }
  }
  // A mid-stream stall after the first byte cannot move, so only non-streamed requests are
  // promised to succeed; they all must.
  EXPECT_EQ(succeeded, kRequests);
  json stats = HttpCall("GET", ailb->Url("/api/routing/stats")).Json();
  for (const char* broken : {"d0", "d1"}) {
    EXPECT_EQ(stats["provider_stats"][broken]["state"], "cooling_down") << broken;
  }
  // A stream that stalls after its first chunk ends with an error event and [DONE], promptly.
  auto stall_only = AilbProcess::Start({{"OPENAI_BASE_URL", upstreams[2]->BaseUrl() + "/v1"},
                                        {"OPENAI_MODELS", "m"},
                                        {"AILB_STREAM_IDLE_TIMEOUT_MS", "300"}});
  ASSERT_NE(stall_only, nullptr);
  HttpResult stalled =
      HttpStream(stall_only->Url("/v1/chat/completions"), ChatBody("m", true), nullptr);
  ASSERT_EQ(stalled.status, 200);
  std::vector<std::string> payloads = SseDataPayloads(stalled.body);
  ASSERT_GE(payloads.size(), 2u);
  EXPECT_EQ(payloads.back(), "[DONE]");
  EXPECT_NE(payloads[payloads.size() - 2].find("\"error\""), std::string::npos);
}

}  // namespace
}  // namespace ailb::testing
