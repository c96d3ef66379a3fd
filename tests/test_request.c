/* test_request.c: request/reply (weft_port_request, weft_msg_reply) against
 * real worker threads: an answer arrives (from a worker and from an actor,
 * with and without a timeout); a timeout, after which a late answer is
 * refused; a replier that drops the request, or takes its reply port and
 * closes it, or whose thread exits with requests still queued: WEFT_ECLOSED,
 * and the loop ends by itself (no timeout set); 10,000 concurrent requests
 * over two workers, each answered exactly once; wrong use (answering twice,
 * answering a plain message, NULLs, a thread without a context, a closed
 * port, a child process's channel: WEFT_ETRANSFER at the call, no callback).
 *
 * Callbacks and workers record failures with CHECK; each test ends with
 * ktest_finish_runtime (runtime freed, nothing failed, nothing leaked). */
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

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

/* ---- the replier: a worker that does what each message's "op" says --------- */

typedef struct {
  weft_msg_t *held; /* op "hold": answered by the next "release" */
  bool exiting;
} replier_t;

static uv_sem_t gate; /* a gated replier waits for the test to post everything */
static bool gated;

static weft_msg_t *msg_u64(const char *key, uint64_t v) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_begin_map(m, NULL);
  weft_msg_put_u64(m, key, v);
  weft_msg_end_map(m);
  return m;
}

static weft_msg_t *msg_op(const char *op, uint64_t n) {
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_begin_map(m, NULL);
  weft_msg_put_str(m, "op", op);
  weft_msg_put_u64(m, "n", n);
  weft_msg_end_map(m);
  return m;
}

/* Tells the parent rc (a plain post on the parent port). */
static void report(weft_port_t *parent, const char *what, int rc) {
  weft_msg_t *m;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_begin_map(m, NULL);
  weft_msg_put_str(m, "report", what);
  weft_msg_put_i64(m, "rc", rc);
  weft_msg_end_map(m);
  CHECK_RC(weft_port_post(parent, m), 0);
}

/* Answers req with {n: n + 1}; returns weft_msg_reply's code. */
static int answer(weft_msg_t *req) {
  uint64_t n = 0;
  CHECK_RC(weft_msg_get_u64(req, "n", &n), 0);
  weft_msg_t *reply = msg_u64("n", n + 1);
  int rc = weft_msg_reply(req, reply);
  if (rc != 0)
    weft_msg_free(reply);
  return rc;
}

static void on_op(weft_port_t *parent, weft_msg_t *msg) {
  replier_t *r = weft_port_data(parent);
  char op[16];
  CHECK_RC(weft_msg_get_strcpy(msg, "op", op, sizeof(op), NULL), 0);
  if (r->exiting) {
    weft_msg_free(msg); /* dropped: its reply port closes */
    return;
  }
  if (strcmp(op, "echo") == 0) {
    CHECK(weft_msg_is_request(msg));
    CHECK_RC(answer(msg), 0);
    CHECK(!weft_msg_is_request(msg));
  } else if (strcmp(op, "hold") == 0) {
    r->held = msg;
    return;
  } else if (strcmp(op, "release") == 0) {
    report(parent, "late", answer(r->held)); /* the requester timed out */
    weft_msg_free(r->held);
    r->held = NULL;
  } else if (strcmp(op, "take_close") == 0) {
    /* The replier takes the reply port (the last item) and closes it. */
    weft_port_t *p;
    CHECK_RC(weft_msg_take_port(msg, weft_msg_xfer_count(msg) - 1, &p), 0);
    CHECK_RC(weft_port_close(p), 0);
    report(parent, "after_take", answer(msg));
  } else if (strcmp(op, "twice") == 0) {
    CHECK_RC(answer(msg), 0);
    report(parent, "twice", answer(msg));
  } else if (strcmp(op, "plain") == 0) {
    CHECK(!weft_msg_is_request(msg));
    report(parent, "plain", answer(msg));
  } else if (strcmp(op, "exit") == 0) {
    r->exiting = true;
    CHECK_RC(weft_worker_exit(weft_ctx_current(), 0), 0);
  }
  weft_msg_free(msg); /* "drop" and every other op end here */
}

static int replier_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  replier_t *r = weft_calloc(1, sizeof(*r));
  if (r == NULL)
    return WEFT_ENOMEM;
  if (gated)
    uv_sem_wait(&gate);
  weft_port_t *parent = weft_ctx_parent_port(ctx);
  weft_port_set_data(parent, r);
  weft_port_on_close(parent, NULL);
  return weft_port_start(parent, on_op);
}

static void replier_port_closed_free(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  replier_t *r = weft_port_data(port);
  if (r != NULL) {
    weft_msg_free(r->held);
    weft_free(r);
  }
}

static int replier_entry_owned(weft_ctx_t *ctx, weft_msg_t *data) {
  int rc = replier_entry(ctx, data);
  if (rc == 0)
    rc = weft_port_on_close(weft_ctx_parent_port(ctx), replier_port_closed_free);
  return rc;
}

/* ---- the requester's side ------------------------------------------------------ */

typedef struct {
  int calls;
  int err;
  uint64_t n;
} call_t;

static struct {
  call_t *calls;
  size_t ncalls;
  size_t answered;
  size_t reports_wanted, reports;
  int report_rc[8];
  char report_what[8][16];
  weft_worker_t *w[2];
  int nworkers;
  int exits;
  uint64_t t_done, t_timeout;
  bool release_on_timeout;
} T_;

static void finish_if_done(void) {
  if (T_.answered < T_.ncalls || T_.reports < T_.reports_wanted)
    return;
  T_.t_done = uv_hrtime();
  for (int i = 0; i < T_.nworkers; i++) {
    weft_port_t *p = weft_worker_port(T_.w[i]);
    if (p != NULL)
      weft_port_close(p); /* the worker's loop ends */
  }
}

static void on_reply(weft_msg_t *reply, int err, void *data) {
  call_t *c = data;
  c->calls++;
  c->err = err;
  CHECK((reply != NULL) == (err == 0));
  if (reply != NULL) {
    CHECK_RC(weft_msg_get_u64(reply, "n", &c->n), 0);
    weft_msg_free(reply);
  }
  if (c->calls == 1)
    T_.answered++;
  if (err == UV_ETIMEDOUT)
    T_.t_timeout = uv_hrtime();
  if (err == UV_ETIMEDOUT && T_.release_on_timeout)
    CHECK_RC(weft_port_post(weft_worker_port(T_.w[0]), msg_op("release", 0)), 0);
  finish_if_done();
}

static void on_report(weft_port_t *port, weft_msg_t *m) {
  (void)port;
  int64_t rc = 1;
  if (T_.reports < 8) {
    CHECK_RC(weft_msg_get_i64(m, "rc", &rc), 0);
    T_.report_rc[T_.reports] = (int)rc;
    CHECK_RC(weft_msg_get_strcpy(m, "report", T_.report_what[T_.reports], 16, NULL), 0);
  }
  T_.reports++;
  weft_msg_free(m);
  finish_if_done();
}

static void on_worker_exit(weft_worker_t *w, int code) {
  (void)w;
  CHECK(code == 0);
  T_.exits++;
}

static weft_runtime_t *start(int nworkers, size_t ncalls, size_t reports) {
  memset(&T_, 0, sizeof(T_));
  weft_runtime_t *rt = ktest_new_runtime();
  T_.calls = calloc(ncalls ? ncalls : 1, sizeof(call_t));
  assert_non_null(T_.calls);
  T_.ncalls = ncalls;
  T_.reports_wanted = reports;
  T_.nworkers = nworkers;
  for (int i = 0; i < nworkers; i++) {
    weft_worker_options_t o = {.entry = replier_entry_owned,
                               .on_message = on_report,
                               .on_exit = on_worker_exit};
    assert_int_equal(weft_worker_spawn(weft_runtime_main(rt), &o, &T_.w[i]), 0);
  }
  return rt;
}

static void request(int worker, const char *op, size_t i, uint64_t timeout_ms) {
  weft_msg_t *m = msg_op(op, i);
  assert_int_equal(
      weft_port_request(weft_worker_port(T_.w[worker]), m, on_reply, &T_.calls[i], timeout_ms), 0);
}

static void run_and_finish(weft_runtime_t *rt) {
  assert_int_equal(weft_runtime_run(rt), 0); /* ends by itself: nothing hangs */
  assert_int_equal(T_.exits, T_.nworkers);
  for (size_t i = 0; i < T_.ncalls; i++)
    assert_int_equal(T_.calls[i].calls, 1); /* exactly once */
  free(T_.calls);
  ktest_finish_runtime(rt);
}

/* ---- tests ------------------------------------------------------------------------- */

static void actor_answers(weft_port_t *self, weft_msg_t *msg) {
  (void)self;
  CHECK_RC(answer(msg), 0);
  weft_msg_free(msg);
}

static void reply_arrives(void **state) {
  (void)state;
  weft_runtime_t *rt = start(1, 3, 0);
  request(0, "echo", 0, 0);
  request(0, "echo", 1, 60000); /* a timer that never fires is closed */
  /* An actor on this same thread answers too (its address is a port). */
  weft_port_t *addr;
  assert_int_equal(weft_actor_spawn(weft_runtime_main(rt), actor_answers, NULL, &addr), 0);
  weft_msg_t *m = msg_u64("n", 2);
  assert_int_equal(weft_port_request(addr, m, on_reply, &T_.calls[2], 0), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(T_.calls[i].err, 0);
    assert_int_equal(T_.calls[i].n, i + 1);
  }
  weft_port_close(addr);
  run_and_finish(rt);
}

static void timeout_then_late_answer_refused(void **state) {
  (void)state;
  weft_runtime_t *rt = start(1, 1, 1);
  T_.release_on_timeout = true;
  uint64_t t0 = uv_hrtime();
  request(0, "hold", 0, 50);
  assert_int_equal(weft_runtime_run(rt), 0);
  double ms = (double)(T_.t_timeout - t0) / 1e6;
  printf("timeout after %.1f ms (asked 50)\n", ms);
  assert_true(ms >= 48.0); /* libuv's loop time is cached: up to 1 ms early */
  assert_int_equal(T_.calls[0].err, UV_ETIMEDOUT);
  assert_string_equal(T_.report_what[0], "late");
  assert_int_equal(T_.report_rc[0], WEFT_ECLOSED);
  run_and_finish(rt);
}

static void replier_drops_or_closes(void **state) {
  (void)state;
  weft_runtime_t *rt = start(1, 2, 1);
  request(0, "drop", 0, 0);       /* freed unanswered */
  request(0, "take_close", 1, 0); /* its reply port taken out and closed */
  assert_int_equal(weft_runtime_run(rt), 0); /* no timeout: the close ends each wait */
  assert_int_equal(T_.calls[0].err, WEFT_ECLOSED);
  assert_int_equal(T_.calls[1].err, WEFT_ECLOSED);
  assert_string_equal(T_.report_what[0], "after_take");
  assert_int_equal(T_.report_rc[0], WEFT_ECLOSED);
  run_and_finish(rt);
}

static void replier_thread_exits(void **state) {
  (void)state;
  enum { N = 50 };
  assert_int_equal(uv_sem_init(&gate, 0), 0);
  gated = true;
  weft_runtime_t *rt = start(1, N, 0);
  /* All posted before the worker takes anything: "exit" first, so the
   * requests are still queued (or dropped) when its thread ends. */
  assert_int_equal(weft_port_post(weft_worker_port(T_.w[0]), msg_op("exit", 0)), 0);
  for (size_t i = 0; i < N; i++)
    request(0, "echo", i, 0); /* no timeout: only the close ends the wait */
  uv_sem_post(&gate);
  assert_int_equal(weft_runtime_run(rt), 0);
  gated = false;
  uv_sem_destroy(&gate);
  for (size_t i = 0; i < N; i++)
    assert_int_equal(T_.calls[i].err, WEFT_ECLOSED);
  run_and_finish(rt);
}

static void many_concurrent_requests(void **state) {
  (void)state;
  size_t n = (size_t)ktest_scaled(10000, 500);
  weft_runtime_t *rt = start(2, n, 0);
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++)
    request((int)(i % 2), "echo", i, i % 3 == 0 ? 60000 : 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  double ms = (double)(T_.t_done - t0) / 1e6;
  printf("%zu requests over 2 workers answered in %.1f ms (%.2f us each)\n", n, ms,
         ms * 1e3 / (double)n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(T_.calls[i].err, 0);
    assert_int_equal(T_.calls[i].n, i + 1);
  }
  run_and_finish(rt);
}

static void no_context_main(void *arg) {
  weft_port_t *port = arg;
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    abort();
  CHECK_RC(weft_port_request(port, m, on_reply, NULL, 0), WEFT_EWRONGTHREAD);
  weft_msg_free(m);
}

static void child_exited(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  (void)status;
  CHECK(sig == SIGKILL);
  T_.exits++;
}

static void wrong_use(void **state) {
  (void)state;
  weft_runtime_t *rt = start(1, 1, 2);
  weft_port_t *wp = weft_worker_port(T_.w[0]);
  /* Answered twice: the second answer is refused. */
  request(0, "twice", 0, 0);
  /* A plain post carries no reply port: WEFT_ENOENT. */
  assert_int_equal(weft_port_post(wp, msg_op("plain", 7)), 0);

  weft_msg_t *m = msg_op("echo", 0);
  assert_int_equal(weft_port_request(NULL, m, on_reply, NULL, 0), WEFT_EINVAL);
  assert_int_equal(weft_port_request(wp, NULL, on_reply, NULL, 0), WEFT_EINVAL);
  assert_int_equal(weft_port_request(wp, m, NULL, NULL, 0), WEFT_EINVAL);
  assert_int_equal(weft_msg_reply(NULL, m), WEFT_EINVAL);
  assert_int_equal(weft_msg_reply(m, NULL), WEFT_EINVAL);
  assert_int_equal(weft_msg_reply(m, m), WEFT_ENOENT);
  assert_false(weft_msg_is_request(m));
  assert_false(weft_msg_is_request(NULL));
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, no_context_main, wp), 0);
  uv_thread_join(&tid);

  /* A closed port: the post's error at the call; the message is as it was. */
  weft_port_t *ch[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), ch), 0);
  weft_port_close(ch[1]);
  call_t never = {0, 0, 0};
  assert_int_equal(weft_port_request(ch[0], m, on_reply, &never, 0), WEFT_ECLOSED);
  assert_int_equal(weft_msg_xfer_count(m), 0);
  weft_port_close(ch[0]);

  /* A child process's channel: ports cannot cross, WEFT_ETRANSFER at once. */
  const char *args[] = {"sleep", "30", NULL};
  weft_child_options_t co = {.file = "sleep", .args = args, .on_exit = child_exited};
  weft_child_t *child;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &co, &child), 0);
  assert_int_equal(weft_port_request(weft_child_port(child), m, on_reply, &never, 0),
                   WEFT_ETRANSFER);
  assert_int_equal(weft_msg_xfer_count(m), 0);
  assert_int_equal(weft_port_post(weft_child_port(child), m), 0); /* still ours, still good */
  assert_int_equal(weft_child_kill(child, SIGKILL), 0);
  T_.nworkers = 1; /* the child's exit is counted with the worker's */
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(never.calls, 0); /* never called back */
  assert_int_equal(T_.exits, 2);
  T_.exits = 1;
  assert_string_equal(T_.report_what[0], "twice");
  assert_int_equal(T_.report_rc[0], WEFT_ECLOSED);
  assert_string_equal(T_.report_what[1], "plain");
  assert_int_equal(T_.report_rc[1], WEFT_ENOENT);
  assert_int_equal(T_.calls[0].err, 0);
  run_and_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(reply_arrives),
      T(timeout_then_late_answer_refused),
      T(replier_drops_or_closes),
      T(replier_thread_exits),
      T(many_concurrent_requests),
      T(wrong_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
