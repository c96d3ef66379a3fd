/* nodejson.c: Node.js 'json' IPC lines <-> weft msgpack payloads (contract in
 * nodejson.h; the wire in the shared reference node-ipc-json.md).
 *
 * Three independent parts. The line buffer stores raw bytes and cuts them at
 * '\n'; it checks line lengths on the bytes being fed, before it grows, so a
 * peer that never sends '\n' costs at most max bytes. The decoder is a strict
 * JSON parser that writes msgpack as it goes, with an explicit stack of open
 * containers (no recursion: a line's nesting costs heap bounded by the limit,
 * never C stack); the encoder walks a payload with the bounds-checked weft
 * cursor (msgread.h) and writes JSON as it goes, also with an explicit stack.
 * Both directions apply the same value mapping and the same nesting limit
 * (counted on the msgpack shape), so decode followed by encode followed by
 * decode gives the same payload back.
 *
 * Invariant of every line produced here: compact JSON (every control
 * character in strings escaped), one '\n' at the end and none inside; never
 * empty.
 *
 * Threads: no shared state. */
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msgread.h"
#include "nodejson.h"

#define DEPTH_MAX WEFT__NODEJSON_MAX_DEPTH
#define LINEBUF_MIN_CAP 256
/* An empty line buffer holding more than this gives the memory back. */
#define LINEBUF_KEEP_CAP ((size_t)64 << 10)
#define NODE_PREFIX "NODE_"
#define NODE_PREFIX_LEN 5

/* ---- shared helpers --------------------------------------------------------- */

/* The length of the UTF-8 character at s (n bytes left), or 0 if it is not
 * well-formed (overlong, above U+10FFFF, truncated). With wtf8, the encoded
 * surrogates U+D800..U+DFFF (ED A0..BF xx) are accepted too. */
static size_t utf8_char(const uint8_t *s, size_t n, bool wtf8) {
  uint8_t b = s[0];
  size_t more;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b < 0x80) {
    return 1;
  } else if (b >= 0xC2 && b <= 0xDF) {
    more = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    more = 2;
    lo = b == 0xE0 ? 0xA0 : 0x80;
    hi = b == 0xED && !wtf8 ? 0x9F : 0xBF;
  } else if (b >= 0xF0 && b <= 0xF4) {
    more = 3;
    lo = b == 0xF0 ? 0x90 : 0x80;
    hi = b == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (n - 1 < more || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t k = 2; k <= more; k++)
    if ((s[k] & 0xC0) != 0x80)
      return 0;
  return more + 1;
}

/* True if s[0, n) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
static bool utf8_valid(const uint8_t *s, size_t n) {
  for (size_t i = 0, k; i < n; i += k)
    if ((k = utf8_char(s + i, n - i, false)) == 0)
      return false;
  return true;
}

/* True if s[0, n) is WTF-8 (nodejson.h): UTF-8 in which lone surrogates may
 * appear as 3-byte sequences, but never a lead surrogate directly followed by
 * a trail one (that pair has its own 4-byte form). */
static bool wtf8_valid(const uint8_t *s, size_t n) {
  bool after_lead = false;
  for (size_t i = 0, k; i < n; i += k) {
    if ((k = utf8_char(s + i, n - i, true)) == 0)
      return false;
    bool sur = k == 3 && s[i] == 0xED && s[i + 1] >= 0xA0;
    if (sur && after_lead && s[i + 1] >= 0xB0)
      return false;
    after_lead = sur && s[i + 1] < 0xB0;
  }
  return true;
}

/* Node's isInternal() on the cmd string: "NODE_" and at least one more. */
static bool internal_name(const char *s, size_t n) {
  return n > NODE_PREFIX_LEN && memcmp(s, NODE_PREFIX, NODE_PREFIX_LEN) == 0;
}

static bool str_is(const char *s, size_t n, const char *lit) {
  return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* ---- line buffer ------------------------------------------------------------ */

void weft__linebuf_init(weft__linebuf_t *lb, size_t max_line) {
  memset(lb, 0, sizeof(*lb));
  lb->max = max_line != 0 ? max_line : WEFT__LINEBUF_DEFAULT_MAX;
}

void weft__linebuf_fini(weft__linebuf_t *lb) {
  weft__free(lb->buf);
  memset(lb, 0, sizeof(*lb));
}

/* How many of the n new bytes may be stored. All of them, unless a line would
 * pass max: then those up to the last '\n' before it, with *over set. *tail is
 * the unfinished line's length once the accepted bytes are stored. */
static size_t linebuf_accept(const weft__linebuf_t *lb, const char *p, size_t n,
                             size_t *tail, bool *over) {
  size_t cur = lb->tail;
  size_t off = 0;
  *over = false;
  while (off < n) {
    const char *nl = memchr(p + off, '\n', n - off);
    size_t seg = nl != NULL ? (size_t)(nl - (p + off)) : n - off;
    if (seg > lb->max - cur) {
      *over = true;
      break;
    }
    if (nl == NULL) {
      cur += seg;
      off = n;
    } else {
      cur = 0;
      off += seg + 1;
    }
  }
  *tail = cur;
  return off;
}

/* Drops the bytes already returned; frees a large buffer left empty. */
static void linebuf_compact(weft__linebuf_t *lb) {
  if (lb->start == 0)
    return;
  lb->len -= lb->start;
  lb->scan -= lb->start;
  if (lb->len > 0)
    memmove(lb->buf, lb->buf + lb->start, lb->len);
  lb->start = 0;
  if (lb->len == 0 && lb->cap > LINEBUF_KEEP_CAP) {
    weft__free(lb->buf);
    lb->buf = NULL;
    lb->cap = 0;
  }
}

static int linebuf_reserve(weft__linebuf_t *lb, size_t add) {
  if (add > SIZE_MAX - lb->len)
    return WEFT_ENOMEM;
  size_t need = lb->len + add;
  if (need <= lb->cap)
    return 0;
  size_t cap = lb->cap < LINEBUF_MIN_CAP ? LINEBUF_MIN_CAP : lb->cap;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *nb = weft__realloc(lb->buf, cap);
  if (nb == NULL)
    return WEFT_ENOMEM;
  lb->buf = nb;
  lb->cap = cap;
  return 0;
}

int weft__linebuf_feed(weft__linebuf_t *lb, const char *p, size_t n) {
  if (lb->err != 0)
    return lb->err;
  if (n == 0)
    return 0;
  size_t tail;
  bool over;
  size_t take = linebuf_accept(lb, p, n, &tail, &over);
  linebuf_compact(lb);
  int rc = linebuf_reserve(lb, take);
  if (rc != 0)
    return rc;
  if (take > 0)
    memcpy(lb->buf + lb->len, p, take);
  lb->len += take;
  lb->tail = tail;
  if (over)
    lb->err = WEFT_EFRAMESIZE;
  return 0;
}

int weft__linebuf_next(weft__linebuf_t *lb, const char **line, size_t *len) {
  const char *nl = NULL;
  if (lb->scan < lb->len)
    nl = memchr(lb->buf + lb->scan, '\n', lb->len - lb->scan);
  if (nl == NULL) {
    lb->scan = lb->len;
    return lb->err;
  }
  size_t end = (size_t)(nl - lb->buf);
  *line = lb->buf + lb->start;
  *len = end - lb->start;
  lb->start = end + 1;
  lb->scan = end + 1;
  return 1;
}

bool weft__linebuf_rest(weft__linebuf_t *lb, const char **rest, size_t *len) {
  if (lb->start >= lb->len || lb->err)
    return false;
  *rest = lb->buf + lb->start;
  *len = lb->len - lb->start;
  lb->start = lb->scan = lb->len;
  return true;
}

/* ---- decoding: JSON line -> msgpack ------------------------------------------ */

/* The decoder writes msgpack as it parses. Every container and str gets a
 * 5-byte header (array32, map32, str32) patched when it ends; numbers, nil,
 * bools and bins are written in their final form. An object is reworked in
 * place when it ends (duplicate keys, Buffer form); the whole buffer is then
 * compacted to shortest headers in one flat pass. */
#define MP_ARRAY32 0xdd
#define MP_MAP32 0xdf
#define MP_STR32 0xdb
#define HDR 5 /* a placeholder header */

typedef struct {
  size_t hdr;      /* offset of the container's header */
  size_t keys;     /* object: index in dec_t.keys of its first entry */
  uint32_t n;      /* elements (array) or entries (object) so far */
  bool obj;
  bool deep_child; /* object: holds an array past the limit (fine if a Buffer) */
} frame_t;

typedef struct {
  const uint8_t *s, *end; /* input not yet parsed */
  uint8_t *out;           /* weft__malloc'd msgpack */
  size_t len, cap;
  frame_t *fr;            /* open containers, innermost last */
  size_t depth, fr_cap;
  size_t *keys;           /* offsets of the entry keys of the open objects */
  size_t nkeys, keys_cap;
  bool too_deep;          /* a container past the limit was skipped */
} dec_t;

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Grows *p (an array of *cap items of size sz) to hold need items. */
static int grow(void **p, size_t *cap, size_t need, size_t sz) {
  if (need <= *cap)
    return 0;
  size_t c = *cap < 16 ? 16 : *cap;
  while (c < need)
    c *= 2;
  if (c > SIZE_MAX / sz)
    return WEFT_ENOMEM;
  void *np = weft__realloc(*p, c * sz);
  if (np == NULL)
    return WEFT_ENOMEM;
  *p = np;
  *cap = c;
  return 0;
}

static int put(dec_t *d, const void *b, size_t n) {
  if (n > (size_t)UINT32_MAX - d->len)
    return WEFT_EMSGSIZE; /* a payload is at most 4 GiB */
  void *p = d->out;
  int rc = grow(&p, &d->cap, d->len + n, 1);
  d->out = p;
  if (rc != 0)
    return rc;
  memcpy(d->out + d->len, b, n);
  d->len += n;
  return 0;
}

static int put1(dec_t *d, uint8_t b) { return put(d, &b, 1); }

static int put_be(dec_t *d, uint8_t tag, uint64_t v, unsigned bytes) {
  uint8_t b[9];
  b[0] = tag;
  for (unsigned i = 0; i < bytes; i++)
    b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  return put(d, b, 1 + bytes);
}

/* v in msgpack's shortest form (msgpack_pack_int64's choice). */
static int put_int(dec_t *d, int64_t v) {
  if (v >= 0) {
    uint64_t u = (uint64_t)v;
    if (u < 128)
      return put1(d, (uint8_t)u);
    if (u < 256)
      return put_be(d, 0xcc, u, 1);
    if (u < 65536)
      return put_be(d, 0xcd, u, 2);
    return u <= UINT32_MAX ? put_be(d, 0xce, u, 4) : put_be(d, 0xcf, u, 8);
  }
  if (v >= -32)
    return put1(d, (uint8_t)(int8_t)v);
  if (v >= INT8_MIN)
    return put_be(d, 0xd0, (uint64_t)v, 1);
  if (v >= INT16_MIN)
    return put_be(d, 0xd1, (uint64_t)v, 2);
  return v >= INT32_MIN ? put_be(d, 0xd2, (uint64_t)v, 4) : put_be(d, 0xd3, (uint64_t)v, 8);
}

static int put_f64(dec_t *d, double f) {
  uint64_t u;
  memcpy(&u, &f, sizeof(u));
  return put_be(d, 0xcb, u, 8);
}

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static void skip_ws(dec_t *d) {
  while (d->s < d->end && (*d->s == ' ' || *d->s == '\t' || *d->s == '\n' || *d->s == '\r'))
    d->s++;
}

/* strtod on n bytes of JSON number, whatever the C locale's decimal point. */
static int to_double(const uint8_t *p, size_t n, double *out) {
  char small[64];
  char *b = n < sizeof(small) ? small : weft__malloc(n + 1);
  if (b == NULL)
    return WEFT_ENOMEM;
  memcpy(b, p, n);
  b[n] = '\0';
  const char *point = localeconv()->decimal_point;
  char *dot = memchr(b, '.', n);
  if (dot != NULL && point[0] != '\0' && point[0] != '.')
    *dot = point[0];
  *out = strtod(b, NULL);
  if (b != small)
    weft__free(b);
  return 0;
}

/* An integer token in int64 range (JSON grammar already checked). */
static bool to_int(const uint8_t *p, const uint8_t *end, int64_t *out) {
  bool neg = *p == '-';
  uint64_t mag = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (p += neg; p < end; p++) {
    unsigned dgt = (unsigned)(*p - '0');
    if (mag > (lim - dgt) / 10)
      return false;
    mag = mag * 10 + dgt;
  }
  *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
  return true;
}

/* A number: an int if it is written as an integer in int64 range, else a
 * float64; one that overflows a double is refused (JSON.stringify never
 * writes one). */
static int parse_number(dec_t *d) {
  const uint8_t *p = d->s, *start = d->s, *end = d->end;
  bool real = false;
  if (p < end && *p == '-')
    p++;
  if (p >= end || !is_digit(*p))
    return WEFT_EPROTO;
  if (*p++ != '0')
    while (p < end && is_digit(*p))
      p++;
  if (p < end && *p == '.') {
    if (++p >= end || !is_digit(*p))
      return WEFT_EPROTO;
    while (p < end && is_digit(*p))
      p++;
    real = true;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    if (++p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || !is_digit(*p))
      return WEFT_EPROTO;
    while (p < end && is_digit(*p))
      p++;
    real = true;
  }
  d->s = p;
  int64_t i;
  if (!real && to_int(start, p, &i))
    return put_int(d, i);
  double f;
  int rc = to_double(start, (size_t)(p - start), &f);
  if (rc != 0)
    return rc;
  return isfinite(f) ? put_f64(d, f) : WEFT_EPROTO;
}

static int hex4(const uint8_t *p, const uint8_t *end, unsigned *out) {
  if (end - p < 4)
    return WEFT_EPROTO;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t c = p[i];
    unsigned h = is_digit(c) ? (unsigned)(c - '0')
                 : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (unsigned)((c | 0x20) - 'a' + 10)
                                                         : 16u;
    if (h == 16)
      return WEFT_EPROTO;
    v = v << 4 | h;
  }
  *out = v;
  return 0;
}

/* cp as UTF-8; a surrogate (lone: a pair was joined before) as its 3-byte
 * WTF-8 form. */
static int put_cp(dec_t *d, unsigned cp) {
  uint8_t b[4];
  size_t n;
  if (cp < 0x80) {
    b[0] = (uint8_t)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (uint8_t)(0xC0 | cp >> 6);
    b[1] = (uint8_t)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (uint8_t)(0xE0 | cp >> 12);
    b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    b[0] = (uint8_t)(0xF0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return put(d, b, n);
}

/* One escape at p (the byte after '\\'); moves *pp past it. */
static int parse_escape(dec_t *d, const uint8_t **pp) {
  const uint8_t *p = *pp;
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  const char *e = p < d->end && *p != '\0' ? strchr(from, *p) : NULL;
  if (e != NULL) {
    *pp = p + 1;
    return put1(d, (uint8_t)to[e - from]);
  }
  unsigned cp, lo;
  if (p >= d->end || *p != 'u' || hex4(p + 1, d->end, &cp) != 0)
    return WEFT_EPROTO;
  p += 5;
  if (cp >= 0xD800 && cp <= 0xDBFF && d->end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
      hex4(p + 2, d->end, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    p += 6;
  }
  *pp = p;
  return put_cp(d, cp);
}

/* A string at d->s (its '"'): a str32 placeholder header, then the bytes. */
static int parse_string(dec_t *d) {
  const uint8_t *p = d->s + 1, *run = p;
  size_t hdr = d->len;
  uint8_t h[HDR] = {MP_STR32};
  int rc = put(d, h, HDR);
  while (rc == 0) {
    if (p >= d->end)
      return WEFT_EPROTO;
    uint8_t c = *p;
    if (c == '"' || c == '\\') {
      rc = put(d, run, (size_t)(p - run));
      if (c == '"') {
        p++;
        break;
      }
      p++;
      if (rc == 0)
        rc = parse_escape(d, &p);
      run = p;
    } else if (c < 0x20) {
      return WEFT_EPROTO;
    } else {
      size_t k = utf8_char(p, (size_t)(d->end - p), false);
      if (k == 0)
        return WEFT_EPROTO;
      p += k;
    }
  }
  if (rc != 0)
    return rc;
  wr32(d->out + hdr + 1, (uint32_t)(d->len - hdr - HDR));
  d->s = p;
  return 0;
}

static bool take_lit(dec_t *d, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(d->end - d->s) < n || memcmp(d->s, lit, n) != 0)
    return false;
  d->s += n;
  return true;
}

static int parse_scalar(dec_t *d) {
  uint8_t c = *d->s;
  if (c == '"')
    return parse_string(d);
  if (c == '-' || is_digit(c))
    return parse_number(d);
  if (take_lit(d, "null"))
    return put1(d, 0xc0);
  if (take_lit(d, "true"))
    return put1(d, 0xc3);
  if (take_lit(d, "false"))
    return put1(d, 0xc2);
  return WEFT_EPROTO;
}

/* A container past the limit: find its end, looking only at brackets and
 * strings (the line is dropped anyway), and stand a nil in for it. */
static int skim(dec_t *d) {
  uint64_t level = 0;
  const uint8_t *p = d->s;
  while (p < d->end) {
    uint8_t c = *p++;
    if (c == '"') {
      while (p < d->end && *p != '"')
        p += *p == '\\' && d->end - p > 1 ? 2 : 1;
      if (p++ >= d->end)
        return WEFT_EPROTO;
    } else if (c == '[' || c == '{') {
      level++;
    } else if ((c == ']' || c == '}') && --level == 0) {
      d->s = p;
      d->too_deep = true;
      return put1(d, 0xc0);
    }
  }
  return WEFT_EPROTO;
}

/* An entry's key at d->s (after whitespace), then ':'. */
static int parse_key(dec_t *d) {
  skip_ws(d);
  if (d->s >= d->end || *d->s != '"')
    return WEFT_EPROTO;
  void *k = d->keys;
  int rc = grow(&k, &d->keys_cap, d->nkeys + 1, sizeof(size_t));
  d->keys = k;
  if (rc != 0)
    return rc;
  d->keys[d->nkeys++] = d->len;
  d->fr[d->depth - 1].n++;
  if ((rc = parse_string(d)) != 0)
    return rc;
  skip_ws(d);
  if (d->s >= d->end || *d->s != ':')
    return WEFT_EPROTO;
  d->s++;
  return 0;
}

static int open_container(dec_t *d, bool obj) {
  void *f = d->fr;
  int rc = grow(&f, &d->fr_cap, d->depth + 1, sizeof(frame_t));
  d->fr = f;
  if (rc != 0)
    return rc;
  d->fr[d->depth++] = (frame_t){d->len, d->nkeys, 0, obj, false};
  uint8_t h[HDR] = {obj ? MP_MAP32 : MP_ARRAY32};
  d->s++;
  return put(d, h, HDR);
}

/* Entry i of the object whose keys start at k (n entries): its key and the
 * end of its value. */
static const uint8_t *entry_key(const dec_t *d, const size_t *k, size_t i, uint32_t *klen) {
  *klen = rd32(d->out + k[i] + 1);
  return d->out + k[i] + HDR;
}

static size_t entry_end(const dec_t *d, const size_t *k, size_t n, size_t i) {
  return i + 1 < n ? k[i + 1] : d->len;
}

typedef struct {
  const uint8_t *key;
  uint32_t len;
  size_t idx;
} kref_t;

static int kref_cmp(const void *a, const void *b) {
  const kref_t *x = a, *y = b;
  if (x->len != y->len)
    return x->len < y->len ? -1 : 1;
  int c = memcmp(x->key, y->key, x->len);
  if (c != 0)
    return c;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Duplicate keys, as JSON.parse: the last value wins, at the first one's
 * place. Rewrites the object's entries; *n becomes the number left. */
static int dedup_rewrite(dec_t *d, size_t *k, size_t n, uint32_t *left) {
  kref_t *r = weft__malloc(n * sizeof(*r));
  size_t *win = weft__malloc(n * sizeof(*win));
  uint8_t *tmp = weft__malloc(d->len - k[0]);
  int rc = r && win && tmp ? 0 : WEFT_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    r[i].key = entry_key(d, k, i, &r[i].len);
    r[i].idx = i;
  }
  if (rc == 0) {
    qsort(r, n, sizeof(*r), kref_cmp);
    for (size_t a = 0, b; a < n; a = b) {
      for (b = a + 1;
           b < n && r[a].len == r[b].len && memcmp(r[a].key, r[b].key, r[a].len) == 0; b++)
        win[r[b].idx] = SIZE_MAX;
      win[r[a].idx] = r[b - 1].idx;
    }
    size_t t = 0;
    *left = 0;
    for (size_t i = 0; i < n; i++) {
      if (win[i] == SIZE_MAX)
        continue;
      uint32_t kl;
      size_t t0 = t;
      (void)entry_key(d, k, i, &kl);
      memcpy(tmp + t, d->out + k[i], HDR + kl); /* the first key */
      t += HDR + kl;
      size_t w = win[i];
      (void)entry_key(d, k, w, &kl);
      size_t vs = k[w] + HDR + kl, ve = entry_end(d, k, n, w);
      memcpy(tmp + t, d->out + vs, ve - vs); /* the last value */
      k[*left] = k[0] + t0; /* k[i..] and k[w..] are read: i, w >= *left */
      t += ve - vs;
      (*left)++;
    }
    memcpy(d->out + k[0], tmp, t);
    d->len = k[0] + t;
  }
  weft__free(r);
  weft__free(win);
  weft__free(tmp);
  return rc;
}

static int dedup(dec_t *d, frame_t *f) {
  size_t n = d->nkeys - f->keys;
  if (n < 2)
    return 0; /* d->keys may still be NULL */
  size_t *k = d->keys + f->keys;
  bool dup = false;
  for (size_t i = 0; i < n && !dup && n <= 16; i++)
    for (size_t j = i + 1; j < n && !dup; j++) {
      uint32_t li, lj;
      const uint8_t *ki = entry_key(d, k, i, &li), *kj = entry_key(d, k, j, &lj);
      dup = li == lj && memcmp(ki, kj, li) == 0;
    }
  if (n <= 16 && !dup)
    return 0;
  int rc = dedup_rewrite(d, k, n, &f->n);
  if (rc == 0)
    d->nkeys = f->keys + f->n; /* k[0, n) are the entries left */
  return rc;
}

static bool key_is(const uint8_t *k, uint32_t n, const char *lit) {
  return str_is((const char *)k, n, lit);
}

/* Node's Buffer.toJSON() form, {"type":"Buffer","data":[0..255,...]} in
 * either order and nothing else, becomes a bin in place. */
static bool buffer_form(dec_t *d, const frame_t *f) {
  if (f->n != 2 || d->nkeys - f->keys != 2)
    return false;
  const size_t *k = d->keys + f->keys;
  size_t ds = 0, de = 0;
  bool type_ok = false;
  for (size_t i = 0; i < 2; i++) {
    uint32_t kl;
    const uint8_t *key = entry_key(d, k, i, &kl);
    size_t vs = k[i] + HDR + kl, ve = entry_end(d, k, 2, i);
    if (key_is(key, kl, "type"))
      type_ok = ve - vs == HDR + 6 && d->out[vs] == MP_STR32 &&
                memcmp(d->out + vs + HDR, "Buffer", 6) == 0;
    else if (key_is(key, kl, "data") && d->out[vs] == MP_ARRAY32)
      ds = vs, de = ve;
  }
  if (!type_ok || de == 0)
    return false;
  uint32_t m = rd32(d->out + ds + 1), got = 0;
  size_t p = ds + HDR;
  while (p < de && got <= m) {
    p += d->out[p] < 0x80 ? 1 : d->out[p] == 0xcc && p + 1 < de ? 2 : de;
    got++;
  }
  if (p != de || got != m)
    return false;
  uint8_t h[HDR];
  size_t hl = m < 256 ? 2 : m < 65536 ? 3 : 5;
  h[0] = m < 256 ? 0xc4 : m < 65536 ? 0xc5 : 0xc6;
  for (size_t i = 1; i < hl; i++)
    h[i] = (uint8_t)(m >> (8 * (hl - 1 - i)));
  size_t w = f->hdr;
  memcpy(d->out + w, h, hl); /* the writes stay behind the reads */
  w += hl;
  for (p = ds + HDR; p < de; p += d->out[p] < 0x80 ? 1 : 2)
    d->out[w++] = d->out[p] < 0x80 ? d->out[p] : d->out[p + 1];
  d->len = w;
  return true;
}

/* The innermost container ends. Containers count against the limit unless
 * they become a bin; an array past the limit inside an object is judged when
 * the object ends (it may be a Buffer's data). */
static int close_container(dec_t *d) {
  frame_t f = d->fr[--d->depth];
  size_t level = d->depth + 1;
  bool bin = false;
  if (f.obj) {
    int rc = dedup(d, &f);
    if (rc != 0)
      return rc;
    bin = buffer_form(d, &f);
    d->nkeys = f.keys;
  }
  if (!bin)
    wr32(d->out + f.hdr + 1, f.n);
  if (bin || level <= DEPTH_MAX)
    d->too_deep |= f.obj && f.deep_child && !bin;
  else if (!f.obj && d->depth > 0 && d->fr[d->depth - 1].obj)
    d->fr[d->depth - 1].deep_child = true;
  else
    d->too_deep = true;
  return 0;
}

/* Parses the whole line into d->out (placeholder headers). */
static int dec_run(dec_t *d) {
  int rc;
  for (;;) {
    skip_ws(d);
    if (d->s >= d->end)
      return WEFT_EPROTO;
    uint8_t c = *d->s;
    if ((c == '[' || c == '{') && d->depth >= DEPTH_MAX + 2) {
      rc = skim(d);
    } else if (c == '[' || c == '{') {
      if ((rc = open_container(d, c == '{')) != 0)
        return rc;
      skip_ws(d);
      if (d->s < d->end && *d->s == (c == '{' ? '}' : ']')) {
        d->s++;
        rc = close_container(d);
      } else {
        if (c == '{' && (rc = parse_key(d)) != 0)
          return rc;
        continue; /* the first element */
      }
    } else {
      rc = parse_scalar(d);
    }
    if (rc != 0)
      return rc;
    /* A value ended: end the containers it completes. */
    for (;;) {
      if (d->depth == 0) {
        skip_ws(d);
        return d->s == d->end ? 0 : WEFT_EPROTO;
      }
      frame_t *f = &d->fr[d->depth - 1];
      if (!f->obj)
        f->n++;
      skip_ws(d);
      if (d->s >= d->end)
        return WEFT_EPROTO;
      c = *d->s++;
      if (c == ',') {
        if (f->obj && (rc = parse_key(d)) != 0)
          return rc;
        break;
      }
      if (c != (f->obj ? '}' : ']'))
        return WEFT_EPROTO;
      if ((rc = close_container(d)) != 0)
        return rc;
    }
  }
}

/* Placeholder headers to their shortest forms, in one flat pass. */
static size_t compact(uint8_t *p, size_t len) {
  size_t r = 0, w = 0;
  while (r < len) {
    uint8_t t = p[r];
    size_t body = 0, hl = 1;
    if (t == MP_ARRAY32 || t == MP_MAP32 || t == MP_STR32) {
      uint32_t n = rd32(p + r + 1);
      uint8_t h[HDR];
      size_t k;
      bool str = t == MP_STR32;
      if (n < (str ? 32u : 16u)) {
        h[0] = (uint8_t)((str ? 0xa0 : t == MP_MAP32 ? 0x80 : 0x90) | n);
        k = 1;
      } else if (str && n < 256) {
        h[0] = 0xd9, h[1] = (uint8_t)n, k = 2;
      } else if (n < 65536) {
        h[0] = (uint8_t)(t - 1), h[1] = (uint8_t)(n >> 8), h[2] = (uint8_t)n, k = 3;
      } else {
        memcpy(h, p + r, HDR);
        k = HDR;
      }
      memcpy(p + w, h, k);
      w += k;
      r += HDR;
      body = str ? n : 0;
      hl = 0;
    } else if (t == 0xc4 || t == 0xc5 || t == 0xc6) {
      hl = t == 0xc4 ? 2 : t == 0xc5 ? 3 : 5;
      body = t == 0xc4 ? p[r + 1]
             : t == 0xc5 ? (size_t)p[r + 1] << 8 | p[r + 2]
                         : rd32(p + r + 1);
    } else if (t >= 0xcc && t <= 0xd3) {
      hl = 1 + ((size_t)1 << ((t - 0xcc) & 3));
    } else if (t == 0xcb) {
      hl = 9;
    }
    memmove(p + w, p + r, hl + body);
    w += hl + body;
    r += hl + body;
  }
  return w;
}

/* Moves c past one whole value of any depth (flat: no recursion, no limit). */
static int mp_skip_flat(weft__mp_cur_t *c) {
  uint64_t left = 1;
  while (left > 0) {
    weft__mp_val_t v;
    int rc = weft__mp_next(c, &v);
    if (rc != 0)
      return rc;
    left--;
    if (v.type == WEFT__MP_ARRAY)
      left += v.v.n;
    else if (v.type == WEFT__MP_MAP)
      left += 2 * (uint64_t)v.v.n;
  }
  return 0;
}

typedef struct {
  bool set;
  weft__mp_val_t v;        /* its header */
  const uint8_t *p, *end;  /* the whole value */
} member_t;

/* The members of a top-level map that make a line internal (keys are unique
 * by now). */
static void find_members(const uint8_t *buf, size_t len, member_t m[4]) {
  static const char *const names[4] = {"cmd", "type", "key", "msg"};
  weft__mp_cur_t c = {buf, buf + len};
  weft__mp_val_t map, k;
  memset(m, 0, 4 * sizeof(*m));
  if (weft__mp_next(&c, &map) != 0 || map.type != WEFT__MP_MAP)
    return;
  for (uint32_t i = 0; i < map.v.n; i++) {
    if (weft__mp_next(&c, &k) != 0 || k.type != WEFT__MP_STR)
      return;
    member_t cur = {true, {0}, c.p, NULL};
    weft__mp_cur_t at = c;
    if (weft__mp_next(&at, &cur.v) != 0 || mp_skip_flat(&c) != 0)
      return;
    cur.end = c.p;
    for (int j = 0; j < 4; j++)
      if (str_is((const char *)k.v.raw.p, k.v.raw.n, names[j]))
        m[j] = cur;
  }
}

static int msg_from(const uint8_t *p, size_t n, weft_msg_t **out) {
  weft_msg_t *m;
  int rc = weft_msg_new(&m);
  if (rc != 0)
    return rc;
  msgpack_packer *pk = weft_msg_packer(m);
  if (pk->callback(pk->data, (const char *)p, n) != 0) {
    rc = weft_msg_error(m);
    weft_msg_free(m);
    return rc != 0 ? rc : WEFT_ENOMEM;
  }
  *out = m;
  return 0;
}

/* A weft__malloc'd C copy of a str member; WEFT_EPROTO if it holds a NUL. */
static int copy_str(const member_t *m, char **out) {
  size_t n = m->v.v.raw.n;
  const uint8_t *p = m->v.v.raw.p;
  if (memchr(p, '\0', n) != NULL)
    return WEFT_EPROTO;
  char *c = weft__malloc(n + 1);
  if (c == NULL)
    return WEFT_ENOMEM;
  memcpy(c, p, n);
  c[n] = '\0';
  *out = c;
  return 0;
}

static int classify_internal(const uint8_t *buf, size_t len, const member_t m[4],
                             weft__nodejson_in_t *out) {
  const member_t *cmd = &m[0], *type = &m[1], *key = &m[2], *msg = &m[3];
  int rc = copy_str(cmd, &out->cmd);
  if (rc == 0 && key->set && key->v.type == WEFT__MP_STR)
    rc = copy_str(key, &out->key);
  if (rc != 0)
    return rc;
  const char *name = out->cmd;
  if (strcmp(name, "NODE_HANDLE") == 0) {
    out->kind = WEFT__NODEJSON_NODE_HANDLE;
    if (!type->set || type->v.type != WEFT__MP_STR)
      return WEFT_EPROTO;
    if ((rc = copy_str(type, &out->handle_type)) != 0)
      return rc;
    static const uint8_t nil = 0xc0;
    return msg->set ? msg_from(msg->p, (size_t)(msg->end - msg->p), &out->msg)
                    : msg_from(&nil, 1, &out->msg);
  }
  if (strcmp(name, "NODE_HANDLE_ACK") == 0 || strcmp(name, "NODE_HANDLE_NACK") == 0) {
    out->kind = strcmp(name, "NODE_HANDLE_ACK") == 0 ? WEFT__NODEJSON_NODE_HANDLE_ACK
                                                     : WEFT__NODEJSON_NODE_HANDLE_NACK;
    return 0;
  }
  out->kind = WEFT__NODEJSON_NODE_OTHER;
  return msg_from(buf, len, &out->msg);
}

static int classify(const uint8_t *buf, size_t len, weft__nodejson_in_t *out) {
  member_t m[4];
  find_members(buf, len, m);
  if (m[0].set && m[0].v.type == WEFT__MP_STR &&
      internal_name((const char *)m[0].v.v.raw.p, m[0].v.v.raw.n))
    return classify_internal(buf, len, m, out);
  out->kind = WEFT__NODEJSON_USER;
  return msg_from(buf, len, &out->msg);
}

int weft__nodejson_decode(const char *line, size_t len, weft__nodejson_in_t *out) {
  if (out == NULL)
    return WEFT_EINVAL;
  memset(out, 0, sizeof(*out));
  if (line == NULL && len > 0)
    return WEFT_EINVAL;
  dec_t d = {0};
  d.s = (const uint8_t *)(line != NULL ? line : "");
  d.end = d.s + len;
  /* The payload is mostly smaller than its JSON: one allocation, usually. */
  void *o = NULL;
  int rc = len < UINT32_MAX - 16 ? grow(&o, &d.cap, len + 16, 1) : 0;
  d.out = o;
  if (rc == 0)
    rc = dec_run(&d);
  if (rc == 0) {
    d.len = compact(d.out, d.len);
    rc = classify(d.out, d.len, out);
  }
  if (rc == 0 && d.too_deep) {
    weft_msg_free(out->msg); /* what the line was stays in out */
    out->msg = NULL;
    rc = WEFT_EUNREPRESENTABLE;
  }
  weft__free(d.out);
  weft__free(d.fr);
  weft__free(d.keys);
  if (rc != 0 && rc != WEFT_EUNREPRESENTABLE)
    weft__nodejson_in_fini(out);
  return rc;
}

void weft__nodejson_in_fini(weft__nodejson_in_t *in) {
  weft_msg_free(in->msg);
  weft__free(in->cmd);
  weft__free(in->handle_type);
  weft__free(in->key);
  memset(in, 0, sizeof(*in));
}

/* ---- encoding: msgpack -> line ------------------------------------------------- */

typedef struct {
  char *p;
  size_t len;
  size_t cap;
  bool nomem;
} sbuf_t;

static void sb_put(sbuf_t *sb, const void *buf, size_t n) {
  if (sb->nomem || n == 0)
    return;
  if (n > SIZE_MAX / 2 - sb->len) {
    sb->nomem = true;
    return;
  }
  if (sb->len + n > sb->cap) {
    size_t cap = sb->cap < 64 ? 64 : sb->cap;
    while (cap < sb->len + n)
      cap *= 2;
    char *np = weft__realloc(sb->p, cap);
    if (np == NULL) {
      sb->nomem = true;
      return;
    }
    sb->p = np;
    sb->cap = cap;
  }
  memcpy(sb->p + sb->len, buf, n);
  sb->len += n;
}

static void sb_lit(sbuf_t *sb, const char *s) { sb_put(sb, s, strlen(s)); }

/* A JSON string as JSON.stringify writes it: '"', '\\' and control
 * characters escaped (\b \f \n \r \t, else \u00xx), a WTF-8 surrogate as
 * its \udxxx escape, everything else as is. s is valid WTF-8. */
static void put_jstr(sbuf_t *sb, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sb_put(sb, "\"", 1);
  size_t run = 0, i = 0;
  while (i < n) {
    uint8_t c = s[i];
    char esc[7] = {'\\', 0};
    size_t el = 2, adv = 1;
    unsigned u = c;
    if (c == '"' || c == '\\') {
      esc[1] = (char)c;
    } else if (c < 0x20 || (c == 0xED && s[i + 1] >= 0xA0)) {
      const char *named = c == '\b' ? "b" : c == '\f' ? "f" : c == '\n' ? "n"
                          : c == '\r' ? "r" : c == '\t' ? "t" : NULL;
      if (c == 0xED) {
        u = 0xD000u | (unsigned)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3Fu);
        adv = 3;
      }
      if (named != NULL) {
        esc[1] = named[0];
      } else {
        esc[1] = 'u';
        for (int k = 0; k < 4; k++)
          esc[2 + k] = hex[(u >> (12 - 4 * k)) & 0xF];
        el = 6;
      }
    } else {
      i++;
      continue;
    }
    sb_put(sb, s + run, i - run);
    sb_put(sb, esc, el);
    i += adv;
    run = i;
  }
  sb_put(sb, s + run, n - run);
  sb_put(sb, "\"", 1);
}

/* A finite double as a JSON number: 17 significant digits (an exact round
 * trip), ".0" when it would read as an integer, exponent without '+' or
 * leading zeros; '.' whatever the C locale. */
static void put_double(sbuf_t *sb, double f) {
  char b[40];
  int n = snprintf(b, sizeof(b), "%.17g", f);
  if (n < 0 || (size_t)n >= sizeof(b))
    n = 0; /* cannot happen for %.17g */
  const char *point = localeconv()->decimal_point;
  char *dot = point[0] != '\0' && point[0] != '.' ? strchr(b, point[0]) : NULL;
  if (dot != NULL)
    *dot = '.';
  char *e = strchr(b, 'e');
  if (e == NULL && strchr(b, '.') == NULL) {
    memcpy(b + n, ".0", 3);
    n += 2;
  } else if (e != NULL) {
    char *d = e + 1, *s = e + 1;
    if (*s == '+' || *s == '-')
      s++;
    if (*d == '-')
      d++;
    while (*s == '0' && s[1] != '\0')
      s++;
    memmove(d, s, strlen(s) + 1);
    n = (int)strlen(b);
  }
  sb_put(sb, b, (size_t)n);
}

static void put_buffer(sbuf_t *sb, const uint8_t *p, uint32_t n) {
  sb_lit(sb, "{\"type\":\"Buffer\",\"data\":[");
  for (uint32_t i = 0; i < n; i++) {
    char b[5];
    int k = snprintf(b, sizeof(b), i ? ",%u" : "%u", (unsigned)p[i]);
    sb_put(sb, b, (size_t)k);
  }
  sb_lit(sb, "]}");
}

static int put_scalar(sbuf_t *sb, const weft__mp_val_t *v) {
  char b[24];
  switch (v->type) {
  case WEFT__MP_NIL:
    sb_lit(sb, "null");
    return 0;
  case WEFT__MP_BOOL:
    sb_lit(sb, v->v.b ? "true" : "false");
    return 0;
  case WEFT__MP_UINT:
    if (v->v.u > (uint64_t)INT64_MAX)
      return WEFT_ETYPE;
    sb_put(sb, b, (size_t)snprintf(b, sizeof(b), "%" PRIu64, v->v.u));
    return 0;
  case WEFT__MP_INT:
    sb_put(sb, b, (size_t)snprintf(b, sizeof(b), "%" PRId64, v->v.i));
    return 0;
  case WEFT__MP_F32:
  case WEFT__MP_F64:
    if (isfinite(v->v.f))
      put_double(sb, v->v.f);
    else
      sb_lit(sb, "null"); /* like JSON.stringify */
    return 0;
  case WEFT__MP_STR:
    if (!wtf8_valid(v->v.raw.p, v->v.raw.n))
      return WEFT_ETYPE;
    put_jstr(sb, v->v.raw.p, v->v.raw.n);
    return 0;
  case WEFT__MP_BIN:
    put_buffer(sb, v->v.raw.p, v->v.raw.n);
    return 0;
  default:
    return WEFT_ETYPE; /* ext */
  }
}

/* A map key (a WTF-8 str) and its ':'. */
static int put_key(weft__mp_cur_t *c, sbuf_t *sb) {
  weft__mp_val_t k;
  int rc = weft__mp_next(c, &k);
  if (rc != 0)
    return rc;
  if (k.type != WEFT__MP_STR || !wtf8_valid(k.v.raw.p, k.v.raw.n))
    return WEFT_ETYPE;
  put_jstr(sb, k.v.raw.p, k.v.raw.n);
  sb_put(sb, ":", 1);
  return 0;
}

typedef struct {
  uint32_t left; /* elements or entries not yet ended */
  bool map;
} eframe_t;

/* One msgpack value (the whole payload) as JSON, without recursion: the open
 * containers are on a stack grown on the heap past 32 levels. */
static int put_payload(sbuf_t *sb, const void *payload, size_t len) {
  weft__mp_cur_t c = {payload, (const uint8_t *)payload + len};
  eframe_t small[32], *st = small;
  size_t depth = 0, cap = 32;
  int rc = 0;
  for (;;) {
    weft__mp_val_t v;
    if ((rc = weft__mp_next(&c, &v)) != 0)
      break;
    if (v.type == WEFT__MP_ARRAY || v.type == WEFT__MP_MAP) {
      bool map = v.type == WEFT__MP_MAP;
      if (depth >= DEPTH_MAX) {
        rc = WEFT_EUNREPRESENTABLE;
        break;
      }
      sb_put(sb, map ? "{" : "[", 1);
      if (v.v.n > 0) {
        if (depth == cap) {
          eframe_t *ns = weft__malloc(2 * cap * sizeof(*ns));
          if (ns == NULL) {
            rc = WEFT_ENOMEM;
            break;
          }
          memcpy(ns, st, depth * sizeof(*ns));
          if (st != small)
            weft__free(st);
          st = ns;
          cap *= 2;
        }
        st[depth++] = (eframe_t){v.v.n, map};
        if (map && (rc = put_key(&c, sb)) != 0)
          break;
        continue; /* the first element */
      }
      sb_put(sb, map ? "}" : "]", 1);
    } else if ((rc = put_scalar(sb, &v)) != 0) {
      break;
    }
    /* A value ended: end the containers it completes. */
    while (depth > 0 && --st[depth - 1].left == 0) {
      sb_put(sb, st[depth - 1].map ? "}" : "]", 1);
      depth--;
    }
    if (depth == 0)
      break;
    sb_put(sb, ",", 1);
    if (st[depth - 1].map && (rc = put_key(&c, sb)) != 0)
      break;
  }
  if (st != small)
    weft__free(st);
  if (rc == 0 && c.p != c.end)
    rc = WEFT_EPROTO;
  return rc;
}

/* sb as one line: '\n', then a NUL not counted in *outlen. Frees sb on error. */
static int finish_line(sbuf_t *sb, int rc, char **out, size_t *outlen) {
  if (rc == 0)
    sb_put(sb, "\n", 2); /* the '\n' and the NUL */
  if (rc == 0 && sb->nomem)
    rc = WEFT_ENOMEM;
  if (rc != 0) {
    weft__free(sb->p);
    return rc;
  }
  *out = sb->p;
  *outlen = sb->len - 1;
  return 0;
}

static bool cstr_utf8(const char *s) {
  return utf8_valid((const uint8_t *)s, strlen(s));
}

int weft__nodejson_encode(const void *payload, size_t len, const char *handle_type,
                          char **out, size_t *outlen) {
  if (payload == NULL || out == NULL || outlen == NULL ||
      (handle_type != NULL && !cstr_utf8(handle_type)))
    return WEFT_EINVAL;
  sbuf_t sb = {NULL, 0, 0, false};
  if (handle_type != NULL) {
    sb_lit(&sb, "{\"cmd\":\"NODE_HANDLE\",\"type\":");
    put_jstr(&sb, (const uint8_t *)handle_type, strlen(handle_type));
    sb_lit(&sb, ",\"msg\":");
  }
  int rc = put_payload(&sb, payload, len);
  if (handle_type != NULL)
    sb_put(&sb, "}", 1);
  return finish_line(&sb, rc, out, outlen);
}

/* Moves c past one value; *v is its header. */
static int next_whole(weft__mp_cur_t *c, weft__mp_val_t *v) {
  weft__mp_cur_t at = *c;
  int rc = weft__mp_next(&at, v);
  if (rc == 0)
    rc = mp_skip_flat(c);
  return rc;
}

bool weft__nodejson_is_internal(const void *payload, size_t len) {
  if (payload == NULL)
    return false;
  weft__mp_cur_t c = {payload, (const uint8_t *)payload + len};
  weft__mp_val_t map, k, v;
  if (weft__mp_next(&c, &map) != 0 || map.type != WEFT__MP_MAP)
    return false;
  bool internal = false;
  for (uint32_t i = 0; i < map.v.n; i++) {
    if (next_whole(&c, &k) != 0 || next_whole(&c, &v) != 0)
      return false;
    if (k.type == WEFT__MP_STR && str_is((const char *)k.v.raw.p, k.v.raw.n, "cmd"))
      internal = v.type == WEFT__MP_STR &&
                 internal_name((const char *)v.v.raw.p, v.v.raw.n);
  }
  return internal && c.p == c.end;
}

int weft__nodejson_control(const char *cmd, const char *key, int64_t count, char **out,
                           size_t *outlen) {
  if (cmd == NULL || out == NULL || outlen == NULL || !internal_name(cmd, strlen(cmd)) ||
      !cstr_utf8(cmd) || (key != NULL && !cstr_utf8(key)))
    return WEFT_EINVAL;
  sbuf_t sb = {NULL, 0, 0, false};
  sb_lit(&sb, "{\"cmd\":");
  put_jstr(&sb, (const uint8_t *)cmd, strlen(cmd));
  if (key != NULL) {
    sb_lit(&sb, ",\"key\":");
    put_jstr(&sb, (const uint8_t *)key, strlen(key));
  }
  if (count >= 0) {
    char b[32];
    sb_put(&sb, b, (size_t)snprintf(b, sizeof(b), ",\"count\":%" PRId64, count));
  }
  sb_put(&sb, "}", 1);
  return finish_line(&sb, 0, out, outlen);
}
