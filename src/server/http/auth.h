// Where a client puts its API key. Checking it is auth::KeyStore's job.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/hash.h"

namespace ailb::server {

// The key a client presented: `Authorization: Bearer <key>`, else `x-api-key`, else `api-key`
// (Azure's header).
std::optional<std::string> PresentedApiKey(const std::optional<std::string>& authorization,
                                           const std::optional<std::string>& x_api_key,
                                           const std::optional<std::string>& api_key);

}  // namespace ailb::server
