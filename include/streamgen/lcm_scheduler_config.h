#pragma once
// LcmSchedulerConfig: the config.json fields lcm_scheduler.h builds from, read and checked without LibTorch
// (so that the config fuzzer builds it alone). Errors name the file and the field.
#include <cstdint>
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

}  // namespace streamgen
