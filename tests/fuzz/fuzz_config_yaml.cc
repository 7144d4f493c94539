// The configuration loader on arbitrary YAML text (what UpdateConfig accepts over gRPC): it must
// return a configuration or a list of problems, never throw or crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ailb/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ailb::config::Config> config =
      ailb::config::LoadConfigFromYamlText(ailb::config::Environment{}, text, "fuzz");
  if (config.ok()) (void)ailb::config::Validate(*config);
  return 0;
}
