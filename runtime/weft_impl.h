/* weft_impl.h: NOT PUBLIC. The kernel's internal umbrella header: struct
 * layouts and weft__ functions shared between runtime/ files. Nothing outside
 * runtime/ (actors/, examples/, user code) may include it. */
#ifndef WEFT_IMPL_H
#define WEFT_IMPL_H

#include <stdatomic.h>

#include "weft.h"

#define WEFT__CACHELINE 64

/* weft__cpu_pause: one round of a spin-wait: the CPU's pause hint (frees the
 * pipeline for a sibling hyper-thread, saves power), nothing where there is
 * none. Never gives up the CPU: a spin that may wait on a preempted thread
 * must also yield (sched_yield) after a bounded number of rounds. */
static inline void weft__cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* ---- allocator (alloc.c) ------------------------------------------------ */
void *weft__malloc(size_t n);
void *weft__calloc(size_t count, size_t n);
void *weft__realloc(void *p, size_t n);
void weft__free(void *p);
char *weft__strdup(const char *s);

/* ---- intrusive MPSC queue (queue.c) -------------------------------------
 * Vyukov's non-intrusive-stub MPSC queue: push from any thread (wait-free, one
 * exchange), pop from the single consumer thread. A push that is half done
 * (tail swapped, next not yet linked) makes pop return NULL for a moment even
 * though the queue is not empty: callers that keep a count retry later. */
typedef struct weft__qnode_s {
  _Atomic(struct weft__qnode_s *) next;
} weft__qnode_t;

typedef struct {
  _Atomic(weft__qnode_t *) tail;  /* producers exchange here */
  weft__qnode_t *head;            /* consumer only */
  weft__qnode_t stub;
} weft__mpsc_t;

/* What travels in which queue: a port's inbox holds messages and packs of
 * small messages (port.c; the first member of each is the node); a
 * context's ready queue holds only ports (their sched_node); its task queue
 * only weft__task_t. Events without a node (the
 * peer closed, the peer's queue drained) are bits in the port's state. */

void weft__mpsc_init(weft__mpsc_t *q);
void weft__mpsc_push(weft__mpsc_t *q, weft__qnode_t *n);
/* Publish first..last (linked through next by the caller, who owns them
 * all) with one exchange and one release store: FIFO among themselves. */
void weft__mpsc_push_chain(weft__mpsc_t *q, weft__qnode_t *first, weft__qnode_t *last);
weft__qnode_t *weft__mpsc_pop(weft__mpsc_t *q);
/* The node pop would return next, left in place (consumer only); it may be
 * there while pop still says NULL (the push after it is half done). */
weft__qnode_t *weft__mpsc_peek(weft__mpsc_t *q);
bool weft__mpsc_empty(weft__mpsc_t *q); /* consumer only; may say false while a push completes */

/* ---- buffers (buf.c) ----------------------------------------------------- */
typedef struct weft__bufmem_s {
  _Atomic unsigned refs;  /* handles on this memory; the last release frees it (acq_rel) */
  size_t len;
  weft_buf_free_cb free_cb;
  void *opaque;
  void *data;  /* points into this allocation for weft_buf_new_shared */
} weft__bufmem_t;

enum { WEFT__BUF_OWNED = 1, WEFT__BUF_SHARED = 2, WEFT__BUF_DETACHED = 3 };

struct weft_buf_s {
  uint8_t *data;
  size_t len;
  int kind;
  weft_buf_free_cb free_cb;  /* owned: called on the bytes when released */
  void *opaque;
  weft__bufmem_t *mem;       /* shared: the refcounted memory */
  bool own_alloc;            /* owned: data was allocated by weft (free with weft__free) */
  bool anon_block;           /* owned: data is an anonymous mapping of map_len bytes */
  bool is_memfd;             /* owned: data is a mapping of memfd (or unmapped, data NULL) */
  bool private_map;          /* owned memfd: a private (copy-on-write) mapping of a received fd */
  int memfd;
  size_t map_len;            /* owned memfd or anon_block: bytes mapped (>= len) */
};

/* Owned buffers of at least this size are page mappings kept for reuse:
 * anonymous memory, or a memfd while buffers are in demand by other
 * processes (buf.c: "memfd demand"). */
#define WEFT__BUF_MEMFD_MIN (256u * 1024u)
/* An owned buffer about to leave the process as an fd. A memfd-backed one
 * is unmapped and sealed (no shrink, grow or write), no copy; any other
 * owned buffer is first copied into a new memfd, and its old bytes released
 * (the one copy). Returns the fd, which b still owns (closed when b is
 * freed). UV_ENOTSUP if b is not owned or is empty; on another error b is
 * unchanged. */
int weft__buf_memfd_export(weft_buf_t *b, int *fd);
/* How many big weft_buf_new after an export are memfd-backed (buf.c). */
#define WEFT__BUF_DEMAND_RUN 64u
/* Big buffers are about to go to another process (a weft channel starts):
 * the next WEFT__BUF_DEMAND_RUN big weft_buf_new are memfds. Any thread. */
void weft__buf_memfd_demand(void);
/* A new owned buffer of len bytes (> 0) in a memfd, whatever the demand. */
int weft__buf_new_memfd(weft_buf_t **out, size_t len);
/* A buffer over a received memfd of len bytes: checks its size and seals, maps
 * it private (copy-on-write). Takes fd on success. WEFT_EPROTO if the fd is
 * not a sealed memfd of at least len bytes. */
int weft__buf_from_memfd(int fd, size_t len, weft_buf_t **out);
/* Release the mappings kept for reuse and forget the memfd demand
 * (weft_runtime_free). */
void weft__buf_cache_trim(void);

/* The mappings of big owned buffers kept for reuse (buf_cache.c): at most
 * WEFT__BUF_CACHE_SLOTS mappings, of which those that keep their pages
 * hold at most WEFT__BUF_CACHE_BYTES. Any thread; no lock.
 * take: a kept mapping of exactly map_len bytes (a memfd one if want_fd),
 * resident ones first; false if there is none.
 * put: keeps a freed mapping (fd -1: anonymous), with its pages if the
 * budget allows, else (anonymous only) after giving them back; false if the
 * caller must release it.
 * put_unused: keeps a never-used anonymous mapping, not resident.
 * trim: releases every kept mapping.
 * stats: how many are kept and the bytes of the resident ones (tests). */
#define WEFT__BUF_CACHE_SLOTS 64
#define WEFT__BUF_CACHE_BYTES ((size_t)256 << 20)
/* A new anonymous big buffer maps room for up to WEFT__BUF_CARVE of its size
 * (WEFT__BUF_CARVE_BYTES in all at most) and leaves the others in the cache,
 * unused (buf.c). */
#define WEFT__BUF_CARVE 8u
#define WEFT__BUF_CARVE_BYTES ((size_t)16 << 20)
bool weft__bufcache_take(size_t map_len, bool want_fd, int *fd, void **map);
bool weft__bufcache_put(int fd, void *map, size_t map_len);
bool weft__bufcache_put_unused(void *map, size_t map_len);
void weft__bufcache_trim(void);
void weft__bufcache_stats(int *mappings, size_t *resident_bytes);

/* Moves src's bytes into a new handle; src becomes detached. Owned only. */
int weft__buf_move(weft_buf_t *src, weft_buf_t **out);

/* ---- messages (msg.c) ---------------------------------------------------- */
typedef struct {
  int kind;  /* weft_xfer_kind_t, or 0 once taken */
  bool reply; /* the reply port of a request (request.c); stays set once taken */
  union {
    weft_buf_t *buf;
    weft_port_t *port;
    uv_os_sock_t fd;
  } u;
} weft__xfer_t;

/* Asks for the cache line at p, to be written soon: on x86-64 PREFETCHW
 * (GCC's __builtin_prefetch emits a read prefetch there unless built for a
 * CPU with it; processors without it execute it as a NOP), elsewhere the
 * compiler's write prefetch. */
static inline void weft__prefetch_w(const void *p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
  __builtin_prefetch(p, 1);
#endif
}

/* A message struct is 128 bytes (the decoded view lives outside it, the
 * inline area takes what is left): small, since a struct that crosses to
 * another core travels there and back in cache lines. */
#define WEFT__MSG_SIZE 128
#define WEFT__MSG_INLINE 48

/* weft_msg_view's decoded payload: one allocation, freed whole. */
typedef struct {
  msgpack_object obj;
  msgpack_zone zone;
} weft__view_t;

struct weft_msg_s {
  weft__qnode_t node;        /* first: a message is a queue node */
  struct weft__msgpool_s *origin; /* pool the struct returns to (NULL: plain free) */
  _Atomic uint32_t life;     /* WEFT__MSG_* (checked mode; set by weft_msg_new always) */
  uint32_t open_map;         /* weft_msg_begin_map: offset + 1 of the innermost open
                                map's header (its count field links to the next
                                outer one), 0: none; a post refuses an open map */
  /* Checked mode poisons what follows once the message is freed. */
  uint8_t *data;             /* inline_data or heap */
  uint32_t len;
  uint32_t cap;
  int err;                   /* first build error */
  uint16_t nxfer;
  uint16_t capxfer;
  weft__xfer_t *xfer;
  msgpack_packer pk;
  weft__view_t *view;        /* weft_msg_view cache, or NULL */
  uint8_t inline_data[WEFT__MSG_INLINE];
};
_Static_assert(sizeof(struct weft_msg_s) == WEFT__MSG_SIZE, "a message is 128 bytes");

/* Checked mode: ownership mistakes are reported at the call. A message is
 * LIVE (its owner may use it), QUEUED (posted: the receiver's until it is
 * taken out of the queue) or FREED. A second post gets WEFT_ETAKEN; a second
 * free aborts naming weft_msg_free; a freed message is poisoned (ASan
 * reports any touch of it; without ASan its error is WEFT_ETAKEN).
 * weft__checked_flag is set by weft_runtime_new (WEFT_CHECK=0/1 in the
 * environment, else on in sanitizer builds) and only read afterwards. */
enum { WEFT__MSG_LIVE = 0x4c495645u, WEFT__MSG_QUEUED = 0x51554555u, WEFT__MSG_FREED = 0x46524545u };
extern _Atomic bool weft__checked_flag;
/* relaxed: a runtime made on one thread may set it while another runtime's
 * threads read it; it orders nothing (a plain load on x86 and arm64). */
static inline bool weft__checked(void) {
  return atomic_load_explicit(&weft__checked_flag, memory_order_relaxed);
}
void weft__check_configure(void);
/* Checked mode: 0 if msg may be posted, else WEFT_ETAKEN. */
int weft__msg_check_post(weft_msg_t *msg);
/* Checked mode: msg goes LIVE -> QUEUED; false if another post took it. */
bool weft__msg_mark_queued(weft_msg_t *msg);
/* Checked mode: msg left a queue: it is its taker's (QUEUED -> LIVE). */
static inline void weft__msg_mark_taken(weft_msg_t *msg) {
  if (weft__checked())
    atomic_store_explicit(&msg->life, WEFT__MSG_LIVE, memory_order_relaxed);
}
/* Checked mode, ASan: poison / unpoison a message's body (after life). */
void weft__msg_poison(weft_msg_t *msg, bool on);

/* ---- message struct recycling (msgpool.c) ------------------------------- */
typedef struct weft__msgpool_s weft__msgpool_t;
weft__msgpool_t *weft__msgpool_adopt(void);        /* a context starts; NULL if none left */
void weft__msgpool_release(weft__msgpool_t *pool); /* its context ends */
void weft__msgpool_flush(weft__msgpool_t *pool);   /* hand batched structs back */
void weft__msgpool_trim(void);                     /* free what unowned pools cache */
weft_msg_t *weft__msgpool_get(void);               /* a struct; sets origin */
void weft__msgpool_put(weft_msg_t *m);             /* back to its origin */
/* A pack of size bytes (port.c; always the same size), from this thread's
 * pool if it has one spare; *home: where it goes back (NULL: freed). */
void *weft__msgpool_pack_get(weft__msgpool_t **home, size_t size);
void weft__msgpool_pack_put(weft__msgpool_t *home, void *pack); /* any thread */

/* Free msg's weft_msg_view cache (a post drops it: a queue counts payload
 * and buffers, and a decoded view of 2 KiB or more would ride uncounted). */
void weft__msg_view_drop(weft_msg_t *m);
/* Free msg; the ports it carries close telling their peers code (a message
 * that died with its channel: its reply port's waiting end hears why). */
void weft__msg_free_closing(weft_msg_t *msg, int code);
/* Bytes a message counts against a port's byte bound: payload + owned buffers. */
size_t weft__msg_weight(const weft_msg_t *msg);
/* True if msg's transfer list holds a or b (ports). */
bool weft__msg_carries_port(const weft_msg_t *msg, const weft_port_t *a, const weft_port_t *b);

/* ---- ports, channels, contexts (port.c, ctx.c) --------------------------- */
typedef struct weft__task_s weft__task_t;
typedef void (*weft__task_fn)(weft__task_t *task);
struct weft__task_s {
  weft__qnode_t node;  /* in a context's task queue */
  weft__task_fn fn;
};

typedef struct weft__channel_s weft__channel_t;

enum {
  WEFT__PORT_STARTED = 1u << 0,
  WEFT__PORT_UNREF = 1u << 1,     /* does not keep the loop alive */
  WEFT__PORT_CLOSING = 1u << 2,   /* weft_port_close called, close cb pending */
  WEFT__PORT_DONE = 1u << 3,      /* close cb called */
  WEFT__PORT_WAS_STARTED = 1u << 4, /* started at least once (a stopped port keeps its queue) */
  WEFT__PORT_IN_MSG = 1u << 5,    /* in a message's transfer list */
  WEFT__PORT_LIVE = 1u << 6       /* counted in the ctx's live (ref'd) ports */
};

/* Incoming messages a transport dropped (weft_port_on_error). Owner thread,
 * but dropped, which any thread may read (relaxed: a statistic). The reports
 * wait here, in order, as (code, count) runs, until a task on the owner's
 * loop tells the callback; while it is queued the task holds a channel ref. */
struct weft__port_errs_s {
  weft__task_t task;
  weft_port_t *port;
  bool queued;
  uint8_t nwait;
  weft_port_error_cb on_error;
  _Atomic uint64_t dropped;
  struct {
    int err;
    uint32_t n;
  } wait[8];
};

/* Rare per-port settings, allocated on first use so an actor's ports stay small. */
typedef struct {
  weft_port_close_cb on_close;
  weft_port_close_cb on_close_internal; /* kernel's own (worker, child), called first */
  void *internal_data;
  weft_port_drain_cb on_drain;
  _Atomic uint32_t hwm_msgs;  /* 0: the channel's; read by posters on any thread (relaxed) */
  _Atomic size_t hwm_bytes;
  struct weft__port_errs_s errs; /* incoming messages dropped (weft_port_on_error) */
} weft__port_ext_t;

/* 112 bytes: an actor is a channel of two ports, and an idle actor should
 * stay within 256 bytes (weft-bench actor_spawn reports bytes per actor). */
struct weft_port_s {
  /* Touched by producers on any thread. */
  weft__mpsc_t inbox;                 /* messages posted on the peer */
  _Atomic int64_t pending;            /* messages + event bits queued; 0->1 takes the token (acq_rel) */
  _Atomic int64_t pending_bytes;      /* weight queued, for the byte bound (relaxed) */
  _Atomic(weft_ctx_t *) owner;        /* NULL while in transit; changed under sched_lock */
  _Atomic uint32_t state;             /* WEFT__STATE_* (acq_rel) */
  _Atomic uint32_t discarded;         /* messages that reached here and were dropped at close */
  _Atomic uint8_t sched_lock;         /* spin lock: owner changes vs token hand-over */
  _Atomic uint8_t tok;                /* WEFT__TOK_*: where the scheduling token is; under sched_lock */
  _Atomic uint8_t want_drain;         /* a poster got EAGAIN; notify below half (seq_cst) */
  uint8_t index;                      /* immutable: 0 or 1 within its channel */
  /* Owner thread only. */
  uint8_t flags;                      /* WEFT__PORT_* */
  uint8_t close_kind;                 /* 0: closed here, 1: the peer closed */
  _Atomic int16_t close_code;         /* the reason this end gives its peer (0: WEFT_ECLOSED);
                                         stored before the close event is raised (release) */
  weft__qnode_t sched_node;           /* in the owner's ready queue while it holds the token */
  weft_port_message_cb on_message;
  void *data;
  /* Made on the owner thread on first use, published with release (posters
   * read the bounds in it with acquire); freed only with the channel. */
  _Atomic(weft__port_ext_t *) ext;
  weft_list_node_t ctx_node;          /* in the owner's list of open ports, then of closing ports */
};

enum {
  WEFT__TOK_NONE = 0,   /* no token: the next 0 -> 1 of pending makes one */
  WEFT__TOK_QUEUED = 1, /* in the owner's ready queue or being drained (holds a channel ref) */
  WEFT__TOK_PARKED = 2  /* exists but waits: the port is in transit or stopped */
};

enum {
  WEFT__STATE_CLOSED = 1u,      /* this end closed: posts on either end fail */
  WEFT__STATE_PEER_CLOSED = 2u, /* the peer's close was seen here */
  WEFT__STATE_EV_CLOSE = 4u,    /* event: the peer closed (counted in pending) */
  WEFT__STATE_EV_DRAIN = 8u,    /* event: the peer's queue fell below half (counted in pending) */
  /* The port's carry mask: limits on the transfer items a message posted to
   * this port may hold (its peer's post returns WEFT_ETRANSFER), set by the
   * transport that drains the port before anyone posts (weft__port_set_carry)
   * and never cleared. The mailbox knows the limits, not the transports. */
  WEFT__CARRY_NO_PORT = 16u,    /* no port */
  WEFT__CARRY_NO_BUF = 32u,     /* no buffer */
  WEFT__CARRY_ONE_SOCKET = 64u, /* at most one socket */
  WEFT__CARRY_FEW_ITEMS = 128u, /* at most WEFT__CARRY_MAX_ITEMS items */
  WEFT__CARRY_NO_SOCKET = 256u, /* no socket (another machine) */
  WEFT__CARRY_NO_SHARED = 512u  /* no shared buffer (another machine) */
};
#define WEFT__CARRY_MASK                                                                    \
  (WEFT__CARRY_NO_PORT | WEFT__CARRY_NO_BUF | WEFT__CARRY_ONE_SOCKET | WEFT__CARRY_FEW_ITEMS | \
   WEFT__CARRY_NO_SOCKET | WEFT__CARRY_NO_SHARED)
/* The item count WEFT__CARRY_FEW_ITEMS allows (a transport that turns each
 * item into an fd: SCM_RIGHTS carries a bounded number per send). */
#define WEFT__CARRY_MAX_ITEMS 64

struct weft__channel_s {
  weft_port_t ports[2];
  _Atomic uint32_t refs;         /* 2 ends + tokens in ready queues; last frees (acq_rel) */
  /* The default bounds of both ends (weft_port_set_hwm overrides them): those
   * of the runtime that made the channel, as an index into weft__bounds_table
   * (it fits the padding: an actor stays under 256 bytes). Written before the
   * channel is published and never again: posters on any thread read it plainly. */
  uint32_t bounds;
};

weft_port_t *weft__port_peer(weft_port_t *p);
weft__channel_t *weft__port_channel(weft_port_t *p);
/* Unbind a port from its owner for transfer (owner thread). */
int weft__port_detach(weft_port_t *p);
/* Bind a detached port to ctx (ctx's thread). */
void weft__port_attach(weft_port_t *p, weft_ctx_t *ctx);
/* Close p (owner thread) telling its peer `code` as the reason and counting
 * extra messages as undelivered (sent to a process that died unacknowledged). */
void weft__port_close_with(weft_port_t *p, int code, uint32_t extra_undelivered);
int weft__port_post_window(weft_port_t *port, weft_msg_t *msg);
int weft__port_post_nobytes(weft_port_t *port, weft_msg_t *msg);
void weft__port_want_drain(weft_port_t *p);
/* Add WEFT__CARRY_* limits to p's carry mask. p's owner, before p is posted to. */
void weft__port_set_carry(weft_port_t *p, uint32_t limits);
/* Keep p's channel memory (both ports, closed) valid until unhold, whatever
 * closes meanwhile: a handle given to the user outlives the close. */
void weft__port_hold(weft_port_t *p);
void weft__port_unhold(weft_port_t *p);
/* A transport dropped one message meant for p (it could not be represented:
 * err says why): counts it and queues the report for p's error callback.
 * Call on p's owner thread; elsewhere (p moved) it is only counted. */
void weft__port_report_drop(weft_port_t *p, int err);
/* Close a port that nobody owns (freed inside a message). Any thread. */
void weft__port_close_orphan(weft_port_t *p);
/* Publish ctx's batch of unpublished posts (ctx's thread; nothing if empty).
 * Called at the end of each delivery turn and before anything else this
 * thread publishes that must follow those posts (a close, a detach). */
void weft__port_flush(weft_ctx_t *ctx);
/* Deliver up to budget messages from p (owner thread). Returns how many. */
uint32_t weft__port_drain(weft_port_t *p, uint32_t budget, bool *more);

struct weft_runtime_s;

/* A kernel resource with libuv handles of its own (a process channel, a child
 * process) that a context must close before it ends. */
typedef struct weft__closer_s {
  weft_list_node_t node;                   /* in the context's closers */
  void (*close)(struct weft__closer_s *c); /* start closing; the loop finishes it */
  /* Optional: true if input waits on the resource's fd. A context about to
   * sleep spins on these too, so an answer from another process that comes
   * within the spin is read without a kernel wake-up. */
  bool (*input_ready)(struct weft__closer_s *c);
} weft__closer_t;

struct weft_ctx_s {
  /* Touched by other threads. */
  weft__mpsc_t ready;                      /* ports holding their token */
  weft__mpsc_t tasks;                      /* kernel tasks (worker online/exit, ...) */
  _Atomic int parked;                      /* 1 while the loop may sleep in poll; seq_cst with ready pushes */
  _Atomic bool stop;                       /* worker asked to stop */
  _Atomic uint32_t waking;                 /* pushers between their push and their eventfd write:
                                              the context's end waits for 0 (acquire) before it
                                              closes `wake` */
  char pad_[WEFT__CACHELINE];
  /* Owner thread only. */
  uv_loop_t *loop;
  bool own_loop;
  uv_poll_t wake;                          /* readable when wake_fd was written */
  int wake_fd;                             /* an eventfd: any thread writes (weft__ctx_signal) */
  uv_prepare_t prepare;
  uv_check_t check;
  uv_idle_t idle;
  int handles_open;
  struct weft_runtime_s *rt;
  weft_worker_t *worker;                   /* set in a worker context */
  weft_port_t *parent_port;
  weft_list_t ports;                       /* bound open ports (weft_port_t.ctx_node) */
  uint32_t live;                           /* started ref'd open ports + running workers */
  uint32_t batch;
  bool in_turn;                            /* inside run_batch: posts may wait in `out` */
  /* The producer's batch (port.c): messages posted inside a delivery turn to
   * one port of another context, linked but not yet published. */
  struct {
    weft_port_t *to;                       /* NULL when empty */
    weft__qnode_t *head, *tail;
    uint32_t n, room;                      /* room: n may grow to it (bound and batch size) */
    struct weft__pack_s *pack;             /* the tail, while it is a pack with room */
  } out;
  int32_t spin_max_ns;
  int32_t spin_ns;                         /* adaptive spin budget */
  uint64_t parked_at;                      /* when the loop last allowed itself to sleep */
  uint64_t msgs_in, msgs_out, queue_peak, ports_open, undeliverable, wakeups, spins_hit;
  uint64_t start_ns;
  weft_list_t closing;                     /* ports whose close cb is due (ctx_node) */
  weft_list_t children;                    /* workers spawned from this context */
  weft_list_t exited;                      /* their handles after on_exit, until released */
  struct weft__msgpool_s *pool;            /* message structs made on this thread */
  weft_list_t closers;                     /* weft__closer_t: closed first by weft__ctx_fini */
  struct weft__ctxm_s *metrics;            /* its published figures (metrics.c); NULL: off */
};

/* Push a port holding its token to ctx. Any thread, typically under the
 * port's sched_lock. Returns ctx if it may sleep: the caller must then call
 * weft__ctx_wake(ctx), after releasing its lock (the woken context's first
 * act is to take that lock); NULL otherwise. */
weft_ctx_t *weft__ctx_push_ready(weft_ctx_t *ctx, weft__qnode_t *node);
/* Wake ctx after weft__ctx_push_ready returned it. Any thread, no lock held. */
void weft__ctx_wake(weft_ctx_t *ctx);
/* Make ctx's loop run its wake-up callback soon (one write to its eventfd).
 * Any thread that knows ctx is alive (a worker's lock, a `waking` count). */
void weft__ctx_signal(weft_ctx_t *ctx);
void weft__ctx_post_task(weft_ctx_t *ctx, weft__task_t *task);
int weft__ctx_init(weft_ctx_t *ctx, struct weft_runtime_s *rt, uv_loop_t *loop);
/* Close every port and weft's handles (every handle of the loop too if
 * close_all_handles); run the loop until closed; close an owned loop.
 * Owner thread. Returns uv_loop_close's result. */
int weft__ctx_fini(weft_ctx_t *ctx, bool close_all_handles);
void weft__port_finish(weft_port_t *p);
void weft__port_close_now(weft_port_t *p);
void weft__ctx_port_link(weft_ctx_t *ctx, weft_port_t *p);
void weft__ctx_port_unlink(weft_ctx_t *ctx, weft_port_t *p);
void weft__ctx_live_update(weft_ctx_t *ctx, weft_port_t *p);
void weft__ctx_live_add(weft_ctx_t *ctx, int delta);
/* The calling thread's context. initial-exec: one load, no __tls_get_addr
 * call on the post and drain paths (a pointer fits any static TLS surplus). */
extern _Thread_local weft_ctx_t *weft__tls_ctx __attribute__((tls_model("initial-exec")));
static inline weft_ctx_t *weft__ctx_tls(void) { return weft__tls_ctx; }
weft__port_ext_t *weft__port_ext(weft_port_t *p);
void weft__ctx_close_later(weft_ctx_t *ctx, weft_port_t *p);
void weft__ctx_set_current(weft_ctx_t *ctx);
void weft__ctx_closer_add(weft_ctx_t *ctx, weft__closer_t *c);
void weft__ctx_closer_remove(weft_ctx_t *ctx, weft__closer_t *c);

/* ---- runtime (runtime.c) ------------------------------------------------- */

/* Default port bounds, one entry per distinct pair a runtime of this process
 * asked for; entry 0 holds WEFT_PORT_DEFAULT_HWM_*. An entry is written once,
 * before any channel names it, and never changes, so any thread may read an
 * entry it learned of through a channel. weft_runtime_new adds its pair (or
 * finds it); a process that asks for more distinct pairs than fit gets
 * WEFT_ENOMEM from weft_runtime_new. */
typedef struct {
  uint32_t msgs;
  size_t bytes;
} weft__bounds_t;
#define WEFT__BOUNDS_MAX 64u
extern weft__bounds_t weft__bounds_table[WEFT__BOUNDS_MAX];
typedef struct weft__entry_s {
  struct weft__entry_s *next;
  char *name;
  weft_worker_entry_cb fn;
} weft__entry_t;

/* ---- metrics (metrics.c) ------------------------------------------------ */

/* The runtime's metrics registry: its contexts' published blocks and the
 * sources, for snapshots from any thread. `lock` guards both lists and the
 * blocks' names; everything else in a block is written by its owner thread
 * (relaxed atomics) and read by snapshots. */
typedef struct weft__metrics_reg_s {
  uv_mutex_t lock;
  weft_list_t ctxs;          /* struct weft__ctxm_s, main first */
  weft_list_t sources;       /* weft_metrics_source_t */
  uint32_t next_worker;      /* under lock: numbers workers' default names */
  uint32_t period_ms;        /* sampling period; 0: metrics off */
} weft__metrics_reg_t;

int weft__metrics_reg_init(weft__metrics_reg_t *reg);
void weft__metrics_reg_fini(weft__metrics_reg_t *reg);
/* A context's metrics: new allocates its block (0, or WEFT_ENOMEM; nothing
 * with metrics off), start registers it and starts its timer (cannot fail),
 * stop unregisters it and closes the timer (the context's handles_open
 * counts it until its close callback), or frees a block never started.
 * Owner thread. */
int weft__metrics_ctx_new(weft_ctx_t *ctx);
void weft__metrics_ctx_start(weft_ctx_t *ctx);
void weft__metrics_ctx_stop(weft_ctx_t *ctx);

struct weft_runtime_s {
  weft_ctx_t *main;
  weft_runtime_options_t opts;
  uint32_t bounds;           /* its default port bounds: index in weft__bounds_table */
  uv_mutex_t lock;           /* guards entries */
  weft__entry_t *entries;
  char *child_entry;         /* WEFT_ENTRY this process was started with */
  weft_port_t *parent_port;  /* the channel to a parent process, if any */
  bool exit_req;             /* weft_worker_exit in a child's main context */
  int exit_code;
  weft__metrics_reg_t metrics;
};

/* In weft_runtime_new: adopt a channel inherited from a parent process. */
int weft__child_bootstrap(weft_runtime_t *rt);

/* Terminate every worker spawned from ctx and run ctx's loop until each has
 * exited (their on_exit called). Owner thread. */
void weft__ctx_reap_children(weft_ctx_t *ctx);

uint64_t weft__now_ns(void);

#endif /* WEFT_IMPL_H */
