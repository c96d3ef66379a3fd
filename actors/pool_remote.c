/* pool_remote.c: remote offload (weft/pool.h): a pool whose tasks run on a
 * service's providers instead of threads, and weft_pool_serve, the
 * providers' side, which runs them on a local pool.
 *
 * A remote pool keeps the local pool's task life (slots, queue, timeouts,
 * cancel flags, callbacks: pool_task.c); only the handover differs: a queued
 * task becomes a service call (weft_service_call) when fewer than
 * opts.size are in flight (pool->rflight), and its reply ends it as a
 * thread's result would. A task cancelled or timed out while in flight is
 * flagged as for a thread: its late answer is dropped.
 *
 * The wire (both sides are the same program): a request is the map
 * {"weft.pool": name, "args": bin} (args: the args message's payload; no
 * key when there were no args) and the args' buffers as its transfer list,
 * in order (so weft_msg_put_xfer indexes stay true); a reply is
 * {"weft.pool": err, "result": bin} with the result's buffers the same way
 * ("result" only when the function set one).
 *
 * Threads: the pool context, which is the node's, only. */
#include <string.h>

#include "pool_impl.h"

#define NAME_MAX_LEN 256

/* ---- the envelope ------------------------------------------------------------ */

/* Moves every buffer of from (if any) to to, in order. Other items stay:
 * a request's own reply port is one; a task's args hold none
 * (weft_pool_submit checks). */
static int move_bufs(weft_msg_t *from, weft_msg_t *to) {
  size_t n = from ? weft_msg_xfer_count(from) : 0;
  for (size_t i = 0; i < n; i++) {
    weft_buf_t *b;
    if (weft_msg_xfer_kind(from, i) != WEFT_XFER_BUF)
      continue;
    int err = weft_msg_take_buf(from, i, &b);
    if (err != 0)
      return err;
    err = weft_msg_add_buf(to, b);
    weft_buf_free(b);
    if (err != 0)
      return err;
  }
  return 0;
}

/* A new message {"weft.pool": head (a string, or an error when str is NULL),
 * key: inner's payload} with inner's buffers. inner may be NULL. */
static int wrap(const char *str, int64_t err_code, const char *key, weft_msg_t *inner,
                weft_msg_t **out) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err != 0)
    return err;
  size_t len = 0;
  const void *p = inner ? weft_msg_payload(inner, &len) : NULL;
  weft_msg_put_map(m, inner ? 2 : 1);
  if (str)
    weft_msg_put_str(m, "weft.pool", str);
  else
    weft_msg_put_i64(m, "weft.pool", err_code);
  if (inner)
    weft_msg_put_bin(m, key, p ? p : "", p ? len : 0);
  err = weft_msg_error(m);
  if (err == 0)
    err = move_bufs(inner, m);
  if (err != 0) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

/* The inner message under key (NULL when absent), with m's buffers. */
static int unwrap(weft_msg_t *m, const char *key, weft_msg_t **out) {
  const void *p;
  size_t len;
  *out = NULL;
  int err = weft_msg_get_bin(m, key, &p, &len);
  if (err == WEFT_ENOKEY)
    return 0;
  weft_msg_t *inner = NULL;
  if (err == 0)
    err = weft_msg_new(&inner);
  if (err == 0 && len > 0)
    err = weft_msg_set_payload(inner, p, len);
  if (err == 0)
    err = move_bufs(m, inner);
  if (err != 0) {
    weft_msg_free(inner);
    return err;
  }
  *out = inner;
  return 0;
}

/* ---- the remote pool ---------------------------------------------------------- */

static void on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                     const weft_service_info_t *info, void *data) {
  (void)cli;
  weft_pool_task_t *t = data;
  weft_pool_t *pool = t->pool;
  weft_msg_t *result = NULL;
  if (info->attempts > 1)
    pool->retried++;
  if (err == 0) {
    int64_t code = 0;
    err = weft_msg_get_i64(reply, "weft.pool", &code);
    if (err == 0 && (code > 0 || code < INT32_MIN))
      err = WEFT_EPROTO;
    else if (err == 0 && (err = (int)code) == 0)
      err = unwrap(reply, "result", &result);
  }
  weft_msg_free(reply);
  pool->in_pass++;
  weft__pool_remote_back(pool, t, err, result);
  pool->in_pass--;
  weft__pool_after_pass(pool);
}

void weft__pool_remote_dispatch(weft_pool_t *pool) {
  while (pool->queue.len > 0 && pool->rflight.len < pool->opts.size && pool->remote != NULL) {
    weft_pool_task_t *t = weft__pool_list_pop(&pool->queue);
    weft_msg_t *req = NULL;
    int err = wrap(t->name, 0, "args", t->args, &req);
    unsigned flags = (t->flags & WEFT_POOL_IDEMPOTENT) ? WEFT_SERVICE_IDEMPOTENT : 0;
    if (err == 0)
      err = weft_service_call(pool->remote, req, flags, on_reply, t);
    if (err == 0) {
      t->state = TASK_SENT;
      t->t_start = uv_hrtime();
      weft__pool_list_push(&pool->rflight, t);
      continue;
    }
    weft_msg_free(req);
    if (err == WEFT_ENOMEM && (t->args == NULL || weft_msg_xfer_count(t->args) == 0)) {
      weft__pool_list_push_front(&pool->queue, t); /* try again soon */
      weft__pool_retry_later(pool);
      return;
    }
    weft__pool_end_later(pool, t, err); /* its buffers may be gone: it cannot be tried again */
  }
}

static void on_client_closed(weft_service_client_t *cli, void *data) {
  (void)cli;
  weft_pool_t *pool = data;
  pool->remote = NULL;
  weft__pool_after_pass(pool);
}

void weft__pool_remote_close(weft_pool_t *pool) {
  weft_service_client_close(pool->remote, on_client_closed, pool);
}

int weft__pool_remote_new(weft_pool_t *pool) {
  weft_service_client_options_t o = {
      .service = pool->opts.service,
      .timeout_ms = pool->opts.attempt_timeout_ms,
      .max_attempts = pool->opts.max_attempts,
      .max_outstanding = UINT32_MAX / 2, /* the pool bounds what is in flight (opts.size) */
      .wait_ms = UINT32_MAX / 2,         /* tasks wait for a provider; task timeouts end them */
  };
  return weft_service_client_new(pool->opts.node, &o, &pool->remote);
}

/* ---- the providers' side ------------------------------------------------------ */

typedef struct {
  weft_service_t *svc;
  weft_msg_t *req;
} serve_t;

static void serve_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  serve_t *s = data;
  weft_msg_t *reply;
  if (wrap(NULL, err, "result", result, &reply) != 0)
    weft_service_drop(s->svc, s->req); /* no memory: the client sees WEFT_ECLOSED */
  else if (weft_service_reply(s->svc, s->req, reply) != 0)
    weft_msg_free(reply);
  weft_msg_free(result);
  weft_free(s);
}

static void serve_request(weft_service_t *svc, weft_msg_t *req, void *data) {
  weft_pool_t *pool = data;
  serve_t *s = weft_malloc(sizeof(*s));
  if (s == NULL) {
    weft_service_drop(svc, req);
    return;
  }
  s->svc = svc;
  s->req = req;
  char name[NAME_MAX_LEN];
  weft_msg_t *args = NULL;
  int err = weft_msg_get_strcpy(req, "weft.pool", name, sizeof(name), NULL);
  if (err == 0)
    err = unwrap(req, "args", &args);
  if (err == 0)
    err = weft_pool_submit(pool, &(weft_pool_task_options_t){.name = name, .args = args},
                           serve_done, s, NULL);
  if (err != 0) {
    weft_msg_free(args);
    serve_done(pool, err, NULL, s);
  }
}

int weft_pool_serve(weft_pool_t *pool, weft_node_t *node, const char *service,
                    weft_service_t **out) {
  if (pool == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != pool->ctx)
    return WEFT_EWRONGTHREAD;
  if (pool->closing)
    return WEFT_ECLOSED;
  return weft_service_provide(node, service, serve_request, pool, out);
}
