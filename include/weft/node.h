/* weft/node.h: distribution. A context becomes a node: it has a name,
 * listens on URLs (tcp://, ipc://, tls+tcp://) and dials its peers, and its ports reach actors on
 * other nodes (other processes, other machines) as they reach a worker.
 *
 * Model (Erlang distribution's, with weft's ports):
 *  - One connection between two nodes carries every channel between them,
 *    each with its own FIFO order, credits and close. Big buffers cross in
 *    64 KiB chunks interleaved with the other channels' frames, so a stream
 *    of 16 MiB buffers does not hold back another channel's small messages
 *    (a channel alone on the connection sends bigger pieces).
 *  - Names are per node: weft_node_publish puts a port under a name on this
 *    node; weft_node_lookup asks a peer for a name and gives back a port to
 *    it. Every lookup is a channel of its own (its own order, credits and
 *    close); what all of them post reaches the published port's peer, in
 *    each channel's order (a mailbox, like an Erlang registered process).
 *    Answers travel on ports carried in the messages: weft_port_request
 *    works across nodes, and so does any port posted in a message (it
 *    arrives on the other node as a port whose messages route back).
 *  - A remote port is an ordinary weft_port_t: post, start/stop, close,
 *    drain, ref/unref and bounds behave as for a worker's port. Backpressure
 *    is end to end: the receiving node grants each channel a window (in
 *    messages and bytes) and credits it back as its program consumes; a
 *    sender without credit stops taking from its port, whose bounds then
 *    make weft_port_post return WEFT_EAGAIN. A peer that sends past its
 *    window is disconnected (WEFT_EWINDOW): memory on both nodes is bounded
 *    by the windows, whatever the peer does.
 *  - Buffers cross by copy. Sockets and shared buffers cannot cross
 *    machines: a post that carries one to a remote port returns
 *    WEFT_ETRANSFER and the message stays with the sender.
 *    For a published name, "consumes" means "takes into the published
 *    port's queue" (within that port's bounds): what the lookups send is
 *    bounded by that queue plus their windows.
 *  - Failure: a connection that closes, or that stays silent longer than the
 *    heartbeat interval, takes the peer down: every channel to it closes
 *    with WEFT_EPEERDIED and the count of messages sent but not acknowledged
 *    (so sent = delivered + that count), and the monitor callback says so
 *    (with WEFT_EPEERDIED whatever the cause: a peer that closed its node in
 *    order, one that died, or one dropped for breaking the protocol, whose
 *    channels close with the protocol error). Pings go out from another
 *    thread (the node's pinger, or nng's timer thread: see
 *    weft_node_transport_t) whenever nothing else went out for half a
 *    heartbeat, and bytes that came during a long turn of the node's loop
 *    are not taken for silence: a slow callback is not mistaken for a dead
 *    node, on either side.
 *    A peer that comes back is a new connection (and, if it restarted, a new
 *    incarnation): old ports stay closed, names are looked up again.
 *  - Security: every byte from the network is untrusted. Frames are limited
 *    in size before anything is allocated, messages in size and count, a
 *    peer in channels. A handshake checks the protocol version (a mismatch
 *    is refused with WEFT_EVERSION) and, when a secret is set, proves both
 *    sides know it (HMAC-SHA256 over fresh nonces; a peer that fails is
 *    dropped with WEFT_EAUTH and counted) before any message is accepted. A
 *    peer that stalls in the handshake is dropped after handshake_ms. TLS
 *    (tls+tcp:// URLs, certificate files, mutual authentication optional)
 *    protects against eavesdroppers and active attackers; the secret alone
 *    does not encrypt.
 *
 * Threads: a node lives on the context that started it; every function here
 * is called on that context's thread and every callback runs there, from its
 * loop. The other threads (the pinger; libuv's pool resolving host names;
 * nng's threads for its transport) only move bytes, send pings and wake the
 * context: no user callback ever runs on them. A started node keeps its loop
 * alive until weft_node_close. */
#ifndef WEFT_NODE_H
#define WEFT_NODE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_node_s weft_node_t;

/* A peer came up (up true, reason 0) or went down (up false; reason:
 * WEFT_EPEERDIED for a lost connection or missed heartbeats, WEFT_ECLOSED
 * when this node closes). peer is the peer's node name, valid during the
 * call. data is the options' data. */
typedef void (*weft_node_monitor_cb)(weft_node_t *node, const char *peer, bool up, int reason,
                                     void *data);

/* Called once per accepted lookup: status 0 and a port to the name (the
 * callee owns it: start it, post on it, close it), or status WEFT_ENOENTRY
 * (the peer has nothing under that name), UV_ETIMEDOUT (the peer was not
 * reachable, or did not answer, within the timeout), WEFT_EPEERDIED (the
 * connection was lost while asking), WEFT_ECLOSED (this node closed), or the
 * protocol error the connection was dropped for (WEFT_EPROTO, WEFT_EWINDOW,
 * ...), and port NULL. */
typedef void (*weft_node_lookup_cb)(weft_node_t *node, int status, weft_port_t *port,
                                    void *data);

typedef void (*weft_node_close_cb)(weft_node_t *node, void *data);

/* Who reads and writes a connection's bytes (both speak the same protocol:
 * nodes with different transports talk to each other).
 *  - WEFT_NODE_TRANSPORT_DEFAULT: for tcp:// and ipc:// URLs, the node's
 *    own loop: non-blocking sockets watched by the loop, read and written
 *    from its callbacks, so a message costs the receiving loop one wake-up
 *    and no other thread. One helper thread per node (the pinger) sends a
 *    PING on a connection that sent nothing for half a heartbeat, between
 *    two frames, while the loop is busy with a long turn. tls+tcp:// URLs,
 *    and listen URLs whose host is a name rather than an address, go
 *    through nng (below).
 *  - WEFT_NODE_TRANSPORT_NNG: every URL through nng's byte streams: nng's
 *    threads move the bytes and post to the loop; its timer thread pings. */
typedef enum {
  WEFT_NODE_TRANSPORT_DEFAULT = 0,
  WEFT_NODE_TRANSPORT_NNG = 1
} weft_node_transport_t;

typedef struct {
  const char *name;          /* required: 1 to 64 bytes, unique among the nodes that meet */
  const char *const *listen; /* NULL-terminated URLs to listen on (tcp://, ipc://, tls+tcp://);
                                may be NULL. tcp://127.0.0.1:0 takes a free port
                                (weft_node_port tells which) */
  const char *const *peers;  /* NULL-terminated URLs to dial; may be NULL. A peer that cannot
                                be reached, or is lost, is redialled with back-off. List a
                                peer on one side: if two nodes dial each other, the
                                connection dialled by the lower name is kept */
  const void *secret;        /* shared secret (NULL: none). Both sides need the same one */
  size_t secret_len;
  /* TLS, for tls+tcp:// URLs: PEM files. cert/key: this node's identity (a
   * listener needs them; a dialer only for mutual authentication). ca: the
   * certificates that sign the peers'; with tls_verify, a peer without a
   * certificate signed by ca is refused (on a listener: mutual authentication).
   * tls_server_name: the name a dialer expects in the listener's certificate
   * (NULL: not checked). */
  const char *tls_cert_file, *tls_key_file, *tls_ca_file, *tls_server_name;
  bool tls_verify;
  uint32_t heartbeat_ms;     /* a peer silent this long is down; 0: 1000. Both sides ping
                                at half the shorter of their two settings; detection takes
                                heartbeat_ms plus up to a quarter of it (10 to 250 ms) */
  uint32_t handshake_ms;     /* a connection not authenticated by then is dropped; 0: 5000 */
  uint32_t redial_min_ms;    /* back-off between dials of a lost peer; 0: 100 */
  uint32_t redial_max_ms;    /* doubles up to this; 0: 5000 */
  uint32_t window_msgs;      /* what each channel lets its sender have in flight; 0: 1024 */
  uint64_t window_bytes;     /* 0: 8 MiB (one message may overshoot it by its own size) */
  uint64_t max_msg;          /* largest message accepted, payload plus buffers; 0: 64 MiB */
  uint32_t max_channels;     /* channels a peer may have open here; 0: 65536 */
  weft_node_transport_t transport; /* who moves the bytes of tcp:// and ipc:// connections;
                                      0 (WEFT_NODE_TRANSPORT_DEFAULT): the node's own loop */
  weft_node_monitor_cb on_monitor; /* may be NULL */
  void *data;                /* for on_monitor */
} weft_node_options_t;

typedef struct {
  uint32_t peers_up;         /* connections past the handshake */
  uint64_t channels_open;    /* remote channels open now */
  uint64_t msgs_out, msgs_in;
  uint64_t bytes_out, bytes_in; /* on the wire */
  uint64_t connects;         /* connections that came up */
  uint64_t disconnects;      /* connections that went down after coming up */
  uint64_t refused;          /* connections dropped in the handshake: wrong secret, wrong
                                version, stalled, or not speaking weft at all */
  int last_refusal;          /* why the last one was dropped (WEFT_EAUTH, WEFT_EVERSION,
                                UV_ETIMEDOUT, WEFT_EPROTO, ...); 0: none */
  uint64_t protocol_errors;  /* connections dropped later for a broken protocol (bad frame,
                                window, credit) */
  uint64_t dial_failures;
} weft_node_stats_t;

/* weft_node_start: makes the calling thread's context ctx a node: listens
 * on opts->listen, dials opts->peers. Returns 0 and *out, or WEFT_EINVAL (no
 * or bad name, NULL out), WEFT_EWRONGTHREAD (ctx is not the calling thread's),
 * WEFT_ENOMEM, or the error of a listen that failed (UV_EADDRINUSE,
 * UV_EINVAL (bad URL), UV_ENOTSUP (unknown scheme, or TLS not built into
 * nng), UV_ENOENT (a TLS file missing), UV_EACCES, ...), or of the pinger
 * thread's start: then nothing is left. Dials happen in the background: a peer not up yet is not an error.
 * The options' strings are copied. */
WEFT_EXTERN int weft_node_start(weft_ctx_t *ctx, const weft_node_options_t *opts,
                                weft_node_t **out);

/* weft_node_publish: puts port under name on this node; peers that look name
 * up post to it. Takes port (a port owned by the node's context, started or
 * not): the node keeps it until weft_node_unpublish or weft_node_close, or
 * until its peer closes (then the name goes and every channel to it closes,
 * as the peer's program closed them). Messages posted on port's peer
 * (replies sent the wrong way) are dropped and counted as undeliverable:
 * answers go on reply ports. name: 1 to 255 bytes. Errors: WEFT_EINVAL,
 * WEFT_EBUSY (the name is taken), WEFT_ECLOSED (port closed), WEFT_ENOMEM,
 * WEFT_EWRONGTHREAD. On failure port stays the caller's. */
WEFT_EXTERN int weft_node_publish(weft_node_t *node, const char *name, weft_port_t *port);

/* weft_node_unpublish: removes name and closes its port: channels to it close
 * as if its program closed them (their senders' ports close with WEFT_ECLOSED
 * after what the port took; a request in flight gets WEFT_ECLOSED).
 * WEFT_ENOENTRY if nothing is published under name. */
WEFT_EXTERN int weft_node_unpublish(weft_node_t *node, const char *name);

/* weft_node_lookup: asks the node named peer for name, and calls cb once with
 * a port to it or an error (see weft_node_lookup_cb), within timeout_ms (0:
 * 5000), from the loop (never inside this call). A peer not connected yet is
 * waited for until the timeout. Errors (cb then never called): WEFT_EINVAL,
 * WEFT_ECLOSED (the node is closing), WEFT_ENOMEM, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_node_lookup(weft_node_t *node, const char *peer, const char *name,
                                 uint32_t timeout_ms, weft_node_lookup_cb cb, void *data);

/* weft_node_close: stops listening and dialling, closes every connection
 * (this node's remote ports close with WEFT_ECLOSED; the peers see this node
 * down) and every published port; cb (may be NULL) runs from the loop once
 * all is released, and the handle is invalid after it. Lookups still waiting
 * complete with WEFT_ECLOSED. A context that ends closes its node. Errors:
 * WEFT_EINVAL, WEFT_ECLOSED (already closing), WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_node_close(weft_node_t *node, weft_node_close_cb cb, void *data);

/* weft_node_watch: one more monitor (libraries that need peer events while
 * the program keeps opts.on_monitor): cb is called for every peer that
 * comes up or goes down, after on_monitor, from the loop; peers already up
 * when it is added are reported to it (up, reason 0) from the loop too.
 * *out names it for weft_node_unwatch (may be NULL if never removed).
 * Errors: WEFT_EINVAL, WEFT_ECLOSED, WEFT_ENOMEM, WEFT_EWRONGTHREAD.
 * weft_node_unwatch: cb is not called again (not even for events already
 * waiting). A watch ends with its node. */
typedef struct weft_node_watch_s weft_node_watch_t;
WEFT_EXTERN int weft_node_watch(weft_node_t *node, weft_node_monitor_cb cb, void *data,
                                weft_node_watch_t **out);
WEFT_EXTERN int weft_node_unwatch(weft_node_t *node, weft_node_watch_t *watch);

/* Questions. */
WEFT_EXTERN const char *weft_node_name(const weft_node_t *node);
/* The TCP port that listen URL number i (from 0) is bound to (for :0), or 0
 * (no such listener, not TCP). */
WEFT_EXTERN int weft_node_port(const weft_node_t *node, size_t i);
/* Is the peer named peer connected (past the handshake)? */
WEFT_EXTERN bool weft_node_is_up(const weft_node_t *node, const char *peer);
WEFT_EXTERN int weft_node_stats(const weft_node_t *node, weft_node_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_NODE_H */
