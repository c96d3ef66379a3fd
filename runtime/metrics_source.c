/* metrics_source.c: named figures that objects on a context publish.
 *
 * A source lives on one context. Its collect callback runs on that thread at
 * each collection and fills the staging array with weft_metrics_put; the
 * staged values then replace the published ones under the source's own lock,
 * which a snapshot takes only to copy them (so a snapshot never sees half a
 * collection). When the context ends first, the source is detached: it stays
 * registered until its owner frees it, with its last figures. */
#include <string.h>

#include "metrics_int.h"

static void copy_name(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src != NULL ? src : "");
}

int weft_metrics_source_new(weft_ctx_t *ctx, const char *kind, const char *name,
                            weft_metrics_collect_cb collect, void *data,
                            weft_metrics_source_t **out) {
  if (out != NULL)
    *out = NULL;
  if (ctx == NULL || kind == NULL || kind[0] == '\0' || name == NULL || collect == NULL ||
      out == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft__ctxm_t *cm = ctx->metrics;
  if (cm == NULL)
    return UV_ENOTSUP;
  weft_metrics_source_t *s = weft__calloc(1, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  int err = uv_mutex_init(&s->lock);
  if (err) {
    weft__free(s);
    return err;
  }
  s->reg = cm->reg;
  s->cm = cm;
  s->collect = collect;
  s->data = data;
  copy_name(s->kind, sizeof(s->kind), kind);
  copy_name(s->name, sizeof(s->name), name);
  weft_list_push_back(&cm->sources, &s->cnode);
  uv_mutex_lock(&s->reg->lock);
  weft_list_push_back(&s->reg->sources, &s->gnode);
  uv_mutex_unlock(&s->reg->lock);
  *out = s;
  return 0;
}

void weft_metrics_source_free(weft_metrics_source_t *s) {
  if (s == NULL)
    return;
  if (s->cm != NULL)
    weft_list_remove(&s->cm->sources, &s->cnode);
  uv_mutex_lock(&s->reg->lock);
  weft_list_remove(&s->reg->sources, &s->gnode);
  uv_mutex_unlock(&s->reg->lock);
  uv_mutex_destroy(&s->lock);
  weft__free(s->stage);
  weft__free(s->pub);
  weft__free(s->rctx);
  weft__free(s->rval);
  weft__free(s);
}

int weft_metrics_put(weft_metrics_source_t *s, const char *name, const char *label_key,
                     const char *label_value, weft_metric_type_t type, double value) {
  if (s == NULL || name == NULL || name[0] == '\0')
    return WEFT_EINVAL;
  if (s->nstage == s->capstage) {
    size_t cap = s->capstage ? s->capstage * 2 : 16;
    weft_metrics_value_t *v = weft__realloc(s->stage, cap * sizeof(*v));
    if (v == NULL)
      return WEFT_ENOMEM;
    s->stage = v;
    s->capstage = cap;
  }
  weft_metrics_value_t *v = &s->stage[s->nstage++];
  memset(v, 0, sizeof(*v));
  memcpy(v->kind, s->kind, sizeof(v->kind));
  memcpy(v->source, s->name, sizeof(v->source));
  copy_name(v->name, sizeof(v->name), name);
  copy_name(v->label_key, sizeof(v->label_key), label_key);
  copy_name(v->label_value, sizeof(v->label_value), label_key ? label_value : NULL);
  v->type = type;
  v->value = value;
  return 0;
}

/* Swap the staged values in (the published array becomes the next stage). */
static void publish(weft_metrics_source_t *s) {
  uv_mutex_lock(&s->lock);
  weft_metrics_value_t *old = s->pub;
  size_t oldcap = s->cappub;
  s->pub = s->stage;
  s->npub = s->nstage;
  s->cappub = s->capstage;
  uv_mutex_unlock(&s->lock);
  s->stage = old;
  s->capstage = oldcap;
  s->nstage = 0;
}

void weft__metrics_collect(weft__ctxm_t *cm) {
  for (weft_list_node_t *n = weft_list_first(&cm->sources), *next; n != NULL; n = next) {
    next = weft_list_next(n);
    weft_metrics_source_t *s = WEFT_LIST_ENTRY(n, weft_metrics_source_t, cnode);
    s->nstage = 0;
    s->collect(s, s->data);
    publish(s);
  }
}

void weft__metrics_detach_sources(weft__ctxm_t *cm) {
  weft_list_node_t *n;
  while ((n = weft_list_pop_front(&cm->sources)) != NULL)
    WEFT_LIST_ENTRY(n, weft_metrics_source_t, cnode)->cm = NULL;
}
