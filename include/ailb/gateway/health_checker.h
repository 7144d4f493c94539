// Active health checks: each deployment's free call (its model listing), sent through the shared
// upstream client. Used periodically by ActiveHealthChecker (results feed the breaker) and on
// demand by the control plane's deep HealthCheck.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "ailb/config/config.h"
#include "ailb/router/health.h"
#include "ailb/upstream/http_client.h"

namespace ailb::gateway {

// Sends `deployment`'s health probe and calls `done` once, on the client's event thread, with OK
// for a 2xx reply or the failure (transport error, or the HTTP status as a status with that
// HTTP status attached), and the time it took. `done` must not block.
void ProbeDeployment(upstream::HttpClient& client, const config::Deployment& deployment,
                     std::chrono::milliseconds timeout,
                     std::function<void(const absl::Status&, std::chrono::milliseconds)> done);

// Probes every configured deployment each `interval` (taken from the configuration snapshot at
// each round, so a reload changes it) and reports results to the health tracker. Thread-safe;
// Stop (or destruction) ends the rounds; probes in flight finish harmlessly.
class ActiveHealthChecker {
 public:
  ActiveHealthChecker(const config::ConfigStore& config, router::HealthTracker& health,
                      upstream::HttpClient& client);
  ~ActiveHealthChecker() { Stop(); }
  // Schedules the first round (when the configuration enables checks; otherwise rechecks the
  // setting every few seconds).
  void Start();
  void Stop();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace ailb::gateway
