/* pool_dispatch.c: handing queued tasks to threads.
 *
 * Policy: the least-loaded thread (fewest tasks in flight) takes the next
 * tasks, as a chain in one message. How many a thread may hold and how many
 * go per message follow the moving average of run times (pool->avg_run_ns):
 *   - tiny tasks: a batch is about BATCH_TARGET_NS of work (up to BATCH_MAX
 *     tasks) and a thread holds two batches, so it starts the second while the
 *     first one's results travel back and the next batch travels out;
 *   - ordinary tasks: one per message, two in flight per thread;
 *   - long tasks (>= LONG_TASK_NS): one in flight per thread, so a task never
 *     waits behind another while some thread is free.
 * Before the first result the pool knows nothing and sends one per message.
 * A batch is also cut to the thread's fair share of the queue, so a short
 * queue spreads over every thread with room.
 *
 * When no thread has room and the pool may grow (fewer threads than its size:
 * a pool with idle_timeout_ms, after a resize, or after a thread was lost),
 * dispatch returns WEFT__POOL_GROW: pool.c starts one thread and dispatches
 * again, and the new thread takes tasks at once (a new worker's port queues
 * them until its thread binds it).
 *
 * Threads: the pool context only. */
#include "pool_impl.h"

#define BATCH_TARGET_NS 50000.0
#define BATCH_MAX 128u
#define LONG_TASK_NS 500000.0

static uint32_t batch_size(const weft_pool_t *pool) {
  if (!pool->have_avg)
    return 1;
  double b = BATCH_TARGET_NS / (pool->avg_run_ns + 1.0);
  if (b <= 1.0)
    return 1;
  return b >= BATCH_MAX ? BATCH_MAX : (uint32_t)b;
}

static uint32_t in_flight_limit(const weft_pool_t *pool, uint32_t batch) {
  if (batch > 1)
    return 2 * batch;
  return pool->have_avg && pool->avg_run_ns >= LONG_TASK_NS ? 1 : 2;
}

static weft_msg_t *carrier(weft_pool_t *pool) {
  if (pool->nstash > 0)
    return pool->stash[--pool->nstash];
  weft_msg_t *m;
  return weft_msg_new(&m) == 0 ? m : NULL;
}

/* Moves the first k queued tasks to pw, as one chain. On failure they are
 * back at the head of the queue, in order. */
static int send_chain(weft_pool_t *pool, pool_worker_t *pw, uint32_t k) {
  weft_msg_t *m = carrier(pool);
  if (m == NULL)
    return WEFT_ENOMEM;
  weft_pool_task_t *head = NULL, *tail = NULL;
  for (uint32_t i = 0; i < k; i++) {
    weft_pool_task_t *t = weft__pool_list_pop(&pool->queue);
    t->state = TASK_SENT;
    t->worker = pw;
    t->next = NULL;
    if (tail)
      tail->next = t;
    else
      head = t;
    tail = t;
    weft__pool_list_push(&pw->inflight, t);
  }
  int err = weft__pool_carrier_set(m, head);
  if (err == 0)
    err = weft_port_post(pw->port, m);
  if (err == 0)
    return 0;
  weft_msg_free(m);
  for (uint32_t i = 0; i < k; i++) { /* the last k in flight, back to the front */
    weft_pool_task_t *t = weft__pool_task_of(weft_list_last(&pw->inflight.l));
    weft__pool_list_remove(&pw->inflight, t);
    t->state = TASK_QUEUED;
    t->worker = NULL;
    weft__pool_list_push_front(&pool->queue, t);
  }
  return err;
}

/* The active thread with the fewest tasks in flight below lim, or NULL;
 * *with_room is set to how many active threads are below lim. */
static pool_worker_t *least_loaded(weft_pool_t *pool, uint32_t lim, uint32_t *with_room) {
  pool_worker_t *best = NULL;
  uint32_t n = 0;
  for (uint32_t i = 0; i < pool->nworkers; i++) {
    pool_worker_t *pw = pool->workers[i];
    if (pw->state != PW_ACTIVE || pw->port == NULL || pw->inflight.len >= lim)
      continue;
    n++;
    if (best == NULL || pw->inflight.len < best->inflight.len)
      best = pw;
  }
  *with_room = n;
  return best;
}

/* No thread has room: GROW if the pool may start one; else the queue waits
 * (or fails, if no thread can ever take it). */
static weft__pool_dispatch_t full(weft_pool_t *pool) {
  if (pool->broken) {
    if (pool->nactive == 0)
      weft__pool_fail_queue(pool, WEFT_ETERMINATED);
    return WEFT__POOL_SETTLED;
  }
  if (pool->closing || pool->nactive >= pool->opts.size)
    return WEFT__POOL_SETTLED;
  return WEFT__POOL_GROW;
}

weft__pool_dispatch_t weft__pool_dispatch(weft_pool_t *pool) {
  uint32_t batch = batch_size(pool);
  uint32_t lim = in_flight_limit(pool, batch);
  while (pool->queue.len > 0) {
    uint32_t with_room;
    pool_worker_t *pw = least_loaded(pool, lim, &with_room);
    if (pw == NULL)
      return full(pool);
    uint32_t k = lim - pw->inflight.len;
    if (k > batch)
      k = batch;
    uint32_t share = (pool->queue.len + with_room - 1) / with_room;
    if (k > share)
      k = share;
    int err = send_chain(pool, pw, k);
    if (err == WEFT_ENOMEM) {
      weft__pool_retry_later(pool); /* no message to carry them: try again soon */
      return WEFT__POOL_SETTLED;
    }
    if (err != 0) { /* its channel is gone: it is exiting; take no more */
      pw->state = PW_RETIRING;
      pool->nactive--;
    }
  }
  return WEFT__POOL_SETTLED;
}
