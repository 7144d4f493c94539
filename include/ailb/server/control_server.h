// The control plane's gRPC server: marchproxy.ModuleService (the MarchProxy module contract, see
// docs/control-plane.md), grpc.health.v1.Health and server reflection. A thin adapter over
// control::ModuleCore; gRPC and generated headers stay in src/server/control so that including
// this header costs nothing.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ailb::control {
class ModuleCore;
}  // namespace ailb::control

namespace ailb::server {

struct ControlServerOptions {
  std::string host = "0.0.0.0";
  int port = 50051;  // 0 picks a free port
  // AILB_CONTROL_TOKEN. When set, every ModuleService call must carry the metadata
  // `authorization: Bearer <token>` (else UNAUTHENTICATED); health and reflection stay open so
  // that probes and grpcurl's discovery work without it. Empty = no authentication.
  std::string auth_token;
  int max_message_bytes = 16 << 20;  // both directions; the NLB sends up to 16 MiB
};

// Thread-safe. Serves on gRPC's own threads until Shutdown (or destruction).
class ControlServer {
 public:
  // Binds and starts serving. `core` must outlive the server. Unavailable when the address
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(const ControlServerOptions& options,
                                                              control::ModuleCore& core);
  virtual ~ControlServer();

  // The bound port (the chosen one when options.port was 0).
  virtual int port() const = 0;
  // The grpc.health.v1 status of "" and "marchproxy.ModuleService". Starts SERVING; set it to
  // false while draining so that the NLB stops sending work before the listener goes away.
  virtual void SetServing(bool serving) = 0;
  // Stops accepting calls, ends metric streams, waits up to `deadline` for calls in flight and
  // then cancels the rest. Idempotent.
  virtual void Shutdown(std::chrono::milliseconds deadline) = 0;
};

}  // namespace ailb::server
