/* test_alloc.c: weft_replace_allocator and the weft__ allocation wrappers,
 * and the counting/failing allocator every other test relies on. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

static void replace_rejects_null(void **state) {
  (void)state;
  assert_int_equal(weft_replace_allocator(NULL, realloc, calloc, free), UV_EINVAL);
  assert_int_equal(weft_replace_allocator(malloc, NULL, calloc, free), UV_EINVAL);
  assert_int_equal(weft_replace_allocator(malloc, realloc, NULL, free), UV_EINVAL);
  assert_int_equal(weft_replace_allocator(malloc, realloc, calloc, NULL), UV_EINVAL);
  /* The failed calls changed nothing: still counted. */
  uint64_t before = testutil_alloc_calls();
  void *p = weft__malloc(8);
  assert_non_null(p);
  assert_int_equal(testutil_alloc_calls(), before + 1);
  assert_int_equal(testutil_alloc_outstanding(), 1);
  weft__free(p);
}

static void wrappers_go_through_the_allocator(void **state) {
  (void)state;
  uint64_t before = testutil_alloc_calls();
  char *a = weft__malloc(16);
  int *b = weft__calloc(4, sizeof(int));
  assert_non_null(a);
  assert_non_null(b);
  for (int i = 0; i < 4; i++)
    assert_int_equal(b[i], 0);
  assert_int_equal(testutil_alloc_outstanding(), 2);
  memcpy(a, "0123456789abcdef", 16);
  a = weft__realloc(a, 64);
  assert_non_null(a);
  assert_memory_equal(a, "0123456789abcdef", 16);
  assert_int_equal(testutil_alloc_outstanding(), 2);
  void *c = weft__realloc(NULL, 8); /* realloc(NULL) allocates */
  assert_non_null(c);
  assert_int_equal(testutil_alloc_outstanding(), 3);
  assert_int_equal(testutil_alloc_calls(), before + 4);
  weft__free(a);
  weft__free(b);
  weft__free(c);
  weft__free(NULL);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

static void strdup_copies_and_fails_cleanly(void **state) {
  (void)state;
  char *s = weft__strdup("hello");
  assert_non_null(s);
  assert_string_equal(s, "hello");
  weft__free(s);
  s = weft__strdup("");
  assert_non_null(s);
  assert_string_equal(s, "");
  weft__free(s);
  testutil_alloc_fail_after(0);
  assert_null(weft__strdup("hello"));
  assert_false(testutil_alloc_fail_pending());
}

static void fail_after_fails_exactly_the_nth(void **state) {
  (void)state;
  for (long n = 0; n < 5; n++) {
    void *p[6];
    testutil_alloc_fail_after(n);
    for (long i = 0; i < 6; i++) {
      p[i] = weft__malloc(4);
      if (i == n)
        assert_null(p[i]);
      else
        assert_non_null(p[i]);
    }
    assert_false(testutil_alloc_fail_pending());
    for (long i = 0; i < 6; i++)
      weft__free(p[i]);
  }
  /* calloc and realloc count too; a failed realloc keeps the old block. */
  testutil_alloc_fail_after(0);
  assert_null(weft__calloc(1, 8));
  char *q = weft__malloc(4);
  assert_non_null(q);
  memcpy(q, "abc", 4);
  testutil_alloc_fail_after(0);
  assert_null(weft__realloc(q, 1024));
  assert_string_equal(q, "abc");
  weft__free(q);
  /* -1 disarms. */
  testutil_alloc_fail_after(2);
  assert_true(testutil_alloc_fail_pending());
  testutil_alloc_fail_after(-1);
  assert_false(testutil_alloc_fail_pending());
  q = weft__malloc(1);
  assert_non_null(q);
  weft__free(q);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(replace_rejects_null, no_leaks),
      cmocka_unit_test_teardown(wrappers_go_through_the_allocator, no_leaks),
      cmocka_unit_test_teardown(strdup_copies_and_fails_cleanly, no_leaks),
      cmocka_unit_test_teardown(fail_after_fails_exactly_the_nth, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
