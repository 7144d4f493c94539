#include "ailb/config/reload.h"

#include <cstdint>
#include <string_view>

#include "config/parse_util.h"

namespace ailb::config {
namespace {

using internal::Cat;

std::string Quoted(std::string_view text) { return Cat("\"", text, "\""); }

// Pistache's keep-alive timeout is set once from the start-up total deadline (see bootstrap).
int64_t KeepAliveMs(const Config& config) {
  return static_cast<int64_t>(config.timeouts.total_ms) + 60'000;
}

const std::string& GrpcBindHost(const Config& config) {
  return config.server.grpc_host.empty() ? config.server.host : config.server.grpc_host;
}

class Differ {
 public:
  explicit Differ(std::vector<SettingChange>* changes) : changes_(changes) {}

  void Text(std::string_view name, const std::string& from, const std::string& to) {
    if (from != to) changes_->push_back({std::string(name), Quoted(from), Quoted(to), false});
  }
  void Number(std::string_view name, int64_t from, int64_t to) {
    if (from != to) changes_->push_back({std::string(name), Cat(from), Cat(to), false});
  }
  void Secret(std::string_view name, const std::string& from, const std::string& to) {
    if (from != to) changes_->push_back({std::string(name), "", "", true});
  }

 private:
  std::vector<SettingChange>* changes_;
};

}  // namespace

std::string SettingChange::Describe() const {
  if (secret) return Cat(name, " changed");
  return Cat(name, " changed from ", from, " to ", to);
}

std::string SettingChange::RestartWarning() const {
  return Cat(Describe(), "; takes effect after restart");
}

std::vector<SettingChange> RestartOnlyChanges(const Config& started, const Config& next) {
  std::vector<SettingChange> changes;
  Differ diff(&changes);
  const ServerConfig& a = started.server;
  const ServerConfig& b = next.server;
  // The HTTP listener (bootstrap's HttpServerOptions).
  diff.Text("server.host", a.host, b.host);
  diff.Number("server.http_port", a.http_port, b.http_port);
  diff.Number("server.http_threads", a.http_threads, b.http_threads);
  diff.Number("server.max_body_bytes", a.max_body_bytes, b.max_body_bytes);
  diff.Number("HTTP keep-alive timeout in ms (timeouts.total_ms + 60000)", KeepAliveMs(started),
              KeepAliveMs(next));
  // The control plane (ControlServerOptions, LiveModuleDeps).
  diff.Text("server.grpc_host", GrpcBindHost(started), GrpcBindHost(next));
  diff.Number("server.grpc_port", a.grpc_port, b.grpc_port);
  diff.Secret("AILB_CONTROL_TOKEN", a.control_token, b.control_token);
  diff.Number("server.promotion_interval_ms", a.promotion_interval_ms, b.promotion_interval_ms);
  // Stores and files opened at start; the logger's format.
  diff.Text("data_dir", started.data_dir, next.data_dir);
  diff.Text("log_format", started.log_format, next.log_format);
  return changes;
}

}  // namespace ailb::config
