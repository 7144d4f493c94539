// Provider embedding APIs (OpenAI-compatible and Ollama) behind the Embedder interface.
//
// Each batch is one POST through the shared async upstream client; the calling worker thread waits
// on a future that the client's event thread fulfils from OnComplete. The observer owns the
// reply state (shared_ptr), so a caller that gives up waiting leaves nothing dangling.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/rag/embedder.h"
#include "ailb/upstream/http_client.h"
#include "nlohmann/json.hpp"
#include "provider/retry_after.h"

namespace ailb::rag {
namespace {

using Json = nlohmann::json;

constexpr int kMaxDimensions = 65536;
// OpenAI accepts at most 2,048 inputs per request.
constexpr int kMaxBatchSize = 2048;
// A reply of 2,048 vectors of 3,072 floats printed as JSON is ~130 MB; anything larger is not an
// embedding reply and is cut off rather than buffered.
constexpr size_t kMaxReplyBytes = size_t{256} << 20;
// Upstream error text quoted in a status is cut to this length.
constexpr size_t kMaxErrorMessage = 512;
// The client enforces the deadline itself; this margin only covers a client that never calls back.
constexpr std::chrono::milliseconds kWaitMargin{2'000};

std::string_view TrimTrailingSlashes(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return s;
}

// What the event thread hands to the waiting caller.
struct Reply {
  absl::Status transport;  // OnComplete's status
  int http_status = 0;
  upstream::Headers headers;
  std::string body;
  bool too_large = false;
};

class ReplyCollector final : public upstream::ResponseObserver {
 public:
  std::future<Reply> Result() { return promise_.get_future(); }

  bool OnResponseHead(int http_status, const upstream::Headers& headers) override {
    reply_.http_status = http_status;
    reply_.headers = headers;
    return true;
  }
  bool OnBodyData(std::string_view data) override {
    if (reply_.body.size() + data.size() > kMaxReplyBytes) {
      reply_.too_large = true;
      return false;  // cancels the transfer; OnComplete follows with Cancelled
    }
    reply_.body.append(data);
    return true;
  }
  void OnComplete(const absl::Status& status) override {
    reply_.transport = status;
    promise_.set_value(std::move(reply_));
  }

 private:
  Reply reply_;
  std::promise<Reply> promise_;
};

// The provider's own explanation from an error body: OpenAI {"error":{"message"}}, Ollama
// {"error":"..."}, else a plain {"message"} or the start of the raw body.
std::string UpstreamErrorMessage(std::string_view body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string message;
  if (j.is_object()) {
    const auto error = j.find("error");
    if (error != j.end() && error->is_string()) {
      message = error->get<std::string>();
    } else if (error != j.end() && error->is_object()) {
      const auto m = error->find("message");
      if (m != error->end() && m->is_string()) message = m->get<std::string>();
    }
    if (message.empty()) {
      const auto m = j.find("message");
      if (m != j.end() && m->is_string()) message = m->get<std::string>();
    }
  }
  if (message.empty() && !j.is_object()) {
    message = std::string(absl::StripAsciiWhitespace(
        absl::string_view(body.data(), std::min(body.size(), kMaxErrorMessage))));
  }
  if (message.size() > kMaxErrorMessage) message.resize(kMaxErrorMessage);
  return message;
}

class RemoteEmbedder final : public Embedder {
 public:
  RemoteEmbedder(upstream::HttpClient& client, RemoteEmbedderOptions options)
      : client_(client), options_(std::move(options)) {
    const std::string_view base = TrimTrailingSlashes(options_.base_url);
    url_ = options_.api == RemoteEmbedderOptions::Api::kOpenAI
               ? absl::StrCat(ToAbsl(base), "/embeddings")
               : absl::StrCat(ToAbsl(base), "/api/embed");
    // Names the provider and model, not the URL, in errors that may reach API clients.
    error_prefix_ = absl::StrCat(provider(), " embeddings (", options_.model, "): ");
  }

  int dimensions() const override { return options_.dimensions; }
  std::string provider() const override {
    return options_.api == RemoteEmbedderOptions::Api::kOpenAI ? "openai" : "ollama";
  }
  std::string model() const override { return options_.model; }

  // With a known dimension, texts that are empty or only whitespace get the zero vector without a
  // round trip, as with the local embedder: providers reject empty inputs with a 400 that would
  // fail the whole batch.
  absl::StatusOr<std::vector<Vector>> Embed(const std::vector<std::string>& texts) override {
    std::vector<Vector> out(texts.size());
    std::vector<size_t> pending;  // indexes of texts to send
    pending.reserve(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      if (options_.dimensions > 0 && absl::StripAsciiWhitespace(texts[i]).empty()) {
        out[i].assign(static_cast<size_t>(options_.dimensions), 0.0f);
      } else {
        pending.push_back(i);
      }
    }
    const auto batch = static_cast<size_t>(options_.batch_size);
    for (size_t from = 0; from < pending.size(); from += batch) {
      const size_t to = std::min(pending.size(), from + batch);
      std::vector<const std::string*> inputs;
      inputs.reserve(to - from);
      for (size_t k = from; k < to; ++k) inputs.push_back(&texts[pending[k]]);
      AILB_ASSIGN_OR_RETURN(std::vector<Vector> vectors, EmbedBatch(inputs));
      for (size_t k = from; k < to; ++k) out[pending[k]] = std::move(vectors[k - from]);
    }
    // Without an expected dimension, batches must still agree with each other.
    if (options_.dimensions == 0 && !pending.empty()) {
      const size_t size = out[pending.front()].size();
      for (size_t i : pending) {
        if (out[i].size() != size) {
          return BadGatewayError(absl::StrCat(error_prefix_, "vectors of ", size, " and ",
                                              out[i].size(), " dimensions in one call"));
        }
      }
    }
    return out;
  }

 private:
  absl::StatusOr<std::vector<Vector>> EmbedBatch(const std::vector<const std::string*>& inputs) {
    Json body = Json::object();
    body["model"] = options_.model;
    Json array = Json::array();
    for (const std::string* text : inputs) array.push_back(*text);
    body["input"] = std::move(array);
    if (options_.api == RemoteEmbedderOptions::Api::kOpenAI) {
      body["encoding_format"] = "float";
      if (options_.send_dimensions && options_.dimensions > 0) {
        body["dimensions"] = options_.dimensions;
      }
    }

    upstream::Request request;
    request.method = "POST";
    request.url = url_;
    // Invalid UTF-8 in a text becomes U+FFFD rather than an exception.
    request.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    request.headers.emplace_back("Content-Type", "application/json");
    request.headers.emplace_back("Accept", "application/json");
    if (!options_.api_key.empty()) {
      request.headers.emplace_back("Authorization", absl::StrCat("Bearer ", options_.api_key));
    }
    request.connect_timeout = std::min(options_.timeout, request.connect_timeout);
    request.first_byte_timeout = options_.timeout;
    request.idle_timeout = options_.timeout;
    request.total_timeout = options_.timeout;

    auto collector = std::make_shared<ReplyCollector>();
    std::future<Reply> result = collector->Result();
    const upstream::HttpClient::TransferId id = client_.Start(std::move(request), collector);
    if (result.wait_for(options_.timeout + kWaitMargin) != std::future_status::ready) {
      client_.Cancel(id);
      return absl::DeadlineExceededError(
          absl::StrCat(error_prefix_, "no answer within ", options_.timeout.count(), " ms"));
    }
    Reply reply = result.get();
    if (reply.too_large) {
      return BadGatewayError(
          absl::StrCat(error_prefix_, "reply exceeds ", kMaxReplyBytes >> 20, " MiB"));
    }
    if (!reply.transport.ok()) {
      return absl::Status(reply.transport.code(),
                          absl::StrCat(error_prefix_, reply.transport.message()));
    }
    if (reply.http_status < 200 || reply.http_status >= 300) {
      std::string message = UpstreamErrorMessage(reply.body);
      absl::Status status(StatusCodeForHttp(reply.http_status),
                          absl::StrCat(error_prefix_, "HTTP ", reply.http_status,
                                       message.empty() ? "" : ": ", message));
      return provider::WithUpstreamRetryAfter(std::move(status), reply.headers);
    }
    absl::StatusOr<std::vector<Vector>> parsed = ParseReply(reply.body, inputs.size());
    if (!parsed.ok()) {
      return BadGatewayError(absl::StrCat(error_prefix_, parsed.status().message()));
    }
    std::vector<Vector> vectors = std::move(*parsed);
    for (Vector& v : vectors) {
      if (v.empty()) return BadGatewayError(absl::StrCat(error_prefix_, "an empty vector"));
      if (options_.dimensions == 0) {
        if (v.size() != vectors[0].size()) {
          return BadGatewayError(absl::StrCat(error_prefix_, "vectors of ", vectors[0].size(),
                                              " and ", v.size(), " dimensions in one reply"));
        }
      } else if (v.size() != static_cast<size_t>(options_.dimensions)) {
        return absl::FailedPreconditionError(
            absl::StrCat(error_prefix_, "the model returned ", v.size(),
                         "-dimensional vectors; the collection expects ", options_.dimensions));
      }
      Normalise(v);
    }
    return vectors;
  }

  absl::StatusOr<std::vector<Vector>> ParseReply(std::string_view text, size_t expected) const {
    const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return BadGatewayError("reply is not a JSON object");
    std::vector<Vector> vectors(expected);
    if (options_.api == RemoteEmbedderOptions::Api::kOllama) {
      const auto embeddings = j.find("embeddings");
      if (embeddings == j.end() || !embeddings->is_array()) {
        return BadGatewayError("reply has no \"embeddings\" array");
      }
      if (embeddings->size() != expected) return CountMismatch(embeddings->size(), expected);
      for (size_t i = 0; i < expected; ++i) {
        AILB_RETURN_IF_ERROR(ReadVector((*embeddings)[i], vectors[i]));
      }
      return vectors;
    }
    const auto data = j.find("data");
    if (data == j.end() || !data->is_array()) {
      return BadGatewayError("reply has no \"data\" array");
    }
    if (data->size() != expected) return CountMismatch(data->size(), expected);
    // Items say which input they embed; their order in the array is not guaranteed.
    std::vector<bool> seen(expected, false);
    for (const Json& item : *data) {
      const auto index = item.is_object() ? item.find("index") : item.end();
      const auto embedding = item.is_object() ? item.find("embedding") : item.end();
      if (index == item.end() || !index->is_number_integer() || embedding == item.end()) {
        return BadGatewayError("reply item lacks an integer \"index\" or \"embedding\"");
      }
      const int64_t i = index->get<int64_t>();
      if (i < 0 || static_cast<size_t>(i) >= expected || seen[static_cast<size_t>(i)]) {
        return BadGatewayError(absl::StrCat("reply has a bad or repeated index ", i));
      }
      seen[static_cast<size_t>(i)] = true;
      AILB_RETURN_IF_ERROR(ReadVector(*embedding, vectors[static_cast<size_t>(i)]));
    }
    return vectors;
  }

  static absl::Status CountMismatch(size_t got, size_t expected) {
    return BadGatewayError(absl::StrCat("reply has ", got, " vectors for ", expected, " inputs"));
  }

  static absl::Status ReadVector(const Json& array, Vector& out) {
    if (!array.is_array()) {
      return BadGatewayError("embedding is not an array of numbers (base64 was not requested)");
    }
    out.reserve(array.size());
    for (const Json& x : array) {
      if (!x.is_number()) return BadGatewayError("embedding holds a non-number");
      const double value = x.get<double>();
      if (!std::isfinite(value)) return BadGatewayError("embedding holds a non-finite number");
      out.push_back(static_cast<float>(value));
    }
    return absl::OkStatus();
  }

  // Providers normalise most models' output already; doing it here makes cosine an inner product
  // for every model. A zero vector stays zero.
  static void Normalise(Vector& v) {
    double norm = 0;
    for (float x : v) norm += static_cast<double>(x) * x;
    if (norm <= 0) return;
    const auto scale = static_cast<float>(1.0 / std::sqrt(norm));
    for (float& x : v) x *= scale;
  }

  upstream::HttpClient& client_;
  const RemoteEmbedderOptions options_;
  std::string url_;
  std::string error_prefix_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Embedder>> NewRemoteEmbedder(upstream::HttpClient& client,
                                                            RemoteEmbedderOptions options) {
  const absl::string_view base(options.base_url.data(), options.base_url.size());
  if (!absl::StartsWithIgnoreCase(base, "http://") &&
      !absl::StartsWithIgnoreCase(base, "https://")) {
    return InvalidFieldError("base_url", absl::StrCat("embedding base_url must be an http(s) URL, "
                                                      "got '",
                                                      options.base_url, "'"));
  }
  if (options.model.empty()) return InvalidFieldError("model", "embedding model is required");
  if (options.dimensions < 0 || options.dimensions > kMaxDimensions) {
    return InvalidFieldError("dimensions",
                             absl::StrCat("embedding dimensions must be in [0, ", kMaxDimensions,
                                          "], got ", options.dimensions));
  }
  if (options.batch_size < 1 || options.batch_size > kMaxBatchSize) {
    return InvalidFieldError(
        "batch_size", absl::StrCat("embedding batch_size must be in [1, ", kMaxBatchSize, "], got ",
                                   options.batch_size));
  }
  if (options.timeout.count() <= 0) {
    return InvalidFieldError("timeout", "embedding timeout must be positive");
  }
  return std::make_unique<RemoteEmbedder>(client, std::move(options));
}

}  // namespace ailb::rag
