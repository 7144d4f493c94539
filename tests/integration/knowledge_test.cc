// Session memory and RAG through the real binary: the REST API, context injected into chat
// requests as the fake upstream receives them, soft failures, and durability across SIGKILL.
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace ailb::testing {
namespace {

using nlohmann::json;

const std::vector<std::string> kJson = {"Content-Type: application/json"};

class KnowledgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = FakeLlmServer::Start();
    ASSERT_TRUE(upstream.ok());
    upstream_ = *std::move(upstream);
    char dir_template[] = "/tmp/ailb-knowledge-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    data_dir_ = dir_template;
    Start();
  }

  void Start() {
    ailb_ = AilbProcess::Start({{"OPENAI_BASE_URL", upstream_->BaseUrl() + "/v1"},
                                {"OPENAI_MODELS", "gpt-test"},
                                {"AILB_DATA_DIR", data_dir_}});
    ASSERT_NE(ailb_, nullptr);
  }

  HttpResult Post(const std::string& path, const json& body) {
    return HttpCall("POST", ailb_->Url(path), body.dump(), kJson);
  }

  // The system messages of the n-th request the upstream received.
  std::string SystemText(size_t n) {
    std::vector<RecordedRequest> requests = upstream_->Requests();
    EXPECT_GT(requests.size(), n);
    if (requests.size() <= n) return "";
    std::string text;
    const json body = requests[n].JsonBody();  // kept alive for the loop
    for (const json& message : body["messages"]) {
      if (message["role"] == "system") text += message["content"].get<std::string>() + "\n";
    }
    return text;
  }

  std::unique_ptr<FakeLlmServer> upstream_;
  std::unique_ptr<AilbProcess> ailb_;
  std::string data_dir_;
};

TEST_F(KnowledgeTest, RetrievedChunksAreInjectedAndNamedInTheReply) {
  ASSERT_EQ(Post("/v1/rag/collections", {{"name", "manuals"}}).status, 201);
  HttpResult upsert = Post("/v1/rag/collections/manuals/documents",
                           {{"documents",
                             {{{"id", "pump"},
                               {"text", "The hydraulic pump must be primed with 2 litres of oil."},
                               {"metadata", {{"team", "ops"}}}},
                              {{"id", "fan"}, {"text", "Fan blades are cleaned monthly."}}}}});
  ASSERT_EQ(upsert.status, 200) << upsert.body;
  EXPECT_EQ(upsert.Json()["documents"], 2);

  for (bool stream : {false, true}) {
    upstream_->ClearRequests();
    HttpResult chat =
        HttpCall("POST", ailb_->Url("/v1/chat/completions"),
                 json{{"model", "gpt-test"},
                      {"stream", stream},
                      {"rag_collection", "manuals"},
                      {"rag_top_k", 1},
                      {"messages",
                       {{{"role", "system"}, {"content", "You are terse."}},
                        {{"role", "user"}, {"content", "How do I prime the hydraulic pump?"}}}}}
                     .dump(),
                 kJson);
    ASSERT_EQ(chat.status, 200) << chat.body;
    EXPECT_EQ(chat.Header("x-ailb-rag-sources"), "pump#1");
    json sent = upstream_->Requests().at(0).JsonBody();
    // The client's system prompt stays first; the context follows it; extension fields are gone.
    ASSERT_EQ(sent["messages"].size(), 3u);
    EXPECT_EQ(sent["messages"][0]["content"], "You are terse.");
    EXPECT_NE(sent["messages"][1]["content"].get<std::string>().find("primed with 2 litres"),
              std::string::npos);
    EXPECT_EQ(sent["messages"][2]["role"], "user");
    EXPECT_FALSE(sent.contains("rag_collection"));
    EXPECT_FALSE(sent.contains("rag_top_k"));
  }
}

TEST_F(KnowledgeTest, UnknownCollectionDegradesSoftly) {
  HttpResult chat = HttpCall("POST", ailb_->Url("/v1/chat/completions"),
                             ChatBody("gpt-test", false, {{"rag_collection", "missing"}}), kJson);
  ASSERT_EQ(chat.status, 200) << chat.body;
  EXPECT_NE(chat.Header("x-ailb-warning").find("missing"), std::string::npos);
  EXPECT_EQ(SystemText(0), "");
  HttpResult metrics = HttpCall("GET", ailb_->Url("/metrics"));
  EXPECT_NE(
      metrics.body.find(R"(ailb_rag_operations_total{operation="retrieve",outcome="error"} 1)"),
      std::string::npos);
}

TEST_F(KnowledgeTest, SessionMemoryCarriesEarlierTurnsIncludingStreamedReplies) {
  FakeBehavior ada;
  ada.reply_text = "Nice to meet you, Ada.";
  upstream_->EnqueueBehavior(ada);
  HttpResult first = HttpCall(
      "POST", ailb_->Url("/v1/chat/completions"),
      json{{"model", "gpt-test"},
           {"stream", true},
           {"session_id", "s-1"},
           {"messages", {{{"role", "user"}, {"content", "Hello, my name is Ada Lovelace."}}}}}
          .dump(),
      kJson);
  ASSERT_EQ(first.status, 200) << first.body;
  // Stored before the reply completed: read-your-writes for the session's next turn.
  HttpResult history = HttpCall("GET", ailb_->Url("/v1/sessions/s-1"));
  ASSERT_EQ(history.status, 200);
  EXPECT_EQ(history.Json()["turn_count"], 2);
  EXPECT_EQ(history.Json()["turns"][0]["content"], "Hello, my name is Ada Lovelace.");
  // The streamed reply was assembled from its deltas.
  EXPECT_EQ(history.Json()["turns"][1]["content"], "Nice to meet you, Ada.");

  // The session id may also come as a header.
  HttpResult second =
      HttpCall("POST", ailb_->Url("/v1/chat/completions"),
               json{{"model", "gpt-test"},
                    {"messages", {{{"role", "user"}, {"content", "What is my name?"}}}}}
                   .dump(),
               {"Content-Type: application/json", "X-Session-ID: s-1"});
  ASSERT_EQ(second.status, 200) << second.body;
  const std::string memory = SystemText(1);
  EXPECT_NE(memory.find("my name is Ada Lovelace"), std::string::npos) << memory;
  EXPECT_NE(memory.find("Nice to meet you, Ada."), std::string::npos) << memory;

  // Another session sees nothing of it.
  HttpResult other = HttpCall("POST", ailb_->Url("/v1/chat/completions"),
                              ChatBody("gpt-test", false, {{"session_id", "s-2"}}), kJson);
  ASSERT_EQ(other.status, 200);
  EXPECT_EQ(SystemText(2).find("Ada"), std::string::npos);

  // Forgetting removes everything.
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/sessions/s-1")).Json()["turn_count"], 4);
  EXPECT_EQ(HttpCall("DELETE", ailb_->Url("/v1/sessions/s-1")).status, 200);
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/sessions/s-1")).status, 404);
  HttpResult after = HttpCall("POST", ailb_->Url("/v1/chat/completions"),
                              ChatBody("gpt-test", false, {{"session_id", "s-1"}}), kJson);
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(SystemText(3), "");
}

TEST_F(KnowledgeTest, AcknowledgedDocumentsSurviveSigkill) {
  ASSERT_EQ(Post("/v1/rag/collections", {{"name", "durable"}}).status, 201);
  json documents = json::array();
  for (int i = 0; i < 200; ++i) {
    documents.push_back({{"id", absl::StrCat("doc-", i)},
                         {"text", absl::StrCat("Document number ", i, " about topic ", i % 7,
                                               " and the zebra", i == 123 ? " quagga" : "")}});
  }
  ASSERT_EQ(Post("/v1/rag/collections/durable/documents", {{"documents", documents}}).status, 200);
  ASSERT_EQ(HttpCall("DELETE", ailb_->Url("/v1/rag/collections/durable/documents/doc-5")).status,
            200);
  ailb_->Signal(SIGKILL);
  ailb_->WaitForExit(std::chrono::seconds(10));
  Start();
  HttpResult info = HttpCall("GET", ailb_->Url("/v1/rag/collections/durable"));
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.Json()["document_count"], 199);
  for (std::string mode : {"vector", "lexical", "hybrid"}) {
    HttpResult query = Post("/v1/rag/collections/durable/query",
                            {{"query", "quagga"}, {"top_k", 1}, {"mode", mode}});
    ASSERT_EQ(query.status, 200) << query.body;
    ASSERT_EQ(query.Json()["results"].size(), 1u) << mode;
    EXPECT_EQ(query.Json()["results"][0]["document_id"], "doc-123") << mode;
  }
}

TEST_F(KnowledgeTest, BadInputGetsClearErrors) {
  EXPECT_EQ(Post("/v1/rag/collections", {{"name", ""}}).status, 400);
  EXPECT_EQ(Post("/v1/rag/collections", {{"name", "x"}, {"embedding", {{"dimensions", 3}}}}).status,
            400);
  ASSERT_EQ(Post("/v1/rag/collections", {{"name", "x"}}).status, 201);
  EXPECT_EQ(Post("/v1/rag/collections", {{"name", "x"}}).status, 409);
  EXPECT_EQ(Post("/v1/rag/collections/x/documents", {{"documents", "nope"}}).status, 400);
  EXPECT_EQ(Post("/v1/rag/collections/x/documents",
                 {{"documents", {{{"id", "a"}, {"text", std::string(2 << 20, 'a')}}}}})
                .status,
            400);
  EXPECT_EQ(
      Post("/v1/rag/collections/y/documents", {{"documents", {{{"id", "a"}, {"text", "hello"}}}}})
          .status,
      404);
  EXPECT_EQ(Post("/v1/rag/collections/x/query", {{"query", "a"}, {"top_k", 0}}).status, 400);
  EXPECT_EQ(Post("/v1/rag/collections/x/query", {{"query", "a"}, {"mode", "psychic"}}).status, 400);
  HttpResult malformed =
      HttpCall("POST", ailb_->Url("/v1/rag/collections/x/query"), "{\"query\": ", kJson);
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(malformed.Json()["error"]["code"], "invalid_json");
  HttpResult wrong_method = HttpCall("PUT", ailb_->Url("/v1/rag/collections/x"), "{}", kJson);
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.Header("allow"), "GET, DELETE");
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/v1/embeddings")).Header("allow"), "POST");
  EXPECT_EQ(HttpCall("PATCH", ailb_->Url("/v1/sessions/s1"), "{}", kJson).Header("allow"),
            "GET, DELETE");
  EXPECT_EQ(HttpCall("DELETE", ailb_->Url("/v1/rag/collections/x/documents/absent")).status, 404);
  EXPECT_EQ(Post("/v1/embeddings", {{"model", "local"}, {"input", json::array()}}).status, 400);
  EXPECT_EQ(Post("/v1/embeddings", {{"model", "unknown-model"}, {"input", "hi"}}).status, 404);
  // The server is still fine.
  EXPECT_EQ(HttpCall("GET", ailb_->Url("/healthz")).status, 200);
}

TEST_F(KnowledgeTest, EmbeddingsEndpointSpeaksOpenAI) {
  HttpResult floats = Post("/v1/embeddings",
                           {{"model", "local"}, {"input", {"alpha", "beta"}}, {"dimensions", 64}});
  ASSERT_EQ(floats.status, 200) << floats.body;
  json body = floats.Json();
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 2u);
  EXPECT_EQ(body["data"][1]["index"], 1);
  EXPECT_EQ(body["data"][0]["embedding"].size(), 64u);
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 0);

  HttpResult base64 = Post(
      "/v1/embeddings",
      {{"model", "local"}, {"input", "alpha"}, {"dimensions", 64}, {"encoding_format", "base64"}});
  ASSERT_EQ(base64.status, 200);
  // 64 floats = 256 bytes = 344 base64 characters.
  EXPECT_EQ(base64.Json()["data"][0]["embedding"].get<std::string>().size(), 344u);

  // A configured OpenAI-compatible deployment embeds through its provider.
  HttpResult remote = Post("/v1/embeddings", {{"model", "gpt-test"}, {"input", "alpha"}});
  ASSERT_EQ(remote.status, 200) << remote.body;
  EXPECT_EQ(upstream_->EmbeddingRequestCount(), 1u);
}

}  // namespace
}  // namespace ailb::testing
