// A single-file checkpoint assembled from a golden pipeline folder (re-keyed to the original LDM
// layout here) must give the same outputs as the folder.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/clip_text_model.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/safetensors.h"
#include "streamgen/single_file.h"
#include "streamgen/unet_2d_condition.h"
#include "streamgen/component_run.h"
#include "test_util.h"

namespace streamgen {
namespace {

// diffusers key -> original key, by the inverse of the prefix tables (longest target first).
std::string to_ldm(const std::string& key, std::vector<KeyRename> rules) {
  std::stable_sort(rules.begin(), rules.end(), [](const auto& a, const auto& b) { return a.to.size() > b.to.size(); });
  for (const auto& r : rules)
    if (key.compare(0, r.to.size(), r.to) == 0) return r.from + key.substr(r.to.size());
  ADD_FAILURE() << "no rule produces " << key;
  return key;
}

// A transformers CLIP text model written in OpenCLIP's layout under `p`: fused in_proj, resblocks; `blocks` of
// them (past the model's `layers`, copies of its last).
void append_open_clip(NamedTensors& out, const SafetensorsFile& te, const std::string& p, int layers, int blocks) {
  out.emplace_back(p + "token_embedding.weight", te.tensor("text_model.embeddings.token_embedding.weight"));
  out.emplace_back(p + "positional_embedding", te.tensor("text_model.embeddings.position_embedding.weight"));
  out.emplace_back(p + "ln_final.weight", te.tensor("text_model.final_layer_norm.weight"));
  out.emplace_back(p + "ln_final.bias", te.tensor("text_model.final_layer_norm.bias"));
  for (int i = 0; i < blocks; ++i) {
    const int src = std::min(i, layers - 1);
    const auto from = "text_model.encoder.layers." + std::to_string(src) + ".";
    const auto to = p + "transformer.resblocks." + std::to_string(i) + ".";
    for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
             {"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."}, {"mlp.fc1.", "mlp.c_fc."}, {"mlp.fc2.", "mlp.c_proj."}, {"self_attn.out_proj.", "attn.out_proj."}})
      for (const std::string kind : {"weight", "bias"}) out.emplace_back(to + b + kind, te.tensor(from + a + kind));
    for (const std::string kind : {"weight", "bias"})
      out.emplace_back(to + "attn.in_proj_" + kind, torch::cat({te.tensor(from + "self_attn.q_proj." + kind), te.tensor(from + "self_attn.k_proj." + kind),
                                                               te.tensor(from + "self_attn.v_proj." + kind)}));
  }
}

// The UNet and VAE of a diffusers folder in the original layout.
void append_unet_and_vae(NamedTensors& out, const std::filesystem::path& root) {
  const auto unet = SafetensorsFile::open(root / "unet/diffusion_pytorch_model.safetensors");
  const auto unet_rules = ldm_unet_renames(read_json_file(root / "unet/config.json"));
  for (const auto& e : unet.entries()) out.emplace_back(to_ldm(e.name, unet_rules), unet.tensor(e.name));
  const auto vae = SafetensorsFile::open(root / "vae/diffusion_pytorch_model.safetensors");
  const auto vae_rules = ldm_vae_renames(read_json_file(root / "vae/config.json"));
  for (const auto& e : vae.entries()) {
    auto t = vae.tensor(e.name);
    const auto ldm = to_ldm(e.name, vae_rules);
    if (ldm.find(".attn_1.") != std::string::npos && t.dim() == 2) t = t.unsqueeze(-1).unsqueeze(-1);  // stored as 1x1 convs
    out.emplace_back(ldm, t);
  }
}

std::filesystem::path assemble_single_file(const std::string& variant, const test::TempDir& dir) {
  const auto root = test::data_path(variant);
  NamedTensors out;
  append_unet_and_vae(out, root);
  const auto te = SafetensorsFile::open(root / "text_encoder/model.safetensors");
  if (variant == "tiny-sd15") {
    for (const auto& e : te.entries()) out.emplace_back("cond_stage_model.transformer." + e.name, te.tensor(e.name));
  } else {  // OpenCLIP layout, plus the unused last block SD2 carries
    const int layers = read_json_file(root / "text_encoder/config.json")["num_hidden_layers"];
    append_open_clip(out, te, "cond_stage_model.model.", layers, layers + 1);
    out.emplace_back("cond_stage_model.model.text_projection", torch::zeros({32, 32}));
  }
  out.emplace_back("alphas_cumprod", torch::ones({1000}));  // schedule buffers real checkpoints carry
  const auto path = dir / (variant + ".safetensors");
  save_safetensors(path, out);
  return path;
}

class SingleFile : public ::testing::TestWithParam<std::string> {};

TEST_P(SingleFile, GivesTheSameOutputsAsTheFolder) {
  const auto variant = GetParam();
  test::TempDir dir;
  const auto file = assemble_single_file(variant, dir);
  const auto root = test::data_path(variant);
  const auto ckpt = open_single_file(file, root);
  EXPECT_EQ(ckpt.family, variant == "tiny-sd15" ? "sd1" : "sd2");
  torch::NoGradGuard no_grad;

  const auto golden_unet = SafetensorsFile::open(test::data_path(variant + "_unet.safetensors"));
  const auto x = golden_unet.tensor("case0.sample"), t = golden_unet.tensor("case0.timestep"), ctx = golden_unet.tensor("case0.encoder_hidden_states");
  EXPECT_TRUE(torch::equal(load_unet_2d_condition(ckpt.unet)->forward(x, t, ctx), load_unet_2d_condition(root / "unet")->forward(x, t, ctx)));

  const auto img = torch::rand({1, 3, 32, 32}) * 2 - 1;
  auto vae_file = load_autoencoder_kl(ckpt.vae), vae_dir = load_autoencoder_kl(root / "vae");
  EXPECT_TRUE(torch::equal(vae_file->encode(img).mean, vae_dir->encode(img).mean));
  const auto z = torch::randn({1, 4, 8, 8});
  EXPECT_TRUE(torch::equal(vae_file->decode(z), vae_dir->decode(z)));

  const auto ids = SafetensorsFile::open(test::data_path(variant + "_text_encoder.safetensors")).tensor("input_ids");
  EXPECT_TRUE(torch::equal(load_clip_text_model(ckpt.text_encoder)->forward(ids).last_hidden_state,
                           load_clip_text_model(root / "text_encoder")->forward(ids).last_hidden_state));
}

// SDXL in SGM's layout: the UNet (label_emb, transformer depths), CLIP ViT-L under conditioner.embedders.0 and
// OpenCLIP bigG with its text_projection under conditioner.embedders.1.
TEST(SingleFile, SdxlGivesTheSameOutputsAsTheFolder) {
  test::TempDir dir;
  const auto root = test::data_path("tiny-sdxl");
  NamedTensors out;
  append_unet_and_vae(out, root);
  const auto te = SafetensorsFile::open(root / "text_encoder/model.safetensors");
  for (const auto& e : te.entries()) out.emplace_back("conditioner.embedders.0.transformer." + e.name, te.tensor(e.name));
  const auto te2 = SafetensorsFile::open(root / "text_encoder_2/model.safetensors");
  append_open_clip(out, te2, "conditioner.embedders.1.model.", 3, 3);
  out.emplace_back("conditioner.embedders.1.model.text_projection", te2.tensor("text_projection.weight").t().contiguous());
  const auto file = dir / "tiny-sdxl.safetensors";
  save_safetensors(file, out);

  // Inferred from the shapes alone: what they show.
  const auto inferred = open_single_file(file);
  EXPECT_EQ(inferred.family, "sdxl");
  const auto folder = read_json_file(root / "unet/config.json");
  for (const char* key : {"block_out_channels", "down_block_types", "up_block_types", "transformer_layers_per_block", "cross_attention_dim",
                          "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"})
    EXPECT_EQ(inferred.unet.config[key], folder[key]) << key;
  EXPECT_EQ(inferred.vae.config["scaling_factor"], 0.13025);
  ASSERT_TRUE(inferred.text_encoder_2.has_value());
  EXPECT_EQ(inferred.text_encoder_2->config["projection_dim"], 36);
  EXPECT_EQ(inferred.text_encoder_2->config["num_hidden_layers"], 3);

  // With the folder's configs (heads and norm groups are not in the shapes): the folder's outputs, bit for bit.
  const auto ckpt = open_single_file(file, root);
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_unet.safetensors"));
  const UNetConditioning cond(golden.tensor("case0.encoder_hidden_states"), golden.tensor("case0.text_embeds"), golden.tensor("case0.time_ids"));
  const auto x = golden.tensor("case0.sample"), t = golden.tensor("case0.timestep");
  EXPECT_TRUE(torch::equal(load_unet_2d_condition(ckpt.unet)->forward(x, t, cond), load_unet_2d_condition(root / "unet")->forward(x, t, cond)));
  const auto z = torch::randn({1, 4, 8, 8});
  EXPECT_TRUE(torch::equal(load_autoencoder_kl(ckpt.vae)->decode(z), load_autoencoder_kl(root / "vae")->decode(z)));
  const auto text = SafetensorsFile::open(test::data_path("tiny-sdxl_text_encoders.safetensors"));
  TensorMap in{{"input_ids", text.tensor("input_ids")}, {"input_ids_2", text.tensor("input_ids_2")}};
  ComponentRunOptions options;
  options.config_from = root;
  const auto from_file = run_component(Component::TextEncoders, file, in, {}, options);
  const auto from_folder = run_component(Component::TextEncoders, root, in, {});
  for (const char* k : {"prompt_embeds", "pooled_prompt_embeds"}) EXPECT_TRUE(torch::equal(from_file.at(k), from_folder.at(k))) << k;
}

TEST_P(SingleFile, InfersTheConfigurationFromShapes) {
  const auto variant = GetParam();
  test::TempDir dir;
  const auto ckpt = open_single_file(assemble_single_file(variant, dir));
  const auto folder = read_json_file(test::data_path(variant + "/unet/config.json"));
  for (const char* key : {"block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "cross_attention_dim", "use_linear_projection", "in_channels"})
    EXPECT_EQ(ckpt.unet.config[key], folder[key]) << key;
  const auto vae = read_json_file(test::data_path(variant + "/vae/config.json"));
  for (const char* key : {"block_out_channels", "layers_per_block", "latent_channels"}) EXPECT_EQ(ckpt.vae.config[key], vae[key]) << key;
  // Heads are not in the shapes: the inferred UNet still builds and loads strictly.
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(load_unet_2d_condition(ckpt.unet));
  EXPECT_NO_THROW(load_autoencoder_kl(ckpt.vae));
  const auto te = read_json_file(test::data_path(variant + "/text_encoder/config.json"));
  EXPECT_EQ(ckpt.text_encoder.config["hidden_size"], te["hidden_size"]);
}

INSTANTIATE_TEST_SUITE_P(Variants, SingleFile, ::testing::Values("tiny-sd15", "tiny-sd21"),
                         [](const auto& info) { return info.param == "tiny-sd15" ? std::string("sd15") : std::string("sd21"); });

TEST(SingleFileLayout, KnownOriginalKeysMapWhereDiffusersPutsThem) {
  nlohmann::json sd15 = {{"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
                         {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
                         {"layers_per_block", 2}};
  const auto u = ldm_unet_renames(sd15);
  EXPECT_EQ(apply_renames("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", u),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight");
  EXPECT_EQ(apply_renames("model.diffusion_model.input_blocks.3.0.op.weight", u), "down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(apply_renames("model.diffusion_model.output_blocks.2.1.conv.bias", u), "up_blocks.0.upsamplers.0.conv.bias");
  EXPECT_EQ(apply_renames("model.diffusion_model.output_blocks.5.2.conv.weight", u), "up_blocks.1.upsamplers.0.conv.weight");
  EXPECT_EQ(apply_renames("model.diffusion_model.output_blocks.11.0.skip_connection.weight", u), "up_blocks.3.resnets.2.conv_shortcut.weight");
  EXPECT_EQ(apply_renames("model.diffusion_model.middle_block.2.emb_layers.1.weight", u), "mid_block.resnets.1.time_emb_proj.weight");
  const auto v = ldm_vae_renames({{"block_out_channels", {128, 256, 512, 512}}, {"layers_per_block", 2}});
  EXPECT_EQ(apply_renames("first_stage_model.decoder.up.3.block.0.conv1.weight", v), "decoder.up_blocks.0.resnets.0.conv1.weight");
  EXPECT_EQ(apply_renames("first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", v), "encoder.down_blocks.1.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(apply_renames("first_stage_model.decoder.mid.attn_1.proj_out.bias", v), "decoder.mid_block.attentions.0.to_out.0.bias");
  EXPECT_EQ(apply_renames("first_stage_model.post_quant_conv.weight", v), "post_quant_conv.weight");
}

TEST(SingleFileLayout, NotACheckpointIsNamed) {
  test::TempDir dir;
  save_safetensors(dir / "x.safetensors", NamedTensors{{"w", torch::ones({1})}});
  try {
    open_single_file(dir / "x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a Stable Diffusion single-file checkpoint"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamgen
