#include "config/parse_util.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <system_error>

namespace ailb::config::internal {
namespace {

constexpr std::string_view kWhitespace = " \t\r\n\f\v";

// Splits "scheme://[userinfo@]host..." into the part up to the authority and the rest, with the
// userinfo (if any) in between.
struct UrlParts {
  std::string_view scheme;    // "https://" (with the separator) or empty
  std::string_view userinfo;  // "user:password@" or empty
  std::string_view rest;      // "host[:port][/path]"
};
UrlParts SplitUrl(std::string_view url) {
  UrlParts parts;
  if (size_t scheme_end = url.find("://"); scheme_end != std::string_view::npos) {
    parts.scheme = url.substr(0, scheme_end + 3);
    url.remove_prefix(scheme_end + 3);
  }
  size_t authority_end = url.find_first_of("/?#");
  size_t at = url.substr(0, authority_end).rfind('@');
  if (at != std::string_view::npos) {
    parts.userinfo = url.substr(0, at + 1);
    url.remove_prefix(at + 1);
  }
  parts.rest = url;
  return parts;
}

// The host part of "scheme://[userinfo@]host[:port][/path]", lowercased.
std::string HostOf(std::string_view url) {
  url = SplitUrl(url).rest;
  size_t host_end = url.find_first_of(":/?#");
  if (host_end != std::string_view::npos) url = url.substr(0, host_end);
  return AsciiLower(url);
}

// Optimal string alignment distance: like Levenshtein, but a swap of neighbours ("wieght") counts
// as one edit, which is the commonest typo in keys.
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1, 0));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string_view Trim(std::string_view text) {
  size_t begin = text.find_first_not_of(kWhitespace);
  if (begin == std::string_view::npos) return {};
  size_t end = text.find_last_not_of(kWhitespace);
  return text.substr(begin, end - begin + 1);
}

std::string AsciiLower(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower;
}

std::optional<bool> ParseBool(std::string_view text) {
  std::string lower = AsciiLower(Trim(text));
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return false;
  return std::nullopt;
}

bool ParseInt64(std::string_view key, std::string_view text, int64_t* out,
                std::vector<std::string>* errors) {
  std::string_view trimmed = Trim(text);
  std::string_view digits = trimmed;
  // from_chars rejects a leading '+', which people do write.
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size()) {
    errors->push_back(Cat(key, ": not an integer: ", trimmed));
    return false;
  }
  if (ec == std::errc::result_out_of_range) {
    errors->push_back(Cat(key, ": out of range: ", trimmed));
    return false;
  }
  *out = value;
  return true;
}

bool ParseDouble(std::string_view key, std::string_view text, double* out,
                 std::vector<std::string>* errors) {
  std::string_view trimmed = Trim(text);
  std::string_view digits = trimmed;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  double value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size()) {
    errors->push_back(Cat(key, ": not a number: ", trimmed));
    return false;
  }
  if (ec == std::errc::result_out_of_range) {
    errors->push_back(Cat(key, ": out of range: ", trimmed));
    return false;
  }
  *out = value;
  return true;
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  while (true) {
    size_t comma = text.find(',');
    std::string_view item = Trim(text.substr(0, comma));
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return items;
}

std::string NormalizeApiBase(std::string_view api_base) {
  std::string_view trimmed = Trim(api_base);
  while (!trimmed.empty() && trimmed.back() == '/') trimmed.remove_suffix(1);
  return std::string(trimmed);
}

std::string RedactUrl(std::string_view url) {
  UrlParts parts = SplitUrl(url);
  if (parts.userinfo.empty()) return std::string(url);
  return Cat(parts.scheme, "***@", parts.rest);
}

std::string_view BuiltinApiBase(ProviderKind kind) {
  switch (kind) {
    case ProviderKind::kOpenAI:
      return "https://api.openai.com/v1";
    case ProviderKind::kAnthropic:
      return "https://api.anthropic.com";
    case ProviderKind::kOllama:
      return "http://localhost:11434";
  }
  return {};
}

std::string_view BaseUrlEnvName(ProviderKind kind) {
  switch (kind) {
    case ProviderKind::kOpenAI:
      return "OPENAI_BASE_URL";
    case ProviderKind::kAnthropic:
      return "ANTHROPIC_BASE_URL";
    case ProviderKind::kOllama:
      return "OLLAMA_BASE_URL";
  }
  return {};
}

std::string_view ApiKeyEnvName(ProviderKind kind) {
  switch (kind) {
    case ProviderKind::kOpenAI:
      return "OPENAI_API_KEY";
    case ProviderKind::kAnthropic:
      return "ANTHROPIC_API_KEY";
    case ProviderKind::kOllama:
      return {};
  }
  return {};
}

std::string DefaultApiBase(ProviderKind kind, const Environment& env) {
  std::optional<std::string> from_env = EnvValue(env, BaseUrlEnvName(kind));
  return NormalizeApiBase(from_env ? *from_env : BuiltinApiBase(kind));
}

bool RequiresApiKey(ProviderKind kind, std::string_view api_base) {
  std::string host = HostOf(Trim(api_base));
  switch (kind) {
    case ProviderKind::kOpenAI:
      return host == "api.openai.com";
    case ProviderKind::kAnthropic:
      return host == "api.anthropic.com";
    case ProviderKind::kOllama:
      return false;
  }
  return false;
}

std::optional<std::string> EnvValue(const Environment& env, std::string_view name) {
  auto it = env.find(std::string(name));
  if (it == env.end()) return std::nullopt;
  std::string_view value = Trim(it->second);
  if (value.empty()) return std::nullopt;
  return std::string(value);
}

std::string DefaultDeploymentId(const Deployment& deployment) {
  return Cat(ProviderName(deployment.provider), "/", deployment.upstream_model);
}

void MakeIdsUnique(std::vector<Deployment>* deployments) {
  std::set<std::string, std::less<>> used;
  for (Deployment& deployment : *deployments) {
    if (used.contains(deployment.id)) {
      for (int n = 2;; ++n) {
        std::string candidate = Cat(deployment.id, "#", n);
        if (!used.contains(candidate)) {
          deployment.id = std::move(candidate);
          break;
        }
      }
    }
    used.insert(deployment.id);
  }
}

std::optional<std::string_view> ClosestMatch(std::string_view word,
                                             const std::vector<std::string_view>& candidates) {
  const size_t limit = word.size() <= 4 ? 1 : 2;
  std::optional<std::string_view> best;
  size_t best_distance = limit + 1;
  for (std::string_view candidate : candidates) {
    size_t distance = EditDistance(AsciiLower(word), candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

void SourceMap::SetSetting(std::string_view key, std::string_view label) {
  settings_.insert_or_assign(std::string(key), std::string(label));
}

std::string SourceMap::Setting(std::string_view key) const {
  auto it = settings_.find(key);
  return it == settings_.end() ? std::string(key) : it->second;
}

void SourceMap::AddDeployment(DeploymentSource source) {
  deployments_.push_back(std::move(source));
}

std::string SourceMap::DeploymentField(size_t index, std::string_view field) const {
  DeploymentSource plain{Cat("deployments[", index, "]"), DeploymentStyle::kPlain, ""};
  const DeploymentSource& source = index < deployments_.size() ? deployments_[index] : plain;
  if (field == "api_base" && !source.api_base_label.empty()) return source.api_base_label;
  switch (source.style) {
    case DeploymentStyle::kPlain:
      break;
    case DeploymentStyle::kFlat:
      if (field == "upstream_model") return Cat(source.path, ".model");
      break;
    case DeploymentStyle::kLiteLLM:
      if (field == "upstream_model") return Cat(source.path, ".litellm_params.model");
      if (field == "priority") return Cat(source.path, ".litellm_params.order");
      if (field == "api_base" || field == "weight" || field == "rpm" || field == "tpm" ||
          field == "input_cost_per_token" || field == "output_cost_per_token") {
        return Cat(source.path, ".litellm_params.", field);
      }
      break;
    case DeploymentStyle::kEnv:
      // The list entry is all the operator wrote; both names come from it.
      if (field == "model_name" || field == "upstream_model") return source.path;
      break;
  }
  return Cat(source.path, ".", field);
}

}  // namespace ailb::config::internal
