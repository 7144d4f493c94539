// A bad-input battery against the real binary (issue #8): malformed JSON, wrong field types,
// hostile framing, oversized heads and bodies, slow, silent and vanishing clients, thousands of
// idle connections, and garbage for the RAG, session, embeddings and admin endpoints. Every case
// must get a prompt 4xx (ailb's OpenAI-shaped JSON, or Pistache's documented plain-text answer
// for requests ailb never sees) or a clean close, and the server must keep serving afterwards.
//
// libcurl sanitises what it sends, so framing cases go through RawClient: a plain socket.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fakes/fake_llm_server.h"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace ailb::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr char kAdminKey[] = "sk-admin-bad-input-0123456789";
constexpr char kModel[] = "gpt-test";
constexpr int64_t kMaxBody = 65536;                       // AILB_MAX_BODY_BYTES for most tests
constexpr int64_t kPistacheLimit = kMaxBody + (1 << 20);  // maxRequestSize ailb gives Pistache
constexpr milliseconds kReplyTimeout{3000};  // "prompt": every reply must come within this

// Pistache's own plain-text answers (ailb's request parser, src/server/http/request_parser.cc).
constexpr char kTooLarge[] = "Request exceeded maximum buffer size";
constexpr char kHeadTooLarge[] = "Request header fields too large";
constexpr char kBadHeader[] = "Malformed request header";
constexpr char kBadRequestLine[] = "Malformed request line";
constexpr char kBadContentLength[] = "Invalid Content-Length";

std::vector<std::string> JsonHeaders() {
  return {"Content-Type: application/json", std::string("Authorization: Bearer ") + kAdminKey};
}

std::string Truncate(std::string_view text, size_t n = 300) {
  return std::string(text.substr(0, n)) + (text.size() > n ? "..." : "");
}

// --- A raw HTTP client --------------------------------------------------------------------------

struct RawReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool complete = false;   // a whole response (status line, headers, body) was read
  bool closed = false;     // the server closed the connection (EOF or reset)
  bool timed_out = false;  // nothing conclusive before the deadline
  std::string raw;         // every byte read

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  json Json() const { return json::parse(body, nullptr, false); }
  std::string Describe() const {
    return "status=" + std::to_string(status) + (complete ? "" : " incomplete") +
           (closed ? " closed" : "") + (timed_out ? " timed-out" : "") + " raw=" + Truncate(raw);
  }
};

// Parses the first response in `raw`; true when it is complete.
bool ParseReply(const std::string& raw, bool eof, RawReply* reply) {
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return false;
  const std::string head = raw.substr(0, head_end);
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) return false;
  reply->status = std::atoi(head.c_str() + 9);
  reply->headers.clear();
  size_t line_start = head.find("\r\n");
  while (line_start != std::string::npos) {
    line_start += 2;
    const size_t line_end = head.find("\r\n", line_start);
    const std::string line = head.substr(line_start, line_end - line_start);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      reply->headers[name] = value;
    }
    line_start = line_end;
  }
  const std::string rest = raw.substr(head_end + 4);
  if (auto length = reply->headers.find("content-length"); length != reply->headers.end()) {
    const size_t size = std::stoul(length->second);
    if (rest.size() < size) return false;
    reply->body = rest.substr(0, size);
    return true;
  }
  if (reply->Header("transfer-encoding") == "chunked") {
    const size_t end = rest.find("\r\n0\r\n\r\n");
    if (end == std::string::npos && rest.rfind("0\r\n\r\n", 0) != 0) return false;
    reply->body = rest;  // still framed; enough for the tests that stream
    return true;
  }
  reply->body = rest;
  return eof;
}

class RawClient {
 public:
  explicit RawClient(int port, milliseconds timeout = kReplyTimeout) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      pollfd p{fd_, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof(error);
      if (errno != EINPROGRESS || poll(&p, 1, static_cast<int>(timeout.count())) != 1 ||
          getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
        Close();
      }
    }
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }

  // Sends everything (or fails: error, or the server not reading within the timeout).
  bool Send(std::string_view bytes, milliseconds timeout = milliseconds(10'000)) {
    const auto deadline = Clock::now() + timeout;
    while (!bytes.empty() && fd_ >= 0) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
      if (Clock::now() >= deadline) return false;
      pollfd p{fd_, POLLOUT, 0};
      poll(&p, 1, 50);
    }
    return fd_ >= 0;
  }

  // Reads until one whole response, the server's close or the timeout.
  RawReply ReadReply(milliseconds timeout = kReplyTimeout) {
    RawReply reply;
    ReadUntil(
        timeout, [&](bool eof) { return ParseReply(buffer_, eof, &reply); }, &reply);
    reply.complete = ParseReply(buffer_, reply.closed, &reply);
    reply.raw = buffer_;
    return reply;
  }

  // Reads until `needle` arrives; false on close or timeout.
  bool ReadUntilContains(std::string_view needle, milliseconds timeout = kReplyTimeout) {
    RawReply ignored;
    ReadUntil(
        timeout, [&](bool) { return buffer_.find(needle) != std::string::npos; }, &ignored);
    return buffer_.find(needle) != std::string::npos;
  }

  // True when the server closes the connection within the timeout (bytes before that are kept).
  bool WaitForClose(milliseconds timeout = kReplyTimeout) {
    RawReply reply;
    ReadUntil(
        timeout, [](bool eof) { return eof; }, &reply);
    return reply.closed;
  }

  // True when nothing is readable and the connection is open right now.
  bool IdleAndOpen() {
    char byte;
    ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  void HalfClose() { shutdown(fd_, SHUT_WR); }

  // Closes with a TCP reset instead of a FIN.
  void Reset() {
    linger option{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
    Close();
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  template <typename Done>
  void ReadUntil(milliseconds timeout, Done done, RawReply* reply) {
    const auto deadline = Clock::now() + timeout;
    char chunk[65536];
    while (fd_ >= 0) {
      if (done(false)) return;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        reply->timed_out = true;
        return;
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buffer_.append(chunk, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        reply->closed = true;
        done(true);
        return;
      }
    }
  }

  int fd_ = -1;
  std::string buffer_;
};

// A request as bytes: the request line, a Host and the admin key, `headers`, a Content-Length
// (unless `content_length` is false or a header already sets the framing) and `body`.
std::string RawRequest(const std::string& method, const std::string& path, std::string_view body,
                       const std::vector<std::string>& headers = {}, bool content_length = true) {
  std::string out = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                    kAdminKey + "\r\n";
  bool framed = !content_length;
  for (const std::string& header : headers) {
    out += header + "\r\n";
    std::string lower = header.substr(0, header.find(':'));
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "content-length" || lower == "transfer-encoding") framed = true;
  }
  if (!framed) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n";
  out.append(body);
  return out;
}

std::string Chunked(std::string_view body, size_t piece) {
  std::string out;
  for (size_t at = 0; at < body.size(); at += piece) {
    std::string_view part = body.substr(at, piece);
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", part.size());
    out += size;
    out.append(part);
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

// --- Assertions ---------------------------------------------------------------------------------

// An error ailb wrote: the status, JSON content type, an X-Request-Id and the OpenAI error shape
// with its four fields. Returns the error object.
json ExpectApiError(long status, const std::string& content_type, const std::string& request_id,
                    const std::string& body, long expected, const std::string& what) {
  EXPECT_EQ(status, expected) << what << ": " << Truncate(body);
  EXPECT_EQ(content_type, "application/json") << what;
  EXPECT_FALSE(request_id.empty()) << what;
  json parsed = json::parse(body, nullptr, false);
  if (!parsed.is_object() || !parsed.contains("error") || !parsed["error"].is_object()) {
    ADD_FAILURE() << what << ": not an OpenAI error body: " << Truncate(body);
    return json::object();
  }
  const json& error = parsed["error"];
  EXPECT_TRUE(error.contains("message") && error["message"].is_string()) << what;
  EXPECT_TRUE(error.contains("type") && error["type"].is_string()) << what;
  EXPECT_TRUE(error.contains("param")) << what;
  EXPECT_TRUE(error.contains("code")) << what;
  if (expected >= 400 && expected < 500 && expected != 401 && expected != 403 && expected != 404 &&
      expected != 429) {
    EXPECT_EQ(error.value("type", ""), "invalid_request_error") << what;
  }
  return error;
}

json ExpectApiError(const HttpResult& result, long expected, const std::string& what) {
  EXPECT_TRUE(result.transport_error.empty()) << what << ": " << result.transport_error;
  return ExpectApiError(result.status, result.Header("content-type"), result.Header("x-request-id"),
                        result.body, expected, what);
}

json ExpectApiError(const RawReply& reply, long expected, const std::string& what) {
  EXPECT_TRUE(reply.complete) << what << ": " << reply.Describe();
  return ExpectApiError(reply.status, reply.Header("content-type"), reply.Header("x-request-id"),
                        reply.body, expected, what);
}

// A refusal written by Pistache before ailb sees the request: plain text, no X-Request-Id.
void ExpectPistacheError(const RawReply& reply, int expected, std::string_view text,
                         const std::string& what) {
  EXPECT_TRUE(reply.complete) << what << ": " << reply.Describe();
  EXPECT_EQ(reply.status, expected) << what << ": " << reply.Describe();
  if (!text.empty()) {
    EXPECT_EQ(reply.body, text) << what;
  }
  EXPECT_EQ(reply.Header("x-request-id"), "") << what;
  EXPECT_EQ(reply.Header("content-type"), "") << what;
}

// Raises the soft open-files limit to at least `wanted` (within the hard limit); the spawned
// ailb inherits it.
void RaiseFileLimit(rlim_t wanted) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0) << std::strerror(errno);
  ASSERT_GE(limit.rlim_cur, wanted) << "the hard RLIMIT_NOFILE is too low for this test";
}

// --- The fixture --------------------------------------------------------------------------------

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = FakeLlmServer::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
  }

  void StartAilb(std::map<std::string, std::string> overrides = {}) {
    std::map<std::string, std::string> env = {{"OPENAI_BASE_URL", upstream_->BaseUrl() + "/v1"},
                                              {"OPENAI_MODELS", kModel},
                                              {"OPENAI_API_KEY", "sk-upstream-0123456789"},
                                              {"AILB_ADMIN_KEY", kAdminKey},
                                              {"AILB_MAX_BODY_BYTES", std::to_string(kMaxBody)}};
    for (auto& [key, value] : overrides) env[key] = value;
    ailb_ = AilbProcess::Start(std::move(env));
    ASSERT_NE(ailb_, nullptr);
  }

  int port() const { return ailb_->http_port(); }

  HttpResult Call(const std::string& method, const std::string& path, const std::string& body,
                  const std::vector<std::string>& headers = JsonHeaders()) {
    return HttpCall(method, ailb_->Url(path), body, headers, call_timeout_.count());
  }

  HttpResult Chat(const std::string& body) { return Call("POST", "/v1/chat/completions", body); }

  // One request on a fresh raw connection; the first reply.
  RawReply Raw(std::string_view request, milliseconds timeout = kReplyTimeout) {
    RawClient client(port());
    EXPECT_TRUE(client.connected());
    EXPECT_TRUE(client.Send(request));
    return client.ReadReply(timeout);
  }

  // The server is up and serves a normal request: health 200 and one chat 200.
  void ExpectServing(const std::string& after) {
    ++serving_checks_;
    HttpResult health = HttpCall("GET", ailb_->Url("/healthz"), "", {}, kReplyTimeout.count());
    EXPECT_EQ(health.status, 200) << "health after " << after << ": " << health.transport_error;
    HttpResult chat = Chat(ChatBody(kModel, false));
    EXPECT_EQ(chat.status, 200) << "chat after " << after << ": " << chat.transport_error << " "
                                << Truncate(chat.body);
  }

  // A body-level case for a JSON endpoint: `expected` with ailb's error shape, `param`/`code`
  // when given; then the server must still serve.
  void ExpectRefused(const std::string& method, const std::string& path, const std::string& body,
                     long expected, const std::string& what, const char* param = nullptr,
                     const char* code = nullptr) {
    HttpResult result = Call(method, path, body);
    json error = ExpectApiError(result, expected, what);
    if (param != nullptr) {
      EXPECT_EQ(error.value("param", json()), json(param)) << what;
    }
    if (code != nullptr) {
      EXPECT_EQ(error.value("code", json()), json(code)) << what;
    }
    ExpectServing(what);
  }

  // Chat requests the upstream received.
  size_t UpstreamChats() const {
    size_t chats = 0;
    for (const RecordedRequest& request : upstream_->Requests()) {
      chats += request.path == "/v1/chat/completions" ? 1 : 0;
    }
    return chats;
  }

  std::unique_ptr<FakeLlmServer> upstream_;
  std::unique_ptr<AilbProcess> ailb_;
  size_t serving_checks_ = 0;  // chats sent by ExpectServing
  milliseconds call_timeout_ = kReplyTimeout;
};

std::string Messages(const std::string& messages_json) {
  return std::string(R"({"model":"gpt-test","messages":)") + messages_json + "}";
}

// --- Chat bodies --------------------------------------------------------------------------------

TEST_F(BadInputTest, MalformedAndTruncatedJsonIs400InvalidJson) {
  StartAilb();
  const std::string valid = ChatBody(kModel, false);
  std::vector<std::string> malformed = {
      "",
      "   ",
      "{",
      "}",
      R"({"model":)",
      R"({"model":"gpt-test",})",
      R"({'model':'gpt-test'})",
      R"({"model":"gpt-test" "messages":[]})",
      R"({model:"gpt-test"})",
      valid + " trailing",
      valid + valid,
      "/* comment */" + valid,
      "nul",
      "tru",
      "NaN",
      R"({"model":"gpt-test","temperature":NaN,"messages":[]})",
      R"({"model":"gpt-test","max_tokens":1e400,"messages":[]})",
      R"({"model":"gpt-test","messages":[{"role":"user","content":"unterminated}]})",
      R"({"model":"gpt-test","messages":[{"role":"user","content":"bad \q escape"}]})",
  };
  for (size_t cut : {size_t{1}, valid.size() / 4, valid.size() / 2, valid.size() - 1}) {
    malformed.push_back(valid.substr(0, cut));
  }
  for (const std::string& body : malformed) {
    SCOPED_TRACE(Truncate(body, 80));
    HttpResult result = Chat(body);
    EXPECT_EQ(ExpectApiError(result, 400, "malformed JSON")["code"], "invalid_json");
    ExpectServing("malformed JSON");
  }
  // Well-formed JSON that is not an object.
  for (const char* body : {"[]", "[1,2]", R"("a string")", "42", "null", "true"}) {
    ExpectRefused("POST", "/v1/chat/completions", body, 400, std::string("not an object: ") + body);
  }
  EXPECT_EQ(UpstreamChats(), serving_checks_) << "a malformed body reached the upstream";
}

TEST_F(BadInputTest, WrongTypesForEveryChatFieldName400TheField) {
  StartAilb();
  struct Case {
    const char* field;
    std::vector<json> values;
  };
  const json huge_unsigned = json::parse("18446744073709551615");
  const std::vector<Case> cases = {
      {"model", {123, "", std::string(257, 'm'), json::array(), json::object(), true, nullptr}},
      {"messages", {"hi", json::object(), json::array(), 1, nullptr, true}},
      {"stream", {"yes", 1, 0, json::array(), json::object()}},
      {"temperature", {"hot", -0.1, 2.1, true, json::array(), 1e308}},
      {"max_tokens", {0, -1, 1.5, "10", true, huge_unsigned, 1e20}},
      {"session_id", {123, "", std::string(257, 's'), json::array(), json::object(), true}},
      {"rag_collection", {123, "", std::string(257, 'r'), json::array(), json::object(), false}},
      {"rag_top_k", {0, 51, -1, "3", 2.5, true, 1e9, huge_unsigned, json::object()}},
      {"top_p", {1.5, "x"}},
      {"n", {0, "2"}},
      {"stop", {json::array({"a", "b", "c", "d", "e"}), 5, json::array({1})}},
      {"tools", {"x", json::object()}},
      {"logprobs", {"yes"}},
      {"user", {5}},
  };
  for (const Case& c : cases) {
    for (const json& value : c.values) {
      json body = json::parse(ChatBody(kModel, false));
      body[c.field] = value;
      const std::string what = std::string(c.field) + "=" + Truncate(value.dump(), 40);
      HttpResult result = Chat(body.dump());
      EXPECT_EQ(ExpectApiError(result, 400, what)["param"], c.field) << what;
    }
    ExpectServing(c.field);
  }
  // stream_options without stream: true.
  ExpectRefused("POST", "/v1/chat/completions",
                ChatBody(kModel, false, {{"stream_options", {{"include_usage", true}}}}), 400,
                "stream_options without stream", "stream_options");
  EXPECT_EQ(UpstreamChats(), serving_checks_) << "an ill-typed body reached the upstream";
}

TEST_F(BadInputTest, BadMessagesName400TheMessage) {
  StartAilb();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([1])", "messages[0]"},
      {R"(["hi"])", "messages[0]"},
      {R"([[]])", "messages[0]"},
      {R"([null])", "messages[0]"},
      {R"([{}])", "messages[0].role"},
      {R"([{"content":"x"}])", "messages[0].role"},
      {R"([{"role":1,"content":"x"}])", "messages[0].role"},
      {R"([{"role":"hacker","content":"x"}])", "messages[0].role"},
      {R"([{"role":"","content":"x"}])", "messages[0].role"},
      {R"([{"role":"user","content":"ok"},{"role":"USER","content":"x"}])", "messages[1].role"},
      {R"([{"role":"user"}])", "messages[0].content"},
      {R"([{"role":"system","content":null}])", "messages[0].content"},
      {R"([{"role":"user","content":1}])", "messages[0].content"},
      {R"([{"role":"user","content":true}])", "messages[0].content"},
      {R"([{"role":"user","content":{}}])", "messages[0].content"},
      {R"([{"role":"user","content":[1]}])", "messages[0].content[0]"},
      {R"([{"role":"user","content":[{"text":"x"}]}])", "messages[0].content[0]"},
      {R"([{"role":"user","content":[{"type":5}]}])", "messages[0].content[0]"},
      {R"([{"role":"user","content":"hi"},"x"])", "messages[1]"},
  };
  for (const auto& [messages, param] : cases) {
    HttpResult result = Chat(Messages(messages));
    EXPECT_EQ(ExpectApiError(result, 400, messages)["param"], param) << messages;
    ExpectServing(messages);
  }
}

TEST_F(BadInputTest, HostileJsonContent) {
  StartAilb();
  const std::string prefix = R"({"model":"gpt-test","messages":)";
  // Deep nesting within the body limit: refused before parsing.
  const std::string deep = prefix + std::string(30'000, '[') + std::string(30'000, ']') + "}";
  ASSERT_LT(static_cast<int64_t>(deep.size()), kMaxBody);
  for (const std::string& body : {deep, std::string(65'000, '['), prefix + std::string(60'000, '{'),
                                  std::string(10'000, '[') + std::string(10'000, ']')}) {
    HttpResult result = Chat(body);
    EXPECT_EQ(ExpectApiError(result, 400, "deep nesting")["code"], "invalid_json");
    ExpectServing("deep nesting");
  }
  // 100k levels are over the 64 KiB body limit: ailb's JSON 413.
  HttpResult too_deep = Chat(std::string(100'000, '['));
  EXPECT_EQ(ExpectApiError(too_deep, 413, "100k levels")["code"], "request_too_large");
  ExpectServing("100k levels");

  // Invalid UTF-8 anywhere in a string (content, key, model), and lone surrogate escapes.
  for (const std::string& bad :
       {std::string("\xff\xfe"), std::string("\xc0\xaf"), std::string("a\xe2\x82"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("\\ud800"),
        std::string("\\udc00x")}) {
    for (const std::string& body :
         {Messages(R"([{"role":"user","content":")" + bad + R"("}])"),
          R"({"model":"gpt-)" + bad + R"(","messages":[{"role":"user","content":"x"}]})",
          Messages(R"([{"role":"user","content":"x",")" + bad + R"(":1}])")}) {
      HttpResult result = Chat(body);
      EXPECT_EQ(ExpectApiError(result, 400, "invalid UTF-8")["code"], "invalid_json") << body;
    }
    ExpectServing("invalid UTF-8");
  }
  // A valid escaped surrogate pair is fine.
  EXPECT_EQ(Chat(Messages(R"([{"role":"user","content":"\ud83d\ude00"}])")).status, 200);

  // NUL bytes: raw inside a string or after the object is malformed JSON; escaped is a character.
  static constexpr char kRawNulMessages[] = "[{\"role\":\"user\",\"content\":\"a\0b\"}]";
  const std::string raw_nul = Messages(std::string(kRawNulMessages, sizeof(kRawNulMessages) - 1));
  EXPECT_EQ(ExpectApiError(Chat(raw_nul), 400, "raw NUL")["code"], "invalid_json");
  EXPECT_EQ(ExpectApiError(Chat(ChatBody(kModel, false) + std::string(1, '\0')), 400,
                           "NUL after the object")["code"],
            "invalid_json");
  EXPECT_EQ(Chat(Messages(R"([{"role":"user","content":"a\u0000b"}])")).status, 200);
  EXPECT_EQ(ExpectApiError(
                Chat(R"({"model":"gpt-test\u0000","messages":[{"role":"user","content":"x"}]})"),
                404, "NUL in the model name")["code"],
            "model_not_found");
  HttpResult session_nul = Chat(ChatBody(kModel, false, {{"session_id", std::string("a\0b", 3)}}));
  EXPECT_EQ(session_nul.status, 200) << "a control character only disables memory";
  EXPECT_NE(session_nul.Header("x-ailb-warning"), "");
  ExpectServing("NUL bytes");

  // Duplicate keys: the last one wins, consistently.
  EXPECT_EQ(
      Chat(R"({"model":"nope","model":"gpt-test","messages":[{"role":"user","content":"x"}]})")
          .status,
      200);
  EXPECT_EQ(
      ExpectApiError(
          Chat(R"({"model":"gpt-test","model":"nope","messages":[{"role":"user","content":"x"}]})"),
          404, "duplicate model")["code"],
      "model_not_found");
  EXPECT_EQ(
      ExpectApiError(
          Chat(
              R"({"model":"gpt-test","messages":[{"role":"user","content":"x"}],"messages":"no"})"),
          400, "duplicate messages")["param"],
      "messages");
  ExpectServing("duplicate keys");
  // Unknown model names are counted under one label, not one label each.
  HttpResult metrics = HttpCall("GET", ailb_->Url("/metrics"), "", {}, kReplyTimeout.count());
  EXPECT_EQ(metrics.body.find("model=\"nope\""), std::string::npos);
  EXPECT_NE(metrics.body.find("model=\"unknown\""), std::string::npos);
}

TEST_F(BadInputTest, HugeStringsWithinTheDefaultBodyLimit) {
  StartAilb({{"AILB_MAX_BODY_BYTES", std::to_string(8 << 20)}});
  // Parsing megabytes of JSON takes a Debug build on a busy 2-core machine a few seconds.
  call_timeout_ = milliseconds(15'000);
  const std::string big(6 << 20, 'a');
  HttpResult ok = Chat(Messages(R"([{"role":"user","content":")" + big + R"("}])"));
  EXPECT_EQ(ok.status, 200) << Truncate(ok.body);
  ASSERT_GE(upstream_->RequestCount(), 1u);
  EXPECT_GT(upstream_->Requests().back().body.size(), big.size());

  std::string multibyte;
  for (int i = 0; i < (2 << 20); ++i) multibyte += "\xc3\xa9";  // 4 MiB of 'é'
  EXPECT_EQ(Chat(Messages(R"([{"role":"user","content":")" + multibyte + R"("}])")).status, 200);

  // One bad byte at the very end of a 6 MiB string.
  EXPECT_EQ(
      ExpectApiError(Chat(Messages(R"([{"role":"user","content":")" + big + "\xff" + R"("}])")),
                     400, "6 MiB + invalid UTF-8")["code"],
      "invalid_json");
  // Huge strings in fields with a length limit.
  EXPECT_EQ(ExpectApiError(Chat(ChatBody(kModel, false, {{"session_id", big}})), 400,
                           "6 MiB session_id")["param"],
            "session_id");
  HttpResult huge_model =
      Chat(R"({"model":")" + big + R"(","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(ExpectApiError(huge_model, 400, "6 MiB model")["param"], "model");
  // Errors that quote a huge value stay small (they used to echo it whole, into the access log
  // too, and a huge unknown model became a /metrics label: 150 MB after one request).
  const std::vector<std::tuple<std::string, std::string, std::string>> echoes = {
      {"/v1/chat/completions", Messages(R"([{"role":")" + big + R"(","content":"x"}])"),
       "messages[0].role"},
      {"/v1/rag/collections/docs/query", R"({"query":"x","mode":")" + big + R"("})", "mode"},
      {"/v1/rag/collections", R"({"name":"c","embedding":{"provider":")" + big + R"("}})",
       "embedding.provider"},
      {"/v1/admin/keys", R"({")" + big + R"(":1})", ""},
  };
  for (const auto& [path, body, param] : echoes) {
    HttpResult result = Call("POST", path, body);
    json error = ExpectApiError(result, 400, "6 MiB echo on " + path);
    EXPECT_LT(result.body.size(), 4096u) << path;
    if (!param.empty()) {
      EXPECT_EQ(error["param"], param) << path;
    }
  }
  HttpResult metrics = HttpCall("GET", ailb_->Url("/metrics"), "", {}, kReplyTimeout.count());
  EXPECT_EQ(metrics.status, 200);
  EXPECT_LT(metrics.body.size(), 256u << 10);
  EXPECT_LT(ailb_->Logs().size(), 256u << 10) << "the log grew with the requests' bodies";
  // Just over the limit (and under Pistache's +1 MiB): ailb's JSON 413.
  HttpResult over =
      Chat(Messages(R"([{"role":"user","content":")" + std::string(17 << 19, 'b') + R"("}])"));
  EXPECT_EQ(ExpectApiError(over, 413, "8.5 MiB body")["code"], "request_too_large");
  ExpectServing("huge strings");
}

// --- Framing ------------------------------------------------------------------------------------

TEST_F(BadInputTest, BadContentLengthAndFraming) {
  StartAilb();
  const std::string body = ChatBody(kModel, false);
  const std::string path = "/v1/chat/completions";
  auto with_length = [&](const std::string& value) {
    return RawRequest("POST", path, body,
                      {"Content-Type: application/json", "Content-Length: " + value});
  };
  // Content-Length values that are not 1*DIGIT: 400 (Pistache's stock parser answered 500 to the
  // first and the overflowing one).
  for (const char* value : {"-5", "-1", "abc", "5x", "0x10", "+5", "1 2", ""}) {
    ExpectPistacheError(Raw(with_length(value)), 400, kBadContentLength,
                        std::string("Content-Length: ") + value);
    ExpectServing(std::string("Content-Length: ") + value);
  }
  ExpectPistacheError(Raw(with_length("99999999999999999999999")), 400, kBadHeader,
                      "Content-Length beyond 64 bits");
  // Huge announced lengths: refused at once, without waiting for (or reserving) the body.
  for (const std::string& value : {std::string("18446744073709551615"), std::string("1000000000"),
                                   std::to_string(kPistacheLimit + 1)}) {
    const auto started = Clock::now();
    ExpectPistacheError(Raw(with_length(value)), 413, kTooLarge, "Content-Length: " + value);
    EXPECT_LT(Clock::now() - started, milliseconds(1000)) << value;
    ExpectServing("Content-Length: " + value);
  }
  // Absent with a body: Pistache reads no body, ailb answers the empty one.
  RawReply absent = Raw(RawRequest("POST", path, body, {"Content-Type: application/json"}, false));
  EXPECT_EQ(ExpectApiError(absent, 400, "no Content-Length")["code"], "invalid_json");
  ExpectServing("no Content-Length");
  // Shorter than the body: the body is cut, so it is malformed JSON.
  RawReply shorter = Raw(with_length("10"));
  EXPECT_EQ(ExpectApiError(shorter, 400, "short Content-Length")["code"], "invalid_json");
  ExpectServing("short Content-Length");
  // Longer than what is sent, then the client closes: no reply, the server closes too.
  {
    RawClient client(port());
    ASSERT_TRUE(client.Send(with_length("1000")));
    client.HalfClose();
    EXPECT_TRUE(client.WaitForClose()) << "the server should close after the client's FIN";
  }
  {
    RawClient client(port());
    ASSERT_TRUE(client.Send(with_length("1000")));
    EXPECT_TRUE(client.ReadReply(milliseconds(300)).timed_out) << "it waits for the body";
    client.Reset();
  }
  ExpectServing("Content-Length above the bytes sent");

  // Chunked request bodies work...
  RawReply chunked =
      Raw(RawRequest("POST", path, Chunked(body, 7),
                     {"Content-Type: application/json", "Transfer-Encoding: chunked"}));
  EXPECT_EQ(chunked.status, 200) << chunked.Describe();
  // ...bad chunk sizes are Pistache's 400s (the text is whatever its parser threw)...
  for (const char* size : {"zz", "-5", "-1", "ffffffffffffffffff", "5;ext=1"}) {
    RawReply bad = Raw(RawRequest("POST", path, std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n",
                                  {"Transfer-Encoding: chunked"}));
    ExpectPistacheError(bad, 400, "", std::string("chunk size ") + size);
    ExpectServing(std::string("chunk size ") + size);
  }
  // ...an unterminated chunked body and a client close leave nothing behind...
  {
    RawClient client(port());
    ASSERT_TRUE(client.Send(
        RawRequest("POST", path, "ff\r\n" + body.substr(0, 20), {"Transfer-Encoding: chunked"})));
    client.HalfClose();
    EXPECT_TRUE(client.WaitForClose());
  }
  // ...a chunked body over ailb's limit gets its JSON 413.
  const std::string padded =
      ChatBody(kModel, false, {{"padding", std::string(static_cast<size_t>(kMaxBody), 'p')}});
  RawReply chunked_over =
      Raw(RawRequest("POST", path, Chunked(padded, 4096),
                     {"Content-Type: application/json", "Transfer-Encoding: chunked"}));
  EXPECT_EQ(ExpectApiError(chunked_over, 413, "chunked over the limit")["code"],
            "request_too_large");
  ExpectServing("chunked bodies");

  // Both framings at once, and a transfer coding Pistache does not implement (RFC 9112 §6.1:
  // 501 is the answer to an unknown transfer coding).
  ExpectPistacheError(Raw(RawRequest("POST", path, Chunked(body, 16),
                                     {"Content-Length: 5", "Transfer-Encoding: chunked"})),
                      400, "Got mutually exclusive ContentLength and TransferEncoding header",
                      "Content-Length and Transfer-Encoding");
  ExpectPistacheError(Raw(RawRequest("POST", path, body, {"Transfer-Encoding: gzip"})), 501,
                      "Unsupported Transfer-Encoding", "Transfer-Encoding: gzip");
  ExpectServing("framing");

  // HTTP/1.0 with a body, then the server closes.
  {
    RawClient client(port());
    std::string request = RawRequest("POST", path, body, {"Content-Type: application/json"});
    request.replace(request.find("HTTP/1.1"), 8, "HTTP/1.0");
    ASSERT_TRUE(client.Send(request));
    RawReply reply = client.ReadReply();
    EXPECT_EQ(reply.status, 200) << reply.Describe();
    EXPECT_EQ(reply.Header("connection"), "close");
  }
  EXPECT_EQ(ailb_->Logs().find("status=500"), std::string::npos);
}

TEST_F(BadInputTest, OversizedBodiesAndHeads) {
  StartAilb();
  const std::string path = "/v1/chat/completions";
  // Exactly at the body limit is accepted; one byte more is ailb's JSON 413.
  std::string at_limit = ChatBody(kModel, false, {{"padding", ""}});
  at_limit =
      ChatBody(kModel, false,
               {{"padding", std::string(static_cast<size_t>(kMaxBody) - at_limit.size(), 'p')}});
  ASSERT_EQ(static_cast<int64_t>(at_limit.size()), kMaxBody);
  EXPECT_EQ(Chat(at_limit).status, 200);
  std::string over = at_limit;
  over.insert(over.find("\"padding\":\"") + 11, "p");
  EXPECT_EQ(ExpectApiError(Chat(over), 413, "limit + 1")["code"], "request_too_large");
  ExpectServing("limit + 1");
  for (const char* endpoint : {"/v1/rag/collections", "/v1/embeddings"}) {
    EXPECT_EQ(ExpectApiError(Call("POST", endpoint, over), 413, endpoint)["code"],
              "request_too_large");
  }
  ExpectServing("oversized API bodies");

  // A body more than 1 MiB beyond the limit: Pistache's plain-text 413, as soon as the head says
  // so, even when the client does send it all.
  const std::string two_mib(2 << 20, 'x');
  {
    RawClient client(port());
    const auto started = Clock::now();
    ASSERT_TRUE(client.Send(RawRequest("POST", path, "", {"Content-Length: 2097152"})));
    ExpectPistacheError(client.ReadReply(), 413, kTooLarge, "2 MiB announced");
    EXPECT_LT(Clock::now() - started, milliseconds(1000));
    client.Send(two_mib);  // the rest arrives after the refusal; the server must not choke
  }
  ExpectServing("2 MiB body");
  // Chunked, there is no length to check up front: the 413 comes when the buffer overflows.
  {
    RawClient client(port());
    ASSERT_TRUE(client.Send(RawRequest("POST", path, "", {"Transfer-Encoding: chunked"})));
    client.Send(Chunked(two_mib, 65536));
    ExpectPistacheError(client.ReadReply(), 413, kTooLarge, "2 MiB chunked");
  }
  ExpectServing("2 MiB chunked body");

  // Head sections over 32 KiB: 431, promptly (Pistache alone re-scanned them on every read: a
  // 2 MiB header stalled its reactor thread for seconds).
  std::string many_headers;
  for (int i = 0; i < 10'000; ++i) many_headers += "X-H" + std::to_string(i) + ": v\r\n";
  const std::vector<std::pair<std::string, std::string>> heads = {
      {"64 KiB header",
       "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n"},
      {"10,000 headers", "GET /healthz HTTP/1.1\r\n" + many_headers + "\r\n"},
      {"2 MiB header", "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(2 << 20, 'a') + "\r\n\r\n"},
      {"40 KiB URL", "GET /" + std::string(40 << 10, 'u') + " HTTP/1.1\r\n\r\n"},
      {"40 KiB method", std::string(40 << 10, 'G') + " / HTTP/1.1\r\n\r\n"},
      {"1 MiB without a line end", std::string(1 << 20, 'z')},
  };
  for (const auto& [what, head] : heads) {
    RawClient client(port());
    const auto started = Clock::now();
    client.Send(head);  // the server may answer (and stop reading) before it is all sent
    RawReply reply = client.ReadReply();
    EXPECT_EQ(reply.status, 431) << what << ": " << reply.Describe();
    EXPECT_TRUE(reply.body == kHeadTooLarge || reply.body == "Request line too large") << what;
    EXPECT_LT(Clock::now() - started, milliseconds(1500)) << what;
    ExpectServing(what);
  }
  // Just under the limit: served.
  RawReply big_ok =
      Raw("GET /healthz HTTP/1.1\r\nX-Big: " + std::string(30 << 10, 'a') + "\r\n\r\n");
  EXPECT_EQ(big_ok.status, 200) << big_ok.Describe();
  std::string five_hundred = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 500; ++i) five_hundred += "X-H" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(Raw(five_hundred + "\r\n").status, 200);
}

TEST_F(BadInputTest, MalformedRequestHeadsGet400) {
  StartAilb();
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"binary garbage", std::string("\x00\x01\x02garbage\r\n\r\n", 14), kBadRequestLine},
      {"no HTTP version", "GET /healthz\r\n\r\n", kBadRequestLine},
      {"no header colon", "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", kBadHeader},
      {"unknown method", "FOO /healthz HTTP/1.1\r\n\r\n", "Unknown HTTP request method"},
      {"lower-case method", "get /healthz HTTP/1.1\r\n\r\n", "Unknown HTTP request method"},
      {"bad version", "GET /healthz HTTP/9.9\r\n\r\n", "Encountered invalid HTTP version"},
      {"Host port too big", "GET /healthz HTTP/1.1\r\nHost: a:99999999999\r\n\r\n", kBadHeader},
      {"Host port negative", "GET /healthz HTTP/1.1\r\nHost: a:-1\r\n\r\n", kBadHeader},
      {"Host bracket", "GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n", kBadHeader},
      {"Date garbage", "GET /healthz HTTP/1.1\r\nDate: garbage\r\n\r\n", kBadHeader},
      {"Cache-Control garbage", "GET /healthz HTTP/1.1\r\nCache-Control: max-age=x\r\n\r\n",
       kBadHeader},
  };
  for (const auto& [what, request, text] : cases) {
    ExpectPistacheError(Raw(request), 400, text, what);
    ExpectServing(what);
  }
  // Byte by byte, the answer comes with the blank line.
  {
    RawClient client(port());
    for (char c : std::string("GET /healthz HTTP/1.1\r\nbroken\r\n\r\n")) {
      ASSERT_TRUE(client.Send(std::string(1, c)));
    }
    ExpectPistacheError(client.ReadReply(), 400, kBadHeader, "byte by byte");
  }
  // Pistache's media-type parser refuses a garbage Content-Type or Accept itself: 415.
  for (const char* header : {"Content-Type: ;;;", "Accept: */*;q=abc"}) {
    ExpectPistacheError(Raw(std::string("GET /healthz HTTP/1.1\r\n") + header + "\r\n\r\n"), 415,
                        "", header);
  }
  ExpectServing("media types");

  // Strange but parseable heads reach ailb, which answers JSON.
  RawReply nul_path = Raw(RawRequest("GET", std::string("/heal\0thz", 9), ""));
  EXPECT_EQ(ExpectApiError(nul_path, 404, "NUL in the path")["code"], "unknown_url");
  RawReply absolute = Raw(RawRequest("GET", "http://127.0.0.1/healthz", ""));
  EXPECT_EQ(ExpectApiError(absolute, 404, "absolute URI")["code"], "unknown_url");
  RawReply wrong_method = Raw(RawRequest("DELETE", "/v1/chat/completions", ""));
  ExpectApiError(wrong_method, 405, "DELETE chat");
  EXPECT_EQ(wrong_method.Header("allow"), "POST");
  const std::string chat = ChatBody(kModel, false);
  RawReply text_plain =
      Raw(RawRequest("POST", "/v1/chat/completions", chat, {"Content-Type: text/plain"}));
  EXPECT_EQ(ExpectApiError(text_plain, 415, "text/plain")["code"], "unsupported_media_type");
  RawReply session_nul =
      Raw(RawRequest("POST", "/v1/chat/completions", chat,
                     {"Content-Type: application/json", std::string("X-Session-ID: a\0b", 17)}));
  EXPECT_EQ(ExpectApiError(session_nul, 400, "NUL in X-Session-ID")["param"], "X-Session-ID");
  RawReply bad_timeout =
      Raw(RawRequest("POST", "/v1/chat/completions", chat,
                     {"Content-Type: application/json", "X-Ailb-Timeout-Ms: soon"}));
  ExpectApiError(bad_timeout, 400, "X-Ailb-Timeout-Ms: soon");
  std::string bad_key_request = RawRequest("GET", "/v1/models", "");
  bad_key_request.replace(bad_key_request.find(kAdminKey), std::strlen(kAdminKey),
                          std::string("\x01\xff\0key", 6));
  EXPECT_EQ(ExpectApiError(Raw(bad_key_request), 401, "garbage key")["code"], "invalid_api_key");
  // A junk X-Request-Id is replaced by a generated one.
  RawReply junk_id = Raw("GET /healthz HTTP/1.1\r\nX-Request-Id: a b\xff\r\n\r\n");
  EXPECT_EQ(junk_id.status, 200);
  EXPECT_EQ(junk_id.Header("x-request-id").size(), 20u);
  ExpectServing("parseable heads");
  EXPECT_EQ(ailb_->Logs().find("status=500"), std::string::npos);
}

// --- Slow, silent, vanishing and idle clients ---------------------------------------------------

TEST_F(BadInputTest, SlowAndSilentClientsDoNotDelayOthers) {
  StartAilb();
  // Silent clients: connect and send nothing.
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 50; ++i) {
    silent.push_back(std::make_unique<RawClient>(port()));
    ASSERT_TRUE(silent.back()->connected());
  }
  // Slow-loris clients: one byte every 100 ms.
  auto slow_loris = [this](std::string request, RawReply* reply) {
    RawClient client(port());
    for (char c : request) {
      if (!client.Send(std::string(1, c))) return;
      std::this_thread::sleep_for(milliseconds(100));
    }
    *reply = client.ReadReply();
  };
  std::vector<RawReply> slow_replies(4);
  std::vector<std::thread> slow;
  for (int i = 0; i < 3; ++i) {
    slow.emplace_back(slow_loris, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &slow_replies[i]);
  }
  // A slow body: the head at once, then the body byte by byte.
  slow.emplace_back([&] {
    const std::string body = R"({"model":"gpt-test","messages":[]})";
    RawClient client(port());
    if (!client.Send(RawRequest("POST", "/v1/chat/completions", "",
                                {"Content-Type: application/json",
                                 "Content-Length: " + std::to_string(body.size())}))) {
      return;
    }
    for (char c : body) {
      if (!client.Send(std::string(1, c))) return;
      std::this_thread::sleep_for(milliseconds(100));
    }
    slow_replies[3] = client.ReadReply();
  });

  // Meanwhile a normal client is served promptly, again and again.
  const auto until = Clock::now() + milliseconds(3000);
  int served = 0;
  milliseconds slowest{0};
  while (Clock::now() < until) {
    const auto started = Clock::now();
    HttpResult chat = Chat(ChatBody(kModel, false));
    EXPECT_EQ(chat.status, 200) << chat.transport_error;
    slowest = std::max(slowest, std::chrono::duration_cast<milliseconds>(Clock::now() - started));
    ++served;
    std::this_thread::sleep_for(milliseconds(100));
  }
  for (std::thread& t : slow) t.join();
  EXPECT_GE(served, 10);
  EXPECT_LT(slowest, milliseconds(1000)) << "a normal request waited behind slow clients";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(slow_replies[i].status, 200) << slow_replies[i].Describe();
  EXPECT_EQ(ExpectApiError(slow_replies[3], 400, "slow body")["param"], "messages");
  // The silent connections are still open (Pistache's header timeout is 60 s) and still usable.
  int open = 0;
  for (auto& client : silent) open += client->IdleAndOpen() ? 1 : 0;
  EXPECT_EQ(open, 50);
  ASSERT_TRUE(silent[0]->Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(silent[0]->ReadReply().status, 200);
  silent.clear();
  ExpectServing("slow and silent clients");
}

TEST_F(BadInputTest, ClientVanishingMidStreamCancelsTheUpstream) {
  StartAilb();
  FakeBehavior slow;
  slow.stream_chunks = 30;
  slow.chunk_interval_ms = 100;  // 3 s per stream
  upstream_->SetDefaultBehavior(slow);
  const std::string request = RawRequest("POST", "/v1/chat/completions", ChatBody(kModel, true),
                                         {"Content-Type: application/json"});
  for (int i = 0; i < 4; ++i) {
    const int aborted = upstream_->StreamsAbortedByPeer();
    {
      RawClient client(port());
      ASSERT_TRUE(client.Send(request));
      ASSERT_TRUE(client.ReadUntilContains("\"content\"")) << "no first SSE chunk";
      if (i % 2 == 1) {
        client.Reset();  // RST instead of FIN
      }
    }
    const auto deadline = Clock::now() + milliseconds(2000);
    while (upstream_->StreamsAbortedByPeer() == aborted && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    EXPECT_EQ(upstream_->StreamsAbortedByPeer(), aborted + 1) << "stream " << i;
  }
  // The same while the upstream has not answered yet.
  FakeBehavior thinking;
  thinking.delay_before_headers_ms = 5000;
  upstream_->SetDefaultBehavior(thinking);
  {
    const size_t before = upstream_->RequestCount();
    RawClient client(port());
    ASSERT_TRUE(client.Send(request));
    ASSERT_TRUE(upstream_->WaitForRequests(before + 1, milliseconds(2000)));
    EXPECT_EQ(upstream_->OpenConnections(), 1);
  }
  const auto deadline = Clock::now() + milliseconds(2000);
  while (upstream_->OpenConnections() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(upstream_->OpenConnections(), 0) << "every upstream request should be abandoned";
  EXPECT_EQ(upstream_->StreamsCompleted(), 0);
  upstream_->SetDefaultBehavior(FakeBehavior());
  ExpectServing("vanishing clients");
  HttpResult stream = HttpStream(ailb_->Url("/v1/chat/completions"), ChatBody(kModel, true),
                                 nullptr, JsonHeaders(), kReplyTimeout.count());
  EXPECT_EQ(stream.status, 200);
  EXPECT_EQ(SseDataPayloads(stream.body).back(), "[DONE]");
}

TEST_F(BadInputTest, TwoThousandIdleConnectionsLeaveRoomForRealRequests) {
  constexpr int kIdle = 2000;
  RaiseFileLimit(kIdle + 1024);
  StartAilb();
  std::vector<std::unique_ptr<RawClient>> idle;
  idle.reserve(kIdle);
  milliseconds slowest_connect{0};
  for (int i = 0; i < kIdle; ++i) {
    const auto started = Clock::now();
    idle.push_back(std::make_unique<RawClient>(port()));
    ASSERT_TRUE(idle.back()->connected()) << "connection " << i;
    slowest_connect =
        std::max(slowest_connect, std::chrono::duration_cast<milliseconds>(Clock::now() - started));
  }
  // A connect that overflows the accept backlog waits for the SYN retransmit (1 s).
  EXPECT_LT(slowest_connect, milliseconds(900)) << "the accept backlog overflowed";
  const auto started = Clock::now();
  ExpectServing("2,000 idle connections");
  EXPECT_LT(Clock::now() - started, milliseconds(2000));
  // Idle connections are alive, not just queued.
  for (int i : {0, kIdle / 2, kIdle - 1}) {
    ASSERT_TRUE(idle[i]->Send("GET /healthz HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(idle[i]->ReadReply().status, 200) << "idle connection " << i;
  }
  idle.clear();
  ExpectServing("closing 2,000 connections");
}

// --- Memory, RAG, embeddings and admin endpoints ------------------------------------------------

TEST_F(BadInputTest, RagSessionAndEmbeddingEndpointsRefuseGarbage) {
  StartAilb();
  const std::string collections = "/v1/rag/collections";
  struct Case {
    std::string body;
    long status;
    const char* param;
  };
  const std::vector<Case> create = {
      {"", 400, nullptr},
      {"not json", 400, nullptr},
      {"[]", 400, nullptr},
      {R"({"name":1})", 400, "name"},
      {R"({"name":""})", 400, "name"},
      {R"({"name":"bad name!"})", 400, nullptr},
      {R"({"name":")" + std::string(200, 'n') + R"("})", 400, nullptr},
      {"{\"name\":\"\xff\"}", 400, nullptr},
      {R"({"name":"\ud800"})", 400, nullptr},
      {R"({"name":"c1","embedding":"local"})", 400, "embedding"},
      {R"({"name":"c1","embedding":{"dimensions":"big"}})", 400, "embedding.dimensions"},
      {R"({"name":"c1","embedding":{"dimensions":4294967296}})", 400, "embedding.dimensions"},
      {R"({"name":"c1","embedding":{"dimensions":1e10}})", 400, "embedding.dimensions"},
      {R"({"name":"c1","embedding":{"dimensions":3}})", 400, nullptr},
      {R"({"name":"c1","embedding":{"dimensions":100000}})", 400, nullptr},
      {R"({"name":"c1","embedding":{"provider":7}})", 400, "embedding.provider"},
      {R"({"name":"c1","embedding":{"provider":"anthropic"}})", 400, nullptr},
      {R"({"name":"c1","chunking":[]})", 400, "chunking"},
      {R"({"name":"c1","chunking":{"max_tokens":-1}})", 400, nullptr},
      {R"({"name":"c1","chunking":{"max_tokens":64,"overlap":64}})", 400, nullptr},
      {R"({"name":"c1","chunking":{"overlap":"x"}})", 400, "chunking.overlap"},
      {std::string(60'000, '['), 400, nullptr},
      {std::string(R"({"name":"c1"})") + '\0' + "junk", 400, nullptr},
  };
  for (const Case& c : create) {
    ExpectRefused("POST", collections, c.body, c.status, "create " + Truncate(c.body, 60), c.param);
  }
  ASSERT_EQ(Call("POST", collections, R"({"name":"docs"})").status, 201);

  const std::string documents = collections + "/docs/documents";
  std::string thousand_and_one = R"({"documents":[)";
  for (int i = 0; i <= 1000; ++i) {
    absl::StrAppend(&thousand_and_one, i ? "," : "", R"({"id":"d)", i, R"(","text":"t"})");
  }
  thousand_and_one += "]}";
  const std::vector<Case> upsert = {
      {"", 400, nullptr},
      {R"({"documents":"x"})", 400, "documents"},
      {R"({"documents":{}})", 400, "documents"},
      {R"({"documents":[1]})", 400, "documents[0]"},
      {R"({"documents":[{"id":{},"text":"x"}]})", 400, "documents[0].id"},
      {R"({"documents":[{"id":1e300,"text":"x"}]})", 400, "documents[0].id"},
      {R"({"documents":[{"id":"a","text":5}]})", 400, "documents[0].text"},
      {R"({"documents":[{"id":"a"}]})", 400, "documents[0].text"},
      {R"({"documents":[{"id":"a","text":""}]})", 400, nullptr},
      {R"({"documents":[{"id":"","text":"x"}]})", 400, nullptr},
      {R"({"documents":[{"id":")" + std::string(300, 'i') + R"(","text":"x"}]})", 400, nullptr},
      {R"({"documents":[{"id":"a","text":"x","metadata":[1]}]})", 400, "documents[0].metadata"},
      {R"({"documents":[{"id":"a","text":"x","metadata":{"k":{"nested":1}}}]})", 400, nullptr},
      {"{\"documents\":[{\"id\":\"a\",\"text\":\"\xc0\xaf\"}]}", 400, nullptr},
      {thousand_and_one, 400, nullptr},
  };
  for (const Case& c : upsert) {
    ExpectRefused("POST", documents, c.body, c.status, "upsert " + Truncate(c.body, 60), c.param);
  }
  ExpectRefused("POST", collections + "/nope/documents", R"({"documents":[{"id":"a","text":"x"}]})",
                404, "upsert into a missing collection");
  ASSERT_EQ(Call("POST", documents, R"({"documents":[{"id":"a","text":"hello world"}]})").status,
            200);

  const std::string query = collections + "/docs/query";
  std::string many_keys = R"({"query":"x","filter":{)";
  for (int i = 0; i < 33; ++i) absl::StrAppend(&many_keys, i ? "," : "", "\"k", i, "\":1");
  many_keys += "}}";
  const std::vector<Case> queries = {
      {"", 400, nullptr},
      {"{}", 400, "query"},
      {R"({"query":5})", 400, "query"},
      {R"({"query":""})", 400, nullptr},
      {R"({"query":")" + std::string(17 << 10, 'q') + R"("})", 400, nullptr},
      {"{\"query\":\"\xff\"}", 400, nullptr},
      {R"({"query":"x","top_k":"5"})", 400, "top_k"},
      {R"({"query":"x","top_k":0})", 400, "top_k"},
      {R"({"query":"x","top_k":101})", 400, "top_k"},
      {R"({"query":"x","top_k":-1})", 400, "top_k"},
      {R"({"query":"x","top_k":2.5})", 400, "top_k"},
      {R"({"query":"x","top_k":1000000})", 400, "top_k"},
      {R"({"query":"x","top_k":18446744073709551615})", 400, "top_k"},
      {R"({"query":"x","mode":"fuzzy"})", 400, "mode"},
      {R"({"query":"x","mode":1})", 400, "mode"},
      {R"({"query":"x","filter":[1]})", 400, "filter"},
      {many_keys, 400, nullptr},
      {R"({"query":"x","filter":{"k":{"$in":"x"}}})", 400, nullptr},
      {R"({"query":"x","filter":{"k":{"$regex":"x"}}})", 400, nullptr},
  };
  for (const Case& c : queries) {
    ExpectRefused("POST", query, c.body, c.status, "query " + Truncate(c.body, 60), c.param);
  }
  ExpectRefused("POST", collections + "/nope/query", R"({"query":"x"})", 404,
                "query a missing collection");

  // Methods, names and media types.
  HttpResult put = Call("PUT", collections, "{}");
  ExpectApiError(put, 405, "PUT collections");
  EXPECT_EQ(put.Header("allow"), "GET, POST");
  ExpectRefused("POST", collections + "/docs", "{}", 405, "POST a collection");
  HttpResult text =
      Call("POST", collections, R"({"name":"t"})",
           {"Content-Type: text/plain", std::string("Authorization: Bearer ") + kAdminKey});
  EXPECT_EQ(ExpectApiError(text, 415, "text/plain collection")["code"], "unsupported_media_type");
  for (const char* name : {"/%ff", "/%00", "/..%2f..%2fetc", "/a%"}) {
    HttpResult get = Call("GET", collections + name, "");
    EXPECT_TRUE(get.status == 400 || get.status == 404) << name << ": " << get.status;
    ExpectApiError(get, get.status, std::string("collection ") + name);
  }
  ExpectRefused("DELETE", documents + "/%00", "", 404, "delete a missing document");
  ExpectServing("collection names");

  // Sessions.
  ExpectRefused("GET", "/v1/sessions/%ff", "", 400, "session id %ff");
  ExpectRefused("GET", "/v1/sessions/unknown", "", 404, "unknown session");
  ExpectRefused("DELETE", "/v1/sessions/unknown", "", 404, "delete unknown session");
  HttpResult post_session = Call("POST", "/v1/sessions/x", "{}");
  ExpectApiError(post_session, 405, "POST session");
  EXPECT_EQ(post_session.Header("allow"), "GET, DELETE");
  for (const std::string& id :
       {std::string(300, 's'), std::string("a%00b"), std::string("a%0d%0a")}) {
    HttpResult get = Call("GET", "/v1/sessions/" + id, "");
    EXPECT_TRUE(get.status == 400 || get.status == 404) << id << ": " << get.status;
    ExpectApiError(get, get.status, "session " + Truncate(id, 20));
  }
  ExpectServing("sessions");

  // Embeddings.
  std::string too_many = R"({"model":"local","input":[)";
  for (int i = 0; i < 2049; ++i) too_many += (i ? ",\"x\"" : "\"x\"");
  too_many += "]}";
  const std::vector<Case> embeddings = {
      {"", 400, nullptr},
      {R"({"model":1,"input":"x"})", 400, "model"},
      {R"({"model":"local"})", 400, "input"},
      {R"({"model":"local","input":[]})", 400, "input"},
      {R"({"model":"local","input":[1,2]})", 400, "input"},
      {R"({"model":"local","input":""})", 400, "input"},
      {R"({"model":"local","input":["a",""]})", 400, "input"},
      {too_many, 400, "input"},
      {R"({"model":"local","input":"x","dimensions":"x"})", 400, "dimensions"},
      {R"({"model":"local","input":"x","dimensions":4294967296})", 400, "dimensions"},
      {R"({"model":"local","input":"x","encoding_format":"hex"})", 400, "encoding_format"},
      {"{\"model\":\"local\",\"input\":\"\xff\"}", 400, nullptr},
      {R"({"model":"nope","input":"x"})", 404, "model"},
  };
  for (const Case& c : embeddings) {
    ExpectRefused("POST", "/v1/embeddings", c.body, c.status, "embeddings " + Truncate(c.body, 60),
                  c.param);
  }
  EXPECT_EQ(ailb_->Logs().find("status=500"), std::string::npos);
  EXPECT_EQ(ailb_->Logs().find("\"status\":500"), std::string::npos);
}

TEST_F(BadInputTest, AdminKeyEndpointRefusesGarbage) {
  StartAilb();
  const std::string keys = "/v1/admin/keys";
  // Without the admin key.
  HttpResult anonymous = Call("POST", keys, "{}", {"Content-Type: application/json"});
  EXPECT_EQ(ExpectApiError(anonymous, 401, "no key")["code"], "missing_api_key");
  HttpResult created = Call("POST", keys, R"({"name":"client"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string client_key = created.Json().value("key", "");
  const std::string id = created.Json().value("id", "");
  HttpResult as_client =
      Call("POST", keys, "{}",
           {"Content-Type: application/json", "Authorization: Bearer " + client_key});
  EXPECT_EQ(ExpectApiError(as_client, 403, "client key")["code"], "admin_key_required");

  struct Case {
    std::string body;
    const char* param;
  };
  const std::vector<Case> bodies = {
      {"not json", nullptr},
      {"[]", nullptr},
      {"\"x\"", nullptr},
      {R"({"rpm":-1})", "rpm"},
      {R"({"rpm":"x"})", "rpm"},
      {R"({"rpm":1.5})", "rpm"},
      {R"({"rpm":18446744073709551615})", "rpm"},
      {R"({"tpm":1152921504606846977})", "tpm"},
      {R"({"tokens_per_day":true})", "tokens_per_day"},
      {R"({"cost_usd_per_day":-1})", "cost_usd_per_day"},
      {R"({"cost_usd_per_month":"x"})", "cost_usd_per_month"},
      {R"({"name":5})", "name"},
      {R"({"name":")" + std::string(200, 'n') + R"("})", "name"},
      {"{\"name\":\"\xff\"}", nullptr},
      {R"({"models":"gpt"})", "models"},
      {R"({"models":[1]})", "models"},
      {R"({"models":[""]})", "models"},
      {R"({"unknown":1})", "unknown"},
      {std::string(60'000, '{'), nullptr},
      {std::string(R"({"name":"n"})") + '\0' + R"({"rpm":"x"})", nullptr},
  };
  for (const Case& c : bodies) {
    ExpectRefused("POST", keys, c.body, 400, "create key " + Truncate(c.body, 60), c.param);
    ExpectRefused("PATCH", keys + "/" + id, c.body, 400, "patch key " + Truncate(c.body, 60),
                  c.param);
  }
  ExpectRefused("PATCH", keys + "/key_nope", R"({"rpm":1})", 404, "patch unknown key");
  ExpectRefused("GET", keys + "/%ff", "", 404, "get key %ff");
  ExpectRefused("DELETE", keys + "/key_nope", "", 404, "delete unknown key");
  HttpResult put = Call("PUT", keys, "{}");
  ExpectApiError(put, 405, "PUT keys");
  EXPECT_EQ(put.Header("allow"), "GET, POST");
  HttpResult text =
      Call("POST", keys, R"({"name":"t"})",
           {"Content-Type: text/plain", std::string("Authorization: Bearer ") + kAdminKey});
  EXPECT_EQ(ExpectApiError(text, 415, "text/plain key")["code"], "unsupported_media_type");
  // The client key still works on the data plane; nothing was changed by the garbage.
  HttpResult chat =
      HttpCall("POST", ailb_->Url("/v1/chat/completions"), ChatBody(kModel, false),
               {"Content-Type: application/json", "Authorization: Bearer " + client_key},
               kReplyTimeout.count());
  EXPECT_EQ(chat.status, 200) << chat.body;
  json key = Call("GET", keys + "/" + id, "").Json();
  EXPECT_EQ(key["name"], "client");
  EXPECT_EQ(key["limits"]["rpm"], 0);
  EXPECT_EQ(ailb_->Logs().find("\"status\":500"), std::string::npos);
  EXPECT_EQ(ailb_->Logs().find("status=500"), std::string::npos);
}

}  // namespace
}  // namespace ailb::testing
