// The data plane's HTTP/1.1 server (Pistache underneath; its types stay in src/server/http).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ailb/config/config.h"
#include "ailb/gateway/gateway.h"
#include "ailb/metrics/registry.h"

namespace ailb::server {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8080;  // 0 picks a free port
  int threads = 2;
  int64_t max_body_bytes = 8 << 20;
  // Idle keep-alive connections are closed after this; it must also exceed the longest request,
  // because Pistache's sweeper counts a connection with a reply in progress as idle.
  std::chrono::milliseconds keepalive_timeout{660'000};
};

// Thread-safe. Handlers validate on the reactor thread and hand the request to the gateway; no
// upstream I/O ever runs on a reactor thread.
class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds and starts serving on background threads.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, gateway::Gateway& gateway, config::ConfigStore& config,
      const metrics::Registry* registry = nullptr);
  virtual int port() const = 0;
  // Streams currently open to clients.
  virtual int open_streams() const = 0;
  // Client connections that have sent at least one request, open now and ever.
  virtual int64_t open_connections() const = 0;
  virtual int64_t total_connections() const = 0;
  // Waits until every reply byte handed to connections has been written (or `timeout`).
  virtual bool WaitForPendingWrites(std::chrono::milliseconds timeout) = 0;
  // Stops accepting and closes every connection. Drain the gateway first.
  virtual void Shutdown() = 0;
};

}  // namespace ailb::server
