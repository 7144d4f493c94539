// `ailb ingest`'s pure parts: JSON lines and text files into documents, and batching.
#include "ailb/cli/ingest.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "ailb/common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ailb::cli {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// --- JSON lines -------------------------------------------------------------------------------

TEST(ParseJsonLineTest, TitleIsPrependedAndOtherFieldsBecomeMetadata) {
  const auto document = ParseJsonLine(
      R"({"id": "d1", "title": "Wings", "text": "lift and drag", "year": 1962, "score": 0.5,
          "peer_reviewed": true, "tags": ["aero", 3, null], "editor": null})",
      JsonlFields{});
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->id, "d1");
  EXPECT_EQ(document->text, "Wings\nlift and drag");
  EXPECT_EQ(document->metadata, json({{"year", 1962},
                                      {"score", 0.5},
                                      {"peer_reviewed", true},
                                      {"tags", json::array({"aero", 3, nullptr})},
                                      {"editor", nullptr}}));
}

TEST(ParseJsonLineTest, NonScalarFieldsAreDropped) {
  const auto document = ParseJsonLine(
      R"({"id": "d1", "text": "t", "author": {"name": "x"}, "nested": [[1]], "mixed": [1, {}],
          "keep": "yes"})",
      JsonlFields{});
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->metadata, json({{"keep", "yes"}}));
}

TEST(ParseJsonLineTest, WithoutTitleTheTextIsSentAsIs) {
  const auto document = ParseJsonLine(R"({"id": "d1", "text": "body"})", JsonlFields{});
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->text, "body");
  EXPECT_EQ(document->metadata, json::object());
}

TEST(ParseJsonLineTest, NullOrBlankTitleIsIgnored) {
  for (const char* line : {R"({"id": "a", "title": null, "text": "body"})",
                           R"({"id": "a", "title": "  ", "text": "body"})"}) {
    const auto document = ParseJsonLine(line, JsonlFields{});
    ASSERT_TRUE(document.ok()) << line << ": " << document.status();
    EXPECT_EQ(document->text, "body") << line;
    EXPECT_EQ(document->metadata, json::object()) << line;
  }
}

TEST(ParseJsonLineTest, IntegerIdsBecomeStrings) {
  const auto document = ParseJsonLine(R"({"id": 42, "text": "t"})", JsonlFields{});
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->id, "42");
}

TEST(ParseJsonLineTest, CustomFieldNames) {
  JsonlFields fields;
  fields.id = "_id";
  fields.text = "body";
  fields.title = "heading";
  const auto document = ParseJsonLine(
      R"({"_id": "x", "heading": "H", "body": "B", "id": "other", "text": "other text"})", fields);
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->id, "x");
  EXPECT_EQ(document->text, "H\nB");
  EXPECT_EQ(document->metadata, json({{"id", "other"}, {"text", "other text"}}));
}

TEST(ParseJsonLineTest, EmptyTitleFieldDisablesTitles) {
  JsonlFields fields;
  fields.title = "";
  const auto document = ParseJsonLine(R"({"id": "a", "title": "T", "text": "B"})", fields);
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->text, "B");
  EXPECT_EQ(document->metadata, json({{"title", "T"}}));
}

struct BadLineCase {
  const char* line;
  const char* message;
};

class ParseJsonLineErrorTest : public ::testing::TestWithParam<BadLineCase> {};

TEST_P(ParseJsonLineErrorTest, IsInvalidArgumentWithAReason) {
  const auto document = ParseJsonLine(GetParam().line, JsonlFields{});
  ASSERT_FALSE(document.ok()) << GetParam().line;
  EXPECT_EQ(document.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(document.status()), HasSubstr(GetParam().message)) << GetParam().line;
}

INSTANTIATE_TEST_SUITE_P(
    BadLines, ParseJsonLineErrorTest,
    ::testing::Values(BadLineCase{R"({"id": "a", "text": )", "invalid JSON"},
                      BadLineCase{R"(not json)", "invalid JSON: parse error"},
                      BadLineCase{R"({"id": "a", "text": "t"} trailing)", "invalid JSON"},
                      BadLineCase{R"(["id", "text"])", "expected a JSON object"},
                      BadLineCase{R"({"text": "t"})", "missing field \"id\""},
                      BadLineCase{R"({"id": null, "text": "t"})", "missing field \"id\""},
                      BadLineCase{R"({"id": "", "text": "t"})", "\"id\" is empty"},
                      BadLineCase{R"({"id": 1.5, "text": "t"})", "string or an integer"},
                      BadLineCase{R"({"id": ["a"], "text": "t"})", "string or an integer"},
                      BadLineCase{R"({"id": "a"})", "missing field \"text\""},
                      BadLineCase{R"({"id": "a", "text": 3})", "\"text\" must be a string"},
                      BadLineCase{R"({"id": "a", "text": " \t "})", "\"text\" is empty"},
                      BadLineCase{R"({"id": "a", "text": "t", "title": 7})",
                                  "\"title\" must be a string"}));

TEST(ParseJsonLineTest, OverlongIdIsRejected) {
  const json line = {{"id", std::string(257, 'x')}, {"text", "t"}};
  const auto document = ParseJsonLine(line.dump(), JsonlFields{});
  ASSERT_FALSE(document.ok());
  EXPECT_THAT(Message(document.status()), HasSubstr("longer than 256 bytes"));
  EXPECT_TRUE(
      ParseJsonLine(json({{"id", std::string(256, 'x')}, {"text", "t"}}).dump(), JsonlFields{})
          .ok());
}

TEST(ParseJsonlContentTest, CollectsDocumentsAndErrorsWithLineNumbers) {
  const std::string content =
      "{\"id\": \"1\", \"title\": \"T1\", \"text\": \"one\", \"lang\": \"en\"}\n"
      "\n"
      "{\"id\": \"2\", \"text\": \"two\"}\r\n"
      "{bad json\n"
      "   \n"
      "{\"id\": \"4\"}\n"
      "{\"id\": \"5\", \"text\": \"five\"}";  // no final newline
  const DocumentBatch batch = ParseJsonlContent(content, "corpus.jsonl", JsonlFields{});
  ASSERT_THAT(batch.documents, SizeIs(3));
  EXPECT_EQ(batch.documents[0].id, "1");
  EXPECT_EQ(batch.documents[0].text, "T1\none");
  EXPECT_EQ(batch.documents[0].metadata, json({{"lang", "en"}}));
  EXPECT_EQ(batch.documents[0].source, "corpus.jsonl");
  EXPECT_EQ(batch.documents[0].line, 1);
  EXPECT_EQ(batch.documents[1].id, "2");
  EXPECT_EQ(batch.documents[1].text, "two");  // the \r is not part of the line
  EXPECT_EQ(batch.documents[1].line, 3);
  EXPECT_EQ(batch.documents[2].id, "5");
  EXPECT_EQ(batch.documents[2].line, 7);

  ASSERT_THAT(batch.errors, SizeIs(2));
  EXPECT_EQ(batch.errors[0].line, 4);
  EXPECT_THAT(batch.errors[0].ToString(), HasSubstr("corpus.jsonl:4: invalid JSON"));
  EXPECT_EQ(batch.errors[1].line, 6);
  EXPECT_EQ(batch.errors[1].ToString(), "corpus.jsonl:6: missing field \"text\"");
}

TEST(ParseJsonlContentTest, EmptyContentHasNothing) {
  const DocumentBatch batch = ParseJsonlContent("\n\n  \n", "empty.jsonl", JsonlFields{});
  EXPECT_THAT(batch.documents, IsEmpty());
  EXPECT_THAT(batch.errors, IsEmpty());
}

TEST(ParseJsonlContentTest, FirstLineOffsetsNumbers) {
  const DocumentBatch batch = ParseJsonlContent("oops\n", "<stdin>", JsonlFields{}, 10);
  ASSERT_THAT(batch.errors, SizeIs(1));
  EXPECT_EQ(batch.errors[0].line, 10);
}

// --- Text files and formats -------------------------------------------------------------------

TEST(TextFileDocumentTest, IdIsThePathAndSourceIsMetadata) {
  const auto document = TextFileDocument("docs/guide/intro.md", "# Intro\nHello.\n");
  ASSERT_TRUE(document.ok()) << document.status();
  EXPECT_EQ(document->id, "docs/guide/intro.md");
  EXPECT_EQ(document->text, "# Intro\nHello.\n");
  EXPECT_EQ(document->metadata, json({{"source", "docs/guide/intro.md"}}));
  EXPECT_EQ(document->source, "docs/guide/intro.md");
  EXPECT_EQ(document->line, 0);
}

TEST(TextFileDocumentTest, RejectsEmptyBinaryAndOverlongPaths) {
  EXPECT_THAT(Message(TextFileDocument("a.txt", " \n\t").status()), HasSubstr("empty file"));
  EXPECT_THAT(Message(TextFileDocument("a.bin", std::string("ab\0cd", 5)).status()),
              HasSubstr("binary"));
  EXPECT_THAT(Message(TextFileDocument("a.txt", "caf\xe9").status()), HasSubstr("UTF-8"));
  EXPECT_THAT(Message(TextFileDocument(std::string(300, 'p'), "text").status()),
              HasSubstr("longer than 256 bytes"));
  EXPECT_TRUE(TextFileDocument("a.txt", "caf\xc3\xa9").ok());
}

TEST(ConvertFileTest, TextFileIsOneDocument) {
  const DocumentBatch batch = ConvertFile("notes.txt", "hello", InputFormat::kAuto, JsonlFields{});
  ASSERT_THAT(batch.documents, SizeIs(1));
  EXPECT_EQ(batch.documents[0].id, "notes.txt");
  EXPECT_THAT(batch.errors, IsEmpty());
}

TEST(ConvertFileTest, BadTextFileIsOneErrorWithoutLine) {
  const DocumentBatch batch = ConvertFile("empty.txt", "", InputFormat::kText, JsonlFields{});
  EXPECT_THAT(batch.documents, IsEmpty());
  ASSERT_THAT(batch.errors, SizeIs(1));
  EXPECT_EQ(batch.errors[0].ToString(), "empty.txt: empty file");
}

TEST(ConvertFileTest, JsonlByExtensionOrByRequest) {
  const std::string line = R"({"id": "a", "text": "t"})";
  EXPECT_THAT(ConvertFile("x.jsonl", line, InputFormat::kAuto, JsonlFields{}).documents, SizeIs(1));
  EXPECT_EQ(ConvertFile("x.NDJSON", line, InputFormat::kAuto, JsonlFields{}).documents[0].id, "a");
  EXPECT_EQ(ConvertFile("x.txt", line, InputFormat::kJsonl, JsonlFields{}).documents[0].id, "a");
  // Forced text: the JSON is just text.
  EXPECT_EQ(ConvertFile("x.jsonl", line, InputFormat::kText, JsonlFields{}).documents[0].text,
            line);
}

TEST(InputFormatTest, ParseAndResolve) {
  EXPECT_EQ(*ParseInputFormat("auto"), InputFormat::kAuto);
  EXPECT_EQ(*ParseInputFormat("jsonl"), InputFormat::kJsonl);
  EXPECT_EQ(*ParseInputFormat("text"), InputFormat::kText);
  EXPECT_EQ(ParseInputFormat("csv").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveInputFormat(InputFormat::kAuto, "a/b.jsonl"), InputFormat::kJsonl);
  EXPECT_EQ(ResolveInputFormat(InputFormat::kAuto, "a/b.ndjson"), InputFormat::kJsonl);
  EXPECT_EQ(ResolveInputFormat(InputFormat::kAuto, "a/b.json"), InputFormat::kText);
  EXPECT_EQ(ResolveInputFormat(InputFormat::kAuto, "jsonl"), InputFormat::kText);
  EXPECT_EQ(ResolveInputFormat(InputFormat::kText, "a.jsonl"), InputFormat::kText);
}

TEST(IsValidUtf8Test, AcceptsWellFormedAndRejectsTheRest) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(IsValidUtf8("\xc3"));                                 // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));                             // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));                         // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));                     // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

// --- Batching ---------------------------------------------------------------------------------

Document Doc(std::string id, size_t text_bytes = 10) {
  Document document;
  document.id = std::move(id);
  document.text = std::string(text_bytes, 'x');
  return document;
}

std::vector<std::string> Ids(const std::vector<Document>& batch) {
  std::vector<std::string> ids;
  for (const Document& document : batch) ids.push_back(document.id);
  return ids;
}

TEST(EncodeUpsertBodyTest, IsTheDocumentsEnvelope) {
  Document document = Doc("a", 2);
  document.metadata = {{"k", 1}};
  document.source = "not sent";
  document.line = 3;
  const json body = json::parse(EncodeUpsertBody({document, Doc("b", 1)}));
  EXPECT_EQ(body, json::parse(R"({"documents": [
      {"id": "a", "text": "xx", "metadata": {"k": 1}},
      {"id": "b", "text": "x", "metadata": {}}]})"));
}

TEST(BatcherTest, SplitsByCount) {
  std::vector<Document> documents;
  for (int i = 0; i < 7; ++i) documents.push_back(Doc(std::to_string(i)));
  const auto batches = SplitIntoBatches(std::move(documents), {.max_documents = 3});
  ASSERT_THAT(batches, SizeIs(3));
  EXPECT_THAT(Ids(batches[0]), ElementsAre("0", "1", "2"));
  EXPECT_THAT(Ids(batches[1]), ElementsAre("3", "4", "5"));
  EXPECT_THAT(Ids(batches[2]), ElementsAre("6"));
}

TEST(BatcherTest, EmitsAFullBatchAsSoonAsItIsFull) {
  Batcher batcher({.max_documents = 2});
  EXPECT_THAT(batcher.Add(Doc("a")), IsEmpty());
  const auto ready = batcher.Add(Doc("b"));
  ASSERT_THAT(ready, SizeIs(1));
  EXPECT_THAT(Ids(ready[0]), ElementsAre("a", "b"));
  EXPECT_EQ(batcher.pending_documents(), 0u);
  EXPECT_THAT(batcher.Flush(), IsEmpty());
}

TEST(BatcherTest, SplitsByBytesAndEveryBodyFits) {
  const BatchLimits limits{.max_documents = 100, .max_bytes = 1000};
  std::vector<Document> documents;
  for (int i = 0; i < 20; ++i) documents.push_back(Doc(std::to_string(i), 150));
  const auto batches = SplitIntoBatches(documents, limits);
  ASSERT_GT(batches.size(), 1u);
  size_t total = 0;
  for (const auto& batch : batches) {
    EXPECT_LE(EncodeUpsertBody(batch).size(), limits.max_bytes);
    total += batch.size();
  }
  EXPECT_EQ(total, 20u);
  // Batches are as full as allowed: the next document would not have fit.
  for (size_t i = 0; i + 1 < batches.size(); ++i) {
    std::vector<Document> grown = batches[i];
    grown.push_back(batches[i + 1].front());
    EXPECT_GT(EncodeUpsertBody(grown).size(), limits.max_bytes) << "batch " << i;
  }
  // Order is kept.
  std::vector<std::string> ids;
  for (const auto& batch : batches) {
    for (const std::string& id : Ids(batch)) ids.push_back(id);
  }
  EXPECT_EQ(ids.front(), "0");
  EXPECT_EQ(ids.back(), "19");
}

TEST(BatcherTest, OversizedDocumentTravelsAlone) {
  const BatchLimits limits{.max_documents = 10, .max_bytes = 1024};
  const auto batches = SplitIntoBatches({Doc("small1"), Doc("huge", 5000), Doc("small2")}, limits);
  ASSERT_THAT(batches, SizeIs(3));
  EXPECT_THAT(Ids(batches[0]), ElementsAre("small1"));
  EXPECT_THAT(Ids(batches[1]), ElementsAre("huge"));
  EXPECT_THAT(Ids(batches[2]), ElementsAre("small2"));
}

TEST(BatcherTest, ByteOverflowWithBatchOfOneEmitsBoth) {
  Batcher batcher({.max_documents = 1, .max_bytes = 1024});
  const auto ready = batcher.Add(Doc("a"));
  ASSERT_THAT(ready, SizeIs(1));
  EXPECT_THAT(Ids(ready[0]), ElementsAre("a"));
}

TEST(BatcherTest, EncodedSizeMatchesTheBody) {
  Document document = Doc("a\"b", 3);
  document.metadata = {{"tag", "é"}};
  EXPECT_EQ(EncodeUpsertBody({document}).size(),
            EncodedDocumentSize(document) + std::string(R"({"documents":[]})").size());
  EXPECT_EQ(EncodeUpsertBody({document, document}).size(),
            2 * EncodedDocumentSize(document) + 1 + std::string(R"({"documents":[]})").size());
}

}  // namespace
}  // namespace ailb::cli
