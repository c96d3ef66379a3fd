/* embed_libuv.c: an existing libuv TCP server that embeds weft on its own loop.
 *
 * The server speaks a tiny line protocol on 127.0.0.1:
 *   primes N  -> "primes N K": K primes below N, counted on the weft pool
 *   stats     -> "stats R": R requests seen, asked of a stats worker with
 *                weft_port_request (request/reply)
 *   big       -> "big LEN SUM": a 64 MiB buffer moved (not copied) to the
 *                stats worker, which sums its bytes and answers
 *   child     -> "child TEXT": the output of a child process (weft_exec)
 *   quit      -> closes the server
 * Every request also posts a one-way "hit" to the stats worker.
 *
 * This is the program a user of the linked library writes: main() owns a
 * plain uv_loop_t and attaches weft to it (weft_runtime_options_t.loop). The
 * pool's, the request's and the child's callbacks all run on that loop.
 *
 * Usage: embed_libuv [--port=P] [--demo]. --demo listens on a free port,
 * drives the server with a built-in client on the same loop (each command
 * once), prints what came back and exits; without it, it serves until quit.
 * Threads: the server and the client on the main thread; the pool's tasks on
 * pool threads; the stats worker on its own. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define BIG_LEN (64u * 1024u * 1024u)

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* ---- the stats worker (its own thread and loop) -------------------------------- */

static uint64_t hits; /* the worker's own: only its thread touches it */

static void stats_on_message(weft_port_t *parent, weft_msg_t *msg) {
  (void)parent;
  char op[16];
  check(weft_msg_get_strcpy(msg, "op", op, sizeof(op), NULL), "op");
  weft_msg_t *reply = NULL;
  if (strcmp(op, "hit") == 0) {
    hits++;
  } else if (strcmp(op, "stats") == 0) {
    check(weft_msg_new(&reply), "weft_msg_new");
    weft_msg_put_u64(reply, NULL, hits);
  } else if (strcmp(op, "big") == 0) { /* the buffer is ours now: no copy was made */
    size_t i;
    weft_buf_t *buf;
    check(weft_msg_find_xfer(msg, WEFT_XFER_BUF, 0, &i), "find buffer");
    check(weft_msg_take_buf(msg, i, &buf), "weft_msg_take_buf");
    const uint8_t *p = weft_buf_ptr(buf);
    uint64_t sum = 0;
    for (size_t k = 0; k < weft_buf_len(buf); k++)
      sum += p[k];
    check(weft_msg_new(&reply), "weft_msg_new");
    weft_msg_begin_map(reply, NULL);
    weft_msg_put_u64(reply, "len", weft_buf_len(buf));
    weft_msg_put_u64(reply, "sum", sum);
    weft_msg_end_map(reply);
    weft_buf_free(buf);
  }
  if (reply != NULL && weft_msg_reply(msg, reply) != 0)
    weft_msg_free(reply);
  weft_msg_free(msg);
}

static int stats_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), stats_on_message);
}

/* ---- the pool task (any pool thread) --------------------------------------------- */

static int primes_task(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t n = 0, k = 0;
  int err = weft_msg_get_u64(args, NULL, &n);
  for (uint64_t i = 2; err == 0 && i < n; i++) {
    uint64_t d = 2;
    while (d * d <= i && i % d != 0)
      d++;
    k += d * d > i;
  }
  if (err == 0)
    err = weft_msg_new(result);
  return err ? err : weft_msg_put_u64(*result, NULL, k);
}

/* ---- the server: plain libuv ----------------------------------------------------- */

typedef struct {
  uv_loop_t *loop;
  uv_tcp_t listener;
  weft_runtime_t *rt;
  weft_pool_t *pool;
  weft_worker_t *stats;
} server_t;

static server_t srv;

typedef struct {
  uv_tcp_t tcp;
  char line[256];
  size_t have;
} conn_t;

typedef struct {
  uv_write_t req;
  char text[128];
} out_t;

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

/* Writes a line on the stream (the loop's thread). The demo's connections
 * outlive their requests; a server whose clients may leave first would count
 * the requests in flight per connection before freeing it. */
__attribute__((format(printf, 2, 3)))
static void say(uv_stream_t *s, const char *fmt, ...) {
  out_t *o = malloc(sizeof(*o));
  check(o ? 0 : UV_ENOMEM, "malloc");
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->text, sizeof(o->text), fmt, ap);
  va_end(ap);
  uv_buf_t buf = uv_buf_init(o->text, (unsigned)n);
  if (uv_write(&o->req, s, &buf, 1, on_written) != 0)
    free(o);
}

static void on_primes(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  uint64_t k = 0;
  if (err == 0)
    weft_msg_get_u64(result, NULL, &k);
  weft_msg_free(result);
  if (err)
    say(data, "primes error %s\n", weft_err_name(err));
  else
    say(data, "primes %llu\n", (unsigned long long)k);
}

static void on_stats(weft_msg_t *reply, int err, void *data) {
  uint64_t n = 0;
  if (err == 0)
    weft_msg_get_u64(reply, NULL, &n);
  weft_msg_free(reply);
  if (err)
    say(data, "stats error %s\n", weft_err_name(err));
  else
    say(data, "stats %llu requests\n", (unsigned long long)n);
}

static void on_big(weft_msg_t *reply, int err, void *data) {
  uint64_t len = 0, sum = 0;
  if (err == 0) {
    weft_msg_get_u64(reply, "len", &len);
    weft_msg_get_u64(reply, "sum", &sum);
  }
  weft_msg_free(reply);
  if (err)
    say(data, "big error %s\n", weft_err_name(err));
  else
    say(data, "big %llu bytes moved, sum %llu\n", (unsigned long long)len,
        (unsigned long long)sum);
}

static void on_child(const weft_exec_result_t *r, void *data) {
  say(data, "child %.*s", (int)r->out_len, r->out); /* echo's output ends with \n */
}

static weft_msg_t *op_msg(const char *op) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_begin_map(m, NULL);
  weft_msg_put_str(m, "op", op);
  weft_msg_end_map(m);
  return m;
}

static void stop_server(void);

static void handle_line(uv_stream_t *s, const char *line) {
  weft_port_t *stats = weft_worker_port(srv.stats);
  weft_msg_t *m = op_msg("hit");
  if (weft_port_post(stats, m) != 0)
    weft_msg_free(m);
  unsigned long long n;
  if (sscanf(line, "primes %llu", &n) == 1) {
    check(weft_msg_new(&m), "weft_msg_new");
    weft_msg_put_u64(m, NULL, n);
    weft_pool_task_options_t t = {.fn = primes_task, .args = m};
    check(weft_pool_submit(srv.pool, &t, on_primes, s, NULL), "weft_pool_submit");
  } else if (strcmp(line, "stats") == 0) {
    check(weft_port_request(stats, op_msg("stats"), on_stats, s, 1000), "weft_port_request");
  } else if (strcmp(line, "big") == 0) {
    weft_buf_t *buf;
    check(weft_buf_new(&buf, BIG_LEN), "weft_buf_new");
    memset(weft_buf_ptr(buf), 1, BIG_LEN);
    m = op_msg("big");
    check(weft_msg_add_buf(m, buf), "weft_msg_add_buf"); /* moved: buf is now empty */
    weft_buf_free(buf);
    check(weft_port_request(stats, m, on_big, s, 0), "weft_port_request");
  } else if (strcmp(line, "child") == 0) {
    static const char *const args[] = {"echo", "hello from a child process", NULL};
    weft_exec_options_t o = {.file = "echo", .args = args, .cb = on_child, .data = s};
    check(weft_exec(weft_runtime_main(srv.rt), &o), "weft_exec");
  } else if (strcmp(line, "quit") == 0) {
    stop_server();
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  conn_t *c = h->data;
  *buf = uv_buf_init(c->line + c->have, (unsigned)(sizeof(c->line) - 1 - c->have));
}

static void on_conn_closed(uv_handle_t *h) { free(h->data); }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = s->data;
  if (nread < 0 || c->have + (size_t)nread >= sizeof(c->line) - 1) {
    uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  c->have += (size_t)nread;
  char *nl;
  while ((nl = memchr(c->line, '\n', c->have)) != NULL) {
    *nl = '\0';
    handle_line(s, c->line);
    c->have -= (size_t)(nl + 1 - c->line);
    memmove(c->line, nl + 1, c->have);
  }
}

static void on_connection(uv_stream_t *l, int status) {
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  check(c ? 0 : UV_ENOMEM, "calloc");
  uv_tcp_init(l->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) == 0)
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void close_conn(uv_handle_t *h, void *arg) {
  (void)arg;
  if (h->type == UV_TCP && h != (uv_handle_t *)&srv.listener && !uv_is_closing(h))
    uv_close(h, on_conn_closed);
}

/* Closes what keeps the loop alive: the listener and connections, the pool,
 * the stats worker's channel (the worker then exits). */
static void stop_server(void) {
  if (uv_is_closing((uv_handle_t *)&srv.listener))
    return;
  uv_close((uv_handle_t *)&srv.listener, NULL);
  uv_walk(srv.loop, close_conn, NULL);
  weft_pool_close(srv.pool, NULL);
  weft_port_close(weft_worker_port(srv.stats));
}

/* ---- the demo's client (same loop) --------------------------------------------- */

static const char *const demo_lines[] = {"primes 200000", "stats", "big", "child", "stats"};
#define DEMO_N (sizeof(demo_lines) / sizeof(demo_lines[0]))

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  char in[512];
  size_t have;
  size_t sent, answers;
} client_t;

static client_t cli;

static void client_send(const char *line) {
  out_t *o = malloc(sizeof(*o));
  check(o ? 0 : UV_ENOMEM, "malloc");
  int n = snprintf(o->text, sizeof(o->text), "%s\n", line);
  uv_buf_t buf = uv_buf_init(o->text, (unsigned)n);
  check(uv_write(&o->req, (uv_stream_t *)&cli.tcp, &buf, 1, on_written), "uv_write");
  printf("> %s\n", line);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(cli.in + cli.have, (unsigned)(sizeof(cli.in) - cli.have));
}

/* One command at a time: the next goes once the answer came. */
static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) {
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  cli.have += (size_t)nread;
  char *nl;
  while ((nl = memchr(cli.in, '\n', cli.have)) != NULL) {
    printf("< %.*s\n", (int)(nl - cli.in), cli.in);
    cli.have -= (size_t)(nl + 1 - cli.in);
    memmove(cli.in, nl + 1, cli.have);
    if (++cli.answers < DEMO_N) {
      client_send(demo_lines[cli.answers]);
    } else {
      client_send("quit");
      uv_close((uv_handle_t *)s, NULL);
      return;
    }
  }
}

static void client_connected(uv_connect_t *req, int status) {
  check(status, "connect");
  uv_read_start(req->handle, client_alloc, client_read);
  client_send(demo_lines[0]);
}

static void start_client(int port) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(srv.loop, &cli.tcp);
  check(uv_tcp_connect(&cli.connect, &cli.tcp, (const struct sockaddr *)&addr, client_connected),
        "uv_tcp_connect");
}

int main(int argc, char **argv) {
  bool demo = false;
  int port = 7070;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true;
    else if (strncmp(argv[i], "--port=", 7) == 0)
      port = atoi(argv[i] + 7);
  }
  if (demo)
    port = 0; /* any free port */

  /* The existing program: its own loop and a TCP listener. */
  uv_loop_t loop;
  check(uv_loop_init(&loop), "uv_loop_init");
  srv.loop = &loop;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  check(uv_tcp_init(&loop, &srv.listener), "uv_tcp_init");
  check(uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0), "uv_tcp_bind");
  check(uv_listen((uv_stream_t *)&srv.listener, 64, on_connection), "uv_listen");
  int len = sizeof(addr);
  uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&addr, &len);
  port = ntohs(addr.sin_port);

  /* weft, attached to that loop: a pool and a stats worker. */
  weft_runtime_options_t ro = {.loop = &loop};
  check(weft_runtime_new(&srv.rt, &ro), "weft_runtime_new");
  check(weft_pool_new(weft_runtime_main(srv.rt), &(weft_pool_options_t){.size = 2}, &srv.pool),
        "weft_pool_new");
  weft_worker_options_t wo = {.entry = stats_entry};
  check(weft_worker_spawn(weft_runtime_main(srv.rt), &wo, &srv.stats), "weft_worker_spawn");

  printf("listening on 127.0.0.1:%d\n", port);
  if (demo)
    start_client(port);
  check(uv_run(&loop, UV_RUN_DEFAULT), "uv_run");
  check(weft_runtime_free(srv.rt), "weft_runtime_free");
  check(uv_loop_close(&loop), "uv_loop_close");
  if (demo && cli.answers != DEMO_N) {
    fprintf(stderr, "demo: %zu answers of %zu\n", cli.answers, DEMO_N);
    return 1;
  }
  return 0;
}
