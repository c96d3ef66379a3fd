/* supervisor.c: supervisors (include/weft/supervisor.h), written against the
 * public API only. The tree, the strategies, the public entry points and a
 * child's event callbacks; one child's start and stop, and what its exit
 * events mean, are in supervisor_child.c, the verdict on an exit (restart,
 * intensity, back-off) in supervisor_restart.c. Those files return their
 * decisions; the acting on them (notify, restart, group, give up) is here.
 *
 * A supervisor is a list of children in start order and a small state
 * machine, `advance`, run after every event: while a group is being stopped
 * (one_for_all / rest_for_one restart, give-up, close) it stops one running
 * child at a time, last in the list first, waiting for each exit; once the
 * group is down it arms the group restart timer, calls on_give_up, or
 * finishes the close. A one_for_one restart uses the child's own timer.
 * Invariants: see supervisor_int.h. The supervisor's memory is freed only in
 * the close callback of its group timer; a nested supervisor then reports to
 * its parent.
 *
 * Threads: the supervisor's context thread only (the worker, child and nested
 * supervisor callbacks all arrive there). */
#include <stddef.h>

#include "supervisor_int.h"

static void child_exited(weft_sup_child_t *c, int64_t code, int sig, int err);
static void advance(weft_sup_t *s);

static void on_timer_closed(uv_handle_t *h) {
  weft_sup_t *s = (weft_sup_t *)((char *)h - offsetof(weft_sup_t, timer));
  if (s->close_cb && !s->quiet)
    s->close_cb(s);
  weft_sup_child_t *parent = s->parent;
  bool gave_up = s->gave_up;
  weft_free(s->times);
  weft_free(s);
  if (parent) {  /* the nested child exits, with WEFT_EGAVEUP if it gave up
                    (its own on_give_up had the child's reason) */
    parent->nested = NULL;
    child_exited(parent, gave_up ? 1 : 0, 0, gave_up ? WEFT_EGAVEUP : 0);
  }
}

/* ---- the state machine ------------------------------------------------------- */

static void on_group_timer(uv_timer_t *t) {
  weft_sup_t *s = (weft_sup_t *)((char *)t - offsetof(weft_sup_t, timer));
  s->phase = PH_NORMAL;
  bool failed = false;
  for (weft_sup_child_t *c = weft__sup_first(s); c; c = weft__sup_next(c)) {
    if (!c->in_group)
      continue;
    c->in_group = false;
    c->start_err = weft__sup_start_child(c);
    failed |= c->start_err != 0;
  }
  while (failed) {  /* report each failed start; the list may change under us */
    failed = false;
    for (weft_sup_child_t *c = weft__sup_first(s); c; c = weft__sup_next(c)) {
      if (c->start_err && c->state == ST_IDLE) {
        int err = c->start_err;
        c->start_err = 0;
        child_exited(c, 1, 0, err);
        failed = true;
        break;
      }
    }
  }
}

static void finish_close(weft_sup_t *s) {
  s->phase = PH_CLOSING + 1;  /* done: nothing more happens */
  uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

/* The state machine, run after every event: while a group is being stopped
 * it stops the next running child (last first); once the group is down it
 * arms the group restart, gives up or finishes the close. */
static void advance(weft_sup_t *s) {
  bool all = s->phase == PH_GIVING_UP || s->phase == PH_CLOSING;
  if (!all && s->phase != PH_GROUP)
    return;
  weft_sup_child_t *victim = NULL;
  for (weft_sup_child_t *c = weft__sup_last(s); c; c = weft__sup_prev(c)) {
    if (c->state == ST_STOPPING)
      return;  /* one at a time */
    if (victim == NULL && c->state == ST_RUNNING && (all || c->in_group))
      victim = c;
  }
  if (victim) {
    weft__sup_stop_now(victim);
    return;
  }
  if (s->phase == PH_GROUP) {
    uv_timer_start(&s->timer, on_group_timer, s->group_delay, 0);
    return;
  }
  if (s->phase == PH_GIVING_UP) {
    s->phase = PH_GAVE_UP;
    s->gave_up = true;
    for (weft_sup_child_t *c = weft__sup_first(s); c; c = weft__sup_next(c)) {
      c->in_group = false;
      weft__sup_cancel_restart(c);
    }
    if (s->opts.on_give_up && !s->quiet)
      s->opts.on_give_up(s, &s->last);
    if (s->parent)
      weft_sup_close(s, NULL);
    return;
  }
  /* PH_CLOSING with no child left running: remove the idle ones, then go. */
  while (!weft_list_empty(&s->children)) {
    weft_sup_child_t *c = weft__sup_first(s);
    weft_sup_exit_t e = {.stopped = true, .time_ms = uv_now(s->loop)};
    weft__sup_describe(&e);
    weft__sup_remove_child(c, &e);
  }
  finish_close(s);
}

/* ---- exits: acting on the verdict ------------------------------------------- */

/* The group a one_for_all / rest_for_one restart stops and starts again. */
static void mark_group(weft_sup_t *s, weft_sup_child_t *from) {
  weft_sup_child_t *c = s->opts.strategy == WEFT_SUP_ONE_FOR_ALL ? weft__sup_first(s) : from;
  for (; c; c = weft__sup_next(c)) {
    c->in_group = true;
    weft__sup_cancel_restart(c);  /* a pending one_for_one-style restart joins the group */
  }
}

static void act(weft_sup_child_t *c, weft__sup_verdict_t v, const weft_sup_exit_t *e) {
  weft_sup_t *s = c->sup;
  if (v == WEFT__SUP_REMOVE) {
    weft__sup_remove_child(c, e);
    return;
  }
  if (v == WEFT__SUP_GIVE_UP) {
    /* Giving up from now on: on_child_exit sees weft_sup_gave_up() true for
     * the exit that broke the limit, so that the program can stop serving at
     * once rather than after every child stopped. */
    s->last = *e;
    s->phase = PH_GIVING_UP;
  }
  weft__sup_notify_exit(c, e, false);
  if ((v != WEFT__SUP_RESTART && v != WEFT__SUP_GROUP) || c->removing)
    return;  /* removing: weft_sup_stop_child from the callback */
  if (v == WEFT__SUP_RESTART) {
    weft__sup_arm_restart(c, c->backoff_ms);
    return;
  }
  if (s->phase != PH_GROUP || c->backoff_ms > s->group_delay)
    s->group_delay = c->backoff_ms;
  s->phase = PH_GROUP;
  mark_group(s, c);
}

/* c exited (or a start of it failed: err set, code 1): supervisor_restart.c
 * records it and gives the verdict, acted on here; then the state machine. */
static void child_exited(weft_sup_child_t *c, int64_t code, int sig, int err) {
  weft_sup_t *s = c->sup;
  weft_sup_exit_t e;
  weft__sup_verdict_t v = weft__sup_record_exit(c, code, sig, err, &e);
  if (v == WEFT__SUP_START_NOW) {
    weft__sup_notify_exit(c, &e, false);
    int rc = weft__sup_start_child(c);
    if (rc == 0) {
      advance(s);
      return;
    }
    /* The failed start is an exit of its own; restart_now is spent, so this
     * verdict is never WEFT__SUP_START_NOW again. */
    v = weft__sup_record_exit(c, 1, 0, rc, &e);
  }
  act(c, v, &e);
  advance(s);
}

static void on_report(weft_sup_child_t *c, weft__sup_report_t r) {
  if (r.exited)
    child_exited(c, r.code, r.sig, r.err);
}

void weft__sup_on_worker_exit(weft_worker_t *w, int code) {
  weft_sup_child_t *c = weft_worker_data(w);
  on_report(c, weft__sup_worker_gone(c, w, code));
}

void weft__sup_on_proc_exit(weft_child_t *p, int64_t status, int sig) {
  weft_sup_child_t *c = weft_child_data(p);
  on_report(c, weft__sup_proc_gone(c, status, sig));
}

void weft__sup_on_port_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  weft_sup_child_t *c = weft_port_data(port);  /* NULL once detached */
  on_report(c, weft__sup_port_gone(c, port));
}

void weft__sup_on_watch_closed(weft_service_client_t *cli, void *data) {
  (void)cli;
  weft_sup_child_t *c = data;
  on_report(c, weft__sup_watch_gone(c));
}

void weft__sup_on_timer(uv_timer_t *t) {
  weft_sup_child_t *c = t->data;
  if (!weft__sup_timer_fired(c))
    return;
  int err = weft__sup_start_child(c);
  if (err)
    child_exited(c, 1, 0, err);
}

/* ---- public ------------------------------------------------------------------ */

static void abort_new(weft_sup_t *s) {
  s->quiet = true;
  s->phase = PH_CLOSING;
  advance(s);
}

int weft_sup_new(weft_ctx_t *ctx, const weft_sup_options_t *opts, weft_sup_t **out) {
  if (ctx == NULL || opts == NULL || out == NULL || (opts->nchildren && opts->children == NULL) ||
      opts->strategy > WEFT_SUP_REST_FOR_ONE)
    return WEFT_EINVAL;
  if (weft_ctx_current() != ctx)
    return WEFT_EWRONGTHREAD;
  weft_sup_t *s = weft_calloc(1, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  s->times = weft_calloc(weft__sup_lim(opts->limits.max_restarts, 3), sizeof(uint64_t));
  if (s->times == NULL) {
    weft_free(s);
    return WEFT_ENOMEM;
  }
  s->ctx = ctx;
  s->loop = weft_ctx_loop(ctx);
  s->opts = *opts;
  s->rng = opts->seed ? opts->seed : uv_hrtime() | 1;
  int err = uv_timer_init(s->loop, &s->timer);
  if (err) {
    weft_free(s->times);
    weft_free(s);
    return err;
  }
  s->timer.data = NULL;
  s->quiet = true;  /* all or nothing: on_child_start once every child runs */
  for (size_t i = 0; i < opts->nchildren; i++) {
    weft_sup_child_t *c;
    err = weft__sup_add_child(s, &opts->children[i], &c);
    if (err == 0 && !c->spec.standby)
      err = weft__sup_start_child(c);
    if (err) {
      abort_new(s);
      return err;
    }
  }
  s->quiet = false;
  *out = s;
  for (weft_sup_child_t *c = weft__sup_first(s);
       c && s->opts.on_child_start && s->phase < PH_CLOSING; c = weft__sup_next(c))
    if (c->state == ST_RUNNING)
      s->opts.on_child_start(s, c);
  return 0;
}

int weft_sup_close(weft_sup_t *s, weft_sup_close_cb cb) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != s->ctx)
    return WEFT_EWRONGTHREAD;
  if (s->phase >= PH_CLOSING)
    return 0;
  s->close_cb = cb;
  s->phase = PH_CLOSING;
  uv_timer_stop(&s->timer);
  for (weft_sup_child_t *c = weft__sup_first(s); c; c = weft__sup_next(c))
    weft__sup_cancel_restart(c);
  advance(s);
  return 0;
}

int weft_sup_start_child(weft_sup_t *s, const weft_sup_child_spec_t *spec,
                         weft_sup_child_t **out) {
  if (s == NULL || spec == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != s->ctx)
    return WEFT_EWRONGTHREAD;
  if (s->phase >= PH_GIVING_UP)
    return WEFT_ECLOSED;
  weft_sup_child_t *c;
  int err = weft__sup_add_child(s, spec, &c);
  if (err)
    return err;
  err = c->spec.standby ? 0 : weft__sup_start_child(c);
  if (err) {
    weft__sup_unlink_child(c);
    weft__sup_free_child(c);
    return err;
  }
  if (out)
    *out = c;
  return 0;
}

int weft_sup_stop_child(weft_sup_child_t *c, uint32_t grace_ms) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != c->sup->ctx)
    return WEFT_EWRONGTHREAD;
  if (c->removing)
    return 0;
  c->removing = true;
  c->in_group = false;
  if (c->state == ST_IDLE) {
    weft__sup_cancel_restart(c);  /* idle: its timer is a restart or stopped */
    weft_sup_exit_t e = {.stopped = true, .time_ms = uv_now(c->sup->loop)};
    weft__sup_describe(&e);
    weft_sup_t *s = c->sup;
    weft__sup_remove_child(c, &e);
    advance(s);
    return 0;
  }
  if (c->state == ST_RUNNING) {
    if (grace_ms == 0) {
      weft__sup_stop_now(c);
    } else {
      weft__sup_stop_after(c, grace_ms);
    }
  }
  return 0;
}

int weft_sup_restart_child(weft_sup_child_t *c) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != c->sup->ctx)
    return WEFT_EWRONGTHREAD;
  if (c->state != ST_RUNNING || c->removing)
    return WEFT_EBUSY;
  c->restart_now = true;
  weft__sup_stop_now(c);
  return 0;
}

size_t weft_sup_count(const weft_sup_t *s) { return s ? s->count : 0; }

weft_sup_child_t *weft_sup_child_at(const weft_sup_t *s, size_t i) {
  weft_sup_child_t *c = s ? weft__sup_first(s) : NULL;
  while (c && i--)
    c = weft__sup_next(c);
  return c;
}

bool weft_sup_gave_up(const weft_sup_t *s) {
  return s && (s->phase == PH_GAVE_UP || s->phase == PH_GIVING_UP);
}
void *weft_sup_data(const weft_sup_t *s) { return s ? s->opts.data : NULL; }
weft_ctx_t *weft_sup_ctx(const weft_sup_t *s) { return s ? s->ctx : NULL; }
uint64_t weft_sup_restarts(const weft_sup_t *s) { return s ? s->restarts : 0; }

weft_sup_t *weft_sup_child_sup(const weft_sup_child_t *c) { return c ? c->sup : NULL; }
const char *weft_sup_child_id(const weft_sup_child_t *c) { return c ? c->spec.id : NULL; }
weft_sup_kind_t weft_sup_child_kind(const weft_sup_child_t *c) {
  return c ? c->spec.kind : WEFT_SUP_THREAD;
}
bool weft_sup_child_running(const weft_sup_child_t *c) { return c && c->state != ST_IDLE; }

weft_port_t *weft_sup_child_port(const weft_sup_child_t *c) {
  if (c == NULL || c->state == ST_IDLE)
    return NULL;
  if (c->worker)
    return weft_worker_port(c->worker);
  if (c->proc && !c->port_closed)
    return weft_child_port(c->proc);
  return NULL;
}

weft_worker_t *weft_sup_child_worker(const weft_sup_child_t *c) { return c ? c->worker : NULL; }
weft_child_t *weft_sup_child_process(const weft_sup_child_t *c) { return c ? c->proc : NULL; }
weft_sup_t *weft_sup_child_nested(const weft_sup_child_t *c) { return c ? c->nested : NULL; }
int weft_sup_child_pid(const weft_sup_child_t *c) {
  return c && c->proc ? weft_child_pid(c->proc) : 0;
}
uint64_t weft_sup_child_starts(const weft_sup_child_t *c) { return c ? c->starts : 0; }
uint32_t weft_sup_child_backoff_ms(const weft_sup_child_t *c) { return c ? c->backoff_ms : 0; }
void *weft_sup_child_data(const weft_sup_child_t *c) { return c ? c->data : NULL; }

void weft_sup_child_set_data(weft_sup_child_t *c, void *data) {
  if (c)
    c->data = data;
}

weft_sup_child_t *weft_sup_child_from_port(const weft_port_t *port) {
  return port ? weft_port_data(port) : NULL;
}

int weft_sup_child_exit(const weft_sup_child_t *c, size_t i, weft_sup_exit_t *out) {
  if (c == NULL || out == NULL)
    return WEFT_EINVAL;
  if (i >= c->nhist)
    return WEFT_ENOENT;
  *out = c->hist[(c->hist_head + i) % WEFT__SUP_HIST];
  return 0;
}
