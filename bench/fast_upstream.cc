// fast_upstream: a minimal, fast, OpenAI-compatible fake LLM upstream for bench/run.sh.
//
//   fast_upstream [--host 127.0.0.1] [--port 0] [--threads 1] [--reply-bytes 800]
//                 [--chunks 100] [--interval-ms 0]
//
// Prints "listening on <port>" once it accepts connections; serves until SIGTERM/SIGINT.
//
// Why not tests/fakes/fake_llm_server: that one is scriptable (failures, hangs, cut streams) and
// parses every request with nlohmann::json; it peaked at about 19.5k req/s on the 2-core
// development VM. This one does no JSON parsing at all (it looks for a few byte patterns) and
// answers from pre-built buffers, so the upstream is not what limits a proxy benchmark.
//
// Each thread runs its own epoll loop over non-blocking sockets with its own SO_REUSEPORT
// listener; stream intervals use a timer heap and epoll_pwait2 (nanosecond timeouts).
//
// Endpoints (the query string is ignored):
//   GET  .../models            {"object":"list","data":[{"id":"bench",...}]}
//   GET  /healthz              200 ok
//   POST .../chat/completions  a chat.completion of about 1 KB (content = --reply-bytes bytes),
//                              or, when the body contains "stream":true, an SSE stream:
//                              role chunk, N content chunks, a finish chunk, a usage chunk,
//                              data: [DONE]. Every SSE event is its own HTTP chunk and, when the
//                              interval is > 0, its own write(). N and the interval come from
//                              --chunks / --interval-ms, or per request from the body fields
//                              "bench_chunks": N and "bench_interval_ms": N (a proxy forwards
//                              unknown body fields untouched, unlike headers).
//   Every content delta starts with "<T:NNN>" where NNN is CLOCK_MONOTONIC in nanoseconds taken
//   just before the write: the load generator on the same machine computes the per-chunk delay
//   from it, whatever proxy is in between.
//   Anything else: 404.
//
// HTTP/1.1 keep-alive, pipelining, Content-Length or chunked request bodies. No TLS.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

struct Settings {
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 1;
  int reply_bytes = 800;
  int chunks = 100;
  int interval_ms = 0;
};
Settings g_settings;
std::atomic<bool> g_stop{false};

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string Words(size_t n) {
  static constexpr std::string_view kWords =
      "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
      "incididunt ut labore et dolore magna aliqua ";
  std::string out;
  out.reserve(n);
  while (out.size() < n) out.append(kWords.substr(0, std::min(kWords.size(), n - out.size())));
  return out;
}

std::string Response(int status, std::string_view reason, std::string_view type,
                     std::string_view body) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
                    "\r\nContent-Type: " + std::string(type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  out.append(body);
  return out;
}

// Pre-built replies.
std::string g_chat_reply, g_models_reply, g_health_reply, g_not_found;
const std::string kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    "Transfer-Encoding: chunked\r\n\r\n";
const std::string kChunkPrefix =
    R"({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,)"
    R"("model":"bench","choices":[{"index":0,"delta":)";
std::string g_role_event, g_finish_event, g_usage_event, g_done_event, g_piece;

// One SSE event framed as one HTTP chunk.
void AppendChunk(std::string& out, std::string_view event) {
  char size[24];
  int n = snprintf(size, sizeof size, "%zx\r\n", event.size());
  out.append(size, n);
  out.append(event);
  out.append("\r\n");
}

void AppendContentEvent(std::string& out) {
  char stamp[48];
  int n = snprintf(stamp, sizeof stamp, "<T:%lld>", static_cast<long long>(NowNs()));
  std::string event = "data: " + kChunkPrefix + R"({"content":")" + std::string(stamp, n) +
                      g_piece + R"("},"finish_reason":null}]})" + "\n\n";
  AppendChunk(out, event);
}

void BuildReplies() {
  std::string content = Words(g_settings.reply_bytes);
  std::string body =
      R"({"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",)"
      R"("system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant",)"
      R"("content":")" +
      content +
      R"("},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":250,)"
      R"("completion_tokens":180,"total_tokens":430}})";
  g_chat_reply = Response(200, "OK", "application/json", body);
  g_models_reply = Response(
      200, "OK", "application/json",
      R"({"object":"list","data":[{"id":"bench","object":"model","created":1700000000,"owned_by":"bench"}]})");
  g_health_reply = Response(200, "OK", "text/plain", "ok\n");
  g_not_found = Response(404, "Not Found", "application/json",
                         R"({"error":{"message":"not found","type":"invalid_request_error"}})");
  g_role_event = "data: " + kChunkPrefix +
                 R"({"role":"assistant","content":""},"finish_reason":null}]})" + "\n\n";
  g_finish_event = "data: " + kChunkPrefix + R"({},"finish_reason":"stop"}]})" + "\n\n";
  g_usage_event =
      "data: "
      R"({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"bench","choices":[],"usage":{"prompt_tokens":250,"completion_tokens":100,)"
      R"("total_tokens":350}})"
      "\n\n";
  g_done_event = "data: [DONE]\n\n";
  g_piece = " token";
}

// Finds `"name":` (optionally with spaces after the colon) in `body` and parses the integer after
// it; returns `fallback` if absent.
int64_t FindInt(std::string_view body, std::string_view name, int64_t fallback) {
  std::string key;
  key.reserve(name.size() + 2);
  key.push_back('"');
  key.append(name);
  key.push_back('"');
  size_t at = body.find(key);
  if (at == std::string_view::npos) return fallback;
  at += key.size();
  while (at < body.size() && (body[at] == ' ' || body[at] == ':')) ++at;
  int64_t value = 0;
  bool any = false;
  while (at < body.size() && body[at] >= '0' && body[at] <= '9') {
    value = value * 10 + (body[at] - '0');
    any = true;
    ++at;
  }
  return any ? value : fallback;
}

bool StreamRequested(std::string_view body) {
  size_t at = body.find("\"stream\"");
  if (at == std::string_view::npos) return false;
  at += 8;
  while (at < body.size() && (body[at] == ' ' || body[at] == ':')) ++at;
  return body.substr(at, 4) == "true";
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (tolower(static_cast<unsigned char>(a[i])) != tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

struct Conn {
  int fd = -1;
  uint64_t generation = 0;
  std::string in;
  size_t in_off = 0;
  std::string out;
  size_t out_off = 0;
  bool want_out = false;
  bool close_after = false;
  // Streaming state.
  bool streaming = false;
  int chunks_left = 0;
  int64_t interval_ns = 0;
};

struct Timer {
  int64_t at;
  int fd;
  uint64_t generation;
  bool operator>(const Timer& o) const { return at > o.at; }
};

class Loop {
 public:
  explicit Loop(int listen_fd) : listen_fd_(listen_fd) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd_;
    epoll_ctl(ep_, EPOLL_CTL_ADD, listen_fd_, &ev);
  }

  void Run() {
    std::vector<epoll_event> events(1024);
    while (!g_stop.load(std::memory_order_relaxed)) {
      timespec timeout{0, 200 * 1000000};  // re-check g_stop at least every 200 ms
      if (!timers_.empty()) {
        int64_t wait = std::max<int64_t>(0, timers_.top().at - NowNs());
        if (wait < 200 * 1000000) timeout = {wait / 1000000000, wait % 1000000000};
      }
      int n = epoll_pwait2(ep_, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
      if (n < 0 && errno != EINTR) {
        perror("epoll_pwait2");
        return;
      }
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == listen_fd_) {
          Accept();
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        Conn& c = it->second;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
          Close(c);
          continue;
        }
        if (events[i].events & EPOLLOUT) {
          if (!Flush(c)) continue;
        }
        if (events[i].events & EPOLLIN) {
          if (!Read(c)) continue;
        }
      }
      RunTimers();
    }
  }

 private:
  void Accept() {
    while (true) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Conn& c = conns_[fd];
      c = Conn{};
      c.fd = fd;
      c.generation = ++generation_;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd;
      epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    }
  }

  void Close(Conn& c) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    conns_.erase(c.fd);
  }

  // Returns false if the connection was closed.
  bool Read(Conn& c) {
    char buf[65536];
    while (true) {
      ssize_t n = read(c.fd, buf, sizeof buf);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n == 0) {
        Close(c);
        return false;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      Close(c);
      return false;
    }
    return Process(c);
  }

  // Parses and answers every complete request in the buffer (one at a time while a stream runs).
  bool Process(Conn& c) {
    while (!c.streaming && !c.close_after) {
      std::string_view data(c.in);
      data.remove_prefix(c.in_off);
      size_t head_end = data.find("\r\n\r\n");
      if (head_end == std::string_view::npos) break;
      std::string_view head = data.substr(0, head_end);
      size_t line_end = head.find("\r\n");
      std::string_view line = head.substr(0, line_end);
      size_t sp1 = line.find(' ');
      size_t sp2 = line.find(' ', sp1 + 1);
      if (sp1 == std::string_view::npos || sp2 == std::string_view::npos) {
        Close(c);
        return false;
      }
      std::string_view method = line.substr(0, sp1);
      std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
      if (size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
      bool http10 = line.substr(sp2 + 1) == "HTTP/1.0";
      int64_t content_length = 0;
      bool chunked = false;
      bool conn_close = http10;
      size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
      while (pos < head.size()) {
        size_t end = head.find("\r\n", pos);
        if (end == std::string_view::npos) end = head.size();
        std::string_view h = head.substr(pos, end - pos);
        pos = end + 2;
        size_t colon = h.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view name = h.substr(0, colon);
        std::string_view value = h.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (IEquals(name, "content-length")) {
          content_length = strtoll(std::string(value).c_str(), nullptr, 10);
        } else if (IEquals(name, "transfer-encoding")) {
          chunked = value.find("chunked") != std::string_view::npos;
        } else if (IEquals(name, "connection")) {
          if (IEquals(value, "close")) conn_close = true;
          if (IEquals(value, "keep-alive")) conn_close = false;
        } else if (IEquals(name, "expect")) {
          static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
          if (write(c.fd, kContinue, sizeof kContinue - 1) < 0) {
          }
        }
      }
      size_t body_start = head_end + 4;
      std::string body_storage;
      std::string_view body;
      size_t consumed;
      if (chunked) {
        // De-chunk; wait for the terminating chunk.
        size_t p = body_start;
        bool complete = false;
        while (true) {
          size_t le = data.find("\r\n", p);
          if (le == std::string_view::npos) break;
          size_t size = strtoull(std::string(data.substr(p, le - p)).c_str(), nullptr, 16);
          if (size == 0) {
            size_t trailer_end = data.find("\r\n", le + 2);
            if (trailer_end == std::string_view::npos) break;
            // Skip trailers until the empty line.
            size_t q = le + 2;
            while (true) {
              size_t e = data.find("\r\n", q);
              if (e == std::string_view::npos) break;
              if (e == q) {
                p = e + 2;
                complete = true;
                break;
              }
              q = e + 2;
            }
            break;
          }
          if (data.size() < le + 2 + size + 2) break;
          body_storage.append(data.substr(le + 2, size));
          p = le + 2 + size + 2;
        }
        if (!complete) break;
        body = body_storage;
        consumed = p;
      } else {
        if (data.size() < body_start + static_cast<size_t>(content_length)) break;
        body = data.substr(body_start, static_cast<size_t>(content_length));
        consumed = body_start + static_cast<size_t>(content_length);
      }
      c.close_after = conn_close;

      if (method == "POST" && path.ends_with("/chat/completions")) {
        if (StreamRequested(body)) {
          StartStream(c, body);
        } else {
          c.out.append(g_chat_reply);
        }
      } else if (method == "GET" && path.ends_with("/models")) {
        c.out.append(g_models_reply);
      } else if (method == "GET" && (path == "/healthz" || path == "/health")) {
        c.out.append(g_health_reply);
      } else {
        c.out.append(g_not_found);
      }
      c.in_off += consumed;
    }
    if (c.in_off == c.in.size()) {
      c.in.clear();
      c.in_off = 0;
    } else if (c.in_off > 65536) {
      c.in.erase(0, c.in_off);
      c.in_off = 0;
    }
    return Flush(c);
  }

  void StartStream(Conn& c, std::string_view body) {
    c.streaming = true;
    c.chunks_left = static_cast<int>(FindInt(body, "bench_chunks", g_settings.chunks));
    if (c.chunks_left < 1) c.chunks_left = 1;
    c.interval_ns = FindInt(body, "bench_interval_ms", g_settings.interval_ms) * 1000000;
    c.out.append(kStreamHead);
    AppendChunk(c.out, g_role_event);
    if (c.interval_ns == 0) {
      while (c.chunks_left > 0) {
        AppendContentEvent(c.out);
        --c.chunks_left;
      }
      FinishStream(c);
      return;
    }
    AppendContentEvent(c.out);
    --c.chunks_left;
    if (c.chunks_left == 0) {
      FinishStream(c);
      return;
    }
    timers_.push({NowNs() + c.interval_ns, c.fd, c.generation});
  }

  void FinishStream(Conn& c) {
    AppendChunk(c.out, g_finish_event);
    AppendChunk(c.out, g_usage_event);
    AppendChunk(c.out, g_done_event);
    c.out.append("0\r\n\r\n");
    c.streaming = false;
  }

  void RunTimers() {
    int64_t now = NowNs();
    while (!timers_.empty() && timers_.top().at <= now) {
      Timer t = timers_.top();
      timers_.pop();
      auto it = conns_.find(t.fd);
      if (it == conns_.end() || it->second.generation != t.generation) continue;
      Conn& c = it->second;
      AppendContentEvent(c.out);
      --c.chunks_left;
      if (c.chunks_left == 0) {
        FinishStream(c);
      } else {
        timers_.push({t.at + c.interval_ns, c.fd, c.generation});
      }
      if (!Flush(c)) continue;
      if (!c.streaming && !Process(c)) continue;  // pipelined requests waiting behind the stream
      now = NowNs();
    }
  }

  // Writes what it can; returns false if the connection was closed.
  bool Flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t n = write(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!c.want_out) {
          c.want_out = true;
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
          ev.data.fd = c.fd;
          epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        }
        return true;
      }
      Close(c);
      return false;
    }
    c.out.clear();
    c.out_off = 0;
    if (c.want_out) {
      c.want_out = false;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = c.fd;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    }
    if (c.close_after && !c.streaming) {
      shutdown(c.fd, SHUT_WR);
      Close(c);
      return false;
    }
    return true;
  }

  int listen_fd_;
  int ep_;
  uint64_t generation_ = 0;
  std::unordered_map<int, Conn> conns_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
};

int Listen(int port, bool reuse_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, g_settings.host.c_str(), &addr.sin_addr) != 1) {
    fprintf(stderr, "fast_upstream: bad --host %s (IPv4 only)\n", g_settings.host.c_str());
    exit(2);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 65535) != 0) {
    perror("fast_upstream: bind/listen");
    exit(1);
  }
  return fd;
}

void Usage() {
  fprintf(stderr,
          "usage: fast_upstream [--host 127.0.0.1] [--port 0] [--threads 1] [--reply-bytes 800]\n"
          "                     [--chunks 100] [--interval-ms 0]\n");
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      Usage();
      return 2;
    }
    if (arg == "--host") {
      g_settings.host = value;
    } else if (arg == "--port") {
      g_settings.port = atoi(value.c_str());
    } else if (arg == "--threads") {
      g_settings.threads = std::max(1, atoi(value.c_str()));
    } else if (arg == "--reply-bytes") {
      g_settings.reply_bytes = std::max(0, atoi(value.c_str()));
    } else if (arg == "--chunks") {
      g_settings.chunks = std::max(1, atoi(value.c_str()));
    } else if (arg == "--interval-ms") {
      g_settings.interval_ms = std::max(0, atoi(value.c_str()));
    } else {
      Usage();
      return 2;
    }
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  BuildReplies();

  bool reuse = g_settings.threads > 1;
  int first = Listen(g_settings.port, reuse);
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(first, reinterpret_cast<sockaddr*>(&bound), &len);
  int port = ntohs(bound.sin_port);
  std::vector<std::thread> threads;
  for (int t = 0; t < g_settings.threads; ++t) {
    int fd = t == 0 ? first : Listen(port, true);
    threads.emplace_back([fd] { Loop(fd).Run(); });
  }
  printf("listening on %d\n", port);
  fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  g_stop.store(true);
  for (auto& t : threads) t.join();
  return 0;
}
