/* supervisor_int.h: NOT PUBLIC. What the supervisor's files share, written
 * against the public API only (the microkernel rule).
 *
 * The supervisor (include/weft/supervisor.h) in three files, each calling
 * only the ones below it:
 *   supervisor.c          the tree and the strategies: the state machine that
 *                         stops groups and restarts them, give-up, close, the
 *                         public entry points, and a child's event callbacks,
 *                         which act on what the files below decide
 *   supervisor_child.c    one child: adding it, starting it (thread, process,
 *                         nested supervisor or service watch), stopping it (terminate, SIGTERM
 *                         then SIGKILL, close), what its exit events mean
 *                         (weft__sup_report_t), removing it
 *   supervisor_restart.c  what an exit means: its record and message, and the
 *                         verdict (weft__sup_verdict_t: remove, restart alone
 *                         or as a group, give up), the intensity window and
 *                         the jittered exponential back-off
 * supervisor_child.c registers supervisor.c's event callbacks when it starts a
 * child or arms its timer, but never calls them: nothing calls up.
 *
 * Invariants: a child is RUNNING (handle set, exit to come), STOPPING (we
 * asked it to stop, exit to come) or IDLE (no handle; waiting for a restart,
 * or stopped while the supervisor gives up). Restart timestamps sit in a ring
 * of max_restarts entries. Memory of a child or of the supervisor is freed
 * only in the close callback of its uv_timer.
 *
 * Threads: the supervisor's context thread only (the worker, child and nested
 * supervisor callbacks all arrive there). */
#ifndef WEFT_SUPERVISOR_INT_H
#define WEFT_SUPERVISOR_INT_H

#include "weft.h"
#include "weft/supervisor.h"

#define WEFT__SUP_HIST 8  /* exits remembered per child */

enum { ST_IDLE = 0, ST_RUNNING, ST_STOPPING };
enum { PH_NORMAL = 0, PH_GROUP, PH_GIVING_UP, PH_GAVE_UP, PH_CLOSING };

struct weft_sup_child_s {
  weft_sup_t *sup;
  weft_list_node_t link;    /* in the supervisor's children, in start order */
  weft_sup_child_spec_t spec;
  int state;
  weft_worker_t *worker;
  weft_child_t *proc;
  weft_sup_t *nested;
  struct weft__sup_watch_s *watch; /* a running WEFT_SUP_WATCH */
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
  weft_sup_exit_t hist[WEFT__SUP_HIST];
  size_t nhist, hist_head;
  char idbuf[24];
  void *data;
};

struct weft_sup_s {
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_sup_options_t opts;
  weft_list_t children;     /* weft_sup_child_t.link, in start order */
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
};

/* The children in order: weft__sup_first / weft__sup_last, then
 * weft__sup_next / weft__sup_prev; NULL past either end. */
static inline weft_sup_child_t *weft__sup_child_of(weft_list_node_t *n) {
  return n ? WEFT_LIST_ENTRY(n, weft_sup_child_t, link) : NULL;
}
static inline weft_sup_child_t *weft__sup_first(const weft_sup_t *s) {
  return weft__sup_child_of(weft_list_first(&s->children));
}
static inline weft_sup_child_t *weft__sup_last(const weft_sup_t *s) {
  return weft__sup_child_of(weft_list_last(&s->children));
}
static inline weft_sup_child_t *weft__sup_next(const weft_sup_child_t *c) {
  return weft__sup_child_of(weft_list_next(&c->link));
}
static inline weft_sup_child_t *weft__sup_prev(const weft_sup_child_t *c) {
  return weft__sup_child_of(weft_list_prev(&c->link));
}

/* weft__sup_lim: v, or def when v is 0 (a zero option means the default). */
static inline uint32_t weft__sup_lim(uint32_t v, uint32_t def) { return v ? v : def; }

/* ---- a child's events (supervisor.c) -------------------------------------- */

/* The callbacks of a child's worker, process, port and timer, on the
 * supervisor's loop. supervisor_child.c registers them; each one asks the
 * files below what the event means (weft__sup_worker_gone and the other
 * weft__sup_*_gone, weft__sup_timer_fired, weft__sup_record_exit), acts on the
 * answer, then runs the supervisor's state machine. */
void weft__sup_on_worker_exit(weft_worker_t *w, int code);
void weft__sup_on_proc_exit(weft_child_t *p, int64_t status, int sig);
void weft__sup_on_port_closed(weft_port_t *port, const weft_port_close_info_t *info);
void weft__sup_on_timer(uv_timer_t *t);
void weft__sup_on_watch_closed(weft_service_client_t *cli, void *data);

/* ---- one child (supervisor_child.c) --------------------------------------- */

/* weft__sup_add_child: a new IDLE child from spec, last in s's list.
 * Returns 0, WEFT_EINVAL (spec names nothing to run), WEFT_ENOMEM. */
int weft__sup_add_child(weft_sup_t *s, const weft_sup_child_spec_t *spec,
                        weft_sup_child_t **out);

/* weft__sup_start_child: starts an IDLE child (RUNNING on success, then
 * on_child_start). On failure it stays IDLE and nothing was called. */
int weft__sup_start_child(weft_sup_child_t *c);

/* weft__sup_stop_now: asks a RUNNING child to stop (STOPPING); its exit
 * follows. Does nothing in another state. */
void weft__sup_stop_now(weft_sup_child_t *c);

/* weft__sup_arm_restart: starts c again in delay_ms (a one_for_one restart). */
void weft__sup_arm_restart(weft_sup_child_t *c, uint32_t delay_ms);

/* weft__sup_stop_after: stops c with weft__sup_stop_now in grace_ms. */
void weft__sup_stop_after(weft_sup_child_t *c, uint32_t grace_ms);

/* weft__sup_cancel_restart: disarms a pending one_for_one restart of c. */
void weft__sup_cancel_restart(weft_sup_child_t *c);

/* weft__sup_unlink_child / weft__sup_free_child: out of the list; its memory
 * goes in its timer's close callback. */
void weft__sup_unlink_child(weft_sup_child_t *c);
void weft__sup_free_child(weft_sup_child_t *c);

/* weft__sup_remove_child: c goes for good: out of the list first (the
 * callback may re-enter the supervisor), then its final exit e, then its
 * memory. */
void weft__sup_remove_child(weft_sup_child_t *c, const weft_sup_exit_t *e);

/* weft__sup_report_t: what one of a child's events means for the supervisor:
 * the child exited (with code, sig and err as weft__sup_record_exit takes
 * them), or not yet. */
typedef struct {
  bool exited;
  int64_t code;
  int sig;
  int err;
} weft__sup_report_t;

/* weft__sup_worker_gone: c's worker w exited with code; w is released. */
weft__sup_report_t weft__sup_worker_gone(weft_sup_child_t *c, weft_worker_t *w, int code);

/* weft__sup_proc_gone: c's process exited; its exit counts once its port has
 * delivered everything and closed (weft__sup_port_gone). */
weft__sup_report_t weft__sup_proc_gone(weft_sup_child_t *c, int64_t status, int sig);

/* weft__sup_port_gone: port, a process port of c, closed (one of an earlier
 * run is ignored). */
weft__sup_report_t weft__sup_port_gone(weft_sup_child_t *c, weft_port_t *port);

/* weft__sup_timer_fired: c's timer fired. A deadline is handled here (the
 * grace period ends with a stop, SIGTERM's with SIGKILL); returns true if it
 * was c's one_for_one restart, which the caller starts. */
bool weft__sup_timer_fired(weft_sup_child_t *c);

/* weft__sup_watch_gone: c's watch client closed (cli, the close callback's
 * data): exited, lost or stopped. */
weft__sup_report_t weft__sup_watch_gone(weft_sup_child_t *c);
/* weft__sup_watch_start / _stop: a watch child's service client. */
int weft__sup_watch_start(weft_sup_child_t *c);
void weft__sup_watch_stop(struct weft__sup_watch_s *w);

/* ---- exits and restarts (supervisor_restart.c) ---------------------------- */

/* weft__sup_describe: fills e->message from the other fields. */
void weft__sup_describe(weft_sup_exit_t *e);

/* weft__sup_notify_exit: on_child_exit, unless the supervisor is quiet. */
void weft__sup_notify_exit(weft_sup_child_t *c, const weft_sup_exit_t *e, bool final);

/* weft__sup_verdict_t: what supervisor.c does with an exit. Every verdict
 * but WEFT__SUP_REMOVE reports the exit (on_child_exit, not final) first. */
typedef enum {
  WEFT__SUP_REMOVE = 1, /* c goes for good: weft__sup_remove_child */
  WEFT__SUP_START_NOW,  /* weft_sup_restart_child: start c again at once */
  WEFT__SUP_REPORT,     /* nothing more (stopped, or the supervisor gives up) */
  WEFT__SUP_GIVE_UP,    /* this restart broke the intensity: give up */
  WEFT__SUP_RESTART,    /* one_for_one: start c again in c->backoff_ms */
  WEFT__SUP_GROUP       /* one_for_all / rest_for_one: restart c's group after
                           c->backoff_ms */
} weft__sup_verdict_t;

/* weft__sup_record_exit: c exited (or a start of it failed: err set, code 1):
 * fills e, records it in c's history, makes c IDLE (its timer stopped) and
 * returns the verdict. A restart is counted in the intensity window and its
 * back-off is in c->backoff_ms before this returns. */
weft__sup_verdict_t weft__sup_record_exit(weft_sup_child_t *c, int64_t code, int sig, int err,
                                          weft_sup_exit_t *e);

#endif /* WEFT_SUPERVISOR_INT_H */
