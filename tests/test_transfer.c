/* test_transfer.c: what moves inside messages between threads: a 64 MiB owned
 * buffer (the sender's handle is detached: length 0, data NULL,
 * WEFT_EDETACHED), a shared buffer whose handles are dropped on several
 * workers at once (the memory goes exactly once), a wrapped buffer moved
 * through several workers (its free callback runs once, on the last holder's
 * thread), fresh big buffers that reach a worker as the very pages the
 * sender filled and open no fd on the way (no memfd until one leaves the
 * process), and big buffers that go on from a worker to a process channel
 * (two weft channels joined by a socketpair in this process): as a sealed
 * memfd, copied once if made before the channel, else the very file the
 * sender wrote; a channel whose ends live on two workers (ping-pong), messages
 * queued on a port that then travels, and ports inside messages that nobody
 * receives.
 *
 * Callbacks and worker threads record failures with CHECK; each test ends
 * with weft_runtime_free() == 0, no CHECK failed, and no weft allocation
 * outstanding. A watchdog aborts a hung test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc.h"
#include "ktest.h"
#include "weft.h"

static uint8_t pattern(size_t i) {
  return (uint8_t)(i ^ (i >> 8) ^ (i >> 16) ^ 0x5a);
}

static struct {
  int exits[8];
  int codes[8];
  uint64_t results;
  uint64_t last_result;
} wk;

static void wk_on_exit(weft_worker_t *w, int code) {
  uintptr_t i = (uintptr_t)weft_worker_data(w);
  wk.exits[i]++;
  wk.codes[i] = code;
}

static void wk_on_result(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  wk.last_result = ktest_msg_value(m);
  wk.results++;
  weft_msg_free(m);
}

/* ---- a 64 MiB owned buffer ---------------------------------------------------- */

#define BIG (64u * 1024u * 1024u)

static void big_worker_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t ok = 1;
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  CHECK(ktest_msg_value(m) == BIG);
  void *data = NULL;
  size_t len = 0;
  CHECK_RC(weft_buf_bytes(buf, &data, &len), 0);
  CHECK(len == BIG);
  const uint8_t *bytes = data;
  for (size_t i = 0; bytes != NULL && i < len; i++)
    if (bytes[i] != pattern(i)) {
      ok = 0;
      break;
    }
  CHECK(ok == 1);
  weft_buf_free(buf);
  weft_msg_free(m);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(ok)), 0);
  CHECK_RC(weft_port_close(port), 0); /* the worker exits */
}

static int big_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), big_worker_on_msg), 0);
  return 0;
}

static void detached_buffer_64mib(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&wk, 0, sizeof(wk));
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, BIG), 0);
  uint8_t *bytes = weft_buf_ptr(buf);
  for (size_t i = 0; i < BIG; i++)
    bytes[i] = pattern(i);
  weft_msg_t *m = ktest_msg_u64(BIG);
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  /* The sender's handle is detached. */
  assert_true(weft_buf_is_detached(buf));
  assert_int_equal(weft_buf_len(buf), 0);
  assert_null(weft_buf_ptr(buf));
  void *data = (void *)1;
  size_t len = 1;
  assert_int_equal(weft_buf_bytes(buf, &data, &len), WEFT_EDETACHED);
  assert_null(data);
  assert_int_equal(len, 0);
  assert_int_equal(weft_buf_refcount(buf), 0);
  assert_int_equal(weft_msg_add_buf(m, buf), WEFT_EDETACHED);
  weft_buf_t *second = NULL;
  assert_int_equal(weft_buf_share(buf, &second), WEFT_EDETACHED);
  /* Heavier than a default byte bound (64 MiB plus the payload): it still
   * goes to a worker on default bounds, whose queue is empty. */
  weft_worker_options_t o = {.entry = big_entry, .on_message = wk_on_result,
                             .on_exit = wk_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  assert_int_equal(weft_port_post(weft_worker_port(w), m), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(wk.results, 1);
  assert_int_equal(wk.last_result, 1);
  assert_int_equal(wk.exits[0], 1);
  assert_int_equal(wk.codes[0], 0);
  weft_buf_free(buf); /* the detached handle is still ours to free */
  ktest_finish_runtime(rt);
}

/* ---- fresh big buffers: a pointer move, no fd -------------------------------- */

#define FRESH_N 16
#define FRESH_LEN (4u * 1024u * 1024u)

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own fd */
}

static int fresh_got;

/* The message's value is the address the sender filled: the bytes must
 * arrive there, intact. */
static void fresh_worker_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t ok = 1;
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  const uint8_t *bytes = weft_buf_ptr(buf);
  if ((uintptr_t)bytes != (uintptr_t)ktest_msg_value(m) || weft_buf_len(buf) != FRESH_LEN)
    ok = 0;
  for (size_t i = 0; ok && i < FRESH_LEN; i++)
    if (bytes[i] != pattern(i))
      ok = 0;
  CHECK(ok == 1);
  weft_buf_free(buf);
  weft_msg_free(m);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(ok)), 0);
  if (++fresh_got == FRESH_N)
    CHECK_RC(weft_port_close(port), 0);
}

static int fresh_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  fresh_got = 0;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), fresh_worker_on_msg), 0);
  return 0;
}

static void fresh_buffers_move_without_fds(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&wk, 0, sizeof(wk));
  weft_worker_options_t o = {.entry = fresh_entry, .on_message = wk_on_result,
                             .on_exit = wk_on_exit, .port_hwm_bytes = 2u * FRESH_N * FRESH_LEN};
  int fds0 = open_fds(); /* before the worker, which opens fds of its own */
  assert_true(fds0 > 0);
  weft_msg_t *msgs[FRESH_N];
  for (int k = 0; k < FRESH_N; k++) {
    weft_buf_t *buf = NULL;
    assert_int_equal(weft_buf_new(&buf, FRESH_LEN), 0);
    uint8_t *bytes = weft_buf_ptr(buf);
    for (size_t i = 0; i < FRESH_LEN; i++)
      bytes[i] = pattern(i);
    msgs[k] = ktest_msg_u64((uintptr_t)bytes);
    assert_int_equal(weft_msg_add_buf(msgs[k], buf), 0);
    assert_int_equal(weft_buf_len(buf), 0); /* moved: the sender's length is 0 */
    weft_buf_free(buf);
  }
  int fds = open_fds();
  if (fds != fds0)
    fail_msg("%d fresh %u-byte buffers opened %d fds before leaving this thread (want 0)", FRESH_N,
             FRESH_LEN, fds - fds0);
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  for (int k = 0; k < FRESH_N; k++)
    assert_int_equal(weft_port_post(weft_worker_port(w), msgs[k]), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(wk.results, FRESH_N);
  assert_int_equal(wk.last_result, 1);
  assert_int_equal(wk.exits[0], 1);
  ktest_finish_runtime(rt);
}

/* ---- big buffers from a worker to a process channel ------------------------- */

/* Buffer 0 is made before any channel exists: anonymous, no fd, it reaches
 * the worker so and is copied into a memfd when it goes to the channel.
 * Buffer 1 is made after the channel started: a memfd from the start, and
 * the receiver maps the very file the sender wrote (same inode). */
#define XP_LEN (2u * 1024u * 1024u)

static struct {
  weft_port_t *a, *b;  /* the two channels' user ports (main context) */
  weft_worker_t *w;
  uint64_t ino[2];     /* buffer 1: the sender's memfd inode */
  int got, bad;
} xp;

static void xp_worker_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  uint64_t k = ktest_msg_value(m);
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  weft_msg_free(m);
  if (buf == NULL)
    return;
  /* On the worker: buffer 0 still has no fd, buffer 1 is its memfd. */
  CHECK(k == 0 ? !buf->is_memfd && buf->memfd < 0 : buf->is_memfd && buf->memfd >= 0);
  weft_msg_t *out = ktest_msg_u64(k);
  CHECK_RC(weft_msg_add_buf(out, buf), 0);
  weft_buf_free(buf);
  CHECK_RC(weft_port_post(xp.a, out), 0); /* any thread may post */
}

static int xp_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), xp_worker_on_msg), 0);
  return 0;
}

static void xp_on_received(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  uint64_t k = ktest_msg_value(m);
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  weft_msg_free(m);
  CHECK(buf != NULL && k < 2);
  if (buf == NULL || k >= 2)
    return;
  /* It crossed as a sealed memfd, mapped copy-on-write here. */
  CHECK(buf->is_memfd && buf->private_map);
  int seals = fcntl(buf->memfd, F_GET_SEALS);
  CHECK(seals >= 0 && (seals & F_SEAL_WRITE) != 0);
  struct stat st;
  CHECK(fstat(buf->memfd, &st) == 0);
  if (k == 1 && (uint64_t)st.st_ino != xp.ino[1]) {
    fprintf(stderr, "buffer 1 arrived in inode %llu, the sender wrote inode %llu: a copy\n",
            (unsigned long long)st.st_ino, (unsigned long long)xp.ino[1]);
    xp.bad++;
  }
  const uint8_t *bytes = weft_buf_ptr(buf);
  size_t len = weft_buf_len(buf);
  CHECK(len == XP_LEN);
  for (size_t i = 0; bytes != NULL && i < len; i++)
    if (bytes[i] != (uint8_t)(pattern(i) + k)) {
      xp.bad++;
      break;
    }
  weft_buf_free(buf);
  if (++xp.got == 2) {
    CHECK_RC(weft_port_close(xp.a), 0);
    CHECK_RC(weft_port_close(xp.b), 0);
    CHECK_RC(weft_port_close(weft_worker_port(xp.w)), 0);
  }
}

static weft_msg_t *xp_parcel(uint64_t k) {
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, XP_LEN), 0);
  uint8_t *bytes = weft_buf_ptr(buf);
  for (size_t i = 0; i < XP_LEN; i++)
    bytes[i] = (uint8_t)(pattern(i) + k);
  if (k == 0) {
    assert_false(buf->is_memfd);
  } else {
    assert_true(buf->is_memfd);
    struct stat st;
    assert_int_equal(fstat(buf->memfd, &st), 0);
    xp.ino[k] = st.st_ino;
  }
  weft_msg_t *m = ktest_msg_u64(k);
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  assert_int_equal(weft_buf_len(buf), 0);
  weft_buf_free(buf);
  return m;
}

static void big_buffers_worker_to_process_channel(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&xp, 0, sizeof(xp));
  weft_msg_t *m0 = xp_parcel(0); /* no channel yet: no memfd demand */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft__ipc_options_t io = {.kind = WEFT__IPC_WEFT};
  weft__ipc_t *ia, *ib;
  assert_int_equal(weft__ipc_open(ctx, sv[0], &io, &ia, &xp.a), 0);
  assert_int_equal(weft__ipc_open(ctx, sv[1], &io, &ib, &xp.b), 0);
  assert_int_equal(weft_port_start(xp.b, xp_on_received), 0);
  weft_msg_t *m1 = xp_parcel(1); /* a channel started: memfds in demand */
  weft_worker_options_t o = {.entry = xp_entry, .port_hwm_bytes = 4u * XP_LEN};
  assert_int_equal(weft_worker_spawn(ctx, &o, &xp.w), 0);
  assert_int_equal(weft_port_post(weft_worker_port(xp.w), m0), 0);
  assert_int_equal(weft_port_post(weft_worker_port(xp.w), m1), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(xp.got, 2);
  assert_int_equal(xp.bad, 0);
  ktest_finish_runtime(rt);
}

/* ---- messages heavier than the byte bound ------------------------------------ */

static int big_drains;

static void big_on_drain(weft_port_t *port) {
  (void)port;
  big_drains++;
}

static void big_unexpected(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(0);
}

static weft_msg_t *big_msg(uint64_t v) {
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, BIG), 0);
  weft_msg_t *m = ktest_msg_u64(v);
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  weft_buf_free(buf); /* the detached handle */
  return m;
}

/* The byte bound limits what waits, not one message: a 64 MiB buffer plus its
 * payload (past the default 64 MiB bound) passes a default port whose queue
 * is empty; a second one while the first waits gets WEFT_EAGAIN and stays
 * ours; taking the first brings the drain callback, and the second passes. */
static void big_message_passes_empty_queue(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  big_drains = 0;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_on_drain(p[0], big_on_drain), 0);
  /* started: keeps the loop alive while the drain event travels */
  assert_int_equal(weft_port_start(p[0], big_unexpected), 0);
  weft_msg_t *m1 = big_msg(1), *m2 = big_msg(2);
  assert_int_equal(weft_port_post(p[0], m1), 0);
  assert_int_equal(weft_port_post(p[0], m2), WEFT_EAGAIN);
  assert_int_equal(weft_msg_xfer_kind(m2, 0), WEFT_XFER_BUF); /* still ours */
  weft_msg_t *got = NULL;
  assert_int_equal(weft_port_receive(p[1], &got), 0);
  assert_int_equal(ktest_msg_value(got), 1);
  weft_msg_free(got);
  for (int i = 0; i < 1000 && big_drains == 0; i++)
    uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  assert_int_equal(big_drains, 1);
  assert_int_equal(weft_port_post(p[0], m2), 0);
  assert_int_equal(weft_port_receive(p[1], &got), 0);
  assert_int_equal(ktest_msg_value(got), 2);
  weft_msg_free(got);
  assert_int_equal(weft_port_close(p[0]), 0);
  ktest_finish_runtime(rt);
}

/* ---- a shared buffer, its handles dropped on 4 workers at once ----------------- */

#define SHARED_WORKERS 4
#define SHARED_ADDS 10000

static int shared_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t id = 0;
  CHECK_RC(weft_msg_get_u64(data, NULL, &id), 0);
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(data, 0, &buf), 0);
  if (buf == NULL)
    return -1;
  CHECK(weft_buf_is_shared(buf));
  CHECK(weft_buf_refcount(buf) >= 1);
  _Atomic uint64_t *counter = weft_buf_ptr(buf);
  for (int i = 0; i < SHARED_ADDS; i++)
    atomic_fetch_add(counter, id + 1);
  atomic_store(&counter[1 + id], id + 100);
  weft_buf_free(buf); /* maybe the last handle: then the memory goes here */
  return 0;
}

static void shared_buffer_across_workers(void **state) {
  (void)state;
  int rounds = (int)ktest_scaled(20, 4);
  for (int r = 0; r < rounds; r++) {
    weft_runtime_t *rt = ktest_new_runtime();
    weft_ctx_t *ctx = weft_runtime_main(rt);
    memset(&wk, 0, sizeof(wk));
    weft_buf_t *shared = NULL;
    assert_int_equal(weft_buf_new_shared(&shared, 4096), 0);
    _Atomic uint64_t *counter = weft_buf_ptr(shared);
    assert_int_equal(atomic_load(counter), 0); /* zero-filled */
    for (uint64_t i = 0; i < SHARED_WORKERS; i++) {
      weft_msg_t *data = ktest_msg_u64(i);
      assert_int_equal(weft_msg_add_buf(data, shared), 0);
      assert_false(weft_buf_is_detached(shared));
      assert_true(weft_buf_refcount(shared) >= 2); /* ours + the message's */
      weft_worker_options_t o = {.entry = shared_entry, .msg = data,
                                 .on_exit = wk_on_exit, .data = (void *)(uintptr_t)i};
      weft_worker_t *w = NULL;
      assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
    }
    uint64_t want = 0;
    for (uint64_t i = 0; i < SHARED_WORKERS; i++)
      want += (i + 1) * SHARED_ADDS;
    if (r % 2 == 0) {
      /* Keep our handle: it ends as the last one, and sees every worker's
       * writes. */
      assert_int_equal(weft_runtime_run(rt), 0);
      assert_int_equal(weft_buf_refcount(shared), 1);
      assert_int_equal(atomic_load(counter), want);
      for (uint64_t i = 0; i < SHARED_WORKERS; i++)
        assert_int_equal(atomic_load(&counter[1 + i]), i + 100);
      weft_buf_free(shared);
    } else {
      /* Drop ours while the workers run: one of them frees the memory. */
      weft_buf_free(shared);
      assert_int_equal(weft_runtime_run(rt), 0);
    }
    for (int i = 0; i < SHARED_WORKERS; i++) {
      assert_int_equal(wk.exits[i], 1);
      assert_int_equal(wk.codes[i], 0);
    }
    ktest_finish_runtime(rt); /* the memory went exactly once: nothing outstanding */
  }
}

/* ---- a wrapped buffer through 4 workers: its free callback runs once ----------- */

static struct {
  _Atomic int frees;
  _Atomic int freed_on_main;
  uint64_t hops;
  weft_worker_t *workers[4];
} wrap;

static uv_thread_t main_thread;

static void wrap_free_cb(void *data, size_t len, void *opaque) {
  CHECK(opaque == &wrap);
  CHECK(len == 1 << 20);
  uv_thread_t self = uv_thread_self();
  if (uv_thread_equal(&self, &main_thread))
    atomic_fetch_add(&wrap.freed_on_main, 1);
  atomic_fetch_add(&wrap.frees, 1);
  free(data);
}

/* A worker takes the buffer, checks it, and either sends it back (hops left)
 * or drops it (the last hop). */
static void wrap_worker_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t left = ktest_msg_value(m);
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  weft_msg_free(m);
  if (buf == NULL)
    return;
  const uint8_t *bytes = weft_buf_ptr(buf);
  CHECK(bytes != NULL && bytes[0] == pattern(0) && bytes[(1 << 20) - 1] == pattern((1 << 20) - 1));
  if (left == 0) {
    weft_buf_free(buf); /* the bytes go here, on this worker's thread */
    CHECK_RC(weft_port_post(port, ktest_msg_u64(UINT64_MAX)), 0);
  } else {
    weft_msg_t *back = ktest_msg_u64(left - 1);
    CHECK_RC(weft_msg_add_buf(back, buf), 0);
    weft_buf_free(buf); /* the detached handle */
    CHECK_RC(weft_port_post(port, back), 0);
  }
}

static int wrap_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  /* Started and ref'd: the worker stays until the parent terminates it. */
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), wrap_worker_on_msg), 0);
  return 0;
}

static void wrap_main_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  uint64_t left = ktest_msg_value(m);
  if (left == UINT64_MAX) {
    /* The last holder dropped the buffer: stop everyone. */
    weft_msg_free(m);
    CHECK(atomic_load(&wrap.frees) == 1);
    for (int i = 0; i < 4; i++)
      CHECK_RC(weft_worker_terminate(wrap.workers[i]), 0);
    return;
  }
  weft_buf_t *buf = NULL;
  CHECK_RC(weft_msg_take_buf(m, 0, &buf), 0);
  weft_msg_free(m);
  wrap.hops++;
  weft_msg_t *next = ktest_msg_u64(left);
  CHECK_RC(weft_msg_add_buf(next, buf), 0);
  weft_buf_free(buf);
  weft_worker_t *to = wrap.workers[wrap.hops % 4];
  CHECK_RC(weft_port_post(weft_worker_port(to), next), 0);
}

static void wrapped_buffer_freed_once(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&wrap, 0, sizeof(wrap));
  memset(&wk, 0, sizeof(wk));
  main_thread = uv_thread_self();
  for (uintptr_t i = 0; i < 4; i++) {
    weft_worker_options_t o = {.entry = wrap_entry, .on_message = wrap_main_on_msg,
                               .on_exit = wk_on_exit, .data = (void *)i};
    assert_int_equal(weft_worker_spawn(ctx, &o, &wrap.workers[i]), 0);
  }
  uint8_t *bytes = malloc(1 << 20);
  assert_non_null(bytes);
  for (size_t i = 0; i < (1 << 20); i++)
    bytes[i] = pattern(i);
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_wrap(&buf, bytes, 1 << 20, wrap_free_cb, &wrap), 0);
  weft_msg_t *m = ktest_msg_u64(40); /* 40 more hops after the first */
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  weft_buf_free(buf);
  assert_int_equal(weft_port_post(weft_worker_port(wrap.workers[0]), m), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(atomic_load(&wrap.frees), 1);
  assert_int_equal(atomic_load(&wrap.freed_on_main), 0);
  assert_int_equal(wrap.hops, 40);
  ktest_finish_runtime(rt);
}

/* ---- a channel whose ends live on two workers: ping-pong -------------------------- */

#define PINGS 1000

static struct {
  uint64_t got[2]; /* per worker, its own thread */
} pp;

static void pp_on_msg(weft_port_t *port, weft_msg_t *m) {
  uintptr_t side = (uintptr_t)weft_port_data(port);
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(v == (side == 1 ? pp.got[side] * 2 + 1 : (pp.got[side] + 1) * 2));
  pp.got[side]++;
  if (v + 1 >= 2 * PINGS) {
    CHECK_RC(weft_port_close(port), 0); /* both workers then run out of work */
    return;
  }
  CHECK_RC(weft_port_post(port, ktest_msg_u64(v + 1)), 0);
}

static void pp_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  uintptr_t side = (uintptr_t)weft_port_data(port);
  /* The side that received the last ping closed; the other sees the close. */
  CHECK(info->reason == (side == 1 ? 0 : WEFT_ECLOSED));
}

static int pp_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t side = 0;
  CHECK_RC(weft_msg_get_u64(data, NULL, &side), 0);
  weft_port_t *port = NULL;
  CHECK_RC(weft_msg_take_port(data, 0, &port), 0);
  if (port == NULL)
    return -1;
  weft_port_set_data(port, (void *)(uintptr_t)side);
  CHECK_RC(weft_port_on_close(port, pp_on_close), 0);
  CHECK_RC(weft_port_start(port, pp_on_msg), 0);
  if (side == 0)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(1)), 0); /* side 1 gets the odd ones */
  return 0;
}

static void worker_to_worker_ping_pong(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&pp, 0, sizeof(pp));
  memset(&wk, 0, sizeof(wk));
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  for (uintptr_t side = 0; side < 2; side++) {
    weft_msg_t *data = ktest_msg_u64(side);
    assert_int_equal(weft_msg_add_port(data, p[side]), 0);
    weft_worker_options_t o = {.entry = pp_entry, .msg = data, .on_exit = wk_on_exit,
                               .data = (void *)side};
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  /* 1 .. 2*PINGS-1 travel: side 1 gets the odd ones, side 0 the even ones. */
  assert_int_equal(pp.got[1], PINGS);
  assert_int_equal(pp.got[0], PINGS - 1);
  assert_int_equal(wk.exits[0], 1);
  assert_int_equal(wk.exits[1], 1);
  assert_int_equal(wk.codes[0], 0);
  assert_int_equal(wk.codes[1], 0);
  ktest_finish_runtime(rt);
}

/* ---- messages queued on a port travel with it ----------------------------------- */

static struct {
  uint64_t got, closes;
  int reason;
} tq;

static void tq_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == tq.got);
  weft_msg_free(m);
  tq.got++;
}

static void tq_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  tq.closes++;
  tq.reason = info->reason;
}

static void tq_worker_on_parent(weft_port_t *parent, weft_msg_t *m) {
  weft_port_t *port = NULL;
  CHECK_RC(weft_msg_take_port(m, 0, &port), 0);
  weft_msg_free(m);
  if (port == NULL)
    return;
  CHECK_RC(weft_port_on_close(port, tq_on_close), 0);
  CHECK_RC(weft_port_start(port, tq_on_msg), 0);
  CHECK_RC(weft_port_close(parent), 0); /* the moved port keeps us alive */
}

static int tq_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), tq_worker_on_parent), 0);
  return 0;
}

static void queued_messages_travel_with_port(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&tq, 0, sizeof(tq));
  memset(&wk, 0, sizeof(wk));
  uint64_t n = ktest_scaled(20000, 1000);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  for (uint64_t i = 0; i < n / 2; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_pending(p[1]), n / 2);
  weft_worker_options_t o = {.entry = tq_entry, .on_exit = wk_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  weft_msg_t *carry = NULL;
  assert_int_equal(weft_msg_new(&carry), 0);
  assert_int_equal(weft_msg_add_port(carry, p[1]), 0);
  assert_int_equal(weft_port_post(weft_worker_port(w), carry), 0);
  /* More while it travels, then the close. */
  for (uint64_t i = n / 2; i < n; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(tq.got, n);
  assert_int_equal(tq.closes, 1);
  assert_int_equal(tq.reason, WEFT_ECLOSED);
  assert_int_equal(wk.exits[0], 1);
  assert_int_equal(wk.codes[0], 0);
  ktest_finish_runtime(rt);
}

/* ---- ports inside messages nobody receives --------------------------------------- */

static int orphan_closes;

static void orphan_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  CHECK(info->reason == WEFT_ECLOSED);
  orphan_closes++;
}

static void orphan_worker_on_parent(weft_port_t *parent, weft_msg_t *m) {
  CHECK(weft_msg_xfer_count(m) == 1);
  weft_msg_free(m); /* not taken: the port in it closes */
  CHECK_RC(weft_port_close(parent), 0);
}

static int orphan_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  CHECK_RC(weft_port_start(weft_ctx_parent_port(ctx), orphan_worker_on_parent), 0);
  return 0;
}

static void ports_in_unreceived_messages(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&wk, 0, sizeof(wk));
  orphan_closes = 0;
  /* 1: freed on a worker without being taken. */
  weft_port_t *q[2];
  assert_int_equal(weft_channel_new(ctx, q), 0);
  assert_int_equal(weft_port_on_close(q[1], orphan_on_close), 0);
  assert_int_equal(weft_port_start(q[1], tq_on_msg), 0);
  weft_worker_options_t o = {.entry = orphan_entry, .on_exit = wk_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
  weft_msg_t *m = ktest_msg_u64(0);
  assert_int_equal(weft_msg_add_port(m, q[0]), 0);
  assert_int_equal(weft_port_post(weft_worker_port(w), m), 0);
  /* 2: discarded because the receiving port closed first. */
  weft_port_t *r[2], *s[2];
  assert_int_equal(weft_channel_new(ctx, r), 0);
  assert_int_equal(weft_channel_new(ctx, s), 0);
  assert_int_equal(weft_port_on_close(s[1], orphan_on_close), 0);
  assert_int_equal(weft_port_start(s[1], tq_on_msg), 0);
  m = ktest_msg_u64(0);
  assert_int_equal(weft_msg_add_port(m, s[0]), 0);
  assert_int_equal(weft_port_post(r[0], m), 0);
  assert_int_equal(weft_port_close(r[1]), 0);
  /* 3: still queued on a port at weft_runtime_free (below). */
  weft_port_t *t[2], *u[2];
  assert_int_equal(weft_channel_new(ctx, t), 0);
  assert_int_equal(weft_channel_new(ctx, u), 0);
  m = ktest_msg_u64(0);
  assert_int_equal(weft_msg_add_port(m, u[0]), 0);
  assert_int_equal(weft_port_post(t[0], m), 0);
  memset(&tq, 0, sizeof(tq));
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(orphan_closes, 2);
  assert_int_equal(tq.got, 0);
  assert_int_equal(wk.exits[0], 1);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(detached_buffer_64mib),
      T(fresh_buffers_move_without_fds),
      T(big_buffers_worker_to_process_channel),
      T(big_message_passes_empty_queue),
      T(shared_buffer_across_workers),
      T(wrapped_buffer_freed_once),
      T(worker_to_worker_ping_pong),
      T(queued_messages_travel_with_port),
      T(ports_in_unreceived_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
