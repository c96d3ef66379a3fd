/* fuzz_netwire.c: libFuzzer target for the node frame codec (netwire.h).
 *
 * The input is a byte stream as a peer would send it: weft__net_parse takes
 * frames from it one after another until it needs more or refuses. For every
 * frame it accepts:
 *   - the frame's fields are within netwire.h's bounds (item counts, names,
 *     chunk size, connection frames on channel 0 and the reverse);
 *   - each item descriptor can be read (weft__net_item_at) and, on a version-1
 *     frame, re-encoding the fields with the put_* functions gives back the
 *     same bytes (the encoders and the parser agree on every field);
 *   - every strict prefix of the frame asks for more bytes (returns 0), and
 *     says how many once the header is there: a decoder never acts on half a
 *     frame;
 *   - a DATA frame is returned as its header alone, with a body of at least
 *     one byte (which the caller reads apart: the loop skips it).
 * The frame is parsed from a copy that ends where it ends, so a read past it
 * is caught by ASan. A refusal is one of the named errors, never anything
 * else. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netwire.h"
#include "weft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "fuzz_netwire: %s\n", what);
  abort();
}

static uint8_t out[WEFT__NET_MAX_FRAME + 64];

static size_t reencode(const weft__net_frame_t *f) {
  switch (f->type) {
  case WEFT__NET_HELLO:
    return weft__net_put_hello(out, f->flags, f->incarnation, f->nonce, f->window_msgs,
                               f->window_bytes, f->max_msg, f->heartbeat_ms, f->name,
                               f->name_len);
  case WEFT__NET_AUTH:
    return weft__net_put_auth(out, f->mac);
  case WEFT__NET_REFUSE:
  case WEFT__NET_NOTFOUND:
  case WEFT__NET_CLOSE:
    return weft__net_put_reason(out, f->type, f->chan, f->reason);
  case WEFT__NET_PING:
  case WEFT__NET_FOUND:
    return weft__net_put_simple(out, f->type, f->chan);
  case WEFT__NET_LOOKUP:
    return weft__net_put_lookup(out, f->chan, f->name, f->name_len);
  case WEFT__NET_CREDIT:
    return weft__net_put_credit(out, f->chan, f->credit_msgs, f->credit_bytes);
  case WEFT__NET_DATA: /* its header: the body is the caller's */
    return weft__net_put_data_head(out, f->chan, (uint32_t)f->data_len);
  case WEFT__NET_MSG: {
    static weft__net_item_t items[WEFT__NET_MAX_ITEMS];
    bool first = f->msg_flags & WEFT__NET_F_FIRST;
    for (uint16_t i = 0; first && i < f->nitems; i++)
      weft__net_item_at(f, i, &items[i]);
    size_t h = weft__net_put_msg_head(out, f->chan, f->msg_flags, f->payload_len, items,
                                      first ? f->nitems : 0, f->data_len);
    memcpy(out + h, f->data, f->data_len);
    return h + f->data_len;
  }
  default:
    fail("an accepted frame of an unknown type");
    return 0;
  }
}

static void check_frame(const uint8_t *p, size_t n) {
  /* parse again from a copy that ends with the frame */
  uint8_t *copy = malloc(n);
  if (copy == NULL)
    fail("malloc");
  memcpy(copy, p, n);
  weft__net_frame_t f;
  size_t need = 0;
  if (weft__net_parse(copy, n, &f, &need) != (int)n || need != n)
    fail("a frame parsed twice gives another answer");
  bool conn = f.type <= WEFT__NET_PING;
  if (f.type < WEFT__NET_HELLO || f.type > WEFT__NET_DATA)
    fail("accepted an unknown type");
  if (f.type == WEFT__NET_DATA && (n != WEFT__NET_HEAD || f.data != NULL || f.data_len == 0))
    fail("a DATA frame not returned as its header alone, or with no body");
  if (conn ? f.chan != 0 : (f.chan & ~WEFT__NET_OWN_BIT) == 0)
    fail("a connection frame on a channel, or a channel frame on channel 0");
  if (f.type == WEFT__NET_MSG) {
    if (f.data_len > WEFT__NET_CHUNK || f.nitems > WEFT__NET_MAX_ITEMS)
      fail("a chunk or an item count over its bound");
    if (f.data < copy || f.data + f.data_len != copy + n)
      fail("a MSG's data is not the rest of its frame");
    for (uint16_t i = 0; i < f.nitems; i++) {
      weft__net_item_t it;
      weft__net_item_at(&f, i, &it);
      if (it.kind != WEFT__NET_X_BUF && it.kind != WEFT__NET_X_PORT)
        fail("an item of an unknown kind");
      if (it.kind == WEFT__NET_X_PORT && (it.chan & ~WEFT__NET_OWN_BIT) == 0)
        fail("a port item on channel 0");
    }
  }
  if ((f.type == WEFT__NET_LOOKUP || f.type == WEFT__NET_HELLO) &&
      f.version == WEFT__NET_VERSION &&
      (f.name_len == 0 || (const uint8_t *)f.name + f.name_len > copy + n))
    fail("a name out of its frame");
  /* a version we do not speak is only read for its version: no round trip */
  if (f.type != WEFT__NET_HELLO || f.version == WEFT__NET_VERSION) {
    size_t k = reencode(&f);
    if (k != n || memcmp(out, copy, n) != 0)
      fail("re-encoding an accepted frame gives other bytes");
  }
  /* strict prefixes: more is needed */
  for (size_t cut = 0; cut < n; cut++) {
    weft__net_frame_t g;
    size_t nd = 0;
    int r = weft__net_parse(copy, cut, &g, &nd);
    if (r != 0)
      fail("a strict prefix of an accepted frame was not 'more needed'");
    /* a DATA header: its length is not the frame's size (the body is read
     * apart); until its type is there, the length may be taken for one */
    bool data_len_only = f.type == WEFT__NET_DATA && cut == 4 &&
                         nd == 4 + (size_t)(f.data_len + WEFT__NET_HEAD - 4);
    if (cut >= 4 && nd != n && !data_len_only)
      fail("a prefix with the length in it asks for another size");
    if (cut < 4 && nd != WEFT__NET_HEAD)
      fail("a prefix without the length asks for other than a header");
  }
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  for (int frames = 0; frames < 4096 && off < size; frames++) {
    weft__net_frame_t f;
    size_t need = 0;
    int n = weft__net_parse(data + off, size - off, &f, &need);
    if (n == 0) {
      if (need < WEFT__NET_HEAD || need > WEFT__NET_MAX_FRAME)
        fail("'more needed' with a size out of bounds");
      return 0;
    }
    if (n < 0) {
      if (n != WEFT_EFRAMESIZE && n != WEFT_EPROTO)
        fail("a refusal that is not EFRAMESIZE or EPROTO");
      return 0;
    }
    if ((size_t)n > size - off || (size_t)n < WEFT__NET_HEAD || (size_t)n != need)
      fail("a frame's size is out of what was given");
    check_frame(data + off, (size_t)n);
    off += (size_t)n;
    if (f.type == WEFT__NET_DATA) /* its body: whatever bytes follow */
      off += f.data_len < size - off ? (size_t)f.data_len : size - off;
  }
  return 0;
}
