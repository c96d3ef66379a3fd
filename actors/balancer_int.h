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
 *
 * Protocol: every message of the balancer's is a msgpack map whose first key
 * is "wb" (the operation); anything else on the channel is the user's.
 *   balancer -> worker
 *     HELLO  {wb, pipe}          [+ listening socket: shared / reuseport]
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

/* weft__bal_listen: a listening socket for opts (TCP on host:port, or Unix
 * path), non-blocking and close-on-exec; with reuseport SO_REUSEPORT is set
 * before bind. port is the TCP port to bind (overrides opts->port). Returns 0
 * and sets *fd and *bound_port, or a negative errno (libuv code). */
int weft__bal_listen(const weft_balancer_options_t *opts, int port, bool reuseport, int *fd,
                     int *bound_port);

/* weft__bal_dup: a close-on-exec duplicate of fd, or a negative errno. */
int weft__bal_dup(int fd);

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
  size_t insts;          /* instances alive */
  size_t handles;        /* poll handles not yet closed */
  weft_metrics_source_t *metrics; /* balancer_metrics.c; NULL with metrics off */
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

/* weft__bal_inst_down: the worker exited: folds its counts into the slot and
 * re-hands what it had not acknowledged. */
void weft__bal_inst_down(inst_t *in);

#endif /* WEFT_BALANCER_INT_H */
