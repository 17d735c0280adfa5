#include "streamgen/image_header.h"

#include <png.h>
#include <stb/stb_image.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include "streamgen/error.h"

namespace streamgen {
namespace {

enum class Format { Png, Jpeg, Bmp };

// stb also reads GIF, PSD, TGA, HDR, PIC and PNM: decoders nobody sends a camera frame in and that
// see far less scrutiny than PNG and JPEG. Only the three formats streamgen takes get through.
Format sniff(std::string_view bytes, const std::string& what) {
  if (bytes.empty() || bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) throw Error("cannot decode " + what + ": empty or too large");
  const auto starts_with = [&](std::string_view magic) { return bytes.substr(0, magic.size()) == magic; };
  if (starts_with(std::string_view("\x89PNG\r\n\x1a\n", 8))) return Format::Png;
  if (starts_with("\xff\xd8\xff")) return Format::Jpeg;
  if (starts_with("BM")) return Format::Bmp;
  throw Error("cannot decode " + what + ": not a PNG, JPEG or BMP file");
}

// A TurboJPEG decompressor for one image. Not reused: libjpeg-turbo 2.1 can leave a handle in a bad
// state after a corrupt image (the next good one then fails with "Bogus DQT index"), and a fresh one
// costs microseconds.
struct JpegDecoder {
  tjhandle h = tjInitDecompress();
  JpegDecoder() {
    if (!h) throw Error("cannot start the JPEG decoder (libjpeg-turbo)");
  }
  ~JpegDecoder() { tjDestroy(h); }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
};

const unsigned char* data_of(std::string_view bytes) { return reinterpret_cast<const unsigned char*>(bytes.data()); }

// libpng's simplified API over bytes in memory; the header is read on construction.
struct PngReader {
  png_image image{};
  PngReader(std::string_view bytes, const std::string& what) {
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) throw Error("cannot decode " + what + ": " + image.message);
  }
  ~PngReader() { png_image_free(&image); }
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
};

// The size in the header of an image already sniffed as `format`, checked against the budget.
// `jpeg`: the decompressor that will decode it (JPEG only), so that one handle serves both.
ImageSize header_size(std::string_view bytes, Format format, tjhandle jpeg, const std::string& what, std::int64_t max_pixels) {
  int w = 0, h = 0;
  if (format == Format::Jpeg) {
    int subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(jpeg, data_of(bytes), static_cast<unsigned long>(bytes.size()), &w, &h, &subsampling, &colorspace) != 0)
      throw Error("cannot decode " + what + ": " + tjGetErrorStr2(jpeg));
  } else if (format == Format::Png) {
    // The PNG format puts IHDR first, at a fixed place: width and height are read from it without
    // a parser (libpng validates the whole chunk, CRC included, when it decodes).
    if (bytes.size() < 33 || bytes.substr(12, 4) != "IHDR") throw Error("cannot decode " + what + ": a PNG must start with its IHDR chunk");
    const auto be32 = [&](std::size_t at) {
      std::uint32_t v = 0;
      for (std::size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<std::uint8_t>(bytes[at + k]);
      return static_cast<int>(std::min<std::uint32_t>(v, std::numeric_limits<int>::max()));
    };
    w = be32(16);
    h = be32(20);
  } else {
    int channels = 0;
    if (!stbi_info_from_memory(data_of(bytes), static_cast<int>(bytes.size()), &w, &h, &channels))
      throw Error("cannot decode " + what + ": " + stbi_failure_reason());
  }
  if (w <= 0 || h <= 0) throw Error("cannot decode " + what + ": the header gives a size of " + std::to_string(w) + "x" + std::to_string(h));
  if (static_cast<std::int64_t>(w) * h > max_pixels)
    throw Error("cannot decode " + what + ": " + std::to_string(w) + "x" + std::to_string(h) + " pixels is more than the " +
                std::to_string(max_pixels) + " accepted");
  return {w, h};
}

// A decoder that produced another size than the header's would write past the buffer sized from it.
void check_decoded_size(int w, int h, ImageSize header, const std::string& what) {
  if (w != header.width || h != header.height)
    throw Error("cannot decode " + what + ": decoded " + std::to_string(w) + "x" + std::to_string(h) + ", the header said " +
                std::to_string(header.width) + "x" + std::to_string(header.height));
}

}  // namespace

ImageSize checked_image_size(std::string_view bytes, const std::string& what, std::int64_t max_pixels) {
  const auto format = sniff(bytes, what);
  if (format != Format::Jpeg) return header_size(bytes, format, nullptr, what, max_pixels);
  const JpegDecoder jpeg;
  return header_size(bytes, format, jpeg.h, what, max_pixels);
}

DecodedImage decode_rgb8(std::string_view bytes, const std::string& what, std::int64_t max_pixels) {
  const auto format = sniff(bytes, what);
  if (format == Format::Jpeg) {
    const JpegDecoder jpeg;
    const auto size = header_size(bytes, format, jpeg.h, what, max_pixels);
    DecodedImage out{size.width, size.height, std::vector<std::uint8_t>(static_cast<std::size_t>(size.width) * static_cast<std::size_t>(size.height) * 3)};
    if (tjDecompress2(jpeg.h, data_of(bytes), static_cast<unsigned long>(bytes.size()), out.rgb.data(), size.width, 0, size.height, TJPF_RGB, 0) != 0 &&
        tjGetErrorCode(jpeg.h) == TJERR_FATAL)  // TJERR_WARNING: a truncated or slightly corrupt image, decoded as far as it goes
      throw Error("cannot decode " + what + ": " + tjGetErrorStr2(jpeg.h));
    return out;
  }
  const auto size = header_size(bytes, format, nullptr, what, max_pixels);
  DecodedImage out{size.width, size.height, std::vector<std::uint8_t>(static_cast<std::size_t>(size.width) * static_cast<std::size_t>(size.height) * 3)};
  if (format == Format::Png) {
    // RGBA, then the alpha dropped: what stb and PIL give for a PNG with alpha read as RGB (libpng's
    // own RGB output would composite it onto black).
    PngReader png(bytes, what);
    check_decoded_size(static_cast<int>(png.image.width), static_cast<int>(png.image.height), size, what);
    png.image.format = PNG_FORMAT_RGBA;
    std::vector<std::uint8_t> rgba(PNG_IMAGE_SIZE(png.image));
    if (!png_image_finish_read(&png.image, nullptr, rgba.data(), 0, nullptr)) throw Error("cannot decode " + what + ": " + png.image.message);
    for (std::size_t i = 0, n = out.rgb.size() / 3; i < n; ++i) std::memcpy(&out.rgb[3 * i], &rgba[4 * i], 3);
    return out;
  }
  int w = 0, h = 0, channels = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(data_of(bytes), static_cast<int>(bytes.size()), &w, &h, &channels, 3),
                                                   stbi_image_free);
  if (!pixels) throw Error("cannot decode " + what + ": " + stbi_failure_reason());
  check_decoded_size(w, h, size, what);
  std::memcpy(out.rgb.data(), pixels.get(), out.rgb.size());
  return out;
}

}  // namespace streamgen
