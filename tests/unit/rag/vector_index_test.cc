// The HNSW vector index against exact search: recall on clustered data, replace/remove/revive,
// growth, durable save and load (and every way a file can be bad), concurrent readers beside a
// writer, and the exact search used for small sets.
#include "ailb/rag/vector_index.h"

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace ailb::rag {
namespace {

using ::testing::HasSubstr;

constexpr int kDim = 64;

void Normalize(std::vector<float>& v) {
  double norm = 0;
  for (const float x : v) norm += static_cast<double>(x) * x;
  norm = std::sqrt(norm);
  for (float& x : v) x = static_cast<float>(x / norm);
}

// Points around a few random centres, like embeddings of texts on a handful of topics; iid random
// vectors would make a meaningless recall test.
class ClusteredData {
 public:
  ClusteredData(int clusters, int dim, uint32_t seed) : dim_(dim), rng_(seed) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int c = 0; c < clusters; ++c) {
      std::vector<float> center(static_cast<size_t>(dim));
      for (float& x : center) x = normal(rng_);
      Normalize(center);
      centers_.push_back(std::move(center));
    }
  }

  std::vector<float> Next() {
    std::uniform_int_distribution<size_t> pick(0, centers_.size() - 1);
    // Noise of norm ~0.6 around unit centres: clusters overlap enough that neighbours are not
    // trivially "everything in my cluster".
    std::normal_distribution<float> noise(0.0f, 0.6f / std::sqrt(static_cast<float>(dim_)));
    std::vector<float> v = centers_[pick(rng_)];
    for (float& x : v) x += noise(rng_);
    Normalize(v);
    return v;
  }

 private:
  int dim_;
  std::mt19937 rng_;
  std::vector<std::vector<float>> centers_;
};

float Dot(std::span<const float> a, std::span<const float> b) {
  float dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += a[i] * b[i];
  return dot;
}

std::vector<uint64_t> Labels(const std::vector<SearchHit>& hits) {
  std::vector<uint64_t> labels;
  for (const SearchHit& hit : hits) labels.push_back(hit.label);
  return labels;
}

bool SortedByScore(const std::vector<SearchHit>& hits) {
  for (size_t i = 1; i < hits.size(); ++i) {
    if (hits[i - 1].score < hits[i].score) return false;
  }
  return true;
}

std::unique_ptr<VectorIndex> CreateOrDie(int dim, HnswOptions options = {}) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index = VectorIndex::Create(dim, options);
  EXPECT_TRUE(index.ok()) << index.status();
  return index.ok() ? std::move(*index) : nullptr;
}

class VectorIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ailb::testing::MakeTestDir("vector_index");
    ASSERT_FALSE(dir_.empty());
  }

  void TearDown() override { ailb::testing::RemoveTestDir(dir_); }

  // `count` clustered vectors labelled 1000 + i, added to a new index and kept for checks.
  std::unique_ptr<VectorIndex> BuildIndex(size_t count, HnswOptions options = {}) {
    std::unique_ptr<VectorIndex> index = CreateOrDie(kDim, options);
    if (index == nullptr) return nullptr;
    for (size_t i = 0; i < count; ++i) {
      std::vector<float> v = data_.Next();
      const uint64_t label = 1000 + i;
      EXPECT_TRUE(index->Add(label, v).ok());
      flat_.insert(flat_.end(), v.begin(), v.end());
      labels_.push_back(label);
    }
    return index;
  }

  std::span<const float> VectorOf(size_t i) const {
    return std::span<const float>(flat_).subspan(i * kDim, kDim);
  }

  static std::vector<char> ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  static void WriteFile(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
  ClusteredData data_{40, kDim, 20240611};
  std::vector<float> flat_;
  std::vector<uint64_t> labels_;
};

TEST_F(VectorIndexTest, RecallAtTenAgainstExactSearch) {
  std::unique_ptr<VectorIndex> index = BuildIndex(5000);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->live_count(), 5000u);
  EXPECT_EQ(index->dimensions(), kDim);

  constexpr int kQueries = 200;
  size_t found = 0;
  for (int q = 0; q < kQueries; ++q) {
    const std::vector<float> query = data_.Next();
    const std::vector<SearchHit> approx = index->Search(query, 10);
    const std::vector<SearchHit> exact = ExactSearch(flat_, labels_, kDim, query, 10);
    ASSERT_EQ(approx.size(), 10u);
    ASSERT_EQ(exact.size(), 10u);
    EXPECT_TRUE(SortedByScore(approx));
    // Scores are cosine similarities of the stored vectors.
    for (const SearchHit& hit : approx) {
      EXPECT_NEAR(hit.score, Dot(VectorOf(hit.label - 1000), query), 1e-4);
    }
    const std::vector<uint64_t> exact_labels = Labels(exact);
    const std::set<uint64_t> truth(exact_labels.begin(), exact_labels.end());
    for (const SearchHit& hit : approx) found += truth.count(hit.label);
  }
  const double recall = static_cast<double>(found) / (kQueries * 10);
  RecordProperty("recall_at_10", std::to_string(recall));
  EXPECT_GE(recall, 0.9);
}

TEST_F(VectorIndexTest, SearchOnEmptyAndSmallIndexes) {
  std::unique_ptr<VectorIndex> index = CreateOrDie(kDim);
  ASSERT_NE(index, nullptr);
  const std::vector<float> query = data_.Next();
  EXPECT_TRUE(index->Search(query, 5).empty());
  ASSERT_TRUE(index->Add(1, data_.Next()).ok());
  ASSERT_TRUE(index->Add(2, data_.Next()).ok());
  // k above the live count returns what exists.
  const std::vector<SearchHit> hits = index->Search(query, 10);
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(std::set<uint64_t>({hits[0].label, hits[1].label}), std::set<uint64_t>({1, 2}));
  EXPECT_TRUE(index->Search(query, 0).empty());
  // A query of the wrong size finds nothing rather than reading past it.
  EXPECT_TRUE(index->Search(std::vector<float>(kDim - 1, 0.1f), 5).empty());
}

TEST_F(VectorIndexTest, AddRejectsWrongSizeAndNonFinite) {
  std::unique_ptr<VectorIndex> index = CreateOrDie(kDim);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->Add(1, std::vector<float>(kDim + 1, 0.1f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index->Add(1, std::vector<float>()).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> nan = data_.Next();
  nan[3] = std::nanf("");
  EXPECT_EQ(index->Add(1, nan).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index->live_count(), 0u);
  EXPECT_FALSE(index->Contains(1));
}

TEST_F(VectorIndexTest, CreateRejectsBadOptions) {
  EXPECT_EQ(VectorIndex::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VectorIndex::Create(-3).status().code(), absl::StatusCode::kInvalidArgument);
  HnswOptions options;
  options.m = 1;
  EXPECT_EQ(VectorIndex::Create(kDim, options).status().code(), absl::StatusCode::kInvalidArgument);
  options = HnswOptions{};
  options.ef_search = 0;
  EXPECT_EQ(VectorIndex::Create(kDim, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(VectorIndexTest, AddReplacesTheVectorOfAnExistingLabel) {
  std::unique_ptr<VectorIndex> index = BuildIndex(500);
  ASSERT_NE(index, nullptr);
  const uint64_t label = 1042;
  const std::vector<float> old_vector(VectorOf(42).begin(), VectorOf(42).end());
  std::vector<float> new_vector = data_.Next();
  ASSERT_LT(Dot(old_vector, new_vector), 0.99f);

  ASSERT_TRUE(index->Add(label, new_vector).ok());
  EXPECT_EQ(index->live_count(), 500u);
  EXPECT_EQ(index->deleted_count(), 0u);

  std::vector<SearchHit> hits = index->Search(new_vector, 5);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].label, label);
  EXPECT_NEAR(hits[0].score, 1.0f, 1e-4);

  hits = index->Search(old_vector, 500);
  const auto it =
      std::find_if(hits.begin(), hits.end(), [&](const SearchHit& h) { return h.label == label; });
  ASSERT_NE(it, hits.end());
  EXPECT_NEAR(it->score, Dot(old_vector, new_vector), 1e-4);
}

TEST_F(VectorIndexTest, RemoveHidesLabelAndCountsIt) {
  std::unique_ptr<VectorIndex> index = BuildIndex(300);
  ASSERT_NE(index, nullptr);
  const uint64_t label = 1005;
  ASSERT_TRUE(index->Contains(label));
  index->Remove(label);
  EXPECT_FALSE(index->Contains(label));
  EXPECT_EQ(index->live_count(), 299u);
  EXPECT_EQ(index->deleted_count(), 1u);

  // Its own vector is the query that would find it first.
  const std::vector<SearchHit> hits = index->Search(VectorOf(5), 300);
  EXPECT_EQ(hits.size(), 299u);
  for (const SearchHit& hit : hits) EXPECT_NE(hit.label, label);
  EXPECT_TRUE(SortedByScore(hits));

  // Removing twice, or a label never added, changes nothing.
  index->Remove(label);
  index->Remove(987654321);
  EXPECT_EQ(index->live_count(), 299u);
  EXPECT_EQ(index->deleted_count(), 1u);
}

TEST_F(VectorIndexTest, AddAfterRemoveRevivesTheLabel) {
  std::unique_ptr<VectorIndex> index = BuildIndex(200);
  ASSERT_NE(index, nullptr);
  const uint64_t label = 1010;
  index->Remove(label);
  ASSERT_FALSE(index->Contains(label));
  const std::vector<float> revived = data_.Next();
  ASSERT_TRUE(index->Add(label, revived).ok());
  EXPECT_TRUE(index->Contains(label));
  EXPECT_EQ(index->live_count(), 200u);
  EXPECT_EQ(index->deleted_count(), 0u);
  const std::vector<SearchHit> hits = index->Search(revived, 3);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].label, label);
  EXPECT_NEAR(hits[0].score, 1.0f, 1e-4);
}

TEST_F(VectorIndexTest, GrowsPastMaxElements) {
  HnswOptions options;
  options.max_elements = 4;
  std::unique_ptr<VectorIndex> index = BuildIndex(300, options);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->live_count(), 300u);
  size_t self_first = 0;
  for (size_t i = 0; i < 300; ++i) {
    const std::vector<SearchHit> hits = index->Search(VectorOf(i), 1);
    ASSERT_EQ(hits.size(), 1u);
    self_first += hits[0].label == labels_[i] ? 1 : 0;
  }
  EXPECT_GE(self_first, 297u);
}

TEST_F(VectorIndexTest, SaveThenLoadGivesIdenticalResults) {
  std::unique_ptr<VectorIndex> index = BuildIndex(2000);
  ASSERT_NE(index, nullptr);
  for (uint64_t label = 1000; label < 1100; label += 10) index->Remove(label);
  ASSERT_EQ(index->deleted_count(), 10u);

  const std::string path = dir_ + "/index.hnsw";
  absl::StatusOr<std::string> checksum = index->Save(path);
  ASSERT_TRUE(checksum.ok()) << checksum.status();
  EXPECT_EQ(checksum->size(), 16u);
  EXPECT_EQ(checksum->find_first_not_of("0123456789abcdef"), std::string::npos) << *checksum;
  absl::StatusOr<std::string> on_disk = FileChecksum(path);
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(*on_disk, *checksum);
  // Only the index itself: the temporary file was renamed, not copied.
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"index.hnsw"});

  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  VectorIndex& copy = **loaded;
  EXPECT_EQ(copy.live_count(), index->live_count());
  EXPECT_EQ(copy.deleted_count(), 10u);
  EXPECT_FALSE(copy.Contains(1000));
  EXPECT_TRUE(copy.Contains(1001));

  for (int q = 0; q < 50; ++q) {
    const std::vector<float> query = data_.Next();
    const std::vector<SearchHit> before = index->Search(query, 10);
    const std::vector<SearchHit> after = copy.Search(query, 10);
    ASSERT_EQ(Labels(after), Labels(before));
    for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i].score, before[i].score);
  }
  // Tombstones survive the round trip: removed labels stay hidden.
  for (size_t i = 0; i < 100; i += 10) {
    const std::vector<SearchHit> near_removed = copy.Search(VectorOf(i), 50);
    ASSERT_EQ(near_removed.size(), 50u);
    for (const SearchHit& hit : near_removed) {
      EXPECT_FALSE(hit.label < 1100 && hit.label % 10 == 0) << hit.label;
    }
  }

  // The loaded index keeps working: new labels, growth beyond the loaded size, saving again.
  for (uint64_t label = 90000; label < 90100; ++label)
    ASSERT_TRUE(copy.Add(label, data_.Next()).ok());
  EXPECT_EQ(copy.live_count(), 2090u);
  ASSERT_TRUE(copy.Add(1000, VectorOf(0)).ok());
  EXPECT_EQ(copy.deleted_count(), 9u);
  absl::StatusOr<std::string> second = copy.Save(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(*second, *checksum);
  EXPECT_EQ(*FileChecksum(path), *second);
}

TEST_F(VectorIndexTest, SaveAndLoadAnEmptyIndex) {
  std::unique_ptr<VectorIndex> index = CreateOrDie(kDim);
  ASSERT_NE(index, nullptr);
  const std::string path = dir_ + "/empty.hnsw";
  ASSERT_TRUE(index->Save(path).ok());
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->live_count(), 0u);
  EXPECT_TRUE((*loaded)->Search(data_.Next(), 3).empty());
  ASSERT_TRUE((*loaded)->Add(5, data_.Next()).ok());
  EXPECT_EQ((*loaded)->live_count(), 1u);
}

TEST_F(VectorIndexTest, SaveIntoMissingDirectoryFailsCleanly) {
  std::unique_ptr<VectorIndex> index = BuildIndex(10);
  ASSERT_NE(index, nullptr);
  absl::StatusOr<std::string> saved = index->Save(dir_ + "/missing/index.hnsw");
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kNotFound) << saved.status();
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(VectorIndexTest, TruncatedFileIsDataLoss) {
  std::unique_ptr<VectorIndex> index = BuildIndex(300);
  ASSERT_NE(index, nullptr);
  const std::string path = dir_ + "/index.hnsw";
  ASSERT_TRUE(index->Save(path).ok());
  const std::vector<char> bytes = ReadFile(path);
  ASSERT_GT(bytes.size(), 1000u);
  for (const size_t keep : {size_t{0}, size_t{10}, size_t{96}, size_t{500}, bytes.size() / 2,
                            bytes.size() - 4, bytes.size() - 1}) {
    WriteFile(path, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(keep)));
    absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
    ASSERT_FALSE(loaded.ok()) << "kept " << keep << " bytes";
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss)
        << "kept " << keep << ": " << loaded.status();
  }
  // Extra bytes at the end are damage too.
  std::vector<char> longer = bytes;
  longer.push_back('x');
  WriteFile(path, longer);
  EXPECT_EQ(VectorIndex::Load(path, kDim).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(VectorIndexTest, GarbageFileIsDataLoss) {
  const std::string path = dir_ + "/garbage.hnsw";
  std::mt19937 rng(7);
  std::vector<char> garbage(64 * 1024);
  for (char& c : garbage) c = static_cast<char>(rng());
  WriteFile(path, garbage);
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();

  std::string text;
  while (text.size() < 10000) text += "not an index at all. ";
  WriteFile(path, std::vector<char>(text.begin(), text.end()));
  loaded = VectorIndex::Load(path, kDim);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
}

TEST_F(VectorIndexTest, HeaderClaimingHugeCountIsDataLossWithoutAllocating) {
  std::unique_ptr<VectorIndex> index = BuildIndex(50);
  ASSERT_NE(index, nullptr);
  const std::string path = dir_ + "/index.hnsw";
  ASSERT_TRUE(index->Save(path).ok());
  std::vector<char> bytes = ReadFile(path);
  // max_elements_ (offset 8) and cur_element_count (offset 16).
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(bytes.data() + 8, &huge, sizeof(huge));
  std::memcpy(bytes.data() + 16, &huge, sizeof(huge));
  WriteFile(path, bytes);
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
}

TEST_F(VectorIndexTest, CorruptLinkIsDataLoss) {
  std::unique_ptr<VectorIndex> index = BuildIndex(100);
  ASSERT_NE(index, nullptr);
  const std::string path = dir_ + "/index.hnsw";
  ASSERT_TRUE(index->Save(path).ok());
  std::vector<char> bytes = ReadFile(path);
  // Element 0's level-0 block starts right after the 96-byte header: a 16-bit neighbour count,
  // flags, then 32-bit neighbour ids. Point its first neighbour past the end of the index.
  uint16_t neighbours = 0;
  std::memcpy(&neighbours, bytes.data() + 96, sizeof(neighbours));
  ASSERT_GT(neighbours, 0);
  const uint32_t bad = 1u << 30;
  std::memcpy(bytes.data() + 96 + 4, &bad, sizeof(bad));
  WriteFile(path, bytes);
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, kDim);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("link"));
}

TEST_F(VectorIndexTest, WrongDimensionIsDataLoss) {
  std::unique_ptr<VectorIndex> index = BuildIndex(50);
  ASSERT_NE(index, nullptr);
  const std::string path = dir_ + "/index.hnsw";
  ASSERT_TRUE(index->Save(path).ok());
  for (const int dim : {32, 128, 63}) {
    absl::StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, dim);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr("64-dimensional"));
  }
}

TEST_F(VectorIndexTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/absent.hnsw";
  EXPECT_EQ(VectorIndex::Load(path, kDim).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FileChecksum(path).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(VectorIndexTest, FileChecksumIsFnv1a64) {
  const std::string path = dir_ + "/bytes";
  WriteFile(path, {});
  EXPECT_EQ(*FileChecksum(path), "cbf29ce484222325");
  WriteFile(path, {'a'});
  EXPECT_EQ(*FileChecksum(path), "af63dc4c8601ec8c");
  WriteFile(path, {'f', 'o', 'o', 'b', 'a', 'r'});
  EXPECT_EQ(*FileChecksum(path), "85944171f73967e8");
}

TEST_F(VectorIndexTest, ConcurrentSearchesWhileOneThreadAdds) {
  HnswOptions options;
  options.max_elements = 128;  // the writer forces resizes while readers run
  std::unique_ptr<VectorIndex> index = BuildIndex(300, options);
  ASSERT_NE(index, nullptr);
  std::vector<std::vector<float>> extra;
  for (int i = 0; i < 800; ++i) extra.push_back(data_.Next());
  std::vector<std::vector<float>> queries;
  for (int i = 0; i < 200; ++i) queries.push_back(data_.Next());

  std::atomic<bool> writer_done{false};
  std::atomic<int> bad_results{0};
  std::atomic<int> searches{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      size_t q = static_cast<size_t>(t);
      // At least a few rounds even if the writer finishes first.
      for (int round = 0; round < 50 || !writer_done.load(); ++round) {
        const std::vector<SearchHit> hits = index->Search(queries[q % queries.size()], 10);
        q += 4;
        std::set<uint64_t> seen;
        bool ok = hits.size() == 10 && SortedByScore(hits);
        for (const SearchHit& hit : hits) {
          ok = ok && seen.insert(hit.label).second && hit.score <= 1.0001f &&
               hit.score >= -1.0001f &&
               ((hit.label >= 1000 && hit.label < 1300) ||
                (hit.label >= 50000 && hit.label < 50800));
        }
        if (!ok) bad_results.fetch_add(1);
        searches.fetch_add(1);
      }
    });
  }
  std::thread writer([&] {
    for (size_t i = 0; i < extra.size(); ++i) {
      EXPECT_TRUE(index->Add(50000 + i, extra[i]).ok());
      if (i % 100 == 0) index->Remove(1000 + i / 100);
    }
    writer_done.store(true);
  });
  writer.join();
  for (std::thread& reader : readers) reader.join();

  EXPECT_EQ(bad_results.load(), 0);
  EXPECT_GE(searches.load(), 200);
  EXPECT_EQ(index->deleted_count(), 8u);
  EXPECT_EQ(index->live_count(), 300u + 800u - 8u);
  for (uint64_t label = 1000; label < 1008; ++label) EXPECT_FALSE(index->Contains(label));
  for (size_t i = 0; i < extra.size(); i += 97) {
    const std::vector<SearchHit> hits = index->Search(extra[i], 1);
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_EQ(hits[0].label, 50000 + i);
  }
}

TEST(ExactSearchTest, OrdersByScoreThenLabel) {
  // Four 2-d vectors; the query (1, 0) scores them 0.2, 1.0, 0.6, 1.0.
  const std::vector<float> vectors = {0.2f, 0.9f, 1.0f, 0.0f, 0.6f, 0.8f, 1.0f, 0.0f};
  const std::vector<uint64_t> labels = {40, 30, 20, 10};
  const std::vector<float> query = {1.0f, 0.0f};

  std::vector<SearchHit> hits = ExactSearch(vectors, labels, 2, query, 3);
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(Labels(hits), (std::vector<uint64_t>{10, 30, 20}));  // ties: lower label first
  EXPECT_FLOAT_EQ(hits[0].score, 1.0f);
  EXPECT_FLOAT_EQ(hits[2].score, 0.6f);

  hits = ExactSearch(vectors, labels, 2, query, 100);
  EXPECT_EQ(Labels(hits), (std::vector<uint64_t>{10, 30, 20, 40}));
  EXPECT_TRUE(ExactSearch(vectors, labels, 2, query, 0).empty());
  EXPECT_TRUE(ExactSearch(vectors, labels, 3, query, 2).empty());  // query of the wrong size
  EXPECT_TRUE(ExactSearch({}, {}, 2, query, 2).empty());
  // More labels than vectors: only complete vectors count.
  const std::vector<uint64_t> extra_labels = {40, 30, 20, 10, 99};
  EXPECT_EQ(ExactSearch(vectors, extra_labels, 2, query, 10).size(), 4u);
}

TEST(ExactSearchTest, MatchesBruteForceOnRandomData) {
  ClusteredData data(5, 16, 99);
  std::vector<float> flat;
  std::vector<uint64_t> labels;
  for (uint64_t i = 0; i < 300; ++i) {
    const std::vector<float> v = data.Next();
    flat.insert(flat.end(), v.begin(), v.end());
    labels.push_back(i);
  }
  const std::vector<float> query = data.Next();
  std::vector<SearchHit> all;
  for (uint64_t i = 0; i < 300; ++i) {
    all.push_back({i, Dot(std::span<const float>(flat).subspan(i * 16, 16), query)});
  }
  std::sort(all.begin(), all.end(), [](const SearchHit& a, const SearchHit& b) {
    return a.score != b.score ? a.score > b.score : a.label < b.label;
  });
  const std::vector<SearchHit> top = ExactSearch(flat, labels, 16, query, 25);
  ASSERT_EQ(top.size(), 25u);
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_EQ(top[i].label, all[i].label) << i;
    EXPECT_FLOAT_EQ(top[i].score, all[i].score) << i;
  }
}

}  // namespace
}  // namespace ailb::rag
