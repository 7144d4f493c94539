#include "ailb/router/session_affinity.h"

#include "gtest/gtest.h"

namespace ailb::router {
namespace {

TEST(SessionAffinityTest, RemembersTheLatestDeploymentPerSession) {
  SessionAffinity affinity;
  EXPECT_FALSE(affinity.Lookup("s").has_value());
  affinity.Remember("s", "a");
  affinity.Remember("t", "b");
  affinity.Remember("s", "c");
  EXPECT_EQ(affinity.Lookup("s"), "c");
  EXPECT_EQ(affinity.Lookup("t"), "b");
  EXPECT_EQ(affinity.size(), 2u);
}

TEST(SessionAffinityTest, ForgetsTheLeastRecentlyUsedBeyondCapacity) {
  SessionAffinity affinity(2);
  affinity.Remember("old", "a");
  affinity.Remember("mid", "b");
  affinity.Remember("old", "a");  // touched again: now the most recent
  affinity.Remember("new", "c");
  EXPECT_EQ(affinity.size(), 2u);
  EXPECT_FALSE(affinity.Lookup("mid").has_value());
  EXPECT_EQ(affinity.Lookup("old"), "a");
  EXPECT_EQ(affinity.Lookup("new"), "c");
}

}  // namespace
}  // namespace ailb::router
