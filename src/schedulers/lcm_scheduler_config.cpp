#include "streamgen/lcm_scheduler_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {

LcmSchedulerConfig LcmSchedulerConfig::from_json(const nlohmann::json& j, const std::string& source) {
  LcmSchedulerConfig c;
  c.num_train_timesteps = config_value(j, "num_train_timesteps", c.num_train_timesteps, source);
  c.beta_start = config_value(j, "beta_start", c.beta_start, source);
  c.beta_end = config_value(j, "beta_end", c.beta_end, source);
  c.beta_schedule = config_value(j, "beta_schedule", c.beta_schedule, source);
  c.original_inference_steps = config_value(j, "original_inference_steps", c.original_inference_steps, source);
  c.prediction_type = config_value(j, "prediction_type", c.prediction_type, source);
  c.timestep_scaling = config_value(j, "timestep_scaling", c.timestep_scaling, source);
  c.set_alpha_to_one = config_value(j, "set_alpha_to_one", c.set_alpha_to_one, source);
  if (c.beta_schedule != "scaled_linear" && c.beta_schedule != "linear")
    throw Error(source + ": beta_schedule '" + c.beta_schedule + "' is not supported (expected scaled_linear or linear)");
  if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction")
    throw Error(source + ": prediction_type '" + c.prediction_type + "' is not supported (expected epsilon or v_prediction)");
  if (config_value(j, "rescale_betas_zero_snr", false, source)) throw Error(source + ": rescale_betas_zero_snr is not supported");
  if (c.num_train_timesteps < 2 || c.original_inference_steps < 1 || c.original_inference_steps > c.num_train_timesteps)
    throw Error(source + ": num_train_timesteps / original_inference_steps out of range");
  config_check_range(c.num_train_timesteps, 2, 100000, "num_train_timesteps", source);
  if (!(c.beta_start > 0 && c.beta_start <= c.beta_end && c.beta_end < 1))
    throw FormatError(source + ": beta_start " + std::to_string(c.beta_start) + " and beta_end " + std::to_string(c.beta_end) +
                      " must satisfy 0 < beta_start <= beta_end < 1");
  config_check_positive(c.timestep_scaling, "timestep_scaling", source);
  return c;
}

LcmSchedulerConfig LcmSchedulerConfig::from_folder(const std::filesystem::path& dir) {
  const auto path = dir / "scheduler_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return {};
  return from_json(read_json_file(path), path.string());
}

}  // namespace streamgen
