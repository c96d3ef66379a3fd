/* parent_worker_messaging.c: a parent and a worker talking over the worker's
 * channel.
 *
 * Node:
 *   worker.postMessage({ seq, text });              // parent
 *   parentPort.on('message', (m) => parentPort.postMessage({ seq: m.seq, ... }));
 *
 * weft: the parent posts N records {seq, text} on weft_worker_port(w) right
 * after spawning (what is posted before the worker is online waits in the
 * channel). The worker starts its parent port and answers each record with
 * {seq, reply, len}. When the parent has every answer it closes its end: the
 * worker's parent port sees the close, nothing keeps the worker's loop alive,
 * the worker exits, and the main loop ends in turn.
 *
 * Ownership: a successful post takes the message; on failure it is still ours
 * (freed here). A delivered message belongs to the callback, which frees it.
 *
 * Usage: parent_worker_messaging [--demo]   (--demo: 5 records, else 20) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* Posts {seq, text}. A successful post takes the message; on failure it is
 * still ours, so we free it. Build errors are kept in the message and show up
 * as the post's error. */
static int post_record(weft_port_t *port, uint64_t seq, const char *text) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "seq", seq);
  weft_msg_put_str(m, "text", text);
  err = weft_port_post(port, m);
  if (err)
    weft_msg_free(m);
  return err;
}

/* Posts {seq, reply, len}: the worker's answer. */
static int post_answer(weft_port_t *port, uint64_t seq, const char *reply, uint64_t len) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 3);
  weft_msg_put_u64(m, "seq", seq);
  weft_msg_put_str(m, "reply", reply);
  weft_msg_put_u64(m, "len", len);
  err = weft_port_post(port, m);
  if (err)
    weft_msg_free(m);
  return err;
}

/* ---- worker thread --------------------------------------------------------- */

static void on_record(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t seq;
  const char *text;
  size_t len;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0 &&
      weft_msg_get_str(msg, "text", &text, &len) == 0) {
    printf("[worker] got    {seq: %llu, text: \"%.*s\"}\n", (unsigned long long)seq,
           (int)len, text);
    char reply[96];
    snprintf(reply, sizeof(reply), "ack %.*s", (int)len, text);
    check(post_answer(parent, seq, reply, len), "worker post");
  }
  weft_msg_free(msg); /* delivered messages are ours */
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  /* A started port keeps this worker's loop alive until the channel closes. */
  return weft_port_start(weft_ctx_parent_port(ctx), on_record);
}

/* ---- main thread ----------------------------------------------------------- */

static uint64_t records;  /* how many the parent sends */
static uint64_t answered;

static void on_answer(weft_port_t *port, weft_msg_t *msg) {
  uint64_t seq, len;
  const char *reply;
  size_t n;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0 && weft_msg_get_u64(msg, "len", &len) == 0 &&
      weft_msg_get_str(msg, "reply", &reply, &n) == 0)
    printf("[main  ] answer {seq: %llu, reply: \"%.*s\", len: %llu}\n",
           (unsigned long long)seq, (int)n, reply, (unsigned long long)len);
  weft_msg_free(msg);
  if (++answered == records)
    weft_port_close(port); /* done: the worker sees the close and exits */
}

static void on_worker_exit(weft_worker_t *w, int code) {
  (void)w;
  printf("[main  ] worker exited with code %d after %llu answers\n", code,
         (unsigned long long)answered);
}

int main(int argc, char **argv) {
  bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  records = demo ? 5 : 20;

  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_worker_options_t opts = {
      .entry = worker_entry,
      .on_message = on_answer, /* messages the worker posts to its parent port */
      .on_exit = on_worker_exit,
  };
  weft_worker_t *w;
  check(weft_worker_spawn(weft_runtime_main(rt), &opts, &w), "weft_worker_spawn");

  for (uint64_t seq = 1; seq <= records; seq++) {
    char text[32];
    snprintf(text, sizeof(text), "record #%llu", (unsigned long long)seq);
    check(post_record(weft_worker_port(w), seq, text), "post");
    printf("[main  ] posted {seq: %llu, text: \"%s\"}\n", (unsigned long long)seq, text);
  }

  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return answered == records ? 0 : 1;
}
