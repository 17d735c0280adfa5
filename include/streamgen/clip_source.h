#pragma once
// Where training clips come from: procedural shapes (infinite, seeded) or the user's own video
// folder. Shared by everything that trains on video (StreamDiT, its distillation, the temporal
// autoencoder).
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "streamgen/procedural_video.h"

namespace streamgen {

struct ClipBatch {
  torch::Tensor video;  // [batch, F, C, H, W], slot 0 oldest
  std::vector<std::string> captions;
  // Only from AnchoredClipSource: [batch, A, C, H, W], frames of the same clip from before (or at)
  // the start of `video`, the A frames one model frame is made of (1 in pixel space, the
  // autoencoder's temporal factor for latents: LatentClipSource encodes them to one frame).
  torch::Tensor anchor;
};

// Where training clips come from. `next` must be a pure function of the engine's state, so that a
// run seeded per step is reproducible and resumable.
class ClipSource {
 public:
  virtual ~ClipSource() = default;
  virtual ClipBatch next(std::int64_t batch, std::mt19937_64& rng) = 0;
  virtual std::string describe() const = 0;
};

class ProceduralClipSource : public ClipSource {
 public:
  ProceduralClipSource(ProceduralVideoOptions options, std::int64_t frames) : options_(options), frames_(frames) {}
  ClipBatch next(std::int64_t batch, std::mt19937_64& rng) override;
  std::string describe() const override;
  const ProceduralVideoOptions& options() const { return options_; }

 private:
  ProceduralVideoOptions options_;
  std::int64_t frames_;
};

// Clips with an anchor (StreamDiTConfig::anchor): `longer` makes clips of frames + lead frames;
// each example's video is the last `frames` of one, its anchor the `group` frames starting at a
// uniformly drawn multiple of `group` in [0, lead] — so the anchor shows the same scene from
// 0 to lead frames before the video starts, as a stream's first frame shows it to every later chunk.
class AnchoredClipSource : public ClipSource {
 public:
  AnchoredClipSource(std::unique_ptr<ClipSource> longer, std::int64_t frames, std::int64_t lead, std::int64_t group);
  ClipBatch next(std::int64_t batch, std::mt19937_64& rng) override;
  std::string describe() const override;

 private:
  std::unique_ptr<ClipSource> longer_;
  std::int64_t frames_, lead_, group_;
};

// Clips cut from the user's own videos: every video file in a folder (any container FFmpeg reads),
// decoded once at start and fitted to the model's frame size; each example is `frames` consecutive
// frames from a random video at a random start. The caption is the text of <name>.txt beside the
// video, or else the file name with '_' and '-' read as spaces.
class VideoFolderClipSource : public ClipSource {
 public:
  VideoFolderClipSource(const std::filesystem::path& folder, std::int64_t frames, std::int64_t width, std::int64_t height);
  ClipBatch next(std::int64_t batch, std::mt19937_64& rng) override;
  std::string describe() const override;
  std::size_t videos() const { return videos_.size(); }
  // Every word of the captions (lower-case, sorted) and the longest caption in words: the
  // vocabulary and token count of a caption encoder trained on this folder.
  std::vector<std::string> caption_words() const;
  std::int64_t longest_caption() const;

 private:
  struct Video {
    torch::Tensor frames;  // uint8 [n, 3, H, W]
    std::string caption;
  };
  std::filesystem::path folder_;
  std::int64_t frames_;
  std::vector<Video> videos_;
};

}  // namespace streamgen
