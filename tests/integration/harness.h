// Integration-test harness: runs the real `ailb` binary as a child process and talks to it over
// loopback with libcurl, as a client would.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace ailb::testing {

// A running `ailb`. Its stdout and stderr are collected so tests can wait for and inspect log
// lines. Destruction stops it (SIGTERM, then SIGKILL). Thread-safe.
class AilbProcess {
 public:
  // Starts build/ailb with exactly `env` (plus PATH) and `args`; waits until it serves HTTP.
  // Returns nullptr (after printing its output) when it does not start within 20 s.
  static std::unique_ptr<AilbProcess> Start(std::map<std::string, std::string> env,
                                            std::vector<std::string> args = {});
  // Starts it and waits for it to exit (for start-up failures); returns the exit code and output.
  static std::pair<int, std::string> RunToExit(std::map<std::string, std::string> env,
                                               std::vector<std::string> args = {});
  ~AilbProcess();

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string Url(const std::string& path) const;
  std::string Logs() const;
  bool WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) const;
  void Signal(int signal_number) const;
  // Waits for the process to exit; returns its exit code, or -1 on timeout.
  int WaitForExit(std::chrono::milliseconds timeout);

 private:
  AilbProcess() = default;
  static std::unique_ptr<AilbProcess> Spawn(std::map<std::string, std::string> env,
                                            std::vector<std::string> args);
  void ReadOutput(int fd);

  int pid_ = -1;
  int http_port_ = 0;
  int grpc_port_ = 0;
  int exit_code_ = -1;
  bool exited_ = false;
  std::thread reader_;
  mutable std::mutex mu_;
  std::string output_;
};

struct HttpResult {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string transport_error;                 // empty when the exchange completed
  nlohmann::json Json() const;
  std::string Header(const std::string& lower_name) const;
};

// One HTTP exchange. `headers` as "Name: value" lines.
HttpResult HttpCall(const std::string& method, const std::string& url, const std::string& body = "",
                    const std::vector<std::string>& headers = {"Content-Type: application/json"},
                    long timeout_ms = 30'000);

// A streamed exchange: `on_data` sees each piece as it arrives (return false to hang up).
HttpResult HttpStream(const std::string& url, const std::string& body,
                      const std::function<bool(const std::string&)>& on_data,
                      const std::vector<std::string>& headers = {"Content-Type: application/json"},
                      long timeout_ms = 30'000);

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> SseDataPayloads(const std::string& body);
// Concatenated choices[0].delta.content of streamed chunks.
std::string StreamedContent(const std::string& body);

// A chat request body for `model`.
std::string ChatBody(const std::string& model, bool stream, const nlohmann::json& extra = {});

}  // namespace ailb::testing
