// The OpenAI adapter: request encoding (model substitution, pass-through, usage for streams,
// URL and auth), reply decoding, the stream decoder and upstream error mapping.
#include "provider/openai/openai_adapter.h"

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "ailb/common/status.h"
#include "ailb/config/config.h"
#include "ailb/llm/chat.h"
#include "ailb/provider/adapter.h"
#include "ailb/upstream/http_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::provider {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

config::Deployment MakeDeployment(std::string api_key = "sk-secret") {
  config::Deployment d;
  d.id = "openai/gpt-4o-2024-08-06";
  d.model_name = "gpt-4o";
  d.provider = config::ProviderKind::kOpenAI;
  d.upstream_model = "gpt-4o-2024-08-06";
  d.api_base = "https://api.example.test/v1";
  d.api_key = std::move(api_key);
  return d;
}

llm::ChatRequest Parse(std::string_view body) {
  absl::StatusOr<llm::ChatRequest> request = llm::ParseChatRequest(body);
  EXPECT_TRUE(request.ok()) << request.status();
  return request.ok() ? *std::move(request) : llm::ChatRequest();
}

json BodyOf(const upstream::Request& request) {
  json body = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(body.is_discarded()) << request.body;
  return body;
}

// --- EncodeChat -------------------------------------------------------------------------------

TEST(OpenAIEncodeChatTest, SubstitutesModelAndKeepsEveryOtherField) {
  const OpenAIAdapter adapter;
  const json original = json::parse(R"({
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "response_format": {"type": "json_object"},
    "seed": 7, "logprobs": true, "top_logprobs": 2, "temperature": 0.25,
    "x_vendor": {"k": [1, 2, 3]},
    "session_id": "sess", "rag_top_k": 4
  })");
  absl::StatusOr<upstream::Request> encoded =
      adapter.EncodeChat(Parse(original.dump()), MakeDeployment());
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  json expected = original;
  expected["model"] = "gpt-4o-2024-08-06";
  expected.erase("session_id");
  expected.erase("rag_top_k");
  EXPECT_EQ(BodyOf(*encoded), expected) << encoded->body;
  EXPECT_FALSE(BodyOf(*encoded).contains("stream_options"));
}

TEST(OpenAIEncodeChatTest, UrlMethodAndHeaders) {
  const OpenAIAdapter adapter;
  absl::StatusOr<upstream::Request> encoded =
      adapter.EncodeChat(Parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})"),
                         MakeDeployment("sk-secret"));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->method, "POST");
  EXPECT_EQ(encoded->url, "https://api.example.test/v1/chat/completions");
  EXPECT_THAT(encoded->headers, UnorderedElementsAre(Pair("Content-Type", "application/json"),
                                                     Pair("Accept", "application/json"),
                                                     Pair("Authorization", "Bearer sk-secret")));
}

TEST(OpenAIEncodeChatTest, NoAuthorizationHeaderWithoutKey) {
  const OpenAIAdapter adapter;
  absl::StatusOr<upstream::Request> encoded =
      adapter.EncodeChat(Parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})"),
                         MakeDeployment(""));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(upstream::FindHeader(encoded->headers, "Authorization"), "");
  for (const auto& [name, value] : encoded->headers) {
    EXPECT_NE(absl::AsciiStrToLower(name), "authorization");
    EXPECT_NE(absl::AsciiStrToLower(name), "api-key");
  }
}

TEST(OpenAIEncodeChatTest, StreamAlwaysAsksForUsage) {
  const OpenAIAdapter adapter;
  for (const char* options :
       {"", R"(,"stream_options":{})", R"(,"stream_options":{"include_usage":false})",
        R"(,"stream_options":{"include_usage":true})"}) {
    const std::string body =
        std::string(
            R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"stream":true)") +
        options + "}";
    absl::StatusOr<upstream::Request> encoded = adapter.EncodeChat(Parse(body), MakeDeployment());
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    const json sent = BodyOf(*encoded);
    EXPECT_EQ(sent["stream"], true) << body;
    EXPECT_EQ(sent["stream_options"]["include_usage"], true) << body;
    EXPECT_EQ(upstream::FindHeader(encoded->headers, "Accept"), "text/event-stream");
  }
}

TEST(OpenAIEncodeChatTest, StreamOptionsKeepsOtherKeys) {
  const OpenAIAdapter adapter;
  absl::StatusOr<upstream::Request> encoded = adapter.EncodeChat(
      Parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"stream":true,)"
            R"("stream_options":{"include_usage":false,"vendor_flag":3}})"),
      MakeDeployment());
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(BodyOf(*encoded)["stream_options"],
            json({{"include_usage", true}, {"vendor_flag", 3}}));
}

TEST(OpenAIEncodeChatTest, DoesNotModifyTheRequest) {
  const OpenAIAdapter adapter;
  const llm::ChatRequest request =
      Parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"stream":true})");
  const json before = request.body;
  ASSERT_TRUE(adapter.EncodeChat(request, MakeDeployment()).ok());
  EXPECT_EQ(request.body, before);  // the same request may be encoded again for failover
}

TEST(OpenAIEncodeHealthProbeTest, ListsModels) {
  const OpenAIAdapter adapter;
  absl::StatusOr<upstream::Request> probe = adapter.EncodeHealthProbe(MakeDeployment("k"));
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->method, "GET");
  EXPECT_EQ(probe->url, "https://api.example.test/v1/models");
  EXPECT_EQ(upstream::FindHeader(probe->headers, "authorization"), "Bearer k");
  EXPECT_TRUE(probe->body.empty());
  probe = adapter.EncodeHealthProbe(MakeDeployment(""));
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(upstream::FindHeader(probe->headers, "Authorization"), "");
}

TEST(OpenAIAdapterTest, RegistryReturnsOpenAIAdapter) {
  absl::StatusOr<std::shared_ptr<const ProviderAdapter>> adapter =
      AdapterFor(config::ProviderKind::kOpenAI);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ((*adapter)->kind(), config::ProviderKind::kOpenAI);
  EXPECT_NE(dynamic_cast<const OpenAIAdapter*>(adapter->get()), nullptr);
}

// --- DecodeChat -------------------------------------------------------------------------------

constexpr std::string_view kCompletion = R"({
  "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
  "model": "gpt-4o-2024-08-06",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
               "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
  "system_fingerprint": "fp_1"
})";

TEST(OpenAIDecodeChatTest, ValidReplyPassesThrough) {
  const OpenAIAdapter adapter;
  absl::StatusOr<json> reply = adapter.DecodeChat(kCompletion);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, json::parse(kCompletion));
}

TEST(OpenAIDecodeChatTest, EmptyChoicesIsAccepted) {
  const OpenAIAdapter adapter;
  EXPECT_TRUE(adapter.DecodeChat(R"({"choices":[]})").ok());
}

void ExpectBadGateway(const absl::StatusOr<json>& reply, std::string_view what) {
  ASSERT_FALSE(reply.ok()) << what;
  EXPECT_EQ(HttpStatusOverride(reply.status()), 502) << what;
  EXPECT_EQ(ToHttpError(reply.status()).http_status, 502) << what;
  EXPECT_EQ(ErrorCodeOf(reply.status()), "bad_upstream_reply") << what;
}

TEST(OpenAIDecodeChatTest, MalformedRepliesAre502) {
  const OpenAIAdapter adapter;
  for (std::string_view body :
       {std::string_view(""), std::string_view("not json"), std::string_view("{\"choices\":["),
        std::string_view("[]"), std::string_view("\"text\""), std::string_view("null"),
        std::string_view("{\"choices\":[]} trailing")}) {
    ExpectBadGateway(adapter.DecodeChat(body), body);
  }
}

TEST(OpenAIDecodeChatTest, MissingOrNonArrayChoicesIs502) {
  const OpenAIAdapter adapter;
  for (std::string_view body :
       {std::string_view(R"({"id":"x","object":"chat.completion"})"),
        std::string_view(R"({"choices":null})"), std::string_view(R"({"choices":{"0":{}}})"),
        std::string_view(R"({"choices":"none"})")}) {
    ExpectBadGateway(adapter.DecodeChat(body), body);
  }
}

TEST(OpenAIDecodeChatTest, InvalidUtf8ReplyIs502NotAThrow) {
  const OpenAIAdapter adapter;
  const std::string body =
      std::string(R"({"choices":[{"message":{"content":")") + "\xff" + R"("}}]})";
  absl::StatusOr<json> reply;
  ASSERT_NO_THROW(reply = adapter.DecodeChat(body));
  ExpectBadGateway(reply, "invalid utf-8");
}

// --- Stream decoder ---------------------------------------------------------------------------

std::string Chunk(std::string_view content) {
  return json({{"id", "c1"},
               {"object", "chat.completion.chunk"},
               {"choices", json::array({{{"index", 0}, {"delta", {{"content", content}}}}})}})
      .dump();
}

std::string Sse(const std::vector<std::string>& datas) {
  std::string out;
  for (const std::string& data : datas) out += "data: " + data + "\n\n";
  return out;
}

struct StreamResult {
  std::vector<json> chunks;
  absl::Status feed;
  absl::Status finish;
};

StreamResult RunStream(std::string_view transcript, size_t piece = 0) {
  const OpenAIAdapter adapter;
  std::unique_ptr<StreamDecoder> decoder = adapter.NewStreamDecoder();
  StreamResult result;
  const size_t step = piece == 0 ? std::max<size_t>(transcript.size(), 1) : piece;
  for (size_t offset = 0; offset < transcript.size() && result.feed.ok(); offset += step) {
    result.feed = decoder->Feed(transcript.substr(offset, step), result.chunks);
  }
  if (result.feed.ok()) result.finish = decoder->Finish(result.chunks);
  return result;
}

TEST(OpenAIStreamDecoderTest, ChunksThenDone) {
  const std::string transcript = Sse({Chunk("Hel"), Chunk("lo"), "[DONE]"});
  StreamResult result = RunStream(transcript);
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  EXPECT_TRUE(result.finish.ok()) << result.finish;
  ASSERT_EQ(result.chunks.size(), 2u);
  EXPECT_EQ(result.chunks[0], json::parse(Chunk("Hel")));
  EXPECT_EQ(result.chunks[1], json::parse(Chunk("lo")));
}

TEST(OpenAIStreamDecoderTest, UsageChunkIsPassedThrough) {
  const std::string usage = R"({"id":"c1","object":"chat.completion.chunk","choices":[],)"
                            R"("usage":{"prompt_tokens":5,"completion_tokens":2}})";
  StreamResult result = RunStream(Sse({Chunk("a"), usage, "[DONE]"}));
  ASSERT_TRUE(result.feed.ok() && result.finish.ok());
  ASSERT_EQ(result.chunks.size(), 2u);
  EXPECT_EQ(result.chunks[1], json::parse(usage));
}

TEST(OpenAIStreamDecoderTest, EveryPieceSizeGivesTheSameChunks) {
  const std::string transcript =
      ": keep-alive\r\n\r\n" + Sse({Chunk("one"), Chunk("two"), Chunk("three"), "[DONE]"});
  const StreamResult whole = RunStream(transcript);
  ASSERT_TRUE(whole.feed.ok() && whole.finish.ok());
  ASSERT_EQ(whole.chunks.size(), 3u);
  for (size_t piece = 1; piece <= transcript.size(); ++piece) {
    const StreamResult split = RunStream(transcript, piece);
    EXPECT_TRUE(split.feed.ok()) << "piece " << piece << ": " << split.feed;
    EXPECT_TRUE(split.finish.ok()) << "piece " << piece << ": " << split.finish;
    EXPECT_EQ(split.chunks, whole.chunks) << "piece " << piece;
  }
}

TEST(OpenAIStreamDecoderTest, NothingAfterDoneIsDecoded) {
  StreamResult result = RunStream(Sse({Chunk("a"), "[DONE]", Chunk("late"), "not json at all"}));
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  EXPECT_TRUE(result.finish.ok()) << result.finish;
  ASSERT_EQ(result.chunks.size(), 1u);
}

TEST(OpenAIStreamDecoderTest, DoneWithoutTrailingBlankLineFinishesCleanly) {
  StreamResult result = RunStream(Sse({Chunk("a")}) + "data: [DONE]");
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  EXPECT_TRUE(result.finish.ok()) << result.finish;
  EXPECT_EQ(result.chunks.size(), 1u);
}

TEST(OpenAIStreamDecoderTest, ErrorEventIsAnError) {
  StreamResult result = RunStream(
      Sse({Chunk("a"), R"({"error":{"message":"The server is overloaded","type":"server_error"}})",
           "[DONE]"}));
  ASSERT_FALSE(result.feed.ok());
  EXPECT_EQ(result.feed.message(), "The server is overloaded");
  EXPECT_EQ(HttpStatusOverride(result.feed), 502);
  // The chunk before the error was still delivered.
  ASSERT_EQ(result.chunks.size(), 1u);
}

TEST(OpenAIStreamDecoderTest, ErrorEventWithoutMessageHasADefault) {
  StreamResult result = RunStream(Sse({R"({"error":"boom"})"}));
  ASSERT_FALSE(result.feed.ok());
  EXPECT_THAT(std::string(result.feed.message()), HasSubstr("error"));
  EXPECT_EQ(HttpStatusOverride(result.feed), 502);
}

TEST(OpenAIStreamDecoderTest, CutBeforeDoneFailsAtFinish) {
  StreamResult result = RunStream(Sse({Chunk("a"), Chunk("b")}));
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  ASSERT_FALSE(result.finish.ok());
  EXPECT_EQ(result.finish.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(result.chunks.size(), 2u);
}

TEST(OpenAIStreamDecoderTest, CutMidEventDeliversTheCompletePartAndFails) {
  // The last event's blank line never came, but its data line is complete JSON.
  StreamResult result = RunStream(Sse({Chunk("a")}) + "data: " + Chunk("b"));
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  EXPECT_FALSE(result.finish.ok());
  EXPECT_EQ(result.chunks.size(), 2u);
}

TEST(OpenAIStreamDecoderTest, CutInsideJsonIsAnError) {
  const std::string chunk = Chunk("abc");
  StreamResult result = RunStream("data: " + chunk.substr(0, chunk.size() / 2));
  EXPECT_TRUE(result.feed.ok());
  EXPECT_FALSE(result.finish.ok());
  EXPECT_TRUE(result.chunks.empty());
}

TEST(OpenAIStreamDecoderTest, EmptyStreamFailsAtFinish) {
  StreamResult result = RunStream("");
  EXPECT_TRUE(result.feed.ok());
  EXPECT_FALSE(result.finish.ok());
  EXPECT_TRUE(result.chunks.empty());
}

TEST(OpenAIStreamDecoderTest, InvalidJsonEventIsAnError) {
  for (std::string_view data :
       {std::string_view("{not json"), std::string_view("5"), std::string_view("[1]"),
        std::string_view("\"s\""), std::string_view("")}) {
    StreamResult result = RunStream(Sse({Chunk("a"), std::string(data), "[DONE]"}));
    ASSERT_FALSE(result.feed.ok()) << data;
    EXPECT_EQ(HttpStatusOverride(result.feed), 502) << data;
    EXPECT_EQ(result.chunks.size(), 1u) << data;
  }
}

TEST(OpenAIStreamDecoderTest, CommentsAndNamedEventsAreTolerated) {
  StreamResult result = RunStream(": OPENROUTER PROCESSING\n\n" + Sse({Chunk("a")}) + ": ping\n\n" +
                                  "data: [DONE]\n\n");
  EXPECT_TRUE(result.feed.ok()) << result.feed;
  EXPECT_TRUE(result.finish.ok()) << result.finish;
  EXPECT_EQ(result.chunks.size(), 1u);
}

// --- DecodeError ------------------------------------------------------------------------------

TEST(OpenAIDecodeErrorTest, BadRequestCarriesMessageCodeAndParam) {
  const OpenAIAdapter adapter;
  const absl::Status status = adapter.DecodeError(
      400, {},
      R"({"error":{"message":"Invalid 'messages': empty.","type":"invalid_request_error",)"
      R"("param":"messages","code":"invalid_value"}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "Invalid 'messages': empty.");
  EXPECT_EQ(HttpStatusOverride(status), 400);
  EXPECT_EQ(ErrorCodeOf(status), "invalid_value");
  EXPECT_EQ(ErrorParamOf(status), "messages");
  EXPECT_EQ(RetryAfterOf(status), std::nullopt);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.type, "invalid_request_error");
}

TEST(OpenAIDecodeErrorTest, Unauthorized) {
  const OpenAIAdapter adapter;
  const absl::Status status = adapter.DecodeError(
      401, {}, R"({"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(status.message(), "Incorrect API key provided");
  EXPECT_EQ(HttpStatusOverride(status), 401);
  EXPECT_EQ(ErrorCodeOf(status), "invalid_api_key");
}

TEST(OpenAIDecodeErrorTest, RateLimitWithRetryAfter) {
  const OpenAIAdapter adapter;
  const absl::Status status = adapter.DecodeError(
      429, {{"Content-Type", "application/json"}, {"retry-after", "17"}},
      R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "Rate limit reached");
  EXPECT_EQ(HttpStatusOverride(status), 429);
  EXPECT_EQ(ErrorCodeOf(status), "rate_limit_exceeded");
  EXPECT_EQ(RetryAfterOf(status), 17);
  EXPECT_EQ(ToHttpError(status).retry_after_seconds, 17);
}

TEST(OpenAIDecodeErrorTest, UnusableRetryAfterIsIgnored) {
  const OpenAIAdapter adapter;
  for (const char* value : {"Wed, 21 Oct 2015 07:28:00 GMT", "-5", "", "soon", "99999999999"}) {
    const absl::Status status = adapter.DecodeError(429, {{"Retry-After", value}}, "{}");
    EXPECT_EQ(RetryAfterOf(status), std::nullopt) << value;
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  }
}

TEST(OpenAIDecodeErrorTest, ServerError) {
  const OpenAIAdapter adapter;
  const absl::Status status = adapter.DecodeError(
      500, {},
      R"({"error":{"message":"The server had an error","type":"server_error","code":null}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "The server had an error");
  EXPECT_EQ(HttpStatusOverride(status), 500);
  EXPECT_EQ(ErrorCodeOf(status), "");
  EXPECT_EQ(ErrorParamOf(status), "");
}

TEST(OpenAIDecodeErrorTest, NonJsonBodyGetsAGenericMessage) {
  const OpenAIAdapter adapter;
  const absl::Status status =
      adapter.DecodeError(502, {{"Content-Type", "text/html"}}, "<html>Bad Gateway</html>");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(HttpStatusOverride(status), 502);
  EXPECT_THAT(std::string(status.message()), HasSubstr("502"));
  EXPECT_EQ(ErrorCodeOf(status), "");
}

TEST(OpenAIDecodeErrorTest, EmptyBody) {
  const OpenAIAdapter adapter;
  const absl::Status status = adapter.DecodeError(503, {}, "");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(HttpStatusOverride(status), 503);
  EXPECT_THAT(std::string(status.message()), HasSubstr("503"));
}

TEST(OpenAIDecodeErrorTest, OtherErrorShapes) {
  const OpenAIAdapter adapter;
  // A bare string under "error" (some compatible servers).
  absl::Status status = adapter.DecodeError(404, {}, R"({"error":"model not found"})");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "model not found");
  // A flat object with the message at the top level.
  status = adapter.DecodeError(422, {}, R"({"message":"unprocessable","code":"bad"})");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "unprocessable");
  EXPECT_EQ(ErrorCodeOf(status), "bad");
  EXPECT_EQ(HttpStatusOverride(status), 422);
  // Non-string fields are ignored rather than thrown on.
  status = adapter.DecodeError(400, {}, R"({"error":{"message":5,"code":429,"param":[]}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("400"));
  EXPECT_EQ(ErrorCodeOf(status), "");
  EXPECT_EQ(ErrorParamOf(status), "");
}

TEST(OpenAIDecodeErrorTest, NeverThrowsOnHostileBodies) {
  const OpenAIAdapter adapter;
  for (std::string_view body :
       {std::string_view("[]"), std::string_view("null"), std::string_view("{\"error\":null}"),
        std::string_view("{\"error\":[1]}"), std::string_view("\xff\xfe"),
        std::string_view("{\"error\":{\"message\":{\"nested\":true}}}")}) {
    absl::Status status;
    ASSERT_NO_THROW(status = adapter.DecodeError(500, {}, body)) << body;
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << body;
    EXPECT_FALSE(status.message().empty()) << body;
  }
}

}  // namespace
}  // namespace ailb::provider
