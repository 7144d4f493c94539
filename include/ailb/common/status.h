// Status helpers shared by every component.
//
// Debian's Abseil (20220623) has no status macros, so ailb carries its own. Errors that need an
// HTTP status outside the canonical mapping (413, 415, 405, 502) carry it as a payload, so one
// function (ToHttpError) can map every status to the OpenAI error shape.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define AILB_STATUS_CONCAT_INNER_(a, b) a##b
#define AILB_STATUS_CONCAT_(a, b) AILB_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK absl::Status.
#define AILB_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status ailb_status_ = (expr);        \
    if (!ailb_status_.ok()) return ailb_status_; \
  } while (0)

// `lhs` = value of the absl::StatusOr `rexpr`, or return its status.
#define AILB_ASSIGN_OR_RETURN(lhs, rexpr) \
  AILB_ASSIGN_OR_RETURN_IMPL_(AILB_STATUS_CONCAT_(ailb_statusor_, __LINE__), lhs, rexpr)
#define AILB_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

namespace ailb {

// Payload keys. Values are plain text.
inline constexpr char kHttpStatusPayload[] = "ailb.http_status";
inline constexpr char kErrorCodePayload[] = "ailb.error_code";
inline constexpr char kErrorParamPayload[] = "ailb.error_param";
inline constexpr char kRetryAfterPayload[] = "ailb.retry_after_seconds";
// The methods a resource supports, for the Allow header of a 405 (RFC 9110 §15.5.6).
inline constexpr char kAllowPayload[] = "ailb.allow";

// Attach details to a status (no-ops on OK).
absl::Status WithHttpStatus(absl::Status status, int http_status);
absl::Status WithErrorCode(absl::Status status, std::string_view code);
absl::Status WithErrorParam(absl::Status status, std::string_view param);
absl::Status WithRetryAfter(absl::Status status, int seconds);
absl::Status WithAllow(absl::Status status, std::string_view methods);  // e.g. "GET, POST"

// Read details back; empty/nullopt when absent.
std::optional<int> HttpStatusOverride(const absl::Status& status);
std::string ErrorCodeOf(const absl::Status& status);
std::string ErrorParamOf(const absl::Status& status);
std::optional<int> RetryAfterOf(const absl::Status& status);
std::string AllowOf(const absl::Status& status);

// Shorthands for the HTTP statuses that have no canonical code of their own.
absl::Status PayloadTooLargeError(std::string_view message);       // 413
absl::Status UnsupportedMediaTypeError(std::string_view message);  // 415
// 405; `allow` (e.g. "GET, POST"), when given, becomes the reply's Allow header.
absl::Status MethodNotAllowedError(std::string_view message, std::string_view allow = {});
absl::Status BadGatewayError(std::string_view message);  // 502
// InvalidArgument naming the offending request field (OpenAI's `param`).
absl::Status InvalidFieldError(std::string_view param, std::string_view message);

// The one mapping from a status to what an HTTP client sees.
struct HttpError {
  int http_status = 500;
  std::string type;   // OpenAI error type, e.g. "invalid_request_error"
  std::string code;   // machine-readable code; may be empty (serialised as null)
  std::string param;  // offending field; may be empty (serialised as null)
  std::string message;
  std::optional<int> retry_after_seconds;
  std::string allow;  // Allow header value (405); empty when none
};
HttpError ToHttpError(const absl::Status& status);

// `{"error":{"message","type","param","code"}}` for `status`.
std::string OpenAIErrorBody(const HttpError& error);

// Maps an HTTP status seen from an upstream (or produced by us) to a canonical code.
absl::StatusCode StatusCodeForHttp(int http_status);

}  // namespace ailb
