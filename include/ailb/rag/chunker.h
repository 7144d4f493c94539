// Splits documents into overlapping chunks sized in (approximate) tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ailb::rag {

struct Chunk {
  std::string text;
  size_t offset = 0;  // byte offset of the chunk's start in the document
  int tokens = 0;     // EstimateTokens(text)
};

// A tokenizer-free estimate close to OpenAI's cl100k on English: words count as one token per
// 4 characters (at least one), punctuation as one each. Used for chunking and memory budgets.
int EstimateTokens(std::string_view text);

// Chunks of at most `max_tokens` (estimated), consecutive chunks sharing about `overlap` tokens.
// Breaks prefer paragraph, then sentence, then word boundaries; never splits a UTF-8 sequence.
// Whitespace-only text gives no chunks. Requires max_tokens > 0 and 0 <= overlap < max_tokens.
std::vector<Chunk> ChunkText(std::string_view text, int max_tokens, int overlap);

}  // namespace ailb::rag
