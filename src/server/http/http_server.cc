#include "ailb/server/http_server.h"

#include <netinet/in.h>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/peer.h>
#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ailb/common/logging.h"
#include "ailb/common/random.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/llm/chat.h"
#include "server/http/auth.h"
#include "server/http/request_parser.h"
#include "spdlog/spdlog.h"

namespace ailb::server {
namespace {

using Pistache::Http::Method;
using Pistache::Http::Request;
using Pistache::Http::ResponseWriter;

constexpr char kCancelKey[] = "ailb.cancel";
constexpr char kCountedKey[] = "ailb.counted";
constexpr size_t kMaxRequestIdLength = 128;

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
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
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 499:
      return "Client Closed Request";
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
    default:
      return "Unknown";
  }
}

// State shared by the handler clones Pistache makes for each reactor thread.
struct Shared {
  gateway::Gateway* gateway = nullptr;
  config::ConfigStore* config = nullptr;
  const metrics::Registry* registry = nullptr;
  std::vector<BlockingApi*> blocking_apis;
  WorkerPool* workers = nullptr;
  auth::KeyStore* keys = nullptr;
  int64_t max_body_bytes = 0;
  std::atomic<int> open_streams{0};
  std::atomic<int64_t> pending_writes{0};
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> total_connections{0};
  std::unique_ptr<RandomSource> random = SeededRandom::FromEntropy();
};

// Writes a reply straight to the connection. Pistache's ResponseStream must not be used off its
// reactor thread, but Peer::send only queues bytes and wakes the reactor, so it is safe from any
// thread; the weak pointer is locked per write and never held, so a departed client is noticed.
class PeerSink final : public gateway::ResponseSink {
 public:
  PeerSink(std::weak_ptr<Pistache::Tcp::Peer> peer, std::string request_id, bool keep_alive,
           std::shared_ptr<Shared> shared)
      : peer_(std::move(peer)),
        request_id_(std::move(request_id)),
        keep_alive_(keep_alive),
        shared_(std::move(shared)) {}
  ~PeerSink() override {
    if (stream_open_) shared_->open_streams.fetch_sub(1);
  }

  void SendJson(int http_status, const upstream::Headers& headers, std::string body) override {
    Send(http_status, headers, "application/json", std::move(body));
  }

  void SendText(int http_status, std::string_view content_type, std::string body) {
    Send(http_status, {}, content_type, std::move(body));
  }

  void StartStream(const upstream::Headers& headers) override {
    std::string out = Head(200, headers, "text/event-stream");
    out += "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream_open_ = true;
    shared_->open_streams.fetch_add(1);
    Write(std::move(out));
  }

  bool SendStreamData(std::string data) override {
    if (data.empty()) return !ClientGone();
    std::ostringstream size;
    size << std::hex << data.size();
    std::string framed = absl::StrCat(size.str(), "\r\n", data, "\r\n");
    return Write(std::move(framed));
  }

  void EndStream() override {
    Write("0\r\n\r\n");
    if (stream_open_) {
      stream_open_ = false;
      shared_->open_streams.fetch_sub(1);
    }
  }

  bool ClientGone() const override { return peer_.expired(); }

 private:
  void Send(int http_status, const upstream::Headers& headers, std::string_view content_type,
            std::string body) {
    std::string out = Head(http_status, headers, content_type);
    absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n\r\n");
    out += body;
    Write(std::move(out));
  }

  std::string Head(int http_status, const upstream::Headers& headers,
                   std::string_view content_type) const {
    std::string out =
        absl::StrCat("HTTP/1.1 ", http_status, " ", ReasonPhrase(http_status),
                     "\r\nContent-Type: ", ToAbsl(content_type), "\r\nX-Request-Id: ", request_id_,
                     keep_alive_ ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n");
    for (const auto& [name, value] : headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
    return out;
  }

  bool Write(std::string bytes) {
    std::shared_ptr<Pistache::Tcp::Peer> peer = peer_.lock();
    if (!peer) return false;
    const size_t length = bytes.size();
    // Counted until the reactor has written them, so shutdown can wait for replies to leave.
    shared_->pending_writes.fetch_add(1);
    peer->send(Pistache::RawBuffer(std::move(bytes), length))
        .then([shared = shared_](ssize_t) { shared->pending_writes.fetch_sub(1); },
              [shared = shared_](std::exception_ptr&) { shared->pending_writes.fetch_sub(1); });
    return true;
  }

  std::weak_ptr<Pistache::Tcp::Peer> peer_;
  const std::string request_id_;
  const bool keep_alive_;
  const std::shared_ptr<Shared> shared_;
  bool stream_open_ = false;  // written by one thread at a time (see ResponseSink)
};

// A header's value whether Pistache parsed it into a typed header or kept it raw.
std::optional<std::string> HeaderValue(const Request& request, const std::string& name) {
  const auto& headers = request.headers();
  if (std::shared_ptr<const Pistache::Http::Header::Header> typed = headers.tryGet(name)) {
    std::ostringstream value;
    typed->write(value);
    return value.str();
  }
  if (std::optional<Pistache::Http::Header::Raw> raw = headers.tryGetRaw(name)) {
    return raw->value();
  }
  return std::nullopt;
}

bool IsPrintableToken(std::string_view value) {
  for (char c : value) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

class Handler final : public Pistache::Http::Handler {
 public:
  HTTP_PROTOTYPE(Handler)

  explicit Handler(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  void onRequest(const Request& request, ResponseWriter writer) override {
    std::weak_ptr<Pistache::Tcp::Peer> peer;
    try {
      peer = writer.peer();
    } catch (const std::exception&) {
      return;  // the client is already gone
    }
    if (auto p = peer.lock()) {
      // Pistache keeps its own connection hook private: count a connection at its first
      // request (on its reactor thread, as onDisconnection is).
      if (!p->tryGetData(kCountedKey)) {
        p->putData(kCountedKey, std::make_shared<bool>(true));
        shared_->open_connections.fetch_add(1);
        shared_->total_connections.fetch_add(1);
      }
      // Replies are written outside Pistache's writer; mark the connection between requests so
      // the sweeper never writes a 408 into a reply in progress.
      p->setIdle(true);
    }
    std::string request_id;
    if (std::optional<std::string> given = HeaderValue(request, "X-Request-Id");
        given && !given->empty() && given->size() <= kMaxRequestIdLength &&
        IsPrintableToken(*given)) {
      request_id = *given;
    } else {
      request_id = RandomToken(*shared_->random, 20);
    }
    std::optional<std::string> connection = HeaderValue(request, "Connection");
    const bool keep_alive =
        request.version() == Pistache::Http::Version::Http11
            ? !(connection && absl::StrContains(absl::AsciiStrToLower(*connection), "close"))
            : (connection && absl::StrContains(absl::AsciiStrToLower(*connection), "keep-alive"));
    auto sink = std::make_shared<PeerSink>(peer, request_id, keep_alive, shared_);
    try {
      Route(request, peer, request_id, sink);
    } catch (const std::exception& e) {
      spdlog::error("request_id={} unhandled exception: {}", request_id, e.what());
      gateway::SendError(*sink, absl::InternalError("internal error"));
    }
  }

  // Replaces Pistache's own hook (which installs the stock parser) to install the hardened one:
  // hostile heads get 400/413/431 instead of a 500, a quadratic scan or no answer at all.
  void onConnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override {
    peer->putData(ParserData, NewCheckedRequestParser(getMaxRequestSize(), kMaxHeadBytes));
  }

  void onDisconnection(const std::shared_ptr<Pistache::Tcp::Peer>& peer) override {
    if (peer->tryGetData(kCountedKey)) shared_->open_connections.fetch_sub(1);
    if (std::shared_ptr<void> cancel = peer->tryGetData(kCancelKey)) {
      if (auto& function = *std::static_pointer_cast<std::function<void()>>(cancel)) function();
    }
    Pistache::Http::Handler::onDisconnection(peer);
  }

 private:
  void Route(const Request& request, const std::weak_ptr<Pistache::Tcp::Peer>& peer,
             const std::string& request_id, const std::shared_ptr<PeerSink>& sink) {
    const std::string& path = request.resource();
    const Method method = request.method();
    auto only = [&](Method allowed, const char* allow) {
      if (method == allowed) return true;
      gateway::SendError(*sink, MethodNotAllowedError(absl::StrCat("use ", allow, " on ", path)),
                         {{"Allow", allow}});
      return false;
    };
    if (path == "/v1/chat/completions" || path == "/chat/completions") {
      if (only(Method::Post, "POST")) Chat(request, peer, request_id, sink);
      return;
    }
    if (path == "/healthz" || path == "/health") {
      if (only(Method::Get, "GET")) Health(sink);
      return;
    }
    if (path == "/metrics" && shared_->registry != nullptr) {
      if (only(Method::Get, "GET")) Metrics(sink);
      return;
    }
    if (path == "/api/routing/stats") {
      if (!only(Method::Get, "GET")) return;
      if (!Authorized(request, sink, BlockingApi::Access::kAdmin)) return;
      sink->SendJson(200, {}, llm::DumpJson(shared_->gateway->RoutingStats()));
      return;
    }
    if (path == "/v1/models" || path == "/models") {
      if (!only(Method::Get, "GET")) return;
      if (!Authorized(request, sink, BlockingApi::Access::kData)) return;
      SendResult(sink, shared_->gateway->ListModels(std::nullopt));
      return;
    }
    for (std::string_view prefix : {"/v1/models/", "/models/"}) {
      if (absl::StartsWith(path, ToAbsl(prefix)) && path.size() > prefix.size()) {
        if (!only(Method::Get, "GET")) return;
        if (!Authorized(request, sink, BlockingApi::Access::kData)) return;
        SendResult(sink, shared_->gateway->ListModels(PercentDecode(path.substr(prefix.size()))));
        return;
      }
    }
    for (BlockingApi* api : shared_->blocking_apis) {
      if (api->Handles(path)) {
        Blocking(*api, request, request_id, sink);
        return;
      }
    }
    gateway::SendError(
        *sink, WithErrorCode(
                   absl::NotFoundError(absl::StrCat(
                       "no route for ", ToAbsl(Pistache::Http::methodString(method)), " ", path)),
                   "unknown_url"));
  }

  // Memory, RAG and embeddings: authorised and size-checked here, run on a worker thread.
  // One access-log line for a memory, RAG, embeddings or admin request.
  struct ApiAccess {
    nlohmann::ordered_json line;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    void Log(int http_status) {
      line["status"] = http_status;
      line["latency_ms"] = std::round(std::chrono::duration<double, std::milli>(
                                          std::chrono::steady_clock::now() - started)
                                          .count() *
                                      1000) /
                           1000;
      LogAccess(line);
    }
  };

  void Blocking(BlockingApi& api, const Request& request, const std::string& request_id,
                const std::shared_ptr<PeerSink>& sink) {
    ApiAccess access;
    access.line["request_id"] = request_id;
    access.line["client"] = request.address().host();
    access.line["method"] = std::string(Pistache::Http::methodString(request.method()));
    access.line["path"] = request.resource();
    auto refuse = [&](const absl::Status& status) {
      access.Log(ToHttpError(status).http_status);
      SendAuthError(sink, status);
    };
    absl::StatusOr<auth::Principal> principal =
        Authenticate(request, api.AccessFor(request.resource()));
    if (!principal.ok()) return refuse(principal.status());
    access.line["key_id"] = principal->role == auth::Role::kAdmin ? "admin" : principal->key_id;
    if (static_cast<int64_t>(request.body().size()) > shared_->max_body_bytes) {
      return refuse(PayloadTooLargeError(absl::StrCat("request body of ", request.body().size(),
                                                      " bytes exceeds the limit of ",
                                                      shared_->max_body_bytes)));
    }
    if (!request.body().empty()) {
      if (std::optional<std::string> type = HeaderValue(request, "Content-Type")) {
        std::string mime = absl::AsciiStrToLower(*type);
        if (!absl::StartsWith(absl::StripLeadingAsciiWhitespace(mime), "application/json")) {
          return refuse(UnsupportedMediaTypeError(
              absl::StrCat("Content-Type must be application/json, got '", *type, "'")));
        }
      }
    }
    const bool queued = shared_->workers->Submit(
        [api = &api, sink, access,
         method = std::string(Pistache::Http::methodString(request.method())),
         path = request.resource(), body = request.body()]() mutable {
          absl::StatusOr<BlockingApi::Reply> reply = api->Handle(method, path, body);
          if (!reply.ok()) {
            access.Log(ToHttpError(reply.status()).http_status);
            gateway::SendError(*sink, reply.status());
            return;
          }
          access.Log(reply->http_status);
          sink->SendJson(reply->http_status, {}, std::move(reply->json_body));
        });
    if (!queued) {
      refuse(WithRetryAfter(absl::UnavailableError("ailb is overloaded: too much memory and RAG "
                                                   "work is queued; retry shortly"),
                            1));
    }
  }

  static void SendResult(const std::shared_ptr<PeerSink>& sink,
                         const absl::StatusOr<nlohmann::json>& result) {
    if (!result.ok()) {
      gateway::SendError(*sink, result.status());
      return;
    }
    sink->SendJson(200, {}, llm::DumpJson(*result));
  }

  void Metrics(const std::shared_ptr<PeerSink>& sink) {
    sink->SendText(200, "text/plain; version=0.0.4; charset=utf-8",
                   shared_->registry->RenderPrometheus());
  }

  void Health(const std::shared_ptr<PeerSink>& sink) {
    gateway::Gateway::Health health = shared_->gateway->CheckHealth();
    sink->SendJson(health.can_serve ? 200 : 503, {}, llm::DumpJson(health.body));
  }

  static std::optional<std::string> PresentedKey(const Request& request) {
    return PresentedApiKey(HeaderValue(request, "Authorization"), HeaderValue(request, "x-api-key"),
                           HeaderValue(request, "api-key"));
  }

  // Who is calling, or the error that refuses the call (401 for a missing or unknown key, 403
  // for a key without the access the endpoint needs).
  absl::StatusOr<auth::Principal> Authenticate(const Request& request,
                                               BlockingApi::Access access) const {
    if (shared_->keys == nullptr) {
      if (access == BlockingApi::Access::kKeyAdmin) return KeyAdminDisabled();
      return auth::Principal{};
    }
    AILB_ASSIGN_OR_RETURN(auth::Principal principal,
                          shared_->keys->Authenticate(PresentedKey(request)));
    switch (access) {
      case BlockingApi::Access::kData:
        break;
      case BlockingApi::Access::kAdmin:
        if (principal.role == auth::Role::kClient && shared_->keys->HasAdminKey()) {
          return WithErrorCode(
              absl::PermissionDeniedError("this endpoint needs the admin key (AILB_ADMIN_KEY)"),
              "admin_key_required");
        }
        break;
      case BlockingApi::Access::kKeyAdmin:
        if (!shared_->keys->HasAdminKey()) return KeyAdminDisabled();
        if (principal.role != auth::Role::kAdmin) {
          return WithErrorCode(absl::PermissionDeniedError(
                                   "key administration needs the admin key (AILB_ADMIN_KEY)"),
                               "admin_key_required");
        }
        break;
    }
    return principal;
  }

  static absl::Status KeyAdminDisabled() {
    return WithErrorCode(absl::PermissionDeniedError(
                             "key administration is disabled: no admin key is configured (set "
                             "AILB_ADMIN_KEY)"),
                         "admin_key_required");
  }

  static void SendAuthError(const std::shared_ptr<PeerSink>& sink, const absl::Status& status) {
    upstream::Headers headers;
    if (status.code() == absl::StatusCode::kUnauthenticated) {
      headers.emplace_back("WWW-Authenticate", "Bearer");
    }
    gateway::SendError(*sink, status, std::move(headers));
  }

  bool Authorized(const Request& request, const std::shared_ptr<PeerSink>& sink,
                  BlockingApi::Access access) {
    absl::StatusOr<auth::Principal> principal = Authenticate(request, access);
    if (principal.ok()) return true;
    SendAuthError(sink, principal.status());
    return false;
  }

  void Chat(const Request& request, const std::weak_ptr<Pistache::Tcp::Peer>& peer,
            const std::string& request_id, const std::shared_ptr<PeerSink>& sink) {
    gateway::RequestContext context;
    context.request_id = request_id;
    context.client_address = request.address().host();
    context.received_at = shared_->gateway->clock().Now();
    context.request_bytes = static_cast<int64_t>(request.body().size());
    // Refusals made here are logged and counted like the gateway's own.
    auto refuse = [&](const absl::Status& status) {
      shared_->gateway->RecordRefusal("", false, std::nullopt, context, status);
      SendAuthError(sink, status);
    };
    absl::StatusOr<auth::Principal> principal = Authenticate(request, BlockingApi::Access::kData);
    if (!principal.ok()) return refuse(principal.status());
    context.principal = *principal;
    if (std::optional<std::string> type = HeaderValue(request, "Content-Type")) {
      std::string mime = absl::AsciiStrToLower(*type);
      if (!absl::StartsWith(absl::StripLeadingAsciiWhitespace(mime), "application/json")) {
        return refuse(UnsupportedMediaTypeError(
            absl::StrCat("Content-Type must be application/json, got '", *type, "'")));
      }
    }
    if (static_cast<int64_t>(request.body().size()) > shared_->max_body_bytes) {
      return refuse(PayloadTooLargeError(absl::StrCat("request body of ", request.body().size(),
                                                      " bytes exceeds the limit of ",
                                                      shared_->max_body_bytes)));
    }
    absl::StatusOr<llm::ChatRequest> chat = llm::ParseChatRequest(request.body());
    if (!chat.ok()) return refuse(chat.status());
    if (!chat->session_id) {
      if (std::optional<std::string> session = HeaderValue(request, "X-Session-ID");
          session && !session->empty()) {
        if (session->size() > llm::kMaxSessionIdBytes || !IsPrintableToken(*session)) {
          return refuse(InvalidFieldError(
              "X-Session-ID", absl::StrCat("X-Session-ID must be 1 to ", llm::kMaxSessionIdBytes,
                                           " printable characters without spaces")));
        }
        chat->session_id = *session;
      }
    }
    context.api_key = PresentedKey(request).value_or("");
    if (std::optional<std::string> preferred = HeaderValue(request, "X-Preferred-Model");
        preferred && !preferred->empty()) {
      context.preferred_model = *preferred;
    }
    context.routing_strategy = HeaderValue(request, "X-Ailb-Routing-Strategy");
    context.timeout_ms = HeaderValue(request, "X-Ailb-Timeout-Ms");
    context.first_byte_timeout_ms = HeaderValue(request, "X-Ailb-First-Byte-Timeout-Ms");
    std::function<void()> cancel =
        shared_->gateway->HandleChat(*std::move(chat), std::move(context), sink);
    if (auto p = peer.lock()) {
      // Pistache's peer data cannot be replaced (putData throws for a key that exists), so a
      // kept-alive connection keeps one slot for the cancel function of its latest chat request.
      // Only this reactor thread touches it, as onDisconnection does.
      std::shared_ptr<void> slot = p->tryGetData(kCancelKey);
      if (!slot) {
        slot = std::make_shared<std::function<void()>>();
        p->putData(kCancelKey, slot);
      }
      *std::static_pointer_cast<std::function<void()>>(slot) = std::move(cancel);
    }
  }

  std::shared_ptr<Shared> shared_;
};

class PistacheHttpServer final : public HttpServer {
 public:
  PistacheHttpServer(std::shared_ptr<Shared> shared,
                     std::unique_ptr<Pistache::Http::Endpoint> endpoint)
      : shared_(std::move(shared)), endpoint_(std::move(endpoint)) {}
  ~PistacheHttpServer() override { Shutdown(); }

  int port() const override { return static_cast<uint16_t>(endpoint_->getPort()); }
  int open_streams() const override { return shared_->open_streams.load(); }
  int64_t open_connections() const override { return shared_->open_connections.load(); }
  int64_t total_connections() const override { return shared_->total_connections.load(); }
  bool WaitForPendingWrites(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (shared_->pending_writes.load() > 0) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  void Shutdown() override {
    if (!stopped_.exchange(true)) endpoint_->shutdown();
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<Pistache::Http::Endpoint> endpoint_;
  std::atomic<bool> stopped_{false};
};

// Pistache 0.0.5 listens with a backlog of 128 whatever Options::backlog says: a burst of new
// connections overflowed it and the kernel dropped SYNs, stalling those clients' connects for a
// 1 s retransmit. listen() on a listening socket only changes its backlog (the kernel caps it at
// net.core.somaxconn), so find the endpoint's socket and call it again.
void RaiseAcceptBacklog(uint16_t port) {
  constexpr int kAcceptBacklog = 4096;
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    const std::string name = it->path().filename().string();
    int fd = -1;
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc()) continue;
    int listening = 0;
    socklen_t length = sizeof(listening);
    sockaddr_storage address{};
    socklen_t address_length = sizeof(address);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || listening == 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0) {
      continue;
    }
    uint16_t bound = 0;
    if (address.ss_family == AF_INET) {
      bound = ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
    } else if (address.ss_family == AF_INET6) {
      bound = ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
    }
    if (bound == port && listen(fd, kAcceptBacklog) != 0) {
      spdlog::warn("cannot raise the HTTP accept backlog: {}", std::strerror(errno));
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              HttpServerDeps deps) {
  if (deps.gateway == nullptr || deps.config == nullptr) {
    return absl::InvalidArgumentError("the HTTP server needs a gateway and a configuration");
  }
  auto shared = std::make_shared<Shared>();
  shared->registry = deps.registry;
  if (deps.workers != nullptr) {
    shared->blocking_apis = std::move(deps.blocking_apis);
    shared->workers = deps.workers;
  }
  shared->keys = deps.keys;
  shared->gateway = deps.gateway;
  shared->config = deps.config;
  shared->max_body_bytes = options.max_body_bytes;
  try {
    Pistache::Address address(options.host, Pistache::Port(static_cast<uint16_t>(options.port)));
    auto endpoint = std::make_unique<Pistache::Http::Endpoint>(address);
    // Pistache caps the whole request (line + headers + body) at 4 KiB by default. Leave room
    // above the body limit so an oversized body still reaches us and gets a JSON 413.
    auto server_options =
        Pistache::Http::Endpoint::options()
            .threads(options.threads)
            .flags(Pistache::Tcp::Options::ReuseAddr)
            .maxRequestSize(static_cast<size_t>(options.max_body_bytes) + (1 << 20))
            .maxResponseSize(1 << 20)
            .keepaliveTimeout(options.keepalive_timeout);
    endpoint->init(server_options);
    endpoint->setHandler(std::make_shared<Handler>(shared));
    endpoint->serveThreaded();
    RaiseAcceptBacklog(static_cast<uint16_t>(endpoint->getPort()));
    return std::make_unique<PistacheHttpServer>(std::move(shared), std::move(endpoint));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", options.host, ":", options.port, ": ", e.what()));
  }
}

}  // namespace ailb::server
