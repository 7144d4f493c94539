#include "fakes/fake_llm_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <queue>
#include <set>
#include <system_error>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ailb::testing {
namespace {

using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr size_t kMaxHeaderCount = 256;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;
// Input buffered on one connection beyond this is abuse (a complete request is smaller).
constexpr size_t kMaxBufferedInput = kMaxBodyBytes + 2 * kMaxHeaderBytes;
constexpr size_t kMaxChunkLine = 1024;
constexpr size_t kReadScratchBytes = 256 * 1024;
constexpr size_t kMaxReadPerEvent = 4 * 1024 * 1024;
constexpr int kDrainTimeoutMs = 1000;
constexpr int kAcceptBackoffMs = 50;
constexpr int kMaxEmbeddingDims = 65536;
constexpr std::string_view kDefaultModel = "fake-model";

// ------------------------------------------------------------------------------------------------
// Small utilities.

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Debian's Abseil has its own absl::string_view; convert at the boundary.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

// Strips optional whitespace (SP, HTAB) from both ends.
std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

absl::Status ErrnoStatus(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Appends `s` as a JSON string literal (with quotes). Bytes >= 0x80 pass through unchanged.
void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t run_start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      default:
        out.append("\\u00");
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xf]);
    }
  }
  out.append(s.data() + run_start, s.size() - run_start);
  out.push_back('"');
}

std::string JsonString(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendJsonString(out, s);
  return out;
}

// Turns a JSON document into text that no JSON parser accepts (a proper prefix of an object
// followed by a bare word).
std::string Malformed(std::string_view json) {
  std::string out(json.substr(0, json.empty() ? 0 : json.size() - 1));
  out.append(", this is not json");
  return out;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 529:
      return "Overloaded";
    default:
      return "Unknown";
  }
}

bool IsTokenChar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Whether a comma-separated header value contains `token` (case-insensitive).
bool HeaderHasToken(std::string_view value, std::string_view token) {
  for (;;) {
    const size_t comma = value.find(',');
    if (EqualsIgnoreCase(TrimOws(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) return false;
    value.remove_prefix(comma + 1);
  }
}

// The last element of a comma-separated list, trimmed.
std::string_view LastListElement(std::string_view value) {
  const size_t comma = value.rfind(',');
  return TrimOws(comma == std::string_view::npos ? value : value.substr(comma + 1));
}

std::string RfcTimestampNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() %
      1000000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%09lldZ", static_cast<long long>(nanos));
  out.append(frac);
  return out;
}

int64_t UnixNow() { return static_cast<int64_t>(std::time(nullptr)); }

// ------------------------------------------------------------------------------------------------
// HTTP/1.1 request parsing (incremental).

struct HttpRequest {
  std::string method;
  std::string path;
  std::string query;
  int minor_version = 1;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = true;

  std::string_view Header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (EqualsIgnoreCase(k, name)) return v;
    }
    return {};
  }
};

struct HttpError {
  int status = 400;
  std::string message;
};

class RequestParser {
 public:
  enum class Result { kNeedMore, kComplete, kError };

  // Consumes bytes of `in` (erasing them) and advances. After kComplete call TakeRequest(); after
  // kError the connection must be answered with error() and closed.
  Result Parse(std::string& in) {
    size_t off = 0;
    const Result r = ParseFrom(in, off);
    if (off > 0) in.erase(0, off);
    // "100 Continue" only makes sense while the client is still holding the body back.
    if (r != Result::kNeedMore) send_continue_ = false;
    return r;
  }

  // True once per request: the headers asked for "100-continue" and the body is still pending.
  bool TakeContinue() { return std::exchange(send_continue_, false); }
  HttpRequest TakeRequest() {
    HttpRequest r = std::move(req_);
    *this = RequestParser();
    return r;
  }

  const HttpError& error() const { return error_; }

 private:
  enum class Stage { kHead, kFixedBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kDone };

  Result Fail(int status, std::string message) {
    error_ = HttpError{status, std::move(message)};
    return Result::kError;
  }

  Result ParseFrom(std::string& in, size_t& off) {
    for (;;) {
      switch (stage_) {
        case Stage::kHead: {
          // Tolerate empty lines before a request line (RFC 9112 section 2.2).
          if (scan_ == 0) {
            while (off < in.size() && (in[off] == '\r' || in[off] == '\n')) ++off;
          }
          const size_t end = in.find("\r\n\r\n", off + scan_);
          if (end == std::string::npos) {
            const size_t have = in.size() - off;
            if (have > kMaxHeaderBytes) return Fail(431, "request headers too large");
            // Relative to the buffer after Parse() erased the `off` bytes consumed so far.
            scan_ = have >= 3 ? have - 3 : 0;
            return Result::kNeedMore;
          }
          if (end - off > kMaxHeaderBytes) return Fail(431, "request headers too large");
          if (Result r = ParseHead(std::string_view(in).substr(off, end + 2 - off));
              r == Result::kError) {
            return r;
          }
          off = end + 4;
          scan_ = 0;
          if (Result r = StartBody(); r == Result::kError) return r;
          break;
        }
        case Stage::kFixedBody: {
          const size_t avail = in.size() - off;
          if (avail < remaining_) return Result::kNeedMore;
          if (off == 0 && avail == remaining_) {
            req_.body = std::move(in);
            in.clear();
          } else {
            req_.body.assign(in, off, remaining_);
            off += remaining_;
          }
          remaining_ = 0;
          stage_ = Stage::kDone;
          break;
        }
        case Stage::kChunkSize: {
          const size_t eol = in.find("\r\n", off);
          if (eol == std::string::npos) {
            if (in.size() - off > kMaxChunkLine) return Fail(400, "chunk size line too long");
            return Result::kNeedMore;
          }
          std::string_view line = std::string_view(in).substr(off, eol - off);
          if (const size_t semi = line.find(';'); semi != std::string_view::npos) {
            line = line.substr(0, semi);
          }
          line = TrimOws(line);
          if (line.empty() || line.size() > 16) return Fail(400, "bad chunk size");
          uint64_t size = 0;
          for (char c : line) {
            int digit;
            if (c >= '0' && c <= '9') {
              digit = c - '0';
            } else if (c >= 'a' && c <= 'f') {
              digit = c - 'a' + 10;
            } else if (c >= 'A' && c <= 'F') {
              digit = c - 'A' + 10;
            } else {
              return Fail(400, "bad chunk size");
            }
            size = size * 16 + static_cast<uint64_t>(digit);
            if (size > kMaxBodyBytes) return Fail(413, "request body too large");
          }
          if (req_.body.size() + size > kMaxBodyBytes) return Fail(413, "request body too large");
          off = eol + 2;
          remaining_ = size;
          stage_ = size == 0 ? Stage::kTrailers : Stage::kChunkData;
          break;
        }
        case Stage::kChunkData: {
          const size_t take = std::min<size_t>(remaining_, in.size() - off);
          req_.body.append(in, off, take);
          off += take;
          remaining_ -= take;
          if (remaining_ > 0) return Result::kNeedMore;
          stage_ = Stage::kChunkDataEnd;
          break;
        }
        case Stage::kChunkDataEnd: {
          if (in.size() - off < 2) return Result::kNeedMore;
          if (in[off] != '\r' || in[off + 1] != '\n') return Fail(400, "bad chunk terminator");
          off += 2;
          stage_ = Stage::kChunkSize;
          break;
        }
        case Stage::kTrailers: {
          const size_t eol = in.find("\r\n", off);
          if (eol == std::string::npos) {
            if (in.size() - off > kMaxHeaderBytes) return Fail(431, "trailers too large");
            return Result::kNeedMore;
          }
          const bool last = eol == off;
          off = eol + 2;
          if (last) stage_ = Stage::kDone;
          break;
        }
        case Stage::kDone:
          return Result::kComplete;
      }
    }
  }

  // `head` is the request line and header lines, each terminated by CRLF.
  Result ParseHead(std::string_view head) {
    size_t pos = head.find("\r\n");
    const std::string_view request_line = head.substr(0, pos);
    head.remove_prefix(pos + 2);

    const size_t sp1 = request_line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return Fail(400, "malformed request line");
    const std::string_view method = request_line.substr(0, sp1);
    const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = request_line.substr(sp2 + 1);
    if (!IsToken(method)) return Fail(400, "malformed method");
    if (target.empty()) return Fail(400, "malformed request target");
    for (char c : target) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) return Fail(400, "malformed request target");
    }
    if (version == "HTTP/1.1") {
      req_.minor_version = 1;
    } else if (version == "HTTP/1.0") {
      req_.minor_version = 0;
    } else if (version.starts_with("HTTP/") && version.size() == 8) {
      return Fail(505, "unsupported HTTP version");
    } else {
      return Fail(400, "malformed HTTP version");
    }
    req_.method = std::string(method);

    std::string_view path = target;
    if (path.starts_with("http://") || path.starts_with("https://")) {
      path.remove_prefix(path.find("//") + 2);
      const size_t slash = path.find('/');
      path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
    } else if (path[0] != '/' && path != "*") {
      return Fail(400, "malformed request target");
    }
    if (const size_t hash = path.find('#'); hash != std::string_view::npos) {
      path = path.substr(0, hash);
    }
    if (const size_t q = path.find('?'); q != std::string_view::npos) {
      req_.query = std::string(path.substr(q + 1));
      path = path.substr(0, q);
    }
    req_.path = std::string(path);

    while (!head.empty()) {
      pos = head.find("\r\n");
      const std::string_view line = head.substr(0, pos);
      head.remove_prefix(pos + 2);
      if (line.empty()) continue;
      if (line[0] == ' ' || line[0] == '\t') return Fail(400, "obsolete header folding");
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) return Fail(400, "malformed header line");
      const std::string_view name = line.substr(0, colon);
      if (!IsToken(name)) return Fail(400, "malformed header name");
      std::string_view value = line.substr(colon + 1);
      for (char c : value) {
        const unsigned char u = static_cast<unsigned char>(c);
        if ((u < 0x20 && u != '\t') || u == 0x7f) return Fail(400, "malformed header value");
      }
      value = TrimOws(value);
      if (req_.headers.size() >= kMaxHeaderCount) return Fail(431, "too many headers");
      req_.headers.emplace_back(std::string(name), std::string(value));
    }
    return Result::kComplete;
  }

  // Decides the body framing from the headers.
  Result StartBody() {
    bool chunked = false;
    bool has_length = false;
    uint64_t length = 0;
    bool close = false;
    bool keep_alive = false;
    for (const auto& [name, value] : req_.headers) {
      if (EqualsIgnoreCase(name, "transfer-encoding")) {
        if (!EqualsIgnoreCase(LastListElement(value), "chunked")) {
          return Fail(501, "unsupported transfer-encoding");
        }
        chunked = true;
      } else if (EqualsIgnoreCase(name, "content-length")) {
        if (value.empty() || value.size() > 18 ||
            !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return Fail(400, "malformed content-length");
        }
        uint64_t v = 0;
        for (char c : value) v = v * 10 + static_cast<uint64_t>(c - '0');
        if (has_length && v != length) return Fail(400, "conflicting content-length");
        has_length = true;
        length = v;
      } else if (EqualsIgnoreCase(name, "connection")) {
        close = close || HeaderHasToken(value, "close");
        keep_alive = keep_alive || HeaderHasToken(value, "keep-alive");
      }
    }
    if (chunked && has_length) return Fail(400, "both content-length and transfer-encoding");
    if (has_length && length > kMaxBodyBytes) return Fail(413, "request body too large");
    req_.keep_alive = req_.minor_version == 1 ? !close : (keep_alive && !close);

    const bool body_pending = chunked || length > 0;
    if (body_pending && req_.minor_version == 1 &&
        EqualsIgnoreCase(req_.Header("expect"), "100-continue")) {
      send_continue_ = true;
    }
    if (chunked) {
      stage_ = Stage::kChunkSize;
    } else if (length > 0) {
      remaining_ = static_cast<size_t>(length);
      stage_ = Stage::kFixedBody;
    } else {
      stage_ = Stage::kDone;
    }
    return Result::kComplete;
  }

  Stage stage_ = Stage::kHead;
  size_t scan_ = 0;  // where to resume looking for the end of the head (bytes already scanned)
  size_t remaining_ = 0;
  bool send_continue_ = false;
  HttpRequest req_;
  HttpError error_;
};

// ------------------------------------------------------------------------------------------------
// Responses: a sequence of timed writes followed by an end action.

struct Step {
  int delay_ms = 0;  // wait this long after the previous step was handed to the kernel
  std::string bytes;
};

enum class EndAction {
  kKeepAlive,    // read the next request
  kClose,        // graceful close (FIN, then drain)
  kCloseAbrupt,  // close immediately (a cut)
  kReset,        // close with RST
  kHang,         // send nothing more; wait for the client to go away
};

class ResponseSource {
 public:
  virtual ~ResponseSource() = default;
  // Produces the next write; false when there is none.
  virtual bool Next(Step& step) = 0;
};

class FixedSource : public ResponseSource {
 public:
  explicit FixedSource(std::vector<Step> steps) : steps_(std::move(steps)) {}
  bool Next(Step& step) override {
    if (next_ >= steps_.size()) return false;
    step = std::move(steps_[next_++]);
    return true;
  }

 private:
  std::vector<Step> steps_;
  size_t next_ = 0;
};

struct Response {
  std::unique_ptr<ResponseSource> source;
  EndAction end = EndAction::kKeepAlive;
  bool is_stream = false;  // counts in StreamsCompleted / StreamsAbortedByPeer
};

enum class Api {
  kOpenAiChat,
  kOpenAiEmbeddings,
  kOpenAiModels,
  kAnthropicMessages,
  kOllamaChat,
  kOllamaTags,
  kOllamaEmbed,
  kOllamaEmbeddingsLegacy,
};

enum class ErrorStyle { kOpenAi, kAnthropic, kOllama };

struct Route {
  bool found = false;
  bool method_ok = false;
  Api api = Api::kOpenAiChat;
  ErrorStyle style = ErrorStyle::kOpenAi;
};

Route Resolve(std::string_view method, std::string_view path) {
  Route r;
  r.found = true;
  std::string_view want = "POST";
  if (path == "/api/chat") {
    r.api = Api::kOllamaChat;
  } else if (path == "/api/tags") {
    r.api = Api::kOllamaTags;
    want = "GET";
  } else if (path == "/api/embed") {
    r.api = Api::kOllamaEmbed;
  } else if (path == "/api/embeddings") {
    r.api = Api::kOllamaEmbeddingsLegacy;
  } else if (path.ends_with("/chat/completions")) {
    r.api = Api::kOpenAiChat;
  } else if (path.ends_with("/embeddings")) {
    r.api = Api::kOpenAiEmbeddings;
  } else if (path.ends_with("/models")) {
    r.api = Api::kOpenAiModels;
    want = "GET";
  } else if (path.ends_with("/messages")) {
    r.api = Api::kAnthropicMessages;
  } else {
    r.found = false;
  }
  r.method_ok = r.found && method == want;
  if (path.starts_with("/api/")) {
    r.style = ErrorStyle::kOllama;
  } else if (r.found && r.api == Api::kAnthropicMessages) {
    r.style = ErrorStyle::kAnthropic;
  }
  return r;
}

std::string DefaultErrorBody(int status, ErrorStyle style, std::string_view message) {
  std::string msg = message.empty() ? absl::StrCat("fake upstream error (HTTP ", status, ")")
                                    : std::string(message);
  switch (style) {
    case ErrorStyle::kOllama:
      return absl::StrCat("{\"error\":", JsonString(msg), "}");
    case ErrorStyle::kAnthropic: {
      const char* type = "api_error";
      if (status == 400 || status == 404 || status == 405 || status == 422) {
        type = status == 404 ? "not_found_error" : "invalid_request_error";
      } else if (status == 401) {
        type = "authentication_error";
      } else if (status == 403) {
        type = "permission_error";
      } else if (status == 413) {
        type = "request_too_large";
      } else if (status == 429) {
        type = "rate_limit_error";
      } else if (status == 503 || status == 529) {
        type = "overloaded_error";
      }
      return absl::StrCat("{\"type\":\"error\",\"error\":{\"type\":\"", type,
                          "\",\"message\":", JsonString(msg), "}}");
    }
    case ErrorStyle::kOpenAi:
      break;
  }
  const char* type = status >= 500 ? "server_error" : "invalid_request_error";
  const char* code = "null";
  if (status == 401) {
    type = "authentication_error";
    code = "\"invalid_api_key\"";
  } else if (status == 403) {
    type = "permission_error";
  } else if (status == 404) {
    code = "\"not_found\"";
  } else if (status == 429) {
    type = "rate_limit_error";
    code = "\"rate_limit_exceeded\"";
  } else if (status == 503) {
    code = "\"service_unavailable\"";
  }
  return absl::StrCat("{\"error\":{\"message\":", JsonString(msg), ",\"type\":\"", type,
                      "\",\"param\":null,\"code\":", code, "}}");
}

struct HeadSpec {
  int status = 200;
  const char* content_type = "application/json";
  // >= 0: Content-Length; < 0: the body is chunked (or close-delimited for HTTP/1.0).
  int64_t content_length = 0;
  bool chunked = false;
  bool keep_alive = true;
  bool event_stream = false;
  const std::vector<std::pair<std::string, std::string>>* extra_headers = nullptr;
};

std::string BuildHead(const HeadSpec& spec) {
  std::string head = absl::StrCat("HTTP/1.1 ", spec.status, " ", ReasonPhrase(spec.status),
                                  "\r\nContent-Type: ", spec.content_type, "\r\n");
  if (spec.content_length >= 0) {
    absl::StrAppend(&head, "Content-Length: ", spec.content_length, "\r\n");
  } else if (spec.chunked) {
    head.append("Transfer-Encoding: chunked\r\n");
  }
  if (spec.event_stream) head.append("Cache-Control: no-cache\r\n");
  head.append(spec.keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  head.append("Server: ailb-fake-llm\r\n");
  if (spec.extra_headers != nullptr) {
    for (const auto& [name, value] : *spec.extra_headers) {
      absl::StrAppend(&head, name, ": ", value, "\r\n");
    }
  }
  head.append("\r\n");
  return head;
}

// A fixed (Content-Length) response. With a behaviour, honours its delay and the cut /
// hang_mid_stream variants (half of the body, then close / hang).
Response MakeFixedResponse(int status, const char* content_type, std::string body,
                           const FakeBehavior* behavior, bool keep_alive, bool head_only) {
  HeadSpec spec;
  spec.status = status;
  spec.content_type = content_type;
  spec.content_length = static_cast<int64_t>(body.size());
  spec.keep_alive = keep_alive;
  if (behavior != nullptr) spec.extra_headers = &behavior->extra_headers;
  std::string bytes = BuildHead(spec);
  Response r;
  r.end = keep_alive ? EndAction::kKeepAlive : EndAction::kClose;
  if (behavior != nullptr && (behavior->hang_mid_stream || behavior->cut_after_chunks >= 0)) {
    body.resize(body.size() / 2);
    r.end = behavior->hang_mid_stream ? EndAction::kHang : EndAction::kCloseAbrupt;
  }
  if (!head_only) bytes.append(body);
  std::vector<Step> steps;
  steps.push_back(
      Step{behavior != nullptr ? behavior->delay_before_headers_ms : 0, std::move(bytes)});
  r.source = std::make_unique<FixedSource>(std::move(steps));
  return r;
}

std::string_view AnthropicStopReason(std::string_view finish_reason) {
  if (finish_reason == "stop") return "end_turn";
  if (finish_reason == "length") return "max_tokens";
  if (finish_reason == "tool_calls") return "tool_use";
  return finish_reason;
}

std::string_view OllamaDoneReason(std::string_view finish_reason) {
  if (finish_reason == "tool_calls") return "stop";
  return finish_reason;
}

// Ollama's duration fields, in nanoseconds.
std::string OllamaTimings(const FakeBehavior& b) {
  const int64_t eval_ns =
      (int64_t{1} + std::max(0, b.chunk_interval_ms) * std::max(1, b.stream_chunks)) * 1000000;
  const int64_t prompt_ns = 1000000;
  const int64_t load_ns = 100000;
  const int64_t total_ns =
      eval_ns + prompt_ns + load_ns + int64_t{std::max(0, b.delay_before_headers_ms)} * 1000000;
  return absl::StrCat("\"total_duration\":", total_ns, ",\"load_duration\":", load_ns,
                      ",\"prompt_eval_count\":", b.prompt_tokens,
                      ",\"prompt_eval_duration\":", prompt_ns,
                      ",\"eval_count\":", b.completion_tokens, ",\"eval_duration\":", eval_ns);
}

enum class StreamKind { kOpenAi, kAnthropic, kOllama };

// Generates a streamed reply lazily, one event per step, so that thousands of concurrent streams
// hold only their state, not their whole output.
class StreamSource : public ResponseSource {
 public:
  struct Params {
    StreamKind kind = StreamKind::kOpenAi;
    std::string head;
    bool chunked = true;
    std::string id;
    std::string model;  // as a JSON string literal
    bool include_usage = false;
    int delta_limit = -1;  // >= 0: stop (without closing events) after this many deltas
  };

  StreamSource(Params params, FakeBehavior behavior)
      : p_(std::move(params)), b_(std::move(behavior)) {
    chunks_ = std::max(1, b_.stream_chunks);
    created_ = UnixNow();
    if (p_.kind == StreamKind::kOllama) created_at_ = JsonString(RfcTimestampNow());
    if (p_.kind == StreamKind::kOpenAi) {
      prefix_ = absl::StrCat(
          "{\"id\":\"", p_.id, "\",\"object\":\"chat.completion.chunk\",\"created\":", created_,
          ",\"model\":", p_.model, ",\"system_fingerprint\":\"fp_fake\",\"choices\":[");
      suffix_ = p_.include_usage ? "],\"usage\":null}" : "]}";
    }
  }

  bool Next(Step& step) override {
    step.delay_ms = 0;
    step.bytes.clear();
    switch (phase_) {
      case Phase::kHead:
        step.delay_ms = b_.delay_before_headers_ms;
        step.bytes = std::move(p_.head);
        phase_ = Phase::kOpening;
        return true;
      case Phase::kOpening:
        if (index_ < OpeningCount()) {
          Frame(OpeningEvent(index_++), step.bytes);
          return true;
        }
        phase_ = Phase::kDeltas;
        index_ = 0;
        [[fallthrough]];
      case Phase::kDeltas: {
        const int limit = p_.delta_limit >= 0 ? std::min(p_.delta_limit, chunks_) : chunks_;
        if (index_ < limit) {
          step.delay_ms = index_ > 0 ? b_.chunk_interval_ms : 0;
          Frame(DeltaEvent(Piece(index_)), step.bytes);
          ++index_;
          return true;
        }
        if (p_.delta_limit >= 0) {
          phase_ = Phase::kEnd;
          return false;
        }
        phase_ = Phase::kClosing;
        index_ = 0;
        [[fallthrough]];
      }
      case Phase::kClosing: {
        const int count = ClosingCount();
        if (index_ < count) {
          step.delay_ms = index_ == 0 ? b_.chunk_interval_ms : 0;
          Frame(ClosingEvent(index_), step.bytes);
          ++index_;
          if (index_ == count && p_.chunked) step.bytes.append("0\r\n\r\n");
          return true;
        }
        phase_ = Phase::kEnd;
        [[fallthrough]];
      }
      case Phase::kEnd:
        break;
    }
    return false;
  }

 private:
  enum class Phase { kHead, kOpening, kDeltas, kClosing, kEnd };

  // Piece i of reply_text; boundaries are moved forward to UTF-8 sequence starts.
  std::string_view Piece(int i) const {
    const std::string& text = b_.reply_text;
    auto boundary = [&](int k) {
      if (k >= chunks_) return text.size();
      size_t pos = static_cast<size_t>(static_cast<uint64_t>(text.size()) *
                                       static_cast<uint64_t>(k) / static_cast<uint64_t>(chunks_));
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      return pos;
    };
    const size_t begin = boundary(i);
    const size_t end = boundary(i + 1);
    return std::string_view(text).substr(begin, end - begin);
  }

  int OpeningCount() const {
    switch (p_.kind) {
      case StreamKind::kOpenAi:
        return 1;
      case StreamKind::kAnthropic:
        return 3;
      case StreamKind::kOllama:
        return 0;
    }
    return 0;
  }

  int ClosingCount() const {
    switch (p_.kind) {
      case StreamKind::kOpenAi:
        return p_.include_usage ? 3 : 2;
      case StreamKind::kAnthropic:
        return 3;
      case StreamKind::kOllama:
        return 1;
    }
    return 0;
  }

  // Wraps a JSON payload as an SSE / NDJSON event and applies malformed_json.
  std::string Event(std::string_view sse_type, std::string json) const {
    if (b_.malformed_json) json = Malformed(json);
    switch (p_.kind) {
      case StreamKind::kOpenAi:
        return absl::StrCat("data: ", json, "\n\n");
      case StreamKind::kAnthropic:
        return absl::StrCat("event: ", Av(sse_type), "\ndata: ", json, "\n\n");
      case StreamKind::kOllama:
        json.push_back('\n');
        return json;
    }
    return json;
  }

  std::string OpeningEvent(int i) const {
    if (p_.kind == StreamKind::kOpenAi) {
      return Event("", absl::StrCat(prefix_,
                                    "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                                    "\"\"},\"logprobs\":null,\"finish_reason\":null}",
                                    suffix_));
    }
    switch (i) {
      case 0:
        return Event(
            "message_start",
            absl::StrCat("{\"type\":\"message_start\",\"message\":{\"id\":\"", p_.id,
                         "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", p_.model,
                         ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                         "\"usage\":{\"input_tokens\":",
                         b_.prompt_tokens, ",\"output_tokens\":1}}}"));
      case 1:
        return Event("content_block_start",
                     "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
                     "\"text\",\"text\":\"\"}}");
      default:
        return Event("ping", "{\"type\":\"ping\"}");
    }
  }

  std::string DeltaEvent(std::string_view piece) const {
    std::string json;
    switch (p_.kind) {
      case StreamKind::kOpenAi:
        json = absl::StrCat(prefix_, "{\"index\":0,\"delta\":{\"content\":");
        AppendJsonString(json, piece);
        absl::StrAppend(&json, "},\"logprobs\":null,\"finish_reason\":null}", suffix_);
        return Event("", std::move(json));
      case StreamKind::kAnthropic:
        json =
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
            "\"text\":";
        AppendJsonString(json, piece);
        json.append("}}");
        return Event("content_block_delta", std::move(json));
      case StreamKind::kOllama:
        json = absl::StrCat("{\"model\":", p_.model, ",\"created_at\":", created_at_,
                            ",\"message\":{\"role\":\"assistant\",\"content\":");
        AppendJsonString(json, piece);
        json.append("},\"done\":false}");
        return Event("", std::move(json));
    }
    return json;
  }

  std::string ClosingEvent(int i) const {
    switch (p_.kind) {
      case StreamKind::kOpenAi:
        if (i == 0) {
          return Event("", absl::StrCat(prefix_,
                                        "{\"index\":0,\"delta\":{},\"logprobs\":null,"
                                        "\"finish_reason\":",
                                        JsonString(b_.finish_reason), "}", suffix_));
        }
        if (i == 1 && p_.include_usage) {
          return Event(
              "",
              absl::StrCat(prefix_, "],\"usage\":{\"prompt_tokens\":", b_.prompt_tokens,
                           ",\"completion_tokens\":", b_.completion_tokens,
                           ",\"total_tokens\":", b_.prompt_tokens + b_.completion_tokens, "}}"));
        }
        return "data: [DONE]\n\n";
      case StreamKind::kAnthropic:
        if (i == 0) {
          return Event("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
        }
        if (i == 1) {
          return Event("message_delta",
                       absl::StrCat("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
                                    JsonString(AnthropicStopReason(b_.finish_reason)),
                                    ",\"stop_sequence\":null},\"usage\":{\"output_tokens\":",
                                    b_.completion_tokens, "}}"));
        }
        return Event("message_stop", "{\"type\":\"message_stop\"}");
      case StreamKind::kOllama:
        return Event("", absl::StrCat("{\"model\":", p_.model, ",\"created_at\":", created_at_,
                                      ",\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
                                      "\"done\":true,\"done_reason\":",
                                      JsonString(OllamaDoneReason(b_.finish_reason)), ",",
                                      OllamaTimings(b_), "}"));
    }
    return {};
  }

  void Frame(const std::string& event, std::string& out) const {
    if (p_.chunked) {
      absl::StrAppend(&out, absl::Hex(event.size()), "\r\n", event, "\r\n");
    } else {
      out.append(event);
    }
  }

  Params p_;
  FakeBehavior b_;
  int chunks_ = 1;
  int64_t created_ = 0;
  std::string created_at_;
  std::string prefix_;
  std::string suffix_;
  Phase phase_ = Phase::kHead;
  int index_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Embeddings.

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// A deterministic L2-normalised vector derived from a hash of `text`, as a JSON array.
std::string EmbeddingJson(std::string_view text, int dims) {
  uint64_t state = 1469598103934665603ULL;  // FNV-1a
  for (char c : text) {
    state ^= static_cast<unsigned char>(c);
    state *= 1099511628211ULL;
  }
  std::vector<double> values(static_cast<size_t>(dims));
  double norm = 0;
  for (double& v : values) {
    v = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    norm += v * v;
  }
  norm = std::sqrt(norm);
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, norm > 0 ? values[i] / norm : (i == 0 ? 1.0 : 0.0));
  }
  out.push_back(']');
  return out;
}

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The texts to embed from an OpenAI / Ollama "input" value.
std::vector<std::string> EmbeddingInputs(const Json& input) {
  std::vector<std::string> out;
  if (input.is_string()) {
    out.push_back(input.get_ref<const std::string&>());
  } else if (input.is_array()) {
    const bool tokens = !input.empty() && std::all_of(input.begin(), input.end(),
                                                      [](const Json& e) { return e.is_number(); });
    if (tokens) {
      out.push_back(DumpJson(input));
    } else {
      for (const Json& e : input) {
        out.push_back(e.is_string() ? e.get_ref<const std::string&>() : DumpJson(e));
      }
    }
  } else if (!input.is_null()) {
    out.push_back(DumpJson(input));
  }
  return out;
}

// The inputs an embedding reply covers: the request's, less or more per embedding_count_delta.
std::vector<std::string> ScriptedEmbeddingInputs(const std::vector<std::string>& inputs,
                                                 const FakeBehavior& b) {
  std::vector<std::string> out = inputs;
  if (b.embedding_count_delta < 0) {
    out.resize(out.size() - std::min(out.size(), static_cast<size_t>(-b.embedding_count_delta)));
  }
  for (int i = 0; i < b.embedding_count_delta; ++i) out.push_back(absl::StrCat("extra ", i));
  return out;
}

// What the response builders need from a request body.
struct BodyInfo {
  bool json_ok = false;
  std::string model;  // "" if absent
  bool stream = false;
  bool include_usage = false;
  std::vector<std::string> inputs;  // embeddings
  int dims = 8;
};

BodyInfo ReadBody(Api api, std::string_view body) {
  BodyInfo info;
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return info;
  info.json_ok = true;
  if (auto it = j.find("model"); it != j.end() && it->is_string()) {
    info.model = it->get_ref<const std::string&>();
  }
  const auto stream = j.find("stream");
  const bool has_stream = stream != j.end() && stream->is_boolean();
  info.stream = has_stream && stream->get<bool>();
  if (api == Api::kOllamaChat) info.stream = !has_stream || stream->get<bool>();
  if (auto so = j.find("stream_options"); so != j.end() && so->is_object()) {
    if (auto iu = so->find("include_usage"); iu != so->end() && iu->is_boolean()) {
      info.include_usage = iu->get<bool>();
    }
  }
  if (api == Api::kOpenAiEmbeddings || api == Api::kOllamaEmbed) {
    if (auto in = j.find("input"); in != j.end()) info.inputs = EmbeddingInputs(*in);
  } else if (api == Api::kOllamaEmbeddingsLegacy) {
    if (auto in = j.find("prompt"); in != j.end()) info.inputs = EmbeddingInputs(*in);
  }
  if (auto d = j.find("dimensions"); d != j.end() && d->is_number_integer()) {
    const int64_t v = d->get<int64_t>();
    if (v >= 1 && v <= kMaxEmbeddingDims) info.dims = static_cast<int>(v);
  }
  return info;
}

// Vector length for an embedding reply: forced by the behaviour, else the request's.
int EmbeddingDims(const BodyInfo& info, const FakeBehavior& b) {
  return b.embedding_dims > 0 ? std::min(b.embedding_dims, kMaxEmbeddingDims) : info.dims;
}

std::string OllamaModelName(std::string_view name) {
  return name.find(':') == std::string_view::npos ? absl::StrCat(Av(name), ":latest")
                                                  : std::string(name);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// RecordedRequest.

std::string RecordedRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return "";
}

nlohmann::json RecordedRequest::JsonBody() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

// ------------------------------------------------------------------------------------------------
// The event loop.

class FakeLlmServer::Loop {
 public:
  Loop(FakeLlmServer* owner, UniqueFd listener, UniqueFd epoll, UniqueFd wake)
      : owner_(owner),
        listener_(std::move(listener)),
        epoll_(std::move(epoll)),
        wake_(std::move(wake)),
        scratch_(kReadScratchBytes) {}

  // Any thread.
  void RequestStop() {
    stop_.store(true, std::memory_order_release);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  }

  void Run();

 private:
  static constexpr uint64_t kListenerId = 0;
  static constexpr uint64_t kWakeId = 1;

  enum class Phase { kReading, kResponding, kHanging, kDraining };
  enum class FlushResult { kDone, kPending, kClosed };

  struct Conn {
    uint64_t id = 0;
    UniqueFd fd;
    Phase phase = Phase::kReading;
    uint32_t events = 0;  // current epoll interest
    std::string in;
    RequestParser parser;
    std::string out;
    size_t out_off = 0;
    Response response;
    std::string pending;  // bytes of a step waiting for its delay
    bool has_pending = false;
    bool timer_armed = false;
    uint64_t timer_gen = 0;
  };

  struct Timer {
    SteadyClock::time_point at;
    uint64_t conn_id;
    uint64_t gen;
    bool operator>(const Timer& o) const { return at > o.at; }
  };

  void Accept();
  bool OnReadable(Conn& c);
  bool Drive(Conn& c);
  FlushResult Flush(Conn& c);
  bool FinishResponse(Conn& c);
  void HandleRequest(Conn& c, HttpRequest req);
  Response BuildResponse(const HttpRequest& req, const Route& route, const BodyInfo& info,
                         const FakeBehavior& b, std::vector<std::string> models);
  void StartResponse(Conn& c, Response r);
  void UpdateInterest(Conn& c);
  void ArmTimer(Conn& c, int delay_ms);
  void RunTimers();
  int NextTimeoutMs() const;
  void PeerGone(Conn& c);
  void Close(Conn& c, bool reset);
  void SetListenerPaused(bool paused);

  FakeLlmServer* const owner_;
  UniqueFd listener_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::atomic<bool> stop_{false};
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_id_ = 2;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  uint64_t listener_timer_gen_ = 0;
  bool listener_paused_ = false;
  uint64_t response_seq_ = 0;
  std::set<std::string, std::less<>> models_known_;
  std::vector<char> scratch_;
};

void FakeLlmServer::Loop::Run() {
  std::vector<epoll_event> events(1024);
  while (!stop_.load(std::memory_order_acquire)) {
    const int n =
        ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      const uint32_t ev = events[i].events;
      if (id == kListenerId) {
        Accept();
        continue;
      }
      if (id == kWakeId) {
        uint64_t value;
        [[maybe_unused]] ssize_t r = ::read(wake_.get(), &value, sizeof(value));
        continue;
      }
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;  // closed earlier in this batch
      Conn& c = *it->second;
      if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        if (!OnReadable(c)) continue;
      }
      if ((ev & EPOLLOUT) != 0) Drive(c);
    }
    RunTimers();
  }
  conns_.clear();
  absl::MutexLock lock(&owner_->mu_);
  owner_->open_connections_ = 0;
}

void FakeLlmServer::Loop::Accept() {
  int accepted = 0;
  for (;;) {
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting for a moment instead of spinning.
        SetListenerPaused(true);
        listener_timer_gen_++;
        timers_.push(Timer{SteadyClock::now() + std::chrono::milliseconds(kAcceptBackoffMs),
                           kListenerId, listener_timer_gen_});
      }
      break;
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = UniqueFd(fd);
    conn->id = next_id_++;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = conn->id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) continue;  // conn closes fd
    conn->events = ev.events;
    conns_.emplace(conn->id, std::move(conn));
    ++accepted;
  }
  if (accepted > 0) {
    absl::MutexLock lock(&owner_->mu_);
    owner_->open_connections_ += accepted;
  }
}

void FakeLlmServer::Loop::SetListenerPaused(bool paused) {
  if (paused == listener_paused_) return;
  listener_paused_ = paused;
  epoll_event ev{};
  ev.events = paused ? 0u : static_cast<uint32_t>(EPOLLIN);
  ev.data.u64 = kListenerId;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener_.get(), &ev);
}

bool FakeLlmServer::Loop::OnReadable(Conn& c) {
  size_t total = 0;
  while (total < kMaxReadPerEvent) {
    const ssize_t n = ::recv(c.fd.get(), scratch_.data(), scratch_.size(), 0);
    if (n > 0) {
      total += static_cast<size_t>(n);
      if (c.phase == Phase::kHanging || c.phase == Phase::kDraining) continue;  // discarded
      c.in.append(scratch_.data(), static_cast<size_t>(n));
      if (c.in.size() > kMaxBufferedInput) {
        PeerGone(c);
        return false;
      }
      if (static_cast<size_t>(n) < scratch_.size()) break;
      continue;
    }
    if (n == 0) {
      // A FIN means the client went away. (A half-close is indistinguishable on the wire; HTTP
      // clients do not half-close, and treating both alike keeps abort detection deterministic.)
      PeerGone(c);
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    PeerGone(c);
    return false;
  }
  return Drive(c);
}

FakeLlmServer::Loop::FlushResult FakeLlmServer::Loop::Flush(Conn& c) {
  while (c.out_off < c.out.size()) {
    const ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n >= 0) {
      c.out_off += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      UpdateInterest(c);
      return FlushResult::kPending;
    }
    PeerGone(c);
    return FlushResult::kClosed;
  }
  c.out.clear();
  c.out_off = 0;
  return FlushResult::kDone;
}

void FakeLlmServer::Loop::UpdateInterest(Conn& c) {
  // Always read: pipelined requests are buffered (bounded by kMaxBufferedInput) and EOF or an
  // error is how a departed client is noticed.
  uint32_t want = EPOLLIN | EPOLLRDHUP;
  if (c.out_off < c.out.size()) want |= EPOLLOUT;
  if (want == c.events) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) c.events = want;
}

bool FakeLlmServer::Loop::Drive(Conn& c) {
  for (;;) {
    switch (c.phase) {
      case Phase::kReading: {
        if (!c.out.empty() && Flush(c) == FlushResult::kClosed) return false;
        const RequestParser::Result r = c.parser.Parse(c.in);
        if (c.parser.TakeContinue()) {
          c.out.append("HTTP/1.1 100 Continue\r\n\r\n");
          if (Flush(c) == FlushResult::kClosed) return false;
        }
        if (r == RequestParser::Result::kNeedMore) {
          UpdateInterest(c);
          return true;
        }
        if (r == RequestParser::Result::kError) {
          const HttpError& e = c.parser.error();
          c.in.clear();
          StartResponse(
              c, MakeFixedResponse(e.status, "application/json",
                                   DefaultErrorBody(e.status, ErrorStyle::kOpenAi, e.message),
                                   nullptr, /*keep_alive=*/false, false));
          continue;
        }
        HandleRequest(c, c.parser.TakeRequest());
        continue;
      }
      case Phase::kResponding: {
        const FlushResult f = Flush(c);
        if (f == FlushResult::kClosed) return false;
        if (f == FlushResult::kPending || c.timer_armed) {
          UpdateInterest(c);
          return true;
        }
        if (c.has_pending) {
          c.out = std::move(c.pending);
          c.pending.clear();
          c.has_pending = false;
          continue;
        }
        Step step;
        if (c.response.source != nullptr && c.response.source->Next(step)) {
          if (step.delay_ms > 0) {
            c.pending = std::move(step.bytes);
            c.has_pending = true;
            ArmTimer(c, step.delay_ms);
            UpdateInterest(c);
            return true;
          }
          c.out = std::move(step.bytes);
          continue;
        }
        if (!FinishResponse(c)) return false;
        continue;
      }
      case Phase::kHanging:
      case Phase::kDraining:
        c.in.clear();
        UpdateInterest(c);
        return true;
    }
  }
}

void FakeLlmServer::Loop::StartResponse(Conn& c, Response r) {
  c.response = std::move(r);
  c.phase = Phase::kResponding;
}

bool FakeLlmServer::Loop::FinishResponse(Conn& c) {
  const bool stream = c.response.is_stream;
  const EndAction end = c.response.end;
  c.response = Response();
  if (stream && (end == EndAction::kKeepAlive || end == EndAction::kClose)) {
    absl::MutexLock lock(&owner_->mu_);
    owner_->streams_completed_++;
  }
  switch (end) {
    case EndAction::kKeepAlive:
      c.phase = Phase::kReading;
      return true;
    case EndAction::kClose:
      ::shutdown(c.fd.get(), SHUT_WR);
      c.phase = Phase::kDraining;
      c.in.clear();
      ArmTimer(c, kDrainTimeoutMs);
      return true;
    case EndAction::kCloseAbrupt:
      Close(c, /*reset=*/false);
      return false;
    case EndAction::kReset:
      Close(c, /*reset=*/true);
      return false;
    case EndAction::kHang:
      c.response.is_stream = stream;  // a client leaving a hung stream aborts it
      c.phase = Phase::kHanging;
      return true;
  }
  return true;
}

void FakeLlmServer::Loop::PeerGone(Conn& c) {
  if ((c.phase == Phase::kResponding || c.phase == Phase::kHanging) && c.response.is_stream) {
    absl::MutexLock lock(&owner_->mu_);
    owner_->streams_aborted_++;
  }
  Close(c, /*reset=*/false);
}

void FakeLlmServer::Loop::Close(Conn& c, bool reset) {
  if (reset) {
    linger lg{};
    lg.l_onoff = 1;
    lg.l_linger = 0;
    ::setsockopt(c.fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  // Closing the descriptor removes it from the epoll set.
  conns_.erase(c.id);
  absl::MutexLock lock(&owner_->mu_);
  owner_->open_connections_--;
}

void FakeLlmServer::Loop::ArmTimer(Conn& c, int delay_ms) {
  c.timer_armed = true;
  c.timer_gen++;
  timers_.push(Timer{SteadyClock::now() + std::chrono::milliseconds(delay_ms), c.id, c.timer_gen});
}

int FakeLlmServer::Loop::NextTimeoutMs() const {
  if (timers_.empty()) return -1;
  const auto wait = timers_.top().at - SteadyClock::now();
  if (wait <= SteadyClock::duration::zero()) return 0;
  // Round up so a timer never fires early (and the loop does not spin).
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  return static_cast<int>(std::min<int64_t>(ms, 60 * 60 * 1000));
}

void FakeLlmServer::Loop::RunTimers() {
  const auto now = SteadyClock::now();
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer t = timers_.top();
    timers_.pop();
    if (t.conn_id == kListenerId) {
      if (t.gen == listener_timer_gen_) {
        SetListenerPaused(false);
        Accept();
      }
      continue;
    }
    auto it = conns_.find(t.conn_id);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    if (!c.timer_armed || t.gen != c.timer_gen) continue;
    c.timer_armed = false;
    if (c.phase == Phase::kDraining) {
      Close(c, /*reset=*/false);
      continue;
    }
    Drive(c);
  }
}

void FakeLlmServer::Loop::HandleRequest(Conn& c, HttpRequest req) {
  const Route route = Resolve(req.method, req.path);
  const bool known = route.found && route.method_ok;
  BodyInfo info;
  const bool reads_body = known && route.api != Api::kOpenAiModels && route.api != Api::kOllamaTags;
  if (reads_body) info = ReadBody(route.api, req.body);
  const bool new_model = !info.model.empty() && models_known_.insert(info.model).second;
  const bool lists_models = route.api == Api::kOpenAiModels || route.api == Api::kOllamaTags;

  FakeBehavior behavior;
  std::vector<std::string> models;
  {
    absl::MutexLock lock(&owner_->mu_);
    owner_->request_count_++;
    if (known && (route.api == Api::kOpenAiEmbeddings || route.api == Api::kOllamaEmbed ||
                  route.api == Api::kOllamaEmbeddingsLegacy)) {
      owner_->embedding_request_count_++;
      owner_->embedding_input_count_ += info.inputs.size();
    }
    if (new_model) owner_->models_seen_.push_back(info.model);
    if (known) {
      if (owner_->queued_.empty()) {
        behavior = owner_->default_behavior_;
      } else {
        behavior = std::move(owner_->queued_.front());
        owner_->queued_.pop_front();
      }
      if (lists_models) models = owner_->models_seen_;
    }
    if (owner_->record_requests_) {
      // The body and headers are no longer needed (BodyInfo holds what the reply uses).
      RecordedRequest rec;
      rec.method = req.method;
      rec.path = req.path;
      rec.query = std::move(req.query);
      rec.headers = std::move(req.headers);
      rec.body = std::move(req.body);
      owner_->requests_.push_back(std::move(rec));
    }
  }

  const bool head_only = req.method == "HEAD";
  if (!route.found) {
    StartResponse(c, MakeFixedResponse(
                         404, "application/json",
                         DefaultErrorBody(404, route.style,
                                          absl::StrCat("no route for ", req.method, " ", req.path)),
                         nullptr, req.keep_alive, head_only));
    return;
  }
  if (!route.method_ok) {
    StartResponse(
        c, MakeFixedResponse(405, "application/json",
                             DefaultErrorBody(405, route.style,
                                              absl::StrCat("method ", req.method, " not allowed")),
                             nullptr, req.keep_alive, head_only));
    return;
  }
  StartResponse(c, BuildResponse(req, route, info, behavior, std::move(models)));
}

Response FakeLlmServer::Loop::BuildResponse(const HttpRequest& req, const Route& route,
                                            const BodyInfo& info, const FakeBehavior& b,
                                            std::vector<std::string> models) {
  const bool stream_api = route.api == Api::kOpenAiChat || route.api == Api::kAnthropicMessages ||
                          route.api == Api::kOllamaChat;
  const bool wants_stream = stream_api && info.stream;
  const bool ok_status = b.status >= 200 && b.status < 300;

  if (b.reset_connection) {
    Response r;
    std::vector<Step> steps;
    steps.push_back(Step{b.delay_before_headers_ms, ""});
    r.source = std::make_unique<FixedSource>(std::move(steps));
    r.end = EndAction::kReset;
    return r;
  }
  if (b.hang) {
    Response r;
    r.end = EndAction::kHang;
    r.is_stream = wants_stream && ok_status;
    return r;
  }
  if (!ok_status) {
    std::string body =
        b.error_body.empty() ? DefaultErrorBody(b.status, route.style, "") : b.error_body;
    return MakeFixedResponse(b.status, "application/json", std::move(body), &b, req.keep_alive,
                             false);
  }
  const bool body_is_json_api = route.api != Api::kOpenAiModels && route.api != Api::kOllamaTags;
  if (body_is_json_api && !info.json_ok) {
    return MakeFixedResponse(400, "application/json",
                             DefaultErrorBody(400, route.style, "request body is not valid JSON"),
                             &b, req.keep_alive, false);
  }

  const uint64_t seq = ++response_seq_;
  const std::string model = JsonString(info.model.empty() ? kDefaultModel : info.model);

  if (wants_stream) {
    StreamSource::Params p;
    HeadSpec head;
    head.content_length = -1;
    head.chunked = req.minor_version == 1;
    head.keep_alive = req.keep_alive && head.chunked;
    head.extra_headers = &b.extra_headers;
    head.event_stream = route.api != Api::kOllamaChat;
    switch (route.api) {
      case Api::kAnthropicMessages:
        p.kind = StreamKind::kAnthropic;
        p.id = absl::StrCat("msg_fake", seq);
        head.content_type = "text/event-stream; charset=utf-8";
        break;
      case Api::kOllamaChat:
        p.kind = StreamKind::kOllama;
        head.content_type = "application/x-ndjson";
        break;
      default:
        p.kind = StreamKind::kOpenAi;
        p.id = absl::StrCat("chatcmpl-fake", seq);
        p.include_usage = info.include_usage;
        head.content_type = "text/event-stream; charset=utf-8";
        break;
    }
    p.head = BuildHead(head);
    p.chunked = head.chunked;
    p.model = model;
    Response r;
    r.is_stream = true;
    r.end = head.keep_alive ? EndAction::kKeepAlive : EndAction::kClose;
    if (b.hang_mid_stream) {
      p.delta_limit = 1;
      r.end = EndAction::kHang;
    } else if (b.cut_after_chunks >= 0) {
      p.delta_limit = b.cut_after_chunks;
      r.end = EndAction::kCloseAbrupt;
    }
    r.source = std::make_unique<StreamSource>(std::move(p), b);
    return r;
  }

  std::string body;
  switch (route.api) {
    case Api::kOpenAiChat:
      body = absl::StrCat(
          "{\"id\":\"chatcmpl-fake", seq,
          "\",\"object\":\"chat.completion\",\"created\":", UnixNow(), ",\"model\":", model,
          ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
          "\"content\":",
          JsonString(b.reply_text),
          ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":", JsonString(b.finish_reason),
          "}],\"usage\":{\"prompt_tokens\":", b.prompt_tokens,
          ",\"completion_tokens\":", b.completion_tokens,
          ",\"total_tokens\":", b.prompt_tokens + b.completion_tokens,
          "},\"system_fingerprint\":\"fp_fake\"}");
      break;
    case Api::kAnthropicMessages:
      body = absl::StrCat("{\"id\":\"msg_fake", seq,
                          "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", model,
                          ",\"content\":[{\"type\":\"text\",\"text\":", JsonString(b.reply_text),
                          "}],\"stop_reason\":", JsonString(AnthropicStopReason(b.finish_reason)),
                          ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":", b.prompt_tokens,
                          ",\"output_tokens\":", b.completion_tokens, "}}");
      break;
    case Api::kOllamaChat:
      body = absl::StrCat(
          "{\"model\":", model, ",\"created_at\":", JsonString(RfcTimestampNow()),
          ",\"message\":{\"role\":\"assistant\",\"content\":", JsonString(b.reply_text),
          "},\"done_reason\":", JsonString(OllamaDoneReason(b.finish_reason)), ",\"done\":true,",
          OllamaTimings(b), "}");
      break;
    case Api::kOpenAiEmbeddings: {
      const std::vector<std::string> inputs = ScriptedEmbeddingInputs(info.inputs, b);
      const int dims = EmbeddingDims(info, b);
      body = "{\"object\":\"list\",\"data\":[";
      for (size_t k = 0; k < inputs.size(); ++k) {
        const size_t i = b.reverse_embeddings ? inputs.size() - 1 - k : k;
        absl::StrAppend(&body, k > 0 ? "," : "", "{\"object\":\"embedding\",\"index\":", i,
                        ",\"embedding\":", EmbeddingJson(inputs[i], dims), "}");
      }
      absl::StrAppend(&body, "],\"model\":", model,
                      ",\"usage\":{\"prompt_tokens\":", b.prompt_tokens,
                      ",\"total_tokens\":", b.prompt_tokens, "}}");
      break;
    }
    case Api::kOllamaEmbed: {
      const std::vector<std::string> inputs = ScriptedEmbeddingInputs(info.inputs, b);
      const int dims = EmbeddingDims(info, b);
      body = absl::StrCat("{\"model\":", model, ",\"embeddings\":[");
      for (size_t i = 0; i < inputs.size(); ++i) {
        absl::StrAppend(&body, i > 0 ? "," : "", EmbeddingJson(inputs[i], dims));
      }
      absl::StrAppend(&body, "],\"total_duration\":1100000,\"load_duration\":100000,",
                      "\"prompt_eval_count\":", b.prompt_tokens, "}");
      break;
    }
    case Api::kOllamaEmbeddingsLegacy: {
      const int dims = EmbeddingDims(info, b);
      body = absl::StrCat(
          "{\"embedding\":", EmbeddingJson(info.inputs.empty() ? "" : info.inputs[0], dims), "}");
      break;
    }
    case Api::kOpenAiModels: {
      const int64_t created = UnixNow();
      body =
          absl::StrCat("{\"object\":\"list\",\"data\":[{\"id\":\"", Av(kDefaultModel),
                       "\",\"object\":\"model\",\"created\":", created, ",\"owned_by\":\"fake\"}");
      for (const std::string& name : models) {
        if (name == kDefaultModel) continue;
        absl::StrAppend(&body, ",{\"id\":", JsonString(name),
                        ",\"object\":\"model\",\"created\":", created, ",\"owned_by\":\"fake\"}");
      }
      body.append("]}");
      break;
    }
    case Api::kOllamaTags: {
      const std::string modified = JsonString(RfcTimestampNow());
      std::vector<std::string> names = {OllamaModelName(kDefaultModel)};
      for (const std::string& name : models) {
        std::string n = OllamaModelName(name);
        if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
      }
      body = "{\"models\":[";
      for (size_t i = 0; i < names.size(); ++i) {
        const std::string quoted = JsonString(names[i]);
        absl::StrAppend(&body, i > 0 ? "," : "", "{\"name\":", quoted, ",\"model\":", quoted,
                        ",\"modified_at\":", modified, ",\"size\":1000000,\"digest\":\"fake", i,
                        "\",\"details\":{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":"
                        "\"fake\",\"families\":[\"fake\"],\"parameter_size\":\"1B\","
                        "\"quantization_level\":\"Q4_0\"}}");
      }
      body.append("]}");
      break;
    }
  }
  if (b.malformed_json) body = Malformed(body);
  return MakeFixedResponse(b.status, "application/json", std::move(body), &b, req.keep_alive,
                           false);
}

// ------------------------------------------------------------------------------------------------
// FakeLlmServer.

absl::StatusOr<std::unique_ptr<FakeLlmServer>> FakeLlmServer::Start() { return Start(Options()); }

absl::StatusOr<std::unique_ptr<FakeLlmServer>> FakeLlmServer::Start(Options options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port ", options.port));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string port_text = std::to_string(options.port);
  if (const int rc = ::getaddrinfo(options.host.c_str(), port_text.c_str(), &hints, &result);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", options.host, "': ", ::gai_strerror(rc)));
  }
  UniqueFd listener;
  absl::Status last = absl::UnavailableError("no address to bind");
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoStatus("socket", errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      last = ErrnoStatus(absl::StrCat("bind ", options.host, ":", options.port), errno);
      continue;
    }
    if (::listen(fd.get(), 65535) != 0) {
      last = ErrnoStatus("listen", errno);
      continue;
    }
    listener = std::move(fd);
    break;
  }
  ::freeaddrinfo(result);
  if (!listener.valid()) return last;

  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus("getsockname", errno);
  }
  const int port = addr.ss_family == AF_INET6
                       ? ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port)
                       : ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);

  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return ErrnoStatus("epoll_create1", errno);
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // Loop::kListenerId
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl", errno);
  }
  ev.data.u64 = 1;  // Loop::kWakeId
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl", errno);
  }

  std::unique_ptr<FakeLlmServer> server(new FakeLlmServer());
  server->host_ = options.host;
  server->port_ = port;
  server->record_requests_ = options.record_requests;
  server->loop_ =
      std::make_unique<Loop>(server.get(), std::move(listener), std::move(epoll), std::move(wake));
  try {
    server->thread_ = std::thread([loop = server->loop_.get()] { loop->Run(); });
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot start thread: ", e.what()));
  }
  return server;
}

FakeLlmServer::~FakeLlmServer() { Stop(); }

void FakeLlmServer::Stop() {
  std::lock_guard<std::mutex> lock(join_mu_);
  if (!thread_.joinable()) return;
  loop_->RequestStop();
  thread_.join();
}

int FakeLlmServer::port() const { return port_; }

std::string FakeLlmServer::BaseUrl() const {
  std::string host = host_;
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = absl::StrCat("[", host, "]");
  return absl::StrCat("http://", host, ":", port_);
}

void FakeLlmServer::SetDefaultBehavior(FakeBehavior behavior) {
  absl::MutexLock lock(&mu_);
  default_behavior_ = std::move(behavior);
}

void FakeLlmServer::EnqueueBehavior(FakeBehavior behavior) {
  absl::MutexLock lock(&mu_);
  queued_.push_back(std::move(behavior));
}

std::vector<RecordedRequest> FakeLlmServer::Requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

size_t FakeLlmServer::RequestCount() const {
  absl::MutexLock lock(&mu_);
  return request_count_;
}

size_t FakeLlmServer::EmbeddingRequestCount() const {
  absl::MutexLock lock(&mu_);
  return embedding_request_count_;
}

size_t FakeLlmServer::EmbeddingInputCount() const {
  absl::MutexLock lock(&mu_);
  return embedding_input_count_;
}

void FakeLlmServer::ClearRequests() {
  absl::MutexLock lock(&mu_);
  requests_.clear();
  request_count_ = 0;
  embedding_request_count_ = 0;
  embedding_input_count_ = 0;
}

int FakeLlmServer::OpenConnections() const {
  absl::MutexLock lock(&mu_);
  return open_connections_;
}

int FakeLlmServer::StreamsCompleted() const {
  absl::MutexLock lock(&mu_);
  return streams_completed_;
}

int FakeLlmServer::StreamsAbortedByPeer() const {
  absl::MutexLock lock(&mu_);
  return streams_aborted_;
}

bool FakeLlmServer::WaitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  struct Reached {
    const FakeLlmServer* self;
    size_t n;
    bool operator()() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
      return self->request_count_ >= n;
    }
  };
  const Reached reached{this, n};
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Milliseconds(timeout.count()));
}

}  // namespace ailb::testing
