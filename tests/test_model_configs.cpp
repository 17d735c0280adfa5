// The config.json readers refuse what no model can be built from, naming the file and the field,
// before LibTorch is asked for a layer of -1 channels or a shift past 63 bits (the config fuzzer's
// invariants, as cases).
#include <gtest/gtest.h>

#include <functional>

#include "streamgen/autoencoder_kl_config.h"
#include "streamgen/autoencoder_tiny_config.h"
#include "streamgen/clip_text_config.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/lcm_scheduler_config.h"
#include "streamgen/unet_2d_condition_config.h"
#include "test_util.h"

namespace streamgen {
namespace {

using json = nlohmann::json;

struct ConfigCase {
  std::string label;
  std::string folder;  // under tests/data, the config to start from
  json patch;          // merged into it
  std::function<void(const json&)> read;
  std::string expected;
};

void PrintTo(const ConfigCase& c, std::ostream* os) { *os << c.label; }

std::vector<ConfigCase> config_cases() {
  const auto unet = [](const json& j) { UNet2DConditionConfig::from_json(j, "unet/config.json"); };
  const auto vae = [](const json& j) { AutoencoderKLConfig::from_json(j, "vae/config.json"); };
  const auto taesd = [](const json& j) { AutoencoderTinyConfig::from_json(j, "taesd/config.json"); };
  const auto clip = [](const json& j) { ClipTextConfig::from_json(j, "text_encoder/config.json"); };
  const auto scheduler = [](const json& j) { LcmSchedulerConfig::from_json(j, "scheduler/scheduler_config.json"); };
  return {
      {"unet groups not dividing", "tiny-sd21/unet/config.json", {{"norm_num_groups", 5}}, unet, "unet/config.json: block_out_channels 32 is not divisible into norm_num_groups 5"},
      {"unet negative channels", "tiny-sd21/unet/config.json", {{"in_channels", -4}}, unet, "'in_channels' is -4, expected 1..1024"},
      {"unet float too large for an integer", "tiny-sd21/unet/config.json", {{"in_channels", 3.3e94}}, unet, "field 'in_channels' must hold integers, found 3.3e+94"},
      {"unet fractional channels", "tiny-sd21/unet/config.json", {{"block_out_channels", {32.5, 64}}}, unet, "field 'block_out_channels' must hold integers"},
      {"unet no layers", "tiny-sd21/unet/config.json", {{"layers_per_block", 0}}, unet, "'layers_per_block' is 0, expected 1..16"},
      {"unet zero eps", "tiny-sd21/unet/config.json", {{"norm_eps", 0}}, unet, "'norm_eps' must be a positive number"},
      {"vae 70 blocks", "tiny-sd21/vae/config.json", {{"block_out_channels", std::vector<int>(70, 32)}, {"down_block_types", nullptr}, {"up_block_types", nullptr}}, vae,
       "'block_out_channels (count)' is 70, expected 1..8"},
      {"vae zero latents", "tiny-sd21/vae/config.json", {{"latent_channels", 0}}, vae, "'latent_channels' is 0"},
      {"taesd 70 stages", "taesd/config.json",
       {{"encoder_block_out_channels", std::vector<int>(70, 64)}, {"num_encoder_blocks", std::vector<int>(70, 1)}}, taesd,
       "'num_encoder_blocks (count)' is 70, expected 1..8"},
      {"taesd upsampling 0", "taesd/config.json", {{"upsampling_scaling_factor", 0}}, taesd, "'upsampling_scaling_factor' is 0"},
      {"clip eos outside vocab", "tiny-sd21/text_encoder/config.json", {{"eos_token_id", 60000}}, clip, "'eos_token_id' is 60000, expected 0..49407"},
      {"clip no positions", "tiny-sd21/text_encoder/config.json", {{"max_position_embeddings", 0}}, clip, "'max_position_embeddings' is 0"},
      {"scheduler betas reversed", "tiny-sd21/scheduler/scheduler_config.json", {{"beta_start", 0.5}, {"beta_end", 0.1}}, scheduler,
       "must satisfy 0 < beta_start <= beta_end < 1"},
      {"scheduler huge", "tiny-sd21/scheduler/scheduler_config.json", {{"num_train_timesteps", 1000000000}}, scheduler, "'num_train_timesteps' is 1000000000"},
  };
}

class ModelConfig : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(ModelConfig, IsRefusedNamingTheField) {
  const auto& c = GetParam();
  auto j = read_json_file(test::data_path(c.folder));
  c.read(j);  // the shipped config is accepted
  j.merge_patch(c.patch);
  test::expect_error_mentions([&] { c.read(j); }, c.expected);
}

INSTANTIATE_TEST_SUITE_P(Readers, ModelConfig, ::testing::ValuesIn(config_cases()), [](const auto& info) {
  std::string name;
  for (char ch : info.param.label) name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return name;
});

}  // namespace
}  // namespace streamgen
