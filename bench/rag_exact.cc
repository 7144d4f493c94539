// rag_exact: exact (brute-force) top-k by inner product over a collection's stored vectors, the
// ground truth for bench/rag.py's recall@10 of ailb's HNSW index.
//
//   rag_exact DB COLLECTION QUERIES.f32 DIMENSIONS K
//
// DB is ailb's SQLite database (AILB_DATA_DIR/ailb.db), opened read-only; QUERIES.f32 holds the
// query vectors as consecutive little-endian float32 arrays of DIMENSIONS values. Prints one line
// per query: the K best rag_chunks.id values (what the query API calls chunk_id), best first.
// Build: g++ -std=c++20 -O2 -o rag_exact rag_exact.cc -lsqlite3

#include <sqlite3.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: rag_exact DB COLLECTION QUERIES.f32 DIMENSIONS K\n");
    return 2;
  }
  const size_t dims = static_cast<size_t>(atoi(argv[4]));
  const size_t k = static_cast<size_t>(atoi(argv[5]));
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    fprintf(stderr, "rag_exact: cannot open %s: %s\n", argv[1], sqlite3_errmsg(db));
    return 1;
  }
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "SELECT c.id, c.vector FROM rag_chunks c JOIN rag_collections k ON k.id = c.collection_id "
      "WHERE k.name = ?";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    fprintf(stderr, "rag_exact: %s\n", sqlite3_errmsg(db));
    return 1;
  }
  sqlite3_bind_text(st, 1, argv[2], -1, SQLITE_TRANSIENT);
  std::vector<long long> ids;
  std::vector<float> vectors;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const void* blob = sqlite3_column_blob(st, 1);
    const size_t bytes = static_cast<size_t>(sqlite3_column_bytes(st, 1));
    if (bytes != dims * sizeof(float)) {
      fprintf(stderr, "rag_exact: chunk %lld has %zu bytes, expected %zu\n",
              sqlite3_column_int64(st, 0), bytes, dims * sizeof(float));
      return 1;
    }
    ids.push_back(sqlite3_column_int64(st, 0));
    const size_t at = vectors.size();
    vectors.resize(at + dims);
    memcpy(vectors.data() + at, blob, bytes);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);

  FILE* f = fopen(argv[3], "rb");
  if (!f) {
    perror(argv[3]);
    return 1;
  }
  std::vector<float> q(dims);
  std::vector<std::pair<float, long long>> scored(ids.size());
  while (fread(q.data(), sizeof(float), dims, f) == dims) {
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* v = vectors.data() + i * dims;
      float dot = 0;
      for (size_t d = 0; d < dims; ++d) dot += q[d] * v[d];
      scored[i] = {dot, ids[i]};
    }
    const size_t top = std::min(k, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + static_cast<long>(top), scored.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = 0; i < top; ++i) printf(i ? " %lld" : "%lld", scored[i].second);
    printf("\n");
  }
  fclose(f);
  fprintf(stderr, "rag_exact: %zu chunks\n", ids.size());
  return 0;
}
