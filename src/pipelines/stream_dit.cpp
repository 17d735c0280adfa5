#include "streamgen/stream_dit.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "streamgen/error.h"

namespace streamgen {

StreamDiTSampler::StreamDiTSampler(StreamDiT model, const StreamDiTOptions& o) : model_(std::move(model)), options_(o) {
  const auto& c = model_->config;
  partition_ = BufferPartition::for_chunk_size(c.max_frames, o.chunk_frames, o.reference_frames, o.micro_steps);
  if (o.guidance < 0) throw Error(fmt::format("StreamDiT: guidance must be >= 0, got {}", o.guidance));
  const auto init = o.init_steps > 0 ? o.init_steps : partition_.total_steps();
  if (init % partition_.chunks != 0)
    throw Error(fmt::format("StreamDiT: {} initialisation steps cannot stop at the levels of {} chunks (use a multiple of {})", init,
                            partition_.chunks, partition_.chunks));
  options_.init_steps = init;
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
  return at::randn({1, frames, channels_, height_, width_}, generator_, torch::TensorOptions().dtype(torch::kFloat32))
      .to(w.device(), w.scalar_type());
}

torch::Tensor StreamDiTSampler::velocity(const torch::Tensor& x, const std::vector<double>& tau) {
  // x [1, F, C, H, W]; one pass, or a cond/uncond pair in one batch of 2 with CFG.
  const auto f = x.size(1);
  auto t = torch::tensor(tau, torch::kFloat32).view({1, f}).to(x.device());
  const auto cond = text_snapshot();
  if (options_.guidance == 1.0) {
    ++nfe_;
    return model_->forward(x, t, cond);
  }
  nfe_ += 2;
  const auto text = torch::cat({cond, uncond_});
  const auto v = model_->forward(x.expand({2, f, x.size(2), x.size(3), x.size(4)}), t.expand({2, f}), text);
  const auto vc = v.narrow(0, 0, 1), vu = v.narrow(0, 1, 1);
  return vu + options_.guidance * (vc - vu);
}

torch::Tensor StreamDiTSampler::start() {
  torch::NoGradGuard no_grad;
  const auto& p = partition_;
  const auto b = p.buffer_frames(), steps = options_.init_steps, per_level = steps / p.chunks;
  const auto before = nfe_;
  // One uniform-noise trajectory over the whole buffer; the clip at τ = m/N is cached for every m.
  auto x = noise(b);
  std::vector<torch::Tensor> at_level{x};
  const std::int64_t last_needed = p.reference_frames > 0 ? steps : steps - per_level;
  for (std::int64_t i = 0; i < last_needed; ++i) {
    const std::vector<double> tau(static_cast<std::size_t>(b), static_cast<double>(i) / static_cast<double>(steps));
    x = x + velocity(x, tau) / static_cast<double>(steps);
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
  return p.reference_frames > 0 ? buffer_.narrow(1, 0, p.reference_frames)[0].clone() : torch::Tensor{};
}

torch::Tensor StreamDiTSampler::step() {
  if (!started()) start();
  torch::NoGradGuard no_grad;
  const auto& p = partition_;
  const auto k = p.reference_frames, c = p.chunk_frames, b = p.buffer_frames();
  const double t = static_cast<double>(p.total_steps());
  for (std::int64_t j = 0; j < p.micro_steps; ++j) {
    const auto v = velocity(buffer_, stream_levels(p, j));
    auto denoised = buffer_.narrow(1, k, b - k);
    denoised.add_(v.narrow(1, k, b - k), 1.0 / t);
  }
  const auto emitted = buffer_.narrow(1, k, c)[0].clone();
  // Shift by c: the emitted chunk's last K frames become the references, fresh noise enters.
  std::vector<torch::Tensor> parts;
  if (k > 0) parts.push_back(buffer_.narrow(1, c, k));
  parts.push_back(buffer_.narrow(1, k + c, b - k - c));
  parts.push_back(noise(c));
  buffer_ = torch::cat(parts, 1);
  ++chunks_emitted_;
  return emitted;
}

}  // namespace streamgen
