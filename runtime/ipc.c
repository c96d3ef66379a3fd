/* ipc.c: process channels: the socket side shared by both codecs.
 *
 * See ipc.h for the design. This file owns the socket: a uv_poll_t on it,
 * sendmsg/recvmsg with SCM_RIGHTS (so several fds can travel with one frame
 * and fds stay attached to the first byte of their frame), the write queue of
 * chunks, the read buffer, the FIFO of received fds, and the lifecycle: the
 * struct goes when both the socket and port B are closed.
 *
 * Invariants: out_bytes is the sum of unsent chunk bytes; a chunk with fds
 * starts with its frame's first byte and is sent with them; in[in_off ..
 * in_len) holds bytes not yet parsed, in_pos is the stream offset of in[0].
 * Threads: the owner context's only. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"

#define CHUNK_MIN (64u * 1024u)
/* A frame with fds starts a chunk of its own. A small one: malloc serves it
 * from its bins. At CHUNK_MIN it came from the heap's top and, freed once
 * sent, made glibc trim the heap and grow it again for the next one: two brk
 * (with their page faults) per buffer sent to a child. */
#define FDS_CHUNK_MIN (4u * 1024u)
#define READ_MIN (64u * 1024u)
#define READS_PER_EVENT 16
#define TEARDOWN_FLUSH_MS 2000

static void close_socket(weft__ipc_t *ipc);
static void maybe_free(weft__ipc_t *ipc);
static void update_poll(weft__ipc_t *ipc);

/* ---- writing ------------------------------------------------------------ */

static weft__ipc_chunk_t *chunk_new(size_t cap) {
  weft__ipc_chunk_t *c = weft__malloc(sizeof(*c) + cap);
  if (c == NULL)
    return NULL;
  c->next = NULL;
  c->len = c->off = 0;
  c->cap = cap;
  c->nfds = 0;
  c->msgs = 0;
  c->hold = NULL;
  return c;
}

static void chunk_append(weft__ipc_t *ipc, weft__ipc_chunk_t *c) {
  if (ipc->out_tail)
    ipc->out_tail->next = c;
  else
    ipc->out_head = c;
  ipc->out_tail = c;
}

int weft__ipc_write(weft__ipc_t *ipc, const void *p, size_t n) {
  if (ipc->poll_closing)
    return WEFT_ECLOSED; /* nothing will write it: it would only leak */
  weft__ipc_chunk_t *t = ipc->out_tail;
  if (t == NULL || t->cap - t->len < n || (t->off > 0 && t->nfds)) {
    t = chunk_new(n > CHUNK_MIN ? n : CHUNK_MIN);
    if (t == NULL)
      return WEFT_ENOMEM;
    chunk_append(ipc, t);
  }
  memcpy(t->data + t->len, p, n);
  t->len += n;
  ipc->out_bytes += n;
  return 0;
}

int weft__ipc_write_frame_fds(weft__ipc_t *ipc, const void *head, size_t n, const int *fds,
                              uint16_t nfds, weft_msg_t *hold) {
  if (nfds > WEFT__IPC_MAX_FDS_PER_READ)
    return WEFT_ETRANSFER;
  if (ipc->poll_closing)
    return WEFT_ECLOSED;
  weft__ipc_chunk_t *c = chunk_new(n > FDS_CHUNK_MIN ? n : FDS_CHUNK_MIN);
  if (c == NULL)
    return WEFT_ENOMEM;
  memcpy(c->data, head, n);
  c->len = n;
  memcpy(c->fds, fds, nfds * sizeof(int));
  c->nfds = nfds;
  c->hold = hold;
  chunk_append(ipc, c);
  ipc->out_bytes += n;
  return 0;
}

static void chunk_free(weft__ipc_chunk_t *c) {
  weft_msg_free(c->hold);
  weft__free(c);
}

static void drop_output(weft__ipc_t *ipc) {
  if (ipc->out_head != NULL && !ipc->closed)
    ipc->output_lost = true;
  while (ipc->out_head != NULL) {
    weft__ipc_chunk_t *c = ipc->out_head;
    ipc->out_head = c->next;
    chunk_free(c);
  }
  ipc->out_tail = NULL;
  ipc->out_bytes = 0;
}

/* One sendmsg of the head chunk. Returns bytes sent, 0 on EAGAIN, or an error. */
static ssize_t send_head(weft__ipc_t *ipc) {
  weft__ipc_chunk_t *c = ipc->out_head;
  struct iovec iov = {.iov_base = c->data + c->off, .iov_len = c->len - c->off};
  union {
    char buf[CMSG_SPACE(sizeof(int) * WEFT__IPC_MAX_FDS_PER_READ)];
    struct cmsghdr align;
  } ctl;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (c->off == 0 && c->nfds > 0) {
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * c->nfds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * c->nfds);
    memcpy(CMSG_DATA(cm), c->fds, sizeof(int) * c->nfds);
  }
  ssize_t n;
  do
    n = sendmsg(ipc->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  return n;
}

void weft__ipc_count_msg(weft__ipc_t *ipc) {
  if (ipc->out_tail != NULL)
    ipc->out_tail->msgs++;
}

int weft__ipc_flush(weft__ipc_t *ipc) {
  while (ipc->out_head != NULL && ipc->fd >= 0) {
    ssize_t n = send_head(ipc);
    if (n == 0)
      break;
    if (n < 0) {
      /* The peer hung up (EPIPE, ECONNRESET). What it sent before, its close
       * included, may still wait to be read: drop our output, keep reading;
       * EOF or the read error ends the channel. */
      drop_output(ipc);
      break;
    }
    weft__ipc_chunk_t *c = ipc->out_head;
    c->off += (size_t)n;
    ipc->out_bytes -= (size_t)n;
    if (c->off == c->len) {
      ipc->acked_msgs += c->msgs;
      ipc->out_head = c->next;
      if (ipc->out_head == NULL)
        ipc->out_tail = NULL;
      chunk_free(c);
    }
  }
  if (ipc->codec->flushed)
    ipc->codec->flushed(ipc);
  update_poll(ipc);
  return 0;
}

/* ---- reading ------------------------------------------------------------ */

int weft__ipc_reserve(weft__ipc_t *ipc, size_t want) {
  if (ipc->in_off > 0 && (ipc->in_off == ipc->in_len || ipc->in_cap - ipc->in_len < want)) {
    memmove(ipc->in, ipc->in + ipc->in_off, ipc->in_len - ipc->in_off);
    ipc->in_len -= ipc->in_off;
    ipc->in_pos += ipc->in_off;
    ipc->in_off = 0;
  }
  if (ipc->in_cap - ipc->in_len >= want)
    return 0;
  size_t cap = ipc->in_cap ? ipc->in_cap : READ_MIN;
  while (cap - ipc->in_len < want)
    cap *= 2;
  uint8_t *p = weft__realloc(ipc->in, cap);
  if (p == NULL)
    return WEFT_ENOMEM;
  ipc->in = p;
  ipc->in_cap = cap;
  return 0;
}

static int push_fds(weft__ipc_t *ipc, struct msghdr *mh, uint64_t from, uint64_t to) {
  int err = 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[WEFT__IPC_MAX_FDS_PER_READ];
    memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
    for (size_t i = 0; i < n; i++) {
      if (ipc->fd_count == WEFT__IPC_FD_QUEUE) {
        close(fds[i]);
        err = WEFT_EPROTO; /* more fds than frames could announce */
        continue;
      }
      unsigned slot = (ipc->fd_head + ipc->fd_count++) % WEFT__IPC_FD_QUEUE;
      ipc->fds[slot].fd = fds[i];
      ipc->fds[slot].from = from;
      ipc->fds[slot].to = to;
    }
  }
  if (mh->msg_flags & MSG_CTRUNC)
    err = WEFT_EPROTO;
  return err;
}

int weft__ipc_take_fd(weft__ipc_t *ipc, uint64_t at) {
  if (ipc->fd_count == 0)
    return -1;
  weft__ipc_fd_t *f = &ipc->fds[ipc->fd_head];
  if (at != UINT64_MAX && (at < f->from || at >= f->to))
    return -1;
  ipc->fd_head = (ipc->fd_head + 1) % WEFT__IPC_FD_QUEUE;
  ipc->fd_count--;
  return f->fd;
}

unsigned weft__ipc_stray_fds(weft__ipc_t *ipc, uint64_t at) {
  unsigned n = 0;
  for (unsigned i = 0; i < ipc->fd_count; i++)
    if (ipc->fds[(ipc->fd_head + i) % WEFT__IPC_FD_QUEUE].to <= at)
      n++;
  return n;
}

/* One recvmsg. Returns bytes read, 0 at EOF, UV_EAGAIN, or an error. */
static ssize_t read_once(weft__ipc_t *ipc) {
  int err = weft__ipc_reserve(ipc, READ_MIN);
  if (err)
    return err;
  struct iovec iov = {.iov_base = ipc->in + ipc->in_len, .iov_len = ipc->in_cap - ipc->in_len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * WEFT__IPC_MAX_FDS_PER_READ)];
    struct cmsghdr align;
  } ctl;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                      .msg_controllen = sizeof(ctl.buf)};
  ssize_t n;
  do
    n = recvmsg(ipc->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
  uint64_t from = ipc->in_pos + ipc->in_len;
  err = push_fds(ipc, &mh, from, from + (uint64_t)n);
  ipc->in_len += (size_t)n;
  return err ? err : n;
}

static weft_msg_t *pend_pop(weft__ipc_t *ipc);

/* Input ended or failed: what waits for room at A goes there now, over A's
 * bound (it is decoded already, at most WEFT__IPC_PENDING_MAX bytes), then B
 * closes with reason, so the close follows the last message received. Not
 * waiting for room matters: a program whose own output waits (for a drain,
 * or for Node's ACK) would otherwise never take input again. */
static void input_over(weft__ipc_t *ipc) {
  weft_msg_t *m;
  ipc->input_over = true;
  while (ipc->b != NULL && (m = pend_pop(ipc)) != NULL)
    if (weft__port_post_window(ipc->b, m) != 0) {
      ipc->ctx->undeliverable++;
      weft_msg_free(m);
    }
}

static void fail_after_input(weft__ipc_t *ipc, int reason) {
  input_over(ipc);
  weft__ipc_fail(ipc, reason);
}

static void on_readable(weft__ipc_t *ipc) {
  for (int i = 0; i < READS_PER_EVENT && !ipc->read_paused && !ipc->closed; i++) {
    ssize_t n = read_once(ipc);
    if (n == UV_EAGAIN)
      break;
    if (n == 0) {
      ipc->eof = true;
      fail_after_input(ipc, ipc->codec->eof_reason);
      return;
    }
    if (n < 0) {
      fail_after_input(ipc, n == UV_ECONNRESET ? WEFT_EPEERDIED : (int)n);
      return;
    }
    int err = ipc->codec->parse(ipc);
    if (err) {
      fail_after_input(ipc, err);
      return;
    }
  }
  weft__ipc_flush(ipc); /* credits and replies the parse queued */
}

/* The peer is gone (POLLERR: it closed with our bytes unread; libuv stopped
 * the handle). What it sent before, its close included, is still readable:
 * read it all, over A's bound if the reader was paused (the kernel's buffer
 * bounds it), then end the channel. */
static void on_hangup(weft__ipc_t *ipc) {
  ipc->poll_events = 0;
  drop_output(ipc);
  if (ipc->closed) {
    weft__ipc_fail(ipc, WEFT_EPEERDIED);
    return;
  }
  input_over(ipc); /* what waits goes first: order holds */
  ipc->read_paused = false;
  int err = ipc->codec->parse(ipc); /* then what a pause left unparsed */
  if (err) {
    fail_after_input(ipc, err);
    return;
  }
  for (int round = 0; round < 64 && !ipc->closed; round++)
    on_readable(ipc);
  if (!ipc->closed)
    fail_after_input(ipc, WEFT_EPEERDIED);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  weft__ipc_t *ipc = h->data;
  /* A paused reader still watches for the hang-up: the peer's death must
   * end the channel even while A is full (the kernel's buffer bounds what
   * is then read over A's bound). */
  if (status < 0 || ((events & UV_DISCONNECT) && ipc->read_paused && !ipc->closed)) {
    on_hangup(ipc);
    return;
  }
  if (events & UV_WRITABLE)
    weft__ipc_flush(ipc);
  if ((events & (UV_READABLE | UV_DISCONNECT)) && !ipc->closed)
    on_readable(ipc);
}

static void update_poll(weft__ipc_t *ipc) {
  if (!ipc->poll_open || ipc->poll_closing)
    return;
  int ev = 0;
  if (!ipc->closed)
    ev |= ipc->read_paused ? UV_DISCONNECT : UV_READABLE | UV_DISCONNECT;
  if (ipc->out_head != NULL)
    ev |= UV_WRITABLE;
  if (ev == ipc->poll_events)
    return;
  ipc->poll_events = ev;
  if (ev)
    uv_poll_start(&ipc->poll, ev, on_poll);
  else
    uv_poll_stop(&ipc->poll);
  if (ipc->closed && ipc->out_head == NULL)
    close_socket(ipc);
}

/* ---- port B glue -------------------------------------------------------- */

/* What a decoded message holds in memory, not only its payload: a flood of
 * tiny messages is bounded by what it costs (its struct, its payload and
 * transfer arrays, its buffers). */
static size_t footprint(const weft_msg_t *m) {
  size_t n = sizeof(*m) + (size_t)m->capxfer * sizeof(weft__xfer_t);
  if (m->data != m->inline_data)
    n += m->cap;
  for (uint16_t i = 0; i < m->nxfer; i++)
    if (m->xfer[i].kind == WEFT_XFER_BUF)
      n += sizeof(weft_buf_t) + m->xfer[i].u.buf->len;
  return n;
}

/* The list of decoded messages waiting for room at A links them through
 * their queue node (free while they are in no queue). Owner thread only:
 * the relaxed accesses order nothing (the field is atomic for the MPSC
 * queues it also serves). */
static void pend_push(weft__ipc_t *ipc, weft_msg_t *msg) {
  atomic_store_explicit(&msg->node.next, NULL, memory_order_relaxed);
  if (ipc->pend_tail)
    atomic_store_explicit(&ipc->pend_tail->node.next, &msg->node, memory_order_relaxed);
  else
    ipc->pend_head = msg;
  ipc->pend_tail = msg;
  ipc->pend_bytes += footprint(msg);
}

static weft_msg_t *pend_pop(weft__ipc_t *ipc) {
  weft_msg_t *m = ipc->pend_head;
  if (m == NULL)
    return NULL;
  ipc->pend_head =
      (weft_msg_t *)(void *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
  if (ipc->pend_head == NULL)
    ipc->pend_tail = NULL;
  ipc->pend_bytes -= footprint(m);
  return m;
}

static void pend_unpop(weft__ipc_t *ipc, weft_msg_t *m) {
  atomic_store_explicit(&m->node.next, ipc->pend_head ? &ipc->pend_head->node : NULL,
                        memory_order_relaxed);
  if (ipc->pend_head == NULL)
    ipc->pend_tail = m;
  ipc->pend_head = m;
  ipc->pend_bytes += footprint(m);
}

/* Messages decoded but never handed to A (the channel closes): counted. */
static void pend_discard(weft__ipc_t *ipc) {
  weft_msg_t *m;
  while ((m = pend_pop(ipc)) != NULL) {
    ipc->ctx->undeliverable++;
    weft_msg_free(m);
  }
}

static bool must_pause(const weft__ipc_t *ipc) {
  return ipc->pend_head != NULL && !ipc->input_over &&
         (!ipc->keep_reading || ipc->pend_bytes >= WEFT__IPC_PENDING_MAX);
}

int weft__ipc_deliver(weft__ipc_t *ipc, weft_msg_t *msg) {
  if (ipc->b == NULL) {
    weft_msg_free(msg);
    return WEFT_ECLOSED;
  }
  /* A post that finds A full arms A's drain event (on_b_drain); while
   * messages wait, later ones queue behind them, so order holds. Once input
   * is over, nothing waits (fail_after_input). */
  int rc = ipc->input_over           ? weft__port_post_window(ipc->b, msg)
           : ipc->pend_head != NULL ? WEFT_EAGAIN
                                    : weft__port_post_nobytes(ipc->b, msg);
  if (rc == WEFT_EAGAIN) {
    pend_push(ipc, msg);
    if (must_pause(ipc) && !ipc->read_paused) {
      ipc->read_paused = true;
      update_poll(ipc);
    }
    return 0;
  }
  if (rc != 0)
    weft_msg_free(msg);
  return rc == WEFT_ECLOSED ? 0 : rc;
}

int weft__ipc_deliver_window(weft__ipc_t *ipc, weft_msg_t *msg) {
  int rc = ipc->b ? weft__port_post_window(ipc->b, msg) : WEFT_ECLOSED;
  if (rc != 0)
    weft_msg_free(msg);
  return rc == WEFT_ECLOSED ? 0 : rc;
}

/* Read again if nothing holds the reader back; what is buffered is parsed
 * from the flush task (not inside the caller's callback). */
static void read_on(weft__ipc_t *ipc) {
  if (!ipc->read_paused || must_pause(ipc) || ipc->closed)
    return;
  ipc->read_paused = false;
  ipc->parse_queued = true;
  if (!ipc->flush_queued) {
    ipc->flush_queued = true;
    weft__ctx_post_task(ipc->ctx, &ipc->flush_task);
  }
  update_poll(ipc);
}

void weft__ipc_keep_reading(weft__ipc_t *ipc, bool on) {
  ipc->keep_reading = on;
  if (on) {
    read_on(ipc);
  } else if (must_pause(ipc) && !ipc->read_paused) {
    ipc->read_paused = true; /* a parse loop stops at its next line */
    update_poll(ipc);
  }
}

/* A's queue went down: the codec returns credit, or what waits for room at A
 * moves on and reading resumes. */
static void on_b_drain(weft_port_t *b) {
  weft__ipc_t *ipc = b->ext->internal_data;
  if (ipc->codec->drained) {
    ipc->codec->drained(ipc);
    weft__ipc_flush(ipc);
    return;
  }
  while (ipc->pend_head != NULL && ipc->b != NULL) {
    weft_msg_t *m = pend_pop(ipc); /* before the post: it relinks the node */
    int rc = weft__port_post_nobytes(ipc->b, m);
    if (rc == WEFT_EAGAIN) {
      pend_unpop(ipc, m);
      return; /* the drain event is armed again */
    }
    if (rc != 0)
      weft_msg_free(m);
  }
  if (!ipc->read_paused || ipc->closed)
    return;
  ipc->read_paused = false;
  if (ipc->codec->resume)
    ipc->codec->resume(ipc);
  int err = ipc->codec->parse(ipc);
  if (err)
    fail_after_input(ipc, err);
  weft__ipc_flush(ipc);
  update_poll(ipc);
}

static void on_flush_task(weft__task_t *t) {
  weft__ipc_t *ipc = (weft__ipc_t *)(void *)((char *)t - offsetof(weft__ipc_t, flush_task));
  ipc->flush_queued = false;
  if (ipc->parse_queued) {
    ipc->parse_queued = false;
    if (ipc->fd >= 0 && !ipc->poll_closing && !ipc->closed && !ipc->read_paused) {
      int err = ipc->codec->parse(ipc);
      if (err)
        fail_after_input(ipc, err);
      update_poll(ipc);
    }
  }
  if (ipc->fd >= 0 && !ipc->poll_closing)
    weft__ipc_flush(ipc);
  maybe_free(ipc);
}

/* Encode now, write in bulk: at 64 KiB, or once the delivery batch is over. */
static void on_b_message(weft_port_t *b, weft_msg_t *msg) {
  weft__ipc_t *ipc = b->ext->internal_data;
  ipc->codec->send(ipc, msg);
  if (ipc->out_bytes >= CHUNK_MIN) {
    weft__ipc_flush(ipc);
  } else if (!ipc->flush_queued) {
    ipc->flush_queued = true;
    weft__ctx_post_task(ipc->ctx, &ipc->flush_task);
  }
}

void weft__ipc_hold_b(weft__ipc_t *ipc, bool hold) {
  if (ipc->b == NULL || hold == ipc->b_stopped || ipc->tearing_down)
    return;
  ipc->b_stopped = hold;
  if (hold)
    weft_port_stop(ipc->b);
  else
    weft_port_start(ipc->b, on_b_message);
}

/* B finished closing: A closed it (send our close), or we closed it. */
static void on_b_closed(weft_port_t *b, const weft_port_close_info_t *info) {
  (void)info;
  weft__ipc_t *ipc = b->ext->internal_data;
  ipc->b = NULL;
  if (!ipc->closed) {
    ipc->closed = true;
    if (ipc->codec->send_close && !ipc->sent_close)
      ipc->codec->send_close(ipc);
    weft__ipc_flush(ipc);
    if (ipc->fd >= 0 && ipc->out_head == NULL)
      shutdown(ipc->fd, SHUT_WR);
  }
  update_poll(ipc);
  if (ipc->out_head == NULL)
    close_socket(ipc);
  maybe_free(ipc);
}

void weft__ipc_fail(weft__ipc_t *ipc, int reason) {
  if (ipc->closed && ipc->b == NULL) {
    close_socket(ipc);
    return;
  }
  ipc->closed = true;
  ipc->close_reason = reason;
  pend_discard(ipc);
  if (ipc->b != NULL) {
    /* What the peer never took was not delivered, whatever the close: with
     * credits, a peer credits everything its program consumed before its
     * CLOSE (on the same stream), so what is not credited then was never
     * consumed; without (node), what was not written whole or acknowledged. */
    uint32_t unacked = (uint32_t)(ipc->sent_msgs - ipc->acked_msgs);
    if (reason == 0 && ipc->output_lost && unacked > 0)
      reason = WEFT_EPEERDIED; /* it hung up before taking what we sent */
    weft__port_close_with(ipc->b, reason, unacked);
  }
  close_socket(ipc);
}

void weft__ipc_peer_closed(weft__ipc_t *ipc) { weft__ipc_fail(ipc, 0); }

/* ---- lifecycle ---------------------------------------------------------- */

static void on_poll_closed(uv_handle_t *h) {
  weft__ipc_t *ipc = h->data;
  ipc->poll_open = false;
  ipc->ctx->handles_open--;
  close(ipc->fd);
  ipc->fd = -1;
  maybe_free(ipc);
}

static void close_socket(weft__ipc_t *ipc) {
  if (ipc->poll_closing)
    return;
  ipc->poll_closing = true;
  drop_output(ipc);
  while (ipc->fd_count > 0)
    close(weft__ipc_take_fd(ipc, UINT64_MAX));
  uv_close((uv_handle_t *)&ipc->poll, on_poll_closed);
}

typedef struct {
  weft__closer_t closer;
  weft__ipc_t ipc;
} ipc_box_t;

static ipc_box_t *box_of(weft__ipc_t *ipc) {
  return (ipc_box_t *)(void *)((char *)ipc - offsetof(ipc_box_t, ipc));
}

static void maybe_free(weft__ipc_t *ipc) {
  if (ipc->b != NULL || ipc->poll_open || ipc->flush_queued)
    return;
  weft__ctx_closer_remove(ipc->ctx, &box_of(ipc)->closer);
  pend_discard(ipc);
  if (ipc->codec->fini)
    ipc->codec->fini(ipc);
  weft__free(ipc->in);
  if (ipc->opts.on_done)
    ipc->opts.on_done(ipc, ipc->opts.data);
  weft__free(box_of(ipc));
}

static bool on_input_ready(weft__closer_t *c) {
  weft__ipc_t *ipc = &((ipc_box_t *)(void *)c)->ipc;
  char byte;
  if (ipc->fd < 0 || ipc->read_paused || ipc->closed)
    return false;
  return recv(ipc->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
}

static bool may_send(weft__ipc_t *ipc) {
  return ipc->b != NULL && !ipc->closed && (!ipc->codec->may_send || ipc->codec->may_send(ipc));
}

/* Wait up to ms for the socket; read and parse what came (credits). Returns
 * false once nothing more can come (EOF, error, closed). */
static bool teardown_wait(weft__ipc_t *ipc, int ms) {
  struct pollfd pfd = {.fd = ipc->fd, .events = POLLIN | (ipc->out_head ? POLLOUT : 0)};
  if (poll(&pfd, 1, ms) <= 0 || !(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
    return true;
  ssize_t n = read_once(ipc);
  if (n == UV_EAGAIN)
    return true;
  if (n <= 0 || ipc->codec->parse(ipc) != 0)
    return false;
  return !ipc->closed;
}

/* At teardown the loop will not run again for us: send what A posted as the
 * peer's window allows, reading the credits it returns, and write it all,
 * for up to TEARDOWN_FLUSH_MS; then our close. The window holds here too (a
 * peer would close a channel that overshoots it). What is still in B after
 * that is discarded with B and counted undeliverable. */
static void flush_at_teardown(weft__ipc_t *ipc) {
  uint64_t deadline = uv_hrtime() + (uint64_t)TEARDOWN_FLUSH_MS * 1000000u;
  bool closed_sent = false;
  ipc->tearing_down = true;
  for (;;) {
    weft_msg_t *m;
    while (may_send(ipc) && weft_port_receive(ipc->b, &m) == 0)
      ipc->codec->send(ipc, m);
    bool waiting = ipc->b != NULL && !ipc->closed && weft_port_pending(ipc->b) > 0;
    if (!waiting && !closed_sent && !ipc->closed && ipc->codec->send_close &&
        !ipc->sent_close) {
      ipc->codec->send_close(ipc);
      closed_sent = true;
    }
    weft__ipc_flush(ipc);
    if ((!waiting && ipc->out_head == NULL) || ipc->fd < 0 || ipc->poll_closing)
      return;
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      return;
    uint64_t left_ms = (deadline - now) / 1000000u;
    if (!teardown_wait(ipc, left_ms < 50 ? (int)left_ms + 1 : 50))
      return;
  }
}

/* The context ends and its loop will not wait for us: send what A posted
 * and our close (flush_at_teardown), then close the socket whatever is left
 * (the peer then sees EOF). */
static void on_ctx_close(weft__closer_t *c) {
  weft__ipc_t *ipc = &((ipc_box_t *)(void *)c)->ipc;
  flush_at_teardown(ipc);
  ipc->closed = true;
  close_socket(ipc);
  if (ipc->b != NULL)
    weft_port_close(ipc->b);
}

int weft__ipc_open(weft_ctx_t *ctx, int fd, const weft__ipc_options_t *opts,
                   weft__ipc_t **out, weft_port_t **user_port) {
  int err;
  ipc_box_t *box = weft__calloc(1, sizeof(*box));
  if (box == NULL)
    return WEFT_ENOMEM;
  weft__ipc_t *ipc = &box->ipc;
  box->closer.close = on_ctx_close;
  box->closer.input_ready = on_input_ready;
  ipc->flush_task.fn = on_flush_task;
  ipc->ctx = ctx;
  ipc->fd = fd;
  ipc->opts = *opts;
  ipc->codec = opts->kind == WEFT__IPC_NODE ? &weft__ipc_node_codec : &weft__ipc_weft_codec;
  weft_port_t *ports[2];
  err = weft_channel_new(ctx, ports);
  if (err)
    goto fail_free;
  ipc->b = ports[1];
  if (weft__port_ext(ipc->b) == NULL) {
    err = WEFT_ENOMEM;
    goto fail_channel;
  }
  ipc->b->ext->on_close_internal = on_b_closed;
  ipc->b->ext->internal_data = ipc;
  ipc->b->ext->on_drain = on_b_drain;
  weft__port_set_carry(ipc->b, ipc->codec->carry);
  err = uv_poll_init_socket(ctx->loop, &ipc->poll, fd);
  if (err)
    goto fail_channel;
  ipc->poll.data = ipc;
  ipc->poll_open = true;
  ctx->handles_open++;
  uv_unref((uv_handle_t *)&ipc->poll);
  weft_port_unref(ipc->b);
  /* B's inbox is the send queue: bounded in messages like any port, and in
   * bytes generously (the peer's window bounds what is in flight; big
   * buffers are memfds, not heap). */
  weft_port_set_hwm(ipc->b, 0, (size_t)1 << 30);
  ipc->b_stopped = true; /* until the codec says the peer may receive */
  weft__ctx_closer_add(ctx, &box->closer);
  ipc->codec->start(ipc);
  weft__ipc_flush(ipc);
  *out = ipc;
  *user_port = ports[0];
  return 0;

fail_channel:
  if (ipc->b->ext != NULL)
    ipc->b->ext->on_close_internal = NULL;
  weft_port_close(ports[0]);
  weft_port_close(ports[1]);
fail_free:
  weft__free(box);
  return err;
}

void weft__ipc_abort(weft__ipc_t *ipc, int reason) { weft__ipc_fail(ipc, reason); }
