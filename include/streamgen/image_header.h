#pragma once
// The first look at untrusted image bytes (PNG/JPEG/BMP): their size, read from the header before
// anything is decoded. A file of a few hundred bytes can claim 16000×16000 and have a decoder
// allocate gigabytes, so callers refuse what is over their pixel budget here. Torch-free so that
// the fuzzer builds it on its own.
#include <cstdint>
#include <string>
#include <string_view>

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

}  // namespace streamgen
