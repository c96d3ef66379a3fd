/* ktest.h: the scaffolding shared by the kernel tests (test_port, test_worker,
 * test_runtime, test_actor, test_transfer, test_backpressure,
 * test_kernel_oom); ktest.c in tests/support/ is linked into every test.
 *
 * Callbacks and foreign threads never call cmocka asserts (they would
 * longjmp across threads or out of uv_run): they record failures with CHECK
 * or CHECK_RC into ktest_failures, and each test ends with
 * ktest_finish_runtime: weft_runtime_free returned 0, no CHECK failed and
 * nothing weft allocated is left. ktest_setup / ktest_teardown (cmocka
 * per-test fixtures) install testutil's counting allocator and run a
 * watchdog thread that aborts a hung test. Sizes shrink under sanitizers, or
 * with WEFT_TEST_SCALE=<factor> (ktest_scaled).
 *
 * ktest.c also holds the one __tsan_default_suppressions of a TSan link that
 * uses ktest. */
#ifndef WEFT_KTEST_H
#define WEFT_KTEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "weft.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* CHECK failures recorded since ktest_setup. */
extern atomic_int ktest_failures;
/* testutil_alloc_outstanding() at ktest_setup (non-zero if an earlier test
 * leaked). */
extern long ktest_alloc_base;

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      atomic_fetch_add(&ktest_failures, 1);                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);      \
    }                                                                            \
  } while (0)

#define CHECK_RC(expr, want)                                                     \
  do {                                                                           \
    int rc_ = (expr);                                                            \
    if (rc_ != (want)) {                                                         \
      atomic_fetch_add(&ktest_failures, 1);                                      \
      fprintf(stderr, "%s:%d: %s returned %s, want %s\n", __FILE__, __LINE__,    \
              #expr, weft_err_name(rc_), weft_err_name(want));                   \
    }                                                                            \
  } while (0)

/* ktest_scale: WEFT_TEST_SCALE if set and positive, else 0.05 under TSan,
 * 0.25 under ASan, 1 otherwise. */
double ktest_scale(void);

/* ktest_scaled: n times ktest_scale(), at least min. */
uint64_t ktest_scaled(uint64_t n, uint64_t min);

/* ktest_init: the start of main(): installs testutil's counting allocator
 * and applies WEFT_TEST_FILTER (a cmocka test-name filter) if set. */
void ktest_init(void);

/* cmocka setup / teardown: allocator, counters and the watchdog. */
int ktest_setup(void **state);
int ktest_teardown(void **state);

/* The end of every test: the runtime goes, nothing failed, nothing leaked. */
void ktest_finish_runtime(weft_runtime_t *rt);

/* For tests whose asserts may stop them half-way with a runtime alive (child
 * processes, exec): ktest_live_runtime_new makes a runtime (asserts) and
 * remembers it, ktest_live_finish forgets it and calls ktest_finish_runtime,
 * and ktest_live_teardown (use it in place of ktest_teardown) frees a runtime
 * the test left behind, so that it does not poison the next test. */
weft_runtime_t *ktest_live_runtime_new(const weft_runtime_options_t *opts);
void ktest_live_finish(weft_runtime_t *rt);
int ktest_live_teardown(void **state);

/* ktest_new_runtime: a runtime with default options (asserts). */
weft_runtime_t *ktest_new_runtime(void);

/* ktest_msg_u64: a message holding v alone (aborts on failure). */
weft_msg_t *ktest_msg_u64(uint64_t v);

/* ktest_msg_value: the u64 of a message built by ktest_msg_u64 (UINT64_MAX
 * and a CHECK failure if it holds none). */
uint64_t ktest_msg_value(weft_msg_t *m);

/* ktest_post_retry: posts m from a thread that has no context (so no drain
 * callback), retrying on EAGAIN with sched_yield. Frees m on another error.
 * Returns the number of EAGAINs met. */
uint64_t ktest_post_retry(weft_port_t *p, weft_msg_t *m);

/* ktest_wait_flag: spins (yielding) until *flag is non-zero, at most 10 s
 * (a flag another thread must set). Returns false on timeout. */
bool ktest_wait_flag(atomic_int *flag);

#endif /* WEFT_KTEST_H */
