/* service_int.h: NOT PUBLIC. What the service's files share: the protocol
 * between clients and providers, and the client's state. Written against the
 * public API only (the microkernel rule).
 *   service.c         the provider side: the published actor, handshakes,
 *                     in-flight requests, the graceful withdraw
 *   service_client.c  the client side's lifecycle and discovery: peer watch,
 *                     lookups, welcomes, withdraw notices, forgetting
 *   service_call.c    the client side's calls: picking a provider, attempts,
 *                     retries, the queue of calls waiting for a provider,
 *                     completions, the bound and drain
 *
 * Protocol. Requests are the user's messages, posted with weft_port_request
 * on the provider's published port. Control messages are maps {"weft.svc":
 * op, "token": t} that are not requests:
 *   client -> provider, on the published port (the requests' channel)
 *     HELLO    + the provider's end of a fresh "notice" channel; t names the
 *              client
 *     BYE      the client sends nothing more on this channel (FIFO: every
 *              request it sent arrived before)
 *   provider -> client, on the notice channel
 *     WELCOME  the client may send requests
 *     WITHDRAW send nothing new; answer BYE
 * A client sends requests only after WELCOME, so a withdrawing provider that
 * has had BYE (or a close of the notice channel) from every client it
 * welcomed has every request that will ever come: it unpublishes once they
 * are answered, and no request is lost in transit. A provider withdrawing
 * closes the notice channel of a HELLO instead of welcoming it. */
#ifndef WEFT_SERVICE_INT_H
#define WEFT_SERVICE_INT_H

#include "weft.h"

enum {
  WEFT__SVC_HELLO = 1,
  WEFT__SVC_WELCOME = 2,
  WEFT__SVC_WITHDRAW = 3,
  WEFT__SVC_BYE = 4
};

#define WEFT__SVC_PREFIX "svc:"
#define WEFT__SVC_MAX_NAME 250

/* weft__svc_op: the operation of a control message, or 0 for anything else
 * (a request, or a message that is not ours). */
int weft__svc_op(const weft_msg_t *msg, uint64_t *token);

/* weft__svc_msg: a new control message {weft.svc: op, token: token}. */
int weft__svc_msg(int op, uint64_t token, weft_msg_t **out);

/* weft__svc_pubname: "svc:" + name into buf (cap bytes); WEFT_EINVAL if name
 * is empty or longer than WEFT__SVC_MAX_NAME. */
int weft__svc_pubname(const char *name, char *buf, size_t cap);

/* ---- the client side (service_client.c, service_call.c) ---------------------- */

typedef struct svc_call_s svc_call_t;
typedef struct svc_peer_s svc_peer_t;

/* A peer of the client's node, kept until the client is freed (peers are
 * few): a provider when state is READY. */
enum { PEER_DOWN = 0, PEER_IDLE, PEER_LOOKING, PEER_GREETING, PEER_READY, PEER_LEAVING };

struct svc_peer_s {
  weft_list_node_t link; /* cli->peers */
  weft_service_client_t *cli;
  char name[65];
  int state;
  uint32_t epoch;          /* bumped on every down: a lookup of an older one is stale */
  uint32_t asked_epoch;
  bool lookup_pending;
  uint64_t next_scan_ns;   /* IDLE and up: look up again then */
  weft_port_t *port;       /* to the provider's published actor (GREETING..LEAVING) */
  weft_port_t *notice;     /* our end of the notice channel */
  uint32_t outstanding;    /* attempts on this provider not ended */
  uint64_t served;
};

enum { CALL_NOWHERE = 0, CALL_WAITING, CALL_FLYING, CALL_DONE };

struct svc_call_s {
  weft_list_node_t link;   /* the list named by where */
  uint8_t where;
  weft_service_client_t *cli;
  weft_msg_t *msg;         /* while waiting: the message of the next attempt */
  void *payload;           /* idempotent: a copy for the retries */
  size_t payload_len;
  unsigned flags;
  weft_service_reply_cb cb;
  void *data;
  svc_peer_t *peer;        /* the attempt in flight, or the last one */
  uint32_t attempts;
  bool in_flight;          /* a weft_port_request callback is due */
  bool completed;          /* cb called (or cancelled) */
  int err;                 /* on cli->done: how it completes */
  weft_msg_t *reply;
  uint64_t deadline_ns;    /* on cli->waiting */
};

struct weft_service_client_s {
  weft_node_t *node;
  weft_ctx_t *ctx;
  weft_node_watch_t *watch;
  weft_service_client_options_t opts;
  char pubname[WEFT__SVC_MAX_NAME + 8];
  uint64_t token;
  weft_list_t peers;
  weft_list_t waiting;     /* calls with no provider yet, oldest first */
  weft_list_t flying;      /* calls with an attempt out, not completed */
  weft_list_t done;        /* calls to complete from the loop */
  svc_peer_t *rr;          /* round robin: the peer picked last */
  uv_timer_t timer;        /* deferred completions, waiting deadlines, rescans */
  uint64_t timer_due_ns;   /* 0: not armed */
  uint32_t outstanding;    /* calls accepted and not completed */
  uint32_t in_flight;      /* weft_port_request callbacks due (outlive a close) */
  uint32_t lookups;        /* lookups whose callback is due */
  uint32_t open_ports;     /* peer ports whose close callback is due */
  bool eagain;             /* a WEFT_EAGAIN episode: on_drain due below half */
  bool closing, timer_closed;
  weft_service_client_close_cb close_cb;
  void *close_data;
  weft_service_client_stats_t stats;
};

/* service_client.c */
/* The timer fires at now + ms (0: at the next loop turn), unless it fires
 * sooner already. */
void weft__svc_arm(weft_service_client_t *cli, uint64_t ms);
/* Forget p as a provider (its ports close); its calls end by their own
 * callbacks. */
void weft__svc_forget(svc_peer_t *p);
void weft__svc_maybe_free(weft_service_client_t *cli);

/* service_call.c */
/* A provider became usable: send the waiting calls. */
void weft__svc_dispatch(weft_service_client_t *cli);
/* The timer: waiting deadlines and completions. */
void weft__svc_tick(weft_service_client_t *cli, uint64_t now_ns);
/* Close: every call completes with WEFT_ECANCELED. */
void weft__svc_cancel_all(weft_service_client_t *cli);

#endif /* WEFT_SERVICE_INT_H */
