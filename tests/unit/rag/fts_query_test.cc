// BuildFtsMatchQuery: user text in, an FTS5 expression that is never a syntax error out.
#include "rag/fts_query.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "ailb/storage/sqlite.h"
#include "gtest/gtest.h"

namespace ailb::rag {
namespace {

TEST(FtsQueryTest, QuotesEveryTokenAndJoinsWithOr) {
  EXPECT_EQ(BuildFtsMatchQuery("Swept wing, slipstream!"),
            "\"swept\" OR \"wing\" OR \"slipstream\"");
  EXPECT_EQ(BuildFtsMatchQuery("NEAR(a b) AND c* OR \"d\""), "\"near\" OR \"b\" OR \"c\" OR \"d\"");
  EXPECT_EQ(BuildFtsMatchQuery("text:wing ^x -y +z"),
            "\"text\" OR \"wing\" OR \"x\" OR \"y\" OR \"z\"");
}

TEST(FtsQueryTest, DropsStopwordsUnlessNothingElseIsLeft) {
  EXPECT_EQ(BuildFtsMatchQuery("what is the lift of a wing"), "\"lift\" OR \"wing\"");
  EXPECT_EQ(BuildFtsMatchQuery("to be or not to be"), "\"to\" OR \"be\" OR \"or\" OR \"not\"");
}

TEST(FtsQueryTest, DeduplicatesLowerCasesAndCaps) {
  EXPECT_EQ(BuildFtsMatchQuery("Wing WING wing"), "\"wing\"");
  EXPECT_EQ(BuildFtsMatchQuery("a1 b2 c3 d4", 2), "\"a1\" OR \"b2\"");
}

TEST(FtsQueryTest, KeepsUtf8SequencesWhole) {
  EXPECT_EQ(BuildFtsMatchQuery("café—crème"), "\"café—crème\"");
  EXPECT_EQ(BuildFtsMatchQuery("日本語"), "\"日本語\"");
}

TEST(FtsQueryTest, NoTokensGivesEmpty) {
  EXPECT_EQ(BuildFtsMatchQuery(""), "");
  EXPECT_EQ(BuildFtsMatchQuery("!!! (*) \"\" ^:-"), "");
}

// Every output runs through FTS5 itself without an error.
TEST(FtsQueryTest, OutputIsAlwaysValidFts5) {
  absl::StatusOr<std::unique_ptr<storage::Database>> db = storage::Database::Open(":memory:");
  ASSERT_TRUE(db.ok()) << db.status();
  // The shape RagStore uses: a collection token column beside the text.
  ASSERT_TRUE((*db)
                  ->Exec("CREATE VIRTUAL TABLE t USING fts5(text, collection, content='', "
                         "tokenize='porter unicode61');"
                         "INSERT INTO t (rowid, text, collection) VALUES "
                         "(1, 'the swept wing in a slipstream', 'c1'), (2, 'café crème', 'c1');")
                  .ok());
  for (const char* text : {"wing",
                           "\"",
                           "wing\"",
                           "*",
                           "NEAR(wing slipstream)",
                           "NEAR",
                           "AND",
                           "OR NOT",
                           "(",
                           ")",
                           "text:wing",
                           "^wing",
                           "-wing",
                           "{text}: wing",
                           "''; DROP TABLE t; --",
                           "日本語のクエリ",
                           "café—crème",
                           "wing\xff\xfe",
                           "\xe2\x80\x94",
                           "\xc3",
                           "the of and",
                           "\x01"}) {
    const std::string terms = BuildFtsMatchQuery(text);
    if (terms.empty()) continue;
    for (const std::string& match :
         {terms, absl::StrCat("collection : \"c1\" AND text : (", terms, ")")}) {
      absl::StatusOr<storage::Statement> select =
          (*db)->Prepare("SELECT rowid, bm25(t) FROM t WHERE t MATCH ? ORDER BY bm25(t)");
      ASSERT_TRUE(select.ok()) << select.status();
      select->Bind(1, std::string_view(match));
      EXPECT_TRUE(select->Run().ok()) << text << " -> " << match;
    }
  }
}

}  // namespace
}  // namespace ailb::rag
