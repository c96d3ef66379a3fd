/* weft/balancer.h: spreading connections across workers (Node's cluster, for
 * threads and processes), with restarts, drain and rolling reload.
 *
 * The balancer listens on TCP (IPv4 or IPv6) or a Unix socket and starts its
 * workers under a supervisor (one_for_one; weft/supervisor.h). Each worker's
 * entry calls weft_balancer_worker_start on its own context and from then on
 * gets connections as weft_conn_t, already opened on its own loop. Policies:
 *   ROUND_ROBIN        each ready worker gets connections in turn, like
 *                      SCHED_RR;
 *   LEAST_CONNECTIONS  the worker with fewest open connections gets the next;
 *   REUSEPORT          one listening socket per worker, SO_REUSEPORT set
 *                      before bind; each worker accepts; spread in turn
 *                      (an eBPF program) or by the kernel's hash (below);
 *   SHARED             one listening socket that every worker accepts from,
 *                      like SCHED_NONE, kept even (below).
 *
 * Who accepts. Worker threads (WEFT_SUP_THREAD), with every policy but
 * REUSEPORT, accept themselves from the one listening socket through a
 * gate: each publishes a count (ROUND_ROBIN: connections it accepted since
 * it joined, so turns; LEAST_CONNECTIONS and SHARED: connections it has
 * open) in memory shared with the balancer and its peers, and accepts (at
 * most 16 per wake-up) only while its count is at most the least count of
 * the workers accepting plus a slack: 0 while that least count is below 8,
 * 1 below 64, else 4. A worker past it stops polling the listener until a
 * peer's count catches up (that peer wakes it), one of its own connections
 * closes, or 50 ms passed (a peer whose loop is blocked cannot hold the
 * others back: after 50 ms a paused worker takes one batch regardless if
 * connections still wait). So
 * a burst of N connections over W running workers ends within 2 of even
 * while N/W < 64, and no connection costs the balancer's thread anything.
 * Worker processes share no memory with the balancer: with ROUND_ROBIN and
 * LEAST_CONNECTIONS the balancer accepts and hands each connection to the
 * chosen worker (its fd with SCM_RIGHTS; the worker reports each close);
 * SHARED processes accept as they wake (no gate: whoever wakes first).
 *
 * No connection is lost in hand-off: the balancer keeps a duplicate of each
 * connection it handed over until the worker acknowledges it (a worker does so
 * before it reads from it); if the post fails or the worker exits first, the
 * connection goes to another worker (or waits until one is ready); only a
 * failed allocation for the hand-off itself closes that one connection (the
 * client sees a reset, nothing else is affected). Listening
 * sockets stay open in the balancer while it serves, so a worker that
 * exits, drains or restarts never closes one: connections waiting in its
 * accept queue are not reset, and while a listener has no ready worker the
 * balancer accepts from it itself and hands the connections round robin.
 *
 * The balancer stops listening (closes its listeners: new clients are
 * refused at once, not left waiting in a queue nobody accepts from) in two
 * cases only: when it closes (weft_balancer_close: the drain of every
 * worker), and when its supervisor gives up (more than limits.max_restarts
 * restarts within limits.period_ms): then pending connections are dropped,
 * every worker is stopped and on_give_up reports WEFT_EGAVEUP with the exit
 * that broke the limit. A program should then close the balancer and exit
 * non-zero, so that its service manager starts it again (as an Erlang
 * supervisor's failure goes to its parent).
 *
 * Drain of a worker: it stops getting connections (its listeners are closed
 * on its side), each open connection is offered to on_drain, and the worker
 * exits once its last connection closed, or is stopped after the deadline.
 * Rolling reload: each worker in turn is replaced; the new one reports ready
 * before the old one drains; listeners stay open throughout.
 *
 * REUSEPORT spreads in turn where the process may attach an eBPF program to
 * the listeners' group (weft_balancer_steered), else by the kernel's hash.
 *
 * reuseport and net.ipv4.tcp_migrate_req: since the balancer never closes a
 * listener while it serves, a worker's exit does not reset its queue whatever
 * that setting is; it matters only when the balancer itself closes.
 *
 * Programs that serve sockets should ignore SIGPIPE (as Node.js does), in
 * the balancer's process and in worker processes: a peer that resets while
 * a reply is written must not kill the process.
 *
 * Threads: the balancer's functions and callbacks run on its context's thread;
 * the worker-side functions on the worker's context thread. The actions
 * (new, close, reload, drain_worker, stats) return WEFT_EWRONGTHREAD when
 * called from another. */
#ifndef WEFT_BALANCER_H
#define WEFT_BALANCER_H

#include "common.h"
#include "list.h"
#include "port.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_balancer_s weft_balancer_t;
typedef struct weft_balancer_worker_s weft_balancer_worker_t;

typedef enum {
  WEFT_BALANCER_ROUND_ROBIN = 0,
  WEFT_BALANCER_LEAST_CONNECTIONS = 1,
  WEFT_BALANCER_REUSEPORT = 2,
  WEFT_BALANCER_SHARED = 3
} weft_balancer_policy_t;

/* weft_balancer_policy_parse: "round_robin", "least_connections", "reuseport"
 * or "shared". Returns 0 and sets *out, or WEFT_EINVAL. Any thread. */
WEFT_EXTERN int weft_balancer_policy_parse(const char *name, weft_balancer_policy_t *out);
WEFT_EXTERN const char *weft_balancer_policy_name(weft_balancer_policy_t policy);

typedef void (*weft_balancer_cb)(weft_balancer_t *b);
/* Called once when a rolling reload finished (err 0) or stopped (err). */
typedef void (*weft_balancer_reload_cb)(weft_balancer_t *b, int err);
typedef void (*weft_balancer_exit_cb)(weft_balancer_t *b, size_t worker,
                                      const weft_sup_exit_t *why);
/* Called once when the balancer's supervisor gave up (too many restarts):
 * err is WEFT_EGAVEUP, last the worker exit that broke the limit (code,
 * signal, message). The listeners were closed when the limit broke (clients
 * are refused from then on), and every worker has stopped. The balancer
 * serves nothing more: close it here or later (weft_balancer_close), and let
 * the program exit non-zero. */
typedef void (*weft_balancer_give_up_cb)(weft_balancer_t *b, int err,
                                         const weft_sup_exit_t *last);

typedef struct {
  const char *host;               /* "127.0.0.1", "::1", "0.0.0.0", "::" ...; NULL: "127.0.0.1" */
  int port;                       /* TCP port; 0: any free one (weft_balancer_port tells) */
  const char *path;               /* a Unix socket path instead of host/port (not reuseport);
                                     unlinked when the balancer closes */
  int backlog;                    /* 0: 511 */
  weft_balancer_policy_t policy;
  unsigned workers;               /* 0: weft_available_parallelism() */
  weft_sup_child_spec_t worker;   /* how to start one worker: a thread entry or a process
                                     (its entry calls weft_balancer_worker_start); its
                                     on_message gets the workers' own messages */
  weft_sup_limits_t limits;       /* restart intensity and back-off */
  uint32_t drain_timeout_ms;      /* drain deadline; 0: 10000 */
  weft_balancer_cb on_ready;      /* once, when every first worker is ready */
  weft_balancer_exit_cb on_worker_exit;  /* each exit of a worker (optional) */
  weft_balancer_give_up_cb on_give_up;  /* too many restarts: the workers are down and
                                          the listeners closed; NULL: the balancer
                                          closes itself */
  bool reuseport_hash;            /* REUSEPORT: true leaves the spread to the kernel's
                                     hash; false (default): connections in turn, by an
                                     eBPF program, where the process may load one
                                     (weft_balancer_steered) */
  void *data;
  bool defer_accept;              /* TCP: a connection is accepted once its first bytes
                                     arrived (TCP_DEFER_ACCEPT, nginx's `listen ...
                                     deferred`), so the worker is woken once per
                                     connection and its on_first_data gets them. Only
                                     for protocols where the client speaks first (HTTP):
                                     a client that connects and sends nothing is
                                     accepted after about a second (the kernel's first
                                     SYN-ACK retransmission), or when it sends. Ignored
                                     for a Unix socket. */
} weft_balancer_options_t;

/* weft_balancer_new: binds and listens, then starts the workers. Thread of
 * ctx. All or nothing. Returns 0 and sets *out, WEFT_EINVAL, UV_ENOTSUP
 * (reuseport on a Unix socket), WEFT_ENOMEM, a bind/listen error
 * (UV_EADDRINUSE ...) or a worker start error. */
WEFT_EXTERN int weft_balancer_new(weft_ctx_t *ctx, const weft_balancer_options_t *opts,
                                  weft_balancer_t **out);

/* weft_balancer_close: closes the listeners at once (new clients are
 * refused; with ROUND_ROBIN and LEAST_CONNECTIONS, connections the kernel had
 * already queued are accepted and handed out first), drains every worker (deadline drain_timeout_ms), then calls cb
 * (may be NULL) and frees the balancer. Idempotent; non-blocking. Returns 0,
 * WEFT_EINVAL (NULL) or WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_balancer_close(weft_balancer_t *b, weft_balancer_cb cb);

/* weft_balancer_reload: replaces the workers one at a time (start a new one,
 * wait for it to be ready, drain the old one, wait for it to exit). cb may be
 * NULL; a reload the give-up stops reports WEFT_EGAVEUP. Returns 0, WEFT_EBUSY
 * (a reload is running), WEFT_ECLOSED or WEFT_EGAVEUP (its supervisor gave
 * up). */
WEFT_EXTERN int weft_balancer_reload(weft_balancer_t *b, weft_balancer_reload_cb cb);

/* weft_balancer_drain_worker: drains worker i for good (its place stays
 * empty; with reuseport the balancer serves its listener). */
WEFT_EXTERN int weft_balancer_drain_worker(weft_balancer_t *b, size_t i);

typedef struct {
  bool running;          /* a worker process or thread exists for this place */
  bool ready;            /* it gets connections */
  bool draining;
  int pid;               /* a process worker's pid; else 0 */
  uint64_t starts;       /* workers started for this place (1 + restarts + reloads) */
  uint64_t connections;  /* connections it got (handed or accepted), all its workers */
  uint64_t open;         /* open now (handed and not reported closed) */
  uint64_t requests;     /* requests its workers reported (weft_conn_request_done) */
  uint64_t rehanded;     /* connections handed elsewhere because its worker died */
} weft_balancer_stats_t;

/* weft_balancer_workers: the number of worker places. */
WEFT_EXTERN size_t weft_balancer_workers(const weft_balancer_t *b);
/* weft_balancer_stats: counts of worker place i as last reported. Workers
 * report connections the balancer handed them (worker processes of
 * round_robin and least_connections) as they arrive and close; connections
 * they accepted themselves (worker threads of every policy, reuseport and
 * shared processes) and request counts every 100 ms and at exit (a report
 * per connection would cost a wake-up of the balancer's thread per
 * connection). */
WEFT_EXTERN int weft_balancer_stats(const weft_balancer_t *b, size_t i,
                                    weft_balancer_stats_t *out);
/* weft_balancer_port: the TCP port listened on (0 for a Unix socket). */
WEFT_EXTERN int weft_balancer_port(const weft_balancer_t *b);
/* weft_balancer_listening: true while the listeners are open (false once
 * closing or given up). */
WEFT_EXTERN bool weft_balancer_listening(const weft_balancer_t *b);
/* weft_balancer_gave_up: true once its supervisor gave up. */
WEFT_EXTERN bool weft_balancer_gave_up(const weft_balancer_t *b);
/* weft_balancer_steered: true if the REUSEPORT listeners are steered: an
 * eBPF program (BPF_PROG_TYPE_SK_REUSEPORT) attached to their group when they
 * were opened hands new connections to them in turn, so N connections made one
 * after another land N/workers on each. It needs CAP_BPF and CAP_NET_ADMIN
 * (or CAP_SYS_ADMIN) and a kernel of 5.12 or later; false for the other
 * policies, with reuseport_hash set, or when the kernel refused (then the
 * kernel's hash of the addresses and ports spreads them, as without it).
 * weft_balancer_steer_reason: NULL when steered, else why not, one line
 * ("bpf(BPF_PROG_LOAD): Operation not permitted", "turned off
 * (reuseport_hash)" ...), valid while b is. Thread of b's context (read
 * only). */
WEFT_EXTERN bool weft_balancer_steered(const weft_balancer_t *b);
WEFT_EXTERN const char *weft_balancer_steer_reason(const weft_balancer_t *b);
/* weft_balancer_accepted: connections accepted by the balancer itself. */
WEFT_EXTERN uint64_t weft_balancer_accepted(const weft_balancer_t *b);
WEFT_EXTERN weft_sup_t *weft_balancer_supervisor(const weft_balancer_t *b);
WEFT_EXTERN void *weft_balancer_data(const weft_balancer_t *b);
/* weft_balancer_reuseport_migrates: true if net.ipv4.tcp_migrate_req is 1
 * (the kernel moves a closed reuseport listener's queue to another). Only
 * matters when the balancer itself closes a listener. Any thread. */
WEFT_EXTERN bool weft_balancer_reuseport_migrates(void);

/* ---- the worker side ---------------------------------------------------- */

/* A connection, allocated by the worker side with opts.conn_size bytes (a
 * user struct whose first member is a weft_conn_t). h is opened on the
 * worker's loop from on_connection on (in on_first_data it is not yet: use
 * weft_conn_try_write and weft_conn_close there); h.stream.data and data are
 * the user's. */
typedef struct weft_conn_s {
  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  void *data;
  weft_balancer_worker_t *worker;
  weft_list_node_t link_;              /* private: in its worker's connections */
  bool handed_;                        /* private: came from the balancer */
  int fd_;                             /* private: its socket until h is opened, else -1 */
} weft_conn_t;

/* Called on the worker's thread: a new connection (read it with
 * uv_read_start(&conn->h.stream, ...)); at drain, for each open connection;
 * and when a connection's handle has closed (release what the user struct
 * holds; the memory itself goes after the callback). */
typedef void (*weft_conn_cb)(weft_conn_t *conn);
/* The first bytes of a connection (on_first_data): valid during the call. */
typedef void (*weft_conn_data_cb)(weft_conn_t *conn, const char *data, size_t len);
typedef void (*weft_balancer_worker_cb)(weft_balancer_worker_t *w);

typedef struct {
  size_t conn_size;               /* bytes per connection; 0: sizeof(weft_conn_t) */
  weft_conn_cb on_connection;     /* required */
  weft_conn_cb on_drain;          /* drain began: close conn now if idle, or after
                                     its current request; NULL: let it finish */
  weft_conn_cb on_close;          /* optional */
  weft_port_message_cb on_message;  /* messages from the parent that are not the
                                       balancer's */
  weft_balancer_worker_cb on_drained;  /* the last connection closed after a drain;
                                          NULL: exit (a thread: weft_worker_exit 0; a
                                          process: its port and handles close and its
                                          loop runs out; handles of the program's own
                                          keep it until the drain deadline) */
  void *data;
  weft_conn_data_cb on_first_data;  /* optional: a new connection's first bytes (below) */
} weft_balancer_worker_options_t;

/* on_first_data: the worker reads a new connection's first bytes (one recv
 * of up to WEFT_CONN_FIRST_DATA_MAX bytes) as it takes the connection,
 * before its handle is opened or registered with the loop, and gives them
 * here. Answer with weft_conn_try_write; weft_conn_close here closes the
 * socket at once, so a short connection served in this callback costs its
 * accept, one read, one write and the close (a connection whose handle was
 * opened costs three system calls more: libuv sets it non-blocking again,
 * registers it with the loop's epoll and removes it at close). If it
 * returns without closing, the handle is opened and on_connection follows
 * (what was given here is not read again: keep what you need). When nothing
 * has arrived yet (the read would block), the peer already closed or the
 * read fails, on_connection comes alone and the read there tells. Pair with
 * the balancer's defer_accept, so that the bytes are usually there. */
#define WEFT_CONN_FIRST_DATA_MAX 16384

/* weft_balancer_worker_start: makes the calling worker (thread or process) a
 * worker of the balancer that started it: takes over its parent port and
 * reports ready. Thread of ctx. Returns 0 and sets *out (may be NULL),
 * WEFT_EINVAL (no parent port), WEFT_ECLOSED (the parent port is closed),
 * WEFT_ENOMEM. The worker side is freed when
 * the parent port closes and its last connection closed. */
WEFT_EXTERN int weft_balancer_worker_start(weft_ctx_t *ctx,
                                           const weft_balancer_worker_options_t *opts,
                                           weft_balancer_worker_t **out);
WEFT_EXTERN bool weft_balancer_worker_draining(const weft_balancer_worker_t *w);
WEFT_EXTERN void *weft_balancer_worker_data(const weft_balancer_worker_t *w);
/* weft_balancer_worker_port: the port to the balancer. */
WEFT_EXTERN weft_port_t *weft_balancer_worker_port(const weft_balancer_worker_t *w);

/* weft_conn_close: closes the connection (idempotent). Worker's thread. */
WEFT_EXTERN void weft_conn_close(weft_conn_t *conn);
/* weft_conn_try_write: writes what the socket takes now, without queueing
 * (uv_try_write), whether the handle is opened yet or not (in on_first_data
 * it is not; the write then never raises SIGPIPE). Returns the bytes
 * written, UV_EAGAIN when the socket takes none now, or an error (UV_EPIPE,
 * UV_ECONNRESET ..., WEFT_EINVAL for NULL or a closing connection).
 * Worker's thread. */
WEFT_EXTERN int weft_conn_try_write(weft_conn_t *conn, const uv_buf_t bufs[], unsigned nbufs);
/* weft_conn_request_done: counts one request served on this connection. */
WEFT_EXTERN void weft_conn_request_done(weft_conn_t *conn);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_BALANCER_H */
