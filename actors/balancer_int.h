/* balancer_int.h: NOT PUBLIC. What the balancer's files (balancer.c, the
 * balancer side; balancer_worker.c, the worker side; balancer_sock.c,
 * sockets) share: the wire protocol between the two sides and the socket
 * helpers. Written against the public API only (the microkernel rule).
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

#endif /* WEFT_BALANCER_INT_H */
