#include "streamgen/txt2img.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/autoencoder_tiny.h"
#include "streamgen/build_info.h"
#include "streamgen/clip_text_model.h"
#include "streamgen/clip_tokenizer.h"
#include "streamgen/component_run.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/progress.h"
#include "streamgen/timing.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {

Txt2ImgResult txt2img(const Txt2ImgOptions& o) {
  torch::NoGradGuard no_grad;
  const auto& c = o.compute;
  if (o.steps < 1) throw Error("txt2img: --steps must be at least 1");
  auto gen = at::detail::createCPUGenerator(o.seed);
  using clock = std::chrono::steady_clock;
  Txt2ImgResult r;

  auto t0 = clock::now();
  const auto tokenizer = ClipTokenizer::from_folder(resolve_component_dir(o.model, "tokenizer"));
  auto text_encoder = load_clip_text_model(resolve_component_dir(o.model, "text_encoder"), c);
  auto unet = load_unet_2d_condition(resolve_component_dir(o.model, "unet"), c);
  fuse_loras(o.loras, {{"unet", unet.get()}, {"text_encoder", text_encoder.get()}});
  t0 = clock::now();
  const auto embedding = text_encoder->forward(tokenizer.encode_batch({o.prompt}).to(c.device)).last_hidden_state;
  r.text_ms = ms_since(t0);

  const LcmScheduler scheduler(LcmSchedulerConfig::from_folder(resolve_component_dir(o.model, "scheduler")));

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
  auto latents = torch::randn(shape, gen);  // float32 on the CPU: the same noise on every device and dtype
  const auto timesteps = scheduler.timesteps(o.steps);
  {
    ProgressBar bar("denoise", static_cast<std::int64_t>(timesteps.size()), "step");
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      const auto t = timesteps[i];
      const auto eps = unet->forward(latents.to(c.device, c.dtype), torch::tensor({t}, torch::TensorOptions().device(c.device)), embedding)
                           .to(torch::kCPU, torch::kFloat32);
      const auto denoised = scheduler.denoise(eps, latents, t);
      latents = i + 1 < timesteps.size() ? scheduler.add_noise(denoised, torch::randn(shape, gen), timesteps[i + 1]) : denoised;
      bar.advance();
    }
  }
  r.denoise_ms = ms_since(t0);

  t0 = clock::now();
  const auto image = o.taesd ? taesd->decode(latents.to(c.device, c.dtype)) : vae->decode((latents / vae->config.scaling_factor).to(c.device, c.dtype));
  r.image_u8 = unit_range_to_image_u8(image.to(torch::kCPU));
  r.decode_ms = ms_since(t0);

  r.parameters = {{"prompt", o.prompt},
                  {"steps", std::to_string(o.steps)},
                  {"seed", std::to_string(o.seed)},
                  {"size", std::to_string(o.width) + "x" + std::to_string(o.height)},
                  {"model", o.model.string()},
                  {"decoder", o.taesd ? "taesd:" + o.taesd->string() : std::string("vae")},
                  {"sampler", "LCM"},
                  {"loras", describe_lora_specs(o.loras)},
                  {"dtype", dtype_label(c.dtype)},
                  {"device", c.device.str()},
                  {"software", std::string("streamgen ") + STREAMGEN_VERSION_STRING}};
  return r;
}

}  // namespace streamgen
