#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/weight_set.h"
#include "test_util.h"

namespace streamgen {
namespace {

using test::TempDir;

void write_index(const std::filesystem::path& p, const std::map<std::string, std::string>& weight_map) {
  nlohmann::json j;
  j["metadata"] = {{"total_size", 0}};
  j["weight_map"] = weight_map;
  test::write_bytes(p, j.dump());
}

TEST(WeightSet, ShardedIndexJoinsShards) {
  TempDir dir;
  save_safetensors(dir / "m-00001-of-00002.safetensors", NamedTensors{{"a", torch::ones({2})}, {"b", torch::zeros({3})}});
  save_safetensors(dir / "m-00002-of-00002.safetensors", NamedTensors{{"c", torch::full({4}, 7.0)}});
  write_index(dir / "m.safetensors.index.json",
              {{"a", "m-00001-of-00002.safetensors"}, {"b", "m-00001-of-00002.safetensors"}, {"c", "m-00002-of-00002.safetensors"}});
  const auto w = WeightSet::open(dir / "m.safetensors.index.json");
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(w.files().size(), 2u);
  EXPECT_EQ(w.file_of("c").filename(), "m-00002-of-00002.safetensors");
  EXPECT_FLOAT_EQ(w.tensor("c")[3].item<float>(), 7.0f);
}

TEST(WeightSet, IndexThatDisagreesWithItsShardsIsRefused) {
  TempDir dir;
  save_safetensors(dir / "s1.safetensors", NamedTensors{{"a", torch::ones({2})}});
  save_safetensors(dir / "s2.safetensors", NamedTensors{{"b", torch::ones({2})}});
  auto expect_error = [&](const std::map<std::string, std::string>& map, const std::string& want) {
    write_index(dir / "i.json", map);
    try {
      WeightSet::open(dir / "i.json");
      ADD_FAILURE() << "accepted: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  expect_error({{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"x", "s2.safetensors"}}, "lists tensor 'b' in 's1.safetensors', but it is in 's2.safetensors'");
  expect_error({{"a", "s1.safetensors"}, {"zz", "s2.safetensors"}}, "lists tensor 'zz' in 's2.safetensors', which does not hold it");
  expect_error({{"a", "s1.safetensors"}, {"q", "missing.safetensors"}}, "missing.safetensors");
  expect_error({{"a", "../s1.safetensors"}}, "must be a file name beside the index");
}

TEST(WeightSet, IndexNotListingAShardTensorIsRefused) {
  TempDir dir;
  save_safetensors(dir / "s1.safetensors", NamedTensors{{"a", torch::ones({2})}, {"hidden", torch::ones({1})}});
  write_index(dir / "i.json", {{"a", "s1.safetensors"}});
  EXPECT_THROW(WeightSet::open(dir / "i.json"), FormatError);
}

TEST(WeightSet, SameTensorInTwoFilesIsRefused) {
  TempDir dir;
  save_safetensors(dir / "x.safetensors", NamedTensors{{"a", torch::ones({2})}});
  save_safetensors(dir / "y.safetensors", NamedTensors{{"a", torch::ones({2})}});
  EXPECT_THROW(WeightSet::from_files({dir / "x.safetensors", dir / "y.safetensors"}), FormatError);
}

class ComponentFolderTest : public ::testing::Test {
 protected:
  void write_config() { test::write_bytes(dir / "config.json", R"({"_class_name": "Thing", "width": 8})"); }
  TempDir dir;
};

TEST_F(ComponentFolderTest, DiffusersNameIsPreferred) {
  write_config();
  save_safetensors(dir / "diffusion_pytorch_model.safetensors", NamedTensors{{"w", torch::ones({2})}});
  save_safetensors(dir / "diffusion_pytorch_model.fp16.safetensors", NamedTensors{{"w", torch::ones({2}, torch::kHalf)}});
  const auto c = open_component(dir.path());
  EXPECT_EQ(c.config["width"], 8);
  EXPECT_EQ(c.weights_path.filename(), "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(open_component(dir.path(), "fp16").weights.tensor("w").scalar_type(), torch::kHalf);
}

TEST_F(ComponentFolderTest, Fp16VariantIsTheFallback) {
  write_config();
  save_safetensors(dir / "diffusion_pytorch_model.fp16.safetensors", NamedTensors{{"w", torch::ones({2}, torch::kHalf)}});
  EXPECT_EQ(open_component(dir.path()).weights_path.filename(), "diffusion_pytorch_model.fp16.safetensors");
}

TEST_F(ComponentFolderTest, TransformersNameAndShardedVariant) {
  write_config();
  save_safetensors(dir / "model.fp16-00001-of-00001.safetensors", NamedTensors{{"w", torch::ones({2}, torch::kHalf)}});
  write_index(dir / "model.safetensors.index.fp16.json", {{"w", "model.fp16-00001-of-00001.safetensors"}});
  const auto c = open_component(dir.path(), "fp16");
  EXPECT_EQ(c.weights_path.filename(), "model.safetensors.index.fp16.json");
  EXPECT_TRUE(c.weights.contains("w"));
}

TEST_F(ComponentFolderTest, ErrorsSayWhatWasLookedFor) {
  try {
    open_component(dir.path(), "fp16");
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("diffusion_pytorch_model.fp16.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.safetensors.index.fp16.json"), std::string::npos) << msg;
  }
  test::write_bytes(dir / "diffusion_pytorch_model.bin", "pickle");
  try {
    open_component(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PyTorch pickle"), std::string::npos) << e.what();
  }
  save_safetensors(dir / "diffusion_pytorch_model.safetensors", NamedTensors{{"w", torch::ones({2})}});
  try {
    open_component(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no config.json"), std::string::npos) << e.what();
  }
  test::write_bytes(dir / "config.json", "{ not json");
  EXPECT_THROW(open_component(dir.path()), FormatError);
  EXPECT_THROW(open_component(dir / "does-not-exist"), Error);
}

TEST(ComponentFolderGolden, TinySd21UnetFolder) {
  const auto c = open_component(test::data_path("tiny-sd21/unet"));
  EXPECT_EQ(c.config["_class_name"], "UNet2DConditionModel");
  EXPECT_TRUE(c.weights.contains("conv_in.weight"));
  EXPECT_EQ(c.weights.entry("conv_in.weight").dtype, safetensors::DType::F16);
  std::uint64_t params = 0;
  for (const auto& n : c.weights.names()) params += c.weights.entry(n).numel();
  EXPECT_EQ(params, 1106212u);  // the count the golden README gives
  // --dtype auto sizes a pipeline by its UNet, read from the headers alone.
  EXPECT_EQ(stored_parameter_count(test::data_path("tiny-sd21")), 1106212);
  EXPECT_EQ(stored_parameter_count(test::data_path("tiny-sd21/unet")), 1106212);
  EXPECT_THROW(stored_parameter_count(test::data_path("does-not-exist")), Error);
}

}  // namespace
}  // namespace streamgen
