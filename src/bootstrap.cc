#include "ailb/bootstrap.h"

#include <curl/curl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ailb/auth/key_store.h"
#include "ailb/common/clock.h"
#include "ailb/common/logging.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/common/worker_pool.h"
#include "ailb/config/config.h"
#include "ailb/control/live_module.h"
#include "ailb/gateway/deployment_metrics.h"
#include "ailb/gateway/enricher.h"
#include "ailb/gateway/gateway.h"
#include "ailb/gateway/health_checker.h"
#include "ailb/memory/session_memory.h"
#include "ailb/metrics/registry.h"
#include "ailb/metrics/request_metrics.h"
#include "ailb/provider/adapter.h"
#include "ailb/rag/embedder.h"
#include "ailb/rag/rag_store.h"
#include "ailb/ratelimit/rate_limiter.h"
#include "ailb/router/aliases.h"
#include "ailb/router/health.h"
#include "ailb/router/router.h"
#include "ailb/router/traffic_split.h"
#include "ailb/router/usage_limiter.h"
#include "ailb/server/admin_api.h"
#include "ailb/server/control_server.h"
#include "ailb/server/http_server.h"
#include "ailb/server/knowledge_api.h"
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

absl::StatusOr<std::shared_ptr<const config::Config>> Checked(
    absl::StatusOr<config::Config> loaded) {
  if (!loaded.ok()) return loaded.status();
  AILB_RETURN_IF_ERROR(CheckSupported(*loaded));
  return std::make_shared<const config::Config>(*std::move(loaded));
}

absl::StatusOr<std::shared_ptr<const config::Config>> LoadAndCheck(
    const std::optional<std::string>& config_file) {
  return Checked(config::LoadConfig(config::ProcessEnvironment(), config_file));
}

// The version tags of the configured deployments, in first-seen order.
std::vector<std::string> VersionsOf(const config::Config& config) {
  std::vector<std::string> versions;
  for (const config::Deployment& d : config.deployments) {
    if (!d.version.empty() &&
        std::find(versions.begin(), versions.end(), d.version) == versions.end()) {
      versions.push_back(d.version);
    }
  }
  return versions;
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
  if (config.deployments.empty()) {
    spdlog::warn(
        "no model deployments configured: set OPENAI_MODELS (and OPENAI_BASE_URL), "
        "OLLAMA_MODELS or a model_list in AILB_CONFIG");
  }
}

// LOG_LEVEL applies at once on reload (the logger's format is fixed at start). The change is
// announced while the more verbose of the two levels is in effect, so it shows either way.
void ApplyLogLevel(const config::Config& current, const config::Config& next) {
  if (current.log_level == next.log_level) return;
  const spdlog::level::level_enum level = spdlog::level::from_str(next.log_level);
  const bool more_verbose = level <= spdlog::get_level();
  if (more_verbose) spdlog::set_level(level);
  spdlog::info("log_level changed from {} to {}", current.log_level, next.log_level);
  if (!more_verbose) spdlog::set_level(level);
}

// Hands the configured keys to the key store and says in the log who may call.
void ApplyKeys(auth::KeyStore& keys, const config::Config& config) {
  std::vector<auth::ConfiguredKey> configured;
  for (size_t i = 0; i < config.api_keys.size(); ++i) {
    auth::ConfiguredKey key;
    key.key = config.api_keys[i];
    if (i < config.api_key_settings.size()) {
      key.name = config.api_key_settings[i].name;
      key.limits = config.api_key_settings[i].limits;
    }
    configured.push_back(std::move(key));
  }
  keys.SetConfigured(configured, config.admin_key);
  if (keys.DataPlaneOpen()) {
    spdlog::warn(
        "no API keys and no admin key (AILB_API_KEYS, AILB_ADMIN_KEY): the data plane is OPEN to "
        "anyone who can reach it");
    return;
  }
  const size_t total = keys.List().size();
  spdlog::info(
      "the data plane requires API keys: {} configured, {} created by the admin; admin key "
      "{}",
      config.api_keys.size(), total - std::min(total, config.api_keys.size()),
      keys.HasAdminKey() ? "set" : "not set (key administration disabled)");
}

constexpr int kWorkerThreads = 4;
constexpr std::chrono::seconds kSpendFlushInterval{1};
constexpr std::chrono::seconds kSnapshotInterval{30};
constexpr std::chrono::minutes kRetentionInterval{10};

// Background upkeep of the stores: index snapshots (so a restart loads rather than rebuilds),
// compaction of indexes full of tombstones, and session retention. Stop() takes a last snapshot.
class StoreMaintenance {
 public:
  StoreMaintenance(rag::RagStore* rag, memory::SessionMemory* memory) : rag_(rag), memory_(memory) {
    if (rag_ != nullptr || memory_ != nullptr) thread_ = std::thread([this] { Run(); });
  }
  ~StoreMaintenance() { Stop(); }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (rag_ != nullptr) Log("final index snapshot", rag_->SnapshotAll());
  }

 private:
  void Run() {
    auto next_retention = std::chrono::steady_clock::now();
    std::unique_lock lock(mu_);
    while (!wake_.wait_for(lock, kSnapshotInterval, [this] { return stopping_; })) {
      lock.unlock();
      if (rag_ != nullptr) {
        Log("index snapshot", rag_->SnapshotAll());
        absl::StatusOr<int> compacted = rag_->CompactIndexes();
        Log("index compaction", compacted.status());
        if (compacted.ok() && *compacted > 0) spdlog::info("compacted {} index(es)", *compacted);
      }
      if (memory_ != nullptr && std::chrono::steady_clock::now() >= next_retention) {
        absl::StatusOr<int64_t> removed = memory_->EnforceRetention();
        Log("session retention", removed.status());
        if (removed.ok() && *removed > 0) spdlog::info("retention removed {} turn(s)", *removed);
        next_retention = std::chrono::steady_clock::now() + kRetentionInterval;
      }
      lock.lock();
    }
  }

  static void Log(std::string_view what, const absl::Status& status) {
    if (!status.ok()) spdlog::warn("{} failed: {}", what, status.message());
  }

  rag::RagStore* const rag_;
  memory::SessionMemory* const memory_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

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

  const config::Config& startup = **initial;
  std::error_code dir_error;
  std::filesystem::create_directories(startup.data_dir, dir_error);
  if (dir_error) {
    std::cerr << "ailb: cannot create AILB_DATA_DIR '" << startup.data_dir
              << "': " << dir_error.message() << "\n";
    return 2;
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  const Clock& clock = SystemClock::Instance();
  std::unique_ptr<SeededRandom> random = SeededRandom::FromEntropy();
  config::ConfigStore config_store(*initial);
  metrics::Registry registry;
  metrics::RequestMetrics request_metrics(registry, clock);
  ratelimit::RateLimiter rate_limiter(clock);
  router::ModelAliases aliases;
  router::SessionAffinity affinity;
  router::TrafficSplit split(clock, startup.data_dir + "/traffic_weights.json");
  if (absl::Status loaded = split.Load(); !loaded.ok()) spdlog::warn("{}", loaded.message());
  split.SyncVersions(VersionsOf(startup));
  router::HealthTracker health(clock, router::HealthPolicy{});
  gateway::RegisterDeploymentMetrics(registry, config_store, health);
  router::UsageLimiter usage(clock);  // deployments' rpm/tpm
  router::Router router(health, *random, &split, &usage);
  gateway::InflightTracker inflight;
  std::unique_ptr<upstream::HttpClient> client = upstream::NewCurlHttpClient();

  // Memory and RAG: SQLite in AILB_DATA_DIR is the source of truth, indexes are rebuilt from it
  // when needed. A store that cannot open leaves the server running without it (its endpoints
  // answer 503, chat requests go on without the context) rather than refusing to start.
  std::unique_ptr<memory::SessionMemory> session_memory;
  {
    absl::StatusOr<std::unique_ptr<rag::Embedder>> embedder = rag::NewLocalEmbedder(384);
    absl::StatusOr<std::unique_ptr<memory::SessionMemory>> opened =
        embedder.ok() ? memory::SessionMemory::Open(startup.data_dir, *std::move(embedder), clock)
                      : embedder.status();
    if (opened.ok()) {
      session_memory = *std::move(opened);
    } else {
      spdlog::error("session memory is unavailable: {}", opened.status().message());
    }
  }
  std::unique_ptr<rag::RagStore> rag_store;
  {
    const auto started = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<rag::RagStore>> opened = rag::RagStore::Open(
        startup.data_dir,
        [&config_store, client = client.get()](const rag::EmbeddingSpec& spec) {
          return server::MakeEmbedder(spec, *config_store.Current(), client);
        },
        clock);
    if (opened.ok()) {
      rag_store = *std::move(opened);
      spdlog::info("RAG store ready in {} ms",
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - started)
                       .count());
    } else {
      spdlog::error("RAG is unavailable: {}", opened.status().message());
    }
  }
  // API keys created through the admin API live in the same database. Without it they would be
  // forgotten and the data plane could fall open, so a store that cannot open stops start-up.
  std::unique_ptr<auth::KeyStore> keys;
  {
    absl::StatusOr<std::unique_ptr<auth::KeyStore>> opened =
        auth::KeyStore::Open(startup.data_dir + "/ailb.db", clock);
    if (!opened.ok()) {
      spdlog::critical("cannot open the API key store: {}", opened.status().message());
      return 1;
    }
    keys = *std::move(opened);
    ApplyKeys(*keys, startup);
    keys->StartFlusher(kSpendFlushInterval);
  }
  std::unique_ptr<server::BlockingApi> admin_api = server::NewAdminApi(keys.get());
  std::unique_ptr<gateway::Enricher> enricher =
      gateway::NewEnricher(session_memory.get(), rag_store.get(), registry);
  std::unique_ptr<server::BlockingApi> knowledge_api =
      server::NewKnowledgeApi({rag_store.get(), session_memory.get(), &config_store, client.get()});
  // Blocking work (SQLite, embeddings) runs here, never on a reactor or the event thread.
  auto workers = std::make_unique<WorkerPool>(kWorkerThreads);
  StoreMaintenance maintenance(rag_store.get(), session_memory.get());

  gateway::Gateway gateway(
      config_store, router, health, *client, clock, *random, inflight,
      gateway::GatewayHooks{&request_metrics, &rate_limiter, &aliases, &affinity, enricher.get(),
                            workers.get(), keys.get()});
  gateway::ActiveHealthChecker health_checker(config_store, health, *client);
  health_checker.Start();

  server::HttpServerOptions http_options;
  http_options.host = startup.server.host;
  http_options.port = startup.server.http_port;
  http_options.threads = startup.server.http_threads;
  http_options.max_body_bytes = startup.server.max_body_bytes;
  http_options.keepalive_timeout =
      std::chrono::milliseconds(startup.timeouts.total_ms) + std::chrono::seconds(60);
  absl::StatusOr<std::unique_ptr<server::HttpServer>> http = server::HttpServer::Start(
      http_options, server::HttpServerDeps{&gateway,
                                           &config_store,
                                           &registry,
                                           {knowledge_api.get(), admin_api.get()},
                                           workers.get(),
                                           keys.get()});
  if (!http.ok()) {
    spdlog::critical("{}", http.status().message());
    return 1;
  }

  // A Shutdown RPC ends the process as SIGTERM does, with its own drain budget.
  std::atomic<int> drain_override_ms{-1};
  const std::string grpc_host =
      startup.server.grpc_host.empty() ? startup.server.host : startup.server.grpc_host;
  control::LiveModuleDeps deps;
  deps.clock = &clock;
  deps.config = &config_store;
  deps.reload = [&config_file] { return LoadAndCheck(config_file); };
  deps.parse_document = [](const std::string& document) {
    return Checked(
        config::LoadConfigFromYamlText(config::ProcessEnvironment(), document, "UpdateConfig"));
  };
  deps.startup = *initial;
  deps.publish = [&](std::shared_ptr<const config::Config> next) {
    ApplyLogLevel(*config_store.Current(), *next);
    config_store.Publish(next);
    split.SyncVersions(VersionsOf(*next));
    LogConfigSummary(*next);
    ApplyKeys(*keys, *next);
  };
  deps.gateway = &gateway;
  deps.health = &health;
  deps.split = &split;
  deps.aliases = &aliases;
  deps.rate_limiter = &rate_limiter;
  deps.registry = &registry;
  deps.request_metrics = &request_metrics;
  deps.client = client.get();
  deps.open_connections = [&http] { return (*http)->open_connections(); };
  deps.total_connections = [&http] { return (*http)->total_connections(); };
  deps.open_streams = [&http] { return static_cast<int64_t>((*http)->open_streams()); };
  deps.shutdown = [&drain_override_ms](bool graceful, int timeout_seconds) {
    drain_override_ms = graceful ? (timeout_seconds > 0 ? timeout_seconds * 1000 : -1) : 0;
    kill(getpid(), SIGTERM);
  };
  deps.promotion_interval = std::chrono::milliseconds(startup.server.promotion_interval_ms);
  std::unique_ptr<control::LiveModule> module;
  std::unique_ptr<server::ControlServer> control;
  {
    module = control::NewLiveModule(deps);
    server::ControlServerOptions control_options;
    control_options.host = grpc_host;
    control_options.port = startup.server.grpc_port;
    control_options.auth_token = startup.server.control_token;
    absl::StatusOr<std::unique_ptr<server::ControlServer>> started =
        server::ControlServer::Start(control_options, *module);
    if (!started.ok()) {
      spdlog::critical("{}", started.status().message());
      (*http)->Shutdown();
      return 1;
    }
    control = *std::move(started);
    module->SetGrpcAddress(absl::StrCat(grpc_host, ":", control->port()));
  }
  module->MarkServing();
  // grpc.health.v1 follows the module: NOT_SERVING while no model group can serve.
  std::mutex follower_mu;
  std::condition_variable follower_wake;
  bool follower_stop = false;
  std::thread health_follower([&] {
    std::unique_lock lock(follower_mu);
    while (!follower_stop) {
      lock.unlock();
      control->SetServing(gateway.CheckHealth().can_serve);
      lock.lock();
      follower_wake.wait_for(lock, std::chrono::seconds(1), [&] { return follower_stop; });
    }
  });
  spdlog::info("ailb {} listening: http={}:{} grpc={}:{} threads={} control_auth={}", AILB_VERSION,
               startup.server.host, (*http)->port(), grpc_host, control->port(),
               startup.server.http_threads, startup.server.control_token.empty() ? "off" : "on");

  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      control::ConfigUpdateResult result = module->Reload();
      spdlog::info("SIGHUP: {}", result.message);
      continue;
    }
    break;
  }

  {
    std::lock_guard lock(follower_mu);
    follower_stop = true;
  }
  follower_wake.notify_all();
  health_follower.join();
  module->MarkStopping();
  control->SetServing(false);
  const int override_ms = drain_override_ms.load();
  const auto drain_timeout = std::chrono::milliseconds(
      override_ms >= 0 ? override_ms : config_store.Current()->server.drain_timeout_ms);
  spdlog::info("shutting down: draining {} request(s) for up to {} ms", inflight.count(),
               drain_timeout.count());
  gateway.StartDraining();
  const bool drained = inflight.WaitDrained(drain_timeout);
  if (!drained) {
    spdlog::warn("drain timeout: {} request(s) still in flight are cancelled", inflight.count());
  }
  // Replies already handed to the reactors must leave before their connections close.
  if (!(*http)->WaitForPendingWrites(std::chrono::seconds(2))) {
    spdlog::warn("some reply bytes were still unsent at shutdown");
  }
  // Connections first, so nothing new reaches the client; then the client, which cancels
  // whatever is left and joins its event thread.
  (*http)->Shutdown();
  control->Shutdown(std::chrono::seconds(2));
  health_checker.Stop();
  // Queued memory/RAG work finishes (it may be an acknowledged write) before the upstream client
  // it may post to goes away; then the indexes are snapshotted for a fast next start.
  workers.reset();
  maintenance.Stop();
  client.reset();
  spdlog::info("stopped");
  spdlog::shutdown();
  curl_global_cleanup();
  return 0;
}

}  // namespace ailb
