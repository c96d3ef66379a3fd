/* cluster_http: an HTTP/1.1 "hello world" server with keep-alive, spread
 * across worker threads (or processes) by a weft balancer, like Node's
 * cluster module.
 *
 *   cluster_http [--workers N] [--policy round_robin|least_connections|reuseport|shared]
 *                [--processes] [--host H] [--port P]
 *                [--header-timeout-ms MS] [--keepalive-timeout-ms MS]
 *                [--max-restarts N] [--restart-period-ms MS] [--plain-accept] [--demo]
 *
 * Short connections, as nginx's `listen ... deferred`: the balancer accepts
 * a connection once its request has arrived (defer_accept) and the worker
 * answers it from the bytes read as it took the connection
 * (on_first_data): a Connection: close request costs accept, read, write
 * and close. --plain-accept turns both off (every connection goes through
 * its libuv handle: three system calls more).
 *
 * Signals, as nginx: SIGHUP replaces the workers one at a time (a rolling
 * reload: no connection is refused); SIGINT / SIGTERM stop listening at
 * once (new clients are refused), let open connections finish their
 * request, print what each worker did and exit 0.
 *
 * Timeouts, as nginx's defaults: a connection that has not sent a complete
 * request head within --header-timeout-ms (60000; client_header_timeout) is
 * closed, and so is one idle between requests for --keepalive-timeout-ms
 * (75000; keepalive_timeout). 0 turns one off.
 *
 * Workers that keep failing: past --max-restarts restarts within
 * --restart-period-ms the balancer gives up: it closes its listener
 * (clients are refused, not left hanging), and cluster_http exits with
 * status 1 so that its service manager (systemd Restart=on-failure, ...)
 * starts it again.
 *
 * With --demo it drives itself with a bounded client on 127.0.0.1 and
 * exits. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <weft.h>
#include <weft/balancer.h>

/* ---- the metrics endpoint (--metrics HOST:PORT) ----------------------------- */
#include "metrics_flag.h" /* --metrics HOST:PORT: metrics_start, metrics_stop */

/* ---- the worker: one connection = one weft_conn_t + a read buffer -------- */

/* Deadlines, as nginx's timer tree and Node's timer lists keep them: not a
 * uv_timer per connection (a malloc, a heap insert and delete per request,
 * and a close that costs the loop one more iteration), but one list per
 * duration (the header timeout, the keep-alive timeout, the two drain
 * delays) and one timer per worker loop. A list's durations are all alike,
 * so appending keeps it sorted by deadline: setting or clearing a deadline
 * is O(1) and touches no timer unless the new deadline comes before the one
 * the timer is set for. The timer fires at the earliest head; a head that
 * has moved on since makes it fire early once, and it re-arms. */
enum { DL_HEADER, DL_KEEPALIVE, DL_DRAIN_IDLE, DL_DRAIN_FIRST, DL_KINDS };

typedef struct dl_node_s dl_node_t;
struct dl_node_s {
  dl_node_t *prev, *next; /* in sweep.lists[kind]; both NULL: no deadline */
  uint64_t due;           /* uv_now() time */
};

typedef struct {
  weft_conn_t conn;  /* first member: the balancer allocates the whole struct */
  dl_node_t dl;      /* the header or keep-alive deadline, if any */
  char buf[4096];
  size_t len;
  uint64_t served;
  bool nodelay;
  bool counted; /* in sweep.conns (on_connection ran and had a timer) */
} http_conn_t;

/* Set by main() before any worker starts (a worker process parses the same
 * argv), read-only afterwards. */
static uint64_t header_timeout_ms = 60000, keepalive_timeout_ms = 75000;
static bool plain_accept;  /* --plain-accept: no defer_accept, no on_first_data */

/* One per worker loop (a worker context runs on its own thread). The timer
 * lives while the loop has connections: made by the first, closed after the
 * last (a worker that exits leaves nothing open behind it). */
static _Thread_local struct {
  dl_node_t lists[DL_KINDS]; /* circular, the list head as sentinel */
  uv_timer_t *timer;         /* NULL while there are no connections */
  size_t conns;
} sweep;

static http_conn_t *conn_of_dl(dl_node_t *n) {
  return (http_conn_t *)(void *)((char *)n - offsetof(http_conn_t, dl));
}

static void dl_unlink(dl_node_t *n) {
  if (n->next == NULL)
    return;
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = NULL;
}

/* The timer's due time: the earliest head (false: every list is empty). */
static bool dl_earliest(uint64_t *due) {
  bool any = false;
  for (int k = 0; k < DL_KINDS; k++) {
    dl_node_t *h = &sweep.lists[k];
    if (h->next != h && (!any || h->next->due < *due))
      *due = h->next->due, any = true;
  }
  return any;
}

static void on_sweep(uv_timer_t *t);

static void sweep_arm(uint64_t due) {
  uint64_t now = uv_now(sweep.timer->loop);
  (void)uv_timer_start(sweep.timer, on_sweep, due > now ? due - now : 0, 0);
}

/* Closes every connection whose deadline has passed (their on_close unlinks
 * them, later: unlink first), then waits for the next one. */
static void on_sweep(uv_timer_t *t) {
  uint64_t now = uv_now(t->loop);
  for (int k = 0; k < DL_KINDS; k++) {
    dl_node_t *h = &sweep.lists[k];
    while (h->next != h && h->next->due <= now) {
      http_conn_t *c = conn_of_dl(h->next);
      dl_unlink(&c->dl);
      weft_conn_close(&c->conn);
    }
  }
  uint64_t due = 0;
  if (dl_earliest(&due))
    sweep_arm(due);
}

/* The connection's one deadline: ms from now in list kind (ms 0: none). */
static void deadline(http_conn_t *c, int kind, uint64_t ms) {
  dl_unlink(&c->dl);
  if (ms == 0)
    return;  /* an earlier head that went away: the timer fires early once */
  dl_node_t *h = &sweep.lists[kind];
  c->dl.due = uv_now(c->conn.h.stream.loop) + ms;
  c->dl.prev = h->prev, c->dl.next = h;
  h->prev->next = &c->dl, h->prev = &c->dl;
  if (!uv_is_active((uv_handle_t *)sweep.timer) ||
      uv_timer_get_due_in(sweep.timer) > ms)
    sweep_arm(c->dl.due);
}

static const char OK[] = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world\n";
static const char OK_CLOSE[] =
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\nhello world\n";

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  http_conn_t *c = (http_conn_t *)h;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

/* Answers each complete request head ("\r\n\r\n") in c->buf. A reply is
 * small: weft_conn_try_write sends it at once; if the socket is full we give
 * up on the connection (a real server would queue the rest with uv_write).
 * Returns false when the connection was closed. */
static bool serve(http_conn_t *c) {
  char *end;
  while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) != NULL) {
    size_t head = (size_t)(end + 4 - c->buf);
    bool close = memmem(c->buf, head, "Connection: close", 17) != NULL ||
                 weft_balancer_worker_draining(c->conn.worker);
    uv_buf_t reply = close ? uv_buf_init((char *)OK_CLOSE, sizeof(OK_CLOSE) - 1)
                           : uv_buf_init((char *)OK, sizeof(OK) - 1);
    weft_conn_request_done(&c->conn);
    c->served++;
    if (weft_conn_try_write(&c->conn, &reply, 1) != (int)reply.len || close) {
      weft_conn_close(&c->conn);
      return false;
    }
    memmove(c->buf, c->buf + head, c->len - head);
    c->len -= head;
  }
  if (c->len == sizeof(c->buf)) {  /* a request head larger than the buffer */
    weft_conn_close(&c->conn);
    return false;
  }
  return true;
}

/* Kept alive: no Nagle delay (as nginx). */
static void no_delay(http_conn_t *c) {
  if (!c->nodelay && c->served > 0 && c->conn.h.stream.type == UV_TCP)
    c->nodelay = uv_tcp_nodelay(&c->conn.h.tcp, 1) == 0;
}

/* The deadline for what comes next: the rest of a request head begun, or
 * the next request of an idle connection. */
static void next_deadline(http_conn_t *c) {
  deadline(c, c->len == 0 && c->served > 0 ? DL_KEEPALIVE : DL_HEADER,
           c->len == 0 && c->served > 0 ? keepalive_timeout_ms : header_timeout_ms);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  http_conn_t *c = (http_conn_t *)s;
  if (n < 0) {
    weft_conn_close(&c->conn);
    return;
  }
  if (n == 0)
    return;
  /* The first bytes after an idle keep-alive period start a request: its
   * head must be complete within the header timeout (however slowly the
   * bytes come: no reset per read, so a slow sender cannot hold it open). */
  if (c->len == 0 && c->served > 0)
    deadline(c, DL_HEADER, header_timeout_ms);
  c->len += (size_t)n;
  uint64_t served = c->served;
  if (!serve(c))
    return;
  no_delay(c);
  if (c->served != served)  /* answered: idle until the next request, or one begun */
    next_deadline(c);
}

/* The connection's first bytes, read by the worker as it took the
 * connection (the balancer defers the accept until they came): a short
 * connection is answered and closed here without its handle ever being
 * opened; one that lives on gets on_connection next. */
static void on_first_data(weft_conn_t *conn, const char *data, size_t len) {
  http_conn_t *c = (http_conn_t *)conn;
  if (len > sizeof(c->buf)) {  /* a request head larger than the buffer */
    weft_conn_close(conn);
    return;
  }
  memcpy(c->buf, data, len);
  c->len = len;
  serve(c);
}

static void on_connection(weft_conn_t *conn) {
  http_conn_t *c = (http_conn_t *)conn;
  if (sweep.timer == NULL) {
    sweep.timer = malloc(sizeof(*sweep.timer));
    if (sweep.timer == NULL) {
      weft_conn_close(conn);  /* on_close: not counted in sweep.conns */
      return;
    }
    (void)uv_timer_init(conn->h.stream.loop, sweep.timer);  /* cannot fail */
    for (int k = 0; k < DL_KINDS; k++)
      sweep.lists[k].prev = sweep.lists[k].next = &sweep.lists[k];
  }
  sweep.conns++;
  c->counted = true;
  no_delay(c);
  next_deadline(c);  /* the first request head from the connect, or what on_first_data left */
  uv_read_start(&conn->h.stream, on_alloc, on_read);
}

static void on_close(weft_conn_t *conn) {
  http_conn_t *c = (http_conn_t *)conn;
  if (!c->counted)
    return;  /* never opened here, or no memory for the timer */
  dl_unlink(&c->dl);
  if (--sweep.conns == 0) {
    uv_close((uv_handle_t *)sweep.timer, (uv_close_cb)free);
    sweep.timer = NULL;
  }
}

/* Bytes the kernel holds for us that we have not read yet. */
static bool bytes_waiting(uv_stream_t *s) {
  uv_os_fd_t fd;
  int n = 0;
  return uv_fileno((uv_handle_t *)s, &fd) == 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* Draining: every connection answers its current or next request with
 * Connection: close (see on_read), within the header timeout and the drain
 * deadline. One idle between requests gets DRAIN_IDLE_MS for its next
 * request: closing it at once would race a request already on its way (the
 * client sees the connection close with no answer: one lost request per
 * keep-alive connection per reload, as nginx loses them). One just handed
 * over gets DRAIN_FIRST_MS for its first request. Neither waits for the whole
 * header or keep-alive timeout, so that silent connections do not hold the
 * exit. One whose next request has arrived but is not read yet is answered. */
#define DRAIN_IDLE_MS 200
#define DRAIN_FIRST_MS 500

static void drain_deadline(http_conn_t *c, int kind, uint64_t ms, uint64_t timeout_ms) {
  if (timeout_ms == 0 || timeout_ms > ms)
    deadline(c, kind, ms);
}

static void on_drain(weft_conn_t *conn) {
  http_conn_t *c = (http_conn_t *)conn;
  if (c->len > 0 || bytes_waiting(&conn->h.stream))
    return;
  if (c->served > 0)
    drain_deadline(c, DL_DRAIN_IDLE, DRAIN_IDLE_MS, keepalive_timeout_ms);
  else
    drain_deadline(c, DL_DRAIN_FIRST, DRAIN_FIRST_MS, header_timeout_ms);
}

static int http_worker(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t o = {
      .conn_size = sizeof(http_conn_t),
      .on_connection = on_connection,
      .on_drain = on_drain,
      .on_close = on_close,
      .on_first_data = plain_accept ? NULL : on_first_data,
  };
  return weft_balancer_worker_start(ctx, &o, NULL);
}

/* ---- the demo client: C connections, R requests in all ------------------- */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  char buf[512];
  size_t len;
} client_t;

static struct {
  client_t c[8];
  int left, done, failed, open;
  struct sockaddr_in addr;
  weft_balancer_t *b;
} demo;

static void demo_finished(void);
static void client_start(client_t *c);

static void client_closed(uv_handle_t *h) {
  demo.open--;
  if (demo.left > 0)
    client_start((client_t *)h);
  else if (demo.open == 0)
    demo_finished();
}

static void client_send(client_t *c) {
  /* every 10th request asks for Connection: close, the rest keep alive */
  static char ka[] = "GET / HTTP/1.1\r\nHost: demo\r\n\r\n";
  static char cl[] = "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n";
  if (demo.left == 0) {
    uv_close((uv_handle_t *)&c->tcp, client_closed);
    return;
  }
  uv_buf_t b = demo.left-- % 10 ? uv_buf_init(ka, sizeof(ka) - 1) : uv_buf_init(cl, sizeof(cl) - 1);
  c->len = 0;
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != (int)b.len) {
    demo.failed++;
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
    demo.failed++;
    uv_close((uv_handle_t *)s, client_closed);
    return;
  }
  c->len += (size_t)n;
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (end == NULL || c->len < (size_t)(end + 4 - c->buf) + 12)
    return;  /* the whole reply is 12 body bytes after the head */
  demo.done++;
  if (memmem(c->buf, (size_t)(end - c->buf), "Connection: close", 17))
    uv_close((uv_handle_t *)s, client_closed);
  else
    client_send(c);
}

static void client_connected(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  if (status < 0) {
    demo.failed++;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  client_send(c);
}

static void client_start(client_t *c) {
  demo.open++;
  c->cr.data = c;
  uv_tcp_init(weft_ctx_loop(weft_ctx_current()), &c->tcp);
  uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&demo.addr, client_connected);
}

static void on_ready(weft_balancer_t *b) {
  uv_ip4_addr("127.0.0.1", weft_balancer_port(b), &demo.addr);
  for (int i = 0; i < 8; i++)
    client_start(&demo.c[i]);
}

/* ---- the main program ----------------------------------------------------- */

static uv_signal_t sigint, sigterm, sighup;
static int exit_status;      /* 1 once the balancer gave up */
static unsigned reloads;

static void on_closed(weft_balancer_t *b) {
  uint64_t total = 0;
  for (size_t i = 0; i < weft_balancer_workers(b); i++) {
    weft_balancer_stats_t st;
    weft_balancer_stats(b, i, &st);
    printf("worker %zu: %llu connections, %llu requests, %llu starts\n", i,
           (unsigned long long)st.connections, (unsigned long long)st.requests,
           (unsigned long long)st.starts);
    total += st.requests;
  }
  printf("total: %llu requests\n", (unsigned long long)total);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&sighup, NULL);
}

static void demo_finished(void) {
  printf("demo: %d requests answered, %d failed\n", demo.done, demo.failed);
  weft_balancer_close(demo.b, on_closed);
}

static void on_signal(uv_signal_t *s, int signum) {
  weft_balancer_close(s->data, on_closed);  /* stops listening now */
  printf("signal %d: draining\n", signum);
}

static void on_reloaded(weft_balancer_t *b, int err) {
  reloads += err == 0;
  printf("reload %s: generation %u, worker starts", err ? weft_err_name(err) : "done", reloads);
  for (size_t i = 0; i < weft_balancer_workers(b); i++) {
    weft_balancer_stats_t st;
    weft_balancer_stats(b, i, &st);
    printf(" %llu", (unsigned long long)st.starts);
  }
  printf("\n");
}

/* SIGHUP: a rolling reload (nginx -s reload, pm2 reload). */
static void on_sighup(uv_signal_t *s, int signum) {
  (void)signum;
  int err = weft_balancer_reload(s->data, on_reloaded);
  printf("signal %d: reload%s%s\n", signum, err ? " refused: " : "",
         err ? weft_err_name(err) : "");
}

/* Too many restarts: the listener is already closed (clients are refused).
 * Say why, close, and exit non-zero so that a service manager restarts us. */
static void on_give_up(weft_balancer_t *b, int err, const weft_sup_exit_t *last) {
  fprintf(stderr, "cluster_http: %s: workers keep failing (last: %s); exiting\n",
          weft_err_name(err), last->message);
  exit_status = 1;
  weft_balancer_close(b, on_closed);
}

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--workers N] [--policy round_robin|least_connections|reuseport|shared]\n"
          "       [--processes] [--host H] [--port P] [--header-timeout-ms MS]\n"
          "       [--keepalive-timeout-ms MS] [--max-restarts N] [--restart-period-ms MS]\n"
          "       [--metrics HOST:PORT] [--plain-accept] [--demo]\n", argv0);
  return 2;
}

/* A flag's number, or false if it is missing or not a number. */
static bool num_arg(int argc, char **argv, int *i, unsigned long long *out) {
  if (*i + 1 >= argc)
    return false;
  char *end;
  *out = strtoull(argv[++*i], &end, 10);
  return *argv[*i] != '\0' && *end == '\0';
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);  /* lines reach a pipe as they are printed */
  /* Restart limits for a pool that serves connections. Node's cluster
   * re-forks without limit; Erlang's default (3 in 5 s) suits a tree whose
   * children crash on bugs, not a pool where a worker killed now and then
   * (OOM killer, an operator) is routine. 50 restarts in 10 s rides out a
   * worker killed every 500 ms (20 in 10 s) with room to spare, while a
   * pool whose workers crash as they start (restarting at about 2.5/s each
   * once the back-off, 20 ms doubling to 500 ms, has ramped up) goes past
   * it within about 10 s with 2 workers or more: then we exit non-zero and
   * the service manager, with its own back-off, takes over. */
  weft_balancer_options_t o = {.host = "127.0.0.1", .port = 8080, .workers = 2,
                               .worker = {.entry = http_worker, .entry_name = "http"},
                               .limits = {.max_restarts = 50, .period_ms = 10000,
                                          .backoff_min_ms = 20, .backoff_max_ms = 500}};
  bool demo_mode = false;
  const char *metrics_listen = NULL;
  for (int i = 1; i < argc; i++) {
    unsigned long long v;
    if (strcmp(argv[i], "--demo") == 0)
      demo_mode = true;
    else if (strcmp(argv[i], "--processes") == 0)
      o.worker.kind = WEFT_SUP_PROCESS;
    else if (strcmp(argv[i], "--plain-accept") == 0)
      plain_accept = true;
    else if (strcmp(argv[i], "--workers") == 0 && num_arg(argc, argv, &i, &v) && v > 0 &&
             v < 4096)
      o.workers = (unsigned)v;
    else if (strcmp(argv[i], "--port") == 0 && num_arg(argc, argv, &i, &v) && v < 65536)
      o.port = (int)v;
    else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
      o.host = argv[++i];
    else if (strcmp(argv[i], "--metrics") == 0 && i + 1 < argc)
      metrics_listen = argv[++i];
    else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc &&
             weft_balancer_policy_parse(argv[++i], &o.policy) == 0)
      continue;
    else if (strcmp(argv[i], "--header-timeout-ms") == 0 && num_arg(argc, argv, &i, &v))
      header_timeout_ms = v;
    else if (strcmp(argv[i], "--keepalive-timeout-ms") == 0 && num_arg(argc, argv, &i, &v))
      keepalive_timeout_ms = v;
    else if (strcmp(argv[i], "--max-restarts") == 0 && num_arg(argc, argv, &i, &v) && v > 0 &&
             v <= 1000000)
      o.limits.max_restarts = (uint32_t)v;
    else if (strcmp(argv[i], "--restart-period-ms") == 0 && num_arg(argc, argv, &i, &v) &&
             v > 0 && v <= UINT32_MAX)
      o.limits.period_ms = (uint32_t)v;
    else
      return usage(argv[0]);
  }

  o.defer_accept = !plain_accept;
  weft_runtime_t *rt;
  weft_runtime_options_t ro = {.spin_us = -1};  /* workers mostly wait on sockets */
  if (weft_runtime_new(&rt, &ro) != 0)
    return 1;
  weft_runtime_register(rt, "http", http_worker);
  int code;
  if (weft_runtime_parent_port(rt) != NULL) {  /* a worker process: the parent drains */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);  /* a terminal's hang-up reaches the whole group */
    signal(SIGPIPE, SIG_IGN);
  }
  if (weft_runtime_child_entry(rt, &code) == 0) {  /* we are a worker process */
    weft_runtime_free(rt);
    return code;
  }
  if (o.worker.kind == WEFT_SUP_PROCESS) {
    o.worker.entry = NULL;
    o.worker.args = (const char *const *)argv;  /* the worker parses the same flags */
  }
  o.on_give_up = on_give_up;
  if (demo_mode) {
    o.port = 0;
    o.on_ready = on_ready;
    demo.left = 2000;
  }
  signal(SIGPIPE, SIG_IGN);
  weft_balancer_t *b;
  int err = weft_balancer_new(weft_runtime_main(rt), &o, &b);
  if (err) {
    fprintf(stderr, "cannot listen: %s\n", weft_strerror(err));
    weft_runtime_free(rt);
    return 1;
  }
  demo.b = b;
  if (metrics_listen && (err = metrics_start(weft_runtime_main(rt), metrics_listen)) != 0) {
    fprintf(stderr, "cannot serve metrics on %s: %s\n", metrics_listen, weft_strerror(err));
    exit_status = 1;
    weft_balancer_close(b, NULL);
  }
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_init(loop, &sighup);
  sigint.data = sigterm.data = sighup.data = b;
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sighup, on_sighup, SIGHUP);
  /* Announce only now: the workers serve as soon as they are ready (before
   * this loop runs), and a SIGTERM sent after the announcement must find
   * its handler, not the default action. */
  printf("cluster_http: %u %s workers (%s) on %s:%d\n", (unsigned)weft_balancer_workers(b),
         o.worker.kind == WEFT_SUP_PROCESS ? "process" : "thread",
         weft_balancer_policy_name(o.policy), o.host, weft_balancer_port(b));
  if (demo_mode) {  /* the demo ends by itself; a signal must not keep it alive */
    uv_unref((uv_handle_t *)&sigint);
    uv_unref((uv_handle_t *)&sigterm);
    uv_unref((uv_handle_t *)&sighup);
  }
  weft_runtime_run(rt);
  metrics_stop(weft_runtime_main(rt));
  int rc = weft_runtime_free(rt);
  if (exit_status)
    return exit_status;
  return demo_mode && (demo.failed || demo.done != 2000) ? 1 : rc;
}
