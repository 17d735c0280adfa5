#pragma once
// Benchmarks shared by `streamgen bench <name>` and the Google Benchmark target. Each returns
// one row per configuration: the configuration fields, then median_ms, p10_ms, p90_ms, runs and
// the figures that fit (gflops, gb_per_s, fps, ratio_to_peak).
#include <torch/types.h>

#include <filesystem>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <vector>

#include "streamgen/device.h"
#include "streamgen/timing.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {

using BenchRow = nlohmann::ordered_json;

// One row per line as JSON, or an aligned table.
void print_bench_rows(std::ostream& out, const std::vector<BenchRow>& rows, bool as_json);
// Adds median_ms, p10_ms, p90_ms and runs to a row.
void add_timing(BenchRow& row, const Timing& t);

struct MatmulBenchOptions {
  std::vector<std::int64_t> sizes{1024};
  std::vector<torch::ScalarType> dtypes{torch::kFloat32, torch::kBFloat16};
  torch::Device device{torch::kCPU};
  double seconds = 0.5;  // per configuration
};

// n x n @ n x n; rows carry gflops = 2 n^3 / median.
std::vector<BenchRow> bench_matmul(const MatmulBenchOptions& options);
// The timing of one configuration (what `info` uses as its probe).
Timing time_matmul(std::int64_t n, torch::ScalarType dtype, torch::Device device, double seconds);
inline double matmul_gflops(std::int64_t n, double ms) { return 2.0 * static_cast<double>(n) * n * n / (ms * 1e6); }

// The conv probe: 3x3, 320 -> 320 channels on a 64x64 map, channels-last (the UNet's commonest
// conv at SD-Turbo's 64x64 latent); its rate is the "peak" model benchmarks compare against.
inline constexpr std::int64_t kConvProbeChannels = 320;
inline constexpr std::int64_t kConvProbeSize = 64;
Timing time_conv(torch::ScalarType dtype, torch::Device device, double seconds);
inline double conv_probe_gflops(double ms) {
  return 2.0 * kConvProbeChannels * kConvProbeChannels * 9.0 * kConvProbeSize * kConvProbeSize / (ms * 1e6);
}

struct ModelBenchOptions {
  std::string preset;                  // "sd15" or "sd21" (SD2.1 / SD-Turbo)
  std::vector<std::int64_t> batches{1};
  std::vector<std::int64_t> sizes;     // latent sizes (unet) or image sizes (taesd); empty: the model's defaults
  std::vector<torch::ScalarType> dtypes{torch::kBFloat16};
  torch::Device device{torch::kCPU};
  int runs = 5;
  bool profile = false;  // also print where the time of one call goes, per ATen op, to stderr
  bool controlnet = false;  // bench unet: also a ControlNet of the UNet's encoder run with it (and the ratio)
  bool both_layouts = false;  // bench unet: also the same weights in the other memory layout (bench taesd always shows both)
};

// Random weights at the real sizes (no download); rows carry gflop (per call, counted by
// FlopCounter), gflops achieved, and ratio_to_peak against the conv probe measured in the same run.
std::vector<BenchRow> bench_unet(const ModelBenchOptions& options);
std::vector<BenchRow> bench_taesd(const ModelBenchOptions& options);
std::vector<BenchRow> bench_text_encoder(const ModelBenchOptions& options);

// UNet configs of the real models for benchmarks: "sd15" or "sd21" (SD 2.1 / SD-Turbo, the
// default when `preset` is empty).
nlohmann::json unet_preset(const std::string& preset);
std::string preset_or_default(const std::string& preset);
// Random prompt embeddings [batch, tokens, D] for a UNet of `config`, with SDXL's pooled embedding and a 1024 px
// image's time_ids when it has the text_time conditioning.
UNetConditioning random_conditioning(const UNet2DConditionConfig& config, std::int64_t batch, std::int64_t tokens, const torch::TensorOptions& options);

// The stream: Stream Batch vs the sequential loop (4 steps), RCFG self vs full (4 steps), the
// similarity filter on a static clip, and end-to-end img2img (TAESD encode + UNet + TAESD decode)
// at 1 and 2 steps. Sizes are image sizes (default 256,512).
std::vector<BenchRow> bench_stream(const ModelBenchOptions& options);

struct SafetensorsBenchOptions {
  std::uint64_t size_mb = 1024;
  std::int64_t tensors = 64;
  std::filesystem::path dir = std::filesystem::temp_directory_path();
  int runs = 5;
  bool keep_file = false;
};

// Loads a generated file of `size_mb` MB and reads every byte, three ways: from memory already
// resident (the ceiling), through the mmap zero-copy path, and through read(2) into a buffer.
std::vector<BenchRow> bench_safetensors(const SafetensorsBenchOptions& options);

struct LoraBenchOptions {
  std::string preset;          // the UNet: "sd15" (default; LCM-LoRA's base) or "sd21"
  std::int64_t rank = 128;
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device{torch::kCPU};
  std::filesystem::path dir = std::filesystem::temp_directory_path();
  int runs = 3;
};
// A full-size UNet (random weights, saved as a float16 diffusers folder) and a kohya LoRA of `rank` on
// every layer LCM-LoRA adapts: loading the base from disk, fusing at load (one-shot and rescalable, with
// the memory kept), and a live scale change; gflop/gflops of the fusion's matrix products, and the
// machine's fp32 matmul rate beside them.
std::vector<BenchRow> bench_lora(const LoraBenchOptions& options);

struct MediaBenchOptions {
  std::int64_t frames = 120;                  // length of the generated 640x480 H.264 clip
  std::vector<std::int64_t> sizes{256, 512};  // model frame sizes to fit to
  std::filesystem::path dir = std::filesystem::temp_directory_path();
  int runs = 3;
};

// Decode, decode + fit, decode + fit + H.264 encode of a generated clip, and JPEG encode + decode
// (the server's per-frame path): frames per second with no model in the loop.
std::vector<BenchRow> bench_media(const MediaBenchOptions& options);

struct ServeBenchOptions {
  std::filesystem::path model, taesd;  // a pipeline folder and a TAESD folder (real or tests/data's tiny ones)
  std::int64_t size = 256;
  int frames = 30;
  ComputeOptions compute;
};

// One stream driven in-process (StreamRunner push/pop) and through `streamgen serve` over loopback
// (JPEG frames on a WebSocket), one frame in flight: FPS lost and latency added by the server.
std::vector<BenchRow> bench_serve(const ServeBenchOptions& options);

}  // namespace streamgen

namespace streamgen {

struct DiTBenchOptions {
  std::filesystem::path model;  // a StreamDiT folder; empty: random weights of the tiny configuration
  std::filesystem::path student;  // dit-stream: a distilled student for the student rows (empty: the model)
  std::vector<torch::ScalarType> dtypes{torch::kFloat32, torch::kBFloat16};
  torch::Device device{torch::kCPU};
  int runs = 5;
  std::int64_t batch = 8;     // dit-train
  std::int64_t depth = 1;     // dit-4b: blocks actually run (the time is scaled to the full depth)
  std::int64_t frames = 2;    // dit-4b: latent frames actually run (the paper: 16)
};

// Streaming with the teacher (c = 2, s = 4, CFG 3 and without CFG) and the student setting
// (c = 2, s = 1, no CFG; the distilled `student` when given): output FPS, ms per step, NFE per
// chunk and per frame, time to first frame.
std::vector<BenchRow> bench_dit_stream(const DiTBenchOptions& options);
// One optimiser step (forward, backward, AdamW) on a batch of procedural clips: samples/s and
// achieved GFLOP/s (forward FLOPs counted, backward taken as twice the forward); plus forward-only
// rows per dtype.
std::vector<BenchRow> bench_dit_train(const DiTBenchOptions& options);
// The paper's 4B configuration (width 3072, 28 blocks, 24 heads, patch 1x2x2 on a 16x64x64x16
// latent, window [8, 16, 16]) with random weights, run at a reduced depth / frame count; the
// measured time is scaled linearly to seconds per NFE of the full model (attention inside a window
// is linear in the number of windows, so the scaling holds while frames stay a multiple of F_w).
std::vector<BenchRow> bench_dit_4b(const DiTBenchOptions& options);

}  // namespace streamgen
