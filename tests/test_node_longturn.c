/* test_node_longturn.c: a long turn of a node's loop is not a dead node.
 *
 * Node "a" (main context) and node "b" (a worker thread) run with a 200 ms
 * heartbeat. Once b is up and has answered a lookup (so each has heard the
 * other since the handshake), a's loop is blocked for 1.5 s (7.5 heartbeats)
 * in a callback, as a slow handler or a big checksum would. Neither side may
 * take the other for dead: a's pings go out from another thread while its
 * loop is busy (the node's pinger with the loop transport, nng's timer
 * thread with nng's), and a's own check does not count bytes that came
 * during the turn (and wait to be read) as silence. Without the pings, b
 * drops a after 200 ms (the test fails with the loop transport's pinger
 * off). Before the lookup, b would judge a by the handshake deadline (5 s)
 * and the turn would prove nothing. Runs on both transports
 * (test_node_longturn_nng). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <weft.h>

#include "nodetest.h"
#include "testutil.h"

#define HEARTBEAT_MS 200
#define TURN_MS 1500

static char a_url[64]; /* written before the worker starts, read by it */
static _Atomic int b_saw_a_down;
static _Atomic bool a_closing;
static int a_saw_b_down, a_saw_b_up;
static weft_node_t *a_node;
static uv_timer_t after;
static int lookup_status = 1;

/* ---- node b, on a worker thread ---------------------------------------------- */

static void b_closed(weft_node_t *node, void *data) {
  (void)node;
  weft_worker_exit(data, 0);
}

static void b_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer;
  (void)reason;
  if (up)
    return;
  if (!atomic_load(&a_closing)) /* a's own close looks like a death from here */
    atomic_fetch_add(&b_saw_a_down, 1);
  weft_node_close(node, b_closed, data);
}

static int b_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  const char *peers[] = {a_url, NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .name = "b", .peers = peers, .on_monitor = b_monitor, .data = ctx,
                           .heartbeat_ms = HEARTBEAT_MS};
  weft_node_t *node;
  return weft_node_start(ctx, &o, &node) == 0 ? 0 : 1;
}

/* ---- node a, on the main context ----------------------------------------------- */

static void on_after(uv_timer_t *t) {
  /* several heartbeats after the turn: still connected both ways */
  uv_close((uv_handle_t *)t, NULL);
  atomic_store(&a_closing, true);
  weft_node_close(a_node, NULL, NULL);
}

static void on_looked_up(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)port;
  (void)data;
  lookup_status = status;
  uint64_t until = uv_hrtime() + (uint64_t)TURN_MS * 1000000u;
  while (uv_hrtime() < until) {
  } /* the long turn */
  uv_timer_init(weft_ctx_loop(weft_ctx_current()), &after);
  uv_timer_start(&after, on_after, 3 * HEARTBEAT_MS, 0);
}

static void a_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)node;
  (void)reason;
  (void)data;
  (void)peer;
  if (!up) {
    a_saw_b_down += reason != WEFT_ECLOSED;
    return;
  }
  a_saw_b_up++;
  /* First a asks b something: b then has heard a past the handshake and
   * judges it by the heartbeat (until then the handshake deadline, 5 s,
   * bounds the wait, and the turn would prove nothing about the pings). */
  assert_int_equal(weft_node_lookup(node, "b", "nothing", 2000, on_looked_up, NULL), 0);
}

static void on_b_exit(weft_worker_t *w, int code) {
  (void)code;
  weft_worker_release(w);
}

static void a_long_loop_turn_does_not_drop_the_peers(void **state) {
  (void)state;
  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .name = "a", .listen = listen, .on_monitor = a_monitor,
                           .heartbeat_ms = HEARTBEAT_MS};
  assert_int_equal(weft_node_start(ctx, &o, &a_node), 0);
  snprintf(a_url, sizeof(a_url), "tcp://127.0.0.1:%d", weft_node_port(a_node, 0));
  weft_worker_options_t wo = {.entry = b_entry, .on_exit = on_b_exit};
  weft_worker_t *w;
  assert_int_equal(weft_worker_spawn(ctx, &wo, &w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(a_saw_b_up, 1);
  assert_int_equal(lookup_status, WEFT_ENOENTRY); /* b answered: it heard a */
  if (atomic_load(&b_saw_a_down) != 0 || a_saw_b_down != 0)
    fail_msg("a %d ms loop turn with a %d ms heartbeat: b took a for dead %d time(s), a took "
             "b for dead %d time(s)",
             TURN_MS, HEARTBEAT_MS, atomic_load(&b_saw_a_down), a_saw_b_down);
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_long_loop_turn_does_not_drop_the_peers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
