/* weft/request.h: request/reply over a port.
 *
 * weft_port_request posts a message that carries a fresh reply channel and
 * calls back once with the answer; the receiving side answers with
 * weft_msg_reply. The shape of Node's
 *   const {port1, port2} = new MessageChannel();
 *   worker.postMessage({req, port: port2}, [port2]);
 *   port1.once('message', ...)
 * plus what it leaves to the user: a timeout, and an error instead of a hang
 * when the replier closes or drops the request without answering.
 *
 * The reply end travels as the last item of the request's transfer list (a
 * port, WEFT_XFER_PORT). Ports cross only in-process transports (worker
 * ports, actor addresses, channels); a request on a child process's or a
 * Node.js channel is refused with WEFT_ETRANSFER.
 *
 * Threads: the requester calls weft_port_request on a thread with a context
 * (the reply channel is made there) and is called back there, from its loop.
 * The replier answers on the thread that owns the request message. */
#ifndef WEFT_REQUEST_H
#define WEFT_REQUEST_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called exactly once per accepted request, on the requester's thread, from
 * its loop, with one of:
 *   reply, 0           the answer; the callee owns reply (weft_msg_free it)
 *   NULL, WEFT_ECLOSED the request was freed, or its reply port closed,
 *                      without an answer (the replier dropped it, closed its
 *                      port, or its thread exited with the request still
 *                      queued); also when the requester's context ends first
 *   NULL, UV_ETIMEDOUT timeout_ms passed first; a late answer is refused
 *                      (weft_msg_reply returns WEFT_ECLOSED to the replier)
 * data is weft_port_request's. The callee may post, request again, or close
 * any port. */
typedef void (*weft_reply_cb)(weft_msg_t *reply, int err, void *data);

/* weft_port_request: posts msg on port with a reply channel in its transfer
 * list, and calls on_reply once with the answer, an error or UV_ETIMEDOUT
 * (timeout_ms > 0; 0: no timeout). The reply channel's end here keeps the
 * loop alive until then; a replier that goes away closes its end (freeing
 * the message that holds it does), so a request does not outlive its
 * replier.
 * Thread: one with a context (else WEFT_EWRONGTHREAD); the callback runs
 * there. Takes msg on success; on failure msg is the caller's as it was (its
 * transfer list without the reply port) and on_reply is never called.
 * Errors: those of weft_port_post (WEFT_EAGAIN, WEFT_ECLOSED, WEFT_ETRANSFER:
 * port leads to another process, WEFT_ESELF, WEFT_ETAKEN, WEFT_ECOUNT, the
 * error kept in msg), WEFT_EINVAL (NULL port, msg or on_reply), WEFT_ENOMEM,
 * WEFT_EMSGSIZE (msg's transfer list is full), WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_port_request(weft_port_t *port, weft_msg_t *msg, weft_reply_cb on_reply,
                                  void *data, uint64_t timeout_ms);

/* weft_msg_reply: answers request (a message posted with weft_port_request)
 * with reply, then closes the reply channel. Thread: the owner of request.
 * Takes reply on success; on failure reply is the caller's. request stays the
 * caller's either way (free it as usual).
 * Returns 0, WEFT_ENOENT (request carries no reply port: it was posted with
 * weft_port_post), WEFT_ECLOSED (already answered, the reply port was taken
 * out with weft_msg_take_port, or the requester stopped waiting: timeout, or
 * its context ended), WEFT_EINVAL (NULL), or another error of weft_port_post
 * for reply (e.g. the error kept in reply: fix it and answer again). */
WEFT_EXTERN int weft_msg_reply(weft_msg_t *request, weft_msg_t *reply);

/* weft_msg_is_request: true if msg carries a reply port not yet used (a
 * request that weft_msg_reply can answer). Owner thread of msg. */
WEFT_EXTERN bool weft_msg_is_request(const weft_msg_t *msg);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_REQUEST_H */
