/* test_buf_child.c: big owned buffers sent to a child process (this test
 * binary is its own child: main() runs the "taker" entry when started with
 * one). The child checks each buffer's bytes and length and answers; the
 * parent's sender detaches each buffer; and sending one costs no big
 * allocation: the frame that carries a buffer's fd gets a small chunk, so
 * that glibc does not trim and regrow its heap (two brk) per buffer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "weft.h"

#define LEN ((size_t)1 << 20) /* big enough to travel as a memfd */
#define N 24u
#define WINDOW 2u
#define WATCHDOG_MS 60000

/* ---- the child ------------------------------------------------------------ */

static void taker_msg(weft_port_t *p, weft_msg_t *m) {
  weft_buf_t *b = NULL;
  uint64_t seq = 0, ok = 0;
  if (weft_msg_get_u64(m, "seq", &seq) == 0 && weft_msg_take_buf(m, 0, &b) == 0) {
    const uint8_t *d = weft_buf_ptr(b);
    ok = weft_buf_len(b) == LEN && d[0] == (uint8_t)seq && d[LEN - 1] == (uint8_t)~seq;
  }
  weft_buf_free(b);
  weft_msg_free(m);
  weft_msg_t *r;
  if (weft_msg_new(&r) != 0)
    abort();
  weft_msg_put_map(r, 2);
  weft_msg_put_u64(r, "seq", seq);
  weft_msg_put_u64(r, "ok", ok);
  if (weft_port_post(p, r) != 0)
    weft_msg_free(r);
}

static int entry_taker(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  return weft_port_start(weft_ctx_parent_port(ctx), taker_msg);
}

/* Runs the child's entry; returns only in the test runner. */
static void child_main(void) {
  weft_runtime_t *rt = NULL;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_runtime_register(rt, "taker", entry_taker) != 0)
    exit(3);
  int code = 0;
  int rc = weft_runtime_child_entry(rt, &code);
  if (rc == WEFT_ENOENT) {
    if (weft_runtime_free(rt) != 0)
      abort();
    return;
  }
  if (rc != 0)
    code = 4;
  if (weft_runtime_free(rt) != 0 || testutil_alloc_outstanding() != 0)
    code = 5;
  exit(code);
}

/* ---- the parent ----------------------------------------------------------- */

typedef struct {
  weft_port_t *port;
  uv_timer_t watchdog;
  unsigned sent, answered, bad, not_detached, exits;
  int post_err;
  int64_t status;
  uint64_t big; /* allocations of 64 KiB or more while buffers 2..N went */
} run_t;

static void send_some(run_t *r) {
  while (r->sent < N && r->sent - r->answered < WINDOW) {
    weft_buf_t *b;
    weft_msg_t *m;
    assert_int_equal(weft_buf_new(&b, LEN), 0);
    uint8_t *d = weft_buf_ptr(b);
    d[0] = (uint8_t)r->sent;
    d[LEN - 1] = (uint8_t)~r->sent;
    assert_int_equal(weft_msg_new(&m), 0);
    weft_msg_put_map(m, 1);
    weft_msg_put_u64(m, "seq", r->sent);
    assert_int_equal(weft_msg_add_buf(m, b), 0);
    r->not_detached += !weft_buf_is_detached(b);
    weft_buf_free(b);
    int err = weft_port_post(r->port, m);
    if (err) {
      weft_msg_free(m);
      r->post_err = err;
      weft_port_close(r->port);
      return;
    }
    r->sent++;
  }
}

static void on_answer(weft_port_t *p, weft_msg_t *m) {
  run_t *r = weft_port_data(p);
  uint64_t seq = UINT64_MAX, ok = 0;
  weft_msg_get_u64(m, "seq", &seq);
  weft_msg_get_u64(m, "ok", &ok);
  weft_msg_free(m);
  r->bad += seq != r->answered || !ok;
  if (++r->answered == 1)
    testutil_alloc_big_reset(64u * 1024u); /* the channel is warm: count from here */
  if (r->answered == N) {
    r->big = testutil_alloc_big_count();
    weft_port_close(p); /* the child's loop ends with its channel */
    return;
  }
  send_some(r);
}

static void on_exit_cb(weft_child_t *c, int64_t status, int sig) {
  run_t *r = weft_child_data(c);
  r->status = sig ? 128 + sig : status;
  r->exits++;
  uv_timer_stop(&r->watchdog);
  uv_close((uv_handle_t *)&r->watchdog, NULL);
}

static void on_watchdog(uv_timer_t *t) {
  run_t *r = t->data;
  fprintf(stderr, "watchdog: %u of %u buffers answered after %d ms\n", r->answered, N,
          WATCHDOG_MS);
  abort();
}

static void buffers_to_a_child_without_heap_churn(void **state) {
  (void)state;
  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  run_t r = {0};
  assert_int_equal(uv_timer_init(weft_ctx_loop(ctx), &r.watchdog), 0);
  r.watchdog.data = &r;
  assert_int_equal(uv_timer_start(&r.watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
  char exe[4096];
  size_t sz = sizeof(exe);
  assert_int_equal(uv_exepath(exe, &sz), 0);
  const char *args[] = {exe, NULL};
  weft_child_options_t o = {.entry_name = "taker", .args = args, .on_message = on_answer,
                            .on_exit = on_exit_cb, .data = &r};
  weft_child_t *c;
  assert_int_equal(weft_child_spawn(ctx, &o, &c), 0);
  r.port = weft_child_port(c);
  weft_port_set_data(r.port, &r);
  send_some(&r);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(weft_runtime_free(rt), 0);

  assert_int_equal(r.post_err, 0);
  assert_int_equal(r.exits, 1);
  assert_int_equal(r.status, 0); /* the child freed everything it took */
  if (r.answered != N || r.bad)
    fail_msg("%u of %u buffers answered, %u with the wrong bytes or order", r.answered, N, r.bad);
  assert_int_equal(r.not_detached, 0);
  /* The fd frame's chunk used to be 64 KiB (the channel's write chunk), one
   * per buffer; the channel's other frames (credits) may still take one. */
  if (r.big >= (N - 1) / 2)
    fail_msg("sending %u buffers to a child made %llu allocations of 64 KiB or more (want "
             "fewer than %u: a chunk that size per buffer, freed at the heap's top, is a "
             "trim and a regrow each)", N - 1, (unsigned long long)r.big, (N - 1) / 2);
}

static int no_leaks(void **state) {
  (void)state;
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

int main(void) {
  testutil_alloc_install();
  child_main();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(buffers_to_a_child_without_heap_churn, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
