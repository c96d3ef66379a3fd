/* service.c: the service shape. weft-bench is node "bench" (listening on a
 * free port of 127.0.0.1) and starts itself again as node "svcpeer"
 * (`weft-bench --service-peer URL`), which dials it and provides the service
 * "echo": its handler answers each request at once with {seq}.
 *
 *   service_pingpong  weft_service_call from bench to the provider on the
 *                     other node, one at a time (the next call from the
 *                     reply callback): 1000 warm-up calls, then N plain
 *                     calls (p50_us, p99_us, rt_per_s), then N calls flagged
 *                     WEFT_SERVICE_IDEMPOTENT (idem_p50_us, idem_p99_us: the
 *                     client keeps a copy for retries). Peer: Erlang
 *                     gen_server:call to a gen_server on another node
 *                     (tools/bench/erlang, shape service_pingpong).
 *
 * Threads: the main contexts of both processes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define SVC_NAME "echo"
#define SVC_WARMUP 1000u

/* ---- the provider node ---------------------------------------------------------- */

static void echo_handle(weft_service_t *svc, weft_msg_t *req, void *data) {
  (void)data;
  uint64_t seq = 0;
  weft_msg_get_u64(req, "seq", &seq);
  weft_msg_t *reply;
  if (weft_msg_new(&reply) != 0) {
    weft_service_drop(svc, req);
    return;
  }
  weft_msg_put_map(reply, 1);
  weft_msg_put_u64(reply, "seq", seq);
  if (weft_service_reply(svc, req, reply) != 0) /* always takes req */
    weft_msg_free(reply);
}

static void peer_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer, (void)reason, (void)data;
  if (!up)
    weft_node_close(node, NULL, NULL); /* the bench is over (the provider goes with it) */
}

int bench_service_peer_main(const char *url) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, bench_node_runtime_options()) != 0)
    return 1;
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = "svcpeer", .peers = peers, .on_monitor = peer_monitor,
                           .transport = bench_node_transport()};
  weft_node_t *node;
  weft_service_t *svc;
  int err = weft_node_start(weft_runtime_main(rt), &o, &node);
  if (!err && (err = weft_service_provide(node, SVC_NAME, echo_handle, NULL, &svc)) != 0)
    weft_node_close(node, NULL, NULL);
  int rerr = weft_runtime_run(rt);
  weft_runtime_free(rt);
  err = err ? err : rerr;
  if (err)
    fprintf(stderr, "weft-bench service peer: %s\n", weft_err_name(err));
  return err ? 1 : 0;
}

/* ---- the client node --------------------------------------------------------------- */

#define SVC_DEADLINE_MS 120000 /* the whole run, whatever happens */

static struct {
  weft_node_t *node;
  weft_service_client_t *cli;
  uv_process_t proc;
  uv_timer_t watchdog;
  uint64_t n, got;  /* calls answered, warm-up included, both passes */
  uint64_t t_sent, t0, t1;
  double *lat;      /* 2n: plain, then idempotent */
  bool started, closing;
  int err;
} sv;

static void node_closed(weft_node_t *node, void *data) {
  (void)node, (void)data;
  uv_close((uv_handle_t *)&sv.watchdog, NULL);
}

static void cli_closed(weft_service_client_t *cli, void *data) {
  (void)cli, (void)data;
  weft_node_close(sv.node, node_closed, NULL);
}

/* The end, once: the client, then the node (the peer sees it go and exits),
 * then the watchdog. */
static void finish(int err) {
  if (err && !sv.err)
    sv.err = err;
  if (sv.closing)
    return;
  sv.closing = true;
  weft_service_client_close(sv.cli, cli_closed, NULL);
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "service_pingpong: not done after %d s\n", SVC_DEADLINE_MS / 1000);
  finish(UV_ETIMEDOUT);
}

static void on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                     const weft_service_info_t *info, void *data);

static void call(void) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err) {
    finish(err);
    return;
  }
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "seq", sv.got);
  /* The second timed pass is flagged idempotent. */
  unsigned flags = sv.got >= SVC_WARMUP + sv.n ? WEFT_SERVICE_IDEMPOTENT : 0;
  sv.t_sent = bench_now_ns();
  err = weft_service_call(sv.cli, m, flags, on_reply, NULL);
  if (err) {
    weft_msg_free(m);
    finish(err);
  }
}

static void on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                     const weft_service_info_t *info, void *data) {
  (void)cli, (void)info, (void)data;
  uint64_t now = bench_now_ns(), seq = UINT64_MAX;
  if (err) {
    finish(err);
    return;
  }
  weft_msg_get_u64(reply, "seq", &seq);
  weft_msg_free(reply);
  if (seq != sv.got) {
    fprintf(stderr, "service_pingpong: reply %llu to call %llu\n", (unsigned long long)seq,
            (unsigned long long)sv.got);
    finish(WEFT_EPROTO);
    return;
  }
  if (sv.got >= SVC_WARMUP)
    sv.lat[sv.got - SVC_WARMUP] = (double)(now - sv.t_sent) / 1e3;
  if (++sv.got == SVC_WARMUP)
    sv.t0 = now;
  if (sv.got == SVC_WARMUP + sv.n)
    sv.t1 = now;
  if (sv.got == SVC_WARMUP + 2 * sv.n) {
    finish(0);
    return;
  }
  call();
}

static void on_provider(weft_service_client_t *cli, const char *node, bool up, void *data) {
  (void)cli, (void)node, (void)data;
  if (up && !sv.started) {
    sv.started = true;
    call();
  } else if (!up && sv.got < SVC_WARMUP + 2 * sv.n) {
    finish(WEFT_EPEERDIED);
  }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  if (status != 0 || sig != 0 || !sv.closing) {
    fprintf(stderr, "service_pingpong: the provider exited (status %d, signal %d)\n",
            (int)status, sig);
    finish(WEFT_EPEERDIED);
  }
  uv_close((uv_handle_t *)p, NULL);
}

/* Starts the provider process (`weft-bench --service-peer URL`). */
static int spawn_peer(weft_ctx_t *ctx) {
  char exe[4096], url[64];
  size_t sz = sizeof(exe);
  int err = uv_exepath(exe, &sz);
  if (err)
    return err;
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(sv.node, 0));
  char *args[] = {exe, "--service-peer", url, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = exe, .args = args, .exit_cb = on_exit_cb, .stdio = stdio,
                             .stdio_count = 3};
  return uv_spawn(weft_ctx_loop(ctx), &sv.proc, &po);
}

int bench_service_pingpong(const bench_args_t *a) {
  const char *shape = "service_pingpong";
  memset(&sv, 0, sizeof(sv));
  sv.n = a->n ? a->n : 20000;
  if ((sv.lat = calloc(2 * sv.n, sizeof(double))) == NULL)
    return bench_fail(shape, "setup", WEFT_ENOMEM);
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, bench_node_runtime_options());
  if (err) {
    free(sv.lat);
    return bench_fail(shape, "weft_runtime_new", err);
  }
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "bench", .listen = listen,
                           .transport = bench_node_transport()};
  /* The provider is found within rescan_ms of its node coming up. */
  weft_service_client_options_t co = {.service = SVC_NAME, .timeout_ms = 10000,
                                      .wait_ms = 10000, .rescan_ms = 100,
                                      .on_provider = on_provider};
  err = weft_node_start(ctx, &o, &sv.node);
  if (err)
    goto fail_free_runtime;
  if ((err = weft_service_client_new(sv.node, &co, &sv.cli)) != 0)
    goto fail_close_node;
  uv_timer_init(weft_ctx_loop(ctx), &sv.watchdog);
  uv_timer_start(&sv.watchdog, on_watchdog, SVC_DEADLINE_MS, 0);
  if ((err = spawn_peer(ctx)) != 0)
    finish(err);
  int rerr = weft_runtime_run(rt);
  weft_runtime_free(rt);
  err = err ? err : rerr ? rerr : sv.err;
  if (err) {
    free(sv.lat);
    return bench_fail(shape, "running", err);
  }
  double s = (double)(sv.t1 - sv.t0) / 1e9;
  double p50 = bench_percentile(sv.lat, sv.n, 50), p99 = bench_percentile(sv.lat, sv.n, 99);
  double ip50 = bench_percentile(sv.lat + sv.n, sv.n, 50);
  double ip99 = bench_percentile(sv.lat + sv.n, sv.n, 99);
  bench_emit(shape, a->rep,
             "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"idem_p50_us\":%.2f,"
             "\"idem_p99_us\":%.2f,\"n\":%llu",
             p50, p99, (double)sv.n / s, ip50, ip99, (unsigned long long)sv.n);
  free(sv.lat);
  return 0;
fail_close_node:
  weft_node_close(sv.node, NULL, NULL);
  weft_runtime_run(rt);
fail_free_runtime:
  weft_runtime_free(rt);
  free(sv.lat);
  return bench_fail(shape, "starting", err);
}
