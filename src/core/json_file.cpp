#include "streamgen/json_file.h"

#include <fstream>
#include <sstream>

#include "streamgen/error.h"

namespace streamgen {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("'" + path.string() + "' is a directory, expected a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path.string() + "'");
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    return nlohmann::json::parse(buf.str());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace streamgen
