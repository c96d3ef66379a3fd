/* test_pool_remote.c: remote offload (weft/pool.h, "Remote offload"): the
 * same task code on a local pool and on provider processes (this binary
 * started again as `--offprov NAME URL`, tests/support/offprov.c), which
 * dial the test's node over tcp on 127.0.0.1 and serve their pool as the
 * service "offload".
 *
 * What is shown: the same tasks, submitted the same way, give the same
 * results locally and remotely, and the remote ones are spread over both
 * providers; buffers travel as args; a provider SIGKILLed mid-batch costs no
 * idempotent task (each completes, with the right result, some after a
 * retry) while tasks not flagged that it held fail with WEFT_EPEERDIED;
 * a name the provider lacks, a task timeout, and wrong use at the call. */
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

#define NTASK 400
#define MAXP 2

static char self_path[4096];

typedef struct {
  uv_process_t proc;
  bool spawned, exited;
  int64_t status;
  int sig;
} proc_t;

static struct {
  weft_runtime_t *rt;
  uv_loop_t *loop;
  weft_ctx_t *ctx;
  weft_node_t *node;
  char url[64];
  proc_t procs[MAXP];
  uv_timer_t ticker;
  bool node_closed, ticker_closed, pool_closed;
  int peers_up;
  /* a batch */
  weft_pool_t *pool;
  uint32_t total, done, ok, wrong, peerdied, other_err;
  int last_err;
  uint64_t results[NTASK];
  uint32_t per[MAXP + 1]; /* by node: p0, p1, local */
  uint32_t kill_at;
  int kill_who;
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

static void setup_node(void) {
  memset(&H, 0, sizeof(H));
  H.rt = ktest_live_runtime_new(NULL);
  H.ctx = weft_runtime_main(H.rt);
  H.loop = weft_ctx_loop(H.ctx);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "client", .listen = listen, .on_monitor = on_monitor};
  assert_int_equal(weft_node_start(H.ctx, &o, &H.node), 0);
  snprintf(H.url, sizeof(H.url), "tcp://127.0.0.1:%d", weft_node_port(H.node, 0));
  uv_timer_init(H.loop, &H.ticker);
  uv_timer_start(&H.ticker, on_tick, 20, 20);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  proc_t *pr = (proc_t *)(void *)p;
  pr->exited = true;
  pr->status = status;
  pr->sig = sig;
  uv_close((uv_handle_t *)p, NULL);
}

static void spawn_provider(int i) {
  char name[8];
  snprintf(name, sizeof(name), "p%d", i);
  char *args[] = {self_path, "--offprov", name, H.url, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = self_path, .args = args, .exit_cb = on_exit_cb,
                             .stdio = stdio, .stdio_count = 3};
  memset(&H.procs[i], 0, sizeof(H.procs[i]));
  assert_int_equal(uv_spawn(H.loop, &H.procs[i].proc, &po), 0);
  H.procs[i].spawned = true;
}

static void on_pool_closed(weft_pool_t *pool) {
  (void)pool;
  H.pool_closed = true;
}

static void close_pool(void) {
  H.pool_closed = false;
  assert_int_equal(weft_pool_close(H.pool, on_pool_closed), 0);
  assert_true(spin_until(&H.pool_closed, NULL, 0, 30000, "the pool's close"));
  assert_int_equal(weft_pool_release(H.pool), 0);
  H.pool = NULL;
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

/* Node, providers (each exits 0, or by the SIGKILL the test sent), runtime. */
static void finish(void) {
  assert_int_equal(weft_node_close(H.node, on_node_closed, NULL), 0);
  assert_true(spin_until(&H.node_closed, NULL, 0, 30000, "the node's close"));
  for (int i = 0; i < MAXP; i++) {
    if (!H.procs[i].spawned)
      continue;
    assert_true(spin_until(&H.procs[i].exited, NULL, 0, 30000, "a provider's exit"));
    if (H.procs[i].sig != SIGKILL && (H.procs[i].status != 0 || H.procs[i].sig != 0))
      fail_msg("provider p%d exited with status %d, signal %d", i, (int)H.procs[i].status,
               H.procs[i].sig);
  }
  uv_close((uv_handle_t *)&H.ticker, on_ticker_closed);
  assert_true(spin_until(&H.ticker_closed, NULL, 0, 5000, "the ticker's close"));
  ktest_live_finish(H.rt);
}

/* Waits until pool's client knows want providers (else the first one found
 * could take a whole batch on a slow machine). */
static void wait_providers(weft_pool_t *pool, uint32_t want) {
  weft_pool_stats_t st = {0};
  uint64_t end = uv_hrtime() + 30000ull * 1000000u;
  while (weft_pool_stats(pool, &st) == 0 && st.providers < want && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  if (st.providers < want)
    fail_msg("the remote pool knows %u providers after 30 s, want %u", st.providers, want);
}

/* A remote pool. Made before its providers start: a service client made
 * while the peers were already up missed one of them for 30 s in 2 of 10
 * runs under TSan (SUSPECTED BUG in discovery, reported; not isolated). */
static weft_pool_t *remote_pool(uint32_t in_flight) {
  weft_pool_t *pool;
  weft_pool_options_t o = {.node = H.node, .service = OFFPROV_SERVICE, .size = in_flight,
                           .attempt_timeout_ms = 20000};
  assert_int_equal(weft_pool_new(H.ctx, &o, &pool), 0);
  offprov_register(pool);
  return pool;
}

/* ---- a batch: the same submission code for every pool ------------------------- */

static weft_msg_t *mix_args(uint64_t i) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "n", 20000 + i);
  weft_msg_put_u64(m, "seed", i * 7 + 1);
  return m;
}

static void on_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  uintptr_t i = (uintptr_t)data;
  H.done++;
  if (err == 0) {
    uint64_t v = 0;
    char node[16] = "";
    weft_msg_get_u64(result, "v", &v);
    weft_msg_get_strcpy(result, "node", node, sizeof(node), NULL);
    H.results[i] = v;
    H.ok++;
    if (v != offprov_expected(20000 + i, i * 7 + 1))
      H.wrong++;
    if (node[0] == 'p' && node[1] >= '0' && node[1] < '0' + MAXP)
      H.per[node[1] - '0']++;
    else
      H.per[MAXP]++;
  } else if (err == WEFT_EPEERDIED) {
    H.peerdied++;
  } else {
    H.other_err++;
    H.last_err = err;
  }
  weft_msg_free(result);
  if (H.kill_at != 0 && H.done == H.kill_at)
    CHECK_RC(uv_process_kill(&H.procs[H.kill_who].proc, SIGKILL), 0);
}

/* Submits every task of the batch (the queue holds them all) and waits. The
 * task code is offprov_mix, submitted by its function pointer. */
static void run_batch(weft_pool_t *pool, uint32_t total, unsigned flags) {
  H.total = total;
  H.done = H.ok = H.wrong = H.peerdied = H.other_err = 0;
  memset(H.per, 0, sizeof(H.per));
  memset(H.results, 0, sizeof(H.results));
  for (uintptr_t i = 0; i < total; i++) {
    weft_msg_t *m = mix_args(i);
    weft_pool_task_options_t t = {.fn = offprov_mix, .args = m, .flags = flags};
    int rc = weft_pool_submit(pool, &t, on_done, (void *)i, NULL);
    if (rc != 0) {
      weft_msg_free(m);
      fail_msg("submit %u: %s", (unsigned)i, weft_err_name(rc));
    }
  }
  assert_true(spin_until(NULL, &H.done, total, 120000, "the batch"));
}

static void wait_peers(int n) {
  int up = 0;
  uint64_t end = uv_hrtime() + 30000ull * 1000000u;
  while ((up = H.peers_up) < n && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  if (up < n)
    fail_msg("%d provider nodes up after 30 s, want %d", up, n);
}

/* ---- tests ------------------------------------------------------------------------ */

static void same_task_code_local_and_remote(void **state) {
  (void)state;
  setup_node();
  weft_pool_t *remote = remote_pool(16);
  spawn_provider(0);
  spawn_provider(1);
  wait_peers(2);

  weft_pool_t *local;
  assert_int_equal(weft_pool_new(H.ctx, &(weft_pool_options_t){.size = 2}, &local), 0);
  offprov_register(local);
  H.pool = local;
  run_batch(local, NTASK, 0);
  assert_int_equal(H.ok, NTASK);
  assert_int_equal(H.per[MAXP], NTASK);
  uint64_t local_results[NTASK];
  memcpy(local_results, H.results, sizeof(local_results));
  close_pool();

  H.pool = remote;
  wait_providers(remote, 2);
  run_batch(H.pool, NTASK, 0);
  fprintf(stderr, "remote: %u ok, p0 %u, p1 %u, wrong %u, errors %u (last %s)\n", H.ok,
          H.per[0], H.per[1], H.wrong, H.other_err, weft_err_name(H.last_err));
  assert_int_equal(H.ok, NTASK);
  assert_int_equal(H.wrong, 0);
  assert_memory_equal(local_results, H.results, sizeof(local_results));
  assert_true(H.per[0] > 0 && H.per[1] > 0); /* both providers ran tasks */
  assert_int_equal(H.per[0] + H.per[1], NTASK);
  weft_pool_stats_t st;
  assert_int_equal(weft_pool_stats(H.pool, &st), 0);
  assert_int_equal(st.completed, NTASK);
  assert_int_equal(st.threads, 0);
  close_pool();
  finish();
}

static uint64_t fnv_ref(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t k = 0; k < n; k++)
    h = (h ^ p[k]) * 1099511628211ull;
  return h;
}

static uint64_t got_h;
static int got_err;
static bool got;

static void on_fnv(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  (void)data;
  got = true;
  got_err = err;
  if (err == 0)
    weft_msg_get_u64(result, "h", &got_h);
  weft_msg_free(result);
}

/* A buffer of 1 MiB as args, by name, locally and remotely: the same hash. */
static void buffers_travel_as_args(void **state) {
  (void)state;
  setup_node();
  weft_pool_t *remote = remote_pool(4);
  spawn_provider(0);
  wait_peers(1);
  wait_providers(remote, 1);
  weft_pool_t *local;
  assert_int_equal(weft_pool_new(H.ctx, &(weft_pool_options_t){.size = 1}, &local), 0);
  offprov_register(local);
  size_t n = 1u << 20;
  uint8_t *bytes = malloc(n);
  assert_non_null(bytes);
  for (size_t k = 0; k < n; k++)
    bytes[k] = (uint8_t)(k * 31 + 7);
  uint64_t want = fnv_ref(bytes, n);
  weft_pool_t *pools[2] = {local, remote};
  for (int k = 0; k < 2; k++) {
    weft_buf_t *b;
    weft_msg_t *m;
    assert_int_equal(weft_buf_new(&b, n), 0);
    memcpy(weft_buf_ptr(b), bytes, n);
    assert_int_equal(weft_msg_new(&m), 0);
    assert_int_equal(weft_msg_add_buf(m, b), 0);
    weft_buf_free(b);
    got = false;
    weft_pool_task_options_t t = {.name = "fnv", .args = m};
    assert_int_equal(weft_pool_submit(pools[k], &t, on_fnv, NULL, NULL), 0);
    assert_true(spin_until(&got, NULL, 0, 60000, "the fnv task"));
    assert_int_equal(got_err, 0);
    assert_true(got_h == want);
  }
  free(bytes);
  H.pool = local;
  close_pool();
  H.pool = remote;
  close_pool();
  finish();
}

/* 400 idempotent tasks, 16 in flight over 2 providers; p0 is SIGKILLed after
 * 100 have completed: every task completes with the right result. Then the
 * same without the flag: the tasks p1 held fail with WEFT_EPEERDIED, the
 * others succeed, and nothing is lost. */
static void provider_killed_mid_batch(void **state) {
  (void)state;
  setup_node();
  H.pool = remote_pool(16);
  spawn_provider(0);
  spawn_provider(1);
  wait_peers(2);
  wait_providers(H.pool, 2);
  H.kill_at = 100;
  H.kill_who = 0;
  uint64_t t0 = uv_hrtime();
  run_batch(H.pool, NTASK, WEFT_POOL_IDEMPOTENT);
  weft_pool_stats_t st;
  assert_int_equal(weft_pool_stats(H.pool, &st), 0);
  fprintf(stderr,
          "idempotent, p0 SIGKILLed after 100: %u ok (p0 %u, p1 %u), %u failed, %llu retried, "
          "%llu ms\n",
          H.ok, H.per[0], H.per[1], H.peerdied + H.other_err, (unsigned long long)st.retried,
          (unsigned long long)((uv_hrtime() - t0) / 1000000u));
  assert_int_equal(H.ok, NTASK);
  assert_int_equal(H.wrong, 0);
  assert_true(st.retried > 0);
  assert_true(H.per[1] > NTASK / 2);

  /* not flagged: p1 is killed while it holds tasks (p0 is gone: a new p0) */
  assert_true(spin_until(&H.procs[0].exited, NULL, 0, 30000, "p0's exit"));
  spawn_provider(0);
  wait_peers(2);
  wait_providers(H.pool, 2); /* the same pool: it finds the new p0 */
  weft_pool_stats_reset(H.pool);
  H.kill_at = 100;
  H.kill_who = 1;
  run_batch(H.pool, NTASK, 0);
  fprintf(stderr,
          "not flagged, p1 SIGKILLed after 100: %u ok, %u WEFT_EPEERDIED, %u other (last %s)\n",
          H.ok, H.peerdied, H.other_err, weft_err_name(H.last_err));
  /* Nothing lost, nothing retried: each task held by p1 failed visibly. */
  assert_int_equal(H.ok + H.peerdied + H.other_err, NTASK);
  assert_true(H.peerdied + H.other_err > 0);
  /* Every one of them with WEFT_EPEERDIED, as service.h promises, also
   * those whose request was still queued when the node was lost (their
   * reply ports close with the channel's reason). */
  assert_int_equal(H.other_err, 0);
  close_pool();
  finish();
}

static void count_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  int *out = data;
  *out = err;
  weft_msg_free(result);
  H.done++;
}

static int nothing(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  (void)result;
  return 0;
}

static int unregistered(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  return nothing(task, args, result);
}

/* A name only the client registered: the provider answers WEFT_ENOENTRY. A
 * task timeout while no provider exists: UV_ETIMEDOUT. Wrong use is refused
 * at the call. */
static void unknown_name_timeout_and_wrong_use(void **state) {
  (void)state;
  setup_node();
  weft_pool_t *pool;
  assert_int_equal(weft_pool_new(H.ctx, &(weft_pool_options_t){.node = H.node}, &pool),
                   WEFT_EINVAL);
  assert_int_equal(weft_pool_new(H.ctx, &(weft_pool_options_t){.service = "x"}, &pool),
                   WEFT_EINVAL);
  H.pool = remote_pool(4);
  assert_int_equal(weft_pool_register(H.pool, "only-here", nothing), 0);
  /* a function not registered has no name to send */
  weft_msg_t *m = mix_args(1);
  assert_int_equal(weft_pool_submit(H.pool,
                                    &(weft_pool_task_options_t){.fn = unregistered, .args = m},
                                    NULL, NULL, NULL),
                   WEFT_ENOENTRY);
  /* an idempotent task carries no buffer */
  weft_buf_t *b;
  assert_int_equal(weft_buf_new(&b, 16), 0);
  assert_int_equal(weft_msg_add_buf(m, b), 0);
  weft_buf_free(b);
  assert_int_equal(weft_pool_submit(H.pool,
                                    &(weft_pool_task_options_t){.name = "fnv", .args = m,
                                                                .flags = WEFT_POOL_IDEMPOTENT},
                                    NULL, NULL, NULL),
                   WEFT_ETRANSFER);
  assert_int_equal(weft_pool_submit(H.pool,
                                    &(weft_pool_task_options_t){.name = "fnv", .args = m,
                                                                .flags = 8},
                                    NULL, NULL, NULL),
                   WEFT_EINVAL);
  weft_msg_free(m);

  /* no provider yet: the task's own timeout ends it */
  int e_timeout = 1, e_noname = 1;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(weft_pool_submit(H.pool,
                                    &(weft_pool_task_options_t){.name = "mix", .args = mix_args(1),
                                                                .timeout_ms = 300},
                                    count_done, &e_timeout, NULL),
                   0);
  assert_true(spin_until(NULL, &H.done, 1, 10000, "the timeout"));
  uint64_t ms = (uv_hrtime() - t0) / 1000000u;
  assert_int_equal(e_timeout, UV_ETIMEDOUT);
  assert_true(ms >= 290);

  spawn_provider(0);
  wait_peers(1);
  assert_int_equal(weft_pool_submit(H.pool, &(weft_pool_task_options_t){.name = "only-here"},
                                    count_done, &e_noname, NULL),
                   0);
  assert_true(spin_until(NULL, &H.done, 2, 30000, "the unknown name's answer"));
  assert_int_equal(e_noname, WEFT_ENOENTRY);
  close_pool();
  finish();
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
      T(same_task_code_local_and_remote),
      T(buffers_travel_as_args),
      T(provider_killed_mid_batch),
      T(unknown_name_timeout_and_wrong_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
