/* test_backpressure.c: bounded ports. Past a port's high-water mark (in
 * messages, or in bytes) weft_port_post returns WEFT_EAGAIN and the message
 * stays the caller's; once the consumer has brought the queue below half, the
 * poster's drain callback fires once for the episode, and posting works
 * again. Same thread, across threads (a producer worker against a consumer
 * the main thread stops and restarts), many posters against one bound, and
 * a message heavier than the byte bound waits while others do.
 *
 * Callbacks record failures with CHECK; each test ends with
 * weft_runtime_free() == 0, no CHECK failed, and no weft allocation
 * outstanding. A watchdog aborts a hung test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "weft.h"

/* ---- one thread: post until EAGAIN, restart the consumer, drain ------------- */

#define HWM 64

static struct {
  weft_port_t *tx, *rx;
  weft_msg_t *held;        /* the message refused with EAGAIN */
  uint64_t next_seq;       /* next to post */
  uint64_t got;            /* consumer */
  uint64_t total;          /* to post in all */
  int episodes, drains;
  bool blocked;
  int tx_closes;
  bool tx_started;
  size_t payload;          /* bytes of bin per message (byte-bound test) */
} bp;

static weft_msg_t *bp_msg(uint64_t seq) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0)
    abort();
  if (bp.payload == 0) {
    if (weft_msg_put_u64(m, NULL, seq) != 0)
      abort();
  } else {
    uint8_t body[1024];
    memset(body, (int)(seq & 0xff), sizeof(body));
    if (weft_msg_put_map(m, 2) != 0 || weft_msg_put_u64(m, "seq", seq) != 0 ||
        weft_msg_put_bin(m, "pad", body, bp.payload) != 0)
      abort();
  }
  return m;
}

static uint64_t bp_seq(weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, bp.payload ? "seq" : NULL, &v), 0);
  return v;
}

/* Post until refused or done. Returns how many went. */
static uint64_t bp_fill(void) {
  uint64_t n = 0;
  while (bp.next_seq < bp.total) {
    weft_msg_t *m = bp.held != NULL ? bp.held : bp_msg(bp.next_seq);
    bp.held = NULL;
    int rc = weft_port_post(bp.tx, m);
    if (rc == WEFT_EAGAIN) {
      /* Still ours, intact; and still refused. */
      CHECK(bp_seq(m) == bp.next_seq);
      CHECK_RC(weft_port_post(bp.tx, m), WEFT_EAGAIN);
      bp.held = m;
      bp.blocked = true;
      bp.episodes++;
      return n;
    }
    CHECK_RC(rc, 0);
    bp.next_seq++;
    n++;
  }
  return n;
}

static void bp_on_drain(weft_port_t *port) {
  CHECK(port == bp.tx);
  CHECK(bp.blocked); /* once per episode */
  bp.blocked = false;
  bp.drains++;
  /* Below half: at least half the bound fits again. */
  uint64_t before = bp.next_seq;
  bp_fill();
  CHECK(bp.next_seq - before >= HWM / 2 || bp.next_seq == bp.total || bp.payload);
}

static void bp_on_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t seq = bp_seq(m);
  CHECK(seq == bp.got);
  weft_msg_free(m);
  bp.got++;
  if (bp.got == bp.total)
    CHECK_RC(weft_port_close(port), 0);
}

static void bp_tx_noop(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(!"nothing comes back");
}

static void bp_on_tx_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  /* The poster hears the consumer's close, started or not. */
  CHECK(info->reason == WEFT_ECLOSED);
  CHECK(info->undelivered == 0);
  bp.tx_closes++;
}

static void bp_setup(weft_ctx_t *ctx, uint64_t total, uint32_t hwm_msgs, size_t hwm_bytes,
                     bool start_tx) {
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  bp.tx = p[0];
  bp.rx = p[1];
  bp.total = total;
  assert_int_equal(weft_port_set_hwm(bp.rx, hwm_msgs, hwm_bytes), 0);
  assert_int_equal(weft_port_on_drain(bp.tx, bp_on_drain), 0);
  assert_int_equal(weft_port_on_close(bp.tx, bp_on_tx_close), 0);
  bp.tx_started = start_tx;
  if (start_tx)
    assert_int_equal(weft_port_start(bp.tx, bp_tx_noop), 0);
}

static void eagain_past_message_bound(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&bp, 0, sizeof(bp));
  bp_setup(ctx, 10 * HWM, HWM, 0, true);
  /* The consumer is stopped: exactly HWM fit. */
  assert_int_equal(bp_fill(), HWM);
  assert_true(bp.blocked);
  assert_non_null(bp.held);
  assert_int_equal(weft_port_pending(bp.rx), HWM);
  assert_int_equal(bp.episodes, 1);
  /* Started, then stopped again before the loop ran: still nothing moves. */
  assert_int_equal(weft_port_start(bp.rx, bp_on_msg), 0);
  assert_int_equal(weft_port_stop(bp.rx), 0);
  /* Restart the consumer and let the loop run to the end. */
  assert_int_equal(weft_port_start(bp.rx, bp_on_msg), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(bp.got, bp.total);
  assert_null(bp.held);
  assert_false(bp.blocked);
  assert_true(bp.episodes >= 2);
  assert_int_equal(bp.drains, bp.episodes);
  assert_int_equal(bp.tx_closes, 1);
  ktest_finish_runtime(rt);
}

static void eagain_past_byte_bound(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&bp, 0, sizeof(bp));
  /* The kernel counts messages of 512 bytes and more against the byte bound
   * (smaller ones are bounded by the message count): ~615 bytes a message
   * against 6000 bytes, 9 fit, the 10th does not. */
  bp.payload = 600;
  bp_setup(ctx, 100, 1000000, 6000, true);
  uint64_t went = bp_fill();
  if (went < 8 || went > 10)
    fail_msg("%llu messages of ~615 bytes went under a 6000-byte bound",
             (unsigned long long)went);
  assert_true(bp.blocked);
  assert_int_equal(weft_port_pending(bp.rx), went);
  /* Bigger than the whole byte bound while bytes wait: it waits too (the
   * bound limits what waits; alone in an empty queue it would pass). */
  weft_msg_t *big = NULL;
  assert_int_equal(weft_msg_new(&big), 0);
  static uint8_t body[8000];
  assert_int_equal(weft_msg_put_bin(big, NULL, body, sizeof(body)), 0);
  assert_int_equal(weft_port_post(bp.tx, big), WEFT_EAGAIN);
  weft_msg_free(big);
  /* An owned buffer counts against the byte bound too. */
  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, 8192), 0);
  assert_int_equal(weft_msg_new(&big), 0);
  assert_int_equal(weft_msg_add_buf(big, buf), 0);
  weft_buf_free(buf);
  assert_int_equal(weft_port_post(bp.tx, big), WEFT_EAGAIN);
  weft_msg_free(big);
  assert_int_equal(weft_port_start(bp.rx, bp_on_msg), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(bp.got, bp.total);
  assert_int_equal(bp.drains, bp.episodes);
  assert_true(bp.episodes >= 2);
  ktest_finish_runtime(rt);
}

/* The drain callback of a port that only posts (never started): the contract
 * (port.h, weft_port_drain_cb) does not ask the poster to be started. */
static void drain_reaches_unstarted_poster(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&bp, 0, sizeof(bp));
  bp_setup(ctx, 4 * HWM, HWM, 0, false);
  assert_int_equal(bp_fill(), HWM);
  assert_int_equal(weft_port_start(bp.rx, bp_on_msg), 0);
  /* The consumer takes the first HWM, then depends on the drain callback to
   * post the rest. One thread: if the drain callback has not come after many
   * loop turns, it never will. */
  for (int i = 0; i < 10000 && bp.got < bp.total; i++)
    uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  CHECK(bp.drains >= 1);
  CHECK(bp.got == bp.total);
  weft_msg_free(bp.held);
  bp.held = NULL;
  ktest_finish_runtime(rt);
}

/* ---- across threads: a producer worker, a consumer main stops and restarts -- */

#define XT_HWM 100
#define XT_STOP_EVERY 2500

static struct {
  /* worker thread */
  weft_port_t *parent, *side;
  weft_msg_t *held;
  uint64_t next, total;
  int episodes, drains;
  bool blocked;
} xw;

static struct {
  /* main thread */
  weft_worker_t *w;
  uint64_t got, total;
  int stops, blocked_notes;
  uint64_t last_note;  /* the worker's next seq when it last said it is blocked */
  bool stopped;
  int exits, code;
  int side_closes;
  int worker_episodes, worker_drains;
} xm;

static void xw_fill(void) {
  while (xw.next < xw.total) {
    weft_msg_t *m = xw.held != NULL ? xw.held : ktest_msg_u64(xw.next);
    xw.held = NULL;
    int rc = weft_port_post(xw.parent, m);
    if (rc == WEFT_EAGAIN) {
      xw.held = m;
      xw.blocked = true;
      xw.episodes++;
      /* Tell main (on the side channel) that we wait for a drain. */
      CHECK_RC(weft_port_post(xw.side, ktest_msg_u64(xw.next)), 0);
      return;
    }
    CHECK_RC(rc, 0);
    xw.next++;
  }
  /* All posted: report the counts, then close (main sees every message
   * first, then the close, then on_exit). */
  weft_msg_t *r = NULL;
  CHECK_RC(weft_msg_new(&r), 0);
  CHECK_RC(weft_msg_put_map(r, 2), 0);
  CHECK_RC(weft_msg_put_i64(r, "episodes", xw.episodes), 0);
  CHECK_RC(weft_msg_put_i64(r, "drains", xw.drains), 0);
  CHECK_RC(weft_port_post(xw.side, r), 0);
  CHECK_RC(weft_port_close(xw.side), 0);
  CHECK_RC(weft_port_close(xw.parent), 0);
}

static void xw_on_drain(weft_port_t *port) {
  CHECK(port == xw.parent);
  CHECK(xw.blocked);
  xw.blocked = false;
  xw.drains++;
  xw_fill();
}

static void xw_on_parent_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(!"main sends nothing on the parent port");
}

static int xw_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  memset(&xw, 0, sizeof(xw));
  CHECK_RC(weft_msg_get_u64(data, NULL, &xw.total), 0);
  CHECK_RC(weft_msg_take_port(data, 0, &xw.side), 0);
  xw.parent = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_on_drain(xw.parent, xw_on_drain), 0);
  /* Started so that drain events are delivered; ref'd: keeps us alive. */
  CHECK_RC(weft_port_start(xw.parent, xw_on_parent_msg), 0);
  xw_fill();
  return 0;
}

static void xm_on_msg(weft_port_t *port, weft_msg_t *m) {
  CHECK(ktest_msg_value(m) == xm.got);
  weft_msg_free(m);
  xm.got++;
  /* A note that came before this stop, about messages not consumed yet, says
   * the worker waits for our consumption to drain: stopped now, with half
   * the bound or more waiting, no drain would come and no note either (the
   * worker posts its stream in batches, so it often fills up first). */
  if (xm.got % XT_STOP_EVERY == 0 && xm.got < xm.total && xm.last_note <= xm.got) {
    /* Stop consuming; the worker fills up and tells us on the side channel. */
    CHECK_RC(weft_port_stop(port), 0);
    xm.stopped = true;
    xm.stops++;
  }
}

static void xm_on_side(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  int64_t v = 0;
  if (weft_msg_get_i64(m, "episodes", &v) == 0) {
    xm.worker_episodes = (int)v;
    CHECK_RC(weft_msg_get_i64(m, "drains", &v), 0);
    xm.worker_drains = (int)v;
    weft_msg_free(m);
    return;
  }
  xm.last_note = ktest_msg_value(m);
  weft_msg_free(m);
  xm.blocked_notes++;
  if (xm.stopped || xm.got == 0) {
    xm.stopped = false;
    CHECK_RC(weft_port_start(weft_worker_port(xm.w), xm_on_msg), 0);
  }
}

static void xm_on_side_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  CHECK(info->reason == WEFT_ECLOSED);
  xm.side_closes++;
}

static void xm_on_exit(weft_worker_t *w, int code) {
  (void)w;
  xm.exits++;
  xm.code = code;
}

static void eagain_and_drain_across_threads(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&xm, 0, sizeof(xm));
  xm.total = ktest_scaled(50000, 5000);
  weft_port_t *side[2];
  assert_int_equal(weft_channel_new(ctx, side), 0);
  assert_int_equal(weft_port_on_close(side[1], xm_on_side_close), 0);
  assert_int_equal(weft_port_start(side[1], xm_on_side), 0);
  weft_msg_t *data = ktest_msg_u64(xm.total);
  assert_int_equal(weft_msg_add_port(data, side[0]), 0);
  /* No on_message: the worker's port starts stopped; main starts it when the
   * worker says it is blocked. */
  weft_worker_options_t o = {.entry = xw_entry, .msg = data, .on_exit = xm_on_exit,
                             .port_hwm_msgs = XT_HWM};
  assert_int_equal(weft_worker_spawn(ctx, &o, &xm.w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  printf("  %llu messages, %d consumer stops, %d EAGAIN episodes, %d drains\n",
         (unsigned long long)xm.got, xm.stops, xm.worker_episodes, xm.worker_drains);
  assert_int_equal(xm.got, xm.total);
  assert_int_equal(xm.exits, 1);
  assert_int_equal(xm.code, 0);
  assert_int_equal(xm.side_closes, 1);
  assert_true(xm.worker_episodes >= xm.stops);
  assert_int_equal(xm.worker_drains, xm.worker_episodes);
  assert_int_equal(xm.blocked_notes, xm.worker_episodes);
  ktest_finish_runtime(rt);
}

/* ---- many posters against one bound ------------------------------------------- */

#define MP_THREADS 4
#define MP_HWM 50

typedef struct {
  uv_thread_t tid;
  weft_port_t *tx;
  uint64_t id, n, again;
} mp_thread_t;

static struct {
  uint64_t expect[MP_THREADS];
  uint64_t got, total;
  size_t max_pending;
} mp;

static void mp_main(void *arg) {
  mp_thread_t *t = arg;
  for (uint64_t i = 0; i < t->n; i++)
    t->again += ktest_post_retry(t->tx, ktest_msg_u64((t->id << 40) | i));
}

static void mp_on_msg(weft_port_t *port, weft_msg_t *m) {
  size_t pending = weft_port_pending(port) + 1;
  if (pending > mp.max_pending)
    mp.max_pending = pending;
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  uint64_t id = v >> 40, seq = v & ((1ull << 40) - 1);
  CHECK(id < MP_THREADS);
  if (id < MP_THREADS) {
    CHECK(seq == mp.expect[id]);
    mp.expect[id] = seq + 1;
  }
  if (++mp.got == mp.total)
    CHECK_RC(weft_port_close(port), 0);
}

static void many_posters_one_bound(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&mp, 0, sizeof(mp));
  uint64_t n = ktest_scaled(50000, 2000);
  mp.total = n * MP_THREADS;
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_set_hwm(p[1], MP_HWM, 0), 0);
  assert_int_equal(weft_port_start(p[1], mp_on_msg), 0);
  mp_thread_t t[MP_THREADS];
  for (int i = 0; i < MP_THREADS; i++) {
    t[i] = (mp_thread_t){.tx = p[0], .id = (uint64_t)i, .n = n};
    assert_int_equal(uv_thread_create(&t[i].tid, mp_main, &t[i]), 0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  uint64_t again = 0;
  for (int i = 0; i < MP_THREADS; i++) {
    uv_thread_join(&t[i].tid);
    again += t[i].again;
  }
  printf("  %llu messages, %llu EAGAIN, most queued %zu (bound %d)\n",
         (unsigned long long)mp.got, (unsigned long long)again, mp.max_pending, MP_HWM);
  assert_int_equal(mp.got, mp.total);
  for (int i = 0; i < MP_THREADS; i++)
    assert_int_equal(mp.expect[i], n);
  /* Concurrent posters may each pass the check once: at most one over each. */
  assert_true(mp.max_pending <= MP_HWM + MP_THREADS);
  ktest_finish_runtime(rt);
}

/* ---- the drain comes while the consumer still has half a window ------------ */

/* A worker fills main's port (bound MT_HWM) and waits for its drain; main
 * then consumes and, with a quarter of the window still queued, blocks in
 * its callback until the worker's drain callback ran. The drain is due as
 * the queue crosses half, not when main's delivery turn ends (which would be
 * after the whole window: a poster woken only then finds its consumer idle,
 * and both wait a wake-up). Without it main waits out the deadline. */

#define MT_HWM 64
#define MT_BLOCK_AT (MT_HWM / 2 + MT_HWM / 4)

static struct {
  weft_port_t *parent, *side;
  weft_msg_t *held;
  uint64_t next;
} mw;

static struct {
  uv_mutex_t lock;
  uv_cond_t cond;
  bool drained;
  uint64_t left_at_drain;  /* messages main had not taken when the drain ran */
  _Atomic uint64_t got;
} mt;

static struct {
  weft_worker_t *w;
  bool waited;
  int exits, code;
} mm;

static void mw_on_drain(weft_port_t *port) {
  CHECK(port == mw.parent);
  uv_mutex_lock(&mt.lock);
  mt.drained = true;
  mt.left_at_drain = MT_HWM - atomic_load(&mt.got);
  uv_cond_signal(&mt.cond);
  uv_mutex_unlock(&mt.lock);
  weft_msg_free(mw.held);
  mw.held = NULL;
  CHECK_RC(weft_port_close(mw.side), 0);
  CHECK_RC(weft_port_close(mw.parent), 0);
}

static void mw_on_parent_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  weft_msg_free(m);
  CHECK(!"main sends nothing on the parent port");
}

static int mw_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  memset(&mw, 0, sizeof(mw));
  CHECK_RC(weft_msg_take_port(data, 0, &mw.side), 0);
  mw.parent = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_on_drain(mw.parent, mw_on_drain), 0);
  CHECK_RC(weft_port_start(mw.parent, mw_on_parent_msg), 0);
  for (int i = 0; i <= MT_HWM + 1; i++) {
    weft_msg_t *m = ktest_msg_u64(mw.next);
    int rc = weft_port_post(mw.parent, m);
    if (rc == WEFT_EAGAIN) {
      mw.held = m;
      CHECK_RC(weft_port_post(mw.side, ktest_msg_u64(mw.next)), 0);  /* "blocked" */
      return 0;
    }
    CHECK_RC(rc, 0);
    mw.next++;
  }
  CHECK(!"the bound never refused a post");
  return 0;
}

static void mm_on_msg(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == atomic_load(&mt.got));
  weft_msg_free(m);
  uint64_t got = atomic_fetch_add(&mt.got, 1) + 1;
  if (got != MT_BLOCK_AT)
    return;
  /* A quarter of the window is still queued here: the poster must hear. */
  uint64_t deadline = uv_hrtime() + 10 * 1000000000ull;
  uv_mutex_lock(&mt.lock);
  while (!mt.drained && uv_hrtime() < deadline)
    (void)uv_cond_timedwait(&mt.cond, &mt.lock, 100 * 1000000ull);
  mm.waited = mt.drained;
  uv_mutex_unlock(&mt.lock);
  CHECK(mm.waited);
}

static void mm_on_side(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  CHECK(ktest_msg_value(m) == MT_HWM);  /* the worker filled the window exactly */
  weft_msg_free(m);
  CHECK_RC(weft_port_start(weft_worker_port(mm.w), mm_on_msg), 0);
}

static void mm_on_exit(weft_worker_t *w, int code) {
  (void)w;
  mm.exits++;
  mm.code = code;
}

static void drain_comes_before_the_queue_empties(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&mm, 0, sizeof(mm));
  mt.drained = false;
  mt.left_at_drain = 0;
  atomic_store(&mt.got, 0);
  assert_int_equal(uv_mutex_init(&mt.lock), 0);
  assert_int_equal(uv_cond_init(&mt.cond), 0);
  weft_port_t *side[2];
  assert_int_equal(weft_channel_new(ctx, side), 0);
  assert_int_equal(weft_port_start(side[1], mm_on_side), 0);
  weft_msg_t *data = ktest_msg_u64(0);
  assert_int_equal(weft_msg_add_port(data, side[0]), 0);
  weft_worker_options_t o = {.entry = mw_entry, .msg = data, .on_exit = mm_on_exit,
                             .port_hwm_msgs = MT_HWM};
  assert_int_equal(weft_worker_spawn(ctx, &o, &mm.w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  printf("  drain ran with %llu of %d messages still queued\n",
         (unsigned long long)mt.left_at_drain, MT_HWM);
  assert_true(mm.waited);
  assert_true(mt.left_at_drain >= MT_HWM - MT_BLOCK_AT);
  assert_int_equal(atomic_load(&mt.got), MT_HWM);
  assert_int_equal(mm.exits, 1);
  assert_int_equal(mm.code, 0);
  uv_cond_destroy(&mt.cond);
  uv_mutex_destroy(&mt.lock);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(eagain_past_message_bound),
      T(eagain_past_byte_bound),
      T(eagain_and_drain_across_threads),
      T(many_posters_one_bound),
      T(drain_reaches_unstarted_poster),
      T(drain_comes_before_the_queue_empties),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
