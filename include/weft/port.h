/* weft/port.h: channels and ports.
 *
 * A channel is a pair of entangled ports. What is posted on one port arrives
 * at the other, on the context (thread + loop) that owns the other. Guarantees
 * per channel and direction, FIFO and exactly once;
 * messages posted before a close are delivered before the peer's close event;
 * a port in transit keeps what reaches it and delivers it, in order, on its new
 * owner; each port's inbound queue is bounded (messages and bytes) and a post
 * past the bound returns WEFT_EAGAIN, leaving the message with the caller.
 *
 * Threads: a port is owned by one context and used only on that context's
 * thread, except weft_port_post, which any thread may call while the port is
 * open (the caller must make sure nobody closes the port concurrently, as with
 * uv_async_send). Callbacks run on the owner's thread, from its loop.
 *
 * Closing: weft_port_close is idempotent and non-blocking. Closing either end
 * closes the channel: the other end receives everything posted before the
 * close, then its close callback. Each end's close callback is called exactly
 * once; after it returns the port's memory may be released, so the port must
 * not be used after its close callback.
 *
 * The close reaches a port whatever its state, if it has a close callback:
 *  - started: after every message posted before the close;
 *  - stopped (started before) after an orderly close (the peer's program
 *    closed it): at once if no message waits, else after them, once started
 *    again;
 *  - stopped after a failure (the peer died or broke the protocol: reason
 *    WEFT_EPEERDIED, WEFT_EPROTO, WEFT_EWINDOW, ...), or never started: at
 *    once; messages still waiting are discarded and counted in
 *    info->discarded.
 * A port without a close callback that was not started is not released
 * (its handle stays valid and posts on it fail with WEFT_ECLOSED) until its
 * owner closes it.
 * A post that got WEFT_EAGAIN waits for the drain callback; if the channel
 * closes first, the drain callback is called anyway (before the close), and
 * the next post returns WEFT_ECLOSED: a program waiting for a drain never
 * waits for ever. */
#ifndef WEFT_PORT_H
#define WEFT_PORT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default bounds of a port's inbound queue (overridable per runtime and per
 * port): 65536 messages and 64 MiB of payload + owned-buffer bytes. The byte
 * bound counts messages of 512 bytes or more; smaller ones are bounded by the
 * message count alone (65536 x 512 B = 32 MiB at most), which spares every
 * small post a contended atomic. */
#define WEFT_PORT_DEFAULT_HWM_MSGS 65536u
#define WEFT_PORT_DEFAULT_HWM_BYTES (64u * 1024u * 1024u)

/* Called for each message, on the owner thread. The callee owns msg (free it
 * with weft_msg_free, or keep it). The callee may post, close this port, or
 * start/stop other ports. */
typedef void (*weft_port_message_cb)(weft_port_t *port, weft_msg_t *msg);

typedef struct {
  int reason;            /* 0: this end was closed with weft_port_close;
                            WEFT_ECLOSED: the peer closed the channel;
                            WEFT_EPEERDIED / WEFT_EPROTO / ...: the transport failed */
  uint64_t undelivered;  /* messages this end posted that the peer will never
                            receive (discarded when the peer closed) */
  uint64_t discarded;    /* messages that reached this end but were not
                            delivered because it closed first */
} weft_port_close_info_t;

/* Called exactly once per port, on the owner thread, when the port has closed
 * (by either end). After it returns the port is gone. */
typedef void (*weft_port_close_cb)(weft_port_t *port, const weft_port_close_info_t *info);

/* Called on the owner thread of the posting port, once per WEFT_EAGAIN episode,
 * when the peer's queue has fallen below half its bounds, or when the channel
 * closes during the episode (the next post then returns WEFT_ECLOSED). It is
 * called whether the port is started or not. */
typedef void (*weft_port_drain_cb)(weft_port_t *port);

/* Called once per incoming message that the channel's transport dropped
 * because it could not be delivered as a message, on the owner thread, from
 * its loop (never inside another weft call). err says why: WEFT_EUNREPRESENTABLE
 * (a Node.js peer sent a value weft cannot carry, e.g. nested deeper than
 * 8192) or WEFT_EPROTO (a malformed line). The channel stays open: later
 * messages arrive, in order; the calls are not ordered with message
 * delivery. The callee may post, start/stop or close the port (no further
 * calls once it is closed). */
typedef void (*weft_port_error_cb)(weft_port_t *port, int err);

/* weft_channel_new: a new channel; both ports are owned by ctx (the calling
 * thread must be ctx's). Neither delivers anything until started. Returns 0 and
 * sets ports[0], ports[1], or WEFT_ENOMEM / WEFT_EWRONGTHREAD / WEFT_EINVAL. */
WEFT_EXTERN int weft_channel_new(weft_ctx_t *ctx, weft_port_t *ports[2]);

/* weft_port_start: deliver messages to cb from now on (also those already
 * queued). Replaces an earlier cb. A started, ref'd, open port keeps its loop
 * alive. Owner thread. Returns 0, WEFT_EINVAL (NULL), WEFT_ECLOSED (the port
 * is closing) or WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_port_start(weft_port_t *port, weft_port_message_cb cb);

/* weft_port_stop: stop delivering; messages queue (up to the bounds). Owner
 * thread. Returns 0, WEFT_EINVAL or WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_port_stop(weft_port_t *port);

/* weft_port_on_close / on_drain: set (or clear, with NULL) the callback.
 * Owner thread. Returns 0, WEFT_ENOMEM, WEFT_EINVAL, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_port_on_close(weft_port_t *port, weft_port_close_cb cb);
WEFT_EXTERN int weft_port_on_drain(weft_port_t *port, weft_port_drain_cb cb);

/* weft_port_on_error: set (or clear, with NULL) the dropped-message callback.
 * Owner thread. Returns 0, WEFT_ENOMEM, WEFT_EINVAL, WEFT_EWRONGTHREAD.
 * weft_port_dropped: how many incoming messages were dropped so far (counted
 * whether or not a callback is set). Any thread; 0 for NULL. */
WEFT_EXTERN int weft_port_on_error(weft_port_t *port, weft_port_error_cb cb);
WEFT_EXTERN uint64_t weft_port_dropped(const weft_port_t *port);

/* weft_port_post: send msg to the peer. Any thread. On success msg is taken;
 * on failure the caller still owns msg and may retry.
 * The bounds limit what waits, not one message: a message heavier than the
 * byte bound passes when no counted bytes wait at the peer.
 * When it is published: a post made from a weft callback (on_message,
 * on_drain, a close callback, ...) on a port the calling context owns, to a
 * peer owned by another context, of a message under 512 bytes with no
 * transfer items, may wait unpublished in the context's batch until that
 * delivery turn ends (at most the runtime's `batch` deliveries), until 64
 * such posts wait, or until this thread posts to another port, closes or
 * detaches the port; FIFO, the close-after-messages rule and the message
 * bound (what waits unpublished counts) hold as for any post. Every other
 * post (from a thread without a context, from a timer or socket callback,
 * on a port of another context, to a port of the same context) is published
 * before it returns. So do not post from a callback and then block that
 * thread waiting for the peer's answer.
 * Errors: WEFT_EAGAIN (a bound of the peer's queue: it holds hwm_msgs
 * messages, or it holds counted bytes and msg's would take them past
 * hwm_bytes; the drain callback of port fires when both are below half),
 * WEFT_ECLOSED (channel closed), WEFT_ESELF (msg carries port or its peer),
 * WEFT_ETRANSFER (msg carries what cannot cross to the peer's process),
 * WEFT_ETAKEN (checked mode: msg was already posted or freed), WEFT_ECOUNT
 * (a map begun with weft_msg_begin_map is still open), WEFT_EINVAL
 * (NULL), or the error kept in msg (WEFT_EMSGSIZE: the payload outgrew
 * 4 GiB while it was built). Never blocks. */
WEFT_EXTERN int weft_port_post(weft_port_t *port, weft_msg_t *msg);

/* weft_port_receive: take the next message without a loop (like Node's
 * receiveMessageOnPort). Owner thread, or any thread for a port taken out of a
 * message and not yet bound. Returns 0 and sets *out (caller owns it),
 * WEFT_ENOENT if none is waiting, WEFT_ECLOSED if closed and empty,
 * WEFT_ENOMEM if the next message could not be made (small messages travel
 * packed and each is made again on receipt): it stays queued; call again. */
WEFT_EXTERN int weft_port_receive(weft_port_t *port, weft_msg_t **out);

/* weft_port_close: close this end (and so the channel). Idempotent. Owner
 * thread. Messages already queued at this end are discarded and counted; the
 * close callback follows from the loop. */
WEFT_EXTERN int weft_port_close(weft_port_t *port);

/* weft_port_ref / unref: whether this port, while started and open, keeps its
 * context's loop alive (default: yes). Owner thread. */
WEFT_EXTERN void weft_port_ref(weft_port_t *port);
WEFT_EXTERN void weft_port_unref(weft_port_t *port);

/* weft_port_set_hwm: bounds of this port's inbound queue; 0 keeps a value.
 * Owner thread. Returns 0, WEFT_ENOMEM, WEFT_EINVAL, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_port_set_hwm(weft_port_t *port, uint32_t msgs, size_t bytes);

/* Questions and user data. Owner thread (weft_port_set_data from another
 * thread is ignored). */
WEFT_EXTERN void weft_port_set_data(weft_port_t *port, void *data);
WEFT_EXTERN void *weft_port_data(const weft_port_t *port);
WEFT_EXTERN weft_ctx_t *weft_port_ctx(const weft_port_t *port);
WEFT_EXTERN bool weft_port_is_closed(const weft_port_t *port);
/* Messages waiting in this port's inbound queue (approximate while others
 * post; during a delivery turn it still counts the message being delivered). */
WEFT_EXTERN size_t weft_port_pending(const weft_port_t *port);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_PORT_H */
