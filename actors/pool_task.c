/* pool_task.c: the pool context's side of a task: its slot, the queue, the
 * timeout heap, submission, cancellation and the final callback.
 *
 * Slots: tasks live in slabs of WEFT__POOL_SLAB_SIZE that never move (threads hold
 * their addresses). A task id is (generation << 32 | slot): the generation
 * grows each time the slot is freed, so a stale id never finds a newer task.
 * Free slots are a stack (the most recently freed, still in cache, goes first).
 *
 * Lists: a task is in at most one of the queue, a thread's in-flight list,
 * the done list (callback due from the loop) or the free stack; all four go
 * through qnode. The timeout heap (pool_timeout.c) is separate.
 *
 * Callbacks are only called from loop callbacks (results, the timers), with
 * pool->in_pass raised, never from inside a weft_pool_* call: a task that must
 * complete at once (cancelled while queued, the pool closing) goes to the
 * done list and the kick timer runs it. Those loop callbacks are pool.c's
 * (the timers here are armed with them): the functions here do a pass's work
 * and return; what follows a pass (dispatch, drain, reap, the end) is pool.c's.
 *
 * Threads: the pool context only. */
#include <string.h>

#include "pool_impl.h"


/* ---- lists -------------------------------------------------------------- */

void weft__pool_list_push(weft__pool_list_t *l, weft_pool_task_t *t) {
  weft_list_push_back(&l->l, &t->qnode);
  l->len++;
}

void weft__pool_list_push_front(weft__pool_list_t *l, weft_pool_task_t *t) {
  weft_list_push_front(&l->l, &t->qnode);
  l->len++;
}

void weft__pool_list_remove(weft__pool_list_t *l, weft_pool_task_t *t) {
  weft_list_remove(&l->l, &t->qnode);
  l->len--;
}

weft_pool_task_t *weft__pool_list_pop(weft__pool_list_t *l) {
  weft_pool_task_t *t = weft__pool_task_of(weft_list_first(&l->l));
  if (t)
    weft__pool_list_remove(l, t);
  return t;
}

/* ---- slots -------------------------------------------------------------- */

static int slab_add(weft_pool_t *pool) {
  if (pool->nslabs >= (UINT32_MAX >> WEFT__POOL_SLAB_SHIFT))
    return WEFT_ENOMEM;
  weft_pool_task_t **slabs = weft_realloc(pool->slabs, (pool->nslabs + 1) * sizeof(*slabs));
  if (slabs == NULL)
    return WEFT_ENOMEM;
  pool->slabs = slabs;
  weft_pool_task_t *slab = weft_calloc(WEFT__POOL_SLAB_SIZE, sizeof(*slab));
  if (slab == NULL)
    return WEFT_ENOMEM;
  uint32_t base = pool->nslabs << WEFT__POOL_SLAB_SHIFT;
  slabs[pool->nslabs++] = slab;
  for (uint32_t i = WEFT__POOL_SLAB_SIZE; i-- > 0;) { /* slot base first */
    slab[i].id = (1ull << 32) | (base + i);
    slab[i].heap_idx = WEFT__POOL_NO_HEAP;
    weft_list_push_front(&pool->free_slots, &slab[i].qnode);
  }
  return 0;
}

static weft_pool_task_t *slot_get(weft_pool_t *pool) {
  if (weft_list_empty(&pool->free_slots) && slab_add(pool) != 0)
    return NULL;
  weft_pool_task_t *t = weft__pool_task_of(weft_list_pop_front(&pool->free_slots));
  pool->pending++;
  return t;
}

static void slot_free(weft_pool_t *pool, weft_pool_task_t *t) {
  uint64_t gen = (t->id >> 32) + 1;
  if (gen > UINT32_MAX)
    gen = 1;
  t->id = (gen << 32) | (t->id & UINT32_MAX);
  t->state = TASK_FREE;
  t->cb = NULL;
  t->data = NULL;
  weft_list_push_front(&pool->free_slots, &t->qnode);
  pool->pending--;
}

static weft_pool_task_t *slot_find(weft_pool_t *pool, uint64_t id) {
  uint32_t slot = (uint32_t)(id & UINT32_MAX);
  if ((slot >> WEFT__POOL_SLAB_SHIFT) >= pool->nslabs)
    return NULL;
  weft_pool_task_t *slab = pool->slabs[slot >> WEFT__POOL_SLAB_SHIFT];
  weft_pool_task_t *t = &slab[slot & (WEFT__POOL_SLAB_SIZE - 1u)];
  return t->id == id && t->state != TASK_FREE ? t : NULL;
}

void weft__pool_free_task_mem(weft_pool_t *pool) {
  for (uint32_t i = 0; i < pool->nslabs; i++)
    weft_free(pool->slabs[i]);
  weft_free(pool->slabs);
  weft_free(pool->heap);
}

/* ---- ending a task -------------------------------------------------------- */

static void count(weft_pool_t *pool, int err) {
  if (err == 0)
    pool->completed++;
  else if (err == WEFT_ECANCELED)
    pool->cancelled++;
  else if (err == UV_ETIMEDOUT)
    pool->timed_out++;
  else
    pool->failed++;
}

/* Calls t's callback (once) with err and result. The slot stays. */
static void notify(weft_pool_t *pool, weft_pool_task_t *t, int err, weft_msg_t *result) {
  weft_pool_done_cb cb = t->cb;
  void *data = t->data;
  t->cb = NULL;
  count(pool, err);
  if (cb)
    cb(pool, err, result, data);
  else
    weft_msg_free(result);
}

/* The task's end on the pool side: its slot is freed, then its callback runs
 * (so the callback may submit into the same slot). Inside a pass only. */
static void finish(weft_pool_t *pool, weft_pool_task_t *t, int err, weft_msg_t *result) {
  weft_pool_done_cb cb = t->cb;
  void *data = t->data;
  weft__pool_heap_remove(pool, t);
  weft_msg_free(t->args);
  t->args = NULL;
  slot_free(pool, t);
  count(pool, err);
  if (cb)
    cb(pool, err, result, data);
  else
    weft_msg_free(result);
}

/* Queue t's callback with err, to run from the loop (t is in no list). */
static void to_done(weft_pool_t *pool, weft_pool_task_t *t, int err) {
  weft__pool_heap_remove(pool, t);
  t->state = TASK_DONE;
  t->err = err;
  weft__pool_list_push(&pool->done, t);
  weft__pool_kick(pool);
}

void weft__pool_kick(weft_pool_t *pool) {
  if (pool->timers_inited && !uv_is_active((uv_handle_t *)&pool->kick_timer))
    uv_timer_start(&pool->kick_timer, weft__pool_on_kick, 0, 0);
}

void weft__pool_retry_later(weft_pool_t *pool) {
  if (pool->timers_inited && !uv_is_active((uv_handle_t *)&pool->kick_timer))
    uv_timer_start(&pool->kick_timer, weft__pool_on_kick, 1, 0);
}

void weft__pool_run_done(weft_pool_t *pool) {
  weft_pool_task_t *t;
  while ((t = weft__pool_list_pop(&pool->done)) != NULL)
    finish(pool, t, t->err, NULL);
}

/* A task came back from its thread (removed from the in-flight list). */
static void returned(weft_pool_t *pool, weft_pool_task_t *t) {
  if (t->t_start != 0) {
    uint64_t run = t->t_end > t->t_start ? t->t_end - t->t_start : 0;
    weft__pool_histo_add(&pool->wait, t->t_start > t->t_submit ? t->t_start - t->t_submit : 0);
    weft__pool_histo_add(&pool->run, run);
    pool->avg_run_ns = pool->have_avg ? pool->avg_run_ns + ((double)run - pool->avg_run_ns) / 8
                                      : (double)run;
    pool->have_avg = true;
  }
  weft_msg_t *result = t->result;
  t->result = NULL;
  if (t->state == TASK_ABANDONED) { /* its callback said UV_ETIMEDOUT already */
    weft_msg_free(result);
    weft_msg_free(t->args);
    t->args = NULL;
    slot_free(pool, t);
    return;
  }
  int err = t->err;
  if (atomic_load_explicit(&t->cancel, memory_order_relaxed)) {
    err = WEFT_ECANCELED;
    weft_msg_free(result);
    result = NULL;
  }
  finish(pool, t, err, result);
}

void weft__pool_remote_back(weft_pool_t *pool, weft_pool_task_t *t, int err, weft_msg_t *result) {
  weft__pool_list_remove(&pool->rflight, t);
  t->t_end = uv_hrtime();
  t->err = err;
  t->result = result;
  returned(pool, t);
}

void weft__pool_end_later(weft_pool_t *pool, weft_pool_task_t *t, int err) {
  to_done(pool, t, err);
}

bool weft__pool_take_results(pool_worker_t *pw, weft_msg_t *msg) {
  weft_pool_t *pool = pw->pool;
  weft_pool_task_t *t = weft__pool_carrier_get(msg);
  if (pool->nstash < WEFT__POOL_STASH)
    pool->stash[pool->nstash++] = msg;
  else
    weft_msg_free(msg);
  while (t != NULL) {
    weft_pool_task_t *next = t->next;
    weft__pool_list_remove(&pw->inflight, t);
    returned(pool, t);
    t = next;
  }
  return pw->inflight.len == 0;
}

/* A thread exited holding tasks (it is joined: their memory is the pool's
 * alone again). Those it finished but could not post back end as if posted;
 * those it never started go back to the front of the queue, in order, when
 * requeue is true; the others end with WEFT_ETERMINATED (or WEFT_ECANCELED if
 * cancelled). Inside a pass. */
void weft__pool_lost_thread(weft_pool_t *pool, pool_worker_t *pw, bool requeue) {
  weft__pool_list_t back = {0};
  weft_pool_task_t *t;
  while ((t = weft__pool_list_pop(&pw->inflight)) != NULL) {
    if (t->wstate == W_DONE) {
      returned(pool, t);
      continue;
    }
    weft_msg_free(t->result);
    t->result = NULL;
    if (t->state == TASK_ABANDONED) {
      weft_msg_free(t->args);
      t->args = NULL;
      slot_free(pool, t);
      continue;
    }
    bool cancelled = atomic_load_explicit(&t->cancel, memory_order_relaxed);
    if (requeue && !cancelled && !pool->closing && t->wstate == W_IDLE) {
      t->state = TASK_QUEUED;
      t->worker = NULL;
      weft__pool_list_push(&back, t);
      continue;
    }
    to_done(pool, t, cancelled ? WEFT_ECANCELED : WEFT_ETERMINATED);
  }
  while ((t = weft__pool_task_of(weft_list_last(&back.l))) != NULL) {
    weft__pool_list_remove(&back, t);
    weft__pool_list_push_front(&pool->queue, t);
  }
}

/* Closing: queued tasks end with WEFT_ECANCELED, running ones are flagged
 * (and can no longer time out: they end with WEFT_ECANCELED too). */
void weft__pool_cancel_all(weft_pool_t *pool) {
  weft_pool_task_t *t;
  while ((t = weft__pool_list_pop(&pool->queue)) != NULL)
    to_done(pool, t, WEFT_ECANCELED);
  weft__pool_heap_clear(pool);
  for (uint32_t i = 0; i < pool->nworkers; i++)
    for (weft_list_node_t *n = weft_list_first(&pool->workers[i]->inflight.l); n != NULL;
         n = weft_list_next(n))
      atomic_store_explicit(&weft__pool_task_of(n)->cancel, 1, memory_order_relaxed);
  for (weft_list_node_t *n = weft_list_first(&pool->rflight.l); n != NULL; n = weft_list_next(n))
    atomic_store_explicit(&weft__pool_task_of(n)->cancel, 1, memory_order_relaxed);
}

/* Queued tasks end with err (no thread could be started). */
void weft__pool_fail_queue(weft_pool_t *pool, int err) {
  weft_pool_task_t *t;
  while ((t = weft__pool_list_pop(&pool->queue)) != NULL)
    to_done(pool, t, err);
}

void weft__pool_expire(weft_pool_t *pool) {
  uint64_t now = uv_hrtime();
  while (pool->heap_len > 0 && pool->heap[0]->deadline <= now) {
    weft_pool_task_t *t = pool->heap[0];
    weft__pool_heap_remove(pool, t);
    if (t->state == TASK_QUEUED) {
      weft__pool_list_remove(&pool->queue, t);
      finish(pool, t, UV_ETIMEDOUT, NULL);
    } else if (t->state == TASK_SENT) {
      atomic_store_explicit(&t->cancel, 1, memory_order_relaxed);
      t->state = TASK_ABANDONED;
      notify(pool, t, UV_ETIMEDOUT, NULL);
    }
  }
  weft__pool_heap_arm(pool);
}

/* ---- submit and cancel ------------------------------------------------------ */

/* The entry registered under name, or (name NULL) for fn; NULL: none. */
static const weft__pool_entry_t *lookup(weft_pool_t *pool, const char *name, weft_pool_fn fn) {
  for (uint32_t i = 0; i < pool->nentries; i++)
    if (name ? strcmp(pool->entries[i].name, name) == 0 : pool->entries[i].fn == fn)
      return &pool->entries[i];
  return NULL;
}

/* A remote task's args travel as bytes and buffers only. */
static int remote_args_ok(const weft_pool_task_options_t *opts) {
  size_t n = opts->args ? weft_msg_xfer_count(opts->args) : 0;
  if (n > 0 && (opts->flags & WEFT_POOL_IDEMPOTENT))
    return WEFT_ETRANSFER;
  for (size_t i = 0; i < n; i++)
    if (weft_msg_xfer_kind(opts->args, i) != WEFT_XFER_BUF)
      return WEFT_ETRANSFER;
  return 0;
}

static void task_init(weft_pool_task_t *t, weft_pool_fn fn, const weft_pool_task_options_t *opts,
                      weft_pool_done_cb cb, void *data) {
  t->fn = fn;
  t->args = opts->args;
  t->arg = opts->arg;
  t->worker = NULL;
  t->next = NULL;
  t->result = NULL;
  t->t_start = t->t_end = 0;
  t->err = 0;
  t->wstate = 0;
  atomic_store_explicit(&t->cancel, 0, memory_order_relaxed);
  t->cb = cb;
  t->data = data;
  t->flags = opts->flags;
  t->t_submit = uv_hrtime();
}

int weft__pool_enqueue(weft_pool_t *pool, const weft_pool_task_options_t *opts,
                       weft_pool_done_cb cb, void *data, uint64_t *id) {
  if (pool == NULL || opts == NULL || (opts->fn == NULL && opts->name == NULL) ||
      (opts->flags & ~WEFT_POOL_IDEMPOTENT) != 0)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->closing)
    return WEFT_ECLOSED;
  const weft__pool_entry_t *e = lookup(pool, opts->fn ? NULL : opts->name, opts->fn);
  weft_pool_fn fn = opts->fn ? opts->fn : e ? e->fn : NULL;
  if (fn == NULL || (pool->is_remote && e == NULL))
    return WEFT_ENOENTRY;
  if (pool->is_remote) {
    int err = remote_args_ok(opts);
    if (err != 0)
      return err;
  }
  if (pool->queue.len >= pool->opts.max_queue) {
    pool->rejected++;
    pool->want_drain = true;
    return WEFT_EAGAIN;
  }
  weft_pool_task_t *t = slot_get(pool);
  if (t == NULL)
    return WEFT_ENOMEM;
  task_init(t, fn, opts, cb, data);
  t->pool = pool;
  t->name = e ? e->name : NULL;
  if (opts->timeout_ms) {
    t->deadline = t->t_submit + (uint64_t)opts->timeout_ms * 1000000u;
    if (weft__pool_heap_push(pool, t) != 0) {
      t->args = NULL;
      slot_free(pool, t);
      return WEFT_ENOMEM;
    }
    if (t->heap_idx == 0)
      weft__pool_heap_arm(pool);
  }
  t->state = TASK_QUEUED;
  weft__pool_list_push(&pool->queue, t);
  if (pool->queue.len > pool->peak_queued)
    pool->peak_queued = pool->queue.len;
  pool->submitted++;
  if (id)
    *id = t->id;
  return 0;
}

int weft_pool_cancel(weft_pool_t *pool, uint64_t id) {
  if (pool == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  weft_pool_task_t *t = slot_find(pool, id);
  if (t == NULL)
    return WEFT_ENOENT;
  if (t->state == TASK_QUEUED) {
    weft__pool_list_remove(&pool->queue, t);
    to_done(pool, t, WEFT_ECANCELED);
    return 0;
  }
  if (t->state == TASK_SENT && !atomic_load_explicit(&t->cancel, memory_order_relaxed)) {
    atomic_store_explicit(&t->cancel, 1, memory_order_relaxed);
    return 0;
  }
  return WEFT_ENOENT; /* its outcome is already decided */
}

/* ---- carriers ---------------------------------------------------------------- */

int weft__pool_carrier_set(weft_msg_t *msg, const void *ptr) {
  uint64_t v = (uint64_t)(uintptr_t)ptr;
  uint8_t b[9];
  b[0] = 0xcf; /* msgpack uint 64, big-endian */
  for (int i = 0; i < 8; i++)
    b[1 + i] = (uint8_t)(v >> (56 - 8 * i));
  return weft_msg_set_payload(msg, b, sizeof(b));
}

void *weft__pool_carrier_get(const weft_msg_t *msg) {
  size_t len = 0;
  const uint8_t *b = weft_msg_payload(msg, &len);
  if (b == NULL || len != 9 || b[0] != 0xcf)
    return NULL;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = (v << 8) | b[1 + i];
  return (void *)(uintptr_t)v;
}
