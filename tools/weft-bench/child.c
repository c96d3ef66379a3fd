/* child.c: the child-process shapes. weft-bench starts itself as the child
 * (weft_child_spawn with an entry name); main() sends such a process to
 * bench_child_main before anything else.
 *
 *   child_oneway    parent -> child {seq, tag} records, msgs/s
 *   child_pingpong  parent <-> child round trip, p50/p99 us
 *   child_transfer  a 16 MiB owned buffer to the child (memfd, no copy), us per
 *                   message, at most 3 in flight (the default byte bound is 64 MiB)
 *
 * Node.js peers: node/fork_oneway.js, node/fork_pingpong.js,
 * node/fork_transfer.js (child_process.fork, 'json' and 'advanced').
 * Threads: everything on the main contexts of the two processes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define TAG "hello"
#define XFER_SIZE ((uint64_t)16 << 20)
#define XFER_WINDOW 3

/* ---- child side ---------------------------------------------------------- */

typedef struct {
  uint64_t n, got, bad;
} sink_t;

static sink_t sink;

static void sink_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t seq = 0;
  if (weft_msg_get_u64(msg, "seq", &seq) != 0 || seq != sink.got)
    sink.bad++;
  weft_msg_free(msg);
  if (++sink.got == sink.n) {
    weft_msg_t *m;
    weft_msg_new(&m);
    weft_msg_put_map(m, 3);
    weft_msg_put_u64(m, "op", BENCH_OP_DONE);
    weft_msg_put_u64(m, "count", sink.got);
    weft_msg_put_u64(m, "bad", sink.bad);
    if (weft_port_post(port, m) != 0)
      weft_msg_free(m);
  }
}

/* The first message says how many records follow. */
static void sink_on_first(weft_port_t *port, weft_msg_t *msg) {
  weft_msg_get_u64(msg, "n", &sink.n);
  weft_msg_free(msg);
  weft_port_start(port, sink_on_message);
  bench_post_op(port, BENCH_OP_READY);
}

static int child_sink(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  return p ? weft_port_start(p, sink_on_first) : WEFT_ENOENT;
}

static void echo_on_message(weft_port_t *port, weft_msg_t *msg) {
  if (weft_port_post(port, msg) != 0)
    weft_msg_free(msg);
}

static int child_echo(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  if (p == NULL)
    return WEFT_ENOENT;
  weft_port_start(p, echo_on_message);
  return bench_post_op(p, BENCH_OP_READY);
}

static void taker_on_message(weft_port_t *port, weft_msg_t *msg) {
  weft_buf_t *b;
  uint64_t ok = weft_msg_take_buf(msg, 0, &b) == 0 && weft_buf_len(b) == XFER_SIZE;
  if (ok)
    weft_buf_free(b);
  weft_msg_free(msg);
  weft_msg_t *m;
  weft_msg_new(&m);
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "op", BENCH_OP_DONE);
  weft_msg_put_u64(m, "ok", ok);
  if (weft_port_post(port, m) != 0)
    weft_msg_free(m);
}

static int child_taker(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  if (p == NULL)
    return WEFT_ENOENT;
  weft_port_start(p, taker_on_message);
  return bench_post_op(p, BENCH_OP_READY);
}

bool bench_child_main(int *code) {
  if (getenv("WEFT_ENTRY") == NULL)
    return false;
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0) {
    *code = 1;
    return true;
  }
  weft_runtime_register(rt, "sink", child_sink);
  weft_runtime_register(rt, "echo", child_echo);
  weft_runtime_register(rt, "taker", child_taker);
  int err = weft_runtime_child_entry(rt, code);
  weft_runtime_free(rt);
  if (err)
    *code = 1;
  return true;
}

/* ---- parent side --------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_child_t *child;
  weft_port_t *port;
  uint64_t n, sent, done, eagain, t0, t1, bad;
  double *lat;
  uint64_t t_sent;
  int phase, err, inflight;
} parent_t;

static parent_t par;

static int spawn_child(const char *entry, weft_port_message_cb on_message) {
  char exe[4096];
  size_t sz = sizeof(exe);
  int err = uv_exepath(exe, &sz);
  if (err)
    return err;
  const char *args[] = {exe, NULL};
  weft_child_options_t o = {.entry_name = entry, .args = args, .on_message = on_message};
  err = weft_child_spawn(weft_runtime_main(par.rt), &o, &par.child);
  if (err)
    return err;
  par.port = weft_child_port(par.child);
  return 0;
}

static void oneway_pump(weft_port_t *port) {
  while (par.sent < par.n) {
    weft_msg_t *m;
    weft_msg_new(&m);
    weft_msg_put_map(m, 2);
    weft_msg_put_u64(m, "seq", par.sent);
    weft_msg_put_str(m, "tag", TAG);
    int err = weft_port_post(port, m);
    if (err) {
      weft_msg_free(m);
      if (err == WEFT_EAGAIN) {
        par.eagain++;
        return;
      }
      par.err = err;
      weft_port_close(port);
      return;
    }
    par.sent++;
  }
}

static void oneway_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t op = bench_msg_get_op(msg);
  if (op == BENCH_OP_READY) {
    weft_msg_free(msg);
    par.t0 = bench_now_ns();
    oneway_pump(port);
    return;
  }
  par.t1 = bench_now_ns();
  weft_msg_get_u64(msg, "count", &par.done);
  weft_msg_get_u64(msg, "bad", &par.bad);
  weft_msg_free(msg);
  weft_port_close(port);
}

int bench_child_oneway(const bench_args_t *a) {
  memset(&par, 0, sizeof(par));
  par.n = a->n ? a->n : 2000000;
  int err = weft_runtime_new(&par.rt, NULL);
  if (err)
    return bench_fail("child_oneway", "weft_runtime_new", err);
  err = spawn_child("sink", oneway_on_message);
  if (!err)
    err = weft_port_on_drain(par.port, oneway_pump);
  weft_msg_t *first;
  if (!err && (err = weft_msg_new(&first)) == 0) {
    weft_msg_put_map(first, 1);
    weft_msg_put_u64(first, "n", par.n);
    if ((err = weft_port_post(par.port, first)) != 0)
      weft_msg_free(first);
  }
  if (!err)
    err = weft_runtime_run(par.rt);
  weft_runtime_free(par.rt);
  if (!err && (par.done != par.n || par.bad))
    err = WEFT_EPROTO;
  if (err || par.err)
    return bench_fail("child_oneway", "streaming to the child", err ? err : par.err);
  double s = (double)(par.t1 - par.t0) / 1e9;
  bench_emit("child_oneway", a->rep, "\"msgs_per_s\":%.0f,\"n\":%llu,\"eagain\":%llu",
             (double)par.n / s, (unsigned long long)par.n, (unsigned long long)par.eagain);
  return 0;
}

static void pp_ping(weft_port_t *port) {
  weft_msg_t *m;
  weft_msg_new(&m);
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "op", BENCH_OP_PING);
  weft_msg_put_u64(m, "seq", par.done);
  par.t_sent = bench_now_ns();
  if (weft_port_post(port, m) != 0) {
    weft_msg_free(m);
    par.err = WEFT_ECLOSED;
    weft_port_close(port);
  }
}

#define PP_WARMUP 1000u

static void pp_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t now = bench_now_ns();
  uint64_t op = bench_msg_get_op(msg);
  weft_msg_free(msg);
  if (op == BENCH_OP_PING) {
    if (par.done >= PP_WARMUP)
      par.lat[par.done - PP_WARMUP] = (double)(now - par.t_sent) / 1e3;
    if (++par.done == PP_WARMUP)
      par.t0 = now;
    if (par.done == PP_WARMUP + par.n) {
      par.t1 = now;
      weft_port_close(port);
      return;
    }
  }
  pp_ping(port);
}

int bench_child_pingpong(const bench_args_t *a) {
  memset(&par, 0, sizeof(par));
  par.n = a->n ? a->n : 100000;
  par.lat = calloc(par.n, sizeof(double));
  int err = par.lat ? weft_runtime_new(&par.rt, NULL) : WEFT_ENOMEM;
  if (err)
    return bench_fail("child_pingpong", "setup", err);
  err = spawn_child("echo", pp_on_message);
  if (!err)
    err = weft_runtime_run(par.rt);
  weft_runtime_free(par.rt);
  if (err || par.err || par.done != PP_WARMUP + par.n) {
    free(par.lat);
    return bench_fail("child_pingpong", "round trips", err ? err : WEFT_EPROTO);
  }
  double s = (double)(par.t1 - par.t0) / 1e9;
  double p50 = bench_percentile(par.lat, par.n, 50), p99 = bench_percentile(par.lat, par.n, 99);
  bench_emit("child_pingpong", a->rep, "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"n\":%llu",
             p50, p99, (double)par.n / s, (unsigned long long)par.n);
  free(par.lat);
  return 0;
}

static void xfer_send(weft_port_t *port) {
  while (par.inflight < XFER_WINDOW && par.sent < par.n) {
    weft_buf_t *b;
    weft_msg_t *m;
    int err = weft_buf_new(&b, XFER_SIZE);
    if (!err && (err = weft_msg_new(&m)) == 0) {
      weft_msg_put_u64(m, NULL, par.sent);
      err = weft_msg_add_buf(m, b);
      if (!err)
        err = weft_port_post(port, m);
      if (err)
        weft_msg_free(m);
    }
    weft_buf_free(b);
    if (err) {
      par.err = err;
      weft_port_close(port);
      return;
    }
    par.sent++;
    par.inflight++;
  }
}

static void xfer_on_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t op = bench_msg_get_op(msg), ok = 0;
  weft_msg_get_u64(msg, "ok", &ok);
  weft_msg_free(msg);
  if (op == BENCH_OP_READY) {
    par.t0 = bench_now_ns();
    xfer_send(port);
    return;
  }
  par.inflight--;
  par.bad += !ok;
  if (++par.done == par.n) {
    par.t1 = bench_now_ns();
    weft_port_close(port);
    return;
  }
  xfer_send(port);
}

int bench_child_transfer(const bench_args_t *a) {
  memset(&par, 0, sizeof(par));
  par.n = a->n ? a->n : 2000;
  int err = weft_runtime_new(&par.rt, NULL);
  if (err)
    return bench_fail("child_transfer", "weft_runtime_new", err);
  err = spawn_child("taker", xfer_on_message);
  if (!err)
    err = weft_runtime_run(par.rt);
  weft_runtime_free(par.rt);
  if (err || par.err || par.done != par.n || par.bad)
    return bench_fail("child_transfer", "moving buffers", err ? err : par.err ? par.err : WEFT_EPROTO);
  double us = (double)(par.t1 - par.t0) / 1e3 / (double)par.n;
  bench_emit("child_transfer", a->rep, "\"size_mib\":16,\"us_per_msg\":%.2f,\"n\":%llu", us,
             (unsigned long long)par.n);
  return 0;
}
