#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace streamgen {

// Reads a JSON file; errors name the file and the position of a syntax error.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace streamgen
