// The browser's config messages, parsed without a model: every field's type and range, unknown
// fields, and what applies to which kind of session.
#include <gtest/gtest.h>

#include "streamgen/error.h"
#include "streamgen/session_config.h"

namespace streamgen {
namespace {

std::string session_config_error(const std::string& text, SessionKind kind = SessionKind::StableDiffusion) {
  try {
    parse_session_message(text, kind);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(SessionConfig, AStableDiffusionConfigSetsWhatItNames) {
  const auto u = parse_session_message(
      R"({"type":"config","mode":"txt2img","prompt":"a cat","guidance":1.5,"delta":0.5,"seed":7,"t_index":[20,40],"cfg":"full","blend_frames":12,"lora_scales":[0.5,-1]})",
      SessionKind::StableDiffusion);
  EXPECT_EQ(u.mode, "txt2img");
  EXPECT_EQ(u.prompt, "a cat");
  EXPECT_FALSE(u.negative_prompt);
  EXPECT_EQ(u.guidance, 1.5);
  EXPECT_EQ(u.delta, 0.5);
  EXPECT_EQ(u.seed, 7u);
  EXPECT_EQ(u.t_index, (std::vector<std::int64_t>{20, 40}));
  EXPECT_EQ(u.cfg, "full");
  EXPECT_EQ(u.blend_frames, 12);
  EXPECT_EQ(u.lora_scales, (std::vector<double>{0.5, -1.0}));
  const auto empty = parse_session_message(R"({"type":"config"})", SessionKind::StableDiffusion);
  EXPECT_FALSE(empty.mode || empty.prompt || empty.guidance || empty.seed || empty.t_index || empty.cfg || empty.lora_scales);
}

TEST(SessionConfig, EveryBadFieldIsNamed) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json", "must be a JSON object"},
      {"[1,2]", "a JSON object with a \"type\""},
      {R"({"type":"dance"})", "unknown message type 'dance'"},
      {R"({"type":"config","colour":"red"})", "unknown field \"colour\" in a Stable Diffusion config (known: mode, prompt,"},
      {R"({"type":"config","guidance":"high"})", "\"guidance\" must be a number"},
      {R"({"type":"config","guidance":21})", "\"guidance\" must be in [0, 20], got 21"},
      {R"({"type":"config","delta":-1})", "\"delta\" must be in [0, 5]"},
      {R"({"type":"config","seed":1.5})", "\"seed\" must be an integer, got 1.5"},
      {R"({"type":"config","seed":-1})", "\"seed\" must be in [0, 4294967295]"},
      {R"({"type":"config","t_index":[]})", "\"t_index\" must be an array of 1 to 8 integers"},
      {R"({"type":"config","t_index":[1,2,3,4,5,6,7,8,9]})", "1 to 8 integers"},
      {R"({"type":"config","t_index":[1.5]})", "\"t_index\" must hold integers"},
      {R"({"type":"config","mode":"video"})", "\"mode\" must be \"img2img\" or \"txt2img\", got 'video'"},
      {R"({"type":"config","cfg":"half"})", "\"cfg\" must be \"none\" or \"full\" or \"self\" or \"initialize\""},
      {R"({"type":"config","prompt":7})", "\"prompt\" must be a string"},
      {R"({"type":"config","prompt":")" + std::string(2001, 'x') + R"("})", "\"prompt\" is longer than 2000 characters"},
      {R"({"type":"config","blend_frames":1000})", "\"blend_frames\" must be in [0, 240]"},
      {R"({"type":"config","lora_scales":0.5})", "\"lora_scales\" must be an array of 1 to 16 numbers"},
      {R"({"type":"config","lora_scales":[]})", "\"lora_scales\" must be an array of 1 to 16 numbers"},
      {R"({"type":"config","lora_scales":["a"]})", "\"lora_scales\" must hold numbers"},
      {R"({"type":"config","lora_scales":[11]})", "\"lora_scales\" must be in [-10, 10], got 11"},
      {R"({"type":"config","controlnet_scales":[-0.5]})", "\"controlnet_scales\" must be in [0, 5], got -0.5"},
      {R"({"type":"config","control":"depth"})", "\"control\" must be \"canny\" or \"frame\", got 'depth'"},
  };
  for (const auto& [text, want] : bad) {
    const auto got = session_config_error(text);
    EXPECT_NE(got.find(want), std::string::npos) << text.substr(0, 80) << "\n  got: " << got << "\n  want: " << want;
  }
}

TEST(SessionConfig, TextToVideoTakesOnlyItsOwnFields) {
  const auto u = parse_session_message(R"({"type":"config","mode":"t2v","prompt":"a red circle","guidance":2,"seed":3})", SessionKind::TextToVideo);
  EXPECT_EQ(u.prompt, "a red circle");
  EXPECT_EQ(u.guidance, 2.0);
  const auto t2v = SessionKind::TextToVideo;
  EXPECT_NE(session_config_error(R"({"type":"config","mode":"img2img"})", t2v).find("\"mode\" must be \"t2v\", got 'img2img'"), std::string::npos);
  EXPECT_NE(session_config_error(R"({"type":"config","guidance":0.5})", t2v).find("[1, 20]"), std::string::npos);
  EXPECT_NE(session_config_error(R"({"type":"config","t_index":[10]})", t2v).find("unknown field \"t_index\" in a text-to-video config"),
            std::string::npos);
}

}  // namespace
}  // namespace streamgen
