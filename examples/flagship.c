/* flagship.c: weft's first milestone in one program.
 *
 * 1. Spawns 2 workers.
 * 2. Streams 1,000,000 small messages from main to them (half each) with
 *    backpressure: each worker's inbound queue is bounded at 1024 messages, a
 *    post past the bound returns WEFT_EAGAIN and leaves the message with us,
 *    and the port's drain callback resumes the stream once the worker has
 *    caught up. Each worker reports how many items and what sum it received.
 * 3. Moves a 16 MiB buffer to worker 0 (no copy) and prints how many
 *    microseconds the bytes took to arrive, and the worker's checksum.
 * 4. Spawns 10,000 actors on the main context and sends each a message.
 * 5. Asks every context for its stats (weft_ctx_stats: messages in/out,
 *    queue peak, wake-ups, loop utilisation), prints them and a summary, then
 *    closes the workers' ports: the workers exit and the program ends.
 * Later milestones extend it (supervisor, pool, child process).
 *
 * Protocol, main -> worker: {op: "item", seq}, {op: "end"}, {op: "buf",
 * sent_ns} + a buffer, {op: "stats"}. Worker -> main: {op: "ended", items,
 * sum}, {op: "buf", transit_ns, checksum}, {op: "stats", ...}.
 *
 * Threads: main(), the phase functions, the actors and every on_* callback of
 * a worker handle run on the main thread; worker_entry and on_parent_message
 * on each worker's thread.
 *
 * Usage: flagship [--demo]   (same run either way; exits by itself) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define WORKERS 2
#define STREAM_MSGS 1000000u
#define STREAM_HWM 1024u
#define BIG_LEN (16u * 1024u * 1024u)
#define ACTORS 10000u

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

static bool op_is(const weft_msg_t *m, const char *op) {
  const char *s;
  size_t n;
  return weft_msg_get_str(m, "op", &s, &n) == 0 && n == strlen(op) && memcmp(s, op, n) == 0;
}

/* A message {op} with room for `more` further map entries, which the caller
 * appends. Build errors are kept in the message and returned by the post. */
static weft_msg_t *new_op(const char *op, uint32_t more) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 1 + more);
  weft_msg_put_str(m, "op", op);
  return m;
}

/* Posts m; a post that fails leaves m with us, so free it and stop. */
static void post_or_die(weft_port_t *port, weft_msg_t *m) {
  int err = weft_port_post(port, m);
  if (err)
    weft_msg_free(m);
  check(err, "weft_port_post");
}

static uint64_t checksum(const void *p, size_t len) {
  const uint64_t *w = p;
  uint64_t sum = 0;
  for (size_t i = 0; i < len / sizeof(*w); i++)
    sum = ((sum << 7) | (sum >> 57)) ^ w[i];
  return sum;
}

/* ---- worker threads -------------------------------------------------------- */

typedef struct {
  uint64_t items, sum;
} worker_state_t;

static void reply_stats(weft_port_t *parent) {
  weft_ctx_stats_t st;
  check(weft_ctx_stats(weft_port_ctx(parent), &st), "weft_ctx_stats");
  weft_msg_t *m = new_op("stats", 5);
  weft_msg_put_u64(m, "msgs_in", st.msgs_in);
  weft_msg_put_u64(m, "msgs_out", st.msgs_out);
  weft_msg_put_u64(m, "queue_peak", st.queue_peak);
  weft_msg_put_u64(m, "wakeups", st.wakeups);
  weft_msg_put_f64(m, "util", st.loop_utilization);
  post_or_die(parent, m);
}

static void reply_buf(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t arrived = uv_hrtime(), sent = 0;
  weft_msg_get_u64(msg, "sent_ns", &sent);
  weft_buf_t *buf;
  check(weft_msg_take_buf(msg, 0, &buf), "weft_msg_take_buf");
  weft_msg_t *m = new_op("buf", 2);
  weft_msg_put_u64(m, "transit_ns", arrived - sent);
  weft_msg_put_u64(m, "checksum", checksum(weft_buf_ptr(buf), weft_buf_len(buf)));
  weft_buf_free(buf);
  post_or_die(parent, m);
}

static void on_parent_message(weft_port_t *parent, weft_msg_t *msg) {
  worker_state_t *ws = weft_port_data(parent);
  uint64_t seq;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0) { /* the hot path: {op: "item", seq} */
    ws->items++;
    ws->sum += seq;
  } else if (op_is(msg, "end")) {
    weft_msg_t *m = new_op("ended", 2);
    weft_msg_put_u64(m, "items", ws->items);
    weft_msg_put_u64(m, "sum", ws->sum);
    post_or_die(parent, m);
  } else if (op_is(msg, "buf")) {
    reply_buf(parent, msg);
  } else if (op_is(msg, "stats")) {
    reply_stats(parent);
  }
  weft_msg_free(msg);
}

static void on_parent_closed(weft_port_t *parent, const weft_port_close_info_t *info) {
  (void)info;
  free(weft_port_data(parent)); /* last callback of this port */
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *parent = weft_ctx_parent_port(ctx);
  worker_state_t *ws = calloc(1, sizeof(*ws));
  if (ws == NULL)
    return UV_ENOMEM;
  weft_port_set_data(parent, ws);
  weft_port_on_close(parent, on_parent_closed);
  return weft_port_start(parent, on_parent_message); /* runs until main closes it */
}

/* ---- main thread: state ---------------------------------------------------- */

typedef struct {
  weft_worker_t *w;
  int id;
  uint64_t first_seq, to_send, sent; /* the stream: seqs [first_seq, first_seq + to_send) */
  bool end_sent;
  weft_msg_t *held;                  /* refused with WEFT_EAGAIN: posted again first */
  uint64_t stalls;                   /* WEFT_EAGAIN episodes */
  uint64_t items, sum;               /* what the worker says it got */
  weft_ctx_stats_t stats;            /* the worker's, from its answer */
} link_t;

static struct {
  link_t links[WORKERS];
  int ended, stats_in;
  uint64_t stream_t0, stream_ns;
  uint64_t big_transit_ns, big_sum, big_expected;
  uint64_t actors_spawn_ns, actors_deliver_ns, actor_t0, actors_done;
  uint64_t *actor_state; /* one counter per actor */
  int failures;
} app;

static void start_buffer_phase(void);
static void start_actor_phase(void);
static void start_stats_phase(void);
static void finish(void);

/* ---- phase 1: the stream, with backpressure -------------------------------- */

static weft_msg_t *next_stream_msg(link_t *l) {
  if (l->sent == l->to_send)
    return new_op("end", 0);
  weft_msg_t *m = new_op("item", 1);
  weft_msg_put_u64(m, "seq", l->first_seq + l->sent);
  return m;
}

/* Posts until the stream is done or the worker's queue is full. */
static void pump(link_t *l) {
  while (!l->end_sent) {
    weft_msg_t *m = l->held ? l->held : next_stream_msg(l);
    l->held = NULL;
    int err = weft_port_post(weft_worker_port(l->w), m);
    if (err == WEFT_EAGAIN) { /* m is still ours: keep it for on_drain */
      l->held = m;
      l->stalls++;
      return;
    }
    if (err)
      weft_msg_free(m);
    check(err, "weft_port_post");
    if (l->sent == l->to_send)
      l->end_sent = true;
    else
      l->sent++;
  }
}

/* The worker's queue fell below half its bound: resume. */
static void on_drain(weft_port_t *port) { pump(weft_port_data(port)); }

static void on_ended(link_t *l, weft_msg_t *msg) {
  weft_msg_get_u64(msg, "items", &l->items);
  weft_msg_get_u64(msg, "sum", &l->sum);
  uint64_t a = l->first_seq, b = l->first_seq + l->to_send; /* sum of [a, b) */
  uint64_t want_sum = (b * (b - 1) - a * (a - 1)) / 2;
  if (l->items != l->to_send || l->sum != want_sum)
    app.failures++;
  printf("[main    ] worker %d got %llu items (sum %s), %llu EAGAIN stalls on the way\n", l->id,
         (unsigned long long)l->items, l->sum == want_sum ? "ok" : "WRONG",
         (unsigned long long)l->stalls);
  if (++app.ended == WORKERS) {
    app.stream_ns = uv_hrtime() - app.stream_t0;
    printf("[main    ] stream done: %u messages in %.1f ms (%.2f M msg/s)\n", STREAM_MSGS,
           app.stream_ns / 1e6, STREAM_MSGS / (app.stream_ns / 1e9) / 1e6);
    start_buffer_phase();
  }
}

/* ---- phase 2: a 16 MiB buffer moved, not copied ---------------------------- */

static void start_buffer_phase(void) {
  weft_buf_t *big;
  check(weft_buf_new(&big, BIG_LEN), "weft_buf_new");
  uint64_t *words = weft_buf_ptr(big);
  for (size_t i = 0; i < BIG_LEN / sizeof(*words); i++)
    words[i] = i * 0x9E3779B97F4A7C15ull;
  app.big_expected = checksum(words, BIG_LEN);

  weft_msg_t *m = new_op("buf", 1);
  weft_msg_put_u64(m, "sent_ns", uv_hrtime());
  check(weft_msg_add_buf(m, big), "weft_msg_add_buf"); /* big is detached from here on */
  post_or_die(weft_worker_port(app.links[0].w), m);
  printf("[main    ] 16 MiB buffer posted; my handle's length is now %zu\n", weft_buf_len(big));
  weft_buf_free(big);
}

static void on_buf_answer(weft_msg_t *msg) {
  weft_msg_get_u64(msg, "transit_ns", &app.big_transit_ns);
  weft_msg_get_u64(msg, "checksum", &app.big_sum);
  if (app.big_sum != app.big_expected)
    app.failures++;
  printf("[main    ] worker 0 had the 16 MiB %.1f us after the post (checksum %s)\n",
         app.big_transit_ns / 1e3, app.big_sum == app.big_expected ? "ok" : "WRONG");
  start_actor_phase();
}

/* ---- phase 3: 10,000 actors ------------------------------------------------ */

/* Each actor adds what it is sent to its own counter (its state). */
static void actor_behaviour(weft_port_t *self, weft_msg_t *msg) {
  uint64_t *counter = weft_port_data(self);
  uint64_t v = 0;
  weft_msg_get_u64(msg, NULL, &v); /* the payload is one bare integer */
  weft_msg_free(msg);
  *counter += v;
  if (++app.actors_done < ACTORS)
    return;
  app.actors_deliver_ns = uv_hrtime() - app.actor_t0;
  uint64_t total = 0; /* actor i was sent i + 1 */
  for (uint32_t i = 0; i < ACTORS; i++)
    total += app.actor_state[i];
  if (total != (uint64_t)ACTORS * (ACTORS + 1) / 2)
    app.failures++;
  printf("[main    ] %u actors spawned in %.1f ms, all messaged in %.1f ms (sum %s)\n",
         ACTORS, app.actors_spawn_ns / 1e6, app.actors_deliver_ns / 1e6,
         total == (uint64_t)ACTORS * (ACTORS + 1) / 2 ? "ok" : "WRONG");
  start_stats_phase();
}

static void start_actor_phase(void) {
  weft_ctx_t *ctx = weft_ctx_current();
  app.actor_state = calloc(ACTORS, sizeof(*app.actor_state));
  check(app.actor_state ? 0 : UV_ENOMEM, "calloc");
  weft_port_t **addr = malloc(ACTORS * sizeof(*addr));
  check(addr ? 0 : UV_ENOMEM, "malloc");

  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < ACTORS; i++)
    check(weft_actor_spawn(ctx, actor_behaviour, &app.actor_state[i], &addr[i]),
          "weft_actor_spawn");
  app.actors_spawn_ns = uv_hrtime() - t0;

  app.actor_t0 = uv_hrtime();
  for (uint32_t i = 0; i < ACTORS; i++) {
    weft_msg_t *m;
    check(weft_msg_new(&m), "weft_msg_new");
    weft_msg_put_u64(m, NULL, i + 1);
    post_or_die(addr[i], m);
    /* Done with this address: the message still arrives before the close. */
    weft_port_close(addr[i]);
  }
  free(addr);
}

/* ---- phase 4: stats, summary, exit ----------------------------------------- */

static void start_stats_phase(void) {
  for (int i = 0; i < WORKERS; i++)
    post_or_die(weft_worker_port(app.links[i].w), new_op("stats", 0));
}

static void on_stats_answer(link_t *l, weft_msg_t *msg) {
  weft_msg_get_u64(msg, "msgs_in", &l->stats.msgs_in);
  weft_msg_get_u64(msg, "msgs_out", &l->stats.msgs_out);
  weft_msg_get_u64(msg, "queue_peak", &l->stats.queue_peak);
  weft_msg_get_u64(msg, "wakeups", &l->stats.wakeups);
  weft_msg_get_f64(msg, "util", &l->stats.loop_utilization);
  if (++app.stats_in == WORKERS)
    finish();
}

static void print_stats_row(const char *name, const weft_ctx_stats_t *s) {
  printf("%-10s %10llu %10llu %10llu %9llu %9.1f%%\n", name, (unsigned long long)s->msgs_in,
         (unsigned long long)s->msgs_out, (unsigned long long)s->queue_peak,
         (unsigned long long)s->wakeups, s->loop_utilization * 100);
}

static void finish(void) {
  weft_ctx_stats_t mine;
  check(weft_ctx_stats(weft_ctx_current(), &mine), "weft_ctx_stats");
  printf("\n%-10s %10s %10s %10s %9s %10s\n", "context", "msgs in", "msgs out", "queue peak",
         "wakeups", "loop util");
  print_stats_row("main", &mine);
  for (int i = 0; i < WORKERS; i++) {
    char name[16];
    snprintf(name, sizeof(name), "worker %d", i);
    print_stats_row(name, &app.links[i].stats);
  }
  uint64_t stalls = 0;
  for (int i = 0; i < WORKERS; i++)
    stalls += app.links[i].stalls;
  printf("\nsummary: %u msgs streamed to %d workers in %.1f ms with %llu backpressure "
         "stalls; 16 MiB moved in %.1f us; %u actors messaged in %.1f ms; %s\n",
         STREAM_MSGS, WORKERS, app.stream_ns / 1e6, (unsigned long long)stalls,
         app.big_transit_ns / 1e3, ACTORS, app.actors_deliver_ns / 1e6,
         app.failures ? "FAILED" : "all checks passed");
  for (int i = 0; i < WORKERS; i++)
    weft_port_close(weft_worker_port(app.links[i].w)); /* the workers exit */
}

/* ---- main thread: wiring --------------------------------------------------- */

static void on_worker_message(weft_port_t *port, weft_msg_t *msg) {
  link_t *l = weft_port_data(port);
  if (op_is(msg, "ended"))
    on_ended(l, msg);
  else if (op_is(msg, "buf"))
    on_buf_answer(msg);
  else if (op_is(msg, "stats"))
    on_stats_answer(l, msg);
  weft_msg_free(msg);
}

static void on_worker_exit(weft_worker_t *w, int code) {
  link_t *l = weft_worker_data(w);
  if (code != 0)
    app.failures++;
  printf("[main    ] worker %d exited with code %d\n", l->id, code);
}

static void spawn_link(weft_ctx_t *ctx, int id) {
  link_t *l = &app.links[id];
  l->id = id;
  l->to_send = STREAM_MSGS / WORKERS;
  l->first_seq = (uint64_t)id * l->to_send;
  weft_worker_options_t opts = {
      .entry = worker_entry,
      .port_hwm_msgs = STREAM_HWM, /* bound both ends of this channel */
      .on_message = on_worker_message,
      .on_exit = on_worker_exit,
      .data_ptr = l,
  };
  check(weft_worker_spawn(ctx, &opts, &l->w), "weft_worker_spawn");
  weft_port_t *port = weft_worker_port(l->w);
  weft_port_set_data(port, l);
  check(weft_port_on_drain(port, on_drain), "weft_port_on_drain");
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  printf("[main    ] weft %s, %u CPUs available\n", weft_version_string(),
         weft_available_parallelism());

  for (int i = 0; i < WORKERS; i++)
    spawn_link(ctx, i);
  /* Stream at once: what is posted before a worker is online waits in its
   * channel, up to the bound. */
  app.stream_t0 = uv_hrtime();
  for (int i = 0; i < WORKERS; i++)
    pump(&app.links[i]);

  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  free(app.actor_state);
  if (app.actors_done != ACTORS || app.stats_in != WORKERS)
    app.failures++;
  return app.failures ? 1 : 0;
}
