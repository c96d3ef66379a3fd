/* worker_to_worker.c: two workers talking directly over a channel made in main.
 *
 * Node:
 *   const { port1, port2 } = new MessageChannel();
 *   pinger.postMessage({ port: port1 }, [port1]);
 *   ponger.postMessage({ port: port2 }, [port2]);
 *
 * weft: main makes a channel (two entangled ports, both on the main context),
 * then moves one port to each worker inside a message (weft_msg_add_port). A
 * port in transit keeps what reaches it and delivers it on its new owner. The
 * workers then exchange ping/pong without main in the middle. After the last
 * pong the pinger closes its port; both workers see their peer port close,
 * close their parent port too, and with nothing left to keep their loops alive
 * they exit. Main only spawns, hands out the ports and waits.
 *
 * Threads: each worker's callbacks run on that worker's thread; main's on the
 * main thread. A port is used only by the context that owns it.
 *
 * Usage: worker_to_worker [--demo]   (--demo: 5 rounds, else 1000 quietly) */
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

static bool verbose;

/* Posts {op, n} on port; frees the message if the post fails. */
static int post_op(weft_port_t *port, const char *op, uint64_t n) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "op", op);
  weft_msg_put_u64(m, "n", n);
  err = weft_port_post(port, m);
  if (err)
    weft_msg_free(m);
  return err;
}

static bool op_is(const weft_msg_t *m, const char *op) {
  const char *s;
  size_t n;
  return weft_msg_get_str(m, "op", &s, &n) == 0 && n == strlen(op) && memcmp(s, op, n) == 0;
}

/* ---- worker threads -------------------------------------------------------- */

typedef struct {
  const char *name; /* "pinger" or "ponger" */
  uint64_t rounds;
  uint64_t received; /* messages from the other worker */
} peer_state_t;

static void on_peer_message(weft_port_t *peer, weft_msg_t *msg) {
  peer_state_t *st = weft_port_data(peer);
  uint64_t n = 0;
  weft_msg_get_u64(msg, "n", &n);
  st->received++;
  if (op_is(msg, "ping")) {
    if (verbose)
      printf("[%s] ping %llu -> pong\n", st->name, (unsigned long long)n);
    check(post_op(peer, "pong", n), "post pong");
  } else if (op_is(msg, "pong")) {
    if (verbose)
      printf("[%s] pong %llu\n", st->name, (unsigned long long)n);
    if (n == st->rounds)
      weft_port_close(peer); /* done: the ponger sees the close */
    else
      check(post_op(peer, "ping", n + 1), "post ping");
  }
  weft_msg_free(msg);
}

/* Called once on each worker when the worker-to-worker channel closes. */
static void on_peer_closed(weft_port_t *peer, const weft_port_close_info_t *info) {
  peer_state_t *st = weft_port_data(peer);
  printf("[%s] peer channel closed (%s) after %llu messages, leaving\n", st->name,
         info->reason == 0 ? "closed here" : "closed by the other worker",
         (unsigned long long)st->received);
  free(st);
  /* Without a started parent port nothing keeps this loop alive: the worker exits. */
  weft_port_close(weft_ctx_parent_port(weft_ctx_current()));
}

/* The parent's one message: {op: "port", role, rounds} carrying a port. */
static void on_parent_message(weft_port_t *parent, weft_msg_t *msg) {
  (void)parent;
  weft_port_t *peer;
  peer_state_t *st = calloc(1, sizeof(*st));
  check(st ? 0 : UV_ENOMEM, "calloc");
  check(weft_msg_take_port(msg, 0, &peer), "weft_msg_take_port"); /* now ours */
  st->name = op_is(msg, "pinger") ? "pinger" : "ponger";
  weft_msg_get_u64(msg, "n", &st->rounds);
  weft_msg_free(msg);

  weft_port_set_data(peer, st);
  check(weft_port_on_close(peer, on_peer_closed), "weft_port_on_close");
  check(weft_port_start(peer, on_peer_message), "weft_port_start");
  printf("[%s] got my end of the channel\n", st->name);
  if (strcmp(st->name, "pinger") == 0)
    check(post_op(peer, "ping", 1), "post first ping");
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), on_parent_message);
}

/* ---- main thread ----------------------------------------------------------- */

static void on_worker_exit(weft_worker_t *w, int code) {
  printf("[main  ] %s exited with code %d\n", (const char *)weft_worker_data(w), code);
}

static weft_worker_t *spawn(weft_ctx_t *ctx, const char *name) {
  weft_worker_options_t opts = {
      .entry = worker_entry,
      .on_exit = on_worker_exit,
      .data = (void *)name,
  };
  weft_worker_t *w;
  check(weft_worker_spawn(ctx, &opts, &w), "weft_worker_spawn");
  return w;
}

/* Moves port to worker w inside {op: role, n: rounds}. */
static void give_port(weft_worker_t *w, weft_port_t *port, const char *role, uint64_t rounds) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "op", role);
  weft_msg_put_u64(m, "n", rounds);
  check(weft_msg_add_port(m, port), "weft_msg_add_port"); /* port now travels with m */
  check(weft_port_post(weft_worker_port(w), m), "weft_port_post");
}

int main(int argc, char **argv) {
  bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  uint64_t rounds = demo ? 5 : 1000;
  verbose = demo;

  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *main_ctx = weft_runtime_main(rt);

  weft_worker_t *pinger = spawn(main_ctx, "pinger");
  weft_worker_t *ponger = spawn(main_ctx, "ponger");

  weft_port_t *ports[2];
  check(weft_channel_new(main_ctx, ports), "weft_channel_new");
  give_port(pinger, ports[0], "pinger", rounds);
  give_port(ponger, ports[1], "ponger", rounds);
  printf("[main  ] channel made, one end moved to each worker (%llu rounds)\n",
         (unsigned long long)rounds);

  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return 0;
}
