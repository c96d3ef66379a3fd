/* node_int.h: NOT PUBLIC. The distribution layer's structures, shared by
 * node.c (nodes, connections, handshake, names, lookups) and node_chan.c
 * (channels: messages, chunks, credits, close).
 *
 * A node lives on one context. Each connection carries netwire.h frames
 * over one of two transports:
 *  - the loop's (node_io.c; tcp:// and ipc:// by default): a non-blocking
 *    socket watched by a uv_poll_t of the node's loop, read and written
 *    there. Its only other thread is the node's pinger, which writes PING
 *    frames between two frames (under io_lock) while the loop is busy.
 *  - nng's byte streams (tls+tcp://, or every URL on request): nng
 *    completes its I/O on its own threads; the completion callbacks only
 *    record the result and post a task to the node's context
 *    (weft__ctx_post_task), where everything else runs. One receive and one
 *    send are in flight per connection at most.
 *
 * A channel is known on each side by a key: the id its allocator gave it,
 * with bit 63 set when the other side allocated it. Kinds:
 *  - OWNED: the node holds a port b, one end of an in-process channel whose
 *    other end (a) is the program's: what a posts reaches b and goes out;
 *    what comes in is posted on b (over a's bounds: the window bounds it)
 *    and credited back as a's program consumes it. Made for a lookup's
 *    answer, and for a port carried in a message (either way).
 *  - SHARED: the far end of a lookup here: what comes in is posted on the
 *    published port (within its bounds; what does not fit waits in the
 *    channel, uncredited) and credited once posted.
 *  - LOOKUP: asked, not yet answered. ABANDONED: its lookup timed out.
 * Threads: the node's context only (except the nng callbacks, which touch
 * nothing but their connection's atomics and post a task). */
#ifndef WEFT_NODE_INT_H
#define WEFT_NODE_INT_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include <sys/socket.h>

#include "netwire.h"
#include "weft_impl.h"

typedef struct node_conn_s node_conn_t;
typedef struct node_chan_s node_chan_t;
typedef struct node_pub_s node_pub_t;
typedef struct node_lookup_s node_lookup_t;

enum { CH_OWNED = 1, CH_SHARED = 2, CH_LOOKUP = 3, CH_ABANDONED = 4 };

/* A map from channel key to channel: open addressing, linear probing,
 * backward-shift deletion. */
typedef struct {
  node_chan_t **slots;
  uint32_t cap, count; /* cap: a power of two, or 0 */
} node_map_t;

struct node_chan_s {
  node_conn_t *conn; /* NULL once the connection is gone */
  uint64_t key;
  uint8_t kind;
  bool in_ready, in_due;     /* in conn->ready / conn->due */
  bool b_stopped;            /* b held: no credit */
  bool close_out;            /* send CLOSE once the out queue is written */
  bool closed_in;            /* the peer closed (or the connection went) */
  int32_t close_reason;      /* to send */
  int fail_reason;           /* the connection went: unsent messages' ports close with it */
  weft_port_t *b;            /* OWNED: the node's port (NULL once closed) */
  node_pub_t *pub;           /* SHARED */
  node_lookup_t *lookup;     /* LOOKUP */
  weft_list_node_t ready_link, due_link, pub_link;
  bool in_pub_wait;
  /* out: messages taken from b, oldest first; the head may be half written */
  weft_msg_t *out_head, *out_tail;
  uint64_t cur_off, cur_total; /* the head's data stream: bytes written / all */
  bool cur_started;
  int64_t credit_msgs, credit_bytes;
  uint64_t sent_msgs, acked_msgs, unacked_bytes;
  /* in: the message being assembled, and what was received not credited */
  weft_msg_t *in_msg;
  uint8_t *in_payload;
  uint32_t in_payload_len;
  uint64_t in_off, in_total;
  uint64_t rx_msgs, rx_bytes;           /* first frames accepted */
  uint64_t posted_msgs;                 /* handed on (OWNED: to a; SHARED: to the pub) */
  uint64_t credited_msgs, credited_bytes;
  uint64_t *weights;                    /* OWNED: posted, not credited, oldest first */
  uint32_t weights_cap, weights_head;
  uint32_t due_msgs;                    /* credit to send */
  uint64_t due_bytes;
  weft_msg_t *wait_head, *wait_tail;    /* SHARED: complete, waiting for room */
  uint64_t ext_batch;                   /* the batch that last wrote the head in place */
};

struct node_pub_s {
  weft_list_node_t link;
  struct weft_node_s *node;
  char *name;
  weft_port_t *port;
  weft_list_t waiting; /* SHARED channels with messages waiting for room */
  weft_list_t chans;   /* every SHARED channel to it (pub_link) */
};

struct node_lookup_s {
  weft_list_node_t link; /* node->lookups */
  struct weft_node_s *node;
  char peer[65];
  char name[WEFT__NET_MAX_NAME + 1];
  uint64_t deadline_ns;
  weft_node_lookup_cb cb;
  void *data;
  node_chan_t *chan; /* asked on this channel; NULL: waiting for the peer */
  int status;        /* once done */
  weft_port_t *port;
};

struct weft_node_watch_s {
  weft_list_node_t link; /* node->watches */
  weft_node_monitor_cb cb;
  void *data;
  bool gone;             /* unwatched while events were being delivered */
};

typedef struct {
  weft_list_node_t link; /* node->events */
  char peer[65];
  bool up;
  int reason;
  struct weft_node_watch_s *only; /* NULL: on_monitor and every watch */
} node_event_t;

/* A tcp:// or ipc:// address for the loop transport: an address (sa), or
 * a host name to resolve (name, port; sa_len 0). */
typedef struct {
  struct sockaddr_storage sa;
  socklen_t sa_len;
  char *name;      /* tcp with a host name: resolved at each dial */
  char port[8];
  bool ipc;
} node_addr_t;

/* node_io.c's stages of a dial */
enum { DIAL_IDLE = 0, DIAL_RESOLVING = 1, DIAL_CONNECTING = 2, DIAL_CLOSING = 3 };

typedef struct {
  struct weft_node_s *node;
  char *url;
  /* the loop transport (loop_io): the address, and the dial under way */
  bool loop_io;
  node_addr_t addr;
  int stage;              /* DIAL_* */
  uv_getaddrinfo_t gai;
  struct addrinfo *ai, *ai_next; /* resolved; the next one to try */
  int fd;                 /* connecting (-1: none) */
  uv_poll_t io;
  int connect_err;
  nng_stream_dialer *d;
  nng_aio *aio;
  weft__task_t task;
  bool busy;           /* a dial is in flight */
  bool parked;         /* a connection to its peer exists that it did not make */
  node_conn_t *conn;   /* the connection it made, while up */
  uint64_t next_ns;    /* next dial */
  uint32_t backoff_ms;
  char peer[65];       /* whom it reached last */
} node_dialer_t;

typedef struct {
  struct weft_node_s *node;
  nng_stream_listener *l;
  nng_aio *aio;
  weft__task_t task;
  bool busy;              /* an accept in flight (nng), or io open (loop) */
  int port;
  /* the loop transport (loop_io) */
  bool loop_io, io_open, paused;
  int fd;                 /* listening socket (-1: none) */
  uv_poll_t io;
  char *path;             /* ipc: the socket file, removed at close */
} node_listener_t;

enum { CONN_HANDSHAKE = 0, CONN_UP = 1, CONN_DEAD = 2 };
/* A segment of a batch: ext NULL: wbuf[off, off + len); else ext[0, len). */
typedef struct {
  const uint8_t *ext;
  size_t off, len;
} node_seg_t;
#define NODE_SEGS 8 /* nng's limit of iovs per aio */
#define NODE_IN_PLACE 3 /* in-place segments per batch: with wbuf's between, <= NODE_SEGS */
/* The sending side of a connection. The loop starts batches (IDLE -> BUSY),
 * nng's timer thread starts pings when the loop has sent nothing for a while
 * (IDLE -> PING), so a long loop turn does not look like a dead node. *_WANT:
 * the loop has more to write and asks the completion to bring it back. */
enum {
  TX_IDLE = 0,
  TX_BUSY = 1,
  TX_WANT = 2,
  TX_DONE = 3,      /* a send ended; its tx task is queued */
  TX_PING = 4,      /* a ping is out (from IDLE) */
  TX_PING_WANT = 5, /* a ping is out; its end queues the tx task */
  TX_PING_DONE = 6, /* a ping is out, and the tx task is already queued */
  TX_HALF = 7       /* a send failed or wrote part of a batch; its tx task is queued
                       (no ping may go out in the middle of a frame) */
};

struct node_conn_s {
  weft_list_node_t link; /* node->conns */
  struct weft_node_s *node;
  nng_stream *s;
  node_dialer_t *dialer; /* NULL: accepted */
  int state;
  int fail_reason;
  bool rx_busy, flush_queued;
  _Atomic int tx_state;    /* TX_*: the loop starts sends, nng's thread ends them */
  nng_aio *rx_aio, *tx_aio;
  weft__task_t rx_task, tx_task, flush_task;
  _Atomic uint64_t last_rx_ns; /* written by nng's thread, read by the tick */
  _Atomic bool rx_ready;       /* a receive completed, its task not run yet */
  _Atomic uint64_t last_tx_ns; /* the loop's sends and nng's pings write it */
  uint64_t started_ns;
  uint64_t up_ns; /* when the handshake ended here (loop thread) */
  /* The loop transport (node_io.c), loop_io: the loop reads and writes fd
   * from io's callbacks; a batch the socket did not take whole waits for it
   * to have room (tx_mid). The pinger (another thread) writes PINGs on fd
   * only between frames: the loop writes, and both read or write tx_mid and
   * ping_rest, under the node's io_lock; the pinger reaches the connection
   * only while it is on node->pinged (under io_lock), which it leaves before
   * fd is closed. */
  bool loop_io;
  bool io_open;            /* io initialised, its close callback not run yet */
  int fd;                  /* -1: none */
  uv_poll_t io;
  int io_events;           /* watched: UV_READABLE, UV_WRITABLE */
  bool tx_mid;             /* io_lock: a batch is partly written */
  uint8_t ping_rest;       /* io_lock: bytes of a PING still to write */
  bool pinged;             /* io_lock: on node->pinged */
  weft_list_node_t ping_link;
  nng_aio *ping_aio, *ping_timer; /* the pinger: nng's threads only */
  _Atomic bool ping_stop;
  /* handshake */
  bool hello_seen, auth_ok;
  uint8_t nonce[WEFT__NET_NONCE], peer_nonce[WEFT__NET_NONCE];
  char peer[65];
  uint64_t peer_incarnation;
  uint32_t peer_window_msgs;
  uint32_t ping_ms;        /* half the shorter of both sides' heartbeats */
  int refusing;            /* a REFUSE with this reason is on its way: then we hang up */
  uint64_t peer_window_bytes, peer_max_msg;
  /* channels */
  node_map_t chans;
  uint64_t next_id;        /* ids this side allocates: 1, 2, ... */
  uint64_t max_remote_id;  /* highest id the peer introduced */
  uint32_t remote_open;    /* channels the peer made, open here */
  weft_list_t ready;       /* channels with output (ready_link) */
  weft_list_t due;         /* channels owing credit (due_link) */
  /* out: control frames, then the batch being sent: segs[] in order, each
   * either bytes of wbuf or a message's bytes written from where they lie
   * (DATA bodies). Messages so written stay in held until the send is over. */
  uint8_t *ctl;
  size_t ctl_len, ctl_cap;
  uint8_t *wbuf;
  size_t wlen, wcap;       /* wbuf's bytes */
  size_t wtotal, wsent;    /* the batch's bytes (wbuf's and in place), written */
  node_seg_t segs[NODE_SEGS];
  unsigned nsegs, next_in_place;
  uint64_t batch;          /* counts batches: which one wrote a message in place */
  weft_msg_t *held_head, *held_tail;
  /* in: bytes read, and the DATA body being taken. A body's bytes go
   * straight into its message: the read is armed with the message's own
   * memory for them, then rbuf for what follows. If the channel goes
   * meanwhile, the message becomes the connection's (rx_own) and is freed
   * once the body is over or the connection is. */
  uint8_t *rbuf;
  size_t rlen, rcap;
  node_chan_t *rx_chan;    /* NULL: no channel (gone, or unknown: the body is skipped) */
  weft_msg_t *rx_msg;      /* where the body goes (NULL: skipped) */
  bool rx_own;             /* rx_msg is the connection's */
  uint64_t rx_off, rx_left; /* the body's place in the message's data, bytes to come */
  size_t rx_direct;        /* bytes of the read in flight aimed at rx_msg */
  bool rx_big;             /* the last frame was a big DATA: more are likely */
  /* Per-peer figures for metrics (node_metrics.c), counted in node_chan.c
   * on this connection's loop: messages whole, bytes of their payload and
   * buffers (not frame headers), and the times a channel ran out of credit. */
  uint64_t m_msgs_in, m_msgs_out, m_bytes_in, m_bytes_out, m_stalls;
};

struct weft_node_s {
  weft_ctx_t *ctx;
  weft__closer_t closer;
  char name[65];
  uint8_t name_len;
  uint64_t incarnation;
  weft_node_options_t opts; /* strings below are the node's copies */
  uint8_t *secret;
  nng_tls_config *tls_server, *tls_client;
  node_listener_t *listeners;
  size_t nlisteners;
  node_dialer_t *dialers;
  size_t ndialers;
  weft_list_t conns, pubs, lookups;
  /* User callbacks never run inside the node's own work (a callback may
   * close the node): lookups answered and monitor events wait here for
   * ev_task, which delivers them in order from the loop. */
  weft_list_t done, events, watches;
  weft__task_t ev_task;
  bool ev_queued, delivering;
  uv_timer_t tick;
  bool tick_open, closing, closed_cb_done;
  weft_node_close_cb close_cb;
  void *close_data;
  weft_node_stats_t stats;
  weft_metrics_source_t *metrics; /* node_metrics.c; NULL with metrics off */
  /* The loop transport's pinger thread (node_io.c) and what it shares with
   * the loop: io_lock guards pinged, pinger_stop and each loop connection's
   * writes (see node_conn_s). */
  bool pinger_on;
  uv_mutex_t io_lock;
  uv_cond_t pinger_cond;
  uv_thread_t pinger;
  bool pinger_stop;        /* io_lock */
  weft_list_t pinged;      /* io_lock: loop connections that are up (ping_link) */
};

/* node_metrics.c: publish the node's figures (and per peer its channels) in
 * the runtime's metrics snapshots (best effort). */
void weft__node_metrics_start(struct weft_node_s *n);

/* ---- node.c, used by node_chan.c ---------------------------------------- */
/* Room for n more control bytes (frames that go before the next batch's
 * messages). NULL if out of memory (the connection is then failed). */
uint8_t *weft__node_ctl(node_conn_t *c, size_t n);
/* The batch grows: n bytes just written at wbuf + wlen, or n bytes at p
 * written from where they lie (the caller holds their message until the
 * send is over: c->held). */
void weft__node_wput(node_conn_t *c, size_t n);
void weft__node_wext(node_conn_t *c, const uint8_t *p, size_t n);
/* Write what is queued as soon as the send in flight (if any) is done. */
void weft__node_kick(node_conn_t *c);
/* A channel owes msgs / bytes of credit: written at once from half the
 * window on; below that it goes with the next batch (most often the answer
 * the message asked for: one write and one wake-up of the peer instead of
 * two) or from the tick. */
void weft__node_kick_credit(node_conn_t *c, uint32_t msgs, uint64_t bytes);
/* Tear the connection down: every channel fails with reason. */
void weft__node_conn_fail(node_conn_t *c, int reason);
node_pub_t *weft__node_find_pub(struct weft_node_s *n, const char *name, size_t len);
void weft__node_lookup_done(node_lookup_t *lk, int status, weft_port_t *port);
/* For the fuzz targets: a connection with no stream (what it writes is
 * dropped), fed bytes by hand as if they came from a peer. feed returns 0,
 * or the error that ended the connection. release ends and frees it (its
 * channels' ports close as the loop runs). */
node_conn_t *weft__node_conn_detached(struct weft_node_s *n);
int weft__node_conn_feed(node_conn_t *c, const uint8_t *p, size_t len);
void weft__node_conn_release(node_conn_t *c);

/* The reading side, for either transport: the iovs of the next read (at
 * most NODE_SEGS: a DATA body's message memory first, then rbuf), and the
 * bytes that came into them. got returns false if the connection is dead
 * now (the caller then lets it be freed). */
unsigned weft__node_rx_iov(node_conn_t *c, nng_iov *iov);
bool weft__node_conn_got(node_conn_t *c, size_t got);
/* The batch's iovs from wsent on: at most NODE_SEGS. */
unsigned weft__node_batch_iov(const node_conn_t *c, nng_iov *iov);
/* The loop transport wrote the last batch whole: go on with what is queued. */
void weft__node_sent(node_conn_t *c);
/* A connection on a socket (loop transport): accepted (d NULL) or dialled. */
void weft__node_conn_fd(struct weft_node_s *n, int fd, node_dialer_t *d);
/* Fail c for reason, and free it once nothing of it is in flight. */
void weft__node_conn_gone(node_conn_t *c, int reason);
void weft__node_conn_maybe_free(node_conn_t *c);
void weft__node_dial_failed(node_dialer_t *d);
void weft__node_maybe_done(struct weft_node_s *n);

/* ---- node_io.c: the loop transport ------------------------------------------ */
/* Parse url: 0 and *a for tcp://host:port and ipc://path, 1 for a URL the
 * loop transport leaves to nng (another scheme), or an error (UV_EINVAL). */
int weft__nio_parse(const char *url, node_addr_t *a);
/* Bind and listen (phase one of a start: nothing watched yet): 0, 1 (leave
 * it to nng: a host name), or an error. start watches it (phase two);
 * close stops it (busy until its close callback). resume: after the
 * accepts paused (out of descriptors), try again. */
int weft__nio_listen(node_listener_t *l, const char *url);
void weft__nio_listen_start(node_listener_t *l);
void weft__nio_listen_close(node_listener_t *l);
void weft__nio_listen_resume(node_listener_t *l);
/* A dial: resolve if need be, connect; busy until it ends. */
void weft__nio_dial(node_dialer_t *d);
void weft__nio_dial_close(node_dialer_t *d);
/* Watch the connected socket fd for c: 0, or an error (fd stays the caller's). */
int weft__nio_conn_start(node_conn_t *c, int fd);
/* Write the batch from wsent: 0 (all of it), UV_EAGAIN (the rest goes when
 * the socket has room: weft__node_sent then), or an error. */
int weft__nio_write(node_conn_t *c);
/* Stop c's I/O: off the pinger's list, the socket closed from io's close
 * callback (then weft__node_conn_maybe_free). */
void weft__nio_conn_close(node_conn_t *c);
/* Bytes wait unread in c's socket. readable: or its end (a read would not
 * block; what the context's spin asks). */
bool weft__nio_has_input(const node_conn_t *c);
bool weft__nio_readable(const node_conn_t *c);
/* The pinger: start (phase one), put a connection that came up on its
 * list, stop and join (the node's end). */
int weft__nio_pinger_start(struct weft_node_s *n);
void weft__nio_pinger_add(node_conn_t *c);
void weft__nio_pinger_stop(struct weft_node_s *n);

/* ---- node_chan.c ---------------------------------------------------------- */
node_chan_t *weft__nchan_get(node_conn_t *c, uint64_t key);
/* A new channel under key (a fresh id of ours, or one the peer introduced). */
node_chan_t *weft__nchan_new(node_conn_t *c, uint64_t key, uint8_t kind);
/* OWNED: bind port b (owned by the node's context) to ch. */
int weft__nchan_bind(node_chan_t *ch, weft_port_t *b);
/* Handle one channel frame (not HELLO/AUTH/REFUSE/PING, not LOOKUP). */
int weft__nchan_frame(node_conn_t *c, const weft__net_frame_t *f);
/* Append frames to c->wbuf, round robin over the ready channels, until about
 * budget bytes are there; then credits owed. */
void weft__nchan_fill(node_conn_t *c, size_t budget);
/* A DATA frame's header: its body goes to c->rx_* (0, or an error). */
int weft__nchan_data(node_conn_t *c, const weft__net_frame_t *f);
/* k bytes of the DATA body came: at p (copied into the message), or, with
 * p NULL, already in the message's memory. Ends the body (and maybe the
 * message) once it is whole. */
int weft__nchan_body(node_conn_t *c, const uint8_t *p, size_t k);
/* The read for the rest of the body: up to max iovs of the message's memory
 * at rx_off, at most rx_left bytes; returns how many. */
unsigned weft__nchan_body_iov(node_conn_t *c, nng_iov *iov, unsigned max);
/* Free the messages the batch just sent wrote in place. */
void weft__nchan_held_free(node_conn_t *c);
/* The connection is gone: every channel closes with reason. */
void weft__nchan_fail_all(node_conn_t *c, int reason);
/* The published port has room again / closed. */
void weft__nchan_pub_drained(node_pub_t *p);
void weft__nchan_pub_gone(node_pub_t *p);
void weft__nchan_map_free(node_map_t *m);

#endif /* WEFT_NODE_INT_H */
