/* pool_stats.c: the pool's figures: log-linear histograms of queue wait and
 * run time, counters, and per-thread utilisation.
 *
 * Histogram (HdrHistogram's layout, small): values below 16 ns have a bucket
 * each; above, every power of two [2^e, 2^(e+1)) is cut into 16 equal
 * buckets, so a bucket is at most 1/16 of its values wide. 976 buckets cover
 * every uint64_t. Adding a value is a count-leading-zeros and two increments.
 *
 * Threads: the pool context only. The threads' busy times are atomics the
 * threads publish (pool_worker.c); they are read here, relaxed. */
#include <string.h>

#include "pool_impl.h"

static unsigned bucket_of(uint64_t v) {
  if (v < WEFT__POOL_HIST_SUB)
    return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
  unsigned sub = (unsigned)(v >> (e - WEFT__POOL_HIST_SUB_BITS)) & (WEFT__POOL_HIST_SUB - 1u);
  return (e - WEFT__POOL_HIST_SUB_BITS + 1u) * WEFT__POOL_HIST_SUB + sub;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_high(unsigned b) {
  if (b < WEFT__POOL_HIST_SUB)
    return b;
  unsigned e = b / WEFT__POOL_HIST_SUB + WEFT__POOL_HIST_SUB_BITS - 1u;
  uint64_t sub = b % WEFT__POOL_HIST_SUB;
  unsigned shift = e - WEFT__POOL_HIST_SUB_BITS;
  uint64_t lo = (WEFT__POOL_HIST_SUB + sub) << shift;
  return lo + ((1ull << shift) - 1u);
}

void weft__pool_histo_add(weft__pool_histo_t *h, uint64_t v) {
  h->bucket[bucket_of(v)]++;
  h->count++;
  h->sum += v;
  if (v > h->max)
    h->max = v;
}

/* The value at or below which a fraction q of the samples lie. */
static uint64_t quantile(const weft__pool_histo_t *h, double q) {
  uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned b = 0; b < WEFT__POOL_HIST_BUCKETS; b++) {
    seen += h->bucket[b];
    if (seen >= rank) {
      uint64_t hi = bucket_high(b);
      return hi < h->max ? hi : h->max;
    }
  }
  return h->max;
}

void weft__pool_histo_read(const weft__pool_histo_t *h, weft_pool_hist_t *out) {
  memset(out, 0, sizeof(*out));
  out->count = h->count;
  if (h->count == 0)
    return;
  out->mean_ns = h->sum / h->count;
  out->p50_ns = quantile(h, 0.50);
  out->p90_ns = quantile(h, 0.90);
  out->p99_ns = quantile(h, 0.99);
  out->max_ns = h->max;
}

static void thread_read(const pool_worker_t *pw, uint64_t now, weft_pool_thread_stats_t *out) {
  out->id = pw->id;
  out->tasks = atomic_load_explicit(&pw->tasks, memory_order_relaxed);
  out->busy_ns = atomic_load_explicit(&pw->busy_ns, memory_order_relaxed);
  out->age_ns = now > pw->t_spawn ? now - pw->t_spawn : 0;
  out->utilization = out->age_ns ? (double)out->busy_ns / (double)out->age_ns : 0.0;
  if (out->utilization > 1.0)
    out->utilization = 1.0;
}

int weft_pool_stats(weft_pool_t *pool, weft_pool_stats_t *out) {
  if (pool == NULL || out == NULL)
    return WEFT_EINVAL;
  memset(out, 0, sizeof(*out));
  out->submitted = pool->submitted;
  out->rejected = pool->rejected;
  out->completed = pool->completed;
  out->failed = pool->failed;
  out->cancelled = pool->cancelled;
  out->timed_out = pool->timed_out;
  out->retried = pool->retried;
  out->running = pool->rflight.len;
  weft_service_client_stats_t cs;
  if (pool->remote != NULL && weft_service_client_stats(pool->remote, &cs) == 0)
    out->providers = cs.providers;
  out->threads = pool->nactive;
  out->queued = pool->queue.len;
  for (uint32_t i = 0; i < pool->nworkers; i++)
    out->running += pool->workers[i]->inflight.len;
  out->peak_queued = pool->peak_queued;
  weft__pool_histo_read(&pool->wait, &out->wait);
  weft__pool_histo_read(&pool->run, &out->run);
  uint64_t now = uv_hrtime();
  double sum = 0;
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    weft_pool_thread_stats_t ts;
    thread_read(pool->workers[i], now, &ts);
    sum += ts.utilization;
  }
  out->utilization = pool->nworkers ? sum / pool->nworkers : 0.0;
  return 0;
}

int weft_pool_thread_stats(weft_pool_t *pool, weft_pool_thread_stats_t *out, uint32_t cap,
                           uint32_t *count) {
  if (pool == NULL || count == NULL || (out == NULL && cap > 0))
    return WEFT_EINVAL;
  uint64_t now = uv_hrtime();
  for (uint32_t i = 0; i < pool->nworkers && i < cap; i++)
    thread_read(pool->workers[i], now, &out[i]);
  *count = pool->nworkers;
  return 0;
}

void weft_pool_stats_reset(weft_pool_t *pool) {
  if (pool == NULL)
    return;
  pool->submitted = pool->rejected = pool->completed = 0;
  pool->failed = pool->cancelled = pool->timed_out = 0;
  pool->peak_queued = pool->queue.len;
  memset(&pool->wait, 0, sizeof(pool->wait));
  memset(&pool->run, 0, sizeof(pool->run));
}
