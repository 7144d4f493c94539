// What a reload cannot change. Some settings are read once at start (listeners, the data
// directory, the log format, the body limit, the control plane's token and bind address, the
// promotion interval): a reloaded configuration that changes one is still published, but the
// running process keeps the start-up value until it restarts. RestartOnlyChanges finds them so a
// reload can say so, by name.
#pragma once

#include <string>
#include <vector>

#include "ailb/config/config.h"

namespace ailb::config {

// One setting whose value differs between two configurations.
struct SettingChange {
  std::string name;  // the YAML key (or the environment variable for env-only settings)
  std::string from;  // values as text, strings quoted; both empty when `secret`
  std::string to;
  bool secret = false;  // the values must never be shown or logged

  // "<name> changed from <from> to <to>", or "<name> changed" for a secret.
  std::string Describe() const;
  // Describe() + "; takes effect after restart".
  std::string RestartWarning() const;
};

// The settings fixed at start whose value in `next` differs from `started` (the configuration the
// process started with, i.e. the values in effect), in a stable order. Pure.
std::vector<SettingChange> RestartOnlyChanges(const Config& started, const Config& next);

}  // namespace ailb::config
