#pragma once
// Each subcommand registers itself on the root app; its file parses options and calls the library.
#include <CLI/CLI.hpp>

#include <atomic>
#include <string>
#include <vector>

#include "streamgen/device.h"
#include "streamgen/lora.h"
#include "streamgen/optimisation.h"

namespace streamgen {
struct StreamDiTOptions;
struct StreamRunnerOptions;
}

namespace streamgen::cli {

void register_info(CLI::App& app);
void register_tensors(CLI::App& app);
void register_bench(CLI::App& app);
void register_txt2img(CLI::App& app);
void register_replay(CLI::App& app);
void register_stream_commands(CLI::App& app);
void register_serve(CLI::App& app);
void register_dit(CLI::App& app);
void register_tae(CLI::App& app);
void register_dit_classifier(CLI::App& dit);  // under `dit`

// --device / --dtype / --threads, parsed as text and resolved by resolve().
struct ComputeArgs {
  std::string device = "cpu";
  std::string dtype = "fp32";
  int threads = 0;
  // with_auto: --dtype also takes auto (the command then resolves with resolve_for_model).
  void add_to(CLI::App& cmd, bool with_dtype = true, bool with_auto = false);
  ComputeOptions resolve() const;
  // --dtype auto becomes fastest_dtype() for the weights stored at `model`.
  ComputeOptions resolve_for_model(const std::string& model) const;
};

// --lora FILE[:SCALE], repeatable: LoRAs fused into the UNet and text encoder at load, summed.
void add_lora_option(CLI::App& cmd, std::vector<std::string>& loras);
// The parsed specs; throws streamgen::Error naming a malformed argument or a file that does not exist.
std::vector<LoraSpec> lora_specs(const std::vector<std::string>& loras);

// --controlnet DIR[:SCALE] (repeatable) and --control canny|frame|FILE for the Stable Diffusion streams.
struct ControlNetArgs {
  std::vector<std::string> controlnets;
  std::string control = "canny";
  void add_to(CLI::App& cmd);
  // Fills the runner options' ControlNet folders, scales and control source (after width and height are set).
  void apply(StreamRunnerOptions& o) const;
};

// Ctrl-C / SIGTERM end a run cleanly (queued frames written, videos finalised): installs the
// handlers once and returns the flag they set.
const std::atomic<bool>& interrupt_flag();

// The command line as typed (quoted where needed), recorded in checkpoints and model cards.
void set_command_line(int argc, char** argv);
const std::string& command_line();
const std::vector<std::string>& command_arguments();  // argv as given

// The optimiser and checkpoint options of the training commands (--steps --batch --accumulate --lr
// --warmup --ema --seed --checkpoint-every).
void add_run_options(CLI::App& cmd, OptimisationOptions& o, const std::string& steps_help, const std::string& seed_help);
// A StreamDiT's sampler settings: the flags given on the command line (--chunk-size --micro-steps
// --guidance [--reference-frames]) win, the others come from the model's sampler.json, if any.
void apply_model_sampler_settings(CLI::App& cmd, const std::string& model, StreamDiTOptions& o);
// --guidance-interval LOW HIGH, --guidance-keep-mean, --guidance-rescale PHI (where and how CFG acts), for
// `dit stream`, `dit eval`, `serve`.
void add_guidance_shape_options(CLI::App& cmd, StreamDiTOptions& o);
// --edges bounce|wrap: the procedural world's edge rule (procedural_video.h); `more` ends the help.
CLI::Option* add_edges_option(CLI::App& cmd, std::string& edges, const std::string& more);
// --init MODEL: fine-tune that model folder (its config and weights; a fresh optimiser and schedule).
// `ignored`: what the model folder's config overrides, named in the help ("" for commands without such flags).
CLI::Option* add_init_option(CLI::App& cmd, OptimisationOptions& o, const std::string& what, const std::string& ignored = "the size flags");
// --init with --resume is one command a script can re-run: it starts the run when OUT holds none
// and continues it when it does. Call before training.
void resolve_init_or_resume(OptimisationOptions& o);
// --world-size --rank --master-addr --master-port --nproc
void add_distributed_options(CLI::App& cmd, OptimisationOptions& o, int& nproc);
// With --nproc N > 1: runs this same command as N local ranks, waits for them and returns true
// (a failing rank's status is thrown as ExitCode); false when this process should train itself.
bool run_as_local_ranks(int nproc, int threads, int port);
// The line a training command ends with: the steps it ran, how long, the final loss and where the
// model is (or that a resumed run had no steps left).
std::string training_summary_line(const TrainSummary& summary, const std::string& out);

// Exit status for "ran fine but the answer is no" (e.g. tensors differ beyond --tol).
inline constexpr int kExitMismatch = 1;
// Thrown by a subcommand to end with a given exit status after printing its output.
struct ExitCode {
  int code;
};

}  // namespace streamgen::cli
