/* weft/supervisor.h: supervisors that start children and restart the ones
 * that fail (Erlang/OTP's supervisor, for threads and processes).
 *
 * A supervisor lives on one context and starts its children from specs, in
 * order. A child is a worker thread (weft_worker_spawn), a child process
 * (weft_child_spawn: a program, or this executable with a registered entry)
 * or a nested supervisor (a tree). When a child exits, the exit is recorded
 * (exit code, signal, error and an English message) and, by its restart type,
 * it is restarted with the supervisor's strategy:
 *   one_for_one   only the child that exited;
 *   one_for_all   every child: the others are stopped, last started first,
 *                 then all are started again in order;
 *   rest_for_one  the child and those started after it (stopped last first,
 *                 started again in order).
 * Restart intensity: more than max_restarts restarts within period_ms and the
 * supervisor gives up: it stops every child (last first) and calls on_give_up
 * (and, when nested, its parent sees it exit). Restarts wait an exponential
 * back-off with jitter: the n-th consecutive restart of a child (n from 0)
 * waits a uniform random time in [d/2, d], d = min(backoff_max_ms,
 * backoff_min_ms * 2^n); the streak resets when a child ran at least
 * backoff_max_ms before it exited.
 *
 * Stopping a child: a thread gets weft_worker_terminate (it stops at its next
 * callback boundary), a process SIGTERM and, after shutdown_ms, SIGKILL; a
 * nested supervisor is closed; a watch stops watching.
 *
 * Supervision across nodes: a child of kind WEFT_SUP_WATCH watches a remote
 * service's providers (weft/service.h) from this supervisor's node. It runs
 * while it watches and exits (error WEFT_EPEERDIED, not normal) when the
 * service has lost its last provider on other nodes, having had one: a
 * provider's node went down, its channel closed, or it withdrew. The
 * strategy then runs as for any exit. To start a local provider when that
 * happens, put a `standby` child after the watch under rest_for_one (or
 * one_for_all): a standby child is not started with the supervisor (nor by
 * weft_sup_start_child), only by a group restart, so it runs from the first
 * loss on. The restarted watch watches again (the local provider, if it is
 * a process that joins as a node, is one of the providers it sees).
 * The gap a client sees is about the detection of the node's death (within
 * 1.5x the heartbeat, weft/node.h), plus the restart's back-off, plus the
 * new provider's start and discovery by the clients.
 *
 * Threads: every function and callback here runs on the supervisor's context
 * thread; the actions (new, close, start/stop/restart child) return
 * WEFT_EWRONGTHREAD when called from another. Option structs are zero-initialised for defaults; a supervisor keeps
 * a copy of its specs, but the strings, arrays and nested options they point
 * to must stay valid while the supervisor lives. */
#ifndef WEFT_SUPERVISOR_H
#define WEFT_SUPERVISOR_H

#include "common.h"
#include "msg.h"
#include "port.h"
#include "runtime.h"
#include "child.h"
#include "node.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_sup_s weft_sup_t;
typedef struct weft_sup_child_s weft_sup_child_t;

typedef enum {
  WEFT_SUP_ONE_FOR_ONE = 0,
  WEFT_SUP_ONE_FOR_ALL = 1,
  WEFT_SUP_REST_FOR_ONE = 2
} weft_sup_strategy_t;

typedef enum {
  WEFT_SUP_THREAD = 0,   /* a worker thread */
  WEFT_SUP_PROCESS = 1,  /* a child process */
  WEFT_SUP_NESTED = 2,   /* a supervisor under this one */
  WEFT_SUP_WATCH = 3     /* a watch on a remote service's providers (see the top) */
} weft_sup_kind_t;

typedef enum {
  WEFT_SUP_PERMANENT = 0,  /* always restarted */
  WEFT_SUP_TRANSIENT = 1,  /* restarted only after an abnormal exit */
  WEFT_SUP_TEMPORARY = 2   /* never restarted */
} weft_sup_restart_t;

/* Why a child exited. */
typedef struct {
  int64_t exit_code;   /* thread: the worker's exit code; process: its exit status;
                          nested: 0 when stopped, 1 when it gave up */
  int term_signal;     /* process killed by this signal; else 0 */
  int error;           /* 0, or the worker's error (on_error), the start error,
                          WEFT_ETERMINATED when this supervisor stopped it, or
                          WEFT_EGAVEUP (nested: it gave up) */
  bool normal;         /* exit code 0, no signal, no error */
  bool stopped;        /* this supervisor asked it to stop */
  uint64_t time_ms;    /* uv_now() of the supervisor's loop at the exit */
  uint64_t ran_ms;     /* how long it had run */
  char message[96];    /* "exited with code 3", "killed by signal 9 (SIGKILL)", ... */
} weft_sup_exit_t;

typedef struct weft_sup_options_s weft_sup_options_t;

/* Builds the first message of each start of a child (workerData for a thread,
 * the first message on a process's channel). Return 0 and set *out (may be
 * NULL), or an error, which fails that start. */
typedef int (*weft_sup_msg_cb)(weft_sup_child_t *child, weft_msg_t **out);

typedef struct {
  const char *id;                 /* a name for messages; NULL: "child<index>" */
  weft_sup_kind_t kind;
  weft_sup_restart_t restart;
  /* thread (kind WEFT_SUP_THREAD) */
  weft_worker_entry_cb entry;     /* or NULL and entry_name */
  /* thread or process: a registered entry (process: run in this executable) */
  const char *entry_name;
  /* process (kind WEFT_SUP_PROCESS) */
  const char *file;               /* NULL with entry_name: this executable */
  const char *const *args;
  const char *const *env;
  weft_stdio_t stdio[3];
  uint32_t shutdown_ms;           /* SIGTERM to SIGKILL; 0: 5000 */
  /* nested (kind WEFT_SUP_NESTED) */
  const weft_sup_options_t *sup;
  /* thread or process */
  const void *payload;            /* msgpack bytes copied into each start's first message */
  size_t payload_len;
  weft_sup_msg_cb make_msg;       /* instead of payload: build the message */
  weft_port_message_cb on_message;  /* messages from the child; the port's user data
                                       is the weft_sup_child_t */
  void *data;                     /* the child handle's initial user data */
  /* watch (kind WEFT_SUP_WATCH): the service, watched from node (this
   * supervisor's context's node) */
  weft_node_t *node;
  const char *service;
  /* any kind: started only by a group restart (see the top) */
  bool standby;
} weft_sup_child_spec_t;

/* Called when a child has been started (its port, if any, is open). */
typedef void (*weft_sup_child_cb)(weft_sup_t *sup, weft_sup_child_t *child);
/* Called for each exit of a child, before its restart is armed. When final is
 * true the child will not be started again and its handle is freed after the
 * callback returns. For the exit that breaks the restart intensity,
 * weft_sup_gave_up() is already true here (on_give_up follows once every
 * child stopped). */
typedef void (*weft_sup_exit_cb)(weft_sup_t *sup, weft_sup_child_t *child,
                                 const weft_sup_exit_t *why, bool final);
/* Called once when the supervisor gives up (too many restarts), after every
 * child stopped; last is the exit that broke the limit. The supervisor is then
 * idle: close it. */
typedef void (*weft_sup_give_up_cb)(weft_sup_t *sup, const weft_sup_exit_t *last);
/* Called once when weft_sup_close finished; the supervisor is freed after it. */
typedef void (*weft_sup_close_cb)(weft_sup_t *sup);

typedef struct {
  uint32_t max_restarts;    /* more than this many restarts ... ; 0: 3 */
  uint32_t period_ms;       /* ... within this period and the supervisor gives up; 0: 5000 */
  uint32_t backoff_min_ms;  /* 0: 10 */
  uint32_t backoff_max_ms;  /* 0: 2000 */
} weft_sup_limits_t;

struct weft_sup_options_s {
  weft_sup_strategy_t strategy;
  weft_sup_limits_t limits;
  const weft_sup_child_spec_t *children;
  size_t nchildren;
  uint64_t seed;                 /* jitter seed; 0: from the clock */
  weft_sup_child_cb on_child_start;
  weft_sup_exit_cb on_child_exit;
  weft_sup_give_up_cb on_give_up;
  void *data;                    /* the supervisor's user data */
};

/* weft_sup_new: creates a supervisor on ctx (the calling thread's context) and
 * starts its children in order. All or nothing: if a child cannot be started,
 * those already started are stopped (no callback is called) and the error is
 * returned. Returns 0 and sets *out, WEFT_EINVAL, WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM, or the start error of the first child that failed. */
WEFT_EXTERN int weft_sup_new(weft_ctx_t *ctx, const weft_sup_options_t *opts, weft_sup_t **out);

/* weft_sup_close: stops every child (last started first), cancels pending
 * restarts, then calls cb (may be NULL) and frees the supervisor. Idempotent;
 * non-blocking. No restart and no give-up happens after it. Returns 0,
 * WEFT_EINVAL (NULL) or WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_sup_close(weft_sup_t *sup, weft_sup_close_cb cb);

/* weft_sup_start_child: adds a child at the end and starts it (a standby
 * child is only added). Returns 0 and sets *out (may be NULL), or the start
 * error (nothing added). */
WEFT_EXTERN int weft_sup_start_child(weft_sup_t *sup, const weft_sup_child_spec_t *spec,
                                     weft_sup_child_t **out);

/* weft_sup_stop_child: the child will not be restarted; it is removed when it
 * exits (on_child_exit with final true). It is given grace_ms to exit by
 * itself (after the caller asked it to, e.g. with a message), then stopped.
 * grace_ms 0: stop it now. A child waiting for a restart is removed at once.
 * Idempotent. Returns 0, WEFT_EINVAL (NULL) or WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_sup_stop_child(weft_sup_child_t *child, uint32_t grace_ms);

/* weft_sup_restart_child: stops the child and starts it again now (no
 * back-off, not counted against the intensity). Returns 0, WEFT_EINVAL
 * (NULL), WEFT_EWRONGTHREAD, or WEFT_EBUSY (the child is not running, or is
 * being removed). */
WEFT_EXTERN int weft_sup_restart_child(weft_sup_child_t *child);

/* Questions. */
WEFT_EXTERN size_t weft_sup_count(const weft_sup_t *sup);
/* weft_sup_child_at: the i-th child in start order, or NULL. */
WEFT_EXTERN weft_sup_child_t *weft_sup_child_at(const weft_sup_t *sup, size_t i);
WEFT_EXTERN bool weft_sup_gave_up(const weft_sup_t *sup);
WEFT_EXTERN void *weft_sup_data(const weft_sup_t *sup);
WEFT_EXTERN weft_ctx_t *weft_sup_ctx(const weft_sup_t *sup);
/* weft_sup_restarts: restarts done so far (group restarts count once). */
WEFT_EXTERN uint64_t weft_sup_restarts(const weft_sup_t *sup);

WEFT_EXTERN weft_sup_t *weft_sup_child_sup(const weft_sup_child_t *child);
WEFT_EXTERN const char *weft_sup_child_id(const weft_sup_child_t *child);
WEFT_EXTERN weft_sup_kind_t weft_sup_child_kind(const weft_sup_child_t *child);
/* weft_sup_child_running: started and not yet exited. */
WEFT_EXTERN bool weft_sup_child_running(const weft_sup_child_t *child);
/* weft_sup_child_port: the port to the running child (thread or process), or NULL. */
WEFT_EXTERN weft_port_t *weft_sup_child_port(const weft_sup_child_t *child);
WEFT_EXTERN weft_worker_t *weft_sup_child_worker(const weft_sup_child_t *child);
WEFT_EXTERN weft_child_t *weft_sup_child_process(const weft_sup_child_t *child);
WEFT_EXTERN weft_sup_t *weft_sup_child_nested(const weft_sup_child_t *child);
/* weft_sup_child_pid: the running process's pid, or 0. */
WEFT_EXTERN int weft_sup_child_pid(const weft_sup_child_t *child);
/* weft_sup_child_starts: times the child was started (1 + its restarts). */
WEFT_EXTERN uint64_t weft_sup_child_starts(const weft_sup_child_t *child);
/* weft_sup_child_exit: the last exits, newest first: i = 0 is the last one.
 * Returns 0 and fills *out, or WEFT_ENOENT (fewer than i + 1 recorded; the
 * last 8 are kept). */
WEFT_EXTERN int weft_sup_child_exit(const weft_sup_child_t *child, size_t i,
                                    weft_sup_exit_t *out);
/* weft_sup_child_backoff_ms: the delay chosen for the pending (or last)
 * restart of this child. */
WEFT_EXTERN uint32_t weft_sup_child_backoff_ms(const weft_sup_child_t *child);
WEFT_EXTERN void *weft_sup_child_data(const weft_sup_child_t *child);
WEFT_EXTERN void weft_sup_child_set_data(weft_sup_child_t *child, void *data);
/* weft_sup_child_from_port: the child whose port this is (the port's user data). */
WEFT_EXTERN weft_sup_child_t *weft_sup_child_from_port(const weft_port_t *port);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_SUPERVISOR_H */
