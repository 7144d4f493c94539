// loadgen: the load generator of bench/run.sh. One thread, epoll, non-blocking sockets,
// HTTP/1.1 keep-alive; no dependency beyond libc. Every run prints ONE JSON line on stdout.
//
//   loadgen max     --url URL [--conns 64] [--duration 10] [--warmup 2]
//   loadgen rate    --url URL --rate 1000 [--duration 20] [--warmup 2] [--conns 32]
//                   [--max-conns 1024] [--split-header NAME]
//   loadgen stream  --url URL [--streams 50] [--conc 1] [--chunks 100] [--interval-ms 1]
//                   [--warmup-streams 5]
//   loadgen hold    --url URL [--streams 2000] [--ramp 1000] [--chunks 30] [--interval-ms 1000]
//                   [--rss-pid PID[,PID...]]
//   loadgen startup --port P [--runs 10] [--idle-ms 1000] [--log FILE] -- COMMAND ARGS...
//   loadgen freeport [N]
// Common: --label NAME (copied to the output), --body-bytes 1024 (size of the JSON request body),
//   --model bench, --extra '"key":value,...' (fields added to the body), --unique-extra
//   '"session_id":"s-%d"' (like --extra, %d replaced by a per-request counter, modulo
//   --unique-mod M when given), --header 'K: V', --close (a new connection for every request:
//   the client closes after each reply and connects again), --content-file FILE (the user
//   message of each request is the next line of FILE instead of filler text).
//
// max:    closed loop. C connections each send the next request as soon as the previous reply
//         is complete; counts replies completed in [warmup, warmup + duration).
// rate:   open loop. Request i is due at t0 + i/R whatever happened before (requests queue for a
//         free connection; the pool grows up to --max-conns). Latency runs from the DUE time to
//         the last byte of the reply, so a stall is charged to every request it delays (no
//         coordinated omission). --split-header NAME also reports latency per value of that
//         reply header (e.g. x-ailb-attempts).
// stream: streaming chat requests ("stream":true, "bench_chunks", "bench_interval_ms" in the
//         body; bench/fast_upstream honours them). Reports time to first byte (request written ->
//         first reply byte), time to first content event, and the per-chunk delay: arrival time
//         minus the CLOCK_MONOTONIC stamp "<T:ns>" the upstream put in each content delta just
//         before writing it. A chunk counts as "batched" when it arrived in the same read() as
//         the previous content chunk although the upstream wrote them > interval/2 apart.
// hold:   opens N streaming requests at --ramp connections per second, each lasting
//         chunks x interval; reports how many completed, every failure by kind, the most streams
//         open at once, and the resident memory (VmRSS, summed over --rss-pid) before and at the
//         peak, per open stream.
// startup: runs COMMAND (environment inherited) --runs times; each time measures exec ->
//         first "GET /healthz" answered 200 on 127.0.0.1:P (polled every 1 ms), then VmRSS after
//         --idle-ms of idling, then SIGTERM.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void Die(const char* fmt, const char* arg = "") {
  fprintf(stderr, "loadgen: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(2);
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string mode;
  std::string label;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/v1/chat/completions";
  int conns = -1;
  int max_conns = 1024;
  double duration = -1;
  double warmup = -1;
  double rate = 1000;
  std::string split_header;
  int streams = -1;
  int conc = 1;
  int chunks = -1;
  int interval_ms = -1;
  int warmup_streams = 5;
  double ramp = 1000;
  std::vector<int> rss_pids;
  int runs = 10;
  int idle_ms = 1000;
  std::string log = "/dev/null";
  int body_bytes = 1024;
  std::string model = "bench";
  std::string extra;
  std::string unique_extra;
  std::vector<std::string> headers;
  std::vector<std::string> command;
  int freeport_count = 1;
  bool close_each = false;  // --close: one request per connection
  int unique_mod = 0;       // --unique-mod M: the --unique-extra counter cycles through 0..M-1
  std::vector<std::string> contents;  // --content-file: user messages, one per line, in turn
};

void ParseUrl(const std::string& url, Options& o) {
  std::string_view u = url;
  if (!u.starts_with("http://")) Die("only http:// URLs: %s", url.c_str());
  u.remove_prefix(7);
  size_t slash = u.find('/');
  std::string_view hostport = u.substr(0, slash);
  o.path = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
  size_t colon = hostport.rfind(':');
  if (colon == std::string_view::npos) Die("URL needs a port: %s", url.c_str());
  o.host = std::string(hostport.substr(0, colon));
  if (o.host == "localhost") o.host = "127.0.0.1";
  o.port = atoi(std::string(hostport.substr(colon + 1)).c_str());
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  if (argc < 2) Die("usage: loadgen MODE [options] (see the top of bench/loadgen.cc)");
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (int j = i + 1; j < argc; ++j) o.command.push_back(argv[j]);
      break;
    }
    if (o.mode == "freeport" && a[0] != '-') {
      o.freeport_count = atoi(a.c_str());
      continue;
    }
    if (a == "--close") {
      o.close_each = true;
      continue;
    }
    std::string v;
    if (size_t eq = a.find('='); eq != std::string::npos && a.starts_with("--")) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      if (i + 1 >= argc) Die("missing value for %s", a.c_str());
      v = argv[++i];
    }
    if (a == "--url")
      ParseUrl(v, o);
    else if (a == "--label")
      o.label = v;
    else if (a == "--port")
      o.port = atoi(v.c_str());
    else if (a == "--conns")
      o.conns = atoi(v.c_str());
    else if (a == "--max-conns")
      o.max_conns = atoi(v.c_str());
    else if (a == "--duration")
      o.duration = atof(v.c_str());
    else if (a == "--warmup")
      o.warmup = atof(v.c_str());
    else if (a == "--rate")
      o.rate = atof(v.c_str());
    else if (a == "--split-header")
      o.split_header = v;
    else if (a == "--streams")
      o.streams = atoi(v.c_str());
    else if (a == "--conc")
      o.conc = atoi(v.c_str());
    else if (a == "--chunks")
      o.chunks = atoi(v.c_str());
    else if (a == "--interval-ms")
      o.interval_ms = atoi(v.c_str());
    else if (a == "--warmup-streams")
      o.warmup_streams = atoi(v.c_str());
    else if (a == "--ramp")
      o.ramp = atof(v.c_str());
    else if (a == "--rss-pid") {
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string item =
            v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!item.empty()) o.rss_pids.push_back(atoi(item.c_str()));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (a == "--runs")
      o.runs = atoi(v.c_str());
    else if (a == "--idle-ms")
      o.idle_ms = atoi(v.c_str());
    else if (a == "--log")
      o.log = v;
    else if (a == "--body-bytes")
      o.body_bytes = atoi(v.c_str());
    else if (a == "--model")
      o.model = v;
    else if (a == "--extra")
      o.extra = v;
    else if (a == "--unique-extra")
      o.unique_extra = v;
    else if (a == "--unique-mod")
      o.unique_mod = atoi(v.c_str());
    else if (a == "--content-file") {
      FILE* f = fopen(v.c_str(), "r");
      if (!f) Die("cannot read %s", v.c_str());
      char line[8192];
      while (fgets(line, sizeof line, f)) {
        std::string text;
        for (char* c = line; *c && *c != '\n'; ++c) {
          if (*c == '"' || *c == '\\') text += '\\';
          if (static_cast<unsigned char>(*c) >= 0x20) text += *c;
        }
        if (!text.empty()) o.contents.push_back(text);
      }
      fclose(f);
      if (o.contents.empty()) Die("no lines in %s", v.c_str());
    } else if (a == "--header")
      o.headers.push_back(v);
    else
      Die("unknown option %s", a.c_str());
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

struct Stats {
  std::vector<int64_t> v;  // nanoseconds
  void Add(int64_t ns) { v.push_back(ns); }
  void Sort() { std::sort(v.begin(), v.end()); }
  // Nearest-rank percentile, in microseconds; NaN when empty. Call Sort() first.
  double PctUs(double p) const {
    if (v.empty()) return NAN;
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    if (rank < 1) rank = 1;
    return static_cast<double>(v[std::min(rank, v.size()) - 1]) / 1000.0;
  }
  double MeanUs() const {
    if (v.empty()) return NAN;
    long double s = 0;
    for (int64_t x : v) s += x;
    return static_cast<double>(s / v.size() / 1000.0L);
  }
};

class Json {
 public:
  Json& Str(const char* k, const std::string& s) {
    Key(k);
    out_ += '"';
    for (char c : s) {
      if (c == '"' || c == '\\') out_ += '\\';
      if (static_cast<unsigned char>(c) < 0x20) continue;
      out_ += c;
    }
    out_ += '"';
    return *this;
  }
  Json& Num(const char* k, double x) {
    Key(k);
    if (std::isnan(x) || std::isinf(x)) {
      out_ += "null";
    } else {
      char b[64];
      snprintf(b, sizeof b, "%.6g", x);
      // %.6g may print 1.23457e+06: fine for JSON, but keep integers readable.
      if (std::fabs(x) < 1e15 && x == std::floor(x))
        snprintf(b, sizeof b, "%.0f", x);
      else if (std::fabs(x) >= 1e5)
        snprintf(b, sizeof b, "%.1f", x);
      out_ += b;
    }
    return *this;
  }
  Json& Pcts(const char* prefix, Stats& s) {
    s.Sort();
    std::string p = prefix;
    Num((p + "_n").c_str(), static_cast<double>(s.v.size()));
    Num((p + "_p50_us").c_str(), s.PctUs(50));
    Num((p + "_p90_us").c_str(), s.PctUs(90));
    Num((p + "_p99_us").c_str(), s.PctUs(99));
    Num((p + "_p999_us").c_str(), s.PctUs(99.9));
    Num((p + "_max_us").c_str(), s.PctUs(100));
    Num((p + "_mean_us").c_str(), s.MeanUs());
    return *this;
  }
  void Print() {
    printf("{%s}\n", out_.c_str());
    fflush(stdout);
  }

 private:
  void Key(const char* k) {
    if (!out_.empty()) out_ += ',';
    out_ += '"';
    out_ += k;
    out_ += "\":";
  }
  std::string out_;
};

long ReadRssKb(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kb = strtol(line + 6, nullptr, 10);
      break;
    }
  }
  fclose(f);
  return kb;
}

long SumRssKb(const std::vector<int>& pids) {
  long sum = 0;
  for (int pid : pids) {
    long kb = ReadRssKb(pid);
    if (kb > 0) sum += kb;
  }
  return sum;
}

void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

const char kFiller[] =
    "Summarise the following notes from the quarterly planning meeting for the infrastructure "
    "team, listing decisions, owners and open questions separately. ";

// `question`, when not empty, is the user message (already JSON-escaped); otherwise the message
// is filler text that brings the body to --body-bytes.
std::string ChatBody(const Options& o, bool stream, const std::string& unique,
                     const std::string& question = "") {
  std::string head = "{\"model\":\"" + o.model +
                     "\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a concise, "
                     "helpful assistant for an engineering team.\"},{\"role\":\"user\","
                     "\"content\":\"";
  std::string tail = "\"}],\"temperature\":0.7,\"max_tokens\":256";
  if (stream) {
    tail += ",\"stream\":true";
    if (o.chunks >= 0) tail += ",\"bench_chunks\":" + std::to_string(o.chunks);
    if (o.interval_ms >= 0) tail += ",\"bench_interval_ms\":" + std::to_string(o.interval_ms);
  }
  if (!o.extra.empty()) tail += "," + o.extra;
  if (!unique.empty()) tail += "," + unique;
  tail += "}";
  if (!question.empty()) return head + question + tail;
  std::string content;
  size_t want = o.body_bytes > static_cast<int>(head.size() + tail.size())
                    ? o.body_bytes - head.size() - tail.size()
                    : 16;
  while (content.size() < want)
    content.append(kFiller, std::min(sizeof kFiller - 1, want - content.size()));
  return head + content + tail;
}

std::string HttpRequest(const Options& o, const std::string& body) {
  std::string r = "POST " + o.path + " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) +
                  "\r\nUser-Agent: ailb-bench-loadgen\r\nAccept: */*\r\n"
                  "Content-Type: application/json\r\nConnection: keep-alive\r\n";
  for (const std::string& h : o.headers) r += h + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  return r;
}

// A per-request body when --unique-extra or --content-file is used, else the same request
// every time.
class RequestSource {
 public:
  RequestSource(const Options& o, bool stream) : o_(o), stream_(stream) {
    if (o.unique_extra.empty() && o.contents.empty())
      fixed_ = HttpRequest(o, ChatBody(o, stream, ""));
  }
  const std::string& Next() {
    if (o_.unique_extra.empty() && o_.contents.empty()) return fixed_;
    const int count = counter_++;
    char buf[512] = "";
    if (!o_.unique_extra.empty()) {
      int n = o_.unique_mod > 0 ? count % o_.unique_mod : count;
      snprintf(buf, sizeof buf, o_.unique_extra.c_str(), n);
    }
    const std::string question =
        o_.contents.empty() ? "" : o_.contents[static_cast<size_t>(count) % o_.contents.size()];
    scratch_ = HttpRequest(o_, ChatBody(o_, stream_, buf, question));
    return scratch_;
  }

 private:
  const Options& o_;
  bool stream_;
  std::string fixed_, scratch_;
  int counter_ = 0;
};

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response parsing (incremental) and the SSE view of a body

struct StreamObserver {
  virtual ~StreamObserver() = default;
  // A complete SSE event (text between blank lines) that arrived in read number `read_id`.
  virtual void OnEvent(std::string_view event, int64_t now, uint64_t read_id) = 0;
};

class ResponseParser {
 public:
  enum class Result { kNeedMore, kDone, kError };

  void Reset() {
    state_ = State::kHead;
    status_ = 0;
    remaining_ = 0;
    close_ = false;
    captured_.clear();
    sse_.clear();
    head_scan_ = 0;
  }
  void set_capture(const std::string& name) { capture_ = name; }
  void set_observer(StreamObserver* o) { observer_ = o; }

  int status() const { return status_; }
  bool close() const { return close_; }
  const std::string& captured() const { return captured_; }
  bool until_close() const { return state_ == State::kUntilClose; }

  // Consumes bytes from buf starting at *pos; returns kDone when a whole response was read
  // (*pos is just past it).
  Result Feed(const std::string& buf, size_t* pos, int64_t now, uint64_t read_id) {
    while (*pos < buf.size() || state_ == State::kDoneState) {
      switch (state_) {
        case State::kHead: {
          size_t from = std::max(*pos, head_scan_ > 3 ? head_scan_ - 3 : *pos);
          size_t end = buf.find("\r\n\r\n", from);
          if (end == std::string::npos) {
            head_scan_ = buf.size();
            return Result::kNeedMore;
          }
          if (!ParseHead(std::string_view(buf).substr(*pos, end - *pos))) return Result::kError;
          *pos = end + 4;
          head_scan_ = 0;
          break;
        }
        case State::kBodyLen: {
          size_t take = std::min<size_t>(remaining_, buf.size() - *pos);
          Body(std::string_view(buf).substr(*pos, take), now, read_id);
          *pos += take;
          remaining_ -= take;
          if (remaining_ == 0) state_ = State::kDoneState;
          break;
        }
        case State::kChunkSize: {
          size_t end = buf.find("\r\n", *pos);
          if (end == std::string::npos) return Result::kNeedMore;
          char* stop = nullptr;
          std::string line = buf.substr(*pos, end - *pos);
          remaining_ = strtoull(line.c_str(), &stop, 16);
          if (stop == line.c_str()) return Result::kError;
          *pos = end + 2;
          state_ = remaining_ == 0 ? State::kTrailer : State::kChunkData;
          break;
        }
        case State::kChunkData: {
          size_t take = std::min<size_t>(remaining_, buf.size() - *pos);
          Body(std::string_view(buf).substr(*pos, take), now, read_id);
          *pos += take;
          remaining_ -= take;
          if (remaining_ == 0) state_ = State::kChunkEnd;
          break;
        }
        case State::kChunkEnd: {
          if (buf.size() - *pos < 2) return Result::kNeedMore;
          if (buf.compare(*pos, 2, "\r\n") != 0) return Result::kError;
          *pos += 2;
          state_ = State::kChunkSize;
          break;
        }
        case State::kTrailer: {
          size_t end = buf.find("\r\n", *pos);
          if (end == std::string::npos) return Result::kNeedMore;
          bool empty = end == *pos;
          *pos = end + 2;
          if (empty) state_ = State::kDoneState;
          break;
        }
        case State::kUntilClose: {
          Body(std::string_view(buf).substr(*pos), now, read_id);
          *pos = buf.size();
          break;
        }
        case State::kDoneState:
          state_ = State::kHead;
          return Result::kDone;
      }
    }
    return Result::kNeedMore;
  }

  // At EOF: a close-delimited body ends here.
  Result Eof(int64_t now, uint64_t read_id) {
    if (state_ == State::kUntilClose) {
      Body("", now, read_id);
      state_ = State::kHead;
      return Result::kDone;
    }
    return Result::kError;
  }

 private:
  enum class State {
    kHead,
    kBodyLen,
    kChunkSize,
    kChunkData,
    kChunkEnd,
    kTrailer,
    kUntilClose,
    kDoneState
  };

  static bool IEq(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (tolower(static_cast<unsigned char>(a[i])) != tolower(static_cast<unsigned char>(b[i])))
        return false;
    return true;
  }

  bool ParseHead(std::string_view head) {
    if (!head.starts_with("HTTP/1.")) return false;
    bool http10 = head.starts_with("HTTP/1.0");
    size_t sp = head.find(' ');
    if (sp == std::string_view::npos) return false;
    status_ = atoi(std::string(head.substr(sp + 1, 3)).c_str());
    bool chunked = false;
    bool has_length = false;
    close_ = http10;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      pos += 2;
      size_t end = head.find("\r\n", pos);
      std::string_view h =
          head.substr(pos, end == std::string_view::npos ? head.size() - pos : end - pos);
      pos = end;
      size_t colon = h.find(':');
      if (colon == std::string_view::npos) continue;
      std::string_view name = h.substr(0, colon);
      std::string_view value = h.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (IEq(name, "content-length")) {
        remaining_ = strtoull(std::string(value).c_str(), nullptr, 10);
        has_length = true;
      } else if (IEq(name, "transfer-encoding")) {
        chunked = value.find("chunked") != std::string_view::npos;
      } else if (IEq(name, "connection")) {
        if (IEq(value, "close"))
          close_ = true;
        else if (IEq(value, "keep-alive"))
          close_ = false;
      }
      if (!capture_.empty() && IEq(name, capture_)) captured_ = std::string(value);
    }
    if (status_ == 204 || status_ == 304) {
      state_ = State::kDoneState;
    } else if (chunked) {
      state_ = State::kChunkSize;
    } else if (has_length) {
      state_ = remaining_ == 0 ? State::kDoneState : State::kBodyLen;
    } else {
      state_ = State::kUntilClose;
      close_ = true;
    }
    return true;
  }

  void Body(std::string_view data, int64_t now, uint64_t read_id) {
    if (!observer_) return;
    sse_.append(data);
    size_t start = 0;
    while (true) {
      size_t end = sse_.find("\n\n", start);
      if (end == std::string::npos) break;
      observer_->OnEvent(std::string_view(sse_).substr(start, end - start), now, read_id);
      start = end + 2;
    }
    sse_.erase(0, start);
  }

  State state_ = State::kHead;
  int status_ = 0;
  uint64_t remaining_ = 0;
  bool close_ = false;
  size_t head_scan_ = 0;
  std::string capture_;
  std::string captured_;
  std::string sse_;
  StreamObserver* observer_ = nullptr;
};

// Parses the "<T:ns>" stamp of a content event; 0 if none.
int64_t StampOf(std::string_view event) {
  size_t at = event.find("<T:");
  if (at == std::string_view::npos) return 0;
  return strtoll(std::string(event.substr(at + 3, 20)).c_str(), nullptr, 10);
}

// ---------------------------------------------------------------------------------------------
// Connections and the event loop

struct Conn {
  int fd = -1;
  bool connecting = false;
  bool busy = false;  // a request is in flight
  std::string out;
  size_t out_off = 0;
  std::string in;
  size_t in_pos = 0;
  uint64_t reads = 0;
  ResponseParser parser;
  // Request metadata.
  int64_t intended = 0;
  int64_t sent = 0;
  int64_t first_byte = 0;
  int id = 0;
};

class Loop {
 public:
  Loop() { ep_ = epoll_create1(EPOLL_CLOEXEC); }

  // Starts a non-blocking connect; returns false if the socket could not even be created.
  bool Connect(Conn& c, const Options& o) {
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return false;
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(o.port));
    inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr);
    int r = connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (r != 0 && errno != EINPROGRESS) {
      close(c.fd);
      c.fd = -1;
      return false;
    }
    c.connecting = true;
    c.in.clear();
    c.in_pos = 0;
    c.out.clear();
    c.out_off = 0;
    c.parser.Reset();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
    return true;
  }

  void Close(Conn& c) {
    if (c.fd < 0) return;
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    c.connecting = false;
    c.busy = false;
  }

  // Queues `request` on `c` and writes what the socket takes.
  bool Send(Conn& c, const std::string& request, int64_t now) {
    c.out = request;
    c.out_off = 0;
    c.busy = true;
    c.sent = now;
    c.first_byte = 0;
    c.parser.Reset();
    return Flush(c);
  }

  bool Flush(Conn& c) {
    if (c.connecting) return true;
    while (c.out_off < c.out.size()) {
      ssize_t n = write(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        SetWantOut(c, true);
        return true;
      } else {
        return false;
      }
    }
    SetWantOut(c, false);
    return true;
  }

  void SetWantOut(Conn& c, bool on) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? static_cast<uint32_t>(EPOLLOUT) : 0u);
    ev.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  // Waits for events until `deadline_ns` (absolute, CLOCK_MONOTONIC) at the latest.
  int Wait(int64_t deadline_ns, std::vector<epoll_event>& events) {
    int64_t wait = std::max<int64_t>(0, deadline_ns - NowNs());
    timespec ts{wait / 1000000000, wait % 1000000000};
    int n = epoll_pwait2(ep_, events.data(), static_cast<int>(events.size()), &ts, nullptr);
    return n < 0 ? 0 : n;
  }

 private:
  int ep_;
};

// What happened on a connection after an event.
enum class Outcome { kNothing, kConnected, kConnectFailed, kResponse, kError };

// Handles one epoll event for a connection: finishes a connect, writes, reads and parses.
// On kResponse the response is complete (c.parser holds status/captured header).
Outcome HandleEvent(Loop& loop, Conn& c, uint32_t events, int64_t* done_at) {
  if (c.connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) return Outcome::kConnectFailed;
    if (!(events & EPOLLOUT)) return Outcome::kNothing;
    c.connecting = false;
    loop.SetWantOut(c, false);
    return Outcome::kConnected;
  }
  if (events & EPOLLOUT) {
    if (!loop.Flush(c)) return Outcome::kError;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    char buf[65536];
    bool eof = false;
    while (true) {
      ssize_t n = read(c.fd, buf, sizeof buf);
      if (n > 0) {
        int64_t now = NowNs();
        if (!c.busy) return Outcome::kError;  // bytes nobody asked for: a broken exchange
        if (c.first_byte == 0) c.first_byte = now;
        ++c.reads;
        c.in.append(buf, static_cast<size_t>(n));
        auto r = c.parser.Feed(c.in, &c.in_pos, now, c.reads);
        if (r == ResponseParser::Result::kError) return Outcome::kError;
        if (c.in_pos == c.in.size()) {
          c.in.clear();
          c.in_pos = 0;
        }
        if (r == ResponseParser::Result::kDone) {
          *done_at = now;
          return Outcome::kResponse;
        }
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n == 0) {
        eof = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return Outcome::kError;
    }
    if (eof) {
      if (c.busy && c.parser.until_close()) {
        c.parser.Eof(NowNs(), c.reads);
        *done_at = NowNs();
        return Outcome::kResponse;
      }
      return Outcome::kError;
    }
  }
  return Outcome::kNothing;
}

// ---------------------------------------------------------------------------------------------
// Mode: max (closed loop)

int RunMax(const Options& o) {
  int conns = o.conns > 0 ? o.conns : 64;
  double duration = o.duration > 0 ? o.duration : 10;
  double warmup = o.warmup >= 0 ? o.warmup : 2;
  Loop loop;
  RequestSource source(o, false);
  std::vector<std::unique_ptr<Conn>> pool;
  for (int i = 0; i < conns; ++i) {
    pool.push_back(std::make_unique<Conn>());
    if (!loop.Connect(*pool.back(), o)) Die("cannot create socket");
  }
  const int64_t start = NowNs();
  const int64_t measure_from = start + static_cast<int64_t>(warmup * 1e9);
  const int64_t measure_to = measure_from + static_cast<int64_t>(duration * 1e9);
  uint64_t completed = 0, non2xx = 0, errors = 0, reconnects = 0;
  Stats latency;
  std::vector<epoll_event> events(1024);
  while (NowNs() < measure_to) {
    int n = loop.Wait(measure_to, events);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      int64_t done = 0;
      Outcome out = HandleEvent(loop, c, events[i].events, &done);
      bool in_window = false;
      switch (out) {
        case Outcome::kNothing:
          break;
        case Outcome::kConnected:
          if (!loop.Send(c, source.Next(), NowNs())) goto failed;
          break;
        case Outcome::kResponse:
          in_window = done >= measure_from && done < measure_to;
          if (in_window) {
            ++completed;
            if (c.parser.status() < 200 || c.parser.status() > 299)
              ++non2xx;
            else
              latency.Add(done - c.sent);
          }
          if (c.parser.close() || o.close_each) {
            loop.Close(c);
            ++reconnects;
            loop.Connect(c, o);
            break;
          }
          if (!loop.Send(c, source.Next(), NowNs())) goto failed;
          break;
        case Outcome::kConnectFailed:
        case Outcome::kError:
        failed : {
          int64_t now = NowNs();
          if (now >= measure_from && now < measure_to) ++errors;
          loop.Close(c);
          ++reconnects;
          if (!loop.Connect(c, o)) Die("cannot create socket");
          break;
        }
      }
    }
  }
  Json j;
  j.Str("mode", "max").Str("label", o.label).Num("conns", conns).Num("duration_s", duration);
  j.Num("requests", static_cast<double>(completed));
  j.Num("rps", static_cast<double>(completed - non2xx) / duration);  // 2xx replies only
  j.Num("rps_all", static_cast<double>(completed) / duration);
  j.Num("non2xx", static_cast<double>(non2xx)).Num("errors", static_cast<double>(errors));
  j.Num("reconnects", static_cast<double>(reconnects));
  j.Pcts("lat", latency);
  j.Print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Mode: rate (open loop, latency from the intended send time)

int RunRate(const Options& o) {
  const double duration = o.duration > 0 ? o.duration : 20;
  const double warmup = o.warmup >= 0 ? o.warmup : 2;
  const int initial = o.conns > 0 ? o.conns : 32;
  const int64_t period = static_cast<int64_t>(1e9 / o.rate);
  const int64_t total = static_cast<int64_t>((duration + warmup) * o.rate);
  const int64_t warm_count = static_cast<int64_t>(warmup * o.rate);
  Loop loop;
  RequestSource source(o, false);
  std::vector<std::unique_ptr<Conn>> pool;
  std::vector<Conn*> idle;
  int connecting = 0;
  auto open_one = [&]() {
    pool.push_back(std::make_unique<Conn>());
    pool.back()->id = static_cast<int>(pool.size()) - 1;
    pool.back()->parser.set_capture(o.split_header);
    if (!loop.Connect(*pool.back(), o)) Die("cannot create socket");
    ++connecting;
  };
  for (int i = 0; i < initial; ++i) open_one();
  std::vector<epoll_event> events(1024);
  // Let the initial connections establish before the clock starts.
  int64_t settle = NowNs() + 500000000;
  while (connecting > 0 && NowNs() < settle) {
    int n = loop.Wait(settle, events);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      int64_t done = 0;
      Outcome out = HandleEvent(loop, c, events[i].events, &done);
      if (out == Outcome::kConnected) {
        --connecting;
        idle.push_back(&c);
      } else if (out == Outcome::kConnectFailed) {
        Die("cannot connect to %s", o.host.c_str());
      }
    }
  }

  std::deque<std::pair<int64_t, int64_t>> pending;  // (index, intended time)
  std::vector<int64_t> index_of(0);
  const int64_t t0 = NowNs() + 1000000;
  int64_t next = 0;
  int64_t finished = 0;
  uint64_t errors = 0, non2xx = 0;
  Stats latency, service;
  std::map<std::string, Stats> split;
  std::map<Conn*, int64_t> inflight_index;
  // Requests still unanswered 10 s after the last one was due count as errors.
  const int64_t hard_end = t0 + static_cast<int64_t>((duration + warmup + 10) * 1e9);

  auto record = [&](Conn& c, int64_t done, bool ok) {
    auto found = inflight_index.find(&c);
    if (found == inflight_index.end()) return;
    int64_t idx = found->second;
    inflight_index.erase(found);
    ++finished;
    if (idx < warm_count) return;
    if (!ok) {
      ++errors;
      return;
    }
    if (c.parser.status() < 200 || c.parser.status() > 299) {
      ++non2xx;  // counted, but not in the latency figures (an error reply can be fast)
      return;
    }
    latency.Add(done - c.intended);
    service.Add(done - c.sent);
    if (!o.split_header.empty()) split[c.parser.captured()].Add(done - c.intended);
  };

  while (finished < total && NowNs() < hard_end) {
    int64_t now = NowNs();
    while (next < total && t0 + next * period <= now) {
      pending.emplace_back(next, t0 + next * period);
      ++next;
    }
    while (!pending.empty() && !idle.empty()) {
      Conn* c = idle.back();
      idle.pop_back();
      c->intended = pending.front().second;
      inflight_index[c] = pending.front().first;
      pending.pop_front();
      if (!loop.Send(*c, source.Next(), NowNs())) {
        record(*c, NowNs(), false);
        loop.Close(*c);
        loop.Connect(*c, o);
        ++connecting;
      }
    }
    if (!pending.empty() && idle.empty() && connecting == 0 &&
        static_cast<int>(pool.size()) < o.max_conns) {
      open_one();
    }
    int64_t wake = next < total ? t0 + next * period : hard_end;
    int n = loop.Wait(pending.empty() ? wake : std::min(wake, NowNs() + 1000000), events);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      int64_t done = 0;
      Outcome out = HandleEvent(loop, c, events[i].events, &done);
      switch (out) {
        case Outcome::kNothing:
          break;
        case Outcome::kConnected:
          --connecting;
          idle.push_back(&c);
          break;
        case Outcome::kResponse:
          c.busy = false;
          record(c, done, true);
          if (c.parser.close() || o.close_each) {
            loop.Close(c);
            loop.Connect(c, o);
            ++connecting;
          } else {
            idle.push_back(&c);
          }
          break;
        case Outcome::kConnectFailed:
        case Outcome::kError:
          if (c.connecting) --connecting;
          if (c.busy) record(c, NowNs(), false);
          loop.Close(c);
          if (!loop.Connect(c, o)) Die("cannot create socket");
          ++connecting;
          break;
      }
    }
  }
  uint64_t unfinished = finished < total ? static_cast<uint64_t>(total - finished) : 0;
  Json j;
  j.Str("mode", "rate").Str("label", o.label).Num("rate", o.rate).Num("duration_s", duration);
  j.Num("sent", static_cast<double>(total - warm_count));
  j.Num("errors", static_cast<double>(errors + unfinished))
      .Num("non2xx", static_cast<double>(non2xx));
  j.Num("conns_used", static_cast<double>(pool.size()));
  j.Pcts("lat", latency);
  j.Pcts("svc", service);
  for (auto& [value, stats] : split) {
    std::string prefix = "split_" + (value.empty() ? std::string("none") : value);
    for (char& ch : prefix)
      if (!isalnum(static_cast<unsigned char>(ch)) && ch != '_') ch = '_';
    j.Pcts(prefix.c_str(), stats);
  }
  j.Print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Mode: stream (TTFB and per-chunk delay)

struct StreamStats : StreamObserver {
  int64_t interval_ns = 0;
  // Per request state.
  int64_t sent = 0;
  int64_t first_event = 0;
  uint64_t last_read = 0;
  int64_t last_stamp = 0;
  int64_t last_arrival = 0;
  int content_events = 0;
  bool done = false;
  bool recording = true;
  // Totals.
  Stats chunk_delay, gaps;
  uint64_t batched = 0, content_total = 0;

  void Begin(int64_t now, bool record) {
    sent = now;
    first_event = 0;
    last_read = 0;
    last_stamp = 0;
    last_arrival = 0;
    content_events = 0;
    done = false;
    recording = record;
  }
  void OnEvent(std::string_view event, int64_t now, uint64_t read_id) override {
    if (event.find("[DONE]") != std::string_view::npos) {
      done = true;
      return;
    }
    int64_t stamp = StampOf(event);
    if (stamp == 0) return;
    if (first_event == 0) first_event = now;
    ++content_events;
    if (!recording) return;
    ++content_total;
    chunk_delay.Add(now - stamp);
    if (last_stamp != 0) {
      gaps.Add(now - last_arrival);
      if (read_id == last_read && stamp - last_stamp > interval_ns / 2 && interval_ns > 0)
        ++batched;
    }
    last_read = read_id;
    last_stamp = stamp;
    last_arrival = now;
  }
};

int RunStream(const Options& o_in) {
  Options o = o_in;
  if (o.chunks < 0) o.chunks = 100;
  if (o.interval_ms < 0) o.interval_ms = 1;
  const int streams = o.streams > 0 ? o.streams : 50;
  const int conc = std::max(1, o.conc);
  Loop loop;
  RequestSource source(o, true);
  std::vector<std::unique_ptr<Conn>> pool;
  std::vector<std::unique_ptr<StreamStats>> observers;
  Stats ttfb, ttft;
  Stats all_delay, all_gaps;
  uint64_t batched = 0, content_total = 0, errors = 0, non200 = 0, missing = 0;
  int started = 0, finished = 0;
  for (int i = 0; i < conc; ++i) {
    pool.push_back(std::make_unique<Conn>());
    observers.push_back(std::make_unique<StreamStats>());
    observers.back()->interval_ns = int64_t(o.interval_ms) * 1000000;
    pool.back()->parser.set_observer(observers.back().get());
    pool.back()->id = i;
    loop.Connect(*pool.back(), o);
  }
  auto start_next = [&](Conn& c) -> bool {
    if (started >= streams) return false;
    StreamStats& s = *observers[c.id];
    int64_t now = NowNs();
    s.Begin(now, started >= o.warmup_streams);
    ++started;
    c.parser.set_observer(&s);
    return loop.Send(c, source.Next(), now);
  };
  std::vector<epoll_event> events(256);
  const int64_t hard_end =
      NowNs() + (int64_t(streams) * (o.chunks * o.interval_ms + 1000) / conc + 30000) * 1000000LL;
  while (finished < streams && NowNs() < hard_end) {
    int n = loop.Wait(NowNs() + 100000000, events);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      StreamStats& s = *observers[c.id];
      int64_t done = 0;
      Outcome out = HandleEvent(loop, c, events[i].events, &done);
      switch (out) {
        case Outcome::kNothing:
          break;
        case Outcome::kConnected:
          start_next(c);
          break;
        case Outcome::kResponse: {
          c.busy = false;
          ++finished;
          if (s.recording) {
            if (c.parser.status() != 200) ++non200;
            ttfb.Add(c.first_byte - s.sent);
            if (s.first_event) ttft.Add(s.first_event - s.sent);
            if (!s.done || s.content_events != o.chunks) {
              ++errors;
              missing += static_cast<uint64_t>(std::max(0, o.chunks - s.content_events));
            }
          }
          if (c.parser.close() || o.close_each) {
            loop.Close(c);
            loop.Connect(c, o);
          } else {
            start_next(c);
          }
          break;
        }
        case Outcome::kConnectFailed:
        case Outcome::kError:
          if (c.busy) {
            ++finished;
            if (s.recording) ++errors;
          }
          loop.Close(c);
          loop.Connect(c, o);
          break;
      }
    }
  }
  for (auto& s : observers) {
    all_delay.v.insert(all_delay.v.end(), s->chunk_delay.v.begin(), s->chunk_delay.v.end());
    all_gaps.v.insert(all_gaps.v.end(), s->gaps.v.begin(), s->gaps.v.end());
    batched += s->batched;
    content_total += s->content_total;
  }
  Json j;
  j.Str("mode", "stream").Str("label", o.label).Num("streams", streams - o.warmup_streams);
  j.Num("conc", conc).Num("chunks", o.chunks).Num("interval_ms", o.interval_ms);
  j.Num("errors", static_cast<double>(errors + (streams - finished)));
  j.Num("non200", static_cast<double>(non200));
  j.Num("missing_chunks", static_cast<double>(missing));
  j.Num("content_chunks", static_cast<double>(content_total));
  j.Num("batched_chunks", static_cast<double>(batched));
  j.Pcts("ttfb", ttfb);
  j.Pcts("ttft", ttft);
  j.Pcts("chunk", all_delay);
  j.Pcts("gap", all_gaps);
  j.Print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Mode: hold (N concurrent long streams)

struct HoldStream : StreamObserver {
  int64_t interval_ns = 0;
  int events = 0;
  bool done = false;
  bool headers = false;
  Stats* delays = nullptr;
  void OnEvent(std::string_view event, int64_t now, uint64_t) override {
    if (event.find("[DONE]") != std::string_view::npos) {
      done = true;
      return;
    }
    int64_t stamp = StampOf(event);
    if (stamp == 0) return;
    ++events;
    if (delays) delays->Add(now - stamp);
  }
};

int RunHold(const Options& o_in) {
  Options o = o_in;
  if (o.chunks < 0) o.chunks = 30;
  if (o.interval_ms < 0) o.interval_ms = 1000;
  const int n_streams = o.streams > 0 ? o.streams : 2000;
  RaiseFileLimit();
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  Loop loop;
  RequestSource source(o, true);
  std::vector<std::unique_ptr<Conn>> conns(n_streams);
  std::vector<std::unique_ptr<HoldStream>> obs(n_streams);
  Stats delays;
  enum class Fate { kPending, kDone, kConnectFailed, kStatus, kCut, kIncomplete, kTimeout };
  std::vector<Fate> fate(n_streams, Fate::kPending);
  const long rss_before = SumRssKb(o.rss_pids);
  long rss_peak = rss_before;
  int opened = 0, live = 0, max_live = 0, finished = 0;
  const int64_t start = NowNs();
  const int64_t ramp_ns = static_cast<int64_t>(1e9 / o.ramp);
  const int64_t stream_ns = int64_t(o.chunks) * o.interval_ms * 1000000LL;
  const int64_t hard_end = start + int64_t(n_streams) * ramp_ns + stream_ns + 30000000000LL;
  int64_t next_rss = start;
  int64_t all_open_at = 0;
  long rss_all_open = -1;
  std::vector<epoll_event> events(4096);

  auto finish = [&](int i, Fate f) {
    if (fate[i] != Fate::kPending) return;
    fate[i] = f;
    ++finished;
    if (obs[i]->headers) --live;
    loop.Close(*conns[i]);
  };

  while (finished < n_streams && NowNs() < hard_end) {
    int64_t now = NowNs();
    while (opened < n_streams && start + opened * ramp_ns <= now) {
      int i = opened++;
      conns[i] = std::make_unique<Conn>();
      conns[i]->id = i;
      obs[i] = std::make_unique<HoldStream>();
      obs[i]->delays = &delays;
      conns[i]->parser.set_observer(obs[i].get());
      if (!loop.Connect(*conns[i], o)) {
        fate[i] = Fate::kConnectFailed;
        ++finished;
      }
    }
    if (now >= next_rss) {
      long rss = SumRssKb(o.rss_pids);
      rss_peak = std::max(rss_peak, rss);
      next_rss = now + 250000000;
    }
    int64_t wake = opened < n_streams ? start + opened * ramp_ns : now + 50000000;
    int n = loop.Wait(std::min(wake, next_rss), events);
    for (int k = 0; k < n; ++k) {
      Conn& c = *static_cast<Conn*>(events[k].data.ptr);
      HoldStream& s = *obs[c.id];
      int64_t done = 0;
      Outcome out = HandleEvent(loop, c, events[k].events, &done);
      switch (out) {
        case Outcome::kNothing:
          break;
        case Outcome::kConnected:
          if (!loop.Send(c, source.Next(), NowNs())) finish(c.id, Fate::kCut);
          break;
        case Outcome::kResponse:
          if (c.parser.status() != 200)
            finish(c.id, Fate::kStatus);
          else if (!s.done || s.events != o.chunks)
            finish(c.id, Fate::kIncomplete);
          else
            finish(c.id, Fate::kDone);
          break;
        case Outcome::kConnectFailed:
          finish(c.id, Fate::kConnectFailed);
          break;
        case Outcome::kError:
          finish(c.id, Fate::kCut);
          break;
      }
      if (fate[c.id] == Fate::kPending && !s.headers && c.first_byte != 0) {
        s.headers = true;
        ++live;
        if (live > max_live) max_live = live;
        if (live == n_streams && all_open_at == 0) {
          all_open_at = NowNs();
          // Let every stream's first chunk settle, then sample memory with all open.
          rss_all_open = SumRssKb(o.rss_pids);
        }
      }
    }
  }
  for (int i = 0; i < n_streams; ++i)
    if (fate[i] == Fate::kPending) finish(i, Fate::kTimeout);
  // Sample once more a moment after the all-open instant if we got there (first chunks flowing).
  int counts[7] = {0};
  for (Fate f : fate) ++counts[static_cast<int>(f)];
  const int errors = n_streams - counts[static_cast<int>(Fate::kDone)];
  Json j;
  j.Str("mode", "hold").Str("label", o.label).Num("streams", n_streams);
  j.Num("chunks", o.chunks).Num("interval_ms", o.interval_ms).Num("ramp_per_s", o.ramp);
  j.Num("fd_limit", static_cast<double>(rl.rlim_cur));
  j.Num("completed", counts[static_cast<int>(Fate::kDone)]);
  j.Num("errors", errors);
  j.Num("err_connect", counts[static_cast<int>(Fate::kConnectFailed)]);
  j.Num("err_status", counts[static_cast<int>(Fate::kStatus)]);
  j.Num("err_cut", counts[static_cast<int>(Fate::kCut)]);
  j.Num("err_incomplete", counts[static_cast<int>(Fate::kIncomplete)]);
  j.Num("err_timeout", counts[static_cast<int>(Fate::kTimeout)]);
  j.Num("max_open", max_live);
  j.Num("all_open", all_open_at != 0 ? 1 : 0);
  j.Num("rss_before_kb", static_cast<double>(rss_before));
  j.Num("rss_peak_kb", static_cast<double>(rss_peak));
  j.Num("rss_all_open_kb", static_cast<double>(rss_all_open));
  j.Num("rss_per_stream_kb",
        o.rss_pids.empty() || max_live == 0
            ? NAN
            : static_cast<double>(rss_peak - rss_before) / static_cast<double>(max_live));
  j.Num("elapsed_s", static_cast<double>(NowNs() - start) / 1e9);
  j.Pcts("chunk", delays);
  j.Print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Mode: startup

// One blocking GET /healthz on 127.0.0.1:port with a short timeout; returns the status or -1.
int HealthStatus(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, req, sizeof req - 1) != static_cast<ssize_t>(sizeof req - 1)) {
    close(fd);
    return -1;
  }
  char buf[64] = {0};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 12 || strncmp(buf, "HTTP/1.", 7) != 0) return -1;
  return atoi(buf + 9);
}

int RunStartup(const Options& o) {
  if (o.command.empty() || o.port <= 0) Die("startup needs --port P -- COMMAND ...");
  Stats startup;
  std::vector<long> rss;
  int failures = 0;
  for (int run = 0; run < o.runs; ++run) {
    int64_t t0 = NowNs();
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open(o.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (const std::string& s : o.command) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    bool ready = false;
    int64_t deadline = t0 + 30000000000LL;
    while (NowNs() < deadline) {
      if (HealthStatus(o.port) == 200) {
        ready = true;
        break;
      }
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      timespec ms{0, 1000000};
      nanosleep(&ms, nullptr);
    }
    int64_t t1 = NowNs();
    if (ready) {
      startup.Add(t1 - t0);
      timespec idle{o.idle_ms / 1000, (o.idle_ms % 1000) * 1000000L};
      nanosleep(&idle, nullptr);
      rss.push_back(ReadRssKb(pid));
    } else {
      ++failures;
    }
    if (pid > 0) {
      kill(pid, SIGTERM);
      int64_t kill_deadline = NowNs() + 10000000000LL;
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (NowNs() > kill_deadline) {
          kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          break;
        }
        timespec ms{0, 5000000};
        nanosleep(&ms, nullptr);
      }
    }
  }
  std::sort(rss.begin(), rss.end());
  Json j;
  j.Str("mode", "startup").Str("label", o.label).Num("runs", o.runs).Num("failures", failures);
  j.Pcts("startup", startup);
  j.Num("idle_ms", o.idle_ms);
  j.Num("rss_idle_kb_median", rss.empty() ? NAN : static_cast<double>(rss[rss.size() / 2]));
  j.Num("rss_idle_kb_max", rss.empty() ? NAN : static_cast<double>(rss.back()));
  j.Print();
  return failures == 0 ? 0 : 1;
}

int RunFreeport(const Options& o) {
  std::vector<int> fds;
  for (int i = 0; i < o.freeport_count; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    printf("%d\n", ntohs(addr.sin_port));
    fds.push_back(fd);
  }
  for (int fd : fds) close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake-ups on time: the open-loop schedule relies on them
  RaiseFileLimit();
  Options o = ParseArgs(argc, argv);
  if (o.mode == "freeport") return RunFreeport(o);
  if (o.mode == "startup") return RunStartup(o);
  if (o.port <= 0) Die("--url http://HOST:PORT/PATH is required");
  if (o.mode == "max") return RunMax(o);
  if (o.mode == "rate") return RunRate(o);
  if (o.mode == "stream") return RunStream(o);
  if (o.mode == "hold") return RunHold(o);
  Die("unknown mode %s", o.mode.c_str());
}
