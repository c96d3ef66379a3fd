/* nodejson.c: Node.js 'json' IPC lines <-> weft msgpack payloads (contract in
 * nodejson.h; the wire in the shared reference node-ipc-json.md).
 *
 * Three independent parts. The line buffer stores raw bytes and cuts them at
 * '\n'; it checks line lengths on the bytes being fed, before it grows, so a
 * peer that never sends '\n' costs at most max bytes. The decoder parses a
 * line with jansson (strict: one value, valid UTF-8, no trailing bytes) and
 * packs the tree into a new message with msgpack-c's packer; the encoder walks
 * a payload with the bounds-checked weft cursor (msgread.h) into a jansson
 * tree and dumps it compact. Both directions apply the same value mapping and
 * the same nesting limit (counted on the msgpack shape), so decode followed by
 * encode followed by decode gives the same payload back. Recursion depth is
 * bounded by WEFT__NODEJSON_MAX_DEPTH (jansson's own parser stops at 2048).
 *
 * Invariant of every line produced here: compact JSON from jansson's dumper
 * (which escapes every control character in strings), one '\n' at the end and
 * none inside; never empty.
 *
 * Threads: no shared state; jansson keeps none either beyond its hash seed,
 * which it initialises once with atomics. */
#include <jansson.h>
#include <math.h>
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

/* True if s[0, n) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF): the same rule jansson applies when it parses. */
static bool utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t b = s[i];
    size_t more;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      more = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      more = 2;
      lo = b == 0xE0 ? 0xA0 : 0x80;
      hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
      more = 3;
      lo = b == 0xF0 ? 0x90 : 0x80;
      hi = b == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (n - i - 1 < more || s[i + 1] < lo || s[i + 1] > hi)
      return false;
    for (size_t k = 2; k <= more; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
    i += more + 1;
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

/* ---- decoding: jansson tree -> msgpack ------------------------------------- */

typedef struct {
  weft_msg_t *msg;
  msgpack_packer *pk;
  bool ints_as_reals; /* the line was parsed with JSON_DECODE_INT_AS_REAL */
} conv_t;

static int pack_value(const conv_t *cv, const json_t *v, unsigned depth);

/* A packer call's result as a weft code (the message keeps the cause). */
static int packed(const conv_t *cv, int rc) {
  if (rc == 0)
    return 0;
  int err = weft_msg_error(cv->msg);
  return err != 0 ? err : WEFT_ENOMEM;
}

/* True and *out set if v is an integer of the line (see nodejson.h: in a line
 * parsed as doubles, an integral double in int64 range). */
static bool json_as_int(const conv_t *cv, const json_t *v, int64_t *out) {
  if (json_is_integer(v)) {
    *out = (int64_t)json_integer_value(v);
    return true;
  }
  if (!cv->ints_as_reals || !json_is_real(v))
    return false;
  double d = json_real_value(v);
  if (!(d >= -0x1p63 && d < 0x1p63) || (double)(int64_t)d != d)
    return false;
  *out = (int64_t)d;
  return true;
}

/* Node's Buffer.toJSON(): {"type":"Buffer","data":[bytes]} and nothing else. */
static bool is_buffer_form(const conv_t *cv, const json_t *obj) {
  if (json_object_size(obj) != 2)
    return false;
  const json_t *type = json_object_get(obj, "type");
  const json_t *data = json_object_get(obj, "data");
  if (!json_is_string(type) || !json_is_array(data) ||
      !str_is(json_string_value(type), json_string_length(type), "Buffer"))
    return false;
  size_t i;
  const json_t *e;
  json_array_foreach(data, i, e) {
    int64_t b;
    if (!json_as_int(cv, e, &b) || b < 0 || b > 255)
      return false;
  }
  return true;
}

static int pack_bin(const conv_t *cv, const json_t *data) {
  size_t n = json_array_size(data);
  if (n > UINT32_MAX)
    return WEFT_EMSGSIZE;
  int rc = packed(cv, msgpack_pack_bin(cv->pk, n));
  char chunk[512];
  size_t used = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    int64_t b = 0;
    (void)json_as_int(cv, json_array_get(data, i), &b); /* checked by is_buffer_form */
    chunk[used++] = (char)(uint8_t)b;
    if (used == sizeof(chunk) || i + 1 == n) {
      rc = packed(cv, msgpack_pack_bin_body(cv->pk, chunk, used));
      used = 0;
    }
  }
  return rc;
}

static int pack_str(const conv_t *cv, const char *s, size_t n) {
  if (n > UINT32_MAX)
    return WEFT_EMSGSIZE;
  int rc = packed(cv, msgpack_pack_str(cv->pk, n));
  if (rc == 0 && n > 0)
    rc = packed(cv, msgpack_pack_str_body(cv->pk, s, n));
  return rc;
}

static int pack_array(const conv_t *cv, const json_t *v, unsigned depth) {
  size_t n = json_array_size(v);
  if (n > UINT32_MAX)
    return WEFT_EMSGSIZE;
  int rc = packed(cv, msgpack_pack_array(cv->pk, n));
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = pack_value(cv, json_array_get(v, i), depth + 1);
  return rc;
}

static int pack_object(const conv_t *cv, const json_t *v, unsigned depth) {
  size_t n = json_object_size(v);
  if (n > UINT32_MAX)
    return WEFT_EMSGSIZE;
  int rc = packed(cv, msgpack_pack_map(cv->pk, n));
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach((json_t *)v, key, klen, val) {
    if (rc == 0)
      rc = pack_str(cv, key, klen);
    if (rc == 0)
      rc = pack_value(cv, val, depth + 1);
    if (rc != 0)
      break;
  }
  return rc;
}

/* Packs v, nested in depth containers already. */
static int pack_value(const conv_t *cv, const json_t *v, unsigned depth) {
  int64_t i;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    if (is_buffer_form(cv, v))
      return pack_bin(cv, json_object_get(v, "data"));
    return depth >= DEPTH_MAX ? WEFT_EPROTO : pack_object(cv, v, depth);
  case JSON_ARRAY:
    return depth >= DEPTH_MAX ? WEFT_EPROTO : pack_array(cv, v, depth);
  case JSON_STRING:
    return pack_str(cv, json_string_value(v), json_string_length(v));
  case JSON_INTEGER:
  case JSON_REAL:
    if (json_as_int(cv, v, &i))
      return packed(cv, msgpack_pack_int64(cv->pk, i));
    return packed(cv, msgpack_pack_double(cv->pk, json_real_value(v)));
  case JSON_TRUE:
    return packed(cv, msgpack_pack_true(cv->pk));
  case JSON_FALSE:
    return packed(cv, msgpack_pack_false(cv->pk));
  default:
    return packed(cv, msgpack_pack_nil(cv->pk));
  }
}

/* A new message holding v. */
static int value_to_msg(bool ints_as_reals, const json_t *v, weft_msg_t **out) {
  weft_msg_t *m;
  int rc = weft_msg_new(&m);
  if (rc != 0)
    return rc;
  conv_t cv = {m, weft_msg_packer(m), ints_as_reals};
  rc = pack_value(&cv, v, 0);
  if (rc != 0) {
    weft_msg_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* Parses the line; integers past int64 make it parse again with every number
 * as a double (nodejson.h). */
static int parse_line(const char *line, size_t len, json_t **root, bool *ints_as_reals) {
  const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
  json_error_t e;
  *ints_as_reals = false;
  if (memchr(line, '\0', len) != NULL)
    return WEFT_EPROTO; /* never valid JSON, yet jansson skips it between tokens */
  json_t *j = json_loadb(line, len, flags, &e);
  if (j == NULL && json_error_code(&e) == json_error_numeric_overflow) {
    *ints_as_reals = true;
    j = json_loadb(line, len, flags | JSON_DECODE_INT_AS_REAL, &e);
  }
  if (j == NULL)
    return json_error_code(&e) == json_error_out_of_memory ? WEFT_ENOMEM : WEFT_EPROTO;
  *root = j;
  return 0;
}

/* A weft__malloc'd C copy of the string s; WEFT_EPROTO if it holds a NUL. */
static int copy_str(const json_t *s, char **out) {
  size_t n = json_string_length(s);
  const char *p = json_string_value(s);
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

/* The "cmd" member if root is an internal message, else NULL. */
static const json_t *internal_cmd(const json_t *root) {
  if (!json_is_object(root))
    return NULL;
  const json_t *cmd = json_object_get(root, "cmd");
  if (!json_is_string(cmd) || !internal_name(json_string_value(cmd), json_string_length(cmd)))
    return NULL;
  return cmd;
}

static int decode_handle(const json_t *root, bool ints_as_reals, weft__nodejson_in_t *out) {
  const json_t *type = json_object_get(root, "type");
  if (!json_is_string(type))
    return WEFT_EPROTO;
  int rc = copy_str(type, &out->handle_type);
  if (rc != 0)
    return rc;
  const json_t *msg = json_object_get(root, "msg");
  out->kind = WEFT__NODEJSON_NODE_HANDLE;
  return value_to_msg(ints_as_reals, msg != NULL ? msg : json_null(), &out->msg);
}

static int decode_internal(const json_t *root, const json_t *cmd, bool ints_as_reals,
                           weft__nodejson_in_t *out) {
  int rc = copy_str(cmd, &out->cmd);
  const json_t *key = json_object_get(root, "key");
  if (rc == 0 && json_is_string(key))
    rc = copy_str(key, &out->key);
  if (rc != 0)
    return rc;
  const char *name = json_string_value(cmd);
  size_t n = json_string_length(cmd);
  if (str_is(name, n, "NODE_HANDLE"))
    return decode_handle(root, ints_as_reals, out);
  if (str_is(name, n, "NODE_HANDLE_ACK")) {
    out->kind = WEFT__NODEJSON_NODE_HANDLE_ACK;
    return 0;
  }
  if (str_is(name, n, "NODE_HANDLE_NACK")) {
    out->kind = WEFT__NODEJSON_NODE_HANDLE_NACK;
    return 0;
  }
  out->kind = WEFT__NODEJSON_NODE_OTHER;
  return value_to_msg(ints_as_reals, root, &out->msg);
}

int weft__nodejson_decode(const char *line, size_t len, weft__nodejson_in_t *out) {
  if (out == NULL)
    return WEFT_EINVAL;
  memset(out, 0, sizeof(*out));
  if (line == NULL && len > 0)
    return WEFT_EINVAL;
  json_t *root;
  bool ints_as_reals;
  int rc = parse_line(line != NULL ? line : "", len, &root, &ints_as_reals);
  if (rc != 0)
    return rc;
  const json_t *cmd = internal_cmd(root);
  if (cmd != NULL) {
    rc = decode_internal(root, cmd, ints_as_reals, out);
  } else {
    out->kind = WEFT__NODEJSON_USER;
    rc = value_to_msg(ints_as_reals, root, &out->msg);
  }
  json_decref(root);
  if (rc != 0)
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

/* ---- encoding: msgpack -> jansson tree -> line ------------------------------- */

static int build_value(weft__mp_cur_t *c, unsigned depth, json_t **out);

/* Node's Buffer.toJSON() form of a bin. */
static json_t *build_buffer(const uint8_t *p, uint32_t n) {
  json_t *obj = json_object();
  json_t *data = json_array();
  if (obj == NULL || data == NULL ||
      json_object_set_new_nocheck(obj, "type", json_string_nocheck("Buffer")) != 0) {
    json_decref(data);
    json_decref(obj);
    return NULL;
  }
  if (json_object_set_new_nocheck(obj, "data", data) != 0) {
    json_decref(obj);
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (json_array_append_new(data, json_integer(p[i])) != 0) {
      json_decref(obj);
      return NULL;
    }
  }
  return obj;
}

static int build_scalar(const weft__mp_val_t *v, json_t **out) {
  switch (v->type) {
  case WEFT__MP_NIL:
    *out = json_null();
    return 0;
  case WEFT__MP_BOOL:
    *out = json_boolean(v->v.b);
    return 0;
  case WEFT__MP_UINT:
    if (v->v.u > (uint64_t)INT64_MAX)
      return WEFT_ETYPE;
    *out = json_integer((json_int_t)v->v.u);
    break;
  case WEFT__MP_INT:
    *out = json_integer((json_int_t)v->v.i);
    break;
  case WEFT__MP_F32:
  case WEFT__MP_F64:
    *out = isfinite(v->v.f) ? json_real(v->v.f) : json_null();
    break;
  case WEFT__MP_STR:
    if (!utf8_valid(v->v.raw.p, v->v.raw.n))
      return WEFT_ETYPE;
    *out = json_stringn_nocheck((const char *)v->v.raw.p, v->v.raw.n);
    break;
  case WEFT__MP_BIN:
    *out = build_buffer(v->v.raw.p, v->v.raw.n);
    break;
  default:
    return WEFT_ETYPE; /* ext */
  }
  return *out != NULL ? 0 : WEFT_ENOMEM;
}

static int build_array(weft__mp_cur_t *c, uint32_t n, unsigned depth, json_t **out) {
  json_t *arr = json_array();
  if (arr == NULL)
    return WEFT_ENOMEM;
  int rc = 0;
  for (uint32_t i = 0; i < n && rc == 0; i++) {
    json_t *e;
    rc = build_value(c, depth + 1, &e);
    if (rc == 0 && json_array_append_new(arr, e) != 0)
      rc = WEFT_ENOMEM;
  }
  if (rc != 0) {
    json_decref(arr);
    return rc;
  }
  *out = arr;
  return 0;
}

/* One map entry into obj: a str key (valid UTF-8), then its value. */
static int build_entry(weft__mp_cur_t *c, json_t *obj, unsigned depth) {
  weft__mp_val_t k;
  int rc = weft__mp_next(c, &k);
  if (rc != 0)
    return rc;
  if (k.type != WEFT__MP_STR || !utf8_valid(k.v.raw.p, k.v.raw.n))
    return WEFT_ETYPE;
  json_t *val;
  rc = build_value(c, depth + 1, &val);
  if (rc != 0)
    return rc;
  return json_object_setn_new_nocheck(obj, (const char *)k.v.raw.p, k.v.raw.n, val) == 0
             ? 0
             : WEFT_ENOMEM;
}

static int build_map(weft__mp_cur_t *c, uint32_t n, unsigned depth, json_t **out) {
  json_t *obj = json_object();
  if (obj == NULL)
    return WEFT_ENOMEM;
  int rc = 0;
  for (uint32_t i = 0; i < n && rc == 0; i++)
    rc = build_entry(c, obj, depth);
  if (rc != 0) {
    json_decref(obj);
    return rc;
  }
  *out = obj;
  return 0;
}

/* The next value at c, nested in depth containers already. */
static int build_value(weft__mp_cur_t *c, unsigned depth, json_t **out) {
  weft__mp_val_t v;
  int rc = weft__mp_next(c, &v);
  if (rc != 0)
    return rc;
  if (v.type == WEFT__MP_ARRAY || v.type == WEFT__MP_MAP) {
    if (depth >= DEPTH_MAX)
      return WEFT_EPROTO;
    return v.type == WEFT__MP_ARRAY ? build_array(c, v.v.n, depth, out)
                                    : build_map(c, v.v.n, depth, out);
  }
  return build_scalar(&v, out);
}

/* The whole payload: exactly one value. */
static int build_payload(const void *payload, size_t len, json_t **out) {
  weft__mp_cur_t c = {payload, (const uint8_t *)payload + len};
  json_t *v;
  int rc = build_value(&c, 0, &v);
  if (rc != 0)
    return rc;
  if (c.p != c.end) {
    json_decref(v);
    return WEFT_EPROTO;
  }
  *out = v;
  return 0;
}

typedef struct {
  char *p;
  size_t len;
  size_t cap;
  bool nomem;
} sbuf_t;

static int sbuf_write(const char *buf, size_t n, void *data) {
  sbuf_t *sb = data;
  if (sb->nomem)
    return -1;
  if (n > SIZE_MAX / 2 - sb->len) {
    sb->nomem = true;
    return -1;
  }
  if (sb->len + n > sb->cap) {
    size_t cap = sb->cap < 64 ? 64 : sb->cap;
    while (cap < sb->len + n)
      cap *= 2;
    char *np = weft__realloc(sb->p, cap);
    if (np == NULL) {
      sb->nomem = true;
      return -1;
    }
    sb->p = np;
    sb->cap = cap;
  }
  memcpy(sb->p + sb->len, buf, n);
  sb->len += n;
  return 0;
}

/* root as one line: compact JSON, '\n', then a NUL not counted in *outlen.
 * sb.nomem is checked as well as jansson's result: jansson 2.14 ignores a
 * failed write of an object key. */
static int dump_line(const json_t *root, char **out, size_t *outlen) {
  sbuf_t sb = {NULL, 0, 0, false};
  int rc = json_dump_callback(root, sbuf_write, &sb, JSON_COMPACT | JSON_ENCODE_ANY);
  if (rc == 0 && sb.len > 0)
    rc = sbuf_write("\n", 2, &sb); /* the '\n' and the NUL */
  if (rc != 0 || sb.nomem || sb.len < 3) {
    /* jansson fails only on memory here: every string was checked first. */
    weft__free(sb.p);
    return WEFT_ENOMEM;
  }
  *out = sb.p;
  *outlen = sb.len - 1;
  return 0;
}

static bool cstr_utf8(const char *s) {
  return utf8_valid((const uint8_t *)s, strlen(s));
}

/* {"cmd":"NODE_HANDLE","type":type,"msg":v}; takes v. */
static json_t *wrap_handle(const char *type, json_t *v) {
  json_t *obj = json_object();
  if (obj == NULL ||
      json_object_set_new_nocheck(obj, "cmd", json_string_nocheck("NODE_HANDLE")) != 0 ||
      json_object_set_new_nocheck(obj, "type", json_string_nocheck(type)) != 0) {
    json_decref(obj);
    json_decref(v);
    return NULL;
  }
  if (json_object_set_new_nocheck(obj, "msg", v) != 0) {
    json_decref(obj);
    return NULL;
  }
  return obj;
}

int weft__nodejson_encode(const void *payload, size_t len, const char *handle_type,
                          char **out, size_t *outlen) {
  if (payload == NULL || out == NULL || outlen == NULL ||
      (handle_type != NULL && !cstr_utf8(handle_type)))
    return WEFT_EINVAL;
  json_t *root;
  int rc = build_payload(payload, len, &root);
  if (rc != 0)
    return rc;
  if (handle_type != NULL && (root = wrap_handle(handle_type, root)) == NULL)
    return WEFT_ENOMEM;
  rc = dump_line(root, out, outlen);
  json_decref(root);
  return rc;
}

/* Moves c past one value; *v is its header. */
static int next_whole(weft__mp_cur_t *c, weft__mp_val_t *v) {
  weft__mp_cur_t at = *c;
  int rc = weft__mp_next(&at, v);
  if (rc == 0)
    rc = weft__mp_skip(c, 1, WEFT__MP_MAX_DEPTH);
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
  json_t *obj = json_object();
  int rc = obj == NULL ? -1 : json_object_set_new_nocheck(obj, "cmd", json_string_nocheck(cmd));
  if (rc == 0 && key != NULL)
    rc = json_object_set_new_nocheck(obj, "key", json_string_nocheck(key));
  if (rc == 0 && count >= 0)
    rc = json_object_set_new_nocheck(obj, "count", json_integer((json_int_t)count));
  rc = rc == 0 ? dump_line(obj, out, outlen) : WEFT_ENOMEM;
  json_decref(obj);
  return rc;
}
