// API keys: authentication (plain and sha256: keys, refusals that never echo a key), model
// allow-lists, rpm/tpm, day and month budgets with reservations, persistence of created keys and
// spend in SQLite, and admission under concurrency.
#include "ailb/auth/key_store.h"

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "ailb/common/hash.h"
#include "ailb/common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace ailb::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::unique_ptr<KeyStore> MemoryStore(const Clock& clock) {
  absl::StatusOr<std::unique_ptr<KeyStore>> store = KeyStore::Open("", clock);
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

// Authentication against plain configured keys, as the data plane does it.
absl::Status CheckApiKey(const std::vector<std::string>& configured,
                         const std::optional<std::string>& presented) {
  ManualClock clock;
  std::unique_ptr<KeyStore> store = MemoryStore(clock);
  std::vector<ConfiguredKey> keys;
  for (const std::string& key : configured) keys.push_back({key, "", {}});
  store->SetConfigured(keys, "");
  return store->Authenticate(presented).status();
}

ConfiguredKey Limited(std::string key, KeyLimits limits) {
  return ConfiguredKey{std::move(key), "team", std::move(limits)};
}

// --- authentication ----------------------------------------------------------------------------

TEST(KeyStoreAuthTest, PlainKeyMatches) {
  EXPECT_TRUE(CheckApiKey({"sk-one-1234", "sk-two-1234"}, "sk-one-1234").ok());
  EXPECT_TRUE(CheckApiKey({"sk-one-1234", "sk-two-1234"}, "sk-two-1234").ok());
}

TEST(KeyStoreAuthTest, HashedKeyMatches) {
  const std::vector<std::string> configured = {"sha256:" + Sha256Hex("sk-hashed")};
  EXPECT_TRUE(CheckApiKey(configured, "sk-hashed").ok());
  EXPECT_FALSE(CheckApiKey(configured, "sk-hashed2").ok());
}

TEST(KeyStoreAuthTest, HashedKeyAcceptsUppercaseHex) {
  std::string hash = Sha256Hex("sk-hashed");
  for (char& c : hash) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(CheckApiKey({"sha256:" + hash}, "sk-hashed").ok());
}

TEST(KeyStoreAuthTest, KnowingTheStoredHashIsNotEnough) {
  const std::string hash = Sha256Hex("sk-hashed");
  const std::vector<std::string> configured = {"sha256:" + hash};
  EXPECT_FALSE(CheckApiKey(configured, hash).ok());
  EXPECT_FALSE(CheckApiKey(configured, "sha256:" + hash).ok());
}

TEST(KeyStoreAuthTest, MalformedHashNeverMatches) {
  EXPECT_FALSE(CheckApiKey({"sha256:"}, "").ok());
  EXPECT_FALSE(CheckApiKey({"sha256:abc"}, "abc").ok());
  EXPECT_FALSE(CheckApiKey({"sha256:" + Sha256Hex("k").substr(0, 63)}, "k").ok());
}

TEST(KeyStoreAuthTest, WrongKeyIsUnauthenticated) {
  const absl::Status status = CheckApiKey({"sk-right"}, "sk-wrong");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorCodeOf(status), "invalid_api_key");
  EXPECT_EQ(ToHttpError(status).http_status, 401);
  EXPECT_EQ(ToHttpError(status).type, "authentication_error");
}

TEST(KeyStoreAuthTest, MatchIsExact) {
  const std::vector<std::string> configured = {"sk-right"};
  for (const char* presented : {"sk-righ", "sk-right ", " sk-right", "SK-RIGHT", "sk-rightt", ""}) {
    EXPECT_FALSE(CheckApiKey(configured, std::string(presented)).ok()) << presented;
  }
}

TEST(KeyStoreAuthTest, MissingKeyIsUnauthenticated) {
  const absl::Status status = CheckApiKey({"sk-right"}, std::nullopt);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorCodeOf(status), "missing_api_key");
  EXPECT_EQ(ToHttpError(status).http_status, 401);
  EXPECT_THAT(std::string(status.message()), HasSubstr("Authorization: Bearer"));
}

TEST(KeyStoreAuthTest, MessagesNeverContainTheKeys) {
  const std::string configured_plain = "sk-configured-plain-secret";
  const std::string configured_hash = Sha256Hex("sk-configured-hashed-secret");
  const std::string presented = "sk-presented-wrong-secret";
  const std::vector<std::string> configured = {configured_plain, "sha256:" + configured_hash};
  for (const absl::Status& status :
       {CheckApiKey(configured, presented), CheckApiKey(configured, std::nullopt),
        CheckApiKey(configured, configured_hash)}) {
    ASSERT_FALSE(status.ok());
    const std::string message(status.message());
    const std::string body = OpenAIErrorBody(ToHttpError(status));
    for (const std::string& secret :
         {configured_plain, configured_hash, presented, Sha256Hex(presented),
          std::string("sk-configured-hashed-secret")}) {
      EXPECT_THAT(message, Not(HasSubstr(secret)));
      EXPECT_THAT(body, Not(HasSubstr(secret)));
    }
    EXPECT_THAT(message, Not(HasSubstr("sk-")));
  }
}

TEST(KeyStoreAuthTest, OpenOnlyWithoutAnyKey) {
  ManualClock clock;
  std::unique_ptr<KeyStore> store = MemoryStore(clock);
  EXPECT_TRUE(store->DataPlaneOpen());
  absl::StatusOr<Principal> anyone = store->Authenticate(std::nullopt);
  ASSERT_TRUE(anyone.ok());
  EXPECT_EQ(anyone->role, Role::kAnonymous);

  // An admin key alone closes the data plane: the admin creates the client keys.
  store->SetConfigured({}, "sk-admin-secret");
  EXPECT_FALSE(store->DataPlaneOpen());
  EXPECT_TRUE(store->HasAdminKey());
  EXPECT_EQ(store->Authenticate(std::nullopt).status().code(), absl::StatusCode::kUnauthenticated);
  absl::StatusOr<Principal> admin = store->Authenticate("sk-admin-secret");
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->role, Role::kAdmin);
  // The admin is not limited.
  absl::StatusOr<Grant> grant = store->Admit(*admin, "any-model", {1'000'000, 1'000});
  EXPECT_TRUE(grant.ok());
}

TEST(KeyStoreAuthTest, HashedAdminKey) {
  ManualClock clock;
  std::unique_ptr<KeyStore> store = MemoryStore(clock);
  store->SetConfigured({}, "sha256:" + Sha256Hex("sk-admin-secret"));
  EXPECT_EQ(store->Authenticate("sk-admin-secret")->role, Role::kAdmin);
  EXPECT_FALSE(store->Authenticate(Sha256Hex("sk-admin-secret")).ok());
}

// --- limits ------------------------------------------------------------------------------------

class KeyLimitsTest : public ::testing::Test {
 protected:
  Principal Configure(KeyLimits limits) {
    store_->SetConfigured({Limited("sk-client-key", std::move(limits))}, "");
    absl::StatusOr<Principal> who = store_->Authenticate("sk-client-key");
    EXPECT_TRUE(who.ok()) << who.status();
    EXPECT_EQ(who->role, Role::kClient);
    return *who;
  }

  ManualClock clock_;
  std::unique_ptr<KeyStore> store_ = MemoryStore(clock_);
};

TEST_F(KeyLimitsTest, ModelAllowList) {
  KeyLimits limits;
  limits.models = {"gpt-4o-mini", "claude-haiku"};
  Principal who = Configure(limits);
  EXPECT_TRUE(store_->Admit(who, "gpt-4o-mini", {}).ok());
  absl::StatusOr<Grant> refused = store_->Admit(who, "gpt-4o", {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ToHttpError(refused.status()).http_status, 403);
  EXPECT_EQ(ErrorCodeOf(refused.status()), "model_not_allowed");
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("gpt-4o-mini, claude-haiku"));
}

TEST_F(KeyLimitsTest, RequestsPerMinute) {
  KeyLimits limits;
  limits.rpm = 2;
  Principal who = Configure(limits);
  ASSERT_TRUE(store_->Admit(who, "m", {}).ok());
  clock_.Advance(std::chrono::seconds(20));
  ASSERT_TRUE(store_->Admit(who, "m", {}).ok());
  absl::StatusOr<Grant> refused = store_->Admit(who, "m", {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ToHttpError(refused.status()).http_status, 429);
  EXPECT_EQ(ErrorCodeOf(refused.status()), "rate_limit_exceeded");
  EXPECT_EQ(RetryAfterOf(refused.status()), 40);  // the first request leaves the window then
  clock_.Advance(std::chrono::seconds(40));
  EXPECT_TRUE(store_->Admit(who, "m", {}).ok());
  EXPECT_FALSE(store_->Admit(who, "m", {}).ok());
}

TEST_F(KeyLimitsTest, TokensPerMinuteCountsSettledAndReserved) {
  KeyLimits limits;
  limits.tpm = 1'000;
  Principal who = Configure(limits);
  absl::StatusOr<Grant> first = store_->Admit(who, "m", {600, 0});
  ASSERT_TRUE(first.ok());
  // 600 reserved: a second request still fits under 1,000.
  absl::StatusOr<Grant> second = store_->Admit(who, "m", {600, 0});
  ASSERT_TRUE(second.ok());
  // 1,200 reserved: no more.
  EXPECT_EQ(store_->Admit(who, "m", {1, 0}).status().code(), absl::StatusCode::kResourceExhausted);
  first->Settle(300, 0);
  second->Settle(300, 0);
  // 600 used this minute.
  absl::StatusOr<Grant> third = store_->Admit(who, "m", {10, 0});
  ASSERT_TRUE(third.ok());
  third->Settle(500, 0);
  EXPECT_EQ(ErrorCodeOf(store_->Admit(who, "m", {1, 0}).status()), "rate_limit_exceeded");
  clock_.Advance(std::chrono::seconds(61));
  EXPECT_TRUE(store_->Admit(who, "m", {1, 0}).ok());
}

TEST_F(KeyLimitsTest, DailyTokenBudgetAndRollover) {
  KeyLimits limits;
  limits.tokens_per_day = 100;
  limits.tokens_per_month = 250;
  Principal who = Configure(limits);
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<Grant> grant = store_->Admit(who, "m", {10, 0});
    ASSERT_TRUE(grant.ok());
    grant->Settle(50, 0);
  }
  absl::StatusOr<Grant> refused = store_->Admit(who, "m", {10, 0});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ToHttpError(refused.status()).http_status, 429);
  EXPECT_EQ(ErrorCodeOf(refused.status()), "insufficient_quota");
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("daily budget of 100 tokens"));
  ASSERT_TRUE(RetryAfterOf(refused.status()).has_value());
  EXPECT_LE(*RetryAfterOf(refused.status()), 24 * 3600);

  absl::StatusOr<KeyInfo> info = store_->Get(who.key_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->usage_today.tokens, 100);
  EXPECT_EQ(info->usage_today.requests, 2);

  // A new UTC day (2023-11-15): the daily budget is fresh, the month's spend carries on.
  clock_.Advance(std::chrono::hours(24));
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<Grant> grant = store_->Admit(who, "m", {10, 0});
    ASSERT_TRUE(grant.ok()) << i << " " << grant.status();
    grant->Settle(50, 0);
  }
  EXPECT_THAT(std::string(store_->Admit(who, "m", {10, 0}).status().message()),
              HasSubstr("daily budget"));
  clock_.Advance(std::chrono::hours(24));
  absl::StatusOr<Grant> grant = store_->Admit(who, "m", {10, 0});
  ASSERT_TRUE(grant.ok()) << grant.status();
  grant->Settle(50, 0);
  // 250 this month.
  refused = store_->Admit(who, "m", {10, 0});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("monthly budget of 250 tokens"));
  EXPECT_EQ(store_->Get(who.key_id)->usage_this_month.tokens, 250);
  EXPECT_EQ(store_->Get(who.key_id)->usage_today.tokens, 50);
}

TEST_F(KeyLimitsTest, CostBudget) {
  KeyLimits limits;
  limits.cost_usd_per_month = 0.10;
  Principal who = Configure(limits);
  absl::StatusOr<Grant> grant = store_->Admit(who, "m", {0, 0.02});
  ASSERT_TRUE(grant.ok());
  grant->Settle(100, 0.11);
  absl::StatusOr<Grant> refused = store_->Admit(who, "m", {0, 0.02});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCodeOf(refused.status()), "insufficient_quota");
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("monthly budget of $0.1000"));
}

TEST_F(KeyLimitsTest, UnsettledGrantReleasesItsReservation) {
  KeyLimits limits;
  limits.tokens_per_day = 100;
  Principal who = Configure(limits);
  {
    absl::StatusOr<Grant> big = store_->Admit(who, "m", {150, 0});
    ASSERT_TRUE(big.ok());
    EXPECT_FALSE(store_->Admit(who, "m", {1, 0}).ok());  // reserved by the one in flight
    EXPECT_EQ(store_->Get(who.key_id)->in_flight, 1);
  }
  EXPECT_EQ(store_->Get(who.key_id)->in_flight, 0);
  EXPECT_TRUE(store_->Admit(who, "m", {1, 0}).ok());
}

TEST_F(KeyLimitsTest, ReloadKeepsSpend) {
  KeyLimits limits;
  limits.tokens_per_day = 100;
  Principal who = Configure(limits);
  absl::StatusOr<Grant> grant = store_->Admit(who, "m", {10, 0});
  ASSERT_TRUE(grant.ok());
  grant->Settle(90, 0);
  // The same key configured again (new limits) keeps today's spend.
  limits.tokens_per_day = 95;
  Configure(limits);
  EXPECT_EQ(store_->Get(who.key_id)->usage_today.tokens, 90);
  EXPECT_EQ(store_->Get(who.key_id)->limits.tokens_per_day, 95);
}

// Many threads admitting and settling against one daily budget: the spend never passes the
// budget by more than one request's usage.
TEST_F(KeyLimitsTest, ConcurrentRequestsOverspendByAtMostOneRequest) {
  constexpr int64_t kBudget = 10'000;
  constexpr int64_t kPerRequest = 70;
  KeyLimits limits;
  limits.tokens_per_day = kBudget;
  limits.cost_usd_per_day = 1.0;
  Principal who = Configure(limits);
  std::atomic<int64_t> admitted{0};
  std::atomic<int64_t> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<Grant> grant = store_->Admit(who, "m", {kPerRequest, 0.007});
        if (!grant.ok()) {
          refused.fetch_add(1);
          continue;
        }
        admitted.fetch_add(1);
        std::this_thread::yield();
        grant->Settle(kPerRequest, 0.007);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  absl::StatusOr<KeyInfo> info = store_->Get(who.key_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->usage_today.requests, admitted.load());
  EXPECT_EQ(info->usage_today.tokens, admitted.load() * kPerRequest);
  EXPECT_GT(refused.load(), 0);
  // The cost budget ($1 at $0.007) binds first: at most one request beyond it.
  EXPECT_LT(info->usage_today.cost_usd, 1.0 + 0.007 + 1e-9);
  EXPECT_GE(info->usage_today.cost_usd, 1.0 - 0.007 - 1e-9);
  EXPECT_LE(info->usage_today.tokens, kBudget + kPerRequest);
  EXPECT_EQ(info->in_flight, 0);
}

// --- created keys and persistence --------------------------------------------------------------

class KeyStorePersistenceTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = ailb::testing::MakeTestDir("key_store"); }
  void TearDown() override { ailb::testing::RemoveTestDir(dir_); }
  std::unique_ptr<KeyStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<KeyStore>> store = KeyStore::Open(dir_ + "/ailb.db", clock_);
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }
  std::string ReadDatabaseBytes() const {
    std::ifstream in(dir_ + "/ailb.db", std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    std::ifstream wal(dir_ + "/ailb.db-wal", std::ios::binary);
    if (wal) bytes << wal.rdbuf();
    return bytes.str();
  }

  std::string dir_;
  ManualClock clock_;
};

TEST_F(KeyStorePersistenceTest, CreatedKeysSurviveRestartHashedAtRest) {
  std::string secret;
  std::string id;
  {
    std::unique_ptr<KeyStore> store = OpenStore();
    KeyLimits limits;
    limits.models = {"gpt-4o-mini"};
    limits.tokens_per_day = 1'000;
    absl::StatusOr<std::pair<KeyInfo, std::string>> created = store->Create("team-a", limits);
    ASSERT_TRUE(created.ok()) << created.status();
    secret = created->second;
    id = created->first.id;
    EXPECT_THAT(secret, ::testing::StartsWith("sk-ailb-"));
    EXPECT_EQ(secret.size(), 8u + 48u);
    EXPECT_EQ(created->first.key_prefix, secret.substr(0, 12));
    EXPECT_EQ(created->first.source, "admin");
    EXPECT_FALSE(store->DataPlaneOpen());

    absl::StatusOr<Principal> who = store->Authenticate(secret);
    ASSERT_TRUE(who.ok());
    EXPECT_EQ(who->key_id, id);
    absl::StatusOr<Grant> grant = store->Admit(*who, "gpt-4o-mini", {10, 0});
    ASSERT_TRUE(grant.ok());
    grant->Settle(400, 0.5);
    ASSERT_TRUE(store->Flush().ok());
  }
  EXPECT_THAT(ReadDatabaseBytes(), Not(HasSubstr(secret.substr(8))));
  EXPECT_THAT(ReadDatabaseBytes(), HasSubstr(Sha256Hex(secret)));

  std::unique_ptr<KeyStore> store = OpenStore();
  absl::StatusOr<Principal> who = store->Authenticate(secret);
  ASSERT_TRUE(who.ok()) << who.status();
  absl::StatusOr<KeyInfo> info = store->Get(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->name, "team-a");
  EXPECT_EQ(info->limits.models, std::vector<std::string>{"gpt-4o-mini"});
  EXPECT_EQ(info->limits.tokens_per_day, 1'000);
  EXPECT_EQ(info->usage_today.tokens, 400);
  EXPECT_DOUBLE_EQ(info->usage_this_month.cost_usd, 0.5);
  EXPECT_EQ(store->Admit(*who, "gpt-4o", {}).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(KeyStorePersistenceTest, SpendWrittenAtDestructionAndAccumulated) {
  std::string secret;
  for (int run = 0; run < 3; ++run) {
    std::unique_ptr<KeyStore> store = OpenStore();
    if (run == 0) secret = store->Create("k", {})->second;
    absl::StatusOr<Principal> who = store->Authenticate(secret);
    ASSERT_TRUE(who.ok());
    absl::StatusOr<Grant> grant = store->Admit(*who, "m", {});
    ASSERT_TRUE(grant.ok());
    grant->Settle(7, 0);
  }  // no explicit Flush: the destructor writes the spend
  std::unique_ptr<KeyStore> store = OpenStore();
  std::vector<KeyInfo> keys = store->List();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].usage_today.tokens, 21);
  EXPECT_EQ(keys[0].usage_today.requests, 3);
}

TEST_F(KeyStorePersistenceTest, UpdateAndRevoke) {
  std::unique_ptr<KeyStore> store = OpenStore();
  // Keys are created by an admin, so an admin key exists and the data plane stays closed when
  // the last created key goes.
  store->SetConfigured({}, "sk-admin-secret");
  absl::StatusOr<std::pair<KeyInfo, std::string>> created = store->Create("k", {});
  ASSERT_TRUE(created.ok());
  const std::string id = created->first.id;
  KeyLimits limits;
  limits.rpm = 1;
  absl::StatusOr<KeyInfo> updated = store->Update(id, "renamed", limits);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->name, "renamed");
  Principal who = *store->Authenticate(created->second);
  EXPECT_TRUE(store->Admit(who, "m", {}).ok());
  EXPECT_FALSE(store->Admit(who, "m", {}).ok());

  ASSERT_TRUE(store->Revoke(id).ok());
  EXPECT_EQ(store->Authenticate(created->second).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store->Revoke(id).code(), absl::StatusCode::kNotFound);
  store.reset();
  store = OpenStore();
  store->SetConfigured({}, "sk-admin-secret");
  EXPECT_FALSE(store->Authenticate(created->second).ok());
  EXPECT_TRUE(store->List().empty());
}

TEST_F(KeyStorePersistenceTest, ConfiguredKeysCannotBeChangedThroughTheApi) {
  std::unique_ptr<KeyStore> store = OpenStore();
  store->SetConfigured({Limited("sk-configured", {})}, "");
  std::vector<KeyInfo> keys = store->List();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].source, "config");
  EXPECT_EQ(keys[0].key_prefix, "");
  EXPECT_EQ(store->Revoke(keys[0].id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Update(keys[0].id, "", {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(KeyStorePersistenceTest, ConfiguredKeySpendSurvivesRestart) {
  for (int run = 0; run < 2; ++run) {
    std::unique_ptr<KeyStore> store = OpenStore();
    KeyLimits limits;
    limits.tokens_per_day = 100;
    store->SetConfigured({Limited("sk-configured", limits)}, "");
    Principal who = *store->Authenticate("sk-configured");
    absl::StatusOr<Grant> grant = store->Admit(who, "m", {1, 0});
    if (run == 0) {
      ASSERT_TRUE(grant.ok());
      grant->Settle(120, 0);
    } else {
      EXPECT_EQ(ErrorCodeOf(grant.status()), "insufficient_quota");
    }
  }
}

TEST(UtcPeriodTest, DayAndMonth) {
  const WallTime time = WallTime(std::chrono::seconds(1'700'000'000));  // 2023-11-14T22:13:20Z
  EXPECT_EQ(UtcDay(time), "2023-11-14");
  EXPECT_EQ(UtcMonth(time), "2023-11");
}

}  // namespace
}  // namespace ailb::auth
