#include "ailb/config/config.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <memory>
#include <set>
#include <system_error>

#include "absl/status/status.h"
#include "ailb/common/status.h"
#include "config/env_loader.h"
#include "config/parse_util.h"
#include "config/validate.h"
#include "config/yaml_loader.h"

namespace ailb::config {
namespace {

using internal::Cat;

absl::Status Invalid(std::string_view message) {
  return absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  auto close = [](std::FILE* file) { std::fclose(file); };
  std::unique_ptr<std::FILE, decltype(close)> file(std::fopen(path.c_str(), "rb"), close);
  if (file == nullptr) {
    return Invalid(Cat(path, ": cannot open: ", std::generic_category().message(errno)));
  }
  std::string text;
  char buffer[64 * 1024];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) text.append(buffer, n);
  // A directory opens fine and fails on the first read.
  if (std::ferror(file.get())) {
    return Invalid(Cat(path, ": cannot read: ", std::generic_category().message(errno)));
  }
  return text;
}

// The one path that builds a snapshot: file values (if any), then the environment on top, then
// validation of the result. `yaml_text` is null when there is no file.
absl::StatusOr<Config> Build(const Environment& env, const std::string* yaml_text,
                             std::string_view source_name) {
  Config config;
  internal::SourceMap sources;
  std::vector<std::string> problems;
  if (yaml_text != nullptr) {
    config.source_file = std::string(source_name);
    AILB_RETURN_IF_ERROR(
        internal::ApplyYaml(*yaml_text, source_name, env, &config, &sources, &problems));
  }
  internal::ApplyEnvironment(env, &config, &sources, &problems);
  internal::MakeIdsUnique(&config.deployments);
  for (std::string& problem : internal::ValidateConfig(config, sources)) {
    problems.push_back(std::move(problem));
  }
  if (problems.empty()) return config;

  // One bad *_BASE_URL shared by several deployments would otherwise be reported once per entry.
  std::set<std::string_view> seen;
  std::string message;
  for (const std::string& problem : problems) {
    if (!seen.insert(problem).second) continue;
    if (!message.empty()) message += "; ";
    message += problem;
  }
  return Invalid(message);
}

}  // namespace

std::string_view ProviderName(ProviderKind kind) {
  switch (kind) {
    case ProviderKind::kOpenAI:
      return "openai";
    case ProviderKind::kAnthropic:
      return "anthropic";
    case ProviderKind::kOllama:
      return "ollama";
  }
  return "unknown";
}

std::optional<ProviderKind> ParseProviderName(std::string_view name) {
  std::string lower = internal::AsciiLower(name);
  for (ProviderKind kind :
       {ProviderKind::kOpenAI, ProviderKind::kAnthropic, ProviderKind::kOllama}) {
    if (lower == ProviderName(kind)) return kind;
  }
  return std::nullopt;
}

std::vector<std::string> Config::ModelNames() const {
  std::vector<std::string> names;
  std::set<std::string_view> seen;
  for (const Deployment& deployment : deployments) {
    if (seen.insert(deployment.model_name).second) names.push_back(deployment.model_name);
  }
  return names;
}

const ModelGroupConfig& Config::GroupSettings(std::string_view group) const {
  static const ModelGroupConfig kDefaults;
  auto it = model_groups.find(group);
  return it == model_groups.end() ? kDefaults : it->second;
}

const std::string& Config::StrategyFor(std::string_view group) const {
  const ModelGroupConfig& settings = GroupSettings(group);
  return settings.routing_strategy.empty() ? routing_strategy : settings.routing_strategy;
}

Environment ProcessEnvironment() {
  Environment env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    size_t eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

absl::StatusOr<Config> LoadConfig(const Environment& env,
                                  const std::optional<std::string>& config_file) {
  try {
    std::optional<std::string> path;
    if (config_file && !config_file->empty()) {
      path = *config_file;
    } else {
      path = internal::EnvValue(env, "AILB_CONFIG");
    }
    if (!path) return Build(env, nullptr, "");
    AILB_ASSIGN_OR_RETURN(std::string text, ReadFile(*path));
    return Build(env, &text, *path);
  } catch (const std::exception& e) {
    // Only allocation failure can get here; callers are promised no exceptions.
    return absl::InternalError(Cat("loading configuration: ", e.what()));
  } catch (...) {
    return absl::InternalError("loading configuration: unknown exception");
  }
}

absl::StatusOr<Config> LoadConfigFromYamlText(const Environment& env, std::string_view yaml_text,
                                              std::string_view source_name) {
  try {
    std::string text(yaml_text);
    return Build(env, &text, source_name);
  } catch (const std::exception& e) {
    return absl::InternalError(Cat("loading configuration: ", e.what()));
  } catch (...) {
    return absl::InternalError("loading configuration: unknown exception");
  }
}

std::vector<std::string> Validate(const Config& config) {
  try {
    return internal::ValidateConfig(config, internal::SourceMap());
  } catch (...) {
    // Allocation failure while formatting; still a definite "invalid" answer rather than a throw.
    return {"config: validation failed to run"};
  }
}

}  // namespace ailb::config
