/* msgpool.c: recycling of message structs between threads.
 *
 * Messages usually die on another thread than the one that made them. Freeing
 * them there sends every chunk back across glibc arenas under a lock, which
 * cost more than the rest of a post. So each context owns a pool: weft_msg_new
 * on a context's thread takes a struct from its pool's local list; a message
 * freed on the thread that made it goes back on that list; a message freed on
 * another context is batched per origin and handed back in one atomic push
 * (at 64, and at the end of every delivery batch); a message freed on a thread
 * without a context is pushed back alone. The owner takes everything handed
 * back with one exchange when its local list runs dry.
 *
 * Pools also recycle packs (port.c), see below.
 *
 * Pools live in a static table and are never freed: a context adopts a free
 * pool at start and gives it back at its end, so a straggler handing a message
 * back to a pool whose context is gone is always safe. weft_runtime_free trims
 * (frees the cached structs of) every pool no context owns.
 *
 * Threads: `returned`, `packs_back` and `state` are shared (pushed by any
 * thread with a release CAS, taken whole by the owner with an acquire
 * exchange); the rest belongs to the owner. */
#include "weft_impl.h"

#define POOL_MAX 512
#define LOCAL_MAX 8192
#define BATCH 64
#define SLOTS 4

enum { POOL_FREE = 0, POOL_OWNED = 1 };

struct weft__msgpool_s {
  _Atomic(weft__qnode_t *) returned; /* Treiber stack of chains (release/acquire) */
  _Atomic(weft__qnode_t *) packs_back; /* our packs, emptied, back home (the same) */
  _Atomic int state;                 /* POOL_FREE / POOL_OWNED (acq_rel CAS) */
  char pad_[WEFT__CACHELINE];
  weft__qnode_t *local;              /* owner only */
  uint32_t nlocal;
  weft__qnode_t *packs;              /* owner only: packs to fill */
  struct {
    weft__msgpool_t *pool;
    weft__qnode_t *head, *tail;
    uint32_t n;
  } slot[SLOTS];                     /* owner only: messages of other pools */
};

static weft__msgpool_t pools[POOL_MAX];

static weft__qnode_t *next_of(weft__qnode_t *n) {
  return atomic_load_explicit(&n->next, memory_order_relaxed);
}

static void set_next(weft__qnode_t *n, weft__qnode_t *next) {
  atomic_store_explicit(&n->next, next, memory_order_relaxed);
}

weft__msgpool_t *weft__msgpool_adopt(void) {
  for (int i = 0; i < POOL_MAX; i++) {
    int expect = POOL_FREE;
    if (atomic_compare_exchange_strong_explicit(&pools[i].state, &expect, POOL_OWNED,
                                                memory_order_acq_rel, memory_order_relaxed))
      return &pools[i];
  }
  return NULL; /* more contexts than pools: those allocate plainly */
}

/* Hand a chain back to its pool. Any thread. */
static void give_back(weft__msgpool_t *pool, weft__qnode_t *head, weft__qnode_t *tail) {
  weft__qnode_t *old = atomic_load_explicit(&pool->returned, memory_order_relaxed);
  do {
    set_next(tail, old);
    /* release: the owner's acquire exchange sees the chain's links. */
  } while (!atomic_compare_exchange_weak_explicit(&pool->returned, &old, head,
                                                  memory_order_release, memory_order_relaxed));
}

static void free_chain(weft__qnode_t *n) {
  while (n != NULL) {
    weft__qnode_t *next = next_of(n);
    weft__free(n);
    n = next;
  }
}

static void flush_slot(weft__msgpool_t *self, int i) {
  if (self->slot[i].n == 0)
    return;
  give_back(self->slot[i].pool, self->slot[i].head, self->slot[i].tail);
  self->slot[i].pool = NULL;
  self->slot[i].head = self->slot[i].tail = NULL;
  self->slot[i].n = 0;
}

void weft__msgpool_flush(weft__msgpool_t *self) {
  if (self == NULL)
    return;
  for (int i = 0; i < SLOTS; i++)
    flush_slot(self, i);
}

static void free_packs(weft__qnode_t *n) {
  while (n != NULL) {
    weft__qnode_t *next = next_of(n);
    weft__free(n);
    n = next;
  }
}

void weft__msgpool_release(weft__msgpool_t *self) {
  if (self == NULL)
    return;
  weft__msgpool_flush(self);
  free_chain(self->local);
  self->local = NULL;
  self->nlocal = 0;
  free_packs(self->packs);
  self->packs = NULL;
  free_chain(atomic_exchange_explicit(&self->returned, NULL, memory_order_acquire));
  free_packs(atomic_exchange_explicit(&self->packs_back, NULL, memory_order_acquire));
  atomic_store_explicit(&self->state, POOL_FREE, memory_order_release);
}

void weft__msgpool_trim(void) {
  for (int i = 0; i < POOL_MAX; i++)
    if (atomic_load_explicit(&pools[i].state, memory_order_acquire) == POOL_FREE) {
      free_chain(atomic_exchange_explicit(&pools[i].returned, NULL, memory_order_acquire));
      free_packs(atomic_exchange_explicit(&pools[i].packs_back, NULL, memory_order_acquire));
    }
}

static weft__msgpool_t *my_pool(void) {
  weft_ctx_t *ctx = weft__ctx_tls();
  return ctx ? ctx->pool : NULL;
}

weft_msg_t *weft__msgpool_get(void) {
  weft__msgpool_t *self = my_pool();
  weft_msg_t *m;
  if (self == NULL) {
    m = weft__malloc(sizeof(*m));
    if (m)
      m->origin = NULL;
    return m;
  }
  if (self->local == NULL) {
    self->local = atomic_exchange_explicit(&self->returned, NULL, memory_order_acquire);
    self->nlocal = 0; /* unknown length: counted again as it refills */
  }
  if (self->local != NULL) {
    m = (weft_msg_t *)self->local;
    self->local = next_of(self->local);
    if (self->nlocal)
      self->nlocal--;
  } else {
    m = weft__malloc(sizeof(*m));
    if (m == NULL)
      return NULL;
  }
  m->origin = self;
  return m;
}

void weft__msgpool_put(weft_msg_t *m) {
  weft__msgpool_t *origin = m->origin;
  weft__qnode_t *n = &m->node;
  if (origin == NULL) {
    weft__free(m);
    return;
  }
  weft__msgpool_t *self = my_pool();
  if (self == origin) {
    if (self->nlocal >= LOCAL_MAX) {
      weft__free(m);
      return;
    }
    set_next(n, self->local);
    self->local = n;
    self->nlocal++;
    return;
  }
  if (self == NULL) {
    give_back(origin, n, n);
    return;
  }
  int i, empty = -1;
  for (i = 0; i < SLOTS; i++) {
    if (self->slot[i].pool == origin)
      break;
    if (empty < 0 && self->slot[i].n == 0)
      empty = i;
  }
  if (i == SLOTS) {
    if (empty < 0) {
      empty = (int)(((uintptr_t)origin >> 6) % SLOTS);
      flush_slot(self, empty);
    }
    i = empty;
    self->slot[i].pool = origin;
    self->slot[i].tail = n;
    set_next(n, NULL);
  } else {
    set_next(n, self->slot[i].head);
  }
  self->slot[i].head = n;
  if (++self->slot[i].n >= BATCH)
    flush_slot(self, i);
}

/* ---- packs (port.c) ------------------------------------------------------
 * Blocks of one size that a context fills and another empties: each goes
 * back to the pool of the context that filled it, so a stream reuses the
 * same few and takes no allocator lock per pack (glibc's arena lock and bins
 * would bounce between the two cores). */

void *weft__msgpool_pack_get(weft__msgpool_t **home, size_t size) {
  weft__msgpool_t *self = my_pool();
  *home = self;
  if (self != NULL) {
    if (self->packs == NULL)
      self->packs = atomic_exchange_explicit(&self->packs_back, NULL, memory_order_acquire);
    weft__qnode_t *n = self->packs;
    if (n != NULL) {
      self->packs = next_of(n);
      return n;
    }
  }
  return weft__malloc(size);
}

void weft__msgpool_pack_put(weft__msgpool_t *home, void *pack) {
  if (home == NULL) {
    weft__free(pack);
    return;
  }
  weft__qnode_t *n = pack;
  weft__qnode_t *old = atomic_load_explicit(&home->packs_back, memory_order_relaxed);
  do {
    set_next(n, old);
    /* release: the filler's acquire exchange sees that we are done with it */
  } while (!atomic_compare_exchange_weak_explicit(&home->packs_back, &old, n,
                                                  memory_order_release, memory_order_relaxed));
}
