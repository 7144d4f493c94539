#include "rag/fusion.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace ailb::rag {

std::vector<FusedHit> ReciprocalRankFusion(const std::vector<RankedList>& lists, double k,
                                           size_t limit) {
  struct Entry {
    double score = 0;
    size_t best_rank = std::numeric_limits<size_t>::max();
  };
  absl::flat_hash_map<int64_t, Entry> entries;
  for (const RankedList& list : lists) {
    absl::flat_hash_set<int64_t> seen;
    size_t rank = 0;
    for (int64_t id : list.ids) {
      if (!seen.insert(id).second) continue;
      ++rank;
      Entry& entry = entries[id];
      entry.score += list.weight / (k + static_cast<double>(rank));
      entry.best_rank = std::min(entry.best_rank, rank);
    }
  }
  std::vector<std::pair<int64_t, Entry>> ordered(entries.begin(), entries.end());
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    if (a.second.score != b.second.score) return a.second.score > b.second.score;
    if (a.second.best_rank != b.second.best_rank) return a.second.best_rank < b.second.best_rank;
    return a.first < b.first;
  });
  std::vector<FusedHit> fused;
  fused.reserve(std::min(limit, ordered.size()));
  for (const auto& [id, entry] : ordered) {
    if (fused.size() >= limit) break;
    fused.push_back({id, entry.score});
  }
  return fused;
}

}  // namespace ailb::rag
