/* test_balancer_fair.c: the accept gate of shared worker threads
 * (actors/balancer_gate.c) on real loopback TCP.
 *
 * - A burst: a client thread opens N keep-alive connections at once and gets
 *   one answer on each, so each was accepted and served; then the workers'
 *   connection counts are read (they report every 100 ms: waited for, with a
 *   deadline) and busiest/quietest must be <= 1.10. Without the gate the
 *   worker that wakes first takes most of the queue (libuv accepts until
 *   EAGAIN).
 * - A blocked worker: worker 0's loop is busy for seconds (a long CPU turn)
 *   while the client opens 16 connections: the gate would hold worker 1 at
 *   worker 0's count + 1, so it gives up waiting (its patience) and every
 *   request is answered while worker 0 is still blocked.
 *
 * Bounded: fixed connection counts, every wait with a deadline, a watchdog
 * (ktest). Each test ends with weft_runtime_free() == 0, no CHECK failed,
 * nothing leaked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"
#include "weft.h"
#include "weft/balancer.h"

#define MAXC 128

typedef struct {
  weft_balancer_t *b;
  unsigned workers;
  int n;                  /* connections the client opens */
  bool block_first;       /* block worker 0 before the client starts */
  int fds[MAXC];
  int failed;             /* connects or answers that failed */
  int blocks_done_after;  /* baltest_blocks_done once every answer was read */
  pthread_t thread;
  bool thread_started;
  uv_async_t async;       /* the client is through */
  uv_timer_t timer;       /* waits for the counts */
  int ticks;
  uint64_t conns[8];
  uint64_t total;
  bool closed;
} fair_t;

static fair_t F;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The client thread: every connection first (a burst in the accept queue),
 * then a request and its answer on each. */
static void *client(void *arg) {
  (void)arg;
  if (F.block_first) {  /* bounded wait for worker 0 to be inside its block */
    int64_t end = now_ms() + 10000;
    while (!atomic_load(&baltest_blocking) && now_ms() < end)
      usleep(1000);
    CHECK(atomic_load(&baltest_blocking));
  }
  int port = weft_balancer_port(F.b);  /* set before on_ready, read-only since */
  for (int i = 0; i < F.n; i++) {
    F.fds[i] = -1;
    if (baltest_connect(port, 10000, &F.fds[i]) != 0)
      F.failed++;
  }
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < F.n; i++) {
    char buf[256];
    if (F.fds[i] < 0 || write(F.fds[i], req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1 ||
        baltest_read_reply(F.fds[i], buf, sizeof(buf)) <= 0)
      F.failed++;
  }
  F.blocks_done_after = atomic_load(&baltest_blocks_done);
  uv_async_send(&F.async);
  return NULL;
}

static void on_closed(weft_balancer_t *b) {
  (void)b;
  F.closed = true;
}

static void finish(void) {
  uv_close((uv_handle_t *)&F.timer, NULL);
  uv_close((uv_handle_t *)&F.async, NULL);
  for (int i = 0; i < F.n; i++)
    if (F.fds[i] >= 0)
      close(F.fds[i]);  /* the workers see EOF: their drain ends */
  CHECK(weft_balancer_close(F.b, on_closed) == 0);
}

/* Every 20 ms, up to 5 s: have the workers reported all N connections? */
static void on_tick(uv_timer_t *t) {
  (void)t;
  F.total = 0;
  for (unsigned i = 0; i < F.workers; i++) {
    weft_balancer_stats_t st;
    CHECK(weft_balancer_stats(F.b, i, &st) == 0);
    F.conns[i] = st.connections;
    F.total += st.connections;
  }
  if (F.total >= (uint64_t)F.n || ++F.ticks >= 250)
    finish();
}

static void on_client_done(uv_async_t *a) {
  (void)a;
  pthread_join(F.thread, NULL);
  F.thread_started = false;
  uv_timer_start(&F.timer, on_tick, 0, 20);
}

static void on_ready(weft_balancer_t *b) {
  if (F.block_first) {
    weft_sup_child_t *c = weft_sup_child_at(weft_balancer_supervisor(b), 0);
    weft_msg_t *m;
    CHECK(weft_msg_new(&m) == 0);
    weft_msg_put_map(m, 1);
    weft_msg_put_u64(m, "block", 3000);
    CHECK(weft_port_post(weft_sup_child_port(c), m) == 0);
  }
  CHECK(pthread_create(&F.thread, NULL, client, NULL) == 0);
  F.thread_started = true;
}

static void run(unsigned workers, int n, bool block_first) {
  weft_runtime_t *rt = baltest_new_runtime();
  memset(&F, 0, sizeof(F));
  atomic_store(&baltest_blocking, 0);
  atomic_store(&baltest_blocks_done, 0);
  F.workers = workers, F.n = n, F.block_first = block_first;
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  assert_int_equal(uv_async_init(loop, &F.async, on_client_done), 0);
  assert_int_equal(uv_timer_init(loop, &F.timer), 0);
  weft_balancer_options_t o = {
      .policy = WEFT_BALANCER_SHARED,
      .workers = workers,
      .worker = {.entry = baltest_http_entry},
      .drain_timeout_ms = 10000,
      .on_ready = on_ready,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &F.b), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  if (F.thread_started)
    pthread_join(F.thread, NULL);
  CHECK(F.closed);
  CHECK(F.failed == 0);
  CHECK(F.total == (uint64_t)n);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (unsigned i = 0; i < workers; i++) {
    lo = F.conns[i] < lo ? F.conns[i] : lo;
    hi = F.conns[i] > hi ? F.conns[i] : hi;
  }
  fprintf(stderr, "%u workers, %d connections:", workers, n);
  for (unsigned i = 0; i < workers; i++)
    fprintf(stderr, " %llu", (unsigned long long)F.conns[i]);
  fprintf(stderr, " (busiest/quietest %.3f); blocks done when answered: %d\n",
          lo ? (double)hi / (double)lo : 1e9, F.blocks_done_after);
  if (block_first) {
    CHECK(F.blocks_done_after == 0);  /* all answered while worker 0 was blocked */
    CHECK(F.conns[1] == (uint64_t)n);
  } else {
    CHECK(lo > 0 && (double)hi / (double)lo <= 1.10);
  }
  ktest_finish_runtime(rt);
}

static void burst_two_workers(void **state) {
  (void)state;
  run(2, 64, false);
}

static void burst_three_workers(void **state) {
  (void)state;
  run(3, 66, false);
}

static void blocked_worker_does_not_stall_the_other(void **state) {
  (void)state;
  run(2, 16, true);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(burst_two_workers),
      T(burst_three_workers),
      T(blocked_worker_does_not_stall_the_other),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
