// libFuzzer entry: the first byte picks a model-folder config reader (UNet, AutoencoderKL, TAESD,
// CLIP text encoder, scheduler, ControlNet), the rest is its config.json. A reader must refuse the config with
// streamgen::Error or return one a model can be built from: every size positive and bounded, norm
// groups dividing the channels, the derived factors computable without overflow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "streamgen/autoencoder_kl_config.h"
#include "streamgen/autoencoder_tiny_config.h"
#include "streamgen/clip_text_config.h"
#include "streamgen/controlnet_config.h"
#include "streamgen/error.h"
#include "streamgen/lcm_scheduler_config.h"
#include "streamgen/unet_2d_condition_config.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace streamgen;
  if (size == 0) return 0;
  const auto j = nlohmann::json::parse(data + 1, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // read_json_file refuses it with a FormatError before any reader sees it
  try {
    switch (data[0] % 6) {
      case 0: {
        const auto c = UNet2DConditionConfig::from_json(j, "fuzz");
        check(c.in_channels > 0 && c.out_channels > 0 && c.time_embed_dim() > 0 && c.heads.size() == c.block_out_channels.size());
        for (std::size_t i = 0; i < c.block_out_channels.size(); ++i)
          check(c.block_out_channels[i] % c.norm_num_groups == 0 && c.block_out_channels[i] % c.heads[i] == 0);
        break;
      }
      case 1: {
        const auto c = AutoencoderKLConfig::from_json(j, "fuzz");
        check(c.downsample_factor() >= 1 && c.latent_channels > 0);
        for (const auto ch : c.block_out_channels) check(ch > 0 && ch % c.norm_num_groups == 0);
        break;
      }
      case 2: {
        const auto c = AutoencoderTinyConfig::from_json(j, "fuzz");
        check(c.downsample_factor() >= 1 && c.latent_channels > 0 && c.upsampling_scaling_factor > 0);
        break;
      }
      case 3: {
        const auto c = ClipTextConfig::from_json(j, "fuzz");
        check(c.hidden_size % c.num_attention_heads == 0 && c.eos_token_id < c.vocab_size && c.max_position_embeddings > 0);
        break;
      }
      case 5: {
        const auto c = ControlNetConfig::from_json(j, "fuzz");
        check(c.conditioning_channels > 0 && !c.conditioning_embedding_out_channels.empty() && c.downsample_factor() >= 1 &&
              c.unet.block_out_channels.size() == c.unet.down_block_types.size());
        for (const auto ch : c.conditioning_embedding_out_channels) check(ch > 0);
        break;
      }
      default: {
        const auto c = LcmSchedulerConfig::from_json(j, "fuzz");
        check(c.num_train_timesteps >= 2 && c.original_inference_steps >= 1 && c.beta_start > 0 && c.beta_end < 1);
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
