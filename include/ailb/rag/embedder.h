// Turns texts into vectors. One interface for the built-in local embedder and for provider
// embedding APIs; a RAG collection fixes its embedder (and so its dimension) at creation.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ailb::upstream {
class HttpClient;
}

namespace ailb::rag {

using Vector = std::vector<float>;

// Thread-safe. Embed may block for network I/O: call it from worker threads, never from a
// Pistache reactor or the upstream client's event thread.
class Embedder {
 public:
  virtual ~Embedder() = default;
  // 0 only for a remote embedder created without an expected dimension (see RemoteEmbedderOptions).
  virtual int dimensions() const = 0;
  // One vector per text, in order, each of dimensions() floats. Errors: InvalidArgument (bad
  // input), Unavailable/DeadlineExceeded (provider down), FailedPrecondition (the provider returned
  // vectors of another dimension).
  virtual absl::StatusOr<std::vector<Vector>> Embed(const std::vector<std::string>& texts) = 0;
  // "local", "openai" or "ollama", and the model name ("" for local), for GET collection replies.
  virtual std::string provider() const = 0;
  virtual std::string model() const = 0;
};

// The default embedder, needing no model download: signed feature hashing of lower-cased words
// (minus English stopwords) and of character 3- to 5-grams of each word with boundary marks,
// sublinear term frequency (1 + ln tf), L2-normalised. Deterministic across runs and machines.
// Empty or all-stopword text yields the zero vector. `dimensions` in [16, 8192], else
// InvalidArgument. Vectors of stored collections depend on the exact features and hashing, so
// changing them requires re-embedding existing local collections (a golden test pins them).
absl::StatusOr<std::unique_ptr<Embedder>> NewLocalEmbedder(int dimensions);

struct RemoteEmbedderOptions {
  enum class Api { kOpenAI, kOllama };
  Api api = Api::kOpenAI;
  std::string base_url;  // e.g. https://api.openai.com/v1 (OpenAI) or http://host:11434 (Ollama)
  std::string api_key;   // Bearer token; empty for none
  std::string model;
  // Expected vector size; replies of another size are FailedPrecondition. 0: not checked (any size,
  // the same for every vector of one call), for callers that pass the provider's size through.
  int dimensions = 0;
  // OpenAI's `dimensions` request field is sent when true (text-embedding-3 models).
  bool send_dimensions = false;
  int batch_size = 64;  // texts per upstream call
  std::chrono::milliseconds timeout{30'000};
};

// OpenAI-compatible POST {base}/embeddings or Ollama POST {base}/api/embed, batched, through the
// shared upstream client (blocking the calling worker thread until the reply arrives; `timeout`
// bounds each batch). Vectors are L2-normalised so cosine similarity is an inner product. With a
// known dimension, blank texts get the zero vector without a round trip. Errors: the provider's
// HTTP status mapped by StatusCodeForHttp with its message (and Retry-After); transport failures
// as the client reports them (Unavailable, DeadlineExceeded); unparseable or miscounted replies
// Unavailable with HTTP 502 (BadGatewayError). InvalidArgument for bad options (base_url not
// http(s), empty model, dimensions outside [0, 65536], batch_size outside [1, 2048], timeout <= 0).
absl::StatusOr<std::unique_ptr<Embedder>> NewRemoteEmbedder(upstream::HttpClient& client,
                                                            RemoteEmbedderOptions options);

}  // namespace ailb::rag
