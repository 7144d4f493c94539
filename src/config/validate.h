// Whole-config validation. Private to src/config/.
#pragma once

#include <string>
#include <vector>

#include "ailb/config/config.h"
#include "config/parse_util.h"

namespace ailb::config::internal {

// Every problem with `config`, each starting with the key it concerns as named by `sources`
// (the environment variable or YAML path it came from, else its canonical path).
std::vector<std::string> ValidateConfig(const Config& config, const SourceMap& sources);

}  // namespace ailb::config::internal
