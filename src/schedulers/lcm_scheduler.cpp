#include "streamgen/lcm_scheduler.h"

#include <torch/torch.h>

#include <cmath>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {

LcmScheduler::LcmScheduler(LcmSchedulerConfig config) : config_(std::move(config)) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  torch::Tensor betas;
  if (config_.beta_schedule == "scaled_linear")
    betas = torch::linspace(std::sqrt(config_.beta_start), std::sqrt(config_.beta_end), config_.num_train_timesteps, opts).pow(2);
  else
    betas = torch::linspace(config_.beta_start, config_.beta_end, config_.num_train_timesteps, opts);
  alphas_cumprod_ = torch::cumprod(1.0 - betas, 0);
  alphas_.assign(alphas_cumprod_.data_ptr<float>(), alphas_cumprod_.data_ptr<float>() + alphas_cumprod_.numel());
}

float LcmScheduler::alpha_prod(std::int64_t t) const {
  if (t < 0) return config_.set_alpha_to_one ? 1.0f : alphas_.front();
  if (t >= static_cast<std::int64_t>(alphas_.size()))
    throw Error("timestep " + std::to_string(t) + " outside 0.." + std::to_string(alphas_.size() - 1));
  return alphas_[static_cast<std::size_t>(t)];
}

std::vector<std::int64_t> LcmScheduler::timesteps(std::int64_t n, double strength) const {
  const auto k = config_.num_train_timesteps / config_.original_inference_steps;
  const auto origin_steps = static_cast<std::int64_t>(std::floor(static_cast<double>(config_.original_inference_steps) * strength));
  if (origin_steps < 1) throw Error("strength " + std::to_string(strength) + " leaves no LCM timesteps");
  if (n < 1 || n > origin_steps)
    throw Error("num_inference_steps " + std::to_string(n) + " must be in 1.." + std::to_string(origin_steps) +
                " (original_inference_steps x strength)");
  std::vector<std::int64_t> origin;
  for (std::int64_t i = origin_steps; i >= 1; --i) origin.push_back(i * k - 1);  // descending
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < n; ++i) {
    // numpy: floor(linspace(0, len, n, endpoint=False)) == floor(i * len / n)
    const auto idx = static_cast<std::size_t>(std::floor(static_cast<double>(i) * static_cast<double>(origin.size()) / static_cast<double>(n)));
    out.push_back(origin[idx]);
  }
  return out;
}

LcmScheduler::Scalings LcmScheduler::scalings(std::int64_t t) const {
  // float32 arithmetic, step by step as the reference does on its 0-dim timestep tensor.
  constexpr float kSigmaData2 = 0.25f;  // sigma_data = 0.5
  const float scaled = static_cast<float>(t) * static_cast<float>(config_.timestep_scaling);
  const float denom = scaled * scaled + kSigmaData2;
  return {kSigmaData2 / denom, scaled / std::sqrt(denom)};
}

torch::Tensor LcmScheduler::predict_x0(const torch::Tensor& model_output, const torch::Tensor& sample, std::int64_t t) const {
  const float a = alpha_prod(t);
  const float sqrt_a = std::sqrt(a), sqrt_b = std::sqrt(1.0f - a);
  if (config_.prediction_type == "v_prediction") return sample * sqrt_a - model_output * sqrt_b;
  return (sample - model_output * sqrt_b) / sqrt_a;
}

torch::Tensor LcmScheduler::denoise(const torch::Tensor& model_output, const torch::Tensor& sample, std::int64_t t) const {
  const auto s = scalings(t);
  return predict_x0(model_output, sample, t) * s.c_out + sample * s.c_skip;
}

torch::Tensor LcmScheduler::add_noise(const torch::Tensor& x0, const torch::Tensor& noise, std::int64_t t) const {
  const float a = alpha_prod(t);
  return x0 * std::sqrt(a) + noise * std::sqrt(1.0f - a);
}

}  // namespace streamgen
