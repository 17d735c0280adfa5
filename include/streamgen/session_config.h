#pragma once
// The text messages a browser session sends to `streamgen serve` (see server.h), parsed and
// range-checked without touching a model: what a message asks to change, or one Error naming the
// field and what it must be. Torch-free so that the fuzzer builds it on its own.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {

// Stable Diffusion sessions take img2img frames (or generate txt2img); StreamDiT sessions stream
// text-to-video ("t2v") and take only a prompt, guidance and seed.
enum class SessionKind { StableDiffusion, TextToVideo };

inline constexpr std::size_t kMaxPromptChars = 2000;

// Fields the message set; absent ones keep the session's current value.
struct SessionConfigUpdate {
  std::optional<std::string> mode;             // "img2img" | "txt2img" (SD), "t2v" (StreamDiT)
  std::optional<std::string> prompt, negative_prompt;
  std::optional<std::string> cfg;              // "none" | "full" | "self" | "initialize"
  std::optional<double> guidance, delta;
  std::optional<std::uint64_t> seed;
  std::optional<std::vector<std::int64_t>> t_index;  // 1 to 8 entries; their range is the scheduler's to check
  int blend_frames = 0;                        // prompt change cross-faded over this many frames
  // One per LoRA the server loaded (serve --lora), each in [-kMaxLoraScale, kMaxLoraScale]; the count is the
  // server's to check. The models are shared: the change reaches every session.
  std::optional<std::vector<double>> lora_scales;
  // One per ControlNet the server loaded (serve --controlnet), each in [0, kMaxControlNetScale]; per session.
  std::optional<std::vector<double>> controlnet_scales;
  std::optional<std::string> control;  // "canny" | "frame": what the ControlNets see of each frame
};

inline constexpr double kMaxControlNetScale = 5.0;

inline constexpr std::size_t kMaxLoras = 16;
inline constexpr double kMaxLoraScale = 10.0;

// `text`: one WebSocket text message, a JSON object {"type": "config", ...}. Unknown fields, wrong
// types and values out of range are errors (streamgen::Error) that name the field.
SessionConfigUpdate parse_session_message(std::string_view text, SessionKind kind);

}  // namespace streamgen
