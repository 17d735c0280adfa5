#pragma once
// Typed reads from a model's config.json with errors that name the file and the field.
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/error.h"

namespace streamgen {

namespace detail {
template <typename T>
struct is_integer_vector : std::false_type {};
template <typename U>
struct is_integer_vector<std::vector<U>> : std::bool_constant<std::is_integral_v<U> && !std::is_same_v<U, bool>> {};

// nlohmann converts a JSON float to an integer with a plain cast, undefined for 1e300: an integer
// field may hold a float only if it is a whole number within 64 bits (configs do write 4.0).
inline void check_integral(const nlohmann::json& v, const char* key, const std::string& source) {
  if (v.is_array()) {
    for (const auto& e : v) check_integral(e, key, source);
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(d == std::floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0))
      throw FormatError(source + ": field '" + key + "' must hold integers, found " + v.dump());
  } else if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    throw FormatError(source + ": field '" + key + "' holds an integer over 2^63-1: " + v.dump());
  }
}
}  // namespace detail

template <typename T>
T config_value(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if constexpr ((std::is_integral_v<T> && !std::is_same_v<T, bool>) || detail::is_integer_vector<T>::value) detail::check_integral(j[key], key, source);
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw FormatError(source + ": field '" + key + "' has the wrong type (" + j[key].dump() + ")");
  }
}

// The same for a field that must be present.
template <typename T>
T config_required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) throw FormatError(source + ": config has no '" + key + "'");
  return config_value<T>(j, key, T{}, source);
}

// Sizes and counts a model is built from: each must lie in [lo, hi], or no model can be built from
// the config (and a hostile one could ask for terabytes or shift past 63 bits).
inline void config_check_range(std::int64_t v, std::int64_t lo, std::int64_t hi, const char* key, const std::string& source) {
  if (v < lo || v > hi)
    throw FormatError(source + ": '" + key + "' is " + std::to_string(v) + ", expected " + std::to_string(lo) + ".." + std::to_string(hi));
}
inline void config_check_range(const std::vector<std::int64_t>& v, std::int64_t lo, std::int64_t hi, const char* key, const std::string& source) {
  for (const auto x : v) config_check_range(x, lo, hi, key, source);
}
// GroupNorm over each block's channels: the groups must divide every one of them.
inline void config_check_groups(const std::vector<std::int64_t>& channels, std::int64_t groups, const std::string& source) {
  config_check_range(groups, 1, 1024, "norm_num_groups", source);
  for (const auto ch : channels)
    if (ch % groups != 0)
      throw FormatError(source + ": block_out_channels " + std::to_string(ch) + " is not divisible into norm_num_groups " + std::to_string(groups));
}
inline void config_check_positive(double v, const char* key, const std::string& source) {
  if (!(v > 0 && std::isfinite(v))) throw FormatError(source + ": '" + key + "' must be a positive number, got " + std::to_string(v));
}

}  // namespace streamgen
