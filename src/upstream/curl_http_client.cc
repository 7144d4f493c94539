#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <queue>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ailb/upstream/http_client.h"
#include "spdlog/spdlog.h"
#include "upstream/curl_handles.h"

namespace ailb::upstream {

std::string_view FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(absl::string_view(key.data(), key.size()),
                               absl::string_view(name.data(), name.size()))) {
      return value;
    }
  }
  return {};
}

namespace {

using Clock = std::chrono::steady_clock;

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// One transfer; owned by the event thread once started.
struct Transfer {
  HttpClient::TransferId id = 0;
  Request request;
  std::shared_ptr<ResponseObserver> observer;
  EasyHandle easy;
  HeaderList header_list;
  char error_buffer[CURL_ERROR_SIZE] = {0};
  int http_status = 0;
  Headers response_headers;
  bool head_delivered = false;
  bool body_started = false;
  Clock::time_point started_at;
  Clock::time_point last_activity;
  absl::Status abort_reason;  // why we stopped it ourselves, if we did
};

struct Timer {
  Clock::time_point due;
  uint64_t sequence;
  std::function<void()> task;
  bool operator>(const Timer& other) const {
    return due != other.due ? due > other.due : sequence > other.sequence;
  }
};

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(CurlClientOptions options)
      : options_(options), multi_(curl_multi_init()) {
    curl_multi_setopt(multi_.get(), CURLMOPT_MAXCONNECTS,
                      static_cast<long>(options_.max_cached_connections));
    curl_multi_setopt(multi_.get(), CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    loop_ = std::thread([this] { Run(); });
  }

  ~CurlHttpClient() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    curl_multi_wakeup(multi_.get());
    loop_.join();
  }

  TransferId Start(Request request, std::shared_ptr<ResponseObserver> observer) override {
    auto transfer = std::make_unique<Transfer>();
    transfer->request = std::move(request);
    transfer->observer = std::move(observer);
    TransferId id;
    {
      std::lock_guard lock(mu_);
      id = ++last_id_;
      transfer->id = id;
      pending_starts_.push_back(std::move(transfer));
    }
    active_count_.fetch_add(1, std::memory_order_relaxed);
    curl_multi_wakeup(multi_.get());
    return id;
  }

  void Cancel(TransferId id) override {
    {
      std::lock_guard lock(mu_);
      pending_cancels_.push_back(id);
    }
    curl_multi_wakeup(multi_.get());
  }

  void RunAfter(std::chrono::milliseconds delay, std::function<void()> task) override {
    {
      std::lock_guard lock(mu_);
      pending_timers_.push_back(Timer{Clock::now() + delay, 0, std::move(task)});
    }
    curl_multi_wakeup(multi_.get());
  }

  size_t ActiveTransfers() const override { return active_count_.load(std::memory_order_relaxed); }

 private:
  void Run() {
    Clock::time_point next_sweep = Clock::now() + options_.sweep_interval;
    while (true) {
      std::vector<std::unique_ptr<Transfer>> starts;
      std::vector<TransferId> cancels;
      std::vector<Timer> timers;
      {
        std::lock_guard lock(mu_);
        if (stopping_) break;
        starts.swap(pending_starts_);
        cancels.swap(pending_cancels_);
        timers.swap(pending_timers_);
      }
      for (Timer& timer : timers) {
        timer.sequence = ++timer_sequence_;
        timers_.push(std::move(timer));
      }
      for (auto& transfer : starts) Begin(std::move(transfer));
      for (TransferId id : cancels) {
        auto it = active_.find(id);
        if (it != active_.end())
          Abort(it->second.get(), absl::CancelledError("transfer cancelled"));
      }
      RunDueTimers();

      int running = 0;
      curl_multi_perform(multi_.get(), &running);
      CollectFinished();

      const Clock::time_point now = Clock::now();
      if (now >= next_sweep) {
        SweepDeadlines(now);
        next_sweep = now + options_.sweep_interval;
      }

      long curl_timeout_ms = -1;
      curl_multi_timeout(multi_.get(), &curl_timeout_ms);
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep - Clock::now());
      if (active_.empty()) wait = std::chrono::milliseconds(1000);
      if (curl_timeout_ms >= 0) wait = std::min(wait, std::chrono::milliseconds(curl_timeout_ms));
      if (!timers_.empty()) {
        wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  timers_.top().due - Clock::now()));
      }
      wait = std::max(wait, std::chrono::milliseconds(0));
      curl_multi_poll(multi_.get(), nullptr, 0, static_cast<int>(wait.count()), nullptr);
    }
    // Shutting down: every transfer still running completes as cancelled.
    std::vector<TransferId> ids;
    for (const auto& [id, transfer] : active_) ids.push_back(id);
    for (TransferId id : ids)
      Abort(active_[id].get(), absl::CancelledError("client shutting down"));
    std::lock_guard lock(mu_);
    for (auto& transfer : pending_starts_) {
      transfer->observer->OnComplete(absl::CancelledError("client shutting down"));
    }
    pending_starts_.clear();
  }

  void RunDueTimers() {
    const Clock::time_point now = Clock::now();
    while (!timers_.empty() && timers_.top().due <= now) {
      std::function<void()> task = std::move(const_cast<Timer&>(timers_.top()).task);
      timers_.pop();
      task();
    }
  }

  EasyHandle TakeEasy() {
    if (!idle_easies_.empty()) {
      EasyHandle easy = std::move(idle_easies_.back());
      idle_easies_.pop_back();
      curl_easy_reset(easy.get());
      return easy;
    }
    return EasyHandle(curl_easy_init());
  }

  void Begin(std::unique_ptr<Transfer> transfer) {
    Transfer* t = transfer.get();
    t->easy = TakeEasy();
    if (!t->easy) {
      active_count_.fetch_sub(1, std::memory_order_relaxed);
      t->observer->OnComplete(absl::ResourceExhaustedError("could not allocate a curl handle"));
      return;
    }
    CURL* easy = t->easy.get();
    const Request& r = t->request;
    curl_easy_setopt(easy, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error_buffer);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &CurlHttpClient::HeaderCallback);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &CurlHttpClient::WriteCallback);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(r.total_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, r.verify_tls ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, r.verify_tls ? 2L : 0L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r.method == "GET") {
      curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(easy, CURLOPT_POST, 1L);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
      if (r.method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    curl_slist* list = nullptr;
    for (const auto& [name, value] : r.headers) {
      list = curl_slist_append(list, absl::StrCat(name, ": ", value).c_str());
    }
    // Large bodies must not wait for a 100 Continue the upstream may never send.
    list = curl_slist_append(list, "Expect:");
    t->header_list.reset(list);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);

    t->started_at = t->last_activity = Clock::now();
    CURLMcode added = curl_multi_add_handle(multi_.get(), easy);
    if (added != CURLM_OK) {
      active_count_.fetch_sub(1, std::memory_order_relaxed);
      t->observer->OnComplete(
          absl::InternalError(absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(added))));
      return;
    }
    active_.emplace(t->id, std::move(transfer));
  }

  static size_t HeaderCallback(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t length = size * count;
    std::string_view line(data, length);
    if (absl::StartsWith(absl::string_view(line.data(), line.size()), "HTTP/")) {
      // A new header block (1xx, redirects): start over.
      t->response_headers.clear();
      std::string_view rest =
          line.substr(line.find(' ') == std::string_view::npos ? line.size() : line.find(' ') + 1);
      int status = 0;
      std::from_chars(rest.data(), rest.data() + std::min<size_t>(rest.size(), 3), status);
      t->http_status = status;
      return length;
    }
    std::string_view trimmed = TrimView(line);
    if (trimmed.empty()) {
      if (t->http_status >= 200 && !t->head_delivered) {
        t->head_delivered = true;
        if (!t->observer->OnResponseHead(t->http_status, t->response_headers)) {
          t->abort_reason = absl::CancelledError("cancelled by observer");
          return 0;
        }
      }
      return length;
    }
    size_t colon = trimmed.find(':');
    if (colon != std::string_view::npos) {
      t->response_headers.emplace_back(std::string(TrimView(trimmed.substr(0, colon))),
                                       std::string(TrimView(trimmed.substr(colon + 1))));
    }
    return length;
  }

  static size_t WriteCallback(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t length = size * count;
    if (!t->head_delivered) {
      long status = 0;
      curl_easy_getinfo(t->easy.get(), CURLINFO_RESPONSE_CODE, &status);
      t->http_status = static_cast<int>(status);
      t->head_delivered = true;
      if (!t->observer->OnResponseHead(t->http_status, t->response_headers)) {
        t->abort_reason = absl::CancelledError("cancelled by observer");
        return CURL_WRITEFUNC_ERROR;
      }
    }
    t->body_started = true;
    t->last_activity = Clock::now();
    if (!t->observer->OnBodyData(std::string_view(data, length))) {
      t->abort_reason = absl::CancelledError("cancelled by observer");
      return CURL_WRITEFUNC_ERROR;
    }
    return length;
  }

  absl::Status StatusFor(Transfer* t, CURLcode code) {
    if (!t->abort_reason.ok()) return t->abort_reason;
    const std::string detail = t->error_buffer[0] ? t->error_buffer : curl_easy_strerror(code);
    switch (code) {
      case CURLE_OK:
        return absl::OkStatus();
      case CURLE_OPERATION_TIMEDOUT: {
        // libcurl words its connect timeout "Connection timed out after ..." and its total one
        // "Operation timed out after ...". (The connect time alone cannot tell: it is zero on a
        // reused connection too.)
        if (!t->head_delivered && t->http_status == 0 &&
            absl::StrContains(detail, "Connection timed out")) {
          return absl::DeadlineExceededError(absl::StrCat(
              "connect to upstream timed out after ", t->request.connect_timeout.count(), " ms"));
        }
        return absl::DeadlineExceededError(absl::StrCat("upstream exceeded the total deadline of ",
                                                        t->request.total_timeout.count(), " ms"));
      }
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        return absl::UnavailableError(absl::StrCat("cannot connect to upstream: ", detail));
      default:
        return absl::UnavailableError(absl::StrCat("upstream transfer failed: ", detail));
    }
  }

  // Removes `t` from the multi handle and reports `status` to its observer.
  void Finish(Transfer* t, absl::Status status) {
    auto node = active_.extract(t->id);
    curl_multi_remove_handle(multi_.get(), t->easy.get());
    active_count_.fetch_sub(1, std::memory_order_relaxed);
    std::shared_ptr<ResponseObserver> observer = std::move(t->observer);
    if (idle_easies_.size() < 256) idle_easies_.push_back(std::move(t->easy));
    node.mapped().reset();
    observer->OnComplete(status);
  }

  void Abort(Transfer* t, absl::Status reason) { Finish(t, std::move(reason)); }

  void CollectFinished() {
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi_.get(), &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      if (t == nullptr) continue;
      const CURLcode code = message->data.result;
      if (code == CURLE_OK && !t->head_delivered) {
        long status = 0;
        curl_easy_getinfo(t->easy.get(), CURLINFO_RESPONSE_CODE, &status);
        t->head_delivered = true;
        if (!t->observer->OnResponseHead(static_cast<int>(status), t->response_headers)) {
          t->abort_reason = absl::CancelledError("cancelled by observer");
        }
      }
      Finish(t, StatusFor(t, code));
    }
  }

  void SweepDeadlines(Clock::time_point now) {
    std::vector<std::pair<Transfer*, absl::Status>> expired;
    for (auto& [id, transfer] : active_) {
      Transfer* t = transfer.get();
      if (!t->body_started && now - t->started_at > t->request.first_byte_timeout) {
        expired.emplace_back(t, absl::DeadlineExceededError(absl::StrCat(
                                    "upstream sent no response within the first-byte deadline of ",
                                    t->request.first_byte_timeout.count(), " ms")));
      } else if (t->body_started && now - t->last_activity > t->request.idle_timeout) {
        expired.emplace_back(
            t, absl::DeadlineExceededError(absl::StrCat("upstream stream stalled for more than ",
                                                        t->request.idle_timeout.count(), " ms")));
      }
    }
    for (auto& [t, status] : expired) Abort(t, std::move(status));
  }

  const CurlClientOptions options_;
  MultiHandle multi_;
  std::thread loop_;
  std::atomic<size_t> active_count_{0};

  std::mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  TransferId last_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<Transfer>> pending_starts_ ABSL_GUARDED_BY(mu_);
  std::vector<TransferId> pending_cancels_ ABSL_GUARDED_BY(mu_);
  std::vector<Timer> pending_timers_ ABSL_GUARDED_BY(mu_);

  // Event-thread state.
  absl::flat_hash_map<TransferId, std::unique_ptr<Transfer>> active_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  uint64_t timer_sequence_ = 0;
  std::vector<EasyHandle> idle_easies_;
};

}  // namespace

std::unique_ptr<HttpClient> NewCurlHttpClient(CurlClientOptions options) {
  return std::make_unique<CurlHttpClient>(options);
}

}  // namespace ailb::upstream
