/* test_msg.c: messages: builders and readers for every type, growth from the
 * inline area to the heap, weft_msg_view, the reader's cursor on untrusted and
 * truncated bytes at a guard page, the transfer list (buffers, sockets,
 * ports), the record helpers (maps that count their entries, WEFT_ENOKEY,
 * weft_msg_get_strcpy, items found by kind) and an allocation-failure sweep. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "msgread.h"
#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

static weft_msg_t *msg_new(void) {
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_non_null(m);
  return m;
}

static weft_msg_t *msg_raw(const void *p, size_t n) {
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_set_payload(m, p, n), 0);
  return m;
}

/* ---- building ------------------------------------------------------------ */

static void tiny_message_is_one_allocation(void **state) {
  (void)state;
  uint64_t calls = testutil_alloc_calls();
  weft_msg_t *m = msg_new();
  assert_ptr_equal(m->data, m->inline_data);
  assert_int_equal(weft_msg_put_map(m, 2), 0);
  assert_int_equal(weft_msg_put_u64(m, "seq", 7), 0);
  assert_int_equal(weft_msg_put_str(m, "tag", "hi"), 0);
  assert_int_equal(weft_msg_error(m), 0);
  assert_int_equal(testutil_alloc_calls(), calls + 1);
  assert_int_equal(testutil_alloc_outstanding(), 1);
  static const uint8_t want[] = {0x82, 0xa3, 's', 'e', 'q', 0x07, 0xa3, 't', 'a', 'g', 0xa2, 'h', 'i'};
  size_t n;
  const void *p = weft_msg_payload(m, &n);
  assert_int_equal(n, sizeof(want));
  assert_memory_equal(p, want, sizeof(want));
  assert_ptr_equal(m->data, m->inline_data);
  weft_msg_free(m);
  weft_msg_free(NULL);
  assert_int_equal(weft_msg_new(NULL), WEFT_EINVAL);
}

static const uint64_t u_values[] = {0, 1, 127, 128, 255, 256, 65535, 65536,
                                    UINT32_MAX, (uint64_t)UINT32_MAX + 1, UINT64_MAX};
static const int64_t i_values[] = {0, -1, -31, -32, -33, -127, -128, -129, -32768,
                                   -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
                                   INT64_MIN, INT64_MAX, 1, 200};
#define NU (sizeof(u_values) / sizeof(u_values[0]))
#define NI (sizeof(i_values) / sizeof(i_values[0]))

/* The builders write exactly what msgpack-c's packer writes. */
static void builders_match_msgpack_c(void **state) {
  (void)state;
  static const size_t sizes[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
  static const uint32_t counts[] = {0, 15, 16, 255, 256, 65535, 65536, UINT32_MAX};
  static const double doubles[] = {0.0, -0.0, 1.5, 1e300, -3.25};
  char *text = weft__malloc(65536);
  assert_non_null(text);
  memset(text, 'k', 65536);
  weft_msg_t *a = msg_new(), *b = msg_new();
  msgpack_packer *pk = weft_msg_packer(b);
  for (size_t i = 0; i < NU; i++) {
    weft_msg_put_u64(a, NULL, u_values[i]);
    msgpack_pack_uint64(pk, u_values[i]);
  }
  for (size_t i = 0; i < NI; i++) {
    weft_msg_put_i64(a, NULL, i_values[i]);
    msgpack_pack_int64(pk, i_values[i]);
  }
  for (size_t i = 0; i < sizeof(doubles) / sizeof(doubles[0]); i++) {
    weft_msg_put_f64(a, NULL, doubles[i]);
    msgpack_pack_double(pk, doubles[i]);
  }
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    weft_msg_put_strn(a, NULL, text, sizes[i]);
    msgpack_pack_str_with_body(pk, text, sizes[i]);
    weft_msg_put_bin(a, NULL, text, sizes[i]);
    msgpack_pack_bin_with_body(pk, text, sizes[i]);
  }
  for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
    weft_msg_put_array(a, NULL, counts[i]);
    msgpack_pack_array(pk, counts[i]);
    weft_msg_put_map(a, counts[i]);
    msgpack_pack_map(pk, counts[i]);
  }
  /* Keys of every header size, before each kind of value. */
  static const size_t key_sizes[] = {0, 31, 32, 300};
  for (size_t i = 0; i < sizeof(key_sizes) / sizeof(key_sizes[0]); i++) {
    char key[301];
    memset(key, 'q', key_sizes[i]);
    key[key_sizes[i]] = '\0';
    weft_msg_put_bool(a, key, true);
    weft_msg_put_bool(a, key, false);
    weft_msg_put_nil(a, key);
    weft_msg_put_u64(a, key, 1);
    for (int k = 0; k < 4; k++) {
      msgpack_pack_str_with_body(pk, key, key_sizes[i]);
      if (k == 0)
        msgpack_pack_true(pk);
      else if (k == 1)
        msgpack_pack_false(pk);
      else if (k == 2)
        msgpack_pack_nil(pk);
      else
        msgpack_pack_uint64(pk, 1);
    }
  }
  assert_int_equal(weft_msg_error(a), 0);
  assert_int_equal(weft_msg_error(b), 0);
  size_t na, nb;
  const void *pa = weft_msg_payload(a, &na), *pb = weft_msg_payload(b, &nb);
  assert_int_equal(na, nb);
  assert_memory_equal(pa, pb, na);
  weft_msg_free(a);
  weft_msg_free(b);
  weft__free(text);
}

static void builders_reject_null(void **state) {
  (void)state;
  assert_int_equal(weft_msg_put_map(NULL, 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_array(NULL, NULL, 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_u64(NULL, "k", 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_i64(NULL, "k", 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_f64(NULL, "k", 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_bool(NULL, "k", 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_nil(NULL, "k"), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_str(NULL, "k", "v"), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_strn(NULL, "k", "v", 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_bin(NULL, "k", "v", 1), WEFT_EINVAL);
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_put_str(m, "k", NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_strn(m, "k", NULL, 3), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_bin(m, "k", NULL, 3), WEFT_EINVAL);
  assert_int_equal(weft_msg_put_strn(m, NULL, NULL, 0), 0); /* empty is fine */
  assert_int_equal(weft_msg_error(NULL), WEFT_EINVAL);
  assert_null(weft_msg_packer(NULL));
  size_t n = 9;
  assert_null(weft_msg_payload(NULL, &n));
  assert_int_equal(n, 0);
  weft_msg_free(m);
}


static void round_trip_every_type_in_a_map(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  char key[16];
  static const char with_nul[] = {'a', 0, 'b'};
  static const uint8_t blob[] = {0, 1, 2, 0xff};
  assert_int_equal(weft_msg_put_map(m, (uint32_t)(NU + NI + 11)), 0);
  for (size_t i = 0; i < NU; i++) {
    snprintf(key, sizeof(key), "u%zu", i);
    assert_int_equal(weft_msg_put_u64(m, key, u_values[i]), 0);
  }
  for (size_t i = 0; i < NI; i++) {
    snprintf(key, sizeof(key), "i%zu", i);
    assert_int_equal(weft_msg_put_i64(m, key, i_values[i]), 0);
  }
  assert_int_equal(weft_msg_put_f64(m, "f", -2.5e300), 0);
  assert_int_equal(weft_msg_put_bool(m, "t", true), 0);
  assert_int_equal(weft_msg_put_bool(m, "no", false), 0);
  assert_int_equal(weft_msg_put_nil(m, "nil"), 0);
  assert_int_equal(weft_msg_put_str(m, "s", "hello"), 0);
  assert_int_equal(weft_msg_put_strn(m, "sn", with_nul, sizeof(with_nul)), 0);
  assert_int_equal(weft_msg_put_str(m, "", "empty key"), 0);
  assert_int_equal(weft_msg_put_bin(m, "bin", blob, sizeof(blob)), 0);
  assert_int_equal(weft_msg_put_bin(m, "nobin", NULL, 0), 0);
  assert_int_equal(weft_msg_put_array(m, "arr", 2), 0);
  assert_int_equal(weft_msg_put_u64(m, NULL, 1), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "two"), 0);
  assert_int_equal(weft_msg_put_u64(m, "last", 99), 0);
  assert_int_equal(weft_msg_error(m), 0);
  assert_true(m->len > WEFT__MSG_INLINE);

  for (size_t i = 0; i < NU; i++) {
    uint64_t u;
    snprintf(key, sizeof(key), "u%zu", i);
    assert_int_equal(weft_msg_get_u64(m, key, &u), 0);
    assert_true(u == u_values[i]);
  }
  for (size_t i = 0; i < NI; i++) {
    int64_t v;
    snprintf(key, sizeof(key), "i%zu", i);
    assert_int_equal(weft_msg_get_i64(m, key, &v), 0);
    assert_true(v == i_values[i]);
  }
  double f;
  bool b;
  const char *s;
  const void *p;
  size_t n;
  uint64_t u;
  assert_int_equal(weft_msg_get_f64(m, "f", &f), 0);
  assert_true(f == -2.5e300);
  assert_int_equal(weft_msg_get_bool(m, "t", &b), 0);
  assert_true(b);
  assert_int_equal(weft_msg_get_bool(m, "no", &b), 0);
  assert_false(b);
  assert_int_equal(weft_msg_get_bool(m, "nil", &b), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_str(m, "s", &s, &n), 0);
  assert_int_equal(n, 5);
  assert_memory_equal(s, "hello", 5);
  assert_int_equal(weft_msg_get_str(m, "sn", &s, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(s, with_nul, 3);
  assert_int_equal(weft_msg_get_str(m, "", &s, NULL), 0);
  assert_memory_equal(s, "empty key", 9);
  assert_int_equal(weft_msg_get_bin(m, "bin", &p, &n), 0);
  assert_int_equal(n, sizeof(blob));
  assert_memory_equal(p, blob, sizeof(blob));
  assert_int_equal(weft_msg_get_bin(m, "nobin", &p, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(weft_msg_get_u64(m, "arr", &u), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_u64(m, "last", &u), 0);
  assert_int_equal(u, 99);
  /* Strings point into the payload. */
  assert_int_equal(weft_msg_get_str(m, "s", &s, &n), 0);
  assert_true((const uint8_t *)s > m->data && (const uint8_t *)s < m->data + m->len);

  /* The same through msgpack-c. */
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(o->via.map.size, NU + NI + 11);
  const msgpack_object_kv *nil_kv = &o->via.map.ptr[NU + NI + 3];
  assert_memory_equal(nil_kv->key.via.str.ptr, "nil", 3);
  assert_int_equal(nil_kv->val.type, MSGPACK_OBJECT_NIL);
  const msgpack_object *arr = &o->via.map.ptr[NU + NI + 9].val;
  assert_int_equal(arr->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(arr->via.array.size, 2);
  assert_int_equal(arr->via.array.ptr[1].type, MSGPACK_OBJECT_STR);
  weft_msg_free(m);
}

static void top_level_values(void **state) {
  (void)state;
  for (size_t i = 0; i < NU; i++) {
    weft_msg_t *m = msg_new();
    uint64_t u;
    assert_int_equal(weft_msg_put_u64(m, NULL, u_values[i]), 0);
    assert_int_equal(weft_msg_get_u64(m, NULL, &u), 0);
    assert_true(u == u_values[i]);
    assert_int_equal(weft_msg_get_u64(m, "k", &u), WEFT_ETYPE); /* not a map */
    weft_msg_free(m);
  }
  for (size_t i = 0; i < NI; i++) {
    weft_msg_t *m = msg_new();
    int64_t v;
    assert_int_equal(weft_msg_put_i64(m, NULL, i_values[i]), 0);
    assert_int_equal(weft_msg_get_i64(m, NULL, &v), 0);
    assert_true(v == i_values[i]);
    weft_msg_free(m);
  }
  weft_msg_t *m = msg_new();
  double f;
  assert_int_equal(weft_msg_put_f64(m, NULL, 0.1), 0);
  assert_int_equal(weft_msg_get_f64(m, NULL, &f), 0);
  assert_true(f == 0.1);
  weft_msg_free(m);

  m = msg_new();
  bool b = false;
  assert_int_equal(weft_msg_put_bool(m, NULL, true), 0);
  assert_int_equal(weft_msg_get_bool(m, NULL, &b), 0);
  assert_true(b);
  weft_msg_free(m);

  m = msg_new();
  const char *s;
  size_t n;
  assert_int_equal(weft_msg_put_str(m, NULL, "top"), 0);
  assert_int_equal(weft_msg_get_str(m, NULL, &s, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(s, "top", 3);
  weft_msg_free(m);

  m = msg_new();
  const void *p;
  assert_int_equal(weft_msg_put_bin(m, NULL, "\x01\x02", 2), 0);
  assert_int_equal(weft_msg_get_bin(m, NULL, &p, &n), 0);
  assert_int_equal(n, 2);
  assert_memory_equal(p, "\x01\x02", 2);
  weft_msg_free(m);

  m = msg_new();
  assert_int_equal(weft_msg_put_nil(m, NULL), 0);
  assert_int_equal(weft_msg_get_bool(m, NULL, &b), WEFT_ETYPE);
  assert_int_equal(m->len, 1);
  assert_int_equal(m->data[0], 0xc0);
  weft_msg_free(m);
}

static void conversions(void **state) {
  (void)state;
  uint64_t u;
  int64_t i;
  double f;
  bool b;
  const char *s;
  const void *p;
  size_t n;
  /* float32 1.5 */
  weft_msg_t *m = msg_raw("\xca\x3f\xc0\x00\x00", 5);
  assert_int_equal(weft_msg_get_f64(m, NULL, &f), 0);
  assert_true(f == 1.5);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_i64(m, NULL, &i), WEFT_ETYPE);
  weft_msg_free(m);
  /* A positive value in a signed format reads as unsigned too. */
  m = msg_raw("\xd0\x05", 2);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), 0);
  assert_int_equal(u, 5);
  weft_msg_free(m);
  m = msg_raw("\xd3\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), 0);
  assert_true(u == (uint64_t)INT64_MAX);
  weft_msg_free(m);
  /* Negative: no u64. */
  m = msg_raw("\xff", 1);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_i64(m, NULL, &i), 0);
  assert_int_equal(i, -1);
  assert_int_equal(weft_msg_get_f64(m, NULL, &f), 0);
  assert_true(f == -1.0);
  weft_msg_free(m);
  /* u64 above INT64_MAX: no i64; INT64_MAX itself fits. */
  m = msg_raw("\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9);
  assert_int_equal(weft_msg_get_i64(m, NULL, &i), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_f64(m, NULL, &f), 0);
  assert_true(f == 9223372036854775808.0);
  weft_msg_free(m);
  m = msg_raw("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
  assert_int_equal(weft_msg_get_i64(m, NULL, &i), 0);
  assert_true(i == INT64_MAX);
  weft_msg_free(m);
  /* Other types never convert. */
  m = msg_raw("\xa1x", 2);
  assert_int_equal(weft_msg_get_bin(m, NULL, &p, &n), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_bool(m, NULL, &b), WEFT_ETYPE);
  weft_msg_free(m);
  m = msg_raw("\xc4\x01x", 3);
  assert_int_equal(weft_msg_get_str(m, NULL, &s, &n), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_f64(m, NULL, &f), WEFT_ETYPE);
  weft_msg_free(m);
  m = msg_raw("\xc3", 1);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_str(m, NULL, &s, &n), WEFT_ETYPE);
  weft_msg_free(m);
  m = msg_raw("\xd4\x01\x02", 3); /* fixext 1 */
  assert_int_equal(weft_msg_get_bin(m, NULL, &p, &n), WEFT_ETYPE);
  weft_msg_free(m);
  m = msg_raw("\x91\x01", 2);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  weft_msg_free(m);
}

static void readers_reject_null_and_garbage(void **state) {
  (void)state;
  uint64_t u;
  int64_t i;
  double f;
  bool b;
  const char *s;
  const void *p;
  size_t n;
  assert_int_equal(weft_msg_get_u64(NULL, NULL, &u), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_i64(NULL, NULL, &i), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_f64(NULL, NULL, &f), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_bool(NULL, NULL, &b), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_str(NULL, NULL, &s, &n), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_bin(NULL, NULL, &p, &n), WEFT_EINVAL);
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_get_u64(m, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_i64(m, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_f64(m, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_bool(m, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_str(m, NULL, NULL, &n), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_bin(m, NULL, NULL, &n), WEFT_EINVAL);
  /* Empty payload: not msgpack. */
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_EPROTO);
  assert_int_equal(weft_msg_get_u64(m, "k", &u), WEFT_EPROTO);
  /* 0xc1 is never used. */
  assert_int_equal(weft_msg_set_payload(m, "\xc1", 1), 0);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_EPROTO);
  /* A map whose entries are cut short. */
  assert_int_equal(weft_msg_set_payload(m, "\x82\xa1" "a\x01\xa1", 5), 0);
  assert_int_equal(weft_msg_get_u64(m, "a", &u), 0);
  assert_int_equal(weft_msg_get_u64(m, "b", &u), WEFT_EPROTO);
  /* Counts larger than the bytes left. */
  assert_int_equal(weft_msg_set_payload(m, "\xdd\xff\xff\xff\xff\x01", 6), 0);
  assert_int_equal(weft_msg_get_u64(m, "k", &u), WEFT_EPROTO);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_EPROTO);
  assert_int_equal(weft_msg_set_payload(m, "\xdf\x7f\xff\xff\xff\xa1k\x01", 8), 0);
  assert_int_equal(weft_msg_get_u64(m, "k", &u), WEFT_EPROTO);
  weft_msg_free(m);
}

static void key_lookup_rules(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  msgpack_packer *pk = weft_msg_packer(m);
  assert_int_equal(weft_msg_put_map(m, 7), 0);
  /* non-str keys: int, array, map, bin spelled like a key */
  msgpack_pack_int(pk, 5);
  msgpack_pack_str_with_body(pk, "int key", 7);
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, 1);
  msgpack_pack_map(pk, 1);
  msgpack_pack_nil(pk);
  msgpack_pack_nil(pk);
  msgpack_pack_true(pk);
  msgpack_pack_map(pk, 1);
  msgpack_pack_str_with_body(pk, "seq", 3);
  msgpack_pack_int(pk, 1);
  msgpack_pack_int(pk, 2);
  msgpack_pack_bin_with_body(pk, "seq", 3);
  msgpack_pack_int(pk, 3);
  assert_int_equal(weft_msg_put_u64(m, "se", 4), 0);
  assert_int_equal(weft_msg_put_u64(m, "seq", 5), 0);
  assert_int_equal(weft_msg_put_u64(m, "seq", 6), 0); /* duplicate: first wins */
  assert_int_equal(weft_msg_error(m), 0);
  uint64_t u;
  assert_int_equal(weft_msg_get_u64(m, "seq", &u), 0);
  assert_int_equal(u, 5);
  assert_int_equal(weft_msg_get_u64(m, "se", &u), 0);
  assert_int_equal(u, 4);
  assert_int_equal(weft_msg_get_u64(m, "s", &u), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_u64(m, "seqq", &u), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_u64(m, "", &u), WEFT_ENOKEY);
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->via.map.size, 7);
  weft_msg_free(m);

  m = msg_new();
  assert_int_equal(weft_msg_put_map(m, 0), 0);
  assert_int_equal(weft_msg_get_u64(m, "a", &u), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_u64(m, NULL, &u), WEFT_ETYPE);
  weft_msg_free(m);
}

static void growth_inline_to_heap(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  char key[16];
  assert_int_equal(weft_msg_put_map(m, 300), 0);
  uint32_t last_cap = m->cap;
  int grows = 0;
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof(key), "key%d", i);
    assert_int_equal(weft_msg_put_i64(m, key, -i * 1000), 0);
    if (m->cap != last_cap) {
      assert_true(m->cap >= 2 * last_cap); /* doubling */
      last_cap = m->cap;
      grows++;
    }
  }
  assert_true(m->data != m->inline_data);
  assert_true(grows >= 5 && grows <= 9);
  for (int i = 0; i < 300; i++) {
    int64_t v;
    snprintf(key, sizeof(key), "key%d", i);
    assert_int_equal(weft_msg_get_i64(m, key, &v), 0);
    assert_int_equal(v, -i * 1000);
  }
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->via.map.size, 300);
  assert_int_equal(o->via.map.ptr[299].val.via.i64, -299000);
  assert_int_equal(testutil_alloc_outstanding(), 3); /* struct, heap payload, view */
  weft_msg_free(m);

  /* Exactly at the boundary: WEFT__MSG_INLINE bytes stay inline. */
  m = msg_new();
  char fill[WEFT__MSG_INLINE];
  memset(fill, 'x', sizeof(fill));
  assert_int_equal(weft_msg_put_strn(m, NULL, fill, WEFT__MSG_INLINE - 2), 0);
  assert_int_equal(m->len, WEFT__MSG_INLINE);
  assert_ptr_equal(m->data, m->inline_data);
  assert_int_equal(weft_msg_put_nil(m, NULL), 0);
  assert_true(m->data != m->inline_data);
  assert_int_equal(m->len, WEFT__MSG_INLINE + 1);
  weft_msg_free(m);
}

static void long_strings_and_bins(void **state) {
  (void)state;
  static const size_t sizes[] = {31, 32, 255, 256, 65535, 65536, 200000};
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    size_t len = sizes[k];
    char *s = weft__malloc(len);
    assert_non_null(s);
    for (size_t i = 0; i < len; i++)
      s[i] = (char)('a' + i % 26);
    weft_msg_t *m = msg_new();
    assert_int_equal(weft_msg_put_map(m, 2), 0);
    assert_int_equal(weft_msg_put_strn(m, "s", s, len), 0);
    assert_int_equal(weft_msg_put_bin(m, "b", s, len), 0);
    const char *rs;
    const void *rb;
    size_t n;
    assert_int_equal(weft_msg_get_str(m, "s", &rs, &n), 0);
    assert_int_equal(n, len);
    assert_memory_equal(rs, s, len);
    assert_int_equal(weft_msg_get_bin(m, "b", &rb, &n), 0);
    assert_int_equal(n, len);
    assert_memory_equal(rb, s, len);
    weft_msg_free(m);
    weft__free(s);
  }
}

static void packer_writes_into_the_message(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  msgpack_packer *pk = weft_msg_packer(m);
  assert_non_null(pk);
  assert_int_equal(msgpack_pack_array(pk, 4), 0);
  assert_int_equal(msgpack_pack_int(pk, -3), 0);
  assert_int_equal(msgpack_pack_str_with_body(pk, "x", 1), 0);
  assert_int_equal(msgpack_pack_float(pk, 2.5f), 0);
  assert_int_equal(msgpack_pack_ext_with_body(pk, "abc", 3, 7), 0);
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(o->via.array.size, 4);
  assert_int_equal(o->via.array.ptr[0].via.i64, -3);
  assert_int_equal(o->via.array.ptr[2].type, MSGPACK_OBJECT_FLOAT32);
  assert_int_equal(o->via.array.ptr[3].type, MSGPACK_OBJECT_EXT);
  assert_int_equal(o->via.array.ptr[3].via.ext.type, 7);
  assert_int_equal(weft__mp_check(m->data, m->len, WEFT__MP_MAX_DEPTH), 0);
  weft_msg_free(m);
}

static void set_payload_copies(void **state) {
  (void)state;
  uint8_t src[3] = {0x92, 0x01, 0x02};
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_set_payload(m, src, 3), 0);
  src[1] = 0x05;
  size_t n;
  const uint8_t *p = weft_msg_payload(m, &n);
  assert_int_equal(n, 3);
  assert_int_equal(p[1], 0x01);
  assert_ptr_equal(p, m->inline_data);
  assert_int_equal(weft_msg_payload(m, NULL), p);

  uint8_t big[1000];
  memset(big, 0xc0, sizeof(big));
  big[0] = 0xdc; /* array16 of 999 nils */
  big[1] = 0x03;
  big[2] = 0xe5;
  assert_int_equal(weft_msg_set_payload(m, big, 1000), 0);
  assert_true(m->data != m->inline_data);
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->via.array.size, 997);
  /* A smaller payload reuses the block. */
  assert_int_equal(weft_msg_set_payload(m, src, 3), 0);
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->via.array.size, 2);
  assert_int_equal(o->via.array.ptr[0].via.u64, 5);
  /* Empty. */
  assert_int_equal(weft_msg_set_payload(m, NULL, 0), 0);
  weft_msg_payload(m, &n);
  assert_int_equal(n, 0);
  assert_int_equal(weft_msg_set_payload(m, NULL, 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_set_payload(NULL, src, 1), WEFT_EINVAL);

  /* Failure leaves the payload as it was. */
  assert_int_equal(weft_msg_set_payload(m, src, 3), 0);
  assert_int_equal(m->cap, 1000);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft_msg_set_payload(m, big, 1000), 0); /* fits: no allocation */
  assert_int_equal(weft_msg_set_payload(m, src, 3), 0);
  testutil_alloc_fail_after(0);
  uint8_t bigger[1001] = {0};
  assert_int_equal(weft_msg_set_payload(m, bigger, sizeof(bigger)), WEFT_ENOMEM);
  p = weft_msg_payload(m, &n);
  assert_int_equal(n, 3);
  assert_memory_equal(p, src, 3);
  weft_msg_free(m);
}

static void view_valid_invalid_trailing(void **state) {
  (void)state;
  const msgpack_object *o, *o2;
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO); /* empty */
  assert_int_equal(weft_msg_put_map(m, 1), 0);
  assert_int_equal(weft_msg_put_str(m, "k", "v"), 0);
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_non_null(m->view);
  assert_int_equal(weft_msg_view(m, &o2), 0); /* cached */
  assert_ptr_equal(o, o2);
  /* Strings point into the payload. */
  assert_true((const uint8_t *)o->via.map.ptr[0].val.via.str.ptr >= m->data);
  /* A second top-level object: the cache goes, the payload is refused. */
  assert_int_equal(weft_msg_put_nil(m, NULL), 0);
  assert_null(m->view);
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO);
  /* Replaced payload: decoded afresh. */
  assert_int_equal(weft_msg_set_payload(m, "\x07", 1), 0);
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_int_equal(o->via.u64, 7);
  assert_int_equal(weft_msg_set_payload(m, "\x07\x08", 2), 0); /* trailing byte */
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO);
  assert_int_equal(weft_msg_set_payload(m, "\xc1", 1), 0);
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO);
  assert_int_equal(weft_msg_set_payload(m, "\x92\x01", 2), 0); /* truncated */
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO);
  assert_int_equal(weft_msg_set_payload(m, "\xdd\xff\xff\xff\xff", 5), 0); /* huge count */
  assert_int_equal(weft_msg_view(m, &o), WEFT_EPROTO);
  assert_int_equal(weft_msg_view(m, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_view(NULL, &o), WEFT_EINVAL);
  weft_msg_free(m);
}

/* d nested one-element arrays around inner (a scalar, or an empty array). */
static size_t nest(uint8_t *buf, int d, uint8_t inner) {
  memset(buf, 0x91, (size_t)d);
  buf[d] = inner;
  return (size_t)d + 1;
}

static bool msgpack_c_accepts(const uint8_t *p, size_t n) {
  msgpack_zone *z = msgpack_zone_new(1024);
  msgpack_object obj;
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack((const char *)p, n, &off, z, &obj);
  msgpack_zone_free(z);
  return r == MSGPACK_UNPACK_SUCCESS;
}

static void view_depth_matches_msgpack_c(void **state) {
  (void)state;
  uint8_t buf[80];
  for (int d = 0; d <= 40; d++) {
    for (int k = 0; k < 2; k++) {
      size_t n = nest(buf, d, k == 0 ? 0x01 : 0x90);
      weft_msg_t *m = msg_raw(buf, n);
      const msgpack_object *o;
      int rc = weft_msg_view(m, &o);
      assert_int_equal(rc == 0, msgpack_c_accepts(buf, n));
      if (k == 0)
        assert_int_equal(rc == 0, d <= 32);
      weft_msg_free(m);
    }
  }
}

static void reader_depth_limit(void **state) {
  (void)state;
  uint8_t buf[200];
  size_t n = nest(buf, 64, 0x01);
  weft__mp_cur_t c = {buf, buf + n};
  assert_int_equal(weft__mp_skip(&c, 1, WEFT__MP_MAX_DEPTH), 0);
  assert_ptr_equal(c.p, buf + n);
  n = nest(buf, 65, 0x01);
  c = (weft__mp_cur_t){buf, buf + n};
  assert_int_equal(weft__mp_skip(&c, 1, WEFT__MP_MAX_DEPTH), WEFT_EPROTO);
  assert_int_equal(weft__mp_check(buf, n, 1000), WEFT_EPROTO); /* clamped to 64 */

  /* {"a": <d nested arrays>, "b": 1}: "b" is found past 63 levels, not 64. */
  for (int d = 62; d <= 65; d++) {
    buf[0] = 0x82;
    buf[1] = 0xa1;
    buf[2] = 'a';
    n = 3 + nest(buf + 3, d, 0x01);
    memcpy(buf + n, "\xa1" "b\x01", 3);
    n += 3;
    uint64_t u = 0;
    int rc = weft__mp_get_u64(buf, n, "b", &u);
    if (d <= 63) {
      assert_int_equal(rc, 0);
      assert_int_equal(u, 1);
    } else {
      assert_int_equal(rc, WEFT_EPROTO);
    }
    assert_int_equal(weft__mp_get_u64(buf, n, "a", &u), WEFT_ETYPE);
  }
}

/* ---- the cursor on truncated bytes at a guard page ------------------------ */

enum { Q_U64, Q_I64, Q_F64, Q_BOOL, Q_STR, Q_BIN, Q_KINDS };

typedef struct {
  int rc;
  uint64_t bits;  /* the value (doubles by their bits) or the offset of str/bin */
  size_t len;
} answer_t;

static answer_t ask(const uint8_t *data, size_t len, const char *key, int kind) {
  answer_t a = {0, 0, 0};
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  const char *s = NULL;
  const void *p = NULL;
  switch (kind) {
  case Q_U64: a.rc = weft__mp_get_u64(data, len, key, &u); a.bits = u; break;
  case Q_I64: a.rc = weft__mp_get_i64(data, len, key, &i); a.bits = (uint64_t)i; break;
  case Q_F64: a.rc = weft__mp_get_f64(data, len, key, &f); memcpy(&a.bits, &f, 8); break;
  case Q_BOOL: a.rc = weft__mp_get_bool(data, len, key, &b); a.bits = b; break;
  case Q_STR:
    a.rc = weft__mp_get_str(data, len, key, &s, &a.len);
    a.bits = a.rc == 0 ? (uint64_t)((const uint8_t *)s - data) : 0;
    break;
  default:
    a.rc = weft__mp_get_bin(data, len, key, &p, &a.len);
    a.bits = a.rc == 0 ? (uint64_t)((const uint8_t *)p - data) : 0;
    break;
  }
  if (a.rc != 0)
    a.bits = a.len = 0;
  return a;
}

static answer_t ask_msg(const weft_msg_t *m, const char *key, int kind) {
  answer_t a = {0, 0, 0};
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  const char *s = NULL;
  const void *p = NULL;
  switch (kind) {
  case Q_U64: a.rc = weft_msg_get_u64(m, key, &u); a.bits = u; break;
  case Q_I64: a.rc = weft_msg_get_i64(m, key, &i); a.bits = (uint64_t)i; break;
  case Q_F64: a.rc = weft_msg_get_f64(m, key, &f); memcpy(&a.bits, &f, 8); break;
  case Q_BOOL: a.rc = weft_msg_get_bool(m, key, &b); a.bits = b; break;
  case Q_STR:
    a.rc = weft_msg_get_str(m, key, &s, &a.len);
    a.bits = a.rc == 0 ? (uint64_t)((const uint8_t *)s - m->data) : 0;
    break;
  default:
    a.rc = weft_msg_get_bin(m, key, &p, &a.len);
    a.bits = a.rc == 0 ? (uint64_t)((const uint8_t *)p - m->data) : 0;
    break;
  }
  if (a.rc != 0)
    a.bits = a.len = 0;
  return a;
}

static const char *const rich_keys[] = {NULL, "u", "neg", "big", "f", "f32", "t",
                                        "s", "s16", "bin", "arr", "map", "ext",
                                        "ext8", "nil", "after", "missing"};
#define NKEYS (sizeof(rich_keys) / sizeof(rich_keys[0]))

/* A payload with every kind of value, nested containers and ext types. */
static weft_msg_t *rich_payload(void) {
  weft_msg_t *m = msg_new();
  msgpack_packer *pk = weft_msg_packer(m);
  char s16[300];
  memset(s16, 'q', sizeof(s16));
  weft_msg_put_map(m, 16);
  weft_msg_put_u64(m, "u", 300);
  weft_msg_put_i64(m, "neg", -40000);
  weft_msg_put_u64(m, "big", UINT64_MAX);
  weft_msg_put_f64(m, "f", 3.25);
  msgpack_pack_str_with_body(pk, "f32", 3);
  msgpack_pack_float(pk, -0.5f);
  weft_msg_put_bool(m, "t", true);
  weft_msg_put_str(m, "s", "string");
  weft_msg_put_strn(m, "s16", s16, sizeof(s16));
  weft_msg_put_bin(m, "bin", "\x00\x01\x02", 3);
  weft_msg_put_array(m, "arr", 3);
  weft_msg_put_u64(m, NULL, 1);
  msgpack_pack_map(pk, 1);
  msgpack_pack_int(pk, 2);
  msgpack_pack_array(pk, 0);
  weft_msg_put_str(m, NULL, "x");
  weft_msg_put_map(m, 0); /* an entry whose key is an empty map */
  weft_msg_put_u64(m, NULL, 9);
  msgpack_pack_str_with_body(pk, "map", 3);
  msgpack_pack_map(pk, 1);
  msgpack_pack_str_with_body(pk, "inner", 5);
  msgpack_pack_double(pk, 1e-9);
  msgpack_pack_str_with_body(pk, "ext", 3);
  msgpack_pack_ext_with_body(pk, "\x05", 1, 3);
  msgpack_pack_str_with_body(pk, "ext8", 4);
  msgpack_pack_ext_with_body(pk, "abcdefghijklmnopq", 17, -2);
  weft_msg_put_nil(m, "nil");
  weft_msg_put_u64(m, "after", 77);
  assert_int_equal(weft_msg_error(m), 0);
  assert_int_equal(weft__mp_check(m->data, m->len, WEFT__MP_MAX_DEPTH), 0);
  return m;
}

static void rich_payload_is_what_we_think(void **state) {
  (void)state;
  weft_msg_t *m = rich_payload();
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0);
  assert_int_equal(o->via.map.size, 16);
  uint64_t u;
  double f;
  assert_int_equal(weft_msg_get_u64(m, "after", &u), 0);
  assert_int_equal(u, 77);
  assert_int_equal(weft_msg_get_f64(m, "f32", &f), 0);
  assert_true(f == -0.5);
  assert_int_equal(weft_msg_get_u64(m, "missing", &u), WEFT_ENOKEY);
  weft_msg_free(m);
}

static void truncated_prefixes_at_guard_page(void **state) {
  (void)state;
  weft_msg_t *full = rich_payload();
  answer_t want[NKEYS][Q_KINDS];
  for (size_t k = 0; k < NKEYS; k++)
    for (int q = 0; q < Q_KINDS; q++)
      want[k][q] = ask(full->data, full->len, rich_keys[k], q);
  assert_int_equal(want[1][Q_U64].rc, 0); /* "u" */
  assert_int_equal(want[NKEYS - 1][Q_U64].rc, WEFT_ENOKEY);

  int answered = 0;
  for (size_t len = 0; len <= full->len; len++) {
    testutil_guard_t g;
    testutil_guard_init(&g, full->data, len);
    assert_int_equal(weft__mp_check(g.bytes, len, WEFT__MP_MAX_DEPTH) == 0, len == full->len);
    weft__mp_cur_t c = {g.bytes, g.bytes + len};
    weft__mp_val_t v;
    while (c.p < c.end && weft__mp_next(&c, &v) == 0)
      ; /* header by header, never past the end */
    for (size_t k = 0; k < NKEYS; k++) {
      for (int q = 0; q < Q_KINDS; q++) {
        answer_t a = ask(g.bytes, len, rich_keys[k], q);
        if (a.rc == 0) {
          answered++;
          assert_int_equal(want[k][q].rc, 0);
          assert_true(a.bits == want[k][q].bits);
          assert_int_equal(a.len, want[k][q].len);
        } else if (len < full->len) {
          assert_true(a.rc == WEFT_EPROTO || a.rc == want[k][q].rc);
        } else {
          assert_int_equal(a.rc, want[k][q].rc);
        }
      }
    }
    /* The public readers on a copy of the same prefix. */
    weft_msg_t *m = msg_raw(g.bytes, len);
    for (size_t k = 0; k < NKEYS; k++) {
      for (int q = 0; q < Q_KINDS; q++) {
        answer_t a = ask_msg(m, rich_keys[k], q);
        answer_t b = ask(g.bytes, len, rich_keys[k], q);
        assert_int_equal(a.rc, b.rc);
        assert_true(a.bits == b.bits);
        assert_int_equal(a.len, b.len);
      }
    }
    const msgpack_object *o;
    assert_int_equal(weft_msg_view(m, &o) == 0, len == full->len);
    weft_msg_free(m);
    testutil_guard_fini(&g);
  }
  assert_true(answered > 0);
  weft_msg_free(full);
}

/* Every one- and two-byte payload, at a guard page. */
static void every_short_payload_at_guard_page(void **state) {
  (void)state;
  testutil_guard_t g;
  testutil_guard_init(&g, "\0\0", 2);
  for (int b0 = 0; b0 < 256; b0++) {
    g.bytes[1] = (uint8_t)b0;
    const uint8_t *one = g.bytes + 1;
    bool single = b0 <= 0x80 || b0 == 0x90 || b0 == 0xa0 || b0 == 0xc0 || b0 == 0xc2 ||
                  b0 == 0xc3 || b0 >= 0xe0;
    assert_int_equal(weft__mp_check(one, 1, WEFT__MP_MAX_DEPTH) == 0, single);
    uint64_t u;
    weft__mp_get_u64(one, 1, "k", &u);
    weft__mp_get_u64(one, 1, NULL, &u);
    for (int b1 = 0; b1 < 256; b1++) {
      g.bytes[0] = (uint8_t)b0;
      g.bytes[1] = (uint8_t)b1;
      weft__mp_check(g.bytes, 2, WEFT__MP_MAX_DEPTH);
      weft__mp_get_u64(g.bytes, 2, "k", &u);
      weft__mp_get_u64(g.bytes, 2, "", &u);
      weft__mp_get_u64(g.bytes, 2, NULL, &u);
      const char *s;
      size_t n;
      if (weft__mp_get_str(g.bytes, 2, NULL, &s, &n) == 0)
        assert_true((const uint8_t *)s + n <= g.bytes + 2);
    }
  }
  testutil_guard_fini(&g);
}

/* Headers whose lengths or counts point past the end. */
static void lengths_past_the_end(void **state) {
  (void)state;
  static const struct {
    const char *bytes;
    size_t len;
  } cases[] = {
      {"\xa5" "abcd", 5},                  /* fixstr 5, 4 bytes */
      {"\xd9\x05" "abcd", 6},              /* str8 */
      {"\xda\x00\x05" "abcd", 7},          /* str16 */
      {"\xdb\x00\x00\x00\x05" "abcd", 9},  /* str32 */
      {"\xdb\xff\xff\xff\xff" "abcd", 9},  /* str32, 4 GiB */
      {"\xc4\x05" "abcd", 6},              /* bin8 */
      {"\xc5\x00\x05" "abcd", 7},          /* bin16 */
      {"\xc6\xff\xff\xff\xff" "abcd", 9},  /* bin32 */
      {"\xc7\x05\x01" "abcd", 7},          /* ext8 */
      {"\xc8\x00\x05\x01" "abcd", 8},      /* ext16 */
      {"\xc9\xff\xff\xff\xff\x01", 6},     /* ext32 */
      {"\xd8\x01" "abcd", 6},              /* fixext16 */
      {"\xcf\x00\x00\x00", 4},             /* uint64 cut */
      {"\xcb\x00", 2},                     /* float64 cut */
      {"\xdc\x00\x05\x01\x02", 5},         /* array16 of 5, 2 there */
      {"\xde\x00\x02\xa1k\x01", 6},        /* map16 of 2, 1 there */
      {"\x8f\xa1k\x01", 4},                /* fixmap 15, 1 there */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    testutil_guard_t g;
    testutil_guard_init(&g, cases[i].bytes, cases[i].len);
    assert_int_equal(weft__mp_check(g.bytes, g.len, WEFT__MP_MAX_DEPTH), WEFT_EPROTO);
    weft__mp_cur_t c = {g.bytes, g.bytes + g.len};
    assert_int_equal(weft__mp_skip(&c, 1, WEFT__MP_MAX_DEPTH), WEFT_EPROTO);
    assert_true(c.p <= c.end);
    const char *s;
    size_t n;
    int rc = weft__mp_get_str(g.bytes, g.len, NULL, &s, &n);
    assert_true(rc == WEFT_EPROTO || rc == WEFT_ETYPE);
    testutil_guard_fini(&g);
  }
  assert_int_equal(weft__mp_check(NULL, 0, 64), WEFT_EPROTO);
  weft__mp_val_t v;
  assert_int_equal(weft__mp_find(NULL, 0, NULL, &v), WEFT_EPROTO);
}

/* ---- transfer list --------------------------------------------------------- */

static void owned_buffer_moves_into_the_message(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  weft_buf_t *b, *got;
  assert_int_equal(weft_buf_new(&b, 100), 0);
  void *bytes = weft_buf_ptr(b);
  assert_int_equal(weft_msg_add_buf(m, b), 0);
  assert_true(weft_buf_is_detached(b));
  assert_int_equal(weft_msg_add_buf(m, b), WEFT_EDETACHED);
  void *p;
  size_t n;
  assert_int_equal(weft_buf_bytes(b, &p, &n), WEFT_EDETACHED);
  assert_int_equal(weft_msg_xfer_count(m), 1);
  assert_int_equal(weft_msg_xfer_kind(m, 0), WEFT_XFER_BUF);
  assert_int_equal(weft_msg_xfer_kind(m, 1), 0);
  assert_int_equal(weft__msg_weight(m), 100);
  assert_int_equal(weft_msg_put_u64(m, NULL, 1000), 0);
  assert_int_equal(weft__msg_weight(m), 103);

  uv_os_sock_t fd;
  assert_int_equal(weft_msg_take_socket(m, 0, &fd), WEFT_ETYPE);
  assert_int_equal(weft_msg_take_buf(m, 1, &got), WEFT_ENOENT);
  assert_int_equal(weft_msg_take_buf(m, 0, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_take_buf(NULL, 0, &got), WEFT_EINVAL);
  assert_int_equal(weft_msg_take_buf(m, 0, &got), 0);
  assert_ptr_equal(weft_buf_ptr(got), bytes);
  assert_int_equal(weft_buf_len(got), 100);
  assert_int_equal(weft_msg_take_buf(m, 0, &got), WEFT_ENOENT); /* taken */
  assert_int_equal(weft_msg_xfer_kind(m, 0), 0);
  assert_int_equal(weft_msg_xfer_count(m), 1);
  assert_int_equal(weft__msg_weight(m), 3);
  weft_msg_free(m);
  weft_buf_free(got);
  weft_buf_free(b);

  assert_int_equal(weft_msg_add_buf(NULL, b), WEFT_EINVAL);
  m = msg_new();
  assert_int_equal(weft_msg_add_buf(m, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_xfer_count(NULL), 0);
  assert_int_equal(weft_msg_xfer_kind(NULL, 0), 0);
  weft_msg_free(m);
}

static void message_frees_what_it_still_holds(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  weft_buf_t *shared;
  assert_int_equal(weft_buf_new_shared(&shared, 16), 0);
  assert_int_equal(weft_msg_add_buf(m, shared), 0);
  assert_false(weft_buf_is_detached(shared));
  assert_int_equal(weft_buf_refcount(shared), 2);
  assert_int_equal(weft__msg_weight(m), 0); /* shared bytes are not counted */
  for (int i = 0; i < 9; i++) { /* the list grows past its first 2 slots */
    weft_buf_t *b;
    assert_int_equal(weft_buf_new(&b, 10), 0);
    assert_int_equal(weft_msg_add_buf(m, b), 0);
    weft_buf_free(b);
  }
  assert_int_equal(weft_msg_xfer_count(m), 10);
  assert_true(m->capxfer >= 10);
  assert_int_equal(weft__msg_weight(m), 90);
  weft_msg_free(m);
  assert_int_equal(weft_buf_refcount(shared), 1);
  weft_buf_free(shared);
}

static bool fd_is_open(int fd) {
  return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void sockets_travel_and_are_closed(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_add_socket(m, -1), WEFT_EINVAL);
  assert_int_equal(weft_msg_add_socket(NULL, sv[0]), WEFT_EINVAL);
  assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
  assert_int_equal(weft_msg_add_socket(m, sv[1]), 0);
  assert_int_equal(weft_msg_xfer_kind(m, 1), WEFT_XFER_SOCKET);
  weft_buf_t *b;
  assert_int_equal(weft_msg_take_buf(m, 0, &b), WEFT_ETYPE);
  uv_os_sock_t fd;
  assert_int_equal(weft_msg_take_socket(m, 1, &fd), 0);
  assert_int_equal(fd, sv[1]);
  assert_int_equal(weft_msg_take_socket(m, 1, &fd), WEFT_ENOENT);
  weft_msg_free(m);
  assert_false(fd_is_open(sv[0])); /* closed with the message */
  assert_true(fd_is_open(sv[1]));  /* taken: ours */
  close(sv[1]);
}

typedef struct {
  int closes;
  int reason;
} close_log_t;

static void on_port_close(weft_port_t *port, const weft_port_close_info_t *info) {
  close_log_t *log = weft_port_data(port);
  log->closes++;
  log->reason = info->reason;
}

static void on_port_message(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_free(msg);
}

static void ports_travel_and_are_closed(void **state) {
  (void)state;
  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *ports[2], *other[2], *got;
  close_log_t log = {0, 0};
  assert_int_equal(weft_channel_new(ctx, ports), 0);
  assert_int_equal(weft_channel_new(ctx, other), 0);
  weft_port_set_data(ports[1], &log);
  weft_port_on_close(ports[1], on_port_close);
  assert_int_equal(weft_port_start(ports[1], on_port_message), 0); /* keeps the loop up */

  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_add_port(m, ports[0]), 0);
  assert_int_equal(weft_msg_add_port(m, ports[0]), WEFT_EINVAL); /* already in a message */
  assert_int_equal(weft_msg_add_port(NULL, other[0]), WEFT_EINVAL);
  assert_int_equal(weft_msg_add_port(m, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_xfer_kind(m, 0), WEFT_XFER_PORT);
  assert_true(weft__msg_carries_port(m, ports[0], NULL));
  assert_true(weft__msg_carries_port(m, NULL, ports[0]));
  assert_false(weft__msg_carries_port(m, other[0], other[1]));
  assert_int_equal(weft_port_post(ports[1], m), WEFT_ESELF);
  weft_buf_t *b;
  assert_int_equal(weft_msg_take_buf(m, 0, &b), WEFT_ETYPE);
  /* Taken back on this thread's context, then sent again. */
  assert_int_equal(weft_msg_take_port(m, 0, &got), 0);
  assert_ptr_equal(got, ports[0]);
  assert_int_equal(weft_msg_take_port(m, 0, &got), WEFT_ENOENT);
  assert_false(weft__msg_carries_port(m, ports[0], ports[1]));
  assert_int_equal(weft_msg_add_port(m, ports[0]), 0);
  /* Freeing the message closes the port it still holds; the peer sees it. */
  weft_msg_free(m);
  weft_port_close(other[0]);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(log.closes, 1);
  assert_int_equal(log.reason, WEFT_ECLOSED);
  weft_runtime_free(rt);
}

/* ---- records: counted maps, missing keys, copies, items by kind ------------ */

static void counted_map_counts_its_entries(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_put_u64(m, "seq", 7), 0);
  assert_int_equal(weft_msg_begin_map(m, "inner"), 0); /* nested, with a key */
  assert_int_equal(weft_msg_put_str(m, "a", "x"), 0);
  assert_int_equal(weft_msg_put_array(m, "arr", 2), 0);
  assert_int_equal(weft_msg_begin_map(m, NULL), 0); /* an empty map as an element */
  assert_int_equal(weft_msg_end_map(m), 0);
  assert_int_equal(weft_msg_put_u64(m, NULL, 3), 0);
  assert_int_equal(weft_msg_end_map(m), 0);
  for (int i = 0; i < 20; i++) { /* past fixmap's 15, and out of the inline area */
    char key[8];
    snprintf(key, sizeof(key), "k%d", i);
    assert_int_equal(weft_msg_put_i64(m, key, -i), 0);
  }
  msgpack_pack_str_with_body(weft_msg_packer(m), "pk", 2); /* the packer counts too */
  msgpack_pack_true(weft_msg_packer(m));
  assert_int_equal(weft_msg_end_map(m), 0);
  assert_int_equal(weft_msg_error(m), 0);
  assert_int_equal(m->open_map, 0);
  assert_int_equal(m->data[0], 0xdf); /* map32 */
  assert_int_equal(weft__mp_check(m->data, m->len, WEFT__MP_MAX_DEPTH), 0);

  const msgpack_object *o;
  assert_int_equal(weft_msg_view(m, &o), 0); /* msgpack-c agrees */
  assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(o->via.map.size, 23);
  const msgpack_object *inner = &o->via.map.ptr[1].val;
  assert_int_equal(inner->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(inner->via.map.size, 2);
  const msgpack_object *arr = &inner->via.map.ptr[1].val;
  assert_int_equal(arr->via.array.size, 2);
  assert_int_equal(arr->via.array.ptr[0].type, MSGPACK_OBJECT_MAP);
  assert_int_equal(arr->via.array.ptr[0].via.map.size, 0);
  uint64_t u;
  int64_t i64;
  bool b;
  assert_int_equal(weft_msg_get_u64(m, "seq", &u), 0);
  assert_int_equal(u, 7);
  assert_int_equal(weft_msg_get_i64(m, "k19", &i64), 0);
  assert_int_equal(i64, -19);
  assert_int_equal(weft_msg_get_bool(m, "pk", &b), 0);
  assert_true(b);
  weft_msg_free(m);

  /* An empty record, and set_payload forgets an open map. */
  m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_end_map(m), 0);
  assert_int_equal(weft_msg_get_u64(m, "x", &u), WEFT_ENOKEY);
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_set_payload(m, "\x80", 1), 0);
  assert_int_equal(m->open_map, 0);
  assert_int_equal(weft_msg_end_map(m), WEFT_EINVAL);
  weft_msg_free(m);
}

static void counted_map_mistakes(void **state) {
  (void)state;
  assert_int_equal(weft_msg_begin_map(NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_end_map(NULL), WEFT_EINVAL);
  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_end_map(m), WEFT_EINVAL); /* none open */
  assert_int_equal(weft_msg_error(m), 0);
  /* A key without its value: the end says so, and so does every later use. */
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_put_u64(m, "a", 1), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "dangling"), 0);
  assert_int_equal(weft_msg_end_map(m), WEFT_ECOUNT);
  assert_int_equal(weft_msg_error(m), WEFT_ECOUNT);
  assert_int_equal(weft_msg_put_u64(m, "b", 2), WEFT_ECOUNT);

  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_port_t *ports[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), ports), 0);
  assert_int_equal(weft_port_post(ports[0], m), WEFT_ECOUNT); /* still ours */
  weft_msg_free(m);

  /* A map begun and never ended: refused at the post, not at the reader. */
  m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_put_u64(m, "a", 1), 0);
  assert_int_equal(weft_msg_error(m), 0);
  assert_int_equal(weft_port_post(ports[0], m), WEFT_ECOUNT);
  assert_int_equal(weft_msg_end_map(m), 0); /* fixed: now it goes */
  assert_int_equal(weft_port_post(ports[0], m), 0);
  weft_msg_t *got;
  assert_int_equal(weft_port_receive(ports[1], &got), 0);
  uint64_t u;
  assert_int_equal(weft_msg_get_u64(got, "a", &u), 0);
  assert_int_equal(u, 1);
  weft_msg_free(got);

  /* Nested: an end closes the innermost open map only; the outer one stays
   * open (and the post refuses it) until its own end. */
  m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  assert_int_equal(weft_msg_begin_map(m, "in"), 0);
  assert_int_equal(weft_msg_end_map(m), 0); /* the inner one */
  assert_int_equal(weft_port_post(ports[0], m), WEFT_ECOUNT); /* outer still open */
  assert_int_equal(weft_msg_end_map(m), 0);
  assert_int_equal(weft_msg_end_map(m), WEFT_EINVAL);
  assert_int_equal(weft_port_post(ports[0], m), 0);
  weft_port_close(ports[0]);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(weft_runtime_free(rt), 0);
}

static void missing_key_is_enokey(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, "name", "weft");
  uint64_t u;
  int64_t i;
  double f;
  bool b;
  const char *s;
  const void *p;
  size_t n;
  char buf[8];
  assert_int_equal(weft_msg_get_u64(m, "nope", &u), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_i64(m, "nope", &i), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_f64(m, "nope", &f), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_bool(m, "nope", &b), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_str(m, "nope", &s, &n), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_bin(m, "nope", &p, &n), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_strcpy(m, "nope", buf, sizeof(buf), &n), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_u64(m, "name", &u), WEFT_ETYPE); /* there, other type */
  assert_string_equal(weft_strerror(WEFT_ENOKEY), "message has no field with that key");
  weft_msg_free(m);
}

static void strcpy_reader(void **state) {
  (void)state;
  weft_msg_t *m = msg_new();
  weft_msg_put_map(m, 3);
  weft_msg_put_str(m, "name", "weft");
  weft_msg_put_str(m, "empty", "");
  weft_msg_put_u64(m, "n", 5);
  char buf[8];
  size_t len = 99;
  assert_int_equal(weft_msg_get_strcpy(m, "name", buf, sizeof(buf), &len), 0);
  assert_string_equal(buf, "weft");
  assert_int_equal(len, 4);
  assert_int_equal(weft_msg_get_strcpy(m, "name", buf, 5, NULL), 0); /* exactly fits */
  assert_string_equal(buf, "weft");
  memset(buf, 'z', sizeof(buf));
  assert_int_equal(weft_msg_get_strcpy(m, "name", buf, 4, &len), UV_ENOBUFS);
  assert_string_equal(buf, "wef"); /* truncated, still terminated */
  assert_int_equal(len, 4);        /* what it would need, less the NUL */
  assert_int_equal(buf[4], 'z');   /* nothing written past cap */
  assert_int_equal(weft_msg_get_strcpy(m, "name", buf, 1, &len), UV_ENOBUFS);
  assert_string_equal(buf, "");
  assert_int_equal(weft_msg_get_strcpy(m, "empty", buf, 1, &len), 0);
  assert_string_equal(buf, "");
  assert_int_equal(len, 0);
  strcpy(buf, "old");
  assert_int_equal(weft_msg_get_strcpy(m, "n", buf, sizeof(buf), &len), WEFT_ETYPE);
  assert_string_equal(buf, "");
  assert_int_equal(weft_msg_get_strcpy(m, "name", buf, 0, &len), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_strcpy(m, "name", NULL, 4, &len), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_strcpy(NULL, "name", buf, 4, &len), WEFT_EINVAL);
  weft_msg_free(m);

  m = msg_new();
  weft_msg_put_str(m, NULL, "top level"); /* key NULL: the top-level value */
  char big[32];
  assert_int_equal(weft_msg_get_strcpy(m, NULL, big, sizeof(big), &len), 0);
  assert_string_equal(big, "top level");
  weft_msg_free(m);
}

static void items_found_by_kind(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  weft_msg_t *m = msg_new();
  weft_buf_t *b1, *b2, *got;
  assert_int_equal(weft_buf_new(&b1, 10), 0);
  assert_int_equal(weft_buf_new(&b2, 20), 0);
  assert_int_equal(weft_msg_add_socket(m, sv[0]), 0); /* 0 */
  assert_int_equal(weft_msg_add_buf(m, b1), 0);       /* 1 */
  assert_int_equal(weft_msg_add_socket(m, sv[1]), 0); /* 2 */
  assert_int_equal(weft_msg_add_buf(m, b2), 0);       /* 3 */
  size_t i = 99;
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &i), 0);
  assert_int_equal(i, 1);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 1, &i), 0);
  assert_int_equal(i, 3);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 2, &i), WEFT_ENOENT);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_SOCKET, 1, &i), 0);
  assert_int_equal(i, 2);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_PORT, 0, &i), WEFT_ENOENT);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_find_xfer(NULL, WEFT_XFER_BUF, 0, &i), WEFT_EINVAL);
  /* Taking the first buffer: nth 0 is now the next one left. */
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &i), 0);
  assert_int_equal(weft_msg_take_buf(m, i, &got), 0);
  assert_int_equal(weft_buf_len(got), 10);
  weft_buf_free(got);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &i), 0);
  assert_int_equal(i, 3);
  assert_int_equal(weft_msg_take_buf(m, i, &got), 0);
  assert_int_equal(weft_buf_len(got), 20);
  weft_buf_free(got);
  assert_int_equal(weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &i), WEFT_ENOENT);
  weft_msg_free(m); /* closes both sockets */
  weft_buf_free(b1);
  weft_buf_free(b2);
}

/* A record names its items by key: the reader takes "image" and "logo" by
 * name whatever their positions, after a post through a channel. */
static void items_found_by_key(void **state) {
  (void)state;
  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_port_t *ports[2], *carried[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), ports), 0);
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), carried), 0);
  weft_buf_t *logo, *image, *got;
  assert_int_equal(weft_buf_new(&logo, 10), 0);
  assert_int_equal(weft_buf_new(&image, 20), 0);

  weft_msg_t *m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  size_t i = weft_msg_xfer_count(m);
  assert_int_equal(weft_msg_add_port(m, carried[0]), 0); /* 0 */
  assert_int_equal(weft_msg_put_xfer(m, "reply_to", i), 0);
  assert_int_equal(weft_msg_add_buf(m, logo), 0);        /* 1 */
  i = weft_msg_xfer_count(m);
  assert_int_equal(weft_msg_add_buf(m, image), 0);       /* 2 */
  assert_int_equal(weft_msg_put_xfer(m, "image", i), 0);
  assert_int_equal(weft_msg_put_xfer(m, "logo", 1), 0);
  assert_int_equal(weft_msg_put_u64(m, "n", 7), 0);
  assert_int_equal(weft_msg_end_map(m), 0);
  assert_int_equal(weft_port_post(ports[0], m), 0);

  weft_msg_t *r;
  assert_int_equal(weft_port_receive(ports[1], &r), 0);
  assert_int_equal(weft_msg_get_xfer(r, "image", &i), 0);
  assert_int_equal(i, 2);
  assert_int_equal(weft_msg_take_buf(r, i, &got), 0);
  assert_int_equal(weft_buf_len(got), 20);
  weft_buf_free(got);
  assert_int_equal(weft_msg_get_xfer(r, "image", &i), WEFT_ENOENT); /* taken */
  assert_int_equal(weft_msg_get_xfer(r, "logo", &i), 0);
  assert_int_equal(weft_msg_take_port(r, i, &carried[0]), WEFT_ETYPE); /* the take checks the kind */
  assert_int_equal(weft_msg_take_buf(r, i, &got), 0);
  assert_int_equal(weft_buf_len(got), 10);
  weft_buf_free(got);
  assert_int_equal(weft_msg_get_xfer(r, "reply_to", &i), 0);
  assert_int_equal(weft_msg_xfer_kind(r, i), WEFT_XFER_PORT);
  assert_int_equal(weft_msg_get_xfer(r, "n", &i), WEFT_ENOENT);       /* 7: no such item */
  assert_int_equal(weft_msg_get_xfer(r, "none", &i), WEFT_ENOKEY);
  assert_int_equal(weft_msg_get_xfer(r, "image", NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_get_xfer(NULL, "image", &i), WEFT_EINVAL);
  weft_msg_free(r); /* closes the carried port */

  /* Not an unsigned integer: WEFT_ETYPE. */
  m = msg_new();
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "image", "2");
  weft_msg_put_i64(m, "logo", -1);
  assert_int_equal(weft_msg_get_xfer(m, "image", &i), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_xfer(m, "logo", &i), WEFT_ETYPE);
  weft_msg_free(m);

  /* A key naming no item (the add failed: image is detached) is kept in the
   * message, writes nothing, and the post refuses it. */
  m = msg_new();
  assert_int_equal(weft_msg_begin_map(m, NULL), 0);
  i = weft_msg_xfer_count(m);
  assert_int_equal(weft_msg_add_buf(m, image), WEFT_EDETACHED);
  size_t len_before;
  weft_msg_payload(m, &len_before);
  assert_int_equal(weft_msg_put_xfer(m, "image", i), WEFT_EINVAL);
  size_t len_after;
  weft_msg_payload(m, &len_after);
  assert_int_equal(len_after, len_before);
  assert_int_equal(weft_msg_error(m), WEFT_EINVAL);
  assert_int_equal(weft_msg_end_map(m), WEFT_EINVAL);
  assert_int_equal(weft_port_post(ports[0], m), WEFT_EINVAL); /* still ours */
  weft_msg_free(m);
  assert_int_equal(weft_msg_put_xfer(NULL, "image", 0), WEFT_EINVAL);

  weft_buf_free(logo);
  weft_buf_free(image);
  weft_port_close(carried[1]);
  weft_port_close(ports[0]);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(weft_runtime_free(rt), 0);
}

/* ---- allocation failures --------------------------------------------------- */

typedef struct {
  weft_msg_t *m;
  weft_buf_t *owned, *shared;
} scenario_t;

/* Builds a message that moves to the heap and grows there, and holds three
 * buffers (the list grows once). Stops at the first error, which it returns. */
static int build_scenario(scenario_t *s) {
  static const char text[] = "a string long enough to leave the inline area behind";
  static uint8_t blob[600];
  int rc;
  memset(s, 0, sizeof(*s));
  if ((rc = weft_msg_new(&s->m)) != 0)
    return rc;
  if ((rc = weft_msg_put_map(s->m, 4)) != 0 || (rc = weft_msg_put_u64(s->m, "seq", 7)) != 0 ||
      (rc = weft_msg_put_str(s->m, "text", text)) != 0 ||
      (rc = weft_msg_put_bin(s->m, "blob", blob, sizeof(blob))) != 0 ||
      (rc = weft_msg_put_bool(s->m, "ok", true)) != 0)
    return rc;
  if ((rc = weft_buf_new(&s->owned, 64)) != 0 || (rc = weft_msg_add_buf(s->m, s->owned)) != 0)
    return rc;
  if ((rc = weft_buf_new_shared(&s->shared, 64)) != 0 ||
      (rc = weft_msg_add_buf(s->m, s->shared)) != 0 ||
      (rc = weft_msg_add_buf(s->m, s->shared)) != 0)
    return rc;
  return 0;
}

static void free_scenario(scenario_t *s) {
  weft_msg_free(s->m);
  weft_buf_free(s->owned);
  weft_buf_free(s->shared);
}

static void alloc_failure_sweep(void **state) {
  (void)state;
  long n;
  for (n = 0;; n++) {
    scenario_t s;
    testutil_alloc_fail_after(n);
    int rc = build_scenario(&s);
    bool fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    if (!fired) {
      assert_int_equal(rc, 0);
      uint64_t u;
      assert_int_equal(weft_msg_get_u64(s.m, "seq", &u), 0);
      assert_int_equal(u, 7);
      const msgpack_object *o;
      assert_int_equal(weft_msg_view(s.m, &o), 0);
      assert_int_equal(o->via.map.size, 4);
      assert_int_equal(weft_msg_xfer_count(s.m), 3);
      assert_true(weft_buf_is_detached(s.owned));
      assert_int_equal(weft_buf_refcount(s.shared), 3);
      free_scenario(&s);
      break;
    }
    assert_int_equal(rc, WEFT_ENOMEM);
    if (s.m != NULL && weft_msg_error(s.m) != 0) {
      /* A failed build is kept: later puts fail the same way, nothing grows. */
      assert_int_equal(weft_msg_error(s.m), WEFT_ENOMEM);
      uint32_t len = s.m->len;
      assert_int_equal(weft_msg_put_str(s.m, "more", "data"), WEFT_ENOMEM);
      assert_int_equal(s.m->len, len);
    }
    if (s.owned != NULL && weft_msg_xfer_count(s.m) == 0)
      assert_false(weft_buf_is_detached(s.owned)); /* a failed add leaves it */
    free_scenario(&s);
    assert_int_equal(testutil_alloc_outstanding(), 0);
  }
  /* msg (1), payload growths 40 -> 80 -> 160 -> 763 (3), owned buf (2), list
   * (1) + its move (1), shared (2), list growth (1) + 2 shares (2). */
  assert_int_equal(n, 13);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(tiny_message_is_one_allocation, no_leaks),
      cmocka_unit_test_teardown(builders_reject_null, no_leaks),
      cmocka_unit_test_teardown(builders_match_msgpack_c, no_leaks),
      cmocka_unit_test_teardown(round_trip_every_type_in_a_map, no_leaks),
      cmocka_unit_test_teardown(top_level_values, no_leaks),
      cmocka_unit_test_teardown(conversions, no_leaks),
      cmocka_unit_test_teardown(readers_reject_null_and_garbage, no_leaks),
      cmocka_unit_test_teardown(key_lookup_rules, no_leaks),
      cmocka_unit_test_teardown(growth_inline_to_heap, no_leaks),
      cmocka_unit_test_teardown(long_strings_and_bins, no_leaks),
      cmocka_unit_test_teardown(packer_writes_into_the_message, no_leaks),
      cmocka_unit_test_teardown(set_payload_copies, no_leaks),
      cmocka_unit_test_teardown(view_valid_invalid_trailing, no_leaks),
      cmocka_unit_test_teardown(view_depth_matches_msgpack_c, no_leaks),
      cmocka_unit_test_teardown(reader_depth_limit, no_leaks),
      cmocka_unit_test_teardown(rich_payload_is_what_we_think, no_leaks),
      cmocka_unit_test_teardown(truncated_prefixes_at_guard_page, no_leaks),
      cmocka_unit_test_teardown(every_short_payload_at_guard_page, no_leaks),
      cmocka_unit_test_teardown(lengths_past_the_end, no_leaks),
      cmocka_unit_test_teardown(owned_buffer_moves_into_the_message, no_leaks),
      cmocka_unit_test_teardown(message_frees_what_it_still_holds, no_leaks),
      cmocka_unit_test_teardown(sockets_travel_and_are_closed, no_leaks),
      cmocka_unit_test_teardown(ports_travel_and_are_closed, no_leaks),
      cmocka_unit_test_teardown(counted_map_counts_its_entries, no_leaks),
      cmocka_unit_test_teardown(counted_map_mistakes, no_leaks),
      cmocka_unit_test_teardown(missing_key_is_enokey, no_leaks),
      cmocka_unit_test_teardown(strcpy_reader, no_leaks),
      cmocka_unit_test_teardown(items_found_by_kind, no_leaks),
      cmocka_unit_test_teardown(items_found_by_key, no_leaks),
      cmocka_unit_test_teardown(alloc_failure_sweep, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
