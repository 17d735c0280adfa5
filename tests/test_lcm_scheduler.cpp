#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "test_util.h"

namespace streamgen {
namespace {

const nlohmann::json& golden() {
  static const nlohmann::json j = read_json_file(test::data_path("scheduler/lcm.json"));
  return j;
}

LcmScheduler scheduler() { return LcmScheduler(LcmSchedulerConfig::from_json(golden()["config"])); }

TEST(LcmScheduler, AlphasCumprodMatchesFloat32Reference) {
  const auto ref = torch::tensor(golden()["alphas_cumprod"].get<std::vector<double>>()).to(torch::kFloat32);
  // A float32 cumulative product: LibTorch 1.13 reproduces the reference bit for bit, 2.x's
  // vectorised cumprod differs in the last bit (6e-8 measured), so the bound is a few ulps.
  const auto d = compare_tensors(scheduler().alphas_cumprod(), ref);
  EXPECT_TRUE(d.within(1e-6)) << "rel " << d.rel << " max diff " << d.max_abs;
}

TEST(LcmScheduler, TimestepsForEveryStepCountAndStrength) {
  const auto s = scheduler();
  for (const auto& [key, value] : golden()["timesteps"].items()) {
    SCOPED_TRACE(key);
    const auto underscore = key.find("_strength");
    const auto n = std::stoll(key.substr(0, underscore));
    const double strength = underscore == std::string::npos ? 1.0 : std::stod(key.substr(underscore + 9));
    EXPECT_EQ(s.timesteps(n, strength), value.get<std::vector<std::int64_t>>());
  }
  EXPECT_THROW(s.timesteps(0), Error);
  EXPECT_THROW(s.timesteps(51), Error);
}

TEST(LcmScheduler, ScalingsAndStreamSlotConstants) {
  const auto s = scheduler();
  for (const auto& row : golden()["scalings"]) {
    const auto c = s.scalings(row["t"].get<std::int64_t>());
    EXPECT_FLOAT_EQ(c.c_skip, row["c_skip"].get<float>()) << row.dump();
    EXPECT_FLOAT_EQ(c.c_out, row["c_out"].get<float>()) << row.dump();
  }
  for (const auto& list : golden()["stream"])
    for (const auto& slot : list["slots"]) {
      const auto t = slot["T"].get<std::int64_t>();
      EXPECT_FLOAT_EQ(s.alpha_prod(t), slot["alpha_prod"].get<float>());
      EXPECT_FLOAT_EQ(std::sqrt(s.alpha_prod(t)), slot["sqrt_alpha_prod"].get<float>());
      EXPECT_FLOAT_EQ(std::sqrt(1.0f - s.alpha_prod(t)), slot["sqrt_one_minus_alpha_prod"].get<float>());
    }
}

TEST(LcmScheduler, StepsReproduceTheReferenceSampler) {
  const auto s = scheduler();
  const auto f = SafetensorsFile::open(test::data_path("scheduler/lcm_step.safetensors"));
  const auto ts = s.timesteps(4);
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const auto n = std::to_string(i);
    const auto denoised = s.denoise(f.tensor("model_output." + n), f.tensor("sample." + n), ts[i]);
    EXPECT_TRUE(compare_tensors(denoised, f.tensor("denoised." + n)).within(1e-6)) << i;
    const auto prev = i + 1 < ts.size() ? s.add_noise(denoised, f.tensor("noise." + n), ts[i + 1]) : denoised;
    EXPECT_TRUE(compare_tensors(prev, f.tensor("prev_sample." + n)).within(1e-6)) << i;
  }
}

TEST(LcmScheduler, VPredictionAndConfigErrors) {
  LcmSchedulerConfig c;
  c.prediction_type = "v_prediction";
  const LcmScheduler v(c);
  const auto x0 = torch::randn({2, 4}), noise = torch::randn({2, 4});
  const std::int64_t t = 499;
  const float a = v.alpha_prod(t);
  const auto xt = v.add_noise(x0, noise, t);
  const auto vel = noise * std::sqrt(a) - x0 * std::sqrt(1 - a);  // the v target
  EXPECT_TRUE(compare_tensors(v.predict_x0(vel, xt, t), x0).within(1e-5));
  EXPECT_THROW(LcmSchedulerConfig::from_json({{"prediction_type", "sample"}}), Error);
  EXPECT_THROW(LcmSchedulerConfig::from_json({{"beta_schedule", "squaredcos_cap_v2"}}), Error);
}

}  // namespace
}  // namespace streamgen
