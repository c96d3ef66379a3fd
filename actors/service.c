/* service.c: the provider side of services (weft/service.h), and the
 * protocol helpers both sides use.
 *
 * A provider is an actor: a channel whose one end (self) runs the
 * behaviour below and whose other end is published under "svc:<name>".
 * Requests go to the user's handler and count as in flight until
 * weft_service_reply or weft_service_drop ends them. Each client that said
 * HELLO has a record holding the provider's end of its notice channel.
 *
 * Invariants: the name is unpublished only while withdrawing, once no client
 * record is left and nothing is in flight (so every request a client sent
 * has arrived: it sent BYE after them, on the same channel). svc is freed
 * once self has closed (unpublished, or the node closed), no record is left
 * and nothing is in flight: a handler that answers later never meets freed
 * memory. Thread: the node's context only. */
#include <string.h>

#include "service_int.h"

typedef struct {
  weft_list_node_t link; /* svc->clients */
  weft_service_t *svc;
  weft_port_t *notice;   /* the provider's end of the notice channel */
  uint64_t token;
} svc_client_t;

struct weft_service_s {
  weft_node_t *node;
  weft_ctx_t *ctx;
  char pubname[WEFT__SVC_MAX_NAME + 8];
  weft_service_handler_cb handler;
  void *data;
  weft_port_t *self;     /* the actor's own end; NULL once closed */
  weft_list_t clients;
  size_t nclients;
  uint64_t inflight;
  bool withdrawing, unpublished;
  weft_service_withdraw_cb withdraw_cb;
  void *withdraw_data;
};

/* ---- the protocol -------------------------------------------------------------- */

int weft__svc_op(const weft_msg_t *msg, uint64_t *token) {
  uint64_t op = 0;
  if (weft_msg_is_request(msg) || weft_msg_get_u64(msg, "weft.svc", &op) != 0 || op == 0 ||
      op > WEFT__SVC_BYE)
    return 0;
  if (weft_msg_get_u64(msg, "token", token) != 0)
    *token = 0;
  return (int)op;
}

int weft__svc_msg(int op, uint64_t token, weft_msg_t **out) {
  weft_msg_t *m;
  int rc = weft_msg_new(&m);
  if (rc != 0)
    return rc;
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "weft.svc", (uint64_t)op);
  weft_msg_put_u64(m, "token", token);
  rc = weft_msg_error(m);
  if (rc != 0) {
    weft_msg_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int weft__svc_pubname(const char *name, char *buf, size_t cap) {
  size_t len = name ? strlen(name) : 0;
  if (len == 0 || len > WEFT__SVC_MAX_NAME || cap < len + sizeof(WEFT__SVC_PREFIX))
    return WEFT_EINVAL;
  memcpy(buf, WEFT__SVC_PREFIX, sizeof(WEFT__SVC_PREFIX) - 1);
  memcpy(buf + sizeof(WEFT__SVC_PREFIX) - 1, name, len + 1);
  return 0;
}

/* ---- ending ---------------------------------------------------------------------- */

static void maybe_free(weft_service_t *svc) {
  if (svc->self != NULL || svc->inflight > 0 || svc->nclients > 0)
    return;
  if (svc->withdrawing && svc->withdraw_cb != NULL)
    svc->withdraw_cb(svc, svc->withdraw_data);
  weft_free(svc);
}

/* A withdraw is done once every client has gone and every request is
 * answered: the name goes, and self's close follows. */
static void maybe_unpublish(weft_service_t *svc) {
  if (!svc->withdrawing || svc->unpublished || svc->inflight > 0 || svc->nclients > 0 ||
      svc->self == NULL)
    return;
  svc->unpublished = true;
  if (weft_node_unpublish(svc->node, svc->pubname) != 0)
    weft_port_close(svc->self); /* the node is closing: it closes the name itself */
}

static void on_self_closed(weft_port_t *self, const weft_port_close_info_t *info) {
  (void)info;
  weft_service_t *svc = weft_port_data(self);
  svc->self = NULL;
  for (weft_list_node_t *l = weft_list_first(&svc->clients); l; l = weft_list_next(l))
    weft_port_close(WEFT_LIST_ENTRY(l, svc_client_t, link)->notice);
  maybe_free(svc);
}

/* ---- clients ------------------------------------------------------------------- */

static void on_notice_msg(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_free(msg); /* clients send nothing this way */
}

static void on_notice_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  svc_client_t *c = weft_port_data(port);
  weft_service_t *svc = c->svc;
  weft_list_remove(&svc->clients, &c->link);
  svc->nclients--;
  weft_free(c);
  maybe_unpublish(svc);
  maybe_free(svc);
}

static int post_op(weft_port_t *port, int op, uint64_t token) {
  weft_msg_t *m;
  int rc = weft__svc_msg(op, token, &m);
  if (rc == 0 && (rc = weft_port_post(port, m)) != 0)
    weft_msg_free(m);
  return rc;
}

/* HELLO: a client with its notice channel. Welcomed, unless withdrawing (its
 * notice channel is then closed: it looks elsewhere). */
static void on_hello(weft_service_t *svc, weft_msg_t *msg, uint64_t token) {
  size_t i;
  weft_port_t *notice = NULL;
  if (weft_msg_find_xfer(msg, WEFT_XFER_PORT, 0, &i) != 0 ||
      weft_msg_take_port(msg, i, &notice) != 0)
    return;
  svc_client_t *c = svc->withdrawing || svc->self == NULL ? NULL : weft_calloc(1, sizeof(*c));
  if (c == NULL) {
    weft_port_close(notice);
    return;
  }
  c->svc = svc;
  c->notice = notice;
  c->token = token;
  weft_port_set_data(notice, c);
  if (weft_port_on_close(notice, on_notice_closed) != 0) {
    weft_free(c);
    weft_port_close(notice);
    return;
  }
  weft_list_push_back(&svc->clients, &c->link);
  svc->nclients++;
  weft_port_unref(notice);
  if (weft_port_start(notice, on_notice_msg) != 0 ||
      post_op(notice, WEFT__SVC_WELCOME, 0) != 0)
    weft_port_close(notice); /* its close callback drops the record */
}

/* BYE: every request of that client has arrived. */
static void on_bye(weft_service_t *svc, uint64_t token) {
  for (weft_list_node_t *l = weft_list_first(&svc->clients); l; l = weft_list_next(l)) {
    svc_client_t *c = WEFT_LIST_ENTRY(l, svc_client_t, link);
    if (c->token == token) {
      weft_port_close(c->notice);
      return;
    }
  }
}

static void behaviour(weft_port_t *self, weft_msg_t *msg) {
  weft_service_t *svc = weft_port_data(self);
  uint64_t token = 0;
  int op = weft__svc_op(msg, &token);
  if (op == 0 && weft_msg_is_request(msg)) {
    svc->inflight++;
    svc->handler(svc, msg, svc->data);
    return;
  }
  if (op == WEFT__SVC_HELLO)
    on_hello(svc, msg, token);
  else if (op == WEFT__SVC_BYE)
    on_bye(svc, token);
  weft_msg_free(msg);
}

/* ---- the public API -------------------------------------------------------------- */

int weft_service_provide(weft_node_t *node, const char *name, weft_service_handler_cb handler,
                         void *data, weft_service_t **out) {
  if (node == NULL || handler == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_ctx_t *ctx = weft_ctx_current();
  if (ctx == NULL)
    return WEFT_EWRONGTHREAD;
  weft_service_t *svc = weft_calloc(1, sizeof(*svc));
  if (svc == NULL)
    return WEFT_ENOMEM;
  int rc = weft__svc_pubname(name, svc->pubname, sizeof(svc->pubname));
  if (rc != 0)
    goto fail_free;
  svc->node = node;
  svc->ctx = ctx;
  svc->handler = handler;
  svc->data = data;
  weft_port_t *ends[2];
  rc = weft_channel_new(ctx, ends);
  if (rc != 0)
    goto fail_free;
  weft_port_set_data(ends[0], svc);
  rc = weft_port_on_close(ends[0], on_self_closed);
  if (rc != 0)
    goto fail_close_both;
  rc = weft_node_publish(node, svc->pubname, ends[1]);
  if (rc != 0)
    goto fail_close_both;
  /* From here self's close callback frees svc. */
  svc->self = ends[0];
  weft_port_unref(ends[0]);
  rc = weft_port_start(ends[0], behaviour);
  if (rc != 0) {
    weft_node_unpublish(node, svc->pubname);
    return rc;
  }
  *out = svc;
  return 0;

fail_close_both:
  weft_port_set_data(ends[0], NULL);
  weft_port_on_close(ends[0], NULL);
  weft_port_close(ends[0]);
  weft_port_close(ends[1]);
fail_free:
  weft_free(svc);
  return rc;
}

int weft_service_reply(weft_service_t *svc, weft_msg_t *req, weft_msg_t *reply) {
  if (svc == NULL || req == NULL)
    return WEFT_EINVAL;
  int rc = reply != NULL ? weft_msg_reply(req, reply) : WEFT_EINVAL;
  weft_msg_free(req);
  svc->inflight--;
  maybe_unpublish(svc);
  maybe_free(svc);
  return rc;
}

int weft_service_drop(weft_service_t *svc, weft_msg_t *req) {
  if (svc == NULL || req == NULL)
    return WEFT_EINVAL;
  weft_msg_free(req);
  svc->inflight--;
  maybe_unpublish(svc);
  maybe_free(svc);
  return 0;
}

int weft_service_withdraw(weft_service_t *svc, weft_service_withdraw_cb cb, void *data) {
  if (svc == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != svc->ctx)
    return WEFT_EWRONGTHREAD;
  if (svc->withdrawing || svc->self == NULL)
    return WEFT_ECLOSED;
  svc->withdrawing = true;
  svc->withdraw_cb = cb;
  svc->withdraw_data = data;
  for (weft_list_node_t *l = weft_list_first(&svc->clients); l; l = weft_list_next(l)) {
    svc_client_t *c = WEFT_LIST_ENTRY(l, svc_client_t, link);
    if (post_op(c->notice, WEFT__SVC_WITHDRAW, 0) != 0)
      weft_port_close(c->notice); /* gone, or no memory: it cannot be told */
  }
  maybe_unpublish(svc);
  return 0;
}

uint64_t weft_service_inflight(const weft_service_t *svc) { return svc ? svc->inflight : 0; }

size_t weft_service_clients(const weft_service_t *svc) { return svc ? svc->nclients : 0; }
