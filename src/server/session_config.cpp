#include "streamgen/session_config.h"

#include <fmt/core.h>

#include <algorithm>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

#include "streamgen/error.h"

namespace streamgen {
namespace {

using json = nlohmann::json;

// Numbers arrive as JSON doubles from the page; a value is accepted if it lies in [lo, hi].
double number_in(const json& j, const char* key, double lo, double hi) {
  const auto& v = j.at(key);
  if (!v.is_number()) throw Error(fmt::format("\"{}\" must be a number", key));
  const auto x = v.get<double>();
  if (!(x >= lo && x <= hi)) throw Error(fmt::format("\"{}\" must be in [{}, {}], got {}", key, lo, hi, x));
  return x;
}

std::string text_in(const json& j, const char* key) {
  const auto& v = j.at(key);
  if (!v.is_string()) throw Error(fmt::format("\"{}\" must be a string", key));
  auto s = v.get<std::string>();
  if (s.size() > kMaxPromptChars) throw Error(fmt::format("\"{}\" is longer than {} characters", key, kMaxPromptChars));
  return s;
}

std::string one_of(const json& j, const char* key, std::initializer_list<const char*> allowed, const char* why = "") {
  auto s = text_in(j, key);
  std::string list;
  for (const char* a : allowed) {
    if (s == a) return s;
    list += fmt::format("{}\"{}\"", list.empty() ? "" : " or ", a);
  }
  throw Error(fmt::format("{}\"{}\" must be {}, got '{}'", why, key, list, s));
}

// One number per loaded adapter, each in [lo, hi]; the count is the server's to check.
std::vector<double> scales_in(const json& j, const char* key, double lo, double hi, const char* what) {
  const auto& l = j.at(key);
  if (!l.is_array() || l.empty() || l.size() > kMaxLoras)
    throw Error(fmt::format("\"{}\" must be an array of 1 to {} numbers, one per {}", key, kMaxLoras, what));
  std::vector<double> scales;
  for (const auto& v : l) {
    if (!v.is_number()) throw Error(fmt::format("\"{}\" must hold numbers", key));
    const auto x = v.get<double>();
    if (!(x >= lo && x <= hi)) throw Error(fmt::format("\"{}\" must be in [{}, {}], got {}", key, lo, hi, x));
    scales.push_back(x);
  }
  return scales;
}

}  // namespace

SessionConfigUpdate parse_session_message(std::string_view text, SessionKind kind) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception&) {
    throw Error("a text message must be a JSON object");
  }
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) throw Error("a text message must be a JSON object with a \"type\"");
  if (const auto type = j["type"].get<std::string>(); type != "config")
    throw Error(fmt::format("unknown message type '{}' (expected \"config\")", type));

  const bool t2v = kind == SessionKind::TextToVideo;
  static const std::vector<std::string_view> kSdFields{"type", "mode", "prompt", "negative_prompt", "guidance", "delta", "seed", "t_index", "cfg", "blend_frames", "lora_scales", "controlnet_scales", "control"};
  static const std::vector<std::string_view> kT2vFields{"type", "mode", "prompt", "guidance", "seed"};
  const auto& fields = t2v ? kT2vFields : kSdFields;
  for (const auto& item : j.items()) {
    if (std::find(fields.begin(), fields.end(), item.key()) != fields.end()) continue;
    std::string list;
    for (const auto f : fields)
      if (f != "type") list += fmt::format("{}{}", list.empty() ? "" : ", ", f);
    throw Error(fmt::format("unknown field \"{}\" in a {} config (known: {})", item.key(), t2v ? "text-to-video" : "Stable Diffusion", list));
  }

  SessionConfigUpdate u;
  if (j.contains("mode"))
    u.mode = t2v ? one_of(j, "mode", {"t2v"}, "this server streams text-to-video (StreamDiT): ") : one_of(j, "mode", {"img2img", "txt2img"});
  if (j.contains("prompt")) u.prompt = text_in(j, "prompt");
  if (j.contains("negative_prompt")) u.negative_prompt = text_in(j, "negative_prompt");
  // CFG with a scale below 1 is meaningless for the text-to-video sampler.
  if (j.contains("guidance")) u.guidance = number_in(j, "guidance", t2v ? 1.0 : 0.0, 20.0);
  if (j.contains("delta")) u.delta = number_in(j, "delta", 0.0, 5.0);
  if (j.contains("seed")) {
    const auto seed = number_in(j, "seed", 0.0, 4294967295.0);
    if (seed != static_cast<double>(static_cast<std::uint64_t>(seed))) throw Error(fmt::format("\"seed\" must be an integer, got {}", seed));
    u.seed = static_cast<std::uint64_t>(seed);
  }
  if (j.contains("t_index")) {
    const auto& t = j["t_index"];
    if (!t.is_array() || t.empty() || t.size() > 8) throw Error("\"t_index\" must be an array of 1 to 8 integers");
    std::vector<std::int64_t> list;
    for (const auto& v : t) {
      if (!v.is_number_integer()) throw Error("\"t_index\" must hold integers");
      list.push_back(v.get<std::int64_t>());
    }
    u.t_index = std::move(list);
  }
  if (j.contains("cfg")) u.cfg = one_of(j, "cfg", {"none", "full", "self", "initialize"});
  if (j.contains("lora_scales")) u.lora_scales = scales_in(j, "lora_scales", -kMaxLoraScale, kMaxLoraScale, "LoRA");
  if (j.contains("controlnet_scales")) u.controlnet_scales = scales_in(j, "controlnet_scales", 0.0, kMaxControlNetScale, "ControlNet");
  if (j.contains("control")) u.control = one_of(j, "control", {"canny", "frame"});
  if (j.contains("blend_frames")) u.blend_frames = static_cast<int>(number_in(j, "blend_frames", 0, 240));
  return u;
}

}  // namespace streamgen
