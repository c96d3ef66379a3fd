/* test_buf.c: owned, wrapped, shared and detached buffers; the shared memory
 * is released exactly once, also when four threads drop handles at once; an
 * allocation-failure sweep over every constructor. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

typedef struct {
  _Atomic int calls;
  void *data;
  size_t len;
  void *opaque;
} free_log_t;

static void log_free(void *data, size_t len, void *opaque) {
  free_log_t *log = opaque;
  atomic_fetch_add(&log->calls, 1);
  log->data = data;
  log->len = len;
  log->opaque = opaque;
}

static void new_owned(void **state) {
  (void)state;
  weft_buf_t *b;
  assert_int_equal(weft_buf_new(&b, 100), 0);
  assert_int_equal(testutil_alloc_outstanding(), 2);
  assert_false(weft_buf_is_shared(b));
  assert_false(weft_buf_is_detached(b));
  assert_int_equal(weft_buf_refcount(b), 1);
  assert_int_equal(weft_buf_len(b), 100);
  void *p;
  size_t n;
  assert_int_equal(weft_buf_bytes(b, &p, &n), 0);
  assert_ptr_equal(p, weft_buf_ptr(b));
  assert_int_equal(n, 100);
  memset(p, 0xab, n);
  weft_buf_free(b);

  assert_int_equal(weft_buf_new(&b, 0), 0);
  assert_int_equal(weft_buf_len(b), 0);
  assert_int_equal(weft_buf_bytes(b, &p, &n), 0);
  assert_int_equal(n, 0);
  weft_buf_free(b);
  assert_int_equal(weft_buf_new(NULL, 1), WEFT_EINVAL);
}

static void wrap_calls_free_cb_once(void **state) {
  (void)state;
  char bytes[8] = "abcdefg";
  free_log_t log = {0};
  weft_buf_t *b;
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), log_free, &log), 0);
  assert_ptr_equal(weft_buf_ptr(b), bytes);
  assert_int_equal(weft_buf_len(b), sizeof(bytes));
  assert_int_equal(weft_buf_refcount(b), 1);
  assert_int_equal(atomic_load(&log.calls), 0);
  weft_buf_free(b);
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);
  assert_int_equal(log.len, sizeof(bytes));
  assert_ptr_equal(log.opaque, &log);

  /* No callback: the caller's memory is left alone. */
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), NULL, NULL), 0);
  weft_buf_free(b);
  assert_string_equal(bytes, "abcdefg");
  assert_int_equal(weft_buf_wrap(&b, NULL, 0, NULL, NULL), 0);
  weft_buf_free(b);

  assert_int_equal(weft_buf_wrap(&b, NULL, 4, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_buf_wrap(NULL, bytes, 4, NULL, NULL), WEFT_EINVAL);
  /* On failure free_cb is not called. */
  testutil_alloc_fail_after(0);
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), log_free, &log), WEFT_ENOMEM);
  assert_int_equal(atomic_load(&log.calls), 1);
}

static void shared_is_zeroed_and_counted(void **state) {
  (void)state;
  weft_buf_t *a, *b, *c;
  assert_int_equal(weft_buf_new_shared(&a, 4096), 0);
  assert_true(weft_buf_is_shared(a));
  assert_int_equal(weft_buf_refcount(a), 1);
  uint8_t *p = weft_buf_ptr(a);
  for (size_t i = 0; i < 4096; i++)
    assert_int_equal(p[i], 0);
  assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
  assert_int_equal(weft_buf_share(a, &b), 0);
  assert_int_equal(weft_buf_share(b, &c), 0);
  assert_int_equal(weft_buf_refcount(a), 3);
  assert_int_equal(weft_buf_refcount(c), 3);
  assert_ptr_equal(weft_buf_ptr(b), p);
  assert_int_equal(weft_buf_len(c), 4096);
  p[10] = 42;
  assert_int_equal(((uint8_t *)weft_buf_ptr(c))[10], 42);
  weft_buf_free(a);
  assert_int_equal(weft_buf_refcount(b), 2);
  assert_int_equal(((uint8_t *)weft_buf_ptr(b))[10], 42);
  weft_buf_free(c);
  assert_int_equal(weft_buf_refcount(b), 1);
  weft_buf_free(b);

  assert_int_equal(weft_buf_new_shared(&a, 0), 0);
  assert_int_equal(weft_buf_len(a), 0);
  weft_buf_free(a);
  assert_int_equal(weft_buf_new_shared(NULL, 1), WEFT_EINVAL);
  assert_int_equal(weft_buf_new_shared(&a, SIZE_MAX), WEFT_EINVAL);
}

static void share_errors(void **state) {
  (void)state;
  weft_buf_t *owned, *out = NULL, *moved;
  assert_int_equal(weft_buf_new(&owned, 8), 0);
  assert_int_equal(weft_buf_share(owned, &out), WEFT_EINVAL);
  assert_int_equal(weft_buf_share(NULL, &out), WEFT_EINVAL);
  assert_int_equal(weft_buf_share(owned, NULL), WEFT_EINVAL);
  assert_int_equal(weft__buf_move(owned, &moved), 0);
  assert_int_equal(weft_buf_share(owned, &out), WEFT_EDETACHED);
  assert_null(out);
  weft_buf_free(owned);
  weft_buf_free(moved);
}

static void detached_handle_refuses_use(void **state) {
  (void)state;
  weft_buf_t *b, *moved, *again;
  assert_int_equal(weft_buf_new(&b, 32), 0);
  void *bytes = weft_buf_ptr(b);
  assert_int_equal(weft__buf_move(b, &moved), 0);
  assert_true(weft_buf_is_detached(b));
  assert_false(weft_buf_is_detached(moved));
  assert_ptr_equal(weft_buf_ptr(moved), bytes);
  assert_int_equal(weft_buf_len(moved), 32);

  void *p = (void *)1;
  size_t n = 7;
  assert_int_equal(weft_buf_bytes(b, &p, &n), WEFT_EDETACHED);
  assert_null(p);
  assert_int_equal(n, 0);
  assert_null(weft_buf_ptr(b));
  assert_int_equal(weft_buf_len(b), 0);
  assert_int_equal(weft_buf_refcount(b), 0);
  assert_false(weft_buf_is_shared(b));
  assert_int_equal(weft__buf_move(b, &again), WEFT_EDETACHED);
  weft_buf_free(b); /* only the handle: the bytes moved */
  assert_int_equal(testutil_alloc_outstanding(), 2);
  weft_buf_free(moved);
}

static void move_carries_free_cb(void **state) {
  (void)state;
  char bytes[4] = "xyz";
  free_log_t log = {0};
  weft_buf_t *b, *moved, *shared;
  assert_int_equal(weft_buf_wrap(&b, bytes, 4, log_free, &log), 0);
  assert_int_equal(weft__buf_move(b, &moved), 0);
  weft_buf_free(b);
  assert_int_equal(atomic_load(&log.calls), 0);
  weft_buf_free(moved);
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);

  assert_int_equal(weft_buf_new_shared(&shared, 4), 0);
  assert_int_equal(weft__buf_move(shared, &moved), WEFT_EINVAL);
  assert_int_equal(weft__buf_move(NULL, &moved), WEFT_EINVAL);
  assert_false(weft_buf_is_detached(shared));
  weft_buf_free(shared);
}

static void questions_accept_null(void **state) {
  (void)state;
  void *p = (void *)1;
  size_t n = 1;
  assert_int_equal(weft_buf_bytes(NULL, &p, &n), WEFT_EINVAL);
  assert_null(p);
  assert_int_equal(n, 0);
  assert_null(weft_buf_ptr(NULL));
  assert_int_equal(weft_buf_len(NULL), 0);
  assert_false(weft_buf_is_detached(NULL));
  assert_false(weft_buf_is_shared(NULL));
  assert_int_equal(weft_buf_refcount(NULL), 0);
  weft_buf_free(NULL);
  weft_buf_t *b;
  assert_int_equal(weft_buf_new(&b, 4), 0);
  assert_int_equal(weft_buf_bytes(b, NULL, NULL), 0);
  weft_buf_free(b);
}

/* Shared memory with a release callback (set through the internal struct:
 * the public API makes shared memory only with weft_buf_new_shared). */
static weft_buf_t *shared_with_log(size_t len, free_log_t *log) {
  weft_buf_t *b;
  assert_int_equal(weft_buf_new_shared(&b, len), 0);
  b->mem->free_cb = log_free;
  b->mem->opaque = log;
  return b;
}

static void shared_released_exactly_once(void **state) {
  (void)state;
  free_log_t log = {0};
  weft_buf_t *h[5];
  h[0] = shared_with_log(64, &log);
  void *bytes = weft_buf_ptr(h[0]);
  for (int i = 1; i < 5; i++)
    assert_int_equal(weft_buf_share(h[i - 1], &h[i]), 0);
  for (int i = 4; i >= 0; i--) {
    assert_int_equal(atomic_load(&log.calls), 0);
    weft_buf_free(h[i]);
  }
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);
  assert_int_equal(log.len, 64);
}

#define THREADS 4
#define PER_THREAD 64
#define ROUNDS 200

typedef struct {
  uv_barrier_t *start;
  weft_buf_t **handles;
  int index;
} dropper_t;

/* Each thread writes its own bytes, then drops its handles: whichever thread
 * drops the last one must see every other thread's bytes in the release
 * callback (the acq_rel on the count). */
static void drop_handles(void *arg) {
  dropper_t *d = arg;
  uv_barrier_wait(d->start);
  for (int i = 0; i < PER_THREAD; i++) {
    uint8_t *p = weft_buf_ptr(d->handles[i]);
    p[d->index * PER_THREAD + i] = (uint8_t)(d->index + 1);
    weft_buf_free(d->handles[i]);
  }
}

static void check_and_log_free(void *data, size_t len, void *opaque) {
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    if (p[i] != (uint8_t)(i / PER_THREAD + 1))
      return; /* not logged: the test sees 0 calls */
  log_free(data, len, opaque);
}

static void shared_released_once_across_threads(void **state) {
  (void)state;
  for (int round = 0; round < ROUNDS; round++) {
    free_log_t log = {0};
    weft_buf_t *h[THREADS * PER_THREAD];
    h[0] = shared_with_log(THREADS * PER_THREAD, &log);
    h[0]->mem->free_cb = check_and_log_free;
    for (int i = 1; i < THREADS * PER_THREAD; i++)
      assert_int_equal(weft_buf_share(h[0], &h[i]), 0);
    assert_int_equal(weft_buf_refcount(h[0]), THREADS * PER_THREAD);
    uv_barrier_t start;
    assert_int_equal(uv_barrier_init(&start, THREADS), 0);
    uv_thread_t tid[THREADS];
    dropper_t d[THREADS];
    for (int t = 0; t < THREADS; t++) {
      d[t].start = &start;
      d[t].handles = &h[t * PER_THREAD];
      d[t].index = t;
      assert_int_equal(uv_thread_create(&tid[t], drop_handles, &d[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
      assert_int_equal(uv_thread_join(&tid[t]), 0);
    uv_barrier_destroy(&start);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(log.len, THREADS * PER_THREAD);
    assert_int_equal(testutil_alloc_outstanding(), 0);
  }
}

/* Each constructor, with its n-th allocation failing: WEFT_ENOMEM and nothing
 * left behind, until n passes its last allocation. */
typedef int (*build_fn)(weft_buf_t **out);

static int build_new(weft_buf_t **out) { return weft_buf_new(out, 128); }
static int build_shared(weft_buf_t **out) { return weft_buf_new_shared(out, 128); }
static int build_wrap(weft_buf_t **out) {
  static char bytes[16];
  return weft_buf_wrap(out, bytes, sizeof(bytes), NULL, NULL);
}

static void sweep(build_fn build, long expect_allocs) {
  long n;
  for (n = 0;; n++) {
    weft_buf_t *b = NULL;
    testutil_alloc_fail_after(n);
    int rc = build(&b);
    bool fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    if (!fired) {
      assert_int_equal(rc, 0);
      weft_buf_free(b);
      break;
    }
    assert_int_equal(rc, WEFT_ENOMEM);
    assert_int_equal(testutil_alloc_outstanding(), 0);
  }
  assert_int_equal(n, expect_allocs);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

static void alloc_failure_sweep(void **state) {
  (void)state;
  sweep(build_new, 2);
  sweep(build_shared, 2);
  sweep(build_wrap, 1);

  weft_buf_t *shared, *owned, *out = NULL;
  assert_int_equal(weft_buf_new_shared(&shared, 8), 0);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft_buf_share(shared, &out), WEFT_ENOMEM);
  assert_null(out);
  assert_int_equal(weft_buf_refcount(shared), 1);
  weft_buf_free(shared);

  assert_int_equal(weft_buf_new(&owned, 8), 0);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft__buf_move(owned, &out), WEFT_ENOMEM);
  assert_false(weft_buf_is_detached(owned)); /* unchanged on failure */
  assert_int_equal(weft_buf_len(owned), 8);
  weft_buf_free(owned);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(new_owned, no_leaks),
      cmocka_unit_test_teardown(wrap_calls_free_cb_once, no_leaks),
      cmocka_unit_test_teardown(shared_is_zeroed_and_counted, no_leaks),
      cmocka_unit_test_teardown(share_errors, no_leaks),
      cmocka_unit_test_teardown(detached_handle_refuses_use, no_leaks),
      cmocka_unit_test_teardown(move_carries_free_cb, no_leaks),
      cmocka_unit_test_teardown(questions_accept_null, no_leaks),
      cmocka_unit_test_teardown(shared_released_exactly_once, no_leaks),
      cmocka_unit_test_teardown(shared_released_once_across_threads, no_leaks),
      cmocka_unit_test_teardown(alloc_failure_sweep, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
