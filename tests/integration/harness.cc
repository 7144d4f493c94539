#include "integration/harness.h"

#include <curl/curl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <regex>

extern char** environ;

namespace ailb::testing {
namespace {

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

size_t CollectHeader(char* data, size_t size, size_t count, void* user) {
  std::string line(data, size * count);
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  if (line.rfind("HTTP/", 0) == 0) headers->clear();
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*headers)[name] = value;
  }
  return size * count;
}

struct StreamState {
  std::string* body;
  const std::function<bool(const std::string&)>* on_data;
};

size_t StreamWrite(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<StreamState*>(user);
  std::string piece(data, size * count);
  state->body->append(piece);
  if (*state->on_data && !(*state->on_data)(piece)) return 0;
  return size * count;
}

HttpResult Perform(CURL* curl, const std::string& method, const std::string& url,
                   const std::string& body, const std::vector<std::string>& headers,
                   long timeout_ms, HttpResult& result) {
  curl_slist* list = nullptr;
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  list = curl_slist_append(list, "Expect:");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &result.headers);
  if (method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    if (method != "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  CURLcode code = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  if (code != CURLE_OK) result.transport_error = curl_easy_strerror(code);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return result;
}

}  // namespace

nlohmann::json HttpResult::Json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string HttpResult::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpResult HttpCall(const std::string& method, const std::string& url, const std::string& body,
                    const std::vector<std::string>& headers, long timeout_ms) {
  HttpResult result;
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
  return Perform(curl, method, url, body, headers, timeout_ms, result);
}

HttpResult HttpStream(const std::string& url, const std::string& body,
                      const std::function<bool(const std::string&)>& on_data,
                      const std::vector<std::string>& headers, long timeout_ms) {
  HttpResult result;
  StreamState state{&result.body, &on_data};
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, StreamWrite);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &state);
  return Perform(curl, "POST", url, body, headers, timeout_ms, result);
}

std::vector<std::string> SseDataPayloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

std::string StreamedContent(const std::string& body) {
  std::string content;
  for (const std::string& payload : SseDataPayloads(body)) {
    nlohmann::json chunk = nlohmann::json::parse(payload, nullptr, false);
    if (chunk.is_discarded() || !chunk.is_object() || !chunk.contains("choices")) continue;
    for (const auto& choice : chunk["choices"]) {
      if (choice.contains("delta") && choice["delta"].contains("content") &&
          choice["delta"]["content"].is_string()) {
        content += choice["delta"]["content"].get<std::string>();
      }
    }
  }
  return content;
}

std::string ChatBody(const std::string& model, bool stream, const nlohmann::json& extra) {
  nlohmann::json body = {{"model", model},
                         {"messages", {{{"role", "user"}, {"content", "Say hello."}}}}};
  if (stream) body["stream"] = true;
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) body[key] = value;
  }
  return body.dump();
}

std::unique_ptr<AilbProcess> AilbProcess::Spawn(std::map<std::string, std::string> env,
                                                std::vector<std::string> args) {
  env.emplace("HTTP_PORT", "0");
  env.emplace("GRPC_PORT", "0");
  if (!env.count("AILB_DATA_DIR")) {
    // A fresh data directory per process keeps tests independent of each other.
    char dir_template[] = "/tmp/ailb-test-XXXXXX";
    if (char* dir = mkdtemp(dir_template)) env["AILB_DATA_DIR"] = dir;
  }
  env.emplace("HOST", "127.0.0.1");
  env.emplace("PATH", "/usr/bin:/bin");
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {AILB_BINARY_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return nullptr;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::unique_ptr<AilbProcess> process(new AilbProcess());
  int spawned = posix_spawn(&process->pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (spawned != 0) {
    close(pipe_fds[0]);
    std::cerr << "posix_spawn " << argv[0] << ": " << std::strerror(spawned) << "\n";
    return nullptr;
  }
  process->reader_ = std::thread([p = process.get(), fd = pipe_fds[0]] { p->ReadOutput(fd); });
  return process;
}

std::unique_ptr<AilbProcess> AilbProcess::Start(std::map<std::string, std::string> env,
                                                std::vector<std::string> args) {
  std::unique_ptr<AilbProcess> process = Spawn(std::move(env), std::move(args));
  if (!process) return nullptr;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  static const std::regex kListening(R"(listening: http=[^ ]*:(\d+) grpc=[^ ]*:(\d+))");
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch match;
    std::string logs = process->Logs();
    if (std::regex_search(logs, match, kListening)) {
      process->http_port_ = std::stoi(match[1]);
      process->grpc_port_ = std::stoi(match[2]);
      return process;
    }
    int status = 0;
    if (waitpid(process->pid_, &status, WNOHANG) == process->pid_) {
      process->exited_ = true;
      process->exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::cerr << "ailb did not start; output:\n" << process->Logs() << "\n";
  return nullptr;
}

std::pair<int, std::string> AilbProcess::RunToExit(std::map<std::string, std::string> env,
                                                   std::vector<std::string> args) {
  std::unique_ptr<AilbProcess> process = Spawn(std::move(env), std::move(args));
  if (!process) return {-1, ""};
  int code = process->WaitForExit(std::chrono::seconds(10));
  if (code < 0) return {-1, process->Logs()};
  if (process->reader_.joinable()) process->reader_.join();
  return {code, process->Logs()};
}

AilbProcess::~AilbProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGTERM);
    if (WaitForExit(std::chrono::seconds(10)) < 0) {
      kill(pid_, SIGKILL);
      WaitForExit(std::chrono::seconds(5));
    }
  }
  if (reader_.joinable()) reader_.join();
}

void AilbProcess::ReadOutput(int fd) {
  char buffer[4096];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    std::lock_guard lock(mu_);
    output_.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
}

std::string AilbProcess::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(http_port_) + path;
}

std::string AilbProcess::Logs() const {
  std::lock_guard lock(mu_);
  return output_;
}

bool AilbProcess::WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (Logs().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void AilbProcess::Signal(int signal_number) const { kill(pid_, signal_number); }

int AilbProcess::WaitForExit(std::chrono::milliseconds timeout) {
  if (exited_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

}  // namespace ailb::testing
