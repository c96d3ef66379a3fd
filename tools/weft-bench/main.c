/* main.c: weft-bench's command line: `weft-bench <shape> [--n N] [--repeat R]
 * [--size BYTES] [--fresh]`, or `weft-bench all`.
 *
 * Each repetition of a shape runs with a fresh runtime and prints its own JSON
 * lines; tools/bench/run.sh runs the Node.js peers alternately and takes the
 * medians. The exit status is 0 if every shape succeeded, 1 otherwise, 2 for
 * a bad command line. Main thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct {
  const char *name;
  bench_shape_fn fn;
  const char *what;
} shape_t;

static const shape_t shapes[] = {
    {"oneway", bench_oneway, "main -> worker {seq, tag} records, msgs/s"},
    {"pingpong", bench_pingpong, "parent <-> worker round trip, p50/p99 us"},
    {"transfer", bench_transfer, "owned buffer moved to a worker, us per message"},
    {"spawn", bench_spawn, "weft_worker_spawn -> first message back, us"},
    {"idle_rss", bench_idle_rss, "RSS growth per idle worker with 8 alive, KiB"},
    {"idle_cpu", bench_idle_cpu, "CPU used while idle for 2 s after a burst; wake-up latency"},
    {"actor_spawn", bench_actor_spawn, "spawn N actors: spawns/s, bytes per idle actor"},
    {"actor_pingpong", bench_actor_pingpong, "two actors on one context, round trips/s"},
    {"actor_ring", bench_actor_ring, "ring of 1000 actors, hops/s"},
    {"actor_oneway", bench_actor_oneway, "N messages to one actor on the same context, msgs/s"},
    {"child_oneway", bench_child_oneway, "parent -> child process {seq, tag} records, msgs/s"},
    {"child_pingpong", bench_child_pingpong, "parent <-> child process round trip, p50/p99 us"},
    {"child_transfer", bench_child_transfer, "16 MiB buffer to a child process, us per message"},
    {"pool", bench_pool, "CPU-offload pool: tiny tasks/s, scaling 2 vs 1 thread, submit-to-start latency"},
    {"remote_oneway", bench_remote_oneway, "node -> actor on another node over tcp, {seq, tag} msgs/s"},
    {"remote_pingpong", bench_remote_pingpong, "node <-> actor on another node, round trip p50/p99 us"},
    {"remote_transfer", bench_remote_transfer, "16 MiB buffer to another node and its answer, us each"},
    {"service_pingpong", bench_service_pingpong, "weft_service_call to a provider on another node, p50/p99 us"},
};

#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

static void usage(FILE *f) {
  fprintf(f, "usage: weft-bench <shape|all> [--n N] [--repeat R] [--size BYTES] [--fresh]\n"
             "shapes:\n");
  for (size_t i = 0; i < NSHAPES; i++)
    fprintf(f, "  %-15s %s\n", shapes[i].name, shapes[i].what);
  fprintf(f, "Prints one JSON object per result line on stdout.\n");
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s)
    return WEFT_EINVAL;
  if (*end == 'k' || *end == 'K')
    v *= 1000ull, end++;
  else if (*end == 'M')
    v *= 1000000ull, end++;
  else if (*end == 'm')
    v *= 1024ull * 1024ull, end++; /* --size 16m: MiB */
  if (*end != '\0')
    return WEFT_EINVAL;
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv, bench_args_t *a, uint64_t *repeat) {
  for (int i = 2; i < argc; i++) {
    const char *opt = argv[i];
    if (strcmp(opt, "--fresh") == 0) {
      a->fresh = true;
      continue;
    }
    if (i + 1 >= argc)
      return WEFT_EINVAL;
    const char *val = argv[++i];
    int err = WEFT_EINVAL;
    if (strcmp(opt, "--n") == 0)
      err = parse_u64(val, &a->n);
    else if (strcmp(opt, "--repeat") == 0)
      err = parse_u64(val, repeat);
    else if (strcmp(opt, "--size") == 0)
      err = parse_u64(val, &a->size);
    if (err)
      return err;
  }
  return *repeat > 0 ? 0 : WEFT_EINVAL;
}

static int run_shape(const shape_t *s, bench_args_t *a, uint64_t repeat) {
  int failed = 0;
  for (uint64_t r = 0; r < repeat; r++) {
    a->rep = (int)r;
    int err = s->fn(a);
    if (err) {
      fprintf(stderr, "weft-bench %s: repetition %d failed: %s\n", s->name, a->rep,
              weft_err_name(err));
      failed = 1;
    }
  }
  return failed;
}

int main(int argc, char **argv) {
  int child_code;
  if (bench_child_main(&child_code))
    return child_code;
  if (argc == 3 && strcmp(argv[1], "--remote-peer") == 0)
    return bench_remote_peer_main(argv[2]);
  if (argc == 3 && strcmp(argv[1], "--service-peer") == 0)
    return bench_service_peer_main(argv[2]);
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  bench_args_t a = {0};
  uint64_t repeat = 1;
  if (parse_args(argc, argv, &a, &repeat) != 0) {
    usage(stderr);
    return 2;
  }
  bool all = strcmp(argv[1], "all") == 0;
  int failed = 0, found = 0;
  for (size_t i = 0; i < NSHAPES; i++) {
    if (!all && strcmp(argv[1], shapes[i].name) != 0)
      continue;
    found = 1;
    failed |= run_shape(&shapes[i], &a, repeat);
  }
  if (!found) {
    fprintf(stderr, "weft-bench: unknown shape '%s'\n", argv[1]);
    usage(stderr);
    return 2;
  }
  return failed;
}
