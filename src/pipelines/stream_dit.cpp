#include "streamgen/stream_dit.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/error.h"
#include "streamgen/flow_matching.h"
#include "streamgen/json_file.h"

namespace streamgen {

void GuidanceForm::validate(const std::string& who) const {
  if (!(rescale >= 0 && rescale <= 1)) throw Error(fmt::format("{}: the guidance rescale share must be in [0, 1], got {}", who, rescale));
}

std::string GuidanceForm::describe() const {
  std::string text;
  if (keep_mean) text += ", mean kept";
  if (rescale != 0) text += fmt::format(", rescaled {}", rescale);
  return text;
}

std::string describe_guidance(const StreamDiTOptions& o) {
  auto text = fmt::format("{}", o.guidance);
  const bool start_differs = o.init_guidance > 0 && o.init_guidance != o.guidance;
  const bool change_differs = o.change_guidance > 0 && o.change_guidance != o.guidance;
  if (start_differs && change_differs) text += fmt::format(" (the start {}, after a prompt change {})", o.init_guidance, o.change_guidance);
  else if (start_differs) text += fmt::format(" (the start {})", o.init_guidance);
  else if (change_differs) text += fmt::format(" (after a prompt change {})", o.change_guidance);
  const auto anchor = o.anchor_guidance != 1.0 ? fmt::format(", anchor guidance {}", o.anchor_guidance) : std::string();
  if (o.guidance == 1.0 && !start_differs && !change_differs) return text + anchor;
  const auto [low, high] = o.guidance_interval;
  if (low != 0.0 || high != 1.0) text += fmt::format(" on levels [{}, {}]", low, high);
  return text + o.guidance_form.describe() + anchor;
}

std::string describe_colour_hold(const StreamDiTOptions& o) {
  return o.colour_hold > 0 ? fmt::format(", colour hold {} over {} frames", o.colour_hold, o.colour_hold_frames) : std::string();
}

std::int64_t passes_per_step(const StreamDiTOptions& o) {
  const bool cfg = o.guidance != 1.0 || (o.change_guidance > 0 && o.change_guidance != 1.0);
  return 1 + (cfg ? 1 : 0) + (o.anchor_guidance != 1.0 ? 1 : 0);
}

bool read_sampler_settings(const std::filesystem::path& model_folder, StreamDiTOptions& options) {
  const auto file = model_folder / "sampler.json";
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return false;
  const auto j = read_json_file(file);
  try {
    options.chunk_frames = j.value("chunk_frames", options.chunk_frames);
    options.micro_steps = j.value("micro_steps", options.micro_steps);
    options.reference_frames = j.value("reference_frames", options.reference_frames);
    options.guidance = j.value("guidance", options.guidance);
    options.guidance_interval = j.value("guidance_interval", options.guidance_interval);
    options.guidance_form.keep_mean = j.value("guidance_keep_mean", options.guidance_form.keep_mean);
    options.guidance_form.rescale = j.value("guidance_rescale", options.guidance_form.rescale);
    options.init_steps = j.value("init_steps", options.init_steps);
    options.init_guidance = j.value("init_guidance", options.init_guidance);
    options.anchor_guidance = j.value("anchor_guidance", options.anchor_guidance);
    options.change_guidance = j.value("change_guidance", options.change_guidance);
    options.colour_hold = j.value("colour_hold", options.colour_hold);
    options.colour_hold_frames = j.value("colour_hold_frames", options.colour_hold_frames);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  return true;
}

void write_sampler_settings(const std::filesystem::path& model_folder, const StreamDiTOptions& options) {
  write_json_file(model_folder / "sampler.json", {{"chunk_frames", options.chunk_frames},
                                                  {"micro_steps", options.micro_steps},
                                                  {"reference_frames", options.reference_frames},
                                                  {"guidance", options.guidance},
                                                  {"guidance_interval", options.guidance_interval},
                                                  {"guidance_keep_mean", options.guidance_form.keep_mean},
                                                  {"guidance_rescale", options.guidance_form.rescale},
                                                  {"init_steps", options.init_steps},
                                                  {"init_guidance", options.init_guidance},
                                                  {"anchor_guidance", options.anchor_guidance},
                                                  {"change_guidance", options.change_guidance},
                                                  {"colour_hold", options.colour_hold},
                                                  {"colour_hold_frames", options.colour_hold_frames}});
}

torch::Tensor combine_guidance(const torch::Tensor& vc, const torch::Tensor& vu, const torch::Tensor& guidance, const GuidanceForm& form) {
  // vc, vu [b, F, C, H, W]; guidance [b, F, 1, 1, 1] (or broadcasting)
  if (form.plain()) return vu + guidance * (vc - vu);
  auto step = vc - vu;
  if (form.keep_mean) step = step - step.mean({3, 4}, true);
  const auto guided = vc + (guidance - 1) * step;
  if (form.rescale == 0) return guided;
  auto spread = [](const torch::Tensor& v) { return v.to(torch::kFloat32).std({2, 3, 4}, true, true).clamp_min(1e-6); };
  const auto rescaled = guided * (spread(vc) / spread(guided)).to(guided.scalar_type());
  return form.rescale * rescaled + (1 - form.rescale) * guided;
}

torch::Tensor guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                              const torch::Tensor& uncond, const torch::Tensor& guidance, const torch::Tensor& anchor,
                              const torch::Tensor& anchor_keep, const GuidanceForm& form) {
  const auto b = x.size(0);
  auto expand = [b](const torch::Tensor& t) { return t.size(0) == b ? t : t.expand({b, t.size(1), t.size(2)}); };
  // The anchor is not text: both halves of the pair see it.
  const auto pair_anchor = !anchor.defined() || anchor.size(0) == 1 ? anchor : torch::cat({anchor, anchor});
  const auto pair_keep = anchor_keep.defined() ? torch::cat({anchor_keep, anchor_keep}) : anchor_keep;
  const auto v = model->forward(torch::cat({x, x}), torch::cat({tau, tau}), torch::cat({expand(cond), expand(uncond)}), pair_anchor, pair_keep);
  const auto vc = v.narrow(0, 0, b), vu = v.narrow(0, b, b);
  const auto frames = guidance.dim() == 2 ? guidance.size(1) : 1;
  return combine_guidance(vc, vu, guidance.to(v.device(), v.scalar_type()).view({b, frames, 1, 1, 1}), form);
}

torch::Tensor guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                              const torch::Tensor& uncond, double guidance, const torch::Tensor& anchor, const GuidanceForm& form) {
  if (guidance == 1.0) return model->forward(x, tau, cond, anchor);
  return guided_velocity(model, x, tau, cond, uncond, torch::full({x.size(0)}, guidance, torch::kFloat32), anchor, {}, form);
}

torch::Tensor anchor_guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                                     const torch::Tensor& uncond, const torch::Tensor& guidance, const torch::Tensor& anchor,
                                     const torch::Tensor& anchor_keep, double anchor_guidance, const GuidanceForm& form) {
  // x [b, F, C, H, W], tau [b, F], guidance [b] or [b, F], anchor [b or 1, C, H, W], anchor_keep [b] or undefined
  const bool text_guided = !guidance.eq(1.0).all().item<bool>();
  if (!anchor.defined() || anchor_guidance == 1.0) {
    if (text_guided) return guided_velocity(model, x, tau, cond, uncond, guidance, anchor, anchor_keep, form);
    return model->forward(x, tau, cond, anchor, anchor_keep);
  }
  const auto b = x.size(0);
  auto expand = [b](const torch::Tensor& t) { return t.size(0) == b ? t : t.expand({b, t.size(1), t.size(2)}); };
  const auto keep = anchor_keep.defined() ? anchor_keep.to(torch::kFloat32) : torch::ones({b}, torch::kFloat32);
  // Rows: the caption with the anchor, the caption without it (and the empty caption with it).
  std::vector<torch::Tensor> texts{expand(cond), expand(cond)}, keeps{keep, torch::zeros_like(keep)};
  if (text_guided) {
    texts.push_back(expand(uncond));
    keeps.push_back(keep);
  }
  const auto n = static_cast<std::int64_t>(texts.size());
  const auto rows_anchor = anchor.size(0) == 1 ? anchor : anchor.repeat({n, 1, 1, 1});
  const auto v = model->forward(x.repeat({n, 1, 1, 1, 1}), tau.repeat({n, 1}), torch::cat(texts), rows_anchor, torch::cat(keeps).to(x.device()));
  const auto va = v.narrow(0, 0, b), v_free = v.narrow(0, b, b);
  const auto frames = guidance.dim() == 2 ? guidance.size(1) : 1;
  const auto text_step =
      text_guided ? combine_guidance(va, v.narrow(0, 2 * b, b), guidance.to(v.device(), v.scalar_type()).view({b, frames, 1, 1, 1}), form) : va;
  return text_step + (anchor_guidance - 1.0) * (va - v_free);
}

StreamDiTSampler::StreamDiTSampler(StreamDiT model, const StreamDiTOptions& o)
    : model_(std::move(model)), options_(o), colour_hold_(o.colour_hold, o.colour_hold_frames, o.colour_hold_frames) {
  const auto& c = model_->config;
  partition_ = BufferPartition::for_chunk_size(c.max_frames, o.chunk_frames, o.reference_frames, o.micro_steps);
  if (o.guidance < 0) throw Error(fmt::format("StreamDiT: guidance must be >= 0, got {}", o.guidance));
  if (o.init_guidance < 0) throw Error(fmt::format("StreamDiT: the start's guidance must be >= 0 (0: the stream's), got {}", o.init_guidance));
  if (o.change_guidance < 0) throw Error(fmt::format("StreamDiT: the guidance after a prompt change must be >= 0 (0: the stream's), got {}", o.change_guidance));
  if (!(o.anchor_guidance >= 0)) throw Error(fmt::format("StreamDiT: the anchor guidance must be >= 0 (1: off), got {}", o.anchor_guidance));
  if (o.anchor_guidance != 1.0 && !(model_->config.anchor && o.use_anchor))
    throw Error(fmt::format("StreamDiT: anchor guidance {} needs an anchor frame, and this stream has none ({})", o.anchor_guidance,
                            model_->config.anchor ? "streamed without it" : "the model's config.json has no \"anchor\": true"));
  o.guidance_form.validate("StreamDiT");
  const auto [low, high] = o.guidance_interval;
  if (!(low >= 0 && low <= high && high <= 1))
    throw Error(fmt::format("StreamDiT: the guidance interval must satisfy 0 <= low <= high <= 1 (flow-time levels), got [{}, {}]", low, high));
  const auto init = o.init_steps > 0 ? o.init_steps : partition_.total_steps();
  if (init % partition_.chunks != 0)
    throw Error(fmt::format("StreamDiT: {} initialisation steps cannot stop at the levels of {} chunks (use a multiple of {})", init,
                            partition_.chunks, partition_.chunks));
  options_.init_steps = init;
  if (!(o.strength >= 0 && o.strength <= 1)) throw Error(fmt::format("StreamDiT: strength must be in [0, 1] (0: text-to-video), got {}", o.strength));
  v2v_chunks_ = partition_.chunks;
  if (o.strength > 0) {
    const auto n = partition_.chunks;
    v2v_chunks_ = n - static_cast<std::int64_t>(std::lround(static_cast<double>(n) * (1.0 - o.strength)));
    if (v2v_chunks_ < 1)
      throw Error(fmt::format("StreamDiT: strength {} keeps no chunk of {} (it must be above {:.3g})", o.strength, n, 0.5 / static_cast<double>(n)));
  }
  channels_ = c.in_channels;
  height_ = o.frame_height > 0 ? o.frame_height : c.sample_height;
  width_ = o.frame_width > 0 ? o.frame_width : c.sample_width;
  generator_ = at::detail::createCPUGenerator(o.seed);
  model_->eval();
  torch::NoGradGuard no_grad;
  uncond_ = model_->encode_text(model_->tokenizer.encode_batch({""}));
  cond_ = uncond_;
}

void StreamDiTSampler::set_prompt(const std::string& prompt) {
  const auto unknown = model_->tokenizer.unknown_words(prompt);
  if (!unknown.empty())
    spdlog::warn("prompt '{}': the model's caption vocabulary has no '{}' (or the prompt is longer than {} words); those words are ignored",
                 prompt, fmt::join(unknown, "', '"), model_->tokenizer.max_tokens());
  torch::Tensor states;
  {
    torch::NoGradGuard no_grad;
    states = model_->encode_text(model_->tokenizer.encode_batch({prompt}));
  }
  std::lock_guard lock(prompt_mutex_);
  cond_ = states;
  if (prompt != prompt_) ++prompt_version_;
  prompt_ = prompt;
}

std::string StreamDiTSampler::prompt() const {
  std::lock_guard lock(prompt_mutex_);
  return prompt_;
}

torch::Tensor StreamDiTSampler::text_snapshot() const {
  std::lock_guard lock(prompt_mutex_);
  return cond_;
}

torch::Tensor StreamDiTSampler::noise(std::int64_t frames) {
  const auto& w = model_->pos_embed_t;
  auto n = at::randn({1, frames, channels_, height_, width_}, generator_, torch::TensorOptions().dtype(torch::kFloat32));
  if (options_.noise_scale != 1.0) n.mul_(options_.noise_scale);
  return n.to(w.device(), w.scalar_type());
}

void StreamDiTSampler::sync_anchor_to_prompt() {
  // The prompt given before the stream starts is the one its first chunk is made under.
  std::lock_guard lock(prompt_mutex_);
  anchor_version_ = prompt_version_;
  anchor_ = torch::Tensor{};
  anchor_wait_ = 0;
  change_version_ = prompt_version_;
  change_steps_left_ = 0;
  hold_version_ = prompt_version_;
  colour_hold_.restart();
}

std::uint64_t StreamDiTSampler::prompt_version() const {
  std::lock_guard lock(prompt_mutex_);
  return prompt_version_;
}

void StreamDiTSampler::notice_prompt_change() {
  std::lock_guard lock(prompt_mutex_);
  if (prompt_version_ == change_version_) return;
  change_version_ = prompt_version_;
  change_steps_left_ = v2v_chunks_;
}

torch::Tensor StreamDiTSampler::velocity(const torch::Tensor& x, const std::vector<double>& tau, double guidance) {
  // x [1, F, C, H, W]
  const auto t = torch::tensor(tau, torch::kFloat32).view({1, x.size(1)}).to(x.device());
  const auto scales = guidance_scales(tau, guidance);
  const bool text_guided = !scales.eq(1.0).all().item<bool>();
  const bool anchor_guided = anchor_.defined() && options_.anchor_guidance != 1.0;
  nfe_ += 1 + (text_guided ? 1 : 0) + (anchor_guided ? 1 : 0);
  return anchor_guided_velocity(model_, x, t, text_snapshot(), uncond_, scales.unsqueeze(0), anchor_, {}, options_.anchor_guidance,
                                options_.guidance_form);
}

torch::Tensor StreamDiTSampler::guidance_scales(const std::vector<double>& tau, double guidance) const {
  const auto [low, high] = options_.guidance_interval;
  std::vector<float> w(tau.size());
  for (std::size_t i = 0; i < tau.size(); ++i) w[i] = tau[i] >= low && tau[i] <= high ? static_cast<float>(guidance) : 1.0f;
  return torch::tensor(w);
}

void StreamDiTSampler::update_anchor(const torch::Tensor& emitted) {
  // emitted [c, C, H, W]
  if (!model_->config.anchor || !options_.use_anchor) return;
  const auto version = prompt_version();
  if (version != anchor_version_) {
    // The chunks in the buffer began under the old prompt: the next anchor is the first chunk that
    // entered as noise after the change, N chunks from now (this one is the first of them).
    anchor_ = torch::Tensor{};
    anchor_version_ = version;
    anchor_wait_ = v2v_chunks_ - 1;
    return;
  }
  if (anchor_wait_ > 0) {
    --anchor_wait_;
    return;
  }
  if (!anchor_.defined()) anchor_ = emitted.narrow(0, 0, 1).clone();
}

void StreamDiTSampler::hold_colour(const torch::Tensor& emitted) {
  // emitted [c, C, H, W]; buffer_ [1, B, C, H, W], already shifted
  if (!colour_hold_.enabled()) return;
  const auto version = prompt_version();
  if (version != hold_version_) {
    // As for the anchor: the look to keep is the one of the chunks that entered as noise after the change.
    hold_version_ = version;
    colour_hold_.restart(v2v_chunks_ * partition_.chunk_frames);
  }
  const auto correction = colour_hold_.observe(emitted);
  if (colour_hold_.holding()) buffer_ = ColourHold::apply(buffer_, buffer_levels(0), correction);
}

double StreamDiTSampler::entry_level() const {
  if (!video_to_video()) return 0.0;
  return shifted_time(static_cast<double>(partition_.chunks - v2v_chunks_) / static_cast<double>(partition_.chunks), model_->config.time_shift);
}

std::vector<double> StreamDiTSampler::buffer_levels(std::int64_t micro_step) const {
  auto tau = stream_levels(partition_, micro_step, model_->config.time_shift);
  tau.resize(static_cast<std::size_t>(start_frames()));  // video-to-video keeps the first N_eff chunks
  return tau;
}

torch::Tensor StreamDiTSampler::check_input(const torch::Tensor& frames, std::int64_t count, const char* what) const {
  if (!frames.defined() || frames.dim() != 4 || frames.size(0) != count || frames.size(1) != channels_ || frames.size(2) != height_ ||
      frames.size(3) != width_)
    throw Error(fmt::format("StreamDiT video-to-video: {} must be [{}, {}, {}, {}], got {}", what, count, channels_, height_, width_,
                            frames.defined() ? fmt::format("{}", fmt::join(frames.sizes(), "x")) : std::string("nothing")));
  const auto& w = model_->pos_embed_t;
  return frames.to(w.device(), w.scalar_type()).unsqueeze(0);
}

torch::Tensor StreamDiTSampler::start(const torch::Tensor& video) {
  if (!video_to_video()) throw Error("StreamDiT: start(video) needs strength > 0 (video-to-video)");
  torch::NoGradGuard no_grad;
  const auto& p = partition_;
  const auto z = check_input(video, start_frames(), "the first input frames");
  const auto levels = buffer_levels(0);
  const auto tau = torch::tensor(levels, torch::kFloat32).view({1, -1}).to(z.device(), z.scalar_type());
  buffer_ = flow_interpolate(z, noise(start_frames()), tau);  // references sit at τ = 1: clean
  init_nfe_ = 0;
  sync_anchor_to_prompt();
  return p.reference_frames > 0 ? buffer_.narrow(1, 0, p.reference_frames)[0].clone() : torch::Tensor{};
}

torch::Tensor StreamDiTSampler::step(const torch::Tensor& input_chunk) {
  if (!video_to_video()) throw Error("StreamDiT: step(input) needs strength > 0 (video-to-video)");
  if (!started()) throw Error("StreamDiT video-to-video: call start(video) with the first input frames before step(input)");
  torch::NoGradGuard no_grad;
  const auto z = check_input(input_chunk, partition_.chunk_frames, "an input chunk");
  const auto tau = torch::full({1, partition_.chunk_frames}, entry_level(), torch::TensorOptions().dtype(z.scalar_type()).device(z.device()));
  return advance(flow_interpolate(z, noise(partition_.chunk_frames), tau));
}

torch::Tensor StreamDiTSampler::start() {
  if (video_to_video()) throw Error("StreamDiT: video-to-video starts from input frames: start(video)");
  torch::NoGradGuard no_grad;
  const auto& p = partition_;
  const auto b = p.buffer_frames(), steps = options_.init_steps, per_level = steps / p.chunks;
  const auto before = nfe_;
  // One uniform-noise trajectory over the whole buffer; the clip at τ = m/N is cached for every m.
  auto x = noise(b);
  std::vector<torch::Tensor> at_level{x};
  const std::int64_t last_needed = p.reference_frames > 0 ? steps : steps - per_level;
  const auto level = [&](std::int64_t i) { return shifted_time(static_cast<double>(i) / static_cast<double>(steps), model_->config.time_shift); };
  for (std::int64_t i = 0; i < last_needed; ++i) {
    const std::vector<double> tau(static_cast<std::size_t>(b), level(i));
    x = x + velocity(x, tau, start_guidance()) * (level(i + 1) - level(i));
    if ((i + 1) % per_level == 0) at_level.push_back(x);
  }
  // Chunk k takes the cached clip at level m = N - 1 - k; references take the clean clip.
  auto buffer = torch::empty_like(x);
  if (p.reference_frames > 0) buffer.narrow(1, 0, p.reference_frames).copy_(at_level.back().narrow(1, 0, p.reference_frames));
  for (std::int64_t k = 0; k < p.chunks; ++k) {
    const auto first = p.reference_frames + k * p.chunk_frames;
    buffer.narrow(1, first, p.chunk_frames).copy_(at_level[static_cast<std::size_t>(p.chunks - 1 - k)].narrow(1, first, p.chunk_frames));
  }
  buffer_ = buffer;
  init_nfe_ = nfe_ - before;
  sync_anchor_to_prompt();
  return p.reference_frames > 0 ? buffer_.narrow(1, 0, p.reference_frames)[0].clone() : torch::Tensor{};
}

torch::Tensor StreamDiTSampler::step() {
  if (video_to_video()) throw Error("StreamDiT: video-to-video steps take the next input chunk: step(input)");
  if (!started()) start();
  torch::NoGradGuard no_grad;
  return advance(noise(partition_.chunk_frames));
}

torch::Tensor StreamDiTSampler::advance(const torch::Tensor& entering) {
  const auto& p = partition_;
  const auto k = p.reference_frames, c = p.chunk_frames, b = start_frames();
  auto levels = buffer_levels(0);
  notice_prompt_change();
  const auto guidance = loop_guidance();
  if (change_steps_left_ > 0) --change_steps_left_;
  for (std::int64_t j = 0; j < p.micro_steps; ++j) {
    const auto v = velocity(buffer_, levels, guidance);
    auto next = buffer_levels(j + 1);
    std::vector<double> step(levels.size());
    for (std::size_t f = 0; f < step.size(); ++f) step[f] = next[f] - levels[f];  // 1/T per frame on the linear schedule
    const auto dt = torch::tensor(step, torch::kFloat32).narrow(0, k, b - k).view({1, b - k, 1, 1, 1}).to(v.device());  // fp32: a bf16 step size would be off by 0.4 %
    auto denoised = buffer_.narrow(1, k, b - k);
    denoised.add_(v.narrow(1, k, b - k) * dt);
    levels = std::move(next);
  }
  const auto emitted = buffer_.narrow(1, k, c)[0].clone();
  update_anchor(emitted);
  // Shift by c: the emitted chunk's last K frames become the references, the new chunk enters.
  std::vector<torch::Tensor> parts;
  if (k > 0) parts.push_back(buffer_.narrow(1, c, k));
  parts.push_back(buffer_.narrow(1, k + c, b - k - c));
  parts.push_back(entering);
  buffer_ = torch::cat(parts, 1);
  hold_colour(emitted);
  ++chunks_emitted_;
  return emitted;
}

}  // namespace streamgen
