// ControlServer over FakeModuleCore as a process, for clients outside C++ (the Python reflection
// and keepalive checks in control_client_test.py, or grpcurl by hand).
//
//   control_test_server [--port=N] [--host=H] [--token=T]
//
// Prints "port N" once serving, then runs until stdin closes, SIGTERM/SIGINT, or a Shutdown RPC.
// The token defaults to $AILB_CONTROL_TOKEN.

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "ailb/server/control_server.h"
#include "fakes/fake_module_core.h"

int main(int argc, char** argv) {
  ailb::server::ControlServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  if (const char* token = std::getenv("AILB_CONTROL_TOKEN")) options.auth_token = token;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--port=")) {
      options.port = std::atoi(argv[i] + 7);
    } else if (arg.starts_with("--host=")) {
      options.host = std::string(arg.substr(7));
    } else if (arg.starts_with("--token=")) {
      options.auth_token = std::string(arg.substr(8));
    } else {
      std::cerr << "usage: control_test_server [--port=N] [--host=H] [--token=T]\n";
      return 2;
    }
  }

  // Block the stop signals before any thread starts, so that only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ailb::testing::FakeModuleCore core;
  // A Shutdown RPC ends the process as the real module would.
  core.OnShutdown([](bool, int) { kill(getpid(), SIGTERM); });
  auto started = ailb::server::ControlServer::Start(options, core);
  if (!started.ok()) {
    std::cerr << "control_test_server: " << started.status() << "\n";
    return 1;
  }
  std::unique_ptr<ailb::server::ControlServer> server = std::move(*started);
  std::cout << "port " << server->port() << std::endl;

  // EOF on stdin (the parent went away) stops the server too.
  std::thread stdin_watch([] {
    char buffer[256];
    while (read(STDIN_FILENO, buffer, sizeof(buffer)) > 0) {
    }
    kill(getpid(), SIGTERM);
  });
  stdin_watch.detach();

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->SetServing(false);
  server->Shutdown(std::chrono::seconds(2));
  std::cout << "stopped" << std::endl;
  return 0;
}
