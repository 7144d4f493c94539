// API keys for the data plane and their limits: who may call, which models, how fast (rpm/tpm)
// and how much (token and cost budgets per UTC day and month).
//
// Keys come from configuration (plain or "sha256:<hex>") or are created through the admin API;
// created keys are stored hashed in SQLite and shown in full only once. Only SHA-256 digests are
// kept in memory. Spend is counted in memory and written to SQLite by a flusher (at most
// `flush_interval` behind), so budgets survive restarts.
//
// Budgets are enforced at admission with reservations: a request is admitted while the spend so
// far plus what requests already in flight have reserved stays under the budget, and it reserves
// its own estimate until it finishes and settles its real usage. With estimates that are not below
// real usage, concurrent requests overspend a budget by at most one request.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/config/config.h"

namespace ailb::storage {
class Database;
}

namespace ailb::auth {

using config::KeyLimits;

struct Usage {
  int64_t requests = 0;
  int64_t tokens = 0;
  double cost_usd = 0;
};

// What an administrator sees of a key (never the key itself).
struct KeyInfo {
  std::string id;
  std::string name;
  std::string key_prefix;  // the first characters of a created key, to recognise it; "" for
                           // keys configured hashed
  std::string source;      // "config" or "admin"
  KeyLimits limits;
  int64_t created_unix = 0;
  std::string today;       // UTC day of `usage_today`, YYYY-MM-DD
  std::string this_month;  // YYYY-MM
  Usage usage_today;
  Usage usage_this_month;
  int in_flight = 0;
};

enum class Role {
  kAnonymous,  // no keys are configured: the data plane is open
  kClient,     // a data-plane key, subject to its limits
  kAdmin,      // the admin key: every endpoint, no limits
};

struct Principal {
  Role role = Role::kAnonymous;
  std::string key_id;  // for kClient
  std::string name;    // for kClient
};

// A request's estimated usage, reserved against budgets while it runs.
struct Estimate {
  int64_t tokens = 0;
  double cost_usd = 0;
};

class KeyStore;

// An admitted request's reservation. Settle records real usage; destroying an unsettled grant
// releases the reservation with nothing spent. Move-only; not thread-safe (one request owns it).
class Grant {
 public:
  Grant() = default;
  Grant(Grant&& other) noexcept { *this = std::move(other); }
  Grant& operator=(Grant&& other) noexcept;
  Grant(const Grant&) = delete;
  Grant& operator=(const Grant&) = delete;
  ~Grant();

  void Settle(int64_t tokens, double cost_usd);
  const std::string& key_id() const { return key_id_; }

 private:
  friend class KeyStore;
  KeyStore* store_ = nullptr;
  std::string key_id_;
  Estimate reserved_;
};

struct ConfiguredKey {
  std::string key;  // plain, or "sha256:<64 hex>"
  std::string name;
  KeyLimits limits;
};

// Thread-safe. Authenticate and Admit touch memory only (safe on a reactor thread); Create,
// Update, Revoke, Flush and Open do SQLite I/O and belong on a worker thread.
class KeyStore {
 public:
  // `database_path` "" keeps created keys and spend in memory only.
  static absl::StatusOr<std::unique_ptr<KeyStore>> Open(const std::string& database_path,
                                                        const Clock& clock);
  ~KeyStore();

  // Replaces the configured keys and the admin key (plain, "sha256:<hex>" or ""). Spend and
  // reservations of keys that stay are kept.
  void SetConfigured(const std::vector<ConfiguredKey>& keys, const std::string& admin_key);

  // True when no key of any kind exists: the data plane is open.
  bool DataPlaneOpen() const;
  bool HasAdminKey() const;

  // Unauthenticated ("missing_api_key" / "invalid_api_key") unless the key is known; with no keys
  // at all, an anonymous principal.
  absl::StatusOr<Principal> Authenticate(const std::optional<std::string>& presented) const;

  // Checks `who` may send a request for `model` now: PermissionDenied ("model_not_allowed") for a
  // model outside the key's allow-list; ResourceExhausted with Retry-After for rpm/tpm
  // ("rate_limit_exceeded") and exhausted budgets ("insufficient_quota"). On success the
  // estimate is reserved until the grant settles.
  absl::StatusOr<Grant> Admit(const Principal& who, std::string_view model,
                              const Estimate& estimate);

  // Creates a key; returns its description and the key itself (shown once). Blocking.
  absl::StatusOr<std::pair<KeyInfo, std::string>> Create(const std::string& name,
                                                         const KeyLimits& limits);
  std::vector<KeyInfo> List() const;
  absl::StatusOr<KeyInfo> Get(std::string_view id) const;
  // Replaces a created key's name (when non-empty) and limits. FailedPrecondition for configured
  // keys (change the configuration instead). Blocking.
  absl::StatusOr<KeyInfo> Update(std::string_view id, const std::string& name,
                                 const KeyLimits& limits);
  // Revokes a created key at once. Blocking.
  absl::Status Revoke(std::string_view id);

  // Writes spend not yet written. Blocking.
  absl::Status Flush();
  // Flushes every `interval` on a background thread until destruction.
  void StartFlusher(std::chrono::milliseconds interval);

 private:
  friend class Grant;
  struct Window {
    std::deque<SteadyTime> requests;                    // last minute, for rpm
    std::deque<std::pair<SteadyTime, int64_t>> tokens;  // last minute, for tpm
    int64_t token_sum = 0;
  };
  struct Entry {
    KeyInfo info;
    std::string digest;  // lowercase hex SHA-256 of the key
    Window window;
    Estimate reserved;
  };
  struct Pending {  // spend not yet in SQLite, by (key id, period)
    Usage usage;
  };

  KeyStore(std::unique_ptr<storage::Database> db, const Clock& clock);
  absl::Status LoadStored();
  void Release(const std::string& key_id, const Estimate& reserved, int64_t tokens, double cost)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Rolls the entry's day and month over when the UTC date moved on.
  void Roll(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Trim(Window& window, SteadyTime now) const;
  // The created (not configured) key `id`: NotFound, or FailedPrecondition saying to do
  // `instead` in the configuration.
  absl::StatusOr<const Entry*> FindCreated(std::string_view id, std::string_view instead) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunFlusher(std::chrono::milliseconds interval);

  const Clock& clock_;
  std::unique_ptr<storage::Database> db_ ABSL_PT_GUARDED_BY(db_mu_);
  mutable std::mutex db_mu_;  // serialises SQLite use; never held with mu_ across I/O

  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_ ABSL_GUARDED_BY(mu_);  // by id
  absl::flat_hash_map<std::string, std::string> id_by_digest_ ABSL_GUARDED_BY(mu_);
  std::string admin_digest_ ABSL_GUARDED_BY(mu_);
  // Spend read from SQLite for the current periods, for configured keys that appear later.
  std::map<std::pair<std::string, std::string>, Usage> stored_usage_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, Usage> pending_ ABSL_GUARDED_BY(mu_);

  std::mutex flusher_mu_;
  std::condition_variable flusher_wake_;
  bool stopping_ ABSL_GUARDED_BY(flusher_mu_) = false;
  std::thread flusher_;
};

// "YYYY-MM-DD" and "YYYY-MM" of `time` in UTC.
std::string UtcDay(WallTime time);
std::string UtcMonth(WallTime time);

}  // namespace ailb::auth
