/* test_service.c: services across nodes (weft/service.h) with real provider
 * processes: this test binary starts itself again as provider nodes
 * (`test_service --provider NAME URL MODE`), which dial the test's node over
 * tcp on 127.0.0.1 and provide "echo".
 *
 * Provider modes: "normal" answers every request {from, n}; "delayN" answers
 * each after N ms (equal back ends: least outstanding follows each
 * provider's real speed, and without a wait that dominates, the speed of 4
 * processes on 2 shared vCPUs is the scheduler's); "victim" holds
 * (never answers) requests that carry hold: true, and answers the others;
 * "mute" holds every request; "none" provides nothing (a peer that is not a
 * provider). Every provider also publishes "ctl": {cmd: "withdraw"} withdraws
 * the service and answers {served} once the withdraw is done. A provider
 * exits (status 0, nothing leaked) when the test's node goes.
 *
 * What is shown: spread over 3 equal providers within 10%; idempotent
 * requests survive a provider SIGKILLed under load with 0 failures; requests
 * not idempotent fail with WEFT_EPEERDIED after 1 attempt; timeouts (one
 * attempt, and max_attempts attempts alternating providers; an idempotent
 * request retried elsewhere after a timeout succeeds); the bound (WEFT_EAGAIN)
 * and its drain; a provider started under load gets requests; a provider
 * withdrawn under load loses no request and serves nothing after; no
 * provider: WEFT_ENOENTRY after wait_ms; wrong use at the call. */
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
#include "testutil.h"
#include "weft.h"

/* TSan's loop turns can outlast a 1 s heartbeat on a loaded machine: the
 * nodes would drop each other (a long turn looks like a dead node). */
#if defined(__SANITIZE_THREAD__)
#define TEST_HEARTBEAT_MS 5000
#else
#define TEST_HEARTBEAT_MS 0
#endif

#define MAXP 4

/* ---- the provider process ---------------------------------------------------- */

static struct {
  weft_node_t *node;
  weft_service_t *svc;
  char name[16];
  bool victim, mute;
  uint64_t delay_ms;    /* mode "delayN": each answer waits N ms (a back end's I/O) */
  weft_list_t delayed;
  weft_msg_t *held[8192];
  size_t nheld;
  uint64_t served;
  weft_msg_t *ctl_req; /* the withdraw request, answered when done */
} P;

static weft_msg_t *msg_map1(const char *key, uint64_t v) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, key, v);
  return m;
}

static void answer(weft_service_t *svc, weft_msg_t *req);

typedef struct {
  uv_timer_t timer;
  weft_list_node_t link;
  weft_msg_t *req;
} delayed_t;

static void delayed_closed(uv_handle_t *h) { free(h->data); }

static void delayed_fire(uv_timer_t *t) {
  delayed_t *d = t->data;
  weft_list_remove(&P.delayed, &d->link);
  if (d->req != NULL)
    answer(P.svc, d->req);
  uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void provider_handler(weft_service_t *svc, weft_msg_t *req, void *data) {
  (void)data;
  if (P.delay_ms > 0) {
    delayed_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
      abort();
    d->req = req;
    d->timer.data = d;
    uv_timer_init(weft_ctx_loop(weft_ctx_current()), &d->timer);
    uv_timer_start(&d->timer, delayed_fire, P.delay_ms, 0);
    weft_list_push_back(&P.delayed, &d->link);
    return;
  }
  bool hold = false;
  weft_msg_get_bool(req, "hold", &hold);
  if (P.mute || (P.victim && hold)) {
    if (P.nheld < sizeof(P.held) / sizeof(P.held[0]))
      P.held[P.nheld++] = req;
    else
      weft_service_drop(svc, req);
    return;
  }
  answer(svc, req);
}

static void answer(weft_service_t *svc, weft_msg_t *req) {
  uint64_t n = 0;
  weft_msg_get_u64(req, "n", &n);
  weft_msg_t *r;
  if (weft_msg_new(&r) != 0)
    abort();
  weft_msg_put_map(r, 2);
  weft_msg_put_str(r, "from", P.name);
  weft_msg_put_u64(r, "n", n);
  if (weft_service_reply(svc, req, r) != 0)
    weft_msg_free(r);
  else
    P.served++;
}

static void provider_withdrawn(weft_service_t *svc, void *data) {
  (void)svc;
  (void)data;
  P.svc = NULL;
  if (P.ctl_req != NULL) {
    weft_msg_t *r = msg_map1("served", P.served);
    if (weft_msg_reply(P.ctl_req, r) != 0)
      weft_msg_free(r);
    weft_msg_free(P.ctl_req);
    P.ctl_req = NULL;
  }
}

static void provider_ctl(weft_port_t *self, weft_msg_t *req) {
  (void)self;
  char cmd[32] = "";
  weft_msg_get_strcpy(req, "cmd", cmd, sizeof(cmd), NULL);
  if (strcmp(cmd, "withdraw") == 0 && P.svc != NULL && P.ctl_req == NULL &&
      weft_service_withdraw(P.svc, provider_withdrawn, NULL) == 0) {
    P.ctl_req = req;
    return;
  }
  weft_msg_free(req); /* the asker sees WEFT_ECLOSED */
}

static void provider_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                             void *data) {
  (void)peer;
  (void)reason;
  (void)data;
  if (up)
    return;
  for (size_t i = 0; i < P.nheld; i++)
    weft_service_drop(P.svc, P.held[i]);
  P.nheld = 0;
  for (weft_list_node_t *l = weft_list_first(&P.delayed); l; l = weft_list_next(l)) {
    delayed_t *d = WEFT_LIST_ENTRY(l, delayed_t, link);
    weft_service_drop(P.svc, d->req);
    d->req = NULL;
    uv_timer_start(&d->timer, delayed_fire, 0, 0);
  }
  weft_msg_free(P.ctl_req);
  P.ctl_req = NULL;
  weft_node_close(node, NULL, NULL);
}

static int provider_main(const char *name, const char *url, const char *mode) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 3;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  snprintf(P.name, sizeof(P.name), "%s", name);
  P.victim = strcmp(mode, "victim") == 0;
  P.mute = strcmp(mode, "mute") == 0;
  if (strncmp(mode, "delay", 5) == 0)
    P.delay_ms = strtoull(mode + 5, NULL, 10);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = name, .peers = peers, .on_monitor = provider_monitor,
                           .heartbeat_ms = TEST_HEARTBEAT_MS};
  if (weft_node_start(ctx, &o, &P.node) != 0)
    return 4;
  weft_port_t *ctl;
  if (weft_actor_spawn(ctx, provider_ctl, NULL, &ctl) != 0 ||
      weft_node_publish(P.node, "ctl", ctl) != 0)
    return 5;
  if (strcmp(mode, "none") != 0 &&
      weft_service_provide(P.node, "echo", provider_handler, NULL, &P.svc) != 0)
    return 6;
  if (weft_runtime_run(rt) < 0)
    return 7;
  return weft_runtime_free(rt) == 0 ? 0 : 8;
}

/* ---- the test's side: one node, one client, provider processes ---------------- */

typedef struct {
  uv_process_t proc;
  bool spawned, exited;
  int64_t status;
  int sig;
} proc_t;

static char self_path[4096];

static struct {
  weft_runtime_t *rt;
  uv_loop_t *loop;
  weft_node_t *node;
  weft_service_client_t *cli;
  bool cli_closed, node_closed, ticker_closed;
  uv_timer_t ticker; /* makes every UV_RUN_ONCE return: waits check deadlines */
  char url[64];
  proc_t procs[MAXP];
  int providers_up;
  bool provider_down[MAXP];
  /* the load */
  uint32_t total, window, sent, completed, failures, retried, eagains, drains;
  unsigned flags;
  bool hold;
  int last_err;
  uint32_t per[MAXP];       /* replies per provider */
  uint32_t attempts_max;
  bool paused;              /* after WEFT_EAGAIN, until on_drain */
  void (*progress)(void);   /* after each completion */
} H;

static int pidx(const char *name) {
  return name != NULL && name[0] == 'p' && name[1] >= '0' && name[1] < '0' + MAXP
             ? name[1] - '0'
             : -1;
}

static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until *flag or ms pass; false on timeout (with a message). */
static bool spin_until(const bool *flag, const volatile uint32_t *count, uint32_t want,
                       uint64_t ms, const char *what) {
  uint64_t end = uv_hrtime() + ms * 1000000u;
  while (!(flag ? *flag : *count >= want)) {
    if (uv_hrtime() > end) {
      fprintf(stderr, "timed out after %llu ms waiting for %s\n", (unsigned long long)ms, what);
      return false;
    }
    uv_run(H.loop, UV_RUN_ONCE);
  }
  return true;
}

static void on_provider(weft_service_client_t *cli, const char *node, bool up, void *data) {
  (void)cli;
  (void)data;
  H.providers_up += up ? 1 : -1;
  int i = pidx(node);
  if (!up && i >= 0)
    H.provider_down[i] = true;
}

static void on_drain(weft_service_client_t *cli, void *data);

static void setup_client(const weft_service_client_options_t *extra) {
  memset(&H, 0, sizeof(H));
  H.rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(H.rt);
  H.loop = weft_ctx_loop(ctx);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "client", .listen = listen,
                           .heartbeat_ms = TEST_HEARTBEAT_MS};
  assert_int_equal(weft_node_start(ctx, &o, &H.node), 0);
  snprintf(H.url, sizeof(H.url), "tcp://127.0.0.1:%d", weft_node_port(H.node, 0));
  weft_service_client_options_t co = extra ? *extra : (weft_service_client_options_t){0};
  co.service = "echo";
  co.on_provider = on_provider;
  co.on_drain = on_drain;
  assert_int_equal(weft_service_client_new(H.node, &co, &H.cli), 0);
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

static void spawn_provider(int i, const char *mode) {
  char name[8];
  snprintf(name, sizeof(name), "p%d", i);
  char *args[] = {self_path, "--provider", name, H.url, (char *)mode, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = self_path, .args = args, .exit_cb = on_exit_cb,
                             .stdio = stdio, .stdio_count = 3};
  assert_int_equal(uv_spawn(H.loop, &H.procs[i].proc, &po), 0);
  H.procs[i].spawned = true;
}

static void wait_providers(int n) {
  uint32_t want = (uint32_t)n;
  volatile uint32_t up = 0;
  uint64_t end = uv_hrtime() + 30000ull * 1000000u;
  while ((up = (uint32_t)H.providers_up) < want && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  if (up < want)
    fail_msg("%u providers usable after 30 s, want %d", up, n);
}

static void kill_provider(int i) {
  CHECK_RC(uv_process_kill(&H.procs[i].proc, SIGKILL), 0);
}

static void on_cli_closed(weft_service_client_t *cli, void *data) {
  (void)cli;
  (void)data;
  H.cli_closed = true;
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

/* Client, node, providers (each must exit 0, or by the SIGKILL the test
 * sent), runtime; nothing left. */
static void finish(void) {
  if (!H.cli_closed) {
    assert_int_equal(weft_service_client_close(H.cli, on_cli_closed, NULL), 0);
    assert_true(spin_until(&H.cli_closed, NULL, 0, 30000, "the client's close"));
  }
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

/* ---- the load: keeps `window` calls outstanding until `total` are sent -------- */

static weft_msg_t *request(uint64_t n, bool hold) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "n", n);
  weft_msg_put_bool(m, "hold", hold);
  return m;
}

static void load_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                       const weft_service_info_t *info, void *data);

static void pump(void) {
  while (!H.paused && H.sent < H.total && H.sent - H.completed < H.window) {
    weft_msg_t *m = request(H.sent, H.hold);
    int rc = weft_service_call(H.cli, m, H.flags, load_reply, NULL);
    if (rc == WEFT_EAGAIN) {
      weft_msg_free(m);
      H.eagains++;
      H.paused = true;
      return; /* on_drain pumps again */
    }
    CHECK_RC(rc, 0);
    if (rc != 0) {
      weft_msg_free(m);
      return;
    }
    H.sent++;
  }
}

static void load_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                       const weft_service_info_t *info, void *data) {
  (void)cli;
  (void)data;
  H.completed++;
  if (info->attempts > 1)
    H.retried++;
  if (info->attempts > H.attempts_max)
    H.attempts_max = info->attempts;
  if (err != 0) {
    H.failures++;
    H.last_err = err;
  } else {
    char from[16] = "";
    weft_msg_get_strcpy(reply, "from", from, sizeof(from), NULL);
    CHECK(strcmp(from, info->provider) == 0);
    int i = pidx(info->provider);
    CHECK(i >= 0);
    if (i >= 0)
      H.per[i]++;
  }
  weft_msg_free(reply);
  if (H.progress)
    H.progress();
  pump();
}

static void on_drain(weft_service_client_t *cli, void *data) {
  (void)cli;
  (void)data;
  H.drains++;
  H.paused = false;
  pump();
}

static void run_load(uint32_t total, uint32_t window, unsigned flags, bool hold) {
  H.total = total;
  H.window = window;
  H.flags = flags;
  H.hold = hold;
  pump();
  assert_true(spin_until(NULL, &H.completed, total, 120000, "the load's completions"));
}

static void print_per(const char *what) {
  fprintf(stderr, "%s: completed %u, failures %u (last %s), retried %u, per provider:", what,
          H.completed, H.failures, H.failures ? weft_err_name(H.last_err) : "-", H.retried);
  for (int i = 0; i < MAXP; i++)
    if (H.procs[i].spawned)
      fprintf(stderr, " p%d=%u", i, H.per[i]);
  fprintf(stderr, "\n");
}

/* ---- spread ------------------------------------------------------------------- */

static void spread_over_equal_providers(void **state) {
  (void)state;
  setup_client(NULL);
  /* Equal back ends: each answer waits 10 ms (I/O), so that a provider's
   * speed is its work's and not the scheduler's mood on 2 shared vCPUs. */
  for (int i = 1; i <= 3; i++)
    spawn_provider(i, "delay10");
  wait_providers(3);
  uint32_t total = 3000; /* not scaled: the share needs the count */
  uint64_t t0 = uv_hrtime();
  run_load(total, 60, WEFT_SERVICE_IDEMPOTENT, false);
  fprintf(stderr, "spread: %u requests in %llu ms\n", total,
          (unsigned long long)((uv_hrtime() - t0) / 1000000u));
  print_per("spread");
  assert_int_equal(H.failures, 0);
  double margin = 0.10;
  for (int i = 1; i <= 3; i++) {
    double share = (double)H.per[i] / (total / 3.0);
    if (share < 1 - margin || share > 1 + margin)
      fail_msg("p%d got %u of %u requests (%.0f%% of an equal share)", i, H.per[i], total,
               share * 100);
  }
  finish();
}

/* ---- calls open no channel of their own ----------------------------------------
 * A call is one message each way on the two channels a client and a provider
 * share: 64 calls held by a provider for 300 ms leave the client node's count
 * of open remote channels where it was (a reply channel per call, as the
 * first version made with weft_port_request, would add 64). Sampled when the
 * first answer arrives: every request is at the provider by then. */
static struct {
  uint64_t before, at_first;
  bool sampled;
} CH;

static void channel_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                          const weft_service_info_t *info, void *data) {
  (void)cli;
  (void)info;
  (void)data;
  weft_msg_free(reply);
  if (!CH.sampled) {
    weft_node_stats_t st;
    CHECK_RC(weft_node_stats(H.node, &st), 0);
    CH.at_first = st.channels_open;
    CH.sampled = true;
  }
  H.completed++;
  if (err != 0)
    H.failures++;
}

static void calls_open_no_channel_of_their_own(void **state) {
  (void)state;
  memset(&CH, 0, sizeof(CH));
  setup_client(NULL);
  spawn_provider(1, "delay300");
  wait_providers(1);
  weft_node_stats_t st;
  assert_int_equal(weft_node_stats(H.node, &st), 0);
  CH.before = st.channels_open;
  for (uint64_t i = 0; i < 64; i++)
    assert_int_equal(weft_service_call(H.cli, request(i, false), 0, channel_reply, NULL), 0);
  assert_true(spin_until(NULL, &H.completed, 64, 30000, "64 answers"));
  fprintf(stderr, "channels: %llu open before 64 calls, %llu while they were out\n",
          (unsigned long long)CH.before, (unsigned long long)CH.at_first);
  assert_int_equal(H.failures, 0);
  assert_true(CH.at_first <= CH.before + 2);
  finish();
}

/* ---- death: retry of idempotent requests, failure of the others ----------------- */

static uint32_t kill_at;
static int kill_who;

static void kill_when_due(void) {
  if (H.completed == kill_at)
    kill_provider(kill_who);
}

static void idempotent_requests_survive_a_sigkill(void **state) {
  (void)state;
  setup_client(&(weft_service_client_options_t){.timeout_ms = 20000});
  spawn_provider(1, "victim"); /* holds every request of this load */
  spawn_provider(2, "normal");
  spawn_provider(3, "normal");
  wait_providers(3);
  uint32_t total = (uint32_t)ktest_scaled(2000, 400);
  kill_at = total / 4;
  kill_who = 1;
  H.progress = kill_when_due;
  run_load(total, 32, WEFT_SERVICE_IDEMPOTENT, true);
  print_per("sigkill, idempotent");
  assert_int_equal(H.failures, 0);
  assert_int_equal(H.per[1], 0);            /* the victim answered nothing */
  assert_true(H.retried > 0);               /* what it held went elsewhere */
  assert_true(H.attempts_max <= 3);
  assert_true(H.provider_down[1]);
  assert_true(H.procs[1].exited || spin_until(&H.procs[1].exited, NULL, 0, 10000, "p1's end"));
  assert_int_equal(H.procs[1].sig, SIGKILL);
  finish();
}

static uint32_t fails_peerdied, fails_other, fails_attempts_bad, ping_ok;

static void nonidem_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                          const weft_service_info_t *info, void *data) {
  (void)cli;
  (void)data;
  weft_msg_free(reply);
  if (err == WEFT_EPEERDIED)
    fails_peerdied++;
  else
    fails_other++;
  if (info->attempts != 1 || info->provider == NULL || strcmp(info->provider, "p1") != 0)
    fails_attempts_bad++;
}

static void ping_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                       const weft_service_info_t *info, void *data) {
  (void)cli;
  (void)info;
  (void)data;
  weft_msg_free(reply);
  CHECK_RC(err, 0);
  ping_ok++;
}

static void non_idempotent_requests_fail_with_peerdied(void **state) {
  (void)state;
  fails_peerdied = fails_other = fails_attempts_bad = ping_ok = 0;
  setup_client(&(weft_service_client_options_t){.timeout_ms = 20000});
  spawn_provider(1, "victim");
  wait_providers(1);
  enum { N = 10 };
  for (int i = 0; i < N; i++)
    assert_int_equal(weft_service_call(H.cli, request((uint64_t)i, true), 0, nonidem_reply, NULL),
                     0);
  /* The ping's answer comes after the provider has taken the 10 (one channel, FIFO). */
  assert_int_equal(weft_service_call(H.cli, request(99, false), 0, ping_reply, NULL), 0);
  assert_true(spin_until(NULL, &ping_ok, 1, 20000, "the ping's answer"));
  /* A second provider now would change nothing: those requests are not retried. */
  spawn_provider(2, "normal");
  wait_providers(2);
  kill_provider(1);
  uint32_t done = 0;
  uint64_t end = uv_hrtime() + 20000ull * 1000000u;
  while ((done = fails_peerdied + fails_other) < N && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  fprintf(stderr, "non-idempotent: %u WEFT_EPEERDIED, %u other, %u wrong info\n",
          fails_peerdied, fails_other, fails_attempts_bad);
  assert_int_equal(fails_peerdied, N);
  assert_int_equal(fails_other, 0);
  assert_int_equal(fails_attempts_bad, 0);
  weft_service_client_stats_t st;
  assert_int_equal(weft_service_client_stats(H.cli, &st), 0);
  assert_int_equal(st.retries, 0);
  assert_int_equal(st.failures, N);
  finish();
}

/* ---- timeouts ---------------------------------------------------------------------- */

static struct {
  uint32_t n, ok, timedout, other;
  uint32_t attempts[8];
  char provider[8][16];
  uint64_t elapsed_ms[8];
  uint64_t t0[8];
  int err[8];
} TO;

static void timeout_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                          const weft_service_info_t *info, void *data) {
  (void)cli;
  uintptr_t i = (uintptr_t)data;
  weft_msg_free(reply);
  TO.n++;
  if (err == 0)
    TO.ok++;
  else if (err == UV_ETIMEDOUT)
    TO.timedout++;
  else
    TO.other++;
  if (i < 8) {
    TO.err[i] = err;
    TO.attempts[i] = info->attempts;
    snprintf(TO.provider[i], sizeof(TO.provider[i]), "%s", info->provider ? info->provider : "");
    TO.elapsed_ms[i] = (uv_hrtime() - TO.t0[i]) / 1000000u;
  }
}

static void call_timed(uintptr_t i, unsigned flags, bool hold) {
  TO.t0[i] = uv_hrtime();
  assert_int_equal(weft_service_call(H.cli, request(i, hold), flags, timeout_reply, (void *)i), 0);
}

static void timeouts_one_attempt_then_max_attempts(void **state) {
  (void)state;
  memset(&TO, 0, sizeof(TO));
  setup_client(&(weft_service_client_options_t){.timeout_ms = 300, .max_attempts = 3});
  spawn_provider(1, "mute");
  spawn_provider(2, "mute");
  wait_providers(2);
  call_timed(0, 0, true);                       /* not idempotent: one attempt */
  call_timed(1, WEFT_SERVICE_IDEMPOTENT, true); /* three, alternating */
  assert_true(spin_until(NULL, &TO.n, 2, 30000, "two timeouts"));
  fprintf(stderr, "timeouts: %llu ms after %u attempt(s); %llu ms after %u attempts (last %s)\n",
          (unsigned long long)TO.elapsed_ms[0], TO.attempts[0],
          (unsigned long long)TO.elapsed_ms[1], TO.attempts[1], TO.provider[1]);
  assert_int_equal(TO.timedout, 2);
  assert_int_equal(TO.attempts[0], 1);
  assert_true(TO.elapsed_ms[0] >= 290);
  assert_int_equal(TO.attempts[1], 3);
  assert_true(TO.elapsed_ms[1] >= 3 * 290);
  /* Attempts alternate: 3 attempts over 2 providers end where the first began. */
  weft_service_client_stats_t st;
  assert_int_equal(weft_service_client_stats(H.cli, &st), 0);
  assert_int_equal(st.retries, 2);
  finish();
}

static void idempotent_request_retried_elsewhere_after_timeout(void **state) {
  (void)state;
  memset(&TO, 0, sizeof(TO));
  setup_client(&(weft_service_client_options_t){.timeout_ms = 300});
  spawn_provider(1, "mute");
  spawn_provider(2, "normal");
  wait_providers(2);
  for (uintptr_t i = 0; i < 8; i++)
    call_timed(i, WEFT_SERVICE_IDEMPOTENT, false);
  assert_true(spin_until(NULL, &TO.n, 8, 30000, "eight answers"));
  uint32_t second = 0;
  for (int i = 0; i < 8; i++) {
    assert_string_equal(TO.provider[i], "p2");
    second += TO.attempts[i] == 2;
    assert_true(TO.attempts[i] <= 2);
  }
  fprintf(stderr, "retried after a timeout: %u of 8 (all answered by p2)\n", second);
  assert_int_equal(TO.ok, 8);
  assert_true(second >= 1); /* round robin sent some to the mute one first */
  finish();
}

/* ---- the bound and its drain ------------------------------------------------------ */

static void bound_and_drain(void **state) {
  (void)state;
  setup_client(&(weft_service_client_options_t){.max_outstanding = 8});
  spawn_provider(1, "normal");
  wait_providers(1);
  H.total = 1000;
  H.window = 1000; /* the bound, not the window, limits this load */
  H.flags = 0;
  pump();
  assert_int_equal(H.sent, 8);
  assert_int_equal(H.eagains, 1);
  weft_service_client_stats_t st;
  assert_int_equal(weft_service_client_stats(H.cli, &st), 0);
  assert_int_equal(st.outstanding, 8);
  assert_true(spin_until(NULL, &H.completed, 1000, 60000, "1000 answers"));
  fprintf(stderr, "bound 8: %u EAGAIN, %u drains, %u answers\n", H.eagains, H.drains,
          H.completed);
  assert_int_equal(H.failures, 0);
  assert_true(H.eagains >= 1);
  assert_int_equal(H.drains, H.eagains); /* one drain per episode */
  finish();
}

/* ---- join and withdraw under load --------------------------------------------------- */

static uint32_t join_at, per_at_join;

static void join_when_due(void) {
  if (H.completed == join_at) {
    spawn_provider(3, "normal");
    per_at_join = H.per[3];
  }
}

static void provider_joining_under_load_gets_requests(void **state) {
  (void)state;
  setup_client(NULL);
  spawn_provider(1, "normal");
  spawn_provider(2, "normal");
  wait_providers(2);
  H.progress = join_when_due;
  join_at = 200;
  /* Enough to outlast a process start under sanitizers: the load ends when
   * the joiner has served its share, bounded by the wait below. */
  H.total = 40000;
  H.window = 32;
  pump();
  uint64_t end = uv_hrtime() + 60000ull * 1000000u;
  while (H.per[3] < 300 && uv_hrtime() < end && H.completed < H.total)
    uv_run(H.loop, UV_RUN_ONCE);
  H.total = H.sent; /* stop sending; wait for what is out */
  assert_true(spin_until(NULL, &H.completed, H.sent, 60000, "the rest"));
  print_per("join");
  assert_int_equal(H.failures, 0);
  assert_int_equal(per_at_join, 0);
  assert_true(H.per[3] >= 300);
  finish();
}

static struct {
  weft_port_t *ctl;
  bool done;
  uint64_t served;
  uint32_t completed_at_done;
  int err;
} WD;

static void withdraw_answered(weft_msg_t *reply, int err, void *data) {
  (void)data;
  WD.err = err;
  if (err == 0)
    weft_msg_get_u64(reply, "served", &WD.served);
  weft_msg_free(reply);
  WD.done = true;
  WD.completed_at_done = H.completed;
  weft_port_close(WD.ctl);
}

static void ctl_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  CHECK_RC(status, 0);
  if (status != 0)
    return;
  WD.ctl = port;
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, "cmd", "withdraw");
  CHECK_RC(weft_port_request(port, m, withdraw_answered, NULL, 30000), 0);
}

static uint32_t withdraw_at;

static void withdraw_when_due(void) {
  if (H.completed == withdraw_at)
    CHECK_RC(weft_node_lookup(H.node, "p2", "ctl", 10000, ctl_found, NULL), 0);
}

static void withdraw_under_load_loses_nothing(void **state) {
  (void)state;
  memset(&WD, 0, sizeof(WD));
  setup_client(NULL);
  for (int i = 1; i <= 3; i++)
    spawn_provider(i, "normal");
  wait_providers(3);
  withdraw_at = 300;
  H.progress = withdraw_when_due;
  /* Not idempotent: a request lost to the withdraw would fail, not retry. */
  H.total = 1000000;
  H.window = 48;
  H.flags = 0;
  pump();
  assert_true(spin_until(&WD.done, NULL, 0, 60000, "the withdraw"));
  /* Go on for a while after it: p2 must get nothing more. */
  uint32_t until = H.completed + 1000;
  assert_true(spin_until(NULL, &H.completed, until, 60000, "1000 more answers"));
  H.total = H.sent;
  assert_true(spin_until(NULL, &H.completed, H.sent, 60000, "the rest"));
  print_per("withdraw");
  fprintf(stderr, "withdraw: p2 served %llu in all, answered at completion %u of %u\n",
          (unsigned long long)WD.served, WD.completed_at_done, H.completed);
  assert_int_equal(WD.err, 0);
  assert_int_equal(H.failures, 0);
  assert_true(H.provider_down[2]);
  assert_true(WD.served > 0);
  assert_int_equal(H.per[2], WD.served); /* nothing served after the withdraw */
  assert_true(H.per[1] > 0 && H.per[3] > 0);
  finish();
}

/* ---- no provider; wrong use ------------------------------------------------------- */

static void no_provider_gives_enoentry(void **state) {
  (void)state;
  memset(&TO, 0, sizeof(TO));
  setup_client(&(weft_service_client_options_t){.wait_ms = 300, .rescan_ms = 100});
  spawn_provider(1, "none"); /* up, but not a provider */
  uint64_t end = uv_hrtime() + 30000ull * 1000000u;
  while (!weft_node_is_up(H.node, "p1") && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  assert_true(weft_node_is_up(H.node, "p1"));
  TO.t0[0] = uv_hrtime();
  assert_int_equal(weft_service_call(H.cli, request(0, false), 0, timeout_reply, (void *)0), 0);
  end = uv_hrtime() + 30000ull * 1000000u;
  while (TO.n < 1 && uv_hrtime() < end)
    uv_run(H.loop, UV_RUN_ONCE);
  assert_int_equal(TO.n, 1);
  assert_int_equal(TO.err[0], WEFT_ENOENTRY);
  assert_int_equal(TO.attempts[0], 0);
  assert_true(TO.elapsed_ms[0] >= 290);
  assert_int_equal(H.providers_up, 0);
  finish();
}

static void wrong_use_is_refused_at_the_call(void **state) {
  (void)state;
  setup_client(NULL);
  weft_msg_t *m = request(0, false);
  assert_int_equal(weft_service_call(NULL, m, 0, ping_reply, NULL), WEFT_EINVAL);
  assert_int_equal(weft_service_call(H.cli, NULL, 0, ping_reply, NULL), WEFT_EINVAL);
  assert_int_equal(weft_service_call(H.cli, m, 0, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_service_call(H.cli, m, 0x80, ping_reply, NULL), WEFT_EINVAL);
  weft_port_t *ends[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(H.rt), ends), 0);
  assert_int_equal(weft_msg_add_port(m, ends[1]), 0);
  assert_int_equal(weft_service_call(H.cli, m, WEFT_SERVICE_IDEMPOTENT, ping_reply, NULL),
                   WEFT_ETRANSFER);
  weft_msg_free(m);
  weft_port_close(ends[0]);
  weft_service_client_t *c2;
  weft_service_client_options_t o = {0};
  assert_int_equal(weft_service_client_new(H.node, &o, &c2), WEFT_EINVAL);
  o.service = "";
  assert_int_equal(weft_service_client_new(H.node, &o, &c2), WEFT_EINVAL);
  weft_service_t *svc;
  assert_int_equal(weft_service_provide(H.node, "echo", NULL, NULL, &svc), WEFT_EINVAL);
  assert_int_equal(weft_service_provide(H.node, "", provider_handler, NULL, &svc), WEFT_EINVAL);
  assert_int_equal(weft_service_provide(H.node, "echo", provider_handler, NULL, &svc), 0);
  assert_int_equal(weft_service_provide(H.node, "echo", provider_handler, NULL, &svc),
                   WEFT_EBUSY);
  /* A call that waits for a provider, then the client closes: WEFT_ECANCELED. */
  memset(&TO, 0, sizeof(TO));
  assert_int_equal(weft_service_call(H.cli, request(0, false), 0, timeout_reply, (void *)0), 0);
  assert_int_equal(weft_service_client_close(H.cli, on_cli_closed, NULL), 0);
  assert_int_equal(weft_service_client_close(H.cli, on_cli_closed, NULL), WEFT_ECLOSED);
  m = request(0, false);
  assert_int_equal(weft_service_call(H.cli, m, 0, timeout_reply, NULL), WEFT_ECLOSED);
  weft_msg_free(m); /* refused: still the caller's */
  assert_int_equal(TO.n, 0); /* never inside a call */
  assert_true(spin_until(&H.cli_closed, NULL, 0, 10000, "the client's close"));
  assert_int_equal(TO.n, 1);
  assert_int_equal(TO.err[0], WEFT_ECANCELED);
  finish();
}

/* ---- a request to a name being unpublished ----------------------------------
 * A request posted on a looked-up port while its name is being unpublished
 * (its CLOSE not arrived yet) reaches a channel the far node has freed: the
 * frame is dropped there, and the reply channel it introduced must be closed
 * back, or the requester waits until its timeout (for ever without one): the
 * answer is WEFT_ECLOSED at once. Two nodes in this process show it without
 * a race: b unpublishes, and a posts in the same loop turn. */
static struct {
  bool found, answered;
  weft_port_t *port;
  int err;
  uint64_t ms;
} KB;

static void kb_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  CHECK_RC(status, 0);
  KB.port = port;
  KB.found = true;
}

static void kb_answer(weft_msg_t *reply, int err, void *data) {
  (void)data;
  weft_msg_free(reply);
  KB.err = err;
  KB.answered = true;
}

static void kb_sink(weft_port_t *self, weft_msg_t *msg) {
  (void)self;
  weft_msg_free(msg);
}

static void request_to_a_name_being_unpublished_is_closed(void **state) {
  (void)state;
  memset(&KB, 0, sizeof(KB));
  memset(&H, 0, sizeof(H));
  H.rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(H.rt);
  H.loop = weft_ctx_loop(ctx);
  uv_timer_init(H.loop, &H.ticker);
  uv_timer_start(&H.ticker, on_tick, 20, 20);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_t *a, *b;
  assert_int_equal(weft_node_start(ctx, &(weft_node_options_t){.name = "a", .listen = listen}, &a),
                   0);
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(a, 0));
  const char *peers[] = {url, NULL};
  assert_int_equal(weft_node_start(ctx, &(weft_node_options_t){.name = "b", .peers = peers}, &b),
                   0);
  weft_port_t *actor;
  assert_int_equal(weft_actor_spawn(ctx, kb_sink, NULL, &actor), 0);
  assert_int_equal(weft_node_publish(b, "x", actor), 0);
  assert_int_equal(weft_node_lookup(a, "b", "x", 10000, kb_found, NULL), 0);
  assert_true(spin_until(&KB.found, NULL, 0, 10000, "the lookup"));
  assert_int_equal(weft_node_unpublish(b, "x"), 0);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(weft_port_request(KB.port, request(0, false), kb_answer, NULL, 3000), 0);
  assert_true(spin_until(&KB.answered, NULL, 0, 10000, "the request's end"));
  KB.ms = (uv_hrtime() - t0) / 1000000u;
  fprintf(stderr, "request to an unpublished name: %s after %llu ms\n", weft_err_name(KB.err),
          (unsigned long long)KB.ms);
  weft_port_close(KB.port);
  H.node_closed = false;
  assert_int_equal(weft_node_close(b, NULL, NULL), 0);
  assert_int_equal(weft_node_close(a, on_node_closed, NULL), 0);
  assert_true(spin_until(&H.node_closed, NULL, 0, 10000, "the nodes' close"));
  uv_close((uv_handle_t *)&H.ticker, on_ticker_closed);
  assert_true(spin_until(&H.ticker_closed, NULL, 0, 5000, "the ticker's close"));
  ktest_live_finish(H.rt);
  assert_int_not_equal(KB.err, UV_ETIMEDOUT); /* want WEFT_ECLOSED, at once */
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "--provider") == 0)
    return provider_main(argv[2], argv[3], argv[4]);
  size_t len = sizeof(self_path);
  if (uv_exepath(self_path, &len) != 0)
    return 2;
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(spread_over_equal_providers),
      T(idempotent_requests_survive_a_sigkill),
      T(non_idempotent_requests_fail_with_peerdied),
      T(calls_open_no_channel_of_their_own),
      T(timeouts_one_attempt_then_max_attempts),
      T(idempotent_request_retried_elsewhere_after_timeout),
      T(bound_and_drain),
      T(provider_joining_under_load_gets_requests),
      T(withdraw_under_load_loses_nothing),
      T(no_provider_gives_enoentry),
      T(wrong_use_is_refused_at_the_call),
      T(request_to_a_name_being_unpublished_is_closed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
