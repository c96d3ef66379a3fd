/* fuzz_msgread.c: libFuzzer target for the message readers.
 *
 * The input becomes a message payload; every weft_msg_get_* runs on it with a
 * few keys, and weft_msg_view decodes it. When msgpack-c accepts the payload,
 * the readers are checked against its decoding (same values, same errors), so
 * the target finds wrong answers as well as crashes. Abort on a mismatch. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {NULL, "", "a", "k", "seq", "tag"};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void mismatch(const char *what, const char *key) {
  fprintf(stderr, "fuzz_msgread: %s disagrees with msgpack-c (key %s)\n", what,
          key != NULL ? key : "(top level)");
  abort();
}

/* The value the readers should find for key in the decoded object, or NULL
 * with *expect_rc set to the error they should return. */
static const msgpack_object *lookup(const msgpack_object *top, const char *key, int *expect_rc) {
  *expect_rc = 0;
  if (key == NULL)
    return top;
  if (top->type != MSGPACK_OBJECT_MAP) {
    *expect_rc = WEFT_ETYPE;
    return NULL;
  }
  size_t klen = strlen(key);
  for (uint32_t i = 0; i < top->via.map.size; i++) {
    const msgpack_object *k = &top->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
        (klen == 0 || memcmp(k->via.str.ptr, key, klen) == 0))
      return &top->via.map.ptr[i].val;
  }
  *expect_rc = WEFT_ENOKEY;
  return NULL;
}

static int rc_for(const msgpack_object *v, int missing_rc, bool type_ok) {
  if (v == NULL)
    return missing_rc;
  return type_ok ? 0 : WEFT_ETYPE;
}

static void check_ints(const weft_msg_t *m, const char *key, const msgpack_object *v, int miss) {
  uint64_t u = 0;
  int64_t i = 0;
  bool pos = v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
  bool neg = v != NULL && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
  int rc = weft_msg_get_u64(m, key, &u);
  if (rc != rc_for(v, miss, pos) || (rc == 0 && u != v->via.u64))
    mismatch("weft_msg_get_u64", key);
  rc = weft_msg_get_i64(m, key, &i);
  bool fits = neg || (pos && v->via.u64 <= (uint64_t)INT64_MAX);
  if (rc != rc_for(v, miss, fits) || (rc == 0 && i != v->via.i64))
    mismatch("weft_msg_get_i64", key);
}

static void check_f64(const weft_msg_t *m, const char *key, const msgpack_object *v, int miss) {
  double f = 0;
  bool isf = v != NULL && (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64);
  bool isi = v != NULL && (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                           v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
  int rc = weft_msg_get_f64(m, key, &f);
  if (rc != rc_for(v, miss, isf || isi))
    mismatch("weft_msg_get_f64 (code)", key);
  if (rc != 0)
    return;
  double want = isf ? v->via.f64
                    : v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)v->via.u64
                                                                 : (double)v->via.i64;
  if (!(f == want || (isnan(f) && isnan(want))))
    mismatch("weft_msg_get_f64 (value)", key);
}

static void check_bool(const weft_msg_t *m, const char *key, const msgpack_object *v, int miss) {
  bool b = false;
  bool isb = v != NULL && v->type == MSGPACK_OBJECT_BOOLEAN;
  int rc = weft_msg_get_bool(m, key, &b);
  if (rc != rc_for(v, miss, isb) || (rc == 0 && b != v->via.boolean))
    mismatch("weft_msg_get_bool", key);
}

/* Empty strings may point anywhere: only non-empty ones are compared by address. */
static void check_raw(const weft_msg_t *m, const char *key, const msgpack_object *v, int miss) {
  const char *s = NULL;
  const void *p = NULL;
  size_t n = 0;
  bool iss = v != NULL && v->type == MSGPACK_OBJECT_STR;
  bool isb = v != NULL && v->type == MSGPACK_OBJECT_BIN;
  int rc = weft_msg_get_str(m, key, &s, &n);
  if (rc != rc_for(v, miss, iss) ||
      (rc == 0 && (n != v->via.str.size || (n > 0 && s != v->via.str.ptr))))
    mismatch("weft_msg_get_str", key);
  rc = weft_msg_get_bin(m, key, &p, &n);
  if (rc != rc_for(v, miss, isb) ||
      (rc == 0 && (n != v->via.bin.size || (n > 0 && p != (const void *)v->via.bin.ptr))))
    mismatch("weft_msg_get_bin", key);
}

/* Without a decoding to compare with: the readers must still not crash, and
 * what they return must point inside the payload. */
static void run_readers(const weft_msg_t *m, const uint8_t *base, size_t len) {
  for (size_t k = 0; k < NKEYS; k++) {
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    const char *s;
    const void *p;
    size_t n;
    (void)weft_msg_get_u64(m, keys[k], &u);
    (void)weft_msg_get_i64(m, keys[k], &i);
    (void)weft_msg_get_f64(m, keys[k], &f);
    (void)weft_msg_get_bool(m, keys[k], &b);
    if (weft_msg_get_str(m, keys[k], &s, &n) == 0 &&
        ((const uint8_t *)s < base || (const uint8_t *)s + n > base + len))
      mismatch("weft_msg_get_str (bounds)", keys[k]);
    if (weft_msg_get_bin(m, keys[k], &p, &n) == 0 &&
        ((const uint8_t *)p < base || (const uint8_t *)p + n > base + len))
      mismatch("weft_msg_get_bin (bounds)", keys[k]);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return 0;
  if (weft_msg_set_payload(m, data, size) != 0) {
    weft_msg_free(m);
    return 0;
  }
  size_t len;
  const uint8_t *base = weft_msg_payload(m, &len);
  run_readers(m, base, len);
  const msgpack_object *top;
  int rc = weft_msg_view(m, &top);
  if (rc == 0) {
    const msgpack_object *again;
    if (weft_msg_view(m, &again) != 0 || again != top)
      mismatch("weft_msg_view (cache)", NULL);
    for (size_t k = 0; k < NKEYS; k++) {
      int miss;
      const msgpack_object *v = lookup(top, keys[k], &miss);
      check_ints(m, keys[k], v, miss);
      check_f64(m, keys[k], v, miss);
      check_bool(m, keys[k], v, miss);
      check_raw(m, keys[k], v, miss);
    }
  } else if (rc != WEFT_EPROTO && rc != WEFT_ENOMEM) {
    mismatch("weft_msg_view (code)", NULL);
  }
  weft_msg_free(m);
  return 0;
}
