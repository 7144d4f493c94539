// Per-deployment rate limits: a deployment's configured `rpm` (requests) and `tpm` (prompt +
// completion tokens) are budgets over a sliding 60 s window, as in LiteLLM. A deployment that has
// used either budget in the last 60 s takes no new request until enough of that usage has aged
// out; the router plans around it, and a model group whose every deployment is at its limit is
// answered 429 with Retry-After. A limit of 0 means none.
//
//   UsageLimiter usage(clock);
//   Router router(health, random, &split, &usage);   // Plan skips deployments at their limit
//   if (usage.TryAcquire(deployment)) { /* send */ }  // counts the request as it is dispatched
//   usage.RecordTokens(deployment.id, prompt + completion);  // when the reply is complete
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "ailb/common/clock.h"
#include "ailb/config/config.h"

namespace ailb::router {

// Thread-safe. Memory is bounded: at most one slot per 100 ms of the window per deployment that
// has usage in it.
class UsageLimiter {
 public:
  static constexpr std::chrono::seconds kWindow{60};
  // Usage is counted in slots of this length; a slot leaves the window once its end is
  // kWindow old, so a request is counted for at least kWindow (never less).
  static constexpr std::chrono::milliseconds kSlot{100};

  explicit UsageLimiter(const Clock& clock) : clock_(clock) {}

  // Whether `deployment` is under its rpm and tpm now (always true when both are 0).
  bool Admits(const config::Deployment& deployment) const ABSL_LOCKS_EXCLUDED(mu_);
  // When `deployment` is under its limits, counts one request to it now and returns true;
  // otherwise counts nothing and returns false. One step, so concurrent dispatches cannot
  // together exceed rpm.
  bool TryAcquire(const config::Deployment& deployment) ABSL_LOCKS_EXCLUDED(mu_);
  // Counts tokens (prompt + completion) that deployment `id` served, now.
  void RecordTokens(std::string_view id, int64_t tokens) ABSL_LOCKS_EXCLUDED(mu_);
  // Time until `deployment` is under its limits again: zero when it is now.
  std::chrono::milliseconds TimeUntilAdmitted(const config::Deployment& deployment) const
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Usage {
    int64_t requests = 0;
    int64_t tokens = 0;
  };
  // What deployment `id` has used in the window ending now.
  Usage InWindow(std::string_view id) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Slot {
    int64_t index = 0;  // covers [index * kSlot, (index + 1) * kSlot) of the steady clock
    int64_t requests = 0;
    int64_t tokens = 0;
  };
  struct Entry {
    std::deque<Slot> slots;  // oldest first
    Usage total;             // sum over `slots`
  };

  // The entry of `id` with slots that have left the window dropped; null when it has no usage.
  Entry* Current(std::string_view id, SteadyTime now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Slot& SlotFor(Entry& entry, SteadyTime now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool UnderLimits(const Usage& usage, const config::Deployment& deployment);
  // When slot `index` leaves the window.
  static SteadyTime Expiry(int64_t index);

  const Clock& clock_;
  mutable std::mutex mu_;
  // Pruned as it is read, hence mutable.
  mutable absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
