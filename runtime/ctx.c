/* ctx.c: contexts: one thread, one loop, one wake-up handle, a ready queue.
 *
 * Ports with work and kernel tasks are pushed onto the context's ready queue
 * from any thread (weft__ctx_push_ready, weft__ctx_wake). The context runs them in batches of at
 * most `batch` deliveries and yields to its loop between batches, keeping an
 * idle handle active while work remains so that the next poll does not block:
 * I/O on the same loop is never starved by a flood of messages.
 *
 * Posts made during a batch to ports of other contexts may be published
 * together at its end (port.c, the producer's batch): run_batch flushes them.
 *
 * Wake-ups. A pusher writes the context's eventfd only if the context has
 * said it may sleep (`parked`). An eventfd watched by a uv_poll_t, not a
 * uv_async_t: libuv 1.44's async handle makes the woken loop spin (and
 * sched_yield) until the sender has returned from its write, which on a VM
 * is the slow half of the wake-up; `parked` already makes a single writer
 * per sleep, which is all the async handle's own flag was for. Before sleeping (prepare phase) the context spins for an
 * adaptive while, watching its ready queue: a busy exchange then costs no
 * kernel wake-up per message, and an idle context stops spinning after a few
 * empty spins. The `parked` flag and the ready queue's tail are both accessed
 * seq_cst (Dekker): a pusher that reads parked == 0 is sure the context will
 * look at the queue again before it sleeps.
 *
 * Threads: all of this file runs on the context's thread except
 * weft__ctx_push_ready / weft__ctx_wake / weft__ctx_post_task. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "weft_impl.h"


#define SPIN_STEP_NS 2000
#define SPIN_FLOOR_NS 0

_Thread_local weft_ctx_t *weft__tls_ctx __attribute__((tls_model("initial-exec")));

static void on_idle(uv_idle_t *h);

weft_ctx_t *weft_ctx_current(void) { return weft__tls_ctx; }
void weft__ctx_set_current(weft_ctx_t *ctx) { weft__tls_ctx = ctx; }

uv_loop_t *weft_ctx_loop(const weft_ctx_t *ctx) { return ctx ? ctx->loop : NULL; }
weft_runtime_t *weft_ctx_runtime(const weft_ctx_t *ctx) { return ctx ? ctx->rt : NULL; }
/* A worker's parent port, or in a child process's main context the channel
 * to the parent process: worker code runs unchanged in a child. */
weft_port_t *weft_ctx_parent_port(const weft_ctx_t *ctx) {
  if (ctx == NULL)
    return NULL;
  if (ctx->parent_port != NULL || ctx->worker != NULL || ctx->rt == NULL || ctx != ctx->rt->main)
    return ctx->parent_port;
  return weft_runtime_parent_port(ctx->rt);
}

bool weft_ctx_should_stop(const weft_ctx_t *ctx) {
  return ctx != NULL && atomic_load_explicit(&((weft_ctx_t *)ctx)->stop, memory_order_relaxed);
}

/* ---- liveness ----------------------------------------------------------- */

static void live_apply(weft_ctx_t *ctx) {
  if (ctx->live > 0)
    uv_ref((uv_handle_t *)&ctx->wake);
  else
    uv_unref((uv_handle_t *)&ctx->wake);
}

void weft__ctx_live_add(weft_ctx_t *ctx, int delta) {
  ctx->live = (uint32_t)((int)ctx->live + delta);
  live_apply(ctx);
}

void weft__ctx_live_update(weft_ctx_t *ctx, weft_port_t *p) {
  if (ctx == NULL)
    return;
  bool want = (p->flags & WEFT__PORT_STARTED) && !(p->flags & WEFT__PORT_UNREF) &&
              !(p->flags & WEFT__PORT_CLOSING);
  bool have = (p->flags & WEFT__PORT_LIVE) != 0;
  if (want == have)
    return;
  if (want)
    p->flags |= WEFT__PORT_LIVE;
  else
    p->flags &= (uint8_t)~WEFT__PORT_LIVE;
  weft__ctx_live_add(ctx, want ? 1 : -1);
}

static weft_port_t *port_of_link(weft_list_node_t *n) {
  return WEFT_LIST_ENTRY(n, weft_port_t, ctx_node);
}

void weft__ctx_port_link(weft_ctx_t *ctx, weft_port_t *p) {
  weft_list_push_front(&ctx->ports, &p->ctx_node);
  ctx->ports_open++;
}

void weft__ctx_port_unlink(weft_ctx_t *ctx, weft_port_t *p) {
  weft_list_remove(&ctx->ports, &p->ctx_node);
  ctx->ports_open--;
}

/* ---- scheduling --------------------------------------------------------- */

/* The wake-up is sent after the pusher has released the port's lock: sent
 * under it, the woken context (often on the same core, preempting the
 * pusher) found the lock held and spun, then yielded, on every wake-up.
 * `waking` keeps ctx (and its async handle) alive until the send is done:
 * relaxed on the way up, because it is sequenced before the push's release
 * store, so a context that popped node sees it; release on the way down,
 * paired with weft__ctx_fini's acquire. */
weft_ctx_t *weft__ctx_push_ready(weft_ctx_t *ctx, weft__qnode_t *node) {
  atomic_fetch_add_explicit(&ctx->waking, 1, memory_order_relaxed);
  weft__mpsc_push(&ctx->ready, node); /* seq_cst exchange on the tail */
  if (atomic_load_explicit(&ctx->parked, memory_order_seq_cst) &&
      atomic_exchange_explicit(&ctx->parked, 0, memory_order_seq_cst))
    return ctx;
  atomic_fetch_sub_explicit(&ctx->waking, 1, memory_order_release);
  return NULL;
}

void weft__ctx_signal(weft_ctx_t *ctx) {
  uint64_t one = 1;
  /* Cannot fail but for a counter near 2^64 - 1 (then the loop is woken
   * already) or EINTR (once more). */
  while (write(ctx->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
    ;
}

void weft__ctx_wake(weft_ctx_t *ctx) {
  weft__ctx_signal(ctx);
  atomic_fetch_sub_explicit(&ctx->waking, 1, memory_order_release);
}

void weft__ctx_post_task(weft_ctx_t *ctx, weft__task_t *task) {
  atomic_fetch_add_explicit(&ctx->waking, 1, memory_order_relaxed); /* as in push_ready */
  weft__mpsc_push(&ctx->tasks, &task->node); /* seq_cst exchange on the tail */
  if (atomic_load_explicit(&ctx->parked, memory_order_seq_cst) &&
      atomic_exchange_explicit(&ctx->parked, 0, memory_order_seq_cst))
    weft__ctx_signal(ctx);
  atomic_fetch_sub_explicit(&ctx->waking, 1, memory_order_release);
}

/* Move p from the open list to the closing list; its close callback runs
 * from the loop (never inside weft_port_close). */
void weft__ctx_close_later(weft_ctx_t *ctx, weft_port_t *p) {
  weft__ctx_port_unlink(ctx, p);
  weft_list_push_front(&ctx->closing, &p->ctx_node);
  if (ctx->handles_open)
    uv_idle_start(&ctx->idle, on_idle);
}

static void run_closing(weft_ctx_t *ctx) {
  weft_list_node_t *n;
  while ((n = weft_list_pop_front(&ctx->closing)) != NULL)
    weft__port_finish(port_of_link(n));
}

/* One batch. Returns true if work remains. */
static weft_port_t *port_of(weft__qnode_t *node) {
  return (weft_port_t *)(void *)((char *)node - offsetof(weft_port_t, sched_node));
}

/* Run the tasks queued now (not those they queue: those wait a batch). The
 * tail seen at the start marks the end, unless the queue was empty then (its
 * tail is the stub, which pop never returns): the budget bounds the turn, so
 * a task that requeues itself (a worker's exit waiting for its port's close)
 * cannot keep the ready ports from their turn. */
static void run_tasks(weft_ctx_t *ctx) {
  weft__qnode_t *node;
  weft__qnode_t *last = atomic_load_explicit(&ctx->tasks.tail, memory_order_acquire);
  uint32_t budget = ctx->batch;
  while (budget-- > 0 && (node = weft__mpsc_pop(&ctx->tasks)) != NULL) {
    weft__task_t *task = (weft__task_t *)(void *)node;
    task->fn(task);
    run_closing(ctx);
    if (node == last)
      break;
  }
}

static bool has_work(weft_ctx_t *ctx) {
  return !weft_list_empty(&ctx->closing) || !weft__mpsc_empty(&ctx->ready) ||
         !weft__mpsc_empty(&ctx->tasks);
}

static bool run_batch(weft_ctx_t *ctx) {
  ctx->in_turn = true; /* posts to other contexts may wait in ctx->out */
  run_closing(ctx);
  run_tasks(ctx);
  uint32_t budget = ctx->batch;
  while (budget > 0 && !atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
    weft__qnode_t *node = weft__mpsc_pop(&ctx->ready);
    if (node == NULL)
      break;
    bool more;
    uint32_t used = weft__port_drain(port_of(node), budget, &more);
    budget -= used < budget ? (used ? used : 1) : budget;
    if (more)
      weft__mpsc_push(&ctx->ready, node);
    run_closing(ctx);
  }
  ctx->in_turn = false;
  weft__port_flush(ctx);
  weft__msgpool_flush(ctx->pool);
  if (atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
    uv_stop(ctx->loop);
    return false;
  }
  return has_work(ctx);
}

static void run_and_rearm(weft_ctx_t *ctx) {
  if (run_batch(ctx))
    uv_idle_start(&ctx->idle, on_idle);
  else
    uv_idle_stop(&ctx->idle);
}

static void on_idle(uv_idle_t *h) { run_and_rearm(h->data); }

/* Woken soon after parking: the peer answers at the pace of a kernel
 * wake-up, so both sides sleep on every message. Spin fully next time: the
 * peer's answer then arrives while we spin, and the exchange leaves the slow
 * regime after one round instead of never (seen under CPU contention). */
static void on_wake(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  weft_ctx_t *ctx = h->data;
  uint64_t n;
  while (read(ctx->wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
    ; /* resets the counter; EAGAIN: a spurious readiness, harmless */
  ctx->wakeups++;
  if (ctx->spin_max_ns > 0 && uv_hrtime() - ctx->parked_at < 4 * (uint64_t)ctx->spin_max_ns)
    ctx->spin_ns = ctx->spin_max_ns;
  atomic_store_explicit(&ctx->parked, 0, memory_order_relaxed);
  run_and_rearm(ctx);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  sched_yield();
#endif
}

static bool input_ready(weft_ctx_t *ctx) {
  for (weft_list_node_t *n = weft_list_first(&ctx->closers); n != NULL; n = weft_list_next(n)) {
    weft__closer_t *c = WEFT_LIST_ENTRY(n, weft__closer_t, node);
    if (c->input_ready && c->input_ready(c))
      return true;
  }
  return false;
}

enum { SPIN_MISS = 0, SPIN_WORK = 1, SPIN_INPUT = 2 };

/* Spin up to the adaptive budget for work, or for input on a process
 * channel (checked between rounds: it costs a system call). */
static int spin_for_work(weft_ctx_t *ctx) {
  if (ctx->spin_ns <= 0)
    return SPIN_MISS;
  uint64_t deadline = uv_hrtime() + (uint64_t)ctx->spin_ns;
  do {
    for (int i = 0; i < 64; i++) {
      if (has_work(ctx) || atomic_load_explicit(&ctx->stop, memory_order_relaxed))
        return SPIN_WORK;
      cpu_relax();
    }
    if (!weft_list_empty(&ctx->closers) && input_ready(ctx))
      return SPIN_INPUT;
  } while (uv_hrtime() < deadline);
  return SPIN_MISS;
}

static void adapt_spin(weft_ctx_t *ctx, bool hit) {
  if (ctx->spin_max_ns <= 0)
    return;
  if (hit) {
    ctx->spins_hit++;
    ctx->spin_ns = ctx->spin_ns * 2 + SPIN_STEP_NS;
    if (ctx->spin_ns > ctx->spin_max_ns)
      ctx->spin_ns = ctx->spin_max_ns;
  } else {
    ctx->spin_ns /= 2;
    if (ctx->spin_ns < SPIN_STEP_NS)
      ctx->spin_ns = SPIN_FLOOR_NS;
  }
}

/* Before the loop polls: run what is ready, spin a little, then allow sleep.
 * Leaves either with the idle handle active (work remains: the poll will not
 * block) or with `parked` set after a last look at the ready queue. */
static void on_prepare(uv_prepare_t *h) {
  weft_ctx_t *ctx = h->data;
  for (;;) {
    if (atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
      uv_stop(ctx->loop);
      return;
    }
    if (uv_is_active((uv_handle_t *)&ctx->idle))
      return;
    if (has_work(ctx)) {
      run_and_rearm(ctx);
      continue;
    }
    int hit = spin_for_work(ctx);
    adapt_spin(ctx, hit != SPIN_MISS);
    if (hit == SPIN_INPUT)
      return; /* the poll finds the input at once, without sleeping */
    if (hit == SPIN_WORK)
      continue;
    /* Let the spin grow again later so a new exchange can find it. */
    if (ctx->spin_ns == 0 && ctx->spin_max_ns > 0)
      ctx->spin_ns = SPIN_STEP_NS / 2;
    ctx->parked_at = uv_hrtime();
    atomic_store_explicit(&ctx->parked, 1, memory_order_seq_cst);
    if (!has_work(ctx))
      return;
    atomic_store_explicit(&ctx->parked, 0, memory_order_relaxed);
  }
}

static void on_check(uv_check_t *h) {
  weft_ctx_t *ctx = h->data;
  atomic_store_explicit(&ctx->parked, 0, memory_order_relaxed);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  weft_ctx_t *ctx = h->data;
  ctx->handles_open--;
}

int weft__ctx_init(weft_ctx_t *ctx, weft_runtime_t *rt, uv_loop_t *loop) {
  int err;
  memset(ctx, 0, sizeof(*ctx));
  weft__mpsc_init(&ctx->ready);
  weft__mpsc_init(&ctx->tasks);
  ctx->rt = rt;
  ctx->batch = rt->opts.batch ? rt->opts.batch : 1024;
  ctx->spin_max_ns = rt->opts.spin_us < 0 ? 0 : (rt->opts.spin_us ? rt->opts.spin_us : 50) * 1000;
  ctx->spin_ns = ctx->spin_max_ns / 4;
  if (loop == NULL) {
    loop = weft__malloc(sizeof(*loop));
    if (loop == NULL)
      return WEFT_ENOMEM;
    err = uv_loop_init(loop);
    if (err)
      goto fail_free_loop;
    ctx->own_loop = true;
  }
  ctx->loop = loop;
  uv_loop_configure(loop, UV_METRICS_IDLE_TIME); /* best effort on a running loop */
  err = weft__metrics_ctx_new(ctx);
  if (err)
    goto fail_close_loop;
  ctx->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ctx->wake_fd < 0) {
    err = uv_translate_sys_error(errno);
    goto fail_free_metrics;
  }
  err = uv_poll_init(loop, &ctx->wake, ctx->wake_fd);
  if (err)
    goto fail_close_fd;
  /* libuv: these always succeed (the inits allocate nothing; a start fails
   * only without a callback or events), so nothing after the poll handle's
   * init can fail. */
  (void)uv_poll_start(&ctx->wake, UV_READABLE, on_wake);
  (void)uv_prepare_init(loop, &ctx->prepare);
  (void)uv_check_init(loop, &ctx->check);
  (void)uv_idle_init(loop, &ctx->idle);
  ctx->wake.data = ctx->prepare.data = ctx->check.data = ctx->idle.data = ctx;
  ctx->handles_open = 4;
  (void)uv_prepare_start(&ctx->prepare, on_prepare);
  (void)uv_check_start(&ctx->check, on_check);
  uv_unref((uv_handle_t *)&ctx->wake);
  uv_unref((uv_handle_t *)&ctx->prepare);
  uv_unref((uv_handle_t *)&ctx->check);
  ctx->start_ns = uv_hrtime();
  ctx->pool = weft__msgpool_adopt();
  weft__metrics_ctx_start(ctx);
  return 0;

fail_close_fd:
  close(ctx->wake_fd);
fail_free_metrics:
  weft__metrics_ctx_stop(ctx);
fail_close_loop:
  if (ctx->own_loop)
    uv_loop_close(loop);
fail_free_loop:
  if (ctx->own_loop)
    weft__free(loop);
  ctx->loop = NULL;
  ctx->own_loop = false;
  return err;
}

static void close_foreign(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Run whatever is queued once more, so that nothing posted is left unaccounted. */
static void drain_ready(weft_ctx_t *ctx) {
  weft__qnode_t *node;
  bool stop = atomic_exchange_explicit(&ctx->stop, false, memory_order_relaxed);
  while ((node = weft__mpsc_pop(&ctx->tasks)) != NULL) {
    ((weft__task_t *)(void *)node)->fn((weft__task_t *)(void *)node);
    run_closing(ctx);
  }
  while ((node = weft__mpsc_pop(&ctx->ready)) != NULL) {
    bool more;
    weft__port_drain(port_of(node), 0, &more); /* closed ports: releases the token */
    if (more)
      weft__mpsc_push(&ctx->ready, node);
    run_closing(ctx);
  }
  if (stop)
    atomic_store_explicit(&ctx->stop, true, memory_order_relaxed);
}

void weft__ctx_closer_add(weft_ctx_t *ctx, weft__closer_t *c) {
  weft_list_push_front(&ctx->closers, &c->node);
}

/* Nothing happens if c was already removed. */
void weft__ctx_closer_remove(weft_ctx_t *ctx, weft__closer_t *c) {
  weft_list_remove(&ctx->closers, &c->node);
}

/* Close every kernel resource; each removes itself when closed. */
static void close_closers(weft_ctx_t *ctx) {
  for (weft_list_node_t *n = weft_list_first(&ctx->closers), *next; n != NULL; n = next) {
    next = weft_list_next(n);
    weft__closer_t *c = WEFT_LIST_ENTRY(n, weft__closer_t, node);
    c->close(c);
  }
  while (!weft_list_empty(&ctx->closers))
    uv_run(ctx->loop, UV_RUN_ONCE);
}

int weft__ctx_fini(weft_ctx_t *ctx, bool close_all_handles) {
  weft__port_flush(ctx);
  close_closers(ctx);
  while (!weft_list_empty(&ctx->ports)) {
    weft_port_t *p = port_of_link(weft_list_first(&ctx->ports));
    weft__port_close_now(p);
    run_closing(ctx);
  }
  run_closing(ctx);
  drain_ready(ctx);
  weft__metrics_ctx_stop(ctx);
  /* A pusher may still be between its push and its wake-up (a few
   * instructions and one system call): the handle must outlive it. */
  while (atomic_load_explicit(&ctx->waking, memory_order_acquire) != 0)
    sched_yield();
  uv_close((uv_handle_t *)&ctx->wake, on_handle_closed);
  uv_close((uv_handle_t *)&ctx->prepare, on_handle_closed);
  uv_close((uv_handle_t *)&ctx->check, on_handle_closed);
  uv_close((uv_handle_t *)&ctx->idle, on_handle_closed);
  if (close_all_handles)
    uv_walk(ctx->loop, close_foreign, NULL);
  while (ctx->handles_open > 0)
    uv_run(ctx->loop, UV_RUN_NOWAIT);
  close(ctx->wake_fd); /* its watcher is gone with the handle */
  weft__msgpool_release(ctx->pool);
  ctx->pool = NULL;
  int err = 0;
  if (ctx->own_loop) {
    if (close_all_handles)
      uv_run(ctx->loop, UV_RUN_DEFAULT);
    err = uv_loop_close(ctx->loop);
    if (err == 0)
      weft__free(ctx->loop);
  }
  return err;
}

int weft_ctx_stats(weft_ctx_t *ctx, weft_ctx_stats_t *out) {
  if (ctx == NULL || out == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__tls_ctx)
    return WEFT_EWRONGTHREAD;
  memset(out, 0, sizeof(*out));
  out->msgs_in = ctx->msgs_in;
  out->msgs_out = ctx->msgs_out;
  for (weft_list_node_t *n = weft_list_first(&ctx->ports); n != NULL; n = weft_list_next(n))
    out->queue_depth += weft_port_pending(port_of_link(n));
  out->queue_peak = ctx->queue_peak;
  out->ports_open = ctx->ports_open;
  out->undeliverable = ctx->undeliverable;
  out->wakeups = ctx->wakeups;
  out->spins_hit = ctx->spins_hit;
  out->loop_idle_ns = uv_metrics_idle_time(ctx->loop);
  out->loop_age_ns = uv_hrtime() - ctx->start_ns;
  out->loop_utilization =
      out->loop_age_ns ? 1.0 - (double)out->loop_idle_ns / (double)out->loop_age_ns : 0.0;
  if (out->loop_utilization < 0)
    out->loop_utilization = 0;
  return 0;
}
