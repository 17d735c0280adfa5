#include "streamgen/prompt_encoder.h"

#include <torch/torch.h>

#include "streamgen/component_run.h"
#include "streamgen/error.h"

namespace streamgen {

PromptEncoder PromptEncoder::load(const std::filesystem::path& model, const ComputeOptions& compute) {
  PromptEncoder p(ClipTokenizer::from_folder(resolve_component_dir(model, "tokenizer")));
  p.text_encoder = load_clip_text_model(resolve_component_dir(model, "text_encoder"), compute);
  std::error_code ec;
  if (std::filesystem::is_directory(model / "text_encoder_2", ec)) {
    if (!std::filesystem::is_directory(model / "tokenizer_2", ec))
      throw Error("pipeline folder '" + model.string() + "' has text_encoder_2/ (SDXL) but no tokenizer_2/");
    p.tokenizer_2.emplace(ClipTokenizer::from_folder(model / "tokenizer_2"));
    p.text_encoder_2 = load_clip_text_model(model / "text_encoder_2", compute);
    if (!p.text_encoder_2->text_projection)
      throw Error("'" + (model / "text_encoder_2").string() +
                  "' must be a CLIPTextModelWithProjection (SDXL's pooled prompt embedding comes from its text_projection)");
  }
  return p;
}

UNetConditioning PromptEncoder::encode(const std::vector<std::string>& prompts) const {
  return encode_ids(tokenizer.encode_batch(prompts), sdxl() ? tokenizer_2->encode_batch(prompts) : torch::Tensor());
}

UNetConditioning PromptEncoder::encode_ids(const torch::Tensor& input_ids, const torch::Tensor& input_ids_2) const {
  torch::NoGradGuard no_grad;
  // Module holders share their module: copies give the (stateless) forward passes a non-const handle.
  ClipTextModel te = text_encoder, te2 = text_encoder_2;
  const auto device = te->text_model->final_layer_norm->weight.device();
  const auto out = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat32); };
  if (!sdxl()) {
    if (input_ids_2.defined()) throw Error("input_ids_2 are for SDXL's second tokenizer; this pipeline has one text encoder");
    return UNetConditioning(out(te->forward(input_ids.to(device, torch::kInt64)).last_hidden_state));
  }
  if (!input_ids_2.defined()) throw Error("SDXL encodes a prompt with both tokenizers: input_ids_2 are missing");
  const auto e = encode_sdxl_prompt(*te, *te2, input_ids.to(device, torch::kInt64), input_ids_2.to(device, torch::kInt64));
  return UNetConditioning(out(e.prompt_embeds), out(e.pooled_prompt_embeds));
}

std::vector<LoraTarget> PromptEncoder::lora_targets() const {
  ClipTextModel te = text_encoder, te2 = text_encoder_2;
  std::vector<LoraTarget> t{{"text_encoder", te.get()}};
  if (sdxl()) t.push_back({"text_encoder_2", te2.get()});
  return t;
}

namespace {

void check_family(bool pooled, const UNet2DConditionConfig& unet) {
  if (unet.text_time && !pooled)
    throw Error("the UNet is SDXL's (addition_embed_type text_time) but the text side is not: it needs text_encoder_2/ and tokenizer_2/ "
                "beside text_encoder/ in the pipeline folder");
  if (!unet.text_time && pooled)
    throw Error("the pipeline has SDXL's two text encoders but its UNet has no added conditioning (addition_embed_type text_time)");
}

}  // namespace

void PromptEncoder::check_fits(const UNet2DConditionConfig& unet) const { check_family(sdxl(), unet); }

UNetConditioning condition_for(UNetConditioning prompt, const UNet2DConditionConfig& unet, std::int64_t height, std::int64_t width) {
  check_family(prompt.text_embeds.defined(), unet);
  if (unet.text_time) prompt.time_ids = default_time_ids(height, width).expand({prompt.rows(), -1});
  return prompt;
}

}  // namespace streamgen
