// SDXL / SDXL-Turbo through the pipelines: the Euler schedules, the one-step Turbo txt2img against diffusers, the
// stream's UNet rows carrying SDXL's added conditioning, and the live runner on an SDXL folder with TAESD-XL.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "streamgen/component_run.h"
#include "streamgen/error.h"
#include "streamgen/euler_scheduler.h"
#include "streamgen/json_file.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/prompt_encoder.h"
#include "streamgen/safetensors.h"
#include "streamgen/stream_diffusion.h"
#include "streamgen/stream_replay.h"
#include "streamgen/stream_runner.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/txt2img.h"
#include "streamgen/unet_2d_condition.h"
#include "test_util.h"

namespace streamgen {
namespace {

using namespace std::chrono_literals;

EulerScheduler euler(const std::string& spacing, std::int64_t offset = 1, bool ancestral = false) {
  EulerSchedulerConfig c;
  c.timestep_spacing = spacing;
  c.steps_offset = offset;
  c.ancestral = ancestral;
  return EulerScheduler(c);
}

TEST(EulerScheduler, TimestepsFollowTheConfiguredSpacing) {
  // diffusers' set_timesteps(4) for each spacing, 1000 training steps.
  EXPECT_EQ(euler("trailing").schedule(4).timesteps, (std::vector<float>{999, 749, 499, 249}));
  EXPECT_EQ(euler("leading").schedule(4).timesteps, (std::vector<float>{751, 501, 251, 1}));
  EXPECT_EQ(euler("linspace").schedule(4).timesteps, (std::vector<float>{999, 666, 333, 0}));
  EXPECT_EQ(euler("trailing").schedule(1).timesteps, (std::vector<float>{999}));
  // sigma_t = sqrt((1 - a_t) / a_t); a final 0; init_noise_sigma = max sigma, or sqrt(max^2 + 1) for leading.
  const auto a = LcmScheduler().alphas_cumprod();
  const auto s = euler("trailing").schedule(4);
  ASSERT_EQ(s.sigmas.size(), 5u);
  EXPECT_FLOAT_EQ(s.sigmas[1], std::sqrt((1 - a[749].item<float>()) / a[749].item<float>()));
  EXPECT_EQ(s.sigmas.back(), 0.0f);
  EXPECT_FLOAT_EQ(s.init_noise_sigma, s.sigmas[0]);
  const auto l = euler("leading").schedule(4);
  EXPECT_FLOAT_EQ(l.init_noise_sigma, std::sqrt(l.sigmas[0] * l.sigmas[0] + 1));
  EXPECT_THROW(euler("trailing").schedule(0), Error);
}

TEST(EulerScheduler, AncestralStepsSplitTheNextSigmaIntoDownAndFreshNoise) {
  const auto e = euler("trailing", 1, true), plain = euler("trailing");
  const auto x = torch::randn({1, 4, 4, 4}), eps = torch::randn({1, 4, 4, 4}), noise = torch::randn({1, 4, 4, 4});
  const float s = 5.0f, next = 3.0f;
  const float up = std::sqrt(next * next * (s * s - next * next) / (s * s)), down = std::sqrt(next * next - up * up);
  const auto x0 = x - s * eps;
  EXPECT_TRUE(torch::allclose(e.step(eps, x, s, next, noise), x + (x - x0) / s * (down - s) + noise * up, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(plain.step(eps, x, s, next, noise), x + (x - x0) / s * (next - s), 1e-5, 1e-6));
  // The last step (to 0) adds no noise: without any, ancestral and plain Euler agree.
  EXPECT_TRUE(torch::equal(e.step(eps, x, s, 0, {}), plain.step(eps, x, s, 0, {})));
  EXPECT_THROW(e.step(eps, x, s, next, {}), Error);
}

TEST(Sdxl, TurboOneStepTxt2ImgMatchesDiffusers) {
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_turbo_1step.safetensors"));
  const auto scheduler_dir = test::data_path("tiny-sdxl/scheduler");
  const auto path = scheduler_dir / "scheduler_config.json";
  const EulerScheduler scheduler(EulerSchedulerConfig::from_json(read_json_file(path), path.string()));
  EXPECT_TRUE(scheduler.config().ancestral);
  const auto s = scheduler.schedule(1);
  EXPECT_EQ(s.timesteps, (std::vector<float>{golden.tensor("timestep").item<float>()}));
  EXPECT_FLOAT_EQ(s.init_noise_sigma, golden.tensor("sigma").item<float>());

  TensorMap in;
  for (const auto* k : {"x_T", "input_ids", "input_ids_2", "time_ids", "timestep"}) in[k] = golden.tensor(k);
  const auto out = run_component(Component::Txt2Img, test::data_path("tiny-sdxl"), in, {});
  const auto d = compare_tensors(out.at("out_latents"), golden.tensor("out_latents"));
  EXPECT_FALSE(d.non_finite);
  EXPECT_LE(d.rel, test::kFp32Tol) << "out_latents max abs " << d.max_abs;
  const auto dd = compare_tensors(out.at("decoded"), golden.tensor("decoded"));
  EXPECT_FALSE(dd.non_finite);
  EXPECT_LE(dd.max_abs, 1e-4);

  // A timestep the 1-step schedule does not have is named, not silently replaced.
  in["timestep"] = torch::tensor({500.0f});
  test::expect_error_mentions([&] { run_component(Component::Txt2Img, test::data_path("tiny-sdxl"), in, {}); },
                              "are not the Euler ancestral schedule's for 1 step(s)");
}

TEST(Sdxl, PromptEncoderAndTimeIdsFeedTheUNet) {
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_turbo_1step.safetensors"));
  const auto prompts = PromptEncoder::load(test::data_path("tiny-sdxl"), {});
  ASSERT_TRUE(prompts.sdxl());
  const auto cond = prompts.encode({"a cinematic photo of a red fox in the snow", "an astronaut riding a horse on mars, 4k, highly detailed"});
  EXPECT_LE(compare_tensors(cond.encoder_hidden_states, golden.tensor("prompt_embeds")).rel, test::kFp32Tol);
  EXPECT_LE(compare_tensors(cond.text_embeds, golden.tensor("pooled_prompt_embeds")).rel, test::kFp32Tol);
  auto unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
  const auto full = condition_for(cond, unet->config, 64, 64);
  EXPECT_TRUE(torch::equal(full.time_ids, golden.tensor("time_ids")));
  auto sd15 = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  test::expect_error_mentions([&] { prompts.check_fits(sd15->config); }, "its UNet has no added conditioning");
  const auto sd15_prompts = PromptEncoder::load(test::data_path("tiny-sd15"), {});
  test::expect_error_mentions([&] { sd15_prompts.check_fits(unet->config); }, "it needs text_encoder_2/ and tokenizer_2/");
}

// One stream step on an SDXL UNet is the LCM step of the UNet called with the prompt's text_embeds and time_ids,
// on every slot's rows (and the CFG rows of the negative prompt).
TEST(Sdxl, StreamRowsCarryTheAddedConditioning) {
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
  const auto prompts = PromptEncoder::load(test::data_path("tiny-sdxl"), {});
  const auto both = condition_for(prompts.encode({"a red fox", ""}), unet->config, 64, 64);
  StreamDiffusionConfig c;
  c.t_index_list = {20, 40};
  c.cfg = CfgType::Full;
  c.guidance_scale = 1.5;
  c.warmup = Warmup::Zeros;
  const auto noise = torch::randn({2, 4, 8, 8});
  StreamDiffusion stream(unet, LcmScheduler{}, c, noise);
  stream.set_embeddings(both.narrow(0, 1), both.narrow(1, 1));
  const auto z = torch::randn({1, 4, 8, 8});
  const auto out = stream.step(z);

  const LcmScheduler lcm;
  const auto ts = stream.timesteps();
  const auto x = torch::cat({std::sqrt(lcm.alpha_prod(ts[0])) * z + std::sqrt(1 - lcm.alpha_prod(ts[0])) * noise[0].unsqueeze(0),
                             torch::zeros({1, 4, 8, 8})});
  const auto t = torch::tensor(ts);
  const auto eps_c = unet->forward(x, t, both.narrow(0, 1).expand(2));
  const auto eps_u = unet->forward(x, t, both.narrow(1, 1).expand(2));
  const auto eps = eps_u + 1.5 * (eps_c - eps_u);
  for (std::int64_t k = 0; k < 2; ++k) {
    const auto s = lcm.scalings(ts[k]);
    const float a = std::sqrt(lcm.alpha_prod(ts[k])), b = std::sqrt(1 - lcm.alpha_prod(ts[k]));
    const auto x0 = s.c_out * ((x[k] - b * eps[k]) / a) + s.c_skip * x[k];
    EXPECT_LE(compare_tensors(out.x0_batch[k], x0).rel, test::kFp32Tol) << "slot " << k;
  }
  // Without its added conditioning an SDXL stream refuses to start.
  test::expect_error_mentions([&] { stream.set_embeddings(both.encoder_hidden_states.narrow(0, 0, 1)); }, "the UNet is SDXL's");
}

// A replay case for an SDXL UNet carries the pooled embedding and time_ids beside the token embeddings; replayed, it
// is the stream run directly with them.
TEST(Sdxl, ReplayCasesCarryTheAddedConditioning) {
  test::TempDir dir;
  torch::NoGradGuard no_grad;
  const auto prompts = PromptEncoder::load(test::data_path("tiny-sdxl"), {});
  const auto cond = prompts.encode({"a red fox"});
  const auto time_ids = default_time_ids(64, 64);
  const auto x_T = torch::randn({3, 4, 8, 8}), noise = torch::randn({2, 4, 8, 8});
  const nlohmann::json config = {{"mode", "txt2img"}, {"t_index_list", {20, 40}}, {"cfg_type", "none"}, {"guidance_scale", 1.0}, {"delta", 1.0},
                                 {"do_add_noise", true}, {"use_denoising_batch", true}, {"calls", 3}, {"height", 64}, {"width", 64}};
  NamedTensors tensors{{"cond_embeds", cond.encoder_hidden_states}, {"cond_text_embeds", cond.text_embeds}, {"time_ids", time_ids},
                       {"x_T", x_T}, {"init_noise", noise}};
  const auto file = dir / "case.safetensors";
  save_safetensors(file, tensors, {{"config", config.dump()}});
  StreamReplayOptions o;
  o.case_file = file;
  o.model = test::data_path("tiny-sdxl");
  o.taesd = test::data_path("taesdxl");
  const auto out = replay_stream_case(o).at("out_latents");

  StreamDiffusionConfig c;
  c.t_index_list = {20, 40};
  c.txt2img = true;
  c.warmup = Warmup::Zeros;
  c.rcfg_form = RcfgForm::Recursive;
  StreamDiffusion stream(load_unet_2d_condition(test::data_path("tiny-sdxl/unet")), LcmScheduler{}, c, noise);
  stream.set_embeddings(UNetConditioning(cond.encoder_hidden_states, cond.text_embeds, time_ids));
  for (std::int64_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(out[i], stream.step(x_T[i].unsqueeze(0)).latents[0])) << "call " << i;

  tensors.erase(tensors.begin() + 2);  // no time_ids
  save_safetensors(file, tensors, {{"config", config.dump()}});
  test::expect_error_mentions([&] { replay_stream_case(o); }, "the case needs 'time_ids'");
}

TEST(Sdxl, LiveStreamWithTaesdXlAndPromptChanges) {
  StreamRunnerOptions o;
  o.model = test::data_path("tiny-sdxl");
  o.taesd = test::data_path("taesdxl");
  o.stream.t_index_list = {32, 45};
  o.stream.cfg = CfgType::Self;
  o.prompt = "a red fox in the snow";
  o.width = 64;
  o.height = 64;
  StreamRunner r(o);
  const auto frame = torch::randint(0, 256, {3, 64, 64}, torch::kUInt8);
  torch::Tensor first, changed;
  for (int i = 0; i < 4; ++i) {
    r.push(frame);
    auto f = r.pop(20s);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->image_u8.sizes(), (std::vector<std::int64_t>{3, 64, 64}));
    first = f->image_u8;
  }
  r.set_prompt("an astronaut riding a horse on mars");
  for (int i = 0; i < 6; ++i) {
    r.push(frame);
    auto f = r.pop(20s);
    ASSERT_TRUE(f.has_value());
    changed = f->image_u8;
  }
  EXPECT_FALSE(torch::equal(first, changed)) << "the new prompt (both encoders, pooled projection) reaches the UNet";
  EXPECT_GE(r.stats().frames_out, 10u);
  r.stop();
}

}  // namespace
}  // namespace streamgen
