#include "rag/metadata_filter.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/storage/sqlite.h"

namespace ailb::rag {
namespace {

using json = nlohmann::json;

// Bounds on what one query may ask SQLite to evaluate per document.
constexpr size_t kMaxFilterKeys = 32;
constexpr size_t kMaxInValues = 1024;
constexpr size_t kMaxKeyBytes = 256;

bool IsScalar(const json& value) {
  if (value.is_number_float()) return std::isfinite(value.get<double>());
  return value.is_string() || value.is_number() || value.is_boolean() || value.is_null();
}

absl::Status FilterError(std::string_view key, std::string_view message) {
  return InvalidFieldError(absl::StrCat("filter.", ToAbsl(key)),
                           absl::StrCat("filter.", ToAbsl(key), ": ", ToAbsl(message)));
}

// The json_each condition matching one scalar; appends its parameter, if any.
std::string ScalarCondition(const json& value, std::vector<SqlValue>& params) {
  if (value.is_boolean()) return value.get<bool>() ? "type = 'true'" : "type = 'false'";
  if (value.is_null()) return "type = 'null'";
  if (value.is_string()) {
    params.emplace_back(value.get<std::string>());
    return "(type = 'text' AND atom = ?)";
  }
  // SQLite compares INTEGER and REAL numerically, so 1 matches a stored 1.0 and the reverse.
  if (value.is_number_unsigned() &&
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    params.emplace_back(value.get<double>());
  } else if (value.is_number_integer()) {
    params.emplace_back(value.get<int64_t>());
  } else {
    params.emplace_back(value.get<double>());
  }
  return "(type IN ('integer', 'real') AND atom = ?)";
}

}  // namespace

absl::Status ValidateMetadata(const json& metadata) {
  if (metadata.is_null()) return absl::OkStatus();
  if (!metadata.is_object()) {
    return InvalidFieldError("metadata", "metadata must be a JSON object");
  }
  for (const auto& [key, value] : metadata.items()) {
    bool ok = IsScalar(value);
    if (value.is_array()) {
      ok = true;
      for (const json& element : value) ok = ok && IsScalar(element);
    }
    if (!ok) {
      return InvalidFieldError(
          absl::StrCat("metadata.", key),
          absl::StrCat("metadata.", key,
                       ": values must be strings, finite numbers, booleans, null or arrays of "
                       "those"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CompiledFilter> CompileMetadataFilter(const json& filter, std::string_view column) {
  CompiledFilter compiled;
  if (filter.is_null()) return compiled;
  if (!filter.is_object()) return InvalidFieldError("filter", "filter must be a JSON object");
  if (filter.size() > kMaxFilterKeys) {
    return InvalidFieldError("filter", absl::StrCat("filter: at most ", kMaxFilterKeys, " keys"));
  }
  std::vector<std::string> clauses;
  for (const auto& [key, condition] : filter.items()) {
    if (key.empty() || key.size() > kMaxKeyBytes || key.find('"') != std::string::npos) {
      return FilterError(key, "keys must be 1 to 256 bytes without '\"'");
    }
    if (key[0] == '$') {
      return FilterError(key, absl::StrCat("unknown operator '", key,
                                           "' (supported: equality, $eq and $in on a key)"));
    }
    // The accepted values of this key.
    std::vector<json> values;
    if (IsScalar(condition)) {
      values.push_back(condition);
    } else if (condition.is_object()) {
      if (condition.size() != 1) {
        return FilterError(key, "an operator object holds exactly one of $eq or $in");
      }
      const std::string& op = condition.begin().key();
      const json& operand = condition.begin().value();
      if (op == "$eq") {
        if (!IsScalar(operand)) return FilterError(key, "$eq takes a scalar");
        values.push_back(operand);
      } else if (op == "$in") {
        if (!operand.is_array()) return FilterError(key, "$in takes an array of scalars");
        if (operand.size() > kMaxInValues) {
          return FilterError(key, absl::StrCat("$in takes at most ", kMaxInValues, " values"));
        }
        for (const json& value : operand) {
          if (!IsScalar(value)) return FilterError(key, "$in takes an array of scalars");
          values.push_back(value);
        }
      } else {
        return FilterError(key, absl::StrCat("unknown operator '", op, "' (supported: $eq, $in)"));
      }
    } else if (condition.is_array()) {
      return FilterError(key, "an array is not a condition: use {\"$in\": [...]}");
    } else {
      return FilterError(key, "conditions are scalars or {\"$eq\"|\"$in\": ...}");
    }
    if (values.empty()) {
      clauses.push_back("0");  // $in: [] matches nothing
      continue;
    }
    const std::string path = absl::StrCat("$.\"", key, "\"");
    bool accepts_null = false;
    for (const json& value : values) accepts_null = accepts_null || value.is_null();
    std::string clause = "(";
    if (accepts_null) {
      // json_type is NULL when the path does not exist: a missing key equals null.
      absl::StrAppend(&clause, "json_type(", ToAbsl(column), ", ?) IS NULL OR ");
      compiled.params.emplace_back(path);
    }
    // json_each over a scalar yields that one value, over an array each element.
    absl::StrAppend(&clause, "EXISTS (SELECT 1 FROM json_each(", ToAbsl(column), ", ?) WHERE ");
    compiled.params.emplace_back(path);
    std::vector<std::string> alternatives;
    for (const json& value : values)
      alternatives.push_back(ScalarCondition(value, compiled.params));
    absl::StrAppend(&clause, absl::StrJoin(alternatives, " OR "), "))");
    clauses.push_back(std::move(clause));
  }
  compiled.sql = absl::StrJoin(clauses, " AND ");
  return compiled;
}

int BindSqlValues(storage::Statement& statement, int first_index,
                  const std::vector<SqlValue>& params) {
  int index = first_index;
  for (const SqlValue& value : params) {
    if (const auto* i = std::get_if<int64_t>(&value)) {
      statement.Bind(index, *i);
    } else if (const auto* d = std::get_if<double>(&value)) {
      statement.Bind(index, *d);
    } else {
      statement.Bind(index, std::string_view(std::get<std::string>(value)));
    }
    ++index;
  }
  return index;
}

}  // namespace ailb::rag
