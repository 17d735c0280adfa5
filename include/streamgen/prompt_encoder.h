#pragma once
// The text side of a Stable Diffusion pipeline folder: SD1.x / SD2.x's tokenizer and CLIP text encoder (its last
// hidden state), or SDXL's two tokenizers and encoders (penultimate layers concatenated; the second encoder's
// projected pooled output as the UNet's text_embeds). Which one is the folder's: text_encoder_2/ makes it SDXL.
#include <torch/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "streamgen/clip_text_model.h"
#include "streamgen/clip_tokenizer.h"
#include "streamgen/device.h"
#include "streamgen/lora.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {

struct PromptEncoder {
  explicit PromptEncoder(ClipTokenizer tok) : tokenizer(std::move(tok)) {}
  ClipTokenizer tokenizer;
  ClipTextModel text_encoder{nullptr};
  std::optional<ClipTokenizer> tokenizer_2;  // SDXL only
  ClipTextModel text_encoder_2{nullptr};     // SDXL only: CLIPTextModelWithProjection

  // A diffusers pipeline folder (tokenizer/, text_encoder/, and for SDXL tokenizer_2/, text_encoder_2/).
  static PromptEncoder load(const std::filesystem::path& model, const ComputeOptions& compute);
  bool sdxl() const { return !text_encoder_2.is_empty(); }
  // prompts -> encoder_hidden_states [N, 77, D] (+ SDXL's text_embeds [N, P]), float32 on the CPU; time_ids are
  // the image's, not the prompt's: the caller sets them.
  UNetConditioning encode(const std::vector<std::string>& prompts) const;
  // The same from token ids int64 [N, 77] (SDXL: both tokenizers' ids).
  UNetConditioning encode_ids(const torch::Tensor& input_ids, const torch::Tensor& input_ids_2 = {}) const;
  // Throws streamgen::Error when this text side and `unet` are of different families (SDXL's or not).
  void check_fits(const UNet2DConditionConfig& unet) const;
  // What LoRAs may adapt: text_encoder, and text_encoder_2 for SDXL.
  std::vector<LoraTarget> lora_targets() const;
};

// The conditioning `unet` reads for images of height x width pixels: for an SDXL (text_time) UNet the prompt's
// embeddings plus SDXL's default time_ids (no crop, original size = target size). Throws streamgen::Error when
// the text side and the UNet are of different families (an SDXL UNet needs text_embeds, an SD UNet has no use
// for them).
UNetConditioning condition_for(UNetConditioning prompt, const UNet2DConditionConfig& unet, std::int64_t height, std::int64_t width);

}  // namespace streamgen
