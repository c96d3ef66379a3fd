/* weft/metrics.h: live figures of a running runtime, readable from any thread.
 *
 * Every context samples itself on its own loop: a timer (unref'd: it keeps
 * no loop alive) measures how late it fires (the loop delay, as Node's
 * monitorEventLoopDelay does) into a log-linear histogram, and copies the
 * context's counters (messages in/out, wake-ups, queue depths, the loop's
 * idle time) into relaxed atomics. It fires every sampling period (10 ms by
 * default) while the loop works; while the loop sleeps the interval doubles
 * up to 100 ms, so an idle program is woken at most 10 times a second per
 * context (a block longer than 100 ms is always seen). weft_metrics_snapshot
 * reads those copies from any thread without stopping a loop: what it
 * returns is at most one interval old (a blocked loop publishes when it runs
 * again, and its block shows as one late sample).
 *
 * Sources: pools, balancers, nodes and child processes (and any user object)
 * register a metrics source on their context; at each collection (at the
 * first sample 100 ms or more after the last one) the context calls the source's collect callback,
 * which publishes named counters and gauges with weft_metrics_put. The
 * snapshot copies each source's last publication.
 *
 * Child processes: a child running weft on a weft channel is asked for its
 * own snapshot at each collection (a control frame its runtime answers: no
 * code in the child); the parent keeps the last good answer in the child's
 * source, so snapshots also hold the child's contexts and values, with pid
 * and child set. Answers are bounded (256 KiB; a longer frame closes the
 * channel with WEFT_EFRAMESIZE); a child that does not answer is asked
 * again once a second at most and keeps its last figures, their age
 * growing; an answer that does not decode is refused and counted (the
 * child source's stats_rejected and stats_error). See docs/metrics.md.
 *
 * Off switch: WEFT_METRICS=0 in the environment when the runtime is made: no
 * timer, no sampling, snapshots list no contexts. WEFT_METRICS_PERIOD_MS=n
 * sets the sampling period of a working loop (1 to 1000; default 10).
 *
 * Exposition: weft_metrics_prometheus and weft_metrics_json format a
 * snapshot; weft_metrics_http_start (weft/metrics_http.h, a separate library
 * built when Debian's libhttp-parser-dev is found) serves them. */
#ifndef WEFT_METRICS_H
#define WEFT_METRICS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A distribution in nanoseconds, read from log-linear buckets (8 per power
 * of two): a percentile is its bucket's upper bound, at most 12.5% above the
 * true value and never above max_ns. All zero when count is 0. */
typedef struct {
  uint64_t count;
  uint64_t min_ns, max_ns, mean_ns;
  uint64_t p50_ns, p90_ns, p99_ns;
} weft_metrics_hist_t;

/* One context as last published by its own thread. */
typedef struct {
  char name[32];            /* "main", "worker-1", ... or weft_metrics_ctx_name's */
  uint64_t msgs_in;         /* messages delivered to callbacks on the context */
  uint64_t msgs_out;        /* messages posted from the context's thread */
  uint64_t wakeups;         /* times woken from sleep by a post */
  uint64_t spins_hit;       /* times spinning found work (a wake-up saved) */
  uint64_t undeliverable;   /* messages discarded because their port closed */
  uint64_t ports_open;      /* ports bound to the context */
  uint64_t queue_depth;     /* messages waiting in all its ports (at the last collection) */
  uint64_t queue_max;       /* messages waiting in its busiest port (idem) */
  uint64_t queue_peak;      /* most messages seen waiting in one port at a delivery
                               (since the start or the last reset) */
  uint64_t loop_idle_ns;    /* time its loop waited for events, since the start */
  uint64_t loop_age_ns;     /* time since the context started */
  double utilization;       /* busy share of the last full second (1 - idle/elapsed) */
  uint64_t age_ns;          /* time since this publication (when the snapshot was taken) */
  weft_metrics_hist_t delay; /* loop delay since the start or the last reset */
  /* Where it runs: pid 0 and child "" for this process; for a child
   * process's own context (reported over its channel, see "Child
   * processes" above) the child's pid and name. age_ns then counts from the
   * child's publication: the child's age of it when it answered plus the
   * time since its answer came. */
  int pid;
  char child[32];
} weft_metrics_ctx_t;

typedef enum { WEFT_METRIC_COUNTER = 0, WEFT_METRIC_GAUGE = 1 } weft_metric_type_t;

/* One value a source published. The series is weft_<kind>_<name>, labelled
 * <kind>="<source>" and, when label_key is not empty, <label_key>="<label_value>". */
typedef struct {
  char kind[16];            /* "pool", "balancer", "node", "child", ... */
  char source[48];          /* the source's name */
  char name[48];            /* "queued", "connections_open", ... */
  char label_key[16];
  char label_value[32];
  weft_metric_type_t type;
  double value;
  int pid;                  /* 0 and "": this process; else the child that published it */
  char child[32];
} weft_metrics_value_t;

typedef struct {
  uint64_t taken_ns;        /* uv_hrtime() when it was taken */
  size_t nctx;
  weft_metrics_ctx_t *ctx;  /* the runtime's contexts, main first */
  size_t nvalues;
  weft_metrics_value_t *values;
} weft_metrics_snapshot_t;

/* weft_metrics_snapshot: copies the last publication of every context of rt
 * and of every source. Any thread; takes the runtime's metrics lock for the
 * copy only (no loop stops or waits). Returns 0 and sets *out (free it with
 * weft_metrics_snapshot_free), WEFT_EINVAL or WEFT_ENOMEM. With metrics off
 * the snapshot is empty. */
WEFT_EXTERN int weft_metrics_snapshot(weft_runtime_t *rt, weft_metrics_snapshot_t **out);
/* weft_metrics_snapshot_free: frees s (NULL: nothing). Any thread. */
WEFT_EXTERN void weft_metrics_snapshot_free(weft_metrics_snapshot_t *s);

/* weft_metrics_enabled: true if rt samples its contexts. Any thread. */
WEFT_EXTERN bool weft_metrics_enabled(weft_runtime_t *rt);

/* weft_metrics_ctx_reset: clears ctx's loop delay histogram and queue peak
 * at its next sample (the sample that follows is kept). Any thread. */
WEFT_EXTERN int weft_metrics_ctx_reset(weft_ctx_t *ctx);
/* weft_metrics_reset: weft_metrics_ctx_reset on every context of rt. Any thread. */
WEFT_EXTERN int weft_metrics_reset(weft_runtime_t *rt);
/* weft_metrics_ctx_name: names ctx in snapshots (copied; at most 31 bytes
 * kept). Thread of ctx. Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_metrics_ctx_name(weft_ctx_t *ctx, const char *name);

/* ---- ports, on demand ------------------------------------------------------ */

/* One port's figures. Nothing here costs a message anything: they are read
 * from what the mailbox keeps anyway (its queue count and weight, bounds,
 * state), so there are no per-port message totals (a context's are in
 * weft_metrics_ctx_t). */
typedef struct {
  uint64_t id;              /* the port's identity while it lives (same in every call) */
  char ctx[32];             /* its context's name ("" while in transit) */
  uint64_t queue_depth;     /* messages waiting */
  uint64_t queue_bytes;     /* weight of those of 512 bytes or more (payload and owned
                               buffers): what the byte bound counts */
  uint64_t queue_peak;      /* most seen waiting at a context's collection since the
                               tables were turned on (sampled; weft_metrics_port: the depth) */
  uint64_t hwm_msgs;        /* its bounds: past them a post to it gets WEFT_EAGAIN */
  uint64_t hwm_bytes;
  uint64_t dropped;         /* messages that reached it and were not delivered (it
                               closed first, or the transport dropped them) */
  bool full;                /* a poster got WEFT_EAGAIN and waits for its drain */
  bool stalled;             /* messages wait and are not being delivered (the port is
                               stopped, or in transit) */
  bool closed;              /* this end closed */
  bool peer_closed;         /* the other end closed */
} weft_metrics_port_t;

/* weft_metrics_port: port's figures now. Any thread; the caller keeps port
 * alive. Returns 0, WEFT_EINVAL. */
WEFT_EXTERN int weft_metrics_port(weft_port_t *port, weft_metrics_port_t *out);

/* weft_metrics_ports: every port of every context of rt, the fullest first
 * (queue_depth, then queue_bytes), at most limit of them (0: all). Any
 * thread, never waits for a loop: the tables are those the contexts
 * published at their last collection. They are kept only on demand: a call
 * turns them on for 10 s (each context then walks its ports every 100 ms, as
 * it does for its queue depth), so the first call, or the first after a
 * quiet spell, returns WEFT_EAGAIN: ask again after a collection (100 ms).
 * Returns 0 and *out (free with weft_free; NULL when *n is 0), WEFT_EAGAIN,
 * WEFT_EINVAL, WEFT_ENOMEM. With metrics off: 0 and no ports. */
WEFT_EXTERN int weft_metrics_ports(weft_runtime_t *rt, size_t limit, weft_metrics_port_t **out,
                                   size_t *n);

/* ---- sources ------------------------------------------------------------- */

typedef struct weft_metrics_source_s weft_metrics_source_t;
/* Called for each collection on the source's context thread; publishes the
 * source's current figures with weft_metrics_put (what it does not put is
 * absent from the next snapshots). It must not free the source. */
typedef void (*weft_metrics_collect_cb)(weft_metrics_source_t *src, void *data);

/* weft_metrics_source_new: registers a source on ctx (its thread; names
 * copied, kind at most 15 bytes, name 47). Collected from the next
 * collection on. Returns 0 and *out, WEFT_EINVAL, WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM, or UV_ENOTSUP with metrics off (then *out is NULL: callers
 * go on without). */
WEFT_EXTERN int weft_metrics_source_new(weft_ctx_t *ctx, const char *kind, const char *name,
                                        weft_metrics_collect_cb collect, void *data,
                                        weft_metrics_source_t **out);
/* weft_metrics_source_free: unregisters and frees src (NULL: nothing). Its
 * context's thread, also after the context ended. */
WEFT_EXTERN void weft_metrics_source_free(weft_metrics_source_t *src);
/* weft_metrics_put: inside a collect callback only: adds one value (names
 * copied and truncated to the field sizes; label_key NULL or "": no label).
 * Returns 0, WEFT_EINVAL or WEFT_ENOMEM (the value is left out). */
WEFT_EXTERN int weft_metrics_put(weft_metrics_source_t *src, const char *name,
                                 const char *label_key, const char *label_value,
                                 weft_metric_type_t type, double value);

/* ---- formats (actors/metrics_fmt.c) ---------------------------------------- */

/* weft_metrics_prometheus: s in the Prometheus text exposition format 0.0.4
 * (# HELP and # TYPE lines, ctx="..." labels, seconds and _total counters).
 * weft_metrics_json: s as one JSON object (see docs/metrics.md).
 * Any thread. Return 0 and a NUL-terminated *out of *len bytes (free with
 * weft_free), or WEFT_EINVAL / WEFT_ENOMEM. */
WEFT_EXTERN int weft_metrics_prometheus(const weft_metrics_snapshot_t *s, char **out, size_t *len);
WEFT_EXTERN int weft_metrics_json(const weft_metrics_snapshot_t *s, char **out, size_t *len);
/* weft_metrics_ports_prometheus / _json: ports (from weft_metrics_ports)
 * as the weft_port_* families (labels ctx and port, the id in hex) or as a
 * JSON array. Same contract as above. */
WEFT_EXTERN int weft_metrics_ports_prometheus(const weft_metrics_port_t *ports, size_t n,
                                              char **out, size_t *len);
WEFT_EXTERN int weft_metrics_ports_json(const weft_metrics_port_t *ports, size_t n, char **out,
                                        size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_METRICS_H */
