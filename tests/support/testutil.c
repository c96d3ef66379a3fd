/* testutil.c: the counting/failing allocator and guard-page buffers of
 * testutil.h. The counters are atomics (relaxed is enough: tests read them
 * after joining every thread that allocates). */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weft.h"

static atomic_long outstanding;
static atomic_ullong calls;
static atomic_long countdown = -1; /* calls left before the failing one */
static atomic_size_t big_size = SIZE_MAX; /* testutil_alloc_big_reset's */
static atomic_ullong big_calls;

static void note_size(size_t n) {
  if (n >= atomic_load_explicit(&big_size, memory_order_relaxed))
    atomic_fetch_add_explicit(&big_calls, 1, memory_order_relaxed);
}

/* One allocation call: true if it must fail. */
static bool alloc_call_fails(void) {
  atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
  long c = atomic_load_explicit(&countdown, memory_order_relaxed);
  while (c >= 0) {
    if (atomic_compare_exchange_weak_explicit(&countdown, &c, c - 1, memory_order_relaxed,
                                              memory_order_relaxed))
      return c == 0;
  }
  return false;
}

static void count(void *p, long delta) {
  if (p != NULL)
    atomic_fetch_add_explicit(&outstanding, delta, memory_order_relaxed);
}

static void *t_malloc(size_t n) {
  note_size(n);
  if (alloc_call_fails())
    return NULL;
  void *p = malloc(n);
  count(p, 1);
  return p;
}

static void *t_calloc(size_t count_, size_t n) {
  note_size(count_ * n);
  if (alloc_call_fails())
    return NULL;
  void *p = calloc(count_, n);
  count(p, 1);
  return p;
}

static void *t_realloc(void *p, size_t n) {
  note_size(n);
  if (alloc_call_fails())
    return NULL;
  if (p != NULL && n == 0) {
    count(p, -1);
    free(p);
    return NULL;
  }
  void *q = realloc(p, n);
  if (p == NULL)
    count(q, 1);
  return q;
}

static void t_free(void *p) {
  count(p, -1);
  free(p);
}

void testutil_alloc_install(void) {
  if (weft_replace_allocator(t_malloc, t_realloc, t_calloc, t_free) != 0) {
    fprintf(stderr, "testutil: weft_replace_allocator failed\n");
    abort();
  }
}

long testutil_alloc_outstanding(void) {
  return atomic_load_explicit(&outstanding, memory_order_relaxed);
}

uint64_t testutil_alloc_calls(void) {
  return atomic_load_explicit(&calls, memory_order_relaxed);
}

uint64_t testutil_alloc_big_count(void) {
  return atomic_load_explicit(&big_calls, memory_order_relaxed);
}

void testutil_alloc_big_reset(size_t at_least) {
  atomic_store_explicit(&big_size, at_least, memory_order_relaxed);
  atomic_store_explicit(&big_calls, 0, memory_order_relaxed);
}

void testutil_alloc_fail_after(long n) {
  atomic_store_explicit(&countdown, n < 0 ? -1 : n, memory_order_relaxed);
}

bool testutil_alloc_fail_pending(void) {
  return atomic_load_explicit(&countdown, memory_order_relaxed) >= 0;
}

void testutil_guard_init(testutil_guard_t *g, const void *src, size_t len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t data_pages = (len + page - 1) / page;
  if (data_pages == 0)
    data_pages = 1;
  g->size = (data_pages + 1) * page;
  g->base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g->base == MAP_FAILED ||
      mprotect((uint8_t *)g->base + data_pages * page, page, PROT_NONE) != 0) {
    perror("testutil_guard_init");
    abort();
  }
  g->bytes = (uint8_t *)g->base + data_pages * page - len;
  g->len = len;
  if (len > 0)
    memcpy(g->bytes, src, len);
}

void testutil_guard_fini(testutil_guard_t *g) {
  munmap(g->base, g->size);
  g->base = NULL;
  g->bytes = NULL;
}
