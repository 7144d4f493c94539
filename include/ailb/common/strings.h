// Conversions at the edge between ailb's std::string_view APIs and Abseil, whose Debian build
// has its own absl::string_view.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"
#include "fmt/core.h"

namespace ailb {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view ToStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace ailb

// Lets spdlog/fmt print absl::string_view (status messages) directly.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Context>
  auto format(absl::string_view s, Context& context) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), context);
  }
};
