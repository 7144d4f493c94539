#include "ailb/gateway/gateway.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/provider/adapter.h"
#include "ailb/provider/sse.h"
#include "spdlog/spdlog.h"

namespace ailb::gateway {
namespace {

using nlohmann::json;

// Replies larger than this are not a chat completion; refuse rather than buffer without bound.
constexpr size_t kMaxBufferedReplyBytes = 64 << 20;
// Every deployment of a plan may be tried (within the request deadline), up to this many.
constexpr int kMaxAttempts = 10;

int64_t MillisBetween(SteadyTime from, SteadyTime to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

// What the client sees once no attempt is left: the deployment's own faults become a gateway
// error (502, or 504 for deadlines), while a client's bad request and rate limits are relayed.
absl::Status ClientFacingError(const absl::Status& error, const config::Deployment* deployment) {
  if (!router::IsDeploymentFault(error)) return error;
  const std::string where =
      deployment ? absl::StrCat("upstream ", deployment->id, ": ") : std::string("upstream: ");
  const std::optional<int> http = HttpStatusOverride(error);
  if (http == 429) return error;
  absl::Status result;
  if (error.code() == absl::StatusCode::kDeadlineExceeded || http == 408 || http == 504) {
    result = WithErrorCode(absl::DeadlineExceededError(absl::StrCat(where, error.message())),
                           "upstream_timeout");
  } else {
    result = BadGatewayError(absl::StrCat(where, error.message()));
  }
  if (std::optional<int> retry_after = RetryAfterOf(error)) {
    result = WithRetryAfter(std::move(result), *retry_after);
  }
  return result;
}

std::string SseErrorEvent(const absl::Status& status) {
  return provider::SseDataEvent(OpenAIErrorBody(ToHttpError(status)));
}

}  // namespace

void SendError(ResponseSink& sink, const absl::Status& status, upstream::Headers headers) {
  HttpError error = ToHttpError(status);
  if (error.retry_after_seconds) {
    headers.emplace_back("Retry-After", std::to_string(*error.retry_after_seconds));
  }
  sink.SendJson(error.http_status, headers, OpenAIErrorBody(error));
}

// One chat request in flight. After construction every member is touched only on the upstream
// client's event thread (work is posted there with RunAfter), so it needs no lock.
class ChatExchange : public std::enable_shared_from_this<ChatExchange> {
 public:
  ChatExchange(Gateway& gateway, llm::ChatRequest request, RequestContext context,
               std::shared_ptr<ResponseSink> sink, std::shared_ptr<const config::Config> config,
               std::vector<const config::Deployment*> plan)
      : gateway_(gateway),
        request_(std::move(request)),
        context_(std::move(context)),
        sink_(std::move(sink)),
        config_(std::move(config)),
        plan_(std::move(plan)),
        completion_id_(absl::StrCat("chatcmpl-", RandomToken(gateway.random_, 24))),
        deadline_(context_.received_at + std::chrono::milliseconds(config_->timeouts.total_ms)) {
    gateway_.inflight_.Enter();
    if (gateway_.hooks_.metrics) gateway_.hooks_.metrics->RequestStarted();
  }
  ~ChatExchange() {
    if (!recorded_) Record(499, "abandoned");
    gateway_.inflight_.Leave();
  }

  void Post(std::function<void(ChatExchange&)> work) {
    gateway_.client_.RunAfter(std::chrono::milliseconds(0),
                              [self = shared_from_this(), work = std::move(work)] { work(*self); });
  }

  void StartNextAttempt();
  void CancelByClient();

  bool OnHead(int attempt, int http_status, const upstream::Headers& headers);
  bool OnData(int attempt, std::string_view data);
  void OnDone(int attempt, const absl::Status& transport_status);

 private:
  // Books the success, then sends `json_reply` (non-stream) or ends the stream. Bookkeeping
  // comes first so a client that has the reply also sees its effects (stats, affinity).
  void Succeed(std::optional<std::pair<upstream::Headers, std::string>> json_reply);
  void FailAttempt(absl::Status error);
  void FinishWithError(const absl::Status& error);
  // Formats decoded chunks for the client; records usage and finish reason on the way.
  std::string FormatChunks(std::vector<json>& chunks);
  bool WriteStream(std::string data);
  // `attempt_in_progress`: the current attempt's upstream time is not yet in upstream_seconds_.
  upstream::Headers ReplyHeaders(bool attempt_in_progress) const;
  // Writes the access log line and the request's metrics, once.
  void Record(int http_status, std::string_view outcome);

  Gateway& gateway_;
  const llm::ChatRequest request_;
  const RequestContext context_;
  const std::shared_ptr<ResponseSink> sink_;
  const std::shared_ptr<const config::Config> config_;  // the snapshot this request started on
  const std::vector<const config::Deployment*> plan_;
  const std::string completion_id_;
  const SteadyTime deadline_;

  size_t next_in_plan_ = 0;
  int attempts_ = 0;
  bool finished_ = false;
  bool committed_ = false;  // bytes of a reply have been handed to the client
  bool client_gone_ = false;
  upstream::HttpClient::TransferId transfer_ = 0;

  // The current attempt.
  const config::Deployment* deployment_ = nullptr;
  std::shared_ptr<const provider::ProviderAdapter> adapter_;
  SteadyTime attempt_started_;
  int http_status_ = 0;
  upstream::Headers upstream_headers_;
  std::string body_;
  std::unique_ptr<provider::StreamDecoder> decoder_;
  absl::Status decode_error_;
  std::vector<json> chunks_;

  absl::Status last_error_;
  llm::Usage usage_;
  std::string finish_reason_;
  bool recorded_ = false;
  double upstream_seconds_ = 0;
  std::optional<SteadyTime> first_byte_at_;
  int64_t bytes_sent_ = 0;
};

namespace {

// Relays one attempt's transfer events to its exchange; events of superseded attempts are
// dropped by the exchange.
class AttemptObserver final : public upstream::ResponseObserver {
 public:
  AttemptObserver(std::shared_ptr<ChatExchange> exchange, int attempt)
      : exchange_(std::move(exchange)), attempt_(attempt) {}
  bool OnResponseHead(int http_status, const upstream::Headers& headers) override {
    return exchange_->OnHead(attempt_, http_status, headers);
  }
  bool OnBodyData(std::string_view data) override { return exchange_->OnData(attempt_, data); }
  void OnComplete(const absl::Status& status) override { exchange_->OnDone(attempt_, status); }

 private:
  std::shared_ptr<ChatExchange> exchange_;
  const int attempt_;
};

}  // namespace

void ChatExchange::StartNextAttempt() {
  while (!finished_ && next_in_plan_ < plan_.size() && attempts_ < kMaxAttempts) {
    const config::Deployment* deployment = plan_[next_in_plan_++];
    // The plan was made before earlier attempts failed; skip what has tripped since.
    if (attempts_ > 0 && !gateway_.health_.Admits(deployment->id)) continue;
    absl::StatusOr<std::shared_ptr<const provider::ProviderAdapter>> adapter =
        provider::AdapterFor(deployment->provider);
    if (!adapter.ok()) {
      last_error_ = adapter.status();
      continue;
    }
    absl::StatusOr<upstream::Request> encoded = (*adapter)->EncodeChat(request_, *deployment);
    if (!encoded.ok()) {
      // The request cannot be expressed for this provider: the client's problem, not the
      // deployment's, unless another provider in the plan can take it.
      last_error_ = encoded.status();
      continue;
    }
    const SteadyTime now = gateway_.clock_.Now();
    if (now >= deadline_) break;
    const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now);
    const config::TimeoutConfig& timeouts = config_->timeouts;
    encoded->connect_timeout = std::min(remaining, std::chrono::milliseconds(timeouts.connect_ms));
    encoded->first_byte_timeout =
        std::min(remaining, std::chrono::milliseconds(timeouts.first_byte_ms));
    encoded->idle_timeout = std::chrono::milliseconds(timeouts.stream_idle_ms);
    encoded->total_timeout = remaining;

    deployment_ = deployment;
    adapter_ = *std::move(adapter);
    attempt_started_ = now;
    http_status_ = 0;
    upstream_headers_.clear();
    body_.clear();
    decoder_.reset();
    decode_error_ = absl::OkStatus();
    ++attempts_;
    gateway_.health_.OnAttemptStart(deployment->id);
    transfer_ = gateway_.client_.Start(
        std::move(*encoded), std::make_shared<AttemptObserver>(shared_from_this(), attempts_));
    return;
  }
  if (finished_) return;
  if (gateway_.clock_.Now() >= deadline_) {
    FinishWithError(
        WithErrorCode(absl::DeadlineExceededError(absl::StrCat(
                          "the request deadline of ", config_->timeouts.total_ms, " ms passed")),
                      "upstream_timeout"));
    return;
  }
  FinishWithError(last_error_.ok() ? absl::UnavailableError("no deployment could take the request")
                                   : ClientFacingError(last_error_, deployment_));
}

void ChatExchange::CancelByClient() {
  if (finished_) return;
  client_gone_ = true;
  if (attempts_ > 0) gateway_.client_.Cancel(transfer_);
}

bool ChatExchange::OnHead(int attempt, int http_status, const upstream::Headers& headers) {
  if (attempt != attempts_ || finished_ || client_gone_) return false;
  http_status_ = http_status;
  upstream_headers_ = headers;
  if (request_.stream && http_status >= 200 && http_status < 300) {
    decoder_ = adapter_->NewStreamDecoder();
  }
  return true;
}

bool ChatExchange::OnData(int attempt, std::string_view data) {
  if (attempt != attempts_ || finished_ || client_gone_) return false;
  if (!decoder_) {
    if (body_.size() + data.size() > kMaxBufferedReplyBytes) {
      decode_error_ = BadGatewayError("upstream reply exceeds 64 MiB");
      return false;
    }
    body_.append(data.data(), data.size());
    return true;
  }
  chunks_.clear();
  absl::Status fed = decoder_->Feed(data, chunks_);
  std::string out = FormatChunks(chunks_);
  if (!out.empty() && !WriteStream(std::move(out))) return false;
  if (!fed.ok()) {
    decode_error_ = fed;
    return false;
  }
  return true;
}

void ChatExchange::OnDone(int attempt, const absl::Status& transport_status) {
  if (attempt != attempts_ || finished_) return;
  upstream_seconds_ +=
      std::chrono::duration<double>(gateway_.clock_.Now() - attempt_started_).count();
  if (client_gone_) {
    gateway_.health_.OnNeutral(deployment_->id);
    finished_ = true;
    Record(499, "client_closed");
    return;
  }
  if (!decode_error_.ok()) return FailAttempt(decode_error_);
  if (!transport_status.ok()) return FailAttempt(transport_status);
  if (http_status_ < 200 || http_status_ >= 300) {
    return FailAttempt(adapter_->DecodeError(http_status_, upstream_headers_, body_));
  }
  if (decoder_) {
    chunks_.clear();
    absl::Status ended = decoder_->Finish(chunks_);
    std::string out = FormatChunks(chunks_);
    if (!out.empty() && !WriteStream(std::move(out))) return OnDone(attempt, absl::OkStatus());
    if (!ended.ok()) return FailAttempt(ended);
    if (!committed_) {
      // A well-formed but empty stream: still a valid (empty) reply.
      sink_->StartStream(ReplyHeaders(/*attempt_in_progress=*/false));
      committed_ = true;
    }
    return Succeed(std::nullopt);
  }
  absl::StatusOr<json> reply = adapter_->DecodeChat(body_);
  if (!reply.ok()) return FailAttempt(reply.status());
  (*reply)["id"] = completion_id_;
  if (!reply->contains("created") || !(*reply)["created"].is_number()) {
    (*reply)["created"] = std::chrono::duration_cast<std::chrono::seconds>(
                              gateway_.clock_.WallNow().time_since_epoch())
                              .count();
  }
  if (std::optional<llm::Usage> usage = llm::UsageOf(*reply)) usage_ = *usage;
  const json& choices = (*reply)["choices"];
  if (!choices.empty() && choices[0].is_object() && choices[0].contains("finish_reason") &&
      choices[0]["finish_reason"].is_string()) {
    finish_reason_ = choices[0]["finish_reason"].get<std::string>();
  }
  committed_ = true;
  first_byte_at_ = gateway_.clock_.Now();
  std::string out = llm::DumpJson(*reply);
  bytes_sent_ += static_cast<int64_t>(out.size());
  Succeed(std::make_pair(ReplyHeaders(/*attempt_in_progress=*/false), std::move(out)));
}

void ChatExchange::Succeed(std::optional<std::pair<upstream::Headers, std::string>> json_reply) {
  const SteadyTime now = gateway_.clock_.Now();
  std::optional<std::chrono::microseconds> ttft;
  if (request_.stream && first_byte_at_) {
    ttft =
        std::chrono::duration_cast<std::chrono::microseconds>(*first_byte_at_ - attempt_started_);
  }
  gateway_.health_.OnSuccess(
      deployment_->id,
      std::chrono::duration_cast<std::chrono::microseconds>(now - attempt_started_), ttft);
  gateway_.health_.RecordTokens(deployment_->id, usage_.prompt_tokens + usage_.completion_tokens);
  if (config_->session_affinity && gateway_.hooks_.affinity && request_.session_id) {
    gateway_.hooks_.affinity->Remember(*request_.session_id, deployment_->id);
  }
  finished_ = true;
  if (!json_reply) bytes_sent_ += static_cast<int64_t>(provider::kSseDone.size());
  Record(200, "ok");
  if (json_reply) {
    sink_->SendJson(200, json_reply->first, std::move(json_reply->second));
  } else {
    sink_->SendStreamData(std::string(provider::kSseDone));
    sink_->EndStream();
  }
}

void ChatExchange::FailAttempt(absl::Status error) {
  gateway_.health_.OnFailure(deployment_->id, error);
  spdlog::warn("request_id={} attempt={} deployment={} failed: {}", context_.request_id, attempts_,
               deployment_->id, ToStd(error.message()));
  if (committed_) {
    // Bytes already reached the client: the stream cannot move elsewhere, so end it honestly.
    WriteStream(SseErrorEvent(ClientFacingError(error, deployment_)));
    WriteStream(std::string(provider::kSseDone));
    sink_->EndStream();
    finished_ = true;
    Record(200, "stream_failed");
    return;
  }
  last_error_ = std::move(error);
  if (!router::IsDeploymentFault(last_error_)) {
    // The request itself is bad; any other deployment would refuse it too.
    return FinishWithError(last_error_);
  }
  StartNextAttempt();
}

void ChatExchange::FinishWithError(const absl::Status& error) {
  if (finished_) return;
  finished_ = true;
  Record(ToHttpError(error).http_status, "error");
  upstream::Headers headers;
  headers.emplace_back("x-ailb-attempts", std::to_string(attempts_));
  SendError(*sink_, error, std::move(headers));
}

std::string ChatExchange::FormatChunks(std::vector<json>& chunks) {
  std::string out;
  for (json& chunk : chunks) {
    auto usage = chunk.find("usage");
    const bool has_usage = usage != chunk.end() && usage->is_object();
    if (has_usage) {
      if (std::optional<llm::Usage> parsed = llm::UsageOf(chunk)) usage_ = *parsed;
    }
    auto choices = chunk.find("choices");
    const bool usage_only = has_usage && (choices == chunk.end() || choices->empty());
    if (!request_.include_usage) {
      // ailb asked for usage for its own accounting; the client did not.
      if (usage_only) continue;
      if (usage != chunk.end()) chunk.erase(usage);
    }
    if (choices != chunk.end() && choices->is_array() && !choices->empty() &&
        (*choices)[0].is_object()) {
      auto reason = (*choices)[0].find("finish_reason");
      if (reason != (*choices)[0].end() && reason->is_string()) {
        finish_reason_ = reason->get<std::string>();
      }
    }
    chunk["id"] = completion_id_;
    out += provider::SseDataEvent(llm::DumpJson(chunk));
  }
  return out;
}

bool ChatExchange::WriteStream(std::string data) {
  if (!committed_) {
    sink_->StartStream(ReplyHeaders(/*attempt_in_progress=*/true));
    committed_ = true;
    first_byte_at_ = gateway_.clock_.Now();
  }
  bytes_sent_ += static_cast<int64_t>(data.size());
  if (!sink_->SendStreamData(std::move(data))) {
    client_gone_ = true;
    return false;
  }
  return true;
}

upstream::Headers ChatExchange::ReplyHeaders(bool attempt_in_progress) const {
  const SteadyTime now = gateway_.clock_.Now();
  double upstream_seconds = upstream_seconds_;
  if (attempt_in_progress) {
    upstream_seconds += std::chrono::duration<double>(now - attempt_started_).count();
  }
  const double overhead_ms = std::max(
      0.0, (std::chrono::duration<double>(now - context_.received_at).count() - upstream_seconds) *
               1000);
  upstream::Headers headers;
  headers.emplace_back("x-ailb-overhead-ms", absl::StrFormat("%.3f", overhead_ms));
  headers.emplace_back("x-ailb-deployment", deployment_->id);
  headers.emplace_back("x-ailb-provider", std::string(config::ProviderName(deployment_->provider)));
  headers.emplace_back("x-ailb-attempts", std::to_string(attempts_));
  return headers;
}

void ChatExchange::Record(int http_status, std::string_view outcome) {
  if (recorded_) return;
  recorded_ = true;
  const SteadyTime now = gateway_.clock_.Now();
  spdlog::info(
      "access request_id={} client={} model={} stream={} deployment={} attempts={} status={} "
      "outcome={} prompt_tokens={} completion_tokens={} finish_reason={} latency_ms={} "
      "upstream_ms={}",
      context_.request_id, context_.client_address, request_.model, request_.stream,
      deployment_ ? deployment_->id : "-", attempts_, http_status, outcome, usage_.prompt_tokens,
      usage_.completion_tokens, finish_reason_.empty() ? "-" : finish_reason_,
      MillisBetween(context_.received_at, now), static_cast<int64_t>(upstream_seconds_ * 1000));
  if (gateway_.hooks_.metrics == nullptr) return;
  metrics::RequestRecord record;
  record.model = request_.model;
  if (deployment_) {
    record.deployment = deployment_->id;
    record.provider = std::string(config::ProviderName(deployment_->provider));
    record.cost_usd =
        static_cast<double>(usage_.prompt_tokens) * deployment_->input_cost_per_token +
        static_cast<double>(usage_.completion_tokens) * deployment_->output_cost_per_token;
  }
  record.http_status = http_status;
  record.stream = request_.stream;
  record.attempts = attempts_;
  record.total_seconds = std::chrono::duration<double>(now - context_.received_at).count();
  record.upstream_seconds = upstream_seconds_;
  if (first_byte_at_ && request_.stream) {
    record.ttft_seconds =
        std::chrono::duration<double>(*first_byte_at_ - context_.received_at).count();
  }
  record.prompt_tokens = usage_.prompt_tokens;
  record.completion_tokens = usage_.completion_tokens;
  record.bytes_received = context_.request_bytes;
  record.bytes_sent = bytes_sent_;
  gateway_.hooks_.metrics->RequestFinished(record);
}

void Gateway::RecordRefusal(const llm::ChatRequest& request, const RequestContext& context,
                            const absl::Status& status) {
  const int http_status = ToHttpError(status).http_status;
  spdlog::info("access request_id={} client={} model={} status={} outcome=refused reason=\"{}\"",
               context.request_id, context.client_address, request.model, http_status,
               status.message());
  if (hooks_.metrics == nullptr) return;
  metrics::RequestRecord record;
  record.model = request.model;
  record.http_status = http_status;
  record.stream = request.stream;
  record.total_seconds = std::chrono::duration<double>(clock_.Now() - context.received_at).count();
  record.bytes_received = context.request_bytes;
  hooks_.metrics->RequestStarted();
  hooks_.metrics->RequestFinished(record);
}

std::function<void()> Gateway::HandleChat(llm::ChatRequest request, RequestContext context,
                                          std::shared_ptr<ResponseSink> sink) {
  if (draining()) {
    SendError(*sink, WithRetryAfter(absl::UnavailableError("ailb is shutting down"), 1));
    return [] {};
  }
  std::shared_ptr<const config::Config> config = config_.Current();
  if (hooks_.aliases) {
    if (std::optional<std::string> target = hooks_.aliases->Resolve(request.model)) {
      request.model = *target;
    }
  }
  if (hooks_.rate_limiter) {
    std::string limited_target;
    absl::Status admitted = hooks_.rate_limiter->Admit(
        {context.api_key, request.model, context.client_address}, &limited_target);
    if (!admitted.ok()) {
      if (hooks_.metrics) hooks_.metrics->RateLimited(limited_target);
      RecordRefusal(request, context, admitted);
      SendError(*sink, admitted);
      return [] {};
    }
  }
  // X-Preferred-Model names another model group to use when that group can serve now. Plan
  // once per group: planning advances round-robin rotation.
  std::string model = request.model;
  absl::StatusOr<std::vector<const config::Deployment*>> plan =
      absl::NotFoundError("no preferred model");
  if (context.preferred_model && *context.preferred_model != model) {
    plan = router_.Plan(*config, *context.preferred_model, request.stream);
    if (plan.ok()) model = *context.preferred_model;
  }
  if (!plan.ok()) plan = router_.Plan(*config, model, request.stream);
  if (!plan.ok()) {
    RecordRefusal(request, context, plan.status());
    SendError(*sink, plan.status());
    return [] {};
  }
  if (config->session_affinity && hooks_.affinity && request.session_id) {
    // The plan only holds deployments that admit traffic now, so a tripped one is skipped.
    if (std::optional<std::string> last = hooks_.affinity->Lookup(*request.session_id)) {
      auto it = std::find_if(plan->begin(), plan->end(),
                             [&](const config::Deployment* d) { return d->id == *last; });
      if (it != plan->end()) std::rotate(plan->begin(), it, it + 1);
    }
  }
  auto exchange =
      std::make_shared<ChatExchange>(*this, std::move(request), std::move(context), std::move(sink),
                                     std::move(config), *std::move(plan));
  exchange->Post([](ChatExchange& e) { e.StartNextAttempt(); });
  return [weak = std::weak_ptr<ChatExchange>(exchange)] {
    if (std::shared_ptr<ChatExchange> e = weak.lock()) {
      e->Post([](ChatExchange& x) { x.CancelByClient(); });
    }
  };
}

absl::StatusOr<nlohmann::json> Gateway::ListModels(const std::optional<std::string>& model) const {
  std::shared_ptr<const config::Config> config = config_.Current();
  const int64_t created =
      std::chrono::duration_cast<std::chrono::seconds>(started_at_.time_since_epoch()).count();
  auto entry = [&](const std::string& name) {
    return json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "ailb"}};
  };
  std::vector<std::string> names = config->ModelNames();
  if (model) {
    if (std::find(names.begin(), names.end(), *model) == names.end()) {
      return WithErrorCode(WithErrorParam(absl::NotFoundError(absl::StrCat("The model '", *model,
                                                                           "' does not exist")),
                                          "model"),
                           "model_not_found");
    }
    return entry(*model);
  }
  json data = json::array();
  for (const std::string& name : names) data.push_back(entry(name));
  return json{{"object", "list"}, {"data", std::move(data)}};
}

nlohmann::json Gateway::RoutingStats() const {
  std::shared_ptr<const config::Config> config = config_.Current();
  auto iso_time = [](const std::optional<WallTime>& t) -> json {
    if (!t) return nullptr;
    return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count() /
           1000.0;
  };
  json stats = json::object();
  for (const config::Deployment& d : config->deployments) {
    router::DeploymentHealth h = health_.Snapshot(d.id);
    const int64_t finished = h.successful_requests + h.failed_requests;
    stats[d.id] = {{"model", d.model_name},
                   {"provider", config::ProviderName(d.provider)},
                   {"total_requests", h.total_requests},
                   {"successful_requests", h.successful_requests},
                   {"failed_requests", h.failed_requests},
                   {"success_rate",
                    finished > 0 ? static_cast<double>(h.successful_requests) / finished : 1.0},
                   {"avg_latency_ms", h.avg_latency_ms},
                   {"recent_latency_ms", h.recent_latency_ms},
                   {"recent_ttft_ms", h.recent_ttft_ms},
                   {"consecutive_failures", h.consecutive_failures},
                   {"last_success", iso_time(h.last_success)},
                   {"last_failure", iso_time(h.last_failure)},
                   {"state", router::BreakerStateName(h.state)},
                   {"cooldown_remaining_ms", h.cooldown_remaining.count()},
                   {"in_flight", h.in_flight},
                   {"tokens_this_minute", h.tokens_this_minute}};
    if (!h.last_error.empty()) stats[d.id]["last_error"] = h.last_error;
  }
  return {{"routing_strategy", config->routing_strategy}, {"provider_stats", std::move(stats)}};
}

Gateway::Health Gateway::CheckHealth() const {
  std::shared_ptr<const config::Config> config = config_.Current();
  json deployments = json::array();
  json models = json::object();
  for (const config::Deployment& d : config->deployments) {
    router::DeploymentHealth health = health_.Snapshot(d.id);
    const bool admits = health_.Admits(d.id);
    json& group = models[d.model_name];
    if (group.is_null()) group = json{{"deployments", 0}, {"available", 0}};
    group["deployments"] = group["deployments"].get<int>() + 1;
    if (admits) group["available"] = group["available"].get<int>() + 1;
    json entry = {{"id", d.id},
                  {"model", d.model_name},
                  {"provider", config::ProviderName(d.provider)},
                  {"state", router::BreakerStateName(health.state)},
                  {"available", admits},
                  {"consecutive_failures", health.consecutive_failures},
                  {"in_flight", health.in_flight},
                  {"total_requests", health.total_requests},
                  {"failed_requests", health.failed_requests}};
    if (!d.version.empty()) entry["version"] = d.version;
    if (!health.last_error.empty()) entry["last_error"] = health.last_error;
    if (health.state == router::BreakerState::kCoolingDown) {
      entry["cooldown_remaining_ms"] = health.cooldown_remaining.count();
    }
    deployments.push_back(std::move(entry));
  }
  int groups_available = 0;
  for (const auto& [name, group] : models.items()) {
    if (group["available"].get<int>() > 0) ++groups_available;
  }
  const int groups = static_cast<int>(models.size());
  Health result;
  result.can_serve = groups_available > 0 && !draining();
  std::string status = "ok";
  if (draining()) {
    status = "draining";
  } else if (groups_available == 0) {
    status = "unavailable";
  } else if (groups_available < groups) {
    status = "degraded";
  }
  result.body = {{"status", status},
                 {"module_id", config->module_id},
                 {"version", AILB_VERSION},
                 {"in_flight", inflight_.count()},
                 {"models", std::move(models)},
                 {"deployments", std::move(deployments)}};
  if (groups == 0) result.body["message"] = "no model deployments are configured";
  return result;
}

}  // namespace ailb::gateway
