/* What the C API adds per frame to an in-process C++ stream: the copy and layout conversion of a pushed frame
 * (sg_stream_push) and of a popped one (sg_stream_pop of an output that is already waiting). The C++ runner's own
 * push and pop hand tensors over without copying, so these two are the whole difference.
 *
 *   streamgen_capi_overhead MODEL TAESD [SIZE] [FRAMES]   (defaults 256, 30) */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streamgen/streamgen.h"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, by_value);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL TAESD [SIZE] [FRAMES]\n", argv[0]);
    return 2;
  }
  const int size = argc > 3 ? atoi(argv[3]) : 256, frames = argc > 4 ? atoi(argv[4]) : 30;
  if (size < 8 || frames < 1) return 2;
  sg_set_log_level("warn");
  sg_pipeline_options po;
  sg_pipeline_options_init(&po);
  po.model = argv[1];
  po.taesd = argv[2];
  sg_pipeline* p = NULL;
  if (sg_pipeline_load(&po, &p) != SG_OK) return fprintf(stderr, "%s\n", sg_last_error()), 1;
  sg_stream_options so;
  sg_stream_options_init(&so);
  so.width = so.height = size;
  so.prompt = "an oil painting";
  sg_stream* s = NULL;
  if (sg_stream_create(p, &so, &s) != SG_OK) return fprintf(stderr, "%s\n", sg_last_error()), 1;
  const size_t bytes = (size_t)size * (size_t)size * 4;
  uint8_t* in = malloc(bytes);
  uint8_t* out = malloc(bytes);
  double* push_ms = malloc(sizeof(double) * (size_t)frames);
  double* pop_ms = malloc(sizeof(double) * (size_t)frames);
  double* rgba_ms = malloc(sizeof(double) * (size_t)frames);
  if (!in || !out || !push_ms || !pop_ms || !rgba_ms) return 1;
  for (size_t i = 0; i < bytes; ++i) in[i] = (uint8_t)(i * 7);
  const double start = now_ms();
  for (int i = 0; i < frames; ++i) {
    double t = now_ms();
    if (sg_stream_push(s, in, size, size, 0, i % 2 ? SG_PIXEL_RGBA8 : SG_PIXEL_RGB8) != SG_OK) return fprintf(stderr, "%s\n", sg_last_error()), 1;
    (i % 2 ? rgba_ms : push_ms)[i / 2] = now_ms() - t;
    sg_stats st = {.struct_size = sizeof st};
    do {  /* wait for the output without taking it, so that the timed pop only copies */
      struct timespec nap = {0, 200000};
      nanosleep(&nap, NULL);
      sg_stream_stats(s, &st);
    } while (st.frames_out < (uint64_t)(i + 1));
    sg_frame f = {.pixels = out, .capacity = bytes, .format = SG_PIXEL_RGB8};
    t = now_ms();
    if (sg_stream_pop(s, 1000, &f) != SG_OK) return fprintf(stderr, "%s\n", sg_last_error()), 1;
    pop_ms[i] = now_ms() - t;
  }
  const double total = now_ms() - start;
  const int rgb = (frames + 1) / 2, rgba = frames / 2;
  const double m_push = median(push_ms, rgb), m_rgba = rgba ? median(rgba_ms, rgba) : 0, m_pop = median(pop_ms, frames);
  printf("C API per frame at %dx%d over %d frames (medians): push RGB %.3f ms, push RGBA %.3f ms, pop into RGB %.3f ms; "
         "added per frame %.3f ms (RGB in and out); stream %.1f ms per frame end to end\n",
         size, size, frames, m_push, m_rgba, m_pop, m_push + m_pop, total / frames);
  sg_stream_destroy(s);
  sg_pipeline_destroy(p);
  free(in), free(out), free(push_ms), free(pop_ms), free(rgba_ms);
  return 0;
}
