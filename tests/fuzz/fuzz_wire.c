/* fuzz_wire.c: libFuzzer target for the process-channel frame codec.
 *
 * The input is a byte stream: frames are parsed from it one after another
 * (max_frame 1 MiB) until one is incomplete or refused. Every accepted frame
 * must point only inside itself, must ask for more when its last byte is
 * missing, and must be rebuilt byte for byte by the encoders (for MSG:
 * put_msg_head, then the inline bytes, then the payload), so the target finds
 * a decoder that accepts what the encoder would not write, or reads it wrong,
 * as well as out-of-bounds reads. Abort on a mismatch. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft_impl.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXF (1024u * 1024u)

static weft__wire_frame_t fr;
static uint8_t rebuilt[WEFT__WIRE_HEADER + MAXF];

static void fail(const char *what) {
  fprintf(stderr, "fuzz_wire: %s\n", what);
  abort();
}

static void check_inside(const uint8_t *p, uint64_t n, const uint8_t *f, size_t len) {
  if (p < f || n > len || p + n > f + len)
    fail("pointer outside the frame");
}

static size_t rebuild_msg(void) {
  int head = weft__wire_put_msg_head(rebuilt, sizeof rebuilt, fr.xfer, fr.nxfer,
                                     fr.payload_len, fr.nfds);
  if (head <= 0)
    fail("put_msg_head refused a parsed MSG");
  size_t off = (size_t)head;
  for (uint16_t i = 0; i < fr.nxfer; i++) {
    if (fr.xfer[i].kind != WEFT__WIRE_X_INLINE)
      continue;
    if (fr.xfer[i].len > sizeof rebuilt - off)
      fail("inline bytes larger than the frame");
    memcpy(rebuilt + off, fr.xfer[i].data, (size_t)fr.xfer[i].len);
    off += (size_t)fr.xfer[i].len;
  }
  if (fr.payload_len > sizeof rebuilt - off)
    fail("payload larger than the frame");
  memcpy(rebuilt + off, fr.payload, fr.payload_len);
  return off + fr.payload_len;
}

static size_t rebuild(void) {
  switch (fr.type) {
  case WEFT__WIRE_HELLO:
    return (size_t)weft__wire_put_hello(rebuilt, sizeof rebuilt, fr.max_frame,
                                        fr.window_msgs, fr.window_bytes);
  case WEFT__WIRE_CREDIT:
    return (size_t)weft__wire_put_credit(rebuilt, sizeof rebuilt, fr.credit_msgs,
                                         fr.credit_bytes);
  case WEFT__WIRE_CLOSE:
    return (size_t)weft__wire_put_close(rebuilt, sizeof rebuilt, fr.reason);
  case WEFT__WIRE_MSG:
    return rebuild_msg();
  case WEFT__WIRE_STATS_REQ:
    return (size_t)weft__wire_put_stats_req(rebuilt, sizeof rebuilt, fr.stats_seq);
  case WEFT__WIRE_STATS: {
    int head = weft__wire_put_stats_head(rebuilt, sizeof rebuilt, fr.stats_seq, fr.payload_len);
    if (head <= 0 || fr.payload_len > sizeof rebuilt - (size_t)head)
      fail("put_stats_head refused a parsed STATS");
    memcpy(rebuilt + head, fr.payload, fr.payload_len);
    return (size_t)head + fr.payload_len;
  }
  default:
    fail("parse returned an unknown type");
    return 0;
  }
}

static void check_frame(const uint8_t *f, size_t n) {
  if (fr.type == WEFT__WIRE_MSG) {
    if (fr.nxfer > WEFT__WIRE_MAX_XFER || fr.payload_len == 0)
      fail("MSG outside the limits");
    for (uint16_t i = 0; i < fr.nxfer; i++)
      if (fr.xfer[i].kind == WEFT__WIRE_X_INLINE)
        check_inside(fr.xfer[i].data, fr.xfer[i].len, f, n);
    check_inside(fr.payload, fr.payload_len, f, n);
    if (weft__wire_msg_size(fr.xfer, fr.nxfer, fr.payload_len) != n)
      fail("msg_size disagrees with the parsed size");
  }
  if (fr.type == WEFT__WIRE_STATS) {
    if (fr.payload_len > WEFT__WIRE_STATS_MAX)
      fail("STATS over its bound");
    check_inside(fr.payload, fr.payload_len, f, n);
  }
  if (rebuild() != n || memcmp(rebuilt, f, n) != 0)
    fail("re-encoded frame differs from the input");
  size_t need = 0;
  if (weft__wire_parse(f, n - 1, MAXF, &fr, &need) != 0 || need != (n - 1 < 4 ? 8 : n))
    fail("a frame without its last byte did not ask for it");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t at = 0;
  for (;;) {
    size_t need = 0;
    int rc = weft__wire_parse(data + at, size - at, MAXF, &fr, &need);
    if (rc == 0) {
      if (need <= size - at || need > (size_t)WEFT__WIRE_HEADER + MAXF)
        fail("incomplete frame with a wrong need");
      return 0;
    }
    if (rc < 0) {
      if (rc != WEFT_EFRAMESIZE && rc != WEFT_EVERSION && rc != WEFT_EPROTO)
        fail("unexpected error code");
      return 0;
    }
    if ((size_t)rc > size - at || rc < WEFT__WIRE_HEADER)
      fail("frame size outside the input");
    check_frame(data + at, (size_t)rc);
    at += (size_t)rc;
  }
}
