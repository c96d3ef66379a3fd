/* test_child_attached.c: a child process whose runtime is attached to the
 * caller's own libuv loop (weft_runtime_options_t.loop), as a program that
 * embeds weft is. weft_runtime_child_entry runs the entry and then that loop,
 * and the entry finds the parent's channel with weft_ctx_parent_port, as
 * worker code does. This binary is its own child (WEFT_ENTRY set).
 *
 * Each test ends with weft_runtime_free() == 0, no CHECK failed, and no weft
 * allocation outstanding. A watchdog aborts a hung test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktest.h"
#include "weft.h"

static const char *self_argv0;

/* ---- the child side ------------------------------------------------------------ */

static void echo_once(weft_port_t *p, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  weft_msg_free(m);
  CHECK_RC(weft_port_post(p, ktest_msg_u64(v + 1)), 0);
  CHECK_RC(weft_port_close(p), 0);
}

/* Worker-style code: the parent is weft_ctx_parent_port(ctx). */
static int entry_echo(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_ctx_parent_port(ctx);
  if (p == NULL)
    return 20;
  return weft_port_start(p, echo_once) == 0 ? 0 : 21;
}

static void child_main(void) {
  if (getenv("WEFT_ENTRY") == NULL)
    return;
  alarm(SANITIZED ? 120 : 60); /* the child's watchdog */
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    _exit(10);
  weft_runtime_options_t ro = {.loop = &loop};
  weft_runtime_t *rt = NULL;
  if (weft_runtime_new(&rt, &ro) != 0)
    _exit(11);
  if (weft_runtime_register(rt, "echo", entry_echo) != 0)
    _exit(12);
  int code = 0;
  int rc = weft_runtime_child_entry(rt, &code);
  if (rc != 0)
    code = 13;
  if (weft_runtime_free(rt) != 0)
    code = 14;
  if (uv_loop_close(&loop) != 0)
    code = 15;
  if (atomic_load(&ktest_failures) != 0)
    code = 16;
  _exit(code);
}

/* ---- the parent side ----------------------------------------------------------- */

static struct {
  int exits;
  int64_t status;
  int signal;
  uint64_t reply;
  int replies;
  int closes;
  int close_reason;
} at;

static void at_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  at.exits++;
  at.status = status;
  at.signal = sig;
}

static void at_reply(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  at.reply = ktest_msg_value(m);
  at.replies++;
  weft_msg_free(m);
}

static void at_closed(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  at.closes++;
  at.close_reason = info->reason;
}

/* Without the fix the child returned from weft_runtime_child_entry at once
 * (exit 0, no reply), and weft_ctx_parent_port was NULL there. */
static void attached_child_serves_its_parent(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  memset(&at, 0, sizeof(at));
  const char *args[] = {self_argv0, NULL};
  weft_child_options_t o = {.entry_name = "echo", .args = args, .on_exit = at_exit,
                            .on_message = at_reply};
  weft_child_t *c = NULL;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &o, &c), 0);
  assert_int_equal(weft_port_on_close(weft_child_port(c), at_closed), 0);
  assert_int_equal(weft_port_post(weft_child_port(c), ktest_msg_u64(41)), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(at.exits, 1);
  assert_int_equal(at.signal, 0);
  assert_int_equal(at.status, 0);
  assert_int_equal(at.replies, 1);
  assert_int_equal(at.reply, 42);
  assert_int_equal(at.closes, 1);
  ktest_live_finish(rt);
}

/* Not a child: weft_ctx_parent_port of a main context is NULL. */
static void no_parent_port_without_a_parent(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  assert_null(weft_ctx_parent_port(weft_runtime_main(rt)));
  assert_null(weft_runtime_parent_port(rt));
  int code = -1;
  assert_int_equal(weft_runtime_child_entry(rt, &code), WEFT_ENOENT);
  ktest_live_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  (void)argc;
  self_argv0 = argv[0];
  ktest_init();
  child_main(); /* returns only in the test runner */
  const struct CMUnitTest tests[] = {
      T(attached_child_serves_its_parent),
      T(no_parent_port_without_a_parent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
