// The status helpers: payload details, the one status -> HTTP/OpenAI error mapping, the error
// body shape, the HTTP -> canonical code mapping and the status macros.
#include "ailb/common/status.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "ailb/common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// --- ToHttpError: canonical codes -------------------------------------------------------------

struct CanonicalCase {
  absl::StatusCode code;
  int http_status;
  const char* type;
};

class ToHttpErrorCanonicalTest : public ::testing::TestWithParam<CanonicalCase> {};

TEST_P(ToHttpErrorCanonicalTest, MapsCodeToStatusAndType) {
  const CanonicalCase& c = GetParam();
  const absl::Status status(c.code, "something happened");
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, c.http_status) << absl::StatusCodeToString(c.code);
  EXPECT_EQ(error.type, c.type) << absl::StatusCodeToString(c.code);
  EXPECT_EQ(error.message, "something happened");
  EXPECT_EQ(error.code, "");
  EXPECT_EQ(error.param, "");
  EXPECT_EQ(error.retry_after_seconds, std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(
    AllCodes, ToHttpErrorCanonicalTest,
    ::testing::Values(
        CanonicalCase{absl::StatusCode::kInvalidArgument, 400, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kFailedPrecondition, 400, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kOutOfRange, 400, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kUnauthenticated, 401, "authentication_error"},
        CanonicalCase{absl::StatusCode::kPermissionDenied, 403, "permission_error"},
        CanonicalCase{absl::StatusCode::kNotFound, 404, "not_found_error"},
        CanonicalCase{absl::StatusCode::kAlreadyExists, 409, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kAborted, 409, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kResourceExhausted, 429, "rate_limit_error"},
        CanonicalCase{absl::StatusCode::kCancelled, 499, "invalid_request_error"},
        CanonicalCase{absl::StatusCode::kUnknown, 500, "server_error"},
        CanonicalCase{absl::StatusCode::kInternal, 500, "server_error"},
        CanonicalCase{absl::StatusCode::kDataLoss, 500, "server_error"},
        CanonicalCase{absl::StatusCode::kUnimplemented, 501, "server_error"},
        CanonicalCase{absl::StatusCode::kUnavailable, 503, "service_unavailable"},
        CanonicalCase{absl::StatusCode::kDeadlineExceeded, 504, "timeout_error"}),
    [](const ::testing::TestParamInfo<CanonicalCase>& info) {
      return absl::StatusCodeToString(info.param.code);
    });

TEST(ToHttpErrorTest, EmptyMessageFallsBackToCodeName) {
  const HttpError error = ToHttpError(absl::NotFoundError(""));
  EXPECT_EQ(error.message, "NOT_FOUND");
  EXPECT_EQ(error.http_status, 404);
}

// --- ToHttpError: payload overrides -----------------------------------------------------------

TEST(ToHttpErrorTest, PayloadTooLargeIs413) {
  const absl::Status status = PayloadTooLargeError("body too big");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 413);
  EXPECT_EQ(error.type, "invalid_request_error");
  EXPECT_EQ(error.code, "request_too_large");
  EXPECT_EQ(error.message, "body too big");
}

TEST(ToHttpErrorTest, UnsupportedMediaTypeIs415) {
  const absl::Status status = UnsupportedMediaTypeError("send JSON");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 415);
  EXPECT_EQ(error.type, "invalid_request_error");
  EXPECT_EQ(error.code, "unsupported_media_type");
  EXPECT_EQ(error.message, "send JSON");
}

TEST(ToHttpErrorTest, MethodNotAllowedIs405) {
  const absl::Status status = MethodNotAllowedError("use POST");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 405);
  EXPECT_EQ(error.type, "invalid_request_error");
  EXPECT_EQ(error.code, "method_not_allowed");
}

TEST(ToHttpErrorTest, BadGatewayIs502) {
  const absl::Status status = BadGatewayError("garbage from upstream");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(HttpStatusOverride(status), 502);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 502);
  EXPECT_EQ(error.type, "upstream_error");
  EXPECT_EQ(error.code, "bad_upstream_reply");
  EXPECT_EQ(error.message, "garbage from upstream");
}

TEST(ToHttpErrorTest, ExplicitHttpStatusOverridesCanonicalCode) {
  // An Internal error carrying 429 is reported as a rate limit, type included.
  const HttpError error = ToHttpError(WithHttpStatus(absl::InternalError("slow down"), 429));
  EXPECT_EQ(error.http_status, 429);
  EXPECT_EQ(error.type, "rate_limit_error");
}

TEST(ToHttpErrorTest, UnparsableHttpPayloadIsIgnored) {
  absl::Status status = absl::NotFoundError("x");
  status.SetPayload(kHttpStatusPayload, absl::Cord("4o4"));
  EXPECT_EQ(HttpStatusOverride(status), std::nullopt);
  EXPECT_EQ(ToHttpError(status).http_status, 404);
  status.SetPayload(kHttpStatusPayload, absl::Cord(""));
  EXPECT_EQ(HttpStatusOverride(status), std::nullopt);
  status.SetPayload(kHttpStatusPayload, absl::Cord("502 "));
  EXPECT_EQ(HttpStatusOverride(status), std::nullopt);
}

TEST(ToHttpErrorTest, InvalidFieldErrorCarriesParam) {
  const absl::Status status = InvalidFieldError("messages[0].role", "bad role");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorParamOf(status), "messages[0].role");
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.param, "messages[0].role");
  EXPECT_EQ(error.code, "");
  EXPECT_EQ(error.message, "bad role");
}

TEST(ToHttpErrorTest, LongMessagesAndParamsAreClippedAtACharacterBoundary) {
  std::string quoted;  // client input quoted into an error: 200,000 bytes of 'é'
  for (int i = 0; i < 100'000; ++i) quoted += "\xc3\xa9";
  const HttpError error = ToHttpError(InvalidFieldError(quoted, "bad role '" + quoted + "'"));
  EXPECT_LE(error.message.size(), 2048u + 3);
  EXPECT_GE(error.message.size(), 2000u);
  EXPECT_EQ(error.message.substr(error.message.size() - 3), "...");
  EXPECT_LE(error.param.size(), 256u + 3);
  EXPECT_TRUE(IsValidUtf8(error.message));
  EXPECT_TRUE(IsValidUtf8(error.param));
  // At the limit nothing is cut.
  EXPECT_EQ(ToHttpError(InvalidFieldError("p", std::string(2048, 'm'))).message,
            std::string(2048, 'm'));
}

// --- Payload helpers --------------------------------------------------------------------------

TEST(StatusPayloadTest, RetryAfterRoundTrips) {
  const absl::Status status = WithRetryAfter(absl::ResourceExhaustedError("busy"), 42);
  EXPECT_EQ(RetryAfterOf(status), 42);
  const HttpError error = ToHttpError(status);
  EXPECT_EQ(error.http_status, 429);
  EXPECT_EQ(error.retry_after_seconds, 42);
}

TEST(StatusPayloadTest, RetryAfterZeroIsKept) {
  EXPECT_EQ(RetryAfterOf(WithRetryAfter(absl::UnavailableError("x"), 0)), 0);
}

TEST(StatusPayloadTest, AbsentDetailsReadAsEmpty) {
  const absl::Status status = absl::InternalError("x");
  EXPECT_EQ(RetryAfterOf(status), std::nullopt);
  EXPECT_EQ(HttpStatusOverride(status), std::nullopt);
  EXPECT_EQ(ErrorCodeOf(status), "");
  EXPECT_EQ(ErrorParamOf(status), "");
}

TEST(StatusPayloadTest, HelpersAreNoOpsOnOk) {
  absl::Status ok = absl::OkStatus();
  ok = WithHttpStatus(ok, 502);
  ok = WithErrorCode(ok, "code");
  ok = WithErrorParam(ok, "param");
  ok = WithRetryAfter(ok, 5);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(HttpStatusOverride(ok), std::nullopt);
  EXPECT_EQ(ErrorCodeOf(ok), "");
  EXPECT_EQ(ErrorParamOf(ok), "");
  EXPECT_EQ(RetryAfterOf(ok), std::nullopt);
}

TEST(StatusPayloadTest, DetailsSurviveTogether) {
  absl::Status status = absl::InvalidArgumentError("bad");
  status = WithErrorCode(status, "the_code");
  status = WithErrorParam(status, "the_param");
  status = WithHttpStatus(status, 422);
  status = WithRetryAfter(status, 7);
  EXPECT_EQ(ErrorCodeOf(status), "the_code");
  EXPECT_EQ(ErrorParamOf(status), "the_param");
  EXPECT_EQ(HttpStatusOverride(status), 422);
  EXPECT_EQ(RetryAfterOf(status), 7);
  EXPECT_EQ(status.message(), "bad");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(StatusPayloadTest, LaterValueReplacesEarlier) {
  const absl::Status status = WithErrorCode(WithErrorCode(absl::InternalError("x"), "a"), "b");
  EXPECT_EQ(ErrorCodeOf(status), "b");
}

// --- OpenAIErrorBody --------------------------------------------------------------------------

std::vector<std::string> KeysOf(const json& object) {
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys;
}

TEST(OpenAIErrorBodyTest, HasExactlyTheOpenAIShapeWithNulls) {
  const std::string text = OpenAIErrorBody(ToHttpError(absl::NotFoundError("no such thing")));
  const json body = json::parse(text);
  ASSERT_TRUE(body.is_object());
  EXPECT_THAT(KeysOf(body), ElementsAre("error"));
  const json& error = body["error"];
  ASSERT_TRUE(error.is_object());
  // nlohmann's object is ordered by key.
  EXPECT_THAT(KeysOf(error), ElementsAre("code", "message", "param", "type"));
  EXPECT_EQ(error["message"], "no such thing");
  EXPECT_EQ(error["type"], "not_found_error");
  EXPECT_TRUE(error["param"].is_null());
  EXPECT_TRUE(error["code"].is_null());
}

TEST(OpenAIErrorBodyTest, FillsParamAndCodeWhenPresent) {
  const absl::Status status =
      WithErrorCode(InvalidFieldError("temperature", "too hot"), "invalid_value");
  const json body = json::parse(OpenAIErrorBody(ToHttpError(status)));
  EXPECT_THAT(KeysOf(body["error"]), ElementsAre("code", "message", "param", "type"));
  EXPECT_EQ(body["error"]["param"], "temperature");
  EXPECT_EQ(body["error"]["code"], "invalid_value");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["message"], "too hot");
}

TEST(OpenAIErrorBodyTest, RetryAfterIsNotPartOfTheBody) {
  const json body =
      json::parse(OpenAIErrorBody(ToHttpError(WithRetryAfter(absl::UnavailableError("x"), 3))));
  EXPECT_THAT(KeysOf(body["error"]), ElementsAre("code", "message", "param", "type"));
}

TEST(OpenAIErrorBodyTest, InvalidUtf8InMessageDoesNotThrow) {
  HttpError error = ToHttpError(absl::InvalidArgumentError(std::string("bad \xff\xfe byte \xc3")));
  std::string text;
  ASSERT_NO_THROW(text = OpenAIErrorBody(error));
  json body;
  ASSERT_NO_THROW(body = json::parse(text));  // the output is valid UTF-8 JSON
  const std::string message = body["error"]["message"];
  EXPECT_THAT(message, HasSubstr("bad "));
  EXPECT_THAT(message, HasSubstr(" byte "));
  EXPECT_THAT(message, HasSubstr("\xEF\xBF\xBD"));  // U+FFFD replacement character
}

TEST(OpenAIErrorBodyTest, InvalidUtf8InParamAndCodeDoesNotThrow) {
  HttpError error;
  error.http_status = 400;
  error.type = "invalid_request_error";
  error.message = "m";
  error.param = "\x80";
  error.code = "\xfe";
  std::string text;
  ASSERT_NO_THROW(text = OpenAIErrorBody(error));
  EXPECT_NO_THROW(json::parse(text));
}

TEST(OpenAIErrorBodyTest, EscapesQuotesAndControlCharacters) {
  const std::string text =
      OpenAIErrorBody(ToHttpError(absl::InvalidArgumentError("say \"hi\"\n\t\\")));
  const json body = json::parse(text);
  EXPECT_EQ(body["error"]["message"], "say \"hi\"\n\t\\");
  EXPECT_EQ(text.find('\n'), std::string::npos);  // one line, as an SSE data field needs
}

// --- StatusCodeForHttp ------------------------------------------------------------------------

TEST(StatusCodeForHttpTest, MapsEveryClass) {
  const std::vector<std::pair<int, absl::StatusCode>> cases = {
      {200, absl::StatusCode::kOk},
      {201, absl::StatusCode::kOk},
      {204, absl::StatusCode::kOk},
      {299, absl::StatusCode::kOk},
      {400, absl::StatusCode::kInvalidArgument},
      {413, absl::StatusCode::kInvalidArgument},
      {415, absl::StatusCode::kInvalidArgument},
      {422, absl::StatusCode::kInvalidArgument},
      {401, absl::StatusCode::kUnauthenticated},
      {403, absl::StatusCode::kPermissionDenied},
      {404, absl::StatusCode::kNotFound},
      {408, absl::StatusCode::kDeadlineExceeded},
      {504, absl::StatusCode::kDeadlineExceeded},
      {409, absl::StatusCode::kAborted},
      {429, absl::StatusCode::kResourceExhausted},
      {501, absl::StatusCode::kUnimplemented},
      {503, absl::StatusCode::kUnavailable},
      {500, absl::StatusCode::kUnavailable},
      {502, absl::StatusCode::kUnavailable},
      {529, absl::StatusCode::kUnavailable},
      {418, absl::StatusCode::kInvalidArgument},
      {451, absl::StatusCode::kInvalidArgument},
      {302, absl::StatusCode::kInvalidArgument},
      {100, absl::StatusCode::kInvalidArgument},
  };
  for (const auto& [http, code] : cases) {
    EXPECT_EQ(StatusCodeForHttp(http), code) << "HTTP " << http;
  }
}

TEST(StatusCodeForHttpTest, RoundTripsThroughToHttpErrorForDirectMappings) {
  // For statuses with a one-to-one canonical code, HTTP -> code -> HTTP is the identity.
  for (int http : {400, 401, 403, 404, 409, 429, 501, 503, 504}) {
    const absl::Status status(StatusCodeForHttp(http), "x");
    EXPECT_EQ(ToHttpError(status).http_status, http) << "HTTP " << http;
  }
}

// --- Macros -----------------------------------------------------------------------------------

absl::Status PassThrough(absl::Status inner, bool* reached_end) {
  AILB_RETURN_IF_ERROR(inner);
  *reached_end = true;
  return absl::OkStatus();
}

absl::StatusOr<int> Doubled(absl::StatusOr<int> inner) {
  AILB_ASSIGN_OR_RETURN(int value, inner);
  return value * 2;
}

absl::StatusOr<int> TwoInOneScope(absl::StatusOr<int> a, absl::StatusOr<int> b) {
  AILB_ASSIGN_OR_RETURN(int x, a);
  AILB_ASSIGN_OR_RETURN(int y, b);
  return x + y;
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsTheErrorWithPayloads) {
  bool reached = false;
  const absl::Status error = WithErrorCode(absl::NotFoundError("gone"), "c");
  const absl::Status result = PassThrough(error, &reached);
  EXPECT_FALSE(reached);
  EXPECT_EQ(result, error);
  EXPECT_EQ(ErrorCodeOf(result), "c");
  EXPECT_TRUE(PassThrough(absl::OkStatus(), &reached).ok());
  EXPECT_TRUE(reached);
}

TEST(StatusMacrosTest, AssignOrReturn) {
  EXPECT_EQ(Doubled(21).value(), 42);
  EXPECT_EQ(Doubled(absl::UnavailableError("u")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(TwoInOneScope(1, 2).value(), 3);
  EXPECT_EQ(TwoInOneScope(1, absl::InternalError("i")).status().code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace ailb
