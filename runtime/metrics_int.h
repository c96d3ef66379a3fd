/* metrics_int.h: NOT PUBLIC. The layout shared by metrics*.c only (the rest
 * of the kernel sees weft__metrics_* in weft_impl.h). */
#ifndef WEFT_METRICS_INT_H
#define WEFT_METRICS_INT_H

#include "weft_impl.h"

#define HIST_MIN_EXP 10u /* 1024 ns */
#define HIST_MAX_EXP 36u
#define HIST_BUCKETS (1u + (HIST_MAX_EXP - HIST_MIN_EXP + 1u) * 8u)

/* One writer (the owner thread), readers anywhere: see metrics_hist.c. */
typedef struct {
  _Atomic uint64_t count, sum, min, max;
  _Atomic uint64_t b[HIST_BUCKETS];
} weft__hist_t;

void weft__hist_record(weft__hist_t *h, uint64_t v);
void weft__hist_reset(weft__hist_t *h);
void weft__hist_read(weft__hist_t *h, weft_metrics_hist_t *out);

/* What a context publishes. Owner-only fields first; then the name (under
 * the registry lock); then the published figures, each written by the owner
 * with a relaxed store and read by snapshots with a relaxed load: each is a
 * statistic on its own, nothing orders against them. */
typedef struct weft__ctxm_s {
  /* Owner thread only. */
  uv_timer_t timer;
  weft_ctx_t *ctx;
  weft__metrics_reg_t *reg;
  uint64_t period_ns;          /* the sampling period while the loop works */
  uint64_t wait_ns;            /* the timer's current interval: period_ns, or up to
                                  IDLE_MAX_NS while the loop is idle */
  uint64_t last_ns;            /* when the timer last fired */
  uint64_t last_idle;          /* the loop's idle time then */
  uint64_t collected_ns;       /* when sources and queues were last collected */
  uint64_t win_ns, win_idle;   /* start of the utilisation window, idle time then */
  bool started;                /* the timer exists (weft__metrics_ctx_start) */
  weft_list_t sources;         /* weft_metrics_source_t.cnode */
  /* Under reg->lock. */
  weft_list_node_t node;       /* in reg->ctxs */
  char name[32];
  /* Under reg->lock: the port table (metrics_ports.c), sorted by id, while
   * it is wanted; NULL else. */
  weft_metrics_port_t *ports;
  size_t nports;
  /* Any thread sets it (relaxed); the owner clears it at its next sample. */
  _Atomic bool reset_req;
  /* Any thread moves it on (relaxed): the owner publishes its port table at
   * each collection until this time (uv_hrtime). */
  _Atomic uint64_t ports_until;
  char pad_[WEFT__CACHELINE];
  /* Published (owner stores, snapshot loads; relaxed). */
  _Atomic uint64_t msgs_in, msgs_out, wakeups, spins_hit, undeliverable, ports_open;
  _Atomic uint64_t queue_depth, queue_max, queue_peak;
  _Atomic uint64_t idle_ns, age_ns, util_ppm, published_ns;
  weft__hist_t delay;
} weft__ctxm_t;

/* A source: owner-thread staging, published under its own lock. */
struct weft_metrics_source_s {
  weft_list_node_t gnode;      /* in reg->sources (reg->lock) */
  weft_list_node_t cnode;      /* in its context's sources (owner) */
  weft__metrics_reg_t *reg;
  weft__ctxm_t *cm;            /* owner; NULL once its context ended */
  weft_metrics_collect_cb collect;
  void *data;
  char kind[16];
  char name[48];
  /* Owner thread: what the collect callback is putting. */
  weft_metrics_value_t *stage;
  size_t nstage, capstage;
  /* Under lock: the last complete publication. */
  uv_mutex_t lock;
  weft_metrics_value_t *pub;
  size_t npub, cappub;
  /* Under lock: another process's snapshot this source carries (a child's,
   * received over its channel: metrics_remote.c), and when it came. */
  weft_metrics_ctx_t *rctx;
  size_t nrctx;
  weft_metrics_value_t *rval;
  size_t nrval;
  uint64_t r_received_ns;
};

/* Publish cm's port table if it is wanted, else drop it (owner thread, at
 * a collection); free it when cm goes (nobody else sees cm any more). */
void weft__metrics_ports_collect(weft__ctxm_t *cm, uint64_t now);
void weft__metrics_ports_fini(weft__ctxm_t *cm);

/* Collect every source of cm (owner thread). */
void weft__metrics_collect(weft__ctxm_t *cm);
/* cm's context ends: its sources stop being collected (owner thread). */
void weft__metrics_detach_sources(weft__ctxm_t *cm);

#endif /* WEFT_METRICS_INT_H */
