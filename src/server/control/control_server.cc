#include "ailb/server/control_server.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ailb/control/module_core.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/control/module_service.h"

namespace ailb::server {
namespace {

constexpr char kModuleServiceName[] = "marchproxy.ModuleService";

// Keepalive as the NLB needs it: it pings every 10 s even with no call in flight. gRPC's
// defaults (pings without calls refused, at most one per 5 min, 2 strikes) answer that with
// GOAWAY too_many_pings within a minute, and the NLB then sees the module flap.
constexpr int kMinRecvPingIntervalMs = 5000;

std::string ListenAddress(const std::string& host, int port) {
  // An IPv6 literal needs brackets before the port.
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

class ControlServerImpl final : public ControlServer {
 public:
  ControlServerImpl(std::unique_ptr<control_rpc::ModuleServiceImpl> service,
                    std::unique_ptr<grpc::Server> server, int port)
      : service_(std::move(service)), server_(std::move(server)), port_(port) {}

  ~ControlServerImpl() override { Shutdown(std::chrono::milliseconds(0)); }

  int port() const override { return port_; }

  void SetServing(bool serving) override {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    if (health == nullptr) return;
    health->SetServingStatus("", serving);
    health->SetServingStatus(kModuleServiceName, serving);
  }

  void Shutdown(std::chrono::milliseconds deadline) override {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // Metric streams never end on their own: end them first so that they do not hold the
    // shutdown until the deadline. gRPC's Shutdown also turns health to NOT_SERVING.
    service_->StopStreams();
    server_->Shutdown(std::chrono::system_clock::now() + deadline);
    server_->Wait();
  }

 private:
  // Declared before server_: the service must outlive the server that dispatches into it.
  std::unique_ptr<control_rpc::ModuleServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  const int port_;
  std::mutex mu_;
  bool shut_down_ = false;
};

}  // namespace

ControlServer::~ControlServer() = default;

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(
    const ControlServerOptions& options, control::ModuleCore& core) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("control port out of range: ", options.port));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  // Both are process-wide switches read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // The default health service registers no descriptor; naming one of health.proto's messages
  // links our generated copy (from a static library, unreferenced objects are dropped), so that
  // reflection can describe grpc.health.v1.Health.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();

  auto service = std::make_unique<control_rpc::ModuleServiceImpl>(core, options.auth_token);
  const std::string address = ListenAddress(options.host, options.port);
  int bound_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kMinRecvPingIntervalMs);
  // 0 = never count pings as abuse: a client pinging more often than the interval above (tests
  // ping every second) is tolerated instead of sent GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // gRPC sets SO_REUSEPORT by default: a second process on the same port would silently share
  // the control traffic instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", address));
  }
  service->SetAddress(ListenAddress(options.host, bound_port));
  if (grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService()) {
    health->SetServingStatus("", true);
    health->SetServingStatus(kModuleServiceName, true);
  }
  return std::make_unique<ControlServerImpl>(std::move(service), std::move(server), bound_port);
}

}  // namespace ailb::server
