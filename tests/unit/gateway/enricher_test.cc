// The enricher over real stores (SQLite files in a temp dir, the local embedder): what it inserts
// into a chat request, where, and how it degrades when a store is missing or a query fails.
#include "ailb/gateway/enricher.h"

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "ailb/common/clock.h"
#include "ailb/rag/embedder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace ailb::gateway {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class EnricherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ailb::testing::MakeTestDir("enricher");
    ASSERT_FALSE(dir_.empty());
    auto embedder = rag::NewLocalEmbedder(128);
    ASSERT_TRUE(embedder.ok());
    auto memory = memory::SessionMemory::Open(dir_, *std::move(embedder), clock_);
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *std::move(memory);
    auto rag = rag::RagStore::Open(
        dir_, [](const rag::EmbeddingSpec& spec) { return rag::NewLocalEmbedder(spec.dimensions); },
        clock_);
    ASSERT_TRUE(rag.ok()) << rag.status();
    rag_ = *std::move(rag);
  }
  void TearDown() override {
    rag_.reset();
    memory_.reset();
    ailb::testing::RemoveTestDir(dir_);
  }

  static llm::ChatRequest Request(json messages, std::optional<std::string> session = {},
                                  std::optional<std::string> collection = {}) {
    llm::ChatRequest request;
    request.model = "m";
    request.body = {{"model", "m"}, {"messages", std::move(messages)}};
    request.session_id = std::move(session);
    request.rag_collection = std::move(collection);
    return request;
  }

  ManualClock clock_;
  std::string dir_;
  std::unique_ptr<memory::SessionMemory> memory_;
  std::unique_ptr<rag::RagStore> rag_;
  metrics::Registry registry_;
};

TEST_F(EnricherTest, MemoryOfEarlierExchangesIsInsertedAfterTheClientsSystemPrompt) {
  std::unique_ptr<Enricher> enricher = NewEnricher(memory_.get(), rag_.get(), registry_);
  enricher->Remember("s", json::array({{{"role", "user"}, {"content", "My name is Ada."}}}),
                     "Hello Ada.");
  llm::ChatRequest request =
      Request(json::array({{{"role", "system"}, {"content", "Be brief."}},
                           {{"role", "user"}, {"content", "What is my name?"}}}),
              "s");
  Enrichment result = enricher->Enrich(request, /*use_memory=*/true, /*use_rag=*/false);
  EXPECT_THAT(result.warnings, IsEmpty());
  EXPECT_GT(result.memory_chars, 0);
  const json& messages = request.body["messages"];
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0]["content"], "Be brief.");
  EXPECT_EQ(messages[1]["role"], "system");
  EXPECT_THAT(messages[1]["content"].get<std::string>(), HasSubstr("My name is Ada."));
  EXPECT_THAT(messages[1]["content"].get<std::string>(), HasSubstr("Hello Ada."));
  EXPECT_EQ(messages[2]["content"], "What is my name?");
}

TEST_F(EnricherTest, RetrievedChunksAreInsertedWithTheirSources) {
  ASSERT_TRUE(rag_->CreateCollection({"kb", {"local", "", 128}, {64, 8}}).ok());
  ASSERT_TRUE(rag_->UpsertDocuments("kb", {{"pump", "Prime the hydraulic pump with oil.", {}},
                                           {"fan", "Clean the fan blades monthly.", {}}})
                  .ok());
  std::unique_ptr<Enricher> enricher = NewEnricher(memory_.get(), rag_.get(), registry_);
  llm::ChatRequest request =
      Request(json::array({{{"role", "user"}, {"content", "How do I prime the pump?"}}}), {}, "kb");
  request.rag_top_k = 1;
  Enrichment result = enricher->Enrich(request, false, true);
  ASSERT_EQ(result.rag_sources.size(), 1u);
  EXPECT_THAT(result.rag_sources[0], ::testing::StartsWith("pump#"));
  const json& messages = request.body["messages"];
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_THAT(messages[0]["content"].get<std::string>(), HasSubstr("Prime the hydraulic pump"));
  EXPECT_THAT(messages[0]["content"].get<std::string>(), HasSubstr("[1] (source: pump"));
}

TEST_F(EnricherTest, FailuresAndMissingStoresAreSoft) {
  std::unique_ptr<Enricher> without = NewEnricher(nullptr, nullptr, registry_);
  llm::ChatRequest request =
      Request(json::array({{{"role", "user"}, {"content", "hi"}}}), "s", "kb");
  const json before = request.body;
  Enrichment result = without->Enrich(request, true, true);
  EXPECT_EQ(request.body, before);
  EXPECT_EQ(result.warnings.size(), 2u);

  std::unique_ptr<Enricher> enricher = NewEnricher(memory_.get(), rag_.get(), registry_);
  result = enricher->Enrich(request, false, true);  // the collection does not exist
  EXPECT_EQ(request.body, before);
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_THAT(result.warnings[0], HasSubstr("kb"));
  EXPECT_THAT(registry_.RenderPrometheus(),
              HasSubstr("ailb_rag_operations_total{operation=\"retrieve\",outcome=\"error\"} 1"));
}

TEST(LastUserTextTest, FindsTheLastUserMessageAndJoinsTextParts) {
  EXPECT_EQ(LastUserText(json::array()), "");
  EXPECT_EQ(LastUserText(json("not an array")), "");
  EXPECT_EQ(LastUserText(json::array({{{"role", "user"}, {"content", "a"}},
                                      {{"role", "assistant"}, {"content", "b"}},
                                      {{"role", "user"},
                                       {"content",
                                        {{{"type", "text"}, {"text", "c"}},
                                         {{"type", "image_url"}, {"image_url", {{"url", "x"}}}},
                                         {{"type", "text"}, {"text", "d"}}}}}})),
            "c\nd");
  EXPECT_EQ(LastUserText(json::array({{{"role", 5}, {"content", "x"}}})), "");
}

}  // namespace
}  // namespace ailb::gateway
