// Reads ailb's YAML configuration document into a Config. Private to src/config/; the supported
// shape is documented at the top of yaml_loader.cc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "ailb/config/config.h"
#include "config/parse_util.h"

namespace ailb::config::internal {

// Applies the settings in `yaml_text` to `config` and appends its model_list deployments.
// Returns InvalidArgument ("<source_name>:<line>:<column>: ...") only when the text is not YAML;
// problems with the content (unknown keys, wrong types, missing API keys) go to `errors`, each
// starting with its key path, so that every problem can be reported at once. API keys named by
// api_key_env are looked up in `env`. Never throws.
absl::Status ApplyYaml(std::string_view yaml_text, std::string_view source_name,
                       const Environment& env, Config* config, SourceMap* sources,
                       std::vector<std::string>* errors);

}  // namespace ailb::config::internal
