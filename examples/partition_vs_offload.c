/* partition_vs_offload.c: three ways to run a long computation next to an
 * event loop, and what each does to the loop's responsiveness.
 *
 * Node's guide "Don't Block the Event Loop" offers the same three choices:
 *  (a) run it in one go on the loop: simple, but nothing else runs meanwhile;
 *  (b) partition it: do a slice per loop iteration (setImmediate there, a
 *      uv_idle_t here), so timers and I/O get a turn between slices;
 *  (c) offload it to a worker: the loop stays free, the result comes back as
 *      a message.
 * The computation counts the primes below N. A 1 ms repeating uv timer on the
 * main loop is the probe: each time it fires it records how late it is. The
 * table shows, per mode, the work's duration and the probe's worst and 99th
 * percentile delay.
 *
 * Sequence per mode: start the probe, start the work 10 ms later, when the
 * work is done let the probe run 10 ms more (so a late tick is recorded),
 * stop it, go to the next mode. After (c) main closes its handles and the
 * worker's port; the worker exits and the loop ends.
 *
 * Threads: everything runs on the main thread except worker_entry and
 * on_job, on the worker's.
 *
 * Usage: partition_vs_offload [--demo]   (--demo: N = 3M, else N = 10M) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define TICK_MS 1          /* the probe's period */
#define SETTLE_MS 10       /* quiet time before and after each mode's work */
#define SLICE_NS 500000    /* (b): most time one slice may take */
#define STEP 256u          /* numbers tested between two clock reads */

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* ---- the computation (pure, any thread) ------------------------------------ */

static bool is_prime(uint32_t n) {
  if (n < 2)
    return false;
  if (n % 2 == 0)
    return n == 2;
  for (uint32_t d = 3; d * d <= n; d += 2)
    if (n % d == 0)
      return false;
  return true;
}

/* Primes in [lo, hi). */
static uint64_t count_primes(uint32_t lo, uint32_t hi) {
  uint64_t k = 0;
  for (uint32_t i = lo; i < hi; i++)
    k += is_prime(i);
  return k;
}

/* ---- the worker (mode c) --------------------------------------------------- */

/* {n} -> {primes}. Polls weft_ctx_should_stop so terminate can interrupt it. */
static void on_job(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t n = 0, found = 0;
  weft_msg_get_u64(msg, "n", &n);
  weft_msg_free(msg);
  weft_ctx_t *ctx = weft_port_ctx(parent);
  for (uint32_t lo = 0; lo < n && !weft_ctx_should_stop(ctx); lo += STEP)
    found += count_primes(lo, lo + STEP < n ? lo + STEP : (uint32_t)n);

  weft_msg_t *answer;
  check(weft_msg_new(&answer), "weft_msg_new");
  weft_msg_put_map(answer, 1);
  weft_msg_put_u64(answer, "primes", found);
  check(weft_port_post(parent, answer), "weft_port_post");
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), on_job);
}

/* ---- the main loop --------------------------------------------------------- */

enum { MODE_BLOCK, MODE_CHUNK, MODE_OFFLOAD, MODES };
static const char *mode_names[MODES] = {
    "(a) one go on the main loop",
    "(b) slices from uv_idle",
    "(c) offloaded to a worker",
};

typedef struct {
  uint64_t primes, work_ns, lag_max_ns, lag_p99_ns;
  size_t ticks;
} result_t;

/* One instance, touched only by the main thread. */
static struct {
  uv_timer_t probe;      /* repeating: records how late it fires */
  uv_timer_t step;       /* one-shot: starts a mode's work, then ends the mode */
  uv_idle_t slicer;      /* mode (b): one slice per loop iteration */
  weft_worker_t *worker; /* mode (c) */
  int mode;
  uint32_t n, cursor;
  uint64_t found, work_start_ns, last_tick_ns;
  uint64_t *lags;
  size_t nlags, caplags;
  result_t results[MODES];
} app;

static void begin_mode(void);

static void on_probe(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_hrtime();
  uint64_t due = app.last_tick_ns + TICK_MS * 1000000ull;
  app.last_tick_ns = now;
  if (app.nlags == app.caplags) {
    size_t cap = app.caplags ? app.caplags * 2 : 1024;
    uint64_t *p = realloc(app.lags, cap * sizeof(*p));
    check(p ? 0 : UV_ENOMEM, "realloc");
    app.lags = p;
    app.caplags = cap;
  }
  app.lags[app.nlags++] = now > due ? now - due : 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void print_table(void) {
  printf("\n%-30s %9s %9s %7s %14s %14s\n", "mode", "primes", "work ms", "ticks",
         "probe max ms", "probe p99 ms");
  for (int m = 0; m < MODES; m++) {
    const result_t *r = &app.results[m];
    printf("%-30s %9llu %9.1f %7zu %14.2f %14.2f\n", mode_names[m],
           (unsigned long long)r->primes, r->work_ns / 1e6, r->ticks, r->lag_max_ns / 1e6,
           r->lag_p99_ns / 1e6);
  }
}

static void finish(void) {
  print_table();
  uv_close((uv_handle_t *)&app.probe, NULL);
  uv_close((uv_handle_t *)&app.step, NULL);
  uv_close((uv_handle_t *)&app.slicer, NULL);
  weft_port_close(weft_worker_port(app.worker)); /* the worker exits */
}

/* SETTLE_MS after the work: stop the probe, summarise, next mode. */
static void on_mode_end(uv_timer_t *t) {
  (void)t;
  uv_timer_stop(&app.probe);
  result_t *r = &app.results[app.mode];
  qsort(app.lags, app.nlags, sizeof(*app.lags), cmp_u64);
  r->ticks = app.nlags;
  if (app.nlags > 0) {
    r->lag_max_ns = app.lags[app.nlags - 1];
    r->lag_p99_ns = app.lags[(app.nlags * 99 + 99) / 100 - 1];
  }
  printf("%s: done\n", mode_names[app.mode]);
  if (++app.mode < MODES)
    begin_mode();
  else
    finish();
}

static void work_done(void) {
  result_t *r = &app.results[app.mode];
  r->primes = app.found;
  r->work_ns = uv_hrtime() - app.work_start_ns;
  uv_update_time(app.step.loop); /* after (a) the loop's clock is stale by the work */
  check(uv_timer_start(&app.step, on_mode_end, SETTLE_MS, 0), "uv_timer_start");
}

/* Mode (b): test numbers until SLICE_NS has passed, then yield to the loop. */
static void on_slice(uv_idle_t *h) {
  uint64_t deadline = uv_hrtime() + SLICE_NS;
  while (app.cursor < app.n && uv_hrtime() < deadline) {
    uint32_t hi = app.n - app.cursor > STEP ? app.cursor + STEP : app.n;
    app.found += count_primes(app.cursor, hi);
    app.cursor = hi;
  }
  if (app.cursor == app.n) {
    uv_idle_stop(h);
    work_done();
  }
}

static void on_offload_answer(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_get_u64(msg, "primes", &app.found);
  weft_msg_free(msg);
  work_done();
}

/* SETTLE_MS into the mode: start the work. */
static void on_work_start(uv_timer_t *t) {
  (void)t;
  app.found = 0;
  app.work_start_ns = uv_hrtime();
  switch (app.mode) {
  case MODE_BLOCK:
    app.found = count_primes(0, app.n); /* the loop is stuck here meanwhile */
    work_done();
    break;
  case MODE_CHUNK:
    app.cursor = 0;
    check(uv_idle_start(&app.slicer, on_slice), "uv_idle_start");
    break;
  case MODE_OFFLOAD: {
    weft_msg_t *job;
    check(weft_msg_new(&job), "weft_msg_new");
    weft_msg_put_map(job, 1);
    weft_msg_put_u64(job, "n", app.n);
    check(weft_port_post(weft_worker_port(app.worker), job), "weft_port_post");
    break;
  }
  }
}

static void begin_mode(void) {
  printf("%s: counting primes below %u ...\n", mode_names[app.mode], app.n);
  app.nlags = 0;
  app.last_tick_ns = uv_hrtime();
  check(uv_timer_start(&app.probe, on_probe, TICK_MS, TICK_MS), "uv_timer_start");
  check(uv_timer_start(&app.step, on_work_start, SETTLE_MS, 0), "uv_timer_start");
}

int main(int argc, char **argv) {
  bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  app.n = demo ? 3000000 : 10000000;

  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  weft_worker_options_t opts = {.entry = worker_entry, .on_message = on_offload_answer};
  check(weft_worker_spawn(weft_runtime_main(rt), &opts, &app.worker), "weft_worker_spawn");
  uv_timer_init(loop, &app.probe);
  uv_timer_init(loop, &app.step);
  uv_idle_init(loop, &app.slicer);

  begin_mode();
  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  free(app.lags);

  for (int m = 1; m < MODES; m++)
    if (app.results[m].primes != app.results[0].primes) {
      fprintf(stderr, "modes disagree on the count\n");
      return 1;
    }
  return 0;
}
