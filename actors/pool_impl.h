/* pool_impl.h: internal to actors/pool*.c, not a public header.
 *
 * The pool (include/weft/pool.h) in six files:
 *   pool.c         lifecycle: new, register, resize, close, threads coming
 *                  and going (spawn, retire, idle timer, exit)
 *   pool_task.c    the pool context's side of a task: slots, queue, submit,
 *                  results coming back, cancel, timeouts, callbacks
 *   pool_dispatch.c handing queued tasks to threads, in batches
 *   pool_timeout.c the timeout heap
 *   pool_worker.c  the pool threads' side: running task chains, async
 *                  completion, sending results back
 *   pool_stats.c   log-linear histograms and the figures
 *   pool_remote.c  remote offload: a pool whose tasks go to a service's
 *                  providers (no threads), and weft_pool_serve, the
 *                  providers' side
 *
 * Transport: only public weft ports. Each thread is a weft worker; the pool
 * talks to it over the worker's parent channel. Tasks live in memory owned by
 * the pool (slabs, so their addresses never move) and travel as intrusive
 * chains: a message to a thread carries the address of the first task of a
 * chain linked through task->next, and the thread answers with a chain of
 * finished tasks the same way. A "carrier" message's payload is therefore one
 * msgpack uint64 (9 bytes) and the task's args/result messages are handed over
 * by pointer, transfer lists and all: nothing is re-encoded or copied. The
 * port's queue orders the handover (what the sender wrote before the post is
 * visible to the receiver after the delivery), so the task fields need no
 * atomics except the cancellation flag.
 *
 * Ownership of a task: the pool context from submission until it is posted in
 * a chain; the thread from delivery until it posts the task back; the pool
 * again until its slot is freed. While a thread holds a task the pool touches
 * only its pool-only fields (qnode, state, heap index) and the atomic
 * cancellation flag.
 *
 * Threads: everything in weft_pool_t, and the fields of pool_worker_t above
 * `shared`, belong to the pool context. The fields below `wside` belong to the
 * pool thread. `shared` holds the figures the thread publishes. */
#ifndef WEFT_POOL_IMPL_H
#define WEFT_POOL_IMPL_H

#include <stdatomic.h>

#include <weft.h>

#include "weft/pool.h"

/* ---- histograms (pool_stats.c) ---------------------------------------- */

#define WEFT__POOL_HIST_SUB_BITS 4
#define WEFT__POOL_HIST_SUB (1u << WEFT__POOL_HIST_SUB_BITS)
#define WEFT__POOL_HIST_BUCKETS ((64u - WEFT__POOL_HIST_SUB_BITS + 1u) * WEFT__POOL_HIST_SUB)

typedef struct {
  uint64_t count, sum, max;
  uint64_t bucket[WEFT__POOL_HIST_BUCKETS];
} weft__pool_histo_t;

void weft__pool_histo_add(weft__pool_histo_t *h, uint64_t v);
void weft__pool_histo_read(const weft__pool_histo_t *h, weft_pool_hist_t *out);

/* ---- tasks -------------------------------------------------------------- */

typedef enum {
  TASK_FREE = 0,
  TASK_QUEUED,     /* in pool->queue */
  TASK_SENT,       /* in a worker's in-flight list; the thread may hold it */
  TASK_ABANDONED,  /* callback done (timed out) but the thread still holds it */
  TASK_DONE        /* in pool->done, callback due from the loop */
} weft__pool_task_state_t;

typedef struct pool_worker_s pool_worker_t;

enum {
  W_IDLE = 0, /* handed over, not started */
  W_RUNNING,  /* inside its function */
  W_ASYNC,    /* its function returned WEFT_POOL_ASYNC */
  W_DONE      /* finished; in (or posted with) the chain back */
};

struct weft_pool_task_s {
  /* written by the pool before the handover, read by the thread */
  weft_pool_fn fn;
  weft_msg_t *args;          /* freed by whoever ends the task */
  void *arg;
  uint64_t id;
  pool_worker_t *worker;
  /* the chain link: the pool's chain out, the thread's chain back */
  weft_pool_task_t *next;
  /* written by the thread, read by the pool after the handover back */
  weft_msg_t *result;
  uint64_t t_start, t_end;   /* uv_hrtime; t_start 0: never ran */
  int err;
  uint8_t wstate;            /* W_*: the thread's; the pool reads it once the thread is joined */
  /* the one field both sides touch at once: set by the pool, polled by the
   * thread; relaxed, nothing is published through it. */
  _Atomic uint32_t cancel;
  /* pool context only */
  uint8_t state;             /* weft__pool_task_state_t */
  uint32_t heap_idx;         /* index in the timeout heap, or UINT32_MAX */
  weft_list_node_t qnode;    /* in the queue, an in-flight list, the done list or the free list */
  uint64_t t_submit, deadline;
  weft_pool_done_cb cb;
  void *data;
  weft_pool_t *pool;
  const char *name;          /* its registered name (pool->entries), or NULL */
  unsigned flags;            /* WEFT_POOL_IDEMPOTENT */
};

typedef struct {
  weft_list_t l;  /* of weft_pool_task_t.qnode */
  uint32_t len;
} weft__pool_list_t;

static inline weft_pool_task_t *weft__pool_task_of(weft_list_node_t *n) {
  return n ? WEFT_LIST_ENTRY(n, weft_pool_task_t, qnode) : NULL;
}

void weft__pool_list_push(weft__pool_list_t *l, weft_pool_task_t *t);
void weft__pool_list_push_front(weft__pool_list_t *l, weft_pool_task_t *t);
void weft__pool_list_remove(weft__pool_list_t *l, weft_pool_task_t *t);
weft_pool_task_t *weft__pool_list_pop(weft__pool_list_t *l);

/* ---- threads ------------------------------------------------------------ */

typedef enum {
  PW_ACTIVE = 1,   /* takes tasks */
  PW_RETIRING,     /* takes no more; its port closes once nothing is in flight */
  PW_CLOSED        /* port closed by the pool; waiting for on_exit */
} weft__pool_pw_state_t;

#define WEFT__POOL_PW_STASH 4

struct pool_worker_s {
  /* pool context */
  weft_pool_t *pool;
  weft_worker_t *w;
  weft_port_t *port;         /* pool's end of the worker channel; NULL once its close
                                callback ran (closed by either side) */
  weft__pool_list_t inflight;    /* tasks handed over and not back */
  uint32_t id;
  uint8_t state;             /* weft__pool_pw_state_t */
  uint64_t t_spawn, idle_since;

  /* published by the thread after each batch; read by weft_pool_thread_stats.
   * The pads keep the three groups off each other's cache lines (the struct
   * comes from weft_calloc, so they are pads rather than alignas). */
  char pad0[64];
  _Atomic uint64_t busy_ns;
  _Atomic uint64_t tasks;
  char pad1[64];

  /* the pool thread */
  weft_port_t *parent;
  weft_ctx_t *ctx;
  weft_pool_task_t *res_head, *res_tail; /* finished, not yet posted back */
  weft_msg_t *stash[WEFT__POOL_PW_STASH];     /* carriers to reuse for results */
  unsigned nstash;
  bool in_batch;
  bool retry_armed;
  uv_timer_t retry;          /* retries a post-back that could not get a message */
  uint64_t busy_local, tasks_local;
};

/* ---- the pool ------------------------------------------------------------ */

typedef struct {
  char *name;
  weft_pool_fn fn;
} weft__pool_entry_t;

#define WEFT__POOL_SLAB_SHIFT 10u
#define WEFT__POOL_SLAB_SIZE (1u << WEFT__POOL_SLAB_SHIFT)
#define WEFT__POOL_STASH 64

struct weft_pool_s {
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_pool_options_t opts;  /* size, min_threads, max_queue resolved */
  void *data;

  /* threads */
  pool_worker_t **workers;
  uint32_t nworkers, capworkers, nactive, next_id;

  /* tasks */
  weft_pool_task_t **slabs;  /* task memory, WEFT__POOL_SLAB_SIZE per slab */
  uint32_t nslabs;
  weft_list_t free_slots;    /* free slots, a stack (pushed and popped at the front) */
  weft__pool_list_t queue, done;
  weft_pool_task_t **heap;   /* timeouts, a min-heap on deadline */
  uint32_t heap_len, heap_cap;
  uint64_t pending;          /* accepted tasks whose slot is not yet free */
  double avg_run_ns;         /* moving average of run times: sizes batches */
  bool have_avg;

  weft_msg_t *stash[WEFT__POOL_STASH]; /* carriers to reuse */
  unsigned nstash;

  weft__pool_entry_t *entries;
  uint32_t nentries;

  uv_timer_t timeout_timer, idle_timer, kick_timer;
  bool timers_inited;
  unsigned timers_open;
  unsigned in_pass;          /* > 0 while results or the done list are being handled */
  bool want_drain, closing, finishing, zombie;
  bool broken;               /* a thread was terminated from outside: no new threads */
  bool finished;             /* closed and its close callback returned: waits for release */
  bool released;             /* weft_pool_release called: freed once finished */
  weft_pool_close_cb close_cb;
  /* An unstarted, unref'd channel end whose close callback frees a finished
   * pool when its context ends (weft_runtime_free closes every port). */
  weft_port_t *anchor;

  /* remote offload (pool_remote.c): tasks go to this service client; NULL
   * for a local pool, and once the client has closed */
  weft_service_client_t *remote;
  bool is_remote;
  weft__pool_list_t rflight; /* tasks sent to the service, not back */

  /* figures */
  uint64_t retried;
  uint64_t submitted, rejected, completed, failed, cancelled, timed_out;
  uint32_t peak_queued;
  weft__pool_histo_t wait, run;
  weft_metrics_source_t *metrics; /* pool_metrics.c; NULL with metrics off */
};

/* pool_metrics.c: publish the pool's figures in the runtime's metrics
 * snapshots (best effort), and stop. */
void weft__pool_metrics_start(weft_pool_t *pool);

/* pool.c: the pass-level loop callbacks, which the files below arm their
 * timers with but never call: each does a pass's work through them, then
 * what follows a pass (dispatch, drain, reap, the end). */
void weft__pool_on_kick(uv_timer_t *timer);     /* the done list */
void weft__pool_on_timeout(uv_timer_t *timer);  /* expired deadlines */

/* pool_dispatch.c: weft__pool_dispatch hands queued tasks to threads with
 * room, and says what the pool should do next. */
typedef enum {
  WEFT__POOL_SETTLED = 0, /* the queue is empty, or waits (or failed) for good reason */
  WEFT__POOL_GROW         /* no thread has room and the pool may start one:
                             start it, then dispatch again */
} weft__pool_dispatch_t;
weft__pool_dispatch_t weft__pool_dispatch(weft_pool_t *pool);

/* pool_timeout.c */
#define WEFT__POOL_NO_HEAP UINT32_MAX
int weft__pool_heap_push(weft_pool_t *pool, weft_pool_task_t *t);
void weft__pool_heap_remove(weft_pool_t *pool, weft_pool_task_t *t);
void weft__pool_heap_arm(weft_pool_t *pool);
void weft__pool_heap_clear(weft_pool_t *pool);

/* pool_task.c. The pass functions (take_results, run_done, expire,
 * lost_thread) run with pool->in_pass raised by their caller in pool.c and
 * return; they never dispatch nor end the pool. */
int weft__pool_enqueue(weft_pool_t *pool, const weft_pool_task_options_t *opts,
                       weft_pool_done_cb cb, void *data, uint64_t *id); /* weft_pool_submit's checks and queueing */
bool weft__pool_take_results(pool_worker_t *pw, weft_msg_t *msg); /* true: pw holds nothing now */
void weft__pool_lost_thread(weft_pool_t *pool, pool_worker_t *pw, bool requeue);
void weft__pool_cancel_all(weft_pool_t *pool);
void weft__pool_fail_queue(weft_pool_t *pool, int err);
void weft__pool_run_done(weft_pool_t *pool);     /* the done list's callbacks */
void weft__pool_expire(weft_pool_t *pool);       /* tasks past their deadline; re-arms */
void weft__pool_kick(weft_pool_t *pool);          /* run the done list from the loop, now */
void weft__pool_retry_later(weft_pool_t *pool);   /* ... in 1 ms (then dispatch again) */
void weft__pool_free_task_mem(weft_pool_t *pool);

/* pool_task.c, for pool_remote.c: t came back from the service (out of
 * pool->rflight) with err and result (taken); inside a pass. */
void weft__pool_remote_back(weft_pool_t *pool, weft_pool_task_t *t, int err, weft_msg_t *result);
/* t (in no list) ends with err, from the loop. */
void weft__pool_end_later(weft_pool_t *pool, weft_pool_task_t *t, int err);

/* pool.c: after a pass (dispatch, drain, the end). */
void weft__pool_after_pass(weft_pool_t *pool);

/* pool_remote.c */
int weft__pool_remote_new(weft_pool_t *pool);    /* the service client */
void weft__pool_remote_dispatch(weft_pool_t *pool);
void weft__pool_remote_close(weft_pool_t *pool); /* closes the client; after_pass follows */

/* pool_worker.c */
int weft__pool_worker_entry(weft_ctx_t *ctx, weft_msg_t *data);

/* carriers: a message whose payload is one pointer (msgpack uint64) */
int weft__pool_carrier_set(weft_msg_t *msg, const void *ptr);
void *weft__pool_carrier_get(const weft_msg_t *msg);

#endif /* WEFT_POOL_IMPL_H */
