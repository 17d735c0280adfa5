#include "commands.h"

#include <spdlog/spdlog.h>

#include <csignal>

#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/stream_dit.h"
#include "streamgen/stream_runner.h"

namespace streamgen::cli {
namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }
}  // namespace

namespace {
std::string g_command_line;
std::vector<std::string> g_arguments;
}  // namespace

void set_command_line(int argc, char** argv) {
  g_command_line.clear();
  g_arguments.assign(argv, argv + argc);
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i > 0) g_command_line += ' ';
    g_command_line += arg.find_first_of(" \t\"'") == std::string::npos ? arg : "'" + arg + "'";
  }
}

const std::string& command_line() { return g_command_line; }
const std::vector<std::string>& command_arguments() { return g_arguments; }

const std::atomic<bool>& interrupt_flag() {
  static const bool installed = [] {
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    return true;
  }();
  (void)installed;
  return g_interrupted;
}

void ComputeArgs::add_to(CLI::App& cmd, bool with_dtype, bool with_auto) {
  cmd.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  if (with_dtype && with_auto)
    cmd.add_option("--dtype", dtype,
                   "fp32, bf16, fp16 or auto (the faster for this model here: bf16 on CUDA, with AMX, or for a large model "
                   "on AVX512-BF16; else fp32)")
        ->capture_default_str();
  else if (with_dtype)
    cmd.add_option("--dtype", dtype, "fp32, bf16 or fp16")->capture_default_str();
  cmd.add_option("--threads", threads, "CPU threads (0 = one per core)")->capture_default_str();
}

void add_lora_option(CLI::App& cmd, std::vector<std::string>& loras) {
  cmd.add_option("--lora", loras,
                 "FILE[:SCALE] LoRA fused into the UNet and text encoder at load (kohya, diffusers or PEFT .safetensors; "
                 "SCALE default 1); repeat for several, summed")
      ->take_all()
      ->allow_extra_args(false);
}

std::vector<LoraSpec> lora_specs(const std::vector<std::string>& loras) {
  std::vector<LoraSpec> specs;
  for (const auto& arg : loras) {
    auto spec = parse_lora_spec(arg);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(spec.file, ec))
      throw Error("--lora " + printable(arg) + ": file '" + printable(spec.file.string()) + "' does not exist");
    specs.push_back(std::move(spec));
  }
  return specs;
}

void ControlNetArgs::add_to(CLI::App& cmd) {
  cmd.add_option("--controlnet", controlnets,
                 "DIR|FILE[:SCALE] ControlNet (diffusers folder or original single file) run with the UNet (SCALE default 1); repeat for several, summed")
      ->take_all()
      ->allow_extra_args(false);
  cmd.add_option("--control", control, "What the ControlNets see: canny (each frame's edges), frame (the frame itself: tile), or an image file")
      ->capture_default_str();
}

void ControlNetArgs::apply(StreamRunnerOptions& o) const {
  o.adapters.controlnets.clear();
  o.controlnet_scales.clear();
  for (const auto& arg : controlnets) {
    const auto spec = parse_lora_spec(arg, "--controlnet");
    std::error_code ec;
    const bool file = std::filesystem::is_regular_file(spec.file, ec);
    if (!file && !std::filesystem::is_directory(spec.file, ec))
      throw Error("--controlnet " + printable(arg) + ": '" + printable(spec.file.string()) + "' does not exist");
    if (!file && folder_class_name(spec.file) != "ControlNetModel")
      throw Error("--controlnet " + printable(arg) + ": " + spec.file.string() + " is " + describe_model_folder(spec.file) +
                  ", not a ControlNet folder (config.json with _class_name ControlNetModel)");
    o.adapters.controlnets.push_back(spec.file);
    o.controlnet_scales.push_back(spec.scale);
  }
  o.control = parse_control_source(control, o.width, o.height);
}

ComputeOptions ComputeArgs::resolve() const {
  if (dtype == "auto") throw Error("--dtype auto is for the commands that stream a --model; name fp32, bf16 or fp16 here");
  ComputeOptions o;
  o.device = parse_device(device);
  o.dtype = parse_dtype(dtype);
  o.threads = threads;
  return apply_compute_options(o);
}

ComputeOptions ComputeArgs::resolve_for_model(const std::string& model) const {
  if (dtype != "auto") return resolve();
  auto args = *this;
  const auto parameters = stored_parameter_count(model);
  args.dtype = dtype_label(fastest_dtype(parse_device(device), parameters));
  spdlog::info("--dtype auto: {} for {} ({:.1f} M weights) on {}", args.dtype, model, static_cast<double>(parameters) / 1e6,
               parse_device(device).is_cuda() ? "CUDA" : "this CPU");
  auto o = args.resolve();
  o.auto_dtype = true;
  return o;
}

void apply_model_sampler_settings(CLI::App& cmd, const std::string& model, StreamDiTOptions& o) {
  auto from_model = o;
  if (!read_sampler_settings(model, from_model)) return;
  if (cmd.count("--chunk-size") == 0) o.chunk_frames = from_model.chunk_frames;
  if (cmd.count("--micro-steps") == 0) o.micro_steps = from_model.micro_steps;
  if (cmd.count("--guidance") == 0) o.guidance = from_model.guidance;
  if (cmd.count("--guidance-interval") == 0) o.guidance_interval = from_model.guidance_interval;
  if (cmd.count("--guidance-keep-mean") == 0) o.guidance_form.keep_mean = from_model.guidance_form.keep_mean;
  if (cmd.count("--guidance-rescale") == 0) o.guidance_form.rescale = from_model.guidance_form.rescale;
  if (cmd.get_option_no_throw("--init-steps") == nullptr || cmd.count("--init-steps") == 0) o.init_steps = from_model.init_steps;
  if (cmd.get_option_no_throw("--init-guidance") == nullptr || cmd.count("--init-guidance") == 0) o.init_guidance = from_model.init_guidance;
  if (cmd.get_option_no_throw("--change-guidance") == nullptr || cmd.count("--change-guidance") == 0) o.change_guidance = from_model.change_guidance;
  if (cmd.get_option_no_throw("--anchor-guidance") == nullptr || cmd.count("--anchor-guidance") == 0) o.anchor_guidance = from_model.anchor_guidance;
  if (cmd.get_option_no_throw("--colour-hold") == nullptr || cmd.count("--colour-hold") == 0) o.colour_hold = from_model.colour_hold;
  if (cmd.get_option_no_throw("--colour-hold-frames") == nullptr || cmd.count("--colour-hold-frames") == 0)
    o.colour_hold_frames = from_model.colour_hold_frames;
  if (cmd.get_option_no_throw("--reference-frames") != nullptr && cmd.count("--reference-frames") == 0)
    o.reference_frames = from_model.reference_frames;
  spdlog::info("sampler: c={} s={} guidance {}{}{} (flags given, else the model's sampler.json)", o.chunk_frames, o.micro_steps,
               describe_guidance(o), o.init_steps > 0 ? fmt::format(", {} start steps", o.init_steps) : "",
               describe_colour_hold(o));
}

void add_guidance_shape_options(CLI::App& cmd, StreamDiTOptions& o) {
  cmd.add_option("--guidance-interval", o.guidance_interval,
                 "LOW HIGH: apply CFG only to frames at flow-time levels in [LOW, HIGH] (0 noise, 1 clean; default: the model's sampler.json, else 0 1)")
      ->check(CLI::Range(0.0, 1.0));  // two values: CLI11 reads the std::array as a pair
  cmd.add_flag("--guidance-keep-mean{true}", o.guidance_form.keep_mean,
               "CFG leaves each frame's mean colour to the conditional pass, so a guided stream does not brighten "
               "(=false turns it off; default: the model's sampler.json, else off)");
  cmd.add_option("--guidance-rescale", o.guidance_form.rescale,
                 "0..1: rescale the guided velocity's per-frame spread to the conditional one's, by this share (default: sampler.json, else 0)")
      ->check(CLI::Range(0.0, 1.0));
}

}  // namespace streamgen::cli
