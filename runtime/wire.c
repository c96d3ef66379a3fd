/* wire.c: the frame codec of process channels (format in wire.h).
 *
 * The decoder treats its input as untrusted: it reads a field only after
 * checking that its bytes are present, checks the length field against
 * max_frame as soon as the first four bytes are there (before the transport
 * sizes a buffer from `need`), rejects a bad version, type or fixed-frame size
 * from the header alone, and checks every count of a MSG body against the
 * bytes that remain in the frame. The encoding is canonical: a frame that
 * parses is rebuilt byte for byte by the encoders from what parse returned.
 * No allocation, no I/O, no state: any thread. */
#include <limits.h>
#include <string.h>

#include "weft_impl.h"
#include "wire.h"

#define LEN_FIELD 4                       /* the u32 len before the counted bytes */
#define REST (WEFT__WIRE_HEADER - LEN_FIELD) /* version, type, nfds: counted in len */
#define HELLO_BODY 16                     /* u32 + u32 + u64 */
#define CREDIT_BODY 12                    /* u32 + u64 */
#define CLOSE_BODY 4                      /* i32 */
#define SEQ_BODY 4                        /* u32: STATS_REQ, and STATS before its snapshot */
#define MSG_HEAD_MIN (WEFT__WIRE_HEADER + 2) /* header + u16 nxfer */
#define X_INLINE_SIZE 5                   /* u8 kind + u32 n */
#define X_MEMFD_SIZE 9                    /* u8 kind + u64 n */
#define X_SOCKET_SIZE 1                   /* u8 kind */

/* The largest frame whose size still fits the int that parse returns. */
#define LEN_CAP ((uint64_t)INT_MAX - LEN_FIELD)

/* ---- big-endian fields ------------------------------------------------------ */

static uint64_t rd_be(const uint8_t *p, unsigned n) {
  uint64_t x = 0;
  for (unsigned i = 0; i < n; i++)
    x = (x << 8) | p[i];
  return x;
}

static uint8_t *wr_be(uint8_t *p, uint64_t x, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    p[i] = (uint8_t)(x >> (8 * (n - 1 - i)));
  return p + n;
}

/* A cursor over the counted bytes of one frame. */
typedef struct {
  const uint8_t *p, *end;
} cur_t;

static size_t cur_left(const cur_t *c) {
  return (size_t)(c->end - c->p);
}

static int cur_take(cur_t *c, unsigned n, uint64_t *x) {
  if (cur_left(c) < n)
    return WEFT_EPROTO;
  *x = rd_be(c->p, n);
  c->p += n;
  return 0;
}

/* ---- decoder ---------------------------------------------------------------- */

/* The body size a fixed-size type requires, or -1 for MSG, -3 for STATS
 * (variable, no fds), or -2 if unknown. */
static long body_size_of(uint8_t type) {
  switch (type) {
  case WEFT__WIRE_HELLO:
    return HELLO_BODY;
  case WEFT__WIRE_CREDIT:
    return CREDIT_BODY;
  case WEFT__WIRE_CLOSE:
    return CLOSE_BODY;
  case WEFT__WIRE_STATS_REQ:
    return SEQ_BODY;
  case WEFT__WIRE_MSG:
    return -1;
  case WEFT__WIRE_STATS:
    return -3;
  default:
    return -2;
  }
}

/* Checks the header fields that are present in buf[0..len), each as soon as
 * its bytes arrive, so garbage is refused without waiting for the frame. */
static int check_header(const uint8_t *buf, size_t len, uint32_t max_frame, uint32_t *flen) {
  *flen = (uint32_t)rd_be(buf, LEN_FIELD);
  if (*flen < REST || *flen > max_frame || *flen > LEN_CAP)
    return WEFT_EFRAMESIZE;
  if (len > 4 && buf[4] != WEFT__WIRE_VERSION)
    return WEFT_EVERSION;
  if (len <= 5)
    return 0;
  long body = body_size_of(buf[5]);
  if (body == -2)
    return WEFT_EPROTO;
  if (body >= 0 && *flen != REST + (uint32_t)body)
    return WEFT_EPROTO;
  if (body == -3 && *flen > REST + SEQ_BODY + WEFT__WIRE_STATS_MAX)
    return WEFT_EFRAMESIZE;
  if (body == -3 && *flen < REST + SEQ_BODY)
    return WEFT_EPROTO;
  if (len < WEFT__WIRE_HEADER)
    return 0;
  /* Only MSG items carry descriptors, at most one per item. */
  uint64_t nfds = rd_be(buf + 6, 2);
  if ((body != -1 && nfds != 0) || nfds > WEFT__WIRE_MAX_XFER)
    return WEFT_EPROTO;
  return 0;
}

static void parse_fixed(const uint8_t *body, weft__wire_frame_t *out) {
  switch (out->type) {
  case WEFT__WIRE_HELLO:
    out->max_frame = (uint32_t)rd_be(body, 4);
    out->window_msgs = (uint32_t)rd_be(body + 4, 4);
    out->window_bytes = rd_be(body + 8, 8);
    break;
  case WEFT__WIRE_CREDIT:
    out->credit_msgs = (uint32_t)rd_be(body, 4);
    out->credit_bytes = rd_be(body + 4, 8);
    break;
  case WEFT__WIRE_STATS_REQ:
    out->stats_seq = (uint32_t)rd_be(body, 4);
    break;
  default: /* CLOSE: two's complement, as every platform weft runs on */
    out->reason = (int32_t)(uint32_t)rd_be(body, 4);
    break;
  }
}

/* One descriptor; counts the descriptors that carry an fd. */
static int parse_item(cur_t *c, weft__wire_xfer_t *x, unsigned *fds) {
  uint64_t kind, n = 0;
  int rc = cur_take(c, 1, &kind);
  if (rc == 0 && kind == WEFT__WIRE_X_INLINE)
    rc = cur_take(c, 4, &n);
  else if (rc == 0 && kind == WEFT__WIRE_X_MEMFD)
    rc = cur_take(c, 8, &n);
  else if (rc == 0 && kind != WEFT__WIRE_X_SOCKET)
    rc = WEFT_EPROTO;
  if (rc != 0)
    return rc;
  if (kind == WEFT__WIRE_X_MEMFD && n == 0)
    return WEFT_EPROTO;
#if SIZE_MAX < UINT64_MAX
  if (n > SIZE_MAX) /* could not be mapped here */
    return WEFT_EPROTO;
#endif
  *fds += kind != WEFT__WIRE_X_INLINE;
  x->kind = (uint8_t)kind;
  x->len = n;
  x->data = NULL;
  return 0;
}

/* Points every inline item at its bytes, which follow the descriptors. */
static int place_inline(cur_t *c, weft__wire_frame_t *out) {
  for (uint16_t i = 0; i < out->nxfer; i++) {
    weft__wire_xfer_t *x = &out->xfer[i];
    if (x->kind != WEFT__WIRE_X_INLINE)
      continue;
    if (x->len > cur_left(c))
      return WEFT_EPROTO;
    x->data = c->p;
    c->p += x->len;
  }
  return 0;
}

static int parse_msg(cur_t *c, weft__wire_frame_t *out) {
  uint64_t nxfer;
  unsigned fds = 0;
  int rc = cur_take(c, 2, &nxfer);
  if (rc != 0)
    return rc;
  if (nxfer > WEFT__WIRE_MAX_XFER)
    return WEFT_EPROTO;
  out->nxfer = (uint16_t)nxfer;
  for (uint16_t i = 0; i < out->nxfer; i++)
    if ((rc = parse_item(c, &out->xfer[i], &fds)) != 0)
      return rc;
  if (fds != out->nfds)
    return WEFT_EPROTO;
  if ((rc = place_inline(c, out)) != 0)
    return rc;
  if (cur_left(c) == 0) /* a message is exactly one msgpack object: never empty */
    return WEFT_EPROTO;
  out->payload = c->p;
  out->payload_len = cur_left(c);
  return 0;
}

static void clear_frame(weft__wire_frame_t *out) {
  out->max_frame = out->window_msgs = 0;
  out->window_bytes = 0;
  out->credit_msgs = 0;
  out->credit_bytes = 0;
  out->reason = 0;
  out->stats_seq = 0;
  out->nxfer = 0;
  out->payload = NULL;
  out->payload_len = 0;
}

int weft__wire_parse(const uint8_t *buf, size_t len, uint32_t max_frame,
                     weft__wire_frame_t *out, size_t *need) {
  uint32_t flen = 0;
  if (need != NULL)
    *need = WEFT__WIRE_HEADER;
  if (out == NULL || (buf == NULL && len > 0))
    return WEFT_EINVAL;
  if (len < LEN_FIELD)
    return 0;
  int rc = check_header(buf, len, max_frame, &flen);
  if (rc != 0)
    return rc;
  size_t total = (size_t)flen + LEN_FIELD;
  if (need != NULL)
    *need = total;
  if (len < total)
    return 0;

  clear_frame(out);
  out->type = buf[5];
  out->nfds = (uint16_t)rd_be(buf + 6, 2);
  if (out->type == WEFT__WIRE_STATS) {
    out->stats_seq = (uint32_t)rd_be(buf + WEFT__WIRE_HEADER, 4);
    out->payload = buf + WEFT__WIRE_HEADER + SEQ_BODY;
    out->payload_len = total - WEFT__WIRE_HEADER - SEQ_BODY;
    return (int)total;
  }
  if (out->type != WEFT__WIRE_MSG) {
    parse_fixed(buf + WEFT__WIRE_HEADER, out);
    return (int)total;
  }
  cur_t c = {buf + WEFT__WIRE_HEADER, buf + total};
  rc = parse_msg(&c, out);
  return rc != 0 ? rc : (int)total;
}

/* ---- encoders --------------------------------------------------------------- */

static uint8_t *put_header(uint8_t *p, uint32_t flen, uint8_t type, uint16_t nfds) {
  p = wr_be(p, flen, 4);
  *p++ = WEFT__WIRE_VERSION;
  *p++ = type;
  return wr_be(p, nfds, 2);
}

int weft__wire_put_hello(uint8_t *out, size_t cap, uint32_t max_frame, uint32_t window_msgs,
                         uint64_t window_bytes) {
  if (out == NULL)
    return WEFT_EINVAL;
  if (cap < WEFT__WIRE_HEADER + HELLO_BODY)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, REST + HELLO_BODY, WEFT__WIRE_HELLO, 0);
  p = wr_be(p, max_frame, 4);
  p = wr_be(p, window_msgs, 4);
  wr_be(p, window_bytes, 8);
  return WEFT__WIRE_HEADER + HELLO_BODY;
}

int weft__wire_put_credit(uint8_t *out, size_t cap, uint32_t msgs, uint64_t bytes) {
  if (out == NULL)
    return WEFT_EINVAL;
  if (cap < WEFT__WIRE_HEADER + CREDIT_BODY)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, REST + CREDIT_BODY, WEFT__WIRE_CREDIT, 0);
  p = wr_be(p, msgs, 4);
  wr_be(p, bytes, 8);
  return WEFT__WIRE_HEADER + CREDIT_BODY;
}

int weft__wire_put_close(uint8_t *out, size_t cap, int32_t reason) {
  if (out == NULL)
    return WEFT_EINVAL;
  if (cap < WEFT__WIRE_HEADER + CLOSE_BODY)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, REST + CLOSE_BODY, WEFT__WIRE_CLOSE, 0);
  wr_be(p, (uint32_t)reason, 4);
  return WEFT__WIRE_HEADER + CLOSE_BODY;
}

int weft__wire_put_stats_req(uint8_t *out, size_t cap, uint32_t seq) {
  if (out == NULL)
    return WEFT_EINVAL;
  if (cap < WEFT__WIRE_HEADER + SEQ_BODY)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, REST + SEQ_BODY, WEFT__WIRE_STATS_REQ, 0);
  wr_be(p, seq, 4);
  return WEFT__WIRE_HEADER + SEQ_BODY;
}

int weft__wire_put_stats_head(uint8_t *out, size_t cap, uint32_t seq, size_t len) {
  if (out == NULL)
    return WEFT_EINVAL;
  if (len > WEFT__WIRE_STATS_MAX)
    return WEFT_EFRAMESIZE;
  if (cap < WEFT__WIRE_HEADER + SEQ_BODY)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, (uint32_t)(REST + SEQ_BODY + len), WEFT__WIRE_STATS, 0);
  wr_be(p, seq, 4);
  return WEFT__WIRE_HEADER + SEQ_BODY;
}

static size_t item_size(uint8_t kind) {
  return kind == WEFT__WIRE_X_INLINE  ? X_INLINE_SIZE
         : kind == WEFT__WIRE_X_MEMFD ? X_MEMFD_SIZE
                                      : X_SOCKET_SIZE;
}

static size_t head_size(const weft__wire_xfer_t *xfer, uint16_t nxfer) {
  size_t n = MSG_HEAD_MIN;
  for (uint16_t i = 0; i < nxfer; i++)
    n += item_size(xfer[i].kind);
  return n;
}

/* a + b, or SIZE_MAX if that overflows (so that any max_frame check fails). */
static size_t add_sat(size_t a, uint64_t b) {
  return b > (uint64_t)(SIZE_MAX - a) ? SIZE_MAX : a + (size_t)b;
}

size_t weft__wire_msg_size(const weft__wire_xfer_t *xfer, uint16_t nxfer, size_t payload_len) {
  if (nxfer > 0 && xfer == NULL)
    return SIZE_MAX;
  size_t n = add_sat(head_size(xfer, nxfer), payload_len);
  for (uint16_t i = 0; i < nxfer; i++)
    if (xfer[i].kind == WEFT__WIRE_X_INLINE)
      n = add_sat(n, xfer[i].len);
  return n;
}

/* The arguments describe a frame that parse would accept. */
static bool msg_args_valid(const weft__wire_xfer_t *xfer, uint16_t nxfer, size_t payload_len,
                           uint16_t nfds) {
  unsigned fds = 0;
  if (nxfer > WEFT__WIRE_MAX_XFER || (nxfer > 0 && xfer == NULL) || payload_len == 0)
    return false;
  for (uint16_t i = 0; i < nxfer; i++) {
    const weft__wire_xfer_t *x = &xfer[i];
    if (x->kind == WEFT__WIRE_X_INLINE && x->len > UINT32_MAX)
      return false;
    if (x->kind == WEFT__WIRE_X_MEMFD && x->len == 0)
      return false;
    if (x->kind < WEFT__WIRE_X_INLINE || x->kind > WEFT__WIRE_X_SOCKET)
      return false;
    fds += x->kind != WEFT__WIRE_X_INLINE;
  }
  return fds == nfds;
}

static uint8_t *put_item(uint8_t *p, const weft__wire_xfer_t *x) {
  *p++ = x->kind;
  if (x->kind == WEFT__WIRE_X_INLINE)
    return wr_be(p, x->len, 4);
  if (x->kind == WEFT__WIRE_X_MEMFD)
    return wr_be(p, x->len, 8);
  return p;
}

int weft__wire_put_msg_head(uint8_t *out, size_t cap, const weft__wire_xfer_t *xfer,
                            uint16_t nxfer, size_t payload_len, uint16_t nfds) {
  if (!msg_args_valid(xfer, nxfer, payload_len, nfds))
    return WEFT_EINVAL;
  size_t total = weft__wire_msg_size(xfer, nxfer, payload_len);
  if (total - LEN_FIELD > LEN_CAP)
    return WEFT_EFRAMESIZE;
  size_t head = head_size(xfer, nxfer);
  if (out == NULL)
    return WEFT_EINVAL;
  if (cap < head)
    return UV_ENOBUFS;
  uint8_t *p = put_header(out, (uint32_t)(total - LEN_FIELD), WEFT__WIRE_MSG, nfds);
  p = wr_be(p, nxfer, 2);
  for (uint16_t i = 0; i < nxfer; i++)
    p = put_item(p, &xfer[i]);
  return (int)head;
}
