/* spsc.c: `floor_spsc`, the cross-core floor: a single-producer
 * single-consumer ring of u64 between two threads that spin (never sleep).
 *
 * mode "pingpong": A pushes a sequence number on ring ab and spins until B
 * pushes it back on ring ba: the round trip is two cache-line transfers each
 * way (the slot and the index), the least any two-thread exchange costs on
 * this machine (weft-bench pingpong's busy exchange is compared with it).
 * mode "oneway": A pushes N*ONEWAY_FACTOR numbers, B pops them and checks
 * the order: items/s from A's first push to B's last pop, with one release
 * store of the producer index per item ("publish":1) and one per batch of
 * BATCH items ("publish":BATCH, flushed at the end), the amortisation the
 * issue of weft's one-way throughput asks for.
 *
 * The ring is Lamport's with cached indices: each side reads the other's
 * index only when its cached copy says the ring is full (producer) or empty
 * (consumer). tail is written by the producer only, head by the consumer
 * only, each on its own cache line; the slots on their own lines.
 *
 * Threads: A is the calling thread, B a pthread for one run. Both spin
 * without a bound of their own: the process's 120 s alarm is the bound. */
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "floor.h"

#define SLOTS 1024u
#define MASK (SLOTS - 1u)
#define DEFAULT_N 200000u
#define WARMUP 2000u
#define ONEWAY_FACTOR 50u
#define BATCH 64u
#define STOP UINT64_MAX

#if defined(__x86_64__) || defined(__i386__)
static inline void cpu_relax(void) { __builtin_ia32_pause(); }
#else
static inline void cpu_relax(void) { atomic_signal_fence(memory_order_seq_cst); }
#endif

typedef struct {
  /* Producer -> consumer: items published. The release store orders the
   * slot writes before it; the consumer's acquire load pairs with it. */
  alignas(64) _Atomic uint64_t tail;
  /* Consumer -> producer: items consumed. The release store orders the
   * slot reads before it, so the producer may overwrite those slots after
   * its acquire load. */
  alignas(64) _Atomic uint64_t head;
  alignas(64) uint64_t slot[SLOTS];
} ring_t;

/* One side's private view of a ring (never shared). */
typedef struct {
  ring_t *ring;
  uint64_t mine;   /* producer: items written; consumer: items read */
  uint64_t theirs; /* cached copy of the other side's index */
  uint64_t batch;  /* producer: publish every batch items */
} end_t;

static void flush(end_t *p) {
  atomic_store_explicit(&p->ring->tail, p->mine, memory_order_release);
}

static void push(end_t *p, uint64_t v) {
  while (p->mine - p->theirs == SLOTS) {
    flush(p); /* the consumer may be waiting for what we hold back */
    p->theirs = atomic_load_explicit(&p->ring->head, memory_order_acquire);
    if (p->mine - p->theirs == SLOTS)
      cpu_relax();
  }
  p->ring->slot[p->mine++ & MASK] = v;
  if (p->mine % p->batch == 0)
    flush(p);
}

static uint64_t pop(end_t *c) {
  while (c->mine == c->theirs) {
    c->theirs = atomic_load_explicit(&c->ring->tail, memory_order_acquire);
    if (c->mine == c->theirs)
      cpu_relax();
  }
  uint64_t v = c->ring->slot[c->mine++ & MASK];
  atomic_store_explicit(&c->ring->head, c->mine, memory_order_release);
  return v;
}

/* ---- pingpong ----------------------------------------------------------- */

typedef struct {
  ring_t ab, ba;
} pair_t;

static void echo_thread(void *arg) {
  pair_t *pr = arg;
  end_t in = {.ring = &pr->ab}, out = {.ring = &pr->ba, .batch = 1};
  for (;;) {
    uint64_t v = pop(&in);
    if (v == STOP)
      return;
    push(&out, v);
  }
}

static int spsc_pingpong(const floor_args_t *args, pair_t *pr, uint64_t n) {
  floor_rtt_t r;
  if (floor_rtt_init(&r, n, WARMUP, 0) != 0)
    return floor_fail("floor_spsc", "allocating latencies", ENOMEM);
  uv_thread_t b;
  int err = uv_thread_create(&b, echo_thread, pr);
  if (err) {
    floor_rtt_fini(&r);
    return floor_fail("floor_spsc", "uv_thread_create", err);
  }
  end_t out = {.ring = &pr->ab, .batch = 1}, in = {.ring = &pr->ba};
  uint64_t bad = 0;
  for (uint64_t i = 0; i < WARMUP + n; i++) {
    uint64_t t = floor_now_ns();
    push(&out, i);
    bad += pop(&in) != i;
    uint64_t now = floor_now_ns();
    floor_rtt_record(&r, i, now, now - t);
  }
  push(&out, STOP);
  uv_thread_join(&b);
  if (!bad)
    floor_rtt_emit(&r, "floor_spsc", args->rep, ",\"mode\":\"pingpong\"");
  floor_rtt_fini(&r);
  return bad ? floor_fail("floor_spsc", "echoing in order", 0) : 0;
}

/* ---- oneway ------------------------------------------------------------- */

typedef struct {
  ring_t *ring;
  uint64_t n, bad, t_last;
} sink_t;

static void sink_thread(void *arg) {
  sink_t *s = arg;
  end_t in = {.ring = s->ring};
  for (uint64_t i = 0; i < s->n; i++)
    s->bad += pop(&in) != i;
  s->t_last = floor_now_ns();
}

static int spsc_oneway(const floor_args_t *args, ring_t *ring, uint64_t n, uint64_t batch) {
  sink_t s = {.ring = ring, .n = n};
  uv_thread_t b;
  int err = uv_thread_create(&b, sink_thread, &s);
  if (err)
    return floor_fail("floor_spsc", "uv_thread_create", err);
  end_t out = {.ring = ring, .batch = batch};
  uint64_t t0 = floor_now_ns();
  for (uint64_t i = 0; i < n; i++)
    push(&out, i);
  flush(&out);
  uv_thread_join(&b);
  if (s.bad)
    return floor_fail("floor_spsc", "receiving in order", 0);
  floor_emit("floor_spsc", args->rep,
             "\"mode\":\"oneway\",\"publish\":%llu,\"items_per_s\":%.0f,\"n\":%llu",
             (unsigned long long)batch, (double)n * 1e9 / (double)(s.t_last - t0),
             (unsigned long long)n);
  return 0;
}

int floor_spsc(const floor_args_t *args) {
  uint64_t n = args->n ? args->n : DEFAULT_N;
  pair_t *pr = aligned_alloc(64, sizeof(*pr));
  if (pr == NULL)
    return floor_fail("floor_spsc", "allocating the rings", ENOMEM);
  int err = 0;
  *pr = (pair_t){0};
  err |= spsc_pingpong(args, pr, n);
  *pr = (pair_t){0};
  err |= spsc_oneway(args, &pr->ab, n * ONEWAY_FACTOR, 1);
  *pr = (pair_t){0};
  err |= spsc_oneway(args, &pr->ab, n * ONEWAY_FACTOR, BATCH);
  free(pr);
  return err ? -1 : 0;
}
