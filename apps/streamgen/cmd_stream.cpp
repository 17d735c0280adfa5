// streamgen img2img / txt2img-stream: the StreamDiffusion stream on image folders (video files and
// cameras arrive with the media layer).
#include <fmt/core.h>

#include <iostream>

#include "commands.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/progress.h"
#include "streamgen/stream_runner.h"

namespace streamgen::cli {
namespace {

using namespace std::chrono_literals;
constexpr auto kOutputTimeout = 600s;  // one output per input; generous for big models on CPU

struct StreamArgs {
  std::string model, taesd, output, prompt, negative, cfg = "self", fit = "crop";
  std::vector<std::int64_t> t_index{32, 45};
  double guidance = 1.2, delta = 1.0;
  std::uint64_t seed = 2;
  std::int64_t width = 512, height = 512;
  ComputeArgs compute;
};

void add_stream_options(CLI::App* cmd, StreamArgs& a) {
  cmd->add_option("--model", a.model, "Diffusers pipeline folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", a.taesd, "TAESD folder (the stream's encoder and decoder)")->required()->check(CLI::ExistingPath);
  cmd->add_option("--output,-o", a.output, "Output folder for frame_NNNNN.png")->required();
  cmd->add_option("--prompt,-p", a.prompt, "The prompt")->required();
  cmd->add_option("--negative-prompt", a.negative, "Negative prompt (cfg full / initialize)");
  cmd->add_option("--t-index", a.t_index, "Slots: indices into the 50-step LCM schedule, ascending")->delimiter(',')->capture_default_str();
  cmd->add_option("--guidance", a.guidance, "Guidance scale gamma")->capture_default_str();
  cmd->add_option("--delta", a.delta, "RCFG residual scale delta")->capture_default_str();
  cmd->add_option("--seed", a.seed, "Noise seed")->capture_default_str();
  cmd->add_option("-W,--width", a.width, "Frame width (multiple of 8)")->capture_default_str();
  cmd->add_option("-H,--height", a.height, "Frame height (multiple of 8)")->capture_default_str();
  a.compute.add_to(*cmd);
}

StreamRunnerOptions runner_options(const StreamArgs& a) {
  StreamRunnerOptions o;
  o.model = a.model;
  o.taesd = a.taesd;
  o.prompt = a.prompt;
  o.negative_prompt = a.negative;
  o.seed = a.seed;
  o.width = a.width;
  o.height = a.height;
  o.compute = a.compute.resolve();
  o.stream.t_index_list = a.t_index;
  o.stream.cfg = parse_cfg_type(a.cfg);
  o.stream.guidance_scale = a.guidance;
  o.stream.delta = a.delta;
  o.input_capacity = 1;
  o.output_capacity = 1;
  return o;
}

void print_stats(const StreamStats& s) {
  std::cout << fmt::format("{} frames in, {} out, {} skipped by the similarity filter, {} inputs dropped; {:.2f} FPS output\n", s.frames_in,
                           s.frames_out, s.frames_skipped, s.inputs_dropped, s.output_fps);
  std::cout << fmt::format("{:<14} {:>10} {:>10} {:>7}\n", "stage", "median ms", "p90 ms", "count");
  for (const auto& [stage, t] : s.stages) std::cout << fmt::format("{:<14} {:>10.1f} {:>10.1f} {:>7}\n", stage, t.median_ms, t.p90_ms, t.count);
  std::cout.flush();
}

std::map<std::string, std::string> png_text(const StreamArgs& a, const std::string& mode) {
  std::string t;
  for (auto i : a.t_index) t += (t.empty() ? "" : ",") + std::to_string(i);
  return {{"prompt", a.prompt}, {"mode", mode}, {"t_index", t}, {"cfg", a.cfg}, {"guidance", fmt::format("{}", a.guidance)}, {"seed", std::to_string(a.seed)},
          {"software", "streamgen"}};
}

}  // namespace

void register_stream_commands(CLI::App& app) {
  auto i2i = std::make_shared<StreamArgs>();
  auto input = std::make_shared<std::string>();
  auto ssf = std::make_shared<double>(1.0);
  auto ssf_max = std::make_shared<int>(10);
  auto* cmd = app.add_subcommand("img2img", "Run the StreamDiffusion stream over a folder of frames");
  add_stream_options(cmd, *i2i);
  cmd->add_option("--input,-i", *input, "Folder of PNG/JPEG frames (sorted by name), or one image")->required();
  cmd->add_option("--cfg", i2i->cfg, "none | self | initialize | full")->capture_default_str();
  cmd->add_option("--fit", i2i->fit, "crop | pad | stretch to the frame size")->capture_default_str();
  cmd->add_option("--ssf", *ssf, "Similarity filter threshold (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--ssf-max-skip", *ssf_max, "At most this many skips in a row")->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->callback([i2i, input, ssf, ssf_max] {
    const auto files = list_images(*input);
    const auto fit = parse_fit(i2i->fit);
    auto o = runner_options(*i2i);
    if (*ssf < 1.0) o.ssf = SimilarityFilterOptions{*ssf, *ssf_max, false};
    std::filesystem::create_directories(i2i->output);
    StreamRunner runner(o);
    ProgressBar bar("img2img", static_cast<std::int64_t>(files.size()), "frame");
    const auto text = png_text(*i2i, "img2img");
    for (std::size_t i = 0; i < files.size(); ++i) {
      // Offline over files: one frame in, its output out, so nothing is dropped.
      runner.push(fit_image(read_image(files[i]), o.width, o.height, fit)[0]);
      const auto frame = runner.pop(kOutputTimeout);
      if (!frame) throw streamgen::Error("the stream stopped before frame " + std::to_string(i) + " (see the log)");
      write_png(std::filesystem::path(i2i->output) / fmt::format("frame_{:05d}.png", i), frame->image_u8, text);
      bar.advance();
    }
    bar.finish();
    runner.stop();
    print_stats(runner.stats());
  });

  auto t2i = std::make_shared<StreamArgs>();
  auto frames = std::make_shared<std::int64_t>(8);
  t2i->t_index = {0, 16, 32, 45};
  t2i->cfg = "none";
  auto* tcmd = app.add_subcommand("txt2img-stream", "Generate a stream of images from a prompt (Stream Batch txt2img)");
  add_stream_options(tcmd, *t2i);
  tcmd->add_option("--frames,-n", *frames, "How many images")->capture_default_str()->check(CLI::Range(1, 100000));
  tcmd->add_option("--cfg", t2i->cfg, "none | full")->capture_default_str();
  tcmd->callback([t2i, frames] {
    auto o = runner_options(*t2i);
    o.stream.txt2img = true;
    o.stream.warmup = Warmup::Suppress;  // no pictures from a half-filled pipeline
    o.output_capacity = 2;
    std::filesystem::create_directories(t2i->output);
    StreamRunner runner(o);
    ProgressBar bar("txt2img", *frames, "frame");
    const auto text = png_text(*t2i, "txt2img-stream");
    for (std::int64_t i = 0; i < *frames; ++i) {
      const auto frame = runner.pop(kOutputTimeout);
      if (!frame) throw streamgen::Error("the stream stopped before image " + std::to_string(i) + " (see the log)");
      write_png(std::filesystem::path(t2i->output) / fmt::format("frame_{:05d}.png", i), frame->image_u8, text);
      bar.advance();
    }
    bar.finish();
    runner.stop();
    print_stats(runner.stats());
  });
}

}  // namespace streamgen::cli
