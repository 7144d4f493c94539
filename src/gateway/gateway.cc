#include "ailb/gateway/gateway.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ailb/common/logging.h"
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

// Completion tokens reserved against a key's budgets when the request sets no max_tokens.
constexpr int64_t kDefaultCompletionReservation = 1024;

// Milliseconds with microsecond resolution, for logs.
double RoundMillis(double millis) { return std::round(millis * 1000) / 1000; }

// The fields every access-log line starts with. Never the API key itself: its id and name.
nlohmann::ordered_json AccessLogHead(const RequestContext& context, std::string_view model,
                                     bool stream, const std::optional<std::string>& session) {
  nlohmann::ordered_json line;
  line["request_id"] = context.request_id;
  line["client"] = context.client_address;
  line["key_id"] =
      context.principal.role == auth::Role::kAdmin ? "admin" : context.principal.key_id;
  line["session_id"] = session ? nlohmann::ordered_json(*session) : nullptr;
  line["model"] = model;
  line["stream"] = stream;
  return line;
}

// What a request may spend at most, as far as can be told before it runs: the prompt estimate
// plus max_tokens (or a default), priced at the dearest deployment that could serve it.
auth::Estimate EstimateUsage(const llm::ChatRequest& request, const config::Config& config,
                             std::string_view group) {
  const int64_t prompt = llm::EstimatePromptTokens(request.body);
  int64_t completion = kDefaultCompletionReservation;
  for (const char* field : {"max_completion_tokens", "max_tokens"}) {
    auto it = request.body.find(field);
    if (it != request.body.end() && it->is_number_integer() && it->get<int64_t>() > 0) {
      completion = it->get<int64_t>();
      break;
    }
  }
  std::vector<std::string_view> groups = {group};
  for (const std::string& fallback : config.GroupSettings(group).fallbacks)
    groups.push_back(fallback);
  double input_price = 0;
  double output_price = 0;
  for (const config::Deployment& d : config.deployments) {
    if (std::find(groups.begin(), groups.end(), d.model_name) == groups.end()) continue;
    input_price = std::max(input_price, d.input_cost_per_token);
    output_price = std::max(output_price, d.output_cost_per_token);
  }
  return {prompt + completion, static_cast<double>(prompt) * input_price +
                                   static_cast<double>(completion) * output_price};
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

// A header-safe token: bytes outside printable ASCII, and ',', '%' and spaces, percent-encoded.
std::string HeaderToken(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c > 0x20 && c < 0x7f && c != ',' && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", c));
    }
  }
  return out;
}

// Free text for a header value: printable ASCII kept, anything else replaced, length capped.
std::string HeaderText(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 1024)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return out;
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
  if (!error.allow.empty() && upstream::FindHeader(headers, "Allow").empty()) {
    headers.emplace_back("Allow", error.allow);
  }
  sink.SendJson(error.http_status, headers, OpenAIErrorBody(error));
}

namespace {

// Per-request overrides, validated. Deadlines may only be shortened: the configured values are
// the operator's limits.
struct RequestOverrides {
  std::string strategy;  // empty: the group's
  int total_ms = 0;
  int first_byte_ms = 0;
};

absl::StatusOr<int> ParseDeadlineHeader(const std::optional<std::string>& text,
                                        std::string_view header, int limit_ms) {
  if (!text) return limit_ms;
  int64_t value = 0;
  if (!absl::SimpleAtoi(ToAbsl(*text), &value) || value <= 0) {
    return InvalidFieldError(header, absl::StrCat(ToAbsl(header),
                                                  " must be a positive number of milliseconds, "
                                                  "got '",
                                                  *text, "'"));
  }
  return static_cast<int>(std::min<int64_t>(value, limit_ms));
}

absl::StatusOr<RequestOverrides> ParseOverrides(const RequestContext& context,
                                                const config::Config& config) {
  RequestOverrides overrides;
  if (context.routing_strategy && !context.routing_strategy->empty()) {
    overrides.strategy = absl::AsciiStrToLower(ToAbsl(*context.routing_strategy));
    absl::Status known = router::CheckStrategyImplemented(overrides.strategy);
    if (!known.ok()) {
      return InvalidFieldError("X-Ailb-Routing-Strategy",
                               absl::StrCat("X-Ailb-Routing-Strategy: ", known.message()));
    }
  }
  AILB_ASSIGN_OR_RETURN(
      overrides.total_ms,
      ParseDeadlineHeader(context.timeout_ms, "X-Ailb-Timeout-Ms", config.timeouts.total_ms));
  AILB_ASSIGN_OR_RETURN(
      overrides.first_byte_ms,
      ParseDeadlineHeader(context.first_byte_timeout_ms, "X-Ailb-First-Byte-Timeout-Ms",
                          config.timeouts.first_byte_ms));
  return overrides;
}

}  // namespace

// One chat request in flight. After construction every member is touched only on the upstream
// client's event thread (work is posted there with RunAfter), so it needs no lock.
//
// A request runs attempts one after another along its plan: the deployments of its model group,
// then of its fallback groups. With hedging, a second attempt may run beside the first; the
// first to deliver a byte of a successful reply wins and the other is cancelled.
class ChatExchange : public std::enable_shared_from_this<ChatExchange> {
 public:
  ChatExchange(Gateway& gateway, llm::ChatRequest request, RequestContext context,
               std::shared_ptr<ResponseSink> sink, std::shared_ptr<const config::Config> config,
               std::string group, std::vector<const config::Deployment*> plan,
               RequestOverrides overrides)
      : gateway_(gateway),
        request_(std::move(request)),
        context_(std::move(context)),
        sink_(std::move(sink)),
        config_(std::move(config)),
        overrides_(std::move(overrides)),
        requested_group_(group),
        group_(std::move(group)),
        plan_(std::move(plan)),
        completion_id_(absl::StrCat("chatcmpl-", RandomToken(gateway.random_, 24))),
        deadline_(context_.received_at + std::chrono::milliseconds(overrides_.total_ms)) {
    const config::ModelGroupConfig& settings = config_->GroupSettings(group_);
    fallback_queue_ = settings.fallbacks;
    context_queue_ = settings.context_window_fallbacks;
    tried_groups_.push_back(group_);
    gateway_.inflight_.Enter();
    if (gateway_.hooks_.metrics) gateway_.hooks_.metrics->RequestStarted();
  }
  ~ChatExchange() {
    if (!recorded_) Record(499, "abandoned");
    gateway_.inflight_.Leave();
  }

  void Post(std::function<void(ChatExchange&)> work,
            std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
    gateway_.client_.RunAfter(delay,
                              [self = shared_from_this(), work = std::move(work)] { work(*self); });
  }

  // Runs on a worker thread before Begin: adds memory and retrieved context to the request.
  void Enrich(Enricher& enricher, bool use_memory, bool use_rag) {
    if (use_memory) {
      auto messages = request_.body.find("messages");
      if (messages != request_.body.end()) original_messages_ = *messages;
    }
    Enrichment enrichment = enricher.Enrich(request_, use_memory, use_rag);
    remember_ = use_memory;
    rag_sources_ = std::move(enrichment.rag_sources);
    for (std::string& warning : enrichment.warnings) warnings_.push_back(std::move(warning));
  }
  void AddWarning(std::string warning) { warnings_.push_back(std::move(warning)); }
  void SetGrant(auth::Grant grant) { grant_ = std::move(grant); }

  // The first attempt, or straight to the context-window fallbacks when the prompt is known to
  // be too long for this group; `plan_error` is why the requested group has no plan (all cooling
  // down) when it has fallbacks to go to.
  void Begin(absl::Status plan_error);
  void StartNextAttempt();
  void CancelByClient();

  bool OnHead(int number, int http_status, const upstream::Headers& headers);
  bool OnData(int number, std::string_view data);
  void OnDone(int number, const absl::Status& transport_status);

 private:
  struct Attempt {
    int number = 0;
    const config::Deployment* deployment = nullptr;
    std::shared_ptr<const provider::ProviderAdapter> adapter;
    SteadyTime started;
    upstream::HttpClient::TransferId transfer = 0;
    int http_status = 0;
    upstream::Headers headers;
    std::string body;
    std::unique_ptr<provider::StreamDecoder> decoder;
    absl::Status decode_error;
    bool superseded = false;  // cancelled by us: lost a hedge race or the request ended
  };

  Attempt* Find(int number) {
    auto it = running_.find(number);
    return it == running_.end() ? nullptr : it->second.get();
  }
  bool Is2xx(const Attempt& a) const { return a.http_status >= 200 && a.http_status < 300; }
  // Moves to the next fallback group (context-window ones after a context error); false when
  // none is left.
  bool AdvanceToFallbackGroup();
  void MaybeScheduleHedge(int first_number);
  void StartHedge(int first_number);
  // Cancels every running attempt but `keep` (0: all).
  void CancelOthers(int keep);
  // The wait before the next attempt: none for the first failover, then exponential with equal
  // jitter, capped by configuration and the deadline.
  std::chrono::milliseconds BackoffDelay() const;
  // Books the success, then sends `json_reply` (non-stream) or ends the stream. Bookkeeping
  // comes first so a client that has the reply also sees its effects (stats, affinity).
  void Succeed(Attempt& winner, std::optional<std::pair<upstream::Headers, std::string>> reply);
  void FailAttempt(int number, const config::Deployment* failed, absl::Status error);
  void FinishWithError(const absl::Status& error);
  // Formats decoded chunks for the client; records usage and finish reason on the way.
  std::string FormatChunks(std::vector<json>& chunks);
  bool WriteStream(std::string data);
  // `attempt_in_progress`: the winner's upstream time is not yet in upstream_seconds_.
  upstream::Headers ReplyHeaders(bool attempt_in_progress) const;
  // Writes the access log line and the request's metrics, once.
  void Record(int http_status, std::string_view outcome);
  // The price-table cost of the usage reported so far (0 before a deployment served).
  double CostUsd() const {
    if (deployment_ == nullptr || winner_ == 0) return 0;
    return static_cast<double>(usage_.prompt_tokens) * deployment_->input_cost_per_token +
           static_cast<double>(usage_.completion_tokens) * deployment_->output_cost_per_token;
  }

  Gateway& gateway_;
  // Written by the enrichment step on a worker thread before Begin is posted; only the event
  // thread touches it afterwards. `model` and `stream` never change.
  llm::ChatRequest request_;
  const RequestContext context_;
  const std::shared_ptr<ResponseSink> sink_;
  const std::shared_ptr<const config::Config> config_;  // the snapshot this request started on
  const RequestOverrides overrides_;
  const std::string requested_group_;
  std::string group_;  // the group being tried now
  std::vector<const config::Deployment*> plan_;
  size_t next_in_plan_ = 0;
  std::vector<std::string> fallback_queue_;
  std::vector<std::string> context_queue_;
  std::vector<std::string> tried_groups_;
  bool context_error_ = false;  // the prompt is too long for the groups tried so far
  const std::string completion_id_;
  const SteadyTime deadline_;

  int attempts_ = 0;
  int failures_ = 0;
  int fallbacks_ = 0;
  int hedges_ = 0;
  bool finished_ = false;
  bool committed_ = false;  // bytes of a reply have been handed to the client
  bool client_gone_ = false;
  std::map<int, std::unique_ptr<Attempt>> running_;  // by attempt number
  int winner_ = 0;  // the attempt whose reply the client gets; 0 until one delivers a byte

  // The attempt that decided the outcome (the winner, or the last that failed).
  const config::Deployment* deployment_ = nullptr;
  SteadyTime attempt_started_;
  std::vector<json> chunks_;
  absl::Status last_error_;
  const config::Deployment* last_failed_ = nullptr;
  llm::Usage usage_;
  std::string finish_reason_;
  bool recorded_ = false;
  double upstream_seconds_ = 0;
  std::optional<SteadyTime> first_byte_at_;
  int64_t bytes_sent_ = 0;

  // Enrichment results and what session memory needs once the reply is complete.
  std::vector<std::string> rag_sources_;
  std::vector<std::string> warnings_;
  bool remember_ = false;
  json original_messages_;
  std::string assistant_text_;
  // The key's budget reservation, settled with the real usage when the request is recorded.
  auth::Grant grant_;
};

namespace {

// Relays one attempt's transfer events to its exchange; events of superseded attempts are
// dropped by the exchange.
class AttemptObserver final : public upstream::ResponseObserver {
 public:
  AttemptObserver(std::shared_ptr<ChatExchange> exchange, int number)
      : exchange_(std::move(exchange)), number_(number) {}
  bool OnResponseHead(int http_status, const upstream::Headers& headers) override {
    return exchange_->OnHead(number_, http_status, headers);
  }
  bool OnBodyData(std::string_view data) override { return exchange_->OnData(number_, data); }
  void OnComplete(const absl::Status& status) override { exchange_->OnDone(number_, status); }

 private:
  std::shared_ptr<ChatExchange> exchange_;
  const int number_;
};

}  // namespace

void ChatExchange::Begin(absl::Status plan_error) {
  const config::ModelGroupConfig& settings = config_->GroupSettings(group_);
  if (!plan_error.ok()) {
    last_error_ = std::move(plan_error);
  } else if (settings.max_input_tokens > 0 && !context_queue_.empty()) {
    const int64_t estimate = llm::EstimatePromptTokens(request_.body);
    if (estimate > settings.max_input_tokens) {
      context_error_ = true;
      next_in_plan_ = plan_.size();
      last_error_ = WithErrorCode(
          InvalidFieldError("messages",
                            absl::StrCat("the prompt (about ", estimate,
                                         " tokens) exceeds the context window of "
                                         "model '",
                                         group_, "' (", settings.max_input_tokens, " tokens)")),
          "context_length_exceeded");
    }
  }
  StartNextAttempt();
}

bool ChatExchange::AdvanceToFallbackGroup() {
  std::vector<std::string>& queue = context_error_ ? context_queue_ : fallback_queue_;
  // A client's bad request fails in any group; only deployment faults and context errors move.
  if (!context_error_ && !last_error_.ok() && !router::IsDeploymentFault(last_error_)) {
    return false;
  }
  while (!queue.empty()) {
    std::string next = queue.front();
    queue.erase(queue.begin());
    if (std::find(tried_groups_.begin(), tried_groups_.end(), next) != tried_groups_.end()) {
      continue;
    }
    tried_groups_.push_back(next);
    absl::StatusOr<std::vector<const config::Deployment*>> plan =
        gateway_.router_.Plan(*config_, next, request_.stream, overrides_.strategy);
    if (!plan.ok()) {
      if (last_error_.ok()) last_error_ = plan.status();
      continue;
    }
    spdlog::info("request_id={} falling back from model '{}' to '{}'{}", context_.request_id,
                 group_, next, context_error_ ? " (context window)" : "");
    group_ = std::move(next);
    plan_ = *std::move(plan);
    next_in_plan_ = 0;
    ++fallbacks_;
    return true;
  }
  return false;
}

void ChatExchange::StartNextAttempt() {
  if (finished_) return;
  if (client_gone_) {
    if (running_.empty()) {
      finished_ = true;
      Record(499, "client_closed");
    }
    return;
  }
  const int max_attempts = config_->retries.max_attempts;
  while (attempts_ < max_attempts) {
    if (next_in_plan_ >= plan_.size()) {
      if (!AdvanceToFallbackGroup()) break;
      continue;
    }
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
    // Counted against the deployment's rpm as it is dispatched; one that has reached its limit
    // since the plan was made is skipped.
    if (absl::Status admitted = gateway_.router_.AcquireDispatch(*deployment); !admitted.ok()) {
      if (last_error_.ok()) last_error_ = std::move(admitted);
      continue;
    }
    const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now);
    const config::TimeoutConfig& timeouts = config_->timeouts;
    encoded->connect_timeout = std::min(remaining, std::chrono::milliseconds(timeouts.connect_ms));
    encoded->first_byte_timeout =
        std::min(remaining, std::chrono::milliseconds(overrides_.first_byte_ms));
    encoded->idle_timeout = std::chrono::milliseconds(timeouts.stream_idle_ms);
    encoded->total_timeout = remaining;

    auto attempt = std::make_unique<Attempt>();
    attempt->number = ++attempts_;
    attempt->deployment = deployment;
    attempt->adapter = *std::move(adapter);
    attempt->started = now;
    Attempt& started = *attempt;
    running_.emplace(started.number, std::move(attempt));
    if (winner_ == 0) deployment_ = deployment;
    gateway_.health_.OnAttemptStart(deployment->id);
    started.transfer = gateway_.client_.Start(
        std::move(*encoded), std::make_shared<AttemptObserver>(shared_from_this(), started.number));
    if (hedges_ == 0 && winner_ == 0) MaybeScheduleHedge(started.number);
    return;
  }
  // A hedge partner still running decides the outcome.
  if (!running_.empty()) return;
  if (gateway_.clock_.Now() >= deadline_) {
    FinishWithError(
        WithErrorCode(absl::DeadlineExceededError(absl::StrCat("the request deadline of ",
                                                               overrides_.total_ms, " ms passed")),
                      "upstream_timeout"));
    return;
  }
  FinishWithError(last_error_.ok() ? absl::UnavailableError("no deployment could take the request")
                                   : ClientFacingError(last_error_, last_failed_));
}

void ChatExchange::MaybeScheduleHedge(int first_number) {
  const int configured = config_->GroupSettings(group_).hedge_after_ms;
  if (configured == 0) return;
  std::chrono::milliseconds delay(configured);
  if (configured == config::kHedgeAfterP95) {
    std::vector<std::string> ids;
    for (const config::Deployment* d : plan_) ids.push_back(d->id);
    std::optional<std::chrono::milliseconds> p95 = gateway_.health_.FirstByteP95(ids);
    if (!p95) return;  // not enough samples yet to know what "slow" is
    delay = std::max(*p95, std::chrono::milliseconds(1));
  }
  Post([first_number](ChatExchange& e) { e.StartHedge(first_number); }, delay);
}

void ChatExchange::StartHedge(int first_number) {
  // Only while the first attempt is still waiting for its first byte and nothing else runs.
  if (finished_ || client_gone_ || winner_ != 0 || hedges_ > 0) return;
  if (running_.size() != 1 || Find(first_number) == nullptr) return;
  if (next_in_plan_ >= plan_.size()) return;  // no other deployment in this group
  ++hedges_;
  spdlog::debug("request_id={} hedging attempt {} after its first byte was late",
                context_.request_id, first_number);
  StartNextAttempt();
}

void ChatExchange::CancelOthers(int keep) {
  std::vector<int> numbers;
  for (auto& [number, attempt] : running_) {
    if (number != keep && !attempt->superseded) numbers.push_back(number);
  }
  for (int number : numbers) {
    Attempt* a = Find(number);
    a->superseded = true;
    gateway_.health_.OnNeutral(a->deployment->id);
    gateway_.client_.Cancel(a->transfer);
  }
}

std::chrono::milliseconds ChatExchange::BackoffDelay() const {
  if (failures_ <= 1) return std::chrono::milliseconds(0);
  const config::RetryConfig& retries = config_->retries;
  const int64_t ceiling =
      std::min<int64_t>(retries.backoff_max_ms, static_cast<int64_t>(retries.backoff_base_ms)
                                                    << std::min(failures_ - 2, 20));
  // Equal jitter: half fixed, half random, so concurrent retries spread out.
  const int64_t delay =
      ceiling / 2 +
      static_cast<int64_t>(gateway_.random_.Uniform() * static_cast<double>(ceiling - ceiling / 2));
  const auto remaining =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - gateway_.clock_.Now());
  return std::max(std::chrono::milliseconds(0),
                  std::min(std::chrono::milliseconds(delay), remaining));
}

void ChatExchange::CancelByClient() {
  if (finished_) return;
  client_gone_ = true;
  if (running_.empty()) {
    // Between attempts (a backoff wait): nothing to cancel, the request ends here.
    finished_ = true;
    Record(499, "client_closed");
    return;
  }
  for (auto& [number, attempt] : running_) gateway_.client_.Cancel(attempt->transfer);
}

bool ChatExchange::OnHead(int number, int http_status, const upstream::Headers& headers) {
  Attempt* a = Find(number);
  if (a == nullptr || a->superseded || finished_ || client_gone_) return false;
  a->http_status = http_status;
  a->headers = headers;
  if (request_.stream && Is2xx(*a)) a->decoder = a->adapter->NewStreamDecoder();
  return true;
}

bool ChatExchange::OnData(int number, std::string_view data) {
  Attempt* a = Find(number);
  if (a == nullptr || a->superseded || finished_ || client_gone_) return false;
  if (winner_ == 0 && Is2xx(*a)) {
    // The first successful byte decides a hedge race.
    winner_ = number;
    deployment_ = a->deployment;
    attempt_started_ = a->started;
    gateway_.health_.RecordFirstByte(
        a->deployment->id,
        std::chrono::duration_cast<std::chrono::microseconds>(gateway_.clock_.Now() - a->started));
    CancelOthers(number);
  }
  if (!a->decoder) {
    if (a->body.size() + data.size() > kMaxBufferedReplyBytes) {
      a->decode_error = BadGatewayError("upstream reply exceeds 64 MiB");
      return false;
    }
    a->body.append(data.data(), data.size());
    return true;
  }
  chunks_.clear();
  absl::Status fed = a->decoder->Feed(data, chunks_);
  std::string out = FormatChunks(chunks_);
  if (!out.empty() && !WriteStream(std::move(out))) return false;
  if (!fed.ok()) {
    a->decode_error = fed;
    return false;
  }
  return true;
}

void ChatExchange::OnDone(int number, const absl::Status& transport_status) {
  auto it = running_.find(number);
  if (it == running_.end()) return;
  std::unique_ptr<Attempt> owned = std::move(it->second);
  running_.erase(it);
  Attempt& a = *owned;
  if (a.superseded) {
    // Cancelled by us (its health verdict was booked then); a client that left ends here.
    if (client_gone_ && running_.empty() && !finished_) {
      finished_ = true;
      Record(499, "client_closed");
    }
    return;
  }
  if (finished_) {
    gateway_.health_.OnNeutral(a.deployment->id);
    return;
  }
  if (winner_ == number || winner_ == 0) {
    upstream_seconds_ += std::chrono::duration<double>(gateway_.clock_.Now() - a.started).count();
  }
  if (client_gone_) {
    gateway_.health_.OnNeutral(a.deployment->id);
    if (running_.empty()) {
      finished_ = true;
      Record(499, "client_closed");
    }
    return;
  }
  if (!a.decode_error.ok()) return FailAttempt(number, a.deployment, a.decode_error);
  if (!transport_status.ok()) return FailAttempt(number, a.deployment, transport_status);
  if (!Is2xx(a))
    return FailAttempt(number, a.deployment,
                       a.adapter->DecodeError(a.http_status, a.headers, a.body));
  if (winner_ == 0) {
    // A complete, successful reply with an empty body: it wins by finishing.
    winner_ = number;
    deployment_ = a.deployment;
    attempt_started_ = a.started;
    CancelOthers(number);
  }
  if (a.decoder) {
    chunks_.clear();
    absl::Status ended = a.decoder->Finish(chunks_);
    std::string out = FormatChunks(chunks_);
    if (!out.empty() && !WriteStream(std::move(out))) {
      gateway_.health_.OnNeutral(a.deployment->id);
      finished_ = true;
      Record(499, "client_closed");
      return;
    }
    if (!ended.ok()) return FailAttempt(number, a.deployment, ended);
    if (!committed_) {
      // A well-formed but empty stream: still a valid (empty) reply.
      sink_->StartStream(ReplyHeaders(/*attempt_in_progress=*/false));
      committed_ = true;
    }
    return Succeed(a, std::nullopt);
  }
  absl::StatusOr<json> reply = a.adapter->DecodeChat(a.body);
  if (!reply.ok()) return FailAttempt(number, a.deployment, reply.status());
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
  if (remember_ && !choices.empty() && choices[0].is_object()) {
    auto message = choices[0].find("message");
    if (message != choices[0].end() && message->is_object()) {
      auto content = message->find("content");
      if (content != message->end() && content->is_string()) {
        assistant_text_ = content->get<std::string>();
      }
    }
  }
  committed_ = true;
  first_byte_at_ = gateway_.clock_.Now();
  std::string out = llm::DumpJson(*reply);
  bytes_sent_ += static_cast<int64_t>(out.size());
  Succeed(a, std::make_pair(ReplyHeaders(/*attempt_in_progress=*/false), std::move(out)));
}

void ChatExchange::Succeed(Attempt& winner,
                           std::optional<std::pair<upstream::Headers, std::string>> reply) {
  const SteadyTime now = gateway_.clock_.Now();
  std::optional<std::chrono::microseconds> ttft;
  if (request_.stream && first_byte_at_) {
    ttft = std::chrono::duration_cast<std::chrono::microseconds>(*first_byte_at_ - winner.started);
  }
  gateway_.health_.OnSuccess(
      winner.deployment->id,
      std::chrono::duration_cast<std::chrono::microseconds>(now - winner.started), ttft);
  gateway_.health_.RecordTokens(winner.deployment->id,
                                usage_.prompt_tokens + usage_.completion_tokens);
  gateway_.router_.RecordTokens(*winner.deployment,
                                usage_.prompt_tokens + usage_.completion_tokens);
  if (config_->session_affinity && gateway_.hooks_.affinity && request_.session_id) {
    gateway_.hooks_.affinity->Remember(*request_.session_id, winner.deployment->id);
  }
  finished_ = true;
  if (!reply) bytes_sent_ += static_cast<int64_t>(provider::kSseDone.size());
  Record(200, "ok");
  auto deliver = [reply = std::move(reply)](ChatExchange& e) mutable {
    if (reply) {
      e.sink_->SendJson(200, reply->first, std::move(reply->second));
    } else {
      e.sink_->SendStreamData(std::string(provider::kSseDone));
      e.sink_->EndStream();
    }
  };
  if (remember_ && request_.session_id && gateway_.hooks_.enricher && gateway_.hooks_.workers) {
    // The exchange is stored before the reply completes, so a client that sends its next turn
    // as soon as it has this reply finds it in memory.
    const bool queued = gateway_.hooks_.workers->Submit(
        [self = shared_from_this(), enricher = gateway_.hooks_.enricher,
         session = *request_.session_id, messages = std::move(original_messages_),
         text = std::move(assistant_text_), deliver]() mutable {
          enricher->Remember(session, messages, text);
          self->Post(std::move(deliver));
        });
    if (queued) return;
    spdlog::warn("request_id={} session memory: the worker queue is full; exchange not stored",
                 context_.request_id);
  }
  deliver(*this);
}

void ChatExchange::FailAttempt(int number, const config::Deployment* failed, absl::Status error) {
  last_failed_ = failed;
  gateway_.health_.OnFailure(failed->id, error);
  spdlog::warn("request_id={} attempt={} deployment={} failed: {}", context_.request_id, number,
               failed->id, ToStd(error.message()));
  if (committed_) {
    // Bytes already reached the client: the stream cannot move elsewhere, so end it honestly.
    WriteStream(SseErrorEvent(ClientFacingError(error, failed)));
    WriteStream(std::string(provider::kSseDone));
    sink_->EndStream();
    finished_ = true;
    CancelOthers(0);
    Record(200, "stream_failed");
    return;
  }
  if (number == winner_) winner_ = 0;
  last_error_ = std::move(error);
  if (!router::IsDeploymentFault(last_error_)) {
    if (router::IsContextWindowError(last_error_) && !context_queue_.empty()) {
      // Every deployment of this group shares its context window: go to a longer one.
      context_error_ = true;
      next_in_plan_ = plan_.size();
      CancelOthers(0);
      StartNextAttempt();
      return;
    }
    // The request itself is bad; any other deployment would refuse it too.
    CancelOthers(0);
    return FinishWithError(last_error_);
  }
  ++failures_;
  if (!running_.empty()) return;  // the hedge partner may still succeed
  const std::chrono::milliseconds delay = BackoffDelay();
  if (delay.count() == 0) return StartNextAttempt();
  Post([](ChatExchange& e) { e.StartNextAttempt(); }, delay);
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
      if (remember_) {
        auto delta = (*choices)[0].find("delta");
        if (delta != (*choices)[0].end() && delta->is_object()) {
          auto content = delta->find("content");
          if (content != delta->end() && content->is_string()) {
            assistant_text_ += content->get_ref<const std::string&>();
          }
        }
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
  headers.emplace_back("x-ailb-model-group", group_);
  if (!rag_sources_.empty()) {
    std::string sources;
    for (const std::string& source : rag_sources_) {
      absl::StrAppend(&sources, sources.empty() ? "" : ",", HeaderToken(source));
    }
    headers.emplace_back("x-ailb-rag-sources", std::move(sources));
  }
  if (!warnings_.empty()) {
    headers.emplace_back("x-ailb-warning", HeaderText(absl::StrJoin(warnings_, "; ")));
  }
  return headers;
}

void ChatExchange::Record(int http_status, std::string_view outcome) {
  if (recorded_) return;
  recorded_ = true;
  const SteadyTime now = gateway_.clock_.Now();
  grant_.Settle(usage_.prompt_tokens + usage_.completion_tokens, CostUsd());
  const double total_ms =
      std::chrono::duration<double, std::milli>(now - context_.received_at).count();
  const double upstream_ms = upstream_seconds_ * 1000;
  nlohmann::ordered_json line =
      AccessLogHead(context_, request_.model, request_.stream, request_.session_id);
  line["deployment"] = deployment_ ? deployment_->id : "";
  line["provider"] = deployment_ ? std::string(config::ProviderName(deployment_->provider)) : "";
  line["served_model"] = group_;
  line["attempts"] = attempts_;
  line["fallbacks"] = fallbacks_;
  line["hedges"] = hedges_;
  line["status"] = http_status;
  line["outcome"] = outcome;
  line["prompt_tokens"] = usage_.prompt_tokens;
  line["completion_tokens"] = usage_.completion_tokens;
  line["cost_usd"] = CostUsd();
  line["finish_reason"] = finish_reason_;
  line["latency_ms"] = RoundMillis(total_ms);
  line["upstream_ms"] = RoundMillis(upstream_ms);
  line["overhead_ms"] = RoundMillis(std::max(0.0, total_ms - upstream_ms));
  line["ttft_ms"] =
      first_byte_at_
          ? nlohmann::ordered_json(RoundMillis(
                std::chrono::duration<double, std::milli>(*first_byte_at_ - context_.received_at)
                    .count()))
          : nlohmann::ordered_json(nullptr);
  line["bytes_sent"] = bytes_sent_;
  if (http_status >= 400 && !last_error_.ok()) line["error"] = ToHttpError(last_error_).message;
  LogAccess(line);
  if (gateway_.hooks_.metrics == nullptr) return;
  metrics::RequestRecord record;
  record.model = request_.model;
  if (deployment_) {
    record.deployment = deployment_->id;
    record.provider = std::string(config::ProviderName(deployment_->provider));
    record.cost_usd = CostUsd();
  }
  record.fallbacks = fallbacks_;
  record.served_group = group_;
  record.hedges = hedges_;
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

void Gateway::RecordRefusal(std::string_view model, bool stream,
                            const std::optional<std::string>& session,
                            const RequestContext& context, const absl::Status& status) {
  const int http_status = ToHttpError(status).http_status;
  nlohmann::ordered_json line = AccessLogHead(context, model, stream, session);
  line["status"] = http_status;
  line["outcome"] = "refused";
  line["error_code"] = ErrorCodeOf(status);
  line["error"] = ToHttpError(status).message;  // clipped: it may quote the client
  line["latency_ms"] = RoundMillis(
      std::chrono::duration<double, std::milli>(clock_.Now() - context.received_at).count());
  LogAccess(line);
  if (hooks_.metrics == nullptr) return;
  metrics::RequestRecord record;
  record.model = std::string(model);
  // A client may name any model: one not served here would add series to every per-model metric
  // without bound (each distinct name, however long, was a new label), so those share one label.
  if (!record.model.empty()) {
    const std::vector<std::string> names = config_.Current()->ModelNames();
    if (std::find(names.begin(), names.end(), record.model) == names.end() &&
        !(hooks_.aliases && hooks_.aliases->Resolve(record.model))) {
      record.model = "unknown";
    }
  }
  record.http_status = http_status;
  record.stream = stream;
  record.total_seconds = std::chrono::duration<double>(clock_.Now() - context.received_at).count();
  record.bytes_received = context.request_bytes;
  hooks_.metrics->RequestStarted();
  hooks_.metrics->RequestFinished(record);
}

std::function<void()> Gateway::HandleChat(llm::ChatRequest request, RequestContext context,
                                          std::shared_ptr<ResponseSink> sink) {
  if (draining()) {
    const absl::Status refused = WithRetryAfter(absl::UnavailableError("ailb is shutting down"), 1);
    RecordRefusal(request.model, request.stream, request.session_id, context, refused);
    SendError(*sink, refused);
    return [] {};
  }
  std::shared_ptr<const config::Config> config = config_.Current();
  // Allow-lists name the models clients ask for, not what aliases turn them into.
  const std::string requested_model = request.model;
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
      RecordRefusal(request.model, request.stream, request.session_id, context, admitted);
      SendError(*sink, admitted);
      return [] {};
    }
  }
  auth::Grant grant;
  if (hooks_.keys != nullptr && context.principal.role == auth::Role::kClient) {
    absl::StatusOr<auth::Grant> admitted = hooks_.keys->Admit(
        context.principal, requested_model, EstimateUsage(request, *config, request.model));
    if (!admitted.ok()) {
      if (hooks_.metrics && admitted.status().code() == absl::StatusCode::kResourceExhausted) {
        hooks_.metrics->RateLimited(absl::StrCat("key:", context.principal.key_id));
      }
      RecordRefusal(request.model, request.stream, request.session_id, context, admitted.status());
      SendError(*sink, admitted.status());
      return [] {};
    }
    grant = *std::move(admitted);
  }
  absl::StatusOr<RequestOverrides> overrides = ParseOverrides(context, *config);
  if (!overrides.ok()) {
    RecordRefusal(request.model, request.stream, request.session_id, context, overrides.status());
    SendError(*sink, overrides.status());
    return [] {};
  }
  // X-Preferred-Model names another model group to use when that group can serve now. Plan
  // once per group: planning advances round-robin rotation.
  std::string model = request.model;
  absl::StatusOr<std::vector<const config::Deployment*>> plan =
      absl::NotFoundError("no preferred model");
  if (context.preferred_model && *context.preferred_model != model) {
    plan = router_.Plan(*config, *context.preferred_model, request.stream, overrides->strategy);
    if (plan.ok()) model = *context.preferred_model;
  }
  if (!plan.ok()) plan = router_.Plan(*config, model, request.stream, overrides->strategy);
  absl::Status plan_error;
  if (!plan.ok()) {
    // Every deployment cooling down is no reason to refuse while a fallback group may serve.
    const bool has_fallbacks = !config->GroupSettings(model).fallbacks.empty();
    if (plan.status().code() == absl::StatusCode::kNotFound || !has_fallbacks) {
      RecordRefusal(request.model, request.stream, request.session_id, context, plan.status());
      SendError(*sink, plan.status());
      return [] {};
    }
    plan_error = plan.status();
    plan = std::vector<const config::Deployment*>();
  }
  if (config->session_affinity && hooks_.affinity && request.session_id) {
    // The plan only holds deployments that admit traffic now, so a tripped one is skipped.
    if (std::optional<std::string> last = hooks_.affinity->Lookup(*request.session_id)) {
      auto it = std::find_if(plan->begin(), plan->end(),
                             [&](const config::Deployment* d) { return d->id == *last; });
      if (it != plan->end()) std::rotate(plan->begin(), it, it + 1);
    }
  }
  const bool can_enrich = hooks_.enricher != nullptr && hooks_.workers != nullptr;
  const bool use_memory = can_enrich && config->enable_memory && request.session_id.has_value();
  const bool use_rag = can_enrich && config->enable_rag && request.rag_collection.has_value();
  std::string rag_refused;
  if (request.rag_collection && !use_rag) {
    rag_refused = config->enable_rag ? "rag: retrieval is unavailable"
                                     : "rag: retrieval is disabled on this server";
  }
  auto exchange = std::make_shared<ChatExchange>(*this, std::move(request), std::move(context),
                                                 std::move(sink), std::move(config), model,
                                                 *std::move(plan), *std::move(overrides));
  exchange->SetGrant(std::move(grant));
  if (!rag_refused.empty()) exchange->AddWarning(std::move(rag_refused));
  auto begin = [plan_error](ChatExchange& e) { e.Begin(plan_error); };
  if (use_memory || use_rag) {
    // Memory and retrieval read SQLite and embed text: a worker does it, then the attempts start
    // on the event thread.
    const bool queued =
        hooks_.workers->Submit([exchange, begin, use_memory, use_rag, enricher = hooks_.enricher] {
          exchange->Enrich(*enricher, use_memory, use_rag);
          exchange->Post(begin);
        });
    if (!queued) {
      exchange->AddWarning("enrichment skipped: the worker queue is full");
      exchange->Post(begin);
    }
  } else {
    exchange->Post(begin);
  }
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
  if (hooks_.aliases) {
    // Aliases added at run time (control plane UpdateRoutes) follow the configured names. One
    // whose target group a reload removed is left out: it would not resolve to a deployment.
    const std::vector<std::string> groups = names;
    auto configured = [&](const std::string& name) {
      return std::find(groups.begin(), groups.end(), name) != groups.end();
    };
    for (const auto& [alias, target] : hooks_.aliases->All()) {
      if (configured(target) && !configured(alias)) names.push_back(alias);
    }
  }
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
                   {"tokens_this_minute", h.tokens_this_minute},
                   {"recent_failure_rate", h.failure_rate},
                   {"traffic_share", h.traffic_share},
                   {"health_checks_failed", h.health_checks_failed}};
    if (!h.last_error.empty()) stats[d.id]["last_error"] = h.last_error;
    if (const router::UsageLimiter* usage = router_.usage()) {
      // Usage against the deployment's rpm/tpm (0 = no limit) over the sliding 60 s window.
      const router::UsageLimiter::Usage used = usage->InWindow(d.id);
      stats[d.id]["rpm"] = d.rpm;
      stats[d.id]["tpm"] = d.tpm;
      stats[d.id]["requests_last_60s"] = used.requests;
      stats[d.id]["tokens_last_60s"] = used.tokens;
      stats[d.id]["at_rate_limit"] = !usage->Admits(d);
    }
  }
  json groups = json::object();
  for (const std::string& name : config->ModelNames()) {
    const config::ModelGroupConfig& settings = config->GroupSettings(name);
    json group = {{"routing_strategy", config->StrategyFor(name)},
                  {"fallbacks", settings.fallbacks},
                  {"context_window_fallbacks", settings.context_window_fallbacks}};
    if (settings.hedge_after_ms == config::kHedgeAfterP95) {
      group["hedge_after_ms"] = "p95";
    } else if (settings.hedge_after_ms > 0) {
      group["hedge_after_ms"] = settings.hedge_after_ms;
    }
    groups[name] = std::move(group);
  }
  return {{"routing_strategy", config->routing_strategy},
          {"provider_stats", std::move(stats)},
          {"model_groups", std::move(groups)}};
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
