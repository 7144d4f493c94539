// Blue/green traffic weights between deployment versions. Deployments carry a version tag; a
// model group that has several versions sends each version its weight's share of requests.
// Weights are persisted (a small JSON file written atomically) so they survive restarts.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "ailb/common/clock.h"

namespace ailb::router {

struct SplitState {
  std::map<std::string, int> weights;  // version -> percent; sums to 100 when non-empty
  std::string previous_active;         // the active version before the last change
  std::string target;                  // the version the last change moved traffic towards
  WallTime changed_at;
};

// Thread-safe.
class TrafficSplit {
 public:
  // `state_file` empty: nothing is persisted.
  TrafficSplit(const Clock& clock, std::string state_file);

  // Reads the persisted weights, if any. A corrupt file is reported and ignored.
  absl::Status Load();

  // Makes the known versions those of the configuration: versions that disappeared are dropped,
  // new ones start at 0 % (the first version seen gets 100 % when nothing has weight).
  void SyncVersions(const std::vector<std::string>& versions);

  SplitState State() const;
  // The version with the largest weight ("" when there are none).
  std::string ActiveVersion() const;

  // Gives `version` `weight` percent; the other versions share the rest in proportion to their
  // current weights (equally when they have none). NotFound / InvalidArgument change nothing.
  absl::StatusOr<SplitState> SetWeight(const std::string& version, int weight);
  // Restores the weights before the last change; with `target_version`, sends it everything.
  absl::StatusOr<SplitState> Rollback(const std::string& target_version);

  // Picks a version among `present` (versions that have a deployment in the group) by weight,
  // using `uniform` in [0, 1). Versions unknown to the split count as weight 0; when all present
  // weights are 0 the first present version is returned.
  std::string Choose(const std::vector<std::string>& present, double uniform) const;

 private:
  absl::Status Persist() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string ActiveLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const std::string state_file_;
  mutable std::mutex mu_;
  SplitState state_ ABSL_GUARDED_BY(mu_);
  std::vector<SplitState> history_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
