// RagStore: collections, documents, the three query modes, filters, durability of the index
// (snapshot, catch-up, rebuild), compaction, concurrency and embedder failures.
#include "ailb/rag/rag_store.h"

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/clock.h"
#include "ailb/common/strings.h"
#include "ailb/rag/embedder.h"
#include "ailb/storage/sqlite.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "testing/temp_dir.h"

namespace ailb::rag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

// What the tests can do to the "test" provider's embedders.
struct EmbedderControl {
  std::atomic<bool> fail{false};
};

// Deterministic bag of words: each lower-cased word (minus a few stopwords) adds ±1 to one of
// `dimensions` slots chosen by FNV-1a; L2-normalised. Texts sharing words have high cosine.
class HashEmbedder final : public Embedder {
 public:
  HashEmbedder(int dimensions, EmbedderControl* control)
      : dimensions_(dimensions), control_(control) {}
  int dimensions() const override { return dimensions_; }
  std::string provider() const override { return "test"; }
  std::string model() const override { return "hash"; }

  absl::StatusOr<std::vector<Vector>> Embed(const std::vector<std::string>& texts) override {
    if (control_->fail.load()) return absl::UnavailableError("embedding provider is down");
    std::vector<Vector> vectors;
    for (const std::string& text : texts) vectors.push_back(EmbedOne(text));
    return vectors;
  }

 private:
  Vector EmbedOne(const std::string& text) const {
    Vector vector(static_cast<size_t>(dimensions_), 0.0f);
    std::string word;
    auto flush = [&] {
      if (!word.empty() && word != "the" && word != "of" && word != "a" && word != "and" &&
          word != "in" && word != "with") {
        uint64_t hash = 1469598103934665603ULL;
        for (char c : word) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
        vector[hash % vector.size()] += (hash >> 63) != 0 ? 1.0f : -1.0f;
      }
      word.clear();
    };
    for (char c : text) {
      if (std::isalnum(static_cast<unsigned char>(c))) {
        word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
      } else {
        flush();
      }
    }
    flush();
    double norm = 0;
    for (float x : vector) norm += static_cast<double>(x) * x;
    if (norm > 0) {
      for (float& x : vector) x = static_cast<float>(x / std::sqrt(norm));
    }
    return vector;
  }

  const int dimensions_;
  EmbedderControl* const control_;
};

struct Doc {
  std::string id;
  std::string text;
  json metadata;
};

const std::vector<Doc>& Corpus() {
  static const auto* const kCorpus = new std::vector<Doc>{
      {"wing",
       "Wind tunnel study of a swept wing in a propeller slipstream: lift and aerodynamics of the "
       "wing at high angles of attack.",
       {{"topic", "aero"}, {"year", 1958}, {"tags", {"wing", "experiment"}}, {"public", true}}},
      {"heat",
       "Heat conduction in composite slabs with temperature dependent thermal conductivity.",
       {{"topic", "thermal"}, {"year", 1961}, {"tags", {"theory"}}, {"public", false}}},
      {"boundary",
       "Laminar boundary layer transition on a flat plate at supersonic Mach numbers.",
       {{"topic", "aero"}, {"year", 1961.0}, {"tags", {"experiment"}}, {"note", nullptr}}},
      {"shells",
       "Buckling of thin cylindrical shells under axial compression and external pressure.",
       {{"topic", "structures"}, {"year", 1963}, {"tags", json::array()}}},
      {"bread",
       "A recipe for baking sourdough bread with a crisp crust and an open crumb.",
       {{"topic", "cooking"}, {"year", 2020}, {"public", true}}},
  };
  return *kCorpus;
}

std::vector<DocumentInput> Inputs(const std::vector<Doc>& docs) {
  std::vector<DocumentInput> inputs;
  for (const Doc& doc : docs) inputs.push_back({doc.id, doc.text, doc.metadata});
  return inputs;
}

QueryRequest Request(std::string query, QueryMode mode = QueryMode::kHybrid, int top_k = 5,
                     json filter = nullptr) {
  QueryRequest request;
  request.query = std::move(query);
  request.mode = mode;
  request.top_k = top_k;
  request.filter = std::move(filter);
  return request;
}

std::vector<std::string> DocIds(const std::vector<QueryHit>& hits) {
  std::vector<std::string> ids;
  for (const QueryHit& hit : hits) ids.push_back(hit.document_id);
  return ids;
}

class RagStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ailb::testing::MakeTestDir("rag_store");
    ASSERT_FALSE(dir_.empty());
    limits_.max_document_bytes = 16 << 10;
    limits_.max_documents_per_request = 100;
    log_sink_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("rag_store_test", log_sink_));
  }

  void TearDown() override {
    store_.reset();
    spdlog::set_default_logger(previous_logger_);
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  RagStore::EmbedderFactory Factory() {
    return [this](const EmbeddingSpec& spec) -> absl::StatusOr<std::unique_ptr<Embedder>> {
      if (spec.provider == "local") return NewLocalEmbedder(spec.dimensions);
      if (fail_factory_) return absl::UnavailableError("provider 'test' is not configured");
      if (spec.provider == "test") {
        return std::unique_ptr<Embedder>(new HashEmbedder(spec.dimensions, &control_));
      }
      if (spec.provider == "wrongdims") {
        return std::unique_ptr<Embedder>(new HashEmbedder(spec.dimensions + 1, &control_));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown embedding provider '", spec.provider, "'"));
    };
  }

  void Open() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<RagStore>> store =
        RagStore::Open(dir_, Factory(), clock_, limits_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  static CollectionSpec Spec(const std::string& name, const std::string& provider = "test",
                             int dimensions = 64) {
    CollectionSpec spec;
    spec.name = name;
    spec.embedding.provider = provider;
    spec.embedding.dimensions = dimensions;
    return spec;
  }

  void CreateWithCorpus(const std::string& name, const std::string& provider = "test") {
    absl::StatusOr<CollectionInfo> info = store_->CreateCollection(Spec(name, provider));
    ASSERT_TRUE(info.ok()) << info.status();
    absl::StatusOr<UpsertResult> result = store_->UpsertDocuments(name, Inputs(Corpus()));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->documents, static_cast<int64_t>(Corpus().size()));
  }

  std::vector<QueryHit> Search(const std::string& collection, const std::string& query,
                               QueryMode mode, int top_k = 5, json filter = nullptr) {
    QueryRequest request;
    request.query = query;
    request.mode = mode;
    request.top_k = top_k;
    request.filter = std::move(filter);
    absl::StatusOr<std::vector<QueryHit>> hits = store_->Query(collection, request);
    EXPECT_TRUE(hits.ok()) << hits.status() << " for query '" << query << "'";
    return hits.ok() ? *hits : std::vector<QueryHit>{};
  }

  absl::Status QueryStatus(const std::string& collection, QueryRequest request) {
    return store_->Query(collection, request).status();
  }

  CollectionInfo Info(const std::string& name) {
    absl::StatusOr<CollectionInfo> info = store_->GetCollection(name);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *info : CollectionInfo{};
  }

  bool Snapshot() {
    absl::Status status = store_->SnapshotAll();
    EXPECT_TRUE(status.ok()) << status;
    return status.ok();
  }

  int CountLogs(std::string_view needle) {
    int count = 0;
    for (const std::string& line : log_sink_->last_formatted()) {
      if (absl::StrContains(line, ToAbsl(needle))) ++count;
    }
    return count;
  }

  // The first column of the first row of `sql`, read through a connection of its own.
  int64_t SqlInt(const std::string& sql) {
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open((fs::path(dir_) / "ailb.db").string());
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return -1;
    absl::StatusOr<storage::Statement> select = (*db)->Prepare(sql);
    EXPECT_TRUE(select.ok()) << select.status();
    if (!select.ok()) return -1;
    absl::StatusOr<bool> row = select->Step();
    EXPECT_TRUE(row.ok() && *row) << sql;
    return row.ok() && *row ? select->ColumnInt(0) : -1;
  }

  int64_t CollectionId(const std::string& name) {
    return SqlInt(absl::StrCat("SELECT id FROM rag_collections WHERE name = '", name, "'"));
  }

  std::string SnapshotFile(const std::string& name) {
    return (fs::path(dir_) / "indexes" / absl::StrCat(CollectionId(name), ".hnsw")).string();
  }

  // Rows of the FTS index that belong to collection `id`, after checking the index's integrity.
  int64_t FtsRows(int64_t id) {
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open((fs::path(dir_) / "ailb.db").string());
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return -1;
    absl::Status intact =
        (*db)->Exec("INSERT INTO rag_chunks_fts(rag_chunks_fts) VALUES ('integrity-check')");
    EXPECT_TRUE(intact.ok()) << intact;
    return SqlInt(absl::StrCat(
        "SELECT count(*) FROM rag_chunks_fts WHERE rag_chunks_fts MATCH 'collection : c", id, "'"));
  }

  std::string dir_;
  ManualClock clock_;
  RagLimits limits_;
  EmbedderControl control_;
  bool fail_factory_ = false;
  std::unique_ptr<RagStore> store_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> log_sink_;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

constexpr QueryMode kAllModes[] = {QueryMode::kVector, QueryMode::kLexical, QueryMode::kHybrid};

TEST_F(RagStoreTest, CreateListGetDeleteCollections) {
  Open();
  absl::StatusOr<CollectionInfo> created = store_->CreateCollection(Spec("docs", "local", 384));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->spec.name, "docs");
  EXPECT_EQ(created->spec.embedding.provider, "local");
  EXPECT_EQ(created->spec.embedding.dimensions, 384);
  EXPECT_EQ(created->spec.chunking.max_tokens, 256);
  EXPECT_EQ(created->spec.chunking.overlap, 32);
  EXPECT_EQ(created->created_at, 1'700'000'000);
  EXPECT_EQ(created->document_count, 0);
  ASSERT_TRUE(store_->CreateCollection(Spec("a.other-1_x")).ok());

  ASSERT_TRUE(store_->UpsertDocuments("docs", Inputs(Corpus())).ok());
  absl::StatusOr<std::vector<CollectionInfo>> list = store_->ListCollections();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_THAT(*list, SizeIs(2));
  EXPECT_EQ((*list)[0].spec.name, "a.other-1_x");
  EXPECT_EQ((*list)[0].document_count, 0);
  EXPECT_EQ((*list)[1].spec.name, "docs");
  EXPECT_EQ((*list)[1].document_count, 5);
  EXPECT_EQ((*list)[1].chunk_count, 5);
  EXPECT_EQ(Info("docs").document_count, 5);

  const int64_t docs_id = CollectionId("docs");
  EXPECT_EQ(FtsRows(docs_id), 5);
  ASSERT_TRUE(store_->DeleteCollection("docs").ok());
  EXPECT_EQ(FtsRows(docs_id), 0);
  absl::Status missing = store_->GetCollection("docs").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "collection 'docs' does not exist");
  EXPECT_EQ(store_->DeleteCollection("docs").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->UpsertDocuments("docs", Inputs(Corpus())).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(QueryStatus("docs", Request("wing")).code(), absl::StatusCode::kNotFound);
  list = store_->ListCollections();
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, SizeIs(1));

  // The name is free again, and the new collection starts empty (nothing of the old one left,
  // not even in the shared FTS table).
  ASSERT_TRUE(store_->CreateCollection(Spec("docs")).ok());
  EXPECT_EQ(Info("docs").chunk_count, 0);
  EXPECT_THAT(Search("docs", "wing slipstream", QueryMode::kLexical), IsEmpty());
  // Still true after a restart.
  Open();
  EXPECT_EQ(Info("docs").document_count, 0);
  EXPECT_EQ(Info("a.other-1_x").document_count, 0);
}

TEST_F(RagStoreTest, RejectsInvalidSpecs) {
  Open();
  const auto code = [&](const CollectionSpec& spec) {
    return store_->CreateCollection(spec).status().code();
  };
  for (const std::string& name : {std::string(""), std::string("a b"), std::string("x/y"),
                                  std::string(129, 'n'), std::string("caf\xc3\xa9")}) {
    EXPECT_EQ(code(Spec(name)), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_EQ(code(Spec(std::string(128, 'n'))), absl::StatusCode::kOk);
  EXPECT_EQ(code(Spec("local8", "local", 8)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Spec("test8", "test", 8)), absl::StatusCode::kOk);  // 1.. for non-local
  EXPECT_EQ(code(Spec("zero", "test", 0)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Spec("huge", "local", 8193)), absl::StatusCode::kInvalidArgument);
  CollectionSpec spec = Spec("chunks");
  spec.chunking.max_tokens = 15;
  EXPECT_EQ(code(spec), absl::StatusCode::kInvalidArgument);
  spec.chunking.max_tokens = 8193;
  EXPECT_EQ(code(spec), absl::StatusCode::kInvalidArgument);
  spec.chunking = {64, -1};
  EXPECT_EQ(code(spec), absl::StatusCode::kInvalidArgument);
  spec.chunking = {64, 64};
  absl::Status overlap = store_->CreateCollection(spec).status();
  EXPECT_EQ(overlap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(overlap.message()), HasSubstr("overlap"));
  spec.chunking = {16, 15};
  EXPECT_EQ(code(spec), absl::StatusCode::kOk);

  // The factory's own error passes through; a dimension mismatch is the caller's mistake.
  absl::Status unknown = store_->CreateCollection(Spec("p", "nosuch")).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("unknown embedding provider"));
  fail_factory_ = true;
  EXPECT_EQ(code(Spec("p")), absl::StatusCode::kUnavailable);
  fail_factory_ = false;
  absl::Status mismatch = store_->CreateCollection(Spec("w", "wrongdims", 32)).status();
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mismatch.message()), HasSubstr("33"));

  EXPECT_EQ(code(Spec("test8")), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<std::vector<CollectionInfo>> list = store_->ListCollections();
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, SizeIs(3));  // 128 n's, test8, chunks
}

TEST_F(RagStoreTest, RejectsInvalidDocumentsAndStoresNothing) {
  Open();
  ASSERT_TRUE(store_->CreateCollection(Spec("docs")).ok());
  const auto upsert = [&](std::vector<DocumentInput> documents) {
    std::vector<DocumentInput> batch = Inputs(Corpus());  // valid ones around the bad one
    for (DocumentInput& document : documents) batch.push_back(std::move(document));
    return store_->UpsertDocuments("docs", std::move(batch)).status();
  };
  struct Case {
    DocumentInput document;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"", "text", json::object()}, "id is empty"},
      {{std::string(257, 'i'), "text", json::object()}, "256 bytes"},
      {{"bad\xff", "text", json::object()}, "UTF-8"},
      {{"blank", " \n\t ", json::object()}, "'blank': text is empty"},
      {{"big", std::string(limits_.max_document_bytes + 1, 'x'), json::object()}, "'big'"},
      {{"latin1", "caf\xe9", json::object()}, "'latin1': text is not valid UTF-8"},
      {{"nested", "text", {{"a", {{"b", 1}}}}}, "metadata.a"},
      {{"deep", "text", {{"a", {json::array({1})}}}}, "metadata.a"},
      {{"scalar", "text", "just a string"}, "'scalar'"},
  };
  for (const Case& c : cases) {
    absl::Status status = upsert({c.document});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.expected));
  }
  std::vector<DocumentInput> too_many(limits_.max_documents_per_request + 1,
                                      DocumentInput{"same", "text", json::object()});
  EXPECT_EQ(store_->UpsertDocuments("docs", too_many).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Info("docs").document_count, 0);
  EXPECT_EQ(Info("docs").chunk_count, 0);
  EXPECT_THAT(Search("docs", "wing", QueryMode::kHybrid), IsEmpty());

  // Accepted edge cases: a 256-byte id, text at the limit, null metadata, an empty batch.
  absl::StatusOr<UpsertResult> ok = store_->UpsertDocuments(
      "docs", {{std::string(256, 'i'), std::string(limits_.max_document_bytes, 'x'), nullptr}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  absl::StatusOr<UpsertResult> empty = store_->UpsertDocuments("docs", {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->documents, 0);
  EXPECT_EQ(Info("docs").document_count, 1);
}

TEST_F(RagStoreTest, UpsertChunksReplacesAndKeepsFtsInSync) {
  Open();
  CollectionSpec spec = Spec("docs");
  spec.chunking = {16, 4};
  ASSERT_TRUE(store_->CreateCollection(spec).ok());
  std::string long_text;
  for (int i = 0; i < 40; ++i) {
    absl::StrAppend(&long_text, "Sentence number ", i, " talks about hypersonic flutter. ");
  }
  absl::StatusOr<UpsertResult> first = store_->UpsertDocuments(
      "docs", {{"long", long_text, {{"v", 1}}}, {"short", "Compressible vortex sheets.", {}}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->documents, 2);
  EXPECT_GT(first->chunks, 10);
  EXPECT_EQ(Info("docs").chunk_count, first->chunks);
  std::vector<QueryHit> hits = Search("docs", "hypersonic flutter", QueryMode::kLexical, 100);
  EXPECT_EQ(static_cast<int64_t>(hits.size()), first->chunks - 1);
  for (const QueryHit& hit : hits) {
    EXPECT_EQ(hit.document_id, "long");
    EXPECT_EQ(hit.metadata, json({{"v", 1}}));
    EXPECT_TRUE(absl::StrContains(hit.text, "hypersonic") || absl::StrContains(hit.text, "flutter"))
        << hit.text;
  }

  // Replacing by id drops the old chunks everywhere: counts, FTS and the vector index.
  absl::StatusOr<UpsertResult> second =
      store_->UpsertDocuments("docs", {{"long", "Now a short note on ablation.", {{"v", 2}}}});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->chunks, 1);
  EXPECT_EQ(Info("docs").document_count, 2);
  EXPECT_EQ(Info("docs").chunk_count, 2);
  EXPECT_EQ(FtsRows(CollectionId("docs")), 2);
  EXPECT_THAT(Search("docs", "hypersonic flutter", QueryMode::kLexical, 100), IsEmpty());
  hits = Search("docs", "ablation", QueryMode::kHybrid, 100);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].document_id, "long");
  EXPECT_EQ(hits[0].metadata, json({{"v", 2}}));
  // Exactly 2 hits at top_k 2 for the old text: none of its old vectors is left in the index.
  EXPECT_THAT(Search("docs", "hypersonic flutter sentence", QueryMode::kVector, 2), SizeIs(2));

  // Duplicate ids in one request: the last one wins.
  absl::StatusOr<UpsertResult> dup =
      store_->UpsertDocuments("docs", {{"d", "first version about pitot tubes", {}},
                                       {"d", "second version about shock tubes", {{"v", 3}}}});
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->documents, 1);
  EXPECT_THAT(Search("docs", "pitot", QueryMode::kLexical), IsEmpty());
  hits = Search("docs", "shock", QueryMode::kLexical);
  ASSERT_THAT(hits, SizeIs(1));
  EXPECT_EQ(hits[0].metadata, json({{"v", 3}}));
  EXPECT_EQ(Info("docs").document_count, 3);
}

TEST_F(RagStoreTest, DeleteDocument) {
  Open();
  CreateWithCorpus("docs");
  ASSERT_TRUE(store_->DeleteDocument("docs", "wing").ok());
  EXPECT_EQ(Info("docs").document_count, 4);
  EXPECT_EQ(Info("docs").chunk_count, 4);
  EXPECT_EQ(FtsRows(CollectionId("docs")), 4);
  for (QueryMode mode : kAllModes) {
    for (const std::string& id : DocIds(Search("docs", "swept wing slipstream", mode, 10))) {
      EXPECT_NE(id, "wing");
    }
  }
  // Exactly the 4 live chunks come back: no tombstoned entry takes a slot.
  EXPECT_THAT(Search("docs", Corpus()[0].text, QueryMode::kVector, 4), SizeIs(4));
  absl::Status missing = store_->DeleteDocument("docs", "wing");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("'wing'"));
  EXPECT_EQ(store_->DeleteDocument("nope", "heat").code(), absl::StatusCode::kNotFound);
}

TEST_F(RagStoreTest, EveryModeRanksTheObviousDocumentFirst) {
  Open();
  CreateWithCorpus("hash", "test");
  CreateWithCorpus("local", "local");
  for (const char* collection : {"hash", "local"}) {
    for (QueryMode mode : kAllModes) {
      SCOPED_TRACE(absl::StrCat(collection, " mode ", static_cast<int>(mode)));
      std::vector<QueryHit> hits = Search(collection, "swept wing in a slipstream", mode, 3);
      ASSERT_FALSE(hits.empty());
      EXPECT_EQ(hits[0].document_id, "wing");
      EXPECT_EQ(hits[0].metadata, Corpus()[0].metadata);
      EXPECT_EQ(hits[0].text, Corpus()[0].text);
      EXPECT_GT(hits[0].score, 0);
      for (size_t i = 1; i < hits.size(); ++i) EXPECT_GE(hits[i - 1].score, hits[i].score);
      hits = Search(collection, "thermal conductivity of composite slabs", mode, 3);
      ASSERT_FALSE(hits.empty());
      EXPECT_EQ(hits[0].document_id, "heat");
      hits = Search(collection, "sourdough bread recipe", mode, 1);
      ASSERT_THAT(hits, SizeIs(1));
      EXPECT_EQ(hits[0].document_id, "bread");
    }
  }
  // Scores: cosine for vector (at most 1), BM25 (positive) for lexical, RRF for hybrid.
  std::vector<QueryHit> vector = Search("hash", "swept wing", QueryMode::kVector, 1);
  ASSERT_THAT(vector, SizeIs(1));
  EXPECT_LE(vector[0].score, 1.0001);
  std::vector<QueryHit> hybrid = Search("hash", "swept wing", QueryMode::kHybrid, 1);
  ASSERT_THAT(hybrid, SizeIs(1));
  // A sum of weight / (k + rank) terms: at most (1 + 3) / (15 + 1) for a document first in both.
  EXPECT_GT(hybrid[0].score, 0);
  EXPECT_LE(hybrid[0].score, 4.0 / 16 + 1e-9);
}

TEST_F(RagStoreTest, CollectionsDoNotSeeEachOthersDocuments) {
  Open();
  CreateWithCorpus("one");
  ASSERT_TRUE(store_->CreateCollection(Spec("two")).ok());
  ASSERT_TRUE(store_->UpsertDocuments("two", {{"other", "a wing of a house", {}}}).ok());
  for (QueryMode mode : kAllModes) {
    EXPECT_THAT(DocIds(Search("two", "swept wing slipstream", mode, 10)), ElementsAre("other"));
  }
}

TEST_F(RagStoreTest, FiltersApplyBeforeRanking) {
  Open();
  CreateWithCorpus("docs");
  for (QueryMode mode : kAllModes) {
    SCOPED_TRACE(static_cast<int>(mode));
    // The best match overall ("wing") is excluded; the filtered set is ranked on its own.
    std::vector<QueryHit> hits =
        Search("docs", "swept wing slipstream boundary layer", mode, 10, {{"topic", "aero"}});
    EXPECT_THAT(DocIds(hits), ::testing::Contains("boundary"));
    for (const QueryHit& hit : hits) EXPECT_EQ(hit.metadata["topic"], "aero");
    hits = Search("docs", "swept wing", mode, 10, {{"topic", "thermal"}});
    for (const QueryHit& hit : hits) EXPECT_EQ(hit.document_id, "heat");
  }
  const auto ids = [&](json filter) {
    // Filtered vector queries over small sets are exact: every allowed document comes back.
    std::vector<std::string> found =
        DocIds(Search("docs", "wing heat boundary shells bread layer slabs buckling sourdough",
                      QueryMode::kVector, 10, std::move(filter)));
    std::sort(found.begin(), found.end());
    return found;
  };
  EXPECT_THAT(ids({{"topic", {{"$in", {"thermal", "cooking"}}}}}), ElementsAre("bread", "heat"));
  EXPECT_THAT(ids({{"topic", {{"$eq", "structures"}}}}), ElementsAre("shells"));
  EXPECT_THAT(ids({{"tags", "experiment"}}), ElementsAre("boundary", "wing"));  // array element
  EXPECT_THAT(ids({{"tags", {{"$in", {"theory", "wing"}}}}}), ElementsAre("heat", "wing"));
  EXPECT_THAT(ids({{"public", true}}), ElementsAre("bread", "wing"));
  EXPECT_THAT(ids({{"public", false}}), ElementsAre("heat"));
  EXPECT_THAT(ids({{"year", 1961}}), ElementsAre("boundary", "heat"));  // 1961 == 1961.0
  EXPECT_THAT(ids({{"year", "1961"}}), IsEmpty());                      // a string is not a number
  EXPECT_THAT(ids({{"note", nullptr}}), ElementsAre("boundary", "bread", "heat", "shells", "wing"));
  EXPECT_THAT(ids({{"public", nullptr}}), ElementsAre("boundary", "shells"));  // missing = null
  EXPECT_THAT(ids({{"topic", "aero"}, {"year", 1958}}), ElementsAre("wing"));
  EXPECT_THAT(ids({{"topic", {{"$in", json::array()}}}}), IsEmpty());
  EXPECT_THAT(ids({{"no such key", "x"}}), IsEmpty());
  EXPECT_THAT(ids(json::object()), SizeIs(5));

  for (const json& bad :
       {json{{"year", {{"$gt", 1960}}}}, json{{"$or", json::array()}}, json{{"tags", {"a", "b"}}},
        json{{"topic", {{"a", 1}}}}, json{{"topic", {{"$in", "aero"}}}},
        json{{"topic", {{"$in", {{1}}}}}}, json("topic"), json{{"k\"", 1}}}) {
    QueryRequest request = Request("wing", QueryMode::kHybrid, 5, bad);
    absl::Status status = QueryStatus("docs", request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.dump();
    EXPECT_THAT(std::string(status.message()), HasSubstr("filter")) << bad.dump();
  }
}

// Above max_exact_search_chunks a filtered vector query goes through HNSW with over-fetch.
TEST_F(RagStoreTest, LargeFilteredSetsUseTheIndexWithOverFetch) {
  limits_.max_exact_search_chunks = 0;
  Open();
  ASSERT_TRUE(store_->CreateCollection(Spec("docs", "test", 1024)).ok());
  std::vector<DocumentInput> docs;
  for (int i = 0; i < 60; ++i) {
    docs.push_back({absl::StrCat("d", i),
                    absl::StrCat("topic", i, " common words here"),
                    {{"i", i}, {"even", i % 2 == 0}}});
  }
  ASSERT_TRUE(store_->UpsertDocuments("docs", docs).ok());
  // One allowed document among 60: found although it is far from the query.
  std::vector<QueryHit> hits = Search("docs", "topic5", QueryMode::kVector, 5, {{"i", 42}});
  EXPECT_THAT(DocIds(hits), ElementsAre("d42"));
  // Four allowed: all of them, best first.
  hits = Search("docs", "topic7", QueryMode::kVector, 10, {{"i", {{"$in", {7, 8, 9, 10}}}}});
  ASSERT_THAT(hits, SizeIs(4));
  EXPECT_EQ(hits[0].document_id, "d7");
  // 30 allowed, top 5 wanted: 5 even documents, the queried one first.
  hits = Search("docs", "topic12", QueryMode::kVector, 5, {{"even", true}});
  ASSERT_THAT(hits, SizeIs(5));
  EXPECT_EQ(hits[0].document_id, "d12");
  for (const QueryHit& hit : hits) EXPECT_EQ(hit.metadata["even"], true);
  hits = Search("docs", "topic12", QueryMode::kHybrid, 5, {{"even", false}});
  ASSERT_THAT(hits, SizeIs(5));
  for (const QueryHit& hit : hits) EXPECT_EQ(hit.metadata["even"], false);
}

TEST_F(RagStoreTest, ValidatesQueries) {
  Open();
  CreateWithCorpus("docs");
  for (int top_k : {0, -1, limits_.max_top_k + 1}) {
    absl::Status status = QueryStatus("docs", Request("wing", QueryMode::kHybrid, top_k));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << top_k;
    EXPECT_THAT(std::string(status.message()), HasSubstr("top_k"));
  }
  EXPECT_THAT(Search("docs", "wing", QueryMode::kHybrid, limits_.max_top_k), SizeIs(5));
  EXPECT_THAT(Search("docs", "wing heat boundary shells bread", QueryMode::kVector, 2), SizeIs(2));
  EXPECT_EQ(QueryStatus("docs", Request("")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QueryStatus("docs", Request(" \n ")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QueryStatus("docs", Request(std::string(limits_.max_query_bytes + 1, 'q'))).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RagStoreTest, FtsHostileQueriesDoNotError) {
  Open();
  CreateWithCorpus("docs");
  for (const char* query : {"\"",
                            "wing\"",
                            "\"wing",
                            "*",
                            "wing*",
                            "NEAR(wing slipstream)",
                            "NEAR",
                            "AND",
                            "OR NOT",
                            "wing AND",
                            "(",
                            ")",
                            "(wing",
                            "text:wing",
                            "^wing",
                            "-wing",
                            "+",
                            "{text}: wing",
                            "wing OR",
                            "''; DROP TABLE rag_chunks; --",
                            "日本語のクエリ",
                            "café crème",
                            "wing\xff\xfe",
                            "\xe2\x80\x94",
                            "!!!",
                            "the of and",
                            "a",
                            "\x01\x02"}) {
    for (QueryMode mode : kAllModes) {
      QueryRequest request = Request(query, mode);
      absl::StatusOr<std::vector<QueryHit>> hits = store_->Query("docs", request);
      EXPECT_TRUE(hits.ok()) << query << ": " << hits.status();
    }
  }
  // A query of punctuation only has no tokens: no hits rather than an error.
  EXPECT_THAT(Search("docs", "!!! ()", QueryMode::kLexical), IsEmpty());
  // Operators typed by the user are words, not syntax.
  EXPECT_THAT(DocIds(Search("docs", "wing AND", QueryMode::kLexical, 1)), ElementsAre("wing"));
  EXPECT_THAT(DocIds(Search("docs", "NEAR(slipstream", QueryMode::kLexical, 1)),
              ElementsAre("wing"));
  EXPECT_EQ(Info("docs").document_count, 5);
}

TEST_F(RagStoreTest, ReopenFromSnapshotGivesSameResults) {
  Open();
  CreateWithCorpus("docs");
  const std::vector<QueryHit> before = Search("docs", "swept wing boundary", QueryMode::kVector, 5);
  ASSERT_TRUE(Snapshot());
  EXPECT_TRUE(fs::exists(SnapshotFile("docs")));
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 0);
  const std::vector<QueryHit> after = Search("docs", "swept wing boundary", QueryMode::kVector, 5);
  ASSERT_EQ(DocIds(after), DocIds(before));
  for (size_t i = 0; i < after.size(); ++i) EXPECT_NEAR(after[i].score, before[i].score, 1e-5);
  EXPECT_EQ(Info("docs").document_count, 5);
  // Nothing changed since: a second SnapshotAll leaves the file alone.
  const auto mtime = fs::last_write_time(SnapshotFile("docs"));
  ASSERT_TRUE(Snapshot());
  EXPECT_EQ(fs::last_write_time(SnapshotFile("docs")), mtime);
}

TEST_F(RagStoreTest, ReopenWithoutSnapshotRebuilds) {
  Open();
  CreateWithCorpus("docs");
  const std::vector<QueryHit> before = Search("docs", "swept wing boundary", QueryMode::kHybrid, 5);
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 1);
  EXPECT_EQ(DocIds(Search("docs", "swept wing boundary", QueryMode::kHybrid, 5)), DocIds(before));
}

TEST_F(RagStoreTest, CorruptOrTruncatedSnapshotRebuilds) {
  Open();
  CreateWithCorpus("docs");
  const std::vector<QueryHit> before = Search("docs", "swept wing boundary", QueryMode::kVector, 5);
  ASSERT_TRUE(Snapshot());
  store_.reset();
  const std::string path = SnapshotFile("docs");
  const auto size = fs::file_size(path);
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(size / 2));
    file.write("garbage!", 8);
  }
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 1);
  EXPECT_EQ(DocIds(Search("docs", "swept wing boundary", QueryMode::kVector, 5)), DocIds(before));

  // A new snapshot replaces the bad file; then truncate it, with its checksum recorded.
  ASSERT_TRUE(Snapshot());
  store_.reset();
  fs::resize_file(path, fs::file_size(path) / 3);
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 2);
  EXPECT_EQ(DocIds(Search("docs", "swept wing boundary", QueryMode::kVector, 5)), DocIds(before));
  ASSERT_TRUE(Snapshot());
  store_.reset();
  fs::remove(path);
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 3);
  EXPECT_EQ(DocIds(Search("docs", "swept wing boundary", QueryMode::kVector, 5)), DocIds(before));
}

TEST_F(RagStoreTest, DeletingACollectionRemovesItsSnapshotAndStaleFilesGoAtOpen) {
  Open();
  CreateWithCorpus("docs");
  ASSERT_TRUE(Snapshot());
  const std::string docs_snapshot = SnapshotFile("docs");
  ASSERT_TRUE(fs::exists(docs_snapshot));
  ASSERT_TRUE(store_->DeleteCollection("docs").ok());
  EXPECT_FALSE(fs::exists(docs_snapshot));

  CreateWithCorpus("kept");  // id 2
  ASSERT_TRUE(Snapshot());
  store_.reset();
  const fs::path indexes = fs::path(dir_) / "indexes";
  for (const char* name : {"1.hnsw", "99.hnsw", "2.hnsw.tmp.5f3a", "notes.txt", "x.hnsw"}) {
    std::ofstream(indexes / name) << "leftover";
  }
  Open();
  EXPECT_FALSE(fs::exists(indexes / "1.hnsw"));
  EXPECT_FALSE(fs::exists(indexes / "99.hnsw"));
  EXPECT_FALSE(fs::exists(indexes / "2.hnsw.tmp.5f3a"));
  EXPECT_TRUE(fs::exists(indexes / "notes.txt"));
  EXPECT_TRUE(fs::exists(indexes / "x.hnsw"));
  EXPECT_TRUE(fs::exists(indexes / "2.hnsw"));
  EXPECT_EQ(CountLogs("rebuilding"), 0);
  EXPECT_THAT(DocIds(Search("kept", "swept wing", QueryMode::kVector, 1)), ElementsAre("wing"));
}

TEST_F(RagStoreTest, StaleSnapshotIsCaughtUp) {
  Open();
  CreateWithCorpus("docs");
  ASSERT_TRUE(Snapshot());
  // After the snapshot: a new document, a replaced one and a deleted one.
  ASSERT_TRUE(
      store_
          ->UpsertDocuments(
              "docs", {{"new", "Hypersonic ablation of re-entry shields.", {{"topic", "aero"}}},
                       {"heat", "Radiative cooling of panels.", {}}})
          .ok());
  ASSERT_TRUE(store_->DeleteDocument("docs", "wing").ok());
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 0);  // the snapshot was used, then caught up
  EXPECT_EQ(Info("docs").document_count, 5);
  EXPECT_THAT(DocIds(Search("docs", "hypersonic ablation shields", QueryMode::kVector, 1)),
              ElementsAre("new"));
  EXPECT_THAT(DocIds(Search("docs", "radiative cooling panels", QueryMode::kVector, 1)),
              ElementsAre("heat"));
  // Exactly the live chunks come back, even for the texts of the replaced and deleted chunks:
  // their old vectors are no longer in the index.
  for (const std::string& query : {Corpus()[0].text, Corpus()[1].text}) {
    std::vector<QueryHit> hits = Search("docs", query, QueryMode::kVector, 5);
    EXPECT_THAT(hits, SizeIs(5)) << query;
    EXPECT_THAT(DocIds(hits), UnorderedElementsAre("heat", "boundary", "shells", "bread", "new"));
  }
  // A second round: snapshot (pruning the deletion log), more changes, reopen.
  ASSERT_TRUE(Snapshot());
  ASSERT_TRUE(store_->DeleteDocument("docs", "bread").ok());
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 0);
  EXPECT_THAT(Search("docs", Corpus()[4].text, QueryMode::kVector, 4), SizeIs(4));
  EXPECT_THAT(DocIds(Search("docs", "sourdough bread", QueryMode::kHybrid, 4)),
              ::testing::Not(::testing::Contains("bread")));
}

TEST_F(RagStoreTest, CompactionAfterManyDeletionsKeepsResults) {
  Open();
  // Wide vectors: 40 distinct "topicN" words must not share hash slots.
  ASSERT_TRUE(store_->CreateCollection(Spec("docs", "test", 1024)).ok());
  std::vector<DocumentInput> docs;
  for (int i = 0; i < 40; ++i) {
    docs.push_back(
        {absl::StrCat("d", i), absl::StrCat("topic", i, " word", i % 7, " common"), {{"i", i}}});
  }
  ASSERT_TRUE(store_->UpsertDocuments("docs", docs).ok());
  ASSERT_TRUE(Snapshot());
  absl::StatusOr<int> none = store_->CompactIndexes();
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
  for (int i = 0; i < 12; ++i) {  // 30%: past the 25% threshold
    ASSERT_TRUE(store_->DeleteDocument("docs", absl::StrCat("d", i)).ok());
  }
  absl::StatusOr<int> compacted = store_->CompactIndexes();
  ASSERT_TRUE(compacted.ok()) << compacted.status();
  EXPECT_EQ(*compacted, 1);
  compacted = store_->CompactIndexes();
  ASSERT_TRUE(compacted.ok());
  EXPECT_EQ(*compacted, 0);
  for (int i = 12; i < 40; ++i) {
    EXPECT_THAT(DocIds(Search("docs", absl::StrCat("topic", i), QueryMode::kVector, 1)),
                ElementsAre(absl::StrCat("d", i)));
  }
  EXPECT_THAT(Search("docs", "common", QueryMode::kVector, 28), SizeIs(28));
  // The compacted index is snapshotted again and survives a restart with later changes.
  ASSERT_TRUE(Snapshot());
  ASSERT_TRUE(store_->DeleteDocument("docs", "d12").ok());
  Open();
  EXPECT_EQ(CountLogs("rebuilding"), 0);
  EXPECT_THAT(Search("docs", "common", QueryMode::kVector, 27), SizeIs(27));
  EXPECT_EQ(Info("docs").document_count, 27);
}

TEST_F(RagStoreTest, FailingEmbedderStoresNothing) {
  Open();
  ASSERT_TRUE(store_->CreateCollection(Spec("docs")).ok());
  control_.fail = true;
  absl::Status status = store_->UpsertDocuments("docs", Inputs(Corpus())).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("embedding provider is down"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("'docs'"));
  EXPECT_EQ(Info("docs").document_count, 0);
  EXPECT_THAT(Search("docs", "wing", QueryMode::kLexical), IsEmpty());
  EXPECT_EQ(QueryStatus("docs", Request("wing", QueryMode::kVector)).code(),
            absl::StatusCode::kUnavailable);
  control_.fail = false;
  ASSERT_TRUE(store_->UpsertDocuments("docs", Inputs(Corpus())).ok());
  EXPECT_EQ(Info("docs").document_count, 5);
}

TEST_F(RagStoreTest, EmbedderUnavailableAtOpenLeavesLexicalWorking) {
  Open();
  CreateWithCorpus("docs");
  fail_factory_ = true;
  Open();
  EXPECT_GE(CountLogs("embedder unavailable"), 1);
  EXPECT_THAT(DocIds(Search("docs", "swept wing", QueryMode::kLexical, 1)), ElementsAre("wing"));
  EXPECT_EQ(QueryStatus("docs", Request("wing", QueryMode::kHybrid)).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(store_->UpsertDocuments("docs", {{"x", "text", {}}}).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(store_->DeleteDocument("docs", "wing").ok());
  EXPECT_EQ(Info("docs").document_count, 4);
}

TEST_F(RagStoreTest, ConcurrentQueriesWithOneWriter) {
  Open();
  CreateWithCorpus("docs");
  ASSERT_TRUE(store_->CreateCollection(Spec("churn")).ok());
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      int i = 0;
      while (!done.load() || i < 20) {
        const QueryMode mode = kAllModes[(i + t) % 3];
        QueryRequest request = Request(absl::StrCat("wing note", i % 10), mode, 10);
        if (i % 4 == 0) request.filter = {{"batch", {{"$in", {0, 1, 2}}}}};
        absl::StatusOr<std::vector<QueryHit>> hits = store_->Query("docs", request);
        if (!hits.ok()) ++failures;
        // A collection being deleted and re-created: OK or NotFound, never a crash.
        absl::StatusOr<std::vector<QueryHit>> churn = store_->Query("churn", request);
        if (!churn.ok() && churn.status().code() != absl::StatusCode::kNotFound) ++failures;
        ++i;
      }
    });
  }
  std::thread writer([&] {
    for (int i = 0; i < 30; ++i) {
      if (!store_
               ->UpsertDocuments("docs", {{absl::StrCat("n", i),
                                           absl::StrCat("note", i % 10, " on wings"),
                                           {{"batch", i % 5}}}})
               .ok()) {
        ++failures;
      }
      if (i % 3 == 2 && !store_->DeleteDocument("docs", absl::StrCat("n", i - 1)).ok()) {
        ++failures;
      }
      if (i % 10 == 9) {
        if (!store_->DeleteCollection("churn").ok()) ++failures;
        if (!store_->CreateCollection(Spec("churn")).ok()) ++failures;
        if (!store_->UpsertDocuments("churn", {{"c", "wing note", {}}}).ok()) ++failures;
      }
      if (i == 15 && !store_->SnapshotAll().ok()) ++failures;
    }
    done = true;
  });
  writer.join();
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(failures.load(), 0);
  // 5 + 30 upserted - 10 deleted.
  EXPECT_EQ(Info("docs").document_count, 25);
  EXPECT_EQ(Info("docs").chunk_count, 25);
  EXPECT_EQ(FtsRows(CollectionId("docs")), 25);
  EXPECT_THAT(Search("docs", "note on wings", QueryMode::kVector, 25), SizeIs(25));
  Open();
  // "churn" was re-created after the last snapshot and is rebuilt; "docs" is caught up.
  EXPECT_EQ(CountLogs("'docs': rebuilding"), 0);
  EXPECT_THAT(Search("docs", "note on wings", QueryMode::kVector, 25), SizeIs(25));
}

}  // namespace
}  // namespace ailb::rag
