/* http_backend.c: weft-http-backend, the upstream that nginx proxies to in
 * tools/bench/dist.sh. It does what a dist_gateway back end does for each
 * request (examples/dist_gateway.c: SHA-256 over path and body, then over
 * the digest, N rounds) but answers plain HTTP/1.1, so that nginx's front
 * and weft's front forward to equal workers.
 *
 *   weft-http-backend PORT NAME [--host H] [--work N]
 *
 * One thread, one libuv loop, keep-alive, pipelined requests answered in
 * order (each is worked on and written as soon as it is parsed: the work is
 * synchronous, as in dist_gateway's handler). PORT 0 takes a free port.
 * Prints "http_backend NAME pid PID listening on H:PORT" once listening.
 * The response: 200, body "<64 hex digits>\n", X-Backend: NAME,
 * X-Backend-Pid: PID. A request larger than 16 KiB of path or body, or one
 * that does not parse, gets a 400 and the connection closes.
 * SIGTERM/SIGINT: stops listening, closes every connection, exits 0. Plain
 * libuv (no weft): this is the program an nginx user would write. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <http_parser.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#if MBEDTLS_VERSION_MAJOR >= 3
#define sha256_starts(c) mbedtls_sha256_starts(c, 0)
#define sha256_update mbedtls_sha256_update
#define sha256_finish mbedtls_sha256_finish
#else
#define sha256_starts(c) mbedtls_sha256_starts_ret(c, 0)
#define sha256_update mbedtls_sha256_update_ret
#define sha256_finish mbedtls_sha256_finish_ret
#endif

#define MAX_PART 16384

static struct {
  uv_loop_t *loop;
  uv_tcp_t server;
  uv_signal_t sigterm, sigint;
  const char *name;
  unsigned work;
  int pid;
  http_parser_settings settings;
} hb = {.work = 1000};

typedef struct conn_s {
  uv_tcp_t tcp;
  http_parser parser;
  struct conn_s *next, *prev; /* every open connection, for the shutdown */
  bool bad;
  size_t url_len, body_len;
  char url[MAX_PART];
  char body[MAX_PART];
  char in[16384];
} conn_t;

static conn_t *conns;

typedef struct {
  uv_write_t w;
  size_t len;
  char data[512];
} wr_t;

/* The work of examples/dist_gateway.c's digest(), byte for byte. */
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

static void on_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  if (c->prev)
    c->prev->next = c->next;
  else
    conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *w, int status) {
  if (status < 0)
    conn_close((conn_t *)w->handle);
  free(w);
}

static void respond(conn_t *c, int status, const char *reason, const char *body, bool close) {
  wr_t *wr = malloc(sizeof(*wr));
  if (wr == NULL) {
    conn_close(c);
    return;
  }
  int n = snprintf(wr->data, sizeof(wr->data),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "X-Backend: %s\r\nX-Backend-Pid: %d\r\n%s\r\n%s",
                   status, reason, strlen(body), hb.name, hb.pid,
                   close ? "Connection: close\r\n" : "", body);
  wr->len = n > 0 && (size_t)n < sizeof(wr->data) ? (size_t)n : 0;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
  if (wr->len == 0 || uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(wr);
    conn_close(c);
    return;
  }
  if (close)
    conn_close(c); /* libuv finishes the queued write before it closes */
}

static int on_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url_len = c->body_len = 0;
  c->bad = false;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (n > sizeof(c->url) - c->url_len)
    c->bad = true;
  else
    memcpy(c->url + c->url_len, at, n), c->url_len += n;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (n > sizeof(c->body) - c->body_len)
    c->bad = true;
  else
    memcpy(c->body + c->body_len, at, n), c->body_len += n;
  return 0;
}

static int on_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->bad) {
    respond(c, 400, "Bad Request", "too large\n", true);
    return 1; /* stops the parser: nothing more on this connection */
  }
  char body[66];
  digest(c->url, c->url_len, c->body, c->body_len, hb.work, body);
  body[64] = '\n';
  body[65] = '\0';
  respond(c, 200, "OK", body, !http_should_keep_alive(p));
  return uv_is_closing((uv_handle_t *)&c->tcp) ? 1 : 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn_t *c = (conn_t *)h;
  *b = uv_buf_init(c->in, sizeof(c->in));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = (conn_t *)s;
  if (n < 0) {
    conn_close(c);
    return;
  }
  size_t used = http_parser_execute(&c->parser, &hb.settings, b->base, (size_t)n);
  if (uv_is_closing((uv_handle_t *)s))
    return;
  if (used != (size_t)n || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || c->parser.upgrade)
    respond(c, 400, "Bad Request", "bad request\n", true);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  uv_tcp_init(hb.loop, &c->tcp);
  c->next = conns;
  if (conns)
    conns->prev = c;
  conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s, (void)signum;
  uv_close((uv_handle_t *)&hb.sigterm, NULL);
  uv_close((uv_handle_t *)&hb.sigint, NULL);
  uv_close((uv_handle_t *)&hb.server, NULL);
  for (conn_t *c = conns; c != NULL; c = c->next)
    conn_close(c);
}

static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s PORT NAME [--host H] [--work N]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3)
    return usage(argv[0]);
  const char *host = "127.0.0.1";
  char *end;
  unsigned long port = strtoul(argv[1], &end, 10);
  if (*end != '\0' || port > 65535)
    return usage(argv[0]);
  hb.name = argv[2];
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
      host = argv[++i];
    else if (strcmp(argv[i], "--work") == 0 && i + 1 < argc)
      hb.work = (unsigned)strtoul(argv[++i], NULL, 10);
    else
      return usage(argv[0]);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  hb.pid = (int)uv_os_getpid();
  hb.loop = uv_default_loop();
  http_parser_settings_init(&hb.settings);
  hb.settings.on_message_begin = on_begin;
  hb.settings.on_url = on_url;
  hb.settings.on_body = on_body;
  hb.settings.on_message_complete = on_complete;
  struct sockaddr_in a;
  int err = uv_ip4_addr(host, (int)port, &a);
  uv_tcp_init(hb.loop, &hb.server);
  if (!err)
    err = uv_tcp_bind(&hb.server, (const struct sockaddr *)&a, 0);
  if (!err)
    err = uv_listen((uv_stream_t *)&hb.server, 1024, on_connection);
  if (err) {
    fprintf(stderr, "http_backend %s: cannot listen on %s:%lu: %s\n", hb.name, host, port,
            uv_strerror(err));
    return 1;
  }
  struct sockaddr_storage got;
  int len = sizeof(got);
  uv_tcp_getsockname(&hb.server, (struct sockaddr *)&got, &len);
  printf("http_backend %s pid %d listening on %s:%d\n", hb.name, hb.pid, host,
         ntohs(((struct sockaddr_in *)&got)->sin_port));
  uv_signal_init(hb.loop, &hb.sigterm);
  uv_signal_init(hb.loop, &hb.sigint);
  uv_signal_start(&hb.sigterm, on_signal, SIGTERM);
  uv_signal_start(&hb.sigint, on_signal, SIGINT);
  uv_run(hb.loop, UV_RUN_DEFAULT);
  return uv_loop_close(hb.loop) == 0 ? 0 : 1;
}
