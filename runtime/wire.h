/* wire.h: NOT PUBLIC. The frame codec of weft's process channels (a stream
 * socket between two weft processes). Pure functions: no I/O, no libuv; the
 * transport (ipc.c) moves the bytes and the file descriptors.
 *
 * A frame, all integers big-endian:
 *
 *   u32 len        bytes after this field (header rest + body); 4 <= len <= max_frame
 *   u8  version    WEFT__WIRE_VERSION
 *   u8  type       WEFT__WIRE_HELLO / MSG / CREDIT / CLOSE
 *   u16 nfds       file descriptors that travel with this frame (SCM_RIGHTS),
 *                  sent with the frame's first byte
 *   body           by type:
 *     HELLO   u32 max_frame, u32 window_msgs, u64 window_bytes   (first frame each way)
 *     MSG     u16 nxfer, then nxfer descriptors:
 *               u8 kind = 1 (inline buffer)  u32 n
 *               u8 kind = 2 (memfd buffer)   u64 n  (one fd, mapped by the receiver)
 *               u8 kind = 3 (socket)                (one fd)
 *             then the bytes of every inline buffer, in item order, then the
 *             msgpack payload (the rest of the frame).
 *             nfds must equal the number of kind 2 and 3 items.
 *     CREDIT  u32 msgs, u64 bytes   (the receiver consumed this much: the sender
 *                                    may send that much more)
 *     CLOSE   i32 reason             (0: closed by the peer's program)
 *     STATS_REQ  u32 seq              (the parent asks for the child's metrics)
 *     STATS      u32 seq, then the child's metrics snapshot (metrics_remote.c),
 *                at most WEFT__WIRE_STATS_MAX bytes: the answer to STATS_REQ seq
 *   STATS_REQ and STATS are control frames, like CREDIT: outside the credit
 *   window, never delivered to a port, no fds.
 *
 * The decoder checks the length against max_frame before it allocates
 * anything, and every count against the bytes that remain. */
#ifndef WEFT_WIRE_H
#define WEFT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WEFT__WIRE_VERSION 1
#define WEFT__WIRE_HEADER 8 /* u32 len + u8 version + u8 type + u16 nfds */
#define WEFT__WIRE_DEFAULT_MAX_FRAME (64u * 1024u * 1024u)
#define WEFT__WIRE_MAX_XFER 1024

enum {
  WEFT__WIRE_HELLO = 1,
  WEFT__WIRE_MSG = 2,
  WEFT__WIRE_CREDIT = 3,
  WEFT__WIRE_CLOSE = 4,
  WEFT__WIRE_STATS_REQ = 5,
  WEFT__WIRE_STATS = 6
};

/* The largest metrics snapshot a STATS frame may carry (after its seq): a
 * longer one is refused from its header (WEFT_EFRAMESIZE), before anything
 * is allocated for it. */
#define WEFT__WIRE_STATS_MAX (256u * 1024u)

enum { WEFT__WIRE_X_INLINE = 1, WEFT__WIRE_X_MEMFD = 2, WEFT__WIRE_X_SOCKET = 3 };

typedef struct {
  uint8_t kind;        /* WEFT__WIRE_X_* */
  uint64_t len;        /* buffer length (inline and memfd) */
  const uint8_t *data; /* inline bytes, pointing into the frame */
} weft__wire_xfer_t;

typedef struct {
  uint8_t type;
  uint16_t nfds;
  /* HELLO */
  uint32_t max_frame, window_msgs;
  uint64_t window_bytes;
  /* CREDIT */
  uint32_t credit_msgs;
  uint64_t credit_bytes;
  /* CLOSE */
  int32_t reason;
  /* STATS_REQ, STATS (whose snapshot is payload / payload_len) */
  uint32_t stats_seq;
  /* MSG */
  uint16_t nxfer;
  weft__wire_xfer_t xfer[WEFT__WIRE_MAX_XFER]; /* first nxfer valid */
  const uint8_t *payload;
  size_t payload_len;
} weft__wire_frame_t;

/* Big-endian stores and a frame header, for the encoders and for tests and
 * tools that write frames by hand (a hostile peer). Return what they wrote. */
static inline void weft__wire_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void weft__wire_be32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static inline void weft__wire_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static inline size_t weft__wire_header(uint8_t *p, uint32_t len, uint8_t version, uint8_t type,
                                       uint16_t nfds) {
  weft__wire_be32(p, len);
  p[4] = version;
  p[5] = type;
  weft__wire_be16(p + 6, nfds);
  return WEFT__WIRE_HEADER;
}

/* Parse one complete frame from buf[0..len). Returns the number of bytes the
 * frame takes (> 0) and fills *out (pointers into buf), 0 if buf does not yet
 * hold a whole frame (*need, if not NULL, is set to the total bytes needed
 * once the length field (first 4 bytes) is known and accepted, else
 * WEFT__WIRE_HEADER), or a negative error:
 * WEFT_EFRAMESIZE (len > max_frame, len > INT_MAX - 4, or len < 4),
 * WEFT_EVERSION, WEFT_EPROTO (unknown type, counts past the end, nfds not
 * matching the items, wrong body size of fixed-size frames, more than
 * WEFT__WIRE_MAX_XFER items, an unknown item kind, a memfd of length 0, an
 * empty MSG payload), WEFT_EINVAL (out NULL). The header fields are checked
 * as soon as their bytes are in buf, so a bad header fails before the whole
 * frame has arrived. After an error *out is unspecified. */
int weft__wire_parse(const uint8_t *buf, size_t len, uint32_t max_frame,
                     weft__wire_frame_t *out, size_t *need);

/* Encoders write into out (cap bytes) and return the bytes written, or
 * UV_ENOBUFS if cap is too small (WEFT_EINVAL if out is NULL). */
int weft__wire_put_hello(uint8_t *out, size_t cap, uint32_t max_frame, uint32_t window_msgs,
                         uint64_t window_bytes);
int weft__wire_put_credit(uint8_t *out, size_t cap, uint32_t msgs, uint64_t bytes);
int weft__wire_put_close(uint8_t *out, size_t cap, int32_t reason);
int weft__wire_put_stats_req(uint8_t *out, size_t cap, uint32_t seq);
/* The head of a STATS frame (header and seq) whose snapshot of len bytes
 * follows; WEFT_EFRAMESIZE if len > WEFT__WIRE_STATS_MAX. */
int weft__wire_put_stats_head(uint8_t *out, size_t cap, uint32_t seq, size_t len);

/* MSG frames are written in parts so that inline buffers and the payload need
 * no staging copy: the head (header, nxfer, the descriptors), then the bytes
 * of each inline item in order, then the payload. weft__wire_msg_size gives
 * the whole frame's size (to check against max_frame; SIZE_MAX if it
 * overflows); put_msg_head writes the head and returns its size, or
 * UV_ENOBUFS (cap too small), WEFT_EFRAMESIZE (frame larger than
 * INT_MAX bytes), WEFT_EINVAL (a frame parse would refuse: nxfer >
 * WEFT__WIRE_MAX_XFER, unknown kind, inline len > UINT32_MAX, memfd len 0,
 * nfds not the number of memfd and socket items, payload_len 0). */
size_t weft__wire_msg_size(const weft__wire_xfer_t *xfer, uint16_t nxfer, size_t payload_len);
int weft__wire_put_msg_head(uint8_t *out, size_t cap, const weft__wire_xfer_t *xfer,
                            uint16_t nxfer, size_t payload_len, uint16_t nfds);

#endif /* WEFT_WIRE_H */
