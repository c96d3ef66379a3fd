/* test_checked.c: checked mode (WEFT_CHECK=1, on by default in sanitizer
 * builds). Ownership mistakes are reported at the call: a second post of one
 * message gets WEFT_ETAKEN (also when two threads post it at once), a post
 * of a freed message gets WEFT_ETAKEN, and a second free aborts with a
 * message naming weft_msg_free and the double free (checked in a forked
 * child: its signal and its stderr). A received message may be posted again.
 *
 * Each test ends with weft_runtime_free() == 0, no CHECK failed, and no weft
 * allocation outstanding. A watchdog aborts a hung test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ktest.h"
#include "weft.h"

static weft_runtime_t *checked_runtime(void) {
  assert_int_equal(setenv("WEFT_CHECK", "1", 1), 0);
  weft_runtime_t *rt = ktest_new_runtime();
  assert_int_equal(unsetenv("WEFT_CHECK"), 0); /* read once, at weft_runtime_new */
  return rt;
}

/* Posting one message twice: the second post is refused at the call and
 * the message is delivered once; once received it may be posted again. */
static void double_post_is_taken(void **state) {
  (void)state;
  weft_runtime_t *rt = checked_runtime();
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  weft_msg_t *m = ktest_msg_u64(7);
  assert_int_equal(weft_port_post(p[0], m), 0);
  assert_int_equal(weft_port_post(p[0], m), WEFT_ETAKEN);
  assert_int_equal(weft_port_post(p[1], m), WEFT_ETAKEN);
  assert_int_equal(weft_port_pending(p[1]), 1);
  weft_msg_t *got = NULL;
  assert_int_equal(weft_port_receive(p[1], &got), 0);
  assert_ptr_equal(got, m);
  assert_int_equal(weft_port_receive(p[1], &got), WEFT_ENOENT);
  /* received: the receiver's now, and it may forward it */
  assert_int_equal(weft_port_post(p[1], m), 0);
  assert_int_equal(weft_port_receive(p[0], &got), 0);
  assert_int_equal(ktest_msg_value(got), 7);
  weft_msg_free(got);
  assert_int_equal(weft_port_close(p[0]), 0);
  ktest_finish_runtime(rt);
}

/* A freed message posted again: WEFT_ETAKEN, nothing queued (without
 * checked mode this queued a message whose struct the next weft_msg_new
 * hands out again). */
static void post_after_free_is_taken(void **state) {
  (void)state;
  weft_runtime_t *rt = checked_runtime();
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  weft_msg_t *m = ktest_msg_u64(1);
  weft_msg_free(m);
  assert_int_equal(weft_port_post(p[0], m), WEFT_ETAKEN);
  assert_int_equal(weft_port_pending(p[1]), 0);
#if !SANITIZED
  /* Without ASan (which reports any touch of it) the builders fail too. */
  assert_int_equal(weft_msg_error(m), WEFT_ETAKEN);
#endif
  assert_int_equal(weft_port_close(p[0]), 0);
  ktest_finish_runtime(rt);
}

/* Two threads post the same 2000 messages at once: each goes exactly once. */
#define RACE_MSGS 2000

static struct {
  weft_port_t *tx;
  weft_msg_t *msgs[RACE_MSGS];
  atomic_int ok, taken, other;
  atomic_int go;
} race;

static void race_thread(void *arg) {
  (void)arg;
  while (!atomic_load(&race.go))
    ;
  for (int i = 0; i < RACE_MSGS; i++) {
    int rc = weft_port_post(race.tx, race.msgs[i]);
    if (rc == 0)
      atomic_fetch_add(&race.ok, 1);
    else if (rc == WEFT_ETAKEN)
      atomic_fetch_add(&race.taken, 1);
    else
      atomic_fetch_add(&race.other, 1);
  }
}

static void racing_double_post_goes_once(void **state) {
  (void)state;
  weft_runtime_t *rt = checked_runtime();
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  memset(&race, 0, sizeof(race));
  race.tx = p[0];
  for (int i = 0; i < RACE_MSGS; i++)
    race.msgs[i] = ktest_msg_u64((uint64_t)i);
  uv_thread_t t[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_create(&t[i], race_thread, NULL), 0);
  atomic_store(&race.go, 1);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  assert_int_equal(atomic_load(&race.ok), RACE_MSGS);
  assert_int_equal(atomic_load(&race.taken), RACE_MSGS);
  assert_int_equal(atomic_load(&race.other), 0);
  uint64_t got_sum = 0;
  int got = 0;
  weft_msg_t *m = NULL;
  while (weft_port_receive(p[1], &m) == 0) {
    got_sum += ktest_msg_value(m);
    got++;
    weft_msg_free(m);
  }
  assert_int_equal(got, RACE_MSGS);
  assert_int_equal(got_sum, (uint64_t)RACE_MSGS * (RACE_MSGS - 1) / 2);
  assert_int_equal(weft_port_close(p[0]), 0);
  ktest_finish_runtime(rt);
}

/* A second free aborts at the call with a message naming weft_msg_free and
 * the double free. Run in a forked child: its signal and stderr are read. */
static void double_free_aborts_at_the_call(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(20); /* the child's watchdog */
    dup2(fds[1], 2);
    close(fds[0]);
    setenv("WEFT_CHECK", "1", 1);
    weft_runtime_t *rt = NULL;
    if (weft_runtime_new(&rt, NULL) != 0)
      _exit(3);
    weft_msg_t *m = NULL;
    if (weft_msg_new(&m) != 0)
      _exit(4);
    weft_msg_free(m);
    weft_msg_free(m); /* aborts here */
    _exit(5);
  }
  close(fds[1]);
  char out[4096];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof(out) - 1 && (r = read(fds[0], out + n, sizeof(out) - 1 - n)) > 0)
    n += (size_t)r;
  out[n] = '\0';
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("child status 0x%x, stderr: %s", status, out);
  assert_non_null(strstr(out, "weft_msg_free"));
  assert_non_null(strstr(out, "double free"));
}

/* Without checked mode nothing changes for a correct program: posting and
 * freeing in order works and nothing is refused. */
static void unchecked_mode_is_off_with_zero(void **state) {
  (void)state;
  assert_int_equal(setenv("WEFT_CHECK", "0", 1), 0);
  weft_runtime_t *rt = ktest_new_runtime();
  assert_int_equal(unsetenv("WEFT_CHECK"), 0);
  weft_port_t *p[2];
  assert_int_equal(weft_channel_new(weft_runtime_main(rt), p), 0);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(weft_port_post(p[0], ktest_msg_u64((uint64_t)i)), 0);
    weft_msg_t *m = NULL;
    assert_int_equal(weft_port_receive(p[1], &m), 0);
    assert_int_equal(ktest_msg_value(m), (uint64_t)i);
    weft_msg_free(m);
  }
  assert_int_equal(weft_port_close(p[0]), 0);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(double_post_is_taken),
      T(post_after_free_is_taken),
      T(racing_double_post_goes_once),
      T(double_free_aborts_at_the_call),
      T(unchecked_mode_is_off_with_zero),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
