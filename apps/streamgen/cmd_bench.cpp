// streamgen bench <name>: every benchmark of the project, as a table or JSON lines.
#include <iostream>

#include "commands.h"
#include "streamgen/bench.h"
#include "streamgen/progress.h"

namespace streamgen::cli {
namespace {

struct MatmulArgs {
  ComputeArgs compute;
  std::vector<std::int64_t> sizes{512, 1024, 2048};
  std::vector<std::string> dtypes{"fp32", "bf16"};
  double seconds = 1.0;
  bool json = false;
};

struct ModelArgs {
  ComputeArgs compute;
  std::string preset;
  std::vector<std::int64_t> batches{1};
  std::vector<std::int64_t> sizes;
  std::vector<std::string> dtypes{"bf16"};
  int runs = 5;
  bool json = false;
  bool profile = false;
  bool controlnet = false;
  bool both_layouts = false;
};

using ModelBench = std::vector<BenchRow> (*)(const ModelBenchOptions&);

void add_model_bench(CLI::App* parent, const std::string& name, const std::string& description, const std::string& sizes_help,
                     ModelBench bench, bool has_preset) {
  auto args = std::make_shared<ModelArgs>();
  auto* cmd = parent->add_subcommand(name, description);
  args->compute.add_to(*cmd, /*with_dtype=*/false);
  if (has_preset) cmd->add_option("--preset", args->preset, "sd15, sd21 (SD 2.1 / SD-Turbo, the default) or sdxl (unet only)");
  cmd->add_option("--batch", args->batches, "Batch sizes")->delimiter(',')->capture_default_str()->check(CLI::Range(1, 64));
  if (!sizes_help.empty()) cmd->add_option("--sizes", args->sizes, sizes_help)->delimiter(',')->check(CLI::Range(8, 4096));
  cmd->add_option("--dtypes", args->dtypes, "fp32, bf16, fp16")->delimiter(',')->capture_default_str();
  cmd->add_option("--runs", args->runs, "Timed runs (median reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", args->json, "One JSON object per configuration per line");
  cmd->add_flag("--profile", args->profile, "Also print time per ATen op of one call (stderr)");
  if (name == "unet") {
    cmd->add_flag("--controlnet", args->controlnet, "Also time a ControlNet (random weights) run with the UNet, and the ratio");
    cmd->add_flag("--both-layouts", args->both_layouts, "Also time the same weights in the other memory layout (channels-last / contiguous)");
  }
  cmd->callback([args, bench] {
    const auto compute = args->compute.resolve();
    ModelBenchOptions o;
    o.preset = args->preset;
    o.batches = args->batches;
    o.sizes = args->sizes;
    o.dtypes.clear();
    for (const auto& d : args->dtypes) o.dtypes.push_back(parse_dtype(d));
    o.device = compute.device;
    o.runs = args->runs;
    o.profile = args->profile;
    o.controlnet = args->controlnet;
    o.both_layouts = args->both_layouts;
    print_bench_rows(std::cout, bench(o), args->json);
  });
}

struct SafetensorsArgs {
  SafetensorsBenchOptions options;
  std::string dir = std::filesystem::temp_directory_path().string();
  bool json = false;
};

}  // namespace

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmarks: print medians (and p10/p90) of repeated runs");
  cmd->require_subcommand(1);

  auto mm = std::make_shared<MatmulArgs>();
  auto* mm_cmd = cmd->add_subcommand("matmul", "Square matmul GFLOP/s per dtype (the probe `info` runs)");
  mm->compute.add_to(*mm_cmd, /*with_dtype=*/false);
  mm_cmd->add_option("--sizes", mm->sizes, "Matrix sizes n")->delimiter(',')->capture_default_str()->check(CLI::Range(1, 32768));
  mm_cmd->add_option("--dtypes", mm->dtypes, "Data types (fp32, bf16, fp16)")->delimiter(',')->capture_default_str();
  mm_cmd->add_option("--seconds", mm->seconds, "Minimum seconds per configuration")->capture_default_str()->check(CLI::PositiveNumber);
  mm_cmd->add_flag("--json", mm->json, "One JSON object per configuration per line");
  mm_cmd->callback([mm] {
    const auto compute = mm->compute.resolve();
    MatmulBenchOptions o;
    o.sizes = mm->sizes;
    o.dtypes.clear();
    for (const auto& d : mm->dtypes) o.dtypes.push_back(parse_dtype(d));
    o.device = compute.device;
    o.seconds = mm->seconds;
    print_bench_rows(std::cout, bench_matmul(o), mm->json);
  });

  auto st = std::make_shared<SafetensorsArgs>();
  auto* st_cmd = cmd->add_subcommand("safetensors", "Load a generated file: resident bytes vs mmap zero-copy vs read(2)");
  st_cmd->add_option("--size-mb", st->options.size_mb, "File size in MiB")->capture_default_str()->check(CLI::Range(1, 65536));
  st_cmd->add_option("--tensors", st->options.tensors, "Number of tensors in the file")->capture_default_str()->check(CLI::Range(1, 100000));
  st_cmd->add_option("--runs", st->options.runs, "Timed runs per mode")->capture_default_str()->check(CLI::Range(1, 1000));
  st_cmd->add_option("--dir", st->dir, "Folder for the generated file")->capture_default_str()->check(CLI::ExistingDirectory);
  st_cmd->add_flag("--keep", st->options.keep_file, "Keep the generated file");
  st_cmd->add_flag("--json", st->json, "One JSON object per configuration per line");
  st_cmd->callback([st] {
    st->options.dir = st->dir;
    print_bench_rows(std::cout, bench_safetensors(st->options), st->json);
  });

  struct LoraArgs {
    LoraBenchOptions options;
    std::string dir = std::filesystem::temp_directory_path().string();
    ComputeArgs compute;
    bool json = false;
  };
  auto lora = std::make_shared<LoraArgs>();
  auto* lora_cmd = cmd->add_subcommand("lora", "Fusing a LoRA into a full-size UNet at load and changing its scale live, against loading the UNet");
  lora_cmd->add_option("--preset", lora->options.preset, "UNet: sd15 (LCM-LoRA's base) or sd21")->capture_default_str();
  lora_cmd->add_option("--rank", lora->options.rank, "LoRA rank")->capture_default_str()->check(CLI::Range(1, 1024));
  lora_cmd->add_option("--runs", lora->options.runs, "Timed runs")->capture_default_str()->check(CLI::Range(1, 100));
  lora_cmd->add_option("--dir", lora->dir, "Folder for the generated model and LoRA (about 2 GB)")->capture_default_str()->check(CLI::ExistingDirectory);
  lora_cmd->add_flag("--json", lora->json, "One JSON object per row per line");
  lora->compute.add_to(*lora_cmd);
  lora_cmd->callback([lora] {
    const auto c = lora->compute.resolve();
    lora->options.dtype = c.dtype;
    lora->options.device = c.device;
    lora->options.dir = lora->dir;
    print_bench_rows(std::cout, bench_lora(lora->options), lora->json);
  });

  auto media = std::make_shared<std::pair<MediaBenchOptions, bool>>();
  auto* media_cmd = cmd->add_subcommand("media", "Decode -> fit -> encode throughput with no model (video files, JPEG frames)");
  media_cmd->add_option("--frames", media->first.frames, "Frames in the generated clip")->capture_default_str()->check(CLI::Range(1, 100000));
  media_cmd->add_option("--sizes", media->first.sizes, "Model frame sizes")->capture_default_str();
  media_cmd->add_option("--runs", media->first.runs, "Timed passes (median reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  media_cmd->add_flag("--json", media->second, "One JSON object per configuration per line");
  media_cmd->callback([media] { print_bench_rows(std::cout, bench_media(media->first), media->second); });

  struct ServeArgs {
    ServeBenchOptions options;
    std::string model, taesd;
    ComputeArgs compute;
    bool json = false;
  };
  auto serve = std::make_shared<ServeArgs>();
  auto* serve_cmd = cmd->add_subcommand("serve", "Server overhead: FPS and latency through the WebSocket vs the same stream in-process");
  serve_cmd->add_option("--model", serve->model, "Diffusers pipeline folder")->required()->check(CLI::ExistingDirectory);
  serve_cmd->add_option("--taesd", serve->taesd, "TAESD folder")->required()->check(CLI::ExistingPath);
  serve_cmd->add_option("--size", serve->options.size, "Frame size (square, multiple of 8)")->capture_default_str()->check(CLI::Range(8, 2048));
  serve_cmd->add_option("--frames", serve->options.frames, "Timed frames per path")->capture_default_str()->check(CLI::Range(1, 100000));
  serve_cmd->add_flag("--json", serve->json, "One JSON object per configuration per line");
  serve->compute.add_to(*serve_cmd);
  serve_cmd->callback([serve] {
    serve->options.model = serve->model;
    serve->options.taesd = serve->taesd;
    serve->options.compute = serve->compute.resolve();
    print_bench_rows(std::cout, bench_serve(serve->options), serve->json);
  });

  using DiTBench = std::vector<BenchRow> (*)(const DiTBenchOptions&);
  auto add_dit_bench = [cmd](const std::string& name, const std::string& description, DiTBench bench, bool reduced) {
    struct DiTArgs {
      DiTBenchOptions options;
      std::string model, student;
      std::vector<std::string> dtypes{"fp32", "bf16"};
      bool json = false;
      ComputeArgs compute;
    };
    auto a = std::make_shared<DiTArgs>();
    auto* sub = cmd->add_subcommand(name, description);
    if (!reduced) sub->add_option("--model", a->model, "StreamDiT folder (default: random weights of the tiny configuration)")->check(CLI::ExistingDirectory);
    if (reduced) {
      sub->add_option("--depth", a->options.depth, "Blocks to run (time scaled to 28)")->capture_default_str()->check(CLI::Range(1, 28));
      sub->add_option("--frames", a->options.frames, "Latent frames to run (time scaled to 16)")->capture_default_str()->check(CLI::Range(1, 16));
    }
    if (name == "dit-stream") sub->add_option("--student", a->student, "A distilled student for the student rows")->check(CLI::ExistingDirectory);
    if (name == "dit-train") sub->add_option("--batch", a->options.batch, "Clips per step")->capture_default_str()->check(CLI::Range(1, 256));
    sub->add_option("--dtypes", a->dtypes, "fp32, bf16, fp16")->delimiter(',')->capture_default_str();
    sub->add_option("--runs", a->options.runs, "Timed runs (median reported)")->capture_default_str()->check(CLI::Range(1, 1000));
    sub->add_flag("--json", a->json, "One JSON object per configuration per line");
    a->compute.add_to(*sub, /*with_dtype=*/false);
    sub->callback([a, bench] {
      a->options.device = a->compute.resolve().device;
      a->options.model = a->model;
      a->options.student = a->student;
      a->options.dtypes.clear();
      for (const auto& d : a->dtypes) a->options.dtypes.push_back(parse_dtype(d));
      print_bench_rows(std::cout, bench(a->options), a->json);
    });
  };
  add_dit_bench("dit-stream", "StreamDiT streaming: teacher (CFG / none) vs student settings, FPS, NFE per frame, first frame", &bench_dit_stream, false);
  add_dit_bench("dit-train", "StreamDiT training step (samples/s, GFLOP/s) and forward per dtype", &bench_dit_train, false);
  add_dit_bench("dit-4b", "The paper's 4B StreamDiT at a reduced depth/frames, scaled to seconds per NFE", &bench_dit_4b, true);

  add_model_bench(cmd, "unet", "UNet2DConditionModel at real size, random weights (SD-Turbo = sd21)",
                  "Latent sizes (default 32,64)", &bench_unet, true);
  add_model_bench(cmd, "taesd", "TAESD encode and decode, random weights", "Image sizes (default 256,512)", &bench_taesd, false);
  add_model_bench(cmd, "stream", "Stream Batch vs sequential, RCFG self vs full, SSF skip rate, end-to-end img2img FPS",
                  "Image sizes (default 256,512)", &bench_stream, true);
  add_model_bench(cmd, "text-encoder", "CLIP text encoder on 77 tokens, random weights", "", &bench_text_encoder, true);

  cmd->add_subcommand("list", "List the benchmarks")->callback([cmd] {
    for (const auto* sub : cmd->get_subcommands([](const CLI::App* a) { return a->get_name() != "list"; }))
      std::cout << sub->get_name() << "  " << sub->get_description() << "\n";
  });
}

}  // namespace streamgen::cli
