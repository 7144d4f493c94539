// The SSE decoder: line endings, events split across network reads at any byte, multi-line data,
// comments, the event field and the partial-event report used to detect cut streams.
#include "ailb/provider/sse.h"

#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::provider {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

MATCHER_P2(Event, event, data, "") { return arg.event == event && arg.data == data; }

std::vector<SseEvent> DecodeAll(std::string_view text) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  decoder.Feed(text, out);
  return out;
}

std::vector<SseEvent> DecodePieces(const std::vector<std::string_view>& pieces) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  for (std::string_view piece : pieces) decoder.Feed(piece, out);
  return out;
}

bool SameEvents(const std::vector<SseEvent>& a, const std::vector<SseEvent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].event != b[i].event || a[i].data != b[i].data) return false;
  }
  return true;
}

std::string Describe(const std::vector<SseEvent>& events) {
  std::string out;
  for (const SseEvent& e : events) out += "[" + e.event + "|" + e.data + "]";
  return out;
}

TEST(SseDecoderTest, LfLineEndings) {
  EXPECT_THAT(DecodeAll("data: one\n\ndata: two\n\n"),
              ElementsAre(Event("", "one"), Event("", "two")));
}

TEST(SseDecoderTest, CrLfLineEndings) {
  EXPECT_THAT(DecodeAll("data: one\r\n\r\ndata: two\r\n\r\n"),
              ElementsAre(Event("", "one"), Event("", "two")));
}

TEST(SseDecoderTest, CrLineEndings) {
  EXPECT_THAT(DecodeAll("data: one\r\rdata: two\r\r"),
              ElementsAre(Event("", "one"), Event("", "two")));
}

TEST(SseDecoderTest, MixedLineEndings) {
  EXPECT_THAT(DecodeAll("data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"),
              ElementsAre(Event("", "a\nb\nc"), Event("", "d")));
}

TEST(SseDecoderTest, CrFollowedByBlankCrLfLineDispatches) {
  // "\r" ends the data line, then "\r\n" is an empty line.
  EXPECT_THAT(DecodeAll("data: x\r\r\n"), ElementsAre(Event("", "x")));
}

TEST(SseDecoderTest, MultiLineDataIsJoinedWithNewline) {
  EXPECT_THAT(DecodeAll("data: first\ndata: second\ndata:third\n\n"),
              ElementsAre(Event("", "first\nsecond\nthird")));
}

TEST(SseDecoderTest, OnlyOneLeadingSpaceIsRemoved) {
  EXPECT_THAT(DecodeAll("data:  two spaces\n\ndata:none\n\n"),
              ElementsAre(Event("", " two spaces"), Event("", "none")));
}

TEST(SseDecoderTest, ValueMayContainColons) {
  EXPECT_THAT(DecodeAll("data: {\"a\":\"b:c\"}\n\n"), ElementsAre(Event("", "{\"a\":\"b:c\"}")));
}

TEST(SseDecoderTest, DataWithoutColonIsAnEmptyDataLine) {
  EXPECT_THAT(DecodeAll("data\n\n"), ElementsAre(Event("", "")));
  EXPECT_THAT(DecodeAll("data\ndata\n\n"), ElementsAre(Event("", "\n")));
  EXPECT_THAT(DecodeAll("data:\n\n"), ElementsAre(Event("", "")));
}

TEST(SseDecoderTest, CommentsAreIgnored) {
  EXPECT_THAT(DecodeAll(": keep-alive\n\n:another\ndata: x\n: inside\ndata: y\n\n"),
              ElementsAre(Event("", "x\ny")));
}

TEST(SseDecoderTest, CommentOnlyBlocksProduceNoEvents) {
  EXPECT_THAT(DecodeAll(": ping\n\n: ping\r\n\r\n:\n\n"), IsEmpty());
}

TEST(SseDecoderTest, BlankLinesWithoutDataProduceNoEvents) {
  EXPECT_THAT(DecodeAll("\n\n\n\r\n\r\r"), IsEmpty());
}

TEST(SseDecoderTest, EventField) {
  EXPECT_THAT(
      DecodeAll(
          "event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\ndata: plain\n\n"),
      ElementsAre(Event("message_start", "{\"a\":1}"), Event("ping", "{}"), Event("", "plain")));
}

TEST(SseDecoderTest, EventFieldAfterDataStillApplies) {
  EXPECT_THAT(DecodeAll("data: x\nevent: late\n\n"), ElementsAre(Event("late", "x")));
}

TEST(SseDecoderTest, EventWithoutDataIsNotDispatchedAndDoesNotLeak) {
  // The event name of a data-less block must not stick to the next event.
  EXPECT_THAT(DecodeAll("event: lonely\n\ndata: next\n\n"), ElementsAre(Event("", "next")));
}

TEST(SseDecoderTest, IdRetryAndUnknownFieldsAreIgnored) {
  EXPECT_THAT(DecodeAll("id: 7\nretry: 100\nfoo: bar\ndata: x\n\n"), ElementsAre(Event("", "x")));
}

TEST(SseDecoderTest, FieldNamesAreCaseSensitive) {
  EXPECT_THAT(DecodeAll("Data: x\n\ndata: y\n\n"), ElementsAre(Event("", "y")));
}

TEST(SseDecoderTest, IncompleteEventIsHeldUntilBlankLine) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  decoder.Feed("data: hel", out);
  EXPECT_THAT(out, IsEmpty());
  EXPECT_EQ(decoder.buffered(), 9u);
  decoder.Feed("lo\n", out);
  EXPECT_THAT(out, IsEmpty());
  EXPECT_EQ(decoder.buffered(), 0u);
  decoder.Feed("\n", out);
  EXPECT_THAT(out, ElementsAre(Event("", "hello")));
}

TEST(SseDecoderTest, FeedAppendsWithoutClearingOutput) {
  SseDecoder decoder;
  std::vector<SseEvent> out = {SseEvent{"pre", "existing"}};
  decoder.Feed("data: new\n\n", out);
  EXPECT_THAT(out, ElementsAre(Event("pre", "existing"), Event("", "new")));
}

TEST(SseDecoderTest, HasPartialEvent) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  EXPECT_FALSE(decoder.HasPartialEvent());
  decoder.Feed("data: a", out);  // an unterminated line
  EXPECT_TRUE(decoder.HasPartialEvent());
  decoder.Feed("\n", out);  // a complete line but no blank line yet
  EXPECT_TRUE(decoder.HasPartialEvent());
  decoder.Feed("\n", out);
  EXPECT_FALSE(decoder.HasPartialEvent());
  ASSERT_EQ(out.size(), 1u);

  decoder.Feed(": comment\n", out);
  EXPECT_FALSE(decoder.HasPartialEvent());
  decoder.Feed(": partial comm", out);
  EXPECT_TRUE(decoder.HasPartialEvent());
  decoder.Feed("ent\n", out);
  EXPECT_FALSE(decoder.HasPartialEvent());

  decoder.Feed("data: b\r", out);  // a CR-terminated line; its LF may still come
  EXPECT_TRUE(decoder.HasPartialEvent());
  decoder.Feed("\n\r\n", out);
  EXPECT_FALSE(decoder.HasPartialEvent());
  EXPECT_THAT(out, ElementsAre(Event("", "a"), Event("", "b")));
}

// A transcript exercising every feature, with its events.
constexpr std::string_view kTranscript =
    ": comment\r\n"
    "event: e1\r\n"
    "data: one\r\n"
    "data: two\r\n"
    "\r\n"
    "data: {\"x\":\"a:b\"}\n"
    "\n"
    "data: three\r"
    "\r"
    "id: 9\n"
    "data:four\r\n"
    "\r\n"
    "data: five\r"
    "\r\n"
    "data: six\n"
    "data\n"
    "\n";

std::vector<SseEvent> TranscriptEvents() {
  return {{"e1", "one\ntwo"}, {"", "{\"x\":\"a:b\"}"}, {"", "three"}, {"", "four"}, {"", "five"},
          {"", "six\n"}};
}

TEST(SseDecoderTest, TranscriptAllAtOnce) {
  EXPECT_TRUE(SameEvents(DecodeAll(kTranscript), TranscriptEvents()))
      << Describe(DecodeAll(kTranscript));
}

TEST(SseDecoderTest, SplitAtEveryByteBoundaryGivesIdenticalEvents) {
  const std::vector<SseEvent> expected = TranscriptEvents();
  for (size_t cut = 0; cut <= kTranscript.size(); ++cut) {
    const std::vector<SseEvent> got =
        DecodePieces({kTranscript.substr(0, cut), kTranscript.substr(cut)});
    EXPECT_TRUE(SameEvents(got, expected)) << "cut at " << cut << ": " << Describe(got);
  }
}

TEST(SseDecoderTest, SplitAtEveryPairOfBoundariesGivesIdenticalEvents) {
  const std::vector<SseEvent> expected = TranscriptEvents();
  for (size_t a = 0; a <= kTranscript.size(); ++a) {
    for (size_t b = a; b <= kTranscript.size(); ++b) {
      const std::vector<SseEvent> got = DecodePieces(
          {kTranscript.substr(0, a), kTranscript.substr(a, b - a), kTranscript.substr(b)});
      ASSERT_TRUE(SameEvents(got, expected))
          << "cuts at " << a << "," << b << ": " << Describe(got);
    }
  }
}

TEST(SseDecoderTest, ByteByByteGivesIdenticalEvents) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  for (char c : kTranscript) decoder.Feed(std::string_view(&c, 1), out);
  EXPECT_TRUE(SameEvents(out, TranscriptEvents())) << Describe(out);
  EXPECT_FALSE(decoder.HasPartialEvent());
}

TEST(SseDecoderTest, EventsAreDeliveredAsSoonAsTheirBlankLineArrives) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  size_t dispatched = 0;
  std::vector<size_t> counts;
  for (char c : kTranscript) {
    decoder.Feed(std::string_view(&c, 1), out);
    if (out.size() != dispatched) {
      dispatched = out.size();
      counts.push_back(dispatched);
    }
  }
  EXPECT_THAT(counts, ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(SseDecoderTest, LargeStreamAcrossBufferCompaction) {
  // Enough bytes, in uneven pieces, to pass the decoder's compaction threshold many times.
  std::string transcript;
  std::vector<SseEvent> expected;
  for (int i = 0; i < 400; ++i) {
    std::string data = std::to_string(i) + ":" + std::string(i % 97, 'x');
    const char* ending = (i % 3 == 0) ? "\n" : (i % 3 == 1) ? "\r\n" : "\r";
    transcript += "data: " + data + ending + ending;
    expected.push_back({"", data});
  }
  const std::string big(6000, 'B');
  transcript += "data: " + big + "\n\n";
  expected.push_back({"", big});
  for (size_t piece : {2u, 7u, 4095u, 4097u, 65536u}) {
    SseDecoder decoder;
    std::vector<SseEvent> out;
    for (size_t offset = 0; offset < transcript.size(); offset += piece) {
      decoder.Feed(std::string_view(transcript).substr(offset, piece), out);
    }
    EXPECT_TRUE(SameEvents(out, expected)) << "piece " << piece << ", got " << out.size();
    EXPECT_EQ(decoder.buffered(), 0u);
  }
}

TEST(SseDecoderTest, EmptyFeedIsHarmless) {
  SseDecoder decoder;
  std::vector<SseEvent> out;
  decoder.Feed("", out);
  decoder.Feed("data: a\r", out);
  decoder.Feed("", out);
  decoder.Feed("\n", out);
  decoder.Feed("", out);
  decoder.Feed("\n", out);
  EXPECT_THAT(out, ElementsAre(Event("", "a")));
}

TEST(SseDecoderTest, BinaryAndNulBytesPassThrough) {
  const std::string text = std::string("data: a\0b\xff", 10) + "\n\n";
  std::vector<SseEvent> out = DecodeAll(text);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, std::string("a\0b\xff", 4));
}

TEST(SseDataEventTest, FramesData) {
  EXPECT_EQ(SseDataEvent("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseDataEvent(""), "data: \n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(SseDataEventTest, RoundTripsThroughTheDecoder) {
  const std::string framed = SseDataEvent("{\"k\":\"v\"}") + std::string(kSseDone);
  EXPECT_THAT(DecodeAll(framed), ElementsAre(Event("", "{\"k\":\"v\"}"), Event("", "[DONE]")));
}

}  // namespace
}  // namespace ailb::provider
