// libFuzzer entry: any byte string is a candidate safetensors file. The parser must either
// accept it or throw FormatError; any other exception, crash, leak or UB is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "streamgen/error.h"
#include "streamgen/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto header = streamgen::safetensors::parse_header(data, size, "fuzz-input");
    // Everything the parser accepted must be internally consistent.
    for (const auto& t : header.tensors)
      if (t.end > header.data_size || t.begin > t.end) std::abort();
  } catch (const streamgen::FormatError&) {
  }
  return 0;
}
