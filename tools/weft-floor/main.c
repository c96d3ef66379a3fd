/* main.c: weft-floor's command line and helpers:
 *
 *   weft-floor <floor_uv_async|floor_eventfd|floor_spsc|floor_memcpy|all>
 *              [--n N] [--rep I]
 *
 * N may end in k or M. Exit status 0, 1 if a shape failed, 2 for a bad
 * command line. A 120 s alarm bounds the whole process (see floor.h). */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "floor.h"

#define WATCHDOG_S 120u

typedef struct {
  const char *name;
  int (*fn)(const floor_args_t *args);
  const char *what;
} shape_t;

static const shape_t shapes[] = {
    {"floor_uv_async", floor_uv_async, "uv_async_send ping-pong between two loops, p50/p99 us"},
    {"floor_eventfd", floor_eventfd, "eventfd ping-pong between two blocked threads, p50/p99 us"},
    {"floor_spsc", floor_spsc, "SPSC ring between two spinning threads: round trip, items/s"},
    {"floor_memcpy", floor_memcpy, "memcpy of 1, 16, 64 MiB: us per copy, GiB/s"},
};

#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

uint64_t floor_now_ns(void) { return uv_hrtime(); }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double floor_percentile(double *v, size_t n, double p) {
  if (n == 0)
    return 0;
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

void floor_emit(const char *shape, int rep, const char *fields, ...) {
  va_list ap;
  printf("{\"shape\":\"%s\",\"impl\":\"floor\",\"rep\":%d,", shape, rep);
  va_start(ap, fields);
  vprintf(fields, ap);
  va_end(ap);
  printf("}\n");
  fflush(stdout);
}

int floor_fail(const char *shape, const char *what, int err) {
  if (err > 0)
    fprintf(stderr, "weft-floor %s: %s failed: %s\n", shape, what, strerror(err));
  else if (err < 0)
    fprintf(stderr, "weft-floor %s: %s failed: %s\n", shape, what, uv_strerror(err));
  else
    fprintf(stderr, "weft-floor %s: %s failed\n", shape, what);
  return -1;
}

int floor_rtt_init(floor_rtt_t *r, uint64_t n, uint64_t warmup, uint64_t gap_us) {
  *r = (floor_rtt_t){.n = n, .warmup = warmup, .gap_us = gap_us};
  r->lat_us = calloc(n, sizeof(*r->lat_us));
  return r->lat_us ? 0 : -1;
}

void floor_rtt_record(floor_rtt_t *r, uint64_t i, uint64_t now, uint64_t ns) {
  if (i + 1 == r->warmup)
    r->t0 = now;
  if (i < r->warmup || i >= r->warmup + r->n)
    return;
  r->lat_us[i - r->warmup] = (double)ns / 1e3;
  r->t1 = now;
}

void floor_rtt_emit(floor_rtt_t *r, const char *shape, int rep, const char *extra) {
  double secs = (double)(r->t1 - r->t0) / 1e9;
  double rate = r->gap_us == 0 && secs > 0 ? (double)r->n / secs : 0;
  floor_emit(shape, rep, "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"n\":%llu,"
                         "\"gap_us\":%llu%s",
             floor_percentile(r->lat_us, r->n, 50), floor_percentile(r->lat_us, r->n, 99), rate,
             (unsigned long long)r->n, (unsigned long long)r->gap_us, extra ? extra : "");
}

void floor_rtt_fini(floor_rtt_t *r) {
  free(r->lat_us);
  r->lat_us = NULL;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s)
    return -1;
  if (*end == 'k' || *end == 'K')
    v *= 1000ull, end++;
  else if (*end == 'M')
    v *= 1000000ull, end++;
  if (*end != '\0')
    return -1;
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv, floor_args_t *a) {
  for (int i = 2; i + 1 < argc; i += 2) {
    uint64_t v;
    if (parse_u64(argv[i + 1], &v) != 0)
      return -1;
    if (strcmp(argv[i], "--n") == 0)
      a->n = v;
    else if (strcmp(argv[i], "--rep") == 0 && v < 1000000)
      a->rep = (int)v;
    else
      return -1;
  }
  return argc % 2 == 0 ? 0 : -1;
}

static void usage(FILE *f) {
  fprintf(f, "usage: weft-floor <shape|all> [--n N] [--rep I]\nshapes:\n");
  for (size_t i = 0; i < NSHAPES; i++)
    fprintf(f, "  %-15s %s\n", shapes[i].name, shapes[i].what);
  fprintf(f, "Prints one JSON object per result line on stdout.\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  floor_args_t a = {0};
  if (parse_args(argc, argv, &a) != 0) {
    usage(stderr);
    return 2;
  }
  alarm(WATCHDOG_S); /* SIGALRM's default action ends the process */
  bool all = strcmp(argv[1], "all") == 0;
  int failed = 0, found = 0;
  for (size_t i = 0; i < NSHAPES; i++) {
    if (!all && strcmp(argv[1], shapes[i].name) != 0)
      continue;
    found = 1;
    if (shapes[i].fn(&a) != 0)
      failed = 1;
  }
  if (!found) {
    fprintf(stderr, "weft-floor: unknown shape '%s'\n", argv[1]);
    usage(stderr);
    return 2;
  }
  return failed;
}
