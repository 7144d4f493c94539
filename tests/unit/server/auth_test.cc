// Which header a client's API key is taken from (checking it: tests/unit/auth/key_store_test.cc).
#include "server/http/auth.h"

#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ailb::server {
namespace {

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

}  // namespace
}  // namespace ailb::server
