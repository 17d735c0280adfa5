// streamgen: real-time streaming diffusion. The CLI is thin: subcommands parse options and call
// the library (see commands.h).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "commands.h"
#include "streamgen/build_info.h"
#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/progress.h"

int main(int argc, char** argv) {
  streamgen::tune_memory_allocator();
  // Logs go to stderr so that stdout stays clean for data (--json, raw frames).
  spdlog::set_default_logger(spdlog::stderr_color_mt("streamgen"));
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"streamgen: real-time streaming diffusion (StreamDiffusion, StreamDiT) on LibTorch", "streamgen"};
  app.set_version_flag("--version", std::string("streamgen ") + STREAMGEN_VERSION_STRING);
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "More logging (-vv for trace)");
  app.add_flag("-q,--quiet", quiet, "Only errors; no progress bars");
  app.require_subcommand(1);
  app.fallthrough();

  streamgen::cli::register_info(app);
  streamgen::cli::register_tensors(app);
  streamgen::cli::register_bench(app);

  app.parse_complete_callback([&] {
    spdlog::set_level(quiet ? spdlog::level::err
                            : verbosity >= 2 ? spdlog::level::trace
                            : verbosity == 1 ? spdlog::level::debug
                                             : spdlog::level::info);
    streamgen::set_progress_enabled(!quiet);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const streamgen::cli::ExitCode& e) {
    return e.code;
  } catch (const streamgen::Error& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const c10::Error& e) {
    spdlog::error("LibTorch: {}", e.what_without_backtrace());
    return 3;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 3;
  }
  return 0;
}
