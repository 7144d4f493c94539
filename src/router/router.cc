#include "ailb/router/router.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"

namespace ailb::router {
namespace {

constexpr std::string_view kImplementedStrategies[] = {
    "round_robin",       "weighted",       "random",      "failover",     "least_busy",
    "latency_optimized", "cost_optimized", "usage_based", "load_balanced"};
// Deployments whose recent latency is within this fraction of the fastest share its traffic.
constexpr double kLatencyBuffer = 0.10;

// Every deployment of `model` used its rpm/tpm budget in the last 60 s. The 429 is carried
// explicitly so that it is relayed as such after failed fallbacks (see IsDeploymentFault: it
// also lets the request move on to fallback groups).
absl::Status AtRateLimitError(std::string_view model, int retry_after_seconds) {
  return WithRetryAfter(
      WithErrorCode(WithHttpStatus(absl::ResourceExhaustedError(absl::StrCat(
                                       "no deployment of model '", ToAbsl(model),
                                       "' is available: all have used their rate limit (rpm/tpm) "
                                       "in the last 60 s")),
                                   429),
                    "rate_limit_exceeded"),
      retry_after_seconds);
}

}  // namespace

absl::Status CheckStrategyImplemented(std::string_view name) {
  for (std::string_view known : kImplementedStrategies) {
    if (known == name) return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(
      "routing strategy '", ToAbsl(name),
      "' is not implemented in this build (available: round_robin, weighted, random, failover, "
      "least_busy, latency_optimized, cost_optimized, usage_based, load_balanced)"));
}

absl::StatusOr<std::vector<const config::Deployment*>> Router::Plan(const config::Config& config,
                                                                    std::string_view model,
                                                                    bool stream,
                                                                    std::string_view strategy) {
  std::vector<const config::Deployment*> candidates;
  bool model_known = false;
  int cooling = 0;  // left out by their circuit breaker
  int limited = 0;  // left out because they used their rpm/tpm in the last 60 s
  std::chrono::milliseconds soonest = std::chrono::milliseconds::max();
  for (const config::Deployment& deployment : config.deployments) {
    if (deployment.model_name != model) continue;
    model_known = true;
    if (!health_.Admits(deployment.id)) {
      ++cooling;
      soonest = std::min(soonest, health_.TimeUntilAdmitted(deployment.id));
    } else if (usage_ != nullptr && !usage_->Admits(deployment)) {
      ++limited;
      soonest = std::min(soonest, usage_->TimeUntilAdmitted(deployment));
    } else {
      candidates.push_back(&deployment);
    }
  }
  if (!model_known) {
    return WithErrorCode(
        WithErrorParam(absl::NotFoundError(absl::StrCat("The model '", ToAbsl(model),
                                                        "' does not exist or is not served here")),
                       "model"),
        "model_not_found");
  }
  if (candidates.empty()) {
    const int retry_after = static_cast<int>(std::max<int64_t>(1, (soonest.count() + 999) / 1000));
    if (cooling == 0) return AtRateLimitError(model, retry_after);
    const std::string why = limited == 0 ? std::string("all are cooling down after failures")
                                         : absl::StrCat(cooling, " cooling down after failures, ",
                                                        limited, " at their rpm/tpm limit");
    return WithRetryAfter(
        WithErrorCode(absl::UnavailableError(absl::StrCat("no deployment of model '", ToAbsl(model),
                                                          "' is available: ", why)),
                      "no_deployment_available"),
        retry_after);
  }
  const std::string group(model);
  const std::string chosen_strategy =
      strategy.empty() ? config.StrategyFor(model) : std::string(strategy);
  std::vector<std::string> versions;
  for (const config::Deployment* d : candidates) {
    if (!d->version.empty() &&
        std::find(versions.begin(), versions.end(), d->version) == versions.end()) {
      versions.push_back(d->version);
    }
  }
  if (split_ == nullptr || versions.size() < 2) {
    Order(chosen_strategy, group, stream, candidates);
    DemoteRamping(candidates);
    return candidates;
  }
  const std::string chosen = split_->Choose(versions, random_.Uniform());
  std::vector<const config::Deployment*> first;
  std::vector<const config::Deployment*> rest;
  for (const config::Deployment* d : candidates) {
    (d->version.empty() || d->version == chosen ? first : rest).push_back(d);
  }
  Order(chosen_strategy, group, stream, first);
  Order(chosen_strategy, group, stream, rest);
  DemoteRamping(first);
  DemoteRamping(rest);
  first.insert(first.end(), rest.begin(), rest.end());
  return first;
}

absl::Status Router::AcquireDispatch(const config::Deployment& deployment) {
  if (usage_ == nullptr || usage_->TryAcquire(deployment)) return absl::OkStatus();
  const std::chrono::milliseconds wait = usage_->TimeUntilAdmitted(deployment);
  return AtRateLimitError(deployment.model_name,
                          static_cast<int>(std::max<int64_t>(1, (wait.count() + 999) / 1000)));
}

void Router::RecordTokens(const config::Deployment& deployment, int64_t tokens) {
  if (usage_ != nullptr) usage_->RecordTokens(deployment.id, tokens);
}

void Router::DemoteRamping(std::vector<const config::Deployment*>& candidates) {
  if (candidates.size() < 2) return;
  // A deployment ramping back after recovery keeps its place with probability equal to its
  // traffic share; otherwise it moves behind the others (still there as a fallback).
  std::stable_partition(candidates.begin(), candidates.end(), [&](const config::Deployment* d) {
    const double share = health_.TrafficShare(d->id);
    return share >= 1 || random_.Uniform() < share;
  });
}

void Router::OrderByScore(std::vector<const config::Deployment*>& candidates,
                          const std::function<double(const config::Deployment&)>& score,
                          double buffer) {
  std::vector<std::pair<double, const config::Deployment*>> scored;
  for (const config::Deployment* d : candidates) scored.emplace_back(score(*d), d);
  std::sort(scored.begin(), scored.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // Shuffle each run of near-equal scores.
  for (size_t start = 0; start < scored.size();) {
    const double limit = scored[start].first * (1 + buffer);
    size_t end = start + 1;
    while (end < scored.size() && scored[end].first <= limit) ++end;
    for (size_t i = end - 1; i > start; --i) {
      std::swap(scored[i], scored[start + random_.NextU64() % (i - start + 1)]);
    }
    start = end;
  }
  for (size_t i = 0; i < scored.size(); ++i) candidates[i] = scored[i].second;
}

void Router::Order(const std::string& strategy, const std::string& model, bool stream,
                   std::vector<const config::Deployment*>& candidates) {
  if (candidates.size() < 2) return;
  if (strategy == "latency_optimized") {
    // Deployments without samples score 0 and are tried first, so every one gets measured.
    OrderByScore(
        candidates,
        [&](const config::Deployment& d) {
          DeploymentHealth h = health_.Snapshot(d.id);
          return stream && h.recent_ttft_ms > 0 ? h.recent_ttft_ms : h.recent_latency_ms;
        },
        kLatencyBuffer);
    return;
  }
  if (strategy == "cost_optimized") {
    OrderByScore(
        candidates,
        [](const config::Deployment& d) {
          return d.input_cost_per_token + d.output_cost_per_token;
        },
        0);
    return;
  }
  if (strategy == "usage_based") {
    // Share of this minute's token budget used; without a tpm, raw tokens (scaled to rank after
    // any deployment that still has budget).
    OrderByScore(
        candidates,
        [&](const config::Deployment& d) {
          const double tokens = static_cast<double>(health_.Snapshot(d.id).tokens_this_minute);
          return d.tpm > 0 ? tokens / static_cast<double>(d.tpm) : tokens;
        },
        0);
    return;
  }
  if (strategy == "load_balanced") {
    // Power of two choices on in-flight x latency: two random candidates, the lighter first.
    auto load = [&](const config::Deployment* d) {
      DeploymentHealth h = health_.Snapshot(d->id);
      return (h.in_flight + 1) * std::max(1.0, h.recent_latency_ms);
    };
    const size_t a = random_.NextU64() % candidates.size();
    size_t b = random_.NextU64() % (candidates.size() - 1);
    if (b >= a) ++b;
    const size_t winner = load(candidates[a]) <= load(candidates[b]) ? a : b;
    std::swap(candidates[0], candidates[winner]);
    std::vector<const config::Deployment*> rest(candidates.begin() + 1, candidates.end());
    OrderByScore(
        rest, [&](const config::Deployment& d) { return load(&d); }, 0);
    std::copy(rest.begin(), rest.end(), candidates.begin() + 1);
    return;
  }
  if (strategy == "round_robin") {
    uint64_t start;
    {
      std::lock_guard lock(mu_);
      start = round_robin_next_[model]++;
    }
    std::rotate(candidates.begin(), candidates.begin() + start % candidates.size(),
                candidates.end());
  } else if (strategy == "random") {
    for (size_t i = candidates.size() - 1; i > 0; --i) {
      std::swap(candidates[i], candidates[random_.NextU64() % (i + 1)]);
    }
  } else if (strategy == "failover") {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const config::Deployment* a, const config::Deployment* b) {
                       return a->priority < b->priority;
                     });
  } else if (strategy == "least_busy") {
    std::vector<std::pair<std::pair<int, uint64_t>, const config::Deployment*>> keyed;
    for (const config::Deployment* d : candidates) {
      keyed.push_back({{health_.Snapshot(d->id).in_flight, random_.NextU64()}, d});
    }
    std::sort(keyed.begin(), keyed.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < keyed.size(); ++i) candidates[i] = keyed[i].second;
  } else {
    // weighted: sampling without replacement in proportion to weight (Efraimidis-Spirakis):
    // the first choice follows the weights exactly; the rest is the fallback order.
    std::vector<std::pair<double, const config::Deployment*>> keyed;
    for (const config::Deployment* d : candidates) {
      const double u = std::max(random_.Uniform(), 1e-300);
      const double key = d->weight > 0 ? std::log(u) / d->weight : -INFINITY;
      keyed.emplace_back(key, d);
    }
    std::stable_sort(keyed.begin(), keyed.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = 0; i < keyed.size(); ++i) candidates[i] = keyed[i].second;
  }
}

}  // namespace ailb::router
