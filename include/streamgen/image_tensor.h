#pragma once
// Conversions between uint8 RGB images and the network's [-1, 1] range, in exactly the order the
// reference (diffusers' VaeImageProcessor) computes them, so that goldens match bit for bit.
#include <torch/types.h>

#include <string>

namespace streamgen {

// uint8 [N, 3, H, W] -> float32 2 * (u8 / 255) - 1
torch::Tensor image_u8_to_unit_range(const torch::Tensor& u8);
// [-1, 1] (any float dtype) -> uint8 round(clamp(x / 2 + 0.5, 0, 1) * 255)
torch::Tensor unit_range_to_image_u8(const torch::Tensor& x);
enum class Fit { Crop, Pad, Stretch };
Fit parse_fit(const std::string& name);  // "crop" | "pad" | "stretch"
// uint8 [1, 3, H, W] -> uint8 [1, 3, height, width]: centre-crop to the target aspect (crop), letterbox
// with black (pad) or distort (stretch), then an antialiased bilinear resize.
torch::Tensor fit_image(const torch::Tensor& image_u8, std::int64_t width, std::int64_t height, Fit fit = Fit::Crop);

// PSNR in dB between two images in [0, 1] (decoded is clamped first).
double psnr_db(const torch::Tensor& decoded_unit, const torch::Tensor& reference_u8);

}  // namespace streamgen
