/* test_balancer_first.c: a connection's first bytes (on_first_data,
 * weft_conn_try_write, the balancer's defer_accept) on real loopback TCP,
 * with worker threads of every policy and worker processes (the hand-off:
 * the balancer accepts and passes the fd). This binary is also the worker
 * process (WEFT_CHANNEL_FD set).
 *
 * The worker acts on the first byte of what it reads: 'C' answers "bye
 * <path>\n" and closes; 'K' answers "kept <path> <n>\n" (n the bytes given)
 * and keeps the connection; 'E' on a kept one answers "echo\n". path is 'f'
 * when on_first_data took the bytes, 'h' when the handle read them, so the
 * client checks the path too (worker processes included); thread workers
 * also count in the test's memory:
 * - closed in on_first_data: N clients each get "bye\n" then EOF; with
 *   defer_accept every connection came through on_first_data and none was
 *   opened (on_connection never ran); weft_conn_try_write after the close
 *   fails with WEFT_EINVAL; every connection was reported closed once.
 * - kept: "kept" with the client's bytes counted exactly, then on_connection
 *   follows and the same connection answers "echo\n" through its handle.
 * - a silent client under defer_accept is still accepted (the kernel's
 *   SYN-ACK retransmission) and served through on_connection; one that
 *   connects and closes without a byte is closed by the worker.
 * - worker processes of round_robin (handed fds) give the same answers.
 * - hostile clients (20 KiB of garbage, resets before and after the answer)
 *   leave the workers serving the next client, with nothing leaked.
 * - on a Unix socket (no deferred accept there) both shapes are served and
 *   a kept connection's handle is opened as a pipe after on_first_data.
 *
 * Bounded: fixed counts, every wait with a deadline (socket timeouts, the
 * ktest watchdog). Each test ends with weft_runtime_free() == 0 and nothing
 * leaked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"
#include "weft.h"
#include "weft/balancer.h"

#define N 40

/* ---- the worker ------------------------------------------------------------------- */

static atomic_int n_first, n_first_bytes, n_conn, n_close, n_einval_after_close;

typedef struct {
  weft_conn_t c;
  char buf[64];
} fconn_t;

static void answer(weft_conn_t *c, const char *s) {
  uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
  if (weft_conn_try_write(c, &b, 1) != (int)b.len)
    weft_conn_close(c);
}

/* What the first byte asks for (see the top); the answers to C and K
 * name the path that took them: 'f' on_first_data, 'h' the handle. */
static void act(weft_conn_t *c, const char *data, size_t len, char path) {
  char kept[32];
  switch (data[0]) {
  case 'C':
    answer(c, path == 'f' ? "bye f\n" : "bye h\n");
    weft_conn_close(c);
    if (weft_conn_try_write(c, &(uv_buf_t){.base = kept, .len = 1}, 1) == WEFT_EINVAL)
      atomic_fetch_add(&n_einval_after_close, 1);
    break;
  case 'K':
    snprintf(kept, sizeof(kept), "kept %c %zu\n", path, len);
    answer(c, kept);
    break;
  case 'E':
    answer(c, "echo\n");
    break;
  default:
    weft_conn_close(c);
  }
}

static void on_first(weft_conn_t *c, const char *data, size_t len) {
  atomic_fetch_add(&n_first, 1);
  atomic_fetch_add(&n_first_bytes, (int)len);
  act(c, data, len, 'f');
}

static void f_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  (void)size;
  *b = uv_buf_init(((fconn_t *)(void *)h)->buf, sizeof(((fconn_t *)(void *)h)->buf));
}

static void f_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n < 0)
    weft_conn_close((weft_conn_t *)s);
  else if (n > 0)
    act((weft_conn_t *)s, b->base, (size_t)n, 'h');
}

static void on_conn(weft_conn_t *c) {
  atomic_fetch_add(&n_conn, 1);
  if (uv_read_start(&c->h.stream, f_alloc, f_read) != 0)
    weft_conn_close(c);
}

static void on_close(weft_conn_t *c) {
  (void)c;
  atomic_fetch_add(&n_close, 1);
}

static int first_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t wo = {.conn_size = sizeof(fconn_t),
                                       .on_connection = on_conn,
                                       .on_first_data = on_first,
                                       .on_close = on_close,
                                       .on_drain = weft_conn_close};
  return weft_balancer_worker_start(ctx, &wo, NULL);
}

/* ---- the clients: a thread of blocking sockets ---------------------------------------- */

typedef enum { CLOSE_IN_FIRST, KEPT, SILENT, EMPTY, HOSTILE } shape_t;

static struct {
  weft_balancer_t *b;
  shape_t shape;
  int n;
  int ok, failed;
  char path;  /* the path every answer must name ('f' or 'h'), or 0: either */
  const char *unix_path;  /* listen on this Unix socket instead of TCP */
  bool after_ok;          /* HOSTILE: the well-behaved client after them was served */
  pthread_t thread;
  uv_async_t async;
  bool closed;
} C_;

static bool send_str(int fd, const char *s) {
  return send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s);
}

/* Reads strlen(want) bytes (or until EOF); true if they match want, where
 * '?' stands for the path of the answer: C_.path, or any when that is 0. */
static bool expect(int fd, const char *want) {
  char buf[64];
  size_t len = 0, wl = strlen(want);
  while (len < wl) {
    ssize_t r = recv(fd, buf + len, wl - len, 0);
    if (r <= 0)
      return false;
    len += (size_t)r;
  }
  for (size_t i = 0; i < wl; i++)
    if (want[i] == '?' ? C_.path && buf[i] != C_.path : buf[i] != want[i])
      return false;
  return true;
}

static bool expect_eof(int fd) {
  char c;
  return recv(fd, &c, 1, 0) == 0;
}

/* A blocking connection to the Unix socket path, with 5 s timeouts, or -1. */
static int connect_unix(const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {.tv_sec = 5};
  if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
                  connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* Client i of the hostile shape: 20 KiB of garbage (more than one first
 * read) then a reset; a 'C' request then a reset before reading the
 * answer; a 'K' one then a reset once kept. */
static void hostile(int fd, int i) {
  static char junk[20 * 1024];
  memset(junk, i % 3 == 0 ? 'X' : 'K', sizeof(junk));
  if (i % 3 == 0)
    (void)send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
  else
    (void)send_str(fd, i % 3 == 1 ? "C reset" : "K reset");
  if (i % 3 == 2)
    (void)expect(fd, "kept ? 7\n");
  struct linger l = {.l_onoff = 1, .l_linger = 0};  /* close() sends RST */
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static bool one_client(int port) {
  int fd = -1;
  if (C_.unix_path ? (fd = connect_unix(C_.unix_path)) < 0 : baltest_connect(port, 5000, &fd) != 0)
    return false;
  bool ok = false;
  switch (C_.shape) {
  case CLOSE_IN_FIRST:
    ok = send_str(fd, "C please") && expect(fd, "bye ?\n") && expect_eof(fd);
    break;
  case KEPT:  /* 11 bytes first */
    ok = send_str(fd, "K 123456789") && expect(fd, "kept ? 11\n") && send_str(fd, "E") &&
         expect(fd, "echo\n");
    break;
  case SILENT:  /* accepted without a byte (after about a second with defer_accept) */
    for (int i = 0; i < 500 && atomic_load(&n_conn) == 0; i++) {
      struct timespec d = {0, 10 * 1000 * 1000};  /* polls the worker's count, up to 5 s */
      nanosleep(&d, NULL);
    }
    ok = atomic_load(&n_conn) == 1 && send_str(fd, "C late") && expect(fd, "bye h\n") &&
         expect_eof(fd);
    break;
  case EMPTY:
    break;
  case HOSTILE:  /* served or not: the worker must survive each and close it */
    hostile(fd, C_.ok + C_.failed);
    break;
  }
  close(fd);
  return ok || C_.shape == EMPTY || C_.shape == HOSTILE;
}

static void *clients(void *arg) {
  (void)arg;
  int port = weft_balancer_port(C_.b);
  for (int i = 0; i < C_.n; i++) {
    if (one_client(port))
      C_.ok++;
    else
      C_.failed++;
  }
  if (C_.shape == HOSTILE) {  /* then a well-behaved client is still served */
    C_.shape = CLOSE_IN_FIRST;
    C_.after_ok = one_client(port);
  }
  uv_async_send(&C_.async);
  return NULL;
}

static void on_bal_closed(weft_balancer_t *b) {
  (void)b;
  C_.closed = true;
}

static void on_clients_done(uv_async_t *a) {
  pthread_join(C_.thread, NULL);
  uv_close((uv_handle_t *)a, NULL);
  CHECK(weft_balancer_close(C_.b, on_bal_closed) == 0);
}

static void on_ready(weft_balancer_t *b) {
  (void)b;
  CHECK(pthread_create(&C_.thread, NULL, clients, NULL) == 0);
}

/* n clients of one shape against a balancer of 2 workers (on unix_path if
 * not NULL). */
static void run_on(weft_balancer_policy_t policy, bool processes, bool defer, shape_t shape,
                   int n, const char *unix_path) {
  weft_runtime_t *rt = ktest_new_runtime();
  weft_runtime_register(rt, "first", first_entry);
  memset(&C_, 0, sizeof(C_));
  atomic_store(&n_first, 0), atomic_store(&n_first_bytes, 0), atomic_store(&n_conn, 0);
  atomic_store(&n_close, 0), atomic_store(&n_einval_after_close, 0);
  C_.shape = shape, C_.n = n, C_.unix_path = unix_path;
  C_.path = defer && !unix_path ? 'f' : 0;  /* deferred: every first byte came with the accept */
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  assert_int_equal(uv_async_init(loop, &C_.async, on_clients_done), 0);
  weft_balancer_options_t o = {
      .policy = policy,
      .workers = 2,
      .worker = {.kind = processes ? WEFT_SUP_PROCESS : WEFT_SUP_THREAD,
                 .entry = processes ? NULL : first_entry,
                 .entry_name = "first"},
      .on_ready = on_ready,
      .defer_accept = defer,
      .path = unix_path,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &C_.b), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  fprintf(stderr, "%s%s%s, shape %d: %d/%d clients served; first_data %d (%d bytes), "
          "on_connection %d, closed %d\n", weft_balancer_policy_name(policy),
          processes ? " processes" : "", defer ? " defer_accept" : "", (int)shape, C_.ok, n,
          atomic_load(&n_first), atomic_load(&n_first_bytes), atomic_load(&n_conn),
          atomic_load(&n_close));
  CHECK(C_.closed);
  assert_int_equal(C_.failed, 0);
  assert_int_equal(C_.ok, n);
  ktest_finish_runtime(rt);
}

static void run(weft_balancer_policy_t policy, bool processes, bool defer, shape_t shape,
                int n) {
  run_on(policy, processes, defer, shape, n, NULL);
}

static const weft_balancer_policy_t policies[] = {
    WEFT_BALANCER_ROUND_ROBIN, WEFT_BALANCER_LEAST_CONNECTIONS, WEFT_BALANCER_REUSEPORT,
    WEFT_BALANCER_SHARED};

/* With defer_accept the bytes are there when the worker takes the
 * connection: all of them are served in on_first_data, no handle opened. */
static void close_in_first_data(void **state) {
  (void)state;
  for (int p = 0; p < 4; p++) {
    run(policies[p], false, true, CLOSE_IN_FIRST, N);
    assert_int_equal(atomic_load(&n_first), N);
    assert_int_equal(atomic_load(&n_conn), 0);
    assert_int_equal(atomic_load(&n_close), N);
    assert_int_equal(atomic_load(&n_einval_after_close), N);
  }
}

/* Without it, a connection may be taken before its bytes came: served
 * either way, each exactly once. */
static void close_without_defer(void **state) {
  (void)state;
  for (int p = 0; p < 4; p++) {
    run(policies[p], false, false, CLOSE_IN_FIRST, N);
    assert_int_equal(atomic_load(&n_close), N);
    assert_true(atomic_load(&n_first) <= N);
  }
}

static void kept_goes_on_through_the_handle(void **state) {
  (void)state;
  for (int p = 0; p < 4; p++) {
    run(policies[p], false, true, KEPT, N);
    assert_int_equal(atomic_load(&n_first), N);
    assert_int_equal(atomic_load(&n_first_bytes), 11 * N);
    assert_int_equal(atomic_load(&n_conn), N);
    assert_int_equal(atomic_load(&n_close), N);
  }
}

static void silent_client_is_accepted(void **state) {
  (void)state;
  run(WEFT_BALANCER_SHARED, false, true, SILENT, 1);
  assert_int_equal(atomic_load(&n_first), 0);
  assert_int_equal(atomic_load(&n_conn), 1);
  assert_int_equal(atomic_load(&n_close), 1);
}

/* Connected and closed without a byte: nothing to give on_first_data; the
 * worker reads EOF through the handle and closes it (or, with
 * defer_accept, the FIN is what makes it accepted). */
static void empty_client_is_closed(void **state) {
  (void)state;
  for (int d = 0; d < 2; d++) {
    run(WEFT_BALANCER_LEAST_CONNECTIONS, false, d == 1, EMPTY, N);
    assert_int_equal(atomic_load(&n_first), 0);
    assert_int_equal(atomic_load(&n_close), atomic_load(&n_conn));
  }
}

/* Handed fds (round robin processes: the balancer accepts). */
static void processes_hand_off(void **state) {
  (void)state;
  run(WEFT_BALANCER_ROUND_ROBIN, true, true, CLOSE_IN_FIRST, N);
  run(WEFT_BALANCER_ROUND_ROBIN, true, true, KEPT, N);
  run(WEFT_BALANCER_REUSEPORT, true, true, CLOSE_IN_FIRST, N);
}

/* A Unix socket: no deferred accept there (defer_accept is ignored), so
 * either path may take the bytes; the handle opened after on_first_data is
 * a pipe. */
static void unix_socket(void **state) {
  (void)state;
  char path[64];
  snprintf(path, sizeof(path), "/tmp/weft-first-%d.sock", (int)getpid());
  unlink(path);
  run_on(WEFT_BALANCER_SHARED, false, true, CLOSE_IN_FIRST, N, path);
  assert_int_equal(atomic_load(&n_close), N);
  run_on(WEFT_BALANCER_ROUND_ROBIN, false, true, KEPT, N, path);
  assert_int_equal(atomic_load(&n_conn), N);
  assert_int_equal(atomic_load(&n_close), N);
  assert_true(atomic_load(&n_first) > 0);  /* a Unix client's bytes are there at once */
}

/* Garbage past the first read, resets before and after the answer: the
 * workers survive, close what they took (ASan: nothing leaks) and serve
 * the next client. */
static void hostile_clients(void **state) {
  (void)state;
  for (int p = 0; p < 4; p++) {
    run(policies[p], false, true, HOSTILE, 3 * N);
    assert_true(C_.after_ok);
    assert_int_equal(atomic_load(&n_close), 3 * N + 1);  /* each closed once */
    assert_int_equal(atomic_load(&n_first), 3 * N + 1);  /* each came with bytes */
  }
}

static void try_write_null(void **state) {
  (void)state;
  uv_buf_t b = uv_buf_init((char *)"x", 1);
  assert_int_equal(weft_conn_try_write(NULL, &b, 1), WEFT_EINVAL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  if (getenv("WEFT_CHANNEL_FD") != NULL)  /* a worker process */
    return baltest_worker_main_with("first", first_entry);
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(close_in_first_data),
      T(close_without_defer),
      T(kept_goes_on_through_the_handle),
      T(silent_client_is_accepted),
      T(empty_client_is_closed),
      T(processes_hand_off),
      T(unix_socket),
      T(hostile_clients),
      T(try_write_null),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
