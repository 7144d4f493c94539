// Golden-file plumbing shared by the provider adapter tests.
//
// Layout under tests/data/golden/<provider>/:
//   request/<case>.in.json    an OpenAI request body (parsed with llm::ParseChatRequest)
//   request/<case>.out.json   {"request": {method, url, headers, body}} or {"status": {...}}
//   response/<case>.in.json   a provider 2xx body (raw bytes)
//   response/<case>.out.json  {"response": <chat.completion>} or {"status": {...}}
//   error/<case>.in.json      {"http_status", "headers": [[name, value]...], "body": "<raw>"}
//   error/<case>.out.json     {"status": {...}}
//   stream/<case>.<ext>       a raw stream transcript (.sse or .ndjson)
//   stream/<case>.out.json    {"chunks": [...], "status": {...}, "failed_in": "feed"|"finish"}
// A status is {"code": "INVALID_ARGUMENT", "message", and when set "http_status",
// "retry_after", "error_code", "param"}.
//
// AILB_GOLDEN_DIR overrides the golden root. AILB_UPDATE_GOLDEN=1 rewrites the .out.json files
// from the current behaviour; review the diff before committing.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/status.h"
#include "ailb/provider/adapter.h"
#include "ailb/upstream/http_client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::provider::golden {

using nlohmann::json;

// `source_file` is the test's __FILE__, so the data is found wherever the tree is checked out.
inline std::filesystem::path GoldenRoot(const char* source_file, std::string_view provider) {
  if (const char* dir = std::getenv("AILB_GOLDEN_DIR"); dir != nullptr && *dir != '\0') {
    return std::filesystem::path(dir) / provider;
  }
  return (std::filesystem::path(source_file).parent_path() / "../../data/golden" / provider)
      .lexically_normal();
}

inline bool UpdateMode() {
  const char* value = std::getenv("AILB_UPDATE_GOLDEN");
  return value != nullptr && std::string_view(value) == "1";
}

inline std::optional<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The file parsed as JSON; a discarded value (with a test failure) when missing or invalid.
inline json ReadJson(const std::filesystem::path& path) {
  std::optional<std::string> text = ReadFile(path);
  if (!text) {
    ADD_FAILURE() << "missing golden file " << path;
    return json(json::value_t::discarded);
  }
  json value = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) ADD_FAILURE() << "golden file is not valid JSON: " << path;
  return value;
}

inline void WriteJson(const std::filesystem::path& path, const json& value) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << value.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
}

// Case names: the stems of the files in `dir` whose names end with `suffix`, sorted.
inline std::vector<std::string> CaseNames(const std::filesystem::path& dir,
                                          std::string_view suffix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      names.push_back(name.substr(0, name.size() - suffix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline json StatusToJson(const absl::Status& status) {
  json out = {{"code", absl::StatusCodeToString(status.code())}};
  if (status.ok()) return out;
  out["message"] = std::string(status.message());
  if (std::optional<int> http = HttpStatusOverride(status)) out["http_status"] = *http;
  if (std::optional<int> retry = RetryAfterOf(status)) out["retry_after"] = *retry;
  if (std::string code = ErrorCodeOf(status); !code.empty()) out["error_code"] = code;
  if (std::string param = ErrorParamOf(status); !param.empty()) out["param"] = param;
  return out;
}

// Headers become an object: tests never send a header twice, and order is not significant.
inline json RequestToJson(const upstream::Request& request) {
  json headers = json::object();
  for (const auto& [name, value] : request.headers) headers[name] = value;
  json out = {{"method", request.method}, {"url", request.url}, {"headers", headers}};
  if (!request.body.empty()) {
    out["body"] = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  }
  return out;
}

inline upstream::Headers HeadersFromJson(const json& value) {
  upstream::Headers headers;
  if (!value.is_array()) return headers;
  for (const json& pair : value) {
    if (pair.is_array() && pair.size() == 2 && pair[0].is_string() && pair[1].is_string()) {
      headers.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
    }
  }
  return headers;
}

// Feeds `transcript` in pieces of `piece_size` bytes (0 = all at once), stopping at the first
// error, then calls Finish. Returns the golden-file shape.
inline json RunStream(const ProviderAdapter& adapter, std::string_view transcript,
                      size_t piece_size) {
  std::unique_ptr<StreamDecoder> decoder = adapter.NewStreamDecoder();
  std::vector<json> chunks;
  absl::Status status;
  std::string failed_in;
  const size_t step = piece_size == 0 ? std::max<size_t>(transcript.size(), 1) : piece_size;
  for (size_t offset = 0; offset < transcript.size() && status.ok(); offset += step) {
    status = decoder->Feed(transcript.substr(offset, step), chunks);
    if (!status.ok()) failed_in = "feed";
  }
  if (status.ok()) {
    status = decoder->Finish(chunks);
    if (!status.ok()) failed_in = "finish";
  }
  json out = {{"chunks", chunks}, {"status", StatusToJson(status)}};
  if (!failed_in.empty()) out["failed_in"] = failed_in;
  return out;
}

inline std::string Pretty(const json& value) {
  return value.dump(2, ' ', false, json::error_handler_t::replace);
}

// JSON value equality with a readable report. (EXPECT_EQ on json would make gtest print it as a
// container of containers, recursing forever on scalars.)
inline ::testing::AssertionResult JsonEq(const json& actual, const json& expected) {
  if (actual == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "actual:\n"
                                       << Pretty(actual) << "\nexpected:\n"
                                       << Pretty(expected) << "\npatch from expected to actual:\n"
                                       << Pretty(json::diff(expected, actual));
}

// Compares with the golden file, or rewrites it in update mode.
inline void ExpectMatchesGolden(const json& actual, const std::filesystem::path& golden_path) {
  if (UpdateMode()) {
    WriteJson(golden_path, actual);
    return;
  }
  const json expected = ReadJson(golden_path);
  if (expected.is_discarded()) return;
  EXPECT_TRUE(JsonEq(actual, expected)) << "golden file " << golden_path;
}

inline void CollectPointers(const json& value, const json::json_pointer& at,
                            std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (value.is_object()) {
    for (const auto& item : value.items()) CollectPointers(item.value(), at / item.key(), out);
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) CollectPointers(value[i], at / i, out);
  }
}

// Every variant of `doc` with one node (the root included) replaced by a value of another type:
// what a hostile or buggy peer could send. Adapters must turn each into a status, never throw.
inline std::vector<json> TypeMutations(const json& doc) {
  const json replacements = json::array(
      {nullptr, true, -1, 1e308, 18446744073709551615u, "x", json::array(), json::object()});
  std::vector<json::json_pointer> pointers;
  CollectPointers(doc, json::json_pointer(), pointers);
  std::vector<json> out;
  for (const json::json_pointer& pointer : pointers) {
    for (const json& replacement : replacements) {
      json copy = doc;
      copy[pointer] = replacement;
      out.push_back(std::move(copy));
    }
  }
  return out;
}

}  // namespace ailb::provider::golden
