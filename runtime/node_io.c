/* node_io.c: the loop transport of nodes (node_int.h): tcp:// and ipc://
 * connections whose bytes the node's own loop reads and writes.
 *
 * Each socket is non-blocking and watched by a uv_poll_t of the node's
 * loop. Reads go straight into the iovs node.c asks for (a DATA body's own
 * message memory, then rbuf); batches go out with one sendmsg of their
 * segments (control frames and headers from wbuf, message bytes from where
 * they lie). What the socket does not take waits for it to be writable; the
 * loop writes nothing else meanwhile. A message thus costs the receiving
 * loop one wake-up, and no other thread.
 *
 * Listeners bind at the node's start (the port of :0 is known at once);
 * dials resolve host names with uv_getaddrinfo (libuv's pool, not the
 * loop) and connect without blocking, each resolved address in turn.
 *
 * Threads: everything here runs on the node's loop except the pinger, one
 * thread per node, which every so often, for each connection on
 * node->pinged that has sent nothing for ping_ms, writes a PING frame
 * (MSG_DONTWAIT) if the stream is between frames (no batch partly written).
 * node->io_lock orders it against the loop's writes and the list; if the
 * socket takes only part of a PING, the rest goes before anything else
 * (ping_rest), written by whichever side comes first. SIGPIPE is never
 * raised (MSG_NOSIGNAL). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "node_int.h"

#define ACCEPTS_PER_TURN 32
#define READS_PER_TURN 16
/* A turn stops reading past this: what was read gets delivered and
 * credited (and the other connections' turns come) before more is taken,
 * as nng's one receive in flight per connection paced it. */
#define READ_BYTES_PER_TURN (256u * 1024u)
#define PINGER_MAX_WAIT_MS 250u

static const uint8_t PING_FRAME[WEFT__NET_HEAD] = {0, 0, 0, WEFT__NET_HEAD - 4, WEFT__NET_PING};

static int sys_err(int e) { return uv_translate_sys_error(e); }

/* ---- addresses ---------------------------------------------------------------- */

static int parse_port(const char *p, char out[8]) {
  size_t len = strlen(p);
  if (len == 0 || len > 5 || strspn(p, "0123456789") != len || atoi(p) > 65535)
    return UV_EINVAL;
  memcpy(out, p, len + 1);
  return 0;
}

int weft__nio_parse(const char *url, node_addr_t *a) {
  memset(a, 0, sizeof(*a));
  if (strncmp(url, "ipc://", 6) == 0) {
    struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
    size_t len = strlen(url + 6);
    if (len == 0 || len >= sizeof(un->sun_path))
      return UV_EINVAL;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, url + 6, len + 1);
    a->sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    a->ipc = true;
    return 0;
  }
  if (strncmp(url, "tcp://", 6) != 0)
    return 1; /* tls+tcp://, and whatever else nng makes of it */
  const char *h = url + 6, *colon;
  char host[256];
  size_t hlen;
  if (*h == '[') {
    const char *end = strchr(h, ']');
    if (end == NULL || end[1] != ':')
      return UV_EINVAL;
    hlen = (size_t)(end - h - 1);
    h++;
    colon = end + 1;
  } else {
    colon = strrchr(h, ':');
    if (colon == NULL)
      return UV_EINVAL;
    hlen = (size_t)(colon - h);
  }
  if (hlen >= sizeof(host) || parse_port(colon + 1, a->port) != 0)
    return UV_EINVAL;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  unsigned port = (unsigned)atoi(a->port);
  struct sockaddr_in *in4 = (struct sockaddr_in *)&a->sa;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
  if (hlen == 0 || strcmp(host, "*") == 0) { /* any address, as nng takes it */
    in4->sin_family = AF_INET;
    in4->sin_addr.s_addr = htonl(INADDR_ANY);
    in4->sin_port = htons((uint16_t)port);
    a->sa_len = sizeof(*in4);
  } else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    a->sa_len = sizeof(*in4);
  } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    a->sa_len = sizeof(*in6);
  } else {
    a->name = weft__strdup(host); /* resolved at each dial */
    if (a->name == NULL)
      return WEFT_ENOMEM;
  }
  return 0;
}

static void set_nodelay(int fd, int family) {
  int one = 1;
  if (family == AF_INET || family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- listeners -------------------------------------------------------------------- */

/* An ipc path left behind by a process that died: nobody accepts on it. */
static void unlink_stale(const node_addr_t *a) {
  const char *path = ((const struct sockaddr_un *)&a->sa)->sun_path;
  struct stat st;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  if (connect(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0 && errno == ECONNREFUSED)
    (void)unlink(path);
  close(fd);
}

int weft__nio_listen(node_listener_t *l, const char *url) {
  node_addr_t a;
  int err = weft__nio_parse(url, &a);
  if (err != 0)
    return err;
  if (a.name != NULL) { /* a host name: resolving it here would block the loop */
    weft__free(a.name);
    return 1;
  }
  int family = a.sa.ss_family, one = 1;
  if (a.ipc) {
    unlink_stale(&a);
    l->path = weft__strdup(((struct sockaddr_un *)&a.sa)->sun_path);
    if (l->path == NULL)
      return WEFT_ENOMEM;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sys_err(errno);
  if (!a.ipc)
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&a.sa, a.sa_len) != 0 || listen(fd, SOMAXCONN) != 0) {
    err = sys_err(errno);
    close(fd);
    weft__free(l->path);
    l->path = NULL;
    return err;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  l->port = 0;
  if (!a.ipc && getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
    l->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
  l->fd = fd;
  l->loop_io = true;
  return 0;
}

static void on_accept_io(uv_poll_t *h, int status, int events) {
  (void)events;
  node_listener_t *l = h->data;
  if (status < 0)
    return; /* (a listening socket has no error to report this way) */
  for (int i = 0; i < ACCEPTS_PER_TURN && !l->node->closing; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        /* out of descriptors or memory: the tick tries again, rather than
         * spinning on a socket that stays readable */
        uv_poll_stop(&l->io);
        l->paused = true;
      }
      return;
    }
    set_nodelay(fd, l->path ? AF_UNIX : AF_INET);
    weft__node_conn_fd(l->node, fd, NULL);
  }
}

void weft__nio_listen_start(node_listener_t *l) {
  if (uv_poll_init(l->node->ctx->loop, &l->io, l->fd) != 0) {
    l->busy = false; /* (cannot happen to a fresh socket) the listener stays deaf */
    return;
  }
  l->io.data = l;
  l->io_open = true;
  uv_poll_start(&l->io, UV_READABLE, on_accept_io);
}

void weft__nio_listen_resume(node_listener_t *l) {
  l->paused = false;
  if (l->io_open && !l->node->closing)
    uv_poll_start(&l->io, UV_READABLE, on_accept_io);
}

static void on_listen_closed(uv_handle_t *h) {
  node_listener_t *l = h->data;
  close(l->fd);
  l->fd = -1;
  if (l->path != NULL)
    (void)unlink(l->path);
  l->io_open = false;
  l->busy = false;
  weft__node_maybe_done(l->node);
}

void weft__nio_listen_close(node_listener_t *l) {
  if (!l->io_open || uv_is_closing((uv_handle_t *)&l->io))
    return;
  uv_close((uv_handle_t *)&l->io, on_listen_closed);
}

/* ---- dialers ---------------------------------------------------------------------- */

static void dial_next(node_dialer_t *d);

/* The dial is over (its socket handed on or closed): d->busy false. */
static void dial_end(node_dialer_t *d, bool failed) {
  if (d->ai != NULL)
    uv_freeaddrinfo(d->ai);
  d->ai = d->ai_next = NULL;
  d->stage = DIAL_IDLE;
  d->busy = false;
  if (d->node->closing)
    weft__node_maybe_done(d->node);
  else if (failed)
    weft__node_dial_failed(d);
}

static void on_dial_closed(uv_handle_t *h) {
  node_dialer_t *d = h->data;
  bool failed = d->fd >= 0; /* still ours: the connect failed */
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
  if (failed && !d->node->closing && d->ai_next != NULL) {
    d->stage = DIAL_IDLE;
    dial_next(d); /* the next address */
    return;
  }
  dial_end(d, failed);
}

static void on_connect_io(uv_poll_t *h, int status, int events) {
  (void)events;
  node_dialer_t *d = h->data;
  int err = 0;
  socklen_t len = sizeof(err);
  if (status < 0 || getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = status < 0 ? -status : errno;
  if (err == EINPROGRESS)
    return;
  uv_poll_stop(&d->io);
  if (err == 0) {
    int fd = d->fd;
    d->fd = -1; /* the connection's now (the poll handle closes without it) */
    set_nodelay(fd, d->addr.ipc ? AF_UNIX : AF_INET);
    weft__node_conn_fd(d->node, fd, d);
  }
  d->stage = DIAL_CLOSING;
  uv_close((uv_handle_t *)&d->io, on_dial_closed);
}

/* Connect to sa without blocking; the poll handle says when it is done. */
static void dial_to(node_dialer_t *d, const struct sockaddr *sa, socklen_t len) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int rv;
    do
      rv = connect(fd, sa, len);
    while (rv != 0 && errno == EINTR);
    if ((rv == 0 || errno == EINPROGRESS) && uv_poll_init(d->node->ctx->loop, &d->io, fd) == 0) {
      d->fd = fd;
      d->io.data = d;
      d->stage = DIAL_CONNECTING;
      uv_poll_start(&d->io, UV_WRITABLE, on_connect_io);
      return;
    }
    close(fd);
  }
  if (d->ai_next != NULL) {
    dial_next(d);
    return;
  }
  dial_end(d, true);
}

static void dial_next(node_dialer_t *d) {
  struct addrinfo *ai = d->ai_next;
  d->ai_next = ai->ai_next;
  dial_to(d, ai->ai_addr, ai->ai_addrlen);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  node_dialer_t *d = req->data;
  d->ai = d->ai_next = res;
  if (status != 0 || res == NULL || d->node->closing) {
    dial_end(d, true);
    return;
  }
  dial_next(d);
}

void weft__nio_dial(node_dialer_t *d) {
  d->busy = true;
  if (d->addr.name == NULL) {
    dial_to(d, (const struct sockaddr *)&d->addr.sa, d->addr.sa_len);
    return;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  d->gai.data = d;
  d->stage = DIAL_RESOLVING;
  if (uv_getaddrinfo(d->node->ctx->loop, &d->gai, on_resolved, d->addr.name, d->addr.port,
                     &hints) != 0)
    dial_end(d, true);
}

void weft__nio_dial_close(node_dialer_t *d) {
  if (d->stage == DIAL_RESOLVING)
    uv_cancel((uv_req_t *)&d->gai); /* on_resolved then ends it */
  else if (d->stage == DIAL_CONNECTING) {
    uv_poll_stop(&d->io);
    d->stage = DIAL_CLOSING;
    uv_close((uv_handle_t *)&d->io, on_dial_closed);
  }
}

/* ---- connections: reading ------------------------------------------------------------ */

static unsigned to_iovec(const nng_iov *in, unsigned k, struct iovec *out, size_t *total) {
  *total = 0;
  for (unsigned i = 0; i < k; i++) {
    out[i].iov_base = in[i].iov_buf;
    out[i].iov_len = in[i].iov_len;
    *total += in[i].iov_len;
  }
  return k;
}

/* Read while the socket has bytes (a bounded number of times and bytes
 * per turn: the poll is level-triggered, the rest comes next turn). */
static void conn_read(node_conn_t *c) {
  size_t total = 0;
  for (int i = 0; i < READS_PER_TURN && total < READ_BYTES_PER_TURN && c->state != CONN_DEAD;
       i++) {
    nng_iov niov[NODE_SEGS];
    struct iovec iov[NODE_SEGS];
    size_t want;
    unsigned k = to_iovec(niov, weft__node_rx_iov(c, niov), iov, &want);
    ssize_t got = readv(c->fd, iov, (int)k);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->rx_direct = 0;
      return;
    }
    if (got <= 0) { /* closed by the peer, or reset */
      weft__node_conn_gone(c, WEFT_EPEERDIED);
      return;
    }
    atomic_store_explicit(&c->last_rx_ns, uv_hrtime(), memory_order_relaxed);
    total += (size_t)got;
    if (!weft__node_conn_got(c, (size_t)got)) {
      weft__node_conn_maybe_free(c);
      return;
    }
    if ((size_t)got < want)
      return; /* the socket is empty */
  }
}

bool weft__nio_readable(const node_conn_t *c) {
  char byte;
  return c->fd >= 0 && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
}

bool weft__nio_has_input(const node_conn_t *c) {
  int n = 0;
  return c->fd >= 0 && ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

/* ---- connections: writing ------------------------------------------------------------ */

static void on_conn_io(uv_poll_t *h, int status, int events);

static void watch(node_conn_t *c, int events) {
  if (c->io_events == events || !c->io_open || uv_is_closing((uv_handle_t *)&c->io))
    return;
  c->io_events = events;
  uv_poll_start(&c->io, events, on_conn_io);
}

/* Under io_lock: the rest of a PING the socket took only part of. 0 once
 * it is all out, UV_EAGAIN, or an error. */
static int ping_rest_out(node_conn_t *c) {
  while (c->ping_rest > 0) {
    const uint8_t *p = PING_FRAME + sizeof(PING_FRAME) - c->ping_rest;
    ssize_t k = send(c->fd, p, c->ping_rest, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : sys_err(errno);
    c->ping_rest = (uint8_t)(c->ping_rest - k);
  }
  return 0;
}

int weft__nio_write(node_conn_t *c) {
  weft_node_t *n = c->node;
  nng_iov niov[NODE_SEGS];
  struct iovec iov[NODE_SEGS];
  size_t want;
  struct msghdr mh = {.msg_iov = iov};
  uv_mutex_lock(&n->io_lock);
  int rv = ping_rest_out(c);
  while (rv == 0 && c->wsent < c->wtotal) {
    mh.msg_iovlen = to_iovec(niov, weft__node_batch_iov(c, niov), iov, &want);
    ssize_t k = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0) {
      rv = errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : sys_err(errno);
      break;
    }
    c->wsent += (size_t)k;
    if ((size_t)k < want) /* the socket is full */
      rv = UV_EAGAIN;
  }
  c->tx_mid = rv == UV_EAGAIN; /* no PING goes out inside this batch */
  uv_mutex_unlock(&n->io_lock);
  atomic_store_explicit(&c->last_tx_ns, uv_hrtime(), memory_order_relaxed);
  watch(c, rv == UV_EAGAIN ? UV_READABLE | UV_WRITABLE : UV_READABLE);
  return rv;
}

static void on_conn_io(uv_poll_t *h, int status, int events) {
  node_conn_t *c = h->data;
  if (status < 0) {
    weft__node_conn_gone(c, WEFT_EPEERDIED);
    return;
  }
  if ((events & UV_WRITABLE) && c->tx_mid) {
    int rv = weft__nio_write(c);
    if (rv == 0)
      weft__node_sent(c);
    else if (rv != UV_EAGAIN) {
      weft__node_conn_gone(c, WEFT_EPEERDIED);
      return;
    }
    if (c->state == CONN_DEAD) {
      weft__node_conn_maybe_free(c);
      return;
    }
  }
  if (events & (UV_READABLE | UV_DISCONNECT))
    conn_read(c);
}

int weft__nio_conn_start(node_conn_t *c, int fd) {
  int err = uv_poll_init(c->node->ctx->loop, &c->io, fd);
  if (err != 0)
    return err;
  c->fd = fd;
  c->io.data = c;
  c->io_open = true;
  c->io_events = UV_READABLE;
  uv_poll_start(&c->io, UV_READABLE, on_conn_io);
  return 0;
}

static void on_conn_closed(uv_handle_t *h) {
  node_conn_t *c = h->data;
  close(c->fd);
  c->fd = -1;
  c->io_open = false;
  weft__node_conn_maybe_free(c);
}

void weft__nio_conn_close(node_conn_t *c) {
  weft_node_t *n = c->node;
  uv_mutex_lock(&n->io_lock);
  if (c->pinged) {
    weft_list_remove(&n->pinged, &c->ping_link);
    c->pinged = false;
  }
  uv_mutex_unlock(&n->io_lock);
  if (c->io_open && !uv_is_closing((uv_handle_t *)&c->io))
    uv_close((uv_handle_t *)&c->io, on_conn_closed);
}

/* ---- the pinger ----------------------------------------------------------------------- */

/* Under io_lock: a PING on c if it sent nothing for ping_ms and is between
 * frames. */
static void ping_one(node_conn_t *c, uint64_t now) {
  if (c->ping_rest > 0) {
    (void)ping_rest_out(c); /* an error: the loop's read sees the socket end */
    return;
  }
  uint64_t last = atomic_load_explicit(&c->last_tx_ns, memory_order_relaxed);
  if (c->tx_mid || now - last < (uint64_t)c->ping_ms * 1000000u)
    return;
  ssize_t k;
  do
    k = send(c->fd, PING_FRAME, sizeof(PING_FRAME), MSG_NOSIGNAL | MSG_DONTWAIT);
  while (k < 0 && errno == EINTR);
  if (k <= 0)
    return; /* full: the peer hears the bytes already queued; gone: the loop will see */
  atomic_store_explicit(&c->last_tx_ns, now, memory_order_relaxed);
  c->ping_rest = (uint8_t)(sizeof(PING_FRAME) - (size_t)k);
}

static void pinger_main(void *arg) {
  weft_node_t *n = arg;
  uv_mutex_lock(&n->io_lock);
  while (!n->pinger_stop) {
    uint64_t now = uv_hrtime();
    uint32_t wait_ms = PINGER_MAX_WAIT_MS;
    for (weft_list_node_t *l = weft_list_first(&n->pinged); l; l = weft_list_next(l)) {
      node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, ping_link);
      uint32_t half = c->ping_ms / 2 ? c->ping_ms / 2 : 1;
      if (half < wait_ms)
        wait_ms = half;
      ping_one(c, now);
    }
    (void)uv_cond_timedwait(&n->pinger_cond, &n->io_lock, (uint64_t)wait_ms * 1000000u);
  }
  uv_mutex_unlock(&n->io_lock);
}

int weft__nio_pinger_start(weft_node_t *n) {
  memset(&n->pinged, 0, sizeof(weft_list_t));
  int err = uv_mutex_init(&n->io_lock);
  if (err != 0)
    return err;
  if ((err = uv_cond_init(&n->pinger_cond)) != 0)
    goto fail_mutex;
  if ((err = uv_thread_create(&n->pinger, pinger_main, n)) != 0)
    goto fail_cond;
  n->pinger_on = true;
  return 0;
fail_cond:
  uv_cond_destroy(&n->pinger_cond);
fail_mutex:
  uv_mutex_destroy(&n->io_lock);
  return err;
}

void weft__nio_pinger_add(node_conn_t *c) {
  weft_node_t *n = c->node;
  uv_mutex_lock(&n->io_lock);
  weft_list_push_back(&n->pinged, &c->ping_link);
  c->pinged = true;
  uv_cond_signal(&n->pinger_cond); /* its period may be shorter than the wait under way */
  uv_mutex_unlock(&n->io_lock);
}

void weft__nio_pinger_stop(weft_node_t *n) {
  if (!n->pinger_on)
    return;
  uv_mutex_lock(&n->io_lock);
  n->pinger_stop = true;
  uv_cond_signal(&n->pinger_cond);
  uv_mutex_unlock(&n->io_lock);
  uv_thread_join(&n->pinger);
  uv_cond_destroy(&n->pinger_cond);
  uv_mutex_destroy(&n->io_lock);
  n->pinger_on = false;
}
