/* metrics_hist.c: the loop delay histogram: log-linear buckets of
 * nanoseconds, one writer (the context's thread), readers on any thread.
 *
 * Buckets: everything under 1 us in bucket 0, then 8 linear buckets per power
 * of two up to 2^37 ns (~137 s; above lands in the last bucket). Each field
 * is a relaxed atomic that only the owner writes (a load and a store, no
 * read-modify-write): a reader sees each field at some recent value, so a
 * snapshot taken during a sample may be off by that one sample. */
#include <string.h>

#include "metrics_int.h"

static unsigned bucket_of(uint64_t v) {
  if (v < (1u << HIST_MIN_EXP))
    return 0;
  unsigned e = 63u - (unsigned)__builtin_clzll(v);
  if (e > HIST_MAX_EXP)
    return HIST_BUCKETS - 1;
  unsigned sub = (unsigned)(v >> (e - 3)) & 7u;
  return 1u + (e - HIST_MIN_EXP) * 8u + sub;
}

/* The largest value bucket i holds. */
static uint64_t bucket_top(unsigned i) {
  if (i == 0)
    return (1u << HIST_MIN_EXP) - 1;
  unsigned e = (i - 1) / 8u + HIST_MIN_EXP;
  unsigned sub = (i - 1) % 8u;
  return ((uint64_t)(9u + sub) << (e - 3)) - 1;
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void weft__hist_record(weft__hist_t *h, uint64_t v) {
  unsigned b = bucket_of(v);
  ST(h->b[b], LD(h->b[b]) + 1);
  uint64_t n = LD(h->count);
  if (n == 0 || v < LD(h->min))
    ST(h->min, v);
  if (v > LD(h->max))
    ST(h->max, v);
  ST(h->sum, LD(h->sum) + v);
  ST(h->count, n + 1);
}

void weft__hist_reset(weft__hist_t *h) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    ST(h->b[i], 0);
  ST(h->count, 0);
  ST(h->sum, 0);
  ST(h->min, 0);
  ST(h->max, 0);
}

static uint64_t percentile(const uint64_t *b, uint64_t total, uint64_t max, double q) {
  uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += b[i];
    if (seen >= rank) {
      uint64_t top = bucket_top(i);
      return top < max ? top : max;
    }
  }
  return max;
}

void weft__hist_read(weft__hist_t *h, weft_metrics_hist_t *out) {
  uint64_t b[HIST_BUCKETS];
  uint64_t total = 0;
  memset(out, 0, sizeof(*out));
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    b[i] = LD(h->b[i]);
    total += b[i];
  }
  if (total == 0)
    return;
  out->count = total;
  out->min_ns = LD(h->min);
  out->max_ns = LD(h->max);
  uint64_t n = LD(h->count);
  out->mean_ns = n ? LD(h->sum) / n : 0;
  out->p50_ns = percentile(b, total, out->max_ns, 0.50);
  out->p90_ns = percentile(b, total, out->max_ns, 0.90);
  out->p99_ns = percentile(b, total, out->max_ns, 0.99);
}
