// Turns free text typed by a user into an FTS5 MATCH expression that can never be a syntax error.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ailb::rag {

// An OR of double-quoted tokens ("wing" OR "slipstream"): quoting every token means nothing the
// user types (quotes, *, ^, :, parentheses, NEAR/AND/OR/NOT, column filters) is read as FTS5
// syntax. Tokens are runs of ASCII letters and digits plus any non-ASCII bytes, so UTF-8
// sequences stay whole and the table's unicode61 tokenizer splits them as it does at indexing.
// Common English stopwords are dropped unless nothing else is left (they match most rows and
// add cost without helping the ranking). Tokens are lower-cased, de-duplicated and capped at
// `max_tokens`. Returns "" when the text has no token at all: the caller answers with no hits.
std::string BuildFtsMatchQuery(std::string_view text, size_t max_tokens = 64);

}  // namespace ailb::rag
