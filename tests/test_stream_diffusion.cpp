// Replays the golden StreamDiffusion configurations call by call (upstream-compatible recursive
// RCFG, zero-initialised buffer) and compares every call's output latent, slot x0s and RCFG state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/json_file.h"
#include "streamgen/similarity_filter.h"
#include "streamgen/stream_diffusion.h"
#include "streamgen/stream_replay.h"
#include "streamgen/tensor_compare.h"
#include "test_util.h"

namespace streamgen {
namespace {

// The golden README's criterion for stream latents (values up to ~120 with 4-step lists).
constexpr double kStreamTol = 1e-4;
// Rows that come from upstream's all-zero start buffer: the UNet sees a constant input, its
// GroupNorms divide ~0 by sqrt(eps), and two correct implementations differ in the last bits of the
// mean they subtract (measured: channels-last vs NCHW, 6.4e-3 relative on these rows). Those
// rows are checked at this looser bound; every row built from real content at kStreamTol.
constexpr double kZeroStartTol = 2e-2;

class StreamGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamGolden, EveryCallMatches) {
  StreamReplayOptions o;
  o.case_file = test::data_path("stream/" + GetParam() + ".safetensors");
  const auto golden = SafetensorsFile::open(o.case_file);
  const auto cfg = nlohmann::json::parse(golden.metadata().at("config"));
  o.model = test::data_path(cfg["model"].get<std::string>());
  o.taesd = test::data_path("taesd");
  o.decode = golden.contains("out_images");
  const auto out = replay_stream_case(o);

  const bool batched = cfg["use_denoising_batch"].get<bool>();
  const auto n = static_cast<std::int64_t>(cfg["t_index_list"].size());
  const std::int64_t calls = cfg["calls"];
  const bool turbo = cfg["mode"] == "turbo";
  if (golden.contains("ssf_processed")) {
    EXPECT_TRUE(torch::equal(out.at("ssf_processed"), golden.tensor("ssf_processed")));
  }
  std::int64_t processed = 0;
  for (std::int64_t i = 0; i < calls; ++i) {
    SCOPED_TRACE("call " + std::to_string(i));
    if (!golden.contains("ssf_processed") || golden.tensor("ssf_processed")[i].item<std::uint8_t>()) ++processed;
    // Slots 0..processed-1 hold real content; later slots still carry the zero start.
    const auto real = batched ? std::min(processed, n) : n;
    const auto got = turbo ? out.at("out_latents") : out.at("out_latents")[i];
    const auto want = turbo ? golden.tensor("out_latents") : golden.tensor("out_latents")[i];
    const auto d = compare_tensors(got, want);
    EXPECT_TRUE(d.within(real == n ? kStreamTol : kZeroStartTol)) << "out_latents rel " << d.rel;
    auto check_rows = [&](const torch::Tensor& g, const torch::Tensor& w, const char* what) {
      const auto dr = compare_tensors(g.narrow(0, 0, real), w.narrow(0, 0, real));
      EXPECT_TRUE(dr.within(kStreamTol)) << what << " (real rows) rel " << dr.rel;
      if (real < n) {
        const auto dz = compare_tensors(g.narrow(0, real, n - real), w.narrow(0, real, n - real));
        EXPECT_TRUE(dz.within(kZeroStartTol)) << what << " (zero-start rows) rel " << dz.rel;
      }
    };
    if (golden.contains("x0_batch")) check_rows(out.at("x0_batch")[i], golden.tensor("x0_batch")[i], "x0_batch");
    if (golden.contains("out_images")) {
      const auto di = compare_tensors(out.at("out_images")[i], golden.tensor("out_images")[i]);
      EXPECT_TRUE(di.within(real == n ? kStreamTol : kZeroStartTol)) << "out_images rel " << di.rel;
    }
    if (golden.contains("stock_after")) check_rows(out.at("stock_after")[i], golden.tensor("stock_after")[i], "stock");
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, StreamGolden,
                         ::testing::Values("i2i_32-45_none", "i2i_0-16-32-45_none", "i2i_0-16-32-45_self_g1.2_d1.0", "i2i_32-45_full_g1.2",
                                           "i2i_32-45_initialize_g1.2_d1.0", "i2i_35_none", "i2i_32-45_self_g1.2_d1.0", "i2i_32-45_initialize_g1.4_d0.5", "i2i_32-45_full_g1.4",
                                           "i2i_0-16-32-45_self_g1.4_d0.5", "i2i_0-16-32-45_full_g1.2", "i2i_0-16-32-45_initialize_g1.4_d0.5",
                                           "i2i_35_self_g1.4_d0.5", "i2i_35_initialize_g1.2_d1.0", "i2i_35_full_g1.4",
                                           "i2i_32-45_self_g1.4_d0.5", "i2i_32-45_self_g1.4_d0.5_noaddnoise", "t2i_0-16-32-45_none", "turbo_t2i_0_none_batch2",
                                           "seq_i2i_32-45_none", "seq_t2i_0-16-32-45_none", "ssf_i2i_32-45_self_g1.2_d1.0",
                                           "promptchange_32-45_self_g1.4_d0.5", "promptchange_0-16-32-45_initialize_g1.2_d1.0"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

TEST(SimilarityFilter, EveryGoldenDecision) {
  const auto j = read_json_file(test::data_path("ssf/ssf.json"));
  const auto frames = SafetensorsFile::open(test::data_path("ssf/ssf_frames.safetensors"));
  for (const auto& c : j["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::vector<double> draws;
    for (const auto& s : c["steps"])
      if (!s["u"].is_null()) draws.push_back(s["u"].get<double>());
    std::size_t next = 0;
    SimilarityFilterOptions o;
    o.threshold = c["threshold"];
    o.max_skip = c["max_skip_frame"];
    o.upstream_counter = true;
    SimilarityFilter ssf(o, [&] { return draws.at(next++); });
    // "file:key" names a tensor in another golden file (the stream frames).
    const auto ref = c["frames"].get<std::string>();
    const auto colon = ref.find(':');
    const auto x = colon == std::string::npos ? frames.tensor(ref) : SafetensorsFile::open(test::data_path(ref.substr(0, colon))).tensor(ref.substr(colon + 1));
    std::string decisions;
    for (std::int64_t i = 0; i < x.size(0); ++i) {
      const auto d = ssf.check(image_u8_to_unit_range(x[i].unsqueeze(0)));
      decisions += d.process ? 'P' : 's';
      const auto& step = c["steps"][static_cast<std::size_t>(i)];
      // A float32 reduction over 49k elements: its summation order differs between LibTorch versions
      // (2e-6 seen under 2.11), far below any threshold the decisions depend on.
      if (!step["cos_f32"].is_null()) {
        EXPECT_NEAR(d.cos, step["cos_f32"].get<double>(), 1e-5) << "frame " << i;
      }
      EXPECT_EQ(d.skip_count, step["skip_count"].get<int>()) << "frame " << i;
    }
    EXPECT_EQ(decisions, c["decisions"].get<std::string>());
  }
}

TEST(SimilarityFilter, ProbabilityRuleAndTheConsecutiveBound) {
  // Identical frames: S = 1, p_skip = 1, so every frame after the first is a skip until the bound.
  SimilarityFilterOptions o;
  o.threshold = 0.98;
  o.max_skip = 3;
  SimilarityFilter ssf(o, [] { return 0.5; });
  const auto frame = torch::rand({3, 8, 8});
  std::string d;
  for (int i = 0; i < 10; ++i) d += ssf.check(frame).process ? 'P' : 's';
  EXPECT_EQ(d, "PsssPsssPs");  // at most max_skip in a row (upstream would allow max_skip + 1)
  // p_skip = (S - eta) / (1 - eta): S = 0.99 -> 0.5, S = 0.98 -> 0.
  SimilarityFilter probe({0.98, 10, false}, [] { return 0.0; });
  const auto a = torch::tensor({1.0f, 0.0f});
  probe.check(a);
  const float angle = std::acos(0.99f);
  const auto dcos = probe.check(torch::tensor({std::cos(angle), std::sin(angle)}));
  EXPECT_NEAR(dcos.p_skip, 0.5, 1e-4);
  SimilarityFilter off({1.0, 10, false}, [] { return 0.0; });
  off.check(a);
  EXPECT_TRUE(off.check(a).process);  // eta >= 1 disables skipping
}

// A UNet that predicts the constant `eps` everywhere (conv_out weights zero, bias eps).
UNet2DConditionModel constant_unet(float eps) {
  auto unet = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  torch::NoGradGuard no_grad;
  unet->conv_out->weight.zero_();
  unet->conv_out->bias.fill_(eps);
  return unet;
}

// The spec's worked example (docs/streamdiffusion.md 4.5): [32, 45], F = 1, self, gamma 1.2,
// delta 1.0, N_0 = 0.5, N_1 = -0.25, constant input latent 1.0, toy model eps_c = 0.1; float64
// reference values.
struct WorkedExample {
  double first, steady;
};

WorkedExample run_example(RcfgForm form, Warmup warmup, double guidance, bool add_noise) {
  StreamDiffusionConfig c;
  c.t_index_list = {32, 45};
  c.cfg = CfgType::Self;
  c.guidance_scale = guidance;
  c.delta = 1.0;
  c.do_add_noise = add_noise;
  c.rcfg_form = form;
  c.warmup = warmup;
  const auto noise = torch::stack({torch::full({4, 8, 8}, 0.5f), torch::full({4, 8, 8}, -0.25f)});
  StreamDiffusion s(constant_unet(0.1f), LcmScheduler{}, c, noise);
  s.set_embeddings(torch::zeros({1, 77, 32}));
  const auto z = torch::ones({1, 4, 8, 8});
  WorkedExample r{};
  r.first = s.step(z).latents.mean().item<double>();
  for (int i = 0; i < 3; ++i) r.steady = s.step(z).latents.mean().item<double>();
  return r;
}

TEST(Stream, SpecWorkedExample) {
  constexpr double kTol = 2e-6;  // float32 against the spec's float64 figures
  const auto explicit_zeros = run_example(RcfgForm::Explicit, Warmup::Zeros, 1.2, true);
  EXPECT_NEAR(explicit_zeros.steady, 1.4423734, kTol);
  EXPECT_NEAR(explicit_zeros.first, -0.0410009, kTol);
  EXPECT_NEAR(run_example(RcfgForm::Explicit, Warmup::Prime, 1.2, true).first, 0.8564971, kTol);
  EXPECT_NEAR(run_example(RcfgForm::Recursive, Warmup::Zeros, 1.2, true).steady, 1.4423734, kTol);
  EXPECT_NEAR(run_example(RcfgForm::Explicit, Warmup::Zeros, 1.0, true).steady, 1.2872728, kTol);
  // Without re-noising the recursion adds a noise the latent does not hold; the explicit ring is exact.
  EXPECT_NEAR(run_example(RcfgForm::Explicit, Warmup::Zeros, 1.2, false).steady, 1.5448756, kTol);
  EXPECT_NEAR(run_example(RcfgForm::Recursive, Warmup::Zeros, 1.2, false).steady, 1.5277919, kTol);
}

TEST(Stream, FrameBufferDelayLine) {
  // eps = 0, no noise: each of the F rows leaves n - 1 calls after it entered, scaled by
  // prod_k (c_out_k + c_skip_k A_k) (1.00000012 for [32, 45]).
  StreamDiffusionConfig c;
  c.t_index_list = {32, 45};
  c.frame_buffer_size = 2;
  c.warmup = Warmup::Zeros;
  StreamDiffusion s(constant_unet(0.0f), LcmScheduler{}, c, torch::zeros({2, 4, 8, 8}));
  s.set_embeddings(torch::zeros({1, 77, 32}));
  const LcmScheduler sched;
  double factor = 1;
  for (auto t : s.timesteps()) factor *= sched.scalings(t).c_out + sched.scalings(t).c_skip * std::sqrt(sched.alpha_prod(t));
  EXPECT_NEAR(factor, 1.00000012, 1e-7);
  torch::Tensor previous;
  for (int call = 0; call < 4; ++call) {
    const auto frames = torch::randn({2, 4, 8, 8});
    const auto out = s.step(frames);
    ASSERT_EQ(out.latents.size(0), 2);  // F frames leave per call
    if (previous.defined()) {
      EXPECT_TRUE(compare_tensors(out.latents, previous * factor).within(1e-6)) << "call " << call;
    }
    previous = frames;
  }
}

TEST(Stream, SelfAndInitializeWithOneSlotAndTwoRows) {
  // No upstream golden covers n = 1 with RCFG or F = 2 (upstream is wrong there); the expectation is
  // derived from the maths of the spec (4.2): with the reference ring R = z, the virtual residual
  // of the single slot is exactly its SDEdit noise N, so eps = delta N + gamma (eps_c - delta N);
  // for initialize it is the real negative prediction (here the toy model's constant 0.1 as well).
  const double gamma = 1.4, delta = 0.5, eps_c = 0.1;
  const LcmScheduler sched;
  const auto t = sched.timesteps(50)[35];
  const double a = std::sqrt(static_cast<double>(sched.alpha_prod(t))), b = std::sqrt(1.0 - sched.alpha_prod(t));
  const double cs = sched.scalings(t).c_skip, co = sched.scalings(t).c_out;
  for (const auto cfg : {CfgType::Self, CfgType::Initialize}) {
    StreamDiffusionConfig c;
    c.t_index_list = {35};
    c.frame_buffer_size = 2;
    c.cfg = cfg;
    c.guidance_scale = gamma;
    c.delta = delta;
    const double noise = 0.3;
    StreamDiffusion s(constant_unet(static_cast<float>(eps_c)), sched, c, torch::full({1, 4, 8, 8}, noise));
    s.set_embeddings(torch::zeros({1, 77, 32}), torch::zeros({1, 77, 32}));
    for (int call = 0; call < 3; ++call) {
      const double z0 = 0.5 + call, z1 = -1.0 - call;  // two different frames per call
      const auto z = torch::stack({torch::full({4, 8, 8}, z0), torch::full({4, 8, 8}, z1)}).to(torch::kFloat32);
      const auto out = s.step(z);
      for (int f = 0; f < 2; ++f) {
        const double zf = f == 0 ? z0 : z1;
        const double x = a * zf + b * noise;
        const double residual = cfg == CfgType::Self ? noise : eps_c;
        const double eps = delta * residual + gamma * (eps_c - delta * residual);
        const double want = co * (x - b * eps) / a + cs * x;
        EXPECT_NEAR(out.latents[f].mean().item<double>(), want, 1e-5 * std::abs(want) + 1e-6) << "call " << call << " row " << f;
      }
    }
  }
}

TEST(Stream, VPredictionModels) {
  // A v-prediction model that outputs v = 0 predicts x0 = A x, so one slot returns
  // (c_out A + c_skip) (A z + B N).
  LcmSchedulerConfig sc;
  sc.prediction_type = "v_prediction";
  const LcmScheduler sched(sc);
  StreamDiffusionConfig c;
  c.t_index_list = {35};
  StreamDiffusion s(constant_unet(0.0f), sched, c, torch::full({1, 4, 8, 8}, 0.3f));
  s.set_embeddings(torch::zeros({1, 77, 32}));
  const auto t = s.timesteps()[0];
  const double a = std::sqrt(static_cast<double>(sched.alpha_prod(t))), b = std::sqrt(1.0 - sched.alpha_prod(t));
  const double want = (sched.scalings(t).c_out * a + sched.scalings(t).c_skip) * (a * 0.7 + b * 0.3);
  EXPECT_NEAR(s.step(torch::full({1, 4, 8, 8}, 0.7f)).latents.mean().item<double>(), want, 1e-5);
}

TEST(Stream, WarmupModes) {
  StreamDiffusionConfig c;
  c.t_index_list = {0, 16, 32, 45};
  c.txt2img = true;
  c.warmup = Warmup::Suppress;
  StreamDiffusion s(constant_unet(0.1f), LcmScheduler{}, c, torch::zeros({4, 4, 8, 8}));
  s.set_embeddings(torch::zeros({1, 77, 32}));
  std::string valid;
  for (int i = 0; i < 5; ++i) valid += s.step(torch::randn({1, 4, 8, 8})).valid ? 'v' : '-';
  EXPECT_EQ(valid, "---vv");
  s.reset();
  EXPECT_FALSE(s.step(torch::randn({1, 4, 8, 8})).valid);
  // Prime: the first output already comes from the first frame (no brown frame).
  c.txt2img = false;
  c.warmup = Warmup::Prime;
  StreamDiffusion p(constant_unet(0.0f), LcmScheduler{}, c, torch::zeros({4, 4, 8, 8}));
  p.set_embeddings(torch::zeros({1, 77, 32}));
  const auto z = torch::randn({1, 4, 8, 8});
  EXPECT_TRUE(compare_tensors(p.step(z).latents, z).within(1e-5));
}

TEST(Stream, BadConfigurationsAreRefused) {
  const auto unet = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  StreamDiffusionConfig c;
  c.t_index_list = {32, 50};
  EXPECT_THROW(StreamDiffusion(unet, LcmScheduler{}, c, torch::zeros({2, 4, 8, 8})), Error);
  c.t_index_list = {32, 45};
  EXPECT_THROW(StreamDiffusion(unet, LcmScheduler{}, c, torch::zeros({3, 4, 8, 8})), Error);
  c.cfg = CfgType::Full;
  StreamDiffusion s(unet, LcmScheduler{}, c, torch::zeros({2, 4, 8, 8}));
  EXPECT_THROW(s.step(torch::zeros({1, 4, 8, 8})), Error);                      // no embeddings yet
  EXPECT_THROW(s.set_embeddings(torch::zeros({1, 77, 32})), Error);             // full + guidance needs uncond
  s.set_embeddings(torch::zeros({1, 77, 32}), torch::zeros({1, 77, 32}));
  EXPECT_THROW(s.step(torch::zeros({2, 4, 8, 8})), Error);                      // F = 1 rows expected
  EXPECT_THROW(parse_cfg_type("double"), Error);
}

}  // namespace
}  // namespace streamgen
