/* test_sup_watch.c: supervision across nodes (weft/supervisor.h,
 * WEFT_SUP_WATCH and standby children) with real processes: this binary
 * started again as `--offprov NAME URL` is a provider node of the service
 * "offload" (tests/support/offprov.c).
 *
 * What is shown: a supervisor (rest_for_one) watches "offload", whose only
 * provider is the remote node p0, and holds a standby child: a local
 * provider process. p0 is SIGKILLed under a stream of idempotent remote
 * pool tasks: the watch exits with WEFT_EPEERDIED, the strategy starts the
 * local provider, and every task completes (0 failures); the longest gap
 * between two completions is printed and bounded. A watch child without
 * node or service is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "offprov.h"
#include "testutil.h"
#include "weft.h"

#define NTASK 300
#define KILL_AT 60
#define MAX_GAP_MS 10000 /* detection (<= 1.5 s heartbeat) + back-off + start + discovery */

static char self_path[4096];

static struct {
  weft_runtime_t *rt;
  uv_loop_t *loop;
  weft_ctx_t *ctx;
  weft_node_t *node;
  char url[64];
  uv_process_t proc;
  bool proc_exited;
  uv_timer_t ticker;
  bool node_closed, ticker_closed, pool_closed, sup_closed;
  int peers_up;
  weft_pool_t *pool;
  uint32_t sent, done, ok, failed, on_p0, on_local, local_before_kill;
  int last_err;
  uint64_t last_done_ns, max_gap_ns;
  uint32_t watch_exits, standby_starts;
  int watch_err;
  bool killed;
} H;

static void on_tick(uv_timer_t *t) { (void)t; }

static bool spin_until(const bool *flag, const uint32_t *count, uint32_t want, uint64_t ms,
                       const char *what) {
  return offprov_wait(H.loop, flag, count, want, ms, what);
}

static void on_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)node;
  (void)peer;
  (void)reason;
  (void)data;
  H.peers_up += up ? 1 : -1;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  (void)status;
  (void)sig;
  H.proc_exited = true;
  uv_close((uv_handle_t *)p, NULL);
}

static void on_sup_exit(weft_sup_t *sup, weft_sup_child_t *child, const weft_sup_exit_t *why,
                        bool final) {
  (void)sup;
  (void)final;
  if (weft_sup_child_kind(child) == WEFT_SUP_WATCH && !why->stopped) {
    H.watch_exits++;
    H.watch_err = why->error;
    fprintf(stderr, "watch exit: %s\n", why->message);
  }
}

static void on_sup_start(weft_sup_t *sup, weft_sup_child_t *child) {
  (void)sup;
  if (strcmp(weft_sup_child_id(child), "local-provider") == 0)
    H.standby_starts++;
}

static void on_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data);

static void submit_one(void) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "n", 5000);
  weft_msg_put_u64(m, "seed", H.sent);
  weft_pool_task_options_t t = {.name = "mix", .args = m, .flags = WEFT_POOL_IDEMPOTENT};
  int rc = weft_pool_submit(H.pool, &t, on_done, (void *)(uintptr_t)H.sent, NULL);
  CHECK_RC(rc, 0);
  if (rc != 0) {
    weft_msg_free(m);
    return;
  }
  H.sent++;
}

static void on_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  uint64_t now = uv_hrtime();
  H.done++;
  if (err == 0) {
    uint64_t v = 0;
    char node[16] = "";
    weft_msg_get_u64(result, "v", &v);
    weft_msg_get_strcpy(result, "node", node, sizeof(node), NULL);
    CHECK(v == offprov_expected(5000, (uintptr_t)data));
    H.ok++;
    if (strcmp(node, "p0") == 0)
      H.on_p0++;
    else if (strcmp(node, "local1") == 0)
      H.on_local++;
    if (H.last_done_ns != 0 && now - H.last_done_ns > H.max_gap_ns)
      H.max_gap_ns = now - H.last_done_ns;
    H.last_done_ns = now;
  } else {
    H.failed++;
    H.last_err = err;
  }
  weft_msg_free(result);
  if (H.done == KILL_AT) {
    H.local_before_kill = H.on_local;
    CHECK_RC(uv_process_kill(&H.proc, SIGKILL), 0);
    H.killed = true;
  }
  if (H.sent < NTASK)
    submit_one();
}

static void on_pool_closed(weft_pool_t *pool) {
  (void)pool;
  H.pool_closed = true;
}
static void on_sup_closed(weft_sup_t *sup) {
  (void)sup;
  H.sup_closed = true;
}
static void on_node_closed(weft_node_t *node, void *data) {
  (void)node;
  (void)data;
  H.node_closed = true;
}
static void on_ticker_closed(uv_handle_t *h) {
  (void)h;
  H.ticker_closed = true;
}

static void remote_provider_lost_starts_a_local_one(void **state) {
  (void)state;
  memset(&H, 0, sizeof(H));
  H.rt = ktest_live_runtime_new(NULL);
  H.ctx = weft_runtime_main(H.rt);
  H.loop = weft_ctx_loop(H.ctx);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t no = {.name = "client", .listen = listen, .on_monitor = on_monitor};
  assert_int_equal(weft_node_start(H.ctx, &no, &H.node), 0);
  snprintf(H.url, sizeof(H.url), "tcp://127.0.0.1:%d", weft_node_port(H.node, 0));
  uv_timer_init(H.loop, &H.ticker);
  uv_timer_start(&H.ticker, on_tick, 20, 20);

  char *args[] = {self_path, "--offprov", "p0", H.url, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = self_path, .args = args, .exit_cb = on_exit_cb,
                             .stdio = stdio, .stdio_count = 3};
  assert_int_equal(uv_spawn(H.loop, &H.proc, &po), 0);

  /* the supervisor: a watch on "offload", then the standby local provider */
  const char *local_args[] = {self_path, "--offprov", "local1", H.url, NULL};
  weft_sup_child_spec_t kids[2] = {
      {.id = "watch", .kind = WEFT_SUP_WATCH, .node = H.node, .service = OFFPROV_SERVICE},
      {.id = "local-provider", .kind = WEFT_SUP_PROCESS, .file = self_path,
       .args = local_args, .standby = true, .shutdown_ms = 5000},
  };
  weft_sup_options_t so = {.strategy = WEFT_SUP_REST_FOR_ONE, .children = kids, .nchildren = 2,
                           .on_child_exit = on_sup_exit, .on_child_start = on_sup_start};
  weft_sup_t *sup;
  assert_int_equal(weft_sup_new(H.ctx, &so, &sup), 0);
  assert_false(weft_sup_child_running(weft_sup_child_at(sup, 1)));
  assert_int_equal(H.standby_starts, 0);

  weft_pool_options_t o = {.node = H.node, .service = OFFPROV_SERVICE, .size = 4,
                           .attempt_timeout_ms = 20000, .max_attempts = 5};
  assert_int_equal(weft_pool_new(H.ctx, &o, &H.pool), 0);
  offprov_register(H.pool);
  for (int i = 0; i < 4; i++)
    submit_one();
  assert_true(spin_until(NULL, &H.done, NTASK, 120000, "every task"));

  fprintf(stderr,
          "p0 SIGKILLed after %u tasks: %u ok (p0 %u, local1 %u), %u failed (last %s), watch "
          "exits %u, local provider starts %u, longest gap between completions %llu ms\n",
          KILL_AT, H.ok, H.on_p0, H.on_local, H.failed, weft_err_name(H.last_err),
          H.watch_exits, H.standby_starts, (unsigned long long)(H.max_gap_ns / 1000000u));
  assert_int_equal(H.failed, 0);
  assert_int_equal(H.ok, NTASK);
  assert_int_equal(H.local_before_kill, 0); /* standby: nothing ran there before */
  assert_true(H.on_local > 0);
  assert_true(H.on_p0 >= KILL_AT - 4);
  assert_int_equal(H.watch_exits, 1);
  assert_int_equal(H.watch_err, WEFT_EPEERDIED);
  assert_int_equal(H.standby_starts, 1);
  assert_true(weft_sup_child_running(weft_sup_child_at(sup, 0)));
  assert_true(H.max_gap_ns / 1000000u < MAX_GAP_MS);

  assert_int_equal(weft_pool_close(H.pool, on_pool_closed), 0);
  assert_true(spin_until(&H.pool_closed, NULL, 0, 30000, "the pool's close"));
  weft_pool_release(H.pool);
  assert_int_equal(weft_sup_close(sup, on_sup_closed), 0);
  assert_true(spin_until(&H.sup_closed, NULL, 0, 30000, "the supervisor's close"));
  assert_int_equal(weft_node_close(H.node, on_node_closed, NULL), 0);
  assert_true(spin_until(&H.node_closed, NULL, 0, 30000, "the node's close"));
  assert_true(spin_until(&H.proc_exited, NULL, 0, 30000, "p0's exit"));
  uv_close((uv_handle_t *)&H.ticker, on_ticker_closed);
  assert_true(spin_until(&H.ticker_closed, NULL, 0, 5000, "the ticker's close"));
  ktest_live_finish(H.rt);
}

static void watch_spec_is_checked(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_sup_child_spec_t kid = {.kind = WEFT_SUP_WATCH, .service = "x"};
  weft_sup_options_t so = {.children = &kid, .nchildren = 1};
  weft_sup_t *sup;
  assert_int_equal(weft_sup_new(ctx, &so, &sup), WEFT_EINVAL);
  ktest_live_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--offprov") == 0)
    return offprov_main(argv[2], argv[3]);
  size_t len = sizeof(self_path);
  if (uv_exepath(self_path, &len) != 0)
    return 2;
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(remote_provider_lost_starts_a_local_one),
      T(watch_spec_is_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
