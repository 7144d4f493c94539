#include "server/control/status_mapping.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "server/control/convert.h"

namespace ailb::server::control_rpc {
namespace {

using ::google::protobuf::internal::WireFormatLite;

// google.rpc.Status {int32 code = 1; string message = 2; repeated google.protobuf.Any details =
// 3;} written field by field: Debian ships no google/rpc/status.proto, and three fields do not
// justify vendoring one.
std::string EncodeRpcStatus(int code, const std::string& message, const marchproxy::Error& error) {
  google::protobuf::Any any;
  any.PackFrom(error);
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    WireFormatLite::WriteInt32(1, code, &coded);
    WireFormatLite::WriteString(2, message, &coded);
    WireFormatLite::WriteBytes(3, any.SerializeAsString(), &coded);
  }
  return out;
}

}  // namespace

marchproxy::StatusCode ToErrorCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return marchproxy::STATUS_CODE_OK;
    case absl::StatusCode::kNotFound:
      return marchproxy::STATUS_CODE_NOT_FOUND;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return marchproxy::STATUS_CODE_UNAVAILABLE;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return marchproxy::STATUS_CODE_INVALID_ARGUMENT;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return marchproxy::STATUS_CODE_PERMISSION_DENIED;
    case absl::StatusCode::kAlreadyExists:
      return marchproxy::STATUS_CODE_ALREADY_EXISTS;
    case absl::StatusCode::kResourceExhausted:
      return marchproxy::STATUS_CODE_RESOURCE_EXHAUSTED;
    default:
      // FailedPrecondition, Aborted, Internal ...: the contract has no finer code; the exact
      // one travels in details["grpc_code"] and in the gRPC status itself.
      return marchproxy::STATUS_CODE_ERROR;
  }
}

void FillError(const absl::Status& status, WallTime occurred_at, marchproxy::Error* error) {
  error->set_code(ToErrorCode(status.code()));
  error->set_message(std::string(status.message()));
  (*error->mutable_details())["grpc_code"] = absl::StatusCodeToString(status.code());
  if (std::optional<int> retry_after = RetryAfterOf(status)) {
    (*error->mutable_details())["retry_after_seconds"] = absl::StrCat(*retry_after);
  }
  SetTimestamp(occurred_at, error->mutable_occurred_at());
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC both use the canonical codes with the same numbers (0..16).
  const int code = static_cast<int>(status.code());
  const grpc::StatusCode grpc_code = code > 0 && code <= grpc::StatusCode::UNAUTHENTICATED
                                         ? static_cast<grpc::StatusCode>(code)
                                         : grpc::StatusCode::UNKNOWN;
  marchproxy::Error error;
  FillError(status, SystemClock::Instance().WallNow(), &error);
  std::string message(status.message());
  std::string details = EncodeRpcStatus(static_cast<int>(grpc_code), message, error);
  return grpc::Status(grpc_code, std::move(message), std::move(details));
}

grpc::Status GrpcError(absl::StatusCode code, std::string message) {
  return ToGrpcStatus(absl::Status(code, message));
}

}  // namespace ailb::server::control_rpc
