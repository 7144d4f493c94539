// Splits documents into overlapping chunks sized in (approximate) tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ailb::rag {

struct Chunk {
  // Exactly document.substr(offset, text.size()): the chunk's bytes, which never begin or end with
  // whitespace (the whitespace around a chunk belongs to no chunk).
  std::string text;
  size_t offset = 0;  // byte offset of the chunk's start in the document
  int tokens = 0;     // EstimateTokens(text)
};

// A tokenizer-free estimate close to OpenAI's cl100k on English: words count as one token per
// 4 characters (at least one), punctuation as one each, CJK characters as one each; whitespace
// counts nothing. Characters are code points, not bytes. Used for chunking and memory budgets.
int EstimateTokens(std::string_view text);

// Chunks of at most `max_tokens` (estimated), in order, covering all non-whitespace text,
// consecutive chunks sharing about `overlap` tokens (at most `overlap`; a chunk starts at a word,
// so the share can be smaller, and none when it would be punctuation only). A chunk ends at the
// strongest break that leaves it at least half full: paragraph (blank line), then sentence end
// (. ! ? and closing quotes or brackets after them, before whitespace), then line break, then
// whitespace; a word longer than max_tokens is cut, at code point boundaries. Never splits a UTF-8
// sequence. Whitespace-only text gives no chunks. Requires max_tokens > 0 and
// 0 <= overlap < max_tokens; other values are clamped into that range. Time is linear in the text
// plus the chunks produced; memory holds one chunk's window of the text at a time.
std::vector<Chunk> ChunkText(std::string_view text, int max_tokens, int overlap);

}  // namespace ailb::rag
