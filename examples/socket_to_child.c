/* socket_to_child.c: the parent accepts TCP connections and hands each one
 * to a child process, which serves it.
 *
 * Node:
 *   const child = fork(__filename, ['child']);
 *   net.createServer({ pauseOnConnect: true }, (socket) => {
 *     child.send({ conn: n++ }, socket);           // the child owns it now
 *   }).listen(0, '127.0.0.1');
 *   // in the child:
 *   process.on('message', (m, socket) => { ... socket.end(reply); });
 *
 * weft: the same executable is parent and child (entry "server"). The parent
 * listens on 127.0.0.1, accepts with libuv, and posts {conn} with the
 * connection's fd (weft_msg_add_socket) on the child's port; the fd crosses
 * with SCM_RIGHTS. The child takes it (weft_msg_take_socket), opens it on its
 * own loop (uv_tcp_open), reads one line, answers with it in upper case and
 * its pid, closes the connection, and tells the parent {served}.
 *
 * libuv has no way to let go of an accepted handle's fd, so the parent posts
 * a duplicate (the message owns it and closes it once it is sent) and closes
 * its own handle; the connection lives on in the child.
 *
 * --demo: the parent also is the client: it connects CLIENTS times, prints
 * each answer, then closes the listener and the channel; the child exits,
 * then the parent. Without --demo it serves until interrupted (try
 * `printf 'hi\n' | nc 127.0.0.1 PORT`).
 *
 * Usage: socket_to_child [--demo] */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

#define CLIENTS 3

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

static void free_handle(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char chunk[4096];
  buf->base = chunk;
  buf->len = sizeof(chunk);
}

/* ---- the child: serves the connections it is handed --------------------------------- */

typedef struct {
  uv_tcp_t tcp; /* first: the handle is the connection */
  weft_port_t *parent;
  int64_t conn;
  char line[256];
  size_t len;
  char reply[400];
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
} conn_t;

static void conn_shut(uv_shutdown_t *req, int status) {
  (void)status;
  uv_close((uv_handle_t *)req->handle, free_handle);
}

static void conn_written(uv_write_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0 || uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_shut) != 0)
    uv_close((uv_handle_t *)&c->tcp, free_handle);
}

/* One line read: answer it, tell the parent. */
static void conn_answer(conn_t *c) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  for (size_t i = 0; i < c->len; i++)
    c->line[i] = (char)toupper((unsigned char)c->line[i]);
  int n = snprintf(c->reply, sizeof(c->reply), "child %d served connection #%lld: %.*s\n",
                   uv_os_getpid(), (long long)c->conn, (int)c->len, c->line);
  uv_buf_t b = uv_buf_init(c->reply, (unsigned)n);
  c->write_req.data = c;
  if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, conn_written) != 0)
    uv_close((uv_handle_t *)&c->tcp, free_handle);

  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 1);
  weft_msg_put_i64(m, "served", c->conn);
  if (weft_port_post(c->parent, m) != 0)
    weft_msg_free(m); /* the parent is gone: nothing to tell */
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)s;
  if (n < 0) { /* EOF or error before a whole line: answer what we have */
    conn_answer(c);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    if (buf->base[i] == '\n' || c->len == sizeof(c->line)) {
      conn_answer(c);
      return;
    }
    c->line[c->len++] = buf->base[i];
  }
}

static void child_on_message(weft_port_t *parent, weft_msg_t *msg) {
  int64_t conn = -1;
  uv_os_sock_t fd;
  weft_msg_get_i64(msg, "conn", &conn);
  int err = weft_msg_take_socket(msg, 0, &fd); /* ours now */
  weft_msg_free(msg);
  if (err) {
    fprintf(stderr, "[child ] a message without a socket: %s\n", weft_err_name(err));
    return;
  }
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL || uv_tcp_init(weft_ctx_loop(weft_port_ctx(parent)), &c->tcp) != 0) {
    fprintf(stderr, "[child ] out of memory: dropping connection #%lld\n", (long long)conn);
    free(c);
    close(fd);
    return;
  }
  c->parent = parent;
  c->conn = conn;
  if (uv_tcp_open(&c->tcp, fd) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, conn_read) != 0)
    uv_close((uv_handle_t *)&c->tcp, free_handle);
  printf("[child ] pid %d got connection #%lld\n", uv_os_getpid(), (long long)conn);
}

static int child_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  /* Serves until the parent closes the channel. */
  return weft_port_start(weft_runtime_parent_port(weft_ctx_runtime(ctx)), child_on_message);
}

/* ---- the parent: accepts and hands over ----------------------------------------------- */

static uv_tcp_t server;
static weft_child_t *child;
static int64_t accepted, served, answers;
static bool demo;

static void finish_if_done(void) {
  if (!demo || served < CLIENTS || answers < CLIENTS)
    return;
  printf("[parent] %lld connections served: closing the listener and the channel\n",
         (long long)served);
  uv_close((uv_handle_t *)&server, NULL);
  weft_port_close(weft_child_port(child)); /* the child sees the close and exits */
}

static void on_connection(uv_stream_t *listener, int status) {
  check(status, "listen");
  uv_tcp_t *conn = malloc(sizeof(*conn));
  if (conn == NULL)
    return;
  uv_tcp_init(listener->loop, conn);
  if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
    uv_close((uv_handle_t *)conn, free_handle);
    return;
  }
  uv_os_fd_t fd;
  check(uv_fileno((uv_handle_t *)conn, &fd), "uv_fileno");
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  uv_close((uv_handle_t *)conn, free_handle); /* the copy carries the connection */
  if (copy < 0)
    return;
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 1);
  weft_msg_put_i64(m, "conn", ++accepted);
  check(weft_msg_add_socket(m, copy), "weft_msg_add_socket"); /* m owns copy */
  int err = weft_port_post(weft_child_port(child), m);
  if (err)
    weft_msg_free(m); /* closes copy: the client sees the connection end */
  check(err, "post to child");
  printf("[parent] accepted connection #%lld, handed it to child %d\n", (long long)accepted,
         weft_child_pid(child));
}

static void parent_on_message(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  int64_t conn = 0;
  weft_msg_get_i64(msg, "served", &conn);
  weft_msg_free(msg);
  served++;
  finish_if_done();
}

static void parent_on_exit(weft_child_t *c, int64_t status, int signal) {
  (void)c;
  printf("[parent] child exited with code %lld, signal %d\n", (long long)status, signal);
}

/* ---- the demo's clients -------------------------------------------------------------- */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  char hello[32];
  char got[512];
  size_t len;
} client_t;

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *cl = (client_t *)s;
  if (n > 0) {
    size_t take = (size_t)n < sizeof(cl->got) - cl->len ? (size_t)n : sizeof(cl->got) - cl->len;
    memcpy(cl->got + cl->len, buf->base, take);
    cl->len += take;
    return;
  }
  if (n < 0) { /* EOF: the child closed the connection */
    printf("[client] sent \"%.*s\", got: %.*s", (int)strcspn(cl->hello, "\n"), cl->hello,
           (int)cl->len, cl->got);
    uv_close((uv_handle_t *)s, free_handle);
    answers++;
    finish_if_done();
  }
}

static void client_connected(uv_connect_t *req, int status) {
  client_t *cl = req->data;
  check(status, "connect");
  uv_buf_t b = uv_buf_init(cl->hello, (unsigned)strlen(cl->hello));
  check(uv_write(&cl->write_req, (uv_stream_t *)&cl->tcp, &b, 1, NULL), "uv_write");
  check(uv_read_start((uv_stream_t *)&cl->tcp, on_alloc, client_read), "uv_read_start");
}

static void start_client(uv_loop_t *loop, const struct sockaddr *addr, int i) {
  client_t *cl = calloc(1, sizeof(*cl));
  if (cl == NULL)
    exit(1);
  snprintf(cl->hello, sizeof(cl->hello), "hello from client %d\n", i);
  cl->connect_req.data = cl;
  check(uv_tcp_init(loop, &cl->tcp), "uv_tcp_init");
  check(uv_tcp_connect(&cl->connect_req, &cl->tcp, addr, client_connected), "uv_tcp_connect");
}

int main(int argc, char **argv) {
  demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  check(weft_runtime_register(rt, "server", child_entry), "weft_runtime_register");
  int code;
  int err = weft_runtime_child_entry(rt, &code);
  if (err == 0) {
    check(weft_runtime_free(rt), "weft_runtime_free");
    return code;
  }
  if (err != WEFT_ENOENT)
    check(err, "weft_runtime_child_entry");

  weft_ctx_t *ctx = weft_runtime_main(rt);
  uv_loop_t *loop = weft_ctx_loop(ctx);
  weft_child_options_t opts = {
      .entry_name = "server",
      .on_message = parent_on_message,
      .on_exit = parent_on_exit,
  };
  check(weft_child_spawn(ctx, &opts, &child), "weft_child_spawn");

  struct sockaddr_in any;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  check(uv_ip4_addr("127.0.0.1", 0, &any), "uv_ip4_addr");
  check(uv_tcp_init(loop, &server), "uv_tcp_init");
  check(uv_tcp_bind(&server, (const struct sockaddr *)&any, 0), "uv_tcp_bind");
  check(uv_listen((uv_stream_t *)&server, 128, on_connection), "uv_listen");
  check(uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len), "uv_tcp_getsockname");
  printf("[parent] listening on 127.0.0.1:%d; connections go to child %d\n",
         ntohs(((struct sockaddr_in *)&bound)->sin_port), weft_child_pid(child));
  if (demo)
    for (int i = 1; i <= CLIENTS; i++)
      start_client(loop, (const struct sockaddr *)&bound, i);

  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return !demo || (served == CLIENTS && answers == CLIENTS) ? 0 : 1;
}
