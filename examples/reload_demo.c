/* reload_demo: a rolling reload under load. Workers answer "ping\n" with
 * "pong\n" on kept-alive connections. weft_balancer_reload replaces them one
 * at a time: a new worker reports ready, then the old one drains (it answers
 * the next ping with "bye\n" and closes; the client reconnects and lands on a
 * live worker). The listening socket never closes, so no connection is
 * refused or reset and no request fails.
 *
 *   reload_demo [--demo] [--port P]
 *
 * Without --demo it serves on 127.0.0.1:P (default 7001): SIGHUP reloads,
 * SIGINT / SIGTERM drain and exit. With --demo, 8 clients send 20000 pings,
 * a reload starts after 5000, and it prints that none failed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>
#include <weft/balancer.h>

/* ---- the worker ------------------------------------------------------------- */

typedef struct {
  weft_conn_t conn;
  char buf[256];
  size_t len;
} line_conn_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  line_conn_t *c = (line_conn_t *)h;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  line_conn_t *c = (line_conn_t *)s;
  if (n < 0) {
    weft_conn_close(&c->conn);
    return;
  }
  c->len += (size_t)n;
  char *nl;
  while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
    bool bye = weft_balancer_worker_draining(c->conn.worker);
    uv_buf_t reply = uv_buf_init(bye ? "bye\n" : "pong\n", bye ? 4 : 5);
    weft_conn_request_done(&c->conn);
    if (uv_try_write(s, &reply, 1) != (int)reply.len || bye) {
      weft_conn_close(&c->conn);
      return;
    }
    c->len -= (size_t)(nl + 1 - c->buf);
    memmove(c->buf, nl + 1, c->len);
  }
}

static void on_connection(weft_conn_t *conn) {
  uv_read_start(&conn->h.stream, on_alloc, on_read);
}

static int ping_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t o = {.conn_size = sizeof(line_conn_t),
                                      .on_connection = on_connection};
  return weft_balancer_worker_start(ctx, &o, NULL);
}

/* ---- the demo client: 8 connections, 20000 pings ---------------------------------- */

enum { CLIENTS = 8, PINGS = 20000, RELOAD_AT = 5000 };

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  char buf[16];
  size_t len;
  bool waiting;
} client_t;

static client_t clients[CLIENTS];
static int sent, answered, failed, reconnects, open_clients;
static struct sockaddr_in addr;
static weft_balancer_t *balancer;
static uv_signal_t sigs[3];

static void client_start(client_t *c);

static void client_closed(uv_handle_t *h) {
  open_clients--;
  if (sent < PINGS) {
    reconnects++;
    client_start((client_t *)h);
  } else if (open_clients == 0) {
    printf("demo: %d pings answered, %d failed, %d reconnects\n", answered, failed, reconnects);
    weft_balancer_close(balancer, NULL);
    for (int i = 0; i < 3; i++)
      uv_close((uv_handle_t *)&sigs[i], NULL);
  }
}

static void client_end(client_t *c, bool fail) {
  failed += fail;
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_send(client_t *c) {
  if (sent == PINGS) {
    client_end(c, false);
    return;
  }
  uv_buf_t b = uv_buf_init("ping\n", 5);
  c->len = 0;
  c->waiting = true;
  sent++;
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != 5)
    client_end(c, true);
}

static void on_reloaded(weft_balancer_t *b, int err) {
  (void)b;
  printf("reload %s\n", err ? weft_strerror(err) : "done: every worker replaced");
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  client_t *c = (client_t *)s;
  if (n < 0) {  /* EOF or reset while a ping was out: a failed request */
    client_end(c, c->waiting);
    return;
  }
  c->len += (size_t)n;
  if (memchr(c->buf, '\n', c->len) == NULL)
    return;
  c->waiting = false;
  if (memcmp(c->buf, "bye\n", 4) == 0) {  /* the worker drains: reconnect */
    answered++;
    client_end(c, false);
    return;
  }
  if (++answered == RELOAD_AT)
    weft_balancer_reload(balancer, on_reloaded);
  client_send(c);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  client_t *c = (client_t *)h;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void client_connected(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  if (status < 0) {
    client_end(c, true);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  client_send(c);
}

static void client_start(client_t *c) {
  memset(c, 0, sizeof(*c));
  c->cr.data = c;
  open_clients++;
  uv_tcp_init(weft_ctx_loop(weft_ctx_current()), &c->tcp);
  uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&addr, client_connected);
}

static void on_ready(weft_balancer_t *b) {
  uv_ip4_addr("127.0.0.1", weft_balancer_port(b), &addr);
  for (int i = 0; i < CLIENTS; i++)
    client_start(&clients[i]);
}

/* ---- main -------------------------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (signum == SIGHUP) {
    weft_balancer_reload(balancer, on_reloaded);
    return;
  }
  weft_balancer_close(balancer, NULL);
  for (int i = 0; i < 3; i++)
    uv_close((uv_handle_t *)&sigs[i], NULL);
}

int main(int argc, char **argv) {
  bool demo = false;
  weft_balancer_options_t o = {.port = 7001, .workers = 2, .worker = {.entry = ping_worker}};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true, o.port = 0, o.on_ready = on_ready;
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      o.port = atoi(argv[++i]);
  }
  signal(SIGPIPE, SIG_IGN);
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0 ||
      weft_balancer_new(weft_runtime_main(rt), &o, &balancer) != 0)
    return 1;
  printf("reload_demo on 127.0.0.1:%d (SIGHUP: reload)\n", weft_balancer_port(balancer));
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  const int signums[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(loop, &sigs[i]);
    uv_signal_start(&sigs[i], on_signal, signums[i]);
    if (demo)
      uv_unref((uv_handle_t *)&sigs[i]);
  }
  weft_runtime_run(rt);
  int rc = weft_runtime_free(rt);
  return demo && (failed || answered != PINGS) ? 1 : rc;
}
