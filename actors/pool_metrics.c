/* pool_metrics.c: a pool's figures as a metrics source (weft/metrics.h):
 * queue, running, threads, the task counters, wait and run percentiles (in
 * seconds) and each thread's utilisation. Collected on the pool's context;
 * the source goes with the pool (pool_free). Public API only, plus the
 * pool's own struct for the source field. */
#include <stdatomic.h>
#include <stdio.h>

#include "pool_impl.h"

static void put_hist(weft_metrics_source_t *src, const char *name, const weft_pool_hist_t *h) {
  static const char *const q[] = {"0.5", "0.9", "0.99"};
  const uint64_t v[] = {h->p50_ns, h->p90_ns, h->p99_ns};
  for (int i = 0; i < 3; i++)
    weft_metrics_put(src, name, "quantile", q[i], WEFT_METRIC_GAUGE, (double)v[i] * 1e-9);
}

static void collect(weft_metrics_source_t *src, void *data) {
  weft_pool_t *pool = data;
  weft_pool_stats_t st;
  if (weft_pool_stats(pool, &st) != 0)
    return;
  weft_metrics_put(src, "queued", NULL, NULL, WEFT_METRIC_GAUGE, st.queued);
  weft_metrics_put(src, "queued_peak", NULL, NULL, WEFT_METRIC_GAUGE, st.peak_queued);
  weft_metrics_put(src, "running", NULL, NULL, WEFT_METRIC_GAUGE, st.running);
  weft_metrics_put(src, "threads", NULL, NULL, WEFT_METRIC_GAUGE, st.threads);
  weft_metrics_put(src, "submitted", NULL, NULL, WEFT_METRIC_COUNTER, (double)st.submitted);
  weft_metrics_put(src, "rejected", NULL, NULL, WEFT_METRIC_COUNTER, (double)st.rejected);
  weft_metrics_put(src, "completed", NULL, NULL, WEFT_METRIC_COUNTER, (double)st.completed);
  weft_metrics_put(src, "failed", NULL, NULL, WEFT_METRIC_COUNTER, (double)st.failed);
  weft_metrics_put(src, "timed_out", NULL, NULL, WEFT_METRIC_COUNTER, (double)st.timed_out);
  weft_metrics_put(src, "utilization", NULL, NULL, WEFT_METRIC_GAUGE, st.utilization);
  put_hist(src, "wait_seconds", &st.wait);
  put_hist(src, "run_seconds", &st.run);
  weft_pool_thread_stats_t th[32];
  uint32_t n = 0;
  if (weft_pool_thread_stats(pool, th, 32, &n) != 0)
    return;
  for (uint32_t i = 0; i < n && i < 32; i++) {
    char id[16];
    snprintf(id, sizeof(id), "%u", th[i].id);
    weft_metrics_put(src, "thread_utilization", "thread", id, WEFT_METRIC_GAUGE,
                     th[i].utilization);
  }
}

void weft__pool_metrics_start(weft_pool_t *pool) {
  static _Atomic unsigned next;
  char name[32];
  snprintf(name, sizeof(name), "pool-%u", atomic_fetch_add(&next, 1) + 1);
  (void)weft_metrics_source_new(pool->ctx, "pool", name, collect, pool, &pool->metrics);
}
