#include "ailb/cli/ingest.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/common/utf8.h"
#include "upstream/curl_handles.h"

#ifndef AILB_VERSION
#define AILB_VERSION "dev"
#endif

namespace ailb::cli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxIdBytes = 256;
constexpr char kStdinSource[] = "<stdin>";
// The envelope of an upsert body: {"documents":[ ... ]}.
constexpr size_t kUpsertEnvelopeBytes = sizeof("{\"documents\":[]}") - 1;

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool IsBlank(std::string_view s) { return absl::StripAsciiWhitespace(ToAbsl(s)).empty(); }

bool IsScalar(const json& value) {
  if (value.is_number_float()) return std::isfinite(value.get<double>());
  return value.is_string() || value.is_number() || value.is_boolean() || value.is_null();
}

bool IsScalarOrScalarArray(const json& value) {
  if (!value.is_array()) return IsScalar(value);
  return std::all_of(value.begin(), value.end(), [](const json& e) { return IsScalar(e); });
}

// Records the parser's message for invalid JSON without exceptions (the DOM parser, with
// allow_exceptions=false, only says "discarded").
class SyntaxErrorCatcher {
 public:
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) { return true; }
  bool key(std::string&) { return true; }
  bool end_object() { return true; }
  bool start_array(std::size_t) { return true; }
  bool end_array() { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) {
    message_ = error.what();
    return false;
  }

  std::string message() const {
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ...".
    std::string_view m = message_;
    if (absl::StartsWith(ToAbsl(m), "[json.exception.")) {
      if (size_t end = m.find("] "); end != std::string_view::npos) m.remove_prefix(end + 2);
    }
    return m.empty() ? std::string("invalid JSON") : std::string(m);
  }

 private:
  std::string message_;
};

std::string SyntaxErrorOf(std::string_view line) {
  SyntaxErrorCatcher catcher;
  json::sax_parse(line.begin(), line.end(), &catcher);
  return catcher.message();
}

absl::StatusOr<std::string> IdOf(const json& value, std::string_view field) {
  std::string id;
  if (value.is_string()) {
    id = value.get<std::string>();
  } else if (value.is_number_integer()) {
    id = Dump(value);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", ToAbsl(field), "\" must be a string or an integer"));
  }
  if (id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", ToAbsl(field), "\" is empty"));
  }
  if (id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", ToAbsl(field), "\" is longer than ", kMaxIdBytes, " bytes"));
  }
  return id;
}

std::string_view StripLineEnd(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  return line;
}

}  // namespace

// --- Conversion -------------------------------------------------------------------------------

absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "jsonl") return InputFormat::kJsonl;
  if (name == "text") return InputFormat::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format \"", ToAbsl(name), "\" (expected auto, jsonl or text)"));
}

InputFormat ResolveInputFormat(InputFormat requested, std::string_view path) {
  if (requested != InputFormat::kAuto) return requested;
  const absl::string_view p = ToAbsl(path);
  if (absl::EndsWithIgnoreCase(p, ".jsonl") || absl::EndsWithIgnoreCase(p, ".ndjson")) {
    return InputFormat::kJsonl;
  }
  return InputFormat::kText;
}

std::string InputError::ToString() const {
  if (line > 0) return absl::StrCat(source, ":", line, ": ", message);
  return absl::StrCat(source, ": ", message);
}

absl::StatusOr<Document> ParseJsonLine(std::string_view line, const JsonlFields& fields) {
  json value = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", SyntaxErrorOf(line)));
  }
  if (!value.is_object()) return absl::InvalidArgumentError("expected a JSON object");

  Document document;
  const auto id = value.find(fields.id);
  if (id == value.end() || id->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat("missing field \"", fields.id, "\""));
  }
  AILB_ASSIGN_OR_RETURN(document.id, IdOf(*id, fields.id));

  const auto text = value.find(fields.text);
  if (text == value.end() || text->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat("missing field \"", fields.text, "\""));
  }
  if (!text->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", fields.text, "\" must be a string"));
  }
  const std::string& body = text->get_ref<const std::string&>();
  if (IsBlank(body)) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", fields.text, "\" is empty"));
  }

  std::string title;
  if (!fields.title.empty()) {
    const auto t = value.find(fields.title);
    if (t != value.end() && !t->is_null()) {
      if (!t->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"", fields.title, "\" must be a string"));
      }
      title = t->get<std::string>();
    }
  }
  document.text = IsBlank(title) ? body : absl::StrCat(title, "\n", body);

  for (auto& [key, field] : value.items()) {
    if (key == fields.id || key == fields.text || (!fields.title.empty() && key == fields.title)) {
      continue;
    }
    if (IsScalarOrScalarArray(field)) document.metadata[key] = std::move(field);
  }
  return document;
}

DocumentBatch ParseJsonlContent(std::string_view content, std::string_view source,
                                const JsonlFields& fields, int64_t first_line) {
  DocumentBatch batch;
  int64_t line_number = first_line;
  while (!content.empty()) {
    const size_t end = content.find('\n');
    const std::string_view line =
        StripLineEnd(content.substr(0, end == std::string_view::npos ? content.size() : end));
    content.remove_prefix(end == std::string_view::npos ? content.size() : end + 1);
    const int64_t number = line_number++;
    if (IsBlank(line)) continue;
    absl::StatusOr<Document> document = ParseJsonLine(line, fields);
    if (!document.ok()) {
      batch.errors.push_back(
          {std::string(source), number, std::string(document.status().message())});
      continue;
    }
    document->source = std::string(source);
    document->line = number;
    batch.documents.push_back(*std::move(document));
  }
  return batch;
}

absl::StatusOr<Document> TextFileDocument(std::string_view path, std::string_view content) {
  if (path.empty()) return absl::InvalidArgumentError("empty path");
  if (path.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("path is longer than ", kMaxIdBytes, " bytes, the limit of a document id"));
  }
  if (!IsValidUtf8(path)) return absl::InvalidArgumentError("path is not valid UTF-8");
  if (content.find('\0') != std::string_view::npos || !IsValidUtf8(content)) {
    return absl::InvalidArgumentError("not UTF-8 text (binary file?)");
  }
  if (IsBlank(content)) return absl::InvalidArgumentError("empty file");
  Document document;
  document.id = std::string(path);
  document.text = std::string(content);
  document.metadata = json{{"source", std::string(path)}};
  document.source = std::string(path);
  return document;
}

DocumentBatch ConvertFile(std::string_view path, std::string_view content, InputFormat format,
                          const JsonlFields& fields) {
  if (ResolveInputFormat(format, path) == InputFormat::kJsonl) {
    return ParseJsonlContent(content, path, fields);
  }
  DocumentBatch batch;
  absl::StatusOr<Document> document = TextFileDocument(path, content);
  if (document.ok()) {
    batch.documents.push_back(*std::move(document));
  } else {
    batch.errors.push_back({std::string(path), 0, std::string(document.status().message())});
  }
  return batch;
}

// --- Batching ---------------------------------------------------------------------------------

namespace {

json DocumentJson(const Document& document) {
  return json{{"id", document.id}, {"text", document.text}, {"metadata", document.metadata}};
}

}  // namespace

size_t EncodedDocumentSize(const Document& document) { return Dump(DocumentJson(document)).size(); }

std::string EncodeUpsertBody(const std::vector<Document>& documents) {
  std::string body = "{\"documents\":[";
  for (size_t i = 0; i < documents.size(); ++i) {
    if (i > 0) body += ',';
    body += Dump(DocumentJson(documents[i]));
  }
  body += "]}";
  return body;
}

std::vector<std::vector<Document>> Batcher::Add(Document document) {
  std::vector<std::vector<Document>> ready;
  const size_t size = EncodedDocumentSize(document);
  const size_t max_documents = std::max<size_t>(limits_.max_documents, 1);
  // Body size with this document appended: envelope + documents + commas.
  const size_t with = kUpsertEnvelopeBytes + pending_bytes_ + pending_.size() + size;
  if (!pending_.empty() && with > limits_.max_bytes) {
    ready.push_back(std::move(pending_));
    pending_.clear();
    pending_bytes_ = 0;
  }
  pending_.push_back(std::move(document));
  pending_bytes_ += size;
  if (pending_.size() >= max_documents) {
    ready.push_back(std::move(pending_));
    pending_.clear();
    pending_bytes_ = 0;
  }
  return ready;
}

std::vector<Document> Batcher::Flush() {
  std::vector<Document> last = std::move(pending_);
  pending_.clear();
  pending_bytes_ = 0;
  return last;
}

std::vector<std::vector<Document>> SplitIntoBatches(std::vector<Document> documents,
                                                    BatchLimits limits) {
  Batcher batcher(limits);
  std::vector<std::vector<Document>> batches;
  for (Document& document : documents) {
    for (auto& batch : batcher.Add(std::move(document))) batches.push_back(std::move(batch));
  }
  if (std::vector<Document> last = batcher.Flush(); !last.empty()) {
    batches.push_back(std::move(last));
  }
  return batches;
}

// --- The command --------------------------------------------------------------------------------

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr long kConnectTimeoutMs = 5'000;
constexpr long kRequestTimeoutMs = 300'000;
constexpr int kMaxRetries = 5;
constexpr double kInitialBackoffSeconds = 0.5;
constexpr double kMaxBackoffSeconds = 30;
constexpr int kMaxErrorsShown = 100;
constexpr size_t kMaxBatchDocuments = 1000;  // the server's per-request limit

constexpr char kUsage[] = R"(Usage: ailb ingest --collection NAME [options] PATH...

Loads documents into a RAG collection of a running ailb through its HTTP API.

Inputs (PATH):
  FILE          a JSON lines file (.jsonl, .ndjson) or a text file (anything else)
  DIRECTORY     every regular file below it, recursively, in sorted order
  -             JSON lines from standard input

Options:
  --collection NAME         target collection (required)
  --url URL                 ailb base URL (default: $AILB_URL or http://127.0.0.1:8080)
  --api-key KEY             API key sent as a bearer token (default: $AILB_API_KEY)
  --create                  create the collection when it does not exist, with:
    --embedding-provider P    local | openai | ollama (default: local)
    --embedding-model M       provider model (default: empty, the provider's default)
    --dimensions N            embedding dimensions (default: 384)
    --max-tokens N            chunk size in tokens (default: 256)
    --overlap N               chunk overlap in tokens (default: 32)
  --batch N                 documents per request, 1-1000 (default: 64)
  --batch-bytes N           request body budget in bytes (default: 4194304)
  --format F                auto | jsonl | text (default: auto: .jsonl/.ndjson are JSON lines)
  --id-field F              JSON lines: field holding the document id (default: id)
  --text-field F            JSON lines: field holding the text (default: text)
  --title-field F           JSON lines: optional title, sent as title + "\n" + text
                            (default: title; empty to disable)
  -h, --help                print this help

JSON lines: one object per line; fields other than id, text and title become metadata when they
are scalars or arrays of scalars (others are dropped). Text files: id = the path as given,
metadata {"source": path}. Bad lines are reported as FILE:LINE and counted as failed.

Exit status: 0 when every document was ingested, 1 when some failed or the run was aborted,
2 for usage errors.
)";

struct Options {
  std::string collection;
  std::string url;
  std::string api_key;
  bool create = false;
  std::string embedding_provider = "local";
  std::string embedding_model;
  int dimensions = 384;
  int max_tokens = 256;
  int overlap = 32;
  BatchLimits batch;
  InputFormat format = InputFormat::kAuto;
  JsonlFields fields;
  std::vector<std::string> paths;
  bool help = false;
};

std::string EnvOr(const char* name, std::string fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : std::move(fallback);
}

absl::StatusOr<int64_t> ParseInteger(std::string_view option, std::string_view text, int64_t min,
                                     int64_t max) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(option), " expects an integer in [", min,
                                                   ", ", max, "], got \"", ToAbsl(text), "\""));
  }
  return value;
}

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options options;
  options.url = EnvOr("AILB_URL", "http://127.0.0.1:8080");
  options.api_key = EnvOr("AILB_API_KEY", "");
  bool options_done = false;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg == "-" || !absl::StartsWith(ToAbsl(arg), "-")) {
      options.paths.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      options.help = true;
      continue;
    }
    if (arg == "--create") {
      options.create = true;
      continue;
    }
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (inline_value) return std::string(*inline_value);
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat(ToAbsl(name), " needs a value"));
      }
      return std::string(argv[++i]);
    };
    auto integer = [&](int64_t min, int64_t max) -> absl::StatusOr<int64_t> {
      AILB_ASSIGN_OR_RETURN(std::string v, value());
      return ParseInteger(name, v, min, max);
    };
    if (name == "--collection") {
      AILB_ASSIGN_OR_RETURN(options.collection, value());
    } else if (name == "--url") {
      AILB_ASSIGN_OR_RETURN(options.url, value());
    } else if (name == "--api-key") {
      AILB_ASSIGN_OR_RETURN(options.api_key, value());
    } else if (name == "--embedding-provider") {
      AILB_ASSIGN_OR_RETURN(options.embedding_provider, value());
    } else if (name == "--embedding-model") {
      AILB_ASSIGN_OR_RETURN(options.embedding_model, value());
    } else if (name == "--dimensions") {
      AILB_ASSIGN_OR_RETURN(options.dimensions, integer(1, 65536));
    } else if (name == "--max-tokens") {
      AILB_ASSIGN_OR_RETURN(options.max_tokens, integer(1, 1 << 20));
    } else if (name == "--overlap") {
      AILB_ASSIGN_OR_RETURN(options.overlap, integer(0, 1 << 20));
    } else if (name == "--batch") {
      AILB_ASSIGN_OR_RETURN(options.batch.max_documents, integer(1, kMaxBatchDocuments));
    } else if (name == "--batch-bytes") {
      AILB_ASSIGN_OR_RETURN(options.batch.max_bytes, integer(1024, int64_t{1} << 30));
    } else if (name == "--format") {
      AILB_ASSIGN_OR_RETURN(std::string format, value());
      AILB_ASSIGN_OR_RETURN(options.format, ParseInputFormat(format));
    } else if (name == "--id-field") {
      AILB_ASSIGN_OR_RETURN(options.fields.id, value());
    } else if (name == "--text-field") {
      AILB_ASSIGN_OR_RETURN(options.fields.text, value());
    } else if (name == "--title-field") {
      AILB_ASSIGN_OR_RETURN(options.fields.title, value());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", ToAbsl(name)));
    }
  }
  if (options.help) return options;
  if (options.collection.empty()) return absl::InvalidArgumentError("--collection is required");
  if (options.paths.empty())
    return absl::InvalidArgumentError(
        "no input (give files, "
        "directories or - for stdin)");
  if (options.fields.id.empty() || options.fields.text.empty()) {
    return absl::InvalidArgumentError("--id-field and --text-field must not be empty");
  }
  if (std::count(options.paths.begin(), options.paths.end(), "-") > 1) {
    return absl::InvalidArgumentError("- (stdin) can be given once");
  }
  while (!options.url.empty() && options.url.back() == '/') options.url.pop_back();
  if (options.url.empty()) return absl::InvalidArgumentError("--url is empty");
  return options;
}

std::string PercentEncode(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// --- HTTP -------------------------------------------------------------------------------------

using upstream::EasyHandle;
using upstream::HeaderList;

// curl_global_init/cleanup for the duration of the command.
class CurlGlobal {
 public:
  CurlGlobal() : ok_(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {}
  ~CurlGlobal() {
    if (ok_) curl_global_cleanup();
  }
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_;
};

struct HttpResponse {
  long status = 0;
  std::string body;
  std::optional<int> retry_after_seconds;
};

// The `error.message` of an OpenAI-style error body, else the body itself (shortened).
std::string ErrorMessageOf(const HttpResponse& response) {
  const json body = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    const auto error = body.find("error");
    if (error != body.end() && error->is_object()) {
      const auto message = error->find("message");
      if (message != error->end() && message->is_string()) return message->get<std::string>();
    }
  }
  std::string text(absl::StripAsciiWhitespace(response.body));
  if (text.size() > 200) text = absl::StrCat(text.substr(0, 200), "...");
  return text.empty() ? std::string("(empty body)") : text;
}

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  const std::string_view line(data, size * count);
  auto* response = static_cast<HttpResponse*>(user);
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos &&
      absl::EqualsIgnoreCase(ToAbsl(line.substr(0, colon)), "retry-after")) {
    const absl::string_view value = absl::StripAsciiWhitespace(ToAbsl(line.substr(colon + 1)));
    int seconds = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (error == std::errc() && end == value.data() + value.size() && seconds >= 0) {
      response->retry_after_seconds = seconds;
    }
  }
  return size * count;
}

bool RetryableTransportError(CURLcode code) {
  switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_OUT_OF_MEMORY:
      return false;
    default:
      return true;
  }
}

bool RetryableStatus(long status) {
  return status == 429 || status == 502 || status == 503 || status == 504;
}

// Called before each retry's wait with (attempt, delay, reason).
using RetryLogger = std::function<void(int, double, const std::string&)>;

class HttpClient {
 public:
  HttpClient(std::string base_url, std::string api_key, RetryLogger on_retry)
      : base_url_(std::move(base_url)),
        api_key_(std::move(api_key)),
        on_retry_(std::move(on_retry)),
        rng_(std::random_device{}()) {}

  // One request with retries on transport errors and 429/502/503/504 (exponential backoff with
  // jitter, at least Retry-After). Unavailable when the retries ran out on a transport error;
  // the last response when they ran out on a status.
  absl::StatusOr<HttpResponse> Send(std::string_view method, std::string_view path,
                                    const std::string& body) {
    double backoff = kInitialBackoffSeconds;
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<HttpResponse> response = SendOnce(method, path, body);
      std::string reason;
      double delay = backoff;
      if (!response.ok()) {
        if (response.status().code() != absl::StatusCode::kUnavailable) return response;
        reason = std::string(response.status().message());
      } else if (RetryableStatus(response->status)) {
        reason = absl::StrCat("HTTP ", response->status, ": ", ErrorMessageOf(*response));
        if (response->retry_after_seconds) {
          delay = std::max(delay, std::min<double>(*response->retry_after_seconds, 60));
        }
      } else {
        return response;
      }
      if (attempt >= kMaxRetries) {
        if (!response.ok()) {
          return absl::UnavailableError(
              absl::StrCat(response.status().message(), " (after ", kMaxRetries, " retries)"));
        }
        return response;
      }
      // +-25% jitter so that several ingesters do not retry in lockstep.
      std::uniform_real_distribution<double> jitter(0.75, 1.25);
      delay *= jitter(rng_);
      if (on_retry_) on_retry_(attempt + 1, delay, reason);
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
      backoff = std::min(backoff * 2, kMaxBackoffSeconds);
    }
  }

 private:
  // One attempt. Unavailable for retryable transport errors, FailedPrecondition for the others.
  absl::StatusOr<HttpResponse> SendOnce(std::string_view method, std::string_view path,
                                        const std::string& body) {
    if (!easy_) {
      easy_.reset(curl_easy_init());
      if (!easy_) return absl::InternalError("curl_easy_init failed");
    }
    CURL* easy = easy_.get();
    const std::string url = absl::StrCat(base_url_, ToAbsl(path));
    HeaderList headers;
    auto add_header = [&headers](const std::string& header) {
      curl_slist* list = curl_slist_append(headers.get(), header.c_str());
      if (list != nullptr) {
        headers.release();
        headers.reset(list);
      }
    };
    add_header("Accept: application/json");
    add_header("Expect:");  // no 100-continue round trip for large bodies
    if (!api_key_.empty()) add_header(absl::StrCat("Authorization: Bearer ", api_key_));

    HttpResponse response;
    char error_buffer[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, kRequestTimeoutMs);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "ailb-ingest/" AILB_VERSION);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &WriteBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &ReadHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &response);
    if (method == "POST") {
      add_header("Content-Type: application/json");
      curl_easy_setopt(easy, CURLOPT_POST, 1L);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    } else if (method != "GET") {
      const std::string m(method);
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, m.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());

    const CURLcode code = curl_easy_perform(easy);
    if (code == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
    // The handle points at this frame's buffers and header list: forget them (the connection
    // cache stays).
    curl_easy_reset(easy);
    if (code != CURLE_OK) {
      const std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
      const std::string message = absl::StrCat(ToAbsl(method), " ", url, ": ", detail);
      return RetryableTransportError(code) ? absl::UnavailableError(message)
                                           : absl::FailedPreconditionError(message);
    }
    return response;
  }

  std::string base_url_;
  std::string api_key_;
  RetryLogger on_retry_;
  std::mt19937 rng_;
  EasyHandle easy_;
};

// --- Progress -----------------------------------------------------------------------------------

struct Counters {
  int64_t ingested = 0;
  int64_t failed = 0;
  int64_t chunks = 0;
  int64_t done() const { return ingested + failed; }
};

std::string FormatDuration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(seconds, 0.0)));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

// Progress on stderr: a redrawn bar on a terminal, otherwise a line every few seconds.
class Progress {
 public:
  Progress(int64_t total, bool tty)
      : total_(total), tty_(tty), start_(Clock::now()), last_(tty ? Clock::time_point() : start_) {}

  void Update(const Counters& counters, bool force = false) {
    const Clock::time_point now = Clock::now();
    const auto interval = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
    if (!force && now - last_ < interval) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double chunk_rate = elapsed > 0 ? counters.chunks / elapsed : 0;
    std::string eta;
    if (total_ > 0 && counters.done() > 0 && counters.done() < total_) {
      eta = FormatDuration(elapsed / counters.done() * (total_ - counters.done()));
    }
    std::string failed = counters.failed > 0 ? absl::StrCat(", ", counters.failed, " failed") : "";
    if (tty_) {
      std::string line;
      if (total_ > 0) {
        constexpr int kWidth = 30;
        const double share = std::min(1.0, static_cast<double>(counters.done()) / total_);
        const int filled = static_cast<int>(share * kWidth);
        line = absl::StrFormat("\r[%s%s] %d/%d docs (%3.0f%%)%s  %.1f chunks/s%s",
                               std::string(filled, '#'), std::string(kWidth - filled, ' '),
                               counters.done(), total_, share * 100, failed, chunk_rate,
                               eta.empty() ? std::string() : absl::StrCat("  ETA ", eta));
      } else {
        line = absl::StrFormat("\r%d docs%s  %.1f chunks/s", counters.done(), failed, chunk_rate);
      }
      std::fprintf(stderr, "%s\033[K", line.c_str());
      drawn_ = true;
    } else {
      std::string done =
          total_ > 0 ? absl::StrCat(counters.done(), "/", total_) : absl::StrCat(counters.done());
      std::fprintf(stderr, "ingest: %s documents%s, %.1f chunks/s%s\n", done.c_str(),
                   failed.c_str(), chunk_rate,
                   eta.empty() ? "" : absl::StrCat(", ETA ", eta).c_str());
    }
    std::fflush(stderr);
  }

  // A message line on stderr that does not mangle the bar.
  void Message(const std::string& message) {
    if (tty_ && drawn_) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "%s\n", message.c_str());
    drawn_ = false;
    std::fflush(stderr);
  }

  void Finish(const Counters& counters) {
    if (tty_) {
      Update(counters, /*force=*/true);
      std::fputs("\n", stderr);
      std::fflush(stderr);
    }
  }

 private:
  int64_t total_;  // <= 0: unknown
  bool tty_;
  Clock::time_point start_;
  Clock::time_point last_;  // of the last output; the first line comes after one interval
  bool drawn_ = false;
};

// --- Inputs -------------------------------------------------------------------------------------

struct FileCloser {
  void operator()(std::FILE* file) const {
    if (file != nullptr && file != stdin) std::fclose(file);
  }
};
using FileHandle = std::unique_ptr<std::FILE, FileCloser>;

struct LineBuffer {
  char* data = nullptr;
  size_t capacity = 0;
  ~LineBuffer() { std::free(data); }
};

struct Input {
  std::string path;  // "-" for stdin
  InputFormat format = InputFormat::kText;
};

absl::StatusOr<FileHandle> OpenInput(const std::string& path) {
  if (path == "-") return FileHandle(stdin);
  FileHandle file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("cannot open: ", std::generic_category().message(errno)));
  }
  return file;
}

absl::StatusOr<std::string> ReadAll(std::FILE* file) {
  std::string content;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) content.append(buffer, n);
  if (std::ferror(file)) return absl::DataLossError("read error");
  return content;
}

// Calls `on_line(line, number)` for each line (without its end) of `file`.
template <typename OnLine>
absl::Status ForEachLine(std::FILE* file, OnLine on_line) {
  LineBuffer buffer;
  int64_t number = 0;
  ssize_t length;
  while ((length = ::getline(&buffer.data, &buffer.capacity, file)) >= 0) {
    ++number;
    if (!on_line(StripLineEnd(std::string_view(buffer.data, static_cast<size_t>(length))),
                 number)) {
      break;
    }
  }
  if (std::ferror(file)) return absl::DataLossError("read error");
  return absl::OkStatus();
}

// Expands the paths given into inputs (directories walked recursively, sorted); errors for paths
// that do not exist or cannot be walked.
std::vector<Input> ExpandInputs(const Options& options, std::vector<InputError>& errors) {
  namespace fs = std::filesystem;
  std::vector<Input> inputs;
  for (const std::string& path : options.paths) {
    if (path == "-") {
      inputs.push_back({path, InputFormat::kJsonl});
      continue;
    }
    std::error_code error;
    const fs::file_status status = fs::status(path, error);
    if (error || !fs::exists(status)) {
      errors.push_back({path, 0, error ? error.message() : "no such file or directory"});
      continue;
    }
    if (fs::is_directory(status)) {
      std::vector<std::string> files;
      fs::recursive_directory_iterator it(path, error), end;
      for (; !error && it != end; it.increment(error)) {
        std::error_code file_error;
        if (it->is_regular_file(file_error)) files.push_back(it->path().string());
      }
      if (error) errors.push_back({path, 0, absl::StrCat("cannot walk: ", error.message())});
      std::sort(files.begin(), files.end());
      for (std::string& file : files) {
        const InputFormat format = ResolveInputFormat(options.format, file);
        inputs.push_back({std::move(file), format});
      }
    } else if (fs::is_regular_file(status)) {
      inputs.push_back({path, ResolveInputFormat(options.format, path)});
    } else {
      errors.push_back({path, 0, "not a regular file or directory"});
    }
  }
  return inputs;
}

// Documents expected from the inputs (non-blank JSON lines, one per text file); -1 when unknown
// (stdin).
int64_t CountDocuments(const std::vector<Input>& inputs) {
  int64_t total = 0;
  for (const Input& input : inputs) {
    if (input.path == "-") return -1;
    if (input.format == InputFormat::kText) {
      ++total;
      continue;
    }
    absl::StatusOr<FileHandle> file = OpenInput(input.path);
    if (!file.ok()) {
      ++total;  // counted as one failure later
      continue;
    }
    (void)ForEachLine(file->get(), [&total](std::string_view line, int64_t) {
      if (!IsBlank(line)) ++total;
      return true;
    });
  }
  return total;
}

// --- Ingestion ----------------------------------------------------------------------------------

class Ingester {
 public:
  Ingester(const Options& options, HttpClient& client, Progress& progress)
      : options_(options),
        client_(client),
        progress_(progress),
        batcher_(options.batch),
        documents_path_(absl::StrCat("/v1/rag/collections/", PercentEncode(options.collection),
                                     "/documents")) {}

  // Ok, or why the run cannot go on.
  absl::Status EnsureCollection() {
    const std::string path =
        absl::StrCat("/v1/rag/collections/", PercentEncode(options_.collection));
    AILB_ASSIGN_OR_RETURN(HttpResponse response, client_.Send("GET", path, ""));
    if (response.status == 200) return absl::OkStatus();
    if (response.status != 404) return HttpFailure("GET collection", response);
    if (!options_.create) {
      return absl::NotFoundError(absl::StrCat("collection \"", options_.collection,
                                              "\" does not exist (use --create to create it)"));
    }
    const json spec = {
        {"name", options_.collection},
        {"embedding",
         {{"provider", options_.embedding_provider},
          {"model", options_.embedding_model},
          {"dimensions", options_.dimensions}}},
        {"chunking", {{"max_tokens", options_.max_tokens}, {"overlap", options_.overlap}}}};
    AILB_ASSIGN_OR_RETURN(response, client_.Send("POST", "/v1/rag/collections", Dump(spec)));
    if (response.status == 201 || response.status == 200) {
      progress_.Message(absl::StrCat("created collection \"", options_.collection, "\""));
      return absl::OkStatus();
    }
    if (response.status == 409) return absl::OkStatus();  // created meanwhile
    return HttpFailure("create collection", response);
  }

  // Reads every input; stops early (and returns why) when the run cannot go on.
  absl::Status Run(const std::vector<Input>& inputs) {
    for (const Input& input : inputs) {
      AILB_RETURN_IF_ERROR(IngestInput(input));
    }
    std::vector<Document> last = batcher_.Flush();
    if (!last.empty()) AILB_RETURN_IF_ERROR(Send(std::move(last)));
    return absl::OkStatus();
  }

  void ReportError(const InputError& error) {
    ++counters_.failed;
    if (++errors_reported_ <= kMaxErrorsShown) {
      progress_.Message(error.ToString());
    } else if (errors_reported_ == kMaxErrorsShown + 1) {
      progress_.Message("(further errors are not shown)");
    }
    progress_.Update(counters_);
  }

  // Counts the documents still waiting in the batcher as failed (after an abort).
  void AbandonPending() { counters_.failed += static_cast<int64_t>(batcher_.Flush().size()); }

  const Counters& counters() const { return counters_; }

 private:
  static absl::Status HttpFailure(std::string_view what, const HttpResponse& response) {
    std::string message =
        absl::StrCat(ToAbsl(what), ": HTTP ", response.status, ": ", ErrorMessageOf(response));
    if (response.status == 401 || response.status == 403) {
      absl::StrAppend(&message, " (set --api-key or AILB_API_KEY)");
    }
    return WithHttpStatus(absl::FailedPreconditionError(message),
                          static_cast<int>(response.status));
  }

  absl::Status IngestInput(const Input& input) {
    const std::string source = input.path == "-" ? kStdinSource : input.path;
    absl::StatusOr<FileHandle> file = OpenInput(input.path);
    if (!file.ok()) {
      ReportError({source, 0, std::string(file.status().message())});
      return absl::OkStatus();
    }
    if (input.format == InputFormat::kText) {
      absl::StatusOr<std::string> content = ReadAll(file->get());
      if (!content.ok()) {
        ReportError({source, 0, std::string(content.status().message())});
        return absl::OkStatus();
      }
      DocumentBatch converted =
          ConvertFile(input.path, *content, InputFormat::kText, options_.fields);
      for (const InputError& error : converted.errors) ReportError(error);
      for (Document& document : converted.documents) {
        AILB_RETURN_IF_ERROR(Add(std::move(document)));
      }
      return absl::OkStatus();
    }
    absl::Status fatal;
    const absl::Status read = ForEachLine(file->get(), [&](std::string_view line, int64_t number) {
      if (IsBlank(line)) return true;
      absl::StatusOr<Document> document = ParseJsonLine(line, options_.fields);
      if (!document.ok()) {
        ReportError({source, number, std::string(document.status().message())});
        return true;
      }
      document->source = source;
      document->line = number;
      fatal = Add(*std::move(document));
      return fatal.ok();
    });
    AILB_RETURN_IF_ERROR(fatal);
    if (!read.ok()) ReportError({source, 0, std::string(read.message())});
    return absl::OkStatus();
  }

  absl::Status Add(Document document) {
    for (std::vector<Document>& batch : batcher_.Add(std::move(document))) {
      AILB_RETURN_IF_ERROR(Send(std::move(batch)));
    }
    return absl::OkStatus();
  }

  // Upserts `batch`. A batch the server rejects as a whole (400, 413) is split in halves until
  // the offending documents stand alone; they are reported and counted as failed. Returns non-OK
  // only when the run cannot go on (the batch's documents are then counted as failed).
  absl::Status Send(std::vector<Document> batch) {
    const std::string body = EncodeUpsertBody(batch);
    absl::StatusOr<HttpResponse> response = client_.Send("POST", documents_path_, body);
    if (!response.ok()) {
      counters_.failed += static_cast<int64_t>(batch.size());
      return response.status();
    }
    const long status = response->status;
    if (status == 200 || status == 201) {
      const json reply = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
      counters_.ingested += static_cast<int64_t>(batch.size());
      if (reply.is_object() && reply.contains("chunks") && reply["chunks"].is_number_integer()) {
        counters_.chunks += reply["chunks"].get<int64_t>();
      }
      progress_.Update(counters_);
      return absl::OkStatus();
    }
    if ((status == 400 || status == 413 || status == 422) && batch.size() > 1) {
      const size_t half = batch.size() / 2;
      std::vector<Document> second(std::make_move_iterator(batch.begin() + half),
                                   std::make_move_iterator(batch.end()));
      batch.resize(half);
      if (absl::Status first = Send(std::move(batch)); !first.ok()) {
        counters_.failed += static_cast<int64_t>(second.size());
        return first;
      }
      return Send(std::move(second));
    }
    if (status == 400 || status == 413 || status == 422 || status == 500) {
      // This document (or this batch, for 500) is the problem; the run goes on.
      for (const Document& document : batch) {
        ReportError({document.source, document.line,
                     absl::StrCat("document \"", document.id, "\" rejected: HTTP ", status, ": ",
                                  ErrorMessageOf(*response))});
      }
      return absl::OkStatus();
    }
    counters_.failed += static_cast<int64_t>(batch.size());
    return HttpFailure("upsert documents", *response);
  }

  const Options& options_;
  HttpClient& client_;
  Progress& progress_;
  Batcher batcher_;
  std::string documents_path_;
  Counters counters_;
  int errors_reported_ = 0;
};

void PrintSummary(const Options& options, const Counters& counters, double elapsed,
                  const absl::Status& outcome) {
  const double seconds = std::max(elapsed, 1e-9);
  std::printf("collection: %s\n", options.collection.c_str());
  std::printf("documents:  %lld ingested, %lld failed\n", static_cast<long long>(counters.ingested),
              static_cast<long long>(counters.failed));
  std::printf("chunks:     %lld\n", static_cast<long long>(counters.chunks));
  std::printf("elapsed:    %.2f s\n", elapsed);
  std::printf("rate:       %.1f docs/s, %.1f chunks/s\n", counters.ingested / seconds,
              counters.chunks / seconds);
  if (!outcome.ok()) {
    std::printf("aborted:    %s\n", std::string(outcome.message()).c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int RunIngest(int argc, char** argv) {
  absl::StatusOr<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "ailb ingest: %s\nRun 'ailb ingest --help' for usage.\n",
                 std::string(options.status().message()).c_str());
    return kExitUsage;
  }
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  CurlGlobal curl;
  if (!curl.ok()) {
    std::fputs("ailb ingest: curl_global_init failed\n", stderr);
    return kExitFailed;
  }

  const Clock::time_point start = Clock::now();
  std::vector<InputError> input_errors;
  const std::vector<Input> inputs = ExpandInputs(*options, input_errors);
  const int64_t total = CountDocuments(inputs);
  Progress progress(total < 0 ? -1 : total + static_cast<int64_t>(input_errors.size()),
                    ::isatty(STDERR_FILENO) == 1);
  HttpClient client(options->url, options->api_key,
                    [&progress](int attempt, double delay, const std::string& reason) {
                      progress.Message(absl::StrFormat("retry %d/%d in %.1f s: %s", attempt,
                                                       kMaxRetries, delay, reason));
                    });
  Ingester ingester(*options, client, progress);

  absl::Status outcome = ingester.EnsureCollection();
  if (outcome.ok()) {
    for (const InputError& error : input_errors) ingester.ReportError(error);
    outcome = ingester.Run(inputs);
    if (!outcome.ok()) ingester.AbandonPending();
  }
  progress.Finish(ingester.counters());
  if (!outcome.ok()) {
    std::fprintf(stderr, "ailb ingest: %s\n", std::string(outcome.message()).c_str());
  }
  const Counters& counters = ingester.counters();
  if (outcome.ok() && counters.done() == 0) {
    std::fputs("ailb ingest: no documents found in the inputs\n", stderr);
  }
  PrintSummary(*options, counters, std::chrono::duration<double>(Clock::now() - start).count(),
               outcome);
  const bool success = outcome.ok() && counters.failed == 0 && counters.ingested > 0;
  return success ? kExitOk : kExitFailed;
}

}  // namespace ailb::cli
