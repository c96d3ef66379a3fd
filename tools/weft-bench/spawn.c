/* spawn.c: the `spawn` shape: weft_worker_spawn, then the time until the
 * worker's first message reaches the parent's on_message; the worker's entry
 * posts that message and returns, so the worker exits right after. Workers
 * are spawned one after another (the next one from the previous one's
 * on_exit). Measured: median and p90 us to the first message, and median us
 * to on_exit. Node.js peer: node/spawn.js (new Worker -> 'message').
 *
 * Threads: hello_entry on each worker's thread, the rest on the main context. */
#include <stdlib.h>

#include "bench.h"

#define SHAPE "spawn"
#define DEFAULT_N 200u
#define WARMUP 5u

static int hello_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  return bench_post_op(weft_ctx_parent_port(ctx), BENCH_OP_READY);
}

typedef struct {
  weft_ctx_t *ctx;
  uint64_t n, started, greeted;
  double *first_us, *exit_us;
  uint64_t t0;
  int err;
} spawner_t;

static void spawn_next(spawner_t *s);

static void spawner_on_hello(weft_port_t *port, weft_msg_t *msg) {
  uint64_t now = bench_now_ns();
  spawner_t *s = weft_port_data(port);
  if (bench_msg_get_op(msg) == BENCH_OP_READY && s->started > WARMUP)
    s->first_us[s->started - WARMUP - 1] = (double)(now - s->t0) / 1e3;
  s->greeted++;
  weft_msg_free(msg);
}

static void spawner_on_exit(weft_worker_t *w, int code) {
  uint64_t now = bench_now_ns();
  spawner_t *s = weft_worker_data(w);
  if (code != 0 && s->err == 0)
    s->err = WEFT_EPROTO;
  if (s->started > WARMUP)
    s->exit_us[s->started - WARMUP - 1] = (double)(now - s->t0) / 1e3;
  if (s->err == 0 && s->started < WARMUP + s->n)
    spawn_next(s);
}

static void spawn_next(spawner_t *s) {
  weft_worker_options_t opts = {
      .entry = hello_entry, .on_message = spawner_on_hello, .on_exit = spawner_on_exit, .data = s};
  weft_worker_t *w;
  s->t0 = bench_now_ns();
  int err = weft_worker_spawn(s->ctx, &opts, &w);
  if (err) {
    s->err = err;
    return;
  }
  s->started++;
  weft_port_set_data(weft_worker_port(w), s);
}

int bench_spawn(const bench_args_t *args) {
  spawner_t s = {.n = args->n ? args->n : DEFAULT_N};
  s.first_us = calloc(s.n, sizeof(double));
  s.exit_us = calloc(s.n, sizeof(double));
  weft_runtime_t *rt = NULL;
  int err = s.first_us && s.exit_us ? weft_runtime_new(&rt, NULL) : WEFT_ENOMEM;
  if (err) {
    free(s.first_us);
    free(s.exit_us);
    return bench_fail(SHAPE, "setting up", err);
  }
  s.ctx = weft_runtime_main(rt);
  spawn_next(&s);
  err = weft_runtime_run(rt);
  if (!err && s.err)
    err = bench_fail(SHAPE, "spawning", s.err);
  if (!err && s.greeted != WARMUP + s.n)
    err = bench_fail(SHAPE, "receiving every first message", WEFT_EPROTO);
  if (!err)
    bench_emit(SHAPE, args->rep,
               "\"median_us\":%.1f,\"p90_us\":%.1f,\"exit_median_us\":%.1f,\"n\":%llu",
               bench_percentile(s.first_us, s.n, 50), bench_percentile(s.first_us, s.n, 90),
               bench_percentile(s.exit_us, s.n, 50), (unsigned long long)s.n);
  weft_runtime_free(rt);
  free(s.first_us);
  free(s.exit_us);
  return err;
}
