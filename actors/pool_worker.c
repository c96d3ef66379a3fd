/* pool_worker.c: the pool threads' side. Each pool thread is a weft worker
 * whose entry starts its parent port; every message on it carries a chain of
 * tasks (pool_impl.h). The thread runs them in order and posts finished tasks
 * back as a chain: at the end of each incoming chain, and also every FLUSH_NS
 * within a long one, so results of long batches do not wait for the batch.
 *
 * Clock: one uv_hrtime per task; the end of one task is the start of the next.
 *
 * Asynchronous tasks (the function returned WEFT_POOL_ASYNC) stay with the
 * thread until weft_pool_task_complete on this thread; then they join the
 * chain going back (posted at once when no chain is being run).
 *
 * Carriers: the thread answers with the messages that brought the tasks
 * (kept in pw->stash), allocating one only when it has none; if even that
 * fails, a retry timer posts the results later. Nothing is dropped.
 *
 * Threads: everything here runs on the pool thread, except
 * weft_pool_task_cancelled/_arg/_id (any thread). The busy time and task
 * count are published with relaxed stores for weft_pool_thread_stats. */
#include "pool_impl.h"

#define FLUSH_NS 200000u

static void res_append(pool_worker_t *pw, weft_pool_task_t *t) {
  t->next = NULL;
  if (pw->res_tail)
    pw->res_tail->next = t;
  else
    pw->res_head = t;
  pw->res_tail = t;
}

static weft_msg_t *carrier(pool_worker_t *pw) {
  if (pw->nstash > 0)
    return pw->stash[--pw->nstash];
  weft_msg_t *m;
  return weft_msg_new(&m) == 0 ? m : NULL;
}

static void on_retry(uv_timer_t *timer);

static void arm_retry(pool_worker_t *pw) {
  if (!pw->retry_armed) {
    pw->retry_armed = true;
    uv_timer_start(&pw->retry, on_retry, 1, 0);
  }
}

/* Posts the finished tasks back to the pool. After a successful post the
 * tasks are the pool's: not one of them is touched again here. */
static void flush(pool_worker_t *pw) {
  if (pw->res_head == NULL)
    return;
  atomic_store_explicit(&pw->busy_ns, pw->busy_local, memory_order_relaxed);
  atomic_store_explicit(&pw->tasks, pw->tasks_local, memory_order_relaxed);
  weft_msg_t *m = carrier(pw);
  int err = m ? weft__pool_carrier_set(m, pw->res_head) : WEFT_ENOMEM;
  if (err == 0)
    err = weft_port_post(pw->parent, m);
  if (err != 0) {
    weft_msg_free(m);
    if (err != WEFT_ECLOSED) {
      arm_retry(pw);
      return;
    }
    /* The pool closed the channel: it ends these tasks when this thread has
     * exited (they are still in its in-flight list). */
  }
  pw->res_head = pw->res_tail = NULL;
}

static void on_retry(uv_timer_t *timer) {
  pool_worker_t *pw = timer->data;
  pw->retry_armed = false;
  if (!pw->in_batch)
    flush(pw);
}

/* t is finished with rc (0 or negative; positive counts as 0) and result. */
static void finish(pool_worker_t *pw, weft_pool_task_t *t, int rc, weft_msg_t *result) {
  t->wstate = W_DONE;
  if (rc > 0)
    rc = 0;
  if (rc == 0 && result != NULL && weft_msg_error(result) != 0)
    rc = weft_msg_error(result);
  if (rc < 0) {
    weft_msg_free(result);
    result = NULL;
  }
  t->err = rc;
  t->result = result;
  weft_msg_free(t->args);
  t->args = NULL;
  res_append(pw, t);
}

/* Runs t, which starts at time start; returns the time it ended. */
static uint64_t run_one(pool_worker_t *pw, weft_pool_task_t *t, uint64_t start) {
  if (atomic_load_explicit(&t->cancel, memory_order_relaxed)) {
    finish(pw, t, WEFT_ECANCELED, NULL); /* t_start stays 0: it never ran */
    return start;
  }
  t->t_start = start;
  t->wstate = W_RUNNING;
  weft_msg_t *result = NULL;
  int rc = t->fn(t, t->args, &result);
  uint64_t now = uv_hrtime();
  pw->busy_local += now - start;
  pw->tasks_local++;
  if (t->wstate == W_DONE) { /* completed from inside its own function */
    weft_msg_free(result);
    return now;
  }
  if (rc == WEFT_POOL_ASYNC) {
    t->wstate = W_ASYNC;
    weft_msg_free(result);
    return now;
  }
  t->t_end = now;
  finish(pw, t, rc, result);
  return now;
}

static void on_tasks(weft_port_t *port, weft_msg_t *msg) {
  pool_worker_t *pw = weft_port_data(port);
  weft_pool_task_t *t = weft__pool_carrier_get(msg);
  if (pw->nstash < WEFT__POOL_PW_STASH)
    pw->stash[pw->nstash++] = msg;
  else
    weft_msg_free(msg);
  pw->in_batch = true;
  uint64_t now = uv_hrtime(), flushed = now;
  while (t != NULL) {
    weft_pool_task_t *next = t->next; /* t->next is reused by the chain back */
    if (weft_ctx_should_stop(pw->ctx))
      break; /* the rest stay unstarted: the pool requeues them on exit */
    now = run_one(pw, t, now);
    if (now - flushed >= FLUSH_NS) {
      flush(pw);
      flushed = now;
    }
    t = next;
  }
  pw->in_batch = false;
  flush(pw);
}

int weft__pool_worker_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  uint64_t v = 0;
  int err = weft_msg_get_u64(data, NULL, &v);
  if (err != 0)
    return err;
  pool_worker_t *pw = (pool_worker_t *)(uintptr_t)v;
  pw->ctx = ctx;
  pw->parent = weft_ctx_parent_port(ctx);
  err = uv_timer_init(weft_ctx_loop(ctx), &pw->retry);
  if (err != 0)
    return err;
  pw->retry.data = pw;
  uv_unref((uv_handle_t *)&pw->retry);
  weft_port_set_data(pw->parent, pw);
  return weft_port_start(pw->parent, on_tasks);
}

/* ---- inside a task ---------------------------------------------------------- */

bool weft_pool_task_cancelled(const weft_pool_task_t *task) {
  return task != NULL && atomic_load_explicit(&task->cancel, memory_order_relaxed) != 0;
}

void *weft_pool_task_arg(const weft_pool_task_t *task) {
  return task ? task->arg : NULL;
}

uint64_t weft_pool_task_id(const weft_pool_task_t *task) {
  return task ? task->id : 0;
}

int weft_pool_task_complete(weft_pool_task_t *task, int err, weft_msg_t *result) {
  if (task == NULL)
    return WEFT_EINVAL;
  pool_worker_t *pw = task->worker;
  if (weft_ctx_current() != pw->ctx)
    return WEFT_EWRONGTHREAD;
  if (task->wstate != W_RUNNING && task->wstate != W_ASYNC)
    return WEFT_EINVAL;
  task->t_end = uv_hrtime();
  finish(pw, task, err, result);
  if (!pw->in_batch)
    flush(pw);
  return 0;
}
