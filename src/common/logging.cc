#include "ailb/common/logging.h"

#include <atomic>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace ailb {
namespace {

// Marks a payload that is already the body of a JSON object (the access log's fields).
constexpr char kFieldsMarker = '\x1e';

std::atomic<bool> json_format{false};

std::string LevelName(spdlog::level::level_enum level) {
  const auto name = spdlog::level::to_string_view(level);
  return std::string(name.data(), name.size());
}

// One JSON object per line, with the message escaped properly (spdlog patterns cannot escape).
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    std::string text;
    if (msg.payload.size() > 1 && msg.payload[0] == kFieldsMarker) {
      // "{ts_ms,level," + the fields' members: the payload is "<marker>{...}".
      nlohmann::json head = {{"ts_ms", millis}, {"level", LevelName(msg.level)}};
      text = head.dump();
      text.back() = ',';
      text.append(msg.payload.data() + 2, msg.payload.size() - 2);
    } else {
      nlohmann::json line = {{"ts_ms", millis},
                             {"level", LevelName(msg.level)},
                             {"msg", std::string(msg.payload.data(), msg.payload.size())}};
      text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    text.push_back('\n');
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

absl::Status ConfigureLogging(const std::string& level, const std::string& format) {
  spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat("LOG_LEVEL: unknown level '", level, "'"));
  }
  auto logger = spdlog::stdout_logger_mt("ailb");
  json_format.store(format == "json");
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  } else {
    return absl::InvalidArgumentError(absl::StrCat("LOG_FORMAT: unknown format '", format, "'"));
  }
  logger->set_level(parsed);
  // Access logs must reach a pipe or file promptly, not when a buffer fills.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

void LogAccess(const nlohmann::ordered_json& fields) {
  if (!spdlog::default_logger_raw()->should_log(spdlog::level::info)) return;
  if (json_format.load(std::memory_order_relaxed)) {
    nlohmann::ordered_json line = fields;
    line["log"] = "access";
    const std::string body = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (body.size() < 2) return;  // "{}" cannot happen: "log" is always there
    spdlog::info("{}{}", kFieldsMarker, body);
    return;
  }
  std::string text = "access";
  for (const auto& [key, value] : fields.items()) {
    std::string shown;
    if (value.is_string()) {
      shown = value.get_ref<const std::string&>();
      if (shown.empty() || shown.find_first_of(" \t\"=") != std::string::npos) {
        shown = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    } else {
      shown = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    absl::StrAppend(&text, " ", key, "=", shown);
  }
  spdlog::info("{}", text);
}

}  // namespace ailb
