/* peer.c: the raw peers, processes that speak the channel by hand and do not
 * play by its rules. Each reads its channel fd from WEFT_CHANNEL_FD (or
 * NODE_CHANNEL_FD) and never creates a weft runtime. Every role is bounded in
 * time: if its parent never hangs up it exits by itself (status 42), so a
 * stuck parent leaves no orphan behind.
 *
 *   flood     HELLO, then MSG frames of ~1 KiB with no regard for credit,
 *             until the parent hangs up or SOAK_FLOOD_MAX_BYTES are written
 *   liar      HELLO, then CREDIT frames for more than it was ever sent
 *             (UINT32_MAX messages, UINT64_MAX and INT64_MAX bytes)
 *   stall     says nothing, reads nothing
 *   midframe  HELLO, then half a MSG frame; waits to be killed
 *   midbuf    HELLO, then a MSG frame announcing a 1 MiB inline buffer with
 *             only 300 KiB of it; waits to be killed
 *   nodejunk  Node 'json' lines: garbage, a lone surrogate, deep nesting, a
 *             valid line, then half a line */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "soak.h"
#include "wire.h" /* frame layout and byte order: this peer writes frames by hand */

#define EXIT_NOT_HUNG_UP 42
#define WAIT_MS 8000u

static int chan = -1;

size_t soak_frame_hello(uint8_t *out, uint32_t max_frame, uint32_t wm, uint64_t wb) {
  size_t n = weft__wire_header(out, 4 + 16, WEFT__WIRE_VERSION, WEFT__WIRE_HELLO, 0);
  weft__wire_be32(out + n, max_frame);
  weft__wire_be32(out + n + 4, wm);
  weft__wire_be64(out + n + 8, wb);
  return n + 16;
}

size_t soak_frame_credit(uint8_t *out, uint32_t msgs, uint64_t bytes) {
  size_t n = weft__wire_header(out, 4 + 12, WEFT__WIRE_VERSION, WEFT__WIRE_CREDIT, 0);
  weft__wire_be32(out + n, msgs);
  weft__wire_be64(out + n + 4, bytes);
  return n + 12;
}

size_t soak_frame_msg(uint8_t *out, size_t len) {
  size_t n = weft__wire_header(out, (uint32_t)(4 + 2 + 3 + len), WEFT__WIRE_VERSION, WEFT__WIRE_MSG, 0);
  weft__wire_be16(out + n, 0); /* no items */
  n += 2;
  out[n++] = 0xda;     /* msgpack str 16 */
  weft__wire_be16(out + n, (uint16_t)len);
  n += 2;
  memset(out + n, 'x', len);
  return n + len;
}

size_t soak_frame_msg_inline_head(uint8_t *out, uint32_t len) {
  size_t n = weft__wire_header(out, 4 + 2 + 5 + len + 1, WEFT__WIRE_VERSION, WEFT__WIRE_MSG, 0);
  weft__wire_be16(out + n, 1);
  out[n + 2] = 1; /* inline */
  weft__wire_be32(out + n + 3, len);
  return n + 7;
}

/* Write all of p, or exit quietly when the parent hung up. */
static void send_all(const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = send(chan, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      exit(0);
    b += w;
    n -= (size_t)w;
  }
}

/* Read and drop until the parent hangs up (exit 0), or exit 42 after WAIT_MS. */
static void wait_hangup(bool read_input) {
  uint64_t deadline = soak_now_ms() + WAIT_MS;
  char buf[16384];
  for (;;) {
    uint64_t now = soak_now_ms();
    if (now >= deadline)
      exit(EXIT_NOT_HUNG_UP);
    struct pollfd pfd = {.fd = chan, .events = read_input ? POLLIN : 0};
    int r = poll(&pfd, 1, (int)(deadline - now));
    if (r <= 0)
      continue;
    if (pfd.revents & (POLLHUP | POLLERR))
      exit(0);
    ssize_t n = read(chan, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      exit(0);
  }
}

static void flood(void) {
  static uint8_t f[SOAK_FLOOD_PAYLOAD + 64];
  uint8_t h[32];
  send_all(h, soak_frame_hello(h, 1u << 20, 4096, 1u << 26));
  size_t n = soak_frame_msg(f, SOAK_FLOOD_PAYLOAD);
  for (size_t sent = 0; sent < SOAK_FLOOD_MAX_BYTES; sent += n)
    send_all(f, n);
  wait_hangup(true);
}

static void liar(void) {
  uint8_t b[64];
  send_all(b, soak_frame_hello(b, 1u << 20, 4096, 1u << 26));
  send_all(b, soak_frame_credit(b, UINT32_MAX, UINT64_MAX));
  send_all(b, soak_frame_credit(b, 1, (uint64_t)INT64_MAX));
  send_all(b, soak_frame_credit(b, UINT32_MAX, (uint64_t)INT64_MAX + 1));
  wait_hangup(true);
}

static void midframe(void) {
  static uint8_t f[SOAK_FLOOD_PAYLOAD + 64];
  uint8_t b[32];
  send_all(b, soak_frame_hello(b, 1u << 20, 4096, 1u << 26));
  size_t n = soak_frame_msg(f, SOAK_FLOOD_PAYLOAD);
  send_all(f, n / 2);
  wait_hangup(false);
}

static void midbuf(void) {
  static uint8_t chunk[300u << 10];
  uint8_t b[32];
  send_all(b, soak_frame_hello(b, 4u << 20, 4096, 1u << 26));
  send_all(b, soak_frame_msg_inline_head(b, 1u << 20));
  memset(chunk, 0x5a, sizeof chunk);
  send_all(chunk, sizeof chunk);
  wait_hangup(false);
}

static void nodejunk(void) {
  static const char *lines[] = {
      "{not json\n",
      "\"\\ud800\"\n",        /* a lone surrogate: valid JSON.stringify output */
      "{\"a\\u0000b\":1}\n",   /* a key with NUL */
      "\x01\xff\xfe garbage\n",
      "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":1}\n", /* no handle */
      "{\"ok\":true}\n",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
    send_all(lines[i], strlen(lines[i]));
  static char deep[2 * 200 + 2];
  for (int i = 0; i < 200; i++) {
    deep[i] = '[';
    deep[200 + i] = ']';
  }
  deep[400] = '\n';
  send_all(deep, 401);
  send_all("{\"half\":", 8);
  wait_hangup(true);
}

void soak_peer_main(const char *role) {
  const char *s = getenv("WEFT_CHANNEL_FD");
  if (s == NULL)
    s = getenv("NODE_CHANNEL_FD");
  chan = s ? atoi(s) : -1;
  if (chan < 0) {
    fprintf(stderr, "weft-soak peer %s: no channel fd\n", role);
    exit(43);
  }
  if (strcmp(role, "flood") == 0)
    flood();
  else if (strcmp(role, "liar") == 0)
    liar();
  else if (strcmp(role, "stall") == 0)
    wait_hangup(false);
  else if (strcmp(role, "midframe") == 0)
    midframe();
  else if (strcmp(role, "midbuf") == 0)
    midbuf();
  else if (strcmp(role, "nodejunk") == 0)
    nodejunk();
  fprintf(stderr, "weft-soak: unknown role %s\n", role);
  exit(43);
}
