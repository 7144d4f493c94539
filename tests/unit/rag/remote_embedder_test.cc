// The remote embedder against the fake upstream, through the real libcurl client.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/rag/embedder.h"
#include "ailb/upstream/http_client.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::rag {
namespace {

using ::ailb::testing::FakeBehavior;
using ::ailb::testing::FakeLlmServer;
using ::ailb::testing::RecordedRequest;
using Json = nlohmann::json;
using Api = RemoteEmbedderOptions::Api;
using namespace std::chrono_literals;

class CurlEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { curl_global_init(CURL_GLOBAL_DEFAULT); }
  void TearDown() override { curl_global_cleanup(); }
};
[[maybe_unused]] const auto* const kCurlEnvironment =
    ::testing::AddGlobalTestEnvironment(new CurlEnvironment);

double Norm(const Vector& v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

// A loopback port with nothing listening: bound, then closed.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t length = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    if (fd >= 0) ::close(fd);
    return 1;  // port 1 on loopback is closed too
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

class RemoteEmbedderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = FakeLlmServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    client_ = upstream::NewCurlHttpClient();
  }

  RemoteEmbedderOptions OpenAIOptions() const {
    RemoteEmbedderOptions options;
    options.api = Api::kOpenAI;
    options.base_url = server_->BaseUrl() + "/v1/";  // the trailing slash is tolerated
    options.api_key = "sk-test";
    options.model = "text-embedding-3-small";
    options.dimensions = 8;  // the fake's default
    options.timeout = 10s;
    return options;
  }

  RemoteEmbedderOptions OllamaOptions() const {
    RemoteEmbedderOptions options;
    options.api = Api::kOllama;
    options.base_url = server_->BaseUrl();
    options.model = "nomic-embed-text";
    options.dimensions = 8;
    options.timeout = 10s;
    return options;
  }

  std::unique_ptr<Embedder> Make(RemoteEmbedderOptions options) {
    auto embedder = NewRemoteEmbedder(*client_, std::move(options));
    EXPECT_TRUE(embedder.ok()) << embedder.status();
    return embedder.ok() ? std::move(*embedder) : nullptr;
  }

  // The status of embedding `texts` with `options` after queueing `behavior`.
  absl::Status FailureFor(RemoteEmbedderOptions options, const FakeBehavior& behavior,
                          std::vector<std::string> texts = {"alpha", "beta"}) {
    std::unique_ptr<Embedder> embedder = Make(std::move(options));
    if (embedder == nullptr) return absl::InternalError("no embedder");
    server_->EnqueueBehavior(behavior);
    auto result = embedder->Embed(texts);
    return result.ok() ? absl::OkStatus() : result.status();
  }

  std::unique_ptr<FakeLlmServer> server_;
  std::unique_ptr<upstream::HttpClient> client_;
};

TEST_F(RemoteEmbedderTest, ValidatesOptions) {
  const auto code_for = [&](RemoteEmbedderOptions options) {
    auto embedder = NewRemoteEmbedder(*client_, std::move(options));
    return embedder.ok() ? absl::StatusCode::kOk : embedder.status().code();
  };
  RemoteEmbedderOptions o = OpenAIOptions();
  EXPECT_EQ(code_for(o), absl::StatusCode::kOk);
  o.base_url = "";
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o.base_url = "ftp://example.com";
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o = OpenAIOptions();
  o.model = "";
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o = OpenAIOptions();
  o.dimensions = -1;
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o.dimensions = 65537;
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o = OpenAIOptions();
  o.batch_size = 0;
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o.batch_size = 5000;
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
  o = OpenAIOptions();
  o.timeout = 0ms;
  EXPECT_EQ(code_for(o), absl::StatusCode::kInvalidArgument);
}

TEST_F(RemoteEmbedderTest, DescribesItself) {
  std::unique_ptr<Embedder> openai = Make(OpenAIOptions());
  ASSERT_NE(openai, nullptr);
  EXPECT_EQ(openai->provider(), "openai");
  EXPECT_EQ(openai->model(), "text-embedding-3-small");
  EXPECT_EQ(openai->dimensions(), 8);
  std::unique_ptr<Embedder> ollama = Make(OllamaOptions());
  ASSERT_NE(ollama, nullptr);
  EXPECT_EQ(ollama->provider(), "ollama");
  EXPECT_EQ(ollama->model(), "nomic-embed-text");
}

TEST_F(RemoteEmbedderTest, OpenAIBatchesAndKeepsOrder) {
  std::unique_ptr<Embedder> embedder = Make(OpenAIOptions());
  ASSERT_NE(embedder, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 150; ++i) texts.push_back(absl::StrCat("text number ", i));
  auto vectors = embedder->Embed(texts);
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  ASSERT_EQ(vectors->size(), 150u);
  EXPECT_EQ(server_->EmbeddingRequestCount(), 3u);  // 64 + 64 + 22
  EXPECT_EQ(server_->EmbeddingInputCount(), 150u);

  const std::vector<RecordedRequest> requests = server_->Requests();
  ASSERT_EQ(requests.size(), 3u);
  const std::vector<size_t> sizes = {64, 64, 22};
  for (size_t r = 0; r < requests.size(); ++r) {
    EXPECT_EQ(requests[r].method, "POST");
    EXPECT_EQ(requests[r].path, "/v1/embeddings");
    EXPECT_EQ(requests[r].Header("authorization"), "Bearer sk-test");
    EXPECT_EQ(requests[r].Header("content-type"), "application/json");
    const Json body = requests[r].JsonBody();
    ASSERT_TRUE(body.is_object()) << requests[r].body;
    EXPECT_EQ(body["model"], "text-embedding-3-small");
    EXPECT_EQ(body["encoding_format"], "float");
    EXPECT_FALSE(body.contains("dimensions"));
    ASSERT_EQ(body["input"].size(), sizes[r]);
    EXPECT_EQ(body["input"][0], texts[r * 64]);
  }

  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_EQ((*vectors)[i].size(), 8u);
    EXPECT_NEAR(Norm((*vectors)[i]), 1.0, 1e-5);
  }
  EXPECT_NE((*vectors)[0], (*vectors)[1]);
  // Each position holds its own text's vector: the same as embedding that text alone.
  for (size_t i : {size_t{0}, size_t{63}, size_t{64}, size_t{100}, size_t{149}}) {
    auto single = embedder->Embed({texts[i]});
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_EQ((*single)[0], (*vectors)[i]) << i;
  }
}

TEST_F(RemoteEmbedderTest, OrdersByIndexNotArrayPosition) {
  std::unique_ptr<Embedder> embedder = Make(OpenAIOptions());
  ASSERT_NE(embedder, nullptr);
  const std::vector<std::string> texts = {"one", "two", "three", "four"};
  auto in_order = embedder->Embed(texts);
  ASSERT_TRUE(in_order.ok());
  FakeBehavior reversed;
  reversed.reverse_embeddings = true;
  server_->EnqueueBehavior(reversed);
  auto shuffled = embedder->Embed(texts);
  ASSERT_TRUE(shuffled.ok()) << shuffled.status();
  EXPECT_EQ(*shuffled, *in_order);
}

TEST_F(RemoteEmbedderTest, SendsDimensionsWhenAsked) {
  RemoteEmbedderOptions options = OpenAIOptions();
  options.dimensions = 16;
  options.send_dimensions = true;
  options.api_key = "";
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  auto vectors = embedder->Embed({"alpha"});
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  EXPECT_EQ((*vectors)[0].size(), 16u);
  const std::vector<RecordedRequest> requests = server_->Requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].JsonBody()["dimensions"], 16);
  EXPECT_EQ(requests[0].Header("authorization"), "");
}

TEST_F(RemoteEmbedderTest, Ollama) {
  RemoteEmbedderOptions options = OllamaOptions();
  options.batch_size = 2;
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  const std::vector<std::string> texts = {"alpha", "beta", "gamma"};
  auto vectors = embedder->Embed(texts);
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  ASSERT_EQ(vectors->size(), 3u);
  EXPECT_EQ(server_->EmbeddingRequestCount(), 2u);
  const std::vector<RecordedRequest> requests = server_->Requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].path, "/api/embed");
  EXPECT_EQ(requests[0].Header("authorization"), "");
  const Json body = requests[0].JsonBody();
  EXPECT_EQ(body["model"], "nomic-embed-text");
  EXPECT_EQ(body["input"], Json::array({"alpha", "beta"}));
  EXPECT_FALSE(body.contains("encoding_format"));

  // The fake derives vectors from the text alone, so both APIs must agree.
  std::unique_ptr<Embedder> openai = Make(OpenAIOptions());
  ASSERT_NE(openai, nullptr);
  auto expected = openai->Embed(texts);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(*vectors, *expected);
}

TEST_F(RemoteEmbedderTest, BlankTextsAreZeroVectorsWithoutARoundTrip) {
  std::unique_ptr<Embedder> embedder = Make(OpenAIOptions());
  ASSERT_NE(embedder, nullptr);
  auto vectors = embedder->Embed({"", "alpha", " \n "});
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  ASSERT_EQ(vectors->size(), 3u);
  EXPECT_EQ((*vectors)[0], Vector(8, 0.0f));
  EXPECT_EQ((*vectors)[2], Vector(8, 0.0f));
  EXPECT_NEAR(Norm((*vectors)[1]), 1.0, 1e-5);
  EXPECT_EQ(server_->EmbeddingInputCount(), 1u);

  auto none = embedder->Embed({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto blanks = embedder->Embed({"", ""});
  ASSERT_TRUE(blanks.ok());
  EXPECT_EQ(server_->EmbeddingRequestCount(), 1u);
}

TEST_F(RemoteEmbedderTest, HttpErrorsMapToStatusCodesWithTheProviderMessage) {
  FakeBehavior failing;
  failing.status = 500;
  absl::Status s = FailureFor(OpenAIOptions(), failing);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("HTTP 500"), absl::string_view::npos) << s;

  FakeBehavior unauthorized;
  unauthorized.status = 401;
  unauthorized.error_body =
      R"({"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}})";
  s = FailureFor(OpenAIOptions(), unauthorized);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_NE(s.message().find("Incorrect API key provided"), absl::string_view::npos) << s;

  FakeBehavior bad_request;
  bad_request.status = 400;
  s = FailureFor(OpenAIOptions(), bad_request);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  FakeBehavior limited;
  limited.status = 429;
  limited.extra_headers = {{"Retry-After", "7"}};
  s = FailureFor(OpenAIOptions(), limited);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(RetryAfterOf(s), 7);

  FakeBehavior missing;
  missing.status = 404;
  missing.error_body = R"({"error":"model \"nomic-embed-text\" not found, try pulling it first"})";
  s = FailureFor(OllamaOptions(), missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("try pulling it first"), absl::string_view::npos) << s;

  FakeBehavior plain;
  plain.status = 502;
  plain.error_body = "<html>Bad Gateway</html>";
  s = FailureFor(OpenAIOptions(), plain);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("Bad Gateway"), absl::string_view::npos) << s;
}

TEST_F(RemoteEmbedderTest, BadRepliesAreBadGateway) {
  FakeBehavior malformed;
  malformed.malformed_json = true;
  absl::Status s = FailureFor(OpenAIOptions(), malformed);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(HttpStatusOverride(s), 502) << s;

  for (int delta : {-1, 1}) {
    FakeBehavior wrong_count;
    wrong_count.embedding_count_delta = delta;
    s = FailureFor(OpenAIOptions(), wrong_count);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_EQ(HttpStatusOverride(s), 502) << s;
    s = FailureFor(OllamaOptions(), wrong_count);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_EQ(HttpStatusOverride(s), 502) << s;
  }
}

TEST_F(RemoteEmbedderTest, DimensionMismatchIsFailedPrecondition) {
  FakeBehavior wide;
  wide.embedding_dims = 12;  // the provider ignores what the collection expects
  absl::Status s = FailureFor(OpenAIOptions(), wide);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("12"), absl::string_view::npos) << s;

  s = FailureFor(OllamaOptions(), wide);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST_F(RemoteEmbedderTest, ZeroDimensionsAcceptsTheProvidersSize) {
  RemoteEmbedderOptions options = OpenAIOptions();
  options.dimensions = 0;
  options.send_dimensions = true;  // nothing to send without a size
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  EXPECT_EQ(embedder->dimensions(), 0);
  FakeBehavior wide;
  wide.embedding_dims = 12;
  server_->EnqueueBehavior(wide);
  auto vectors = embedder->Embed({"alpha", "beta"});
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  EXPECT_EQ((*vectors)[0].size(), 12u);
  EXPECT_NEAR(Norm((*vectors)[1]), 1.0, 1e-5);
  EXPECT_FALSE(server_->Requests()[0].JsonBody().contains("dimensions"));

  // Batches of one call must agree.
  options.batch_size = 1;
  embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  server_->EnqueueBehavior(wide);
  auto mixed = embedder->Embed({"alpha", "beta"});  // 12, then the default 8
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(HttpStatusOverride(mixed.status()), 502) << mixed.status();
}

TEST_F(RemoteEmbedderTest, AFailedBatchFailsTheWholeCall) {
  RemoteEmbedderOptions options = OpenAIOptions();
  options.batch_size = 2;
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  server_->EnqueueBehavior(FakeBehavior{});
  FakeBehavior failing;
  failing.status = 503;
  server_->EnqueueBehavior(failing);
  auto result = embedder->Embed({"a", "b", "c", "d", "e"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server_->EmbeddingRequestCount(), 2u);  // stops at the first failure
}

TEST_F(RemoteEmbedderTest, ConnectionRefusedIsUnavailable) {
  RemoteEmbedderOptions options = OpenAIOptions();
  options.base_url = absl::StrCat("http://127.0.0.1:", ClosedPort(), "/v1");
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  auto result = embedder->Embed({"alpha"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
}

TEST_F(RemoteEmbedderTest, ResetConnectionIsUnavailable) {
  FakeBehavior reset;
  reset.reset_connection = true;
  const absl::Status s = FailureFor(OpenAIOptions(), reset);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST_F(RemoteEmbedderTest, SlowProviderIsDeadlineExceeded) {
  RemoteEmbedderOptions options = OpenAIOptions();
  options.timeout = 300ms;
  FakeBehavior slow;
  slow.delay_before_headers_ms = 3000;
  const auto started = std::chrono::steady_clock::now();
  const absl::Status s = FailureFor(options, slow);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(elapsed, 2500ms);

  // A delay within the timeout is fine.
  options.timeout = 5s;
  std::unique_ptr<Embedder> embedder = Make(options);
  ASSERT_NE(embedder, nullptr);
  FakeBehavior a_bit_slow;
  a_bit_slow.delay_before_headers_ms = 100;
  server_->EnqueueBehavior(a_bit_slow);
  EXPECT_TRUE(embedder->Embed({"alpha"}).ok());
}

TEST_F(RemoteEmbedderTest, ConcurrentCallersGetTheirOwnVectors) {
  std::unique_ptr<Embedder> embedder = Make(OpenAIOptions());
  ASSERT_NE(embedder, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 20; ++i) texts.push_back(absl::StrCat("concurrent ", i));
  auto expected = embedder->Embed(texts);
  ASSERT_TRUE(expected.ok());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 10; ++round) {
        auto got = embedder->Embed(texts);
        if (!got.ok() || *got != *expected) ++mismatches[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace ailb::rag
