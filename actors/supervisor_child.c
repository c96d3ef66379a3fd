/* supervisor_child.c: one child of a supervisor (supervisor_int.h): adding
 * it, starting it as a worker thread, a child process, a nested supervisor
 * or a watch on a remote service (a service client whose loss of its last
 * provider is the child's exit),
 * stopping it, what its exit events mean, removing it. The event callbacks
 * it registers are supervisor.c's, which ask the functions here what an event
 * means (weft__sup_report_t) and act on it: this file never calls up.
 *
 * Stopping: a thread gets weft_worker_terminate; a process SIGTERM, then
 * SIGKILL when its shutdown deadline passes; a nested supervisor is closed.
 * The child's one timer is either its one_for_one restart (timer_restart) or
 * a deadline (grace period of weft_sup_stop_child, SIGTERM to SIGKILL).
 *
 * A process's exit is handled once its port delivered everything and closed
 * (on_exit can come first while messages still wait in the port); a port of
 * an earlier run is detached so that it never calls back into the child.
 *
 * Threads: the supervisor's context thread only. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "supervisor_int.h"

/* ---- the list and the memory ------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h) { weft_free(h->data); }

void weft__sup_unlink_child(weft_sup_child_t *c) {
  weft_sup_t *s = c->sup;
  weft_list_remove(&s->children, &c->link);
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

void weft__sup_free_child(weft_sup_child_t *c) {
  detach_port(c);
  c->timer.data = c;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

void weft__sup_remove_child(weft_sup_child_t *c, const weft_sup_exit_t *e) {
  uv_timer_stop(&c->timer);
  weft__sup_unlink_child(c);
  weft__sup_notify_exit(c, e, true);
  weft__sup_free_child(c);
}

int weft__sup_add_child(weft_sup_t *s, const weft_sup_child_spec_t *spec,
                        weft_sup_child_t **out) {
  if (spec->kind == WEFT_SUP_NESTED  ? spec->sup == NULL
      : spec->kind == WEFT_SUP_WATCH ? spec->node == NULL || spec->service == NULL
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
  weft_list_push_back(&s->children, &c->link);
  s->count++;
  *out = c;
  return 0;
}

/* ---- stopping and the timer ------------------------------------------------- */

bool weft__sup_timer_fired(weft_sup_child_t *c) {
  if (c->timer_restart) {
    c->timer_restart = false;
    return true;
  }
  if (c->state == ST_RUNNING) {  /* grace period over */
    weft__sup_stop_now(c);
  } else if (c->state == ST_STOPPING && c->proc && !c->killed) {
    c->killed = true;
    weft_child_kill(c->proc, SIGKILL);
  }
  return false;
}

void weft__sup_stop_now(weft_sup_child_t *c) {
  if (c->state != ST_RUNNING)
    return;
  c->stop_req = true;
  c->state = ST_STOPPING;
  if (c->worker) {
    weft_worker_terminate(c->worker);
  } else if (c->proc) {
    weft_child_kill(c->proc, SIGTERM);
    c->timer_restart = false;
    uv_timer_start(&c->timer, weft__sup_on_timer, weft__sup_lim(c->spec.shutdown_ms, 5000), 0);
  } else if (c->nested) {
    weft_sup_close(c->nested, NULL);
  } else if (c->watch) {
    weft__sup_watch_stop(c->watch);
  }
}

void weft__sup_arm_restart(weft_sup_child_t *c, uint32_t delay_ms) {
  c->timer_restart = true;
  uv_timer_start(&c->timer, weft__sup_on_timer, delay_ms, 0);
}

void weft__sup_stop_after(weft_sup_child_t *c, uint32_t grace_ms) {
  c->timer_restart = false;
  uv_timer_start(&c->timer, weft__sup_on_timer, grace_ms, 0);
}

void weft__sup_cancel_restart(weft_sup_child_t *c) {
  if (c->timer_restart) {
    uv_timer_stop(&c->timer);
    c->timer_restart = false;
  }
}

/* ---- exits ------------------------------------------------------------------ */

static void on_worker_error(weft_worker_t *w, int err) {
  weft_sup_child_t *c = weft_worker_data(w);
  c->pending_error = err;
}

weft__sup_report_t weft__sup_worker_gone(weft_sup_child_t *c, weft_worker_t *w, int code) {
  c->worker = NULL;
  weft_worker_release(w); /* freed once the callback returns: restarts do not pile up */
  return (weft__sup_report_t){.exited = true, .code = code, .err = c->pending_error};
}

weft__sup_report_t weft__sup_proc_gone(weft_sup_child_t *c, int64_t status, int sig) {
  c->proc = NULL;
  uv_timer_stop(&c->timer);
  if (c->port_open) {
    c->exit_pending = true;
    c->exit_status = status;
    c->exit_signal = sig;
    return (weft__sup_report_t){.exited = false};
  }
  return (weft__sup_report_t){.exited = true, .code = status, .sig = sig};
}

weft__sup_report_t weft__sup_port_gone(weft_sup_child_t *c, weft_port_t *port) {
  if (c == NULL || c->proc_port != port)
    return (weft__sup_report_t){.exited = false};  /* an earlier run's port */
  c->proc_port = NULL;
  c->port_open = false;
  c->port_closed = true;
  if (!c->exit_pending)
    return (weft__sup_report_t){.exited = false};
  c->exit_pending = false;
  return (weft__sup_report_t){.exited = true, .code = c->exit_status, .sig = c->exit_signal};
}

/* ---- a watch on a remote service ---------------------------------------------- */

/* The client closes from the loop (a 0 ms timer), never inside its own
 * provider callback; the record goes in the timer's close callback, after
 * the client's close callback reported the exit. */
struct weft__sup_watch_s {
  uv_timer_t timer;
  weft_sup_child_t *c;
  weft_service_client_t *cli;
  uint32_t providers;
  bool lost, closing;
};

static void watch_freed(uv_handle_t *h) { weft_free(h->data); }

static void watch_close_now(uv_timer_t *t) {
  struct weft__sup_watch_s *w = t->data;
  weft_service_client_close(w->cli, weft__sup_on_watch_closed, w->c);
}

void weft__sup_watch_stop(struct weft__sup_watch_s *w) {
  if (w->closing)
    return;
  w->closing = true;
  uv_timer_start(&w->timer, watch_close_now, 0, 0);
}

static void watch_provider(weft_service_client_t *cli, const char *node, bool up, void *data) {
  (void)cli;
  (void)node;
  struct weft__sup_watch_s *w = data;
  if (up) {
    w->providers++;
    return;
  }
  if (w->providers > 0 && --w->providers == 0 && !w->closing) {
    w->lost = true;
    weft__sup_watch_stop(w);
  }
}

int weft__sup_watch_start(weft_sup_child_t *c) {
  struct weft__sup_watch_s *w = weft_calloc(1, sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  weft_service_client_options_t o = {.service = c->spec.service,
                                     .on_provider = watch_provider,
                                     .rescan_ms = 250,
                                     .data = w};
  int err = weft_service_client_new(c->spec.node, &o, &w->cli);
  if (err != 0) {
    weft_free(w);
    return err;
  }
  uv_timer_init(c->sup->loop, &w->timer);
  w->timer.data = w;
  w->c = c;
  c->watch = w;
  return 0;
}

weft__sup_report_t weft__sup_watch_gone(weft_sup_child_t *c) {
  struct weft__sup_watch_s *w = c->watch;
  bool lost = w->lost;
  c->watch = NULL;
  uv_close((uv_handle_t *)&w->timer, watch_freed);
  return (weft__sup_report_t){.exited = true, .code = lost ? 1 : 0,
                              .err = lost ? WEFT_EPEERDIED : 0};
}

/* ---- starting --------------------------------------------------------------- */

static int first_message(weft_sup_child_t *c, weft_msg_t **out) {
  *out = NULL;
  if (c->spec.make_msg)
    return c->spec.make_msg(c, out);
  if (c->spec.payload == NULL)
    return 0;
  int err = weft_msg_new(out);
  if (err == 0 && (err = weft_msg_set_payload(*out, c->spec.payload, c->spec.payload_len))) {
    weft_msg_free(*out);
    *out = NULL;
  }
  return err;
}

static int start_thread(weft_sup_child_t *c, weft_msg_t *m) {
  weft_worker_options_t o = {
      .entry = c->spec.entry,
      .entry_name = c->spec.entry_name,
      .msg = m,
      .on_message = c->spec.on_message,
      .on_error = on_worker_error,
      .on_exit = weft__sup_on_worker_exit,
      .data = c,
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
      .msg = m,
      .on_message = c->spec.on_message,
      .on_exit = weft__sup_on_proc_exit,
      .data = c,
  };
  memcpy(o.stdio, c->spec.stdio, sizeof(o.stdio));
  detach_port(c);
  int err = weft_child_spawn(c->sup->ctx, &o, &c->proc);
  weft_port_t *port = err == 0 ? weft_child_port(c->proc) : NULL;
  c->port_closed = port == NULL;
  c->proc_port = port;
  if (port) {
    weft_port_set_data(port, c);
    c->port_open = weft_port_on_close(port, weft__sup_on_port_closed) == 0 && o.on_message != NULL;
  }
  return err;
}

int weft__sup_start_child(weft_sup_child_t *c) {
  weft_sup_t *s = c->sup;
  int err;
  c->stop_req = c->killed = false;
  c->pending_error = 0;
  if (c->spec.kind == WEFT_SUP_NESTED) {
    err = weft_sup_new(s->ctx, c->spec.sup, &c->nested);
    if (err == 0)
      c->nested->parent = c;
  } else if (c->spec.kind == WEFT_SUP_WATCH) {
    err = weft__sup_watch_start(c);
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
