/* metrics.c: every context publishes its figures for snapshots from any
 * thread.
 *
 * Each context has a block (weft__ctxm_t) with an unref'd timer on its loop.
 * At each firing the owner records how late the timer fired (the loop delay)
 * and copies its plain counters into the block's relaxed atomics; every
 * COLLECT_NS it also walks its ports for queue depths and collects its
 * sources (metrics_source.c). The hot paths (post, deliver) are untouched:
 * they keep incrementing the context's plain counters.
 *
 * An idle loop is not woken every period: while the loop slept through
 * nearly all of the last interval, the interval doubles up to IDLE_MAX_NS,
 * and it falls back to the period as soon as the loop works. A block longer
 * than IDLE_MAX_NS is always seen (the timer falls due inside it), at least
 * its length less IDLE_MAX_NS late.
 *
 * Threads: the block's owner writes it; weft_metrics_snapshot reads it on any
 * thread under the registry lock, which guards only the lists (and names) so
 * that a block is not freed while a snapshot copies it. */
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

#define COLLECT_NS 100000000ull  /* 100 ms */
#define IDLE_MAX_NS 100000000ull /* 100 ms */
#define WINDOW_NS 1000000000ull
#define DEFAULT_PERIOD_MS 10u

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

int weft__metrics_reg_init(weft__metrics_reg_t *reg) {
  memset(reg, 0, sizeof(*reg));
  const char *on = getenv("WEFT_METRICS");
  const char *period = getenv("WEFT_METRICS_PERIOD_MS");
  reg->period_ms = DEFAULT_PERIOD_MS;
  if (period != NULL) {
    long v = strtol(period, NULL, 10);
    if (v >= 1 && v <= 1000)
      reg->period_ms = (uint32_t)v;
  }
  if (on != NULL && strcmp(on, "0") == 0)
    reg->period_ms = 0;
  return uv_mutex_init(&reg->lock);
}

void weft__metrics_reg_fini(weft__metrics_reg_t *reg) { uv_mutex_destroy(&reg->lock); }

/* ---- sampling (owner thread) ---------------------------------------------- */

static weft_port_t *port_of_link(weft_list_node_t *n) {
  return WEFT_LIST_ENTRY(n, weft_port_t, ctx_node);
}

static void publish_queues(weft__ctxm_t *cm) {
  uint64_t depth = 0, max = 0;
  for (weft_list_node_t *n = weft_list_first(&cm->ctx->ports); n != NULL; n = weft_list_next(n)) {
    uint64_t d = weft_port_pending(port_of_link(n));
    depth += d;
    if (d > max)
      max = d;
  }
  ST(cm->queue_depth, depth);
  ST(cm->queue_max, max);
}

static void publish_loop(weft__ctxm_t *cm, uint64_t now) {
  weft_ctx_t *ctx = cm->ctx;
  uint64_t idle = uv_metrics_idle_time(ctx->loop);
  ST(cm->idle_ns, idle);
  ST(cm->age_ns, now - ctx->start_ns);
  uint64_t span = now - cm->win_ns;
  if (span == 0)
    return;
  uint64_t didle = idle - cm->win_idle;
  uint64_t busy = didle < span ? span - didle : 0;
  ST(cm->util_ppm, busy * 1000000u / span);
  if (span >= WINDOW_NS) {
    cm->win_ns = now;
    cm->win_idle = idle;
  }
}

static void publish_counters(weft__ctxm_t *cm) {
  weft_ctx_t *ctx = cm->ctx;
  ST(cm->msgs_in, ctx->msgs_in);
  ST(cm->msgs_out, ctx->msgs_out);
  ST(cm->wakeups, ctx->wakeups);
  ST(cm->spins_hit, ctx->spins_hit);
  ST(cm->undeliverable, ctx->undeliverable);
  ST(cm->ports_open, ctx->ports_open);
  ST(cm->queue_peak, ctx->queue_peak);
}

/* The next interval: doubled while the loop slept through 99% of the last
 * one, else the period. */
static uint64_t next_wait(weft__ctxm_t *cm, uint64_t now, uint64_t idle) {
  uint64_t span = now - cm->last_ns, slept = idle - cm->last_idle;
  if (slept * 100 < span * 99)
    return cm->period_ns;
  uint64_t w = cm->wait_ns * 2;
  return w < IDLE_MAX_NS ? w : (IDLE_MAX_NS > cm->period_ns ? IDLE_MAX_NS : cm->period_ns);
}

static void on_sample(uv_timer_t *t) {
  weft__ctxm_t *cm = t->data;
  uint64_t now = uv_hrtime();
  uint64_t due = cm->last_ns + cm->wait_ns;
  uint64_t idle = uv_metrics_idle_time(cm->ctx->loop);
  if (LD(cm->reset_req)) {
    ST(cm->reset_req, false);
    weft__hist_reset(&cm->delay);
    cm->ctx->queue_peak = 0;
  }
  weft__hist_record(&cm->delay, now > due ? now - due : 0);
  publish_counters(cm);
  publish_loop(cm, now);
  if (now - cm->collected_ns >= COLLECT_NS) {
    cm->collected_ns = now;
    publish_queues(cm);
    weft__metrics_ports_collect(cm, now);
    weft__metrics_collect(cm);
  }
  ST(cm->published_ns, now);
  cm->wait_ns = next_wait(cm, now, idle);
  cm->last_ns = now;
  cm->last_idle = idle;
  (void)uv_timer_start(&cm->timer, on_sample, (cm->wait_ns + 999999) / 1000000, 0);
}

int weft__metrics_ctx_new(weft_ctx_t *ctx) {
  weft__metrics_reg_t *reg = &ctx->rt->metrics;
  ctx->metrics = NULL;
  if (reg->period_ms == 0)
    return 0;
  weft__ctxm_t *cm = weft__calloc(1, sizeof(*cm));
  if (cm == NULL)
    return WEFT_ENOMEM;
  cm->ctx = ctx;
  cm->reg = reg;
  cm->period_ns = (uint64_t)reg->period_ms * 1000000u;
  ctx->metrics = cm;
  return 0;
}

void weft__metrics_ctx_start(weft_ctx_t *ctx) {
  weft__ctxm_t *cm = ctx->metrics;
  if (cm == NULL)
    return;
  weft__metrics_reg_t *reg = cm->reg;
  (void)uv_timer_init(ctx->loop, &cm->timer); /* libuv: always 0 */
  cm->timer.data = cm;
  cm->started = true;
  uint64_t now = uv_hrtime();
  cm->last_ns = cm->win_ns = cm->collected_ns = now;
  cm->win_idle = cm->last_idle = uv_metrics_idle_time(ctx->loop);
  cm->wait_ns = cm->period_ns;
  ST(cm->published_ns, now);
  (void)uv_timer_start(&cm->timer, on_sample, reg->period_ms, 0);
  uv_unref((uv_handle_t *)&cm->timer);
  ctx->handles_open++;
  uv_mutex_lock(&reg->lock);
  if (ctx == ctx->rt->main) {
    strcpy(cm->name, "main");
    weft_list_push_front(&reg->ctxs, &cm->node);
  } else {
    snprintf(cm->name, sizeof(cm->name), "worker-%u", ++reg->next_worker);
    weft_list_push_back(&reg->ctxs, &cm->node);
  }
  uv_mutex_unlock(&reg->lock);
}

static void on_timer_closed(uv_handle_t *h) {
  weft__ctxm_t *cm = h->data;
  cm->ctx->handles_open--;
  weft__metrics_ports_fini(cm);
  weft__free(cm);
}

void weft__metrics_ctx_stop(weft_ctx_t *ctx) {
  weft__ctxm_t *cm = ctx->metrics;
  if (cm == NULL)
    return;
  ctx->metrics = NULL;
  if (!cm->started) {
    weft__free(cm);
    return;
  }
  weft__metrics_detach_sources(cm);
  uv_mutex_lock(&cm->reg->lock);
  weft_list_remove(&cm->reg->ctxs, &cm->node);
  uv_mutex_unlock(&cm->reg->lock);
  uv_close((uv_handle_t *)&cm->timer, on_timer_closed);
}

/* ---- questions and resets (any thread) -------------------------------------- */

bool weft_metrics_enabled(weft_runtime_t *rt) { return rt != NULL && rt->metrics.period_ms != 0; }

int weft_metrics_ctx_reset(weft_ctx_t *ctx) {
  if (ctx == NULL)
    return WEFT_EINVAL;
  weft__metrics_reg_t *reg = &ctx->rt->metrics;
  uv_mutex_lock(&reg->lock);
  for (weft_list_node_t *n = weft_list_first(&reg->ctxs); n != NULL; n = weft_list_next(n)) {
    weft__ctxm_t *cm = WEFT_LIST_ENTRY(n, weft__ctxm_t, node);
    if (cm->ctx == ctx)
      ST(cm->reset_req, true);
  }
  uv_mutex_unlock(&reg->lock);
  return 0;
}

int weft_metrics_reset(weft_runtime_t *rt) {
  if (rt == NULL)
    return WEFT_EINVAL;
  uv_mutex_lock(&rt->metrics.lock);
  for (weft_list_node_t *n = weft_list_first(&rt->metrics.ctxs); n != NULL; n = weft_list_next(n))
    ST(WEFT_LIST_ENTRY(n, weft__ctxm_t, node)->reset_req, true);
  uv_mutex_unlock(&rt->metrics.lock);
  return 0;
}

int weft_metrics_ctx_name(weft_ctx_t *ctx, const char *name) {
  if (ctx == NULL || name == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft__ctxm_t *cm = ctx->metrics;
  if (cm == NULL)
    return 0;
  uv_mutex_lock(&cm->reg->lock);
  snprintf(cm->name, sizeof(cm->name), "%s", name);
  uv_mutex_unlock(&cm->reg->lock);
  return 0;
}

/* ---- snapshots (any thread) ------------------------------------------------- */

static void read_ctx(weft__ctxm_t *cm, weft_metrics_ctx_t *o, uint64_t now) {
  memcpy(o->name, cm->name, sizeof(o->name));
  o->msgs_in = LD(cm->msgs_in);
  o->msgs_out = LD(cm->msgs_out);
  o->wakeups = LD(cm->wakeups);
  o->spins_hit = LD(cm->spins_hit);
  o->undeliverable = LD(cm->undeliverable);
  o->ports_open = LD(cm->ports_open);
  o->queue_depth = LD(cm->queue_depth);
  o->queue_max = LD(cm->queue_max);
  o->queue_peak = LD(cm->queue_peak);
  o->loop_idle_ns = LD(cm->idle_ns);
  o->loop_age_ns = LD(cm->age_ns);
  o->utilization = (double)LD(cm->util_ppm) / 1e6;
  uint64_t at = LD(cm->published_ns);
  o->age_ns = now > at ? now - at : 0;
  weft__hist_read(&cm->delay, &o->delay);
}

static size_t count_values(weft__metrics_reg_t *reg, size_t *nctx) {
  size_t nv = 0;
  *nctx = 0;
  for (weft_list_node_t *n = weft_list_first(&reg->ctxs); n != NULL; n = weft_list_next(n))
    (*nctx)++;
  for (weft_list_node_t *n = weft_list_first(&reg->sources); n != NULL; n = weft_list_next(n)) {
    weft_metrics_source_t *s = WEFT_LIST_ENTRY(n, weft_metrics_source_t, gnode);
    uv_mutex_lock(&s->lock);
    nv += s->npub + s->nrval;
    *nctx += s->nrctx;
    uv_mutex_unlock(&s->lock);
  }
  return nv;
}

static size_t fit(size_t want, size_t have, size_t cap) {
  return want < cap - have ? want : cap - have;
}

/* A source's remote contexts (a child's) age from the child's publication. */
static void copy_remote(weft_metrics_source_t *src, weft_metrics_snapshot_t *s, size_t capctx,
                        size_t capv) {
  size_t k = fit(src->nrctx, s->nctx, capctx);
  uint64_t since = s->taken_ns > src->r_received_ns ? s->taken_ns - src->r_received_ns : 0;
  for (size_t i = 0; i < k; i++) {
    s->ctx[s->nctx] = src->rctx[i];
    s->ctx[s->nctx++].age_ns += since;
  }
  k = fit(src->nrval, s->nvalues, capv);
  if (k)
    memcpy(&s->values[s->nvalues], src->rval, k * sizeof(*src->rval));
  s->nvalues += k;
}

/* Copy under the lock; a source's publication may have grown since it was
 * counted: what does not fit waits for the next snapshot. */
static void copy_all(weft__metrics_reg_t *reg, weft_metrics_snapshot_t *s, size_t capctx,
                     size_t capv) {
  for (weft_list_node_t *n = weft_list_first(&reg->ctxs); n != NULL && s->nctx < capctx;
       n = weft_list_next(n))
    read_ctx(WEFT_LIST_ENTRY(n, weft__ctxm_t, node), &s->ctx[s->nctx++], s->taken_ns);
  for (weft_list_node_t *n = weft_list_first(&reg->sources); n != NULL; n = weft_list_next(n)) {
    weft_metrics_source_t *src = WEFT_LIST_ENTRY(n, weft_metrics_source_t, gnode);
    uv_mutex_lock(&src->lock);
    size_t k = fit(src->npub, s->nvalues, capv);
    if (k)
      memcpy(&s->values[s->nvalues], src->pub, k * sizeof(*src->pub));
    s->nvalues += k;
    copy_remote(src, s, capctx, capv);
    uv_mutex_unlock(&src->lock);
  }
}

int weft_metrics_snapshot(weft_runtime_t *rt, weft_metrics_snapshot_t **out) {
  if (rt == NULL || out == NULL)
    return WEFT_EINVAL;
  weft__metrics_reg_t *reg = &rt->metrics;
  weft_metrics_snapshot_t *s = weft__calloc(1, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  size_t nctx, nv;
  uv_mutex_lock(&reg->lock);
  nv = count_values(reg, &nctx) + 64; /* room for sources that grow meanwhile */
  uv_mutex_unlock(&reg->lock);
  nctx += 8;
  s->ctx = weft__calloc(nctx, sizeof(*s->ctx));
  s->values = weft__calloc(nv, sizeof(*s->values));
  if (s->ctx == NULL || s->values == NULL) {
    weft_metrics_snapshot_free(s);
    return WEFT_ENOMEM;
  }
  uv_mutex_lock(&reg->lock);
  s->taken_ns = uv_hrtime();
  copy_all(reg, s, nctx, nv);
  uv_mutex_unlock(&reg->lock);
  *out = s;
  return 0;
}

void weft_metrics_snapshot_free(weft_metrics_snapshot_t *s) {
  if (s == NULL)
    return;
  weft__free(s->ctx);
  weft__free(s->values);
  weft__free(s);
}
