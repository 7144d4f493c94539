// Document metadata rules and the query-time metadata filter, compiled to SQL so that SQLite
// (json_each over the stored metadata JSON) computes the allowed document set before ranking.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ailb::storage {
class Statement;
}

namespace ailb::rag {

// OK when `metadata` is null or an object whose values are strings, finite numbers, booleans,
// null or arrays of those. Otherwise InvalidArgument naming the key ("metadata.<key>: ...").
absl::Status ValidateMetadata(const nlohmann::json& metadata);

using SqlValue = std::variant<int64_t, double, std::string>;

struct CompiledFilter {
  // A boolean SQL expression over the metadata column, with '?' placeholders; empty when the
  // filter has no conditions (everything is allowed).
  std::string sql;
  std::vector<SqlValue> params;  // for the placeholders, in order
};

// Compiles a QueryRequest filter: {"key": scalar} or {"key": {"$eq": scalar}} (equality) and
// {"key": {"$in": [scalars]}} (membership), all of which must hold. Where the stored value is an
// array, a condition holds when any element satisfies it (as in MongoDB, so tags can be arrays).
// A null value also matches documents without the key. `column` names the metadata column.
// InvalidArgument ("filter.<key>: ...") for other shapes, unknown operators, top-level operators
// ($and, $or, ...) and keys holding '"' (not addressable by a SQLite JSON path).
absl::StatusOr<CompiledFilter> CompileMetadataFilter(const nlohmann::json& filter,
                                                     std::string_view column);

// Binds `params` from placeholder `first_index` on; returns the next free index.
int BindSqlValues(storage::Statement& statement, int first_index,
                  const std::vector<SqlValue>& params);

}  // namespace ailb::rag
