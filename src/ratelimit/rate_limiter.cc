#include "ailb/ratelimit/rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/hash.h"
#include "ailb/common/status.h"

namespace ailb::ratelimit {
namespace {

constexpr char kKeyHashPrefix[] = "key:sha256:";

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

absl::StatusOr<std::string> NormalizeTarget(const std::string& target) {
  if (target.empty()) return absl::InvalidArgumentError("rate limit target is empty");
  if (target == "*") return target;
  for (const char* prefix : {"model:", "ip:"}) {
    if (absl::StartsWith(target, prefix)) {
      if (target.size() == std::string(prefix).size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("rate limit target '", target, "' names no ", prefix));
      }
      return target;
    }
  }
  if (absl::StartsWith(target, kKeyHashPrefix)) {
    std::string hex = target.substr(sizeof(kKeyHashPrefix) - 1);
    if (!IsHex64(hex)) {
      return absl::InvalidArgumentError("key:sha256: must be followed by 64 lowercase hex digits");
    }
    return target;
  }
  std::string key = absl::StartsWith(target, "key:") ? target.substr(4) : target;
  if (key.empty()) return absl::InvalidArgumentError("rate limit target 'key:' names no key");
  return absl::StrCat(kKeyHashPrefix, Sha256Hex(key));
}

absl::StatusOr<std::string> RateLimiter::Set(RateLimitSpec spec) {
  if (spec.requests_per_second < 0 || spec.requests_per_minute < 0 || spec.requests_per_hour < 0 ||
      spec.burst_size < 0) {
    return absl::InvalidArgumentError("rates and burst_size must be >= 0");
  }
  if (spec.requests_per_second == 0 && spec.requests_per_minute == 0 &&
      spec.requests_per_hour == 0) {
    return absl::InvalidArgumentError(
        "a rate limit needs requests_per_second, requests_per_minute or requests_per_hour > 0");
  }
  absl::StatusOr<std::string> target = NormalizeTarget(spec.target);
  if (!target.ok()) return target.status();
  spec.target = *target;

  Limit limit;
  auto add_bucket = [&](int64_t rate, double window_seconds, int64_t burst) {
    if (rate <= 0) return;
    Bucket bucket;
    bucket.capacity = static_cast<double>(std::max(rate, burst));
    bucket.tokens = bucket.capacity;
    bucket.refill_per_second = static_cast<double>(rate) / window_seconds;
    limit.buckets.push_back(bucket);
  };
  add_bucket(spec.requests_per_second, 1, spec.burst_size);
  add_bucket(spec.requests_per_minute, 60, 0);
  add_bucket(spec.requests_per_hour, 3600, 0);
  limit.refilled_at = clock_.Now();

  std::lock_guard lock(mu_);
  if (spec.id.empty()) {
    do {
      spec.id = absl::StrCat("limit-", next_id_++);
    } while (limits_.count(spec.id));
  }
  limit.spec = spec;
  limits_[spec.id] = std::move(limit);
  return spec.id;
}

absl::Status RateLimiter::Remove(const std::string& id) {
  std::lock_guard lock(mu_);
  if (limits_.erase(id) == 0) {
    return absl::NotFoundError(absl::StrCat("no rate limit with id '", id, "'"));
  }
  return absl::OkStatus();
}

std::vector<RateLimitSpec> RateLimiter::List(const std::string& target) const {
  std::string wanted;
  if (!target.empty()) {
    absl::StatusOr<std::string> normalized = NormalizeTarget(target);
    if (!normalized.ok()) return {};
    wanted = *normalized;
  }
  std::lock_guard lock(mu_);
  std::vector<RateLimitSpec> out;
  for (const auto& [id, limit] : limits_) {
    if (wanted.empty() || limit.spec.target == wanted) out.push_back(limit.spec);
  }
  return out;
}

bool RateLimiter::Applies(const Limit& limit, const Requester& who,
                          const std::string& key_hash) const {
  const std::string& target = limit.spec.target;
  if (target == "*") return true;
  if (absl::StartsWith(target, "model:"))
    return target.compare(6, std::string::npos, who.model) == 0;
  if (absl::StartsWith(target, "ip:")) return target.compare(3, std::string::npos, who.ip) == 0;
  return !key_hash.empty() && target == key_hash;
}

absl::Status RateLimiter::Admit(const Requester& who, std::string* limited_target) {
  const std::string key_hash =
      who.api_key.empty() ? "" : absl::StrCat(kKeyHashPrefix, Sha256Hex(who.api_key));
  const SteadyTime now = clock_.Now();
  std::lock_guard lock(mu_);
  std::vector<Bucket*> to_take;
  double wait_seconds = 0;
  const Limit* failing = nullptr;
  for (auto& [id, limit] : limits_) {
    if (!limit.spec.enabled || !Applies(limit, who, key_hash)) continue;
    const double elapsed = std::chrono::duration<double>(now - limit.refilled_at).count();
    limit.refilled_at = now;
    for (Bucket& bucket : limit.buckets) {
      bucket.tokens = std::min(bucket.capacity, bucket.tokens + elapsed * bucket.refill_per_second);
      if (bucket.tokens < 1) {
        const double wait = (1 - bucket.tokens) / bucket.refill_per_second;
        if (wait > wait_seconds) {
          wait_seconds = wait;
          failing = &limit;
        }
      }
      to_take.push_back(&bucket);
    }
  }
  if (failing != nullptr) {
    if (limited_target) *limited_target = failing->spec.target;
    return WithRetryAfter(
        WithErrorCode(absl::ResourceExhaustedError(absl::StrCat("rate limit '", failing->spec.id,
                                                                "' exceeded; retry later")),
                      "rate_limit_exceeded"),
        static_cast<int>(std::ceil(wait_seconds)));
  }
  for (Bucket* bucket : to_take) bucket->tokens -= 1;
  return absl::OkStatus();
}

}  // namespace ailb::ratelimit
