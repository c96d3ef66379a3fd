/* dist_gateway: connections spread over threads on one machine and requests
 * over back ends on others, with failover (nginx `upstream` with least_conn
 * and `proxy_next_upstream error timeout`, in one C program on weft).
 *
 *   dist_gateway --backend URL NAME [--work N]
 *       a back end: a node NAME listening on URL (tcp://ADDR:PORT; PORT 0
 *       takes a free one) that provides the service "gateway": each request
 *       costs N rounds of SHA-256 over its path and body (default 1000,
 *       about 0.3 ms here) and is answered with the digest. Prints
 *       "backend NAME pid PID listening on URL" with the port it got.
 *       SIGTERM/SIGINT: withdraws (requests in flight are answered), exits 0.
 *
 *   dist_gateway --front PORT [--host H] [--workers N]
 *                [--header-timeout-ms T] [--idle-timeout-ms T] --backends URL...
 *       the front: an HTTP/1.1 server (keep-alive, pipelining; Debian's
 *       http-parser) on H:PORT (default 127.0.0.1; PORT 0 takes a free one)
 *       behind a weft balancer with N worker threads (default 2). Every worker is a node
 *       of its own that dials the back ends and forwards each request through
 *       a service client (weft_service_call): GET and HEAD are idempotent
 *       (retried on another back end when theirs dies or times out), the
 *       rest are not (a back end's death is a 502). The response carries
 *       X-Backend (which back end answered), X-Backend-Pid and X-Attempts.
 *       Prints "front listening on http://H:PORT workers N" and one line per
 *       provider that comes up or goes. SIGTERM/SIGINT: drains, exits 0.
 *       Hostile clients cost bounded memory and no worker: a request line +
 *       headers past 8 KiB is a 431, a body past 16 KiB a 413 (at once when
 *       Content-Length says so), a method the parser does not know a 501,
 *       a URL past 2 KiB a 414,
 *       anything else unparsable a 400, each with the connection closed; a
 *       request not complete within the header timeout (default 10000 ms
 *       from its first byte, or from the connect) is a 408 and a close
 *       (slowloris); a connection idle between requests longer than the idle
 *       timeout (default 60000 ms) is closed; pipelined requests are
 *       answered in order, one at the back ends at a time, and a client
 *       that does not read its answers is not read from either once 64 KiB
 *       of them wait beyond the socket's send buffer (64 KiB, not the
 *       kernel's autotuned megabytes), and is closed after the idle timeout
 *       if it stays so.
 *
 *   dist_gateway --demo [--requests N] [--connections C]
 *                       [--backend-host ADDR[@NETNS]] [--backend-host ...]
 *                       [--front-host ADDR] [--deadline-s S]
 *       starts 2 back ends and a front as processes (on 127.0.0.1, or on
 *       ADDR inside network namespace NETNS through `ip netns exec`, as
 *       tools/netns-cluster.sh does), drives C keep-alive connections of
 *       GET requests, SIGKILLs back end b1 after N/3 answers, restarts it
 *       500 ms later on the same URL, and runs until it has answered again
 *       and N/3 more requests were answered. Prints requests, failures,
 *       retries, each back end's share before the kill and after the
 *       restart, and the time from the restart until b1 took traffic again.
 *       Exits 1 if a request failed, if b1 took no traffic again, if a
 *       process exited badly, or if it did not finish within S seconds
 *       (default 28). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <http_parser.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>

#include <weft.h>

#define SERVICE "gateway"
#define MAX_URL 2048
#define MAX_BODY 16384
#define MAX_HEADER 8192            /* request line + headers: past it, 431 */
#define WRITE_BACKLOG (64 * 1024)  /* answers waiting for a client that does not read */
#define FRONT_SNDBUF (64 * 1024)   /* a connection's kernel send buffer (Linux doubles it) */
#define DRAIN_IDLE_MS 200          /* at drain, an idle connection gets this for its next request */

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "dist_gateway: %s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* Started by --demo: die with the demo (no orphan if it is killed). */
static void die_with_parent(void) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1)
    exit(1);
}

/* ==== the back end ============================================================== */

static struct {
  const char *name;
  unsigned work;
  weft_node_t *node;
  weft_service_t *svc;
  uv_signal_t sigterm, sigint;
} be = {.work = 1000};

#if MBEDTLS_VERSION_MAJOR >= 3
#define sha256_starts(c) mbedtls_sha256_starts(c, 0)
#define sha256_update mbedtls_sha256_update
#define sha256_finish mbedtls_sha256_finish
#else
#define sha256_starts(c) mbedtls_sha256_starts_ret(c, 0)
#define sha256_update mbedtls_sha256_update_ret
#define sha256_finish mbedtls_sha256_finish_ret
#endif

/* The work: SHA-256 over path and body, then over the digest, rounds times. */
static void digest(const void *path, size_t plen, const void *body, size_t blen, unsigned rounds,
                   char hex[65]) {
  unsigned char h[32];
  mbedtls_sha256_context s;
  mbedtls_sha256_init(&s);
  sha256_starts(&s);
  sha256_update(&s, path, plen);
  sha256_update(&s, body, blen);
  sha256_finish(&s, h);
  for (unsigned i = 0; i < rounds; i++) {
    sha256_starts(&s);
    sha256_update(&s, h, sizeof(h));
    sha256_finish(&s, h);
  }
  mbedtls_sha256_free(&s);
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", h[i]);
}

static void be_handle(weft_service_t *svc, weft_msg_t *req, void *data) {
  (void)data;
  const char *path = "";
  const void *body = "";
  size_t plen = 0, blen = 0;
  weft_msg_get_str(req, "path", &path, &plen);
  weft_msg_get_bin(req, "body", &body, &blen);
  char hex[65];
  digest(path, plen, body, blen, be.work, hex);
  weft_msg_t *reply;
  if (weft_msg_new(&reply) != 0) {
    weft_service_drop(svc, req); /* the client sees WEFT_ECLOSED */
    return;
  }
  weft_msg_put_map(reply, 3);
  weft_msg_put_str(reply, "backend", be.name);
  weft_msg_put_u64(reply, "pid", (uint64_t)uv_os_getpid());
  weft_msg_put_str(reply, "sha256", hex);
  if (weft_service_reply(svc, req, reply) != 0) /* always takes req */
    weft_msg_free(reply);                        /* the client stopped waiting */
}

static void be_withdrawn(weft_service_t *svc, void *data) {
  (void)svc;
  (void)data;
  weft_node_close(be.node, NULL, NULL);
}

static void be_on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  uv_close((uv_handle_t *)&be.sigterm, NULL);
  uv_close((uv_handle_t *)&be.sigint, NULL);
  if (weft_service_withdraw(be.svc, be_withdrawn, NULL) != 0)
    weft_node_close(be.node, NULL, NULL);
}

static int run_backend(const char *url, const char *name) {
  be.name = name;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {url, NULL};
  weft_node_options_t o = {.name = name, .listen = listen};
  int err = weft_node_start(ctx, &o, &be.node);
  if (err) {
    fprintf(stderr, "backend %s: cannot listen on %s: %s\n", name, url, weft_strerror(err));
    weft_runtime_free(rt);
    return 1;
  }
  check(weft_service_provide(be.node, SERVICE, be_handle, NULL, &be.svc), "weft_service_provide");
  char real[256];
  size_t n = strlen(url);
  if (n > 2 && strcmp(url + n - 2, ":0") == 0)
    snprintf(real, sizeof(real), "%.*s:%d", (int)(n - 2), url, weft_node_port(be.node, 0));
  else
    snprintf(real, sizeof(real), "%s", url);
  printf("backend %s pid %d listening on %s\n", name, (int)uv_os_getpid(), real);
  uv_loop_t *loop = weft_ctx_loop(ctx);
  uv_signal_init(loop, &be.sigterm);
  uv_signal_init(loop, &be.sigint);
  uv_signal_start(&be.sigterm, be_on_signal, SIGTERM);
  uv_signal_start(&be.sigint, be_on_signal, SIGINT);
  check(weft_runtime_run(rt), "weft_runtime_run");
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* ==== the front: HTTP on balancer workers, each a node with a service client ==== */

/* Set by main() before any worker starts; read-only afterwards. */
static const char *front_backends[8];
static uint64_t front_header_timeout_ms = 10000; /* a request's first byte (or the connect) to its end */
static uint64_t front_idle_timeout_ms = 60000;   /* between requests, or stalled on our writes */
static atomic_uint front_worker_ids; /* numbers the workers' nodes; orders nothing */

typedef struct {
  weft_ctx_t *ctx;
  weft_node_t *node;
  weft_service_client_t *cli;
  unsigned id;
} gw_worker_t;

typedef struct gw_req_s gw_req_t;

typedef struct {
  weft_conn_t conn;  /* first member: the balancer allocates the whole struct */
  gw_worker_t *gw;
  uv_timer_t *timer; /* idle deadline; its own memory: it closes after the conn's */
  http_parser parser;
  gw_req_t *pending; /* the request at the back ends, if any */
  bool close_after;  /* drain: Connection: close on the next answer */
  bool done;         /* the last answer is written or on its way: read nothing more */
  bool in_request;   /* a request has begun and is not complete */
  bool write_blocked; /* WRITE_BACKLOG of answers waits: no parsing, no reading */
  bool too_big;
  size_t len;        /* bytes in in[] not parsed yet (the parser paused) */
  size_t url_len, body_len;
  char url[MAX_URL];
  char body[MAX_BODY];
  char in[16384];
} gw_conn_t;

struct gw_req_s {
  gw_conn_t *c; /* NULL once the connection closed */
  bool keep_alive, head;
};

typedef struct {
  uv_write_t w;
  gw_conn_t *c;
  bool close_after;
  size_t len;
  char data[];
} gw_write_t;

static http_parser_settings gw_settings;

static void gw_respond(gw_conn_t *c, int status, const char *reason, const char *extra,
                       const char *body, bool close, bool head);

/* The deadline: a request that is not complete in time gets a 408 (a
 * slowloris client, one byte at a time, is cut off); an idle or stalled
 * connection is closed. */
static void gw_on_timeout(uv_timer_t *t) {
  gw_conn_t *c = t->data;
  if (c->in_request && c->pending == NULL && !c->done) {
    uv_read_stop(&c->conn.h.stream);
    gw_respond(c, 408, "Request Timeout", "", "request timeout\n", true, false);
    return;
  }
  weft_conn_close(&c->conn);
}

static void gw_deadline(gw_conn_t *c, uint64_t ms) {
  if (ms)
    uv_timer_start(c->timer, gw_on_timeout, ms, 0);
  else
    uv_timer_stop(c->timer);
}

static void gw_resume(gw_conn_t *c);

static void gw_written(uv_write_t *w, int status) {
  gw_write_t *wr = (gw_write_t *)w;
  gw_conn_t *c = wr->c;
  bool close_after = wr->close_after;
  free(wr);
  if (status < 0 || close_after) {
    weft_conn_close(&c->conn); /* the conn is alive: its close waits for us */
    return;
  }
  if (c->write_blocked &&
      uv_stream_get_write_queue_size(&c->conn.h.stream) <= WRITE_BACKLOG / 2) {
    c->write_blocked = false; /* the client reads again */
    gw_resume(c);
  }
}

/* Writes one response; closes the connection after it if close. */
static void gw_respond(gw_conn_t *c, int status, const char *reason, const char *extra,
                       const char *body, bool close, bool head) {
  size_t blen = strlen(body), cap = 512 + strlen(extra) + blen;
  gw_write_t *wr = malloc(sizeof(*wr) + cap);
  if (wr == NULL) {
    weft_conn_close(&c->conn);
    return;
  }
  int n = snprintf(wr->data, cap, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n%s%s\r\n%s", status, reason, blen, extra,
                   close ? "Connection: close\r\n" : "", head ? "" : body);
  wr->c = c;
  wr->close_after = close;
  c->done |= close;
  wr->len = (size_t)n;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
  weft_conn_request_done(&c->conn);
  if (uv_write(&wr->w, &c->conn.h.stream, &b, 1, gw_written) != 0) {
    free(wr);
    weft_conn_close(&c->conn);
  }
}

static void gw_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void gw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  gw_conn_t *c = (gw_conn_t *)h;
  *b = uv_buf_init(c->in + c->len, (unsigned)(sizeof(c->in) - c->len));
}

/* Parses what is buffered; a complete request pauses the parser (one request
 * at the back ends per connection: pipelined ones wait in in[]). A request
 * the parser refuses is answered (431, 501 or 400) and the connection
 * closed: the stream cannot be resynchronised. */
/* A request line that starts with a method-like token ("FROB "): 501 rather
 * than 400. in[] holds the request from its first byte. */
static bool gw_looks_like_method(const gw_conn_t *c) {
  size_t i = 0;
  while (i < c->len && i < 24 && ((c->in[i] >= 'A' && c->in[i] <= 'Z') || c->in[i] == '-'))
    i++;
  return i > 0 && i < c->len && c->in[i] == ' ';
}

static void gw_parse(gw_conn_t *c) {
  size_t used = http_parser_execute(&c->parser, &gw_settings, c->in, c->len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e == HPE_PAUSED) {
    memmove(c->in, c->in + used, c->len - used);
    c->len -= used;
    return;
  }
  bool method_like = e == HPE_INVALID_METHOD && gw_looks_like_method(c);
  c->len = 0;
  if (c->done) /* answered already (413): the callback stopped the parser */
    return;
  if (e != HPE_OK || c->parser.upgrade) {
    uv_read_stop(&c->conn.h.stream);
    if (e == HPE_HEADER_OVERFLOW)
      gw_respond(c, 431, "Request Header Fields Too Large", "", "headers too large\n", true,
                 false);
    else if (method_like)
      gw_respond(c, 501, "Not Implemented", "", "unknown method\n", true, false);
    else
      gw_respond(c, 400, "Bad Request", "", "bad request\n", true, false);
  }
}

static void gw_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  gw_conn_t *c = (gw_conn_t *)s;
  if (n < 0) {
    weft_conn_close(&c->conn);
    return;
  }
  c->len += (size_t)n;
  if (!c->done)
    gw_parse(c);
  if (c->pending != NULL || c->done || c->len == sizeof(c->in))
    uv_read_stop(s); /* until the answer is written, or for good */
}

static int gw_on_begin(http_parser *p) {
  gw_conn_t *c = p->data;
  c->url_len = c->body_len = 0;
  c->too_big = false;
  c->in_request = true;
  gw_deadline(c, front_header_timeout_ms); /* the whole request, from its first byte */
  return 0;
}

/* A body announced past the limit: 413 now, not after reading it all. */
static int gw_on_headers(http_parser *p) {
  gw_conn_t *c = p->data;
  if ((p->flags & F_CHUNKED) == 0 && p->content_length != ULLONG_MAX &&
      p->content_length > MAX_BODY) {
    uv_read_stop(&c->conn.h.stream);
    gw_respond(c, 413, "Content Too Large", "", "too large\n", true, false);
    return 1; /* stops the parser */
  }
  return 0;
}

static int gw_on_url(http_parser *p, const char *at, size_t n) {
  gw_conn_t *c = p->data;
  if (n > sizeof(c->url) - c->url_len)
    c->too_big = true;
  else
    memcpy(c->url + c->url_len, at, n), c->url_len += n;
  return 0;
}

static int gw_on_body(http_parser *p, const char *at, size_t n) {
  gw_conn_t *c = p->data;
  if (n > sizeof(c->body) - c->body_len) { /* chunked past the limit */
    uv_read_stop(&c->conn.h.stream);
    gw_respond(c, 413, "Content Too Large", "", "too large\n", true, false);
    return 1;
  }
  memcpy(c->body + c->body_len, at, n), c->body_len += n;
  return 0;
}

static void gw_on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                        const weft_service_info_t *info, void *data);

/* A whole request: to the back ends through the service. */
static int gw_on_complete(http_parser *p) {
  gw_conn_t *c = p->data;
  http_parser_pause(p, 1);
  c->in_request = false;
  gw_deadline(c, 0);
  bool keep = http_should_keep_alive(p) && !c->close_after;
  if (c->too_big) { /* the URL */
    gw_respond(c, 414, "URI Too Long", "", "uri too long\n", true, false);
    return 0;
  }
  gw_req_t *r = malloc(sizeof(*r));
  weft_msg_t *m = NULL;
  if (r == NULL || weft_msg_new(&m) != 0) {
    free(r);
    gw_respond(c, 503, "Service Unavailable", "", "out of memory\n", true, false);
    return 0;
  }
  *r = (gw_req_t){.c = c, .keep_alive = keep, .head = p->method == HTTP_HEAD};
  weft_msg_put_map(m, 3);
  weft_msg_put_str(m, "method", http_method_str(p->method));
  weft_msg_put_strn(m, "path", c->url, c->url_len);
  weft_msg_put_bin(m, "body", c->body, c->body_len);
  unsigned flags = p->method == HTTP_GET || p->method == HTTP_HEAD ? WEFT_SERVICE_IDEMPOTENT : 0;
  int err = weft_service_call(c->gw->cli, m, flags, gw_on_reply, r);
  if (err) { /* WEFT_EAGAIN: too many outstanding; the message is still ours */
    weft_msg_free(m);
    free(r);
    char extra[64];
    snprintf(extra, sizeof(extra), "X-Error: %s\r\n", weft_err_name(err));
    gw_respond(c, 503, "Service Unavailable", extra, "busy\n", true, false);
    return 0;
  }
  c->pending = r;
  return 0;
}

static void gw_on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                        const weft_service_info_t *info, void *data) {
  (void)cli;
  gw_req_t *r = data;
  gw_conn_t *c = r->c;
  if (c == NULL) { /* the client went */
    weft_msg_free(reply);
    free(r);
    return;
  }
  c->pending = NULL;
  bool close = !r->keep_alive || c->close_after;
  char extra[256], body[80] = "";
  uint64_t pid = 0;
  if (err == 0) {
    weft_msg_get_strcpy(reply, "sha256", body, sizeof(body) - 1, NULL);
    strcat(body, "\n");
    weft_msg_get_u64(reply, "pid", &pid);
    snprintf(extra, sizeof(extra), "X-Backend: %s\r\nX-Backend-Pid: %llu\r\nX-Attempts: %u\r\n",
             info->provider ? info->provider : "?", (unsigned long long)pid, info->attempts);
    gw_respond(c, 200, "OK", extra, body, close, r->head);
  } else {
    snprintf(extra, sizeof(extra), "X-Error: %s\r\nX-Attempts: %u\r\n", weft_err_name(err),
             info->attempts);
    snprintf(body, sizeof(body), "%s\n", weft_strerror(err));
    gw_respond(c, err == WEFT_ENOENTRY ? 503 : 502,
               err == WEFT_ENOENTRY ? "Service Unavailable" : "Bad Gateway", extra, body, close,
               r->head);
  }
  weft_msg_free(reply);
  free(r);
  if (c->done)
    return;
  if (uv_stream_get_write_queue_size(&c->conn.h.stream) > WRITE_BACKLOG) {
    c->write_blocked = true; /* gw_written resumes once the client reads */
    gw_deadline(c, front_idle_timeout_ms);
    return;
  }
  gw_resume(c);
}

/* The next request: a pipelined one waiting in in[], or more reading. */
static void gw_resume(gw_conn_t *c) {
  http_parser_pause(&c->parser, 0);
  gw_parse(c);
  if (c->pending == NULL && !c->done) {
    if (!c->in_request)
      gw_deadline(c, front_idle_timeout_ms);
    uv_read_start(&c->conn.h.stream, gw_alloc, gw_on_read);
  }
}

static void gw_on_connection(weft_conn_t *conn) {
  gw_conn_t *c = (gw_conn_t *)conn;
  c->gw = weft_balancer_worker_data(conn->worker);
  c->timer = malloc(sizeof(*c->timer));
  if (c->timer == NULL) {
    weft_conn_close(conn);
    return;
  }
  uv_timer_init(conn->h.stream.loop, c->timer);
  c->timer->data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (conn->h.stream.type == UV_TCP) { /* answers go out at once, not after the next ACK */
    uv_tcp_nodelay(&conn->h.tcp, 1);
    /* Answers are small: the kernel need not hold megabytes of them for a
     * client that does not read (it would autotune up to tcp_wmem's max). */
    int sndbuf = FRONT_SNDBUF;
    uv_send_buffer_size((uv_handle_t *)&conn->h.tcp, &sndbuf);
  }
  c->in_request = true; /* its first request is due within the header timeout */
  gw_deadline(c, front_header_timeout_ms);
  uv_read_start(&conn->h.stream, gw_alloc, gw_on_read);
}

static void gw_on_drain(weft_conn_t *conn) {
  gw_conn_t *c = (gw_conn_t *)conn;
  c->close_after = true;
  if (c->pending == NULL && c->len == 0)
    gw_deadline(c, DRAIN_IDLE_MS); /* a request may be on its way: a moment for it */
}

static void gw_on_close(weft_conn_t *conn) {
  gw_conn_t *c = (gw_conn_t *)conn;
  if (c->pending != NULL)
    c->pending->c = NULL; /* its answer will find no connection */
  if (c->timer)
    uv_close((uv_handle_t *)c->timer, (uv_close_cb)free);
}

static void gw_on_provider(weft_service_client_t *cli, const char *node, bool up, void *data) {
  (void)cli;
  gw_worker_t *gw = data;
  printf("front worker %u: provider %s %s\n", gw->id, node, up ? "up" : "down");
}

static void gw_node_closed(weft_node_t *node, void *data) {
  (void)node;
  gw_worker_t *gw = data;
  weft_ctx_t *ctx = gw->ctx;
  free(gw);
  weft_worker_exit(ctx, 0);
}

static void gw_cli_closed(weft_service_client_t *cli, void *data) {
  (void)cli;
  gw_worker_t *gw = data;
  weft_node_close(gw->node, gw_node_closed, gw);
}

/* The last connection closed after a drain: the client, the node, then exit. */
static void gw_on_drained(weft_balancer_worker_t *w) {
  gw_worker_t *gw = weft_balancer_worker_data(w);
  weft_service_client_close(gw->cli, gw_cli_closed, gw);
}

static int gw_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  gw_worker_t *gw = calloc(1, sizeof(*gw));
  if (gw == NULL)
    return 1;
  gw->ctx = ctx;
  gw->id = atomic_fetch_add(&front_worker_ids, 1);
  char name[64];
  snprintf(name, sizeof(name), "front-%d-%u", (int)uv_os_getpid(), gw->id);
  /* Redial a lost back end quickly: a restarted one is found within 250 ms. */
  weft_node_options_t no = {.name = name, .peers = front_backends, .redial_min_ms = 50,
                            .redial_max_ms = 250};
  weft_service_client_options_t co = {.service = SERVICE, .timeout_ms = 2000,
                                      .max_attempts = 3, .max_outstanding = 4096,
                                      .wait_ms = 3000, .rescan_ms = 200,
                                      .on_provider = gw_on_provider, .data = gw};
  weft_balancer_worker_options_t wo = {.conn_size = sizeof(gw_conn_t),
                                       .on_connection = gw_on_connection,
                                       .on_drain = gw_on_drain, .on_close = gw_on_close,
                                       .on_drained = gw_on_drained, .data = gw};
  int err = weft_node_start(ctx, &no, &gw->node);
  if (err)
    goto fail_free;
  if ((err = weft_service_client_new(gw->node, &co, &gw->cli)) != 0)
    goto fail_close_node;
  if ((err = weft_balancer_worker_start(ctx, &wo, NULL)) != 0)
    goto fail_close_client;
  return 0;
fail_close_client:
  weft_service_client_close(gw->cli, gw_cli_closed, gw); /* then the node, then exit */
  fprintf(stderr, "front worker %u: %s\n", gw->id, weft_strerror(err));
  return 0;
fail_close_node:
  weft_node_close(gw->node, gw_node_closed, gw);
  fprintf(stderr, "front worker %u: %s\n", gw->id, weft_strerror(err));
  return 0;
fail_free:
  fprintf(stderr, "front worker %u: %s\n", gw->id, weft_strerror(err));
  free(gw);
  return 1;
}

static uv_signal_t front_sigint, front_sigterm;

static void front_closed(weft_balancer_t *b) {
  (void)b;
  uv_close((uv_handle_t *)&front_sigint, NULL);
  uv_close((uv_handle_t *)&front_sigterm, NULL);
}

static void front_on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  weft_balancer_close(s->data, front_closed);
}

static int front_exit_status;

static void front_give_up(weft_balancer_t *b, int err, const weft_sup_exit_t *last) {
  fprintf(stderr, "front: %s: workers keep failing (last: %s)\n", weft_err_name(err),
          last->message);
  front_exit_status = 1;
  weft_balancer_close(b, front_closed);
}

static int run_front(const char *host, int port, unsigned workers) {
  http_parser_settings_init(&gw_settings);
  http_parser_set_max_header_size(MAX_HEADER);
  gw_settings.on_message_begin = gw_on_begin;
  gw_settings.on_url = gw_on_url;
  gw_settings.on_headers_complete = gw_on_headers;
  gw_settings.on_body = gw_on_body;
  gw_settings.on_message_complete = gw_on_complete;
  weft_runtime_t *rt;
  weft_runtime_options_t ro = {.spin_us = -1}; /* workers mostly wait on sockets */
  check(weft_runtime_new(&rt, &ro), "weft_runtime_new");
  weft_balancer_options_t o = {.host = host, .port = port, .workers = workers,
                               .worker = {.entry = gw_worker, .entry_name = "gw"},
                               .on_give_up = front_give_up,
                               .limits = {.max_restarts = 50, .period_ms = 10000,
                                          .backoff_min_ms = 20, .backoff_max_ms = 500}};
  signal(SIGPIPE, SIG_IGN);
  weft_balancer_t *b;
  int err = weft_balancer_new(weft_runtime_main(rt), &o, &b);
  if (err) {
    fprintf(stderr, "front: cannot listen on %s:%d: %s\n", host, port, weft_strerror(err));
    weft_runtime_free(rt);
    return 1;
  }
  printf("front listening on http://%s:%d workers %zu\n", host, weft_balancer_port(b),
         weft_balancer_workers(b));
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  uv_signal_init(loop, &front_sigint);
  uv_signal_init(loop, &front_sigterm);
  front_sigint.data = front_sigterm.data = b;
  uv_signal_start(&front_sigint, front_on_signal, SIGINT);
  uv_signal_start(&front_sigterm, front_on_signal, SIGTERM);
  check(weft_runtime_run(rt), "weft_runtime_run");
  int rc = weft_runtime_free(rt);
  return front_exit_status ? front_exit_status : rc == 0 ? 0 : 1;
}

/* ==== the demo: processes, a bounded client, a kill and a restart ================= */

/* The demo runs the processes as `[ip netns exec NETNS] dist_gateway ...`
 * with their stdout on a pipe: it learns the back ends' URLs, the front's
 * port and its providers from their lines, and passes them on. */

#define NCONN_MAX 64
#define RESTART_AFTER_MS 500

typedef struct {
  uv_process_t proc;
  uv_pipe_t out;
  const char *role; /* "b1", "b2", "front" */
  char host[64], ns[64], url[128];
  char line[512];
  size_t len;
  int pid;
  int handles;   /* the process and its pipe, until their close callbacks */
  bool running;
  bool killed;   /* SIGKILLed on purpose: its exit is no failure */
  bool stopping; /* SIGTERM sent: it must exit 0 */
  int64_t status;
  int sig;
} proc_t;

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  http_parser p;
  bool busy;      /* a request sent, its response not complete */
  bool complete;  /* the response just completed */
  bool in_value;
  char field[32], value[32];
  size_t flen, vlen;
  char backend[32];
  uint64_t pid;
  unsigned attempts;
} cl_t;

enum { PH_WAIT, PH_BEFORE, PH_DOWN, PH_RECOVER, PH_AFTER, PH_STOP };
static const char *const phase_names[] = {"wait", "before", "down", "recover", "after", "stop"};

static struct {
  uv_loop_t *loop;
  char self[4096];
  proc_t be[2], front;
  int front_port;
  unsigned workers, providers_up;
  const char *front_host;
  cl_t cl[NCONN_MAX];
  unsigned nconn, open;
  uint64_t requests, per_phase; /* per_phase: answers before the kill and after recovery */
  uint64_t seq, answered, failed, retries, non_200;
  int phase;
  uint64_t phase_answered;
  uint64_t share[PH_STOP + 1][2];
  uint64_t t0, t_kill, t_restart, t_recovered;
  int new_pid;
  uv_timer_t watchdog, restart;
  bool restart_due;
  bool exited_badly;
  unsigned deadline_s;
} D;

static http_parser_settings cl_settings;

static int demo_usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s --backend URL NAME [--work N]\n"
          "       %s --front PORT [--host H] [--workers N] [--header-timeout-ms T]\n"
          "                  [--idle-timeout-ms T] --backends URL...\n"
          "       %s --demo [--requests N] [--connections C] [--front-host ADDR]\n"
          "                 [--backend-host ADDR[@NETNS]] [--backend-host ...] [--deadline-s S]\n",
          argv0, argv0, argv0);
  return 2;
}

static void demo_maybe_end(void);
static void cl_start(cl_t *c);
static void proc_start(proc_t *p);

/* ---- the processes ---------------------------------------------------------------- */

static void demo_start_load(void) {
  D.phase = PH_BEFORE;
  D.t0 = uv_hrtime();
  printf("demo: front ready (%u providers over %u workers): %u connections, load begins\n",
         D.providers_up, D.workers, D.nconn);
  for (unsigned i = 0; i < D.nconn; i++)
    cl_start(&D.cl[i]);
}

static void proc_line(proc_t *p, const char *line) {
  printf("  [%s] %s\n", p->role, line);
  char url[128];
  int pid, port;
  unsigned workers;
  if (sscanf(line, "backend %*s pid %d listening on %127s", &pid, url) == 2) {
    snprintf(p->url, sizeof(p->url), "%s", url);
    if (D.front.pid == 0 && D.be[0].url[0] && D.be[1].url[0] && D.phase == PH_WAIT)
      proc_start(&D.front);
  } else if (sscanf(line, "front listening on http://%*[^:]:%d workers %u", &port, &workers) ==
             2) {
    D.front_port = port;
    D.workers = workers;
  } else if (strstr(line, ": provider ") != NULL && strstr(line, " up") != NULL) {
    D.providers_up++;
  }
  if (D.phase == PH_WAIT && D.front_port > 0 && D.workers > 0 &&
      D.providers_up >= 2 * D.workers)
    demo_start_load();
}

static void proc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  proc_t *p = h->data;
  *b = uv_buf_init(p->line + p->len, (unsigned)(sizeof(p->line) - 1 - p->len));
}

static void demo_abort(const char *why);
static void maybe_restart(void);

static void proc_handle_closed(uv_handle_t *h) {
  proc_t *p = h->data;
  p->handles--;
  maybe_restart();
}

static void proc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  proc_t *p = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, proc_handle_closed);
    return;
  }
  p->len += (size_t)n;
  char *nl;
  while ((nl = memchr(p->line, '\n', p->len)) != NULL) {
    *nl = '\0';
    proc_line(p, p->line);
    size_t used = (size_t)(nl + 1 - p->line);
    memmove(p->line, nl + 1, p->len - used);
    p->len -= used;
  }
  if (p->len == sizeof(p->line) - 1)
    p->len = 0; /* an endless line: dropped */
}

static void proc_exited(uv_process_t *h, int64_t status, int sig) {
  proc_t *p = h->data;
  p->running = false;
  p->status = status;
  p->sig = sig;
  printf("  [%s] pid %d exited: status %d, signal %d\n", p->role, p->pid, (int)status, sig);
  uv_close((uv_handle_t *)h, proc_handle_closed);
  if (!p->killed && (status != 0 || sig != 0 || !p->stopping)) {
    D.exited_badly = true;
    if (D.phase != PH_STOP || !p->stopping)
      demo_abort("a process exited by itself");
    fprintf(stderr, "demo: %s exited badly\n", p->role);
  }
  demo_maybe_end();
}

static void proc_start(proc_t *p) {
  char *args[16];
  int n = 0;
  if (p->ns[0]) {
    args[n++] = "ip", args[n++] = "netns", args[n++] = "exec", args[n++] = p->ns;
  }
  char b1[128], b2[128], listen[160];
  args[n++] = D.self;
  if (p == &D.front) {
    args[n++] = "--front", args[n++] = "0", args[n++] = "--host", args[n++] = (char *)D.front_host;
    snprintf(b1, sizeof(b1), "%s", D.be[0].url);
    snprintf(b2, sizeof(b2), "%s", D.be[1].url);
    args[n++] = "--backends", args[n++] = b1, args[n++] = b2;
  } else {
    if (p->url[0]) /* a restart: the same URL, so that the front redials it */
      snprintf(listen, sizeof(listen), "%s", p->url);
    else
      snprintf(listen, sizeof(listen), "tcp://%s:0", p->host);
    args[n++] = "--backend", args[n++] = listen, args[n++] = (char *)p->role;
  }
  args[n++] = "--die-with-parent";
  args[n] = NULL;
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                    .data.stream = (uv_stream_t *)&p->out},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = args[0], .args = args, .exit_cb = proc_exited,
                             .stdio = stdio, .stdio_count = 3};
  uv_pipe_init(D.loop, &p->out, 0);
  p->out.data = p->proc.data = p;
  p->len = 0;
  p->killed = p->stopping = false;
  int err = uv_spawn(D.loop, &p->proc, &po);
  if (err) {
    fprintf(stderr, "demo: cannot start %s: %s\n", p->role, uv_strerror(err));
    exit(1);
  }
  p->pid = p->proc.pid;
  p->running = true;
  p->handles = 2;
  uv_read_start((uv_stream_t *)&p->out, proc_alloc, proc_read);
}

/* b1 starts again once the restart is due and the old process's handles
 * are closed (their memory is reused). */
static void maybe_restart(void) {
  if (D.phase != PH_DOWN || !D.restart_due || D.be[0].handles > 0)
    return;
  D.t_restart = uv_hrtime();
  D.phase = PH_RECOVER;
  D.phase_answered = 0;
  proc_start(&D.be[0]);
  printf("demo: restarted b1 as pid %d on %s, %.0f ms after the kill\n", D.be[0].pid,
         D.be[0].url, (double)(D.t_restart - D.t_kill) / 1e6);
}

static void demo_restart(uv_timer_t *t) {
  (void)t;
  D.restart_due = true;
  maybe_restart();
}


static void demo_phase(int phase) {
  D.phase = phase;
  D.phase_answered = 0;
  switch (phase) {
  case PH_DOWN:
    D.t_kill = uv_hrtime();
    D.be[0].killed = true;
    uv_process_kill(&D.be[0].proc, SIGKILL);
    printf("demo: SIGKILL b1 (pid %d) after %llu answers\n", D.be[0].pid,
           (unsigned long long)D.answered);
    uv_timer_start(&D.restart, demo_restart, RESTART_AFTER_MS, 0);
    break;
  case PH_STOP: /* each connection closes after its current answer (cl_send) */
  default:
    break;
  }
}

/* ---- the client: keep-alive connections of GETs ------------------------------------ */

static void cl_closed(uv_handle_t *h) {
  cl_t *c = (cl_t *)h;
  D.open--;
  if (D.phase != PH_STOP)
    cl_start(c); /* a connection lost under load: a new one */
  else
    demo_maybe_end();
}

static void cl_send(cl_t *c) {
  if (D.phase == PH_STOP) {
    uv_close((uv_handle_t *)&c->tcp, cl_closed);
    return;
  }
  char req[128];
  int n = snprintf(req, sizeof(req), "GET /sha/%llu HTTP/1.1\r\nHost: gateway\r\n\r\n",
                   (unsigned long long)D.seq++);
  uv_buf_t b = uv_buf_init(req, (unsigned)n);
  c->busy = true;
  c->backend[0] = '\0';
  c->pid = 0;
  c->attempts = 0;
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != n) {
    D.failed++;
    c->busy = false;
    uv_close((uv_handle_t *)&c->tcp, cl_closed);
  }
}

/* One answer: counted, and maybe the next phase. */
static void cl_answered(cl_t *c) {
  D.answered++;
  D.phase_answered++;
  int b = strcmp(c->backend, "b1") == 0 ? 0 : strcmp(c->backend, "b2") == 0 ? 1 : -1;
  if (b >= 0)
    D.share[D.phase][b]++;
  D.retries += c->attempts > 1 ? c->attempts - 1 : 0;
  switch (D.phase) {
  case PH_BEFORE:
    if (D.phase_answered >= D.per_phase)
      demo_phase(PH_DOWN);
    break;
  case PH_RECOVER:
    if (b == 0 && c->pid == (uint64_t)D.be[0].pid) {
      D.t_recovered = uv_hrtime();
      printf("demo: b1 (pid %d) answered again %.0f ms after its restart\n", D.be[0].pid,
             (double)(D.t_recovered - D.t_restart) / 1e6);
      demo_phase(PH_AFTER);
    }
    break;
  case PH_AFTER:
    if (D.phase_answered >= D.per_phase)
      demo_phase(PH_STOP);
    break;
  default:
    break;
  }
}

static int cl_on_field(http_parser *p, const char *at, size_t n) {
  cl_t *c = p->data;
  if (c->in_value)
    c->flen = 0, c->in_value = false;
  if (n < sizeof(c->field) - c->flen)
    memcpy(c->field + c->flen, at, n), c->flen += n;
  c->field[c->flen] = '\0';
  c->vlen = 0;
  return 0;
}

static int cl_on_value(http_parser *p, const char *at, size_t n) {
  cl_t *c = p->data;
  c->in_value = true;
  if (n < sizeof(c->value) - c->vlen)
    memcpy(c->value + c->vlen, at, n), c->vlen += n;
  c->value[c->vlen] = '\0';
  if (strcasecmp(c->field, "X-Backend") == 0)
    snprintf(c->backend, sizeof(c->backend), "%s", c->value);
  else if (strcasecmp(c->field, "X-Backend-Pid") == 0)
    c->pid = strtoull(c->value, NULL, 10);
  else if (strcasecmp(c->field, "X-Attempts") == 0)
    c->attempts = (unsigned)strtoul(c->value, NULL, 10);
  return 0;
}

static int cl_on_begin(http_parser *p) {
  cl_t *c = p->data;
  c->flen = c->vlen = 0;
  c->in_value = false;
  return 0;
}

static int cl_on_complete(http_parser *p) {
  cl_t *c = p->data;
  c->complete = true;
  http_parser_pause(p, 1);
  return 0;
}

static void cl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  (void)hint;
  static char buf[4096]; /* parsed at once: one buffer serves every connection */
  *b = uv_buf_init(buf, sizeof(buf));
}

static void cl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  cl_t *c = (cl_t *)s;
  if (n == 0)
    return;
  if (n < 0) {
    if (c->busy) {
      D.failed++;
      fprintf(stderr, "demo: a connection closed with a request unanswered (%s)\n",
              uv_err_name((int)n));
    }
    c->busy = false;
    uv_close((uv_handle_t *)s, cl_closed);
    return;
  }
  size_t used = http_parser_execute(&c->p, &cl_settings, b->base, (size_t)n);
  if (c->complete) {
    c->complete = false;
    c->busy = false;
    http_parser_pause(&c->p, 0);
    if (c->p.status_code != 200) {
      D.failed++;
      D.non_200++;
      fprintf(stderr, "demo: HTTP %u\n", c->p.status_code);
    } else {
      cl_answered(c);
    }
    if (used != (size_t)n || !http_should_keep_alive(&c->p)) {
      uv_close((uv_handle_t *)s, cl_closed);
      return;
    }
    cl_send(c);
  } else if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK) {
    D.failed += c->busy;
    c->busy = false;
    fprintf(stderr, "demo: bad response: %s\n", http_errno_name(HTTP_PARSER_ERRNO(&c->p)));
    uv_close((uv_handle_t *)s, cl_closed);
  }
}

static void cl_connected(uv_connect_t *cr, int status) {
  cl_t *c = cr->data;
  if (status < 0) {
    D.failed++; /* the request it would have sent */
    fprintf(stderr, "demo: connect: %s\n", uv_err_name(status));
    uv_close((uv_handle_t *)&c->tcp, cl_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, cl_alloc, cl_read);
  cl_send(c);
}

static void cl_start(cl_t *c) {
  struct sockaddr_in a;
  uv_ip4_addr(D.front_host, D.front_port, &a);
  D.open++;
  uv_tcp_init(D.loop, &c->tcp);
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->p, HTTP_RESPONSE);
  c->p.data = c;
  c->cr.data = c;
  c->busy = c->complete = false;
  if (uv_tcp_connect(&c->cr, &c->tcp, (const struct sockaddr *)&a, cl_connected) != 0) {
    fprintf(stderr, "demo: cannot connect to %s:%d\n", D.front_host, D.front_port);
    exit(1);
  }
}

/* ---- the end: stop the front, then the back ends, then print ---------------------- */

static void demo_maybe_end(void) {
  if (D.phase != PH_STOP || D.open > 0)
    return;
  if (D.front.running) {
    if (!D.front.stopping) {
      D.front.stopping = true;
      uv_process_kill(&D.front.proc, SIGTERM);
    }
    return;
  }
  for (int i = 0; i < 2; i++)
    if (D.be[i].running && !D.be[i].stopping) {
      D.be[i].stopping = true;
      uv_process_kill(&D.be[i].proc, SIGTERM);
    }
  if (!D.be[0].running && !D.be[1].running) {
    uv_close((uv_handle_t *)&D.watchdog, NULL);
    uv_close((uv_handle_t *)&D.restart, NULL);
  }
}

static void demo_abort(const char *why) {
  fprintf(stderr, "demo: %s (phase %s, %llu answered): giving up\n", why,
          phase_names[D.phase], (unsigned long long)D.answered);
  proc_t *ps[] = {&D.front, &D.be[0], &D.be[1]};
  for (int i = 0; i < 3; i++)
    if (ps[i]->running)
      uv_process_kill(&ps[i]->proc, SIGKILL);
  exit(1);
}

static void demo_timeout(uv_timer_t *t) {
  (void)t;
  char why[64];
  snprintf(why, sizeof(why), "not done after %u s", D.deadline_s);
  demo_abort(why);
}

static void print_share(const char *what, const uint64_t s[2]) {
  uint64_t t = s[0] + s[1];
  printf("  %-22s b1 %6llu (%5.1f%%)   b2 %6llu (%5.1f%%)\n", what, (unsigned long long)s[0],
         t ? 100.0 * (double)s[0] / (double)t : 0.0, (unsigned long long)s[1],
         t ? 100.0 * (double)s[1] / (double)t : 0.0);
}

static int run_demo(int argc, char **argv) {
  D.front_host = "127.0.0.1";
  D.requests = 6000;
  D.nconn = 8;
  D.deadline_s = 28;
  int nb = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      continue;
    if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
      D.requests = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--connections") == 0 && i + 1 < argc)
      D.nconn = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--deadline-s") == 0 && i + 1 < argc)
      D.deadline_s = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--front-host") == 0 && i + 1 < argc)
      D.front_host = argv[++i];
    else if (strcmp(argv[i], "--backend-host") == 0 && i + 1 < argc && nb < 2) {
      const char *v = argv[++i], *at = strchr(v, '@');
      snprintf(D.be[nb].host, sizeof(D.be[nb].host), "%.*s",
               (int)(at ? (size_t)(at - v) : strlen(v)), v);
      if (at)
        snprintf(D.be[nb].ns, sizeof(D.be[nb].ns), "%s", at + 1);
      nb++;
    } else
      return demo_usage(argv[0]);
  }
  if (D.requests < 30 || D.nconn == 0 || D.nconn > NCONN_MAX || D.deadline_s == 0 ||
      (nb != 0 && nb != 2))
    return demo_usage(argv[0]);
  D.per_phase = D.requests / 3;
  http_parser_settings_init(&cl_settings);
  cl_settings.on_message_begin = cl_on_begin;
  cl_settings.on_header_field = cl_on_field;
  cl_settings.on_header_value = cl_on_value;
  cl_settings.on_message_complete = cl_on_complete;
  size_t len = sizeof(D.self);
  check(uv_exepath(D.self, &len), "uv_exepath");
  signal(SIGPIPE, SIG_IGN);
  D.loop = uv_default_loop();
  D.be[0].role = "b1";
  D.be[1].role = "b2";
  D.front.role = "front";
  for (int i = 0; i < 2; i++)
    if (nb == 0)
      snprintf(D.be[i].host, sizeof(D.be[i].host), "127.0.0.1");
  uv_timer_init(D.loop, &D.watchdog);
  uv_timer_init(D.loop, &D.restart);
  uv_timer_start(&D.watchdog, demo_timeout, (uint64_t)D.deadline_s * 1000, 0);
  uint64_t start = uv_hrtime();
  proc_start(&D.be[0]);
  proc_start(&D.be[1]);
  uv_run(D.loop, UV_RUN_DEFAULT);
  double secs = (double)(uv_hrtime() - D.t0) / 1e9;
  printf("dist_gateway demo: %llu requests in %.1f s (%.0f/s), %llu failed, %llu retries\n",
         (unsigned long long)(D.answered + D.failed), secs,
         (double)D.answered / (secs > 0 ? secs : 1), (unsigned long long)D.failed,
         (unsigned long long)D.retries);
  print_share("share before the kill:", D.share[PH_BEFORE]);
  print_share("while b1 was down:", D.share[PH_DOWN]);
  print_share("share after restart:", D.share[PH_AFTER]);
  printf("  b1 killed after %.0f ms of load; restarted %.0f ms later; took traffic again "
         "%.0f ms after its restart\n",
         (double)(D.t_kill - D.t0) / 1e6, (double)(D.t_restart - D.t_kill) / 1e6,
         D.t_recovered ? (double)(D.t_recovered - D.t_restart) / 1e6 : -1.0);
  printf("  whole demo: %.1f s\n", (double)(uv_hrtime() - start) / 1e9);
  uv_loop_close(D.loop);
  bool ok = D.failed == 0 && D.t_recovered != 0 && D.share[PH_AFTER][0] > 0 && !D.exited_badly;
  if (!ok)
    fprintf(stderr, "dist_gateway demo: FAILED (%s)\n",
            D.failed ? "requests failed"
            : D.t_recovered == 0 ? "b1 took no traffic after its restart"
            : D.exited_badly ? "a process exited badly" : "b1 had no share after restart");
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 4 && strcmp(argv[1], "--backend") == 0) {
    for (int i = 4; i < argc; i++) {
      if (strcmp(argv[i], "--work") == 0 && i + 1 < argc)
        be.work = (unsigned)strtoul(argv[++i], NULL, 10);
      else if (strcmp(argv[i], "--die-with-parent") == 0)
        die_with_parent();
      else
        return demo_usage(argv[0]);
    }
    return run_backend(argv[2], argv[3]);
  }
  if (argc >= 3 && strcmp(argv[1], "--front") == 0) {
    const char *host = "127.0.0.1";
    unsigned long port = strtoul(argv[2], NULL, 10), workers = 2;
    size_t nb = 0;
    for (int i = 3; i < argc; i++) {
      if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
        host = argv[++i];
      else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
        workers = strtoul(argv[++i], NULL, 10);
      else if (strcmp(argv[i], "--header-timeout-ms") == 0 && i + 1 < argc)
        front_header_timeout_ms = strtoull(argv[++i], NULL, 10);
      else if (strcmp(argv[i], "--idle-timeout-ms") == 0 && i + 1 < argc)
        front_idle_timeout_ms = strtoull(argv[++i], NULL, 10);
      else if (strcmp(argv[i], "--die-with-parent") == 0)
        die_with_parent();
      else if (strcmp(argv[i], "--backends") == 0)
        while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 &&
               nb + 1 < sizeof(front_backends) / sizeof(front_backends[0]))
          front_backends[nb++] = argv[++i];
      else
        return demo_usage(argv[0]);
    }
    if (nb == 0 || port > 65535 || workers == 0 || workers > 256 ||
        front_header_timeout_ms == 0 || front_idle_timeout_ms == 0)
      return demo_usage(argv[0]);
    return run_front(host, (int)port, (unsigned)workers);
  }
  return run_demo(argc, argv);
}
