// ParseChatRequest: validation of /v1/chat/completions bodies (each refusal names its field as
// OpenAI's `param`), the lifting of ailb's extension fields, and that every other field passes
// through untouched. Also UsageOf and DumpJson.
#include "ailb/llm/chat.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::llm {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr std::string_view kMinimal =
    R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";

// `overrides` merged into the minimal valid request (a null value removes the field).
std::string With(const json& overrides) {
  json body = json::parse(kMinimal);
  for (const auto& item : overrides.items()) {
    if (item.value().is_null()) {
      body.erase(item.key());
    } else {
      body[item.key()] = item.value();
    }
  }
  return body.dump();
}

// A request with exactly the one message `message`.
std::string WithMessage(const json& message) {
  return With(json{{"messages", json::array({message})}});
}

TEST(ParseChatRequestTest, MinimalRequest) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(kMinimal);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model, "gpt-4o");
  EXPECT_FALSE(request->stream);
  EXPECT_FALSE(request->include_usage);
  EXPECT_EQ(request->session_id, std::nullopt);
  EXPECT_EQ(request->rag_collection, std::nullopt);
  EXPECT_EQ(request->rag_top_k, kDefaultRagTopK);
  EXPECT_EQ(request->body, json::parse(kMinimal));
}

TEST(ParseChatRequestTest, StreamWithIncludeUsage) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(With({{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
  // stream_options is not an extension: it stays in the body.
  EXPECT_EQ(request->body["stream_options"], json({{"include_usage", true}}));
}

TEST(ParseChatRequestTest, StreamWithoutIncludeUsage) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(With({{"stream", true}, {"stream_options", json::object()}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_TRUE(request->stream);
  EXPECT_FALSE(request->include_usage);

  request =
      ParseChatRequest(With({{"stream", true}, {"stream_options", {{"include_usage", false}}}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->include_usage);
}

TEST(ParseChatRequestTest, StreamFalseExplicit) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(With({{"stream", false}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->stream);
}

TEST(ParseChatRequestTest, NullOptionalFieldsAreAccepted) {
  const std::string body =
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":null,
          "stream_options":null,"temperature":null,"top_p":null,"n":null,"max_tokens":null,
          "stop":null,"tools":null,"tool_choice":null,"response_format":null,"seed":null,
          "logprobs":null,"user":null,"presence_penalty":null,"frequency_penalty":null,
          "max_completion_tokens":null})";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->stream);
}

TEST(ParseChatRequestTest, AcceptsEveryRoleAndContentShape) {
  const json messages = json::array({
      {{"role", "system"}, {"content", "be brief"}},
      {{"role", "developer"}, {"content", "dev"}},
      {{"role", "user"},
       {"content", json::array({{{"type", "text"}, {"text", "look"}},
                                {{"type", "image_url"}, {"image_url", {{"url", "http://x"}}}}})}},
      {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array()}},
      {{"role", "assistant"}},  // an assistant turn may omit content
      {{"role", "tool"}, {"content", "42"}, {"tool_call_id", "c1"}},
      {{"role", "function"}, {"content", "f"}, {"name", "fn"}},
      {{"role", "user"}, {"function_call", {{"name", "x"}}}},  // tool calls stand for content
  });
  absl::StatusOr<ChatRequest> request = ParseChatRequest(With({{"messages", messages}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->body["messages"], messages);
}

TEST(ParseChatRequestTest, BoundaryValuesAreAccepted) {
  const json overrides = {{"temperature", 0},
                          {"top_p", 1},
                          {"n", 1},
                          {"max_tokens", 1},
                          {"presence_penalty", -2},
                          {"frequency_penalty", 2},
                          {"max_completion_tokens", 1},
                          {"stop", json::array({"a", "b", "c", "d"})}};
  absl::StatusOr<ChatRequest> request = ParseChatRequest(With(overrides));
  ASSERT_TRUE(request.ok()) << request.status();
  request = ParseChatRequest(With({{"temperature", 2}, {"top_p", 0}, {"stop", "END"}}));
  ASSERT_TRUE(request.ok()) << request.status();
  request = ParseChatRequest(With({{"temperature", 1.5}, {"stop", json::array()}}));
  ASSERT_TRUE(request.ok()) << request.status();
}

// --- Refusals ---------------------------------------------------------------------------------

struct InvalidCase {
  const char* name;
  std::string body;
  std::string param;  // expected ErrorParamOf; empty when none
};

std::vector<InvalidCase> InvalidCases() {
  const json user = {{"role", "user"}, {"content", "x"}};
  return {
      {"NotJson", "{not json", ""},
      {"EmptyBody", "", ""},
      {"TrailingGarbage", std::string(kMinimal) + "x", ""},
      {"TopLevelArray", "[1,2]", ""},
      {"TopLevelString", "\"hello\"", ""},
      {"TopLevelNull", "null", ""},
      {"MissingModel", With({{"model", nullptr}}), "model"},
      {"EmptyModel", With({{"model", ""}}), "model"},
      {"NumericModel", With({{"model", 4}}), "model"},
      {"ModelNameTooLong", With({{"model", std::string(257, 'm')}}), "model"},
      {"MissingMessages", With({{"messages", nullptr}}), "messages"},
      {"EmptyMessages", With({{"messages", json::array()}}), "messages"},
      {"MessagesNotArray", With({{"messages", user}}), "messages"},
      {"MessagesString", With({{"messages", "hi"}}), "messages"},
      {"MessageNotObject", With({{"messages", json::array({"hi"})}}), "messages[0]"},
      {"SecondMessageNotObject", With({{"messages", json::array({user, 5})}}), "messages[1]"},
      {"MessageWithoutRole", WithMessage({{"content", "x"}}), "messages[0].role"},
      {"RoleNotString", WithMessage({{"role", 1}, {"content", "x"}}), "messages[0].role"},
      {"BadRole", WithMessage({{"role", "robot"}, {"content", "x"}}), "messages[0].role"},
      {"RoleWrongCase", WithMessage({{"role", "User"}, {"content", "x"}}), "messages[0].role"},
      {"ContentNumber", WithMessage({{"role", "user"}, {"content", 5}}), "messages[0].content"},
      {"ContentObject", WithMessage({{"role", "user"}, {"content", json::object()}}),
       "messages[0].content"},
      {"ContentBool", WithMessage({{"role", "user"}, {"content", true}}), "messages[0].content"},
      {"UserContentMissing", WithMessage({{"role", "user"}}), "messages[0].content"},
      {"UserContentNull", WithMessage({{"role", "user"}, {"content", nullptr}}),
       "messages[0].content"},
      {"ContentPartWithoutType",
       WithMessage(
           {{"role", "user"},
            {"content", json::array({{{"type", "text"}, {"text", "a"}}, {{"text", "b"}}})}}),
       "messages[0].content[1]"},
      {"ContentPartTypeNotString",
       WithMessage({{"role", "user"}, {"content", json::array({{{"type", 3}}})}}),
       "messages[0].content[0]"},
      {"ContentPartNotObject", WithMessage({{"role", "user"}, {"content", json::array({"a"})}}),
       "messages[0].content[0]"},
      {"StreamString", With({{"stream", "true"}}), "stream"},
      {"StreamNumber", With({{"stream", 1}}), "stream"},
      {"StreamOptionsWithoutStream", With({{"stream_options", {{"include_usage", true}}}}),
       "stream_options"},
      {"StreamOptionsWithStreamFalse",
       With({{"stream", false}, {"stream_options", {{"include_usage", true}}}}), "stream_options"},
      {"StreamOptionsNotObject", With({{"stream", true}, {"stream_options", true}}),
       "stream_options"},
      {"IncludeUsageNotBool", With({{"stream", true}, {"stream_options", {{"include_usage", 1}}}}),
       "stream_options.include_usage"},
      {"TemperatureTooHigh", With({{"temperature", 2.01}}), "temperature"},
      {"TemperatureNegative", With({{"temperature", -0.1}}), "temperature"},
      {"TemperatureString", With({{"temperature", "1"}}), "temperature"},
      {"TopPTooHigh", With({{"top_p", 1.5}}), "top_p"},
      {"NZero", With({{"n", 0}}), "n"},
      {"NFraction", With({{"n", 1.5}}), "n"},
      {"MaxTokensZero", With({{"max_tokens", 0}}), "max_tokens"},
      {"MaxTokensNegative", With({{"max_tokens", -5}}), "max_tokens"},
      {"MaxTokensString", With({{"max_tokens", "100"}}), "max_tokens"},
      {"MaxCompletionTokensZero", With({{"max_completion_tokens", 0}}), "max_completion_tokens"},
      {"PresencePenaltyTooLow", With({{"presence_penalty", -2.5}}), "presence_penalty"},
      {"FrequencyPenaltyTooHigh", With({{"frequency_penalty", 3}}), "frequency_penalty"},
      {"SeedFraction", With({{"seed", 1.5}}), "seed"},
      {"SeedString", With({{"seed", "7"}}), "seed"},
      {"StopFiveEntries", With({{"stop", json::array({"a", "b", "c", "d", "e"})}}), "stop"},
      {"StopNonString", With({{"stop", json::array({"a", 1})}}), "stop"},
      {"StopNumber", With({{"stop", 5}}), "stop"},
      {"ToolsNotArray", With({{"tools", {{"type", "function"}}}}), "tools"},
      {"ToolChoiceNumber", With({{"tool_choice", 1}}), "tool_choice"},
      {"ResponseFormatString", With({{"response_format", "json"}}), "response_format"},
      {"LogprobsNotBool", With({{"logprobs", "yes"}}), "logprobs"},
      {"UserNotString", With({{"user", 42}}), "user"},
      {"SessionIdEmpty", With({{"session_id", ""}}), "session_id"},
      {"SessionIdNumber", With({{"session_id", 5}}), "session_id"},
      {"SessionIdTooLong", With({{"session_id", std::string(257, 's')}}), "session_id"},
      {"RagCollectionEmpty", With({{"rag_collection", ""}}), "rag_collection"},
      {"RagCollectionArray", With({{"rag_collection", json::array({"a"})}}), "rag_collection"},
      {"RagTopKZero", With({{"rag_top_k", 0}}), "rag_top_k"},
      {"RagTopKTooLarge", With({{"rag_top_k", kMaxRagTopK + 1}}), "rag_top_k"},
      {"RagTopKFraction", With({{"rag_top_k", 2.5}}), "rag_top_k"},
      {"RagTopKString", With({{"rag_top_k", "3"}}), "rag_top_k"},
      {"RagTopKHuge", With({{"rag_top_k", 18446744073709551615ULL}}), "rag_top_k"},
  };
}

class ParseChatRequestInvalidTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(ParseChatRequestInvalidTest, IsA400NamingTheField) {
  const InvalidCase& c = GetParam();
  absl::StatusOr<ChatRequest> request = ParseChatRequest(c.body);
  ASSERT_FALSE(request.ok()) << "accepted: " << c.body;
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << request.status();
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
  EXPECT_EQ(ErrorParamOf(request.status()), c.param) << request.status();
  EXPECT_FALSE(request.status().message().empty());
}

INSTANTIATE_TEST_SUITE_P(AllCases, ParseChatRequestInvalidTest, ::testing::ValuesIn(InvalidCases()),
                         [](const ::testing::TestParamInfo<InvalidCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(ParseChatRequestTest, InvalidJsonHasCodeInvalidJson) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest("{\"model\":");
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(ErrorCodeOf(request.status()), "invalid_json");
}

TEST(ParseChatRequestTest, ModelNameOf256BytesIsAccepted) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(json{
      {"model", std::string(256, 'm')},
      {"messages",
       json::array({{{"role", "user"}, {"content", "x"}}})}}.dump());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model.size(), 256u);
}

TEST(ParseChatRequestTest, RawNulByteIsInvalidJsonEvenAfterTheObject) {
  const std::string valid = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  ASSERT_TRUE(ParseChatRequest(valid).ok());
  // nlohmann stops at a NUL as if the input ended there: the trailing bytes must not be ignored.
  const std::string nul(1, '\0');
  for (const std::string& body :
       {valid + nul, valid + nul + R"({"model":"other"})",
        R"({"model":"m)" + nul + R"(","messages":[{"role":"user","content":"x"}]})"}) {
    absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
    ASSERT_FALSE(request.ok()) << "accepted a body with a NUL byte";
    EXPECT_EQ(ErrorCodeOf(request.status()), "invalid_json");
    EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
  }
  // An escaped NUL is an ordinary character.
  EXPECT_TRUE(
      ParseChatRequest(R"({"model":"m","messages":[{"role":"user","content":"a\u0000b"}]})").ok());
}

TEST(ParseChatRequestTest, BadRoleMessageQuotesTheRole) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(WithMessage({{"role", "robot"}, {"content", "x"}}));
  ASSERT_FALSE(request.ok());
  EXPECT_THAT(std::string(request.status().message()), HasSubstr("'robot'"));
}

TEST(ParseChatRequestTest, InvalidUtf8IsA400) {
  std::string body = R"({"model":"m","messages":[{"role":"user","content":"bad )";
  body += "\xff\xfe";
  body += R"("}]})";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
}

TEST(ParseChatRequestTest, TruncatedUtf8SequenceIsA400) {
  std::string body = R"({"model":"m)";
  body += "\xc3";  // the first byte of a two-byte sequence, then a quote
  body += R"(","messages":[{"role":"user","content":"x"}]})";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
}

TEST(ParseChatRequestTest, LoneSurrogateEscapeIsA400) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(R"({"model":"m","messages":[{"role":"user","content":"\ud800"}]})");
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
}

TEST(ParseChatRequestTest, ValidMultibyteUtf8IsKept) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(
      R"({"model":"m","messages":[{"role":"user","content":"h\u00e9llo \u2603 ✓"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->body["messages"][0]["content"], "h\xc3\xa9llo \xe2\x98\x83 \xe2\x9c\x93");
}

// --- Deep nesting -----------------------------------------------------------------------------

TEST(ParseChatRequestTest, DeeplyNestedUnclosedArraysDoNotCrash) {
  const std::string body(100000, '[');
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
}

TEST(ParseChatRequestTest, DeeplyNestedClosedArraysDoNotCrash) {
  const std::string body = std::string(100000, '[') + std::string(100000, ']');
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  ASSERT_FALSE(request.ok());  // valid JSON, but not an object
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
}

TEST(ParseChatRequestTest, DeeplyNestedFieldInsideValidRequestDoesNotCrash) {
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"x"}],"meta":)" +
                           std::string(100000, '[') + std::string(100000, ']') + "}";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  // Either refusing or accepting is fine; reaching here (and destroying the result) is the test.
  if (!request.ok()) {
    EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
  }
}

TEST(ParseChatRequestTest, DeeplyNestedObjectsInsideMessageDoNotCrash) {
  std::string nested;
  for (int i = 0; i < 50000; ++i) nested += R"({"a":)";
  nested += "1";
  nested += std::string(50000, '}');
  const std::string body =
      R"({"model":"m","messages":[{"role":"user","content":"x","extra":)" + nested + "}]}";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  if (!request.ok()) {
    EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
  }
}

// `levels` of nested arrays as the value of an extra field: the body nests levels + 1 deep.
std::string WithNestedField(int levels) {
  return R"({"model":"m","messages":[{"role":"user","content":"x"}],"meta":)" +
         std::string(levels, '[') + std::string(levels, ']') + "}";
}

TEST(ParseChatRequestTest, NestingUpToTheLimitIsAccepted) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(WithNestedField(kMaxJsonNesting - 1));
  ASSERT_TRUE(request.ok()) << request.status();
  const json* inner = &request->body["meta"];
  int levels = 0;
  while (inner->is_array() && !inner->empty()) {
    inner = &(*inner)[0];
    ++levels;
  }
  EXPECT_EQ(levels + 1, kMaxJsonNesting - 1);  // the innermost array is empty
}

TEST(ParseChatRequestTest, NestingBeyondTheLimitIsA400) {
  absl::StatusOr<ChatRequest> request = ParseChatRequest(WithNestedField(kMaxJsonNesting));
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
  EXPECT_EQ(ErrorCodeOf(request.status()), "invalid_json");
}

TEST(ParseChatRequestTest, BracketsInsideStringsDoNotCountAsNesting) {
  const std::string brackets(1000, '[');
  const std::string head = R"({"model":"m","messages":[{"role":"user",)";
  const std::vector<std::string> bodies = {
      // Plain.
      head + R"("content":")" + brackets + R"("}]})",
      // After an escaped quote, which does not end the string.
      head + R"("content":"a\")" + brackets + R"("}]})",
      // After an escaped backslash, whose following quote does end the string: the brackets
      // are in the next string.
      head + R"("content":"x\\","name":")" + brackets + R"("}]})",
  };
  for (const std::string& body : bodies) {
    absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
    EXPECT_TRUE(request.ok()) << request.status() << "\n" << body.substr(0, 120);
  }
}

// Runs `work` in a child process; true when it exited normally with status 0 (a stack overflow
// kills only the child).
bool RunsToCompletionInChild(const std::function<void()>& work) {
  const pid_t pid = fork();
  if (pid == 0) {
    work();
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(ParseChatRequestTest, AcceptedRequestsCanBeCopiedAndSerialised) {
  // Whatever ParseChatRequest accepts is later copied (every adapter's EncodeChat starts from a
  // copy of the body) and serialised (DumpJson). Both recurse over the JSON tree, so a request
  // must either be refused or be shallow enough for that. 100,000 levels is a 200 KB body, well
  // under the default 8 MiB limit.
  constexpr int kDepth = 100'000;
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"x"}],"meta":)" +
                           std::string(kDepth, '[') + std::string(kDepth, ']') + "}";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(body);
  if (!request.ok()) {
    EXPECT_EQ(ToHttpError(request.status()).http_status, 400);
    return;
  }
  const bool survived = RunsToCompletionInChild([&request] {
    const json copy = request->body;
    const std::string text = DumpJson(copy);
    if (text.empty()) _exit(1);
  });
  // Regression: ParseChatRequest used to accept any depth (nlohmann's parser is iterative)
  // and the copy in OpenAIAdapter::EncodeChat then crashed the server with SIGSEGV.
  EXPECT_TRUE(survived) << "a request nested " << kDepth
                        << " levels deep was accepted but cannot be copied and serialised";
}

// --- Extension fields -------------------------------------------------------------------------

TEST(ParseChatRequestTest, ExtensionFieldsAreLiftedAndEverythingElseKept) {
  const json original = json::parse(R"({
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi", "name": "bob"}],
    "session_id": "sess-123",
    "rag_collection": "docs",
    "rag_top_k": 7,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
              "properties": {"x": {"type": "integer"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": true}},
    "seed": 12345678901,
    "logprobs": true,
    "top_logprobs": 3,
    "temperature": 0.7,
    "metadata": {"nested": [1, 2.5, null, "x", {"deep": false}]},
    "x_vendor_field": {"anything": ["goes", 1e-7]},
    "parallel_tool_calls": false,
    "user": "u-1"
  })");
  absl::StatusOr<ChatRequest> request = ParseChatRequest(original.dump());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->session_id, "sess-123");
  EXPECT_EQ(request->rag_collection, "docs");
  EXPECT_EQ(request->rag_top_k, 7);
  EXPECT_FALSE(request->body.contains("session_id"));
  EXPECT_FALSE(request->body.contains("rag_collection"));
  EXPECT_FALSE(request->body.contains("rag_top_k"));

  json expected = original;
  expected.erase("session_id");
  expected.erase("rag_collection");
  expected.erase("rag_top_k");
  EXPECT_EQ(DumpJson(request->body), DumpJson(expected));
  EXPECT_EQ(request->body.size(), original.size() - 3);
}

TEST(ParseChatRequestTest, PassThroughIsByteIdenticalToTheInputText) {
  // Compact input in nlohmann's key order, so the dump can be compared with the text itself.
  const std::string kept =
      R"("logprobs":true,"messages":[{"content":"hi","role":"user"}],"model":"m",)"
      R"("response_format":{"type":"json_object"},"seed":-3,)"
      R"("tools":[{"function":{"name":"f"},"type":"function"}],"zz_unknown":[1,"2",{"3":null}])";
  const std::string input = "{" + kept + R"(,"session_id":"s"})";
  absl::StatusOr<ChatRequest> request = ParseChatRequest(input);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(DumpJson(request->body), "{" + kept + "}");
}

TEST(ParseChatRequestTest, NullExtensionFieldsAreRemovedAndDefaulted) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1,)"
                       R"("session_id":null,"rag_collection":null,"rag_top_k":null})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->session_id, std::nullopt);
  EXPECT_EQ(request->rag_collection, std::nullopt);
  EXPECT_EQ(request->rag_top_k, kDefaultRagTopK);
  EXPECT_FALSE(request->body.contains("session_id"));
  EXPECT_FALSE(request->body.contains("rag_collection"));
  EXPECT_FALSE(request->body.contains("rag_top_k"));
  EXPECT_EQ(request->body["temperature"], 1);
}

TEST(ParseChatRequestTest, RagTopKBounds) {
  for (int k : {1, 2, kDefaultRagTopK, kMaxRagTopK - 1, kMaxRagTopK}) {
    absl::StatusOr<ChatRequest> request = ParseChatRequest(With({{"rag_top_k", k}}));
    ASSERT_TRUE(request.ok()) << "k=" << k << ": " << request.status();
    EXPECT_EQ(request->rag_top_k, k);
    EXPECT_FALSE(request->body.contains("rag_top_k"));
  }
  for (int k : {-1, 0, kMaxRagTopK + 1, 1000}) {
    absl::StatusOr<ChatRequest> request = ParseChatRequest(With({{"rag_top_k", k}}));
    ASSERT_FALSE(request.ok()) << "k=" << k;
    EXPECT_EQ(ErrorParamOf(request.status()), "rag_top_k");
  }
}

TEST(ParseChatRequestTest, ExtensionStringLengthLimit) {
  absl::StatusOr<ChatRequest> request =
      ParseChatRequest(With({{"session_id", std::string(256, 'a')}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->session_id, std::string(256, 'a'));
  request = ParseChatRequest(With({{"rag_collection", std::string(257, 'a')}}));
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(ErrorParamOf(request.status()), "rag_collection");
}

TEST(ParseChatRequestTest, NeverThrowsOnHostileInputs) {
  static constexpr char kEmbeddedNul[] = "{\"model\":\"m\0\",\"messages\":[]}";
  const std::vector<std::string> inputs = {
      "",
      " ",
      "{}",
      "[]",
      "0",
      "\"",
      "{\"model\":null}",
      "{\"messages\":[null]}",
      std::string(kEmbeddedNul, sizeof(kEmbeddedNul) - 1),
      "\xef\xbb\xbf{}",
      R"({"model":"m","messages":[{"role":"user","content":[null]}]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":null}})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400})"};
  for (const std::string& input : inputs) {
    EXPECT_NO_THROW({
      absl::StatusOr<ChatRequest> request = ParseChatRequest(input);
      (void)request;
    }) << input;
  }
}

// --- UsageOf / DumpJson -----------------------------------------------------------------------

TEST(UsageOfTest, ReadsReportedUsage) {
  std::optional<Usage> usage =
      UsageOf(json::parse(R"({"usage":{"prompt_tokens":12,"completion_tokens":34}})"));
  ASSERT_TRUE(usage.has_value());
  EXPECT_TRUE(usage->reported);
  EXPECT_EQ(usage->prompt_tokens, 12);
  EXPECT_EQ(usage->completion_tokens, 34);
}

TEST(UsageOfTest, AbsentOrMalformed) {
  EXPECT_EQ(UsageOf(json::parse(R"({"choices":[]})")), std::nullopt);
  EXPECT_EQ(UsageOf(json::parse(R"({"usage":null})")), std::nullopt);
  EXPECT_EQ(UsageOf(json::parse(R"({"usage":5})")), std::nullopt);
  std::optional<Usage> usage =
      UsageOf(json::parse(R"({"usage":{"prompt_tokens":"12","completion_tokens":1.5}})"));
  ASSERT_TRUE(usage.has_value());
  EXPECT_TRUE(usage->reported);
  EXPECT_EQ(usage->prompt_tokens, 0);
  EXPECT_EQ(usage->completion_tokens, 0);
}

TEST(DumpJsonTest, ReplacesInvalidUtf8InsteadOfThrowing) {
  const json value = {{"text", std::string("a\xff"
                                           "b")}};
  std::string text;
  ASSERT_NO_THROW(text = DumpJson(value));
  EXPECT_EQ(json::parse(text)["text"],
            "a\xEF\xBF\xBD"
            "b");
}

TEST(DumpJsonTest, IsCompact) {
  EXPECT_EQ(DumpJson(json{{"a", json::array({1, 2})}}), R"({"a":[1,2]})");
}

}  // namespace
}  // namespace ailb::llm
