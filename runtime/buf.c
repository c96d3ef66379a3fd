/* buf.c: owned, shared and detached buffer handles.
 *
 * A handle is one of three kinds:
 *  - OWNED: data/len belong to this handle alone. own_alloc says weft
 *    allocated data (weft__free it); otherwise free_cb (if any) releases it.
 *    weft__buf_move hands data, len, free_cb and own_alloc to a new handle and
 *    leaves the source DETACHED.
 *  - SHARED: data/len mirror mem, a weft__bufmem_t with an atomic count of
 *    the handles on it. The handle that drops the count to zero frees the
 *    memory, exactly once, calling mem->free_cb first if there is one.
 *  - DETACHED: data NULL, len 0; only weft_buf_free and the questions accept it.
 * A big OWNED buffer from weft_buf_new is a page mapping (anon_block, or a
 * memfd's: is_memfd) that goes back to a cache for reuse when freed; it
 * becomes a sealed memfd only when it leaves the process
 * (weft__buf_memfd_export), by a copy if it was anonymous.
 * Threads: a handle is used by one thread at a time; only mem->refs, the
 * cache (buf_cache.c, lock-free) and the memfd demand (a relaxed hint) are
 * touched by several threads at once. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft_impl.h"

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/* Shared bytes start after the header, rounded up for any scalar type. */
#define BUFMEM_HEADER \
  ((sizeof(weft__bufmem_t) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

static weft_buf_t *handle_new(int kind) {
  weft_buf_t *b = weft__malloc(sizeof(*b));
  if (b == NULL)
    return NULL;
  memset(b, 0, sizeof(*b));
  b->kind = kind;
  return b;
}

/* Big owned buffers (weft_buf_new of WEFT__BUF_MEMFD_MIN or more) are page
 * mappings: anonymous memory, or a memfd mapping while memfds are in demand
 * (below). Either kind, freed in-process, goes to the cache (buf_cache.c) for
 * reuse. When the cache has no anonymous mapping of the size asked for, one
 * mmap makes room for up to CARVE of them (CARVE_BYTES of address space at
 * most): the caller gets the first, the cache the others, unused (no pages,
 * not resident), so that the first buffers of a stream cost one system call
 * per CARVE instead of one each. */
#define CARVE WEFT__BUF_CARVE
#define CARVE_BYTES WEFT__BUF_CARVE_BYTES

/* Memfd demand. A fresh buffer is anonymous memory, with no fd, unless big
 * buffers have lately gone to other processes: each export of a buffer made
 * by weft_buf_new (the first one after a quiet spell costs a copy) sets
 * demand to DEMAND_RUN, and so does the start of a channel to a weft process
 * (weft__buf_memfd_demand), and each big weft_buf_new while it is above zero
 * takes one and makes a memfd-backed buffer, which a later export sends
 * without a copy. A stream of buffers to a child thus copies none (or only
 * its first, if the channel has been quiet for 64 big buffers); a program
 * that moves buffers between threads only never holds an fd per buffer.
 * Relaxed: a hint read and written by any thread, ordering nothing; a lost
 * update costs at most one copy. */
#define DEMAND_RUN WEFT__BUF_DEMAND_RUN
static _Atomic unsigned demand;

static bool demand_take(void) {
  unsigned d = atomic_load_explicit(&demand, memory_order_relaxed);
  while (d > 0 && !atomic_compare_exchange_weak_explicit(&demand, &d, d - 1, memory_order_relaxed,
                                                         memory_order_relaxed))
    ;
  return d > 0;
}

static void demand_note(void) { atomic_store_explicit(&demand, DEMAND_RUN, memory_order_relaxed); }

void weft__buf_memfd_demand(void) { demand_note(); }

static size_t page_round(size_t len) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  return (len + pg - 1) & ~(pg - 1);
}

void weft__buf_cache_trim(void) {
  weft__bufcache_trim();
  atomic_store_explicit(&demand, 0, memory_order_relaxed);
}

/* A new memfd of map_len bytes, mapped shared if map is not NULL. */
static int memfd_make(size_t map_len, int *fd, void **map) {
  *fd = memfd_create("weft-buf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (*fd < 0)
    return (-errno);
  if (ftruncate(*fd, (off_t)map_len) != 0)
    goto fail_close;
  if (map == NULL)
    return 0;
  *map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (*map != MAP_FAILED)
    return 0;
fail_close:;
  int err = (-errno);
  close(*fd);
  *fd = -1;
  return err;
}

/* A new anonymous mapping of map_len bytes, and up to CARVE - 1 more of the
 * same size for the cache, all from one mmap. */
static int anon_make(size_t map_len, void **map) {
  size_t k = CARVE_BYTES / map_len;
  if (k > CARVE)
    k = CARVE;
  uint8_t *p = MAP_FAILED;
  if (k > 1) /* may be refused where a single one is not (strict overcommit) */
    p = mmap(NULL, k * map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    k = 1;
    p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return (-errno);
  }
  for (size_t i = 1; i < k; i++)
    if (!weft__bufcache_put_unused(p + i * map_len, map_len))
      munmap(p + i * map_len, map_len);
  *map = p;
  return 0;
}

/* b's bytes: len bytes of a kept or new page mapping, a memfd one if
 * want_fd. Fails (and the caller falls back to the heap) where mmap or
 * memfd_create is refused. */
static int block_alloc(weft_buf_t *b, size_t len, bool want_fd) {
  size_t map_len = page_round(len);
  int fd = -1;
  void *p;
  if (!weft__bufcache_take(map_len, want_fd, &fd, &p)) {
    int err = want_fd ? memfd_make(map_len, &fd, &p) : anon_make(map_len, &p);
    if (err)
      return err;
  }
  b->data = p;
  b->len = len;
  b->map_len = map_len;
  b->is_memfd = fd >= 0;
  b->anon_block = fd < 0;
  b->memfd = fd;
  return 0;
}

int weft__buf_new_memfd(weft_buf_t **out, size_t len) {
  if (out == NULL || len == 0)
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_OWNED);
  if (b == NULL)
    return WEFT_ENOMEM;
  int err = block_alloc(b, len, true);
  if (err) {
    weft__free(b);
    return err;
  }
  *out = b;
  return 0;
}

/* Releases an owned buffer's bytes, whatever holds them. */
static void owned_release(weft_buf_t *buf) {
  if (buf->anon_block) {
    if (!weft__bufcache_put(-1, buf->data, buf->map_len))
      munmap(buf->data, buf->map_len);
  } else if (buf->is_memfd) {
    if (buf->data != NULL && !buf->private_map &&
        weft__bufcache_put(buf->memfd, buf->data, buf->map_len))
      return;
    if (buf->data != NULL)
      munmap(buf->data, buf->map_len);
    close(buf->memfd);
  } else if (buf->free_cb != NULL)
    buf->free_cb(buf->data, buf->len, buf->opaque);
  else if (buf->own_alloc)
    weft__free(buf->data);
}

static int write_all(int fd, const uint8_t *p, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = pwrite(fd, p + off, len - off, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? (-errno) : UV_EIO;
    off += (size_t)n;
  }
  return 0;
}

/* b's bytes copied into a new memfd, which b then holds unmapped (the old
 * bytes released); b is unchanged on failure. */
static int convert_to_memfd(weft_buf_t *b) {
  size_t map_len = page_round(b->len);
  int fd;
  int err = memfd_make(map_len, &fd, NULL);
  if (!err && (err = write_all(fd, b->data, b->len)) != 0)
    close(fd);
  if (err)
    return err;
  if (b->anon_block)
    demand_note(); /* a fresh buffer had to be copied: make the next ones memfds */
  owned_release(b);
  b->data = NULL;
  b->map_len = map_len;
  b->anon_block = false;
  b->private_map = false;
  b->own_alloc = false;
  b->free_cb = NULL;
  b->opaque = NULL;
  b->is_memfd = true;
  b->memfd = fd;
  return 0;
}

int weft__buf_memfd_export(weft_buf_t *b, int *fd) {
  if (b == NULL || b->kind != WEFT__BUF_OWNED || b->len == 0)
    return UV_ENOTSUP;
  if (!b->is_memfd || b->private_map) {
    int err = convert_to_memfd(b);
    if (err)
      return err;
  } else if (b->data != NULL) {
    demand_note(); /* memfds in demand: keep making them */
    munmap(b->data, b->map_len);
    b->data = NULL;
  }
  if (fcntl(b->memfd, F_ADD_SEALS, SEALS) != 0)
    return (-errno);
  *fd = b->memfd;
  return 0;
}

int weft__buf_from_memfd(int fd, size_t len, weft_buf_t **out) {
  struct stat st;
  int seals = fcntl(fd, F_GET_SEALS);
  if (len == 0 || seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_WRITE)) !=
                                   (F_SEAL_SHRINK | F_SEAL_WRITE) ||
      fstat(fd, &st) != 0 || (uint64_t)st.st_size < (uint64_t)len)
    return WEFT_EPROTO;
  weft_buf_t *b = handle_new(WEFT__BUF_OWNED);
  if (b == NULL)
    return WEFT_ENOMEM;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    int err = (-errno);
    weft__free(b);
    return err;
  }
  b->data = p;
  b->len = len;
  b->map_len = len;
  b->is_memfd = true;
  b->private_map = true;
  b->memfd = fd;
  *out = b;
  return 0;
}

int weft_buf_new(weft_buf_t **out, size_t len) {
  if (out == NULL)
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_OWNED);
  if (b == NULL)
    return WEFT_ENOMEM;
  b->memfd = -1;
  if (len >= WEFT__BUF_MEMFD_MIN && block_alloc(b, len, demand_take()) == 0) {
    *out = b;
    return 0;
  }
  if (len > 0) {
    b->data = weft__malloc(len);
    if (b->data == NULL) {
      weft__free(b);
      return WEFT_ENOMEM;
    }
  }
  b->len = len;
  b->own_alloc = true;
  *out = b;
  return 0;
}

int weft_buf_wrap(weft_buf_t **out, void *data, size_t len,
                  weft_buf_free_cb free_cb, void *opaque) {
  if (out == NULL || (data == NULL && len > 0))
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_OWNED);
  if (b == NULL)
    return WEFT_ENOMEM;
  b->data = data;
  b->len = len;
  b->free_cb = free_cb;
  b->opaque = opaque;
  *out = b;
  return 0;
}

int weft_buf_new_shared(weft_buf_t **out, size_t len) {
  if (out == NULL || len > SIZE_MAX - BUFMEM_HEADER)
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_SHARED);
  if (b == NULL)
    return WEFT_ENOMEM;
  weft__bufmem_t *mem = weft__calloc(1, BUFMEM_HEADER + len);
  if (mem == NULL) {
    weft__free(b);
    return WEFT_ENOMEM;
  }
  atomic_init(&mem->refs, 1);
  mem->len = len;
  mem->data = (uint8_t *)mem + BUFMEM_HEADER;
  b->mem = mem;
  b->data = mem->data;
  b->len = len;
  *out = b;
  return 0;
}

int weft_buf_share(weft_buf_t *buf, weft_buf_t **out) {
  if (buf == NULL || out == NULL)
    return WEFT_EINVAL;
  if (buf->kind == WEFT__BUF_DETACHED)
    return WEFT_EDETACHED;
  if (buf->kind != WEFT__BUF_SHARED)
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_SHARED);
  if (b == NULL)
    return WEFT_ENOMEM;
  /* Relaxed: the caller already holds a reference, so the memory cannot go
   * away under us; the new handle reaches other threads only through some
   * later synchronising hand-off (a post), which orders this increment. */
  atomic_fetch_add_explicit(&buf->mem->refs, 1, memory_order_relaxed);
  b->mem = buf->mem;
  b->data = buf->data;
  b->len = buf->len;
  *out = b;
  return 0;
}

static void bufmem_release(weft__bufmem_t *mem) {
  /* acq_rel: the release half publishes this holder's writes to the bytes
   * before its reference goes; the acquire half, on the thread that drops the
   * last reference, sees every other holder's writes before it runs free_cb
   * and frees the memory. */
  if (atomic_fetch_sub_explicit(&mem->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (mem->free_cb != NULL)
    mem->free_cb(mem->data, mem->len, mem->opaque);
  weft__free(mem);
}

void weft_buf_free(weft_buf_t *buf) {
  if (buf == NULL)
    return;
  if (buf->kind == WEFT__BUF_SHARED)
    bufmem_release(buf->mem);
  else if (buf->kind == WEFT__BUF_OWNED)
    owned_release(buf);
  weft__free(buf);
}

int weft__buf_move(weft_buf_t *src, weft_buf_t **out) {
  if (src == NULL || out == NULL)
    return WEFT_EINVAL;
  if (src->kind == WEFT__BUF_DETACHED)
    return WEFT_EDETACHED;
  if (src->kind != WEFT__BUF_OWNED)
    return WEFT_EINVAL;
  weft_buf_t *b = handle_new(WEFT__BUF_OWNED);
  if (b == NULL)
    return WEFT_ENOMEM;
  b->data = src->data;
  b->len = src->len;
  b->free_cb = src->free_cb;
  b->opaque = src->opaque;
  b->own_alloc = src->own_alloc;
  b->anon_block = src->anon_block;
  b->is_memfd = src->is_memfd;
  b->private_map = src->private_map;
  b->memfd = src->memfd;
  b->map_len = src->map_len;
  memset(src, 0, sizeof(*src));
  src->kind = WEFT__BUF_DETACHED;
  *out = b;
  return 0;
}

int weft_buf_bytes(const weft_buf_t *buf, void **data, size_t *len) {
  if (data != NULL)
    *data = NULL;
  if (len != NULL)
    *len = 0;
  if (buf == NULL)
    return WEFT_EINVAL;
  if (buf->kind == WEFT__BUF_DETACHED)
    return WEFT_EDETACHED;
  if (data != NULL)
    *data = buf->data;
  if (len != NULL)
    *len = buf->len;
  return 0;
}

void *weft_buf_ptr(const weft_buf_t *buf) {
  return buf != NULL ? buf->data : NULL;
}

size_t weft_buf_len(const weft_buf_t *buf) {
  return buf != NULL ? buf->len : 0;
}

bool weft_buf_is_detached(const weft_buf_t *buf) {
  return buf != NULL && buf->kind == WEFT__BUF_DETACHED;
}

bool weft_buf_is_shared(const weft_buf_t *buf) {
  return buf != NULL && buf->kind == WEFT__BUF_SHARED;
}

unsigned weft_buf_refcount(const weft_buf_t *buf) {
  if (buf == NULL || buf->kind == WEFT__BUF_DETACHED)
    return 0;
  if (buf->kind == WEFT__BUF_OWNED)
    return 1;
  return atomic_load_explicit(&buf->mem->refs, memory_order_relaxed);
}
