#pragma once
// Typed reads from a model's config.json with errors that name the file and the field.
#include <nlohmann/json.hpp>
#include <string>

#include "streamgen/error.h"

namespace streamgen {

template <typename T>
T config_value(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
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

}  // namespace streamgen
