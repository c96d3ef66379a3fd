/* test_metrics_child.c: a child process's own metrics, asked for over its
 * channel by the runtime (no user code in the child), as the parent's
 * snapshot and scrape show them.
 *
 * This binary is also the children (WEFT_ENTRY chooses):
 *   work     a weft program: its main context receives what the parent
 *            posts; it starts a worker and posts it K messages. Ends when
 *            the parent closes the channel.
 *   garbage  not weft (rawpeer): answers the parent's first STATS_REQ with
 *            bytes that are not a snapshot, sends one message and a
 *            STATS_REQ of its own (which a parent must not answer).
 *   huge     not weft: answers with a STATS header longer than the bound.
 *   nested   not weft: answers with a hand-made snapshot whose second
 *            context claims to be another process's (pid 1, "init").
 *
 * Covered: the parent's snapshot shows the child's contexts and sources
 * labelled with its pid and name, with the workload's exact counts (main N,
 * worker-1 K) and the child's own source value,
 * in Prometheus (child="work",pid="...") and JSON; a SIGSTOPped child: the
 * parent's snapshots and formats go on, its own loop keeps sampling, the
 * child's figures stay with a growing age, and fresh ones come after
 * SIGCONT; a garbage answer is rejected and named (stats_rejected,
 * stats_error{error="WEFT_EPROTO"}), the channel stays up (the message
 * after it arrives), a request from the child is not answered, and the
 * window the parent spent on it shows (credit 0, waiting for credit; a
 * working child's is whole again once it consumed all); an oversized answer closes the channel with
 * WEFT_EFRAMESIZE from its header, and the parent runs on; a Node.js child
 * is never asked (its JSON channel carries on; it has no own figures); a
 * child's report of another process is named under the child.
 *
 * Waits poll snapshots from a timer with a bounded deadline; each test ends
 * with weft_runtime_free() == 0, no CHECK failed and nothing leaked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktest.h"
#include "rawpeer.h"
#include "weft.h"
#include "wire.h"

#define N 300u
#define K 700u
#define DEADLINE_NS (30ull * 1000000000u)
#define RAW_WINDOW 64u /* the messages a raw child lets the parent send */
#define STOPPED_AGE_S 1.5 /* past the 1 s after which a request is made again */

static const char *self_argv0;

/* ---- the "work" child ------------------------------------------------------------ */

static weft_worker_t *work_w;

static void work_worker_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static int work_worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), work_worker_msg);
}

static void work_parent_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void work_parent_closed(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  (void)info;
  weft_worker_terminate(work_w);
}

static void work_worker_exit(weft_worker_t *w, int code) {
  (void)code;
  weft_worker_release(w);
}

static void work_collect(weft_metrics_source_t *src, void *data) {
  (void)data;
  weft_metrics_put(src, "answer", "shard", "0", WEFT_METRIC_GAUGE, 42);
}

static int work_child(void) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 3;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_port_t *pp = weft_runtime_parent_port(rt);
  if (pp == NULL)
    return 4;
  weft_worker_options_t o = {.entry = work_worker_entry, .on_exit = work_worker_exit,
                             .port_hwm_msgs = K + 10};
  weft_metrics_source_t *src;
  if (weft_worker_spawn(ctx, &o, &work_w) != 0 || weft_port_on_close(pp, work_parent_closed) ||
      weft_port_start(pp, work_parent_msg) != 0 ||
      weft_metrics_source_new(ctx, "test", "src", work_collect, NULL, &src) != 0)
    return 5;
  for (uint64_t i = 0; i < K; i++)
    if (weft_port_post(weft_worker_port(work_w), ktest_msg_u64(i)) != 0)
      return 6;
  int rc = weft_runtime_run(rt);
  weft_metrics_source_free(src);
  return rc == 0 && weft_runtime_free(rt) == 0 ? 0 : 7;
}

/* ---- the raw children ------------------------------------------------------------ */

static void read_exact(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0)
      exit(r == 0 ? 0 : 44); /* the parent went */
    p += r;
    n -= (size_t)r;
  }
}

/* Reads the parent's HELLO, then frames until a STATS_REQ; returns its seq. */
static uint32_t wait_stats_req(int fd) {
  for (;;) {
    uint8_t h[WEFT__WIRE_HEADER], body[64];
    read_exact(fd, h, sizeof(h));
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len < 4 || len - 4 > sizeof(body))
      exit(45);
    read_exact(fd, body, len - 4);
    if (h[5] == WEFT__WIRE_STATS_REQ)
      return (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 | (uint32_t)body[2] << 8 | body[3];
  }
}

/* Reads frames until the parent hangs up: exit 0 then, or 46 if the parent
 * answered a STATS_REQ of ours (a parent never does). */
static void read_until_hangup(int fd) {
  static uint8_t body[WEFT__WIRE_STATS_MAX + 64];
  for (;;) {
    uint8_t h[WEFT__WIRE_HEADER];
    read_exact(fd, h, sizeof(h)); /* exits 0 at EOF */
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len < 4 || len - 4 > sizeof(body))
      exit(45);
    read_exact(fd, body, len - 4);
    if (h[5] == WEFT__WIRE_STATS)
      exit(46);
  }
}

/* A snapshot by hand (metrics_remote.c's format): two contexts named
 * "main", one its own (pid 0, msgs_in 9), one claiming to be process 1
 * "init" (msgs_in 7). */
#define CTX_REC 224
static size_t hand_snapshot(uint8_t *p) {
  memset(p, 0, 8 + 2 * CTX_REC);
  p[0] = 1; /* version */
  weft__wire_be16(p + 2, 2);
  for (int i = 0; i < 2; i++) {
    uint8_t *r = p + 8 + i * CTX_REC;
    memcpy(r, "main", 4);
    if (i == 0) {
      memcpy(r + 32, "init", 4);
      weft__wire_be32(r + 64, 1);
    }
    weft__wire_be64(r + 72, i == 0 ? 7 : 9); /* msgs_in */
  }
  return 8 + 2 * CTX_REC;
}

static int raw_child_nested(void) {
  int fd = rawpeer_fd();
  rawpeer_hello(fd, RAW_WINDOW, 1u << 20, -1);
  uint32_t seq = wait_stats_req(fd);
  uint8_t f[WEFT__WIRE_HEADER + 4 + 8 + 2 * CTX_REC];
  size_t n = hand_snapshot(f + WEFT__WIRE_HEADER + 4);
  weft__wire_header(f, (uint32_t)(4 + 4 + n), WEFT__WIRE_VERSION, WEFT__WIRE_STATS, 0);
  weft__wire_be32(f + WEFT__WIRE_HEADER, seq);
  rawpeer_send(fd, f, WEFT__WIRE_HEADER + 4 + n, -1);
  read_until_hangup(fd);
  return 0;
}

static int raw_child(bool huge) {
  int fd = rawpeer_fd();
  rawpeer_hello(fd, RAW_WINDOW, 1u << 20, -1);
  uint32_t seq = wait_stats_req(fd);
  uint8_t f[256];
  if (huge) {
    weft__wire_header(f, 4 + 4 + WEFT__WIRE_STATS_MAX + 1, WEFT__WIRE_VERSION, WEFT__WIRE_STATS,
                      0);
    weft__wire_be32(f + WEFT__WIRE_HEADER, seq);
    rawpeer_send(fd, f, WEFT__WIRE_HEADER + 4, -1);
  } else {
    size_t junk = 100;
    weft__wire_header(f, (uint32_t)(4 + 4 + junk), WEFT__WIRE_VERSION, WEFT__WIRE_STATS, 0);
    weft__wire_be32(f + WEFT__WIRE_HEADER, seq);
    for (size_t i = 0; i < junk; i++)
      f[WEFT__WIRE_HEADER + 4 + i] = (uint8_t)(i * 37 + 1);
    size_t n = WEFT__WIRE_HEADER + 4 + junk;
    n += rawpeer_put_msg(f + n, sizeof(f) - n, 8); /* the channel still carries messages */
    n += (size_t)weft__wire_put_stats_req(f + n, sizeof(f) - n, 1); /* asking the parent */
    rawpeer_send(fd, f, n, -1);
    read_until_hangup(fd);
  }
  rawpeer_wait_hangup(fd, 30000);
  return 0;
}

/* ---- the parent --------------------------------------------------------------------- */

static const weft_metrics_ctx_t *child_ctx(const weft_metrics_snapshot_t *s, int pid,
                                           const char *name) {
  for (size_t i = 0; i < s->nctx; i++)
    if (s->ctx[i].pid == pid && strcmp(s->ctx[i].name, name) == 0)
      return &s->ctx[i];
  return NULL;
}

static const weft_metrics_ctx_t *own_ctx(const weft_metrics_snapshot_t *s, const char *name) {
  return child_ctx(s, 0, name);
}

/* A value of the parent's source for the child (child-<pid>). */
static double child_value(const weft_metrics_snapshot_t *s, int pid, const char *name,
                          const char *label_value) {
  char src[48];
  snprintf(src, sizeof(src), "child-%d", pid);
  for (size_t i = 0; i < s->nvalues; i++) {
    const weft_metrics_value_t *v = &s->values[i];
    if (v->pid == 0 && strcmp(v->kind, "child") == 0 && strcmp(v->source, src) == 0 &&
        strcmp(v->name, name) == 0 &&
        (label_value == NULL || strcmp(v->label_value, label_value) == 0))
      return v->value;
  }
  return -1;
}

static const char *const *self_args(void) {
  static const char *args[2];
  args[0] = self_argv0;
  args[1] = NULL;
  return args;
}

typedef struct {
  weft_runtime_t *rt;
  weft_child_t *child;
  int pid;
  uv_timer_t poll;
  uint64_t deadline;
  int phase;
  bool timed_out, exited, closed;
  int64_t status;
  int sig, close_reason;
  uint64_t got;              /* messages from the child */
  /* work */
  weft_metrics_ctx_t c_main, c_worker;
  char *prom, *json;
  double replies_at_stop, max_age, replies_after;
  uint64_t own_count_at_stop, own_count_stopped, child_age_stopped;
  uint64_t scrapes_stopped;
  /* raw */
  double rejected, eproto, child_ctxs, credit, waiting;
} run_t;

static run_t R;

static void on_child_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  R.exited = true;
  R.child = NULL; /* the handle is gone once this returns */
  R.status = status;
  R.sig = sig;
}

static void on_child_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  R.got++;
}

static void on_child_port_closed(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  R.closed = true;
  R.close_reason = info->reason;
}

static void stop_polling(void) {
  uv_close((uv_handle_t *)&R.poll, NULL);
  weft_port_t *p = R.child ? weft_child_port(R.child) : NULL;
  if (p != NULL && !R.closed)
    weft_port_close(p); /* the child sees its channel end and exits */
}

static bool past_deadline(void) {
  if (uv_hrtime() <= R.deadline)
    return false;
  R.timed_out = true;
  fprintf(stderr, "deadline passed in phase %d\n", R.phase);
  if (R.phase >= 1 && R.phase <= 2 && R.child)
    (void)weft_child_kill(R.child, SIGCONT);
  stop_polling();
  return true;
}

static void spawn(const char *entry, weft_port_message_cb on_msg) {
  memset(&R, 0, sizeof(R));
  R.rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  weft_child_options_t o = {.entry_name = entry, .args = self_args(), .on_exit = on_child_exit,
                            .on_message = on_msg};
  assert_int_equal(weft_child_spawn(ctx, &o, &R.child), 0);
  R.pid = weft_child_pid(R.child);
  assert_int_equal(weft_port_on_close(weft_child_port(R.child), on_child_port_closed), 0);
  R.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &R.poll);
}

/* ---- a working child: exact counts, then SIGSTOP / SIGCONT ----------------------------- */

/* Phases: 0 the child's counts show; 1 stopped: its figures age while the
 * parent goes on; 2 continued: fresh answers come again. */
static void work_poll(uv_timer_t *t) {
  (void)t;
  if (past_deadline())
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  const weft_metrics_ctx_t *cm = child_ctx(s, R.pid, "main");
  const weft_metrics_ctx_t *cw = child_ctx(s, R.pid, "worker-1");
  const weft_metrics_ctx_t *om = own_ctx(s, "main");
  double replies = child_value(s, R.pid, "stats_replies", NULL);
  double age = child_value(s, R.pid, "stats_age_seconds", NULL);
  bool src_seen = false;
  for (size_t i = 0; i < s->nvalues; i++)
    src_seen |= s->values[i].pid == R.pid && strcmp(s->values[i].kind, "test") == 0;
  /* Once the child consumed all N, its whole window is back: 4096, the default. */
  double credit = child_value(s, R.pid, "credit_messages", NULL);
  double waiting = child_value(s, R.pid, "waiting_for_credit", NULL);
  if (R.phase == 0 && cm && cw && cm->msgs_in == N && cw->msgs_in == K && src_seen &&
      credit == 4096 && waiting == 0) {
    size_t len;
    R.c_main = *cm;
    R.c_worker = *cw;
    CHECK_RC(weft_metrics_prometheus(s, &R.prom, &len), 0);
    CHECK_RC(weft_metrics_json(s, &R.json, &len), 0);
    CHECK_RC(weft_child_kill(R.child, SIGSTOP), 0);
    R.replies_at_stop = replies;
    R.own_count_at_stop = om ? om->delay.count : 0;
    R.phase = 1;
  } else if (R.phase == 1) {
    char *text;
    size_t len;
    if (weft_metrics_prometheus(s, &text, &len) == 0) { /* the scrape answers */
      R.scrapes_stopped++;
      weft_free(text);
    }
    if (age > R.max_age)
      R.max_age = age;
    if (age >= STOPPED_AGE_S && cm != NULL) {
      R.own_count_stopped = om ? om->delay.count : 0;
      R.child_age_stopped = cm->age_ns;
      CHECK_RC(weft_child_kill(R.child, SIGCONT), 0);
      R.phase = 2;
    }
  } else if (R.phase == 2 && replies > R.replies_at_stop + 1 && age >= 0 && age < R.max_age) {
    R.replies_after = replies;
    R.rejected = child_value(s, R.pid, "stats_rejected", NULL);
    stop_polling();
  }
  weft_metrics_snapshot_free(s);
}

static void working_child_counts_and_a_stopped_child(void **state) {
  (void)state;
  spawn("work", on_child_msg);
  for (uint64_t i = 0; i < N; i++)
    assert_int_equal(weft_port_post(weft_child_port(R.child), ktest_msg_u64(i)), 0);
  uv_timer_start(&R.poll, work_poll, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr,
          "figure: child %d: main in=%llu (posted %u), worker-1 in=%llu (posted %u), "
          "p99 delay %.3f ms; stopped: %llu scrapes, answer age up to %.2f s, child main "
          "age %.2f s, own main samples %llu -> %llu; after SIGCONT %.0f answers (%.0f at "
          "stop), %.0f rejected\n",
          R.pid, (unsigned long long)R.c_main.msgs_in, N, (unsigned long long)R.c_worker.msgs_in,
          K, R.c_main.delay.p99_ns / 1e6, (unsigned long long)R.scrapes_stopped, R.max_age,
          R.child_age_stopped / 1e9, (unsigned long long)R.own_count_at_stop,
          (unsigned long long)R.own_count_stopped, R.replies_after, R.replies_at_stop, R.rejected);
  assert_false(R.timed_out);
  assert_true(R.exited);
  assert_int_equal(R.status, 0);
  assert_int_equal(R.sig, 0);
  assert_string_equal(R.c_main.child, "work");
  assert_true(R.c_main.delay.count > 0);
  char line[160];
  snprintf(line, sizeof(line),
           "weft_messages_received_total{ctx=\"worker-1\",child=\"work\",pid=\"%d\"} %u\n",
           R.pid, K);
  if (strstr(R.prom, line) == NULL)
    fail_msg("no line %s in the scrape", line);
  snprintf(line, sizeof(line), "{\"name\":\"main\",\"pid\":%d,\"child\":\"work\",\"msgs_in\":%u,",
           R.pid, N);
  if (strstr(R.json, line) == NULL)
    fail_msg("no %s in the JSON", line);
  /* The child's own sources too. */
  snprintf(line, sizeof(line),
           "weft_test_answer{test=\"src\",shard=\"0\",child=\"work\",pid=\"%d\"} 42\n", R.pid);
  if (strstr(R.prom, line) == NULL)
    fail_msg("no line %s in the scrape", line);
  assert_true(R.scrapes_stopped > 0);
  assert_true(R.max_age >= STOPPED_AGE_S);
  /* The stopped child's figures are as old as the wait at least. */
  assert_true(R.child_age_stopped >= (uint64_t)(STOPPED_AGE_S * 1e9));
  /* The parent's own loop went on sampling while the child was stopped. */
  assert_true(R.own_count_stopped > R.own_count_at_stop);
  /* The answers to the requests made while it was stopped are all taken. */
  assert_true(R.rejected == 0);
  weft_free(R.prom);
  weft_free(R.json);
  ktest_live_finish(R.rt);
}

/* ---- hostile answers ---------------------------------------------------------------------- */

static void garbage_poll(uv_timer_t *t) {
  (void)t;
  if (past_deadline())
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  R.rejected = child_value(s, R.pid, "stats_rejected", NULL);
  R.eproto = child_value(s, R.pid, "stats_error", "WEFT_EPROTO");
  R.child_ctxs = 0;
  for (size_t i = 0; i < s->nctx; i++)
    R.child_ctxs += s->ctx[i].pid == R.pid;
  R.credit = child_value(s, R.pid, "credit_messages", NULL);
  R.waiting = child_value(s, R.pid, "waiting_for_credit", NULL);
  if (R.rejected >= 1 && R.eproto == 1 && R.got == 1 && R.credit == 0 && R.waiting == 1)
    stop_polling();
  weft_metrics_snapshot_free(s);
}

static void garbage_answer_is_rejected(void **state) {
  (void)state;
  spawn("garbage", on_child_msg);
  /* The raw child grants 64 messages and never gives credit back: these
   * spend the window, and the parent's posts then wait for credit. */
  for (uint64_t i = 0; i < RAW_WINDOW; i++)
    assert_int_equal(weft_port_post(weft_child_port(R.child), ktest_msg_u64(i)), 0);
  uv_timer_start(&R.poll, garbage_poll, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr, "figure: garbage answer: rejected %.0f, stats_error{WEFT_EPROTO} %.0f, "
          "child contexts shown %.0f, messages after it %llu, close reason %s; window spent: "
          "credit %.0f, waiting %.0f\n", R.rejected, R.eproto, R.child_ctxs,
          (unsigned long long)R.got, weft_err_name(R.close_reason), R.credit, R.waiting);
  assert_false(R.timed_out);
  assert_true(R.rejected == 1 && R.eproto == 1);
  assert_true(R.child_ctxs == 0);
  assert_int_equal(R.got, 1);          /* the channel carried on */
  assert_true(R.credit == 0 && R.waiting == 1);
  assert_int_equal(R.close_reason, 0); /* closed by us, not by the transport */
  assert_true(R.exited);
  assert_int_equal(R.status, 0); /* 46: the parent answered the child's request */
  ktest_live_finish(R.rt);
}

static void huge_poll(uv_timer_t *t) {
  (void)t;
  if (past_deadline())
    return;
  if (!R.closed || !R.exited)
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) == 0) { /* the parent is fine */
    const weft_metrics_ctx_t *om = own_ctx(s, "main");
    R.phase = om != NULL && om->delay.count > 0 ? 9 : 0;
    weft_metrics_snapshot_free(s);
  }
  stop_polling();
}

static void oversized_answer_closes_the_channel(void **state) {
  (void)state;
  spawn("huge", on_child_msg);
  uv_timer_start(&R.poll, huge_poll, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr, "figure: oversized answer: channel closed with %s, child exit %lld\n",
          weft_err_name(R.close_reason), (long long)R.status);
  assert_false(R.timed_out);
  assert_true(R.closed);
  assert_int_equal(R.close_reason, WEFT_EFRAMESIZE);
  assert_int_equal(R.phase, 9);
  assert_true(R.exited);
  ktest_live_finish(R.rt);
}

/* ---- a Node.js child: seen from the parent only ------------------------------------ */

static double nd_sent; /* the child source's messages_sent at the last poll */
static bool nd_has_stats;
static size_t nd_ctxs;

static void node_poll(uv_timer_t *t) {
  (void)t;
  if (past_deadline())
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  nd_sent = child_value(s, R.pid, "messages_sent", NULL);
  nd_has_stats |= child_value(s, R.pid, "stats_replies", NULL) >= 0;
  for (size_t i = 0; i < s->nctx; i++)
    nd_ctxs += s->ctx[i].pid == R.pid;
  weft_metrics_snapshot_free(s);
  weft_port_t *p = weft_child_port(R.child);
  /* Each message goes once the previous one is echoed and a collection has
   * published it: a request, if one were sent, went out before. */
  if (R.phase == (int)R.got && nd_sent == (double)R.got && R.got < 3) {
    weft_msg_t *m = ktest_msg_u64(R.got);
    if (R.got == 2) { /* the last: the script disconnects and exits 0 */
      weft_msg_free(m);
      CHECK_RC(weft_msg_new(&m), 0);
      CHECK_RC(weft_msg_put_map(m, 1), 0);
      CHECK_RC(weft_msg_put_str(m, "op", "bye"), 0);
    }
    CHECK_RC(weft_port_post(p, m), 0);
    R.phase++;
  }
  if (R.closed && R.exited) {
    uv_close((uv_handle_t *)&R.poll, NULL);
  }
}

static void node_child_is_seen_from_the_parent_only(void **state) {
  (void)state;
  if (WEFT_NODE_EXECUTABLE[0] == '\0')
    skip();
  memset(&R, 0, sizeof(R));
  nd_sent = -1;
  nd_has_stats = false;
  nd_ctxs = 0;
  R.rt = ktest_live_runtime_new(NULL);
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  const char *args[] = {WEFT_NODE_EXECUTABLE, WEFT_TEST_SOURCE_DIR "/tests/node/echo_child.js",
                        NULL};
  weft_child_options_t o = {.file = WEFT_NODE_EXECUTABLE, .args = args,
                            .channel = WEFT_CHANNEL_NODE, .on_exit = on_child_exit,
                            .on_message = on_child_msg};
  assert_int_equal(weft_child_spawn(ctx, &o, &R.child), 0);
  R.pid = weft_child_pid(R.child);
  assert_int_equal(weft_port_on_close(weft_child_port(R.child), on_child_port_closed), 0);
  R.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &R.poll);
  uv_timer_start(&R.poll, node_poll, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr, "figure: Node.js child: %llu echoes, messages_sent %.0f, stats values %d, "
          "own contexts %zu, close %s, exit %lld\n", (unsigned long long)R.got, nd_sent,
          nd_has_stats, nd_ctxs, weft_err_name(R.close_reason), (long long)R.status);
  assert_false(R.timed_out);
  assert_int_equal(R.got, 2);
  assert_false(nd_has_stats);
  assert_int_equal(nd_ctxs, 0);
  assert_int_equal(R.close_reason, WEFT_ECLOSED);
  assert_int_equal(R.status, 0);
  ktest_live_finish(R.rt);
}

/* ---- a child's own children are named under it ------------------------------------ */

static weft_metrics_ctx_t nested_own, nested_grand;

static void nested_poll(uv_timer_t *t) {
  (void)t;
  if (past_deadline())
    return;
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(R.rt, &s) != 0)
    return;
  const weft_metrics_ctx_t *own = child_ctx(s, R.pid, "main"), *grand = child_ctx(s, 1, "main");
  if (own && grand) {
    nested_own = *own;
    nested_grand = *grand;
    stop_polling();
  }
  weft_metrics_snapshot_free(s);
}

static void grandchildren_are_named_under_their_child(void **state) {
  (void)state;
  spawn("nested", on_child_msg);
  uv_timer_start(&R.poll, nested_poll, 10, 10);
  assert_int_equal(weft_runtime_run(R.rt), 0);
  fprintf(stderr, "figure: nested: own main child=\"%s\" pid %d in=%llu; claimed pid 1 "
          "child=\"%s\" in=%llu\n", nested_own.child, nested_own.pid,
          (unsigned long long)nested_own.msgs_in, nested_grand.child,
          (unsigned long long)nested_grand.msgs_in);
  assert_false(R.timed_out);
  assert_string_equal(nested_own.child, "nested");
  assert_int_equal(nested_own.msgs_in, 9);
  assert_string_equal(nested_grand.child, "nested/init");
  assert_int_equal(nested_grand.msgs_in, 7);
  assert_int_equal(R.status, 0);
  ktest_live_finish(R.rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  (void)argc;
  self_argv0 = argv[0];
  const char *entry = getenv("WEFT_ENTRY");
  if (entry != NULL && strcmp(entry, "work") == 0)
    return work_child();
  if (entry != NULL && strcmp(entry, "garbage") == 0)
    return raw_child(false);
  if (entry != NULL && strcmp(entry, "huge") == 0)
    return raw_child(true);
  if (entry != NULL && strcmp(entry, "nested") == 0)
    return raw_child_nested();
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(working_child_counts_and_a_stopped_child),
      T(garbage_answer_is_rejected),
      T(oversized_answer_closes_the_channel),
      T(node_child_is_seen_from_the_parent_only),
      T(grandchildren_are_named_under_their_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
