// Process-wide logging set-up (spdlog). Secrets are never passed to the logger: configuration
// is logged by name and count, never by value.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace ailb {

// `level`: trace, debug, info, warn, error, critical, off. `format`: "text" or "json" (one JSON
// object per line: ts, level, msg).
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

// One access-log line at info level. In the JSON format the fields are members of the line's
// object (beside ts_ms and level, with "log": "access"); in the text format they follow "access"
// as key=value pairs, strings quoted when they contain spaces or quotes. `fields` must be an
// object and must not hold secrets.
void LogAccess(const nlohmann::ordered_json& fields);

}  // namespace ailb
