#include "ailb/common/status.h"

#include <charconv>
#include <string>
#include <string_view>

#include "absl/strings/cord.h"
#include "ailb/common/strings.h"
#include "nlohmann/json.hpp"

namespace ailb {
namespace {

absl::Status WithPayload(absl::Status status, const char* key, std::string_view value) {
  if (!status.ok())
    status.SetPayload(key, absl::Cord(absl::string_view(value.data(), value.size())));
  return status;
}

std::string PayloadOf(const absl::Status& status, const char* key) {
  absl::optional<absl::Cord> payload = status.GetPayload(key);
  return payload ? std::string(*payload) : std::string();
}

std::optional<int> IntPayloadOf(const absl::Status& status, const char* key) {
  std::string text = PayloadOf(status, key);
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

int DefaultHttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string TypeForHttpStatus(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 502:
      return "upstream_error";
    case 503:
      return "service_unavailable";
    case 504:
      return "timeout_error";
    default:
      return http_status < 500 ? "invalid_request_error" : "server_error";
  }
}

// Messages and params may quote client input (a role, a field name, a mode): bounded, so that a
// request cannot make its error reply or log line as large as its body.
constexpr size_t kMaxErrorMessageBytes = 2048;
constexpr size_t kMaxErrorParamBytes = 256;

std::string Clip(std::string_view text, size_t limit) {
  if (text.size() <= limit) return std::string(text);
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  return std::string(text.substr(0, cut)) + "...";
}

}  // namespace

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  return WithPayload(std::move(status), kHttpStatusPayload, std::to_string(http_status));
}
absl::Status WithErrorCode(absl::Status status, std::string_view code) {
  return WithPayload(std::move(status), kErrorCodePayload, code);
}
absl::Status WithErrorParam(absl::Status status, std::string_view param) {
  return WithPayload(std::move(status), kErrorParamPayload, param);
}
absl::Status WithRetryAfter(absl::Status status, int seconds) {
  return WithPayload(std::move(status), kRetryAfterPayload, std::to_string(seconds));
}
absl::Status WithAllow(absl::Status status, std::string_view methods) {
  return WithPayload(std::move(status), kAllowPayload, methods);
}

std::optional<int> HttpStatusOverride(const absl::Status& status) {
  return IntPayloadOf(status, kHttpStatusPayload);
}
std::string ErrorCodeOf(const absl::Status& status) { return PayloadOf(status, kErrorCodePayload); }
std::string ErrorParamOf(const absl::Status& status) {
  return PayloadOf(status, kErrorParamPayload);
}
std::optional<int> RetryAfterOf(const absl::Status& status) {
  return IntPayloadOf(status, kRetryAfterPayload);
}
std::string AllowOf(const absl::Status& status) { return PayloadOf(status, kAllowPayload); }

absl::Status PayloadTooLargeError(std::string_view message) {
  return WithErrorCode(WithHttpStatus(absl::ResourceExhaustedError(ToAbsl(message)), 413),
                       "request_too_large");
}
absl::Status UnsupportedMediaTypeError(std::string_view message) {
  return WithErrorCode(WithHttpStatus(absl::InvalidArgumentError(ToAbsl(message)), 415),
                       "unsupported_media_type");
}
absl::Status MethodNotAllowedError(std::string_view message, std::string_view allow) {
  absl::Status status = WithErrorCode(
      WithHttpStatus(absl::UnimplementedError(ToAbsl(message)), 405), "method_not_allowed");
  return allow.empty() ? status : WithAllow(std::move(status), allow);
}
absl::Status BadGatewayError(std::string_view message) {
  return WithErrorCode(WithHttpStatus(absl::UnavailableError(ToAbsl(message)), 502),
                       "bad_upstream_reply");
}
absl::Status InvalidFieldError(std::string_view param, std::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(ToAbsl(message)), param);
}

HttpError ToHttpError(const absl::Status& status) {
  HttpError error;
  error.http_status = HttpStatusOverride(status).value_or(DefaultHttpStatus(status.code()));
  error.type = TypeForHttpStatus(error.http_status);
  error.code = ErrorCodeOf(status);
  error.param = Clip(ErrorParamOf(status), kMaxErrorParamBytes);
  error.message = Clip(ToStd(status.message()), kMaxErrorMessageBytes);
  if (error.message.empty()) error.message = absl::StatusCodeToString(status.code());
  error.retry_after_seconds = RetryAfterOf(status);
  error.allow = AllowOf(status);
  return error;
}

std::string OpenAIErrorBody(const HttpError& error) {
  nlohmann::json body = {
      {"error",
       {{"message", error.message}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}}}};
  if (!error.param.empty()) body["error"]["param"] = error.param;
  if (!error.code.empty()) body["error"]["code"] = error.code;
  // Replace invalid UTF-8 rather than throw: messages may quote client input.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusCode StatusCodeForHttp(int http_status) {
  if (http_status >= 200 && http_status < 300) return absl::StatusCode::kOk;
  switch (http_status) {
    case 400:
    case 413:
    case 415:
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    case 409:
      return absl::StatusCode::kAborted;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 501:
      return absl::StatusCode::kUnimplemented;
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return http_status >= 500 ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kInvalidArgument;
  }
}

}  // namespace ailb
