// streamgen tensors ls|diff: look inside checkpoints and compare outputs with references.
#include <fmt/core.h>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "commands.h"
#include "streamgen/build_info.h"
#include "streamgen/component_run.h"
#include "streamgen/model_folder.h"
#include "streamgen/safetensors.h"
#include "streamgen/error.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/timing.h"

namespace streamgen::cli {
namespace {

struct LsArgs {
  std::string path;
  bool json = false;
};

void run_ls(const LsArgs& args) {
  const WeightSet w = open_weights(args.path);
  std::uint64_t total_numel = 0, total_bytes = 0;
  nlohmann::ordered_json out;
  out["source"] = w.description();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& f : w.files())
    for (const auto& [k, v] : f.metadata()) meta[k] = v;
  out["metadata"] = meta;
  out["tensors"] = nlohmann::ordered_json::array();
  std::size_t name_width = 4;
  for (const auto& name : w.names()) name_width = std::max(name_width, name.size());
  std::ostringstream table;
  table << fmt::format("{:<{}}  {:<5}  {}\n", "name", name_width, "dtype", "shape");
  for (const auto& name : w.names()) {
    const auto& e = w.entry(name);
    total_numel += e.numel();
    total_bytes += e.nbytes();
    out["tensors"].push_back({{"name", name},
                              {"dtype", std::string(safetensors::dtype_name(e.dtype))},
                              {"shape", e.shape},
                              {"bytes", e.nbytes()}});
    table << fmt::format("{:<{}}  {:<5}  {}\n", name, name_width, safetensors::dtype_name(e.dtype), safetensors::shape_string(e.shape));
  }
  out["count"] = w.size();
  out["numel"] = total_numel;
  out["bytes"] = total_bytes;
  if (args.json) {
    std::cout << out.dump() << std::endl;
    return;
  }
  std::cout << "source: " << w.description() << "\n";
  for (const auto& [k, v] : meta.items()) {
    auto text = v.get<std::string>();
    if (text.size() > 200) text = text.substr(0, 200) + fmt::format("... ({} chars)", text.size());
    std::cout << "metadata " << k << ": " << text << "\n";
  }
  std::cout << table.str();
  std::cout << fmt::format("{} tensors, {} elements, {} bytes\n", w.size(), total_numel, total_bytes) << std::flush;
}

struct DiffArgs {
  std::string a, b;
  double tol = 1e-4;
  std::vector<std::string> only;
  bool ignore_missing = false;
  bool json = false;
};

void run_diff(const DiffArgs& args) {
  const WeightSet a = open_weights(args.a), b = open_weights(args.b);
  std::set<std::string> names;
  if (!args.only.empty()) {
    names.insert(args.only.begin(), args.only.end());
  } else {
    for (const auto& n : a.names()) names.insert(n);
    for (const auto& n : b.names()) names.insert(n);
  }
  bool failed = false;
  std::vector<nlohmann::ordered_json> rows;
  for (const auto& name : names) {
    nlohmann::ordered_json row;
    row["name"] = name;
    if (!a.contains(name) || !b.contains(name)) {
      row["status"] = !a.contains(name) ? "only in B" : "only in A";
      failed |= !args.ignore_missing;
    } else if (a.entry(name).shape != b.entry(name).shape) {
      row["status"] = "shape " + safetensors::shape_string(a.entry(name).shape) + " vs " + safetensors::shape_string(b.entry(name).shape);
      failed = true;
    } else {
      const auto d = compare_tensors(a.tensor(name), b.tensor(name));
      row["max_abs"] = d.max_abs;
      row["rel"] = d.rel;
      row["status"] = d.non_finite ? "NaN/Inf" : (d.within(args.tol) ? "ok" : "FAIL");
      failed |= !d.within(args.tol);
    }
    rows.push_back(row);
  }
  if (args.json) {
    for (const auto& r : rows) std::cout << r.dump() << "\n";
  } else {
    std::size_t w = 4;
    for (const auto& r : rows) w = std::max(w, r["name"].get<std::string>().size());
    std::cout << fmt::format("{:<{}}  {:>12}  {:>12}  {}\n", "name", w, "max_abs", "rel", "status");
    for (const auto& r : rows) {
      if (r.contains("rel"))
        std::cout << fmt::format("{:<{}}  {:>12.4e}  {:>12.4e}  {}\n", r["name"].get<std::string>(), w, r["max_abs"].get<double>(),
                                 r["rel"].get<double>(), r["status"].get<std::string>());
      else
        std::cout << fmt::format("{:<{}}  {:>12}  {:>12}  {}\n", r["name"].get<std::string>(), w, "-", "-", r["status"].get<std::string>());
    }
    std::cout << fmt::format("{}: {} tensors compared with tolerance {:g} (relative ||a-b||/||b||)\n", failed ? "DIFFERENT" : "SAME",
                             rows.size(), args.tol);
  }
  std::cout.flush();
  if (failed) throw ExitCode{kExitMismatch};
}

struct RunArgs {
  std::string model, component, in, prompts, out, prefix, out_prefix, config_from, controlnet;
  double conditioning_scale = 1.0;
  std::vector<std::string> loras;
  ComputeArgs compute;
};

// Outputs are named like the inputs they came from; a run with one LoRA labels them with its scale, as
// the LoRA goldens do (scale0.5.unet.case0.out), so that runs at several scales sit side by side.
std::string output_prefix(const RunArgs& args, const std::vector<LoraSpec>& loras, bool given) {
  if (given) return args.out_prefix;
  if (loras.size() == 1) return "scale" + python_float_repr(loras[0].scale) + "." + args.prefix;
  return args.prefix;
}

std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("cannot open prompts file '" + path + "'");
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    prompts.push_back(line);
  }
  if (prompts.empty()) throw Error("prompts file '" + path + "' has no lines");
  return prompts;
}

void run_run(const RunArgs& args, bool out_prefix_given) {
  const auto component = parse_component(args.component);
  const auto loras = lora_specs(args.loras);
  check_component_loras(component, loras);
  const auto compute = args.compute.resolve();
  const auto start = std::chrono::steady_clock::now();
  TensorMap outputs;
  if (component == Component::Tokenizer) {
    if (args.prompts.empty()) throw Error("tensors run --component tokenizer needs --prompts FILE (one prompt per line)");
    outputs = run_tokenizer(args.model, read_prompts(args.prompts));
  } else {
    if (args.in.empty()) throw Error("tensors run --component " + args.component + " needs --in FILE");
    const auto file = SafetensorsFile::open(args.in);
    TensorMap inputs;
    for (const auto& name : component_inputs(component)) {
      const auto key = args.prefix + name;
      if (!file.contains(key)) throw Error(args.in + ": no input tensor '" + key + "' for component " + args.component);
      inputs.emplace(name, file.tensor(key));
    }
    for (const auto& name : component_sdxl_inputs(component))
      if (file.contains(args.prefix + name)) inputs.emplace(name, file.tensor(args.prefix + name));
    ComponentRunOptions options;
    if (!args.config_from.empty()) options.config_from = args.config_from;
    options.loras = loras;
    options.controlnet = args.controlnet;
    options.conditioning_scale = args.conditioning_scale;
    outputs = run_component(component, args.model, inputs, compute, options);
  }
  const double ms = ms_since(start);
  NamedTensors named;
  const auto prefix = output_prefix(args, loras, out_prefix_given);
  for (auto& [name, t] : outputs) named.emplace_back(prefix + name, t);
  std::map<std::string, std::string> metadata{{"component", args.component}, {"model", args.model}, {"dtype", dtype_label(compute.dtype)},
                                              {"device", compute.device.str()}, {"producer", std::string("streamgen ") + STREAMGEN_VERSION_STRING}};
  if (!loras.empty()) metadata["loras"] = describe_lora_specs(loras);
  save_safetensors(args.out, named, metadata);
  std::cout << fmt::format("wrote {} tensor(s) to {} ({}, {} on {}, {:.1f} ms including loading)\n", named.size(), args.out,
                           args.component, dtype_label(compute.dtype), compute.device.str(), ms)
            << std::flush;
}

}  // namespace

void register_tensors(CLI::App& app) {
  auto* cmd = app.add_subcommand("tensors", "Inspect and compare safetensors checkpoints and tensor files");
  cmd->require_subcommand(1);

  auto ls = std::make_shared<LsArgs>();
  auto* ls_cmd = cmd->add_subcommand("ls", "List tensors (name, dtype, shape) and metadata");
  ls_cmd->add_option("path", ls->path, "A .safetensors file, a sharded *.index.json or a model component folder")->required();
  ls_cmd->add_flag("--json", ls->json, "One JSON object instead of a table");
  ls_cmd->callback([ls] { run_ls(*ls); });

  auto diff = std::make_shared<DiffArgs>();
  auto* diff_cmd = cmd->add_subcommand("diff", "Compare tensors of A against reference B; exit 1 above --tol");
  diff_cmd->add_option("a", diff->a, "Tensors to check")->required();
  diff_cmd->add_option("b", diff->b, "Reference tensors")->required();
  diff_cmd->add_option("--tol", diff->tol, "Largest accepted relative error ||a-b||/||b||")->capture_default_str()->check(CLI::NonNegativeNumber);
  diff_cmd->add_option("--only", diff->only, "Compare only these tensor names")->delimiter(',');
  diff_cmd->add_flag("--ignore-missing", diff->ignore_missing, "Names present on one side only do not fail the comparison");
  diff_cmd->add_flag("--json", diff->json, "One JSON object per tensor");
  diff_cmd->callback([diff] { run_diff(*diff); });

  auto run = std::make_shared<RunArgs>();
  auto* run_cmd = cmd->add_subcommand("run", "Run one model component on tensors from a file (the parity hook)");
  run_cmd->add_option("--model", run->model, "Pipeline folder, component folder, TAESD folder, or single-file SD checkpoint")->required();
  run_cmd->add_option("--config-from", run->config_from, "Single-file checkpoints: take component configs from this diffusers folder");
  run_cmd->add_option("--component", run->component,
                      "unet | text_encoder | text_encoders (SDXL) | vae_encode | vae_decode | taesd_encode | taesd_decode | tokenizer | controlnet | txt2img")->required();
  run_cmd->add_option("--controlnet", run->controlnet, "Component controlnet: the ControlNet folder (--model gives the UNet)")->check(CLI::ExistingDirectory);
  run_cmd->add_option("--conditioning-scale", run->conditioning_scale, "Component controlnet: the residuals' scale")->capture_default_str();
  run_cmd->add_option("--in", run->in, "Input .safetensors (names: see the component)");
  run_cmd->add_option("--prompts", run->prompts, "Tokenizer input: one prompt per line");
  run_cmd->add_option("--out", run->out, "Output .safetensors")->required();
  run_cmd->add_option("--prefix", run->prefix, "Read inputs named PREFIX<name>, write outputs PREFIX<name>");
  auto* out_prefix = run_cmd->add_option("--out-prefix", run->out_prefix,
                                         "Name outputs OUT_PREFIX<name> (default: PREFIX, or scale<S>.PREFIX with one --lora, as the LoRA goldens)");
  add_lora_option(*run_cmd, run->loras);
  run->compute.add_to(*run_cmd);
  run_cmd->callback([run, out_prefix] { run_run(*run, out_prefix->count() > 0); });
}

}  // namespace streamgen::cli
