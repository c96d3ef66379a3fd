/* test_actor.c: actors: 100k actors each sent one message, each replying and
 * stopping itself, nothing leaked; a ring of 1000 actors passing a token 100k
 * hops; actors spawned on a worker whose addresses travel to the main thread
 * in one message; argument errors.
 *
 * Callbacks record failures with CHECK; each test ends with
 * weft_runtime_free() == 0, no CHECK failed, and no weft allocation
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

#include "testutil.h"
#include "weft.h"

/* ---- scaffolding (the same in every kernel test file) --------------------- */

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
/* Debian's libuv is not built with TSan and closes descriptors with a raw
 * close syscall that TSan does not see; when another thread's new loop gets
 * the same descriptor number, TSan reports a race on the descriptor. Only
 * those reports are suppressed. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
  return "race:epoll_create1\nrace:eventfd\nrace:pipe2\n";
}
#endif

static double test_scale(void) {
  const char *s = getenv("WEFT_TEST_SCALE");
  if (s != NULL && *s != '\0') {
    double v = strtod(s, NULL);
    if (v > 0)
      return v;
  }
#if defined(__SANITIZE_THREAD__)
  return 0.05; /* TSan: 5-15x slower, and 2 cores */
#elif defined(__SANITIZE_ADDRESS__)
  return 0.25;
#else
  return 1.0;
#endif
}

static inline uint64_t scaled(uint64_t n, uint64_t min) {
  uint64_t v = (uint64_t)((double)n * test_scale());
  return v < min ? min : v;
}

static atomic_int failures;
static long alloc_base;

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      atomic_fetch_add(&failures, 1);                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);      \
    }                                                                            \
  } while (0)

#define CHECK_RC(expr, want)                                                     \
  do {                                                                           \
    int rc_ = (expr);                                                            \
    if (rc_ != (want)) {                                                         \
      atomic_fetch_add(&failures, 1);                                            \
      fprintf(stderr, "%s:%d: %s returned %s, want %s\n", __FILE__, __LINE__,    \
              #expr, weft_err_name(rc_), weft_err_name(want));                   \
    }                                                                            \
  } while (0)

typedef struct {
  uv_thread_t tid;
  uv_mutex_t mu;
  uv_cond_t cv;
  bool done;
} watchdog_t;

static watchdog_t watchdog;

static void watchdog_main(void *arg) {
  watchdog_t *w = arg;
  uint64_t limit = (SANITIZED ? 200ull : 60ull) * 1000000000ull;
  uint64_t deadline = uv_hrtime() + limit;
  uv_mutex_lock(&w->mu);
  while (!w->done) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) {
      fprintf(stderr, "watchdog: test still running after %llu s: abort\n",
              (unsigned long long)(limit / 1000000000ull));
      abort();
    }
    (void)uv_cond_timedwait(&w->cv, &w->mu, deadline - now);
  }
  uv_mutex_unlock(&w->mu);
}

static int setup(void **state) {
  (void)state;
  testutil_alloc_install();
  testutil_alloc_fail_after(-1);
  atomic_store(&failures, 0);
  alloc_base = testutil_alloc_outstanding();
  if (alloc_base != 0)
    fprintf(stderr, "note: an earlier test leaked %ld blocks\n", alloc_base);
  watchdog.done = false;
  if (uv_mutex_init(&watchdog.mu) || uv_cond_init(&watchdog.cv) ||
      uv_thread_create(&watchdog.tid, watchdog_main, &watchdog))
    abort();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  uv_mutex_lock(&watchdog.mu);
  watchdog.done = true;
  uv_cond_signal(&watchdog.cv);
  uv_mutex_unlock(&watchdog.mu);
  uv_thread_join(&watchdog.tid);
  uv_cond_destroy(&watchdog.cv);
  uv_mutex_destroy(&watchdog.mu);
  return 0;
}

/* The end of every test: the runtime goes, nothing failed, nothing leaked. */
static inline void finish_runtime(weft_runtime_t *rt) {
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&failures), 0);
  assert_int_equal(testutil_alloc_outstanding(), alloc_base);
}

static inline weft_runtime_t *new_runtime(void) {
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  return rt;
}

static inline weft_msg_t *msg_u64(uint64_t v) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0 || weft_msg_put_u64(m, NULL, v) != 0)
    abort();
  return m;
}

static inline uint64_t msg_value(weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, NULL, &v), 0);
  return v;
}

/* Post from a thread that has no context (so no drain callback): retry on
 * EAGAIN, yielding. Returns the number of EAGAINs met. */
static inline uint64_t post_retry(weft_port_t *p, weft_msg_t *m) {
  uint64_t again = 0;
  for (;;) {
    int rc = weft_port_post(p, m);
    if (rc == 0)
      return again;
    if (rc != WEFT_EAGAIN) {
      CHECK_RC(rc, 0);
      weft_msg_free(m);
      return again;
    }
    again++;
    sched_yield();
  }
}


/* A started, ref'd port that keeps the main loop alive until closed. */
static weft_port_t *keep[2];

static void keep_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
}

static void keep_open(weft_ctx_t *ctx) {
  assert_int_equal(weft_channel_new(ctx, keep), 0);
  assert_int_equal(weft_port_start(keep[1], keep_on_msg), 0);
}

static void keep_close(void) {
  CHECK_RC(weft_port_close(keep[1]), 0);
}

/* ---- 100k actors, one message each ----------------------------------------- */

static struct {
  uint64_t n;
  uint64_t behaved, replies, closes;
} many;

static void many_behaviour(weft_port_t *self, weft_msg_t *m) {
  uint64_t v = msg_value(m);
  CHECK(v == (uintptr_t)weft_port_data(self));
  many.behaved++;
  /* Reply with the message itself (posted on self: it reaches the address),
   * then stop: the address sees the reply, then the close. */
  int rc = weft_port_post(self, m);
  CHECK_RC(rc, 0);
  if (rc != 0)
    weft_msg_free(m);
  CHECK_RC(weft_actor_stop(self), 0);
}

static void many_on_reply(weft_port_t *addr, weft_msg_t *m) {
  CHECK(msg_value(m) == (uintptr_t)weft_port_data(addr));
  weft_msg_free(m);
  many.replies++;
}

static void many_on_close(weft_port_t *addr, const weft_port_close_info_t *info) {
  (void)addr;
  CHECK(info->reason == WEFT_ECLOSED);
  if (++many.closes == many.n)
    keep_close();
}

static void many_actors(void **state) {
  (void)state;
  weft_runtime_t *rt = new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&many, 0, sizeof(many));
  many.n = scaled(100000, 5000);
  keep_open(ctx);
  uint64_t t0 = uv_hrtime();
  for (uint64_t i = 0; i < many.n; i++) {
    weft_port_t *addr = NULL;
    assert_int_equal(weft_actor_spawn(ctx, many_behaviour, (void *)(uintptr_t)i, &addr), 0);
    weft_port_set_data(addr, (void *)(uintptr_t)i);
    assert_int_equal(weft_port_on_close(addr, many_on_close), 0);
    assert_int_equal(weft_port_start(addr, many_on_reply), 0);
    assert_int_equal(weft_port_post(addr, msg_u64(i)), 0);
  }
  weft_ctx_stats_t s;
  assert_int_equal(weft_ctx_stats(ctx, &s), 0);
  assert_int_equal(s.ports_open, 2 * many.n + 2);
  assert_int_equal(weft_runtime_run(rt), 0);
  printf("  %llu actors in %.2f s\n", (unsigned long long)many.n,
         (double)(uv_hrtime() - t0) / 1e9);
  assert_int_equal(many.behaved, many.n);
  assert_int_equal(many.replies, many.n);
  assert_int_equal(many.closes, many.n);
  assert_int_equal(weft_ctx_stats(ctx, &s), 0);
  assert_int_equal(s.ports_open, 1); /* keep[0] */
  finish_runtime(rt);
}

/* ---- a ring of 1000 actors, a token 100k hops ---------------------------------- */

#define RING 1000
#define STOP UINT64_MAX

typedef struct {
  weft_port_t *next;
  uint64_t hops;
  bool stopped;
} ring_actor_t;

static ring_actor_t ring[RING];
static struct {
  uint64_t hops, stopped;
} rs;

static void ring_behaviour(weft_port_t *self, weft_msg_t *m) {
  ring_actor_t *a = weft_port_data(self);
  uint64_t v = msg_value(m);
  weft_msg_free(m);
  if (v == STOP) {
    CHECK(!a->stopped);
    a->stopped = true;
    CHECK_RC(weft_actor_stop(self), 0);
    if (++rs.stopped == RING)
      keep_close();
    return;
  }
  a->hops++;
  rs.hops++;
  if (v == 0) {
    for (int i = 0; i < RING; i++)
      CHECK_RC(weft_port_post(ring[i].next, msg_u64(STOP)), 0);
    return;
  }
  CHECK_RC(weft_port_post(a->next, msg_u64(v - 1)), 0);
}

static void actor_ring(void **state) {
  (void)state;
  weft_runtime_t *rt = new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(ring, 0, sizeof(ring));
  memset(&rs, 0, sizeof(rs));
  uint64_t hops = scaled(100000, 10000);
  keep_open(ctx);
  weft_port_t *addr[RING];
  for (int i = 0; i < RING; i++)
    assert_int_equal(weft_actor_spawn(ctx, ring_behaviour, &ring[i], &addr[i]), 0);
  for (int i = 0; i < RING; i++)
    ring[i].next = addr[(i + 1) % RING];
  /* Hops counted down to 0: hops + 1 deliveries. */
  assert_int_equal(weft_port_post(addr[0], msg_u64(hops)), 0);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(weft_runtime_run(rt), 0);
  printf("  %llu hops in %.2f s\n", (unsigned long long)hops,
         (double)(uv_hrtime() - t0) / 1e9);
  assert_int_equal(rs.hops, hops + 1);
  assert_int_equal(rs.stopped, RING);
  for (int i = 0; i < RING; i++) {
    uint64_t want = (hops + 1) / RING + ((uint64_t)i < (hops + 1) % RING ? 1 : 0);
    assert_int_equal(ring[i].hops, want);
  }
  finish_runtime(rt); /* closes the 1000 addresses */
}

/* ---- actors on a worker, addressed from main ------------------------------------- */

#define WA 1000

static struct {
  uint64_t stopped;          /* worker thread */
  uint64_t replies, closes;  /* main thread */
  int exits, code;
} wa;

static void wa_behaviour(weft_port_t *self, weft_msg_t *m) {
  uint64_t v = msg_value(m);
  CHECK(v == (uintptr_t)weft_port_data(self));
  int rc = weft_port_post(self, m); /* reply */
  CHECK_RC(rc, 0);
  if (rc != 0)
    weft_msg_free(m);
  CHECK_RC(weft_actor_stop(self), 0);
  if (++wa.stopped == WA)
    CHECK_RC(weft_port_close(weft_ctx_parent_port(weft_ctx_current())), 0);
}

static void wa_parent_noop(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
}

static int wa_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_msg_t *addrs = NULL;
  CHECK_RC(weft_msg_new(&addrs), 0);
  for (uintptr_t i = 0; i < WA; i++) {
    weft_port_t *addr = NULL;
    CHECK_RC(weft_actor_spawn(ctx, wa_behaviour, (void *)i, &addr), 0);
    CHECK_RC(weft_msg_add_port(addrs, addr), 0);
  }
  CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), addrs), 0);
  /* Stay up (a started, ref'd port) until every actor has stopped. */
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), wa_parent_noop), 0);
  return 0;
}

static void wa_on_reply(weft_port_t *addr, weft_msg_t *m) {
  CHECK(msg_value(m) == (uintptr_t)weft_port_data(addr));
  weft_msg_free(m);
  wa.replies++;
}

static void wa_on_close(weft_port_t *addr, const weft_port_close_info_t *info) {
  (void)addr;
  CHECK(info->reason == WEFT_ECLOSED);
  wa.closes++;
}

static void wa_on_addresses(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(weft_msg_xfer_count(m) == WA);
  for (size_t i = 0; i < weft_msg_xfer_count(m); i++) {
    weft_port_t *addr = NULL;
    CHECK_RC(weft_msg_take_port(m, i, &addr), 0);
    if (addr == NULL)
      continue;
    CHECK(weft_port_ctx(addr) == weft_ctx_current());
    weft_port_set_data(addr, (void *)(uintptr_t)i);
    CHECK_RC(weft_port_on_close(addr, wa_on_close), 0);
    CHECK_RC(weft_port_start(addr, wa_on_reply), 0);
    CHECK_RC(weft_port_post(addr, msg_u64(i)), 0);
  }
  weft_msg_free(m);
}

static void wa_on_exit(weft_worker_t *w, int code) {
  (void)w;
  wa.exits++;
  wa.code = code;
}

static void actors_on_a_worker(void **state) {
  (void)state;
  weft_runtime_t *rt = new_runtime();
  memset(&wa, 0, sizeof(wa));
  weft_worker_options_t o = {.entry = wa_entry, .on_message = wa_on_addresses,
                             .on_exit = wa_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(wa.exits, 1);
  assert_int_equal(wa.code, 0);
  assert_int_equal(wa.stopped, WA);
  assert_int_equal(wa.replies, WA);
  assert_int_equal(wa.closes, WA);
  finish_runtime(rt);
}

/* ---- stop from outside the behaviour; argument errors ----------------------------- */

static int outside_closes;

static void outside_behaviour(weft_port_t *self, weft_msg_t *m) {
  (void)self;
  weft_msg_free(m);
  CHECK(!"never called");
}

static void outside_on_close(weft_port_t *addr, const weft_port_close_info_t *info) {
  (void)addr;
  CHECK(info->reason == 0); /* closed on this side */
  outside_closes++;
}

typedef struct {
  weft_ctx_t *ctx;
  int rc;
} actor_thread_t;

static void actor_wrong_thread(void *arg) {
  actor_thread_t *t = arg;
  weft_port_t *addr = NULL;
  t->rc = weft_actor_spawn(t->ctx, outside_behaviour, NULL, &addr);
}

static void actor_stop_and_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *addr = NULL;
  assert_int_equal(weft_actor_spawn(NULL, outside_behaviour, NULL, &addr), WEFT_EINVAL);
  assert_int_equal(weft_actor_spawn(ctx, NULL, NULL, &addr), WEFT_EINVAL);
  assert_int_equal(weft_actor_spawn(ctx, outside_behaviour, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_actor_stop(NULL), WEFT_EINVAL);
  actor_thread_t t = {.ctx = ctx};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, actor_wrong_thread, &t), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.rc, WEFT_EWRONGTHREAD);
  /* Closing an address stops nothing by itself but the channel: the actor's
   * own port sees the close and goes too; nothing leaks. */
  outside_closes = 0;
  int spawned = 0;
  for (int i = 0; i < 10; i++) {
    assert_int_equal(weft_actor_spawn(ctx, outside_behaviour, NULL, &addr), 0);
    spawned++;
    assert_int_equal(weft_port_on_close(addr, outside_on_close), 0);
    assert_int_equal(weft_port_start(addr, outside_behaviour), 0);
    weft_port_ref(addr); /* keep the loop up until the close arrives */
    assert_int_equal(weft_port_close(addr), 0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(spawned, 10);
  assert_int_equal(outside_closes, 10);
  finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  testutil_alloc_install();
  if (getenv("WEFT_TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("WEFT_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      T(many_actors),
      T(actor_ring),
      T(actors_on_a_worker),
      T(actor_stop_and_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
