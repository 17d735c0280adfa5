#include "streamgen/temporal_autoencoder.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/config_json.h"
#include "streamgen/diffusers_blocks.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/model_folder.h"
#include "streamgen/model_io.h"
#include "streamgen/state_dict.h"

namespace streamgen {

namespace {

namespace F = torch::nn::functional;

torch::nn::Conv2d conv1x1(std::int64_t in, std::int64_t out) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)); }

// Per-frame 2D module over [N, T, C, H, W].
template <typename M>
torch::Tensor per_frame(M& module, const torch::Tensor& x) {
  const auto n = x.size(0), t = x.size(1);
  auto y = module->forward(x.flatten(0, 1));
  return y.view({n, t, y.size(1), y.size(2), y.size(3)});
}

bool power_of_two(std::int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// The chunk coders' history: `history` (may be undefined) in front of `x` along time, and the last
// `n` frames of a sequence to keep as the next chunk's history.
torch::Tensor with_history(const torch::Tensor& history, const torch::Tensor& x) {
  return history.defined() && history.size(0) > 0 ? torch::cat({history, x.to(history.dtype())}) : x;
}
torch::Tensor last_frames(const torch::Tensor& x, std::int64_t n) {
  return n > 0 ? x.narrow(0, std::max<std::int64_t>(0, x.size(0) - n), std::min(n, x.size(0))).clone() : torch::Tensor();
}

}  // namespace

// ---- config ------------------------------------------------------------------------------------

std::int64_t TemporalAutoencoderConfig::temporal_levels() const {
  std::int64_t levels = 0;
  while ((std::int64_t{1} << levels) < temporal_compression) ++levels;
  return levels;
}

void TemporalAutoencoderConfig::validate(const std::string& source) const {
  if (in_channels < 1 || latent_channels < 1) throw Error(source + ": in_channels and latent_channels must be >= 1");
  if (block_out_channels.empty()) throw Error(source + ": block_out_channels must list at least one stage");
  for (auto c : block_out_channels)
    if (c < 1) throw Error(fmt::format("{}: block_out_channels {} has a stage with {} channels", source, block_out_channels, c));
  if (!power_of_two(temporal_compression) || temporal_levels() > static_cast<std::int64_t>(block_out_channels.size()))
    throw Error(fmt::format("{}: temporal_compression {} must be a power of two of at most 2^{} (one 2x pool per stage)", source,
                            temporal_compression, block_out_channels.size()));
  if (!(scaling_factor > 0) || !std::isfinite(scaling_factor) || !std::isfinite(shift_factor))
    throw Error(fmt::format("{}: scaling_factor must be positive and finite (got {}, shift {})", source, scaling_factor, shift_factor));
}

TemporalAutoencoderConfig TemporalAutoencoderConfig::from_json(const nlohmann::json& j, const std::string& source) {
  TemporalAutoencoderConfig c;
  const auto cls = config_value<std::string>(j, "_class_name", "TemporalAutoencoder", source);
  if (cls != "TemporalAutoencoder") throw Error(source + ": _class_name is '" + cls + "', expected TemporalAutoencoder");
  c.in_channels = config_value(j, "in_channels", c.in_channels, source);
  c.latent_channels = config_value(j, "latent_channels", c.latent_channels, source);
  c.block_out_channels = config_value(j, "block_out_channels", c.block_out_channels, source);
  c.temporal_compression = config_value(j, "temporal_compression", c.temporal_compression, source);
  c.scaling_factor = config_value(j, "scaling_factor", c.scaling_factor, source);
  c.shift_factor = config_value(j, "shift_factor", c.shift_factor, source);
  c.validate(source);
  return c;
}

nlohmann::json TemporalAutoencoderConfig::to_json() const {
  return {{"_class_name", "TemporalAutoencoder"},        {"in_channels", in_channels},
          {"latent_channels", latent_channels},          {"block_out_channels", block_out_channels},
          {"temporal_compression", temporal_compression}, {"scaling_factor", scaling_factor},
          {"shift_factor", shift_factor}};
}

// ---- blocks ------------------------------------------------------------------------------------

TemporalMemoryBlockImpl::TemporalMemoryBlockImpl(std::int64_t channels) {
  conv = register_module("conv", torch::nn::Sequential(conv3x3(2 * channels, channels), torch::nn::ReLU(), conv3x3(channels, channels),
                                                       torch::nn::ReLU(), conv3x3(channels, channels)));
}

torch::Tensor TemporalMemoryBlockImpl::forward(const torch::Tensor& x) {
  // previous frame's input beside each frame's own (zeros before the first frame)
  const auto past = F::pad(x, F::PadFuncOptions({0, 0, 0, 0, 0, 0, 1, 0})).narrow(1, 0, x.size(1));
  return torch::relu(x + per_frame(conv, torch::cat({x, past}, 2)));
}

TemporalDownBlockImpl::TemporalDownBlockImpl(std::int64_t in, std::int64_t out, bool temporal) {
  conv = register_module("conv", conv3x3(in, out, 2));
  if (temporal) pool = register_module("pool", conv1x1(2 * out, out));
  memory = register_module("memory", TemporalMemoryBlock(out));
}

torch::Tensor TemporalDownBlockImpl::forward(const torch::Tensor& x) {
  auto h = torch::relu(per_frame(conv, x));
  if (pool) {  // frames (2j, 2j+1) side by side in channels -> frame j
    const auto n = h.size(0), t = h.size(1), c = h.size(2);
    h = torch::relu(per_frame(pool, h.reshape({n, t / 2, 2 * c, h.size(3), h.size(4)})));
  }
  return memory(h);
}

TemporalUpBlockImpl::TemporalUpBlockImpl(std::int64_t in, std::int64_t out, bool temporal) {
  memory = register_module("memory", TemporalMemoryBlock(in));
  if (temporal) grow = register_module("grow", conv1x1(in, 2 * in));
  conv = register_module("conv", conv3x3(in, out));
}

torch::Tensor TemporalUpBlockImpl::forward(const torch::Tensor& x) {
  auto h = memory(x);
  if (grow) {  // frame j -> frames (2j, 2j+1), the inverse layout of the encoder's pool
    const auto n = h.size(0), t = h.size(1), c = h.size(2);
    h = torch::relu(per_frame(grow, h)).reshape({n, 2 * t, c, h.size(3), h.size(4)});
  }
  const auto n = h.size(0), t = h.size(1);
  auto up = F::interpolate(h.flatten(0, 1), F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  up = torch::relu(conv->forward(up));
  return up.view({n, t, up.size(1), up.size(2), up.size(3)});
}

// ---- encoder / decoder -------------------------------------------------------------------------

TemporalEncoderImpl::TemporalEncoderImpl(const TemporalAutoencoderConfig& c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", conv3x3(c.in_channels, ch[0]));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  // Pools come first, at full resolution, so the deeper stages run on r_t times fewer frames.
  for (std::size_t i = 0; i < ch.size(); ++i)
    down_blocks->push_back(TemporalDownBlock(i == 0 ? ch[0] : ch[i - 1], ch[i], static_cast<std::int64_t>(i) < c.temporal_levels()));
  conv_out = register_module("conv_out", conv3x3(ch.back(), c.latent_channels));
}

torch::Tensor TemporalEncoderImpl::forward(const torch::Tensor& video) {
  // video [N, T, 3, H, W]
  auto h = torch::relu(per_frame(conv_in, video));
  for (auto& block : *down_blocks) h = block->as<TemporalDownBlock>()->forward(h);
  return per_frame(conv_out, h);  // [N, T/r_t, latent, H/2^n, W/2^n]
}

TemporalDecoderImpl::TemporalDecoderImpl(const TemporalAutoencoderConfig& c) {
  const auto& ch = c.block_out_channels;
  const auto stages = static_cast<std::int64_t>(ch.size());
  conv_in = register_module("conv_in", conv3x3(c.latent_channels, ch.back()));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  // The mirror of the encoder: the last up blocks (full resolution) grow the frames.
  for (std::int64_t i = 0; i < stages; ++i) {
    const auto in = ch[static_cast<std::size_t>(stages - 1 - i)];
    const auto out = ch[static_cast<std::size_t>(std::max<std::int64_t>(stages - 2 - i, 0))];
    up_blocks->push_back(TemporalUpBlock(in, out, i >= stages - c.temporal_levels()));
  }
  conv_out = register_module("conv_out", conv3x3(ch[0], c.in_channels));
}

torch::Tensor TemporalDecoderImpl::forward(const torch::Tensor& latents) {
  // latents [N, t, latent, h, w]
  auto h = torch::relu(per_frame(conv_in, latents));
  for (auto& block : *up_blocks) h = block->as<TemporalUpBlock>()->forward(h);
  return per_frame(conv_out, h);  // [N, t·r_t, 3, h·2^n, w·2^n]
}

// ---- autoencoder -------------------------------------------------------------------------------

TemporalAutoencoderImpl::TemporalAutoencoderImpl(TemporalAutoencoderConfig c) : config(std::move(c)) {
  config.validate();
  encoder = register_module("encoder", TemporalEncoder(config));
  decoder = register_module("decoder", TemporalDecoder(config));
}

namespace {
void check_video(const TemporalAutoencoderConfig& c, const torch::Tensor& video, const char* what) {
  const auto s = c.spatial_compression();
  if (!video.defined() || video.dim() != 5 || video.size(2) != c.in_channels)
    throw Error(fmt::format("temporal autoencoder: {} must be [N, T, {}, H, W], got {}", what, c.in_channels,
                            video.defined() ? fmt::format("{}", video.sizes()) : "no tensor"));
  if (video.size(1) < 1 || video.size(1) % c.temporal_compression != 0 || video.size(3) % s != 0 || video.size(4) % s != 0)
    throw Error(fmt::format("temporal autoencoder: {} {} needs a frame count that is a multiple of {} and a height and width that are "
                            "multiples of {}",
                            what, video.sizes(), c.temporal_compression, s));
}
void check_latents(const TemporalAutoencoderConfig& c, const torch::Tensor& z) {
  if (!z.defined() || z.dim() != 5 || z.size(2) != c.latent_channels || z.size(1) < 1)
    throw Error(fmt::format("temporal autoencoder: latents must be [N, t, {}, h, w], got {}", c.latent_channels,
                            z.defined() ? fmt::format("{}", z.sizes()) : "no tensor"));
}
}  // namespace

torch::Tensor TemporalAutoencoderImpl::encode(const torch::Tensor& video) {
  check_video(config, video, "video");
  return (encoder(video) - config.shift_factor) * config.scaling_factor;
}

torch::Tensor TemporalAutoencoderImpl::decode(const torch::Tensor& latents) {
  check_latents(config, latents);
  return decoder(latents / config.scaling_factor + config.shift_factor);
}

torch::Tensor TemporalAutoencoderImpl::forward(const torch::Tensor& video, torch::Tensor* latents_out) {
  check_video(config, video, "video");
  auto z = encoder(video);
  if (latents_out) *latents_out = z;
  return decoder(z);
}

std::int64_t TemporalAutoencoderImpl::decoder_history() const {
  // A memory block at r frames per latent frame reaches 1/r latent frames back; reaches add up.
  double reach = 0, rate = 1;
  for (const auto& block : *decoder->up_blocks) {
    reach += 1.0 / rate;
    if (block->as<TemporalUpBlock>()->grow) rate *= 2;
  }
  return static_cast<std::int64_t>(std::ceil(reach - 1e-9));
}

std::int64_t TemporalAutoencoderImpl::encoder_history_frames() const {
  std::int64_t reach = 0, rate = 1;
  for (const auto& block : *encoder->down_blocks) {
    if (block->as<TemporalDownBlock>()->pool) rate *= 2;
    reach += rate;  // one frame back at this rate is `rate` RGB frames
  }
  const auto r = config.temporal_compression;
  return (reach + r - 1) / r * r;  // whole latent groups, so chunks stay aligned
}

// ---- chunked streaming -------------------------------------------------------------------------

ChunkDecoder::ChunkDecoder(TemporalAutoencoder tae, std::int64_t overlap)
    : tae_(std::move(tae)), overlap_(overlap < 0 ? tae_->decoder_history() : overlap) {}

torch::Tensor ChunkDecoder::decode(const torch::Tensor& latents) {
  if (!latents.defined() || latents.dim() != 4)
    throw Error(fmt::format("ChunkDecoder: latents must be [t, C, h, w], got {}", latents.defined() ? fmt::format("{}", latents.sizes()) : "no tensor"));
  torch::NoGradGuard no_grad;
  const auto kept = history_.defined() ? history_.size(0) : 0;
  const auto input = with_history(history_, latents);
  const auto frames = tae_->decode(input.unsqueeze(0))[0];
  history_ = last_frames(input, overlap_);
  return frames.narrow(0, kept * tae_->config.temporal_compression, latents.size(0) * tae_->config.temporal_compression);
}

ChunkEncoder::ChunkEncoder(TemporalAutoencoder tae, std::int64_t overlap_frames)
    : tae_(std::move(tae)), overlap_frames_(overlap_frames < 0 ? tae_->encoder_history_frames() : overlap_frames) {
  const auto r = tae_->config.temporal_compression;
  if (overlap_frames_ % r != 0)
    throw Error(fmt::format("ChunkEncoder: an overlap of {} frames is not a multiple of the temporal compression {}", overlap_frames_, r));
}

torch::Tensor ChunkEncoder::encode(const torch::Tensor& frames) {
  if (!frames.defined() || frames.dim() != 4)
    throw Error(fmt::format("ChunkEncoder: frames must be [T, 3, H, W], got {}", frames.defined() ? fmt::format("{}", frames.sizes()) : "no tensor"));
  torch::NoGradGuard no_grad;
  const auto kept = history_.defined() ? history_.size(0) : 0;
  const auto input = with_history(history_, frames);
  const auto latents = tae_->encode(input.unsqueeze(0))[0];
  history_ = last_frames(input, overlap_frames_);
  const auto skip = kept / tae_->config.temporal_compression;
  return latents.narrow(0, skip, latents.size(0) - skip);
}

// ---- folders -----------------------------------------------------------------------------------

bool is_temporal_autoencoder_folder(const std::filesystem::path& folder) { return folder_class_name(folder) == "TemporalAutoencoder"; }

TemporalAutoencoder load_temporal_autoencoder(const std::filesystem::path& folder, const ComputeOptions& compute) {
  return load_model_folder<TemporalAutoencoder>(folder, compute);
}

void save_temporal_autoencoder(TemporalAutoencoder& model, const std::filesystem::path& folder, torch::ScalarType dtype,
                               const std::map<std::string, std::string>& metadata) {
  save_model_folder(*model, model->config.to_json(), folder, dtype, metadata);
}

}  // namespace streamgen
