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

namespace streamgen {

struct LcmSchedulerConfig {
  std::int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";
  std::int64_t original_inference_steps = 50;
  std::string prediction_type = "epsilon";  // or "v_prediction"
  double timestep_scaling = 10.0;
  bool set_alpha_to_one = false;

  // Reads a scheduler_config.json of any diffusers scheduler class (StreamDiffusion builds an LCM
  // scheduler from e.g. SD-Turbo's Euler config); fields LCM does not use are ignored.
  static LcmSchedulerConfig from_json(const nlohmann::json& j, const std::string& source = "scheduler_config.json");
  // A pipeline's scheduler/ folder: its scheduler_config.json, or the defaults when there is none.
  static LcmSchedulerConfig from_folder(const std::filesystem::path& dir);
};

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
