/* node_chan.c: the channels between two nodes (node_int.h): messages cut
 * into chunks and put back together, credits, close, and the round robin
 * that keeps one channel's big buffers from holding back the others.
 *
 * The window is a contract both ways, as on process channels: a message may
 * start while fewer than window_msgs messages and window_bytes bytes of the
 * channel are unacknowledged (one may overshoot the bytes by its own size);
 * a peer past it is dropped with WEFT_EWINDOW, one that credits more than it
 * was sent with WEFT_ECREDIT. Threads: the node's context only. */
#include <string.h>

#include "node_int.h"

#define TURN_BYTES (16u * 1024u) /* one channel's share of a round */
#define WEIGHTS_MIN 8u
#define IN_PLACE_MIN (16u * 1024u) /* smaller DATA bodies are copied into wbuf */
/* A channel alone in the round writes up to this much in one DATA frame:
 * each read and write of the stream is a round through nng's threads, and
 * bigger ones make fewer (a 16 MiB buffer: about 13 reads instead of 21
 * at 1 MiB). A channel that becomes ready meanwhile waits for it. */
#define ALONE_BYTES (4u * 1024u * 1024u)

/* ---- the key -> channel map ---------------------------------------------- */

static uint32_t slot_of(uint64_t key, uint32_t cap) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return (uint32_t)key & (cap - 1);
}

static node_chan_t **map_find(node_map_t *m, uint64_t key) {
  if (m->cap == 0)
    return NULL;
  for (uint32_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i] == NULL)
      return NULL;
    if (m->slots[i]->key == key)
      return &m->slots[i];
  }
}

static int map_put(node_map_t *m, node_chan_t *ch) {
  if ((m->count + 1) * 4 > m->cap * 3) {
    uint32_t cap = m->cap ? m->cap * 2 : 16;
    node_chan_t **slots = weft__calloc(cap, sizeof(*slots));
    if (slots == NULL)
      return WEFT_ENOMEM;
    for (uint32_t i = 0; i < m->cap; i++) {
      if (m->slots[i] == NULL)
        continue;
      uint32_t j = slot_of(m->slots[i]->key, cap);
      while (slots[j] != NULL)
        j = (j + 1) & (cap - 1);
      slots[j] = m->slots[i];
    }
    weft__free(m->slots);
    m->slots = slots;
    m->cap = cap;
  }
  uint32_t j = slot_of(ch->key, m->cap);
  while (m->slots[j] != NULL)
    j = (j + 1) & (m->cap - 1);
  m->slots[j] = ch;
  m->count++;
  return 0;
}

/* Backward-shift deletion: no tombstones, probes stay short. */
static void map_del(node_map_t *m, uint64_t key) {
  node_chan_t **at = map_find(m, key);
  if (at == NULL)
    return;
  uint32_t i = (uint32_t)(at - m->slots), mask = m->cap - 1;
  m->slots[i] = NULL;
  m->count--;
  for (uint32_t j = (i + 1) & mask; m->slots[j] != NULL; j = (j + 1) & mask) {
    uint32_t home = slot_of(m->slots[j]->key, m->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      m->slots[j] = NULL;
      i = j;
    }
  }
}

void weft__nchan_map_free(node_map_t *m) {
  weft__free(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}

node_chan_t *weft__nchan_get(node_conn_t *c, uint64_t key) {
  node_chan_t **at = map_find(&c->chans, key);
  return at ? *at : NULL;
}

static bool peers_key(uint64_t key) { return (key & WEFT__NET_OWN_BIT) != 0; }
static uint64_t wire_id(uint64_t key) { return key ^ WEFT__NET_OWN_BIT; }

node_chan_t *weft__nchan_new(node_conn_t *c, uint64_t key, uint8_t kind) {
  node_chan_t *ch = weft__calloc(1, sizeof(*ch));
  if (ch == NULL)
    return NULL;
  ch->conn = c;
  ch->key = key;
  ch->kind = kind;
  if (map_put(&c->chans, ch) != 0) {
    weft__free(ch);
    return NULL;
  }
  if (peers_key(key))
    c->remote_open++;
  c->node->stats.channels_open++;
  return ch;
}

/* ---- small helpers --------------------------------------------------------- */

static uint64_t net_weight(const weft_msg_t *m) {
  uint64_t w = m->len;
  for (uint16_t i = 0; i < m->nxfer; i++)
    if (m->xfer[i].kind == WEFT_XFER_BUF)
      w += m->xfer[i].u.buf->len;
  return w;
}

/* The message lists link messages through their queue node (free while a
 * message is in no queue), as the process channels' pending list does. */
static void mlist_push(weft_msg_t **head, weft_msg_t **tail, weft_msg_t *m) {
  atomic_store_explicit(&m->node.next, NULL, memory_order_relaxed);
  if (*tail)
    atomic_store_explicit(&(*tail)->node.next, &m->node, memory_order_relaxed);
  else
    *head = m;
  *tail = m;
}

static weft_msg_t *mlist_pop(weft_msg_t **head, weft_msg_t **tail) {
  weft_msg_t *m = *head;
  if (m == NULL)
    return NULL;
  *head = (weft_msg_t *)(void *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
  if (*head == NULL)
    *tail = NULL;
  return m;
}

/* Free a message that will never be sent; the ports it carries close with
 * reason (a request's waiting end then hears why: WEFT_EPEERDIED when the
 * node was lost, not a plain close). */
static void msg_drop(weft_msg_t *m, int reason) { weft__msg_free_closing(m, reason); }

static void mlist_free(weft_ctx_t *ctx, weft_msg_t **head, weft_msg_t **tail, bool count,
                       int reason) {
  weft_msg_t *m;
  while ((m = mlist_pop(head, tail)) != NULL) {
    if (count)
      ctx->undeliverable++;
    msg_drop(m, reason);
  }
}

/* The head message may have bytes in the batch being sent (written in
 * place): if it is to be dropped, the connection holds it until that send
 * is over. */
static void out_keep_head(node_chan_t *ch) {
  node_conn_t *c = ch->conn;
  if (c == NULL || !ch->cur_started || ch->out_head == NULL || ch->ext_batch != c->batch)
    return;
  weft_msg_t *m = mlist_pop(&ch->out_head, &ch->out_tail);
  mlist_push(&c->held_head, &c->held_tail, m);
  ch->cur_started = false;
  weft__node_kick(c); /* the send's end comes back to free it */
}

void weft__nchan_held_free(node_conn_t *c) {
  weft_msg_t *m;
  while ((m = mlist_pop(&c->held_head, &c->held_tail)) != NULL)
    weft_msg_free(m);
}

static void ready_add(node_chan_t *ch) {
  if (ch->in_ready || ch->conn == NULL)
    return;
  ch->in_ready = true;
  weft_list_push_back(&ch->conn->ready, &ch->ready_link);
  weft__node_kick(ch->conn);
}

/* Forget everything the channel holds (not b: its close frees the rest). */
static void chan_release(node_chan_t *ch) {
  weft_ctx_t *ctx = weft_ctx_current();
  node_conn_t *c = ch->conn;
  out_keep_head(ch);
  if (c != NULL && c->rx_chan == ch) {
    /* a DATA body is on its way into in_msg (maybe by a read in flight):
     * the connection keeps the message until the body is over */
    c->rx_chan = NULL;
    if (c->rx_msg == ch->in_msg && ch->in_msg != NULL) {
      c->rx_own = true;
      ch->in_msg = NULL;
    }
  }
  if (c != NULL) {
    map_del(&c->chans, ch->key);
    if (peers_key(ch->key))
      c->remote_open--;
    if (ch->in_ready)
      weft_list_remove(&c->ready, &ch->ready_link);
    if (ch->in_due)
      weft_list_remove(&c->due, &ch->due_link);
    c->node->stats.channels_open--;
    ch->conn = NULL;
  }
  ch->in_ready = ch->in_due = false;
  if (ch->pub != NULL) {
    if (ch->in_pub_wait)
      weft_list_remove(&ch->pub->waiting, &ch->pub_link);
    else
      weft_list_remove(&ch->pub->chans, &ch->pub_link);
    ch->in_pub_wait = false;
    ch->pub = NULL;
  }
  mlist_free(ctx, &ch->out_head, &ch->out_tail, false, ch->fail_reason);
  mlist_free(ctx, &ch->wait_head, &ch->wait_tail, true, 0);
  weft_msg_free(ch->in_msg);
  ch->in_msg = NULL;
  weft__free(ch->in_payload);
  ch->in_payload = NULL;
  weft__free(ch->weights);
  ch->weights = NULL;
}

static void chan_free(node_chan_t *ch) {
  chan_release(ch);
  weft__free(ch);
}

static int queue_reason(node_conn_t *c, uint8_t type, uint64_t key, int32_t reason) {
  uint8_t *p = weft__node_ctl(c, WEFT__NET_HEAD + 4);
  if (p == NULL)
    return WEFT_ENOMEM;
  weft__net_put_reason(p, type, wire_id(key), reason);
  weft__node_kick(c);
  return 0;
}

/* ---- OWNED: the node's port b ---------------------------------------------- */

static void on_b_message(weft_port_t *b, weft_msg_t *msg);

static void hold_b(node_chan_t *ch, bool hold) {
  if (ch->b == NULL || hold == ch->b_stopped)
    return;
  ch->b_stopped = hold;
  if (hold)
    weft_port_stop(ch->b);
  else
    weft_port_start(ch->b, on_b_message);
}

static void on_b_message(weft_port_t *b, weft_msg_t *msg) {
  node_chan_t *ch = b->ext->internal_data;
  if (ch->conn == NULL || ch->closed_in) {
    weft_ctx_current()->undeliverable++;
    weft_msg_free(msg);
    return;
  }
  uint64_t w = net_weight(msg);
  ch->credit_msgs--;
  ch->credit_bytes -= (int64_t)w;
  ch->unacked_bytes += w;
  ch->sent_msgs++;
  if (ch->credit_msgs <= 0 || ch->credit_bytes <= 0) {
    ch->conn->m_stalls += !ch->b_stopped;
    hold_b(ch, true);
  }
  mlist_push(&ch->out_head, &ch->out_tail, msg);
  ready_add(ch);
}

static void give_credit(node_chan_t *ch);

static void on_b_drain(weft_port_t *b) {
  node_chan_t *ch = b->ext->internal_data;
  give_credit(ch);
}

/* b finished closing: its peer closed (send our CLOSE after what is queued),
 * or we closed it (the peer's CLOSE, or the connection went). */
static void on_b_closed(weft_port_t *b, const weft_port_close_info_t *info) {
  (void)info;
  node_chan_t *ch = b->ext->internal_data;
  ch->b = NULL;
  if (ch->closed_in || ch->conn == NULL) {
    chan_free(ch);
    return;
  }
  ch->close_out = true;
  ch->close_reason = 0;
  ready_add(ch);
}

int weft__nchan_bind(node_chan_t *ch, weft_port_t *b) {
  weft__port_ext_t *ext = weft__port_ext(b);
  if (ext == NULL)
    return WEFT_ENOMEM;
  ext->on_close_internal = on_b_closed;
  ext->internal_data = ch;
  ext->on_drain = on_b_drain;
  weft__port_set_carry(b, WEFT__CARRY_NO_SOCKET | WEFT__CARRY_NO_SHARED);
  weft_port_unref(b);
  ch->b = b;
  ch->kind = CH_OWNED;
  ch->credit_msgs = ch->conn->peer_window_msgs;
  ch->credit_bytes = (int64_t)ch->conn->peer_window_bytes;
  return weft_port_start(b, on_b_message);
}

/* A new in-process channel whose end b the node keeps; *user gets the other. */
static int open_owned(node_chan_t *ch, weft_port_t **user) {
  weft_port_t *ports[2];
  int err = weft_channel_new(ch->conn->node->ctx, ports);
  if (err)
    return err;
  err = weft__nchan_bind(ch, ports[1]);
  if (err) {
    weft_port_close(ports[0]);
    weft_port_close(ports[1]);
    return err;
  }
  *user = ports[0];
  return 0;
}

static void due_add(node_chan_t *ch, uint32_t msgs, uint64_t bytes) {
  ch->due_msgs += msgs;
  ch->due_bytes += bytes;
  ch->credited_msgs += msgs;
  ch->credited_bytes += bytes;
  if (!ch->in_due && ch->conn != NULL) {
    ch->in_due = true;
    weft_list_push_back(&ch->conn->due, &ch->due_link);
  }
  if (ch->conn != NULL)
    weft__node_kick_credit(ch->conn, ch->due_msgs, ch->due_bytes);
}

/* Credit what a's program consumed: handed to it less what it still holds
 * (as the process channels do); while some is outstanding, ask a's consumer
 * for a drain event on b, which brings us back. */
static void give_credit(node_chan_t *ch) {
  if (ch->b == NULL || ch->conn == NULL || ch->closed_in)
    return;
  weft_port_t *a = weft__port_peer(ch->b);
  for (int round = 0; round < 2; round++) {
    uint64_t dropped = atomic_load_explicit(&a->discarded, memory_order_relaxed);
    uint64_t outstanding = ch->posted_msgs - ch->credited_msgs;
    uint64_t waiting = weft_port_pending(a) + dropped;
    uint64_t consumed = outstanding > waiting ? outstanding - waiting : 0;
    if (consumed > 0) {
      uint64_t bytes = 0;
      for (uint64_t k = 0; k < consumed; k++) {
        bytes += ch->weights[ch->weights_head];
        ch->weights_head = (ch->weights_head + 1) % ch->weights_cap;
      }
      due_add(ch, (uint32_t)consumed, bytes);
    }
    if (ch->posted_msgs == ch->credited_msgs)
      return;
    weft__port_want_drain(a);
  }
}

/* Remember the weight of a message handed to a (the ring grows to the
 * window). */
static int weights_push(node_chan_t *ch, uint64_t w) {
  uint64_t n = ch->posted_msgs - ch->credited_msgs;
  if (n == ch->weights_cap) {
    uint32_t cap = ch->weights_cap ? ch->weights_cap * 2 : WEIGHTS_MIN;
    uint64_t *nw = weft__malloc(cap * sizeof(*nw));
    if (nw == NULL)
      return WEFT_ENOMEM;
    for (uint64_t k = 0; k < n; k++)
      nw[k] = ch->weights[(ch->weights_head + k) % ch->weights_cap];
    weft__free(ch->weights);
    ch->weights = nw;
    ch->weights_cap = cap;
    ch->weights_head = 0;
  }
  ch->weights[(ch->weights_head + n) % ch->weights_cap] = w;
  return 0;
}

/* ---- SHARED: a lookup's far end, posting to a published port ---------------- */

static void wait_on_pub(node_chan_t *ch) {
  if (ch->in_pub_wait)
    return;
  weft_list_remove(&ch->pub->chans, &ch->pub_link);
  weft_list_push_back(&ch->pub->waiting, &ch->pub_link);
  ch->in_pub_wait = true;
}

static void unwait_on_pub(node_chan_t *ch) {
  if (!ch->in_pub_wait)
    return;
  weft_list_remove(&ch->pub->waiting, &ch->pub_link);
  weft_list_push_back(&ch->pub->chans, &ch->pub_link);
  ch->in_pub_wait = false;
}

/* Post what waits, in order, until the port is full. True if all went. */
static bool post_waiting(node_chan_t *ch) {
  weft_msg_t *m;
  while ((m = ch->wait_head) != NULL) {
    uint64_t w = net_weight(m);
    mlist_pop(&ch->wait_head, &ch->wait_tail);
    int rc = weft_port_post(ch->pub->port, m);
    if (rc == WEFT_EAGAIN) {
      atomic_store_explicit(&m->node.next, ch->wait_head ? &ch->wait_head->node : NULL,
                            memory_order_relaxed);
      if (ch->wait_head == NULL)
        ch->wait_tail = m;
      ch->wait_head = m;
      return false;
    }
    if (rc != 0) {
      weft_ctx_current()->undeliverable++;
      weft_msg_free(m);
    }
    ch->posted_msgs++;
    due_add(ch, 1, w);
  }
  return true;
}

void weft__nchan_pub_drained(node_pub_t *p) {
  weft_list_node_t *n;
  while ((n = weft_list_first(&p->waiting)) != NULL) {
    node_chan_t *ch = WEFT_LIST_ENTRY(n, node_chan_t, pub_link);
    if (!post_waiting(ch))
      return; /* full again: the drain event is armed */
    unwait_on_pub(ch);
    if (ch->closed_in)
      chan_free(ch);
  }
}

void weft__nchan_pub_gone(node_pub_t *p) {
  weft_list_node_t *n;
  for (int pass = 0; pass < 2; pass++) {
    weft_list_t *l = pass ? &p->chans : &p->waiting;
    while ((n = weft_list_first(l)) != NULL) {
      node_chan_t *ch = WEFT_LIST_ENTRY(n, node_chan_t, pub_link);
      if (ch->conn != NULL && !ch->closed_in)
        queue_reason(ch->conn, WEFT__NET_CLOSE, ch->key, 0);
      chan_free(ch);
    }
  }
}

/* ---- frames in -------------------------------------------------------------- */

static int deliver(node_chan_t *ch, weft_msg_t *m) {
  node_conn_t *c = ch->conn;
  uint64_t w = net_weight(m);
  c->node->stats.msgs_in++;
  c->m_msgs_in++;
  c->m_bytes_in += w;
  if (ch->kind == CH_SHARED) {
    mlist_push(&ch->wait_head, &ch->wait_tail, m);
    if (!post_waiting(ch))
      wait_on_pub(ch);
    return 0;
  }
  int err = weights_push(ch, w);
  if (err) {
    weft_msg_free(m);
    return err;
  }
  ch->posted_msgs++;
  if (ch->b == NULL || weft__port_post_window(ch->b, m) != 0) {
    /* a closed while this was on its way: uncredited, the sender counts it */
    c->node->ctx->undeliverable++;
    weft_msg_free(m);
    return 0;
  }
  give_credit(ch);
  return 0;
}

/* Room for len payload bytes, written in place as chunks come. */
static int payload_reserve(weft_msg_t *m, uint32_t len) {
  if (len > m->cap) {
    uint8_t *heap = weft__malloc(len);
    if (heap == NULL)
      return WEFT_ENOMEM;
    if (m->data != m->inline_data)
      weft__free(m->data);
    m->data = heap;
    m->cap = len;
  }
  m->len = len;
  return 0;
}

/* A peer's new id: above every one it introduced before. */
static int introduce(node_conn_t *c, uint64_t key) {
  if (!peers_key(key) || (key & ~WEFT__NET_OWN_BIT) <= c->max_remote_id)
    return WEFT_EPROTO;
  if (c->remote_open >= c->node->opts.max_channels)
    return WEFT_ECOUNT;
  c->max_remote_id = key & ~WEFT__NET_OWN_BIT;
  return 0;
}

static int start_msg(node_chan_t *ch, const weft__net_frame_t *f) {
  node_conn_t *c = ch->conn;
  const weft_node_options_t *o = &c->node->opts;
  if (ch->in_msg != NULL)
    return WEFT_EPROTO; /* the previous one did not end */
  if (ch->rx_msgs - ch->credited_msgs >= o->window_msgs ||
      ch->rx_bytes - ch->credited_bytes >= o->window_bytes)
    return WEFT_EWINDOW; /* checked before anything is built: a flood costs nothing */
  uint64_t total = f->payload_len;
  weft__net_item_t it;
  for (uint16_t i = 0; i < f->nitems; i++) {
    weft__net_item_at(f, i, &it);
    if (it.kind == WEFT__NET_X_BUF) {
      if (it.len > o->max_msg || total + it.len > o->max_msg)
        return WEFT_EMSGSIZE;
      total += it.len;
    }
  }
  if (total > o->max_msg)
    return WEFT_EMSGSIZE;
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (!err)
    err = payload_reserve(m, f->payload_len);
  for (uint16_t i = 0; !err && i < f->nitems; i++) {
    weft__net_item_at(f, i, &it);
    if (it.kind == WEFT__NET_X_BUF) {
      weft_buf_t *b;
      err = weft_buf_new(&b, (size_t)it.len);
      if (!err) {
        err = weft_msg_add_buf(m, b);
        weft_buf_free(b);
      }
      continue;
    }
    err = introduce(c, it.chan);
    node_chan_t *pc = err ? NULL : weft__nchan_new(c, it.chan, CH_OWNED);
    weft_port_t *u = NULL;
    if (!err && pc == NULL)
      err = WEFT_ENOMEM;
    if (!err && (err = open_owned(pc, &u)) != 0)
      chan_free(pc);
    if (!err && (err = weft_msg_add_port(m, u)) != 0)
      weft_port_close(u);
    if (!err)
      m->xfer[m->nxfer - 1].reply = it.reply;
  }
  if (err) {
    weft_msg_free(m);
    return err;
  }
  ch->in_msg = m;
  ch->in_off = 0;
  ch->in_total = total;
  ch->rx_msgs++;
  ch->rx_bytes += total;
  return 0;
}

/* The segment of the data stream (payload, then each buffer) at off: its
 * bytes from there, and how many. False past the end. */
static bool stream_at(weft_msg_t *m, uint64_t off, uint8_t **p, uint64_t *n) {
  uint64_t base = 0;
  for (int i = -1; i < (int)m->nxfer; i++) {
    uint8_t *seg;
    uint64_t len;
    if (i < 0) {
      seg = m->data;
      len = m->len;
    } else if (m->xfer[i].kind == WEFT_XFER_BUF) {
      seg = m->xfer[i].u.buf->data;
      len = m->xfer[i].u.buf->len;
    } else {
      continue;
    }
    if (off < base + len) {
      *p = seg + (off - base);
      *n = base + len - off;
      return true;
    }
    base += len;
  }
  return false;
}

/* Copy n bytes at offset off of the data stream (payload, then each buffer)
 * between the message and p: in (to msg) or out (from msg). */
static void stream_copy(weft_msg_t *m, uint64_t off, uint8_t *p, size_t n, bool in) {
  uint8_t *seg;
  uint64_t len;
  while (n > 0 && stream_at(m, off, &seg, &len)) {
    size_t k = (size_t)(len < n ? len : n);
    if (in)
      memcpy(seg, p, k);
    else
      memcpy(p, seg, k);
    p += k;
    off += k;
    n -= k;
  }
}

static int on_msg(node_chan_t *ch, const weft__net_frame_t *f) {
  if (ch->kind != CH_OWNED && ch->kind != CH_SHARED)
    return WEFT_EPROTO;
  if (f->msg_flags & WEFT__NET_F_FIRST) {
    int err = start_msg(ch, f);
    if (err)
      return err;
  } else if (ch->in_msg == NULL) {
    return WEFT_EPROTO;
  }
  if (f->data_len > ch->in_total - ch->in_off)
    return WEFT_EPROTO;
  stream_copy(ch->in_msg, ch->in_off, (uint8_t *)f->data, f->data_len, true);
  ch->in_off += f->data_len;
  if (!(f->msg_flags & WEFT__NET_F_LAST))
    return 0;
  if (ch->in_off != ch->in_total)
    return WEFT_EPROTO;
  weft_msg_t *m = ch->in_msg;
  ch->in_msg = NULL;
  return deliver(ch, m);
}


int weft__nchan_data(node_conn_t *c, const weft__net_frame_t *f) {
  node_chan_t *ch = weft__nchan_get(c, f->chan);
  if (ch == NULL) {
    /* closed here while the message was on its way (as in
     * weft__nchan_frame): its body is read and dropped */
    uint64_t id = f->chan & ~WEFT__NET_OWN_BIT;
    if (!(peers_key(f->chan) ? id <= c->max_remote_id : id < c->next_id))
      return WEFT_EPROTO;
    c->rx_chan = NULL;
    c->rx_msg = NULL;
    c->rx_left = f->data_len;
    return 0;
  }
  /* a message in progress, and no more than it lacks: checked before a
   * byte of the body is taken */
  if (ch->closed_in || (ch->kind != CH_OWNED && ch->kind != CH_SHARED) || ch->in_msg == NULL ||
      f->data_len > ch->in_total - ch->in_off)
    return WEFT_EPROTO;
  c->rx_chan = ch;
  c->rx_msg = ch->in_msg;
  c->rx_own = false;
  c->rx_off = ch->in_off;
  c->rx_left = f->data_len;
  return 0;
}

int weft__nchan_body(node_conn_t *c, const uint8_t *p, size_t k) {
  if (c->rx_msg != NULL && p != NULL)
    stream_copy(c->rx_msg, c->rx_off, (uint8_t *)p, k, true);
  c->rx_off += k;
  c->rx_left -= k;
  if (c->rx_left > 0)
    return 0;
  node_chan_t *ch = c->rx_chan;
  weft_msg_t *m = c->rx_msg;
  bool own = c->rx_own;
  c->rx_chan = NULL;
  c->rx_msg = NULL;
  c->rx_own = false;
  if (own)
    weft_msg_free(m); /* its channel went meanwhile */
  if (ch == NULL || own)
    return 0;
  ch->in_off = c->rx_off;
  if (ch->in_off != ch->in_total)
    return 0;
  ch->in_msg = NULL;
  return deliver(ch, m);
}

unsigned weft__nchan_body_iov(node_conn_t *c, nng_iov *iov, unsigned max) {
  unsigned k = 0;
  uint64_t off = c->rx_off, left = c->rx_left;
  uint8_t *p;
  uint64_t n;
  while (c->rx_msg != NULL && k < max && left > 0 && stream_at(c->rx_msg, off, &p, &n)) {
    if (n > left)
      n = left;
    iov[k].iov_buf = p;
    iov[k].iov_len = (size_t)n;
    k++;
    off += n;
    left -= n;
  }
  return k;
}

static int on_credit(node_chan_t *ch, uint32_t msgs, uint64_t bytes) {
  if (msgs > ch->sent_msgs - ch->acked_msgs || bytes > ch->unacked_bytes ||
      (msgs == 0 && bytes > 0))
    return WEFT_ECREDIT;
  ch->unacked_bytes -= bytes;
  ch->credit_msgs += msgs;
  ch->credit_bytes += (int64_t)bytes;
  ch->acked_msgs += msgs;
  if (ch->credit_msgs > 0 && ch->credit_bytes > 0)
    hold_b(ch, false);
  return 0;
}

/* The peer closed its end: what we sent and it did not credit was not
 * delivered (it credits all it consumed before its CLOSE). */
static void on_close(node_chan_t *ch, int32_t reason) {
  ch->closed_in = true;
  if (ch->kind == CH_SHARED) {
    if (ch->wait_head == NULL)
      chan_free(ch);
    return; /* what waits still goes to the published port, then it goes */
  }
  if (ch->b == NULL) {
    chan_free(ch); /* both closed at once: ours is out already */
    return;
  }
  out_keep_head(ch);
  mlist_free(weft_ctx_current(), &ch->out_head, &ch->out_tail, false,
             reason ? reason : WEFT_ECLOSED);
  ch->cur_started = false;
  weft__port_close_with(ch->b, reason, (uint32_t)(ch->sent_msgs - ch->acked_msgs));
}

static int on_lookup(node_conn_t *c, const weft__net_frame_t *f) {
  int err = introduce(c, f->chan);
  if (err)
    return err;
  node_pub_t *p = weft__node_find_pub(c->node, f->name, f->name_len);
  if (p == NULL)
    return queue_reason(c, WEFT__NET_NOTFOUND, f->chan, WEFT_ENOENTRY);
  node_chan_t *ch = weft__nchan_new(c, f->chan, CH_SHARED);
  if (ch == NULL)
    return WEFT_ENOMEM;
  ch->pub = p;
  weft_list_push_back(&p->chans, &ch->pub_link);
  uint8_t *q = weft__node_ctl(c, WEFT__NET_HEAD);
  if (q == NULL)
    return WEFT_ENOMEM;
  weft__net_put_simple(q, WEFT__NET_FOUND, wire_id(f->chan));
  weft__node_kick(c);
  return 0;
}

static int on_found(node_chan_t *ch, const weft__net_frame_t *f) {
  node_lookup_t *lk = ch->lookup;
  if (ch->kind == CH_ABANDONED) {
    if (f->type == WEFT__NET_FOUND)
      queue_reason(ch->conn, WEFT__NET_CLOSE, ch->key, 0);
    chan_free(ch);
    return 0;
  }
  if (ch->kind != CH_LOOKUP)
    return WEFT_EPROTO;
  ch->lookup = NULL;
  lk->chan = NULL;
  if (f->type == WEFT__NET_NOTFOUND) {
    chan_free(ch);
    weft__node_lookup_done(lk, f->reason < 0 ? f->reason : WEFT_ENOENTRY, NULL);
    return 0;
  }
  weft_port_t *u;
  int err = open_owned(ch, &u);
  if (err) {
    queue_reason(ch->conn, WEFT__NET_CLOSE, ch->key, 0);
    chan_free(ch);
    weft__node_lookup_done(lk, err, NULL);
    return 0;
  }
  weft__node_lookup_done(lk, 0, u);
  return 0;
}

/* A message for a channel closed here: the ports it carries would never be
 * heard of again, and their far ends (a request's reply end, say) would wait
 * for ever. Close each one back at once. */
static int refuse_ports(node_conn_t *c, const weft__net_frame_t *f) {
  if (!(f->msg_flags & WEFT__NET_F_FIRST))
    return 0;
  weft__net_item_t it;
  for (uint16_t i = 0; i < f->nitems; i++) {
    weft__net_item_at(f, i, &it);
    if (it.kind != WEFT__NET_X_PORT)
      continue;
    if (!peers_key(it.chan) || (it.chan & ~WEFT__NET_OWN_BIT) <= c->max_remote_id)
      return WEFT_EPROTO;
    c->max_remote_id = it.chan & ~WEFT__NET_OWN_BIT;
    int err = queue_reason(c, WEFT__NET_CLOSE, it.chan, 0);
    if (err)
      return err;
  }
  return 0;
}

int weft__nchan_frame(node_conn_t *c, const weft__net_frame_t *f) {
  if (f->type == WEFT__NET_LOOKUP)
    return on_lookup(c, f);
  node_chan_t *ch = weft__nchan_get(c, f->chan);
  if (ch == NULL) {
    /* A channel closed here whose frames were already on their way: drop
     * them (the sender counts what we never credited). An id never
     * introduced is a lie. */
    uint64_t id = f->chan & ~WEFT__NET_OWN_BIT;
    bool known = peers_key(f->chan) ? id <= c->max_remote_id : id < c->next_id;
    if (!known)
      return WEFT_EPROTO;
    return f->type == WEFT__NET_MSG ? refuse_ports(c, f) : 0;
  }
  if (ch->closed_in)
    return WEFT_EPROTO; /* nothing may follow a CLOSE */
  switch (f->type) {
  case WEFT__NET_MSG:
    return on_msg(ch, f);
  case WEFT__NET_CREDIT:
    return ch->kind == CH_OWNED ? on_credit(ch, f->credit_msgs, f->credit_bytes) : WEFT_ECREDIT;
  case WEFT__NET_CLOSE:
    if (ch->kind != CH_OWNED && ch->kind != CH_SHARED)
      return WEFT_EPROTO;
    on_close(ch, f->reason);
    return 0;
  default: /* FOUND, NOTFOUND */
    return on_found(ch, f);
  }
}

/* ---- frames out ------------------------------------------------------------- */

static uint8_t *wroom(node_conn_t *c, size_t n) {
  if (c->wcap - c->wlen < n) {
    size_t cap = c->wcap ? c->wcap : 64u * 1024u;
    while (cap - c->wlen < n)
      cap *= 2;
    uint8_t *p = weft__realloc(c->wbuf, cap);
    if (p == NULL)
      return NULL;
    c->wbuf = p;
    c->wcap = cap;
  }
  return c->wbuf + c->wlen;
}

/* The head message's first frame: its ports become channels of ours now
 * (before any frame on them), bound to the node. */
static int describe(node_chan_t *ch, weft_msg_t *m, weft__net_item_t *items, uint16_t *n) {
  node_conn_t *c = ch->conn;
  *n = 0;
  for (uint16_t i = 0; i < m->nxfer; i++) {
    weft__xfer_t *x = &m->xfer[i];
    weft__net_item_t *it = &items[*n];
    if (x->kind == WEFT_XFER_BUF) {
      it->kind = WEFT__NET_X_BUF;
      it->len = x->u.buf->len;
      (*n)++;
      continue;
    }
    if (x->kind != WEFT_XFER_PORT)
      continue; /* taken, or refused at the post (sockets) */
    bool reply = x->reply;
    weft_port_t *p;
    int err = weft_msg_take_port(m, i, &p);
    if (err)
      return err;
    node_chan_t *pc = weft__nchan_new(c, c->next_id++, CH_OWNED);
    if (pc == NULL) {
      weft_port_close(p);
      return WEFT_ENOMEM;
    }
    err = weft__nchan_bind(pc, p);
    if (err) {
      chan_free(pc);
      weft_port_close(p);
      return err;
    }
    it->kind = WEFT__NET_X_PORT;
    it->reply = reply;
    it->chan = wire_id(pc->key);
    (*n)++;
  }
  return 0;
}

/* One frame of the head message, with at most room bytes of its data: the
 * first as a MSG frame (descriptors and the first chunk, copied), the rest
 * as DATA frames. A DATA frame's body is written from where it lies (one
 * segment of the message: the payload or a buffer) when it is big enough
 * and the batch has an in-place segment left; else its bytes (a chunk at
 * most) are copied into wbuf. Returns bytes added to the batch, or an
 * error. */
static long emit_frame(node_chan_t *ch, size_t room) {
  node_conn_t *c = ch->conn;
  weft_msg_t *m = ch->out_head;
  bool first = !ch->cur_started;
  uint64_t left;
  size_t n, h;
  uint8_t *p;
  if (first) {
    weft__net_item_t items[WEFT__NET_MAX_ITEMS];
    uint16_t nitems = 0;
    if (m->nxfer > WEFT__NET_MAX_ITEMS)
      return WEFT_ETRANSFER;
    int err = describe(ch, m, items, &nitems);
    if (err)
      return err;
    ch->cur_started = true;
    ch->cur_off = 0;
    ch->cur_total = net_weight(m);
    left = ch->cur_total;
    n = (size_t)(left < WEFT__NET_CHUNK ? left : WEFT__NET_CHUNK);
    size_t head = weft__net_msg_head_size(true, nitems);
    if ((p = wroom(c, head + n)) == NULL)
      return WEFT_ENOMEM;
    uint8_t flags = (uint8_t)(WEFT__NET_F_FIRST | (n == left ? WEFT__NET_F_LAST : 0));
    h = weft__net_put_msg_head(p, wire_id(ch->key), flags, m->len, items, nitems, n);
    stream_copy(m, 0, p + h, n, false);
    weft__node_wput(c, h + n);
  } else {
    left = ch->cur_total - ch->cur_off;
    uint64_t max = room < WEFT__NET_CHUNK ? WEFT__NET_CHUNK : room;
    if (max > UINT32_MAX - WEFT__NET_HEAD)
      max = UINT32_MAX - WEFT__NET_HEAD;
    uint8_t *src = NULL;
    uint64_t seg = 0;
    bool in_place = (c->s != NULL || c->loop_io) && c->next_in_place < NODE_IN_PLACE &&
                    stream_at(m, ch->cur_off, &src, &seg) && seg >= IN_PLACE_MIN;
    n = (size_t)(left < max ? left : max);
    if (in_place && n > seg)
      n = (size_t)seg;
    if (!in_place && n > WEFT__NET_CHUNK)
      n = WEFT__NET_CHUNK;
    if ((p = wroom(c, WEFT__NET_HEAD + (in_place ? 0 : n))) == NULL)
      return WEFT_ENOMEM;
    h = weft__net_put_data_head(p, wire_id(ch->key), (uint32_t)n);
    if (in_place) {
      weft__node_wput(c, h);
      weft__node_wext(c, src, n);
      ch->ext_batch = c->batch;
    } else {
      stream_copy(m, ch->cur_off, p + h, n, false);
      weft__node_wput(c, h + n);
    }
  }
  ch->cur_off += n;
  if (n == left) {
    mlist_pop(&ch->out_head, &ch->out_tail);
    if (ch->ext_batch == c->batch) /* the batch writes from it: freed after the send */
      mlist_push(&c->held_head, &c->held_tail, m);
    else
      weft_msg_free(m);
    ch->cur_started = false;
    c->node->stats.msgs_out++;
    c->m_msgs_out++;
    c->m_bytes_out += ch->cur_total;
  }
  return (long)(h + n);
}

/* Up to a turn's bytes of one channel, frames of up to room data bytes.
 * True if it has more to write. */
static bool emit_turn(node_chan_t *ch, size_t room) {
  node_conn_t *c = ch->conn;
  size_t done = 0;
  while (ch->out_head != NULL && done < TURN_BYTES) {
    long n = emit_frame(ch, room);
    if (n < 0) {
      /* a message that cannot go out (no memory): the channel cannot keep
       * its order, so it fails; the connection goes on */
      c->node->ctx->undeliverable++;
      out_keep_head(ch);
      mlist_free(c->node->ctx, &ch->out_head, &ch->out_tail, false, (int)n);
      ch->cur_started = false;
      ch->closed_in = true;
      queue_reason(c, WEFT__NET_CLOSE, ch->key, (int32_t)n);
      if (ch->b != NULL)
        weft__port_close_with(ch->b, (int)n, (uint32_t)(ch->sent_msgs - ch->acked_msgs));
      else
        chan_free(ch);
      return false;
    }
    done += (size_t)n;
  }
  if (ch->out_head != NULL)
    return true;
  if (ch->close_out && ch->b == NULL) {
    queue_reason(c, WEFT__NET_CLOSE, ch->key, ch->close_reason);
    ch->close_out = false;
    chan_free(ch);
  }
  return false;
}

/* Credits first, then the ready channels round robin, a turn each (a
 * chunk of data). A channel alone in the round may write up to
 * ALONE_BYTES in one DATA frame: no other channel waits for it then (one
 * that becomes ready meanwhile waits for the batch in flight). */
void weft__nchan_fill(node_conn_t *c, size_t budget) {
  weft_list_node_t *n;
  while ((n = weft_list_pop_front(&c->due)) != NULL) {
    node_chan_t *ch = WEFT_LIST_ENTRY(n, node_chan_t, due_link);
    ch->in_due = false;
    uint8_t *p = wroom(c, WEFT__NET_HEAD + 12);
    if (p == NULL)
      return;
    weft__node_wput(c, weft__net_put_credit(p, wire_id(ch->key), ch->due_msgs, ch->due_bytes));
    ch->due_msgs = 0;
    ch->due_bytes = 0;
  }
  while (c->wtotal < budget && (n = weft_list_pop_front(&c->ready)) != NULL) {
    node_chan_t *ch = WEFT_LIST_ENTRY(n, node_chan_t, ready_link);
    ch->in_ready = false;
    size_t room = weft_list_empty(&c->ready) && c->wtotal < ALONE_BYTES ? ALONE_BYTES - c->wtotal
                                                                        : WEFT__NET_CHUNK;
    if (emit_turn(ch, room) && ch->conn == c) {
      ch->in_ready = true;
      weft_list_push_back(&c->ready, &ch->ready_link);
    }
  }
}

/* ---- the connection goes ------------------------------------------------------ */

void weft__nchan_fail_all(node_conn_t *c, int reason) {
  node_map_t *m = &c->chans;
  for (uint32_t i = 0; i < m->cap; i++) {
    node_chan_t *ch;
    while ((ch = m->slots[i]) != NULL) {
      node_lookup_t *lk = ch->lookup;
      weft_port_t *b = ch->b;
      uint32_t unacked = (uint32_t)(ch->sent_msgs - ch->acked_msgs);
      ch->closed_in = true;
      ch->fail_reason = reason;
      ch->lookup = NULL;
      chan_release(ch); /* out of the map: slot i now holds another or none */
      if (lk != NULL) {
        lk->chan = NULL;
        weft__node_lookup_done(lk, reason, NULL);
      }
      if (b != NULL)
        weft__port_close_with(b, reason, unacked); /* its close frees ch */
      else
        weft__free(ch);
    }
  }
  weft__nchan_map_free(m);
}
