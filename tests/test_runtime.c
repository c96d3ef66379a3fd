/* test_runtime.c: the runtime and its main context: attaching to a loop the
 * program already runs, one context per thread, the entry registry from
 * several threads, runtime options (bounds, batch, spin; bounds belong to
 * their runtime), weft_runtime_free with ports still open and messages still
 * queued, per-context stats, and weft_available_parallelism against the
 * affinity mask.
 *
 * Callbacks and foreign threads record failures with CHECK; each test ends
 * with weft_runtime_free() == 0, no CHECK failed, and no weft allocation
 * outstanding. A watchdog aborts a hung test. */
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

/* ---- attaching to the caller's loop --------------------------------------- */

static struct {
  int exits, code;
  uint64_t msgs;
  int timer_fired;
} att;

static int attach_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  for (uint64_t i = 0; i < 100; i++)
    CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(i)), 0);
  return 11;
}

static void attach_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == att.msgs);
  weft_msg_free(m);
  att.msgs++;
}

static void attach_on_exit(weft_worker_t *w, int code) {
  (void)w;
  att.exits++;
  att.code = code;
}

static void attach_timer_cb(uv_timer_t *t) {
  att.timer_fired++;
  uv_close((uv_handle_t *)t, NULL);
}

static void attach_existing_loop(void **state) {
  (void)state;
  memset(&att, 0, sizeof(att));
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  /* The program's own handle, next to weft's. */
  uv_timer_t timer;
  assert_int_equal(uv_timer_init(&loop, &timer), 0);
  assert_int_equal(uv_timer_start(&timer, attach_timer_cb, 1, 0), 0);
  weft_runtime_options_t opts = {.loop = &loop};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &opts), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  assert_ptr_equal(weft_ctx_loop(ctx), &loop);
  assert_ptr_equal(weft_ctx_current(), ctx);
  assert_ptr_equal(weft_ctx_runtime(ctx), rt);
  assert_int_equal(weft_runtime_run(rt), WEFT_EINVAL); /* the caller runs it */
  weft_worker_options_t o = {.entry = attach_entry, .on_message = attach_on_msg,
                             .on_exit = attach_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(att.exits, 1);
  assert_int_equal(att.code, 11);
  assert_int_equal(att.msgs, 100);
  assert_int_equal(att.timer_fired, 1);
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_null(weft_ctx_current());
  /* weft left nothing on the caller's loop. */
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(atomic_load(&ktest_failures), 0);
  assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
}

/* An attached runtime that is idle adds nothing that keeps the loop alive. */
static void attached_runtime_keeps_loop_idle(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  weft_runtime_options_t opts = {.loop = &loop};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &opts), 0);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once */
  assert_int_equal(uv_loop_alive(&loop), 0);
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
}

/* ---- one context per thread ------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  int new_rc, free_rc;
  bool had_ctx;
} other_rt_t;

static void other_thread_runtime(void *arg) {
  other_rt_t *t = arg;
  t->had_ctx = weft_ctx_current() != NULL;
}

static void one_context_per_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime(), *rt2 = NULL;
  assert_int_equal(weft_runtime_new(&rt2, NULL), WEFT_EBUSY);
  assert_null(rt2);
  assert_int_equal(weft_runtime_new(NULL, NULL), WEFT_EINVAL);
  assert_null(weft_runtime_main(NULL));
  assert_int_equal(weft_runtime_run(NULL), WEFT_EINVAL);
  assert_int_equal(weft_runtime_free(NULL), WEFT_EINVAL);
  other_rt_t t = {0};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, other_thread_runtime, &t), 0);
  uv_thread_join(&tid);
  assert_false(t.had_ctx); /* contexts are per thread */
  ktest_finish_runtime(rt);
  assert_null(weft_ctx_current());
  /* And a new runtime can follow on the same thread. */
  rt = ktest_new_runtime();
  ktest_finish_runtime(rt);
}

/* ---- the registry, from several threads --------------------------------------- */

static int reg_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  (void)data;
  return 0;
}

typedef struct {
  uv_thread_t tid;
  weft_runtime_t *rt;
  int id;
  int ok, busy;
} reg_thread_t;

static void reg_thread_main(void *arg) {
  reg_thread_t *t = arg;
  char name[32];
  for (int i = 0; i < 200; i++) {
    /* Half the names are shared by every thread: exactly one wins each. */
    if (i % 2)
      snprintf(name, sizeof(name), "own.%d.%d", t->id, i);
    else
      snprintf(name, sizeof(name), "shared.%d", i);
    int rc = weft_runtime_register(t->rt, name, reg_entry);
    if (rc == 0)
      t->ok++;
    else if (rc == WEFT_EBUSY)
      t->busy++;
    else
      CHECK_RC(rc, 0);
    CHECK(weft_runtime_lookup(t->rt, name) == reg_entry);
  }
}

static void registry_from_threads(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  assert_int_equal(weft_runtime_register(NULL, "x", reg_entry), WEFT_EINVAL);
  assert_int_equal(weft_runtime_register(rt, NULL, reg_entry), WEFT_EINVAL);
  assert_int_equal(weft_runtime_register(rt, "", reg_entry), WEFT_EINVAL);
  assert_int_equal(weft_runtime_register(rt, "x", NULL), WEFT_EINVAL);
  assert_null(weft_runtime_lookup(rt, NULL));
  assert_null(weft_runtime_lookup(NULL, "x"));
  reg_thread_t t[4];
  for (int i = 0; i < 4; i++) {
    memset(&t[i], 0, sizeof(t[i]));
    t[i].rt = rt;
    t[i].id = i;
    assert_int_equal(uv_thread_create(&t[i].tid, reg_thread_main, &t[i]), 0);
  }
  int ok = 0, busy = 0;
  for (int i = 0; i < 4; i++) {
    uv_thread_join(&t[i].tid);
    ok += t[i].ok;
    busy += t[i].busy;
  }
  assert_int_equal(ok, 4 * 100 + 100);
  assert_int_equal(busy, 3 * 100);
  ktest_finish_runtime(rt);
}

/* ---- options ------------------------------------------------------------------ */

static uint64_t opt_got;

static void opt_on_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == opt_got);
  weft_msg_free(m);
  opt_got++;
  if (opt_got == 1000)
    CHECK_RC(weft_port_close(port), 0);
}

static void runtime_options(void **state) {
  (void)state;
  /* A runtime-wide bound of 10 messages, a batch of 3, no spinning. */
  weft_runtime_options_t opts = {.port_hwm_msgs = 10, .batch = 3, .spin_us = -1};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &opts), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  int posted = 0;
  for (;;) {
    weft_msg_t *m = ktest_msg_u64((uint64_t)posted);
    int rc = weft_port_post(p[0], m);
    if (rc != 0) {
      assert_int_equal(rc, WEFT_EAGAIN);
      weft_msg_free(m);
      break;
    }
    posted++;
  }
  assert_int_equal(posted, 10);
  assert_int_equal(weft_port_pending(p[1]), 10);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_port_close(p[1]), 0);
  ktest_finish_runtime(rt);

  /* Freed runtime: the default bound is back. */
  rt = ktest_new_runtime();
  ctx = weft_runtime_main(rt);
  assert_int_equal(weft_channel_new(ctx, p), 0);
  for (int i = 0; i < 100; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(0)), 0);
  ktest_finish_runtime(rt);

  /* A small batch and no spin still deliver everything, in order. */
  weft_runtime_options_t o2 = {.batch = 1, .spin_us = -1};
  assert_int_equal(weft_runtime_new(&rt, &o2), 0);
  ctx = weft_runtime_main(rt);
  opt_got = 0;
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_start(p[1], opt_on_msg), 0);
  for (uint64_t i = 0; i < 1000; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(opt_got, 1000);
  ktest_finish_runtime(rt);
}

/* Posts ktest messages on p until the post refuses; returns how many went. */
static int post_until_full(weft_port_t *p, int limit) {
  int posted = 0;
  while (posted < limit) {
    weft_msg_t *m = ktest_msg_u64((uint64_t)posted);
    int rc = weft_port_post(p, m);
    if (rc != 0) {
      CHECK_RC(rc, WEFT_EAGAIN);
      weft_msg_free(m);
      break;
    }
    posted++;
  }
  return posted;
}

typedef struct {
  int new_rc, posted, free_rc;
} other_bounds_t;

/* Another runtime, with bounds of its own, made and freed on this thread. */
static void other_bounds_thread(void *arg) {
  other_bounds_t *t = arg;
  weft_runtime_options_t o = {.port_hwm_msgs = 100};
  weft_runtime_t *rt = NULL;
  t->new_rc = weft_runtime_new(&rt, &o);
  if (t->new_rc != 0)
    return;
  weft_port_t *p[2];
  CHECK_RC(weft_channel_new(weft_runtime_main(rt), p), 0);
  t->posted = post_until_full(p[0], 1000);
  t->free_rc = weft_runtime_free(rt);
}

/* The default bounds belong to the runtime: one made and freed on another
 * thread meanwhile changes neither the bound of a channel made before it nor
 * of one made after it. */
static void bounds_are_per_runtime(void **state) {
  (void)state;
  weft_runtime_options_t opts = {.port_hwm_msgs = 4};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &opts), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *before[2], *after[2];
  assert_int_equal(weft_channel_new(ctx, before), 0);
  other_bounds_t t = {0};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, other_bounds_thread, &t), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.new_rc, 0);
  assert_int_equal(t.posted, 100);
  assert_int_equal(t.free_rc, 0);
  assert_int_equal(weft_channel_new(ctx, after), 0);
  assert_int_equal(post_until_full(before[0], 1000), 4);
  assert_int_equal(post_until_full(after[0], 1000), 4);
  ktest_finish_runtime(rt);
}

/* ---- free with work still queued ------------------------------------------------ */

static int freed_closes;

static void drop_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(!"nothing runs before weft_runtime_free");
}

static void freed_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  (void)info;
  freed_closes++;
}

static void free_with_open_ports_and_queued_messages(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  freed_closes = 0;
  for (int c = 0; c < 20; c++) {
    weft_port_t *p[2];
    assert_int_equal(weft_channel_new(ctx, p), 0);
    assert_int_equal(weft_port_on_close(p[0], freed_on_close), 0);
    assert_int_equal(weft_port_on_close(p[1], freed_on_close), 0);
    if (c % 2)
      assert_int_equal(weft_port_start(p[1], drop_on_msg), 0);
    if (c % 3 == 0)
      weft_port_unref(p[1]);
    for (int i = 0; i < c * 10; i++)
      assert_int_equal(weft_port_post(p[0], ktest_msg_u64(1000000)), 0);
    if (c % 4 == 0) {
      /* A message that carries a port and is never received. */
      weft_port_t *q[2];
      assert_int_equal(weft_channel_new(ctx, q), 0);
      weft_msg_t *m = ktest_msg_u64(1000000);
      assert_int_equal(weft_msg_add_port(m, q[0]), 0);
      assert_int_equal(weft_port_post(p[1], m), 0);
    }
  }
  /* Nothing ran: weft_runtime_free closes every port and frees every message. */
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(freed_closes, 40);
  assert_int_equal(atomic_load(&ktest_failures), 0);
  assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
}

/* ---- stats on the main context --------------------------------------------------- */

typedef struct {
  weft_ctx_t *ctx;
  int rc;
} stats_thread_t;

static void stats_other_thread(void *arg) {
  stats_thread_t *t = arg;
  weft_ctx_stats_t s;
  t->rc = weft_ctx_stats(t->ctx, &s);
}

static void main_context_stats(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_ctx_stats_t s0, s1;
  assert_int_equal(weft_ctx_stats(ctx, NULL), WEFT_EINVAL);
  assert_int_equal(weft_ctx_stats(ctx, &s0), 0);
  assert_int_equal(s0.ports_open, 0);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  for (int i = 0; i < 7; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64((uint64_t)i)), 0);
  assert_int_equal(weft_ctx_stats(ctx, &s1), 0);
  assert_int_equal(s1.ports_open, 2);
  assert_int_equal(s1.msgs_out - s0.msgs_out, 7);
  assert_int_equal(s1.queue_depth, 7);
  opt_got = 0;
  assert_int_equal(weft_port_start(p[1], opt_on_msg), 0);
  weft_port_unref(p[1]);
  assert_int_equal(weft_runtime_run(rt), 0);
  /* The loop may have stopped before delivering (unref'd): run once more
   * while ref'd until the 7 came. */
  weft_port_ref(p[1]);
  while (opt_got < 7)
    uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  assert_int_equal(weft_ctx_stats(ctx, &s1), 0);
  assert_int_equal(s1.msgs_in - s0.msgs_in, 7);
  assert_int_equal(s1.queue_depth, 0);
  assert_true(s1.queue_peak >= 1);
  assert_true(s1.loop_utilization >= 0.0 && s1.loop_utilization <= 1.0);
  stats_thread_t t = {.ctx = ctx};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, stats_other_thread, &t), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.rc, WEFT_EWRONGTHREAD);
  ktest_finish_runtime(rt);
}

/* ---- available parallelism ------------------------------------------------------- */

static void available_parallelism_bounds(void **state) {
  (void)state;
  cpu_set_t set;
  CPU_ZERO(&set);
  assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
  unsigned affinity = (unsigned)CPU_COUNT(&set);
  unsigned n = weft_available_parallelism();
  printf("  available parallelism %u, affinity %u\n", n, affinity);
  assert_true(n >= 1);
  assert_true(n <= affinity);
  /* Any thread, and stable. */
  assert_int_equal(weft_available_parallelism(), n);
  assert_string_equal(weft_version_string(), "0.1.0");
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(attach_existing_loop),
      T(attached_runtime_keeps_loop_idle),
      T(one_context_per_thread),
      T(registry_from_threads),
      T(runtime_options),
      T(bounds_are_per_runtime),
      T(free_with_open_ports_and_queued_messages),
      T(main_context_stats),
      T(available_parallelism_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
