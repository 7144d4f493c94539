#include "ailb/rag/rag_store.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/common/utf8.h"
#include "ailb/rag/chunker.h"
#include "ailb/rag/vector_index.h"
#include "ailb/storage/sqlite.h"
#include "rag/fts_query.h"
#include "rag/fusion.h"
#include "rag/metadata_filter.h"
#include "spdlog/spdlog.h"

namespace ailb::rag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using storage::Database;
using storage::Statement;
using storage::Transaction;

// Vectors are stored as raw float32 in host order; every supported target is little-endian, and
// pinning that keeps the files portable between them.
static_assert(std::endian::native == std::endian::little,
              "rag_chunks.vector holds little-endian float32");

// The store's tables. Chunk ids are hnswlib labels, so AUTOINCREMENT: a reused id would let a
// deletion logged for an old chunk remove a new one during catch-up.
// rag_chunks_fts is a contentless FTS5 index (the text lives once, in rag_chunks) with rowid =
// chunk id, kept in sync by triggers, which also fire for rows removed by ON DELETE CASCADE, so
// no code path can forget it. Its second column holds one token naming the chunk's collection
// ("c<id>"): a query scopes itself with `collection : "c7" AND text : (...)` inside the FTS
// index, instead of reading every matching rag_chunks row (vector blobs included) to check its
// collection_id, which made lexical queries ~30x slower.
constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS rag_collections (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT UNIQUE NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  dimensions INTEGER NOT NULL,
  max_tokens INTEGER NOT NULL,
  overlap INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  change_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rag_documents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  collection_id INTEGER NOT NULL REFERENCES rag_collections(id) ON DELETE CASCADE,
  doc_id TEXT NOT NULL,
  metadata TEXT NOT NULL DEFAULT '{}',
  updated_at INTEGER NOT NULL,
  UNIQUE (collection_id, doc_id));
CREATE TABLE IF NOT EXISTS rag_chunks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  collection_id INTEGER NOT NULL REFERENCES rag_collections(id) ON DELETE CASCADE,
  document_id INTEGER NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL,
  text TEXT NOT NULL,
  vector BLOB NOT NULL,
  seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rag_chunks_by_document ON rag_chunks(document_id);
CREATE INDEX IF NOT EXISTS rag_chunks_by_seq ON rag_chunks(collection_id, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS rag_chunks_fts USING fts5(
  text, collection, content='', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS rag_chunks_fts_insert AFTER INSERT ON rag_chunks BEGIN
  INSERT INTO rag_chunks_fts(rowid, text, collection)
    VALUES (new.id, new.text, 'c' || new.collection_id);
END;
CREATE TRIGGER IF NOT EXISTS rag_chunks_fts_delete AFTER DELETE ON rag_chunks BEGIN
  INSERT INTO rag_chunks_fts(rag_chunks_fts, rowid, text, collection)
    VALUES ('delete', old.id, old.text, 'c' || old.collection_id);
END;
CREATE TRIGGER IF NOT EXISTS rag_chunks_fts_update AFTER UPDATE OF text ON rag_chunks BEGIN
  INSERT INTO rag_chunks_fts(rag_chunks_fts, rowid, text, collection)
    VALUES ('delete', old.id, old.text, 'c' || old.collection_id);
  INSERT INTO rag_chunks_fts(rowid, text, collection)
    VALUES (new.id, new.text, 'c' || new.collection_id);
END;
CREATE TABLE IF NOT EXISTS rag_deleted_chunks (
  collection_id INTEGER NOT NULL REFERENCES rag_collections(id) ON DELETE CASCADE,
  chunk_id INTEGER NOT NULL,
  seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rag_deleted_chunks_by_seq ON rag_deleted_chunks(collection_id, seq);
CREATE TABLE IF NOT EXISTS rag_index_snapshots (
  collection_id INTEGER PRIMARY KEY REFERENCES rag_collections(id) ON DELETE CASCADE,
  checksum TEXT NOT NULL,
  seq INTEGER NOT NULL);
)sql";

// Reciprocal rank fusion constant (Cormack et al.) and per-list weights for hybrid queries.
// With the built-in hashing embedder, BM25 is much the stronger ranker (Cranfield dev nDCG@10,
// default 256/32 chunking: lexical 0.357, vector 0.283), and fusing with equal weights and the
// textbook k=60 lets the weaker list dilute BM25's top ranks (0.346, below BM25 alone). Weighting
// BM25 three times and a smaller k keep its top ranks on top while documents both lists agree on,
// or that share meaning but not words with the query, still rise: 0.359 (0.361 with 512-token
// chunks). Measured with scripts/cranfield_eval.py over k in {10, 15, 20, 60} and weights 2-3;
// the curve is flat between k 10 and 20.
constexpr double kRrfK = 15;
constexpr double kVectorWeight = 1.0;
constexpr double kLexicalWeight = 3.0;
// Idle reader connections kept for reuse; more are opened under load and closed when returned.
constexpr size_t kMaxIdleReaders = 8;

absl::Status WithContext(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(ToAbsl(context), ": ", status.message()));
  status.ForEachPayload([&annotated](absl::string_view url, const absl::Cord& payload) {
    annotated.SetPayload(url, payload);
  });
  return annotated;
}

absl::Status CollectionNotFound(std::string_view name) {
  return absl::NotFoundError(absl::StrCat("collection '", ToAbsl(name), "' does not exist"));
}

// A document id as quoted in error messages: long ids are cut so messages stay readable.
std::string QuoteId(std::string_view id) {
  constexpr size_t kShown = 64;
  if (id.size() <= kShown) return absl::StrCat("'", ToAbsl(id), "'");
  size_t cut = kShown;
  while (cut > 0 && (static_cast<unsigned char>(id[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat("'", ToAbsl(id.substr(0, cut)), "...'");
}

std::string_view VectorBytes(const Vector& vector) {
  return std::string_view(reinterpret_cast<const char*>(vector.data()),
                          vector.size() * sizeof(float));
}

// Appends the floats of a stored vector to `out`; false when the blob has the wrong size.
bool AppendVector(std::string_view blob, int dimensions, std::vector<float>& out) {
  if (blob.size() != static_cast<size_t>(dimensions) * sizeof(float)) return false;
  const size_t at = out.size();
  out.resize(at + static_cast<size_t>(dimensions));
  std::memcpy(out.data() + at, blob.data(), blob.size());
  return true;
}

bool IsZero(std::span<const float> vector) {
  return std::all_of(vector.begin(), vector.end(), [](float x) { return x == 0.0f; });
}

// A deferred read transaction: every statement inside sees the same committed state, so an
// index rebuild pairs its vectors with the exact change_seq they reflect, and a query's filter,
// ranking and row fetches agree. Statements must be destroyed before it (declare it first).
class ReadTransaction {
 public:
  static absl::StatusOr<ReadTransaction> Begin(Database& db) {
    AILB_RETURN_IF_ERROR(db.Exec("BEGIN"));
    return ReadTransaction(&db);
  }
  ReadTransaction(ReadTransaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  ReadTransaction& operator=(ReadTransaction&&) = delete;
  ~ReadTransaction() {
    if (db_ == nullptr) return;
    // Nothing was written: ending a read transaction cannot lose anything, and a failure leaves
    // the connection usable for the next BEGIN (which would report it).
    absl::Status ignored = db_->Exec("ROLLBACK");
    (void)ignored;
  }

 private:
  explicit ReadTransaction(Database* db) : db_(db) {}
  Database* db_;
};

// One collection's in-memory state. The spec, id and embedder never change after construction;
// the index and the sequence it reflects change together under `mu`.
struct CollectionState {
  int64_t id = 0;
  CollectionSpec spec;
  int64_t created_at = 0;
  // Null when the embedder factory failed at Open (e.g. a provider no longer configured): the
  // collection still answers lexical queries, and vector work reports `embedder_error`.
  std::unique_ptr<Embedder> embedder;
  absl::Status embedder_error;

  // Queries hold it shared while they search; writers exclusive while they apply a committed
  // change; snapshots shared while they save, so the file matches `applied_seq`.
  mutable std::shared_mutex mu;
  std::unique_ptr<VectorIndex> index ABSL_GUARDED_BY(mu);
  // The change_seq of the last committed write that `index` reflects.
  int64_t applied_seq ABSL_GUARDED_BY(mu) = 0;
  // Set when applying a committed write to the index failed: the index no longer matches SQLite,
  // so it is not snapshotted and the next CompactIndexes rebuilds it.
  bool index_stale ABSL_GUARDED_BY(mu) = false;
  // The seq of the snapshot on disk (-1: none, or not worth keeping). Touched only at Open and
  // under RagStoreImpl::maintenance_mu_.
  int64_t snapshot_seq = -1;
};

struct ScoredChunk {
  int64_t chunk_id = 0;
  double score = 0;
};

absl::Status ValidateSpec(const CollectionSpec& spec) {
  if (spec.name.empty() || spec.name.size() > 128 ||
      !std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
               c == '-';
      })) {
    return InvalidFieldError(
        "name", "collection name must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '.', '-'");
  }
  const int min_dimensions = spec.embedding.provider == "local" ? 16 : 1;
  if (spec.embedding.dimensions < min_dimensions || spec.embedding.dimensions > 8192) {
    return InvalidFieldError(
        "embedding.dimensions",
        absl::StrCat("embedding.dimensions must be in [", min_dimensions, ", 8192] for provider '",
                     spec.embedding.provider, "', got ", spec.embedding.dimensions));
  }
  if (spec.chunking.max_tokens < 16 || spec.chunking.max_tokens > 8192) {
    return InvalidFieldError(
        "chunking.max_tokens",
        absl::StrCat("chunking.max_tokens must be in [16, 8192], got ", spec.chunking.max_tokens));
  }
  if (spec.chunking.overlap < 0 || spec.chunking.overlap >= spec.chunking.max_tokens) {
    return InvalidFieldError(
        "chunking.overlap",
        absl::StrCat("chunking.overlap must be in [0, max_tokens), got ", spec.chunking.overlap));
  }
  return absl::OkStatus();
}

absl::Status ValidateDocument(size_t index, const DocumentInput& document,
                              const RagLimits& limits) {
  const std::string where = absl::StrCat("documents[", index, "]");
  if (document.id.empty()) {
    return InvalidFieldError(absl::StrCat(where, ".id"), absl::StrCat(where, ": id is empty"));
  }
  if (document.id.size() > 256 || !IsValidUtf8(document.id)) {
    return InvalidFieldError(absl::StrCat(where, ".id"),
                             absl::StrCat(where, ": id must be valid UTF-8 of at most 256 bytes"));
  }
  const std::string who = absl::StrCat("document ", QuoteId(document.id));
  if (document.text.size() > limits.max_document_bytes) {
    return InvalidFieldError(
        absl::StrCat(where, ".text"),
        absl::StrCat(who, ": text is ", document.text.size(), " bytes, more than the limit of ",
                     limits.max_document_bytes));
  }
  if (absl::StripAsciiWhitespace(ToAbsl(document.text)).empty()) {
    return InvalidFieldError(absl::StrCat(where, ".text"), absl::StrCat(who, ": text is empty"));
  }
  if (!IsValidUtf8(document.text)) {
    return InvalidFieldError(absl::StrCat(where, ".text"),
                             absl::StrCat(who, ": text is not valid UTF-8"));
  }
  if (absl::Status status = ValidateMetadata(document.metadata); !status.ok()) {
    return InvalidFieldError(absl::StrCat(where, ".", ErrorParamOf(status)),
                             absl::StrCat(who, ": ", status.message()));
  }
  return absl::OkStatus();
}

// Thread-safe. SQLite is the truth and every write is one transaction on the writer connection;
// each collection's index is a cache of its vectors, updated after commit under the collection's
// exclusive lock and read under its shared lock, so queries on a collection run in parallel
// with each other (each on a pooled reader connection) and wait only for index updates.
class RagStoreImpl final : public RagStore {
 public:
  RagStoreImpl(std::string data_dir, EmbedderFactory embedders, const Clock& clock,
               RagLimits limits, std::unique_ptr<Database> writer)
      : data_dir_(std::move(data_dir)),
        embedders_(std::move(embedders)),
        clock_(clock),
        limits_(limits),
        writer_(std::move(writer)) {}

  ~RagStoreImpl() override = default;

  // Loads every collection and its index. Called once by Open, before the store is shared.
  absl::Status LoadCollections();
  // Removes snapshot files no collection owns (a crash between DeleteCollection's commit and its
  // unlink) and temporary files of interrupted saves. Called once by Open, after LoadCollections.
  void RemoveStaleSnapshotFiles();

  absl::StatusOr<CollectionInfo> CreateCollection(const CollectionSpec& spec) override;
  absl::StatusOr<std::vector<CollectionInfo>> ListCollections() override;
  absl::StatusOr<CollectionInfo> GetCollection(const std::string& name) override;
  absl::Status DeleteCollection(const std::string& name) override;
  absl::StatusOr<UpsertResult> UpsertDocuments(const std::string& collection,
                                               std::vector<DocumentInput> documents) override;
  absl::Status DeleteDocument(const std::string& collection,
                              const std::string& document_id) override;
  absl::StatusOr<std::vector<QueryHit>> Query(const std::string& collection,
                                              const QueryRequest& request) override;
  absl::Status SnapshotAll() override;
  absl::StatusOr<int> CompactIndexes() override;

 private:
  // Returns reader connections to the pool.
  struct ReaderReturner {
    RagStoreImpl* store;
    void operator()(Database* db) const { store->ReturnReader(db); }
  };
  using Reader = std::unique_ptr<Database, ReaderReturner>;

  // A connection for reads. WAL lets readers run beside the writer and each other, so queries
  // do not queue behind one connection's mutex.
  absl::StatusOr<Reader> AcquireReader();
  void ReturnReader(Database* db);

  std::shared_ptr<CollectionState> Find(const std::string& name);
  absl::StatusOr<std::shared_ptr<CollectionState>> FindOrNotFound(const std::string& name);
  std::vector<std::shared_ptr<CollectionState>> AllCollections();
  std::string SnapshotPath(int64_t collection_id) const;
  CollectionInfo InfoOf(const CollectionState& state, int64_t documents, int64_t chunks) const;

  // A fresh index holding every chunk vector of the collection, and the change_seq it reflects.
  absl::StatusOr<std::unique_ptr<VectorIndex>> BuildIndex(Database& db,
                                                          const CollectionState& state,
                                                          int64_t& built_seq);
  // Applies the changes committed after `after_seq` (deletions first) to `index`.
  absl::Status CatchUp(Database& db, const CollectionState& state, int64_t after_seq,
                       VectorIndex& index);
  // Applies one committed write to the in-memory index.
  void ApplyToIndex(CollectionState& state, int64_t seq, const std::vector<uint64_t>& removed,
                    const std::vector<std::pair<uint64_t, const Vector*>>& added);
  // Increments the collection's change_seq inside the caller's transaction; NotFound when the
  // collection was deleted meanwhile.
  absl::StatusOr<int64_t> BumpChangeSeq(Database& db, const CollectionState& state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);

  absl::StatusOr<std::vector<ScoredChunk>> VectorSearch(CollectionState& state, Database& db,
                                                        const std::string& query,
                                                        const CompiledFilter& filter, size_t depth);
  absl::StatusOr<std::vector<ScoredChunk>> LexicalSearch(const CollectionState& state, Database& db,
                                                         const std::string& query,
                                                         const CompiledFilter& filter,
                                                         size_t depth);

  const std::string data_dir_;
  const EmbedderFactory embedders_;
  const Clock& clock_;
  const RagLimits limits_;

  // Lock order: maintenance_mu_ → writer_mu_ → collections_mu_ → CollectionState::mu.
  // readers_mu_ is a leaf.

  // Serialises SnapshotAll, CompactIndexes and DeleteCollection: snapshot files and the
  // deletion log are only rewritten by one of them at a time.
  std::mutex maintenance_mu_;

  // The one connection that writes. Held from a write's BEGIN until its change is applied to the
  // in-memory index, so indexes apply committed writes in commit order.
  std::mutex writer_mu_;
  std::unique_ptr<Database> writer_ ABSL_GUARDED_BY(writer_mu_);

  std::mutex collections_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<CollectionState>> collections_
      ABSL_GUARDED_BY(collections_mu_);

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Database>> idle_readers_ ABSL_GUARDED_BY(readers_mu_);
};

absl::StatusOr<RagStoreImpl::Reader> RagStoreImpl::AcquireReader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      Database* db = idle_readers_.back().release();
      idle_readers_.pop_back();
      return Reader(db, ReaderReturner{this});
    }
  }
  storage::DatabaseOptions options;
  options.synchronous_full = true;
  absl::StatusOr<std::unique_ptr<Database>> db =
      Database::Open((fs::path(data_dir_) / "ailb.db").string(), options);
  if (!db.ok()) return WithContext(db.status(), "rag: opening a reader connection");
  return Reader(db->release(), ReaderReturner{this});
}

void RagStoreImpl::ReturnReader(Database* db) {
  std::unique_ptr<Database> owned(db);
  std::lock_guard lock(readers_mu_);
  if (idle_readers_.size() < kMaxIdleReaders) idle_readers_.push_back(std::move(owned));
}

std::shared_ptr<CollectionState> RagStoreImpl::Find(const std::string& name) {
  std::lock_guard lock(collections_mu_);
  auto it = collections_.find(name);
  return it == collections_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<CollectionState>> RagStoreImpl::FindOrNotFound(
    const std::string& name) {
  std::shared_ptr<CollectionState> state = Find(name);
  if (state == nullptr) return CollectionNotFound(name);
  return state;
}

std::vector<std::shared_ptr<CollectionState>> RagStoreImpl::AllCollections() {
  std::vector<std::shared_ptr<CollectionState>> states;
  {
    std::lock_guard lock(collections_mu_);
    for (const auto& [name, state] : collections_) states.push_back(state);
  }
  std::sort(states.begin(), states.end(),
            [](const auto& a, const auto& b) { return a->spec.name < b->spec.name; });
  return states;
}

std::string RagStoreImpl::SnapshotPath(int64_t collection_id) const {
  return (fs::path(data_dir_) / "indexes" / absl::StrCat(collection_id, ".hnsw")).string();
}

CollectionInfo RagStoreImpl::InfoOf(const CollectionState& state, int64_t documents,
                                    int64_t chunks) const {
  CollectionInfo info;
  info.spec = state.spec;
  info.document_count = documents;
  info.chunk_count = chunks;
  info.created_at = state.created_at;
  return info;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> RagStoreImpl::BuildIndex(Database& db,
                                                                      const CollectionState& state,
                                                                      int64_t& built_seq) {
  AILB_ASSIGN_OR_RETURN(ReadTransaction consistent_view, ReadTransaction::Begin(db));
  AILB_ASSIGN_OR_RETURN(Statement head,
                        db.Prepare("SELECT change_seq, (SELECT count(*) FROM rag_chunks WHERE "
                                   "collection_id = ?1) FROM rag_collections WHERE id = ?1"));
  head.Bind(1, state.id);
  AILB_ASSIGN_OR_RETURN(bool found, head.Step());
  if (!found) return CollectionNotFound(state.spec.name);
  built_seq = head.ColumnInt(0);
  HnswOptions options;
  // Sized up front: growing an HNSW index copies it.
  options.max_elements =
      std::max<size_t>(options.max_elements, static_cast<size_t>(head.ColumnInt(1)) + 64);
  AILB_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> index,
                        VectorIndex::Create(state.spec.embedding.dimensions, options));
  AILB_ASSIGN_OR_RETURN(Statement chunks,
                        db.Prepare("SELECT id, vector FROM rag_chunks WHERE collection_id = ? "
                                   "ORDER BY id"));
  chunks.Bind(1, state.id);
  std::vector<float> vector;
  for (;;) {
    AILB_ASSIGN_OR_RETURN(bool row, chunks.Step());
    if (!row) break;
    vector.clear();
    if (!AppendVector(chunks.ColumnBlob(1), state.spec.embedding.dimensions, vector)) {
      // One damaged row should not take the collection down: it stays reachable lexically.
      spdlog::error(
          "rag: collection '{}': chunk {} has a vector of {} bytes, expected {}; it is "
          "left out of the vector index",
          state.spec.name, chunks.ColumnInt(0), chunks.ColumnBlob(1).size(),
          state.spec.embedding.dimensions * sizeof(float));
      continue;
    }
    AILB_RETURN_IF_ERROR(index->Add(static_cast<uint64_t>(chunks.ColumnInt(0)), vector));
  }
  return index;
}

absl::Status RagStoreImpl::CatchUp(Database& db, const CollectionState& state, int64_t after_seq,
                                   VectorIndex& index) {
  // Deletions first: a chunk added after the snapshot and deleted again must end up absent.
  AILB_ASSIGN_OR_RETURN(
      Statement deleted,
      db.Prepare("SELECT chunk_id FROM rag_deleted_chunks WHERE collection_id = ? "
                 "AND seq > ?"));
  deleted.Bind(1, state.id).Bind(2, after_seq);
  for (;;) {
    AILB_ASSIGN_OR_RETURN(bool row, deleted.Step());
    if (!row) break;
    index.Remove(static_cast<uint64_t>(deleted.ColumnInt(0)));
  }
  AILB_ASSIGN_OR_RETURN(Statement added,
                        db.Prepare("SELECT id, vector FROM rag_chunks WHERE collection_id = ? AND "
                                   "seq > ? ORDER BY id"));
  added.Bind(1, state.id).Bind(2, after_seq);
  std::vector<float> vector;
  for (;;) {
    AILB_ASSIGN_OR_RETURN(bool row, added.Step());
    if (!row) break;
    vector.clear();
    if (!AppendVector(added.ColumnBlob(1), state.spec.embedding.dimensions, vector)) {
      return absl::DataLossError(
          absl::StrCat("chunk ", added.ColumnInt(0), " has a vector of the wrong size"));
    }
    AILB_RETURN_IF_ERROR(index.Add(static_cast<uint64_t>(added.ColumnInt(0)), vector));
  }
  return absl::OkStatus();
}

absl::Status RagStoreImpl::LoadCollections() {
  std::lock_guard writer(writer_mu_);
  struct Row {
    std::shared_ptr<CollectionState> state;
    int64_t change_seq = 0;
    bool has_snapshot = false;
    std::string checksum;
    int64_t snapshot_seq = 0;
    int64_t chunk_count = 0;
  };
  std::vector<Row> rows;
  {
    AILB_ASSIGN_OR_RETURN(
        Statement select,
        writer_->Prepare(
            "SELECT c.id, c.name, c.provider, c.model, c.dimensions, c.max_tokens, c.overlap, "
            "c.created_at, c.change_seq, s.checksum, s.seq, "
            "(SELECT count(*) FROM rag_chunks k WHERE k.collection_id = c.id) "
            "FROM rag_collections c LEFT JOIN rag_index_snapshots s ON s.collection_id = c.id "
            "ORDER BY c.id"));
    for (;;) {
      AILB_ASSIGN_OR_RETURN(bool found, select.Step());
      if (!found) break;
      Row row;
      row.state = std::make_shared<CollectionState>();
      CollectionState& state = *row.state;
      state.id = select.ColumnInt(0);
      state.spec.name = select.ColumnText(1);
      state.spec.embedding.provider = select.ColumnText(2);
      state.spec.embedding.model = select.ColumnText(3);
      state.spec.embedding.dimensions = static_cast<int>(select.ColumnInt(4));
      state.spec.chunking.max_tokens = static_cast<int>(select.ColumnInt(5));
      state.spec.chunking.overlap = static_cast<int>(select.ColumnInt(6));
      state.created_at = select.ColumnInt(7);
      row.change_seq = select.ColumnInt(8);
      row.has_snapshot = !select.ColumnIsNull(9);
      row.checksum = select.ColumnText(9);
      row.snapshot_seq = select.ColumnInt(10);
      row.chunk_count = select.ColumnInt(11);
      rows.push_back(std::move(row));
    }
  }

  for (Row& row : rows) {
    CollectionState& state = *row.state;
    const std::string& name = state.spec.name;
    absl::StatusOr<std::unique_ptr<Embedder>> embedder = embedders_(state.spec.embedding);
    if (!embedder.ok()) {
      state.embedder_error = WithContext(
          embedder.status(), absl::StrCat("collection '", name, "': embedder unavailable"));
    } else if (*embedder == nullptr ||
               (*embedder)->dimensions() != state.spec.embedding.dimensions) {
      state.embedder_error = absl::FailedPreconditionError(
          absl::StrCat("collection '", name, "': the embedder no longer produces ",
                       state.spec.embedding.dimensions, "-dimensional vectors"));
    } else {
      state.embedder = std::move(*embedder);
    }
    if (!state.embedder_error.ok()) {
      spdlog::error("rag: {} (lexical queries still work)", state.embedder_error.message());
    }

    // The snapshot is a cache: it is used only when it is exactly the file recorded, and it
    // cannot be ahead of the database it was taken from.
    std::unique_ptr<VectorIndex> index;
    std::string reason = "no snapshot";
    if (row.has_snapshot) {
      const std::string path = SnapshotPath(state.id);
      absl::StatusOr<std::string> checksum = FileChecksum(path);
      if (!checksum.ok()) {
        reason = std::string(checksum.status().message());
      } else if (*checksum != row.checksum) {
        reason = absl::StrCat("snapshot checksum ", *checksum, " does not match the recorded ",
                              row.checksum);
      } else if (row.snapshot_seq > row.change_seq) {
        reason = absl::StrCat("snapshot seq ", row.snapshot_seq, " is ahead of the database (",
                              row.change_seq, ")");
      } else {
        absl::StatusOr<std::unique_ptr<VectorIndex>> loaded =
            VectorIndex::Load(path, state.spec.embedding.dimensions);
        if (!loaded.ok()) {
          reason = std::string(loaded.status().message());
        } else if (absl::Status caught_up = CatchUp(*writer_, state, row.snapshot_seq, **loaded);
                   !caught_up.ok()) {
          reason = absl::StrCat("catching up the snapshot failed: ", caught_up.message());
        } else {
          index = std::move(*loaded);
          state.snapshot_seq = row.snapshot_seq;
        }
      }
    }
    int64_t applied_seq = row.change_seq;
    if (index == nullptr) {
      if (row.has_snapshot || row.chunk_count > 0) {
        spdlog::warn("rag: collection '{}': rebuilding its vector index from {} stored chunks ({})",
                     name, row.chunk_count, reason);
      }
      AILB_ASSIGN_OR_RETURN(index, BuildIndex(*writer_, state, applied_seq));
    }
    std::unique_lock lock(state.mu);
    state.index = std::move(index);
    state.applied_seq = applied_seq;
  }

  std::lock_guard lock(collections_mu_);
  for (Row& row : rows) collections_[row.state->spec.name] = std::move(row.state);
  return absl::OkStatus();
}

void RagStoreImpl::RemoveStaleSnapshotFiles() {
  absl::flat_hash_set<std::string> owned;
  for (const std::shared_ptr<CollectionState>& state : AllCollections()) {
    owned.insert(fs::path(SnapshotPath(state->id)).filename().string());
  }
  std::error_code error;
  for (fs::directory_iterator it(fs::path(data_dir_) / "indexes", error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    // Only names this store writes: "<id>.hnsw" and Save's "<id>.hnsw.tmp.<suffix>".
    const size_t digits = name.find_first_not_of("0123456789");
    if (digits == 0 || digits == std::string::npos) continue;
    const std::string_view rest = std::string_view(name).substr(digits);
    const bool temporary = rest.starts_with(".hnsw.tmp.");
    if (rest != ".hnsw" && !temporary) continue;
    if (!temporary && owned.contains(name)) continue;
    std::error_code failed;
    fs::remove(it->path(), failed);
    if (failed) {
      spdlog::warn("rag: could not remove stale index file {}: {}", it->path().string(),
                   failed.message());
    } else {
      spdlog::info("rag: removed stale index file {}", it->path().string());
    }
  }
}

absl::StatusOr<CollectionInfo> RagStoreImpl::CreateCollection(const CollectionSpec& spec) {
  AILB_RETURN_IF_ERROR(ValidateSpec(spec));
  if (Find(spec.name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("collection '", spec.name, "' already exists"));
  }
  // Building the embedder may validate credentials or models: done before any lock.
  AILB_ASSIGN_OR_RETURN(std::unique_ptr<Embedder> embedder, embedders_(spec.embedding));
  if (embedder == nullptr) {
    return absl::InternalError("rag: the embedder factory returned no embedder");
  }
  if (embedder->dimensions() != spec.embedding.dimensions) {
    return InvalidFieldError(
        "embedding.dimensions",
        absl::StrCat("embedding.dimensions is ", spec.embedding.dimensions, " but provider '",
                     spec.embedding.provider, "' model '", spec.embedding.model, "' produces ",
                     embedder->dimensions(), "-dimensional vectors"));
  }
  auto state = std::make_shared<CollectionState>();
  state->spec = spec;
  state->embedder = std::move(embedder);
  state->created_at =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  AILB_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> index,
                        VectorIndex::Create(spec.embedding.dimensions));

  std::lock_guard writer(writer_mu_);
  if (Find(spec.name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("collection '", spec.name, "' already exists"));
  }
  {
    AILB_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*writer_));
    {
      AILB_ASSIGN_OR_RETURN(
          Statement insert,
          writer_->Prepare("INSERT INTO rag_collections (name, provider, model, dimensions, "
                           "max_tokens, overlap, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"));
      insert.Bind(1, std::string_view(spec.name))
          .Bind(2, std::string_view(spec.embedding.provider))
          .Bind(3, std::string_view(spec.embedding.model))
          .Bind(4, int64_t{spec.embedding.dimensions})
          .Bind(5, int64_t{spec.chunking.max_tokens})
          .Bind(6, int64_t{spec.chunking.overlap})
          .Bind(7, state->created_at);
      if (absl::Status status = insert.Run(); !status.ok()) {
        return WithContext(status, absl::StrCat("rag: creating collection '", spec.name, "'"));
      }
      state->id = writer_->LastInsertRowId();
    }
    AILB_RETURN_IF_ERROR(
        WithContext(tx.Commit(), absl::StrCat("rag: creating collection '", spec.name, "'")));
  }
  {
    std::unique_lock lock(state->mu);
    state->index = std::move(index);
  }
  CollectionInfo info = InfoOf(*state, 0, 0);
  std::lock_guard lock(collections_mu_);
  collections_[spec.name] = std::move(state);
  return info;
}

absl::StatusOr<std::vector<CollectionInfo>> RagStoreImpl::ListCollections() {
  std::vector<std::shared_ptr<CollectionState>> states = AllCollections();
  absl::flat_hash_map<int64_t, std::pair<int64_t, int64_t>> counts;
  {
    AILB_ASSIGN_OR_RETURN(Reader reader, AcquireReader());
    AILB_ASSIGN_OR_RETURN(
        Statement select,
        reader->Prepare("SELECT c.id, "
                        "(SELECT count(*) FROM rag_documents d WHERE d.collection_id = c.id), "
                        "(SELECT count(*) FROM rag_chunks k WHERE k.collection_id = c.id) "
                        "FROM rag_collections c"));
    for (;;) {
      absl::StatusOr<bool> row = select.Step();
      if (!row.ok()) return WithContext(row.status(), "rag: listing collections");
      if (!*row) break;
      counts[select.ColumnInt(0)] = {select.ColumnInt(1), select.ColumnInt(2)};
    }
  }
  std::vector<CollectionInfo> infos;
  for (const auto& state : states) {
    auto it = counts.find(state->id);
    // Absent from the counts: deleted after the list was taken (creations commit before they
    // join the list, so the counts, read later, include them).
    if (it == counts.end()) continue;
    infos.push_back(InfoOf(*state, it->second.first, it->second.second));
  }
  return infos;
}

absl::StatusOr<CollectionInfo> RagStoreImpl::GetCollection(const std::string& name) {
  AILB_ASSIGN_OR_RETURN(std::shared_ptr<CollectionState> state, FindOrNotFound(name));
  AILB_ASSIGN_OR_RETURN(Reader reader, AcquireReader());
  AILB_ASSIGN_OR_RETURN(
      Statement select,
      reader->Prepare("SELECT (SELECT count(*) FROM rag_documents WHERE collection_id = ?1), "
                      "(SELECT count(*) FROM rag_chunks WHERE collection_id = ?1), "
                      "EXISTS (SELECT 1 FROM rag_collections WHERE id = ?1)"));
  select.Bind(1, state->id);
  absl::StatusOr<bool> row = select.Step();
  if (!row.ok())
    return WithContext(row.status(), absl::StrCat("rag: reading collection '", name, "'"));
  if (!*row || select.ColumnInt(2) == 0) return CollectionNotFound(name);
  return InfoOf(*state, select.ColumnInt(0), select.ColumnInt(1));
}

absl::Status RagStoreImpl::DeleteCollection(const std::string& name) {
  std::lock_guard maintenance(maintenance_mu_);
  AILB_ASSIGN_OR_RETURN(std::shared_ptr<CollectionState> state, FindOrNotFound(name));
  const std::string context = absl::StrCat("rag: deleting collection '", name, "'");
  {
    std::lock_guard writer(writer_mu_);
    AILB_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*writer_));
    {
      // Chunks first, explicitly: their triggers keep the FTS index in step. The collection
      // row's cascades then remove documents, the deletion log and the snapshot record.
      AILB_ASSIGN_OR_RETURN(Statement chunks,
                            writer_->Prepare("DELETE FROM rag_chunks WHERE collection_id = ?"));
      chunks.Bind(1, state->id);
      AILB_RETURN_IF_ERROR(WithContext(chunks.Run(), context));
      AILB_ASSIGN_OR_RETURN(Statement collection,
                            writer_->Prepare("DELETE FROM rag_collections WHERE id = ?"));
      collection.Bind(1, state->id);
      AILB_RETURN_IF_ERROR(WithContext(collection.Run(), context));
    }
    AILB_RETURN_IF_ERROR(WithContext(tx.Commit(), context));
    std::lock_guard lock(collections_mu_);
    auto it = collections_.find(name);
    if (it != collections_.end() && it->second == state) collections_.erase(it);
  }
  // Queries still holding `state` finish on its index; the file is no longer needed by anyone.
  std::error_code error;
  fs::remove(SnapshotPath(state->id), error);
  if (error) {
    spdlog::warn("rag: collection '{}' deleted but its snapshot {} could not be removed: {}", name,
                 SnapshotPath(state->id), error.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RagStoreImpl::BumpChangeSeq(Database& db, const CollectionState& state) {
  AILB_ASSIGN_OR_RETURN(Statement bump,
                        db.Prepare("UPDATE rag_collections SET change_seq = change_seq + 1 "
                                   "WHERE id = ? RETURNING change_seq"));
  bump.Bind(1, state.id);
  AILB_ASSIGN_OR_RETURN(bool found, bump.Step());
  if (!found) return CollectionNotFound(state.spec.name);
  const int64_t seq = bump.ColumnInt(0);
  AILB_RETURN_IF_ERROR(bump.Run());
  return seq;
}

void RagStoreImpl::ApplyToIndex(CollectionState& state, int64_t seq,
                                const std::vector<uint64_t>& removed,
                                const std::vector<std::pair<uint64_t, const Vector*>>& added) {
  std::unique_lock lock(state.mu);
  for (uint64_t label : removed) state.index->Remove(label);
  for (const auto& [label, vector] : added) {
    if (absl::Status status = state.index->Add(label, *vector); !status.ok()) {
      // The write is committed and SQLite stays the truth; the index is repaired by the next
      // CompactIndexes (or at the next Open, as it is never snapshotted in this state).
      spdlog::error("rag: collection '{}': adding chunk {} to the vector index failed: {}",
                    state.spec.name, label, status.message());
      state.index_stale = true;
    }
  }
  state.applied_seq = seq;
}

absl::StatusOr<UpsertResult> RagStoreImpl::UpsertDocuments(const std::string& collection,
                                                           std::vector<DocumentInput> documents) {
  AILB_ASSIGN_OR_RETURN(std::shared_ptr<CollectionState> state, FindOrNotFound(collection));
  if (documents.size() > limits_.max_documents_per_request) {
    return InvalidFieldError("documents",
                             absl::StrCat("at most ", limits_.max_documents_per_request,
                                          " documents per request, got ", documents.size()));
  }
  for (size_t i = 0; i < documents.size(); ++i) {
    AILB_RETURN_IF_ERROR(ValidateDocument(i, documents[i], limits_));
  }
  // Duplicate ids in one request: the last one wins, as if they had been sent in order.
  absl::flat_hash_map<std::string_view, size_t> last;
  for (size_t i = 0; i < documents.size(); ++i) last[documents[i].id] = i;
  std::vector<const DocumentInput*> unique;
  for (size_t i = 0; i < documents.size(); ++i) {
    if (last[documents[i].id] == i) unique.push_back(&documents[i]);
  }
  UpsertResult result;
  if (unique.empty()) return result;
  if (state->embedder == nullptr) return state->embedder_error;

  // Chunking and embedding happen before any transaction or lock: a remote embedder can take
  // seconds, and nothing else should wait for it.
  struct Prepared {
    const DocumentInput* document;
    std::string metadata;
    std::vector<Chunk> chunks;
    size_t first_vector = 0;
  };
  std::vector<Prepared> prepared;
  std::vector<std::string> texts;
  for (const DocumentInput* document : unique) {
    Prepared p{document, "{}", {}, texts.size()};
    if (!document->metadata.is_null()) {
      // replace: a programmatic json holding invalid UTF-8 must not throw.
      p.metadata = document->metadata.dump(-1, ' ', false, json::error_handler_t::replace);
    }
    p.chunks =
        ChunkText(document->text, state->spec.chunking.max_tokens, state->spec.chunking.overlap);
    for (const Chunk& chunk : p.chunks) texts.push_back(chunk.text);
    prepared.push_back(std::move(p));
  }
  std::vector<Vector> vectors;
  if (!texts.empty()) {
    absl::StatusOr<std::vector<Vector>> embedded = state->embedder->Embed(texts);
    if (!embedded.ok()) {
      return WithContext(embedded.status(),
                         absl::StrCat("collection '", collection, "': embedding failed"));
    }
    vectors = std::move(*embedded);
  }
  if (vectors.size() != texts.size()) {
    return absl::InternalError(absl::StrCat("collection '", collection, "': the embedder returned ",
                                            vectors.size(), " vectors for ", texts.size(),
                                            " chunks"));
  }
  for (const Vector& vector : vectors) {
    if (vector.size() != static_cast<size_t>(state->spec.embedding.dimensions)) {
      return absl::FailedPreconditionError(
          absl::StrCat("collection '", collection, "': the embedder returned a ", vector.size(),
                       "-dimensional vector, expected ", state->spec.embedding.dimensions));
    }
  }

  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  const std::string context = absl::StrCat("rag: upserting into collection '", collection, "'");
  std::vector<uint64_t> removed;
  std::vector<std::pair<uint64_t, const Vector*>> added;
  std::lock_guard writer(writer_mu_);
  int64_t seq = 0;
  {
    AILB_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*writer_));
    {
      AILB_ASSIGN_OR_RETURN(seq, BumpChangeSeq(*writer_, *state));
      AILB_ASSIGN_OR_RETURN(
          Statement upsert,
          writer_->Prepare("INSERT INTO rag_documents (collection_id, doc_id, metadata, "
                           "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (collection_id, doc_id) "
                           "DO UPDATE SET metadata = excluded.metadata, "
                           "updated_at = excluded.updated_at RETURNING id"));
      AILB_ASSIGN_OR_RETURN(Statement old_chunks,
                            writer_->Prepare("SELECT id FROM rag_chunks WHERE document_id = ?"));
      AILB_ASSIGN_OR_RETURN(Statement log_deletions,
                            writer_->Prepare("INSERT INTO rag_deleted_chunks (collection_id, "
                                             "chunk_id, seq) SELECT collection_id, id, ? FROM "
                                             "rag_chunks WHERE document_id = ?"));
      AILB_ASSIGN_OR_RETURN(Statement delete_chunks,
                            writer_->Prepare("DELETE FROM rag_chunks WHERE document_id = ?"));
      AILB_ASSIGN_OR_RETURN(
          Statement insert_chunk,
          writer_->Prepare("INSERT INTO rag_chunks (collection_id, document_id, ordinal, text, "
                           "vector, seq) VALUES (?, ?, ?, ?, ?, ?)"));
      for (const Prepared& p : prepared) {
        upsert.Reset();
        upsert.Bind(1, state->id)
            .Bind(2, std::string_view(p.document->id))
            .Bind(3, std::string_view(p.metadata))
            .Bind(4, now);
        absl::StatusOr<bool> row = upsert.Step();
        if (!row.ok()) return WithContext(row.status(), context);
        if (!*row) return absl::InternalError(absl::StrCat(context, ": upsert returned no id"));
        const int64_t document_rowid = upsert.ColumnInt(0);
        AILB_RETURN_IF_ERROR(WithContext(upsert.Run(), context));

        old_chunks.Reset();
        old_chunks.Bind(1, document_rowid);
        for (;;) {
          absl::StatusOr<bool> old = old_chunks.Step();
          if (!old.ok()) return WithContext(old.status(), context);
          if (!*old) break;
          removed.push_back(static_cast<uint64_t>(old_chunks.ColumnInt(0)));
        }
        log_deletions.Reset();
        log_deletions.Bind(1, seq).Bind(2, document_rowid);
        AILB_RETURN_IF_ERROR(WithContext(log_deletions.Run(), context));
        delete_chunks.Reset();
        delete_chunks.Bind(1, document_rowid);
        AILB_RETURN_IF_ERROR(WithContext(delete_chunks.Run(), context));

        for (size_t i = 0; i < p.chunks.size(); ++i) {
          const Vector& vector = vectors[p.first_vector + i];
          const std::string_view bytes = VectorBytes(vector);
          insert_chunk.Reset();
          insert_chunk.Bind(1, state->id)
              .Bind(2, document_rowid)
              .Bind(3, static_cast<int64_t>(i))
              .Bind(4, std::string_view(p.chunks[i].text))
              .BindBlob(5, bytes.data(), bytes.size())
              .Bind(6, seq);
          AILB_RETURN_IF_ERROR(WithContext(insert_chunk.Run(), context));
          added.emplace_back(static_cast<uint64_t>(writer_->LastInsertRowId()), &vector);
        }
        ++result.documents;
        result.chunks += static_cast<int64_t>(p.chunks.size());
      }
    }
    AILB_RETURN_IF_ERROR(WithContext(tx.Commit(), context));
  }
  ApplyToIndex(*state, seq, removed, added);
  return result;
}

absl::Status RagStoreImpl::DeleteDocument(const std::string& collection,
                                          const std::string& document_id) {
  AILB_ASSIGN_OR_RETURN(std::shared_ptr<CollectionState> state, FindOrNotFound(collection));
  const std::string context =
      absl::StrCat("rag: deleting document ", QuoteId(document_id), " of '", collection, "'");
  std::vector<uint64_t> removed;
  std::lock_guard writer(writer_mu_);
  int64_t seq = 0;
  {
    AILB_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*writer_));
    {
      AILB_ASSIGN_OR_RETURN(Statement find,
                            writer_->Prepare("SELECT id FROM rag_documents WHERE collection_id = ? "
                                             "AND doc_id = ?"));
      find.Bind(1, state->id).Bind(2, std::string_view(document_id));
      absl::StatusOr<bool> found = find.Step();
      if (!found.ok()) return WithContext(found.status(), context);
      if (!*found) {
        return absl::NotFoundError(absl::StrCat(
            "document ", QuoteId(document_id), " does not exist in collection '", collection, "'"));
      }
      const int64_t document_rowid = find.ColumnInt(0);
      AILB_ASSIGN_OR_RETURN(seq, BumpChangeSeq(*writer_, *state));
      AILB_ASSIGN_OR_RETURN(Statement chunks,
                            writer_->Prepare("SELECT id FROM rag_chunks WHERE document_id = ?"));
      chunks.Bind(1, document_rowid);
      for (;;) {
        absl::StatusOr<bool> row = chunks.Step();
        if (!row.ok()) return WithContext(row.status(), context);
        if (!*row) break;
        removed.push_back(static_cast<uint64_t>(chunks.ColumnInt(0)));
      }
      AILB_ASSIGN_OR_RETURN(Statement log_deletions,
                            writer_->Prepare("INSERT INTO rag_deleted_chunks (collection_id, "
                                             "chunk_id, seq) SELECT collection_id, id, ? FROM "
                                             "rag_chunks WHERE document_id = ?"));
      log_deletions.Bind(1, seq).Bind(2, document_rowid);
      AILB_RETURN_IF_ERROR(WithContext(log_deletions.Run(), context));
      // The document's chunks (and their FTS rows, by trigger) go with it by cascade.
      AILB_ASSIGN_OR_RETURN(Statement remove,
                            writer_->Prepare("DELETE FROM rag_documents WHERE id = ?"));
      remove.Bind(1, document_rowid);
      AILB_RETURN_IF_ERROR(WithContext(remove.Run(), context));
    }
    AILB_RETURN_IF_ERROR(WithContext(tx.Commit(), context));
  }
  ApplyToIndex(*state, seq, removed, {});
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ScoredChunk>> RagStoreImpl::VectorSearch(CollectionState& state,
                                                                    Database& db,
                                                                    const std::string& query,
                                                                    const CompiledFilter& filter,
                                                                    size_t depth) {
  if (state.embedder == nullptr) return state.embedder_error;
  absl::StatusOr<std::vector<Vector>> embedded = state.embedder->Embed({query});
  if (!embedded.ok()) {
    return WithContext(embedded.status(),
                       absl::StrCat("collection '", state.spec.name, "': embedding the query"));
  }
  const int dimensions = state.spec.embedding.dimensions;
  if (embedded->size() != 1 || (*embedded)[0].size() != static_cast<size_t>(dimensions)) {
    return absl::FailedPreconditionError(absl::StrCat("collection '", state.spec.name,
                                                      "': the embedder returned no ", dimensions,
                                                      "-dimensional query vector"));
  }
  const Vector& q = (*embedded)[0];
  std::vector<ScoredChunk> results;
  // A text of stopwords only embeds to zero: every similarity would be 0, i.e. noise.
  if (IsZero(q)) return results;

  if (filter.sql.empty()) {
    std::shared_lock lock(state.mu);
    for (const SearchHit& hit : state.index->Search(q, depth)) {
      results.push_back({static_cast<int64_t>(hit.label), hit.score});
    }
    return results;
  }

  // The allowed chunks; their vectors too while the set is small enough for exact search.
  AILB_ASSIGN_OR_RETURN(
      Statement allowed,
      db.Prepare(absl::StrCat("SELECT c.id, c.vector FROM rag_documents d JOIN rag_chunks c ON "
                              "c.document_id = d.id WHERE d.collection_id = ? AND (",
                              filter.sql, ")")));
  allowed.Bind(1, state.id);
  BindSqlValues(allowed, 2, filter.params);
  std::vector<uint64_t> labels;
  std::vector<float> vectors;
  for (;;) {
    AILB_ASSIGN_OR_RETURN(bool row, allowed.Step());
    if (!row) break;
    labels.push_back(static_cast<uint64_t>(allowed.ColumnInt(0)));
    if (labels.size() <= limits_.max_exact_search_chunks &&
        !AppendVector(allowed.ColumnBlob(1), dimensions, vectors)) {
      labels.pop_back();  // a damaged row (logged when the index was built)
    }
  }
  if (labels.size() <= limits_.max_exact_search_chunks) {
    for (const SearchHit& hit : ExactSearch(vectors, labels, dimensions, q, depth)) {
      results.push_back({static_cast<int64_t>(hit.label), hit.score});
    }
    return results;
  }
  // A large allowed set: HNSW with over-fetch, skipping disallowed chunks, doubling the fetch
  // until enough pass or the whole index was seen.
  const absl::flat_hash_set<uint64_t> allowed_set(labels.begin(), labels.end());
  std::shared_lock lock(state.mu);
  const size_t live = std::max<size_t>(state.index->live_count(), 1);
  size_t fetch = std::min(live, depth * 8);
  for (;;) {
    results.clear();
    for (const SearchHit& hit : state.index->Search(q, fetch)) {
      if (!allowed_set.contains(hit.label)) continue;
      results.push_back({static_cast<int64_t>(hit.label), hit.score});
      if (results.size() == depth) break;
    }
    if (results.size() >= depth || fetch >= live) break;
    fetch = std::min(live, fetch * 2);
  }
  return results;
}

absl::StatusOr<std::vector<ScoredChunk>> RagStoreImpl::LexicalSearch(const CollectionState& state,
                                                                     Database& db,
                                                                     const std::string& query,
                                                                     const CompiledFilter& filter,
                                                                     size_t depth) {
  std::vector<ScoredChunk> results;
  const std::string terms = BuildFtsMatchQuery(query);
  if (terms.empty()) return results;
  const std::string match =
      absl::StrCat("collection : \"c", state.id, "\" AND text : (", terms, ")");
  // bm25 weights: the collection column matches every row of the collection and must not score.
  std::string sql =
      "SELECT rag_chunks_fts.rowid, bm25(rag_chunks_fts, 1.0, 0.0) FROM rag_chunks_fts ";
  if (!filter.sql.empty()) {
    // The FTS index drives the joins: the cost follows the matching rows.
    sql +=
        "JOIN rag_chunks c ON c.id = rag_chunks_fts.rowid JOIN rag_documents d ON d.id = "
        "c.document_id ";
  }
  sql += "WHERE rag_chunks_fts MATCH ? ";
  if (!filter.sql.empty()) absl::StrAppend(&sql, "AND (", filter.sql, ") ");
  sql += "ORDER BY bm25(rag_chunks_fts, 1.0, 0.0) LIMIT ?";
  AILB_ASSIGN_OR_RETURN(Statement select, db.Prepare(sql));
  select.Bind(1, std::string_view(match));
  const int next = BindSqlValues(select, 2, filter.params);
  select.Bind(next, static_cast<int64_t>(depth));
  for (;;) {
    AILB_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    // FTS5's bm25() is negative, lower is better; negated so every mode's score rises with
    // relevance.
    results.push_back({select.ColumnInt(0), -select.ColumnDouble(1)});
  }
  return results;
}

absl::StatusOr<std::vector<QueryHit>> RagStoreImpl::Query(const std::string& collection,
                                                          const QueryRequest& request) {
  if (request.top_k < 1 || request.top_k > limits_.max_top_k) {
    return InvalidFieldError("top_k", absl::StrCat("top_k must be in [1, ", limits_.max_top_k,
                                                   "], got ", request.top_k));
  }
  if (request.query.size() > limits_.max_query_bytes) {
    return InvalidFieldError(
        "query", absl::StrCat("query is ", request.query.size(), " bytes, more than the limit of ",
                              limits_.max_query_bytes));
  }
  if (absl::StripAsciiWhitespace(ToAbsl(request.query)).empty()) {
    return InvalidFieldError("query", "query is empty");
  }
  AILB_ASSIGN_OR_RETURN(CompiledFilter filter, CompileMetadataFilter(request.filter, "d.metadata"));
  AILB_ASSIGN_OR_RETURN(std::shared_ptr<CollectionState> state, FindOrNotFound(collection));
  const size_t top_k = static_cast<size_t>(request.top_k);
  // Fusion looks deeper than top_k: a chunk ranked 30th by one list and 5th by the other can
  // belong in the fused top 10.
  const size_t depth = request.mode == QueryMode::kHybrid ? std::max<size_t>(50, 4 * top_k) : top_k;
  const std::string context = absl::StrCat("rag: querying collection '", collection, "'");

  AILB_ASSIGN_OR_RETURN(Reader reader, AcquireReader());
  absl::StatusOr<ReadTransaction> consistent_view = ReadTransaction::Begin(*reader);
  if (!consistent_view.ok()) return WithContext(consistent_view.status(), context);
  std::vector<ScoredChunk> ranked;
  {
    std::vector<ScoredChunk> vector_hits;
    std::vector<ScoredChunk> lexical_hits;
    if (request.mode != QueryMode::kLexical) {
      absl::StatusOr<std::vector<ScoredChunk>> hits =
          VectorSearch(*state, *reader, request.query, filter, depth);
      if (!hits.ok()) return WithContext(hits.status(), context);
      vector_hits = std::move(*hits);
    }
    if (request.mode != QueryMode::kVector) {
      absl::StatusOr<std::vector<ScoredChunk>> hits =
          LexicalSearch(*state, *reader, request.query, filter, depth);
      if (!hits.ok()) return WithContext(hits.status(), context);
      lexical_hits = std::move(*hits);
    }
    if (request.mode == QueryMode::kVector) {
      ranked = std::move(vector_hits);
    } else if (request.mode == QueryMode::kLexical) {
      ranked = std::move(lexical_hits);
    } else {
      RankedList by_vector{{}, kVectorWeight};
      for (const ScoredChunk& hit : vector_hits) by_vector.ids.push_back(hit.chunk_id);
      RankedList by_lexical{{}, kLexicalWeight};
      for (const ScoredChunk& hit : lexical_hits) by_lexical.ids.push_back(hit.chunk_id);
      // Fetching a few extra covers chunks deleted between ranking and the row fetch below.
      for (const FusedHit& hit : ReciprocalRankFusion({by_vector, by_lexical}, kRrfK, top_k + 8)) {
        ranked.push_back({hit.id, hit.score});
      }
    }
  }

  std::vector<QueryHit> hits;
  AILB_ASSIGN_OR_RETURN(
      Statement fetch,
      reader->Prepare("SELECT c.text, d.doc_id, d.metadata FROM rag_chunks c JOIN rag_documents "
                      "d ON d.id = c.document_id WHERE c.id = ? AND c.collection_id = ?"));
  for (const ScoredChunk& candidate : ranked) {
    if (hits.size() == top_k) break;
    fetch.Reset();
    fetch.Bind(1, candidate.chunk_id).Bind(2, state->id);
    absl::StatusOr<bool> row = fetch.Step();
    if (!row.ok()) return WithContext(row.status(), context);
    // Absent: deleted after the index was searched (the index is updated after each commit).
    if (!*row) continue;
    QueryHit hit;
    hit.chunk_id = candidate.chunk_id;
    hit.score = candidate.score;
    hit.text = fetch.ColumnText(0);
    hit.document_id = fetch.ColumnText(1);
    hit.metadata = json::parse(fetch.ColumnText(2), nullptr, false);
    if (hit.metadata.is_discarded()) hit.metadata = json::object();
    hits.push_back(std::move(hit));
  }
  return hits;
}

absl::Status RagStoreImpl::SnapshotAll() {
  std::lock_guard maintenance(maintenance_mu_);
  absl::Status first_error;
  for (const std::shared_ptr<CollectionState>& state : AllCollections()) {
    const std::string path = SnapshotPath(state->id);
    std::string checksum;
    int64_t seq = 0;
    {
      // Shared: queries go on; writers wait, so the file matches applied_seq exactly.
      std::shared_lock lock(state->mu);
      if (state->index_stale || state->applied_seq <= state->snapshot_seq) continue;
      seq = state->applied_seq;
      absl::StatusOr<std::string> saved = state->index->Save(path);
      if (!saved.ok()) {
        absl::Status error = WithContext(
            saved.status(), absl::StrCat("rag: snapshot of collection '", state->spec.name, "'"));
        spdlog::error("{}", error.message());
        if (first_error.ok()) first_error = error;
        continue;
      }
      checksum = std::move(*saved);
    }
    const std::string context =
        absl::StrCat("rag: recording the snapshot of collection '", state->spec.name, "'");
    absl::Status recorded = [&]() -> absl::Status {
      std::lock_guard writer(writer_mu_);
      AILB_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*writer_));
      {
        AILB_ASSIGN_OR_RETURN(
            Statement record,
            writer_->Prepare("INSERT INTO rag_index_snapshots (collection_id, checksum, seq) "
                             "VALUES (?, ?, ?) ON CONFLICT (collection_id) DO UPDATE SET "
                             "checksum = excluded.checksum, seq = excluded.seq"));
        record.Bind(1, state->id).Bind(2, std::string_view(checksum)).Bind(3, seq);
        AILB_RETURN_IF_ERROR(record.Run());
        // Deletions the snapshot already reflects are never needed again.
        AILB_ASSIGN_OR_RETURN(Statement prune,
                              writer_->Prepare("DELETE FROM rag_deleted_chunks WHERE "
                                               "collection_id = ? AND seq <= ?"));
        prune.Bind(1, state->id).Bind(2, seq);
        AILB_RETURN_IF_ERROR(prune.Run());
      }
      return tx.Commit();
    }();
    if (!recorded.ok()) {
      // The file on disk no longer matches the recorded checksum: the next Open rebuilds.
      absl::Status error = WithContext(recorded, context);
      spdlog::error("{}", error.message());
      if (first_error.ok()) first_error = error;
      continue;
    }
    state->snapshot_seq = seq;
  }
  return first_error;
}

absl::StatusOr<int> RagStoreImpl::CompactIndexes() {
  std::lock_guard maintenance(maintenance_mu_);
  int rebuilt = 0;
  absl::Status first_error;
  for (const std::shared_ptr<CollectionState>& state : AllCollections()) {
    {
      std::shared_lock lock(state->mu);
      const double live = static_cast<double>(state->index->live_count());
      const double deleted = static_cast<double>(state->index->deleted_count());
      const bool worn = deleted > 0 && deleted / (live + deleted) > limits_.compaction_threshold;
      if (!worn && !state->index_stale) continue;
    }
    const std::string context =
        absl::StrCat("rag: compacting the index of collection '", state->spec.name, "'");
    absl::Status status = [&]() -> absl::Status {
      // Built from a read transaction on its own connection, without any lock: queries and
      // writes go on meanwhile, and the catch-up below replays what they committed.
      int64_t built_seq = 0;
      std::unique_ptr<VectorIndex> fresh;
      {
        AILB_ASSIGN_OR_RETURN(Reader reader, AcquireReader());
        AILB_ASSIGN_OR_RETURN(fresh, BuildIndex(*reader, *state, built_seq));
      }
      std::lock_guard writer(writer_mu_);
      // No write can commit now, so after the catch-up `fresh` reflects applied_seq.
      AILB_RETURN_IF_ERROR(CatchUp(*writer_, *state, built_seq, *fresh));
      std::unique_lock lock(state->mu);
      state->index = std::move(fresh);
      state->index_stale = false;
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      absl::Status error = WithContext(status, context);
      spdlog::error("{}", error.message());
      if (first_error.ok()) first_error = error;
      continue;
    }
    // The file on disk holds the tombstones just dropped: the next SnapshotAll replaces it.
    state->snapshot_seq = -1;
    ++rebuilt;
  }
  // Every failure was logged; the first one is returned so callers see that work is pending.
  if (!first_error.ok()) return first_error;
  return rebuilt;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RagStore>> RagStore::Open(const std::string& data_dir,
                                                         EmbedderFactory embedders,
                                                         const Clock& clock, RagLimits limits) {
  if (!embedders) return absl::InvalidArgumentError("rag: an embedder factory is required");
  std::error_code error;
  fs::create_directories(fs::path(data_dir) / "indexes", error);
  if (error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rag: cannot create ", (fs::path(data_dir) / "indexes").string(), ": ", error.message()));
  }
  storage::DatabaseOptions options;
  options.synchronous_full = true;
  absl::StatusOr<std::unique_ptr<Database>> db =
      Database::Open((fs::path(data_dir) / "ailb.db").string(), options);
  if (!db.ok()) return WithContext(db.status(), "rag: opening the database");
  {
    absl::StatusOr<Transaction> tx = Transaction::Begin(**db);
    if (!tx.ok()) return WithContext(tx.status(), "rag: creating the schema");
    AILB_RETURN_IF_ERROR(WithContext((*db)->Exec(kSchema), "rag: creating the schema"));
    AILB_RETURN_IF_ERROR(WithContext(tx->Commit(), "rag: creating the schema"));
  }
  auto store =
      std::make_unique<RagStoreImpl>(data_dir, std::move(embedders), clock, limits, std::move(*db));
  AILB_RETURN_IF_ERROR(WithContext(store->LoadCollections(), "rag: loading collections"));
  store->RemoveStaleSnapshotFiles();
  return store;
}

}  // namespace ailb::rag
