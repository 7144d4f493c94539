#include "provider/ollama/ollama_adapter.h"

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

std::filesystem::path Root() { return golden::GoldenRoot(__FILE__, "ollama"); }

config::Deployment TestDeployment() {
  config::Deployment deployment;
  deployment.id = "ollama/llama3.2";
  deployment.model_name = "llama";
  deployment.provider = config::ProviderKind::kOllama;
  deployment.upstream_model = "llama3.2";
  deployment.api_base = "http://ollama.test:11434";
  return deployment;
}

const OllamaAdapter& Adapter() {
  static const OllamaAdapter adapter;
  return adapter;
}

std::string ReadOrFail(const std::filesystem::path& path) {
  std::optional<std::string> text = golden::ReadFile(path);
  if (!text) ADD_FAILURE() << "missing golden input " << path;
  return text.value_or("");
}

std::string CaseName(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

// ---- Golden files ----

class OllamaRequestGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(OllamaRequestGolden, EncodesAsRecorded) {
  const std::filesystem::path dir = Root() / "request";
  absl::StatusOr<llm::ChatRequest> request =
      llm::ParseChatRequest(ReadOrFail(dir / (GetParam() + ".in.json")));
  ASSERT_TRUE(request.ok()) << "golden input must be a valid OpenAI request: " << request.status();
  absl::StatusOr<upstream::Request> encoded = Adapter().EncodeChat(*request, TestDeployment());
  const json actual = encoded.ok() ? json{{"request", golden::RequestToJson(*encoded)}}
                                   : json{{"status", golden::StatusToJson(encoded.status())}};
  golden::ExpectMatchesGolden(actual, dir / (GetParam() + ".out.json"));
}

INSTANTIATE_TEST_SUITE_P(Golden, OllamaRequestGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "request", ".in.json")),
                         CaseName);

class OllamaResponseGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(OllamaResponseGolden, DecodesAsRecorded) {
  const std::filesystem::path dir = Root() / "response";
  absl::StatusOr<json> decoded = Adapter().DecodeChat(ReadOrFail(dir / (GetParam() + ".in.json")));
  const json actual = decoded.ok() ? json{{"response", *decoded}}
                                   : json{{"status", golden::StatusToJson(decoded.status())}};
  golden::ExpectMatchesGolden(actual, dir / (GetParam() + ".out.json"));
}

INSTANTIATE_TEST_SUITE_P(Golden, OllamaResponseGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "response", ".in.json")),
                         CaseName);

class OllamaErrorGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(OllamaErrorGolden, DecodesAsRecorded) {
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

INSTANTIATE_TEST_SUITE_P(Golden, OllamaErrorGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "error", ".in.json")),
                         CaseName);

class OllamaStreamGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(OllamaStreamGolden, DecodesAsRecorded) {
  const std::filesystem::path dir = Root() / "stream";
  const std::string transcript = ReadOrFail(dir / (GetParam() + ".ndjson"));
  golden::ExpectMatchesGolden(golden::RunStream(Adapter(), transcript, 0),
                              dir / (GetParam() + ".out.json"));
}

// Network reads split lines anywhere; the chunks (and any error) must not depend on where.
TEST_P(OllamaStreamGolden, PieceSizeDoesNotMatter) {
  const std::string transcript = ReadOrFail(Root() / "stream" / (GetParam() + ".ndjson"));
  const json whole = golden::RunStream(Adapter(), transcript, 0);
  for (size_t piece : {1, 2, 3, 7, 64}) {
    EXPECT_TRUE(JsonEq(golden::RunStream(Adapter(), transcript, piece), whole))
        << "fed in pieces of " << piece << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, OllamaStreamGolden,
                         ::testing::ValuesIn(golden::CaseNames(Root() / "stream", ".ndjson")),
                         CaseName);

// Guards against golden cases vanishing: the behaviours the adapter promises each have one.
TEST(OllamaGoldenCoverage, RequiredCasesExist) {
  const std::map<std::string, std::vector<std::string>> required = {
      {"request",
       {"basic_options", "stream", "images", "tool_round_trip", "tools_pass_through",
        "tool_choice_none", "response_format_json_object", "response_format_json_schema",
        "invalid_tool_arguments", "http_image_url"}},
      {"response", {"text_stop", "length", "tool_calls", "missing_counts", "error_body"}},
      {"error", {"model_not_found", "rate_limited", "not_json_500"}},
      {"stream",
       {"text", "tool_calls", "length", "cut_before_done", "cut_mid_line", "error_line",
        "malformed_line", "crlf"}},
  };
  for (const auto& [kind, names] : required) {
    const std::vector<std::string> present =
        golden::CaseNames(Root() / kind, kind == "stream" ? ".ndjson" : ".in.json");
    for (const std::string& name : names) {
      EXPECT_NE(std::find(present.begin(), present.end(), name), present.end())
          << kind << "/" << name << " is missing under " << Root();
    }
  }
}

// ---- Behaviour beyond the golden files ----

TEST(OllamaAdapterTest, Kind) { EXPECT_EQ(Adapter().kind(), config::ProviderKind::kOllama); }

TEST(OllamaAdapterTest, StreamedToolCallsAreNumberedAcrossLines) {
  const std::string transcript = ReadOrFail(Root() / "stream" / "tool_calls.ndjson");
  const json run = golden::RunStream(Adapter(), transcript, 1);
  ASSERT_TRUE(JsonEq(run["status"], {{"code", "OK"}})) << golden::Pretty(run);
  std::vector<std::string> ids;
  for (const json& chunk : run["chunks"]) {
    if (chunk["choices"].empty()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (!delta.contains("tool_calls")) continue;
    for (const json& call : delta["tool_calls"]) {
      EXPECT_TRUE(JsonEq(call["index"], ids.size()));
      ids.push_back(call["id"]);
      // Arguments are complete JSON objects on every line, serialised as OpenAI strings.
      const json arguments =
          json::parse(call["function"]["arguments"].get<std::string>(), nullptr, false);
      EXPECT_TRUE(arguments.is_object());
    }
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"call_0", "call_1"}));
}

struct DoneReasonCase {
  const char* done_reason;
  bool tool_calls;
  const char* finish_reason;
};

class OllamaDoneReasonTest : public ::testing::TestWithParam<DoneReasonCase> {};

// The same mapping holds for whole replies and for streams.
TEST_P(OllamaDoneReasonTest, MapsToFinishReason) {
  const DoneReasonCase& c = GetParam();
  json message = {{"role", "assistant"}, {"content", "x"}};
  if (c.tool_calls) {
    message["tool_calls"] =
        json::array({{{"function", {{"name", "f"}, {"arguments", json::object()}}}}});
  }
  json reply = {{"model", "llama3.2"},
                {"message", message},
                {"done", true},
                {"prompt_eval_count", 3},
                {"eval_count", 4}};
  if (c.done_reason[0] != '\0') reply["done_reason"] = c.done_reason;
  absl::StatusOr<json> decoded = Adapter().DecodeChat(reply.dump());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(JsonEq((*decoded)["choices"][0]["finish_reason"], c.finish_reason));

  const json streamed = golden::RunStream(Adapter(), reply.dump() + "\n", 0);
  ASSERT_TRUE(JsonEq(streamed["status"], {{"code", "OK"}})) << golden::Pretty(streamed);
  ASSERT_EQ(streamed["chunks"].size(), 3u);
  EXPECT_TRUE(JsonEq(streamed["chunks"][1]["choices"][0]["finish_reason"], c.finish_reason));
  EXPECT_TRUE(JsonEq(streamed["chunks"][2]["usage"],
                     {{"prompt_tokens", 3}, {"completion_tokens", 4}, {"total_tokens", 7}}));
}

INSTANTIATE_TEST_SUITE_P(
    AllReasons, OllamaDoneReasonTest,
    ::testing::Values(DoneReasonCase{"stop", false, "stop"},
                      DoneReasonCase{"length", false, "length"},
                      DoneReasonCase{"load", false, "stop"}, DoneReasonCase{"", false, "stop"},
                      DoneReasonCase{"stop", true, "tool_calls"}),
    [](const ::testing::TestParamInfo<DoneReasonCase>& info) {
      return absl::StrCat(info.param.done_reason[0] == '\0' ? "missing" : info.param.done_reason,
                          info.param.tool_calls ? "_with_tools" : "");
    });

TEST(OllamaAdapterTest, NonJsonReplyIsBadGateway) {
  for (std::string_view body : {"", "not json", "[1,2]", "\"text\"", "{\"message\":"}) {
    absl::StatusOr<json> decoded = Adapter().DecodeChat(body);
    ASSERT_FALSE(decoded.ok()) << body;
    EXPECT_EQ(HttpStatusOverride(decoded.status()), 502) << body;
  }
}

TEST(OllamaAdapterTest, HealthProbeListsTags) {
  absl::StatusOr<upstream::Request> probe = Adapter().EncodeHealthProbe(TestDeployment());
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->method, "GET");
  EXPECT_EQ(probe->url, "http://ollama.test:11434/api/tags");
  EXPECT_EQ(upstream::FindHeader(probe->headers, "Authorization"), "");
  EXPECT_TRUE(probe->body.empty());
}

// Ollama itself has no keys, but one behind an authenticating proxy needs the bearer token.
TEST(OllamaAdapterTest, ApiKeyIsSentAsBearerToken) {
  config::Deployment deployment = TestDeployment();
  deployment.api_key = "secret";
  absl::StatusOr<upstream::Request> probe = Adapter().EncodeHealthProbe(deployment);
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(upstream::FindHeader(probe->headers, "Authorization"), "Bearer secret");
  absl::StatusOr<llm::ChatRequest> request =
      llm::ParseChatRequest(R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(request.ok());
  absl::StatusOr<upstream::Request> encoded = Adapter().EncodeChat(*request, deployment);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(upstream::FindHeader(encoded->headers, "Authorization"), "Bearer secret");
}

TEST(OllamaAdapterTest, StreamErrorsAreSticky) {
  std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
  std::vector<json> chunks;
  const absl::Status first = decoder->Feed("{oops}\n", chunks);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(decoder->Feed("{\"done\":true}\n", chunks), first);
  EXPECT_EQ(decoder->Finish(chunks), first);
  EXPECT_TRUE(chunks.empty());
}

TEST(OllamaAdapterTest, EmptyStreamIsUnavailable) {
  std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
  std::vector<json> chunks;
  EXPECT_EQ(decoder->Finish(chunks).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(chunks.empty());
}

TEST(OllamaAdapterTest, EndlessLineIsRejected) {
  std::unique_ptr<StreamDecoder> decoder = Adapter().NewStreamDecoder();
  std::vector<json> chunks;
  const std::string piece(1 << 20, 'a');
  absl::Status status;
  for (int i = 0; i < 20 && status.ok(); ++i) status = decoder->Feed(piece, chunks);
  EXPECT_EQ(HttpStatusOverride(status), 502) << status;
}

// ---- Hostile input: every field of every golden input swapped for another JSON type ----

TEST(OllamaAdapterTest, HostileRequestsNeverThrow) {
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

TEST(OllamaAdapterTest, HostileRepliesNeverThrow) {
  const std::filesystem::path dir = Root() / "response";
  for (const std::string& name : golden::CaseNames(dir, ".in.json")) {
    const json body = golden::ReadJson(dir / (name + ".in.json"));
    for (const json& mutated : golden::TypeMutations(body)) {
      EXPECT_NO_THROW((void)Adapter().DecodeChat(mutated.dump())) << name;
      EXPECT_NO_THROW((void)Adapter().DecodeError(500, {}, mutated.dump())) << name;
    }
  }
}

TEST(OllamaAdapterTest, HostileStreamsNeverThrow) {
  const std::filesystem::path dir = Root() / "stream";
  size_t runs = 0;
  for (const std::string& name : golden::CaseNames(dir, ".ndjson")) {
    const std::string transcript = ReadOrFail(dir / (name + ".ndjson"));
    // Truncations at many points (a prime stride keeps the run fast and the offsets varied).
    for (size_t cut = 0; cut <= transcript.size(); cut += 5) {
      EXPECT_NO_THROW((void)golden::RunStream(Adapter(), transcript.substr(0, cut), 0)) << name;
      ++runs;
    }
    // Every field of every line replaced by another type.
    std::vector<std::string> lines;
    for (size_t start = 0; start < transcript.size();) {
      size_t end = transcript.find('\n', start);
      if (end == std::string::npos) end = transcript.size();
      lines.push_back(transcript.substr(start, end - start));
      start = end + 1;
    }
    for (size_t i = 0; i < lines.size(); ++i) {
      const json data = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
      if (data.is_discarded()) continue;
      for (const json& mutated : golden::TypeMutations(data)) {
        std::string rebuilt;
        for (size_t j = 0; j < lines.size(); ++j) {
          absl::StrAppend(&rebuilt, j == i ? mutated.dump() : lines[j], "\n");
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
