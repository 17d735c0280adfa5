#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/state_dict.h"
#include "test_util.h"

namespace streamgen {
namespace {

struct BlockImpl : torch::nn::Module {
  BlockImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 3)));
    running = register_buffer("running", torch::zeros({3}));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::Tensor running;
};
TORCH_MODULE(Block);

struct NetImpl : torch::nn::Module {
  NetImpl() {
    proj = register_module("proj", torch::nn::Linear(4, 3));
    block = register_module("block", Block());
  }
  torch::nn::Linear proj{nullptr};
  Block block{nullptr};
};
TORCH_MODULE(Net);

NamedTensors full_checkpoint(torch::ScalarType dtype = torch::kFloat32) {
  return {{"proj.weight", torch::randn({3, 4}).to(dtype)},
          {"proj.bias", torch::randn({3}).to(dtype)},
          {"block.conv.weight", torch::randn({3, 2, 3, 3}).to(dtype)},
          {"block.conv.bias", torch::randn({3}).to(dtype)},
          {"block.running", torch::randn({3}).to(dtype)}};
}

WeightSet save_and_open(const test::TempDir& dir, const NamedTensors& t) {
  save_safetensors(dir / "ckpt.safetensors", t);
  return WeightSet::open(dir / "ckpt.safetensors");
}

TEST(StateDict, LoadsParametersAndBuffersConvertingDtype) {
  test::TempDir dir;
  for (auto dtype : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    const auto ckpt = full_checkpoint(dtype);
    Net net;
    const auto report = load_state_dict(*net, save_and_open(dir, ckpt));
    EXPECT_TRUE(report.ok());
    EXPECT_EQ(report.loaded.size(), 5u);
    EXPECT_TRUE(torch::equal(net->proj->weight, ckpt[0].second.to(torch::kFloat32)));
    EXPECT_TRUE(torch::equal(net->block->running, ckpt[4].second.to(torch::kFloat32)));
    EXPECT_EQ(net->proj->weight.scalar_type(), torch::kFloat32);  // the module keeps its dtype
  }
}

TEST(StateDict, IntoABf16Module) {
  test::TempDir dir;
  const auto ckpt = full_checkpoint();
  Net net;
  net->to(torch::kBFloat16);
  load_state_dict(*net, save_and_open(dir, ckpt));
  EXPECT_EQ(net->proj->weight.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(net->proj->weight, ckpt[0].second.to(torch::kBFloat16)));
}

TEST(StateDict, ReportsMissingUnexpectedAndWrongShapeTogether) {
  test::TempDir dir;
  auto ckpt = full_checkpoint();
  ckpt.erase(ckpt.begin() + 3);                               // block.conv.bias missing
  ckpt[0].second = torch::randn({3, 5});                       // proj.weight wrong shape
  ckpt.emplace_back("extra.weight", torch::randn({1}));        // unexpected
  ckpt.emplace_back("block.other", torch::randn({1}));         // unexpected
  Net net;
  const auto before = net->proj->bias.clone();
  try {
    load_state_dict(*net, save_and_open(dir, ckpt));
    FAIL() << "strict load accepted a bad checkpoint";
  } catch (const StateDictError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("1 missing, 2 unexpected, 1 with the wrong shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("block.conv.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("block.other"), std::string::npos) << msg;
    EXPECT_NE(msg.find("proj.weight: checkpoint [3, 5], module [3, 4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ckpt.safetensors"), std::string::npos) << msg;
  }
  EXPECT_TRUE(torch::equal(net->proj->bias, before)) << "nothing is copied when strict loading fails";
}

TEST(StateDict, NonStrictLoadsWhatFitsAndReports) {
  test::TempDir dir;
  auto ckpt = full_checkpoint();
  ckpt.erase(ckpt.begin() + 3);
  ckpt.emplace_back("extra", torch::randn({1}));
  Net net;
  LoadOptions opt;
  opt.strict = false;
  const auto report = load_state_dict(*net, save_and_open(dir, ckpt), opt);
  EXPECT_EQ(report.missing, std::vector<std::string>{"block.conv.bias"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra"});
  EXPECT_EQ(report.loaded.size(), 4u);
  EXPECT_TRUE(torch::equal(net->proj->weight, ckpt[0].second));
}

TEST(StateDict, RenameTableMapsAlternativeLayouts) {
  test::TempDir dir;
  NamedTensors ckpt;
  for (auto& [name, t] : full_checkpoint()) ckpt.emplace_back("model.diffusion_model." + name, t);
  ckpt.emplace_back("first_stage_model.encoder.w", torch::ones({1}));
  Net net;
  LoadOptions opt;
  opt.renames = {{"model.diffusion_model.", ""}};
  opt.ignore_unexpected = [](std::string_view k) { return k.rfind("first_stage_model.", 0) == 0; };
  const auto report = load_state_dict(*net, save_and_open(dir, ckpt), opt);
  EXPECT_TRUE(report.ok());
  EXPECT_TRUE(torch::equal(net->block->conv->weight, ckpt[2].second));
  EXPECT_EQ(apply_renames("a.b", {{"x.", "y."}, {"a.", "z."}}), "z.b");
}

TEST(StateDict, RenamesThatCollideAreRefused) {
  test::TempDir dir;
  auto ckpt = full_checkpoint();
  ckpt.emplace_back("old.proj.bias", torch::randn({3}));
  Net net;
  LoadOptions opt;
  opt.renames = {{"old.", ""}};
  EXPECT_THROW(load_state_dict(*net, save_and_open(dir, ckpt), opt), StateDictError);
}

}  // namespace
}  // namespace streamgen
