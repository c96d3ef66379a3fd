/* msg.c: messages: a flat msgpack payload plus a transfer list.
 *
 * Layout (struct weft_msg_s in weft_impl.h): the queue node comes first, so a
 * message is pushed on a port's inbox as is. The payload lives in inline_data
 * until it outgrows WEFT__MSG_INLINE bytes, then on the heap, doubling. A tiny
 * message therefore costs one struct (from the context's pool, msgpool.c, or
 * one allocation; never zeroed) and gives it back whole; the builders
 * allocate nothing until the inline area is full.
 *
 * Invariants: data == inline_data or a heap block of cap bytes; len <= cap.
 * err is the first build error; once set, the packer ignores further writes
 * (the payload is cut short and posting fails with err). view != NULL
 * holds the decoded payload; any change to the payload drops it.
 * xfer[0..nxfer) are the transfer items, kind 0 once taken.
 *
 * Threads: a message is used by the one thread that owns it. Posting hands it
 * over through the port's queue, which orders everything written here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msgread.h"
#include "weft_impl.h"

#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#ifdef WEFT__ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef WEFT_CHECKED_DEFAULT
#define WEFT_CHECKED_DEFAULT 0
#endif

#define XFER_MAX UINT16_MAX
#define VIEW_ZONE_CHUNK 2048
/* msgpack-c's nesting limit (MSGPACK_EMBED_STACK_SIZE, compiled into
 * libmsgpackc; test_msg checks that 32 decodes and 33 does not). */
#define VIEW_MAX_DEPTH 32

void weft__msg_view_drop(weft_msg_t *m) {
  if (m->view == NULL)
    return;
  msgpack_zone_destroy(&m->view->zone);
  weft__free(m->view);
  m->view = NULL;
}

/* Makes room for need more payload bytes. Returns 0 or an error code. */
static int payload_reserve(weft_msg_t *m, size_t need) {
  if (need > UINT32_MAX - m->len)
    return WEFT_EMSGSIZE;
  size_t want = (size_t)m->len + need;
  if (want <= m->cap)
    return 0;
  size_t cap = (size_t)m->cap * 2;
  if (cap < want)
    cap = want;
  if (cap > UINT32_MAX)
    cap = UINT32_MAX;
  uint8_t *heap = m->data == m->inline_data ? weft__malloc(cap) : weft__realloc(m->data, cap);
  if (heap == NULL)
    return WEFT_ENOMEM;
  if (m->data == m->inline_data)
    memcpy(heap, m->inline_data, m->len);
  m->data = heap;
  m->cap = (uint32_t)cap;
  return 0;
}

/* Room for n more bytes at the end of the payload (the decoded view goes),
 * or NULL with the first error kept in m->err. */
static uint8_t *room(weft_msg_t *m, size_t n) {
  if (m->err != 0)
    return NULL;
  if (n > (size_t)(m->cap - m->len)) {
    int rc = payload_reserve(m, n);
    if (rc != 0) {
      m->err = rc;
      return NULL;
    }
  }
  if (m->view != NULL)
    weft__msg_view_drop(m);
  return m->data + m->len;
}

/* The packer's write callback: append, or keep the first failure. */
static int payload_write(void *data, const char *buf, size_t len) {
  weft_msg_t *m = data;
  if (len == 0)
    return m->err; /* an empty str/bin body: buf may be NULL */
  uint8_t *p = room(m, len);
  if (p == NULL)
    return m->err;
  memcpy(p, buf, len);
  m->len += (uint32_t)len;
  return 0;
}

/* ---- checked mode ---------------------------------------------------------
 * Costs one branch on a flag in post and free when off. */

_Atomic bool weft__checked_flag = WEFT_CHECKED_DEFAULT;

void weft__check_configure(void) {
  const char *v = getenv("WEFT_CHECK");
  bool on = (v != NULL && *v != '\0') ? strcmp(v, "0") != 0 : WEFT_CHECKED_DEFAULT;
  atomic_store_explicit(&weft__checked_flag, on, memory_order_relaxed);
}

void weft__msg_poison(weft_msg_t *msg, bool on) {
#ifdef WEFT__ASAN
  char *body = (char *)&msg->data;
  size_t n = sizeof(*msg) - (size_t)(body - (char *)msg);
  if (on)
    ASAN_POISON_MEMORY_REGION(body, n);
  else
    ASAN_UNPOISON_MEMORY_REGION(body, n);
#else
  (void)msg;
  (void)on;
#endif
}

int weft__msg_check_post(weft_msg_t *msg) {
  return atomic_load_explicit(&msg->life, memory_order_relaxed) == WEFT__MSG_LIVE ? 0
                                                                                   : WEFT_ETAKEN;
}

bool weft__msg_mark_queued(weft_msg_t *msg) {
  uint32_t live = WEFT__MSG_LIVE;
  return atomic_compare_exchange_strong_explicit(&msg->life, &live, WEFT__MSG_QUEUED,
                                                 memory_order_relaxed, memory_order_relaxed);
}

/* A second free is reported here, at the call, not as a late double free. */
static void check_free(weft_msg_t *msg) {
  uint32_t was = atomic_exchange_explicit(&msg->life, WEFT__MSG_FREED, memory_order_relaxed);
  if (was == WEFT__MSG_LIVE || was == WEFT__MSG_QUEUED)
    return;
  fprintf(stderr, "weft_msg_free: %s of message %p (weft checked mode)\n",
          was == WEFT__MSG_FREED ? "double free" : "free of something that is not a message",
          (void *)msg);
  abort();
}

/* What is left of a freed message fails every use: poisoned for ASan, and
 * an error of WEFT_ETAKEN for the builders otherwise. */
static void poison_freed(weft_msg_t *msg) {
  msg->data = NULL;
  msg->len = msg->cap = 0;
  msg->err = WEFT_ETAKEN;
  msg->nxfer = msg->capxfer = 0;
  msg->xfer = NULL;
  msg->view = NULL;
  weft__msg_poison(msg, true);
}

int weft_msg_new(weft_msg_t **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  weft_msg_t *m = weft__msgpool_get(); /* sets m->origin */
  if (m == NULL)
    return WEFT_ENOMEM;
#ifdef WEFT__ASAN
  weft__msg_poison(m, false); /* a recycled struct of checked mode */
#endif
  atomic_store_explicit(&m->life, WEFT__MSG_LIVE, memory_order_relaxed);
  /* Every field but inline_data, which is written before it is read. */
  atomic_init(&m->node.next, NULL);
  m->data = m->inline_data;
  m->len = 0;
  m->cap = WEFT__MSG_INLINE;
  m->err = 0;
  m->open_map = 0;
  m->nxfer = 0;
  m->capxfer = 0;
  m->xfer = NULL;
  msgpack_packer_init(&m->pk, m, payload_write);
  m->view = NULL;
  *out = m;
  return 0;
}

void weft__msg_free_closing(weft_msg_t *msg, int code) {
  if (msg == NULL)
    return;
  /* The ports it holds are its alone (in transit): their close tells their
   * peers code instead of a plain close. */
  for (uint16_t i = 0; code != 0 && i < msg->nxfer; i++)
    if (msg->xfer[i].kind == WEFT_XFER_PORT)
      atomic_store_explicit(&msg->xfer[i].u.port->close_code, (int16_t)code,
                            memory_order_relaxed);
  weft_msg_free(msg);
}

static void xfer_release(weft__xfer_t *x) {
  switch (x->kind) {
  case WEFT_XFER_BUF:
    weft_buf_free(x->u.buf);
    break;
  case WEFT_XFER_PORT:
    weft__port_close_orphan(x->u.port);
    break;
  case WEFT_XFER_SOCKET:
    close(x->u.fd);
    break;
  default:
    break;
  }
  x->kind = 0;
}

void weft_msg_free(weft_msg_t *msg) {
  if (msg == NULL)
    return;
  if (weft__checked())
    check_free(msg);
  for (uint16_t i = 0; i < msg->nxfer; i++)
    xfer_release(&msg->xfer[i]);
  if (msg->view != NULL)
    weft__msg_view_drop(msg);
  if (msg->data != msg->inline_data)
    weft__free(msg->data);
  weft__free(msg->xfer);
  if (weft__checked())
    poison_freed(msg);
  weft__msgpool_put(msg);
}

msgpack_packer *weft_msg_packer(weft_msg_t *msg) {
  return msg != NULL ? &msg->pk : NULL;
}

int weft_msg_error(const weft_msg_t *msg) {
  return msg != NULL ? msg->err : WEFT_EINVAL;
}

int weft_msg_set_payload(weft_msg_t *msg, const void *data, size_t len) {
  if (msg == NULL || (data == NULL && len > 0))
    return WEFT_EINVAL;
  if (len > UINT32_MAX)
    return WEFT_EMSGSIZE;
  if (len > msg->cap) {
    /* A fresh block: the old payload is dropped, not copied. */
    uint8_t *heap = weft__malloc(len);
    if (heap == NULL)
      return WEFT_ENOMEM;
    if (msg->data != msg->inline_data)
      weft__free(msg->data);
    msg->data = heap;
    msg->cap = (uint32_t)len;
  }
  if (len > 0)
    memmove(msg->data, data, len);
  msg->len = (uint32_t)len;
  msg->err = 0;
  msg->open_map = 0;
  if (msg->view != NULL)
    weft__msg_view_drop(msg);
  return 0;
}

const void *weft_msg_payload(const weft_msg_t *msg, size_t *len) {
  if (len != NULL)
    *len = msg != NULL ? msg->len : 0;
  return msg != NULL ? msg->data : NULL;
}

/* ---- small-record builders ----------------------------------------------
 * They encode straight into the payload: one bounds check per value and no
 * callback, in msgpack's shortest forms, byte for byte what msgpack-c's
 * packer writes (test_msg compares the two). Sizes are computed exactly, so
 * the payload leaves the inline area only when the bytes do. */

enum { HEAD_STR, HEAD_BIN, HEAD_ARRAY, HEAD_MAP };

/* Header tags per kind: the fix form (up to fix_max), then 8-, 16-, 32-bit
 * lengths (0: no such form). */
static const uint8_t head_fix[] = {0xa0, 0x00, 0x90, 0x80};
static const uint32_t head_fix_max[] = {31, 0, 15, 15};
static const uint8_t head_t8[] = {0xd9, 0xc4, 0x00, 0x00};
static const uint8_t head_t16[] = {0xda, 0xc5, 0xdc, 0xde};
static const uint8_t head_t32[] = {0xdb, 0xc6, 0xdd, 0xdf};

static size_t head_size(int kind, size_t n) {
  if (kind != HEAD_BIN && n <= head_fix_max[kind])
    return 1;
  if (head_t8[kind] != 0 && n <= UINT8_MAX)
    return 2;
  return n <= UINT16_MAX ? 3 : 5;
}

static size_t uint_size(uint64_t v) {
  if (v <= 0x7f)
    return 1;
  return v <= UINT8_MAX ? 2 : v <= UINT16_MAX ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static size_t int_size(int64_t v) {
  if (v >= 0)
    return uint_size((uint64_t)v);
  if (v >= -32)
    return 1;
  return v >= INT8_MIN ? 2 : v >= INT16_MIN ? 3 : v >= INT32_MIN ? 5 : 9;
}

static size_t add_sat(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static uint8_t *put_be(uint8_t *p, uint8_t tag, uint64_t v, unsigned w) {
  *p++ = tag;
  for (unsigned i = w; i-- > 0;)
    *p++ = (uint8_t)(v >> (8 * i));
  return p;
}

static uint8_t *put_uint(uint8_t *p, uint64_t v) {
  if (v <= 0x7f) {
    *p++ = (uint8_t)v;
    return p;
  }
  if (v <= UINT8_MAX)
    return put_be(p, 0xcc, v, 1);
  if (v <= UINT16_MAX)
    return put_be(p, 0xcd, v, 2);
  if (v <= UINT32_MAX)
    return put_be(p, 0xce, v, 4);
  return put_be(p, 0xcf, v, 8);
}

static uint8_t *put_int(uint8_t *p, int64_t v) {
  if (v >= 0)
    return put_uint(p, (uint64_t)v);
  if (v >= -32) {
    *p++ = (uint8_t)v; /* negative fixint: the low byte */
    return p;
  }
  if (v >= INT8_MIN)
    return put_be(p, 0xd0, (uint64_t)v, 1);
  if (v >= INT16_MIN)
    return put_be(p, 0xd1, (uint64_t)v, 2);
  if (v >= INT32_MIN)
    return put_be(p, 0xd2, (uint64_t)v, 4);
  return put_be(p, 0xd3, (uint64_t)v, 8);
}

static uint8_t *put_head(uint8_t *p, int kind, uint32_t n) {
  if (kind != HEAD_BIN && n <= head_fix_max[kind]) {
    *p++ = (uint8_t)(head_fix[kind] | n);
    return p;
  }
  if (head_t8[kind] != 0 && n <= UINT8_MAX)
    return put_be(p, head_t8[kind], n, 1);
  if (n <= UINT16_MAX)
    return put_be(p, head_t16[kind], n, 2);
  return put_be(p, head_t32[kind], n, 4);
}

/* Writes the key (when not NULL) and returns where the value goes, with room
 * for body more bytes; NULL with the error kept. */
static uint8_t *put_begin(weft_msg_t *m, const char *key, size_t body) {
  if (key == NULL)
    return room(m, body);
  size_t klen = strlen(key);
  uint8_t *p = room(m, add_sat(add_sat(head_size(HEAD_STR, klen), klen), body));
  if (p == NULL)
    return NULL;
  p = put_head(p, HEAD_STR, (uint32_t)klen);
  memcpy(p, key, klen);
  return p + klen;
}

static int put_done(weft_msg_t *m, const uint8_t *end) {
  m->len = (uint32_t)(end - m->data);
  return 0;
}

static int put_raw(weft_msg_t *m, const char *key, int kind, const void *s, size_t n) {
  uint8_t *p = put_begin(m, key, add_sat(head_size(kind, n), n));
  if (p == NULL)
    return m->err;
  p = put_head(p, kind, (uint32_t)n); /* n fits: room() checked the total */
  if (n > 0)
    memcpy(p, s, n);
  return put_done(m, p + n);
}

int weft_msg_put_map(weft_msg_t *msg, uint32_t n) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = room(msg, head_size(HEAD_MAP, n));
  return p != NULL ? put_done(msg, put_head(p, HEAD_MAP, n)) : msg->err;
}

int weft_msg_put_array(weft_msg_t *msg, const char *key, uint32_t n) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, head_size(HEAD_ARRAY, n));
  return p != NULL ? put_done(msg, put_head(p, HEAD_ARRAY, n)) : msg->err;
}

int weft_msg_put_u64(weft_msg_t *msg, const char *key, uint64_t v) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, uint_size(v));
  return p != NULL ? put_done(msg, put_uint(p, v)) : msg->err;
}

int weft_msg_put_i64(weft_msg_t *msg, const char *key, int64_t v) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, int_size(v));
  return p != NULL ? put_done(msg, put_int(p, v)) : msg->err;
}

int weft_msg_put_f64(weft_msg_t *msg, const char *key, double v) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  uint8_t *p = put_begin(msg, key, 9);
  return p != NULL ? put_done(msg, put_be(p, 0xcb, bits, 8)) : msg->err;
}

int weft_msg_put_bool(weft_msg_t *msg, const char *key, bool v) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, 1);
  if (p == NULL)
    return msg->err;
  *p = v ? 0xc3 : 0xc2;
  return put_done(msg, p + 1);
}

int weft_msg_put_nil(weft_msg_t *msg, const char *key) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, 1);
  if (p == NULL)
    return msg->err;
  *p = 0xc0;
  return put_done(msg, p + 1);
}

int weft_msg_put_strn(weft_msg_t *msg, const char *key, const char *s, size_t n) {
  if (msg == NULL || (s == NULL && n > 0))
    return WEFT_EINVAL;
  return put_raw(msg, key, HEAD_STR, s, n);
}

int weft_msg_put_str(weft_msg_t *msg, const char *key, const char *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  return weft_msg_put_strn(msg, key, s, strlen(s));
}

int weft_msg_put_bin(weft_msg_t *msg, const char *key, const void *p, size_t n) {
  if (msg == NULL || (p == NULL && n > 0))
    return WEFT_EINVAL;
  return put_raw(msg, key, HEAD_BIN, p, n);
}

/* ---- maps that count their own entries ------------------------------------
 * weft_msg_begin_map writes a map32 header (0xdf and a 4-byte count) whose
 * count field, until weft_msg_end_map patches it, holds the link to the next
 * outer open map (open_map's previous value): nesting costs no memory beyond
 * the payload. weft_msg_end_map counts the values written since the header
 * (a bounded walk with the readers' cursor) and writes half of them. */

#define MAP32_HEAD 5

static uint32_t rd_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int weft_msg_begin_map(weft_msg_t *msg, const char *key) {
  if (msg == NULL)
    return WEFT_EINVAL;
  uint8_t *p = put_begin(msg, key, MAP32_HEAD);
  if (p == NULL)
    return msg->err;
  uint32_t at = (uint32_t)(p - msg->data);
  put_be(p, 0xdf, msg->open_map, 4);
  msg->open_map = at + 1;
  return put_done(msg, p + MAP32_HEAD);
}

/* How many whole values lie in [p, end); WEFT_EPROTO if the bytes are not
 * a sequence of them. */
static int count_values(const uint8_t *p, const uint8_t *end, uint64_t *n) {
  weft__mp_cur_t c = {p, end};
  *n = 0;
  while (c.p < c.end) {
    int rc = weft__mp_skip(&c, 1, WEFT__MP_MAX_DEPTH - 1);
    if (rc != 0)
      return rc;
    (*n)++;
  }
  return 0;
}

int weft_msg_end_map(weft_msg_t *msg) {
  if (msg == NULL || msg->open_map == 0)
    return WEFT_EINVAL;
  if (msg->err != 0)
    return msg->err;
  uint8_t *head = msg->data + msg->open_map - 1;
  uint64_t n;
  int rc = count_values(head + MAP32_HEAD, msg->data + msg->len, &n);
  if (rc == 0 && n % 2 != 0)
    rc = WEFT_ECOUNT; /* a key without its value */
  if (rc != 0) {
    msg->err = rc; /* kept: the post fails with it */
    return rc;
  }
  msg->open_map = rd_u32(head + 1);
  put_be(head, 0xdf, n / 2, 4);
  if (msg->view != NULL)
    weft__msg_view_drop(msg);
  return 0;
}

/* ---- the decoded view ----------------------------------------------------- */

int weft_msg_view(weft_msg_t *msg, const msgpack_object **out) {
  if (msg == NULL || out == NULL)
    return WEFT_EINVAL;
  if (msg->view == NULL) {
    /* Checked first with msgpack-c's own nesting limit, so msgpack_unpack
     * neither fails for depth (it would say "no memory") nor sizes its arrays
     * from counts the bytes cannot back. */
    int rc = weft__mp_check(msg->data, msg->len, VIEW_MAX_DEPTH);
    if (rc != 0)
      return rc;
    weft__view_t *v = weft__malloc(sizeof(*v));
    if (v == NULL)
      return WEFT_ENOMEM;
    if (!msgpack_zone_init(&v->zone, VIEW_ZONE_CHUNK)) {
      weft__free(v);
      return WEFT_ENOMEM;
    }
    size_t off = 0;
    msgpack_unpack_return r =
        msgpack_unpack((const char *)msg->data, msg->len, &off, &v->zone, &v->obj);
    if (r != MSGPACK_UNPACK_SUCCESS || off != msg->len) {
      msgpack_zone_destroy(&v->zone);
      weft__free(v);
      return r == MSGPACK_UNPACK_NOMEM_ERROR ? WEFT_ENOMEM : WEFT_EPROTO;
    }
    msg->view = v;
  }
  *out = &msg->view->obj;
  return 0;
}

/* ---- transfer list ------------------------------------------------------ */

/* Makes room for one more item. */
static int xfer_reserve(weft_msg_t *m) {
  if (m->nxfer < m->capxfer)
    return 0;
  if (m->nxfer == XFER_MAX)
    return WEFT_EMSGSIZE;
  size_t cap = m->capxfer == 0 ? 2 : (size_t)m->capxfer * 2;
  if (cap > XFER_MAX)
    cap = XFER_MAX;
  weft__xfer_t *x = weft__realloc(m->xfer, cap * sizeof(*x));
  if (x == NULL)
    return WEFT_ENOMEM;
  m->xfer = x;
  m->capxfer = (uint16_t)cap;
  return 0;
}

static weft__xfer_t *xfer_push(weft_msg_t *m, int kind) {
  weft__xfer_t *x = &m->xfer[m->nxfer++];
  x->kind = kind;
  x->reply = false;
  return x;
}

int weft_msg_add_buf(weft_msg_t *msg, weft_buf_t *buf) {
  if (msg == NULL || buf == NULL)
    return WEFT_EINVAL;
  if (buf->kind == WEFT__BUF_DETACHED)
    return WEFT_EDETACHED;
  int rc = xfer_reserve(msg);
  if (rc != 0)
    return rc;
  weft_buf_t *moved;
  rc = buf->kind == WEFT__BUF_SHARED ? weft_buf_share(buf, &moved)
                                     : weft__buf_move(buf, &moved);
  if (rc != 0)
    return rc;
  xfer_push(msg, WEFT_XFER_BUF)->u.buf = moved;
  return 0;
}

int weft_msg_add_port(weft_msg_t *msg, weft_port_t *port) {
  if (msg == NULL || port == NULL)
    return WEFT_EINVAL;
  int rc = xfer_reserve(msg);
  if (rc == 0)
    rc = weft__port_detach(port);
  if (rc != 0)
    return rc;
  xfer_push(msg, WEFT_XFER_PORT)->u.port = port;
  return 0;
}

int weft_msg_add_socket(weft_msg_t *msg, uv_os_sock_t fd) {
  if (msg == NULL || fd < 0)
    return WEFT_EINVAL;
  int rc = xfer_reserve(msg);
  if (rc != 0)
    return rc;
  xfer_push(msg, WEFT_XFER_SOCKET)->u.fd = fd;
  return 0;
}

size_t weft_msg_xfer_count(const weft_msg_t *msg) {
  return msg != NULL ? msg->nxfer : 0;
}

int weft_msg_xfer_kind(const weft_msg_t *msg, size_t i) {
  if (msg == NULL || i >= msg->nxfer)
    return 0;
  return msg->xfer[i].kind;
}

int weft_msg_find_xfer(const weft_msg_t *msg, int kind, size_t nth, size_t *index) {
  if (msg == NULL || index == NULL)
    return WEFT_EINVAL;
  for (uint16_t i = 0; i < msg->nxfer; i++) {
    const weft__xfer_t *x = &msg->xfer[i];
    if (x->kind == kind && !x->reply && nth-- == 0) {
      *index = i;
      return 0;
    }
  }
  return WEFT_ENOENT;
}

int weft_msg_put_xfer(weft_msg_t *msg, const char *key, size_t index) {
  if (msg == NULL)
    return WEFT_EINVAL;
  if (msg->err != 0)
    return msg->err;
  if (index >= msg->nxfer || msg->xfer[index].kind == 0) {
    msg->err = WEFT_EINVAL; /* kept: a record naming the wrong item must not go */
    return WEFT_EINVAL;
  }
  return weft_msg_put_u64(msg, key, index);
}

/* Item i if it is still there and of kind; else the error to return. */
static int xfer_take(weft_msg_t *msg, size_t i, int kind, weft__xfer_t **out) {
  if (msg == NULL)
    return WEFT_EINVAL;
  if (i >= msg->nxfer || msg->xfer[i].kind == 0)
    return WEFT_ENOENT;
  if (msg->xfer[i].kind != kind)
    return WEFT_ETYPE;
  *out = &msg->xfer[i];
  return 0;
}

int weft_msg_take_buf(weft_msg_t *msg, size_t i, weft_buf_t **out) {
  weft__xfer_t *x;
  int rc = out != NULL ? xfer_take(msg, i, WEFT_XFER_BUF, &x) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  *out = x->u.buf;
  x->kind = 0;
  return 0;
}

int weft_msg_take_port(weft_msg_t *msg, size_t i, weft_port_t **out) {
  weft__xfer_t *x;
  int rc = out != NULL ? xfer_take(msg, i, WEFT_XFER_PORT, &x) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  /* With no context on this thread the port stays unbound; weft_port_receive
   * still works on it. */
  weft__port_attach(x->u.port, weft_ctx_current());
  *out = x->u.port;
  x->kind = 0;
  return 0;
}

int weft_msg_take_socket(weft_msg_t *msg, size_t i, uv_os_sock_t *out) {
  weft__xfer_t *x;
  int rc = out != NULL ? xfer_take(msg, i, WEFT_XFER_SOCKET, &x) : WEFT_EINVAL;
  if (rc != 0)
    return rc;
  *out = x->u.fd;
  x->kind = 0;
  return 0;
}

/* ---- for ports ------------------------------------------------------------ */

size_t weft__msg_weight(const weft_msg_t *msg) {
  size_t w = msg->len;
  for (uint16_t i = 0; i < msg->nxfer; i++) {
    const weft__xfer_t *x = &msg->xfer[i];
    if (x->kind == WEFT_XFER_BUF && x->u.buf->kind == WEFT__BUF_OWNED)
      w += x->u.buf->len;
  }
  return w;
}

bool weft__msg_carries_port(const weft_msg_t *msg, const weft_port_t *a,
                            const weft_port_t *b) {
  for (uint16_t i = 0; i < msg->nxfer; i++) {
    const weft__xfer_t *x = &msg->xfer[i];
    if (x->kind == WEFT_XFER_PORT && (x->u.port == a || x->u.port == b))
      return true;
  }
  return false;
}
