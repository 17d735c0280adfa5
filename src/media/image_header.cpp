#include "streamgen/image_header.h"

#include <stb/stb_image.h>

#include <limits>

#include "streamgen/error.h"

namespace streamgen {

ImageSize checked_image_size(std::string_view bytes, const std::string& what, std::int64_t max_pixels) {
  if (bytes.empty() || bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) throw Error("cannot decode " + what + ": empty or too large");
  // stb also reads GIF, PSD, TGA, HDR, PIC and PNM: decoders nobody sends a camera frame in and
  // that see far less scrutiny than PNG and JPEG. Only the three formats streamgen takes get through.
  const auto starts_with = [&](std::string_view magic) { return bytes.substr(0, magic.size()) == magic; };
  if (!starts_with(std::string_view("\x89PNG\r\n\x1a\n", 8)) && !starts_with("\xff\xd8\xff") && !starts_with("BM"))
    throw Error("cannot decode " + what + ": not a PNG, JPEG or BMP file");
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &w, &h, &channels))
    throw Error("cannot decode " + what + ": " + stbi_failure_reason());
  if (w <= 0 || h <= 0) throw Error("cannot decode " + what + ": the header gives a size of " + std::to_string(w) + "x" + std::to_string(h));
  if (static_cast<std::int64_t>(w) * h > max_pixels)
    throw Error("cannot decode " + what + ": " + std::to_string(w) + "x" + std::to_string(h) + " pixels is more than the " +
                std::to_string(max_pixels) + " accepted");
  return {w, h};
}

}  // namespace streamgen
