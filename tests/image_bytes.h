#pragma once
// Image bytes made by hand for tests and the load suite (no LibTorch, no GoogleTest).
#include <cstdint>
#include <string>

namespace streamgen::test {

// A PNG of a few dozen bytes whose header claims width x height, with no image data after it: what a
// decompression bomb shows a decoder that trusts the header.
inline std::string png_header_claiming(std::uint32_t width, std::uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  const auto be32 = [&](std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<char>((v >> shift) & 0xffu));
  };
  be32(13);
  png += "IHDR";
  be32(width);
  be32(height);
  png += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
  // The chunk's CRC-32 over type and data (libpng checks it; stb does not).
  std::uint32_t crc = 0xffffffffu;
  for (std::size_t i = 12; i < png.size(); ++i) {
    crc ^= static_cast<std::uint8_t>(png[i]);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  be32(crc ^ 0xffffffffu);
  return png;
}

}  // namespace streamgen::test
