/* test_channel_hardening.c: channels against peers that flood, lie and die,
 * and ports that must learn that their channel ended whatever their state.
 *
 *  - A weft peer that sends past the window it was granted is closed with
 *    WEFT_EWINDOW (messages and bytes), and the receiving port never holds
 *    more than the window.
 *  - A peer that credits back more than it was sent (up to UINT64_MAX) is
 *    closed with WEFT_ECREDIT; no signed overflow (UBSan build).
 *  - A weft child that posts a burst and exits at once delivers it all
 *    through a window much smaller than the burst (its teardown waits for
 *    credit instead of overshooting the window).
 *  - A child that exits without reading what we posted: those records are
 *    reported undelivered although its close is orderly.
 *  - In one process: a port that was never started gets its peer's close; a
 *    port whose post waits for a drain gets the drain when the peer closes,
 *    and its next post says WEFT_ECLOSED.
 *  - A child stopped for backpressure, waiting for a drain, exits by itself
 *    when its parent closes the channel (it used to hang as an orphan).
 *  - A Node.js child that hangs up while a socket we sent awaits its ACK and
 *    our program waits for its output to move: the channel ends, every
 *    message Node sent arrives, then the close (it used to hang).
 *  - A posted message sheds its weft_msg_view cache, which no bound counts.
 *  - A peer speaking Node's JSON lines floods tiny messages while our socket
 *    awaits its ACK (so we read on): what waits in the transport is bounded
 *    by what it really holds (8 MiB with the structs), not by payload bytes
 *    (8 MiB of 1-byte payloads were 8 million messages).
 *
 * This binary is its own child (WEFT_ENTRY): raw_* entries write frames by
 * hand (rawpeer.h) and never create a runtime; the others are weft children.
 * Every parent-side wait has a deadline: a hang is a failure, the child is
 * killed and the test reports it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktest.h"
#include "rawpeer.h"
#include "testutil.h"
#include "weft.h"
#include "weft_impl.h"
#include "wire.h"

#define DEADLINE_MS 8000
#define SMALL_WINDOW 64
#define BURST 2000

/* ============================================================================
 * Children
 * ========================================================================== */

/* Floods 100000 one-byte messages in one write, ignoring every credit. */
static void raw_flood_msgs(int fd) {
  enum { N = 100000, FRAME = 16 };
  uint8_t *buf = malloc((size_t)N * FRAME);
  if (buf == NULL)
    exit(RAWPEER_EXIT_SETUP);
  size_t off = 0;
  for (int i = 0; i < N; i++)
    off += rawpeer_put_msg(buf + off, (size_t)N * FRAME - off, 1);
  rawpeer_hello(fd, 4096, 1u << 26, -1);
  rawpeer_send(fd, buf, off, -1);
  free(buf);
}

/* Sends 200 messages of 16 KiB, ignoring every credit. */
static void raw_flood_bytes(int fd) {
  enum { N = 200, PAYLOAD = 16 * 1024 };
  static uint8_t frame[PAYLOAD + 64];
  size_t n = rawpeer_put_msg(frame, sizeof(frame), PAYLOAD);
  rawpeer_hello(fd, 4096, 1u << 26, -1);
  for (int i = 0; i < N; i++)
    rawpeer_send(fd, frame, n, -1);
}

/* Credits back far more than anything sent: counts at their maximum. */
static void raw_credit_lie(int fd) {
  uint8_t b[64];
  rawpeer_hello(fd, 4096, 1u << 26, -1);
  int n = weft__wire_put_credit(b, sizeof(b), UINT32_MAX, UINT64_MAX);
  if (n <= 0)
    exit(RAWPEER_EXIT_SETUP);
  rawpeer_send(fd, b, (size_t)n, -1);
}

static void raw_main(const char *entry) {
  int fd = rawpeer_fd();
  if (strcmp(entry, "raw_flood_msgs") == 0)
    raw_flood_msgs(fd);
  else if (strcmp(entry, "raw_flood_bytes") == 0)
    raw_flood_bytes(fd);
  else if (strcmp(entry, "raw_credit_lie") == 0)
    raw_credit_lie(fd);
  else
    exit(RAWPEER_EXIT_SETUP);
  rawpeer_wait_hangup(fd, DEADLINE_MS);
}

static weft_msg_t *seq_msg(uint64_t seq) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0 || weft_msg_put_u64(m, NULL, seq) != 0)
    abort();
  return m;
}

static uint64_t seq_of(weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, NULL, &v), 0);
  return v;
}

/* "burst": posts BURST records on the parent's port and returns at once; the
 * loop then has nothing to keep it alive, so the records leave at teardown. */
static int entry_burst(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  CHECK(p != NULL);
  for (uint64_t i = 0; i < BURST; i++) {
    weft_msg_t *m = seq_msg(i);
    int rc = weft_port_post(p, m);
    CHECK_RC(rc, 0);
    if (rc != 0)
      weft_msg_free(m);
  }
  return 0;
}

/* "stall": posts until WEFT_EAGAIN, then stops its port and waits for the
 * drain callback, as the docs say; a ref'd handle keeps the loop alive
 * meanwhile. The parent never reads, then closes the channel. */
static struct {
  uv_async_t waiting;
  weft_msg_t *held;
  uint64_t sent;
} stall;

static void stall_pump(weft_port_t *p) {
  for (;;) {
    if (stall.held == NULL)
      stall.held = seq_msg(stall.sent);
    int rc = weft_port_post(p, stall.held);
    if (rc == WEFT_EAGAIN)
      return;
    if (rc != 0) { /* the channel ended: stop waiting */
      CHECK_RC(rc, WEFT_ECLOSED);
      weft_msg_free(stall.held);
      stall.held = NULL;
      weft_port_close(p);
      return;
    }
    stall.held = NULL;
    stall.sent++;
  }
}

static void stall_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void stall_drain(weft_port_t *p) { stall_pump(p); }

static void stall_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  (void)info;
  weft_msg_free(stall.held);
  stall.held = NULL;
  uv_close((uv_handle_t *)&stall.waiting, NULL);
}

static int entry_stall(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  CHECK(p != NULL);
  CHECK_RC(uv_async_init(weft_ctx_loop(ctx), &stall.waiting, NULL), 0);
  CHECK_RC(weft_port_on_drain(p, stall_drain), 0);
  CHECK_RC(weft_port_on_close(p, stall_close), 0);
  CHECK_RC(weft_port_start(p, stall_msg), 0);
  CHECK_RC(weft_port_stop(p), 0); /* backpressured: read nothing until the drain */
  stall_pump(p);
  return 0;
}

/* Node's 'json' lines, 2 million one-digit numbers, and never an ACK. */
static void raw_node_lines(void) {
  const char *s = getenv("NODE_CHANNEL_FD");
  int fd = s ? atoi(s) : -1;
  if (fd < 0)
    exit(RAWPEER_EXIT_SETUP);
  enum { LINES = 2000000 };
  char *buf = malloc((size_t)LINES * 2);
  if (buf == NULL)
    exit(RAWPEER_EXIT_SETUP);
  for (size_t i = 0; i < LINES; i++) {
    buf[2 * i] = '1';
    buf[2 * i + 1] = '\n';
  }
  rawpeer_send(fd, buf, (size_t)LINES * 2, -1);
  free(buf);
  rawpeer_wait_hangup(fd, 30000);
}

static void child_main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "raw_node_lines") == 0)
    raw_node_lines(); /* exits */
  const char *entry = getenv("WEFT_ENTRY");
  if (entry != NULL && strncmp(entry, "raw_", 4) == 0)
    raw_main(entry); /* exits; no runtime: it would adopt the channel fd */
  weft_runtime_t *rt = NULL;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_runtime_register(rt, "burst", entry_burst) != 0 ||
      weft_runtime_register(rt, "stall", entry_stall) != 0)
    exit(RAWPEER_EXIT_SETUP);
  int code = 0;
  int rc = weft_runtime_child_entry(rt, &code);
  if (rc == WEFT_ENOENT) { /* not a child: the test runner */
    if (weft_runtime_free(rt) != 0)
      abort();
    return;
  }
  if (rc != 0)
    code = RAWPEER_EXIT_SETUP;
  if (weft_runtime_free(rt) != 0 || testutil_alloc_outstanding() != 0 ||
      atomic_load(&ktest_failures) != 0)
    code = 90;
  exit(code);
}

/* ============================================================================
 * The parent side
 * ========================================================================== */

static const char *self_argv0;

typedef struct {
  weft_child_t *c;
  weft_port_t *port;
  uv_timer_t deadline;
  bool timed_out;
  int exits, closes;
  int64_t status;
  int sig, reason;
  uint64_t undelivered, msgs, bad, most_queued, drains, closed_posts;
} kid_t;

static void kid_exit(weft_child_t *c, int64_t status, int sig) {
  kid_t *k = weft_child_data(c);
  k->exits++;
  k->status = status;
  k->sig = sig;
  uv_close((uv_handle_t *)&k->deadline, NULL);
}

static void kid_close(weft_port_t *p, const weft_port_close_info_t *info) {
  kid_t *k = weft_port_data(p);
  k->closes++;
  k->reason = info->reason;
  k->undelivered = info->undelivered;
  k->port = NULL;
}

/* Records in order; how many waited at once (during a delivery turn the
 * port's count still includes the message being delivered). */
static void kid_msg(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  uint64_t queued = weft_port_pending(p);
  if (queued > k->most_queued)
    k->most_queued = queued;
  weft_msg_free(m);
  k->msgs++;
}

static void kid_seq(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  if (seq_of(m) != k->msgs)
    k->bad++;
  kid_msg(p, m);
}

/* A hang is a failure: kill the child, so the test ends and says so. */
static void kid_deadline(uv_timer_t *t) {
  kid_t *k = t->data;
  k->timed_out = true;
  weft_child_kill(k->c, SIGKILL);
}

static void kid_spawn(weft_runtime_t *rt, kid_t *k, weft_child_options_t *o) {
  static const char *args[2];
  args[0] = self_argv0;
  args[1] = NULL;
  if (o->file == NULL)
    o->args = args;
  o->on_exit = kid_exit;
  o->data = k;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  assert_int_equal(weft_child_spawn(ctx, o, &k->c), 0);
  k->port = weft_child_port(k->c);
  assert_non_null(k->port);
  weft_port_set_data(k->port, k);
  assert_int_equal(weft_port_on_close(k->port, kid_close), 0);
  assert_int_equal(uv_timer_init(weft_ctx_loop(ctx), &k->deadline), 0);
  k->deadline.data = k;
  assert_int_equal(uv_timer_start(&k->deadline, kid_deadline, DEADLINE_MS, 0), 0);
  uv_unref((uv_handle_t *)&k->deadline);
}

static void kid_report(const char *what, const kid_t *k) {
  fprintf(stderr,
          "  %s: close %s (closes %d), undelivered %llu, %llu messages (%llu out of order), "
          "at most %llu queued, drains %llu, exit %lld sig %d%s\n",
          what, weft_err_name(k->reason), k->closes, (unsigned long long)k->undelivered,
          (unsigned long long)k->msgs, (unsigned long long)k->bad,
          (unsigned long long)k->most_queued, (unsigned long long)k->drains,
          (long long)k->status, k->sig, k->timed_out ? " TIMED OUT" : "");
}

/* Run until the child is gone; it must have ended with exit status 0 (it
 * saw us hang up, or ended by itself), one close event with reason, and no
 * deadline hit. */
static void kid_run(weft_runtime_t *rt, kid_t *k, const char *what, int reason) {
  assert_int_equal(weft_runtime_run(rt), 0);
  kid_report(what, k);
  assert_false(k->timed_out);
  assert_int_equal(k->closes, 1);
  assert_int_equal(k->reason, reason);
  assert_int_equal(k->exits, 1);
  assert_int_equal(k->status, 0);
}

/* ---- windows ------------------------------------------------------------------ */

static void flood_past_message_window(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  weft_child_options_t o = {.entry_name = "raw_flood_msgs", .window_msgs = SMALL_WINDOW,
                            .on_message = kid_msg};
  kid_spawn(rt, &k, &o);
  kid_run(rt, &k, "flood past 64 messages", WEFT_EWINDOW);
  assert_true(k.most_queued <= SMALL_WINDOW);
  assert_true(k.msgs < 100000);
  ktest_live_finish(rt);
}

static void flood_past_byte_window(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  /* 64 KiB: four 16 KiB messages, and a fifth may overshoot by its weight. */
  weft_child_options_t o = {.entry_name = "raw_flood_bytes", .window_bytes = 64 * 1024,
                            .on_message = kid_msg};
  kid_spawn(rt, &k, &o);
  kid_run(rt, &k, "flood past 64 KiB", WEFT_EWINDOW);
  assert_true(k.most_queued <= 5);
  assert_true(k.msgs < 200);
  ktest_live_finish(rt);
}

static void credit_past_what_was_sent(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  weft_child_options_t o = {.entry_name = "raw_credit_lie", .on_message = kid_msg};
  kid_spawn(rt, &k, &o);
  /* Something in flight, so the lie is about bytes as well as counts. */
  for (uint64_t i = 0; i < 3; i++)
    assert_int_equal(weft_port_post(k.port, seq_msg(i)), 0);
  kid_run(rt, &k, "credit lie", WEFT_ECREDIT);
  ktest_live_finish(rt);
}

/* The child's window is 16 messages and it posts 2000 and exits at once:
 * they all arrive, in order, and the close is an orderly one. */
static void burst_then_exit_within_window(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  weft_child_options_t o = {.entry_name = "burst", .window_msgs = 16, .on_message = kid_seq};
  kid_spawn(rt, &k, &o);
  kid_run(rt, &k, "burst of 2000 through a window of 16", WEFT_ECLOSED);
  assert_int_equal(k.msgs, BURST);
  assert_int_equal(k.bad, 0);
  assert_true(k.most_queued <= 16);
  ktest_live_finish(rt);
}

/* The child never reads what we post and exits: its close is orderly, yet
 * the 5 records it never consumed are reported undelivered (they used to be
 * reported as 0 after an orderly close). */
static void unread_records_count_as_undelivered(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  weft_child_options_t o = {.entry_name = "burst", .on_message = kid_seq};
  kid_spawn(rt, &k, &o);
  for (uint64_t i = 0; i < 5; i++)
    assert_int_equal(weft_port_post(k.port, seq_msg(i)), 0);
  kid_run(rt, &k, "child never reads 5 records", WEFT_ECLOSED);
  assert_int_equal(k.undelivered, 5);
  assert_int_equal(k.msgs, BURST);
  ktest_live_finish(rt);
}

/* ---- ports that are not started ---------------------------------------------- */

typedef struct {
  int closes, drains;
  int reason;
  int post_after_drain;
  weft_msg_t *held;
} ends_t;

static void ends_close(weft_port_t *p, const weft_port_close_info_t *info) {
  ends_t *e = weft_port_data(p);
  e->closes++;
  e->reason = info->reason;
}

static void ends_drain(weft_port_t *p) {
  ends_t *e = weft_port_data(p);
  e->drains++;
  e->post_after_drain = weft_port_post(p, e->held);
  if (e->post_after_drain != 0)
    weft_msg_free(e->held); /* still ours after a failed post */
  e->held = NULL;
}

/* Closes its port when it fires: the peer goes away while we wait. */
static void close_on_timer(uv_timer_t *t) {
  weft_port_close(t->data);
  uv_close((uv_handle_t *)t, NULL);
}

/* p[1] closes from the loop (a timer): the peer goes away while we wait. */
static void close_soon_and_run(weft_runtime_t *rt, uv_timer_t *t, weft_port_t *closer) {
  assert_int_equal(uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), t), 0);
  t->data = closer;
  assert_int_equal(uv_timer_start(t, close_on_timer, 1, 0), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
}

static void never_started_port_gets_close(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  ends_t e = {0};
  weft_port_set_data(p[0], &e);
  assert_int_equal(weft_port_on_close(p[0], ends_close), 0);
  uv_timer_t t;
  close_soon_and_run(rt, &t, p[1]);
  assert_int_equal(e.closes, 1);
  assert_int_equal(e.reason, WEFT_ECLOSED);
  ktest_finish_runtime(rt);
}

/* p[0] posts into p[1] (never started, bound 4) until WEFT_EAGAIN and stops
 * itself; then p[1] closes. The drain comes, the retried post says
 * WEFT_ECLOSED, and the close follows. */
static void waiting_poster_hears_peer_close(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(ctx, p), 0);
  assert_int_equal(weft_port_set_hwm(p[1], 4, 0), 0);
  ends_t e = {0};
  weft_port_set_data(p[0], &e);
  assert_int_equal(weft_port_on_close(p[0], ends_close), 0);
  assert_int_equal(weft_port_on_drain(p[0], ends_drain), 0);
  int rc = 0;
  for (uint64_t i = 0; rc == 0; i++) {
    e.held = seq_msg(i);
    rc = weft_port_post(p[0], e.held);
  }
  assert_int_equal(rc, WEFT_EAGAIN);
  uv_timer_t t;
  close_soon_and_run(rt, &t, p[1]);
  assert_int_equal(e.drains, 1);
  assert_int_equal(e.post_after_drain, WEFT_ECLOSED);
  assert_int_equal(e.closes, 1);
  assert_int_equal(e.reason, WEFT_ECLOSED);
  ktest_finish_runtime(rt);
}

/* A message read with weft_msg_view carries a decoded cache (a zone of 2 KiB
 * or more) that no bound counts: a full default port of such messages held
 * about 144 MiB. A post drops the cache; the receiver decodes again if it
 * wants to. */
static void posted_message_sheds_its_view(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_map(m, 1), 0);
  assert_int_equal(weft_msg_put_u64(m, "seq", 7), 0);
  const msgpack_object *view = NULL;
  assert_int_equal(weft_msg_view(m, &view), 0);
  assert_non_null(m->view);
  assert_int_equal(weft_port_post(p[0], m), 0); /* msgpack-c's zone is freed here */
  weft_msg_t *got = NULL;
  assert_int_equal(weft_port_receive(p[1], &got), 0);
  assert_null(got->view);
  uint64_t v = 0;
  assert_int_equal(weft_msg_get_u64(got, "seq", &v), 0);
  assert_int_equal(v, 7);
  assert_int_equal(weft_msg_view(got, &view), 0); /* decoded again on demand */
  weft_msg_free(got);
  weft_port_close(p[0]);
  weft_port_close(p[1]);
  assert_int_equal(weft_runtime_run(rt), 0);
  ktest_finish_runtime(rt);
}

/* ---- a stopped child whose parent goes away ---------------------------------- */

/* Close the channel once the child has filled our side (it is stalled then). */
static void close_when_full(uv_timer_t *t) {
  kid_t *k = t->data;
  if (k->port != NULL && weft_port_pending(k->port) < 4096)
    return;
  if (k->port != NULL)
    weft_port_close(k->port);
  uv_close((uv_handle_t *)t, NULL);
}

static void stalled_child_exits_when_parent_closes(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  weft_child_options_t o = {.entry_name = "stall"}; /* our port is never started */
  kid_spawn(rt, &k, &o);
  uv_timer_t poll_full;
  assert_int_equal(uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &poll_full), 0);
  poll_full.data = &k;
  assert_int_equal(uv_timer_start(&poll_full, close_when_full, 5, 5), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  kid_report("stalled child, parent closes", &k);
  assert_false(k.timed_out);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.sig, 0);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.closes, 1);
  ktest_live_finish(rt);
}

/* ---- Node.js hangs up while our socket awaits its ACK -------------------------- */

#define NODE WEFT_NODE_EXECUTABLE
#define NODE_MSGS 100

/* Sends NODE_MSGS records, blocks for 300 ms without reading (so the socket
 * we send never gets its ACK), then exits. 100 small writes fit in the
 * socket's buffer, so none is left in Node's own queue when it exits. */
static const char node_script[] =
    "for (let i = 0; i < 100; i++) process.send(i);\n"
    "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);\n"
    "process.exit(0);\n";

static void node_seq(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  int64_t v = -1;
  CHECK_RC(weft_msg_get_i64(m, NULL, &v), 0);
  if (v != (int64_t)k->msgs)
    k->bad++;
  kid_msg(p, m);
}

/* The program's output moved (or its channel ended): take input again. */
static void node_drain(weft_port_t *p) {
  kid_t *k = weft_port_data(p);
  k->drains++;
  weft_msg_t *m = seq_msg(0);
  int rc = weft_port_post(p, m);
  if (rc != 0) {
    k->closed_posts += rc == WEFT_ECLOSED;
    weft_msg_free(m);
  }
  CHECK_RC(weft_port_start(p, node_seq), 0);
}

static void node_hangs_up_while_handle_awaits_ack(void **state) {
  (void)state;
  if (NODE[0] == '\0')
    skip();
  /* Small bounds: our port holds 16 of Node's records, the rest wait in the
   * transport (which reads on while the socket awaits its ACK). */
  weft_runtime_options_t ro = {.port_hwm_msgs = 16};
  weft_runtime_t *rt = ktest_live_runtime_new(&ro);
  kid_t k = {0};
  const char *args[] = {NODE, "-e", node_script, NULL};
  weft_child_options_t o = {.file = NODE, .args = args, .channel = WEFT_CHANNEL_NODE};
  kid_spawn(rt, &k, &o);
  assert_int_equal(weft_port_on_drain(k.port, node_drain), 0);
  /* A socket for Node (it will never acknowledge it), then records until
   * the port refuses: the program now waits for its output to move, and
   * takes no input until then (the port is not started). */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "handle"), 0);
  assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
  assert_int_equal(weft_port_post(k.port, m), 0);
  close(sv[1]);
  int rc = 0;
  for (uint64_t i = 0; rc == 0 && i < 100000; i++) {
    m = seq_msg(i);
    rc = weft_port_post(k.port, m);
    if (rc != 0)
      weft_msg_free(m);
  }
  assert_int_equal(rc, WEFT_EAGAIN);
  assert_int_equal(weft_runtime_run(rt), 0);
  kid_report("Node hangs up, handle unacknowledged", &k);
  assert_false(k.timed_out);
  assert_int_equal(k.drains, 1);
  assert_int_equal(k.closed_posts, 1);
  assert_int_equal(k.msgs, NODE_MSGS);
  assert_int_equal(k.bad, 0);
  assert_int_equal(k.closes, 1);
  assert_true(k.undelivered > 0); /* the socket and the records Node never took */
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  ktest_live_finish(rt);
}

/* ---- what waits in a Node channel is bounded by what it holds ------------------ */

typedef struct {
  kid_t *k;
  long last, most;
  int steady;
} watch_t;

/* Samples weft's outstanding blocks; once they stop growing (the reader has
 * paused), records them and ends the channel. */
static void watch_blocks(uv_timer_t *t) {
  watch_t *w = t->data;
  long now = testutil_alloc_outstanding();
  if (now > w->most)
    w->most = now;
  w->steady = now == w->last ? w->steady + 1 : 0;
  w->last = now;
  if (w->steady < 10 && w->k->port != NULL)
    return;
  if (w->k->c != NULL)
    weft_child_kill(w->k->c, SIGKILL);
  uv_close((uv_handle_t *)t, NULL);
}

static void node_lines_flood_is_bounded(void **state) {
  (void)state;
  weft_runtime_options_t ro = {.port_hwm_msgs = 16};
  weft_runtime_t *rt = ktest_live_runtime_new(&ro);
  kid_t k = {0};
  const char *args[] = {self_argv0, "raw_node_lines", NULL};
  weft_child_options_t o = {.file = self_argv0, .args = args, .channel = WEFT_CHANNEL_NODE};
  kid_spawn(rt, &k, &o);
  /* A socket the peer will never acknowledge: the transport reads on. */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "handle"), 0);
  assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
  assert_int_equal(weft_port_post(k.port, m), 0);
  close(sv[1]);
  long base = testutil_alloc_outstanding();
  watch_t w = {.k = &k, .last = -1};
  uv_timer_t t;
  assert_int_equal(uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &t), 0);
  t.data = &w;
  assert_int_equal(uv_timer_start(&t, watch_blocks, 20, 20), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  long held = w.most - base;
  kid_report("node lines flood", &k);
  fprintf(stderr, "  2M tiny JSON lines, socket unacknowledged: at most %ld blocks held\n", held);
  assert_false(k.timed_out);
  /* ~150 bytes a message: 8 MiB is about 60k of them (a block or two each). */
  assert_true(held < 200000);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.exits, 1);
  ktest_live_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  self_argv0 = argv[0];
  signal(SIGPIPE, SIG_IGN);
  ktest_init();
  child_main(argc, argv); /* returns only in the test runner */
  const struct CMUnitTest tests[] = {
      T(flood_past_message_window),
      T(flood_past_byte_window),
      T(credit_past_what_was_sent),
      T(burst_then_exit_within_window),
      T(unread_records_count_as_undelivered),
      T(never_started_port_gets_close),
      T(waiting_poster_hears_peer_close),
      T(posted_message_sheds_its_view),
      T(stalled_child_exits_when_parent_closes),
      T(node_hangs_up_while_handle_awaits_ack),
      T(node_lines_flood_is_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
