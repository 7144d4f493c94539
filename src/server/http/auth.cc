#include "server/http/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "ailb/common/hash.h"
#include "ailb/common/status.h"

namespace ailb::server {
std::optional<std::string> PresentedApiKey(const std::optional<std::string>& authorization,
                                           const std::optional<std::string>& x_api_key,
                                           const std::optional<std::string>& api_key) {
  if (authorization) {
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    if (absl::StartsWithIgnoreCase(value, "bearer ")) {
      value = absl::StripAsciiWhitespace(value.substr(7));
      if (!value.empty()) return std::string(value);
    }
  }
  if (x_api_key && !x_api_key->empty()) return *x_api_key;
  if (api_key && !api_key->empty()) return *api_key;
  return std::nullopt;
}

}  // namespace ailb::server
