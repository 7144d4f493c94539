// Process-wide logging set-up (spdlog). Secrets are never passed to the logger: configuration
// is logged by name and count, never by value.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace ailb {

// `level`: trace, debug, info, warn, error, critical, off. `format`: "text" or "json" (one JSON
// object per line: ts, level, msg).
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

}  // namespace ailb
