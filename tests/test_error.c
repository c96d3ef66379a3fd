/* test_error.c: weft_strerror / weft_err_name over weft's table, libuv's
 * codes, 0 and codes nobody knows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "testutil.h"
#include "weft.h"

typedef struct {
  int code;
  const char *name;
  const char *msg;
} entry_t;

static const entry_t table[] = {
#define ENTRY_(name, value, msg) {value, "WEFT_E" #name, msg},
    WEFT_ERRNO_MAP(ENTRY_)
#undef ENTRY_
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static int no_leaks(void **state) {
  (void)state;
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

static void weft_codes_have_table_names_and_messages(void **state) {
  (void)state;
  for (size_t i = 0; i < NTABLE; i++) {
    assert_string_equal(weft_err_name(table[i].code), table[i].name);
    assert_string_equal(weft_strerror(table[i].code), table[i].msg);
  }
  assert_string_equal(weft_err_name(WEFT_EDETACHED), "WEFT_EDETACHED");
  assert_string_equal(weft_err_name(WEFT_EPEERDIED), "WEFT_EPEERDIED");
}

static void weft_codes_are_distinct_and_below_5000(void **state) {
  (void)state;
  for (size_t i = 0; i < NTABLE; i++) {
    assert_true(table[i].code < -5000);
    for (size_t j = i + 1; j < NTABLE; j++)
      assert_int_not_equal(table[i].code, table[j].code);
    /* libuv does not know them: never "Unknown system error". */
    assert_null(strstr(weft_strerror(table[i].code), "nknown"));
  }
}

static void uv_codes_pass_through(void **state) {
  (void)state;
  static const int codes[] = {UV_EAGAIN, UV_ENOMEM, UV_EINVAL, UV_ECANCELED,
                              UV_ENOENT, UV_EMSGSIZE, UV_EOF, UV_ECONNRESET,
                              UV_EPIPE, UV_EBUSY, UV_E2BIG};
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    assert_string_equal(weft_strerror(codes[i]), uv_strerror(codes[i]));
    assert_string_equal(weft_err_name(codes[i]), uv_err_name(codes[i]));
  }
  assert_string_equal(weft_err_name(WEFT_EAGAIN), "EAGAIN");
  assert_string_equal(weft_err_name(WEFT_ENOMEM), "ENOMEM");
  assert_string_equal(weft_err_name(UV_EOF), "EOF");
}

static void shared_codes_are_libuv_codes(void **state) {
  (void)state;
  assert_int_equal(WEFT_EAGAIN, UV_EAGAIN);
  assert_int_equal(WEFT_ENOMEM, UV_ENOMEM);
  assert_int_equal(WEFT_EINVAL, UV_EINVAL);
  assert_int_equal(WEFT_ECANCELED, UV_ECANCELED);
  assert_int_equal(WEFT_ENOENT, UV_ENOENT);
  assert_int_equal(WEFT_EMSGSIZE, UV_EMSGSIZE);
}

static void zero_and_unknown_codes(void **state) {
  (void)state;
  assert_string_equal(weft_err_name(0), "OK");
  assert_string_equal(weft_strerror(0), "success");
  static const int unknown[] = {-5000, -5999, -123456, 1, 42, INT32_MIN};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    assert_string_equal(weft_err_name(unknown[i]), "UNKNOWN");
    assert_string_equal(weft_strerror(unknown[i]), "unknown error");
  }
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(weft_codes_have_table_names_and_messages, no_leaks),
      cmocka_unit_test_teardown(weft_codes_are_distinct_and_below_5000, no_leaks),
      cmocka_unit_test_teardown(uv_codes_pass_through, no_leaks),
      cmocka_unit_test_teardown(shared_codes_are_libuv_codes, no_leaks),
      cmocka_unit_test_teardown(zero_and_unknown_codes, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
