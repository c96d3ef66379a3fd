/* transfer.c: the `transfer` shape: the main context moves N owned buffers
 * of one size to a worker (weft_buf_new, weft_msg_add_buf, post); the worker
 * takes each out of its message, checks its length and frees it. Measured:
 * microseconds per message, at 1, 16 and 64 MiB (or --size), to show that a
 * move costs the same whatever the size. Neither side touches the bytes, like
 * the Node.js peer (node/transfer.js: a new ArrayBuffer in the transferList).
 *
 * The parent channel's byte bound is raised to four buffers so that a 64 MiB
 * message fits; past it the sender waits for the drain callback.
 *
 * Threads: taker_* on the worker's context; parcel_new and the stream
 * (stream.c) on the main context. */
#include <stdlib.h>

#include "bench.h"

#define SHAPE "transfer"
#define DEFAULT_N 1000u
#define MiB (1024u * 1024u)
#define WINDOW 64u

/* ---- worker side -------------------------------------------------------- */

typedef struct {
  uint64_t n, size, got, bad;
} taker_t;

static void taker_report(weft_port_t *port, taker_t *t) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return;
  weft_msg_put_map(m, 3);
  weft_msg_put_u64(m, "op", BENCH_OP_DONE);
  weft_msg_put_u64(m, "count", t->got);
  weft_msg_put_u64(m, "bad", t->bad);
  if (weft_port_post(port, m) != 0)
    weft_msg_free(m);
}

static void taker_on_message(weft_port_t *port, weft_msg_t *msg) {
  taker_t *t = weft_port_data(port);
  weft_buf_t *buf;
  if (weft_msg_take_buf(msg, 0, &buf) != 0) {
    t->bad++;
  } else {
    if (weft_buf_len(buf) != t->size || weft_buf_ptr(buf) == NULL)
      t->bad++;
    weft_buf_free(buf);
  }
  weft_msg_free(msg);
  if (++t->got == t->n)
    taker_report(port, t);
}

static void taker_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  free(weft_port_data(port));
}

static int taker_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  taker_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return WEFT_ENOMEM;
  weft_msg_get_u64(data, "n", &t->n);
  weft_msg_get_u64(data, "size", &t->size);
  weft_port_t *port = weft_ctx_parent_port(ctx);
  weft_port_set_data(port, t);
  int err = weft_port_on_close(port, taker_on_close);
  if (err) {
    free(t);
    return err;
  }
  err = weft_port_start(port, taker_on_message);
  if (err)
    return err;
  return bench_post_op(port, BENCH_OP_READY);
}

/* ---- main side ---------------------------------------------------------- */

typedef struct {
  bench_stream_t s; /* first: the stream's make callback gets the giver */
  void *region;     /* wrap mode: the bytes every message carries; else NULL */
  uint64_t size, not_detached;
} giver_t;

/* A message {seq} carrying a new owned buffer of g->size bytes. */
static int parcel_new(bench_stream_t *s, weft_msg_t **out) {
  giver_t *g = (giver_t *)(void *)s;
  weft_buf_t *buf;
  int err = g->region ? weft_buf_wrap(&buf, g->region, g->size, NULL, NULL)
                      : weft_buf_new(&buf, g->size);
  if (err)
    return err;
  weft_msg_t *m;
  err = weft_msg_new(&m);
  if (err) {
    weft_buf_free(buf);
    return err;
  }
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "seq", s->sent);
  err = weft_msg_add_buf(m, buf);
  if (!err && !weft_buf_is_detached(buf))
    g->not_detached++;
  weft_buf_free(buf); /* the handle; the bytes are in the message */
  if (err) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

static int transfer_size(const bench_args_t *args, uint64_t size, void *region) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail(SHAPE, "weft_runtime_new", err);
  giver_t g = {.s = {.n = args->n ? args->n : DEFAULT_N, .make = parcel_new},
               .size = size,
               .region = region};
  weft_worker_options_t opts = {
      .entry = taker_entry,
      .port_hwm_msgs = WINDOW,
      .port_hwm_bytes = WINDOW * size + MiB,
  };
  err = bench_stream_start(weft_runtime_main(rt), &g.s, &opts, size);
  if (err)
    bench_fail(SHAPE, "starting the worker", err);
  else
    err = weft_runtime_run(rt);
  int bad = bench_stream_check(SHAPE, &g.s);
  if (!bad && g.not_detached)
    bad = bench_fail(SHAPE, "checking the sender's handles were detached", WEFT_EPROTO);
  if (!err)
    err = bad;
  if (!err)
    bench_emit(SHAPE, args->rep,
               "\"size_mib\":%g,\"alloc\":\"%s\",\"us_per_msg\":%.3f,\"n\":%llu,"
               "\"eagain\":%llu",
               (double)size / MiB, region ? "wrap" : "new",
               (double)(g.s.t1 - g.s.t0) / 1e3 / (double)g.s.n, (unsigned long long)g.s.n,
               (unsigned long long)g.s.eagain);
  weft_runtime_free(rt);
  return err;
}

/* Both modes at one size. */
static int transfer_both(const bench_args_t *args, uint64_t size) {
  int err = transfer_size(args, size, NULL);
  if (err)
    return err;
  void *region = malloc(size);
  if (region == NULL)
    return bench_fail(SHAPE, "allocating the wrapped region", WEFT_ENOMEM);
  err = transfer_size(args, size, region);
  free(region);
  return err;
}

int bench_transfer(const bench_args_t *args) {
  static const uint64_t sizes[] = {1 * MiB, 16 * MiB, 64 * MiB};
  if (args->size)
    return transfer_both(args, args->size);
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    int err = transfer_both(args, sizes[i]);
    if (err)
      return err;
  }
  return 0;
}
