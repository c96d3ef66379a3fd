/* netwire.h: NOT PUBLIC. The frame codec between two weft nodes (one byte
 * stream per pair of nodes, see node.h). Pure functions: no I/O.
 *
 * A frame, all integers big-endian:
 *
 *   u32 len     bytes after this field: 9 <= len <= WEFT__NET_MAX_FRAME
 *   u8  type    WEFT__NET_*
 *   u64 chan    the channel (0: the connection itself). Bit 63 is set when
 *               the frame's sender allocated the id, clear when its receiver
 *               did; so each side allocates ids from its own counter and
 *               the two never collide.
 *   body        by type:
 *     HELLO    "WEFTNODE", u16 version, u16 flags (1: has a secret),
 *              u64 incarnation, u8[32] nonce, u32 window_msgs,
 *              u64 window_bytes, u64 max_msg, u32 heartbeat_ms, u8 name_len,
 *              name                                               (chan 0)
 *     AUTH     u8[32] HMAC-SHA256                                 (chan 0)
 *     REFUSE   i32 reason                                         (chan 0)
 *     PING     empty                                              (chan 0)
 *     LOOKUP   u8 name_len, name      (chan: a new id of the sender's)
 *     FOUND    empty                  (the lookup's channel is open)
 *     NOTFOUND i32 reason
 *     MSG      u8 flags (FIRST, LAST); if FIRST: u32 payload_len,
 *              u16 nitems, per item u8 kind: BUF u64 len | PORT u8 reply,
 *              u64 chan (a new id of the sender's); then data: a message's
 *              bytes are its payload then each buffer's in item order, cut
 *              into frames of at most WEFT__NET_CHUNK bytes
 *     CREDIT   u32 msgs, u64 bytes
 *     CLOSE    i32 reason             (0: closed by the program)
 *     DATA     the next bytes of the channel's message in progress (one
 *              whose first MSG frame came without LAST), at least one and
 *              no more than that message still lacks; the message is whole
 *              when its last byte has come. A DATA frame may be longer than
 *              WEFT__NET_MAX_FRAME: its bytes go into the message allocated
 *              (within max_msg and the window) when its first frame was
 *              checked, so nothing is allocated for it, and the receiver
 *              checks its length against what the message lacks before it
 *              takes a byte of its body. The sender uses it to write a
 *              buffer's bytes from where they lie (no copy into a frame),
 *              and the receiver to read them straight into the message.
 *
 * The parser checks the length before anything is allocated and every count
 * against what remains (DATA: see above). */
#ifndef WEFT_NETWIRE_H
#define WEFT_NETWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEFT__NET_VERSION 2 /* 2: DATA frames */
#define WEFT__NET_HEAD 13 /* u32 len + u8 type + u64 chan */
#define WEFT__NET_CHUNK (64u * 1024u)
#define WEFT__NET_MAX_ITEMS 1024u
#define WEFT__NET_MAX_NAME 255u
#define WEFT__NET_NONCE 32u
#define WEFT__NET_MAC 32u
/* The largest frame: a first chunk with every item described. */
#define WEFT__NET_MAX_FRAME (WEFT__NET_HEAD + 7u + WEFT__NET_MAX_ITEMS * 10u + WEFT__NET_CHUNK)
#define WEFT__NET_OWN_BIT ((uint64_t)1 << 63)

enum {
  WEFT__NET_HELLO = 1,
  WEFT__NET_AUTH = 2,
  WEFT__NET_REFUSE = 3,
  WEFT__NET_PING = 4,
  WEFT__NET_LOOKUP = 5,
  WEFT__NET_FOUND = 6,
  WEFT__NET_NOTFOUND = 7,
  WEFT__NET_MSG = 8,
  WEFT__NET_CREDIT = 9,
  WEFT__NET_CLOSE = 10,
  WEFT__NET_DATA = 11
};

enum { WEFT__NET_F_FIRST = 1, WEFT__NET_F_LAST = 2 };
enum { WEFT__NET_X_BUF = 1, WEFT__NET_X_PORT = 2 };

typedef struct {
  uint8_t kind;  /* WEFT__NET_X_* */
  bool reply;    /* PORT: the reply port of a request */
  uint64_t len;  /* BUF */
  uint64_t chan; /* PORT, as on the wire */
} weft__net_item_t;

typedef struct {
  uint8_t type;
  uint64_t chan;
  /* HELLO */
  uint16_t version, flags;
  uint64_t incarnation;
  const uint8_t *nonce;
  uint32_t window_msgs;
  uint64_t window_bytes, max_msg;
  uint32_t heartbeat_ms;
  /* HELLO, LOOKUP */
  const char *name; /* not NUL-terminated */
  uint8_t name_len;
  /* AUTH */
  const uint8_t *mac;
  /* REFUSE, NOTFOUND, CLOSE */
  int32_t reason;
  /* CREDIT */
  uint32_t credit_msgs;
  uint64_t credit_bytes;
  /* MSG */
  uint8_t msg_flags;
  uint32_t payload_len;
  uint16_t nitems;
  const uint8_t *items; /* raw descriptors: weft__net_item_at reads them */
  const uint8_t *data;
  size_t data_len;
} weft__net_frame_t;

/* Parse one frame from buf[0..len): returns the bytes it takes (> 0), 0 if
 * more bytes are needed (*need: the whole frame's size once its length is
 * known and accepted, else WEFT__NET_HEAD), or WEFT_EFRAMESIZE (length out
 * of bounds), WEFT_EPROTO (unknown type, bad counts, wrong body size, a
 * connection frame on a channel or the reverse, a bad item kind). */
int weft__net_parse(const uint8_t *buf, size_t len, weft__net_frame_t *out, size_t *need);
/* A DATA frame is returned by its header alone: the parse takes
 * WEFT__NET_HEAD bytes, out->data is NULL and out->data_len the length of
 * the body that follows, which the caller takes as it comes. */
/* Item i (< nitems) of a parsed first MSG frame. */
void weft__net_item_at(const weft__net_frame_t *f, uint16_t i, weft__net_item_t *out);

/* Encoders write into out (room for the frame: callers size it) and return
 * the bytes written. */
size_t weft__net_put_hello(uint8_t *out, uint16_t flags, uint64_t incarnation,
                           const uint8_t nonce[WEFT__NET_NONCE], uint32_t window_msgs,
                           uint64_t window_bytes, uint64_t max_msg, uint32_t heartbeat_ms,
                           const char *name, uint8_t name_len);
size_t weft__net_put_simple(uint8_t *out, uint8_t type, uint64_t chan); /* PING, FOUND */
size_t weft__net_put_reason(uint8_t *out, uint8_t type, uint64_t chan, int32_t reason);
size_t weft__net_put_auth(uint8_t *out, const uint8_t mac[WEFT__NET_MAC]);
size_t weft__net_put_lookup(uint8_t *out, uint64_t chan, const char *name, uint8_t name_len);
size_t weft__net_put_credit(uint8_t *out, uint64_t chan, uint32_t msgs, uint64_t bytes);
/* A MSG frame's head: the header (len for data_len more bytes after the
 * head), flags and, on a first frame, the descriptors. The caller writes the
 * data_len data bytes after it. */
size_t weft__net_msg_head_size(bool first, uint16_t nitems);
/* A DATA frame's header, for data_len (> 0) body bytes written after it. */
size_t weft__net_put_data_head(uint8_t *out, uint64_t chan, uint32_t data_len);
size_t weft__net_put_msg_head(uint8_t *out, uint64_t chan, uint8_t flags, uint32_t payload_len,
                              const weft__net_item_t *items, uint16_t nitems, size_t data_len);

#endif /* WEFT_NETWIRE_H */
