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
#include "streamgen/system_info.h"

int main(int argc, char** argv) {
  streamgen::upgrade_blas_kernels();  // before any BLAS call: OpenBLAS reads its choice on every call
  streamgen::tune_memory_allocator();
  // Logs go to stderr so that stdout stays clean for data (--json, raw frames).
  spdlog::set_default_logger(spdlog::stderr_color_mt("streamgen"));
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"streamgen: real-time streaming diffusion (StreamDiffusion, StreamDiT) on LibTorch", "streamgen"};
  app.set_version_flag("--version", std::string("streamgen ") + STREAMGEN_VERSION_STRING);
  // Applied as soon as they are parsed, so that they hold inside the subcommands' callbacks.
  app.add_flag_function(
         "-v,--verbose", [](std::int64_t count) { spdlog::set_level(count >= 2 ? spdlog::level::trace : spdlog::level::debug); },
         "More logging (-vv for trace)")
      ->trigger_on_parse();
  app.add_flag_function(
         "-q,--quiet",
         [](std::int64_t) {
           spdlog::set_level(spdlog::level::err);
           streamgen::set_progress_enabled(false);
         },
         "Only errors; no progress bars")
      ->trigger_on_parse();
  app.require_subcommand(1);
  app.fallthrough();

  streamgen::cli::register_info(app);
  streamgen::cli::register_tensors(app);
  streamgen::cli::register_bench(app);
  streamgen::cli::register_txt2img(app);
  streamgen::cli::register_replay(app);
  streamgen::cli::register_stream_commands(app);
  streamgen::cli::register_serve(app);
  streamgen::cli::register_dit(app);
  streamgen::cli::register_tae(app);
  streamgen::cli::set_command_line(argc, argv);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (or the help); a bad option is bad input like any other: exit 2,
    // not CLI11's own codes (105 for a value out of range, ...), as the README promises.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const streamgen::cli::ExitCode& e) {
    return e.code;
  } catch (const streamgen::Error& e) {
    spdlog::error("{}", streamgen::printable(e.what()));
    return 2;
  } catch (const c10::Error& e) {
    spdlog::error("LibTorch: {}", streamgen::printable(e.what_without_backtrace()));
    return 3;
  } catch (const std::exception& e) {
    spdlog::error("{}", streamgen::printable(e.what()));
    return 3;
  }
  return 0;
}
