/* test_pool.c: the CPU-offload pool (include/weft/pool.h) with real threads:
 * results and errors come back on the submitting context; callback order
 * (FIFO with one thread, per-thread finish order with two); the bounded queue
 * (WEFT_EAGAIN, then on_drain); cancelling queued and running tasks;
 * timeouts (queued and running, late results dropped); resizing under load
 * with no task lost or run twice; closing with pending tasks (all
 * WEFT_ECANCELED); task errors; asynchronous tasks; buffers moved both ways
 * without copying; idle threads retiring so the loop can end; a thread lost
 * inside a task; histograms and per-thread figures; a million tiny tasks.
 *
 * Synchronisation between the test and the pool threads uses semaphores
 * (a "gate" task blocks its thread until the test opens it), never sleeps.
 * Callbacks and task functions record failures with CHECK; each test ends
 * with weft_runtime_free() == 0, no CHECK failed, and no weft allocation
 * outstanding (the pool allocates through weft_malloc, so its own memory is
 * counted too). A watchdog aborts a hung test. CHECK, the watchdog and the
 * leak check are tests/support/ktest.h's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"
#include "weft/pool.h"

/* ---- shared by the tests ------------------------------------------------------ */

static uv_thread_t main_thread;
static weft_ctx_t *main_ctx;

static bool on_main(void) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &main_thread) && weft_ctx_current() == main_ctx;
}

static bool on_pool_thread(void) {
  uv_thread_t self = uv_thread_self();
  return !uv_thread_equal(&self, &main_thread) && weft_ctx_current() != NULL &&
         weft_ctx_current() != main_ctx;
}

static weft_runtime_t *start(void) {
  weft_runtime_t *rt = ktest_new_runtime();
  main_thread = uv_thread_self();
  main_ctx = weft_runtime_main(rt);
  return rt;
}

static weft_pool_t *new_pool(uint32_t size, uint32_t max_queue) {
  weft_pool_options_t o = {.size = size, .max_queue = max_queue};
  weft_pool_t *pool = NULL;
  assert_int_equal(weft_pool_new(main_ctx, &o, &pool), 0);
  assert_non_null(pool);
  return pool;
}

static weft_msg_t *args_ab(int64_t a, int64_t b) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 2);
  weft_msg_put_i64(m, "a", a);
  if (weft_msg_put_i64(m, "b", b) != 0)
    abort();
  return m;
}

static uint64_t msg_value(const weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  CHECK(m != NULL);
  if (m != NULL)
    CHECK_RC(weft_msg_get_u64(m, NULL, &v), 0);
  return v;
}

/* {a, b} -> a + b, checked to run on a pool thread. */
static int add_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  CHECK(on_pool_thread());
  int64_t a = 0, b = 0;
  int err = weft_msg_get_i64(args, "a", &a);
  if (err == 0)
    err = weft_msg_get_i64(args, "b", &b);
  if (err == 0)
    err = weft_msg_new(result); /* may fail in allocation_failure_sweep */
  if (err == 0)
    err = weft_msg_put_u64(*result, NULL, (uint64_t)(a + b));
  return err;
}

static void close_cb_count(weft_pool_t *pool) {
  int *closed = weft_pool_data(pool);
  CHECK(on_main());
  if (closed)
    (*closed)++;
}

static void submit_ok(weft_pool_t *pool, weft_pool_task_options_t o, weft_pool_done_cb cb,
                      void *data, uint64_t *id) {
  int rc = weft_pool_submit(pool, &o, cb, data, id);
  if (rc != 0) {
    fprintf(stderr, "submit: %s\n", weft_err_name(rc));
    weft_msg_free(o.args);
  }
  assert_int_equal(rc, 0);
}

/* A gate: a task that blocks its thread until the test opens the gate. */
typedef struct {
  uv_sem_t started, open;
} gate_t;

static int gate_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)args;
  (void)result;
  gate_t *g = weft_pool_task_arg(task);
  uv_sem_post(&g->started);
  uv_sem_wait(&g->open);
  return 0;
}

static void gate_init(gate_t *g) {
  assert_int_equal(uv_sem_init(&g->started, 0), 0);
  assert_int_equal(uv_sem_init(&g->open, 0), 0);
}

static void gate_fini(gate_t *g) {
  uv_sem_destroy(&g->started);
  uv_sem_destroy(&g->open);
}

/* ---- results and errors come back on the submitting context -------------------- */

typedef struct {
  weft_pool_t *pool;
  uint64_t want, done, bad, errors;
  int last_err;
} tally_t;

static void tally_close_if_done(tally_t *t) {
  if (t->done == t->want)
    CHECK_RC(weft_pool_close(t->pool, NULL), 0);
}

static void on_sum(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  tally_t *t = data;
  CHECK(on_main());
  CHECK(pool == t->pool);
  if (err == 0) {
    CHECK(result != NULL);
    t->bad += msg_value(result) != 3 * 7;
  } else {
    CHECK(result == NULL);
    t->errors++;
    t->last_err = err;
  }
  weft_msg_free(result);
  t->done++;
  tally_close_if_done(t);
}

static int fail_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  *result = ktest_msg_u64(1); /* dropped: the task failed */
  return UV_EIO;
}

static void results_on_submitting_context(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  weft_pool_t *pool = new_pool(2, 0);
  assert_int_equal(weft_pool_register(pool, "add", add_fn), 0);
  assert_int_equal(weft_pool_register(pool, "add", add_fn), WEFT_EBUSY);
  tally_t t = {.pool = pool, .want = 202};
  for (int i = 0; i < 100; i++) {
    submit_ok(pool, (weft_pool_task_options_t){.fn = add_fn, .args = args_ab(3, 18)}, on_sum,
              &t, NULL);
    submit_ok(pool, (weft_pool_task_options_t){.name = "add", .args = args_ab(20, 1)}, on_sum,
              &t, NULL);
  }
  submit_ok(pool, (weft_pool_task_options_t){.fn = fail_fn}, on_sum, &t, NULL);
  /* A task with no arguments: add_fn reports the missing key. */
  submit_ok(pool, (weft_pool_task_options_t){.fn = add_fn}, on_sum, &t, NULL);
  assert_int_equal(t.done, 0); /* never from inside submit */
  weft_pool_stats_t st;
  assert_int_equal(weft_pool_stats(pool, &st), 0);
  assert_int_equal(st.submitted, 202);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(t.done, 202);
  assert_int_equal(t.bad, 0);
  assert_int_equal(t.errors, 2);
  ktest_finish_runtime(rt);
}

/* ---- callback order -------------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  uint64_t n, next;
  uint64_t last_seq[64]; /* per thread: the last finish number seen, + 1 */
} order_t;

static _Thread_local uint64_t thread_seq;
static atomic_uint thread_ids;
static _Thread_local unsigned thread_id; /* 1, 2, ... per pool thread, 0: unset */

/* Answers {seq: submission number, thread, tseq: this thread's finish number}. */
static int seq_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  if (thread_id == 0)
    thread_id = atomic_fetch_add(&thread_ids, 1) + 1;
  uint64_t seq = 0;
  CHECK_RC(weft_msg_get_u64(args, NULL, &seq), 0);
  volatile uint64_t spin = 0;
  for (uint64_t i = 0; i < (seq % 7) * 200; i++) /* uneven run times */
    spin += i;
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 3);
  weft_msg_put_u64(m, "seq", seq);
  weft_msg_put_u64(m, "thread", thread_id);
  weft_msg_put_u64(m, "tseq", thread_seq++);
  *result = m;
  return 0;
}

static void on_fifo(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  order_t *o = data;
  CHECK_RC(err, 0);
  uint64_t seq = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(result, "seq", &seq), 0);
  CHECK(seq == o->next);
  weft_msg_free(result);
  if (++o->next == o->n)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void fifo_with_one_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  weft_pool_t *pool = new_pool(1, 0);
  order_t o = {.pool = pool, .n = 2000};
  for (uint64_t i = 0; i < o.n; i++)
    submit_ok(pool, (weft_pool_task_options_t){.fn = seq_fn, .args = ktest_msg_u64(i)}, on_fifo, &o,
              NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(o.next, o.n);
  ktest_finish_runtime(rt);
}

static void on_per_thread(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  order_t *o = data;
  CHECK_RC(err, 0);
  uint64_t th = 0, tseq = 0;
  CHECK_RC(weft_msg_get_u64(result, "thread", &th), 0);
  CHECK_RC(weft_msg_get_u64(result, "tseq", &tseq), 0);
  CHECK(th > 0 && th < 64);
  if (th > 0 && th < 64) {
    CHECK(tseq + 1 > o->last_seq[th]); /* each thread's finish order is kept */
    o->last_seq[th] = tseq + 1;
  }
  weft_msg_free(result);
  if (++o->next == o->n)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void finish_order_per_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  atomic_store(&thread_ids, 0);
  weft_pool_t *pool = new_pool(2, 0);
  order_t o = {.pool = pool, .n = 5000};
  for (uint64_t i = 0; i < o.n; i++)
    submit_ok(pool, (weft_pool_task_options_t){.fn = seq_fn, .args = ktest_msg_u64(i)},
              on_per_thread, &o, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(o.next, o.n);
  ktest_finish_runtime(rt);
}

/* ---- the bounded queue ----------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  gate_t gate;
  uint64_t accepted, done, drains, extra;
} full_t;

static void on_full_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  full_t *f = data;
  CHECK(on_main());
  CHECK_RC(err, 0);
  weft_msg_free(result);
  if (++f->done == f->accepted)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void on_full_drain(weft_pool_t *pool) {
  full_t *f = weft_pool_data(pool);
  CHECK(on_main());
  f->drains++;
  weft_pool_stats_t st;
  CHECK_RC(weft_pool_stats(pool, &st), 0);
  CHECK(st.queued <= 4); /* half of max_queue */
  /* Room again: these are accepted. */
  for (int i = 0; i < 3; i++) {
    weft_pool_task_options_t o = {.fn = add_fn, .args = args_ab(1, 2)};
    int rc = weft_pool_submit(pool, &o, on_full_done, f, NULL);
    CHECK_RC(rc, 0);
    if (rc == 0)
      f->accepted++, f->extra++;
    else
      weft_msg_free(o.args);
  }
}

static void queue_full_then_drain(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  full_t f = {0};
  gate_init(&f.gate);
  weft_pool_options_t po = {.size = 1, .max_queue = 8, .on_drain = on_full_drain, .data = &f};
  assert_int_equal(weft_pool_new(main_ctx, &po, &f.pool), 0);
  submit_ok(f.pool, (weft_pool_task_options_t){.fn = gate_fn, .arg = &f.gate}, on_full_done,
            &f, NULL);
  f.accepted = 1;
  uv_sem_wait(&f.gate.started); /* the only thread is busy */
  int rc = 0;
  while (rc == 0) {
    weft_pool_task_options_t o = {.fn = add_fn, .args = args_ab(1, 2)};
    rc = weft_pool_submit(f.pool, &o, on_full_done, &f, NULL);
    if (rc == 0)
      f.accepted++;
    else
      weft_msg_free(o.args); /* still ours after a failed submit */
    assert_true(f.accepted < 100);
  }
  assert_int_equal(rc, WEFT_EAGAIN);
  weft_pool_stats_t st;
  assert_int_equal(weft_pool_stats(f.pool, &st), 0);
  assert_int_equal(st.queued, 8);
  assert_int_equal(st.rejected, 1);
  assert_int_equal(f.drains, 0);
  uv_sem_post(&f.gate.open);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(f.drains, 1);
  assert_int_equal(f.extra, 3);
  assert_int_equal(f.done, f.accepted);
  gate_fini(&f.gate);
  ktest_finish_runtime(rt);
}

/* ---- cancellation --------------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  gate_t gate;
  atomic_int ran, saw_flag;
  int cancelled, ok, done, want;
  uint64_t cancel_id;
} cx_t;

static int count_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)args;
  cx_t *c = weft_pool_task_arg(task);
  atomic_fetch_add(&c->ran, 1);
  *result = ktest_msg_u64(5);
  return 0;
}

static void on_cx(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  cx_t *c = data;
  CHECK(on_main());
  if (err == WEFT_ECANCELED) {
    CHECK(result == NULL);
    c->cancelled++;
    uv_sem_post(&c->gate.open); /* let the gate task finish now */
  } else {
    CHECK_RC(err, 0);
    c->ok++;
  }
  weft_msg_free(result);
  if (++c->done == c->want)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void cancel_queued(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  cx_t c = {.want = 6};
  gate_init(&c.gate);
  c.pool = new_pool(1, 0);
  submit_ok(c.pool, (weft_pool_task_options_t){.fn = gate_fn, .arg = &c.gate}, on_cx, &c, NULL);
  uv_sem_wait(&c.gate.started);
  uint64_t ids[5];
  for (int i = 0; i < 5; i++)
    submit_ok(c.pool, (weft_pool_task_options_t){.fn = count_fn, .arg = &c}, on_cx, &c, &ids[i]);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < i; j++)
      assert_true(ids[i] != ids[j] && ids[i] != 0);
  /* ids[0] may already be in the thread's hands (not started); ids[3] is
   * still in the pool's queue. Both never run. */
  assert_int_equal(weft_pool_cancel(c.pool, ids[0]), 0);
  assert_int_equal(weft_pool_cancel(c.pool, ids[3]), 0);
  assert_int_equal(weft_pool_cancel(c.pool, ids[3]), WEFT_ENOENT);
  assert_int_equal(weft_pool_cancel(c.pool, ids[0]), WEFT_ENOENT);
  assert_int_equal(weft_pool_cancel(c.pool, ids[4] + (1ull << 32)), WEFT_ENOENT);
  assert_int_equal(weft_pool_cancel(c.pool, 12345), WEFT_ENOENT);
  assert_int_equal(c.done, 0); /* callbacks come from the loop */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(c.cancelled, 2);
  assert_int_equal(c.ok, 4);
  assert_int_equal(atomic_load(&c.ran), 3);
  gate_fini(&c.gate);
  ktest_finish_runtime(rt);
}

/* Spins until its cancellation flag is up, then answers anyway. */
static int spin_until_cancelled(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)args;
  cx_t *c = weft_pool_task_arg(task);
  uv_sem_post(&c->gate.started);
  while (!weft_pool_task_cancelled(task))
    sched_yield();
  atomic_fetch_add(&c->saw_flag, 1);
  *result = ktest_msg_u64(9); /* dropped: the task was cancelled */
  return 0;
}

static void cancel_running(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  cx_t c = {.want = 2};
  gate_init(&c.gate);
  c.pool = new_pool(2, 0);
  uint64_t id = 0;
  submit_ok(c.pool, (weft_pool_task_options_t){.fn = spin_until_cancelled, .arg = &c}, on_cx,
            &c, &id);
  submit_ok(c.pool, (weft_pool_task_options_t){.fn = count_fn, .arg = &c}, on_cx, &c, NULL);
  uv_sem_wait(&c.gate.started); /* it is running */
  assert_int_equal(weft_pool_cancel(c.pool, id), 0);
  assert_int_equal(weft_pool_cancel(c.pool, id), WEFT_ENOENT); /* decided already */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(atomic_load(&c.saw_flag), 1);
  assert_int_equal(c.cancelled, 1);
  assert_int_equal(c.ok, 1);
  weft_pool_stats_t st;
  gate_fini(&c.gate);
  (void)st;
  ktest_finish_runtime(rt);
}

/* ---- timeouts ----------------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool, *pool2;
  gate_t gate;
  atomic_int saw_flag, queued_ran, spin_ran;
  uint64_t t_submit;
  int timed_out, ok, done;
} to_t;

static int never_runs(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)args;
  (void)result;
  to_t *t = weft_pool_task_arg(task);
  atomic_fetch_add(&t->queued_ran, 1);
  return 0;
}

static int spin_until_timeout(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)args;
  to_t *t = weft_pool_task_arg(task);
  atomic_fetch_add(&t->spin_ran, 1);
  while (!weft_pool_task_cancelled(task))
    sched_yield();
  atomic_fetch_add(&t->saw_flag, 1);
  *result = ktest_msg_u64(1); /* a late result: dropped */
  return 0;
}

static void to_count(to_t *t, int err, weft_msg_t *result) {
  CHECK(on_main());
  if (err == UV_ETIMEDOUT) {
    CHECK(result == NULL);
    CHECK(uv_hrtime() - t->t_submit >= 20 * 1000000ull);
    t->timed_out++;
  } else {
    CHECK_RC(err, 0);
    t->ok++;
  }
  weft_msg_free(result);
  if (++t->done == 3) {
    CHECK_RC(weft_pool_close(t->pool, NULL), 0);
    CHECK_RC(weft_pool_close(t->pool2, NULL), 0);
  }
}

static void on_to(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  to_count(data, err, result);
}

/* The queued task's timeout opens the gate it waited behind. */
static void on_to_queued(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  to_t *t = data;
  CHECK_RC(err, UV_ETIMEDOUT);
  uv_sem_post(&t->gate.open);
  to_count(t, err, result);
}

static void timeouts(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  to_t t = {0};
  gate_init(&t.gate);
  t.pool = new_pool(1, 0);
  t.pool2 = new_pool(1, 0);
  /* pool: the gate, and behind it a task that times out while it waits and
   * so never runs. pool2: a task spinning until its 20 ms run out. */
  t.t_submit = uv_hrtime();
  submit_ok(t.pool, (weft_pool_task_options_t){.fn = gate_fn, .arg = &t.gate}, on_to, &t, NULL);
  uv_sem_wait(&t.gate.started);
  submit_ok(t.pool, (weft_pool_task_options_t){.fn = never_runs, .arg = &t, .timeout_ms = 20},
            on_to_queued, &t, NULL);
  submit_ok(t.pool2,
            (weft_pool_task_options_t){.fn = spin_until_timeout, .arg = &t, .timeout_ms = 20},
            on_to, &t, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(t.timed_out, 2);
  assert_int_equal(t.ok, 1);
  /* The spinning task sees the flag if it ran; it may not have: on a loaded
   * machine (TSan, 2 shared vCPUs) pool2's new thread can take more than
   * its 20 ms to start, and a task cancelled before it starts never runs. */
  assert_int_equal(atomic_load(&t.saw_flag), atomic_load(&t.spin_ran));
  assert_int_equal(atomic_load(&t.queued_ran), 0);
  gate_fini(&t.gate);
  ktest_finish_runtime(rt);
}

/* ---- resize under load --------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  uint64_t n, submitted, done, dup;
  uint8_t *seen;
  uint32_t max_threads_seen, min_threads_seen;
} rz_t;

static int work_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t v = 0;
  CHECK_RC(weft_msg_get_u64(args, NULL, &v), 0);
  volatile uint64_t spin = 0;
  for (int i = 0; i < 2000; i++)
    spin += (uint64_t)i;
  *result = ktest_msg_u64(v);
  return 0;
}

static void rz_submit(rz_t *r, uint64_t k);

static void on_rz(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  rz_t *r = data;
  CHECK_RC(err, 0);
  uint64_t v = msg_value(result);
  weft_msg_free(result);
  if (v < r->n) {
    r->dup += r->seen[v];
    r->seen[v] = 1;
  }
  r->done++;
  static const uint32_t sizes[] = {4, 1, 3, 1, 2};
  uint64_t step = r->n / 6;
  if (r->done % step == 0 && r->done / step <= 5)
    CHECK_RC(weft_pool_resize(pool, sizes[r->done / step - 1]), 0);
  weft_pool_stats_t st;
  CHECK_RC(weft_pool_stats(pool, &st), 0);
  if (st.threads > r->max_threads_seen)
    r->max_threads_seen = st.threads;
  if (st.threads < r->min_threads_seen)
    r->min_threads_seen = st.threads;
  rz_submit(r, 1);
  if (r->done == r->n)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void rz_submit(rz_t *r, uint64_t k) {
  for (uint64_t i = 0; i < k && r->submitted < r->n; i++) {
    weft_pool_task_options_t o = {.fn = work_fn, .args = ktest_msg_u64(r->submitted)};
    int rc = weft_pool_submit(r->pool, &o, on_rz, r, NULL);
    CHECK_RC(rc, 0);
    if (rc != 0) {
      weft_msg_free(o.args);
      return;
    }
    r->submitted++;
  }
}

static void resize_under_load(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  rz_t r = {.n = ktest_scaled(60000, 3000), .min_threads_seen = 99};
  r.seen = calloc(r.n, 1);
  assert_non_null(r.seen);
  r.pool = new_pool(2, 0);
  rz_submit(&r, 256); /* then one more per completion: always 256 pending */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(r.done, r.n);
  assert_int_equal(r.dup, 0);
  for (uint64_t i = 0; i < r.n; i++)
    assert_int_equal(r.seen[i], 1);
  assert_int_equal(r.max_threads_seen, 4);
  assert_int_equal(r.min_threads_seen, 1);
  free(r.seen);
  ktest_finish_runtime(rt);
}

/* ---- close with pending tasks --------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  gate_t gate;
  int cancelled, other, done, closed, done_at_close;
} cl_t;

static void on_cl(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  cl_t *c = data;
  (void)pool;
  CHECK(on_main());
  CHECK(c->closed == 0);
  if (err == WEFT_ECANCELED)
    c->cancelled++;
  else
    c->other++;
  weft_msg_free(result);
  if (c->done++ == 0)
    uv_sem_post(&c->gate.open); /* the running gate task may return now */
}

static void on_cl_closed(weft_pool_t *pool) {
  cl_t *c = weft_pool_data(pool);
  CHECK(on_main());
  c->closed++;
  c->done_at_close = c->done;
}

static void close_with_pending(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  cl_t c = {0};
  gate_init(&c.gate);
  weft_pool_options_t po = {.size = 1, .data = &c};
  assert_int_equal(weft_pool_new(main_ctx, &po, &c.pool), 0);
  submit_ok(c.pool, (weft_pool_task_options_t){.fn = gate_fn, .arg = &c.gate}, on_cl, &c, NULL);
  uv_sem_wait(&c.gate.started);
  for (int i = 0; i < 100; i++)
    submit_ok(c.pool, (weft_pool_task_options_t){.fn = add_fn, .args = args_ab(1, 1)}, on_cl,
              &c, NULL);
  assert_int_equal(weft_pool_close(c.pool, on_cl_closed), 0);
  assert_int_equal(weft_pool_close(c.pool, on_cl_closed), WEFT_ECLOSED);
  weft_pool_task_options_t late = {.fn = add_fn};
  assert_int_equal(weft_pool_submit(c.pool, &late, on_cl, &c, NULL), WEFT_ECLOSED);
  assert_int_equal(c.done, 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(c.closed, 1);
  assert_int_equal(c.done_at_close, 101);
  assert_int_equal(c.cancelled, 101); /* the running gate task too */
  assert_int_equal(c.other, 0);
  gate_fini(&c.gate);
  ktest_finish_runtime(rt);
}

/* ---- asynchronous tasks ---------------------------------------------------------- */

typedef struct {
  uv_timer_t timer;
  weft_pool_task_t *task;
  uint64_t value;
} later_t;

static void later_closed(uv_handle_t *h) { free(h->data); }

static void later_fire(uv_timer_t *timer) {
  later_t *l = timer->data;
  CHECK(on_pool_thread());
  CHECK_RC(weft_pool_task_complete(l->task, 0, ktest_msg_u64(l->value)), 0);
  weft_msg_t *again = ktest_msg_u64(0);
  CHECK_RC(weft_pool_task_complete(l->task, 0, again), WEFT_EINVAL); /* once only */
  weft_msg_free(again);
  uv_close((uv_handle_t *)timer, later_closed);
}

/* {v} -> v * 2, answered from a timer on the thread's loop 2 ms later; odd
 * values are answered from inside the function itself. */
static int async_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)result;
  uint64_t v = 0;
  CHECK_RC(weft_msg_get_u64(args, NULL, &v), 0);
  if (v % 2 == 1) {
    CHECK_RC(weft_pool_task_complete(task, 0, ktest_msg_u64(v * 2)), 0);
    return WEFT_POOL_ASYNC;
  }
  later_t *l = calloc(1, sizeof(*l));
  CHECK(l != NULL);
  l->task = task;
  l->value = v * 2;
  CHECK_RC(uv_timer_init(weft_ctx_loop(weft_ctx_current()), &l->timer), 0);
  l->timer.data = l;
  CHECK_RC(uv_timer_start(&l->timer, later_fire, 2, 0), 0);
  return WEFT_POOL_ASYNC;
}

typedef struct {
  weft_pool_t *pool;
  int n, done;
  uint64_t sum;
} as_t;

static void on_async(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  as_t *a = data;
  CHECK(on_main());
  CHECK_RC(err, 0);
  a->sum += msg_value(result);
  weft_msg_free(result);
  if (++a->done == a->n)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void async_tasks(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  as_t a = {.n = 40};
  a.pool = new_pool(2, 0);
  uint64_t want = 0;
  for (int i = 0; i < a.n; i++) {
    submit_ok(a.pool, (weft_pool_task_options_t){.fn = async_fn, .args = ktest_msg_u64((uint64_t)i)},
              on_async, &a, NULL);
    want += 2u * (uint64_t)i;
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(a.done, a.n);
  assert_int_equal(a.sum, want);
  ktest_finish_runtime(rt);
}

/* ---- buffers move both ways without copying --------------------------------------- */

#define BUF_LEN (1u << 20)

/* Takes the buffer (checking it is the very memory the submitter filled),
 * increments every byte, and sends it back in the result. */
static int touch_buf(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t addr = 0;
  CHECK_RC(weft_msg_get_u64(args, "addr", &addr), 0);
  weft_buf_t *b = NULL;
  int err = weft_msg_take_buf(args, 0, &b);
  if (err != 0)
    return err;
  uint8_t *p = weft_buf_ptr(b);
  CHECK((uint64_t)(uintptr_t)p == addr); /* no copy on the way out */
  for (size_t i = 0; i < weft_buf_len(b); i++)
    p[i]++;
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "addr", addr);
  CHECK_RC(weft_msg_add_buf(m, b), 0);
  weft_buf_free(b);
  *result = m;
  return 0;
}

static void on_buf(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  int *ok = data;
  CHECK_RC(err, 0);
  uint64_t addr = 0;
  CHECK_RC(weft_msg_get_u64(result, "addr", &addr), 0);
  weft_buf_t *b = NULL;
  CHECK_RC(weft_msg_take_buf(result, 0, &b), 0);
  uint8_t *p = weft_buf_ptr(b);
  CHECK((uint64_t)(uintptr_t)p == addr); /* no copy on the way back */
  CHECK(weft_buf_len(b) == BUF_LEN);
  bool good = true;
  for (size_t i = 0; i < BUF_LEN && p; i++)
    good &= p[i] == (uint8_t)(i + 1);
  CHECK(good);
  *ok = good;
  weft_buf_free(b);
  weft_msg_free(result);
  CHECK_RC(weft_pool_close(pool, NULL), 0);
}

static void buffers_move_both_ways(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  weft_pool_t *pool = new_pool(1, 0);
  weft_buf_t *b = NULL;
  assert_int_equal(weft_buf_new(&b, BUF_LEN), 0);
  uint8_t *p = weft_buf_ptr(b);
  for (size_t i = 0; i < BUF_LEN; i++)
    p[i] = (uint8_t)i;
  weft_msg_t *args = NULL;
  assert_int_equal(weft_msg_new(&args), 0);
  weft_msg_put_map(args, 1);
  weft_msg_put_u64(args, "addr", (uint64_t)(uintptr_t)p);
  assert_int_equal(weft_msg_add_buf(args, b), 0);
  assert_true(weft_buf_is_detached(b));
  weft_buf_free(b);
  int ok = 0;
  submit_ok(pool, (weft_pool_task_options_t){.fn = touch_buf, .args = args}, on_buf, &ok, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(ok, 1);
  ktest_finish_runtime(rt);
}

/* ---- idle threads retire; the loop may end ------------------------------------------ */

static void on_idle_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  int *done = data;
  CHECK_RC(err, 0);
  weft_msg_free(result);
  (*done)++;
}

static void idle_threads_retire(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  int closed = 0, done = 0;
  weft_pool_options_t po = {.size = 2, .idle_timeout_ms = 20, .data = &closed};
  weft_pool_t *pool = NULL;
  assert_int_equal(weft_pool_new(main_ctx, &po, &pool), 0);
  weft_pool_stats_t st;
  assert_int_equal(weft_pool_stats(pool, &st), 0);
  assert_int_equal(st.threads, 0); /* min_threads 0: none until needed */
  for (int i = 0; i < 50; i++)
    submit_ok(pool, (weft_pool_task_options_t){.fn = work_fn, .args = ktest_msg_u64(1)}, on_idle_done,
              &done, NULL);
  assert_int_equal(weft_pool_stats(pool, &st), 0);
  assert_true(st.threads >= 1 && st.threads <= 2);
  /* The loop ends by itself once the idle threads have retired. */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(done, 50);
  assert_int_equal(weft_pool_stats(pool, &st), 0);
  assert_int_equal(st.threads, 0);
  assert_int_equal(st.completed, 50);
  /* Still usable: a thread comes back for new work. */
  submit_ok(pool, (weft_pool_task_options_t){.fn = work_fn, .args = ktest_msg_u64(1)}, on_idle_done,
            &done, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(done, 51);
  assert_int_equal(weft_pool_close(pool, close_cb_count), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(closed, 1);
  ktest_finish_runtime(rt);
}

/* ---- a thread lost inside a task ------------------------------------------------------ */

static int exit_thread_fn(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  (void)result;
  CHECK_RC(weft_worker_exit(weft_ctx_current(), 0), 0);
  return 0;
}

typedef struct {
  weft_pool_t *pool;
  int done, ok, terminated, phase;
} lost_t;

static void on_lost(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  lost_t *l = data;
  weft_msg_free(result);
  l->done++;
  if (err == 0)
    l->ok++;
  else if (err == WEFT_ETERMINATED)
    l->terminated++;
  else
    CHECK_RC(err, 0);
  if (l->done == 1 && l->phase == 0) {
    /* The pool replaces the lost thread for new work. */
    l->phase = 1;
    for (int i = 0; i < 10; i++) {
      weft_pool_task_options_t o = {.fn = add_fn, .args = args_ab(1, 2)};
      CHECK_RC(weft_pool_submit(pool, &o, on_lost, l, NULL), 0);
    }
  } else if (l->done == 11) {
    CHECK_RC(weft_pool_close(pool, NULL), 0);
  }
}

static void thread_lost_inside_task(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  lost_t l = {0};
  l.pool = new_pool(1, 0);
  /* The task itself finishes (its result goes back before the thread ends). */
  submit_ok(l.pool, (weft_pool_task_options_t){.fn = exit_thread_fn}, on_lost, &l, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(l.done, 11);
  assert_int_equal(l.ok + l.terminated, 11);
  assert_int_equal(l.ok, 11);
  ktest_finish_runtime(rt);
}

/* ---- figures ------------------------------------------------------------------------- */

static int busy_200us(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  (void)result;
  uint64_t end = uv_hrtime() + 200000;
  while (uv_hrtime() < end) {
  }
  return 0;
}

static void on_fig(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  int *done = data;
  CHECK_RC(err, 0);
  weft_msg_free(result);
  if (++*done == 40) {
    weft_pool_stats_t st;
    CHECK_RC(weft_pool_stats(pool, &st), 0);
    CHECK(st.completed == 40 && st.failed == 0 && st.submitted == 40);
    CHECK(st.run.count == 40 && st.wait.count == 40);
    CHECK(st.run.p50_ns >= 200000 && st.run.p50_ns < 100000000);
    CHECK(st.run.p50_ns <= st.run.p90_ns && st.run.p90_ns <= st.run.p99_ns &&
          st.run.p99_ns <= st.run.max_ns);
    CHECK(st.run.mean_ns >= 200000);
    CHECK(st.wait.p99_ns <= st.wait.max_ns);
    CHECK(st.utilization > 0.0 && st.utilization <= 1.0);
    weft_pool_thread_stats_t ts[4];
    uint32_t n = 0;
    CHECK_RC(weft_pool_thread_stats(pool, ts, 4, &n), 0);
    CHECK(n == 2);
    uint64_t tasks = 0;
    for (uint32_t i = 0; i < n && i < 4; i++) {
      CHECK(ts[i].id >= 1 && ts[i].id <= 2);
      CHECK(ts[i].utilization >= 0.0 && ts[i].utilization <= 1.0);
      CHECK(ts[i].busy_ns <= ts[i].age_ns);
      tasks += ts[i].tasks;
    }
    CHECK(tasks == 40);
    weft_pool_stats_reset(pool);
    CHECK_RC(weft_pool_stats(pool, &st), 0);
    CHECK(st.completed == 0 && st.run.count == 0);
    CHECK_RC(weft_pool_close(pool, NULL), 0);
  }
}

static void figures(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  weft_pool_t *pool = new_pool(2, 0);
  int done = 0;
  for (int i = 0; i < 40; i++)
    submit_ok(pool, (weft_pool_task_options_t){.fn = busy_200us}, on_fig, &done, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(done, 40);
  ktest_finish_runtime(rt);
}

/* ---- a million tiny tasks ------------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  uint64_t n, submitted, done, sum, want_sum, eagain;
} mt_t;

static void mt_fill(mt_t *m);

static void on_tiny(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  mt_t *m = data;
  (void)pool;
  CHECK_RC(err, 0);
  m->sum += msg_value(result);
  weft_msg_free(result);
  if (++m->done == m->n)
    CHECK_RC(weft_pool_close(m->pool, NULL), 0);
}

static void mt_fill(mt_t *m) {
  while (m->submitted < m->n) {
    weft_pool_task_options_t o = {.fn = add_fn,
                                  .args = args_ab((int64_t)m->submitted, 1)};
    int rc = weft_pool_submit(m->pool, &o, on_tiny, m, NULL);
    if (rc != 0) {
      weft_msg_free(o.args);
      CHECK_RC(rc, WEFT_EAGAIN);
      m->eagain++;
      return; /* on_drain resumes */
    }
    m->want_sum += m->submitted + 1;
    m->submitted++;
  }
}

static void on_mt_drain(weft_pool_t *pool) { mt_fill(weft_pool_data(pool)); }

static void million_tiny_tasks(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  mt_t m = {.n = ktest_scaled(1000000, 20000)};
  weft_pool_options_t po = {.max_queue = 4096, .on_drain = on_mt_drain, .data = &m};
  assert_int_equal(weft_pool_new(main_ctx, &po, &m.pool), 0);
  uint64_t t0 = uv_hrtime();
  mt_fill(&m);
  assert_int_equal(weft_runtime_run(rt), 0);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  fprintf(stderr, "  %llu tiny tasks in %.2f s (%.0f/s), %llu EAGAIN\n",
          (unsigned long long)m.n, secs, (double)m.n / secs, (unsigned long long)m.eagain);
  assert_int_equal(m.done, m.n);
  assert_int_equal(m.submitted, m.n);
  assert_true(m.sum == m.want_sum);
  assert_true(m.eagain > 0);
  ktest_finish_runtime(rt);
}

/* ---- allocation failures ----------------------------------------------------------- */

typedef struct {
  int calls, ok, failed;
  int want;
  weft_pool_t *pool;
} oom_t;

static void on_oom(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  oom_t *o = data;
  CHECK(on_main());
  o->calls++;
  if (err == 0)
    o->ok++;
  else
    o->failed++;
  weft_msg_free(result);
  if (o->calls == o->want)
    CHECK_RC(weft_pool_close(pool, NULL), 0);
}

/* The k-th weft allocation from weft_pool_new on fails (in the pool, in a
 * thread starting, in a task's result, in a message carrying tasks), for every
 * k until one run meets no failure: weft_pool_new is all or nothing (a pool
 * that failed frees itself once its threads are gone, without callbacks), and
 * every accepted task gets exactly one callback. */
static void allocation_failure_sweep(void **state) {
  (void)state;
  bool hit = true;
  int runs = 0;
  for (long k = 0; hit && k < 2000; k++, runs++) {
    weft_runtime_t *rt = start();
    oom_t o = {.want = 0};
    weft_pool_options_t po = {.size = 2};
    weft_msg_t *args[20];
    for (int i = 0; i < 20; i++)
      args[i] = args_ab(2, 2);
    testutil_alloc_fail_after(k);
    int rc = weft_pool_new(main_ctx, &po, &o.pool);
    if (rc == 0) {
      for (int i = 0; i < 20; i++) {
        weft_pool_task_options_t to = {.fn = add_fn, .args = args[i]};
        int src = weft_pool_submit(o.pool, &to, on_oom, &o, NULL);
        if (src == 0)
          o.want++;
        else
          weft_msg_free(args[i]);
      }
      if (o.want == 0)
        CHECK_RC(weft_pool_close(o.pool, NULL), 0);
    } else {
      CHECK(o.pool == NULL);
      for (int i = 0; i < 20; i++)
        weft_msg_free(args[i]);
    }
    assert_int_equal(weft_runtime_run(rt), 0); /* ends: nothing hangs */
    hit = testutil_alloc_fail_pending() == false;
    testutil_alloc_fail_after(-1);
    assert_int_equal(o.calls, o.want);
    assert_int_equal(o.ok + o.failed, o.want);
    ktest_finish_runtime(rt);
  }
  assert_false(hit); /* a run without any failure was reached */
  fprintf(stderr, "  %d runs\n", runs);
}

/* ---- argument errors ---------------------------------------------------------------- */

typedef struct {
  weft_pool_t *pool;
  int submit_rc, cancel_rc, resize_rc;
} wt_t;

static void wrong_thread_main(void *arg) {
  wt_t *w = arg;
  weft_pool_task_options_t o = {.fn = add_fn};
  w->submit_rc = weft_pool_submit(w->pool, &o, NULL, NULL, NULL);
  w->cancel_rc = weft_pool_cancel(w->pool, 1);
  w->resize_rc = weft_pool_resize(w->pool, 3);
}

static void argument_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = start();
  weft_pool_t *pool = NULL;
  weft_pool_options_t bad = {.size = 2, .min_threads = 3};
  assert_int_equal(weft_pool_new(main_ctx, &bad, &pool), WEFT_EINVAL);
  assert_null(pool);
  assert_int_equal(weft_pool_new(NULL, NULL, &pool), WEFT_EINVAL);
  pool = new_pool(1, 0);
  assert_true(weft_pool_ctx(pool) == main_ctx);
  weft_pool_task_options_t none = {0};
  assert_int_equal(weft_pool_submit(pool, &none, NULL, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_pool_submit(pool, NULL, NULL, NULL, NULL), WEFT_EINVAL);
  weft_pool_task_options_t unknown = {.name = "nope"};
  assert_int_equal(weft_pool_submit(pool, &unknown, NULL, NULL, NULL), WEFT_ENOENTRY);
  assert_int_equal(weft_pool_register(pool, NULL, add_fn), WEFT_EINVAL);
  assert_int_equal(weft_pool_resize(pool, 0), WEFT_EINVAL);
  wt_t w = {.pool = pool};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, wrong_thread_main, &w), 0);
  uv_thread_join(&tid);
  assert_int_equal(w.submit_rc, WEFT_EWRONGTHREAD);
  assert_int_equal(w.cancel_rc, WEFT_EWRONGTHREAD);
  assert_int_equal(w.resize_rc, WEFT_EWRONGTHREAD);
  /* Fire and forget: no callback, the result is dropped. */
  submit_ok(pool, (weft_pool_task_options_t){.fn = add_fn, .args = args_ab(1, 1)}, NULL, NULL,
            NULL);
  int closed = 0;
  weft_pool_set_data(pool, &closed);
  assert_int_equal(weft_pool_close(pool, close_cb_count), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(closed, 1);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(results_on_submitting_context),
      T(fifo_with_one_thread),
      T(finish_order_per_thread),
      T(queue_full_then_drain),
      T(cancel_queued),
      T(cancel_running),
      T(timeouts),
      T(resize_under_load),
      T(close_with_pending),
      T(async_tasks),
      T(buffers_move_both_ways),
      T(idle_threads_retire),
      T(thread_lost_inside_task),
      T(figures),
      T(million_tiny_tasks),
      T(allocation_failure_sweep),
      T(argument_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
