// The one outbound HTTP client. Every upstream call (completions, streams, model listing,
// embeddings) goes through it, so connection reuse, deadlines and cancellation live in one place.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace ailb::upstream {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive lookup; empty when absent.
std::string_view FindHeader(const Headers& headers, std::string_view name);

struct Request {
  std::string method = "POST";
  std::string url;
  Headers headers;
  std::string body;
  std::chrono::milliseconds connect_timeout{5'000};
  // From the start of the transfer until the first body byte (or the end of a bodiless reply).
  std::chrono::milliseconds first_byte_timeout{120'000};
  // The whole transfer.
  std::chrono::milliseconds total_timeout{600'000};
  // Longest silence between body bytes once the body has started.
  std::chrono::milliseconds idle_timeout{120'000};
  bool verify_tls = true;
};

// Receives one transfer's events, in order, on the client's event thread. Implementations must
// not block: every other transfer waits while a callback runs.
class ResponseObserver {
 public:
  virtual ~ResponseObserver() = default;
  // The status line and headers are complete. Return false to cancel the transfer.
  virtual bool OnResponseHead(int http_status, const Headers& headers) = 0;
  // A piece of the body, as it arrives (not aligned to any framing). Return false to cancel.
  virtual bool OnBodyData(std::string_view data) = 0;
  // Called exactly once, last. OK when the response was received completely (whatever its HTTP
  // status); otherwise Unavailable (connect failure, reset, truncated body), DeadlineExceeded
  // (the message names the deadline) or Cancelled.
  virtual void OnComplete(const absl::Status& status) = 0;
};

// Thread-safe: Start, Cancel and RunAfter may be called from any thread, including from inside
// an observer callback.
class HttpClient {
 public:
  using TransferId = uint64_t;
  virtual ~HttpClient() = default;
  virtual TransferId Start(Request request, std::shared_ptr<ResponseObserver> observer) = 0;
  // Cancels a transfer; its observer then gets OnComplete(Cancelled) unless it already completed.
  virtual void Cancel(TransferId id) = 0;
  // Runs `task` on the event thread once `delay` has passed (backoff, hedging).
  virtual void RunAfter(std::chrono::milliseconds delay, std::function<void()> task) = 0;
  // Transfers started and not yet completed.
  virtual size_t ActiveTransfers() const = 0;
};

struct CurlClientOptions {
  size_t max_cached_connections = 4096;
  // How often deadlines are checked; bounds their precision.
  std::chrono::milliseconds sweep_interval{20};
};

// libcurl's multi interface on one event thread: connection reuse, HTTP/2 over TLS where the
// server offers it, TLS verification. Call curl_global_init once before creating one.
std::unique_ptr<HttpClient> NewCurlHttpClient(CurlClientOptions options = {});

}  // namespace ailb::upstream
