/* test_port_batch.c: the producer's batch (runtime/port.c): posts a context
 * makes inside its delivery turn to a port of another context wait, linked,
 * and are published together. Each test pins one rule of that contract:
 *
 *   - FIFO per channel holds across every kind of flush (full, another
 *     destination, the end of the turn);
 *   - the message bound counts what waits unpublished: WEFT_EAGAIN comes at
 *     exactly the hwm, and the drain callback follows;
 *   - a post that does not come from a delivery turn (a thread without a
 *     context, a timer callback) is published at once: it arrives without a
 *     later post to push it out;
 *   - a close made with a batch pending follows the batch (every message,
 *     then the close); a batch that finds its peer closed is counted in the
 *     sender's close info as undelivered.
 *
 * The consumer is a worker whose entry can hold (spin on a flag, bounded)
 * before its loop runs, so that what the main context posts meanwhile stays
 * where the rule says. Callbacks and foreign threads record failures with
 * CHECK; each test ends with ktest_finish_runtime (nothing failed, nothing
 * leaked). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "ktest.h"
#include "weft.h"
#include "weft_impl.h"

static void expect_close_code_0(weft_worker_t *w, int code) {
  (void)w;
  CHECK(code == 0);
}

/* ---- FIFO across flushes ------------------------------------------------- */

/* The main context posts NCHUNK chunks of 1, 2, ..., NCHUNK messages,
 * alternating between two channels to one worker, all inside one delivery
 * turn: the batch is flushed when full (64), on every switch of destination,
 * and at the end of the turn. The worker checks the order on each port. */
#define NCHUNK 150u
#define OP_READY UINT64_MAX

static struct {
  weft_port_t *a, *b;        /* main's ends */
  weft_port_t *wa, *wb;      /* the worker's ends */
  uint64_t next[2];          /* worker: seq expected next on each port */
  uint64_t total[2];         /* what each port should get */
  atomic_int done;           /* worker: both ports got everything */
} ff;

static void ff_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  int i = port == ff.wb;
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(v == ff.next[i]);
  ff.next[i] = v + 1;
  if (ff.next[0] == ff.total[0] && ff.next[1] == ff.total[1]) {
    atomic_store(&ff.done, 1);
    weft_port_close(ff.wa); /* both closed: the worker ends */
    weft_port_close(ff.wb);
  }
}

static int ff_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  ff.wa = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_msg_take_port(data, 0, &ff.wb), 0);
  if (ff.wb == NULL)
    return -1;
  CHECK_RC(weft_port_start(ff.wa, ff_on_worker_msg), 0);
  CHECK_RC(weft_port_start(ff.wb, ff_on_worker_msg), 0);
  CHECK_RC(weft_port_post(ff.wa, ktest_msg_u64(OP_READY)), 0);
  return 0;
}

static void ff_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t op = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(op == OP_READY);
  uint64_t seq[2] = {0, 0};
  for (uint32_t c = 1; c <= NCHUNK; c++) {
    int i = c % 2;
    for (uint32_t k = 0; k < c; k++)
      CHECK_RC(weft_port_post(i ? ff.b : ff.a, ktest_msg_u64(seq[i]++)), 0);
  }
  (void)port;
}

static void batch_fifo_across_flushes(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&ff, 0, sizeof(ff));
  for (uint32_t c = 1; c <= NCHUNK; c++)
    ff.total[c % 2] += c;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  ff.b = p[0];
  assert_int_equal(weft_port_start(ff.b, ff_on_main_msg), 0);
  weft_msg_t *data = NULL;
  assert_int_equal(weft_msg_new(&data), 0);
  assert_int_equal(weft_msg_add_port(data, p[1]), 0);
  weft_worker_options_t opts = {
      .entry = ff_entry, .msg = data, .on_message = ff_on_main_msg, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  ff.a = weft_worker_port(w);
  assert_int_equal(weft_runtime_run(rt), 0); /* the worker closes both: it exits */
  assert_int_equal(atomic_load(&ff.done), 1);
  assert_int_equal(ff.next[0], ff.total[0]);
  assert_int_equal(ff.next[1], ff.total[1]);
  ktest_finish_runtime(rt);
}

/* ---- the bound counts the batch ------------------------------------------ */

/* The worker's port holds HWM messages at most. Its entry says READY and
 * holds until main has posted: main's posts (in its turn) stop with
 * WEFT_EAGAIN after exactly HWM, of which the first ones wait unpublished
 * (the port shows none pending). Then the worker takes them; the drain
 * callback lets main post the refused message, which arrives last. */
#define HWM 100u

static struct {
  weft_port_t *port;       /* main's end */
  weft_msg_t *held;        /* the refused message */
  uint64_t accepted;       /* before the first EAGAIN */
  int64_t pending_early;   /* the worker port's count after 10 posts in the turn */
  uint64_t got, drains;
  atomic_int release;      /* main -> worker entry: go on */
} bd;

static void bd_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == bd.got);
  weft_msg_free(m);
  if (++bd.got == HWM + 1)
    weft_port_close(port);
}

static int bd_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_set_hwm(port, HWM, 0), 0);
  CHECK_RC(weft_port_start(port, bd_on_worker_msg), 0);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(OP_READY)), 0);
  CHECK(ktest_wait_flag(&bd.release)); /* not taking anything until main is done */
  return 0;
}

static void bd_on_drain(weft_port_t *port) {
  bd.drains++;
  if (bd.held == NULL)
    return;
  CHECK_RC(weft_port_post(port, bd.held), 0);
  bd.held = NULL;
}

static void bd_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == OP_READY);
  weft_msg_free(m);
  weft_port_t *to = weft__port_peer(port);
  for (uint64_t i = 0; i < 2 * HWM; i++) {
    weft_msg_t *msg = ktest_msg_u64(i);
    int rc = weft_port_post(port, msg);
    if (rc == WEFT_EAGAIN) {
      bd.held = msg;
      break;
    }
    CHECK_RC(rc, 0);
    bd.accepted++;
    if (bd.accepted == 10)
      bd.pending_early = atomic_load(&to->pending);
  }
  atomic_store(&bd.release, 1);
}

static void batch_bound_counts_unpublished(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&bd, 0, sizeof(bd));
  weft_worker_options_t opts = {
      .entry = bd_entry, .on_message = bd_on_main_msg, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  bd.port = weft_worker_port(w);
  assert_int_equal(weft_port_on_drain(bd.port, bd_on_drain), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  weft_msg_free(bd.held); /* only if the drain never came (a CHECK says so) */
  assert_int_equal(bd.accepted, HWM);
  assert_int_equal(bd.pending_early, 0); /* they waited in the batch */
  assert_true(bd.drains >= 1);
  assert_int_equal(bd.got, HWM + 1);
  ktest_finish_runtime(rt);
}

/* ---- posts from outside a delivery turn are published at once ------------ */

/* Three single posts to one worker, each followed by nothing: from a thread
 * without a context (on main's port), from a timer callback on main's loop,
 * and the worker's echo from its delivery turn. Each must arrive by itself;
 * the worker echoes every message and main counts the echoes. A timer ends
 * the test after 10 s if one stays behind (the count then says which). */
static struct {
  weft_port_t *port;
  uv_timer_t tick, deadline;
  uv_thread_t tid;
  uint64_t echoes;
  bool timed_out;
} fo;

static void fo_echo(weft_port_t *port, weft_msg_t *m) {
  CHECK_RC(weft_port_post(port, m), 0);
}

static int fo_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  return weft_port_start(port, fo_echo);
}

static void fo_foreign_main(void *arg) {
  (void)arg;
  CHECK(weft_ctx_current() == NULL);
  CHECK_RC(weft_port_post(fo.port, ktest_msg_u64(1)), 0);
}

static void fo_on_tick(uv_timer_t *t) {
  (void)t;
  CHECK_RC(weft_port_post(fo.port, ktest_msg_u64(2)), 0);
}

static void fo_end(void) {
  uv_close((uv_handle_t *)&fo.tick, NULL);
  uv_close((uv_handle_t *)&fo.deadline, NULL);
  weft_port_close(fo.port);
}

static void fo_on_deadline(uv_timer_t *t) {
  (void)t;
  fo.timed_out = true;
  fo_end();
}

static void fo_on_echo(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(v == 1 || v == 2);
  if (++fo.echoes == 1) {
    uv_timer_start(&fo.tick, fo_on_tick, 1, 0); /* the next one from a timer */
  } else if (fo.echoes == 2) {
    fo_end();
  }
}

static void batch_posts_outside_a_turn_arrive_alone(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&fo, 0, sizeof(fo));
  weft_worker_options_t opts = {
      .entry = fo_entry, .on_message = fo_on_echo, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  fo.port = weft_worker_port(w);
  uv_loop_t *loop = weft_ctx_loop(ctx);
  assert_int_equal(uv_timer_init(loop, &fo.tick), 0);
  assert_int_equal(uv_timer_init(loop, &fo.deadline), 0);
  assert_int_equal(uv_timer_start(&fo.deadline, fo_on_deadline, 10000, 0), 0);
  assert_int_equal(uv_thread_create(&fo.tid, fo_foreign_main, NULL), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  uv_thread_join(&fo.tid);
  assert_false(fo.timed_out);
  assert_int_equal(fo.echoes, 2);
  ktest_finish_runtime(rt);
}

/* ---- a close with a batch pending ---------------------------------------- */

/* Main posts K messages and closes its end in the same turn, then waits
 * there until the worker's close callback has run: the worker got all K
 * before the close (were the close raised before the batch is published, the
 * worker would see it first). */
#define K 10u

static struct {
  uint64_t got, got_at_close;
  int closes;
  uint64_t undelivered;
  int sender_closes;
  int64_t pending_early;
  atomic_int posted, closed;
} cb;

static void cb_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == cb.got);
  weft_msg_free(m);
  cb.got++;
}

static void cb_on_worker_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  (void)info;
  cb.closes++;
  cb.got_at_close = cb.got;
  atomic_store(&cb.closed, 1);
}

static int cb_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_on_close(port, cb_on_worker_close), 0);
  CHECK_RC(weft_port_start(port, cb_on_worker_msg), 0);
  return weft_port_post(port, ktest_msg_u64(OP_READY));
}

static void cb_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  for (uint64_t i = 0; i < K; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(i)), 0);
  CHECK_RC(weft_port_close(port), 0);
  CHECK(ktest_wait_flag(&cb.closed));
}

static void batch_close_follows_pending_batch(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&cb, 0, sizeof(cb));
  weft_worker_options_t opts = {
      .entry = cb_entry, .on_message = cb_on_main_msg, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(cb.got, K);
  assert_int_equal(cb.closes, 1);
  assert_int_equal(cb.got_at_close, K);
  ktest_finish_runtime(rt);
}

/* The worker closes its end while main's batch for it is pending: main posts
 * K in its turn, then waits (in the turn) until the worker has closed; the
 * batch published at the end of the turn finds the peer closed, and main's
 * close info counts all K as undelivered. */
static void cp_on_sender_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  cb.sender_closes++;
  cb.undelivered = info->undelivered;
}

static int cp_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_start(port, cb_on_worker_msg), 0);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(OP_READY)), 0);
  CHECK(ktest_wait_flag(&cb.posted));
  CHECK_RC(weft_port_close(port), 0);
  atomic_store(&cb.closed, 1);
  return 0;
}

static void cp_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  for (uint64_t i = 0; i < K; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(i)), 0);
  cb.pending_early = atomic_load(&weft__port_peer(port)->pending);
  atomic_store(&cb.posted, 1);
  CHECK(ktest_wait_flag(&cb.closed));
}

static void batch_to_closed_peer_counts_undelivered(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&cb, 0, sizeof(cb));
  weft_worker_options_t opts = {
      .entry = cp_entry, .on_message = cp_on_main_msg, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  assert_int_equal(weft_port_on_close(weft_worker_port(w), cp_on_sender_close), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(cb.pending_early, 0); /* they waited in the batch */
  assert_int_equal(cb.got, 0);
  assert_int_equal(cb.sender_closes, 1);
  assert_int_equal(cb.undelivered, K);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(batch_fifo_across_flushes),
      T(batch_bound_counts_unpublished),
      T(batch_posts_outside_a_turn_arrive_alone),
      T(batch_close_follows_pending_batch),
      T(batch_to_closed_peer_counts_undelivered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
