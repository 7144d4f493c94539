// RAG collections: documents chunked server-side, chunks embedded and stored in SQLite (the source
// of truth, with an FTS5 table for BM25), and one hnswlib index per collection as a cache of the
// stored vectors. Queries are vector, lexical (BM25) or hybrid (both, fused by reciprocal rank).
//
// Durability: a write returns only after its SQLite transaction committed (synchronous=FULL).
// Index snapshots are written atomically (temp, fsync, rename) with their checksum and the change
// sequence they cover recorded in SQLite; at Open a collection's index is loaded from its snapshot
// and caught up from SQLite, or rebuilt when the snapshot is missing, stale or corrupt.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ailb/common/clock.h"
#include "ailb/rag/embedder.h"
#include "nlohmann/json.hpp"

namespace ailb::rag {

struct EmbeddingSpec {
  std::string provider = "local";  // local | openai | ollama
  std::string model;               // provider model; empty for local
  int dimensions = 384;
};

struct ChunkingSpec {
  int max_tokens = 256;
  int overlap = 32;
};

struct CollectionSpec {
  std::string name;  // [A-Za-z0-9_.-]{1,128}
  EmbeddingSpec embedding;
  ChunkingSpec chunking;
};

struct CollectionInfo {
  CollectionSpec spec;
  int64_t document_count = 0;
  int64_t chunk_count = 0;
  int64_t created_at = 0;  // unix seconds
};

struct DocumentInput {
  std::string id;  // non-empty, at most 256 bytes
  std::string text;
  nlohmann::json metadata = nlohmann::json::object();  // an object of scalars or arrays of scalars
};

struct UpsertResult {
  int64_t documents = 0;
  int64_t chunks = 0;
};

enum class QueryMode { kHybrid, kVector, kLexical };

struct QueryRequest {
  std::string query;
  int top_k = 5;
  // Metadata conditions applied before ranking: {"key": scalar} (equality), {"key": {"$in":
  // [scalars]}} (membership); all must hold. Empty/null: no filter.
  nlohmann::json filter;
  QueryMode mode = QueryMode::kHybrid;
};

struct QueryHit {
  std::string document_id;
  int64_t chunk_id = 0;
  std::string text;
  double score = 0;  // cosine (vector), BM25 (lexical, higher is better) or fused RRF (hybrid)
  nlohmann::json metadata;
};

struct RagLimits {
  size_t max_document_bytes = 1 << 20;  // larger documents: InvalidArgument (400)
  size_t max_documents_per_request = 1000;
  int max_top_k = 100;
  size_t max_query_bytes = 16 << 10;
  // An index is rebuilt in the background once this share of its entries are tombstones.
  double compaction_threshold = 0.25;
  // A filtered vector query whose filter allows at most this many chunks is answered by exact
  // search over their vectors (a few ms at 384 dimensions); larger sets go through the HNSW index
  // with over-fetch, skipping disallowed chunks.
  size_t max_exact_search_chunks = 20'000;
};

// Thread-safe. Every method blocks on disk (and on the embedder's network I/O): call from worker
// threads only. Per-collection reader/writer locking lets queries run alongside each other.
class RagStore {
 public:
  using EmbedderFactory =
      std::function<absl::StatusOr<std::unique_ptr<Embedder>>(const EmbeddingSpec&)>;

  // Opens (creating) `data_dir`/ailb.db and the index snapshots under `data_dir`/indexes/.
  static absl::StatusOr<std::unique_ptr<RagStore>> Open(const std::string& data_dir,
                                                        EmbedderFactory embedders,
                                                        const Clock& clock, RagLimits limits = {});
  virtual ~RagStore() = default;

  // AlreadyExists when the name is taken; InvalidArgument for bad names, dimensions or chunking;
  // the embedder factory's error when it cannot build the embedder.
  virtual absl::StatusOr<CollectionInfo> CreateCollection(const CollectionSpec& spec) = 0;
  virtual absl::StatusOr<std::vector<CollectionInfo>> ListCollections() = 0;
  virtual absl::StatusOr<CollectionInfo> GetCollection(const std::string& name) = 0;
  // Removes the collection, its documents, chunks, vectors and snapshot.
  virtual absl::Status DeleteCollection(const std::string& name) = 0;
  // Upserts by id (a document's old chunks are replaced). All or nothing: one transaction.
  // InvalidArgument for empty ids or text, oversized documents, bad metadata; NotFound for an
  // unknown collection.
  virtual absl::StatusOr<UpsertResult> UpsertDocuments(const std::string& collection,
                                                       std::vector<DocumentInput> documents) = 0;
  // NotFound when the collection or document does not exist.
  virtual absl::Status DeleteDocument(const std::string& collection,
                                      const std::string& document_id) = 0;
  virtual absl::StatusOr<std::vector<QueryHit>> Query(const std::string& collection,
                                                      const QueryRequest& request) = 0;
  // Writes a snapshot of every index changed since its last one (at shutdown, and periodically).
  virtual absl::Status SnapshotAll() = 0;
  // Rebuilds indexes whose tombstone share passed the threshold; returns how many were rebuilt.
  virtual absl::StatusOr<int> CompactIndexes() = 0;
};

}  // namespace ailb::rag
