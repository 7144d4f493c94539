// Clients keep connections alive (every OpenAI SDK does): many requests, streamed and not, on one
// connection must each get their own reply, in order.
#include <curl/curl.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "nlohmann/json.hpp"

namespace ailb::testing {
namespace {

size_t Collect(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

TEST(KeepAliveTest, ManyChatRequestsOnOneConnection) {
  auto upstream = FakeLlmServer::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  auto ailb = AilbProcess::Start(
      {{"OPENAI_BASE_URL", (*upstream)->BaseUrl() + "/v1"}, {"OPENAI_MODELS", "gpt-test"}});
  ASSERT_NE(ailb, nullptr);

  CURL* curl = curl_easy_init();
  ASSERT_NE(curl, nullptr);
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  std::string body;
  curl_easy_setopt(curl, CURLOPT_URL, ailb->Url("/v1/chat/completions").c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10'000L);
  for (int i = 0; i < 12; ++i) {
    const bool stream = i % 3 == 2;
    const std::string request = ChatBody("gpt-test", stream, {{"user", absl::StrCat("u", i)}});
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.c_str());
    body.clear();
    ASSERT_EQ(curl_easy_perform(curl), CURLE_OK) << i;
    long status = 0;
    long new_connections = -1;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &new_connections);
    EXPECT_EQ(status, 200) << "request " << i << ": " << body;
    if (i > 0) {
      EXPECT_EQ(new_connections, 0) << "request " << i << " did not reuse the connection";
    }
    if (stream) {
      EXPECT_EQ(StreamedContent(body), "Hello from the fake upstream.") << i;
    } else {
      nlohmann::json reply = nlohmann::json::parse(body, nullptr, false);
      ASSERT_TRUE(reply.is_object()) << i << ": " << body;
      EXPECT_EQ(reply["object"], "chat.completion") << i;
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  // One connection served everything, and the upstream saw every request.
  EXPECT_EQ((*upstream)->RequestCount(), 12u);
}

}  // namespace
}  // namespace ailb::testing
