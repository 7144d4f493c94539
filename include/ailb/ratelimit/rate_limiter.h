// Token-bucket rate limits set at run time (the control plane's SetRateLimit) and enforced by the
// data plane at admission.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ailb/common/clock.h"

namespace ailb::ratelimit {

struct RateLimitSpec {
  std::string id;
  // "*" (all traffic together), "model:<public name>", "ip:<client address>", or an API key
  // ("key:<key>", "key:sha256:<hex>", or the bare key). Keys are stored hashed.
  std::string target;
  int64_t requests_per_second = 0;  // 0 = no limit on this window
  int64_t requests_per_minute = 0;
  int64_t requests_per_hour = 0;
  int64_t burst_size = 0;  // extra capacity of the per-second bucket (0 = the rate)
  bool enabled = true;
  std::map<std::string, std::string> metadata;
};

// Who is asking, as the data plane sees it.
struct Requester {
  std::string api_key;  // "" when none was presented
  std::string model;
  std::string ip;
};

// Thread-safe.
class RateLimiter {
 public:
  explicit RateLimiter(const Clock& clock) : clock_(clock) {}

  // Adds or replaces (by id; an empty id gets one) a limit. InvalidArgument for a bad target or
  // rates. Returns the id.
  absl::StatusOr<std::string> Set(RateLimitSpec spec);
  // NotFound when there is no such limit.
  absl::Status Remove(const std::string& id);
  // Every limit, or those whose target equals `target` (API keys compared hashed).
  std::vector<RateLimitSpec> List(const std::string& target = "") const;

  // Takes one request from every enabled limit that applies to `who`. ResourceExhausted with a
  // Retry-After payload (whole seconds until it would be admitted) when any is empty; nothing is
  // taken then. The failing limit's target is returned in `limited_target`.
  absl::Status Admit(const Requester& who, std::string* limited_target = nullptr);

 private:
  struct Bucket {
    double capacity = 0;
    double tokens = 0;
    double refill_per_second = 0;
  };
  struct Limit {
    RateLimitSpec spec;
    std::vector<Bucket> buckets;
    SteadyTime refilled_at;
  };
  bool Applies(const Limit& limit, const Requester& who, const std::string& key_hash) const;

  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, Limit> limits_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

// Normalises a target as stored: API keys become "key:sha256:<hex>". InvalidArgument when the
// target is empty or malformed.
absl::StatusOr<std::string> NormalizeTarget(const std::string& target);

}  // namespace ailb::ratelimit
