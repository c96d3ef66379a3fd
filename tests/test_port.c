/* test_port.c: the delivery guarantees of channels and ports under real
 * threads: FIFO per channel and per sender, exactly once,
 * close after the messages posted before it, a port bounced among workers
 * while a stream reaches it, ESELF / ECLOSED / EINVAL, weft_port_receive,
 * ref / unref, and the carry mask a transport sets on a port (each limit
 * alone refuses what it names and nothing else).
 *
 * Callbacks and foreign threads never call cmocka asserts (they would
 * longjmp across threads or out of uv_run): they record failures with CHECK,
 * and each test asserts at its end that none was recorded, that
 * weft_runtime_free returned 0 and that nothing weft allocated is left.
 * A watchdog thread aborts a test that hangs. Sizes shrink under sanitizers
 * (or with WEFT_TEST_SCALE=<factor>). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktest.h"
#include "weft.h"
#include "weft_impl.h"

/* ---- FIFO: senders on their own channels, and on one shared port ---------- */

#define SEQ_BITS 40
#define SEQ_MASK ((1ull << SEQ_BITS) - 1)
#define MAX_SENDERS 8

typedef struct {
  uv_thread_t tid;
  weft_port_t *tx;
  uint64_t id;
  uint64_t n;
  uint64_t again;
} sender_t;

static void sender_main(void *arg) {
  sender_t *s = arg;
  for (uint64_t seq = 0; seq < s->n; seq++)
    s->again += ktest_post_retry(s->tx, ktest_msg_u64((s->id << SEQ_BITS) | seq));
}

static struct {
  uint64_t expect[MAX_SENDERS];
  uint64_t total, want;
  weft_port_t *rx[MAX_SENDERS];
  int nrx;
  bool own_channels; /* rx[i] must only hear sender i */
} fifo;

static void fifo_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  uint64_t id = v >> SEQ_BITS, seq = v & SEQ_MASK;
  if (id >= MAX_SENDERS) {
    CHECK(id < MAX_SENDERS);
    return;
  }
  if (fifo.own_channels)
    CHECK((uintptr_t)weft_port_data(port) == id);
  if (seq != fifo.expect[id]) {
    fprintf(stderr, "sender %llu: got seq %llu, expected %llu\n", (unsigned long long)id,
            (unsigned long long)seq, (unsigned long long)fifo.expect[id]);
    CHECK(seq == fifo.expect[id]);
  }
  fifo.expect[id] = seq + 1;
  if (++fifo.total == fifo.want)
    for (int i = 0; i < fifo.nrx; i++)
      weft_port_unref(fifo.rx[i]); /* the loop may end now */
}

static void run_fifo(int nsenders, bool own_channels, uint64_t per_sender) {
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&fifo, 0, sizeof(fifo));
  fifo.own_channels = own_channels;
  fifo.want = per_sender * (uint64_t)nsenders;
  sender_t senders[MAX_SENDERS];
  memset(senders, 0, sizeof(senders));
  weft_port_t *shared[2] = {NULL, NULL};
  for (int i = 0; i < nsenders; i++) {
    weft_port_t *ports[2];
    if (own_channels || i == 0) {
      assert_int_equal(weft_channel_new(ctx, ports), 0);
      weft_port_set_data(ports[1], (void *)(uintptr_t)i);
      assert_int_equal(weft_port_start(ports[1], fifo_on_msg), 0);
      fifo.rx[fifo.nrx++] = ports[1];
      shared[0] = ports[0];
      shared[1] = ports[1];
    }
    senders[i].tx = shared[0];
    senders[i].id = (uint64_t)i;
    senders[i].n = per_sender;
  }
  for (int i = 0; i < nsenders; i++)
    assert_int_equal(uv_thread_create(&senders[i].tid, sender_main, &senders[i]), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  uint64_t again = 0;
  for (int i = 0; i < nsenders; i++) {
    uv_thread_join(&senders[i].tid);
    again += senders[i].again;
  }
  assert_int_equal(fifo.total, fifo.want);
  for (int i = 0; i < nsenders; i++)
    assert_int_equal(fifo.expect[i], per_sender);
  weft_ctx_stats_t st;
  assert_int_equal(weft_ctx_stats(ctx, &st), 0);
  assert_true(st.msgs_in >= fifo.want);
  printf("  %d senders x %llu messages, %llu EAGAIN retries\n", nsenders,
         (unsigned long long)per_sender, (unsigned long long)again);
  ktest_finish_runtime(rt);
}

static void fifo_own_channels(void **state) {
  (void)state;
  run_fifo(4, true, ktest_scaled(200000, 1000));
}

static void fifo_same_port(void **state) {
  (void)state;
  run_fifo(4, false, ktest_scaled(200000, 1000));
}

/* ---- exactly once: 8 threads x 1M messages into 8 ports on one worker ----- */

#define EO_SENDERS 8

static struct {
  weft_port_t *rx[EO_SENDERS];
  uint64_t expect[EO_SENDERS];
  uint64_t total, want;
} eo_w; /* the worker's: touched only on the worker thread until it exits */

static struct {
  uint64_t reported;
  int exit_code;
  int exits;
} eo_m; /* main thread's */

static void eo_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  uint64_t id = (uintptr_t)weft_port_data(port);
  uint64_t from = v >> SEQ_BITS, seq = v & SEQ_MASK;
  CHECK(from == id);
  if (seq != eo_w.expect[id]) {
    fprintf(stderr, "port %llu: got seq %llu, expected %llu\n", (unsigned long long)id,
            (unsigned long long)seq, (unsigned long long)eo_w.expect[id]);
    CHECK(seq == eo_w.expect[id]);
  }
  eo_w.expect[id] = seq + 1;
  if (++eo_w.total < eo_w.want)
    return;
  for (int i = 0; i < EO_SENDERS; i++)
    CHECK_RC(weft_port_close(eo_w.rx[i]), 0);
  weft_ctx_t *ctx = weft_ctx_current();
  CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(eo_w.total)), 0);
}

static int eo_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  CHECK(weft_msg_xfer_count(data) == EO_SENDERS);
  for (size_t i = 0; i < EO_SENDERS; i++) {
    weft_port_t *p = NULL;
    CHECK_RC(weft_msg_take_port(data, i, &p), 0);
    if (p == NULL)
      return -1;
    eo_w.rx[i] = p;
    weft_port_set_data(p, (void *)(uintptr_t)i);
    CHECK_RC(weft_port_start(p, eo_on_msg), 0);
  }
  return 0;
}

static void eo_on_result(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  eo_m.reported = ktest_msg_value(m);
  weft_msg_free(m);
}

static void eo_on_exit(weft_worker_t *w, int code) {
  (void)w;
  eo_m.exit_code = code;
  eo_m.exits++;
}

static void exactly_once_8_threads(void **state) {
  (void)state;
  uint64_t n = ktest_scaled(1000000, 2000);
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&eo_w, 0, sizeof(eo_w));
  memset(&eo_m, 0, sizeof(eo_m));
  eo_m.exit_code = -1;
  eo_w.want = n * EO_SENDERS;
  sender_t senders[EO_SENDERS];
  memset(senders, 0, sizeof(senders));
  weft_msg_t *data = NULL;
  assert_int_equal(weft_msg_new(&data), 0);
  for (int i = 0; i < EO_SENDERS; i++) {
    weft_port_t *ports[2];
    assert_int_equal(weft_channel_new(ctx, ports), 0);
    senders[i].tx = ports[0];
    senders[i].id = (uint64_t)i;
    senders[i].n = n;
    assert_int_equal(weft_msg_add_port(data, ports[1]), 0);
  }
  weft_worker_options_t opts = {.entry = eo_entry, .msg = data,
                                .on_message = eo_on_result, .on_exit = eo_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < EO_SENDERS; i++)
    assert_int_equal(uv_thread_create(&senders[i].tid, sender_main, &senders[i]), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  uint64_t again = 0;
  for (int i = 0; i < EO_SENDERS; i++) {
    uv_thread_join(&senders[i].tid);
    again += senders[i].again;
  }
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  printf("  %d x %llu messages in %.2f s (%.2f M msg/s), %llu EAGAIN retries\n", EO_SENDERS,
         (unsigned long long)n, secs, (double)eo_w.want / secs / 1e6,
         (unsigned long long)again);
  assert_int_equal(eo_m.exits, 1);
  assert_int_equal(eo_m.exit_code, 0);
  assert_int_equal(eo_m.reported, eo_w.want);
  assert_int_equal(eo_w.total, eo_w.want);
  for (int i = 0; i < EO_SENDERS; i++)
    assert_int_equal(eo_w.expect[i], n);
  ktest_finish_runtime(rt);
}

/* ---- close: messages posted before the close arrive first ----------------- */

static struct {
  uint64_t n;
  uint64_t got;            /* messages the peer saw */
  uint64_t got_at_close;   /* ... when its close callback ran */
  int peer_reason;
  int peer_closes;
  int closer_reason;
  int closer_closes;
  uint64_t closer_undelivered;
} cl;

static void cl_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == cl.got);
  weft_msg_free(m);
  cl.got++;
}

static void cl_on_peer_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  cl.peer_closes++;
  cl.peer_reason = info->reason;
  cl.got_at_close = cl.got;
}

static void cl_on_closer_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  cl.closer_closes++;
  cl.closer_reason = info->reason;
  cl.closer_undelivered = info->undelivered;
}

static void close_after_messages_same_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&cl, 0, sizeof(cl));
  cl.n = ktest_scaled(10000, 100);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_on_close(p[1], cl_on_peer_close), 0);
  assert_int_equal(weft_port_on_close(p[0], cl_on_closer_close), 0);
  assert_int_equal(weft_port_start(p[1], cl_on_msg), 0);
  for (uint64_t i = 0; i < cl.n; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_port_close(p[0]), 0); /* idempotent */
  weft_msg_t *late = ktest_msg_u64(0);
  assert_int_equal(weft_port_post(p[0], late), WEFT_ECLOSED);
  weft_msg_free(late);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(cl.got, cl.n);
  assert_int_equal(cl.got_at_close, cl.n);
  assert_int_equal(cl.peer_closes, 1);
  assert_int_equal(cl.peer_reason, WEFT_ECLOSED);
  assert_int_equal(cl.closer_closes, 1);
  assert_int_equal(cl.closer_reason, 0);
  assert_int_equal(cl.closer_undelivered, 0);
  ktest_finish_runtime(rt);
}

/* The peer end lives on a worker; main posts n messages then closes. */
static int cl_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  weft_port_t *port = NULL;
  CHECK_RC(weft_msg_take_port(data, 0, &port), 0);
  if (port == NULL)
    return -1;
  CHECK_RC(weft_port_on_close(port, cl_on_peer_close), 0);
  CHECK_RC(weft_port_start(port, cl_on_msg), 0);
  return 0;
}

static void cl_on_exit(weft_worker_t *w, int code) {
  (void)w;
  CHECK(code == 0);
}

static void close_after_messages_cross_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&cl, 0, sizeof(cl));
  cl.n = ktest_scaled(50000, 500);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_on_close(p[0], cl_on_closer_close), 0);
  weft_msg_t *data = NULL;
  assert_int_equal(weft_msg_new(&data), 0);
  assert_int_equal(weft_msg_add_port(data, p[1]), 0);
  weft_worker_options_t opts = {.entry = cl_entry, .msg = data, .on_exit = cl_on_exit};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  /* The peer may still be in transit: what reaches it waits there. */
  for (uint64_t i = 0; i < cl.n; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_runtime_run(rt), 0); /* until the worker exits */
  /* The worker's state is read after its exit (ordered by the exit task). */
  assert_int_equal(cl.got, cl.n);
  assert_int_equal(cl.got_at_close, cl.n);
  assert_int_equal(cl.peer_closes, 1);
  assert_int_equal(cl.peer_reason, WEFT_ECLOSED);
  assert_int_equal(cl.closer_closes, 1);
  assert_int_equal(cl.closer_reason, 0);
  ktest_finish_runtime(rt);
}

/* Both ends closed at about the same time from two threads: each end's close
 * callback fires exactly once, and nothing leaks. */
static struct {
  _Atomic int closes[2];
  int rounds;
} both;

static void both_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  int side = (int)(uintptr_t)weft_port_data(port);
  CHECK(info->reason == 0 || info->reason == WEFT_ECLOSED);
  atomic_fetch_add(&both.closes[side], 1);
}

static void both_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
}

static int both_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  weft_port_t *port = NULL;
  CHECK_RC(weft_msg_take_port(data, 0, &port), 0);
  if (port == NULL)
    return -1;
  weft_port_set_data(port, (void *)(uintptr_t)1);
  CHECK_RC(weft_port_on_close(port, both_on_close), 0);
  CHECK_RC(weft_port_start(port, both_on_msg), 0);
  for (int i = 0; i < 10; i++) {
    weft_msg_t *m = ktest_msg_u64((uint64_t)i);
    int rc = weft_port_post(port, m);
    if (rc != 0) {
      CHECK(rc == WEFT_ECLOSED);
      weft_msg_free(m);
    }
  }
  CHECK_RC(weft_port_close(port), 0);
  return 0;
}

static void close_both_ends_at_once(void **state) {
  (void)state;
  int rounds = (int)ktest_scaled(200, 20);
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&both, 0, sizeof(both));
  for (int r = 0; r < rounds; r++) {
    weft_port_t *p[2];
    assert_int_equal(weft_channel_new(ctx, p), 0);
    weft_port_set_data(p[0], (void *)(uintptr_t)0);
    assert_int_equal(weft_port_on_close(p[0], both_on_close), 0);
    assert_int_equal(weft_port_start(p[0], both_on_msg), 0);
    weft_msg_t *data = NULL;
    assert_int_equal(weft_msg_new(&data), 0);
    assert_int_equal(weft_msg_add_port(data, p[1]), 0);
    weft_worker_options_t opts = {.entry = both_entry, .msg = data};
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
    for (int i = 0; i < r % 7; i++) {
      weft_msg_t *m = ktest_msg_u64((uint64_t)i);
      int rc = weft_port_post(p[0], m);
      if (rc != 0) {
        assert_int_equal(rc, WEFT_ECLOSED);
        weft_msg_free(m);
      }
    }
    assert_int_equal(weft_port_close(p[0]), 0);
    assert_int_equal(weft_runtime_run(rt), 0);
    assert_int_equal(atomic_load(&both.closes[0]), r + 1);
    assert_int_equal(atomic_load(&both.closes[1]), r + 1);
  }
  ktest_finish_runtime(rt);
}

/* ---- errors: ESELF, ECLOSED, EINVAL, EWRONGTHREAD ------------------------- */

static int seven_msgs;

static void seven_on_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == 7);
  weft_msg_free(m);
  seven_msgs++;
  CHECK_RC(weft_port_close(port), 0);
}

static void post_port_on_own_channel(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  for (int carried = 0; carried < 2; carried++) {
    for (int via = 0; via < 2; via++) {
      weft_msg_t *m = ktest_msg_u64(42);
      assert_int_equal(weft_msg_add_port(m, p[carried]), 0);
      assert_int_equal(weft_port_post(p[via], m), WEFT_ESELF);
      /* The message is still ours, with the port in it: take it back. */
      assert_int_equal(ktest_msg_value(m), 42);
      assert_int_equal(weft_msg_xfer_count(m), 1);
      weft_port_t *back = NULL;
      assert_int_equal(weft_msg_take_port(m, 0, &back), 0);
      assert_ptr_equal(back, p[carried]);
      assert_ptr_equal(weft_port_ctx(back), ctx);
      weft_msg_free(m);
    }
  }
  /* The channel still works after the failed posts. */
  seven_msgs = 0;
  assert_int_equal(weft_port_post(p[0], ktest_msg_u64(7)), 0);
  assert_int_equal(weft_port_start(p[1], seven_on_msg), 0);
  /* A port already in a message cannot be added twice. */
  weft_msg_t *m1 = ktest_msg_u64(1), *m2 = ktest_msg_u64(2);
  weft_port_t *q[2];
  assert_int_equal(weft_channel_new(ctx, q), 0);
  assert_int_equal(weft_msg_add_port(m1, q[0]), 0);
  assert_int_equal(weft_msg_add_port(m2, q[0]), WEFT_EINVAL);
  weft_msg_free(m2);
  weft_msg_free(m1); /* closes q[0]; q[1] sees the close */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seven_msgs, 1);
  ktest_finish_runtime(rt);
}

static int eclosed_peer_closes;

static void eclosed_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  CHECK(info->reason == WEFT_ECLOSED);
  eclosed_peer_closes++;
}

/* ---- the carry mask ----------------------------------------------------------- */

enum { CARRY_PORT, CARRY_BUF, CARRY_TWO_SOCKETS, CARRY_MANY_ITEMS, CARRY_NKINDS };

/* A message holding what kind names: a port, a buffer, two sockets, or one
 * item more than WEFT__CARRY_MAX_ITEMS (buffers). */
static weft_msg_t *carry_msg(weft_ctx_t *ctx, int kind) {
  weft_msg_t *m = ktest_msg_u64(1);
  if (kind == CARRY_PORT) {
    weft_port_t *q[2];
    assert_int_equal(weft_channel_new(ctx, q), 0);
    assert_int_equal(weft_msg_add_port(m, q[1]), 0);
    assert_int_equal(weft_port_close(q[0]), 0);
  } else if (kind == CARRY_TWO_SOCKETS) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
    assert_int_equal(weft_msg_add_socket(m, sv[1]), 0);
  } else {
    int n = kind == CARRY_BUF ? 1 : WEFT__CARRY_MAX_ITEMS + 1;
    for (int i = 0; i < n; i++) {
      weft_buf_t *b;
      assert_int_equal(weft_buf_new(&b, 8), 0);
      assert_int_equal(weft_msg_add_buf(m, b), 0);
      weft_buf_free(b); /* the detached handle stays ours */
    }
  }
  return m;
}

static void carry_limits_each_alone(void **state) {
  (void)state;
  static const uint32_t limits[CARRY_NKINDS] = {WEFT__CARRY_NO_PORT, WEFT__CARRY_NO_BUF,
                                                WEFT__CARRY_ONE_SOCKET, WEFT__CARRY_FEW_ITEMS};
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  for (int l = -1; l < CARRY_NKINDS; l++) { /* -1: no limit at all */
    weft_port_t *p[2];
    assert_int_equal(weft_channel_new(ctx, p), 0);
    if (l >= 0)
      weft__port_set_carry(p[1], limits[l]);
    for (int k = 0; k < CARRY_NKINDS; k++) {
      weft_msg_t *m = carry_msg(ctx, k);
      int rc = weft_port_post(p[0], m);
      /* The many items are buffers: a buffer limit refuses them too. */
      if (k == l || (k == CARRY_MANY_ITEMS && l == CARRY_BUF)) {
        assert_int_equal(rc, WEFT_ETRANSFER);
        weft_msg_free(m); /* refused: still ours */
      } else {
        assert_int_equal(rc, 0);
      }
    }
    /* Within the limits: one socket, exactly WEFT__CARRY_MAX_ITEMS items. */
    weft_msg_t *m = ktest_msg_u64(2);
    for (int i = 0; i < WEFT__CARRY_MAX_ITEMS - 1; i++) {
      weft_buf_t *b;
      assert_int_equal(weft_buf_new(&b, 8), 0);
      assert_int_equal(weft_msg_add_buf(m, b), 0);
      weft_buf_free(b); /* the detached handle stays ours */
    }
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
    close(sv[1]);
    assert_int_equal(weft_port_post(p[0], m), l == CARRY_BUF ? WEFT_ETRANSFER : 0);
    if (l == CARRY_BUF)
      weft_msg_free(m);
    assert_int_equal(weft_port_close(p[0]), 0);
    assert_int_equal(weft_port_close(p[1]), 0);
  }
  ktest_finish_runtime(rt);
}

static void post_on_closed_port(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  eclosed_peer_closes = 0;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_on_close(p[1], eclosed_on_close), 0);
  assert_int_equal(weft_port_start(p[1], both_on_msg), 0);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_true(weft_port_is_closed(p[0]));
  weft_msg_t *m = ktest_msg_u64(5);
  /* On the closed end, and (before and after the close event) on the peer. */
  assert_int_equal(weft_port_post(p[0], m), WEFT_ECLOSED);
  assert_int_equal(weft_port_post(p[1], m), WEFT_ECLOSED);
  assert_int_equal(weft_port_start(p[0], both_on_msg), WEFT_ECLOSED);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(eclosed_peer_closes, 1);
  assert_int_equal(ktest_msg_value(m), 5); /* still ours */
  weft_msg_free(m);
  ktest_finish_runtime(rt);
}

typedef struct {
  weft_ctx_t *ctx;
  weft_port_t *port;
  int channel_rc, start_rc, close_rc, stop_rc;
} wrong_thread_t;

static void wrong_thread_main(void *arg) {
  wrong_thread_t *t = arg;
  weft_port_t *p[2];
  t->channel_rc = weft_channel_new(t->ctx, p);
  t->start_rc = weft_port_start(t->port, both_on_msg);
  t->stop_rc = weft_port_stop(t->port);
  t->close_rc = weft_port_close(t->port);
}

static void null_and_wrong_thread_arguments(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  weft_msg_t *m = ktest_msg_u64(1), *out = NULL;
  assert_int_equal(weft_channel_new(NULL, p), WEFT_EINVAL);
  assert_int_equal(weft_channel_new(ctx, NULL), WEFT_EINVAL);
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_post(NULL, m), WEFT_EINVAL);
  assert_int_equal(weft_port_post(p[0], NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_start(NULL, both_on_msg), WEFT_EINVAL);
  assert_int_equal(weft_port_start(p[0], NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_stop(NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_close(NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_receive(NULL, &out), WEFT_EINVAL);
  assert_int_equal(weft_port_receive(p[0], NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_on_close(NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_on_drain(NULL, NULL), WEFT_EINVAL);
  assert_int_equal(weft_port_set_hwm(NULL, 1, 1), WEFT_EINVAL);
  assert_int_equal(weft_msg_add_port(NULL, p[0]), WEFT_EINVAL);
  assert_int_equal(weft_msg_add_port(m, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_take_port(m, 0, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_take_port(m, 0, &p[0]), WEFT_ENOENT);
  assert_int_equal(weft_ctx_stats(NULL, NULL), WEFT_EINVAL);
  /* Questions accept NULL. */
  weft_port_ref(NULL);
  weft_port_unref(NULL);
  assert_true(weft_port_is_closed(NULL));
  assert_int_equal(weft_port_pending(NULL), 0);
  assert_null(weft_port_data(NULL));
  assert_null(weft_port_ctx(NULL));
  /* Owner-thread calls from a thread without the context. */
  wrong_thread_t t = {.ctx = ctx, .port = p[1]};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, wrong_thread_main, &t), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.channel_rc, WEFT_EWRONGTHREAD);
  assert_int_equal(t.start_rc, WEFT_EWRONGTHREAD);
  assert_int_equal(t.stop_rc, WEFT_EWRONGTHREAD);
  assert_int_equal(t.close_rc, WEFT_EWRONGTHREAD);
  assert_false(weft_port_is_closed(p[1]));
  weft_msg_free(m);
  ktest_finish_runtime(rt); /* closes p[0], p[1] */
}

/* ---- weft_port_receive ------------------------------------------------------ */

static void receive_without_loop(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ENOENT);
  assert_null(m);
  for (uint64_t i = 0; i < 5; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  assert_int_equal(weft_port_pending(p[1]), 5);
  for (uint64_t i = 0; i < 5; i++) {
    assert_int_equal(weft_port_receive(p[1], &m), 0);
    assert_int_equal(ktest_msg_value(m), i);
    weft_msg_free(m);
  }
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ENOENT);
  assert_int_equal(weft_port_pending(p[1]), 0);
  /* After the peer closes: what was posted first, then ECLOSED. */
  assert_int_equal(weft_port_post(p[0], ktest_msg_u64(99)), 0);
  assert_int_equal(weft_port_close(p[0]), 0);
  assert_int_equal(weft_port_receive(p[1], &m), 0);
  assert_int_equal(ktest_msg_value(m), 99);
  weft_msg_free(m);
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ECLOSED);
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ECLOSED);
  ktest_finish_runtime(rt);
}

/* Receive from another thread's posts, on the owner thread, with no loop
 * running: every message arrives once, in order. */
typedef struct {
  weft_port_t *tx;
  uint64_t n;
} rx_poster_t;

static void rx_poster_main(void *arg) {
  rx_poster_t *t = arg;
  for (uint64_t i = 0; i < t->n; i++)
    ktest_post_retry(t->tx, ktest_msg_u64(i));
}

static void receive_from_thread(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  rx_poster_t t = {.tx = p[0], .n = ktest_scaled(100000, 1000)};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, rx_poster_main, &t), 0);
  uint64_t next = 0, empty = 0;
  while (next < t.n) {
    weft_msg_t *m = NULL;
    int rc = weft_port_receive(p[1], &m);
    if (rc == WEFT_ENOENT) {
      empty++;
      sched_yield();
      continue;
    }
    assert_int_equal(rc, 0);
    uint64_t v = ktest_msg_value(m);
    weft_msg_free(m);
    if (v != next)
      fail_msg("got %llu, expected %llu", (unsigned long long)v, (unsigned long long)next);
    next++;
  }
  uv_thread_join(&tid);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ENOENT);
  ktest_finish_runtime(rt);
}

/* ---- ref / unref ------------------------------------------------------------ */

static int unref_msgs;

static void unref_on_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  if (++unref_msgs == 3)
    CHECK_RC(weft_port_close(port), 0);
}

typedef struct {
  weft_port_t *tx;
} one_poster_t;

static void three_posts_main(void *arg) {
  one_poster_t *t = arg;
  for (uint64_t i = 0; i < 3; i++)
    ktest_post_retry(t->tx, ktest_msg_u64(i));
}

static void ref_and_unref(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  unref_msgs = 0;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  /* A stopped port keeps nothing alive; a started unref'd one neither. */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(weft_port_start(p[1], unref_on_msg), 0);
  weft_port_unref(p[1]);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(unref_msgs, 0);
  /* Ref'd again: the loop runs until the port closes, which happens only
   * after another thread's third message. */
  weft_port_ref(p[1]);
  one_poster_t t = {.tx = p[0]};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, three_posts_main, &t), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&tid);
  assert_int_equal(unref_msgs, 3);
  assert_true(weft_port_is_closed(p[1]));
  ktest_finish_runtime(rt);
}

/* ---- a port bounced among 4 workers while a stream reaches it -------------- */

#define BOUNCERS 4

typedef struct {
  int id;
  weft_port_t *next_tx;  /* to worker id + 1 */
  weft_port_t *prev_rx;  /* from worker id - 1 */
  weft_port_t *held;     /* the moving port, while this worker has it */
  uint64_t held_count;
  uint64_t quota;
  uint64_t received;
  uint64_t handoffs;
  uint64_t adoptions;
} bouncer_t;

static bouncer_t bouncers[BOUNCERS];

static struct {
  uint64_t n;
  _Atomic uint64_t expect; /* the next seq, whoever holds the port */
  int exits;
  int fixed_closes;
  int fixed_reason;
  weft_worker_t *workers[BOUNCERS];
} bounce;

static uint64_t bounce_quota(bouncer_t *b) {
  return 1 + ((uint64_t)b->id * 37 + b->handoffs * 13) % 23;
}

static void bounce_on_stream(weft_port_t *port, weft_msg_t *m);

static void bounce_adopt(bouncer_t *b, weft_port_t *port) {
  CHECK(b->held == NULL);
  b->held = port;
  b->held_count = 0;
  b->quota = bounce_quota(b);
  b->adoptions++;
  weft_port_set_data(port, b);
  CHECK_RC(weft_port_start(port, bounce_on_stream), 0);
}

static void bounce_on_stream(weft_port_t *port, weft_msg_t *m) {
  bouncer_t *b = weft_port_data(port);
  uint64_t seq = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(b != NULL && b->held == port);
  if (b == NULL)
    return;
  uint64_t want = atomic_load(&bounce.expect);
  if (seq != want) {
    fprintf(stderr, "worker %d: got seq %llu, expected %llu\n", b->id,
            (unsigned long long)seq, (unsigned long long)want);
    CHECK(seq == want);
  }
  atomic_store(&bounce.expect, seq + 1);
  b->received++;
  if (seq + 1 == bounce.n) {
    b->held = NULL;
    CHECK_RC(weft_port_close(port), 0); /* the fixed end sees the close */
    return;
  }
  if (++b->held_count < b->quota)
    return;
  /* Pass the port on, from inside its own callback. */
  weft_msg_t *carry = NULL;
  CHECK_RC(weft_msg_new(&carry), 0);
  CHECK_RC(weft_msg_add_port(carry, port), 0);
  b->held = NULL;
  b->handoffs++;
  CHECK_RC(weft_port_post(b->next_tx, carry), 0);
}

static void bounce_on_ring(weft_port_t *port, weft_msg_t *m) {
  bouncer_t *b = weft_port_data(port);
  weft_port_t *moving = NULL;
  CHECK_RC(weft_msg_take_port(m, 0, &moving), 0);
  weft_msg_free(m);
  if (moving != NULL)
    bounce_adopt(b, moving);
}

static int bounce_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t id = 0;
  CHECK_RC(weft_msg_get_u64(data, NULL, &id), 0);
  bouncer_t *b = &bouncers[id];
  b->id = (int)id;
  CHECK_RC(weft_msg_take_port(data, 0, &b->next_tx), 0);
  CHECK_RC(weft_msg_take_port(data, 1, &b->prev_rx), 0);
  weft_port_set_data(b->prev_rx, b);
  CHECK_RC(weft_port_start(b->prev_rx, bounce_on_ring), 0);
  if (weft_msg_xfer_count(data) == 3) {
    weft_port_t *moving = NULL;
    CHECK_RC(weft_msg_take_port(data, 2, &moving), 0);
    if (moving != NULL)
      bounce_adopt(b, moving);
  }
  return 0;
}

static void bounce_on_fixed_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(!"nothing is posted back on the moving end");
}

static void bounce_on_fixed_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  bounce.fixed_closes++;
  bounce.fixed_reason = info->reason;
  for (int i = 0; i < BOUNCERS; i++)
    CHECK_RC(weft_worker_terminate(bounce.workers[i]), 0);
}

static void bounce_on_exit(weft_worker_t *w, int code) {
  (void)w;
  CHECK(code == 1); /* terminated */
  bounce.exits++;
}

typedef struct {
  weft_port_t *tx;
  uint64_t n;
  uint64_t again;
} streamer_t;

static void streamer_main(void *arg) {
  streamer_t *s = arg;
  for (uint64_t i = 0; i < s->n; i++)
    s->again += ktest_post_retry(s->tx, ktest_msg_u64(i));
}

static void port_bounced_among_workers(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(bouncers, 0, sizeof(bouncers));
  memset(&bounce, 0, sizeof(bounce));
  bounce.n = ktest_scaled(100000, 5000);
  weft_port_t *fixed[2];
  assert_int_equal(weft_channel_new(ctx, fixed), 0);
  assert_int_equal(weft_port_on_close(fixed[0], bounce_on_fixed_close), 0);
  assert_int_equal(weft_port_start(fixed[0], bounce_on_fixed_msg), 0);
  weft_port_t *ring[BOUNCERS][2];
  for (int i = 0; i < BOUNCERS; i++)
    assert_int_equal(weft_channel_new(ctx, ring[i]), 0);
  for (int i = 0; i < BOUNCERS; i++) {
    weft_msg_t *data = ktest_msg_u64((uint64_t)i);
    assert_int_equal(weft_msg_add_port(data, ring[i][0]), 0);
    assert_int_equal(weft_msg_add_port(data, ring[(i + BOUNCERS - 1) % BOUNCERS][1]), 0);
    if (i == 0)
      assert_int_equal(weft_msg_add_port(data, fixed[1]), 0);
    weft_worker_options_t opts = {.entry = bounce_entry, .msg = data,
                                  .on_exit = bounce_on_exit};
    assert_int_equal(weft_worker_spawn(ctx, &opts, &bounce.workers[i]), 0);
  }
  streamer_t s = {.tx = fixed[0], .n = bounce.n};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, streamer_main, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&tid);
  uint64_t total = 0, handoffs = 0;
  for (int i = 0; i < BOUNCERS; i++) {
    total += bouncers[i].received;
    handoffs += bouncers[i].handoffs;
    assert_true(bouncers[i].received > 0);
  }
  printf("  %llu messages, %llu hand-offs, %llu EAGAIN retries\n", (unsigned long long)total,
         (unsigned long long)handoffs, (unsigned long long)s.again);
  assert_int_equal(atomic_load(&bounce.expect), bounce.n);
  assert_int_equal(total, bounce.n);
  assert_int_equal(bounce.fixed_closes, 1);
  assert_int_equal(bounce.fixed_reason, WEFT_ECLOSED);
  assert_int_equal(bounce.exits, BOUNCERS);
  ktest_finish_runtime(rt);
}

/* ---- a thread posts while the peer closes ---------------------------------- */

/* weft_port_post may be called from any thread while the posting end is
 * open; the peer may close at any time (the post then fails with
 * WEFT_ECLOSED). The peer here has settings (a close callback), which its
 * owner frees when it finishes closing. */
#define PC_AFTER 300

static struct {
  uint64_t got;     /* worker thread */
  int closes;       /* worker thread */
} pc_w;

static void pc_on_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  if (++pc_w.got == PC_AFTER)
    CHECK_RC(weft_port_close(port), 0);
}

static void pc_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  CHECK(info->reason == 0);
  pc_w.closes++;
}

static int pc_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  weft_port_t *port = NULL;
  CHECK_RC(weft_msg_take_port(data, 0, &port), 0);
  if (port == NULL)
    return -1;
  CHECK_RC(weft_port_on_close(port, pc_on_close), 0);
  CHECK_RC(weft_port_set_hwm(port, 64, 0), 0);
  CHECK_RC(weft_port_start(port, pc_on_msg), 0);
  return 0;
}

typedef struct {
  weft_port_t *tx;
  uint64_t posted;
  int last_rc;
} pc_poster_t;

static void pc_poster_main(void *arg) {
  pc_poster_t *t = arg;
  for (;;) {
    weft_msg_t *m = ktest_msg_u64(t->posted);
    int rc = weft_port_post(t->tx, m);
    if (rc == 0) {
      t->posted++;
      continue;
    }
    weft_msg_free(m);
    if (rc == WEFT_EAGAIN) {
      sched_yield();
      continue;
    }
    t->last_rc = rc;
    return;
  }
}

static void post_while_peer_closes(void **state) {
  (void)state;
  int rounds = (int)ktest_scaled(200, 20);
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  for (int r = 0; r < rounds; r++) {
    memset(&pc_w, 0, sizeof(pc_w));
    weft_port_t *p[2];
    assert_int_equal(weft_channel_new(ctx, p), 0);
    weft_msg_t *data = NULL;
    assert_int_equal(weft_msg_new(&data), 0);
    assert_int_equal(weft_msg_add_port(data, p[1]), 0);
    weft_worker_options_t o = {.entry = pc_entry, .msg = data};
    weft_worker_t *w = NULL;
    assert_int_equal(weft_worker_spawn(ctx, &o, &w), 0);
    pc_poster_t t = {.tx = p[0]};
    uv_thread_t tid;
    assert_int_equal(uv_thread_create(&tid, pc_poster_main, &t), 0);
    assert_int_equal(weft_runtime_run(rt), 0); /* until the worker exits */
    uv_thread_join(&tid);
    assert_int_equal(t.last_rc, WEFT_ECLOSED);
    assert_true(t.posted >= PC_AFTER);
    assert_int_equal(pc_w.got, PC_AFTER);
    assert_int_equal(pc_w.closes, 1);
    assert_int_equal(weft_port_close(p[0]), 0);
  }
  ktest_finish_runtime(rt);
}

/* ---- stopped port: receive everything, post again, start ------------------- */

/* A stopped port whose token was parked by the loop, emptied with
 * weft_port_receive, then posted to (which schedules it again) and started in
 * the same turn: it must be scheduled once. Another port scheduled in
 * between must still be run (a second push of the same ready-queue node cuts
 * the nodes queued after the first push out of the queue). */
static int restart_msgs, other_msgs;

static void restart_on_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == 100);
  weft_msg_free(m);
  restart_msgs++;
  CHECK_RC(weft_port_close(port), 0);
}

static void other_on_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == 200);
  weft_msg_free(m);
  other_msgs++;
  CHECK_RC(weft_port_close(port), 0);
}

static void receive_drained_then_start(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  restart_msgs = other_msgs = 0;
  weft_port_t *p[2], *q[2], *k[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_channel_new(ctx, q), 0);
  assert_int_equal(weft_channel_new(ctx, k), 0);
  for (uint64_t i = 0; i < 3; i++)
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64(i)), 0);
  /* One loop turn (kept alive by another started port): the context finds
   * p[1] stopped and parks its token. */
  assert_int_equal(weft_port_start(k[1], both_on_msg), 0);
  uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  assert_int_equal(weft_port_close(k[1]), 0);
  uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  weft_msg_t *m = NULL;
  for (uint64_t i = 0; i < 3; i++) {
    assert_int_equal(weft_port_receive(p[1], &m), 0);
    assert_int_equal(ktest_msg_value(m), i);
    weft_msg_free(m);
  }
  assert_int_equal(weft_port_receive(p[1], &m), WEFT_ENOENT);
  assert_int_equal(weft_port_start(q[1], other_on_msg), 0);
  /* 0 -> 1 schedules p[1], then q[1]; starting p[1] finds the parked token. */
  assert_int_equal(weft_port_post(p[0], ktest_msg_u64(100)), 0);
  assert_int_equal(weft_port_post(q[0], ktest_msg_u64(200)), 0);
  assert_int_equal(weft_port_start(p[1], restart_on_msg), 0);
  for (int i = 0; i < 1000 && (restart_msgs == 0 || other_msgs == 0); i++)
    uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  CHECK(restart_msgs == 1);
  CHECK(other_msgs == 1);
  ktest_finish_runtime(rt);
}

/* ---- an unbound port, received on a thread that has no context ------------- */

typedef struct {
  weft_msg_t *carrier; /* holds the port */
  uint64_t n;
  uint64_t got;
  int take_rc, close_rc;
} unbound_t;

static void unbound_main(void *arg) {
  unbound_t *t = arg;
  weft_port_t *port = NULL;
  t->take_rc = weft_msg_take_port(t->carrier, 0, &port);
  weft_msg_free(t->carrier);
  if (port == NULL)
    return;
  while (t->got < t->n) {
    weft_msg_t *m = NULL;
    int rc = weft_port_receive(port, &m);
    if (rc == WEFT_ENOENT) {
      sched_yield();
      continue;
    }
    if (rc != 0) {
      CHECK_RC(rc, 0);
      break;
    }
    CHECK(ktest_msg_value(m) == t->got);
    weft_msg_free(m);
    t->got++;
  }
  t->close_rc = weft_port_close(port);
}

static int unbound_closes;

static void unbound_on_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  CHECK(info->reason == WEFT_ECLOSED);
  unbound_closes++;
}

static void receive_on_unbound_port(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  unbound_closes = 0;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_on_close(p[0], unbound_on_close), 0);
  assert_int_equal(weft_port_start(p[0], both_on_msg), 0);
  unbound_t t = {.n = ktest_scaled(20000, 500)};
  assert_int_equal(weft_msg_new(&t.carrier), 0);
  assert_int_equal(weft_msg_add_port(t.carrier, p[1]), 0);
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, unbound_main, &t), 0);
  for (uint64_t i = 0; i < t.n; i++)
    ktest_post_retry(p[0], ktest_msg_u64(i));
  /* p[0] is started and ref'd: the loop runs until the thread's close. */
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&tid);
  assert_int_equal(t.take_rc, 0);
  assert_int_equal(t.got, t.n);
  assert_int_equal(t.close_rc, 0);
  assert_int_equal(unbound_closes, 1);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(fifo_own_channels),
      T(fifo_same_port),
      T(exactly_once_8_threads),
      T(close_after_messages_same_thread),
      T(close_after_messages_cross_thread),
      T(close_both_ends_at_once),
      T(post_port_on_own_channel),
      T(post_on_closed_port),
      T(null_and_wrong_thread_arguments),
      T(ref_and_unref),
      T(carry_limits_each_alone),
      T(port_bounced_among_workers),
      T(post_while_peer_closes),
      /* Last: weft_port_receive (these found kernel bugs; a hang or a crash
       * stops the file). */
      T(receive_drained_then_start),
      T(receive_on_unbound_port),
      T(receive_without_loop),
      T(receive_from_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
