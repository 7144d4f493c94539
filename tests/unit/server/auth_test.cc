// Data-plane API keys: which header a key is taken from, plain and sha256: configured keys, and
// refusals that never echo a key.
#include "server/http/auth.h"

#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::optional<std::string> kNone = std::nullopt;

// --- PresentedApiKey --------------------------------------------------------------------------

TEST(PresentedApiKeyTest, BearerTakesPrecedence) {
  EXPECT_EQ(PresentedApiKey("Bearer from-auth", "from-x", "from-azure"), "from-auth");
}

TEST(PresentedApiKeyTest, XApiKeyBeforeApiKey) {
  EXPECT_EQ(PresentedApiKey(kNone, "from-x", "from-azure"), "from-x");
  EXPECT_EQ(PresentedApiKey(kNone, kNone, "from-azure"), "from-azure");
}

TEST(PresentedApiKeyTest, NothingPresented) {
  EXPECT_EQ(PresentedApiKey(kNone, kNone, kNone), std::nullopt);
  EXPECT_EQ(PresentedApiKey(std::string(""), std::string(""), std::string("")), std::nullopt);
}

TEST(PresentedApiKeyTest, BearerSchemeIsCaseInsensitiveAndTrimmed) {
  EXPECT_EQ(PresentedApiKey("bearer k1", kNone, kNone), "k1");
  EXPECT_EQ(PresentedApiKey("BEARER k1", kNone, kNone), "k1");
  EXPECT_EQ(PresentedApiKey("  Bearer   k1  ", kNone, kNone), "k1");
  EXPECT_EQ(PresentedApiKey("Bearer\tk1", kNone, kNone), std::nullopt);  // the scheme needs a space
}

TEST(PresentedApiKeyTest, NonBearerAuthorizationFallsThrough) {
  EXPECT_EQ(PresentedApiKey("Basic dXNlcjpwYXNz", "from-x", kNone), "from-x");
  EXPECT_EQ(PresentedApiKey("Basic dXNlcjpwYXNz", kNone, kNone), std::nullopt);
  EXPECT_EQ(PresentedApiKey("sk-raw-key-without-scheme", kNone, "from-azure"), "from-azure");
}

TEST(PresentedApiKeyTest, EmptyBearerFallsThrough) {
  EXPECT_EQ(PresentedApiKey("Bearer ", "from-x", kNone), "from-x");
  EXPECT_EQ(PresentedApiKey("Bearer     ", kNone, "from-azure"), "from-azure");
  EXPECT_EQ(PresentedApiKey("Bearer", kNone, kNone), std::nullopt);
}

TEST(PresentedApiKeyTest, EmptyXApiKeyFallsThrough) {
  EXPECT_EQ(PresentedApiKey(kNone, std::string(""), "from-azure"), "from-azure");
}

TEST(PresentedApiKeyTest, KeyIsReturnedVerbatim) {
  EXPECT_EQ(PresentedApiKey("Bearer sk-AbC.123_=/+", kNone, kNone), "sk-AbC.123_=/+");
  EXPECT_EQ(PresentedApiKey(kNone, " spaced ", kNone), " spaced ");
}

// --- Sha256Hex --------------------------------------------------------------------------------

TEST(Sha256HexTest, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(std::string("a\0b", 3)).size(), 64u);
  EXPECT_NE(Sha256Hex(std::string("a\0b", 3)), Sha256Hex("a"));
}

// --- CheckApiKey ------------------------------------------------------------------------------

TEST(CheckApiKeyTest, PlainKeyMatches) {
  EXPECT_TRUE(CheckApiKey({"sk-one", "sk-two"}, "sk-one").ok());
  EXPECT_TRUE(CheckApiKey({"sk-one", "sk-two"}, "sk-two").ok());
}

TEST(CheckApiKeyTest, HashedKeyMatches) {
  const std::vector<std::string> configured = {"sha256:" + Sha256Hex("sk-hashed")};
  EXPECT_TRUE(CheckApiKey(configured, "sk-hashed").ok());
  EXPECT_FALSE(CheckApiKey(configured, "sk-hashed2").ok());
}

TEST(CheckApiKeyTest, HashedKeyAcceptsUppercaseHex) {
  std::string hash = Sha256Hex("sk-hashed");
  for (char& c : hash) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(CheckApiKey({"sha256:" + hash}, "sk-hashed").ok());
}

TEST(CheckApiKeyTest, MixedPlainAndHashed) {
  const std::vector<std::string> configured = {"sk-plain", "sha256:" + Sha256Hex("sk-hashed")};
  EXPECT_TRUE(CheckApiKey(configured, "sk-plain").ok());
  EXPECT_TRUE(CheckApiKey(configured, "sk-hashed").ok());
  EXPECT_FALSE(CheckApiKey(configured, "sk-other").ok());
}

TEST(CheckApiKeyTest, KnowingTheStoredHashIsNotEnough) {
  const std::string hash = Sha256Hex("sk-hashed");
  const std::vector<std::string> configured = {"sha256:" + hash};
  EXPECT_FALSE(CheckApiKey(configured, hash).ok());
  EXPECT_FALSE(CheckApiKey(configured, "sha256:" + hash).ok());
}

TEST(CheckApiKeyTest, MalformedHashNeverMatches) {
  EXPECT_FALSE(CheckApiKey({"sha256:"}, "").ok());
  EXPECT_FALSE(CheckApiKey({"sha256:abc"}, "abc").ok());
  EXPECT_FALSE(CheckApiKey({"sha256:" + Sha256Hex("k").substr(0, 63)}, "k").ok());
}

TEST(CheckApiKeyTest, WrongKeyIsUnauthenticated) {
  const absl::Status status = CheckApiKey({"sk-right"}, "sk-wrong");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorCodeOf(status), "invalid_api_key");
  EXPECT_EQ(ToHttpError(status).http_status, 401);
  EXPECT_EQ(ToHttpError(status).type, "authentication_error");
}

TEST(CheckApiKeyTest, MatchIsExact) {
  const std::vector<std::string> configured = {"sk-right"};
  for (const char* presented : {"sk-righ", "sk-right ", " sk-right", "SK-RIGHT", "sk-rightt", ""}) {
    EXPECT_FALSE(CheckApiKey(configured, std::string(presented)).ok()) << presented;
  }
}

TEST(CheckApiKeyTest, MissingKeyIsUnauthenticated) {
  const absl::Status status = CheckApiKey({"sk-right"}, std::nullopt);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorCodeOf(status), "missing_api_key");
  EXPECT_EQ(ToHttpError(status).http_status, 401);
  EXPECT_THAT(std::string(status.message()), HasSubstr("Authorization: Bearer"));
}

TEST(CheckApiKeyTest, NoConfiguredKeysRefusesEveryKey) {
  // An open server does not call CheckApiKey at all; an empty list must not mean "anything goes".
  EXPECT_EQ(CheckApiKey({}, "anything").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(CheckApiKey({}, "").code(), absl::StatusCode::kUnauthenticated);
}

TEST(CheckApiKeyTest, MessagesNeverContainTheKeys) {
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

}  // namespace
}  // namespace ailb::server
