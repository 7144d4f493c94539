// Blue/green traffic weights: versions, weight changes, rollback, persistence and choice.
#include "ailb/router/traffic_split.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "ailb/common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::router {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

int Sum(const std::map<std::string, int>& weights) {
  int total = 0;
  for (const auto& [v, w] : weights) total += w;
  return total;
}

// A fresh directory under the test temp dir, unique per test.
std::string FreshDir() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (std::string("traffic_split_") + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(TrafficSplitTest, SyncVersionsGivesFirstVersionEverything) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  EXPECT_EQ(split.ActiveVersion(), "");
  split.SyncVersions({"v1", "v2"});
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 100), Pair("v2", 0)));
  EXPECT_EQ(split.ActiveVersion(), "v1");
  // A new version starts at 0 and existing weights are kept.
  ASSERT_TRUE(split.SetWeight("v2", 40).ok());
  split.SyncVersions({"v1", "v2", "v3"});
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 60), Pair("v2", 40), Pair("v3", 0)));
}

TEST(TrafficSplitTest, SetWeightWithTwoVersions) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2"});
  clock.Advance(std::chrono::seconds(5));
  absl::StatusOr<SplitState> state = split.SetWeight("v2", 30);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_THAT(state->weights, ElementsAre(Pair("v1", 70), Pair("v2", 30)));
  EXPECT_EQ(state->previous_active, "v1");
  EXPECT_EQ(state->target, "v2");
  EXPECT_EQ(state->changed_at, clock.WallNow());
  EXPECT_EQ(split.State().weights, state->weights);
  ASSERT_TRUE(split.SetWeight("v2", 80).ok());
  EXPECT_EQ(split.ActiveVersion(), "v2");
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 20), Pair("v2", 80)));
}

TEST(TrafficSplitTest, SetWeightWithThreeVersionsSharesRestProportionally) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2", "v3"});
  ASSERT_TRUE(split.SetWeight("v2", 40).ok());
  // v3 had nothing, so the whole rest stays with v1.
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 60), Pair("v2", 40), Pair("v3", 0)));
  ASSERT_TRUE(split.SetWeight("v3", 20).ok());
  // 80 shared 60:40 between v1 and v2.
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 48), Pair("v2", 32), Pair("v3", 20)));
  // Non-integral shares: 67 shared 48:32 -> 40.2 / 26.8 -> 40 / 27 by largest remainder.
  ASSERT_TRUE(split.SetWeight("v3", 33).ok());
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 40), Pair("v2", 27), Pair("v3", 33)));
  EXPECT_EQ(Sum(split.State().weights), 100);
  // Others with no weight at all share equally.
  ASSERT_TRUE(split.Rollback("v1").ok());
  ASSERT_TRUE(split.SetWeight("v1", 0).ok());
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 0), Pair("v2", 50), Pair("v3", 50)));
}

TEST(TrafficSplitTest, InvalidWeightOrUnknownVersionChangesNothing) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2"});
  ASSERT_TRUE(split.SetWeight("v2", 25).ok());
  const SplitState before = split.State();

  absl::StatusOr<SplitState> negative = split.SetWeight("v2", -1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SplitState> too_big = split.SetWeight("v2", 101);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SplitState> unknown = split.SetWeight("v9", 50);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);

  const SplitState after = split.State();
  EXPECT_EQ(after.weights, before.weights);
  EXPECT_EQ(after.previous_active, before.previous_active);
  EXPECT_EQ(after.target, before.target);
  // The failed calls left no history behind: one rollback returns to the initial weights.
  ASSERT_TRUE(split.Rollback("").ok());
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 100), Pair("v2", 0)));
  EXPECT_EQ(split.Rollback("").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TrafficSplitTest, SingleVersionMustKeepEverything) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"only"});
  absl::StatusOr<SplitState> lower = split.SetWeight("only", 50);
  EXPECT_EQ(lower.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("only", 100)));
  EXPECT_TRUE(split.SetWeight("only", 100).ok());
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("only", 100)));
}

TEST(TrafficSplitTest, RollbackToPreviousAndToTarget) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2"});
  ASSERT_TRUE(split.SetWeight("v2", 10).ok());
  ASSERT_TRUE(split.SetWeight("v2", 60).ok());
  EXPECT_EQ(split.ActiveVersion(), "v2");

  absl::StatusOr<SplitState> back = split.Rollback("");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->weights, ElementsAre(Pair("v1", 90), Pair("v2", 10)));
  EXPECT_EQ(back->previous_active, "v2");
  EXPECT_EQ(split.ActiveVersion(), "v1");
  ASSERT_TRUE(split.Rollback("").ok());
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 100), Pair("v2", 0)));

  absl::StatusOr<SplitState> to_v2 = split.Rollback("v2");
  ASSERT_TRUE(to_v2.ok()) << to_v2.status();
  EXPECT_THAT(to_v2->weights, ElementsAre(Pair("v1", 0), Pair("v2", 100)));
  EXPECT_EQ(to_v2->target, "v2");
  EXPECT_EQ(to_v2->previous_active, "v1");
  EXPECT_EQ(split.Rollback("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 0), Pair("v2", 100)));
}

TEST(TrafficSplitTest, WeightsSurviveRestart) {
  const std::string file = FreshDir() + "/weights.json";
  ManualClock clock;
  {
    TrafficSplit split(clock, file);
    ASSERT_TRUE(split.Load().ok());  // nothing persisted yet
    split.SyncVersions({"v1", "v2", "v3"});
    ASSERT_TRUE(split.SetWeight("v2", 35).ok());
    ASSERT_TRUE(split.SetWeight("v3", 15).ok());
  }
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_FALSE(std::filesystem::exists(file + ".tmp"));

  TrafficSplit restarted(clock, file);
  ASSERT_TRUE(restarted.Load().ok());
  const SplitState state = restarted.State();
  EXPECT_THAT(state.weights, ElementsAre(Pair("v1", 55), Pair("v2", 30), Pair("v3", 15)));
  EXPECT_EQ(state.target, "v3");
  EXPECT_EQ(state.previous_active, "v1");
  EXPECT_EQ(state.changed_at, clock.WallNow());
  // Syncing the same versions after loading keeps the loaded weights.
  restarted.SyncVersions({"v1", "v2", "v3"});
  EXPECT_EQ(restarted.State().weights, state.weights);
}

TEST(TrafficSplitTest, CorruptFileIsReportedAndIgnored) {
  const std::string file = FreshDir() + "/weights.json";
  {
    std::ofstream out(file);
    out << "{\"weights\": [1, 2";  // truncated JSON
  }
  ManualClock clock;
  TrafficSplit split(clock, file);
  absl::Status loaded = split.Load();
  EXPECT_FALSE(loaded.ok());
  EXPECT_TRUE(split.State().weights.empty());
  split.SyncVersions({"v1", "v2"});
  EXPECT_THAT(split.State().weights, ElementsAre(Pair("v1", 100), Pair("v2", 0)));

  // Valid JSON of the wrong shape is corrupt too.
  {
    std::ofstream out(file);
    out << "{\"weights\": 5}";
  }
  TrafficSplit other(clock, file);
  EXPECT_FALSE(other.Load().ok());
  EXPECT_TRUE(other.State().weights.empty());
}

TEST(TrafficSplitTest, ChooseFollowsWeights) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2"});
  ASSERT_TRUE(split.SetWeight("v2", 25).ok());
  const std::vector<std::string> present = {"v1", "v2"};
  // Uniform points: [0, 0.75) -> v1, [0.75, 1) -> v2.
  EXPECT_EQ(split.Choose(present, 0.0), "v1");
  EXPECT_EQ(split.Choose(present, 0.7499), "v1");
  EXPECT_EQ(split.Choose(present, 0.75), "v2");
  EXPECT_EQ(split.Choose(present, 0.9999), "v2");
  int v2 = 0;
  constexpr int kSteps = 10000;
  for (int i = 0; i < kSteps; ++i) {
    if (split.Choose(present, (i + 0.5) / kSteps) == "v2") ++v2;
  }
  EXPECT_EQ(v2, 2500);
  // Only the versions present count: v2 alone gets everything.
  EXPECT_EQ(split.Choose({"v2"}, 0.0), "v2");
  // Unknown versions weigh 0; all-zero falls back to the first present.
  EXPECT_EQ(split.Choose({"v9", "v1"}, 0.0), "v1");
  EXPECT_EQ(split.Choose({"v9", "v8"}, 0.5), "v9");
  EXPECT_EQ(split.Choose({}, 0.5), "");
}

TEST(TrafficSplitTest, DroppingAVersionKeepsWeightsSummingToHundred) {
  ManualClock clock;
  TrafficSplit split(clock, "");
  split.SyncVersions({"v1", "v2"});
  ASSERT_TRUE(split.SetWeight("v2", 30).ok());
  split.SyncVersions({"v1"});  // v2's deployments were removed from the configuration
  const std::map<std::string, int> weights = split.State().weights;
  EXPECT_EQ(Sum(weights), 100);
  EXPECT_THAT(weights, ElementsAre(Pair("v1", 100)));
}

}  // namespace
}  // namespace ailb::router
