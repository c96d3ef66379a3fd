/* port.c: channels and ports, the kernel's mailboxes.
 *
 * A channel is one allocation holding two ports. What is posted on ports[i]
 * goes into ports[1-i].inbox, an MPSC queue, and is delivered on the owner of
 * ports[1-i].
 *
 * Scheduling token. `pending` counts items (messages, raised events) queued at
 * a port. A port with items needs its token: `tok` says where it is (none,
 * queued on the owner's ready queue / being drained, parked), and changes
 * only under `sched_lock`, so there is at most one token and a port is in at
 * most one ready queue, drained by one thread at a time. The push that takes
 * `pending` from 0 to 1 makes the token if there is none. The context that
 * drains the port holds it until `pending` drops to 0 (it then drops the token
 * and looks at `pending` once more, for a push that came meanwhile), or gives
 * it back: re-queued (more to do), forwarded (the port moved to another
 * context), or parked (the port is in transit or stopped; binding or starting
 * it requeues the token). weft_port_receive takes items without the token.
 * `sched_lock` is held only for a few stores.
 *
 * Lifetime. The channel has a reference per end that has not finished closing
 * and per token in a ready queue; the last release frees it, with whatever is
 * still queued (counted as undeliverable).
 *
 * Threads: weft_port_post from any thread; everything else on the owner. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "weft_impl.h"

#define PORT_TURN_MAX 256u

static void begin_close(weft_port_t *p);
static void finish(weft_port_t *p);
static void channel_release(weft__channel_t *ch);

weft__channel_t *weft__port_channel(weft_port_t *p) {
  return (weft__channel_t *)(void *)(p - p->index);
}

weft_port_t *weft__port_peer(weft_port_t *p) {
  return &weft__port_channel(p)->ports[1 - p->index];
}

/* Rounds of pause a waiter spins before it gives its CPU away: the holder
 * keeps the lock for a few stores, so a longer wait means it was preempted,
 * and with as many threads as CPUs (2 vCPUs) the waiter may be in its way. */
#define LOCK_SPIN_ROUNDS 64u

static void lock(weft_port_t *p) {
  /* acquire: what the previous holder stored under the lock is visible. */
  uint32_t rounds = 0;
  while (atomic_exchange_explicit(&p->sched_lock, 1, memory_order_acquire)) {
    while (atomic_load_explicit(&p->sched_lock, memory_order_relaxed)) {
      if (++rounds < LOCK_SPIN_ROUNDS) {
        weft__cpu_pause();
      } else {
        rounds = 0;
        sched_yield();
      }
    }
  }
}

static void unlock(weft_port_t *p) {
  atomic_store_explicit(&p->sched_lock, 0, memory_order_release);
}

static weft_ctx_t *owner_of(const weft_port_t *p) {
  return atomic_load_explicit(&((weft_port_t *)p)->owner, memory_order_acquire);
}

static bool on_owner_thread(const weft_port_t *p) {
  return owner_of(p) == weft__ctx_tls();
}

weft__port_ext_t *weft__port_ext(weft_port_t *p) {
  weft__port_ext_t *e = atomic_load_explicit(&p->ext, memory_order_relaxed);
  if (e == NULL) {
    e = weft__calloc(1, sizeof(*e));
    /* release: a poster that reads the pointer sees the zeroed bounds. */
    atomic_store_explicit(&p->ext, e, memory_order_release);
  }
  return e;
}

static weft__port_ext_t *ext_of(const weft_port_t *p) {
  return atomic_load_explicit(&((weft_port_t *)p)->ext, memory_order_acquire);
}

static uint32_t hwm_msgs(const weft_port_t *p) {
  weft__port_ext_t *e = ext_of(p);
  uint32_t v = e ? atomic_load_explicit(&e->hwm_msgs, memory_order_relaxed) : 0;
  return v ? v : weft__bounds_table[weft__port_channel((weft_port_t *)p)->bounds].msgs;
}

static size_t hwm_bytes(const weft_port_t *p) {
  weft__port_ext_t *e = ext_of(p);
  size_t v = e ? atomic_load_explicit(&e->hwm_bytes, memory_order_relaxed) : 0;
  return v ? v : weft__bounds_table[weft__port_channel((weft_port_t *)p)->bounds].bytes;
}

static uint8_t tok_of(weft_port_t *p) {
  return atomic_load_explicit(&p->tok, memory_order_relaxed);
}

static void set_tok(weft_port_t *p, uint8_t t) {
  atomic_store_explicit(&p->tok, t, memory_order_relaxed);
}

/* Queue p on ctx holding its token. Under sched_lock; returns the context
 * to wake once the lock is released (weft__ctx_wake), or NULL. */
static weft_ctx_t *queue_on(weft_port_t *p, weft_ctx_t *ctx) {
  set_tok(p, WEFT__TOK_QUEUED);
  /* relaxed: the caller's reference (an end, or the token itself) keeps the
   * channel alive here. */
  atomic_fetch_add_explicit(&weft__port_channel(p)->refs, 1, memory_order_relaxed);
  return weft__ctx_push_ready(ctx, &p->sched_node);
}

/* Release p's lock, then wake the context queue_on returned (if any). */
static void unlock_wake(weft_port_t *p, weft_ctx_t *wake) {
  unlock(p);
  if (wake != NULL)
    weft__ctx_wake(wake);
}

/* p has items: make its token unless it has one. Any thread. */
static void take_token(weft_port_t *p) {
  weft_ctx_t *wake = NULL;
  lock(p);
  if (tok_of(p) == WEFT__TOK_NONE) {
    weft_ctx_t *ctx = atomic_load_explicit(&p->owner, memory_order_relaxed);
    if (ctx != NULL)
      wake = queue_on(p, ctx);
    else
      set_tok(p, WEFT__TOK_PARKED);
  }
  unlock_wake(p, wake);
}

/* Give a parked token to p's owner (after start or attach). Any thread. */
static void unpark(weft_port_t *p) {
  weft_ctx_t *wake = NULL;
  lock(p);
  weft_ctx_t *ctx = atomic_load_explicit(&p->owner, memory_order_relaxed);
  if (ctx != NULL && tok_of(p) == WEFT__TOK_PARKED)
    wake = queue_on(p, ctx);
  unlock_wake(p, wake);
}

/* The drainer parks the token it holds, and drops its channel reference.
 * A drain event raised while the token was queued found nothing to unpark:
 * then the token goes round once more instead (the event must be taken even
 * though the port is stopped; see drain_stopped). */
static void park(weft_port_t *p) {
  lock(p);
  weft_ctx_t *ctx = atomic_load_explicit(&p->owner, memory_order_relaxed);
  if (ctx != NULL &&
      (atomic_load_explicit(&p->state, memory_order_acquire) & WEFT__STATE_EV_DRAIN)) {
    /* the token and its ref go on */
    unlock_wake(p, weft__ctx_push_ready(ctx, &p->sched_node));
    return;
  }
  set_tok(p, WEFT__TOK_PARKED);
  unlock(p);
  channel_release(weft__port_channel(p));
}

/* The drainer found nothing left: the token ends. A push that came after the
 * drainer's count found the token still there and left it to us. */
static void drop_token(weft_port_t *p) {
  weft__channel_t *ch = weft__port_channel(p);
  lock(p);
  set_tok(p, WEFT__TOK_NONE);
  unlock(p);
  bool more = atomic_load_explicit(&p->pending, memory_order_acquire) > 0;
  if (more)
    take_token(p); /* before the release: our reference keeps ch alive */
  channel_release(ch);
}

/* The byte bound counts only messages of BYTES_MIN bytes or more: smaller
 * ones are bounded by the message count (65536 x 512 B = 32 MiB at most by
 * default), and skipping them saves a contended atomic on every small post. */
#define BYTES_MIN 512u

static void uncount_bytes(weft_port_t *p, weft_msg_t *m) {
  weft__msg_mark_taken(m); /* every pop comes here: the taker owns m */
  size_t w = weft__msg_weight(m);
  if (w >= BYTES_MIN)
    atomic_fetch_sub_explicit(&p->pending_bytes, (int64_t)w, memory_order_relaxed);
}

/* Count n more items at p; the count that takes it above 0 takes the token.
 * The count may be below 0 here: a drainer can pop what was pushed before it
 * was counted (and then drop its token). So a chain of n counted at -k < n
 * (k of its messages already delivered) leaves n - k waiting and must take
 * the token, though it did not start from 0. */
static void count_n(weft_port_t *p, int64_t n) {
  /* acq_rel: pairs with the consumer's fetch_sub. */
  int64_t old = atomic_fetch_add_explicit(&p->pending, n, memory_order_acq_rel);
  if (old <= 0 && old + n > 0)
    take_token(p);
}

/* Queue a message on p's inbox. */
static void enqueue(weft_port_t *p, weft_msg_t *m, size_t weight) {
  weft__mpsc_push(&p->inbox, &m->node);
  if (weight >= BYTES_MIN)
    atomic_fetch_add_explicit(&p->pending_bytes, (int64_t)weight, memory_order_relaxed);
  count_n(p, 1);
}

/* Raise an event bit at p (counted once while it is raised). Any thread.
 * release: everything the raiser did before (e.g. its last posts) is seen by
 * the consumer that reads the bit with acquire. */
static void raise_event(weft_port_t *p, uint32_t bit) {
  if (atomic_fetch_or_explicit(&p->state, bit, memory_order_acq_rel) & bit)
    return;
  if (atomic_fetch_add_explicit(&p->pending, 1, memory_order_acq_rel) == 0) {
    take_token(p);
    return;
  }
  /* A stopped port parks its token with messages waiting; events must still
   * reach it (see drain_stopped), so wake a parked token. */
  unpark(p);
}

/* Take event bit if raised. Consumer. */
static bool take_event(weft_port_t *p, uint32_t bit) {
  if (!(atomic_load_explicit(&p->state, memory_order_acquire) & bit))
    return false;
  return (atomic_fetch_and_explicit(&p->state, ~bit, memory_order_acq_rel) & bit) != 0;
}

static void port_init(weft_port_t *p, uint8_t index, weft_ctx_t *ctx) {
  weft__mpsc_init(&p->inbox);
  p->index = index;
  atomic_store_explicit(&p->owner, ctx, memory_order_relaxed);
  weft__ctx_port_link(ctx, p);
}

int weft_channel_new(weft_ctx_t *ctx, weft_port_t *ports[2]) {
  if (ctx == NULL || ports == NULL)
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft__channel_t *ch = weft__calloc(1, sizeof(*ch));
  if (ch == NULL)
    return WEFT_ENOMEM;
  ch->bounds = ctx->rt ? ctx->rt->bounds : 0;
  for (int i = 0; i < 2; i++)
    port_init(&ch->ports[i], (uint8_t)i, ctx);
  atomic_store_explicit(&ch->refs, 2, memory_order_release);
  ports[0] = &ch->ports[0];
  ports[1] = &ch->ports[1];
  return 0;
}

/* ---- posting ------------------------------------------------------------ */

/* The bounds limit what waits, not one message: a message heavier than the
 * byte bound passes when no counted bytes wait (so a 64 MiB buffer crosses a
 * default port), and waits for the drain otherwise. */
static int64_t waiting_msgs(weft_port_t *to) {
  int64_t n = atomic_load_explicit(&to->pending, memory_order_seq_cst);
  /* pending also counts raised events (at most two): they are not messages */
  uint32_t st = atomic_load_explicit(&to->state, memory_order_relaxed);
  return n - (!!(st & WEFT__STATE_EV_CLOSE) + !!(st & WEFT__STATE_EV_DRAIN));
}

static bool over_bounds(weft_port_t *to, size_t weight) {
  int64_t n = waiting_msgs(to);
  int64_t b = atomic_load_explicit(&to->pending_bytes, memory_order_relaxed);
  if (n >= (int64_t)hwm_msgs(to))
    return true;
  size_t waiting = (size_t)(b > 0 ? b : 0);
  return waiting > 0 && waiting + weight > hwm_bytes(to);
}

void weft__port_set_carry(weft_port_t *p, uint32_t limits) {
  /* release, like the state's other stores; the post path reads the limits
   * relaxed: they are set before the port's peer reaches any poster, and that
   * hand-over orders them. */
  atomic_fetch_or_explicit(&p->state, limits & WEFT__CARRY_MASK, memory_order_release);
}

/* True if msg's transfer items keep within the carry limits (a mask). */
static bool can_carry(const weft_msg_t *msg, uint32_t limits) {
  if ((limits & WEFT__CARRY_FEW_ITEMS) && msg->nxfer > WEFT__CARRY_MAX_ITEMS)
    return false;
  unsigned sockets = 0;
  for (uint16_t i = 0; i < msg->nxfer; i++) {
    int kind = msg->xfer[i].kind;
    if (kind == WEFT_XFER_PORT && (limits & WEFT__CARRY_NO_PORT))
      return false;
    if (kind == WEFT_XFER_BUF && (limits & WEFT__CARRY_NO_BUF))
      return false;
    if (kind == WEFT_XFER_SOCKET && ((limits & WEFT__CARRY_NO_SOCKET) ||
                                     (++sockets > 1 && (limits & WEFT__CARRY_ONE_SOCKET))))
      return false;
    if (kind == WEFT_XFER_BUF && (limits & WEFT__CARRY_NO_SHARED) &&
        msg->xfer[i].u.buf->kind == WEFT__BUF_SHARED)
      return false;
  }
  return true;
}

enum { BOUND_NONE = 0, BOUND_MSGS = 1, BOUND_ALL = 2 };

/* ---- the producer's batch ------------------------------------------------
 * Each message costs its consumer's core a trip to the producer's cache for
 * the queue's tail and count, and the producer one back for the bound: per
 * message, that traffic is most of a small message's cost. So the posts a
 * context makes inside its delivery turn (from on_message, on_drain, a close
 * callback) to a port of another context wait in the context's batch (ctx->out:
 * one destination, up to BATCH_MAX messages, linked but not published) and are
 * published together: one exchange on the tail, one add to the count.
 *
 * When a batch is published (weft__port_flush): at the end of the delivery
 * turn (ctx.c's run_batch); when it is full; before a post that does not join
 * it (another destination, a message with transfer items or of BYTES_MIN bytes
 * or more, a post outside a turn); before its sending port closes or is
 * detached for a transfer; when the context ends. A thread without a context,
 * a callback of another handle (a timer, a socket) and a post on a port this
 * thread does not own never batch: their post is published before it returns.
 *
 * So FIFO holds per channel (a batch is one destination, published in order,
 * and anything this thread publishes later follows it), the close event still
 * follows the last post, and the message bound counts the batch: a batch
 * starts with the full check and takes at most the room it saw (hwm minus
 * what waited), so WEFT_EAGAIN comes at the same count as without it (or
 * later only if the consumer took some meanwhile). The peer's close is seen
 * when a batch starts; messages of a batch that finds the peer closed when it
 * is published are freed and counted as the peer's discarded, which the
 * sender's close info reports as undelivered. */
#define BATCH_MAX 64u

/* ---- packs ----------------------------------------------------------------
 * A message struct that crosses to another core comes back to be reused:
 * its two lines travel twice per message, whatever the payload. Where the
 * cores sit far apart (the same machine measured a cross-core round trip of
 * 0.13 us and 0.7 us minutes apart), that traffic alone held a stream to
 * 4-8M messages/s; a 24-byte record needs half a line. So the small messages
 * of a batch after its first are packed: their payload bytes are copied into
 * one pack (a queue node like a message), their structs go straight back to
 * the producer's pool, still in its cache, and the consumer makes each
 * message again from its own pool as it delivers it. Only payload bytes
 * cross. A message qualifies when it holds nothing but payload (no transfer
 * items; a cached view is dropped as any post drops it) of at most
 * PACK_MSG_MAX bytes, and checked mode is off (it follows each struct from
 * post to delivery).
 *
 * The consumer takes a pack's entries in place, first to last: the pack
 * stays at the head of the inbox (weft__mpsc_peek) until its last entry is
 * taken, then leaves it; a pack found emptied at the head is one whose
 * removal met a push half done, and goes now. If no struct can be had for
 * an entry (out of memory), the entry stays and delivery is tried again
 * later: nothing is dropped. */
#define PACK_BYTES 2048u
#define PACK_MSG_MAX 240u

typedef struct weft__pack_s {
  weft__qnode_t node;  /* first: a pack is a queue node */
  const void *tag;     /* &pack_tag, where a message has its origin pool */
  uint32_t n;          /* entries not yet taken */
  uint32_t used;       /* producer: bytes written */
  uint32_t at;         /* consumer: where the next entry starts */
  uint32_t pad_;
  weft__msgpool_t *home; /* the pool it goes back to */
  uint8_t data[PACK_BYTES]; /* entries: u32 length, the bytes, 4-byte aligned */
} pack_t;

static const char pack_tag;

_Static_assert(offsetof(pack_t, tag) == offsetof(weft_msg_t, origin),
               "a pack's tag lies where a message's origin does");

static bool is_pack(const weft__qnode_t *node) {
  const void *tag;
  memcpy(&tag, (const char *)node + offsetof(pack_t, tag), sizeof(tag));
  return tag == &pack_tag;
}

static uint32_t entry_size(uint32_t len) { return (4u + len + 3u) & ~3u; }

/* The producer's side: msg (checked by post) joins self's batch packed, and
 * its struct is freed. False if it does not qualify or no pack could be
 * had: it joins as itself. */
static bool pack_add(weft_ctx_t *self, weft_msg_t *msg) {
  if (self->out.n == 0 || msg->nxfer != 0 || msg->len > PACK_MSG_MAX || weft__checked())
    return false;
  uint32_t need = entry_size(msg->len);
  pack_t *k = self->out.pack;
  if (k == NULL || k->used + need > PACK_BYTES) {
    weft__msgpool_t *home;
    k = weft__msgpool_pack_get(&home, sizeof(*k));
    if (k == NULL)
      return false;
    k->home = home;
    /* its lines, likely last read on the consumer's core: asked for all
     * at once, not one store miss after another as the entries fill it */
    for (size_t off = 0; off < sizeof(*k); off += WEFT__CACHELINE)
      weft__prefetch_w((char *)k + off);
    k->tag = &pack_tag;
    k->n = k->used = k->at = 0;
    atomic_store_explicit(&k->node.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&self->out.tail->next, &k->node, memory_order_relaxed);
    self->out.tail = &k->node;
    self->out.pack = k;
  }
  memcpy(k->data + k->used, &msg->len, 4);
  memcpy(k->data + k->used + 4, msg->data, msg->len);
  k->used += need;
  k->n++;
  weft_msg_free(msg);
  return true;
}

/* The consumer's side: the next entry of k (at the head of p's inbox) as a
 * message of this thread's pool, or NULL if none can be made now. */
static weft_msg_t *unpack(weft_port_t *p, pack_t *k) {
  uint32_t len;
  memcpy(&len, k->data + k->at, 4);
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return NULL;
  if (len <= m->cap) {
    memcpy(m->data, k->data + k->at + 4, len);
    m->len = len;
  } else if (weft_msg_set_payload(m, k->data + k->at + 4, len) != 0) {
    weft_msg_free(m);
    return NULL;
  }
  k->at += entry_size(len);
  if (--k->n == 0 && weft__mpsc_pop(&p->inbox) != NULL)
    weft__msgpool_pack_put(k->home, k); /* else taken out at the next look (a push half done) */
  return m;
}

/* The next message of p's inbox, or NULL (none now, or no struct for a
 * packed one: pack_waiting says which). Owner. */
static weft_msg_t *inbox_pop(weft_port_t *p) {
  for (;;) {
    weft__qnode_t *node = weft__mpsc_peek(&p->inbox);
    if (node == NULL)
      return NULL;
    if (!is_pack(node))
      return (weft_msg_t *)weft__mpsc_pop(&p->inbox);
    pack_t *k = (pack_t *)node;
    if (k->n > 0)
      return unpack(p, k);
    if (weft__mpsc_pop(&p->inbox) == NULL)
      return NULL;
    weft__msgpool_pack_put(k->home, k);
  }
}

/* True if a packed message waits that could not be made (out of memory). */
static bool pack_waiting(weft_port_t *p) {
  weft__qnode_t *node = weft__mpsc_peek(&p->inbox);
  return node != NULL && is_pack(node) && ((pack_t *)node)->n > 0;
}

/* Frees a popped node that is not delivered: a message (its ports close
 * with code), or a pack. Returns the messages it held. */
static uint32_t drop_node(weft__qnode_t *node, int code) {
  if (is_pack(node)) {
    pack_t *k = (pack_t *)node;
    uint32_t n = k->n;
    weft__msgpool_pack_put(k->home, k);
    return n;
  }
  weft__msg_free_closing((weft_msg_t *)node, code);
  return 1;
}

/* True if msg, posted on port to its peer `to`, may wait in self's batch. */
static bool batchable(weft_ctx_t *self, weft_port_t *port, weft_port_t *to, const weft_msg_t *msg,
                      size_t weight) {
  if (self == NULL || !self->in_turn || msg->nxfer != 0 || weight >= BYTES_MIN)
    return false;
  if (self->out.to == to)
    return true; /* checked when the batch began */
  weft_ctx_t *dst = owner_of(to);
  /* our own sending port keeps the channel alive until its close flushes;
   * a port of our own context gains nothing from a batch */
  return owner_of(port) == self && dst != NULL && dst != self;
}

static void batch_add(weft_ctx_t *self, weft_msg_t *msg) {
  self->out.pack = NULL; /* the tail is no pack now */
  atomic_store_explicit(&msg->node.next, NULL, memory_order_relaxed);
  if (self->out.tail != NULL)
    atomic_store_explicit(&self->out.tail->next, &msg->node, memory_order_relaxed);
  else
    self->out.head = &msg->node;
  self->out.tail = &msg->node;
  self->out.n++;
}

void weft__port_flush(weft_ctx_t *ctx) {
  uint32_t n = ctx->out.n;
  if (n == 0) {
    ctx->out.to = NULL; /* a batch whose first post failed */
    return;
  }
  weft_port_t *to = ctx->out.to;
  weft__qnode_t *head = ctx->out.head, *tail = ctx->out.tail;
  ctx->out.to = NULL;
  ctx->out.head = ctx->out.tail = NULL;
  ctx->out.n = ctx->out.room = 0;
  ctx->out.pack = NULL;
  if (atomic_load_explicit(&to->state, memory_order_acquire) & WEFT__STATE_CLOSED) {
    /* The peer closed during the batch: these never reach it. Counted as
     * its discarded (the sender's close info: undelivered). */
    for (weft__qnode_t *node = head, *next; node != NULL; node = next) {
      next = atomic_load_explicit(&node->next, memory_order_relaxed);
      if (!is_pack(node))
        weft__msg_mark_taken((weft_msg_t *)node);
      drop_node(node, 0);
    }
    atomic_fetch_add_explicit(&to->discarded, n, memory_order_relaxed);
    return;
  }
  weft__mpsc_push_chain(&to->inbox, head, tail);
  count_n(to, (int64_t)n);
}

/* The bound check that starts a batch for `to`: the room it may take. */
static uint32_t batch_room(weft_port_t *to, int bound) {
  if (bound == BOUND_NONE)
    return BATCH_MAX;
  int64_t room = (int64_t)hwm_msgs(to) - waiting_msgs(to);
  if (room <= 0)
    return 1; /* over_bounds passed a moment ago: the consumer took some */
  return room < (int64_t)BATCH_MAX ? (uint32_t)room : BATCH_MAX;
}

/* msg joins self's open batch (the checks of post are done). */
static int join_batch(weft_ctx_t *self, weft_msg_t *msg) {
  if (weft__checked() && !weft__msg_mark_queued(msg)) {
    if (self->out.n == 0)
      self->out.to = NULL; /* the batch it would have begun is not begun */
    return WEFT_ETAKEN; /* posted twice at once from two threads */
  }
  self->msgs_out++;
  if (pack_add(self, msg)) {
    self->out.n++;
  } else {
    if (msg->view != NULL)
      weft__msg_view_drop(msg); /* what waits is what the bounds count */
    batch_add(self, msg);
  }
  if (self->out.n >= BATCH_MAX)
    weft__port_flush(self);
  return 0;
}

static int post(weft_port_t *port, weft_msg_t *msg, int bound) {
  bool bytes_bound = bound == BOUND_ALL;
  if (port == NULL || msg == NULL)
    return WEFT_EINVAL;
  if (weft__checked()) {
    int rc = weft__msg_check_post(msg); /* before anything of a freed msg is read */
    if (rc)
      return rc;
  }
  if (msg->err)
    return msg->err;
  if (msg->open_map)
    return WEFT_ECOUNT; /* weft_msg_begin_map without its weft_msg_end_map */
  weft_port_t *to = weft__port_peer(port);
  size_t weight = weft__msg_weight(msg);
  weft_ctx_t *self = weft__ctx_tls();
  bool batch = batchable(self, port, to, msg, weight);
  if (batch && self->out.to == to && self->out.n < self->out.room &&
      !(atomic_load_explicit(&port->state, memory_order_acquire) & WEFT__STATE_CLOSED))
    return join_batch(self, msg); /* the batch's start checked to's state and bounds */
  if (self != NULL)
    weft__port_flush(self); /* what this thread posted before goes first */
  if ((atomic_load_explicit(&port->state, memory_order_acquire) |
       atomic_load_explicit(&to->state, memory_order_acquire)) & WEFT__STATE_CLOSED)
    return WEFT_ECLOSED;
  if (msg->nxfer) {
    if (weft__msg_carries_port(msg, port, to))
      return WEFT_ESELF;
    uint32_t limits = atomic_load_explicit(&to->state, memory_order_relaxed) & WEFT__CARRY_MASK;
    if (limits != 0 && !can_carry(msg, limits))
      return WEFT_ETRANSFER;
  }
  if (bound != BOUND_NONE && over_bounds(to, bytes_bound ? weight : 0)) {
    /* seq_cst: pairs with the consumer's fetch_sub then want_drain load; either
     * it sees our flag, or we see its lower count below. */
    atomic_store_explicit(&to->want_drain, 1, memory_order_seq_cst);
    if (over_bounds(to, bytes_bound ? weight : 0))
      return WEFT_EAGAIN;
  }
  if (batch) {
    self->out.to = to;
    self->out.room = batch_room(to, bound);
    return join_batch(self, msg);
  }
  if (weft__checked() && !weft__msg_mark_queued(msg))
    return WEFT_ETAKEN; /* posted twice at once from two threads */
  if (msg->view != NULL)
    weft__msg_view_drop(msg); /* what waits is what the bounds count */
  enqueue(to, msg, weight);
  if (self != NULL)
    self->msgs_out++;
  return 0;
}

int weft_port_post(weft_port_t *port, weft_msg_t *msg) { return post(port, msg, BOUND_ALL); }

/* For transports handing over what another process sent. A weft channel's
 * messages are already bounded by its credit window (the sender never has
 * more in flight than the receiver granted, and credit comes back only as
 * the program consumes): no bound of the receiving port applies. A Node
 * channel has no window: only the byte bound is waived (a big message is not
 * refused outright), the message count makes the transport stop reading. */
int weft__port_post_window(weft_port_t *port, weft_msg_t *msg) { return post(port, msg, BOUND_NONE); }
int weft__port_post_nobytes(weft_port_t *port, weft_msg_t *msg) { return post(port, msg, BOUND_MSGS); }

/* Ask p's consumer to raise a drain event on p's peer at its next delivery
 * turn (a transport waiting to return credit as the program consumes). */
void weft__port_want_drain(weft_port_t *p) {
  atomic_store_explicit(&p->want_drain, 1, memory_order_seq_cst);
}

/* ---- delivering --------------------------------------------------------- */

static void note_discard(weft_port_t *p, uint32_t n) {
  if (n == 0)
    return;
  atomic_fetch_add_explicit(&p->discarded, n, memory_order_relaxed);
  weft_ctx_t *ctx = owner_of(p);
  if (ctx != NULL)
    ctx->undeliverable += n;
}

/* Drop everything queued at p (it is closing) and take its events. Owner, or
 * the sole holder of a port in transit. */
static void discard_inbox(weft_port_t *p) {
  int64_t popped = 0;
  uint32_t msgs = 0;
  weft__qnode_t *node;
  /* Closed for a failure (a process or node lost): the ports in what is
   * dropped close with that reason too. */
  int code = atomic_load_explicit(&p->close_code, memory_order_relaxed);
  while ((node = weft__mpsc_pop(&p->inbox)) != NULL) {
    if (!is_pack(node))
      uncount_bytes(p, (weft_msg_t *)node);
    uint32_t n = drop_node(node, code);
    popped += n;
    msgs += n;
  }
  if (take_event(p, WEFT__STATE_EV_DRAIN))
    popped++;
  if (take_event(p, WEFT__STATE_EV_CLOSE)) {
    atomic_fetch_or_explicit(&p->state, WEFT__STATE_PEER_CLOSED, memory_order_acq_rel);
    popped++;
    /* what the peer posted before its close is visible now (acquire) */
    while ((node = weft__mpsc_pop(&p->inbox)) != NULL) {
      if (!is_pack(node))
        uncount_bytes(p, (weft_msg_t *)node);
      uint32_t n = drop_node(node, 0);
      popped += n;
      msgs += n;
    }
  }
  if (popped)
    atomic_fetch_sub_explicit(&p->pending, popped, memory_order_acq_rel);
  note_discard(p, msgs);
}

/* The consumer lowered p's queue to `remaining`: tell a blocked poster. */
static void check_drain(weft_port_t *p, int64_t remaining) {
  if (!atomic_load_explicit(&p->want_drain, memory_order_seq_cst))
    return;
  int64_t bytes = atomic_load_explicit(&p->pending_bytes, memory_order_relaxed);
  if (remaining >= (int64_t)(hwm_msgs(p) / 2) ||
      (size_t)(bytes > 0 ? bytes : 0) >= hwm_bytes(p) / 2)
    return;
  if (atomic_exchange_explicit(&p->want_drain, 0, memory_order_acq_rel))
    raise_event(weft__port_peer(p), WEFT__STATE_EV_DRAIN);
}

static bool deliverable(const weft_port_t *p) {
  return (p->flags & WEFT__PORT_STARTED) && !(p->flags & WEFT__PORT_CLOSING);
}

static void call_drain(weft_port_t *p) {
  if (p->ext && p->ext->on_drain)
    p->ext->on_drain(p);
}

static void peer_closed(weft_port_t *p) {
  atomic_fetch_or_explicit(&p->state, WEFT__STATE_PEER_CLOSED, memory_order_acq_rel);
  p->close_kind = 1;
}

/* Deliver one item: a message, else (inbox empty) a raised event. The close
 * event is taken only once the inbox is empty: the closer raised it after its
 * last post, so every message it posted has been delivered by then.
 * Returns 1 if an item was handled, 0 if none, -1 if delivery must pause. */
static int deliver_msg(weft_ctx_t *ctx, weft_port_t *p, weft_msg_t *m) {
  uncount_bytes(p, m);
  ctx->msgs_in++;
  p->on_message(p, m);
  if (owner_of(p) != ctx)
    return -1; /* moved away inside the callback */
  return deliverable(p) ? 1 : -1;
}

/* The peer's close is raised after its last post, with release; but a pop
 * that found the inbox empty may have read it before those posts showed.
 * Once the close bit is seen (acquire), look once more. */
static weft_msg_t *pop_before_close(weft_port_t *p) {
  if (!(atomic_load_explicit(&p->state, memory_order_acquire) & WEFT__STATE_EV_CLOSE))
    return NULL;
  return inbox_pop(p);
}

static int deliver_one(weft_ctx_t *ctx, weft_port_t *p) {
  weft_msg_t *m = inbox_pop(p);
  if (m != NULL)
    return deliver_msg(ctx, p, m);
  if (pack_waiting(p))
    return 0; /* no struct for it now: the turn ends, the port stays queued */
  if (take_event(p, WEFT__STATE_EV_DRAIN)) {
    call_drain(p);
    if (owner_of(p) != ctx)
      return -1;
    return deliverable(p) ? 1 : -1;
  }
  if ((m = pop_before_close(p)) != NULL)
    return deliver_msg(ctx, p, m);
  if (take_event(p, WEFT__STATE_EV_CLOSE)) {
    peer_closed(p);
    begin_close(p);
    return -1;
  }
  return 0;
}

/* After a delivery turn: if a callback moved p to another context (or into
 * a message), the token follows it; p's flags now belong to the new owner
 * and must not be read here. Returns true if p is still ctx's. */
static bool still_ours(weft_port_t *p, weft_ctx_t *ctx) {
  /* Without the lock while it is: an owner changes only on the owner's
   * thread (detach, finish) or from NULL (attach), so a port of ctx stays
   * ctx's until this thread moves it, and this thread is not moving it. One
   * locked exchange less per delivery turn (a tenth of an actor hop). */
  if (atomic_load_explicit(&p->owner, memory_order_relaxed) == ctx)
    return true;
  lock(p);
  weft_ctx_t *owner = atomic_load_explicit(&p->owner, memory_order_relaxed);
  if (owner == ctx) {
    unlock(p);
    return true;
  }
  if (owner != NULL) {
    /* the token and its ref move */
    unlock_wake(p, weft__ctx_push_ready(owner, &p->sched_node));
    return false;
  }
  set_tok(p, WEFT__TOK_PARKED);
  unlock(p);
  channel_release(weft__port_channel(p));
  return false;
}

/* The peer's close reaches a port that is not started: such a port must
 * still learn that its channel ended. After an orderly close (the peer's
 * program closed it), a stopped port (started before) keeps the messages
 * that wait before the close: they are delivered, then the close, when it
 * is started again; so it gets the close here once none waits. When the
 * channel failed (the peer died, broke the protocol: a close code) or the
 * port was never started (no reader to wait for), the close comes at once,
 * and what waits is discarded and counted (info->discarded).
 * Only a port with a close callback closes by itself: one without keeps its
 * handle valid (posts fail with WEFT_ECLOSED) until its owner closes it, as
 * before, so that a saved handle never dangles behind the owner's back. */
static bool close_stopped(weft_port_t *p) {
  uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
  weft__port_ext_t *e = ext_of(p);
  if (!(st & WEFT__STATE_EV_CLOSE) || (p->flags & WEFT__PORT_CLOSING) || e == NULL ||
      (e->on_close == NULL && e->on_close_internal == NULL))
    return false;
  /* acquire above: the peer stored its code before raising the event */
  bool failed = atomic_load_explicit(&weft__port_peer(p)->close_code, memory_order_relaxed) != 0;
  if (((p->flags & WEFT__PORT_WAS_STARTED) && !failed && !weft__mpsc_empty(&p->inbox)) ||
      !take_event(p, WEFT__STATE_EV_CLOSE))
    return false;
  atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
  peer_closed(p);
  begin_close(p);
  return true;
}

/* A stopped port still gets its drain events (a transport that stopped its
 * port for want of credit must still learn that its peer has room) and,
 * with nothing queued before it, its close (close_stopped); its messages
 * wait, and the token is parked until weft_port_start. */
static uint32_t drain_stopped(weft_ctx_t *ctx, weft_port_t *p, bool *more) {
  uint32_t n = 0;
  int64_t left = atomic_load_explicit(&p->pending, memory_order_acquire);
  if (take_event(p, WEFT__STATE_EV_DRAIN)) {
    n = 1;
    left = atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) - 1;
    call_drain(p);
    if (!still_ours(p, ctx))
      return n;
  }
  if (!deliverable(p) && close_stopped(p)) {
    n++;
    left = 0;
  }
  if (left <= 0 || (p->flags & WEFT__PORT_CLOSING))
    drop_token(p);
  else if (deliverable(p))
    *more = true; /* the drain callback restarted it */
  else
    park(p);
  return n;
}

/* A poster waits for room (want_drain) while we deliver: the count is
 * settled once per turn, so without this the drain event would be raised
 * only when the turn ends, usually with the queue empty, and the poster's
 * wake-up would then leave both sides idle (a drain per window measured
 * about a wake-up each: half the time of 1 MiB buffers moved back to back).
 * Raised as the queue crosses half, the poster refills while we still have
 * half a window to deliver. Only taken while a poster waits: a relaxed load
 * per message otherwise. Ordering: the loads of want_drain, pending and
 * pending_bytes here are relaxed hints that order nothing; a flag or count
 * seen late only leaves the drain to the end of the turn, as before.
 * check_drain re-reads want_drain seq_cst (pairing with the poster's store
 * and re-check in post) and takes it with an acq_rel exchange, and the
 * fetch_sub below is acq_rel like the one at the end of the turn (pairs with
 * count_n's fetch_add: the token hand-over depends on it). Returns how many
 * of `unsettled` it settled. */
static int64_t settle_mid_turn(weft_ctx_t *ctx, weft_port_t *p, int64_t unsettled) {
  int64_t left = atomic_load_explicit(&p->pending, memory_order_relaxed) - unsettled;
  int64_t bytes = atomic_load_explicit(&p->pending_bytes, memory_order_relaxed);
  if (left >= (int64_t)(hwm_msgs(p) / 2) || (size_t)(bytes > 0 ? bytes : 0) >= hwm_bytes(p) / 2)
    return 0;  /* not below half on both bounds yet (check_drain's test) */
  int64_t old = atomic_fetch_sub_explicit(&p->pending, unsettled, memory_order_acq_rel);
  if ((uint64_t)old > ctx->queue_peak)
    ctx->queue_peak = (uint64_t)old;
  check_drain(p, old - unsettled);
  return unsettled;
}

uint32_t weft__port_drain(weft_port_t *p, uint32_t budget, bool *more) {
  weft_ctx_t *ctx = weft__ctx_tls();
  *more = false;
  if (!still_ours(p, ctx))
    return 0;
  if (p->flags & WEFT__PORT_CLOSING) {
    discard_inbox(p);
    drop_token(p);
    return 0;
  }
  if (!deliverable(p))
    return drain_stopped(ctx, p, more);
  if (budget > PORT_TURN_MAX)
    budget = PORT_TURN_MAX;
  int64_t n = 0, settled = 0;
  while ((uint32_t)n < budget && !atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
    int r = deliver_one(ctx, p);
    if (r == 0)
      break;
    n++;
    if (r < 0)
      break;
    if (atomic_load_explicit(&p->want_drain, memory_order_relaxed))
      settled += settle_mid_turn(ctx, p, n - settled);
  }
  int64_t old = atomic_fetch_sub_explicit(&p->pending, n - settled, memory_order_acq_rel);
  int64_t remaining = old - (n - settled);
  if ((uint64_t)old > ctx->queue_peak)
    ctx->queue_peak = (uint64_t)old;
  if (n)
    check_drain(p, remaining);
  if (!still_ours(p, ctx))
    return (uint32_t)n;
  if (remaining <= 0 || (p->flags & WEFT__PORT_CLOSING))
    drop_token(p);
  else if (deliverable(p) || atomic_load_explicit(&ctx->stop, memory_order_relaxed))
    *more = true; /* keep the token: the context re-queues p */
  else
    park(p);
  return (uint32_t)n;
}

int weft_port_receive(weft_port_t *port, weft_msg_t **out) {
  if (port == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_ctx_t *owner = owner_of(port);
  if (owner != NULL && owner != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  *out = NULL;
  for (;;) {
    if (port->flags & WEFT__PORT_CLOSING)
      return WEFT_ECLOSED;
    weft_msg_t *m = inbox_pop(port);
    if (m == NULL && pack_waiting(port))
      return WEFT_ENOMEM;
    if (m == NULL)
      m = pop_before_close(port);
    if (m != NULL) {
      uncount_bytes(port, m);
      int64_t left = atomic_fetch_sub_explicit(&port->pending, 1, memory_order_acq_rel) - 1;
      if (owner != NULL)
        owner->msgs_in++;
      check_drain(port, left);
      *out = m;
      return 0;
    }
    if (take_event(port, WEFT__STATE_EV_DRAIN)) {
      atomic_fetch_sub_explicit(&port->pending, 1, memory_order_acq_rel);
      call_drain(port);
      continue;
    }
    if (take_event(port, WEFT__STATE_EV_CLOSE)) {
      atomic_fetch_sub_explicit(&port->pending, 1, memory_order_acq_rel);
      peer_closed(port);
      if (owner != NULL)
        begin_close(port);
      return WEFT_ECLOSED;
    }
    if (atomic_load_explicit(&port->state, memory_order_acquire) & WEFT__STATE_PEER_CLOSED)
      return WEFT_ECLOSED;
    return WEFT_ENOENT;
  }
}

/* ---- settings ----------------------------------------------------------- */

int weft_port_start(weft_port_t *port, weft_port_message_cb cb) {
  if (port == NULL || cb == NULL)
    return WEFT_EINVAL;
  if (port->flags & WEFT__PORT_CLOSING)
    return WEFT_ECLOSED;
  if (!on_owner_thread(port))
    return WEFT_EWRONGTHREAD;
  port->on_message = cb;
  port->flags |= WEFT__PORT_STARTED | WEFT__PORT_WAS_STARTED;
  weft__ctx_live_update(owner_of(port), port);
  unpark(port);
  return 0;
}

int weft_port_stop(weft_port_t *port) {
  if (port == NULL)
    return WEFT_EINVAL;
  if (!on_owner_thread(port))
    return WEFT_EWRONGTHREAD;
  port->flags &= (uint8_t)~WEFT__PORT_STARTED;
  weft__ctx_live_update(owner_of(port), port);
  return 0;
}

/* A setter's checks: port given, called on its owner's thread, settings made
 * (on first use). Returns 0 or the setter's error. */
static int can_set(weft_port_t *port) {
  if (port == NULL)
    return WEFT_EINVAL;
  if (!on_owner_thread(port))
    return WEFT_EWRONGTHREAD;
  return weft__port_ext(port) == NULL ? WEFT_ENOMEM : 0;
}

int weft_port_on_close(weft_port_t *port, weft_port_close_cb cb) {
  int err = can_set(port);
  if (err)
    return err;
  port->ext->on_close = cb;
  return 0;
}

int weft_port_on_drain(weft_port_t *port, weft_port_drain_cb cb) {
  int err = can_set(port);
  if (err)
    return err;
  port->ext->on_drain = cb;
  return 0;
}

int weft_port_set_hwm(weft_port_t *port, uint32_t msgs, size_t bytes) {
  int err = can_set(port);
  if (err)
    return err;
  if (msgs)
    atomic_store_explicit(&port->ext->hwm_msgs, msgs, memory_order_relaxed);
  if (bytes)
    atomic_store_explicit(&port->ext->hwm_bytes, bytes, memory_order_relaxed);
  return 0;
}

static void set_unref(weft_port_t *port, bool unref) {
  if (port == NULL)
    return;
  if (unref)
    port->flags |= WEFT__PORT_UNREF;
  else
    port->flags &= (uint8_t)~WEFT__PORT_UNREF;
  weft_ctx_t *ctx = owner_of(port);
  if (ctx != NULL)
    weft__ctx_live_update(ctx, port);
}

void weft_port_ref(weft_port_t *port) { set_unref(port, false); }
void weft_port_unref(weft_port_t *port) { set_unref(port, true); }

void weft_port_set_data(weft_port_t *port, void *data) {
  if (port && on_owner_thread(port)) /* from another thread: ignored */
    port->data = data;
}

void *weft_port_data(const weft_port_t *port) { return port ? port->data : NULL; }
weft_ctx_t *weft_port_ctx(const weft_port_t *port) { return port ? owner_of(port) : NULL; }

bool weft_port_is_closed(const weft_port_t *port) {
  if (port == NULL)
    return true;
  return (port->flags & WEFT__PORT_CLOSING) ||
         (atomic_load_explicit(&((weft_port_t *)port)->state, memory_order_acquire) &
          WEFT__STATE_CLOSED);
}

size_t weft_port_pending(const weft_port_t *port) {
  if (port == NULL)
    return 0;
  weft_port_t *p = (weft_port_t *)port;
  int64_t n = atomic_load_explicit(&p->pending, memory_order_relaxed);
  /* pending also counts raised events (at most two): they are not messages */
  uint32_t st = atomic_load_explicit(&p->state, memory_order_relaxed);
  n -= !!(st & WEFT__STATE_EV_CLOSE) + !!(st & WEFT__STATE_EV_DRAIN);
  return n > 0 ? (size_t)n : 0;
}

/* Dropped incoming messages: the transport reports on the owner thread while
 * it parses; the callback is told later, from a task on the owner's loop, so
 * user code never runs inside the transport. */
int weft_port_on_error(weft_port_t *port, weft_port_error_cb cb) {
  int err = can_set(port);
  if (err)
    return err;
  port->ext->errs.on_error = cb;
  return 0;
}

uint64_t weft_port_dropped(const weft_port_t *port) {
  weft__port_ext_t *x = port ? ext_of(port) : NULL;
  return x ? atomic_load_explicit(&x->errs.dropped, memory_order_relaxed) : 0;
}

static void tell_errors(weft__task_t *t) {
  struct weft__port_errs_s *e =
      (struct weft__port_errs_s *)(void *)((char *)t - offsetof(struct weft__port_errs_s, task));
  weft_port_t *p = e->port;
  e->queued = false;
  while (e->nwait > 0) {
    int err = e->wait[0].err;
    uint32_t n = e->wait[0].n;
    memmove(&e->wait[0], &e->wait[1], (size_t)(e->nwait - 1) * sizeof(e->wait[0]));
    e->nwait--;
    for (uint32_t i = 0; i < n && e->on_error && !(p->flags & WEFT__PORT_CLOSING) &&
                         on_owner_thread(p);
         i++)
      e->on_error(p, err);
  }
  channel_release(weft__port_channel(p)); /* the task's ref: last, it may free e */
}

void weft__port_report_drop(weft_port_t *p, int err) {
  weft__port_ext_t *x = on_owner_thread(p) ? weft__port_ext(p) : ext_of(p);
  if (x == NULL)
    return; /* out of memory, or moved away without settings: nobody to tell */
  struct weft__port_errs_s *e = &x->errs;
  atomic_fetch_add_explicit(&e->dropped, 1, memory_order_relaxed);
  if (!on_owner_thread(p))
    return;
  unsigned i = e->nwait;
  if (i > 0 && e->wait[i - 1].err == err) {
    e->wait[i - 1].n++;
  } else if (i < sizeof(e->wait) / sizeof(e->wait[0])) {
    e->wait[i].err = err;
    e->wait[i].n = 1;
    e->nwait++;
  } else {
    for (i = 0; i < e->nwait && e->wait[i].err != err; i++)
      ;
    if (i == e->nwait)
      i--; /* eight codes in one turn: a run goes with the last one's */
    e->wait[i].n++;
  }
  if (e->queued)
    return;
  e->queued = true;
  e->port = p;
  e->task.fn = tell_errors;
  /* relaxed: the caller holds a ref (the port is not finished) */
  atomic_fetch_add_explicit(&weft__port_channel(p)->refs, 1, memory_order_relaxed);
  weft__ctx_post_task(owner_of(p), &e->task);
}

/* ---- closing ------------------------------------------------------------ */

/* First step of a close: refuse posts, drop what is queued here, tell the
 * peer (unless it closed first), and queue the close callback on the owner. */
static void begin_close(weft_port_t *p) {
  if (p->flags & WEFT__PORT_CLOSING)
    return;
  weft_ctx_t *self = weft__ctx_tls();
  if (self != NULL)
    weft__port_flush(self); /* the peer's close event follows our posts */
  p->flags |= WEFT__PORT_CLOSING;
  /* release: a poster that sees CLOSED stops; acquire: we see PEER_CLOSED. */
  uint32_t st = atomic_fetch_or_explicit(&p->state, WEFT__STATE_CLOSED, memory_order_acq_rel);
  discard_inbox(p);
  weft_port_t *peer = weft__port_peer(p);
  /* A post of the peer's waits for room here: it will never come. Its drain
   * fires now (before the close), so a program waiting for it goes on and
   * meets WEFT_ECLOSED, instead of waiting, stopped, for ever. acq_rel, like
   * check_drain's: a poster that set the flag (seq_cst) either sees CLOSED
   * on its retry or has its flag taken here, once. */
  if (atomic_exchange_explicit(&p->want_drain, 0, memory_order_acq_rel) &&
      !(st & WEFT__STATE_PEER_CLOSED))
    raise_event(peer, WEFT__STATE_EV_DRAIN);
  if (!(st & (WEFT__STATE_PEER_CLOSED | WEFT__STATE_EV_CLOSE)))
    raise_event(peer, WEFT__STATE_EV_CLOSE);
  weft_ctx_t *ctx = owner_of(p);
  if (ctx != NULL) {
    weft__ctx_live_update(ctx, p);
    weft__ctx_close_later(ctx, p);
  }
}

int weft_port_close(weft_port_t *port) {
  if (port == NULL)
    return WEFT_EINVAL;
  if (port->flags & WEFT__PORT_CLOSING)
    return 0;
  if (!on_owner_thread(port))
    return WEFT_EWRONGTHREAD;
  begin_close(port);
  if (owner_of(port) == NULL)
    finish(port); /* unbound (taken on a thread without a context): no loop to do it later */
  return 0;
}

/* Last step of a close: callbacks, unbind, release the end. The context has
 * already moved p from its open list to its closing list. */
static void finish(weft_port_t *p) {
  weft__channel_t *ch = weft__port_channel(p);
  discard_inbox(p);
  int16_t peer_code = atomic_load_explicit(&weft__port_peer(p)->close_code, memory_order_relaxed);
  weft_port_close_info_t info = {
      .reason = p->close_kind ? (peer_code ? peer_code : WEFT_ECLOSED) : 0,
      .undelivered = atomic_load_explicit(&weft__port_peer(p)->discarded, memory_order_relaxed),
      .discarded = atomic_load_explicit(&p->discarded, memory_order_relaxed),
  };
  lock(p);
  atomic_store_explicit(&p->owner, NULL, memory_order_relaxed);
  if (tok_of(p) == WEFT__TOK_PARKED)
    set_tok(p, WEFT__TOK_NONE); /* a queued token comes back to the drain, which parks it */
  unlock(p);
  p->flags |= WEFT__PORT_DONE;
  if (p->ext) {
    if (p->ext->on_close)
      p->ext->on_close(p, &info);
    if (p->ext->on_close_internal)
      p->ext->on_close_internal(p, &info); /* after the user's: it may end the owner (on_exit) */
    p->ext->on_close = NULL;
    p->ext->on_close_internal = NULL;
    p->ext->on_drain = NULL;
  }
  channel_release(ch);
}

/* Called by the owner context for each port in its closing list. */
void weft__port_finish(weft_port_t *p) { finish(p); }

void weft__port_close_with(weft_port_t *p, int code, uint32_t extra_undelivered) {
  if (p->flags & WEFT__PORT_CLOSING)
    return;
  atomic_store_explicit(&p->close_code, (int16_t)code, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->discarded, extra_undelivered, memory_order_relaxed);
  begin_close(p); /* the event's release orders both stores */
}

/* Close a port of a context that is going away. */
void weft__port_close_now(weft_port_t *p) { begin_close(p); }

static void channel_release(weft__channel_t *ch) {
  /* acq_rel: the last releaser sees every write made under earlier refs. */
  if (atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int i = 0; i < 2; i++) {
    weft__qnode_t *node;
    while ((node = weft__mpsc_pop(&ch->ports[i].inbox)) != NULL)
      drop_node(node, 0);
    weft__free(ch->ports[i].ext);
  }
  weft__free(ch);
}

void weft__port_hold(weft_port_t *p) {
  /* relaxed: the caller's own reference keeps the channel alive here. */
  atomic_fetch_add_explicit(&weft__port_channel(p)->refs, 1, memory_order_relaxed);
}

void weft__port_unhold(weft_port_t *p) { channel_release(weft__port_channel(p)); }

/* ---- transfer ----------------------------------------------------------- */

int weft__port_detach(weft_port_t *p) {
  if (p == NULL)
    return WEFT_EINVAL;
  if (p->flags & WEFT__PORT_IN_MSG)
    return WEFT_EINVAL;
  if (weft_port_is_closed(p))
    return WEFT_ECLOSED;
  weft_ctx_t *ctx = owner_of(p);
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft__port_flush(ctx); /* its next owner's posts follow ours */
  p->flags &= (uint8_t)~(WEFT__PORT_STARTED | WEFT__PORT_UNREF);
  weft__ctx_live_update(ctx, p);
  weft__ctx_port_unlink(ctx, p);
  p->on_message = NULL;
  p->data = NULL;
  if (p->ext) {
    p->ext->on_close = NULL;
    p->ext->on_drain = NULL;
  }
  p->flags |= WEFT__PORT_IN_MSG;
  lock(p);
  atomic_store_explicit(&p->owner, NULL, memory_order_relaxed);
  unlock(p);
  return 0;
}

void weft__port_attach(weft_port_t *p, weft_ctx_t *ctx) {
  p->flags &= (uint8_t)~WEFT__PORT_IN_MSG;
  if (ctx == NULL)
    return;
  weft__ctx_port_link(ctx, p);
  lock(p);
  atomic_store_explicit(&p->owner, ctx, memory_order_relaxed);
  unlock(p);
  unpark(p);
}

void weft__port_close_orphan(weft_port_t *p) {
  p->flags &= (uint8_t)~WEFT__PORT_IN_MSG;
  begin_close(p);
  finish(p);
}
