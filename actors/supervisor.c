/* supervisor.c: supervisors (include/weft/supervisor.h), written against the
 * public API only.
 *
 * A supervisor is a list of children in start order and a small state
 * machine, `advance`, run after every event: while a group is being stopped
 * (one_for_all / rest_for_one restart, give-up, close) it stops one running
 * child at a time, last in the list first, waiting for each exit; once the
 * group is down it arms the group restart timer, calls on_give_up, or
 * finishes the close. A one_for_one restart uses the child's own timer.
 *
 * Invariants: a child is RUNNING (handle set, exit to come), STOPPING (we
 * asked it to stop, exit to come) or IDLE (no handle; waiting for a restart,
 * or stopped while the supervisor gives up). Restart timestamps sit in a ring
 * of max_restarts entries. Memory of a child or of the supervisor is freed
 * only in the close callback of its uv_timer.
 *
 * Threads: the supervisor's context thread only (the worker, child and nested
 * supervisor callbacks all arrive there). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "weft/supervisor.h"

#define HIST 8

enum { ST_IDLE = 0, ST_RUNNING, ST_STOPPING };
enum { PH_NORMAL = 0, PH_GROUP, PH_GIVING_UP, PH_GAVE_UP, PH_CLOSING };

struct weft_sup_child_s {
  weft_sup_t *sup;
  weft_sup_child_t *next, *prev;
  weft_sup_child_spec_t spec;
  int state;
  weft_worker_t *worker;
  weft_child_t *proc;
  weft_sup_t *nested;
  uv_timer_t timer;         /* one_for_one restart, or SIGKILL / grace deadline */
  bool timer_restart;       /* the timer is a restart, not a deadline */
  bool stop_req;            /* we asked it to stop */
  bool in_group;            /* to be started again by the group restart */
  bool removing;            /* weft_sup_stop_child: free at its exit */
  bool restart_now;         /* weft_sup_restart_child */
  bool killed;              /* SIGKILL sent */
  int pending_error;        /* from the worker's on_error */
  int start_err;            /* a group restart could not start it */
  bool port_open;           /* process: its started port has not closed yet */
  bool exit_pending;        /* process exited; waiting for its port to close */
  bool port_closed;         /* process: its port's close callback ran */
  weft_port_t *proc_port;   /* process: the port of its latest start */
  int64_t exit_status;
  int exit_signal;
  uint64_t started_ms;
  uint64_t starts;
  uint32_t streak;
  uint32_t backoff_ms;
  weft_sup_exit_t hist[HIST];
  size_t nhist, hist_head;
  char idbuf[24];
  void *data;
};

struct weft_sup_s {
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_sup_options_t opts;
  weft_sup_child_t *head, *tail;
  size_t count;
  int phase;
  bool quiet;               /* failed construction: no user callbacks */
  bool gave_up;
  uv_timer_t timer;         /* group restart */
  uint32_t group_delay;
  uint64_t *times;          /* ring of restart times, max_restarts entries */
  size_t ntimes, times_head;
  uint64_t restarts;
  uint64_t rng;
  weft_sup_exit_t last;     /* the exit that made it give up */
  weft_sup_close_cb close_cb;
  weft_sup_child_t *parent; /* nested: our handle in the parent */
  size_t handles;           /* open uv handles (timers), for the final free */
};

static void advance(weft_sup_t *s);
static void stop_now(weft_sup_child_t *c);
static int start_child(weft_sup_child_t *c);
static void child_exited(weft_sup_child_t *c, int64_t code, int sig, int err);
static void nested_done(weft_sup_child_t *c, bool gave_up, const weft_sup_exit_t *last);

/* ---- small helpers ---------------------------------------------------------- */

static uint32_t lim(uint32_t v, uint32_t def) { return v ? v : def; }

static uint64_t rng_next(weft_sup_t *s) {
  uint64_t x = s->rng;  /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return x * 2685821657736338717ull;
}

static uint32_t backoff_for(weft_sup_t *s, weft_sup_child_t *c) {
  uint32_t lo = lim(s->opts.limits.backoff_min_ms, 10);
  uint32_t hi = lim(s->opts.limits.backoff_max_ms, 2000);
  uint64_t d = lo;
  for (uint32_t i = 0; i < c->streak && d < hi; i++)
    d *= 2;
  if (d > hi)
    d = hi;
  c->streak++;
  uint64_t half = d / 2;
  return (uint32_t)(d - half + (half ? rng_next(s) % (half + 1) : 0));
}

static void describe(weft_sup_exit_t *e) {
  if (e->stopped)
    snprintf(e->message, sizeof(e->message), "stopped by the supervisor");
  else if (e->error)
    snprintf(e->message, sizeof(e->message), "error %s: %s", weft_err_name(e->error),
             weft_strerror(e->error));
  else if (e->term_signal)
    snprintf(e->message, sizeof(e->message), "killed by signal %d (%s)", e->term_signal,
             strsignal(e->term_signal));
  else if (e->exit_code)
    snprintf(e->message, sizeof(e->message), "exited with code %lld", (long long)e->exit_code);
  else
    snprintf(e->message, sizeof(e->message), "exited normally");
}

static void on_handle_closed(uv_handle_t *h) {
  if (h->data != NULL) {  /* a child's timer */
    weft_free(h->data);
    return;
  }
  weft_sup_t *s = (weft_sup_t *)((char *)h - offsetof(weft_sup_t, timer));
  if (s->close_cb && !s->quiet)
    s->close_cb(s);
  weft_sup_child_t *parent = s->parent;
  bool gave_up = s->gave_up;
  weft_sup_exit_t last = s->last;
  weft_free(s->times);
  weft_free(s);
  if (parent)
    nested_done(parent, gave_up, &last);
}

static void unlink_child(weft_sup_child_t *c) {
  weft_sup_t *s = c->sup;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    s->tail = c->prev;
  s->count--;
}

/* A process port that has not closed yet must not call back into c. */
static void detach_port(weft_sup_child_t *c) {
  if (c->proc_port) {
    weft_port_on_close(c->proc_port, NULL);
    weft_port_set_data(c->proc_port, NULL);
    c->proc_port = NULL;
  }
}

static void free_child(weft_sup_child_t *c) {
  detach_port(c);
  c->timer.data = c;
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void notify_exit(weft_sup_child_t *c, const weft_sup_exit_t *e, bool final);

/* The child goes: out of the list first (the callback may re-enter the
 * supervisor), then its final exit, then its memory. */
static void remove_child(weft_sup_child_t *c, const weft_sup_exit_t *e) {
  uv_timer_stop(&c->timer);
  unlink_child(c);
  notify_exit(c, e, true);
  free_child(c);
}

/* ---- stopping ---------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t) {
  weft_sup_child_t *c = t->data;
  if (c->timer_restart) {
    c->timer_restart = false;
    int err = start_child(c);
    if (err)
      child_exited(c, 1, 0, err);
    return;
  }
  if (c->state == ST_RUNNING) {  /* grace period over */
    stop_now(c);
  } else if (c->state == ST_STOPPING && c->proc && !c->killed) {
    c->killed = true;
    weft_child_kill(c->proc, SIGKILL);
  }
}

static void stop_now(weft_sup_child_t *c) {
  if (c->state != ST_RUNNING)
    return;
  c->stop_req = true;
  c->state = ST_STOPPING;
  if (c->worker) {
    weft_worker_terminate(c->worker);
  } else if (c->proc) {
    weft_child_kill(c->proc, SIGTERM);
    c->timer_restart = false;
    uv_timer_start(&c->timer, on_deadline, lim(c->spec.shutdown_ms, 5000), 0);
  } else if (c->nested) {
    weft_sup_close(c->nested, NULL);
  }
}

/* ---- starting ---------------------------------------------------------------- */

static int first_message(weft_sup_child_t *c, weft_msg_t **out) {
  *out = NULL;
  if (c->spec.make_data)
    return c->spec.make_data(c, out);
  if (c->spec.payload == NULL)
    return 0;
  int err = weft_msg_new(out);
  if (err == 0 && (err = weft_msg_set_payload(*out, c->spec.payload, c->spec.payload_len))) {
    weft_msg_free(*out);
    *out = NULL;
  }
  return err;
}

static void on_worker_error(weft_worker_t *w, int err) {
  weft_sup_child_t *c = weft_worker_data(w);
  c->pending_error = err;
}

static void on_worker_exit(weft_worker_t *w, int code) {
  weft_sup_child_t *c = weft_worker_data(w);
  int err = c->pending_error;
  c->worker = NULL;
  child_exited(c, code, 0, err);
}

/* A process's exit is handled once its port delivered everything and closed
 * (on_exit can come first while messages still wait in the port). */
static void on_proc_exit(weft_child_t *p, int64_t status, int sig) {
  weft_sup_child_t *c = weft_child_data(p);
  c->proc = NULL;
  uv_timer_stop(&c->timer);
  if (c->port_open) {
    c->exit_pending = true;
    c->exit_status = status;
    c->exit_signal = sig;
    return;
  }
  child_exited(c, status, sig, 0);
}

static void on_proc_port_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  weft_sup_child_t *c = weft_port_data(port);
  if (c == NULL || c->proc_port != port)
    return;  /* an earlier run's port */
  c->proc_port = NULL;
  c->port_open = false;
  c->port_closed = true;
  if (c->exit_pending) {
    c->exit_pending = false;
    child_exited(c, c->exit_status, c->exit_signal, 0);
  }
}

static int start_thread(weft_sup_child_t *c, weft_msg_t *m) {
  weft_worker_options_t o = {
      .entry = c->spec.entry,
      .entry_name = c->spec.entry_name,
      .data = m,
      .on_message = c->spec.on_message,
      .on_error = on_worker_error,
      .on_exit = on_worker_exit,
      .data_ptr = c,
  };
  int err = weft_worker_spawn(c->sup->ctx, &o, &c->worker);
  if (err == 0)
    weft_port_set_data(weft_worker_port(c->worker), c);
  return err;
}

static int start_process(weft_sup_child_t *c, weft_msg_t *m) {
  weft_child_options_t o = {
      .file = c->spec.file,
      .args = c->spec.args,
      .env = c->spec.env,
      .entry_name = c->spec.entry_name,
      .data = m,
      .on_message = c->spec.on_message,
      .on_exit = on_proc_exit,
      .data_ptr = c,
  };
  memcpy(o.stdio, c->spec.stdio, sizeof(o.stdio));
  detach_port(c);
  int err = weft_child_spawn(c->sup->ctx, &o, &c->proc);
  weft_port_t *port = err == 0 ? weft_child_port(c->proc) : NULL;
  c->port_closed = port == NULL;
  c->proc_port = port;
  if (port) {
    weft_port_set_data(port, c);
    c->port_open = weft_port_on_close(port, on_proc_port_closed) == 0 && o.on_message != NULL;
  }
  return err;
}

static int start_child(weft_sup_child_t *c) {
  weft_sup_t *s = c->sup;
  int err;
  c->stop_req = c->killed = false;
  c->pending_error = 0;
  if (c->spec.kind == WEFT_SUP_NESTED) {
    err = weft_sup_new(s->ctx, c->spec.sup, &c->nested);
    if (err == 0)
      c->nested->parent = c;
  } else {
    weft_msg_t *m;
    err = first_message(c, &m);
    if (err == 0) {
      err = c->spec.kind == WEFT_SUP_PROCESS ? start_process(c, m) : start_thread(c, m);
      if (err)
        weft_msg_free(m);
    }
  }
  if (err)
    return err;
  c->state = ST_RUNNING;
  c->starts++;
  uv_update_time(s->loop);
  c->started_ms = uv_now(s->loop);
  if (s->opts.on_child_start && !s->quiet)
    s->opts.on_child_start(s, c);
  return 0;
}

static int add_child(weft_sup_t *s, const weft_sup_child_spec_t *spec, weft_sup_child_t **out) {
  if (spec->kind == WEFT_SUP_NESTED ? spec->sup == NULL
                                    : (spec->entry == NULL && spec->entry_name == NULL &&
                                       spec->file == NULL))
    return WEFT_EINVAL;
  weft_sup_child_t *c = weft_calloc(1, sizeof(*c));
  if (c == NULL)
    return WEFT_ENOMEM;
  int err = uv_timer_init(s->loop, &c->timer);
  if (err) {
    weft_free(c);
    return err;
  }
  c->timer.data = c;
  c->sup = s;
  c->spec = *spec;
  c->data = spec->data;
  if (c->spec.id == NULL) {
    snprintf(c->idbuf, sizeof(c->idbuf), "child%zu", s->count);
    c->spec.id = c->idbuf;
  }
  c->prev = s->tail;
  if (s->tail)
    s->tail->next = c;
  else
    s->head = c;
  s->tail = c;
  s->count++;
  *out = c;
  return 0;
}

/* ---- exits and the restart decision ----------------------------------------- */

static void record(weft_sup_child_t *c, weft_sup_exit_t *e) {
  c->hist_head = (c->hist_head + HIST - 1) % HIST;
  c->hist[c->hist_head] = *e;
  if (c->nhist < HIST)
    c->nhist++;
}

/* True if one more restart now stays within the intensity. */
static bool intensity_ok(weft_sup_t *s, uint64_t now) {
  uint32_t max = lim(s->opts.limits.max_restarts, 3);
  uint32_t period = lim(s->opts.limits.period_ms, 5000);
  if (s->ntimes == max) {
    uint64_t oldest = s->times[s->times_head];
    if (now - oldest < period)
      return false;
    s->times_head = (s->times_head + 1) % max;
    s->ntimes--;
  }
  s->times[(s->times_head + s->ntimes) % max] = now;
  s->ntimes++;
  return true;
}

static void notify_exit(weft_sup_child_t *c, const weft_sup_exit_t *e, bool final) {
  weft_sup_t *s = c->sup;
  if (s->opts.on_child_exit && !s->quiet)
    s->opts.on_child_exit(s, c, e, final);
}

static void mark_group(weft_sup_t *s, weft_sup_child_t *from) {
  weft_sup_child_t *c = s->opts.strategy == WEFT_SUP_ONE_FOR_ALL ? s->head : from;
  for (; c; c = c->next) {
    c->in_group = true;
    if (c->timer_restart) {  /* a pending one_for_one-style restart joins the group */
      uv_timer_stop(&c->timer);
      c->timer_restart = false;
    }
  }
}

static void restart_decision(weft_sup_child_t *c, weft_sup_exit_t *e) {
  weft_sup_t *s = c->sup;
  bool restart = c->spec.restart == WEFT_SUP_PERMANENT ||
                 (c->spec.restart == WEFT_SUP_TRANSIENT && !e->normal);
  if (!restart) {
    remove_child(c, e);
    return;
  }
  if (!intensity_ok(s, e->time_ms)) {
    notify_exit(c, e, false);
    s->last = *e;
    s->phase = PH_GIVING_UP;
    return;
  }
  s->restarts++;
  if (e->ran_ms >= lim(s->opts.limits.backoff_max_ms, 2000))
    c->streak = 0;
  c->backoff_ms = backoff_for(s, c);
  notify_exit(c, e, false);
  if (c->removing)
    return;  /* weft_sup_stop_child from the callback */
  if (s->opts.strategy == WEFT_SUP_ONE_FOR_ONE) {
    c->timer_restart = true;
    uv_timer_start(&c->timer, on_deadline, c->backoff_ms, 0);
    return;
  }
  if (s->phase != PH_GROUP || c->backoff_ms > s->group_delay)
    s->group_delay = c->backoff_ms;
  s->phase = PH_GROUP;
  mark_group(s, c);
}

static void child_exited(weft_sup_child_t *c, int64_t code, int sig, int err) {
  weft_sup_t *s = c->sup;
  uv_update_time(s->loop);
  uint64_t now = uv_now(s->loop);
  weft_sup_exit_t e = {
      .exit_code = code,
      .term_signal = sig,
      .error = err,
      .stopped = c->stop_req,
      .time_ms = now,
      .ran_ms = c->state != ST_IDLE ? now - c->started_ms : 0,
  };
  if (e.stopped && !e.error && c->spec.kind == WEFT_SUP_THREAD)
    e.error = WEFT_ETERMINATED;
  e.normal = code == 0 && sig == 0 && e.error == 0;
  describe(&e);
  record(c, &e);
  c->state = ST_IDLE;
  c->stop_req = false;
  uv_timer_stop(&c->timer);
  if (c->removing || s->phase == PH_CLOSING) {
    remove_child(c, &e);
  } else if (c->restart_now) {
    c->restart_now = false;
    notify_exit(c, &e, false);
    int rc = start_child(c);
    if (rc)
      child_exited(c, 1, 0, rc);
    return;
  } else if (e.stopped || s->phase == PH_GIVING_UP || s->phase == PH_GAVE_UP) {
    notify_exit(c, &e, false);
  } else {
    restart_decision(c, &e);
  }
  advance(s);
}

/* ---- the state machine ------------------------------------------------------- */

static void on_group_timer(uv_timer_t *t) {
  weft_sup_t *s = (weft_sup_t *)((char *)t - offsetof(weft_sup_t, timer));
  s->phase = PH_NORMAL;
  bool failed = false;
  for (weft_sup_child_t *c = s->head; c; c = c->next) {
    if (!c->in_group)
      continue;
    c->in_group = false;
    c->start_err = start_child(c);
    failed |= c->start_err != 0;
  }
  while (failed) {  /* report each failed start; the list may change under us */
    failed = false;
    for (weft_sup_child_t *c = s->head; c; c = c->next) {
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
  uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

static void advance(weft_sup_t *s) {
  bool all = s->phase == PH_GIVING_UP || s->phase == PH_CLOSING;
  if (!all && s->phase != PH_GROUP)
    return;
  weft_sup_child_t *victim = NULL;
  for (weft_sup_child_t *c = s->tail; c; c = c->prev) {
    if (c->state == ST_STOPPING)
      return;  /* one at a time */
    if (victim == NULL && c->state == ST_RUNNING && (all || c->in_group))
      victim = c;
  }
  if (victim) {
    stop_now(victim);
    return;
  }
  if (s->phase == PH_GROUP) {
    uv_timer_start(&s->timer, on_group_timer, s->group_delay, 0);
    return;
  }
  if (s->phase == PH_GIVING_UP) {
    s->phase = PH_GAVE_UP;
    s->gave_up = true;
    for (weft_sup_child_t *c = s->head; c; c = c->next) {
      c->in_group = false;
      if (c->timer_restart) {
        uv_timer_stop(&c->timer);
        c->timer_restart = false;
      }
    }
    if (s->opts.on_give_up && !s->quiet)
      s->opts.on_give_up(s, &s->last);
    if (s->parent)
      weft_sup_close(s, NULL);
    return;
  }
  /* PH_CLOSING with no child left running: remove the idle ones, then go. */
  while (s->head) {
    weft_sup_child_t *c = s->head;
    weft_sup_exit_t e = {.stopped = true, .time_ms = uv_now(s->loop)};
    describe(&e);
    remove_child(c, &e);
  }
  finish_close(s);
}

/* A nested supervisor finished closing: its handle in the parent exits. */
static void nested_done(weft_sup_child_t *c, bool gave_up, const weft_sup_exit_t *last) {
  c->nested = NULL;
  child_exited(c, gave_up ? 1 : 0, 0, gave_up ? last->error : 0);
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
  s->times = weft_calloc(lim(opts->limits.max_restarts, 3), sizeof(uint64_t));
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
    err = add_child(s, &opts->children[i], &c);
    if (err == 0)
      err = start_child(c);
    if (err) {
      abort_new(s);
      return err;
    }
  }
  s->quiet = false;
  *out = s;
  for (weft_sup_child_t *c = s->head; c && s->opts.on_child_start && s->phase < PH_CLOSING;
       c = c->next)
    if (c->state == ST_RUNNING)
      s->opts.on_child_start(s, c);
  return 0;
}

int weft_sup_close(weft_sup_t *s, weft_sup_close_cb cb) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (s->phase >= PH_CLOSING)
    return 0;
  s->close_cb = cb;
  s->phase = PH_CLOSING;
  uv_timer_stop(&s->timer);
  for (weft_sup_child_t *c = s->head; c; c = c->next)
    if (c->timer_restart) {
      uv_timer_stop(&c->timer);
      c->timer_restart = false;
    }
  advance(s);
  return 0;
}

int weft_sup_start_child(weft_sup_t *s, const weft_sup_child_spec_t *spec,
                         weft_sup_child_t **out) {
  if (s == NULL || spec == NULL)
    return WEFT_EINVAL;
  if (s->phase >= PH_GIVING_UP)
    return WEFT_ECLOSED;
  weft_sup_child_t *c;
  int err = add_child(s, spec, &c);
  if (err)
    return err;
  err = start_child(c);
  if (err) {
    unlink_child(c);
    free_child(c);
    return err;
  }
  if (out)
    *out = c;
  return 0;
}

int weft_sup_stop_child(weft_sup_child_t *c, uint32_t grace_ms) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (c->removing)
    return 0;
  c->removing = true;
  c->in_group = false;
  if (c->state == ST_IDLE) {
    uv_timer_stop(&c->timer);
    c->timer_restart = false;
    weft_sup_exit_t e = {.stopped = true, .time_ms = uv_now(c->sup->loop)};
    describe(&e);
    weft_sup_t *s = c->sup;
    remove_child(c, &e);
    advance(s);
    return 0;
  }
  if (c->state == ST_RUNNING) {
    if (grace_ms == 0) {
      stop_now(c);
    } else {
      c->timer_restart = false;
      uv_timer_start(&c->timer, on_deadline, grace_ms, 0);
    }
  }
  return 0;
}

int weft_sup_restart_child(weft_sup_child_t *c) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (c->state != ST_RUNNING || c->removing)
    return WEFT_EBUSY;
  c->restart_now = true;
  stop_now(c);
  return 0;
}

size_t weft_sup_count(const weft_sup_t *s) { return s ? s->count : 0; }

weft_sup_child_t *weft_sup_child_at(const weft_sup_t *s, size_t i) {
  weft_sup_child_t *c = s ? s->head : NULL;
  while (c && i--)
    c = c->next;
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
  *out = c->hist[(c->hist_head + i) % HIST];
  return 0;
}
