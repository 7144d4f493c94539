// What providers send back: non-streamed replies, error replies and streams (SSE for OpenAI and
// Anthropic, NDJSON for Ollama) through every adapter's decoders. The first byte picks the
// provider and where the stream is split, so chunk boundaries anywhere are exercised.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "ailb/config/config.h"
#include "ailb/provider/adapter.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t selector = data[0];
  const size_t split = data[1];
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  const ailb::config::ProviderKind kinds[] = {ailb::config::ProviderKind::kOpenAI,
                                              ailb::config::ProviderKind::kAnthropic,
                                              ailb::config::ProviderKind::kOllama};
  absl::StatusOr<std::shared_ptr<const ailb::provider::ProviderAdapter>> adapter =
      ailb::provider::AdapterFor(kinds[selector % 3]);
  if (!adapter.ok()) return 0;
  (void)(*adapter)->DecodeChat(body);
  const int status = 400 + (selector % 130);
  (void)(*adapter)->DecodeError(status, {{"Retry-After", std::string(body.substr(0, 16))}}, body);
  std::unique_ptr<ailb::provider::StreamDecoder> decoder = (*adapter)->NewStreamDecoder();
  std::vector<nlohmann::json> chunks;
  // Feed in pieces of `split + 1` bytes: 1-byte feeds find state bugs, larger ones speed.
  const size_t piece = split + 1;
  for (size_t offset = 0; offset < body.size(); offset += piece) {
    if (!decoder->Feed(body.substr(offset, piece), chunks).ok()) return 0;
  }
  (void)decoder->Finish(chunks);
  return 0;
}
