/* test_balancer_reuseport.c: the steering of WEFT_BALANCER_REUSEPORT
 * (actors/balancer_bpf.c) on real loopback TCP, IPv4 and IPv6, with worker
 * threads (and processes). This binary is also the worker process
 * (WEFT_CHANNEL_FD set).
 *
 * - In turn: a client thread opens N connections one after another (each
 *   greeted by its worker, which names itself, before the next is made, so
 *   each was accepted) and keeps them open; the workers' connection counts
 *   (reported every 100 ms: waited for with a deadline) must be exactly N/W
 *   each, for W = 2 and 3, on 127.0.0.1 and on ::1, and connection i must
 *   have gone to the same worker as i - W. The kernel's hash gives exactly
 *   even now and then (60 over 2: about 1 run in 10), in turn never, so these
 *   fail without the program. Also with 2 worker processes (exact counts;
 *   they hold duplicates of the same listeners). Skipped, with the reason,
 *   where the process may not load eBPF.
 * - Fallback: with reuseport_hash set, and with CAP_BPF, CAP_SYS_ADMIN and
 *   CAP_NET_ADMIN dropped from the calling thread's effective set (bpf() is
 *   refused: EPERM), the balancer is not steered, says why, and still serves
 *   every connection.
 * - Drain and rolling reload under a load of short connections with steering
 *   on: no request fails; after worker 0's drain the balancer accepts its
 *   listener's turns itself and hands them to worker 1.
 *
 * Bounded: fixed connection counts, every wait with a deadline, a watchdog
 * (ktest). Each test ends with weft_runtime_free() == 0, no CHECK failed,
 * nothing leaked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"
#include "weft.h"
#include "weft/balancer.h"

#define MAXC 64
#define MAXW 4
#define ID_LEN 17

/* ---- N connections one after another -------------------------------------------- */

typedef struct {
  weft_balancer_t *b;
  const char *host;
  unsigned workers;
  bool processes;         /* worker processes (the "http" entry) */
  int n;
  int fds[MAXC];
  char ids[MAXC][ID_LEN + 1];  /* the worker that greeted each connection */
  int failed;             /* connects or greetings that failed */
  pthread_t thread;
  bool thread_started;
  uv_async_t async;       /* the client is through */
  uv_timer_t timer;       /* waits for the counts */
  int ticks;
  uint64_t conns[MAXW];
  uint64_t total;
  bool closed;
} turn_t;

static turn_t T_;

/* A blocking connection to host:port with 10 s send/receive timeouts (which
 * bound connect too), or -1. */
static int connect_to(const char *host, int port) {
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof(ss));
  if (strchr(host, ':')) {
    len = sizeof(struct sockaddr_in6);
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
      return -1;
  } else {
    len = sizeof(struct sockaddr_in);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0)
      return -1;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* The worker: greets each connection with its own identity (its context's
 * address, 16 hex digits and a newline), then keeps it open until the client
 * closes it or the drain. */
typedef struct {
  weft_conn_t c;
  char buf[64];
} idconn_t;

static void id_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  (void)size;
  idconn_t *ic = (idconn_t *)h;
  *b = uv_buf_init(ic->buf, sizeof(ic->buf));
}

static void id_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n < 0)
    weft_conn_close((weft_conn_t *)s);
}

static void id_on_connection(weft_conn_t *c) {
  char id[32];
  int len = snprintf(id, sizeof(id), "%016llx\n", (unsigned long long)(uintptr_t)weft_ctx_current());
  uv_buf_t b = uv_buf_init(id, (unsigned)len);
  if (uv_try_write(&c->h.stream, &b, 1) != len || uv_read_start(&c->h.stream, id_alloc, id_read))
    weft_conn_close(c);
}

static int id_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_balancer_worker_options_t wo = {.conn_size = sizeof(idconn_t),
                                       .on_connection = id_on_connection,
                                       .on_drain = weft_conn_close};
  return weft_balancer_worker_start(ctx, &wo, NULL);
}

/* The client thread: connection i is made and greeted before i + 1. */
static void *client(void *arg) {
  (void)arg;
  int port = weft_balancer_port(T_.b);  /* set before on_ready, read-only since */
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < T_.n; i++) {
    int fd = T_.fds[i] = connect_to(T_.host, port);
    if (T_.processes) {  /* the test's HTTP server: answered, no identity */
      char buf[256];
      if (fd < 0 || write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1 ||
          baltest_read_reply(fd, buf, sizeof(buf)) <= 0)
        T_.failed++;
      continue;
    }
    size_t len = 0;
    while (fd >= 0 && len < ID_LEN) {
      ssize_t r = recv(fd, T_.ids[i] + len, ID_LEN - len, 0);
      if (r <= 0)
        break;
      len += (size_t)r;
    }
    if (len != ID_LEN || T_.ids[i][ID_LEN - 1] != '\n')
      T_.failed++;
  }
  uv_async_send(&T_.async);
  return NULL;
}

static void on_closed(weft_balancer_t *b) {
  (void)b;
  T_.closed = true;
}

static void finish(void) {
  uv_close((uv_handle_t *)&T_.timer, NULL);
  uv_close((uv_handle_t *)&T_.async, NULL);
  for (int i = 0; i < T_.n; i++)
    if (T_.fds[i] >= 0)
      close(T_.fds[i]);  /* the workers see EOF: their drain ends */
  CHECK(weft_balancer_close(T_.b, on_closed) == 0);
}

/* Every 20 ms, up to 5 s: have the workers reported all N connections? */
static void on_tick(uv_timer_t *t) {
  (void)t;
  T_.total = 0;
  for (unsigned i = 0; i < T_.workers; i++) {
    weft_balancer_stats_t st;
    CHECK(weft_balancer_stats(T_.b, i, &st) == 0);
    T_.conns[i] = st.connections;
    T_.total += st.connections;
  }
  if (T_.total >= (uint64_t)T_.n || ++T_.ticks >= 250)
    finish();
}

static void on_client_done(uv_async_t *a) {
  (void)a;
  pthread_join(T_.thread, NULL);
  T_.thread_started = false;
  uv_timer_start(&T_.timer, on_tick, 0, 20);
}

static void on_turn_ready(weft_balancer_t *b) {
  (void)b;
  CHECK(pthread_create(&T_.thread, NULL, client, NULL) == 0);
  T_.thread_started = true;
}

static bool ipv6_loopback(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in6 a;
  uv_ip6_addr("::1", 0, &a);
  bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

/* Runs the clients against a reuseport balancer of `workers` threads on host;
 * returns whether it was steered (its reason in why). */
static bool run_turns(const char *host, unsigned workers, bool processes, int n, bool hash,
                      char *why, size_t cap) {
  weft_runtime_t *rt = baltest_new_runtime();
  memset(&T_, 0, sizeof(T_));
  T_.host = host, T_.workers = workers, T_.n = n, T_.processes = processes;
  for (int i = 0; i < MAXC; i++)
    T_.fds[i] = -1;
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  assert_int_equal(uv_async_init(loop, &T_.async, on_client_done), 0);
  assert_int_equal(uv_timer_init(loop, &T_.timer), 0);
  weft_balancer_options_t o = {
      .host = host,
      .policy = WEFT_BALANCER_REUSEPORT,
      .workers = workers,
      .worker = {.kind = processes ? WEFT_SUP_PROCESS : WEFT_SUP_THREAD,
                 .entry = processes ? NULL : id_entry,
                 .entry_name = "http"},
      .drain_timeout_ms = 10000,
      .on_ready = on_turn_ready,
      .reuseport_hash = hash,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &T_.b), 0);
  bool steered = weft_balancer_steered(T_.b);
  const char *r = weft_balancer_steer_reason(T_.b);
  CHECK(steered == (r == NULL));
  snprintf(why, cap, "%s", r ? r : "");
  assert_int_equal(weft_runtime_run(rt), 0);
  if (T_.thread_started)
    pthread_join(T_.thread, NULL);
  fprintf(stderr, "%s, %u worker %s, %d connections, %s:", host, workers,
          processes ? "processes" : "threads", n,
          steered ? "steered" : why);
  for (unsigned i = 0; i < workers; i++)
    fprintf(stderr, " %llu", (unsigned long long)T_.conns[i]);
  fprintf(stderr, "\n");
  CHECK(T_.closed);
  CHECK(T_.failed == 0);
  CHECK(T_.total == (uint64_t)n);
  ktest_finish_runtime(rt);
  return steered;
}

static void in_turn(const char *host, unsigned workers, bool processes) {
  if (strchr(host, ':') && !ipv6_loopback()) {
    fprintf(stderr, "skipped: no IPv6 loopback (::1)\n");
    skip();
  }
  char why[256];
  int n = 60;
  if (!run_turns(host, workers, processes, n, false, why, sizeof(why))) {
    fprintf(stderr, "skipped: reuseport is not steered here: %s\n", why);
    skip();
  }
  for (unsigned i = 0; i < workers; i++)
    if (T_.conns[i] != (uint64_t)n / workers)
      fprintf(stderr, "worker %u got %llu connections, want %d (in turn)\n", i,
              (unsigned long long)T_.conns[i], n / (int)workers);
  for (unsigned i = 0; i < workers; i++)
    assert_int_equal(T_.conns[i], n / workers);
  if (processes)
    return;  /* their HTTP server does not name itself */
  /* In turn, not just even: the first W went to W different workers, and
   * connection i to the same one as i - W. */
  for (unsigned i = 0; i < workers; i++)
    for (unsigned j = 0; j < i; j++)
      assert_string_not_equal(T_.ids[i], T_.ids[j]);
  for (int i = (int)workers; i < n; i++)
    if (strcmp(T_.ids[i], T_.ids[i - (int)workers]) != 0)
      fail_msg("connection %d went to worker %s, connection %d to %s: not in turn", i,
               T_.ids[i], i - (int)workers, T_.ids[i - (int)workers]);
}

static void ipv4_two_workers_in_turn(void **state) {
  (void)state;
  in_turn("127.0.0.1", 2, false);
}

static void ipv4_three_workers_in_turn(void **state) {
  (void)state;
  in_turn("127.0.0.1", 3, false);
}

static void ipv6_two_workers_in_turn(void **state) {
  (void)state;
  in_turn("::1", 2, false);
}

static void ipv6_three_workers_in_turn(void **state) {
  (void)state;
  in_turn("::1", 3, false);
}

/* Worker processes get a duplicate of their listener (SCM_RIGHTS): the same
 * socket, so the same turn. */
static void ipv4_two_processes_in_turn(void **state) {
  (void)state;
  in_turn("127.0.0.1", 2, true);
}

/* ---- fallback: the kernel's hash ----------------------------------------------- */

static void hash_when_turned_off(void **state) {
  (void)state;
  char why[256];
  assert_false(run_turns("127.0.0.1", 2, false, 60, true, why, sizeof(why)));
  assert_non_null(strstr(why, "reuseport_hash"));
}

/* Effective capabilities of the calling thread only (capset on a thread
 * changes that thread's credentials): the balancer runs on this thread. */
static int caps(bool get, struct __user_cap_data_struct d[2]) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  return (int)syscall(get ? SYS_capget : SYS_capset, &h, d);
}

static void cap_clear(struct __user_cap_data_struct d[2], int cap) {
  d[cap / 32].effective &= ~(1u << (cap % 32));
}

static void hash_without_capabilities(void **state) {
  (void)state;
  struct __user_cap_data_struct saved[2], d[2];
  assert_int_equal(caps(true, saved), 0);
  memcpy(d, saved, sizeof(d));
  cap_clear(d, CAP_BPF);
  cap_clear(d, CAP_SYS_ADMIN);
  cap_clear(d, CAP_NET_ADMIN);
  assert_int_equal(caps(false, d), 0);
  char why[256];
  bool steered = run_turns("127.0.0.1", 2, false, 60, false, why, sizeof(why));
  assert_int_equal(caps(false, saved), 0);  /* the permitted set still has them */
  assert_false(steered);
  fprintf(stderr, "reason: %s\n", why);
  assert_non_null(strstr(why, "bpf("));
  assert_non_null(strstr(why, strerror(EPERM)));
}

static void not_steered_other_policies(void **state) {
  (void)state;
  weft_runtime_t *rt = baltest_new_runtime();
  weft_balancer_options_t o = {
      .policy = WEFT_BALANCER_SHARED,
      .workers = 1,
      .worker = {.entry = baltest_http_entry},
  };
  weft_balancer_t *b;
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &b), 0);
  CHECK(!weft_balancer_steered(b));
  CHECK(weft_balancer_steer_reason(b) != NULL);
  CHECK(!weft_balancer_steered(NULL));
  CHECK(weft_balancer_close(b, NULL) == 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  ktest_finish_runtime(rt);
}

/* ---- drain and reload with steering on ------------------------------------------- */

static baltest_load_t *const load = &baltest_load;
static baltest_bal_t *const bal = &baltest_bal;
static uint64_t accepted_at_end;
static int reload_at;

static void on_ready(weft_balancer_t *b) { baltest_load_start(b, bal->host, NULL); }

static void start(weft_runtime_t *rt, const char *host) {
  bal->host = host;
  weft_balancer_options_t o = {
      .host = host,
      .policy = WEFT_BALANCER_REUSEPORT,
      .workers = 2,
      .worker = {.entry = baltest_http_entry},
      .drain_timeout_ms = 20000,
      .on_ready = on_ready,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &bal->b), 0);
  if (!weft_balancer_steered(bal->b))
    fprintf(stderr, "note: not steered (%s): the kernel's hash spreads\n",
            weft_balancer_steer_reason(bal->b));
}

static void on_progress_drain(int done) {
  if (done == load->target / 4)
    CHECK(weft_balancer_drain_worker(bal->b, 0) == 0);
  if (done + 1 == load->target)
    accepted_at_end = weft_balancer_accepted(bal->b);
}

static void drain_under_load(const char *host) {
  weft_runtime_t *rt = baltest_new_runtime();
  load->target = SANITIZED ? 300 : 1200, load->nclients = 6, load->keepalive = false;
  load->on_progress = on_progress_drain;
  accepted_at_end = 0;
  start(rt, host);
  bool steered = weft_balancer_steered(bal->b);
  assert_int_equal(weft_runtime_run(rt), 0);
  fprintf(stderr, "%s drain: %d requests, %d failed, balancer accepted %llu; worker 0 %llu, 1 %llu\n",
          host, load->done, load->failed, (unsigned long long)accepted_at_end,
          (unsigned long long)bal->final[0].requests,
          (unsigned long long)bal->final[1].requests);
  assert_int_equal(load->failed, 0);
  assert_int_equal(load->done, load->target);
  /* Listener 0's turns went on after its worker left: the balancer took them. */
  if (steered)
    CHECK(accepted_at_end > 0);
  ktest_finish_runtime(rt);
}

static void drain_ipv4(void **state) {
  (void)state;
  drain_under_load("127.0.0.1");
}

static void drain_ipv6(void **state) {
  (void)state;
  if (!ipv6_loopback()) {
    fprintf(stderr, "skipped: no IPv6 loopback (::1)\n");
    skip();
  }
  drain_under_load("::1");
}

static void on_reloaded(weft_balancer_t *b, int err) {
  (void)b;
  CHECK(err == 0);
  bal->reloaded++;
}

static void on_progress_reload(int done) {
  if (done == reload_at)
    CHECK(weft_balancer_reload(bal->b, on_reloaded) == 0);
  if (bal->reloaded == 0 && done + 50 >= load->target)
    load->target += 100;  /* keep the load on until the reload finished */
}

static void reload_under_load(void **state) {
  (void)state;
  weft_runtime_t *rt = baltest_new_runtime();
  load->target = SANITIZED ? 400 : 1500, load->nclients = 8, load->keepalive = false;
  load->on_progress = on_progress_reload;
  reload_at = load->target / 5;
  start(rt, "127.0.0.1");
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(load->failed, 0);
  assert_int_equal(load->done, load->target);
  assert_int_equal(bal->reloaded, 1);
  CHECK(bal->final[0].starts == 2 && bal->final[1].starts == 2);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  if (getenv("WEFT_CHANNEL_FD") != NULL)  /* a worker process */
    return baltest_worker_main();
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(ipv4_two_workers_in_turn),
      T(ipv4_three_workers_in_turn),
      T(ipv6_two_workers_in_turn),
      T(ipv6_three_workers_in_turn),
      T(ipv4_two_processes_in_turn),
      T(hash_when_turned_off),
      T(hash_without_capabilities),
      T(not_steered_other_policies),
      T(drain_ipv4),
      T(drain_ipv6),
      T(reload_under_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
