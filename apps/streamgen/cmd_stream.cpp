// streamgen img2img / txt2img-stream: the StreamDiffusion stream from a video file, camera, image
// folder or pipe to a video file, PNG folder or pipe.
#include <fmt/core.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "commands.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/media_pipeline.h"
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
  std::int64_t width = 512, height = 512, frame_buffer = 1;
  std::vector<std::string> loras;
  ControlNetArgs controlnet;
  ComputeArgs compute;
};

void add_stream_options(CLI::App* cmd, StreamArgs& a) {
  cmd->add_option("--model", a.model, "Diffusers pipeline folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", a.taesd, "TAESD folder (the stream's encoder and decoder)")->required()->check(CLI::ExistingPath);
  cmd->add_option("--output,-o", a.output, "Video file (.mp4 .mkv .webm ...), folder for frame_NNNNN.png, or - (raw RGB24 on stdout)")->required();
  cmd->add_option("--prompt,-p", a.prompt, "The prompt")->required();
  cmd->add_option("--negative-prompt", a.negative, "Negative prompt (cfg full / initialize)");
  cmd->add_option("--t-index", a.t_index, "Slots: indices into the 50-step LCM schedule, ascending")->delimiter(',')->capture_default_str();
  cmd->add_option("--guidance", a.guidance, "Guidance scale gamma")->capture_default_str();
  cmd->add_option("--delta", a.delta, "RCFG residual scale delta")->capture_default_str();
  cmd->add_option("--seed", a.seed, "Noise seed")->capture_default_str();
  cmd->add_option("-W,--width", a.width, "Frame width (multiple of 8)")->capture_default_str();
  cmd->add_option("-H,--height", a.height, "Frame height (multiple of 8)")->capture_default_str();
  cmd->add_option("--frame-buffer-size", a.frame_buffer, "Frames per UNet call (F): more throughput, more latency")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  add_lora_option(*cmd, a.loras);
  a.controlnet.add_to(*cmd);
  a.compute.add_to(*cmd, /*with_dtype=*/true, /*with_auto=*/true);
}

StreamRunnerOptions runner_options(const StreamArgs& a) {
  StreamRunnerOptions o;
  o.model = a.model;
  o.taesd = a.taesd;
  o.prompt = a.prompt;
  o.negative_prompt = a.negative;
  o.adapters.loras = lora_specs(a.loras);
  o.adapters.lora_rescale = LoraRescale::Never;  // a file run keeps its scales
  o.seed = a.seed;
  o.width = a.width;
  o.height = a.height;
  o.compute = a.compute.resolve_for_model(a.model);
  o.stream.t_index_list = a.t_index;
  o.stream.cfg = parse_cfg_type(a.cfg);
  o.stream.guidance_scale = a.guidance;
  o.stream.delta = a.delta;
  o.stream.frame_buffer_size = a.frame_buffer;
  a.controlnet.apply(o);
  o.input_capacity = static_cast<std::size_t>(a.frame_buffer);  // one call's frames
  o.output_capacity = static_cast<std::size_t>(a.frame_buffer);
  return o;
}

// Status lines go to stderr so that '-o -' can carry frames on stdout.
void print_stats(const StreamStats& s) {
  std::cerr << fmt::format("{} frames in, {} out, {} skipped by the similarity filter, {} inputs dropped; {:.2f} FPS output\n", s.frames_in,
                           s.frames_out, s.frames_skipped, s.inputs_dropped, s.output_fps);
  std::cerr << fmt::format("{:<14} {:>10} {:>10} {:>7}\n", "stage", "median ms", "p90 ms", "count");
  for (const auto& [stage, t] : s.stages) std::cerr << fmt::format("{:<14} {:>10.1f} {:>10.1f} {:>7}\n", stage, t.median_ms, t.p90_ms, t.count);
  std::cerr.flush();
}

std::map<std::string, std::string> png_text(const StreamArgs& a, const std::string& mode) {
  std::string t;
  for (auto i : a.t_index) t += (t.empty() ? "" : ",") + std::to_string(i);
  std::map<std::string, std::string> text{{"prompt", a.prompt}, {"mode", mode}, {"t_index", t}, {"cfg", a.cfg},
                                          {"guidance", fmt::format("{}", a.guidance)}, {"seed", std::to_string(a.seed)}, {"software", "streamgen"}};
  if (!a.loras.empty()) text["loras"] = describe_lora_specs(lora_specs(a.loras));
  return text;
}

}  // namespace

void register_stream_commands(CLI::App& app) {
  auto i2i = std::make_shared<StreamArgs>();
  struct MediaArgs {
    std::string input, input_size;
    double ssf = 1.0, fps = 0;
    int ssf_max = 10;
    bool realtime = false;
    std::int64_t max_frames = -1;
  };
  auto m = std::make_shared<MediaArgs>();
  auto* cmd = app.add_subcommand("img2img", "Run the StreamDiffusion stream on a video, camera, image folder or pipe");
  add_stream_options(cmd, *i2i);
  cmd->add_option("--input,-i", m->input,
                  "Video file, camera:/dev/videoN, image file, folder or glob of images, or - (raw RGB24 on stdin, with --input-size)")
      ->required();
  cmd->add_option("--input-size", m->input_size, "WxH of raw frames read from stdin");
  cmd->add_option("--cfg", i2i->cfg, "none | self | initialize | full")->capture_default_str();
  cmd->add_option("--fit", i2i->fit, "crop | pad | stretch to the frame size")->capture_default_str();
  cmd->add_option("--ssf", m->ssf, "Similarity filter threshold (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--ssf-max-skip", m->ssf_max, "At most this many skips in a row")->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->add_flag("--realtime", m->realtime, "Pace a file to its frame rate and drop frames the model cannot keep up with (cameras always are)");
  cmd->add_option("--fps", m->fps, "Frame rate of an output video (default: the input's, else 30)")->check(CLI::Range(0.1, 1000.0));
  cmd->add_option("--max-frames", m->max_frames, "Stop after this many input frames")->check(CLI::Range(1, 100000000));
  cmd->callback([i2i, m] {
    SourceOptions so;
    if (!m->input_size.empty()) std::tie(so.raw_width, so.raw_height) = parse_size(m->input_size);
    so.raw_fps = m->fps;
    auto source = open_source(m->input, so);
    const auto& info = source->info();
    SinkOptions sk;
    sk.fps = m->fps > 0 ? m->fps : info.fps > 0 ? info.fps : 30;
    sk.png_text = png_text(*i2i, "img2img");
    auto sink = open_sink(i2i->output, sk);
    spdlog::info("input {} ({}, {}x{}{}), output {}", info.spec, info.kind, info.width, info.height,
                 info.fps > 0 ? fmt::format(", {:.2f} fps", info.fps) : "", sink->description());

    auto o = runner_options(*i2i);
    if (m->ssf < 1.0) o.ssf = SimilarityFilterOptions{m->ssf, m->ssf_max, false};
    StreamRunner runner(o);

    MediaPipelineOptions po;
    po.width = o.width;
    po.height = o.height;
    po.fit = parse_fit(i2i->fit);
    po.realtime = m->realtime;
    po.max_frames = m->max_frames;
    po.frames_per_call = o.stream.frame_buffer_size;
    po.stop = &interrupt_flag();
    std::int64_t total = info.frame_count;
    if (m->max_frames > 0) total = total < 0 ? m->max_frames : std::min(total, m->max_frames);
    const bool live = info.live || m->realtime;
    std::optional<ProgressBar> bar;  // live runs print FPS and latency instead
    if (!live) bar.emplace("img2img", total, "frame");
    po.on_frame = [&](std::int64_t) { bar->advance(); };
    po.on_status = [&](const StreamStats& s) {
      const auto lat = s.stages.count("latency") ? s.stages.at("latency").median_ms : 0.0;
      std::cerr << fmt::format("\r{} out, {:.2f} FPS, latency {:.0f} ms, {} inputs dropped   ", s.frames_out, s.output_fps, lat, s.inputs_dropped);
      std::cerr.flush();
    };
    const auto r = run_media_pipeline(*source, runner, *sink, po);
    if (bar) bar->finish();
    runner.stop();
    if (r.live) std::cerr << "\n";
    print_stats(runner.stats());
    if (r.sink_dropped > 0) spdlog::warn("{} frames were dropped because {} could not keep up", r.sink_dropped, sink->description());
    if (interrupt_flag()) spdlog::info("interrupted: {} frames written to {}", r.frames_written, sink->description());
  });

  auto t2i = std::make_shared<StreamArgs>();
  auto frames = std::make_shared<std::int64_t>(8);
  auto t2i_fps = std::make_shared<double>(8);
  t2i->t_index = {0, 16, 32, 45};
  t2i->cfg = "none";
  auto* tcmd = app.add_subcommand("txt2img-stream", "Generate a stream of images from a prompt (Stream Batch txt2img)");
  add_stream_options(tcmd, *t2i);
  tcmd->add_option("--frames,-n", *frames, "How many images")->capture_default_str()->check(CLI::Range(1, 100000));
  tcmd->add_option("--cfg", t2i->cfg, "none | full")->capture_default_str();
  tcmd->add_option("--fps", *t2i_fps, "Frame rate of an output video")->capture_default_str()->check(CLI::Range(0.1, 1000.0));
  tcmd->callback([t2i, frames, t2i_fps] {
    auto o = runner_options(*t2i);
    o.stream.txt2img = true;
    o.stream.warmup = Warmup::Suppress;  // no pictures from a half-filled pipeline
    o.output_capacity = 2;
    SinkOptions sk;
    sk.fps = *t2i_fps;
    sk.png_text = png_text(*t2i, "txt2img-stream");
    auto sink = open_sink(t2i->output, sk);
    StreamRunner runner(o);
    ProgressBar bar("txt2img", *frames, "frame");
    const auto& g_interrupted = interrupt_flag();
    for (std::int64_t i = 0; i < *frames && !g_interrupted; ++i) {
      const auto frame = runner.pop(kOutputTimeout);
      if (!frame) throw streamgen::Error("the stream stopped before image " + std::to_string(i) + " (see the log)");
      sink->write(frame->image_u8);
      bar.advance();
    }
    sink->close();
    bar.finish();
    runner.stop();
    print_stats(runner.stats());
  });
}

}  // namespace streamgen::cli
