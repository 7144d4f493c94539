// Data-plane API key checks.
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

// OK when `presented` matches one of `configured`. Configured keys are either plain text or
// "sha256:<64 hex digits>" (the SHA-256 of the key, so the key itself need not be stored).
// Comparisons take the same time whatever the inputs. Unauthenticated otherwise, with a message
// that never repeats the key.
absl::Status CheckApiKey(const std::vector<std::string>& configured,
                         const std::optional<std::string>& presented);

}  // namespace ailb::server
