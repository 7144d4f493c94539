// Metadata validation and filter compilation, evaluated by SQLite against stored metadata.
#include "rag/metadata_filter.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/storage/sqlite.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::rag {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ValidateMetadataTest, AcceptsScalarsAndArraysOfScalars) {
  EXPECT_TRUE(ValidateMetadata(nullptr).ok());
  EXPECT_TRUE(ValidateMetadata(json::object()).ok());
  EXPECT_TRUE(ValidateMetadata({{"s", "x"},
                                {"i", -3},
                                {"u", 18446744073709551615ULL},
                                {"f", 1.5},
                                {"b", false},
                                {"n", nullptr},
                                {"a", {1, "two", true, nullptr}},
                                {"e", json::array()}})
                  .ok());
}

TEST(ValidateMetadataTest, RejectsOtherShapesNamingTheKey) {
  absl::Status status = ValidateMetadata({{"ok", 1}, {"bad", {{"nested", 1}}}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("metadata.bad"));
  EXPECT_EQ(ErrorParamOf(status), "metadata.bad");
  EXPECT_FALSE(ValidateMetadata({{"a", {json::array({1})}}}).ok());
  EXPECT_FALSE(ValidateMetadata({{"a", {json::object()}}}).ok());
  EXPECT_FALSE(ValidateMetadata({{"nan", std::nan("")}}).ok());
  EXPECT_FALSE(ValidateMetadata(json::array()).ok());
  EXPECT_FALSE(ValidateMetadata("text").ok());
}

class MetadataFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<storage::Database>> db = storage::Database::Open(":memory:");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_TRUE(db_->Exec("CREATE TABLE docs (name TEXT, metadata TEXT)").ok());
    const std::vector<std::pair<std::string, json>> rows = {
        {"a", {{"color", "red"}, {"size", 1}, {"tags", {"x", "y"}}, {"on", true}}},
        {"b", {{"color", "blue"}, {"size", 2.0}, {"tags", {"y"}}, {"on", false}, {"z", nullptr}}},
        {"c", {{"color", "red"}, {"size", "1"}, {"tags", "x"}, {"dotted.key", 5}}},
        {"d", json::object()},
    };
    for (const auto& [name, metadata] : rows) {
      absl::StatusOr<storage::Statement> insert = db_->Prepare("INSERT INTO docs VALUES (?, ?)");
      ASSERT_TRUE(insert.ok());
      insert->Bind(1, std::string_view(name)).Bind(2, std::string_view(metadata.dump()));
      ASSERT_TRUE(insert->Run().ok());
    }
  }

  // The names of the rows the filter allows, in insertion order.
  std::vector<std::string> Match(const json& filter) {
    absl::StatusOr<CompiledFilter> compiled = CompileMetadataFilter(filter, "metadata");
    EXPECT_TRUE(compiled.ok()) << compiled.status();
    if (!compiled.ok()) return {};
    const std::string sql = compiled->sql.empty() ? "SELECT name FROM docs ORDER BY rowid"
                                                  : absl::StrCat("SELECT name FROM docs WHERE ",
                                                                 compiled->sql, " ORDER BY rowid");
    absl::StatusOr<storage::Statement> select = db_->Prepare(sql);
    EXPECT_TRUE(select.ok()) << select.status() << " " << sql;
    if (!select.ok()) return {};
    BindSqlValues(*select, 1, compiled->params);
    std::vector<std::string> names;
    for (;;) {
      absl::StatusOr<bool> row = select->Step();
      EXPECT_TRUE(row.ok()) << row.status();
      if (!row.ok() || !*row) break;
      names.push_back(select->ColumnText(0));
    }
    return names;
  }

  std::unique_ptr<storage::Database> db_;
};

TEST_F(MetadataFilterTest, EmptyFilterAllowsEverything) {
  EXPECT_THAT(Match(nullptr), ElementsAre("a", "b", "c", "d"));
  EXPECT_THAT(Match(json::object()), ElementsAre("a", "b", "c", "d"));
}

TEST_F(MetadataFilterTest, EqualityIsTypedAndReachesIntoArrays) {
  EXPECT_THAT(Match({{"color", "red"}}), ElementsAre("a", "c"));
  EXPECT_THAT(Match({{"color", {{"$eq", "blue"}}}}), ElementsAre("b"));
  EXPECT_THAT(Match({{"size", 1}}), ElementsAre("a"));  // "1" is a string
  EXPECT_THAT(Match({{"size", 2}}), ElementsAre("b"));  // 2 == 2.0
  EXPECT_THAT(Match({{"size", "1"}}), ElementsAre("c"));
  EXPECT_THAT(Match({{"on", true}}), ElementsAre("a"));  // true is not 1
  EXPECT_THAT(Match({{"on", false}}), ElementsAre("b"));
  EXPECT_THAT(Match({{"tags", "x"}}), ElementsAre("a", "c"));             // array element or scalar
  EXPECT_THAT(Match({{"z", nullptr}}), ElementsAre("a", "b", "c", "d"));  // null or missing
  EXPECT_THAT(Match({{"on", nullptr}}), ElementsAre("c", "d"));
  EXPECT_THAT(Match({{"dotted.key", 5}}), ElementsAre("c"));  // a key, not a path
  EXPECT_THAT(Match({{"color", "red"}, {"tags", "y"}}), ElementsAre("a"));
  EXPECT_THAT(Match({{"missing", "x"}}), IsEmpty());
}

TEST_F(MetadataFilterTest, InMatchesAnyValue) {
  EXPECT_THAT(Match({{"color", {{"$in", {"blue", "green"}}}}}), ElementsAre("b"));
  EXPECT_THAT(Match({{"size", {{"$in", {1, "1"}}}}}), ElementsAre("a", "c"));
  EXPECT_THAT(Match({{"tags", {{"$in", {"y"}}}}}), ElementsAre("a", "b"));
  EXPECT_THAT(Match({{"on", {{"$in", {true, nullptr}}}}}), ElementsAre("a", "c", "d"));
  EXPECT_THAT(Match({{"color", {{"$in", json::array()}}}}), IsEmpty());
}

TEST_F(MetadataFilterTest, RejectsUnknownOperatorsAndShapes) {
  for (const json& bad :
       {json{{"size", {{"$gt", 1}}}}, json{{"$and", json::array()}}, json{{"tags", {"x", "y"}}},
        json{{"color", {{"red", 1}}}}, json{{"color", {{"$in", "red"}}}},
        json{{"color", {{"$in", {json::array()}}}}}, json{{"color", {{"$eq", {1, 2}}}}},
        json{{"color", {{"$eq", 1}, {"$in", {1}}}}}, json{{"k\"ey", 1}}, json{{"", 1}},
        json::array(), json("red"), json{{"nan", std::nan("")}}}) {
    absl::StatusOr<CompiledFilter> compiled = CompileMetadataFilter(bad, "metadata");
    EXPECT_EQ(compiled.status().code(), absl::StatusCode::kInvalidArgument) << bad.dump();
    EXPECT_THAT(std::string(compiled.status().message()), HasSubstr("filter")) << bad.dump();
  }
  absl::Status status = CompileMetadataFilter({{"size", {{"$gt", 1}}}}, "metadata").status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("'$gt'"));
  EXPECT_EQ(ErrorParamOf(status), "filter.size");
}

}  // namespace
}  // namespace ailb::rag
