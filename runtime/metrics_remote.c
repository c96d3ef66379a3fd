/* metrics_remote.c: a metrics snapshot carried over a process channel.
 *
 * A weft child answers its parent's STATS_REQ with its own snapshot in a
 * STATS frame (ipc_weft.c); the parent keeps the last good answer in the
 * child's metrics source, whose contexts and values snapshots then show,
 * labelled with the child's pid and name. The bytes come from another
 * process, so the decoder trusts nothing: fixed-size records whose count
 * must match the length exactly, strings cut at their field, types checked.
 * The frame's bound (WEFT__WIRE_STATS_MAX, checked by the wire codec before
 * the frame is read) bounds what the parent allocates for it.
 *
 * Format, integers big-endian, doubles as their IEEE-754 bits:
 *   u8 version (1), u8 flags (1: truncated), u16 nctx, u16 nval, u16 0
 *   nctx x CTX_REC: name[32] child[32] i32 pid u32 util_ppm
 *                   u64 x 12 (msgs_in msgs_out wakeups spins_hit undeliverable
 *                   ports_open queue_depth queue_max queue_peak loop_idle_ns
 *                   loop_age_ns age_ns) u64 x 7 (delay count min max mean p50 p90 p99)
 *   nval x VAL_REC: kind[16] source[48] name[48] label_key[16] label_value[32]
 *                   child[32] i32 pid u8 type u8[3] 0 u64 value
 * A child's records get its pid and name; its own children's records
 * (pid != 0) keep their pid and are named under it.
 *
 * Threads: encode on any thread; decode on the source's context. */
#include <string.h>

#include "metrics_int.h"
#include "metrics_remote.h"
#include "wire.h"

#define VERSION 1
#define F_TRUNCATED 1
#define HEAD 8
#define NCTR 12
#define NHIST 7
#define CTX_REC (32 + 32 + 4 + 4 + 8 * NCTR + 8 * NHIST)
#define VAL_REC (16 + 48 + 48 + 16 + 32 + 32 + 4 + 4 + 8)

/* ---- bytes -------------------------------------------------------------------- */

static uint8_t *put_be(uint8_t *p, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  return p + n;
}

static uint64_t get_be(const uint8_t **p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++)
    v = (v << 8) | (*p)[i];
  *p += n;
  return v;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t field) {
  size_t n = strnlen(s, field - 1);
  memcpy(p, s, n);
  memset(p + n, 0, field - n);
  return p + field;
}

static void get_str(const uint8_t **p, char *dst, size_t field) {
  memcpy(dst, *p, field);
  dst[field - 1] = '\0';
  *p += field;
}

static uint64_t f64_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}

static double bits_f64(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

/* ---- encode (the child) --------------------------------------------------------- */

static uint8_t *put_ctx(uint8_t *p, const weft_metrics_ctx_t *c) {
  p = put_str(p, c->name, 32);
  p = put_str(p, c->child, 32);
  p = put_be(p, (uint32_t)c->pid, 4);
  double u = c->utilization < 0 ? 0 : c->utilization > 1 ? 1 : c->utilization;
  p = put_be(p, (uint32_t)(u * 1e6 + 0.5), 4);
  const uint64_t ctr[NCTR] = {c->msgs_in,       c->msgs_out,     c->wakeups,     c->spins_hit,
                              c->undeliverable, c->ports_open,   c->queue_depth, c->queue_max,
                              c->queue_peak,    c->loop_idle_ns, c->loop_age_ns, c->age_ns};
  for (int i = 0; i < NCTR; i++)
    p = put_be(p, ctr[i], 8);
  const weft_metrics_hist_t *h = &c->delay;
  const uint64_t hv[NHIST] = {h->count,  h->min_ns, h->max_ns, h->mean_ns,
                              h->p50_ns, h->p90_ns, h->p99_ns};
  for (int i = 0; i < NHIST; i++)
    p = put_be(p, hv[i], 8);
  return p;
}

static uint8_t *put_val(uint8_t *p, const weft_metrics_value_t *v) {
  p = put_str(p, v->kind, 16);
  p = put_str(p, v->source, 48);
  p = put_str(p, v->name, 48);
  p = put_str(p, v->label_key, 16);
  p = put_str(p, v->label_value, 32);
  p = put_str(p, v->child, 32);
  p = put_be(p, (uint32_t)v->pid, 4);
  p = put_be(p, (uint32_t)v->type << 24, 4);
  return put_be(p, f64_bits(v->value), 8);
}

int weft__metrics_encode(weft_runtime_t *rt, uint8_t **out, size_t *len) {
  weft_metrics_snapshot_t *s;
  int err = weft_metrics_snapshot(rt, &s);
  if (err)
    return err;
  size_t room = WEFT__WIRE_STATS_MAX - HEAD;
  size_t nctx = s->nctx < room / CTX_REC ? s->nctx : room / CTX_REC;
  room -= nctx * CTX_REC;
  size_t nval = s->nvalues < room / VAL_REC ? s->nvalues : room / VAL_REC;
  size_t n = HEAD + nctx * CTX_REC + nval * VAL_REC;
  uint8_t *buf = weft__malloc(n), *p = buf;
  if (buf == NULL) {
    weft_metrics_snapshot_free(s);
    return WEFT_ENOMEM;
  }
  bool truncated = nctx < s->nctx || nval < s->nvalues;
  *p++ = VERSION;
  *p++ = truncated ? F_TRUNCATED : 0;
  p = put_be(p, nctx, 2); /* both < 2^16: the bound allows at most ~1200 records */
  p = put_be(p, nval, 2);
  p = put_be(p, 0, 2);
  for (size_t i = 0; i < nctx; i++)
    p = put_ctx(p, &s->ctx[i]);
  for (size_t i = 0; i < nval; i++)
    p = put_val(p, &s->values[i]);
  weft_metrics_snapshot_free(s);
  *out = buf;
  *len = n;
  return 0;
}

/* ---- decode (the parent) ---------------------------------------------------------- */

/* A record of the child itself gets its pid and name; one of a grandchild
 * keeps the pid the child reports and is named under the child
 * ("work/kid"), so that no child can pass its figures off as another
 * process's. */
static void label(int *pid, char *child, int rpid, const char *name) {
  char nested[32];
  if (*pid == 0 || child[0] == '\0') {
    *pid = rpid;
    snprintf(child, 32, "%s", name);
    return;
  }
  memcpy(nested, child, sizeof(nested));
  snprintf(child, 32, "%.15s/%.15s", name, nested);
}

static void get_ctx(const uint8_t **p, weft_metrics_ctx_t *c) {
  get_str(p, c->name, 32);
  get_str(p, c->child, 32);
  c->pid = (int)(int32_t)(uint32_t)get_be(p, 4);
  c->utilization = (double)get_be(p, 4) / 1e6;
  uint64_t *ctr[NCTR] = {&c->msgs_in,       &c->msgs_out,     &c->wakeups,     &c->spins_hit,
                         &c->undeliverable, &c->ports_open,   &c->queue_depth, &c->queue_max,
                         &c->queue_peak,    &c->loop_idle_ns, &c->loop_age_ns, &c->age_ns};
  for (int i = 0; i < NCTR; i++)
    *ctr[i] = get_be(p, 8);
  weft_metrics_hist_t *h = &c->delay;
  uint64_t *hv[NHIST] = {&h->count,  &h->min_ns, &h->max_ns, &h->mean_ns,
                         &h->p50_ns, &h->p90_ns, &h->p99_ns};
  for (int i = 0; i < NHIST; i++)
    *hv[i] = get_be(p, 8);
}

static int get_val(const uint8_t **p, weft_metrics_value_t *v) {
  get_str(p, v->kind, 16);
  get_str(p, v->source, 48);
  get_str(p, v->name, 48);
  get_str(p, v->label_key, 16);
  get_str(p, v->label_value, 32);
  get_str(p, v->child, 32);
  v->pid = (int)(int32_t)(uint32_t)get_be(p, 4);
  uint64_t t = get_be(p, 4);
  v->value = bits_f64(get_be(p, 8));
  if ((t >> 24) > WEFT_METRIC_GAUGE || (t & 0xffffffu) != 0 || v->kind[0] == '\0' ||
      v->name[0] == '\0')
    return WEFT_EPROTO;
  v->type = (weft_metric_type_t)(t >> 24);
  return 0;
}

typedef struct {
  weft_metrics_ctx_t *ctx;
  weft_metrics_value_t *val;
  size_t nctx, nval;
  bool truncated;
} decoded_t;

static void decoded_free(decoded_t *d) {
  weft__free(d->ctx);
  weft__free(d->val);
}

static int decode(const uint8_t *p, size_t n, decoded_t *d) {
  memset(d, 0, sizeof(*d));
  if (n < HEAD || p[0] != VERSION || (p[1] & ~F_TRUNCATED) != 0)
    return WEFT_EPROTO;
  d->truncated = p[1] & F_TRUNCATED;
  const uint8_t *q = p + 2;
  d->nctx = (size_t)get_be(&q, 2);
  d->nval = (size_t)get_be(&q, 2);
  if (get_be(&q, 2) != 0 || n != HEAD + d->nctx * CTX_REC + d->nval * VAL_REC)
    return WEFT_EPROTO;
  if (d->nctx && (d->ctx = weft__calloc(d->nctx, sizeof(*d->ctx))) == NULL)
    return WEFT_ENOMEM;
  if (d->nval && (d->val = weft__calloc(d->nval, sizeof(*d->val))) == NULL) {
    decoded_free(d);
    return WEFT_ENOMEM;
  }
  for (size_t i = 0; i < d->nctx; i++)
    get_ctx(&q, &d->ctx[i]);
  for (size_t i = 0; i < d->nval; i++) {
    if (get_val(&q, &d->val[i]) != 0) {
      decoded_free(d);
      return WEFT_EPROTO;
    }
  }
  return 0;
}

int weft__metrics_source_remote(weft_metrics_source_t *src, const uint8_t *p, size_t n, int pid,
                                const char *name, uint64_t now, bool *truncated) {
  decoded_t d;
  int err = decode(p, n, &d);
  if (err)
    return err;
  for (size_t i = 0; i < d.nctx; i++)
    label(&d.ctx[i].pid, d.ctx[i].child, pid, name);
  for (size_t i = 0; i < d.nval; i++)
    label(&d.val[i].pid, d.val[i].child, pid, name);
  uv_mutex_lock(&src->lock);
  decoded_t old = {.ctx = src->rctx, .val = src->rval};
  src->rctx = d.ctx;
  src->nrctx = d.nctx;
  src->rval = d.val;
  src->nrval = d.nval;
  src->r_received_ns = now;
  uv_mutex_unlock(&src->lock);
  decoded_free(&old);
  *truncated = d.truncated;
  return 0;
}
