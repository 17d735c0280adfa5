/* streamgen's C API: load a pipeline, run live streams on it, from any language that calls C.
 *
 * Plain C99, no LibTorch or C++ types; everything is reached through opaque handles. Every call that
 * can fail returns an sg_status; its message is then sg_last_error() on the calling thread, and for calls
 * on a handle also sg_pipeline_last_error() / sg_stream_last_error() (a message names the file, option or
 * frame and what was expected). Strings passed in are copied; strings returned stay valid until the next
 * call on the same handle (or, for sg_last_error, the next failing call on the same thread).
 *
 * Thread safety, per function, is stated below. In short: a pipeline is immutable once loaded and may be
 * shared by any number of streams on any threads; a stream may be pushed to from one thread while another
 * pops from it; destroying a handle must not race with any other call on it.
 *
 * A minimal img2img loop:
 *
 *   sg_pipeline_options po; sg_pipeline_options_init(&po);
 *   po.model = "/models/sd-turbo"; po.taesd = "/models/taesd";
 *   sg_pipeline* p; if (sg_pipeline_load(&po, &p) != SG_OK) { puts(sg_last_error()); return 1; }
 *   sg_stream_options so; sg_stream_options_init(&so); so.prompt = "oil painting";
 *   sg_stream* s; sg_stream_create(p, &so, &s);
 *   sg_stream_push(s, rgb, w, h, 0, SG_PIXEL_RGB8);
 *   sg_frame f = {.pixels = out, .capacity = sizeof out, .format = SG_PIXEL_RGB8};
 *   if (sg_stream_pop(s, 1000, &f) == SG_OK) ...;
 *   sg_stream_destroy(s); sg_pipeline_destroy(p);
 */
#ifndef STREAMGEN_STREAMGEN_H
#define STREAMGEN_STREAMGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SG_API __attribute__((visibility("default")))
#else
#define SG_API
#endif

/* Bumped when a struct below changes incompatibly; the structs carry their size for additions. */
#define SG_API_VERSION 1

typedef enum sg_status {
  SG_OK = 0,
  SG_INVALID_ARGUMENT = 1, /* a NULL pointer, an option out of range, a buffer too small */
  SG_ERROR = 2,            /* the request failed: a model that does not load, a frame the stream cannot take, ... */
  SG_NO_FRAME = 3,         /* sg_stream_pop*: no output within the timeout */
  SG_END = 4,              /* sg_source_next: the source has no more frames */
  SG_INTERNAL = 5          /* an unexpected failure inside the engine (a bug: please report the message) */
} sg_status;

typedef enum sg_pixel_format {
  SG_PIXEL_RGB8 = 0,  /* 3 bytes per pixel */
  SG_PIXEL_RGBA8 = 1, /* 4 bytes per pixel; alpha ignored on input, 255 on output */
  SG_PIXEL_BGR8 = 2,
  SG_PIXEL_BGRA8 = 3
} sg_pixel_format;

/* ---- library ------------------------------------------------------------------------------------ */

/* "0.1.0". Thread-safe. */
SG_API const char* sg_version(void);
/* JSON: version, API version, build type, compiler, LibTorch version, CUDA available. Thread-safe. */
SG_API const char* sg_build_info(void);
/* The message of the last call that failed on this thread ("" when none). Thread-safe (per thread). */
SG_API const char* sg_last_error(void);
/* "SG_OK", "SG_INVALID_ARGUMENT", ... Thread-safe. */
SG_API const char* sg_status_name(sg_status status);
/* What the engine logs to stderr: "off", "error", "warn", "info" (the default), "debug". Thread-safe. */
SG_API sg_status sg_set_log_level(const char* level);

/* ---- pipelines ----------------------------------------------------------------------------------- */

typedef struct sg_pipeline sg_pipeline;

typedef struct sg_pipeline_options {
  size_t struct_size;        /* set by sg_pipeline_options_init */
  const char* model;         /* a Stable Diffusion pipeline folder (SD1.x, SD2.x / SD-Turbo, SDXL / SDXL-Turbo) or a StreamDiT model folder */
  const char* taesd;         /* Stable Diffusion: the TAESD folder the streams encode and decode with (TAESD-XL for SDXL); NULL for StreamDiT */
  const char* device;        /* "cpu" (default, NULL), "cuda", "cuda:N" */
  const char* dtype;         /* "fp32" (default, NULL), "bf16", "fp16", "auto" (the fastest on this device) */
  const char* const* loras;  /* "FILE" or "FILE:SCALE" each, fused into the Stable Diffusion UNet and text encoder(s) */
  size_t lora_count;
  int threads;               /* CPU threads (0: every CPU this process may use) */
} sg_pipeline_options;

/* Defaults. Thread-safe. */
SG_API void sg_pipeline_options_init(sg_pipeline_options* options);
/* Loads every model of the pipeline (seconds to minutes). Thread-safe: several pipelines may load at once. */
SG_API sg_status sg_pipeline_load(const sg_pipeline_options* options, sg_pipeline** out);
/* "stable-diffusion" or "streamdit". Thread-safe. */
SG_API const char* sg_pipeline_kind(const sg_pipeline* pipeline);
/* The message of the last failed call on this pipeline. */
SG_API const char* sg_pipeline_last_error(const sg_pipeline* pipeline);
/* Frees the pipeline once every stream made from it is destroyed too (streams keep their models alive). NULL is ignored. */
SG_API void sg_pipeline_destroy(sg_pipeline* pipeline);

/* ---- streams ------------------------------------------------------------------------------------- */

typedef struct sg_stream sg_stream;

typedef struct sg_stream_options {
  size_t struct_size;           /* set by sg_stream_options_init */
  int width, height;            /* output size (Stable Diffusion: multiples of 8, default 512; StreamDiT: 0 = 256) */
  const char* prompt;
  const char* negative_prompt;  /* Stable Diffusion with cfg "full" or "initialize" */
  uint64_t seed;
  /* Stable Diffusion (StreamDiffusion) */
  const char* mode;             /* "img2img" (default: push frames) or "txt2img" (frames come without input) */
  const int32_t* t_index_list;  /* indices into the num_inference_steps LCM schedule; NULL: {32, 45} */
  size_t t_index_count;
  int num_inference_steps;      /* 50 */
  int do_add_noise;             /* 1: re-noise each slot's latents with its fixed noise (StreamDiffusion's default) */
  const char* cfg_type;         /* "none", "full", "self" (default), "initialize" */
  float guidance_scale;         /* 1.2 */
  float delta;                  /* 1.0 */
  int frame_buffer_size;        /* frames per model call (1) */
  int use_denoising_batch;      /* 1: Stream Batch (one call for every step); 0: sequential */
  int similar_image_filter;     /* 1: skip near-identical input frames (repeat the last output) */
  float similar_image_filter_threshold; /* 0.98 */
  int similar_image_filter_max_skip;    /* 10 */
  const char* fit;              /* how pushed frames of another size fit: "crop" (default), "pad", "stretch" */
  /* StreamDiT (text-to-video): the model folder's sampler.json settings apply */
  double fps;                   /* output pace (24); 0: every frame as soon as it is made */
  /* queues */
  int input_capacity;           /* frames waiting for the model (1: the latest wins) */
  int output_capacity;          /* frames waiting for sg_stream_pop (4); the oldest is dropped when full */
} sg_stream_options;

/* Defaults. Thread-safe. */
SG_API void sg_stream_options_init(sg_stream_options* options);
/* Starts a stream on the pipeline: its threads run until sg_stream_destroy. Thread-safe. */
SG_API sg_status sg_stream_create(sg_pipeline* pipeline, const sg_stream_options* options, sg_stream** out);
/* The stream's output size (what a width or height of 0 in its options became). Thread-safe. */
SG_API sg_status sg_stream_size(const sg_stream* stream, int* width, int* height);
/* img2img streams: one input frame of any size (fitted to the stream's), `stride` bytes per row (0: packed).
 * Never blocks: under overload older frames are dropped and counted. Thread-safe. */
SG_API sg_status sg_stream_push(sg_stream* stream, const uint8_t* pixels, int width, int height, size_t stride, sg_pixel_format format);

typedef struct sg_frame {
  uint8_t* pixels;        /* in: the caller's buffer */
  size_t capacity;        /* in: its size in bytes (at least stride * height) */
  sg_pixel_format format; /* in */
  size_t stride;          /* in: bytes per row (0: packed) */
  int width, height;      /* out */
  uint64_t index;         /* out: the output counter */
  double latency_ms;      /* out: img2img: from the push of its input; text-to-video: from the start of its model call */
  int repeated;           /* out: 1 when the similarity filter skipped its input and this repeats the last image */
} sg_frame;

/* The next output in order. timeout_ms 0: never waits; > 0: waits at most that long; SG_NO_FRAME when
 * none came. Thread-safe (one popping thread is the intended use). */
SG_API sg_status sg_stream_pop(sg_stream* stream, int timeout_ms, sg_frame* frame);
/* The newest output: older queued outputs are skipped (and counted as dropped). As sg_stream_pop otherwise. */
SG_API sg_status sg_stream_pop_latest(sg_stream* stream, int timeout_ms, sg_frame* frame);
/* A new prompt from the next model call, without a restart; blend_frames > 1 moves to it over that many
 * calls (Stable Diffusion). Thread-safe. */
SG_API sg_status sg_stream_set_prompt(sg_stream* stream, const char* prompt, const char* negative_prompt, int blend_frames);

typedef struct sg_stats {
  size_t struct_size; /* in: sizeof(sg_stats) */
  uint64_t frames_in, inputs_dropped, frames_skipped, calls, frames_out, outputs_dropped;
  double output_fps;
  double latency_ms_median, latency_ms_p90;
  double model_ms_median; /* one model call: the UNet step (Stable Diffusion) or the DiT step */
} sg_stats;

/* Counters and timings. Thread-safe. */
SG_API sg_status sg_stream_stats(sg_stream* stream, sg_stats* stats);
/* The same and every stage's median / p90 / count as JSON, valid until the next call on the stream. */
SG_API const char* sg_stream_stats_json(sg_stream* stream);
SG_API const char* sg_stream_last_error(const sg_stream* stream);
/* Stops the stream's threads and frees it. NULL is ignored. */
SG_API void sg_stream_destroy(sg_stream* stream);

/* ---- media (FFmpeg, as the CLI reads and writes them) ---------------------------------------------- */

typedef struct sg_source sg_source;
typedef struct sg_sink sg_sink;

/* A video file, "camera:/dev/videoN", an image, or a folder / glob of images. Not thread-safe per handle. */
SG_API sg_status sg_source_open(const char* spec, sg_source** out);
/* The source's frame size and rate (0 when it has none) and frame count (-1 when unknown). */
SG_API sg_status sg_source_info(sg_source* source, int* width, int* height, double* fps, int64_t* frame_count);
/* The next frame into `frame` (its width / height are the source's); SG_END after the last. */
SG_API sg_status sg_source_next(sg_source* source, sg_frame* frame);
SG_API void sg_source_close(sg_source* source);

/* A video file (.mp4, .mkv, .webm, ...) or a folder of PNGs, written at `fps`. */
SG_API sg_status sg_sink_open(const char* spec, double fps, sg_sink** out);
/* Every frame of one sink has the size of the first. */
SG_API sg_status sg_sink_write(sg_sink* sink, const uint8_t* pixels, int width, int height, size_t stride, sg_pixel_format format);
/* Flushes and closes the file; a failure to finish it is reported here. The handle is freed either way. */
SG_API sg_status sg_sink_close(sg_sink* sink);

#ifdef __cplusplus
}
#endif

#endif /* STREAMGEN_STREAMGEN_H */
