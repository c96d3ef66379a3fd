/* netwire.c: the node frame codec (netwire.h). Pure: no I/O, no allocation. */
#include <string.h>

#include "netwire.h"
#include "weft.h"
#include "wire.h"

static const char MAGIC[8] = {'W', 'E', 'F', 'T', 'N', 'O', 'D', 'E'};
#define HELLO_FIXED (8 + 2 + 2 + 8 + WEFT__NET_NONCE + 4 + 8 + 8 + 4 + 1)

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static bool conn_frame(uint8_t type) { return type <= WEFT__NET_PING; }

/* The body of a first MSG frame: flags, payload_len, nitems, descriptors. */
static int parse_items(const uint8_t *p, size_t n, weft__net_frame_t *f) {
  if (n < 6)
    return WEFT_EPROTO;
  f->payload_len = be32(p);
  f->nitems = be16(p + 4);
  if (f->nitems > WEFT__NET_MAX_ITEMS)
    return WEFT_EPROTO;
  size_t off = 6;
  f->items = p + off;
  for (uint16_t i = 0; i < f->nitems; i++) {
    if (off + 1 > n)
      return WEFT_EPROTO;
    uint8_t kind = p[off];
    size_t sz = kind == WEFT__NET_X_BUF ? 9 : kind == WEFT__NET_X_PORT ? 10 : 0;
    if (sz == 0 || off + sz > n)
      return WEFT_EPROTO;
    if (kind == WEFT__NET_X_PORT) {
      uint64_t chan = be64(p + off + 2);
      if (p[off + 1] > 1 || (chan & ~WEFT__NET_OWN_BIT) == 0)
        return WEFT_EPROTO;
    }
    off += sz;
  }
  f->data = p + off;
  f->data_len = n - off;
  return 0;
}

static int parse_body(const uint8_t *p, size_t n, weft__net_frame_t *f) {
  switch (f->type) {
  case WEFT__NET_HELLO:
    if (n < HELLO_FIXED || memcmp(p, MAGIC, 8) != 0)
      return WEFT_EPROTO;
    f->version = be16(p + 8);
    f->flags = be16(p + 10);
    f->incarnation = be64(p + 12);
    f->nonce = p + 20;
    f->window_msgs = be32(p + 20 + WEFT__NET_NONCE);
    f->window_bytes = be64(p + 24 + WEFT__NET_NONCE);
    f->max_msg = be64(p + 32 + WEFT__NET_NONCE);
    f->heartbeat_ms = be32(p + 40 + WEFT__NET_NONCE);
    f->name_len = p[HELLO_FIXED - 1];
    f->name = (const char *)p + HELLO_FIXED;
    /* A version we do not speak may lay its hello out otherwise: the caller
     * refuses it by its version, whatever follows. */
    if (f->version != WEFT__NET_VERSION)
      return 0;
    return n == HELLO_FIXED + (size_t)f->name_len && f->name_len > 0 ? 0 : WEFT_EPROTO;
  case WEFT__NET_AUTH:
    f->mac = p;
    return n == WEFT__NET_MAC ? 0 : WEFT_EPROTO;
  case WEFT__NET_REFUSE:
  case WEFT__NET_NOTFOUND:
  case WEFT__NET_CLOSE:
    if (n != 4)
      return WEFT_EPROTO;
    f->reason = (int32_t)be32(p);
    return 0;
  case WEFT__NET_PING:
  case WEFT__NET_FOUND:
    return n == 0 ? 0 : WEFT_EPROTO;
  case WEFT__NET_LOOKUP:
    if (n < 1 || p[0] == 0 || n != 1 + (size_t)p[0])
      return WEFT_EPROTO;
    f->name_len = p[0];
    f->name = (const char *)p + 1;
    return 0;
  case WEFT__NET_CREDIT:
    if (n != 12)
      return WEFT_EPROTO;
    f->credit_msgs = be32(p);
    f->credit_bytes = be64(p + 4);
    return 0;
  case WEFT__NET_MSG:
    if (n < 1)
      return WEFT_EPROTO;
    f->msg_flags = p[0];
    if (f->msg_flags & ~(WEFT__NET_F_FIRST | WEFT__NET_F_LAST))
      return WEFT_EPROTO;
    if (f->msg_flags & WEFT__NET_F_FIRST) {
      int err = parse_items(p + 1, n - 1, f);
      if (err)
        return err;
    } else {
      f->nitems = 0;
      f->data = p + 1;
      f->data_len = n - 1;
    }
    return f->data_len <= WEFT__NET_CHUNK ? 0 : WEFT_EPROTO;
  default:
    return WEFT_EPROTO;
  }
}

/* A DATA frame: its header only (its body may be longer than a frame). */
static int parse_data(const uint8_t *buf, size_t len, uint32_t flen, weft__net_frame_t *out) {
  if (flen == WEFT__NET_HEAD - 4)
    return WEFT_EPROTO; /* no body: a frame that moves nothing */
  if (len < WEFT__NET_HEAD)
    return 0;
  memset(out, 0, sizeof(*out));
  out->type = WEFT__NET_DATA;
  out->chan = be64(buf + 5);
  if ((out->chan & ~WEFT__NET_OWN_BIT) == 0)
    return WEFT_EPROTO;
  out->data_len = flen - (WEFT__NET_HEAD - 4);
  return WEFT__NET_HEAD;
}

int weft__net_parse(const uint8_t *buf, size_t len, weft__net_frame_t *out, size_t *need) {
  if (need)
    *need = WEFT__NET_HEAD;
  if (len < 4)
    return 0;
  uint32_t flen = be32(buf);
  if (flen < WEFT__NET_HEAD - 4)
    return WEFT_EFRAMESIZE;
  if (len >= 5 && buf[4] == WEFT__NET_DATA)
    return parse_data(buf, len, flen, out);
  if (flen > WEFT__NET_MAX_FRAME - 4)
    return len >= 5 ? WEFT_EFRAMESIZE : 0; /* unless it is a DATA header: its type tells */
  if (need)
    *need = 4 + (size_t)flen;
  if (len >= 5 && (buf[4] == 0 || buf[4] > WEFT__NET_DATA))
    return WEFT_EPROTO; /* a bad header fails before its body arrives */
  if (len < 4 + (size_t)flen)
    return 0;
  memset(out, 0, sizeof(*out));
  out->type = buf[4];
  out->chan = be64(buf + 5);
  if (conn_frame(out->type) != ((out->chan & ~WEFT__NET_OWN_BIT) == 0) ||
      (conn_frame(out->type) && out->chan != 0))
    return WEFT_EPROTO;
  int err = parse_body(buf + WEFT__NET_HEAD, flen - (WEFT__NET_HEAD - 4), out);
  return err ? err : (int)(4 + flen);
}

void weft__net_item_at(const weft__net_frame_t *f, uint16_t i, weft__net_item_t *out) {
  const uint8_t *p = f->items;
  for (uint16_t k = 0; k < i; k++)
    p += p[0] == WEFT__NET_X_BUF ? 9 : 10;
  memset(out, 0, sizeof(*out));
  out->kind = p[0];
  if (out->kind == WEFT__NET_X_BUF) {
    out->len = be64(p + 1);
  } else {
    out->reply = p[1] != 0;
    out->chan = be64(p + 2);
  }
}

static size_t put_head(uint8_t *out, size_t body, uint8_t type, uint64_t chan) {
  weft__wire_be32(out, (uint32_t)(WEFT__NET_HEAD - 4 + body));
  out[4] = type;
  weft__wire_be64(out + 5, chan);
  return WEFT__NET_HEAD;
}

size_t weft__net_put_hello(uint8_t *out, uint16_t flags, uint64_t incarnation,
                           const uint8_t nonce[WEFT__NET_NONCE], uint32_t window_msgs,
                           uint64_t window_bytes, uint64_t max_msg, uint32_t heartbeat_ms,
                           const char *name, uint8_t name_len) {
  uint8_t *p = out + put_head(out, HELLO_FIXED + name_len, WEFT__NET_HELLO, 0);
  memcpy(p, MAGIC, 8);
  weft__wire_be16(p + 8, WEFT__NET_VERSION);
  weft__wire_be16(p + 10, flags);
  weft__wire_be64(p + 12, incarnation);
  memcpy(p + 20, nonce, WEFT__NET_NONCE);
  weft__wire_be32(p + 20 + WEFT__NET_NONCE, window_msgs);
  weft__wire_be64(p + 24 + WEFT__NET_NONCE, window_bytes);
  weft__wire_be64(p + 32 + WEFT__NET_NONCE, max_msg);
  weft__wire_be32(p + 40 + WEFT__NET_NONCE, heartbeat_ms);
  p[HELLO_FIXED - 1] = name_len;
  memcpy(p + HELLO_FIXED, name, name_len);
  return WEFT__NET_HEAD + HELLO_FIXED + name_len;
}

size_t weft__net_put_simple(uint8_t *out, uint8_t type, uint64_t chan) {
  return put_head(out, 0, type, chan);
}

size_t weft__net_put_reason(uint8_t *out, uint8_t type, uint64_t chan, int32_t reason) {
  put_head(out, 4, type, chan);
  weft__wire_be32(out + WEFT__NET_HEAD, (uint32_t)reason);
  return WEFT__NET_HEAD + 4;
}

size_t weft__net_put_auth(uint8_t *out, const uint8_t mac[WEFT__NET_MAC]) {
  put_head(out, WEFT__NET_MAC, WEFT__NET_AUTH, 0);
  memcpy(out + WEFT__NET_HEAD, mac, WEFT__NET_MAC);
  return WEFT__NET_HEAD + WEFT__NET_MAC;
}

size_t weft__net_put_lookup(uint8_t *out, uint64_t chan, const char *name, uint8_t name_len) {
  put_head(out, 1u + name_len, WEFT__NET_LOOKUP, chan);
  out[WEFT__NET_HEAD] = name_len;
  memcpy(out + WEFT__NET_HEAD + 1, name, name_len);
  return WEFT__NET_HEAD + 1u + name_len;
}

size_t weft__net_put_credit(uint8_t *out, uint64_t chan, uint32_t msgs, uint64_t bytes) {
  put_head(out, 12, WEFT__NET_CREDIT, chan);
  weft__wire_be32(out + WEFT__NET_HEAD, msgs);
  weft__wire_be64(out + WEFT__NET_HEAD + 4, bytes);
  return WEFT__NET_HEAD + 12;
}

static size_t items_size(const weft__net_item_t *items, uint16_t n) {
  size_t s = 0;
  for (uint16_t i = 0; i < n; i++)
    s += items[i].kind == WEFT__NET_X_BUF ? 9 : 10;
  return s;
}

size_t weft__net_msg_head_size(bool first, uint16_t nitems) {
  return WEFT__NET_HEAD + 1 + (first ? 6u + 10u * nitems : 0u);
}

size_t weft__net_put_data_head(uint8_t *out, uint64_t chan, uint32_t data_len) {
  return put_head(out, data_len, WEFT__NET_DATA, chan);
}

size_t weft__net_put_msg_head(uint8_t *out, uint64_t chan, uint8_t flags, uint32_t payload_len,
                              const weft__net_item_t *items, uint16_t nitems, size_t data_len) {
  bool first = flags & WEFT__NET_F_FIRST;
  size_t desc = first ? 6 + items_size(items, nitems) : 0;
  put_head(out, 1 + desc + data_len, WEFT__NET_MSG, chan);
  uint8_t *p = out + WEFT__NET_HEAD;
  *p++ = flags;
  if (!first)
    return (size_t)(p - out);
  weft__wire_be32(p, payload_len);
  weft__wire_be16(p + 4, nitems);
  p += 6;
  for (uint16_t i = 0; i < nitems; i++) {
    *p++ = items[i].kind;
    if (items[i].kind == WEFT__NET_X_BUF) {
      weft__wire_be64(p, items[i].len);
      p += 8;
    } else {
      *p++ = items[i].reply;
      weft__wire_be64(p, items[i].chan);
      p += 8;
    }
  }
  return (size_t)(p - out);
}
