// The hardened Pistache request parser: what hostile heads are answered with (end to end:
// tests/integration/bad_input_test.cc).
#include "server/http/request_parser.h"

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace ailb::server {
namespace {

using Pistache::Http::HttpError;
using Pistache::Http::Private::State;

constexpr size_t kMaxRequest = 64 * 1024 + (1 << 20);
constexpr size_t kMaxHead = 1024;

// What Pistache would answer after being fed `bytes` in pieces of `piece` bytes: the HttpError's
// status, 500 for any other exception (what Pistache answers then), 200 once a request is
// parsed, 0 while it waits for more bytes.
int Feed(Pistache::Http::RequestParser& parser, std::string_view bytes, size_t piece = 4096) {
  for (size_t at = 0; at < bytes.size(); at += piece) {
    const std::string_view chunk = bytes.substr(at, piece);
    if (!parser.feed(chunk.data(), chunk.size())) return 413;
    try {
      if (parser.parse() == State::Done) return 200;
    } catch (const HttpError& e) {
      return e.code();
    } catch (const std::exception&) {
      return 500;
    }
  }
  return 0;
}

int Feed(std::string_view bytes, size_t piece = 4096) {
  std::shared_ptr<Pistache::Http::RequestParser> parser =
      NewCheckedRequestParser(kMaxRequest, kMaxHead);
  return Feed(*parser, bytes, piece);
}

std::string Post(std::string_view content_length, std::string_view body) {
  return std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ")
      .append(content_length)
      .append("\r\n\r\n")
      .append(body);
}

TEST(CheckedRequestParserTest, ParsesOrdinaryRequests) {
  auto parser = NewCheckedRequestParser(kMaxRequest, kMaxHead);
  ASSERT_EQ(Feed(*parser, Post("7", "{\"a\":1}"), /*piece=*/3), 200);
  EXPECT_EQ(parser->request.body(), "{\"a\":1}");
  EXPECT_EQ(parser->request.resource(), "/v1/chat/completions");
  EXPECT_EQ(Feed("GET /healthz HTTP/1.1\r\n\r\n"), 200);
  EXPECT_EQ(Feed("GET /healthz HTTP/1.0\r\nHost: a:8080\r\n\r\n"), 200);
  EXPECT_EQ(Feed(Post(" 7 ", "{\"a\":1}")), 200);
  EXPECT_EQ(Feed(Post("0", "")), 200);
  EXPECT_EQ(Feed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            200);
}

TEST(CheckedRequestParserTest, WaitsForTheRestOfAnIncompleteRequest) {
  EXPECT_EQ(Feed("GET /healthz HTTP/1.1\r\nHost: x\r\n"), 0);
  EXPECT_EQ(Feed("GET /hea"), 0);
  EXPECT_EQ(Feed(Post("100", "{\"a\"")), 0);
  // A body may hold blank lines; only the head is checked for them.
  EXPECT_EQ(Feed(Post("100", "x\r\n\r\ny")), 0);
}

TEST(CheckedRequestParserTest, BadContentLengthIsA400Not500) {
  EXPECT_EQ(Feed(Post("-5", "{}")), 400);
  EXPECT_EQ(Feed(Post("abc", "{}")), 400);
  EXPECT_EQ(Feed(Post("5x", "{}")), 400);
  EXPECT_EQ(Feed(Post("0x10", "{}")), 400);
  // Beyond 64 bits: Pistache's typed header parser throws out_of_range.
  EXPECT_EQ(Feed(Post("99999999999999999999999", "{}")), 400);
}

TEST(CheckedRequestParserTest, ContentLengthOverTheLimitIsRefusedAtOnce) {
  EXPECT_EQ(Feed(Post(std::to_string(kMaxRequest + 1), "{}")), 413);
  EXPECT_EQ(Feed(Post("18446744073709551615", "{}")), 413);
  EXPECT_EQ(Feed(Post(std::to_string(kMaxRequest - 1000), "{}")), 0);
}

TEST(CheckedRequestParserTest, TypedHeaderParseFailuresAreA400) {
  for (const char* header : {"Host: a:99999999999", "Host: a:-1", "Host: [::1", "Date: garbage",
                             "Cache-Control: max-age=abc"}) {
    EXPECT_EQ(Feed(std::string("GET /healthz HTTP/1.1\r\n") + header + "\r\n\r\n"), 400) << header;
  }
}

TEST(CheckedRequestParserTest, CompleteButUnparsableHeadIsA400) {
  EXPECT_EQ(Feed("GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"), 400);
  EXPECT_EQ(Feed("GET /healthz\r\n\r\n"), 400);
  EXPECT_EQ(Feed(std::string("\x00\x01\x02garbage\r\n\r\n", 14)), 400);
  // Byte by byte: the answer comes with the blank line.
  EXPECT_EQ(Feed("GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", /*piece=*/1), 400);
}

TEST(CheckedRequestParserTest, OversizedHeadIsA431) {
  EXPECT_EQ(Feed("GET /healthz HTTP/1.1\r\nX-Big: " + std::string(2 * kMaxHead, 'a') + "\r\n\r\n"),
            431);
  std::string many = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 1000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(Feed(many + "\r\n"), 431);
  EXPECT_EQ(Feed("GET /" + std::string(2 * kMaxHead, 'a') + " HTTP/1.1\r\n\r\n"), 431);
  // Garbage without a line end is cut off too, instead of being re-scanned on every read.
  EXPECT_EQ(Feed(std::string(3 * kMaxHead, 'x')), 431);
  // A head just under the limit followed by a large body is fine.
  const std::string body(8 * kMaxHead, 'b');
  EXPECT_EQ(Feed("POST / HTTP/1.1\r\nX-Big: " + std::string(kMaxHead - 100, 'a') +
                 "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body),
            200);
}

TEST(CheckedRequestParserTest, LineAndHeaderLimitsApplySeparately) {
  // Both under the limit, together over it, arriving in one read.
  const std::string line = "GET /" + std::string(kMaxHead - 100, 'u') + " HTTP/1.1\r\n";
  const std::string headers = "X-A: " + std::string(kMaxHead - 100, 'a') + "\r\n\r\n";
  EXPECT_EQ(Feed(line + headers, /*piece=*/1 << 20), 200);
  // A short line followed by too many header bytes is the header section's fault.
  auto parser = NewCheckedRequestParser(kMaxRequest, kMaxHead);
  const std::string request =
      "GET / HTTP/1.1\r\nX-A: " + std::string(2 * kMaxHead, 'a') + "\r\n\r\n";
  ASSERT_TRUE(parser->feed(request.data(), request.size()));
  try {
    parser->parse();
    ADD_FAILURE() << "accepted";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.code(), 431);
    EXPECT_EQ(e.reason(), "Request header fields too large");
  }
}

TEST(CheckedRequestParserTest, HugeHeadCostsLinearTime) {
  // The stock parser took seconds for this (it re-scans the growing head on every read).
  auto parser = NewCheckedRequestParser(kMaxRequest, kMaxHeadBytes);
  const std::string head = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(1 << 20, 'a');
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(Feed(*parser, head), 431);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(500));
}

}  // namespace
}  // namespace ailb::server
