/* test_wire.c: the frame codec of process channels. Every frame type round
 * trips; every prefix of a valid frame asks for more with the right `need`,
 * also when it ends at a guard page; every malformed header or body is refused
 * with its code, a bad header before the rest of the frame has arrived; frames
 * back to back parse one at a time; the encoders refuse what parse would. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "testutil.h"
#include "weft_impl.h"
#include "wire.h"

#define MAXF (1024u * 1024u)
#define BIG (80 * 1024)

static weft__wire_frame_t fr; /* 24 KiB: not on the stack */
static uint8_t frame_buf[BIG];
static uint8_t frame_buf2[BIG];

/* ---- helpers ------------------------------------------------------------------ */

/* Parses bytes copied to end at a guard page; pointers in fr are rebased onto
 * `bytes` so callers can compare them with their own buffer. */
static int parse_guarded(const uint8_t *bytes, size_t n, uint32_t max, size_t *need) {
  testutil_guard_t g;
  testutil_guard_init(&g, bytes, n);
  int rc = weft__wire_parse(g.bytes, n, max, &fr, need);
  if (rc > 0) {
    assert_true((size_t)rc <= n);
    for (uint16_t i = 0; i < fr.nxfer; i++) {
      if (fr.xfer[i].kind != WEFT__WIRE_X_INLINE)
        continue;
      assert_true(fr.xfer[i].data >= g.bytes);
      assert_true(fr.xfer[i].data + fr.xfer[i].len <= g.bytes + rc);
      fr.xfer[i].data = bytes + (fr.xfer[i].data - g.bytes);
    }
    if (fr.type == WEFT__WIRE_MSG || fr.type == WEFT__WIRE_STATS) {
      assert_true(fr.payload >= g.bytes && fr.payload + fr.payload_len == g.bytes + rc);
      fr.payload = bytes + (fr.payload - g.bytes);
    }
  }
  testutil_guard_fini(&g);
  return rc;
}

/* A whole MSG frame, built the way the transport writes it. */
static size_t build_msg(uint8_t *out, size_t cap, const weft__wire_xfer_t *x, uint16_t nx,
                        const uint8_t *payload, size_t plen) {
  uint16_t nfds = 0;
  for (uint16_t i = 0; i < nx; i++)
    nfds += x[i].kind != WEFT__WIRE_X_INLINE;
  size_t total = weft__wire_msg_size(x, nx, plen);
  assert_true(total <= cap);
  int head = weft__wire_put_msg_head(out, cap, x, nx, plen, nfds);
  assert_true(head > 0);
  size_t off = (size_t)head;
  for (uint16_t i = 0; i < nx; i++) {
    if (x[i].kind != WEFT__WIRE_X_INLINE)
      continue;
    if (x[i].len > 0)
      memcpy(out + off, x[i].data, (size_t)x[i].len);
    off += (size_t)x[i].len;
  }
  memcpy(out + off, payload, plen);
  assert_int_equal(off + plen, total);
  return total;
}

/* Every proper prefix asks for more; the whole frame parses to its size. */
static void check_prefixes(const uint8_t *f, size_t n) {
  for (size_t k = 0; k < n; k++) {
    size_t need = 12345;
    assert_int_equal(parse_guarded(f, k, MAXF, &need), 0);
    assert_int_equal(need, k < 4 ? WEFT__WIRE_HEADER : n);
    assert_int_equal(weft__wire_parse(f, k, MAXF, &fr, NULL), 0);
  }
  size_t need = 0;
  assert_int_equal(parse_guarded(f, n, MAXF, &need), (int)n);
  assert_int_equal(need, n);
}

static void check_msg(const uint8_t *f, size_t n, const weft__wire_xfer_t *x, uint16_t nx,
                      const uint8_t *payload, size_t plen) {
  assert_int_equal(parse_guarded(f, n, MAXF, NULL), (int)n);
  assert_int_equal(fr.type, WEFT__WIRE_MSG);
  assert_int_equal(fr.nxfer, nx);
  uint16_t nfds = 0;
  for (uint16_t i = 0; i < nx; i++) {
    assert_int_equal(fr.xfer[i].kind, x[i].kind);
    nfds += x[i].kind != WEFT__WIRE_X_INLINE;
    if (x[i].kind == WEFT__WIRE_X_SOCKET)
      continue;
    assert_int_equal(fr.xfer[i].len, x[i].len);
    if (x[i].kind == WEFT__WIRE_X_INLINE && x[i].len > 0)
      assert_memory_equal(fr.xfer[i].data, x[i].data, (size_t)x[i].len);
  }
  assert_int_equal(fr.nfds, nfds);
  assert_int_equal(fr.payload_len, plen);
  assert_memory_equal(fr.payload, payload, plen);
}

static void put_hdr(uint8_t *p, uint32_t len, uint8_t ver, uint8_t type, uint16_t nfds) {
  p[0] = (uint8_t)(len >> 24);
  p[1] = (uint8_t)(len >> 16);
  p[2] = (uint8_t)(len >> 8);
  p[3] = (uint8_t)len;
  p[4] = ver;
  p[5] = type;
  p[6] = (uint8_t)(nfds >> 8);
  p[7] = (uint8_t)nfds;
}

static void expect_err(const uint8_t *f, size_t n, int err) {
  assert_int_equal(parse_guarded(f, n, MAXF, NULL), err);
  assert_int_equal(weft__wire_parse(f, n, MAXF, &fr, NULL), err);
}

static const uint8_t pay[] = {0x81, 0xa1, 'k', 0x2a}; /* {"k": 42} */
static uint8_t bytes300[300];

/* ---- round trips -------------------------------------------------------------- */

static void hello_round_trip(void **state) {
  (void)state;
  uint8_t b[64];
  int n = weft__wire_put_hello(b, sizeof b, WEFT__WIRE_DEFAULT_MAX_FRAME, 64, UINT64_MAX - 1);
  assert_int_equal(n, 24);
  const uint8_t want[24] = {0, 0, 0, 20, 1, 1, 0, 0, 0x04, 0, 0, 0, 0, 0, 0, 64,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
  assert_memory_equal(b, want, 24);
  assert_int_equal(parse_guarded(b, (size_t)n, MAXF, NULL), n);
  assert_int_equal(fr.type, WEFT__WIRE_HELLO);
  assert_int_equal(fr.nfds, 0);
  assert_int_equal(fr.max_frame, WEFT__WIRE_DEFAULT_MAX_FRAME);
  assert_int_equal(fr.window_msgs, 64);
  assert_true(fr.window_bytes == UINT64_MAX - 1);
  check_prefixes(b, (size_t)n);
}

static void credit_round_trip(void **state) {
  (void)state;
  uint8_t b[64];
  int n = weft__wire_put_credit(b, sizeof b, UINT32_MAX, 0x0102030405060708ull);
  assert_int_equal(n, 20);
  assert_int_equal(parse_guarded(b, (size_t)n, MAXF, NULL), n);
  assert_int_equal(fr.type, WEFT__WIRE_CREDIT);
  assert_int_equal(fr.credit_msgs, UINT32_MAX);
  assert_true(fr.credit_bytes == 0x0102030405060708ull);
  assert_int_equal(b[19], 0x08);
  check_prefixes(b, (size_t)n);
}

static void close_round_trip(void **state) {
  (void)state;
  const int32_t reasons[] = {0, 1, -1, INT32_MIN, INT32_MAX, WEFT_EPEERDIED};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
    uint8_t b[16];
    int n = weft__wire_put_close(b, sizeof b, reasons[i]);
    assert_int_equal(n, 12);
    assert_int_equal(parse_guarded(b, (size_t)n, MAXF, NULL), n);
    assert_int_equal(fr.type, WEFT__WIRE_CLOSE);
    assert_int_equal(fr.reason, reasons[i]);
    check_prefixes(b, (size_t)n);
  }
}

static void msg_no_items(void **state) {
  (void)state;
  size_t n = build_msg(frame_buf, BIG, NULL, 0, pay, sizeof pay);
  const uint8_t want[] = {0, 0, 0, 10, 1, 2, 0, 0, 0, 0, 0x81, 0xa1, 'k', 0x2a};
  assert_int_equal(n, sizeof want);
  assert_memory_equal(frame_buf, want, n);
  check_msg(frame_buf, n, NULL, 0, pay, sizeof pay);
  check_prefixes(frame_buf, n);
  /* one payload byte is the smallest MSG */
  n = build_msg(frame_buf, BIG, NULL, 0, pay, 1);
  assert_int_equal(n, 11);
  check_msg(frame_buf, n, NULL, 0, pay, 1);
}

static void msg_one_item_each_kind(void **state) {
  (void)state;
  const weft__wire_xfer_t items[] = {
      {WEFT__WIRE_X_INLINE, 0, bytes300},
      {WEFT__WIRE_X_INLINE, 1, bytes300},
      {WEFT__WIRE_X_INLINE, 300, bytes300},
      {WEFT__WIRE_X_MEMFD, 1, NULL},
      {WEFT__WIRE_X_MEMFD, UINT64_MAX, NULL},
      {WEFT__WIRE_X_SOCKET, 0, NULL},
  };
  for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
    size_t n = build_msg(frame_buf, BIG, &items[i], 1, pay, sizeof pay);
    check_msg(frame_buf, n, &items[i], 1, pay, sizeof pay);
    check_prefixes(frame_buf, n);
  }
}

static void msg_many_mixed_items(void **state) {
  (void)state;
  static weft__wire_xfer_t x[40];
  for (uint16_t i = 0; i < 40; i++) {
    x[i].kind = (uint8_t)(1 + i % 3);
    x[i].len = x[i].kind == WEFT__WIRE_X_SOCKET ? 0 : (uint64_t)(i * 7 % 23);
    if (x[i].kind == WEFT__WIRE_X_MEMFD)
      x[i].len += 4096;
    x[i].data = x[i].kind == WEFT__WIRE_X_INLINE ? bytes300 + i : NULL;
  }
  size_t n = build_msg(frame_buf, BIG, x, 40, bytes300, 200);
  check_msg(frame_buf, n, x, 40, bytes300, 200);
  check_prefixes(frame_buf, n);
}

/* Inline buffers of 0..40 bytes, each length once, in one frame. */
static void msg_inline_lengths(void **state) {
  (void)state;
  static weft__wire_xfer_t x[41];
  for (uint16_t i = 0; i <= 40; i++)
    x[i] = (weft__wire_xfer_t){WEFT__WIRE_X_INLINE, i, bytes300 + 2 * i};
  size_t n = build_msg(frame_buf, BIG, x, 41, pay, sizeof pay);
  check_msg(frame_buf, n, x, 41, pay, sizeof pay);
  assert_int_equal(fr.nfds, 0);
  check_prefixes(frame_buf, n);
}

static void msg_max_items(void **state) {
  (void)state;
  static weft__wire_xfer_t x[WEFT__WIRE_MAX_XFER];
  for (uint16_t i = 0; i < WEFT__WIRE_MAX_XFER; i++) {
    x[i].kind = i % 2 ? WEFT__WIRE_X_SOCKET : WEFT__WIRE_X_INLINE;
    x[i].len = i % 2 ? 0 : 1;
    x[i].data = i % 2 ? NULL : bytes300 + i % 300;
  }
  size_t n = build_msg(frame_buf, BIG, x, WEFT__WIRE_MAX_XFER, pay, sizeof pay);
  check_msg(frame_buf, n, x, WEFT__WIRE_MAX_XFER, pay, sizeof pay);
  assert_int_equal(fr.nfds, WEFT__WIRE_MAX_XFER / 2);
}

/* ---- framing ------------------------------------------------------------------ */

static void back_to_back(void **state) {
  (void)state;
  const weft__wire_xfer_t x = {WEFT__WIRE_X_INLINE, 3, (const uint8_t *)"abc"};
  size_t off = 0;
  off += (size_t)weft__wire_put_hello(frame_buf, BIG, 1000, 2, 3);
  off += build_msg(frame_buf + off, BIG - off, &x, 1, pay, sizeof pay);
  off += (size_t)weft__wire_put_credit(frame_buf + off, BIG - off, 4, 5);
  off += (size_t)weft__wire_put_close(frame_buf + off, BIG - off, 6);
  const uint8_t types[] = {WEFT__WIRE_HELLO, WEFT__WIRE_MSG, WEFT__WIRE_CREDIT,
                           WEFT__WIRE_CLOSE};
  size_t at = 0;
  for (size_t i = 0; i < 4; i++) {
    int rc = weft__wire_parse(frame_buf + at, off - at, MAXF, &fr, NULL);
    assert_true(rc > 0);
    assert_int_equal(fr.type, types[i]);
    at += (size_t)rc;
  }
  assert_int_equal(at, off);
  assert_int_equal(weft__wire_parse(frame_buf + at, 0, MAXF, &fr, NULL), 0);
  /* the second frame is complete only with its last byte */
  size_t first = 24;
  size_t need = 0;
  assert_int_equal(weft__wire_parse(frame_buf + first, 3, MAXF, &fr, &need), 0);
  assert_int_equal(need, WEFT__WIRE_HEADER);
  assert_int_equal(weft__wire_parse(frame_buf + first, 4, MAXF, &fr, &need), 0);
  assert_int_equal(weft__wire_parse(frame_buf + first, need, MAXF, &fr, NULL), (int)need);
  assert_memory_equal(fr.xfer[0].data, "abc", 3);
}

static void max_frame_boundary(void **state) {
  (void)state;
  size_t n = build_msg(frame_buf, BIG, NULL, 0, bytes300, 290); /* len 296 */
  assert_int_equal(n, 300);
  assert_int_equal(weft__wire_parse(frame_buf, n, 296, &fr, NULL), 300);
  assert_int_equal(weft__wire_parse(frame_buf, n, 295, &fr, NULL), WEFT_EFRAMESIZE);
  assert_int_equal(weft__wire_parse(frame_buf, 4, 295, &fr, NULL), WEFT_EFRAMESIZE);
  assert_int_equal(weft__wire_parse(frame_buf, n, 0, &fr, NULL), WEFT_EFRAMESIZE);
}

/* A huge claimed length is refused from its 4 bytes, before any buffer is
 * sized from `need`, whatever max_frame says. */
static void huge_length_fails_at_once(void **state) {
  (void)state;
  uint8_t b[8];
  put_hdr(b, UINT32_MAX, 1, WEFT__WIRE_MSG, 0);
  for (size_t k = 4; k <= 8; k++) {
    size_t need = 777;
    assert_int_equal(parse_guarded(b, k, MAXF, &need), WEFT_EFRAMESIZE);
    assert_true(need == WEFT__WIRE_HEADER || need == 777);
  }
  put_hdr(b, MAXF + 1, 1, WEFT__WIRE_MSG, 0);
  expect_err(b, 8, WEFT_EFRAMESIZE);
  /* even a max_frame of UINT32_MAX cannot make the size overflow the int result */
  put_hdr(b, (uint32_t)INT_MAX - 3, 1, WEFT__WIRE_MSG, 0);
  assert_int_equal(weft__wire_parse(b, 8, UINT32_MAX, &fr, NULL), WEFT_EFRAMESIZE);
  put_hdr(b, (uint32_t)INT_MAX - 4, 1, WEFT__WIRE_MSG, 0);
  size_t need = 0;
  assert_int_equal(weft__wire_parse(b, 8, UINT32_MAX, &fr, &need), 0);
  assert_int_equal(need, (size_t)INT_MAX);
}

/* ---- rejections --------------------------------------------------------------- */

static void bad_length(void **state) {
  (void)state;
  uint8_t b[16] = {0};
  for (uint32_t len = 0; len < 4; len++) {
    put_hdr(b, len, 1, WEFT__WIRE_MSG, 0);
    expect_err(b, 4, WEFT_EFRAMESIZE);
    expect_err(b, sizeof b, WEFT_EFRAMESIZE);
  }
}

static void bad_version(void **state) {
  (void)state;
  uint8_t b[24];
  assert_int_equal(weft__wire_put_hello(b, sizeof b, 1, 2, 3), 24);
  const uint8_t versions[] = {0, 2, 255};
  for (size_t i = 0; i < sizeof versions; i++) {
    b[4] = versions[i];
    for (size_t k = 5; k <= sizeof b; k++) /* known from the fifth byte */
      expect_err(b, k, WEFT_EVERSION);
  }
}

static void bad_type(void **state) {
  (void)state;
  uint8_t b[24];
  assert_int_equal(weft__wire_put_hello(b, sizeof b, 1, 2, 3), 24);
  const uint8_t types[] = {0, 7, 255};
  for (size_t i = 0; i < sizeof types; i++) {
    b[5] = types[i];
    for (size_t k = 6; k <= sizeof b; k++)
      expect_err(b, k, WEFT_EPROTO);
  }
}

/* HELLO, CREDIT and CLOSE must have exactly their body: refused from the header. */
static void fixed_frames_wrong_size(void **state) {
  (void)state;
  const struct {
    uint8_t type;
    uint32_t body;
  } t[] = {{WEFT__WIRE_HELLO, 16}, {WEFT__WIRE_CREDIT, 12}, {WEFT__WIRE_CLOSE, 4}};
  uint8_t b[64] = {0};
  for (size_t i = 0; i < 3; i++) {
    const uint32_t bodies[] = {0, t[i].body - 1, t[i].body + 1, 40};
    for (size_t j = 0; j < 4; j++) {
      put_hdr(b, 4 + bodies[j], 1, t[i].type, 0);
      for (size_t k = 6; k <= 8 + bodies[j]; k++)
        expect_err(b, k, WEFT_EPROTO);
    }
    put_hdr(b, 4 + t[i].body, 1, t[i].type, 0);
    assert_int_equal(weft__wire_parse(b, 8 + t[i].body, MAXF, &fr, NULL), (int)(8 + t[i].body));
    /* they carry no descriptors */
    put_hdr(b, 4 + t[i].body, 1, t[i].type, 1);
    for (size_t k = 8; k <= 8 + t[i].body; k++)
      expect_err(b, k, WEFT_EPROTO);
  }
}

/* The metrics control frames: a request, and an answer whose snapshot is
 * bounded by WEFT__WIRE_STATS_MAX, refused from its header when longer
 * (before the transport sizes a buffer for it), and never with fds. */
static void stats_frames(void **state) {
  (void)state;
  uint8_t b[64];
  assert_int_equal(weft__wire_put_stats_req(b, sizeof b, 77), 12);
  assert_int_equal(parse_guarded(b, 12, MAXF, NULL), 12);
  assert_int_equal(fr.type, WEFT__WIRE_STATS_REQ);
  assert_int_equal(fr.stats_seq, 77);
  assert_int_equal(weft__wire_put_stats_head(b, sizeof b, 9, 3), 12);
  memcpy(b + 12, "abc", 3);
  assert_int_equal(parse_guarded(b, 15, MAXF, NULL), 15);
  assert_int_equal(fr.type, WEFT__WIRE_STATS);
  assert_int_equal(fr.stats_seq, 9);
  assert_int_equal(fr.payload_len, 3);
  assert_memory_equal(fr.payload, "abc", 3);
  assert_int_equal(weft__wire_put_stats_head(b, sizeof b, 9, 0), 12); /* empty: allowed */
  assert_int_equal(parse_guarded(b, 12, MAXF, NULL), 12);
  assert_int_equal(fr.payload_len, 0);
  assert_int_equal(weft__wire_put_stats_head(b, sizeof b, 1, WEFT__WIRE_STATS_MAX + 1),
                   WEFT_EFRAMESIZE);
  put_hdr(b, 4 + 4 + WEFT__WIRE_STATS_MAX + 1, 1, WEFT__WIRE_STATS, 0);
  for (size_t k = 6; k <= 12; k++) /* known from the type byte */
    expect_err(b, k, WEFT_EFRAMESIZE);
  put_hdr(b, 4 + 3, 1, WEFT__WIRE_STATS, 0); /* shorter than its seq */
  expect_err(b, 8, WEFT_EPROTO);
  put_hdr(b, 4 + 8, 1, WEFT__WIRE_STATS, 1); /* fds */
  expect_err(b, 8, WEFT_EPROTO);
  put_hdr(b, 4 + 5, 1, WEFT__WIRE_STATS_REQ, 0); /* a request is exactly its seq */
  expect_err(b, 6, WEFT_EPROTO);
}

static void nfds_mismatch(void **state) {
  (void)state;
  const weft__wire_xfer_t x[] = {{WEFT__WIRE_X_MEMFD, 10, NULL},
                                 {WEFT__WIRE_X_INLINE, 2, (const uint8_t *)"hi"},
                                 {WEFT__WIRE_X_SOCKET, 0, NULL}};
  size_t n = build_msg(frame_buf, BIG, x, 3, pay, sizeof pay);
  assert_int_equal(frame_buf[7], 2);
  assert_int_equal(parse_guarded(frame_buf, n, MAXF, NULL), (int)n);
  const uint16_t wrong[] = {0, 1, 3, WEFT__WIRE_MAX_XFER};
  for (size_t i = 0; i < 4; i++) {
    frame_buf[6] = (uint8_t)(wrong[i] >> 8);
    frame_buf[7] = (uint8_t)wrong[i];
    expect_err(frame_buf, n, WEFT_EPROTO);
  }
  /* more descriptors than items could ever carry: refused from the header */
  frame_buf[6] = (uint8_t)((WEFT__WIRE_MAX_XFER + 1) >> 8);
  frame_buf[7] = (uint8_t)(WEFT__WIRE_MAX_XFER + 1);
  expect_err(frame_buf, 8, WEFT_EPROTO);
  frame_buf[6] = frame_buf[7] = 0xff;
  expect_err(frame_buf, 8, WEFT_EPROTO);
}

static void too_many_items(void **state) {
  (void)state;
  const uint16_t counts[] = {WEFT__WIRE_MAX_XFER + 1, 0xffff};
  for (size_t i = 0; i < 2; i++) {
    /* sockets: one byte each, so the frame is big enough for every descriptor */
    size_t n = 10 + counts[i] + 1;
    put_hdr(frame_buf, (uint32_t)(n - 4), 1, WEFT__WIRE_MSG, 0);
    frame_buf[8] = (uint8_t)(counts[i] >> 8);
    frame_buf[9] = (uint8_t)counts[i];
    memset(frame_buf + 10, WEFT__WIRE_X_SOCKET, counts[i]);
    frame_buf[n - 1] = 0xc0;
    expect_err(frame_buf, n, WEFT_EPROTO);
  }
}

/* Descriptors claimed but cut off by the frame's end, at every byte. */
static void items_past_end(void **state) {
  (void)state;
  const weft__wire_xfer_t x[] = {{WEFT__WIRE_X_INLINE, 0, bytes300},
                                 {WEFT__WIRE_X_MEMFD, 5, NULL},
                                 {WEFT__WIRE_X_SOCKET, 0, NULL}};
  size_t n = build_msg(frame_buf, BIG, x, 3, pay, 1); /* inline 0: no bytes after items */
  size_t head = n - 1;                                  /* 10 + 5 + 9 + 1 */
  assert_int_equal(head, 25);
  for (size_t cut = 10; cut < head; cut++) { /* frame ends inside the descriptors */
    memcpy(frame_buf2, frame_buf, cut);
    put_hdr(frame_buf2, (uint32_t)(cut - 4), 1, WEFT__WIRE_MSG, 2);
    expect_err(frame_buf2, cut, WEFT_EPROTO);
  }
  /* nxfer itself past the end */
  put_hdr(frame_buf2, 5, 1, WEFT__WIRE_MSG, 0);
  frame_buf2[8] = 0;
  expect_err(frame_buf2, 9, WEFT_EPROTO);
  put_hdr(frame_buf2, 4, 1, WEFT__WIRE_MSG, 0);
  expect_err(frame_buf2, 8, WEFT_EPROTO);
}

static void inline_past_end(void **state) {
  (void)state;
  const weft__wire_xfer_t x[] = {{WEFT__WIRE_X_INLINE, 3, bytes300},
                                 {WEFT__WIRE_X_INLINE, 4, bytes300}};
  size_t n = build_msg(frame_buf, BIG, x, 2, pay, sizeof pay);
  /* 11 bytes follow the descriptors (3 + 4 inline, 4 payload): the second
   * item claims more than the 8 left after the first */
  const uint32_t second[] = {9, 12, 100, UINT32_MAX};
  for (size_t i = 0; i < 4; i++) {
    frame_buf[16] = (uint8_t)(second[i] >> 24);
    frame_buf[17] = (uint8_t)(second[i] >> 16);
    frame_buf[18] = (uint8_t)(second[i] >> 8);
    frame_buf[19] = (uint8_t)second[i];
    expect_err(frame_buf, n, WEFT_EPROTO);
  }
  /* exactly to the end leaves an empty payload: refused too */
  frame_buf[16] = frame_buf[17] = frame_buf[18] = 0;
  frame_buf[19] = 8;
  expect_err(frame_buf, n, WEFT_EPROTO);
  frame_buf[19] = 7;
  assert_int_equal(parse_guarded(frame_buf, n, MAXF, NULL), (int)n);
  assert_int_equal(fr.payload_len, 1);
}

static void memfd_zero_and_bad_kind(void **state) {
  (void)state;
  const weft__wire_xfer_t x = {WEFT__WIRE_X_MEMFD, 1, NULL};
  size_t n = build_msg(frame_buf, BIG, &x, 1, pay, sizeof pay);
  frame_buf[18] = 0; /* the low byte of the u64 length */
  expect_err(frame_buf, n, WEFT_EPROTO);
  frame_buf[18] = 1;
  const uint8_t kinds[] = {0, 4, 255};
  for (size_t i = 0; i < 3; i++) {
    frame_buf[10] = kinds[i];
    expect_err(frame_buf, n, WEFT_EPROTO);
  }
}

static void empty_payload(void **state) {
  (void)state;
  uint8_t b[10];
  put_hdr(b, 6, 1, WEFT__WIRE_MSG, 0);
  b[8] = b[9] = 0;
  expect_err(b, sizeof b, WEFT_EPROTO);
  const weft__wire_xfer_t x = {WEFT__WIRE_X_INLINE, 2, (const uint8_t *)"hi"};
  size_t n = build_msg(frame_buf, BIG, &x, 1, pay, 1);
  frame_buf[3]--; /* drop the payload byte */
  expect_err(frame_buf, n - 1, WEFT_EPROTO);
}

static void bad_arguments(void **state) {
  (void)state;
  uint8_t b[16] = {0};
  assert_int_equal(weft__wire_parse(b, 0, MAXF, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft__wire_parse(NULL, 1, MAXF, &fr, NULL), WEFT_EINVAL);
  size_t need = 0;
  assert_int_equal(weft__wire_parse(NULL, 0, MAXF, &fr, &need), 0);
  assert_int_equal(need, WEFT__WIRE_HEADER);
}

/* ---- encoders ----------------------------------------------------------------- */

static void encoders_need_room(void **state) {
  (void)state;
  uint8_t b[32];
  for (size_t cap = 0; cap < 24; cap++)
    assert_int_equal(weft__wire_put_hello(b, cap, 1, 2, 3), UV_ENOBUFS);
  for (size_t cap = 0; cap < 20; cap++)
    assert_int_equal(weft__wire_put_credit(b, cap, 1, 2), UV_ENOBUFS);
  for (size_t cap = 0; cap < 12; cap++)
    assert_int_equal(weft__wire_put_close(b, cap, 1), UV_ENOBUFS);
  assert_int_equal(weft__wire_put_close(NULL, 64, 1), WEFT_EINVAL);
  const weft__wire_xfer_t x[] = {{WEFT__WIRE_X_MEMFD, 9, NULL}, {WEFT__WIRE_X_INLINE, 1, b}};
  for (size_t cap = 0; cap < 24; cap++)
    assert_int_equal(weft__wire_put_msg_head(b, cap, x, 2, 1, 1), UV_ENOBUFS);
  assert_int_equal(weft__wire_put_msg_head(b, 24, x, 2, 1, 1), 24);
  assert_int_equal(weft__wire_msg_size(x, 2, 1), 26);
}

static void encoders_refuse_invalid(void **state) {
  (void)state;
  uint8_t b[64];
  weft__wire_xfer_t x = {WEFT__WIRE_X_MEMFD, 0, NULL};
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, 1, 1, 1), WEFT_EINVAL);
  x = (weft__wire_xfer_t){WEFT__WIRE_X_INLINE, (uint64_t)UINT32_MAX + 1, b};
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, 1, 1, 0), WEFT_EINVAL);
  x = (weft__wire_xfer_t){4, 0, NULL};
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, 1, 1, 1), WEFT_EINVAL);
  x = (weft__wire_xfer_t){WEFT__WIRE_X_SOCKET, 0, NULL};
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, 1, 1, 0), WEFT_EINVAL);
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, 1, 0, 1), WEFT_EINVAL);
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, NULL, 1, 1, 0), WEFT_EINVAL);
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, &x, WEFT__WIRE_MAX_XFER + 1, 1, 1),
                   WEFT_EINVAL);
  assert_int_equal(weft__wire_put_msg_head(NULL, 0, &x, 1, 1, 1), WEFT_EINVAL);
  /* sizes past the int result or size_t */
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, NULL, 0, (size_t)INT_MAX, 0),
                   WEFT_EFRAMESIZE);
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, NULL, 0, (size_t)INT_MAX - 10, 0), 10);
  assert_true(weft__wire_msg_size(NULL, 0, SIZE_MAX - 5) == SIZE_MAX);
  static weft__wire_xfer_t big[3];
  for (size_t i = 0; i < 3; i++)
    big[i] = (weft__wire_xfer_t){WEFT__WIRE_X_INLINE, UINT32_MAX, b};
  size_t s = weft__wire_msg_size(big, 3, 1);
  assert_true(s == (SIZE_MAX > UINT32_MAX ? 10 + 15 + 3 * (size_t)UINT32_MAX + 1 : SIZE_MAX));
  assert_int_equal(weft__wire_put_msg_head(b, sizeof b, big, 3, 1, 0), WEFT_EFRAMESIZE);
}

int main(void) {
  for (size_t i = 0; i < sizeof bytes300; i++)
    bytes300[i] = (uint8_t)(i * 31 + 7);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hello_round_trip),
      cmocka_unit_test(credit_round_trip),
      cmocka_unit_test(close_round_trip),
      cmocka_unit_test(msg_no_items),
      cmocka_unit_test(msg_one_item_each_kind),
      cmocka_unit_test(msg_many_mixed_items),
      cmocka_unit_test(msg_inline_lengths),
      cmocka_unit_test(msg_max_items),
      cmocka_unit_test(back_to_back),
      cmocka_unit_test(max_frame_boundary),
      cmocka_unit_test(huge_length_fails_at_once),
      cmocka_unit_test(bad_length),
      cmocka_unit_test(bad_version),
      cmocka_unit_test(bad_type),
      cmocka_unit_test(fixed_frames_wrong_size),
      cmocka_unit_test(stats_frames),
      cmocka_unit_test(nfds_mismatch),
      cmocka_unit_test(too_many_items),
      cmocka_unit_test(items_past_end),
      cmocka_unit_test(inline_past_end),
      cmocka_unit_test(memfd_zero_and_bad_kind),
      cmocka_unit_test(empty_payload),
      cmocka_unit_test(bad_arguments),
      cmocka_unit_test(encoders_need_room),
      cmocka_unit_test(encoders_refuse_invalid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
