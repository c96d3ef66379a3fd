/* test_worker.c: worker threads: exit codes and errors (entry return value,
 * negative codes, weft_worker_exit from a timer, terminate of a cooperating
 * busy worker), entries by registered name, workerData, the order of the
 * parent's callbacks (online, error, exit; messages the worker posted before
 * exiting come before on_exit), nested workers, per-context stats, and
 * weft_runtime_free with workers still running.
 *
 * Callbacks and worker threads record failures with CHECK (no cmocka assert
 * off the test's own stack); each test ends with weft_runtime_free() == 0, no
 * CHECK failed, and no weft allocation outstanding. A watchdog aborts a hung
 * test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

/* ---- the parent's view of one worker ----------------------------------------- */

typedef struct {
  int online, errors, exits;
  int error, exit_code;
  int order[3]; /* 1 online, 2 error, 3 exit, in call order */
  int norder;
  uint64_t msgs;  /* messages from the worker's parent port */
  uint64_t msgs_at_exit;
  uint64_t last;
} seen_t;

static seen_t seen;

static void note(int what) {
  if (seen.norder < 3)
    seen.order[seen.norder] = what;
  seen.norder++;
}

static void on_online(weft_worker_t *w) {
  (void)w;
  seen.online++;
  note(1);
}

static void on_error(weft_worker_t *w, int err) {
  (void)w;
  seen.errors++;
  seen.error = err;
  note(2);
}

static void on_exit_cb(weft_worker_t *w, int code) {
  (void)w;
  seen.exits++;
  seen.exit_code = code;
  seen.msgs_at_exit = seen.msgs;
  note(3);
}

static void on_message(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  uint64_t v = 0;
  if (weft_msg_get_u64(m, NULL, &v) == 0) {
    CHECK(v == seen.msgs);
    seen.last = v;
  }
  weft_msg_free(m);
  seen.msgs++;
}

static weft_worker_options_t watched(weft_worker_entry_cb entry) {
  weft_worker_options_t o = {.entry = entry, .on_online = on_online, .on_error = on_error,
                             .on_exit = on_exit_cb, .on_message = on_message};
  return o;
}

static void run_one(weft_worker_options_t *opts) {
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&seen, 0, sizeof(seen));
  seen.exit_code = -1;
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), opts, &w), 0);
  assert_non_null(w);
  assert_int_equal(weft_runtime_run(rt), 0); /* until on_exit */
  assert_int_equal(seen.exits, 1);
  assert_int_equal(seen.online, 1);
  ktest_finish_runtime(rt);
}

/* ---- exit codes ---------------------------------------------------------------- */

static int entry_return_7(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  CHECK(data == NULL);
  return 7;
}

static void exit_code_from_entry(void **state) {
  (void)state;
  weft_worker_options_t o = watched(entry_return_7);
  run_one(&o);
  assert_int_equal(seen.exit_code, 7);
  assert_int_equal(seen.errors, 0);
  assert_int_equal(seen.norder, 2);
  assert_int_equal(seen.order[0], 1); /* online before exit */
  assert_int_equal(seen.order[1], 3);
}

#define ENTRY_ERR (-4242)

static int entry_fails(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  (void)data;
  return ENTRY_ERR;
}

static void negative_entry_reports_error(void **state) {
  (void)state;
  weft_worker_options_t o = watched(entry_fails);
  run_one(&o);
  assert_int_equal(seen.errors, 1);
  assert_int_equal(seen.error, ENTRY_ERR);
  assert_int_equal(seen.exit_code, 1);
  assert_int_equal(seen.norder, 3);
  assert_int_equal(seen.order[0], 1);
  assert_int_equal(seen.order[1], 2); /* error, then exit */
  assert_int_equal(seen.order[2], 3);
}

static uv_timer_t exit_timer; /* the worker's loop closes it on the way out */
static int exit_timer_fired;

static void exit_timer_cb(uv_timer_t *t) {
  (void)t;
  exit_timer_fired++;
  weft_ctx_t *ctx = weft_ctx_current();
  CHECK(ctx != NULL);
  CHECK_RC(weft_worker_exit(ctx, 3), 0);
}

static int entry_exit_from_timer(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(uv_timer_init(weft_ctx_loop(ctx), &exit_timer), 0);
  /* A repeating timer: without weft_worker_exit the worker would never end. */
  CHECK_RC(uv_timer_start(&exit_timer, exit_timer_cb, 1, 1), 0);
  return 0;
}

static void worker_exit_from_timer(void **state) {
  (void)state;
  exit_timer_fired = 0;
  weft_worker_options_t o = watched(entry_exit_from_timer);
  run_one(&o);
  assert_int_equal(seen.exit_code, 3);
  assert_int_equal(seen.errors, 0);
  assert_int_equal(exit_timer_fired, 1);
}

/* weft_worker_exit called in the entry itself, after posting: the posts are
 * delivered, then on_exit with the code. */
static int entry_posts_then_exits(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  for (uint64_t i = 0; i < 1000; i++)
    CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(i)), 0);
  CHECK_RC(weft_worker_exit(ctx, 5), 0);
  return 0;
}

static void worker_exit_in_entry(void **state) {
  (void)state;
  weft_worker_options_t o = watched(entry_posts_then_exits);
  run_one(&o);
  assert_int_equal(seen.exit_code, 5);
  assert_int_equal(seen.msgs_at_exit, 1000);
}

/* ---- terminate ------------------------------------------------------------------ */

static _Atomic uint64_t busy_spins;
static _Atomic int busy_started;

static int entry_busy(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  atomic_store(&busy_started, 1);
  while (!weft_ctx_should_stop(ctx))
    atomic_fetch_add_explicit(&busy_spins, 1, memory_order_relaxed);
  return 0; /* ignored: terminated workers exit with 1 */
}

static void terminate_on_online(weft_worker_t *w) {
  on_online(w);
  CHECK_RC(weft_worker_terminate(w), 0);
  CHECK_RC(weft_worker_terminate(w), 0); /* idempotent */
}

static void terminate_busy_worker(void **state) {
  (void)state;
  atomic_store(&busy_spins, 0);
  atomic_store(&busy_started, 0);
  weft_worker_options_t o = watched(entry_busy);
  o.on_online = terminate_on_online;
  run_one(&o);
  assert_int_equal(seen.exit_code, 1);
  assert_int_equal(seen.errors, 0);
}

/* A worker idle in its loop (kept alive by its started parent port) is
 * terminated from another (non-weft) thread. */
static void idle_on_parent_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
}

static int entry_idle(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), idle_on_parent_msg), 0);
  CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(0)), 0);
  return 0;
}

static void terminator_main(void *arg) {
  CHECK_RC(weft_worker_terminate(arg), 0);
}

static uv_thread_t terminator;

static void terminate_from_thread_on_msg(weft_port_t *port, weft_msg_t *m) {
  on_message(port, m);
  /* The worker is up and idle: stop it from a thread that has no context. */
  weft_worker_t *w = weft_port_data(port);
  CHECK_RC(uv_thread_create(&terminator, terminator_main, w), 0);
}

static void terminate_idle_worker_from_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&seen, 0, sizeof(seen));
  weft_worker_options_t o = watched(entry_idle);
  o.on_message = terminate_from_thread_on_msg;
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  weft_port_set_data(weft_worker_port(w), w);
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&terminator);
  assert_int_equal(seen.msgs, 1);
  assert_int_equal(seen.exits, 1);
  assert_int_equal(seen.exit_code, 1);
  ktest_finish_runtime(rt);
}

/* weft_runtime_free with workers still running: it terminates and joins
 * them; each on_exit is called (code 1) and nothing leaks. */
static void runtime_free_stops_workers(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&seen, 0, sizeof(seen));
  for (int i = 0; i < 4; i++) {
    weft_worker_options_t o = watched(entry_idle);
    o.on_message = idle_on_parent_msg;
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  }
  for (int i = 0; i < 3; i++) {
    weft_worker_options_t o = watched(entry_busy);
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  }
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(seen.exits, 7);
  assert_int_equal(seen.exit_code, 1);
  assert_int_equal(atomic_load(&ktest_failures), 0);
  assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
}

/* ---- entries by name; workerData ------------------------------------------- */

static int entry_named(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t v = 0;
  CHECK_RC(weft_msg_get_u64(data, NULL, &v), 0);
  return (int)v;
}

static void entry_by_registered_name(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  assert_int_equal(weft_runtime_register(rt, "kt.named", entry_named), 0);
  assert_int_equal(weft_runtime_register(rt, "kt.named", entry_named), WEFT_EBUSY);
  assert_ptr_equal(weft_runtime_lookup(rt, "kt.named"), entry_named);
  assert_null(weft_runtime_lookup(rt, "kt.unknown"));
  memset(&seen, 0, sizeof(seen));
  weft_worker_options_t o = watched(NULL);
  o.entry_name = "kt.named";
  o.msg = ktest_msg_u64(9);
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  /* Unknown name: WEFT_ENOENTRY, and the data is still ours. */
  weft_msg_t *data = ktest_msg_u64(1);
  o.entry_name = "kt.unknown";
  o.msg = data;
  weft_worker_t *w2 = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w2), WEFT_ENOENTRY);
  assert_null(w2);
  assert_int_equal(ktest_msg_value(data), 1);
  weft_msg_free(data);
  o.entry_name = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w2), WEFT_EINVAL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seen.exits, 1);
  assert_int_equal(seen.exit_code, 9);
  ktest_finish_runtime(rt);
}

static int entry_check_data(weft_ctx_t *ctx, weft_msg_t *data) {
  const char *s = NULL;
  size_t len = 0;
  uint64_t n = 0;
  CHECK(data != NULL);
  if (data == NULL)
    return -1;
  CHECK_RC(weft_msg_get_str(data, "name", &s, &len), 0);
  CHECK(len == 4 && s != NULL && memcmp(s, "weft", 4) == 0);
  CHECK_RC(weft_msg_get_u64(data, "n", &n), 0);
  CHECK(n == 42);
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(data, 0, &buf), 0);
  CHECK(weft_buf_len(buf) == 1000);
  const uint8_t *bytes = weft_buf_ptr(buf);
  for (size_t i = 0; bytes != NULL && i < 1000; i++)
    CHECK(bytes[i] == (uint8_t)i);
  weft_buf_free(buf);
  /* Report back: the parent checks this arrives before on_exit. */
  CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(0)), 0);
  return 0;
}

static void worker_data_delivered(void **state) {
  (void)state;
  weft_msg_t *data = NULL;
  testutil_alloc_install();
  assert_int_equal(weft_msg_new(&data), 0);
  assert_int_equal(weft_msg_put_map(data, 2), 0);
  assert_int_equal(weft_msg_put_str(data, "name", "weft"), 0);
  assert_int_equal(weft_msg_put_u64(data, "n", 42), 0);
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, 1000), 0);
  uint8_t *bytes = weft_buf_ptr(buf);
  for (size_t i = 0; i < 1000; i++)
    bytes[i] = (uint8_t)i;
  assert_int_equal(weft_msg_add_buf(data, buf), 0);
  weft_buf_free(buf); /* detached handle */
  weft_worker_options_t o = watched(entry_check_data);
  o.msg = data;
  run_one(&o);
  assert_int_equal(seen.exit_code, 0);
  assert_int_equal(seen.msgs_at_exit, 1);
}

/* ---- messages posted before the exit come before on_exit ------------------- */

static uint64_t flood_n;

static int entry_flood(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *parent = weft_ctx_parent_port(ctx);
  for (uint64_t i = 0; i < flood_n; i++) {
    weft_msg_t *m = ktest_msg_u64(i);
    int rc;
    while ((rc = weft_port_post(parent, m)) == WEFT_EAGAIN)
      sched_yield(); /* the parent drains on its own thread */
    CHECK_RC(rc, 0);
  }
  return 0;
}

static void messages_before_exit(void **state) {
  (void)state;
  flood_n = ktest_scaled(100000, 1000);
  weft_worker_options_t o = watched(entry_flood);
  run_one(&o);
  assert_int_equal(seen.exit_code, 0);
  assert_int_equal(seen.msgs_at_exit, flood_n);
  assert_int_equal(seen.msgs, flood_n);
}

/* Many short workers at once: every one comes online, then exits once. */
static int entry_id(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t v = 0;
  CHECK_RC(weft_msg_get_u64(data, NULL, &v), 0);
  return (int)(v % 100);
}

static struct {
  int online[64], exits[64];
  int codes[64];
} many;

static void many_online(weft_worker_t *w) {
  many.online[(uintptr_t)weft_worker_data(w)]++;
}

static void many_exit(weft_worker_t *w, int code) {
  uintptr_t i = (uintptr_t)weft_worker_data(w);
  CHECK(many.online[i] == 1);
  many.exits[i]++;
  many.codes[i] = code;
}

static void many_workers_at_once(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&many, 0, sizeof(many));
  int n = SANITIZED ? 16 : 64;
  for (int i = 0; i < n; i++) {
    weft_worker_options_t o = {.entry = entry_id, .msg = ktest_msg_u64((uint64_t)i),
                               .on_online = many_online, .on_exit = many_exit,
                               .data = (void *)(uintptr_t)i,
                               .stack_size = (i % 2) ? 256 * 1024 : 0};
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
    assert_ptr_equal(weft_worker_data(w), (void *)(uintptr_t)i);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  for (int i = 0; i < n; i++) {
    assert_int_equal(many.online[i], 1);
    assert_int_equal(many.exits[i], 1);
    assert_int_equal(many.codes[i], i % 100);
  }
  ktest_finish_runtime(rt);
}

/* ---- file descriptors ------------------------------------------------------- */

/* Every context owns an eventfd (its wake-up) and its loop's epoll fd: a
 * runtime whose workers came and went leaves no fd behind. */
static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

static void contexts_leave_no_fd(void **state) {
  (void)state;
  int before = count_fds();
  assert_true(before > 0);
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&many, 0, sizeof(many));
  for (int i = 0; i < 4; i++) {
    weft_worker_options_t o = {.entry = entry_id, .msg = ktest_msg_u64((uint64_t)i),
                               .on_online = many_online, .on_exit = many_exit,
                               .data = (void *)(uintptr_t)i};
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  }
  assert_true(count_fds() > before); /* the main context's own, at least */
  assert_int_equal(weft_runtime_run(rt), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(many.exits[i], 1);
  ktest_finish_runtime(rt);
  assert_int_equal(count_fds(), before);
}

/* ---- nested workers ------------------------------------------------------------ */

static _Atomic int nested_exits;
static _Atomic int nested_code;

static void nested_child_exit(weft_worker_t *w, int code) {
  (void)w;
  CHECK(weft_ctx_current() != NULL);
  atomic_store(&nested_code, code);
  atomic_fetch_add(&nested_exits, 1);
}

static void nested_child_online(weft_worker_t *w) {
  (void)w;
  /* The grandchild is up: tell the main thread, which terminates the child. */
  CHECK_RC(weft_port_post(weft_ctx_parent_port(weft_ctx_current()), ktest_msg_u64(0)), 0);
}

static int entry_nested_parent(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_worker_options_t o = {.entry = entry_idle, .on_online = nested_child_online,
                             .on_exit = nested_child_exit,
                             .on_message = idle_on_parent_msg};
  weft_worker_t *w = NULL;
  CHECK_RC(weft_worker_spawn(ctx, &o, &w), 0);
  return 0; /* the running grandchild keeps this worker alive */
}

static void nested_on_msg(weft_port_t *port, weft_msg_t *m) {
  on_message(port, m);
  CHECK_RC(weft_worker_terminate(weft_port_data(port)), 0);
}

static void nested_workers_stop_together(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&seen, 0, sizeof(seen));
  atomic_store(&nested_exits, 0);
  atomic_store(&nested_code, -1);
  weft_worker_options_t o = watched(entry_nested_parent);
  o.on_message = nested_on_msg;
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  weft_port_set_data(weft_worker_port(w), w);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seen.exits, 1);
  assert_int_equal(seen.exit_code, 1);
  assert_int_equal(atomic_load(&nested_exits), 1);
  assert_int_equal(atomic_load(&nested_code), 1);
  ktest_finish_runtime(rt);
}

/* ---- stats --------------------------------------------------------------------- */

static struct {
  uint64_t n;
  uint64_t echoed;           /* main: echoes received */
  weft_ctx_stats_t worker;   /* as the worker reported them */
  bool got_stats;
} st;

static void stats_worker_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  if (v == UINT64_MAX - 1) {
    /* The end: report this context's stats, then close (the worker exits). */
    weft_msg_free(m);
    weft_ctx_stats_t s;
    CHECK_RC(weft_ctx_stats(weft_ctx_current(), &s), 0);
    weft_msg_t *r = NULL;
    CHECK_RC(weft_msg_new(&r), 0);
    CHECK_RC(weft_msg_put_bin(r, NULL, &s, sizeof(s)), 0);
    CHECK_RC(weft_port_post(port, r), 0);
    CHECK_RC(weft_port_close(port), 0);
    return;
  }
  int rc = weft_port_post(port, m); /* echo the message itself */
  CHECK_RC(rc, 0);
  if (rc != 0)
    weft_msg_free(m);
}

static int entry_stats(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), stats_worker_on_msg), 0);
  return 0;
}

static void stats_main_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  const void *p = NULL;
  size_t len = 0;
  if (weft_msg_get_bin(m, NULL, &p, &len) == 0) {
    CHECK(len == sizeof(st.worker));
    if (len == sizeof(st.worker))
      memcpy(&st.worker, p, len);
    st.got_stats = true;
  } else {
    CHECK(ktest_msg_value(m) == st.echoed);
    st.echoed++;
  }
  weft_msg_free(m);
}

static void stats_count_messages(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&st, 0, sizeof(st));
  memset(&seen, 0, sizeof(seen));
  st.n = ktest_scaled(20000, 200);
  weft_ctx_stats_t before, after;
  assert_int_equal(weft_ctx_stats(ctx, &before), 0);
  weft_worker_options_t o = watched(entry_stats);
  o.on_message = stats_main_on_msg;
  o.port_hwm_msgs = (uint32_t)(st.n + 10);
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  weft_port_t *to = weft_worker_port(w);
  for (uint64_t i = 0; i < st.n; i++)
    assert_int_equal(weft_port_post(to, ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_post(to, ktest_msg_u64(UINT64_MAX - 1)), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(weft_ctx_stats(ctx, &after), 0);
  assert_true(st.got_stats);
  assert_int_equal(st.echoed, st.n);
  /* The worker: n + 1 delivered, n echoes posted (the stats message was
   * posted after the snapshot). */
  assert_int_equal(st.worker.msgs_in, st.n + 1);
  assert_int_equal(st.worker.msgs_out, st.n);
  assert_true(st.worker.loop_utilization >= 0.0 && st.worker.loop_utilization <= 1.0);
  /* Main: n + 1 posted, n echoes + the stats message delivered. */
  assert_int_equal(after.msgs_out - before.msgs_out, st.n + 1);
  assert_int_equal(after.msgs_in - before.msgs_in, st.n + 1);
  assert_true(after.loop_utilization >= 0.0 && after.loop_utilization <= 1.0);
  assert_true(after.loop_age_ns >= before.loop_age_ns);
  assert_int_equal(seen.exits, 1);
  assert_int_equal(seen.exit_code, 0);
  ktest_finish_runtime(rt);
}

/* ---- argument checks ------------------------------------------------------------- */

typedef struct {
  weft_ctx_t *ctx;
  int spawn_rc, exit_rc;
} wt_t;

static void wrong_thread_main(void *arg) {
  wt_t *t = arg;
  weft_worker_options_t o = {.entry = entry_return_7};
  weft_worker_t *w = NULL;
  t->spawn_rc = weft_worker_spawn(t->ctx, &o, &w);
  t->exit_rc = weft_worker_exit(t->ctx, 0);
}

static void worker_argument_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_worker_options_t o = {.entry = entry_return_7};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(NULL, &o, &w), WEFT_EINVAL);
  assert_int_equal(weft_worker_spawn(ctx, NULL, &w), WEFT_EINVAL);
  assert_int_equal(weft_worker_spawn(ctx, &o, NULL), WEFT_EINVAL);
  weft_worker_options_t none = {0};
  assert_int_equal(weft_worker_spawn(ctx, &none, &w), WEFT_EINVAL);
  assert_int_equal(weft_worker_terminate(NULL), WEFT_EINVAL);
  assert_int_equal(weft_worker_exit(NULL, 0), WEFT_EINVAL);
  assert_int_equal(weft_worker_exit(ctx, 0), WEFT_EINVAL); /* main is no worker */
  assert_null(weft_worker_port(NULL));
  assert_null(weft_worker_data(NULL));
  assert_null(weft_ctx_parent_port(ctx));
  assert_false(weft_ctx_should_stop(ctx));
  wt_t t = {.ctx = ctx};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, wrong_thread_main, &t), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.spawn_rc, WEFT_EWRONGTHREAD);
  assert_true(t.exit_rc == WEFT_EINVAL || t.exit_rc == WEFT_EWRONGTHREAD);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(exit_code_from_entry),
      T(negative_entry_reports_error),
      T(worker_exit_from_timer),
      T(worker_exit_in_entry),
      T(terminate_busy_worker),
      T(terminate_idle_worker_from_thread),
      T(runtime_free_stops_workers),
      T(entry_by_registered_name),
      T(worker_data_delivered),
      T(messages_before_exit),
      T(many_workers_at_once),
      T(contexts_leave_no_fd),
      T(nested_workers_stop_together),
      T(stats_count_messages),
      T(worker_argument_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
