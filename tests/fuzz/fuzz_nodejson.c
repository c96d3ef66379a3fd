/* fuzz_nodejson.c: libFuzzer target for the Node.js 'json' IPC layer
 * (runtime/nodejson.c).
 *
 * The first input byte picks the mode and a read size; the rest is data.
 *   lines:   the data goes through a line buffer (max 1024 bytes a line) in
 *            reads of that size; every line is decoded, and each decoded
 *            message is encoded back (with its handle type, or as a control
 *            line) and decoded again: same kind, same cmd and handle type,
 *            byte-identical payload. The encoder's output must be one line.
 *   msgpack: the data is a payload for the encoder; if it encodes, the line
 *            must be one line, decoding it must not fail except as a Node
 *            peer would see it fail, and a USER line must encode to itself.
 * A decode that fails leaves nothing in its output, except a line nested past
 * the limit (WEFT_EUNREPRESENTABLE), which still says what kind it was.
 * Abort on any broken property. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nodejson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_LINE 1024

static void broken(const char *what) {
  fprintf(stderr, "fuzz_nodejson: %s\n", what);
  abort();
}

static bool same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_payload(const weft_msg_t *a, const weft_msg_t *b) {
  if (a == NULL || b == NULL)
    return a == b;
  size_t la, lb;
  const void *pa = weft_msg_payload(a, &la);
  const void *pb = weft_msg_payload(b, &lb);
  return la == lb && memcmp(pa, pb, la) == 0;
}

/* One line out of the encoder: non-empty, '\n' last and nowhere else, NUL after. */
static void check_line(const char *out, size_t n) {
  if (n < 2 || out[n - 1] != '\n' || out[n] != '\0' || memchr(out, '\n', n - 1) != NULL)
    broken("encoder wrote something other than one line");
}

/* The line that carries in back to Node, or NULL on ENOMEM. */
static char *reencode(const weft__nodejson_in_t *in, size_t *n) {
  char *out = NULL;
  int rc;
  if (in->kind == WEFT__NODEJSON_NODE_HANDLE_ACK || in->kind == WEFT__NODEJSON_NODE_HANDLE_NACK) {
    rc = weft__nodejson_control(in->cmd, NULL, -1, &out, n);
  } else {
    size_t plen;
    const void *p = weft_msg_payload(in->msg, &plen);
    rc = weft__nodejson_encode(p, plen, in->handle_type, &out, n);
  }
  if (rc == WEFT_ENOMEM)
    return NULL;
  if (rc != 0)
    broken("a decoded message does not encode");
  check_line(out, *n);
  return out;
}

static void check_decoded(const weft__nodejson_in_t *in) {
  if (in->msg != NULL) {
    size_t plen;
    const void *p = weft_msg_payload(in->msg, &plen);
    bool internal = weft__nodejson_is_internal(p, plen);
    if ((in->kind == WEFT__NODEJSON_USER && internal) ||
        (in->kind == WEFT__NODEJSON_NODE_OTHER && !internal))
      broken("weft__nodejson_is_internal disagrees with the decoder");
  }
  size_t n;
  char *out = reencode(in, &n);
  if (out == NULL)
    return;
  weft__nodejson_in_t again;
  int rc = weft__nodejson_decode(out, n - 1, &again);
  if (rc == WEFT_ENOMEM) {
    weft__free(out);
    return;
  }
  if (rc != 0)
    broken("the encoder's line does not decode");
  if (again.kind != in->kind || !same_str(again.cmd, in->cmd) ||
      !same_str(again.handle_type, in->handle_type) || !same_payload(again.msg, in->msg))
    broken("decode(encode(decode(line))) differs from decode(line)");
  /* Handle and ACK/NACK lines are rebuilt from their fields (a "key" beside
   * them is not sent back); the others carry the whole object. */
  if ((in->kind == WEFT__NODEJSON_USER || in->kind == WEFT__NODEJSON_NODE_OTHER) &&
      !same_str(again.key, in->key))
    broken("key lost in a round trip");
  weft__nodejson_in_fini(&again);
  weft__free(out);
}

static void run_lines(const uint8_t *data, size_t size, size_t chunk) {
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, FUZZ_MAX_LINE);
  for (size_t off = 0; off < size; off += chunk) {
    size_t n = size - off < chunk ? size - off : chunk;
    int rc = weft__linebuf_feed(&lb, (const char *)data + off, n);
    if (rc == WEFT_EFRAMESIZE)
      break;
    if (rc != 0)
      broken("feed failed");
    const char *line;
    size_t len;
    while ((rc = weft__linebuf_next(&lb, &line, &len)) == 1) {
      if (len > FUZZ_MAX_LINE || memchr(line, '\n', len) != NULL)
        broken("line buffer returned a bad line");
      weft__nodejson_in_t in;
      int drc = weft__nodejson_decode(line, len, &in);
      if (drc == 0)
        check_decoded(&in);
      else if (in.msg != NULL || (drc == WEFT_EUNREPRESENTABLE) != (in.kind != 0))
        broken("a failed decode left the wrong fields"); /* kind: only when too deep */
      weft__nodejson_in_fini(&in);
    }
    if (rc != 0 && rc != WEFT_EFRAMESIZE)
      broken("next failed");
    if (lb.len - lb.start > FUZZ_MAX_LINE)
      broken("line buffer holds more than one line's worth");
  }
  weft__linebuf_fini(&lb);
}

static void run_msgpack(const uint8_t *data, size_t size) {
  char *out = NULL;
  size_t n;
  if (weft__nodejson_encode(data, size, NULL, &out, &n) != 0)
    return;
  check_line(out, n);
  weft__nodejson_in_t in;
  int rc = weft__nodejson_decode(out, n - 1, &in);
  if (rc != 0) {
    /* Only a NODE_* object can explain it (a NODE_HANDLE without a str
     * "type", a cmd holding NUL): lone surrogates, NUL in keys and every
     * depth the encoder writes decode. */
    if (rc == WEFT_EUNREPRESENTABLE)
      weft__nodejson_in_fini(&in);
    if (rc != WEFT_ENOMEM && (rc != WEFT_EPROTO || !weft__nodejson_is_internal(data, size)))
      broken("an encoded payload does not decode");
    weft__free(out);
    return;
  }
  if (in.kind == WEFT__NODEJSON_USER) {
    size_t plen, n2;
    const void *p = weft_msg_payload(in.msg, &plen);
    char *out2 = NULL;
    /* The same line, unless x had duplicate keys (written as they are, then
     * merged by the decoder as JSON.parse merges them): then the merged
     * payload must come back unchanged. */
    if (weft__nodejson_encode(p, plen, NULL, &out2, &n2) == 0 &&
        (n2 != n || memcmp(out2, out, n) != 0)) {
      weft__nodejson_in_t again;
      int rc2 = weft__nodejson_decode(out2, n2 - 1, &again);
      if (rc2 != WEFT_ENOMEM && (rc2 != 0 || !same_payload(again.msg, in.msg)))
        broken("encode(decode(encode(x))) does not decode to decode(encode(x))");
      weft__nodejson_in_fini(&again);
    }
    weft__free(out2);
  }
  weft__nodejson_in_fini(&in);
  weft__free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  uint8_t sel = data[0];
  if (sel & 1)
    run_msgpack(data + 1, size - 1);
  else
    run_lines(data + 1, size - 1, (size_t)(sel >> 1) + 1);
  return 0;
}
