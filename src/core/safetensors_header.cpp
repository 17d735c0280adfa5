#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "streamgen/error.h"
#include "streamgen/safetensors_format.h"

namespace streamgen::safetensors {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t itemsize;
};

constexpr std::array<DTypeInfo, 10> kDTypes{{
    {DType::F64, "F64", 8},
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8},
    {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
}};

// The header is at most three levels deep (object -> entry -> shape array); anything much deeper
// is garbage, and refusing it early bounds the parser's work on hostile input.
constexpr int kMaxJsonDepth = 8;

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(printable(source + ": " + what));
}

[[noreturn]] void fail_tensor(const std::string& source, const std::string& name, const std::string& what) {
  throw FormatError(printable(source + ": tensor '" + name + "': " + what));
}

std::uint64_t read_le_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses the JSON text, refusing duplicate keys at any level (nlohmann would silently keep the
// last one) and absurd nesting.
json parse_json_strict(std::string_view text, const std::string& source) {
  std::vector<std::set<std::string>> keys_per_object;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if (depth > kMaxJsonDepth) fail(source, "header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    switch (event) {
      case json::parse_event_t::object_start:
        keys_per_object.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys_per_object.empty()) keys_per_object.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!keys_per_object.empty() && !keys_per_object.back().insert(key).second) {
          if (depth == 1) fail(source, "tensor name '" + key + "' appears more than once in the header");
          fail(source, "key '" + key + "' appears more than once in one header object");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
}

std::vector<std::int64_t> parse_shape(const json& j, const std::string& source, const std::string& name) {
  if (!j.is_array()) fail_tensor(source, name, "'shape' must be an array of non-negative integers, found " + j.dump());
  std::vector<std::int64_t> shape;
  shape.reserve(j.size());
  for (const auto& d : j) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      fail_tensor(source, name, "shape " + j.dump() + " has a negative dimension");
    if (!d.is_number_unsigned()) fail_tensor(source, name, "shape " + j.dump() + " must hold non-negative integers");
    const auto v = d.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(INT64_MAX))
      fail_tensor(source, name, "shape " + j.dump() + " has a dimension larger than 2^63-1");
    shape.push_back(static_cast<std::int64_t>(v));
  }
  return shape;
}

std::pair<std::uint64_t, std::uint64_t> parse_offsets(const json& j, const std::string& source, const std::string& name) {
  if (!j.is_array() || j.size() != 2 || !j[0].is_number_unsigned() || !j[1].is_number_unsigned())
    fail_tensor(source, name, "'data_offsets' must be [begin, end] with two non-negative integers, found " + j.dump());
  return {j[0].get<std::uint64_t>(), j[1].get<std::uint64_t>()};
}

TensorEntry parse_entry(const std::string& name, const json& j, std::uint64_t data_size, const std::string& source) {
  if (!j.is_object()) fail_tensor(source, name, "entry must be an object with dtype, shape and data_offsets, found " + j.dump());
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!j.contains(field)) fail_tensor(source, name, std::string("entry has no '") + field + "'");
  const json& jd = j["dtype"];
  if (!jd.is_string()) fail_tensor(source, name, "'dtype' must be a string, found " + jd.dump());
  const auto dtype = parse_dtype(jd.get_ref<const std::string&>());
  if (!dtype)
    fail_tensor(source, name, "unknown dtype '" + jd.get<std::string>() + "' (supported: " + supported_dtypes() + ")");

  TensorEntry e;
  e.name = name;
  e.dtype = *dtype;
  e.shape = parse_shape(j["shape"], source, name);
  std::uint64_t numel = 1;
  for (auto d : e.shape)
    if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(d), &numel))
      fail_tensor(source, name, "shape " + shape_string(e.shape) + " overflows a 64-bit element count");
  std::uint64_t expected = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(itemsize(e.dtype)), &expected))
    fail_tensor(source, name, "shape " + shape_string(e.shape) + " overflows a 64-bit byte count");

  std::tie(e.begin, e.end) = parse_offsets(j["data_offsets"], source, name);
  const std::string offsets = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) fail_tensor(source, name, offsets + " are not ordered (begin > end)");
  if (e.end > data_size)
    fail_tensor(source, name, offsets + " run past the end of the data section (" + std::to_string(data_size) + " bytes)");
  if (e.end - e.begin != expected) {
    std::ostringstream os;
    os << offsets << " span " << (e.end - e.begin) << " bytes, expected " << expected << " ("
       << dtype_name(e.dtype) << ", shape " << shape_string(e.shape) << " = " << numel << " elements x "
       << itemsize(e.dtype) << " bytes)";
    fail_tensor(source, name, os.str());
  }
  return e;
}

std::map<std::string, std::string> parse_metadata(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, "__metadata__ must be an object of string -> string, found " + std::string(j.type_name()));
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string())
      fail(source, "__metadata__ must map strings to strings; key '" + k + "' holds a " + v.type_name());
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

}  // namespace

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

std::string_view dtype_name(DType dtype) { return kDTypes[static_cast<std::size_t>(dtype)].name; }
std::size_t itemsize(DType dtype) { return kDTypes[static_cast<std::size_t>(dtype)].itemsize; }

std::string supported_dtypes() {
  std::string s;
  for (const auto& d : kDTypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::uint64_t TensorEntry::numel() const {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Header parse_header(const std::uint8_t* bytes, std::uint64_t size, const std::string& source) {
  if (size == 0) fail(source, "file is empty (0 bytes); expected a safetensors file");
  if (size < 8)
    fail(source, "file is " + std::to_string(size) + " bytes, too short for a safetensors file (expected an 8-byte header length, then a JSON header)");
  const std::uint64_t header_len = read_le_u64(bytes);
  if (header_len > kMaxHeaderBytes)
    fail(source, "header length " + std::to_string(header_len) + " bytes exceeds the " +
                     std::to_string(kMaxHeaderBytes / 1'000'000) + " MB limit (corrupt or not a safetensors file)");
  if (header_len > size - 8)
    fail(source, "header length " + std::to_string(header_len) + " bytes runs past the end of the file (" +
                     std::to_string(size) + " bytes in all; truncated file?)");

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_len);
  const json root = parse_json_strict(text, source);
  if (!root.is_object()) fail(source, std::string("header must be a JSON object, found ") + root.type_name());

  Header h;
  h.data_start = 8 + header_len;
  h.data_size = size - h.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__")
      h.metadata = parse_metadata(value, source);
    else
      h.tensors.push_back(parse_entry(key, value, h.data_size, source));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const TensorEntry* prev = nullptr;
  for (const auto& e : h.tensors) {
    if (e.nbytes() == 0) continue;  // empty tensors occupy no bytes and cannot overlap
    if (prev && e.begin < prev->end) {
      fail(source, "tensors '" + prev->name + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) +
                       ") and '" + e.name + "' [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                       ") overlap in the data section");
    }
    prev = &e;
  }
  return h;
}

}  // namespace streamgen::safetensors
