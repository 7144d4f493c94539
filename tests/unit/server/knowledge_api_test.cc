// The knowledge API's method handling: a known path with a wrong method is a 405 carrying the
// path's Allow header (RFC 9110), whatever the state of the stores.
#include "ailb/server/knowledge_api.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::server {
namespace {

using ::testing::HasSubstr;

class KnowledgeApiTest : public ::testing::Test {
 protected:
  // No stores: RAG and memory answer 503 to a request they would serve.
  config::ConfigStore config_{std::make_shared<config::Config>()};
  std::unique_ptr<BlockingApi> api_ = NewKnowledgeApi({nullptr, nullptr, &config_, nullptr});
};

TEST_F(KnowledgeApiTest, WrongMethodIs405WithTheAllowedMethods) {
  struct Case {
    std::string method;
    std::string path;
    std::string allow;
  };
  const std::vector<Case> cases = {
      {"PUT", "/v1/rag/collections", "GET, POST"},
      {"DELETE", "/v1/rag/collections/", "GET, POST"},
      {"POST", "/v1/rag/collections/docs", "GET, DELETE"},
      {"PATCH", "/v1/rag/collections/docs%2Fv2", "GET, DELETE"},
      {"GET", "/v1/rag/collections/docs/documents", "POST"},
      {"GET", "/v1/rag/collections/docs/documents/a/b", "DELETE"},
      {"GET", "/v1/rag/collections/docs/query", "POST"},
      {"POST", "/v1/sessions/s-1", "GET, DELETE"},
      {"PUT", "/v1/sessions/a/b", "GET, DELETE"},
      {"GET", "/v1/embeddings", "POST"},
      {"DELETE", "/embeddings", "POST"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.method, " ", c.path));
    ASSERT_TRUE(api_->Handles(c.path));
    absl::StatusOr<BlockingApi::Reply> reply = api_->Handle(c.method, c.path, "");
    ASSERT_FALSE(reply.ok());
    const HttpError error = ToHttpError(reply.status());
    EXPECT_EQ(error.http_status, 405);
    EXPECT_EQ(error.code, "method_not_allowed");
    EXPECT_EQ(error.allow, c.allow);
    EXPECT_EQ(AllowOf(reply.status()), c.allow);
    EXPECT_THAT(error.message, HasSubstr(absl::StrCat(c.method, " is not allowed on ", c.path)));
  }
}

TEST_F(KnowledgeApiTest, AllowedMethodsReachTheStores) {
  // The same paths with a supported method get past the method check: here, to the 503 of a
  // store that is not available (and no Allow header).
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/rag/collections"},
           {"DELETE", "/v1/rag/collections/docs"},
           {"DELETE", "/v1/rag/collections/docs/documents/a"},
           {"POST", "/v1/rag/collections/docs/query"},
           {"GET", "/v1/sessions/s-1"},
           {"DELETE", "/v1/sessions/s-1"}}) {
    SCOPED_TRACE(absl::StrCat(method, " ", path));
    absl::StatusOr<BlockingApi::Reply> reply = api_->Handle(method, path, "{}");
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(ToHttpError(reply.status()).allow, "");
  }
}

TEST_F(KnowledgeApiTest, AnUnknownSubPathIsNotA405) {
  absl::StatusOr<BlockingApi::Reply> reply =
      api_->Handle("PUT", "/v1/rag/collections/docs/bogus", "");
  ASSERT_FALSE(reply.ok());
  EXPECT_NE(ToHttpError(reply.status()).http_status, 405);
  EXPECT_EQ(AllowOf(reply.status()), "");
}

}  // namespace
}  // namespace ailb::server
