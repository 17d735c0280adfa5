// StreamDiT benchmarks: streaming (teacher vs student settings), training steps, and the paper's
// 4B configuration at a reduced size.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>

#include "streamgen/bench.h"
#include "streamgen/device.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/flop_counter.h"
#include "streamgen/stream_dit.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

StreamDiTConfig tiny_config() {
  StreamDiTConfig c;  // the defaults are the tiny configuration of the spec
  c.text.vocabulary = ProceduralPalette::vocabulary();
  return c;
}

StreamDiT bench_model(const DiTBenchOptions& o, torch::ScalarType dtype, bool student = false) {
  if (student && !o.student.empty()) return load_stream_dit(o.student, {o.device, dtype});
  if (!o.model.empty()) return load_stream_dit(o.model, {o.device, dtype});
  torch::manual_seed(0);
  StreamDiT m(tiny_config());
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.02);  // non-zero adaLN so every path computes
  prepare_for_inference(*m, o.device, dtype);
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<BenchRow> bench_dit_stream(const DiTBenchOptions& o) {
  const ScopedBlasThreads blas_threads(1);
  struct Setting {
    const char* name;
    std::int64_t c, s;
    double guidance;
  };
  const Setting settings[] = {{"teacher_cfg", 2, 4, 3.0}, {"teacher", 2, 4, 1.0}, {"student", 2, 1, 1.0}};
  std::vector<BenchRow> rows;
  for (auto dtype : o.dtypes) {
    auto teacher = bench_model(o, dtype);
    auto student = o.student.empty() ? teacher : bench_model(o, dtype, true);
    // A latent model's chunks are decoded by its autoencoder: part of every frame's cost.
    auto codec_of = [&](const std::string& folder) {
      return DiTVideoCodec(folder.empty() ? TemporalAutoencoder(nullptr) : load_dit_autoencoder(folder, {o.device, dtype}));
    };
    for (const auto& st : settings) {
      const bool is_student = std::string(st.name) == "student";
      auto& model = is_student ? student : teacher;
      StreamDiTOptions so;
      so.chunk_frames = st.c;
      so.micro_steps = st.s;
      so.guidance = st.guidance;
      if (is_student && !o.student.empty()) {  // a distilled student starts as its folder says (its first frame is a figure here)
        StreamDiTOptions own;
        if (read_sampler_settings(o.student, own)) {
          so.init_steps = own.init_steps;
          so.init_guidance = own.init_guidance;
          so.guidance_form = own.guidance_form;
          so.anchor_guidance = own.anchor_guidance;
          so.colour_hold = own.colour_hold;
          so.colour_hold_frames = own.colour_hold_frames;
        }
      }
      StreamDiTSampler sampler(model, so);
      auto codec = codec_of(is_student && !o.student.empty() ? o.student : o.model);
      const auto frames_per_chunk = st.c * codec.frames_per_latent();
      sampler.set_prompt("red circle moving left and blue square moving up");
      const auto t0 = std::chrono::steady_clock::now();
      codec.decode(sampler.step());  // the start plus the first chunk: what a viewer waits for
      const double ttff = seconds_since(t0);
      const auto before = sampler.nfe();
      double decode_ms = 0;
      const auto t = time_runs(
          [&] {
            const auto chunk = sampler.step();
            const auto d0 = std::chrono::steady_clock::now();
            codec.decode(chunk);
            decode_ms += 1000.0 * seconds_since(d0);
          },
          fixed_runs(o.runs, 0));
      BenchRow row;
      row["name"] = "dit_stream";
      row["setting"] = is_student && !o.student.empty() ? "distilled_student" : st.name;
      row["dtype"] = dtype_label(dtype);
      row["c"] = st.c;
      row["s"] = st.s;
      row["guidance"] = st.guidance;
      row["start_nfe"] = sampler.init_nfe();
      add_timing(row, t);
      row["nfe_per_chunk"] = static_cast<double>(sampler.nfe() - before) / static_cast<double>(o.runs);
      row["nfe_per_frame"] = static_cast<double>(sampler.nfe() - before) / static_cast<double>(o.runs * frames_per_chunk);
      row["decode_ms"] = decode_ms / static_cast<double>(o.runs);
      row["first_frame_s"] = ttff;
      row["fps"] = 1000.0 * static_cast<double>(frames_per_chunk) / t.median_ms;
      rows.push_back(row);
    }
  }
  return rows;
}

std::vector<BenchRow> bench_dit_train(const DiTBenchOptions& o) {
  const ScopedBlasThreads blas_threads(1);
  std::vector<BenchRow> rows;
  const auto config = o.model.empty() ? tiny_config() : load_stream_dit(o.model)->config;
  // The clips a training run of this model draws: a latent model's encoded by its autoencoder (under
  // bf16 autocast, as --bf16-autocast trains), an anchored model's one buffer longer.
  const auto tae = o.model.empty() ? TemporalAutoencoder(nullptr) : load_dit_autoencoder(o.model, {o.device, torch::kFloat32});
  const auto data = make_dit_clip_source(config, tae, {}, /*bf16=*/true);
  FlowMatchingRecipe recipe;
  recipe.mix = ChunkMix::powers_of_two(config.max_frames);
  torch::manual_seed(0);
  StreamDiT model(config);
  model->to(o.device);
  {
    // The trainer's whole batch, made as it makes it: clips, each example's partition, noise and caption.
    std::uint64_t step = 0;
    const auto t = time_runs([&] { seeded_flow_matching_batch(*data, model->tokenizer, recipe, 0, step++, 0, 0, o.batch); }, fixed_runs(o.runs));
    BenchRow row;
    row["name"] = "dit_train_batch";
    row["data"] = data->describe();
    row["batch"] = o.batch;
    add_timing(row, t);
    row["samples_per_s"] = 1000.0 * static_cast<double>(o.batch) / t.median_ms;
    rows.push_back(row);
  }
  const auto batch = seeded_flow_matching_batch(*data, model->tokenizer, recipe, 0, 0, 0, 0, o.batch);
  const auto noisy = batch.noisy.to(o.device), tau = batch.tau.to(o.device), target = batch.target.to(o.device),
             mask = batch.loss_mask.to(o.device);
  const auto anchor = batch.anchor.defined() ? batch.anchor.to(o.device) : batch.anchor;
  const auto keep = batch.anchor_keep.defined() ? batch.anchor_keep.to(o.device) : batch.anchor_keep;
  double forward_flops = 0;
  {
    torch::NoGradGuard no_grad;
    FlopCounter counter;
    model->forward(noisy, tau, model->encode_text(batch.tokens), anchor, keep);
    forward_flops = counter.flops();
  }
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-4));
  // fp32 training, then the trainer's --bf16-autocast (fp32 weights, bf16 matmuls), in one run.
  for (const bool autocast : {false, true}) {
    const auto t = time_runs(
        [&] {
          optimizer.zero_grad();
          torch::Tensor prediction;
          {
            const ScopedCpuAutocast scope(autocast);
            prediction = model->forward(noisy, tau, model->encode_text(batch.tokens), anchor, keep);
          }
          masked_flow_loss(prediction.to(torch::kFloat32), target, mask).backward();
          optimizer.step();
        },
        fixed_runs(o.runs));
    BenchRow row;
    row["name"] = "dit_train_step";
    row["dtype"] = autocast ? "bf16-autocast" : "fp32";
    row["batch"] = o.batch;
    add_timing(row, t);
    row["samples_per_s"] = 1000.0 * static_cast<double>(o.batch) / t.median_ms;
    row["gflop"] = 3 * forward_flops / 1e9;
    row["gflops"] = 3 * forward_flops / (t.median_ms * 1e6);
    rows.push_back(row);
  }
  for (auto dtype : o.dtypes) {
    StreamDiT m(config);
    prepare_for_inference(*m, o.device, dtype);
    torch::NoGradGuard no_grad;
    const auto x = noisy.to(dtype);
    const auto text = m->encode_text(batch.tokens);
    const auto a = anchor.defined() ? anchor.to(dtype) : anchor;
    const auto tf = time_runs([&] { m->forward(x, tau, text, a, keep); }, fixed_runs(o.runs));
    BenchRow f;
    f["name"] = "dit_forward";
    f["dtype"] = dtype_label(dtype);
    f["batch"] = o.batch;
    add_timing(f, tf);
    f["samples_per_s"] = 1000.0 * static_cast<double>(o.batch) / tf.median_ms;
    f["gflop"] = forward_flops / 1e9;
    f["gflops"] = forward_flops / (tf.median_ms * 1e6);
    rows.push_back(f);
  }
  return rows;
}

std::vector<BenchRow> bench_dit_4b(const DiTBenchOptions& o) {
  constexpr std::int64_t kDepth = 28, kFrames = 16;
  StreamDiTConfig c;
  c.in_channels = 16;
  c.patch_size = 2;
  c.hidden_size = 3072;
  c.num_heads = 24;
  c.depth = o.depth;
  c.max_frames = std::max<std::int64_t>(o.frames, 1);
  c.sample_height = c.sample_width = 64;
  c.window = {std::min<std::int64_t>(8, c.max_frames), 16, 16};
  c.text.vocabulary = ProceduralPalette::vocabulary();
  c.text.num_heads = 24;
  std::vector<BenchRow> rows;
  for (auto dtype : o.dtypes) {
    torch::manual_seed(0);
    StreamDiT m(c);
    prepare_for_inference(*m, o.device, dtype);
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({1, c.max_frames, 16, 64, 64}).to(o.device, dtype);
    const auto tau = torch::rand({1, c.max_frames}).to(o.device);
    const auto text = m->encode_text(m->tokenizer.encode_batch({"red circle"}));
    double flops = 0;
    {
      FlopCounter counter;
      m->forward(x, tau, text);
      flops = counter.flops();
    }
    const auto t = time_runs([&] { m->forward(x, tau, text); }, fixed_runs(o.runs));
    const double scale = static_cast<double>(kDepth * kFrames) / static_cast<double>(o.depth * c.max_frames);
    BenchRow row;
    row["name"] = "dit_4b_nfe";
    row["dtype"] = dtype_label(dtype);
    row["depth_run"] = o.depth;
    row["frames_run"] = c.max_frames;
    add_timing(row, t);
    row["gflops"] = flops / (t.median_ms * 1e6);
    row["full_s_per_nfe"] = t.median_ms * scale / 1000.0;
    row["full_tflop_per_nfe"] = flops * scale / 1e12;
    rows.push_back(row);
  }
  return rows;
}

}  // namespace streamgen
