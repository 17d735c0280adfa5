#pragma once
// The one exception type streamgen throws for bad input. Messages name the file, the tensor or
// option involved and what was expected, so a user can act on them without a debugger.
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A file whose bytes do not follow its format (safetensors, JSON, index files).
class FormatError : public Error {
 public:
  using Error::Error;
};

// A checkpoint that does not fit the module it is loaded into.
class StateDictError : public Error {
 public:
  using Error::Error;
};

// `text` made safe to print in a message, a terminal or a log: valid UTF-8 is kept, every byte that
// is not (a hostile file's name or a corrupt header), and control characters other than newline and
// tab (terminal escape sequences), become \xNN.
std::string printable(std::string_view text);

// One problem per indented line, for errors that report every problem at once; past `shown` lines
// the rest are counted ("... and 12 more").
std::string indented_lines(const std::vector<std::string>& lines, std::size_t shown = 24);

}  // namespace streamgen
