/* test_gateway_hostile.c: examples/dist_gateway's front against hostile
 * HTTP clients, as real processes on 127.0.0.1: a back end
 * (`dist_gateway --backend`, 1 SHA-256 round per request) and a front
 * (`--front 0 --workers 2 --header-timeout-ms 500 --idle-timeout-ms 8000`),
 * driven by plain blocking sockets from this process.
 *
 *   huge headers      past 8 KiB: a 431, the connection closed
 *   slowloris         12 connections trickling a header a byte at a time:
 *                     each gets a 408 and a close after the header timeout
 *   garbage           binary bytes: a 400 and a close
 *   unknown method    a 501 and a close
 *   body too large    Content-Length past 16 KiB: a 413 at once (before the
 *                     body is sent), and a chunked body past it: a 413
 *   pipelining        24 requests in one write: 24 answers, in order (each
 *                     path's digest matches the one it gets alone)
 *   mid-request close 300 connections that close with half a request, or
 *                     with a whole one at the back ends: the front's RSS
 *                     stays flat
 *   never reads       a client that pipelines requests and reads no answer:
 *                     the front stops reading it (its sends block, and the
 *                     front's receive queue for it stays put with requests
 *                     in it, read from /proc/net/tcp), closes it after the
 *                     idle timeout, and its RSS stays flat
 * During each attack a well-behaved client is answered (asserted), and the
 * front is still up at the end of each test. Bounded: every wait has a
 * deadline (a hang is a failure); the processes are SIGKILLed at the end.
 * Skipped when the example is not built (no http-parser). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baltest.h"
#include "weft.h"

#define EXE WEFT_TEST_BINARY_DIR "/examples/dist_gateway"
#define HEADER_TIMEOUT_MS 500

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RSS_SLACK_KB (96 * 1024) /* a sanitizer's quarantine and shadow grow by themselves */
#else
#define RSS_SLACK_KB (16 * 1024)
#endif

extern char **environ;

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- the processes -------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int out; /* its stdout and stderr */
  char buf[16384];
  size_t len;
} proc_t;

static proc_t backend, front;
static int front_port;

/* Reads p's output until needle has appeared count times, waiting at most
 * timeout_ms. */
static bool wait_output(proc_t *p, const char *needle, int count, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    p->buf[p->len] = 0;
    int seen = 0;
    for (const char *at = p->buf; (at = strstr(at, needle)) != NULL; at++)
      seen++;
    if (seen >= count)
      return true;
    uint64_t now = now_ms();
    struct pollfd pf = {.fd = p->out, .events = POLLIN};
    if (now >= end || poll(&pf, 1, (int)(end - now)) <= 0)
      return false;
    if (p->len + 1 >= sizeof(p->buf))
      return false;
    ssize_t n = read(p->out, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
    if (n <= 0)
      return false;
    p->len += (size_t)n;
  }
}

static void spawn(proc_t *p, const char *const *argv) {
  int fds[2];
  assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  memset(p, 0, sizeof(*p));
  assert_int_equal(posix_spawn(&p->pid, EXE, &fa, NULL, (char *const *)argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  p->out = fds[0];
}

static void stop(proc_t *p) {
  if (p->pid <= 0)
    return;
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  close(p->out);
  p->pid = 0;
}

static bool alive(const proc_t *p) { return p->pid > 0 && kill(p->pid, 0) == 0 &&
                                            waitpid(p->pid, NULL, WNOHANG) == 0; }

/* VmRSS of p in KiB. */
static long rss_kb(const proc_t *p) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  if (f)
    fclose(f);
  return kb;
}

static int group_setup(void **state) {
  (void)state;
  if (access(EXE, X_OK) != 0)
    return 0; /* each test skips */
  const char *bargv[] = {EXE, "--backend", "tcp://127.0.0.1:0", "b1", "--work", "1", NULL};
  spawn(&backend, bargv);
  if (!wait_output(&backend, "listening on ", 1, 15000))
    return -1;
  char url[64];
  const char *at = strstr(backend.buf, "tcp://");
  if (at == NULL || sscanf(at, "%63[^ \n]", url) != 1)
    return -1;
  char ht[16];
  snprintf(ht, sizeof(ht), "%d", HEADER_TIMEOUT_MS);
  const char *fargv[] = {EXE, "--front", "0", "--workers", "2", "--header-timeout-ms", ht,
                         "--idle-timeout-ms", "8000", "--backends", url, NULL};
  spawn(&front, fargv);
  if (!wait_output(&front, "front listening on http://127.0.0.1:", 1, 15000) ||
      !wait_output(&front, "provider b1 up", 2, 15000)) {
    fprintf(stderr, "front said:\n%s\n", front.buf);
    return -1;
  }
  front_port = atoi(strstr(front.buf, "127.0.0.1:") + 10);
  return front_port > 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  stop(&front);
  stop(&backend);
  return 0;
}

static void need_front(void) {
  if (access(EXE, X_OK) != 0)
    skip();
  assert_true(front_port > 0);
}

/* ---- clients ------------------------------------------------------------------------ */

static const char GOOD[] = "GET /good HTTP/1.1\r\nHost: t\r\n\r\n";

static int connect_front(void) {
  int fd = -1;
  assert_int_equal(baltest_connect(front_port, 5000, &fd), 0);
  return fd;
}

static bool send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k <= 0)
      return false;
    c += k;
    n -= (size_t)k;
  }
  return true;
}

/* A well-behaved client: a new connection, one request, a 200. */
static void good_client_is_served(const char *during) {
  int fd = connect_front();
  char buf[2048];
  bool ok = send_all(fd, GOOD, sizeof(GOOD) - 1) && baltest_read_reply(fd, buf, sizeof(buf)) > 0 &&
            strncmp(buf, "HTTP/1.1 200 ", 13) == 0;
  close(fd);
  if (!ok)
    fprintf(stderr, "a well-behaved client was not served during %s\n", during);
  assert_true(ok);
}

/* Reads everything until the front closes fd (EOF or reset) into buf; the
 * bytes read, or -1 if it stays open past timeout_ms. */
static int read_until_closed(int fd, char *buf, size_t cap, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  size_t len = 0;
  for (;;) {
    uint64_t now = now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&p, 1, (int)(end - now)) <= 0) {
      buf[len < cap ? len : cap - 1] = 0;
      return -1;
    }
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0)
      break;
    size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
    memcpy(buf + len, tmp, take);
    len += take;
  }
  buf[len] = 0;
  return (int)len;
}

/* Sends req (len bytes) on a new connection, checks that a well-behaved
 * client is served meanwhile, then that the answer starts with status and
 * the front closes the connection. */
static void expect_status_and_close(const void *req, size_t len, const char *status,
                                    const char *what) {
  int fd = connect_front();
  send_all(fd, req, len); /* may stop short: the front may answer and close first */
  good_client_is_served(what);
  char buf[4096];
  int n = read_until_closed(fd, buf, sizeof(buf), 5000);
  close(fd);
  fprintf(stderr, "%s: %.*s (then %s)\n", what, (int)strcspn(buf, "\r"), buf,
          n >= 0 ? "closed" : "still open");
  assert_true(n >= 0);
  assert_true(strncmp(buf, status, strlen(status)) == 0);
  good_client_is_served(what);
}

/* ---- one-shot attacks --------------------------------------------------------------- */

static void huge_headers_get_431_and_close(void **state) {
  (void)state;
  need_front();
  size_t cap = 64 * 1024;
  char *req = malloc(cap);
  assert_non_null(req);
  int n = snprintf(req, cap, "GET / HTTP/1.1\r\nHost: t\r\n");
  for (int i = 0; n < 20000; i++)
    n += snprintf(req + n, cap - (size_t)n, "X-Filler-%d: %0200d\r\n", i, 0);
  n += snprintf(req + n, cap - (size_t)n, "\r\n");
  expect_status_and_close(req, (size_t)n, "HTTP/1.1 431 ", "20 KB of headers");
  free(req);
}

static void garbage_gets_400_and_close(void **state) {
  (void)state;
  need_front();
  unsigned char junk[512];
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (unsigned char)(i * 37 + 11); /* not HTTP: starts with a control byte */
  expect_status_and_close(junk, sizeof(junk), "HTTP/1.1 400 ", "binary garbage");
  static const char half_garbage[] = "GET / HTTP/1.1\r\nHost t\r\n\r\n"; /* no colon */
  expect_status_and_close(half_garbage, sizeof(half_garbage) - 1, "HTTP/1.1 400 ",
                          "a header without a colon");
}

static void unknown_method_gets_501_and_close(void **state) {
  (void)state;
  need_front();
  static const char req[] = "FROB / HTTP/1.1\r\nHost: t\r\n\r\n";
  expect_status_and_close(req, sizeof(req) - 1, "HTTP/1.1 501 ", "method FROB");
}

static void body_past_limit_gets_413(void **state) {
  (void)state;
  need_front();
  /* Announced: answered before the body is sent (we send none of it). */
  static const char big[] = "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
  expect_status_and_close(big, sizeof(big) - 1, "HTTP/1.1 413 ", "Content-Length 10 MB");
  /* Chunked past 16 KiB. */
  size_t cap = 40 * 1024;
  char *req = malloc(cap);
  assert_non_null(req);
  int n = snprintf(req, cap, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 5; i++) {
    n += snprintf(req + n, cap - (size_t)n, "1000\r\n");
    memset(req + n, 'x', 4096);
    n += 4096;
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
  }
  n += snprintf(req + n, cap - (size_t)n, "0\r\n\r\n");
  expect_status_and_close(req, (size_t)n, "HTTP/1.1 413 ", "a chunked body of 20 KB");
  free(req);
}

/* ---- slowloris ------------------------------------------------------------------------ */

#define NSLOW 12

static void slowloris_is_cut_off_after_the_header_timeout(void **state) {
  (void)state;
  need_front();
  int fd[NSLOW];
  bool open[NSLOW], got408[NSLOW];
  uint64_t t0 = now_ms(), closed_at[NSLOW];
  static const char line[] = "GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: ";
  for (int i = 0; i < NSLOW; i++) {
    fd[i] = connect_front();
    open[i] = true;
    got408[i] = false;
    closed_at[i] = 0;
  }
  /* One byte per connection every 50 ms (the attack's pace: no waiting on the
   * front is done by sleeping), for at most 10 s; a good client every 10
   * rounds. The header never ends. */
  int nopen = NSLOW, rounds = 0;
  size_t sent = 0;
  while (nopen > 0 && now_ms() - t0 < 10000) {
    for (int i = 0; i < NSLOW; i++) {
      if (!open[i])
        continue;
      char b = sent < sizeof(line) - 1 ? line[sent] : 'a';
      struct pollfd p = {.fd = fd[i], .events = POLLIN};
      bool readable = poll(&p, 1, 0) > 0;
      if (readable || send(fd[i], &b, 1, MSG_NOSIGNAL) != 1) {
        char buf[1024];
        int n = read_until_closed(fd[i], buf, sizeof(buf), 2000);
        got408[i] = n > 0 && strncmp(buf, "HTTP/1.1 408 ", 13) == 0;
        closed_at[i] = now_ms() - t0;
        open[i] = false;
        nopen--;
        close(fd[i]);
      }
    }
    sent++;
    if (++rounds % 10 == 0)
      good_client_is_served("a slowloris attack");
    poll(NULL, 0, 50);
  }
  int n408 = 0;
  uint64_t last = 0;
  for (int i = 0; i < NSLOW; i++) {
    n408 += got408[i];
    last = closed_at[i] > last ? closed_at[i] : last;
    if (open[i])
      close(fd[i]);
  }
  fprintf(stderr, "slowloris: %d of %d connections cut off (%d with a 408), the last after "
          "%llu ms (header timeout %d ms), %zu bytes trickled each\n", NSLOW - nopen, NSLOW,
          n408, (unsigned long long)last, HEADER_TIMEOUT_MS, sent);
  assert_int_equal(nopen, 0);
  assert_int_equal(n408, NSLOW);
  good_client_is_served("after a slowloris attack");
}

/* ---- pipelining ------------------------------------------------------------------------- */

#define NPIPE 24

/* The body (digest) of the answer to GET path, alone on its connection. */
static void digest_of(const char *path, char *out, size_t cap) {
  int fd = connect_front();
  char req[128], buf[2048];
  snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
  assert_true(send_all(fd, req, strlen(req)));
  assert_true(read_until_closed(fd, buf, sizeof(buf), 5000) > 0);
  close(fd);
  const char *body = strstr(buf, "\r\n\r\n");
  assert_non_null(body);
  snprintf(out, cap, "%s", body + 4);
}

static void pipelined_requests_answered_in_order(void **state) {
  (void)state;
  need_front();
  char all[NPIPE * 96];
  size_t len = 0;
  for (int i = 0; i < NPIPE; i++)
    len += (size_t)snprintf(all + len, sizeof(all) - len, "GET /p%d HTTP/1.1\r\nHost: t\r\n%s\r\n",
                            i, i == NPIPE - 1 ? "Connection: close\r\n" : "");
  int fd = connect_front();
  assert_true(send_all(fd, all, len));
  static char got[NPIPE * 1024];
  int n = read_until_closed(fd, got, sizeof(got), 10000);
  close(fd);
  assert_true(n > 0);
  int answered = 0, in_order = 0;
  const char *at = got;
  for (int i = 0; i < NPIPE; i++) {
    const char *head = strstr(at, "HTTP/1.1 200 ");
    const char *body = head ? strstr(head, "\r\n\r\n") : NULL;
    if (body == NULL)
      break;
    body += 4;
    answered++;
    char path[16], want[128];
    snprintf(path, sizeof(path), "/p%d", i);
    digest_of(path, want, sizeof(want));
    in_order += strncmp(body, want, strlen(want)) == 0;
    at = body;
  }
  fprintf(stderr, "pipelining: %d requests in one write, %d answered, %d in order\n", NPIPE,
          answered, in_order);
  assert_int_equal(answered, NPIPE);
  assert_int_equal(in_order, NPIPE);
}

/* ---- clients that go, or never read --------------------------------------------------- */

static void clients_closing_mid_request_leave_rss_flat(void **state) {
  (void)state;
  need_front();
  static const char half[] = "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc";
  static const char whole[] = "GET /gone HTTP/1.1\r\nHost: t\r\n\r\n";
  long before = 0;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 100; i++) {
      int fd = connect_front();
      if (i % 2)
        send_all(fd, half, sizeof(half) - 1); /* half a request, then gone */
      else
        send_all(fd, whole, sizeof(whole) - 1); /* gone while it is at the back end */
      close(fd);
    }
    good_client_is_served("clients closing mid-request");
    if (round == 0)
      before = rss_kb(&front); /* after the first round: allocators warmed up */
  }
  long after = rss_kb(&front);
  fprintf(stderr, "mid-request closes: 300 connections, front RSS %ld -> %ld KiB\n", before,
          after);
  assert_true(alive(&front));
  assert_true(after - before < RSS_SLACK_KB);
}

/* The receive queue (bytes not read yet) of the front's end of the
 * connection from client port cport, from /proc/net/tcp; -1 if not found. */
static long front_rx_queue(int cport) {
  FILE *f = fopen("/proc/net/tcp", "r");
  char line[512];
  long rx = -1;
  while (f && fgets(line, sizeof(line), f)) {
    unsigned lport, rport;
    unsigned long tx, rxq;
    if (sscanf(line, " %*d: %*8x:%x %*8x:%x %*x %lx:%lx", &lport, &rport, &tx, &rxq) == 4 &&
        (int)lport == front_port && (int)rport == cport) {
      rx = (long)rxq;
      break;
    }
  }
  if (f)
    fclose(f);
  return rx;
}

static void client_that_never_reads_is_not_read_either(void **state) {
  (void)state;
  need_front();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", front_port, &a);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  long before = rss_kb(&front);
  struct sockaddr_in me;
  socklen_t mlen = sizeof(me);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&me, &mlen), 0);
  int cport = ntohs(me.sin_port);
  static const char req[] = "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n";
  /* Pipeline requests and read nothing, sending whenever the socket takes
   * more. The front has stopped reading us once its receive queue for us
   * (from /proc/net/tcp, every 100 ms) holds requests and stays put for 1 s
   * while we keep trying (a front that reads on takes more, and we send
   * more). Then we stop, and the front, stalled past the idle timeout (8 s
   * here), closes the connection (it leaves /proc/net/tcp). At most 40 s. */
  uint64_t t0 = now_ms(), nreq = 0, next_good = t0 + 500, next_sample = t0 + 100;
  uint64_t since = t0, stable_at = 0, gone_at = 0;
  long rx = -2, stable_rx = -1;
  size_t off = 0;
  while (now_ms() - t0 < 40000) {
    ssize_t k = stable_at ? -1 : send(fd, req + off, sizeof(req) - 1 - off, MSG_NOSIGNAL);
    if (k > 0) {
      off += (size_t)k;
      if (off == sizeof(req) - 1)
        off = 0, nreq++;
      if (now_ms() < next_sample)
        continue;
    } else if (!stable_at) {
      assert_true(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
    if (now_ms() >= next_good && !stable_at) {
      good_client_is_served("a client that never reads");
      next_good = now_ms() + 500;
    }
    if (k <= 0) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, (int)(next_sample > now_ms() ? next_sample - now_ms() : 0));
    }
    if (now_ms() < next_sample)
      continue;
    next_sample = now_ms() + 100;
    long r = front_rx_queue(cport);
    if (r < 0) {
      gone_at = now_ms() - t0;
      break;
    }
    if (r != rx)
      rx = r, since = now_ms();
    else if (r > 0 && !stable_at && now_ms() - since >= 1000)
      stable_rx = r, stable_at = now_ms() - t0;
  }
  uint64_t took = stable_at;
  long after = rss_kb(&front);
  good_client_is_served("a client that never reads");
  fprintf(stderr, "never reads: %llu requests sent; the front left %ld bytes of them unread "
          "for 1 s at %llu ms (%s), and closed the connection at %llu ms; front RSS %ld -> "
          "%ld KiB\n",
          (unsigned long long)nreq, stable_rx, (unsigned long long)took,
          stable_at ? "it stopped reading" : "it never stopped reading",
          (unsigned long long)gone_at, before, after);
  close(fd);
  assert_true(stable_at > 0); /* requests left unread: the front stopped reading */
  assert_true(gone_at > 0);   /* and it closed the stalled connection */
  assert_true(after - before < RSS_SLACK_KB);
  assert_true(alive(&front));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(huge_headers_get_431_and_close),
      cmocka_unit_test(garbage_gets_400_and_close),
      cmocka_unit_test(unknown_method_gets_501_and_close),
      cmocka_unit_test(body_past_limit_gets_413),
      cmocka_unit_test(slowloris_is_cut_off_after_the_header_timeout),
      cmocka_unit_test(pipelined_requests_answered_in_order),
      cmocka_unit_test(clients_closing_mid_request_leave_rss_flat),
      cmocka_unit_test(client_that_never_reads_is_not_read_either),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
