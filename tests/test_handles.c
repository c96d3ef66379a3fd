/* test_handles.c: handle lifetimes and thread rules.
 *
 * Lifetimes: a worker handle and its saved port stay valid, closed, after
 * on_exit until weft_worker_release or the end of the parent context; a pool
 * handle stays valid, closed, after its close callback until
 * weft_pool_release or the end of its context. A stale handle gives
 * WEFT_ECLOSED (never a read of freed memory: run under ASan), and a handle
 * never released is freed with the runtime (nothing leaks).
 *
 * Thread rules: owner-thread calls made from a second, real thread get
 * WEFT_EWRONGTHREAD and change nothing.
 *
 * Each test ends with weft_runtime_free() == 0, no CHECK failed, and no weft
 * allocation outstanding. A watchdog aborts a hung test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

/* ---- workers ------------------------------------------------------------------ */

static struct {
  int exits;
  int release_in_exit;
  weft_port_t *saved;
} hw;

static int quick_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  (void)data;
  return 0; /* nothing started: the worker exits */
}

static void hw_on_exit(weft_worker_t *w, int code) {
  CHECK(code == 0);
  hw.exits++;
  if (hw.release_in_exit) {
    CHECK_RC(weft_worker_release(w), 0);
    /* still valid until on_exit returns */
    CHECK(weft_worker_data(w) == (void *)&hw);
  }
}

static weft_worker_t *spawn_quick(weft_ctx_t *ctx) {
  weft_worker_options_t o = {.entry = quick_entry, .on_exit = hw_on_exit, .data = &hw};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  return w;
}

/* A port saved from weft_worker_port is posted on after on_exit: closed,
 * not freed. The handle answers until released. */
static void handles_worker_port_after_exit(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&hw, 0, sizeof(hw));
  weft_worker_t *w = spawn_quick(weft_runtime_main(rt));
  hw.saved = weft_worker_port(w);
  assert_non_null(hw.saved);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(hw.exits, 1);
  weft_msg_t *m = ktest_msg_u64(1);
  assert_int_equal(weft_port_post(hw.saved, m), WEFT_ECLOSED);
  assert_true(weft_port_is_closed(hw.saved));
  assert_null(weft_worker_port(w));
  assert_int_equal(weft_worker_terminate(w), WEFT_ECLOSED);
  assert_ptr_equal(weft_worker_data(w), &hw);
  assert_int_equal(weft_worker_release(w), 0);
  weft_msg_free(m);
  ktest_finish_runtime(rt);
}

/* Released inside on_exit: freed after it returns (ASan: no use after). */
static void handles_worker_release_in_on_exit(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&hw, 0, sizeof(hw));
  hw.release_in_exit = 1;
  for (int i = 0; i < 4; i++)
    spawn_quick(weft_runtime_main(rt));
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(hw.exits, 4);
  ktest_finish_runtime(rt);
}

/* Released before the worker exits: freed once on_exit has returned. */
static void handles_worker_release_early(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&hw, 0, sizeof(hw));
  weft_worker_t *w = spawn_quick(weft_runtime_main(rt));
  assert_int_equal(weft_worker_release(w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(hw.exits, 1);
  ktest_finish_runtime(rt);
}

/* Never released: weft_runtime_free frees the exited handles (the leak
 * check of ktest_finish_runtime). */
static void handles_worker_unreleased_freed_with_runtime(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&hw, 0, sizeof(hw));
  for (int i = 0; i < 3; i++)
    spawn_quick(weft_runtime_main(rt));
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(hw.exits, 3);
  ktest_finish_runtime(rt);
}

/* ---- pools -------------------------------------------------------------------- */

static int pool_closes;

static void on_pool_closed(weft_pool_t *pool) {
  (void)pool;
  pool_closes++;
}

static int noop_task(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  (void)result;
  return 0;
}

/* Submitting to a pool after its close callback: WEFT_ECLOSED, the
 * arguments still ours; every other call answers as closed. */
static void handles_pool_submit_after_close(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_pool_t *pool = NULL;
  pool_closes = 0;
  assert_int_equal(weft_pool_new(weft_runtime_main(rt), &(weft_pool_options_t){.size = 1}, &pool), 0);
  assert_int_equal(weft_pool_close(pool, on_pool_closed), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(pool_closes, 1);
  weft_msg_t *args = ktest_msg_u64(1);
  weft_pool_task_options_t to = {.fn = noop_task, .args = args};
  assert_int_equal(weft_pool_submit(pool, &to, NULL, NULL, NULL), WEFT_ECLOSED);
  assert_int_equal(weft_pool_register(pool, "noop", noop_task), WEFT_ECLOSED);
  assert_int_equal(weft_pool_resize(pool, 2), WEFT_ECLOSED);
  assert_int_equal(weft_pool_close(pool, on_pool_closed), WEFT_ECLOSED);
  assert_int_equal(weft_pool_cancel(pool, 1), WEFT_ENOENT);
  assert_int_equal(weft_pool_release(pool), 0);
  weft_msg_free(args);
  assert_int_equal(pool_closes, 1);
  ktest_finish_runtime(rt);
}

/* A closed pool never released is freed with the runtime. */
static void handles_pool_unreleased_freed_with_runtime(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_pool_t *pool = NULL;
  pool_closes = 0;
  assert_int_equal(weft_pool_new(weft_runtime_main(rt), &(weft_pool_options_t){.size = 2}, &pool), 0);
  assert_int_equal(weft_pool_close(pool, on_pool_closed), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(pool_closes, 1);
  ktest_finish_runtime(rt);
}

/* Releasing an open pool closes it and frees it once closed. */
static void handles_pool_release_open(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_pool_t *pool = NULL;
  assert_int_equal(weft_pool_new(weft_runtime_main(rt), &(weft_pool_options_t){.size = 2}, &pool), 0);
  assert_int_equal(weft_pool_release(pool), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  ktest_finish_runtime(rt);
}

/* ---- thread rules ------------------------------------------------------------- */

static struct {
  weft_runtime_t *rt;
  weft_port_t *port;
  weft_worker_t *w;
  weft_pool_t *pool;
  int hwm, on_close, on_drain, start, stop, close, run, rfree, stats, release, submit;
  int sup_close, sup_start;
  weft_sup_t *sup;
  void *data_seen;
} wt;

static void wt_cb(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void wt_close_cb(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  (void)info;
}

static void wt_drain_cb(weft_port_t *p) { (void)p; }

/* A second, real thread without a context makes owner-thread calls. */
static void wrong_thread(void *arg) {
  (void)arg;
  weft_ctx_stats_t st;
  wt.hwm = weft_port_set_hwm(wt.port, 1, 0);
  wt.on_close = weft_port_on_close(wt.port, wt_close_cb);
  wt.on_drain = weft_port_on_drain(wt.port, wt_drain_cb);
  wt.start = weft_port_start(wt.port, wt_cb);
  wt.stop = weft_port_stop(wt.port);
  wt.close = weft_port_close(wt.port);
  weft_port_set_data(wt.port, &wt); /* ignored */
  wt.run = weft_runtime_run(wt.rt);
  wt.rfree = weft_runtime_free(wt.rt);
  wt.stats = weft_ctx_stats(weft_runtime_main(wt.rt), &st);
  wt.release = weft_worker_release(wt.w);
  weft_pool_task_options_t to = {.fn = noop_task};
  wt.submit = weft_pool_submit(wt.pool, &to, NULL, NULL, NULL);
  wt.sup_close = weft_sup_close(wt.sup, NULL);
  weft_sup_child_spec_t spec = {.kind = WEFT_SUP_THREAD, .entry = quick_entry};
  wt.sup_start = weft_sup_start_child(wt.sup, &spec, NULL);
}

/* Each owner-thread call from another thread: WEFT_EWRONGTHREAD, and
 * nothing changed (the bound set there did not apply, the port is open,
 * the runtime still runs). */
static void handles_wrong_thread_calls_refused(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&wt, 0, sizeof(wt));
  memset(&hw, 0, sizeof(hw));
  wt.rt = rt;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  wt.port = p[1];
  wt.w = spawn_quick(ctx);
  assert_int_equal(weft_pool_new(ctx, &(weft_pool_options_t){.size = 1}, &wt.pool), 0);
  assert_int_equal(weft_sup_new(ctx, &(weft_sup_options_t){0}, &wt.sup), 0);
  uv_thread_t t;
  assert_int_equal(uv_thread_create(&t, wrong_thread, NULL), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(wt.hwm, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.on_close, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.on_drain, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.start, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.stop, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.close, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.run, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.rfree, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.stats, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.release, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.submit, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.sup_close, WEFT_EWRONGTHREAD);
  assert_int_equal(wt.sup_start, WEFT_EWRONGTHREAD);
  assert_int_equal(weft_sup_count(wt.sup), 0); /* nothing was started */
  assert_int_equal(weft_sup_close(wt.sup, NULL), 0);
  assert_null(weft_port_data(p[1]));
  /* the bound of 1 was not set: two posts pass */
  assert_int_equal(weft_port_post(p[0], ktest_msg_u64(1)), 0);
  assert_int_equal(weft_port_post(p[0], ktest_msg_u64(2)), 0);
  assert_false(weft_port_is_closed(p[1]));
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_pool_release(wt.pool), 0);
  assert_int_equal(weft_worker_release(wt.w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(hw.exits, 1);
  ktest_finish_runtime(rt);
}

/* ---- built-in actors release the workers they are done with ------------------ */

/* A supervised thread that exits at once and is restarted, 2 x RESTARTS
 * times: weft's own allocations after the first half and after the second
 * must be the same (each exited worker was released), not grow by a worker
 * per restart. */
#define RESTARTS 150

static struct {
  uint64_t exits;
  long blocks_half;
  long blocks_end;
  weft_sup_t *sup;
} rs;

static void rs_on_exit(weft_sup_t *sup, weft_sup_child_t *c, const weft_sup_exit_t *why,
                       bool final) {
  (void)c;
  (void)why;
  (void)final;
  rs.exits++;
  if (rs.exits == RESTARTS)
    rs.blocks_half = testutil_alloc_outstanding();
  if (rs.exits == 2 * RESTARTS) {
    rs.blocks_end = testutil_alloc_outstanding();
    CHECK_RC(weft_sup_close(sup, NULL), 0);
  }
}

static void handles_supervisor_restarts_do_not_pile_up(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&rs, 0, sizeof(rs));
  weft_sup_child_spec_t child = {.kind = WEFT_SUP_THREAD, .restart = WEFT_SUP_PERMANENT,
                                 .entry = quick_entry};
  weft_sup_options_t o = {.limits = {.max_restarts = 100000, .period_ms = 1000,
                                     .backoff_min_ms = 1, .backoff_max_ms = 1},
                          .children = &child, .nchildren = 1, .on_child_exit = rs_on_exit};
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &rs.sup), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  printf("  %d restarts: %ld weft blocks held after half, %ld at the end\n", 2 * RESTARTS,
         rs.blocks_half, rs.blocks_end);
  assert_true(rs.exits >= 2 * RESTARTS); /* and the one weft_sup_close stopped */
  assert_true(rs.blocks_end <= rs.blocks_half + 8);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(handles_supervisor_restarts_do_not_pile_up),
      T(handles_worker_port_after_exit),
      T(handles_worker_release_in_on_exit),
      T(handles_worker_release_early),
      T(handles_worker_unreleased_freed_with_runtime),
      T(handles_pool_submit_after_close),
      T(handles_pool_unreleased_freed_with_runtime),
      T(handles_pool_release_open),
      T(handles_wrong_thread_calls_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
