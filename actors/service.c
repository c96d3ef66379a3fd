/* service.c: the provider side of services (weft/service.h), and the
 * protocol helpers both sides use.
 *
 * A provider is an actor: a channel whose one end (self) runs the
 * behaviour below and whose other end is published under "svc:<name>".
 * Requests (messages with a CALL trailer, service_int.h) go to the user's
 * handler, their trailer taken off, and count as in flight until
 * weft_service_reply or weft_service_drop ends them; svc->reqs finds each
 * one's record (its client and call id) by the message. Each client that
 * said HELLO has a record holding the provider's end of its notice channel,
 * which carries the answers; the client closes it (after BYE, once it has
 * every answer it waits for), or this side when the provider ends.
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
  weft_list_t reqs;      /* its requests in flight (svc_req_t) */
  bool bye;              /* it sends nothing more (a request after is dropped) */
} svc_client_t;

typedef struct {
  weft_list_node_t link; /* client->reqs */
  svc_client_t *client;  /* NULL once the client is gone */
  uint64_t id;           /* the client's call id */
} svc_req_t;

struct weft_service_s {
  weft_node_t *node;
  weft_ctx_t *ctx;
  char pubname[WEFT__SVC_MAX_NAME + 8];
  weft_service_handler_cb handler;
  void *data;
  weft_port_t *self;     /* the actor's own end; NULL once closed */
  weft_list_t clients;
  size_t nclients;
  weft__svc_map_t tokens; /* token -> svc_client_t */
  weft__svc_map_t reqs;   /* (uintptr_t)request message -> svc_req_t */
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

int weft__svc_msg_drop(uint64_t id, weft_msg_t **out) {
  weft_msg_t *m;
  int rc = weft_msg_new(&m);
  if (rc != 0)
    return rc;
  if ((rc = weft__svc_trailer_add(m, WEFT__SVC_DROP, 0, id)) != 0) {
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
  weft__svc_map_free(&svc->tokens);
  weft__svc_map_free(&svc->reqs);
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
  for (weft_list_node_t *l = weft_list_first(&c->reqs); l; l = weft_list_next(l))
    WEFT_LIST_ENTRY(l, svc_req_t, link)->client = NULL; /* answers to it fail */
  if (weft__svc_map_get(&svc->tokens, c->token) == c)
    weft__svc_map_del(&svc->tokens, c->token);
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
  if (token == 0 || weft__svc_map_get(&svc->tokens, token) != NULL ||
      weft__svc_map_put(&svc->tokens, token, c) != 0) {
    weft_port_close(notice); /* a token in use (or no memory): not welcomed */
    return;
  }
  if (weft_port_start(notice, on_notice_msg) != 0 ||
      post_op(notice, WEFT__SVC_WELCOME, 0) != 0)
    weft_port_close(notice); /* its close callback drops the record */
}

/* BYE: every request of that client has arrived. It closes its notice
 * channel itself once it has every answer (on the same channel, so none is
 * lost; a close from here could overtake them: when the name goes, the
 * client's port to it closes on another channel). */
static void on_bye(weft_service_t *svc, uint64_t token) {
  svc_client_t *c = weft__svc_map_get(&svc->tokens, token);
  if (c != NULL)
    c->bye = true;
}

/* A request: its record, then the handler. From a client we do not know
 * (not welcomed, or gone), it is dropped: nobody could be answered. */
static void on_request(weft_service_t *svc, weft_msg_t *msg, uint64_t token, uint64_t id) {
  svc_client_t *c = weft__svc_map_get(&svc->tokens, token);
  svc_req_t *r = c != NULL && !c->bye ? weft_malloc(sizeof(*r)) : NULL;
  if (r != NULL && weft__svc_map_put(&svc->reqs, (uintptr_t)msg, r) != 0) {
    weft_free(r);
    r = NULL;
  }
  if (r == NULL) { /* no memory: the client sees WEFT_ECLOSED */
    weft_msg_t *d;
    if (c != NULL && weft__svc_msg_drop(id, &d) == 0 && weft_port_post(c->notice, d) != 0)
      weft_msg_free(d);
    weft_msg_free(msg);
    return;
  }
  r->client = c;
  r->id = id;
  weft_list_push_back(&c->reqs, &r->link);
  weft__svc_trailer_strip(msg);
  svc->inflight++;
  svc->handler(svc, msg, svc->data);
}

static void behaviour(weft_port_t *self, weft_msg_t *msg) {
  weft_service_t *svc = weft_port_data(self);
  uint64_t token = 0, id = 0;
  int op = weft__svc_trailer_get(msg, &token, &id);
  if (op == WEFT__SVC_CALL) {
    on_request(svc, msg, token, id);
    return;
  }
  op = op == 0 ? weft__svc_op(msg, &token) : 0;
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

/* Ends request req (its record r): frees both. */
static void request_end(weft_service_t *svc, weft_msg_t *req, svc_req_t *r) {
  if (r->client != NULL)
    weft_list_remove(&r->client->reqs, &r->link);
  weft_free(r);
  weft_msg_free(req);
  svc->inflight--;
  maybe_unpublish(svc);
  maybe_free(svc);
}

int weft_service_reply(weft_service_t *svc, weft_msg_t *req, weft_msg_t *reply) {
  if (svc == NULL || req == NULL)
    return WEFT_EINVAL;
  svc_req_t *r = weft__svc_map_del(&svc->reqs, (uintptr_t)req);
  if (r == NULL) { /* not a request of this provider's handler */
    weft_msg_free(req);
    return WEFT_EINVAL;
  }
  int rc = reply == NULL ? WEFT_EINVAL : r->client == NULL ? WEFT_ECLOSED : 0;
  if (rc == 0)
    rc = weft__svc_trailer_add(reply, WEFT__SVC_REPLY, 0, r->id);
  if (rc == 0 && (rc = weft_port_post(r->client->notice, reply)) != 0)
    weft__svc_trailer_strip(reply); /* the caller's again, as it was */
  request_end(svc, req, r);
  return rc;
}

int weft_service_drop(weft_service_t *svc, weft_msg_t *req) {
  if (svc == NULL || req == NULL)
    return WEFT_EINVAL;
  svc_req_t *r = weft__svc_map_del(&svc->reqs, (uintptr_t)req);
  if (r == NULL) {
    weft_msg_free(req);
    return WEFT_EINVAL;
  }
  weft_msg_t *d;
  if (r->client != NULL && weft__svc_msg_drop(r->id, &d) == 0 &&
      weft_port_post(r->client->notice, d) != 0)
    weft_msg_free(d); /* gone: the client hears of it from the close */
  request_end(svc, req, r);
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
