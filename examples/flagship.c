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
 *    queue peak, wake-ups, loop utilisation).
 * 6. Pool: a 2-thread weft_pool runs 2000 CPU tasks (primes below 20000);
 *    prints the wait/run p99 from weft_pool_stats and closes the pool.
 * 7. Child process: spawns itself (entry "flagship-child"), exchanges 10,000
 *    echoed messages with it, moves a 16 MiB buffer to it (a sealed memfd, no
 *    copy), then closes the channel: the child exits 0.
 * 8. Supervisor + balancer: a TCP echo balancer on 127.0.0.1:0 (round robin)
 *    whose 2 worker threads run under its supervisor; a built-in client makes
 *    200 connections (at most 32 at once), each echoing one line; then prints
 *    the connections each worker got and closes the balancer.
 * 9. Nodes: becomes a node (listening on 127.0.0.1:0) and starts itself
 *    again as a second node ("flagship --node URL"), which dials it and
 *    publishes a primes actor. The lookup is made at once and waits for the
 *    peer to come up; then 2000 requests (count the primes below 20000) go
 *    to the actor across the connection, NODE_INFLIGHT at a time, each with
 *    its reply port, and a 16 MiB buffer is copied across (chunked) and
 *    checksummed there. Then the node closes; the peer sees it go and exits.
 * 10. Prints the stats table and a summary (one line per phase), then closes
 *    the workers' ports: the workers exit and the program ends.
 *
 * Protocol, main -> worker: {op: "item", seq}, {op: "end"}, {op: "buf",
 * sent_ns} + a buffer, {op: "stats"}. Worker -> main: {op: "ended", items,
 * sum}, {op: "buf", transit_ns, checksum}, {op: "stats", ...}.
 *
 * Threads: main(), the phase functions, the actors and every on_* callback of
 * a worker, pool, child or balancer handle run on the main thread;
 * worker_entry and on_parent_message on each worker's thread; count_primes on
 * pool threads; echo_worker and the conn_* callbacks on the balancer's worker
 * threads; child_entry and child_on_message in the child process; run_peer
 * and peer_serve in the second node's process.
 *
 * Usage: flagship [--demo] [--metrics HOST:PORT]   (same run either way; exits by
 * itself; --metrics serves /metrics and /stats.json meanwhile) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* ---- the metrics endpoint (--metrics HOST:PORT) ----------------------------- */
#include "metrics_flag.h" /* --metrics HOST:PORT: metrics_start, metrics_stop */

/* Pings go out from the node's loop: a loop turn longer than the heartbeat
 * looks like a dead node. The demo's turns are short except the 16 MiB
 * checksum, which takes seconds under a sanitizer on a loaded machine. */
#define NODE_HEARTBEAT_MS 10000

#define WORKERS 2
#define STREAM_MSGS 1000000u
#define STREAM_HWM 1024u
#define BIG_LEN (16u * 1024u * 1024u)
#define ACTORS 10000u
#define POOL_TASKS 2000u
#define PRIMES_BELOW 20000u
#define PRIMES_EXPECTED 2262u  /* pi(20000) */
#define CHILD_MSGS 10000u
#define CHILD_INFLIGHT 256u    /* well under the child's window (4096) */
#define CONNS 200u
#define CONNS_AT_ONCE 32u
#define NODE_REQUESTS 2000u
#define NODE_INFLIGHT 64u
#define NODE_TIMEOUT_MS 10000u /* lookup and each request */

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

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
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
  /* pool */
  uint64_t pool_t0, pool_ns, pool_done;
  weft_pool_stats_t pool_st;
  /* child process */
  const char *self;      /* argv[0]: the child runs this executable */
  uint64_t child_t0, child_echo_ns, child_sent, child_echoed, child_buf_ns;
  size_t child_handle_len;
  int64_t child_status;
  bool child_exited;
  /* balancer */
  weft_balancer_t *balancer;
  uint64_t cluster_t0, cluster_ns, conns_started, conns_ok, conns_closed;
  uint64_t conns_per_worker[WORKERS];
  bool cluster_done;
  /* the second node */
  weft_node_t *node;
  weft_port_t *primes;   /* the peer's actor, from the lookup */
  uv_process_t peer;
  uint64_t node_t0, node_req_ns, node_buf_t0, node_buf_ns;
  uint32_t node_sent, node_answered;
  int peer_pid;
  bool node_done;
  int failures;
} app;

static void start_buffer_phase(void);
static void start_actor_phase(void);
static void start_stats_phase(void);
static void start_pool_phase(void);
static void start_child_phase(void);
static void start_cluster_phase(void);
static void start_node_phase(void);
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

/* ---- phase 4: every context's stats ---------------------------------------- */

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
    start_pool_phase();
}

/* ---- phase 5: a CPU pool --------------------------------------------------- */

/* On a pool thread: counts the primes below PRIMES_BELOW (a sieve of
 * Eratosthenes) and answers with the count (one bare integer). */
static uint64_t primes_below(void) {
  static _Thread_local uint8_t composite[PRIMES_BELOW];
  memset(composite, 0, sizeof(composite));
  uint64_t count = 0;
  for (uint32_t n = 2; n < PRIMES_BELOW; n++) {
    if (composite[n])
      continue;
    count++;
    for (uint32_t k = n * n; k < PRIMES_BELOW; k += n)
      composite[k] = 1;
  }
  return count;
}

static int count_primes(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  int err = weft_msg_new(result);
  if (err == 0)
    weft_msg_put_u64(*result, NULL, primes_below());
  return err;
}

static void on_pool_closed(weft_pool_t *pool) {
  (void)pool;
  printf("[main    ] pool closed\n");
  start_child_phase();
}

static void on_task_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)data;
  uint64_t count = 0;
  if (err == 0)
    weft_msg_get_u64(result, NULL, &count);
  weft_msg_free(result); /* NULL unless err is 0 */
  if (err != 0 || count != PRIMES_EXPECTED)
    app.failures++;
  if (++app.pool_done < POOL_TASKS)
    return;
  app.pool_ns = uv_hrtime() - app.pool_t0;
  check(weft_pool_stats(pool, &app.pool_st), "weft_pool_stats");
  printf("[main    ] pool: %llu/%u tasks done in %.1f ms on %u threads; wait p99 %.3f ms, "
         "run p99 %.3f ms\n",
         (unsigned long long)app.pool_st.completed, POOL_TASKS, app.pool_ns / 1e6,
         app.pool_st.threads, app.pool_st.wait.p99_ns / 1e6, app.pool_st.run.p99_ns / 1e6);
  check(weft_pool_close(pool, on_pool_closed), "weft_pool_close");
}

static void start_pool_phase(void) {
  weft_pool_options_t po = {.size = 2};
  weft_pool_t *pool;
  check(weft_pool_new(weft_ctx_current(), &po, &pool), "weft_pool_new");
  app.pool_t0 = uv_hrtime();
  for (uint32_t i = 0; i < POOL_TASKS; i++) { /* 2000 < the default max_queue */
    weft_pool_task_options_t to = {.fn = count_primes};
    check(weft_pool_submit(pool, &to, on_task_done, NULL, NULL), "weft_pool_submit");
  }
}

/* ---- phase 6: a child process ---------------------------------------------- */

/* In the child: echo {seq}; answer a buffer with its checksum. */
static void child_on_message(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t seq;
  weft_msg_t *m = NULL;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0) {
    check(weft_msg_new(&m), "weft_msg_new");
    weft_msg_put_map(m, 1);
    weft_msg_put_u64(m, "seq", seq);
  } else if (op_is(msg, "buf")) {
    weft_buf_t *buf;
    check(weft_msg_take_buf(msg, 0, &buf), "weft_msg_take_buf");
    m = new_op("buf", 2);
    weft_msg_put_u64(m, "len", weft_buf_len(buf));
    weft_msg_put_u64(m, "checksum", checksum(weft_buf_ptr(buf), weft_buf_len(buf)));
    weft_buf_free(buf);
  }
  weft_msg_free(msg);
  if (m)
    post_or_die(parent, m);
}

/* The child's entry: serve the parent port until the parent closes it; then
 * nothing keeps the loop alive and the child exits 0. */
static int child_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_runtime_parent_port(weft_ctx_runtime(ctx)), child_on_message);
}

static void child_post_seq(weft_port_t *port) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "seq", app.child_sent++);
  post_or_die(port, m);
}

static void child_send_buf(weft_port_t *port) {
  weft_buf_t *big;
  check(weft_buf_new(&big, BIG_LEN), "weft_buf_new"); /* memfd-backed: crosses as an fd */
  memset(weft_buf_ptr(big), 0x5a, BIG_LEN);
  app.big_expected = checksum(weft_buf_ptr(big), BIG_LEN);
  weft_msg_t *m = new_op("buf", 0);
  check(weft_msg_add_buf(m, big), "weft_msg_add_buf");
  app.child_t0 = uv_hrtime();
  post_or_die(port, m);
  app.child_handle_len = weft_buf_len(big);
  printf("[main    ] 16 MiB buffer posted to the child; my handle's length is now %zu\n",
         app.child_handle_len);
  weft_buf_free(big);
}

static void parent_on_child_message(weft_port_t *port, weft_msg_t *msg) {
  uint64_t seq, len = 0, sum = 0;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0) {
    if (seq != app.child_echoed++)
      app.failures++;
    if (app.child_sent < CHILD_MSGS)
      child_post_seq(port); /* keep CHILD_INFLIGHT in flight */
    else if (app.child_echoed == CHILD_MSGS) {
      app.child_echo_ns = uv_hrtime() - app.child_t0;
      printf("[main    ] child echoed %u messages in %.1f ms (from its spawn)\n", CHILD_MSGS,
             app.child_echo_ns / 1e6);
      child_send_buf(port);
    }
  } else if (op_is(msg, "buf")) {
    app.child_buf_ns = uv_hrtime() - app.child_t0;
    weft_msg_get_u64(msg, "len", &len);
    weft_msg_get_u64(msg, "checksum", &sum);
    bool ok = len == BIG_LEN && sum == app.big_expected;
    app.failures += !ok;
    printf("[main    ] child's reply on the 16 MiB (it checksummed it) came %.1f us after the "
           "post (checksum %s); closing the channel\n", app.child_buf_ns / 1e3, ok ? "ok" : "WRONG");
    weft_port_close(port); /* the child's port closes, its loop runs out */
  }
  weft_msg_free(msg);
}

static void parent_on_child_exit(weft_child_t *child, int64_t status, int signal) {
  (void)child;
  app.child_exited = true;
  app.child_status = signal ? -signal : status;
  if (app.child_status != 0)
    app.failures++;
  printf("[main    ] child exited with code %lld, signal %d\n", (long long)status, signal);
  start_cluster_phase();
}

static void start_child_phase(void) {
  const char *args[] = {app.self, NULL};
  weft_child_options_t co = {
      .entry_name = "flagship-child", /* file NULL: this executable */
      .args = args,
      .on_message = parent_on_child_message,
      .on_exit = parent_on_child_exit,
  };
  weft_child_t *child;
  check(weft_child_spawn(weft_ctx_current(), &co, &child), "weft_child_spawn");
  printf("[main    ] child process %d spawned\n", weft_child_pid(child));
  app.child_t0 = uv_hrtime();
  for (uint32_t i = 0; i < CHILD_INFLIGHT; i++)
    child_post_seq(weft_child_port(child));
}

/* ---- phase 7: a supervised TCP echo balancer ------------------------------- */

/* On a balancer worker thread: echo what a connection sends, close at EOF. */
typedef struct {
  uv_write_t req;
  char data[];
} echo_write_t;

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  b->base = malloc(hint);
  b->len = b->base ? hint : 0;
}

static void conn_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  weft_conn_t *conn = (weft_conn_t *)s;
  if (n < 0) {
    weft_conn_close(conn);
  } else if (n > 0) { /* the write request owns a copy of the bytes */
    echo_write_t *w = malloc(sizeof(*w) + (size_t)n);
    uv_buf_t out = uv_buf_init(w ? w->data : NULL, (unsigned)n);
    if (w)
      memcpy(w->data, b->base, (size_t)n);
    if (w == NULL || uv_write(&w->req, s, &out, 1, conn_written) != 0) {
      free(w);
      weft_conn_close(conn);
    }
    weft_conn_request_done(conn);
  }
  free(b->base);
}

static void conn_start(weft_conn_t *conn) { uv_read_start(&conn->h.stream, conn_alloc, conn_read); }

static int echo_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t o = {.on_connection = conn_start, .on_drain = weft_conn_close};
  return weft_balancer_worker_start(ctx, &o, NULL);
}

/* On the main thread: the client. Each connection sends one line and closes
 * once the same line came back. */
typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  char line[32], got[32];
  size_t len, got_len;
} client_t;

static client_t *clients;
static void client_start(void);

static void on_balancer_closed(weft_balancer_t *b) {
  for (size_t i = 0; i < weft_balancer_workers(b) && i < WORKERS; i++) {
    weft_balancer_stats_t st;
    check(weft_balancer_stats(b, i, &st), "weft_balancer_stats");
    app.conns_per_worker[i] = st.connections;
    printf("[main    ] balancer worker %zu: %llu connections, %llu requests, %llu start(s)\n",
           i, (unsigned long long)st.connections, (unsigned long long)st.requests,
           (unsigned long long)st.starts);
  }
  free(clients);
  app.cluster_done = true;
  start_node_phase();
}

static void client_closed(uv_handle_t *h) {
  (void)h;
  if (++app.conns_closed < CONNS) {
    if (app.conns_started < CONNS)
      client_start(); /* keep CONNS_AT_ONCE open */
    return;
  }
  app.cluster_ns = uv_hrtime() - app.cluster_t0;
  if (app.conns_ok != CONNS)
    app.failures++;
  printf("[main    ] %llu/%u connections echoed their line in %.1f ms; closing the balancer\n",
         (unsigned long long)app.conns_ok, CONNS, app.cluster_ns / 1e6);
  check(weft_balancer_close(app.balancer, on_balancer_closed), "weft_balancer_close");
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  client_t *c = (client_t *)h;
  *b = uv_buf_init(c->got + c->got_len, (unsigned)(sizeof(c->got) - c->got_len));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  client_t *c = (client_t *)s;
  if (n > 0)
    c->got_len += (size_t)n;
  if (n < 0 || c->got_len >= c->len || c->got_len == sizeof(c->got)) {
    if (c->got_len == c->len && memcmp(c->got, c->line, c->len) == 0)
      app.conns_ok++;
    uv_close((uv_handle_t *)s, client_closed);
  }
}

static void client_connected(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  uv_buf_t b = uv_buf_init(c->line, (unsigned)c->len);
  if (status < 0 || uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != (int)c->len ||
      uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read) != 0)
    uv_close((uv_handle_t *)&c->tcp, client_closed); /* not counted as ok */
}

static void client_start(void) {
  client_t *c = &clients[app.conns_started];
  struct sockaddr_in addr;
  check(uv_ip4_addr("127.0.0.1", weft_balancer_port(app.balancer), &addr), "uv_ip4_addr");
  c->len = (size_t)snprintf(c->line, sizeof(c->line), "hello %llu\n",
                            (unsigned long long)app.conns_started++);
  c->cr.data = c;
  check(uv_tcp_init(weft_ctx_loop(weft_ctx_current()), &c->tcp), "uv_tcp_init");
  int err = uv_tcp_connect(&c->cr, &c->tcp, (const struct sockaddr *)&addr, client_connected);
  if (err)
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void on_balancer_ready(weft_balancer_t *b) {
  weft_sup_t *sup = weft_balancer_supervisor(b);
  printf("[main    ] balancer on 127.0.0.1:%d (%s), its supervisor runs %zu worker threads\n",
         weft_balancer_port(b), weft_balancer_policy_name(WEFT_BALANCER_ROUND_ROBIN),
         weft_sup_count(sup));
  app.cluster_t0 = uv_hrtime();
  for (uint32_t i = 0; i < CONNS_AT_ONCE; i++)
    client_start();
}

static void start_cluster_phase(void) {
  clients = calloc(CONNS, sizeof(*clients));
  check(clients ? 0 : UV_ENOMEM, "calloc");
  weft_balancer_options_t bo = {
      .host = "127.0.0.1",
      .port = 0, /* any free port */
      .policy = WEFT_BALANCER_ROUND_ROBIN,
      .workers = WORKERS,
      .worker = {.kind = WEFT_SUP_THREAD, .entry = echo_worker},
      .on_ready = on_balancer_ready,
  };
  check(weft_balancer_new(weft_ctx_current(), &bo, &app.balancer), "weft_balancer_new");
}

/* ---- phase 8: a second node ---------------------------------------------- */

/* In the second node's process: the primes actor answers {op: "primes"}
 * with the count, and a buffer with its length and checksum. */
static void peer_serve(weft_port_t *self, weft_msg_t *req) {
  (void)self;
  weft_msg_t *m = NULL;
  size_t i;
  if (op_is(req, "primes")) {
    check(weft_msg_new(&m), "weft_msg_new");
    weft_msg_put_u64(m, NULL, primes_below());
  } else if (weft_msg_find_xfer(req, WEFT_XFER_BUF, 0, &i) == 0) {
    weft_buf_t *buf;
    check(weft_msg_take_buf(req, i, &buf), "weft_msg_take_buf");
    m = new_op("buf", 2);
    weft_msg_put_u64(m, "len", weft_buf_len(buf));
    weft_msg_put_u64(m, "checksum", checksum(weft_buf_ptr(buf), weft_buf_len(buf)));
    weft_buf_free(buf);
  }
  if (m != NULL && weft_msg_reply(req, m) != 0)
    weft_msg_free(m);
  weft_msg_free(req);
}

static void peer_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer;
  (void)reason;
  (void)data;
  if (!up) /* the flagship is done (or gone): so are we */
    weft_node_close(node, NULL, NULL);
}

static void peer_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "flagship --node: no end after 60 s\n");
  exit(1);
}

static int run_peer(const char *url) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  uv_timer_t watchdog; /* an orphan never lingers */
  uv_timer_init(weft_ctx_loop(ctx), &watchdog);
  uv_timer_start(&watchdog, peer_watchdog, 60000, 0);
  uv_unref((uv_handle_t *)&watchdog);
  const char *peers[] = {url, NULL};
  /* The 16 MiB checksum runs on this node's own loop: a turn that long (seconds
   * under a sanitizer) must not look like a dead node (see NODE_HEARTBEAT_MS). */
  weft_node_options_t o = {.name = "flagship-peer", .peers = peers, .on_monitor = peer_monitor,
                           .heartbeat_ms = NODE_HEARTBEAT_MS};
  weft_node_t *node;
  check(weft_node_start(ctx, &o, &node), "weft_node_start");
  weft_port_t *actor;
  check(weft_actor_spawn(ctx, peer_serve, NULL, &actor), "weft_actor_spawn");
  check(weft_node_publish(node, "primes", actor), "weft_node_publish");
  check(weft_runtime_run(rt), "weft_runtime_run");
  uv_close((uv_handle_t *)&watchdog, NULL);
  uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* In the flagship: requests to the peer's actor, then the buffer. */
static void node_ask(void);

static void on_node_buf(weft_msg_t *reply, int err, void *data) {
  (void)data;
  check(err, "remote request (buffer)");
  app.node_buf_ns = uv_hrtime() - app.node_buf_t0;
  uint64_t len = 0, sum = 0;
  weft_msg_get_u64(reply, "len", &len);
  weft_msg_get_u64(reply, "checksum", &sum);
  weft_msg_free(reply);
  bool ok = len == BIG_LEN && sum == app.big_expected;
  app.failures += !ok;
  printf("[main    ] 16 MiB copied to the other node and checksummed there in %.1f ms "
         "(checksum %s); closing the node\n", app.node_buf_ns / 1e6, ok ? "ok" : "WRONG");
  weft_port_close(app.primes);
  weft_node_close(app.node, NULL, NULL); /* the peer sees us go and exits */
}

static void node_send_buf(void) {
  weft_buf_t *big;
  check(weft_buf_new(&big, BIG_LEN), "weft_buf_new");
  memset(weft_buf_ptr(big), 0x3c, BIG_LEN);
  app.big_expected = checksum(weft_buf_ptr(big), BIG_LEN);
  weft_msg_t *m = new_op("buf", 0);
  check(weft_msg_add_buf(m, big), "weft_msg_add_buf"); /* crosses by copy, in chunks */
  weft_buf_free(big);
  app.node_buf_t0 = uv_hrtime();
  int err = weft_port_request(app.primes, m, on_node_buf, NULL, NODE_TIMEOUT_MS);
  if (err)
    weft_msg_free(m);
  check(err, "weft_port_request");
}

static void on_node_answer(weft_msg_t *reply, int err, void *data) {
  (void)data;
  check(err, "remote request");
  uint64_t count = 0;
  weft_msg_get_u64(reply, NULL, &count);
  weft_msg_free(reply);
  if (count != PRIMES_EXPECTED)
    app.failures++;
  if (++app.node_answered < NODE_REQUESTS) {
    if (app.node_sent < NODE_REQUESTS)
      node_ask();
    return;
  }
  app.node_req_ns = uv_hrtime() - app.node_t0;
  printf("[main    ] %u requests answered by the other node's actor in %.1f ms "
         "(%u in flight)\n", NODE_REQUESTS, app.node_req_ns / 1e6, NODE_INFLIGHT);
  node_send_buf();
}

static void node_ask(void) {
  weft_msg_t *m = new_op("primes", 0);
  int err = weft_port_request(app.primes, m, on_node_answer, NULL, NODE_TIMEOUT_MS);
  if (err)
    weft_msg_free(m);
  check(err, "weft_port_request");
  app.node_sent++;
}

static void on_primes_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  check(status, "weft_node_lookup");
  printf("[main    ] found \"primes\" on flagship-peer (pid %d)\n", app.peer_pid);
  app.primes = port;
  app.node_t0 = uv_hrtime();
  for (uint32_t i = 0; i < NODE_INFLIGHT; i++)
    node_ask();
}

static void on_node_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                            void *data) {
  (void)node;
  (void)data;
  printf("[main    ] node %s is %s%s%s\n", peer, up ? "up" : "down", up ? "" : ": ",
         up ? "" : weft_err_name(reason));
}

static void on_peer_exit(uv_process_t *p, int64_t status, int sig) {
  printf("[main    ] the second node exited with code %lld, signal %d\n", (long long)status,
         sig);
  if (status != 0 || sig != 0)
    app.failures++;
  uv_close((uv_handle_t *)p, NULL);
  app.node_done = app.node_answered == NODE_REQUESTS && app.node_buf_ns > 0;
  finish();
}

static void start_node_phase(void) {
  weft_ctx_t *ctx = weft_ctx_current();
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "flagship", .listen = listen, .on_monitor = on_node_monitor,
                           .heartbeat_ms = NODE_HEARTBEAT_MS};
  check(weft_node_start(ctx, &o, &app.node), "weft_node_start");
  char self[4096], url[64];
  size_t len = sizeof(self);
  check(uv_exepath(self, &len), "uv_exepath");
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(app.node, 0));
  char *args[] = {self, "--node", url, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = self, .args = args, .exit_cb = on_peer_exit,
                             .stdio = stdio, .stdio_count = 3};
  check(uv_spawn(weft_ctx_loop(ctx), &app.peer, &po), "uv_spawn");
  app.peer_pid = app.peer.pid;
  printf("[main    ] node \"flagship\" on %s; second node started (pid %d)\n", url,
         app.peer_pid);
  /* Asked at once: the lookup waits for the peer to come up. */
  check(weft_node_lookup(app.node, "flagship-peer", "primes", NODE_TIMEOUT_MS, on_primes_found,
                         NULL), "weft_node_lookup");
}

/* ---- the end: stats table, summary, exit ---------------------------------- */

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
  printf("\nsummary:\n");
  printf("  stream:   %u msgs to %d workers in %.1f ms, %llu backpressure stalls\n",
         STREAM_MSGS, WORKERS, app.stream_ns / 1e6, (unsigned long long)stalls);
  printf("  buffer:   16 MiB moved to a worker thread in %.1f us\n", app.big_transit_ns / 1e3);
  printf("  actors:   %u actors messaged in %.1f ms\n", ACTORS, app.actors_deliver_ns / 1e6);
  printf("  pool:     %llu tasks in %.1f ms on 2 threads, wait p99 %.3f ms, run p99 %.3f ms\n",
         (unsigned long long)app.pool_st.completed, app.pool_ns / 1e6,
         app.pool_st.wait.p99_ns / 1e6, app.pool_st.run.p99_ns / 1e6);
  printf("  child:    %u echoes in %.1f ms, 16 MiB answered in %.1f us, exit code %lld\n",
         CHILD_MSGS, app.child_echo_ns / 1e6, app.child_buf_ns / 1e3,
         (long long)app.child_status);
  printf("  balancer: %llu/%u connections echoed in %.1f ms, per worker:",
         (unsigned long long)app.conns_ok, CONNS, app.cluster_ns / 1e6);
  for (int i = 0; i < WORKERS; i++)
    printf(" %llu", (unsigned long long)app.conns_per_worker[i]);
  printf("\n  node:     %u/%u requests to another node in %.1f ms, 16 MiB copied across in "
         "%.1f ms", app.node_answered, NODE_REQUESTS, app.node_req_ns / 1e6,
         app.node_buf_ns / 1e6);
  printf("\n  %s\n", app.failures ? "FAILED" : "all checks passed");
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
      .data = l,
  };
  check(weft_worker_spawn(ctx, &opts, &l->w), "weft_worker_spawn");
  weft_port_t *port = weft_worker_port(l->w);
  weft_port_set_data(port, l);
  check(weft_port_on_drain(port, on_drain), "weft_port_on_drain");
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--node") == 0)
    return run_peer(argv[2]); /* started by phase 8 as the second node */
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  check(weft_runtime_register(rt, "flagship-child", child_entry), "weft_runtime_register");
  /* Started by phase 6 as the child process? Then be only that. */
  int code, err = weft_runtime_child_entry(rt, &code);
  if (err == 0) {
    check(weft_runtime_free(rt), "weft_runtime_free");
    return code;
  }
  if (err != WEFT_ENOENT)
    check(err, "weft_runtime_child_entry");

  setvbuf(stdout, NULL, _IOLBF, 0); /* the child shares our stdout */
  signal(SIGPIPE, SIG_IGN);         /* a peer's reset must not kill us (balancer.h) */
  app.self = argv[0];
  weft_ctx_t *ctx = weft_runtime_main(rt);
  printf("[main    ] weft %s, %u CPUs available\n", weft_version_string(),
         weft_available_parallelism());
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--metrics") == 0)
      check(metrics_start(ctx, argv[i + 1]), "the metrics endpoint (--metrics HOST:PORT)");

  for (int i = 0; i < WORKERS; i++)
    spawn_link(ctx, i);
  /* Stream at once: what is posted before a worker is online waits in its
   * channel, up to the bound. */
  app.stream_t0 = uv_hrtime();
  for (int i = 0; i < WORKERS; i++)
    pump(&app.links[i]);

  check(weft_runtime_run(rt), "weft_runtime_run");
  metrics_stop(ctx);
  check(weft_runtime_free(rt), "weft_runtime_free");
  free(app.actor_state);
  if (app.actors_done != ACTORS || app.stats_in != WORKERS || app.pool_done != POOL_TASKS ||
      !app.child_exited || !app.cluster_done || !app.node_done)
    app.failures++;
  return app.failures ? 1 : 0;
}
