// The SSE event parser under every provider stream: arbitrary bytes, split at arbitrary points,
// must give the same events as one feed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ailb/provider/sse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t piece = static_cast<size_t>(data[0]) + 1;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  ailb::provider::SseDecoder whole;
  std::vector<ailb::provider::SseEvent> at_once;
  whole.Feed(bytes, at_once);
  ailb::provider::SseDecoder split;
  std::vector<ailb::provider::SseEvent> in_pieces;
  for (size_t offset = 0; offset < bytes.size(); offset += piece) {
    split.Feed(bytes.substr(offset, piece), in_pieces);
  }
  if (at_once.size() != in_pieces.size()) std::abort();
  for (size_t i = 0; i < at_once.size(); ++i) {
    if (at_once[i].data != in_pieces[i].data || at_once[i].event != in_pieces[i].event) {
      std::abort();
    }
  }
  return 0;
}
