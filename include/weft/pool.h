/* weft/pool.h: a CPU-offload pool: tasks run on weft worker threads, results
 * come back as callbacks on the submitting context.
 *
 * A pool belongs to one context (the "pool context", usually the main one):
 * every weft_pool_* call below is made on that context's thread, and every
 * callback (task done, drain, close) runs there, from its loop, never from
 * inside a weft_pool_* call. Task functions run on the pool's worker threads,
 * each of which is an ordinary weft worker with its own context and loop.
 *
 * A task is a function (a pointer, or a name registered with
 * weft_pool_register), a message of arguments and an optional timeout. Its
 * arguments and its result are weft messages: their transfer lists carry
 * buffers both ways without copying (the message itself is handed over, never
 * re-encoded). Tasks wait in the pool's bounded queue until a thread has room;
 * past max_queue, weft_pool_submit returns WEFT_EAGAIN and on_drain fires once
 * the queue has fallen to half.
 *
 * Every accepted task gets exactly one callback, with one of:
 *   0               the function returned 0; result is its message (or NULL)
 *   < 0 from fn     the function's error (result NULL); or, when the pool
 *                   has no thread and cannot start one, that error
 *   WEFT_ECANCELED  weft_pool_cancel returned 0 for it, or the pool closed
 *   UV_ETIMEDOUT    its timeout passed first (a late result is dropped)
 *   WEFT_ETERMINATED its thread exited while running it (weft_worker_exit
 *                   from inside a task, or weft_runtime_free)
 *
 * Callback order: callbacks follow the order in which tasks finish. Each
 * thread returns its results in the order it finished them, so with one
 * thread (size 1) and no cancellation, timeout or asynchronous task, callbacks
 * come in submission order (FIFO). A task cancelled while still queued and a
 * task that times out complete when that happens (from the loop), ahead of
 * older tasks still running. Across threads there is no order.
 *
 * Use from a plain libuv program (the pool's threads keep the loop alive
 * until the pool closes, or until they retire when idle_timeout_ms is set):
 *
 *   weft_runtime_options_t ro = {.loop = loop};   // the program's loop
 *   weft_runtime_new(&rt, &ro);
 *   weft_pool_new(weft_runtime_main(rt), NULL, &pool);
 *   weft_pool_submit(pool, &(weft_pool_task_options_t){.fn = hash, .args = m}, done, NULL, NULL);
 *   uv_run(loop, UV_RUN_DEFAULT);   // done() calls weft_pool_close(pool, NULL)
 *   weft_runtime_free(rt);
 *
 * Remote offload: the same tasks on other machines. A pool created with
 * opts.node and opts.service runs no thread: it sends each task (its
 * registered name and its args) to a provider of that service (weft/
 * service.h), where weft_pool_serve hands it to that node's own pool under
 * the same name; the result (or error) comes back to the same callback. The
 * task code does not change: both programs register the same functions
 * under the same names (weft_pool_register; a function pointer submitted as
 * .fn is sent under the name it was registered with). A task flagged
 * WEFT_POOL_IDEMPOTENT is tried again on another provider when its provider
 * dies or does not answer (at least once, as in service.h); one not flagged
 * completes with WEFT_EPEERDIED. Its args carry buffers only (copied across
 * machines; an idempotent task none: WEFT_ETRANSFER), and weft_pool_task_arg
 * is NULL on the far side.
 *
 * The pool is written against the public weft API only, like every built-in
 * actor: a program could write it itself. */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include "common.h"
#include "msg.h"
#include "node.h"
#include "runtime.h"
#include "service.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_pool_s weft_pool_t;
typedef struct weft_pool_task_s weft_pool_task_t;

/* Default bound of the pool's queue (tasks not yet handed to a thread). */
#define WEFT_POOL_DEFAULT_MAX_QUEUE 65536u

/* A task function's return value meaning "not finished yet": the function
 * started something on its thread's loop (weft_ctx_current()) and will call
 * weft_pool_task_complete later, on that thread. */
#define WEFT_POOL_ASYNC 1

/* A task function. Runs on a pool thread. args is the submitted message
 * (NULL if none was given), borrowed: the function may read it and take items
 * out of its transfer list (weft_msg_take_buf), the pool frees it when the
 * task ends. To answer, set *result to a new message (its transfer list
 * travels back without copying); the callback receives it. Returns 0, a
 * negative error code (the callback gets it; *result, if set, is freed), or
 * WEFT_POOL_ASYNC. Long functions poll weft_pool_task_cancelled. */
typedef int (*weft_pool_fn)(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result);

/* Called exactly once per accepted task, on the pool context. err as listed
 * at the top; result belongs to the callee (free it with weft_msg_free), and
 * is NULL unless err is 0. The callee may submit, cancel, resize or close. */
typedef void (*weft_pool_done_cb)(weft_pool_t *pool, int err, weft_msg_t *result, void *data);

/* Called on the pool context once per WEFT_EAGAIN episode, when the queue has
 * fallen to half of max_queue. */
typedef void (*weft_pool_drain_cb)(weft_pool_t *pool);

/* Called once, on the pool context, when the pool has closed: every task has
 * had its callback and every thread has exited. The handle stays valid
 * (closed) after it returns: see weft_pool_release. */
typedef void (*weft_pool_close_cb)(weft_pool_t *pool);

typedef struct {
  uint32_t size;            /* most threads; 0: weft_available_parallelism() */
  uint32_t min_threads;     /* with idle_timeout_ms: threads kept while idle (<= size) */
  uint32_t idle_timeout_ms; /* 0: a fixed pool, all `size` threads start at once and
                               stay. Else min_threads start, more are added while
                               tasks wait (up to size) and a thread idle this long
                               retires (down to min_threads; 0 lets the loop exit) */
  uint32_t max_queue;       /* tasks waiting for a thread; 0: WEFT_POOL_DEFAULT_MAX_QUEUE */
  size_t stack_size;        /* of each thread; 0: the platform default */
  weft_pool_drain_cb on_drain;
  void *data;               /* weft_pool_data */
  /* remote offload (see the top): with both set the pool runs no thread and
   * size is the most tasks in flight at the service (0: 64); min_threads,
   * idle_timeout_ms and stack_size are ignored */
  weft_node_t *node;        /* this program's node, on the pool context */
  const char *service;      /* the service whose providers run the tasks */
  uint32_t attempt_timeout_ms; /* per attempt at a provider; 0: 5000 */
  uint32_t max_attempts;    /* for idempotent tasks, in all; 0: 3 */
} weft_pool_options_t;

/* weft_pool_task_options_t.flags: the task may run more than once (a remote
 * pool retries it on another provider). No effect on a local pool. */
#define WEFT_POOL_IDEMPOTENT 1u

typedef struct {
  weft_pool_fn fn;          /* the function to run, or NULL and ... */
  const char *name;         /* ... a name registered with weft_pool_register */
  weft_msg_t *args;         /* arguments; taken on success (may be NULL) */
  uint32_t timeout_ms;      /* 0: none. Counted from submission */
  void *arg;                /* a pointer handed as is to the function
                               (weft_pool_task_arg); sharing what it points to
                               across threads is the caller's business; not
                               sent by a remote pool */
  unsigned flags;           /* 0 or WEFT_POOL_IDEMPOTENT */
} weft_pool_task_options_t;

/* weft_pool_new: a pool owned by ctx (the calling thread must be ctx's).
 * opts may be NULL (defaults). All or nothing: on failure no task will ever
 * run and no callback is called (threads already started stop by themselves).
 * Returns 0 and sets *out, WEFT_EINVAL (min_threads > size; only one of
 * node and service), WEFT_EWRONGTHREAD, WEFT_ENOMEM, weft_worker_spawn's
 * error, or (remote) weft_service_client_new's. */
WEFT_EXTERN int weft_pool_new(weft_ctx_t *ctx, const weft_pool_options_t *opts,
                              weft_pool_t **out);

/* weft_pool_register: make fn submittable as name (weft_pool_task_options_t
 * .name) on this pool. The name is copied. Pool context. Returns 0,
 * WEFT_EBUSY (name taken), WEFT_EINVAL, WEFT_ENOMEM, WEFT_ECLOSED. */
WEFT_EXTERN int weft_pool_register(weft_pool_t *pool, const char *name, weft_pool_fn fn);

/* weft_pool_serve: provide service on node with this pool: each request of
 * a remote pool runs here the function registered under the name it
 * carries, and its result (or error: WEFT_ENOENTRY for a name not
 * registered, WEFT_EAGAIN for a full queue, the function's error) goes
 * back. Pool context, which must be node's. Returns 0 and *out (end it with
 * weft_service_withdraw before closing the pool; requests that arrive at a
 * closed pool are answered WEFT_ECLOSED), or weft_service_provide's errors. */
WEFT_EXTERN int weft_pool_serve(weft_pool_t *pool, weft_node_t *node, const char *service,
                                weft_service_t **out);

/* weft_pool_submit: queue a task. cb (may be NULL: the result is dropped) is
 * called exactly once with data, on the pool context, never from inside this
 * call. On success opts->args is taken and *id (if id is not NULL) is set to
 * the task's id, unique within the pool and never 0. On failure the caller
 * still owns opts->args and cb is never called. Pool context.
 * Errors: WEFT_EAGAIN (queue at max_queue: on_drain follows), WEFT_ENOENTRY
 * (no function under that name; remote: fn not registered under a name),
 * WEFT_ETRANSFER (remote: args carry other than buffers, or an idempotent
 * task carries any), WEFT_ECLOSED (pool closing), WEFT_EINVAL,
 * WEFT_EWRONGTHREAD, WEFT_ENOMEM. */
WEFT_EXTERN int weft_pool_submit(weft_pool_t *pool, const weft_pool_task_options_t *opts,
                                 weft_pool_done_cb cb, void *data, uint64_t *id);

/* weft_pool_cancel: cancel task id. Queued: it never runs. Running: its
 * cancellation flag is set (weft_pool_task_cancelled) and whatever it returns
 * is dropped. Either way, after 0 is returned its callback gets
 * WEFT_ECANCELED (a queued task's from the loop soon, a running task's when
 * its function returns). Pool context. Returns 0, or WEFT_ENOENT (no task id
 * whose outcome is still open: it finished, timed out, or was cancelled). */
WEFT_EXTERN int weft_pool_cancel(weft_pool_t *pool, uint64_t id);

/* weft_pool_resize: change the most threads to size (>= 1; min_threads is
 * lowered to it if needed). Growing a fixed pool starts threads at once;
 * shrinking retires threads, each after the tasks it holds have finished: no
 * task is lost or run twice. Pool context. Returns 0, WEFT_EINVAL,
 * WEFT_ECLOSED, or the error of a thread that failed to start. */
WEFT_EXTERN int weft_pool_resize(weft_pool_t *pool, uint32_t size);

/* weft_pool_close: stop the pool. Tasks still queued complete with
 * WEFT_ECANCELED; running tasks are flagged cancelled and complete with
 * WEFT_ECANCELED when their functions return (the pool waits for them: a
 * function that never returns keeps it open). Then the threads exit and cb
 * (may be NULL) is called. Non-blocking. Pool context. Returns 0, or
 * WEFT_ECLOSED if already closing (cb is not called).
 * Handle lifetime: after cb the handle stays valid, closed (weft_pool_submit,
 * _register, _resize and _close return WEFT_ECLOSED, _cancel WEFT_ENOENT),
 * until weft_pool_release or until the pool context ends (weft_runtime_free
 * for the main context), whichever comes first.
 * Close a pool, and let its callback run, before weft_runtime_free: that
 * terminates the threads of a pool still open (their tasks end with
 * WEFT_ETERMINATED, the pool stops starting threads) and the pool's memory
 * is not released. */
WEFT_EXTERN int weft_pool_close(weft_pool_t *pool, weft_pool_close_cb cb);

/* weft_pool_release: the caller is done with the handle. Pool context; may
 * be called inside the pool's close callback (the pool is then freed once
 * the callback returns). A closed pool is freed now; an open one is closed
 * (as weft_pool_close with no callback) and freed once closed; one closing
 * is freed after its close callback. pool must not be used afterwards. Returns 0, WEFT_EINVAL,
 * WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_pool_release(weft_pool_t *pool);

/* Questions and user data. Pool context. */
WEFT_EXTERN weft_ctx_t *weft_pool_ctx(const weft_pool_t *pool);
WEFT_EXTERN void *weft_pool_data(const weft_pool_t *pool);
WEFT_EXTERN void weft_pool_set_data(weft_pool_t *pool, void *data);

/* ---- on a pool thread, inside a task ------------------------------------ */

/* weft_pool_task_cancelled: true once the task was cancelled, timed out, or
 * its pool began closing. Any thread; cheap enough for an inner loop. */
WEFT_EXTERN bool weft_pool_task_cancelled(const weft_pool_task_t *task);

/* weft_pool_task_arg / _id: the submitted opts.arg, and the task's id. */
WEFT_EXTERN void *weft_pool_task_arg(const weft_pool_task_t *task);
WEFT_EXTERN uint64_t weft_pool_task_id(const weft_pool_task_t *task);

/* weft_pool_task_complete: finish a task whose function returned (or is
 * about to return) WEFT_POOL_ASYNC, with err (0 or negative) and result
 * (taken; may be NULL). On the thread that ran the function. args stays valid
 * until this call. Returns 0, WEFT_EWRONGTHREAD, or WEFT_EINVAL (the task is
 * not an unfinished asynchronous one; result stays the caller's). */
WEFT_EXTERN int weft_pool_task_complete(weft_pool_task_t *task, int err, weft_msg_t *result);

/* ---- figures -------------------------------------------------------------- */

/* A distribution in nanoseconds. Percentiles are read from log-linear buckets
 * (16 per power of two) and reported as the bucket's upper bound, at most
 * 6.25% above the true value (never above max_ns). */
typedef struct {
  uint64_t count;
  uint64_t mean_ns, p50_ns, p90_ns, p99_ns, max_ns;
} weft_pool_hist_t;

/* Counters of callbacks are by the code the callback got (a function that
 * itself returns WEFT_ECANCELED counts as cancelled). */
typedef struct {
  uint64_t submitted;     /* accepted by weft_pool_submit */
  uint64_t rejected;      /* refused with WEFT_EAGAIN */
  uint64_t completed;     /* callbacks with 0 */
  uint64_t failed;        /* callbacks with the function's error, or WEFT_ETERMINATED */
  uint64_t cancelled;     /* callbacks with WEFT_ECANCELED */
  uint64_t timed_out;     /* callbacks with UV_ETIMEDOUT */
  uint64_t retried;       /* remote: tasks that took more than one attempt */
  uint32_t providers;     /* remote: providers of the service usable now */
  uint32_t threads;       /* threads taking tasks now (remote: 0) */
  uint32_t queued;        /* tasks waiting in the pool's queue */
  uint32_t running;       /* tasks handed to threads (remote: sent) and not back yet */
  uint32_t peak_queued;   /* most tasks seen in the queue */
  weft_pool_hist_t wait;  /* submission -> start, for tasks that started */
  weft_pool_hist_t run;   /* start -> finish, for tasks that ran */
  double utilization;     /* busy time / age, summed over the threads now alive
                             and divided by their number, in [0, 1] */
} weft_pool_stats_t;

typedef struct {
  uint32_t id;            /* the thread's number in this pool (1, 2, ...; never reused) */
  uint64_t tasks;         /* task functions it ran */
  uint64_t busy_ns;       /* time spent inside task functions */
  uint64_t age_ns;        /* time since it was started */
  double utilization;     /* busy_ns / age_ns */
} weft_pool_thread_stats_t;

/* weft_pool_stats: fills *out. Pool context. Returns 0 or WEFT_EINVAL. */
WEFT_EXTERN int weft_pool_stats(weft_pool_t *pool, weft_pool_stats_t *out);

/* weft_pool_thread_stats: fills out[0..cap) with the threads now alive and
 * sets *count to how many there are (which may exceed cap). Busy times are
 * those the threads last published (after each batch of tasks). Pool
 * context. Returns 0 or WEFT_EINVAL. */
WEFT_EXTERN int weft_pool_thread_stats(weft_pool_t *pool, weft_pool_thread_stats_t *out,
                                       uint32_t cap, uint32_t *count);

/* weft_pool_stats_reset: zero the counters and histograms (not the
 * threads' busy times). Pool context. */
WEFT_EXTERN void weft_pool_stats_reset(weft_pool_t *pool);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_POOL_H */
