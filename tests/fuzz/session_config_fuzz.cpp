// libFuzzer entry: the first byte picks the session kind, the rest is a WebSocket text message.
// The parser must accept it with every value in range, or throw streamgen::Error; anything else
// (another exception, a crash, UB, unbounded recursion) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "streamgen/error.h"
#include "streamgen/session_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace streamgen;
  if (size == 0) return 0;
  const auto kind = (data[0] & 1) ? SessionKind::TextToVideo : SessionKind::StableDiffusion;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const auto u = parse_session_message(text, kind);
    if (u.guidance && !(*u.guidance >= 0 && *u.guidance <= 20)) std::abort();
    if (u.delta && !(*u.delta >= 0 && *u.delta <= 5)) std::abort();
    if (u.seed && *u.seed > 4294967295ull) std::abort();
    if (u.t_index && (u.t_index->empty() || u.t_index->size() > 8)) std::abort();
    if (u.blend_frames < 0 || u.blend_frames > 240) std::abort();
    for (const auto* s : {&u.prompt, &u.negative_prompt})
      if (*s && (*s)->size() > kMaxPromptChars) std::abort();
    if (kind == SessionKind::TextToVideo && (u.t_index || u.delta || u.cfg || u.negative_prompt)) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
