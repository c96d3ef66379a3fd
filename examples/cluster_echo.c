/* cluster_echo: a TCP echo server across worker threads. The balancer
 * accepts on the main thread and hands each connection, round robin, to a
 * worker thread, which echoes on its own loop.
 *
 *   cluster_echo [--workers N] [--port P] [--demo]
 *
 * It serves until SIGINT or SIGTERM, then drains. With --demo, 4 clients on
 * 127.0.0.1 each send 100 lines, check the echoes, and it exits. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>
#include <weft/balancer.h>

/* ---- the worker -------------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  char data[];
} echo_write_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  b->base = malloc(hint);
  b->len = b->base ? hint : 0;
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  weft_conn_t *conn = (weft_conn_t *)s;
  if (n < 0) {
    weft_conn_close(conn);
  } else if (n > 0) {  /* write the bytes back; the request owns a copy */
    echo_write_t *w = malloc(sizeof(*w) + (size_t)n);
    memcpy(w->data, b->base, (size_t)n);
    uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, s, &out, 1, on_written) != 0) {
      free(w);
      weft_conn_close(conn);
    }
    weft_conn_request_done(conn);  /* count reads as "requests" */
  }
  free(b->base);
}

static void on_connection(weft_conn_t *conn) { uv_read_start(&conn->h.stream, on_alloc, on_read); }

static int echo_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t o = {.on_connection = on_connection,
                                      .on_drain = weft_conn_close};
  return weft_balancer_worker_start(ctx, &o, NULL);
}

/* ---- the demo client ------------------------------------------------------------ */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  int sent, echoed;
  char buf[64];
  size_t len;
} client_t;

static client_t clients[4];
static int clients_open, failed;
static weft_balancer_t *balancer;
static uv_signal_t sigs[2];

static void on_closed(weft_balancer_t *b) {
  for (size_t i = 0; i < weft_balancer_workers(b); i++) {
    weft_balancer_stats_t st;
    weft_balancer_stats(b, i, &st);
    printf("worker %zu: %llu connections\n", i, (unsigned long long)st.connections);
  }
  uv_close((uv_handle_t *)&sigs[0], NULL);
  uv_close((uv_handle_t *)&sigs[1], NULL);
}

static void client_closed(uv_handle_t *h) {
  (void)h;
  if (--clients_open == 0) {
    printf("demo: 4 clients x 100 lines echoed, %d failed\n", failed);
    weft_balancer_close(balancer, on_closed);
  }
}

static void client_send(client_t *c) {
  char line[32];
  int n = snprintf(line, sizeof(line), "line %d\n", c->sent++);
  uv_buf_t b = uv_buf_init(line, (unsigned)n);
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != n) {
    failed++;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
  }
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  client_t *c = (client_t *)h;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  client_t *c = (client_t *)s;
  if (n < 0) {
    failed++;
    uv_close((uv_handle_t *)s, client_closed);
    return;
  }
  c->len += (size_t)n;
  char expect[32];
  int len = snprintf(expect, sizeof(expect), "line %d\n", c->echoed);
  if (c->len < (size_t)len)
    return;
  if (memcmp(c->buf, expect, (size_t)len) != 0)
    failed++;
  c->len = 0;
  if (++c->echoed == 100)
    uv_close((uv_handle_t *)s, client_closed);
  else
    client_send(c);
}

static void client_connected(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  if (status < 0) {
    failed++;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  client_send(c);
}

static void on_ready(weft_balancer_t *b) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", weft_balancer_port(b), &addr);
  for (int i = 0; i < 4; i++) {
    clients[i].cr.data = &clients[i];
    uv_tcp_init(weft_ctx_loop(weft_ctx_current()), &clients[i].tcp);
    uv_tcp_connect(&clients[i].cr, &clients[i].tcp, (struct sockaddr *)&addr, client_connected);
    clients_open++;
  }
}

/* ---- main ---------------------------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  printf("signal %d: draining\n", signum);
  weft_balancer_close(balancer, on_closed);
}

int main(int argc, char **argv) {
  bool demo = false;
  weft_balancer_options_t o = {.port = 7000, .workers = 2, .worker = {.entry = echo_worker}};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true, o.port = 0, o.on_ready = on_ready;
    else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
      o.workers = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      o.port = atoi(argv[++i]);
  }
  signal(SIGPIPE, SIG_IGN);
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 1;
  int err = weft_balancer_new(weft_runtime_main(rt), &o, &balancer);
  if (err) {
    fprintf(stderr, "cannot listen: %s\n", weft_strerror(err));
    weft_runtime_free(rt);
    return 1;
  }
  printf("cluster_echo: %u worker threads on 127.0.0.1:%d\n", o.workers,
         weft_balancer_port(balancer));
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  for (int i = 0; i < 2; i++) {
    uv_signal_init(loop, &sigs[i]);
    uv_signal_start(&sigs[i], on_signal, i ? SIGTERM : SIGINT);
    if (demo)
      uv_unref((uv_handle_t *)&sigs[i]);
  }
  weft_runtime_run(rt);
  int rc = weft_runtime_free(rt);
  return failed ? 1 : rc;
}
