// libFuzzer entry: any bytes as an incoming frame. The header check must refuse them with
// streamgen::Error or accept a size within the budget; what it accepts is then decoded, and the
// decoder must produce exactly the size the header check saw (else the budget could be bypassed).
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
    const auto header = checked_image_size(std::string_view(reinterpret_cast<const char*>(data), size), "the frame", kFuzzPixelBudget);
    if (header.width <= 0 || header.height <= 0 || static_cast<std::int64_t>(header.width) * header.height > kFuzzPixelBudget) std::abort();
    int w = 0, h = 0, channels = 0;
    if (auto* pixels = stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &channels, 3)) {
      if (w != header.width || h != header.height) std::abort();
      stbi_image_free(pixels);
    }
  } catch (const Error&) {
  }
  return 0;
}
