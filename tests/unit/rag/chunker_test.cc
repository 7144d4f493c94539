#include "ailb/rag/chunker.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/common/utf8.h"
#include "gtest/gtest.h"

namespace ailb::rag {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

// The invariants every chunking must satisfy, whatever the text:
//  - a chunk is the exact byte range [offset, offset + size) of the text, starting and ending on
//    non-whitespace, and valid UTF-8 when the text is;
//  - tokens == EstimateTokens(text) <= max_tokens;
//  - chunks advance (offsets and ends strictly increase) and together cover everything that is not
//    whitespace (Unicode spaces and control characters included: whatever counts no token).
void ExpectValidChunking(std::string_view text, const std::vector<Chunk>& chunks, int max_tokens) {
  const bool text_is_utf8 = IsValidUtf8(text);
  size_t covered_to = 0;  // every non-space byte before this is covered
  size_t prev_offset = 0;
  size_t prev_end = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    SCOPED_TRACE(absl::StrCat("chunk ", i, " at ", c.offset));
    ASSERT_FALSE(c.text.empty());
    ASSERT_LE(c.offset + c.text.size(), text.size());
    EXPECT_EQ(text.substr(c.offset, c.text.size()), c.text);
    EXPECT_FALSE(IsSpace(c.text.front()));
    EXPECT_FALSE(IsSpace(c.text.back()));
    EXPECT_EQ(c.tokens, EstimateTokens(c.text));
    EXPECT_LE(c.tokens, max_tokens);
    EXPECT_GT(c.tokens, 0);
    if (text_is_utf8) {
      EXPECT_TRUE(IsValidUtf8(c.text));
    }
    const size_t end = c.offset + c.text.size();
    if (i > 0) {
      EXPECT_GT(c.offset, prev_offset);
      EXPECT_GT(end, prev_end);
    }
    // Nothing but whitespace (anything that counts no token) may be skipped.
    if (c.offset > covered_to) {
      ASSERT_EQ(EstimateTokens(text.substr(covered_to, c.offset - covered_to)), 0)
          << "bytes " << covered_to << ".." << c.offset << " not covered";
    }
    covered_to = std::max(covered_to, end);
    prev_offset = c.offset;
    prev_end = end;
  }
  ASSERT_EQ(EstimateTokens(text.substr(std::min(covered_to, text.size()))), 0)
      << "the text after byte " << covered_to << " is not covered";
}

// Deterministic prose: paragraphs of sentences of words of varied length.
std::string Prose(int paragraphs, int sentences_per_paragraph) {
  static const char* const kWords[] = {
      "the",      "boundary", "layer", "separates",  "near",      "leading", "edge",
      "of",       "a",        "swept", "wing",       "at",        "high",    "incidence",
      "pressure", "gradient", "flow",  "transition", "turbulent", "heat",    "transfer",
      "is",       "measured", "in",    "wind",       "tunnel",    "tests",   "aerodynamic"};
  constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string out;
  size_t w = 0;
  for (int p = 0; p < paragraphs; ++p) {
    if (p > 0) out += "\n\n";
    for (int s = 0; s < sentences_per_paragraph; ++s) {
      if (s > 0) out += ' ';
      const int words = 6 + static_cast<int>((p * 7 + s * 3) % 9);
      for (int i = 0; i < words; ++i) {
        std::string word = kWords[(w++ * 7 + 3) % kCount];
        if (i == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
        out += word;
        if (i + 1 < words) out += (i % 5 == 4) ? ", " : " ";
      }
      out += (s % 4 == 3) ? "?" : ".";
    }
  }
  return out;
}

TEST(EstimateTokensTest, WordsPunctuationAndScripts) {
  EXPECT_EQ(EstimateTokens(""), 0);
  EXPECT_EQ(EstimateTokens(" \n\t "), 0);
  EXPECT_EQ(EstimateTokens("a"), 1);
  EXPECT_EQ(EstimateTokens("word"), 1);
  EXPECT_EQ(EstimateTokens("words"), 2);
  EXPECT_EQ(EstimateTokens("a b c"), 3);
  EXPECT_EQ(EstimateTokens("Hello, world!"), 6);  // 2 + 1 + 2 + 1
  EXPECT_EQ(EstimateTokens("3.14"), 3);           // 1 + 1 + 1
  EXPECT_EQ(EstimateTokens("café"), 1);           // code points, not bytes
  EXPECT_EQ(EstimateTokens("日本語"), 3);         // one per CJK character
  EXPECT_EQ(EstimateTokens("naïve — done"), 4);   // 2 + 1 (dash) + 1
  // Roughly cl100k on English prose: about 1.3 tokens per word.
  const std::string prose = Prose(5, 6);
  const auto words = static_cast<double>(std::count(prose.begin(), prose.end(), ' ') + 1);
  EXPECT_GT(EstimateTokens(prose), words);
  EXPECT_LT(EstimateTokens(prose), words * 2.5);
}

TEST(ChunkTextTest, EmptyAndWhitespaceGiveNoChunks) {
  EXPECT_TRUE(ChunkText("", 100, 10).empty());
  EXPECT_TRUE(ChunkText("   \n\n\t  \r\n ", 100, 10).empty());
  EXPECT_TRUE(ChunkText("\xC2\xA0\xE2\x80\x83", 100, 10).empty());  // NBSP, em space
}

TEST(ChunkTextTest, ShortTextIsOneTrimmedChunk) {
  const std::string text = "  \n Hello there, wing designers.\n\n ";
  const std::vector<Chunk> chunks = ChunkText(text, 100, 10);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].text, "Hello there, wing designers.");
  EXPECT_EQ(chunks[0].offset, 4u);
  EXPECT_EQ(chunks[0].tokens, EstimateTokens("Hello there, wing designers."));
  ExpectValidChunking(text, chunks, 100);
}

TEST(ChunkTextTest, LongTextRespectsLimitsCoversAndOverlaps) {
  const std::string text = Prose(40, 6);
  for (const auto& [max_tokens, overlap] :
       std::vector<std::pair<int, int>>{{256, 32}, {64, 16}, {50, 10}, {20, 5}, {8, 3}}) {
    SCOPED_TRACE(absl::StrCat("max ", max_tokens, " overlap ", overlap));
    const std::vector<Chunk> chunks = ChunkText(text, max_tokens, overlap);
    ASSERT_GT(chunks.size(), 2u);
    ExpectValidChunking(text, chunks, max_tokens);
    int shared_total = 0;
    size_t overlapping = 0;
    for (size_t i = 1; i < chunks.size(); ++i) {
      const size_t prev_end = chunks[i - 1].offset + chunks[i - 1].text.size();
      // A chunk starts inside the previous one, at a word boundary, about `overlap` tokens before
      // its end. (It may start right after it when the tokens that would be shared are only
      // punctuation, or when the unit after the previous chunk would not fit otherwise.)
      EXPECT_TRUE(IsSpace(text[chunks[i].offset - 1])) << "chunk " << i;
      if (chunks[i].offset >= prev_end) continue;
      ++overlapping;
      const int shared = EstimateTokens(
          std::string_view(text).substr(chunks[i].offset, prev_end - chunks[i].offset));
      EXPECT_LE(shared, overlap) << "chunk " << i;
      shared_total += shared;
    }
    // With room for several words in the overlap, every boundary overlaps.
    if (overlap >= 10) {
      EXPECT_EQ(overlapping, chunks.size() - 1);
    } else {
      EXPECT_GE(overlapping * 10, (chunks.size() - 1) * 8);
    }
    // On average the overlap is close to what was asked (it stops at word starts).
    EXPECT_GE(shared_total, static_cast<int>(overlapping) * overlap / 3);
    // Chunks are reasonably full: no more than twice the minimum count.
    const int total = EstimateTokens(text);
    EXPECT_LE(static_cast<int>(chunks.size()), 2 * total / (max_tokens - overlap) + 2);
  }
}

TEST(ChunkTextTest, ZeroOverlapPartitionsTheText) {
  const std::string text = Prose(10, 5);
  const std::vector<Chunk> chunks = ChunkText(text, 40, 0);
  ASSERT_GT(chunks.size(), 3u);
  ExpectValidChunking(text, chunks, 40);
  for (size_t i = 1; i < chunks.size(); ++i) {
    EXPECT_GE(chunks[i].offset, chunks[i - 1].offset + chunks[i - 1].text.size());
  }
}

TEST(ChunkTextTest, PrefersParagraphThenSentenceBreaks) {
  // Two paragraphs of ~30 tokens: with room for 50, the first chunk is exactly the first paragraph
  // rather than running into the second.
  const std::string p1 =
      "Wind tunnel tests of a swept wing were made at high incidence. The boundary layer "
      "separated near the leading edge.";
  const std::string p2 =
      "Heat transfer rates were measured on a blunt body. They agree with theory within "
      "ten percent.";
  ASSERT_LT(EstimateTokens(p1), 50);
  ASSERT_GT(EstimateTokens(p1 + "\n\n" + p2), 50);
  const std::string text = p1 + "\n\n" + p2;
  std::vector<Chunk> chunks = ChunkText(text, 50, 0);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].text, p1);
  EXPECT_EQ(chunks[1].text, p2);

  // Without paragraphs, chunks end at sentence ends.
  std::string sentences;
  for (int i = 0; i < 12; ++i) {
    absl::StrAppend(&sentences, i > 0 ? " " : "", "Sentence number ", i,
                    " talks about the flow over a wing (briefly)!");
  }
  chunks = ChunkText(sentences, 40, 0);
  ASSERT_GT(chunks.size(), 2u);
  ExpectValidChunking(sentences, chunks, 40);
  for (const Chunk& c : chunks) EXPECT_EQ(c.text.back(), '!') << c.text;

  // A closing quote stays with its sentence.
  const std::string quoted =
      "He said \"the wing stalls early.\" Then the tests went on and on "
      "and on and on and on and on and on and on.";
  chunks = ChunkText(quoted, 16, 0);
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].text, "He said \"the wing stalls early.\"");
}

TEST(ChunkTextTest, LineBreaksBeatSpaces) {
  std::string text;
  for (int i = 0; i < 30; ++i) absl::StrAppend(&text, "item number ", i, " of the list\n");
  const std::vector<Chunk> chunks = ChunkText(text, 30, 0);
  ExpectValidChunking(text, chunks, 30);
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.text.substr(0, 4), "item") << c.text;
    EXPECT_EQ(c.text.substr(c.text.size() - 4), "list") << c.text;
  }
}

TEST(ChunkTextTest, MultiByteTextIsNeverSplitInsideACharacter) {
  std::string text;
  for (int i = 0; i < 200; ++i) {
    absl::StrAppend(&text, "Naïve café façade ", i, " — Ünïcödé “quotes” 日本語の文章です。",
                    "Ελληνικά κείμενα, русский текст! 😀🚀 ");
  }
  for (int max_tokens : {1, 2, 3, 7, 16, 64}) {
    SCOPED_TRACE(absl::StrCat("max ", max_tokens));
    const std::vector<Chunk> chunks = ChunkText(text, max_tokens, max_tokens / 4);
    ASSERT_FALSE(chunks.empty());
    ExpectValidChunking(text, chunks, max_tokens);
  }
}

TEST(ChunkTextTest, CjkTextWithoutSpacesBreaksAtSentenceEnds) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "日本語の文章です。";  // 9 characters each
  const std::vector<Chunk> chunks = ChunkText(text, 20, 0);
  ExpectValidChunking(text, chunks, 20);
  ASSERT_GT(chunks.size(), 1u);
  for (const Chunk& c : chunks) EXPECT_EQ(c.text.substr(c.text.size() - 3), "。");
}

TEST(ChunkTextTest, OverlongWordIsHardSplit) {
  const std::string word(100'000, 'x');
  const auto started = std::chrono::steady_clock::now();
  std::vector<Chunk> chunks = ChunkText(word, 256, 32);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  ExpectValidChunking(word, chunks, 256);
  EXPECT_GE(chunks.size(), 100'000u / (256 * 4));

  // Multi-byte: pieces end on character boundaries.
  std::string accents;
  for (int i = 0; i < 20'000; ++i) accents += "é";
  const std::string text = "before " + accents + " after";
  chunks = ChunkText(text, 100, 10);
  ExpectValidChunking(text, chunks, 100);
  EXPECT_EQ(chunks.front().text.substr(0, 6), "before");
  EXPECT_EQ(chunks.back().text.substr(chunks.back().text.size() - 5), "after");
}

TEST(ChunkTextTest, PathologicalInputsTerminateQuickly) {
  std::string punctuation;
  punctuation.reserve(1 << 20);
  while (punctuation.size() < (1 << 20)) punctuation += "!?.,;:-()";
  auto started = std::chrono::steady_clock::now();
  std::vector<Chunk> chunks = ChunkText(punctuation, 256, 32);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  ExpectValidChunking(punctuation, chunks, 256);

  // Whitespace-separated single characters, invalid UTF-8 and NULs.
  std::string mixed;
  for (int i = 0; i < 100'000; ++i) {
    mixed += static_cast<char>(i % 7 == 0 ? '\xFF' : (i % 11 == 0 ? '\0' : 'a' + i % 26));
    mixed += (i % 3 == 0) ? "\n" : " ";
  }
  started = std::chrono::steady_clock::now();
  chunks = ChunkText(mixed, 32, 8);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  ExpectValidChunking(mixed, chunks, 32);
}

TEST(ChunkTextTest, OutOfContractArgumentsAreClamped) {
  const std::string text = Prose(3, 4);
  std::vector<Chunk> chunks = ChunkText(text, 0, 0);  // treated as max_tokens 1
  ExpectValidChunking(text, chunks, 1);
  chunks = ChunkText(text, 10, 50);  // overlap clamped below max_tokens
  ExpectValidChunking(text, chunks, 10);
  chunks = ChunkText(text, 10, -5);  // treated as no overlap
  ExpectValidChunking(text, chunks, 10);
}

TEST(ChunkTextTest, RandomTextsKeepTheInvariants) {
  // Texts assembled from pieces that exercise every unit kind and break: words of all lengths,
  // punctuation, sentence ends, closers, blank lines, multi-byte and CJK characters, invalid bytes.
  static const char* const kPieces[] = {"a",
                                        "wing",
                                        "aerodynamically",
                                        "x1234567890abcdefghij",
                                        ".",
                                        ",",
                                        "!",
                                        "?",
                                        "\"",
                                        ")",
                                        " ",
                                        " ",
                                        " ",
                                        "\n",
                                        "\n\n",
                                        "\t",
                                        "é",
                                        "naïve",
                                        "日本",
                                        "。",
                                        "“",
                                        "”",
                                        "—",
                                        "😀",
                                        "\xFF",
                                        "\xE2\x80",
                                        "3.14",
                                        "e.g.",
                                        "...",
                                        "\r\n",
                                        "\xC2\xA0"};
  constexpr size_t kCount = sizeof(kPieces) / sizeof(kPieces[0]);
  std::mt19937 rng(12345);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const size_t pieces = rng() % 400;
    for (size_t i = 0; i < pieces; ++i) text += kPieces[rng() % kCount];
    const int max_tokens = 1 + static_cast<int>(rng() % 40);
    const int overlap = static_cast<int>(rng() % static_cast<unsigned>(max_tokens));
    SCOPED_TRACE(absl::StrCat("round ", round, " max ", max_tokens, " overlap ", overlap));
    ExpectValidChunking(text, ChunkText(text, max_tokens, overlap), max_tokens);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(ChunkTextTest, Deterministic) {
  const std::string text = Prose(12, 5);
  const std::vector<Chunk> a = ChunkText(text, 30, 6);
  const std::vector<Chunk> b = ChunkText(text, 30, 6);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].offset, b[i].offset);
    EXPECT_EQ(a[i].text, b[i].text);
  }
}

}  // namespace
}  // namespace ailb::rag
