// Approximate nearest-neighbour search over one RAG collection's chunk vectors (hnswlib, inner
// product on L2-normalised vectors = cosine similarity), plus exact search for small sets such as
// one session's turns. The index is a cache of SQLite: it can always be rebuilt from the vectors
// stored there.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ailb::rag {

struct SearchHit {
  uint64_t label = 0;  // the chunk's rowid
  float score = 0;     // cosine similarity (inner product of normalised vectors)
};

struct HnswOptions {
  size_t max_elements = 1024;  // grows automatically
  size_t m = 16;
  size_t ef_construction = 200;
  size_t ef_search = 96;
};

// Thread-safe: a reader/writer lock inside lets searches (and saves) run together and serialises
// writers; a waiting writer goes ahead of newly arriving searches, so Add is not starved.
class VectorIndex {
 public:
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Create(int dimensions,
                                                             HnswOptions options = {});
  // Reads a file written by Save. NotFound when absent; DataLoss when it is truncated, corrupt
  // or of another dimension (the header and every link are checked before use). M and
  // ef_construction come from the file; `options` supplies max_elements and ef_search.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Load(const std::string& path, int dimensions,
                                                           HnswOptions options = {});
  virtual ~VectorIndex() = default;

  virtual int dimensions() const = 0;
  // Inserts or replaces the vector for `label` (reviving it if removed); grows the capacity as
  // needed. InvalidArgument on a wrong-sized or non-finite vector. After an Internal error the
  // index refuses further use (FailedPrecondition, empty searches): rebuild it from SQLite.
  virtual absl::Status Add(uint64_t label, std::span<const float> vector) = 0;
  // Tombstones `label` (absent labels are ignored).
  virtual void Remove(uint64_t label) = 0;
  // Best `k` live entries, highest score first (ties by lower label). Empty for a query of the
  // wrong size.
  virtual std::vector<SearchHit> Search(std::span<const float> query, size_t k) const = 0;
  virtual bool Contains(uint64_t label) const = 0;
  virtual size_t live_count() const = 0;
  virtual size_t deleted_count() const = 0;
  // Writes the index atomically: temp file in the same directory, fsync, rename, fsync of the
  // directory. Returns a checksum (FNV-1a 64 of the file bytes, 16 lowercase hex digits) to
  // record in SQLite. Add and Remove wait while the file is written; searches do not.
  virtual absl::StatusOr<std::string> Save(const std::string& path) const = 0;
};

// Checksum of a file as Save computes it; NotFound when absent.
absl::StatusOr<std::string> FileChecksum(const std::string& path);

// Exact top-k by inner product over row-major vectors of `dimensions` floats, labelled by
// `labels` (count = min(labels.size(), vectors.size() / dimensions)); highest score first, ties
// by lower label. Empty when `query` is not `dimensions` long.
std::vector<SearchHit> ExactSearch(std::span<const float> vectors, std::span<const uint64_t> labels,
                                   int dimensions, std::span<const float> query, size_t k);

}  // namespace ailb::rag
