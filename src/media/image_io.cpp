#include "streamgen/image_io.h"

#include <stb/stb_image_write.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <limits>
#include <random>

#include "streamgen/error.h"
#include "streamgen/image_header.h"

namespace streamgen {
namespace {

std::uint32_t crc32(const std::uint8_t* data, std::size_t n, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void put_be32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
}

std::uint32_t get_be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  return v;
}

std::string text_chunk(const std::string& key, const std::string& value) {
  if (key.empty() || key.size() > 79 || key.find('\0') != std::string::npos) throw Error("PNG text key '" + key + "' must be 1-79 characters without NUL");
  std::string body = "tEXt" + key + std::string(1, '\0') + value;
  std::string chunk;
  put_be32(chunk, static_cast<std::uint32_t>(body.size() - 4));
  chunk += body;
  put_be32(chunk, crc32(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()));
  return chunk;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open image '" + path.string() + "'");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

void write_png(const std::filesystem::path& path, const torch::Tensor& image, const std::map<std::string, std::string>& text) {
  auto img = image.dim() == 4 ? image.squeeze(0) : image;
  if (img.scalar_type() != torch::kUInt8 || img.dim() != 3 || img.size(0) != 3)
    throw Error("write_png '" + path.string() + "': expected uint8 [3, H, W] (or [1, 3, H, W]) RGB");
  const auto hwc = img.permute({1, 2, 0}).contiguous().to(torch::kCPU);
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  std::string png;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<std::size_t>(size)); };
  if (!stbi_write_png_to_func(sink, &png, w, h, 3, hwc.data_ptr(), w * 3)) throw Error("PNG encoding failed for '" + path.string() + "'");
  // Insert the tEXt chunks right after IHDR (8-byte signature + 25-byte IHDR chunk).
  constexpr std::size_t kAfterIhdr = 8 + 8 + 13 + 4;
  std::string chunks;
  for (const auto& [k, v] : text) chunks += text_chunk(k, v);
  png.insert(kAfterIhdr, chunks);

  std::random_device rd;
  const auto tmp = path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Error("cannot write '" + tmp.string() + "'");
    out.write(png.data(), static_cast<std::streamsize>(png.size()));
    if (!out) {
      std::filesystem::remove(tmp);
      throw Error("cannot write '" + tmp.string() + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    throw Error("cannot write '" + path.string() + "': " + ec.message());
  }
}

torch::Tensor decode_image(std::string_view bytes, const std::string& what, std::int64_t max_pixels) {
  auto image = decode_rgb8(bytes, what, max_pixels);
  return torch::from_blob(image.rgb.data(), {image.height, image.width, 3}, torch::kUInt8).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

torch::Tensor read_image(const std::filesystem::path& path) { return decode_image(read_file(path), "image '" + path.string() + "'"); }

std::string encode_jpeg(const torch::Tensor& image_u8, int quality) {
  const auto img = image_u8.dim() == 4 ? image_u8[0] : image_u8;
  if (img.scalar_type() != torch::kUInt8 || img.dim() != 3 || img.size(0) != 3) throw Error("encode_jpeg: expected uint8 [3, H, W]");
  const auto hwc = img.permute({1, 2, 0}).contiguous();
  std::string out;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<std::size_t>(size)); };
  if (!stbi_write_jpg_to_func(sink, &out, static_cast<int>(hwc.size(1)), static_cast<int>(hwc.size(0)), 3, hwc.data_ptr(), std::clamp(quality, 1, 100)))
    throw Error("JPEG encoding failed");
  return out;
}

bool is_image_file(const std::filesystem::path& path) {
  auto ext = path.extension().string();
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

std::vector<std::filesystem::path> list_images(const std::filesystem::path& source) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(source, ec)) return {source};
  if (!std::filesystem::is_directory(source, ec)) throw Error("input '" + source.string() + "' does not exist");
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(source, ec))
    if (e.is_regular_file() && is_image_file(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  if (out.empty()) throw Error("input folder '" + source.string() + "' holds no PNG, JPEG or BMP images");
  return out;
}

std::map<std::string, std::string> read_png_text(const std::filesystem::path& path) {
  const auto s = read_file(path);
  if (s.size() < 8 || s.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) throw Error("'" + path.string() + "' is not a PNG file");
  std::map<std::string, std::string> out;
  for (std::size_t at = 8; at + 12 <= s.size();) {
    const auto len = get_be32(s, at);
    if (at + 12 + len > s.size()) throw Error("'" + path.string() + "': truncated PNG chunk");
    if (s.compare(at + 4, 4, "tEXt") == 0) {
      const auto body = s.substr(at + 8, len);
      const auto nul = body.find('\0');
      if (nul != std::string::npos) out[body.substr(0, nul)] = body.substr(nul + 1);
    }
    at += 12 + len;
  }
  return out;
}

}  // namespace streamgen
