// Chunking in one pass over "units": words (runs of letters, digits and other word characters),
// single punctuation marks and single CJK characters, each with its estimated token count and the
// strength of the break after it (what separates it from the next unit). A chunk is a run of whole
// units, so EstimateTokens(chunk) never exceeds the sum of its units' counts (ceil is
// subadditive), and the chunk never starts or ends inside a UTF-8 sequence or on whitespace.
#include "ailb/rag/chunker.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "ailb/common/utf8.h"

namespace ailb::rag {
namespace {

enum class Kind : uint8_t { kSpace, kNewline, kParagraph, kWord, kPunct, kCjk };

struct CodePoint {
  size_t length = 1;
  Kind kind = Kind::kWord;
  uint32_t value = 0;
};

bool IsPunctCodePoint(uint32_t cp) {
  return (cp >= 0xA1 && cp <= 0xBF && cp != 0xAA && cp != 0xB5 && cp != 0xBA) || cp == 0xD7 ||
         cp == 0xF7 || (cp >= 0x2010 && cp <= 0x2027) || (cp >= 0x2030 && cp <= 0x205E) ||
         (cp >= 0x2190 && cp <= 0x2BFF) || (cp >= 0x3001 && cp <= 0x303F) ||
         (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF01 && cp <= 0xFF0F) ||
         (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) ||
         (cp >= 0xFF5B && cp <= 0xFF65);
}

// Scripts written without spaces, where cl100k spends about one token per character.
bool IsCjkCodePoint(uint32_t cp) {
  return (cp >= 0x2E80 && cp <= 0x2FFF) || (cp >= 0x3040 && cp <= 0x31FF) ||
         (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) ||
         (cp >= 0xAC00 && cp <= 0xD7AF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x20000 && cp <= 0x2FFFF);
}

// The code point at text[i]. Ill-formed sequences (truncated, overlong, surrogates) count as
// one-byte word characters, so every byte belongs to exactly one code point and offsets stay exact.
CodePoint Decode(std::string_view text, size_t i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  CodePoint c;
  if (b0 < 0x80) {
    c.value = b0;
    if (b0 == '\n') {
      c.kind = Kind::kNewline;
    } else if (b0 == ' ' || b0 == '\t' || b0 == '\r' || b0 == '\f' || b0 == '\v') {
      c.kind = Kind::kSpace;
    } else if ((b0 >= '0' && b0 <= '9') || (b0 >= 'a' && b0 <= 'z') || (b0 >= 'A' && b0 <= 'Z')) {
      c.kind = Kind::kWord;
    } else if (b0 < 0x20 || b0 == 0x7F) {
      c.kind = Kind::kSpace;  // other control characters separate words and cost nothing
    } else {
      c.kind = Kind::kPunct;
    }
    return c;
  }
  const Utf8Char decoded = DecodeUtf8(text, i);
  if (decoded.length == 0) return c;  // not well-formed: a one-byte word character
  const uint32_t cp = decoded.code_point;
  c.length = decoded.length;
  c.value = cp;
  if (cp == 0x2029) {
    c.kind = Kind::kParagraph;
  } else if (cp == 0x2028 || cp == 0x85) {
    c.kind = Kind::kNewline;
  } else if (cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200B) || cp == 0x202F ||
             cp == 0x205F || cp == 0x3000 || cp == 0xFEFF) {
    c.kind = Kind::kSpace;
  } else if (IsCjkCodePoint(cp)) {
    c.kind = Kind::kCjk;
  } else if (IsPunctCodePoint(cp) || (cp >= 0x80 && cp < 0xA0)) {
    c.kind = (cp >= 0x80 && cp < 0xA0) ? Kind::kSpace : Kind::kPunct;  // C1 controls: like C0
  } else {
    c.kind = Kind::kWord;
  }
  return c;
}

bool IsWhitespace(Kind k) {
  return k == Kind::kSpace || k == Kind::kNewline || k == Kind::kParagraph;
}

int WordTokens(size_t code_points) { return static_cast<int>((code_points + 3) / 4); }

// Break strength after a unit, weakest first.
enum Break : uint8_t {
  kForced = 0,     // between pieces of one overlong word
  kAdjacent = 1,   // between units with nothing in between ("3.14", "a,b", CJK characters)
  kSpace = 2,      // whitespace on one line
  kLine = 3,       // a line break
  kSentence = 4,   // after . ! ? (and closing quotes or brackets right after them), then space
  kParagraph = 5,  // a blank line
};

struct Unit {
  size_t begin = 0;
  size_t end = 0;
  int tokens = 0;
  int64_t before = 0;                // tokens of all earlier units
  uint8_t break_after = kParagraph;  // the last unit ends the text
  bool ends_sentence = false;
  bool punct = false;
};

bool IsTerminal(uint32_t cp) {
  return cp == '.' || cp == '!' || cp == '?' || cp == 0x2026 || cp == 0x3002 || cp == 0xFF01 ||
         cp == 0xFF1F || cp == 0xFF0E;
}

// Terminals that end a sentence without a following space (CJK text has none).
bool IsWideTerminal(uint32_t cp) { return cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F; }

bool IsCloser(uint32_t cp) {
  return cp == '"' || cp == '\'' || cp == ')' || cp == ']' || cp == 0x2019 || cp == 0x201D ||
         cp == 0xBB || cp == 0x300D || cp == 0x300F || cp == 0xFF09;
}

// Reads `text` as a sequence of units, one at a time, so chunking holds only a window of them (a
// megabyte of punctuation is a million units). Words longer than `max_tokens` are cut into pieces
// of exactly max_tokens tokens (4 * max_tokens code points) joined by kForced breaks.
class UnitReader {
 public:
  UnitReader(std::string_view text, int max_tokens)
      : text_(text), piece_code_points_(static_cast<size_t>(max_tokens) * 4) {}

  // Appends the next unit to `units`, first setting the break after the previous one (units.back(),
  // if any); false at the end of the text.
  bool ReadInto(std::deque<Unit>& units) {
    while (pos_ < text_.size()) {
      const CodePoint c = Decode(text_, pos_);
      if (!IsWhitespace(c.kind)) break;
      gap_ = true;
      if (c.kind == Kind::kNewline) ++gap_newlines_;
      if (c.kind == Kind::kParagraph) gap_paragraph_ = true;
      pos_ += c.length;
    }
    if (pos_ >= text_.size()) return false;
    const CodePoint c = Decode(text_, pos_);
    if (c.kind == Kind::kPunct || c.kind == Kind::kCjk) {
      const bool closer = c.kind == Kind::kPunct && !gap_ && !units.empty() &&
                          units.back().ends_sentence && IsCloser(c.value);
      Add(units, pos_, pos_ + c.length, 1, /*split_word=*/false, closer);
      Unit& u = units.back();
      u.punct = c.kind == Kind::kPunct;
      u.ends_sentence = u.punct && (IsTerminal(c.value) || closer);
      wide_sentence_end_ = u.punct && (IsWideTerminal(c.value) || (closer && wide_sentence_end_));
      pos_ += c.length;
      return true;
    }
    // A word, or the next piece of an overlong one.
    const size_t begin = pos_;
    size_t code_points = 0;
    while (pos_ < text_.size() && code_points < piece_code_points_) {
      const CodePoint w = Decode(text_, pos_);
      if (w.kind != Kind::kWord) break;
      pos_ += w.length;
      ++code_points;
    }
    Add(units, begin, pos_, WordTokens(code_points), /*split_word=*/in_word_, false);
    in_word_ = code_points == piece_code_points_ && pos_ < text_.size() &&
               Decode(text_, pos_).kind == Kind::kWord;
    wide_sentence_end_ = false;
    return true;
  }

 private:
  // `closer`: the new unit is a closing quote or bracket glued to the previous unit, so it belongs
  // to that unit's sentence.
  void Add(std::deque<Unit>& units, size_t begin, size_t end, int tokens, bool split_word,
           bool closer) {
    int64_t before = 0;
    if (!units.empty()) {
      Unit& prev = units.back();
      uint8_t b;
      if (!gap_) {
        b = split_word ? kForced : (wide_sentence_end_ && !closer ? kSentence : kAdjacent);
      } else if (gap_paragraph_ || gap_newlines_ >= 2) {
        b = kParagraph;
      } else if (prev.ends_sentence) {
        b = kSentence;
      } else if (gap_newlines_ == 1) {
        b = kLine;
      } else {
        b = kSpace;
      }
      prev.break_after = b;
      before = prev.before + prev.tokens;
    }
    Unit u;
    u.begin = begin;
    u.end = end;
    u.tokens = tokens;
    u.before = before;
    units.push_back(u);
    gap_ = false;
    gap_newlines_ = 0;
    gap_paragraph_ = false;
  }

  const std::string_view text_;
  const size_t piece_code_points_;
  size_t pos_ = 0;
  // Whitespace seen since the last unit: whether there was any, and the line breaks in it.
  bool gap_ = false;
  int gap_newlines_ = 0;
  bool gap_paragraph_ = false;
  // The last unit ends a CJK sentence, which needs no following space.
  bool wide_sentence_end_ = false;
  // The last unit was a piece of a word that goes on.
  bool in_word_ = false;
};

}  // namespace

int EstimateTokens(std::string_view text) {
  int64_t tokens = 0;
  size_t word_code_points = 0;
  size_t i = 0;
  while (i < text.size()) {
    const CodePoint c = Decode(text, i);
    i += c.length;
    if (c.kind == Kind::kWord) {
      ++word_code_points;
      continue;
    }
    tokens += WordTokens(word_code_points);
    word_code_points = 0;
    if (c.kind == Kind::kPunct || c.kind == Kind::kCjk) ++tokens;
  }
  tokens += WordTokens(word_code_points);
  return static_cast<int>(std::min<int64_t>(tokens, INT32_MAX));
}

std::vector<Chunk> ChunkText(std::string_view text, int max_tokens, int overlap) {
  // Out-of-contract arguments are clamped rather than rejected: there is no error channel, and a
  // usable chunking beats none.
  max_tokens = std::max(max_tokens, 1);
  overlap = std::clamp(overlap, 0, max_tokens - 1);

  std::vector<Chunk> chunks;
  UnitReader reader(text, max_tokens);
  // The window of units still needed; units[0] has absolute index `base`.
  std::deque<Unit> units;
  size_t base = 0;
  // Whether unit i exists, reading up to it. A unit's break_after is final once the next unit has
  // been read (or the text has ended), so callers ask for i + 1 before using unit i's.
  const auto has = [&](size_t i) {
    while (base + units.size() <= i) {
      if (!reader.ReadInto(units)) return false;
    }
    return true;
  };
  const auto at = [&](size_t i) -> const Unit& { return units[i - base]; };
  // Tokens of units [0, i) for a unit i - 1 in the window.
  const auto cum = [&](size_t i) { return at(i - 1).before + at(i - 1).tokens; };
  const auto emit = [&](size_t first, size_t last) {
    Chunk chunk;
    chunk.offset = at(first).begin;
    chunk.text = std::string(text.substr(chunk.offset, at(last).end - chunk.offset));
    chunk.tokens = EstimateTokens(chunk.text);
    chunks.push_back(std::move(chunk));
  };

  if (!has(0)) return chunks;
  size_t start = 0;
  size_t prev_end = 0;
  bool have_prev = false;
  for (;;) {
    const int64_t start_before = at(start).before;
    // The farthest last unit that fits; every unit fits alone (units hold at most max_tokens).
    size_t limit = start;
    while (has(limit + 1) && cum(limit + 2) - start_before <= max_tokens) ++limit;
    if (!has(limit + 1)) {
      emit(start, limit);
      break;
    }
    // Choose where to end: the strongest break among those leaving the chunk at least half full
    // (the latest of equals), unless that is weaker than a word boundary and an earlier word
    // boundary exists (a short chunk beats a split word). Never end at or before the previous
    // chunk's end, so every chunk adds text.
    const size_t lowest = have_prev ? std::max(start, prev_end + 1) : start;
    const int64_t half = start_before + max_tokens / 2;
    int best_full = -1;
    size_t best_full_at = lowest;
    int best_short = -1;
    size_t best_short_at = lowest;
    for (size_t j = limit + 1; j-- > lowest;) {
      const int level = at(j).break_after;
      if (cum(j + 1) >= half) {
        if (level > best_full) {
          best_full = level;
          best_full_at = j;
        }
      } else if (level > best_short) {
        best_short = level;
        best_short_at = j;
      }
    }
    const size_t end = (best_full >= kSpace || (best_full >= 0 && best_short < kSpace))
                           ? best_full_at
                           : best_short_at;
    emit(start, end);
    have_prev = true;
    prev_end = end;

    // The next chunk starts about `overlap` tokens before this one's end, late enough that it can
    // still take the unit after this chunk (so it makes progress).
    size_t next = end + 1;
    if (overlap > 0) {
      const int64_t end_cum = cum(end + 1);
      const int64_t after_cum = cum(end + 2);  // unit end + 1 exists: end <= limit
      size_t k = end + 1;
      while (k > start + 1 && end_cum - cum(k - 1) <= overlap) --k;
      while (k <= end && after_cum - at(k).before > max_tokens) ++k;
      // Prefer a word start (after whitespace); else, for text without spaces (CJK, "a,b"), a
      // word or character right after another unit. Never start on punctuation: no overlap is
      // better than a chunk opening with ", ".
      for (size_t m = k; m <= end && next > end; ++m) {
        if (at(m - 1).break_after >= kSpace) next = m;
      }
      for (size_t m = k; m <= end && next > end; ++m) {
        if (at(m - 1).break_after >= kAdjacent && !at(m).punct) next = m;
      }
    }
    start = next;
    while (base < start) {
      units.pop_front();
      ++base;
    }
  }
  return chunks;
}

}  // namespace ailb::rag
