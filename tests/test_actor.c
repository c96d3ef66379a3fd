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

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "weft.h"

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
  uint64_t v = ktest_msg_value(m);
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
  CHECK(ktest_msg_value(m) == (uintptr_t)weft_port_data(addr));
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
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&many, 0, sizeof(many));
  many.n = ktest_scaled(100000, 5000);
  keep_open(ctx);
  uint64_t t0 = uv_hrtime();
  for (uint64_t i = 0; i < many.n; i++) {
    weft_port_t *addr = NULL;
    assert_int_equal(weft_actor_spawn(ctx, many_behaviour, (void *)(uintptr_t)i, &addr), 0);
    weft_port_set_data(addr, (void *)(uintptr_t)i);
    assert_int_equal(weft_port_on_close(addr, many_on_close), 0);
    assert_int_equal(weft_port_start(addr, many_on_reply), 0);
    assert_int_equal(weft_port_post(addr, ktest_msg_u64(i)), 0);
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
  assert_int_equal(s.ports_open, 1); /* keep[0]: no close callback, so it stays open until closed */
  ktest_finish_runtime(rt);
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
  uint64_t v = ktest_msg_value(m);
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
      CHECK_RC(weft_port_post(ring[i].next, ktest_msg_u64(STOP)), 0);
    return;
  }
  CHECK_RC(weft_port_post(a->next, ktest_msg_u64(v - 1)), 0);
}

static void actor_ring(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(ring, 0, sizeof(ring));
  memset(&rs, 0, sizeof(rs));
  uint64_t hops = ktest_scaled(100000, 10000);
  keep_open(ctx);
  weft_port_t *addr[RING];
  for (int i = 0; i < RING; i++)
    assert_int_equal(weft_actor_spawn(ctx, ring_behaviour, &ring[i], &addr[i]), 0);
  for (int i = 0; i < RING; i++)
    ring[i].next = addr[(i + 1) % RING];
  /* Hops counted down to 0: hops + 1 deliveries. */
  assert_int_equal(weft_port_post(addr[0], ktest_msg_u64(hops)), 0);
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
  ktest_finish_runtime(rt); /* closes the 1000 addresses */
}

/* ---- actors on a worker, addressed from main ------------------------------------- */

#define WA 1000

static struct {
  uint64_t stopped;          /* worker thread */
  uint64_t replies, closes;  /* main thread */
  int exits, code;
} wa;

static void wa_behaviour(weft_port_t *self, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
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
  CHECK(ktest_msg_value(m) == (uintptr_t)weft_port_data(addr));
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
    CHECK_RC(weft_port_post(addr, ktest_msg_u64(i)), 0);
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
  weft_runtime_t *rt = ktest_new_runtime();
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
  ktest_finish_runtime(rt);
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
  weft_runtime_t *rt = ktest_new_runtime();
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
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(many_actors),
      T(actor_ring),
      T(actors_on_a_worker),
      T(actor_stop_and_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
