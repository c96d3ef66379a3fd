/* worker.c: worker threads, each running its own context and loop.
 *
 * The parent creates the channel (both ends on its context), detaches the
 * worker's end (it is "in transit" until the thread binds it, so whatever the
 * parent posts early waits there) and starts the thread. The worker thread
 * builds its context, binds its end, tells the parent it is online, runs the
 * entry and then its loop. On the way out it closes every port and handle of
 * its loop (its peers see the closes) and posts the exit task to the parent,
 * which joins the thread, waits for the parent end to finish closing (so every
 * message the worker sent is delivered first) and calls on_error / on_exit.
 *
 * Threads: `lock` guards `wctx` and `terminate_req`, shared between the
 * worker thread and weft_worker_terminate callers on any thread. The rest is
 * the parent's, or the worker thread's between spawn and the exit task. */
#include <string.h>

#include "weft_impl.h"

struct weft_worker_s {
  weft_ctx_t ctx;              /* the worker's context (worker thread) */
  weft_ctx_t *parent;
  weft_list_node_t link;       /* in the parent's children, then exited (parent thread) */
  uv_thread_t tid;
  weft_worker_entry_cb entry;
  weft_msg_t *data;
  weft_port_t *port;           /* parent end; its channel is held until w is freed */
  weft_port_t *child_port;     /* worker end */
  weft_worker_options_t opts;
  void *user;
  uv_mutex_t lock;
  weft_ctx_t *wctx;            /* guarded by lock: set while the loop can be woken */
  bool terminate_req;          /* guarded by lock */
  bool gone;                   /* guarded by lock: on_exit has returned */
  bool port_done;              /* parent: the parent end has finished closing */
  bool exited;                 /* parent: on_exit returned; w waits for release */
  bool released;               /* parent: weft_worker_release called */
  bool terminated;             /* worker thread */
  bool exit_req;               /* worker thread: weft_worker_exit called */
  int exit_req_code;
  int error;
  int exit_code;
  weft__task_t online_task;
  weft__task_t exit_task;
};

static void on_port_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  weft_worker_t *w = port->ext->internal_data;
  w->port_done = true;
}

static void online_task(weft__task_t *t) {
  weft_worker_t *w = (weft_worker_t *)((char *)t - offsetof(weft_worker_t, online_task));
  if (w->opts.on_online)
    w->opts.on_online(w);
}

static weft_worker_t *worker_of(weft_list_node_t *n) {
  return WEFT_LIST_ENTRY(n, weft_worker_t, link);
}

static void worker_free(weft_worker_t *w) {
  weft__port_unhold(w->port); /* a saved weft_worker_port was valid until here */
  uv_mutex_destroy(&w->lock);
  weft__free(w);
}

/* After on_exit the handle waits, exited, for weft_worker_release or for its
 * parent context to end. */
static void keep_exited(weft_worker_t *w) {
  weft_ctx_t *ctx = w->parent;
  w->exited = true;
  weft_list_push_front(&ctx->exited, &w->link);
}

static void exit_task(weft__task_t *t) {
  weft_worker_t *w = (weft_worker_t *)((char *)t - offsetof(weft_worker_t, exit_task));
  if (!w->port_done) {
    /* Let the parent end deliver what the worker sent, then its close. */
    if (!(w->port->flags & WEFT__PORT_STARTED))
      weft_port_close(w->port);
    weft__ctx_post_task(w->parent, t);
    return;
  }
  uv_thread_join(&w->tid);
  weft_list_remove(&w->parent->children, &w->link);
  weft__ctx_live_add(w->parent, -1);
  if (w->error && w->opts.on_error)
    w->opts.on_error(w, w->error);
  if (w->opts.on_exit)
    w->opts.on_exit(w, w->exit_code);
  weft_msg_free(w->data);
  w->data = NULL;
  uv_mutex_lock(&w->lock);
  w->gone = true;
  uv_mutex_unlock(&w->lock);
  if (w->released)
    worker_free(w);
  else
    keep_exited(w);
}

int weft_worker_release(weft_worker_t *w) {
  if (w == NULL)
    return WEFT_EINVAL;
  if (w->parent != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  if (!w->exited) {
    w->released = true; /* freed once on_exit has returned */
    return 0;
  }
  weft_list_remove(&w->parent->exited, &w->link);
  worker_free(w);
  return 0;
}

/* ctx ends: the handles of its exited workers go. */
static void release_exited(weft_ctx_t *ctx) {
  weft_list_node_t *n;
  while ((n = weft_list_pop_front(&ctx->exited)) != NULL)
    worker_free(worker_of(n));
}

static int run_entry(weft_worker_t *w) {
  weft_ctx_t *ctx = &w->ctx;
  int rc = w->entry(ctx, w->data);
  weft_msg_free(w->data);
  w->data = NULL;
  if (rc < 0) {
    w->error = rc;
    return 1;
  }
  return rc;
}

static void worker_main(void *arg) {
  weft_worker_t *w = arg;
  weft_ctx_t *ctx = &w->ctx;
  int err = weft__ctx_init(ctx, w->parent->rt, NULL);
  if (err) {
    w->error = err;
    w->exit_code = 1;
    weft__port_close_orphan(w->child_port);
    weft__ctx_post_task(w->parent, &w->exit_task);
    return;
  }
  weft__ctx_set_current(ctx);
  ctx->worker = w;
  uv_mutex_lock(&w->lock);
  w->wctx = ctx;
  if (w->terminate_req)
    atomic_store_explicit(&ctx->stop, true, memory_order_relaxed);
  uv_mutex_unlock(&w->lock);
  weft__port_attach(w->child_port, ctx);
  ctx->parent_port = w->child_port;
  weft__ctx_post_task(w->parent, &w->online_task);

  int code = 0;
  if (!weft_ctx_should_stop(ctx))
    code = run_entry(w);
  if (!weft_ctx_should_stop(ctx))
    uv_run(ctx->loop, UV_RUN_DEFAULT);
  uv_mutex_lock(&w->lock);
  w->terminated = w->terminate_req;
  w->wctx = NULL;
  uv_mutex_unlock(&w->lock);
  if (w->exit_req)
    code = w->exit_req_code;
  else if (w->terminated)
    code = 1;
  w->exit_code = code;
  ctx->parent_port = NULL;
  weft__ctx_reap_children(ctx);
  weft__ctx_fini(ctx, true);
  weft__ctx_set_current(NULL);
  /* Last touch of w on this thread: the parent may free it from here on. */
  weft__ctx_post_task(w->parent, &w->exit_task);
}

static int setup_port(weft_worker_t *w, weft_port_t *ports[2]) {
  weft__port_ext_t *ext = weft__port_ext(ports[0]);
  if (ext == NULL || weft__port_ext(ports[1]) == NULL)
    return WEFT_ENOMEM;
  ext->on_close_internal = on_port_closed;
  ext->internal_data = w;
  if (w->opts.port_hwm_msgs || w->opts.port_hwm_bytes) {
    weft_port_set_hwm(ports[0], w->opts.port_hwm_msgs, w->opts.port_hwm_bytes);
    weft_port_set_hwm(ports[1], w->opts.port_hwm_msgs, w->opts.port_hwm_bytes);
  }
  if (w->opts.on_message)
    weft_port_start(ports[0], w->opts.on_message);
  return weft__port_detach(ports[1]);
}

int weft_worker_spawn(weft_ctx_t *ctx, const weft_worker_options_t *opts, weft_worker_t **out) {
  int err;
  if (ctx == NULL || opts == NULL || out == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft_worker_entry_cb entry = opts->entry;
  if (entry == NULL) {
    if (opts->entry_name == NULL)
      return WEFT_EINVAL;
    entry = weft_runtime_lookup(ctx->rt, opts->entry_name);
    if (entry == NULL)
      return WEFT_ENOENTRY;
  }
  weft_worker_t *w = weft__calloc(1, sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  w->parent = ctx;
  w->entry = entry;
  w->opts = *opts;
  w->user = opts->data;
  w->online_task.fn = online_task;
  w->exit_task.fn = exit_task;
  err = uv_mutex_init(&w->lock);
  if (err)
    goto fail_free;
  weft_port_t *ports[2];
  err = weft_channel_new(ctx, ports);
  if (err)
    goto fail_mutex;
  w->port = ports[0];
  w->child_port = ports[1];
  weft__port_hold(ports[0]);
  err = setup_port(w, ports);
  if (err)
    goto fail_channel;
  w->data = opts->msg;
  uv_thread_options_t topts = {.flags = UV_THREAD_NO_FLAGS};
  if (opts->stack_size) {
    topts.flags = UV_THREAD_HAS_STACK_SIZE;
    topts.stack_size = opts->stack_size;
  }
  err = uv_thread_create_ex(&w->tid, &topts, worker_main, w);
  if (err)
    goto fail_channel;
  weft_list_push_front(&ctx->children, &w->link);
  weft__ctx_live_add(ctx, 1);
  *out = w;
  return 0;

fail_channel:
  w->data = NULL;
  if (ports[1]->flags & WEFT__PORT_IN_MSG)
    weft__port_close_orphan(ports[1]);
  else
    weft_port_close(ports[1]);
  if (ports[0]->ext)
    ports[0]->ext->on_close_internal = NULL;
  weft_port_close(ports[0]);
  weft__port_unhold(ports[0]);
fail_mutex:
  uv_mutex_destroy(&w->lock);
fail_free:
  weft__free(w);
  return err;
}

weft_port_t *weft_worker_port(weft_worker_t *w) {
  return (w == NULL || w->port_done) ? NULL : w->port;
}
void *weft_worker_data(const weft_worker_t *w) { return w ? w->user : NULL; }

void weft_worker_set_data(weft_worker_t *w, void *data) {
  if (w)
    w->user = data;
}

int weft_worker_terminate(weft_worker_t *w) {
  if (w == NULL)
    return WEFT_EINVAL;
  uv_mutex_lock(&w->lock);
  if (w->gone) {
    uv_mutex_unlock(&w->lock);
    return WEFT_ECLOSED;
  }
  w->terminate_req = true;
  if (w->wctx != NULL) {
    atomic_store_explicit(&w->wctx->stop, true, memory_order_relaxed);
    weft__ctx_signal(w->wctx);
  }
  uv_mutex_unlock(&w->lock);
  return 0;
}

int weft_worker_exit(weft_ctx_t *ctx, int code) {
  if (ctx == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  if (ctx->worker == NULL) {
    /* A child process's entry: weft_runtime_child_entry returns with code. */
    weft_runtime_t *rt = ctx->rt;
    if (rt == NULL || ctx != rt->main || rt->child_entry == NULL)
      return WEFT_EINVAL;
    rt->exit_req = true;
    rt->exit_code = code;
    uv_stop(ctx->loop);
    return 0;
  }
  ctx->worker->exit_req = true;
  ctx->worker->exit_req_code = code;
  atomic_store_explicit(&ctx->stop, true, memory_order_relaxed);
  uv_stop(ctx->loop);
  return 0;
}

void weft__ctx_reap_children(weft_ctx_t *ctx) {
  if (weft_list_empty(&ctx->children)) {
    release_exited(ctx);
    return;
  }
  for (weft_list_node_t *n = weft_list_first(&ctx->children); n != NULL; n = weft_list_next(n))
    weft_worker_terminate(worker_of(n));
  /* Deliver the exit tasks even if this context was itself told to stop. */
  bool stop = atomic_exchange_explicit(&ctx->stop, false, memory_order_relaxed);
  while (!weft_list_empty(&ctx->children))
    uv_run(ctx->loop, UV_RUN_ONCE);
  if (stop)
    atomic_store_explicit(&ctx->stop, true, memory_order_relaxed);
  release_exited(ctx);
}
