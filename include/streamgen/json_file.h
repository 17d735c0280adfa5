#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace streamgen {

// Reads a JSON file; errors name the file and the position of a syntax error.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace streamgen

namespace streamgen {

// Writes `text` to `path` atomically (a temporary file in the same folder, then renamed over it),
// so an interrupted write leaves the old file or the new one, never half of one.
void write_text_file(const std::filesystem::path& path, const std::string& text);
// Pretty-printed JSON through write_text_file.
void write_json_file(const std::filesystem::path& path, const nlohmann::json& value);

}  // namespace streamgen
