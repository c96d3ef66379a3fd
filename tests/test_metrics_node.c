/* test_metrics_node.c: a node's per-peer figures (weft/metrics.h, source
 * kind "node", label peer) against what crossed: node "a" on the main
 * context sends N messages of known size (a 102-byte payload, and a
 * 1000-byte buffer on every other one) to a port "sink" published by node
 * "b" on a worker thread of the same runtime, over 127.0.0.1. One snapshot
 * then shows, exactly, N messages and their bytes sent by a to peer b and
 * received by b from peer a, the channels open per peer, no credit stall,
 * and the Prometheus lines labelled by peer. Then a floods a port of b that
 * takes only 16 and is never read: the channel runs out of credit, and the
 * stall shows.
 *
 * Waits poll snapshots from a timer with a bounded deadline; the test ends
 * with weft_runtime_free() == 0, no CHECK failed and nothing leaked. */
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

#define N 200u
#define PAYLOAD 102u /* bin8 of 100 bytes */
#define BUF 1000u
#define DEADLINE_NS (30ull * 1000000000u)
#define SLOW_HWM 16u
#define SLOW_POSTS 1100u /* past the node's default window (1024) */

static char a_url[64]; /* written before the worker starts */
static atomic_uint_fast64_t sunk;

typedef struct {
  weft_runtime_t *rt;
  weft_node_t *a;
  weft_port_t *sink, *slow;
  int phase;
  double stalls_after, sent_after, received_after;
  uv_timer_t poll;
  uint64_t deadline;
  bool sent, seen, timed_out;
  double a_msgs, a_bytes, b_msgs, b_bytes, a_chans, b_chans, a_stalls;
  char *prom;
} run_t;

static run_t R;

/* ---- node b, on a worker thread ---------------------------------------------------- */

static void sink_cb(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  atomic_fetch_add(&sunk, 1);
}

static void b_closed(weft_node_t *node, void *data) {
  (void)node;
  weft_worker_exit(data, 0);
}

static weft_port_t *slow[2]; /* b's: slow[1] is never started, bound SLOW_HWM */

static void b_closed_slow(weft_node_t *node, void *data) {
  weft_port_close(slow[0]);
  weft_port_close(slow[1]);
  b_closed(node, data);
}

static void b_monitor_slow(weft_node_t *node, const char *peer, bool up, int reason,
                           void *data) {
  (void)peer;
  (void)reason;
  if (!up)
    weft_node_close(node, b_closed_slow, data);
}

static int b_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  const char *peers[] = {a_url, NULL};
  weft_node_options_t o = {.name = "b", .peers = peers, .on_monitor = b_monitor_slow,
                           .data = ctx};
  weft_node_t *node;
  if (weft_node_start(ctx, &o, &node) != 0)
    return 1;
  weft_port_t *sink;
  if (weft_actor_spawn(ctx, sink_cb, NULL, &sink) != 0 || weft_channel_new(ctx, slow) != 0 ||
      weft_port_set_hwm(slow[1], SLOW_HWM, 0) != 0)
    return 1;
  return weft_node_publish(node, "sink", sink) == 0 && weft_node_publish(node, "slow", slow[0]) == 0
             ? 0
             : 1;
}

/* ---- node a, on the main context ---------------------------------------------------- */

static weft_msg_t *record(uint64_t i) {
  uint8_t p[PAYLOAD] = {0xc4, (uint8_t)(PAYLOAD - 2)};
  memset(p + 2, (int)i, PAYLOAD - 2);
  weft_msg_t *m;
  CHECK_RC(weft_msg_new(&m), 0);
  CHECK_RC(weft_msg_set_payload(m, p, sizeof(p)), 0);
  if (i % 2 == 0) {
    weft_buf_t *b;
    CHECK_RC(weft_buf_new(&b, BUF), 0);
    memset(weft_buf_ptr(b), 7, BUF);
    CHECK_RC(weft_msg_add_buf(m, b), 0);
    weft_buf_free(b);
  }
  return m;
}

static void on_sink(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  CHECK_RC(status, 0);
  if (status != 0)
    return;
  R.sink = port;
  for (uint64_t i = 0; i < N; i++) {
    weft_msg_t *m = record(i);
    int rc = weft_port_post(port, m);
    CHECK_RC(rc, 0);
    if (rc)
      weft_msg_free(m);
  }
  R.sent = true;
}

static void on_slow(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  CHECK_RC(status, 0);
  if (status != 0)
    return;
  R.slow = port;
  for (uint64_t i = 0; i < SLOW_POSTS; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(0)), 0);
}

static void a_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)reason;
  (void)data;
  if (up && strcmp(peer, "b") == 0 && R.sink == NULL)
    CHECK_RC(weft_node_lookup(node, "b", "sink", 5000, on_sink, NULL), 0);
}

static const weft_metrics_value_t *peer_value(const weft_metrics_snapshot_t *s, const char *node,
                                              const char *name, const char *peer) {
  for (size_t i = 0; i < s->nvalues; i++) {
    const weft_metrics_value_t *v = &s->values[i];
    if (strcmp(v->kind, "node") == 0 && strcmp(v->source, node) == 0 &&
        strcmp(v->name, name) == 0 && strcmp(v->label_key, "peer") == 0 &&
        strcmp(v->label_value, peer) == 0)
      return v;
  }
  return NULL;
}

static double val(const weft_metrics_snapshot_t *s, const char *node, const char *name,
                  const char *peer) {
  const weft_metrics_value_t *v = peer_value(s, node, name, peer);
  return v ? v->value : -1;
}

static void finish(void) {
  uv_close((uv_handle_t *)&R.poll, NULL);
  if (R.sink)
    weft_port_close(R.sink);
  if (R.slow)
    weft_port_close(R.slow);
  weft_node_close(R.a, NULL, NULL); /* b sees a go, closes, its worker exits */
}

static void poll_cb(uv_timer_t *t) {
  (void)t;
  if (uv_hrtime() > R.deadline) {
    R.timed_out = true;
    finish();
    return;
  }
  if (!R.sent || atomic_load(&sunk) < N)
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  if (R.phase == 1) { /* the slow port's channel runs out of credit */
    R.stalls_after = val(s, "a", "peer_credit_stalls", "b");
    R.sent_after = val(s, "a", "peer_messages_sent", "b");
    R.received_after = val(s, "b", "peer_messages_received", "a");
    weft_metrics_snapshot_free(s);
    if (R.stalls_after >= 1 && R.sent_after == R.received_after && R.sent_after > N)
      finish();
    return;
  }
  double want = N * (double)PAYLOAD + (N / 2) * (double)BUF;
  R.a_msgs = val(s, "a", "peer_messages_sent", "b");
  R.a_bytes = val(s, "a", "peer_bytes_sent", "b");
  R.b_msgs = val(s, "b", "peer_messages_received", "a");
  R.b_bytes = val(s, "b", "peer_bytes_received", "a");
  R.a_chans = val(s, "a", "peer_channels", "b");
  R.b_chans = val(s, "b", "peer_channels", "a");
  R.a_stalls = val(s, "a", "peer_credit_stalls", "b");
  if (R.a_msgs == N && R.b_msgs == N && R.a_bytes == want && R.b_bytes == want) {
    size_t len;
    CHECK_RC(weft_metrics_prometheus(s, &R.prom, &len), 0);
    R.seen = true;
  }
  weft_metrics_snapshot_free(s);
  if (R.seen) {
    R.phase = 1;
    CHECK_RC(weft_node_lookup(R.a, "b", "slow", 5000, on_slow, NULL), 0);
  }
}

static void on_b_exit(weft_worker_t *w, int code) {
  CHECK(code == 0);
  weft_worker_release(w);
}

static void peer_figures_are_exact(void **state) {
  (void)state;
  memset(&R, 0, sizeof(R));
  atomic_store(&sunk, 0);
  R.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "a", .listen = listen, .on_monitor = a_monitor};
  assert_int_equal(weft_node_start(ctx, &o, &R.a), 0);
  snprintf(a_url, sizeof(a_url), "tcp://127.0.0.1:%d", weft_node_port(R.a, 0));
  weft_worker_options_t wo = {.entry = b_entry, .on_exit = on_b_exit};
  weft_worker_t *w;
  assert_int_equal(weft_worker_spawn(ctx, &wo, &w), 0);
  R.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &R.poll);
  uv_timer_start(&R.poll, poll_cb, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  double want = N * (double)PAYLOAD + (N / 2) * (double)BUF;
  fprintf(stderr,
          "figure: %u messages, %.0f bytes of payload and buffers: a->b sent %.0f msgs %.0f "
          "bytes; b<-a received %.0f msgs %.0f bytes; channels a:%.0f b:%.0f; a's credit "
          "stalls %.0f\n",
          N, want, R.a_msgs, R.a_bytes, R.b_msgs, R.b_bytes, R.a_chans, R.b_chans, R.a_stalls);
  assert_false(R.timed_out);
  assert_true(R.seen);
  assert_true(R.a_chans >= 1 && R.b_chans >= 1);
  assert_true(R.a_stalls == 0); /* the sink's channel never ran out of credit */
  fprintf(stderr, "figure: %u posts to a port that takes %u: a's credit stalls %.0f, sent %.0f, "
          "b received %.0f\n", SLOW_POSTS, SLOW_HWM, R.stalls_after, R.sent_after,
          R.received_after);
  assert_true(R.stalls_after >= 1);
  assert_true(R.sent_after < N + SLOW_POSTS); /* held back by the window */
  char line[160];
  snprintf(line, sizeof(line), "weft_node_peer_messages_sent_total{node=\"a\",peer=\"b\"} %u\n",
           N);
  assert_non_null(strstr(R.prom, line));
  snprintf(line, sizeof(line),
           "weft_node_peer_bytes_received_total{node=\"b\",peer=\"a\"} %.0f\n", want);
  assert_non_null(strstr(R.prom, line));
  assert_non_null(strstr(R.prom, "# TYPE weft_node_peer_credit_stalls_total counter\n"));
  weft_free(R.prom);
  ktest_finish_runtime(R.rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(peer_figures_are_exact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
