/* weft/worker.h: worker threads, each with its own context and loop.
 *
 * weft_worker_spawn starts a thread, builds a context on it, and calls the
 * entry function with workerData. When the entry returns, the worker runs its
 * loop until nothing keeps it alive (a started, ref'd port, a timer, a socket).
 * The worker's parent port (weft_ctx_parent_port in the worker) is entangled
 * with the worker's port (weft_worker_port in the parent).
 *
 * Exit: the entry returns and the loop runs out of work (exit code: the entry's
 * return value if >= 0), weft_worker_exit(ctx, code), or weft_worker_terminate
 * from the parent (exit code 1, at the next callback boundary). An entry that
 * returns a negative code reports it as an error (on_error), then exits with 1.
 * A callback that never returns cannot be stopped; long work cooperates by
 * polling weft_ctx_should_stop. Threads share the fate of the process: crash
 * isolation needs child processes.
 *
 * Callbacks run on the parent's context, in this order: on_online (once the
 * entry is about to run), on_error (at most once), on_exit (exactly once, last).
 * A running worker keeps its parent's loop alive until its on_exit has run
 * (with or without on_message; in attach mode too).
 *
 * Handle lifetime: the worker handle, and the port weft_worker_port returned,
 * stay valid after on_exit until the parent releases the handle with
 * weft_worker_release (in on_exit or later), or until the parent's context
 * ends (weft_runtime_free for the main context), whichever comes first. In
 * between, a saved port is closed (weft_port_post returns WEFT_ECLOSED),
 * weft_worker_port returns NULL and weft_worker_terminate WEFT_ECLOSED. A
 * program that starts many workers over time releases each one. */
#ifndef WEFT_WORKER_H
#define WEFT_WORKER_H

#include "common.h"
#include "port.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*weft_worker_online_cb)(weft_worker_t *w);
typedef void (*weft_worker_error_cb)(weft_worker_t *w, int err);
typedef void (*weft_worker_exit_cb)(weft_worker_t *w, int exit_code);

typedef struct {
  weft_worker_entry_cb entry;     /* the function to run, or NULL and ... */
  const char *entry_name;         /* ... a name registered in the runtime */
  weft_msg_t *msg;                /* workerData, the entry's msg; taken on success (may be NULL) */
  size_t stack_size;              /* 0: the platform default */
  uint32_t port_hwm_msgs;         /* bounds of both ends of the parent channel; 0: runtime's */
  size_t port_hwm_bytes;
  weft_worker_online_cb on_online;
  weft_port_message_cb on_message;  /* messages from the worker's parent port */
  weft_worker_error_cb on_error;
  weft_worker_exit_cb on_exit;
  void *data;                     /* the worker's user data (weft_worker_data) */
} weft_worker_options_t;

/* weft_worker_spawn: starts a worker. Thread of ctx (the parent). All or
 * nothing: on failure no thread runs, no callback is called, and opts->msg is
 * still the caller's. Returns 0 and sets *out (valid until released: see
 * weft_worker_release),
 * WEFT_ENOENTRY, WEFT_EINVAL, WEFT_ENOMEM, or a libuv code. */
WEFT_EXTERN int weft_worker_spawn(weft_ctx_t *ctx, const weft_worker_options_t *opts,
                                  weft_worker_t **out);

/* weft_worker_port: the parent's end of the worker's channel, or NULL once it
 * has closed. Parent thread. It is started with opts.on_message (if given) and
 * closes when the worker exits. The pointer stays valid (closed: posts return
 * WEFT_ECLOSED) until the worker handle is released. */
WEFT_EXTERN weft_port_t *weft_worker_port(weft_worker_t *w);

/* weft_worker_release: the parent is done with handle w. Parent thread. Called
 * before on_exit (or inside it), w is freed once on_exit has returned; called
 * after, w is freed now. Either way neither w nor its port may be used once
 * on_exit has returned. Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_worker_release(weft_worker_t *w);

/* weft_worker_terminate: ask the worker to stop at the next callback boundary.
 * Any thread; non-blocking; idempotent. on_exit follows with code 1. Returns
 * 0, WEFT_EINVAL, or WEFT_ECLOSED once on_exit has returned. */
WEFT_EXTERN int weft_worker_terminate(weft_worker_t *w);

/* weft_worker_exit: in the worker (its own thread), stop the loop at the next
 * callback boundary and exit with code. In the main context of a child
 * process running its entry, it stops the loop the same way and
 * weft_runtime_child_entry returns with *exit_code = code (worker code runs
 * unchanged in a child). Returns 0, WEFT_EINVAL (neither), WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_worker_exit(weft_ctx_t *ctx, int code);

WEFT_EXTERN void *weft_worker_data(const weft_worker_t *w);
WEFT_EXTERN void weft_worker_set_data(weft_worker_t *w, void *data);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_WORKER_H */
