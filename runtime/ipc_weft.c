/* ipc_weft.c: the codec between two weft processes: msgpack frames (wire.h),
 * memfd buffers, SCM_RIGHTS sockets, credit-based flow control.
 *
 * Credits: each side announces in its HELLO how many messages and bytes the
 * other may send ahead (its window). The sender spends credit per message and
 * stops port B when it has none left; the receiver gives credit back (CREDIT
 * frames) as its program consumes from port A. Messages sent but not yet
 * credited back are "unacknowledged": if the peer dies they are reported in
 * A's close event as undelivered.
 *
 * The window is a contract both ways, checked on receive: a message may be
 * sent while fewer than window_msgs messages and fewer than window_bytes
 * bytes are unacknowledged (so one message may overshoot the byte window by
 * its own weight, at most the frame or memfd limit). A peer that sends past
 * it is closed with WEFT_EWINDOW; one that credits back more than was sent,
 * with WEFT_ECREDIT. What a channel holds for its peer is therefore bounded
 * by the window it granted, whatever the peer does. The weight of a message
 * is its frame's: payload plus every buffer's bytes, computed alike on both
 * sides.
 *
 * Buffers: a big owned buffer from weft_buf_new (256 KiB or more) travels as
 * a sealed memfd; the receiver maps it copy-on-write. If it is memfd-backed
 * already (memfds in demand: buf.c) that costs no copy; if it is anonymous
 * memory (the first one after a quiet spell), it is copied into a new memfd
 * once. Other buffers travel inline when the frame stays under the peer's
 * maximum, else they are copied into a new memfd first.
 *
 * Threads: the owner context's only. */
#include <string.h>
#include <unistd.h>

#include "ipc.h"
#include "metrics_remote.h"
#include "wire.h"

#define DEFAULT_WINDOW_MSGS 4096u
#define DEFAULT_WINDOW_BYTES (256u * 1024u * 1024u)
#define WINDOW_BYTES_MAX ((uint64_t)1 << 62)
#define HEAD_MAX (WEFT__WIRE_HEADER + 2 + WEFT__WIRE_MAX_XFER * 9)

/* Per channel, not per thread: every thread of a process would pay for
 * thread-local buffers of this size, channel or not. */
struct weft__ipc_scratch_s {
  weft__wire_frame_t frame;
  weft__wire_xfer_t x[WEFT__WIRE_MAX_XFER];
  uint8_t head[HEAD_MAX];
};

static struct weft__ipc_scratch_s *scratch(weft__ipc_t *ipc) {
  if (ipc->w.scratch == NULL)
    ipc->w.scratch = weft__malloc(sizeof(*ipc->w.scratch));
  return ipc->w.scratch;
}

static void fini(weft__ipc_t *ipc) {
  weft__free(ipc->w.scratch);
  ipc->w.scratch = NULL;
  weft__free(ipc->w.weights);
  ipc->w.weights = NULL;
}

static uint32_t max_frame(const weft__ipc_t *ipc) {
  return ipc->opts.max_frame ? ipc->opts.max_frame : WEFT__WIRE_DEFAULT_MAX_FRAME;
}

static void start(weft__ipc_t *ipc) {
  uint8_t buf[32];
  uint32_t wm = ipc->opts.window_msgs ? ipc->opts.window_msgs : DEFAULT_WINDOW_MSGS;
  uint64_t wb = ipc->opts.window_bytes ? ipc->opts.window_bytes : DEFAULT_WINDOW_BYTES;
  ipc->w.weights = weft__malloc(wm * sizeof(*ipc->w.weights));
  if (ipc->w.weights == NULL) {
    weft__ipc_fail(ipc, WEFT_ENOMEM);
    return;
  }
  ipc->w.weights_cap = wm;
  weft__buf_memfd_demand(); /* big buffers made from now on may cross without a copy */
  ipc->w.win_msgs = wm;
  ipc->w.win_bytes = wb;
  int n = weft__wire_put_hello(buf, sizeof(buf), max_frame(ipc), wm, wb);
  if (n > 0)
    weft__ipc_write(ipc, buf, (size_t)n);
}

static void send_close(weft__ipc_t *ipc) {
  uint8_t buf[16];
  int n = weft__wire_put_close(buf, sizeof(buf), 0);
  if (n > 0 && weft__ipc_write(ipc, buf, (size_t)n) == 0)
    ipc->sent_close = true;
}

/* A shared buffer that cannot ride inline goes into a fresh memfd (one copy). */
static int to_memfd(weft_buf_t **bufp) {
  weft_buf_t *src = *bufp, *copy;
  int err = weft__buf_new_memfd(&copy, src->len);
  if (err)
    return err;
  memcpy(copy->data, src->data, src->len);
  weft_buf_free(src);
  *bufp = copy;
  return 0;
}

/* Describe the items still in msg's transfer list (taken ones are skipped),
 * collecting fds. Sets *nx and *nfds. Returns 0 or an error. */
static int describe(weft__ipc_t *ipc, weft_msg_t *msg, weft__wire_xfer_t *xs, uint16_t *nx,
                    int *fds, uint16_t *nfds) {
  uint32_t limit = ipc->w.peer_max_frame ? ipc->w.peer_max_frame : max_frame(ipc);
  size_t inline_total = msg->len + WEFT__WIRE_HEADER + 2;
  *nfds = 0;
  *nx = 0;
  for (uint16_t i = 0; i < msg->nxfer; i++) {
    weft__xfer_t *it = &msg->xfer[i];
    if (it->kind == 0)
      continue; /* taken out again after a failed post */
    weft__wire_xfer_t *x = &xs[(*nx)++];
    if (*nfds == WEFT__IPC_MAX_FDS_PER_READ)
      return WEFT_ETRANSFER;
    if (it->kind == WEFT_XFER_SOCKET) {
      x->kind = WEFT__WIRE_X_SOCKET;
      fds[(*nfds)++] = it->u.fd;
      continue;
    }
    if (it->kind != WEFT_XFER_BUF)
      return WEFT_ETRANSFER;
    weft_buf_t *b = it->u.buf;
    bool fits = inline_total + 5 + b->len <= limit;
    bool by_fd = (b->is_memfd && !b->private_map) || b->anon_block; /* weft_buf_new's big ones */
    if (b->len == 0 || (fits && !by_fd)) {
      x->kind = WEFT__WIRE_X_INLINE;
      x->len = b->len;
      x->data = b->data;
      inline_total += 5 + b->len;
      continue;
    }
    if (b->kind == WEFT__BUF_SHARED) {
      int err = to_memfd(&it->u.buf);
      if (err)
        return err;
      b = it->u.buf;
    }
    int fd;
    int err = weft__buf_memfd_export(b, &fd);
    if (err)
      return err;
    x->kind = WEFT__WIRE_X_MEMFD;
    x->len = b->len;
    fds[(*nfds)++] = fd;
  }
  return 0;
}

/* The weight a frame carries: payload plus every buffer, as the receiver
 * will count it (shared buffers too: they cross as copies). */
static uint64_t frame_weight(const weft__wire_xfer_t *x, uint16_t nx, size_t payload_len) {
  uint64_t w = payload_len;
  for (uint16_t i = 0; i < nx; i++)
    if (x[i].kind != WEFT__WIRE_X_SOCKET)
      w += x[i].len;
  return w;
}

static void spend(weft__ipc_t *ipc, uint64_t weight) {
  ipc->w.credit_msgs--;
  ipc->w.credit_bytes -= (int64_t)weight;
  ipc->w.unacked_bytes += weight;
  ipc->sent_msgs++;
  if (ipc->w.credit_msgs <= 0 || ipc->w.credit_bytes <= 0)
    weft__ipc_hold_b(ipc, true);
}

static void send_msg(weft__ipc_t *ipc, weft_msg_t *msg) {
  struct weft__ipc_scratch_s *sc = scratch(ipc);
  int fds[WEFT__IPC_MAX_FDS_PER_READ];
  uint16_t nfds = 0, nx = 0;
  if (sc == NULL || msg->nxfer > WEFT__WIRE_MAX_XFER ||
      describe(ipc, msg, sc->x, &nx, fds, &nfds) != 0) {
    ipc->ctx->undeliverable++;
    weft_msg_free(msg);
    return;
  }
  weft__wire_xfer_t *x = sc->x;
  uint64_t weight = frame_weight(x, nx, msg->len);
  uint8_t *head = sc->head;
  int n = weft__wire_put_msg_head(head, HEAD_MAX, x, nx, msg->len, nfds);
  int err = n < 0 ? n : 0;
  bool held = false; /* a chunk owns msg (and its fds) until it is sent */
  if (!err && nfds) {
    err = weft__ipc_write_frame_fds(ipc, head, (size_t)n, fds, nfds, msg);
    held = err == 0;
  } else if (!err) {
    err = weft__ipc_write(ipc, head, (size_t)n);
  }
  for (uint16_t i = 0; !err && i < nx; i++)
    if (x[i].kind == WEFT__WIRE_X_INLINE && x[i].len)
      err = weft__ipc_write(ipc, x[i].data, x[i].len);
  if (!err)
    err = weft__ipc_write(ipc, msg->data, msg->len);
  if (err) {
    weft__ipc_fail(ipc, err); /* a half-written frame cannot be taken back */
    if (!held)
      weft_msg_free(msg);
    return;
  }
  spend(ipc, weight);
  if (!held)
    weft_msg_free(msg);
}

/* Build a message from a MSG frame that started at stream offset `at`. */
static int build_msg(weft__ipc_t *ipc, const weft__wire_frame_t *f, uint64_t at, weft_msg_t **out) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  err = weft_msg_set_payload(m, f->payload, f->payload_len);
  for (uint16_t i = 0; !err && i < f->nxfer; i++) {
    const weft__wire_xfer_t *x = &f->xfer[i];
    weft_buf_t *b = NULL;
    int fd;
    switch (x->kind) {
    case WEFT__WIRE_X_INLINE:
      err = weft_buf_new(&b, (size_t)x->len);
      if (!err && x->len)
        memcpy(b->data, x->data, (size_t)x->len);
      break;
    case WEFT__WIRE_X_MEMFD:
      fd = weft__ipc_take_fd(ipc, at);
      if (fd < 0) {
        err = WEFT_EPROTO;
        break;
      }
      err = weft__buf_from_memfd(fd, (size_t)x->len, &b);
      if (err) {
        close(fd);
        err = WEFT_EPROTO;
      }
      break;
    default:
      fd = weft__ipc_take_fd(ipc, at);
      if (fd < 0)
        err = WEFT_EPROTO;
      else if ((err = weft_msg_add_socket(m, fd)) != 0)
        close(fd);
      break;
    }
    if (b != NULL) {
      if (!err)
        err = weft_msg_add_buf(m, b);
      weft_buf_free(b);
    }
  }
  if (err) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

/* Credit goes back as the program consumes, not as messages reach port A:
 * A then never holds more than the window the peer was granted, whatever A's
 * own bounds, and the reader never has to stop (so credits and the close
 * behind unread messages are always seen). What A has consumed is what was
 * handed to it less what it still holds; while some is outstanding, A's
 * consumer is asked to raise a drain event on B, which brings us back here. */
static void give_credit(weft__ipc_t *ipc) {
  if (ipc->closed || ipc->b == NULL || ipc->w.weights == NULL)
    return;
  weft_port_t *a = weft__port_peer(ipc->b);
  for (int round = 0; round < 2; round++) {
    /* What A dropped when its program closed it was not consumed: it stays
     * uncredited, so the peer counts it undelivered. relaxed: A and B share
     * this owner thread, which wrote the count; it orders nothing. */
    uint64_t dropped = atomic_load_explicit(&a->discarded, memory_order_relaxed);
    uint64_t outstanding = ipc->w.posted_msgs - ipc->w.credited_msgs;
    uint64_t waiting = weft_port_pending(a) + dropped;
    uint64_t consumed = outstanding > waiting ? outstanding - waiting : 0;
    if (consumed > 0) {
      uint64_t bytes = 0;
      for (uint64_t k = 0; k < consumed; k++) {
        bytes += ipc->w.weights[ipc->w.weights_head];
        ipc->w.weights_head = (ipc->w.weights_head + 1) % ipc->w.weights_cap;
      }
      uint8_t buf[32];
      int n = weft__wire_put_credit(buf, sizeof(buf), (uint32_t)consumed, bytes);
      if (n > 0)
        weft__ipc_write(ipc, buf, (size_t)n);
      ipc->w.credited_msgs += consumed;
      ipc->w.held_bytes -= bytes;
    }
    if (ipc->w.posted_msgs == ipc->w.credited_msgs)
      return;
    /* seq_cst, against the consumer's count then flag: either it sees the
     * flag and notifies us, or the second round sees its lower count. */
    weft__port_want_drain(a);
  }
}

/* The peer consumed what it credits: never more than we sent and it has
 * not credited yet (so no count can overflow, whatever it claims). */
static int on_credit(weft__ipc_t *ipc, uint32_t msgs, uint64_t bytes) {
  if (!ipc->w.hello_seen || msgs > ipc->sent_msgs - ipc->acked_msgs ||
      bytes > ipc->w.unacked_bytes || (msgs == 0 && bytes > 0))
    return WEFT_ECREDIT;
  ipc->w.unacked_bytes -= bytes;
  ipc->w.credit_msgs += msgs;
  ipc->w.credit_bytes += (int64_t)bytes; /* bytes <= unacked_bytes <= window + one frame */
  ipc->acked_msgs += msgs;
  if (ipc->w.credit_msgs > 0 && ipc->w.credit_bytes > 0)
    weft__ipc_hold_b(ipc, false);
  return 0;
}

/* ---- metrics: the parent asks, the child answers, without user code ------------ */

/* What answers may wait unwritten before a request is left unanswered: a
 * parent that asks and never reads costs the child this much at most. */
#define STATS_OUT_MAX (4u * WEFT__WIRE_STATS_MAX)

static int on_stats_req(weft__ipc_t *ipc, uint32_t seq) {
  uint8_t head[WEFT__WIRE_HEADER + 4], *snap;
  size_t len;
  if (ipc->out_bytes > STATS_OUT_MAX || weft__metrics_encode(ipc->ctx->rt, &snap, &len) != 0)
    return 0; /* unanswered: the parent keeps its last answer */
  int err = 0, n = weft__wire_put_stats_head(head, sizeof(head), seq, len);
  if (n > 0 && weft__ipc_write(ipc, head, (size_t)n) == 0)
    err = weft__ipc_write(ipc, snap, len); /* half a frame cannot be taken back: fail */
  weft__free(snap);
  return err;
}

#define STATS_RESEND_NS 1000000000ull /* an unanswered request is made again after 1 s */

/* An answer is taken if it answers a request made since the last answer
 * (seqs are compared as distances back from the last request sent). */
static void on_stats(weft__ipc_t *ipc, const weft__wire_frame_t *f) {
  uint32_t back = ipc->w.stats_seq - f->stats_seq;
  uint32_t open = ipc->w.stats_seq - ipc->w.stats_answered;
  bool asked = back < open;
  if (asked)
    ipc->w.stats_answered = f->stats_seq;
  if (ipc->opts.on_stats)
    ipc->opts.on_stats(ipc, f->payload, f->payload_len, asked ? 0 : WEFT_EPROTO, ipc->opts.data);
}

bool weft__ipc_stats_request(weft__ipc_t *ipc) {
  uint8_t buf[WEFT__WIRE_HEADER + 4];
  if (ipc->codec != &weft__ipc_weft_codec || !ipc->w.hello_seen || ipc->closed ||
      ipc->sent_close || ipc->fd < 0 || ipc->poll_closing)
    return false;
  uint64_t now = uv_hrtime();
  if (ipc->w.stats_answered != ipc->w.stats_seq &&
      (now - ipc->w.stats_sent_ns < STATS_RESEND_NS || ipc->out_bytes > 0))
    return false; /* one waits for its answer */
  int n = weft__wire_put_stats_req(buf, sizeof(buf), ipc->w.stats_seq + 1);
  if (n <= 0 || weft__ipc_write(ipc, buf, (size_t)n) != 0)
    return false;
  ipc->w.stats_seq++;
  ipc->w.stats_sent_ns = now;
  (void)weft__ipc_flush(ipc);
  return true;
}

static int on_frame(weft__ipc_t *ipc, const weft__wire_frame_t *f, uint64_t at) {
  weft_msg_t *m;
  int err;
  switch (f->type) {
  case WEFT__WIRE_HELLO:
    if (ipc->w.hello_seen)
      return WEFT_EPROTO;
    ipc->w.hello_seen = true;
    ipc->w.peer_max_frame = f->max_frame;
    ipc->w.credit_msgs = f->window_msgs;
    /* Any window up to 2^62 bytes is honoured; a larger claim is read as
     * 2^62, so credit arithmetic stays far from overflow. */
    ipc->w.credit_bytes = (int64_t)(f->window_bytes < WINDOW_BYTES_MAX ? f->window_bytes
                                                                     : WINDOW_BYTES_MAX);
    weft__ipc_hold_b(ipc, false);
    return 0;
  case WEFT__WIRE_MSG:
    if (!ipc->w.hello_seen)
      return WEFT_EPROTO;
    /* Checked before anything is built: a flood costs nothing. */
    if (ipc->w.posted_msgs - ipc->w.credited_msgs >= ipc->w.win_msgs ||
        ipc->w.held_bytes >= ipc->w.win_bytes)
      return WEFT_EWINDOW;
    err = build_msg(ipc, f, at, &m);
    if (err)
      return err;
    uint64_t w = frame_weight(f->xfer, f->nxfer, f->payload_len);
    ipc->w.weights[(ipc->w.weights_head + (ipc->w.posted_msgs - ipc->w.credited_msgs)) %
                 ipc->w.weights_cap] = w;
    ipc->w.posted_msgs++;
    ipc->w.held_bytes += w;
    return weft__ipc_deliver_window(ipc, m);
  case WEFT__WIRE_CREDIT:
    return on_credit(ipc, f->credit_msgs, f->credit_bytes);
  case WEFT__WIRE_STATS_REQ:
    if (!ipc->w.hello_seen)
      return WEFT_EPROTO;
    /* The side that asks (a parent: it takes answers) never answers, so a
     * child cannot make its parent encode snapshots for it. */
    return ipc->opts.on_stats ? 0 : on_stats_req(ipc, f->stats_seq);
  case WEFT__WIRE_STATS:
    if (!ipc->w.hello_seen)
      return WEFT_EPROTO;
    on_stats(ipc, f);
    return 0;
  default: /* CLOSE */
    weft__ipc_peer_closed(ipc);
    return 0;
  }
}

static int parse(weft__ipc_t *ipc) {
  struct weft__ipc_scratch_s *sc = scratch(ipc);
  if (sc == NULL)
    return WEFT_ENOMEM;
  weft__wire_frame_t *frame = &sc->frame;
  while (!ipc->read_paused && !ipc->closed && ipc->in != NULL) { /* in: made by the first read */
    size_t need = 0;
    uint64_t at = ipc->in_pos + ipc->in_off;
    int n = weft__wire_parse(ipc->in + ipc->in_off, ipc->in_len - ipc->in_off, max_frame(ipc),
                             frame, &need);
    if (n < 0)
      return n;
    if (n == 0) {
      if (need > ipc->in_len - ipc->in_off) {
        int err = weft__ipc_reserve(ipc, need - (ipc->in_len - ipc->in_off));
        if (err)
          return err;
      }
      break;
    }
    if (weft__ipc_stray_fds(ipc, at) > 0)
      return WEFT_EPROTO; /* fds that no frame announced */
    ipc->in_off += (size_t)n;
    int err = on_frame(ipc, frame, at);
    if (err)
      return err;
  }
  /* A read stops right after bytes that carry fds, so every frame starting
   * in such a read has been parsed: an fd still queued from before the next
   * frame's start came with no frame announcing it. */
  if (!ipc->closed && weft__ipc_stray_fds(ipc, ipc->in_pos + ipc->in_off) > 0)
    return WEFT_EPROTO;
  give_credit(ipc);
  return 0;
}

static bool may_send(weft__ipc_t *ipc) {
  return ipc->w.hello_seen && ipc->w.credit_msgs > 0 && ipc->w.credit_bytes > 0;
}

const weft__ipc_codec_t weft__ipc_weft_codec = {
    .may_send = may_send,
    .start = start,
    .send = send_msg,
    .parse = parse,
    .resume = NULL,
    .send_close = send_close,
    .flushed = NULL,
    .drained = give_credit,
    .eof_reason = WEFT_EPEERDIED,
    /* Ports stay in their process; each item may become an fd. */
    .carry = WEFT__CARRY_NO_PORT | WEFT__CARRY_FEW_ITEMS,
    .fini = fini,
};
