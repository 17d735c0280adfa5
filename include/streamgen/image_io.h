#pragma once
// Image files: PNG writing with text metadata (generation parameters), and reading of PNG/JPEG/BMP.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "streamgen/image_header.h"

namespace streamgen {

// image_u8: uint8 [3, H, W] or [1, 3, H, W] RGB. `text` becomes PNG tEXt chunks (key -> value).
// Written atomically (temporary file, then rename).
void write_png(const std::filesystem::path& path, const torch::Tensor& image_u8, const std::map<std::string, std::string>& text = {});
// uint8 [1, 3, H, W] RGB.
torch::Tensor read_image(const std::filesystem::path& path);
// PNG/JPEG/BMP bytes in memory -> uint8 [1, 3, H, W]; `what` names the data in errors. An image of
// more than `max_pixels` is refused from its header (checked_image_size), before any decoding.
torch::Tensor decode_image(std::string_view bytes, const std::string& what, std::int64_t max_pixels = kMaxDecodedPixels);
// uint8 [3, H, W] or [1, 3, H, W] -> JPEG bytes (quality 1-100).
std::string encode_jpeg(const torch::Tensor& image_u8, int quality = 85);
// PNG, JPEG or BMP by its extension (any case): the files list_images and the media layer take.
bool is_image_file(const std::filesystem::path& path);
// The images of a folder (PNG, JPEG, BMP; sorted by name), or the one image file given.
std::vector<std::filesystem::path> list_images(const std::filesystem::path& source);

// The tEXt chunks of a PNG file.
std::map<std::string, std::string> read_png_text(const std::filesystem::path& path);

}  // namespace streamgen
