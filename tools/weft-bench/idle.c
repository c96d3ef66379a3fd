/* idle.c: the idle shapes.
 *
 * `idle_rss`: RSS growth of the process per idle worker with 8 alive. Each
 * worker starts its parent port (which keeps it alive), says READY and then
 * idles in its loop; when the 8th READY arrives the parent reads
 * /proc/self/statm again and closes the 8 channels, which ends the workers.
 * Node.js peer: node/idle_rss.js.
 *
 * `idle_cpu`: a worker and the main context exchange a burst of ping-pongs
 * (so both spin budgets are at their highest), then nothing happens for 2 s:
 * the process's CPU time (getrusage) over those 2 s shows whether
 * spin-before-park burns a core when idle. Then one ping every 10 ms, each
 * sent to a sleeping worker: the wake-up round trip's p50/p99 (compare with
 * uv_async_send ping-pong, 66 us on another machine of this kind).
 *
 * Threads: idle_entry and the echo entry on workers, the rest on the main
 * context (the timer is a plain uv_timer_t on the main loop). */
#include <stdlib.h>

#include "bench.h"

#define IDLE_WORKERS 8
#define BURST 20000u
#define IDLE_MS 2000u
#define WAKE_EVERY_MS 10u
#define WAKE_PINGS 40u

/* ---- idle_rss ----------------------------------------------------------- */

static void idle_on_message(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_free(msg);
}

static int idle_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  int err = weft_port_start(port, idle_on_message);
  if (err)
    return err;
  return bench_post_op(port, BENCH_OP_READY);
}

typedef struct {
  weft_port_t *ports[IDLE_WORKERS];
  int spawned, ready;
  uint64_t rss0, rss1;
} flock_t;

static void flock_on_message(weft_port_t *port, weft_msg_t *msg) {
  flock_t *f = weft_port_data(port);
  if (bench_msg_get_op(msg) == BENCH_OP_READY && ++f->ready == IDLE_WORKERS) {
    f->rss1 = bench_rss_kib();
    for (int i = 0; i < f->spawned; i++)
      weft_port_close(f->ports[i]);
  }
  weft_msg_free(msg);
}

static int flock_start(weft_ctx_t *ctx, flock_t *f) {
  weft_worker_options_t opts = {.entry = idle_entry, .on_message = flock_on_message};
  for (int i = 0; i < IDLE_WORKERS; i++) {
    weft_worker_t *w;
    int err = weft_worker_spawn(ctx, &opts, &w);
    if (err) {
      for (int j = 0; j < f->spawned; j++)
        weft_port_close(f->ports[j]);
      return err;
    }
    f->ports[f->spawned++] = weft_worker_port(w);
    weft_port_set_data(weft_worker_port(w), f);
  }
  return 0;
}

int bench_idle_rss(const bench_args_t *args) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail("idle_rss", "weft_runtime_new", err);
  flock_t f = {.rss0 = bench_rss_kib()};
  err = flock_start(weft_runtime_main(rt), &f);
  if (err)
    bench_fail("idle_rss", "spawning the workers", err);
  int run_err = weft_runtime_run(rt);
  if (!err && run_err)
    err = bench_fail("idle_rss", "weft_runtime_run", run_err);
  if (!err && (f.ready != IDLE_WORKERS || f.rss0 == 0))
    err = bench_fail("idle_rss", "hearing from every worker", WEFT_EPROTO);
  if (!err)
    bench_emit("idle_rss", args->rep, "\"kib_per_worker\":%.1f,\"workers\":%d,\"rss_kib\":%llu",
               (double)(f.rss1 - f.rss0) / IDLE_WORKERS, IDLE_WORKERS,
               (unsigned long long)f.rss1);
  weft_runtime_free(rt);
  return err;
}

/* ---- idle_cpu ----------------------------------------------------------- */

enum { PHASE_BURST, PHASE_IDLE, PHASE_WAKE, PHASE_DONE };

typedef struct {
  weft_port_t *port;
  uv_timer_t timer;
  int phase;
  uint64_t burst_left, pings;
  uint64_t t_sent, idle_t0, idle_cpu0, idle_wall_ns, idle_cpu_ns;
  uint64_t wakeups0, wakeups;
  double wake_us[WAKE_PINGS];
  int err;
} sleeper_t;

static uint64_t main_wakeups(sleeper_t *s) {
  weft_ctx_stats_t st;
  if (weft_ctx_stats(weft_port_ctx(s->port), &st) != 0)
    return 0;
  return st.wakeups;
}

static void sleeper_stop(sleeper_t *s, int err) {
  if (s->err == 0)
    s->err = err;
  s->phase = PHASE_DONE;
  uv_close((uv_handle_t *)&s->timer, NULL);
  weft_port_close(s->port);
}

static void sleeper_ping(sleeper_t *s) {
  s->t_sent = bench_now_ns();
  int err = bench_post_op(s->port, BENCH_OP_PING);
  if (err)
    sleeper_stop(s, err);
}

static void on_timer(uv_timer_t *t) {
  sleeper_t *s = t->data;
  if (s->phase == PHASE_IDLE) {
    s->idle_cpu_ns = bench_cpu_ns() - s->idle_cpu0;
    s->idle_wall_ns = bench_now_ns() - s->idle_t0;
    s->wakeups = main_wakeups(s) - s->wakeups0;
    s->phase = PHASE_WAKE;
    uv_timer_start(&s->timer, on_timer, WAKE_EVERY_MS, WAKE_EVERY_MS);
  } else if (s->phase == PHASE_WAKE) {
    sleeper_ping(s);
  }
}

static void start_idle(sleeper_t *s) {
  s->phase = PHASE_IDLE;
  s->idle_t0 = bench_now_ns();
  s->idle_cpu0 = bench_cpu_ns();
  s->wakeups0 = main_wakeups(s);
  uv_timer_start(&s->timer, on_timer, IDLE_MS, 0);
}

static void sleeper_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t now = bench_now_ns();
  sleeper_t *s = weft_port_data(port);
  weft_msg_free(msg);
  if (s->phase == PHASE_BURST) {
    if (s->burst_left-- > 0)
      sleeper_ping(s);
    else
      start_idle(s);
  } else if (s->phase == PHASE_WAKE) {
    s->wake_us[s->pings] = (double)(now - s->t_sent) / 1e3;
    if (++s->pings == WAKE_PINGS)
      sleeper_stop(s, 0);
  }
}

static int sleeper_start(weft_ctx_t *ctx, sleeper_t *s) {
  weft_worker_options_t opts = {.entry = bench_echo_entry, .on_message = sleeper_on_message};
  weft_worker_t *w;
  int err = weft_worker_spawn(ctx, &opts, &w);
  if (err)
    return err;
  s->port = weft_worker_port(w);
  weft_port_set_data(s->port, s);
  uv_timer_init(weft_ctx_loop(ctx), &s->timer);
  s->timer.data = s;
  return 0;
}

int bench_idle_cpu(const bench_args_t *args) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail("idle_cpu", "weft_runtime_new", err);
  sleeper_t s = {.burst_left = args->n ? args->n : BURST};
  err = sleeper_start(weft_runtime_main(rt), &s);
  if (err)
    bench_fail("idle_cpu", "starting the worker", err);
  else
    err = weft_runtime_run(rt);
  if (!err && s.err)
    err = bench_fail("idle_cpu", "pinging", s.err);
  if (!err && s.pings != WAKE_PINGS)
    err = bench_fail("idle_cpu", "completing the wake-up pings", WEFT_EPROTO);
  if (!err)
    bench_emit("idle_cpu", args->rep,
               "\"cpu_ms\":%.2f,\"idle_ms\":%.0f,\"cpu_pct\":%.3f,\"main_wakeups\":%llu,"
               "\"wake_p50_us\":%.1f,\"wake_p99_us\":%.1f",
               (double)s.idle_cpu_ns / 1e6, (double)s.idle_wall_ns / 1e6,
               100.0 * (double)s.idle_cpu_ns / (double)s.idle_wall_ns,
               (unsigned long long)s.wakeups, bench_percentile(s.wake_us, WAKE_PINGS, 50),
               bench_percentile(s.wake_us, WAKE_PINGS, 99));
  weft_runtime_free(rt);
  return err;
}
