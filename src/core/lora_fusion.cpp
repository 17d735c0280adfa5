// Resolving LoRA modules against a model's own weight names, and fusing them in place.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "streamgen/error.h"
#include "streamgen/lora.h"
#include "streamgen/safetensors_format.h"
#include "streamgen/single_file.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {
namespace {

std::string mangle(const std::string& path) {
  auto m = path;
  std::replace(m.begin(), m.end(), '.', '_');
  return m;
}

// The weight's own memory seen as one [out, rest] matrix, so that a fused update is one in-place
// addmm: row-major weights as they are, channels-last conv kernels through their [out, kh, kw, in]
// order. Undefined when the weight is laid out neither way.
torch::Tensor matrix_view(const torch::Tensor& w) {
  if (w.is_contiguous()) return w.view({w.size(0), -1});
  if (w.dim() == 4 && w.is_contiguous(torch::MemoryFormat::ChannelsLast)) return w.permute({0, 2, 3, 1}).view({w.size(0), -1});
  return {};
}

// `down` [r, in(, kh, kw)] as the [r, rest] matrix whose columns follow `w`'s memory order.
torch::Tensor down_matrix(const torch::Tensor& down, const torch::Tensor& w) {
  const bool channels_last = !w.is_contiguous() && w.dim() == 4 && down.dim() == 4;
  return (channels_last ? down.permute({0, 2, 3, 1}) : down).reshape({down.size(0), -1}).contiguous();
}

// The architecture a cross-attention key/value input width belongs to, for hints.
const char* family_of_context_width(std::int64_t width) {
  switch (width) {
    case 768: return "SD1.x";
    case 1024: return "SD2.x / SD-Turbo";
    case 2048: return "SDXL / SDXL-Turbo";
    default: return nullptr;
  }
}

// The weight as loaded, kept for rescaling: in float16 when that holds a float32 weight exactly (it does
// for the float16 checkpoints most users have), which halves what is kept; else a copy in its own dtype.
torch::Tensor loaded_copy(const torch::Tensor& w) {
  if (w.scalar_type() == torch::kFloat32) {
    auto half = w.to(torch::kFloat16);
    if (torch::equal(half.to(torch::kFloat32), w)) return half;
  }
  return w.clone();
}

struct TargetIndex {
  std::map<std::string, torch::Tensor> by_path;     // module path -> its weight
  std::map<std::string, std::string> by_mangled;  // kohya form -> module path
};

// kohya's SDXL LoRAs (sd-scripts trains SDXL on the original UNet) name UNet layers in the original (LDM / SGM)
// layout: lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q is down_blocks.1.attentions.0.transformer_blocks.0
// .attn1.to_q. The single-file loader's renames say which original block each diffusers block is.
void add_original_unet_names(TargetIndex& index, const UNet2DConditionConfig& c) {
  const nlohmann::json layout{{"down_block_types", c.down_block_types}, {"up_block_types", c.up_block_types}, {"layers_per_block", c.layers_per_block}};
  const std::string prefix = "model.diffusion_model.";
  const auto renames = ldm_unet_renames(layout);
  for (const auto& [path, _] : index.by_path) {
    const auto dotted = path + ".";
    const KeyRename* best = nullptr;
    for (const auto& r : renames)
      if (dotted.starts_with(r.to) && (!best || r.to.size() > best->to.size())) best = &r;
    if (!best || !best->from.starts_with(prefix)) continue;
    auto original = best->from.substr(prefix.size()) + dotted.substr(best->to.size());
    original.pop_back();
    index.by_mangled.emplace(mangle(original), path);
  }
}

TargetIndex index_target(torch::nn::Module& module) {
  TargetIndex index;
  for (const auto& item : module.named_parameters(true)) {
    const auto& name = item.key();
    if (!name.ends_with(".weight") || name.size() == 7) continue;
    const auto path = name.substr(0, name.size() - 7);
    index.by_path.emplace(path, item.value());
    index.by_mangled.emplace(mangle(path), path);
  }
  if (const auto* unet = dynamic_cast<const UNet2DConditionModelImpl*>(&module)) add_original_unet_names(index, unet->config);
  return index;
}

}  // namespace

// A rescalable LoRA of at least this rank keeps its update up @ down dense on a CPU. A scale change then
// streams the loaded weight, the update and the result through memory (12 bytes per float32 weight)
// instead of recomputing the product (2 r flops per weight): on the 2-core AVX2 EPYC the product ran at
// 172 GFLOP/s and the stream at 20.8 GB/s, even at r = 52; at LCM-LoRA's r = 64 the dense path is 1.3x
// and at r = 128 2.6x faster (bench lora: a full SD1.5 UNet's rank-128 change 3.3 s -> under 1 s), for
// one more copy of the adapted weights. On CUDA the product takes milliseconds: never kept dense.
constexpr std::int64_t kDenseUpdateMinRank = 64;

struct LoraFusion::Weight {
  std::string name;      // target.path
  torch::Tensor param;   // the model's weight, changed in place
  torch::Tensor base;    // the weight as loaded, when the scales may change later
  struct Term {
    std::size_t lora;
    torch::Tensor up, down;  // float32 [out, r], [r, rest] in the weight's memory order, on its device
    double factor;           // alpha / r
    torch::Tensor dense;     // factor * up @ down laid out as the weight, float32 (see kDenseUpdateMinRank)
  };
  std::vector<Term> terms;

  // W = W0 + sum_i s_i * (alpha_i / r_i) * up_i @ down_i, in float32 whatever the weight's dtype, from the
  // weight as loaded: the same arithmetic at load and on every later change, so a scale change gives the
  // weights a fresh load at that scale would (bit for bit), however often a slider moves. Float32 weights
  // are updated in place, with no temporary.
  void fuse(const std::vector<double>& scales) {
    const bool in_place = param.scalar_type() == torch::kFloat32;
    auto acc = in_place ? param : (base.defined() ? base : param).to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
    bool holds_loaded = !in_place || !base.defined();  // acc already holds the weight as loaded
    for (const auto& t : terms) {
      const double s = scales[t.lora];
      if (!holds_loaded) {
        holds_loaded = true;
        if (t.dense.defined()) {  // one pass: W = W0 + s * update
          torch::add_out(acc, base, t.dense, s);
          continue;
        }
        acc.copy_(base);
      }
      if (s == 0) continue;
      if (t.dense.defined()) acc.add_(t.dense, s);
      else matrix_view(acc).addmm_(t.up, t.down, 1.0, s * t.factor);
    }
    if (!in_place) param.copy_(acc);
  }
};

LoraFusion::LoraFusion(std::vector<LoraSpec> loras, const std::vector<LoraTarget>& targets, LoraRescale rescale)
    : loras_(std::move(loras)), rescalable_(rescale == LoraRescale::Exact) {
  torch::NoGradGuard no_grad;
  std::map<std::string, TargetIndex> indices;
  for (const auto& t : targets)
    if (t.module) indices.emplace(t.name, index_target(*t.module));
  std::map<std::string, std::unique_ptr<Weight>> by_name;
  std::vector<std::string> problems;
  std::set<std::string> hints;
  std::vector<std::string> skipped;
  std::set<std::string> adapted;
  for (std::size_t li = 0; li < loras_.size(); ++li) {
    const auto file = LoraFile::read(loras_[li].file);
    const auto where = printable(loras_[li].file.filename().string());
    std::map<std::string, int> not_loaded, foreign;
    for (const auto& m : file.modules) {
      const auto target = std::find_if(targets.begin(), targets.end(), [&](const LoraTarget& t) { return t.name == m.target; });
      if (target == targets.end()) {
        ++foreign[m.target];
        continue;
      }
      if (!target->module) {
        ++not_loaded[m.target];
        continue;
      }
      const auto& index = indices.at(m.target);
      std::string path = m.path;
      if (m.mangled) {
        const auto it = index.by_mangled.find(m.path);
        path = it == index.by_mangled.end() ? "" : it->second;
      }
      const auto w = path.empty() ? index.by_path.end() : index.by_path.find(path);
      if (w == index.by_path.end()) {
        problems.push_back(where + ": " + printable(m.key) + " matches no layer of the " + m.target);
        if (m.path.find("input_blocks") != std::string::npos || m.path.find("middle_block") != std::string::npos ||
            m.path.find("output_blocks") != std::string::npos)
          hints.insert("keys with input_blocks / middle_block / output_blocks name the original (LDM/SGM) layout's blocks, as kohya "
                       "writes SDXL LoRAs; a block this UNet lacks means a LoRA for another model family (SDXL has 3 levels and "
                       "up to 10 transformer blocks per attention, SD1.x/SD2.x 4 levels and 1)");
        continue;
      }
      const auto& param = w->second;
      const auto out = param.size(0);
      const auto rest = param.numel() / std::max<std::int64_t>(out, 1);
      const auto lora_rest = m.down.numel() / m.rank();
      const bool kernels_differ = param.dim() == 4 && m.down.dim() == 4 && (m.down.size(2) != param.size(2) || m.down.size(3) != param.size(3));
      if (m.up.size(0) != out || lora_rest != rest || kernels_differ) {
        auto lora_shape = m.down.sizes().vec();
        lora_shape[0] = m.up.size(0);
        problems.push_back(where + ": " + printable(m.key) + " makes a " + safetensors::shape_string(lora_shape) + " update (up " + safetensors::shape_string(m.up.sizes().vec()) +
                           " @ down " + safetensors::shape_string(m.down.sizes().vec()) + "), but " + m.target + " weight '" + path + ".weight' is " +
                           safetensors::shape_string(param.sizes().vec()));
        if (path.find("attn2.to_k") != std::string::npos || path.find("attn2.to_v") != std::string::npos) {
          const char* lora_family = family_of_context_width(m.down.size(1));
          const char* model_family = family_of_context_width(param.size(1));
          if (lora_family && model_family && lora_family != model_family)
            hints.insert(fmt::format("the LoRA's cross-attention reads {}-wide text embeddings ({}), this model's {} ({}): a LoRA made for "
                                     "another model family",
                                     m.down.size(1), lora_family, param.size(1), model_family));
        }
        continue;
      }
      const auto name = m.target + "." + path;
      auto& weight = by_name[name];
      if (!weight) weight = std::make_unique<Weight>(Weight{name, param, {}, {}});
      const auto device = param.device();
      weight->terms.push_back({li, m.up.reshape({out, m.rank()}).to(device), down_matrix(m.down, param).to(device),
                               m.alpha / static_cast<double>(m.rank()), {}});
      adapted.insert(m.target);
    }
    for (const auto& [target, n] : foreign) {
      problems.push_back(fmt::format("{}: {} module(s) for a '{}', which this pipeline does not have", where, n, target));
      if (target == "text_encoder_2") hints.insert("text_encoder_2 is SDXL's second text encoder (kohya: lora_te2_): a LoRA made for SDXL");
    }
    for (const auto& [target, n] : not_loaded) skipped.push_back(fmt::format("{}: {} {} module(s) not used (this command does not load the {})", where, n, target, target));
    summaries_.push_back(fmt::format("{} ({})", printable(loras_[li].file.string()), file.summary()));
  }
  if (!problems.empty()) {
    std::string hint_text;
    for (const auto& h : hints) hint_text += "\n  hint: " + h;
    throw Error(fmt::format("LoRA: {} problem(s); nothing was fused:{}{}", problems.size(), indented_lines(problems), hint_text));
  }
  for (const auto& s : skipped) spdlog::info("LoRA {}", s);
  adapted_targets_.assign(adapted.begin(), adapted.end());
  for (auto& [name, w] : by_name) {
    if (!matrix_view(w->param).defined())
      throw Error("LoRA: weight '" + name + "' is laid out neither row-major nor channels-last; it cannot be fused in place");
    if (rescalable_) {
      w->base = loaded_copy(w->param);
      for (auto& t : w->terms)
        if (w->param.device().is_cpu() && t.down.size(0) >= kDenseUpdateMinRank) {
          t.dense = torch::empty_like(w->param, w->param.options().dtype(torch::kFloat32));
          matrix_view(t.dense).addmm_(t.up, t.down, 0.0, t.factor);  // beta 0: the uninitialised memory is not read
        }
    }
    weights_.push_back(std::move(w));
  }
  fuse();
}

LoraFusion::~LoraFusion() = default;

std::vector<double> LoraFusion::scales() const {
  std::vector<double> s;
  for (const auto& l : loras_) s.push_back(l.scale);
  return s;
}

void LoraFusion::fuse() {
  torch::NoGradGuard no_grad;
  const auto s = scales();
  for (auto& w : weights_) w->fuse(s);
}

void LoraFusion::set_scales(const std::vector<double>& scales) {
  if (scales.size() != loras_.size())
    throw Error(fmt::format("LoRA scales: {} given, {} LoRA(s) loaded", scales.size(), loras_.size()));
  for (const auto s : scales)
    if (!std::isfinite(s)) throw Error("LoRA scales must be finite numbers");
  if (!rescalable_ && scales != this->scales())
    throw Error("LoRA scales are fixed for this model: it was loaded without keeping its weights as loaded (LoraRescale::Exact)");
  for (std::size_t i = 0; i < scales.size(); ++i) loras_[i].scale = scales[i];
  fuse();
}

void LoraFusion::set_scale(std::size_t lora, double scale) {
  if (lora >= loras_.size()) throw Error(fmt::format("LoRA {} does not exist ({} loaded)", lora, loras_.size()));
  auto s = scales();
  s[lora] = scale;
  set_scales(s);
}

bool LoraFusion::adapts(const std::string& target) const {
  return std::find(adapted_targets_.begin(), adapted_targets_.end(), target) != adapted_targets_.end();
}

std::size_t LoraFusion::fused_weights() const { return weights_.size(); }

std::int64_t LoraFusion::kept_bytes() const {
  std::int64_t n = 0;
  for (const auto& w : weights_) {
    if (w->base.defined()) n += w->base.numel() * static_cast<std::int64_t>(w->base.element_size());
    for (const auto& t : w->terms) n += (t.up.numel() + t.down.numel() + (t.dense.defined() ? t.dense.numel() : 0)) * 4;
  }
  return n;
}

std::vector<std::string> LoraFusion::describe() const {
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < loras_.size(); ++i) lines.push_back(fmt::format("{} at scale {:g}", summaries_[i], loras_[i].scale));
  return lines;
}

std::shared_ptr<LoraFusion> fuse_loras(const std::vector<LoraSpec>& loras, const std::vector<LoraTarget>& targets, LoraRescale rescale) {
  if (loras.empty()) return nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  auto fusion = std::make_shared<LoraFusion>(loras, targets, rescale);
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& line : fusion->describe()) spdlog::info("LoRA {}", line);
  spdlog::info("LoRA: {} weights fused in {:.0f} ms{}", fusion->fused_weights(), ms,
               fusion->rescalable() ? fmt::format("; {:.1f} MiB kept for scale changes", static_cast<double>(fusion->kept_bytes()) / (1 << 20)) : "");
  return fusion;
}

}  // namespace streamgen
