/* balancer.c: the balancer side (weft/balancer.h): its lifecycle (new,
 * close, reload, drain), instances, messages from workers, supervisor
 * callbacks, listeners, public accessors and stats. The hand-off (picking a
 * worker, sending, in flight, pending, its own accept polls) is in
 * balancer_handoff.c, the worker side in balancer_worker.c, sockets and
 * protocol messages in balancer_sock.c (balancer_int.h).
 *
 * The balancer owns the listening sockets for its whole life, a supervisor
 * (one_for_one) whose children are the workers, and one `place` (slot) per
 * worker. A slot's current instance is the worker that gets its share; during
 * a reload a second, incoming instance waits for READY, then takes the slot
 * and the old one drains. An instance is 1:1 with a supervisor child and
 * lives across that child's restarts; its counts are folded into the slot at
 * every exit.
 *
 * Hand-off: each connection handed over is duplicated first; the duplicate
 * sits in the instance's in-flight ring until a STATUS acknowledges it (then
 * it is closed) or the worker exits (then the duplicate, i.e. the connection,
 * goes to another worker). Connections nobody can take wait in `pending`
 * and the balancer stops accepting until a worker is available; the kernel's
 * backlog holds the rest.
 *
 * Worker threads of round robin, least connections and shared accept from
 * the one listener themselves through the gate (balancer_gate.c), whose
 * table and eventfds the balancer makes, and whose entries it hands out (one
 * per worker run) and takes back when a worker exits.
 *
 * Which listeners the balancer itself polls: round robin and least
 * connections with worker processes: its one listener, while some worker is
 * available; reuseport: a slot's listener while that slot has no available
 * worker (and another has); the gated policies and shared: none (workers
 * accept).
 *
 * Threads: the balancer's context thread only. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer_int.h"

static void reload_step(weft_balancer_t *b);
static void reload_done(weft_balancer_t *b, int err);
static void maybe_finish_close(weft_balancer_t *b);
static void stop_listening(weft_balancer_t *b);

/* ---- instances ----------------------------------------------------------------- */

/* Stop giving in connections, tell it to drain, and have the supervisor
 * remove it when it exits (or stop it at the deadline). May free in. */
static void drain_inst(inst_t *in) {
  weft_balancer_t *b = in->b;
  in->draining = true;
  weft_msg_t *m;
  if (inst_port(in) && weft__bal_msg(WEFT__BAL_DRAIN, false, -1, &m) == 0 &&
      weft_port_post(inst_port(in), m) != 0)
    weft_msg_free(m);
  uint32_t grace = b->opts.drain_timeout_ms ? b->opts.drain_timeout_ms : 10000;
  weft_sup_stop_child(in->child, in->ready ? grace : 0);
}

static inst_t *inst_new(weft_balancer_t *b, slot_t *s) {
  inst_t *in = weft_calloc(1, sizeof(*in));
  if (in) {
    in->b = b;
    in->slot = s;
    in->gate = -1;
    b->insts++;
  }
  return in;
}

static void inst_free(inst_t *in) {
  weft_balancer_t *b = in->b;
  slot_t *s = in->slot;
  if (s->cur == in)
    s->cur = NULL;
  if (s->incoming == in)
    s->incoming = NULL;
  weft_free(in->fl);
  weft_free(in);
  b->insts--;
}

/* ---- messages from workers --------------------------------------------------- */

static void tell_ready(weft_balancer_t *b) {
  if (b->ready_told)
    return;
  for (size_t i = 0; i < b->nslots; i++)
    if (b->slots[i].cur == NULL || !b->slots[i].cur->ready)
      return;
  b->ready_told = true;
  if (b->opts.on_ready)
    b->opts.on_ready(b);
}

static void on_ready(inst_t *in) {
  weft_balancer_t *b = in->b;
  slot_t *s = in->slot;
  in->ready = true;
  inst_t *old = NULL;
  bool took = s->incoming == in;
  if (took) {  /* reload: the new one takes the slot */
    old = s->cur;
    s->cur = in;
    s->incoming = NULL;
    b->reload_old = old;
  }
  weft__bal_flush_pending(b);
  weft__bal_update_polls(b);
  tell_ready(b);
  /* Only the incoming worker moves the reload on: the current one of the
   * slot being reloaded may report ready meanwhile too (it was still
   * starting, or restarted after a crash), and must not start another. */
  if (old)
    drain_inst(old);
  else if (took && b->reloading && s == &b->slots[b->reload_i])
    reload_step(b);  /* the slot was empty: nothing to drain */
}

static void on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  weft_sup_child_t *c = weft_sup_child_from_port(port);
  inst_t *in = weft_sup_child_data(c);
  if (in == NULL) {  /* a late message from a worker already removed */
    weft_msg_free(m);
    return;
  }
  switch (weft__bal_op(m)) {
  case WEFT__BAL_READY:
    if (in->port == port)
      on_ready(in);
    break;
  case WEFT__BAL_STATUS:
    if (in->port == port)
      weft__bal_on_status(in, m);
    break;
  case 0:
    if (in->b->opts.worker.on_message) {
      in->b->opts.worker.on_message(port, m);
      return;
    }
    break;
  default:
    break;
  }
  weft_msg_free(m);
}

/* ---- supervisor callbacks ------------------------------------------------------ */

/* A worker without its HELLO would never get ready: stop it as failed, so
 * that the supervisor restarts it (with back-off, within its limits). */
static void fail_child(weft_sup_child_t *c) {
  weft_worker_t *w = weft_sup_child_worker(c);
  weft_child_t *p = weft_sup_child_process(c);
  if (w != NULL)
    weft_worker_terminate(w);
  else if (p != NULL)
    weft_child_kill(p, SIGTERM);
}

static void on_child_start(weft_sup_t *sup, weft_sup_child_t *c) {
  weft_balancer_t *b = weft_sup_data(sup);
  inst_t *in = weft_sup_child_data(c);
  in->child = c;
  in->port = weft_sup_child_port(c);
  in->ready = in->full = false;
  in->slot->starts++;
  if (in->port == NULL)
    return;
  weft_port_on_drain(in->port, weft__bal_on_port_drain);
  int lfd = -1;
  if (b->opts.policy == WEFT_BALANCER_SHARED || b->gate)
    lfd = weft__bal_dup(b->lis[0].fd);
  else if (b->opts.policy == WEFT_BALANCER_REUSEPORT)
    lfd = weft__bal_dup(b->lis[in->slot->lis].fd);
  bool listens = lfd >= 0 || b->opts.policy == WEFT_BALANCER_REUSEPORT ||
                 b->opts.policy == WEFT_BALANCER_SHARED;
  int gate = b->gate && lfd >= 0 ? weft__bal_gate_claim(in) : -1;
  weft_msg_t *m;
  int err = listens && lfd < 0 ? lfd
            : gate >= 0 ? weft__bal_hello(b->pipe, lfd, b->gate, (size_t)gate, &m)
                        : weft__bal_msg(WEFT__BAL_HELLO, b->pipe, lfd, &m);
  if (err == 0 && (err = weft_port_post(in->port, m)) != 0)
    weft_msg_free(m);  /* closes the duplicate */
  else if (err && lfd >= 0)
    close(lfd);
  if (err)
    fail_child(c);
}

/* The supervisor is giving up (this exit broke its limit): stop serving now,
 * not once every worker stopped. The listeners close, so new clients are
 * refused instead of waiting in a queue that nobody accepts from; what waits
 * for a worker and what the dead ones had not taken is closed. */
static void begin_give_up(weft_balancer_t *b) {
  b->gave_up = true;
  stop_listening(b);
  weft__bal_drop_pending(b);
  if (b->reloading)
    reload_done(b, WEFT_EGAVEUP);
}

static void on_child_exit(weft_sup_t *sup, weft_sup_child_t *c, const weft_sup_exit_t *why,
                          bool final) {
  weft_balancer_t *b = weft_sup_data(sup);
  inst_t *in = weft_sup_child_data(c);
  if (!b->gave_up && weft_sup_gave_up(sup))
    begin_give_up(b);
  weft__bal_inst_down(in);
  if (b->opts.on_worker_exit && !b->quiet)
    b->opts.on_worker_exit(b, (size_t)(in->slot - b->slots), why);
  if (final) {
    bool was_old = b->reload_old == in;
    if (was_old)
      b->reload_old = NULL;
    inst_free(in);
    if (was_old && b->reloading) {
      b->reload_i++;
      reload_step(b);
    }
  }
  weft__bal_update_polls(b);
  maybe_finish_close(b);
}

/* Every worker has stopped: report (or, with no one to report to, close). */
static void on_give_up(weft_sup_t *sup, const weft_sup_exit_t *last) {
  weft_balancer_t *b = weft_sup_data(sup);
  if (!b->gave_up)
    begin_give_up(b);
  if (b->quiet || b->closing)
    return;
  if (b->opts.on_give_up)
    b->opts.on_give_up(b, WEFT_EGAVEUP, last);
  else
    weft_balancer_close(b, NULL);
}

/* ---- listeners ------------------------------------------------------------------- */

/* The balancer goes once it is closing, its supervisor has closed and every
 * listener's poll handle has closed, whichever comes last. */
static void maybe_free(weft_balancer_t *b) {
  if (!b->closing || b->sup != NULL || b->handles > 0)
    return;
  if (b->close_cb && !b->quiet)
    b->close_cb(b);
  weft_metrics_source_free(b->metrics);
  weft__gate_free(b->gate);
  weft_free(b->gate_owner);
  weft_free(b->lis);
  weft_free(b->slots);
  weft_free(b->pending);
  weft_free(b);
}

static void on_poll_closed(uv_handle_t *h) {
  listener_t *l = h->data;
  l->b->handles--;
  maybe_free(l->b);
}

/* Closes every listener (once), now: uv_close stops the poll at once, so the
 * fd may go before the close callback (it was the last reference unless a
 * shared or reuseport worker still holds a duplicate). With the gate, the
 * socket is shut down first: it stops listening at once although worker
 * threads still hold duplicates until their DRAIN (new clients are refused,
 * what waited in its queue is reset; the workers see the hang-up and stop
 * accepting). A Unix socket's path goes too. */
static void stop_listening(weft_balancer_t *b) {
  if (b->lis_closed)
    return;
  b->lis_closed = true;
  for (size_t i = 0; i < b->nlis; i++) {
    listener_t *l = &b->lis[i];
    l->polling = false;
    uv_close((uv_handle_t *)&l->poll, on_poll_closed);
    if (b->gate)  /* gated workers hold duplicates: stop the socket itself */
      shutdown(l->fd, SHUT_RD);
    close(l->fd);
    l->fd = -1;
  }
  if (b->opts.path && b->nlis > 0)
    unlink(b->opts.path);
}

/* Reuseport: once every listener listens, an eBPF program in the group hands
 * connections to them in turn (balancer_bpf.c); if the process may not load
 * one, or the option turns it off, the kernel's hash spreads them as before.
 * The group stays as it is while the balancer serves: its listeners are only
 * closed by stop_listening, and each one is always accepted from (by its
 * worker, or by the balancer's poll while that worker is away), so a turn
 * never names a socket nobody accepts from. Once they close, their turns
 * find no socket and fall back to the hash over those still open. */
static void steer(weft_balancer_t *b) {
  const char *why = b->opts.policy != WEFT_BALANCER_REUSEPORT ? "not the reuseport policy"
                    : b->opts.reuseport_hash ? "turned off (reuseport_hash)"
                                             : NULL;
  if (why == NULL)
    b->steered = weft__bal_steer(b->lis, b->nlis, b->steer_why, sizeof(b->steer_why)) == 0;
  else
    snprintf(b->steer_why, sizeof(b->steer_why), "%s", why);
}

static int open_listeners(weft_balancer_t *b) {
  bool rp = b->opts.policy == WEFT_BALANCER_REUSEPORT;
  if (rp && b->opts.path)
    return UV_ENOTSUP;
  size_t n = rp ? b->nslots : 1;
  b->lis = weft_calloc(n, sizeof(*b->lis));
  if (b->lis == NULL)
    return WEFT_ENOMEM;
  int err = 0, port = b->opts.port;
  size_t i;
  for (i = 0; i < n; i++) {
    listener_t *l = &b->lis[i];
    l->b = b;
    err = weft__bal_listen(&b->opts, port, rp, &l->fd, &port);
    if (err)
      break;
    if ((err = uv_poll_init_socket(b->loop, &l->poll, l->fd)) != 0) {
      close(l->fd);
      break;
    }
    l->poll.data = l;
    b->handles++;
    if (rp) {
      l->slot = &b->slots[i];
      b->slots[i].lis = (int)i;
    }
  }
  b->port = port;
  b->nlis = i;
  if (err == 0)
    steer(b);
  return err;
}

/* Worker threads of every policy but reuseport accept from the one listener
 * through a gate (balancer_gate.c), 2 entries per place (a reload's old and
 * new worker of one place). Worker processes have no memory in common with
 * us: round robin and least connections hand their connections over, shared
 * ones accept as they wake. */
static int open_gate(weft_balancer_t *b) {
  if (b->opts.policy == WEFT_BALANCER_REUSEPORT || b->opts.worker.kind != WEFT_SUP_THREAD)
    return 0;
  b->gate_owner = weft_calloc(2 * b->nslots, sizeof(*b->gate_owner));
  if (b->gate_owner == NULL)
    return WEFT_ENOMEM;
  unsigned mode = b->opts.policy == WEFT_BALANCER_ROUND_ROBIN ? WEFT__GATE_ACCEPTED
                                                              : WEFT__GATE_OPEN;
  return weft__gate_new(2 * b->nslots, mode, &b->gate);
}

/* ---- reload and close ------------------------------------------------------------- */

static void reload_done(weft_balancer_t *b, int err) {
  b->reloading = false;
  if (b->reload_cb)
    b->reload_cb(b, err);
}

static void reload_step(weft_balancer_t *b) {
  while (b->reload_i < b->nslots && b->slots[b->reload_i].cur == NULL)
    b->reload_i++;
  if (b->reload_i >= b->nslots) {
    reload_done(b, 0);
    return;
  }
  slot_t *s = &b->slots[b->reload_i];
  inst_t *in = inst_new(b, s);
  if (in == NULL) {
    reload_done(b, WEFT_ENOMEM);
    return;
  }
  s->incoming = in;
  weft_sup_child_spec_t spec = b->opts.worker;
  spec.on_message = on_worker_msg;
  spec.data = in;
  int err = weft_sup_start_child(b->sup, &spec, NULL);
  if (err) {
    inst_free(in);
    reload_done(b, err);
  }
}

static void on_sup_closed(weft_sup_t *sup) {
  weft_balancer_t *b = weft_sup_data(sup);
  b->sup = NULL;
  stop_listening(b);
  maybe_free(b);
}

static void maybe_finish_close(weft_balancer_t *b) {
  if (b->closing && b->insts == 0 && b->sup != NULL)
    weft_sup_close(b->sup, on_sup_closed);
}

/* ---- public ------------------------------------------------------------------------ */

static void free_new(weft_balancer_t *b) {
  for (size_t i = 0; i < b->nslots; i++)
    weft_free(b->slots[i].cur);
  b->quiet = true;
  b->closing = true;
  stop_listening(b);
  maybe_free(b);
}

int weft_balancer_new(weft_ctx_t *ctx, const weft_balancer_options_t *opts, weft_balancer_t **out) {
  if (ctx == NULL || opts == NULL || out == NULL || opts->policy > WEFT_BALANCER_SHARED)
    return WEFT_EINVAL;
  if (weft_ctx_current() != ctx)
    return WEFT_EWRONGTHREAD;
  weft_balancer_t *b = weft_calloc(1, sizeof(*b));
  if (b == NULL)
    return WEFT_ENOMEM;
  b->ctx = ctx;
  b->loop = weft_ctx_loop(ctx);
  b->opts = *opts;
  b->pipe = opts->path != NULL;
  b->nslots = opts->workers ? opts->workers : weft_available_parallelism();
  b->slots = weft_calloc(b->nslots, sizeof(*b->slots));
  weft_sup_child_spec_t *specs = weft_calloc(b->nslots, sizeof(*specs));
  int err = b->slots && specs ? 0 : WEFT_ENOMEM;
  for (size_t i = 0; err == 0 && i < b->nslots; i++) {
    b->slots[i].lis = -1;
    if ((b->slots[i].cur = inst_new(b, &b->slots[i])) == NULL)
      err = WEFT_ENOMEM;
    specs[i] = opts->worker;
    specs[i].on_message = on_worker_msg;
    specs[i].data = b->slots[i].cur;
  }
  if (err == 0)
    err = open_listeners(b);
  if (err == 0)
    err = open_gate(b);
  if (err == 0) {
    weft_sup_options_t so = {
        .strategy = WEFT_SUP_ONE_FOR_ONE,
        .limits = opts->limits,
        .children = specs,
        .nchildren = b->nslots,
        .on_child_start = on_child_start,
        .on_child_exit = on_child_exit,
        .on_give_up = on_give_up,
        .data = b,
    };
    err = weft_sup_new(ctx, &so, &b->sup);
  }
  weft_free(specs);
  if (err) {
    if (b->slots == NULL) {
      weft_free(b);
      return err;
    }
    free_new(b);
    return err;
  }
  *out = b;
  weft__bal_update_polls(b);
  weft__bal_metrics_start(b);
  return 0;
}

int weft_balancer_close(weft_balancer_t *b, weft_balancer_cb cb) {
  if (b == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != b->ctx)
    return WEFT_EWRONGTHREAD;
  if (b->closing)
    return 0;
  /* Hand out what already waits in the round-robin accept queue, then stop
   * listening: new clients are refused at once rather than queued until the
   * drain deadline. (Shared and reuseport workers close their duplicates when
   * their DRAIN arrives.) */
  weft__bal_accept_queued(b);
  b->closing = true;
  b->close_cb = cb;
  stop_listening(b);
  if (b->reloading)
    reload_done(b, WEFT_ECANCELED);
  weft__bal_drop_pending(b);
  for (size_t i = 0; i < b->nslots; i++) {
    slot_t *s = &b->slots[i];
    inst_t *cur = s->cur, *inc = s->incoming;
    if (inc)
      drain_inst(inc);
    if (cur && !cur->draining)
      drain_inst(cur);
  }
  if (b->reload_old && !b->reload_old->draining)
    drain_inst(b->reload_old);
  maybe_finish_close(b);
  return 0;
}

int weft_balancer_reload(weft_balancer_t *b, weft_balancer_reload_cb cb) {
  if (b == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != b->ctx)
    return WEFT_EWRONGTHREAD;
  if (b->closing)
    return WEFT_ECLOSED;
  if (b->gave_up)
    return WEFT_EGAVEUP;
  if (b->reloading)
    return WEFT_EBUSY;
  b->reloading = true;
  b->reload_i = 0;
  b->reload_cb = cb;
  reload_step(b);
  return 0;
}

int weft_balancer_drain_worker(weft_balancer_t *b, size_t i) {
  if (b == NULL || i >= b->nslots)
    return WEFT_EINVAL;
  if (weft_ctx_current() != b->ctx)
    return WEFT_EWRONGTHREAD;
  inst_t *in = b->slots[i].cur;
  if (in == NULL || in->draining)
    return WEFT_ENOENT;
  drain_inst(in);
  weft__bal_update_polls(b);
  return 0;
}

size_t weft_balancer_workers(const weft_balancer_t *b) { return b ? b->nslots : 0; }

static void add_inst(weft_balancer_stats_t *st, const inst_t *in) {
  st->connections += in->sent + in->accepted;
  st->open += open_of(in);
  st->requests += in->reqs;
}

int weft_balancer_stats(const weft_balancer_t *b, size_t i, weft_balancer_stats_t *out) {
  if (b == NULL || out == NULL || i >= b->nslots)
    return WEFT_EINVAL;
  if (weft_ctx_current() != b->ctx)
    return WEFT_EWRONGTHREAD;
  const slot_t *s = &b->slots[i];
  memset(out, 0, sizeof(*out));
  out->starts = s->starts;
  out->connections = s->conns;
  out->requests = s->reqs;
  out->rehanded = s->rehanded;
  const inst_t *live[3] = {s->cur, s->incoming,
                           b->reload_old && b->reload_old->slot == s ? b->reload_old : NULL};
  for (int k = 0; k < 3; k++)
    if (live[k])
      add_inst(out, live[k]);
  if (s->cur) {
    out->running = inst_port(s->cur) != NULL;
    out->ready = s->cur->ready;
    out->draining = s->cur->draining;
    out->pid = weft_sup_child_pid(s->cur->child);
  }
  return 0;
}

int weft_balancer_port(const weft_balancer_t *b) { return b ? b->port : 0; }
uint64_t weft_balancer_accepted(const weft_balancer_t *b) { return b ? b->accepted : 0; }
bool weft_balancer_listening(const weft_balancer_t *b) { return b && !b->lis_closed; }
bool weft_balancer_gave_up(const weft_balancer_t *b) { return b && b->gave_up; }
bool weft_balancer_steered(const weft_balancer_t *b) { return b && b->steered; }
const char *weft_balancer_steer_reason(const weft_balancer_t *b) {
  return b == NULL ? "no balancer" : b->steered ? NULL : b->steer_why;
}
weft_sup_t *weft_balancer_supervisor(const weft_balancer_t *b) { return b ? b->sup : NULL; }
void *weft_balancer_data(const weft_balancer_t *b) { return b ? b->opts.data : NULL; }
