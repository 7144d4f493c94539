// Shared by the adapters: the upstream's Retry-After header, carried on an error status.
#pragma once

#include "absl/status/status.h"
#include "ailb/upstream/http_client.h"

namespace ailb::provider {

// `status` with the Retry-After payload when `headers` hold a Retry-After of whole seconds. The
// HTTP-date form is ignored: LLM providers and the proxies in front of them send seconds.
absl::Status WithUpstreamRetryAfter(absl::Status status, const upstream::Headers& headers);

}  // namespace ailb::provider
