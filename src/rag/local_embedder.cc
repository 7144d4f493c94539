// The built-in embedder: signed feature hashing of words and character n-grams.
//
// Why this shape: it needs no model download, is deterministic across machines, and adds what
// BM25 lacks (morphological variants and compounds meet through shared n-grams), which is what
// hybrid retrieval wants from its vector side.
//
// Features of one text:
//   - each word (lower-cased, stopwords dropped, lightly stemmed), weight kWordWeight;
//   - the character 3-, 4- and 5-grams of "<word>" (the unstemmed word with boundary marks, so
//     prefixes and suffixes differ from word-internal grams), weight kGramWeight each.
// A feature's value is weight * (1 + ln tf). It is added to a bucket chosen by some bits of its
// 64-bit hash, with a sign from another bit, so collisions cancel in expectation instead of piling
// up. The sum is L2-normalised, making cosine similarity an inner product.
//
// Parameters were chosen on the Cranfield collection (1,400 abstracts, 150 queries, nDCG@10 at
// 384 dimensions, averaged over six hash seeds because one seed's collision pattern moves a score
// by up to +-0.01): word features split over two buckets (+0.01 over one), n-gram weight 0.2
// (0.1 to 0.4 within noise), the light stemmer below (+0.012 over none; a full Porter stemmer did
// worse by 0.004). Word bigrams, weights by word length, boundary-heavy n-grams, truncation
// features and a 570-word stopword list did not help measurably. At 384 dimensions hash
// collisions, not the features, are the limit: the same features reach ~0.33 with no collisions.
// Changing anything here changes the vectors of stored collections (see the golden test).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/utf8.h"
#include "ailb/rag/embedder.h"

namespace ailb::rag {
namespace {

constexpr int kMinDimensions = 16;
constexpr int kMaxDimensions = 8192;

// Words carry the topic, n-grams a softer morphological match. A word of 6 letters has 15 n-grams,
// so at 0.2 each their total L2 weight (0.2 * sqrt(15) ~ 0.8) is comparable to the word's.
constexpr float kWordWeight = 1.0f;
constexpr float kGramWeight = 0.2f;
constexpr int kMinGram = 3;
constexpr int kMaxGram = 5;

// Seeds keep the feature families apart: the word "ab" and the n-gram "ab" are different features.
constexpr uint64_t kWordSeed = 0x243F6A8885A308D3ULL;
constexpr uint64_t kGramSeed = 0x13198A2E03707344ULL;

constexpr uint64_t kFnvPrime = 1099511628211ULL;

// Murmur3's 64-bit finaliser: FNV-1a alone leaves the high bits (used for the bucket) weakly mixed
// for short inputs.
inline uint64_t Mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

inline uint64_t Fnv1a(uint64_t seed, std::string_view bytes) {
  uint64_t h = seed;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

// ~150 common English function words (the NLTK list plus frequent adverbs and modals). They carry
// no topic and, without IDF, would otherwise dominate every vector.
constexpr std::string_view kStopwords[] = {
    "a",        "about",   "above",    "after",      "again",   "against", "all",     "also",
    "although", "am",      "among",    "an",         "and",     "another", "any",     "are",
    "as",       "at",      "be",       "because",    "been",    "before",  "being",   "below",
    "between",  "both",    "but",      "by",         "can",     "cannot",  "could",   "did",
    "do",       "does",    "doing",    "done",       "down",    "during",  "each",    "either",
    "else",     "etc",     "ever",     "every",      "few",     "for",     "from",    "further",
    "had",      "has",     "have",     "having",     "he",      "hence",   "her",     "here",
    "hers",     "herself", "him",      "himself",    "his",     "how",     "however", "i",
    "if",       "in",      "into",     "is",         "it",      "its",     "itself",  "just",
    "let",      "may",     "me",       "might",      "more",    "most",    "much",    "must",
    "my",       "myself",  "neither",  "no",         "nor",     "not",     "now",     "of",
    "off",      "often",   "on",       "once",       "only",    "or",      "other",   "others",
    "ought",    "our",     "ours",     "ourselves",  "out",     "over",    "own",     "per",
    "rather",   "same",    "shall",    "she",        "should",  "since",   "so",      "some",
    "such",     "than",    "that",     "the",        "their",   "theirs",  "them",    "themselves",
    "then",     "there",   "thereby",  "therefore",  "these",   "they",    "this",    "those",
    "though",   "through", "thus",     "to",         "too",     "under",   "until",   "up",
    "upon",     "us",      "very",     "via",        "was",     "we",      "were",    "what",
    "when",     "where",   "whether",  "which",      "while",   "who",     "whom",    "whose",
    "why",      "will",    "with",     "within",     "without", "would",   "yet",     "you",
    "your",     "yours",   "yourself", "yourselves",
};

// Open-addressing set of the stopwords, keyed by the word hash the tokenizer computes anyway, so a
// lookup costs one probe and (on a hit) one comparison.
class StopwordSet {
 public:
  StopwordSet() {
    for (std::string_view w : kStopwords) {
      const uint64_t h = Mix64(Fnv1a(kWordSeed, w));
      size_t i = h & kMask;
      while (!slots_[i].empty()) i = (i + 1) & kMask;
      slots_[i] = w;
      hashes_[i] = h;
    }
  }

  bool Contains(std::string_view word, uint64_t mixed_hash) const {
    if (word.size() > 10) return false;  // longer than any stopword
    for (size_t i = mixed_hash & kMask; !slots_[i].empty(); i = (i + 1) & kMask) {
      if (hashes_[i] == mixed_hash && slots_[i] == word) return true;
    }
    return false;
  }

 private:
  static constexpr size_t kSlots = 512;  // a power of two, well over twice the list
  static constexpr size_t kMask = kSlots - 1;
  std::array<std::string_view, kSlots> slots_{};
  std::array<uint64_t, kSlots> hashes_{};
};

const StopwordSet& Stopwords() {
  static const StopwordSet* const set = new StopwordSet();
  return *set;
}

bool IsVowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

// A light, deterministic suffix stemmer: folds plurals and the commonest verb inflections so that
// "flows", "flowing" and "flowed" share the word feature (their n-grams already overlap). Only
// ASCII-letter suffixes are touched, and a stem keeps at least three characters and a vowel.
std::string_view Stem(std::string_view w) {
  const auto ends = [&](std::string_view s) { return w.size() > s.size() && w.ends_with(s); };
  const auto has_vowel = [](std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) { return IsVowel(c) || c == 'y'; });
  };
  if (w.size() <= 3) return w;
  if (ends("ies") && w.size() > 4) {
    // "bodies" -> "bod", meeting "body" -> "bod" below.
    return w.substr(0, w.size() - 3);
  }
  if (ends("sses")) return w.substr(0, w.size() - 2);
  if (ends("ss") || ends("us") || ends("is")) return w;
  std::string_view stem = w;
  if (ends("s")) {
    stem = w.substr(0, w.size() - 1);
  } else if (ends("ing")) {
    stem = w.substr(0, w.size() - 3);
  } else if (ends("ed") && !ends("eed")) {  // not "speed" -> "spe"
    stem = w.substr(0, w.size() - 2);
  }
  if (stem.size() >= 3 && has_vowel(stem)) w = stem;
  // Shared tail handling so "heated"/"heating"/"heats" and "heat" meet, and "speeds"/"speed".
  if (w.size() > 3 && w.back() == 'e') w.remove_suffix(1);
  if (w.size() > 3 && w.back() == 'y') w.remove_suffix(1);
  const char last = w.back();
  if (w.size() > 3 && last >= 'a' && last <= 'z' && last == w[w.size() - 2] && !IsVowel(last) &&
      last != 'l' && last != 's' && last != 'z') {
    w.remove_suffix(1);  // "stopped" -> "stopp" -> "stop"
  }
  return w;
}

// Byte classes for the tokenizer. ASCII letters and digits form words; other ASCII is a separator.
// Bytes >= 0x80 are handled by DecodeNonAscii.
constexpr bool IsAsciiAlnum(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Length of the UTF-8 sequence starting at text[i] (>= 0x80) and whether it is part of a word.
// Punctuation and space blocks (Latin-1 symbols, General Punctuation, CJK punctuation, full-width
// ASCII punctuation) separate words; letters of any script join them. Invalid bytes separate.
struct NonAscii {
  size_t length;
  bool word;
};

NonAscii DecodeNonAscii(std::string_view text, size_t i) {
  const Utf8Char c = DecodeUtf8(text, i);
  if (c.length == 0) return {1, false};
  const uint32_t cp = c.code_point;
  const bool separator = (cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 ||
                         (cp >= 0x2000 && cp <= 0x206F) || (cp >= 0x2190 && cp <= 0x2BFF) ||
                         (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
                         (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) ||
                         cp == 0xFEFF;
  return {c.length, !separator};
}

// Feature hash -> count, open addressing with linear probing, plus the features in first-seen
// order. One per thread, reused across calls (see Local()): allocating and zeroing a table per text
// dominated the cost of short texts. Only the used slots are visited and cleared, and vectors are
// summed in first-seen order, so a result never depends on the table's history or size.
class FeatureCounter {
 public:
  static FeatureCounter& Local() {
    thread_local FeatureCounter counter;
    return counter;
  }

  // `word`: a word feature (else an n-gram), which decides its weight and spreading.
  void Add(uint64_t key, bool word) {
    if (key == 0) key = 1;  // 0 marks an empty slot
    const size_t mask = slots_.size() - 1;
    for (size_t i = key & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.key == key) {
        s.count++;
        return;
      }
      if (s.key == 0) {
        s = Slot{key, 1, word};
        used_.push_back(static_cast<uint32_t>(i));
        if (used_.size() * 2 > slots_.size()) Resize(slots_.size() * 2);
        return;
      }
    }
  }

  // Adds every feature's weight * (1 + ln tf) into `out` with its hashed sign. A word feature
  // puts value / sqrt(2) into each of two buckets: its self-similarity is unchanged, but one
  // collision with a heavy feature of another text perturbs it half as much. N-grams, being many
  // per word, are spread in effect already.
  void Accumulate(std::vector<float>& out) const {
    const uint64_t d = out.size();
    // Multiply-shift maps the high 32 bits of a hash onto [0, d) without a division; bit 0 of the
    // same hash is the sign.
    const auto add = [&](uint64_t h, float value) {
      out[static_cast<size_t>(((h >> 32) * d) >> 32)] += (h & 1) ? value : -value;
    };
    for (uint32_t index : used_) {
      const Slot& s = slots_[index];
      const float tf = s.count == 1 ? 1.0f : 1.0f + static_cast<float>(std::log(s.count));
      if (s.word) {
        const float value = kWordWeight * tf * kInvSqrt2;
        add(s.key, value);
        add(Mix64(s.key ^ kSpreadSeed), value);
      } else {
        add(s.key, kGramWeight * tf);
      }
    }
  }

  // Empties the table; a table grown by a huge text is given back rather than kept per thread.
  void Clear() {
    if (slots_.size() > kKeptSlots) {
      used_.clear();
      used_.shrink_to_fit();
      Resize(kInitialSlots);
      return;
    }
    for (uint32_t index : used_) slots_[index] = Slot{};
    used_.clear();
  }

 private:
  static constexpr float kInvSqrt2 = 0.70710678f;
  static constexpr uint64_t kSpreadSeed = 0xA4093822299F31D0ULL;
  static constexpr size_t kInitialSlots = 4096;
  static constexpr size_t kKeptSlots = size_t{1} << 16;  // 1 MiB

  struct Slot {
    uint64_t key = 0;
    uint32_t count = 0;
    bool word = false;
  };

  FeatureCounter() { slots_.resize(kInitialSlots); }

  // Rehashes into `capacity` slots (a power of two), keeping first-seen order.
  void Resize(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    const size_t mask = capacity - 1;
    for (uint32_t& index : used_) {
      const Slot& s = old[index];
      size_t i = s.key & mask;
      while (slots_[i].key != 0) i = (i + 1) & mask;
      slots_[i] = s;
      index = static_cast<uint32_t>(i);
    }
  }

  std::vector<Slot> slots_;
  std::vector<uint32_t> used_;
};

// Adds the boundary-marked character n-grams of `word` without building "<word>": the byte at
// padded position p is '<' (p == 0), '>' (p == size + 1) or word[p - 1].
void AddGrams(std::string_view word, FeatureCounter& counter) {
  const size_t padded = word.size() + 2;
  const auto at = [&](size_t p) -> unsigned char {
    if (p == 0) return '<';
    if (p == padded - 1) return '>';
    return static_cast<unsigned char>(word[p - 1]);
  };
  for (size_t start = 0; start + kMinGram <= padded; ++start) {
    uint64_t h = kGramSeed;
    for (size_t k = 0; k < static_cast<size_t>(kMaxGram) && start + k < padded; ++k) {
      h ^= at(start + k);
      h *= kFnvPrime;
      if (k + 1 >= static_cast<size_t>(kMinGram)) {
        // Fold the length in so a 3-gram and a 4-gram that happen to hash alike stay distinct.
        counter.Add(Mix64(h ^ (k + 1)), /*word=*/false);
      }
    }
  }
}

class LocalEmbedder final : public Embedder {
 public:
  explicit LocalEmbedder(int dimensions) : dimensions_(dimensions) {}

  int dimensions() const override { return dimensions_; }
  std::string provider() const override { return "local"; }
  std::string model() const override { return ""; }

  absl::StatusOr<std::vector<Vector>> Embed(const std::vector<std::string>& texts) override {
    std::vector<Vector> out;
    out.reserve(texts.size());
    for (const std::string& text : texts) out.push_back(EmbedOne(text));
    return out;
  }

 private:
  Vector EmbedOne(std::string_view text) const {
    FeatureCounter& counter = FeatureCounter::Local();
    counter.Clear();  // a no-op unless an earlier call on this thread was cut short
    const StopwordSet& stopwords = Stopwords();
    std::string word;  // the current word, lower-cased; reused so words cost no allocation

    const auto finish_word = [&] {
      if (word.empty()) return;
      const uint64_t word_hash = Mix64(Fnv1a(kWordSeed, word));
      if (!stopwords.Contains(word, word_hash)) {
        const std::string_view stem = Stem(word);
        const uint64_t stem_hash =
            stem.size() == word.size() ? word_hash : Mix64(Fnv1a(kWordSeed, stem));
        counter.Add(stem_hash, /*word=*/true);
        AddGrams(word, counter);
      }
      word.clear();
    };

    size_t i = 0;
    while (i < text.size()) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        if (IsAsciiAlnum(c)) {
          word.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c));
        } else {
          finish_word();
        }
        ++i;
        continue;
      }
      const NonAscii n = DecodeNonAscii(text, i);
      if (!n.word) {
        finish_word();
      } else if (n.length == 2 && c == 0xC3 && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                 static_cast<unsigned char>(text[i + 1]) <= 0x9E &&
                 static_cast<unsigned char>(text[i + 1]) != 0x97) {
        // Latin-1 capitals (U+00C0..U+00DE except the multiplication sign) to lower case.
        word.push_back(text[i]);
        word.push_back(static_cast<char>(static_cast<unsigned char>(text[i + 1]) + 0x20));
      } else {
        word.append(text.data() + i, n.length);
      }
      i += n.length;
    }
    finish_word();

    Vector v(static_cast<size_t>(dimensions_), 0.0f);
    counter.Accumulate(v);
    counter.Clear();
    double norm = 0;
    for (float x : v) norm += static_cast<double>(x) * x;
    if (norm > 0) {
      const auto scale = static_cast<float>(1.0 / std::sqrt(norm));
      for (float& x : v) x *= scale;
    }
    return v;
  }

  const int dimensions_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Embedder>> NewLocalEmbedder(int dimensions) {
  if (dimensions < kMinDimensions || dimensions > kMaxDimensions) {
    return absl::InvalidArgumentError(absl::StrCat("local embedder dimensions must be in [",
                                                   kMinDimensions, ", ", kMaxDimensions, "], got ",
                                                   dimensions));
  }
  Stopwords();  // built here rather than on the first Embed, which may run on a hot path
  return std::make_unique<LocalEmbedder>(dimensions);
}

}  // namespace ailb::rag
