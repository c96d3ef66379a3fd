/* rawpeer.c: see rawpeer.h. */
#include "rawpeer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "wire.h"

int rawpeer_fd(void) {
  const char *s = getenv("WEFT_CHANNEL_FD");
  int fd = s ? atoi(s) : -1;
  if (fd < 0 || fcntl(fd, F_GETFD) < 0)
    exit(RAWPEER_EXIT_SETUP);
  return fd;
}

void rawpeer_send(int fd, const void *p, size_t n, int pass) {
  struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (pass >= 0) {
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &pass, sizeof(int));
  }
  while (iov.iov_len > 0) {
    ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      exit(0);
    iov.iov_base = (char *)iov.iov_base + w;
    iov.iov_len -= (size_t)w;
    mh.msg_control = NULL; /* the fd went with the first byte */
    mh.msg_controllen = 0;
  }
}

void rawpeer_hello(int fd, uint32_t window_msgs, uint64_t window_bytes, int pass) {
  uint8_t b[64];
  int n = weft__wire_put_hello(b, sizeof(b), 1u << 20, window_msgs, window_bytes);
  if (n <= 0)
    exit(RAWPEER_EXIT_SETUP);
  rawpeer_send(fd, b, (size_t)n, pass);
}

size_t rawpeer_put_msg(uint8_t *out, size_t cap, size_t payload_len) {
  size_t body = 2 + 5 + payload_len; /* nxfer, bin32 head, bytes */
  if (cap < WEFT__WIRE_HEADER + body)
    exit(RAWPEER_EXIT_SETUP);
  size_t n = weft__wire_header(out, (uint32_t)(4 + body), WEFT__WIRE_VERSION, WEFT__WIRE_MSG, 0);
  weft__wire_be16(out + n, 0);
  n += 2;
  out[n++] = 0xc6; /* bin 32 */
  weft__wire_be32(out + n, (uint32_t)payload_len);
  n += 4;
  memset(out + n, 'x', payload_len);
  return n + payload_len;
}

void rawpeer_wait_hangup(int fd, int timeout_ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
  char buf[4096];
  for (;;) {
    uint64_t now = uv_hrtime();
    if (now >= deadline)
      exit(RAWPEER_EXIT_NOT_HUNG_UP);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
    if (r < 0 && errno != EINTR)
      exit(RAWPEER_EXIT_SETUP);
    if (r <= 0)
      continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      exit(0);
  }
}
