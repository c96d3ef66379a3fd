/* ktest.c: the kernel-test scaffolding of ktest.h. ktest_failures is bumped
 * from any thread (atomic); ktest_alloc_base and the watchdog belong to the
 * test's main thread, which starts the watchdog in ktest_setup and joins it
 * in ktest_teardown; so does the runtime ktest_live_runtime_new remembers.
 * One test runs at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdlib.h>

#include "ktest.h"
#include "testutil.h"

#if defined(__SANITIZE_THREAD__)
/* Debian's libuv is not built with TSan and closes descriptors with a raw
 * close syscall that TSan does not see; when another thread's new loop gets
 * the same descriptor number, TSan reports a race on the descriptor. Only
 * those reports are suppressed. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
  return "race:epoll_create1\nrace:eventfd\nrace:pipe2\n";
}
#endif

atomic_int ktest_failures;
long ktest_alloc_base;

double ktest_scale(void) {
  const char *s = getenv("WEFT_TEST_SCALE");
  if (s != NULL && *s != '\0') {
    double v = strtod(s, NULL);
    if (v > 0)
      return v;
  }
#if defined(__SANITIZE_THREAD__)
  return 0.05; /* TSan: 5-15x slower, and 2 cores */
#elif defined(__SANITIZE_ADDRESS__)
  return 0.25;
#else
  return 1.0;
#endif
}

uint64_t ktest_scaled(uint64_t n, uint64_t min) {
  uint64_t v = (uint64_t)((double)n * ktest_scale());
  return v < min ? min : v;
}

/* ---- the watchdog --------------------------------------------------------- */

typedef struct {
  uv_thread_t tid;
  uv_mutex_t mu;
  uv_cond_t cv;
  bool done;
} watchdog_t;

static watchdog_t watchdog;

static void watchdog_main(void *arg) {
  watchdog_t *w = arg;
  uint64_t limit = (SANITIZED ? 200ull : 60ull) * 1000000000ull;
  uint64_t deadline = uv_hrtime() + limit;
  uv_mutex_lock(&w->mu);
  while (!w->done) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) {
      fprintf(stderr, "watchdog: test still running after %llu s: abort\n",
              (unsigned long long)(limit / 1000000000ull));
      abort();
    }
    (void)uv_cond_timedwait(&w->cv, &w->mu, deadline - now);
  }
  uv_mutex_unlock(&w->mu);
}

void ktest_init(void) {
  testutil_alloc_install();
  const char *filter = getenv("WEFT_TEST_FILTER");
  if (filter != NULL)
    cmocka_set_test_filter(filter);
}

int ktest_setup(void **state) {
  (void)state;
  testutil_alloc_install();
  testutil_alloc_fail_after(-1);
  atomic_store(&ktest_failures, 0);
  ktest_alloc_base = testutil_alloc_outstanding();
  if (ktest_alloc_base != 0)
    fprintf(stderr, "note: an earlier test leaked %ld blocks\n", ktest_alloc_base);
  watchdog.done = false;
  if (uv_mutex_init(&watchdog.mu) || uv_cond_init(&watchdog.cv) ||
      uv_thread_create(&watchdog.tid, watchdog_main, &watchdog))
    abort();
  return 0;
}

int ktest_teardown(void **state) {
  (void)state;
  uv_mutex_lock(&watchdog.mu);
  watchdog.done = true;
  uv_cond_signal(&watchdog.cv);
  uv_mutex_unlock(&watchdog.mu);
  uv_thread_join(&watchdog.tid);
  uv_cond_destroy(&watchdog.cv);
  uv_mutex_destroy(&watchdog.mu);
  return 0;
}

/* ---- runtimes and messages ------------------------------------------------ */

void ktest_finish_runtime(weft_runtime_t *rt) {
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&ktest_failures), 0);
  assert_int_equal(testutil_alloc_outstanding(), ktest_alloc_base);
}

/* The runtime of a ktest_live_* test until ktest_live_finish. */
static weft_runtime_t *live_rt;

weft_runtime_t *ktest_live_runtime_new(const weft_runtime_options_t *opts) {
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, opts), 0);
  live_rt = rt;
  return rt;
}

void ktest_live_finish(weft_runtime_t *rt) {
  live_rt = NULL;
  ktest_finish_runtime(rt);
}

int ktest_live_teardown(void **state) {
  if (live_rt != NULL) { /* the test failed half-way */
    (void)weft_runtime_free(live_rt);
    live_rt = NULL;
  }
  return ktest_teardown(state);
}

weft_runtime_t *ktest_new_runtime(void) {
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  return rt;
}

weft_msg_t *ktest_msg_u64(uint64_t v) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0 || weft_msg_put_u64(m, NULL, v) != 0)
    abort();
  return m;
}

uint64_t ktest_msg_value(weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, NULL, &v), 0);
  return v;
}

uint64_t ktest_post_retry(weft_port_t *p, weft_msg_t *m) {
  uint64_t again = 0;
  for (;;) {
    int rc = weft_port_post(p, m);
    if (rc == 0)
      return again;
    if (rc != WEFT_EAGAIN) {
      CHECK_RC(rc, 0);
      weft_msg_free(m);
      return again;
    }
    again++;
    sched_yield();
  }
}

bool ktest_wait_flag(atomic_int *flag) {
  uint64_t deadline = uv_hrtime() + 10000000000ull;
  while (!atomic_load(flag)) {
    if (uv_hrtime() > deadline)
      return false;
    sched_yield();
  }
  return true;
}
