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

double psnr_db(const torch::Tensor& decoded_unit, const torch::Tensor& reference_u8) {
  const auto a = (decoded_unit.to(torch::kFloat64) / 2 + 0.5).clamp(0, 1);
  const auto b = reference_u8.to(torch::kFloat64) / 255.0;
  const double mse = (a - b).pow(2).mean().item<double>();
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : INFINITY;
}

}  // namespace streamgen
