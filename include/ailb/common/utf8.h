// UTF-8 decoding shared by the text code (chunker, embedder, session memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ailb {

struct Utf8Char {
  size_t length = 0;  // 1-4; 0 when the bytes at the position are not well-formed UTF-8
  uint32_t code_point = 0;
};

// Decodes the well-formed UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code points
// past U+10FFFF) that starts at text[i], i < text.size().
inline Utf8Char DecodeUtf8(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {1, b0};
  size_t length;
  uint32_t code_point;
  unsigned char low = 0x80, high = 0xBF;  // range allowed for the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
    code_point = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    code_point = b0 & 0x0F;
    if (b0 == 0xE0) low = 0xA0;   // overlong
    if (b0 == 0xED) high = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    code_point = b0 & 0x07;
    if (b0 == 0xF0) low = 0x90;   // overlong
    if (b0 == 0xF4) high = 0x8F;  // past U+10FFFF
  } else {
    return {};
  }
  if (i + length > text.size()) return {};
  for (size_t k = 1; k < length; ++k) {
    const unsigned char b = byte(i + k);
    if (k == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xBF)) return {};
    code_point = (code_point << 6) | (b & 0x3F);
  }
  return {length, code_point};
}

// True when all of `text` is well-formed UTF-8.
inline bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t length = DecodeUtf8(text, i).length;
    if (length == 0) return false;
    i += length;
  }
  return true;
}

}  // namespace ailb
