#include "fakes/fake_llm_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;
using namespace std::chrono_literals;

// ------------------------------------------------------------------------------------------------
// Helpers.

// Splits `text` at every `sep`; empty pieces are dropped.
std::vector<std::string_view> Split(std::string_view text, std::string_view sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const size_t at = text.find(sep);
    if (!text.substr(0, at).empty()) out.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return out;
    text.remove_prefix(at + sep.size());
  }
}

bool StartsWith(std::string_view text, std::string_view prefix) { return text.starts_with(prefix); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

class CurlGlobal : public ::testing::Environment {
 public:
  void SetUp() override { curl_global_init(CURL_GLOBAL_DEFAULT); }
  void TearDown() override { curl_global_cleanup(); }
};
[[maybe_unused]] const auto* const kCurlEnv = ::testing::AddGlobalTestEnvironment(new CurlGlobal);

std::unique_ptr<FakeLlmServer> StartServer() {
  auto server = FakeLlmServer::Start();
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

// Polls `pred` until it holds or `timeout` passes (for counters updated by the loop thread just
// after the client saw the bytes).
bool Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using EasyHandle = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct Transfer {
  std::string body;
  std::vector<std::string> headers;  // raw header lines
  int data_callbacks = 0;
  std::function<void(std::string_view)> on_data;
  Slist header_list;
  std::string post_body;

  std::string Header(std::string_view name) const {
    for (const std::string& line : headers) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      if (EqualsIgnoreCase(std::string_view(line).substr(0, colon), name)) {
        std::string_view v = std::string_view(line).substr(colon + 1);
        while (!v.empty() && (v.front() == ' ')) v.remove_prefix(1);
        while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) {
          v.remove_suffix(1);
        }
        return std::string(v);
      }
    }
    return "";
  }
};

size_t WriteCallback(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string_view chunk(data, size * n);
  t->data_callbacks++;
  t->body.append(chunk);
  if (t->on_data) t->on_data(chunk);
  return size * n;
}

size_t HeaderCallback(char* data, size_t size, size_t n, void* user) {
  static_cast<Transfer*>(user)->headers.emplace_back(data, size * n);
  return size * n;
}

// Configures `easy` for one request; `t` must outlive the transfer.
void Configure(CURL* easy, Transfer& t, const std::string& url, std::string_view post_body,
               long timeout_ms = 10000, const std::vector<std::string>& extra_headers = {}) {
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, WriteCallback);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, HeaderCallback);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_slist* list = nullptr;
  list = curl_slist_append(list, "Content-Type: application/json");
  list = curl_slist_append(list, "Authorization: Bearer test-key");
  for (const std::string& h : extra_headers) list = curl_slist_append(list, h.c_str());
  t.header_list.reset(list);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  if (post_body.data() != nullptr) {
    t.post_body = std::string(post_body);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t.post_body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(t.post_body.size()));
  } else {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  }
}

struct Result {
  CURLcode code = CURLE_OK;
  long status = 0;
  long num_connects = -1;
  Transfer transfer;
};

// One request on `easy` (reused across calls for keep-alive).
Result Perform(CURL* easy, const std::string& url, std::string_view post_body = {},
               long timeout_ms = 10000, std::function<void(std::string_view)> on_data = nullptr,
               const std::vector<std::string>& extra_headers = {}) {
  Result r;
  r.transfer.on_data = std::move(on_data);
  Configure(easy, r.transfer, url, post_body, timeout_ms, extra_headers);
  r.code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &r.num_connects);
  return r;
}

Result Fetch(const std::string& url, std::string_view post_body = {}, long timeout_ms = 10000,
             std::function<void(std::string_view)> on_data = nullptr,
             const std::vector<std::string>& extra_headers = {}) {
  EasyHandle easy(curl_easy_init());
  return Perform(easy.get(), url, post_body, timeout_ms, std::move(on_data), extra_headers);
}

std::string ChatBody(bool stream, std::string_view model = "gpt-test", bool include_usage = false) {
  Json j = {{"model", model}, {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
  if (stream) j["stream"] = true;
  if (include_usage) j["stream_options"] = {{"include_usage", true}};
  return j.dump();
}

// Server-sent events: (event type, data) in order.
std::vector<std::pair<std::string, std::string>> ParseSse(std::string_view body) {
  std::vector<std::pair<std::string, std::string>> events;
  for (std::string_view block : Split(body, "\n\n")) {
    std::string type;
    std::string data;
    for (std::string_view line : Split(block, "\n")) {
      if (line.starts_with("event: ")) type = std::string(line.substr(7));
      if (line.starts_with("data: ")) data = std::string(line.substr(6));
    }
    events.emplace_back(type, data);
  }
  return events;
}

Json ParseJson(std::string_view text) { return Json::parse(text, nullptr, false); }

// Concatenated OpenAI delta contents of an SSE body; also returns the data payloads.
std::string OpenAiDeltas(const std::vector<std::pair<std::string, std::string>>& events) {
  std::string text;
  for (const auto& [type, data] : events) {
    if (data == "[DONE]") continue;
    const Json j = ParseJson(data);
    if (j.is_discarded() || j["choices"].empty()) continue;
    const Json& delta = j["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
  }
  return text;
}

// A blocking loopback TCP client for the byte-level tests.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { ::close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until `buffer_` contains `needle` (or EOF/timeout); returns whether it does.
  bool ReadUntil(std::string_view needle) {
    while (buffer_.find(needle) == std::string::npos) {
      if (!ReadSome()) return false;
    }
    return true;
  }
  // Reads one Content-Length response; returns "" on failure.
  std::string ReadResponse() {
    if (!ReadUntil("\r\n\r\n")) return "";
    const size_t head_end = buffer_.find("\r\n\r\n") + 4;
    size_t length = 0;
    for (std::string_view line : Split(std::string_view(buffer_).substr(0, head_end), "\r\n")) {
      if (line.starts_with("Content-Length: ")) length = std::stoul(std::string(line.substr(16)));
    }
    while (buffer_.size() < head_end + length) {
      if (!ReadSome()) return "";
    }
    std::string response = buffer_.substr(0, head_end + length);
    buffer_.erase(0, head_end + length);
    return response;
  }
  // Reads until the peer closes; returns whether it did (before the receive timeout).
  bool ReadToEof() {
    for (;;) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }
  std::string& buffer() { return buffer_; }

 private:
  bool ReadSome() {
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

// ------------------------------------------------------------------------------------------------
// OpenAI.

TEST(FakeLlmServerTest, OpenAiNonStreamReplyParsesAndHasUsage) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->BaseUrl(), absl::StrCat("http://127.0.0.1:", server->port()));

  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false, "gpt-x"));
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.transfer.Header("content-type"), HasSubstr("application/json"));
  EXPECT_EQ(r.transfer.Header("content-length"), std::to_string(r.transfer.body.size()));
  const Json j = ParseJson(r.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << r.transfer.body;
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "gpt-x");
  EXPECT_TRUE(j["id"].is_string());
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], FakeBehavior().reply_text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 11);
  EXPECT_EQ(j["usage"]["completion_tokens"], 7);
  EXPECT_EQ(j["usage"]["total_tokens"], 18);

  ASSERT_EQ(server->RequestCount(), 1u);
  const RecordedRequest req = server->Requests()[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/v1/chat/completions");
  EXPECT_EQ(req.Header("AUTHORIZATION"), "Bearer test-key");
  EXPECT_EQ(req.Header("x-absent"), "");
  EXPECT_EQ(req.JsonBody()["model"], "gpt-x");
  EXPECT_EQ(server->StreamsCompleted(), 0);
}

TEST(FakeLlmServerTest, ScriptedReplyAndPathWithoutV1Prefix) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.reply_text = "quote \" backslash \\ newline \n tab \t unicode é✓";
  b.prompt_tokens = 3;
  b.completion_tokens = 4;
  b.finish_reason = "length";
  server->EnqueueBehavior(b);
  Result r = Fetch(server->BaseUrl() + "/openai/chat/completions?api-version=1", ChatBody(false));
  ASSERT_EQ(r.code, CURLE_OK);
  const Json j = ParseJson(r.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << r.transfer.body;
  EXPECT_EQ(j["choices"][0]["message"]["content"], b.reply_text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  ASSERT_EQ(server->Requests().size(), 1u);
  EXPECT_EQ(server->Requests()[0].path, "/openai/chat/completions");
  EXPECT_EQ(server->Requests()[0].query, "api-version=1");
}

TEST(FakeLlmServerTest, StreamArrivesAsSeparateChunksOverTime) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.reply_text = "one two three four five";
  b.stream_chunks = 5;
  b.chunk_interval_ms = 100;
  server->EnqueueBehavior(b);

  int completed_at_first_data = -1;
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true), 20000,
                   [&](std::string_view) {
                     if (completed_at_first_data < 0) {
                       completed_at_first_data = server->StreamsCompleted();
                     }
                   });
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.transfer.Header("content-type"), HasSubstr("text/event-stream"));
  EXPECT_EQ(r.transfer.Header("transfer-encoding"), "chunked");
  // The first bytes arrived while the stream was still being produced.
  EXPECT_EQ(completed_at_first_data, 0);
  // Deltas separated by intervals cannot arrive in one read.
  EXPECT_GE(r.transfer.data_callbacks, b.stream_chunks);

  const auto events = ParseSse(r.transfer.body);
  // role chunk + 5 deltas + finish chunk + [DONE]
  ASSERT_EQ(events.size(), 8u) << r.transfer.body;
  const Json first = ParseJson(events[0].second);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["model"], "gpt-test");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "");
  for (size_t i = 1; i <= 5; ++i) {
    const Json chunk = ParseJson(events[i].second);
    ASSERT_FALSE(chunk.is_discarded()) << events[i].second;
    EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
    EXPECT_FALSE(chunk.contains("usage"));
  }
  const Json finish = ParseJson(events[6].second);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(finish["choices"][0]["delta"].empty());
  EXPECT_EQ(events.back().second, "[DONE]");
  EXPECT_EQ(OpenAiDeltas(events), b.reply_text);
  EXPECT_TRUE(Eventually([&] { return server->StreamsCompleted() == 1; }));
  EXPECT_EQ(server->StreamsAbortedByPeer(), 0);
}

TEST(FakeLlmServerTest, StreamPiecesRespectUtf8AndShortText) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.reply_text = "é✓😀";  // 2 + 3 + 4 bytes
  b.stream_chunks = 7;   // more chunks than characters: some pieces are empty
  server->SetDefaultBehavior(b);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  ASSERT_EQ(r.code, CURLE_OK);
  const auto events = ParseSse(r.transfer.body);
  ASSERT_EQ(events.size(), 1u + 7u + 2u);
  for (const auto& [type, data] : events) {
    if (data != "[DONE]") {
      EXPECT_FALSE(ParseJson(data).is_discarded()) << data;
    }
  }
  EXPECT_EQ(OpenAiDeltas(events), b.reply_text);
}

TEST(FakeLlmServerTest, StreamIncludeUsageChunk) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions",
                   ChatBody(true, "gpt-test", /*include_usage=*/true));
  ASSERT_EQ(r.code, CURLE_OK);
  const auto events = ParseSse(r.transfer.body);
  ASSERT_EQ(events.size(), 1u + 3u + 1u + 1u + 1u) << r.transfer.body;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const Json chunk = ParseJson(events[i].second);
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null()) << events[i].second;
  }
  const Json usage = ParseJson(events[events.size() - 2].second);
  EXPECT_TRUE(usage["choices"].is_array() && usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 11);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 7);
  EXPECT_EQ(usage["usage"]["total_tokens"], 18);
  EXPECT_EQ(events.back().second, "[DONE]");
  EXPECT_EQ(OpenAiDeltas(events), FakeBehavior().reply_text);
}

TEST(FakeLlmServerTest, ErrorStatusWithRetryAfterThenQueueDrains) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior limited;
  limited.status = 429;
  limited.extra_headers = {{"Retry-After", "2"}};
  server->EnqueueBehavior(limited);

  EasyHandle easy(curl_easy_init());
  Result r = Perform(easy.get(), server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.transfer.Header("retry-after"), "2");
  const Json j = ParseJson(r.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << r.transfer.body;
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(j["error"]["message"].is_string());

  // The queue is empty again: the default (success) behaviour applies, on the same connection.
  Result ok = Perform(easy.get(), server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  ASSERT_EQ(ok.code, CURLE_OK);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.num_connects, 0);
  EXPECT_EQ(server->StreamsCompleted(), 0);  // an error answer is not a stream
}

TEST(FakeLlmServerTest, ErrorBodiesFollowTheProvider) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior overloaded;
  overloaded.status = 529;
  server->EnqueueBehavior(overloaded);
  Result a = Fetch(server->BaseUrl() + "/v1/messages", ChatBody(false, "claude"));
  EXPECT_EQ(a.status, 529);
  const Json aj = ParseJson(a.transfer.body);
  EXPECT_EQ(aj["type"], "error");
  EXPECT_EQ(aj["error"]["type"], "overloaded_error");

  FakeBehavior failed;
  failed.status = 500;
  server->EnqueueBehavior(failed);
  Result o = Fetch(server->BaseUrl() + "/api/chat", ChatBody(false, "llama"));
  EXPECT_EQ(o.status, 500);
  EXPECT_TRUE(ParseJson(o.transfer.body)["error"].is_string()) << o.transfer.body;

  FakeBehavior custom;
  custom.status = 400;
  custom.error_body = R"({"error":{"message":"custom","type":"invalid_request_error"}})";
  server->EnqueueBehavior(custom);
  Result c = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  EXPECT_EQ(c.status, 400);
  EXPECT_EQ(c.transfer.body, custom.error_body);
}

TEST(FakeLlmServerTest, HangTimesOutClientAndIsRecorded) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior hang;
  hang.hang = true;
  server->EnqueueBehavior(hang);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false), 300);
  EXPECT_EQ(r.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_TRUE(r.transfer.body.empty());
  EXPECT_TRUE(server->WaitForRequests(1, 1s));
  EXPECT_EQ(server->Requests()[0].JsonBody()["model"], "gpt-test");
  // The client closed its connection; the server notices.
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
}

TEST(FakeLlmServerTest, DelayBeforeHeadersDelaysTheFirstByte) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior slow;
  slow.delay_before_headers_ms = 200;
  server->EnqueueBehavior(slow);
  const auto start = std::chrono::steady_clock::now();
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  ASSERT_EQ(r.code, CURLE_OK);
  // A lower bound only: the reply cannot come before the scripted delay.
  EXPECT_GE(std::chrono::steady_clock::now() - start, 190ms);
  EXPECT_EQ(r.status, 200);
}

TEST(FakeLlmServerTest, CutAfterChunksEndsTheStreamAbruptly) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior cut;
  cut.reply_text = "aaaabbbbccccdddd";
  cut.stream_chunks = 4;
  cut.cut_after_chunks = 2;
  server->EnqueueBehavior(cut);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_THAT(r.code, ::testing::AnyOf(CURLE_PARTIAL_FILE, CURLE_RECV_ERROR));
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.transfer.body, Not(HasSubstr("[DONE]")));
  EXPECT_THAT(r.transfer.body, Not(HasSubstr("finish_reason\":\"stop")));
  EXPECT_EQ(OpenAiDeltas(ParseSse(r.transfer.body)), "aaaabbbb");
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
  EXPECT_EQ(server->StreamsCompleted(), 0);
  EXPECT_EQ(server->StreamsAbortedByPeer(), 0);
}

TEST(FakeLlmServerTest, CutNonStreamSendsHalfTheBody) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior cut;
  cut.cut_after_chunks = 0;
  server->EnqueueBehavior(cut);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  EXPECT_EQ(r.code, CURLE_PARTIAL_FILE);
  EXPECT_TRUE(ParseJson(r.transfer.body).is_discarded());
}

TEST(FakeLlmServerTest, ResetConnectionFailsTheClient) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior reset;
  reset.reset_connection = true;
  server->EnqueueBehavior(reset);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  EXPECT_THAT(r.code, ::testing::AnyOf(CURLE_RECV_ERROR, CURLE_GOT_NOTHING));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(server->RequestCount(), 1u);
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
}

TEST(FakeLlmServerTest, KeepAliveReusesTheConnection) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EasyHandle easy(curl_easy_init());
  Result first = Perform(easy.get(), server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  ASSERT_EQ(first.code, CURLE_OK);
  EXPECT_EQ(first.num_connects, 1);
  Result second = Perform(easy.get(), server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  ASSERT_EQ(second.code, CURLE_OK);
  EXPECT_EQ(second.num_connects, 0);
  Result third = Perform(easy.get(), server->BaseUrl() + "/v1/models");
  ASSERT_EQ(third.code, CURLE_OK);
  EXPECT_EQ(third.num_connects, 0);
  EXPECT_EQ(server->OpenConnections(), 1);
  EXPECT_EQ(server->RequestCount(), 3u);
  easy.reset();
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
}

TEST(FakeLlmServerTest, ClientLeavingMidStreamCountsAsAborted) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior slow;
  slow.stream_chunks = 50;
  slow.chunk_interval_ms = 100;
  server->EnqueueBehavior(slow);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true), 300);
  EXPECT_EQ(r.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_THAT(r.transfer.body, HasSubstr("\"role\":\"assistant\""));
  EXPECT_TRUE(Eventually([&] { return server->StreamsAbortedByPeer() == 1; }));
  EXPECT_EQ(server->StreamsCompleted(), 0);

  FakeBehavior hang_mid;
  hang_mid.hang_mid_stream = true;
  hang_mid.reply_text = "first second third";
  server->EnqueueBehavior(hang_mid);
  Result h = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true), 300);
  EXPECT_EQ(h.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(OpenAiDeltas(ParseSse(h.transfer.body)), "first ");
  EXPECT_TRUE(Eventually([&] { return server->StreamsAbortedByPeer() == 2; }));
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
}

TEST(FakeLlmServerTest, MalformedJson) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior bad;
  bad.malformed_json = true;
  server->SetDefaultBehavior(bad);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.transfer.body.empty());
  EXPECT_TRUE(ParseJson(r.transfer.body).is_discarded());

  Result s = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  ASSERT_EQ(s.code, CURLE_OK);
  const auto events = ParseSse(s.transfer.body);
  ASSERT_GT(events.size(), 2u);
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_TRUE(ParseJson(events[i].second).is_discarded()) << events[i].second;
  }
}

TEST(FakeLlmServerTest, InvalidRequestJsonIsRejected) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ParseJson(r.transfer.body)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(server->RequestCount(), 1u);
}

// ------------------------------------------------------------------------------------------------
// Anthropic and Ollama.

TEST(FakeLlmServerTest, AnthropicNonStream) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.finish_reason = "length";
  server->EnqueueBehavior(b);
  Result r = Fetch(server->BaseUrl() + "/v1/messages", ChatBody(false, "claude-x"), 10000, nullptr,
                   {"anthropic-version: 2023-06-01"});
  ASSERT_EQ(r.code, CURLE_OK);
  const Json j = ParseJson(r.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << r.transfer.body;
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["role"], "assistant");
  EXPECT_EQ(j["model"], "claude-x");
  EXPECT_TRUE(StartsWith(j["id"].get<std::string>(), "msg_"));
  EXPECT_EQ(j["content"][0]["type"], "text");
  EXPECT_EQ(j["content"][0]["text"], b.reply_text);
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_TRUE(j["stop_sequence"].is_null());
  EXPECT_EQ(j["usage"]["input_tokens"], 11);
  EXPECT_EQ(j["usage"]["output_tokens"], 7);
  EXPECT_EQ(server->Requests()[0].Header("Anthropic-Version"), "2023-06-01");
}

TEST(FakeLlmServerTest, AnthropicStreamEventsInOrder) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.stream_chunks = 4;
  b.chunk_interval_ms = 5;
  server->EnqueueBehavior(b);
  Result r = Fetch(server->BaseUrl() + "/v1/messages", ChatBody(true, "claude-x"));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_THAT(r.transfer.Header("content-type"), HasSubstr("text/event-stream"));
  const auto events = ParseSse(r.transfer.body);
  std::vector<std::string> types;
  std::string text;
  for (const auto& [type, data] : events) {
    types.push_back(type);
    const Json j = ParseJson(data);
    ASSERT_FALSE(j.is_discarded()) << data;
    EXPECT_EQ(j["type"], type);
    if (type == "content_block_delta") {
      EXPECT_EQ(j["delta"]["type"], "text_delta");
      text += j["delta"]["text"].get<std::string>();
    } else if (type == "message_start") {
      EXPECT_EQ(j["message"]["model"], "claude-x");
      EXPECT_EQ(j["message"]["usage"]["input_tokens"], 11);
    } else if (type == "message_delta") {
      EXPECT_EQ(j["delta"]["stop_reason"], "end_turn");
      EXPECT_EQ(j["usage"]["output_tokens"], 7);
    } else if (type == "content_block_start") {
      EXPECT_EQ(j["content_block"]["type"], "text");
    }
  }
  EXPECT_THAT(types,
              ElementsAre("message_start", "content_block_start", "ping", "content_block_delta",
                          "content_block_delta", "content_block_delta", "content_block_delta",
                          "content_block_stop", "message_delta", "message_stop"));
  EXPECT_EQ(text, b.reply_text);
  EXPECT_TRUE(Eventually([&] { return server->StreamsCompleted() == 1; }));
}

TEST(FakeLlmServerTest, OllamaChatStreamsNdjsonByDefault) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.stream_chunks = 3;
  server->SetDefaultBehavior(b);
  const std::string body = R"({"model":"llama3","messages":[{"role":"user","content":"hi"}]})";
  Result r = Fetch(server->BaseUrl() + "/api/chat", body);
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.transfer.Header("content-type"), "application/x-ndjson");
  std::vector<Json> lines;
  for (std::string_view line : Split(r.transfer.body, "\n")) {
    lines.push_back(ParseJson(line));
    ASSERT_FALSE(lines.back().is_discarded()) << line;
  }
  ASSERT_EQ(lines.size(), 4u);
  std::string text;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["done"], false);
    EXPECT_EQ(lines[i]["model"], "llama3");
    EXPECT_EQ(lines[i]["message"]["role"], "assistant");
    text += lines[i]["message"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, b.reply_text);
  EXPECT_EQ(lines[3]["done"], true);
  EXPECT_EQ(lines[3]["done_reason"], "stop");
  EXPECT_EQ(lines[3]["prompt_eval_count"], 11);
  EXPECT_EQ(lines[3]["eval_count"], 7);
  EXPECT_TRUE(lines[3]["total_duration"].is_number_integer());

  Result single =
      Fetch(server->BaseUrl() + "/api/chat", R"({"model":"llama3","stream":false,"messages":[]})");
  ASSERT_EQ(single.code, CURLE_OK);
  const Json j = ParseJson(single.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << single.transfer.body;
  EXPECT_EQ(j["message"]["content"], b.reply_text);
  EXPECT_EQ(j["done"], true);
  EXPECT_EQ(j["eval_count"], 7);
  EXPECT_TRUE(j["created_at"].is_string());
}

// ------------------------------------------------------------------------------------------------
// Models, embeddings, routing.

TEST(FakeLlmServerTest, ModelListsIncludeModelsSeen) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false, "gpt-seen")).code,
            CURLE_OK);
  Result models = Fetch(server->BaseUrl() + "/v1/models");
  ASSERT_EQ(models.code, CURLE_OK);
  const Json m = ParseJson(models.transfer.body);
  EXPECT_EQ(m["object"], "list");
  std::vector<std::string> ids;
  for (const Json& e : m["data"]) {
    ids.push_back(e["id"]);
    EXPECT_EQ(e["object"], "model");
    EXPECT_EQ(e["owned_by"], "fake");
  }
  EXPECT_THAT(ids, ElementsAre("fake-model", "gpt-seen"));

  Result tags = Fetch(server->BaseUrl() + "/api/tags");
  ASSERT_EQ(tags.code, CURLE_OK);
  const Json t = ParseJson(tags.transfer.body);
  std::vector<std::string> names;
  for (const Json& e : t["models"]) names.push_back(e["name"]);
  EXPECT_THAT(names, ElementsAre("fake-model:latest", "gpt-seen:latest"));
}

TEST(FakeLlmServerTest, EmbeddingsAreDeterministicAndNormalised) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string body = R"({"model":"emb","input":["alpha","beta","alpha"],"dimensions":16})";
  Result r = Fetch(server->BaseUrl() + "/v1/embeddings", body);
  ASSERT_EQ(r.code, CURLE_OK);
  const Json j = ParseJson(r.transfer.body);
  ASSERT_FALSE(j.is_discarded()) << r.transfer.body;
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "emb");
  ASSERT_EQ(j["data"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(j["data"][i]["index"], i);
    EXPECT_EQ(j["data"][i]["object"], "embedding");
    ASSERT_EQ(j["data"][i]["embedding"].size(), 16u);
    double norm = 0;
    for (const Json& v : j["data"][i]["embedding"]) norm += v.get<double>() * v.get<double>();
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
  }
  EXPECT_EQ(j["data"][0]["embedding"], j["data"][2]["embedding"]);
  EXPECT_NE(j["data"][0]["embedding"], j["data"][1]["embedding"]);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 11);

  Result single = Fetch(server->BaseUrl() + "/v1/embeddings", R"({"input":"alpha"})");
  EXPECT_EQ(ParseJson(single.transfer.body)["data"][0]["embedding"].size(), 8u);

  Result ollama =
      Fetch(server->BaseUrl() + "/api/embed", R"({"model":"emb","input":"alpha","dimensions":16})");
  const Json o = ParseJson(ollama.transfer.body);
  ASSERT_EQ(o["embeddings"].size(), 1u);
  EXPECT_EQ(o["embeddings"][0], j["data"][0]["embedding"]);
}

TEST(FakeLlmServerTest, UnknownPathAndWrongMethod) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior failing;
  failing.status = 503;
  server->EnqueueBehavior(failing);
  Result missing = Fetch(server->BaseUrl() + "/v2/unknown");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(ParseJson(missing.transfer.body)["error"].is_object());
  Result wrong = Fetch(server->BaseUrl() + "/v1/chat/completions");  // GET
  EXPECT_EQ(wrong.status, 405);
  // Neither consumed the queued behaviour.
  EXPECT_EQ(Fetch(server->BaseUrl() + "/v1/models").status, 503);
  EXPECT_EQ(server->RequestCount(), 3u);
}

// ------------------------------------------------------------------------------------------------
// HTTP handling.

TEST(FakeLlmServerTest, LargeBodyIsReceivedWhole) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  std::string big = R"({"model":"big","messages":[{"role":"user","content":")";
  big.append(16 * 1024 * 1024, 'x');
  big.append(R"("}]})");
  // curl sends "Expect: 100-continue" for a body this large.
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", big, 60000);
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  ASSERT_EQ(server->RequestCount(), 1u);
  EXPECT_EQ(server->Requests()[0].body.size(), big.size());
  EXPECT_EQ(ParseJson(r.transfer.body)["model"], "big");
}

TEST(FakeLlmServerTest, RequestInSeveralSegmentsAndPipelining) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.connected());
  const std::string body = ChatBody(false, "seg");
  const std::string request = absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",
                                           "Content-Length: ", body.size(), "\r\n\r\n", body);
  for (size_t i = 0; i < request.size(); i += 7) {
    ASSERT_TRUE(client.Send(std::string_view(request).substr(i, 7)));
    std::this_thread::sleep_for(1ms);
  }
  const std::string first = client.ReadResponse();
  EXPECT_TRUE(StartsWith(first, "HTTP/1.1 200 OK\r\n")) << first;
  EXPECT_THAT(first, HasSubstr("\"model\":\"seg\""));

  // Two requests in one write: two responses, in order.
  ASSERT_TRUE(client.Send(absl::StrCat("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
                                       "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_TRUE(StartsWith(client.ReadResponse(), "HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(StartsWith(client.ReadResponse(), "HTTP/1.1 404 Not Found\r\n"));
  EXPECT_EQ(server->RequestCount(), 3u);
}

TEST(FakeLlmServerTest, ExpectContinueAndChunkedRequestBody) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.connected());
  const std::string body = ChatBody(false, "chunky");
  ASSERT_TRUE(
      client.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n"));
  // The server asks for the body before any of it was sent.
  ASSERT_TRUE(client.ReadUntil("\r\n\r\n"));
  EXPECT_EQ(client.buffer(), "HTTP/1.1 100 Continue\r\n\r\n");
  client.buffer().clear();
  const size_t half = body.size() / 2;
  ASSERT_TRUE(client.Send(absl::StrCat(absl::Hex(half), ";ext=1\r\n", body.substr(0, half), "\r\n",
                                       absl::Hex(body.size() - half), "\r\n", body.substr(half),
                                       "\r\n0\r\nX-Trailer: t\r\n\r\n")));
  const std::string response = client.ReadResponse();
  EXPECT_TRUE(StartsWith(response, "HTTP/1.1 200 OK\r\n")) << response;
  ASSERT_EQ(server->RequestCount(), 1u);
  EXPECT_EQ(server->Requests()[0].body, body);
}

TEST(FakeLlmServerTest, GarbageGets400AndClose) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  for (const std::string_view garbage :
       {std::string_view("\x01\x02garbage garbage\r\n\r\n"),
        std::string_view("GET /v1/models HTTP/1.1\r\nBad Header\r\n\r\n"),
        std::string_view("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: zz\r\n\r\n"),
        std::string_view("POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                         "\r\nnothex\r\n")}) {
    RawClient client(server->port());
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.Send(garbage));
    EXPECT_TRUE(client.ReadToEof());
    EXPECT_TRUE(StartsWith(client.buffer(), "HTTP/1.1 400 Bad Request\r\n")) << client.buffer();
    EXPECT_THAT(client.buffer(), HasSubstr("Connection: close"));
  }
  {
    RawClient client(server->port());
    ASSERT_TRUE(
        client.Send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"));
    EXPECT_TRUE(client.ReadToEof());
    EXPECT_TRUE(StartsWith(client.buffer(), "HTTP/1.1 413 ")) << client.buffer();
  }
  {
    RawClient client(server->port());
    ASSERT_TRUE(client.Send(std::string(100 * 1024, 'A')));
    EXPECT_TRUE(client.ReadToEof());
    EXPECT_TRUE(StartsWith(client.buffer(), "HTTP/1.1 431 ")) << client.buffer();
  }
  EXPECT_EQ(server->RequestCount(), 0u);
  // Still serving.
  EXPECT_EQ(Fetch(server->BaseUrl() + "/v1/models").status, 200);
}

TEST(FakeLlmServerTest, Http10StreamIsCloseDelimited) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EasyHandle easy(curl_easy_init());
  Transfer t;
  Configure(easy.get(), t, server->BaseUrl() + "/v1/chat/completions", ChatBody(true));
  curl_easy_setopt(easy.get(), CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_0);
  ASSERT_EQ(curl_easy_perform(easy.get()), CURLE_OK);
  EXPECT_EQ(t.Header("transfer-encoding"), "");
  EXPECT_EQ(t.Header("connection"), "close");
  const auto events = ParseSse(t.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().second, "[DONE]");
  EXPECT_EQ(OpenAiDeltas(events), FakeBehavior().reply_text);
  EXPECT_TRUE(Eventually([&] { return server->StreamsCompleted() == 1; }));
}

TEST(FakeLlmServerTest, WaitClearAndStop) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_FALSE(server->WaitForRequests(1, 20ms));
  ASSERT_EQ(Fetch(server->BaseUrl() + "/v1/models").code, CURLE_OK);
  EXPECT_TRUE(server->WaitForRequests(1, 0ms));
  server->ClearRequests();
  EXPECT_EQ(server->RequestCount(), 0u);
  EXPECT_TRUE(server->Requests().empty());

  // Stop with a hung request in flight: the client sees the connection go away.
  FakeBehavior hang;
  hang.hang = true;
  server->SetDefaultBehavior(hang);
  std::thread stopper([&] {
    EXPECT_TRUE(server->WaitForRequests(1, 10s));
    server->Stop();
  });
  Result r = Fetch(server->BaseUrl() + "/v1/chat/completions", ChatBody(false), 10000);
  stopper.join();
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_NE(r.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(server->OpenConnections(), 0);
  server->Stop();  // idempotent
}

TEST(FakeLlmServerTest, RecordingCanBeDisabled) {
  FakeLlmServer::Options options;
  options.record_requests = false;
  auto server = FakeLlmServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_EQ(Fetch((*server)->BaseUrl() + "/v1/chat/completions", ChatBody(false, "m")).code,
            CURLE_OK);
  EXPECT_EQ((*server)->RequestCount(), 1u);
  EXPECT_TRUE((*server)->Requests().empty());
}

// ------------------------------------------------------------------------------------------------
// Concurrency.

TEST(FakeLlmServerTest, FiveHundredConcurrentStreamsComplete) {
  constexpr int kStreams = 500;
  // Both ends of every connection live in this process.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ASSERT_TRUE(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= 2 * kStreams + 64)
      << "RLIMIT_NOFILE too low: " << rl.rlim_cur;

  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  FakeBehavior b;
  b.stream_chunks = 5;
  b.chunk_interval_ms = 20;
  server->SetDefaultBehavior(b);

  CURLM* multi = curl_multi_init();
  ASSERT_NE(multi, nullptr);
  std::vector<EasyHandle> handles;
  std::vector<std::unique_ptr<Transfer>> transfers;
  const std::string url = server->BaseUrl() + "/v1/chat/completions";
  const std::string body = ChatBody(true);
  for (int i = 0; i < kStreams; ++i) {
    handles.emplace_back(curl_easy_init());
    transfers.push_back(std::make_unique<Transfer>());
    Configure(handles.back().get(), *transfers.back(), url, body, 120000);
    curl_multi_add_handle(multi, handles.back().get());
  }
  int max_open = 0;
  int running = 0;
  int ok = 0;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  do {
    curl_multi_perform(multi, &running);
    max_open = std::max(max_open, server->OpenConnections());
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK) ++ok;
    }
    if (running > 0) curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  } while (running > 0 && std::chrono::steady_clock::now() < deadline);
  for (auto& h : handles) curl_multi_remove_handle(multi, h.get());
  curl_multi_cleanup(multi);

  EXPECT_EQ(running, 0);
  EXPECT_EQ(ok, kStreams);
  for (const auto& t : transfers) {
    const auto events = ParseSse(t->body);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().second, "[DONE]");
    EXPECT_EQ(OpenAiDeltas(events), b.reply_text);
  }
  EXPECT_GT(max_open, 1);  // the streams really overlapped
  EXPECT_TRUE(Eventually([&] { return server->StreamsCompleted() == kStreams; }));
  EXPECT_EQ(server->StreamsAbortedByPeer(), 0);
  EXPECT_EQ(server->RequestCount(), static_cast<size_t>(kStreams));
  handles.clear();
  EXPECT_TRUE(Eventually([&] { return server->OpenConnections() == 0; }));
}

}  // namespace
}  // namespace ailb::testing
