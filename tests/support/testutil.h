/* testutil.h: helpers shared by the unit tests (tests/support/, linked into
 * every test).
 *
 * A counting, failing allocator installed with weft_replace_allocator: it
 * counts blocks outstanding (every test ends by asserting 0) and can make one
 * chosen allocation fail, for allocation-failure sweeps (libuv's
 * test-loop-oom.c). Thread-safe: buffers are freed from several threads.
 *
 * Guard-page buffers: bytes placed so that the last one is followed by a
 * PROT_NONE page, so a decoder that reads one byte too far crashes at once
 * (picohttpparser's test.c). */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* testutil_alloc_install: routes weft's allocations through the counting
 * allocator. Call first in main(), before any weft call. Aborts on failure. */
void testutil_alloc_install(void);

/* testutil_alloc_outstanding: blocks allocated and not yet freed. */
long testutil_alloc_outstanding(void);

/* testutil_alloc_calls: allocation calls (malloc, calloc, realloc) so far. */
uint64_t testutil_alloc_calls(void);

/* testutil_alloc_big_count: allocation calls (malloc, calloc, realloc) of
 * at least the size given to testutil_alloc_big_reset since that call. */
uint64_t testutil_alloc_big_count(void);
void testutil_alloc_big_reset(size_t at_least);

/* testutil_alloc_fail_after: the n-th allocation call from now (0: the next
 * one) returns NULL; the calls after it succeed again. -1 disarms. */
void testutil_alloc_fail_after(long n);

/* testutil_alloc_fail_pending: true while an armed failure has not fired yet
 * (the code under test made fewer allocations than asked for). */
bool testutil_alloc_fail_pending(void);

typedef struct {
  void *base;     /* the mapping */
  size_t size;
  uint8_t *bytes; /* len bytes, ending right before the guard page */
  size_t len;
} testutil_guard_t;

/* testutil_guard_init: copies len bytes of src (may be NULL if len is 0) so
 * that they end at a guard page. Aborts on failure. */
void testutil_guard_init(testutil_guard_t *g, const void *src, size_t len);
void testutil_guard_fini(testutil_guard_t *g);

#endif /* WEFT_TESTUTIL_H */
