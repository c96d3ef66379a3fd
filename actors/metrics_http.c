/* metrics_http.c: the metrics endpoint: a small HTTP/1.x server on a
 * context's loop, parsed with http_parser (Debian's libhttp-parser-dev).
 * Public API only.
 *
 * Each connection reads one request under a deadline and a size bound, is
 * answered and closed. Nothing it does blocks: a snapshot is a copy under the
 * runtime's metrics lock. Hostile clients cost a bounded amount: at most
 * max_conns connections of at most max_header_bytes each, each for at most
 * header_timeout_ms.
 *
 * Lifetime: the endpoint counts its open handles (listener + per connection
 * the socket and the timer); close closes them all and frees the endpoint in
 * the last close callback. Thread: the context's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "weft.h"
#include "weft/metrics_http.h"

#define URL_MAX 256

typedef struct conn_s conn_t;

struct weft_metrics_http_s {
  uv_tcp_t listener;
  weft_ctx_t *ctx;
  weft_metrics_http_options_t opts;
  int port;
  uint32_t nconns;
  uint32_t handles;            /* open handles, listener included */
  bool closing;
  conn_t *conns;               /* doubly linked */
  weft_metrics_http_close_cb close_cb;
  void *close_data;
};

struct conn_s {
  uv_tcp_t sock;
  uv_timer_t timer;
  weft_metrics_http_t *h;
  conn_t *prev, *next;
  http_parser parser;
  uint32_t header_bytes;
  size_t url_len;
  char url[URL_MAX + 1];
  bool url_long;
  bool served;                 /* the request is complete: what still comes is discarded */
  bool answered;               /* a response is written or being written */
  bool prom, head_only;        /* what it asked for */
  bool want_ports;             /* ?ports=1: the per-port tables too */
  size_t ports_top;            /* ?top=N: the fullest N ports only (0: all) */
  int ports_tries;             /* tables asked for, not there yet: retries so far */
  bool closing;
  int handles;                 /* 2 until both are closed */
  uv_write_t wr;
  uv_shutdown_t shut;
  char *head;
  char *body;                  /* weft_free'd */
  char readbuf[4096];
};

static http_parser_settings settings;
static void on_deadline(uv_timer_t *t);

/* ---- lifetime ----------------------------------------------------------- */

static void endpoint_handle_closed(weft_metrics_http_t *h) {
  if (--h->handles > 0)
    return;
  weft_metrics_http_close_cb cb = h->close_cb;
  void *data = h->close_data;
  weft_free(h);
  if (cb)
    cb(data);
}

static void on_conn_handle_closed(uv_handle_t *hd) {
  conn_t *c = hd->data;
  if (--c->handles > 0)
    return;
  weft_metrics_http_t *h = c->h;
  weft_free(c->head);
  weft_free(c->body);
  weft_free(c);
  endpoint_handle_closed(h);
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  weft_metrics_http_t *h = c->h;
  if (c->prev)
    c->prev->next = c->next;
  else
    h->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  h->nconns--;
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->sock, on_conn_handle_closed);
}

/* ---- responses ------------------------------------------------------------ */

/* Lingering close: after the answer, end our side and read (discarding)
 * until the client closes or the deadline passes. Closing with the client's
 * bytes unread would reset the connection, and a reset may destroy the
 * answer before the client reads it (a 431 to a client still sending). */
static void on_shutdown(uv_shutdown_t *sh, int status) {
  if (status < 0)
    conn_close(sh->data);
}

static void on_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (status < 0 || c->closing) {
    conn_close(c);
    return;
  }
  c->shut.data = c;
  (void)uv_timer_start(&c->timer, on_deadline, c->h->opts.header_timeout_ms, 0);
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->sock, on_shutdown) != 0)
    conn_close(c);
}

static const char *reason(int code) {
  switch (code) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 414: return "URI Too Long";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Service Unavailable";
  }
}

/* Write the response (takes body, a weft_malloc'd string, or NULL) and close
 * once written. */
static void respond(conn_t *c, int code, const char *type, char *body, size_t len, bool head_only) {
  if (c->answered || c->closing) {
    weft_free(body);
    return;
  }
  c->answered = true; /* from now on what arrives is discarded */
  if (body == NULL) {
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "%d %s\n", code, reason(code));
    body = weft_malloc((size_t)n + 1);
    if (body != NULL) {
      memcpy(body, msg, (size_t)n + 1);
      len = (size_t)n;
    }
    type = "text/plain; charset=utf-8";
  }
  c->body = body;
  c->head = weft_malloc(256);
  if (c->head == NULL || c->body == NULL) {
    conn_close(c);
    return;
  }
  int n = snprintf(c->head, 256,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                   "Connection: close\r\n\r\n",
                   code, reason(code), type, len, code == 405 ? "Allow: GET, HEAD\r\n" : "");
  uv_buf_t bufs[2] = {uv_buf_init(c->head, (unsigned)n), uv_buf_init(c->body, (unsigned)len)};
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->sock, bufs, head_only ? 1 : 2, on_written) != 0)
    conn_close(c);
}

/* Port tables are kept only on demand: the first request for them turns
 * them on, and they appear at the contexts' next collection (100 ms). */
#define PORTS_RETRY_MS 150
#define PORTS_TRIES 6

/* The ports, in the answer's format, after text (the snapshot's): JSON
 * gets a "ports" member, Prometheus the weft_port_* families. */
static int add_ports(conn_t *c, char **text, size_t *len, const weft_metrics_port_t *ports,
                     size_t n) {
  char *more;
  size_t mlen;
  int err = c->prom ? weft_metrics_ports_prometheus(ports, n, &more, &mlen)
                    : weft_metrics_ports_json(ports, n, &more, &mlen);
  if (err)
    return err;
  size_t keep = *len;
  if (!c->prom) /* the object's closing "}\n" goes after the member */
    while (keep > 0 && (*text)[keep - 1] != '}')
      keep--;
  if (!c->prom && keep > 0)
    keep--;
  char *all = weft_malloc(keep + mlen + 16);
  if (all == NULL) {
    weft_free(more);
    return WEFT_ENOMEM;
  }
  memcpy(all, *text, keep);
  size_t at = keep;
  if (!c->prom) {
    memcpy(all + at, ",\"ports\":", 9);
    at += 9;
  }
  memcpy(all + at, more, mlen);
  at += mlen;
  if (!c->prom) {
    memcpy(all + at, "}\n", 2);
    at += 2;
  }
  all[at] = '\0';
  weft_free(more);
  weft_free(*text);
  *text = all;
  *len = at;
  return 0;
}

static void answer(conn_t *c);

static void on_ports_retry(uv_timer_t *t) { answer(t->data); }

/* Answer from a fresh snapshot (and the port tables if asked). */
static void answer(conn_t *c) {
  if (c->answered || c->closing)
    return;
  weft_runtime_t *rt = weft_ctx_runtime(c->h->ctx);
  weft_metrics_port_t *ports = NULL;
  size_t nports = 0;
  int err = 0;
  if (c->want_ports) {
    err = weft_metrics_ports(rt, c->ports_top, &ports, &nports);
    if (err == WEFT_EAGAIN && c->ports_tries++ < PORTS_TRIES) {
      (void)uv_timer_start(&c->timer, on_ports_retry, PORTS_RETRY_MS, 0);
      return;
    }
    if (err) {
      respond(c, err == WEFT_EAGAIN ? 503 : 500, NULL, NULL, 0, c->head_only);
      return;
    }
  }
  weft_metrics_snapshot_t *s;
  char *text = NULL;
  size_t len = 0;
  err = weft_metrics_snapshot(rt, &s);
  if (err == 0) {
    err = c->prom ? weft_metrics_prometheus(s, &text, &len) : weft_metrics_json(s, &text, &len);
    weft_metrics_snapshot_free(s);
  }
  if (err == 0 && c->want_ports)
    err = add_ports(c, &text, &len, ports, nports);
  weft_free(ports);
  if (err) {
    weft_free(text);
    respond(c, 500, NULL, NULL, 0, c->head_only);
    return;
  }
  respond(c, 200, c->prom ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
          text, len, c->head_only);
}

/* ?ports=1 and ?top=N (other parameters are ignored). */
static void parse_query(conn_t *c, char *q) {
  char *save = NULL;
  for (char *kv = strtok_r(q, "&", &save); kv != NULL; kv = strtok_r(NULL, "&", &save)) {
    if (strcmp(kv, "ports=1") == 0)
      c->want_ports = true;
    else if (strncmp(kv, "top=", 4) == 0)
      c->ports_top = (size_t)strtoul(kv + 4, NULL, 10);
  }
}

/* The request is complete: check it, then answer. */
static void serve(conn_t *c) {
  unsigned method = c->parser.method;
  c->served = true;
  c->head_only = method == HTTP_HEAD;
  if (method != HTTP_GET && !c->head_only) {
    respond(c, 405, NULL, NULL, 0, false);
    return;
  }
  char *q = strchr(c->url, '?');
  if (q) {
    *q = '\0';
    parse_query(c, q + 1);
  }
  c->prom = strcmp(c->url, "/metrics") == 0;
  bool json = strcmp(c->url, "/stats.json") == 0;
  if (!c->prom && !json) {
    respond(c, 404, NULL, NULL, 0, c->head_only);
    return;
  }
  answer(c);
}

/* ---- parsing ---------------------------------------------------------------- */

static int count_header(http_parser *p, size_t n) {
  conn_t *c = p->data;
  c->header_bytes += (uint32_t)n;
  return c->header_bytes > c->h->opts.max_header_bytes ? -1 : 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (c->url_len + n > URL_MAX) {
    c->url_long = true;
    return -1;
  }
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  c->url[c->url_len] = '\0';
  return count_header(p, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  (void)at;
  return count_header(p, n);
}

static int on_message_complete(http_parser *p) {
  serve(p->data);
  http_parser_pause(p, 1); /* one request per connection */
  return 0;
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = hd->data;
  *buf = uv_buf_init(c->readbuf, sizeof(c->readbuf));
}

static void parse_failed(conn_t *c) {
  if (c->url_long)
    respond(c, 414, NULL, NULL, 0, false);
  else if (c->header_bytes > c->h->opts.max_header_bytes ||
           HTTP_PARSER_ERRNO(&c->parser) == HPE_HEADER_OVERFLOW)
    respond(c, 431, NULL, NULL, 0, false);
  else
    respond(c, 400, NULL, NULL, 0, false);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = st->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0 || c->answered || c->served)
    return; /* after the request: discarded until EOF */
  size_t used = http_parser_execute(&c->parser, &settings, buf->base, (size_t)n);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->answered || c->served)
    return; /* answered, or the answer waits for the port tables */
  if (e != HPE_OK || used != (size_t)n)
    parse_failed(c);
}

static void on_deadline(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->answered)
    conn_close(c); /* the client does not read its answer */
  else
    respond(c, 408, NULL, NULL, 0, false);
}

/* ---- accepting -------------------------------------------------------------- */

static void free_handle(uv_handle_t *hd) { weft_free(hd); }

static void reject(weft_metrics_http_t *h) {
  /* Over max_conns: accept and drop at once, so the backlog does not fill. */
  uv_tcp_t *t = weft_malloc(sizeof(*t));
  if (t == NULL || uv_tcp_init(h->listener.loop, t) != 0) {
    weft_free(t);
    return;
  }
  (void)uv_accept((uv_stream_t *)&h->listener, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, free_handle);
}

static void on_connection(uv_stream_t *server, int status) {
  weft_metrics_http_t *h = server->data;
  if (status < 0 || h->closing)
    return;
  if (h->nconns >= h->opts.max_conns) {
    reject(h);
    return;
  }
  conn_t *c = weft_calloc(1, sizeof(*c));
  if (c == NULL) {
    reject(h);
    return;
  }
  uv_loop_t *loop = server->loop;
  (void)uv_tcp_init(loop, &c->sock);
  (void)uv_timer_init(loop, &c->timer);
  c->sock.data = c->timer.data = c;
  c->h = h;
  c->handles = 2;
  h->handles++;
  c->next = h->conns;
  if (h->conns)
    h->conns->prev = c;
  h->conns = c;
  h->nconns++;
  uv_unref((uv_handle_t *)&c->sock);
  uv_unref((uv_handle_t *)&c->timer);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->sock) != 0 ||
      uv_read_start((uv_stream_t *)&c->sock, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  (void)uv_timer_start(&c->timer, on_deadline, h->opts.header_timeout_ms, 0);
}

/* "host:port" or "[v6]:port" into addr. */
static int parse_listen(const char *s, struct sockaddr_storage *addr) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (colon == NULL)
    return WEFT_EINVAL;
  size_t hl = (size_t)(colon - s);
  const char *hs = s;
  if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
    hs = s + 1;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof(host))
    return WEFT_EINVAL;
  memcpy(host, hs, hl);
  host[hl] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
    return WEFT_EINVAL;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0)
    return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0)
    return 0;
  return WEFT_EINVAL;
}

static void init_settings(void) {
  http_parser_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_field; /* both count towards the bound */
  settings.on_message_complete = on_message_complete;
}

static void on_listener_closed(uv_handle_t *hd) { endpoint_handle_closed(hd->data); }

int weft_metrics_http_start(weft_ctx_t *ctx, const weft_metrics_http_options_t *opts,
                            weft_metrics_http_t **out) {
  static uv_once_t once = UV_ONCE_INIT;
  if (ctx == NULL || out == NULL)
    return WEFT_EINVAL;
  if (ctx != weft_ctx_current())
    return WEFT_EWRONGTHREAD;
  uv_once(&once, init_settings);
  weft_metrics_http_options_t o = {0};
  if (opts)
    o = *opts;
  struct sockaddr_storage addr;
  int err = parse_listen(o.listen ? o.listen : "127.0.0.1:0", &addr);
  if (err)
    return err;
  o.listen = NULL;
  o.header_timeout_ms = o.header_timeout_ms ? o.header_timeout_ms : 5000;
  o.max_header_bytes = o.max_header_bytes ? o.max_header_bytes : 8192;
  o.max_conns = o.max_conns ? o.max_conns : 64;
  weft_metrics_http_t *h = weft_calloc(1, sizeof(*h));
  if (h == NULL)
    return WEFT_ENOMEM;
  h->ctx = ctx;
  h->opts = o;
  h->handles = 1;
  err = uv_tcp_init(weft_ctx_loop(ctx), &h->listener);
  if (err)
    goto fail_free;
  h->listener.data = h;
  err = uv_tcp_bind(&h->listener, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&h->listener, 128, on_connection);
  if (err)
    goto fail_close;
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen) == 0)
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
  uv_unref((uv_handle_t *)&h->listener);
  *out = h;
  return 0;

fail_close:
  h->closing = true;
  uv_close((uv_handle_t *)&h->listener, on_listener_closed); /* frees h */
  return err;
fail_free:
  weft_free(h);
  return err;
}

int weft_metrics_http_port(const weft_metrics_http_t *h) { return h ? h->port : 0; }

int weft_metrics_http_close(weft_metrics_http_t *h, weft_metrics_http_close_cb cb, void *data) {
  if (h == NULL || h->closing)
    return WEFT_EINVAL;
  h->closing = true;
  h->close_cb = cb;
  h->close_data = data;
  while (h->conns)
    conn_close(h->conns);
  uv_close((uv_handle_t *)&h->listener, on_listener_closed);
  return 0;
}
