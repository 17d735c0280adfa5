// streamgen txt2img: one image from a prompt, written as a PNG carrying its generation parameters.
#include <fmt/core.h>

#include <iostream>

#include "commands.h"
#include "streamgen/image_io.h"
#include "streamgen/txt2img.h"

namespace streamgen::cli {

void register_txt2img(CLI::App& app) {
  struct Args {
    Txt2ImgOptions options;
    std::string model, taesd, out;
    std::vector<std::string> loras;
    ComputeArgs compute;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("txt2img", "Generate one image from a prompt (LCM / turbo sampling)");
  cmd->add_option("--model", args->model, "Diffusers pipeline folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", args->taesd, "Decode with this TAESD instead of the VAE")->check(CLI::ExistingPath);
  cmd->add_option("--prompt,-p", args->options.prompt, "The prompt")->required();
  cmd->add_option("--steps", args->options.steps, "Denoising steps (1 for SD-Turbo)")->capture_default_str()->check(CLI::Range(1, 50));
  cmd->add_option("--seed", args->options.seed, "Noise seed")->capture_default_str();
  cmd->add_option("-W,--width", args->options.width, "Image width")->capture_default_str()->check(CLI::Range(8, 4096));
  cmd->add_option("-H,--height", args->options.height, "Image height")->capture_default_str()->check(CLI::Range(8, 4096));
  cmd->add_option("--out,-o", args->out, "Output PNG")->required();
  add_lora_option(*cmd, args->loras);
  args->compute.add_to(*cmd, /*with_dtype=*/true, /*with_auto=*/true);
  cmd->callback([args] {
    auto o = args->options;
    o.model = args->model;
    o.loras = lora_specs(args->loras);
    if (!args->taesd.empty()) o.taesd = args->taesd;
    o.compute = args->compute.resolve_for_model(args->model);
    const auto r = txt2img(o);
    write_png(args->out, r.image_u8, r.parameters);
    std::cout << fmt::format("wrote {} ({}x{}): text {:.0f} ms, denoise {:.0f} ms, decode {:.0f} ms (weights loading included)\n", args->out,
                             o.width, o.height, r.text_ms, r.denoise_ms, r.decode_ms)
              << std::flush;
  });
}

}  // namespace streamgen::cli
