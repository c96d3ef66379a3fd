/* node.c: nodes (weft/node.h): listeners, dialers, connections, the
 * handshake, heartbeats, names and lookups. Channels are node_chan.c's; the
 * loop transport's sockets are node_io.c's.
 *
 * Connections are byte streams, not SP sockets: pair1 takes one peer per
 * socket, and its polyamorous mode drops a message when a peer's queue is
 * full; a stream gives one ordered connection per peer and leaves framing,
 * flow control and loss accounting to us. Every frame is limited to
 * WEFT__NET_MAX_FRAME by the parser before anything is allocated (the role
 * NNG_OPT_RECVMAXSZ plays for SP sockets). Two transports move the bytes
 * (node_int.h): the node's loop itself (node_io.c; tcp:// and ipc:// by
 * default), or nng's byte streams (nng_stream_*: tls+tcp://, or every URL on
 * request). Everything above the bytes is shared: batches, parsing, the
 * handshake, credits.
 *
 * Threads: with nng, nng completes each aio on its own threads; the
 * callbacks below only stamp the time of a receive and post a task to the
 * node's context. Each connection has at most one receive and one send in
 * flight, each listener one accept, each dialer one dial, so a task is never
 * queued twice. A structure is freed only once its aios are idle (or its
 * loop handles closed) and its tasks have run. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <mbedtls/md.h>

#include "node_int.h"

#include <nng/supplemental/tls/tls.h>

#define RBUF_CAP (1024u * 1024u) /* >= 2 frames: a partial one always fits */
#define BATCH_BYTES (1024u * 1024u)
#define DIRECT_BIG (256u * 1024u)
#define DIRECT_TAIL (16u * 1024u)
#define DEFAULT_LOOKUP_MS 5000u
static const char AUTH_LABEL[] = "weft-node-auth-1";

static void conn_maybe_free(node_conn_t *c);
static void node_maybe_done(weft_node_t *n);
static void conn_fail(node_conn_t *c, int reason);

static int from_nng(int rv) {
  switch (rv) {
  case 0: return 0;
  case NNG_ENOMEM: return WEFT_ENOMEM;
  case NNG_EINVAL:
  case NNG_EADDRINVAL: return UV_EINVAL;
  case NNG_EADDRINUSE: return UV_EADDRINUSE;
  case NNG_ENOTSUP: return UV_ENOTSUP;
  case NNG_ENOENT: return UV_ENOENT;
  case NNG_ECONNREFUSED: return UV_ECONNREFUSED;
  case NNG_ETIMEDOUT: return UV_ETIMEDOUT;
  case NNG_EPERM: return UV_EPERM;
  case NNG_ECLOSED:
  case NNG_ECANCELED: return WEFT_ECLOSED;
  case NNG_ECONNRESET:
  case NNG_ECONNSHUT:
  case NNG_ECONNABORTED: return WEFT_EPEERDIED;
  case NNG_ECRYPTO:
  case NNG_EPEERAUTH: return WEFT_EAUTH;
  default: return UV_EIO;
  }
}

/* ---- control frames and writing ------------------------------------------ */

uint8_t *weft__node_ctl(node_conn_t *c, size_t n) {
  if (c->ctl_cap - c->ctl_len < n) {
    size_t cap = c->ctl_cap ? c->ctl_cap * 2 : 1024;
    while (cap - c->ctl_len < n)
      cap *= 2;
    uint8_t *p = weft__realloc(c->ctl, cap);
    if (p == NULL)
      return NULL;
    c->ctl = p;
    c->ctl_cap = cap;
  }
  uint8_t *p = c->ctl + c->ctl_len;
  c->ctl_len += n;
  return p;
}

void weft__node_wput(node_conn_t *c, size_t n) {
  node_seg_t *s = c->nsegs ? &c->segs[c->nsegs - 1] : NULL;
  if (s != NULL && s->ext == NULL && s->off + s->len == c->wlen)
    s->len += n;
  else
    c->segs[c->nsegs++] = (node_seg_t){.ext = NULL, .off = c->wlen, .len = n};
  c->wlen += n;
  c->wtotal += n;
}

void weft__node_wext(node_conn_t *c, const uint8_t *p, size_t n) {
  c->segs[c->nsegs++] = (node_seg_t){.ext = p, .off = 0, .len = n};
  c->next_in_place++;
  c->wtotal += n;
}

unsigned weft__node_batch_iov(const node_conn_t *c, nng_iov *iov) {
  size_t skip = c->wsent;
  unsigned k = 0;
  for (unsigned i = 0; i < c->nsegs; i++) {
    const node_seg_t *s = &c->segs[i];
    if (skip >= s->len) {
      skip -= s->len;
      continue;
    }
    const uint8_t *base = s->ext != NULL ? s->ext : c->wbuf + s->off;
    iov[k].iov_buf = (void *)(uintptr_t)(base + skip);
    iov[k].iov_len = s->len - skip;
    k++;
    skip = 0;
  }
  return k;
}

/* The send in flight is done (IDLE), or not: then ask its completion to
 * bring us back (WANT). Returns true if the caller may send now. */
static bool tx_idle_or_want(node_conn_t *c) {
  if (c->loop_io) /* the loop's own writer: a partly written batch waits for room */
    return !c->tx_mid;
  int st = atomic_load_explicit(&c->tx_state, memory_order_acquire); /* DONE: its task comes */
  while (st == TX_BUSY || st == TX_PING)
    if (atomic_compare_exchange_weak_explicit(&c->tx_state, &st,
                                              st == TX_BUSY ? TX_WANT : TX_PING_WANT,
                                              memory_order_acq_rel, memory_order_acquire))
      return false;
  return st == TX_IDLE;
}

/* ---- the pinger: nng's threads ---------------------------------------------------
 * Every ping_ms, if nothing went out meanwhile and no send is in flight, a
 * PING goes out from nng's timer thread: a loop busy with a long turn still
 * tells its peers it is alive (their heartbeat then measures the network and
 * the process, not the length of a callback). */
static const uint8_t PING_FRAME[WEFT__NET_HEAD] = {0, 0, 0, WEFT__NET_HEAD - 4, WEFT__NET_PING};

static void on_ping_timer(void *arg) {
  node_conn_t *c = arg;
  if (nng_aio_result(c->ping_timer) != 0 ||
      atomic_load_explicit(&c->ping_stop, memory_order_acquire))
    return;
  uint64_t now = uv_hrtime();
  uint64_t last = atomic_load_explicit(&c->last_tx_ns, memory_order_relaxed);
  /* From IDLE, or from DONE: a send ended while the loop is busy and its
   * tx task waits; the stream is free either way. */
  int st = TX_IDLE;
  bool go = now - last >= (uint64_t)c->ping_ms * 1000000u &&
            (atomic_compare_exchange_strong_explicit(&c->tx_state, &st, TX_PING,
                                                     memory_order_acq_rel, memory_order_acquire) ||
             (st == TX_DONE && atomic_compare_exchange_strong_explicit(
                                   &c->tx_state, &st, TX_PING_DONE, memory_order_acq_rel,
                                   memory_order_acquire)));
  if (go) {
    atomic_store_explicit(&c->last_tx_ns, now, memory_order_relaxed);
    nng_iov iov = {.iov_buf = (void *)PING_FRAME, .iov_len = sizeof(PING_FRAME)};
    nng_aio_set_iov(c->ping_aio, 1, &iov);
    nng_stream_send(c->s, c->ping_aio);
  }
  nng_sleep_aio(c->ping_ms / 2 ? c->ping_ms / 2 : 1, c->ping_timer);
}

/* The ping is out (or failed: the receive side will tell). The loop may
 * have asked to be called back meanwhile. */
static void on_ping_sent(void *arg) {
  node_conn_t *c = arg;
  int st = atomic_load_explicit(&c->tx_state, memory_order_acquire);
  for (;;) {
    /* only a ping's states can be here: nothing else starts while one is out */
    int to = st == TX_PING ? TX_IDLE : TX_DONE; /* PING_DONE, PING_WANT: DONE */
    if (atomic_compare_exchange_weak_explicit(&c->tx_state, &st, to, memory_order_acq_rel,
                                              memory_order_acquire))
      break;
  }
  if (st == TX_PING_WANT) /* the loop asked meanwhile, and no task is queued */
    weft__ctx_post_task(c->node->ctx, &c->tx_task);
}

/* The tx task owns a DONE send; the pinger may take the stream meanwhile
 * (DONE -> PING_DONE): then the ping's end brings the task back. Returns
 * true if the task holds the state `to` now, false if it must wait. */
static bool tx_take(node_conn_t *c, int to) {
  int st = TX_DONE;
  if (atomic_compare_exchange_strong_explicit(&c->tx_state, &st, to, memory_order_acq_rel,
                                              memory_order_acquire))
    return true;
  st = TX_HALF;
  if (atomic_compare_exchange_strong_explicit(&c->tx_state, &st, to, memory_order_acq_rel,
                                              memory_order_acquire))
    return true;
  st = TX_PING_DONE; /* a ping is out */
  atomic_compare_exchange_strong_explicit(&c->tx_state, &st, TX_PING_WANT, memory_order_acq_rel,
                                          memory_order_acquire);
  return false;
}

void weft__node_kick(node_conn_t *c) {
  if (c->state == CONN_DEAD || c->flush_queued || !tx_idle_or_want(c))
    return;
  c->flush_queued = true;
  weft__ctx_post_task(c->node->ctx, &c->flush_task);
}

/* Credit below half the window waits for a batch to ride on: the sender
 * still has the other half, and a message is most often answered on the
 * same connection within the turn. The tick writes what is left. */
void weft__node_kick_credit(node_conn_t *c, uint32_t msgs, uint64_t bytes) {
  const weft_node_options_t *o = &c->node->opts;
  if ((uint64_t)msgs * 2 >= o->window_msgs || bytes * 2 >= o->window_bytes)
    weft__node_kick(c);
}

/* A send's completion wakes the loop only when the loop asked for it (WANT:
 * more to write, or a REFUSE to follow by the hang-up) or something went
 * wrong: a message's way out costs no wake-up of its sender. */
static void send_rest(node_conn_t *c, bool fresh) {
  nng_iov iov[NODE_SEGS];
  unsigned niov = weft__node_batch_iov(c, iov);
  /* The completion marks the send done from inside its callback: the aio is
   * nng's until that callback has returned (almost always long since). */
  if (fresh)
    nng_aio_wait(c->tx_aio);
  /* A batch that left output behind (it filled up) asks to be called back;
   * so does one that writes messages in place (held: freed at its end). */
  bool more = c->refusing || c->ctl_len > 0 || !weft_list_empty(&c->ready) ||
              !weft_list_empty(&c->due) || c->held_head != NULL;
  if (more)
    atomic_store_explicit(&c->tx_state, TX_WANT, memory_order_relaxed);
  else if (fresh)
    atomic_store_explicit(&c->tx_state, TX_BUSY, memory_order_relaxed);
  nng_aio_set_iov(c->tx_aio, niov, iov);
  nng_stream_send(c->s, c->tx_aio);
}

/* Start a batch: the control frames, then the channels' frames. False if
 * there is nothing to write (or the connection failed). */
static bool batch_start(node_conn_t *c) {
  weft__nchan_held_free(c); /* the last batch is over */
  c->wlen = c->wsent = c->wtotal = 0;
  c->nsegs = c->next_in_place = 0;
  c->batch++;
  if (c->ctl_len > 0) {
    if (c->wcap < c->ctl_len) {
      uint8_t *p = weft__realloc(c->wbuf, c->ctl_len);
      if (p == NULL) {
        conn_fail(c, WEFT_ENOMEM);
        return false;
      }
      c->wbuf = p;
      c->wcap = c->ctl_len;
    }
    memcpy(c->wbuf, c->ctl, c->ctl_len);
    weft__node_wput(c, c->ctl_len);
    c->ctl_len = 0;
  }
  if (c->state == CONN_UP)
    weft__nchan_fill(c, BATCH_BYTES);
  if (c->wtotal == 0)
    return false;
  atomic_store_explicit(&c->last_tx_ns, uv_hrtime(), memory_order_relaxed);
  c->node->stats.bytes_out += c->wtotal;
  return true;
}

/* A batch is written whole (loop transport): hang up after a REFUSE, else
 * tell whether more waits. */
static bool batch_over(node_conn_t *c) {
  weft__nchan_held_free(c);
  if (c->refusing && c->ctl_len == 0) {
    conn_fail(c, c->refusing); /* the REFUSE is out */
    return false;
  }
  return c->ctl_len > 0 || !weft_list_empty(&c->ready) || !weft_list_empty(&c->due);
}

#define LOOP_BATCHES 4 /* per turn; then the flush task takes the rest */

/* Write the control frames, then the channels' frames, in batches. The loop
 * transport writes them now, while the socket takes them; nng's from its
 * own threads. */
static void flush_now(node_conn_t *c) {
  if (c->state == CONN_DEAD || !tx_idle_or_want(c))
    return;
  for (unsigned round = 0;; round++) {
    if (!batch_start(c))
      return;
    if (!c->loop_io) {
      if (c->s == NULL) {
        /* a detached connection (fuzzing): what it writes goes nowhere */
        c->wlen = c->wtotal = 0;
        c->nsegs = 0;
        weft__nchan_held_free(c);
        return;
      }
      send_rest(c, true);
      return;
    }
    int rv = weft__nio_write(c);
    if (rv == UV_EAGAIN)
      return; /* the socket's room brings us back (weft__node_sent) */
    if (rv != 0) {
      conn_fail(c, WEFT_EPEERDIED);
      return;
    }
    if (!batch_over(c))
      return;
    if (round + 1 == LOOP_BATCHES) {
      weft__node_kick(c); /* let the loop's other work run between batches */
      return;
    }
  }
}

void weft__node_sent(node_conn_t *c) {
  if (c->state != CONN_DEAD && batch_over(c))
    flush_now(c);
}

static node_conn_t *conn_of(weft__task_t *t, size_t off) {
  return (node_conn_t *)(void *)((char *)t - off);
}

static void on_flush_task(weft__task_t *t) {
  node_conn_t *c = conn_of(t, offsetof(node_conn_t, flush_task));
  c->flush_queued = false;
  flush_now(c);
  conn_maybe_free(c);
}

/* nng's thread. A whole send that nobody waits for ends here (BUSY ->
 * IDLE); else DONE hands it to the loop: the tx task then owns it (no send
 * starts while DONE, so the task is never queued twice). wsent and wlen are
 * the loop's, left alone while a send is in flight. */
static void on_tx(void *arg) {
  node_conn_t *c = arg;
  bool whole = nng_aio_result(c->tx_aio) == 0 && c->wsent + nng_aio_count(c->tx_aio) >= c->wtotal;
  if (whole) {
    int expect = TX_BUSY;
    if (atomic_compare_exchange_strong_explicit(&c->tx_state, &expect, TX_IDLE,
                                                memory_order_acq_rel, memory_order_acquire))
      return;
  }
  atomic_store_explicit(&c->tx_state, whole ? TX_DONE : TX_HALF, memory_order_release);
  weft__ctx_post_task(c->node->ctx, &c->tx_task);
}

static void on_tx_task(weft__task_t *t) {
  node_conn_t *c = conn_of(t, offsetof(node_conn_t, tx_task));
  nng_aio_wait(c->tx_aio); /* its callback has returned */
  int rv = nng_aio_result(c->tx_aio);
  size_t n = rv == 0 ? nng_aio_count(c->tx_aio) : 0;
  if (rv == 0 && c->state != CONN_DEAD && c->wsent + n < c->wtotal) {
    if (!tx_take(c, TX_WANT))
      return; /* a ping is out: its end brings us back (this count stays) */
    c->wsent += n;
    send_rest(c, false); /* the rest of a partly written batch */
    return;
  }
  weft__nchan_held_free(c); /* the batch is over: nng no longer reads them */
  if (!tx_take(c, TX_IDLE))
    return;
  if (rv != 0 && c->state != CONN_DEAD) /* TLS fails its handshake on either side's first I/O */
    conn_fail(c, rv == NNG_ECRYPTO || rv == NNG_EPEERAUTH ? WEFT_EAUTH : WEFT_EPEERDIED);
  if (c->state == CONN_DEAD) {
    conn_maybe_free(c);
    return;
  }
  if (c->refusing && c->ctl_len == 0) {
    conn_fail(c, c->refusing); /* the REFUSE is out */
    conn_maybe_free(c);
    return;
  }
  flush_now(c);
}

/* ---- the handshake ------------------------------------------------------------ */

static void mac_of(const weft_node_t *n, const uint8_t *verifier_nonce,
                   const uint8_t *prover_nonce, const char *prover, size_t prover_len,
                   uint8_t out[WEFT__NET_MAC]) {
  uint8_t in[sizeof(AUTH_LABEL) + 2 * WEFT__NET_NONCE + 64];
  size_t k = 0;
  memcpy(in, AUTH_LABEL, sizeof(AUTH_LABEL));
  k += sizeof(AUTH_LABEL);
  memcpy(in + k, verifier_nonce, WEFT__NET_NONCE);
  k += WEFT__NET_NONCE;
  memcpy(in + k, prover_nonce, WEFT__NET_NONCE);
  k += WEFT__NET_NONCE;
  memcpy(in + k, prover, prover_len);
  k += prover_len;
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), n->secret, n->opts.secret_len,
                  in, k, out);
}

static bool mac_equal(const uint8_t *a, const uint8_t *b) {
  uint8_t d = 0;
  for (size_t i = 0; i < WEFT__NET_MAC; i++)
    d |= (uint8_t)(a[i] ^ b[i]);
  return d == 0;
}

/* Refuse the peer: tell it why, and hang up once that is written (what it
 * sends meanwhile is ignored; the handshake deadline bounds the wait). */
static void refuse(node_conn_t *c, int reason) {
  if (c->refusing)
    return;
  uint8_t *p = c->s != NULL || c->loop_io ? weft__node_ctl(c, WEFT__NET_HEAD + 4) : NULL;
  if (p == NULL) {
    conn_fail(c, reason);
    return;
  }
  weft__net_put_reason(p, WEFT__NET_REFUSE, 0, reason);
  c->refusing = reason;
  flush_now(c); /* or once the send in flight is done */
}

static void on_ev_task(weft__task_t *t) {
  weft_node_t *n = (weft_node_t *)(void *)((char *)t - offsetof(weft_node_t, ev_task));
  weft_list_node_t *l;
  n->ev_queued = false;
  n->delivering = true;
  for (;;) {
    if ((l = weft_list_pop_front(&n->events)) != NULL) {
      node_event_t *e = WEFT_LIST_ENTRY(l, node_event_t, link);
      if (e->only == NULL && n->opts.on_monitor)
        n->opts.on_monitor(n, e->peer, e->up, e->reason, n->opts.data);
      for (weft_list_node_t *w = weft_list_first(&n->watches); w; w = weft_list_next(w)) {
        weft_node_watch_t *wa = WEFT_LIST_ENTRY(w, weft_node_watch_t, link);
        if (!wa->gone && (e->only == NULL || e->only == wa))
          wa->cb(n, e->peer, e->up, e->reason, wa->data);
      }
      weft__free(e);
    } else if ((l = weft_list_pop_front(&n->done)) != NULL) {
      node_lookup_t *lk = WEFT_LIST_ENTRY(l, node_lookup_t, link);
      lk->cb(n, lk->status, lk->port, lk->data);
      weft__free(lk);
    } else {
      break;
    }
  }
  n->delivering = false;
  for (weft_list_node_t *w = weft_list_first(&n->watches), *next; w; w = next) {
    next = weft_list_next(w);
    weft_node_watch_t *wa = WEFT_LIST_ENTRY(w, weft_node_watch_t, link);
    if (wa->gone) {
      weft_list_remove(&n->watches, w);
      weft__free(wa);
    }
  }
  node_maybe_done(n);
}

static void ev_schedule(weft_node_t *n) {
  if (n->ev_queued || n->delivering)
    return;
  n->ev_queued = true;
  weft__ctx_post_task(n->ctx, &n->ev_task);
}

static void monitor_to(weft_node_t *n, const char *peer, bool up, int reason,
                       weft_node_watch_t *only) {
  if (n->opts.on_monitor == NULL && weft_list_empty(&n->watches))
    return;
  node_event_t *e = weft__calloc(1, sizeof(*e));
  if (e == NULL)
    return; /* out of memory: the event is lost, weft_node_is_up still tells */
  strcpy(e->peer, peer);
  e->up = up;
  e->reason = reason;
  e->only = only;
  weft_list_push_back(&n->events, &e->link);
  ev_schedule(n);
}

static void monitor(weft_node_t *n, const char *peer, bool up, int reason) {
  monitor_to(n, peer, up, reason, NULL);
}

static void ask(node_lookup_t *lk, node_conn_t *c);

static node_conn_t *find_up(weft_node_t *n, const char *peer, node_conn_t *except) {
  for (weft_list_node_t *l = weft_list_first(&n->conns); l; l = weft_list_next(l)) {
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    if (c != except && c->state == CONN_UP && strcmp(c->peer, peer) == 0)
      return c;
  }
  return NULL;
}

/* Two connections to one peer: a restarted peer's new one wins; else the
 * one dialled by the lower name (both sides agree on it). */
static bool keep_new(const weft_node_t *n, const node_conn_t *old, const node_conn_t *c) {
  if (old->peer_incarnation != c->peer_incarnation)
    return true;
  bool lower_is_me = strcmp(n->name, c->peer) < 0;
  return (c->dialer != NULL) == lower_is_me;
}

static void conn_up(node_conn_t *c) {
  weft_node_t *n = c->node;
  node_conn_t *old = find_up(n, c->peer, c);
  if (old != NULL) {
    if (!keep_new(n, old, c)) {
      if (c->dialer != NULL)
        c->dialer->parked = true;
      conn_fail(c, WEFT_EBUSY);
      return;
    }
    if (old->dialer != NULL && old->peer_incarnation == c->peer_incarnation)
      old->dialer->parked = true;
    conn_fail(old, WEFT_EPEERDIED);
  }
  c->state = CONN_UP;
  c->up_ns = uv_hrtime();
  if (c->s != NULL)
    nng_sleep_aio(c->ping_ms / 2 ? c->ping_ms / 2 : 1, c->ping_timer);
  else if (c->loop_io)
    weft__nio_pinger_add(c);
  n->stats.connects++;
  n->stats.peers_up++;
  if (c->dialer != NULL) {
    c->dialer->backoff_ms = n->opts.redial_min_ms;
    memcpy(c->dialer->peer, c->peer, sizeof(c->peer));
  }
  for (weft_list_node_t *l = weft_list_first(&n->lookups); l; l = weft_list_next(l)) {
    node_lookup_t *lk = WEFT_LIST_ENTRY(l, node_lookup_t, link);
    if (lk->chan == NULL && strcmp(lk->peer, c->peer) == 0)
      ask(lk, c);
  }
  weft__node_kick(c);
  monitor(n, c->peer, true, 0);
}

static int on_hello(node_conn_t *c, const weft__net_frame_t *f) {
  weft_node_t *n = c->node;
  if (c->hello_seen)
    return WEFT_EPROTO;
  c->hello_seen = true;
  if (f->version != WEFT__NET_VERSION)
    return WEFT_EVERSION;
  bool peer_secret = f->flags & 1;
  if (peer_secret != (n->secret != NULL))
    return WEFT_EAUTH;
  if (f->name_len > 64 || memchr(f->name, 0, f->name_len) != NULL ||
      (f->name_len == n->name_len && memcmp(f->name, n->name, f->name_len) == 0) ||
      f->window_msgs == 0 || f->window_bytes == 0)
    return WEFT_EPROTO;
  memcpy(c->peer, f->name, f->name_len);
  c->peer[f->name_len] = '\0';
  memcpy(c->peer_nonce, f->nonce, WEFT__NET_NONCE);
  c->peer_incarnation = f->incarnation;
  c->peer_window_msgs = f->window_msgs;
  c->peer_window_bytes = f->window_bytes < ((uint64_t)1 << 62) ? f->window_bytes
                                                                : (uint64_t)1 << 62;
  c->peer_max_msg = f->max_msg;
  /* Both sides ping at half the shorter heartbeat: each then hears from
   * the other well within its own. */
  uint32_t hb = f->heartbeat_ms && f->heartbeat_ms < n->opts.heartbeat_ms ? f->heartbeat_ms
                                                                         : n->opts.heartbeat_ms;
  c->ping_ms = hb / 2 ? hb / 2 : 1;
  if (n->secret == NULL) {
    conn_up(c);
    return 0;
  }
  uint8_t mac[WEFT__NET_MAC];
  mac_of(n, c->peer_nonce, c->nonce, n->name, n->name_len, mac);
  uint8_t *p = weft__node_ctl(c, WEFT__NET_HEAD + WEFT__NET_MAC);
  if (p == NULL)
    return WEFT_ENOMEM;
  weft__net_put_auth(p, mac);
  weft__node_kick(c);
  return 0;
}

static int on_auth(node_conn_t *c, const weft__net_frame_t *f) {
  if (!c->hello_seen || c->node->secret == NULL || c->auth_ok)
    return WEFT_EPROTO;
  uint8_t want[WEFT__NET_MAC];
  mac_of(c->node, c->nonce, c->peer_nonce, c->peer, strlen(c->peer), want);
  if (!mac_equal(want, f->mac))
    return WEFT_EAUTH;
  c->auth_ok = true;
  conn_up(c);
  return 0;
}

static int on_frame(node_conn_t *c, const weft__net_frame_t *f) {
  if (f->type == WEFT__NET_REFUSE)
    return f->reason < 0 ? f->reason : WEFT_EPROTO;
  if (c->state == CONN_HANDSHAKE) {
    if (f->type == WEFT__NET_HELLO)
      return on_hello(c, f);
    if (f->type == WEFT__NET_AUTH)
      return on_auth(c, f);
    return WEFT_EPROTO; /* nothing is accepted before the handshake */
  }
  if (f->type == WEFT__NET_PING)
    return 0;
  if (f->type == WEFT__NET_HELLO || f->type == WEFT__NET_AUTH)
    return WEFT_EPROTO;
  if (f->type == WEFT__NET_DATA)
    return weft__nchan_data(c, f);
  return weft__nchan_frame(c, f);
}

/* ---- reading ---------------------------------------------------------------- */

/* Read into rbuf; while a DATA body is coming (rbuf is then empty: the
 * parse took all of it), first into the body's message itself, for the
 * bytes it lacks, so they are not copied again. */
unsigned weft__node_rx_iov(node_conn_t *c, nng_iov *iov) {
  unsigned k = 0;
  c->rx_direct = 0;
  if (c->rx_left > 0 && c->rlen == 0) {
    k = weft__nchan_body_iov(c, iov, NODE_SEGS - 1);
    for (unsigned i = 0; i < k; i++)
      c->rx_direct += iov[i].iov_len;
  }
  iov[k].iov_buf = c->rbuf + c->rlen;
  iov[k].iov_len = c->rcap - c->rlen;
  /* After a big body's header (or at the end of one): what comes after the
   * body in the same read is copied, and is most likely the next body's
   * start (a stream of buffers): take only enough for the next headers, so
   * the next read goes in place again. Any other frame ends this. */
  if (c->rx_big && iov[k].iov_len > DIRECT_TAIL)
    iov[k].iov_len = DIRECT_TAIL;
  return k + 1;
}

static void recv_more(node_conn_t *c) {
  nng_aio_wait(c->rx_aio); /* the last completion's callback has returned */
  nng_iov iov[NODE_SEGS];
  unsigned k = weft__node_rx_iov(c, iov);
  c->rx_busy = true;
  nng_aio_set_iov(c->rx_aio, k, iov);
  nng_stream_recv(c->s, c->rx_aio);
}

static void on_rx(void *arg) {
  node_conn_t *c = arg;
  if (nng_aio_result(c->rx_aio) == 0)
    atomic_store_explicit(&c->last_rx_ns, uv_hrtime(), memory_order_relaxed);
  atomic_store_explicit(&c->rx_ready, true, memory_order_relaxed);
  weft__ctx_post_task(c->node->ctx, &c->rx_task);
}

/* Handle the whole frames in rbuf; keep the rest. A broken frame ends the
 * connection (refused, if it came during the handshake). */
static void conn_parse(node_conn_t *c) {
  if (c->refusing) {
    c->rlen = 0; /* hanging up: nothing more is taken from this peer */
    return;
  }
  size_t off = 0;
  int err = 0;
  weft__net_frame_t f;
  f.type = 0;
  while (c->state != CONN_DEAD) {
    if (c->rx_left > 0) { /* a DATA body: what of it is here */
      size_t k = c->rlen - off < c->rx_left ? c->rlen - off : (size_t)c->rx_left;
      if (k == 0)
        break;
      err = weft__nchan_body(c, c->rbuf + off, k);
      off += k;
      if (err)
        break;
      continue;
    }
    int n = weft__net_parse(c->rbuf + off, c->rlen - off, &f, NULL);
    if (n <= 0) {
      err = n;
      break;
    }
    off += (size_t)n;
    c->rx_big = f.type == WEFT__NET_DATA && f.data_len >= DIRECT_BIG;
    err = on_frame(c, &f);
    if (err)
      break;
  }
  if (err && c->state != CONN_DEAD) {
    if (c->state == CONN_HANDSHAKE && err != WEFT_ENOMEM && f.type != WEFT__NET_REFUSE)
      refuse(c, err);
    else
      conn_fail(c, err);
  }
  if (c->state == CONN_DEAD)
    return;
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
}

static void on_rx_task(weft__task_t *t) {
  node_conn_t *c = conn_of(t, offsetof(node_conn_t, rx_task));
  atomic_store_explicit(&c->rx_ready, false, memory_order_relaxed);
  int rv = nng_aio_result(c->rx_aio);
  if (c->state == CONN_DEAD) {
    c->rx_busy = false;
    conn_maybe_free(c);
    return;
  }
  if (rv != 0) {
    c->rx_busy = false;
    conn_fail(c, rv == NNG_ECRYPTO || rv == NNG_EPEERAUTH ? WEFT_EAUTH : WEFT_EPEERDIED);
    conn_maybe_free(c);
    return;
  }
  c->rx_busy = false;
  if (!weft__node_conn_got(c, nng_aio_count(c->rx_aio))) {
    conn_maybe_free(c);
    return;
  }
  recv_more(c);
}

bool weft__node_conn_got(node_conn_t *c, size_t got) {
  size_t direct = got < c->rx_direct ? got : c->rx_direct;
  c->rx_direct = 0;
  c->node->stats.bytes_in += got;
  c->rlen += got - direct;
  int err = direct > 0 ? weft__nchan_body(c, NULL, direct) : 0; /* already in place */
  if (err) {
    conn_fail(c, err);
    return false;
  }
  conn_parse(c);
  return c->state != CONN_DEAD;
}

/* ---- connections -------------------------------------------------------------- */

/* A connection on an nng stream s, on a socket fd (>= 0: the loop
 * transport), or on nothing (detached). Takes s or fd, even on failure. */
static void conn_new(weft_node_t *n, nng_stream *s, int fd, node_dialer_t *d) {
  node_conn_t *c = weft__calloc(1, sizeof(*c));
  bool nng = fd < 0;
  if (c != NULL)
    c->node = n;
  if (c == NULL || (c->rbuf = weft__malloc(RBUF_CAP)) == NULL ||
      (nng && (nng_aio_alloc(&c->rx_aio, on_rx, c) != 0 ||
               nng_aio_alloc(&c->tx_aio, on_tx, c) != 0 ||
               nng_aio_alloc(&c->ping_aio, on_ping_sent, c) != 0 ||
               nng_aio_alloc(&c->ping_timer, on_ping_timer, c) != 0)) ||
      (!nng && weft__nio_conn_start(c, fd) != 0)) {
    if (c != NULL) {
      nng_aio_free(c->rx_aio);
      nng_aio_free(c->tx_aio);
      nng_aio_free(c->ping_aio);
      weft__free(c->rbuf);
      weft__free(c);
    }
    if (s != NULL)
      nng_stream_free(s);
    if (fd >= 0)
      close(fd);
    return;
  }
  c->loop_io = !nng;
  if (nng)
    c->fd = -1;
  c->s = s;
  c->dialer = d;
  c->rcap = RBUF_CAP;
  c->next_id = 1;
  c->rx_task.fn = on_rx_task;
  c->tx_task.fn = on_tx_task;
  c->flush_task.fn = on_flush_task;
  c->started_ns = uv_hrtime();
  atomic_store_explicit(&c->last_tx_ns, c->started_ns, memory_order_relaxed);
  atomic_store_explicit(&c->last_rx_ns, c->started_ns, memory_order_relaxed);
  memset(&c->ready, 0, sizeof(weft_list_t));
  memset(&c->due, 0, sizeof(weft_list_t));
  if (d != NULL)
    d->conn = c;
  weft_list_push_back(&n->conns, &c->link);
  if (getrandom(c->nonce, sizeof(c->nonce), 0) != (ssize_t)sizeof(c->nonce)) {
    conn_fail(c, UV_EIO);
    conn_maybe_free(c);
    return;
  }
  uint8_t *p = weft__node_ctl(c, WEFT__NET_HEAD + 80 + n->name_len);
  if (p == NULL) {
    conn_fail(c, WEFT_ENOMEM);
    conn_maybe_free(c);
    return;
  }
  size_t len = weft__net_put_hello(p, n->secret ? 1 : 0, n->incarnation, c->nonce,
                                   n->opts.window_msgs, n->opts.window_bytes, n->opts.max_msg,
                                   n->opts.heartbeat_ms, n->name, n->name_len);
  c->ctl_len -= WEFT__NET_HEAD + 80 + n->name_len - len;
  if (s != NULL)
    recv_more(c);
  flush_now(c);
  if (c->state == CONN_DEAD) /* the loop transport writes at once */
    conn_maybe_free(c);
}

void weft__node_conn_fd(weft_node_t *n, int fd, node_dialer_t *d) { conn_new(n, NULL, fd, d); }

/* ---- a connection without a stream, fed by hand (the fuzz targets) ---------- */

node_conn_t *weft__node_conn_detached(weft_node_t *n) {
  conn_new(n, NULL, -1, NULL);
  weft_list_node_t *l = weft_list_last(&n->conns);
  return l ? WEFT_LIST_ENTRY(l, node_conn_t, link) : NULL;
}

int weft__node_conn_feed(node_conn_t *c, const uint8_t *p, size_t len) {
  while (len > 0 && c->state != CONN_DEAD) {
    size_t k = c->rcap - c->rlen < len ? c->rcap - c->rlen : len;
    memcpy(c->rbuf + c->rlen, p, k);
    c->rlen += k;
    p += k;
    len -= k;
    conn_parse(c);
    flush_now(c);
  }
  return c->state == CONN_DEAD ? (c->fail_reason ? c->fail_reason : WEFT_ECLOSED) : 0;
}

void weft__node_conn_release(node_conn_t *c) {
  conn_fail(c, WEFT_ECLOSED);
  conn_maybe_free(c);
}

static void conn_fail(node_conn_t *c, int reason) {
  if (c->state == CONN_DEAD)
    return;
  weft_node_t *n = c->node;
  bool was_up = c->state == CONN_UP;
  if (c->refusing && reason != WEFT_ECLOSED)
    reason = c->refusing; /* the peer hung up first: our reason is still ours */
  c->state = CONN_DEAD;
  c->fail_reason = reason;
  atomic_store_explicit(&c->ping_stop, true, memory_order_release);
  if (c->ping_timer != NULL)
    nng_aio_stop(c->ping_timer); /* waits for a tick under way; none after it */
  if (c->s != NULL)
    nng_stream_close(c->s); /* the aios in flight complete with an error */
  if (c->loop_io)
    weft__nio_conn_close(c); /* off the pinger's list; the socket closes */
  if (c->dialer != NULL) {
    c->dialer->conn = NULL;
    c->dialer->next_ns = uv_hrtime() + (uint64_t)c->dialer->backoff_ms * 1000000u;
  }
  weft__nchan_fail_all(c, was_up ? reason : WEFT_EPEERDIED);
  if (!was_up) {
    if (reason != WEFT_EBUSY) {
      n->stats.refused++;
      n->stats.last_refusal = reason;
    }
    return;
  }
  n->stats.peers_up--;
  n->stats.disconnects++;
  if (reason != WEFT_EPEERDIED && reason != WEFT_ECLOSED && reason != WEFT_EBUSY)
    n->stats.protocol_errors++;
  if (find_up(n, c->peer, c) == NULL) {
    for (size_t i = 0; i < n->ndialers; i++)
      if (strcmp(n->dialers[i].peer, c->peer) == 0)
        n->dialers[i].parked = false; /* the one that replaced ours is gone too */
    monitor(n, c->peer, false, reason == WEFT_ECLOSED ? WEFT_ECLOSED : WEFT_EPEERDIED);
  }
}

void weft__node_conn_fail(node_conn_t *c, int reason) { conn_fail(c, reason); }

void weft__node_conn_gone(node_conn_t *c, int reason) {
  conn_fail(c, reason);
  conn_maybe_free(c);
}

void weft__node_conn_maybe_free(node_conn_t *c) { conn_maybe_free(c); }

static void conn_maybe_free(node_conn_t *c) {
  /* a send in flight is asked to bring us back when it ends */
  if (c->state != CONN_DEAD || c->rx_busy || c->flush_queued || c->io_open ||
      (!c->loop_io && !tx_idle_or_want(c)))
    return;
  weft_node_t *n = c->node;
  weft_list_remove(&n->conns, &c->link);
  nng_aio_free(c->rx_aio);
  nng_aio_free(c->tx_aio);
  nng_aio_free(c->ping_aio); /* idle: tx_state is IDLE */
  nng_aio_free(c->ping_timer);
  if (c->s != NULL)
    nng_stream_free(c->s);
  weft__nchan_map_free(&c->chans);
  weft__nchan_held_free(c);
  if (c->rx_own)
    weft_msg_free(c->rx_msg);
  weft__free(c->ctl);
  weft__free(c->wbuf);
  weft__free(c->rbuf);
  weft__free(c);
  node_maybe_done(n);
}

/* ---- listeners and dialers ---------------------------------------------------- */

static void on_accept(void *arg) {
  node_listener_t *l = arg;
  weft__ctx_post_task(l->node->ctx, &l->task);
}

static void on_accept_task(weft__task_t *t) {
  node_listener_t *l = (node_listener_t *)(void *)((char *)t - offsetof(node_listener_t, task));
  weft_node_t *n = l->node;
  int rv = nng_aio_result(l->aio);
  l->busy = false;
  if (rv == 0) {
    nng_stream *s = nng_aio_get_output(l->aio, 0);
    if (n->closing)
      nng_stream_free(s);
    else
      conn_new(n, s, -1, NULL);
  }
  if (n->closing || rv == NNG_ECLOSED) {
    node_maybe_done(n);
    return;
  }
  l->busy = true;
  nng_aio_wait(l->aio); /* its callback has returned */
  nng_stream_listener_accept(l->l, l->aio);
}

static void dial(node_dialer_t *d) {
  d->busy = true;
  if (d->loop_io) {
    weft__nio_dial(d);
    return;
  }
  nng_aio_wait(d->aio); /* the last dial's callback has returned */
  nng_stream_dialer_dial(d->d, d->aio);
}

static void on_dial(void *arg) {
  node_dialer_t *d = arg;
  weft__ctx_post_task(d->node->ctx, &d->task);
}

static void on_dial_task(weft__task_t *t) {
  node_dialer_t *d = (node_dialer_t *)(void *)((char *)t - offsetof(node_dialer_t, task));
  weft_node_t *n = d->node;
  int rv = nng_aio_result(d->aio);
  d->busy = false;
  if (n->closing) {
    if (rv == 0)
      nng_stream_free(nng_aio_get_output(d->aio, 0));
    node_maybe_done(n);
    return;
  }
  if (rv == 0) {
    conn_new(n, nng_aio_get_output(d->aio, 0), -1, d);
    return;
  }
  weft__node_dial_failed(d);
}

void weft__node_dial_failed(node_dialer_t *d) {
  weft_node_t *n = d->node;
  n->stats.dial_failures++;
  d->next_ns = uv_hrtime() + (uint64_t)d->backoff_ms * 1000000u;
  d->backoff_ms = d->backoff_ms * 2 > n->opts.redial_max_ms ? n->opts.redial_max_ms
                                                            : d->backoff_ms * 2;
}

/* ---- lookups ------------------------------------------------------------------- */

static void ask(node_lookup_t *lk, node_conn_t *c) {
  node_chan_t *ch = weft__nchan_new(c, c->next_id++, CH_LOOKUP);
  size_t len = strlen(lk->name);
  uint8_t *p = ch ? weft__node_ctl(c, WEFT__NET_HEAD + 1 + len) : NULL;
  if (p == NULL) {
    if (ch != NULL) {
      ch->kind = CH_ABANDONED;
      weft__node_conn_fail(c, WEFT_ENOMEM);
    }
    return; /* retried when the peer comes up again, or times out */
  }
  ch->lookup = lk;
  lk->chan = ch;
  weft__net_put_lookup(p, ch->key ^ WEFT__NET_OWN_BIT, lk->name, (uint8_t)len);
  weft__node_kick(c);
}

void weft__node_lookup_done(node_lookup_t *lk, int status, weft_port_t *port) {
  weft_list_remove(&lk->node->lookups, &lk->link);
  lk->status = status;
  lk->port = port;
  weft_list_push_back(&lk->node->done, &lk->link);
  ev_schedule(lk->node);
}

/* ---- the tick: heartbeats, handshakes, redials, lookup deadlines ---------------- */

/* A peer is judged by the heartbeat once it has been heard past its own
 * handshake. Until then (its HELLO came, ours may still be on its way or
 * unread on a slow loop) the handshake deadline bounds the wait instead: a
 * peer that goes up a moment later than us is not dropped as silent. */
static bool silent_too_long(const node_conn_t *c, uint64_t now, uint64_t rx, uint64_t hb,
                            uint64_t hs) {
  if (rx <= c->up_ns)
    return now > c->up_ns && now - c->up_ns > (hs > hb ? hs : hb);
  return now > rx && now - rx > hb;
}

static void on_tick(uv_timer_t *t) {
  weft_node_t *n = t->data;
  if (n->closing)
    return;
  uint64_t now = uv_hrtime();
  uint64_t hb = (uint64_t)n->opts.heartbeat_ms * 1000000u;
  uint64_t hs = (uint64_t)n->opts.handshake_ms * 1000000u;
  weft_list_node_t *l, *next;
  for (l = weft_list_first(&n->conns); l; l = next) {
    next = weft_list_next(l);
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    uint64_t rx = atomic_load_explicit(&c->last_rx_ns, memory_order_relaxed);
    if (c->state == CONN_HANDSHAKE && now - c->started_ns > hs) {
      conn_fail(c, c->refusing ? c->refusing : UV_ETIMEDOUT);
      conn_maybe_free(c);
    } else if (c->state == CONN_UP && silent_too_long(c, now, rx, hb, hs) &&
               !atomic_load_explicit(&c->rx_ready, memory_order_relaxed) &&
               !(c->loop_io && weft__nio_has_input(c))) {
      /* (a receive that completed while this loop was busy is not silence,
       * nor are bytes waiting in the socket: more may wait behind them,
       * unread) */
      conn_fail(c, WEFT_EPEERDIED);
      conn_maybe_free(c);
    } else if (c->state == CONN_UP && !weft_list_empty(&c->due)) {
      weft__node_kick(c); /* credit that found no batch to ride on */
    }
  }
  for (size_t i = 0; i < n->ndialers; i++) {
    node_dialer_t *d = &n->dialers[i];
    if (!d->busy && !d->parked && d->conn == NULL && now >= d->next_ns)
      dial(d);
  }
  for (size_t i = 0; i < n->nlisteners; i++)
    if (n->listeners[i].paused)
      weft__nio_listen_resume(&n->listeners[i]);
  for (l = weft_list_first(&n->lookups); l; l = next) {
    next = weft_list_next(l);
    node_lookup_t *lk = WEFT_LIST_ENTRY(l, node_lookup_t, link);
    if (now < lk->deadline_ns)
      continue;
    if (lk->chan != NULL) {
      lk->chan->kind = CH_ABANDONED; /* a late answer is closed at once */
      lk->chan->lookup = NULL;
      lk->chan = NULL;
    }
    weft__node_lookup_done(lk, UV_ETIMEDOUT, NULL);
  }
}

/* ---- published ports ------------------------------------------------------------ */

node_pub_t *weft__node_find_pub(weft_node_t *n, const char *name, size_t len) {
  for (weft_list_node_t *l = weft_list_first(&n->pubs); l; l = weft_list_next(l)) {
    node_pub_t *p = WEFT_LIST_ENTRY(l, node_pub_t, link);
    if (strlen(p->name) == len && memcmp(p->name, name, len) == 0)
      return p;
  }
  return NULL;
}

/* Replies sent the wrong way (on the published port's peer) go nowhere. */
static void on_pub_message(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_ctx_current()->undeliverable++;
  weft_msg_free(msg);
}

static void on_pub_drain(weft_port_t *port) {
  weft__nchan_pub_drained(port->ext->internal_data);
}

static void on_pub_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  node_pub_t *p = port->ext->internal_data;
  weft_node_t *n = p->node;
  weft__nchan_pub_gone(p);
  weft_list_remove(&n->pubs, &p->link);
  weft__free(p->name);
  weft__free(p);
  node_maybe_done(n);
}

/* ---- the public API ----------------------------------------------------------- */

static int check(const weft_node_t *n) {
  if (n == NULL)
    return WEFT_EINVAL;
  if (weft__ctx_tls() != n->ctx)
    return WEFT_EWRONGTHREAD;
  return n->closing ? WEFT_ECLOSED : 0;
}

static bool is_tls(const char *url) { return strncmp(url, "tls+", 4) == 0; }

static int read_file(const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return UV_ENOENT;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? cap * 2 : 8192;
      char *p = weft__realloc(buf, cap);
      if (p == NULL) {
        weft__free(buf);
        fclose(f);
        return WEFT_ENOMEM;
      }
      buf = p;
    }
    size_t k = fread(buf + len, 1, cap - len - 1, f);
    len += k;
    if (k == 0)
      break;
  }
  fclose(f);
  buf[len] = '\0';
  *out = buf;
  return 0;
}

static int tls_config(const weft_node_options_t *o, bool server, nng_tls_config **out) {
  nng_tls_config *cfg;
  char *cert = NULL, *key = NULL;
  int rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
  if (rv != 0)
    return from_nng(rv);
  int err = 0;
  if (o->tls_cert_file != NULL && o->tls_key_file != NULL) {
    err = read_file(o->tls_cert_file, &cert);
    if (!err)
      err = read_file(o->tls_key_file, &key);
    if (!err)
      err = from_nng(nng_tls_config_own_cert(cfg, cert, key, NULL));
  } else if (server) {
    err = UV_EINVAL; /* a TLS listener needs an identity */
  }
  if (!err && o->tls_ca_file != NULL)
    err = from_nng(nng_tls_config_ca_file(cfg, o->tls_ca_file));
  if (!err)
    err = from_nng(nng_tls_config_auth_mode(cfg, o->tls_verify ? NNG_TLS_AUTH_MODE_REQUIRED
                                                               : NNG_TLS_AUTH_MODE_NONE));
  if (!err && !server && o->tls_server_name != NULL)
    err = from_nng(nng_tls_config_server_name(cfg, o->tls_server_name));
  weft__free(cert);
  weft__free(key);
  if (err) {
    nng_tls_config_free(cfg);
    return err;
  }
  *out = cfg;
  return 0;
}

static size_t count_urls(const char *const *urls) {
  size_t k = 0;
  while (urls != NULL && urls[k] != NULL)
    k++;
  return k;
}

/* Phase one of a start: everything that can fail, with no I/O in flight. */
static int make_listener(weft_node_t *n, node_listener_t *l, const char *url) {
  l->node = n;
  l->task.fn = on_accept_task;
  l->fd = -1;
  if (n->opts.transport != WEFT_NODE_TRANSPORT_NNG) {
    int err = weft__nio_listen(l, url);
    if (err <= 0)
      return err;
  }
  int rv = nng_stream_listener_alloc(&l->l, url);
  if (rv == 0) /* see make_dialer */
    (void)nng_stream_listener_set_bool(l->l, NNG_OPT_TCP_NODELAY, true);
  if (rv == 0 && is_tls(url))
    rv = nng_stream_listener_set_ptr(l->l, NNG_OPT_TLS_CONFIG, n->tls_server);
  if (rv == 0)
    rv = nng_stream_listener_listen(l->l);
  if (rv == 0)
    rv = nng_aio_alloc(&l->aio, on_accept, l);
  if (rv != 0)
    return from_nng(rv);
  if (nng_stream_listener_get_int(l->l, NNG_OPT_TCP_BOUND_PORT, &l->port) != 0)
    l->port = 0;
  return 0;
}

static int make_dialer(weft_node_t *n, node_dialer_t *d, const char *url) {
  d->node = n;
  d->task.fn = on_dial_task;
  d->backoff_ms = n->opts.redial_min_ms;
  d->fd = -1;
  d->url = weft__strdup(url);
  if (d->url == NULL)
    return WEFT_ENOMEM;
  if (n->opts.transport != WEFT_NODE_TRANSPORT_NNG) {
    int err = weft__nio_parse(url, &d->addr);
    if (err <= 0) {
      d->loop_io = err == 0;
      return err;
    }
  }
  int rv = nng_stream_dialer_alloc(&d->d, url);
  /* nng's streams start with Nagle on (its SP transports turn it off): a
   * small frame sent while another is unacknowledged would wait for the
   * peer's delayed ACK, up to 40 ms per request/reply. Not a TCP URL (ipc):
   * the option does not apply and the error is ignored. */
  if (rv == 0)
    (void)nng_stream_dialer_set_bool(d->d, NNG_OPT_TCP_NODELAY, true);
  if (rv == 0 && is_tls(url))
    rv = nng_stream_dialer_set_ptr(d->d, NNG_OPT_TLS_CONFIG, n->tls_client);
  if (rv == 0)
    rv = nng_aio_alloc(&d->aio, on_dial, d);
  return from_nng(rv);
}

/* Free the node's parts: nothing of them may be in flight. */
static void node_free(weft_node_t *n) {
  weft_list_node_t *w;
  weft_metrics_source_free(n->metrics);
  while ((w = weft_list_pop_front(&n->watches)) != NULL)
    weft__free(WEFT_LIST_ENTRY(w, weft_node_watch_t, link));
  for (size_t i = 0; i < n->nlisteners; i++) {
    nng_aio_free(n->listeners[i].aio);
    if (n->listeners[i].l)
      nng_stream_listener_free(n->listeners[i].l);
    if (n->listeners[i].fd >= 0) /* bound, never watched (a start that failed) */
      close(n->listeners[i].fd);
    weft__free(n->listeners[i].path);
  }
  for (size_t i = 0; i < n->ndialers; i++) {
    nng_aio_free(n->dialers[i].aio);
    if (n->dialers[i].d)
      nng_stream_dialer_free(n->dialers[i].d);
    weft__free(n->dialers[i].url);
    weft__free(n->dialers[i].addr.name);
  }
  weft__nio_pinger_stop(n);
  if (n->tls_server)
    nng_tls_config_free(n->tls_server);
  if (n->tls_client)
    nng_tls_config_free(n->tls_client);
  weft__free(n->listeners);
  weft__free(n->dialers);
  weft__free(n->secret);
  weft__free((void *)n->opts.name);
  weft__free(n);
}

/* The last step: the tick kept the loop alive while the rest finished. */
static void on_tick_closed(uv_handle_t *h) {
  weft_node_t *n = h->data;
  n->tick_open = false;
  n->ctx->handles_open--;
  weft__ctx_closer_remove(n->ctx, &n->closer);
  if (n->close_cb)
    n->close_cb(n, n->close_data);
  node_free(n);
}

/* Once nothing of the node is in flight, close the tick; its close callback
 * frees the node. Until then the running tick keeps the loop alive, so the
 * completions nng still owes us are taken. */
void weft__node_maybe_done(weft_node_t *n) { node_maybe_done(n); }

static void node_maybe_done(weft_node_t *n) {
  if (!n->closing || n->closed_cb_done || !weft_list_empty(&n->conns) ||
      !weft_list_empty(&n->pubs) || !weft_list_empty(&n->events) ||
      !weft_list_empty(&n->done) || n->ev_queued || n->delivering)
    return;
  for (size_t i = 0; i < n->nlisteners; i++)
    if (n->listeners[i].busy)
      return;
  for (size_t i = 0; i < n->ndialers; i++)
    if (n->dialers[i].busy)
      return;
  n->closed_cb_done = true;
  uv_close((uv_handle_t *)&n->tick, on_tick_closed);
}

static void node_shutdown(weft_node_t *n) {
  n->closing = true;
  for (size_t i = 0; i < n->nlisteners; i++)
    if (n->listeners[i].l)
      nng_stream_listener_close(n->listeners[i].l);
    else if (n->listeners[i].loop_io)
      weft__nio_listen_close(&n->listeners[i]);
  for (size_t i = 0; i < n->ndialers; i++)
    if (n->dialers[i].d)
      nng_stream_dialer_close(n->dialers[i].d);
    else if (n->dialers[i].loop_io)
      weft__nio_dial_close(&n->dialers[i]);
  weft_list_node_t *l, *next;
  for (l = weft_list_first(&n->conns); l; l = next) {
    next = weft_list_next(l);
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    conn_fail(c, WEFT_ECLOSED);
    conn_maybe_free(c);
  }
  while ((l = weft_list_first(&n->lookups)) != NULL)
    weft__node_lookup_done(WEFT_LIST_ENTRY(l, node_lookup_t, link), WEFT_ECLOSED, NULL);
  for (l = weft_list_first(&n->pubs); l; l = weft_list_next(l))
    weft_port_close(WEFT_LIST_ENTRY(l, node_pub_t, link)->port);
  node_maybe_done(n);
}

/* The context, about to sleep, spins a while for work: bytes on one of the
 * loop transport's sockets end the spin too, so an answer that comes within
 * it is read at once rather than after the spin and a kernel wake-up. */
static bool node_input_ready(weft__closer_t *cl) {
  weft_node_t *n = (weft_node_t *)(void *)((char *)cl - offsetof(weft_node_t, closer));
  for (weft_list_node_t *l = weft_list_first(&n->conns); l; l = weft_list_next(l)) {
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    if (c->loop_io && c->state != CONN_DEAD && weft__nio_readable(c))
      return true;
  }
  return false;
}

static void on_ctx_close(weft__closer_t *cl) {
  weft_node_t *n = (weft_node_t *)(void *)((char *)cl - offsetof(weft_node_t, closer));
  if (!n->closing)
    node_shutdown(n);
}

static int copy_options(weft_node_t *n, const weft_node_options_t *o) {
  n->opts = *o;
  n->opts.listen = n->opts.peers = NULL;
  n->opts.secret = NULL;
  n->opts.tls_cert_file = n->opts.tls_key_file = n->opts.tls_ca_file = NULL;
  n->opts.tls_server_name = NULL;
  n->opts.name = NULL;
  if (n->opts.heartbeat_ms == 0)
    n->opts.heartbeat_ms = 1000;
  if (n->opts.handshake_ms == 0)
    n->opts.handshake_ms = 5000;
  if (n->opts.redial_min_ms == 0)
    n->opts.redial_min_ms = 100;
  if (n->opts.redial_max_ms < n->opts.redial_min_ms)
    n->opts.redial_max_ms = n->opts.redial_min_ms > 5000 ? n->opts.redial_min_ms : 5000;
  if (n->opts.window_msgs == 0)
    n->opts.window_msgs = 1024;
  if (n->opts.window_bytes == 0)
    n->opts.window_bytes = 8u * 1024u * 1024u;
  if (n->opts.max_msg == 0)
    n->opts.max_msg = 64u * 1024u * 1024u;
  if (n->opts.max_channels == 0)
    n->opts.max_channels = 65536;
  size_t len = strlen(o->name);
  memcpy(n->name, o->name, len + 1);
  n->name_len = (uint8_t)len;
  n->opts.name = weft__strdup(o->name);
  if (n->opts.name == NULL)
    return WEFT_ENOMEM;
  if (o->secret != NULL) {
    n->secret = weft__malloc(o->secret_len ? o->secret_len : 1);
    if (n->secret == NULL)
      return WEFT_ENOMEM;
    memcpy(n->secret, o->secret, o->secret_len);
  }
  if (getrandom(&n->incarnation, sizeof(n->incarnation), 0) != sizeof(n->incarnation))
    return UV_EIO;
  return 0;
}

int weft_node_start(weft_ctx_t *ctx, const weft_node_options_t *opts, weft_node_t **out) {
  if (ctx == NULL || opts == NULL || out == NULL || opts->name == NULL ||
      opts->name[0] == '\0' || strlen(opts->name) > 64 ||
      (opts->secret != NULL && opts->secret_len == 0))
    return WEFT_EINVAL;
  if (weft__ctx_tls() != ctx)
    return WEFT_EWRONGTHREAD;
  weft_node_t *n = weft__calloc(1, sizeof(*n));
  if (n == NULL)
    return WEFT_ENOMEM;
  n->ctx = ctx;
  n->ev_task.fn = on_ev_task;
  memset(&n->conns, 0, sizeof(weft_list_t));
  memset(&n->pubs, 0, sizeof(weft_list_t));
  memset(&n->lookups, 0, sizeof(weft_list_t));
  int err = copy_options(n, opts);
  size_t nl = count_urls(opts->listen), nd = count_urls(opts->peers);
  bool tls_in = false, tls_out = false;
  for (size_t i = 0; i < nl; i++)
    tls_in |= is_tls(opts->listen[i]);
  for (size_t i = 0; i < nd; i++)
    tls_out |= is_tls(opts->peers[i]);
  if (!err && tls_in)
    err = tls_config(opts, true, &n->tls_server);
  if (!err && tls_out)
    err = tls_config(opts, false, &n->tls_client);
  if (!err && ((nl && !(n->listeners = weft__calloc(nl, sizeof(*n->listeners)))) ||
               (nd && !(n->dialers = weft__calloc(nd, sizeof(*n->dialers))))))
    err = WEFT_ENOMEM;
  if (!err) {
    n->nlisteners = nl;
    n->ndialers = nd;
    for (size_t i = 0; i < nl; i++)
      n->listeners[i].fd = -1;
    for (size_t i = 0; i < nd; i++)
      n->dialers[i].fd = -1;
  }
  for (size_t i = 0; !err && i < nl; i++)
    err = make_listener(n, &n->listeners[i], opts->listen[i]);
  for (size_t i = 0; !err && i < nd; i++)
    err = make_dialer(n, &n->dialers[i], opts->peers[i]);
  bool loop_io = false;
  for (size_t i = 0; i < n->nlisteners; i++)
    loop_io |= n->listeners[i].loop_io;
  for (size_t i = 0; i < n->ndialers; i++)
    loop_io |= n->dialers[i].loop_io;
  if (!err && loop_io)
    err = weft__nio_pinger_start(n);
  if (err) {
    node_free(n);
    return err;
  }
  /* Phase two: nothing fails from here on. */
  uv_timer_init(ctx->loop, &n->tick);
  n->tick.data = n;
  n->tick_open = true;
  ctx->handles_open++;
  uint64_t every = n->opts.heartbeat_ms / 4;
  every = every < 10 ? 10 : every > 250 ? 250 : every;
  uv_timer_start(&n->tick, on_tick, every, every);
  n->closer.close = on_ctx_close;
  n->closer.input_ready = node_input_ready;
  weft__ctx_closer_add(ctx, &n->closer);
  for (size_t i = 0; i < nl; i++) {
    n->listeners[i].busy = true;
    if (n->listeners[i].loop_io)
      weft__nio_listen_start(&n->listeners[i]);
    else
      nng_stream_listener_accept(n->listeners[i].l, n->listeners[i].aio);
  }
  for (size_t i = 0; i < nd; i++)
    dial(&n->dialers[i]);
  weft__node_metrics_start(n);
  *out = n;
  return 0;
}

int weft_node_publish(weft_node_t *node, const char *name, weft_port_t *port) {
  int err = check(node);
  if (err)
    return err;
  size_t len = name ? strlen(name) : 0;
  if (port == NULL || len == 0 || len > WEFT__NET_MAX_NAME)
    return WEFT_EINVAL;
  if (weft_port_ctx(port) != node->ctx)
    return WEFT_EWRONGTHREAD;
  if (weft_port_is_closed(port))
    return WEFT_ECLOSED;
  if (weft__node_find_pub(node, name, len) != NULL)
    return WEFT_EBUSY;
  node_pub_t *p = weft__calloc(1, sizeof(*p));
  weft__port_ext_t *ext = weft__port_ext(port);
  if (p == NULL || ext == NULL || (p->name = weft__strdup(name)) == NULL) {
    weft__free(p);
    return WEFT_ENOMEM;
  }
  p->node = node;
  p->port = port;
  memset(&p->waiting, 0, sizeof(weft_list_t));
  memset(&p->chans, 0, sizeof(weft_list_t));
  ext->on_close_internal = on_pub_closed;
  ext->internal_data = p;
  ext->on_drain = on_pub_drain;
  weft_port_unref(port);
  weft_list_push_back(&node->pubs, &p->link);
  return weft_port_start(port, on_pub_message);
}

int weft_node_unpublish(weft_node_t *node, const char *name) {
  int err = check(node);
  if (err)
    return err;
  if (name == NULL)
    return WEFT_EINVAL;
  node_pub_t *p = weft__node_find_pub(node, name, strlen(name));
  if (p == NULL)
    return WEFT_ENOENTRY;
  return weft_port_close(p->port);
}

int weft_node_lookup(weft_node_t *node, const char *peer, const char *name, uint32_t timeout_ms,
                     weft_node_lookup_cb cb, void *data) {
  int err = check(node);
  if (err)
    return err;
  if (peer == NULL || name == NULL || cb == NULL || strlen(peer) == 0 || strlen(peer) > 64 ||
      strlen(name) == 0 || strlen(name) > WEFT__NET_MAX_NAME)
    return WEFT_EINVAL;
  node_lookup_t *lk = weft__calloc(1, sizeof(*lk));
  if (lk == NULL)
    return WEFT_ENOMEM;
  lk->node = node;
  strcpy(lk->peer, peer);
  strcpy(lk->name, name);
  lk->deadline_ns = uv_hrtime() + (uint64_t)(timeout_ms ? timeout_ms : DEFAULT_LOOKUP_MS) * 1000000u;
  lk->cb = cb;
  lk->data = data;
  weft_list_push_back(&node->lookups, &lk->link);
  node_conn_t *c = find_up(node, peer, NULL);
  if (c != NULL)
    ask(lk, c);
  return 0;
}

int weft_node_close(weft_node_t *node, weft_node_close_cb cb, void *data) {
  int err = check(node);
  if (err)
    return err;
  node->close_cb = cb;
  node->close_data = data;
  node_shutdown(node);
  return 0;
}

int weft_node_watch(weft_node_t *node, weft_node_monitor_cb cb, void *data,
                    weft_node_watch_t **out) {
  int err = check(node);
  if (err)
    return err;
  if (cb == NULL)
    return WEFT_EINVAL;
  weft_node_watch_t *w = weft__calloc(1, sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  w->cb = cb;
  w->data = data;
  weft_list_push_back(&node->watches, &w->link);
  for (weft_list_node_t *l = weft_list_first(&node->conns); l; l = weft_list_next(l)) {
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    if (c->state == CONN_UP)
      monitor_to(node, c->peer, true, 0, w);
  }
  if (out)
    *out = w;
  return 0;
}

int weft_node_unwatch(weft_node_t *node, weft_node_watch_t *watch) {
  if (node == NULL || watch == NULL)
    return WEFT_EINVAL;
  if (weft__ctx_tls() != node->ctx)
    return WEFT_EWRONGTHREAD;
  watch->gone = true;
  ev_schedule(node); /* frees it once no delivery is under way */
  return 0;
}

const char *weft_node_name(const weft_node_t *node) { return node ? node->name : NULL; }

int weft_node_port(const weft_node_t *node, size_t i) {
  return node && i < node->nlisteners ? node->listeners[i].port : 0;
}

bool weft_node_is_up(const weft_node_t *node, const char *peer) {
  return node && peer && find_up((weft_node_t *)node, peer, NULL) != NULL;
}

int weft_node_stats(const weft_node_t *node, weft_node_stats_t *out) {
  if (node == NULL || out == NULL)
    return WEFT_EINVAL;
  *out = node->stats;
  return 0;
}
