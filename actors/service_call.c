/* service_call.c: the client side's calls (weft/service.h).
 *
 * A call is in one of three places: waiting (no provider usable yet; in
 * cli->waiting, with a deadline), flying (an attempt's weft_port_request
 * callback is due; in no list), or done (to complete from the loop; in
 * cli->done). Each attempt goes to the usable provider with the fewest
 * attempts outstanding from this client, the scan starting after the one
 * picked last (ties: round robin), and avoiding the provider of the previous
 * attempt when another is usable.
 *
 * Invariants: the user's callback runs exactly once per accepted call, from
 * the loop (a request callback or the timer), never inside weft_service_call.
 * cli->outstanding counts calls accepted and not completed; a cancelled call
 * whose attempt is still flying lives on (completed, in cli->in_flight) until
 * that attempt's callback frees it. Thread: the node's context only. */
#include <string.h>

#include "service_int.h"

enum { QUEUED = 1 }; /* start_attempt: no provider now, the call waits */

static void on_reply(weft_msg_t *reply, int err, void *data);

static weft_list_t *list_of(weft_service_client_t *cli, int where) {
  return where == CALL_WAITING ? &cli->waiting : where == CALL_FLYING ? &cli->flying : &cli->done;
}

/* Moves c to the list named by where (CALL_NOWHERE: out of every list). */
static void put(svc_call_t *c, int where) {
  if (c->where != CALL_NOWHERE)
    weft_list_remove(list_of(c->cli, c->where), &c->link);
  c->where = (uint8_t)where;
  if (where != CALL_NOWHERE)
    weft_list_push_back(list_of(c->cli, where), &c->link);
}

static void call_free(svc_call_t *c) {
  weft_msg_free(c->msg);
  weft_msg_free(c->reply);
  weft_free(c->payload);
  weft_free(c);
}

/* The usable provider with the fewest outstanding attempts, scanning from the
 * one after cli->rr; avoid only if another is usable. NULL: none. */
static svc_peer_t *pick(weft_service_client_t *cli, const svc_peer_t *avoid) {
  weft_list_node_t *start = cli->rr ? weft_list_next(&cli->rr->link) : NULL;
  if (start == NULL)
    start = weft_list_first(&cli->peers);
  svc_peer_t *best = NULL, *avoided = NULL;
  weft_list_node_t *l = start;
  do {
    if (l == NULL)
      break;
    svc_peer_t *p = WEFT_LIST_ENTRY(l, svc_peer_t, link);
    if (p->state == PEER_READY && p->port != NULL) {
      if (p == avoid)
        avoided = p;
      else if (best == NULL || p->outstanding < best->outstanding)
        best = p;
    }
    l = weft_list_next(l) ? weft_list_next(l) : weft_list_first(&cli->peers);
  } while (l != start);
  if (best == NULL)
    best = avoided;
  if (best != NULL)
    cli->rr = best;
  return best;
}

static void wait_for_provider(svc_call_t *c) {
  weft_service_client_t *cli = c->cli;
  c->deadline_ns = uv_hrtime() + (uint64_t)cli->opts.wait_ms * 1000000u;
  put(c, CALL_WAITING);
  weft__svc_arm(cli, cli->opts.wait_ms);
}

/* Send c's next attempt: 0 (flying), QUEUED (waiting), or an error of
 * weft_port_request with c->msg still held. */
static int start_attempt(svc_call_t *c) {
  weft_service_client_t *cli = c->cli;
  if (c->msg == NULL) {
    int rc = weft_msg_new(&c->msg);
    if (rc == 0 && c->payload_len > 0)
      rc = weft_msg_set_payload(c->msg, c->payload, c->payload_len);
    if (rc != 0)
      return rc;
  }
  for (;;) {
    svc_peer_t *p = pick(cli, c->peer);
    if (p == NULL) {
      wait_for_provider(c);
      return QUEUED;
    }
    int rc = weft_port_request(p->port, c->msg, on_reply, c, cli->opts.timeout_ms);
    if (rc == 0) {
      c->msg = NULL;
      c->peer = p;
      if (++c->attempts > 1)
        cli->stats.retries++;
      p->outstanding++;
      c->in_flight = true;
      cli->in_flight++;
      put(c, CALL_FLYING);
      return 0;
    }
    if (rc == WEFT_EAGAIN) { /* that provider's channel is full: try again soon */
      c->deadline_ns = uv_hrtime() + (uint64_t)cli->opts.wait_ms * 1000000u;
      put(c, CALL_WAITING);
      weft__svc_arm(cli, 1);
      return QUEUED;
    }
    if (rc != WEFT_ECLOSED)
      return rc;
    weft__svc_forget(p); /* closed under us: its close callback is on its way */
  }
}

/* Calls back the user; frees c unless an attempt is still flying. */
static void complete(svc_call_t *c, weft_msg_t *reply, int err) {
  weft_service_client_t *cli = c->cli;
  c->completed = true;
  cli->outstanding--;
  if (err == 0)
    cli->stats.replies++;
  else
    cli->stats.failures++;
  weft_service_info_t info = {.provider = c->peer ? c->peer->name : NULL,
                              .attempts = c->attempts};
  c->cb(cli, reply, err, &info, c->data);
  if (!c->in_flight)
    call_free(c);
  if (cli->eagain && cli->outstanding * 2 < cli->opts.max_outstanding) {
    cli->eagain = false;
    if (cli->opts.on_drain != NULL && !cli->closing)
      cli->opts.on_drain(cli, cli->opts.data);
  }
}

/* Complete c from the loop (the timer), with err. */
static void complete_later(svc_call_t *c, int err) {
  c->err = err;
  put(c, CALL_DONE);
  weft__svc_arm(c->cli, 0);
}

static bool retryable(int err) {
  return err == WEFT_EPEERDIED || err == WEFT_ECLOSED || err == UV_ETIMEDOUT;
}

static void on_reply(weft_msg_t *reply, int err, void *data) {
  svc_call_t *c = data;
  weft_service_client_t *cli = c->cli;
  c->in_flight = false;
  cli->in_flight--;
  c->peer->outstanding--;
  if (c->completed || c->where == CALL_DONE) { /* cancelled */
    weft_msg_free(reply);
    if (c->completed)
      call_free(c); /* else the timer completes and frees it */
    weft__svc_maybe_free(cli);
    return;
  }
  put(c, CALL_NOWHERE);
  if (err == 0) {
    c->peer->served++;
    complete(c, reply, 0);
    return;
  }
  if ((c->flags & WEFT_SERVICE_IDEMPOTENT) && retryable(err) &&
      c->attempts < cli->opts.max_attempts && !cli->closing) {
    c->err = err;
    int rc = start_attempt(c);
    if (rc == 0 || rc == QUEUED)
      return;
    err = rc;
  }
  complete(c, NULL, err);
}

void weft__svc_dispatch(weft_service_client_t *cli) {
  weft_list_node_t *l;
  while ((l = weft_list_first(&cli->waiting)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    if (pick(cli, NULL) == NULL)
      return;
    put(c, CALL_NOWHERE);
    int rc = start_attempt(c);
    if (rc == QUEUED)
      return;
    if (rc != 0)
      complete_later(c, rc);
  }
}

void weft__svc_tick(weft_service_client_t *cli, uint64_t now) {
  weft_list_node_t *l;
  while ((l = weft_list_first(&cli->waiting)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    if (c->deadline_ns > now)
      break;
    complete_later(c, c->attempts > 0 ? c->err : WEFT_ENOENTRY);
  }
  /* The calls due now, not those their callbacks add. */
  weft_list_node_t *last = weft_list_last(&cli->done);
  while (last != NULL && (l = weft_list_first(&cli->done)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    put(c, CALL_NOWHERE);
    complete(c, NULL, c->err);
    if (l == last)
      break;
  }
  if (!cli->closing)
    weft__svc_dispatch(cli);
  if ((l = weft_list_first(&cli->waiting)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    weft__svc_arm(cli, c->deadline_ns > now ? (c->deadline_ns - now) / 1000000u + 1 : 0);
  }
}

void weft__svc_cancel_all(weft_service_client_t *cli) {
  weft_list_node_t *l;
  while ((l = weft_list_first(&cli->waiting)) != NULL)
    complete_later(WEFT_LIST_ENTRY(l, svc_call_t, link), WEFT_ECANCELED);
  while ((l = weft_list_first(&cli->flying)) != NULL)
    complete_later(WEFT_LIST_ENTRY(l, svc_call_t, link), WEFT_ECANCELED);
}

int weft_service_call(weft_service_client_t *cli, weft_msg_t *req, unsigned flags,
                      weft_service_reply_cb cb, void *data) {
  if (cli == NULL || req == NULL || cb == NULL || (flags & ~WEFT_SERVICE_IDEMPOTENT) != 0)
    return WEFT_EINVAL;
  if (weft_ctx_current() != cli->ctx)
    return WEFT_EWRONGTHREAD;
  if (cli->closing)
    return WEFT_ECLOSED;
  if (cli->outstanding >= cli->opts.max_outstanding) {
    cli->eagain = true;
    return WEFT_EAGAIN;
  }
  bool idem = (flags & WEFT_SERVICE_IDEMPOTENT) != 0;
  if (idem && weft_msg_xfer_count(req) > 0)
    return WEFT_ETRANSFER;
  svc_call_t *c = weft_calloc(1, sizeof(*c));
  if (c == NULL)
    return WEFT_ENOMEM;
  size_t len = 0;
  const void *payload = weft_msg_payload(req, &len);
  if (idem && len > 0) {
    if ((c->payload = weft_malloc(len)) == NULL) {
      weft_free(c);
      return WEFT_ENOMEM;
    }
    memcpy(c->payload, payload, len);
    c->payload_len = len;
  }
  c->cli = cli;
  c->msg = req;
  c->flags = flags;
  c->cb = cb;
  c->data = data;
  int rc = start_attempt(c);
  if (rc != 0 && rc != QUEUED) {
    c->msg = NULL; /* the caller's again */
    call_free(c);
    return rc;
  }
  cli->outstanding++;
  cli->stats.calls++;
  return 0;
}
