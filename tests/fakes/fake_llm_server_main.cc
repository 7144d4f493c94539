// Standalone fake LLM upstream for benchmarks and manual testing.
//
//   fake_llm_server [--host=127.0.0.1] [--port=0] [--delay-ms=0] [--chunks=3] [--interval-ms=0]
//                   [--reply-bytes=N] [--status=200]
//
// Prints "listening on <port>" on one line once it accepts connections, then serves until SIGTERM
// or SIGINT. Requests are counted but not stored, so long runs do not grow memory.

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "fakes/fake_llm_server.h"

namespace {

constexpr std::string_view kUsage =
    "usage: fake_llm_server [--host=ADDR] [--port=N] [--delay-ms=N] [--chunks=N]\n"
    "                       [--interval-ms=N] [--reply-bytes=N] [--status=N]\n"
    "  --host         address to bind (default 127.0.0.1)\n"
    "  --port         port to bind, 0 = ephemeral (default 0)\n"
    "  --delay-ms     delay before the response headers (default 0)\n"
    "  --chunks       content deltas per streamed reply (default 3)\n"
    "  --interval-ms  delay between stream chunks (default 0)\n"
    "  --reply-bytes  reply text of exactly N bytes (default: a short sentence)\n"
    "  --status       HTTP status to answer with (default 200)\n";

// ASCII text of exactly `n` bytes, made of words.
std::string ReplyOfBytes(size_t n) {
  static constexpr std::string_view kWords =
      "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
      "incididunt ut labore et dolore magna aliqua ";
  std::string out;
  out.reserve(n);
  while (out.size() < n) out.append(kWords.substr(0, std::min(kWords.size(), n - out.size())));
  return out;
}

// A non-negative decimal integer of at most 12 digits.
bool ParseCount(std::string_view text, int64_t* out) {
  if (text.empty() || text.size() > 12) return false;
  int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *out = value;
  return true;
}

// Descriptors are the limit for thousands of concurrent streams: raise the soft limit.
void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ailb::testing::FakeLlmServer::Options options;
  options.record_requests = false;
  ailb::testing::FakeBehavior behavior;

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    } else if (i + 1 < argc) {
      value = argv[++i];
      has_value = true;
    }
    if (!has_value) {
      std::cerr << "missing value for " << name << "\n" << kUsage;
      return 2;
    }
    if (name == "--host") {
      options.host = std::string(value);
      continue;
    }
    int64_t number = 0;
    if (!ParseCount(value, &number)) {
      std::cerr << "bad value for " << name << ": " << value << "\n" << kUsage;
      return 2;
    }
    const int small = static_cast<int>(std::min<int64_t>(number, 1 << 30));
    if (name == "--port") {
      options.port = small;
    } else if (name == "--delay-ms") {
      behavior.delay_before_headers_ms = small;
    } else if (name == "--chunks") {
      behavior.stream_chunks = small;
    } else if (name == "--interval-ms") {
      behavior.chunk_interval_ms = small;
    } else if (name == "--reply-bytes") {
      behavior.reply_text = ReplyOfBytes(static_cast<size_t>(small));
    } else if (name == "--status") {
      behavior.status = small;
    } else {
      std::cerr << "unknown flag " << name << "\n" << kUsage;
      return 2;
    }
  }

  RaiseFileLimit();
  // Block the stop signals before the loop thread starts so that only sigwait() receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto server = ailb::testing::FakeLlmServer::Start(options);
  if (!server.ok()) {
    std::cerr << "fake_llm_server: " << server.status() << "\n";
    return 1;
  }
  (*server)->SetDefaultBehavior(behavior);
  std::cout << "listening on " << (*server)->port() << std::endl;  // flushed

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  (*server)->Stop();
  std::cerr << "fake_llm_server: stopped by signal " << signal_number << " after "
            << (*server)->RequestCount() << " requests\n";
  return 0;
}
