/* test_balancer_faults.c: the balancer (actors/balancer*.c) when things go
 * wrong, with real loopback TCP, worker threads and worker processes:
 *
 *   give-up   workers that keep dying (threads that exit soon after they are
 *             ready; processes SIGKILLed by the test) exceed the restart
 *             intensity: on_give_up fires once with WEFT_EGAVEUP and the exit
 *             that broke the limit, and the listener refuses new clients
 *             (ECONNREFUSED within a bounded wait, not a completed handshake
 *             that nobody will ever accept);
 *   drain     weft_balancer_close while a client holds a connection with half
 *             a request sent: a new client is refused at once, and the held
 *             connection still gets its answer (Connection: close) when it
 *             sends the rest;
 *   closed    weft_balancer_worker_start on a parent port already closed
 *             returns WEFT_ECLOSED.
 *
 * Bounded: connects wait at most 2 s, the watchdog aborts a hung test. Each
 * test ends with weft_runtime_free() == 0, no CHECK failed and no weft
 * allocation outstanding. This binary is also the worker process
 * (WEFT_CHANNEL_FD set). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"
#include "weft.h"
#include "weft/balancer.h"
#include "weft/supervisor.h"

static baltest_bal_t *const bal = &baltest_bal;

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- give-up -------------------------------------------------------------------- */

static struct {
  int give_ups, err, probe, exits;
  weft_sup_exit_t last;
  bool listening_at_give_up;
  uv_timer_t killer;     /* processes: SIGKILLs worker 0 while it runs */
  bool killer_on;
  int kills, last_pid;
} gu;

static void on_closed(weft_balancer_t *b) {
  bal->nfinal = weft_balancer_workers(b);
  for (size_t i = 0; i < bal->nfinal && i < 4; i++)
    CHECK(weft_balancer_stats(b, i, &bal->final[i]) == 0);
  bal->closed++;
}

static void gu_give_up(weft_balancer_t *b, int err, const weft_sup_exit_t *last) {
  gu.give_ups++;
  gu.err = err;
  gu.last = *last;
  gu.listening_at_give_up = weft_balancer_listening(b);
  gu.probe = baltest_connect(weft_balancer_port(b), 2000, NULL);
  if (gu.killer_on) {
    gu.killer_on = false;
    uv_close((uv_handle_t *)&gu.killer, NULL);
  }
  CHECK_RC(weft_balancer_reload(b, NULL), WEFT_EGAVEUP);
  CHECK(weft_balancer_close(b, on_closed) == 0);
}

static void gu_exit(weft_balancer_t *b, size_t i, const weft_sup_exit_t *why) {
  (void)b;
  (void)i;
  (void)why;
  gu.exits++;
}

/* A thread worker that serves for 10 ms, then exits with code 9. Its timer
 * lives in the thread (a worker stopped first closes it with its loop). */
static _Thread_local uv_timer_t flaky_timer_h;

static void flaky_timer(uv_timer_t *t) {
  weft_ctx_t *ctx = t->data;
  uv_close((uv_handle_t *)t, NULL);
  weft_worker_exit(ctx, 9);
}

static int flaky_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  int err = baltest_http_entry(ctx, data);
  if (err)
    return err;
  uv_timer_init(weft_ctx_loop(ctx), &flaky_timer_h);
  flaky_timer_h.data = ctx;
  uv_timer_start(&flaky_timer_h, flaky_timer, 10, 0);
  return 0;
}

static void kill_tick(uv_timer_t *t) {
  (void)t;
  weft_balancer_stats_t st;
  if (weft_balancer_stats(bal->b, 0, &st) != 0 || st.pid <= 0 || st.pid == gu.last_pid)
    return;
  gu.last_pid = st.pid;
  if (kill(st.pid, SIGKILL) == 0)
    gu.kills++;
}

static void give_up(weft_balancer_policy_t policy, bool processes) {
  memset(&gu, 0, sizeof(gu));
  weft_runtime_t *rt = baltest_new_runtime();
  weft_balancer_options_t o = {
      .policy = policy,
      .workers = 2,
      .worker = {.kind = processes ? WEFT_SUP_PROCESS : WEFT_SUP_THREAD,
                 .entry = processes ? NULL : flaky_entry,
                 .entry_name = "http"},
      .limits = {.max_restarts = 3, .period_ms = 60000, .backoff_min_ms = 1,
                 .backoff_max_ms = 5},
      .on_worker_exit = gu_exit,
      .on_give_up = gu_give_up,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &bal->b), 0);
  int port = weft_balancer_port(bal->b);
  CHECK(weft_balancer_listening(bal->b));
  CHECK(baltest_connect(port, 2000, NULL) == 0);  /* listening before */
  if (processes) {
    uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &gu.killer);
    uv_timer_start(&gu.killer, kill_tick, 5, 5);
    gu.killer_on = true;
  }
  uint64_t t0 = now_ms();
  assert_int_equal(weft_runtime_run(rt), 0);
  fprintf(stderr, "%s %s: gave up after %llu ms, %d exits, %d kills: %s; probe %s\n",
          weft_balancer_policy_name(policy), processes ? "processes" : "threads",
          (unsigned long long)(now_ms() - t0), gu.exits, gu.kills, gu.last.message,
          weft_err_name(gu.probe));
  assert_int_equal(gu.give_ups, 1);
  assert_int_equal(gu.err, WEFT_EGAVEUP);
  CHECK(!gu.listening_at_give_up);
  CHECK_RC(gu.probe, UV_ECONNREFUSED);
  if (processes)
    CHECK(gu.last.term_signal == SIGKILL);
  else
    CHECK(gu.last.exit_code == 9);
  CHECK(gu.exits >= 4);  /* 3 restarts, then the exit that broke the limit */
  assert_int_equal(bal->closed, 1);
  CHECK_RC(baltest_connect(port, 2000, NULL), UV_ECONNREFUSED);
  ktest_finish_runtime(rt);
}

static void give_up_threads_round_robin(void **state) {
  (void)state;
  give_up(WEFT_BALANCER_ROUND_ROBIN, false);
}

static void give_up_threads_shared(void **state) {
  (void)state;
  give_up(WEFT_BALANCER_SHARED, false);
}

static void give_up_processes_round_robin(void **state) {
  (void)state;
  give_up(WEFT_BALANCER_ROUND_ROBIN, true);
}

static void give_up_processes_reuseport(void **state) {
  (void)state;
  give_up(WEFT_BALANCER_REUSEPORT, true);
}

/* With no on_give_up the balancer closes itself: the loop runs out. */
static void give_up_without_callback(void **state) {
  (void)state;
  memset(&gu, 0, sizeof(gu));
  weft_runtime_t *rt = baltest_new_runtime();
  weft_balancer_options_t o = {
      .workers = 1,
      .worker = {.entry = flaky_entry},
      .limits = {.max_restarts = 2, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .on_worker_exit = gu_exit,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &bal->b), 0);
  int port = weft_balancer_port(bal->b);
  assert_int_equal(weft_runtime_run(rt), 0);
  CHECK(gu.exits >= 3);
  CHECK_RC(baltest_connect(port, 2000, NULL), UV_ECONNREFUSED);
  ktest_finish_runtime(rt);
}

/* ---- drain: refuse at once, finish what is open ------------------------------------ */

static struct {
  uv_async_t async;
  uv_sem_t closing;
  uv_thread_t thread;
  int port;
  int first_probe;       /* the first connect after the close began */
  uint64_t refused_ms;   /* from the close to the first refusal */
  int probes;
  int held_reply;        /* length of the held connection's second reply */
  bool held_close, held_eof;
} dr;

static void dr_async(uv_async_t *a) {
  CHECK(weft_balancer_close(bal->b, on_closed) == 0);
  uv_close((uv_handle_t *)a, NULL);
  uv_sem_post(&dr.closing);
}

static void dr_client(void *arg) {
  (void)arg;
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  static const char half[] = "GET / HTTP/1.1\r\nHost: x\r\n";
  char buf[1024];
  int fd = -1;
  CHECK(baltest_connect(dr.port, 5000, &fd) == 0);
  if (fd < 0) {
    uv_async_send(&dr.async);
    return;
  }
  /* one full request (the connection is with a worker), then half of one */
  CHECK(send(fd, req, sizeof(req) - 1, 0) == (ssize_t)sizeof(req) - 1);
  CHECK(baltest_read_reply(fd, buf, sizeof(buf)) > 0 && strstr(buf, "200 OK") != NULL);
  CHECK(send(fd, half, sizeof(half) - 1, 0) == (ssize_t)sizeof(half) - 1);
  uint64_t t0 = now_ms();
  uv_async_send(&dr.async);
  uv_sem_wait(&dr.closing);
  /* A new client: refused. With shared or reuseport listeners a worker holds
   * a duplicate until its DRAIN arrives (a few ms): retry, bounded. */
  for (dr.probes = 0; dr.probes < 200; dr.probes++) {
    int rc = baltest_connect(dr.port, 2000, NULL);
    if (dr.probes == 0)
      dr.first_probe = rc;
    if (rc == UV_ECONNREFUSED) {
      dr.refused_ms = now_ms() - t0;
      break;
    }
    usleep(5000);  /* bounded polling of an outside effect, not a synchronisation */
  }
  /* The held connection finishes its request. */
  CHECK(send(fd, "\r\n", 2, 0) == 2);
  dr.held_reply = baltest_read_reply(fd, buf, sizeof(buf));
  dr.held_close = dr.held_reply > 0 && strstr(buf, "Connection: close") != NULL &&
                  strstr(buf, "200 OK") != NULL;
  dr.held_eof = recv(fd, buf, sizeof(buf), 0) == 0;
  close(fd);
}

static void dr_ready(weft_balancer_t *b) {
  dr.port = weft_balancer_port(b);
  CHECK(uv_thread_create(&dr.thread, dr_client, NULL) == 0);
}

static void drain_refuses(weft_balancer_policy_t policy) {
  memset(&dr, 0, sizeof(dr));
  weft_runtime_t *rt = baltest_new_runtime();
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  assert_int_equal(uv_async_init(loop, &dr.async, dr_async), 0);
  assert_int_equal(uv_sem_init(&dr.closing, 0), 0);
  weft_balancer_options_t o = {
      .policy = policy,
      .workers = 2,
      .worker = {.entry = baltest_http_entry},
      .drain_timeout_ms = 20000,  /* far beyond the bound below */
      .on_ready = dr_ready,
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &bal->b), 0);
  uint64_t t0 = now_ms();
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&dr.thread);
  uv_sem_destroy(&dr.closing);
  fprintf(stderr, "%s: first probe %s, refused after %llu ms (%d probes), closed in %llu ms\n",
          weft_balancer_policy_name(policy), weft_err_name(dr.first_probe),
          (unsigned long long)dr.refused_ms, dr.probes + 1,
          (unsigned long long)(now_ms() - t0));
  /* Worker threads of these policies accept through the gate, each with a
   * duplicate of the listener until its DRAIN: the balancer shuts the socket
   * itself down, so even the first probe is refused. */
  if (policy != WEFT_BALANCER_REUSEPORT)
    CHECK_RC(dr.first_probe, UV_ECONNREFUSED);
  CHECK(dr.probes < 200 && dr.refused_ms < 1000);
  CHECK(dr.held_close);
  CHECK(dr.held_eof);
  assert_int_equal(bal->closed, 1);
  CHECK(now_ms() - t0 < 10000);  /* not the drain deadline */
  ktest_finish_runtime(rt);
}

static void drain_refuses_round_robin(void **state) {
  (void)state;
  drain_refuses(WEFT_BALANCER_ROUND_ROBIN);
}

static void drain_refuses_shared(void **state) {
  (void)state;
  drain_refuses(WEFT_BALANCER_SHARED);
}

static void drain_refuses_reuseport(void **state) {
  (void)state;
  drain_refuses(WEFT_BALANCER_REUSEPORT);
}

/* ---- reload before the workers are ready ----------------------------------------- */

/* A reload that starts while the current workers are still starting (a
 * SIGHUP right after launch): the current worker's READY must not move the
 * reload on. It did: every such READY started one more incoming worker for
 * the slot, whose own READY then did the same (101 starts for one slot). */
static struct {
  int reloaded, err;
} rl;

static void rl_done(weft_balancer_t *b, int err) {
  rl.reloaded++;
  rl.err = err;
  CHECK(weft_balancer_close(b, on_closed) == 0);
}

static void reload_before_ready(bool processes) {
  memset(&rl, 0, sizeof(rl));
  weft_runtime_t *rt = baltest_new_runtime();
  weft_balancer_options_t o = {
      .workers = 2,
      .worker = {.kind = processes ? WEFT_SUP_PROCESS : WEFT_SUP_THREAD,
                 .entry = processes ? NULL : baltest_http_entry,
                 .entry_name = "http"},
  };
  assert_int_equal(weft_balancer_new(weft_runtime_main(rt), &o, &bal->b), 0);
  assert_int_equal(weft_balancer_reload(bal->b, rl_done), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(rl.reloaded, 1);
  assert_int_equal(rl.err, 0);
  assert_int_equal(bal->closed, 1);
  fprintf(stderr, "reload before ready (%s): starts %llu and %llu\n",
          processes ? "processes" : "threads", (unsigned long long)bal->final[0].starts,
          (unsigned long long)bal->final[1].starts);
  CHECK(bal->final[0].starts == 2 && bal->final[1].starts == 2);
  ktest_finish_runtime(rt);
}

static void reload_before_ready_threads(void **state) {
  (void)state;
  reload_before_ready(false);
}

static void reload_before_ready_processes(void **state) {
  (void)state;
  reload_before_ready(true);
}

/* ---- a worker whose parent port is already closed ------------------------------ */

static _Atomic int closed_start_rc = 1;

static void closed_never_called(weft_conn_t *c) {
  (void)c;
  CHECK(false);
}

static int closed_port_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_close(weft_ctx_parent_port(ctx)), 0);
  weft_balancer_worker_options_t o = {.on_connection = closed_never_called};
  weft_balancer_worker_t *w = NULL;
  atomic_store(&closed_start_rc, weft_balancer_worker_start(ctx, &o, &w));
  CHECK(w == NULL);
  return 0;
}

/* weft_balancer_worker_start on a closed parent port says so: it used to
 * return 0 with a worker that could never be started. */
static void worker_start_on_closed_port(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_worker_options_t wo = {.entry = closed_port_entry};
  weft_worker_t *w;
  assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &wo, &w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(atomic_load(&closed_start_rc), WEFT_ECLOSED);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  if (getenv("WEFT_CHANNEL_FD") != NULL)  /* a worker process */
    return baltest_worker_main();
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(give_up_threads_round_robin),
      T(give_up_threads_shared),
      T(give_up_processes_round_robin),
      T(give_up_processes_reuseport),
      T(give_up_without_callback),
      T(drain_refuses_round_robin),
      T(drain_refuses_shared),
      T(drain_refuses_reuseport),
      T(reload_before_ready_threads),
      T(reload_before_ready_processes),
      T(worker_start_on_closed_port),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
