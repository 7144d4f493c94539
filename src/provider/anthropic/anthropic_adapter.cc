#include "provider/anthropic/anthropic_adapter.h"

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
#include "ailb/provider/sse.h"
#include "provider/retry_after.h"

namespace ailb::provider {
namespace {

using nlohmann::json;

constexpr char kApiVersion[] = "2023-06-01";
constexpr int64_t kDefaultMaxTokens = 4096;
constexpr char kContinuedText[] = "(continued)";
constexpr char kJsonObjectInstruction[] = "Respond with a single JSON object.";
constexpr char kJsonSchemaInstruction[] =
    "Respond with a single JSON object that conforms to this JSON Schema:\n";
// Token counts from a hostile upstream are clamped so sums cannot overflow.
constexpr int64_t kMaxTokenCount = int64_t{1} << 40;

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

std::optional<int64_t> FindTokenCount(const json& object, const char* key) {
  std::optional<int64_t> value = FindInt(object, key);
  if (!value) return std::nullopt;
  return std::clamp<int64_t>(*value, 0, kMaxTokenCount);
}

void AddAuthHeaders(const config::Deployment& deployment, upstream::Headers& headers) {
  if (!deployment.api_key.empty()) headers.emplace_back("x-api-key", deployment.api_key);
  headers.emplace_back("anthropic-version", kApiVersion);
}

json TextBlock(std::string text) { return json{{"type", "text"}, {"text", std::move(text)}}; }

// ---- Request translation ----

absl::StatusOr<json> ImageBlock(const json& part, const std::string& at) {
  const json* image_url = Find(part, "image_url");
  const std::string* url = nullptr;
  if (image_url != nullptr && image_url->is_string()) {
    url = &image_url->get_ref<const std::string&>();
  } else if (image_url != nullptr) {
    url = FindString(*image_url, "url");
  }
  const std::string param = at + ".image_url.url";
  if (url == nullptr) return InvalidFieldError(param, param + " must be a string");
  if (url->starts_with("data:")) {
    const size_t comma = url->find(',');
    const std::string_view header = comma == std::string::npos
                                        ? std::string_view()
                                        : std::string_view(*url).substr(5, comma - 5);
    const std::string_view media_type = header.substr(0, header.find(';'));
    if (!header.ends_with(";base64") || media_type.empty()) {
      return InvalidFieldError(param,
                               param + " must be a base64 data URL (data:<type>;base64,...)");
    }
    return json{{"type", "image"},
                {"source",
                 {{"type", "base64"},
                  {"media_type", std::string(media_type)},
                  {"data", url->substr(comma + 1)}}}};
  }
  if (url->starts_with("https://") || url->starts_with("http://")) {
    return json{{"type", "image"}, {"source", {{"type", "url"}, {"url", *url}}}};
  }
  return InvalidFieldError(param, param + " must be a base64 data URL or an http(s) URL");
}

// The content blocks of a user, assistant or tool message; empty text is skipped because
// Anthropic rejects empty text blocks.
absl::StatusOr<json> ContentBlocks(const json* content, const std::string& at, bool allow_images) {
  json blocks = json::array();
  if (content == nullptr || content->is_null()) return blocks;
  if (content->is_string()) {
    if (!content->get_ref<const std::string&>().empty()) {
      blocks.push_back(TextBlock(content->get<std::string>()));
    }
    return blocks;
  }
  if (!content->is_array()) {
    return InvalidFieldError(at + ".content", at + ".content must be a string or an array");
  }
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string part_at = absl::StrCat(at, ".content[", i, "]");
    const std::string type = StringOr(part, "type", "");
    if (type == "text" || type == "refusal") {
      const std::string* text = FindString(part, type == "text" ? "text" : "refusal");
      if (text == nullptr) {
        return InvalidFieldError(part_at, absl::StrCat(part_at, ".", type, " must be a string"));
      }
      if (!text->empty()) blocks.push_back(TextBlock(*text));
    } else if (type == "image_url" && allow_images) {
      AILB_ASSIGN_OR_RETURN(json image, ImageBlock(part, part_at));
      blocks.push_back(std::move(image));
    } else {
      return InvalidFieldError(part_at + ".type",
                               absl::StrCat("content part type '", type, "' in ", at,
                                            " is not supported by anthropic deployments"));
    }
  }
  return blocks;
}

// System text: the text parts of one message joined with "\n".
absl::StatusOr<std::string> SystemText(const json* content, const std::string& at) {
  if (content == nullptr || content->is_null()) return std::string();
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return InvalidFieldError(at + ".content", at + ".content must be a string or an array");
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string* text = FindString(part, "text");
    if (StringOr(part, "type", "") != "text" || text == nullptr) {
      const std::string part_at = absl::StrCat(at, ".content[", i, "]");
      return InvalidFieldError(part_at, part_at + " must be a text part in a system message");
    }
    texts.push_back(*text);
  }
  return absl::StrJoin(texts, "\n");
}

absl::StatusOr<json> ToolUseBlocks(const json& tool_calls, const std::string& at) {
  json blocks = json::array();
  if (tool_calls.is_null()) return blocks;
  if (!tool_calls.is_array()) {
    return InvalidFieldError(at + ".tool_calls", at + ".tool_calls must be an array");
  }
  for (size_t i = 0; i < tool_calls.size(); ++i) {
    const json& call = tool_calls[i];
    const std::string call_at = absl::StrCat(at, ".tool_calls[", i, "]");
    const std::string* id = FindString(call, "id");
    const json* function = Find(call, "function");
    const std::string* name = function != nullptr ? FindString(*function, "name") : nullptr;
    if (id == nullptr || name == nullptr) {
      return InvalidFieldError(call_at, call_at + " needs a string id and function.name");
    }
    if (const std::string* type = FindString(call, "type");
        type != nullptr && *type != "function") {
      return InvalidFieldError(call_at + ".type", call_at + ".type must be 'function'");
    }
    const json* arguments = Find(*function, "arguments");
    json input = json::object();
    if (arguments != nullptr && arguments->is_string()) {
      const std::string& text = arguments->get_ref<const std::string&>();
      // Models emit "" for functions without parameters.
      if (!absl::StripAsciiWhitespace(text).empty()) {
        input = json::parse(text, nullptr, /*allow_exceptions=*/false);
      }
    } else if (arguments != nullptr && !arguments->is_null()) {
      input = *arguments;  // some clients send the object itself
    }
    if (input.is_discarded() || !input.is_object()) {
      return InvalidFieldError(call_at + ".function.arguments",
                               call_at +
                                   ".function.arguments must be a JSON object encoded as a "
                                   "string");
    }
    blocks.push_back(
        json{{"type", "tool_use"}, {"id", *id}, {"name", *name}, {"input", std::move(input)}});
  }
  return blocks;
}

absl::StatusOr<json> ToolResultBlock(const json& message, const std::string& at) {
  const std::string* id = FindString(message, "tool_call_id");
  if (id == nullptr) {
    return InvalidFieldError(at + ".tool_call_id", at + ".tool_call_id is required");
  }
  json block = {{"type", "tool_result"}, {"tool_use_id", *id}};
  const json* content = Find(message, "content");
  if (content != nullptr && content->is_string()) {
    if (!content->get_ref<const std::string&>().empty()) block["content"] = *content;
  } else {
    AILB_ASSIGN_OR_RETURN(json blocks, ContentBlocks(content, at, /*allow_images=*/true));
    if (!blocks.empty()) block["content"] = std::move(blocks);
  }
  return block;
}

// Appends `blocks` as a `role` turn, merging into the previous turn when it has the same role.
void AppendTurn(json& messages, const char* role, json blocks) {
  if (blocks.empty()) return;
  if (!messages.empty() && messages.back()["role"] == role) {
    json& content = messages.back()["content"];
    for (json& block : blocks) content.push_back(std::move(block));
    return;
  }
  messages.push_back(json{{"role", role}, {"content", std::move(blocks)}});
}

bool IsToolResult(const json& block) {
  const std::string* type = FindString(block, "type");
  return type != nullptr && *type == "tool_result";
}

// Makes the turn list acceptable to Anthropic (see the class comment).
void NormalizeTurns(json& messages) {
  for (json& message : messages) {
    if (message["role"] != "user") continue;
    json& content = message["content"];
    std::stable_partition(content.begin(), content.end(), IsToolResult);
  }
  if (messages.empty() || messages.front()["role"] != "user") {
    messages.insert(messages.begin(),
                    json{{"role", "user"}, {"content", json::array({TextBlock(kContinuedText)})}});
  }
  json& last = messages.back();
  if (last["role"] != "assistant") return;
  json& content = last["content"];
  if (!content.back().is_object() || content.back()["type"] != "text") return;
  std::string text = StringOr(content.back(), "text", "");
  absl::StripTrailingAsciiWhitespace(&text);
  if (text.empty()) {
    content.erase(content.end() - 1);
    if (content.empty()) messages.erase(messages.end() - 1);
  } else {
    content.back()["text"] = std::move(text);
  }
}

absl::Status TranslateMessages(const json& body, json& out) {
  const json* messages = Find(body, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return InvalidFieldError("messages", "'messages' must be an array");
  }
  std::vector<std::string> system;
  json turns = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    const std::string role = StringOr(message, "role", "");
    const json* content = Find(message, "content");
    if (role == "system" || role == "developer") {
      AILB_ASSIGN_OR_RETURN(std::string text, SystemText(content, at));
      if (!text.empty()) system.push_back(std::move(text));
    } else if (role == "user") {
      AILB_ASSIGN_OR_RETURN(json blocks, ContentBlocks(content, at, /*allow_images=*/true));
      AppendTurn(turns, "user", std::move(blocks));
    } else if (role == "assistant") {
      AILB_ASSIGN_OR_RETURN(json blocks, ContentBlocks(content, at, /*allow_images=*/false));
      if (const json* calls = Find(message, "tool_calls"); calls != nullptr) {
        AILB_ASSIGN_OR_RETURN(json uses, ToolUseBlocks(*calls, at));
        for (json& use : uses) blocks.push_back(std::move(use));
      }
      AppendTurn(turns, "assistant", std::move(blocks));
    } else if (role == "tool") {
      AILB_ASSIGN_OR_RETURN(json result, ToolResultBlock(message, at));
      AppendTurn(turns, "user", json::array({std::move(result)}));
    } else {
      return InvalidFieldError(
          at + ".role",
          absl::StrCat(at, ".role '", role, "' is not supported by anthropic deployments"));
    }
  }
  if (const json* format = Find(body, "response_format"); format != nullptr) {
    const std::string type = StringOr(*format, "type", "");
    const json* schema = nullptr;
    if (const json* spec = Find(*format, "json_schema"); spec != nullptr) {
      schema = Find(*spec, "schema");
    }
    if (type == "json_schema" && schema != nullptr && schema->is_object()) {
      system.push_back(absl::StrCat(kJsonSchemaInstruction, llm::DumpJson(*schema)));
    } else if (type == "json_object" || type == "json_schema") {
      system.push_back(kJsonObjectInstruction);
    }
  }
  NormalizeTurns(turns);
  if (!system.empty()) out["system"] = absl::StrJoin(system, "\n\n");
  out["messages"] = std::move(turns);
  return absl::OkStatus();
}

absl::Status TranslateTools(const json& body, json& out) {
  const json* tools = Find(body, "tools");
  if (tools == nullptr || !tools->is_array() || tools->empty()) return absl::OkStatus();
  json translated = json::array();
  for (size_t i = 0; i < tools->size(); ++i) {
    const json& tool = (*tools)[i];
    const std::string at = absl::StrCat("tools[", i, "]");
    const json* function = Find(tool, "function");
    const std::string* name = function != nullptr ? FindString(*function, "name") : nullptr;
    if (StringOr(tool, "type", "") != "function" || name == nullptr) {
      return InvalidFieldError(at, at + " must be a function tool with a string function.name");
    }
    json schema = {{"type", "object"}, {"properties", json::object()}};
    if (const json* parameters = Find(*function, "parameters");
        parameters != nullptr && parameters->is_object()) {
      schema = *parameters;
      // Anthropic insists on an object schema; OpenAI lets `type` be implied.
      if (!schema.contains("type")) schema["type"] = "object";
    }
    json entry = {{"name", *name}, {"input_schema", std::move(schema)}};
    if (const std::string* description = FindString(*function, "description")) {
      entry["description"] = *description;
    }
    translated.push_back(std::move(entry));
  }
  out["tools"] = std::move(translated);

  json choice;
  if (const json* tool_choice = Find(body, "tool_choice");
      tool_choice != nullptr && !tool_choice->is_null()) {
    if (tool_choice->is_string() && *tool_choice == "auto") {
      choice = {{"type", "auto"}};
    } else if (tool_choice->is_string() && *tool_choice == "required") {
      choice = {{"type", "any"}};
    } else if (tool_choice->is_string() && *tool_choice == "none") {
      choice = {{"type", "none"}};
    } else if (const json* function = Find(*tool_choice, "function");
               StringOr(*tool_choice, "type", "") == "function" && function != nullptr &&
               FindString(*function, "name") != nullptr) {
      choice = {{"type", "tool"}, {"name", *FindString(*function, "name")}};
    } else {
      return InvalidFieldError("tool_choice",
                               "'tool_choice' must be auto, required, none or a named function");
    }
  }
  if (const json* parallel = Find(body, "parallel_tool_calls");
      parallel != nullptr && parallel->is_boolean() && !parallel->get<bool>()) {
    if (choice.is_null()) choice = {{"type", "auto"}};
    if (choice["type"] != "none") choice["disable_parallel_tool_use"] = true;
  }
  if (!choice.is_null()) out["tool_choice"] = std::move(choice);
  return absl::OkStatus();
}

absl::Status TranslateSampling(const json& body, json& out) {
  if (std::optional<int64_t> n = FindInt(body, "n"); n && *n > 1) {
    return InvalidFieldError("n", "'n' must be 1 for anthropic deployments (one choice per call)");
  }
  int64_t max_tokens = kDefaultMaxTokens;
  if (std::optional<int64_t> value = FindInt(body, "max_completion_tokens"); value && *value > 0) {
    max_tokens = *value;
  } else if (std::optional<int64_t> value = FindInt(body, "max_tokens"); value && *value > 0) {
    max_tokens = *value;
  }
  out["max_tokens"] = max_tokens;
  if (const json* temperature = Find(body, "temperature");
      temperature != nullptr && temperature->is_number()) {
    out["temperature"] = std::clamp(temperature->get<double>(), 0.0, 1.0);
  }
  // Current Claude models reject temperature and top_p together; temperature is the one clients
  // set deliberately (top_p usually rides along at its default).
  if (const json* top_p = Find(body, "top_p");
      top_p != nullptr && top_p->is_number() && !out.contains("temperature")) {
    out["top_p"] = *top_p;
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
    if (!sequences.empty()) out["stop_sequences"] = std::move(sequences);
  }
  if (const std::string* user = FindString(body, "user"); user != nullptr && !user->empty()) {
    out["metadata"] = {{"user_id", *user}};
  }
  return absl::OkStatus();
}

// ---- Response translation ----

std::string FinishReason(const json& stop_reason) {
  const std::string reason = stop_reason.is_string() ? stop_reason.get<std::string>() : "";
  if (reason == "max_tokens" || reason == "model_context_window_exceeded") return "length";
  if (reason == "tool_use") return "tool_calls";
  if (reason == "refusal") return "content_filter";
  // end_turn, stop_sequence, pause_turn and anything newer: the turn ended normally.
  return "stop";
}

// Anthropic token figures as OpenAI usage; tracks the latest value of each figure.
struct TokenCounts {
  int64_t input = 0;
  int64_t cache_creation = 0;
  int64_t cache_read = 0;
  int64_t output = 0;
  bool has_cache_read = false;

  void Update(const json& usage) {
    if (auto v = FindTokenCount(usage, "input_tokens")) input = *v;
    if (auto v = FindTokenCount(usage, "cache_creation_input_tokens")) cache_creation = *v;
    if (auto v = FindTokenCount(usage, "cache_read_input_tokens")) {
      cache_read = *v;
      has_cache_read = true;
    }
    if (auto v = FindTokenCount(usage, "output_tokens")) output = *v;
  }

  json ToOpenAI() const {
    const int64_t prompt = input + cache_creation + cache_read;
    json usage = {{"prompt_tokens", prompt},
                  {"completion_tokens", output},
                  {"total_tokens", prompt + output}};
    if (has_cache_read) usage["prompt_tokens_details"] = {{"cached_tokens", cache_read}};
    return usage;
  }
};

std::string ErrorMessageOf(const json& reply) {
  const json* error = Find(reply, "error");
  if (error == nullptr) return "";
  return StringOr(*error, "message", "");
}

absl::Status StreamErrorStatus(const json& event) {
  const json* error = Find(event, "error");
  const std::string type = error != nullptr ? StringOr(*error, "type", "") : "";
  std::string message = ErrorMessageOf(event);
  if (message.empty()) message = "anthropic reported an error mid-stream";
  if (type == "overloaded_error") {
    return WithErrorCode(WithHttpStatus(absl::UnavailableError(message), 503), type);
  }
  return BadGatewayError(message);
}

class AnthropicStreamDecoder final : public StreamDecoder {
 public:
  absl::Status Feed(std::string_view bytes, std::vector<json>& out) override {
    if (!failed_.ok()) return failed_;
    events_.clear();
    sse_.Feed(bytes, events_);
    for (const SseEvent& event : events_) {
      if (done_) break;  // nothing after message_stop is meaningful
      if (absl::Status status = HandleEvent(event, out); !status.ok()) {
        failed_ = status;
        return status;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Finish(std::vector<json>& out) override {
    if (!failed_.ok()) return failed_;
    // A final event without its blank line still counts; one cut short is a truncation, not a
    // malformed reply, so it reads as Unavailable like any other early end.
    finishing_ = true;
    if (!done_) AILB_RETURN_IF_ERROR(Feed("\n\n", out));
    if (!done_) return absl::UnavailableError("anthropic stream ended before message_stop");
    return absl::OkStatus();
  }

 private:
  absl::Status HandleEvent(const SseEvent& event, std::vector<json>& out) {
    json data = json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    if (data.is_discarded() || !data.is_object()) {
      if (finishing_) return absl::UnavailableError("anthropic stream ended mid-event");
      return BadGatewayError("anthropic stream contained an event that is not valid JSON");
    }
    // The payload's type is authoritative; the SSE event name duplicates it.
    const std::string type = StringOr(data, "type", event.event);
    if (type == "error") return StreamErrorStatus(data);
    if (type == "ping") return absl::OkStatus();
    if (type == "message_start") {
      if (started_) return BadGatewayError("anthropic stream sent message_start twice");
      started_ = true;
      if (const json* message = Find(data, "message")) {
        id_ = StringOr(*message, "id", "");
        model_ = StringOr(*message, "model", "");
        if (const json* usage = Find(*message, "usage")) tokens_.Update(*usage);
      }
      out.push_back(Chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr));
      return absl::OkStatus();
    }
    if (!started_) {
      // Unknown event types are ignored (Anthropic may add some); known ones need a message.
      if (type != "content_block_start" && type != "content_block_delta" &&
          type != "content_block_stop" && type != "message_delta" && type != "message_stop") {
        return absl::OkStatus();
      }
      return BadGatewayError(absl::StrCat("anthropic stream sent ", type, " before message_start"));
    }
    if (type == "content_block_start") return BlockStart(data, out);
    if (type == "content_block_delta") return BlockDelta(data, out);
    if (type == "message_delta") {
      if (const json* usage = Find(data, "usage")) tokens_.Update(*usage);
      const json* delta = Find(data, "delta");
      const json* stop_reason = delta != nullptr ? Find(*delta, "stop_reason") : nullptr;
      if (stop_reason != nullptr && stop_reason->is_string() && !finished_) {
        finished_ = true;
        out.push_back(Chunk(json::object(), FinishReason(*stop_reason)));
      }
      return absl::OkStatus();
    }
    if (type == "message_stop") {
      done_ = true;
      // A finish chunk is owed even when the upstream skipped message_delta.
      if (!finished_) out.push_back(Chunk(json::object(), "stop"));
      finished_ = true;
      out.push_back(json{{"id", id_},
                         {"object", "chat.completion.chunk"},
                         {"created", 0},
                         {"model", model_},
                         {"choices", json::array()},
                         {"usage", tokens_.ToOpenAI()}});
    }
    // content_block_stop and unknown event types carry nothing for the client.
    return absl::OkStatus();
  }

  absl::Status BlockStart(const json& data, std::vector<json>& out) {
    const json* block = Find(data, "content_block");
    std::optional<int64_t> index = FindInt(data, "index");
    if (block == nullptr || !index) {
      return BadGatewayError("anthropic content_block_start lacks content_block or index");
    }
    const std::string type = StringOr(*block, "type", "");
    if (type == "text") {
      if (const std::string* text = FindString(*block, "text"); text != nullptr && !text->empty()) {
        out.push_back(Chunk(json{{"content", *text}}, nullptr));
      }
    } else if (type == "tool_use") {
      const int tool_index = static_cast<int>(tool_indexes_.size());
      if (!tool_indexes_.emplace(*index, tool_index).second) {
        return BadGatewayError("anthropic stream reused a content block index");
      }
      json call = {{"index", tool_index},
                   {"id", StringOr(*block, "id", "")},
                   {"type", "function"},
                   {"function", {{"name", StringOr(*block, "name", "")}, {"arguments", ""}}}};
      out.push_back(Chunk(json{{"tool_calls", json::array({std::move(call)})}}, nullptr));
    }
    // thinking and server-tool blocks are not part of the OpenAI answer.
    return absl::OkStatus();
  }

  absl::Status BlockDelta(const json& data, std::vector<json>& out) {
    const json* delta = Find(data, "delta");
    std::optional<int64_t> index = FindInt(data, "index");
    if (delta == nullptr || !index) {
      return BadGatewayError("anthropic content_block_delta lacks delta or index");
    }
    const std::string type = StringOr(*delta, "type", "");
    if (type == "text_delta") {
      const std::string* text = FindString(*delta, "text");
      if (text == nullptr) return BadGatewayError("anthropic text_delta lacks text");
      if (!text->empty()) out.push_back(Chunk(json{{"content", *text}}, nullptr));
    } else if (type == "input_json_delta") {
      const std::string* partial = FindString(*delta, "partial_json");
      if (partial == nullptr)
        return BadGatewayError("anthropic input_json_delta lacks partial_json");
      auto tool = tool_indexes_.find(*index);
      // Server-tool blocks also stream input; only client tool calls are forwarded.
      if (tool != tool_indexes_.end() && !partial->empty()) {
        json call = {{"index", tool->second}, {"function", {{"arguments", *partial}}}};
        out.push_back(Chunk(json{{"tool_calls", json::array({std::move(call)})}}, nullptr));
      }
    }
    return absl::OkStatus();
  }

  json Chunk(json delta, json finish_reason) const {
    json choice = {{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish_reason}};
    return json{{"id", id_},
                {"object", "chat.completion.chunk"},
                {"created", 0},
                {"model", model_},
                {"choices", json::array({std::move(choice)})}};
  }

  SseDecoder sse_;
  std::vector<SseEvent> events_;
  absl::Status failed_;
  bool finishing_ = false;  // Finish() is flushing the last, possibly cut, event
  bool started_ = false;
  bool finished_ = false;
  bool done_ = false;
  std::string id_;
  std::string model_;
  TokenCounts tokens_;
  std::map<int64_t, int> tool_indexes_;  // content block index -> OpenAI tool call index
};

}  // namespace

absl::StatusOr<upstream::Request> AnthropicAdapter::EncodeChat(
    const llm::ChatRequest& request, const config::Deployment& deployment) const {
  const json& body = request.body;
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be an object");
  json out = json::object();
  out["model"] = deployment.upstream_model;
  AILB_RETURN_IF_ERROR(TranslateMessages(body, out));
  AILB_RETURN_IF_ERROR(TranslateTools(body, out));
  AILB_RETURN_IF_ERROR(TranslateSampling(body, out));
  out["stream"] = request.stream;

  upstream::Request result;
  result.url = absl::StrCat(deployment.api_base, "/v1/messages");
  result.headers.emplace_back("content-type", "application/json");
  result.headers.emplace_back("accept", request.stream ? "text/event-stream" : "application/json");
  AddAuthHeaders(deployment, result.headers);
  result.body = llm::DumpJson(out);
  return result;
}

absl::StatusOr<json> AnthropicAdapter::DecodeChat(std::string_view body) const {
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) {
    return BadGatewayError("anthropic reply is not valid JSON");
  }
  if (StringOr(reply, "type", "") == "error") {
    std::string message = ErrorMessageOf(reply);
    return BadGatewayError(message.empty() ? "anthropic replied with an error" : message);
  }
  const json* content = Find(reply, "content");
  if (content == nullptr || !content->is_array()) {
    return BadGatewayError("anthropic reply has no 'content' array");
  }
  std::string text;
  bool has_text = false;
  json tool_calls = json::array();
  for (const json& block : *content) {
    const std::string type = StringOr(block, "type", "");
    if (type == "text") {
      const std::string* piece = FindString(block, "text");
      if (piece == nullptr) return BadGatewayError("anthropic text block lacks text");
      text += *piece;
      has_text = true;
    } else if (type == "tool_use") {
      const std::string* id = FindString(block, "id");
      const std::string* name = FindString(block, "name");
      if (id == nullptr || name == nullptr) {
        return BadGatewayError("anthropic tool_use block lacks id or name");
      }
      const json* input = Find(block, "input");
      tool_calls.push_back(
          json{{"id", *id},
               {"type", "function"},
               {"function",
                {{"name", *name},
                 {"arguments", input != nullptr ? llm::DumpJson(*input) : std::string("{}")}}}});
    }
  }
  json message = {{"role", "assistant"}, {"content", has_text ? json(text) : json(nullptr)}};
  if (!tool_calls.empty()) message["tool_calls"] = std::move(tool_calls);
  json stop_reason = nullptr;
  if (const json* reason = Find(reply, "stop_reason")) stop_reason = *reason;

  TokenCounts tokens;
  if (const json* usage = Find(reply, "usage")) tokens.Update(*usage);
  json choice = {{"index", 0},
                 {"message", std::move(message)},
                 {"finish_reason", FinishReason(stop_reason)},
                 {"logprobs", nullptr}};
  return json{{"id", StringOr(reply, "id", "")},
              {"object", "chat.completion"},
              {"created", 0},
              {"model", StringOr(reply, "model", "")},
              {"choices", json::array({std::move(choice)})},
              {"usage", tokens.ToOpenAI()}};
}

std::unique_ptr<StreamDecoder> AnthropicAdapter::NewStreamDecoder() const {
  return std::make_unique<AnthropicStreamDecoder>();
}

absl::Status AnthropicAdapter::DecodeError(int http_status, const upstream::Headers& headers,
                                           std::string_view body) const {
  // 529 is Anthropic's own "overloaded"; clients and retry policies know it as 503.
  const int effective_status = http_status == 529 ? 503 : http_status;
  std::string message;
  std::string type;
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (!reply.is_discarded()) {
    message = ErrorMessageOf(reply);
    if (const json* error = Find(reply, "error")) type = StringOr(*error, "type", "");
  }
  if (message.empty()) message = absl::StrCat("anthropic answered HTTP ", http_status);
  absl::StatusCode code = StatusCodeForHttp(effective_status);
  // Only called for failures; a 2xx here would otherwise read as success.
  if (code == absl::StatusCode::kOk) code = absl::StatusCode::kUnknown;
  absl::Status status = WithHttpStatus(absl::Status(code, message), effective_status);
  if (!type.empty()) status = WithErrorCode(std::move(status), type);
  return WithUpstreamRetryAfter(std::move(status), headers);
}

absl::StatusOr<upstream::Request> AnthropicAdapter::EncodeHealthProbe(
    const config::Deployment& deployment) const {
  upstream::Request out;
  out.method = "GET";
  out.url = absl::StrCat(deployment.api_base, "/v1/models");
  out.headers.emplace_back("accept", "application/json");
  AddAuthHeaders(deployment, out.headers);
  return out;
}

}  // namespace ailb::provider
