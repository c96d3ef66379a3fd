/* test_buf.c: owned, wrapped, shared and detached buffers; the shared memory
 * is released exactly once, also when four threads drop handles at once; an
 * allocation-failure sweep over every constructor; big buffers hold no fd
 * until one leaves the process, the first such export copies into a sealed
 * memfd and the next buffers are memfds that leave without a copy; the cache
 * of big mappings keeps to its bounds, maps fresh ones in batches and never
 * hands a mapping out twice while two threads make and free at once. */
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
#include <sched.h>
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

/* The cache's own count: mappings kept and bytes of the resident ones. */
static void cache_stats(int *kept, size_t *resident) { weft__bufcache_stats(kept, resident); }

/* The first fresh 1 MiB buffer maps room for WEFT__BUF_CARVE of them with one
 * mmap: the other 7 wait in the cache, unused (no pages, not counted in the
 * resident budget), and the next 7 buffers are those, adjacent to the
 * first. A buffer too big to carve leaves nothing behind. */
static void fresh_mappings_come_in_batches(void **state) {
  (void)state;
  weft__buf_cache_trim();
  enum { K = WEFT__BUF_CARVE };
  weft_buf_t *b[K];
  int kept;
  size_t resident;
  assert_int_equal(weft_buf_new(&b[0], BIGLEN), 0);
  cache_stats(&kept, &resident);
  if (kept != K - 1 || resident != 0)
    fail_msg("after one fresh %zu-byte buffer the cache holds %d mappings, %zu resident bytes "
             "(want %d unused, 0 resident)", BIGLEN, kept, resident, K - 1);
  uint8_t *lo = weft_buf_ptr(b[0]);
  for (int i = 1; i < K; i++) {
    assert_int_equal(weft_buf_new(&b[i], BIGLEN), 0);
    uint8_t *p = weft_buf_ptr(b[i]);
    if (p <= lo || p >= lo + K * BIGLEN)
      fail_msg("buffer %d at %p is not in the first one's mapping [%p, %p)", i, (void *)p,
               (void *)lo, (void *)(lo + K * BIGLEN));
    memset(p, i, BIGLEN); /* each piece is a whole, writable buffer */
  }
  memset(lo, 0, BIGLEN);
  for (int i = 1; i < K; i++)
    assert_int_equal(((uint8_t *)weft_buf_ptr(b[i]))[BIGLEN - 1], i);
  cache_stats(&kept, &resident);
  assert_int_equal(kept, 0);
  for (int i = 0; i < K; i++)
    weft_buf_free(b[i]);
  cache_stats(&kept, &resident);
  assert_int_equal(kept, K);
  assert_int_equal(resident, K * BIGLEN); /* freed after use: kept with their pages */
  weft__buf_cache_trim();
  cache_stats(&kept, &resident);
  assert_int_equal(kept, 0);
  assert_int_equal(resident, 0);

  weft_buf_t *big;
  assert_int_equal(weft_buf_new(&big, (size_t)64 << 20), 0);
  cache_stats(&kept, &resident);
  assert_int_equal(kept, 0);
  weft_buf_free(big);
  weft__buf_cache_trim();
}

/* A burst of more buffers than the cache has slots: freed, the cache keeps
 * WEFT__BUF_CACHE_SLOTS of them and releases the rest; its resident bytes
 * never pass WEFT__BUF_CACHE_BYTES; the next burst reuses what it kept; trim
 * (weft_runtime_free) gives everything back. */
static void cache_holds_at_most_its_bounds(void **state) {
  (void)state;
  weft__buf_cache_trim();
  enum { N = WEFT__BUF_CACHE_SLOTS + 5 * WEFT__BUF_CARVE }; /* whole batches: none left unused */
  static weft_buf_t *b[N];
  static void *first[N];
  int kept;
  size_t resident;
  for (int i = 0; i < N; i++) {
    assert_int_equal(weft_buf_new(&b[i], BIGLEN), 0);
    first[i] = weft_buf_ptr(b[i]);
  }
  for (int i = 0; i < N; i++)
    weft_buf_free(b[i]);
  cache_stats(&kept, &resident);
  if (kept != WEFT__BUF_CACHE_SLOTS || resident > WEFT__BUF_CACHE_BYTES)
    fail_msg("%d freed %zu-byte buffers: the cache keeps %d mappings, %zu resident bytes "
             "(want %d, at most %zu)", N, BIGLEN, kept, resident, WEFT__BUF_CACHE_SLOTS,
             WEFT__BUF_CACHE_BYTES);
  /* Released ones are gone from the address space (mincore: ENOMEM). */
  int mapped = 0;
  for (int i = 0; i < N; i++) {
    unsigned char vec;
    mapped += mincore(first[i], (size_t)sysconf(_SC_PAGESIZE), &vec) == 0;
  }
  if (mapped != WEFT__BUF_CACHE_SLOTS)
    fail_msg("%d of %d freed buffers are still mapped (want the cache's %d)", mapped, N,
             WEFT__BUF_CACHE_SLOTS);

  /* Bigger buffers, touched: the resident budget holds (16 MiB each, 20 of
   * them: 16 keep their pages, 4 only their range). */
  weft__buf_cache_trim();
  enum { M = 20 };
  const size_t len = (size_t)16 << 20;
  for (int i = 0; i < M; i++) {
    assert_int_equal(weft_buf_new(&b[i], len), 0);
    memset(weft_buf_ptr(b[i]), 1, len);
  }
  for (int i = 0; i < M; i++)
    weft_buf_free(b[i]);
  cache_stats(&kept, &resident);
  assert_int_equal(kept, M);
  if (resident != WEFT__BUF_CACHE_BYTES)
    fail_msg("%d freed, touched 16 MiB buffers: %zu resident bytes kept (want the budget, %zu)",
             M, resident, WEFT__BUF_CACHE_BYTES);
  weft__buf_cache_trim();
  cache_stats(&kept, &resident);
  assert_int_equal(kept, 0);
  assert_int_equal(resident, 0);
}

/* Two threads make big buffers and hand them to each other to free (the
 * stream pattern, both ways at once, several sizes), with no lock in the
 * cache: no mapping is ever handed out twice. Each buffer carries its
 * maker's stamp at both ends, checked by the receiver before it frees it and
 * by the maker after a yield: a mapping given to two live buffers would
 * show the other's stamp. */
#define XCH_ROUNDS 3000
#define XCH_RING 16

typedef struct {
  uv_mutex_t lock;
  weft_buf_t *ring[XCH_RING];
  uint64_t stamp[XCH_RING];
  int head, n;
} xch_ring_t;

typedef struct {
  int id;
  xch_ring_t *out, *in;
  _Atomic int *done; /* threads past their last round */
  uint64_t bad, made, freed;
} xch_t;

static void stamp_put(weft_buf_t *b, uint64_t st) {
  uint8_t *p = weft_buf_ptr(b);
  memcpy(p, &st, sizeof(st));
  memcpy(p + weft_buf_len(b) - sizeof(st), &st, sizeof(st));
}

static bool stamp_ok(weft_buf_t *b, uint64_t st) {
  uint64_t x, y;
  uint8_t *p = weft_buf_ptr(b);
  memcpy(&x, p, sizeof(x));
  memcpy(&y, p + weft_buf_len(b) - sizeof(y), sizeof(y));
  return x == st && y == st;
}

/* Frees what the other thread sent so far. */
static void xch_drain(xch_t *x) {
  xch_ring_t *r = x->in;
  uv_mutex_lock(&r->lock);
  while (r->n > 0) {
    weft_buf_t *b = r->ring[r->head];
    uint64_t st = r->stamp[r->head];
    r->head = (r->head + 1) % XCH_RING;
    r->n--;
    uv_mutex_unlock(&r->lock);
    if (!stamp_ok(b, st))
      x->bad++;
    weft_buf_free(b);
    x->freed++;
    uv_mutex_lock(&r->lock);
  }
  uv_mutex_unlock(&r->lock);
}

static void xch_run(void *arg) {
  xch_t *x = arg;
  static const size_t sizes[] = {256u << 10, 1u << 20, 3u << 20};
  for (uint64_t i = 0; i < XCH_ROUNDS; i++) {
    weft_buf_t *b;
    if (weft_buf_new(&b, sizes[(i + (uint64_t)x->id) % 3]) != 0) {
      x->bad++;
      continue;
    }
    uint64_t st = ((uint64_t)x->id << 48) | i;
    stamp_put(b, st);
    sched_yield();
    if (!stamp_ok(b, st))
      x->bad++;
    x->made++;
    xch_ring_t *r = x->out;
    uv_mutex_lock(&r->lock);
    while (r->n == XCH_RING) { /* free what came in while the other side catches up */
      uv_mutex_unlock(&r->lock);
      xch_drain(x);
      sched_yield();
      uv_mutex_lock(&r->lock);
    }
    int slot = (r->head + r->n) % XCH_RING;
    r->ring[slot] = b;
    r->stamp[slot] = st;
    r->n++;
    uv_mutex_unlock(&r->lock);
    xch_drain(x);
  }
  /* Keep freeing until the other thread has made its last one too. */
  atomic_fetch_add(x->done, 1);
  while (atomic_load(x->done) < 2) {
    xch_drain(x);
    sched_yield();
  }
}

static void cache_never_hands_a_mapping_twice(void **state) {
  (void)state;
  weft__buf_cache_trim();
  xch_ring_t ring[2];
  memset(ring, 0, sizeof(ring));
  for (int i = 0; i < 2; i++) {
    assert_int_equal(uv_mutex_init(&ring[i].lock), 0);
  }
  _Atomic int done = 0;
  xch_t x[2] = {{.id = 1, .out = &ring[0], .in = &ring[1], .done = &done},
                {.id = 2, .out = &ring[1], .in = &ring[0], .done = &done}};
  uv_thread_t tid[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_create(&tid[i], xch_run, &x[i]), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_join(&tid[i]), 0);
  for (int i = 0; i < 2; i++) /* what is left in flight */
    xch_drain(&x[i]);
  for (int i = 0; i < 2; i++) {
    if (x[i].bad)
      fail_msg("thread %d: %llu of %llu buffers showed another buffer's stamp", x[i].id,
               (unsigned long long)x[i].bad, (unsigned long long)x[i].made);
    assert_int_equal(x[i].made, XCH_ROUNDS);
    uv_mutex_destroy(&ring[i].lock);
  }
  assert_int_equal(x[0].freed + x[1].freed, 2 * XCH_ROUNDS);
  int kept;
  size_t resident;
  cache_stats(&kept, &resident);
  assert_true(kept <= WEFT__BUF_CACHE_SLOTS);
  assert_true(resident <= WEFT__BUF_CACHE_BYTES);
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
      cmocka_unit_test_teardown(fresh_mappings_come_in_batches, no_leaks),
      cmocka_unit_test_teardown(cache_holds_at_most_its_bounds, no_leaks),
      cmocka_unit_test_teardown(cache_never_hands_a_mapping_twice, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
