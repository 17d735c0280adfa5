#pragma once
// The temporal autoencoder (TAE) StreamDiT's latent models stream through
// (docs/streamdit.md §10, §15): 2^n× spatial and r_t× temporal compression (8× and 4×
// with the defaults) into `latent_channels` channels, in the spirit of TAEHV — per-frame 2D
// convolutions, causal memory blocks that also see the previous frame's features, temporal
// pooling (consecutive frames folded into channels, then a 1×1 conv) in the encoder and its
// inverse in the decoder. Causal in time: latent frame j depends on RGB frames < (j + 1)·r_t only,
// and RGB frames of latent frame j on latent frames ≤ j, which is what lets a stream decode chunk by
// chunk (ChunkDecoder) exactly as if the whole video were decoded at once.
//
// Parameter names (the checkpoints this project writes; no public checkpoint exists):
//   encoder.conv_in, encoder.down_blocks.N.{conv, pool, memory.conv.{0,2,4}}, encoder.conv_out,
//   decoder.conv_in, decoder.up_blocks.N.{memory.conv.{0,2,4}, grow, conv}, decoder.conv_out.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/device.h"

namespace streamgen {

struct TemporalAutoencoderConfig {
  std::int64_t in_channels = 3;
  std::int64_t latent_channels = 8;
  // One entry per 2× spatial stage (encoder order): 3 stages = 8× spatial compression.
  std::vector<std::int64_t> block_out_channels{32, 48, 64};
  // RGB frames per latent frame r_t: a power of two, at most 2^stages (one 2× pool per stage).
  std::int64_t temporal_compression = 4;
  // The DiT sees (raw − shift_factor)·scaling_factor, measured after training so that latents
  // have zero mean and unit variance (the role of diffusers' VAE scaling/shift factors).
  double scaling_factor = 1.0;
  double shift_factor = 0.0;

  std::int64_t spatial_compression() const { return std::int64_t{1} << block_out_channels.size(); }
  std::int64_t temporal_levels() const;  // log2(temporal_compression)
  void validate(const std::string& source = "temporal autoencoder config") const;
  static TemporalAutoencoderConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  nlohmann::json to_json() const;
};

// Residual block over the frames of a clip whose first conv also sees the previous frame's input
// (zeros before the first frame): the only path along which time flows, and a causal one.
struct TemporalMemoryBlockImpl : torch::nn::Module {
  explicit TemporalMemoryBlockImpl(std::int64_t channels);
  // x [N, T, C, H, W] -> [N, T, C, H, W]
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential conv{nullptr};
};
TORCH_MODULE(TemporalMemoryBlock);

struct TemporalDownBlockImpl : torch::nn::Module {
  TemporalDownBlockImpl(std::int64_t in, std::int64_t out, bool temporal);
  // x [N, T, in, H, W] -> [N, T/2 if temporal else T, out, H/2, W/2]
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Conv2d pool{nullptr};  // only when temporal: 2 frames' channels -> 1 frame
  TemporalMemoryBlock memory{nullptr};
};
TORCH_MODULE(TemporalDownBlock);

struct TemporalUpBlockImpl : torch::nn::Module {
  TemporalUpBlockImpl(std::int64_t in, std::int64_t out, bool temporal);
  // x [N, T, in, H, W] -> [N, 2T if temporal else T, out, 2H, 2W]
  torch::Tensor forward(const torch::Tensor& x);
  TemporalMemoryBlock memory{nullptr};
  torch::nn::Conv2d grow{nullptr};  // only when temporal: 1 frame -> 2 frames' channels
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(TemporalUpBlock);

struct TemporalEncoderImpl : torch::nn::Module {
  explicit TemporalEncoderImpl(const TemporalAutoencoderConfig& c);
  // video [N, T, 3, H, W] in [-1, 1] -> raw latents [N, T/r_t, latent, H/2^n, W/2^n]
  torch::Tensor forward(const torch::Tensor& video);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
};
TORCH_MODULE(TemporalEncoder);

struct TemporalDecoderImpl : torch::nn::Module {
  explicit TemporalDecoderImpl(const TemporalAutoencoderConfig& c);
  // raw latents [N, t, latent, h, w] -> video [N, t·r_t, 3, h·2^n, w·2^n] in about [-1, 1]
  torch::Tensor forward(const torch::Tensor& latents);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
};
TORCH_MODULE(TemporalDecoder);

struct TemporalAutoencoderImpl : torch::nn::Module {
  explicit TemporalAutoencoderImpl(TemporalAutoencoderConfig config);
  // video [N, T, 3, H, W] (T a multiple of r_t; H, W multiples of 2^n) -> scaled latents
  // [N, T/r_t, latent, H/2^n, W/2^n]. Shapes are checked with errors that name the tensor.
  torch::Tensor encode(const torch::Tensor& video);
  // scaled latents [N, t, latent, h, w] -> video [N, t·r_t, 3, h·2^n, w·2^n]
  torch::Tensor decode(const torch::Tensor& latents);
  // Unscaled reconstruction (training): video -> raw latents -> video; `latents_out` receives the
  // raw latents when given.
  torch::Tensor forward(const torch::Tensor& video, torch::Tensor* latents_out = nullptr);
  // Latent frames of history the decoder reads before a latent frame (the memory blocks' reach):
  // decoding a chunk with this many previous latent frames prepended equals decoding the whole
  // sequence. The encoder's reach, in RGB frames, likewise.
  std::int64_t decoder_history() const;
  std::int64_t encoder_history_frames() const;

  TemporalAutoencoderConfig config;
  TemporalEncoder encoder{nullptr};
  TemporalDecoder decoder{nullptr};
};
TORCH_MODULE(TemporalAutoencoder);

// Decodes a stream of latent chunks with the tail of the previous chunk prepended (spec §10) and
// keeps only the new chunk's frames, so that chunk boundaries show no seam.
class ChunkDecoder {
 public:
  // overlap: latent frames of history prepended (-1: the decoder's whole reach, which makes the
  // output equal to decoding the whole stream at once).
  explicit ChunkDecoder(TemporalAutoencoder tae, std::int64_t overlap = -1);
  // latents [t, latent, h, w] (scaled, the DiT's space) -> frames [t·r_t, 3, H, W]
  torch::Tensor decode(const torch::Tensor& latents);
  void reset() { history_ = torch::Tensor(); }
  std::int64_t overlap() const { return overlap_; }

 private:
  TemporalAutoencoder tae_;
  std::int64_t overlap_;
  torch::Tensor history_;  // [≤ overlap, latent, h, w]
};

// The same for encoding a live input video: chunks of RGB frames (multiples of r_t) with the
// encoder's reach of previous frames prepended.
class ChunkEncoder {
 public:
  explicit ChunkEncoder(TemporalAutoencoder tae, std::int64_t overlap_frames = -1);
  // frames [T, 3, H, W] (T a multiple of r_t) -> scaled latents [T/r_t, latent, h, w]
  torch::Tensor encode(const torch::Tensor& frames);
  void reset() { history_ = torch::Tensor(); }

 private:
  TemporalAutoencoder tae_;
  std::int64_t overlap_frames_;
  torch::Tensor history_;
};

// True when `folder` holds a config.json whose _class_name is TemporalAutoencoder.
bool is_temporal_autoencoder_folder(const std::filesystem::path& folder);
// A model folder: config.json + model.safetensors.
TemporalAutoencoder load_temporal_autoencoder(const std::filesystem::path& folder, const ComputeOptions& compute = {});
void save_temporal_autoencoder(TemporalAutoencoder& model, const std::filesystem::path& folder, torch::ScalarType dtype = torch::kFloat32,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
