/* pool_timeout.c: tasks with a timeout, in a binary min-heap on their
 * deadline (uv_hrtime ns), and the one timer that fires for the earliest.
 * Each task knows its place (heap_idx; WEFT__POOL_NO_HEAP when out), so a
 * task that ends early leaves the heap in O(log n). The timer is re-armed
 * lazily: when a new earliest deadline arrives and when it fires (an early
 * task leaving only makes the next firing find nothing due, and re-arm).
 *
 * Threads: the pool context only. */
#include "pool_impl.h"

static void heap_set(weft_pool_t *pool, uint32_t i, weft_pool_task_t *t) {
  pool->heap[i] = t;
  t->heap_idx = i;
}

static void sift_up(weft_pool_t *pool, uint32_t i) {
  weft_pool_task_t *t = pool->heap[i];
  while (i > 0) {
    uint32_t up = (i - 1) / 2;
    if (pool->heap[up]->deadline <= t->deadline)
      break;
    heap_set(pool, i, pool->heap[up]);
    i = up;
  }
  heap_set(pool, i, t);
}

static void sift_down(weft_pool_t *pool, uint32_t i) {
  weft_pool_task_t *t = pool->heap[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= pool->heap_len)
      break;
    if (c + 1 < pool->heap_len && pool->heap[c + 1]->deadline < pool->heap[c]->deadline)
      c++;
    if (t->deadline <= pool->heap[c]->deadline)
      break;
    heap_set(pool, i, pool->heap[c]);
    i = c;
  }
  heap_set(pool, i, t);
}

int weft__pool_heap_push(weft_pool_t *pool, weft_pool_task_t *t) {
  if (pool->heap_len == pool->heap_cap) {
    uint32_t cap = pool->heap_cap ? pool->heap_cap * 2 : 64;
    weft_pool_task_t **h = weft_realloc(pool->heap, cap * sizeof(*h));
    if (h == NULL)
      return WEFT_ENOMEM;
    pool->heap = h;
    pool->heap_cap = cap;
  }
  heap_set(pool, pool->heap_len++, t);
  sift_up(pool, t->heap_idx);
  return 0;
}

void weft__pool_heap_remove(weft_pool_t *pool, weft_pool_task_t *t) {
  uint32_t i = t->heap_idx;
  if (i == WEFT__POOL_NO_HEAP)
    return;
  t->heap_idx = WEFT__POOL_NO_HEAP;
  weft_pool_task_t *last = pool->heap[--pool->heap_len];
  if (i == pool->heap_len)
    return;
  heap_set(pool, i, last);
  sift_down(pool, i);
  sift_up(pool, last->heap_idx);
}

/* Arm the timeout timer for the earliest deadline (or stop it). */
void weft__pool_heap_arm(weft_pool_t *pool) {
  if (pool->heap_len == 0) {
    uv_timer_stop(&pool->timeout_timer);
    return;
  }
  uint64_t now = uv_hrtime(), deadline = pool->heap[0]->deadline;
  uint64_t ms = deadline > now ? (deadline - now + 999999u) / 1000000u : 0;
  uv_timer_start(&pool->timeout_timer, weft__pool_on_timeout, ms, 0);
}

/* Closing: no task times out any more. */
void weft__pool_heap_clear(weft_pool_t *pool) {
  for (uint32_t i = 0; i < pool->heap_len; i++)
    pool->heap[i]->heap_idx = WEFT__POOL_NO_HEAP;
  pool->heap_len = 0;
  if (pool->timers_inited)
    uv_timer_stop(&pool->timeout_timer);
}
