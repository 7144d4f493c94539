// Hashing for secrets that must be compared but not stored (API keys).
#pragma once

#include <string>
#include <string_view>

namespace ailb {

// Lowercase hex SHA-256 of `text`.
std::string Sha256Hex(std::string_view text);

// Equality whose running time does not depend on where the inputs differ (for digests of equal
// length).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace ailb
