/* test_buf.c: owned, wrapped, shared and detached buffers; the shared memory
 * is released exactly once, also when four threads drop handles at once; an
 * allocation-failure sweep over every constructor; big buffers hold no fd
 * until one leaves the process, the first such export copies into a sealed
 * memfd and the next buffers are memfds that leave without a copy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

typedef struct {
  _Atomic int calls;
  void *data;
  size_t len;
  void *opaque;
} free_log_t;

static void log_free(void *data, size_t len, void *opaque) {
  free_log_t *log = opaque;
  atomic_fetch_add(&log->calls, 1);
  log->data = data;
  log->len = len;
  log->opaque = opaque;
}

static void new_owned(void **state) {
  (void)state;
  weft_buf_t *b;
  assert_int_equal(weft_buf_new(&b, 100), 0);
  assert_int_equal(testutil_alloc_outstanding(), 2);
  assert_false(weft_buf_is_shared(b));
  assert_false(weft_buf_is_detached(b));
  assert_int_equal(weft_buf_refcount(b), 1);
  assert_int_equal(weft_buf_len(b), 100);
  void *p;
  size_t n;
  assert_int_equal(weft_buf_bytes(b, &p, &n), 0);
  assert_ptr_equal(p, weft_buf_ptr(b));
  assert_int_equal(n, 100);
  memset(p, 0xab, n);
  weft_buf_free(b);

  assert_int_equal(weft_buf_new(&b, 0), 0);
  assert_int_equal(weft_buf_len(b), 0);
  assert_int_equal(weft_buf_bytes(b, &p, &n), 0);
  assert_int_equal(n, 0);
  weft_buf_free(b);
  assert_int_equal(weft_buf_new(NULL, 1), WEFT_EINVAL);
}

static void wrap_calls_free_cb_once(void **state) {
  (void)state;
  char bytes[8] = "abcdefg";
  free_log_t log = {0};
  weft_buf_t *b;
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), log_free, &log), 0);
  assert_ptr_equal(weft_buf_ptr(b), bytes);
  assert_int_equal(weft_buf_len(b), sizeof(bytes));
  assert_int_equal(weft_buf_refcount(b), 1);
  assert_int_equal(atomic_load(&log.calls), 0);
  weft_buf_free(b);
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);
  assert_int_equal(log.len, sizeof(bytes));
  assert_ptr_equal(log.opaque, &log);

  /* No callback: the caller's memory is left alone. */
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), NULL, NULL), 0);
  weft_buf_free(b);
  assert_string_equal(bytes, "abcdefg");
  assert_int_equal(weft_buf_wrap(&b, NULL, 0, NULL, NULL), 0);
  weft_buf_free(b);

  assert_int_equal(weft_buf_wrap(&b, NULL, 4, NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_buf_wrap(NULL, bytes, 4, NULL, NULL), WEFT_EINVAL);
  /* On failure free_cb is not called. */
  testutil_alloc_fail_after(0);
  assert_int_equal(weft_buf_wrap(&b, bytes, sizeof(bytes), log_free, &log), WEFT_ENOMEM);
  assert_int_equal(atomic_load(&log.calls), 1);
}

static void shared_is_zeroed_and_counted(void **state) {
  (void)state;
  weft_buf_t *a, *b, *c;
  assert_int_equal(weft_buf_new_shared(&a, 4096), 0);
  assert_true(weft_buf_is_shared(a));
  assert_int_equal(weft_buf_refcount(a), 1);
  uint8_t *p = weft_buf_ptr(a);
  for (size_t i = 0; i < 4096; i++)
    assert_int_equal(p[i], 0);
  assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
  assert_int_equal(weft_buf_share(a, &b), 0);
  assert_int_equal(weft_buf_share(b, &c), 0);
  assert_int_equal(weft_buf_refcount(a), 3);
  assert_int_equal(weft_buf_refcount(c), 3);
  assert_ptr_equal(weft_buf_ptr(b), p);
  assert_int_equal(weft_buf_len(c), 4096);
  p[10] = 42;
  assert_int_equal(((uint8_t *)weft_buf_ptr(c))[10], 42);
  weft_buf_free(a);
  assert_int_equal(weft_buf_refcount(b), 2);
  assert_int_equal(((uint8_t *)weft_buf_ptr(b))[10], 42);
  weft_buf_free(c);
  assert_int_equal(weft_buf_refcount(b), 1);
  weft_buf_free(b);

  assert_int_equal(weft_buf_new_shared(&a, 0), 0);
  assert_int_equal(weft_buf_len(a), 0);
  weft_buf_free(a);
  assert_int_equal(weft_buf_new_shared(NULL, 1), WEFT_EINVAL);
  assert_int_equal(weft_buf_new_shared(&a, SIZE_MAX), WEFT_EINVAL);
}

static void share_errors(void **state) {
  (void)state;
  weft_buf_t *owned, *out = NULL, *moved;
  assert_int_equal(weft_buf_new(&owned, 8), 0);
  assert_int_equal(weft_buf_share(owned, &out), WEFT_EINVAL);
  assert_int_equal(weft_buf_share(NULL, &out), WEFT_EINVAL);
  assert_int_equal(weft_buf_share(owned, NULL), WEFT_EINVAL);
  assert_int_equal(weft__buf_move(owned, &moved), 0);
  assert_int_equal(weft_buf_share(owned, &out), WEFT_EDETACHED);
  assert_null(out);
  weft_buf_free(owned);
  weft_buf_free(moved);
}

static void detached_handle_refuses_use(void **state) {
  (void)state;
  weft_buf_t *b, *moved, *again;
  assert_int_equal(weft_buf_new(&b, 32), 0);
  void *bytes = weft_buf_ptr(b);
  assert_int_equal(weft__buf_move(b, &moved), 0);
  assert_true(weft_buf_is_detached(b));
  assert_false(weft_buf_is_detached(moved));
  assert_ptr_equal(weft_buf_ptr(moved), bytes);
  assert_int_equal(weft_buf_len(moved), 32);

  void *p = (void *)1;
  size_t n = 7;
  assert_int_equal(weft_buf_bytes(b, &p, &n), WEFT_EDETACHED);
  assert_null(p);
  assert_int_equal(n, 0);
  assert_null(weft_buf_ptr(b));
  assert_int_equal(weft_buf_len(b), 0);
  assert_int_equal(weft_buf_refcount(b), 0);
  assert_false(weft_buf_is_shared(b));
  assert_int_equal(weft__buf_move(b, &again), WEFT_EDETACHED);
  weft_buf_free(b); /* only the handle: the bytes moved */
  assert_int_equal(testutil_alloc_outstanding(), 2);
  weft_buf_free(moved);
}

static void move_carries_free_cb(void **state) {
  (void)state;
  char bytes[4] = "xyz";
  free_log_t log = {0};
  weft_buf_t *b, *moved, *shared;
  assert_int_equal(weft_buf_wrap(&b, bytes, 4, log_free, &log), 0);
  assert_int_equal(weft__buf_move(b, &moved), 0);
  weft_buf_free(b);
  assert_int_equal(atomic_load(&log.calls), 0);
  weft_buf_free(moved);
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);

  assert_int_equal(weft_buf_new_shared(&shared, 4), 0);
  assert_int_equal(weft__buf_move(shared, &moved), WEFT_EINVAL);
  assert_int_equal(weft__buf_move(NULL, &moved), WEFT_EINVAL);
  assert_false(weft_buf_is_detached(shared));
  weft_buf_free(shared);
}

static void questions_accept_null(void **state) {
  (void)state;
  void *p = (void *)1;
  size_t n = 1;
  assert_int_equal(weft_buf_bytes(NULL, &p, &n), WEFT_EINVAL);
  assert_null(p);
  assert_int_equal(n, 0);
  assert_null(weft_buf_ptr(NULL));
  assert_int_equal(weft_buf_len(NULL), 0);
  assert_false(weft_buf_is_detached(NULL));
  assert_false(weft_buf_is_shared(NULL));
  assert_int_equal(weft_buf_refcount(NULL), 0);
  weft_buf_free(NULL);
  weft_buf_t *b;
  assert_int_equal(weft_buf_new(&b, 4), 0);
  assert_int_equal(weft_buf_bytes(b, NULL, NULL), 0);
  weft_buf_free(b);
}

/* Shared memory with a release callback (set through the internal struct:
 * the public API makes shared memory only with weft_buf_new_shared). */
static weft_buf_t *shared_with_log(size_t len, free_log_t *log) {
  weft_buf_t *b;
  assert_int_equal(weft_buf_new_shared(&b, len), 0);
  b->mem->free_cb = log_free;
  b->mem->opaque = log;
  return b;
}

static void shared_released_exactly_once(void **state) {
  (void)state;
  free_log_t log = {0};
  weft_buf_t *h[5];
  h[0] = shared_with_log(64, &log);
  void *bytes = weft_buf_ptr(h[0]);
  for (int i = 1; i < 5; i++)
    assert_int_equal(weft_buf_share(h[i - 1], &h[i]), 0);
  for (int i = 4; i >= 0; i--) {
    assert_int_equal(atomic_load(&log.calls), 0);
    weft_buf_free(h[i]);
  }
  assert_int_equal(atomic_load(&log.calls), 1);
  assert_ptr_equal(log.data, bytes);
  assert_int_equal(log.len, 64);
}

#define THREADS 4
#define PER_THREAD 64
#define ROUNDS 200

typedef struct {
  uv_barrier_t *start;
  weft_buf_t **handles;
  int index;
} dropper_t;

/* Each thread writes its own bytes, then drops its handles: whichever thread
 * drops the last one must see every other thread's bytes in the release
 * callback (the acq_rel on the count). */
static void drop_handles(void *arg) {
  dropper_t *d = arg;
  uv_barrier_wait(d->start);
  for (int i = 0; i < PER_THREAD; i++) {
    uint8_t *p = weft_buf_ptr(d->handles[i]);
    p[d->index * PER_THREAD + i] = (uint8_t)(d->index + 1);
    weft_buf_free(d->handles[i]);
  }
}

static void check_and_log_free(void *data, size_t len, void *opaque) {
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    if (p[i] != (uint8_t)(i / PER_THREAD + 1))
      return; /* not logged: the test sees 0 calls */
  log_free(data, len, opaque);
}

static void shared_released_once_across_threads(void **state) {
  (void)state;
  for (int round = 0; round < ROUNDS; round++) {
    free_log_t log = {0};
    weft_buf_t *h[THREADS * PER_THREAD];
    h[0] = shared_with_log(THREADS * PER_THREAD, &log);
    h[0]->mem->free_cb = check_and_log_free;
    for (int i = 1; i < THREADS * PER_THREAD; i++)
      assert_int_equal(weft_buf_share(h[0], &h[i]), 0);
    assert_int_equal(weft_buf_refcount(h[0]), THREADS * PER_THREAD);
    uv_barrier_t start;
    assert_int_equal(uv_barrier_init(&start, THREADS), 0);
    uv_thread_t tid[THREADS];
    dropper_t d[THREADS];
    for (int t = 0; t < THREADS; t++) {
      d[t].start = &start;
      d[t].handles = &h[t * PER_THREAD];
      d[t].index = t;
      assert_int_equal(uv_thread_create(&tid[t], drop_handles, &d[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
      assert_int_equal(uv_thread_join(&tid[t]), 0);
    uv_barrier_destroy(&start);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(log.len, THREADS * PER_THREAD);
    assert_int_equal(testutil_alloc_outstanding(), 0);
  }
}

/* Each constructor, with its n-th allocation failing: WEFT_ENOMEM and nothing
 * left behind, until n passes its last allocation. */
typedef int (*build_fn)(weft_buf_t **out);

/* ---- big buffers: no fd until one leaves the process -------------------- */

#define BIGLEN ((size_t)1 << 20)

/* The fds this process has open. */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own fd */
}

static uint8_t pat(size_t i, unsigned salt) {
  return (uint8_t)((i * 31u) ^ (i >> 12) ^ salt);
}

static void fill(weft_buf_t *b, unsigned salt) {
  uint8_t *p = weft_buf_ptr(b);
  for (size_t i = 0; i < weft_buf_len(b); i++)
    p[i] = pat(i, salt);
}

/* fd holds len bytes of pattern salt (read through the fd, not a mapping). */
static void assert_fd_holds(int fd, size_t len, unsigned salt) {
  static uint8_t got[BIGLEN + 4096];
  assert_true(len <= sizeof(got));
  assert_int_equal(pread(fd, got, len, 0), (ssize_t)len);
  size_t bad = 0;
  for (size_t i = 0; i < len; i++)
    bad += got[i] != pat(i, salt);
  if (bad)
    fail_msg("%zu of %zu bytes differ from pattern %u", bad, len, salt);
}

static void assert_sealed(int fd, size_t len) {
  int seals = fcntl(fd, F_GET_SEALS);
  assert_true(seals >= 0);
  assert_int_equal(seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW),
                   F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_true((size_t)st.st_size >= len);
}

static void big_new_holds_no_fd(void **state) {
  (void)state;
  weft__buf_cache_trim();
  enum { N = 32 };
  weft_buf_t *b[N];
  int fds0 = open_fds();
  for (int i = 0; i < N; i++) {
    assert_int_equal(weft_buf_new(&b[i], BIGLEN), 0);
    assert_int_equal(weft_buf_len(b[i]), BIGLEN);
    fill(b[i], (unsigned)i);
  }
  int fds = open_fds();
  if (fds != fds0)
    fail_msg("%d fresh %zu-byte buffers opened %d fds (want none before they leave the process)",
             N, BIGLEN, fds - fds0);
  /* A move is a pointer move. */
  void *p = weft_buf_ptr(b[0]);
  weft_buf_t *moved = NULL;
  assert_int_equal(weft__buf_move(b[0], &moved), 0);
  assert_ptr_equal(weft_buf_ptr(moved), p);
  assert_int_equal(weft_buf_len(moved), BIGLEN);
  assert_true(weft_buf_is_detached(b[0]));
  assert_int_equal(weft_buf_len(b[0]), 0);
  weft_buf_free(moved);
  for (int i = 0; i < N; i++)
    weft_buf_free(b[i]);
  /* Freed ones are kept and reused: the next one is a kept mapping. */
  assert_int_equal(weft_buf_new(&b[0], BIGLEN), 0);
  assert_int_equal(open_fds(), fds0);
  weft_buf_free(b[0]);
  weft__buf_cache_trim();
  assert_int_equal(open_fds(), fds0);
}

static void export_copies_once_then_not(void **state) {
  (void)state;
  weft__buf_cache_trim();
  int fds0 = open_fds();
  size_t len = BIGLEN - 100; /* not a whole number of pages */
  weft_buf_t *a = NULL, *b = NULL, *r = NULL;

  /* The first export after a quiet spell: copied into a new sealed memfd. */
  assert_int_equal(weft_buf_new(&a, len), 0);
  assert_false(a->is_memfd);
  fill(a, 1);
  int fd_a = -1;
  assert_int_equal(weft__buf_memfd_export(a, &fd_a), 0);
  assert_true(fd_a >= 0);
  assert_sealed(fd_a, len);
  assert_fd_holds(fd_a, len, 1);
  assert_null(a->data); /* the anonymous bytes are gone */

  /* Memfds are now in demand: the next buffer is one, and its export
   * hands over the very fd its bytes were written through (no copy). */
  assert_int_equal(weft_buf_new(&b, len), 0);
  assert_true(b->is_memfd);
  int fd_b = b->memfd;
  fill(b, 2);
  int fd = -1;
  assert_int_equal(weft__buf_memfd_export(b, &fd), 0);
  assert_int_equal(fd, fd_b);
  assert_sealed(fd, len);
  assert_fd_holds(fd, len, 2);

  /* The receiving side maps it and sees the bytes. */
  int dup_fd = dup(fd);
  assert_true(dup_fd >= 0);
  assert_int_equal(weft__buf_from_memfd(dup_fd, len, &r), 0);
  assert_int_equal(weft_buf_len(r), len);
  const uint8_t *rp = weft_buf_ptr(r);
  size_t bad = 0;
  for (size_t i = 0; i < len; i++)
    bad += rp[i] != pat(i, 2);
  assert_int_equal(bad, 0);
  weft_buf_free(r);
  weft_buf_free(a);
  weft_buf_free(b);
  assert_int_equal(open_fds(), fds0);

  /* The demand runs out after WEFT__BUF_DEMAND_RUN big buffers that stay. */
  assert_int_equal(weft_buf_new(&a, len), 0);
  assert_int_equal(weft__buf_memfd_export(a, &fd), 0);
  weft_buf_free(a);
  for (unsigned i = 0; i < WEFT__BUF_DEMAND_RUN; i++) {
    assert_int_equal(weft_buf_new(&b, len), 0);
    if (!b->is_memfd)
      fail_msg("buffer %u after an export is not a memfd", i);
    weft_buf_free(b);
  }
  assert_int_equal(weft_buf_new(&b, len), 0);
  assert_false(b->is_memfd);
  weft_buf_free(b);

  /* weft__buf_cache_trim (weft_runtime_free) forgets the demand too. */
  assert_int_equal(weft_buf_new(&a, len), 0);
  assert_int_equal(weft__buf_memfd_export(a, &fd), 0);
  weft_buf_free(a);
  weft__buf_cache_trim();
  assert_int_equal(weft_buf_new(&b, len), 0);
  assert_false(b->is_memfd);
  weft_buf_free(b);
  weft__buf_cache_trim();
  assert_int_equal(open_fds(), fds0);
}

/* Other owned buffers export by a copy too: wrapped (free_cb runs then),
 * received private mappings; shared and empty ones are refused. */
static void export_other_kinds(void **state) {
  (void)state;
  weft__buf_cache_trim();
  static uint8_t region[BIGLEN];
  for (size_t i = 0; i < sizeof(region); i++)
    region[i] = pat(i, 3);
  free_log_t log = {0};
  weft_buf_t *w = NULL, *s = NULL, *e = NULL, *r = NULL;
  assert_int_equal(weft_buf_wrap(&w, region, sizeof(region), log_free, &log), 0);
  int fd = -1;
  assert_int_equal(weft__buf_memfd_export(w, &fd), 0);
  assert_int_equal(atomic_load(&log.calls), 1); /* the caller's bytes are released */
  assert_sealed(fd, sizeof(region));
  assert_fd_holds(fd, sizeof(region), 3);
  /* A received (private) mapping of that fd goes on by another copy. */
  assert_int_equal(weft__buf_from_memfd(dup(fd), sizeof(region), &r), 0);
  int fd2 = -1;
  assert_int_equal(weft__buf_memfd_export(r, &fd2), 0);
  assert_true(fd2 != fd);
  assert_fd_holds(fd2, sizeof(region), 3);
  weft_buf_free(r);
  weft_buf_free(w);
  assert_int_equal(atomic_load(&log.calls), 1);

  assert_int_equal(weft_buf_new_shared(&s, 64), 0);
  assert_int_equal(weft__buf_memfd_export(s, &fd), UV_ENOTSUP);
  weft_buf_free(s);
  assert_int_equal(weft_buf_new(&e, 0), 0);
  assert_int_equal(weft__buf_memfd_export(e, &fd), UV_ENOTSUP);
  weft_buf_free(e);
  weft__buf_cache_trim();
}

/* VmRSS of this process, bytes. */
static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  assert_non_null(f);
  unsigned long pages = 0, res = 0;
  assert_int_equal(fscanf(f, "%lu %lu", &pages, &res), 2);
  fclose(f);
  return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* More big buffers than the resident budget (256 MiB): freed, all their
 * address ranges are kept (the next ones reuse every one of them: no mmap),
 * but only the budget keeps its pages. */
static void reuse_past_the_budget_keeps_no_pages(void **state) {
  (void)state;
  weft__buf_cache_trim();
  enum { N = 6 };
  const size_t len = (size_t)64 << 20, budget = (size_t)256 << 20;
  weft_buf_t *b[N];
  void *first[N];
  size_t rss0 = rss_bytes();
  for (int i = 0; i < N; i++) {
    assert_int_equal(weft_buf_new(&b[i], len), 0);
    memset(weft_buf_ptr(b[i]), 0x5a, len); /* its pages are real */
    first[i] = weft_buf_ptr(b[i]);
  }
  for (int i = 0; i < N; i++)
    weft_buf_free(b[i]);
  size_t rss = rss_bytes();
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  rss = rss0; /* the sanitizer's shadow of the bytes we wrote stays resident */
#endif
  if (rss > rss0 + budget + ((size_t)32 << 20))
    fail_msg("%d freed %zu MiB buffers left RSS %zu MiB above the start (budget %zu MiB)", N,
             len >> 20, (rss - rss0) >> 20, budget >> 20);
  /* Every range is still mapped (mincore fails with ENOMEM on a hole); the
   * first page of at most budget / len of them is resident. */
  int mapped = 0, resident = 0;
  for (int i = 0; i < N; i++) {
    unsigned char vec = 0;
    if (mincore(first[i], (size_t)sysconf(_SC_PAGESIZE), &vec) == 0) {
      mapped++;
      resident += vec & 1;
    }
  }
  if (mapped != N)
    fail_msg("%d of %d freed buffers kept their address range (want all)", mapped, N);
  assert_true(resident <= (int)(budget / len));
  int reused = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(weft_buf_new(&b[i], len), 0);
    for (int j = 0; j < N; j++)
      reused += weft_buf_ptr(b[i]) == first[j];
  }
  if (reused != N)
    fail_msg("%d of %d buffers reused a kept mapping (want all)", reused, N);
  for (int i = 0; i < N; i++)
    weft_buf_free(b[i]);
  weft__buf_cache_trim();
}

static int build_new_big(weft_buf_t **out) { return weft_buf_new(out, BIGLEN); }

static int build_new(weft_buf_t **out) { return weft_buf_new(out, 128); }
static int build_shared(weft_buf_t **out) { return weft_buf_new_shared(out, 128); }
static int build_wrap(weft_buf_t **out) {
  static char bytes[16];
  return weft_buf_wrap(out, bytes, sizeof(bytes), NULL, NULL);
}

static void sweep(build_fn build, long expect_allocs) {
  long n;
  for (n = 0;; n++) {
    weft_buf_t *b = NULL;
    testutil_alloc_fail_after(n);
    int rc = build(&b);
    bool fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    if (!fired) {
      assert_int_equal(rc, 0);
      weft_buf_free(b);
      break;
    }
    assert_int_equal(rc, WEFT_ENOMEM);
    assert_int_equal(testutil_alloc_outstanding(), 0);
  }
  assert_int_equal(n, expect_allocs);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

static void alloc_failure_sweep(void **state) {
  (void)state;
  sweep(build_new, 2);
  sweep(build_new_big, 1); /* the handle; the bytes are a page mapping */
  sweep(build_shared, 2);
  sweep(build_wrap, 1);

  weft_buf_t *shared, *owned, *out = NULL;
  assert_int_equal(weft_buf_new_shared(&shared, 8), 0);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft_buf_share(shared, &out), WEFT_ENOMEM);
  assert_null(out);
  assert_int_equal(weft_buf_refcount(shared), 1);
  weft_buf_free(shared);

  assert_int_equal(weft_buf_new(&owned, 8), 0);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft__buf_move(owned, &out), WEFT_ENOMEM);
  assert_false(weft_buf_is_detached(owned)); /* unchanged on failure */
  assert_int_equal(weft_buf_len(owned), 8);
  weft_buf_free(owned);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(new_owned, no_leaks),
      cmocka_unit_test_teardown(wrap_calls_free_cb_once, no_leaks),
      cmocka_unit_test_teardown(shared_is_zeroed_and_counted, no_leaks),
      cmocka_unit_test_teardown(share_errors, no_leaks),
      cmocka_unit_test_teardown(detached_handle_refuses_use, no_leaks),
      cmocka_unit_test_teardown(move_carries_free_cb, no_leaks),
      cmocka_unit_test_teardown(questions_accept_null, no_leaks),
      cmocka_unit_test_teardown(shared_released_exactly_once, no_leaks),
      cmocka_unit_test_teardown(shared_released_once_across_threads, no_leaks),
      cmocka_unit_test_teardown(alloc_failure_sweep, no_leaks),
      cmocka_unit_test_teardown(big_new_holds_no_fd, no_leaks),
      cmocka_unit_test_teardown(export_copies_once_then_not, no_leaks),
      cmocka_unit_test_teardown(export_other_kinds, no_leaks),
      cmocka_unit_test_teardown(reuse_past_the_budget_keeps_no_pages, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
