#include "provider/ollama/ollama_adapter.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ailb/common/status.h"
#include "provider/retry_after.h"

namespace ailb::provider {
namespace {

using nlohmann::json;

// Token counts from a hostile upstream are clamped so sums cannot overflow.
constexpr int64_t kMaxTokenCount = int64_t{1} << 40;
// One NDJSON line may not grow without bound while we wait for its newline.
constexpr size_t kMaxLineBytes = size_t{16} << 20;

// Typed lookups that never throw, whatever `object` turns out to be.
const json* Find(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const std::string* FindString(const json& object, const char* key) {
  const json* value = Find(object, key);
  return value != nullptr && value->is_string() ? &value->get_ref<const std::string&>() : nullptr;
}

std::string StringOr(const json& object, const char* key, std::string_view fallback) {
  const std::string* value = FindString(object, key);
  return value != nullptr ? *value : std::string(fallback);
}

std::optional<int64_t> FindInt(const json& object, const char* key) {
  const json* value = Find(object, key);
  if (value == nullptr) return std::nullopt;
  if (value->is_number_unsigned()) {
    return static_cast<int64_t>(std::min<uint64_t>(value->get<uint64_t>(), INT64_MAX));
  }
  if (value->is_number_integer()) return value->get<int64_t>();
  return std::nullopt;
}

int64_t TokenCount(const json& object, const char* key) {
  return std::clamp<int64_t>(FindInt(object, key).value_or(0), 0, kMaxTokenCount);
}

void AddAuthHeaders(const config::Deployment& deployment, upstream::Headers& headers) {
  if (!deployment.api_key.empty()) {
    headers.emplace_back("Authorization", absl::StrCat("Bearer ", deployment.api_key));
  }
}

// ---- Request translation ----

struct FlatContent {
  std::string text;
  json images = json::array();
};

absl::StatusOr<std::string> ImageData(const json& part, const std::string& at) {
  const json* image_url = Find(part, "image_url");
  const std::string* url = nullptr;
  if (image_url != nullptr && image_url->is_string()) {
    url = &image_url->get_ref<const std::string&>();
  } else if (image_url != nullptr) {
    url = FindString(*image_url, "url");
  }
  const std::string param = at + ".image_url.url";
  if (url == nullptr) return InvalidFieldError(param, param + " must be a string");
  const size_t comma = url->find(',');
  if (!url->starts_with("data:") || comma == std::string::npos ||
      !std::string_view(*url).substr(0, comma).ends_with(";base64")) {
    return InvalidFieldError(param, param +
                                        " must be a base64 data URL for ollama deployments "
                                        "(ailb does not fetch image URLs)");
  }
  return url->substr(comma + 1);
}

absl::StatusOr<FlatContent> Flatten(const json* content, const std::string& at) {
  FlatContent flat;
  if (content == nullptr || content->is_null()) return flat;
  if (content->is_string()) {
    flat.text = content->get<std::string>();
    return flat;
  }
  if (!content->is_array()) {
    return InvalidFieldError(at + ".content", at + ".content must be a string or an array");
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string part_at = absl::StrCat(at, ".content[", i, "]");
    const std::string type = StringOr(part, "type", "");
    if (type == "text" || type == "refusal") {
      const std::string* text = FindString(part, type == "text" ? "text" : "refusal");
      if (text == nullptr) {
        return InvalidFieldError(part_at, absl::StrCat(part_at, ".", type, " must be a string"));
      }
      texts.push_back(*text);
    } else if (type == "image_url") {
      AILB_ASSIGN_OR_RETURN(std::string data, ImageData(part, part_at));
      flat.images.push_back(std::move(data));
    } else {
      return InvalidFieldError(part_at + ".type",
                               absl::StrCat("content part type '", type, "' in ", at,
                                            " is not supported by ollama deployments"));
    }
  }
  flat.text = absl::StrJoin(texts, "\n");
  return flat;
}

// OpenAI tool calls in Ollama's shape; records each call's function name by id.
absl::StatusOr<json> ToolCalls(const json& calls, const std::string& at,
                               std::map<std::string, std::string>& names_by_id) {
  if (!calls.is_array()) {
    return InvalidFieldError(at + ".tool_calls", at + ".tool_calls must be an array");
  }
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const json& call = calls[i];
    const std::string call_at = absl::StrCat(at, ".tool_calls[", i, "]");
    const json* function = Find(call, "function");
    const std::string* name = function != nullptr ? FindString(*function, "name") : nullptr;
    if (name == nullptr) {
      return InvalidFieldError(call_at + ".function.name",
                               call_at + ".function.name is required and must be a string");
    }
    const json* arguments = Find(*function, "arguments");
    json parsed = json::object();
    if (arguments != nullptr && arguments->is_string()) {
      const std::string& text = arguments->get_ref<const std::string&>();
      // Models emit "" for functions without parameters.
      if (!absl::StripAsciiWhitespace(text).empty()) {
        parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
      }
    } else if (arguments != nullptr && !arguments->is_null()) {
      parsed = *arguments;  // some clients send the object itself
    }
    if (parsed.is_discarded() || !parsed.is_object()) {
      return InvalidFieldError(call_at + ".function.arguments",
                               call_at +
                                   ".function.arguments must be a JSON object encoded as a "
                                   "string");
    }
    if (const std::string* id = FindString(call, "id")) names_by_id[*id] = *name;
    out.push_back(json{{"function", {{"name", *name}, {"arguments", std::move(parsed)}}}});
  }
  return out;
}

absl::Status TranslateMessages(const json& body, json& out) {
  const json* messages = Find(body, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return InvalidFieldError("messages", "'messages' must be an array");
  }
  // Later calls reuse ids (ours are call_<n> per reply), so the latest assignment wins.
  std::map<std::string, std::string> names_by_id;
  json translated = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    std::string role = StringOr(message, "role", "");
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return InvalidFieldError(
          at + ".role",
          absl::StrCat(at, ".role '", role, "' is not supported by ollama deployments"));
    }
    AILB_ASSIGN_OR_RETURN(FlatContent flat, Flatten(Find(message, "content"), at));
    json entry = {{"role", role}, {"content", std::move(flat.text)}};
    if (!flat.images.empty()) entry["images"] = std::move(flat.images);
    if (const json* calls = Find(message, "tool_calls");
        role == "assistant" && calls != nullptr && !calls->is_null()) {
      AILB_ASSIGN_OR_RETURN(json tool_calls, ToolCalls(*calls, at, names_by_id));
      if (!tool_calls.empty()) entry["tool_calls"] = std::move(tool_calls);
    }
    if (const std::string* id = FindString(message, "tool_call_id"); role == "tool" && id) {
      if (auto name = names_by_id.find(*id); name != names_by_id.end()) {
        entry["tool_name"] = name->second;
      }
    }
    translated.push_back(std::move(entry));
  }
  out["messages"] = std::move(translated);
  return absl::OkStatus();
}

absl::Status TranslateOptions(const json& body, json& out) {
  if (std::optional<int64_t> n = FindInt(body, "n"); n && *n > 1) {
    return InvalidFieldError("n", "'n' must be 1 for ollama deployments (one choice per call)");
  }
  json options = json::object();
  for (const char* field : {"temperature", "top_p", "presence_penalty", "frequency_penalty"}) {
    if (const json* value = Find(body, field); value != nullptr && value->is_number()) {
      options[field] = *value;
    }
  }
  if (std::optional<int64_t> value = FindInt(body, "max_completion_tokens"); value && *value > 0) {
    options["num_predict"] = *value;
  } else if (std::optional<int64_t> value = FindInt(body, "max_tokens"); value && *value > 0) {
    options["num_predict"] = *value;
  }
  if (const json* stop = Find(body, "stop"); stop != nullptr) {
    json sequences = json::array();
    if (stop->is_string() && !stop->get_ref<const std::string&>().empty()) {
      sequences.push_back(*stop);
    } else if (stop->is_array()) {
      for (const json& sequence : *stop) {
        if (sequence.is_string() && !sequence.get_ref<const std::string&>().empty()) {
          sequences.push_back(sequence);
        }
      }
    }
    if (!sequences.empty()) options["stop"] = std::move(sequences);
  }
  if (std::optional<int64_t> seed = FindInt(body, "seed")) options["seed"] = *seed;
  if (!options.empty()) out["options"] = std::move(options);

  if (const json* format = Find(body, "response_format"); format != nullptr) {
    const std::string type = StringOr(*format, "type", "");
    const json* schema = nullptr;
    if (const json* spec = Find(*format, "json_schema")) schema = Find(*spec, "schema");
    if (type == "json_schema" && schema != nullptr && schema->is_object()) {
      out["format"] = *schema;
    } else if (type == "json_object" || type == "json_schema") {
      out["format"] = "json";
    }
  }

  const json* tools = Find(body, "tools");
  const json* tool_choice = Find(body, "tool_choice");
  const bool tools_disabled =
      tool_choice != nullptr && tool_choice->is_string() && *tool_choice == "none";
  if (tools != nullptr && tools->is_array() && !tools->empty() && !tools_disabled) {
    out["tools"] = *tools;
  }
  return absl::OkStatus();
}

// ---- Response translation ----

json ToolCallOut(const json& call, int index) {
  const json* function = Find(call, "function");
  const json empty = json::object();
  const json& fn = function != nullptr ? *function : empty;
  std::string arguments = "{}";
  if (const json* value = Find(fn, "arguments"); value != nullptr) {
    arguments = value->is_string() ? value->get<std::string>() : llm::DumpJson(*value);
  }
  return json{{"id", absl::StrCat("call_", index)},
              {"type", "function"},
              {"function", {{"name", StringOr(fn, "name", "")}, {"arguments", arguments}}}};
}

std::string FinishReason(const json& reply, bool has_tool_calls) {
  if (has_tool_calls) return "tool_calls";
  // "stop", and "load"/"unload" which only answer empty requests.
  return StringOr(reply, "done_reason", "") == "length" ? "length" : "stop";
}

json Usage(const json& reply) {
  const int64_t prompt = TokenCount(reply, "prompt_eval_count");
  const int64_t completion = TokenCount(reply, "eval_count");
  return json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion}};
}

std::string ErrorMessageOf(const json& reply) {
  const json* error = Find(reply, "error");
  if (error == nullptr) return "";
  if (error->is_string()) return error->get<std::string>();
  // Proxies in front of Ollama sometimes answer in OpenAI's shape.
  return StringOr(*error, "message", "");
}

class OllamaStreamDecoder final : public StreamDecoder {
 public:
  absl::Status Feed(std::string_view bytes, std::vector<json>& out) override {
    if (!failed_.ok()) return failed_;
    while (!done_ && !bytes.empty()) {
      const size_t newline = bytes.find('\n');
      if (newline == std::string_view::npos) {
        line_.append(bytes.data(), bytes.size());
        if (line_.size() > kMaxLineBytes)
          return Fail(BadGatewayError("ollama stream line too long"));
        break;
      }
      line_.append(bytes.data(), newline);
      bytes.remove_prefix(newline + 1);
      absl::Status status = HandleLine(line_, out);
      line_.clear();
      if (!status.ok()) return Fail(std::move(status));
    }
    // Bytes after the done line are not part of the answer.
    return absl::OkStatus();
  }

  absl::Status Finish(std::vector<json>& out) override {
    if (!failed_.ok()) return failed_;
    // A final line without its newline still counts; one cut short is a truncation, not a
    // malformed reply, so it reads as Unavailable like any other early end.
    finishing_ = true;
    if (!done_ && !line_.empty()) {
      absl::Status status = HandleLine(line_, out);
      line_.clear();
      if (!status.ok()) return Fail(std::move(status));
    }
    if (!done_) return absl::UnavailableError("ollama stream ended before the done line");
    return absl::OkStatus();
  }

 private:
  absl::Status Fail(absl::Status status) {
    failed_ = status;
    return status;
  }

  absl::Status HandleLine(std::string_view line, std::vector<json>& out) {
    if (std::all_of(line.begin(), line.end(),
                    [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); })) {
      return absl::OkStatus();  // blank lines are keep-alives, not events
    }
    json data = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (data.is_discarded() || !data.is_object()) {
      if (finishing_) return absl::UnavailableError("ollama stream ended mid-line");
      return BadGatewayError("ollama stream contained a line that is not a JSON object");
    }
    if (data.contains("error")) {
      std::string message = ErrorMessageOf(data);
      return BadGatewayError(message.empty() ? "ollama reported an error mid-stream" : message);
    }
    const json* done = Find(data, "done");
    if (done != nullptr && !done->is_boolean()) {
      return BadGatewayError("ollama stream line has a non-boolean 'done'");
    }
    if (const std::string* model = FindString(data, "model")) model_ = *model;

    json delta = json::object();
    if (!role_sent_) delta["role"] = "assistant";
    const json* message = Find(data, "message");
    const json empty = json::object();
    const json& msg = message != nullptr ? *message : empty;
    std::string content = StringOr(msg, "content", "");
    if (!content.empty() || !role_sent_) delta["content"] = std::move(content);
    if (const json* calls = Find(msg, "tool_calls"); calls != nullptr && calls->is_array()) {
      json tool_calls = json::array();
      for (const json& call : *calls) {
        json out_call = ToolCallOut(call, tool_count_);
        out_call["index"] = tool_count_++;
        tool_calls.push_back(std::move(out_call));
      }
      if (!tool_calls.empty()) delta["tool_calls"] = std::move(tool_calls);
    }
    // Lines with nothing for the client (thinking only, empty content) produce no chunk.
    if (!delta.empty()) {
      role_sent_ = true;
      out.push_back(Chunk(std::move(delta), nullptr));
    }
    if (done == nullptr || !done->get<bool>()) return absl::OkStatus();

    done_ = true;
    out.push_back(Chunk(json::object(), FinishReason(data, tool_count_ > 0)));
    out.push_back(json{{"id", ""},
                       {"object", "chat.completion.chunk"},
                       {"created", 0},
                       {"model", model_},
                       {"choices", json::array()},
                       {"usage", Usage(data)}});
    return absl::OkStatus();
  }

  json Chunk(json delta, json finish_reason) const {
    json choice = {{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish_reason}};
    return json{{"id", ""},
                {"object", "chat.completion.chunk"},
                {"created", 0},
                {"model", model_},
                {"choices", json::array({std::move(choice)})}};
  }

  std::string line_;
  absl::Status failed_;
  bool finishing_ = false;  // Finish() is handling the last, possibly cut, line
  bool role_sent_ = false;
  bool done_ = false;
  int tool_count_ = 0;
  std::string model_;
};

}  // namespace

absl::StatusOr<upstream::Request> OllamaAdapter::EncodeChat(
    const llm::ChatRequest& request, const config::Deployment& deployment) const {
  const json& body = request.body;
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be an object");
  json out = json::object();
  out["model"] = deployment.upstream_model;
  AILB_RETURN_IF_ERROR(TranslateMessages(body, out));
  AILB_RETURN_IF_ERROR(TranslateOptions(body, out));
  out["stream"] = request.stream;

  upstream::Request result;
  result.url = absl::StrCat(deployment.api_base, "/api/chat");
  result.headers.emplace_back("Content-Type", "application/json");
  result.headers.emplace_back("Accept",
                              request.stream ? "application/x-ndjson" : "application/json");
  AddAuthHeaders(deployment, result.headers);
  result.body = llm::DumpJson(out);
  return result;
}

absl::StatusOr<json> OllamaAdapter::DecodeChat(std::string_view body) const {
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) {
    return BadGatewayError("ollama reply is not valid JSON");
  }
  if (reply.contains("error")) {
    std::string message = ErrorMessageOf(reply);
    return BadGatewayError(message.empty() ? "ollama replied with an error" : message);
  }
  const json* message = Find(reply, "message");
  if (message == nullptr || !message->is_object()) {
    return BadGatewayError("ollama reply has no 'message' object");
  }
  json tool_calls = json::array();
  if (const json* calls = Find(*message, "tool_calls"); calls != nullptr && calls->is_array()) {
    for (const json& call : *calls) {
      tool_calls.push_back(ToolCallOut(call, static_cast<int>(tool_calls.size())));
    }
  }
  const std::string text = StringOr(*message, "content", "");
  json out_message = {
      {"role", "assistant"},
      {"content", text.empty() && !tool_calls.empty() ? json(nullptr) : json(text)}};
  const bool has_tool_calls = !tool_calls.empty();
  if (has_tool_calls) out_message["tool_calls"] = std::move(tool_calls);
  json choice = {{"index", 0},
                 {"message", std::move(out_message)},
                 {"finish_reason", FinishReason(reply, has_tool_calls)},
                 {"logprobs", nullptr}};
  return json{{"id", ""},
              {"object", "chat.completion"},
              {"created", 0},
              {"model", StringOr(reply, "model", "")},
              {"choices", json::array({std::move(choice)})},
              {"usage", Usage(reply)}};
}

std::unique_ptr<StreamDecoder> OllamaAdapter::NewStreamDecoder() const {
  return std::make_unique<OllamaStreamDecoder>();
}

absl::Status OllamaAdapter::DecodeError(int http_status, const upstream::Headers& headers,
                                        std::string_view body) const {
  std::string message;
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (!reply.is_discarded()) message = ErrorMessageOf(reply);
  if (message.empty()) message = absl::StrCat("ollama answered HTTP ", http_status);
  absl::StatusCode code = StatusCodeForHttp(http_status);
  // Only called for failures; a 2xx here would otherwise read as success.
  if (code == absl::StatusCode::kOk) code = absl::StatusCode::kUnknown;
  return WithUpstreamRetryAfter(WithHttpStatus(absl::Status(code, message), http_status), headers);
}

absl::StatusOr<upstream::Request> OllamaAdapter::EncodeHealthProbe(
    const config::Deployment& deployment) const {
  upstream::Request out;
  out.method = "GET";
  out.url = absl::StrCat(deployment.api_base, "/api/tags");
  out.headers.emplace_back("Accept", "application/json");
  AddAuthHeaders(deployment, out.headers);
  return out;
}

}  // namespace ailb::provider
