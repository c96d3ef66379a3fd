/* msgread.h: NOT PUBLIC. The bounds-checked msgpack cursor behind the
 * small-record readers (weft_msg_get_*) and the payload check of weft_msg_view.
 * Exposed to runtime/ and to the unit tests, which run it on buffers that end
 * at a guard page. Nothing here allocates or reads outside [p, end). */
#ifndef WEFT_MSGREAD_H
#define WEFT_MSGREAD_H

#include "weft_impl.h"

/* Nesting limit of the readers: at most this many non-empty containers open
 * at once. weft_msg_view uses msgpack-c's own, smaller limit. */
#define WEFT__MP_MAX_DEPTH 64

enum weft__mp_type {
  WEFT__MP_NIL = 1,
  WEFT__MP_BOOL,
  WEFT__MP_UINT,  /* v.u: positive fixint, uint 8..64 */
  WEFT__MP_INT,   /* v.i: negative fixint, int 8..64 (any sign) */
  WEFT__MP_F32,   /* v.f */
  WEFT__MP_F64,   /* v.f */
  WEFT__MP_STR,   /* v.raw */
  WEFT__MP_BIN,   /* v.raw */
  WEFT__MP_EXT,   /* v.raw, with raw.ext the type */
  WEFT__MP_ARRAY, /* v.n elements follow */
  WEFT__MP_MAP    /* v.n key/value pairs follow */
};

typedef struct {
  uint8_t type; /* enum weft__mp_type */
  union {
    bool b;
    uint64_t u;
    int64_t i;
    double f;
    uint32_t n;
    struct {
      const uint8_t *p;
      uint32_t n;
      int8_t ext;
    } raw;
  } v;
} weft__mp_val_t;

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} weft__mp_cur_t;

/* weft__mp_next: reads one value's header at c and moves past it; the body of
 * a str, bin or ext is checked to lie within bounds and skipped too, but the
 * elements of an array or map are not. Returns 0 or WEFT_EPROTO (truncated,
 * the never-used byte 0xc1, or a container claiming more elements than there
 * are bytes left). On error c is left anywhere within bounds. */
int weft__mp_next(weft__mp_cur_t *c, weft__mp_val_t *v);

/* weft__mp_skip: moves c past n complete values, containers with at most
 * max_depth (<= WEFT__MP_MAX_DEPTH) nested non-empty containers. Returns 0 or
 * WEFT_EPROTO. */
int weft__mp_skip(weft__mp_cur_t *c, uint64_t n, unsigned max_depth);

/* weft__mp_check: 0 if [data, data + len) is exactly one msgpack value of at
 * most max_depth nested non-empty containers, else WEFT_EPROTO. */
int weft__mp_check(const void *data, size_t len, unsigned max_depth);

/* weft__mp_find: reads the header of the top-level value (key NULL) or of the
 * value under the str key in the top-level map. Returns 0, WEFT_ENOKEY,
 * WEFT_ETYPE (top level is not a map), WEFT_EPROTO. */
int weft__mp_find(const void *data, size_t len, const char *key, weft__mp_val_t *v);

/* The readers of weft_msg_get_*, over raw bytes. Outputs set only on success. */
int weft__mp_get_u64(const void *data, size_t len, const char *key, uint64_t *out);
int weft__mp_get_i64(const void *data, size_t len, const char *key, int64_t *out);
int weft__mp_get_f64(const void *data, size_t len, const char *key, double *out);
int weft__mp_get_bool(const void *data, size_t len, const char *key, bool *out);
int weft__mp_get_str(const void *data, size_t len, const char *key,
                     const char **s, size_t *n);
int weft__mp_get_bin(const void *data, size_t len, const char *key,
                     const void **p, size_t *n);

#endif /* WEFT_MSGREAD_H */
