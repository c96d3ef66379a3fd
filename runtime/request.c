/* request.c: request/reply (weft_port_request, weft_msg_reply).
 *
 * A request is an ordinary post whose message carries one end of a fresh
 * channel, the reply end, as its last transfer item, flagged `reply`. The
 * other end, the waiting end, stays on the requester's context, started, with
 * a request_t as its data. Whatever happens, exactly one of three things ends
 * the wait, and `done` makes sure only the first calls on_reply:
 *  - the answer arrives on the waiting end (weft_msg_reply posted it, then
 *    closed the reply end);
 *  - the waiting end's close callback runs first: the reply end closed
 *    without an answer (the request message was freed, which closes the ports
 *    it holds as orphans, or the replier took the port and closed it), or the
 *    requester's context is ending;
 *  - the timer fires.
 * The waiting end is closed as soon as the wait ends, before on_reply runs, so
 * a late weft_msg_reply meets WEFT_ECLOSED. The request_t is freed in the
 * waiting end's close callback (exactly once per port), or, when it has a
 * timer, in the timer's close callback after that; the timer counts in the
 * context's handles_open so that a context that ends waits for it.
 *
 * Threads: the requester's side runs on its context's thread; weft_msg_reply
 * runs on the thread that owns the request message (the reply end is then
 * unbound: posting on it and closing it as an orphan are both safe there). */
#include "weft_impl.h"

typedef struct {
  weft_port_t *port;  /* the waiting end */
  weft_ctx_t *ctx;
  weft_reply_cb on_reply;
  void *data;
  bool done;          /* on_reply called, or never to be called */
  bool has_timer;
  uv_timer_t timer;
} request_t;

static void on_timer_closed(uv_handle_t *h) {
  request_t *r = h->data;
  r->ctx->handles_open--;
  weft__free(r);
}

/* Ends the wait: closes the waiting end (its close callback frees r), then
 * tells the user. */
static void finish_wait(request_t *r, weft_msg_t *reply, int err) {
  if (r->done) {
    weft_msg_free(reply);
    return;
  }
  r->done = true;
  if (r->has_timer)
    uv_timer_stop(&r->timer);
  weft_port_close(r->port);
  r->on_reply(reply, err, r->data);
}

static void on_answer(weft_port_t *port, weft_msg_t *msg) {
  finish_wait(weft_port_data(port), msg, 0);
}

static void on_timeout(uv_timer_t *t) {
  finish_wait(t->data, NULL, UV_ETIMEDOUT);
}

static void on_waiting_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  request_t *r = weft_port_data(port);
  int err = info->reason != 0 ? info->reason : WEFT_ECLOSED;
  finish_wait(r, NULL, err);
  if (r->has_timer)
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
  else
    weft__free(r);
}

/* The waiting end, started, with r as its data and the timer armed. All or
 * nothing: on failure nothing is left to undo but the channel. */
static int arm(request_t *r, uint64_t timeout_ms) {
  weft_port_set_data(r->port, r);
  int rc = weft_port_on_close(r->port, on_waiting_closed);
  if (rc == 0)
    rc = weft_port_start(r->port, on_answer);
  if (rc != 0 || timeout_ms == 0)
    return rc;
  rc = uv_timer_init(weft_ctx_loop(r->ctx), &r->timer);
  if (rc != 0)
    return rc;
  r->timer.data = r;
  r->has_timer = true;
  r->ctx->handles_open++;
  uv_unref((uv_handle_t *)&r->timer); /* the waiting end keeps the loop alive */
  /* From now, not from the loop's cached time, which may be long past when
   * the request is made outside a callback (before the loop runs). */
  uv_update_time(weft_ctx_loop(r->ctx));
  return uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
}

/* Takes the reply end back out of msg (the last item) and closes it. */
static void unadd_reply_port(weft_msg_t *msg) {
  weft__xfer_t *x = &msg->xfer[--msg->nxfer];
  weft__port_close_orphan(x->u.port);
}

int weft_port_request(weft_port_t *port, weft_msg_t *msg, weft_reply_cb on_reply, void *data,
                      uint64_t timeout_ms) {
  if (port == NULL || msg == NULL || on_reply == NULL)
    return WEFT_EINVAL;
  weft_ctx_t *ctx = weft_ctx_current();
  if (ctx == NULL)
    return WEFT_EWRONGTHREAD;
  request_t *r = weft__calloc(1, sizeof(*r));
  if (r == NULL)
    return WEFT_ENOMEM;
  r->ctx = ctx;
  r->on_reply = on_reply;
  r->data = data;
  weft_port_t *ends[2];
  int rc = weft_channel_new(ctx, ends);
  if (rc != 0)
    goto fail_free;
  r->port = ends[0];
  rc = arm(r, timeout_ms);
  if (rc != 0)
    goto fail_close;
  rc = weft_msg_add_port(msg, ends[1]);
  if (rc != 0)
    goto fail_close;
  msg->xfer[msg->nxfer - 1].reply = true;
  rc = weft_port_post(port, msg);
  if (rc != 0)
    goto fail_unadd;
  return 0;

fail_unadd:
  unadd_reply_port(msg);
  ends[1] = NULL;
fail_close:
  /* The close callback, if it was set, frees r (and its timer) from the
   * loop; done keeps on_reply from being called. */
  r->done = true;
  if (ends[1] != NULL)
    weft_port_close(ends[1]);
  bool freed_later = r->port->ext != NULL && r->port->ext->on_close != NULL;
  weft_port_close(ends[0]);
  if (freed_later)
    return rc;
fail_free:
  weft__free(r);
  return rc;
}

/* The reply item of msg, or NULL. */
static weft__xfer_t *reply_item(const weft_msg_t *msg) {
  for (uint16_t i = msg->nxfer; i-- > 0;)
    if (msg->xfer[i].reply)
      return &msg->xfer[i];
  return NULL;
}

int weft_msg_reply(weft_msg_t *request, weft_msg_t *reply) {
  if (request == NULL || reply == NULL)
    return WEFT_EINVAL;
  weft__xfer_t *x = reply_item(request);
  if (x == NULL)
    return WEFT_ENOENT;
  if (x->kind != WEFT_XFER_PORT)
    return WEFT_ECLOSED; /* answered, or the port was taken out */
  int rc = weft_port_post(x->u.port, reply);
  if (rc != 0)
    return rc;
  x->kind = 0;
  weft__port_close_orphan(x->u.port); /* the close follows the answer */
  return 0;
}

bool weft_msg_is_request(const weft_msg_t *msg) {
  const weft__xfer_t *x = msg != NULL ? reply_item(msg) : NULL;
  return x != NULL && x->kind == WEFT_XFER_PORT;
}
