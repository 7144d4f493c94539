// Access control through the real binary: the admin key, keys created through the admin API and
// stored hashed in SQLite, model allow-lists, rpm limits, day budgets under concurrent requests,
// persistence across restarts, and the JSON access log (which never holds a key).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "testing/temp_dir.h"

namespace ailb::testing {
namespace {

using nlohmann::json;

constexpr char kAdminKey[] = "sk-admin-integration-0123456789";
constexpr int kTokensPerReply = 11 + 7;  // the fake's default usage

std::vector<std::string> Headers(const std::string& key) {
  return {"Content-Type: application/json", "Authorization: Bearer " + key};
}

class AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTestDir("access");
    auto fake = FakeLlmServer::Start();
    ASSERT_TRUE(fake.ok());
    fake_ = *std::move(fake);
    FakeBehavior behavior;
    // Long enough that concurrent requests overlap.
    behavior.delay_before_headers_ms = 40;
    fake_->SetDefaultBehavior(behavior);
    config_path_ = dir_ + "/ailb.yaml";
    std::ofstream(config_path_) << absl::StrCat(
        "model_list:\n"
        "  - {model_name: m, id: d1, provider: openai, model: up-m, api_base: \"",
        fake_->BaseUrl(),
        "/v1\"}\n"
        "  - {model_name: other, id: d2, provider: openai, model: up-o, api_base: \"",
        fake_->BaseUrl(),
        "/v1\"}\n"
        "api_keys:\n"
        "  - key: sk-configured-team-0123\n"
        "    name: team-config\n"
        "    models: [m]\n");
  }
  void TearDown() override { RemoveTestDir(dir_); }

  std::unique_ptr<AilbProcess> Start() {
    return AilbProcess::Start({{"AILB_CONFIG", config_path_},
                               {"AILB_DATA_DIR", dir_ + "/data"},
                               {"AILB_ADMIN_KEY", kAdminKey},
                               {"LOG_FORMAT", "json"}});
  }

  // Creates a key through the admin API; returns {id, key}.
  static std::pair<std::string, std::string> CreateKey(const AilbProcess& ailb, const json& body) {
    HttpResult created =
        HttpCall("POST", ailb.Url("/v1/admin/keys"), body.dump(), Headers(kAdminKey));
    EXPECT_EQ(created.status, 201) << created.body;
    json reply = created.Json();
    return {reply.value("id", ""), reply.value("key", "")};
  }

  static HttpResult Chat(const AilbProcess& ailb, const std::string& key,
                         const std::string& model = "m") {
    return HttpCall("POST", ailb.Url("/v1/chat/completions"),
                    ChatBody(model, false, {{"max_tokens", 16}}), Headers(key));
  }

  std::string dir_;
  std::string config_path_;
  std::unique_ptr<FakeLlmServer> fake_;
};

TEST_F(AccessTest, KeysAreCheckedAndAdministeredByTheAdminOnly) {
  auto ailb = Start();
  ASSERT_NE(ailb, nullptr);
  EXPECT_TRUE(ailb->WaitForLog("the data plane requires API keys", std::chrono::seconds(5)));

  HttpResult anonymous = HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false));
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.Header("www-authenticate"), "Bearer");
  EXPECT_EQ(anonymous.Json()["error"]["code"], "missing_api_key");
  EXPECT_EQ(Chat(*ailb, "sk-wrong-key-0123").status, 401);

  // The configured key works for its model only.
  EXPECT_EQ(Chat(*ailb, "sk-configured-team-0123").status, 200);
  HttpResult other = Chat(*ailb, "sk-configured-team-0123", "other");
  EXPECT_EQ(other.status, 403);
  EXPECT_EQ(other.Json()["error"]["code"], "model_not_allowed");

  // Key administration needs the admin key; so do RAG and sessions once an admin key exists.
  HttpResult not_admin =
      HttpCall("GET", ailb->Url("/v1/admin/keys"), "", Headers("sk-configured-team-0123"));
  EXPECT_EQ(not_admin.status, 403);
  EXPECT_EQ(not_admin.Json()["error"]["code"], "admin_key_required");
  EXPECT_EQ(
      HttpCall("GET", ailb->Url("/v1/rag/collections"), "", Headers("sk-configured-team-0123"))
          .status,
      403);
  EXPECT_EQ(HttpCall("GET", ailb->Url("/v1/rag/collections"), "", Headers(kAdminKey)).status, 200);
  EXPECT_EQ(HttpCall("GET", ailb->Url("/v1/admin/keys"), "").status, 401);

  HttpResult wrong_method = HttpCall("PUT", ailb->Url("/v1/admin/keys"), "{}", Headers(kAdminKey));
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.Header("allow"), "GET, POST");

  // Bad limits are refused with the field named.
  HttpResult bad =
      HttpCall("POST", ailb->Url("/v1/admin/keys"), R"({"rpm": -1})", Headers(kAdminKey));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.Json()["error"]["param"], "rpm");
  bad = HttpCall("POST", ailb->Url("/v1/admin/keys"), R"({"rmp": 5})", Headers(kAdminKey));
  EXPECT_EQ(bad.status, 400);
  bad = HttpCall("POST", ailb->Url("/v1/admin/keys"), "{", Headers(kAdminKey));
  EXPECT_EQ(bad.status, 400);

  // A created key with an rpm limit.
  auto [id, key] = CreateKey(*ailb, {{"name", "limited"}, {"rpm", 3}});
  ASSERT_FALSE(key.empty());
  EXPECT_TRUE(absl::StartsWith(key, "sk-ailb-"));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Chat(*ailb, key).status, 200) << i;
  HttpResult limited = Chat(*ailb, key);
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(limited.Json()["error"]["code"], "rate_limit_exceeded");
  EXPECT_FALSE(limited.Header("retry-after").empty());

  // The listing shows no secret, and the key's usage.
  HttpResult listing = HttpCall("GET", ailb->Url("/v1/admin/keys"), "", Headers(kAdminKey));
  ASSERT_EQ(listing.status, 200);
  EXPECT_EQ(listing.body.find(key), std::string::npos);
  HttpResult one = HttpCall("GET", ailb->Url("/v1/admin/keys/" + id), "", Headers(kAdminKey));
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.Json()["usage"]["today"]["requests"], 3);
  EXPECT_EQ(one.Json()["usage"]["today"]["tokens"], 3 * kTokensPerReply);

  // Revoked keys stop working at once.
  EXPECT_EQ(HttpCall("DELETE", ailb->Url("/v1/admin/keys/" + id), "", Headers(kAdminKey)).status,
            200);
  EXPECT_EQ(Chat(*ailb, key).status, 401);

  // The access log is JSON, one object per request, and never holds a key.
  const std::string logs = ailb->Logs();
  for (const std::string& secret :
       {key, std::string(kAdminKey), std::string("sk-configured-team-0123")}) {
    EXPECT_EQ(logs.find(secret), std::string::npos) << "a key reached the log";
  }
  int access_lines = 0;
  for (absl::string_view line : absl::StrSplit(logs, '\n')) {
    if (!absl::StrContains(line, "\"log\":\"access\"") || !absl::StrContains(line, "\"model\":")) {
      continue;  // not an access line, or one for another endpoint
    }
    json parsed = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(parsed.is_object()) << line;
    for (const char* field : {"ts_ms", "level", "request_id", "client", "key_id", "session_id",
                              "model", "status", "outcome", "latency_ms"}) {
      EXPECT_TRUE(parsed.contains(field)) << field << " missing in " << line;
    }
    if (parsed["status"] == 200) {
      for (const char* field : {"deployment", "provider", "attempts", "prompt_tokens",
                                "completion_tokens", "cost_usd", "upstream_ms", "overhead_ms"}) {
        EXPECT_TRUE(parsed.contains(field)) << field << " missing in " << line;
      }
      EXPECT_EQ(parsed["prompt_tokens"], 11);
    }
    ++access_lines;
  }
  // 2 x 401, 1 + 1 configured-key requests, 3 + 1 limited and 1 revoked: every chat request.
  EXPECT_EQ(access_lines, 9);
}

TEST_F(AccessTest, DayBudgetHoldsUnderConcurrentRequestsAndSurvivesRestart) {
  constexpr int kBudget = 100;
  std::string id;
  std::string key;
  int succeeded = 0;
  {
    auto ailb = Start();
    ASSERT_NE(ailb, nullptr);
    std::tie(id, key) = CreateKey(*ailb, {{"name", "budget"}, {"tokens_per_day", kBudget}});
    ASSERT_FALSE(key.empty());
    std::atomic<int> ok{0};
    std::atomic<int> over_budget{0};
    std::atomic<int> other{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 16; ++c) {
      clients.emplace_back([&] {
        for (int i = 0; i < 3; ++i) {
          HttpResult result = Chat(*ailb, key);
          if (result.status == 200) {
            ok.fetch_add(1);
          } else if (result.status == 429 &&
                     result.Json()["error"]["code"] == "insufficient_quota") {
            over_budget.fetch_add(1);
          } else {
            other.fetch_add(1);
          }
        }
      });
    }
    for (std::thread& client : clients) client.join();
    succeeded = ok.load();
    EXPECT_EQ(other.load(), 0);
    EXPECT_GT(over_budget.load(), 0);
    EXPECT_GE(succeeded, 1);
    // No overspend beyond one request.
    EXPECT_LE(succeeded * kTokensPerReply, kBudget + kTokensPerReply);
    HttpResult info = HttpCall("GET", ailb->Url("/v1/admin/keys/" + id), "", Headers(kAdminKey));
    ASSERT_EQ(info.status, 200);
    EXPECT_EQ(info.Json()["usage"]["today"]["tokens"], succeeded * kTokensPerReply);
    EXPECT_EQ(info.Json()["usage"]["in_flight"], 0);
    HttpResult refused = Chat(*ailb, key);
    EXPECT_EQ(refused.status, 429);
    EXPECT_FALSE(refused.Header("retry-after").empty());
  }
  // Restarted (SIGTERM): the key and its spend are still there.
  auto ailb = Start();
  ASSERT_NE(ailb, nullptr);
  HttpResult info = HttpCall("GET", ailb->Url("/v1/admin/keys/" + id), "", Headers(kAdminKey));
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.Json()["usage"]["today"]["tokens"], succeeded * kTokensPerReply);
  HttpResult refused = Chat(*ailb, key);
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.Json()["error"]["code"], "insufficient_quota");
  // Raising the budget lets it through again.
  HttpResult raised = HttpCall("PATCH", ailb->Url("/v1/admin/keys/" + id),
                               json{{"tokens_per_day", 10 * kBudget}}.dump(), Headers(kAdminKey));
  ASSERT_EQ(raised.status, 200) << raised.body;
  EXPECT_EQ(raised.Json()["name"], "budget");
  EXPECT_EQ(Chat(*ailb, key).status, 200);
  // The key is stored hashed: its secret part is nowhere in the data directory.
  for (const char* file : {"/data/ailb.db", "/data/ailb.db-wal"}) {
    std::ifstream in(dir_ + file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    EXPECT_EQ(bytes.str().find(key.substr(8)), std::string::npos) << file;
  }
}

TEST_F(AccessTest, OpenDataPlaneIsAnnounced) {
  auto ailb = AilbProcess::Start({{"OPENAI_MODELS", "m"},
                                  {"OPENAI_BASE_URL", fake_->BaseUrl() + "/v1"},
                                  {"AILB_DATA_DIR", dir_ + "/open"}});
  ASSERT_NE(ailb, nullptr);
  EXPECT_TRUE(ailb->WaitForLog("the data plane is OPEN", std::chrono::seconds(5)));
  EXPECT_EQ(HttpCall("POST", ailb->Url("/v1/chat/completions"), ChatBody("m", false)).status, 200);
  // Without an admin key, key administration is off rather than open.
  HttpResult admin = HttpCall("POST", ailb->Url("/v1/admin/keys"), "{}");
  EXPECT_EQ(admin.status, 403);
  EXPECT_NE(admin.Json()["error"]["message"].get<std::string>().find("AILB_ADMIN_KEY"),
            std::string::npos);
}

}  // namespace
}  // namespace ailb::testing
