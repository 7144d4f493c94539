// The gateway runs one chat request end to end: plan the deployments, encode for the chosen
// provider, send through the shared upstream client, decode, and write to the client. Failures
// before the first byte reaches the client move on to the next deployment of the plan; after it,
// a stream ends with an SSE error event and [DONE], never a silent cut.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "ailb/auth/key_store.h"
#include "ailb/common/clock.h"
#include "ailb/common/random.h"
#include "ailb/common/worker_pool.h"
#include "ailb/config/config.h"
#include "ailb/gateway/enricher.h"
#include "ailb/gateway/response_sink.h"
#include "ailb/llm/chat.h"
#include "ailb/metrics/request_metrics.h"
#include "ailb/ratelimit/rate_limiter.h"
#include "ailb/router/aliases.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "ailb/router/session_affinity.h"
#include "ailb/upstream/http_client.h"
#include "nlohmann/json.hpp"

namespace ailb::gateway {

struct RequestContext {
  std::string request_id;
  std::string client_address;
  std::optional<std::string> preferred_model;  // X-Preferred-Model
  std::string api_key;                         // the key presented, for per-key rate limits
  auth::Principal principal;                   // who the key belongs to (HTTP layer's check)
  // Per-request routing overrides from headers, as sent (validated by the gateway):
  std::optional<std::string> routing_strategy;       // X-Ailb-Routing-Strategy
  std::optional<std::string> timeout_ms;             // X-Ailb-Timeout-Ms (total deadline)
  std::optional<std::string> first_byte_timeout_ms;  // X-Ailb-First-Byte-Timeout-Ms
  int64_t request_bytes = 0;
  SteadyTime received_at;
};

// Optional collaborators; absent ones are skipped.
struct GatewayHooks {
  metrics::RequestMetrics* metrics = nullptr;
  ratelimit::RateLimiter* rate_limiter = nullptr;
  const router::ModelAliases* aliases = nullptr;
  // Used when the configuration turns session_affinity on.
  router::SessionAffinity* affinity = nullptr;
  // Memory and RAG enrichment, run on `workers` (never on a reactor or the event thread). Both
  // must be set for enrichment to happen.
  Enricher* enricher = nullptr;
  WorkerPool* workers = nullptr;
  // Per-key model allow-lists, rpm/tpm and budgets, admitted before planning.
  auth::KeyStore* keys = nullptr;
};

// Counts requests in flight so shutdown can drain them. Thread-safe.
class InflightTracker {
 public:
  void Enter() {
    std::lock_guard lock(mu_);
    ++count_;
  }
  void Leave() {
    std::lock_guard lock(mu_);
    if (--count_ == 0) drained_.notify_all();
  }
  int count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  // Waits until nothing is in flight or `timeout` passes; returns whether drained.
  bool WaitDrained(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return drained_.wait_for(lock, timeout, [this] { return count_ == 0; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable drained_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Thread-safe: HandleChat may be called concurrently from any thread.
class Gateway {
 public:
  Gateway(config::ConfigStore& config, router::Router& router, router::HealthTracker& health,
          upstream::HttpClient& client, const Clock& clock, RandomSource& random,
          InflightTracker& inflight, GatewayHooks hooks = {})
      : config_(config),
        router_(router),
        health_(health),
        client_(client),
        clock_(clock),
        random_(random),
        inflight_(inflight),
        hooks_(hooks) {}

  // Starts the request and returns at once; the reply is written to `sink` later, from the
  // upstream client's event thread. The returned function cancels the request (the client left);
  // it is safe to call from any thread, at any time, any number of times.
  std::function<void()> HandleChat(llm::ChatRequest request, RequestContext context,
                                   std::shared_ptr<ResponseSink> sink);

  // /v1/models: every public model name (configured groups, then run-time aliases of a
  // configured group, each once). `model` set: that one or NotFound.
  absl::StatusOr<nlohmann::json> ListModels(const std::optional<std::string>& model) const;

  // /healthz: overall state and each deployment's breaker. `can_serve` when some model group
  // has a deployment that admits traffic and the module is not draining.
  struct Health {
    bool can_serve = false;
    nlohmann::json body;
  };
  Health CheckHealth() const;

  // /api/routing/stats: the strategy and every deployment's counters and breaker state.
  nlohmann::json RoutingStats() const;

  // Refuse new requests (shutdown has begun).
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  const Clock& clock() const { return clock_; }

  // Logs and counts a chat request refused before any upstream attempt (and writes nothing);
  // also for refusals made before the gateway saw the request (authentication, malformed body).
  void RecordRefusal(std::string_view model, bool stream, const std::optional<std::string>& session,
                     const RequestContext& context, const absl::Status& status);

 private:
  friend class ChatExchange;
  config::ConfigStore& config_;
  router::Router& router_;
  router::HealthTracker& health_;
  upstream::HttpClient& client_;
  const Clock& clock_;
  RandomSource& random_;
  InflightTracker& inflight_;
  const GatewayHooks hooks_;
  std::atomic<bool> draining_{false};
  const WallTime started_at_ = std::chrono::system_clock::now();
};

// Writes `status` as an OpenAI error reply (with Retry-After, and Allow for a 405, when the
// status carries them; an Allow already in `headers` wins).
void SendError(ResponseSink& sink, const absl::Status& status, upstream::Headers headers = {});

}  // namespace ailb::gateway
