// Server-sent events decoding, shared by every adapter whose upstream streams SSE.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ailb::provider {

struct SseEvent {
  std::string event;  // the `event:` field; empty for the default "message"
  std::string data;   // `data:` lines joined with '\n'
};

// Splits a byte stream into events. Network reads do not align with events, so bytes are
// buffered until a blank line ends an event. Handles \n, \r\n and \r line ends and comments.
// Not thread-safe: one decoder per stream.
class SseDecoder {
 public:
  // Appends every event completed by `bytes` to `out`.
  void Feed(std::string_view bytes, std::vector<SseEvent>& out);
  // Bytes held that do not yet form a complete event.
  size_t buffered() const { return buffer_.size() - consumed_; }
  // True when a partial event is pending (the stream was cut mid-event if it ends now).
  bool HasPartialEvent() const;

 private:
  void ProcessLine(std::string_view line, std::vector<SseEvent>& out);

  std::string buffer_;
  size_t consumed_ = 0;
  bool last_was_cr_ = false;
  SseEvent current_;
  bool current_has_data_ = false;
};

// Frames one SSE `data:` event for a client.
std::string SseDataEvent(std::string_view json);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace ailb::provider
