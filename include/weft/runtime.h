/* weft/runtime.h: the runtime and its contexts.
 *
 * Usually one runtime per program, on its main thread (a thread holds at most
 * one; runtimes on different threads are independent, each with its own port
 * bounds). It holds the configuration, the registry of named worker entries
 * and the main context. A context is one thread + one uv_loop_t
 * + one wake-up handle + the ports and actors bound to it. The main context
 * either owns its loop or attaches to the caller's loop, so weft can be linked
 * into an existing libuv program: weft then adds a few unref'd handles to that
 * loop and the program keeps running it as before.
 *
 * Threads: weft_runtime_* are called on the thread that created the runtime
 * (the main context's thread) unless said otherwise. */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uv_loop_t *loop;            /* attach the main context to this loop; NULL: own one */
  uint32_t port_hwm_msgs;     /* default inbound bound per port; 0: WEFT_PORT_DEFAULT_HWM_MSGS */
  size_t port_hwm_bytes;      /* default byte bound per port; 0: WEFT_PORT_DEFAULT_HWM_BYTES */
  uint32_t batch;             /* messages a context delivers before yielding to I/O; 0: 1024 */
  int32_t spin_us;            /* most a context spins for work before sleeping;
                                 0: default (50), negative: never spin */
} weft_runtime_options_t;

/* weft_runtime_new: creates the runtime and its main context on the calling
 * thread. opts may be NULL (all defaults). All or nothing: on failure nothing
 * is left behind. Returns 0 and sets *out, or WEFT_ENOMEM / a libuv code /
 * WEFT_EBUSY (this thread already has a context). */
WEFT_EXTERN int weft_runtime_new(weft_runtime_t **out, const weft_runtime_options_t *opts);

/* weft_runtime_main: the main context. */
WEFT_EXTERN weft_ctx_t *weft_runtime_main(weft_runtime_t *rt);

/* weft_runtime_run: runs the main loop (UV_RUN_DEFAULT) until nothing keeps it
 * alive. Blocks. Only for a runtime that owns its loop (else WEFT_EINVAL:
 * run your own loop). Returns 0, WEFT_EWRONGTHREAD, or a libuv code. */
WEFT_EXTERN int weft_runtime_run(weft_runtime_t *rt);

/* weft_runtime_free: (WEFT_EWRONGTHREAD off the runtime's thread: nothing
 * done) terminates and joins any worker still running, closes
 * every port still open on the main context (peers see the close), closes
 * weft's handles and runs the loop until their close callbacks ran, then frees
 * the runtime (and closes the loop if weft owns it). Blocks while workers stop.
 * Returns 0, or UV_EBUSY if weft's own loop still had foreign handles (they are
 * left open, the loop is not closed, and the runtime is freed anyway). */
WEFT_EXTERN int weft_runtime_free(weft_runtime_t *rt);

/* weft_runtime_register: make entry startable by name (weft_worker_spawn with
 * opts.entry_name, and child processes started with an entry name). The name
 * is copied. Returns 0, WEFT_EBUSY (name taken), WEFT_ENOMEM, WEFT_EINVAL.
 * Any thread. */
typedef int (*weft_worker_entry_cb)(weft_ctx_t *ctx, weft_msg_t *msg);
WEFT_EXTERN int weft_runtime_register(weft_runtime_t *rt, const char *name,
                                      weft_worker_entry_cb entry);
/* weft_runtime_lookup: the entry registered as name, or NULL. Any thread. */
WEFT_EXTERN weft_worker_entry_cb weft_runtime_lookup(weft_runtime_t *rt, const char *name);

/* ---- contexts --------------------------------------------------------- */

/* weft_ctx_current: the calling thread's context, or NULL. Any thread. */
WEFT_EXTERN weft_ctx_t *weft_ctx_current(void);
WEFT_EXTERN uv_loop_t *weft_ctx_loop(const weft_ctx_t *ctx);
WEFT_EXTERN weft_runtime_t *weft_ctx_runtime(const weft_ctx_t *ctx);

/* weft_ctx_parent_port: in a worker, the port to its parent; in the main
 * context of a child process, the channel to the parent process (as
 * weft_runtime_parent_port); else NULL. */
WEFT_EXTERN weft_port_t *weft_ctx_parent_port(const weft_ctx_t *ctx);

/* weft_ctx_should_stop: true once the worker running ctx was asked to stop
 * (weft_worker_terminate, weft_worker_exit). Long work on the context's thread
 * polls it and returns early. Any thread. */
WEFT_EXTERN bool weft_ctx_should_stop(const weft_ctx_t *ctx);

typedef struct {
  uint64_t msgs_in;         /* messages delivered to callbacks on this context */
  uint64_t msgs_out;        /* messages posted from this context's thread */
  uint64_t queue_depth;     /* messages now waiting in this context's ports */
  uint64_t queue_peak;      /* most messages seen waiting in one port at a delivery */
  uint64_t ports_open;      /* ports now bound to this context */
  uint64_t undeliverable;   /* messages discarded because their port closed */
  uint64_t wakeups;         /* times the context was woken from sleep by a post */
  uint64_t spins_hit;       /* times spinning found work (a wake-up saved) */
  uint64_t loop_idle_ns;    /* time the loop spent waiting for events */
  uint64_t loop_age_ns;     /* time since the context started */
  double loop_utilization;  /* 1 - idle/age, in [0, 1] */
} weft_ctx_stats_t;

/* weft_ctx_stats: fills *out. Owner thread of ctx. */
WEFT_EXTERN int weft_ctx_stats(weft_ctx_t *ctx, weft_ctx_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RUNTIME_H */
