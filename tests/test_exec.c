/* test_exec.c: weft_exec, a command run to completion with its output
 * collected (Node's execFile), with real processes: stdout and exit status,
 * stderr and a non-zero exit, output at and over max_output (UV_ENOBUFS, the
 * child killed, the buffer never past the cap), a killed command, a missing
 * program (an error from weft_exec and no callback), args, env and cwd,
 * argument errors, and several commands at once.
 *
 * Each test ends with weft_runtime_free() == 0, no CHECK failed, and no weft
 * allocation outstanding. A watchdog aborts a hung test (all of it
 * tests/support/ktest.h, with ktest_live_* freeing a half-way runtime). */
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

/* ---- results ------------------------------------------------------------------ */

#define OUT_MAX (4u << 20)

/* What one callback saw (copied: the result's bytes live only during it). */
typedef struct {
  int calls;
  int err;
  int64_t status;
  int sig;
  char *out, *err_out;
  size_t out_len, err_len;
  bool out_zero; /* every stdout byte was '\0' */
} seen_t;

static void on_done(const weft_exec_result_t *r, void *data) {
  seen_t *s = data;
  s->calls++;
  s->err = r->err;
  s->status = r->exit_status;
  s->sig = r->term_signal;
  CHECK(r->out != NULL && r->err_out != NULL);
  CHECK(r->out_len <= OUT_MAX && r->err_len <= OUT_MAX);
  s->out_len = r->out_len;
  s->err_len = r->err_len;
  s->out = malloc(r->out_len + 1);
  s->err_out = malloc(r->err_len + 1);
  if (s->out == NULL || s->err_out == NULL)
    abort();
  memcpy(s->out, r->out, r->out_len);
  s->out[r->out_len] = '\0';
  memcpy(s->err_out, r->err_out, r->err_len);
  s->err_out[r->err_len] = '\0';
  s->out_zero = true;
  for (size_t i = 0; i < r->out_len; i++)
    s->out_zero &= r->out[i] == '\0';
}

static void seen_fini(seen_t *s) {
  free(s->out);
  free(s->err_out);
  memset(s, 0, sizeof(*s));
}

/* Run one command to completion. */
static void exec_run(weft_runtime_t *rt, weft_exec_options_t *o, seen_t *s) {
  memset(s, 0, sizeof(*s));
  o->cb = on_done;
  o->data = s;
  assert_int_equal(weft_exec(weft_runtime_main(rt), o), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(s->calls, 1);
}

/* ---- tests -------------------------------------------------------------------------- */

static void echo_hello(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const args[] = {"echo", "hello", NULL};
  weft_exec_options_t o = {.file = "/bin/echo", .args = args};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, 0);
  assert_int_equal(s.status, 0);
  assert_int_equal(s.sig, 0);
  assert_int_equal(s.out_len, 6);
  assert_string_equal(s.out, "hello\n");
  assert_int_equal(s.err_len, 0);
  seen_fini(&s);
  /* Found on PATH, args defaulting to { file, NULL }. */
  weft_exec_options_t o2 = {.file = "true"};
  exec_run(rt, &o2, &s);
  assert_int_equal(s.err, 0);
  assert_int_equal(s.status, 0);
  assert_int_equal(s.out_len, 0);
  seen_fini(&s);
  ktest_live_finish(rt);
}

static void exit_status_and_stderr(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const args[] = {"sh", "-c", "echo out; echo e >&2; exit 3", NULL};
  weft_exec_options_t o = {.file = "/bin/sh", .args = args};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, 0); /* a non-zero exit is no weft error */
  assert_int_equal(s.status, 3);
  assert_int_equal(s.sig, 0);
  assert_string_equal(s.out, "out\n");
  assert_string_equal(s.err_out, "e\n");
  seen_fini(&s);
  ktest_live_finish(rt);
}

static void killed_by_a_signal(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const args[] = {"sh", "-c", "printf before; kill -TERM $$", NULL};
  weft_exec_options_t o = {.file = "/bin/sh", .args = args};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, 0);
  assert_int_equal(s.status, 0);
  assert_int_equal(s.sig, SIGTERM);
  assert_string_equal(s.out, "before");
  seen_fini(&s);
  ktest_live_finish(rt);
}

static void output_over_max_output(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const args[] = {"head", "-c", "3000000", "/dev/zero", NULL};
  weft_exec_options_t o = {.file = "head", .args = args, .max_output = 1u << 20};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, UV_ENOBUFS);
  assert_int_equal(s.sig, SIGKILL); /* killed: it was still writing */
  assert_true(s.out_len <= (1u << 20));
  assert_true(s.out_zero);
  seen_fini(&s);

  /* The default cap (1 MiB) and stderr count the same way. */
  static const char *const args2[] = {"sh", "-c", "head -c 3000000 /dev/zero >&2", NULL};
  weft_exec_options_t o2 = {.file = "/bin/sh", .args = args2};
  exec_run(rt, &o2, &s);
  assert_int_equal(s.err, UV_ENOBUFS);
  assert_true(s.err_len <= (1u << 20));
  seen_fini(&s);
  ktest_live_finish(rt);
}

/* Exactly max_output bytes fit; one more does not. */
static void output_at_max_output(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const fits[] = {"head", "-c", "200000", "/dev/zero", NULL};
  weft_exec_options_t o = {.file = "head", .args = fits, .max_output = 200000};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, 0);
  assert_int_equal(s.status, 0);
  assert_int_equal(s.out_len, 200000);
  assert_true(s.out_zero);
  seen_fini(&s);

  static const char *const over[] = {"head", "-c", "200001", "/dev/zero", NULL};
  weft_exec_options_t o2 = {.file = "head", .args = over, .max_output = 200000};
  exec_run(rt, &o2, &s);
  assert_int_equal(s.err, UV_ENOBUFS);
  assert_true(s.out_len <= 200000);
  seen_fini(&s);
  ktest_live_finish(rt);
}

static void missing_program(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  seen_t s = {0};
  weft_exec_options_t o = {.file = "/nonexistent/weft-no-such-program", .cb = on_done,
                           .data = &s};
  assert_int_equal(weft_exec(weft_runtime_main(rt), &o), UV_ENOENT);
  o.file = "weft-no-such-program-on-path";
  assert_int_equal(weft_exec(weft_runtime_main(rt), &o), UV_ENOENT);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(s.calls, 0); /* an error from weft_exec: no callback */
  ktest_live_finish(rt);
}

static void env_and_cwd(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const args[] = {"sh", "-c", "printf '%s:%s' \"$GREETING\" \"$(pwd)\"", NULL};
  static const char *const env[] = {"GREETING=hi", "PATH=/usr/bin:/bin", NULL};
  weft_exec_options_t o = {.file = "/bin/sh", .args = args, .env = env, .cwd = "/"};
  seen_t s;
  exec_run(rt, &o, &s);
  assert_int_equal(s.err, 0);
  assert_string_equal(s.out, "hi:/");
  seen_fini(&s);
  ktest_live_finish(rt);
}

static void argument_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  seen_t s = {0};
  weft_exec_options_t o = {.file = "/bin/true", .cb = on_done, .data = &s};
  assert_int_equal(weft_exec(NULL, &o), WEFT_EINVAL);
  assert_int_equal(weft_exec(weft_runtime_main(rt), NULL), WEFT_EINVAL);
  o.file = NULL;
  assert_int_equal(weft_exec(weft_runtime_main(rt), &o), WEFT_EINVAL);
  o.file = "/bin/true";
  o.cb = NULL;
  assert_int_equal(weft_exec(weft_runtime_main(rt), &o), WEFT_EINVAL);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(s.calls, 0);
  ktest_live_finish(rt);
}

/* Several commands at once, each with its own result. */
static void several_at_once(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  enum { N = 8 };
  static seen_t s[N];
  static char numbers[N][8];
  static const char *args[N][6];
  for (int i = 0; i < N; i++) {
    memset(&s[i], 0, sizeof(s[i]));
    snprintf(numbers[i], sizeof(numbers[i]), "%d", i);
    /* sh -c 'script' sh <i>: $1 is i */
    const char *a[6] = {"sh", "-c", "printf %s \"$1\"; exit \"$1\"", "sh", numbers[i], NULL};
    memcpy(args[i], a, sizeof(a));
    weft_exec_options_t o = {.file = "/bin/sh", .args = args[i], .cb = on_done, .data = &s[i]};
    assert_int_equal(weft_exec(weft_runtime_main(rt), &o), 0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(s[i].calls, 1);
    assert_int_equal(s[i].err, 0);
    assert_int_equal(s[i].status, i);
    assert_string_equal(s[i].out, numbers[i]);
    seen_fini(&s[i]);
  }
  ktest_live_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(echo_hello),
      T(exit_status_and_stderr),
      T(killed_by_a_signal),
      T(output_over_max_output),
      T(output_at_max_output),
      T(env_and_cwd),
      T(argument_errors),
      T(several_at_once),
      T(missing_program), /* last: a failed spawn may leave the loop broken */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
