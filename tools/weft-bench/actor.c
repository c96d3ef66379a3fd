/* actor.c: the actor shapes, all on the main context (no worker threads).
 *
 * `actor_spawn`: spawn N actors (default 1M) with weft_actor_spawn: spawns/s
 * and RSS growth per idle actor (the array holding the N addresses is
 * allocated and touched before the first reading, so it is not counted).
 * Then one message to every 1000th actor checks that they work, and the
 * time weft_runtime_free takes to close them all is reported.
 *
 * `actor_pingpong`: actors A and B forward one message to each other; round
 * trips/s. `actor_ring`: 1000 actors, each forwarding the token to the next;
 * hops/s. For these two, by default the received message is forwarded as
 * is (the callee owns it, so this is the natural zero-allocation pattern);
 * --fresh builds a new {seq} message per hop and frees the old one, like
 * runtimes that copy. `actor_oneway`: the main context posts N {seq}
 * messages to one actor, as fast as the actor's queue bound lets it (a
 * refused message waits for the drain callback); the actor checks their
 * order: msgs/s.
 *
 * Actor ports are unref'd, so a started `keep` channel keeps the loop alive
 * until the shape closes it. The peers are CAF (tools/bench/caf/) and Erlang
 * (tools/bench/erlang/actors.sh), measured in the same run by run.sh.
 *
 * Threads: everything on the main context's thread. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define SPAWN_DEFAULT_N 1000000u
#define PINGPONG_DEFAULT_N 2000000u
#define RING_DEFAULT_N 10000000u
#define RING_SIZE 1000u
#define ONEWAY_DEFAULT_N 2000000u
#define CHECK_EVERY 1000u

/* A started, ref'd channel that keeps the main loop running. */
typedef struct {
  weft_port_t *ports[2];
} keep_t;

static void keep_on_message(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_free(msg);
}

static int keep_open(weft_ctx_t *ctx, keep_t *k) {
  int err = weft_channel_new(ctx, k->ports);
  if (err)
    return err;
  return weft_port_start(k->ports[0], keep_on_message);
}

static void keep_close(keep_t *k) { weft_port_close(k->ports[0]); }

/* Forward msg to `to`, or (fresh) a new {seq} in its place. */
static int hop(weft_port_t *to, weft_msg_t *msg, bool fresh, uint64_t seq) {
  if (fresh) {
    weft_msg_free(msg);
    int err = weft_msg_new(&msg);
    if (err)
      return err;
    weft_msg_put_map(msg, 1);
    weft_msg_put_u64(msg, "seq", seq);
  }
  int err = weft_port_post(to, msg);
  if (err)
    weft_msg_free(msg);
  return err;
}

/* ---- actor_spawn -------------------------------------------------------- */

typedef struct {
  keep_t keep;
  uint64_t want, got;
} tally_t;

static void tally_behaviour(weft_port_t *self, weft_msg_t *msg) {
  tally_t *t = weft_port_data(self);
  weft_msg_free(msg);
  if (++t->got == t->want)
    keep_close(&t->keep);
}

static int spawn_many(weft_ctx_t *ctx, tally_t *t, weft_port_t **addr, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    int err = weft_actor_spawn(ctx, tally_behaviour, t, &addr[i]);
    if (err)
      return err;
  }
  return 0;
}

static int poke_some(weft_port_t **addr, uint64_t n, tally_t *t) {
  for (uint64_t i = 0; i < n; i += CHECK_EVERY) {
    weft_msg_t *m;
    int err = bench_msg_op(&m, BENCH_OP_PING);
    if (!err && (err = weft_port_post(addr[i], m)) != 0)
      weft_msg_free(m);
    if (err)
      return err;
    t->want++;
  }
  return 0;
}

/* Spawns n actors and checks some of them; fills dt_ns and drss_kib. */
static int actor_spawn_run(weft_ctx_t *ctx, weft_port_t **addr, uint64_t n, uint64_t *dt_ns,
                           uint64_t *drss_kib) {
  tally_t t = {0};
  int err = keep_open(ctx, &t.keep);
  if (err)
    return bench_fail("actor_spawn", "opening the keep channel", err);
  uint64_t rss0 = bench_rss_kib(), t0 = bench_now_ns();
  err = spawn_many(ctx, &t, addr, n);
  *dt_ns = bench_now_ns() - t0;
  *drss_kib = bench_rss_kib() - rss0;
  if (err)
    return bench_fail("actor_spawn", "weft_actor_spawn", err);
  err = poke_some(addr, n, &t);
  if (err)
    return bench_fail("actor_spawn", "posting to the actors", err);
  err = weft_runtime_run(weft_ctx_runtime(ctx));
  if (!err && t.got != t.want)
    err = bench_fail("actor_spawn", "hearing from the actors", WEFT_EPROTO);
  return err;
}

int bench_actor_spawn(const bench_args_t *args) {
  uint64_t n = args->n ? args->n : SPAWN_DEFAULT_N;
  weft_port_t **addr = malloc(n * sizeof(*addr));
  if (addr == NULL)
    return bench_fail("actor_spawn", "allocating the address array", WEFT_ENOMEM);
  memset(addr, 0, n * sizeof(*addr)); /* touched now, so not counted below */
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err) {
    free(addr);
    return bench_fail("actor_spawn", "weft_runtime_new", err);
  }
  uint64_t dt_ns = 0, drss_kib = 0;
  err = actor_spawn_run(weft_runtime_main(rt), addr, n, &dt_ns, &drss_kib);
  uint64_t t2 = bench_now_ns();
  weft_runtime_free(rt);
  uint64_t t3 = bench_now_ns();
  if (!err)
    bench_emit("actor_spawn", args->rep,
               "\"spawns_per_s\":%.0f,\"bytes_per_actor\":%.1f,\"n\":%llu,"
               "\"teardown_ms\":%.1f",
               (double)n * 1e9 / (double)dt_ns, (double)drss_kib * 1024.0 / (double)n,
               (unsigned long long)n, (double)(t3 - t2) / 1e6);
  free(addr);
  return err;
}

/* ---- actor_pingpong ----------------------------------------------------- */

typedef struct {
  keep_t keep;
  uint64_t n, rounds;
  bool fresh;
  uint64_t t1;
  int err;
} match_t;

typedef struct {
  match_t *match;
  weft_port_t *peer;
  bool counts; /* A: a message arriving here completes a round trip */
} player_t;

static void match_end(match_t *m, int err) {
  m->t1 = bench_now_ns();
  m->err = err;
  keep_close(&m->keep);
}

static void player_behaviour(weft_port_t *self, weft_msg_t *msg) {
  player_t *p = weft_port_data(self);
  match_t *m = p->match;
  if (p->counts && ++m->rounds == m->n) {
    weft_msg_free(msg);
    match_end(m, 0);
    return;
  }
  int err = hop(p->peer, msg, m->fresh, m->rounds);
  if (err)
    match_end(m, err);
}

static int match_start(weft_ctx_t *ctx, match_t *m, player_t pl[2]) {
  weft_port_t *addr[2];
  int err = keep_open(ctx, &m->keep);
  for (int i = 0; i < 2 && !err; i++) {
    pl[i].match = m;
    pl[i].counts = i == 0;
    err = weft_actor_spawn(ctx, player_behaviour, &pl[i], &addr[i]);
  }
  if (err)
    return err;
  pl[0].peer = addr[1];
  pl[1].peer = addr[0];
  weft_msg_t *msg;
  err = bench_msg_op(&msg, BENCH_OP_PING);
  if (!err && (err = weft_port_post(addr[1], msg)) != 0)
    weft_msg_free(msg);
  return err;
}

int bench_actor_pingpong(const bench_args_t *args) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail("actor_pingpong", "weft_runtime_new", err);
  match_t m = {.n = args->n ? args->n : PINGPONG_DEFAULT_N, .fresh = args->fresh};
  player_t pl[2] = {{0}};
  err = match_start(weft_runtime_main(rt), &m, pl);
  uint64_t t0 = bench_now_ns();
  if (err)
    bench_fail("actor_pingpong", "starting", err);
  else
    err = weft_runtime_run(rt);
  if (!err && m.err)
    err = bench_fail("actor_pingpong", "posting", m.err);
  if (!err && m.rounds != m.n)
    err = bench_fail("actor_pingpong", "completing the round trips", WEFT_EPROTO);
  if (!err)
    bench_emit("actor_pingpong", args->rep, "\"rt_per_s\":%.0f,\"n\":%llu,\"fresh\":%s",
               (double)m.n * 1e9 / (double)(m.t1 - t0), (unsigned long long)m.n,
               m.fresh ? "true" : "false");
  weft_runtime_free(rt);
  return err;
}

/* ---- actor_ring --------------------------------------------------------- */

typedef struct {
  keep_t keep;
  uint64_t n, hops;
  bool fresh;
  uint64_t t1;
  int err;
} ring_t;

typedef struct {
  ring_t *ring;
  weft_port_t *next;
} ring_node_t;

static void ring_end(ring_t *r, int err) {
  r->t1 = bench_now_ns();
  r->err = err;
  keep_close(&r->keep);
}

static void ring_behaviour(weft_port_t *self, weft_msg_t *msg) {
  ring_node_t *node = weft_port_data(self);
  ring_t *r = node->ring;
  if (++r->hops == r->n) {
    weft_msg_free(msg);
    ring_end(r, 0);
    return;
  }
  int err = hop(node->next, msg, r->fresh, r->hops);
  if (err)
    ring_end(r, err);
}

static int ring_start(weft_ctx_t *ctx, ring_t *r, ring_node_t *nodes) {
  weft_port_t *addr[RING_SIZE];
  int err = keep_open(ctx, &r->keep);
  for (unsigned i = 0; i < RING_SIZE && !err; i++) {
    nodes[i].ring = r;
    err = weft_actor_spawn(ctx, ring_behaviour, &nodes[i], &addr[i]);
  }
  if (err)
    return err;
  for (unsigned i = 0; i < RING_SIZE; i++)
    nodes[i].next = addr[(i + 1) % RING_SIZE];
  weft_msg_t *msg;
  err = bench_msg_op(&msg, BENCH_OP_PING);
  if (!err && (err = weft_port_post(addr[0], msg)) != 0)
    weft_msg_free(msg);
  return err;
}

int bench_actor_ring(const bench_args_t *args) {
  ring_node_t *nodes = calloc(RING_SIZE, sizeof(*nodes));
  weft_runtime_t *rt = NULL;
  int err = nodes ? weft_runtime_new(&rt, NULL) : WEFT_ENOMEM;
  if (err) {
    free(nodes);
    return bench_fail("actor_ring", "setting up", err);
  }
  ring_t r = {.n = args->n ? args->n : RING_DEFAULT_N, .fresh = args->fresh};
  err = ring_start(weft_runtime_main(rt), &r, nodes);
  uint64_t t0 = bench_now_ns();
  if (err)
    bench_fail("actor_ring", "starting", err);
  else
    err = weft_runtime_run(rt);
  if (!err && r.err)
    err = bench_fail("actor_ring", "posting", r.err);
  if (!err && r.hops != r.n)
    err = bench_fail("actor_ring", "completing the hops", WEFT_EPROTO);
  if (!err)
    bench_emit("actor_ring", args->rep,
               "\"hops_per_s\":%.0f,\"n\":%llu,\"actors\":%u,\"fresh\":%s",
               (double)r.n * 1e9 / (double)(r.t1 - t0), (unsigned long long)r.n, RING_SIZE,
               r.fresh ? "true" : "false");
  weft_runtime_free(rt);
  free(nodes);
  return err;
}

/* ---- actor_oneway ------------------------------------------------------- */

/* A source posts n messages {seq} to a sink actor on the same context, which
 * checks their order; on WEFT_EAGAIN (the sink's queue bound) the source
 * keeps the refused message and goes on from the address port's drain
 * callback. msgs/s from the first post to the sink's last message. */
typedef struct {
  keep_t keep;
  weft_port_t *sink;
  uint64_t n, sent, got, bad, eagain;
  weft_msg_t *held;
  uint64_t t1;
  int err;
} flow_t;

static void flow_end(flow_t *f, int err) {
  f->t1 = bench_now_ns();
  f->err = err;
  keep_close(&f->keep);
}

static void sink_behaviour(weft_port_t *self, weft_msg_t *msg) {
  flow_t *f = weft_port_data(self);
  uint64_t seq = UINT64_MAX;
  weft_msg_get_u64(msg, "seq", &seq);
  weft_msg_free(msg);
  f->bad += seq != f->got;
  if (++f->got == f->n)
    flow_end(f, 0);
}

/* Posts until done or refused. Main context. */
static void flow_pump(flow_t *f) {
  while (f->sent < f->n) {
    weft_msg_t *m = f->held;
    int err = 0;
    f->held = NULL;
    if (m == NULL && (err = weft_msg_new(&m)) == 0) {
      weft_msg_put_map(m, 1);
      err = weft_msg_put_u64(m, "seq", f->sent);
    }
    if (!err && (err = weft_port_post(f->sink, m)) == WEFT_EAGAIN) {
      f->held = m;
      f->eagain++;
      return;
    }
    if (err) {
      weft_msg_free(m);
      flow_end(f, err);
      return;
    }
    f->sent++;
  }
}

static void flow_on_drain(weft_port_t *port) { flow_pump(weft_port_data(port)); }

int bench_actor_oneway(const bench_args_t *args) {
  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err)
    return bench_fail("actor_oneway", "weft_runtime_new", err);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  flow_t f = {.n = args->n ? args->n : ONEWAY_DEFAULT_N};
  err = keep_open(ctx, &f.keep);
  if (!err)
    err = weft_actor_spawn(ctx, sink_behaviour, &f, &f.sink);
  if (!err) {
    weft_port_set_data(f.sink, &f);
    err = weft_port_on_drain(f.sink, flow_on_drain);
  }
  uint64_t t0 = bench_now_ns();
  if (err)
    bench_fail("actor_oneway", "starting", err);
  else {
    flow_pump(&f);
    err = weft_runtime_run(rt);
  }
  if (!err && f.err)
    err = bench_fail("actor_oneway", "posting", f.err);
  if (!err && (f.got != f.n || f.bad != 0))
    err = bench_fail("actor_oneway", "receiving every message in order", WEFT_EPROTO);
  if (!err)
    bench_emit("actor_oneway", args->rep, "\"msgs_per_s\":%.0f,\"n\":%llu,\"eagain\":%llu",
               (double)f.n * 1e9 / (double)(f.t1 - t0), (unsigned long long)f.n,
               (unsigned long long)f.eagain);
  weft_msg_free(f.held);
  weft_runtime_free(rt);
  return err;
}
