#pragma once
// Between a StreamDiT sampler's space and RGB video. A pixel-space model streams frames as they are;
// a latent model's folder holds its temporal autoencoder in `autoencoder/` (as a diffusers pipeline
// holds its `vae/`), and its chunks are decoded with the previous chunk's tail prepended (spec §10)
// and its input video encoded likewise (video-to-video). One codec per stream: it remembers that
// stream's history.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "streamgen/clip_source.h"
#include "streamgen/device.h"
#include "streamgen/dit.h"
#include "streamgen/temporal_autoencoder.h"

namespace streamgen {

inline constexpr const char* kDiTAutoencoderFolder = "autoencoder";

// The autoencoder of a StreamDiT folder, or an empty holder for a pixel-space model.
TemporalAutoencoder load_dit_autoencoder(const std::filesystem::path& model_folder, const ComputeOptions& compute = {});

// Copies a temporal autoencoder folder (config.json + model.safetensors) into a StreamDiT
// folder's autoencoder/, which makes it a latent model's folder.
void attach_dit_autoencoder(const std::filesystem::path& autoencoder_folder, const std::filesystem::path& model_folder);

class DiTVideoCodec {
 public:
  DiTVideoCodec() = default;  // pixel space
  // decode_overlap: latent frames of history per decoded chunk (-1: the decoder's whole reach).
  explicit DiTVideoCodec(TemporalAutoencoder tae, std::int64_t decode_overlap = -1);

  bool latent() const { return static_cast<bool>(tae_); }
  std::int64_t frames_per_latent() const;  // r_t (1 in pixel space)
  std::int64_t spatial_factor() const;     // pixels per latent pixel (1 in pixel space)
  // model frames [c, C, h, w] -> RGB frames [c·r_t, 3, h·s, w·s], float32 on the CPU
  torch::Tensor decode(const torch::Tensor& chunk);
  // RGB frames [c·r_t, 3, H, W] in [-1, 1] -> model frames [c, C, H/s, W/s] on the autoencoder's device
  torch::Tensor encode(const torch::Tensor& frames);
  // Forgets the stream's history (a new stream starts).
  void reset();
  const TemporalAutoencoder& autoencoder() const { return tae_; }

 private:
  TemporalAutoencoder tae_{nullptr};
  std::optional<ChunkDecoder> decoder_;
  std::optional<ChunkEncoder> encoder_;
  std::int64_t decode_overlap_ = -1;
};

// Clips in a latent model's space: clips of `pixels` (B·r_t frames at the pixel size) encoded by
// the autoencoder. Lets every DiT trainer, distiller and held-out loss work unchanged on latents.
class LatentClipSource : public ClipSource {
 public:
  // bf16: encode under CPU bf16 autocast (training data; about 4x cheaper, 0.4 % rounding).
  LatentClipSource(std::unique_ptr<ClipSource> pixels, TemporalAutoencoder tae, bool bf16 = false);
  ClipBatch next(std::int64_t batch, std::mt19937_64& rng) override;
  std::string describe() const override;
  ClipSource& pixels() { return *pixels_; }

 private:
  std::unique_ptr<ClipSource> pixels_;
  TemporalAutoencoder tae_;
  bool bf16_;
};

// The training clips of a StreamDiT with this config: the user's video `folder`, or else procedural
// shapes (the config's edge rule), at the model's size — for a latent model (`tae` given), B·r_t
// frames at the pixel size, encoded by it (under bf16 autocast when `bf16`). A model with an anchor
// gets clips one buffer longer, its anchor drawn from them (AnchoredClipSource). `videos`, when
// given, is set to the folder source (its captions make a new model's vocabulary).
std::unique_ptr<ClipSource> make_dit_clip_source(const StreamDiTConfig& config, const TemporalAutoencoder& tae = nullptr,
                                                 const std::string& folder = {}, bool bf16 = false, VideoFolderClipSource** videos = nullptr);

}  // namespace streamgen
