#include "provider/anthropic/anthropic_adapter.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/llm/chat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "unit/provider/golden_util.h"

namespace ailb::provider {
namespace {

using golden::JsonEq;
using nlohmann::json;

std::filesystem::path Root() { return golden::GoldenRoot(__FILE__, "anthropic"); }

config::Deployment TestDeployment() {
  config::Deployment deployment;
  deployment.id = "anthropic/claude-test-1";
  deployment.model_name = "claude";
  deployment.provider = config::ProviderKind::kAnthropic;
  deployment.upstream_model = "claude-test-1";
  deployment.api_base = "https://anthropic.test";
  deployment.api_key = "sk-ant-test";
  return deployment;
}

const AnthropicAdapter& Adapter() {
  static const AnthropicAdapter adapter;
  return adapter;
}

std::string ReadOrFail(const std::filesystem::path& path) {
  std::optional<std::string> text = golden::ReadFile(path);
  if (!text) ADD_FAILURE() << "missing golden input " << path;
  return text.value_or("");
}

std::string CaseName(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

// ---- Golden files ----

class AnthropicRequestGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AnthropicRequestGolden, EncodesAsRecorded) {
  const std::filesystem::path dir = Root() / "request";
  absl::StatusOr<llm::ChatRequest> request =
      llm::ParseChatRequest(ReadOrFail(dir / (GetParam() + ".in.json")));
  ASSERT_TRUE(request.ok()) << "golden input must be a valid OpenAI request: " << request.status();
  absl::StatusOr<upstream::Request> encoded = Adapter().EncodeChat(*request, TestDeployment());
  const json actual = encoded.ok() ? json{{"request", golden::RequestToJson(*encoded)}}
                                   : json{{"status", golden::StatusToJson(encoded.status())}};
  golden::ExpectMatchesGolden(actual, dir / (GetParam() + ".out.json"));
}

INSTANTIATE_TEST_SUITE_P(Golden, AnthropicRequestGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "request", ".in.json")),
                         CaseName);

class AnthropicResponseGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AnthropicResponseGolden, DecodesAsRecorded) {
  const std::filesystem::path dir = Root() / "response";
  absl::StatusOr<json> decoded = Adapter().DecodeChat(ReadOrFail(dir / (GetParam() + ".in.json")));
  const json actual = decoded.ok() ? json{{"response", *decoded}}
                                   : json{{"status", golden::StatusToJson(decoded.status())}};
  golden::ExpectMatchesGolden(actual, dir / (GetParam() + ".out.json"));
}

INSTANTIATE_TEST_SUITE_P(Golden, AnthropicResponseGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "response", ".in.json")),
                         CaseName);

class AnthropicErrorGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AnthropicErrorGolden, DecodesAsRecorded) {
  const std::filesystem::path dir = Root() / "error";
  const json in = golden::ReadJson(dir / (GetParam() + ".in.json"));
  ASSERT_TRUE(in.is_object() && in["http_status"].is_number_integer() && in["body"].is_string());
  const absl::Status status =
      Adapter().DecodeError(in["http_status"].get<int>(), golden::HeadersFromJson(in["headers"]),
                            in["body"].get<std::string>());
  EXPECT_FALSE(status.ok());
  golden::ExpectMatchesGolden(json{{"status", golden::StatusToJson(status)}},
                              dir / (GetParam() + ".out.json"));
}

INSTANTIATE_TEST_SUITE_P(Golden, AnthropicErrorGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "error", ".in.json")),
                         CaseName);

class AnthropicStreamGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AnthropicStreamGolden, DecodesAsRecorded) {
  const std::filesystem::path dir = Root() / "stream";
  const std::string transcript = ReadOrFail(dir / (GetParam() + ".sse"));
  golden::ExpectMatchesGolden(golden::RunStream(Adapter(), transcript, 0),
                              dir / (GetParam() + ".out.json"));
}

// Network reads split events anywhere; the chunks (and any error) must not depend on where.
TEST_P(AnthropicStreamGolden, PieceSizeDoesNotMatter) {
  const std::string transcript = ReadOrFail(Root() / "stream" / (GetParam() + ".sse"));
  const json whole = golden::RunStream(Adapter(), transcript, 0);
  for (size_t piece : {1, 2, 3, 7, 64}) {
    EXPECT_TRUE(JsonEq(golden::RunStream(Adapter(), transcript, piece), whole))
        << "fed in pieces of " << piece << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, AnthropicStreamGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "stream", ".sse")),
                         CaseName);

// Guards against golden cases vanishing: the behaviours the adapter promises each have one.
TEST(AnthropicGoldenCoverage, RequiredCasesExist) {
  const std::map<std::string, std::vector<std::string>> required = {
      {"request",
       {"system_merging", "role_alternation", "only_system", "tools_auto", "tool_choice_required",
        "tool_choice_none", "tool_choice_named", "tool_round_trip", "tool_result_first", "images",
        "sampling_defaults", "max_tokens_precedence", "stream", "response_format_json_object",
        "response_format_json_schema", "invalid_tool_arguments", "unsupported_image_url"}},
      {"response",
       {"text_end_turn", "cache_usage", "tool_use", "max_tokens", "refusal", "error_type_body"}},
      {"error", {"rate_limited", "overloaded_529", "not_json_500", "retry_after_date"}},
      {"stream",
       {"text", "tool_use", "max_tokens", "cut_before_stop", "cut_mid_event", "malformed_event",
        "error_event_overloaded", "error_event_api", "crlf"}},
  };
  for (const auto& [kind, names] : required) {
    const std::vector<std::string> present =
        golden::CaseNames(Root() / kind, kind == "stream" ? ".sse" : ".in.json");
    for (const std::string& name : names) {
      EXPECT_NE(std::find(present.begin(), present.end(), name), present.end())
          << kind << "/" << name << " is missing under " << Root();
    }
  }
}

// ---- Behaviour beyond the golden files ----

TEST(AnthropicAdapterTest, Kind) { EXPECT_EQ(Adapter().kind(), config::ProviderKind::kAnthropic); }

TEST(AnthropicAdapterTest, ToolArgumentDeltasConcatenateExactly) {
  const std::string transcript = ReadOrFail(Root() / "stream" / "tool_use.sse");
  for (size_t piece : {0, 1}) {
    std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
    std::vector<json> chunks;
    const size_t step = piece == 0 ? transcript.size() : piece;
    for (size_t offset = 0; offset < transcript.size(); offset += step) {
      ASSERT_TRUE(decoder->Feed(std::string_view(transcript).substr(offset, step), chunks).ok());
    }
    ASSERT_TRUE(decoder->Finish(chunks).ok());
    std::map<int, std::string> arguments;
    std::map<int, std::string> names;
    for (const json& chunk : chunks) {
      if (chunk["choices"].empty()) continue;
      const json& delta = chunk["choices"][0]["delta"];
      if (!delta.contains("tool_calls")) continue;
      for (const json& call : delta["tool_calls"]) {
        const int index = call["index"].get<int>();
        if (call["function"].contains("name")) names[index] = call["function"]["name"];
        arguments[index] += call["function"]["arguments"].get<std::string>();
      }
    }
    ASSERT_EQ(arguments.size(), 2u);
    EXPECT_EQ(names[0], "get_weather");
    EXPECT_EQ(arguments[0], R"({"city": "Paris", "unit": "c"})");
    EXPECT_EQ(names[1], "get_time");
    EXPECT_EQ(arguments[1], "{}");
    EXPECT_TRUE(JsonEq(json::parse(arguments[0]), json{{"city", "Paris"}, {"unit", "c"}}));
  }
}

struct StopReasonCase {
  const char* stop_reason;
  const char* finish_reason;
};

class AnthropicStopReasonTest : public ::testing::TestWithParam<StopReasonCase> {};

// The same mapping holds for whole replies and for streams.
TEST_P(AnthropicStopReasonTest, MapsToFinishReason) {
  const StopReasonCase& c = GetParam();
  const json reply = {{"id", "msg_1"},
                      {"type", "message"},
                      {"model", "m"},
                      {"content", json::array({{{"type", "text"}, {"text", "x"}}})},
                      {"stop_reason", c.stop_reason},
                      {"usage", {{"input_tokens", 1}, {"output_tokens", 1}}}};
  absl::StatusOr<json> decoded = Adapter().DecodeChat(reply.dump());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(JsonEq((*decoded)["choices"][0]["finish_reason"], c.finish_reason));

  const std::string transcript = absl::StrCat(
      "event: message_start\ndata: ",
      json{{"type", "message_start"},
           {"message", {{"id", "msg_1"}, {"model", "m"}, {"usage", {{"input_tokens", 1}}}}}}
          .dump(),
      "\n\nevent: message_delta\ndata: ",
      json{{"type", "message_delta"},
           {"delta", {{"stop_reason", c.stop_reason}}},
           {"usage", {{"output_tokens", 2}}}}
          .dump(),
      "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
  const json streamed = golden::RunStream(Adapter(), transcript, 0);
  ASSERT_TRUE(JsonEq(streamed["status"], {{"code", "OK"}})) << golden::Pretty(streamed);
  ASSERT_EQ(streamed["chunks"].size(), 3u);
  EXPECT_TRUE(JsonEq(streamed["chunks"][1]["choices"][0]["finish_reason"], c.finish_reason));
  EXPECT_TRUE(JsonEq(streamed["chunks"][2]["usage"],
                     {{"prompt_tokens", 1}, {"completion_tokens", 2}, {"total_tokens", 3}}));
}

INSTANTIATE_TEST_SUITE_P(
    AllReasons, AnthropicStopReasonTest,
    ::testing::Values(StopReasonCase{"end_turn", "stop"}, StopReasonCase{"stop_sequence", "stop"},
                      StopReasonCase{"max_tokens", "length"},
                      StopReasonCase{"tool_use", "tool_calls"},
                      StopReasonCase{"refusal", "content_filter"},
                      StopReasonCase{"pause_turn", "stop"},
                      StopReasonCase{"model_context_window_exceeded", "length"},
                      StopReasonCase{"some_future_reason", "stop"}),
    [](const ::testing::TestParamInfo<StopReasonCase>& info) {
      return std::string(info.param.stop_reason);
    });

TEST(AnthropicAdapterTest, NonJsonReplyIsBadGateway) {
  for (std::string_view body : {"", "not json", "[1,2]", "\"text\"", "{\"content\":"}) {
    absl::StatusOr<json> decoded = Adapter().DecodeChat(body);
    ASSERT_FALSE(decoded.ok()) << body;
    EXPECT_EQ(HttpStatusOverride(decoded.status()), 502) << body;
  }
}

TEST(AnthropicAdapterTest, HealthProbeListsModels) {
  absl::StatusOr<upstream::Request> probe = Adapter().EncodeHealthProbe(TestDeployment());
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->method, "GET");
  EXPECT_EQ(probe->url, "https://anthropic.test/v1/models");
  EXPECT_EQ(upstream::FindHeader(probe->headers, "x-api-key"), "sk-ant-test");
  EXPECT_EQ(upstream::FindHeader(probe->headers, "anthropic-version"), "2023-06-01");
  EXPECT_TRUE(probe->body.empty());
}

TEST(AnthropicAdapterTest, NoApiKeyMeansNoKeyHeader) {
  config::Deployment deployment = TestDeployment();
  deployment.api_key.clear();
  absl::StatusOr<llm::ChatRequest> request =
      llm::ParseChatRequest(R"({"model":"claude","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(request.ok());
  absl::StatusOr<upstream::Request> encoded = Adapter().EncodeChat(*request, deployment);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(upstream::FindHeader(encoded->headers, "x-api-key"), "");
  EXPECT_EQ(upstream::FindHeader(encoded->headers, "anthropic-version"), "2023-06-01");
}

TEST(AnthropicAdapterTest, StreamErrorsAreSticky) {
  std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
  std::vector<json> chunks;
  const absl::Status first = decoder->Feed("data: {oops}\n\n", chunks);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(decoder->Feed("data: {\"type\":\"ping\"}\n\n", chunks), first);
  EXPECT_EQ(decoder->Finish(chunks), first);
  EXPECT_TRUE(chunks.empty());
}

TEST(AnthropicAdapterTest, EmptyStreamIsUnavailable) {
  std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
  std::vector<json> chunks;
  const absl::Status status = decoder->Finish(chunks);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(chunks.empty());
}

// ---- Hostile input: every field of every golden input swapped for another JSON type ----

TEST(AnthropicAdapterTest, HostileRequestsNeverThrow) {
  const std::filesystem::path dir = Root() / "request";
  for (const std::string& name : golden::CaseNames(dir, ".in.json")) {
    const json body = golden::ReadJson(dir / (name + ".in.json"));
    for (json& mutated : golden::TypeMutations(body)) {
      llm::ChatRequest request;  // bypasses validation on purpose
      request.stream = true;
      request.body = std::move(mutated);
      EXPECT_NO_THROW((void)Adapter().EncodeChat(request, TestDeployment())) << name;
    }
  }
}

TEST(AnthropicAdapterTest, HostileRepliesNeverThrow) {
  const std::filesystem::path dir = Root() / "response";
  for (const std::string& name : golden::CaseNames(dir, ".in.json")) {
    const json body = golden::ReadJson(dir / (name + ".in.json"));
    for (const json& mutated : golden::TypeMutations(body)) {
      EXPECT_NO_THROW((void)Adapter().DecodeChat(mutated.dump())) << name;
      EXPECT_NO_THROW((void)Adapter().DecodeError(500, {}, mutated.dump())) << name;
    }
  }
}

// Splits an SSE transcript into (event name, data) pairs; the golden transcripts use one data
// line per event.
std::vector<std::pair<std::string, std::string>> SplitEvents(const std::string& transcript) {
  std::vector<std::pair<std::string, std::string>> events;
  std::pair<std::string, std::string> current;
  size_t start = 0;
  while (start < transcript.size()) {
    size_t end = transcript.find('\n', start);
    if (end == std::string::npos) end = transcript.size();
    std::string line = transcript.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.starts_with("event: ")) current.first = line.substr(7);
    if (line.starts_with("data: ")) current.second = line.substr(6);
    if (line.empty() && !current.second.empty()) {
      events.push_back(current);
      current = {};
    }
    start = end + 1;
  }
  return events;
}

TEST(AnthropicAdapterTest, HostileStreamsNeverThrow) {
  const std::filesystem::path dir = Root() / "stream";
  size_t runs = 0;
  for (const std::string& name : golden::CaseNames(dir, ".sse")) {
    const std::string transcript = ReadOrFail(dir / (name + ".sse"));
    // Truncations at many points (a prime stride keeps the run fast and the offsets varied).
    for (size_t cut = 0; cut <= transcript.size(); cut += 5) {
      EXPECT_NO_THROW((void)golden::RunStream(Adapter(), transcript.substr(0, cut), 0)) << name;
      ++runs;
    }
    // Every field of every event replaced by another type.
    const auto events = SplitEvents(transcript);
    for (size_t i = 0; i < events.size(); ++i) {
      const json data = json::parse(events[i].second, nullptr, /*allow_exceptions=*/false);
      if (data.is_discarded()) continue;
      for (const json& mutated : golden::TypeMutations(data)) {
        std::string rebuilt;
        for (size_t j = 0; j < events.size(); ++j) {
          absl::StrAppend(&rebuilt, "event: ", events[j].first,
                          "\ndata: ", j == i ? mutated.dump() : events[j].second, "\n\n");
        }
        EXPECT_NO_THROW((void)golden::RunStream(Adapter(), rebuilt, 0)) << name;
        ++runs;
      }
    }
  }
  EXPECT_GT(runs, 1000u);
}

}  // namespace
}  // namespace ailb::provider
