#include "rag/fts_query.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_join.h"

namespace ailb::rag {
namespace {

bool IsTokenByte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

bool IsStopword(std::string_view token) {
  static const auto* const kStopwords = new absl::flat_hash_set<std::string_view>{
      "a",      "about", "an",   "and",   "are",   "as",   "at",    "be",    "been",  "but",
      "by",     "can",   "do",   "does",  "for",   "from", "had",   "has",   "have",  "how",
      "i",      "if",    "in",   "into",  "is",    "it",   "its",   "of",    "on",    "or",
      "so",     "such",  "that", "the",   "their", "then", "there", "these", "they",  "this",
      "to",     "was",   "we",   "were",  "what",  "when", "where", "which", "while", "who",
      "why",    "will",  "with", "would", "you",   "your", "any",   "must",  "being", "shall",
      "should", "could", "may",  "did",   "than",  "them", "those", "our",   "not",   "no"};
  return kStopwords->contains(std::string_view(token.data(), token.size()));
}

}  // namespace

std::string BuildFtsMatchQuery(std::string_view text, size_t max_tokens) {
  std::vector<std::string> tokens;
  std::vector<std::string> stopwords;
  absl::flat_hash_set<std::string> seen;
  size_t i = 0;
  while (i < text.size() && tokens.size() < max_tokens) {
    while (i < text.size() && !IsTokenByte(static_cast<unsigned char>(text[i]))) ++i;
    const size_t start = i;
    while (i < text.size() && IsTokenByte(static_cast<unsigned char>(text[i]))) ++i;
    if (start == i) break;
    std::string token(text.substr(start, i - start));
    for (char& c : token) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (!seen.insert(token).second) continue;
    if (IsStopword(token)) {
      if (stopwords.size() < max_tokens) stopwords.push_back(std::move(token));
    } else {
      tokens.push_back(std::move(token));
    }
  }
  if (tokens.empty()) tokens = std::move(stopwords);
  if (tokens.empty()) return "";
  // Tokens hold no '"' (it is not a token byte), so wrapping them in quotes needs no escaping.
  return absl::StrJoin(tokens, " OR ", [](std::string* out, const std::string& token) {
    out->append("\"").append(token).append("\"");
  });
}

}  // namespace ailb::rag
