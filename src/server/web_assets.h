#pragma once
// The web page's files (web/ in the repository), compiled into the binary by cmake/embed_web.cmake.
#include <optional>
#include <string_view>
#include <utility>

namespace streamgen {

// "/index.html" -> {bytes, content type}; nullopt for anything else.
std::optional<std::pair<std::string_view, std::string_view>> web_asset(std::string_view path);

}  // namespace streamgen
