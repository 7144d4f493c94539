// The one mapping from absl::Status to what a control-plane client sees: a grpc::Status with the
// same canonical code, and a marchproxy.Error for the response bodies and status details.
#pragma once

#include "absl/status/status.h"
#include "ailb/common/clock.h"
#include "grpcpp/support/status.h"
#include "marchproxy/types.pb.h"

namespace ailb::server::control_rpc {

// The contract's coarse StatusCode for a canonical code.
marchproxy::StatusCode ToErrorCode(absl::StatusCode code);

// Fills `error` {code, message, details{grpc_code[, retry_after_seconds]}, occurred_at}.
void FillError(const absl::Status& status, WallTime occurred_at, marchproxy::Error* error);

// The gRPC status for `status` (OK stays OK). A failure also carries its marchproxy.Error, packed
// in a google.rpc.Status in the `grpc-status-details-bin` trailer: a non-OK status drops the
// response body, so this is how the Error still reaches clients that look for it.
grpc::Status ToGrpcStatus(const absl::Status& status);

// A failure with a canonical code, for checks made in the adapter itself.
grpc::Status GrpcError(absl::StatusCode code, std::string message);

}  // namespace ailb::server::control_rpc
