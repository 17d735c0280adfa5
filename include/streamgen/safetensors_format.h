#pragma once
// The safetensors container, independent of any tensor library:
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header maps tensor names to {dtype, shape, data_offsets=[begin,end)} (offsets relative to
// the data section) plus an optional "__metadata__" object of string -> string.
// parse_header() validates the whole layout before any tensor byte is looked at.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen::safetensors {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// Upper bound on the JSON header; the reference implementation uses the same 100 MB limit so
// that a corrupt length cannot make us allocate gigabytes.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::optional<DType> parse_dtype(std::string_view name);
std::string_view dtype_name(DType dtype);
std::size_t itemsize(DType dtype);
std::string supported_dtypes();  // "F64, F32, ..." for error messages

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets in the data section
  std::uint64_t end = 0;
  std::uint64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorEntry> tensors;  // in file (data offset) order
  std::map<std::string, std::string> metadata;
  std::uint64_t data_start = 0;      // absolute file offset of the data section
  std::uint64_t data_size = 0;
};

// `bytes` is the whole file (or at least its first `size` bytes). `source` names the file in
// error messages. Throws streamgen::FormatError.
Header parse_header(const std::uint8_t* bytes, std::uint64_t size, const std::string& source);

// Formats a shape as [2, 3, 4].
std::string shape_string(const std::vector<std::int64_t>& shape);

}  // namespace streamgen::safetensors
