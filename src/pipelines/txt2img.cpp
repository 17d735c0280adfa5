#include "streamgen/txt2img.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/autoencoder_tiny.h"
#include "streamgen/build_info.h"
#include "streamgen/component_run.h"
#include "streamgen/error.h"
#include "streamgen/euler_scheduler.h"
#include "streamgen/image_tensor.h"
#include "streamgen/json_file.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/progress.h"
#include "streamgen/prompt_encoder.h"
#include "streamgen/timing.h"

namespace streamgen {

Txt2ImgSample sample_latents(UNet2DConditionModelImpl& unet, const UNetConditioning& cond, const torch::Tensor& x_T,
                             const std::filesystem::path& scheduler_dir, std::int64_t steps, at::Generator& gen, const ComputeOptions& c) {
  torch::NoGradGuard no_grad;
  if (steps < 1) throw Error("txt2img: --steps must be at least 1");
  const auto on_device = cond.to(c.device, c.dtype);
  const auto eps_at = [&](const torch::Tensor& x, const torch::Tensor& t) {
    return unet.forward(x.to(c.device, c.dtype), t.to(c.device), on_device).to(torch::kCPU, torch::kFloat32);
  };
  Txt2ImgSample r;
  ProgressBar bar("denoise", steps, "step");
  const auto cls = scheduler_class_name(scheduler_dir);
  if (is_euler_scheduler(cls)) {
    const auto path = scheduler_dir / "scheduler_config.json";
    const EulerScheduler scheduler(EulerSchedulerConfig::from_json(read_json_file(path), path.string()));
    const auto s = scheduler.schedule(steps);
    auto x = x_T.to(torch::kFloat32) * s.init_noise_sigma;
    for (std::size_t i = 0; i < s.timesteps.size(); ++i) {
      const auto sigma = s.sigmas[i], next = s.sigmas[i + 1];
      const auto eps = eps_at(EulerScheduler::scale_model_input(x, sigma), torch::tensor({s.timesteps[i]}));
      const auto noise = scheduler.config().ancestral && next > 0 ? torch::randn(x.sizes(), gen) : torch::Tensor();
      x = scheduler.step(eps, x, sigma, next, noise);
      bar.advance();
    }
    r.latents = x;
    r.timesteps = s.timesteps;
    r.sampler = scheduler.config().ancestral ? "Euler ancestral" : "Euler";
    return r;
  }
  // LCM's multi-step sampling: denoise, re-noise to the next timestep.
  const LcmScheduler scheduler(LcmSchedulerConfig::from_folder(scheduler_dir));
  const auto timesteps = scheduler.timesteps(steps);
  auto latents = x_T.to(torch::kFloat32);
  for (std::size_t i = 0; i < timesteps.size(); ++i) {
    const auto t = timesteps[i];
    const auto denoised = scheduler.denoise(eps_at(latents, torch::tensor({t})), latents, t);
    latents = i + 1 < timesteps.size() ? scheduler.add_noise(denoised, torch::randn(latents.sizes(), gen), timesteps[i + 1]) : denoised;
    r.timesteps.push_back(static_cast<float>(t));
    bar.advance();
  }
  r.latents = latents;
  r.sampler = "LCM";
  return r;
}

Txt2ImgResult txt2img(const Txt2ImgOptions& o) {
  torch::NoGradGuard no_grad;
  const auto& c = o.compute;
  if (o.steps < 1) throw Error("txt2img: --steps must be at least 1");
  auto gen = at::detail::createCPUGenerator(o.seed);
  using clock = std::chrono::steady_clock;
  Txt2ImgResult r;

  const auto prompts = PromptEncoder::load(o.model, c);
  auto unet = load_unet_2d_condition(resolve_component_dir(o.model, "unet"), c);
  prompts.check_fits(unet->config);
  auto targets = prompts.lora_targets();
  targets.insert(targets.begin(), {"unet", unet.get()});
  fuse_loras(o.loras, targets);
  auto t0 = clock::now();
  const auto cond = condition_for(prompts.encode({o.prompt}), unet->config, o.height, o.width);
  r.text_ms = ms_since(t0);

  AutoencoderTiny taesd{nullptr};
  AutoencoderKL vae{nullptr};
  std::int64_t factor = 0;
  if (o.taesd) {
    taesd = load_autoencoder_tiny(*o.taesd, c);
    factor = taesd->config.downsample_factor();
  } else {
    vae = load_autoencoder_kl(resolve_component_dir(o.model, "vae"), c);
    factor = vae->config.downsample_factor();
  }
  if (o.width <= 0 || o.height <= 0 || o.width % factor != 0 || o.height % factor != 0)
    throw Error("txt2img: width and height must be positive multiples of " + std::to_string(factor) + " (the autoencoder's factor), got " +
                std::to_string(o.width) + "x" + std::to_string(o.height));

  t0 = clock::now();
  const auto shape = std::vector<std::int64_t>{1, unet->config.in_channels, o.height / factor, o.width / factor};
  const auto x_T = torch::randn(shape, gen);  // float32 on the CPU: the same noise on every device and dtype
  const auto sample = sample_latents(*unet, cond, x_T, resolve_component_dir(o.model, "scheduler"), o.steps, gen, c);
  r.denoise_ms = ms_since(t0);

  t0 = clock::now();
  const auto& latents = sample.latents;
  // TAESD (and TAESD-XL) work in the scaled latent space; the VAE wants latents / scaling_factor.
  const auto image = o.taesd ? taesd->decode(latents.to(c.device, c.dtype)) : vae->decode((latents / vae->config.scaling_factor).to(c.device, c.dtype));
  r.image_u8 = unit_range_to_image_u8(image.to(torch::kCPU));
  r.decode_ms = ms_since(t0);

  r.parameters = {{"prompt", o.prompt},
                  {"steps", std::to_string(o.steps)},
                  {"seed", std::to_string(o.seed)},
                  {"size", std::to_string(o.width) + "x" + std::to_string(o.height)},
                  {"model", o.model.string()},
                  {"decoder", o.taesd ? "taesd:" + o.taesd->string() : std::string("vae")},
                  {"sampler", sample.sampler},
                  {"loras", describe_lora_specs(o.loras)},
                  {"dtype", dtype_label(c.dtype)},
                  {"device", c.device.str()},
                  {"software", std::string("streamgen ") + STREAMGEN_VERSION_STRING}};
  return r;
}

}  // namespace streamgen
