// streamgen dit train | stream: StreamDiT (buffered flow matching, streaming text-to-video).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <optional>
#include <sstream>

#include "commands.h"
#include "streamgen/caption_classifier.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_distill.h"
#include "streamgen/dit_stream.h"
#include "streamgen/distributed.h"
#include "streamgen/dit_eval.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/media.h"
#include "streamgen/progress.h"

namespace streamgen::cli {
namespace {

// The sampler's partition and guidance, shared by `dit stream` and `dit eval`.
void add_sampler_options(CLI::App& cmd, StreamDiTOptions& o) {
  cmd.add_option("--chunk-size,-c", o.chunk_frames, "Frames per chunk c (one step emits c frames)")->capture_default_str();
  cmd.add_option("--micro-steps,-s", o.micro_steps, "Euler steps per chunk s")->capture_default_str();
  cmd.add_option("--reference-frames", o.reference_frames, "K clean reference frames at the head of the buffer (the last frames emitted)")
      ->capture_default_str();
  cmd.add_option("--guidance,-g", o.guidance, "CFG scale (1: no CFG, one pass per step)")->capture_default_str();
  cmd.add_option("--init-steps", o.init_steps, "Steps of the T2V start (0: s·N; a multiple of N)")->capture_default_str();
  cmd.add_option("--init-guidance", o.init_guidance, "CFG scale of the T2V start alone (0: the stream's --guidance)")->capture_default_str();
  cmd.add_option("--change-guidance", o.change_guidance,
                 "CFG scale for the N steps after a prompt change, while the new caption's chunks cross the buffer (0: the stream's --guidance)")
      ->capture_default_str();
  cmd.add_option("--anchor-guidance", o.anchor_guidance,
                 "Pull each step towards the stream's anchor frame: v_a + (W-1)(v_a - v_without) (1: off; one pass more per step)")
      ->capture_default_str();
  add_guidance_shape_options(cmd, o);
  cmd.add_option("--noise-scale", o.noise_scale, "Temperature of the entering noise (1: as trained; lower: cleaner, less varied)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 2.0));
  cmd.add_flag("--no-anchor{false}", o.use_anchor, "Stream a model with an anchor frame without one (for comparison)");
  cmd.add_option("--colour-hold", o.colour_hold,
                 "0..1: each step, move the buffer this share of the way from its recent mean colour and contrast back to the "
                 "stream's first frames' (after a prompt change: the new prompt's first frames), so a long stream keeps its look (0: off; default: the model's sampler.json, else 0)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--colour-hold-frames", o.colour_hold_frames, "Latent frames whose colour and contrast are the look to hold, and the span of the recent look (default: sampler.json, else 16)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
}

void register_dit_train(CLI::App& dit) {
  struct Args {
    std::string out, config, data, autoencoder, edges;
    std::int64_t size = 32, frames = 16, hidden = 128, depth = 4, heads = 4, patch = 4;
    double time_shift = 1.0;
    std::vector<std::int64_t> window{8, 4, 4};
    bool no_shift_mask = false, no_text_modulation = false, anchor = false;
    std::string chunk_sizes;  // default: every power of two up to B - K
    DiTTrainOptions train;
    int nproc = 0;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = dit.add_subcommand("train", "Train a StreamDiT teacher with buffered flow matching over mixed chunk sizes on procedural video");
  cmd->add_option("--out,-o", a->out, "Checkpoint folder (config.json + model.safetensors with the EMA weights, training/, loss.csv)")->required();
  cmd->add_flag("--resume", a->train.resume, "Continue the run in --out (weights, EMA, optimiser, step)");
  cmd->add_option("--data", a->data, "A folder of your own videos (captions from <name>.txt or the file name); default: procedural shapes")
      ->check(CLI::ExistingDirectory);
  auto* config_option =
      cmd->add_option("--config", a->config, "A StreamDiT config.json to start from (the size flags below are then ignored)")->check(CLI::ExistingFile);
  add_init_option(*cmd, a->train, "StreamDiT (and its autoencoder)")->excludes(config_option);
  cmd->add_option("--autoencoder", a->autoencoder,
                  "A temporal autoencoder folder (tae train): train on its latents; it is copied into OUT/autoencoder (default: pixel space)")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--size", a->size, "Frame size in pixels (square)")->capture_default_str()->check(CLI::Range(8, 1024));
  cmd->add_option("--frames", a->frames, "Buffer frames B (latent frames with --autoencoder)")->capture_default_str()->check(CLI::Range(1, 256));
  cmd->add_option("--hidden", a->hidden, "Transformer width")->capture_default_str();
  cmd->add_option("--depth", a->depth, "Blocks")->capture_default_str();
  cmd->add_option("--heads", a->heads, "Attention heads")->capture_default_str();
  cmd->add_option("--patch", a->patch, "Spatial patch size")->capture_default_str();
  cmd->add_option("--window", a->window, "Attention window in tokens: frames height width")->expected(3)->capture_default_str();
  cmd->add_flag("--no-shift-mask", a->no_shift_mask, "Let shifted windows attend across the wrap-around");
  cmd->add_option("--time-shift", a->time_shift,
                  "Flow-time shift a: the model sees tau = u/(a-(a-1)u) of the linear schedule position u, in training and in every "
                  "stream of it (stored in config.json). a > 1 spends more of the schedule at high noise, which large pixel patches need")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_edges_option(*cmd, a->edges, "; stored in config.json (default: the starting model's, else bounce)");
  cmd->add_flag("--no-text-modulation", a->no_text_modulation, "Caption through cross-attention only (no pooled caption in the adaLN input)");
  cmd->add_flag("--anchor", a->anchor,
                "Condition on an anchor: a clean frame from the stream's start (trained with one from up to a buffer earlier in the same "
                "clip). With --init, adds it to the starting model, which then begins as it was");
  cmd->add_option("--anchor-dropout", a->train.recipe.anchor_dropout, "Share of examples trained without their anchor")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--bf16-autocast", a->train.bf16_autocast, "Forward passes in bf16 autocast (weights, optimiser and EMA stay fp32)");
  add_run_options(*cmd, a->train, "Optimiser steps", "Seed of the weights, the data and the noise");
  cmd->add_option("--chunk-sizes", a->chunk_sizes, "Chunk sizes c of the mixed training, e.g. 1,2,4,8,16 (default: every power of two up to B - K)");
  cmd->add_option("--t2v-share", a->train.recipe.mix.full_share, "Probability of c = B (plain T2V)")->capture_default_str();
  cmd->add_option("--reference-frames", a->train.recipe.reference_frames, "K clean reference frames")->capture_default_str();
  cmd->add_option("--text-dropout", a->train.recipe.text_dropout, "Share of null captions (enables CFG)")->capture_default_str();
  cmd->add_option("--foreground-weight", a->train.recipe.foreground_weight,
                  "λ: a latent position weighs 1 + λ·d/mean(d) in the loss, d its distance from the clip's background (the objects weigh "
                  "more; each frame's mean weight stays 1; 0: uniform)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  add_distributed_options(*cmd, a->train, a->nproc);
  a->compute.add_to(*cmd, /*with_dtype=*/false);
  cmd->callback([a] {
    if (run_as_local_ranks(a->nproc, a->compute.threads, a->train.distributed.master_port)) return;
    a->compute.resolve();
    namespace fs = std::filesystem;
    a->train.out = a->out;
    resolve_init_or_resume(a->train);
    const auto& init = a->train.init_from;
    // A latent model: the autoencoder given, or the one the run (on resume) or the starting model already holds.
    if (a->autoencoder.empty() && !init.empty() && fs::exists(init / kDiTAutoencoderFolder)) a->autoencoder = (init / kDiTAutoencoderFolder).string();
    TemporalAutoencoder tae = a->autoencoder.empty() ? (a->train.resume ? load_dit_autoencoder(a->out) : TemporalAutoencoder(nullptr))
                                                     : load_temporal_autoencoder(a->autoencoder);
    StreamDiTConfig config;
    if (a->train.resume) {  // the run's own config
      config = StreamDiTConfig::from_json(read_json_file(fs::path(a->out) / "config.json"), a->out + "/config.json");
    } else if (!init.empty()) {
      config = StreamDiTConfig::from_json(read_json_file(init / "config.json"), (init / "config.json").string());
    } else if (!a->config.empty()) {
      config = StreamDiTConfig::from_json(read_json_file(a->config), a->config);
    } else {
      config.sample_height = config.sample_width = a->size;
      config.max_frames = a->frames;
      config.hidden_size = a->hidden;
      config.depth = a->depth;
      config.num_heads = a->heads;
      config.patch_size = a->patch;
      std::copy(a->window.begin(), a->window.end(), config.window.begin());
      config.shift_mask = !a->no_shift_mask;
      config.time_shift = a->time_shift;
      config.text_modulation = !a->no_text_modulation;
      config.text.vocabulary = ProceduralPalette::vocabulary();
      if (tae) {  // the DiT works on latent frames: channels and size from the autoencoder
        const auto s = tae->config.spatial_compression();
        if (a->size % s != 0) throw Error(fmt::format("dit train: --size {} is not a multiple of the autoencoder's {}x", a->size, s));
        config.in_channels = tae->config.latent_channels;
        config.sample_height = config.sample_width = a->size / s;
      }
      config.validate("dit train");
    }
    if (!a->edges.empty()) {
      const auto edges = parse_edge_rule(a->edges);
      if (a->train.resume && edges != config.procedural_edges)
        throw Error(fmt::format("dit train: the run in {} trains on --edges {}; a resumed run keeps its data", a->out,
                                edge_rule_name(config.procedural_edges)));
      config.procedural_edges = edges;
    }
    if (tae && config.in_channels != tae->config.latent_channels)
      throw Error(fmt::format("dit train: the model takes {} channels but the autoencoder makes {}", config.in_channels, tae->config.latent_channels));
    const auto denoised = config.max_frames - a->train.recipe.reference_frames;
    const auto share = a->train.recipe.mix.full_share;
    a->train.recipe.mix = a->chunk_sizes.empty() ? ChunkMix::powers_of_two(denoised, share) : ChunkMix::parse(a->chunk_sizes, denoised, share);
    a->train.command_line = command_line();
    if (a->anchor) {
      if (a->train.resume && !config.anchor) throw Error(fmt::format("dit train: the run in {} has no anchor; a resumed run keeps its model", a->out));
      config.anchor = true;
    }
    VideoFolderClipSource* videos = nullptr;
    auto source = make_dit_clip_source(config, tae, a->data, a->train.bf16_autocast, &videos);
    if (videos != nullptr && a->config.empty() && !a->train.resume && init.empty()) {
      // The caption vocabulary is the words of these captions.
      config.text.vocabulary = videos->caption_words();
      config.text.max_tokens = std::max<std::int64_t>(config.text.max_tokens, videos->longest_caption());
    }
    auto& data = *source;
    StreamDiT probe(config);
    std::int64_t params = 0;
    for (const auto& p : probe->parameters()) params += p.numel();
    if (a->train.distributed.rank == 0)
      spdlog::info("training StreamDiT ({:.2f}M parameters, {} blocks of width {}, window [{}, {}, {}]) on {}; {} steps of {}x{} clips",
                 static_cast<double>(params) / 1e6, config.depth, config.hidden_size, config.window[0], config.window[1], config.window[2],
                 data.describe(), a->train.steps, a->train.batch, a->train.accumulate);
    if (tae && !a->autoencoder.empty() && a->train.distributed.rank == 0) attach_dit_autoencoder(a->autoencoder, a->out);
    const auto summary = train_stream_dit(config, data, a->train);
    if (a->train.distributed.rank != 0) return;
    std::cout << training_summary_line(summary, a->out) << std::flush;
  });
}

void register_dit_distill(CLI::App& dit) {
  struct Args {
    std::string teacher, out, data;
    std::int64_t segments = 0;
    bool progressive = false;
    std::int64_t eval_batches = 2;
    std::vector<double> guidance_range;
    DiTDistillOptions distill;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto& r = a->distill.recipe;
  auto* cmd = dit.add_subcommand("distill", "Distil a StreamDiT teacher into a student that takes one conditional pass per emitted chunk "
                                            "(per-segment step and guidance distillation)");
  cmd->add_option("--teacher", a->teacher, "The teacher's model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out,-o", a->out, "The student's folder (config.json + model.safetensors with the EMA weights, training/, loss.csv)")->required();
  cmd->add_flag("--resume", a->distill.resume, "Continue the run in --out (with --progressive: the unfinished stage)");
  cmd->add_option("--data", a->data, "A folder of videos (as for dit train); default: procedural shapes")->check(CLI::ExistingDirectory);
  cmd->add_option("--chunk-size,-c", r.chunk_frames, "Frames per chunk c of the student's stream")->capture_default_str();
  cmd->add_option("--segments", a->segments, "Segments N instead of --chunk-size (c = (B - K) / N)");
  cmd->add_option("--reference-frames", r.reference_frames, "K clean reference frames")->capture_default_str();
  cmd->add_option("--teacher-steps", r.teacher_steps, "The teacher's Euler steps per segment s")->capture_default_str();
  auto* fixed = cmd->add_option("--guidance,-g", r.guidance, "The teacher's CFG scale, folded into the student")->capture_default_str();
  cmd->add_option("--guidance-range", a->guidance_range, "LOW,HIGH: each example's teacher CFG scale drawn from [LOW, HIGH] instead")
      ->expected(2)
      ->delimiter(',')
      ->excludes(fixed);
  cmd->add_flag("--guidance-keep-mean", r.guidance_form.keep_mean, "The teacher's CFG leaves each frame's mean colour to its conditional pass");
  cmd->add_option("--guidance-rescale", r.guidance_form.rescale, "0..1: the teacher's guided velocity's per-frame spread rescaled to the conditional one's")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--anchor-guidance", r.anchor_guidance,
                  "The teacher's anchor guidance (v_a + (W-1)(v_a - v_without), anchored teachers), folded into the student (1: none)")
      ->capture_default_str();
  cmd->add_option("--staggered-share", r.staggered_share, "Share of staggered segment starts (the rest: the uniform levels a stream starts from)")
      ->capture_default_str();
  cmd->add_option("--rollout-share", r.rollout_share, "Share of examples starting from the teacher's own stream instead of a noised clip")
      ->capture_default_str();
  cmd->add_option("--rollout-chunks", r.rollout_max_chunks, "Rollouts run the teacher's stream 0..this many chunks past its start")
      ->capture_default_str();
  cmd->add_option("--student-init-steps", r.student_init_steps,
                  "T2V start steps written to the student's sampler.json (0: one per chunk; a multiple of N)")
      ->capture_default_str();
  cmd->add_option("--student-init-guidance", r.student_init_guidance,
                  "CFG scale of the student's T2V start alone, written to its sampler.json with the guidance form (0: none)")
      ->capture_default_str();
  auto* progressive = cmd->add_flag("--progressive", a->progressive,
                "Halve the steps stage by stage (s -> s/2 -> ... -> 1, each stage's student the next one's teacher; stages in OUT/stages/)");
  add_init_option(*cmd, a->distill, "student (a StreamDiT of the teacher's config)", "")->excludes(progressive);
  cmd->add_flag("--bf16-autocast", a->distill.bf16_autocast, "Teacher and student passes in bf16 autocast (weights and optimiser stay fp32)");
  add_run_options(*cmd, a->distill, "Optimiser steps (per stage with --progressive)", "Seed of the data and the noise");
  cmd->add_option("--eval-batches", a->eval_batches, "Held-out batches for the endpoint error printed at the end (0: skip)")->capture_default_str();
  a->compute.add_to(*cmd, /*with_dtype=*/false);
  cmd->callback([a] {
    a->compute.resolve();
    namespace fs = std::filesystem;
    auto teacher = load_stream_dit(a->teacher);
    const auto tae = load_dit_autoencoder(a->teacher);  // a latent teacher's autoencoder, shared with the student
    const auto& config = teacher->config;
    auto& recipe = a->distill.recipe;
    if (a->segments > 0) {
      const auto denoised = config.max_frames - recipe.reference_frames;
      if (denoised % a->segments != 0)
        throw Error(fmt::format("--segments {}: the {} frames after the references do not split into {} chunks", a->segments, denoised, a->segments));
      recipe.chunk_frames = denoised / a->segments;
    }
    if (!a->guidance_range.empty()) std::tie(recipe.guidance, recipe.guidance_high) = std::pair(a->guidance_range[0], a->guidance_range[1]);
    recipe.validate(config.max_frames);
    resolve_init_or_resume(a->distill);
    a->distill.command_line = command_line();
    a->distill.teacher_description = fs::absolute(a->teacher).string();
    auto source = make_dit_clip_source(config, tae, a->data, a->distill.bf16_autocast);
    // Direct: one stage s -> 1. Progressive: s -> s/2 -> ... -> 1, guidance folded in at the first.
    std::vector<std::int64_t> stages{1};
    if (a->progressive) {
      if ((recipe.teacher_steps & (recipe.teacher_steps - 1)) != 0 || recipe.teacher_steps < 2)
        throw Error(fmt::format("--progressive halves the teacher's steps down to 1: --teacher-steps must be a power of two >= 2, got {}",
                                recipe.teacher_steps));
      stages.clear();
      for (auto s = recipe.teacher_steps / 2; s >= 1; s /= 2) stages.push_back(s);
    }
    spdlog::info("distilling '{}' ({}) on {}: {}", a->teacher, recipe.describe(config.max_frames), source->describe(),
                 a->progressive ? fmt::format("{} halving stages of {} steps", stages.size(), a->distill.steps)
                                : fmt::format("{} steps of {} clips", a->distill.steps, a->distill.batch));
    const auto original = recipe;
    StreamDiT stage_teacher = teacher;
    double seconds = 0;
    for (const auto student_steps : stages) {
      auto o = a->distill;
      o.recipe.student_steps = student_steps;
      o.out = student_steps == 1 ? fs::path(a->out) : fs::path(a->out) / "stages" / fmt::format("s{}", student_steps);
      const auto state = o.out / "training" / "state.json";
      std::error_code ec;
      const bool has_run = fs::exists(state, ec);
      if (a->progressive && has_run && read_json_file(state).value("step", std::int64_t{0}) >= o.steps) {
        spdlog::info("stage s={} already done in '{}'", student_steps, o.out.string());
      } else {
        o.resume = a->distill.resume && has_run;
        if (a->progressive) spdlog::info("stage: teacher s={} w={} -> student s={}", o.recipe.teacher_steps, o.recipe.guidance, student_steps);
        seconds += distill_stream_dit(stage_teacher, *source, o).seconds;
      }
      if (tae) attach_dit_autoencoder(fs::path(a->teacher) / kDiTAutoencoderFolder, o.out);
      stage_teacher = load_stream_dit(o.out);
      recipe.teacher_steps = student_steps;  // the next stage halves this student's steps
      recipe.guidance = 1.0;                 // already folded in
      recipe.guidance_high = 0;
      recipe.anchor_guidance = 1.0;
      a->distill.teacher_description = o.out.string();
    }
    std::cout << fmt::format("distilled in {}; student in {} (its sampler.json: c = {}, s = 1, no CFG)\n", format_duration(seconds), a->out,
                             recipe.chunk_frames);
    if (a->eval_batches > 0) {
      auto student = load_stream_dit(a->out);
      const auto report = evaluate_distillation(teacher, student, *source, original, a->eval_batches, a->distill.batch, a->distill.seed + 9001);
      std::cout << fmt::format("held-out endpoint error vs the teacher's {} guided steps (w = {}): one undistilled step {:.4f}, student {:.4f} "
                               "({:.1f}x closer)\n",
                               original.teacher_steps, original.guidance_label(), report.teacher_one_step, report.student, report.improvement());
    }
    std::cout << std::flush;
  });
}

void register_dit_stream(CLI::App& dit) {
  struct Args {
    std::string model, prompt, output, output_size, input;
    std::vector<std::string> prompt_at;
    std::int64_t frames = 128;
    double fps = 16;
    StreamDiTOptions sampler;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = dit.add_subcommand("stream", "Stream text-to-video from a StreamDiT model; the prompt can change while it plays");
  cmd->add_option("--model", a->model, "StreamDiT folder (config.json + model.safetensors)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--prompt,-p", a->prompt, "The caption to start with")->required();
  cmd->add_option("--prompt-at", a->prompt_at, "FRAME:PROMPT — switch the prompt once FRAME frames are out (repeatable)");
  cmd->add_option("--frames,-n", a->frames, "Frames to write (-1: until Ctrl-C, or the end of the --input)")->capture_default_str();
  cmd->add_option("--output,-o", a->output, "Video file (.mp4 .mkv .webm ...), a folder for PNGs, or - for raw RGB24 on stdout")->required();
  cmd->add_option("--output-size", a->output_size, "Resize frames for the output, e.g. 256x256 (default: the model's size)");
  cmd->add_option("--fps", a->fps, "Frame rate written into the video")->capture_default_str();
  cmd->add_option("--input,-i", a->input, "Video-to-video: a video file, camera, image folder or - (raw RGB24) to restyle under the prompt");
  cmd->add_option("--strength", a->sampler.strength, "Video-to-video: how far the input is noised, (0, 1] (1: as much as text-to-video)")
      ->check(CLI::Range(0.0, 1.0));
  add_sampler_options(*cmd, a->sampler);
  cmd->add_option("--seed", a->sampler.seed, "Noise seed")->capture_default_str();
  a->compute.add_to(*cmd, /*with_dtype=*/true, /*with_auto=*/true);
  cmd->callback([a, cmd] {
    const auto compute = a->compute.resolve_for_model(a->model);
    apply_model_sampler_settings(*cmd, a->model, a->sampler);
    std::vector<PromptChange> changes;
    for (const auto& text : a->prompt_at) changes.push_back(parse_prompt_change(text));
    if (!a->input.empty() && a->sampler.strength == 0) a->sampler.strength = 0.5;  // the spec's default
    if (a->input.empty() && a->sampler.strength > 0) throw Error("--strength is for video-to-video: give the input video with --input");
    StreamDiTSampler sampler(load_stream_dit(a->model, compute), a->sampler);
    sampler.set_prompt(a->prompt);
    DiTVideoCodec codec(load_dit_autoencoder(a->model, compute));
    DiTStreamOptions o;
    if (codec.latent()) o.codec = &codec;
    std::unique_ptr<FrameSource> input;
    if (!a->input.empty()) {
      input = open_source(a->input);
      o.input = input.get();
      spdlog::info("video-to-video from {}: strength {}, entry level {:.3f}, output {} frames behind the input", input->info().spec,
                   a->sampler.strength, sampler.entry_level(), sampler.start_frames());
    }
    o.frames = a->frames;
    o.prompt_changes = changes;
    if (!a->output_size.empty()) std::tie(o.output_width, o.output_height) = parse_size(a->output_size);
    o.stop = &interrupt_flag();
    SinkOptions so;
    so.fps = a->fps;
    so.png_text = {{"prompt", a->prompt}, {"seed", std::to_string(a->sampler.seed)}};
    auto sink = open_sink(a->output, so);
    const auto& p = sampler.partition();
    spdlog::info("StreamDiT {}, guidance {}{}: up to {} NFE per chunk of {} frames -> {}", p.describe(), describe_guidance(a->sampler),
                 describe_colour_hold(a->sampler), p.micro_steps * passes_per_step(a->sampler), p.chunk_frames, sink->description());
    ProgressBar bar("dit stream", a->frames, "frame");
    o.on_chunk = [&](const DiTStreamStats& s) {
      bar.set(s.frames);
      bar.set_postfix(fmt::format("{:.1f} ms/step, first frame {:.2f} s", s.step_ms, s.first_frame_s));
    };
    const auto stats = run_dit_stream(sampler, *sink, o);
    sink->close();
    bar.set(stats.frames);
    bar.finish();
    std::cerr << fmt::format("{} frames ({} chunks) in {:.2f} s: {:.1f} FPS output, first frame after {:.2f} s, {} NFE ({} for the start, "
                             "{:.2f} per frame after it), {:.1f} ms per step\n",
                             stats.frames, stats.chunks, stats.seconds, stats.fps, stats.first_frame_s, stats.nfe, stats.init_nfe,
                             static_cast<double>(stats.nfe - stats.init_nfe) / static_cast<double>(std::max<std::int64_t>(1, stats.frames)),
                             stats.step_ms);
    if (interrupt_flag()) spdlog::info("interrupted: {} frames written to {}", stats.frames, sink->description());
  });
}

nlohmann::json quality_json(const StreamQuality& q) {
  nlohmann::json classifier = nullptr;
  if (q.classifier)
    classifier = {{"caption_accuracy", q.classifier->caption_accuracy}, {"colour_accuracy", q.classifier->colour},
                  {"shape_accuracy", q.classifier->shape}, {"direction_accuracy", q.classifier->direction},
                  {"every_window_caption_accuracy", q.classifier->every_window}};
  return {{"classifier", classifier}, {"caption_accuracy", q.caption_accuracy}, {"every_window_caption_accuracy", q.every_window_caption_accuracy},
          {"colour_accuracy", q.colour_accuracy}, {"shape_accuracy", q.shape_accuracy},
          {"direction_accuracy", q.direction_accuracy}, {"seam_ratio", q.seam_ratio}, {"dynamic_degree", q.dynamic_degree},
          {"drift_brightness", q.drift_brightness}, {"drift_contrast", q.drift_contrast}, {"drift_caption", q.drift_caption},
          {"streams", q.streams}, {"frames_per_stream", q.frames_per_stream}, {"nfe_per_frame", q.nfe_per_frame},
          {"drift_per_stream", [&] {
             auto list = nlohmann::json::array();
             for (const auto& d : q.per_stream)
               list.push_back({{"caption", d.caption}, {"brightness", d.brightness}, {"contrast", d.contrast}, {"caption_score", d.caption_score},
                               {"span_brightness", d.span_brightness}, {"furthest_span_brightness", d.furthest_span_brightness},
                               {"span_contrast", d.span_contrast}, {"furthest_span_contrast", d.furthest_span_contrast},
                               {"classifier_caption", d.classifier_caption}, {"span_classifier_caption", d.span_classifier_caption},
                               {"furthest_span_classifier_caption", d.furthest_span_classifier_caption}});
             return list;
           }()}};
}

void register_dit_eval(CLI::App& dit) {
  struct Args {
    std::string model, chunk_sizes, classifier;
    std::int64_t batches = 16, batch = 8;
    std::uint64_t seed = 1234567;
    StreamEvalOptions streams;
    StreamDiTOptions sampler;
    bool json = false;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  a->streams.streams = 0;
  auto* cmd = dit.add_subcommand("eval", "Held-out flow-matching loss per chunk size and flow time; with --streams, generated streams scored "
                                         "against real video (caption accuracy, seams, motion, drift)");
  cmd->add_option("--model", a->model, "StreamDiT folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--chunk-sizes", a->chunk_sizes, "Chunk sizes to draw from, uniformly (default: every power of two up to B)");
  cmd->add_option("--batches", a->batches, "Batches of held-out clips for the loss (0: skip it)")->capture_default_str();
  cmd->add_option("--batch", a->batch, "Clips per batch")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the held-out data (keep it away from training seeds)")->capture_default_str();
  cmd->add_option("--streams", a->streams.streams, "Generated streams to score (0: none)")->capture_default_str();
  cmd->add_option("--stream-frames", a->streams.frames, "Frames per scored stream")->capture_default_str();
  cmd->add_option("--stream-seed", a->streams.seed, "Seed of the scored streams' captions and noise (the cards use the default)")
      ->capture_default_str();
  cmd->add_option("--change-at", a->streams.change_at,
                  "Score streams after a prompt change: FRAMES under another scene's caption first, then the scored caption once the buffer has turned over (0: from the start)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--classifier", a->classifier,
                  "A caption classifier folder (dit classifier train) that scores the streams' captions too, and gives their KID against real video")
      ->check(CLI::ExistingDirectory);
  add_sampler_options(*cmd, a->sampler);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  a->compute.add_to(*cmd, /*with_dtype=*/true, /*with_auto=*/true);
  cmd->callback([a, cmd] {
    const auto compute = a->compute.resolve_for_model(a->model);
    if (a->streams.streams > 0) apply_model_sampler_settings(*cmd, a->model, a->sampler);
    auto model = load_stream_dit(a->model, compute);
    const auto& c = model->config;
    DiTVideoCodec codec(load_dit_autoencoder(a->model, compute));
    const auto width = c.sample_width * codec.spatial_factor(), height = c.sample_height * codec.spatial_factor();
    nlohmann::json j;
    if (a->batches > 0) {
      auto source = make_dit_clip_source(c, codec.autoencoder());
      auto& data = *source;
      FlowMatchingRecipe recipe;
      recipe.mix = a->chunk_sizes.empty() ? ChunkMix::powers_of_two(c.max_frames) : ChunkMix::parse(a->chunk_sizes, c.max_frames);
      recipe.mix.full_share = 1.0 / static_cast<double>(recipe.mix.chunk_sizes.size());  // every size equally often
      const auto r = evaluate_flow_loss(model, data, recipe, a->batches, a->batch, a->seed);
      j["loss"] = {{"overall", r.overall}, {"by_tau_bucket", r.by_tau_bucket}};
      for (const auto& [size, loss] : r.by_chunk_size) j["loss"]["by_chunk_size"][std::to_string(size)] = loss;
      for (const auto& p : r.caption_probes) j["loss"]["caption_probes"][p.name] = {{"loss", p.loss}, {"gap", p.gap}};
      if (!a->json) {
        std::cout << fmt::format("held-out flow-matching loss: {:.4f} over {} clips\n", r.overall, a->batches * a->batch);
        for (const auto& [size, loss] : r.by_chunk_size) std::cout << fmt::format("  c = {:<3} {:.4f}\n", size, loss);
        for (std::size_t i = 0; i < r.by_tau_bucket.size(); ++i)
          std::cout << fmt::format("  tau in [{:.1f}, {:.1f})  {:.4f}  ({} frames)\n", static_cast<double>(i) / 10,
                                   static_cast<double>(i + 1) / 10, r.by_tau_bucket[i], r.frames_per_bucket[i]);
        if (!r.caption_probes.empty())
          std::cout << fmt::format("caption probes (the same clips at tau < {:.1f}; a model that uses the caption does worse when it lies):\n",
                                   kCaptionProbeMaxTau);
        for (const auto& p : r.caption_probes)
          std::cout << fmt::format("  {:<18} {:.4f}{}\n", p.name, p.loss, p.name == "as given" ? "" : fmt::format("  ({:+.1f} %)", 100 * p.gap));
      }
    }
    if (a->streams.streams > 0) {
      a->streams.edges = c.procedural_edges;  // prompts and real video from the model's own world
      if (!a->classifier.empty()) a->streams.classifier = load_caption_classifier(a->classifier);  // fp32: a judge, not the model under test
      ProgressBar bar("eval streams", a->streams.streams * a->streams.frames, "frame");
      a->streams.on_frames = [&](std::int64_t done, std::int64_t) { bar.set(done); };
      const auto generated = evaluate_generated_streams(
          [&](std::uint64_t seed) {
            auto o = a->sampler;
            o.seed = seed;
            return StreamDiTSampler(model, o);
          },
          width, height, a->streams, codec.latent() ? &codec : nullptr);
      bar.finish();
      const auto rgb_chunk = a->sampler.chunk_frames * codec.frames_per_latent();
      const auto real = evaluate_real_streams(width, height, rgb_chunk, a->streams);
      // A latent model can score no better than real video through its autoencoder.
      std::optional<StreamQuality> real_ae;
      if (codec.latent()) real_ae = evaluate_real_streams(width, height, rgb_chunk, a->streams, &codec);
      j["streams"] = {{"generated", quality_json(generated)}, {"real", quality_json(real)},
                      {"sampler", {{"chunk_frames", a->sampler.chunk_frames}, {"micro_steps", a->sampler.micro_steps}, {"guidance", a->sampler.guidance},
                                   {"guidance_interval", a->sampler.guidance_interval},
                                   {"guidance_keep_mean", a->sampler.guidance_form.keep_mean},
                                   {"guidance_rescale", a->sampler.guidance_form.rescale},
                                   {"change_guidance", a->sampler.change_guidance}}},
                      {"change_at", a->streams.change_at}};
      if (real_ae) j["streams"]["real_through_autoencoder"] = quality_json(*real_ae);
      // KID against real video in the classifier's features, standardised by the real ones (x1000, as papers quote it).
      std::optional<double> kid, kid_ae;
      auto kid_defined = [](const torch::Tensor& f) { return f.defined() && f.size(0) >= 2; };  // an unbiased estimate needs 2 windows a side
      if (kid_defined(generated.classifier_features) && kid_defined(real.classifier_features)) {
        kid = 1000 * kernel_inception_distance_standardised(generated.classifier_features, real.classifier_features);
        j["streams"]["generated"]["kid_x1000"] = *kid;
        if (real_ae && kid_defined(real_ae->classifier_features)) {
          kid_ae = 1000 * kernel_inception_distance_standardised(real_ae->classifier_features, real.classifier_features);
          j["streams"]["real_through_autoencoder"]["kid_x1000"] = *kid_ae;
        }
      }
      // One-frame chunks have no frame pair inside a chunk: the seam ratio is undefined, not 0.
      const bool seams_defined = rgb_chunk > 1;
      if (!seams_defined)
        for (const char* side : {"generated", "real"}) j["streams"][side]["seam_ratio"] = nullptr;
      if (!a->json) {
        std::cout << fmt::format("{} streams of {} frames{}, c = {}, s = {}, guidance {}{} ({:.2f} NFE per frame):\n", generated.streams,
                                 generated.frames_per_stream,
                                 a->streams.change_at > 0 ? fmt::format(" after a prompt change at frame {}", a->streams.change_at) : std::string{},
                                 a->sampler.chunk_frames, a->sampler.micro_steps, describe_guidance(a->sampler), describe_colour_hold(a->sampler),
                                 generated.nfe_per_frame);
        std::cout << fmt::format("  {:<22} {:>10} {:>10} {:>8}{}\n", "metric", "generated", "real", "ratio",
                                 real_ae ? fmt::format(" {:>12}", "real via AE") : std::string{});
        // The last column: real video through the autoencoder (latent models).
        auto print_row = [](const char* name, double g, double r, std::optional<double> via_ae) {
          std::cout << fmt::format("  {:<22} {:>10.3f} {:>10.3f} {:>8.2f}{}\n", name, g, r, r != 0 ? g / r : 0.0,
                                   via_ae ? fmt::format(" {:>12.3f}", *via_ae) : std::string{});
        };
        auto row = [&](const char* name, double StreamQuality::*metric) {
          print_row(name, generated.*metric, real.*metric, real_ae ? std::optional<double>((*real_ae).*metric) : std::nullopt);
        };
        row("caption accuracy", &StreamQuality::caption_accuracy);
        row("  colour", &StreamQuality::colour_accuracy);
        row("  shape", &StreamQuality::shape_accuracy);
        row("  direction", &StreamQuality::direction_accuracy);
        row("caption, every window", &StreamQuality::every_window_caption_accuracy);
        if (seams_defined)
          row("seam ratio", &StreamQuality::seam_ratio);
        else
          std::cout << fmt::format("  {:<22} {:>10} {:>10}   (one-frame chunks)\n", "seam ratio", "n/a", "n/a");
        row("dynamic degree px/f", &StreamQuality::dynamic_degree);
        row("drift brightness", &StreamQuality::drift_brightness);
        row("drift contrast", &StreamQuality::drift_contrast);
        row("drift caption", &StreamQuality::drift_caption);
        if (generated.classifier && real.classifier) {
          std::cout << fmt::format("  by the caption classifier ({}):\n", a->classifier);
          auto classified = [&](const char* name, double ClassifierCaptionScores::*metric) {
            print_row(name, (*generated.classifier).*metric, (*real.classifier).*metric,
                      real_ae ? std::optional<double>((*real_ae->classifier).*metric) : std::nullopt);
          };
          classified("caption accuracy", &ClassifierCaptionScores::caption_accuracy);
          classified("  colour", &ClassifierCaptionScores::colour);
          classified("  shape", &ClassifierCaptionScores::shape);
          classified("  direction", &ClassifierCaptionScores::direction);
          classified("caption, every window", &ClassifierCaptionScores::every_window);
          if (kid)
            std::cout << fmt::format("  {:<22} {:>10.2f} {:>10} {:>8}{}\n", "KID x1000 vs real", *kid, "0", "",
                                     kid_ae ? fmt::format(" {:>12.2f}", *kid_ae) : std::string{});
        }
        if (generated.frames_per_stream > a->streams.drift_reference_frames) {  // long streams: which one drifted
          std::cout << "  drift per generated stream (brightness / contrast / caption):\n";
          for (const auto& d : generated.per_stream) {
            std::cout << fmt::format("    {:.3f} / {:.3f} / {:.3f}  {}\n", d.brightness, d.contrast, d.caption_score, d.caption);
            auto spans = [&](const char* what, const std::vector<double>& values, double furthest) {
              if (values.empty()) return;
              std::vector<double> levels;  // x255: the scale pixel values are read in
              for (double v : values) levels.push_back(255 * v);
              std::cout << fmt::format("      {} by {}-frame span (/255): {:.1f}; furthest from the first: {:.3f}\n", what,
                                       a->streams.drift_reference_frames, fmt::join(levels, " "), furthest);
            };
            spans("brightness", d.span_brightness, d.furthest_span_brightness);
            spans("contrast", d.span_contrast, d.furthest_span_contrast);
            if (!d.span_classifier_caption.empty())
              std::cout << fmt::format("      classifier caption by {}-frame span: {:.3f}; furthest from the first: {:.3f}\n",
                                       a->streams.drift_reference_frames, fmt::join(d.span_classifier_caption, " "),
                                       d.furthest_span_classifier_caption);
          }
        }
      }
    }
    if (a->json) std::cout << j.dump() << "\n";
  });
}

}  // namespace

void register_dit(CLI::App& app) {
  auto* dit = app.add_subcommand("dit", "StreamDiT: streaming text-to-video (train, distill, stream, eval, classifier)");
  dit->require_subcommand(1);
  register_dit_train(*dit);
  register_dit_distill(*dit);
  register_dit_stream(*dit);
  register_dit_eval(*dit);
  register_dit_classifier(*dit);
}

}  // namespace streamgen::cli
