#include "ailb/gateway/health_checker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/provider/adapter.h"
#include "spdlog/spdlog.h"

namespace ailb::gateway {
namespace {

class ProbeObserver final : public upstream::ResponseObserver {
 public:
  using Done = std::function<void(const absl::Status&, std::chrono::milliseconds)>;
  explicit ProbeObserver(Done done)
      : done_(std::move(done)), started_(std::chrono::steady_clock::now()) {}
  bool OnResponseHead(int http_status, const upstream::Headers&) override {
    http_status_ = http_status;
    return true;
  }
  bool OnBodyData(std::string_view) override { return true; }
  void OnComplete(const absl::Status& status) override {
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_);
    if (!status.ok()) return done_(status, elapsed);
    if (http_status_ >= 200 && http_status_ < 300) return done_(absl::OkStatus(), elapsed);
    done_(WithHttpStatus(absl::Status(StatusCodeForHttp(http_status_),
                                      absl::StrCat("health probe answered HTTP ", http_status_)),
                         http_status_),
          elapsed);
  }

 private:
  Done done_;
  const std::chrono::steady_clock::time_point started_;
  int http_status_ = 0;
};

// How often a disabled checker looks whether a reload enabled it.
constexpr std::chrono::milliseconds kDisabledRecheck{5'000};

}  // namespace

void ProbeDeployment(upstream::HttpClient& client, const config::Deployment& deployment,
                     std::chrono::milliseconds timeout,
                     std::function<void(const absl::Status&, std::chrono::milliseconds)> done) {
  absl::StatusOr<std::shared_ptr<const provider::ProviderAdapter>> adapter =
      provider::AdapterFor(deployment.provider);
  absl::StatusOr<upstream::Request> request =
      adapter.ok() ? (*adapter)->EncodeHealthProbe(deployment) : adapter.status();
  if (!request.ok()) {
    // Not a fault of the deployment: there is nothing to probe it with.
    done(request.status(), std::chrono::milliseconds(0));
    return;
  }
  request->connect_timeout = std::min(request->connect_timeout, timeout);
  request->first_byte_timeout = timeout;
  request->total_timeout = timeout;
  client.Start(*std::move(request), std::make_shared<ProbeObserver>(std::move(done)));
}

struct ActiveHealthChecker::State : std::enable_shared_from_this<State> {
  State(const config::ConfigStore& config, router::HealthTracker& health,
        upstream::HttpClient& client)
      : config(config), health(health), client(client) {}

  void Round() {
    if (stopped.load()) return;
    std::shared_ptr<const config::Config> snapshot = config.Current();
    const int interval_ms = snapshot->health_check_interval_ms;
    if (interval_ms <= 0) {
      Schedule(kDisabledRecheck);
      return;
    }
    const std::chrono::milliseconds interval(interval_ms);
    // A probe may take up to the interval (bounded by the connect timeout's order of magnitude).
    const std::chrono::milliseconds timeout =
        std::min(interval, std::chrono::milliseconds(snapshot->timeouts.first_byte_ms));
    for (const config::Deployment& d : snapshot->deployments) {
      std::weak_ptr<State> weak = weak_from_this();
      ProbeDeployment(
          client, d, timeout,
          [weak, id = d.id, snapshot](const absl::Status& status, std::chrono::milliseconds) {
            std::shared_ptr<State> self = weak.lock();
            if (!self || self->stopped.load()) return;
            if (!status.ok()) {
              spdlog::warn("health check of deployment {} failed: {}", id, ToStd(status.message()));
            }
            self->health.OnHealthCheck(id, status);
          });
    }
    Schedule(interval);
  }

  void Schedule(std::chrono::milliseconds delay) {
    std::weak_ptr<State> weak = weak_from_this();
    client.RunAfter(delay, [weak] {
      if (std::shared_ptr<State> self = weak.lock()) self->Round();
    });
  }

  const config::ConfigStore& config;
  router::HealthTracker& health;
  upstream::HttpClient& client;
  std::atomic<bool> stopped{false};
};

ActiveHealthChecker::ActiveHealthChecker(const config::ConfigStore& config,
                                         router::HealthTracker& health,
                                         upstream::HttpClient& client)
    : state_(std::make_shared<State>(config, health, client)) {}

void ActiveHealthChecker::Start() {
  std::shared_ptr<State> state = state_;
  state->client.RunAfter(std::chrono::milliseconds(0), [weak = std::weak_ptr<State>(state)] {
    if (std::shared_ptr<State> self = weak.lock()) self->Round();
  });
}

void ActiveHealthChecker::Stop() { state_->stopped.store(true); }

}  // namespace ailb::gateway
