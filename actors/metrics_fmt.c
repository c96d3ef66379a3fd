/* metrics_fmt.c: a metrics snapshot as Prometheus text (format 0.0.4) and as
 * JSON. Public API only. Pure functions of the snapshot: any thread.
 *
 * Names follow the Prometheus conventions: base units (seconds), counters
 * end in _total, one family per name with its # HELP and # TYPE lines, the
 * context in a ctx="..." label. A source's value becomes the family
 * weft_<kind>_<name> (counters get _total) labelled <kind>="<source>". */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "weft.h"

typedef struct {
  char *p;
  size_t len, cap;
  int err;
} sb_t;

static void sb_grow(sb_t *b, size_t need) {
  if (b->err || b->len + need + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + need + 1)
    cap *= 2;
  char *p = weft_realloc(b->p, cap);
  if (p == NULL) {
    b->err = WEFT_ENOMEM;
    return;
  }
  b->p = p;
  b->cap = cap;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sb_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  sb_grow(b, (size_t)n);
  if (b->err)
    return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static void sb_putc(sb_t *b, char c) {
  sb_grow(b, 1);
  if (b->err)
    return;
  b->p[b->len++] = c;
  b->p[b->len] = '\0';
}

static int sb_finish(sb_t *b, char **out, size_t *len) {
  sb_grow(b, 0);
  if (b->err) {
    weft_free(b->p);
    return b->err;
  }
  b->p[b->len] = '\0';
  *out = b->p;
  *len = b->len;
  return 0;
}

/* A label value: \, " and newline escaped. */
static void prom_label(sb_t *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      sb_putc(b, '\\');
    if (*s == '\n') {
      sb_printf(b, "\\n");
      continue;
    }
    sb_putc(b, *s);
  }
}

/* A metric or label name: anything outside [a-zA-Z0-9_] becomes _. */
static void prom_name(sb_t *b, const char *s) {
  for (; *s; s++) {
    char c = *s;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    sb_putc(b, ok ? c : '_');
  }
}

static void prom_head(sb_t *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A child process's own figures carry child="name",pid="N" too. */
static void prom_where(sb_t *b, int pid, const char *child) {
  if (pid == 0)
    return;
  sb_printf(b, ",child=\"");
  prom_label(b, child);
  sb_printf(b, "\",pid=\"%d\"", pid);
}

/* name{ctx="..."[,child=...,pid=...] then what follows, then "} v". */
static void prom_ctx_open(sb_t *b, const char *name, const weft_metrics_ctx_t *c) {
  sb_printf(b, "%s{ctx=\"", name);
  prom_label(b, c->name);
  sb_putc(b, '"');
  prom_where(b, c->pid, c->child);
}

static void prom_ctx_value(sb_t *b, const char *name, const weft_metrics_ctx_t *c, double v) {
  prom_ctx_open(b, name, c);
  sb_printf(b, "} %.9g\n", v);
}

typedef struct {
  const char *name, *type, *help;
  size_t off;     /* offset of a uint64_t field in weft_metrics_ctx_t */
  double scale;
} ctx_family_t;

#define F(field) offsetof(weft_metrics_ctx_t, field)
static const ctx_family_t ctx_families[] = {
    {"weft_messages_received_total", "counter", "Messages delivered to callbacks on the context.",
     F(msgs_in), 1},
    {"weft_messages_sent_total", "counter", "Messages posted from the context's thread.",
     F(msgs_out), 1},
    {"weft_wakeups_total", "counter", "Times the context was woken from sleep by a post.",
     F(wakeups), 1},
    {"weft_spins_hit_total", "counter", "Times spinning found work (a wake-up saved).",
     F(spins_hit), 1},
    {"weft_messages_undeliverable_total", "counter",
     "Messages discarded because their port closed.", F(undeliverable), 1},
    {"weft_ports_open", "gauge", "Ports bound to the context.", F(ports_open), 1},
    {"weft_queue_depth", "gauge", "Messages waiting in all the context's ports.",
     F(queue_depth), 1},
    {"weft_queue_depth_max", "gauge", "Messages waiting in the context's busiest port.",
     F(queue_max), 1},
    {"weft_queue_peak", "gauge", "Most messages seen waiting in one port at a delivery.",
     F(queue_peak), 1},
    {"weft_loop_idle_seconds_total", "counter", "Time the context's loop waited for events.",
     F(loop_idle_ns), 1e-9},
    {"weft_loop_age_seconds", "gauge", "Time since the context started.", F(loop_age_ns), 1e-9},
    {"weft_metrics_age_seconds", "gauge", "Age of the context's last publication.", F(age_ns),
     1e-9},
};
#undef F

static void prom_contexts(sb_t *b, const weft_metrics_snapshot_t *s) {
  prom_head(b, "weft_loop_delay_seconds", "summary",
            "How late the context's sampling timer fired (event loop delay).");
  static const double qs[] = {0.5, 0.9, 0.99};
  for (size_t i = 0; i < s->nctx; i++) {
    const weft_metrics_ctx_t *c = &s->ctx[i];
    const uint64_t qv[] = {c->delay.p50_ns, c->delay.p90_ns, c->delay.p99_ns};
    for (size_t q = 0; q < 3; q++) {
      prom_ctx_open(b, "weft_loop_delay_seconds", c);
      sb_printf(b, ",quantile=\"%g\"} %.9g\n", qs[q], (double)qv[q] * 1e-9);
    }
    prom_ctx_value(b, "weft_loop_delay_seconds_sum", c,
                   (double)c->delay.mean_ns * (double)c->delay.count * 1e-9);
    prom_ctx_value(b, "weft_loop_delay_seconds_count", c, (double)c->delay.count);
  }
  prom_head(b, "weft_loop_delay_max_seconds", "gauge", "Largest loop delay since the last reset.");
  for (size_t i = 0; i < s->nctx; i++)
    prom_ctx_value(b, "weft_loop_delay_max_seconds", &s->ctx[i],
                   (double)s->ctx[i].delay.max_ns * 1e-9);
  prom_head(b, "weft_loop_delay_min_seconds", "gauge", "Smallest loop delay since the last reset.");
  for (size_t i = 0; i < s->nctx; i++)
    prom_ctx_value(b, "weft_loop_delay_min_seconds", &s->ctx[i],
                   (double)s->ctx[i].delay.min_ns * 1e-9);
  prom_head(b, "weft_loop_utilization", "gauge",
            "Busy share of the context's loop over the last second (0 to 1).");
  for (size_t i = 0; i < s->nctx; i++)
    prom_ctx_value(b, "weft_loop_utilization", &s->ctx[i], s->ctx[i].utilization);
  for (size_t f = 0; f < sizeof(ctx_families) / sizeof(ctx_families[0]); f++) {
    const ctx_family_t *fam = &ctx_families[f];
    prom_head(b, fam->name, fam->type, fam->help);
    for (size_t i = 0; i < s->nctx; i++) {
      uint64_t v;
      memcpy(&v, (const char *)&s->ctx[i] + fam->off, sizeof(v));
      prom_ctx_value(b, fam->name, &s->ctx[i], (double)v * fam->scale);
    }
  }
}

static bool same_family(const weft_metrics_value_t *a, const weft_metrics_value_t *b) {
  return strcmp(a->kind, b->kind) == 0 && strcmp(a->name, b->name) == 0 && a->type == b->type;
}

static void prom_family_name(sb_t *b, const weft_metrics_value_t *v) {
  sb_printf(b, "weft_");
  prom_name(b, v->kind);
  sb_putc(b, '_');
  prom_name(b, v->name);
  size_t n = strlen(v->name);
  if (v->type == WEFT_METRIC_COUNTER && (n < 6 || strcmp(v->name + n - 6, "_total") != 0))
    sb_printf(b, "_total");
}

static void prom_source_value(sb_t *b, const weft_metrics_value_t *v) {
  prom_family_name(b, v);
  sb_putc(b, '{');
  prom_name(b, v->kind);
  sb_printf(b, "=\"");
  prom_label(b, v->source);
  sb_putc(b, '"');
  if (v->label_key[0]) {
    sb_putc(b, ',');
    prom_name(b, v->label_key);
    sb_printf(b, "=\"");
    prom_label(b, v->label_value);
    sb_putc(b, '"');
  }
  prom_where(b, v->pid, v->child);
  sb_printf(b, "} %.17g\n", v->value);
}

static void prom_sources(sb_t *b, const weft_metrics_snapshot_t *s) {
  for (size_t i = 0; i < s->nvalues; i++) {
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++)
      seen = same_family(&s->values[j], &s->values[i]);
    if (seen)
      continue;
    const weft_metrics_value_t *v = &s->values[i];
    sb_printf(b, "# HELP ");
    prom_family_name(b, v);
    sb_printf(b, " %s %s (weft_metrics_put).\n# TYPE ", v->kind, v->name);
    prom_family_name(b, v);
    sb_printf(b, " %s\n", v->type == WEFT_METRIC_COUNTER ? "counter" : "gauge");
    for (size_t j = i; j < s->nvalues; j++)
      if (same_family(&s->values[j], v))
        prom_source_value(b, &s->values[j]);
  }
}

int weft_metrics_prometheus(const weft_metrics_snapshot_t *s, char **out, size_t *len) {
  if (s == NULL || out == NULL || len == NULL)
    return WEFT_EINVAL;
  sb_t b = {0};
  prom_contexts(&b, s);
  prom_sources(&b, s);
  return sb_finish(&b, out, len);
}

/* ---- JSON ------------------------------------------------------------------- */

static void json_str(sb_t *b, const char *s) {
  sb_putc(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      sb_printf(b, "\\%c", c);
    else if (c < 0x20)
      sb_printf(b, "\\u%04x", c);
    else
      sb_putc(b, (char)c);
  }
  sb_putc(b, '"');
}

static void json_where(sb_t *b, int pid, const char *child) {
  sb_printf(b, ",\"pid\":%d,\"child\":", pid);
  json_str(b, child);
}

static void json_ctx(sb_t *b, const weft_metrics_ctx_t *c) {
  sb_printf(b, "{\"name\":");
  json_str(b, c->name);
  json_where(b, c->pid, c->child);
  sb_printf(b,
            ",\"msgs_in\":%" PRIu64 ",\"msgs_out\":%" PRIu64 ",\"wakeups\":%" PRIu64
            ",\"spins_hit\":%" PRIu64 ",\"undeliverable\":%" PRIu64 ",\"ports_open\":%" PRIu64
            ",\"queue_depth\":%" PRIu64 ",\"queue_max\":%" PRIu64 ",\"queue_peak\":%" PRIu64
            ",\"loop_idle_ns\":%" PRIu64 ",\"loop_age_ns\":%" PRIu64
            ",\"utilization\":%.6f,\"age_ns\":%" PRIu64,
            c->msgs_in, c->msgs_out, c->wakeups, c->spins_hit, c->undeliverable, c->ports_open,
            c->queue_depth, c->queue_max, c->queue_peak, c->loop_idle_ns, c->loop_age_ns,
            c->utilization, c->age_ns);
  const weft_metrics_hist_t *h = &c->delay;
  sb_printf(b,
            ",\"delay\":{\"count\":%" PRIu64 ",\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64
            ",\"mean_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
            ",\"p99_ns\":%" PRIu64 "}}",
            h->count, h->min_ns, h->max_ns, h->mean_ns, h->p50_ns, h->p90_ns, h->p99_ns);
}

static void json_value(sb_t *b, const weft_metrics_value_t *v) {
  sb_printf(b, "{\"kind\":");
  json_str(b, v->kind);
  sb_printf(b, ",\"source\":");
  json_str(b, v->source);
  sb_printf(b, ",\"name\":");
  json_str(b, v->name);
  sb_printf(b, ",\"label_key\":");
  json_str(b, v->label_key);
  sb_printf(b, ",\"label_value\":");
  json_str(b, v->label_value);
  json_where(b, v->pid, v->child);
  sb_printf(b, ",\"type\":\"%s\",\"value\":%.17g}",
            v->type == WEFT_METRIC_COUNTER ? "counter" : "gauge", v->value);
}

int weft_metrics_json(const weft_metrics_snapshot_t *s, char **out, size_t *len) {
  if (s == NULL || out == NULL || len == NULL)
    return WEFT_EINVAL;
  sb_t b = {0};
  sb_printf(&b, "{\"taken_ns\":%" PRIu64 ",\"contexts\":[", s->taken_ns);
  for (size_t i = 0; i < s->nctx; i++) {
    if (i)
      sb_putc(&b, ',');
    json_ctx(&b, &s->ctx[i]);
  }
  sb_printf(&b, "],\"sources\":[");
  for (size_t i = 0; i < s->nvalues; i++) {
    if (i)
      sb_putc(&b, ',');
    json_value(&b, &s->values[i]);
  }
  sb_printf(&b, "]}\n");
  return sb_finish(&b, out, len);
}

/* ---- ports (weft_metrics_ports) ------------------------------------------------ */

typedef struct {
  const char *name, *type, *help;
  size_t off;     /* of a uint64_t, or of a bool when flag */
  bool flag;
} port_family_t;

#define P(field) offsetof(weft_metrics_port_t, field)
static const port_family_t port_families[] = {
    {"weft_port_queue_depth", "gauge", "Messages waiting in the port.", P(queue_depth), false},
    {"weft_port_queue_bytes", "gauge", "Weight of the messages waiting in the port.",
     P(queue_bytes), false},
    {"weft_port_queue_peak", "gauge", "Most messages seen waiting (sampled).", P(queue_peak),
     false},
    {"weft_port_hwm_messages", "gauge", "The port's bound in messages.", P(hwm_msgs), false},
    {"weft_port_hwm_bytes", "gauge", "The port's bound in bytes.", P(hwm_bytes), false},
    {"weft_port_dropped_total", "counter", "Messages that reached the port, not delivered.",
     P(dropped), false},
    {"weft_port_full", "gauge", "1 while a poster waits for the port's drain.", P(full), true},
    {"weft_port_stalled", "gauge", "1 while messages wait undelivered (stopped, in transit).",
     P(stalled), true},
};
#undef P

static double port_field(const weft_metrics_port_t *p, const port_family_t *f) {
  if (f->flag) {
    bool b;
    memcpy(&b, (const char *)p + f->off, sizeof(b));
    return b ? 1 : 0;
  }
  uint64_t v;
  memcpy(&v, (const char *)p + f->off, sizeof(v));
  return (double)v;
}

int weft_metrics_ports_prometheus(const weft_metrics_port_t *ports, size_t n, char **out,
                                  size_t *len) {
  if ((ports == NULL && n > 0) || out == NULL || len == NULL)
    return WEFT_EINVAL;
  sb_t b = {0};
  sb_grow(&b, 0);
  for (size_t f = 0; f < sizeof(port_families) / sizeof(port_families[0]); f++) {
    const port_family_t *fam = &port_families[f];
    prom_head(&b, fam->name, fam->type, fam->help);
    for (size_t i = 0; i < n; i++) {
      sb_printf(&b, "%s{ctx=\"", fam->name);
      prom_label(&b, ports[i].ctx);
      sb_printf(&b, "\",port=\"%016" PRIx64 "\"} %.17g\n", ports[i].id,
                port_field(&ports[i], fam));
    }
  }
  return sb_finish(&b, out, len);
}

int weft_metrics_ports_json(const weft_metrics_port_t *ports, size_t n, char **out, size_t *len) {
  if ((ports == NULL && n > 0) || out == NULL || len == NULL)
    return WEFT_EINVAL;
  sb_t b = {0};
  sb_putc(&b, '[');
  for (size_t i = 0; i < n; i++) {
    const weft_metrics_port_t *p = &ports[i];
    sb_printf(&b, "%s{\"id\":\"%016" PRIx64 "\",\"ctx\":", i ? "," : "", p->id);
    json_str(&b, p->ctx);
    sb_printf(&b,
              ",\"queue_depth\":%" PRIu64 ",\"queue_bytes\":%" PRIu64 ",\"queue_peak\":%" PRIu64
              ",\"hwm_msgs\":%" PRIu64 ",\"hwm_bytes\":%" PRIu64 ",\"dropped\":%" PRIu64
              ",\"full\":%s,\"stalled\":%s,\"closed\":%s,\"peer_closed\":%s}",
              p->queue_depth, p->queue_bytes, p->queue_peak, p->hwm_msgs, p->hwm_bytes,
              p->dropped, p->full ? "true" : "false", p->stalled ? "true" : "false",
              p->closed ? "true" : "false", p->peer_closed ? "true" : "false");
  }
  sb_putc(&b, ']');
  return sb_finish(&b, out, len);
}
