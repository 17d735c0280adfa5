#pragma once
// LoRA (low-rank adaptation) files, fused into a loaded model's weights: W' = W + s * (alpha / r) * up @ down.
//
// Files users have, all read by one parser:
//   kohya / sd-scripts (civitai LoRAs, latent-consistency/lcm-lora-*): lora_unet_<module path, '.' -> '_'>,
//     lora_te_ / lora_te1_ / lora_te2_ for the text encoders; .lora_down.weight, .lora_up.weight, .alpha
//     (LoCon: 3x3 convs, down/up-samplers);
//   diffusers: unet.<module path>.lora.down.weight / .lora.up.weight (mixed with lora_A / lora_B, as diffusers'
//     training scripts write), text_encoder.<...>.lora_linear_layer.down.weight, and the older attention
//     processor keys (attn1.processor.to_q_lora.down.weight);
//   PEFT: <target>.<module path>.lora_A.weight / .lora_B.weight (alpha = rank unless an .alpha is stored).
// Rank and alpha are read per module. Fusion runs in float32 from the stored values whatever the model's
// dtype, and is strict like the weight loader: every problem of every LoRA is listed in one error and
// nothing is changed.
#include <torch/nn/module.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {

// One --lora FILE[:SCALE] argument.
struct LoraSpec {
  std::filesystem::path file;
  double scale = 1.0;
};
// "FILE" (scale 1) or "FILE:SCALE"; a colon not followed by a number belongs to the file name. `option`
// names the argument in errors (--controlnet DIR[:SCALE] is read the same way).
LoraSpec parse_lora_spec(std::string_view arg, std::string_view option = "--lora");
// "a.safetensors:1, b.safetensors:0.5" (empty without LoRAs), for image metadata and logs.
std::string describe_lora_specs(const std::vector<LoraSpec>& loras);
// The scale as Python prints a float ("1.0", "0.5"): how the LoRA goldens label their outputs.
std::string python_float_repr(double value);

// One adapted layer of a LoRA file.
struct LoraModule {
  std::string target;  // "unet", "text_encoder" or "text_encoder_2"
  std::string path;    // the module path in the target (diffusers / transformers naming), or kohya's
                       // mangled form of it ('.' -> '_') when `mangled`
  bool mangled = false;
  torch::Tensor down;  // float32 [r, in] or [r, in, kh, kw]
  torch::Tensor up;    // float32 [out, r] or [out, r, 1, 1]
  double alpha = 0;    // the stored .alpha, or r when the file has none
  std::string key;     // the file's key stem, for messages
  std::int64_t rank() const { return down.size(0); }
};

struct LoraFile {
  std::filesystem::path file;
  std::string format;  // "kohya", "diffusers", "peft" or "diffusers+peft"
  std::vector<LoraModule> modules;
  // Throws FormatError naming the file and every key it cannot use (unknown naming, LyCORIS / DoRA
  // variants, a down without its up, ranks that disagree, an alpha that is not a scalar).
  static LoraFile read(const std::filesystem::path& file);
  // "kohya, 145 modules (unet 115, text_encoder 30), rank 4, alpha 2"
  std::string summary() const;
};

// A model a pipeline holds, by the name LoRA files use for it. `module` is null when this pipeline family
// has the model but the command did not load it (`tensors run --component unet` with a LoRA that also
// adapts the text encoder): those modules are skipped, with a note in the log.
struct LoraTarget {
  std::string name;
  torch::nn::Module* module = nullptr;
};

// Whether the scales may change after loading. Exact keeps a copy of every adapted weight as loaded (in
// its dtype) beside the low-rank factors, so that any later scale gives the weights a fresh rescalable load
// at that scale would, bit for bit; on a CPU a LoRA of rank 64 or more also keeps its update dense (one more
// float32 copy of the weights it adapts), which makes a scale change a memory-bound pass instead of a
// matrix product (lora_fusion.cpp has the figures). (Moving the weights by the scale difference instead drifts: 2e-6 of |W| after
// a hundred float32 changes here, growing with every move of a slider; in bf16 2^-9 per change.)
enum class LoraRescale { Never, Exact };

// Several LoRAs fused into the targets' weights. Not thread-safe against the models' forward: callers
// changing scales hold their own lock (StreamModels::weights_mutex).
class LoraFusion {
 public:
  // Reads every file, resolves every module against the targets, checks every shape, then fuses. Throws
  // streamgen::Error listing every problem of every LoRA (a key that resolves to no module, a shape that
  // does not fit the weight, a target this pipeline does not have, with a hint when the LoRA was made for
  // another family); nothing is fused then.
  LoraFusion(std::vector<LoraSpec> loras, const std::vector<LoraTarget>& targets, LoraRescale rescale = LoraRescale::Never);
  ~LoraFusion();
  LoraFusion(const LoraFusion&) = delete;
  LoraFusion& operator=(const LoraFusion&) = delete;

  const std::vector<LoraSpec>& loras() const { return loras_; }
  std::vector<double> scales() const;
  bool rescalable() const { return rescalable_; }
  // One scale per LoRA, in the order given; a LoRA at 0 leaves the weights as loaded. Throws unless
  // rescalable() (or the scales are unchanged).
  void set_scales(const std::vector<double>& scales);
  void set_scale(std::size_t lora, double scale);
  // Whether a target's weights depend on the scales (a scale change must re-encode prompts only when the
  // text encoder is adapted).
  bool adapts(const std::string& target) const;
  std::size_t fused_weights() const;
  // What is kept to change scales: the low-rank factors, and with LoraRescale::Exact the loaded weights.
  std::int64_t kept_bytes() const;
  // One line per LoRA for the log: file, format, modules per target, ranks, scale.
  std::vector<std::string> describe() const;

 private:
  struct Weight;
  std::vector<LoraSpec> loras_;
  std::vector<std::string> summaries_;
  std::vector<std::unique_ptr<Weight>> weights_;
  std::vector<std::string> adapted_targets_;
  bool rescalable_ = false;
  void fuse();
};

// What the pipelines call after loading their models: null when `loras` is empty, else the fusion, with
// one log line per LoRA (file, format, modules, ranks, scale) and the time it took.
std::shared_ptr<LoraFusion> fuse_loras(const std::vector<LoraSpec>& loras, const std::vector<LoraTarget>& targets,
                                       LoraRescale rescale = LoraRescale::Never);

}  // namespace streamgen
