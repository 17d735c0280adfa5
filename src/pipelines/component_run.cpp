#include "streamgen/component_run.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/autoencoder_tiny.h"
#include "streamgen/clip_text_model.h"
#include "streamgen/clip_tokenizer.h"
#include "streamgen/controlnet.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/prompt_encoder.h"
#include "streamgen/single_file.h"
#include "streamgen/txt2img.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {
namespace {

struct ComponentInfo {
  Component c;
  const char* name;
  std::vector<std::string> inputs;
  std::vector<std::string> sdxl_inputs;  // read too when the model is SDXL
};

const std::vector<ComponentInfo>& table() {
  static const std::vector<ComponentInfo> t = {
      {Component::Unet, "unet", {"sample", "timestep", "encoder_hidden_states"}, {"text_embeds", "time_ids"}},
      {Component::TextEncoder, "text_encoder", {"input_ids"}, {}},
      {Component::VaeEncode, "vae_encode", {"image_u8"}, {}},
      {Component::VaeDecode, "vae_decode", {"latents"}, {}},
      {Component::TaesdEncode, "taesd_encode", {"image_u8"}, {}},
      {Component::TaesdDecode, "taesd_decode", {"latents"}, {}},
      {Component::Tokenizer, "tokenizer", {}, {}},
      {Component::ControlNet, "controlnet", {"sample", "timestep", "encoder_hidden_states", "cond_image_u8"}, {"text_embeds", "time_ids"}},
      {Component::TextEncoders, "text_encoders", {"input_ids", "input_ids_2"}, {}},
      {Component::Txt2Img, "txt2img", {"x_T", "input_ids", "timestep"}, {"input_ids_2", "time_ids"}},
  };
  return t;
}

const torch::Tensor& input(const TensorMap& in, Component c, const std::string& name) {
  auto it = in.find(name);
  if (it == in.end()) {
    std::string expected;
    for (const auto& n : component_inputs(c)) expected += (expected.empty() ? "" : ", ") + n;
    throw Error(component_name(c) + ": input tensor '" + name + "' is missing (expected: " + expected + ")");
  }
  return it->second;
}

torch::Tensor to_compute(const torch::Tensor& t, const ComputeOptions& o) { return t.to(o.device, o.dtype); }
torch::Tensor to_output(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32).contiguous(); }

std::string describe_values(const torch::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.numel(); ++i) s += (i ? ", " : "") + std::to_string(t[i].item<float>());
  return s + "]";
}

// encoder_hidden_states, and for an SDXL (text_time) model text_embeds and time_ids too.
UNetConditioning conditioning(const TensorMap& in, Component c, const UNet2DConditionConfig& config, const ComputeOptions& o) {
  UNetConditioning cond{input(in, c, "encoder_hidden_states")};
  if (config.text_time) {
    const auto missing = [&](const char* name) {
      return Error(component_name(c) + ": this SDXL model (addition_embed_type text_time) also reads '" + name + "', which the input file lacks");
    };
    if (!in.count("text_embeds")) throw missing("text_embeds");
    if (!in.count("time_ids")) throw missing("time_ids");
    cond.text_embeds = in.at("text_embeds");
    cond.time_ids = in.at("time_ids");
  }
  return cond.to(o.device, o.dtype);
}

}  // namespace

Component parse_component(std::string_view name) {
  for (const auto& i : table())
    if (name == i.name) return i.c;
  std::string known;
  for (const auto& i : table()) known += (known.empty() ? "" : ", ") + std::string(i.name);
  throw Error("unknown component '" + std::string(name) + "' (expected one of: " + known + ")");
}

std::string component_name(Component c) {
  for (const auto& i : table())
    if (i.c == c) return i.name;
  return "?";
}

std::vector<std::string> component_inputs(Component c) {
  for (const auto& i : table())
    if (i.c == c) return i.inputs;
  return {};
}

std::vector<std::string> component_sdxl_inputs(Component c) {
  for (const auto& i : table())
    if (i.c == c) return i.sdxl_inputs;
  return {};
}

std::filesystem::path resolve_component_dir(const std::filesystem::path& model, const std::string& sub) {
  std::error_code ec;
  if (!std::filesystem::exists(model, ec)) throw Error("model '" + model.string() + "' does not exist");
  if (std::filesystem::is_regular_file(model / "model_index.json", ec)) {
    const auto dir = model / sub;
    if (!std::filesystem::is_directory(dir, ec))
      throw Error("pipeline folder '" + model.string() + "' has no '" + sub + "' component folder");
    return dir;
  }
  return model;
}

void check_component_loras(Component c, const std::vector<LoraSpec>& loras) {
  if (!loras.empty() && c != Component::Unet && c != Component::TextEncoder && c != Component::ControlNet && c != Component::Txt2Img)
    throw Error("LoRAs adapt the unet and the text_encoder; component " + component_name(c) + " has nothing they change");
}

TensorMap run_tokenizer(const std::filesystem::path& model, const std::vector<std::string>& prompts) {
  const auto tok = ClipTokenizer::from_folder(resolve_component_dir(model, "tokenizer"));
  return {{"input_ids", tok.encode_batch(prompts)}};
}

TensorMap run_component(Component c, const std::filesystem::path& model, const TensorMap& in, const ComputeOptions& o,
                        const ComponentRunOptions& options) {
  torch::NoGradGuard no_grad;
  const auto& loras = options.loras;
  const auto& config_from = options.config_from;
  check_component_loras(c, loras);
  if ((c == Component::ControlNet) != !options.controlnet.empty())
    throw Error(c == Component::ControlNet ? "component controlnet needs the ControlNet folder (--controlnet DIR)"
                                           : "a ControlNet folder is for component controlnet, not " + component_name(c));
  std::error_code ec;
  std::optional<SingleFileCheckpoint> single;
  if (std::filesystem::is_regular_file(model, ec) && c != Component::TaesdEncode && c != Component::TaesdDecode)
    single = open_single_file(model, config_from);
  auto source = [&](const std::string& sub) { return single ? (sub == "unet" ? single->unet : sub == "vae" ? single->vae : single->text_encoder)
                                                            : component_source(resolve_component_dir(model, sub)); };
  switch (c) {
    case Component::Unet: {
      auto unet = load_unet_2d_condition(source("unet"), o);
      fuse_loras(loras, {{"unet", unet.get()}, {"text_encoder", nullptr}});
      const auto out = unet->forward(to_compute(input(in, c, "sample"), o), input(in, c, "timestep").to(o.device), conditioning(in, c, unet->config, o));
      return {{"out", to_output(out)}};
    }
    case Component::TextEncoder: {
      auto te = load_clip_text_model(source("text_encoder"), o);
      fuse_loras(loras, {{"unet", nullptr}, {"text_encoder", te.get()}});
      const auto out = te->forward(input(in, c, "input_ids").to(o.device, torch::kInt64));
      return {{"last_hidden_state", to_output(out.last_hidden_state)},
              {"penultimate_hidden_state", to_output(out.penultimate_hidden_state)},
              {"pooler_output", to_output(out.pooler_output)}};
    }
    case Component::VaeEncode: {
      auto vae = load_autoencoder_kl(source("vae"), o);
      const auto d = vae->encode(to_compute(image_u8_to_unit_range(input(in, c, "image_u8")), o));
      return {{"latent_mean", to_output(d.mean)}, {"latent_std", to_output(d.std)}};
    }
    case Component::VaeDecode: {
      auto vae = load_autoencoder_kl(source("vae"), o);
      return {{"decoded", to_output(vae->decode(to_compute(input(in, c, "latents"), o)))}};
    }
    case Component::TaesdEncode: {
      auto taesd = load_autoencoder_tiny(model, o);
      return {{"latents", to_output(taesd->encode(to_compute(image_u8_to_unit_range(input(in, c, "image_u8")), o)))}};
    }
    case Component::TaesdDecode: {
      auto taesd = load_autoencoder_tiny(model, o);
      return {{"decoded", to_output(taesd->decode(to_compute(input(in, c, "latents"), o)))}};
    }
    case Component::TextEncoders: {
      const auto ids = input(in, c, "input_ids"), ids_2 = input(in, c, "input_ids_2");
      UNetConditioning e;
      if (single) {
        if (!single->text_encoder_2) throw Error("component text_encoders is SDXL's pair; '" + model.string() + "' is an " + single->family + " checkpoint");
        auto te = load_clip_text_model(single->text_encoder, o), te2 = load_clip_text_model(*single->text_encoder_2, o);
        const auto r = encode_sdxl_prompt(*te, *te2, ids.to(o.device, torch::kInt64), ids_2.to(o.device, torch::kInt64));
        e = UNetConditioning(r.prompt_embeds, r.pooled_prompt_embeds);
      } else {
        const auto prompts = PromptEncoder::load(model, o);
        if (!prompts.sdxl()) throw Error("component text_encoders is SDXL's pair; '" + model.string() + "' has no text_encoder_2/ (use text_encoder)");
        e = prompts.encode_ids(ids, ids_2);
      }
      return {{"prompt_embeds", to_output(e.encoder_hidden_states)}, {"pooled_prompt_embeds", to_output(e.text_embeds)}};
    }
    case Component::Txt2Img: {
      if (single) throw Error("component txt2img reads a pipeline folder (model_index.json), not a single file");
      const auto prompts = PromptEncoder::load(model, o);
      auto unet = load_unet_2d_condition(resolve_component_dir(model, "unet"), o);
      auto targets = prompts.lora_targets();
      targets.insert(targets.begin(), {"unet", unet.get()});
      fuse_loras(loras, targets);
      auto cond = prompts.encode_ids(input(in, c, "input_ids"), prompts.sdxl() ? input(in, c, "input_ids_2") : torch::Tensor());
      if (unet->config.text_time) cond.time_ids = input(in, c, "time_ids").to(torch::kFloat32);
      const auto x_T = input(in, c, "x_T");
      const auto expected = input(in, c, "timestep").to(torch::kFloat32).reshape({-1});
      auto gen = at::detail::createCPUGenerator(0);
      const auto r = sample_latents(*unet, cond, x_T, resolve_component_dir(model, "scheduler"), expected.numel(), gen, o);
      const auto got = torch::tensor(r.timesteps);
      if (!torch::equal(got, expected))
        throw Error("txt2img: the input's timesteps " + describe_values(expected) + " are not the " + r.sampler + " schedule's for " +
                    std::to_string(expected.numel()) + " step(s), " + describe_values(got));
      auto vae = load_autoencoder_kl(resolve_component_dir(model, "vae"), o);
      return {{"out_latents", to_output(r.latents)},
              {"decoded", to_output(vae->decode((r.latents / vae->config.scaling_factor).to(o.device, o.dtype)))}};
    }
    case Component::ControlNet: {
      auto unet = load_unet_2d_condition(source("unet"), o);
      fuse_loras(loras, {{"unet", unet.get()}, {"text_encoder", nullptr}});
      auto controlnet = load_controlnet(options.controlnet, o);
      const auto sample = to_compute(input(in, c, "sample"), o);
      const auto context = conditioning(in, c, unet->config, o);
      const auto t = input(in, c, "timestep").to(o.device);
      const auto control = to_compute(control_image_to_unit(input(in, c, "cond_image_u8")), o);
      const auto r = controlnet->forward(sample, t, context, control, options.conditioning_scale);
      TensorMap out{{"cond_embedding", to_output(r.cond_embedding)}, {"mid_block_res_sample", to_output(r.residuals.mid)},
                    {"unet_out", to_output(unet->forward(sample, t, context, &r.residuals))}};
      for (std::size_t i = 0; i < r.residuals.down.size(); ++i) out.emplace("down_block_res_samples." + std::to_string(i), to_output(r.residuals.down[i]));
      return out;
    }
    case Component::Tokenizer:
      throw Error("the tokenizer reads prompts, not tensors: use run_tokenizer (CLI: --prompts FILE)");
  }
  throw Error("unreachable component");
}

}  // namespace streamgen
