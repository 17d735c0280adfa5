// libFuzzer entry: any bytes as an incoming frame, through the server's decoder front: the header
// check must refuse them with streamgen::Error or accept a size within the budget, and what it
// accepts must decode to exactly that size, or be refused as corrupt.
// stb's decoders (PNG, BMP) are compiled here from Debian's single-header stb_image.h, so that
// libFuzzer sees their coverage; libjpeg-turbo (JPEG) is the system library, fuzzed upstream.
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "streamgen/error.h"
#include "streamgen/image_header.h"

namespace {
constexpr std::int64_t kFuzzPixelBudget = 1024 * 1024;  // small, so that each input decodes in milliseconds
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace streamgen;
  try {
    const auto image = decode_rgb8(std::string_view(reinterpret_cast<const char*>(data), size), "the frame", kFuzzPixelBudget);
    if (image.width <= 0 || image.height <= 0 || static_cast<std::int64_t>(image.width) * image.height > kFuzzPixelBudget) std::abort();
    if (image.rgb.size() != static_cast<std::size_t>(image.width) * image.height * 3) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
