// streamgen replay: run a stream case file through the stream and write its per-call outputs.
#include <fmt/core.h>

#include <iostream>

#include "commands.h"
#include "streamgen/build_info.h"
#include "streamgen/safetensors.h"
#include "streamgen/stream_replay.h"

namespace streamgen::cli {

void register_replay(CLI::App& app) {
  struct Args {
    std::string case_file, model, taesd, frames, out;
    bool decode = false;
    std::vector<std::string> loras;
    ComputeArgs compute;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("replay", "Replay a stream case file (config + noises + embeddings) and write every call's outputs");
  cmd->add_option("case", args->case_file, "Case .safetensors (__metadata__.config holds the stream configuration)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--model", args->model, "Diffusers pipeline folder with the case's UNet")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", args->taesd, "TAESD folder (encoder for img2img frames, decoder for --decode)")->required()->check(CLI::ExistingPath);
  cmd->add_option("--frames", args->frames, "Frames file (default: the case's frames_file beside it)")->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out, "Output .safetensors: out_latents, x0_batch, stock_after, ssf_processed, out_images")->required();
  cmd->add_flag("--decode", args->decode, "Also decode every output latent (out_images)");
  add_lora_option(*cmd, args->loras);
  args->compute.add_to(*cmd);
  cmd->callback([args] {
    StreamReplayOptions o;
    o.loras = lora_specs(args->loras);
    o.case_file = args->case_file;
    o.model = args->model;
    o.taesd = args->taesd;
    if (!args->frames.empty()) o.frames = args->frames;
    o.decode = args->decode;
    o.compute = args->compute.resolve();
    const auto outputs = replay_stream_case(o);
    save_safetensors(args->out, outputs, {{"case", args->case_file}, {"producer", std::string("streamgen ") + STREAMGEN_VERSION_STRING}});
    std::cout << fmt::format("wrote {} tensor(s) to {}\n", outputs.size(), args->out) << std::flush;
  });
}

}  // namespace streamgen::cli
