/* test_port_pack.c: packs (runtime/port.c): the small messages of a batch
 * after its first travel as payload bytes in one pack, and the consumer
 * makes each message again from its own pool. Each test pins one rule:
 *
 *   - order and bytes hold across packed and unpacked messages (payloads
 *     of every size around the pack's limit and the inline area, messages
 *     with transfer items in between), and packing does happen: a packed
 *     message reaches its callback in a struct of the consumer's own pool;
 *   - a port that moves to another context in the middle of a pack takes
 *     the rest of the pack with it, in order;
 *   - weft_port_receive takes packed messages in order, and a close with a
 *     pack partly taken counts exactly the rest as undelivered;
 *   - an allocation that fails while a packed message is made loses
 *     nothing: delivery is tried again (a sweep over which allocation fails).
 *
 * The main context posts inside its delivery turn (the READY callback), so
 * its posts batch; 64 posts fill a batch, which is published at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"
#include "weft_impl.h"

#define OP_READY UINT64_MAX
#define FULL 64u /* posts that fill one batch (published when full) */


static void expect_close_code_0(weft_worker_t *w, int code) {
  (void)w;
  CHECK(code == 0);
}

/* True if m was made on this thread's context (its pool): a packed message. */
static bool made_here(const weft_msg_t *m) {
  weft_ctx_t *ctx = weft__ctx_tls();
  return ctx != NULL && ctx->pool != NULL && m->origin == ctx->pool;
}

static weft_worker_t *spawn(weft_ctx_t *ctx, weft_worker_entry_cb entry, weft_msg_t *data,
                            weft_port_message_cb on_main_msg) {
  weft_worker_options_t opts = {
      .entry = entry, .msg = data, .on_message = on_main_msg, .on_exit = expect_close_code_0};
  weft_worker_t *w = NULL;
  assert_int_equal(weft_worker_spawn(ctx, &opts, &w), 0);
  return w;
}

/* ---- order, bytes, and packing happens ------------------------------------ */

#define MIXED 400u
#define MIXED_MAX 420u

static size_t mixed_len(uint64_t i) { return (size_t)((i * 37u) % MIXED_MAX); }
static bool mixed_has_buf(uint64_t i) { return i % 9u == 4u; }

static struct {
  uint64_t next, packed, with_buf, buf_made_here;
  atomic_int done;
} mx;

static void mx_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t seq = UINT64_MAX;
  const void *bin = NULL;
  size_t len = 0;
  CHECK_RC(weft_msg_get_u64(m, "seq", &seq), 0);
  CHECK_RC(weft_msg_get_bin(m, "b", &bin, &len), 0);
  CHECK(seq == mx.next);
  CHECK(len == mixed_len(seq));
  for (size_t k = 0; k < len && bin != NULL; k++)
    if (((const uint8_t *)bin)[k] != (uint8_t)(seq + k)) {
      CHECK(!"payload bytes differ");
      break;
    }
  if (mixed_has_buf(seq)) {
    mx.with_buf++;
    mx.buf_made_here += made_here(m);
    weft_buf_t *b = NULL;
    CHECK_RC(weft_msg_take_buf(m, 0, &b), 0);
    CHECK(b != NULL && weft_buf_len(b) == 16 && ((uint8_t *)weft_buf_ptr(b))[0] == (uint8_t)seq);
    weft_buf_free(b);
  } else {
    CHECK(weft_msg_xfer_count(m) == 0);
  }
  mx.packed += made_here(m);
  weft_msg_free(m);
  if (++mx.next == MIXED) {
    atomic_store(&mx.done, 1);
    weft_port_close(port);
  }
}

static int mx_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_start(port, mx_on_worker_msg), 0);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(OP_READY)), 0);
  return 0;
}

static void mx_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  uint8_t bytes[MIXED_MAX];
  for (uint64_t i = 0; i < MIXED; i++) {
    weft_msg_t *out = NULL;
    CHECK_RC(weft_msg_new(&out), 0);
    if (out == NULL)
      return;
    size_t len = mixed_len(i);
    for (size_t k = 0; k < len; k++)
      bytes[k] = (uint8_t)(i + k);
    weft_msg_put_map(out, 2);
    weft_msg_put_u64(out, "seq", i);
    weft_msg_put_bin(out, "b", bytes, len);
    if (mixed_has_buf(i)) {
      weft_buf_t *b = NULL;
      CHECK_RC(weft_buf_new(&b, 16), 0);
      ((uint8_t *)weft_buf_ptr(b))[0] = (uint8_t)i;
      CHECK_RC(weft_msg_add_buf(out, b), 0);
      weft_buf_free(b); /* our handle, detached */
    }
    CHECK_RC(weft_port_post(port, out), 0);
  }
}

static void pack_keeps_order_and_bytes(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&mx, 0, sizeof(mx));
  spawn(weft_runtime_main(rt), mx_entry, NULL, mx_on_main_msg);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(atomic_load(&mx.done), 1);
  assert_int_equal(mx.next, MIXED);
  assert_true(mx.with_buf > 0);
  assert_int_equal(mx.buf_made_here, 0); /* transfer items: never packed */
  /* Most of the rest qualify (at most 240 bytes, not first in a batch):
   * made again on the consumer. Without packs, none would be. */
  assert_true(mx.packed > MIXED / 4);
  ktest_finish_runtime(rt);
}

/* ---- a port that moves in the middle of a pack ---------------------------- */

#define MOVE_AT 10u

static struct {
  weft_port_t *p0;        /* main's sending end */
  weft_port_t *moved;     /* the receiving end, once back on main */
  uint64_t next;          /* the value expected next, on whichever side */
  uint64_t packed_worker; /* packed messages the worker took before the move */
  uint64_t got_main;
  atomic_int moved_flag;
} mv;

static void mv_on_main_recv(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK(v == mv.next);
  mv.next = v + 1;
  mv.got_main++;
  if (mv.next == FULL) {
    weft_port_close(port);
    weft_port_close(mv.p0);
  }
}

static void mv_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  mv.packed_worker += made_here(m);
  weft_msg_free(m);
  CHECK(v == mv.next);
  mv.next = v + 1;
  if (mv.next == MOVE_AT) { /* the rest of the pack waits at the inbox's head */
    weft_msg_t *carry = NULL;
    CHECK_RC(weft_msg_new(&carry), 0);
    CHECK_RC(weft_msg_add_port(carry, port), 0);
    CHECK_RC(weft_port_post(weft_ctx_parent_port(weft_ctx_current()), carry), 0);
    atomic_store(&mv.moved_flag, 1);
  }
}

static int mv_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  weft_port_t *p1 = NULL;
  CHECK_RC(weft_msg_take_port(data, 0, &p1), 0);
  if (p1 == NULL)
    return -1;
  CHECK_RC(weft_port_start(p1, mv_on_worker_msg), 0);
  CHECK_RC(weft_port_post(weft_ctx_parent_port(ctx), ktest_msg_u64(OP_READY)), 0);
  return 0;
}

static void mv_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  if (weft_msg_xfer_count(m) == 1) { /* the worker's end comes back */
    CHECK_RC(weft_msg_take_port(m, 0, &mv.moved), 0);
    weft_msg_free(m);
    if (mv.moved != NULL)
      CHECK_RC(weft_port_start(mv.moved, mv_on_main_recv), 0);
    weft_port_close(port); /* the worker may end */
    return;
  }
  weft_msg_free(m);
  for (uint64_t i = 0; i < FULL; i++)
    CHECK_RC(weft_port_post(mv.p0, ktest_msg_u64(i)), 0);
}

static void pack_follows_its_port(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  memset(&mv, 0, sizeof(mv));
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  mv.p0 = p[0];
  weft_msg_t *data = NULL;
  assert_int_equal(weft_msg_new(&data), 0);
  assert_int_equal(weft_msg_add_port(data, p[1]), 0);
  spawn(ctx, mv_entry, data, mv_on_main_msg);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(atomic_load(&mv.moved_flag), 1);
  assert_int_equal(mv.next, FULL);
  assert_int_equal(mv.got_main, FULL - MOVE_AT);
  assert_true(mv.packed_worker >= MOVE_AT - 1); /* it moved inside a pack */
  ktest_finish_runtime(rt);
}

/* ---- receive, and a close with a pack partly taken ------------------------ */

#define TAKEN 5u

static struct {
  atomic_int posted;
  uint64_t received;
  uint32_t undelivered, sender_closes;
} rc;

static int rc_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(OP_READY)), 0);
  CHECK(ktest_wait_flag(&rc.posted)); /* the full batch is published */
  for (uint64_t i = 0; i < TAKEN; i++) {
    weft_msg_t *m = NULL;
    CHECK_RC(weft_port_receive(port, &m), 0);
    if (m == NULL)
      break;
    CHECK(ktest_msg_value(m) == i);
    rc.received++;
    weft_msg_free(m);
  }
  CHECK_RC(weft_port_close(port), 0);
  return 0;
}

static void rc_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  for (uint64_t i = 0; i < FULL; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(i)), 0);
  atomic_store(&rc.posted, 1);
}

static void rc_on_sender_close(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  rc.sender_closes++;
  rc.undelivered = (uint32_t)info->undelivered;
}

static void pack_receive_then_close_counts_the_rest(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  memset(&rc, 0, sizeof(rc));
  weft_worker_t *w = spawn(weft_runtime_main(rt), rc_entry, NULL, rc_on_main_msg);
  assert_int_equal(weft_port_on_close(weft_worker_port(w), rc_on_sender_close), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(rc.received, TAKEN);
  assert_int_equal(rc.sender_closes, 1);
  assert_int_equal(rc.undelivered, FULL - TAKEN);
  ktest_finish_runtime(rt);
}

/* ---- out of memory while a packed message is made ------------------------- */

/* The worker keeps every message until the last (so each packed one needs a
 * fresh struct: an allocation), and at the first arms one allocation
 * failure `skip` allocations ahead: it falls on the making of a packed
 * message, whose delivery must come later, not never. */
static struct {
  long skip;
  uint64_t next;
  bool fired;
  weft_msg_t *kept[FULL];
} om;

static void om_on_worker_msg(weft_port_t *port, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  CHECK(v == om.next);
  if (v < FULL)
    om.kept[v] = m;
  else
    weft_msg_free(m);
  if (om.next++ == 0)
    testutil_alloc_fail_after(om.skip);
  if (om.next == FULL) {
    om.fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    for (uint64_t i = 0; i < FULL; i++)
      weft_msg_free(om.kept[i]);
    weft_port_close(port);
  }
}

static int om_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  CHECK_RC(weft_port_start(port, om_on_worker_msg), 0);
  CHECK_RC(weft_port_post(port, ktest_msg_u64(OP_READY)), 0);
  return 0;
}

static void om_on_main_msg(weft_port_t *port, weft_msg_t *m) {
  weft_msg_free(m);
  for (uint64_t i = 0; i < FULL; i++)
    CHECK_RC(weft_port_post(port, ktest_msg_u64(i)), 0);
}

static void pack_waits_for_memory(void **state) {
  (void)state;
  static const long skips[] = {0, 1, 7, 30};
  for (size_t s = 0; s < sizeof(skips) / sizeof(skips[0]); s++) {
    weft_runtime_t *rt = ktest_new_runtime();
    memset(&om, 0, sizeof(om));
    om.skip = skips[s];
    spawn(weft_runtime_main(rt), om_entry, NULL, om_on_main_msg);
    assert_int_equal(weft_runtime_run(rt), 0);
    assert_int_equal(om.next, FULL); /* every one, in order */
    assert_true(om.fired);
    ktest_finish_runtime(rt);
  }
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  /* Checked mode (on by default in sanitizer builds) follows each struct
   * from post to delivery and so never packs: off here, so that ASan and
   * TSan see the pack path too. */
  setenv("WEFT_CHECK", "0", 1);
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(pack_keeps_order_and_bytes),
      T(pack_follows_its_port),
      T(pack_receive_then_close_counts_the_rest),
      T(pack_waits_for_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
