/* baltest.c: the balancer tests' HTTP worker and client loop (baltest.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <string.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"

baltest_load_t baltest_load;
baltest_bal_t baltest_bal;

static baltest_load_t *const load = &baltest_load;
static baltest_bal_t *const bal = &baltest_bal;

/* ---- the worker: a minimal HTTP/1.1 server ----------------------------------- */

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world\n";
static const char RESP_CLOSE[] =
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\nhello world\n";

typedef struct {
  weft_conn_t base;
  char buf[2048];
  size_t len;
  bool close_after;
  int writes;
} hconn_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  hconn_t *c = (hconn_t *)(void *)h;
  b->base = c->buf + c->len;
  b->len = sizeof(c->buf) - c->len;
}

static void on_written(uv_write_t *req, int status) {
  hconn_t *c = req->data;
  free(req);
  c->writes--;
  if (status < 0 || (c->close_after && c->writes == 0))
    weft_conn_close(&c->base);
}

static void respond(hconn_t *c, bool close) {
  const char *r = close ? RESP_CLOSE : RESP;
  uv_buf_t b = uv_buf_init((char *)r, (unsigned)strlen(r));
  int n = uv_try_write(&c->base.h.stream, &b, 1);
  if (n == (int)b.len) {
    if (close && c->writes == 0)
      weft_conn_close(&c->base);
    return;
  }
  if (n > 0)
    b.base += n, b.len -= (unsigned)n;
  uv_write_t *req = malloc(sizeof(*req));
  req->data = c;
  c->writes++;
  if (uv_write(req, &c->base.h.stream, &b, 1, on_written) != 0) {
    free(req);
    c->writes--;
    weft_conn_close(&c->base);
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  hconn_t *c = (hconn_t *)(void *)s;
  if (n < 0) {
    weft_conn_close(&c->base);
    return;
  }
  c->len += (size_t)n;
  char *end;
  while (!c->close_after && (end = memmem(c->buf, c->len, "\r\n\r\n", 4)) != NULL) {
    size_t used = (size_t)(end + 4 - c->buf);
    bool close = memmem(c->buf, used, "Connection: close", 17) != NULL ||
                 weft_balancer_worker_draining(c->base.worker);
    c->close_after = close;
    weft_conn_request_done(&c->base);
    respond(c, close);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
  }
  if (c->len == sizeof(c->buf))
    weft_conn_close(&c->base);
}

static void on_conn(weft_conn_t *conn) {
  uv_read_start(&conn->h.stream, on_alloc, on_read);
}

/* Drain: answer the next request with Connection: close (the clients here
 * keep sending), so nothing is cut. */
static void on_conn_drain(weft_conn_t *conn) { (void)conn; }

/* A user message {"stall": ms}: stop taking messages (CONN ones queue up
 * undelivered), then exit after ms. */
static void free_handle(uv_handle_t *h) { free(h); }

static void on_stall_timer(uv_timer_t *t) {
  weft_ctx_t *ctx = t->data;
  uv_close((uv_handle_t *)t, free_handle);
  if (weft_worker_exit(ctx, 3) != 0)
    _exit(3);
}

atomic_int baltest_blocking, baltest_blocks_done;

static void on_user_msg(weft_port_t *p, weft_msg_t *m) {
  uint64_t ms;
  if (weft_msg_get_u64(m, "block", &ms) == 0) {
    atomic_store(&baltest_blocking, 1);
    usleep((useconds_t)(ms * 1000));  /* the loop is busy: what is tested */
    atomic_fetch_add(&baltest_blocks_done, 1);
  }
  if (weft_msg_get_u64(m, "stall", &ms) == 0) {
    weft_port_stop(p);
    uv_timer_t *t = malloc(sizeof(*t));
    uv_timer_init(weft_ctx_loop(weft_port_ctx(p)), t);
    t->data = weft_port_ctx(p);
    uv_timer_start(t, on_stall_timer, ms, 0);
  }
  weft_msg_free(m);
}

int baltest_http_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_balancer_worker_options_t o = {
      .conn_size = sizeof(hconn_t),
      .on_connection = on_conn,
      .on_drain = on_conn_drain,
      .on_message = on_user_msg,
  };
  return weft_balancer_worker_start(ctx, &o, NULL);
}

static void register_entries(weft_runtime_t *rt) {
  weft_runtime_register(rt, "http", baltest_http_entry);
}

int baltest_worker_main(void) { return baltest_worker_main_with(NULL, NULL); }

int baltest_worker_main_with(const char *name, weft_worker_entry_cb entry) {
  signal(SIGPIPE, SIG_IGN);
  weft_runtime_t *rt;
  int code = 1;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 1;
  register_entries(rt);
  if (name != NULL && weft_runtime_register(rt, name, entry) != 0) {
    weft_runtime_free(rt);
    return 1;
  }
  weft_runtime_child_entry(rt, &code);
  weft_runtime_free(rt);
  return code;
}

/* ---- the client loop ------------------------------------------------------------- */

static const char REQ_KA[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
static const char REQ_CLOSE[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

static void client_connect(baltest_client_t *c);

static void client_closed(uv_handle_t *h) {
  baltest_client_t *c = (baltest_client_t *)(void *)h;
  c->open = false;
  load->open--;
  if (load->done + load->out < load->target &&
      (load->max_connects == 0 || load->connects < load->max_connects)) {
    client_connect(c);
  } else if (load->open == 0 && load->on_finished) {
    load->on_finished();
  }
}

void baltest_client_end(baltest_client_t *c, bool failed) {
  if (c->busy) {
    c->busy = false;
    load->out--;
    if (failed)
      load->failed++;
  }
  if (!uv_is_closing((uv_handle_t *)&c->h))
    uv_close((uv_handle_t *)&c->h, client_closed);
}

static void client_wrote(uv_write_t *w, int status) {
  if (status < 0)
    baltest_client_end(w->data, true);
}

static void client_send(baltest_client_t *c) {
  if (load->done + load->out >= load->target) {
    baltest_client_end(c, false);
    return;
  }
  const char *r = load->keepalive ? REQ_KA : REQ_CLOSE;
  uv_buf_t b = uv_buf_init((char *)r, (unsigned)strlen(r));
  c->busy = true;
  c->len = 0;
  load->out++;
  c->wr.data = c;
  if (uv_write(&c->wr, &c->h.s, &b, 1, client_wrote) != 0)
    baltest_client_end(c, true);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  baltest_client_t *c = (baltest_client_t *)(void *)h;
  b->base = c->buf + c->len;
  b->len = sizeof(c->buf) - c->len;
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  baltest_client_t *c = (baltest_client_t *)(void *)s;
  if (n < 0) {
    baltest_client_end(c, c->busy);  /* EOF or reset with a request out: failed */
    return;
  }
  c->len += (size_t)n;
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (end == NULL || c->len < (size_t)(end + 4 - c->buf) + 12)
    return;
  bool close = memmem(c->buf, (size_t)(end - c->buf), "Connection: close", 17) != NULL;
  CHECK(memcmp(c->buf, "HTTP/1.1 200 OK", 15) == 0);
  c->busy = false;
  load->out--;
  load->done++;
  if (load->on_progress)
    load->on_progress(load->done);
  if (close || !load->keepalive)
    baltest_client_end(c, false);
  else
    client_send(c);
}

static void client_connected(uv_connect_t *cr, int status) {
  baltest_client_t *c = cr->data;
  if (status < 0) {
    load->failed++;
    baltest_client_end(c, false);
    return;
  }
  uv_read_start(&c->h.s, client_alloc, client_read);
  client_send(c);
}

static void client_connect(baltest_client_t *c) {
  memset(c, 0, sizeof(*c));
  c->cr.data = c;
  c->open = true;
  load->open++;
  load->connects++;
  if (load->path) {
    uv_pipe_init(load->loop, &c->h.pipe, 0);
    uv_pipe_connect(&c->cr, &c->h.pipe, load->path, client_connected);
    return;
  }
  uv_tcp_init(load->loop, &c->h.tcp);
  if (uv_tcp_connect(&c->cr, &c->h.tcp, (struct sockaddr *)&load->addr, client_connected) != 0) {
    load->failed++;
    baltest_client_end(c, false);
  }
}

void baltest_load_start(weft_balancer_t *b, const char *host, const char *path) {
  load->loop = weft_ctx_loop(weft_ctx_current());
  load->path = path;
  if (!path && strchr(host, ':'))
    uv_ip6_addr(host, weft_balancer_port(b), (struct sockaddr_in6 *)&load->addr);
  else if (!path)
    uv_ip4_addr(host, weft_balancer_port(b), (struct sockaddr_in *)&load->addr);
  for (int i = 0; i < load->nclients; i++)
    client_connect(&load->clients[i]);
}

/* ---- one balancer per test ---------------------------------------------------- */

static void on_bal_closed(weft_balancer_t *b) {
  bal->nfinal = weft_balancer_workers(b);
  for (size_t i = 0; i < bal->nfinal && i < 4; i++)
    CHECK(weft_balancer_stats(b, i, &bal->final[i]) == 0);
  bal->closed++;
}

static void on_finished(void) { weft_balancer_close(bal->b, on_bal_closed); }

weft_runtime_t *baltest_new_runtime(void) {
  weft_runtime_t *rt = ktest_new_runtime();
  register_entries(rt);
  memset(load, 0, sizeof(*load));
  memset(bal, 0, sizeof(*bal));
  bal->host = "127.0.0.1";
  load->on_finished = on_finished;
  return rt;
}

/* ---- blocking probes, for any thread ------------------------------------------ */

int baltest_connect(int port, int timeout_ms, int *fdp) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int err = 0;
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    err = errno == EINPROGRESS ? 0 : -errno;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = err ? 0 : poll(&p, 1, timeout_ms);
    if (err == 0 && n <= 0)
      err = n == 0 ? UV_ETIMEDOUT : -errno;
    socklen_t len = sizeof(int);
    int soerr = 0;
    if (err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr)
      err = -soerr;
  }
  if (err || fdp == NULL) {
    close(fd);
    return err;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  *fdp = fd;
  return 0;
}

int baltest_read_reply(int fd, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end != NULL && len >= (size_t)(end + 4 - buf) + 12)
      break;
    if (len + 1 >= cap)
      return UV_E2BIG;
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n == 0)
      break;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
    len += (size_t)n;
  }
  buf[len] = 0;
  return (int)len;
}
