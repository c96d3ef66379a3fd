/* remote.c: the distribution shapes. weft-bench is node "bench" (listening
 * on a free port of 127.0.0.1) and starts itself again as node "peer"
 * (`weft-bench --remote-peer URL`), which dials it and publishes three
 * actors: "sink", "echo" and "taker".
 *
 *   remote_oneway    bench -> sink {seq, tag} records over tcp loopback, msgs/s
 *   remote_pingpong  bench <-> echo round trip, p50/p99 us
 *   remote_transfer  a 16 MiB buffer to the taker and its answer, one at a
 *                    time: the median time from post to answer (us_per_msg)
 *
 * The first message of each shape carries a port (the answer's way back);
 * the records, pings and buffers go on the looked-up port. Peers:
 * tools/bench/erlang (Erlang distribution), weft-nng-floor (nng pair1).
 * Threads: the main contexts of both processes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define TAG "hello"
#define XFER_SIZE ((uint64_t)16 << 20)
#define PP_WARMUP 1000u

/* ---- the peer node ---------------------------------------------------------- */

typedef struct {
  weft_port_t *back; /* the bench's port, from the first message */
  uint64_t n, got, bad;
} actor_t;

static actor_t sink, echo, taker;

/* The first message: {n} and the way back. */
static bool first(actor_t *a, weft_msg_t *msg) {
  if (a->back != NULL)
    return false;
  a->n = 0;
  weft_msg_get_u64(msg, "n", &a->n);
  size_t i;
  if (weft_msg_find_xfer(msg, WEFT_XFER_PORT, 0, &i) == 0)
    weft_msg_take_port(msg, i, &a->back);
  weft_msg_free(msg);
  a->got = a->bad = 0;
  if (a->back != NULL)
    bench_post_op(a->back, BENCH_OP_READY);
  return true;
}

static void done(actor_t *a) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return;
  weft_msg_put_map(m, 3);
  weft_msg_put_u64(m, "op", BENCH_OP_DONE);
  weft_msg_put_u64(m, "count", a->got);
  weft_msg_put_u64(m, "bad", a->bad);
  if (weft_port_post(a->back, m) != 0)
    weft_msg_free(m);
}

static void on_sink(weft_port_t *self, weft_msg_t *msg) {
  (void)self;
  if (first(&sink, msg))
    return;
  uint64_t seq = UINT64_MAX;
  if (weft_msg_get_u64(msg, "seq", &seq) != 0 || seq != sink.got)
    sink.bad++;
  weft_msg_free(msg);
  if (++sink.got == sink.n)
    done(&sink);
}

static void on_echo(weft_port_t *self, weft_msg_t *msg) {
  (void)self;
  if (first(&echo, msg))
    return;
  if (weft_port_post(echo.back, msg) != 0)
    weft_msg_free(msg);
}

static void on_taker(weft_port_t *self, weft_msg_t *msg) {
  (void)self;
  if (first(&taker, msg))
    return;
  weft_buf_t *b;
  size_t i;
  bool ok = weft_msg_find_xfer(msg, WEFT_XFER_BUF, 0, &i) == 0 &&
            weft_msg_take_buf(msg, i, &b) == 0;
  if (ok) {
    const uint8_t *p = weft_buf_ptr(b);
    ok = weft_buf_len(b) == XFER_SIZE && p[0] == 0xab && p[XFER_SIZE - 1] == 0xab;
    weft_buf_free(b);
  }
  weft_msg_free(msg);
  taker.got++;
  taker.bad += !ok;
  done(&taker);
}

static void peer_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer, (void)reason, (void)data;
  if (!up)
    weft_node_close(node, NULL, NULL); /* the bench is over */
}

int bench_remote_peer_main(const char *url) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, bench_node_runtime_options()) != 0)
    return 1;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = "peer", .peers = peers, .on_monitor = peer_monitor,
                           .transport = bench_node_transport()};
  weft_node_t *node;
  int err = weft_node_start(ctx, &o, &node);
  struct {
    const char *name;
    weft_actor_behaviour_cb fn;
  } actors[] = {{"sink", on_sink}, {"echo", on_echo}, {"taker", on_taker}};
  for (size_t i = 0; !err && i < 3; i++) {
    weft_port_t *addr;
    err = weft_actor_spawn(ctx, actors[i].fn, NULL, &addr);
    if (!err)
      err = weft_node_publish(node, actors[i].name, addr);
  }
  if (!err)
    err = weft_runtime_run(rt);
  weft_runtime_free(rt);
  if (err)
    fprintf(stderr, "weft-bench peer: %s\n", weft_err_name(err));
  return err ? 1 : 0;
}

/* ---- the bench node ------------------------------------------------------------ */

typedef struct {
  const char *shape, *actor;
  weft_node_t *node;
  weft_port_t *remote, *back;
  uv_process_t proc;
  uint64_t n, sent, got, bad, eagain, t0, t1, t_sent;
  double *lat;
  int err;
  void (*go)(void);
} run_t;

static run_t run;

static void finish(int err) {
  if (err && !run.err)
    run.err = err;
  if (run.back) {
    weft_port_close(run.back);
    run.back = NULL;
  }
  if (run.remote) {
    weft_port_close(run.remote);
    run.remote = NULL;
  }
  if (run.node) {
    weft_node_close(run.node, NULL, NULL);
    run.node = NULL;
  }
}

static void oneway_pump(weft_port_t *port) {
  while (run.sent < run.n) {
    weft_msg_t *m;
    weft_msg_new(&m);
    weft_msg_put_map(m, 2);
    weft_msg_put_u64(m, "seq", run.sent);
    weft_msg_put_str(m, "tag", TAG);
    int err = weft_port_post(port, m);
    if (err) {
      weft_msg_free(m);
      if (err == WEFT_EAGAIN) {
        run.eagain++;
        return;
      }
      finish(err);
      return;
    }
    run.sent++;
  }
}

static void oneway_go(void) {
  run.t0 = bench_now_ns();
  oneway_pump(run.remote);
}

static void ping(void) {
  weft_msg_t *m;
  weft_msg_new(&m);
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "op", BENCH_OP_PING);
  weft_msg_put_u64(m, "seq", run.got);
  run.t_sent = bench_now_ns();
  int err = weft_port_post(run.remote, m);
  if (err) {
    weft_msg_free(m);
    finish(err);
  }
}

static void xfer_send(void) {
  weft_buf_t *b;
  weft_msg_t *m;
  int err = weft_buf_new(&b, XFER_SIZE);
  if (err) {
    finish(err);
    return;
  }
  memset(weft_buf_ptr(b), 0xab, XFER_SIZE);
  if ((err = weft_msg_new(&m)) == 0) {
    weft_msg_put_u64(m, NULL, run.sent);
    err = weft_msg_add_buf(m, b);
    if (!err)
      err = weft_port_post(run.remote, m);
    if (err)
      weft_msg_free(m);
  }
  weft_buf_free(b);
  if (err) {
    finish(err);
    return;
  }
  run.t_sent = bench_now_ns();
  run.sent++;
}

static void xfer_go(void) {
  run.t0 = bench_now_ns();
  xfer_send();
}

/* What comes back on the way-back port. */
static void on_back(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  uint64_t now = bench_now_ns();
  uint64_t op = bench_msg_get_op(msg);
  if (op == BENCH_OP_READY) {
    weft_msg_free(msg);
    run.go();
    return;
  }
  if (op == BENCH_OP_PING) { /* remote_pingpong */
    weft_msg_free(msg);
    if (run.got >= PP_WARMUP)
      run.lat[run.got - PP_WARMUP] = (double)(now - run.t_sent) / 1e3;
    if (++run.got == PP_WARMUP)
      run.t0 = now;
    if (run.got == PP_WARMUP + run.n) {
      run.t1 = now;
      finish(0);
      return;
    }
    ping();
    return;
  }
  uint64_t count = 0, bad = 0;
  weft_msg_get_u64(msg, "count", &count);
  weft_msg_get_u64(msg, "bad", &bad);
  weft_msg_free(msg);
  run.bad += bad;
  if (run.lat != NULL) { /* remote_transfer: one at a time */
    run.lat[run.got] = (double)(now - run.t_sent) / 1e3;
    if (++run.got < run.n) {
      xfer_send();
      return;
    }
  } else {
    run.got = count;
  }
  run.t1 = now;
  finish(0);
}

static void on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node, (void)data;
  if (status) {
    finish(status);
    return;
  }
  run.remote = port;
  weft_port_t *ch[2];
  weft_msg_t *m;
  int err = weft_channel_new(weft_ctx_current(), ch);
  if (err) {
    finish(err);
    return;
  }
  run.back = ch[0];
  weft_port_start(run.back, on_back);
  if (run.go == oneway_go)
    weft_port_on_drain(run.remote, oneway_pump);
  err = weft_msg_new(&m);
  if (!err) {
    weft_msg_put_map(m, 1);
    weft_msg_put_u64(m, "n", run.n);
    err = weft_msg_add_port(m, ch[1]);
    if (!err)
      err = weft_port_post(run.remote, m);
    if (err)
      weft_msg_free(m);
  }
  if (err)
    finish(err);
}

static void bench_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)data;
  if (up && run.remote == NULL) {
    int err = weft_node_lookup(node, peer, run.actor, 10000, on_found, NULL);
    if (err)
      finish(err);
  } else if (!up && run.t1 == 0) {
    finish(reason ? reason : WEFT_EPEERDIED);
  }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  if ((status != 0 || sig != 0) && !run.err)
    run.err = WEFT_EPEERDIED;
  uv_close((uv_handle_t *)p, NULL);
}

static int remote_run(const char *shape, const char *actor, uint64_t n, void (*go)(void),
                      bool lat) {
  memset(&run, 0, sizeof(run));
  run.shape = shape;
  run.actor = actor;
  run.n = n;
  run.go = go;
  if (lat && (run.lat = calloc(n, sizeof(double))) == NULL)
    return bench_fail(shape, "setup", WEFT_ENOMEM);
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, bench_node_runtime_options());
  if (err) {
    free(run.lat);
    return bench_fail(shape, "weft_runtime_new", err);
  }
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "bench", .listen = listen, .on_monitor = bench_monitor,
                           .transport = bench_node_transport()};
  err = weft_node_start(ctx, &o, &run.node);
  char exe[4096], url[64];
  size_t sz = sizeof(exe);
  if (!err)
    err = uv_exepath(exe, &sz);
  if (!err) {
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(run.node, 0));
    char *args[] = {exe, "--remote-peer", url, NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t po = {.file = exe, .args = args, .exit_cb = on_exit_cb,
                               .stdio = stdio, .stdio_count = 3};
    err = uv_spawn(weft_ctx_loop(ctx), &run.proc, &po);
  }
  if (err && run.node)
    finish(err);
  int rerr = weft_runtime_run(rt);
  weft_runtime_free(rt);
  err = err ? err : rerr ? rerr : run.err;
  if (err)
    free(run.lat);
  return err ? bench_fail(shape, "running", err) : 0;
}

int bench_remote_oneway(const bench_args_t *a) {
  uint64_t n = a->n ? a->n : 1000000;
  int err = remote_run("remote_oneway", "sink", n, oneway_go, false);
  if (err)
    return err;
  if (run.got != n || run.bad)
    return bench_fail("remote_oneway", "counting", WEFT_EPROTO);
  double s = (double)(run.t1 - run.t0) / 1e9;
  bench_emit("remote_oneway", a->rep, "\"msgs_per_s\":%.0f,\"n\":%llu,\"eagain\":%llu",
             (double)n / s, (unsigned long long)n, (unsigned long long)run.eagain);
  return 0;
}

int bench_remote_pingpong(const bench_args_t *a) {
  uint64_t n = a->n ? a->n : 20000;
  int err = remote_run("remote_pingpong", "echo", n, ping, true);
  if (err)
    return err;
  double s = (double)(run.t1 - run.t0) / 1e9;
  double p50 = bench_percentile(run.lat, n, 50), p99 = bench_percentile(run.lat, n, 99);
  bench_emit("remote_pingpong", a->rep,
             "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"n\":%llu", p50, p99,
             (double)n / s, (unsigned long long)n);
  free(run.lat);
  return 0;
}

int bench_remote_transfer(const bench_args_t *a) {
  uint64_t n = a->n ? a->n : 50;
  int err = remote_run("remote_transfer", "taker", n, xfer_go, true);
  if (err)
    return err;
  if (run.got != n || run.bad) {
    free(run.lat);
    return bench_fail("remote_transfer", "checking buffers", WEFT_EPROTO);
  }
  /* us_per_msg is the median of post-to-answer times, as the Erlang peer
   * reports it; mean_us includes making and filling each buffer. */
  double p50 = bench_percentile(run.lat, n, 50);
  bench_emit("remote_transfer", a->rep,
             "\"size_mib\":16,\"us_per_msg\":%.2f,\"ms_p50\":%.2f,\"mean_us\":%.2f,\"n\":%llu",
             p50, p50 / 1e3, (double)(run.t1 - run.t0) / 1e3 / (double)n, (unsigned long long)n);
  free(run.lat);
  return 0;
}
