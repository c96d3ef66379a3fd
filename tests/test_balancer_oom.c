/* test_balancer_oom.c: allocation-failure sweeps of the balancer
 * (actors/balancer*.c; round robin, reuseport): every weft allocation of a
 * short run with thread workers and the HTTP client loop of
 * tests/support/baltest.h fails in turn, and each run still ends cleanly.
 *
 * Bounded loops only: the sweep stops at the first k no run meets; a
 * deadline closes a stuck run and the watchdog aborts a hung test. Each run
 * ends with weft_runtime_free() == 0, no CHECK failed and no weft allocation
 * outstanding. This binary is also the worker process (WEFT_CHANNEL_FD set),
 * like test_balancer's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baltest.h"
#include "ktest.h"
#include "testutil.h"
#include "weft.h"
#include "weft/balancer.h"
#include "weft/supervisor.h"

/* The client loop and the balancer under test (baltest.h). */
static baltest_load_t *const load = &baltest_load;
static baltest_bal_t *const bal = &baltest_bal;

/* ---- allocation failures -------------------------------------------------------- */

/* One run of the sweep. The balancer closes once the clients are through and
 * every worker got ready (or the supervisor gave up); a deadline closes
 * whatever is still open, so that a stuck run fails instead of hanging. */
typedef struct {
  long k;
  uv_timer_t deadline;
  bool ready, served, closing;
  int deadlines, give_ups;
} oom_t;

static oom_t oom;

static void oom_closed(weft_balancer_t *b) {
  (void)b;
  bal->closed++;
  uv_close((uv_handle_t *)&oom.deadline, NULL);
}

static void oom_close(void) {
  if (oom.closing)
    return;
  oom.closing = true;
  CHECK_RC(weft_balancer_close(bal->b, oom_closed), 0);
}

static void oom_on_ready(weft_balancer_t *b) {
  (void)b;
  oom.ready = true;
  if (oom.served)
    oom_close();
}

static void oom_served(void) {
  oom.served = true;
  if (oom.ready)
    oom_close();
}

static void oom_give_up(weft_balancer_t *b, int err, const weft_sup_exit_t *last) {
  (void)b;
  (void)last;
  CHECK(err == WEFT_EGAVEUP);
  oom.give_ups++;
  oom_close();
}

static void oom_deadline(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "k=%ld: deadline %d: ready %d, %d clients open, closing %d\n", oom.k,
          ++oom.deadlines, oom.ready, load->open, oom.closing);
  if (oom.deadlines > 1)
    return;  /* closing does not finish either: the watchdog will tell */
  load->target = load->done;  /* no more requests, no more connections */
  for (int i = 0; i < load->nclients; i++)
    if (load->clients[i].open)
      baltest_client_end(&load->clients[i], true);
  oom_close();
}

typedef struct {
  int runs, new_errors, runs_failed, failed, give_ups;
} sweep_t;

/* One run with allocation k failing: a balancer with 2 thread workers, 4
 * clients with one request each, then close. Returns true if allocation k
 * happened (and failed). */
static bool oom_run(weft_balancer_policy_t policy, bool processes, long k, uint64_t deadline_ms,
                    sweep_t *sw) {
  weft_runtime_t *rt = baltest_new_runtime();
  memset(&oom, 0, sizeof(oom));
  oom.k = k;
  load->target = 4, load->nclients = 4, load->max_connects = 4;
  load->on_finished = oom_served;
  weft_balancer_options_t o = {
      .policy = policy,
      .workers = 2,
      .worker = {.kind = processes ? WEFT_SUP_PROCESS : WEFT_SUP_THREAD,
                 .entry = processes ? NULL : baltest_http_entry,
                 .entry_name = "http"},
      .limits = {.max_restarts = 3, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .drain_timeout_ms = 200,  /* a worker whose DRAIN was lost is stopped after it */
      .on_ready = oom_on_ready,
      .on_give_up = oom_give_up,
  };
  testutil_alloc_fail_after(k);
  int rc = weft_balancer_new(weft_runtime_main(rt), &o, &bal->b);
  if (rc == 0) {
    uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &oom.deadline);
    uv_timer_start(&oom.deadline, oom_deadline, deadline_ms, deadline_ms * 4);
    baltest_load_start(bal->b, bal->host, NULL);
  } else {
    if (rc != WEFT_ENOMEM)
      fprintf(stderr, "k=%ld: weft_balancer_new: %s\n", k, weft_err_name(rc));
    CHECK(bal->b == NULL);
    sw->new_errors++;
  }
  assert_int_equal(weft_runtime_run(rt), 0); /* ends: nothing hangs */
  bool hit = testutil_alloc_fail_pending() == false;
  testutil_alloc_fail_after(-1);
  if (rc == 0) {
    assert_int_equal(bal->closed, 1);
    assert_int_equal(load->done + load->failed, 4);
    CHECK(oom.deadlines == 0);
    CHECK(load->failed <= 1);  /* one allocation costs at most one connection */
  }
  if (!hit) {
    assert_int_equal(rc, 0);
    assert_int_equal(load->failed, 0);
  }
  sw->runs++;
  sw->runs_failed += load->failed > 0;
  sw->failed += load->failed;
  sw->give_ups += oom.give_ups;
  ktest_finish_runtime(rt);
  return hit;
}

/* The k-th weft allocation from weft_balancer_new on fails (in the balancer,
 * its supervisor, a worker starting, a protocol message, a connection), for
 * every k (reps times each: the threads allocate in varying order) until no
 * run meets the failure. weft_balancer_new is all or nothing; a balancer that
 * started gets every worker ready (one whose HELLO or READY was lost is
 * restarted) and closes; nothing hangs or leaks; a client fails only in a
 * run where an allocation failed. */
static void oom_sweep(weft_balancer_policy_t policy, bool processes, int reps) {
  sweep_t sw = {0};
  uint64_t deadline_ms = SANITIZED ? 5000 : 2000;
  uint64_t t0 = uv_hrtime();
  bool hit = true;
  for (long k = 0; hit && k < 2000; k++) {
    hit = false;
    for (int r = 0; r < reps; r++)
      hit |= oom_run(policy, processes, k, deadline_ms, &sw);
  }
  assert_false(hit); /* a run without any failure was reached */
  fprintf(stderr, "  %s %s: %d runs in %.1f s: %d failed in new, %d with a failed client, %d give-ups\n",
          weft_balancer_policy_name(policy), processes ? "processes" : "threads", sw.runs, (double)(uv_hrtime() - t0) / 1e9,
          sw.new_errors, sw.runs_failed, sw.give_ups);
}

static void allocation_failure_sweep(void **state) {
  (void)state;
  oom_sweep(WEFT_BALANCER_ROUND_ROBIN, false, 10);  /* threads: through the gate */
}

/* Round robin hands connections to worker processes: the hand-off's own
 * allocations (CONN messages, the in-flight ring) fail here. */
static void allocation_failure_sweep_processes(void **state) {
  (void)state;
  oom_sweep(WEFT_BALANCER_ROUND_ROBIN, true, 2);
}

static void allocation_failure_sweep_reuseport(void **state) {
  (void)state;
  oom_sweep(WEFT_BALANCER_REUSEPORT, false, 5);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  if (getenv("WEFT_CHANNEL_FD") != NULL)  /* a worker process */
    return baltest_worker_main();
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(allocation_failure_sweep),
      T(allocation_failure_sweep_reuseport),
      T(allocation_failure_sweep_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
