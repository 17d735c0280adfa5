#pragma once
// Untrusted image bytes (PNG/JPEG/BMP, e.g. a client's frame): their size, read from the header
// before anything is decoded, and then their pixels. A file of a few hundred bytes can claim
// 16000×16000 and have a decoder allocate gigabytes, so callers refuse what is over their pixel
// budget first. JPEG goes to libjpeg-turbo and PNG to libpng, the decoders browsers and PIL use:
// Debian 12's stb 2.27, which our fuzzer ran into, writes past a heap buffer on a crafted JPEG Huffman
// table (stb issue 1289) and allocates gigabytes for a PNG chunk that claims them. stb reads only BMP.
// Torch-free so that the fuzzer builds it on its own.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {

// The most pixels an image may have unless the caller says otherwise: 4096², 48 MiB as RGB.
inline constexpr std::int64_t kMaxDecodedPixels = 4096LL * 4096;

struct ImageSize {
  int width = 0, height = 0;
};

// The image's size from its header; an Error ("cannot decode <what>: ...") if the bytes do not start
// like a PNG, JPEG or BMP file (stb's other decoders are never reached), the header is malformed, or
// the image has more than `max_pixels` pixels.
ImageSize checked_image_size(std::string_view bytes, const std::string& what, std::int64_t max_pixels = kMaxDecodedPixels);

struct DecodedImage {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // height × width × 3, row-major
};

// checked_image_size, then the pixels as 8-bit RGB; an Error naming `what` if the data is corrupt.
DecodedImage decode_rgb8(std::string_view bytes, const std::string& what, std::int64_t max_pixels = kMaxDecodedPixels);

}  // namespace streamgen
