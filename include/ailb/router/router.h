// Chooses which deployments serve a request, in the order they should be tried.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "ailb/common/random.h"
#include "ailb/config/config.h"
#include "ailb/router/health.h"
#include "ailb/router/traffic_split.h"
#include "ailb/router/usage_limiter.h"

namespace ailb::router {

// OK when this build implements the strategy `name`, Unimplemented (naming the ones it has)
// otherwise.
absl::Status CheckStrategyImplemented(std::string_view name);

// Thread-safe.
class Router {
 public:
  // `split` (optional) applies blue/green weights on top of every strategy. `usage` (optional)
  // enforces each deployment's rpm/tpm: one at its limit is left out of plans.
  Router(HealthTracker& health, RandomSource& random, const TrafficSplit* split = nullptr,
         UsageLimiter* usage = nullptr)
      : health_(health), random_(random), split_(split), usage_(usage) {}

  // The deployments of model group `model` that admit traffic now, best first by the
  // configured strategy. When the group's deployments carry several versions, one version is
  // chosen by the blue/green weights and its deployments (and untagged ones) come first; the
  // other versions follow as fallback. NotFound for an unknown model; ResourceExhausted (429,
  // with Retry-After) when every deployment of the group is at its rpm/tpm limit; Unavailable
  // (with Retry-After) when none admits traffic and some are cooling down. The pointers live as
  // long as `config`.
  // `stream` selects time to first byte rather than total latency for latency_optimized.
  // `strategy` overrides the group's configured strategy (a per-request header); it must be
  // one CheckStrategyImplemented accepts. Deployments ramping back after recovery are demoted
  // in proportion to their traffic share.
  absl::StatusOr<std::vector<const config::Deployment*>> Plan(const config::Config& config,
                                                              std::string_view model,
                                                              bool stream = false,
                                                              std::string_view strategy = {});

  // Counts a request dispatched to `deployment` against its rpm. ResourceExhausted (429, with
  // Retry-After; nothing counted) when it has reached its rpm or tpm since it was planned.
  // Always OK without a UsageLimiter.
  absl::Status AcquireDispatch(const config::Deployment& deployment);
  // Tokens (prompt + completion) `deployment` served, against its tpm.
  void RecordTokens(const config::Deployment& deployment, int64_t tokens);
  // The usage limiter, or null.
  const UsageLimiter* usage() const { return usage_; }

 private:
  void DemoteRamping(std::vector<const config::Deployment*>& candidates);
  void Order(const std::string& strategy, const std::string& model, bool stream,
             std::vector<const config::Deployment*>& candidates);
  // Sorts by `score` (lower first); ties and scores within `buffer` (a fraction of the best
  // score) of each other are shuffled, so near-equal deployments share load.
  void OrderByScore(std::vector<const config::Deployment*>& candidates,
                    const std::function<double(const config::Deployment&)>& score, double buffer);

  HealthTracker& health_;
  RandomSource& random_;
  const TrafficSplit* const split_;
  UsageLimiter* const usage_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, uint64_t> round_robin_next_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
