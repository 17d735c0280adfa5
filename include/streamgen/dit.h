#pragma once
// The StreamDiT denoiser (docs/streamdit.md §11): an adaLN-Zero DiT over a buffer of
// frames, with a per-frame flow-time embedding, 3D window self-attention (Swin-style half-window
// shift on odd blocks, optional region mask for wrapped voxels), cross-attention to caption tokens
// and factorised (t, h, w) position tables. Parameter names follow facebookresearch/DiT
// (x_embedder, t_embedder.mlp, blocks.N.adaLN_modulation.1, final_layer.linear); StreamDiT has no
// public checkpoint, so these are the names of the checkpoints this project writes.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/caption_encoder.h"
#include "streamgen/device.h"
#include "streamgen/procedural_video.h"

namespace streamgen {

struct StreamDiTConfig {
  std::int64_t in_channels = 3;   // 3 for pixel space, the TAE's latent channels otherwise
  std::int64_t patch_size = 4;    // spatial patch; the temporal patch is always 1 (per-frame τ)
  std::int64_t hidden_size = 128;
  std::int64_t depth = 4;
  std::int64_t num_heads = 4;
  double mlp_ratio = 4.0;
  std::int64_t max_frames = 16;   // buffer frames B: the temporal position table
  std::int64_t sample_height = 32;  // frame size the model was trained on (pixels or latents)
  std::int64_t sample_width = 32;
  std::array<std::int64_t, 3> window{8, 4, 4};  // [F_w, H_w, W_w] in tokens
  bool shift_mask = true;  // Swin region mask for voxels wrapped around by the cyclic shift
  std::int64_t frequency_embedding_size = 256;
  // Decision (not in the paper): the mean caption state, through a small MLP (y_embedder), is
  // added to every frame's time embedding, as DiT adds its class embedding, so the caption also
  // steers every adaLN modulation. Measured on the tiny teacher: with cross-attention alone the
  // caption barely changed predictions after 2,500 steps (x1 error 0.1326 right vs 0.1359 null
  // caption at tau = 0.05).
  bool text_modulation = true;
  // The flow-time shift the model was trained with (shifted_time in flow_matching.h); every
  // sampler and distillation of this model uses the same. 1: the paper's linear schedule.
  double time_shift = 1.0;
  // Not architecture: the edge rule of the procedural world the model was trained on (config.json
  // "procedural_edges": "bounce" | "wrap"). Training on procedural data uses it, and `dit eval`
  // compares the model's streams with real video of the same world.
  EdgeRule procedural_edges = EdgeRule::Bounce;
  // Decision (not in the paper): one clean frame from the stream's start (the "anchor", after
  // StreamingT2V's appearance preservation) as extra conditioning through a zero-initialised
  // cross-attention per block. A buffer is the model's only memory, and a stream that copies each
  // chunk from the last drifts: the latent model's background went to one grey within 2,000
  // frames. Trained with the anchor from the same clip up to a buffer's length earlier, and dropped
  // for a share of examples so the model also runs without one (a stream's first chunks, a prompt
  // change).
  bool anchor = false;
  CaptionEncoderConfig text;

  std::int64_t grid_height() const { return sample_height / patch_size; }
  std::int64_t grid_width() const { return sample_width / patch_size; }
  // Throws streamgen::Error for inconsistent values (sizes not divisible by the patch, window
  // larger than the token grid, heads not dividing the width, ...).
  void validate(const std::string& source = "StreamDiT config") const;
  static StreamDiTConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  nlohmann::json to_json() const;
};

// ---- windows (exposed for tests) ------------------------------------------------------------
struct WindowLayout {
  std::array<std::int64_t, 3> grid{};    // [F, H, W] tokens
  std::array<std::int64_t, 3> window{};  // effective window (clamped to the grid, Swin's rule)
  std::array<std::int64_t, 3> shift{};   // 0, or half the window in each dimension
  std::int64_t windows() const { return (grid[0] / window[0]) * (grid[1] / window[1]) * (grid[2] / window[2]); }
  std::int64_t tokens_per_window() const { return window[0] * window[1] * window[2]; }
};
// The layout for a token grid; `shifted` asks for the half-window shift (dimensions whose window
// covers the whole grid are not shifted). Throws when the grid is not divisible by the window.
WindowLayout make_window_layout(std::array<std::int64_t, 3> grid, std::array<std::int64_t, 3> window, bool shifted);
// x [batch, F, H, W, D] -> [batch * windows, F_w*H_w*W_w, D] (window-major within each batch item).
torch::Tensor window_partition(const torch::Tensor& x, const WindowLayout& layout);
// The inverse of window_partition.
torch::Tensor window_unpartition(const torch::Tensor& windows, const WindowLayout& layout, std::int64_t batch);
// Additive mask [windows, L, L]: 0 where two voxels of a window came from the same region of the
// rolled grid, a large negative number where the roll wrapped one of them around (Swin). An
// undefined tensor when the layout is not shifted.
torch::Tensor shifted_window_mask(const WindowLayout& layout);

// ---- modules --------------------------------------------------------------------------------
struct TimestepEmbedderImpl : torch::nn::Module {
  TimestepEmbedderImpl(std::int64_t hidden, std::int64_t frequency_size);
  // tau [batch, F] in [0, 1] -> [batch, F, hidden] from sinusoid(1000·τ).
  torch::Tensor forward(const torch::Tensor& tau);
  std::int64_t frequency_size;
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(TimestepEmbedder);

struct StreamDiTBlockImpl : torch::nn::Module {
  StreamDiTBlockImpl(const StreamDiTConfig& c);
  // x [batch, F, H, W, D], e [batch, F, D] (per-frame time embedding), text [batch, M, D],
  // anchor [batch or 1, S, D] anchor-frame tokens (undefined: none), anchor_keep [batch] 1/0 per
  // example (undefined: all kept)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& text, const WindowLayout& layout,
                        const torch::Tensor& mask, const torch::Tensor& anchor = {}, const torch::Tensor& anchor_keep = {});
  torch::nn::LayerNorm norm1{nullptr}, norm_cross{nullptr}, norm2{nullptr};
  SelfAttention attn{nullptr};
  CrossAttention cross_attn{nullptr};
  torch::nn::LayerNorm norm_anchor{nullptr};  // only with config.anchor
  CrossAttention anchor_attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(StreamDiTBlock);

struct StreamDiTFinalLayerImpl : torch::nn::Module {
  StreamDiTFinalLayerImpl(std::int64_t hidden, std::int64_t out);
  // x [batch, F, S, D], e [batch, F, D] -> [batch, F, S, out]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& e);
  torch::nn::LayerNorm norm_final{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(StreamDiTFinalLayer);

struct StreamDiTImpl : torch::nn::Module {
  explicit StreamDiTImpl(StreamDiTConfig config);
  // tokens [batch, M] (CaptionTokenizer ids) -> text states [batch, M, D]
  torch::Tensor encode_text(const torch::Tensor& tokens);
  // x [batch, F, C, H, W] (slot 0 oldest), tau [batch, F], text [batch or 1, M, D]
  // -> velocity [batch, F, C, H, W]. With config.anchor: anchor [batch or 1, C, H, W], a clean
  // frame (undefined: none), and anchor_keep [batch] (1: use it, 0: as if none; undefined: all 1).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& text, const torch::Tensor& anchor = {},
                        const torch::Tensor& anchor_keep = {});
  // DiT's initialisation: xavier linears, zero adaLN and output layers, 0.02-normal tables.
  void initialize_weights();

  StreamDiTConfig config;
  CaptionTokenizer tokenizer;
  torch::nn::Linear x_embedder{nullptr};
  torch::Tensor pos_embed_t, pos_embed_h, pos_embed_w;  // [max_frames, D], [grid_h, D], [grid_w, D]
  TimestepEmbedder t_embedder{nullptr};
  torch::nn::Sequential y_embedder{nullptr};  // only with config.text_modulation
  torch::nn::Linear anchor_embedder{nullptr};  // only with config.anchor
  CaptionEncoder text_encoder{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  StreamDiTFinalLayer final_layer{nullptr};
};
TORCH_MODULE(StreamDiT);

// True when `folder` holds a config.json whose _class_name is StreamDiT (how `serve` tells a
// StreamDiT folder from a diffusers pipeline).
bool is_stream_dit_folder(const std::filesystem::path& folder);
// A model folder: config.json + model.safetensors (+ anything else, e.g. the model card).
StreamDiT load_stream_dit(const std::filesystem::path& folder, const ComputeOptions& compute = {});
// Writes config.json and model.safetensors (in `dtype`, default: as the parameters are) atomically.
void save_stream_dit(StreamDiT& model, const std::filesystem::path& folder, torch::ScalarType dtype = torch::kFloat32,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
