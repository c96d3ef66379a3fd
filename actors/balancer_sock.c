/* balancer_sock.c: the balancer's sockets and protocol messages (see
 * balancer_int.h): listening sockets made with plain POSIX calls so that
 * SO_REUSEPORT can be set before bind (libuv 1.44 has no flag for it) and so
 * that the fds can be duplicated and handed to workers; and the small
 * messages of the protocol. No state; any thread. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "balancer_int.h"

int weft__bal_op(const weft_msg_t *msg) {
  uint64_t op;
  if (weft_msg_get_u64(msg, "wb", &op) != 0 || op == 0 || op > 255)
    return 0;
  return (int)op;
}

int weft__bal_msg(int op, bool pipe, int fd, weft_msg_t **out) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "wb", (uint64_t)op);
  weft_msg_put_bool(m, "pipe", pipe);
  err = weft_msg_error(m);
  if (err == 0 && fd >= 0)
    err = weft_msg_add_socket(m, fd);
  if (err) {
    if (fd >= 0 && weft_msg_xfer_count(m) == 1)
      weft_msg_take_socket(m, 0, &fd);  /* give it back */
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

int weft__bal_hello(bool pipe, int fd, weft_buf_t *gbuf, size_t gate, weft_msg_t **out) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, gbuf ? 3 : 2);
  weft_msg_put_u64(m, "wb", WEFT__BAL_HELLO);
  weft_msg_put_bool(m, "pipe", pipe);
  if (gbuf)
    weft_msg_put_u64(m, "gate", gate);
  err = weft_msg_error(m);
  if (err == 0)
    err = weft_msg_add_socket(m, fd);
  if (err) {
    weft_msg_free(m);  /* fd was not added */
    return err;
  }
  /* A shared buffer is not detached: the message gets a handle of its own. */
  if (gbuf && (err = weft_msg_add_buf(m, gbuf)) != 0) {
    weft_msg_take_socket(m, 0, &fd);  /* give it back */
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

/* dup() then FD_CLOEXEC rather than F_DUPFD_CLOEXEC: ThreadSanitizer sees
 * dup() create an fd (not fcntl), so fd numbers reused across threads do not
 * look like races. The two calls are on the balancer's thread, which is also
 * the one that spawns worker processes. */
/* dup then F_SETFD rather than fcntl(F_DUPFD_CLOEXEC): ThreadSanitizer does
 * not see the latter create a descriptor and then reports a race when the
 * number of one a finished thread closed comes back. */
int weft__bal_dup(int fd) {
  int d = dup(fd);
  if (d < 0)
    return -errno;
  fcntl(d, F_SETFD, FD_CLOEXEC);
  return d;
}

static int tcp_addr(const weft_balancer_options_t *o, int port, struct sockaddr_storage *ss,
                    socklen_t *len) {
  const char *host = o->host ? o->host : "127.0.0.1";
  memset(ss, 0, sizeof(*ss));
  if (strchr(host, ':') != NULL) {
    *len = sizeof(struct sockaddr_in6);
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
  }
  *len = sizeof(struct sockaddr_in);
  return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

static int unix_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len) {
  struct sockaddr_un *un = (struct sockaddr_un *)ss;
  if (strlen(path) >= sizeof(un->sun_path))
    return UV_ENAMETOOLONG;
  memset(ss, 0, sizeof(*ss));
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, strlen(path) + 1);
  *len = sizeof(*un);
  return 0;
}

static int bound_port_of(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

int weft__bal_listen(const weft_balancer_options_t *o, int port, bool reuseport, int *fdp,
                     int *bound_port) {
  struct sockaddr_storage ss;
  socklen_t len;
  int err = o->path ? unix_addr(o->path, &ss, &len) : tcp_addr(o, port, &ss, &len);
  if (err)
    return err;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  if (!o->path && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    goto fail_errno;
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
    goto fail_errno;
  /* 1 s: the kernel accepts a silent client at its first SYN-ACK retransmission */
  if (!o->path && o->defer_accept &&
      setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one)) != 0)
    goto fail_errno;
  if (bind(fd, (struct sockaddr *)&ss, len) != 0)
    goto fail_errno;
  if (listen(fd, o->backlog > 0 ? o->backlog : 511) != 0)
    goto fail_errno;
  *fdp = fd;
  *bound_port = o->path ? 0 : bound_port_of(fd);
  return 0;

fail_errno:
  err = -errno;
  close(fd);
  return err;
}

bool weft_balancer_reuseport_migrates(void) {
  char c = '0';
  int fd = open("/proc/sys/net/ipv4/tcp_migrate_req", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, &c, 1);
  close(fd);
  return n == 1 && c == '1';
}

int weft_balancer_policy_parse(const char *name, weft_balancer_policy_t *out) {
  static const char *const names[] = {"round_robin", "least_connections", "reuseport", "shared"};
  for (int i = 0; name && out && i < 4; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (weft_balancer_policy_t)i;
      return 0;
    }
  }
  return WEFT_EINVAL;
}

const char *weft_balancer_policy_name(weft_balancer_policy_t p) {
  static const char *const names[] = {"round_robin", "least_connections", "reuseport", "shared"};
  return (unsigned)p < 4 ? names[p] : "unknown";
}
