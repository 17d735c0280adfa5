#include "streamgen/image_tensor.h"

#include <torch/torch.h>

#include <cmath>

#include "streamgen/error.h"

namespace streamgen {

torch::Tensor image_u8_to_unit_range(const torch::Tensor& u8) {
  if (u8.scalar_type() != torch::kUInt8)
    throw Error(std::string("image tensor must be uint8, got ") + c10::toString(u8.scalar_type()));
  if (u8.dim() != 4 || u8.size(1) != 3)
    throw Error("image tensor must be [N, 3, H, W], got " + std::to_string(u8.dim()) + "-d with " +
                (u8.dim() >= 2 ? std::to_string(u8.size(1)) : std::string("?")) + " channels");
  return u8.to(torch::kFloat32).div(255.0).mul(2.0).sub(1.0);
}

torch::Tensor unit_range_to_image_u8(const torch::Tensor& x) {
  return (x.to(torch::kFloat32) / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch::kUInt8);
}

Fit parse_fit(const std::string& name) {
  if (name == "crop") return Fit::Crop;
  if (name == "pad") return Fit::Pad;
  if (name == "stretch") return Fit::Stretch;
  throw Error("unknown fit '" + name + "' (expected crop, pad or stretch)");
}

torch::Tensor fit_image(const torch::Tensor& image, std::int64_t width, std::int64_t height, Fit fit) {
  if (image.scalar_type() != torch::kUInt8 || image.dim() != 4 || image.size(1) != 3) throw Error("fit_image: expected uint8 [N, 3, H, W]");
  if (width <= 0 || height <= 0) throw Error("fit_image: target size must be positive");
  const auto h = image.size(2), w = image.size(3);
  if (h == height && w == width) return image;
  auto x = image.to(torch::kFloat32);
  if (fit == Fit::Crop) {
    // The largest centred window with the target aspect.
    const auto ch = std::min<std::int64_t>(h, w * height / width), cw = std::min<std::int64_t>(w, h * width / height);
    x = x.narrow(2, (h - ch) / 2, ch).narrow(3, (w - cw) / 2, cw);
  } else if (fit == Fit::Pad) {
    const auto ph = std::max<std::int64_t>(h, w * height / width), pw = std::max<std::int64_t>(w, h * width / height);
    x = torch::constant_pad_nd(x, {(pw - w) / 2, pw - w - (pw - w) / 2, (ph - h) / 2, ph - h - (ph - h) / 2}, 0);
  }
  namespace F = torch::nn::functional;
  x = F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<std::int64_t>{height, width}).mode(torch::kBilinear).align_corners(false).antialias(true));
  return x.round().clamp(0, 255).to(torch::kUInt8);
}

double psnr_db(const torch::Tensor& decoded_unit, const torch::Tensor& reference_u8) {
  const auto a = (decoded_unit.to(torch::kFloat64) / 2 + 0.5).clamp(0, 1);
  const auto b = reference_u8.to(torch::kFloat64) / 255.0;
  const double mse = (a - b).pow(2).mean().item<double>();
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : INFINITY;
}

}  // namespace streamgen
