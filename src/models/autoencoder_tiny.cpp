#include "streamgen/autoencoder_tiny.h"

#include <torch/torch.h>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/state_dict.h"

namespace streamgen {
namespace {

torch::nn::Conv2d conv3(std::int64_t in, std::int64_t out, std::int64_t stride = 1, bool bias = true) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).stride(stride).bias(bias));
}

}  // namespace

AutoencoderTinyBlockImpl::AutoencoderTinyBlockImpl(std::int64_t in, std::int64_t out) {
  conv = register_module("conv", torch::nn::Sequential(conv3(in, out), torch::nn::ReLU(), conv3(out, out), torch::nn::ReLU(), conv3(out, out)));
  if (in != out) skip = register_module("skip", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(false)));
}

torch::Tensor AutoencoderTinyBlockImpl::forward(const torch::Tensor& x) {
  return torch::relu(conv->forward(x) + (skip ? skip(x) : x));
}

EncoderTinyImpl::EncoderTinyImpl(const AutoencoderTinyConfig& c) {
  torch::nn::Sequential seq;
  for (std::size_t i = 0; i < c.num_encoder_blocks.size(); ++i) {
    const auto ch = c.encoder_block_out_channels[i];
    seq->push_back(i == 0 ? conv3(c.in_channels, ch) : conv3(ch, ch, /*stride=*/2, /*bias=*/false));
    for (std::int64_t b = 0; b < c.num_encoder_blocks[i]; ++b) seq->push_back(AutoencoderTinyBlock(ch, ch));
  }
  seq->push_back(conv3(c.encoder_block_out_channels.back(), c.latent_channels));
  layers = register_module("layers", seq);
}

torch::Tensor EncoderTinyImpl::forward(const torch::Tensor& x) {
  // TAESD works on [0, 1] images.
  return layers->forward(match_memory_format(x.add(1).div(2), layers[0]->as<torch::nn::Conv2d>()->weight));
}

DecoderTinyImpl::DecoderTinyImpl(const AutoencoderTinyConfig& c) {
  torch::nn::Sequential seq;
  seq->push_back(conv3(c.latent_channels, c.decoder_block_out_channels[0]));
  seq->push_back(torch::nn::ReLU());
  for (std::size_t i = 0; i < c.num_decoder_blocks.size(); ++i) {
    const bool last = i + 1 == c.num_decoder_blocks.size();
    const auto ch = c.decoder_block_out_channels[i];
    for (std::int64_t b = 0; b < c.num_decoder_blocks[i]; ++b) seq->push_back(AutoencoderTinyBlock(ch, ch));
    if (!last) {
      const double f = static_cast<double>(c.upsampling_scaling_factor);
      seq->push_back(torch::nn::Upsample(torch::nn::UpsampleOptions().scale_factor(std::vector<double>{f, f}).mode(torch::kNearest)));
    }
    seq->push_back(conv3(ch, last ? c.out_channels : ch, 1, /*bias=*/last));
  }
  layers = register_module("layers", seq);
}

torch::Tensor DecoderTinyImpl::forward(const torch::Tensor& z) {
  // Soft clamp of the latents to (-3, 3), then [0, 1] -> [-1, 1].
  return layers->forward(match_memory_format(torch::tanh(z / 3) * 3, layers[0]->as<torch::nn::Conv2d>()->weight)).mul(2).sub(1);
}

AutoencoderTinyImpl::AutoencoderTinyImpl(const AutoencoderTinyConfig& c) : config(c) {
  encoder = register_module("encoder", EncoderTiny(c));
  decoder = register_module("decoder", DecoderTiny(c));
}

namespace {

// Original layout: finds <name>_encoder.safetensors and <name>_decoder.safetensors.
std::pair<std::filesystem::path, std::filesystem::path> find_original_pair(const std::filesystem::path& path) {
  std::error_code ec;
  const auto dir = std::filesystem::is_directory(path, ec) ? path : path.parent_path();
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    const std::string suffix = "_encoder.safetensors";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const auto dec = dir / (name.substr(0, name.size() - suffix.size()) + "_decoder.safetensors");
      if (std::filesystem::is_regular_file(dec, ec)) return {entry.path(), dec};
    }
  }
  return {};
}

std::vector<KeyRename> index_shift(int shift) {
  // "N." -> "layers.(N+shift)." for every layer index a TAESD file can have.
  std::vector<KeyRename> r;
  for (int n = 0; n < 64; ++n)
    if (n + shift >= 0) r.push_back({std::to_string(n) + ".", "layers." + std::to_string(n + shift) + "."});
  return r;
}

}  // namespace

void prepare_autoencoder_tiny(AutoencoderTinyImpl& model, torch::Device device, torch::ScalarType dtype) {
  prepare_for_inference(model, device, dtype);
  if (device.is_cpu() && dtype == torch::kFloat32) {
    torch::NoGradGuard no_grad;
    for (auto& p : model.parameters())
      if (p.dim() == 4) p.set_data(p.contiguous());
  }
}

AutoencoderTiny load_autoencoder_tiny(const std::filesystem::path& path, const ComputeOptions& compute) {
  std::error_code ec;
  AutoencoderTiny model{nullptr};
  if (std::filesystem::is_regular_file(path / "config.json", ec)) {
    const auto folder = open_component(path);
    model = AutoencoderTiny(AutoencoderTinyConfig::from_json(folder.config, (path / "config.json").string()));
    load_state_dict(*model, folder.weights);
  } else {
    const auto [enc, dec] = find_original_pair(path);
    if (enc.empty())
      throw Error("'" + path.string() + "' is not a TAESD model: expected a diffusers folder with config.json, or "
                  "<name>_encoder.safetensors and <name>_decoder.safetensors side by side");
    const auto enc_w = WeightSet::open(enc), dec_w = WeightSet::open(dec);
    AutoencoderTinyConfig c;
    // The last encoder conv writes the latent channels (4 for SD/SDXL, 16 for SD3 / FLUX.1).
    std::int64_t final_conv = static_cast<std::int64_t>(c.num_encoder_blocks.size());  // one conv per stage...
    for (auto b : c.num_encoder_blocks) final_conv += b;                                // ...plus the blocks
    const std::string last = std::to_string(final_conv) + ".weight";
    if (!enc_w.contains(last)) throw StateDictError(enc.string() + ": no tensor '" + last + "' (the final encoder conv of TAESD)");
    c.latent_channels = enc_w.entry(last).shape[0];
    model = AutoencoderTiny(c);
    LoadOptions enc_opt, dec_opt;
    enc_opt.renames = index_shift(0);
    dec_opt.renames = index_shift(-1);  // decoder index 0 is the parameter-free clamp
    load_state_dict(*model->encoder, enc_w, enc_opt);
    load_state_dict(*model->decoder, dec_w, dec_opt);
  }
  prepare_autoencoder_tiny(*model, compute.device, compute.dtype);
  return model;
}

}  // namespace streamgen
