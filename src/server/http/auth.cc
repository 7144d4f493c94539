#include "server/http/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "ailb/common/hash.h"
#include "ailb/common/status.h"

namespace ailb::server {
namespace {

constexpr absl::string_view kSha256Prefix = "sha256:";

}  // namespace

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

absl::Status CheckApiKey(const std::vector<std::string>& configured,
                         const std::optional<std::string>& presented) {
  if (!presented) {
    return WithErrorCode(
        absl::UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'"),
        "missing_api_key");
  }
  // Hash once so every comparison, plain or hashed, runs over fixed-length digests.
  const std::string presented_hash = Sha256Hex(*presented);
  bool matched = false;
  for (const std::string& key : configured) {
    const std::string expected = absl::StartsWith(key, kSha256Prefix)
                                     ? absl::AsciiStrToLower(key.substr(kSha256Prefix.size()))
                                     : Sha256Hex(key);
    matched |= ConstantTimeEquals(expected, presented_hash);
  }
  if (matched) return absl::OkStatus();
  return WithErrorCode(absl::UnauthenticatedError("invalid API key"), "invalid_api_key");
}

}  // namespace ailb::server
