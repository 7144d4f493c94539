#include "ailb/bootstrap.h"

#include <curl/curl.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ailb/common/clock.h"
#include "ailb/common/logging.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/config/config.h"
#include "ailb/gateway/gateway.h"
#include "ailb/provider/adapter.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "ailb/server/http_server.h"
#include "ailb/upstream/http_client.h"
#include "spdlog/spdlog.h"

namespace ailb {
namespace {

constexpr char kUsage[] =
    "usage: ailb [--config FILE]\n"
    "       ailb --version\n"
    "Serves the OpenAI-compatible API on HTTP_PORT. Configuration comes from environment\n"
    "variables and an optional YAML file (AILB_CONFIG or --config); see docs/configuration.md.\n";

// Checks what the configuration asks of this build, beyond what the loader validates.
absl::Status CheckSupported(const config::Config& config) {
  AILB_RETURN_IF_ERROR(router::CheckStrategyImplemented(config.routing_strategy));
  for (const config::Deployment& deployment : config.deployments) {
    absl::StatusOr<std::shared_ptr<const provider::ProviderAdapter>> adapter =
        provider::AdapterFor(deployment.provider);
    if (!adapter.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("deployment ", deployment.id, ": ", adapter.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const config::Config>> LoadAndCheck(
    const std::optional<std::string>& config_file) {
  absl::StatusOr<config::Config> loaded =
      config::LoadConfig(config::ProcessEnvironment(), config_file);
  if (!loaded.ok()) return loaded.status();
  AILB_RETURN_IF_ERROR(CheckSupported(*loaded));
  return std::make_shared<const config::Config>(*std::move(loaded));
}

void LogConfigSummary(const config::Config& config) {
  spdlog::info(
      "module_id={} routing_strategy={} models={} deployments={} memory={} rag={} "
      "data_dir={} config_file={}",
      config.module_id, config.routing_strategy, absl::StrJoin(config.ModelNames(), ","),
      config.deployments.size(), config.enable_memory, config.enable_rag, config.data_dir,
      config.source_file.empty() ? "-" : config.source_file);
  for (const config::Deployment& d : config.deployments) {
    spdlog::info("deployment id={} model={} provider={} upstream_model={} api_base={} key={}", d.id,
                 d.model_name, config::ProviderName(d.provider), d.upstream_model, d.api_base,
                 d.api_key.empty() ? "none" : "set");
  }
  if (config.api_keys.empty()) {
    spdlog::warn(
        "no API keys configured (AILB_API_KEYS): the data plane is open to anyone "
        "who can reach it");
  }
  if (config.deployments.empty()) {
    spdlog::warn(
        "no model deployments configured: set OPENAI_MODELS (and OPENAI_BASE_URL), "
        "OLLAMA_MODELS or a model_list in AILB_CONFIG");
  }
}

}  // namespace

int RunMain(int argc, char** argv) {
  std::optional<std::string> config_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--version") {
      std::cout << "ailb " << AILB_VERSION << "\n";
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--config" && i + 1 < argc) {
      config_file = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_file = arg.substr(9);
    } else {
      std::cerr << "ailb: unknown argument '" << arg << "'\n" << kUsage;
      return 2;
    }
  }

  // Signals are taken synchronously by sigwait below; block them before any thread starts so
  // no other thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::shared_ptr<const config::Config>> initial = LoadAndCheck(config_file);
  if (!initial.ok()) {
    std::cerr << "ailb: invalid configuration: " << initial.status().message() << "\n";
    return 2;
  }
  if (absl::Status logging = ConfigureLogging((*initial)->log_level, (*initial)->log_format);
      !logging.ok()) {
    std::cerr << "ailb: " << logging.message() << "\n";
    return 2;
  }
  LogConfigSummary(**initial);

  curl_global_init(CURL_GLOBAL_DEFAULT);
  const Clock& clock = SystemClock::Instance();
  std::unique_ptr<SeededRandom> random = SeededRandom::FromEntropy();
  config::ConfigStore config_store(*initial);
  router::HealthTracker health(clock, router::HealthPolicy{});
  router::Router router(health, *random);
  gateway::InflightTracker inflight;
  std::unique_ptr<upstream::HttpClient> client = upstream::NewCurlHttpClient();
  gateway::Gateway gateway(config_store, router, health, *client, clock, *random, inflight);

  const config::Config& startup = **initial;
  server::HttpServerOptions http_options;
  http_options.host = startup.server.host;
  http_options.port = startup.server.http_port;
  http_options.threads = startup.server.http_threads;
  http_options.max_body_bytes = startup.server.max_body_bytes;
  http_options.keepalive_timeout =
      std::chrono::milliseconds(startup.timeouts.total_ms) + std::chrono::seconds(60);
  absl::StatusOr<std::unique_ptr<server::HttpServer>> http =
      server::HttpServer::Start(http_options, gateway, config_store);
  if (!http.ok()) {
    spdlog::critical("{}", ToStd(http.status().message()));
    return 1;
  }
  spdlog::info("ailb {} listening: http={}:{} threads={}", AILB_VERSION, startup.server.host,
               (*http)->port(), startup.server.http_threads);

  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      // Re-reads the environment and the same file (AILB_CONFIG when --config was not given).
      absl::StatusOr<std::shared_ptr<const config::Config>> next = LoadAndCheck(config_file);
      if (!next.ok()) {
        spdlog::error("reload rejected, still serving the previous configuration: {}",
                      ToStd(next.status().message()));
        continue;
      }
      config_store.Publish(*next);
      spdlog::info("configuration reloaded");
      LogConfigSummary(**next);
      continue;
    }
    break;
  }

  const auto drain_timeout =
      std::chrono::milliseconds(config_store.Current()->server.drain_timeout_ms);
  spdlog::info("shutting down: draining {} request(s) for up to {} ms", inflight.count(),
               drain_timeout.count());
  gateway.StartDraining();
  const bool drained = inflight.WaitDrained(drain_timeout);
  if (!drained) {
    spdlog::warn("drain timeout: {} request(s) still in flight are cancelled", inflight.count());
  }
  // Connections first, so nothing new reaches the client; then the client, which cancels
  // whatever is left and joins its event thread.
  (*http)->Shutdown();
  client.reset();
  spdlog::info("stopped");
  spdlog::shutdown();
  curl_global_cleanup();
  return 0;
}

}  // namespace ailb
