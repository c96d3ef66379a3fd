/* stream.c: the sending side shared by the shapes that stream messages to a
 * worker (oneway, transfer): wait for the worker's READY, post n messages,
 * keep a refused one (WEFT_EAGAIN) and post it first from the drain
 * callback, take the worker's DONE {count, bad}. Main thread. */
#include "bench.h"

static void stream_fail(bench_stream_t *s, int err) {
  s->err = err;
  weft_port_close(s->port);
}

/* Post until done or refused. */
static void stream_pump(bench_stream_t *s) {
  while (s->sent < s->n) {
    weft_msg_t *m = s->held;
    s->held = NULL;
    int err = m ? 0 : s->make(s, &m);
    if (err) {
      stream_fail(s, err);
      return;
    }
    err = weft_port_post(s->port, m);
    if (err == WEFT_EAGAIN) {
      s->held = m;
      s->eagain++;
      return;
    }
    if (err) {
      weft_msg_free(m);
      stream_fail(s, err);
      return;
    }
    s->sent++;
  }
}

static void stream_on_drain(weft_port_t *port) { stream_pump(weft_port_data(port)); }

static void stream_on_message(weft_port_t *port, weft_msg_t *msg) {
  bench_stream_t *s = weft_port_data(port);
  uint64_t op = bench_msg_get_op(msg);
  if (op == BENCH_OP_READY) {
    s->t0 = bench_now_ns();
    stream_pump(s);
  } else if (op == BENCH_OP_DONE) {
    s->t1 = bench_now_ns();
    weft_msg_get_u64(msg, "count", &s->count);
    weft_msg_get_u64(msg, "bad", &s->bad);
    weft_port_close(port);
  }
  weft_msg_free(msg);
}

int bench_stream_start(weft_ctx_t *ctx, bench_stream_t *s, weft_worker_options_t *opts,
                       uint64_t size) {
  opts->on_message = stream_on_message;
  int err = bench_worker_data(&opts->msg, s->n, size);
  if (err)
    return err;
  weft_worker_t *w;
  err = weft_worker_spawn(ctx, opts, &w);
  if (err) {
    weft_msg_free(opts->msg);
    return err;
  }
  s->port = weft_worker_port(w);
  weft_port_set_data(s->port, s);
  return weft_port_on_drain(s->port, stream_on_drain);
}

int bench_stream_check(const char *shape, bench_stream_t *s) {
  weft_msg_free(s->held);
  s->held = NULL;
  if (s->err)
    return bench_fail(shape, "posting", s->err);
  if (s->count != s->n || s->bad != 0 || s->t1 <= s->t0)
    return bench_fail(shape, "checking what the worker saw", WEFT_EPROTO);
  return 0;
}
