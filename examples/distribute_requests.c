/* distribute_requests: one acceptor, requests (not connections) spread
 * across worker threads through ports. The main thread owns every socket; it
 * reads each request line ("fib N\n"), posts it to the next worker round
 * robin as a message {conn, n}, and writes the answer that comes back. The
 * workers only compute: CPU work never blocks the loop that does the I/O,
 * and one busy connection still uses every worker.
 *
 *   distribute_requests [--workers N] [--port P] [--demo]
 *
 * It serves until SIGINT. With --demo, 4 clients send 50 requests each and
 * it prints how many requests each worker computed. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

enum { MAX_WORKERS = 16, MAX_CONNS = 64 };

/* ---- the workers: compute, answer on the same port ----------------------------- */

static uint64_t fib(uint64_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static void on_request(weft_port_t *port, weft_msg_t *m) {
  uint64_t conn = 0, n = 0;
  weft_msg_get_u64(m, "conn", &conn);
  weft_msg_get_u64(m, "n", &n);
  weft_msg_free(m);
  weft_msg_t *r;
  if (weft_msg_new(&r) != 0)
    return;
  weft_msg_put_map(r, 2);
  weft_msg_put_u64(r, "conn", conn);
  weft_msg_put_u64(r, "fib", fib(n > 40 ? 40 : n));
  if (weft_port_post(port, r) != 0)
    weft_msg_free(r);
}

static int fib_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), on_request);
}

/* ---- the acceptor: sockets on the main loop ------------------------------------- */

typedef struct {
  uv_tcp_t tcp;
  uint64_t id;   /* slot + generation << 16: answers for a closed conn are dropped */
  char buf[256];
  size_t len;
} conn_t;

static conn_t *conns[MAX_CONNS];
static uint64_t generation;
static weft_worker_t *workers[MAX_WORKERS];
static uint64_t computed[MAX_WORKERS];
static int nworkers = 2, next_worker;
static uv_tcp_t server;

static void conn_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  conns[c->id & 0xffff] = NULL;
  free(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn_t *c = (conn_t *)h;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn_t *c = (conn_t *)s;
  if (n < 0 || (c->len += (size_t)n) == sizeof(c->buf)) {
    uv_close((uv_handle_t *)s, conn_closed);
    return;
  }
  char *nl;
  while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
    weft_msg_t *m;
    if (weft_msg_new(&m) == 0) {
      weft_msg_put_map(m, 2);
      weft_msg_put_u64(m, "conn", c->id);
      weft_msg_put_u64(m, "n", strtoull(c->buf + 4, NULL, 10));  /* "fib N" */
      int w = next_worker++ % nworkers;
      if (weft_port_post(weft_worker_port(workers[w]), m) != 0)
        weft_msg_free(m);  /* a real server would answer "busy" */
    }
    c->len -= (size_t)(nl + 1 - c->buf);
    memmove(c->buf, nl + 1, c->len);
  }
}

/* An answer from worker w: write it to its connection, if still open. */
static void on_answer(weft_port_t *port, weft_msg_t *m) {
  uint64_t id = 0, v = 0;
  weft_msg_get_u64(m, "conn", &id);
  weft_msg_get_u64(m, "fib", &v);
  weft_msg_free(m);
  computed[(uintptr_t)weft_port_data(port)]++;
  conn_t *c = conns[id & 0xffff];
  if (c == NULL || c->id != id)
    return;
  char line[32];
  uv_buf_t b = uv_buf_init(line, (unsigned)snprintf(line, sizeof(line), "%llu\n",
                                                    (unsigned long long)v));
  uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
}

static void on_connection(uv_stream_t *srv, int status) {
  int slot = 0;
  while (slot < MAX_CONNS && conns[slot])
    slot++;
  conn_t *c = status == 0 && slot < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
  if (c == NULL)
    return;
  uv_tcp_init(srv->loop, &c->tcp);
  c->id = (uint64_t)slot | (++generation << 16);
  conns[slot] = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) == 0)
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* ---- the demo client: 4 connections x 50 requests ------------------------------ */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  int left;
  char buf[64];
  size_t len;
} client_t;

static client_t clients[4];
static int clients_open, answers;

static void shutdown_all(void) {
  for (int i = 0; i < nworkers; i++)
    printf("worker %d computed %llu requests\n", i, (unsigned long long)computed[i]);
  for (int i = 0; i < nworkers; i++)
    weft_port_close(weft_worker_port(workers[i]));  /* each worker's loop ends */
  for (int i = 0; i < MAX_CONNS; i++)
    if (conns[i] && !uv_is_closing((uv_handle_t *)&conns[i]->tcp))
      uv_close((uv_handle_t *)&conns[i]->tcp, conn_closed);
  uv_close((uv_handle_t *)&server, NULL);
}

static void client_closed(uv_handle_t *h) {
  (void)h;
  if (--clients_open == 0) {
    printf("demo: %d answers\n", answers);
    shutdown_all();
  }
}

static void client_send(client_t *c) {
  uv_buf_t b = uv_buf_init("fib 24\n", 7);
  if (c->left-- == 0 || uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != 7)
    uv_close((uv_handle_t *)&c->tcp, client_closed);
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
    uv_close((uv_handle_t *)s, client_closed);
    return;
  }
  c->len += (size_t)n;
  if (memchr(c->buf, '\n', c->len) == NULL)
    return;
  answers += strcmp(c->buf, "46368\n") == 0 || strncmp(c->buf, "46368\n", 6) == 0;
  c->len = 0;
  client_send(c);
}

static void client_connected(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  if (status < 0) {
    uv_close((uv_handle_t *)&c->tcp, client_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  client_send(c);
}

/* ---- main ---------------------------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  uv_close((uv_handle_t *)s, NULL);
  shutdown_all();
}

int main(int argc, char **argv) {
  bool demo = false;
  int port = 7002;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true, port = 0;
    else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
      nworkers = atoi(argv[++i]);
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = atoi(argv[++i]);
  }
  if (nworkers < 1 || nworkers > MAX_WORKERS)
    nworkers = 2;
  signal(SIGPIPE, SIG_IGN);
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 1;
  weft_ctx_t *main_ctx = weft_runtime_main(rt);
  uv_loop_t *loop = weft_ctx_loop(main_ctx);
  for (int i = 0; i < nworkers; i++) {
    weft_worker_options_t wo = {.entry = fib_worker, .on_message = on_answer};
    if (weft_worker_spawn(main_ctx, &wo, &workers[i]) != 0)
      return 1;
    weft_port_set_data(weft_worker_port(workers[i]), (void *)(uintptr_t)i);
  }
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 511, on_connection) != 0)
    return 1;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
  addr.sin_port = ((struct sockaddr_in *)&bound)->sin_port;
  printf("distribute_requests: %d workers on 127.0.0.1:%d\n", nworkers, ntohs(addr.sin_port));
  static uv_signal_t sigint;
  if (demo) {
    for (int i = 0; i < 4; i++) {
      clients[i].left = 50;
      clients[i].cr.data = &clients[i];
      uv_tcp_init(loop, &clients[i].tcp);
      uv_tcp_connect(&clients[i].cr, &clients[i].tcp, (struct sockaddr *)&addr, client_connected);
      clients_open++;
    }
  } else {
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
  }
  weft_runtime_run(rt);
  int rc = weft_runtime_free(rt);
  return demo && answers != 200 ? 1 : rc;
}
