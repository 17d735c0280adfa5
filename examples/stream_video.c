#define _POSIX_C_SOURCE 199309L /* clock_gettime */
/* Streams a video file through a Stable Diffusion img2img stream with streamgen's C API, writing the result.
 *
 *   stream_video MODEL TAESD INPUT OUTPUT PROMPT [SIZE]
 *
 * MODEL: a diffusers pipeline folder (SD-Turbo, SDXL-Turbo, ...), TAESD: its TAESD folder, INPUT: a video (or image
 * folder), OUTPUT: a video file or folder, SIZE: the square frame size (default 256). Every input frame gives one
 * output frame, in order. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "streamgen/streamgen.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int failed(const char* what) {
  fprintf(stderr, "stream_video: %s: %s\n", what, sg_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s MODEL TAESD INPUT OUTPUT PROMPT [SIZE]\n", argv[0]);
    return 2;
  }
  const int size = argc > 6 ? atoi(argv[6]) : 256;
  sg_pipeline_options po;
  sg_pipeline_options_init(&po);
  po.model = argv[1];
  po.taesd = argv[2];
  sg_pipeline* pipeline = NULL;
  if (sg_pipeline_load(&po, &pipeline) != SG_OK) return failed("loading the pipeline");

  sg_stream_options so;
  sg_stream_options_init(&so);
  so.width = so.height = size;
  so.prompt = argv[5];
  sg_stream* stream = NULL;
  if (sg_stream_create(pipeline, &so, &stream) != SG_OK) return failed("starting the stream");

  sg_source* source = NULL;
  if (sg_source_open(argv[3], &source) != SG_OK) return failed("opening the input");
  int in_w = 0, in_h = 0;
  double fps = 0;
  sg_source_info(source, &in_w, &in_h, &fps, NULL);
  sg_sink* sink = NULL;
  if (sg_sink_open(argv[4], fps > 0 ? fps : 24, &sink) != SG_OK) return failed("opening the output");

  const size_t in_bytes = (size_t)in_w * (size_t)in_h * 3, out_bytes = (size_t)size * (size_t)size * 3;
  uint8_t* in_pixels = malloc(in_bytes);
  uint8_t* out_pixels = malloc(out_bytes);
  if (!in_pixels || !out_pixels) return 1;
  int frames = 0, status = 0;
  const double start = now_s();
  for (;;) {
    sg_frame in = {.pixels = in_pixels, .capacity = in_bytes, .format = SG_PIXEL_RGB8};
    const sg_status s = sg_source_next(source, &in);
    if (s == SG_END) break;
    if (s != SG_OK || sg_stream_push(stream, in.pixels, in.width, in.height, in.stride, SG_PIXEL_RGB8) != SG_OK) {
      status = failed("reading or pushing a frame");
      break;
    }
    sg_frame out = {.pixels = out_pixels, .capacity = out_bytes, .format = SG_PIXEL_RGB8};
    if (sg_stream_pop(stream, 120000, &out) != SG_OK) {
      status = failed("waiting for the output");
      break;
    }
    if (sg_sink_write(sink, out.pixels, out.width, out.height, out.stride, SG_PIXEL_RGB8) != SG_OK) {
      status = failed("writing a frame");
      break;
    }
    ++frames;
  }
  const double seconds = now_s() - start;
  if (sg_sink_close(sink) != SG_OK && status == 0) status = failed("finishing the output");
  printf("%d frames in %.2f s (%.2f FPS) through streamgen %s\n%s\n", frames, seconds, frames / (seconds > 0 ? seconds : 1), sg_version(),
         sg_stream_stats_json(stream));
  sg_source_close(source);
  sg_stream_destroy(stream);
  sg_pipeline_destroy(pipeline);
  free(in_pixels);
  free(out_pixels);
  return status;
}
