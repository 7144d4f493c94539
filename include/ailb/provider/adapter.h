// A provider adapter is a pure codec between ailb's OpenAI-shaped schema and one provider's wire
// format. It does no I/O and knows nothing of retries, routing or other deployments: the gateway
// sends what an adapter encodes through the shared HTTP client and feeds replies back to it.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ailb/config/config.h"
#include "ailb/llm/chat.h"
#include "ailb/upstream/http_client.h"
#include "nlohmann/json.hpp"

namespace ailb::provider {

// Decodes one streamed reply into OpenAI chat.completion.chunk objects. Not thread-safe: one
// decoder per stream.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  // Consumes raw body bytes; appends every chunk they complete to `out`. An error means the
  // upstream sent something unusable (a malformed event or an error event).
  virtual absl::Status Feed(std::string_view bytes, std::vector<nlohmann::json>& out) = 0;
  // The body ended. An error when it ended before the provider's terminator.
  virtual absl::Status Finish(std::vector<nlohmann::json>& out) = 0;
};

// Thread-safe: adapters are stateless.
class ProviderAdapter {
 public:
  virtual ~ProviderAdapter() = default;
  virtual config::ProviderKind kind() const = 0;
  // The upstream request for `request` on `deployment` (timeouts are set by the caller).
  virtual absl::StatusOr<upstream::Request> EncodeChat(
      const llm::ChatRequest& request, const config::Deployment& deployment) const = 0;
  // A complete non-streamed 2xx reply as an OpenAI chat.completion object.
  virtual absl::StatusOr<nlohmann::json> DecodeChat(std::string_view body) const = 0;
  virtual std::unique_ptr<StreamDecoder> NewStreamDecoder() const = 0;
  // A non-2xx reply as a status: the canonical code follows the HTTP status, the message is the
  // provider's own, and Retry-After is carried when given.
  virtual absl::Status DecodeError(int http_status, const upstream::Headers& headers,
                                   std::string_view body) const = 0;
  // A free call that proves the deployment answers (lists models); never a paid completion.
  virtual absl::StatusOr<upstream::Request> EncodeHealthProbe(
      const config::Deployment& deployment) const = 0;
};

// The adapter for `kind`, or Unimplemented when this build has none.
absl::StatusOr<std::shared_ptr<const ProviderAdapter>> AdapterFor(config::ProviderKind kind);

}  // namespace ailb::provider
