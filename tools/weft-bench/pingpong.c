/* pingpong.c: the `pingpong` shape: the main context posts {op, seq} to a
 * worker, which posts the same message back; the next ping leaves when the
 * pong arrives. Measured after a warm-up: p50 and p99 round-trip latency (us)
 * and round trips/s, plus how often the main context was woken from sleep
 * versus found its pong while spinning. Node.js peer: node/pingpong.js.
 *
 * Threads: echo_* on the worker's context, the rest on the main context. */
#include <stdlib.h>

#include "bench.h"

#define SHAPE "pingpong"
#define DEFAULT_N 200000u
#define WARMUP 2000u

/* ---- worker side: echo -------------------------------------------------- */

static void echo_on_message(weft_port_t *port, weft_msg_t *msg) {
  if (weft_port_post(port, msg) != 0)
    weft_msg_free(msg);
}

int bench_echo_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  int err = weft_port_start(port, echo_on_message);
  if (err)
    return err;
  return bench_post_op(port, BENCH_OP_READY);
}

/* ---- main side ---------------------------------------------------------- */

typedef struct {
  weft_port_t *port;
  uint64_t n, done;   /* round trips wanted (after warm-up), completed */
  double *lat_us;     /* n latencies */
  uint64_t t_sent, t0, t1;
  int err;
} pinger_t;

static void ping(pinger_t *p) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (!err) {
    weft_msg_put_map(m, 2);
    weft_msg_put_u64(m, "op", BENCH_OP_PING);
    err = weft_msg_put_u64(m, "seq", p->done);
  }
  p->t_sent = bench_now_ns();
  if (!err)
    err = weft_port_post(p->port, m);
  if (err) {
    weft_msg_free(m);
    p->err = err;
    weft_port_close(p->port);
  }
}

static void pinger_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t now = bench_now_ns();
  pinger_t *p = weft_port_data(port);
  uint64_t op = bench_msg_get_op(msg);
  weft_msg_free(msg);
  if (op == BENCH_OP_PING) {
    if (p->done >= WARMUP)
      p->lat_us[p->done - WARMUP] = (double)(now - p->t_sent) / 1e3;
    if (++p->done == WARMUP)
      p->t0 = now;
  }
  if (p->done == WARMUP + p->n) {
    p->t1 = now;
    weft_port_close(port);
    return;
  }
  ping(p);
}

static int pinger_start(weft_ctx_t *ctx, pinger_t *p) {
  weft_worker_options_t opts = {.entry = bench_echo_entry, .on_message = pinger_on_message};
  weft_worker_t *w;
  int err = weft_worker_spawn(ctx, &opts, &w);
  if (err)
    return err;
  p->port = weft_worker_port(w);
  weft_port_set_data(p->port, p);
  return 0;
}

static void emit(const bench_args_t *args, pinger_t *p, const weft_ctx_stats_t *st) {
  double secs = (double)(p->t1 - p->t0) / 1e9;
  bench_emit(SHAPE, args->rep,
             "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"n\":%llu,"
             "\"main_wakeups\":%llu,\"main_spins_hit\":%llu",
             bench_percentile(p->lat_us, p->n, 50), bench_percentile(p->lat_us, p->n, 99),
             (double)p->n / secs, (unsigned long long)p->n, (unsigned long long)st->wakeups,
             (unsigned long long)st->spins_hit);
}

int bench_pingpong(const bench_args_t *args) {
  pinger_t p = {.n = args->n ? args->n : DEFAULT_N};
  p.lat_us = calloc(p.n, sizeof(*p.lat_us));
  if (p.lat_us == NULL)
    return bench_fail(SHAPE, "allocating latencies", WEFT_ENOMEM);
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err) {
    free(p.lat_us);
    return bench_fail(SHAPE, "weft_runtime_new", err);
  }
  err = pinger_start(weft_runtime_main(rt), &p);
  if (err)
    bench_fail(SHAPE, "starting the worker", err);
  else
    err = weft_runtime_run(rt);
  if (!err && p.err)
    err = bench_fail(SHAPE, "posting", p.err);
  if (!err && p.done != WARMUP + p.n)
    err = bench_fail(SHAPE, "completing the round trips", WEFT_ECLOSED);
  if (!err) {
    weft_ctx_stats_t st;
    weft_ctx_stats(weft_runtime_main(rt), &st);
    emit(args, &p, &st);
  }
  weft_runtime_free(rt);
  free(p.lat_us);
  return err;
}
