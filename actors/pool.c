/* pool.c: the pool's lifecycle: creating it, its threads coming and going
 * (spawn, retire, idle retirement, exit), resizing and closing.
 *
 * Threads are weft workers (weft_worker_spawn) whose parent channel carries
 * task chains out and result chains back (pool_impl.h). A thread leaves in
 * two steps: it is marked PW_RETIRING (no new tasks), and once nothing of its
 * is in flight the pool closes its channel (reap); its loop then
 * runs out of work, the thread exits, and on_exit frees its state. A thread
 * that exits while holding tasks (weft_worker_exit inside a task, or
 * weft_runtime_free) fails the ones it had started with WEFT_ETERMINATED and
 * gives back the others, which the next thread takes: none is lost.
 *
 * Closing: queued tasks go to the done list with WEFT_ECANCELED, running
 * ones are flagged, every thread retires. When the last thread has exited
 * and every callback has run, the three timers are closed and the last close
 * callback calls the user's close callback and frees the pool. A pool whose
 * creation failed half-way ("zombie") goes the same way without timers and
 * without a callback.
 *
 * The files below (pool_task.c, pool_dispatch.c, pool_timeout.c) never call
 * up: the loop callbacks here run a pass through them, then after_pass
 * (dispatch, drain, reap, the end); dispatch returns WEFT__POOL_GROW when a
 * thread should start, and the start is done here.
 *
 * Threads: the pool context only (worker callbacks run there too). */
#include <string.h>

#include "pool_impl.h"

static void on_worker_exit(weft_worker_t *w, int exit_code);
static void on_results(weft_port_t *port, weft_msg_t *msg);
static void note_idle(weft_pool_t *pool, pool_worker_t *pw);
static void reap(weft_pool_t *pool);
static void after_pass(weft_pool_t *pool);

/* The channel closed (the pool closed it, or the thread is going): the port
 * is gone; the thread's exit follows. */
static void on_port_gone(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  pool_worker_t *pw = weft_port_data(port);
  pw->port = NULL;
}

static uint64_t now_ns(void) { return uv_hrtime(); }

/* ---- threads ---------------------------------------------------------------- */

static int workers_reserve(weft_pool_t *pool) {
  if (pool->nworkers < pool->capworkers)
    return 0;
  uint32_t cap = pool->capworkers ? pool->capworkers * 2 : 8;
  pool_worker_t **a = weft_realloc(pool->workers, cap * sizeof(*a));
  if (a == NULL)
    return WEFT_ENOMEM;
  pool->workers = a;
  pool->capworkers = cap;
  return 0;
}

static int spawn(weft_pool_t *pool) {
  int err = workers_reserve(pool);
  if (err != 0)
    return err;
  pool_worker_t *pw = weft_calloc(1, sizeof(*pw));
  weft_msg_t *data = NULL;
  if (pw == NULL || weft_msg_new(&data) != 0) {
    weft_free(pw);
    return WEFT_ENOMEM;
  }
  pw->pool = pool;
  pw->id = pool->next_id + 1;
  pw->state = PW_ACTIVE;
  pw->t_spawn = pw->idle_since = now_ns();
  err = weft_msg_put_u64(data, NULL, (uint64_t)(uintptr_t)pw);
  weft_worker_options_t wo = {
      .entry = weft__pool_worker_entry,
      .msg = data,
      .stack_size = pool->opts.stack_size,
      .on_message = on_results,
      .on_exit = on_worker_exit,
      .data = pw,
  };
  if (err == 0)
    err = weft_worker_spawn(pool->ctx, &wo, &pw->w);
  if (err != 0) {
    weft_msg_free(data);
    weft_free(pw);
    return err;
  }
  pool->next_id++;
  pw->port = weft_worker_port(pw->w);
  weft_port_set_data(pw->port, pw);
  pool->workers[pool->nworkers++] = pw;
  err = weft_port_on_close(pw->port, on_port_gone);
  if (err != 0) { /* the thread goes again at once; on_exit frees pw */
    pw->state = PW_RETIRING;
    reap(pool);
    return err;
  }
  pool->nactive++;
  note_idle(pool, pw);
  return 0;
}

static void retire(weft_pool_t *pool, pool_worker_t *pw) {
  if (pw->state != PW_ACTIVE)
    return;
  pw->state = PW_RETIRING;
  pool->nactive--;
}

/* Closes the channel of every retiring thread that holds nothing. */
static void reap(weft_pool_t *pool) {
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    pool_worker_t *pw = pool->workers[i];
    if (pw->state == PW_RETIRING && pw->inflight.len == 0) {
      pw->state = PW_CLOSED;
      if (pw->port != NULL)
        weft_port_close(pw->port); /* on_port_gone clears pw->port */
    }
  }
}

static void free_stash(weft_msg_t **stash, unsigned *n) {
  while (*n > 0)
    weft_msg_free(stash[--*n]);
}

static void on_worker_exit(weft_worker_t *w, int exit_code) {
  pool_worker_t *pw = weft_worker_data(w);
  weft_worker_release(w); /* freed once this returns: retired threads do not pile up */
  weft_pool_t *pool = pw->pool;
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    if (pool->workers[i] == pw) {
      pool->workers[i] = pool->workers[--pool->nworkers];
      break;
    }
  }
  bool lost = pw->state == PW_ACTIVE;
  if (lost)
    pool->nactive--;
  /* Exit code 1 from a thread the pool did not retire: terminated from
   * outside (weft_runtime_free) or its entry failed. Starting another would
   * race the runtime's teardown, so the pool stops growing. Any other code:
   * a task called weft_worker_exit; the pool replaces the thread. */
  if (lost && exit_code == 1)
    pool->broken = true;
  pool->in_pass++;
  weft__pool_lost_thread(pool, pw, !pool->broken);
  pool->in_pass--;
  free_stash(pw->stash, &pw->nstash);
  weft_free(pw);
  after_pass(pool);
}

/* ---- idle retirement -------------------------------------------------------- */

static void on_idle_timer(uv_timer_t *timer);

static void note_idle(weft_pool_t *pool, pool_worker_t *pw) {
  pw->idle_since = now_ns();
  if (pool->opts.idle_timeout_ms == 0 || !pool->timers_inited || pool->closing)
    return;
  if (pool->nactive > pool->opts.min_threads &&
      !uv_is_active((uv_handle_t *)&pool->idle_timer))
    uv_timer_start(&pool->idle_timer, on_idle_timer, pool->opts.idle_timeout_ms, 0);
}

static void on_idle_timer(uv_timer_t *timer) {
  weft_pool_t *pool = timer->data;
  uint64_t now = now_ns(), limit = (uint64_t)pool->opts.idle_timeout_ms * 1000000u;
  uint64_t oldest = 0; /* idle_since of the next thread that may retire */
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    pool_worker_t *pw = pool->workers[i];
    if (pw->state != PW_ACTIVE || pw->inflight.len > 0)
      continue;
    if (pool->nactive > pool->opts.min_threads && now - pw->idle_since + 1000000u >= limit)
      retire(pool, pw); /* within a timer tick of its time */
    else if (oldest == 0 || pw->idle_since < oldest)
      oldest = pw->idle_since;
  }
  if (oldest != 0 && pool->nactive > pool->opts.min_threads) {
    uint64_t left = oldest + limit > now ? oldest + limit - now : 0;
    uv_timer_start(&pool->idle_timer, on_idle_timer, (left + 999999u) / 1000000u, 0);
  }
  reap(pool);
}

/* ---- passes and the end ------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h);

static void pool_free(weft_pool_t *pool) {
  if (pool->anchor != NULL) {
    weft_port_on_close(pool->anchor, NULL);
    weft_port_close(pool->anchor);
  }
  weft_metrics_source_free(pool->metrics);
  free_stash(pool->stash, &pool->nstash);
  for (uint32_t i = 0; i < pool->nentries; i++)
    weft_free(pool->entries[i].name);
  weft_free(pool->entries);
  weft_free(pool->workers);
  weft__pool_free_task_mem(pool);
  weft_free(pool);
}

static void maybe_finish(weft_pool_t *pool) {
  if (!pool->closing || pool->finishing || pool->in_pass > 0 || pool->nworkers > 0 ||
      pool->done.len > 0 || pool->pending > 0 || pool->remote != NULL)
    return;
  pool->finishing = true;
  if (!pool->timers_inited) {
    pool_free(pool); /* a zombie: nobody holds it */
    return;
  }
  pool->timers_open = 3;
  uv_close((uv_handle_t *)&pool->timeout_timer, on_timer_closed);
  uv_close((uv_handle_t *)&pool->idle_timer, on_timer_closed);
  uv_close((uv_handle_t *)&pool->kick_timer, on_timer_closed);
}

static void on_timer_closed(uv_handle_t *h) {
  weft_pool_t *pool = h->data;
  if (--pool->timers_open > 0)
    return;
  if (pool->close_cb)
    pool->close_cb(pool);
  pool->finished = true; /* the handle stays valid, closed, until released */
  if (pool->released || pool->anchor == NULL)
    pool_free(pool);
}

/* The pool's context is ending: a finished pool goes now; an open one (not
 * closed before weft_runtime_free) goes when it finishes, if ever. */
static void on_anchor_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  weft_pool_t *pool = weft_port_data(port);
  pool->anchor = NULL;
  if (pool->finished)
    pool_free(pool);
}

static int anchor_new(weft_pool_t *pool) {
  weft_port_t *a[2];
  int err = weft_channel_new(pool->ctx, a);
  if (err != 0)
    return err;
  weft_port_unref(a[0]);
  weft_port_unref(a[1]);
  weft_port_set_data(a[0], pool);
  err = weft_port_on_close(a[0], on_anchor_closed);
  if (err != 0) {
    weft_port_close(a[0]);
    return err;
  }
  pool->anchor = a[0];
  return 0;
}

/* Hands queued tasks out, starting threads while dispatch asks for one (at
 * most up to the pool's size: each GROW follows a thread started). */
static void dispatch(weft_pool_t *pool) {
  if (pool->is_remote) {
    weft__pool_remote_dispatch(pool);
    return;
  }
  while (weft__pool_dispatch(pool) == WEFT__POOL_GROW) {
    int err = spawn(pool);
    if (err != 0) {
      if (pool->nactive == 0)
        weft__pool_fail_queue(pool, err);
      return;
    }
  }
}

/* After results, timers or a thread's exit: move the queue, say "drain",
 * close what retired, end the pool if it is time. */
void weft__pool_after_pass(weft_pool_t *pool) { after_pass(pool); }

static void after_pass(weft_pool_t *pool) {
  if (pool->in_pass > 0 || pool->finishing)
    return;
  if (!pool->closing)
    dispatch(pool);
  if (pool->want_drain && !pool->closing && pool->queue.len <= pool->opts.max_queue / 2) {
    pool->want_drain = false;
    if (pool->opts.on_drain) {
      pool->in_pass++;
      pool->opts.on_drain(pool);
      pool->in_pass--;
      if (!pool->closing)
        dispatch(pool);
    }
  }
  reap(pool);
  maybe_finish(pool);
}

/* ---- the loop callbacks: a pass, then after_pass ------------------------------ */

static void on_results(weft_port_t *port, weft_msg_t *msg) {
  pool_worker_t *pw = weft_port_data(port);
  weft_pool_t *pool = pw->pool;
  pool->in_pass++;
  if (weft__pool_take_results(pw, msg))
    note_idle(pool, pw);
  pool->in_pass--;
  after_pass(pool);
}

void weft__pool_on_kick(uv_timer_t *timer) {
  weft_pool_t *pool = timer->data;
  pool->in_pass++;
  weft__pool_run_done(pool);
  pool->in_pass--;
  after_pass(pool);
}

void weft__pool_on_timeout(uv_timer_t *timer) {
  weft_pool_t *pool = timer->data;
  pool->in_pass++;
  weft__pool_expire(pool);
  pool->in_pass--;
  after_pass(pool);
}

/* ---- the API ------------------------------------------------------------------ */

int weft_pool_submit(weft_pool_t *pool, const weft_pool_task_options_t *opts,
                     weft_pool_done_cb cb, void *data, uint64_t *id) {
  int err = weft__pool_enqueue(pool, opts, cb, data, id);
  if (err == 0 && pool->in_pass == 0)
    dispatch(pool);
  return err;
}

static int resolve_options(const weft_pool_options_t *in, weft_pool_options_t *out) {
  *out = in ? *in : (weft_pool_options_t){0};
  if ((out->node == NULL) != (out->service == NULL))
    return WEFT_EINVAL;
  if (out->service != NULL) { /* remote: size bounds the tasks in flight */
    out->min_threads = out->idle_timeout_ms = 0;
    if (out->size == 0)
      out->size = 64;
  }
  if (out->size == 0)
    out->size = weft_available_parallelism();
  if (out->max_queue == 0)
    out->max_queue = WEFT_POOL_DEFAULT_MAX_QUEUE;
  return out->min_threads > out->size ? WEFT_EINVAL : 0;
}

static void timers_init(weft_pool_t *pool) {
  uv_timer_t *timers[3] = {&pool->timeout_timer, &pool->idle_timer, &pool->kick_timer};
  for (int i = 0; i < 3; i++) {
    uv_timer_init(pool->loop, timers[i]); /* cannot fail */
    timers[i]->data = pool;
  }
  uv_unref((uv_handle_t *)&pool->idle_timer);
  pool->timers_inited = true;
}

int weft_pool_new(weft_ctx_t *ctx, const weft_pool_options_t *opts, weft_pool_t **out) {
  if (ctx == NULL || out == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != ctx)
    return WEFT_EWRONGTHREAD;
  weft_pool_t *pool = weft_calloc(1, sizeof(*pool));
  if (pool == NULL)
    return WEFT_ENOMEM;
  int err = resolve_options(opts, &pool->opts);
  if (err != 0) {
    weft_free(pool);
    return err;
  }
  pool->ctx = ctx;
  pool->loop = weft_ctx_loop(ctx);
  pool->data = pool->opts.data;
  err = anchor_new(pool);
  if (err != 0) {
    weft_free(pool);
    return err;
  }
  if (pool->opts.service != NULL) {
    pool->is_remote = true;
    err = weft__pool_remote_new(pool);
    if (err != 0) {
      pool_free(pool);
      return err;
    }
    timers_init(pool);
    weft__pool_metrics_start(pool);
    *out = pool;
    return 0;
  }
  uint32_t initial = pool->opts.idle_timeout_ms ? pool->opts.min_threads : pool->opts.size;
  for (uint32_t i = 0; i < initial && err == 0; i++)
    err = spawn(pool);
  if (err == 0) {
    timers_init(pool);
    weft__pool_metrics_start(pool);
    *out = pool;
    return 0;
  }
  if (pool->nworkers == 0) {
    pool_free(pool);
    return err;
  }
  pool->closing = pool->zombie = true; /* its threads exit, then it frees itself */
  for (uint32_t i = 0; i < pool->nworkers; i++)
    retire(pool, pool->workers[i]);
  reap(pool);
  return err;
}

int weft_pool_register(weft_pool_t *pool, const char *name, weft_pool_fn fn) {
  if (pool == NULL || name == NULL || fn == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->closing)
    return WEFT_ECLOSED;
  for (uint32_t i = 0; i < pool->nentries; i++)
    if (strcmp(pool->entries[i].name, name) == 0)
      return WEFT_EBUSY;
  weft__pool_entry_t *e = weft_realloc(pool->entries, (pool->nentries + 1) * sizeof(*e));
  if (e == NULL)
    return WEFT_ENOMEM;
  pool->entries = e;
  size_t len = strlen(name) + 1;
  char *copy = weft_malloc(len);
  if (copy == NULL)
    return WEFT_ENOMEM;
  memcpy(copy, name, len);
  e[pool->nentries++] = (weft__pool_entry_t){.name = copy, .fn = fn};
  return 0;
}

/* The active thread holding the fewest tasks. */
static pool_worker_t *least_busy_active(weft_pool_t *pool) {
  pool_worker_t *best = NULL;
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    pool_worker_t *pw = pool->workers[i];
    if (pw->state == PW_ACTIVE && (best == NULL || pw->inflight.len < best->inflight.len))
      best = pw;
  }
  return best;
}

int weft_pool_resize(weft_pool_t *pool, uint32_t size) {
  if (pool == NULL || size == 0)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->closing)
    return WEFT_ECLOSED;
  pool->opts.size = size;
  if (pool->opts.min_threads > size)
    pool->opts.min_threads = size;
  if (pool->is_remote) {
    if (pool->in_pass == 0)
      dispatch(pool);
    return 0;
  }
  while (pool->nactive > size)
    retire(pool, least_busy_active(pool));
  int err = 0;
  if (pool->opts.idle_timeout_ms == 0)
    while (pool->nactive < size && err == 0)
      err = spawn(pool);
  if (pool->in_pass == 0) {
    dispatch(pool);
    reap(pool);
  }
  return err;
}

int weft_pool_close(weft_pool_t *pool, weft_pool_close_cb cb) {
  if (pool == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->closing)
    return WEFT_ECLOSED;
  pool->closing = true;
  pool->close_cb = cb;
  weft__pool_cancel_all(pool);
  for (uint32_t i = 0; i < pool->nworkers; i++)
    retire(pool, pool->workers[i]);
  if (pool->remote != NULL)
    weft__pool_remote_close(pool);
  uv_timer_stop(&pool->idle_timer);
  weft__pool_kick(pool); /* the rest happens from the loop */
  return 0;
}

int weft_pool_release(weft_pool_t *pool) {
  if (pool == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->finished) {
    pool_free(pool);
    return 0;
  }
  pool->released = true;
  if (!pool->closing)
    weft_pool_close(pool, NULL);
  return 0;
}

weft_ctx_t *weft_pool_ctx(const weft_pool_t *pool) { return pool ? pool->ctx : NULL; }
void *weft_pool_data(const weft_pool_t *pool) { return pool ? pool->data : NULL; }

void weft_pool_set_data(weft_pool_t *pool, void *data) {
  if (pool)
    pool->data = data;
}
