/* metrics_ports.c: per-port figures on demand.
 *
 * A port's figures are read from what its mailbox keeps anyway: the queue
 * count and weight (atomics posters update), its bounds, its state bits and
 * scheduling token, its drop counts. Nothing is added to the message path.
 *
 * One port: weft_metrics_port reads those atomics from any thread.
 * Every port: the tables are off until someone asks. weft_metrics_ports
 * moves each context's ports_until 10 s ahead; while it lies ahead, the
 * context builds a table of its ports at each collection (it walks them for
 * its queue depth already) and publishes it under the registry lock; once
 * it passes, the table is dropped. The sampled peak of a port is carried from
 * one table to the next (the tables are sorted by id), so it is the most
 * seen at a collection since the tables were turned on.
 *
 * Threads: tables are built on their context's thread and copied anywhere
 * under the registry lock. */
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

#define KEEP_NS (10ull * 1000000000u) /* tables stay on this long after a request */
#define TABLE_MAX 65536u              /* ports per context in a table */

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* splitmix64's finaliser: a bijection, so ids are unique, and a port's
 * address is not shown as such. */
static uint64_t port_id(const weft_port_t *p) {
  uint64_t z = (uint64_t)(uintptr_t)p + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The figures every thread may read (relaxed: statistics). */
static void read_port(weft_port_t *p, weft_metrics_port_t *o) {
  memset(o, 0, sizeof(*o));
  o->id = port_id(p);
  o->queue_depth = weft_port_pending(p);
  int64_t b = atomic_load_explicit(&p->pending_bytes, memory_order_relaxed);
  o->queue_bytes = b > 0 ? (uint64_t)b : 0;
  o->queue_peak = o->queue_depth;
  weft__port_ext_t *e = atomic_load_explicit(&p->ext, memory_order_acquire);
  const weft__bounds_t *bt = &weft__bounds_table[weft__port_channel(p)->bounds];
  uint32_t hm = e ? atomic_load_explicit(&e->hwm_msgs, memory_order_relaxed) : 0;
  size_t hb = e ? atomic_load_explicit(&e->hwm_bytes, memory_order_relaxed) : 0;
  o->hwm_msgs = hm ? hm : bt->msgs;
  o->hwm_bytes = hb ? hb : bt->bytes;
  o->dropped = weft_port_dropped(p) + atomic_load_explicit(&p->discarded, memory_order_relaxed);
  o->full = atomic_load_explicit(&p->want_drain, memory_order_relaxed) != 0;
  o->stalled = o->queue_depth > 0 &&
               atomic_load_explicit(&p->tok, memory_order_relaxed) == WEFT__TOK_PARKED;
  uint32_t st = atomic_load_explicit(&p->state, memory_order_relaxed);
  o->closed = (st & WEFT__STATE_CLOSED) != 0;
  o->peer_closed = (st & WEFT__STATE_PEER_CLOSED) != 0;
}

/* ---- one port, any thread -------------------------------------------------------- */

int weft_metrics_port(weft_port_t *port, weft_metrics_port_t *out) {
  if (port == NULL || out == NULL)
    return WEFT_EINVAL;
  read_port(port, out);
  weft_ctx_t *owner = atomic_load_explicit(&port->owner, memory_order_acquire);
  if (owner == NULL)
    return 0;
  weft__metrics_reg_t *reg = &owner->rt->metrics;
  uv_mutex_lock(&reg->lock);
  for (weft_list_node_t *n = weft_list_first(&reg->ctxs); n != NULL; n = weft_list_next(n)) {
    weft__ctxm_t *cm = WEFT_LIST_ENTRY(n, weft__ctxm_t, node);
    if (cm->ctx == owner)
      memcpy(out->ctx, cm->name, sizeof(out->ctx));
  }
  uv_mutex_unlock(&reg->lock);
  return 0;
}

/* ---- tables, built by their context ------------------------------------------------ */

static int by_id(const void *a, const void *b) {
  uint64_t x = ((const weft_metrics_port_t *)a)->id, y = ((const weft_metrics_port_t *)b)->id;
  return x < y ? -1 : x > y;
}

static void swap_table(weft__ctxm_t *cm, weft_metrics_port_t *t, size_t n) {
  uv_mutex_lock(&cm->reg->lock);
  weft_metrics_port_t *old = cm->ports;
  cm->ports = t;
  cm->nports = n;
  uv_mutex_unlock(&cm->reg->lock);
  weft__free(old);
}

/* The previous table is read here without the lock: only this thread writes it. */
static void carry_peaks(weft__ctxm_t *cm, weft_metrics_port_t *t, size_t n) {
  for (size_t i = 0; i < n && cm->nports > 0; i++) {
    const weft_metrics_port_t *was =
        bsearch(&t[i], cm->ports, cm->nports, sizeof(*t), by_id);
    if (was != NULL && was->queue_peak > t[i].queue_peak)
      t[i].queue_peak = was->queue_peak;
  }
}

void weft__metrics_ports_collect(weft__ctxm_t *cm, uint64_t now) {
  if (now >= LD(cm->ports_until)) {
    if (cm->ports != NULL)
      swap_table(cm, NULL, 0);
    return;
  }
  size_t n = 0;
  for (weft_list_node_t *l = weft_list_first(&cm->ctx->ports); l != NULL; l = weft_list_next(l))
    n++;
  if (n > TABLE_MAX)
    n = TABLE_MAX;
  weft_metrics_port_t *t = weft__calloc(n ? n : 1, sizeof(*t));
  if (t == NULL)
    return; /* the last table stays */
  size_t i = 0;
  for (weft_list_node_t *l = weft_list_first(&cm->ctx->ports); l != NULL && i < n;
       l = weft_list_next(l)) {
    read_port(WEFT_LIST_ENTRY(l, weft_port_t, ctx_node), &t[i]);
    memcpy(t[i++].ctx, cm->name, sizeof(t->ctx)); /* the name changes on this thread only */
  }
  qsort(t, n, sizeof(*t), by_id);
  carry_peaks(cm, t, n);
  swap_table(cm, t, n);
}

void weft__metrics_ports_fini(weft__ctxm_t *cm) {
  weft__free(cm->ports);
  cm->ports = NULL;
  cm->nports = 0;
}

/* ---- every port, any thread ------------------------------------------------------------ */

static int fullest_first(const void *a, const void *b) {
  const weft_metrics_port_t *x = a, *y = b;
  if (x->queue_depth != y->queue_depth)
    return x->queue_depth > y->queue_depth ? -1 : 1;
  if (x->queue_bytes != y->queue_bytes)
    return x->queue_bytes > y->queue_bytes ? -1 : 1;
  return by_id(a, b);
}

/* Turn the tables on (for KEEP_NS more) and count what they hold now. */
static size_t want_tables(weft__metrics_reg_t *reg, bool *all_there) {
  uint64_t until = uv_hrtime() + KEEP_NS;
  size_t total = 0;
  *all_there = true;
  for (weft_list_node_t *n = weft_list_first(&reg->ctxs); n != NULL; n = weft_list_next(n)) {
    weft__ctxm_t *cm = WEFT_LIST_ENTRY(n, weft__ctxm_t, node);
    atomic_store_explicit(&cm->ports_until, until, memory_order_relaxed);
    if (cm->ports == NULL)
      *all_there = false;
    total += cm->nports;
  }
  return total;
}

int weft_metrics_ports(weft_runtime_t *rt, size_t limit, weft_metrics_port_t **out, size_t *n) {
  if (rt == NULL || out == NULL || n == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  *n = 0;
  weft__metrics_reg_t *reg = &rt->metrics;
  bool all_there;
  uv_mutex_lock(&reg->lock);
  size_t total = want_tables(reg, &all_there);
  weft_metrics_port_t *t = total ? weft__malloc(total * sizeof(*t)) : NULL;
  size_t k = 0;
  for (weft_list_node_t *l = weft_list_first(&reg->ctxs); t != NULL && l != NULL;
       l = weft_list_next(l)) {
    weft__ctxm_t *cm = WEFT_LIST_ENTRY(l, weft__ctxm_t, node);
    if (cm->nports > 0)
      memcpy(t + k, cm->ports, cm->nports * sizeof(*t));
    k += cm->nports;
  }
  uv_mutex_unlock(&reg->lock);
  if (!all_there) {
    weft__free(t);
    return WEFT_EAGAIN;
  }
  if (total > 0 && t == NULL)
    return WEFT_ENOMEM;
  if (k > 0)
    qsort(t, k, sizeof(*t), fullest_first);
  *out = t;
  *n = limit && limit < k ? limit : k;
  return 0;
}
