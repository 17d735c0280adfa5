#pragma once
// LCMScheduler maths as in diffusers (the scheduler StreamDiffusion builds for every model):
// scaled-linear betas in float32, "leading" LCM timesteps over original_inference_steps, the
// boundary-condition scalings c_skip / c_out, x0 prediction for epsilon and v-prediction models,
// and DDPM forward noising. Stateless: the stream buffer decides which timesteps are in flight.
#include <torch/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "streamgen/lcm_scheduler_config.h"

namespace streamgen {

class LcmScheduler {
 public:
  explicit LcmScheduler(LcmSchedulerConfig config = {});

  const LcmSchedulerConfig& config() const { return config_; }
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // float32 [T]
  float alpha_prod(std::int64_t t) const;  // alphas_cumprod[t]; t < 0 -> the final alpha
  // diffusers LCMScheduler.set_timesteps(n, strength): descending timesteps.
  std::vector<std::int64_t> timesteps(std::int64_t num_inference_steps, double strength = 1.0) const;

  struct Scalings {
    float c_skip;
    float c_out;
  };
  Scalings scalings(std::int64_t t) const;

  // x0 from the model output at timestep t (epsilon or v-prediction).
  torch::Tensor predict_x0(const torch::Tensor& model_output, const torch::Tensor& sample, std::int64_t t) const;
  // c_out * x0 + c_skip * sample: the consistency model's denoised sample.
  torch::Tensor denoise(const torch::Tensor& model_output, const torch::Tensor& sample, std::int64_t t) const;
  // sqrt(a_t) * x0 + sqrt(1 - a_t) * noise.
  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& noise, std::int64_t t) const;

 private:
  LcmSchedulerConfig config_;
  torch::Tensor alphas_cumprod_;
  std::vector<float> alphas_;  // host copy for scalar lookups
};

}  // namespace streamgen
