// Applies environment variables on top of a Config (the YAML file's values or the defaults).
// Private to src/config/.
#pragma once

#include <string>
#include <vector>

#include "ailb/config/config.h"
#include "config/parse_util.h"

namespace ailb::config::internal {

// Overrides scalar settings with the variables set in `env`, replaces api_keys when
// AILB_API_KEYS is set, and appends one deployment per entry of OPENAI_MODELS, ANTHROPIC_MODELS
// and OLLAMA_MODELS. Blank variables count as unset. Problems go to `errors`, each starting with
// the variable's name; values that fail to parse leave the setting untouched.
void ApplyEnvironment(const Environment& env, Config* config, SourceMap* sources,
                      std::vector<std::string>* errors);

}  // namespace ailb::config::internal
