// Reciprocal rank fusion (Cormack et al., 2009) of ranked result lists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ailb::rag {

struct RankedList {
  std::vector<int64_t> ids;  // best first; duplicates after the first occurrence are ignored
  double weight = 1.0;
};

struct FusedHit {
  int64_t id = 0;
  double score = 0;
};

// score(id) = sum over lists of weight / (k + rank), rank 1-based. Highest first; ties go to the
// id with the better single rank, then the smaller id, so results are deterministic.
// At most `limit` hits.
std::vector<FusedHit> ReciprocalRankFusion(const std::vector<RankedList>& lists, double k,
                                           size_t limit);

}  // namespace ailb::rag
