// Reading LoRA files of the three namings users have (kohya, diffusers, PEFT) into one module list.
#include <fmt/format.h>
#include <torch/torch.h>

#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "streamgen/error.h"
#include "streamgen/lora.h"
#include "streamgen/safetensors_format.h"
#include "streamgen/weight_set.h"

namespace streamgen {
namespace {

enum class Role { Down, Up, Alpha };

// Where one key of a LoRA file belongs.
struct KeyPart {
  std::string target;
  std::string path;
  bool mangled = false;
  Role role = Role::Down;
  const char* naming = "";  // "kohya", "diffusers" or "peft"
};


// Keys of adapter kinds that are not a plain up/down pair, with what they are, so that the error says
// why rather than "unknown key".
const char* unsupported_kind(std::string_view key) {
  static const std::vector<std::pair<std::string_view, const char*>> kinds = {
      {".hada_", "a LyCORIS LoHa module (Hadamard product)"},
      {".lokr_", "a LyCORIS LoKr module (Kronecker product)"},
      {".lora_mid.", "a LyCORIS LoCon module with a Tucker core (lora_mid)"},
      {".dora_scale", "a DoRA magnitude vector"},
      {".lora_magnitude_vector", "a DoRA magnitude vector"},
      {".lora_B.bias", "a LoRA with a bias term"},
      {".lora_up.bias", "a LoRA with a bias term"},
      {".ia3_", "an (IA)^3 adapter"},
      {".oft_", "an OFT adapter"},
  };
  for (const auto& [marker, kind] : kinds)
    if (key.find(marker) != std::string_view::npos) return kind;
  if (key.ends_with(".diff") || key.ends_with(".diff_b")) return "a full weight difference (LyCORIS 'full')";
  return nullptr;
}

std::optional<KeyPart> kohya_part(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> prefixes = {
      {"lora_unet_", "unet"}, {"lora_te1_", "text_encoder"}, {"lora_te2_", "text_encoder_2"}, {"lora_te_", "text_encoder"}};
  for (const auto& [prefix, target] : prefixes) {
    if (!key.starts_with(prefix)) continue;
    const auto dot = key.find('.');
    if (dot == std::string::npos) return std::nullopt;
    const std::string_view suffix = std::string_view(key).substr(dot + 1);
    KeyPart p{target, key.substr(prefix.size(), dot - prefix.size()), true, Role::Down, "kohya"};
    if (suffix == "lora_down.weight") p.role = Role::Down;
    else if (suffix == "lora_up.weight") p.role = Role::Up;
    else if (suffix == "alpha") p.role = Role::Alpha;
    else return std::nullopt;
    return p;
  }
  return std::nullopt;
}

// diffusers' older attention-processor keys name the processor's LoRA, not the projection it adapts.
std::string processor_to_module(const std::string& path) {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {".processor.to_q_lora", ".to_q"}, {".processor.to_k_lora", ".to_k"}, {".processor.to_v_lora", ".to_v"}, {".processor.to_out_lora", ".to_out.0"}};
  for (const auto& [from, to] : names)
    if (path.ends_with(from)) return path.substr(0, path.size() - from.size()) + to;
  return path;
}

std::optional<KeyPart> diffusers_part(const std::string& key) {
  static const std::vector<std::string> targets = {"unet", "text_encoder", "text_encoder_2"};
  struct Suffix {
    std::string_view text;
    Role role;
    const char* naming;
  };
  static const std::vector<Suffix> suffixes = {
      {".lora_A.weight", Role::Down, "peft"},
      {".lora_B.weight", Role::Up, "peft"},
      {".lora.down.weight", Role::Down, "diffusers"},
      {".lora.up.weight", Role::Up, "diffusers"},
      {".lora_linear_layer.down.weight", Role::Down, "diffusers"},
      {".lora_linear_layer.up.weight", Role::Up, "diffusers"},
      {".down.weight", Role::Down, "diffusers"},  // processor keys: attn1.processor.to_q_lora.down.weight
      {".up.weight", Role::Up, "diffusers"},
      {".alpha", Role::Alpha, "diffusers"},
  };
  const auto dot = key.find('.');
  if (dot == std::string::npos) return std::nullopt;
  const auto target = key.substr(0, dot);
  if (std::find(targets.begin(), targets.end(), target) == targets.end()) return std::nullopt;
  for (const auto& s : suffixes) {
    if (!key.ends_with(s.text) || key.size() <= dot + 1 + s.text.size()) continue;
    auto path = key.substr(dot + 1, key.size() - dot - 1 - s.text.size());
    const bool processor = path.find(".processor.") != std::string::npos;
    const bool plain_pair = s.text == ".down.weight" || s.text == ".up.weight";
    if (plain_pair != processor) continue;  // ".down.weight" alone only in the processor layout
    return KeyPart{target, processor ? processor_to_module(path) : path, false, s.role, s.naming};
  }
  return std::nullopt;
}

struct Pending {
  KeyPart where;
  std::string stem;
  torch::Tensor down, up, alpha;
};

}  // namespace

LoraSpec parse_lora_spec(std::string_view arg, std::string_view option) {
  LoraSpec spec{std::string(arg), 1.0};
  const auto colon = arg.rfind(':');
  if (colon != std::string_view::npos && colon + 1 < arg.size()) {
    const auto number = arg.substr(colon + 1);
    double value = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec == std::errc() && end == number.data() + number.size()) {
      if (!std::isfinite(value)) throw Error(std::string(option) + " " + printable(arg) + ": the scale must be a finite number");
      spec = {std::string(arg.substr(0, colon)), value};
    }
  }
  if (spec.file.empty()) throw Error(std::string(option) + " " + printable(arg) + ": expected PATH or PATH:SCALE");
  return spec;
}

std::string describe_lora_specs(const std::vector<LoraSpec>& loras) {
  std::string out;
  for (const auto& l : loras) out += fmt::format("{}{}:{:g}", out.empty() ? "" : ", ", l.file.filename().string(), l.scale);
  return out;
}

std::string python_float_repr(double value) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);  // shortest round-trip form, as Python's repr
  std::string s(buf, ec == std::errc() ? end : buf);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

LoraFile LoraFile::read(const std::filesystem::path& file) {
  const auto where = printable(file.string());
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) throw Error("LoRA file '" + where + "' does not exist or is not a file");
  const auto weights = WeightSet::open(file);
  std::map<std::string, Pending> pending;  // target + "/" + path -> parts
  std::vector<std::string> problems;
  std::set<std::string> namings;
  for (const auto& key : weights.names()) {
    if (const char* kind = unsupported_kind(key)) {
      problems.push_back(printable(key) + ": " + kind + "; only LoRA / LoCon up-down pairs can be fused");
      continue;
    }
    auto part = kohya_part(key);
    if (!part) part = diffusers_part(key);
    if (!part) {
      problems.push_back(printable(key) + ": not a LoRA key (expected lora_unet_* / lora_te*_* with .lora_down.weight, .lora_up.weight, "
                         ".alpha, or unet.* / text_encoder*.* with .lora_A/.lora_B, .lora.down/.lora.up)");
      continue;
    }
    namings.insert(part->naming);
    auto& p = pending[part->target + "/" + part->path];
    if (p.stem.empty()) p = Pending{*part, part->mangled ? key.substr(0, key.find('.')) : part->target + "." + part->path, {}, {}, {}};
    auto t = weights.tensor(key);
    if (!t.is_floating_point()) {
      problems.push_back(printable(key) + ": dtype " + std::string(c10::toString(t.scalar_type())) + ", expected a floating-point tensor");
      continue;
    }
    t = t.to(torch::kFloat32);  // a float32 tensor stays a zero-copy view of the mapped file, which it keeps alive
    (part->role == Role::Down ? p.down : part->role == Role::Up ? p.up : p.alpha) = t;
  }

  LoraFile out{file, "", {}};
  for (auto& [id, p] : pending) {
    const auto name = printable(p.stem);
    if (!p.down.defined() || !p.up.defined()) {
      if (p.down.defined() || p.up.defined() || p.alpha.defined())
        problems.push_back(name + ": has " + (p.down.defined() ? "a down" : p.up.defined() ? "an up" : "only an alpha") + " matrix but no " +
                           (p.down.defined() ? "up" : "down") + " matrix");
      continue;
    }
    const auto shape = [](const torch::Tensor& t) { return safetensors::shape_string(t.sizes().vec()); };
    const auto& d = p.down;
    const auto& u = p.up;
    std::string bad;
    if (d.dim() != 2 && d.dim() != 4) bad = "down " + shape(d) + " should be [r, in] or [r, in, kh, kw]";
    else if (u.dim() != d.dim()) bad = "up " + shape(u) + " and down " + shape(d) + " should have the same number of dimensions";
    else if (u.dim() == 4 && (u.size(2) != 1 || u.size(3) != 1)) bad = "up " + shape(u) + " should be [out, r, 1, 1]";
    else if (u.size(1) != d.size(0)) bad = "up " + shape(u) + " and down " + shape(d) + " disagree on the rank";
    else if (d.size(0) == 0) bad = "rank 0";
    else if (p.alpha.defined() && p.alpha.numel() != 1) bad = "alpha " + shape(p.alpha) + " should be one number";
    else if (!torch::isfinite(d).all().item<bool>() || !torch::isfinite(u).all().item<bool>() ||
             (p.alpha.defined() && !std::isfinite(p.alpha.item<double>())))
      bad = "holds NaN or infinite values";
    if (!bad.empty()) {
      problems.push_back(name + ": " + bad);
      continue;
    }
    const double alpha = p.alpha.defined() ? p.alpha.item<double>() : static_cast<double>(d.size(0));
    out.modules.push_back(LoraModule{p.where.target, p.where.path, p.where.mangled, d, u, alpha, p.stem});
  }
  if (!problems.empty())
    throw FormatError("LoRA file '" + where + "': " + std::to_string(problems.size()) + " key(s) cannot be used:" + indented_lines(problems));
  if (out.modules.empty()) throw FormatError("LoRA file '" + where + "' holds no LoRA modules (" + std::to_string(weights.size()) + " tensors)");
  for (const auto& n : namings) out.format += (out.format.empty() ? "" : "+") + n;
  return out;
}

std::string LoraFile::summary() const {
  std::map<std::string, int> per_target;
  std::int64_t rmin = INT64_MAX, rmax = 0;
  double amin = INFINITY, amax = -INFINITY;
  for (const auto& m : modules) {
    ++per_target[m.target];
    rmin = std::min(rmin, m.rank());
    rmax = std::max(rmax, m.rank());
    amin = std::min(amin, m.alpha);
    amax = std::max(amax, m.alpha);
  }
  std::string targets;
  for (const auto& [t, n] : per_target) targets += (targets.empty() ? "" : ", ") + t + " " + std::to_string(n);
  auto range = [](double lo, double hi) { return lo == hi ? fmt::format("{:g}", lo) : fmt::format("{:g}-{:g}", lo, hi); };
  return format + ", " + std::to_string(modules.size()) + " modules (" + targets + "), rank " + range(static_cast<double>(rmin), static_cast<double>(rmax)) + ", alpha " + range(amin, amax);
}

}  // namespace streamgen
