#pragma once
// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler as in diffusers: what SD-Turbo and SDXL-Turbo ship
// and what their one-step txt2img samples with. Karras-style sigmas sqrt((1 - a_t) / a_t) at the timesteps the
// config's spacing picks (linspace, leading, trailing), the model input scaled by 1 / sqrt(sigma^2 + 1), and
// Euler steps on the probability-flow ODE; the ancestral form steps to sigma_down and adds sigma_up fresh noise.
// The stream (StreamDiffusion) keeps LCM's maths for every model, as upstream does; this is the one-shot sampler.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/lcm_scheduler_config.h"

namespace streamgen {

struct EulerSchedulerConfig {
  LcmSchedulerConfig betas;                 // the training noise schedule and prediction type (LCM's fields unused)
  std::string timestep_spacing = "linspace";  // linspace | leading | trailing
  std::int64_t steps_offset = 0;
  bool ancestral = false;                   // EulerAncestralDiscreteScheduler

  static EulerSchedulerConfig from_json(const nlohmann::json& j, const std::string& source = "scheduler_config.json");
};

// The scheduler class a pipeline's scheduler/ folder names ("" when it has no scheduler_config.json).
std::string scheduler_class_name(const std::filesystem::path& dir);
bool is_euler_scheduler(const std::string& class_name);

class EulerScheduler {
 public:
  explicit EulerScheduler(EulerSchedulerConfig config);

  struct Schedule {
    std::vector<float> timesteps;  // descending, what the UNet is given (float, as diffusers passes them)
    std::vector<float> sigmas;     // one per timestep, then 0
    float init_noise_sigma = 1;    // x_T = noise * init_noise_sigma
  };
  Schedule schedule(std::int64_t num_inference_steps) const;

  // The UNet's input at noise level sigma: x / sqrt(sigma^2 + 1).
  static torch::Tensor scale_model_input(const torch::Tensor& x, float sigma);
  // x0 from the model output at sigma (epsilon or v-prediction).
  torch::Tensor predict_x0(const torch::Tensor& model_output, const torch::Tensor& x, float sigma) const;
  // One step from sigma to sigma_next. Ancestral: to sigma_down, plus `noise` x sigma_up (noise unused when
  // sigma_up is 0, as at the last step).
  torch::Tensor step(const torch::Tensor& model_output, const torch::Tensor& x, float sigma, float sigma_next, const torch::Tensor& noise) const;
  const EulerSchedulerConfig& config() const { return config_; }

 private:
  EulerSchedulerConfig config_;
  std::vector<float> sigmas_;  // per training timestep
};

}  // namespace streamgen
