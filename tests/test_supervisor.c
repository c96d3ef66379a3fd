/* test_supervisor.c: supervisors (actors/supervisor*.c) with real worker
 * threads and child processes: one_for_all and rest_for_one stop and start
 * order, one_for_one with restart intensity and back-off, a tree (a nested
 * supervisor that gives up is restarted by its parent, which then gives up),
 * a process killed with SIGKILL (reason recorded), transient and temporary
 * children, a constructor that fails half way, a hand restart in flight when
 * a group restart begins, and an allocation-failure sweep over a supervisor
 * of threads, a nested supervisor and (once runtime/ipc.c allows) a process.
 *
 * Everything is driven from the supervisor's callbacks on the main loop; each
 * test ends with weft_runtime_free() == 0, no CHECK failed and no weft
 * allocation outstanding. A watchdog aborts a hung test. This binary is also
 * the child process: with WEFT_CHANNEL_FD set, main runs the entry. */
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
#include <unistd.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"
#include "weft/supervisor.h"

/* ---- entries (threads and processes) ------------------------------------------ */

/* A thread that exits at once with the "code" of its workerData. */
static int crash_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  uint64_t code = 0;
  if (data)
    weft_msg_get_u64(data, "code", &code);
  return (int)code;
}

/* A thread or process that stays until told {"exit": code}. */
static void stay_on_msg(weft_port_t *p, weft_msg_t *m) {
  uint64_t code;
  if (weft_msg_get_u64(m, "exit", &code) == 0) {
    weft_ctx_t *ctx = weft_port_ctx(p);
    if (weft_ctx_parent_port(ctx) == NULL)
      _exit((int)code);  /* a process: leave at once */
    weft_worker_exit(ctx, (int)code);
  }
  weft_msg_free(m);
}

static int stay_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_ctx_parent_port(ctx);
  if (p == NULL)
    p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  return p ? weft_port_start(p, stay_on_msg) : WEFT_EINVAL;
}

static void register_entries(weft_runtime_t *rt) {
  weft_runtime_register(rt, "stay", stay_entry);
  weft_runtime_register(rt, "crash", crash_entry);
}

static weft_runtime_t *new_runtime(void) {
  weft_runtime_t *rt = ktest_new_runtime();
  register_entries(rt);
  return rt;
}

/* msgpack {"code": n}, n < 128 */
static const uint8_t *code_payload(uint8_t buf[7], unsigned n) {
  memcpy(buf, "\x81\xa4" "code", 6);
  buf[6] = (uint8_t)n;
  return buf;
}

static void post_exit(weft_sup_child_t *c, unsigned code) {
  weft_msg_t *m;
  CHECK(weft_msg_new(&m) == 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "exit", code);
  int rc = weft_port_post(weft_sup_child_port(c), m);
  CHECK(rc == 0);
  if (rc)
    weft_msg_free(m);
}

/* ---- what the callbacks saw ------------------------------------------------------ */

typedef struct {
  char log[512];
  int starts, exits, finals, give_ups, nested_give_ups, closed;
  int giving_up_exits;       /* exits seen with weft_sup_gave_up() already true */
  int trigger_at;            /* starts count at which to act */
  const char *victim;        /* id of the child to act on */
  unsigned victim_code;
  int close_at;              /* starts count at which to close */
  weft_sup_exit_t last_give_up;
  uint64_t start_ms[16];
  uint64_t exit_ms[16];
  uint32_t backoff[16];
} seen_t;

static seen_t seen;

static void logf_(const char *fmt, ...) {
  size_t n = strlen(seen.log);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(seen.log + n, sizeof(seen.log) - n, fmt, ap);
  va_end(ap);
}

static void on_closed(weft_sup_t *s) {
  (void)s;
  seen.closed++;
}

static void on_start(weft_sup_t *s, weft_sup_child_t *c) {
  logf_("+%s", weft_sup_child_id(c));
  if (seen.starts < 16)
    seen.start_ms[seen.starts] = uv_now(weft_ctx_loop(weft_sup_ctx(s)));
  seen.starts++;
  if (seen.starts == seen.close_at) {
    weft_sup_close(s, on_closed);
    return;
  }
  if (seen.starts == seen.trigger_at) {
    for (size_t i = 0; i < weft_sup_count(s); i++) {
      weft_sup_child_t *v = weft_sup_child_at(s, i);
      if (strcmp(weft_sup_child_id(v), seen.victim) == 0)
        post_exit(v, seen.victim_code);
    }
  }
}

static void on_exit_(weft_sup_t *s, weft_sup_child_t *c, const weft_sup_exit_t *e, bool final) {
  logf_("%s%s", final ? "=" : "-", weft_sup_child_id(c));
  seen.giving_up_exits += weft_sup_gave_up(s);
  if (seen.exits < 16) {
    seen.exit_ms[seen.exits] = e->time_ms;
    seen.backoff[seen.exits] = weft_sup_child_backoff_ms(c);
  }
  seen.exits++;
  seen.finals += final;
}

static void on_give_up(weft_sup_t *s, const weft_sup_exit_t *last) {
  seen.give_ups++;
  seen.last_give_up = *last;
  weft_sup_close(s, on_closed);
}

static void on_nested_give_up(weft_sup_t *s, const weft_sup_exit_t *last) {
  (void)s;
  (void)last;
  seen.nested_give_ups++;
}

static weft_sup_child_spec_t stay_spec(const char *id) {
  weft_sup_child_spec_t c = {.id = id, .kind = WEFT_SUP_THREAD, .entry = stay_entry};
  return c;
}

static weft_sup_t *run_group(weft_runtime_t *rt, weft_sup_strategy_t strategy, size_t n) {
  static const char *ids[] = {"A", "B", "C", "D"};
  weft_sup_child_spec_t specs[4];
  for (size_t i = 0; i < n; i++)
    specs[i] = stay_spec(ids[i]);
  weft_sup_options_t o = {
      .strategy = strategy,
      .limits = {.backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = specs,
      .nchildren = n,
      .on_child_start = on_start,
      .on_child_exit = on_exit_,
      .on_give_up = on_give_up,
  };
  weft_sup_t *s = NULL;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  return s;
}

/* ---- tests ------------------------------------------------------------------------- */

static void one_for_all_order(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  seen.trigger_at = 3, seen.victim = "B", seen.victim_code = 5, seen.close_at = 6;
  weft_runtime_t *rt = new_runtime();
  weft_sup_t *s = run_group(rt, WEFT_SUP_ONE_FOR_ALL, 3);
  weft_sup_child_t *b = weft_sup_child_at(s, 1);
  assert_int_equal(weft_runtime_run(rt), 0);
  /* B exits; C then A are stopped (last first); all start again in order;
   * then the close stops them last first and removes them. */
  assert_string_equal(seen.log, "+A+B+C-B-C-A+A+B+C=C=B=A");
  assert_int_equal(seen.closed, 1);
  (void)b;
  ktest_finish_runtime(rt);
}

static void rest_for_one_order(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  seen.trigger_at = 4, seen.victim = "B", seen.victim_code = 1, seen.close_at = 7;
  weft_runtime_t *rt = new_runtime();
  run_group(rt, WEFT_SUP_REST_FOR_ONE, 4);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_string_equal(seen.log, "+A+B+C+D-B-D-C+B+C+D=D=C=B=A");
  ktest_finish_runtime(rt);
}

/* Read B's record at its exit: exit code and message; C was stopped. */
static weft_sup_exit_t rec_b, rec_c;

static void on_exit_record(weft_sup_t *s, weft_sup_child_t *c, const weft_sup_exit_t *e,
                           bool final) {
  on_exit_(s, c, e, final);
  if (!final && strcmp(weft_sup_child_id(c), "B") == 0)
    CHECK(weft_sup_child_exit(c, 0, &rec_b) == 0);
  if (!final && strcmp(weft_sup_child_id(c), "C") == 0)
    CHECK(weft_sup_child_exit(c, 0, &rec_c) == 0);
}

static void one_for_one_reasons(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  seen.trigger_at = 3, seen.victim = "B", seen.victim_code = 7, seen.close_at = 4;
  weft_runtime_t *rt = new_runtime();
  weft_sup_child_spec_t specs[3] = {stay_spec("A"), stay_spec("B"), stay_spec("C")};
  weft_sup_options_t o = {
      .limits = {.backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = specs,
      .nchildren = 3,
      .on_child_start = on_start,
      .on_child_exit = on_exit_record,
  };
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_string_equal(seen.log, "+A+B+C-B+B=C=B=A");
  assert_int_equal(rec_b.exit_code, 7);
  assert_false(rec_b.normal);
  assert_false(rec_b.stopped);
  assert_string_equal(rec_b.message, "exited with code 7");
  ktest_finish_runtime(rt);
}

static void intensity_and_backoff(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  uint8_t pl[7];
  weft_sup_child_spec_t spec = {.id = "X", .entry = crash_entry,
                                .payload = code_payload(pl, 2), .payload_len = 7};
  weft_sup_options_t o = {
      .limits = {.max_restarts = 3, .period_ms = 60000, .backoff_min_ms = 20,
                 .backoff_max_ms = 1000},
      .children = &spec,
      .nchildren = 1,
      .seed = 42,
      .on_child_start = on_start,
      .on_child_exit = on_exit_,
      .on_give_up = on_give_up,
  };
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  /* Three restarts, the fourth exit breaks the limit: give up, then close. */
  assert_string_equal(seen.log, "+X-X+X-X+X-X+X-X=X");
  assert_int_equal(seen.give_ups, 1);
  assert_int_equal(seen.last_give_up.exit_code, 2);
  assert_int_equal(seen.closed, 1);
  /* The exit that broke the limit already sees the give-up (so that a
   * balancer can stop listening at once); the final one is the close's. */
  assert_int_equal(seen.giving_up_exits, 1);
  for (int i = 0; i < 3; i++) {
    uint32_t d = 20u << i;
    CHECK(seen.backoff[i] >= d / 2 && seen.backoff[i] <= d);
    /* the restart came no sooner than the delay chosen */
    CHECK(seen.start_ms[i + 1] + 1 >= seen.exit_ms[i] + seen.backoff[i]);
  }
  ktest_finish_runtime(rt);
}

static void tree_gives_up_upwards(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  uint8_t pl[7];
  weft_sup_child_spec_t inner = {.id = "x", .entry = crash_entry,
                                 .payload = code_payload(pl, 3), .payload_len = 7};
  weft_sup_options_t nested = {
      .limits = {.max_restarts = 1, .period_ms = 60000, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = &inner,
      .nchildren = 1,
      .on_give_up = on_nested_give_up,
  };
  weft_sup_child_spec_t specs[2] = {stay_spec("P"),
                                    {.id = "N", .kind = WEFT_SUP_NESTED, .sup = &nested}};
  weft_sup_options_t o = {
      .limits = {.max_restarts = 1, .period_ms = 60000, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = specs,
      .nchildren = 2,
      .on_child_start = on_start,
      .on_child_exit = on_exit_,
      .on_give_up = on_give_up,
  };
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  /* N gives up twice (x crashed past its limit each time); the parent restarts
   * N once, then gives up itself and stops P. */
  assert_int_equal(seen.nested_give_ups, 2);
  assert_int_equal(seen.give_ups, 1);
  assert_string_equal(seen.log, "+P+N-N+N-N-P=P=N");
  assert_int_equal(seen.last_give_up.exit_code, 1);
  assert_int_equal(seen.last_give_up.error, WEFT_EGAVEUP);  /* N's exit: it gave up */
  ktest_finish_runtime(rt);
}

/* A process child killed with SIGKILL: restarted, reason recorded; the
 * second one exits with code 4, which breaks a limit of one restart. */
static weft_sup_exit_t proc_rec[2];

static void on_proc_start(weft_sup_t *s, weft_sup_child_t *c) {
  (void)s;
  seen.starts++;
  CHECK(weft_sup_child_pid(c) > 0);
  if (seen.starts == 1)
    CHECK(weft_child_kill(weft_sup_child_process(c), SIGKILL) == 0);
  else
    post_exit(c, 4);
}

static void on_proc_exit(weft_sup_t *s, weft_sup_child_t *c, const weft_sup_exit_t *e,
                         bool final) {
  (void)s;
  (void)e;
  if (!final) {
    CHECK(weft_sup_child_exit(c, 0, &proc_rec[0]) == 0);
    if (seen.exits == 1)
      CHECK(weft_sup_child_exit(c, 1, &proc_rec[1]) == 0);
  }
  seen.exits++;
}

static void process_killed(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  weft_sup_child_spec_t spec = {.id = "proc", .kind = WEFT_SUP_PROCESS, .entry_name = "stay"};
  weft_sup_options_t o = {
      .limits = {.max_restarts = 1, .period_ms = 60000, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = &spec,
      .nchildren = 1,
      .on_child_start = on_proc_start,
      .on_child_exit = on_proc_exit,
      .on_give_up = on_give_up,
  };
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seen.starts, 2);
  assert_int_equal(seen.give_ups, 1);
  assert_int_equal(proc_rec[0].exit_code, 4);   /* newest first */
  assert_int_equal(proc_rec[1].term_signal, SIGKILL);
  assert_non_null(strstr(proc_rec[1].message, "killed by signal 9"));
  ktest_finish_runtime(rt);
}

static void transient_and_temporary(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  uint8_t p0[7], p9[7];
  weft_sup_child_spec_t specs[2] = {
      {.id = "T", .restart = WEFT_SUP_TRANSIENT, .entry = crash_entry,
       .payload = code_payload(p0, 0), .payload_len = 7},
      {.id = "M", .restart = WEFT_SUP_TEMPORARY, .entry = crash_entry,
       .payload = code_payload(p9, 9), .payload_len = 7},
  };
  weft_sup_options_t o = {.children = specs, .nchildren = 2,
                          .on_child_start = on_start, .on_child_exit = on_exit_};
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);  /* both gone: nothing keeps the loop */
  assert_int_equal(seen.finals, 2);
  assert_int_equal(weft_sup_count(s), 0);
  assert_int_equal(weft_sup_restarts(s), 0);
  weft_sup_close(s, on_closed);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seen.closed, 1);
  ktest_finish_runtime(rt);
}

static void new_fails_half_way(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  weft_sup_child_spec_t specs[2] = {stay_spec("A"),
                                    {.id = "bad", .entry_name = "no-such-entry"}};
  weft_sup_options_t o = {.children = specs, .nchildren = 2,
                          .on_child_start = on_start, .on_child_exit = on_exit_};
  weft_sup_t *s = NULL;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), WEFT_ENOENTRY);
  assert_null(s);
  assert_int_equal(weft_runtime_run(rt), 0);  /* A is stopped quietly */
  assert_string_equal(seen.log, "");
  weft_sup_options_t bad = {.strategy = (weft_sup_strategy_t)7};
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &bad, &s), WEFT_EINVAL);
  ktest_finish_runtime(rt);
}

/* weft_sup_stop_child with a grace period: the child is asked to exit by a
 * message and does; it is removed, not restarted. */
static void on_start_retire(weft_sup_t *s, weft_sup_child_t *c) {
  (void)s;
  seen.starts++;
  CHECK(weft_sup_stop_child(c, 10000) == 0);
  post_exit(c, 0);
}

static void stop_child_with_grace(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  weft_runtime_t *rt = new_runtime();
  weft_sup_child_spec_t spec = stay_spec("A");
  weft_sup_options_t o = {.children = &spec, .nchildren = 1,
                          .on_child_start = on_start_retire, .on_child_exit = on_exit_};
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(seen.finals, 1);
  assert_int_equal(weft_sup_count(s), 0);
  weft_sup_close(s, NULL);
  assert_int_equal(weft_runtime_run(rt), 0);
  ktest_finish_runtime(rt);
}

/* weft_sup_restart_child in flight when a one_for_all group restart begins:
 * A's first run holds its thread in its entry until B's exit has been seen
 * (a terminate takes effect at the next callback boundary), so A's exit
 * (the hand restart) comes while the group is being stopped. The group
 * restart must go on (it stalled: the hand restart started A again and
 * nothing resumed the group) and start A once, with B. */
static uv_sem_t a_running, hold_a;
static atomic_int a_runs;

static int held_entry(weft_ctx_t *ctx, weft_msg_t *data) {
  if (atomic_fetch_add(&a_runs, 1) == 0) {
    uv_sem_post(&a_running);
    uv_sem_wait(&hold_a);
  }
  return stay_entry(ctx, data);
}

static void on_start_restart_a(weft_sup_t *s, weft_sup_child_t *c) {
  on_start(s, c);
  if (seen.starts == 2) {
    uv_sem_wait(&a_running);  /* A is in its entry: the restart waits for it */
    CHECK(weft_sup_restart_child(weft_sup_child_at(s, 0)) == 0);
    post_exit(weft_sup_child_at(s, 1), 3);
  }
}

static void on_exit_release_a(weft_sup_t *s, weft_sup_child_t *c, const weft_sup_exit_t *e,
                              bool final) {
  on_exit_(s, c, e, final);
  if (strcmp(weft_sup_child_id(c), "B") == 0 && !final)
    uv_sem_post(&hold_a);
}

static void restart_child_during_group_restart(void **state) {
  (void)state;
  memset(&seen, 0, sizeof(seen));
  seen.close_at = 4;
  atomic_store(&a_runs, 0);
  assert_int_equal(uv_sem_init(&a_running, 0), 0);
  assert_int_equal(uv_sem_init(&hold_a, 0), 0);
  weft_runtime_t *rt = new_runtime();
  weft_sup_child_spec_t specs[2] = {{.id = "A", .entry = held_entry}, stay_spec("B")};
  weft_sup_options_t o = {
      .strategy = WEFT_SUP_ONE_FOR_ALL,
      .limits = {.backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = specs,
      .nchildren = 2,
      .on_child_start = on_start_restart_a,
      .on_child_exit = on_exit_release_a,
  };
  weft_sup_t *s;
  assert_int_equal(weft_sup_new(weft_runtime_main(rt), &o, &s), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_string_equal(seen.log, "+A+B-B-A+A+B=B=A");
  assert_int_equal(seen.closed, 1);
  uv_sem_destroy(&a_running);
  uv_sem_destroy(&hold_a);
  ktest_finish_runtime(rt);
}

/* ---- allocation failures ----------------------------------------------------------- */

/* What one run of the sweep saw. */
typedef struct {
  int starts, exits, finals, give_ups, closed, restart_rc;
  int odd_error;  /* an exit error other than WEFT_ETERMINATED / WEFT_ENOMEM */
} oom_t;

static oom_t oom;

static void on_oom_closed(weft_sup_t *s) {
  (void)s;
  oom.closed++;
}

/* A is restarted once by hand at its first start (a restart outside the
 * intensity); B crashes until the supervisor gives up; then it closes. */
static void on_oom_start(weft_sup_t *s, weft_sup_child_t *c) {
  (void)s;
  oom.starts++;
  if (strcmp(weft_sup_child_id(c), "A") == 0 && weft_sup_child_starts(c) == 1)
    oom.restart_rc = weft_sup_restart_child(c);
}

static void on_oom_exit(weft_sup_t *s, weft_sup_child_t *c, const weft_sup_exit_t *e,
                        bool final) {
  (void)s;
  (void)c;
  oom.exits++;
  oom.finals += final;
  if (e->error != 0 && e->error != WEFT_ETERMINATED && e->error != WEFT_ENOMEM)
    oom.odd_error = e->error;
}

static void on_oom_give_up(weft_sup_t *s, const weft_sup_exit_t *last) {
  (void)last;
  oom.give_ups++;
  CHECK_RC(weft_sup_close(s, on_oom_closed), 0);
}

/* The k-th weft allocation from weft_sup_new on fails (in the supervisor, a
 * child, a thread, process or nested supervisor starting, a restart, a first
 * message), for every k until one run meets no failure. weft_sup_new is all
 * or nothing: on failure it returns WEFT_ENOMEM, sets nothing and calls
 * nothing, and the children it started go quietly. A supervisor that started
 * always gives up (B keeps crashing, or failing to start) and closes, every
 * child's handle goes once, and every exit carries no error, WEFT_ETERMINATED
 * or WEFT_ENOMEM. Returns the number of runs. */
static int sweep(weft_sup_strategy_t strategy, bool with_process) {
  uint8_t pl[7];
  weft_sup_child_spec_t inner = stay_spec("a");
  weft_sup_options_t nested = {.limits = {.backoff_min_ms = 1, .backoff_max_ms = 2},
                               .children = &inner, .nchildren = 1};
  weft_sup_child_spec_t specs[4] = {
      stay_spec("A"),
      {.id = "B", .entry = crash_entry, .payload = code_payload(pl, 2), .payload_len = 7},
      {.id = "N", .kind = WEFT_SUP_NESTED, .sup = &nested},
      {.id = "P", .kind = WEFT_SUP_PROCESS, .entry_name = "stay"},
  };
  weft_sup_options_t o = {
      .strategy = strategy,
      .limits = {.max_restarts = 2, .period_ms = 60000, .backoff_min_ms = 1, .backoff_max_ms = 2},
      .children = specs,
      .nchildren = with_process ? 4 : 3,
      .on_child_start = on_oom_start,
      .on_child_exit = on_oom_exit,
      .on_give_up = on_oom_give_up,
  };
  bool hit = true;
  int runs = 0;
  for (long k = 0; hit && k < 5000; k++, runs++) {
    memset(&oom, 0, sizeof(oom));
    weft_runtime_t *rt = new_runtime();
    weft_sup_t *s = NULL;
    testutil_alloc_fail_after(k);
    int rc = weft_sup_new(weft_runtime_main(rt), &o, &s);
    if (rc != 0) {
      assert_int_equal(rc, WEFT_ENOMEM);
      assert_null(s);
    }
    assert_int_equal(weft_runtime_run(rt), 0); /* ends: nothing hangs */
    hit = testutil_alloc_fail_pending() == false;
    testutil_alloc_fail_after(-1);
    if (oom.odd_error)
      fprintf(stderr, "k=%ld: exit error %s\n", k, weft_err_name(oom.odd_error));
    assert_int_equal(oom.odd_error, 0);
    if (rc == 0) {
      assert_int_equal(oom.restart_rc, 0);
      assert_int_equal(oom.give_ups, 1);
      assert_int_equal(oom.closed, 1);
      assert_int_equal(oom.finals, (int)o.nchildren);
    } else {
      assert_int_equal(oom.starts + oom.exits + oom.closed, 0); /* quiet */
    }
    ktest_finish_runtime(rt);
  }
  assert_false(hit); /* a run without any failure was reached */
  return runs;
}

static void allocation_failure_sweep(void **state) {
  (void)state;
  int one = sweep(WEFT_SUP_ONE_FOR_ONE, false);
  int all = sweep(WEFT_SUP_ONE_FOR_ALL, false);
  fprintf(stderr, "  %d runs one_for_one, %d runs one_for_all\n", one, all);
}

/* The same with a process child too (it found a crash in weft__ipc_open's
 * failure path). */
static void allocation_failure_sweep_process(void **state) {
  (void)state;
  int one = sweep(WEFT_SUP_ONE_FOR_ONE, true);
  int all = sweep(WEFT_SUP_ONE_FOR_ALL, true);
  fprintf(stderr, "  %d runs one_for_one, %d runs one_for_all\n", one, all);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  if (getenv("WEFT_CHANNEL_FD") != NULL) {  /* started as a supervised process */
    weft_runtime_t *rt;
    int code = 1;
    if (weft_runtime_new(&rt, NULL) != 0)
      return 1;
    register_entries(rt);
    weft_runtime_child_entry(rt, &code);
    weft_runtime_free(rt);
    return code;
  }
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(one_for_all_order),
      T(rest_for_one_order),
      T(one_for_one_reasons),
      T(intensity_and_backoff),
      T(tree_gives_up_upwards),
      T(process_killed),
      T(transient_and_temporary),
      T(new_fails_half_way),
      T(stop_child_with_grace),
      T(restart_child_during_group_restart),
      T(allocation_failure_sweep),
      T(allocation_failure_sweep_process),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
