#include "streamgen/dit_distill.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/procedural_video.h"
#include "streamgen/stream_dit.h"

namespace streamgen {

BufferPartition DistillRecipe::student_partition(std::int64_t buffer_frames) const {
  return BufferPartition::for_chunk_size(buffer_frames, chunk_frames, reference_frames, student_steps);
}

void DistillRecipe::validate(std::int64_t buffer_frames) const {
  if (teacher_steps < 1) throw Error(fmt::format("distillation: teacher steps must be >= 1, got {}", teacher_steps));
  if (student_steps < 1) throw Error(fmt::format("distillation: student steps must be >= 1, got {}", student_steps));
  if (teacher_steps % student_steps != 0)
    throw Error(fmt::format("distillation: the student's {} steps per segment must divide the teacher's {}", student_steps, teacher_steps));
  if (!(guidance >= 0)) throw Error(fmt::format("distillation: guidance must be >= 0, got {}", guidance));
  guidance_form.validate("distillation");
  if (guidance_high != 0 && !(guidance_high > guidance))
    throw Error(fmt::format("distillation: the guidance range {},{} is empty (the high end must exceed the low)", guidance, guidance_high));
  if (!(anchor_guidance >= 0)) throw Error(fmt::format("distillation: the anchor guidance must be >= 0 (1: none), got {}", anchor_guidance));
  if (!(rollout_share >= 0 && rollout_share <= 1)) throw Error(fmt::format("distillation: the rollout share must be in [0, 1], got {}", rollout_share));
  if (rollout_max_chunks < 0) throw Error(fmt::format("distillation: rollout chunks must be >= 0, got {}", rollout_max_chunks));
  if (!(staggered_share >= 0 && staggered_share <= 1))
    throw Error(fmt::format("distillation: the staggered share must be in [0, 1], got {}", staggered_share));
  const auto p = student_partition(buffer_frames);
  p.validate();
  if (student_init_steps < 0 || student_init_steps % p.chunks != 0)
    throw Error(fmt::format("distillation: the student's start steps must be a multiple of its {} chunks (0: one per chunk), got {}", p.chunks,
                            student_init_steps));
  if (!(student_init_guidance >= 0)) throw Error(fmt::format("distillation: the student's start guidance must be >= 0 (0: none), got {}", student_init_guidance));
}

std::string DistillRecipe::describe(std::int64_t buffer_frames) const {
  const auto p = student_partition(buffer_frames);
  return fmt::format("c={} N={} K={}: teacher s={} w={} -> student s={}", p.chunk_frames, p.chunks, p.reference_frames, teacher_steps,
                     guidance_label(), student_steps);
}

std::string DistillRecipe::guidance_label() const {
  return (guidance_high > 0 ? fmt::format("{}..{}", guidance, guidance_high) : fmt::format("{}", guidance)) + guidance_form.describe() +
         (anchor_guidance != 1.0 ? fmt::format(", anchor guidance {}", anchor_guidance) : std::string());
}

StreamDiTOptions DistillRecipe::stream_options(std::int64_t micro_steps, double stream_guidance) const {
  StreamDiTOptions o;
  o.chunk_frames = chunk_frames;
  o.reference_frames = reference_frames;
  o.micro_steps = micro_steps;
  o.guidance = stream_guidance;
  if (stream_guidance != 1.0) o.guidance_form = guidance_form;  // a student streams unguided: its form would be noise in sampler.json
  return o;
}

torch::Tensor teacher_rollout_state(StreamDiT& teacher, const DistillRecipe& recipe, const std::string& caption, double guidance,
                                    std::uint64_t seed, std::int64_t chunks, torch::Tensor* anchor) {
  auto o = recipe.stream_options(recipe.teacher_steps, guidance);
  o.anchor_guidance = teacher->config.anchor ? recipe.anchor_guidance : 1.0;  // the policy the targets follow
  o.seed = seed;
  StreamDiTSampler stream(teacher, o);
  stream.set_prompt(caption);
  stream.start();
  for (std::int64_t i = 0; i < chunks; ++i) stream.step();
  if (anchor != nullptr) *anchor = stream.anchor().defined() ? stream.anchor().to(torch::kCPU, torch::kFloat32) : torch::Tensor{};
  return stream.buffer().to(torch::kCPU, torch::kFloat32);
}

DistillBatch make_distill_batch(const ClipBatch& clips, StreamDiT& teacher, const DistillRecipe& recipe, std::mt19937_64& rng,
                                at::Generator& noise) {
  const auto& x1 = clips.video;
  if (x1.dim() != 5) throw Error(fmt::format("distillation batch: video must be [batch, F, C, H, W], got [{}]", fmt::join(x1.sizes(), ", ")));
  const auto b = x1.size(0), frames = x1.size(1);
  recipe.validate(frames);
  const auto p = recipe.student_partition(frames);
  const auto steps = p.total_steps();  // N·s_S student steps over the whole flow
  DistillBatch out;
  auto tau = torch::empty({b, frames}, torch::kFloat32);
  auto moving = torch::ones({b, frames}, torch::kFloat32);
  out.guidance = torch::full({b}, recipe.guidance, torch::kFloat32);
  std::vector<std::pair<std::int64_t, torch::Tensor>> rollouts;  // (example, start state)
  const bool anchored = teacher->config.anchor && clips.anchor.defined();
  std::vector<std::pair<std::int64_t, torch::Tensor>> rollout_anchors;  // (example, its stream's anchor or none)
  for (std::int64_t i = 0; i < b; ++i) {
    if (recipe.guidance_high > 0) out.guidance[i] = recipe.guidance + (recipe.guidance_high - recipe.guidance) * uniform01(rng);
    const bool rollout = recipe.rollout_share > 0 && uniform01(rng) < recipe.rollout_share;
    const bool staggered = rollout || uniform01(rng) < recipe.staggered_share;
    out.staggered.push_back(staggered);
    out.rollout.push_back(rollout);
    if (rollout) {
      const auto chunks = std::min(recipe.rollout_max_chunks,
                                   static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(recipe.rollout_max_chunks + 1)));
      torch::Tensor stream_anchor;
      rollouts.emplace_back(i, teacher_rollout_state(teacher, recipe, clips.captions[static_cast<std::size_t>(i)], out.guidance[i].item<double>(),
                                                     rng(), chunks, &stream_anchor));
      rollout_anchors.emplace_back(i, stream_anchor);
    }
    if (staggered) {
      const auto j = std::min(p.micro_steps - 1, static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(p.micro_steps)));
      const auto levels = stream_levels(p, j, teacher->config.time_shift);
      for (std::int64_t f = 0; f < frames; ++f) tau[i][f] = levels[static_cast<std::size_t>(f)];
      if (p.reference_frames > 0) moving[i].narrow(0, 0, p.reference_frames).zero_();
    } else {
      const auto m = std::min(steps - 1, static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(steps)));
      tau[i].fill_(shifted_time(static_cast<double>(m) / static_cast<double>(steps), teacher->config.time_shift));
    }
  }
  const auto x0 = at::randn(x1.sizes(), noise, x1.options());
  out.tau = tau.to(x1.device());
  out.moving = moving.to(x1.device());
  out.start = flow_interpolate(x1, x0, out.tau, recipe.sigma_min);
  for (const auto& [i, state] : rollouts) out.start[i].copy_(state[0]);
  out.tokens = teacher->tokenizer.encode_batch(clips.captions);
  if (anchored) {
    auto anchors = draw_clip_anchors(clips, recipe.anchor_dropout, rng, "distillation batch");
    // A rollout state goes with its own stream's anchor (none yet before its first chunk left).
    for (const auto& [i, stream_anchor] : rollout_anchors) {
      if (stream_anchor.defined())
        anchors.anchor[i].copy_(stream_anchor[0]);
      else
        anchors.keep[i] = 0.0f;
    }
    out.anchor = anchors.anchor.to(x1.device());
    out.anchor_keep = anchors.keep.to(x1.device());
  }
  return out;
}

DistillBatch seeded_distill_batch(ClipSource& data, StreamDiT& teacher, const DistillRecipe& recipe, std::uint64_t seed,
                                  std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
  std::vector<torch::Tensor> start, tau, moving, tokens, guidance, anchor, keep;
  DistillBatch out;
  for (std::int64_t e = first; e < first + count; ++e) {
    auto [rng, noise] = example_engines(seed, step, micro, e);
    auto part = make_distill_batch(data.next(1, rng), teacher, recipe, rng, noise);
    start.push_back(part.start);
    tau.push_back(part.tau);
    moving.push_back(part.moving);
    tokens.push_back(part.tokens);
    guidance.push_back(part.guidance);
    if (part.anchor.defined()) {
      anchor.push_back(part.anchor);
      keep.push_back(part.anchor_keep);
    }
    out.staggered.push_back(part.staggered.front());
    out.rollout.push_back(part.rollout.front());
  }
  out.start = torch::cat(start);
  out.tau = torch::cat(tau);
  out.moving = torch::cat(moving);
  out.tokens = torch::cat(tokens);
  out.guidance = torch::cat(guidance);
  if (!anchor.empty()) {
    out.anchor = torch::cat(anchor);
    out.anchor_keep = torch::cat(keep);
  }
  return out;
}

namespace {
torch::Tensor per_frame(const torch::Tensor& mask) { return mask.view({mask.size(0), mask.size(1), 1, 1, 1}); }

// [b, F] levels after the moving frames advance `du` along the linear schedule position (fp64):
// the flow time a step of du reaches under the model's time shift; frames that stay keep theirs.
torch::Tensor advanced_levels(const DistillBatch& batch, double du, double shift) {
  const auto tau = batch.tau.to(torch::kCPU, torch::kFloat64);
  const auto moving = batch.moving.to(torch::kCPU, torch::kFloat64);
  return shifted_time((unshifted_time(tau, shift) + moving * du).clamp_max(1.0), shift);
}
}  // namespace

torch::Tensor student_step_sizes(const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames, double shift) {
  const auto du = 1.0 / static_cast<double>(recipe.student_partition(buffer_frames).total_steps());
  return (advanced_levels(batch, du, shift) - batch.tau.to(torch::kCPU, torch::kFloat64)).to(torch::kFloat32);
}

torch::Tensor teacher_segment_end(StreamDiT& teacher, const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames) {
  torch::NoGradGuard no_grad;
  const auto p = recipe.student_partition(buffer_frames);
  const auto& w = teacher->pos_embed_t;
  const auto cond = teacher->encode_text(batch.tokens.to(w.device()));
  const bool guided = batch.guidance.ne(1.0).any().item<bool>();
  const auto uncond = guided ? teacher->encode_text(teacher->tokenizer.encode_batch({""}).to(w.device())) : torch::Tensor{};
  const double du = 1.0 / static_cast<double>(p.chunks * recipe.teacher_steps);  // one teacher micro step
  const auto shift = teacher->config.time_shift;
  auto x = batch.start.to(w.device(), w.scalar_type());
  const auto anchor = batch.anchor.defined() ? batch.anchor.to(w.device(), w.scalar_type()) : torch::Tensor{};
  auto level = batch.tau.to(torch::kCPU, torch::kFloat64);
  for (std::int64_t i = 0; i < recipe.teacher_steps / recipe.student_steps; ++i) {
    const auto next = advanced_levels(batch, static_cast<double>(i + 1) * du, shift);
    const auto tau = level.to(w.device(), w.scalar_type());
    const auto v = anchor_guided_velocity(teacher, x, tau, cond, uncond, batch.guidance, anchor, batch.anchor_keep, recipe.anchor_guidance,
                                          recipe.guidance_form);
    x = x + (v.to(torch::kFloat32) * per_frame((next - level).to(w.device(), torch::kFloat32))).to(x.scalar_type());
    level = next;
  }
  return x.to(batch.start.device(), torch::kFloat32);
}

torch::Tensor one_step_segment_end(StreamDiT& model, const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames) {
  torch::NoGradGuard no_grad;
  const auto& w = model->pos_embed_t;
  const auto v = model->forward(batch.start.to(w.device(), w.scalar_type()), batch.tau.to(w.device(), w.scalar_type()),
                                model->encode_text(batch.tokens.to(w.device())),
                                batch.anchor.defined() ? batch.anchor.to(w.device(), w.scalar_type()) : torch::Tensor{}, batch.anchor_keep);
  const auto step = student_step_sizes(batch, recipe, buffer_frames, model->config.time_shift).to(batch.start.device());
  return batch.start + per_frame(step) * v.to(batch.start.device(), torch::kFloat32);
}

double segment_endpoint_error(const torch::Tensor& end, const torch::Tensor& teacher_end, const DistillBatch& batch) {
  const auto m = per_frame(batch.moving);
  const double moved = ((teacher_end - batch.start) * m).norm().item<double>();
  return ((end - teacher_end) * m).norm().item<double>() / std::max(moved, 1e-30);
}

DistillEndpointReport evaluate_distillation(StreamDiT& teacher, StreamDiT& student, ClipSource& data, const DistillRecipe& recipe,
                                            std::int64_t batches, std::int64_t batch_size, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  const ScopedBlasThreads blas_threads(1);
  teacher->eval();
  student->eval();
  const auto frames = teacher->config.max_frames;
  double undistilled = 0, distilled = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    const auto batch = seeded_distill_batch(data, teacher, recipe, seed, static_cast<std::uint64_t>(i), 0, 0, batch_size);
    const auto end = teacher_segment_end(teacher, batch, recipe, frames);
    undistilled += segment_endpoint_error(one_step_segment_end(teacher, batch, recipe, frames), end, batch);
    distilled += segment_endpoint_error(one_step_segment_end(student, batch, recipe, frames), end, batch);
  }
  return {undistilled / static_cast<double>(batches), distilled / static_cast<double>(batches)};
}

TrainSummary distill_stream_dit(StreamDiT teacher, ClipSource& data, const DiTDistillOptions& o,
                                   const std::function<void(const TrainStepInfo&)>& on_step) {
  const auto& config = teacher->config;
  const auto& recipe = o.recipe;
  recipe.validate(config.max_frames);
  if (recipe.anchor_guidance != 1.0 && !config.anchor)
    throw Error(fmt::format("distillation: anchor guidance {} needs a teacher with an anchor frame (its config.json has no \"anchor\": true)",
                            recipe.anchor_guidance));
  teacher->eval();  // its passes run under NoGradGuard (teacher_segment_end)

  DiTRunHooks hooks;
  hooks.initialise = [&](StreamDiT& student) {
    if (o.init_from.empty()) return copy_parameters(*teacher, *student);
    // A student distilled further (e.g. with another recipe) starts from its own weights.
    const auto start = load_stream_dit(o.init_from);
    if (start->config.to_json() != config.to_json())
      throw Error(fmt::format("dit distill: '{}' is a model of another config than the teacher '{}'", o.init_from.string(), o.teacher_description));
    copy_parameters(*start, *student);
  };
  hooks.loss = [&](StreamDiT& student, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    const ScopedCpuAutocast autocast(o.bf16_autocast);  // rollout streams are teacher passes too
    const auto batch = seeded_distill_batch(data, teacher, recipe, o.seed, step, micro, first, count);
    // The velocity that lands on the teacher's segment end in one step: (end − start) / Δτ per frame
    // (Δτ = 1/(N·s_S) on the linear schedule; frames that stay have Δτ = 0 and no loss).
    const auto dtau = student_step_sizes(batch, recipe, config.max_frames, config.time_shift).to(batch.start.device());
    const auto target = (teacher_segment_end(teacher, batch, recipe, config.max_frames) - batch.start) / per_frame(dtau.clamp_min(1e-12));
    const auto prediction = student->forward(batch.start, batch.tau, student->encode_text(batch.tokens), batch.anchor, batch.anchor_keep);
    return masked_flow_loss(prediction.to(torch::kFloat32), target, batch.moving);
  };
  hooks.label = "distill";
  hooks.metadata = {{"distilled_from", o.teacher_description},
                    {"chunk_frames", recipe.chunk_frames},
                    {"reference_frames", recipe.reference_frames},
                    {"teacher_steps", recipe.teacher_steps},
                    {"student_steps", recipe.student_steps},
                    {"guidance", recipe.guidance},
                    {"guidance_high", recipe.guidance_high},
                    {"guidance_keep_mean", recipe.guidance_form.keep_mean},
                    {"guidance_rescale", recipe.guidance_form.rescale},
                    {"anchor_guidance", recipe.anchor_guidance},
                    {"staggered_share", recipe.staggered_share},
                    {"rollout_share", recipe.rollout_share},
                    {"rollout_max_chunks", recipe.rollout_max_chunks},
                    {"student_init_steps", recipe.student_init_steps},
                    {"student_init_guidance", recipe.student_init_guidance},
                    {"anchor_dropout", config.anchor ? nlohmann::json(recipe.anchor_dropout) : nlohmann::json()},
                    {"data", data.describe()}};
  const auto summary = run_dit_optimisation(config, o, hooks, on_step);
  auto settings = recipe.stream_options(recipe.student_steps, 1.0);  // how the student is meant to be streamed
  settings.init_steps = recipe.student_init_steps;
  if (recipe.student_init_guidance > 0) {
    settings.init_guidance = recipe.student_init_guidance;
    settings.guidance_form = recipe.guidance_form;
  }
  write_sampler_settings(o.out, settings);
  return summary;
}

}  // namespace streamgen
