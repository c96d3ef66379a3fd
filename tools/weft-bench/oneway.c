/* oneway.c: the `oneway` shape: the main context streams N small records
 * {seq, tag} to a worker, which reads both fields back and checks that seq
 * arrives in order. Measured: msgs/s from the worker's READY to its DONE.
 *
 * Backpressure: the sender posts until WEFT_EAGAIN, keeps the refused message
 * and resumes from the port's drain callback. The Node.js peer is
 * tools/bench/node/oneway.js.
 *
 * Threads: the stream (stream.c) runs on the main context, sink_* on the
 * worker's. They share nothing but the channel. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define SHAPE "oneway"
#define DEFAULT_N 2000000u
#define TAG "hello"

/* ---- worker side -------------------------------------------------------- */

typedef struct {
  uint64_t n;
  uint64_t next; /* the seq expected next */
  uint64_t bad;  /* out of order, or a field missing or wrong */
} sink_t;

static void sink_report(weft_port_t *port, sink_t *s) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return;
  weft_msg_put_map(m, 3);
  weft_msg_put_u64(m, "op", BENCH_OP_DONE);
  weft_msg_put_u64(m, "count", s->next);
  weft_msg_put_u64(m, "bad", s->bad);
  if (weft_port_post(port, m) != 0)
    weft_msg_free(m);
}

static void sink_on_message(weft_port_t *port, weft_msg_t *msg) {
  sink_t *s = weft_port_data(port);
  uint64_t seq;
  const char *tag;
  size_t len;
  if (weft_msg_get_u64(msg, "seq", &seq) != 0 || seq != s->next ||
      weft_msg_get_str(msg, "tag", &tag, &len) != 0 || len != strlen(TAG))
    s->bad++;
  weft_msg_free(msg);
  if (++s->next == s->n)
    sink_report(port, s);
}

static void sink_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  free(weft_port_data(port));
}

static int sink_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  sink_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  weft_msg_get_u64(data, "n", &s->n);
  weft_port_t *port = weft_ctx_parent_port(ctx);
  weft_port_set_data(port, s);
  int err = weft_port_on_close(port, sink_on_close);
  if (err) {
    free(s);
    return err;
  }
  err = weft_port_start(port, sink_on_message);
  if (err)
    return err;
  return bench_post_op(port, BENCH_OP_READY);
}

/* ---- main side ---------------------------------------------------------- */

static int record_new(bench_stream_t *s, weft_msg_t **out) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "seq", s->sent);
  err = weft_msg_put_str(m, "tag", TAG);
  if (err) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

int bench_oneway(const bench_args_t *args) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail(SHAPE, "weft_runtime_new", err);
  bench_stream_t s = {.n = args->n ? args->n : DEFAULT_N, .make = record_new};
  weft_worker_options_t opts = {.entry = sink_entry};
  err = bench_stream_start(weft_runtime_main(rt), &s, &opts, 0);
  if (err)
    bench_fail(SHAPE, "starting the worker", err);
  else
    err = weft_runtime_run(rt);
  int bad = bench_stream_check(SHAPE, &s);
  if (!err)
    err = bad;
  if (!err)
    bench_emit(SHAPE, args->rep, "\"msgs_per_s\":%.0f,\"n\":%llu,\"eagain\":%llu",
               (double)s.n * 1e9 / (double)(s.t1 - s.t0), (unsigned long long)s.n,
               (unsigned long long)s.eagain);
  weft_runtime_free(rt);
  return err;
}
