/* test_node_close.c: a node's close completes before its loop may end.
 *
 * weft_node_close stops listeners, dialers and connections; their ends come
 * later (nng hands back its aios on its own threads; the loop transport's
 * handles close from the loop, a name being resolved finishes on libuv's
 * pool). Until the last one is back the node must keep its loop alive: else
 * weft_runtime_run returns with the node half closed (its close callback
 * never called) and the context's end waits for it by running a loop with
 * nothing alive, for ever. Seen from examples/node_down when the node was
 * closed from its monitor callback. Runs on both transports
 * (test_node_close_nng). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <weft.h>

#include "nodetest.h"
#include "testutil.h"

#define ROUNDS 30 /* the window is a race with the closes in flight: try it often */

static int closed_cbs;

static void on_node_closed(weft_node_t *node, void *data) {
  (void)node;
  (void)data;
  closed_cbs++;
}

/* Start a listening node (its accept is in flight in nng), close it at
 * once; the run must not return before the close callback. */
static void close_right_after_start_completes_within_run(void **state) {
  (void)state;
  for (int round = 0; round < ROUNDS; round++) {
    weft_runtime_t *rt;
    assert_int_equal(weft_runtime_new(&rt, NULL), 0);
    weft_ctx_t *ctx = weft_runtime_main(rt);
    const char *listen[] = {"tcp://127.0.0.1:0", NULL};
    weft_node_options_t o = {.transport = nodetest_transport(),
                             .name = "n", .listen = listen};
    weft_node_t *node;
    assert_int_equal(weft_node_start(ctx, &o, &node), 0);
    assert_true(weft_node_port(node, 0) > 0);
    closed_cbs = 0;
    assert_int_equal(weft_node_close(node, on_node_closed, NULL), 0);
    assert_int_equal(closed_cbs, 0); /* from the loop, never inside the call */
    assert_int_equal(weft_runtime_run(rt), 0);
    if (closed_cbs != 1)
      fail_msg("round %d: weft_runtime_run returned with the node's close callback called "
               "%d times (want 1): the node let its loop end while closing", round,
               closed_cbs);
    assert_int_equal(weft_runtime_free(rt), 0);
  }
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

/* The same with a dialer in flight (to a port nobody listens on: the dial
 * fails or is cancelled by the close). */
static void close_while_dialling_completes_within_run(void **state) {
  (void)state;
  for (int round = 0; round < ROUNDS; round++) {
    weft_runtime_t *rt;
    assert_int_equal(weft_runtime_new(&rt, NULL), 0);
    weft_ctx_t *ctx = weft_runtime_main(rt);
    const char *peers[] = {"tcp://127.0.0.1:1", NULL};
    weft_node_options_t o = {.transport = nodetest_transport(),
                             .name = "n", .peers = peers};
    weft_node_t *node;
    assert_int_equal(weft_node_start(ctx, &o, &node), 0);
    closed_cbs = 0;
    assert_int_equal(weft_node_close(node, on_node_closed, NULL), 0);
    assert_int_equal(weft_runtime_run(rt), 0);
    if (closed_cbs != 1)
      fail_msg("round %d: weft_runtime_run returned with the node's close callback called "
               "%d times (want 1)", round, closed_cbs);
    assert_int_equal(weft_runtime_free(rt), 0);
  }
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

/* The same with a host name being resolved (on libuv's pool, for the loop
 * transport: the close cancels it or waits for its answer). */
static void close_while_resolving_completes_within_run(void **state) {
  (void)state;
  for (int round = 0; round < ROUNDS; round++) {
    weft_runtime_t *rt;
    assert_int_equal(weft_runtime_new(&rt, NULL), 0);
    weft_ctx_t *ctx = weft_runtime_main(rt);
    const char *peers[] = {"tcp://localhost:1", NULL};
    weft_node_options_t o = {.transport = nodetest_transport(),
                             .name = "n", .peers = peers};
    weft_node_t *node;
    assert_int_equal(weft_node_start(ctx, &o, &node), 0);
    closed_cbs = 0;
    assert_int_equal(weft_node_close(node, on_node_closed, NULL), 0);
    assert_int_equal(weft_runtime_run(rt), 0);
    if (closed_cbs != 1)
      fail_msg("round %d: weft_runtime_run returned with the node's close callback called "
               "%d times (want 1)", round, closed_cbs);
    assert_int_equal(weft_runtime_free(rt), 0);
  }
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(close_right_after_start_completes_within_run),
      cmocka_unit_test(close_while_dialling_completes_within_run),
      cmocka_unit_test(close_while_resolving_completes_within_run),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
