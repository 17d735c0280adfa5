// Options and process launching shared by the training commands (dit train, dit distill, tae train).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "commands.h"
#include "streamgen/distributed.h"
#include "streamgen/error.h"
#include "streamgen/procedural_video.h"
#include "streamgen/progress.h"

namespace streamgen::cli {
namespace {

// --nproc N: runs this same command as N local processes (ranks 0..N-1 on 127.0.0.1) and waits
// for them; the exit status is the first failure's.
int launch_local_ranks(int nproc, int port) {
  std::vector<pid_t> children;
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<std::string> args;
    const auto& given = command_arguments();
    // The launcher's own options are replaced by each rank's.
    const std::vector<std::string> replaced{"--nproc", "--world-size", "--rank", "--master-addr", "--master-port"};
    for (std::size_t i = 0; i < given.size(); ++i) {
      const auto eq = given[i].find('=');
      const auto name = given[i].substr(0, eq);
      if (std::find(replaced.begin(), replaced.end(), name) != replaced.end()) {
        if (eq == std::string::npos) ++i;  // skip its value too
        continue;
      }
      args.push_back(given[i]);
    }
    for (const auto& extra : {std::string("--world-size"), std::to_string(nproc), std::string("--rank"), std::to_string(rank),
                              std::string("--master-addr"), std::string("127.0.0.1"), std::string("--master-port"), std::to_string(port)})
      args.push_back(extra);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0)
      throw Error(fmt::format("--nproc: cannot start rank {}: {}", rank, std::strerror(errno)));
    children.push_back(pid);
  }
  int status_out = 0;
  for (std::size_t rank = 0; rank < children.size(); ++rank) {
    int status = 0;
    ::waitpid(children[rank], &status, 0);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0) {
      spdlog::error("rank {} exited with status {}", rank, code);
      if (status_out == 0) status_out = code;
    }
  }
  return status_out;
}

}  // namespace

// The optimiser and checkpoint options the training commands share.
void add_run_options(CLI::App& cmd, OptimisationOptions& o, const std::string& steps_help, const std::string& seed_help) {
  cmd.add_option("--steps", o.steps, steps_help)->capture_default_str();
  cmd.add_option("--batch", o.batch, "Clips per micro-batch")->capture_default_str();
  cmd.add_option("--accumulate", o.accumulate, "Micro-batches per optimiser step")->capture_default_str();
  cmd.add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd.add_option("--warmup", o.warmup, "Linear warm-up steps")->capture_default_str();
  cmd.add_option("--ema", o.ema_decay, "EMA decay")->capture_default_str();
  cmd.add_option("--seed", o.seed, seed_help)->capture_default_str();
  cmd.add_option("--checkpoint-every", o.checkpoint_every, "Steps between checkpoints")->capture_default_str();
  cmd.add_option("--stop-at", o.stop_at, "End this run after this step, keeping the schedule of --steps (continue later with --resume)");
}

CLI::Option* add_edges_option(CLI::App& cmd, std::string& edges, const std::string& more) {
  return cmd
      .add_option("--edges", edges,
                  "What procedural objects do at the frame edge: bounce, or wrap round to the other side (a caption's direction then "
                  "holds for the whole clip)" + more)
      ->check(CLI::IsMember({edge_rule_name(EdgeRule::Bounce), edge_rule_name(EdgeRule::Wrap)}));
}

CLI::Option* add_init_option(CLI::App& cmd, OptimisationOptions& o, const std::string& what, const std::string& ignored) {
  return cmd
      .add_option("--init", o.init_from,
                  "A " + what + " model folder to fine-tune: its config and weights, with a fresh optimiser and schedule (" +
                      (ignored.empty() ? std::string() : ignored + " are then ignored; ") + "with --resume: only when OUT holds no run yet)")
      ->check(CLI::ExistingDirectory);
}

void resolve_init_or_resume(OptimisationOptions& o) {
  if (!o.resume || o.init_from.empty()) return;
  if (has_training_run(o.out))
    o.init_from.clear();
  else
    o.resume = false;
}

void add_distributed_options(CLI::App& cmd, OptimisationOptions& o, int& nproc) {
  cmd.add_option("--world-size", o.distributed.world_size, "Data-parallel processes in the run (c10d, Gloo)")->capture_default_str();
  cmd.add_option("--rank", o.distributed.rank, "This process's rank")->capture_default_str();
  cmd.add_option("--master-addr", o.distributed.master_addr, "Address of rank 0's rendezvous store")->capture_default_str();
  cmd.add_option("--master-port", o.distributed.master_port, "Port of the rendezvous store")->capture_default_str();
  cmd.add_option("--nproc", nproc, "Start N local data-parallel processes (each gets batch/N clips and threads/N cores)");
}

bool run_as_local_ranks(int nproc, int threads, int port) {
  if (nproc <= 1) return false;
  if (!distributed_available()) throw Error("--nproc needs LibTorch's c10d with Gloo; this build has none (install libgloo-dev and rebuild)");
  if (threads == 0) spdlog::info("--nproc {}: each process uses one thread per core unless --threads says otherwise", nproc);
  const int code = launch_local_ranks(nproc, port);
  if (code != 0) throw ExitCode{code};
  return true;
}

std::string training_summary_line(const TrainSummary& summary, const std::string& out) {
  if (summary.last_step <= summary.first_step)
    return fmt::format("nothing to train: the run in {} already reached its last step ({}); raise --steps to train on\n", out, summary.last_step);
  return fmt::format("trained steps {}..{} in {} (final loss {:.4f}); model in {}\n", summary.first_step, summary.last_step,
                     format_duration(summary.seconds), summary.final_loss, out);
}

}  // namespace streamgen::cli
