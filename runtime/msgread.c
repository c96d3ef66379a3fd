/* msgread.c: the small-record readers (weft_msg_get_*), without allocation.
 *
 * A cursor walks the payload as untrusted bytes: every read is checked against
 * the end first, a container may not claim more elements than there are bytes
 * left, and skipping is iterative with an explicit stack bounded by
 * WEFT__MP_MAX_DEPTH, so no input makes it read past the end, recurse, or loop
 * longer than the payload is long. A reader decodes only the top-level header
 * and, with a key, the entries of the top-level map up to the first str key
 * that matches. Stateless: any thread may read a message it owns. */
#include <string.h>

#include "msgread.h"

static size_t bytes_left(const weft__mp_cur_t *c) {
  return (size_t)(c->end - c->p);
}

/* Big-endian unsigned integer of n (1, 2, 4 or 8) bytes. */
static uint64_t rd_be(const uint8_t *p, unsigned n) {
  uint64_t x = 0;
  for (unsigned i = 0; i < n; i++)
    x = (x << 8) | p[i];
  return x;
}

/* Takes an n-byte big-endian field after the type byte. */
static int take_be(weft__mp_cur_t *c, unsigned n, uint64_t *x) {
  if (bytes_left(c) < n)
    return WEFT_EPROTO;
  *x = rd_be(c->p, n);
  c->p += n;
  return 0;
}

static int take_body(weft__mp_cur_t *c, weft__mp_val_t *v, uint8_t type, uint64_t n) {
  if (bytes_left(c) < n)
    return WEFT_EPROTO;
  v->type = type;
  v->v.raw.p = c->p;
  v->v.raw.n = (uint32_t)n;
  c->p += n;
  return 0;
}

/* A str/bin body preceded by an lenw-byte length. */
static int take_sized(weft__mp_cur_t *c, weft__mp_val_t *v, uint8_t type, unsigned lenw) {
  uint64_t n;
  int rc = take_be(c, lenw, &n);
  return rc != 0 ? rc : take_body(c, v, type, n);
}

/* An ext: lenw-byte length (0: fixed size n), type byte, body. */
static int take_ext(weft__mp_cur_t *c, weft__mp_val_t *v, unsigned lenw, uint64_t n) {
  uint64_t t;
  int rc = lenw > 0 ? take_be(c, lenw, &n) : 0;
  if (rc == 0)
    rc = take_be(c, 1, &t);
  if (rc == 0)
    rc = take_body(c, v, WEFT__MP_EXT, n);
  if (rc == 0)
    v->v.raw.ext = (int8_t)(uint8_t)t;
  return rc;
}

static int set_count(weft__mp_cur_t *c, weft__mp_val_t *v, uint8_t type, uint64_t n) {
  uint64_t min_bytes = type == WEFT__MP_MAP ? 2 * n : n;
  if (min_bytes > bytes_left(c))
    return WEFT_EPROTO;
  v->type = type;
  v->v.n = (uint32_t)n;
  return 0;
}

static int take_count(weft__mp_cur_t *c, weft__mp_val_t *v, uint8_t type, unsigned lenw) {
  uint64_t n;
  int rc = take_be(c, lenw, &n);
  return rc != 0 ? rc : set_count(c, v, type, n);
}

static int take_uint(weft__mp_cur_t *c, weft__mp_val_t *v, unsigned w) {
  v->type = WEFT__MP_UINT;
  return take_be(c, w, &v->v.u);
}

static int take_int(weft__mp_cur_t *c, weft__mp_val_t *v, unsigned w) {
  uint64_t x;
  int rc = take_be(c, w, &x);
  if (rc != 0)
    return rc;
  v->type = WEFT__MP_INT;
  switch (w) { /* sign-extend from w bytes */
  case 1: v->v.i = (int8_t)(uint8_t)x; break;
  case 2: v->v.i = (int16_t)(uint16_t)x; break;
  case 4: v->v.i = (int32_t)(uint32_t)x; break;
  default: v->v.i = (int64_t)x; break;
  }
  return 0;
}

static int take_float(weft__mp_cur_t *c, weft__mp_val_t *v, unsigned w) {
  uint64_t x;
  int rc = take_be(c, w, &x);
  if (rc != 0)
    return rc;
  if (w == 4) {
    uint32_t x32 = (uint32_t)x;
    float f;
    memcpy(&f, &x32, sizeof(f));
    v->type = WEFT__MP_F32;
    v->v.f = f;
  } else {
    memcpy(&v->v.f, &x, sizeof(double));
    v->type = WEFT__MP_F64;
  }
  return 0;
}

/* Every type byte from 0xc0 to 0xdf. */
static int next_tagged(weft__mp_cur_t *c, weft__mp_val_t *v, uint8_t b) {
  switch (b) {
  case 0xc0: v->type = WEFT__MP_NIL; return 0;
  case 0xc2:
  case 0xc3: v->type = WEFT__MP_BOOL; v->v.b = b == 0xc3; return 0;
  case 0xc4: return take_sized(c, v, WEFT__MP_BIN, 1);
  case 0xc5: return take_sized(c, v, WEFT__MP_BIN, 2);
  case 0xc6: return take_sized(c, v, WEFT__MP_BIN, 4);
  case 0xc7: return take_ext(c, v, 1, 0);
  case 0xc8: return take_ext(c, v, 2, 0);
  case 0xc9: return take_ext(c, v, 4, 0);
  case 0xca: return take_float(c, v, 4);
  case 0xcb: return take_float(c, v, 8);
  case 0xcc: return take_uint(c, v, 1);
  case 0xcd: return take_uint(c, v, 2);
  case 0xce: return take_uint(c, v, 4);
  case 0xcf: return take_uint(c, v, 8);
  case 0xd0: return take_int(c, v, 1);
  case 0xd1: return take_int(c, v, 2);
  case 0xd2: return take_int(c, v, 4);
  case 0xd3: return take_int(c, v, 8);
  case 0xd4: return take_ext(c, v, 0, 1);
  case 0xd5: return take_ext(c, v, 0, 2);
  case 0xd6: return take_ext(c, v, 0, 4);
  case 0xd7: return take_ext(c, v, 0, 8);
  case 0xd8: return take_ext(c, v, 0, 16);
  case 0xd9: return take_sized(c, v, WEFT__MP_STR, 1);
  case 0xda: return take_sized(c, v, WEFT__MP_STR, 2);
  case 0xdb: return take_sized(c, v, WEFT__MP_STR, 4);
  case 0xdc: return take_count(c, v, WEFT__MP_ARRAY, 2);
  case 0xdd: return take_count(c, v, WEFT__MP_ARRAY, 4);
  case 0xde: return take_count(c, v, WEFT__MP_MAP, 2);
  case 0xdf: return take_count(c, v, WEFT__MP_MAP, 4);
  default: return WEFT_EPROTO; /* 0xc1: never used */
  }
}

int weft__mp_next(weft__mp_cur_t *c, weft__mp_val_t *v) {
  if (c->p >= c->end)
    return WEFT_EPROTO;
  uint8_t b = *c->p++;
  if (b <= 0x7f) {
    v->type = WEFT__MP_UINT;
    v->v.u = b;
    return 0;
  }
  if (b >= 0xe0) {
    v->type = WEFT__MP_INT;
    v->v.i = (int8_t)b;
    return 0;
  }
  if (b <= 0x8f)
    return set_count(c, v, WEFT__MP_MAP, b & 0x0f);
  if (b <= 0x9f)
    return set_count(c, v, WEFT__MP_ARRAY, b & 0x0f);
  if (b <= 0xbf)
    return take_body(c, v, WEFT__MP_STR, b & 0x1f);
  return next_tagged(c, v, b);
}

int weft__mp_skip(weft__mp_cur_t *c, uint64_t n, unsigned max_depth) {
  uint64_t left[WEFT__MP_MAX_DEPTH + 1]; /* values still to skip, per level */
  unsigned top = 0;
  weft__mp_val_t v;
  if (max_depth > WEFT__MP_MAX_DEPTH)
    max_depth = WEFT__MP_MAX_DEPTH;
  left[0] = n;
  for (;;) {
    while (left[top] == 0) {
      if (top == 0)
        return 0;
      top--;
    }
    left[top]--;
    int rc = weft__mp_next(c, &v);
    if (rc != 0)
      return rc;
    if (v.type != WEFT__MP_ARRAY && v.type != WEFT__MP_MAP)
      continue;
    if (top >= max_depth)
      return WEFT_EPROTO;
    left[++top] = v.type == WEFT__MP_MAP ? 2 * (uint64_t)v.v.n : v.v.n;
  }
}

int weft__mp_check(const void *data, size_t len, unsigned max_depth) {
  if (data == NULL || len == 0)
    return WEFT_EPROTO;
  weft__mp_cur_t c = {data, (const uint8_t *)data + len};
  int rc = weft__mp_skip(&c, 1, max_depth);
  if (rc != 0)
    return rc;
  return c.p == c.end ? 0 : WEFT_EPROTO;
}

static bool bytes_eq(const uint8_t *p, const char *key, size_t n) {
  for (size_t i = 0; i < n; i++) /* keys are short: no call */
    if (p[i] != (uint8_t)key[i])
      return false;
  return true;
}

/* Moves c past one value (a scalar in one step, a container whole). */
static int skip_value(weft__mp_cur_t *c) {
  const uint8_t *at = c->p;
  weft__mp_val_t v;
  int rc = weft__mp_next(c, &v);
  if (rc != 0 || (v.type != WEFT__MP_ARRAY && v.type != WEFT__MP_MAP))
    return rc;
  c->p = at;
  return weft__mp_skip(c, 1, WEFT__MP_MAX_DEPTH - 1);
}

/* Moves c to the value of key in a map of n entries whose header was read.
 * A fixstr key (nearly every key) is checked in place: its length byte and
 * bytes, with no decoding. */
static int map_seek(weft__mp_cur_t *c, uint32_t n, const char *key) {
  size_t klen = strlen(key);
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *at = c->p;
    if (at >= c->end)
      return WEFT_EPROTO;
    if ((*at & 0xe0) == 0xa0) {
      size_t kn = *at & 0x1f;
      if ((size_t)(c->end - at - 1) < kn)
        return WEFT_EPROTO;
      c->p = at + 1 + kn;
      if (kn == klen && bytes_eq(at + 1, key, kn))
        return 0;
    } else {
      weft__mp_val_t k;
      int rc = weft__mp_next(c, &k);
      if (rc != 0)
        return rc;
      if (k.type == WEFT__MP_STR && k.v.raw.n == klen && bytes_eq(k.v.raw.p, key, klen))
        return 0;
      if (k.type == WEFT__MP_ARRAY || k.type == WEFT__MP_MAP) {
        c->p = at;
        rc = weft__mp_skip(c, 1, WEFT__MP_MAX_DEPTH - 1); /* the key itself */
        if (rc != 0)
          return rc;
      }
    }
    int rc = skip_value(c);
    if (rc != 0)
      return rc;
  }
  return WEFT_ENOKEY;
}

int weft__mp_find(const void *data, size_t len, const char *key, weft__mp_val_t *v) {
  if (data == NULL || len == 0)
    return WEFT_EPROTO;
  weft__mp_cur_t c = {data, (const uint8_t *)data + len};
  int rc = weft__mp_next(&c, v);
  if (rc != 0 || key == NULL)
    return rc;
  if (v->type != WEFT__MP_MAP)
    return WEFT_ETYPE;
  rc = map_seek(&c, v->v.n, key);
  return rc != 0 ? rc : weft__mp_next(&c, v);
}

int weft__mp_get_u64(const void *data, size_t len, const char *key, uint64_t *out) {
  weft__mp_val_t v;
  int rc = out != NULL ? weft__mp_find(data, len, key, &v) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  if (v.type == WEFT__MP_UINT)
    *out = v.v.u;
  else if (v.type == WEFT__MP_INT && v.v.i >= 0)
    *out = (uint64_t)v.v.i;
  else
    return WEFT_ETYPE;
  return 0;
}

int weft__mp_get_i64(const void *data, size_t len, const char *key, int64_t *out) {
  weft__mp_val_t v;
  int rc = out != NULL ? weft__mp_find(data, len, key, &v) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  if (v.type == WEFT__MP_INT)
    *out = v.v.i;
  else if (v.type == WEFT__MP_UINT && v.v.u <= (uint64_t)INT64_MAX)
    *out = (int64_t)v.v.u;
  else
    return WEFT_ETYPE;
  return 0;
}

int weft__mp_get_f64(const void *data, size_t len, const char *key, double *out) {
  weft__mp_val_t v;
  int rc = out != NULL ? weft__mp_find(data, len, key, &v) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  if (v.type == WEFT__MP_F32 || v.type == WEFT__MP_F64)
    *out = v.v.f;
  else if (v.type == WEFT__MP_UINT)
    *out = (double)v.v.u;
  else if (v.type == WEFT__MP_INT)
    *out = (double)v.v.i;
  else
    return WEFT_ETYPE;
  return 0;
}

int weft__mp_get_bool(const void *data, size_t len, const char *key, bool *out) {
  weft__mp_val_t v;
  int rc = out != NULL ? weft__mp_find(data, len, key, &v) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  if (v.type != WEFT__MP_BOOL)
    return WEFT_ETYPE;
  *out = v.v.b;
  return 0;
}

static int get_raw(const void *data, size_t len, const char *key, uint8_t type,
                   const void **p, size_t *n) {
  weft__mp_val_t v;
  int rc = p != NULL ? weft__mp_find(data, len, key, &v) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  if (v.type != type)
    return WEFT_ETYPE;
  *p = v.v.raw.p;
  if (n != NULL)
    *n = v.v.raw.n;
  return 0;
}

int weft__mp_get_str(const void *data, size_t len, const char *key,
                     const char **s, size_t *n) {
  const void *p;
  int rc = s != NULL ? get_raw(data, len, key, WEFT__MP_STR, &p, n) : WEFT_EINVAL;
  if (rc == 0)
    *s = p;
  return rc;
}

int weft__mp_get_bin(const void *data, size_t len, const char *key,
                     const void **p, size_t *n) {
  return get_raw(data, len, key, WEFT__MP_BIN, p, n);
}

/* ---- the public readers: the payload of msg ------------------------------ */

int weft_msg_get_u64(const weft_msg_t *msg, const char *key, uint64_t *out) {
  return msg != NULL ? weft__mp_get_u64(msg->data, msg->len, key, out) : WEFT_EINVAL;
}

int weft_msg_get_i64(const weft_msg_t *msg, const char *key, int64_t *out) {
  return msg != NULL ? weft__mp_get_i64(msg->data, msg->len, key, out) : WEFT_EINVAL;
}

int weft_msg_get_f64(const weft_msg_t *msg, const char *key, double *out) {
  return msg != NULL ? weft__mp_get_f64(msg->data, msg->len, key, out) : WEFT_EINVAL;
}

int weft_msg_get_bool(const weft_msg_t *msg, const char *key, bool *out) {
  return msg != NULL ? weft__mp_get_bool(msg->data, msg->len, key, out) : WEFT_EINVAL;
}

int weft_msg_get_str(const weft_msg_t *msg, const char *key, const char **s, size_t *len) {
  return msg != NULL ? weft__mp_get_str(msg->data, msg->len, key, s, len) : WEFT_EINVAL;
}

int weft_msg_get_bin(const weft_msg_t *msg, const char *key, const void **p, size_t *len) {
  return msg != NULL ? weft__mp_get_bin(msg->data, msg->len, key, p, len) : WEFT_EINVAL;
}

int weft_msg_get_strcpy(const weft_msg_t *msg, const char *key, char *buf, size_t cap,
                        size_t *len) {
  if (msg == NULL || buf == NULL || cap == 0)
    return WEFT_EINVAL;
  const char *s;
  size_t n;
  int rc = weft__mp_get_str(msg->data, msg->len, key, &s, &n);
  if (rc != 0) {
    buf[0] = '\0';
    return rc;
  }
  size_t k = n < cap ? n : cap - 1;
  memcpy(buf, s, k);
  buf[k] = '\0';
  if (len != NULL)
    *len = n;
  return k == n ? 0 : UV_ENOBUFS;
}

int weft_msg_get_xfer(const weft_msg_t *msg, const char *key, size_t *index) {
  if (msg == NULL || index == NULL)
    return WEFT_EINVAL;
  uint64_t i;
  int rc = weft__mp_get_u64(msg->data, msg->len, key, &i);
  if (rc != 0)
    return rc;
  if (i >= msg->nxfer || msg->xfer[i].kind == 0)
    return WEFT_ENOENT;
  *index = (size_t)i;
  return 0;
}
