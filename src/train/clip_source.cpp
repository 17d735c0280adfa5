#include "streamgen/clip_source.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>

#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/progress.h"
#include "streamgen/caption_encoder.h"

namespace streamgen {

ClipBatch ProceduralClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  ClipBatch out;
  std::vector<torch::Tensor> videos;
  for (std::int64_t i = 0; i < batch; ++i) {
    auto clip = make_procedural_clip(options_, frames_, rng);
    videos.push_back(clip.frames);
    out.captions.push_back(std::move(clip.caption));
  }
  out.video = torch::stack(videos);
  return out;
}

std::string ProceduralClipSource::describe() const {
  return fmt::format("procedural shapes, {} frames of {}x{}, {}–{} objects{}", frames_, options_.width, options_.height, options_.min_objects,
                     options_.max_objects, options_.edges == EdgeRule::Wrap ? " (objects wrap round the edges)" : "");
}

AnchoredClipSource::AnchoredClipSource(std::unique_ptr<ClipSource> longer, std::int64_t frames, std::int64_t lead, std::int64_t group)
    : longer_(std::move(longer)), frames_(frames), lead_(lead), group_(group) {
  if (!longer_) throw Error("AnchoredClipSource needs a clip source");
  if (frames < 1 || group < 1 || lead < 0 || lead % group != 0 || group > frames)
    throw Error(fmt::format("anchored clips: lead {} must be a multiple of the anchor group {} (<= {} frames)", lead, group, frames));
}

ClipBatch AnchoredClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  auto clips = longer_->next(batch, rng);
  const auto total = clips.video.size(1);
  if (total != frames_ + lead_)
    throw Error(fmt::format("anchored clips: the source made clips of {} frames, expected {} + {} lead", total, frames_, lead_));
  const auto positions = lead_ / group_ + 1;
  std::vector<torch::Tensor> anchors;
  for (std::int64_t i = 0; i < batch; ++i) {
    const auto k = std::min(positions - 1, static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(positions)));
    anchors.push_back(clips.video[i].narrow(0, k * group_, group_));
  }
  clips.anchor = torch::stack(anchors);
  clips.video = clips.video.narrow(1, lead_, frames_).contiguous();
  return clips;
}

std::string AnchoredClipSource::describe() const {
  return fmt::format("{}; the last {} frames of each, with an anchor from up to {} frames before them", longer_->describe(), frames_, lead_);
}

namespace {
bool is_video_file(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* known : {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".gif"})
    if (ext == known) return true;
  return false;
}

std::string caption_for(const std::filesystem::path& video) {
  auto side = video;
  side.replace_extension(".txt");
  std::ifstream in(side);
  if (in) {
    std::string text((std::istreambuf_iterator<char>(in)), {});
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    if (!text.empty()) return text;
  }
  auto stem = video.stem().string();
  std::replace(stem.begin(), stem.end(), '_', ' ');
  std::replace(stem.begin(), stem.end(), '-', ' ');
  return stem;
}
}  // namespace

VideoFolderClipSource::VideoFolderClipSource(const std::filesystem::path& folder, std::int64_t frames, std::int64_t width, std::int64_t height)
    : folder_(folder), frames_(frames) {
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) throw Error("training data '" + folder.string() + "' is not a folder of videos");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec))
    if (entry.is_regular_file() && is_video_file(entry.path())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error("training data '" + folder.string() + "' holds no video files (.mp4 .mkv .mov .avi .webm .m4v .gif)");
  ProgressBar bar("decode videos", static_cast<std::int64_t>(files.size()), "file");
  for (const auto& file : files) {
    auto source = open_source(file.string());
    std::vector<torch::Tensor> decoded;
    while (auto frame = source->next()) decoded.push_back(fit_image(frame->rgb.unsqueeze(0), width, height, Fit::Crop)[0]);
    bar.advance();
    if (static_cast<std::int64_t>(decoded.size()) < frames) {
      spdlog::warn("'{}' has {} frames, fewer than the {} a clip needs; skipped", file.string(), decoded.size(), frames);
      continue;
    }
    videos_.push_back({torch::stack(decoded), caption_for(file)});
  }
  bar.finish();
  if (videos_.empty()) throw Error(fmt::format("no video in '{}' has the {} frames a training clip needs", folder.string(), frames));
}

ClipBatch VideoFolderClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  ClipBatch out;
  std::vector<torch::Tensor> clips;
  for (std::int64_t i = 0; i < batch; ++i) {
    const auto& v = videos_[std::min(videos_.size() - 1, static_cast<std::size_t>(uniform01(rng) * static_cast<double>(videos_.size())))];
    const auto starts = v.frames.size(0) - frames_ + 1;
    const auto start = std::min(starts - 1, static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(starts)));
    clips.push_back(image_u8_to_unit_range(v.frames.narrow(0, start, frames_)));
    out.captions.push_back(v.caption);
  }
  out.video = torch::stack(clips);
  return out;
}

std::vector<std::string> VideoFolderClipSource::caption_words() const {
  std::set<std::string> words;
  for (const auto& v : videos_)
    for (auto& w : split_caption_words(v.caption)) words.insert(std::move(w));
  return {words.begin(), words.end()};
}

std::int64_t VideoFolderClipSource::longest_caption() const {
  std::size_t longest = 0;
  for (const auto& v : videos_) longest = std::max(longest, split_caption_words(v.caption).size());
  return static_cast<std::int64_t>(longest);
}

std::string VideoFolderClipSource::describe() const {
  return fmt::format("{} videos from '{}', clips of {} frames", videos_.size(), folder_.string(), frames_);
}

}  // namespace streamgen
