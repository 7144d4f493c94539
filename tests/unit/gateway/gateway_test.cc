// The gateway end to end over a scripted upstream: attempts, failover, streaming, deadlines,
// cancellation, refusals before routing, and the /v1/models and /healthz views.
//
// The upstream client is a test double: Start records the request and the test drives the
// observer's callbacks; RunAfter tasks (the gateway's "event thread") are queued and run when the
// test pumps them, so everything happens on the test thread in a deterministic order.
#include "ailb/gateway/gateway.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/clock.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/config/config.h"
#include "ailb/gateway/response_sink.h"
#include "ailb/llm/chat.h"
#include "ailb/router/aliases.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "ailb/router/usage_limiter.h"
#include "ailb/upstream/http_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace ailb::gateway {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Pair;
using ::testing::StartsWith;

// --- Test doubles -----------------------------------------------------------------------------

class FakeHttpClient final : public upstream::HttpClient {
 public:
  TransferId Start(upstream::Request request,
                   std::shared_ptr<upstream::ResponseObserver> observer) override {
    std::lock_guard lock(mu_);
    const TransferId id = next_id_++;
    transfers_.push_back(Transfer{id, std::move(request), std::move(observer)});
    return id;
  }

  void Cancel(TransferId id) override {
    std::lock_guard lock(mu_);
    cancelled_.push_back(id);
    // Like the real client: the observer learns of it on the event thread.
    tasks_.push_back([this, id] { CompleteById(id, absl::CancelledError("transfer cancelled")); });
  }

  void RunAfter(milliseconds delay, std::function<void()> task) override {
    std::lock_guard lock(mu_);
    delays_.push_back(delay);
    tasks_.push_back(std::move(task));
  }

  size_t ActiveTransfers() const override {
    std::lock_guard lock(mu_);
    size_t active = 0;
    for (const Transfer& t : transfers_) active += t.observer != nullptr;
    return active;
  }

  // Runs queued tasks, including those they queue, until none is left.
  void RunPending() {
    while (RunOne()) {
    }
  }

  // Runs only the oldest queued task (to interleave upstream events with posted work); false when
  // there was none.
  bool RunOne() {
    std::function<void()> task;
    {
      std::lock_guard lock(mu_);
      if (tasks_.empty()) return false;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
    return true;
  }

  size_t pending_tasks() const {
    std::lock_guard lock(mu_);
    return tasks_.size();
  }
  size_t transfer_count() const {
    std::lock_guard lock(mu_);
    return transfers_.size();
  }
  upstream::Request request(size_t index) const {
    std::lock_guard lock(mu_);
    return transfers_.at(index).request;
  }
  TransferId id(size_t index) const {
    std::lock_guard lock(mu_);
    return transfers_.at(index).id;
  }
  std::vector<TransferId> cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  std::vector<milliseconds> delays() const {
    std::lock_guard lock(mu_);
    return delays_;
  }

  // Completes every transfer still running with Cancelled, so that no exchange outlives the
  // test (even a failed one).
  void AbortAll() {
    std::vector<TransferId> active;
    {
      std::lock_guard lock(mu_);
      for (const Transfer& t : transfers_) {
        if (t.observer) active.push_back(t.id);
      }
    }
    for (TransferId id : active) CompleteById(id, absl::CancelledError("test teardown"));
    RunPending();
  }

  // Drives transfer `index`. A callback returning false cancels the transfer, as in the real
  // client: the observer then gets OnComplete(Cancelled). Each returns whether the transfer is
  // still going, and runs the queued tasks afterwards.
  bool Head(size_t index, int http_status, const upstream::Headers& headers = {}) {
    std::shared_ptr<upstream::ResponseObserver> observer = ObserverOf(index);
    if (!observer) return false;
    if (!observer->OnResponseHead(http_status, headers)) {
      Complete(index, absl::CancelledError("cancelled by observer"));
      return false;
    }
    RunPending();
    return true;
  }
  // Head and first body bytes with no queued task running in between.
  bool HeadAndBody(size_t index, int http_status, const upstream::Headers& headers,
                   std::string_view data) {
    std::shared_ptr<upstream::ResponseObserver> observer = ObserverOf(index);
    if (!observer || !observer->OnResponseHead(http_status, headers) ||
        !observer->OnBodyData(data)) {
      Complete(index, absl::CancelledError("cancelled by observer"));
      return false;
    }
    RunPending();
    return true;
  }
  bool Body(size_t index, std::string_view data) {
    std::shared_ptr<upstream::ResponseObserver> observer = ObserverOf(index);
    if (!observer) return false;
    if (!observer->OnBodyData(data)) {
      Complete(index, absl::CancelledError("cancelled by observer"));
      return false;
    }
    RunPending();
    return true;
  }
  void Complete(size_t index, const absl::Status& status) {
    std::shared_ptr<upstream::ResponseObserver> observer;
    {
      std::lock_guard lock(mu_);
      observer = std::move(transfers_.at(index).observer);
    }
    if (observer) observer->OnComplete(status);
    RunPending();
  }
  // A whole reply: head, the body in pieces of `piece` bytes (0 = one piece), completion.
  void Reply(size_t index, int http_status, std::string_view body,
             const upstream::Headers& headers = {}, size_t piece = 0) {
    if (!Head(index, http_status, headers)) return;
    const size_t step = piece == 0 ? std::max<size_t>(body.size(), 1) : piece;
    for (size_t offset = 0; offset < body.size(); offset += step) {
      if (!Body(index, body.substr(offset, step))) return;
    }
    Complete(index, absl::OkStatus());
  }

 private:
  struct Transfer {
    TransferId id;
    upstream::Request request;
    std::shared_ptr<upstream::ResponseObserver> observer;  // null once completed
  };

  std::shared_ptr<upstream::ResponseObserver> ObserverOf(size_t index) {
    std::lock_guard lock(mu_);
    return transfers_.at(index).observer;
  }
  void CompleteById(TransferId id, const absl::Status& status) {
    std::shared_ptr<upstream::ResponseObserver> observer;
    {
      std::lock_guard lock(mu_);
      for (Transfer& t : transfers_) {
        if (t.id == id) observer = std::move(t.observer);
      }
    }
    if (observer) observer->OnComplete(status);
  }

  mutable std::mutex mu_;
  TransferId next_id_ = 101;
  std::deque<Transfer> transfers_;  // a deque: Start may run inside a callback
  std::deque<std::function<void()>> tasks_;
  std::vector<TransferId> cancelled_;
  std::vector<milliseconds> delays_;
};

class RecordingSink final : public ResponseSink {
 public:
  struct JsonReply {
    int http_status;
    upstream::Headers headers;
    std::string body;
  };

  void SendJson(int http_status, const upstream::Headers& headers, std::string body) override {
    std::lock_guard lock(mu_);
    calls_.push_back("json");
    json_.push_back(JsonReply{http_status, headers, std::move(body)});
  }
  void StartStream(const upstream::Headers& headers) override {
    std::lock_guard lock(mu_);
    calls_.push_back("start");
    stream_headers_ = headers;
  }
  bool SendStreamData(std::string data) override {
    std::lock_guard lock(mu_);
    if (gone_) return false;
    calls_.push_back("data");
    writes_.push_back(std::move(data));
    if (accept_writes_ && writes_.size() >= *accept_writes_) gone_ = true;
    return true;
  }
  void EndStream() override {
    std::lock_guard lock(mu_);
    calls_.push_back("end");
  }
  bool ClientGone() const override {
    std::lock_guard lock(mu_);
    return gone_;
  }

  // The client disconnects after `n` successful writes.
  void GoneAfterWrites(size_t n) {
    std::lock_guard lock(mu_);
    accept_writes_ = n;
  }

  std::vector<std::string> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<JsonReply> json_replies() const {
    std::lock_guard lock(mu_);
    return json_;
  }
  // Each SendStreamData call's bytes (one write may hold several events).
  std::vector<std::string> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }
  // The streamed bytes split into SSE events, each with its terminating blank line.
  std::vector<std::string> frames() const {
    std::string all;
    for (const std::string& write : writes()) all += write;
    std::vector<std::string> frames;
    size_t start = 0;
    for (size_t end; (end = all.find("\n\n", start)) != std::string::npos; start = end + 2) {
      frames.push_back(all.substr(start, end + 2 - start));
    }
    EXPECT_EQ(start, all.size()) << "the stream ends mid-event: " << all.substr(start);
    return frames;
  }
  upstream::Headers stream_headers() const {
    std::lock_guard lock(mu_);
    return stream_headers_;
  }
  // The only reply, which must be a JSON one.
  JsonReply OnlyJson() const {
    std::vector<JsonReply> replies = json_replies();
    EXPECT_EQ(replies.size(), 1u);
    EXPECT_EQ(calls(), std::vector<std::string>{"json"});
    return replies.empty() ? JsonReply{0, {}, ""} : replies[0];
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> calls_;
  std::vector<JsonReply> json_;
  std::vector<std::string> writes_;
  upstream::Headers stream_headers_;
  std::optional<size_t> accept_writes_;
  bool gone_ = false;
};

// --- Helpers ----------------------------------------------------------------------------------

config::Deployment Dep(const std::string& id, const std::string& model, int priority = 0) {
  config::Deployment d;
  d.id = id;
  d.model_name = model;
  d.provider = config::ProviderKind::kOpenAI;
  d.upstream_model = "up-" + id;
  d.api_base = "http://" + id + ".test/v1";
  d.api_key = "key-" + id;
  d.priority = priority;
  return d;
}

constexpr std::string_view kChat = R"({"model":"gpt","messages":[{"role":"user","content":"hi"}]})";
constexpr std::string_view kStreamChat =
    R"({"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true})";
constexpr std::string_view kStreamChatWithUsage =
    R"({"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true,)"
    R"("stream_options":{"include_usage":true}})";

std::string Completion(std::string_view content = "Hello", std::optional<int64_t> created = 123) {
  json reply = {
      {"id", "upstream-id"},
      {"object", "chat.completion"},
      {"model", "up-model"},
      {"choices", json::array({{{"index", 0},
                                {"message", {{"role", "assistant"}, {"content", content}}},
                                {"finish_reason", "stop"}}})},
      {"usage", {{"prompt_tokens", 3}, {"completion_tokens", 1}, {"total_tokens", 4}}}};
  if (created) reply["created"] = *created;
  return reply.dump();
}

std::string ChunkJson(std::string_view content, bool finish = false) {
  json chunk = {{"id", "upstream-chunk-id"},
                {"object", "chat.completion.chunk"},
                {"created", 1},
                {"model", "up-model"},
                {"choices", json::array({{{"index", 0},
                                          {"delta", {{"content", content}}},
                                          {"finish_reason", finish ? json("stop") : json()}}})}};
  return chunk.dump();
}

constexpr std::string_view kUsageChunk =
    R"({"id":"upstream-chunk-id","object":"chat.completion.chunk","created":1,"model":"up-model",)"
    R"("choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})";

std::string Event(std::string_view data) { return "data: " + std::string(data) + "\n\n"; }

std::string StreamBody(bool with_usage = true) {
  std::string body = Event(ChunkJson("He")) + Event(ChunkJson("llo")) + Event(ChunkJson("", true));
  if (with_usage) body += Event(kUsageChunk);
  return body + "data: [DONE]\n\n";
}

std::string UpstreamError(std::string_view message, std::string_view code = "") {
  json error = {{"message", message}, {"type", "server_error"}};
  if (!code.empty()) error["code"] = code;
  return json{{"error", error}}.dump();
}

// The JSON of an SSE data frame; a failure when the frame is not one.
json FrameJson(const std::string& frame) {
  EXPECT_THAT(frame, StartsWith("data: "));
  EXPECT_TRUE(frame.size() >= 8 && frame.substr(frame.size() - 2) == "\n\n") << frame;
  if (frame.size() < 8) return json();
  const std::string payload = frame.substr(6, frame.size() - 8);
  EXPECT_EQ(payload.find('\n'), std::string::npos) << frame;
  json value = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(value.is_discarded()) << frame;
  return value;
}

std::string HeaderOf(const upstream::Headers& headers, std::string_view name) {
  return std::string(upstream::FindHeader(headers, name));
}

// --- Fixture ----------------------------------------------------------------------------------

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_log_level_ = spdlog::get_level();
    spdlog::set_level(spdlog::level::off);
    UseConfig({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("dep-c", "gpt", 2)});
  }

  void TearDown() override {
    // Whatever happened, once the event queue is drained no request is left behind.
    client_.RunPending();
    EXPECT_EQ(inflight_.count(), 0) << "a request is still counted in flight";
    EXPECT_EQ(client_.ActiveTransfers(), 0u) << "a transfer was left running";
    client_.AbortAll();
    spdlog::set_level(saved_log_level_);
  }

  void UseConfig(std::vector<config::Deployment> deployments, std::string strategy = "failover",
                 int total_ms = 600'000) {
    auto config = std::make_shared<config::Config>();
    config->module_id = "ailb-test";
    config->routing_strategy = std::move(strategy);
    config->deployments = std::move(deployments);
    config->timeouts.total_ms = total_ms;
    store_.Publish(std::move(config));
  }

  // Deployments plus whatever else `edit` sets (model groups, retries).
  void UseConfigWith(std::vector<config::Deployment> deployments,
                     const std::function<void(config::Config&)>& edit) {
    auto config = std::make_shared<config::Config>();
    config->module_id = "ailb-test";
    config->routing_strategy = "failover";
    config->deployments = std::move(deployments);
    edit(*config);
    store_.Publish(std::move(config));
  }

  // Starts a chat request; the first attempt starts when the queue is pumped.
  std::function<void()> Send(std::string_view body, const std::shared_ptr<RecordingSink>& sink,
                             std::optional<std::string> preferred_model = std::nullopt,
                             const std::function<void(RequestContext&)>& edit = nullptr) {
    absl::StatusOr<llm::ChatRequest> request = llm::ParseChatRequest(body);
    EXPECT_TRUE(request.ok()) << request.status();
    RequestContext context;
    context.request_id = "req-" + std::to_string(++requests_);
    context.client_address = "127.0.0.1";
    context.preferred_model = std::move(preferred_model);
    context.received_at = clock_.Now();
    if (edit) edit(context);
    return gateway_.HandleChat(*std::move(request), std::move(context), sink);
  }

  // Sends and pumps, so that the first upstream request has been made.
  std::function<void()> SendAndStart(std::string_view body,
                                     const std::shared_ptr<RecordingSink>& sink) {
    std::function<void()> cancel = Send(body, sink);
    client_.RunPending();
    return cancel;
  }

  void Trip(const std::string& id) {
    for (int i = 0; i < 3; ++i) {
      health_.OnAttemptStart(id);
      health_.OnFailure(id, absl::UnavailableError("down"));
    }
  }

  spdlog::level::level_enum saved_log_level_ = spdlog::level::info;
  int requests_ = 0;
  ManualClock clock_;
  SeededRandom random_{20240601};
  router::HealthTracker health_{clock_, router::HealthPolicy{}};
  router::Router router_{health_, random_};
  FakeHttpClient client_;
  InflightTracker inflight_;
  config::ConfigStore store_{std::make_shared<config::Config>()};
  Gateway gateway_{store_, router_, health_, client_, clock_, random_, inflight_};
};

// --- Non-streamed replies ---------------------------------------------------------------------

TEST_F(GatewayTest, NonStreamSuccess) {
  auto sink = std::make_shared<RecordingSink>();
  Send(kChat, sink);
  // HandleChat returns at once; the attempt starts on the client's event thread.
  EXPECT_EQ(client_.transfer_count(), 0u);
  EXPECT_EQ(inflight_.count(), 1);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 1u);

  const upstream::Request sent = client_.request(0);
  EXPECT_EQ(sent.method, "POST");
  EXPECT_EQ(sent.url, "http://dep-a.test/v1/chat/completions");
  EXPECT_EQ(HeaderOf(sent.headers, "Authorization"), "Bearer key-dep-a");
  const json sent_body = json::parse(sent.body);
  EXPECT_EQ(sent_body["model"], "up-dep-a");
  EXPECT_EQ(sent_body["messages"], json::parse(kChat)["messages"]);
  EXPECT_EQ(sent.connect_timeout, milliseconds(5'000));
  EXPECT_EQ(sent.first_byte_timeout, milliseconds(120'000));
  EXPECT_EQ(sent.idle_timeout, milliseconds(120'000));
  EXPECT_EQ(sent.total_timeout, milliseconds(600'000));
  EXPECT_EQ(health_.Snapshot("dep-a").in_flight, 1);
  EXPECT_THAT(sink->calls(), IsEmpty());
  EXPECT_THAT(client_.delays(), Each(milliseconds(0)));  // work is posted, not delayed

  clock_.Advance(milliseconds(250));
  client_.Reply(0, 200, Completion("Hello"), {{"Content-Type", "application/json"}});

  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-deployment"), "dep-a");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-provider"), "openai");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "1");
  const json body = json::parse(reply.body);
  const std::string id = body["id"];
  EXPECT_THAT(id, MatchesRegex("chatcmpl-[A-Za-z0-9]{24}"));
  EXPECT_EQ(body["created"], 123);  // the upstream's own timestamp is kept
  EXPECT_EQ(body["choices"], json::parse(Completion())["choices"]);
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["object"], "chat.completion");

  EXPECT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(inflight_.count(), 0);
  const router::DeploymentHealth health = health_.Snapshot("dep-a");
  EXPECT_EQ(health.successful_requests, 1);
  EXPECT_EQ(health.in_flight, 0);
  EXPECT_DOUBLE_EQ(health.avg_latency_ms, 250.0);
}

TEST_F(GatewayTest, NonStreamFillsCreatedWhenTheUpstreamOmitsIt) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  clock_.Advance(milliseconds(2'500));
  client_.Reply(0, 200, Completion("x", std::nullopt));
  const json body = json::parse(sink->OnlyJson().body);
  EXPECT_EQ(body["created"], 1'700'000'002);  // the manual clock's wall time
}

TEST_F(GatewayTest, CompletionIdsDifferPerRequest) {
  auto sink1 = std::make_shared<RecordingSink>();
  auto sink2 = std::make_shared<RecordingSink>();
  Send(kChat, sink1);
  Send(kChat, sink2);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  client_.Reply(0, 200, Completion());
  client_.Reply(1, 200, Completion());
  const std::string id1 = json::parse(sink1->OnlyJson().body)["id"];
  const std::string id2 = json::parse(sink2->OnlyJson().body)["id"];
  EXPECT_NE(id1, id2);
}

// --- Streams ----------------------------------------------------------------------------------

TEST_F(GatewayTest, StreamSuccess) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  ASSERT_EQ(client_.transfer_count(), 1u);
  const upstream::Request sent = client_.request(0);
  const json sent_body = json::parse(sent.body);
  EXPECT_EQ(sent_body["stream"], true);
  EXPECT_EQ(sent_body["stream_options"]["include_usage"], true);  // for ailb's accounting
  EXPECT_EQ(HeaderOf(sent.headers, "Accept"), "text/event-stream");

  client_.Reply(0, 200, StreamBody(), {{"Content-Type", "text/event-stream"}}, /*piece=*/7);

  const std::vector<std::string> calls = sink->calls();
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(calls.front(), "start");
  EXPECT_EQ(calls.back(), "end");
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "start"), 1);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "end"), 1);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "json"), 0);

  const upstream::Headers headers = sink->stream_headers();
  EXPECT_EQ(HeaderOf(headers, "x-ailb-deployment"), "dep-a");
  EXPECT_EQ(HeaderOf(headers, "x-ailb-provider"), "openai");
  EXPECT_EQ(HeaderOf(headers, "x-ailb-attempts"), "1");

  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 4u);  // three chunks (usage dropped) and [DONE]
  EXPECT_EQ(frames.back(), "data: [DONE]\n\n");
  std::string content;
  std::string id;
  for (size_t i = 0; i + 1 < frames.size(); ++i) {
    const json chunk = FrameJson(frames[i]);
    EXPECT_FALSE(chunk.contains("usage")) << frames[i];
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    const std::string chunk_id = chunk["id"];
    EXPECT_THAT(chunk_id, MatchesRegex("chatcmpl-[A-Za-z0-9]{24}"));
    if (id.empty()) id = chunk_id;
    EXPECT_EQ(chunk_id, id) << "every chunk of a stream has the same id";
    content += chunk["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(content, "Hello");
  EXPECT_EQ(FrameJson(frames[2])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(health_.Snapshot("dep-a").successful_requests, 1);
}

TEST_F(GatewayTest, StreamIsRelayedAsItArrives) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  EXPECT_THAT(sink->calls(), IsEmpty());  // nothing committed before the first chunk
  const std::string first = Event(ChunkJson("He"));
  ASSERT_TRUE(client_.Body(0, first.substr(0, 10)));
  EXPECT_THAT(sink->frames(), IsEmpty());  // half an event is not a chunk
  ASSERT_TRUE(client_.Body(0, first.substr(10)));
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data"));
  ASSERT_TRUE(client_.Body(0, Event(ChunkJson("llo", true))));
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data", "data"));
  ASSERT_TRUE(client_.Body(0, "data: [DONE]\n\n"));
  client_.Complete(0, absl::OkStatus());
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data", "data", "data", "end"));
  EXPECT_EQ(sink->frames().back(), "data: [DONE]\n\n");
}

TEST_F(GatewayTest, StreamUsageChunkKeptWhenTheClientAskedForIt) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChatWithUsage, sink);
  client_.Reply(0, 200, StreamBody());
  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 5u);  // three chunks, the usage chunk, [DONE]
  const json usage_chunk = FrameJson(frames[3]);
  EXPECT_EQ(usage_chunk["usage"], json::parse(kUsageChunk)["usage"]);
  EXPECT_EQ(usage_chunk["choices"], json::array());
  EXPECT_THAT(usage_chunk["id"].get<std::string>(), StartsWith("chatcmpl-"));
  EXPECT_EQ(frames[4], "data: [DONE]\n\n");
}

TEST_F(GatewayTest, StreamUsageOnAContentChunkIsStrippedWhenNotAsked) {
  json chunk = json::parse(ChunkJson("x", true));
  chunk["usage"] = {{"prompt_tokens", 1}, {"completion_tokens", 1}};
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  client_.Reply(0, 200, Event(chunk.dump()) + "data: [DONE]\n\n");
  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 2u);
  const json relayed = FrameJson(frames[0]);
  EXPECT_FALSE(relayed.contains("usage"));
  EXPECT_EQ(relayed["choices"], chunk["choices"]);
}

TEST_F(GatewayTest, EmptyButWellFormedStreamIsAValidEmptyReply) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  client_.Reply(0, 200, "data: [DONE]\n\n");
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data", "end"));
  EXPECT_THAT(sink->frames(), ElementsAre("data: [DONE]\n\n"));
  EXPECT_EQ(client_.transfer_count(), 1u);
}

// --- Failover ---------------------------------------------------------------------------------

TEST_F(GatewayTest, FailoverAfterUpstream500) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("internal error"));
  EXPECT_THAT(sink->calls(), IsEmpty());  // nothing reaches the client yet
  ASSERT_EQ(client_.transfer_count(), 2u);
  const upstream::Request second = client_.request(1);
  EXPECT_EQ(second.url, "http://dep-b.test/v1/chat/completions");
  EXPECT_EQ(HeaderOf(second.headers, "Authorization"), "Bearer key-dep-b");
  EXPECT_EQ(json::parse(second.body)["model"], "up-dep-b");
  EXPECT_EQ(json::parse(second.body)["messages"], json::parse(client_.request(0).body)["messages"]);

  client_.Reply(1, 200, Completion("from b"));
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-deployment"), "dep-b");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "2");
  EXPECT_EQ(json::parse(reply.body)["choices"][0]["message"]["content"], "from b");
  EXPECT_EQ(client_.transfer_count(), 2u);

  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 1);
  EXPECT_EQ(health_.Snapshot("dep-a").last_error, "internal error");
  EXPECT_EQ(health_.Snapshot("dep-b").successful_requests, 1);
}

TEST_F(GatewayTest, FailoverAfterTransportError) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Complete(0, absl::UnavailableError("connection refused"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).url, "http://dep-b.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-deployment"), "dep-b");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "2");
}

TEST_F(GatewayTest, FailoverAfterTransportErrorMidBody) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  const std::string body = Completion();
  ASSERT_TRUE(client_.Body(0, body.substr(0, body.size() / 2)));
  client_.Complete(0, absl::UnavailableError("connection reset"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, FailoverAfterMalformedReply) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 200, "<html>not json</html>");
  ASSERT_EQ(client_.transfer_count(), 2u);
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 1);
}

TEST_F(GatewayTest, FailoverWhenTheReplyIsTooLargeToBuffer) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  ASSERT_TRUE(client_.Body(0, std::string(64 << 20, ' ')));  // exactly 64 MiB is still taken
  EXPECT_FALSE(client_.Body(0, " "));  // one byte more: the gateway stops the transfer
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 1);
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, FailoverAfterUpstream401) {
  // A deployment whose key is refused is misconfigured: another deployment may serve.
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 401, UpstreamError("Incorrect API key provided", "invalid_api_key"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, StreamFailoverBeforeAnythingWasSent) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  client_.Reply(0, 503, UpstreamError("overloaded"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  // The second deployment's stream ends before [DONE] with nothing sent: still not committed.
  client_.Reply(1, 200, ": keep-alive\n\n");
  ASSERT_EQ(client_.transfer_count(), 3u);
  EXPECT_THAT(sink->calls(), IsEmpty());
  client_.Reply(2, 200, StreamBody());
  const std::vector<std::string> calls = sink->calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "start"), 1);
  EXPECT_EQ(HeaderOf(sink->stream_headers(), "x-ailb-deployment"), "dep-c");
  EXPECT_EQ(HeaderOf(sink->stream_headers(), "x-ailb-attempts"), "3");
  EXPECT_EQ(sink->frames().back(), "data: [DONE]\n\n");
  EXPECT_EQ(calls.back(), "end");
}

TEST_F(GatewayTest, ClientErrorFromUpstreamIsRelayedWithoutRetry) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(
      0, 400,
      R"({"error":{"message":"Invalid 'messages[0].content': too long.","type":"invalid_request_error","param":"messages[0].content","code":"string_above_max_length"}})");
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 400);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "1");
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["message"], "Invalid 'messages[0].content': too long.");
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["param"], "messages[0].content");
  EXPECT_EQ(error["code"], "string_above_max_length");
  EXPECT_EQ(client_.transfer_count(), 1u);  // any other deployment would refuse it too
  const router::DeploymentHealth health = health_.Snapshot("dep-a");
  EXPECT_EQ(health.failed_requests, 0);
  EXPECT_EQ(health.consecutive_failures, 0);
  EXPECT_EQ(health.in_flight, 0);
}

TEST_F(GatewayTest, AllAttemptsFailGives502) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("a broke"));
  client_.Complete(1, absl::UnavailableError("b unreachable"));
  ASSERT_EQ(client_.transfer_count(), 3u);
  client_.Reply(2, 502, "<html>bad gateway</html>");
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 502);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "3");
  const json body = json::parse(reply.body);
  ASSERT_TRUE(body.contains("error"));
  EXPECT_EQ(body["error"]["type"], "upstream_error");
  EXPECT_EQ(body["error"]["code"], "bad_upstream_reply");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("dep-c"));
  EXPECT_EQ(client_.transfer_count(), 3u);
}

TEST_F(GatewayTest, EveryDeploymentIsTriedUpToTenAttempts) {
  std::vector<config::Deployment> deployments;
  for (int i = 0; i < 12; ++i) deployments.push_back(Dep(absl::StrCat("d", i), "gpt", i));
  UseConfig(deployments);
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  for (size_t i = 0; i < 10; ++i) {
    ASSERT_EQ(client_.transfer_count(), i + 1);
    client_.Reply(i, 500, UpstreamError("down"));
  }
  EXPECT_EQ(client_.transfer_count(), 10u);
  EXPECT_EQ(sink->OnlyJson().http_status, 502);
}

TEST_F(GatewayTest, RateLimitIsRelayedWithRetryAfter) {
  UseConfig({Dep("only", "gpt")});
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 429, UpstreamError("Rate limit reached", "rate_limit_exceeded"),
                {{"Retry-After", "20"}});
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 429);
  EXPECT_EQ(HeaderOf(reply.headers, "Retry-After"), "20");
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_EQ(error["message"], "Rate limit reached");
  // The deployment cools down for as long as it asked.
  EXPECT_EQ(health_.TimeUntilAdmitted("only"), milliseconds(20'000));
}

TEST_F(GatewayTest, TrippedDeploymentIsSkippedOnLaterAttempts) {
  // dep-b trips while the request's first attempt is running; the plan made earlier still
  // lists it, but the retry goes straight to dep-c.
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  Trip("dep-b");
  client_.Reply(0, 500, UpstreamError("a broke"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).url, "http://dep-c.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(HeaderOf(sink->OnlyJson().headers, "x-ailb-attempts"), "2");
}

// --- Deadlines --------------------------------------------------------------------------------

TEST_F(GatewayTest, UpstreamTimeoutGives504) {
  UseConfig({Dep("only", "gpt")});
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Complete(0, absl::DeadlineExceededError("no first byte within 120000 ms"));
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 504);
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["type"], "timeout_error");
  EXPECT_EQ(error["code"], "upstream_timeout");
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("120000 ms"));
}

TEST_F(GatewayTest, RequestDeadlineStopsFailoverWith504) {
  UseConfig({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)}, "failover", /*total_ms=*/1'000);
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  EXPECT_EQ(client_.request(0).total_timeout, milliseconds(1'000));
  EXPECT_EQ(client_.request(0).connect_timeout, milliseconds(1'000));
  EXPECT_EQ(client_.request(0).first_byte_timeout, milliseconds(1'000));
  clock_.Advance(milliseconds(1'500));
  client_.Reply(0, 500, UpstreamError("slow and broken"));
  EXPECT_EQ(client_.transfer_count(), 1u);  // no time left for dep-b
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 504);
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["code"], "upstream_timeout");
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("1000 ms"));
}

TEST_F(GatewayTest, LaterAttemptsGetOnlyTheRemainingBudget) {
  UseConfig({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)}, "failover", /*total_ms=*/8'000);
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  clock_.Advance(milliseconds(4'000));
  client_.Reply(0, 500, UpstreamError("broken"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  const upstream::Request second = client_.request(1);
  EXPECT_EQ(second.total_timeout, milliseconds(4'000));
  EXPECT_EQ(second.connect_timeout, milliseconds(4'000));  // min(remaining, 5000)
  EXPECT_EQ(second.first_byte_timeout, milliseconds(4'000));
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, DeadlineIsCountedFromWhenTheRequestWasReceived) {
  UseConfig({Dep("only", "gpt")}, "failover", /*total_ms=*/1'000);
  auto sink = std::make_shared<RecordingSink>();
  Send(kChat, sink);
  clock_.Advance(milliseconds(1'000));  // the event thread was slow to start the attempt
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 0u);
  EXPECT_EQ(sink->OnlyJson().http_status, 504);
}

// --- Failures after a stream is committed -----------------------------------------------------

TEST_F(GatewayTest, TransportFailureAfterStreamCommittedEndsWithErrorEvent) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  ASSERT_TRUE(client_.Body(0, Event(ChunkJson("partial"))));
  client_.Complete(0, absl::UnavailableError("connection reset by peer"));

  EXPECT_EQ(client_.transfer_count(), 1u);  // a started stream cannot move elsewhere
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data", "data", "data", "end"));
  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(FrameJson(frames[0])["choices"][0]["delta"]["content"], "partial");
  const json error = FrameJson(frames[1]);
  ASSERT_TRUE(error.contains("error")) << frames[1];
  EXPECT_EQ(error["error"]["type"], "upstream_error");
  EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr("connection reset by peer"));
  EXPECT_EQ(frames[2], "data: [DONE]\n\n");
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 1);
}

TEST_F(GatewayTest, UpstreamErrorEventAfterStreamCommitted) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  client_.Reply(0, 200,
                Event(ChunkJson("a")) +
                    Event(R"({"error":{"message":"The server is overloaded"}})") +
                    "data: [DONE]\n\n");
  EXPECT_EQ(client_.transfer_count(), 1u);
  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_THAT(FrameJson(frames[1])["error"]["message"].get<std::string>(),
              HasSubstr("The server is overloaded"));
  EXPECT_EQ(frames[2], "data: [DONE]\n\n");
  EXPECT_EQ(sink->calls().back(), "end");
}

TEST_F(GatewayTest, StreamCutBeforeDoneAfterChunksEndsWithErrorEvent) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kStreamChat, sink);
  client_.Reply(0, 200, Event(ChunkJson("a")) + Event(ChunkJson("b")));  // no [DONE]
  EXPECT_EQ(client_.transfer_count(), 1u);
  const std::vector<std::string> frames = sink->frames();
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_TRUE(FrameJson(frames[2]).contains("error"));
  EXPECT_EQ(frames[3], "data: [DONE]\n\n");
  const std::vector<std::string> calls = sink->calls();
  EXPECT_EQ(calls.front(), "start");
  EXPECT_EQ(calls.back(), "end");
}

// --- Cancellation -----------------------------------------------------------------------------

TEST_F(GatewayTest, CancelAfterStartCancelsTheTransferAndWritesNothing) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = SendAndStart(kChat, sink);
  ASSERT_EQ(client_.transfer_count(), 1u);
  cancel();
  client_.RunPending();
  EXPECT_THAT(client_.cancelled(), ElementsAre(client_.id(0)));
  EXPECT_THAT(sink->calls(), IsEmpty());
  EXPECT_EQ(client_.transfer_count(), 1u);  // no failover for a client that left
  EXPECT_EQ(inflight_.count(), 0);
  const router::DeploymentHealth health = health_.Snapshot("dep-a");
  EXPECT_EQ(health.in_flight, 0);
  EXPECT_EQ(health.failed_requests, 0);  // the deployment did nothing wrong
  cancel();                              // again: harmless
  client_.RunPending();
  EXPECT_EQ(client_.cancelled().size(), 1u);
}

TEST_F(GatewayTest, CancelBeforeTheFirstAttemptRuns) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = Send(kChat, sink);
  cancel();
  client_.RunPending();
  // Whether or not a transfer was started, none is left running and nothing is written.
  EXPECT_EQ(client_.cancelled().size(), client_.transfer_count());
  EXPECT_THAT(sink->calls(), IsEmpty());
  EXPECT_EQ(inflight_.count(), 0);
}

TEST_F(GatewayTest, CancelFromAnotherThread) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = SendAndStart(kChat, sink);
  std::thread([&cancel] { cancel(); }).join();
  client_.RunPending();
  EXPECT_EQ(client_.cancelled().size(), 1u);
  EXPECT_THAT(sink->calls(), IsEmpty());
}

TEST_F(GatewayTest, CancelMidStreamStopsWriting) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = SendAndStart(kStreamChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  ASSERT_TRUE(client_.Body(0, Event(ChunkJson("a"))));
  cancel();
  client_.RunPending();
  EXPECT_THAT(client_.cancelled(), ElementsAre(client_.id(0)));
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data"));
  EXPECT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 0);
}

TEST_F(GatewayTest, CancelAfterTheReplyIsANoOp) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = SendAndStart(kChat, sink);
  client_.Reply(0, 200, Completion());
  cancel();
  client_.RunPending();
  EXPECT_THAT(client_.cancelled(), IsEmpty());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, ClientGoneMidStreamStopsTheTransfer) {
  auto sink = std::make_shared<RecordingSink>();
  sink->GoneAfterWrites(1);
  SendAndStart(kStreamChat, sink);
  ASSERT_TRUE(client_.Head(0, 200));
  ASSERT_TRUE(client_.Body(0, Event(ChunkJson("a"))));
  // The next write fails: the gateway asks the client to stop the transfer.
  EXPECT_FALSE(client_.Body(0, Event(ChunkJson("b"))));
  EXPECT_EQ(sink->frames().size(), 1u);
  EXPECT_THAT(sink->calls(), ElementsAre("start", "data"));  // no error event, no [DONE]
  EXPECT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 0);
  EXPECT_EQ(health_.Snapshot("dep-a").in_flight, 0);
}

// --- Refusals before routing ------------------------------------------------------------------

TEST_F(GatewayTest, UnknownModelIs404Synchronously) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel =
      Send(R"({"model":"nope","messages":[{"role":"user","content":"hi"}]})", sink);
  // Written before HandleChat returned, with no upstream work queued.
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 404);
  EXPECT_EQ(client_.pending_tasks(), 0u);
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["code"], "model_not_found");
  EXPECT_EQ(error["param"], "model");
  EXPECT_EQ(error["type"], "not_found_error");
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("'nope'"));
  ASSERT_TRUE(cancel);
  cancel();  // callable, and does nothing
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 0u);
  EXPECT_EQ(inflight_.count(), 0);
}

TEST_F(GatewayTest, DrainingRefusesWith503) {
  gateway_.StartDraining();
  EXPECT_TRUE(gateway_.draining());
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = Send(kChat, sink);
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 503);
  EXPECT_EQ(HeaderOf(reply.headers, "Retry-After"), "1");
  EXPECT_EQ(json::parse(reply.body)["error"]["type"], "service_unavailable");
  cancel();
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 0u);
}

TEST_F(GatewayTest, EveryDeploymentCoolingDownIs503WithRetryAfter) {
  Trip("dep-a");
  Trip("dep-b");
  Trip("dep-c");
  auto sink = std::make_shared<RecordingSink>();
  Send(kChat, sink);
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 503);
  EXPECT_EQ(HeaderOf(reply.headers, "Retry-After"), "5");
  EXPECT_EQ(json::parse(reply.body)["error"]["code"], "no_deployment_available");
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 0u);
}

// --- Deployment rpm/tpm -----------------------------------------------------------------------

// The gateway over a router that enforces deployments' rpm/tpm.
class GatewayUsageTest : public GatewayTest {
 protected:
  std::function<void()> SendLimited(std::string_view body,
                                    const std::shared_ptr<RecordingSink>& sink) {
    absl::StatusOr<llm::ChatRequest> request = llm::ParseChatRequest(body);
    EXPECT_TRUE(request.ok()) << request.status();
    RequestContext context;
    context.request_id = absl::StrCat("req-", ++requests_);
    context.client_address = "127.0.0.1";
    context.received_at = clock_.Now();
    return limited_.HandleChat(*std::move(request), std::move(context), sink);
  }
  static config::Deployment Limited(const std::string& id, const std::string& model, int priority,
                                    int64_t rpm, int64_t tpm = 0) {
    config::Deployment d = Dep(id, model, priority);
    d.rpm = rpm;
    d.tpm = tpm;
    return d;
  }
  std::string UrlOf(size_t transfer) const { return client_.request(transfer).url; }

  router::UsageLimiter usage_{clock_};
  router::Router limited_router_{health_, random_, nullptr, &usage_};
  Gateway limited_{store_, limited_router_, health_, client_, clock_, random_, inflight_};
};

TEST_F(GatewayUsageTest, DeploymentAtItsRpmIsSkippedUntilTheWindowPasses) {
  UseConfig({Limited("dep-a", "gpt", 0, /*rpm=*/1), Dep("dep-b", "gpt", 1)});
  auto first = std::make_shared<RecordingSink>();
  SendLimited(kChat, first);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(UrlOf(0), "http://dep-a.test/v1/chat/completions");
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(first->OnlyJson().http_status, 200);

  auto second = std::make_shared<RecordingSink>();
  SendLimited(kChat, second);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(UrlOf(1), "http://dep-b.test/v1/chat/completions") << "dep-a used its 1 rpm";
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(second->OnlyJson().http_status, 200);

  clock_.Advance(std::chrono::seconds(61));
  auto third = std::make_shared<RecordingSink>();
  SendLimited(kChat, third);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 3u);
  EXPECT_EQ(UrlOf(2), "http://dep-a.test/v1/chat/completions");
  client_.Reply(2, 200, Completion());
}

TEST_F(GatewayUsageTest, EveryDeploymentAtItsLimitIs429WithRetryAfter) {
  UseConfig({Limited("dep-a", "gpt", 0, /*rpm=*/1), Limited("dep-b", "gpt", 1, /*rpm=*/1)});
  for (size_t i = 0; i < 2; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    SendLimited(kChat, sink);
    client_.RunPending();
    client_.Reply(i, 200, Completion());
    EXPECT_EQ(sink->OnlyJson().http_status, 200);
  }
  clock_.Advance(std::chrono::seconds(30));
  auto refused = std::make_shared<RecordingSink>();
  SendLimited(kChat, refused);
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 2u) << "no upstream request for a refused one";
  const RecordingSink::JsonReply reply = refused->OnlyJson();
  EXPECT_EQ(reply.http_status, 429);
  EXPECT_EQ(HeaderOf(reply.headers, "Retry-After"), "31");  // 60.1 s after the first, rounded up
  const json error = json::parse(reply.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_EQ(error["code"], "rate_limit_exceeded");
}

TEST_F(GatewayUsageTest, UsageIsCountedAtDispatchNotAtPlanning) {
  UseConfig({Limited("dep-a", "gpt", 0, /*rpm=*/1), Dep("dep-b", "gpt", 1)});
  // Both requests are planned [dep-a, dep-b] before either is dispatched.
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  SendLimited(kChat, first);
  SendLimited(kChat, second);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(UrlOf(0), "http://dep-a.test/v1/chat/completions");
  EXPECT_EQ(UrlOf(1), "http://dep-b.test/v1/chat/completions")
      << "dep-a reached its rpm when the first request was dispatched";
  EXPECT_EQ(usage_.InWindow("dep-a").requests, 1);
  EXPECT_EQ(usage_.InWindow("dep-b").requests, 1);
  client_.Reply(0, 200, Completion());
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(HeaderOf(second->OnlyJson().headers, "x-ailb-attempts"), "1");
}

TEST_F(GatewayUsageTest, OnlyDeploymentReachingItsLimitAtDispatchIs429) {
  UseConfig({Limited("dep-a", "gpt", 0, /*rpm=*/1)});
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  SendLimited(kChat, first);
  SendLimited(kChat, second);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 1u);
  const RecordingSink::JsonReply refused = second->OnlyJson();
  EXPECT_EQ(refused.http_status, 429);
  EXPECT_EQ(HeaderOf(refused.headers, "Retry-After"), "61");
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(first->OnlyJson().http_status, 200);
}

TEST_F(GatewayUsageTest, TpmCountsTheTokensOfCompletedReplies) {
  // Completion() reports 3 prompt + 1 completion tokens.
  UseConfig({Limited("dep-a", "gpt", 0, /*rpm=*/0, /*tpm=*/4), Dep("dep-b", "gpt", 1)});
  auto first = std::make_shared<RecordingSink>();
  SendLimited(kChat, first);
  client_.RunPending();
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(usage_.InWindow("dep-a").tokens, 4);
  auto second = std::make_shared<RecordingSink>();
  SendLimited(kChat, second);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(UrlOf(1), "http://dep-b.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
}

TEST_F(GatewayUsageTest, AGroupAtItsLimitFallsBackToItsFallbacks) {
  UseConfigWith({Limited("dep-a", "gpt", 0, /*rpm=*/1), Dep("c1", "claude")},
                [](config::Config& c) { c.model_groups["gpt"].fallbacks = {"claude"}; });
  auto first = std::make_shared<RecordingSink>();
  SendLimited(kChat, first);
  client_.RunPending();
  client_.Reply(0, 200, Completion());
  auto second = std::make_shared<RecordingSink>();
  SendLimited(kChat, second);
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(UrlOf(1), "http://c1.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(second->OnlyJson().http_status, 200);
}

// --- Preferred model and configuration snapshots ----------------------------------------------

TEST_F(GatewayTest, PreferredModelIsUsedWhenItCanServe) {
  UseConfig({Dep("dep-a", "gpt"), Dep("mini-1", "gpt-mini")});
  auto sink = std::make_shared<RecordingSink>();
  Send(kChat, sink, "gpt-mini");
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(client_.request(0).url, "http://mini-1.test/v1/chat/completions");
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(HeaderOf(sink->OnlyJson().headers, "x-ailb-deployment"), "mini-1");
}

TEST_F(GatewayTest, PreferredModelIsIgnoredWhenUnknownOrUnavailable) {
  UseConfig({Dep("dep-a", "gpt"), Dep("mini-1", "gpt-mini")});
  auto sink1 = std::make_shared<RecordingSink>();
  Send(kChat, sink1, "no-such-model");
  Trip("mini-1");
  auto sink2 = std::make_shared<RecordingSink>();
  Send(kChat, sink2, "gpt-mini");
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(0).url, "http://dep-a.test/v1/chat/completions");
  EXPECT_EQ(client_.request(1).url, "http://dep-a.test/v1/chat/completions");
  client_.Reply(0, 200, Completion());
  client_.Reply(1, 200, Completion());
}

TEST_F(GatewayTest, PreferredModelKeepsRoundRobinRotation) {
  UseConfig({Dep("a1", "gpt"), Dep("b1", "gpt-b"), Dep("b2", "gpt-b")}, "round_robin");
  std::vector<std::string> firsts;
  for (int i = 0; i < 4; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    Send(kChat, sink, "gpt-b");
    client_.RunPending();
    ASSERT_EQ(client_.transfer_count(), static_cast<size_t>(i + 1));
    firsts.push_back(client_.request(i).url);
    client_.Reply(i, 200, Completion());
  }
  const std::vector<std::string> expected = {
      "http://b1.test/v1/chat/completions", "http://b2.test/v1/chat/completions",
      "http://b1.test/v1/chat/completions", "http://b2.test/v1/chat/completions"};
  // Regression: HandleChat used to Plan the preferred group twice per request, advancing the
  // rotation by two, so with two deployments every request went to the same one.
  EXPECT_EQ(firsts, expected);
}

TEST_F(GatewayTest, RequestFinishesOnTheConfigurationItStartedWith) {
  UseConfig({Dep("old-a", "gpt", 0), Dep("old-b", "gpt", 1)});
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  UseConfig({Dep("new-a", "gpt")});  // a reload while the request is in flight
  client_.Reply(0, 500, UpstreamError("broken"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).url, "http://old-b.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(HeaderOf(sink->OnlyJson().headers, "x-ailb-deployment"), "old-b");
}

// --- In-flight accounting ---------------------------------------------------------------------

TEST_F(GatewayTest, InflightCountsConcurrentRequestsAndReturnsToZero) {
  auto s1 = std::make_shared<RecordingSink>();
  auto s2 = std::make_shared<RecordingSink>();
  auto s3 = std::make_shared<RecordingSink>();
  Send(kChat, s1);
  Send(kStreamChat, s2);
  std::function<void()> cancel3 = Send(kChat, s3);
  client_.RunPending();
  EXPECT_EQ(inflight_.count(), 3);
  EXPECT_EQ(client_.ActiveTransfers(), 3u);
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(inflight_.count(), 2);
  client_.Reply(1, 500, UpstreamError("x"));  // fails over: still in flight
  EXPECT_EQ(inflight_.count(), 2);
  client_.Reply(3, 200, StreamBody());
  EXPECT_EQ(inflight_.count(), 1);
  cancel3();
  client_.RunPending();
  EXPECT_EQ(inflight_.count(), 0);
  EXPECT_TRUE(inflight_.WaitDrained(milliseconds(0)));
  EXPECT_EQ(client_.ActiveTransfers(), 0u);
}

TEST_F(GatewayTest, InflightReturnsToZeroAfterErrors) {
  UseConfig({Dep("only", "gpt")});
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("x"));
  EXPECT_EQ(sink->OnlyJson().http_status, 502);
  EXPECT_EQ(inflight_.count(), 0);
}

// --- SendError --------------------------------------------------------------------------------

TEST(SendErrorTest, WritesOpenAIErrorWithRetryAfterAndExtraHeaders) {
  RecordingSink sink;
  SendError(sink, WithRetryAfter(absl::UnavailableError("busy"), 7), {{"x-extra", "1"}});
  const RecordingSink::JsonReply reply = sink.OnlyJson();
  EXPECT_EQ(reply.http_status, 503);
  EXPECT_THAT(reply.headers, ElementsAre(Pair("x-extra", "1"), Pair("Retry-After", "7")));
  EXPECT_EQ(json::parse(reply.body),
            json::parse(OpenAIErrorBody(ToHttpError(absl::UnavailableError("busy")))));
}

TEST(SendErrorTest, AMethodNotAllowedStatusSendsItsAllowHeader) {
  RecordingSink sink;
  SendError(sink, MethodNotAllowedError("use GET or POST", "GET, POST"));
  const RecordingSink::JsonReply reply = sink.OnlyJson();
  EXPECT_EQ(reply.http_status, 405);
  EXPECT_THAT(reply.headers, ElementsAre(Pair("Allow", "GET, POST")));
  EXPECT_EQ(json::parse(reply.body)["error"]["code"], "method_not_allowed");

  RecordingSink explicit_allow;  // an Allow passed by the caller is not repeated
  SendError(explicit_allow, MethodNotAllowedError("use POST", "POST"), {{"Allow", "POST"}});
  EXPECT_THAT(explicit_allow.OnlyJson().headers, ElementsAre(Pair("Allow", "POST")));
}

TEST(SendErrorTest, NoRetryAfterWhenAbsent) {
  RecordingSink sink;
  SendError(sink, absl::InvalidArgumentError("bad"));
  const RecordingSink::JsonReply reply = sink.OnlyJson();
  EXPECT_EQ(reply.http_status, 400);
  EXPECT_THAT(reply.headers, IsEmpty());
}

// --- ListModels -------------------------------------------------------------------------------

TEST_F(GatewayTest, ListModelsInFirstSeenOrder) {
  UseConfig({Dep("g1", "gpt"), Dep("e1", "embed"), Dep("g2", "gpt"), Dep("c1", "claude")});
  absl::StatusOr<json> models = gateway_.ListModels(std::nullopt);
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ((*models)["object"], "list");
  const json& data = (*models)["data"];
  ASSERT_EQ(data.size(), 3u);
  std::vector<std::string> ids;
  for (const json& entry : data) {
    ids.push_back(entry["id"].get<std::string>());
    EXPECT_EQ(entry["object"], "model");
    EXPECT_EQ(entry["owned_by"], "ailb");
    EXPECT_TRUE(entry["created"].is_number_integer());
  }
  EXPECT_THAT(ids, ElementsAre("gpt", "embed", "claude"));
}

TEST_F(GatewayTest, ListOneModel) {
  absl::StatusOr<json> model = gateway_.ListModels(std::string("gpt"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)["id"], "gpt");
  EXPECT_EQ((*model)["object"], "model");
  absl::StatusOr<json> missing = gateway_.ListModels(std::string("up-dep-a"));
  ASSERT_FALSE(missing.ok());  // upstream names are not public
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(missing.status()), "model_not_found");
  EXPECT_EQ(ErrorParamOf(missing.status()), "model");
}

TEST_F(GatewayTest, ListModelsIncludesRunTimeAliasesOnce) {
  UseConfig({Dep("g1", "gpt"), Dep("c1", "claude")});
  router::ModelAliases aliases;
  aliases.Set("gpt-latest", "gpt");
  aliases.Set("claude", "gpt");      // shadows a configured name: listed once
  aliases.Set("orphan", "removed");  // its target group is no longer configured
  aliases.Set("a-first", "claude");
  GatewayHooks hooks;
  hooks.aliases = &aliases;
  Gateway gateway(store_, router_, health_, client_, clock_, random_, inflight_, hooks);

  absl::StatusOr<json> models = gateway.ListModels(std::nullopt);
  ASSERT_TRUE(models.ok()) << models.status();
  std::vector<std::string> ids;
  for (const json& entry : (*models)["data"]) {
    ids.push_back(entry["id"].get<std::string>());
    EXPECT_EQ(entry["object"], "model");
    EXPECT_EQ(entry["owned_by"], "ailb");
    EXPECT_TRUE(entry["created"].is_number_integer());
  }
  EXPECT_THAT(ids, ElementsAre("gpt", "claude", "a-first", "gpt-latest"));

  absl::StatusOr<json> alias = gateway.ListModels(std::string("gpt-latest"));
  ASSERT_TRUE(alias.ok()) << alias.status();
  EXPECT_EQ((*alias)["id"], "gpt-latest");
  EXPECT_EQ((*alias)["object"], "model");
  EXPECT_FALSE(gateway.ListModels(std::string("orphan")).ok());
}

TEST_F(GatewayTest, ListModelsEmptyConfig) {
  UseConfig({});
  absl::StatusOr<json> models = gateway_.ListModels(std::nullopt);
  ASSERT_TRUE(models.ok());
  EXPECT_EQ((*models)["data"], json::array());
}

// --- CheckHealth ------------------------------------------------------------------------------

TEST_F(GatewayTest, HealthOkWhenEveryGroupCanServe) {
  UseConfig({Dep("g1", "gpt"), Dep("g2", "gpt"), Dep("e1", "embed")});
  const Gateway::Health health = gateway_.CheckHealth();
  EXPECT_TRUE(health.can_serve);
  EXPECT_EQ(health.body["status"], "ok");
  EXPECT_EQ(health.body["module_id"], "ailb-test");
  EXPECT_EQ(health.body["in_flight"], 0);
  EXPECT_EQ(health.body["models"]["gpt"], json({{"deployments", 2}, {"available", 2}}));
  EXPECT_EQ(health.body["models"]["embed"], json({{"deployments", 1}, {"available", 1}}));
  ASSERT_EQ(health.body["deployments"].size(), 3u);
  const json& first = health.body["deployments"][0];
  EXPECT_EQ(first["id"], "g1");
  EXPECT_EQ(first["model"], "gpt");
  EXPECT_EQ(first["provider"], "openai");
  EXPECT_EQ(first["state"], "healthy");
  EXPECT_EQ(first["available"], true);
  EXPECT_FALSE(first.contains("cooldown_remaining_ms"));
  EXPECT_FALSE(health.body.contains("message"));
}

TEST_F(GatewayTest, HealthDegradedWhenAGroupCannotServe) {
  UseConfig({Dep("g1", "gpt"), Dep("g2", "gpt"), Dep("e1", "embed")});
  Trip("g1");
  Gateway::Health health = gateway_.CheckHealth();
  EXPECT_EQ(health.body["status"], "ok");  // gpt still has g2
  EXPECT_EQ(health.body["models"]["gpt"]["available"], 1);
  const json& g1 = health.body["deployments"][0];
  EXPECT_EQ(g1["state"], "cooling_down");
  EXPECT_EQ(g1["available"], false);
  EXPECT_EQ(g1["consecutive_failures"], 3);
  EXPECT_EQ(g1["failed_requests"], 3);
  EXPECT_EQ(g1["cooldown_remaining_ms"], 5000);
  EXPECT_EQ(g1["last_error"], "down");

  Trip("g2");
  health = gateway_.CheckHealth();
  EXPECT_TRUE(health.can_serve);
  EXPECT_EQ(health.body["status"], "degraded");
  EXPECT_EQ(health.body["models"]["gpt"]["available"], 0);
}

TEST_F(GatewayTest, HealthUnavailableWhenNothingCanServe) {
  UseConfig({Dep("g1", "gpt"), Dep("e1", "embed")});
  Trip("g1");
  Trip("e1");
  Gateway::Health health = gateway_.CheckHealth();
  EXPECT_FALSE(health.can_serve);
  EXPECT_EQ(health.body["status"], "unavailable");
  clock_.Advance(milliseconds(5'000));  // both half-open: each admits a probe
  health = gateway_.CheckHealth();
  EXPECT_TRUE(health.can_serve);
  EXPECT_EQ(health.body["status"], "ok");
  EXPECT_EQ(health.body["deployments"][0]["state"], "half_open");
}

TEST_F(GatewayTest, HealthWhileDraining) {
  gateway_.StartDraining();
  const Gateway::Health health = gateway_.CheckHealth();
  EXPECT_FALSE(health.can_serve);
  EXPECT_EQ(health.body["status"], "draining");
}

TEST_F(GatewayTest, HealthWithNoDeployments) {
  UseConfig({});
  const Gateway::Health health = gateway_.CheckHealth();
  EXPECT_FALSE(health.can_serve);
  EXPECT_EQ(health.body["status"], "unavailable");
  EXPECT_EQ(health.body["deployments"], json::array());
  EXPECT_TRUE(health.body["message"].is_string());
}

TEST_F(GatewayTest, HealthReportsInFlightAndVersionTags) {
  std::vector<config::Deployment> deployments = {Dep("g1", "gpt")};
  deployments[0].version = "blue";
  UseConfig(deployments);
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  Gateway::Health health = gateway_.CheckHealth();
  EXPECT_EQ(health.body["in_flight"], 1);
  EXPECT_EQ(health.body["deployments"][0]["in_flight"], 1);
  EXPECT_EQ(health.body["deployments"][0]["total_requests"], 1);
  EXPECT_EQ(health.body["deployments"][0]["version"], "blue");
  client_.Reply(0, 200, Completion());
  health = gateway_.CheckHealth();
  EXPECT_EQ(health.body["in_flight"], 0);
  EXPECT_EQ(health.body["deployments"][0]["in_flight"], 0);
}

// --- Retries, deadlines and per-request overrides ---------------------------------------------

// Delays of the posted retries (zero-delay posts are ordinary hand-offs to the event thread).
std::vector<milliseconds> NonZero(const std::vector<milliseconds>& delays) {
  std::vector<milliseconds> out;
  for (milliseconds d : delays) {
    if (d.count() > 0) out.push_back(d);
  }
  return out;
}

TEST_F(GatewayTest, FirstFailoverIsImmediateThenBackoffGrowsWithJitter) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("dep-c", "gpt", 2),
                 Dep("dep-d", "gpt", 3)},
                [](config::Config& c) {
                  c.retries.backoff_base_ms = 100;
                  c.retries.backoff_max_ms = 150;
                });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("boom"));
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_THAT(NonZero(client_.delays()), IsEmpty());  // dep-b right away
  client_.Reply(1, 503, UpstreamError("busy"));
  ASSERT_EQ(client_.transfer_count(), 3u);
  std::vector<milliseconds> waits = NonZero(client_.delays());
  ASSERT_EQ(waits.size(), 1u);
  // Equal jitter around the base: between half of it and all of it.
  EXPECT_GE(waits[0], milliseconds(50));
  EXPECT_LE(waits[0], milliseconds(100));
  client_.Reply(2, 500, UpstreamError("boom"));
  waits = NonZero(client_.delays());
  ASSERT_EQ(waits.size(), 2u);
  // Doubled (200 ms), then capped at backoff_max_ms.
  EXPECT_GE(waits[1], milliseconds(75));
  EXPECT_LE(waits[1], milliseconds(150));
  client_.Reply(3, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, BackoffNeverWaitsPastTheDeadline) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("dep-c", "gpt", 2)},
                [](config::Config& c) {
                  c.retries.backoff_base_ms = 60'000;
                  c.retries.backoff_max_ms = 60'000;
                  c.timeouts.total_ms = 1'000;
                });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("boom"));
  clock_.Advance(milliseconds(400));
  client_.Reply(1, 500, UpstreamError("boom"));
  const std::vector<milliseconds> waits = NonZero(client_.delays());
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_LE(waits[0], milliseconds(600));
  ASSERT_EQ(client_.transfer_count(), 3u);
  client_.Reply(2, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, TimeoutHeaderShortensTheDeadlineButNeverExtendsIt) {
  auto sink = std::make_shared<RecordingSink>();
  Send(kChat, sink, std::nullopt, [](RequestContext& c) {
    c.timeout_ms = "1500";
    c.first_byte_timeout_ms = "700";
  });
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(client_.request(0).total_timeout, milliseconds(1'500));
  EXPECT_EQ(client_.request(0).first_byte_timeout, milliseconds(700));
  client_.Reply(0, 200, Completion());

  auto second = std::make_shared<RecordingSink>();
  Send(kChat, second, std::nullopt, [](RequestContext& c) {
    c.timeout_ms = "999999999";
    c.first_byte_timeout_ms = "999999999";
  });
  client_.RunPending();
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).total_timeout, milliseconds(600'000));
  EXPECT_EQ(client_.request(1).first_byte_timeout, milliseconds(120'000));
  client_.Reply(1, 200, Completion());
}

TEST_F(GatewayTest, MalformedOverrideHeadersAre400) {
  for (auto edit : std::vector<std::function<void(RequestContext&)>>{
           [](RequestContext& c) { c.timeout_ms = "soon"; },
           [](RequestContext& c) { c.first_byte_timeout_ms = "-5"; },
           [](RequestContext& c) { c.routing_strategy = "fastest_please"; }}) {
    auto sink = std::make_shared<RecordingSink>();
    Send(kChat, sink, std::nullopt, edit);
    client_.RunPending();
    const RecordingSink::JsonReply reply = sink->OnlyJson();
    EXPECT_EQ(reply.http_status, 400);
    const json body = json::parse(reply.body);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_THAT(body["error"]["param"].get<std::string>(), StartsWith("X-Ailb-"));
  }
  EXPECT_EQ(client_.transfer_count(), 0u);
}

TEST_F(GatewayTest, StrategyHeaderOverridesTheConfiguredStrategy) {
  // failover would always start on dep-a; round_robin rotates.
  std::vector<std::string> first_urls;
  for (int i = 0; i < 3; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    Send(kChat, sink, std::nullopt, [](RequestContext& c) { c.routing_strategy = "Round_Robin"; });
    client_.RunPending();
    const size_t index = client_.transfer_count() - 1;
    first_urls.push_back(client_.request(index).url);
    client_.Reply(index, 200, Completion());
  }
  EXPECT_THAT(first_urls, ElementsAre("http://dep-a.test/v1/chat/completions",
                                      "http://dep-b.test/v1/chat/completions",
                                      "http://dep-c.test/v1/chat/completions"));
}

TEST_F(GatewayTest, GroupStrategyFromConfigurationApplies) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)},
                [](config::Config& c) { c.model_groups["gpt"].routing_strategy = "round_robin"; });
  std::vector<std::string> first_urls;
  for (int i = 0; i < 2; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    SendAndStart(kChat, sink);
    const size_t index = client_.transfer_count() - 1;
    first_urls.push_back(client_.request(index).url);
    client_.Reply(index, 200, Completion());
  }
  EXPECT_THAT(first_urls, ElementsAre("http://dep-a.test/v1/chat/completions",
                                      "http://dep-b.test/v1/chat/completions"));
}

// --- Fallback chains --------------------------------------------------------------------------

TEST_F(GatewayTest, FallbackGroupServesWhenEveryDeploymentFailed) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("small", "gpt-small")},
                [](config::Config& c) { c.model_groups["gpt"].fallbacks = {"gpt-small"}; });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 500, UpstreamError("boom"));
  client_.Reply(1, 502, UpstreamError("bad gateway"));
  ASSERT_EQ(client_.transfer_count(), 3u);
  EXPECT_EQ(client_.request(2).url, "http://small.test/v1/chat/completions");
  EXPECT_EQ(json::parse(client_.request(2).body)["model"], "up-small");
  client_.Reply(2, 200, Completion());
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-model-group"), "gpt-small");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-deployment"), "small");
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-attempts"), "3");
}

TEST_F(GatewayTest, FallbackGroupServesWhenEveryDeploymentIsCoolingDown) {
  UseConfigWith({Dep("dep-a", "gpt"), Dep("small", "gpt-small")},
                [](config::Config& c) { c.model_groups["gpt"].fallbacks = {"gpt-small"}; });
  Trip("dep-a");
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  ASSERT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(client_.request(0).url, "http://small.test/v1/chat/completions");
  client_.Reply(0, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

TEST_F(GatewayTest, ClientErrorsDoNotMoveToFallbackGroups) {
  UseConfigWith({Dep("dep-a", "gpt"), Dep("small", "gpt-small")},
                [](config::Config& c) { c.model_groups["gpt"].fallbacks = {"gpt-small"}; });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 400, UpstreamError("temperature must be <= 2", "invalid_value"));
  EXPECT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(sink->OnlyJson().http_status, 400);
}

TEST_F(GatewayTest, ContextLengthErrorMovesStraightToTheLongerContextGroup) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("long", "gpt-long"),
                 Dep("small", "gpt-small")},
                [](config::Config& c) {
                  c.model_groups["gpt"].fallbacks = {"gpt-small"};
                  c.model_groups["gpt"].context_window_fallbacks = {"gpt-long"};
                });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 400,
                UpstreamError("This model's maximum context length is 8192 tokens",
                              "context_length_exceeded"));
  // dep-b shares dep-a's context window: skipped; the ordinary fallback is not the answer either.
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).url, "http://long.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-model-group"), "gpt-long");
  EXPECT_EQ(health_.Snapshot("dep-a").consecutive_failures, 0);  // not the deployment's fault
}

TEST_F(GatewayTest, ContextLengthErrorWithoutFallbackIsRelayed) {
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  client_.Reply(0, 400, UpstreamError("prompt is too long: 250000 tokens > 200000 maximum"));
  EXPECT_EQ(client_.transfer_count(), 1u);
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 400);
  EXPECT_THAT(reply.body, HasSubstr("prompt is too long"));
}

TEST_F(GatewayTest, PromptEstimatedAboveTheWindowGoesToTheContextFallbackFirst) {
  UseConfigWith({Dep("dep-a", "gpt"), Dep("long", "gpt-long")}, [](config::Config& c) {
    c.model_groups["gpt"].max_input_tokens = 50;
    c.model_groups["gpt"].context_window_fallbacks = {"gpt-long"};
  });
  const std::string long_chat =
      json{{"model", "gpt"},
           {"messages", json::array({{{"role", "user"}, {"content", std::string(1000, 'x')}}})}}
          .dump();
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(long_chat, sink);
  ASSERT_EQ(client_.transfer_count(), 1u);
  EXPECT_EQ(client_.request(0).url, "http://long.test/v1/chat/completions");
  client_.Reply(0, 200, Completion());

  // A short prompt stays on its own group.
  auto short_sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, short_sink);
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(client_.request(1).url, "http://dep-a.test/v1/chat/completions");
  client_.Reply(1, 200, Completion());
}

// --- Hedging ----------------------------------------------------------------------------------

TEST_F(GatewayTest, HedgeStartsASecondAttemptAndTheLoserIsCancelled) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)},
                [](config::Config& c) { c.model_groups["gpt"].hedge_after_ms = 250; });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  // The fake runs delayed tasks at once: the hedge is due, and dep-a has not answered.
  ASSERT_EQ(client_.transfer_count(), 2u);
  EXPECT_THAT(NonZero(client_.delays()), ElementsAre(milliseconds(250)));
  EXPECT_EQ(client_.request(1).url, "http://dep-b.test/v1/chat/completions");
  client_.Reply(1, 200, Completion("from b"));
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 200);
  EXPECT_EQ(HeaderOf(reply.headers, "x-ailb-deployment"), "dep-b");
  EXPECT_THAT(reply.body, HasSubstr("from b"));
  EXPECT_THAT(client_.cancelled(), ElementsAre(client_.id(0)));
  client_.RunPending();
  EXPECT_EQ(health_.Snapshot("dep-a").in_flight, 0);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 0);  // slow is not failed
}

TEST_F(GatewayTest, NoHedgeWhenTheFirstByteCameInTime) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)},
                [](config::Config& c) { c.model_groups["gpt"].hedge_after_ms = 250; });
  auto sink = std::make_shared<RecordingSink>();
  Send(kStreamChat, sink);
  client_.RunOne();  // the first attempt starts; the hedge timer is queued behind it
  ASSERT_EQ(client_.transfer_count(), 1u);
  // The first byte arrives before the hedge timer runs (which it then does: too late).
  ASSERT_TRUE(
      client_.HeadAndBody(0, 200, {{"Content-Type", "text/event-stream"}}, Event(ChunkJson("He"))));
  EXPECT_EQ(client_.transfer_count(), 1u);
  ASSERT_TRUE(client_.Body(0, Event(ChunkJson("", true)) + "data: [DONE]\n\n"));
  client_.Complete(0, absl::OkStatus());
  EXPECT_EQ(sink->calls().back(), "end");
}

TEST_F(GatewayTest, HedgedRequestSurvivesTheFirstAttemptFailing) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1), Dep("dep-c", "gpt", 2)},
                [](config::Config& c) { c.model_groups["gpt"].hedge_after_ms = 100; });
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  ASSERT_EQ(client_.transfer_count(), 2u);
  client_.Reply(0, 500, UpstreamError("boom"));
  // The hedge is still running: nothing new starts, nothing is answered yet.
  EXPECT_EQ(client_.transfer_count(), 2u);
  EXPECT_THAT(sink->calls(), IsEmpty());
  client_.Reply(1, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
  EXPECT_EQ(health_.Snapshot("dep-a").failed_requests, 1);
}

TEST_F(GatewayTest, HedgeAfterP95WaitsForSamplesThenUsesThem) {
  UseConfigWith({Dep("dep-a", "gpt", 0), Dep("dep-b", "gpt", 1)}, [](config::Config& c) {
    c.model_groups["gpt"].hedge_after_ms = config::kHedgeAfterP95;
  });
  {
    auto sink = std::make_shared<RecordingSink>();
    SendAndStart(kChat, sink);
    EXPECT_EQ(client_.transfer_count(), 1u);  // no samples yet: no hedge
    client_.Reply(0, 200, Completion());
  }
  for (int i = 1; i <= 40; ++i) {
    health_.RecordFirstByte(i % 2 ? "dep-a" : "dep-b", std::chrono::microseconds(i * 10'000));
  }
  auto sink = std::make_shared<RecordingSink>();
  SendAndStart(kChat, sink);
  ASSERT_EQ(client_.transfer_count(), 3u);
  // 41 samples (10..400 ms plus the first request's); the 95th percentile is near 380 ms.
  const std::vector<milliseconds> waits = NonZero(client_.delays());
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_GE(waits[0], milliseconds(370));
  EXPECT_LE(waits[0], milliseconds(400));
  client_.Reply(2, 200, Completion());
  EXPECT_EQ(sink->OnlyJson().http_status, 200);
}

// --- API keys --------------------------------------------------------------------------------

class GatewayKeysTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayTest::SetUp();
    auth::KeyLimits limits;
    limits.models = {"gpt"};
    limits.tokens_per_day = 10;
    limits.cost_usd_per_day = 1.0;
    keys_->SetConfigured({{"sk-team-key-0123", "team", limits}}, "");
    who_ = *keys_->Authenticate("sk-team-key-0123");
    auto deployment = Dep("priced", "gpt");
    deployment.input_cost_per_token = 0.01;
    deployment.output_cost_per_token = 0.02;
    UseConfig({deployment, Dep("other", "other")});
  }

  std::function<void()> SendAs(std::string_view body, const std::shared_ptr<RecordingSink>& sink) {
    absl::StatusOr<llm::ChatRequest> request = llm::ParseChatRequest(body);
    EXPECT_TRUE(request.ok()) << request.status();
    RequestContext context;
    context.request_id = "key-req";
    context.principal = who_;
    context.received_at = clock_.Now();
    return keyed_gateway_.HandleChat(*std::move(request), std::move(context), sink);
  }

  metrics::Registry registry_;
  metrics::RequestMetrics request_metrics_{registry_, clock_};
  std::unique_ptr<auth::KeyStore> keys_ = *auth::KeyStore::Open("", clock_);
  auth::Principal who_;
  Gateway keyed_gateway_{
      store_,
      router_,
      health_,
      client_,
      clock_,
      random_,
      inflight_,
      GatewayHooks{&request_metrics_, nullptr, nullptr, nullptr, nullptr, nullptr, keys_.get()}};
};

TEST_F(GatewayKeysTest, ModelOutsideTheAllowListIsRefusedBeforeAnyAttempt) {
  auto sink = std::make_shared<RecordingSink>();
  SendAs(R"({"model":"other","messages":[{"role":"user","content":"hi"}]})", sink);
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 0u);
  const RecordingSink::JsonReply reply = sink->OnlyJson();
  EXPECT_EQ(reply.http_status, 403);
  EXPECT_EQ(json::parse(reply.body)["error"]["code"], "model_not_allowed");
  // Refusals are counted like any failed request.
  EXPECT_THAT(registry_.RenderPrometheus(),
              HasSubstr(R"(model="other",provider="none",status_code="403"} 1)"));
}

TEST_F(GatewayKeysTest, RefusalsForModelsNotServedHereShareOneMetricLabel) {
  // Any name a client sends used to become a label of every per-model metric.
  for (const std::string& model :
       {std::string("zz-made-up-1"), std::string("zz-made-up-2"), std::string(200, 'z')}) {
    auto sink = std::make_shared<RecordingSink>();
    SendAs(R"({"model":")" + model + R"(","messages":[{"role":"user","content":"hi"}]})", sink);
    EXPECT_GE(sink->OnlyJson().http_status, 400);
  }
  const std::string metrics = registry_.RenderPrometheus();
  EXPECT_EQ(metrics.find("zz"), std::string::npos);
  EXPECT_THAT(metrics, HasSubstr(R"(litellm_proxy_total_requests_metric_total{deployment="none",)"
                                 R"(model="unknown",provider="none",status_code=)"));
}

TEST_F(GatewayKeysTest, RealUsageIsSettledAndTheBudgetThenRefuses) {
  auto sink = std::make_shared<RecordingSink>();
  SendAs(kChat, sink);
  client_.RunPending();
  // In flight: the request's estimate is reserved.
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 1);
  client_.Reply(0, 200, Completion(), {{"Content-Type", "application/json"}});
  ASSERT_EQ(sink->OnlyJson().http_status, 200);
  absl::StatusOr<auth::KeyInfo> info = keys_->Get(who_.key_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->in_flight, 0);
  EXPECT_EQ(info->usage_today.tokens, 4);  // 3 prompt + 1 completion
  EXPECT_DOUBLE_EQ(info->usage_today.cost_usd, 3 * 0.01 + 1 * 0.02);
  EXPECT_EQ(info->usage_today.requests, 1);

  // Another 8 tokens pass 10; the next request is refused.
  auto second = std::make_shared<RecordingSink>();
  SendAs(kChat, second);
  client_.RunPending();
  client_.Reply(1, 200,
                R"({"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,)"
                R"("message":{"role":"assistant","content":"y"},"finish_reason":"stop"}],)"
                R"("usage":{"prompt_tokens":4,"completion_tokens":4,"total_tokens":8}})",
                {{"Content-Type", "application/json"}});
  ASSERT_EQ(second->OnlyJson().http_status, 200);
  auto third = std::make_shared<RecordingSink>();
  SendAs(kChat, third);
  client_.RunPending();
  const RecordingSink::JsonReply refused = third->OnlyJson();
  EXPECT_EQ(refused.http_status, 429);
  EXPECT_EQ(json::parse(refused.body)["error"]["code"], "insufficient_quota");
  EXPECT_FALSE(HeaderOf(refused.headers, "Retry-After").empty());
  EXPECT_EQ(client_.transfer_count(), 2u);
}

TEST_F(GatewayKeysTest, AbandonedRequestReleasesItsReservation) {
  auto sink = std::make_shared<RecordingSink>();
  std::function<void()> cancel = SendAs(kChat, sink);
  client_.RunPending();
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 1);
  cancel();
  client_.RunPending();
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 0);
  EXPECT_EQ(keys_->Get(who_.key_id)->usage_today.tokens, 0);
}

TEST_F(GatewayKeysTest, MaxTokensSetsTheReservation) {
  // The budget is 10 tokens. With max_tokens 2 the first request reserves the prompt estimate
  // plus 2, which leaves room for a second; with max_tokens 50 it reserves more than the budget,
  // so a second request waits for the first to settle.
  constexpr std::string_view kSmall =
      R"({"model":"gpt","max_tokens":2,"messages":[{"role":"user","content":"hi"}]})";
  constexpr std::string_view kLarge =
      R"({"model":"gpt","max_tokens":50,"messages":[{"role":"user","content":"hi"}]})";
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  SendAs(kSmall, first);
  SendAs(kSmall, second);
  client_.RunPending();
  EXPECT_EQ(client_.transfer_count(), 2u);
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 2);
  client_.AbortAll();
  client_.RunPending();

  auto large = std::make_shared<RecordingSink>();
  auto blocked = std::make_shared<RecordingSink>();
  SendAs(kLarge, large);
  SendAs(kSmall, blocked);
  client_.RunPending();
  EXPECT_EQ(blocked->OnlyJson().http_status, 429);
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 1);
  client_.Reply(2, 200, Completion(), {{"Content-Type", "application/json"}});
  EXPECT_EQ(large->OnlyJson().http_status, 200);
  EXPECT_EQ(keys_->Get(who_.key_id)->in_flight, 0);
}

}  // namespace
}  // namespace ailb::gateway
