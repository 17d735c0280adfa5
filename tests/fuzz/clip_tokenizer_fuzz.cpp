// libFuzzer entry: any bytes as a prompt for the CLIP tokenizer of the tiny SD 1.5 test pipeline
// (real CLIP vocabulary and merges). It must return a well-formed encoding or throw
// streamgen::Error (text that is not UTF-8); any crash, hang or out-of-vocabulary id is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "streamgen/clip_tokenizer.h"
#include "streamgen/error.h"

namespace {
const streamgen::ClipTokenizer* tokenizer = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizer = new streamgen::ClipTokenizer(streamgen::ClipTokenizer::from_folder(STREAMGEN_FUZZ_TOKENIZER_DIR));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace streamgen;
  try {
    const auto e = tokenizer->encode(std::string_view(reinterpret_cast<const char*>(data), size));
    const auto n = static_cast<std::size_t>(tokenizer->max_length());
    if (e.ids.size() != n || e.ids.front() != tokenizer->bos_id()) std::abort();
    if (e.eos_index < 1 || static_cast<std::size_t>(e.eos_index) >= n || e.ids[static_cast<std::size_t>(e.eos_index)] != tokenizer->eos_id()) std::abort();
    if (e.n_untruncated < 2 || e.truncated != (e.n_untruncated > static_cast<int>(n))) std::abort();
    for (const auto id : e.ids)
      if (id < 0 || static_cast<std::size_t>(id) >= tokenizer->vocab_size()) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
