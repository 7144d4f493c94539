#include "ailb/memory/session_memory.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ailb/common/clock.h"
#include "ailb/rag/chunker.h"
#include "ailb/rag/embedder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/temp_dir.h"

namespace ailb::memory {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kRelevantHeader[] = "Earlier turns that may be relevant:";

json User(const std::string& text) { return {{"role", "user"}, {"content", text}}; }
json Assistant(const std::string& text) { return {{"role", "assistant"}, {"content", text}}; }

// The part of a context text before / after the relevant-turns header.
std::string RecentPart(const std::string& text) {
  return text.substr(0, std::min(text.find(kRelevantHeader), text.size()));
}
std::string RelevantPart(const std::string& text) {
  const size_t at = text.find(kRelevantHeader);
  return at == std::string::npos ? "" : text.substr(at);
}

class SessionMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ailb::testing::MakeTestDir("session_memory");
    ASSERT_FALSE(dir_.empty());
    auto embedder = rag::NewLocalEmbedder(384);
    ASSERT_TRUE(embedder.ok()) << embedder.status();
    embedder_ = std::move(embedder).value();
  }

  void TearDown() override {
    memory_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  SessionMemory& Open(MemoryOptions options = {}) {
    memory_.reset();
    auto memory = SessionMemory::Open(dir_, embedder_, clock_, options);
    EXPECT_TRUE(memory.ok()) << memory.status();
    if (memory.ok()) memory_ = std::move(memory).value();
    return *memory_;
  }

  std::optional<std::string> Context(const std::string& session, const json& messages) {
    auto context = memory_->BuildContext(session, messages);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *context : std::nullopt;
  }

  std::vector<std::string> Contents(const std::string& session) {
    auto history = memory_->History(session);
    EXPECT_TRUE(history.ok()) << history.status();
    std::vector<std::string> contents;
    if (history.ok()) {
      for (const json& turn : (*history)["turns"]) contents.push_back(turn["content"]);
    }
    return contents;
  }

  std::string dir_;
  ManualClock clock_;
  std::shared_ptr<rag::Embedder> embedder_;
  std::unique_ptr<SessionMemory> memory_;
};

TEST_F(SessionMemoryTest, AppendThenBuildContextContainsBothTurns) {
  SessionMemory& memory = Open();
  ASSERT_TRUE(memory
                  .AppendExchange("s1", json::array({User("My name is Ada and I live in Lisbon.")}),
                                  "Nice to meet you, Ada!")
                  .ok());

  std::optional<std::string> context = Context("s1", json::array({User("Where do I live?")}));
  ASSERT_TRUE(context.has_value());
  EXPECT_EQ(*context,
            "Conversation memory for this session (earlier exchanges, oldest first):\n"
            "[user] My name is Ada and I live in Lisbon.\n"
            "[assistant] Nice to meet you, Ada!");

  // Another session sees nothing; an unknown one is not an error.
  EXPECT_EQ(Context("s2", json::array({User("Where do I live?")})), std::nullopt);

  auto history = memory.History("s1");
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ((*history)["session_id"], "s1");
  EXPECT_EQ((*history)["turn_count"], 2);
  ASSERT_EQ((*history)["turns"].size(), 2u);
  EXPECT_EQ((*history)["turns"][0]["role"], "user");
  EXPECT_EQ((*history)["turns"][1]["role"], "assistant");
  // ManualClock starts at unix 1'700'000'000.
  EXPECT_EQ((*history)["turns"][0]["created_at"], "2023-11-14T22:13:20.000Z");
}

TEST_F(SessionMemoryTest, StoresOnlyTheUserMessagesAfterTheLastAssistantMessage) {
  SessionMemory& memory = Open();
  json messages = json::array({{{"role", "system"}, {"content", "Be brief."}},
                               User("old question"),
                               Assistant("old answer"),
                               User("first part"),
                               User("second part")});
  ASSERT_TRUE(memory.AppendExchange("s", messages, "the reply").ok());
  ASSERT_TRUE(memory.AppendExchange("s", json::array({User("no reply yet")}), "  ").ok());
  EXPECT_EQ(Contents("s"),
            (std::vector<std::string>{"first part", "second part", "the reply", "no reply yet"}));

  // Nothing to store creates no session.
  ASSERT_TRUE(memory.AppendExchange("empty", json::array({Assistant("x")}), "").ok());
  EXPECT_EQ(memory.History("empty").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionMemoryTest, ResentHistoryIsNotInjectedTwice) {
  SessionMemory& memory = Open();
  ASSERT_TRUE(memory
                  .AppendExchange("s", json::array({User("What is a monad?")}),
                                  "A monoid in the category of endofunctors.")
                  .ok());
  ASSERT_TRUE(memory
                  .AppendExchange("s", json::array({User("Give an example.")}),
                                  "Maybe, which models optional values.")
                  .ok());

  // The client resent the whole conversation (with extra whitespace): nothing to add.
  json full = json::array({User("What is a monad?"),
                           Assistant("  A monoid in the category of endofunctors.\n"),
                           User("Give an example."),
                           Assistant("Maybe, which models optional values."), User("And a list?")});
  EXPECT_EQ(Context("s", full), std::nullopt);

  // It resent only the last exchange: only the first one is added.
  json partial =
      json::array({User("Give an example."), Assistant("Maybe, which models optional values."),
                   User("And a list?")});
  std::optional<std::string> context = Context("s", partial);
  ASSERT_TRUE(context.has_value());
  EXPECT_THAT(*context, HasSubstr("[user] What is a monad?"));
  EXPECT_THAT(*context, HasSubstr("[assistant] A monoid in the category of endofunctors."));
  EXPECT_THAT(*context, Not(HasSubstr("Give an example.")));
  EXPECT_THAT(*context, Not(HasSubstr("optional values")));
}

TEST_F(SessionMemoryTest, RecentBudgetKeepsNewestTurnsAndAddsSimilarOlderOnes) {
  MemoryOptions options;
  options.recent_token_budget = 60;
  options.similar_turns = 2;
  SessionMemory& memory = Open(options);

  ASSERT_TRUE(memory
                  .AppendExchange("s",
                                  json::array({User("What hydration do you recommend for a "
                                                    "sourdough bread loaf?")}),
                                  "For sourdough bread, start around 70 percent hydration: 700 g "
                                  "water per kilogram of flour.")
                  .ok());
  const std::vector<std::string> topics = {
      "Jupiter's moons Io and Europa",   "the French revolution of 1789",
      "Kubernetes pod scheduling",       "chess openings like the Sicilian defence",
      "photosynthesis in cactus plants", "the rules of cricket",
      "compiling Rust to WebAssembly",   "migratory routes of arctic terns",
      "Baroque music by Vivaldi",        "tax rules for freelancers in Germany",
      "volcanic eruptions in Iceland",   "training for a marathon",
  };
  for (const std::string& topic : topics) {
    ASSERT_TRUE(memory
                    .AppendExchange("s", json::array({User(absl::StrCat("Tell me about ", topic))}),
                                    absl::StrCat("Here is a short overview of ", topic, "."))
                    .ok());
  }

  std::optional<std::string> context =
      Context("s", json::array({User("How much water should my sourdough bread dough get?")}));
  ASSERT_TRUE(context.has_value());
  const std::string recent = RecentPart(*context);
  const std::string relevant = RelevantPart(*context);

  // The newest exchange is there; the recent lines fit the budget, newest ones, oldest first.
  EXPECT_THAT(recent, HasSubstr("[user] Tell me about training for a marathon"));
  EXPECT_THAT(recent,
              HasSubstr("[assistant] Here is a short overview of training for a marathon."));
  int recent_tokens = 0;
  std::vector<std::string> lines = absl::StrSplit(recent, '\n');
  ASSERT_GE(lines.size(), 3u);
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const size_t content = lines[i].find("] ");
    ASSERT_NE(content, std::string::npos) << lines[i];
    recent_tokens += rag::EstimateTokens(lines[i].substr(content + 2));
  }
  EXPECT_LE(recent_tokens, options.recent_token_budget);
  EXPECT_LT(recent.find("volcanic"), recent.find("marathon"));
  EXPECT_THAT(recent, Not(HasSubstr("Jupiter")));

  // The old sourdough exchange is relevant; old unrelated ones appear nowhere.
  EXPECT_THAT(relevant, HasSubstr("[user] What hydration do you recommend for a sourdough"));
  EXPECT_THAT(relevant, HasSubstr("[assistant] For sourdough bread, start around 70 percent"));
  EXPECT_THAT(*context, Not(HasSubstr("Jupiter")));
  EXPECT_THAT(*context, Not(HasSubstr("French revolution")));
  EXPECT_THAT(*context, Not(HasSubstr("Kubernetes")));
  EXPECT_THAT(*context,
              HasSubstr("\n\nEarlier turns that may be relevant:\n[user] What hydration"));
}

TEST_F(SessionMemoryTest, SimilarTurnsRespectTheirTokenBudget) {
  MemoryOptions options;
  options.recent_token_budget = 10;
  options.similar_turns = 3;
  options.similar_token_budget = 50;
  SessionMemory& memory = Open(options);
  std::string huge = "Sourdough starter feeding schedule. ";
  while (huge.size() < 4000) huge += "Sourdough starter feeding schedule details. ";
  ASSERT_TRUE(memory.AppendExchange("s", json::array({User(huge)}), "").ok());
  ASSERT_TRUE(memory
                  .AppendExchange("s",
                                  json::array({User("How often to feed a sourdough "
                                                    "starter?")}),
                                  "Feed the sourdough starter daily.")
                  .ok());
  ASSERT_TRUE(memory.AppendExchange("s", json::array({User("Thanks!")}), "You're welcome.").ok());

  std::optional<std::string> context =
      Context("s", json::array({User("sourdough starter feeding schedule")}));
  ASSERT_TRUE(context.has_value());
  EXPECT_THAT(*context, HasSubstr("Earlier turns that may be relevant:"));
  EXPECT_THAT(*context, HasSubstr("[user] How often to feed a sourdough starter?"));
  EXPECT_THAT(*context, Not(HasSubstr("details")));  // the huge turn would not fit
}

TEST_F(SessionMemoryTest, ContentPartsArraysAreJoinedAndImagesIgnored) {
  SessionMemory& memory = Open();
  json parts =
      json::array({{{"type", "text"}, {"text", "Describe this picture"}},
                   {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}},
                   {{"type", "text"}, {"text", "in one sentence."}}});
  ASSERT_TRUE(
      memory.AppendExchange("s", json::array({{{"role", "user"}, {"content", parts}}}), "A cat.")
          .ok());
  EXPECT_EQ(Contents("s"),
            (std::vector<std::string>{"Describe this picture\nin one sentence.", "A cat."}));

  // The resent parts array counts as carried history.
  json request = json::array(
      {{{"role", "user"}, {"content", parts}},
       Assistant("A cat."),
       {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Why?"}}})}}});
  EXPECT_EQ(Context("s", request), std::nullopt);
}

TEST_F(SessionMemoryTest, LongTurnsAreTruncatedAtACharacterBoundary) {
  MemoryOptions options;
  options.max_turn_bytes = 10;
  SessionMemory& memory = Open(options);
  // "é" is two bytes: byte 10 falls inside the fifth one. The reply is not valid UTF-8.
  ASSERT_TRUE(memory.AppendExchange("s", json::array({User("aéééééé")}), "ok\xff\xfe").ok());
  auto history = memory.History("s");
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ((*history)["turns"][0]["content"], "aéééé");
  EXPECT_EQ((*history)["turns"][1]["content"], "ok\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_NO_THROW((void)history->dump());
}

TEST_F(SessionMemoryTest, MaxTurnsPerSessionDropsTheOldest) {
  MemoryOptions options;
  options.max_turns_per_session = 4;
  SessionMemory& memory = Open(options);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(memory
                    .AppendExchange("s", json::array({User(absl::StrCat("question ", i))}),
                                    absl::StrCat("answer ", i))
                    .ok());
  }
  EXPECT_EQ(Contents("s"),
            (std::vector<std::string>{"question 1", "answer 1", "question 2", "answer 2"}));
  EXPECT_EQ((*memory.History("s"))["turn_count"], 4);
  std::optional<std::string> context = Context("s", json::array({User("question 0 again")}));
  ASSERT_TRUE(context.has_value());
  EXPECT_THAT(*context, Not(HasSubstr("answer 0")));
}

TEST_F(SessionMemoryTest, EnforceRetentionRemovesTurnsPastMaxAge) {
  MemoryOptions options;
  options.max_age = std::chrono::hours(1);
  SessionMemory& memory = Open(options);
  ASSERT_TRUE(memory.AppendExchange("old", json::array({User("old only")}), "reply").ok());
  ASSERT_TRUE(memory.AppendExchange("mixed", json::array({User("early")}), "early reply").ok());
  clock_.Advance(std::chrono::minutes(90));
  ASSERT_TRUE(memory.AppendExchange("mixed", json::array({User("late")}), "late reply").ok());

  // Expired turns are ignored even before retention runs.
  EXPECT_EQ(Context("old", json::array({User("anything?")})), std::nullopt);
  std::optional<std::string> mixed = Context("mixed", json::array({User("early?")}));
  ASSERT_TRUE(mixed.has_value());
  EXPECT_THAT(*mixed, Not(HasSubstr("early reply")));

  auto removed = memory.EnforceRetention();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 4);
  EXPECT_EQ(memory.History("old").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Contents("mixed"), (std::vector<std::string>{"late", "late reply"}));
  EXPECT_EQ((*memory.History("mixed"))["turn_count"], 2);

  removed = memory.EnforceRetention();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
}

TEST_F(SessionMemoryTest, ForgetRemovesEverythingDurably) {
  SessionMemory* memory = &Open();
  ASSERT_TRUE(memory->AppendExchange("gone", json::array({User("secret plan")}), "noted").ok());
  ASSERT_TRUE(memory->AppendExchange("kept", json::array({User("public plan")}), "noted").ok());

  ASSERT_TRUE(memory->Forget("gone").ok());
  EXPECT_EQ(memory->History("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(memory->History("gone").status().message(), "session 'gone' not found");
  EXPECT_EQ(Context("gone", json::array({User("secret plan?")})), std::nullopt);
  EXPECT_EQ(memory->Forget("gone").code(), absl::StatusCode::kNotFound);

  memory = &Open();
  EXPECT_EQ(memory->History("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Contents("kept"), (std::vector<std::string>{"public plan", "noted"}));
}

TEST_F(SessionMemoryTest, TurnsSurviveReopen) {
  SessionMemory* memory = &Open();
  ASSERT_TRUE(memory->AppendExchange("s", json::array({User("remember me")}), "I will.").ok());
  memory = &Open();
  EXPECT_EQ(Contents("s"), (std::vector<std::string>{"remember me", "I will."}));
  std::optional<std::string> context = Context("s", json::array({User("do you remember?")}));
  ASSERT_TRUE(context.has_value());
  EXPECT_THAT(*context, HasSubstr("[user] remember me"));
}

TEST_F(SessionMemoryTest, InvalidSessionIdsAreRejected) {
  SessionMemory& memory = Open();
  const json messages = json::array({User("hi")});
  for (const std::string& id :
       {std::string(), std::string(257, 'a'), std::string("a\nb"), std::string("tab\there"),
        std::string("del\x7f"), std::string("nul\0x", 5), std::string("bad\xff"),
        std::string("c1\xc2\x85")}) {
    SCOPED_TRACE(::testing::PrintToString(id));
    EXPECT_EQ(memory.AppendExchange(id, messages, "hello").code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(memory.BuildContext(id, messages).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(memory.History(id).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(memory.Forget(id).code(), absl::StatusCode::kInvalidArgument);
  }
  for (const std::string& id :
       {std::string(256, 'a'), std::string("user-42:chat/7 ünïcode 会话")}) {
    EXPECT_TRUE(memory.AppendExchange(id, messages, "hello").ok());
    auto history = memory.History(id);
    ASSERT_TRUE(history.ok()) << history.status();
    EXPECT_EQ((*history)["session_id"], id);
  }
}

TEST_F(SessionMemoryTest, HostileMessagesNeverCrash) {
  SessionMemory& memory = Open();
  for (const json& not_an_array :
       {json(), json(42), json("user"), json::object({{"role", "user"}, {"content", "x"}})}) {
    SCOPED_TRACE(not_an_array.dump());
    EXPECT_EQ(memory.AppendExchange("s", not_an_array, "reply").code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(memory.BuildContext("s", not_an_array).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(memory.History("s").status().code(), absl::StatusCode::kNotFound);

  json nested = json::array();
  for (int i = 0; i < 1000; ++i) nested = json::array({std::move(nested)});
  nested = json::array({nested, {{"role", "user"}, {"content", nested}}});
  json garbage = json::array({
      1,
      2.5,
      nullptr,
      true,
      "user",
      json::array({User("inside an array")}),
      nested,
      {{"role", 7}, {"content", "numeric role"}},
      {{"role", "user"}},
      {{"role", "user"}, {"content", nullptr}},
      {{"role", "user"}, {"content", 12}},
      {{"role", "user"}, {"content", {{"text", "an object"}}}},
      {{"role", "user"},
       {"content", json::array({1,
                                nullptr,
                                "bare string",
                                json::array(),
                                {{"type", "text"}, {"text", 5}},
                                {{"type", 3}, {"text", "typed by number"}},
                                {{"type", "text"}},
                                {{"type", "text"}, {"text", "the real question"}}})}},
      {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({1, 2})}},
      {{"role", "tool"}, {"content", "tool output"}},
      {{"role", "user"}, {"content", "after the tool call"}},
  });
  ASSERT_TRUE(memory.AppendExchange("s", garbage, "fine").ok());
  EXPECT_EQ(Contents("s"), (std::vector<std::string>{"after the tool call", "fine"}));

  auto context = memory.BuildContext("s", garbage);
  ASSERT_TRUE(context.ok()) << context.status();
  ASSERT_TRUE(context->has_value());
  EXPECT_THAT(**context, HasSubstr("[assistant] fine"));
  EXPECT_THAT(**context, Not(HasSubstr("after the tool call")));  // carried by the request
  context = memory.BuildContext("s", json::array({nullptr, 3, nested}));
  ASSERT_TRUE(context.ok()) << context.status();
  ASSERT_TRUE(context->has_value());
  EXPECT_THAT(**context, HasSubstr("[user] after the tool call"));
  // No user message at all: recent turns only, no similarity query.
  context = memory.BuildContext("s", json::array());
  ASSERT_TRUE(context.ok()) << context.status();
  EXPECT_TRUE(context->has_value());
  // A question made only of stopwords embeds to the zero vector.
  context = memory.BuildContext("s", json::array({User("the of and")}));
  ASSERT_TRUE(context.ok()) << context.status();
}

TEST_F(SessionMemoryTest, ConcurrentAppendsAreAllKept) {
  SessionMemory& memory = Open();
  constexpr int kThreads = 4;
  constexpr int kExchanges = 12;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&memory, t] {
      for (int i = 0; i < kExchanges; ++i) {
        const std::string own = absl::StrCat("own-", t);
        const json question = json::array({User(absl::StrCat("thread ", t, " question ", i))});
        EXPECT_TRUE(memory.AppendExchange(own, question, absl::StrCat("answer ", i)).ok());
        EXPECT_TRUE(memory.AppendExchange("shared", question, absl::StrCat("shared ", i)).ok());
        EXPECT_TRUE(memory.BuildContext("shared", question).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  for (int t = 0; t < kThreads; ++t) {
    auto history = memory.History(absl::StrCat("own-", t));
    ASSERT_TRUE(history.ok()) << history.status();
    EXPECT_EQ((*history)["turn_count"], 2 * kExchanges);
    EXPECT_EQ((*history)["turns"].size(), 2u * kExchanges);
  }
  auto shared = memory.History("shared");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ((*shared)["turn_count"], 2 * kThreads * kExchanges);
  ASSERT_EQ((*shared)["turns"].size(), 2u * kThreads * kExchanges);
  // Each exchange's two turns stay adjacent: one transaction inserts both.
  for (size_t i = 0; i < (*shared)["turns"].size(); i += 2) {
    EXPECT_EQ((*shared)["turns"][i]["role"], "user");
    EXPECT_EQ((*shared)["turns"][i + 1]["role"], "assistant");
  }
}

TEST_F(SessionMemoryTest, OpenRejectsBadOptions) {
  MemoryOptions options;
  options.max_turns_per_session = 0;
  EXPECT_EQ(SessionMemory::Open(dir_, embedder_, clock_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SessionMemory::Open(dir_, nullptr, clock_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ailb::memory
