/* pool.c: the `pool` shape: the CPU-offload pool (include/weft/pool.h), in
 * three cases, each with its own runtime and pool. Node.js peer:
 * node/pool_piscina.js (piscina), same cases, same sizes.
 *
 *   tiny     N tasks {a, b} -> a + b (msgpack in, msgpack out) through a pool
 *            of weft_available_parallelism() threads, max_queue 4096: submit
 *            until WEFT_EAGAIN, resume from on_drain. tasks/s, and the pool's
 *            own wait/run p50/p99 from weft_pool_stats.
 *   scaling  SCALING_TASKS CPU-bound tasks (count the primes below
 *            PRIMES_BELOW) on a pool of 1 thread, then of 2, three rounds
 *            interleaved; the best tasks/s of each and their ratio (the goal
 *            is >= 1.8 on 2 cores).
 *   latency  one task at a time; the task reads uv_hrtime at its start;
 *            submit-to-start p50/p99 back to back (gap_us 0: the next task is
 *            submitted from the previous one's callback) and with a 1 ms timer
 *            before each submission (gap_us 1000: the thread went to sleep).
 *
 * Threads: the task functions run on pool threads; everything else on the
 * main context. */
#include <stdlib.h>

#include "bench.h"
#include "weft/pool.h"

#define SHAPE "pool"
#define TINY_DEFAULT_N 2000000u
#define TINY_MAX_QUEUE 4096u
#define PRIMES_BELOW 150000u
#define SCALING_TASKS 200u
#define SCALING_ROUNDS 3u
#define LAT_N_HOT 20000u
#define LAT_N_GAP 1000u


/* ---- task functions (pool threads) ------------------------------------------ */

static int add_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  int64_t a = 0, b = 0;
  int err = weft_msg_get_i64(args, "a", &a);
  if (err == 0)
    err = weft_msg_get_i64(args, "b", &b);
  if (err == 0)
    err = weft_msg_new(result);
  if (err == 0)
    err = weft_msg_put_i64(*result, NULL, a + b);
  return err;
}

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

static int primes_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  uint64_t k = 0;
  for (uint32_t i = 0; i < PRIMES_BELOW; i++)
    k += is_prime(i);
  int err = weft_msg_new(result);
  return err ? err : weft_msg_put_u64(*result, NULL, k);
}

static int start_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  uint64_t now = uv_hrtime();
  int err = weft_msg_new(result);
  return err ? err : weft_msg_put_u64(*result, NULL, now);
}

/* ---- shared driver: a runtime, a pool, a closed loop of submissions ---------- */

typedef struct run_s run_t;
typedef int (*fill_fn)(run_t *r);

struct run_s {
  weft_pool_t *pool;
  uint64_t n, submitted, done, bad, eagain;
  int err;
  fill_fn fill;
  weft_pool_fn fn;
  uint64_t want;          /* expected value of each result (scaling) */
  /* latency */
  uv_timer_t gap_timer;
  uint64_t gap_ms, t_submit;
  double *lat_us;
  weft_pool_stats_t st;   /* read just before the pool closes */
};

static void run_fail(run_t *r, int err) {
  if (r->err == 0)
    r->err = err;
  weft_pool_close(r->pool, NULL);
}

static void on_drain(weft_pool_t *pool) {
  run_t *r = weft_pool_data(pool);
  if (r->err == 0)
    r->err = r->fill(r);
}

static int with_pool(uint32_t size, run_t *r) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail(SHAPE, "weft_runtime_new", err);
  weft_pool_options_t po = {.size = size, .max_queue = TINY_MAX_QUEUE, .on_drain = on_drain,
                            .data = r};
  err = weft_pool_new(weft_runtime_main(rt), &po, &r->pool);
  if (err)
    bench_fail(SHAPE, "weft_pool_new", err);
  if (!err)
    err = r->fill(r);
  if (!err)
    err = weft_runtime_run(rt);
  if (!err)
    err = r->err;
  if (!err && (r->done != r->n || r->bad))
    err = bench_fail(SHAPE, "checking the results", WEFT_EPROTO);
  int ferr = weft_runtime_free(rt);
  return err ? err : ferr;
}

/* ---- tiny and scaling ------------------------------------------------------- */

static void on_result(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  run_t *r = data;
  uint64_t v = 0;
  if (err == 0)
    err = weft_msg_get_u64(result, NULL, &v);
  weft_msg_free(result);
  if (err) {
    run_fail(r, err);
    return;
  }
  r->bad += v != r->want;
  if (++r->done == r->n)
    weft_pool_close(pool, NULL);
}

static void on_sum(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  run_t *r = data;
  int64_t v = 0;
  if (err == 0)
    err = weft_msg_get_i64(result, NULL, &v);
  weft_msg_free(result);
  if (err) {
    run_fail(r, err);
    return;
  }
  r->bad += v != 3;
  if (++r->done == r->n) {
    weft_pool_stats(pool, &r->st);
    weft_pool_close(pool, NULL);
  }
}

/* Submits until the queue is full (on_drain resumes) or all n are in. */
static int fill_closed_loop(run_t *r) {
  bool tiny = r->fn == add_fn;
  while (r->submitted < r->n) {
    weft_msg_t *m = NULL;
    if (tiny) {
      int err = weft_msg_new(&m);
      if (err)
        return err;
      weft_msg_put_map(m, 2);
      weft_msg_put_i64(m, "a", 1);
      weft_msg_put_i64(m, "b", 2);
    }
    weft_pool_task_options_t o = {.fn = r->fn, .args = m};
    int err = weft_pool_submit(r->pool, &o, tiny ? on_sum : on_result, r, NULL);
    if (err) {
      weft_msg_free(m);
      if (err != WEFT_EAGAIN)
        return err;
      r->eagain++;
      return 0;
    }
    r->submitted++;
  }
  return 0;
}

static int case_tiny(const bench_args_t *args) {
  run_t r = {.n = args->n ? args->n : TINY_DEFAULT_N, .fill = fill_closed_loop, .fn = add_fn};
  uint32_t threads = weft_available_parallelism();
  uint64_t t0 = bench_now_ns();
  int err = with_pool(threads, &r);
  double secs = (double)(bench_now_ns() - t0) / 1e9;
  if (err)
    return err;
  bench_emit(SHAPE, args->rep,
             "\"case\":\"tiny\",\"threads\":%u,\"tasks_per_s\":%.0f,\"n\":%llu,\"eagain\":%llu,"
             "\"wait_p50_us\":%.2f,\"wait_p99_us\":%.2f,\"run_p50_us\":%.3f,"
             "\"utilization\":%.2f",
             threads, (double)r.n / secs, (unsigned long long)r.n,
             (unsigned long long)r.eagain, (double)r.st.wait.p50_ns / 1e3,
             (double)r.st.wait.p99_ns / 1e3, (double)r.st.run.p50_ns / 1e3,
             r.st.utilization);
  return 0;
}

static int scaling_once(uint32_t threads, double *per_s) {
  uint64_t want = 0;
  for (uint32_t i = 0; i < PRIMES_BELOW; i++)
    want += is_prime(i);
  run_t r = {.n = SCALING_TASKS, .fill = fill_closed_loop, .fn = primes_fn, .want = want};
  uint64_t t0 = bench_now_ns();
  int err = with_pool(threads, &r);
  *per_s = (double)SCALING_TASKS / ((double)(bench_now_ns() - t0) / 1e9);
  return err;
}

/* 1 thread, 2 threads, SCALING_ROUNDS times interleaved; the best round of
 * each counts (other processes only ever slow a round down). */
static int case_scaling(const bench_args_t *args) {
  double one = 0, two = 0;
  for (unsigned round = 0; round < SCALING_ROUNDS; round++) {
    double a = 0, b = 0;
    int err = scaling_once(1, &a);
    if (!err)
      err = scaling_once(2, &b);
    if (err)
      return err;
    one = a > one ? a : one;
    two = b > two ? b : two;
  }
  bench_emit(SHAPE, args->rep,
             "\"case\":\"scaling\",\"primes_below\":%u,\"tasks\":%u,\"rounds\":%u,"
             "\"tasks_per_s_1\":%.1f,\"tasks_per_s_2\":%.1f,\"ratio\":%.3f",
             PRIMES_BELOW, SCALING_TASKS, SCALING_ROUNDS, one, two, two / one);
  return 0;
}

/* ---- latency ---------------------------------------------------------------- */

static int submit_one(run_t *r);

static void on_gap(uv_timer_t *timer) {
  run_t *r = timer->data;
  int err = submit_one(r);
  if (err)
    run_fail(r, err);
}

static void on_start(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  run_t *r = data;
  uint64_t start = 0;
  if (err == 0)
    err = weft_msg_get_u64(result, NULL, &start);
  weft_msg_free(result);
  if (err) {
    run_fail(r, err);
    return;
  }
  r->lat_us[r->done] = start > r->t_submit ? (double)(start - r->t_submit) / 1e3 : 0;
  if (++r->done == r->n) {
    uv_close((uv_handle_t *)&r->gap_timer, NULL);
    weft_pool_close(pool, NULL);
  } else if (r->gap_ms) {
    uv_timer_start(&r->gap_timer, on_gap, r->gap_ms, 0);
  } else if ((err = submit_one(r)) != 0) {
    run_fail(r, err);
  }
}

static int submit_one(run_t *r) {
  weft_pool_task_options_t o = {.fn = start_fn};
  r->t_submit = uv_hrtime();
  return weft_pool_submit(r->pool, &o, on_start, r, NULL);
}

static int fill_latency(run_t *r) {
  int err = uv_timer_init(weft_ctx_loop(weft_pool_ctx(r->pool)), &r->gap_timer);
  r->gap_timer.data = r;
  if (!err)
    err = submit_one(r);
  return err;
}

static int latency_once(const bench_args_t *args, uint64_t n, uint64_t gap_ms) {
  run_t r = {.n = n, .fill = fill_latency, .gap_ms = gap_ms};
  r.lat_us = calloc(n, sizeof(double));
  if (r.lat_us == NULL)
    return bench_fail(SHAPE, "allocating latencies", WEFT_ENOMEM);
  int err = with_pool(weft_available_parallelism(), &r);
  if (!err)
    bench_emit(SHAPE, args->rep,
               "\"case\":\"latency\",\"gap_us\":%llu,\"p50_us\":%.2f,\"p99_us\":%.2f,\"n\":%llu",
               (unsigned long long)gap_ms * 1000u, bench_percentile(r.lat_us, n, 50),
               bench_percentile(r.lat_us, n, 99), (unsigned long long)n);
  free(r.lat_us);
  return err;
}

int bench_pool(const bench_args_t *args) {
  int err = case_tiny(args);
  if (!err)
    err = case_scaling(args);
  if (!err)
    err = latency_once(args, LAT_N_HOT, 0);
  if (!err)
    err = latency_once(args, LAT_N_GAP, 1);
  return err;
}
