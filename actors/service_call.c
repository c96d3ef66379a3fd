/* service_call.c: the client side's calls (weft/service.h).
 *
 * A call is in one of four places: waiting (no provider usable yet; in
 * cli->waiting, with a deadline), flying (an attempt is out: in its
 * provider's p->calls, oldest first, and in cli->calls under the attempt's
 * id, until its answer, a drop, its deadline or the provider's loss),
 * ended (the provider was lost: in cli->ended, to be retried or completed
 * from the loop) or done (to complete from the loop; in cli->done). Each
 * attempt goes to the usable provider with the fewest attempts outstanding
 * from this client, the scan starting after the one picked last (ties: round
 * robin), and avoiding the provider of the previous attempt when another is
 * usable. An attempt is the user's message with a trailer (service_int.h)
 * posted on the provider's long-lived port; its answer comes back on the
 * notice channel, found by id. An answer whose id is not (or no longer) in
 * cli->calls is late: it is freed.
 *
 * Invariants: the user's callback runs exactly once per accepted call, from
 * the loop (an answer on a notice channel or the timer), never inside
 * weft_service_call; cli->outstanding counts calls accepted and not
 * completed; every attempt's deadline is timeout_ms after it was sent, so
 * each p->calls is in deadline order. Thread: the node's context only. */
#include <string.h>

#include "service_int.h"

enum { QUEUED = 1 }; /* start_attempt: no provider now, the call waits */

static weft_list_t *list_of(svc_call_t *c, int where) {
  weft_service_client_t *cli = c->cli;
  return where == CALL_WAITING  ? &cli->waiting
         : where == CALL_FLYING ? &c->peer->calls
         : where == CALL_ENDED  ? &cli->ended
                                : &cli->done;
}

/* Moves c to the list named by where (CALL_NOWHERE: out of every list). */
static void put(svc_call_t *c, int where) {
  if (c->where != CALL_NOWHERE)
    weft_list_remove(list_of(c, c->where), &c->link);
  c->where = (uint8_t)where;
  if (where != CALL_NOWHERE)
    weft_list_push_back(list_of(c, where), &c->link);
}

static void call_free(svc_call_t *c) {
  weft_msg_free(c->msg);
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

static void wait_for_provider(svc_call_t *c, uint64_t arm_ms) {
  weft_service_client_t *cli = c->cli;
  c->deadline_ns = uv_hrtime() + (uint64_t)cli->opts.wait_ms * 1000000u;
  put(c, CALL_WAITING);
  weft__svc_arm(cli, arm_ms);
}

/* Posts c->msg to p with the trailer of a new attempt: 0, or the post's
 * error with c->msg as it was (its trailer taken off again). */
static int post_attempt(svc_call_t *c, svc_peer_t *p) {
  weft_service_client_t *cli = c->cli;
  uint64_t id = ++cli->next_id;
  int rc = weft__svc_trailer_add(c->msg, WEFT__SVC_CALL, cli->token, id);
  if (rc == 0)
    rc = weft__svc_map_put(&cli->calls, id, c);
  if (rc == 0 && (rc = weft_port_post(p->port, c->msg)) != 0)
    weft__svc_map_del(&cli->calls, id);
  if (rc != 0) {
    weft__svc_trailer_strip(c->msg);
    return rc;
  }
  c->msg = NULL;
  c->id = id;
  return 0;
}

/* Send c's next attempt: 0 (flying), QUEUED (waiting), or an error of
 * weft_port_post with c->msg still held. */
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
      wait_for_provider(c, cli->opts.wait_ms);
      return QUEUED;
    }
    int rc = post_attempt(c, p);
    if (rc == 0) {
      c->peer = p;
      if (++c->attempts > 1)
        cli->stats.retries++;
      p->outstanding++;
      c->deadline_ns = uv_hrtime() + (uint64_t)cli->opts.timeout_ms * 1000000u;
      put(c, CALL_FLYING);
      weft__svc_arm(cli, cli->opts.timeout_ms);
      return 0;
    }
    if (rc == WEFT_EAGAIN) { /* that provider's channel is full: try again soon */
      wait_for_provider(c, 1);
      return QUEUED;
    }
    if (rc != WEFT_ECLOSED)
      return rc;
    weft__svc_forget(p, WEFT_ECLOSED); /* closed under us: its close callback is on its way */
  }
}

/* Calls back the user and frees c. */
static void complete(svc_call_t *c, weft_msg_t *reply, int err) {
  weft_service_client_t *cli = c->cli;
  cli->outstanding--;
  if (err == 0)
    cli->stats.replies++;
  else
    cli->stats.failures++;
  weft_service_info_t info = {.provider = c->peer ? c->peer->name : NULL,
                              .attempts = c->attempts};
  c->cb(cli, reply, err, &info, c->data);
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

/* The flying attempt of c is over (it leaves its provider). A provider
 * leaving (withdraw) is let go once it has answered every call. */
static void attempt_over(svc_call_t *c) {
  svc_peer_t *p = c->peer;
  weft__svc_map_del(&c->cli->calls, c->id);
  c->id = 0;
  p->outstanding--;
  put(c, CALL_NOWHERE);
  if (p->state == PEER_LEAVING && p->outstanding == 0)
    weft__svc_forget(p, WEFT_ECLOSED);
}

static bool retryable(int err) {
  return err == WEFT_EPEERDIED || err == WEFT_ECLOSED || err == UV_ETIMEDOUT;
}

/* c's attempt ended with err (0: reply): complete it, or try again. Called
 * from the loop. */
static void attempt_ended(svc_call_t *c, weft_msg_t *reply, int err) {
  weft_service_client_t *cli = c->cli;
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

void weft__svc_answer(svc_peer_t *p, weft_msg_t *msg, int op, uint64_t id) {
  svc_call_t *c = weft__svc_map_get(&p->cli->calls, id);
  if (c == NULL || c->peer != p || op == WEFT__SVC_CALL) { /* late, or not ours */
    weft_msg_free(msg);
    return;
  }
  attempt_over(c);
  if (op == WEFT__SVC_DROP) {
    weft_msg_free(msg);
    attempt_ended(c, NULL, WEFT_ECLOSED);
    return;
  }
  weft__svc_trailer_strip(msg);
  attempt_ended(c, msg, 0);
}

void weft__svc_fail_peer(svc_peer_t *p, int reason) {
  weft_list_node_t *l;
  while ((l = weft_list_first(&p->calls)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    attempt_over(c);
    c->err = reason;
    put(c, CALL_ENDED);
  }
  weft__svc_arm(p->cli, 0);
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

/* The attempts past their deadline end with UV_ETIMEDOUT; those ended by
 * their provider's loss end with their reason. Only those due now: a retry
 * lands at the tail, with a later deadline. */
static void end_attempts(weft_service_client_t *cli, uint64_t now) {
  for (weft_list_node_t *pl = weft_list_first(&cli->peers); pl; pl = weft_list_next(pl)) {
    svc_peer_t *p = WEFT_LIST_ENTRY(pl, svc_peer_t, link);
    weft_list_node_t *l;
    while ((l = weft_list_first(&p->calls)) != NULL) {
      svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
      if (c->deadline_ns > now) {
        weft__svc_arm(cli, (c->deadline_ns - now) / 1000000u + 1);
        break;
      }
      attempt_over(c);
      attempt_ended(c, NULL, UV_ETIMEDOUT);
    }
  }
  weft_list_node_t *l, *last = weft_list_last(&cli->ended);
  while (last != NULL && (l = weft_list_first(&cli->ended)) != NULL) {
    svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
    put(c, CALL_NOWHERE);
    attempt_ended(c, NULL, c->err);
    if (l == last)
      break;
  }
}

void weft__svc_tick(weft_service_client_t *cli, uint64_t now) {
  weft_list_node_t *l;
  if (!cli->closing)
    end_attempts(cli, now);
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
  while ((l = weft_list_first(&cli->ended)) != NULL)
    complete_later(WEFT_LIST_ENTRY(l, svc_call_t, link), WEFT_ECANCELED);
  for (weft_list_node_t *pl = weft_list_first(&cli->peers); pl; pl = weft_list_next(pl)) {
    svc_peer_t *p = WEFT_LIST_ENTRY(pl, svc_peer_t, link);
    while ((l = weft_list_first(&p->calls)) != NULL) {
      svc_call_t *c = WEFT_LIST_ENTRY(l, svc_call_t, link);
      attempt_over(c);
      complete_later(c, WEFT_ECANCELED);
    }
  }
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
