#include "ailb/router/usage_limiter.h"

#include <algorithm>

#include "ailb/common/strings.h"

namespace ailb::router {
namespace {

int64_t SlotIndex(SteadyTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() /
         UsageLimiter::kSlot.count();
}

}  // namespace

SteadyTime UsageLimiter::Expiry(int64_t index) {
  return SteadyTime(std::chrono::duration_cast<SteadyTime::duration>(kSlot * (index + 1))) +
         kWindow;
}

bool UsageLimiter::UnderLimits(const Usage& usage, const config::Deployment& deployment) {
  return (deployment.rpm <= 0 || usage.requests < deployment.rpm) &&
         (deployment.tpm <= 0 || usage.tokens < deployment.tpm);
}

UsageLimiter::Entry* UsageLimiter::Current(std::string_view id, SteadyTime now) const {
  auto it = entries_.find(ToAbsl(id));
  if (it == entries_.end()) return nullptr;
  Entry& entry = it->second;
  while (!entry.slots.empty() && Expiry(entry.slots.front().index) <= now) {
    entry.total.requests -= entry.slots.front().requests;
    entry.total.tokens -= entry.slots.front().tokens;
    entry.slots.pop_front();
  }
  if (entry.slots.empty()) {
    // Forget idle deployments (and ids that a reload removed).
    entries_.erase(it);
    return nullptr;
  }
  return &entry;
}

UsageLimiter::Slot& UsageLimiter::SlotFor(Entry& entry, SteadyTime now) const {
  const int64_t index = SlotIndex(now);
  if (entry.slots.empty() || entry.slots.back().index < index) {
    entry.slots.push_back(Slot{index, 0, 0});
  }
  // The steady clock never goes back, so the newest slot is now's.
  return entry.slots.back();
}

bool UsageLimiter::Admits(const config::Deployment& deployment) const {
  if (deployment.rpm <= 0 && deployment.tpm <= 0) return true;
  std::lock_guard lock(mu_);
  const Entry* entry = Current(deployment.id, clock_.Now());
  return entry == nullptr || UnderLimits(entry->total, deployment);
}

bool UsageLimiter::TryAcquire(const config::Deployment& deployment) {
  const SteadyTime now = clock_.Now();
  std::lock_guard lock(mu_);
  Entry* entry = Current(deployment.id, now);
  if (entry != nullptr && !UnderLimits(entry->total, deployment)) return false;
  if (entry == nullptr) entry = &entries_[deployment.id];
  SlotFor(*entry, now).requests++;
  entry->total.requests++;
  return true;
}

void UsageLimiter::RecordTokens(std::string_view id, int64_t tokens) {
  if (tokens <= 0) return;
  const SteadyTime now = clock_.Now();
  std::lock_guard lock(mu_);
  Entry* entry = Current(id, now);
  if (entry == nullptr) entry = &entries_[std::string(id)];
  SlotFor(*entry, now).tokens += tokens;
  entry->total.tokens += tokens;
}

std::chrono::milliseconds UsageLimiter::TimeUntilAdmitted(
    const config::Deployment& deployment) const {
  const SteadyTime now = clock_.Now();
  std::lock_guard lock(mu_);
  const Entry* entry = Current(deployment.id, now);
  if (entry == nullptr || UnderLimits(entry->total, deployment)) {
    return std::chrono::milliseconds(0);
  }
  // The oldest usage leaves first: find the slot whose expiry brings the deployment back under.
  Usage left = entry->total;
  for (const Slot& slot : entry->slots) {
    left.requests -= slot.requests;
    left.tokens -= slot.tokens;
    if (UnderLimits(left, deployment)) {
      return std::max(std::chrono::milliseconds(1),
                      std::chrono::ceil<std::chrono::milliseconds>(Expiry(slot.index) - now));
    }
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(kWindow);  // not reached
}

UsageLimiter::Usage UsageLimiter::InWindow(std::string_view id) const {
  std::lock_guard lock(mu_);
  const Entry* entry = Current(id, clock_.Now());
  return entry == nullptr ? Usage{} : entry->total;
}

}  // namespace ailb::router
