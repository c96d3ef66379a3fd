/* wake.c: the wake-up floors: a ping-pong between two threads that sleep in
 * the kernel between messages, so every hop is one wake-up.
 *
 * `floor_uv_async`: thread A (this one) and thread B each run their own
 * uv_loop; A's uv_async_send wakes B, whose callback wakes A the same way.
 * This is the mechanism a weft worker parked in its loop is woken with, so
 * weft-bench's "wake a sleeping worker" round trip is compared with it.
 * `floor_eventfd`: A and B block in read(2) on one eventfd each and wake
 * each other with write(2): the kernel's own floor, without a loop.
 *
 * Each runs twice: back to back (N round trips after 1000 warm-up ones) and
 * with GAP_US between pings (GAPPED pings after 3 warm-up ones, the pattern
 * of weft-bench idle_cpu's wake-up pings), printed with "gap_us".
 *
 * Threads: A is the calling thread; B is a pthread that lives for one run.
 * They share the struct below: B's loop and handle are touched by A only
 * through uv_async_send, which is thread-safe; `stop` is the one flag. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "floor.h"

#define DEFAULT_N 20000u
#define WARMUP 1000u
#define GAP_US 10000u
#define GAPPED 50u
#define GAPPED_WARMUP 3u

/* ---- uv_async ----------------------------------------------------------- */

typedef struct {
  /* B's side: its loop and the handle A wakes it with. */
  uv_loop_t b_loop;
  uv_async_t ping;
  /* A -> B: set before the last uv_async_send to ping; B then closes ping
   * (its loop ends). Release/acquire pairs with the uv_async_send, which
   * itself orders (libuv's async.c), so relaxed order would do; explicit
   * here for the reader. */
  _Atomic bool stop;
  /* A's side. */
  uv_loop_t a_loop;
  uv_async_t pong;
  uv_timer_t gap;
  floor_rtt_t rtt;
  uint64_t done, t_sent;
} async_pair_t;

static void b_on_ping(uv_async_t *h) {
  async_pair_t *p = h->data;
  if (atomic_load_explicit(&p->stop, memory_order_acquire))
    uv_close((uv_handle_t *)&p->ping, NULL);
  else
    uv_async_send(&p->pong);
}

static void b_thread(void *arg) {
  async_pair_t *p = arg;
  uv_run(&p->b_loop, UV_RUN_DEFAULT);
}

static void a_send_ping(async_pair_t *p) {
  p->t_sent = floor_now_ns();
  uv_async_send(&p->ping);
}

static void a_on_gap(uv_timer_t *t) { a_send_ping(t->data); }

static void a_on_pong(uv_async_t *h) {
  uint64_t now = floor_now_ns();
  async_pair_t *p = h->data;
  floor_rtt_record(&p->rtt, p->done, now, now - p->t_sent);
  if (++p->done == p->rtt.warmup + p->rtt.n) {
    atomic_store_explicit(&p->stop, true, memory_order_release);
    uv_async_send(&p->ping);
    uv_close((uv_handle_t *)&p->pong, NULL);
    uv_close((uv_handle_t *)&p->gap, NULL);
  } else if (p->rtt.gap_us) {
    uv_timer_start(&p->gap, a_on_gap, p->rtt.gap_us / 1000u, 0);
  } else {
    a_send_ping(p);
  }
}

static int async_init(async_pair_t *p) {
  int err = uv_loop_init(&p->a_loop);
  if (err)
    return err;
  if ((err = uv_loop_init(&p->b_loop)) != 0) {
    uv_loop_close(&p->a_loop);
    return err;
  }
  uv_async_init(&p->a_loop, &p->pong, a_on_pong);
  uv_async_init(&p->b_loop, &p->ping, b_on_ping);
  uv_timer_init(&p->a_loop, &p->gap);
  p->pong.data = p->ping.data = p->gap.data = p;
  return 0;
}

static int async_run(async_pair_t *p) {
  uv_thread_t b;
  int err = uv_thread_create(&b, b_thread, p);
  if (err)
    return err;
  a_send_ping(p);
  uv_run(&p->a_loop, UV_RUN_DEFAULT);
  uv_thread_join(&b);
  return 0;
}

static int async_once(const floor_args_t *args, uint64_t n, uint64_t warmup, uint64_t gap_us) {
  async_pair_t p = {0};
  if (floor_rtt_init(&p.rtt, n, warmup, gap_us) != 0)
    return floor_fail("floor_uv_async", "allocating latencies", ENOMEM);
  int err = async_init(&p);
  if (err) {
    floor_rtt_fini(&p.rtt);
    return floor_fail("floor_uv_async", "uv_loop_init", err);
  }
  err = async_run(&p);
  if (err) { /* no thread: close A's handles, run B's loop to close its own */
    uv_close((uv_handle_t *)&p.pong, NULL);
    uv_close((uv_handle_t *)&p.gap, NULL);
    uv_close((uv_handle_t *)&p.ping, NULL);
    uv_run(&p.a_loop, UV_RUN_DEFAULT);
    uv_run(&p.b_loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&p.a_loop);
  uv_loop_close(&p.b_loop);
  if (!err)
    floor_rtt_emit(&p.rtt, "floor_uv_async", args->rep, NULL);
  floor_rtt_fini(&p.rtt);
  return err ? floor_fail("floor_uv_async", "uv_thread_create", err) : 0;
}

int floor_uv_async(const floor_args_t *args) {
  uint64_t n = args->n ? args->n : DEFAULT_N;
  if (async_once(args, n, WARMUP, 0) != 0)
    return -1;
  return async_once(args, GAPPED, GAPPED_WARMUP, GAP_US);
}

/* ---- eventfd ------------------------------------------------------------ */

#define EFD_PING 1u
#define EFD_STOP 2u /* A -> B instead of a ping: leave */

typedef struct {
  int ab, ba; /* eventfds: A -> B, B -> A */
  int b_err;  /* B's errno if a read or write failed; read by A after join */
} efd_pair_t;

static void efd_b_thread(void *arg) {
  efd_pair_t *p = arg;
  for (;;) {
    uint64_t v;
    if (read(p->ab, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
      p->b_err = errno ? errno : EIO;
      return;
    }
    if (v != EFD_PING)
      return;
    uint64_t one = 1;
    if (write(p->ba, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
      p->b_err = errno ? errno : EIO;
      return;
    }
  }
}

static void sleep_us(uint64_t us) {
  struct timespec ts = {.tv_sec = (time_t)(us / 1000000u), .tv_nsec = (long)(us % 1000000u) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* A's side: total round trips; returns 0 or an errno. */
static int efd_a_run(efd_pair_t *p, floor_rtt_t *r) {
  uint64_t total = r->warmup + r->n, v, one = EFD_PING;
  for (uint64_t i = 0; i < total; i++) {
    if (r->gap_us)
      sleep_us(r->gap_us);
    uint64_t t = floor_now_ns();
    if (write(p->ab, &one, sizeof(one)) != (ssize_t)sizeof(one) ||
        read(p->ba, &v, sizeof(v)) != (ssize_t)sizeof(v))
      return errno ? errno : EIO;
    uint64_t now = floor_now_ns();
    floor_rtt_record(r, i, now, now - t);
  }
  return 0;
}

static int efd_once(const floor_args_t *args, uint64_t n, uint64_t warmup, uint64_t gap_us) {
  efd_pair_t p = {.ab = eventfd(0, EFD_CLOEXEC), .ba = eventfd(0, EFD_CLOEXEC)};
  floor_rtt_t r = {0};
  int err = p.ab < 0 || p.ba < 0 ? errno : 0;
  if (!err && floor_rtt_init(&r, n, warmup, gap_us) != 0)
    err = ENOMEM;
  uv_thread_t b;
  if (!err && (err = -uv_thread_create(&b, efd_b_thread, &p)) == 0) {
    err = efd_a_run(&p, &r);
    uint64_t stop = EFD_STOP;
    if (write(p.ab, &stop, sizeof(stop)) != (ssize_t)sizeof(stop) && !err)
      err = errno; /* B would block for ever: the alarm ends the process */
    uv_thread_join(&b);
    if (!err)
      err = p.b_err;
    if (!err)
      floor_rtt_emit(&r, "floor_eventfd", args->rep, NULL);
  }
  if (p.ab >= 0)
    close(p.ab);
  if (p.ba >= 0)
    close(p.ba);
  floor_rtt_fini(&r);
  return err ? floor_fail("floor_eventfd", "the ping-pong", err) : 0;
}

int floor_eventfd(const floor_args_t *args) {
  uint64_t n = args->n ? args->n : DEFAULT_N;
  if (efd_once(args, n, WARMUP, 0) != 0)
    return -1;
  return efd_once(args, GAPPED, GAPPED_WARMUP, GAP_US);
}
