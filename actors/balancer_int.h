/* balancer_int.h: NOT PUBLIC. What the balancer's files share: the wire
 * protocol between the two sides, the socket helpers and the balancer side's
 * state. Written against the public API only (the microkernel rule).
 *   balancer.c          the balancer side: lifecycle (new, close, reload,
 *                       drain), instances, messages from workers, supervisor
 *                       callbacks, listeners, public accessors and stats
 *   balancer_handoff.c  the balancer side's hand-off: picking a worker,
 *                       sending a connection, in-flight duplicates and their
 *                       acknowledgement, pending connections, its own accept
 *                       polls on the listeners
 *   balancer_worker.c   the worker side
 *   balancer_sock.c     sockets and protocol messages
 *   balancer_gate.c     the accept gate of shared worker threads
 *
 * Protocol: every message of the balancer's is a msgpack map whose first key
 * is "wb" (the operation); anything else on the channel is the user's.
 *   balancer -> worker
 *     HELLO  {wb, pipe}          [+ listening socket: shared / reuseport]
 *            [gate: entry index] [+ the gate table: shared, worker threads]
 *     CONN   {wb, pipe}          + connected socket (round robin / least conns)
 *     DRAIN  {wb}
 *   worker -> balancer
 *     READY  {wb}
 *     STATUS {wb, taken, accepted, closed, reqs}   cumulative counts: CONN
 *            messages received, connections accepted itself, closed, requests
 * Per channel FIFO makes "taken" an acknowledgement of every CONN up to it,
 * and makes DRAIN arrive after every CONN posted before it. */
#ifndef WEFT_BALANCER_INT_H
#define WEFT_BALANCER_INT_H

#include <stdatomic.h>

#include "weft.h"
#include "weft/balancer.h"

enum {
  WEFT__BAL_HELLO = 1,
  WEFT__BAL_CONN = 2,
  WEFT__BAL_DRAIN = 3,
  WEFT__BAL_READY = 10,
  WEFT__BAL_STATUS = 11
};

/* weft__bal_op: the operation of a balancer message, or 0 for a user's. */
int weft__bal_op(const weft_msg_t *msg);

/* weft__bal_msg: a new message {wb: op} (with pipe when op carries a socket)
 * and, if fd >= 0, fd in its transfer list (taken). On failure fd is still the
 * caller's. */
int weft__bal_msg(int op, bool pipe, int fd, weft_msg_t **out);

/* weft__bal_hello: a HELLO {wb, pipe[, gate]} with the listening socket fd
 * (taken) and, if gbuf is not NULL, a handle of the gate table and entry
 * index gate. On failure fd is still the caller's (gbuf always is). */
int weft__bal_hello(bool pipe, int fd, weft_buf_t *gbuf, size_t gate, weft_msg_t **out);

/* weft__bal_listen: a listening socket for opts (TCP on host:port, or Unix
 * path), non-blocking and close-on-exec; with reuseport SO_REUSEPORT is set
 * before bind. port is the TCP port to bind (overrides opts->port). Returns 0
 * and sets *fd and *bound_port, or a negative errno (libuv code). */
int weft__bal_listen(const weft_balancer_options_t *opts, int port, bool reuseport, int *fd,
                     int *bound_port);

/* weft__bal_dup: a close-on-exec duplicate of fd, or a negative errno. */
int weft__bal_dup(int fd);

/* ---- the accept gate (balancer_gate.c) -------------------------------------- */

/* A worker accepts while its count is at most the least active one's + a
 * slack (weft__gate_slack); a paused one accepts a batch regardless after
 * WEFT__GATE_PATIENCE_MS without a wake-up (a peer's loop may be blocked). */
#define WEFT__GATE_PATIENCE_MS 50

/* What an entry counts: connections open (shared, least connections), or
 * connections accepted since the worker joined (round robin: turns). */
enum { WEFT__GATE_OPEN = 0, WEFT__GATE_ACCEPTED = 1 };

/* One worker run's entry, on its own cache line: written by its worker
 * (open, active), by any worker or the balancer (paused: taken 1 -> 0 by
 * whoever wakes it), read by all. seq_cst throughout (balancer_gate.c says
 * why: the pause/accept handshake). efd is written once by the balancer
 * before the table is first posted (the post publishes it). */
typedef struct {
  _Alignas(64) _Atomic int64_t open;  /* connections accepted through the gate, open */
  _Atomic unsigned active;            /* accepting from the shared listener */
  _Atomic unsigned paused;            /* waits for a wake-up on efd */
  int efd;                            /* an eventfd (the balancer's) */
} weft__gate_entry_t;

typedef struct {
  size_t n;
  unsigned mode;          /* WEFT__GATE_OPEN or _ACCEPTED; set before the first post */
  weft__gate_entry_t e[];
} weft__gate_t;

/* weft__gate_new: a table of n entries (zeroed, each with an eventfd) in a
 * new shared buffer, counting per mode. Returns 0, WEFT_ENOMEM or a negative
 * errno. */
int weft__gate_new(size_t n, unsigned mode, weft_buf_t **out);
/* weft__gate_slack: how far above the least count m a worker may accept:
 * 0 while m < 8 (a few connections split exactly), then 1, then 4 from 64
 * (fewer pauses where one connection is a small share). */
int64_t weft__gate_slack(int64_t m);
/* weft__gate_join_count: the count a new entry starts from: 0, or in
 * WEFT__GATE_ACCEPTED mode the least active count (it takes its turn, it
 * does not catch up on what the others accepted before it). */
int64_t weft__gate_join_count(weft__gate_t *g);
/* weft__gate_of: the table in a gate buffer (at its first 64-byte boundary:
 * a shared buffer's bytes are not aligned to a cache line). */
weft__gate_t *weft__gate_of(const weft_buf_t *buf);
/* weft__gate_free: closes the eventfds and frees the balancer's handle. */
void weft__gate_free(weft_buf_t *buf);
/* weft__gate_eligible: entry i may accept now. */
bool weft__gate_eligible(weft__gate_t *g, size_t i);
/* weft__gate_pause: entry i is not eligible: marks it paused and returns
 * true, or (eligible after all, by the re-check) returns false unpaused. */
bool weft__gate_pause(weft__gate_t *g, size_t i);
/* weft__gate_wake_eligible: after entry self accepted: wakes each paused
 * entry that may accept now. */
void weft__gate_wake_eligible(weft__gate_t *g, size_t self);
/* weft__gate_pass: entry self was the one woken (EPOLLEXCLUSIVE) for a
 * connection it may not take: wakes every other active entry that may
 * (paused ones as weft__gate_wake_eligible does, the others with a plain
 * eventfd write: they try to accept once). */
void weft__gate_pass(weft__gate_t *g, size_t self);
/* weft__gate_wake_all: wakes every paused entry. */
void weft__gate_wake_all(weft__gate_t *g);
/* weft__gate_leave: entry i no longer accepts (drain, exit): cleared, and
 * every paused entry woken to re-check without it. */
void weft__gate_leave(weft__gate_t *g, size_t i);

/* ---- the balancer side's state (balancer.c, balancer_handoff.c) ------------- */

typedef struct {
  uint64_t seq;
  int fd;
} flight_t;

typedef struct slot_s slot_t;
typedef struct inst_s inst_t;

struct inst_s {
  weft_balancer_t *b;
  slot_t *slot;
  weft_sup_child_t *child;
  weft_port_t *port;     /* identity of the running worker's port (not for use:
                            it may have closed; see inst_port) */
  bool ready, draining, full;
  uint64_t sent, taken, accepted, closed, reqs;  /* this run of the worker */
  int gate;              /* its entry in the gate table, or -1 */
  flight_t *fl;          /* ring of handed, unacknowledged connections */
  size_t fl_head, fl_len, fl_cap;
};

struct slot_s {
  inst_t *cur, *incoming;
  int lis;               /* reuseport: its listener; else -1 */
  uint64_t starts, conns, reqs, rehanded;  /* finished runs */
};

typedef struct {
  weft_balancer_t *b;
  int fd;
  slot_t *slot;          /* reuseport */
  uv_poll_t poll;
  bool polling;
} listener_t;

struct weft_balancer_s {
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_balancer_options_t opts;
  weft_sup_t *sup;
  slot_t *slots;
  size_t nslots;
  listener_t *lis;
  size_t nlis;
  int port;
  bool pipe;
  int *pending;          /* ring of connections waiting for a worker */
  size_t p_head, p_len, p_cap;
  size_t rr;
  uint64_t accepted, dropped;
  bool ready_told, closing, quiet;
  bool gave_up;          /* the supervisor gave up: nothing is served any more */
  bool lis_closed;       /* the listeners are closed (closing or gave_up) */
  bool reloading;
  size_t reload_i;
  inst_t *reload_old;
  weft_balancer_reload_cb reload_cb;
  weft_balancer_cb close_cb;
  weft_buf_t *gate;      /* shared worker threads: the accept gate's table */
  inst_t **gate_owner;   /* the instance holding each entry of it, or NULL */
  size_t insts;          /* instances alive */
  size_t handles;        /* poll handles not yet closed */
  weft_metrics_source_t *metrics; /* balancer_metrics.c; NULL with metrics off */
  bool steered;          /* reuseport: the steering program is attached (balancer_bpf.c) */
  char steer_why[192];   /* else why not, for weft_balancer_steer_reason */
};

/* balancer_metrics.c: publish the balancer's figures in the runtime's
 * metrics snapshots (best effort). */
void weft__bal_metrics_start(weft_balancer_t *b);

/* inst_port: the port to post on, or NULL once it closed (a process's port
 * can close before its exit is reported). */
static inline weft_port_t *inst_port(const inst_t *in) {
  return in->port && in->child ? weft_sup_child_port(in->child) : NULL;
}

/* serving: the balancer takes and hands connections (not closing, not given up). */
static inline bool serving(const weft_balancer_t *b) { return !b->closing && !b->gave_up; }

/* open_of: the connections in has open (handed or accepted, not closed). */
static inline uint64_t open_of(const inst_t *in) { return in->sent + in->accepted - in->closed; }

/* ---- hand-off (balancer_handoff.c) ------------------------------------------ */

/* weft__bal_update_polls: polls each listener the balancer should accept on
 * now, stops polling the others (see balancer.c). */
void weft__bal_update_polls(weft_balancer_t *b);

/* weft__bal_accept_queued: round robin and least connections, while polling:
 * accepts and hands out what already waits in the listener's queue. */
void weft__bal_accept_queued(weft_balancer_t *b);

/* weft__bal_flush_pending: hands pending connections to available workers. */
void weft__bal_flush_pending(weft_balancer_t *b);

/* weft__bal_drop_pending: closes every pending connection (counted dropped). */
void weft__bal_drop_pending(weft_balancer_t *b);

/* weft__bal_on_status: a STATUS from in: its counts, and the in-flight
 * duplicates it acknowledged are closed. */
void weft__bal_on_status(inst_t *in, const weft_msg_t *m);

/* weft__bal_on_port_drain: the drain callback of a worker's port: a full
 * worker takes connections again. */
void weft__bal_on_port_drain(weft_port_t *port);

/* weft__bal_gate_claim: a free gate entry for in (reset), or -1. */
int weft__bal_gate_claim(inst_t *in);

/* weft__bal_inst_down: the worker exited: folds its counts into the slot and
 * re-hands what it had not acknowledged. */
void weft__bal_inst_down(inst_t *in);

/* ---- reuseport steering (balancer_bpf.c) ----------------------------------- */

/* weft__bal_steer: attaches to the SO_REUSEPORT group of the n listeners in
 * lis (bound and listening, in bind order) an eBPF program that hands new
 * connections to lis[0..n-1] in turn. All or nothing: returns 0, or a
 * negative errno (EPERM without CAP_BPF/CAP_NET_ADMIN, ENOSYS, EINVAL or
 * EACCES from the verifier ...) with a one-line reason in why (cap bytes;
 * the group then keeps the kernel's hash). No fd is kept either way. */
int weft__bal_steer(const listener_t *lis, size_t n, char *why, size_t cap);

#endif /* WEFT_BALANCER_INT_H */
