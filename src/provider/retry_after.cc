#include "provider/retry_after.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "ailb/common/status.h"

namespace ailb::provider {

absl::Status WithUpstreamRetryAfter(absl::Status status, const upstream::Headers& headers) {
  std::string_view value = upstream::FindHeader(headers, "Retry-After");
  while (!value.empty() && absl::ascii_isspace(static_cast<unsigned char>(value.front()))) {
    value.remove_prefix(1);
  }
  while (!value.empty() && absl::ascii_isspace(static_cast<unsigned char>(value.back()))) {
    value.remove_suffix(1);
  }
  int seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (!value.empty() && ec == std::errc() && end == value.data() + value.size() && seconds >= 0) {
    status = WithRetryAfter(std::move(status), seconds);
  }
  return status;
}

}  // namespace ailb::provider
