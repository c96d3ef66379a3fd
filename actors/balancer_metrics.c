/* balancer_metrics.c: a balancer's figures as a metrics source
 * (weft/metrics.h): connections accepted and dropped (hand-off failures),
 * and per worker place its connections, open connections, requests,
 * re-handed connections and restarts. Collected on the balancer's context;
 * the source goes with the balancer. */
#include <stdatomic.h>
#include <stdio.h>

#include "balancer_int.h"

static void collect(weft_metrics_source_t *src, void *data) {
  weft_balancer_t *b = data;
  weft_metrics_put(src, "accepted", NULL, NULL, WEFT_METRIC_COUNTER, (double)b->accepted);
  weft_metrics_put(src, "handoff_failures", NULL, NULL, WEFT_METRIC_COUNTER, (double)b->dropped);
  weft_metrics_put(src, "listening", NULL, NULL, WEFT_METRIC_GAUGE,
                   weft_balancer_listening(b) ? 1 : 0);
  size_t n = weft_balancer_workers(b);
  for (size_t i = 0; i < n; i++) {
    weft_balancer_stats_t st;
    if (weft_balancer_stats(b, i, &st) != 0)
      continue;
    char w[24];
    snprintf(w, sizeof(w), "%zu", i);
    weft_metrics_put(src, "connections", "worker", w, WEFT_METRIC_COUNTER, (double)st.connections);
    weft_metrics_put(src, "connections_open", "worker", w, WEFT_METRIC_GAUGE, (double)st.open);
    weft_metrics_put(src, "requests", "worker", w, WEFT_METRIC_COUNTER, (double)st.requests);
    weft_metrics_put(src, "rehanded", "worker", w, WEFT_METRIC_COUNTER, (double)st.rehanded);
    weft_metrics_put(src, "restarts", "worker", w, WEFT_METRIC_COUNTER,
                     st.starts > 0 ? (double)(st.starts - 1) : 0);
    weft_metrics_put(src, "ready", "worker", w, WEFT_METRIC_GAUGE, st.ready ? 1 : 0);
  }
}

void weft__bal_metrics_start(weft_balancer_t *b) {
  static _Atomic unsigned next;
  char name[32];
  snprintf(name, sizeof(name), "balancer-%u", atomic_fetch_add(&next, 1) + 1);
  (void)weft_metrics_source_new(b->ctx, "balancer", name, collect, b, &b->metrics);
}
