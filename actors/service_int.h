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
 * Protocol. Two long-lived channels per client and provider: the
 * provider's published port (looked up) carries the client's requests and
 * its HELLO and BYE; the notice channel (made by the client, its far end
 * sent with HELLO) carries the provider's answers and its WELCOME and
 * WITHDRAW. No channel is made per call: a request or an answer is the
 * user's message with a trailer appended to its payload (three msgpack
 * uint64 in their fixed 9-byte form: a, b, MAGIC | op), which the receiver
 * strips before the user sees the message:
 *   CALL   a request: a = the client's token, b = the call's id
 *   REPLY  an answer: b = the id of the call it answers
 *   DROP   (a trailer alone) the handler ended call b without an answer
 * Control messages are maps {"weft.svc": op, "token": t} without a trailer:
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
 * welcomed has every request that will ever come. A client that said BYE
 * closes its notice channel once it has every answer it waits for (answers
 * come on that channel, so a close from the provider could not overtake
 * them, but the close of the client's port when the name goes could); the
 * provider unpublishes once every notice channel is closed and nothing is
 * in flight: no request or answer is lost in transit. A provider withdrawing
 * closes the notice channel of a HELLO instead of welcoming it. When either
 * channel closes, the client ends every call it has on that provider with
 * the close's reason (WEFT_EPEERDIED when the node was lost). */
#ifndef WEFT_SERVICE_INT_H
#define WEFT_SERVICE_INT_H

#include "weft.h"

enum {
  WEFT__SVC_HELLO = 1,
  WEFT__SVC_WELCOME = 2,
  WEFT__SVC_WITHDRAW = 3,
  WEFT__SVC_BYE = 4
};

enum { WEFT__SVC_CALL = 1, WEFT__SVC_REPLY = 2, WEFT__SVC_DROP = 3 }; /* trailer ops */

#define WEFT__SVC_MAGIC 0x5746545356430000ull /* "WFTSVC" << 16: the trailer's tag, op below */
#define WEFT__SVC_TRAILER 27u                 /* three fixed-form uint64 */
#define WEFT__SVC_PREFIX "svc:"
#define WEFT__SVC_MAX_NAME 250

/* weft__svc_op: the operation of a control message, or 0 for anything else
 * (a request, or a message that is not ours). */
int weft__svc_op(const weft_msg_t *msg, uint64_t *token);

/* weft__svc_msg: a new control message {weft.svc: op, token: token}. */
int weft__svc_msg(int op, uint64_t token, weft_msg_t **out);

/* weft__svc_msg_drop: a new DROP message for call id (a trailer alone). */
int weft__svc_msg_drop(uint64_t id, weft_msg_t **out);

/* weft__svc_pubname: "svc:" + name into buf (cap bytes); WEFT_EINVAL if name
 * is empty or longer than WEFT__SVC_MAX_NAME. */
int weft__svc_pubname(const char *name, char *buf, size_t cap);

/* weft__svc_trailer_add: appends the trailer {a, b, op} to msg's payload.
 * Returns 0 or the error kept in msg. */
int weft__svc_trailer_add(weft_msg_t *msg, int op, uint64_t a, uint64_t b);
/* weft__svc_trailer_get: the op of msg's trailer with *a and *b, or 0 (no
 * trailer: a control message, or not ours). */
int weft__svc_trailer_get(const weft_msg_t *msg, uint64_t *a, uint64_t *b);
/* weft__svc_trailer_strip: takes the trailer off msg's payload (in place). */
void weft__svc_trailer_strip(weft_msg_t *msg);

/* service_map.c: a map from a non-zero uint64 to a pointer. Zeroed: empty. */
typedef struct {
  uint64_t key; /* 0: free */
  void *value;
} weft__svc_slot_t;

typedef struct {
  weft__svc_slot_t *slots;
  uint32_t cap, count;
} weft__svc_map_t;

/* put: 0 or WEFT_ENOMEM (key must not be there); get and del: the value, or
 * NULL. */
int weft__svc_map_put(weft__svc_map_t *m, uint64_t key, void *value);
void *weft__svc_map_get(const weft__svc_map_t *m, uint64_t key);
void *weft__svc_map_del(weft__svc_map_t *m, uint64_t key);
void weft__svc_map_free(weft__svc_map_t *m);

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
  weft_list_t calls;       /* the calls whose attempt is on this provider,
                              oldest (first due) first */
  uint32_t outstanding;    /* how many: the length of calls */
  uint64_t served;
};

enum { CALL_NOWHERE = 0, CALL_WAITING, CALL_FLYING, CALL_ENDED, CALL_DONE };

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
  uint64_t id;             /* the attempt in flight's key in cli->calls (0: none) */
  uint32_t attempts;
  int err;                 /* on cli->ended or cli->done: how the attempt or
                              the call ends */
  uint64_t deadline_ns;    /* waiting: for a provider; flying: for the answer */
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
  weft_list_t ended;       /* attempts ended by their provider's loss: retry
                              or complete from the loop */
  weft_list_t done;        /* calls to complete from the loop */
  weft__svc_map_t calls;   /* id -> the call whose attempt it is (flying) */
  uint64_t next_id;
  svc_peer_t *rr;          /* round robin: the peer picked last */
  uv_timer_t timer;        /* deferred completions, waiting deadlines, rescans */
  uint64_t timer_due_ns;   /* 0: not armed */
  uint32_t outstanding;    /* calls accepted and not completed */
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
/* Forget p as a provider (its ports close); the calls on it end with
 * reason, from the loop (retried if they may be). */
void weft__svc_forget(svc_peer_t *p, int reason);
void weft__svc_maybe_free(weft_service_client_t *cli);

/* service_call.c */
/* A provider became usable: send the waiting calls. */
void weft__svc_dispatch(weft_service_client_t *cli);
/* The timer: waiting and answer deadlines, ended attempts, completions. */
void weft__svc_tick(weft_service_client_t *cli, uint64_t now_ns);
/* A message on p's notice channel with a trailer: an answer or a drop. */
void weft__svc_answer(svc_peer_t *p, weft_msg_t *msg, int op, uint64_t id);
/* p is lost: its calls move to cli->ended with reason. */
void weft__svc_fail_peer(svc_peer_t *p, int reason);
/* Close: every call completes with WEFT_ECANCELED. */
void weft__svc_cancel_all(weft_service_client_t *cli);

#endif /* WEFT_SERVICE_INT_H */
