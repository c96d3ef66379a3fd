/* test_metrics_http_top.c: `weft-top --once` (tools/weft-top, run with node)
 * against a live runtime whose endpoint shows every section it draws:
 * contexts (main, a worker), a weft child process with its own contexts as
 * it reported them over its channel, and two nodes (a on the main context,
 * b on a worker thread) that exchanged a known number of messages.
 *
 * The screen must show: the main row; under CHILDREN the child's line, the
 * age of its answer and its own main and worker-1 rows, then the child's own
 * child (a grandchild, as the child reported it); under NODES a line
 * per peer with the exact message counts each way. Skipped when node is not
 * installed. This binary is also the child (WEFT_ENTRY=kid) and its child
 * (grandkid).
 *
 * Waits poll snapshots from a timer with a bounded deadline; weft-top gets
 * a 60 s budget of its own (it exits after two fetches 300 ms apart). */
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
#include "weft/metrics_http.h"

#define NM 150u /* node a -> b */
#define K 400u  /* the child's main -> its worker */
#define DEADLINE_NS (60ull * 1000000000u)

static const char *self_argv0;

/* ---- the child: a weft program with a worker ------------------------------------ */

static weft_worker_t *kid_w;
static weft_child_t *grandkid;
static const char *const *self_args(void);

/* The grandchild: a weft program that ends when its channel does. */
static weft_port_message_cb kid_drop_cb(void);
static int grandkid_main(void) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 3;
  weft_port_t *pp = weft_runtime_parent_port(rt);
  if (pp == NULL || weft_port_start(pp, kid_drop_cb()) != 0)
    return 4;
  return weft_runtime_run(rt) == 0 && weft_runtime_free(rt) == 0 ? 0 : 6;
}

static void kid_drop(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static weft_port_message_cb kid_drop_cb(void) { return kid_drop; }

static int kid_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), kid_drop);
}

static void kid_parent_closed(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  (void)info;
  weft_worker_terminate(kid_w);
  if (grandkid != NULL && weft_child_port(grandkid) != NULL)
    weft_port_close(weft_child_port(grandkid)); /* it ends with its channel */
}

static void grandkid_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  (void)status;
  (void)sig;
  grandkid = NULL;
}

static void kid_worker_exit(weft_worker_t *w, int code) {
  (void)code;
  weft_worker_release(w);
}

static int kid_main(void) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 3;
  weft_port_t *pp = weft_runtime_parent_port(rt);
  weft_worker_options_t o = {.entry = kid_worker, .on_exit = kid_worker_exit,
                             .port_hwm_msgs = K + 10};
  weft_child_options_t go = {.entry_name = "grandkid", .args = self_args(),
                             .on_exit = grandkid_exit};
  if (pp == NULL || weft_worker_spawn(weft_runtime_main(rt), &o, &kid_w) != 0 ||
      weft_port_on_close(pp, kid_parent_closed) != 0 || weft_port_start(pp, kid_drop) != 0 ||
      weft_child_spawn(weft_runtime_main(rt), &go, &grandkid) != 0)
    return 4;
  for (uint64_t i = 0; i < K; i++)
    if (weft_port_post(weft_worker_port(kid_w), ktest_msg_u64(i)) != 0)
      return 5;
  return weft_runtime_run(rt) == 0 && weft_runtime_free(rt) == 0 ? 0 : 6;
}

/* ---- node b on a worker thread ---------------------------------------------------- */

static char a_url[64];

static void b_closed(weft_node_t *node, void *data) {
  (void)node;
  weft_worker_exit(data, 0);
}

static void b_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer;
  (void)reason;
  if (!up)
    weft_node_close(node, b_closed, data);
}

static int b_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  const char *peers[] = {a_url, NULL};
  weft_node_options_t o = {.name = "b", .peers = peers, .on_monitor = b_monitor, .data = ctx};
  weft_node_t *node;
  weft_port_t *sink;
  if (weft_node_start(ctx, &o, &node) != 0 || weft_actor_spawn(ctx, kid_drop, NULL, &sink) != 0)
    return 1;
  return weft_node_publish(node, "sink", sink) == 0 ? 0 : 1;
}

/* ---- the runner ---------------------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_metrics_http_t *http;
  weft_node_t *a;
  weft_port_t *sink;
  weft_child_t *kid, *top;
  int kid_pid, port;
  uv_timer_t poll;
  uint64_t deadline;
  bool timed_out, kid_exited, top_exited, http_closed, top_started;
  int64_t top_status;
  char screen[32768];
  size_t screen_len;
} run_t;

static run_t R;

static void on_sink(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  CHECK_RC(status, 0);
  if (status)
    return;
  R.sink = port;
  for (uint64_t i = 0; i < NM; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(i)), 0);
}

static void a_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)reason;
  (void)data;
  if (up && strcmp(peer, "b") == 0 && R.sink == NULL)
    CHECK_RC(weft_node_lookup(node, "b", "sink", 10000, on_sink, NULL), 0);
}

static void on_http_closed(void *data) { *(bool *)data = true; }

static void shut_down(void) {
  uv_close((uv_handle_t *)&R.poll, NULL);
  if (R.sink)
    weft_port_close(R.sink);
  weft_node_close(R.a, NULL, NULL);
  weft_port_t *kp = R.kid ? weft_child_port(R.kid) : NULL;
  if (kp)
    weft_port_close(kp);
  CHECK_RC(weft_metrics_http_close(R.http, on_http_closed, &R.http_closed), 0);
}

static void on_kid_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  CHECK(status == 0 && sig == 0);
  R.kid_exited = true;
  R.kid = NULL; /* the handle is gone once this returns */
}

static void on_top_output(weft_child_t *c, int fd, const char *p, size_t n) {
  (void)c;
  if (p == NULL || fd != 1)
    return;
  size_t room = sizeof(R.screen) - 1 - R.screen_len;
  n = n < room ? n : room;
  memcpy(R.screen + R.screen_len, p, n);
  R.screen_len += n;
  R.screen[R.screen_len] = '\0';
}

static void on_top_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  (void)sig;
  R.top_exited = true;
  R.top_status = status;
  shut_down();
}

static void start_top(void) {
  char url[64], script[512];
  snprintf(url, sizeof(url), "127.0.0.1:%d", R.port);
  snprintf(script, sizeof(script), "%s/tools/weft-top", WEFT_TEST_SOURCE_DIR);
  const char *args[] = {WEFT_NODE_EXECUTABLE, script, "--once", "--interval", "300",
                        "--no-color", url, NULL};
  weft_child_options_t o = {.file = WEFT_NODE_EXECUTABLE, .args = args,
                            .channel = WEFT_CHANNEL_NONE, .on_exit = on_top_exit,
                            .on_output = on_top_output};
  o.stdio[0] = WEFT_STDIO_IGNORE;
  o.stdio[1] = WEFT_STDIO_PIPE;
  CHECK_RC(weft_child_spawn(weft_runtime_main(R.rt), &o, &R.top), 0);
  R.top_started = true;
}

static double node_value(const weft_metrics_snapshot_t *s, const char *node, const char *name,
                         const char *peer) {
  for (size_t i = 0; i < s->nvalues; i++) {
    const weft_metrics_value_t *v = &s->values[i];
    if (strcmp(v->kind, "node") == 0 && strcmp(v->source, node) == 0 &&
        strcmp(v->name, name) == 0 && strcmp(v->label_value, peer) == 0)
      return v->value;
  }
  return -1;
}

/* Start weft-top once everything it should show is in a snapshot. */
static void poll_cb(uv_timer_t *t) {
  (void)t;
  if (R.top_started)
    return;
  if (uv_hrtime() > R.deadline) {
    R.timed_out = true;
    shut_down();
    return;
  }
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  bool kid_worker_seen = false, grandkid_seen = false;
  for (size_t i = 0; i < s->nctx; i++) {
    kid_worker_seen |= s->ctx[i].pid == R.kid_pid && strcmp(s->ctx[i].name, "worker-1") == 0 &&
                       s->ctx[i].msgs_in == K;
    grandkid_seen |= strcmp(s->ctx[i].child, "kid/grandkid") == 0;
  }
  bool nodes_seen = node_value(s, "a", "peer_messages_sent", "b") == NM &&
                    node_value(s, "b", "peer_messages_received", "a") == NM;
  weft_metrics_snapshot_free(s);
  if (kid_worker_seen && grandkid_seen && nodes_seen)
    start_top();
}

static const char *const *self_args(void) {
  static const char *args[2];
  args[0] = self_argv0;
  args[1] = NULL;
  return args;
}

static void on_b_exit(weft_worker_t *w, int code) {
  CHECK(code == 0);
  weft_worker_release(w);
}

static bool has_line(const char *screen, const char *start, const char *contains) {
  size_t n = strlen(start);
  for (const char *l = screen; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    const char *end = strchr(l, '\n');
    size_t len = end ? (size_t)(end - l) : strlen(l);
    if (len >= n && strncmp(l, start, n) == 0) {
      char line[512];
      snprintf(line, sizeof(line), "%.*s", (int)len, l);
      if (contains == NULL || strstr(line, contains) != NULL)
        return true;
    }
  }
  return false;
}

static void weft_top_shows_children_and_peers(void **state) {
  (void)state;
  if (WEFT_NODE_EXECUTABLE[0] == '\0')
    skip();
  memset(&R, 0, sizeof(R));
  R.rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  assert_int_equal(weft_metrics_http_start(ctx, &(weft_metrics_http_options_t){0}, &R.http), 0);
  R.port = weft_metrics_http_port(R.http);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t no = {.name = "a", .listen = listen, .on_monitor = a_monitor};
  assert_int_equal(weft_node_start(ctx, &no, &R.a), 0);
  snprintf(a_url, sizeof(a_url), "tcp://127.0.0.1:%d", weft_node_port(R.a, 0));
  weft_worker_t *w;
  assert_int_equal(weft_worker_spawn(ctx, &(weft_worker_options_t){.entry = b_entry,
                                                                    .on_exit = on_b_exit}, &w), 0);
  weft_child_options_t ko = {.entry_name = "kid", .args = self_args(), .on_exit = on_kid_exit};
  assert_int_equal(weft_child_spawn(ctx, &ko, &R.kid), 0);
  R.kid_pid = weft_child_pid(R.kid);
  R.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &R.poll);
  uv_timer_start(&R.poll, poll_cb, 20, 20);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr, "weft-top --once (exit %lld):\n%s", (long long)R.top_status, R.screen);
  assert_false(R.timed_out);
  assert_true(R.top_exited && R.kid_exited && R.http_closed);
  assert_int_equal(R.top_status, 0);
  assert_true(strstr(R.screen, "(+3 in children)") != NULL);
  assert_true(has_line(R.screen, "  kid/grandkid  ", "(reported by its parent)"));
  assert_true(has_line(R.screen, "main ", "["));
  char who[64];
  snprintf(who, sizeof(who), "  child-%d ", R.kid_pid);
  assert_true(has_line(R.screen, who, "pid "));
  assert_true(has_line(R.screen, "    own view (kid): answered ", " ms ago"));
  assert_true(has_line(R.screen, "    main ", "["));
  assert_true(has_line(R.screen, "    worker-1 ", "["));
  char out[64];
  snprintf(out, sizeof(out), " out %u msgs, ", NM);
  assert_true(has_line(R.screen, "    peer b ", out));
  snprintf(out, sizeof(out), " in %u msgs, ", NM);
  assert_true(has_line(R.screen, "    peer a ", out));
  ktest_live_finish(R.rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  (void)argc;
  self_argv0 = argv[0];
  const char *entry = getenv("WEFT_ENTRY");
  if (entry != NULL && strcmp(entry, "kid") == 0)
    return kid_main();
  if (entry != NULL && strcmp(entry, "grandkid") == 0)
    return grandkid_main();
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(weft_top_shows_children_and_peers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
