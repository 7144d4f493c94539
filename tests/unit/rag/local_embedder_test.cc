#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/rag/embedder.h"
#include "gtest/gtest.h"

namespace ailb::rag {
namespace {

std::unique_ptr<Embedder> Make(int dimensions) {
  auto embedder = NewLocalEmbedder(dimensions);
  EXPECT_TRUE(embedder.ok()) << embedder.status();
  return embedder.ok() ? std::move(*embedder) : nullptr;
}

Vector EmbedOne(Embedder& embedder, const std::string& text) {
  auto vectors = embedder.Embed({text});
  EXPECT_TRUE(vectors.ok()) << vectors.status();
  if (!vectors.ok() || vectors->size() != 1) return {};
  return std::move((*vectors)[0]);
}

double Dot(const Vector& a, const Vector& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

double Norm(const Vector& v) { return std::sqrt(Dot(v, v)); }

bool IsZero(const Vector& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; });
}

TEST(LocalEmbedderTest, ValidatesDimensions) {
  for (int bad : {-1, 0, 15, 8193, 1 << 20}) {
    auto embedder = NewLocalEmbedder(bad);
    ASSERT_FALSE(embedder.ok()) << bad;
    EXPECT_EQ(embedder.status().code(), absl::StatusCode::kInvalidArgument);
  }
  for (int good : {16, 384, 8192}) {
    std::unique_ptr<Embedder> embedder = Make(good);
    ASSERT_NE(embedder, nullptr);
    EXPECT_EQ(embedder->dimensions(), good);
    EXPECT_EQ(EmbedOne(*embedder, "wing slipstream").size(), static_cast<size_t>(good));
  }
}

TEST(LocalEmbedderTest, DescribesItself) {
  std::unique_ptr<Embedder> embedder = Make(64);
  ASSERT_NE(embedder, nullptr);
  EXPECT_EQ(embedder->provider(), "local");
  EXPECT_EQ(embedder->model(), "");
}

TEST(LocalEmbedderTest, OneNormalisedVectorPerTextInOrder) {
  std::unique_ptr<Embedder> embedder = Make(384);
  ASSERT_NE(embedder, nullptr);
  const std::vector<std::string> texts = {"supersonic flow over a cone", "heat transfer",
                                          "boundary layer transition",
                                          "supersonic flow over a cone"};
  auto vectors = embedder->Embed(texts);
  ASSERT_TRUE(vectors.ok()) << vectors.status();
  ASSERT_EQ(vectors->size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_EQ((*vectors)[i].size(), 384u);
    EXPECT_NEAR(Norm((*vectors)[i]), 1.0, 1e-5);
    EXPECT_EQ((*vectors)[i], EmbedOne(*embedder, texts[i])) << "batch and single calls differ";
  }
  EXPECT_EQ((*vectors)[0], (*vectors)[3]);
  EXPECT_NE((*vectors)[0], (*vectors)[1]);

  auto none = embedder->Embed({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(LocalEmbedderTest, TextWithoutContentIsTheZeroVector) {
  std::unique_ptr<Embedder> embedder = Make(128);
  ASSERT_NE(embedder, nullptr);
  for (const std::string text : {"", "   \n\t", "!!! ... ,;:", "the of and to in it is",
                                 "THE Of AnD", "\xE2\x80\x94 \xE2\x80\x9C\xE2\x80\x9D"}) {
    const Vector v = EmbedOne(*embedder, text);
    ASSERT_EQ(v.size(), 128u) << text;
    EXPECT_TRUE(IsZero(v)) << "'" << text << "'";
    EXPECT_TRUE(std::none_of(v.begin(), v.end(), [](float x) { return std::isnan(x); }));
  }
}

TEST(LocalEmbedderTest, NormalisesCaseStopwordsAndPunctuation) {
  std::unique_ptr<Embedder> embedder = Make(256);
  ASSERT_NE(embedder, nullptr);
  const Vector base = EmbedOne(*embedder, "wing slipstream");
  EXPECT_EQ(EmbedOne(*embedder, "Wing SLIPSTREAM"), base);
  EXPECT_EQ(EmbedOne(*embedder, "the wing, in a slipstream!"), base);
  EXPECT_EQ(EmbedOne(*embedder, "  wing\n\nslipstream. "), base);
  // Word order does not matter (a bag of features)...
  EXPECT_EQ(EmbedOne(*embedder, "slipstream wing"), base);
  // ...but repetition does, sublinearly.
  const Vector repeated = EmbedOne(*embedder, "wing wing wing slipstream");
  EXPECT_NE(repeated, base);
  EXPECT_GT(Dot(repeated, base), 0.8);
  // Latin-1 capitals are lower-cased too; other scripts are kept as words.
  EXPECT_EQ(EmbedOne(*embedder, "CAFÉ Ünïcode"), EmbedOne(*embedder, "café ünïcode"));
  EXPECT_NEAR(Norm(EmbedOne(*embedder, "日本語の文章 русский текст")), 1.0, 1e-5);
  // Digits are kept.
  EXPECT_NE(EmbedOne(*embedder, "mach 2"), EmbedOne(*embedder, "mach 3"));
}

TEST(LocalEmbedderTest, SimilarTextsAreCloserThanUnrelatedOnes) {
  std::unique_ptr<Embedder> embedder = Make(384);
  ASSERT_NE(embedder, nullptr);
  const Vector query = EmbedOne(*embedder, "heat transfer in turbulent boundary layers");
  const Vector relevant = EmbedOne(
      *embedder,
      "measurements of the heat transfer rate through a turbulent boundary layer on a flat plate");
  const Vector unrelated =
      EmbedOne(*embedder, "the committee approved the annual budget for the city library");
  EXPECT_GT(Dot(query, relevant), Dot(query, unrelated) + 0.2);
  // Inflections meet through the stemmer and shared n-grams.
  EXPECT_GT(Dot(EmbedOne(*embedder, "flows"), EmbedOne(*embedder, "flow")), 0.7);
  EXPECT_GT(Dot(EmbedOne(*embedder, "heated plates"), EmbedOne(*embedder, "heating plate")), 0.6);
  // N-grams relate compounds to their parts even without a shared word.
  EXPECT_GT(Dot(EmbedOne(*embedder, "aerodynamic"), EmbedOne(*embedder, "aerodynamics")), 0.5);
  EXPECT_GT(Dot(EmbedOne(*embedder, "hypersonic"), EmbedOne(*embedder, "supersonic")), 0.05);
}

TEST(LocalEmbedderTest, RanksTheRelevantDocumentFirst) {
  std::unique_ptr<Embedder> embedder = Make(384);
  ASSERT_NE(embedder, nullptr);
  const std::vector<std::string> documents = {
      "The committee approved the annual budget of the public library after a long debate.",
      "Boundary layer transition on a swept wing was observed with china clay at Mach 0.8.",
      "Heat transfer to a hemisphere cylinder in hypersonic flow was measured in a shock tunnel.",
      "A recipe for sourdough bread: flour, water, salt and a slow overnight fermentation.",
      "Flutter of panels in supersonic flow: theory and experiments on aeroelastic stability.",
      "The stock market fell sharply as investors reacted to the interest rate decision.",
  };
  const std::vector<std::pair<std::string, size_t>> queries = {
      {"where does transition happen on swept wings", 1},
      {"heat transfer rates in hypersonic flows", 2},
      {"panel flutter at supersonic speeds", 4},
      {"how to bake bread", 3},
      {"interest rates and stock prices", 5},
  };
  auto doc_vectors = embedder->Embed(documents);
  ASSERT_TRUE(doc_vectors.ok());
  for (const auto& [query, expected] : queries) {
    const Vector q = EmbedOne(*embedder, query);
    size_t best = 0;
    for (size_t d = 1; d < documents.size(); ++d) {
      if (Dot(q, (*doc_vectors)[d]) > Dot(q, (*doc_vectors)[best])) best = d;
    }
    EXPECT_EQ(best, expected) << query;
  }
}

// Stored vectors outlive the process: a collection embedded today is queried after upgrades and
// on other machines, so the features, hashing and weights must not drift. This pins them; if it
// fails after an intended change, existing local collections must be re-embedded.
TEST(LocalEmbedderTest, GoldenVector) {
  std::unique_ptr<Embedder> embedder = Make(16);
  ASSERT_NE(embedder, nullptr);
  const Vector v = EmbedOne(*embedder, "Experimental investigation of the aerodynamics of a wing");
  const std::vector<float> golden = {-0.065372f, 0.196116f,  0.231125f,  0.000000f,
                                     0.065372f,  -0.065372f, -0.231125f, 0.130744f,
                                     0.065372f,  -0.065372f, -0.758747f, -0.427241f,
                                     -0.165753f, 0.095735f,  0.130744f,  -0.065372f};
  ASSERT_EQ(v.size(), golden.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], golden[i], 1e-5) << "component " << i;
}

TEST(LocalEmbedderTest, InvalidUtf8AndControlBytesAreHarmless) {
  std::unique_ptr<Embedder> embedder = Make(64);
  ASSERT_NE(embedder, nullptr);
  std::string text = "wing\xFF\xFE slip\xC3stream \xE2\x82 \x01\x02 mach";
  text.push_back('\0');
  text += "tail";
  const Vector v = EmbedOne(*embedder, text);
  ASSERT_EQ(v.size(), 64u);
  EXPECT_NEAR(Norm(v), 1.0, 1e-5);
}

TEST(LocalEmbedderTest, LargeAndPathologicalTextsAreFast) {
  std::unique_ptr<Embedder> embedder = Make(384);
  ASSERT_NE(embedder, nullptr);
  std::string prose;
  while (prose.size() < (2 << 20)) {
    absl::StrAppend(&prose, "The boundary layer on the swept wing separates near the leading edge ",
                    prose.size() % 977, " at high incidence. ");
  }
  const std::string word(100'000, 'q');
  std::string punctuation;
  while (punctuation.size() < (1 << 20)) punctuation += "!?.,;:-()";
  const auto started = std::chrono::steady_clock::now();
  auto vectors = embedder->Embed({prose, word, punctuation});
  // Generous for sanitizer builds on a loaded machine; an optimised build needs well under a
  // second.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
  ASSERT_TRUE(vectors.ok());
  EXPECT_NEAR(Norm((*vectors)[0]), 1.0, 1e-5);
  EXPECT_NEAR(Norm((*vectors)[1]), 1.0, 1e-5);
  EXPECT_TRUE(IsZero((*vectors)[2]));
  // The scratch table grown for the large text does not change later results.
  EXPECT_EQ(EmbedOne(*embedder, "wing slipstream"), EmbedOne(*Make(384), "wing slipstream"));
}

TEST(LocalEmbedderTest, ConcurrentCallsAgreeWithSequentialOnes) {
  std::unique_ptr<Embedder> embedder = Make(256);
  ASSERT_NE(embedder, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) {
    texts.push_back(absl::StrCat("document ", i, " about wings, flows and heat transfer number ",
                                 i * 7919 % 1000, std::string(static_cast<size_t>(i) * 40, 'x')));
  }
  auto expected = embedder->Embed(texts);
  ASSERT_TRUE(expected.ok());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        auto got = embedder->Embed(texts);
        if (!got.ok() || *got != *expected) ++mismatches[static_cast<size_t>(t)];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace ailb::rag
