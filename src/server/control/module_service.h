// marchproxy.ModuleService over control::ModuleCore: validates, translates and maps errors; all
// behaviour lives in the core.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "ailb/control/module_core.h"
#include "grpcpp/grpcpp.h"
#include "marchproxy/module_service.grpc.pb.h"

namespace ailb::server::control_rpc {

// Shutdown is a callback-API method so that the core is told to shut down only once the reply
// has gone out (the reactor's OnDone); every other method is synchronous.
using ModuleServiceBase =
    marchproxy::ModuleService::WithCallbackMethod_Shutdown<marchproxy::ModuleService::Service>;

// Thread-safe.
class ModuleServiceImpl final : public ModuleServiceBase {
 public:
  // `auth_token` empty = no authentication.
  ModuleServiceImpl(control::ModuleCore& core, std::string auth_token);
  // Waits for the deferred shutdown request, if one is running on another thread.
  ~ModuleServiceImpl() override;

  // "host:port" reported as the instance address when the core does not know it.
  void SetAddress(std::string address);
  // Ends every StreamMetrics call (they return UNAVAILABLE) and refuses new ones.
  void StopStreams();

  using ModuleServiceBase::Shutdown;

  grpc::Status GetStatus(grpc::ServerContext* context, const marchproxy::GetStatusRequest* request,
                         marchproxy::GetStatusResponse* response) override;
  grpc::Status Reload(grpc::ServerContext* context, const marchproxy::ReloadRequest* request,
                      marchproxy::ReloadResponse* response) override;
  grpc::ServerUnaryReactor* Shutdown(grpc::CallbackServerContext* context,
                                     const marchproxy::ShutdownRequest* request,
                                     marchproxy::ShutdownResponse* response) override;
  grpc::Status CanHandle(grpc::ServerContext* context, const marchproxy::CanHandleRequest* request,
                         marchproxy::CanHandleResponse* response) override;
  grpc::Status GetRoutes(grpc::ServerContext* context, const marchproxy::GetRoutesRequest* request,
                         marchproxy::GetRoutesResponse* response) override;
  grpc::Status UpdateRoutes(grpc::ServerContext* context,
                            const marchproxy::UpdateRoutesRequest* request,
                            marchproxy::UpdateRoutesResponse* response) override;
  grpc::Status DeleteRoute(grpc::ServerContext* context,
                           const marchproxy::DeleteRouteRequest* request,
                           marchproxy::DeleteRouteResponse* response) override;
  grpc::Status GetRateLimits(grpc::ServerContext* context,
                             const marchproxy::GetRateLimitsRequest* request,
                             marchproxy::GetRateLimitsResponse* response) override;
  grpc::Status SetRateLimit(grpc::ServerContext* context,
                            const marchproxy::SetRateLimitRequest* request,
                            marchproxy::SetRateLimitResponse* response) override;
  grpc::Status RemoveRateLimit(grpc::ServerContext* context,
                               const marchproxy::RemoveRateLimitRequest* request,
                               marchproxy::RemoveRateLimitResponse* response) override;
  grpc::Status GetMetrics(grpc::ServerContext* context,
                          const marchproxy::GetMetricsRequest* request,
                          marchproxy::GetMetricsResponse* response) override;
  grpc::Status Scale(grpc::ServerContext* context, const marchproxy::ScaleRequest* request,
                     marchproxy::ScaleResponse* response) override;
  grpc::Status GetInstances(grpc::ServerContext* context,
                            const marchproxy::GetInstancesRequest* request,
                            marchproxy::GetInstancesResponse* response) override;
  grpc::Status SetTrafficWeight(grpc::ServerContext* context,
                                const marchproxy::SetTrafficWeightRequest* request,
                                marchproxy::SetTrafficWeightResponse* response) override;
  grpc::Status GetActiveVersion(grpc::ServerContext* context,
                                const marchproxy::GetActiveVersionRequest* request,
                                marchproxy::GetActiveVersionResponse* response) override;
  grpc::Status Rollback(grpc::ServerContext* context, const marchproxy::RollbackRequest* request,
                        marchproxy::RollbackResponse* response) override;
  grpc::Status PromoteVersion(grpc::ServerContext* context,
                              const marchproxy::PromoteVersionRequest* request,
                              marchproxy::PromoteVersionResponse* response) override;
  grpc::Status HealthCheck(grpc::ServerContext* context,
                           const marchproxy::HealthCheckRequest* request,
                           marchproxy::HealthCheckResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const marchproxy::GetStatsRequest* request,
                        marchproxy::GetStatsResponse* response) override;
  grpc::Status StreamMetrics(
      grpc::ServerContext* context, const marchproxy::StreamMetricsRequest* request,
      grpc::ServerWriter<marchproxy::StreamMetricsResponse>* writer) override;
  grpc::Status GetConfig(grpc::ServerContext* context, const marchproxy::GetConfigRequest* request,
                         marchproxy::GetConfigResponse* response) override;
  grpc::Status UpdateConfig(grpc::ServerContext* context,
                            const marchproxy::UpdateConfigRequest* request,
                            marchproxy::UpdateConfigResponse* response) override;

 private:
  // UNAUTHENTICATED unless the call carries `authorization: Bearer <token>` (when a token is set).
  grpc::Status Authorize(const grpc::ServerContextBase& context) const;
  // NOT_FOUND when `requested` names another instance; empty means this one.
  grpc::Status CheckInstance(const std::string& requested);
  // As CheckInstance, against an id the caller already has.
  grpc::Status CheckInstance(const std::string& requested, const std::string& own) const;
  // The core's current instance id (it follows reloads).
  std::string ModuleId();
  std::string Address() const;
  void FillModuleMetrics(const std::vector<std::string>& names, marchproxy::ModuleMetrics* out);
  void RunAfterReply(std::function<void()> task);

  control::ModuleCore& core_;
  const std::string token_hash_;  // sha256 hex of the token; empty = no authentication

  mutable std::mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
  bool streams_stopped_ ABSL_GUARDED_BY(mu_) = false;
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::condition_variable streams_cv_;
  std::vector<std::thread> deferred_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::server::control_rpc
