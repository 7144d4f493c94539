#include "ailb/auth/key_store.h"

#include <sys/random.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ailb/common/hash.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/storage/sqlite.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ailb::auth {
namespace {

using json = nlohmann::json;
using storage::Database;
using storage::Statement;

constexpr std::string_view kSha256Prefix = "sha256:";
constexpr std::string_view kCreatedKeyPrefix = "sk-ailb-";
constexpr size_t kShownPrefixLength = 12;  // "sk-ailb-" and four characters of the secret
constexpr auto kMinute = std::chrono::seconds(60);

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  key_sha256 TEXT NOT NULL UNIQUE,
  key_prefix TEXT NOT NULL,
  limits TEXT NOT NULL,
  created_unix INTEGER NOT NULL,
  revoked_unix INTEGER
);
CREATE TABLE IF NOT EXISTS api_key_usage (
  key_id TEXT NOT NULL,
  period TEXT NOT NULL,
  requests INTEGER NOT NULL,
  tokens INTEGER NOT NULL,
  cost_usd REAL NOT NULL,
  PRIMARY KEY (key_id, period)
);
)sql";

std::tm UtcTm(WallTime time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  return parts;
}

// Whole seconds until the next UTC midnight (`month`: the first of the next month).
int SecondsUntilReset(WallTime now, bool month) {
  std::tm parts = UtcTm(now);
  parts.tm_hour = 0;
  parts.tm_min = 0;
  parts.tm_sec = 0;
  if (month) {
    parts.tm_mday = 1;
    parts.tm_mon += 1;
  } else {
    parts.tm_mday += 1;
  }
  const std::time_t reset = timegm(&parts);
  const std::time_t current = std::chrono::system_clock::to_time_t(now);
  return static_cast<int>(std::max<std::time_t>(1, reset - current));
}

// Lowercase hex digest of a configured key ("sha256:<hex>" is taken as the digest).
std::string DigestOfConfigured(std::string_view key) {
  if (absl::StartsWith(ToAbsl(key), ToAbsl(kSha256Prefix))) {
    return absl::AsciiStrToLower(ToAbsl(key.substr(kSha256Prefix.size())));
  }
  return Sha256Hex(key);
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t filled = 0;
  while (filled < bytes) {
    const ssize_t got = getrandom(raw.data() + filled, bytes - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError("getrandom failed: the kernel gave no random bytes");
    }
    filled += static_cast<size_t>(got);
  }
  std::string hex;
  hex.reserve(bytes * 2);
  for (unsigned char c : raw) absl::StrAppend(&hex, absl::Hex(c, absl::kZeroPad2));
  return hex;
}

json LimitsToJson(const KeyLimits& limits) {
  return {{"models", limits.models},
          {"rpm", limits.rpm},
          {"tpm", limits.tpm},
          {"tokens_per_day", limits.tokens_per_day},
          {"tokens_per_month", limits.tokens_per_month},
          {"cost_usd_per_day", limits.cost_usd_per_day},
          {"cost_usd_per_month", limits.cost_usd_per_month}};
}

KeyLimits LimitsFromStoredJson(std::string_view text) {
  KeyLimits limits;
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return limits;
  auto integer = [&parsed](const char* name) -> int64_t {
    auto it = parsed.find(name);
    return it != parsed.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
  };
  auto number = [&parsed](const char* name) -> double {
    auto it = parsed.find(name);
    return it != parsed.end() && it->is_number() ? it->get<double>() : 0;
  };
  if (auto it = parsed.find("models"); it != parsed.end() && it->is_array()) {
    for (const json& model : *it) {
      if (model.is_string()) limits.models.push_back(model.get<std::string>());
    }
  }
  limits.rpm = integer("rpm");
  limits.tpm = integer("tpm");
  limits.tokens_per_day = integer("tokens_per_day");
  limits.tokens_per_month = integer("tokens_per_month");
  limits.cost_usd_per_day = number("cost_usd_per_day");
  limits.cost_usd_per_month = number("cost_usd_per_month");
  return limits;
}

void Add(Usage& into, const Usage& delta) {
  into.requests += delta.requests;
  into.tokens += delta.tokens;
  into.cost_usd += delta.cost_usd;
}

absl::Status RateLimited(std::string message, int retry_after_seconds) {
  return WithRetryAfter(
      WithErrorCode(absl::ResourceExhaustedError(std::move(message)), "rate_limit_exceeded"),
      std::max(1, retry_after_seconds));
}

absl::Status OverBudget(std::string message, int retry_after_seconds) {
  return WithRetryAfter(
      WithErrorCode(absl::ResourceExhaustedError(std::move(message)), "insufficient_quota"),
      retry_after_seconds);
}

}  // namespace

std::string UtcDay(WallTime time) {
  const std::tm parts = UtcTm(time);
  return absl::StrFormat("%04d-%02d-%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday);
}

std::string UtcMonth(WallTime time) {
  const std::tm parts = UtcTm(time);
  return absl::StrFormat("%04d-%02d", parts.tm_year + 1900, parts.tm_mon + 1);
}

Grant& Grant::operator=(Grant&& other) noexcept {
  if (this != &other) {
    if (store_ != nullptr) store_->Release(key_id_, reserved_, 0, 0);
    store_ = std::exchange(other.store_, nullptr);
    key_id_ = std::move(other.key_id_);
    reserved_ = other.reserved_;
  }
  return *this;
}

Grant::~Grant() {
  if (store_ != nullptr) store_->Release(key_id_, reserved_, 0, 0);
}

void Grant::Settle(int64_t tokens, double cost_usd) {
  if (store_ == nullptr) return;
  std::exchange(store_, nullptr)->Release(key_id_, reserved_, tokens, cost_usd);
}

KeyStore::KeyStore(std::unique_ptr<Database> db, const Clock& clock)
    : clock_(clock), db_(std::move(db)) {}

KeyStore::~KeyStore() {
  {
    std::lock_guard lock(flusher_mu_);
    stopping_ = true;
  }
  flusher_wake_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  if (absl::Status flushed = Flush(); !flushed.ok()) {
    spdlog::error("API key spend could not be saved: {}", flushed.message());
  }
}

absl::StatusOr<std::unique_ptr<KeyStore>> KeyStore::Open(const std::string& database_path,
                                                         const Clock& clock) {
  std::unique_ptr<Database> db;
  if (!database_path.empty()) {
    AILB_ASSIGN_OR_RETURN(db, Database::Open(database_path));
    AILB_RETURN_IF_ERROR(db->Exec(kSchema));
  }
  std::unique_ptr<KeyStore> store(new KeyStore(std::move(db), clock));
  AILB_RETURN_IF_ERROR(store->LoadStored());
  return store;
}

absl::Status KeyStore::LoadStored() {
  std::lock_guard db_lock(db_mu_);
  if (db_ == nullptr) return absl::OkStatus();
  const WallTime now = clock_.WallNow();
  const std::string today = UtcDay(now);
  const std::string month = UtcMonth(now);
  std::map<std::pair<std::string, std::string>, Usage> usage;
  {
    AILB_ASSIGN_OR_RETURN(Statement select,
                          db_->Prepare("SELECT key_id, period, requests, tokens, cost_usd FROM "
                                       "api_key_usage WHERE period IN (?, ?)"));
    select.Bind(1, today).Bind(2, month);
    while (true) {
      AILB_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      usage[{select.ColumnText(0), select.ColumnText(1)}] =
          Usage{select.ColumnInt(2), select.ColumnInt(3), select.ColumnDouble(4)};
    }
  }
  std::vector<Entry> stored;
  {
    AILB_ASSIGN_OR_RETURN(Statement select,
                          db_->Prepare("SELECT id, name, key_sha256, key_prefix, limits, "
                                       "created_unix FROM api_keys WHERE revoked_unix IS NULL"));
    while (true) {
      AILB_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      Entry entry;
      entry.info.id = select.ColumnText(0);
      entry.info.name = select.ColumnText(1);
      entry.digest = select.ColumnText(2);
      entry.info.key_prefix = select.ColumnText(3);
      entry.info.limits = LimitsFromStoredJson(select.ColumnText(4));
      entry.info.created_unix = select.ColumnInt(5);
      entry.info.source = "admin";
      stored.push_back(std::move(entry));
    }
  }
  std::lock_guard lock(mu_);
  stored_usage_ = std::move(usage);
  for (Entry& entry : stored) {
    entry.info.today = today;
    entry.info.this_month = month;
    entry.info.usage_today = stored_usage_[{entry.info.id, today}];
    entry.info.usage_this_month = stored_usage_[{entry.info.id, month}];
    id_by_digest_[entry.digest] = entry.info.id;
    entries_[entry.info.id] = std::move(entry);
  }
  return absl::OkStatus();
}

void KeyStore::SetConfigured(const std::vector<ConfiguredKey>& keys, const std::string& admin_key) {
  const WallTime now = clock_.WallNow();
  std::lock_guard lock(mu_);
  admin_digest_ = admin_key.empty() ? "" : DigestOfConfigured(admin_key);
  std::map<std::string, Entry, std::less<>> kept;
  for (auto& [id, entry] : entries_) {
    if (entry.info.source != "config") kept.emplace(id, std::move(entry));
  }
  for (const ConfiguredKey& key : keys) {
    const std::string digest = DigestOfConfigured(key.key);
    // The id shows 64 bits of the digest: enough to tell keys apart, useless for finding one.
    const std::string id = absl::StrCat("cfg_", digest.substr(0, 16));
    Entry entry;
    if (auto old = entries_.find(id); old != entries_.end()) {
      entry = std::move(old->second);
    } else {
      entry.info.id = id;
      entry.info.source = "config";
      entry.info.today = UtcDay(now);
      entry.info.this_month = UtcMonth(now);
      entry.info.usage_today = stored_usage_[{id, entry.info.today}];
      entry.info.usage_this_month = stored_usage_[{id, entry.info.this_month}];
    }
    entry.digest = digest;
    entry.info.name = key.name.empty() ? id : key.name;
    entry.info.limits = key.limits;
    kept[id] = std::move(entry);
  }
  entries_ = std::move(kept);
  id_by_digest_.clear();
  for (const auto& [id, entry] : entries_) id_by_digest_[entry.digest] = id;
}

bool KeyStore::DataPlaneOpen() const {
  std::lock_guard lock(mu_);
  return entries_.empty() && admin_digest_.empty();
}

bool KeyStore::HasAdminKey() const {
  std::lock_guard lock(mu_);
  return !admin_digest_.empty();
}

absl::StatusOr<Principal> KeyStore::Authenticate(
    const std::optional<std::string>& presented) const {
  std::lock_guard lock(mu_);
  if (entries_.empty() && admin_digest_.empty()) return Principal{};
  if (!presented) {
    return WithErrorCode(
        absl::UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'"),
        "missing_api_key");
  }
  // Keys are compared as SHA-256 digests: what a lookup's timing could reveal is about the
  // digest, which does not help to find a key. The final comparisons are constant-time anyway.
  const std::string digest = Sha256Hex(*presented);
  const bool is_admin = !admin_digest_.empty() && ConstantTimeEquals(admin_digest_, digest);
  if (is_admin) return Principal{Role::kAdmin, "", "admin"};
  if (auto it = id_by_digest_.find(digest); it != id_by_digest_.end()) {
    const Entry& entry = entries_.at(it->second);
    if (ConstantTimeEquals(entry.digest, digest)) {
      return Principal{Role::kClient, entry.info.id, entry.info.name};
    }
  }
  return WithErrorCode(absl::UnauthenticatedError("invalid API key"), "invalid_api_key");
}

void KeyStore::Trim(Window& window, SteadyTime now) const {
  while (!window.requests.empty() && now - window.requests.front() >= kMinute) {
    window.requests.pop_front();
  }
  while (!window.tokens.empty() && now - window.tokens.front().first >= kMinute) {
    window.token_sum -= window.tokens.front().second;
    window.tokens.pop_front();
  }
}

void KeyStore::Roll(Entry& entry) {
  const WallTime now = clock_.WallNow();
  if (std::string today = UtcDay(now); today != entry.info.today) {
    entry.info.today = std::move(today);
    entry.info.usage_today = {};
  }
  if (std::string month = UtcMonth(now); month != entry.info.this_month) {
    entry.info.this_month = std::move(month);
    entry.info.usage_this_month = {};
  }
}

absl::StatusOr<Grant> KeyStore::Admit(const Principal& who, std::string_view model,
                                      const Estimate& estimate) {
  if (who.role != Role::kClient) return Grant{};
  const SteadyTime now = clock_.Now();
  std::lock_guard lock(mu_);
  auto it = entries_.find(who.key_id);
  if (it == entries_.end()) {
    return WithErrorCode(absl::UnauthenticatedError("API key was revoked"), "invalid_api_key");
  }
  Entry& entry = it->second;
  const KeyLimits& limits = entry.info.limits;
  const std::string& name = entry.info.name;
  if (!limits.models.empty() &&
      std::find(limits.models.begin(), limits.models.end(), model) == limits.models.end()) {
    return WithErrorCode(absl::PermissionDeniedError(
                             absl::StrCat("API key '", name, "' may not use model '", ToAbsl(model),
                                          "'; allowed: ", absl::StrJoin(limits.models, ", "))),
                         "model_not_allowed");
  }
  Roll(entry);
  Trim(entry.window, now);
  if (limits.rpm > 0 && static_cast<int64_t>(entry.window.requests.size()) >= limits.rpm) {
    const auto wait = kMinute - (now - entry.window.requests.front());
    return RateLimited(absl::StrCat("API key '", name, "' reached its limit of ", limits.rpm,
                                    " requests per minute"),
                       static_cast<int>(std::ceil(std::chrono::duration<double>(wait).count())));
  }
  if (limits.tpm > 0 && entry.window.token_sum + entry.reserved.tokens >= limits.tpm) {
    const auto wait =
        entry.window.tokens.empty()
            ? std::chrono::duration<double>(1)
            : std::chrono::duration<double>(kMinute - (now - entry.window.tokens.front().first));
    return RateLimited(absl::StrCat("API key '", name, "' reached its limit of ", limits.tpm,
                                    " tokens per minute"),
                       static_cast<int>(std::ceil(wait.count())));
  }
  const WallTime wall = clock_.WallNow();
  auto check_tokens = [&](int64_t budget, const Usage& used, const char* period, bool month) {
    if (budget <= 0 || used.tokens + entry.reserved.tokens < budget) return absl::OkStatus();
    return OverBudget(absl::StrCat("API key '", name, "' has used its ", period, " budget of ",
                                   budget, " tokens (", used.tokens, " used, ",
                                   entry.reserved.tokens, " reserved by requests in flight)"),
                      SecondsUntilReset(wall, month));
  };
  auto check_cost = [&](double budget, const Usage& used, const char* period, bool month) {
    if (budget <= 0 || used.cost_usd + entry.reserved.cost_usd < budget) return absl::OkStatus();
    return OverBudget(absl::StrFormat("API key '%s' has used its %s budget of $%.4f ($%.4f spent, "
                                      "$%.4f reserved by requests in flight)",
                                      name, period, budget, used.cost_usd, entry.reserved.cost_usd),
                      SecondsUntilReset(wall, month));
  };
  AILB_RETURN_IF_ERROR(check_tokens(limits.tokens_per_day, entry.info.usage_today, "daily", false));
  AILB_RETURN_IF_ERROR(
      check_tokens(limits.tokens_per_month, entry.info.usage_this_month, "monthly", true));
  AILB_RETURN_IF_ERROR(check_cost(limits.cost_usd_per_day, entry.info.usage_today, "daily", false));
  AILB_RETURN_IF_ERROR(
      check_cost(limits.cost_usd_per_month, entry.info.usage_this_month, "monthly", true));

  entry.window.requests.push_back(now);
  entry.reserved.tokens += estimate.tokens;
  entry.reserved.cost_usd += estimate.cost_usd;
  ++entry.info.in_flight;
  Grant grant;
  grant.store_ = this;
  grant.key_id_ = entry.info.id;
  grant.reserved_ = estimate;
  return grant;
}

void KeyStore::Release(const std::string& key_id, const Estimate& reserved, int64_t tokens,
                       double cost) {
  const SteadyTime now = clock_.Now();
  tokens = std::max<int64_t>(0, tokens);
  cost = std::max(0.0, cost);
  std::lock_guard lock(mu_);
  const Usage spent{1, tokens, cost};
  auto it = entries_.find(key_id);
  if (it == entries_.end()) return;  // removed from the configuration while the request ran
  Entry& entry = it->second;
  entry.reserved.tokens = std::max<int64_t>(0, entry.reserved.tokens - reserved.tokens);
  entry.reserved.cost_usd = std::max(0.0, entry.reserved.cost_usd - reserved.cost_usd);
  entry.info.in_flight = std::max(0, entry.info.in_flight - 1);
  Roll(entry);
  Add(entry.info.usage_today, spent);
  Add(entry.info.usage_this_month, spent);
  if (tokens > 0) {
    entry.window.tokens.emplace_back(now, tokens);
    entry.window.token_sum += tokens;
  }
  Add(pending_[{key_id, entry.info.today}], spent);
  Add(pending_[{key_id, entry.info.this_month}], spent);
}

absl::StatusOr<const KeyStore::Entry*> KeyStore::FindCreated(std::string_view id,
                                                             std::string_view instead) const {
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("no API key with id '", ToAbsl(id), "'"));
  }
  if (it->second.info.source != "admin") {
    return absl::FailedPreconditionError(
        absl::StrCat("API key '", ToAbsl(id), "' comes from the configuration; ", ToAbsl(instead)));
  }
  return &it->second;
}

std::vector<KeyInfo> KeyStore::List() const {
  std::lock_guard lock(mu_);
  std::vector<KeyInfo> keys;
  keys.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) keys.push_back(entry.info);
  return keys;
}

absl::StatusOr<KeyInfo> KeyStore::Get(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("no API key with id '", ToAbsl(id), "'"));
  }
  return it->second.info;
}

absl::StatusOr<std::pair<KeyInfo, std::string>> KeyStore::Create(const std::string& name,
                                                                 const KeyLimits& limits) {
  AILB_ASSIGN_OR_RETURN(std::string secret_hex, RandomHex(24));
  AILB_ASSIGN_OR_RETURN(std::string id_hex, RandomHex(8));
  const std::string secret = absl::StrCat(ToAbsl(kCreatedKeyPrefix), secret_hex);
  const WallTime now = clock_.WallNow();
  Entry entry;
  entry.info.id = absl::StrCat("key_", id_hex);
  entry.info.name = name.empty() ? entry.info.id : name;
  entry.info.key_prefix = secret.substr(0, kShownPrefixLength);
  entry.info.source = "admin";
  entry.info.limits = limits;
  entry.info.created_unix =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  entry.info.today = UtcDay(now);
  entry.info.this_month = UtcMonth(now);
  entry.digest = Sha256Hex(secret);
  {
    std::lock_guard db_lock(db_mu_);
    if (db_ != nullptr) {
      AILB_ASSIGN_OR_RETURN(
          Statement insert,
          db_->Prepare("INSERT INTO api_keys (id, name, key_sha256, key_prefix, limits, "
                       "created_unix) VALUES (?, ?, ?, ?, ?, ?)"));
      insert.Bind(1, entry.info.id)
          .Bind(2, entry.info.name)
          .Bind(3, entry.digest)
          .Bind(4, entry.info.key_prefix)
          .Bind(5, LimitsToJson(limits).dump())
          .Bind(6, entry.info.created_unix);
      AILB_RETURN_IF_ERROR(insert.Run());
    }
  }
  KeyInfo info = entry.info;
  std::lock_guard lock(mu_);
  id_by_digest_[entry.digest] = entry.info.id;
  entries_[entry.info.id] = std::move(entry);
  return std::make_pair(std::move(info), secret);
}

absl::StatusOr<KeyInfo> KeyStore::Update(std::string_view id, const std::string& name,
                                         const KeyLimits& limits) {
  std::string new_name;
  {
    std::lock_guard lock(mu_);
    AILB_ASSIGN_OR_RETURN(const Entry* entry, FindCreated(id, "change its limits there"));
    new_name = name.empty() ? entry->info.name : name;
  }
  {
    std::lock_guard db_lock(db_mu_);
    if (db_ != nullptr) {
      AILB_ASSIGN_OR_RETURN(Statement update,
                            db_->Prepare("UPDATE api_keys SET name = ?, limits = ? WHERE id = ? "
                                         "AND revoked_unix IS NULL"));
      update.Bind(1, new_name).Bind(2, LimitsToJson(limits).dump()).Bind(3, id);
      AILB_RETURN_IF_ERROR(update.Run());
    }
  }
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("API key '", ToAbsl(id), "' was revoked meanwhile"));
  }
  it->second.info.name = new_name;
  it->second.info.limits = limits;
  return it->second.info;
}

absl::Status KeyStore::Revoke(std::string_view id) {
  {
    std::lock_guard lock(mu_);
    AILB_RETURN_IF_ERROR(FindCreated(id, "remove it there and reload").status());
  }
  {
    std::lock_guard db_lock(db_mu_);
    if (db_ != nullptr) {
      AILB_ASSIGN_OR_RETURN(Statement revoke,
                            db_->Prepare("UPDATE api_keys SET revoked_unix = ? WHERE id = ?"));
      revoke
          .Bind(1, static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                            clock_.WallNow().time_since_epoch())
                                            .count()))
          .Bind(2, id);
      AILB_RETURN_IF_ERROR(revoke.Run());
    }
  }
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it != entries_.end()) {
    id_by_digest_.erase(it->second.digest);
    entries_.erase(it);
  }
  return absl::OkStatus();
}

absl::Status KeyStore::Flush() {
  std::map<std::pair<std::string, std::string>, Usage> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return absl::OkStatus();
  absl::Status written = [&]() -> absl::Status {
    std::lock_guard db_lock(db_mu_);
    if (db_ == nullptr) return absl::OkStatus();
    AILB_ASSIGN_OR_RETURN(storage::Transaction transaction, storage::Transaction::Begin(*db_));
    AILB_ASSIGN_OR_RETURN(
        Statement upsert,
        db_->Prepare("INSERT INTO api_key_usage (key_id, period, requests, tokens, cost_usd) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, period) DO UPDATE SET "
                     "requests = requests + excluded.requests, tokens = tokens + "
                     "excluded.tokens, cost_usd = cost_usd + excluded.cost_usd"));
    for (const auto& [key, usage] : batch) {
      upsert.Reset();
      upsert.Bind(1, key.first)
          .Bind(2, key.second)
          .Bind(3, usage.requests)
          .Bind(4, usage.tokens)
          .Bind(5, usage.cost_usd);
      AILB_RETURN_IF_ERROR(upsert.Run());
    }
    return transaction.Commit();
  }();
  if (!written.ok()) {
    // Keep the spend for the next attempt rather than forgetting it.
    std::lock_guard lock(mu_);
    for (const auto& [key, usage] : batch) Add(pending_[key], usage);
  }
  return written;
}

void KeyStore::StartFlusher(std::chrono::milliseconds interval) {
  if (flusher_.joinable()) return;
  flusher_ = std::thread([this, interval] { RunFlusher(interval); });
}

void KeyStore::RunFlusher(std::chrono::milliseconds interval) {
  std::unique_lock lock(flusher_mu_);
  while (!flusher_wake_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    if (absl::Status flushed = Flush(); !flushed.ok()) {
      spdlog::warn("API key spend not saved yet (will retry): {}", flushed.message());
    }
    lock.lock();
  }
}

}  // namespace ailb::auth
