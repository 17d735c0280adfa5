#include "streamgen/single_file.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {
namespace {

const std::string kUnetPrefix = "model.diffusion_model.";
const std::string kVaePrefix = "first_stage_model.";
const std::string kClipPrefix = "cond_stage_model.transformer.";
const std::string kOpenClipPrefix = "cond_stage_model.model.";
const std::string kSdxlClipPrefix = "conditioner.embedders.0.transformer.";
const std::string kSdxlOpenClipPrefix = "conditioner.embedders.1.model.";

std::string str(std::int64_t v) { return std::to_string(v); }

void add_resnet(std::vector<KeyRename>& r, const std::string& from, const std::string& to) {
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{{"in_layers.0.", "norm1."},
                                                                              {"in_layers.2.", "conv1."},
                                                                              {"emb_layers.1.", "time_emb_proj."},
                                                                              {"out_layers.0.", "norm2."},
                                                                              {"out_layers.3.", "conv2."},
                                                                              {"skip_connection.", "conv_shortcut."}})
    r.push_back({kUnetPrefix + from + a, to + b});
}

void add_vae_resnet(std::vector<KeyRename>& r, const std::string& from, const std::string& to) {
  r.push_back({kVaePrefix + from + "nin_shortcut.", to + "conv_shortcut."});
  r.push_back({kVaePrefix + from, to});
}

void add_vae_mid(std::vector<KeyRename>& r, const std::string& part) {
  add_vae_resnet(r, part + ".mid.block_1.", part + ".mid_block.resnets.0.");
  add_vae_resnet(r, part + ".mid.block_2.", part + ".mid_block.resnets.1.");
  const auto attn = part + ".mid_block.attentions.0.";
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}})
    r.push_back({kVaePrefix + part + ".mid.attn_1." + a, attn + b});
}

std::vector<std::string> keys_with_prefix(const WeightSet& w, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& n : w.names())
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  return out;
}

// Largest N + 1 such that `<prefix>N.` starts some key.
std::int64_t count_indices(const WeightSet& w, const std::string& prefix) {
  std::int64_t n = 0;
  for (const auto& k : keys_with_prefix(w, prefix)) {
    const auto rest = k.substr(prefix.size());
    const auto dot = rest.find('.');
    if (dot == std::string::npos) continue;
    try {
      n = std::max<std::int64_t>(n, std::stoll(rest.substr(0, dot)) + 1);
    } catch (const std::exception&) {
    }
  }
  return n;
}

std::vector<std::int64_t> shape_or_throw(const WeightSet& w, const std::string& key) {
  if (!w.contains(key)) throw StateDictError(w.description() + ": expected tensor '" + key + "' in an SD single-file checkpoint");
  return w.shape(key);
}

// What the down path's tensors under `p` say: widths, block types, cross-attention width and projection kind.
struct DownPath {
  std::vector<std::int64_t> channels;
  std::vector<std::string> types;
  std::int64_t context = 768;
  bool linear = false;
  std::vector<std::int64_t> transformer_layers;  // per block (1 where a block has no attention)
};

DownPath infer_down_path(const WeightSet& w, const std::string& p, std::int64_t n, std::int64_t L) {
  DownPath d;
  for (std::int64_t b = 0; b < n; ++b) {
    const auto first = str(1 + b * (L + 1));
    d.channels.push_back(shape_or_throw(w, p + "input_blocks." + first + ".0.out_layers.3.weight")[0]);
    const bool attn = w.contains(p + "input_blocks." + first + ".1.proj_in.weight");
    d.types.push_back(attn ? "CrossAttnDownBlock2D" : "DownBlock2D");
    d.transformer_layers.push_back(attn ? count_indices(w, p + "input_blocks." + first + ".1.transformer_blocks.") : 1);
    if (attn) {
      d.context = shape_or_throw(w, p + "input_blocks." + first + ".1.transformer_blocks.0.attn2.to_k.weight")[1];
      d.linear = shape_or_throw(w, p + "input_blocks." + first + ".1.proj_in.weight").size() == 2;
    }
  }
  return d;
}

// The down path's fields of a diffusers config. Head counts do not show in shapes: SD2.x uses 64-wide heads,
// SD1.x 8 heads per block.
void put_down_path(nlohmann::json& c, const WeightSet& w, const std::string& p, const DownPath& d, std::int64_t L) {
  c["in_channels"] = shape_or_throw(w, p + "input_blocks.0.0.weight")[1];
  c["block_out_channels"] = d.channels;
  c["down_block_types"] = d.types;
  c["layers_per_block"] = L;
  c["cross_attention_dim"] = d.context;
  c["use_linear_projection"] = d.linear;
  if (std::any_of(d.transformer_layers.begin(), d.transformer_layers.end(), [](auto n) { return n != 1; })) c["transformer_layers_per_block"] = d.transformer_layers;
  if (d.context == 1024 || d.context == 2048) {  // SD2.x and SDXL: 64-wide heads
    std::vector<std::int64_t> heads;
    for (auto ch : d.channels) heads.push_back(ch / 64);
    c["attention_head_dim"] = heads;
  } else {
    c["attention_head_dim"] = 8;
  }
}

// SDXL's label_emb (add_embedding) reads the pooled text projection and 6 sinusoids of addition_time_embed_dim: the
// pooled width is the file's text_projection's when it has one, else SDXL's 1280.
void put_added_conditioning(nlohmann::json& c, const WeightSet& w, const std::string& p) {
  if (!w.contains(p + "label_emb.0.0.weight")) return;
  const auto in = shape_or_throw(w, p + "label_emb.0.0.weight")[1];
  const auto pooled = w.contains(kSdxlOpenClipPrefix + "text_projection") ? shape_or_throw(w, kSdxlOpenClipPrefix + "text_projection")[1] : 1280;
  c["addition_embed_type"] = "text_time";
  c["projection_class_embeddings_input_dim"] = in;
  c["addition_time_embed_dim"] = (in - pooled) / 6;
}

std::int64_t count_downsamplers(const WeightSet& w, const std::string& p) {
  std::int64_t downsamplers = 0;
  for (const auto& k : keys_with_prefix(w, p + "input_blocks."))
    if (k.find(".op.weight") != std::string::npos) ++downsamplers;
  return downsamplers;
}

nlohmann::json infer_unet_config(const WeightSet& w) {
  const auto p = kUnetPrefix;
  const std::int64_t out_blocks = count_indices(w, p + "output_blocks.");
  const std::int64_t n = count_downsamplers(w, p) + 1;
  if (out_blocks == 0 || out_blocks % n != 0) throw StateDictError(w.description() + ": cannot infer the UNet layout from output_blocks");
  const std::int64_t L = out_blocks / n - 1;
  const auto down = infer_down_path(w, p, n, L);
  std::vector<std::string> up;
  for (std::int64_t b = 0; b < n; ++b)
    up.push_back(w.contains(p + "output_blocks." + str(b * (L + 1)) + ".1.proj_in.weight") ? "CrossAttnUpBlock2D" : "UpBlock2D");
  nlohmann::json c;
  c["_class_name"] = "UNet2DConditionModel";
  put_down_path(c, w, p, down, L);
  c["out_channels"] = shape_or_throw(w, p + "out.2.weight")[0];
  c["up_block_types"] = up;
  put_added_conditioning(c, w, p);
  return c;
}

nlohmann::json infer_vae_config(const WeightSet& w, double scaling_factor) {
  const auto p = kVaePrefix;
  const auto n = count_indices(w, p + "encoder.down.");
  if (n == 0) throw StateDictError(w.description() + ": no first_stage_model.encoder.down.* tensors (the VAE)");
  std::vector<std::int64_t> channels;
  for (std::int64_t i = 0; i < n; ++i) channels.push_back(shape_or_throw(w, p + "encoder.down." + str(i) + ".block.0.conv1.weight")[0]);
  nlohmann::json c;
  c["_class_name"] = "AutoencoderKL";
  c["block_out_channels"] = channels;
  c["layers_per_block"] = count_indices(w, p + "encoder.down.0.block.");
  c["latent_channels"] = shape_or_throw(w, p + "quant_conv.weight")[0] / 2;
  c["in_channels"] = shape_or_throw(w, p + "encoder.conv_in.weight")[1];
  c["out_channels"] = shape_or_throw(w, p + "decoder.conv_out.weight")[0];
  c["scaling_factor"] = scaling_factor;
  return c;
}

// `open_clip_prefix` empty: transformers' CLIP under `clip_prefix`; else OpenCLIP's text tower there. `sdxl`: every
// layer is kept (SDXL's pooled output comes from the last; SD2.x never uses the last), with the text_projection.
nlohmann::json infer_text_config(const WeightSet& w, const std::string& clip_prefix, const std::string& open_clip_prefix, bool sdxl = false) {
  nlohmann::json c;
  c["architectures"] = {"CLIPTextModel"};
  if (!open_clip_prefix.empty()) {
    const auto& p = open_clip_prefix;
    const auto hidden = shape_or_throw(w, p + "token_embedding.weight")[1];
    c["hidden_size"] = hidden;
    c["vocab_size"] = shape_or_throw(w, p + "token_embedding.weight")[0];
    c["max_position_embeddings"] = shape_or_throw(w, p + "positional_embedding")[0];
    c["intermediate_size"] = shape_or_throw(w, p + "transformer.resblocks.0.mlp.c_fc.weight")[0];
    // SD2.x conditions on the penultimate layer: the last resblock is never used.
    c["num_hidden_layers"] = count_indices(w, p + "transformer.resblocks.") - (sdxl ? 0 : 1);
    c["num_attention_heads"] = hidden / 64;
    c["hidden_act"] = "gelu";
    if (sdxl) {
      c["architectures"] = {"CLIPTextModelWithProjection"};
      c["projection_dim"] = shape_or_throw(w, p + "text_projection")[1];
    }
  } else {
    const auto p = w.contains(clip_prefix + "text_model.embeddings.token_embedding.weight") ? clip_prefix + "text_model." : clip_prefix;
    const auto hidden = shape_or_throw(w, p + "embeddings.token_embedding.weight")[1];
    c["hidden_size"] = hidden;
    c["vocab_size"] = shape_or_throw(w, p + "embeddings.token_embedding.weight")[0];
    c["max_position_embeddings"] = shape_or_throw(w, p + "embeddings.position_embedding.weight")[0];
    c["intermediate_size"] = shape_or_throw(w, p + "encoder.layers.0.mlp.fc1.weight")[0];
    c["num_hidden_layers"] = count_indices(w, p + "encoder.layers.");
    c["num_attention_heads"] = hidden / 64;
    c["hidden_act"] = "quick_gelu";
  }
  return c;
}

// OpenCLIP's text tower under `p` -> transformers' CLIPTextModel names, splitting the fused in_proj; with
// `projection`, its text_projection matrix (applied as x @ P) as CLIPTextModelWithProjection's Linear weight P^T.
std::shared_ptr<const TensorSource> convert_open_clip(const WeightSet& w, const std::string& p, std::int64_t layers, bool projection = false) {
  std::map<std::string, torch::Tensor> out;
  out["text_model.embeddings.token_embedding.weight"] = w.tensor(p + "token_embedding.weight");
  out["text_model.embeddings.position_embedding.weight"] = w.tensor(p + "positional_embedding");
  out["text_model.final_layer_norm.weight"] = w.tensor(p + "ln_final.weight");
  out["text_model.final_layer_norm.bias"] = w.tensor(p + "ln_final.bias");
  for (std::int64_t i = 0; i < layers; ++i) {
    const auto from = p + "transformer.resblocks." + str(i) + ".";
    const auto to = "text_model.encoder.layers." + str(i) + ".";
    for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
             {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."}, {"attn.out_proj.", "self_attn.out_proj."}})
      for (const std::string kind : {"weight", "bias"}) out[to + b + kind] = w.tensor(from + a + kind);
    for (const auto& [fused, kind] : {std::pair{"attn.in_proj_weight", "weight"}, std::pair{"attn.in_proj_bias", "bias"}}) {
      const auto parts = w.tensor(from + fused).chunk(3, 0);
      out[to + "self_attn.q_proj." + kind] = parts[0];
      out[to + "self_attn.k_proj." + kind] = parts[1];
      out[to + "self_attn.v_proj." + kind] = parts[2];
    }
  }
  if (projection) out["text_projection.weight"] = w.tensor(p + "text_projection").t().contiguous();
  return std::make_shared<TensorMapSource>(std::move(out), w.description() + " (OpenCLIP text tower)");
}

bool starts_with_any(std::string_view k, std::initializer_list<std::string_view> prefixes) {
  for (auto p : prefixes)
    if (k.substr(0, p.size()) == p) return true;
  return false;
}

}  // namespace

std::vector<KeyRename> ldm_unet_renames(const nlohmann::json& cfg) {
  const auto down = config_value<std::vector<std::string>>(cfg, "down_block_types", {}, "unet config");
  const auto up = config_value<std::vector<std::string>>(cfg, "up_block_types", {}, "unet config");
  const auto L = config_value<std::int64_t>(cfg, "layers_per_block", 2, "unet config");
  const auto n = static_cast<std::int64_t>(down.size());
  std::vector<KeyRename> r{{kUnetPrefix + "time_embed.0.", "time_embedding.linear_1."},
                           {kUnetPrefix + "time_embed.2.", "time_embedding.linear_2."},
                           {kUnetPrefix + "label_emb.0.0.", "add_embedding.linear_1."},  // SDXL's added conditioning
                           {kUnetPrefix + "label_emb.0.2.", "add_embedding.linear_2."},
                           {kUnetPrefix + "input_blocks.0.0.", "conv_in."},
                           {kUnetPrefix + "out.0.", "conv_norm_out."},
                           {kUnetPrefix + "out.2.", "conv_out."}};
  for (std::int64_t b = 0; b < n; ++b) {
    for (std::int64_t j = 0; j < L; ++j) {
      const auto i = str(1 + b * (L + 1) + j);
      const auto to = "down_blocks." + str(b) + ".";
      add_resnet(r, "input_blocks." + i + ".0.", to + "resnets." + str(j) + ".");
      if (down[static_cast<std::size_t>(b)] == "CrossAttnDownBlock2D")
        r.push_back({kUnetPrefix + "input_blocks." + i + ".1.", to + "attentions." + str(j) + "."});
    }
    if (b + 1 < n)
      r.push_back({kUnetPrefix + "input_blocks." + str(1 + b * (L + 1) + L) + ".0.op.", "down_blocks." + str(b) + ".downsamplers.0.conv."});
  }
  add_resnet(r, "middle_block.0.", "mid_block.resnets.0.");
  r.push_back({kUnetPrefix + "middle_block.1.", "mid_block.attentions.0."});
  add_resnet(r, "middle_block.2.", "mid_block.resnets.1.");
  for (std::int64_t b = 0; b < n; ++b) {
    const bool attn = up[static_cast<std::size_t>(b)] == "CrossAttnUpBlock2D";
    const auto to = "up_blocks." + str(b) + ".";
    for (std::int64_t j = 0; j <= L; ++j) {
      const auto i = str(b * (L + 1) + j);
      add_resnet(r, "output_blocks." + i + ".0.", to + "resnets." + str(j) + ".");
      if (attn) r.push_back({kUnetPrefix + "output_blocks." + i + ".1.", to + "attentions." + str(j) + "."});
    }
    if (b + 1 < n)
      r.push_back({kUnetPrefix + "output_blocks." + str(b * (L + 1) + L) + (attn ? ".2" : ".1") + ".conv.", to + "upsamplers.0.conv."});
  }
  return r;
}

std::vector<KeyRename> ldm_vae_renames(const nlohmann::json& cfg) {
  const auto n = static_cast<std::int64_t>(config_value<std::vector<std::int64_t>>(cfg, "block_out_channels", {}, "vae config").size());
  const auto L = config_value<std::int64_t>(cfg, "layers_per_block", 2, "vae config");
  std::vector<KeyRename> r{{kVaePrefix + "encoder.norm_out.", "encoder.conv_norm_out."},
                           {kVaePrefix + "decoder.norm_out.", "decoder.conv_norm_out."}};
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < L; ++j)
      add_vae_resnet(r, "encoder.down." + str(i) + ".block." + str(j) + ".", "encoder.down_blocks." + str(i) + ".resnets." + str(j) + ".");
    r.push_back({kVaePrefix + "encoder.down." + str(i) + ".downsample.conv.", "encoder.down_blocks." + str(i) + ".downsamplers.0.conv."});
    // The original decoder counts its levels from the highest resolution; diffusers from the lowest.
    const auto to = "decoder.up_blocks." + str(n - 1 - i) + ".";
    for (std::int64_t j = 0; j <= L; ++j)
      add_vae_resnet(r, "decoder.up." + str(i) + ".block." + str(j) + ".", to + "resnets." + str(j) + ".");
    r.push_back({kVaePrefix + "decoder.up." + str(i) + ".upsample.conv.", to + "upsamplers.0.conv."});
  }
  add_vae_mid(r, "encoder");
  add_vae_mid(r, "decoder");
  r.push_back({kVaePrefix, ""});  // conv_in, conv_out, quant_conv, post_quant_conv keep their names
  return r;
}

namespace {

// Down blocks, widths and the hint block's shape, from a ControlNet single file's tensors under `p`.
nlohmann::json infer_controlnet_config(const WeightSet& w, const std::string& p) {
  const std::int64_t n = count_downsamplers(w, p) + 1, inputs = count_indices(w, p + "input_blocks.");
  if (inputs <= n || (inputs - n) % n != 0) throw StateDictError(w.description() + ": cannot infer the ControlNet's blocks from input_blocks");
  const std::int64_t L = (inputs - n) / n;
  // The hint block: convs at even indices (SiLUs between them): conv_in, two per width step, conv_out.
  const auto hint_convs = (count_indices(w, p + "input_hint_block.") + 1) / 2;
  if (hint_convs < 2 || hint_convs % 2 != 0) throw StateDictError(w.description() + ": cannot infer the ControlNet's input_hint_block");
  std::vector<std::int64_t> widths;
  for (std::int64_t k = 0; k < hint_convs / 2; ++k) widths.push_back(shape_or_throw(w, p + "input_hint_block." + str(4 * k) + ".weight")[0]);
  nlohmann::json c;
  c["_class_name"] = "ControlNetModel";
  put_down_path(c, w, p, infer_down_path(w, p, n, L), L);
  c["conditioning_channels"] = shape_or_throw(w, p + "input_hint_block.0.weight")[1];
  c["conditioning_embedding_out_channels"] = widths;
  put_added_conditioning(c, w, p);
  return c;
}

}  // namespace

std::vector<KeyRename> ldm_controlnet_renames(const nlohmann::json& cfg, const std::string& prefix) {
  // The encoder's rules are the UNet's (its up blocks, which a ControlNet lacks, mirror the down blocks).
  auto as_unet = cfg;
  std::vector<std::string> up;
  for (const auto& t : config_value<std::vector<std::string>>(cfg, "down_block_types", {}, "controlnet config"))
    up.insert(up.begin(), t == "CrossAttnDownBlock2D" ? "CrossAttnUpBlock2D" : "UpBlock2D");
  as_unet["up_block_types"] = up;
  std::vector<KeyRename> r;
  for (const auto& rule : ldm_unet_renames(as_unet)) {
    const auto part = rule.from.substr(kUnetPrefix.size());
    if (starts_with_any(part, {"input_blocks.", "middle_block.", "time_embed.", "label_emb."})) r.push_back({prefix + part, rule.to});
  }
  const auto widths = config_value<std::vector<std::int64_t>>(cfg, "conditioning_embedding_out_channels", {16, 32, 96, 256}, "controlnet config");
  const auto steps = static_cast<std::int64_t>(widths.size()) - 1;
  const std::string e = "controlnet_cond_embedding.";
  r.push_back({prefix + "input_hint_block.0.", e + "conv_in."});
  for (std::int64_t k = 0; k < 2 * steps; ++k) r.push_back({prefix + "input_hint_block." + str(2 + 2 * k) + ".", e + "blocks." + str(k) + "."});
  r.push_back({prefix + "input_hint_block." + str(2 + 4 * steps) + ".", e + "conv_out."});
  const auto L = config_value<std::int64_t>(cfg, "layers_per_block", 2, "controlnet config");
  const auto n = static_cast<std::int64_t>(up.size());
  for (std::int64_t k = 0; k < 1 + n * L + (n - 1); ++k) r.push_back({prefix + "zero_convs." + str(k) + ".0.", "controlnet_down_blocks." + str(k) + "."});
  r.push_back({prefix + "middle_block_out.0.", "controlnet_mid_block."});
  return r;
}

ComponentSource open_single_file_controlnet(const std::filesystem::path& file, const std::optional<std::filesystem::path>& config_from) {
  auto weights = std::make_shared<WeightSet>(WeightSet::open(file));
  const auto& w = *weights;
  const std::string prefix = keys_with_prefix(w, "control_model.").empty() ? "" : "control_model.";
  if (!w.contains(prefix + "input_hint_block.0.weight") || !w.contains(prefix + "middle_block_out.0.weight"))
    throw Error(file.string() + ": not a ControlNet single file (expected control_model.input_hint_block.*, zero_convs.*, "
                "middle_block_out.* tensors, or the same without the control_model. prefix)");
  ComponentSource source;
  if (config_from) {
    source.config_source = (*config_from / "config.json").string();
    source.config = read_json_file(*config_from / "config.json");
  } else {
    source.config_source = "configuration inferred from " + file.string();
    source.config = infer_controlnet_config(w, prefix);
  }
  source.weights = weights;
  source.load.renames = ldm_controlnet_renames(source.config, prefix);
  source.load.conv1x1_as_linear = true;  // SD2's proj_in / proj_out may be stored either way
  return source;
}

SingleFileCheckpoint open_single_file(const std::filesystem::path& file, const std::optional<std::filesystem::path>& config_from) {
  auto weights = std::make_shared<WeightSet>(WeightSet::open(file));
  const auto& w = *weights;
  SingleFileCheckpoint ckpt;
  const bool sdxl = w.contains(kSdxlOpenClipPrefix + "token_embedding.weight");
  const bool open_clip = w.contains(kOpenClipPrefix + "token_embedding.weight");
  const bool clip = !keys_with_prefix(w, kClipPrefix).empty();
  if (keys_with_prefix(w, kUnetPrefix).empty() || keys_with_prefix(w, kVaePrefix).empty() || (!open_clip && !clip && !sdxl))
    throw Error(file.string() + ": not a Stable Diffusion single-file checkpoint (expected model.diffusion_model.*, first_stage_model.* "
                "and cond_stage_model.* tensors, or SDXL's conditioner.embedders.*)");
  if (sdxl && keys_with_prefix(w, kSdxlClipPrefix).empty())
    throw Error(file.string() + ": an SDXL checkpoint with conditioner.embedders.1 (OpenCLIP bigG) but no conditioner.embedders.0.transformer.* "
                "(CLIP ViT-L): a refiner-only checkpoint is not supported");
  ckpt.family = sdxl ? "sdxl" : open_clip ? "sd2" : "sd1";
  const std::string inferred = "configuration inferred from " + file.string();
  auto config_for = [&](const std::string& sub, nlohmann::json inferred_config, std::string& source) {
    if (!config_from) {
      source = inferred;
      return inferred_config;
    }
    const auto path = *config_from / sub / "config.json";
    source = path.string();
    return read_json_file(path);
  };

  ckpt.unet.config = config_for("unet", infer_unet_config(w), ckpt.unet.config_source);
  ckpt.unet.weights = weights;
  ckpt.unet.load.renames = ldm_unet_renames(ckpt.unet.config);
  ckpt.unet.load.conv1x1_as_linear = true;  // SD2's proj_in/proj_out may be stored either way
  // Other components' tensors (and EMA copies, schedules) are not the UNet's business; a UNet key
  // that no rule mapped keeps its prefix and is reported.
  ckpt.unet.load.ignore_unexpected = [](std::string_view k) {
    return !starts_with_any(k, {kUnetPrefix, "conv_in.", "conv_out.", "conv_norm_out.", "time_embedding.", "down_blocks.", "mid_block.", "up_blocks."});
  };

  ckpt.vae.config = config_for("vae", infer_vae_config(w, sdxl ? 0.13025 : 0.18215), ckpt.vae.config_source);
  ckpt.vae.weights = weights;
  ckpt.vae.load.renames = ldm_vae_renames(ckpt.vae.config);
  ckpt.vae.load.conv1x1_as_linear = true;  // the mid-block attention's q/k/v/proj_out are 1x1 convs
  ckpt.vae.load.ignore_unexpected = [](std::string_view k) { return !starts_with_any(k, {"encoder.", "decoder.", "quant_conv.", "post_quant_conv."}); };

  const auto clip_prefix = sdxl ? kSdxlClipPrefix : kClipPrefix;
  ckpt.text_encoder.config = config_for("text_encoder", infer_text_config(w, clip_prefix, open_clip ? kOpenClipPrefix : ""), ckpt.text_encoder.config_source);
  if (open_clip) {
    ckpt.text_encoder.weights =
        convert_open_clip(w, kOpenClipPrefix, config_value<std::int64_t>(ckpt.text_encoder.config, "num_hidden_layers", 23, "text config"));
  } else {
    ckpt.text_encoder.weights = weights;
    ckpt.text_encoder.load.renames = {{clip_prefix + "text_model.", "text_model."}, {clip_prefix, "text_model."}};
    ckpt.text_encoder.load.ignore_unexpected = [](std::string_view k) { return k.substr(0, 11) != "text_model."; };
  }
  if (sdxl) {
    ComponentSource te2;
    te2.config = config_for("text_encoder_2", infer_text_config(w, "", kSdxlOpenClipPrefix, true), te2.config_source);
    te2.weights = convert_open_clip(w, kSdxlOpenClipPrefix, config_value<std::int64_t>(te2.config, "num_hidden_layers", 32, "text config"), true);
    ckpt.text_encoder_2 = std::move(te2);
  }
  return ckpt;
}

}  // namespace streamgen
