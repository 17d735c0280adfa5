#include "streamgen/stream_replay.h"

#include <torch/torch.h>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/similarity_filter.h"
#include "streamgen/stream_diffusion.h"

namespace streamgen {

TensorMap replay_stream_case(const StreamReplayOptions& o) {
  torch::NoGradGuard no_grad;
  const auto src = o.case_file.string();
  const auto file = SafetensorsFile::open(o.case_file);
  if (!file.metadata().count("config")) throw FormatError(src + ": no __metadata__.config (not a stream case file)");
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(file.metadata().at("config"));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(src + ": __metadata__.config is not JSON: " + e.what());
  }
  const auto mode = config_required<std::string>(cfg, "mode", src);
  const bool turbo = mode == "turbo";
  StreamDiffusionConfig c;
  c.t_index_list = config_required<std::vector<std::int64_t>>(cfg, "t_index_list", src);
  c.num_inference_steps = cfg.value("num_inference_steps", 50);
  c.cfg = parse_cfg_type(config_required<std::string>(cfg, "cfg_type", src));
  c.guidance_scale = config_required<double>(cfg, "guidance_scale", src);
  c.delta = config_required<double>(cfg, "delta", src);
  c.do_add_noise = config_required<bool>(cfg, "do_add_noise", src);
  c.use_denoising_batch = config_required<bool>(cfg, "use_denoising_batch", src);
  c.txt2img = mode == "txt2img" || turbo;
  c.frame_buffer_size = turbo ? cfg.value("turbo_batch", 1) : cfg.value("frame_buffer_size", 1);
  if (mode != "img2img" && !c.txt2img) throw FormatError(src + ": unknown mode '" + mode + "'");
  // The cases were recorded with upstream's behaviour: zero start and the recursive RCFG state.
  c.warmup = Warmup::Zeros;
  c.rcfg_form = RcfgForm::Recursive;
  const auto calls = config_required<std::int64_t>(cfg, "calls", src);

  auto unet = load_unet_2d_condition(resolve_component_dir(o.model, "unet"), o.compute);
  fuse_loras(o.loras, {{"unet", unet.get()}, {"text_encoder", nullptr}});
  const auto n = static_cast<std::int64_t>(c.t_index_list.size());
  torch::Tensor noise;
  if (file.contains("init_noise")) {
    noise = file.tensor("init_noise");
  } else if (c.txt2img) {
    noise = torch::zeros({n, unet->config.in_channels, config_required<std::int64_t>(cfg, "height", src) / 8, config_required<std::int64_t>(cfg, "width", src) / 8});
  } else {
    throw FormatError(src + ": img2img case without init_noise");
  }
  StreamDiffusion stream(unet, LcmScheduler{}, c, noise);
  // SD: cond_embeds [1, L, D] (+ uncond_embeds). SDXL adds the pooled projections cond_text_embeds / uncond_text_embeds
  // [1, P] and time_ids [1, 6] (diffusers' pooled_prompt_embeds, negative_pooled_prompt_embeds, add_time_ids).
  const auto embeddings = [&](const std::string& cond_key, const std::string& pooled_key) {
    const auto optional = [&](const std::string& k) { return file.contains(k) ? file.tensor(k) : torch::Tensor(); };
    UNetConditioning cond{file.tensor(cond_key)}, uncond{optional("uncond_embeds")};
    if (unet->config.text_time) {
      for (const auto& k : {pooled_key, std::string("time_ids")})
        if (!file.contains(k)) throw FormatError(src + ": the UNet is SDXL's: the case needs '" + k + "' (SDXL's added conditioning)");
      cond.text_embeds = file.tensor(pooled_key);
      cond.time_ids = file.tensor("time_ids");
      if (uncond.encoder_hidden_states.defined()) {
        uncond.text_embeds = optional("uncond_text_embeds");
        uncond.time_ids = cond.time_ids;
      }
    }
    return std::pair{cond, uncond};
  };
  {
    auto [cond, uncond] = embeddings("cond_embeds", "cond_text_embeds");
    stream.set_embeddings(cond, uncond);
  }

  AutoencoderTiny taesd{nullptr};
  torch::Tensor frames;
  if (!c.txt2img || o.decode) taesd = load_autoencoder_tiny(o.taesd, o.compute);
  if (!c.txt2img) {
    const auto frames_path = o.frames ? *o.frames : o.case_file.parent_path() / config_required<std::string>(cfg, "frames_file", src);
    frames = SafetensorsFile::open(frames_path).tensor("frames_u8");
  }
  std::vector<std::int64_t> frame_indices;
  for (std::int64_t i = 0; i < calls; ++i) frame_indices.push_back(i);
  if (cfg.contains("frame_indices")) frame_indices = cfg["frame_indices"].get<std::vector<std::int64_t>>();

  std::optional<SimilarityFilter> ssf;
  torch::Tensor uniform;
  std::int64_t call = 0;
  if (cfg.contains("ssf_threshold")) {
    uniform = file.tensor("ssf_uniform").to(torch::kFloat64);
    SimilarityFilterOptions so;
    so.threshold = config_required<double>(cfg, "ssf_threshold", src);
    so.max_skip = config_required<int>(cfg, "ssf_max_skip_frame", src);
    so.upstream_counter = true;  // the cases were recorded with upstream's counter
    ssf.emplace(so, [&] { return uniform[call].item<double>(); });
  }

  std::vector<torch::Tensor> outs, x0s, stocks, images;
  std::vector<std::uint8_t> processed;
  StreamDiffusion::Output last;
  for (call = 0; call < calls; ++call) {
    if (cfg.contains("change_at") && call == cfg["change_at"].get<std::int64_t>()) {
      auto [cond, uncond] = embeddings("cond_embeds_new", "cond_text_embeds_new");
      stream.set_embeddings(cond, uncond);
    }
    torch::Tensor input;
    bool process = true;
    if (c.txt2img) {
      input = turbo ? file.tensor("x_T") : file.tensor("x_T")[call].unsqueeze(0);
    } else {
      const auto index = frame_indices.at(static_cast<std::size_t>(call));
      if (index < 0 || index >= frames.size(0)) throw Error(src + ": frame index " + std::to_string(index) + " outside the frames file");
      const auto x = image_u8_to_unit_range(frames[index].unsqueeze(0));
      if (ssf) process = ssf->check(x).process;
      if (process) input = taesd->encode(x.to(o.compute.device, o.compute.dtype)).to(torch::kCPU, torch::kFloat32);
    }
    processed.push_back(process ? 1 : 0);
    if (process) last = stream.step(input, file.contains("renoise") ? file.tensor("renoise")[call] : torch::Tensor());
    // A skipped call re-emits the previous output; the stream state is untouched.
    outs.push_back(last.latents);
    x0s.push_back(last.x0_batch);
    if (last.stock.defined()) stocks.push_back(last.stock);
    if (o.decode) images.push_back(taesd->decode(last.latents.to(o.compute.device, o.compute.dtype)).to(torch::kCPU, torch::kFloat32));
  }
  TensorMap out;
  auto stack = [&](const std::vector<torch::Tensor>& v) { return turbo ? v[0] : torch::cat(v); };
  out["out_latents"] = stack(outs);
  out["x0_batch"] = torch::stack(x0s);
  if (!stocks.empty()) out["stock_after"] = torch::stack(stocks);
  if (ssf) out["ssf_processed"] = torch::tensor(std::vector<std::int64_t>(processed.begin(), processed.end())).to(torch::kUInt8);
  if (o.decode) out["out_images"] = stack(images);
  return out;
}

}  // namespace streamgen
