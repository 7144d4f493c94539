#include "server/http/request_parser.h"

#include <charconv>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace ailb::server {
namespace {

using Pistache::StreamCursor;
using Pistache::Http::Code;
using Pistache::Http::HttpError;
using Pistache::Http::Request;
using Pistache::Http::Private::State;
using Pistache::Http::Private::Step;
using Pistache::Http::Private::StepId;

// Whether the first `size` bytes at `data` hold the end of the part a step parses: the request
// line's CRLF, or the header section's blank line (which comes first when there are no headers).
bool PartEnds(const char* data, size_t size, bool header_section) {
  const std::string_view text(data, size);
  if (!header_section) return text.find("\r\n") != std::string_view::npos;
  return text.substr(0, 2) == "\r\n" || text.find("\r\n\r\n") != std::string_view::npos;
}

// The request line or header step of Pistache, with a size cap, exceptions turned into 400s and
// a 400 for a complete head the step cannot finish.
class HeadStep final : public Step {
 public:
  HeadStep(std::unique_ptr<Step> inner, Request* request, size_t max_bytes, bool header_section)
      : Step(request),
        inner_(std::move(inner)),
        max_bytes_(max_bytes),
        header_section_(header_section) {}

  StepId id() const override { return inner_->id(); }

  State apply(StreamCursor& cursor) override {
    // On every read the step starts again from where it started: cap what it may scan.
    if (cursor.remaining() > max_bytes_ &&
        !PartEnds(cursor.offset(), max_bytes_, header_section_)) {
      raise(header_section_ ? "Request header fields too large" : "Request line too large",
            Code::Request_Header_Fields_Too_Large);
    }
    State state = State::Again;
    try {
      state = inner_->apply(cursor);
    } catch (const HttpError&) {
      throw;
    } catch (const std::exception&) {
      // A typed header's parser refused the value (Host port, Date, Content-Length overflow...).
      raise("Malformed request header");
    }
    // The step reverts the cursor to its start when it needs more bytes: if the end of its part
    // is already there, more bytes will not help.
    if (state == State::Again && PartEnds(cursor.offset(), cursor.remaining(), header_section_)) {
      raise(header_section_ ? "Malformed request header" : "Malformed request line");
    }
    return state;
  }

 private:
  std::unique_ptr<Step> inner_;
  const size_t max_bytes_;
  const bool header_section_;
};

// Pistache's body step, behind a Content-Length check.
class BodyGuardStep final : public Step {
 public:
  BodyGuardStep(std::unique_ptr<Step> inner, Request* request, size_t max_request_bytes)
      : Step(request),
        inner_(std::move(inner)),
        request_(request),
        max_request_bytes_(max_request_bytes) {}

  StepId id() const override { return inner_->id(); }

  State apply(StreamCursor& cursor) override {
    if (std::optional<Pistache::Http::Header::Raw> length =
            request_->headers().tryGetRaw("Content-Length")) {
      std::string value = length->value();
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) {
        raise("Invalid Content-Length");
      }
      uint64_t bytes = 0;
      const std::from_chars_result parsed =
          std::from_chars(value.data(), value.data() + value.size(), bytes);
      if (parsed.ec != std::errc() || bytes > max_request_bytes_) {
        raise("Request exceeded maximum buffer size", Code::Request_Entity_Too_Large);
      }
    }
    return inner_->apply(cursor);
  }

 private:
  std::unique_ptr<Step> inner_;
  const Request* request_;
  const size_t max_request_bytes_;
};

class CheckedRequestParser final : public Pistache::Http::RequestParser {
 public:
  CheckedRequestParser(size_t max_request_bytes, size_t max_head_bytes)
      : Pistache::Http::RequestParser(max_request_bytes) {
    // Pistache's steps: request line, headers, body.
    allSteps[0] = std::make_unique<HeadStep>(std::move(allSteps[0]), &request, max_head_bytes,
                                             /*header_section=*/false);
    allSteps[1] = std::make_unique<HeadStep>(std::move(allSteps[1]), &request, max_head_bytes,
                                             /*header_section=*/true);
    allSteps[2] =
        std::make_unique<BodyGuardStep>(std::move(allSteps[2]), &request, max_request_bytes);
  }
};

}  // namespace

std::shared_ptr<Pistache::Http::RequestParser> NewCheckedRequestParser(size_t max_request_bytes,
                                                                       size_t max_head_bytes) {
  return std::make_shared<CheckedRequestParser>(max_request_bytes, max_head_bytes);
}

}  // namespace ailb::server
