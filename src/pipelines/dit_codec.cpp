#include "streamgen/dit_codec.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/procedural_video.h"

namespace streamgen {

TemporalAutoencoder load_dit_autoencoder(const std::filesystem::path& model_folder, const ComputeOptions& compute) {
  const auto folder = model_folder / kDiTAutoencoderFolder;
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) return TemporalAutoencoder(nullptr);
  if (!is_temporal_autoencoder_folder(folder))
    throw Error(fmt::format("'{}' should hold the model's temporal autoencoder (config.json with _class_name TemporalAutoencoder)", folder.string()));
  return load_temporal_autoencoder(folder, compute);
}

void attach_dit_autoencoder(const std::filesystem::path& autoencoder_folder, const std::filesystem::path& model_folder) {
  namespace fs = std::filesystem;
  if (!is_temporal_autoencoder_folder(autoencoder_folder))
    throw Error(fmt::format("'{}' is not a temporal autoencoder folder (config.json with _class_name TemporalAutoencoder)", autoencoder_folder.string()));
  const auto target = model_folder / kDiTAutoencoderFolder;
  std::error_code ec;
  if (fs::equivalent(autoencoder_folder, target, ec)) return;
  fs::create_directories(target, ec);
  if (ec) throw Error("cannot create '" + target.string() + "': " + ec.message());
  for (const char* name : {"config.json", "model.safetensors"}) {
    fs::copy_file(autoencoder_folder / name, target / name, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(fmt::format("cannot copy '{}' to '{}': {}", (autoencoder_folder / name).string(), target.string(), ec.message()));
  }
}

DiTVideoCodec::DiTVideoCodec(TemporalAutoencoder tae, std::int64_t decode_overlap) : tae_(std::move(tae)), decode_overlap_(decode_overlap) {
  if (tae_) reset();
}

std::int64_t DiTVideoCodec::frames_per_latent() const { return tae_ ? tae_->config.temporal_compression : 1; }
std::int64_t DiTVideoCodec::spatial_factor() const { return tae_ ? tae_->config.spatial_compression() : 1; }

void DiTVideoCodec::reset() {
  if (!tae_) return;
  decoder_.emplace(tae_, decode_overlap_);
  encoder_.emplace(tae_);
}

torch::Tensor DiTVideoCodec::decode(const torch::Tensor& chunk) {
  if (!tae_) return chunk.detach().to(torch::kCPU, torch::kFloat32);
  const auto p = tae_->parameters().front();
  return decoder_->decode(chunk.detach().to(p.device(), p.scalar_type())).to(torch::kCPU, torch::kFloat32);
}

torch::Tensor DiTVideoCodec::encode(const torch::Tensor& frames) {
  if (!tae_) return frames;
  const auto p = tae_->parameters().front();
  return encoder_->encode(frames.to(p.device(), p.scalar_type()));
}

LatentClipSource::LatentClipSource(std::unique_ptr<ClipSource> pixels, TemporalAutoencoder tae, bool bf16)
    : pixels_(std::move(pixels)), tae_(std::move(tae)), bf16_(bf16) {
  if (!pixels_ || !tae_) throw Error("LatentClipSource needs a clip source and an autoencoder");
  tae_->eval();
  for (auto& p : tae_->parameters()) p.set_requires_grad(false);
}

ClipBatch LatentClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  auto clips = pixels_->next(batch, rng);
  torch::NoGradGuard no_grad;
  const ScopedCpuAutocast autocast(bf16_);
  const auto p = tae_->parameters().front();
  clips.video = tae_->encode(clips.video.to(p.device(), p.scalar_type())).to(torch::kCPU, torch::kFloat32);
  if (clips.anchor.defined()) {
    if (clips.anchor.size(1) != tae_->config.temporal_compression)
      throw Error(fmt::format("latent clips: an anchor of {} frames does not make one latent frame ({} do)", clips.anchor.size(1),
                              tae_->config.temporal_compression));
    clips.anchor = tae_->encode(clips.anchor.to(p.device(), p.scalar_type())).to(torch::kCPU, torch::kFloat32);
  }
  return clips;
}

std::string LatentClipSource::describe() const {
  return fmt::format("{}, encoded by the temporal autoencoder ({}x time, {}x space, {} channels)", pixels_->describe(),
                     tae_->config.temporal_compression, tae_->config.spatial_compression(), tae_->config.latent_channels);
}

std::unique_ptr<ClipSource> make_dit_clip_source(const StreamDiTConfig& config, const TemporalAutoencoder& tae, const std::string& folder,
                                                 bool bf16, VideoFolderClipSource** videos) {
  const auto s = tae ? tae->config.spatial_compression() : 1, r = tae ? tae->config.temporal_compression : 1;
  const auto width = config.sample_width * s, height = config.sample_height * s, frames = config.max_frames * r;
  const auto lead = config.anchor ? frames : 0;
  std::unique_ptr<ClipSource> pixels;
  if (!folder.empty()) {
    auto folder_source = std::make_unique<VideoFolderClipSource>(folder, frames + lead, width, height);
    if (videos != nullptr) *videos = folder_source.get();
    pixels = std::move(folder_source);
  } else {
    pixels = std::make_unique<ProceduralClipSource>(
        ProceduralVideoOptions::for_frame_size(width, height, config.procedural_edges), frames + lead);
  }
  if (config.anchor) pixels = std::make_unique<AnchoredClipSource>(std::move(pixels), frames, lead, r);
  if (!tae) return pixels;
  return std::make_unique<LatentClipSource>(std::move(pixels), tae, bf16);
}

}  // namespace streamgen
