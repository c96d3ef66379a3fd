/* test_kernel_oom.c: allocation-failure sweeps over the kernel's
 * constructors (libuv's test-loop-oom.c): for n = 0, 1, 2, ... the n-th
 * allocation weft makes fails, during weft_runtime_new, weft_channel_new,
 * weft_actor_spawn, weft_msg_add_port and weft_worker_spawn (whose failure
 * may also land on the new worker's thread, while it builds its context).
 * Each failing step returns WEFT_ENOMEM (or libuv's UV_ENOMEM, the same
 * value), leaves what the caller passed in still the caller's, and after
 * cleanup nothing weft allocated is left. The sweep ends at the first n the
 * operation no longer reaches.
 *
 * Failures are injected through testutil's counting allocator
 * (weft_replace_allocator); libuv's own allocations are not swept. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

/* Arms the n-th allocation from now to fail. */
static void arm(long n) {
  testutil_alloc_fail_after(n);
}

/* Disarms; true if the armed failure happened. */
static bool disarm(void) {
  bool fired = !testutil_alloc_fail_pending();
  testutil_alloc_fail_after(-1);
  return fired;
}

static void assert_enomem(int rc) {
  if (rc != WEFT_ENOMEM && rc != UV_ENOMEM)
    fail_msg("want WEFT_ENOMEM, got %s (%d)", weft_err_name(rc), rc);
}

#define SWEEP_MAX 10000

/* ---- weft_runtime_new ---------------------------------------------------------- */

static void sweep_runtime_new_with(uv_loop_t *loop) {
  weft_runtime_options_t opts = {.loop = loop, .port_hwm_msgs = 7};
  long n;
  int failures_seen = 0, clobbered = 0;
  for (n = 0; n < SWEEP_MAX; n++) {
    weft_runtime_t *rt = NULL;
    arm(n);
    int rc = weft_runtime_new(&rt, &opts);
    bool fired = disarm();
    if (rc == 0) {
      assert_non_null(rt);
      assert_int_equal(weft_runtime_free(rt), 0);
      assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
      if (!fired)
        break;
      fail_msg("allocation %ld failed, yet weft_runtime_new returned 0", n);
    }
    assert_true(fired);
    assert_enomem(rc);
    failures_seen++;
    /* All or nothing: no context left on this thread, nothing allocated. */
    assert_null(weft_ctx_current());
    assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
    /* And the defaults are untouched by the failed call. */
    weft_runtime_t *probe = ktest_new_runtime();
    weft_port_t *p[2];
    assert_int_equal(weft_channel_new(weft_runtime_main(probe), p), 0);
    int posted = 0;
    while (posted < 8) {
      weft_msg_t *m = ktest_msg_u64(0);
      rc = weft_port_post(p[0], m);
      if (rc != 0) {
        weft_msg_free(m);
        break;
      }
      posted++;
    }
    if (posted != 8) /* the failed call's bound of 7 stuck */
      clobbered++;
    ktest_finish_runtime(probe);
  }
  if (clobbered)
    fprintf(stderr, "weft_runtime_new: %d failed calls left their port bound "
            "as the process default\n", clobbered);
  printf("  weft_runtime_new%s: %d failing allocations swept\n", loop ? " (attached)" : "",
         failures_seen);
  assert_int_equal(clobbered, 0);
  assert_true(failures_seen >= 1);
  assert_true(n < SWEEP_MAX);
}

static void oom_runtime_new(void **state) {
  (void)state;
  sweep_runtime_new_with(NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  sweep_runtime_new_with(&loop);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- weft_channel_new, port settings, weft_runtime_register --------------------- */

static void oom_channel_new(void **state) {
  (void)state;
  int failures_seen = 0;
  long n;
  for (n = 0; n < SWEEP_MAX; n++) {
    weft_runtime_t *rt = ktest_new_runtime();
    weft_ctx_t *ctx = weft_runtime_main(rt);
    weft_ctx_stats_t s0, s1;
    assert_int_equal(weft_ctx_stats(ctx, &s0), 0);
    weft_port_t *p[2] = {NULL, NULL};
    arm(n);
    int rc = weft_channel_new(ctx, p);
    bool fired = disarm();
    if (rc == 0) {
      assert_int_equal(weft_port_close(p[0]), 0);
      ktest_finish_runtime(rt);
      if (!fired)
        break;
      fail_msg("allocation %ld failed, yet weft_channel_new returned 0", n);
    }
    assert_true(fired);
    assert_enomem(rc);
    failures_seen++;
    assert_int_equal(weft_ctx_stats(ctx, &s1), 0);
    assert_int_equal(s1.ports_open, s0.ports_open);
    ktest_finish_runtime(rt);
  }
  assert_true(failures_seen >= 1);

  /* The lazily allocated settings of a port. */
  weft_runtime_t *rt = ktest_new_runtime();
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  arm(0);
  assert_int_equal(weft_port_on_close(p[0], NULL), WEFT_ENOMEM);
  assert_true(disarm());
  arm(0);
  assert_int_equal(weft_port_on_drain(p[0], NULL), WEFT_ENOMEM);
  assert_true(disarm());
  arm(0);
  assert_int_equal(weft_port_set_hwm(p[0], 5, 0), WEFT_ENOMEM);
  assert_true(disarm());
  /* The bound did not change: 6 posts fit. */
  for (int i = 0; i < 6; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64((uint64_t)i)), 0);
  ktest_finish_runtime(rt);
}

/* ---- weft_actor_spawn -------------------------------------------------------------- */

static void oom_behaviour(weft_port_t *self, weft_msg_t *m) {
  (void)self;
  weft_msg_free(m);
}

static void oom_actor_spawn(void **state) {
  (void)state;
  int failures_seen = 0;
  long n;
  for (n = 0; n < SWEEP_MAX; n++) {
    weft_runtime_t *rt = ktest_new_runtime();
    weft_ctx_t *ctx = weft_runtime_main(rt);
    weft_port_t *addr = NULL;
    arm(n);
    int rc = weft_actor_spawn(ctx, oom_behaviour, NULL, &addr);
    bool fired = disarm();
    if (rc == 0) {
      /* The actor works: one message, then close its address. */
      assert_int_equal(weft_port_post(addr, ktest_msg_u64(1)), 0);
      assert_int_equal(weft_port_close(addr), 0);
      ktest_finish_runtime(rt);
      if (!fired)
        break;
      fail_msg("allocation %ld failed, yet weft_actor_spawn returned 0", n);
    }
    assert_true(fired);
    assert_enomem(rc);
    failures_seen++;
    ktest_finish_runtime(rt);
  }
  assert_true(failures_seen >= 1);
}

/* ---- weft_msg_add_port + weft_worker_spawn -------------------------------------------- */

static struct {
  int exits, errors, code, err;
  int online;
} ow;

static void ow_on_exit(weft_worker_t *w, int code) {
  (void)w;
  ow.exits++;
  ow.code = code;
}

static void ow_on_error(weft_worker_t *w, int err) {
  (void)w;
  ow.errors++;
  ow.err = err;
}

static void ow_on_online(weft_worker_t *w) {
  (void)w;
  ow.online++;
}

static void ow_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
}

/* The worker takes the port in its data, posts one message on it and ends. */
static int ow_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  weft_port_t *port = NULL;
  int rc = weft_msg_take_port(data, 0, &port);
  if (rc != 0)
    return rc;
  weft_msg_t *m = NULL;
  rc = weft_msg_new(&m);
  if (rc != 0)
    return rc;
  rc = weft_port_post(port, m);
  if (rc != 0)
    weft_msg_free(m);
  weft_port_close(port);
  return rc;
}

typedef enum { STEP_NONE, STEP_CHANNEL, STEP_MSG, STEP_ADD_PORT, STEP_SPAWN } step_t;

/* One attempt: channel, message, add the port, spawn. Returns the step that
 * failed (its error in *err), or STEP_NONE. */
static step_t spawn_attempt(weft_ctx_t *ctx, weft_port_t *p[2], int *err) {
  weft_msg_t *data = NULL;
  *err = weft_channel_new(ctx, p);
  if (*err != 0)
    return STEP_CHANNEL;
  assert_int_equal(weft_port_start(p[0], ow_on_msg), 0);
  *err = weft_msg_new(&data);
  if (*err != 0)
    return STEP_MSG;
  *err = weft_msg_add_port(data, p[1]);
  if (*err != 0) {
    /* Still ours: bound to this context, usable. */
    assert_ptr_equal(weft_port_ctx(p[1]), ctx);
    assert_false(weft_port_is_closed(p[1]));
    assert_int_equal(weft_msg_xfer_count(data), 0);
    weft_msg_free(data);
    return STEP_ADD_PORT;
  }
  weft_worker_options_t o = {.entry = ow_entry, .msg = data, .on_exit = ow_on_exit,
                             .on_error = ow_on_error, .on_online = ow_on_online};
  weft_worker_t *w = NULL;
  *err = weft_worker_spawn(ctx, &o, &w);
  if (*err != 0) {
    /* opts.msg is still ours, with the port in it. */
    assert_int_equal(weft_msg_xfer_count(data), 1);
    assert_int_equal(weft_msg_xfer_kind(data, 0), WEFT_XFER_PORT);
    weft_msg_free(data); /* closes p[1] */
    return STEP_SPAWN;
  }
  return STEP_NONE;
}

static void oom_worker_spawn(void **state) {
  (void)state;
  int failed_at[5] = {0};
  int late = 0; /* failures that landed after spawn returned (worker side) */
  long n;
  for (n = 0; n < SWEEP_MAX; n++) {
    weft_runtime_t *rt = ktest_new_runtime();
    weft_ctx_t *ctx = weft_runtime_main(rt);
    memset(&ow, 0, sizeof(ow));
    weft_port_t *p[2] = {NULL, NULL};
    int err = 0;
    /* Armed through the whole run: a failure may land on the worker's
     * thread (its context) or in the kernel's own bookkeeping. */
    arm(n);
    step_t step = spawn_attempt(ctx, p, &err);
    if (step != STEP_NONE) {
      bool fired = disarm();
      assert_true(fired);
      assert_enomem(err);
      failed_at[step]++;
      ktest_finish_runtime(rt);
      continue;
    }
    assert_int_equal(weft_runtime_run(rt), 0);
    bool fired = disarm();
    assert_int_equal(ow.exits, 1);
    if (fired) {
      late++;
      /* The failure hit the worker: it reports it, or ends early. */
      if (ow.errors)
        assert_true(ow.err == WEFT_ENOMEM || ow.err == UV_ENOMEM);
    } else {
      assert_int_equal(ow.errors, 0);
      assert_int_equal(ow.code, 0);
      assert_int_equal(ow.online, 1);
    }
    ktest_finish_runtime(rt);
    if (!fired)
      break;
  }
  printf("  failures at channel %d, message %d, add_port %d, spawn %d, in the worker %d\n",
         failed_at[STEP_CHANNEL], failed_at[STEP_MSG], failed_at[STEP_ADD_PORT],
         failed_at[STEP_SPAWN], late);
  assert_true(n < SWEEP_MAX);
  assert_true(failed_at[STEP_CHANNEL] >= 1);
  assert_true(failed_at[STEP_SPAWN] >= 1);
}

/* ---- weft_runtime_register ------------------------------------------------------- */

static void oom_register(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  int failures_seen = 0;
  for (long n = 0; n < SWEEP_MAX; n++) {
    arm(n);
    int rc = weft_runtime_register(rt, "oom.entry", ow_entry);
    bool fired = disarm();
    if (rc == 0) {
      assert_false(fired);
      break;
    }
    assert_true(fired);
    assert_enomem(rc);
    assert_null(weft_runtime_lookup(rt, "oom.entry"));
    failures_seen++;
  }
  assert_true(failures_seen >= 1);
  assert_ptr_equal(weft_runtime_lookup(rt, "oom.entry"), ow_entry);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(oom_runtime_new),
      T(oom_channel_new),
      T(oom_actor_spawn),
      T(oom_register),
      T(oom_worker_spawn), /* last: a crash here stops the file */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
