// ReciprocalRankFusion: weights, ties, duplicates and limits.
#include "rag/fusion.h"

#include <vector>

#include "gtest/gtest.h"

namespace ailb::rag {
namespace {

std::vector<int64_t> Ids(const std::vector<FusedHit>& hits) {
  std::vector<int64_t> ids;
  for (const FusedHit& hit : hits) ids.push_back(hit.id);
  return ids;
}

TEST(FusionTest, AgreementWinsOverOneFirstPlace) {
  // 2 is second in both lists; 1 and 3 are first in one list each and absent from the other.
  std::vector<FusedHit> fused = ReciprocalRankFusion({{{1, 2}, 1.0}, {{3, 2}, 1.0}}, 60, 10);
  ASSERT_EQ(fused.size(), 3u);
  EXPECT_EQ(fused[0].id, 2);
  EXPECT_DOUBLE_EQ(fused[0].score, 2.0 / 62);
  EXPECT_EQ(Ids(fused), (std::vector<int64_t>{2, 1, 3}));  // 1 and 3 tie: smaller id first
  EXPECT_DOUBLE_EQ(fused[1].score, 1.0 / 61);
}

TEST(FusionTest, WeightsScaleEachListsContribution) {
  std::vector<FusedHit> fused = ReciprocalRankFusion({{{1}, 1.0}, {{2}, 1.5}}, 60, 10);
  EXPECT_EQ(Ids(fused), (std::vector<int64_t>{2, 1}));
  EXPECT_DOUBLE_EQ(fused[0].score, 1.5 / 61);
}

TEST(FusionTest, TiesGoToTheBetterSingleRank) {
  // With k = 0 every id below scores exactly 1: 10 as 1/2 + 1/2, the others as 1/1. Those
  // ranked first somewhere come before 10, and among them the smaller id first.
  std::vector<FusedHit> fused =
      ReciprocalRankFusion({{{20, 10}, 1.0}, {{21, 10}, 1.0}, {{11}, 1.0}}, 0, 10);
  EXPECT_EQ(Ids(fused), (std::vector<int64_t>{11, 20, 21, 10}));
}

TEST(FusionTest, DuplicatesInAListCountOnceAndLimitApplies) {
  std::vector<FusedHit> fused = ReciprocalRankFusion({{{1, 1, 2, 3}, 1.0}}, 60, 2);
  EXPECT_EQ(Ids(fused), (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(fused[1].score, 1.0 / 62);
  EXPECT_TRUE(ReciprocalRankFusion({}, 60, 5).empty());
  EXPECT_TRUE(ReciprocalRankFusion({{{1}, 1.0}}, 60, 0).empty());
}

}  // namespace
}  // namespace ailb::rag
