#include "streamgen/dit.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <array>
#include <cmath>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/model_folder.h"
#include "streamgen/model_io.h"
#include "streamgen/state_dict.h"

namespace streamgen {
namespace {

// Large enough that exp() of it is 0 in fp32, small enough to stay finite in bf16.
constexpr double kMaskedScore = -1e9;

torch::nn::LayerNorm plain_norm(std::int64_t dim, bool affine) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6).elementwise_affine(affine));
}

torch::nn::Sequential modulation(std::int64_t dim, std::int64_t chunks) {
  return torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, chunks * dim));
}

// [batch, F, D] -> [batch, F, 1, 1, D]: one value per frame, broadcast over its tokens.
torch::Tensor per_frame(const torch::Tensor& m) { return m.unsqueeze(2).unsqueeze(2); }

// [positions, dim]: sin of position / 10000^(2i/dim) in the first half, cos in the second.
torch::Tensor sincos_table(std::int64_t positions, std::int64_t dim) {
  const auto half = dim / 2;
  auto table = torch::zeros({positions, dim}, torch::kFloat64);
  if (half == 0) return table.to(torch::kFloat32);
  const auto omega = torch::pow(10000.0, -torch::arange(half, torch::kFloat64) / static_cast<double>(half));
  const auto args = torch::arange(positions, torch::kFloat64).unsqueeze(1) * omega.unsqueeze(0);
  table.narrow(1, 0, half).copy_(torch::sin(args));
  table.narrow(1, half, half).copy_(torch::cos(args));
  return table.to(torch::kFloat32);
}

// Channel bands of the (t, h, w) position tables: a quarter for time, the rest split between height
// and width (even sizes, for sin/cos pairs). Disjoint bands matter: with one table per axis over all
// channels, position (t, h, w) and any permutation of it (the transposed patch, a frame whose index
// equals a row) got the same embedding, and the model could not tell a shape from its mirror image.
std::array<std::int64_t, 3> position_bands(std::int64_t dim) {
  const auto t = 2 * (dim / 8);
  const auto h = 2 * ((dim - t) / 4);
  return {t, h, dim - t - h};
}

torch::Tensor banded_sincos_table(std::int64_t positions, std::int64_t dim, std::int64_t axis) {
  const auto bands = position_bands(dim);
  std::int64_t start = 0;
  for (std::int64_t a = 0; a < axis; ++a) start += bands[a];
  auto table = torch::zeros({positions, dim});
  table.narrow(1, start, bands[axis]).copy_(sincos_table(positions, bands[axis]));
  return table;
}

// [b, F, C, H, W] -> [b, F, H/p, W/p, C·p·p]: temporal patch 1, spatial patch p.
torch::Tensor patchify(const torch::Tensor& x, std::int64_t p) {
  const auto b = x.size(0), f = x.size(1), c = x.size(2), h = x.size(3) / p, w = x.size(4) / p;
  return x.view({b, f, c, h, p, w, p}).permute({0, 1, 3, 5, 2, 4, 6}).reshape({b, f, h, w, -1});
}

torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return x * (1 + scale) + shift;
}

}  // namespace

// ---- config -----------------------------------------------------------------------------------
void StreamDiTConfig::validate(const std::string& source) const {
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  if (in_channels < 1 || patch_size < 1 || hidden_size < 1 || depth < 1 || num_heads < 1 || max_frames < 1)
    fail("in_channels, patch_size, hidden_size, depth, num_heads and max_frames must all be >= 1");
  if (hidden_size % num_heads != 0) fail(fmt::format("hidden_size {} is not divisible by num_heads {}", hidden_size, num_heads));
  if (text.num_heads < 1 || hidden_size % text.num_heads != 0)
    fail(fmt::format("hidden_size {} is not divisible by text_heads {}", hidden_size, text.num_heads));
  if (sample_height % patch_size != 0 || sample_width % patch_size != 0)
    fail(fmt::format("sample size {}x{} is not divisible by patch_size {}", sample_width, sample_height, patch_size));
  if (frequency_embedding_size < 2 || frequency_embedding_size % 2 != 0) fail("frequency_embedding_size must be even and >= 2");
  if (text.max_tokens < 1) fail("max_text_tokens must be >= 1");
  if (!(time_shift > 0)) fail(fmt::format("time_shift must be > 0, got {}", time_shift));
  const std::array<std::int64_t, 3> grid{max_frames, grid_height(), grid_width()};
  const char* names[3] = {"frames", "height", "width"};
  for (int d = 0; d < 3; ++d) {
    if (window[d] < 1) fail(fmt::format("window {} must be >= 1", names[d]));
    if (window[d] > grid[d])
      fail(fmt::format("window [{}, {}, {}] is larger than the token grid [{}, {}, {}] in {}", window[0], window[1], window[2], grid[0],
                       grid[1], grid[2], names[d]));
    if (grid[d] % window[d] != 0)
      fail(fmt::format("token grid [{}, {}, {}] is not divisible by the window [{}, {}, {}] in {}", grid[0], grid[1], grid[2], window[0],
                       window[1], window[2], names[d]));
  }
}

StreamDiTConfig StreamDiTConfig::from_json(const nlohmann::json& j, const std::string& source) {
  StreamDiTConfig c;
  const auto cls = config_value<std::string>(j, "_class_name", "StreamDiT", source);
  if (cls != "StreamDiT") throw Error(source + ": _class_name is '" + cls + "', expected StreamDiT");
  c.in_channels = config_value(j, "in_channels", c.in_channels, source);
  c.patch_size = config_value(j, "patch_size", c.patch_size, source);
  c.hidden_size = config_value(j, "hidden_size", c.hidden_size, source);
  c.depth = config_value(j, "depth", c.depth, source);
  c.num_heads = config_value(j, "num_heads", c.num_heads, source);
  c.mlp_ratio = config_value(j, "mlp_ratio", c.mlp_ratio, source);
  c.max_frames = config_value(j, "max_frames", c.max_frames, source);
  c.sample_height = config_value(j, "sample_height", c.sample_height, source);
  c.sample_width = config_value(j, "sample_width", c.sample_width, source);
  const auto window = config_value(j, "window", std::vector<std::int64_t>(c.window.begin(), c.window.end()), source);
  if (window.size() != 3) throw Error(source + ": 'window' must list 3 sizes [frames, height, width]");
  std::copy(window.begin(), window.end(), c.window.begin());
  c.shift_mask = config_value(j, "shift_mask", c.shift_mask, source);
  c.text_modulation = config_value(j, "text_modulation", false, source);  // absent: a checkpoint from before the option
  c.time_shift = config_value(j, "time_shift", 1.0, source);  // absent: a checkpoint from before the option
  // absent: trained before wrap existed
  const auto edges = config_value<std::string>(j, "procedural_edges", "bounce", source);
  try {
    c.procedural_edges = parse_edge_rule(edges);
  } catch (const Error&) {  // the same check, said in config.json's terms
    throw Error(fmt::format("{}: procedural_edges is '{}', expected bounce or wrap", source, edges));
  }
  c.anchor = config_value(j, "anchor", false, source);  // absent: a checkpoint from before the option
  c.frequency_embedding_size = config_value(j, "frequency_embedding_size", c.frequency_embedding_size, source);
  c.text.vocabulary = config_value(j, "vocabulary", c.text.vocabulary, source);
  c.text.max_tokens = config_value(j, "max_text_tokens", c.text.max_tokens, source);
  c.text.num_layers = config_value(j, "text_layers", c.text.num_layers, source);
  c.text.num_heads = config_value(j, "text_heads", c.text.num_heads, source);
  c.validate(source);
  return c;
}

nlohmann::json StreamDiTConfig::to_json() const {
  return {{"_class_name", "StreamDiT"},
          {"in_channels", in_channels},
          {"patch_size", patch_size},
          {"hidden_size", hidden_size},
          {"depth", depth},
          {"num_heads", num_heads},
          {"mlp_ratio", mlp_ratio},
          {"max_frames", max_frames},
          {"sample_height", sample_height},
          {"sample_width", sample_width},
          {"window", std::vector<std::int64_t>(window.begin(), window.end())},
          {"shift_mask", shift_mask},
          {"text_modulation", text_modulation},
          {"time_shift", time_shift},
          {"procedural_edges", edge_rule_name(procedural_edges)},
          {"anchor", anchor},
          {"frequency_embedding_size", frequency_embedding_size},
          {"vocabulary", text.vocabulary},
          {"max_text_tokens", text.max_tokens},
          {"text_layers", text.num_layers},
          {"text_heads", text.num_heads}};
}

// ---- windows ----------------------------------------------------------------------------------
WindowLayout make_window_layout(std::array<std::int64_t, 3> grid, std::array<std::int64_t, 3> window, bool shifted) {
  WindowLayout l;
  l.grid = grid;
  for (int d = 0; d < 3; ++d) {
    l.window[d] = std::min(window[d], grid[d]);
    if (l.window[d] < 1 || grid[d] % l.window[d] != 0)
      throw Error(fmt::format("token grid [{}, {}, {}] is not divisible by the attention window [{}, {}, {}]", grid[0], grid[1], grid[2],
                              window[0], window[1], window[2]));
    l.shift[d] = shifted && l.window[d] < grid[d] ? l.window[d] / 2 : 0;
  }
  return l;
}

torch::Tensor window_partition(const torch::Tensor& x, const WindowLayout& l) {
  const auto b = x.size(0), d = x.size(4);
  const auto& g = l.grid;
  const auto& w = l.window;
  return x.view({b, g[0] / w[0], w[0], g[1] / w[1], w[1], g[2] / w[2], w[2], d})
      .permute({0, 1, 3, 5, 2, 4, 6, 7})
      .reshape({b * l.windows(), l.tokens_per_window(), d});
}

torch::Tensor window_unpartition(const torch::Tensor& windows, const WindowLayout& l, std::int64_t batch) {
  const auto d = windows.size(2);
  const auto& g = l.grid;
  const auto& w = l.window;
  return windows.view({batch, g[0] / w[0], g[1] / w[1], g[2] / w[2], w[0], w[1], w[2], d})
      .permute({0, 1, 4, 2, 5, 3, 6, 7})
      .reshape({batch, g[0], g[1], g[2], d});
}

torch::Tensor shifted_window_mask(const WindowLayout& l) {
  if (l.shift[0] == 0 && l.shift[1] == 0 && l.shift[2] == 0) return {};
  // Region of each voxel along one axis of the rolled grid: 0 = never wrapped, 1 = the tail the
  // window straddles, 2 = voxels the roll brought around from the other end (Swin's three slices).
  auto regions = [&](int dim) {
    const auto n = l.grid[dim], w = l.window[dim], s = l.shift[dim];
    auto r = torch::zeros({n}, torch::kInt64);
    if (s > 0) {
      r.narrow(0, n - w, w - s).fill_(1);
      r.narrow(0, n - s, s).fill_(2);
    }
    return r;
  };
  const auto label = (regions(0).view({-1, 1, 1}) * 9 + regions(1).view({1, -1, 1}) * 3 + regions(2).view({1, 1, -1}))
                         .to(torch::kFloat32)
                         .view({1, l.grid[0], l.grid[1], l.grid[2], 1});
  const auto per_window = window_partition(label, l).squeeze(-1);  // [windows, L]
  const auto differs = per_window.unsqueeze(2) != per_window.unsqueeze(1);
  return torch::zeros(differs.sizes(), torch::kFloat32).masked_fill_(differs, kMaskedScore);
}

// ---- modules ----------------------------------------------------------------------------------
TimestepEmbedderImpl::TimestepEmbedderImpl(std::int64_t hidden, std::int64_t frequency_size) : frequency_size(frequency_size) {
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(frequency_size, hidden), torch::nn::SiLU(),
                                                     torch::nn::Linear(hidden, hidden)));
}

torch::Tensor TimestepEmbedderImpl::forward(const torch::Tensor& tau) {
  // tau [batch, F] -> [batch, F, hidden]; DiT's sinusoid (cos first) of 1000·τ.
  const auto half = frequency_size / 2;
  const auto options = tau.options().dtype(torch::kFloat32);
  const auto freqs = torch::exp(torch::arange(half, options) * (-std::log(10000.0) / static_cast<double>(half)));
  const auto args = (tau.to(torch::kFloat32) * 1000.0).unsqueeze(-1) * freqs;
  const auto emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  const auto& first = mlp[0]->as<torch::nn::Linear>()->weight;
  return mlp->forward(emb.to(first.scalar_type()));
}

StreamDiTBlockImpl::StreamDiTBlockImpl(const StreamDiTConfig& c) {
  const auto d = c.hidden_size;
  norm1 = register_module("norm1", plain_norm(d, false));
  attn = register_module("attn", SelfAttention(d, c.num_heads));
  norm_cross = register_module("norm_cross", plain_norm(d, true));
  cross_attn = register_module("cross_attn", CrossAttention(d, c.num_heads));
  norm2 = register_module("norm2", plain_norm(d, false));
  mlp = register_module("mlp", Mlp(d, static_cast<std::int64_t>(static_cast<double>(d) * c.mlp_ratio)));
  adaLN_modulation = register_module("adaLN_modulation", modulation(d, 6));
  if (c.anchor) {
    norm_anchor = register_module("norm_anchor", plain_norm(d, true));
    anchor_attn = register_module("anchor_attn", CrossAttention(d, c.num_heads));
  }
}

torch::Tensor StreamDiTBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& text,
                                          const WindowLayout& layout, const torch::Tensor& mask, const torch::Tensor& anchor,
                                          const torch::Tensor& anchor_keep) {
  // x [b, F, H, W, D], e [b, F, D], text [b, M, D], anchor [b or 1, S, D], anchor_keep [b]
  const auto b = x.size(0);
  const auto m = adaLN_modulation->forward(e).chunk(6, -1);  // each [b, F, D]
  auto h = modulate(norm1(x), per_frame(m[0]), per_frame(m[1]));
  const bool shifted = layout.shift[0] || layout.shift[1] || layout.shift[2];
  if (shifted) h = torch::roll(h, {-layout.shift[0], -layout.shift[1], -layout.shift[2]}, {1, 2, 3});
  h = window_unpartition(attn(window_partition(h, layout), mask), layout, b);
  if (shifted) h = torch::roll(h, {layout.shift[0], layout.shift[1], layout.shift[2]}, {1, 2, 3});
  auto out = x + per_frame(m[2]) * h;

  const auto flat = norm_cross(out).reshape({b, -1, out.size(4)});
  out = out + cross_attn(flat, text).view(out.sizes());
  if (anchor_attn && anchor.defined()) {
    auto a = anchor_attn(norm_anchor(out).reshape({b, -1, out.size(4)}), anchor.expand({b, anchor.size(1), anchor.size(2)}));
    if (anchor_keep.defined()) a = a * anchor_keep.to(a.device(), a.scalar_type()).view({b, 1, 1});
    out = out + a.view(out.sizes());
  }

  return out + per_frame(m[5]) * mlp(modulate(norm2(out), per_frame(m[3]), per_frame(m[4])));
}

StreamDiTFinalLayerImpl::StreamDiTFinalLayerImpl(std::int64_t hidden, std::int64_t out) {
  norm_final = register_module("norm_final", plain_norm(hidden, false));
  adaLN_modulation = register_module("adaLN_modulation", modulation(hidden, 2));
  linear = register_module("linear", torch::nn::Linear(hidden, out));
}

torch::Tensor StreamDiTFinalLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& e) {
  const auto m = adaLN_modulation->forward(e).chunk(2, -1);
  return linear(modulate(norm_final(x), per_frame(m[0]), per_frame(m[1])));
}

StreamDiTImpl::StreamDiTImpl(StreamDiTConfig c) : config(std::move(c)), tokenizer(config.text) {
  config.validate();
  const auto d = config.hidden_size, p = config.patch_size;
  x_embedder = register_module("x_embedder", torch::nn::Linear(config.in_channels * p * p, d));
  pos_embed_t = register_parameter("pos_embed_t", torch::zeros({config.max_frames, d}));
  pos_embed_h = register_parameter("pos_embed_h", torch::zeros({config.grid_height(), d}));
  pos_embed_w = register_parameter("pos_embed_w", torch::zeros({config.grid_width(), d}));
  t_embedder = register_module("t_embedder", TimestepEmbedder(d, config.frequency_embedding_size));
  if (config.text_modulation)
    y_embedder = register_module("y_embedder", torch::nn::Sequential(torch::nn::Linear(d, d), torch::nn::SiLU(), torch::nn::Linear(d, d)));
  if (config.anchor) anchor_embedder = register_module("anchor_embedder", torch::nn::Linear(config.in_channels * p * p, d));
  text_encoder = register_module("text_encoder", CaptionEncoder(config.text, d));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < config.depth; ++i) blocks->push_back(StreamDiTBlock(config));
  final_layer = register_module("final_layer", StreamDiTFinalLayer(d, config.in_channels * p * p));
  initialize_weights();
}

void StreamDiTImpl::initialize_weights() {
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* linear = m->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
  // The position tables start as 1-D sin-cos tables in disjoint channel bands (DiT's fixed 2-D
  // embedding, factorised over t, h, w): with the usual 0.02-normal start tokens barely knew where
  // they were, and the tiny teacher's samples from noise came out as patch-wise unrelated fragments.
  const std::array<torch::Tensor*, 3> tables{&pos_embed_t, &pos_embed_h, &pos_embed_w};
  for (std::int64_t axis = 0; axis < 3; ++axis) tables[axis]->copy_(banded_sincos_table(tables[axis]->size(0), tables[axis]->size(1), axis));
  text_encoder->token_embedding->weight.normal_(0.0, 0.02);
  text_encoder->position_embedding.normal_(0.0, 0.02);
  for (std::size_t i : {0, 2}) t_embedder->mlp[i]->as<torch::nn::Linear>()->weight.normal_(0.0, 0.02);
  // adaLN-Zero: every block starts as the identity; the output starts at zero velocity.
  for (const auto& block : *blocks) {
    auto* b = block->as<StreamDiTBlock>();
    b->adaLN_modulation[1]->as<torch::nn::Linear>()->weight.zero_();
    b->adaLN_modulation[1]->as<torch::nn::Linear>()->bias.zero_();
    b->cross_attn->proj->weight.zero_();  // PixArt: text enters gradually
    // The anchor enters the same way, so a model given the option starts as the model without it
    // (a fine-tune from anchorless weights begins where they were).
    if (b->anchor_attn) b->anchor_attn->proj->weight.zero_();
  }
  final_layer->adaLN_modulation[1]->as<torch::nn::Linear>()->weight.zero_();
  final_layer->adaLN_modulation[1]->as<torch::nn::Linear>()->bias.zero_();
  final_layer->linear->weight.zero_();
  final_layer->linear->bias.zero_();
}

torch::Tensor StreamDiTImpl::encode_text(const torch::Tensor& tokens) {
  if (tokens.dim() != 2 || tokens.size(1) > config.text.max_tokens)
    throw Error(fmt::format("StreamDiT: caption tokens must be [batch, <= {}], got [{}]", config.text.max_tokens, fmt::join(tokens.sizes(), ", ")));
  return text_encoder(tokens.to(pos_embed_t.device()));
}

torch::Tensor StreamDiTImpl::forward(const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& text, const torch::Tensor& anchor,
                                     const torch::Tensor& anchor_keep) {
  // x [b, F, C, Hs, Ws], tau [b, F], text [b or 1, M, D], anchor [b or 1, C, Hs, Ws], anchor_keep [b]
  // -> velocity [b, F, C, Hs, Ws]
  const auto p = config.patch_size, d = config.hidden_size;
  if (x.dim() != 5 || x.size(2) != config.in_channels || x.size(3) % p != 0 || x.size(4) % p != 0)
    throw Error(fmt::format("StreamDiT: input must be [batch, frames, {}, H, W] with H and W multiples of {}, got [{}]", config.in_channels, p,
                            fmt::join(x.sizes(), ", ")));
  const auto b = x.size(0), f = x.size(1), hs = x.size(3), ws = x.size(4);
  const auto h = hs / p, w = ws / p;
  if (f > config.max_frames || h > config.grid_height() || w > config.grid_width())
    throw Error(fmt::format("StreamDiT: input of {} frames of {}x{} exceeds the model's {} frames of {}x{}", f, ws, hs, config.max_frames,
                            config.sample_width, config.sample_height));
  if (tau.dim() != 2 || tau.size(0) != b || tau.size(1) != f)
    throw Error(fmt::format("StreamDiT: tau must be [{}, {}] (one level per frame), got [{}]", b, f, fmt::join(tau.sizes(), ", ")));
  if (text.dim() != 3 || text.size(2) != d || (text.size(0) != b && text.size(0) != 1))
    throw Error(fmt::format("StreamDiT: text states must be [{} or 1, M, {}], got [{}]", b, d, fmt::join(text.sizes(), ", ")));

  torch::Tensor anchor_tokens;  // [b or 1, h·w, D]
  if (anchor.defined()) {
    if (!config.anchor) throw Error("StreamDiT: an anchor frame was given to a model without anchor conditioning (config.json: \"anchor\": false)");
    if (anchor.dim() != 4 || (anchor.size(0) != b && anchor.size(0) != 1) || anchor.size(1) != config.in_channels || anchor.size(2) != hs ||
        anchor.size(3) != ws)
      throw Error(fmt::format("StreamDiT: the anchor frame must be [{} or 1, {}, {}, {}], got [{}]", b, config.in_channels, hs, ws,
                              fmt::join(anchor.sizes(), ", ")));
    if (anchor_keep.defined() && (anchor_keep.dim() != 1 || anchor_keep.size(0) != b))
      throw Error(fmt::format("StreamDiT: anchor_keep must be [{}], got [{}]", b, fmt::join(anchor_keep.sizes(), ", ")));
    const auto a = anchor.size(0);
    const auto anchor_patches = patchify(anchor.unsqueeze(1), p).squeeze(1);  // [a, h, w, C·p·p]
    anchor_tokens = (anchor_embedder(anchor_patches.to(x.scalar_type())) + pos_embed_h.narrow(0, 0, h).view({1, h, 1, d}) +
                     pos_embed_w.narrow(0, 0, w).view({1, 1, w, d}))
                        .reshape({a, h * w, d});
  }
  auto tokens = x_embedder(patchify(x, p)) + pos_embed_t.narrow(0, 0, f).view({1, f, 1, 1, d}) + pos_embed_h.narrow(0, 0, h).view({1, 1, h, 1, d}) +
                pos_embed_w.narrow(0, 0, w).view({1, 1, 1, w, d});
  const auto context = text.expand({b, text.size(1), d});
  auto e = t_embedder(tau.to(x.device()));  // [b, F, D]
  if (y_embedder) e = e + y_embedder->forward(context.mean(1)).unsqueeze(1);

  const std::array<std::int64_t, 3> grid{f, h, w};
  const WindowLayout plain = make_window_layout(grid, config.window, false);
  const WindowLayout shifted = make_window_layout(grid, config.window, true);
  torch::Tensor shift_mask;
  if (config.shift_mask) {
    shift_mask = shifted_window_mask(shifted);
    if (shift_mask.defined()) shift_mask = shift_mask.to(x.device());
  }
  for (std::size_t i = 0; i < blocks->size(); ++i) {
    const bool odd = i % 2 == 1;
    tokens = blocks[i]->as<StreamDiTBlock>()->forward(tokens, e, context, odd ? shifted : plain, odd ? shift_mask : torch::Tensor{},
                                                      anchor_tokens, anchor_keep);
  }
  const auto out = final_layer(tokens, e);  // [b, F, h, w, C*p*p]
  return out.view({b, f, h, w, config.in_channels, p, p}).permute({0, 1, 4, 2, 5, 3, 6}).reshape({b, f, config.in_channels, hs, ws});
}

// ---- folders ----------------------------------------------------------------------------------
bool is_stream_dit_folder(const std::filesystem::path& folder) { return folder_class_name(folder) == "StreamDiT"; }

StreamDiT load_stream_dit(const std::filesystem::path& folder, const ComputeOptions& compute) {
  return load_model_folder<StreamDiT>(folder, compute);
}

void save_stream_dit(StreamDiT& model, const std::filesystem::path& folder, torch::ScalarType dtype,
                     const std::map<std::string, std::string>& metadata) {
  save_model_folder(*model, model->config.to_json(), folder, dtype, metadata);
}

}  // namespace streamgen
