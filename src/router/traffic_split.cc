#include "ailb/router/traffic_split.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "ailb/common/strings.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ailb::router {
namespace {

constexpr size_t kMaxHistory = 32;

// Writes `data` to `path` so that a crash leaves either the old or the new file: write a
// temporary file, fsync it, rename it over the old one, fsync the directory.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data) {
  const std::string temp = path + ".tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot write ", temp));
  const bool written = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!written || !synced || std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

// Scales `weights` to sum to `target` in proportion to their values (equally when all are 0),
// rounding by largest remainder so the sum is exact.
void Apportion(std::map<std::string, int>& weights, int target) {
  if (weights.empty()) return;
  int total = 0;
  for (const auto& [version, weight] : weights) total += weight;
  std::vector<std::pair<double, std::string>> remainders;
  int assigned = 0;
  for (auto& [version, weight] : weights) {
    const double share = total > 0 ? static_cast<double>(target) * weight / total
                                   : static_cast<double>(target) / weights.size();
    weight = static_cast<int>(std::floor(share));
    assigned += weight;
    remainders.emplace_back(share - std::floor(share), version);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < target && i < remainders.size(); ++i, ++assigned) {
    weights[remainders[i].second]++;
  }
}

}  // namespace

TrafficSplit::TrafficSplit(const Clock& clock, std::string state_file)
    : clock_(clock), state_file_(std::move(state_file)) {
  state_.changed_at = clock_.WallNow();
}

absl::Status TrafficSplit::Load() {
  if (state_file_.empty()) return absl::OkStatus();
  std::ifstream in(state_file_);
  if (!in) return absl::OkStatus();  // nothing persisted yet
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("weights") ||
      !doc["weights"].is_object()) {
    return absl::DataLossError(absl::StrCat(state_file_, " is corrupt; ignoring it"));
  }
  std::lock_guard lock(mu_);
  state_.weights.clear();
  for (const auto& [version, weight] : doc["weights"].items()) {
    if (weight.is_number_integer()) state_.weights[version] = std::clamp(weight.get<int>(), 0, 100);
  }
  if (doc.contains("previous_active") && doc["previous_active"].is_string()) {
    state_.previous_active = doc["previous_active"].get<std::string>();
  }
  if (doc.contains("target") && doc["target"].is_string()) {
    state_.target = doc["target"].get<std::string>();
  }
  if (doc.contains("changed_at_ms") && doc["changed_at_ms"].is_number_integer()) {
    state_.changed_at = WallTime(std::chrono::milliseconds(doc["changed_at_ms"].get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status TrafficSplit::Persist() const {
  if (state_file_.empty()) return absl::OkStatus();
  nlohmann::json doc = {{"weights", state_.weights},
                        {"previous_active", state_.previous_active},
                        {"target", state_.target},
                        {"changed_at_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                              state_.changed_at.time_since_epoch())
                                              .count()}};
  return WriteFileAtomically(state_file_, doc.dump(2));
}

void TrafficSplit::SyncVersions(const std::vector<std::string>& versions) {
  std::lock_guard lock(mu_);
  std::map<std::string, int> next;
  int total = 0;
  for (const std::string& version : versions) {
    auto it = state_.weights.find(version);
    next[version] = it == state_.weights.end() ? 0 : it->second;
    total += next[version];
  }
  if (!versions.empty() && total == 0) {
    next[versions.front()] = 100;
  } else if (total != 100) {
    // A version went away: its share goes to the others in proportion.
    Apportion(next, 100);
  }
  if (next != state_.weights) {
    state_.weights = std::move(next);
    absl::Status persisted = Persist();
    if (!persisted.ok()) spdlog::warn("traffic weights: {}", persisted.message());
  }
}

SplitState TrafficSplit::State() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string TrafficSplit::ActiveLocked() const {
  std::string active;
  int best = -1;
  for (const auto& [version, weight] : state_.weights) {
    if (weight > best) {
      best = weight;
      active = version;
    }
  }
  return active;
}

std::string TrafficSplit::ActiveVersion() const {
  std::lock_guard lock(mu_);
  return ActiveLocked();
}

absl::StatusOr<SplitState> TrafficSplit::SetWeight(const std::string& version, int weight) {
  if (weight < 0 || weight > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight must be between 0 and 100, got ", weight));
  }
  std::lock_guard lock(mu_);
  if (!state_.weights.count(version)) {
    return absl::NotFoundError(absl::StrCat("no deployment has version '", version, "'"));
  }
  if (state_.weights.size() == 1 && weight != 100) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", version, "' is the only version: it must keep 100 % of the traffic"));
  }
  SplitState next = state_;
  next.previous_active = ActiveLocked();
  next.target = version;
  next.changed_at = clock_.WallNow();
  // The other versions share the rest in proportion to their current weights.
  std::map<std::string, int> others = state_.weights;
  others.erase(version);
  Apportion(others, 100 - weight);
  next.weights = std::move(others);
  next.weights[version] = weight;
  history_.push_back(state_);
  if (history_.size() > kMaxHistory) history_.erase(history_.begin());
  state_ = std::move(next);
  absl::Status persisted = Persist();
  if (!persisted.ok()) return persisted;
  return state_;
}

absl::StatusOr<SplitState> TrafficSplit::Rollback(const std::string& target_version) {
  std::lock_guard lock(mu_);
  SplitState next;
  if (!target_version.empty()) {
    if (!state_.weights.count(target_version)) {
      return absl::NotFoundError(absl::StrCat("no deployment has version '", target_version, "'"));
    }
    next = state_;
    for (auto& [v, w] : next.weights) w = v == target_version ? 100 : 0;
  } else {
    if (history_.empty()) {
      return absl::FailedPreconditionError("no earlier traffic weights to roll back to");
    }
    next = history_.back();
    history_.pop_back();
    // Versions may have changed since: keep only the current ones.
    for (auto it = next.weights.begin(); it != next.weights.end();) {
      it = state_.weights.count(it->first) ? std::next(it) : next.weights.erase(it);
    }
  }
  next.previous_active = ActiveLocked();
  next.target = target_version.empty() ? std::string() : target_version;
  next.changed_at = clock_.WallNow();
  state_ = std::move(next);
  absl::Status persisted = Persist();
  if (!persisted.ok()) return persisted;
  return state_;
}

std::string TrafficSplit::Choose(const std::vector<std::string>& present, double uniform) const {
  if (present.empty()) return "";
  std::lock_guard lock(mu_);
  int total = 0;
  for (const std::string& v : present) {
    auto it = state_.weights.find(v);
    total += it == state_.weights.end() ? 0 : it->second;
  }
  if (total == 0) return present.front();
  double point = uniform * total;
  for (const std::string& v : present) {
    auto it = state_.weights.find(v);
    const int weight = it == state_.weights.end() ? 0 : it->second;
    if (point < weight) return v;
    point -= weight;
  }
  return present.back();
}

}  // namespace ailb::router
