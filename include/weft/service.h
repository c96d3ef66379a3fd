/* weft/service.h: named services across nodes (request distribution with
 * retry).
 *
 * A service is a name that several nodes provide, each with a handler of
 * requests. A client on any node spreads its requests over every provider it
 * knows, by least outstanding requests (ties: round robin), and calls back
 * once per request, on its own context, with the reply or an error and which
 * provider answered after how many attempts. The shape of an nginx
 * `upstream` with `least_conn` and `proxy_next_upstream error timeout`, or of
 * Erlang's pg groups, on weft ports.
 *
 *  - Providers: weft_service_provide publishes an actor under the reserved
 *    name "svc:<name>" on its node (weft_node_publish). Its handler gets each
 *    request (the message the client passed to weft_service_call) and
 *    answers with weft_service_reply, at once or later.
 *  - Channels: a client and a provider talk over two long-lived channels,
 *    one each way, made when the client first meets the provider; a call
 *    makes no channel of its own. Requests and answers are matched by an id
 *    that travels in a 27-byte trailer after the message's payload, taken
 *    off before the handler or the reply callback sees the message.
 *  - Discovery: a client watches its node's peers (weft_node_watch). For
 *    every peer that is up it looks "svc:<name>" up; a peer without it is
 *    not a provider (it is asked again every rescan_ms, so a node that starts
 *    providing later is found). A provider is used once it has welcomed the
 *    client, and forgotten when its node goes down, its port closes, or it
 *    withdraws.
 *  - Graceful withdraw: weft_service_withdraw tells every client it welcomed
 *    to send it nothing new and refuses newcomers; each client answers on
 *    the same channel as its requests (so after all of them), and sends its
 *    new requests elsewhere. Once every client has answered (or gone) and
 *    every request that reached the handler is answered, the name is
 *    unpublished and the callback runs. No request is lost to a withdraw.
 *  - Retry: a request flagged WEFT_SERVICE_IDEMPOTENT is sent again, to
 *    another provider when there is one, when its provider dies (its node
 *    goes down: WEFT_EPEERDIED), closes the request without an answer
 *    (WEFT_ECLOSED) or does not answer within timeout_ms (UV_ETIMEDOUT), up
 *    to max_attempts attempts in all. The semantics are AT LEAST ONCE: a
 *    provider that died after it executed the request but before its answer
 *    arrived, or that answered too late, has executed it, and so may the
 *    next one. Flag only requests that may run more than once. A request not
 *    flagged is never sent twice: it completes with the first attempt's
 *    error (WEFT_EPEERDIED when its provider died; it may or may not have
 *    been executed).
 *  - Bounds: a client has at most max_outstanding requests (sent, waiting
 *    for a provider, or waiting for an answer); past it weft_service_call
 *    returns WEFT_EAGAIN and on_drain runs once the count is below half.
 *
 * Reserved: the name prefix "svc:"; on the published port, messages whose
 * map has the key "weft.svc" and messages whose payload ends in the
 * service's trailer (the control messages and calls between clients and
 * providers).
 *
 * Threads: providers and clients live on their node's context; every
 * function here is called on that context's thread (else WEFT_EWRONGTHREAD)
 * and every callback runs there, from its loop, never inside a call to this
 * API. */
#ifndef WEFT_SERVICE_H
#define WEFT_SERVICE_H

#include "common.h"
#include "node.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_service_s weft_service_t;
typedef struct weft_service_client_s weft_service_client_t;

/* ---- providers ------------------------------------------------------------- */

/* Called for each request, on the node's context. The handler owns req (the
 * client's message, with its payload and transfer items as sent) and ends it
 * with weft_service_reply or weft_service_drop, now or later, on this
 * context; it must not free req itself. A request not ended holds a
 * withdraw back. data is weft_service_provide's. */
typedef void (*weft_service_handler_cb)(weft_service_t *svc, weft_msg_t *req, void *data);

/* Called once, from the loop, when a withdraw has finished (or the node
 * closed first): the name is gone and svc is freed when it returns. */
typedef void (*weft_service_withdraw_cb)(weft_service_t *svc, void *data);

/* weft_service_provide: publishes the service name (1 to 250 bytes) on node
 * with handler (data is passed to it). Returns 0 and *out, or WEFT_EINVAL,
 * WEFT_EBUSY (this node already provides name), WEFT_ECLOSED (node closing),
 * WEFT_ENOMEM, WEFT_EWRONGTHREAD; then nothing is left. The provider ends
 * with weft_service_withdraw, or with its node (then no callback runs). */
WEFT_EXTERN int weft_service_provide(weft_node_t *node, const char *name,
                                     weft_service_handler_cb handler, void *data,
                                     weft_service_t **out);

/* weft_service_reply: answers req with reply and ends req. Always takes req
 * (it is freed); takes reply on success, else reply stays the caller's (as
 * it was). Returns 0 (the answer is on its way; if the client has stopped
 * waiting for it, a timeout, the client drops it), WEFT_ECLOSED (the client
 * is gone: it closed, or its node went), WEFT_EINVAL (NULL reply, or req is
 * not a request of svc's handler not yet ended), or weft_port_post's errors
 * for reply (WEFT_ETRANSFER: it carries what cannot cross). */
WEFT_EXTERN int weft_service_reply(weft_service_t *svc, weft_msg_t *req, weft_msg_t *reply);

/* weft_service_drop: ends req without an answer (takes and frees it): the
 * client sees WEFT_ECLOSED (an idempotent request is then tried again).
 * Returns 0 or WEFT_EINVAL (req is not a request of svc's handler not yet
 * ended; it is freed all the same). */
WEFT_EXTERN int weft_service_drop(weft_service_t *svc, weft_msg_t *req);

/* weft_service_withdraw: graceful leave (see above); cb (may be NULL) runs
 * once from the loop when done, with data. Errors: WEFT_EINVAL, WEFT_ECLOSED
 * (already withdrawing, or the node is closing), WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_service_withdraw(weft_service_t *svc, weft_service_withdraw_cb cb,
                                      void *data);

/* Requests handed to the handler and not ended yet; clients welcomed and
 * not gone. */
WEFT_EXTERN uint64_t weft_service_inflight(const weft_service_t *svc);
WEFT_EXTERN size_t weft_service_clients(const weft_service_t *svc);

/* ---- clients ---------------------------------------------------------------- */

#define WEFT_SERVICE_IDEMPOTENT 1u /* weft_service_call flag: may be retried */

typedef struct {
  const char *provider; /* node name of the provider that answered, or of the
                           last one tried (NULL: none was tried). Valid
                           during the callback */
  uint32_t attempts;    /* 1 + retries */
} weft_service_info_t;

/* Called exactly once per accepted call, on the client's context, from its
 * loop, with reply (the callee owns it) and err 0, or NULL and: the last
 * attempt's error (WEFT_EPEERDIED, WEFT_ECLOSED, UV_ETIMEDOUT, or a post
 * error such as WEFT_ETRANSFER); WEFT_ENOENTRY (no provider came within
 * wait_ms); WEFT_ECANCELED (the client closed). data is weft_service_call's.
 * The callee may call again, or close the client. */
typedef void (*weft_service_reply_cb)(weft_service_client_t *cli, weft_msg_t *reply, int err,
                                      const weft_service_info_t *info, void *data);

/* Called from the loop once per WEFT_EAGAIN episode, when the outstanding
 * requests have fallen below half of max_outstanding. */
typedef void (*weft_service_drain_cb)(weft_service_client_t *cli, void *data);

/* Called from the loop when a provider becomes usable (up true) or is
 * forgotten (up false). node is valid during the call. */
typedef void (*weft_service_provider_cb)(weft_service_client_t *cli, const char *node, bool up,
                                         void *data);

typedef void (*weft_service_client_close_cb)(weft_service_client_t *cli, void *data);

typedef struct {
  const char *service;       /* required: the name the providers provide */
  uint32_t timeout_ms;       /* per attempt; 0: 5000 */
  uint32_t max_attempts;     /* for idempotent requests, in all; 0: 3 */
  uint32_t max_outstanding;  /* 0: 1024 */
  uint32_t wait_ms;          /* how long a request waits while no provider is
                                known; 0: timeout_ms */
  uint32_t rescan_ms;        /* peers without the service are asked again this
                                often; 0: 1000 */
  weft_service_drain_cb on_drain;       /* may be NULL */
  weft_service_provider_cb on_provider; /* may be NULL */
  void *data;                /* for on_drain and on_provider */
} weft_service_client_options_t;

typedef struct {
  uint64_t calls;      /* accepted */
  uint64_t replies;    /* completed with a reply */
  uint64_t failures;   /* completed with an error */
  uint64_t retries;    /* attempts after the first */
  uint32_t outstanding;
  uint32_t providers;  /* usable now */
} weft_service_client_stats_t;

/* weft_service_client_new: a client of opts->service on node. Returns 0 and
 * *out, or WEFT_EINVAL, WEFT_ECLOSED (node closing), WEFT_ENOMEM,
 * WEFT_EWRONGTHREAD; then nothing is left. The options are copied. */
WEFT_EXTERN int weft_service_client_new(weft_node_t *node,
                                        const weft_service_client_options_t *opts,
                                        weft_service_client_t **out);

/* weft_service_call: sends req to a provider (or queues it until one is
 * known, for wait_ms) and calls cb once (see weft_service_reply_cb). flags:
 * 0 or WEFT_SERVICE_IDEMPOTENT. Takes req on success; on failure req is the
 * caller's and cb is never called. An idempotent request is kept (a copy of
 * its payload) for its retries, so it may carry no transfer items
 * (WEFT_ETRANSFER). Errors: WEFT_EAGAIN (max_outstanding reached: on_drain
 * follows), WEFT_EINVAL, WEFT_ETRANSFER, WEFT_ECLOSED (client closing),
 * WEFT_ENOMEM, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_service_call(weft_service_client_t *cli, weft_msg_t *req, unsigned flags,
                                  weft_service_reply_cb cb, void *data);

/* weft_service_client_close: every call not completed completes with
 * WEFT_ECANCELED (from the loop); cb (may be NULL) runs once everything is
 * released (the channels to the providers have closed; answers still
 * travelling are dropped), and the handle is invalid after it. Idempotent: a second close returns
 * WEFT_ECLOSED. A client must be closed before its node. */
WEFT_EXTERN int weft_service_client_close(weft_service_client_t *cli,
                                          weft_service_client_close_cb cb, void *data);

WEFT_EXTERN int weft_service_client_stats(const weft_service_client_t *cli,
                                          weft_service_client_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_SERVICE_H */
