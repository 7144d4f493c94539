// A fake LLM upstream for tests and benchmarks: a real loopback HTTP/1.1 server that speaks the
// OpenAI, Anthropic and Ollama wire protocols and can be scripted to be slow, fail, hang, cut
// streams or reset connections.
//
// The server is event-driven: one internal thread runs an epoll loop over non-blocking sockets
// (no thread per connection), with a timer heap for delays and stream intervals, so it can hold
// many thousands of concurrent long-lived streams.
//
// Typical use from a test:
//
//   auto started = ailb::testing::FakeLlmServer::Start();
//   ASSERT_TRUE(started.ok()) << started.status();
//   std::unique_ptr<ailb::testing::FakeLlmServer> server = std::move(*started);
//   ailb::testing::FakeBehavior slow;
//   slow.delay_before_headers_ms = 200;
//   server->EnqueueBehavior(slow);            // the next request is slow...
//   ... point the code under test at server->BaseUrl() ...
//   EXPECT_TRUE(server->WaitForRequests(1, std::chrono::seconds(5)));
//   EXPECT_EQ(server->Requests()[0].Header("authorization"), "Bearer k");
//
// Endpoints (routing ignores the query string):
//   OpenAI     POST  .../chat/completions   chat.completion or SSE chat.completion.chunk stream
//              POST  .../embeddings         deterministic L2-normalised vectors (see FakeBehavior)
//              GET   .../models             "fake-model" plus every model named in a request
//   Anthropic  POST  .../messages           message or SSE event stream
//   Ollama     POST  /api/chat              NDJSON stream (the default) or one JSON object
//              GET   /api/tags              "fake-model:latest" plus every model seen
//              POST  /api/embed, /api/embeddings
//   Anything else is answered 404 (405 for a wrong method on a known path), garbage 400 + close.
//
// HTTP: keep-alive and pipelining, Content-Length or chunked request bodies up to 64 MiB,
// "Expect: 100-continue", HTTP/1.0 (close-delimited). Non-stream responses carry Content-Length;
// streams use chunked transfer encoding with every event flushed as its own HTTP chunk. A FIN from
// the client (EOF, EPOLLRDHUP), a reset or a failed write means the client went away: the
// connection is closed at once, even if a request was still buffered (no half-close support).

#ifndef AILB_TESTS_FAKES_FAKE_LLM_SERVER_H_
#define AILB_TESTS_FAKES_FAKE_LLM_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json_fwd.hpp"

namespace ailb::testing {

// How the server answers one request. The defaults produce a fast, successful reply.
//
// Stream anatomy (the unit of `stream_chunks`, `cut_after_chunks` and `hang_mid_stream` is the
// content delta):
//   OpenAI:    role chunk | content deltas... | finish chunk | [usage chunk] | [DONE]
//   Anthropic: message_start, content_block_start, ping | text deltas... |
//              content_block_stop, message_delta, message_stop
//   Ollama:    content lines (done:false)... | final line (done:true, counts)
// `chunk_interval_ms` elapses between consecutive content deltas and before the closing events;
// the events before the first delta follow the headers immediately.
//
// Precedence: reset_connection, then hang, then a non-2xx status, then (for endpoints that take a
// JSON body) a 400 if the request body is not a JSON object, then the normal reply, which
// hang_mid_stream / cut_after_chunks / malformed_json / delays modify.
struct FakeBehavior {
  // HTTP status to answer with; a non-2xx status sends `error_body` (never a stream).
  int status = 200;
  // Error body for a non-2xx status. Empty means a provider-style default: OpenAI
  // {"error":{"message","type","param","code"}}, Anthropic {"type":"error","error":{"type",
  // "message"}} for .../messages, Ollama {"error":"..."} for /api/... paths.
  std::string error_body;
  // Added to every response of this request, e.g. {"Retry-After", "2"}.
  std::vector<std::pair<std::string, std::string>> extra_headers;
  // Time before anything is written (time to first byte). Also delays `reset_connection`.
  int delay_before_headers_ms = 0;
  std::string reply_text = "Hello from the fake upstream.";
  // Streamed replies split reply_text into this many content deltas (values < 1 mean 1). Pieces
  // respect UTF-8 boundaries and concatenate to reply_text exactly; a piece may be empty when the
  // text is shorter than the chunk count.
  int stream_chunks = 3;
  // Delay between stream chunks (see above).
  int chunk_interval_ms = 0;
  // Read the request and never answer, until the client closes.
  bool hang = false;
  // Send the headers, the opening events and the first content delta, then never send more. For
  // a non-stream reply: the headers and half of the body.
  bool hang_mid_stream = false;
  // >= 0: after the opening events and that many content deltas, close the connection abruptly
  // (no closing events, no [DONE], no chunked terminator). For a non-stream reply: the headers
  // and half of the body, then close.
  int cut_after_chunks = -1;
  // Read the request, then (after delay_before_headers_ms) close with a TCP RST (SO_LINGER 0)
  // without answering.
  bool reset_connection = false;
  // Answer 200 with a body (or stream data payloads) that is not valid JSON.
  bool malformed_json = false;
  // Usage reported (also the Ollama prompt_eval_count / eval_count).
  int prompt_tokens = 11;
  int completion_tokens = 7;
  // OpenAI finish_reason; mapped to Anthropic stop_reason ("stop" -> "end_turn", "length" ->
  // "max_tokens", "tool_calls" -> "tool_use") and Ollama done_reason.
  std::string finish_reason = "stop";

  // Embeddings (OpenAI .../embeddings, Ollama /api/embed and /api/embeddings). Each vector is a
  // deterministic function of its input text and length, L2-normalised.
  // Vector length: 0 means the request's "dimensions" field when it is valid, else 8; > 0 forces
  // this length whatever the request asks (a provider ignoring "dimensions").
  int embedding_dims = 0;
  // OpenAI replies list data[] last-first (each item keeps its true "index"): clients must order
  // by index, not by position.
  bool reverse_embeddings = false;
  // Added to the number of vectors in a reply: < 0 drops the last ones, > 0 appends vectors for
  // made-up inputs (a provider answering the wrong count).
  int embedding_count_delta = 0;
};

// One complete request as received (recorded before the behaviour is applied, so hung, reset and
// failed requests are recorded too).
struct RecordedRequest {
  std::string method;
  std::string path;   // without the query string, e.g. "/v1/chat/completions"
  std::string query;  // text after '?', without it; "" if none
  std::vector<std::pair<std::string, std::string>> headers;  // in order, names as sent
  std::string body;  // decoded (chunked request bodies are de-chunked)

  // Value of the first header named `name` (case-insensitive); "" if absent.
  std::string Header(std::string_view name) const;
  // The body parsed as JSON; a discarded value (is_discarded()) if it is not JSON. Never throws.
  nlohmann::json JsonBody() const;
};

// The fake upstream server. All public methods are thread-safe and may be called from any thread
// (state shared with the event-loop thread is guarded by a mutex). Behaviour changes apply to
// requests that complete after the call.
class FakeLlmServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // numeric IPv4/IPv6 address or a resolvable host name
    int port = 0;                    // 0 = ephemeral
    // When false, requests are counted (RequestCount, WaitForRequests) but not stored, so
    // Requests() stays empty; for long benchmark runs. Model names are still collected.
    bool record_requests = true;
  };

  // Binds, listens and starts the event-loop thread.
  static absl::StatusOr<std::unique_ptr<FakeLlmServer>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<FakeLlmServer>> Start();

  FakeLlmServer(const FakeLlmServer&) = delete;
  FakeLlmServer& operator=(const FakeLlmServer&) = delete;
  ~FakeLlmServer();  // Stop()s and joins.

  int port() const;
  std::string BaseUrl() const;  // "http://127.0.0.1:<port>" (IPv6 hosts in brackets)

  // Used when the queue is empty.
  void SetDefaultBehavior(FakeBehavior behavior);
  // Consumed FIFO, one per complete request to a known endpoint with the right method. Requests
  // answered 404/405 and unparseable HTTP (400, then close) consume none.
  void EnqueueBehavior(FakeBehavior behavior);

  // Every complete request received since the last ClearRequests(), in order.
  std::vector<RecordedRequest> Requests() const;
  size_t RequestCount() const;
  // Requests to the embedding endpoints (answered or not), and the texts they asked to embed; for
  // asserting how a client batches.
  size_t EmbeddingRequestCount() const;
  size_t EmbeddingInputCount() const;
  // Clears Requests() and every count above.
  void ClearRequests();

  // Currently open client connections.
  int OpenConnections() const;
  // Streaming responses that reached their normal end (last byte handed to the kernel).
  int StreamsCompleted() const;
  // Streaming responses whose client went away before the end (including while delayed or hung).
  // Streams cut by the server (cut_after_chunks) count in neither.
  int StreamsAbortedByPeer() const;

  // Blocks until RequestCount() >= n or the timeout passes; returns whether it was reached.
  bool WaitForRequests(size_t n, std::chrono::milliseconds timeout) const;

  // Stops the loop, closes every connection and the listener, joins the thread. Idempotent.
  void Stop();

 private:
  class Loop;  // The event loop; only touched by the loop thread. Defined in the .cc.

  FakeLlmServer() = default;

  std::string host_;
  int port_ = 0;
  bool record_requests_ = true;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  std::mutex join_mu_;  // serialises Stop() callers around thread_.join()

  mutable absl::Mutex mu_;
  FakeBehavior default_behavior_ ABSL_GUARDED_BY(mu_);
  std::deque<FakeBehavior> queued_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedRequest> requests_ ABSL_GUARDED_BY(mu_);
  size_t request_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t embedding_request_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t embedding_input_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> models_seen_ ABSL_GUARDED_BY(mu_);
  int open_connections_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_completed_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_aborted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ailb::testing

#endif  // AILB_TESTS_FAKES_FAKE_LLM_SERVER_H_
