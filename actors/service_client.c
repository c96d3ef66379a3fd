/* service_client.c: the client side of services (weft/service.h): its
 * lifecycle and the discovery of providers.
 *
 * Every peer of the node that comes up is looked up for "svc:<name>"; a peer
 * that has it is greeted (HELLO with a notice channel) and becomes usable
 * (READY) on WELCOME. A WITHDRAW notice makes it LEAVING: BYE goes out on
 * the requests' channel, no call is sent to it again, and its answers still
 * come back. Its node going down, its port or its notice channel closing
 * make the client forget it (IDLE, or DOWN); an IDLE peer that is up is
 * looked up again every rescan_ms.
 *
 * Peer records live until the client is freed. The client is freed once it
 * is closing and no lookup, port close or request callback is due, and its
 * timer has closed (no call outlives the close: answers to come are late
 * ones, freed when they arrive, or never read). Thread: the node's context only. */
#include <string.h>

#include "service_int.h"

static const uint32_t LOOKUP_MS = 5000;

static void on_timer(uv_timer_t *t);
static void start_lookup(svc_peer_t *p);

void weft__svc_arm(weft_service_client_t *cli, uint64_t ms) {
  if (cli->timer_closed)
    return;
  uint64_t due = uv_hrtime() + ms * 1000000u;
  if (cli->timer_due_ns != 0 && cli->timer_due_ns <= due)
    return;
  cli->timer_due_ns = due;
  uv_timer_start(&cli->timer, on_timer, ms, 0);
}

/* ---- providers: usable, leaving, forgotten ------------------------------------- */

static void provider_event(svc_peer_t *p, bool up) {
  weft_service_client_t *cli = p->cli;
  if (up)
    cli->stats.providers++;
  else
    cli->stats.providers--;
  if (cli->opts.on_provider != NULL && !cli->closing)
    cli->opts.on_provider(cli, p->name, up, cli->opts.data);
}

void weft__svc_forget(svc_peer_t *p, int reason) {
  weft_service_client_t *cli = p->cli;
  if (p->state == PEER_READY)
    provider_event(p, false);
  bool was_provider = p->state >= PEER_GREETING;
  if (was_provider)
    p->state = PEER_IDLE; /* never picked again while its calls end */
  weft__svc_fail_peer(p, reason);
  /* Their close callbacks come later, maybe after a new greeting has set
   * new ports: they act only on the ports that are still p's. */
  if (p->port != NULL)
    weft_port_close(p->port);
  if (p->notice != NULL)
    weft_port_close(p->notice);
  p->port = p->notice = NULL;
  if (was_provider) {
    p->next_scan_ns = uv_hrtime() + (uint64_t)cli->opts.rescan_ms * 1000000u;
    weft__svc_arm(cli, cli->opts.rescan_ms);
  }
}

/* WITHDRAW: send nothing new; BYE follows every request already sent. Once
 * the last answer is in (at once if none is due), the client closes both
 * channels: the provider knows it is gone. */
static void leave(svc_peer_t *p) {
  if (p->state != PEER_READY)
    return;
  provider_event(p, false);
  p->state = PEER_LEAVING;
  weft_msg_t *m;
  if (weft__svc_msg(WEFT__SVC_BYE, p->cli->token, &m) != 0)
    return; /* the provider waits for the notice channel's close instead */
  if (weft_port_post(p->port, m) != 0) {
    weft_msg_free(m);
    weft__svc_forget(p, WEFT_ECLOSED);
  } else if (p->outstanding == 0) {
    weft__svc_forget(p, WEFT_ECLOSED); /* nothing to wait for: the provider can go */
  }
}

static void on_notice(weft_port_t *port, weft_msg_t *msg) {
  svc_peer_t *p = weft_port_data(port);
  uint64_t token, id;
  if (p->notice != port) { /* a channel forgotten already: nothing on it counts */
    weft_msg_free(msg);
    return;
  }
  int op = weft__svc_trailer_get(msg, &token, &id);
  if (op != 0) { /* an answer, or a drop */
    weft__svc_answer(p, msg, op, id);
    return;
  }
  op = weft__svc_op(msg, &token);
  weft_msg_free(msg);
  if (op == WEFT__SVC_WELCOME && p->state == PEER_GREETING) {
    p->state = PEER_READY;
    provider_event(p, true);
    weft__svc_dispatch(p->cli);
  } else if (op == WEFT__SVC_WITHDRAW) {
    leave(p);
  }
}

/* The reason a channel to a provider closed, for the calls it ends. */
static int close_reason(const weft_port_close_info_t *info) {
  return info != NULL && info->reason != 0 ? info->reason : WEFT_ECLOSED;
}

static void on_notice_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  svc_peer_t *p = weft_port_data(port);
  weft_service_client_t *cli = p->cli;
  cli->open_ports--;
  if (p->notice == port) /* else forgotten already (and maybe greeted again) */
    weft__svc_forget(p, close_reason(info));
  weft__svc_maybe_free(cli);
}

static void on_port_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  svc_peer_t *p = weft_port_data(port);
  weft_service_client_t *cli = p->cli;
  cli->open_ports--;
  if (p->port == port)
    weft__svc_forget(p, close_reason(info));
  weft__svc_maybe_free(cli);
}

/* Takes port (to the provider's actor): HELLO with a notice channel. */
static void greet(svc_peer_t *p, weft_port_t *port) {
  weft_service_client_t *cli = p->cli;
  weft_port_set_data(port, p);
  if (weft_port_on_close(port, on_port_closed) != 0) {
    weft_port_close(port);
    p->state = PEER_GREETING; /* forget makes it IDLE, scanned again */
    weft__svc_forget(p, WEFT_ECLOSED);
    return;
  }
  p->port = port;
  p->state = PEER_GREETING;
  cli->open_ports++;
  weft_port_unref(port);
  weft_port_t *ends[2];
  weft_msg_t *m = NULL;
  if (weft_channel_new(weft_port_ctx(port), ends) != 0) {
    weft__svc_forget(p, WEFT_ECLOSED);
    return;
  }
  weft_port_set_data(ends[0], p);
  int rc = weft_port_on_close(ends[0], on_notice_closed);
  if (rc != 0) {
    weft_port_close(ends[0]);
    weft_port_close(ends[1]);
    weft__svc_forget(p, WEFT_ECLOSED);
    return;
  }
  p->notice = ends[0];
  cli->open_ports++;
  weft_port_unref(ends[0]);
  rc = weft_port_start(ends[0], on_notice);
  if (rc == 0)
    rc = weft__svc_msg(WEFT__SVC_HELLO, cli->token, &m);
  if (rc == 0 && (rc = weft_msg_add_port(m, ends[1])) == 0)
    ends[1] = NULL; /* the message holds it */
  if (rc == 0)
    rc = weft_port_post(port, m);
  if (rc != 0) {
    if (ends[1] != NULL)
      weft_port_close(ends[1]);
    weft_msg_free(m); /* closes ends[1] if it holds it */
    weft__svc_forget(p, WEFT_ECLOSED);
  }
}

/* ---- discovery ------------------------------------------------------------------- */

static void on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  svc_peer_t *p = data;
  weft_service_client_t *cli = p->cli;
  cli->lookups--;
  p->lookup_pending = false;
  if (cli->closing || p->asked_epoch != p->epoch || p->state != PEER_LOOKING) {
    if (port != NULL)
      weft_port_close(port);
    if (!cli->closing && p->state == PEER_IDLE)
      start_lookup(p); /* it went down and came back while we asked */
    weft__svc_maybe_free(cli);
    return;
  }
  if (status != 0) {
    p->state = PEER_IDLE; /* not a provider (yet) */
    p->next_scan_ns = uv_hrtime() + (uint64_t)cli->opts.rescan_ms * 1000000u;
    weft__svc_arm(cli, cli->opts.rescan_ms);
    return;
  }
  greet(p, port);
}

static void start_lookup(svc_peer_t *p) {
  weft_service_client_t *cli = p->cli;
  if (p->lookup_pending || cli->closing)
    return;
  p->state = PEER_LOOKING;
  p->asked_epoch = p->epoch;
  if (weft_node_lookup(cli->node, p->name, cli->pubname, LOOKUP_MS, on_found, p) != 0) {
    p->state = PEER_IDLE;
    p->next_scan_ns = uv_hrtime() + (uint64_t)cli->opts.rescan_ms * 1000000u;
    weft__svc_arm(cli, cli->opts.rescan_ms);
    return;
  }
  p->lookup_pending = true;
  cli->lookups++;
}

static svc_peer_t *find_peer(weft_service_client_t *cli, const char *name) {
  for (weft_list_node_t *l = weft_list_first(&cli->peers); l; l = weft_list_next(l)) {
    svc_peer_t *p = WEFT_LIST_ENTRY(l, svc_peer_t, link);
    if (strcmp(p->name, name) == 0)
      return p;
  }
  return NULL;
}

static void on_watch(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)node;
  (void)reason;
  weft_service_client_t *cli = data;
  if (cli->closing)
    return;
  svc_peer_t *p = find_peer(cli, peer);
  if (p == NULL) {
    if (!up || (p = weft_calloc(1, sizeof(*p))) == NULL)
      return; /* out of memory: that peer is not used */
    p->cli = cli;
    snprintf(p->name, sizeof(p->name), "%s", peer);
    weft_list_push_back(&cli->peers, &p->link);
  }
  if (up) {
    if (p->state == PEER_DOWN) {
      p->state = PEER_IDLE;
      start_lookup(p);
    }
    return;
  }
  p->epoch++;
  weft__svc_forget(p, WEFT_EPEERDIED);
  p->state = PEER_DOWN;
}

static void rescan(weft_service_client_t *cli, uint64_t now) {
  for (weft_list_node_t *l = weft_list_first(&cli->peers); l; l = weft_list_next(l)) {
    svc_peer_t *p = WEFT_LIST_ENTRY(l, svc_peer_t, link);
    if (p->state != PEER_IDLE || p->lookup_pending)
      continue;
    if (p->next_scan_ns <= now)
      start_lookup(p);
    else
      weft__svc_arm(cli, (p->next_scan_ns - now) / 1000000u + 1);
  }
}

static void on_timer(uv_timer_t *t) {
  weft_service_client_t *cli = t->data;
  uint64_t now = uv_hrtime();
  cli->timer_due_ns = 0;
  if (!cli->closing)
    rescan(cli, now);
  weft__svc_tick(cli, now);
  weft__svc_maybe_free(cli);
}

/* ---- the lifecycle ------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h) {
  weft_service_client_t *cli = h->data;
  weft_list_node_t *l;
  while ((l = weft_list_pop_front(&cli->peers)) != NULL)
    weft_free(WEFT_LIST_ENTRY(l, svc_peer_t, link));
  weft__svc_map_free(&cli->calls);
  weft_service_client_close_cb cb = cli->close_cb;
  void *data = cli->close_data;
  if (cb != NULL)
    cb(cli, data);
  weft_free(cli);
}

void weft__svc_maybe_free(weft_service_client_t *cli) {
  if (!cli->closing || cli->timer_closed || cli->lookups > 0 || cli->open_ports > 0 ||
      !weft_list_empty(&cli->waiting) || !weft_list_empty(&cli->ended) ||
      !weft_list_empty(&cli->done))
    return;
  cli->timer_closed = true;
  uv_close((uv_handle_t *)&cli->timer, on_timer_closed);
}

static void set_defaults(weft_service_client_options_t *o) {
  if (o->timeout_ms == 0)
    o->timeout_ms = 5000;
  if (o->max_attempts == 0)
    o->max_attempts = 3;
  if (o->max_outstanding == 0)
    o->max_outstanding = 1024;
  if (o->wait_ms == 0)
    o->wait_ms = o->timeout_ms;
  if (o->rescan_ms == 0)
    o->rescan_ms = 1000;
}

int weft_service_client_new(weft_node_t *node, const weft_service_client_options_t *opts,
                            weft_service_client_t **out) {
  if (node == NULL || opts == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_ctx_t *ctx = weft_ctx_current();
  if (ctx == NULL)
    return WEFT_EWRONGTHREAD;
  weft_service_client_t *cli = weft_calloc(1, sizeof(*cli));
  if (cli == NULL)
    return WEFT_ENOMEM;
  int rc = weft__svc_pubname(opts->service, cli->pubname, sizeof(cli->pubname));
  if (rc != 0)
    goto fail_free;
  cli->node = node;
  cli->ctx = ctx;
  cli->opts = *opts;
  cli->opts.service = cli->pubname + sizeof(WEFT__SVC_PREFIX) - 1;
  set_defaults(&cli->opts);
  rc = uv_random(NULL, NULL, &cli->token, sizeof(cli->token), 0, NULL);
  if (rc != 0)
    goto fail_free;
  rc = weft_node_watch(node, on_watch, cli, &cli->watch);
  if (rc != 0)
    goto fail_free;
  uv_timer_init(weft_ctx_loop(ctx), &cli->timer);
  cli->timer.data = cli;
  uv_unref((uv_handle_t *)&cli->timer);
  *out = cli;
  return 0;

fail_free:
  weft_free(cli);
  return rc;
}

int weft_service_client_close(weft_service_client_t *cli, weft_service_client_close_cb cb,
                              void *data) {
  if (cli == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != cli->ctx)
    return WEFT_EWRONGTHREAD;
  if (cli->closing)
    return WEFT_ECLOSED;
  cli->closing = true;
  cli->close_cb = cb;
  cli->close_data = data;
  weft_node_unwatch(cli->node, cli->watch);
  weft__svc_cancel_all(cli); /* before the forgets: no call is left to retry */
  for (weft_list_node_t *l = weft_list_first(&cli->peers); l; l = weft_list_next(l))
    weft__svc_forget(WEFT_LIST_ENTRY(l, svc_peer_t, link), WEFT_ECANCELED);
  weft__svc_arm(cli, 0); /* completes the calls, then frees */
  return 0;
}

int weft_service_client_stats(const weft_service_client_t *cli,
                              weft_service_client_stats_t *out) {
  if (cli == NULL || out == NULL)
    return WEFT_EINVAL;
  *out = cli->stats;
  out->outstanding = cli->outstanding;
  return 0;
}
