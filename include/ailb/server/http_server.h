// The data plane's HTTP/1.1 server (Pistache underneath; its types stay in src/server/http).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ailb/auth/key_store.h"
#include "ailb/common/worker_pool.h"
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

// Endpoints whose work blocks (SQLite, index builds, embedding calls): the HTTP server checks
// authorisation on the reactor and runs Handle on a worker pool. Thread-safe.
class BlockingApi {
 public:
  virtual ~BlockingApi() = default;
  struct Reply {
    int http_status = 200;
    std::string json_body;
  };
  // Who may call an endpoint.
  enum class Access {
    kData,      // any data-plane key (open when no keys exist)
    kAdmin,     // the admin key when one is configured, else as kData (RAG and sessions)
    kKeyAdmin,  // only the admin key; refused when none is configured (key administration)
  };
  // Whether `path` (without the query string) belongs to this API.
  virtual bool Handles(std::string_view path) const = 0;
  virtual Access AccessFor(std::string_view path) const = 0;
  // Blocking: called on a worker thread. Errors are answered through the one status mapping.
  virtual absl::StatusOr<Reply> Handle(std::string_view method, std::string_view path,
                                       std::string_view body) = 0;
};

// What the server serves; it does not own any of it.
struct HttpServerDeps {
  gateway::Gateway* gateway = nullptr;
  config::ConfigStore* config = nullptr;
  const metrics::Registry* registry = nullptr;  // GET /metrics when set
  // Memory, RAG, embeddings and key administration; served only when `workers` is set.
  std::vector<BlockingApi*> blocking_apis;
  WorkerPool* workers = nullptr;
  // API keys; without it the data plane is open.
  auth::KeyStore* keys = nullptr;
};

// Thread-safe. Handlers validate on the reactor thread and hand the request to the gateway; no
// upstream I/O ever runs on a reactor thread.
class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds and starts serving on background threads.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           HttpServerDeps deps);
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
