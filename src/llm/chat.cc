#include "ailb/llm/chat.h"

#include <array>
#include <string>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"

namespace ailb::llm {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 6> kRoles = {"system",    "user", "assistant",
                                                    "developer", "tool", "function"};
constexpr size_t kMaxExtensionStringLength = kMaxSessionIdBytes;
// As the admin API's allow-lists: a model name is echoed in errors and logs.
constexpr size_t kMaxModelNameBytes = 256;

bool IsRole(const std::string& role) {
  for (std::string_view known : kRoles) {
    if (role == known) return true;
  }
  return false;
}

absl::Status ValidateMessage(const json& message, size_t index) {
  const std::string at = absl::StrCat("messages[", index, "]");
  if (!message.is_object()) return InvalidFieldError(at, at + " must be an object");
  auto role = message.find("role");
  if (role == message.end() || !role->is_string()) {
    return InvalidFieldError(at + ".role", at + ".role is required and must be a string");
  }
  if (!IsRole(role->get_ref<const std::string&>())) {
    return InvalidFieldError(at + ".role",
                             absl::StrCat(at, ".role '", role->get_ref<const std::string&>(),
                                          "' is not one of system, user, assistant, developer, "
                                          "tool, function"));
  }
  auto content = message.find("content");
  if (content != message.end() && !content->is_string() && !content->is_array() &&
      !content->is_null()) {
    return InvalidFieldError(at + ".content",
                             at + ".content must be a string, an array of parts or null");
  }
  const bool has_tool_calls = message.contains("tool_calls") || message.contains("function_call");
  if ((content == message.end() || content->is_null()) && !has_tool_calls && *role != "assistant") {
    return InvalidFieldError(at + ".content", at + ".content is required");
  }
  if (content != message.end() && content->is_array()) {
    for (size_t i = 0; i < content->size(); ++i) {
      const json& part = (*content)[i];
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
        return InvalidFieldError(
            absl::StrCat(at, ".content[", i, "]"),
            absl::StrCat(at, ".content[", i, "] must be an object with a string 'type'"));
      }
    }
  }
  return absl::OkStatus();
}

// Checks the type of an optional field; `kind` names the expectation for the message.
template <typename Predicate>
absl::Status CheckOptional(const json& body, const char* field, Predicate valid,
                           std::string_view kind) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!valid(*it))
    return InvalidFieldError(field, absl::StrCat("'", field, "' must be ", ToAbsl(kind)));
  return absl::OkStatus();
}

bool IsNumberIn(const json& v, double lo, double hi) {
  return v.is_number() && v.get<double>() >= lo && v.get<double>() <= hi;
}
bool IsPositiveInteger(const json& v) { return v.is_number_integer() && v.get<int64_t>() >= 1; }

absl::Status ValidateSamplingFields(const json& body) {
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "temperature", [](const json& v) { return IsNumberIn(v, 0, 2); },
      "a number between 0 and 2"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "top_p", [](const json& v) { return IsNumberIn(v, 0, 1); },
      "a number between 0 and 1"));
  AILB_RETURN_IF_ERROR(CheckOptional(body, "n", IsPositiveInteger, "an integer >= 1"));
  AILB_RETURN_IF_ERROR(CheckOptional(body, "max_tokens", IsPositiveInteger, "an integer >= 1"));
  AILB_RETURN_IF_ERROR(
      CheckOptional(body, "max_completion_tokens", IsPositiveInteger, "an integer >= 1"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "presence_penalty", [](const json& v) { return IsNumberIn(v, -2, 2); },
      "a number between -2 and 2"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "frequency_penalty", [](const json& v) { return IsNumberIn(v, -2, 2); },
      "a number between -2 and 2"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "seed", [](const json& v) { return v.is_number_integer(); }, "an integer"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "stop",
      [](const json& v) {
        if (v.is_string()) return true;
        if (!v.is_array() || v.size() > 4) return false;
        for (const json& s : v) {
          if (!s.is_string()) return false;
        }
        return true;
      },
      "a string or an array of at most 4 strings"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "tools", [](const json& v) { return v.is_array(); }, "an array"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "tool_choice", [](const json& v) { return v.is_string() || v.is_object(); },
      "a string or an object"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "response_format", [](const json& v) { return v.is_object(); }, "an object"));
  AILB_RETURN_IF_ERROR(CheckOptional(
      body, "logprobs", [](const json& v) { return v.is_boolean(); }, "a boolean"));
  return CheckOptional(
      body, "user", [](const json& v) { return v.is_string(); }, "a string");
}

absl::StatusOr<std::optional<std::string>> TakeExtensionString(json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end()) return std::optional<std::string>();
  if (it->is_null()) {
    body.erase(it);
    return std::optional<std::string>();
  }
  if (!it->is_string() || it->get_ref<const std::string&>().empty() ||
      it->get_ref<const std::string&>().size() > kMaxExtensionStringLength) {
    return InvalidFieldError(field,
                             absl::StrCat("'", field, "' must be a non-empty string of at most ",
                                          kMaxExtensionStringLength, " characters"));
  }
  std::string value = it->get<std::string>();
  body.erase(it);
  return std::optional<std::string>(std::move(value));
}

bool NestingExceeds(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<json> ParseJsonObject(std::string_view text) {
  // Copying and serialising JSON recurse once per level: refuse absurd nesting before parsing.
  if (NestingExceeds(text, kMaxJsonNesting)) {
    return WithErrorCode(absl::InvalidArgumentError(absl::StrCat(
                             "the request body nests deeper than ", kMaxJsonNesting, " levels")),
                         "invalid_json");
  }
  json body = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  // nlohmann's lexer takes a NUL byte for the end of the input, so `{...}\0<anything>` would
  // parse; a raw NUL is never valid JSON text (inside strings it must be escaped).
  if (body.is_discarded() || text.find('\0') != std::string_view::npos) {
    return WithErrorCode(
        absl::InvalidArgumentError("the request body is not valid JSON (or not valid UTF-8)"),
        "invalid_json");
  }
  if (!body.is_object()) {
    return absl::InvalidArgumentError("the request body must be a JSON object");
  }
  return body;
}

absl::StatusOr<ChatRequest> ParseChatRequest(std::string_view text) {
  AILB_ASSIGN_OR_RETURN(json body, ParseJsonObject(text));

  ChatRequest request;
  auto model = body.find("model");
  if (model == body.end() || !model->is_string() || model->get_ref<const std::string&>().empty() ||
      model->get_ref<const std::string&>().size() > kMaxModelNameBytes) {
    return InvalidFieldError("model", absl::StrCat("'model' is required and must be a non-empty "
                                                   "string of at most ",
                                                   kMaxModelNameBytes, " bytes"));
  }
  request.model = model->get<std::string>();

  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty()) {
    return InvalidFieldError("messages", "'messages' is required and must be a non-empty array");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    AILB_RETURN_IF_ERROR(ValidateMessage((*messages)[i], i));
  }

  if (auto stream = body.find("stream"); stream != body.end() && !stream->is_null()) {
    if (!stream->is_boolean()) return InvalidFieldError("stream", "'stream' must be a boolean");
    request.stream = stream->get<bool>();
  }
  if (auto options = body.find("stream_options"); options != body.end() && !options->is_null()) {
    if (!options->is_object()) {
      return InvalidFieldError("stream_options", "'stream_options' must be an object");
    }
    if (auto usage = options->find("include_usage"); usage != options->end()) {
      if (!usage->is_boolean()) {
        return InvalidFieldError("stream_options.include_usage",
                                 "'stream_options.include_usage' must be a boolean");
      }
      request.include_usage = usage->get<bool>();
    }
    if (!request.stream) {
      return InvalidFieldError("stream_options",
                               "'stream_options' is only allowed when 'stream' is true");
    }
  }
  AILB_RETURN_IF_ERROR(ValidateSamplingFields(body));

  AILB_ASSIGN_OR_RETURN(request.session_id, TakeExtensionString(body, kSessionIdField));
  AILB_ASSIGN_OR_RETURN(request.rag_collection, TakeExtensionString(body, kRagCollectionField));
  if (auto top_k = body.find(kRagTopKField); top_k != body.end()) {
    if (!top_k->is_null()) {
      if (!top_k->is_number_integer() || top_k->get<int64_t>() < 1 ||
          top_k->get<int64_t>() > kMaxRagTopK) {
        return InvalidFieldError(kRagTopKField, absl::StrCat("'rag_top_k' must be an integer "
                                                             "between 1 and ",
                                                             kMaxRagTopK));
      }
      request.rag_top_k = static_cast<int>(top_k->get<int64_t>());
    }
    body.erase(top_k);
  }
  request.body = std::move(body);
  return request;
}

std::optional<Usage> UsageOf(const nlohmann::json& response) {
  auto usage = response.find("usage");
  if (usage == response.end() || !usage->is_object()) return std::nullopt;
  Usage result;
  result.reported = true;
  if (auto p = usage->find("prompt_tokens"); p != usage->end() && p->is_number_integer()) {
    result.prompt_tokens = p->get<int64_t>();
  }
  if (auto c = usage->find("completion_tokens"); c != usage->end() && c->is_number_integer()) {
    result.completion_tokens = c->get<int64_t>();
  }
  return result;
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int64_t EstimatePromptTokens(const nlohmann::json& body) {
  constexpr int64_t kPerMessage = 4;
  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array()) return 0;
  int64_t chars = 0;
  int64_t tokens = 0;
  for (const nlohmann::json& message : *messages) {
    tokens += kPerMessage;
    if (!message.is_object()) continue;
    auto content = message.find("content");
    if (content == message.end()) continue;
    if (content->is_string()) {
      chars += static_cast<int64_t>(content->get_ref<const std::string&>().size());
    } else if (content->is_array()) {
      for (const nlohmann::json& part : *content) {
        if (!part.is_object()) continue;
        auto text = part.find("text");
        if (text != part.end() && text->is_string()) {
          chars += static_cast<int64_t>(text->get_ref<const std::string&>().size());
        }
      }
    }
  }
  return tokens + (chars + 3) / 4;
}

}  // namespace ailb::llm
