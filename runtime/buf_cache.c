/* buf_cache.c: the page mappings of big owned buffers, kept for reuse.
 *
 * A big buffer (weft_buf_new of WEFT__BUF_MEMFD_MIN or more) freed in-process
 * goes back here instead of to the system, so that a program that moves a
 * fresh buffer per message to a worker makes no system call per buffer.
 * Bounds: at most WEFT__BUF_CACHE_SLOTS mappings (exact sizes, fd -1 for
 * anonymous ones); those kept with their pages ("resident") hold at most
 * WEFT__BUF_CACHE_BYTES in all. An anonymous mapping past that budget gives
 * its pages back (MADV_DONTNEED, on the freeing thread) and keeps only its
 * address range; a memfd one past it is closed.
 *
 * No lock: buffers are typically made on one thread and freed on another,
 * both at the pace of the messages, and a mutex there meant futex wake-ups
 * and, on a loaded machine, a thread stalled behind a preempted holder. Each
 * slot has a state word, all of them packed together: 0 (empty), BUSY (one
 * thread is filling or emptying the slot's descriptor) or the mapping's
 * length with FULL and its flags. A thread claims a slot with a CAS (empty
 * -> BUSY to fill it, FULL -> BUSY to empty it), so the descriptor (map, fd)
 * is only ever touched by the one thread holding the slot BUSY; it publishes
 * with a release store of the new state, which the next claimant's acquire
 * CAS reads. The resident byte count is reserved with a CAS loop before a
 * slot is published, so it never passes the budget.
 *
 * Threads: any, at once. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weft_impl.h"

#define SLOTS WEFT__BUF_CACHE_SLOTS
#define BUDGET WEFT__BUF_CACHE_BYTES

/* A state word: a page-aligned length (the low 12 bits are always free) and
 * these flags. */
enum {
  ST_BUSY = 1,
  ST_FULL = 2,
  ST_RESIDENT = 4,
  ST_FD = 8,
  ST_FLAGS = 0xfff,
};

static struct {
  /* Claimed by CAS (acquire), published by a release store; see above. */
  _Atomic uint64_t state[SLOTS];
  char pad_[WEFT__CACHELINE];
  /* Bytes of the resident slots, reserved before a slot is published and
   * given back after it is emptied; relaxed: a count, it orders nothing. */
  _Atomic size_t bytes;
  char pad2_[WEFT__CACHELINE];
  struct {
    void *map;
    int fd;
  } desc[SLOTS]; /* only the thread holding the slot BUSY touches it */
} cache;

static bool claim(int i, uint64_t seen, uint64_t *got) {
  *got = seen;
  return atomic_compare_exchange_strong_explicit(&cache.state[i], got, ST_BUSY,
                                                 memory_order_acquire, memory_order_relaxed);
}

static void release_slot(int i, uint64_t st) {
  atomic_store_explicit(&cache.state[i], st, memory_order_release);
}

static bool fits(uint64_t st, size_t map_len, bool want_fd) {
  return (st & ST_FULL) && (st & ~(uint64_t)ST_FLAGS) == map_len && (!want_fd || (st & ST_FD));
}

/* Empties claimed slot i (state st): its mapping goes to the caller. */
static void take_slot(int i, uint64_t st, int *fd, void **map) {
  *fd = cache.desc[i].fd;
  *map = cache.desc[i].map;
  if (st & ST_RESIDENT)
    atomic_fetch_sub_explicit(&cache.bytes, st & ~(uint64_t)ST_FLAGS, memory_order_relaxed);
  release_slot(i, 0);
}

bool weft__bufcache_take(size_t map_len, bool want_fd, int *fd, void **map) {
  /* A resident one first, so that the budget frees up and the next free
   * keeps its pages without a system call. */
  int other = -1;
  uint64_t got;
  for (int i = 0; i < SLOTS; i++) {
    uint64_t st = atomic_load_explicit(&cache.state[i], memory_order_relaxed);
    if (!fits(st, map_len, want_fd))
      continue;
    if (!(st & ST_RESIDENT)) {
      if (other < 0)
        other = i;
      continue;
    }
    if (claim(i, st, &got)) {
      take_slot(i, st, fd, map);
      return true;
    }
  }
  for (int i = other; i >= 0 && i < SLOTS; i++) {
    uint64_t st = atomic_load_explicit(&cache.state[i], memory_order_relaxed);
    if (fits(st, map_len, want_fd) && claim(i, st, &got)) {
      take_slot(i, st, fd, map);
      return true;
    }
  }
  return false;
}

/* An empty slot, claimed (BUSY), or -1 if there is none. */
static int claim_empty(void) {
  uint64_t got;
  for (int i = 0; i < SLOTS; i++)
    if (atomic_load_explicit(&cache.state[i], memory_order_relaxed) == 0 && claim(i, 0, &got))
      return i;
  return -1;
}

static bool reserve(size_t map_len) {
  size_t b = atomic_load_explicit(&cache.bytes, memory_order_relaxed);
  do {
    if (b > BUDGET || map_len > BUDGET - b)
      return false;
  } while (!atomic_compare_exchange_weak_explicit(&cache.bytes, &b, b + map_len,
                                                  memory_order_relaxed, memory_order_relaxed));
  return true;
}

static void fill_slot(int i, int fd, void *map, size_t map_len, bool resident) {
  cache.desc[i].fd = fd;
  cache.desc[i].map = map;
  release_slot(i, (uint64_t)map_len | ST_FULL | (resident ? ST_RESIDENT : 0) |
                      (fd >= 0 ? ST_FD : 0));
}

bool weft__bufcache_put(int fd, void *map, size_t map_len) {
  int i = claim_empty();
  if (i < 0)
    return false;
  bool resident = reserve(map_len);
  /* Past the budget, an anonymous mapping's pages go back before anyone
   * can take it again; a memfd one is not kept. */
  if (!resident && (fd >= 0 || madvise(map, map_len, MADV_DONTNEED) != 0)) {
    release_slot(i, 0);
    return false;
  }
  fill_slot(i, fd, map, map_len, resident);
  return true;
}

bool weft__bufcache_put_unused(void *map, size_t map_len) {
  int i = claim_empty();
  if (i < 0)
    return false;
  fill_slot(i, -1, map, map_len, false);
  return true;
}

void weft__bufcache_trim(void) {
  uint64_t got;
  for (int i = 0; i < SLOTS; i++) {
    uint64_t st = atomic_load_explicit(&cache.state[i], memory_order_relaxed);
    if (!(st & ST_FULL) || !claim(i, st, &got))
      continue;
    int fd;
    void *map;
    take_slot(i, st, &fd, &map);
    munmap(map, st & ~(uint64_t)ST_FLAGS);
    if (fd >= 0)
      close(fd);
  }
}

void weft__bufcache_stats(int *mappings, size_t *resident_bytes) {
  int n = 0;
  for (int i = 0; i < SLOTS; i++)
    n += (atomic_load_explicit(&cache.state[i], memory_order_relaxed) & ST_FULL) != 0;
  *mappings = n;
  *resident_bytes = atomic_load_explicit(&cache.bytes, memory_order_relaxed);
}
