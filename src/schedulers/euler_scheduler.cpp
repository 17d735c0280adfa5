#include "streamgen/euler_scheduler.h"

#include <torch/torch.h>

#include <cmath>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/lcm_scheduler.h"

namespace streamgen {

EulerSchedulerConfig EulerSchedulerConfig::from_json(const nlohmann::json& j, const std::string& source) {
  EulerSchedulerConfig c;
  c.betas = LcmSchedulerConfig::from_json(j, source);
  c.timestep_spacing = config_value(j, "timestep_spacing", c.timestep_spacing, source);
  c.steps_offset = config_value(j, "steps_offset", c.steps_offset, source);
  c.ancestral = config_value<std::string>(j, "_class_name", "", source) == "EulerAncestralDiscreteScheduler";
  if (c.timestep_spacing != "linspace" && c.timestep_spacing != "leading" && c.timestep_spacing != "trailing")
    throw Error(source + ": timestep_spacing '" + c.timestep_spacing + "' is not supported (expected linspace, leading or trailing)");
  config_check_range(c.steps_offset, 0, c.betas.num_train_timesteps - 1, "steps_offset", source);
  if (config_value(j, "use_karras_sigmas", false, source)) throw Error(source + ": use_karras_sigmas is not supported");
  const auto interpolation = config_value<std::string>(j, "interpolation_type", "linear", source);
  if (interpolation != "linear") throw Error(source + ": interpolation_type '" + interpolation + "' is not supported (expected linear)");
  const auto type = config_value<std::string>(j, "timestep_type", "discrete", source);
  if (type != "discrete") throw Error(source + ": timestep_type '" + type + "' is not supported (expected discrete)");
  return c;
}

std::string scheduler_class_name(const std::filesystem::path& dir) {
  const auto path = dir / "scheduler_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return "";
  return config_value<std::string>(read_json_file(path), "_class_name", "", path.string());
}

bool is_euler_scheduler(const std::string& class_name) {
  return class_name == "EulerDiscreteScheduler" || class_name == "EulerAncestralDiscreteScheduler";
}

EulerScheduler::EulerScheduler(EulerSchedulerConfig config) : config_(std::move(config)) {
  // diffusers: ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32.
  const auto a = LcmScheduler(config_.betas).alphas_cumprod();
  const auto s = ((1 - a) / a).sqrt().contiguous();
  sigmas_.assign(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
}

EulerScheduler::Schedule EulerScheduler::schedule(std::int64_t n) const {
  const auto T = config_.betas.num_train_timesteps;
  if (n < 1 || n > T) throw Error("num_inference_steps " + std::to_string(n) + " must be in 1.." + std::to_string(T));
  // Timesteps as diffusers' set_timesteps computes them (numpy float64, then float32).
  std::vector<double> ts;
  const auto& spacing = config_.timestep_spacing;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<double>(i);
    if (spacing == "linspace") {
      ts.push_back(n == 1 ? 0.0 : static_cast<double>(T - 1) * k / static_cast<double>(n - 1));
    } else if (spacing == "leading") {
      ts.push_back(std::nearbyint(k * static_cast<double>(T / n)) + static_cast<double>(config_.steps_offset));
    } else {  // trailing: round(arange(T, 0, -T / n)) - 1
      ts.push_back(std::nearbyint(static_cast<double>(T) - k * static_cast<double>(T) / static_cast<double>(n)) - 1);
    }
  }
  if (spacing != "trailing") std::reverse(ts.begin(), ts.end());
  Schedule s;
  for (const auto t : ts) {
    // np.interp over the training sigmas (float64), then float32.
    const auto lo = static_cast<std::size_t>(std::clamp(std::floor(t), 0.0, static_cast<double>(T - 1)));
    const auto hi = std::min(lo + 1, static_cast<std::size_t>(T - 1));
    const double f = t - static_cast<double>(lo);
    s.timesteps.push_back(static_cast<float>(t));
    s.sigmas.push_back(static_cast<float>(static_cast<double>(sigmas_[lo]) + f * (static_cast<double>(sigmas_[hi]) - static_cast<double>(sigmas_[lo]))));
  }
  s.sigmas.push_back(0.0f);
  const float max_sigma = *std::max_element(s.sigmas.begin(), s.sigmas.end());
  s.init_noise_sigma = spacing == "leading" ? std::sqrt(max_sigma * max_sigma + 1) : max_sigma;
  return s;
}

torch::Tensor EulerScheduler::scale_model_input(const torch::Tensor& x, float sigma) { return x / std::sqrt(sigma * sigma + 1); }

torch::Tensor EulerScheduler::predict_x0(const torch::Tensor& model_output, const torch::Tensor& x, float sigma) const {
  if (config_.betas.prediction_type == "v_prediction") return model_output * (-sigma / std::sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1);
  return x - sigma * model_output;
}

torch::Tensor EulerScheduler::step(const torch::Tensor& model_output, const torch::Tensor& x, float sigma, float sigma_next,
                                   const torch::Tensor& noise) const {
  const auto x0 = predict_x0(model_output, x, sigma);
  const auto derivative = (x - x0) / sigma;
  if (!config_.ancestral) return x + derivative * (sigma_next - sigma);
  const float up = std::sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma));
  const float down = std::sqrt(sigma_next * sigma_next - up * up);
  auto out = x + derivative * (down - sigma);
  if (up > 0) {
    if (!noise.defined()) throw Error("euler ancestral: a step to sigma " + std::to_string(sigma_next) + " needs noise");
    out = out + noise * up;
  }
  return out;
}

}  // namespace streamgen
