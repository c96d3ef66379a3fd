/* ipc.h: NOT PUBLIC. Process channels: a port whose peer lives in another
 * process, over a connected AF_UNIX stream socket.
 *
 * The user holds port A of an ordinary in-process channel (A, B). B belongs to
 * the transport: B's message callback encodes what A posts and writes it to
 * the socket; what the socket brings is decoded and posted on B, so it
 * arrives at A. Every in-process guarantee (FIFO, bounds, close after the
 * last message) therefore holds up to the socket, and the codec adds the rest:
 * credits (the weft codec), or the NODE_HANDLE ACK rule (the Node codec).
 *
 * Backpressure: the sender stops B when the peer's window is spent (weft) or
 * when too many bytes wait to be written (node); A's bounds then make
 * weft_port_post return WEFT_EAGAIN. On a node channel the receiver stops
 * reading when posting on B hits A's bounds, and reads again from B's drain
 * callback; while a handle awaits Node's ACK it reads on, and decoded
 * messages wait in order in the transport (bounded) until A has room. A weft
 * channel's reader never stops: its window bounds what the peer sends.
 * Input that ends (EOF, error, the peer hanging up while the reader is
 * paused) ends the channel at once: what was decoded and waits for room
 * goes to A over its bound first (it is in memory already, and bounded), so
 * nothing received is dropped and the close follows the last message. A
 * program waiting for its own output to move learns of the end too (a port
 * whose post waits for a drain gets the drain when its channel closes).
 *
 * Threads: everything runs on the context that owns B. */
#ifndef WEFT_IPC_H
#define WEFT_IPC_H

#include "weft_impl.h"

typedef struct weft__ipc_s weft__ipc_t;

typedef enum { WEFT__IPC_WEFT = 0, WEFT__IPC_NODE = 1 } weft__ipc_kind_t;

typedef struct {
  weft__ipc_kind_t kind;
  uint32_t max_frame;    /* largest frame / line accepted; 0: default */
  uint32_t window_msgs;  /* what this side lets the peer send ahead; 0: default */
  uint64_t window_bytes;
  void (*on_done)(weft__ipc_t *ipc, void *data); /* socket and B both closed */
  void *data;
  /* weft codec, the parent's side: the answer to weft__ipc_stats_request
   * (the peer's metrics snapshot, p[0..n), untrusted), or err (WEFT_EPROTO:
   * an answer nobody asked for, not decoded). NULL: answers are dropped. */
  void (*on_stats)(weft__ipc_t *ipc, const uint8_t *p, size_t n, int err, void *data);
} weft__ipc_options_t;

/* Takes fd (a connected stream socket, any blocking mode) and returns port A
 * in *user_port, owned by ctx (the calling thread's). On failure fd is not
 * closed and nothing is left. */
int weft__ipc_open(weft_ctx_t *ctx, int fd, const weft__ipc_options_t *opts,
                   weft__ipc_t **out, weft_port_t **user_port);

/* Ask the peer (a weft process) for its metrics snapshot (STATS_REQ), if
 * the channel is up and the last request was answered, or went out more
 * than a second ago with nothing of ours left unwritten (so a peer that
 * stops reading, stopped or wedged, costs what the socket buffer holds, at
 * 12 bytes a second). The answer comes to opts.on_stats; an answer to an
 * earlier request that is still unanswered is taken too. Owner thread.
 * Returns true if a request went out. */
bool weft__ipc_stats_request(weft__ipc_t *ipc);

/* Close the socket now (the process is gone, or the runtime ends); B closes
 * with reason if it is still open. Owner thread. Idempotent. */
void weft__ipc_abort(weft__ipc_t *ipc, int reason);

/* ---- shared with the codecs (ipc_weft.c, ipc_node.c) -------------------- */

#define WEFT__IPC_MAX_FDS_PER_READ 64
#define WEFT__IPC_FD_QUEUE 256

typedef struct weft__ipc_chunk_s {
  struct weft__ipc_chunk_s *next;
  size_t len, off, cap;
  int fds[WEFT__IPC_MAX_FDS_PER_READ]; /* sent with the chunk's first byte */
  uint16_t nfds;
  uint32_t msgs;                       /* messages that end in it (weft__ipc_count_msg) */
  weft_msg_t *hold;                    /* owns the fds; freed once the chunk is sent */
  uint8_t data[];
} weft__ipc_chunk_t;

/* A received fd and the stream range [from, to) of the read that brought it:
 * the frame it belongs to starts in that range (the sender attaches fds to a
 * frame's first byte, and a read stops right after bytes that carry fds). */
typedef struct {
  int fd;
  uint64_t from, to;
} weft__ipc_fd_t;

typedef struct {
  void (*start)(weft__ipc_t *ipc);                   /* socket ready: send a hello */
  void (*send)(weft__ipc_t *ipc, weft_msg_t *msg);   /* B delivered msg: encode it (takes msg) */
  int (*parse)(weft__ipc_t *ipc);                    /* decode what is in `in`; 0 or an error */
  void (*resume)(weft__ipc_t *ipc);                  /* reading resumed after a pause */
  void (*send_close)(weft__ipc_t *ipc);              /* A closed: tell the peer (may be NULL) */
  void (*flushed)(weft__ipc_t *ipc);                 /* bytes were written (may be NULL) */
  void (*drained)(weft__ipc_t *ipc);                 /* the program consumed from A (NULL:
                                                        resume a paused reader) */
  bool (*may_send)(weft__ipc_t *ipc);                /* the peer may take another message now
                                                        (NULL: always); used at teardown */
  int eof_reason;                                    /* B's close reason when the peer hangs up */
  uint32_t carry;                                    /* WEFT__CARRY_* limits: what the wire
                                                        can represent (B's carry mask) */
  bool acked_when_written;                           /* acked_msgs: written whole or ACKed
                                                        (no credits) */
  void (*fini)(weft__ipc_t *ipc);
} weft__ipc_codec_t;

extern const weft__ipc_codec_t weft__ipc_weft_codec;
extern const weft__ipc_codec_t weft__ipc_node_codec;

struct weft__ipc_s {
  weft_ctx_t *ctx;
  const weft__ipc_codec_t *codec;
  weft__ipc_options_t opts;
  int fd;
  uv_poll_t poll;
  int poll_events;
  bool poll_open, poll_closing;
  weft_port_t *b;          /* transport end; NULL once finished */
  bool b_stopped;          /* B stopped by the transport (no credit / too much queued) */
  bool read_paused;        /* the socket is not read (A full, or input ended behind
                              messages still waiting for room at A) */
  bool keep_reading;       /* node codec: read on while A is full (a handle awaits its
                              ACK, which may come behind the messages A has no room for) */
  bool parse_queued;       /* keep_reading turned on: parse what is buffered (flush task) */
  weft_msg_t *pend_head, *pend_tail; /* decoded, waiting for room at A, in order */
  size_t pend_bytes;
  bool input_over;         /* input ended: decoded messages go to A over its bound */
  bool eof, closed, sent_close;
  bool output_lost;        /* the peer hung up with our bytes unwritten */
  int close_reason;
  /* out */
  weft__task_t flush_task; /* queued once per delivery batch: write what it encoded */
  bool flush_queued;
  weft__ipc_chunk_t *out_head, *out_tail;
  size_t out_bytes;
  /* in */
  uint8_t *in;
  size_t in_len, in_cap, in_off; /* bytes [in_off, in_len) not yet parsed */
  uint64_t in_pos;               /* stream offset of in[0] */
  weft__ipc_fd_t fds[WEFT__IPC_FD_QUEUE];
  unsigned fd_head, fd_count;
  /* both codecs */
  uint64_t sent_msgs, acked_msgs; /* sent vs credited back (weft) or written whole /
                                     acknowledged (node) */
  bool tearing_down;              /* the context ends: B is emptied by hand */
  /* weft codec (ipc_weft.c) only */
  struct {
    bool hello_seen;
    uint32_t peer_max_frame;
    int64_t credit_msgs, credit_bytes;   /* what we may still send */
    uint64_t unacked_bytes;              /* weight sent, not credited back */
    uint32_t win_msgs;                   /* the window we granted the peer */
    uint64_t win_bytes;
    uint64_t held_bytes;                 /* weight handed to A, not credited */
    uint64_t posted_msgs, credited_msgs; /* handed to A vs credit returned */
    uint64_t *weights;                   /* ring of the weights not yet credited */
    uint32_t weights_cap, weights_head;
    struct weft__ipc_scratch_s *scratch; /* one frame (parsed or being written), made on
                                            first use */
    uint32_t stats_seq;                  /* the last STATS_REQ sent */
    uint32_t stats_answered;             /* the last one answered */
    uint64_t stats_sent_ns;              /* when stats_seq went out */
  } w;
  /* node codec (ipc_node.c) only */
  struct {
    void *state;            /* ipc_node.c's node_t */
  } n;
};

/* Room for want more bytes after in_len (compacts, then grows). */
int weft__ipc_reserve(weft__ipc_t *ipc, size_t want);
/* Queue bytes (and fds, kept open by hold until sent). Returns 0 or ENOMEM. */
int weft__ipc_write(weft__ipc_t *ipc, const void *p, size_t n);
int weft__ipc_write_frame_fds(weft__ipc_t *ipc, const void *head, size_t n, const int *fds,
                              uint16_t nfds, weft_msg_t *hold);
int weft__ipc_flush(weft__ipc_t *ipc);
/* A message ends with the bytes just queued: once they are written, it
 * counts as taken (acked_msgs); a channel without acknowledgements (node)
 * uses this so that its close event can say what was never written. */
void weft__ipc_count_msg(weft__ipc_t *ipc);
/* Post a decoded message on B, in order after those still waiting for room
 * at A; if A is full it waits, and reading pauses unless keep_reading (up to
 * WEFT__IPC_PENDING_MAX bytes waiting). Takes msg. */
int weft__ipc_deliver(weft__ipc_t *ipc, weft_msg_t *msg);
#define WEFT__IPC_PENDING_MAX (8u * 1024u * 1024u) /* what the messages hold, structs included */
/* Read on while A is full (on) or pause as soon as a message must wait (off). */
void weft__ipc_keep_reading(weft__ipc_t *ipc, bool on);
/* Post a decoded message on B whatever A holds: the credit window bounds it
 * (takes msg). */
int weft__ipc_deliver_window(weft__ipc_t *ipc, weft_msg_t *msg);
/* Pop the oldest received fd if it can belong to a frame starting at stream
 * offset `at` (any fd if at == UINT64_MAX). Returns the fd or -1. */
int weft__ipc_take_fd(weft__ipc_t *ipc, uint64_t at);
/* How many queued fds came with bytes that all lie before `at`: fds that no
 * frame announced. */
unsigned weft__ipc_stray_fds(weft__ipc_t *ipc, uint64_t at);
/* Stop / restart taking messages from B (sender-side backpressure). */
void weft__ipc_hold_b(weft__ipc_t *ipc, bool hold);
/* The channel failed or the peer closed: close B with reason (0: the peer
 * closed in order), then the socket once everything queued is written. */
void weft__ipc_fail(weft__ipc_t *ipc, int reason);
void weft__ipc_peer_closed(weft__ipc_t *ipc);

#endif /* WEFT_IPC_H */
