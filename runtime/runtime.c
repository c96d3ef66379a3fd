/* runtime.c: the runtime: options, the registry of named entries and the
 * main context.
 *
 * Invariants: one runtime per thread (a process normally has one); the main
 * context belongs to the thread that created the runtime. `lock` guards the
 * registry, which worker threads and weft_runtime_lookup read. A runtime's
 * default port bounds are its own: channels carry them (as an index into
 * weft__bounds_table), so posters on any thread read them without a lock and
 * a second runtime in the process cannot change them. */
#include <pthread.h>
#include <string.h>

#include "weft_impl.h"

weft__bounds_t weft__bounds_table[WEFT__BOUNDS_MAX] = {
    {WEFT_PORT_DEFAULT_HWM_MSGS, WEFT_PORT_DEFAULT_HWM_BYTES},
};
static uint32_t bounds_used = 1;  /* guarded by bounds_lock */
static pthread_mutex_t bounds_lock = PTHREAD_MUTEX_INITIALIZER;

/* The index of opts' default port bounds in weft__bounds_table, added if new.
 * The entry is written before this runtime can make a channel naming it. */
static int bounds_index(const weft_runtime_options_t *opts, uint32_t *out) {
  weft__bounds_t want = {
      .msgs = opts->port_hwm_msgs ? opts->port_hwm_msgs : WEFT_PORT_DEFAULT_HWM_MSGS,
      .bytes = opts->port_hwm_bytes ? opts->port_hwm_bytes : WEFT_PORT_DEFAULT_HWM_BYTES,
  };
  int err = WEFT_ENOMEM;
  pthread_mutex_lock(&bounds_lock);
  for (uint32_t i = 0; i < bounds_used; i++) {
    if (weft__bounds_table[i].msgs == want.msgs && weft__bounds_table[i].bytes == want.bytes) {
      *out = i;
      err = 0;
      break;
    }
  }
  if (err && bounds_used < WEFT__BOUNDS_MAX) {
    weft__bounds_table[bounds_used] = want;
    *out = bounds_used++;
    err = 0;
  }
  pthread_mutex_unlock(&bounds_lock);
  return err;
}

int weft_runtime_new(weft_runtime_t **out, const weft_runtime_options_t *opts) {
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  if (weft__ctx_tls() != NULL)
    return WEFT_EBUSY;
  weft__check_configure(); /* once per runtime: before any message of it */
  weft_runtime_t *rt = weft__calloc(1, sizeof(*rt));
  if (rt == NULL)
    return WEFT_ENOMEM;
  if (opts)
    rt->opts = *opts;
  err = bounds_index(&rt->opts, &rt->bounds);
  if (err)
    goto fail_free_rt;
  err = uv_mutex_init(&rt->lock);
  if (err)
    goto fail_free_rt;
  err = weft__metrics_reg_init(&rt->metrics);
  if (err)
    goto fail_destroy_lock;
  rt->main = weft__calloc(1, sizeof(*rt->main));
  if (rt->main == NULL) {
    err = WEFT_ENOMEM;
    goto fail_fini_metrics;
  }
  err = weft__ctx_init(rt->main, rt, rt->opts.loop);
  if (err)
    goto fail_free_ctx;
  weft__ctx_set_current(rt->main);
  err = weft__child_bootstrap(rt);
  if (err)
    goto fail_fini_ctx;
  *out = rt;
  return 0;

fail_fini_ctx:
  weft__ctx_fini(rt->main, false);
  weft__ctx_set_current(NULL);
  weft__free(rt->child_entry);
fail_free_ctx:
  weft__free(rt->main);
fail_fini_metrics:
  weft__metrics_reg_fini(&rt->metrics);
fail_destroy_lock:
  uv_mutex_destroy(&rt->lock);
fail_free_rt:
  weft__free(rt);
  return err;
}

weft_ctx_t *weft_runtime_main(weft_runtime_t *rt) { return rt ? rt->main : NULL; }

int weft_runtime_run(weft_runtime_t *rt) {
  if (rt == NULL || !rt->main->own_loop)
    return WEFT_EINVAL;
  if (weft__ctx_tls() != rt->main)
    return WEFT_EWRONGTHREAD;
  return uv_run(rt->main->loop, UV_RUN_DEFAULT);
}

int weft_runtime_free(weft_runtime_t *rt) {
  if (rt == NULL)
    return WEFT_EINVAL;
  if (weft__ctx_tls() != rt->main)
    return WEFT_EWRONGTHREAD;
  weft__ctx_reap_children(rt->main);
  int err = weft__ctx_fini(rt->main, false);
  weft__ctx_set_current(NULL);
  weft__free(rt->main);
  weft__entry_t *e = rt->entries;
  while (e != NULL) {
    weft__entry_t *next = e->next;
    weft__free(e->name);
    weft__free(e);
    e = next;
  }
  uv_mutex_destroy(&rt->lock);
  weft__metrics_reg_fini(&rt->metrics);
  weft__free(rt->child_entry);
  weft__free(rt);
  weft__msgpool_trim();
  weft__buf_cache_trim();
  return err;
}

static weft__entry_t *find_entry(weft_runtime_t *rt, const char *name) {
  for (weft__entry_t *e = rt->entries; e; e = e->next)
    if (strcmp(e->name, name) == 0)
      return e;
  return NULL;
}

int weft_runtime_register(weft_runtime_t *rt, const char *name, weft_worker_entry_cb entry) {
  if (rt == NULL || name == NULL || entry == NULL || name[0] == '\0')
    return WEFT_EINVAL;
  weft__entry_t *e = weft__calloc(1, sizeof(*e));
  if (e == NULL)
    return WEFT_ENOMEM;
  e->name = weft__strdup(name);
  if (e->name == NULL) {
    weft__free(e);
    return WEFT_ENOMEM;
  }
  e->fn = entry;
  uv_mutex_lock(&rt->lock);
  if (find_entry(rt, name) != NULL) {
    uv_mutex_unlock(&rt->lock);
    weft__free(e->name);
    weft__free(e);
    return WEFT_EBUSY;
  }
  e->next = rt->entries;
  rt->entries = e;
  uv_mutex_unlock(&rt->lock);
  return 0;
}

weft_worker_entry_cb weft_runtime_lookup(weft_runtime_t *rt, const char *name) {
  if (rt == NULL || name == NULL)
    return NULL;
  uv_mutex_lock(&rt->lock);
  weft__entry_t *e = find_entry(rt, name);
  weft_worker_entry_cb fn = e ? e->fn : NULL;
  uv_mutex_unlock(&rt->lock);
  return fn;
}
