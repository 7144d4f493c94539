// Conversions at the edge between ailb's std::string_view APIs and Abseil, whose Debian build
// has its own absl::string_view.
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "fmt/core.h"

namespace ailb {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view ToStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// Decodes %XX escapes of a URL path segment ('+' stays '+': paths are not form data). Malformed
// escapes are kept as they are.
inline std::string PercentDecode(std::string_view in) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

}  // namespace ailb

// Lets spdlog/fmt print absl::string_view (status messages) directly.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Context>
  auto format(absl::string_view s, Context& context) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), context);
  }
};
