/* test_metrics.c: the runtime's published figures (weft/metrics.h) against
 * what a workload did: message counts equal (read from another thread while
 * the loops run, and never going backwards), queue depths within bounds of
 * what waits, the loop delay rising past a deliberate 300 ms block, sources
 * and their removal, the Prometheus and JSON formats, the off switch.
 *
 * Callbacks and foreign threads record failures with CHECK; each test ends
 * with weft_runtime_free() == 0, no CHECK failed and no weft allocation
 * outstanding. Waits poll snapshots from a timer with a bounded deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

#define BLOCK_NS (300u * 1000000u)
#define DEADLINE_NS (20ull * 1000000000u)
#define V_BLOCK (UINT64_MAX - 2)

/* ---- the worker: echoes, or blocks its loop on purpose ------------------------ */

static void worker_on_msg(weft_port_t *p, weft_msg_t *m) {
  uint64_t v = ktest_msg_value(m);
  if (v == V_BLOCK) {
    CHECK_RC(weft_metrics_ctx_reset(weft_ctx_current()), 0);
    uint64_t until = uv_hrtime() + BLOCK_NS;
    while (uv_hrtime() < until) {
    }
  }
  CHECK_RC(weft_port_post(p, m), 0);
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), worker_on_msg);
}

/* ---- snapshot helpers ------------------------------------------------------------- */

static const weft_metrics_ctx_t *find_ctx(const weft_metrics_snapshot_t *s, const char *name) {
  for (size_t i = 0; i < s->nctx; i++)
    if (strcmp(s->ctx[i].name, name) == 0)
      return &s->ctx[i];
  return NULL;
}

static const weft_metrics_value_t *find_value(const weft_metrics_snapshot_t *s, const char *kind,
                                              const char *name, const char *label_value) {
  for (size_t i = 0; i < s->nvalues; i++) {
    const weft_metrics_value_t *v = &s->values[i];
    if (strcmp(v->kind, kind) == 0 && strcmp(v->name, name) == 0 &&
        (label_value == NULL || strcmp(v->label_value, label_value) == 0))
      return v;
  }
  return NULL;
}

/* A thread that takes snapshots while the loops run: counters never go back. */
typedef struct {
  weft_runtime_t *rt;
  atomic_bool stop;
  uint64_t snapshots;
  uint64_t last_in[2];
} snapper_t;

static void snapper_main(void *arg) {
  snapper_t *sn = arg;
  static const char *names[2] = {"main", "worker-1"};
  while (!atomic_load(&sn->stop)) {
    weft_metrics_snapshot_t *s;
    if (weft_metrics_snapshot(sn->rt, &s) != 0) {
      CHECK(!"snapshot failed");
      return;
    }
    for (int i = 0; i < 2; i++) {
      const weft_metrics_ctx_t *c = find_ctx(s, names[i]);
      if (c == NULL)
        continue;
      CHECK(c->msgs_in >= sn->last_in[i]);
      sn->last_in[i] = c->msgs_in;
      CHECK(c->utilization >= 0.0 && c->utilization <= 1.0);
    }
    weft_metrics_snapshot_free(s);
    sn->snapshots++;
  }
}

/* ---- counts and queues ------------------------------------------------------------ */

typedef struct {
  weft_runtime_t *rt;
  weft_worker_t *w;
  uint64_t n, echoed, k, consumed;
  int phase;
  uint64_t deadline;
  uv_timer_t poll;
  weft_port_t *q[2];
  bool exited;
  weft_metrics_ctx_t main_seen, worker_seen;
  uint64_t depth_seen, max_seen, peak_seen, depth_after;
  uint64_t p99_before;
  uint64_t count_at_echo; /* samples published when the echo after the block came */
  bool timed_out;
} run_t;

static run_t run;

static void on_exit_cb(weft_worker_t *w, int code) {
  (void)w;
  (void)code;
  run.exited = true;
}

static void main_on_echo(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  run.echoed++;
}

static void q_on_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  run.consumed++;
}

static void finish(void) {
  uv_timer_stop(&run.poll);
  uv_close((uv_handle_t *)&run.poll, NULL);
  if (run.q[0]) {
    weft_port_close(run.q[0]);
    weft_port_close(run.q[1]);
  }
  weft_worker_terminate(run.w);
}

/* Phases: 0 wait for the echoes and their counts; 1 wait for the stopped
 * port's queue to show; 2 wait for it to drain. */
static void counts_poll(uv_timer_t *t) {
  (void)t;
  if (uv_hrtime() > run.deadline) {
    run.timed_out = true;
    finish();
    return;
  }
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(run.rt, &s) != 0)
    return;
  const weft_metrics_ctx_t *mc = find_ctx(s, "main"), *wc = find_ctx(s, "worker-1");
  if (run.phase == 0 && mc && wc && run.echoed == run.n && wc->msgs_in == run.n &&
      wc->msgs_out == run.n && mc->msgs_in == run.n) {
    run.main_seen = *mc;
    run.worker_seen = *wc;
    CHECK_RC(weft_channel_new(weft_runtime_main(run.rt), run.q), 0);
    CHECK_RC(weft_port_set_hwm(run.q[1], (uint32_t)run.k + 10, 0), 0);
    for (uint64_t i = 0; i < run.k; i++)
      CHECK_RC(weft_port_post(run.q[0], ktest_msg_u64(i)), 0);
    run.phase = 1;
  } else if (run.phase == 1 && mc && mc->queue_max == run.k) {
    run.depth_seen = mc->queue_depth;
    run.max_seen = mc->queue_max;
    CHECK_RC(weft_port_start(run.q[1], q_on_msg), 0);
    run.phase = 2;
  } else if (run.phase == 2 && mc && run.consumed == run.k && mc->queue_depth == 0 &&
             mc->queue_peak >= run.k) {
    run.peak_seen = mc->queue_peak;
    run.depth_after = mc->queue_depth;
    finish();
  }
  weft_metrics_snapshot_free(s);
}

static void counts_and_queues(void **state) {
  (void)state;
  memset(&run, 0, sizeof(run));
  run.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(run.rt);
  assert_true(weft_metrics_enabled(run.rt));
  run.n = ktest_scaled(20000, 500);
  run.k = 100;
  run.deadline = uv_hrtime() + DEADLINE_NS;
  weft_worker_options_t o = {.entry = worker_entry, .on_message = main_on_echo,
                             .on_exit = on_exit_cb, .port_hwm_msgs = (uint32_t)run.n + 10};
  assert_int_equal(weft_worker_spawn(ctx, &o, &run.w), 0);
  for (uint64_t i = 0; i < run.n; i++)
    assert_int_equal(weft_port_post(weft_worker_port(run.w), ktest_msg_u64(i)), 0);
  snapper_t sn = {.rt = run.rt};
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, snapper_main, &sn), 0);
  uv_timer_init(weft_ctx_loop(ctx), &run.poll);
  uv_timer_start(&run.poll, counts_poll, 5, 5);
  assert_int_equal(weft_runtime_run(run.rt), 0);
  atomic_store(&sn.stop, true);
  uv_thread_join(&tid);
  fprintf(stderr,
          "n=%llu main in=%llu out=%llu; worker in=%llu out=%llu; stopped port: depth=%llu "
          "max=%llu, drained depth=%llu peak=%llu; %llu snapshots from another thread\n",
          (unsigned long long)run.n, (unsigned long long)run.main_seen.msgs_in,
          (unsigned long long)run.main_seen.msgs_out, (unsigned long long)run.worker_seen.msgs_in,
          (unsigned long long)run.worker_seen.msgs_out, (unsigned long long)run.depth_seen,
          (unsigned long long)run.max_seen, (unsigned long long)run.depth_after,
          (unsigned long long)run.peak_seen, (unsigned long long)sn.snapshots);
  assert_false(run.timed_out);
  assert_true(run.exited);
  assert_int_equal(run.main_seen.msgs_out, run.n);
  assert_int_equal(run.worker_seen.msgs_in, run.n);
  assert_int_equal(run.worker_seen.msgs_out, run.n);
  /* What waits: the k messages of the stopped port, nothing else. */
  assert_int_equal(run.max_seen, run.k);
  assert_true(run.depth_seen >= run.k && run.depth_seen <= run.k + 2);
  assert_true(run.peak_seen >= run.k);
  assert_true(sn.snapshots > 0);
  ktest_finish_runtime(run.rt);
}

/* ---- loop delay ---------------------------------------------------------------------- */

static void delay_on_reply(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  run.echoed++;
}

static void delay_poll(uv_timer_t *t) {
  (void)t;
  if (uv_hrtime() > run.deadline) {
    run.timed_out = true;
    finish();
    return;
  }
  weft_metrics_snapshot_t *s;
  if (weft_metrics_snapshot(run.rt, &s) != 0)
    return;
  const weft_metrics_ctx_t *wc = find_ctx(s, "worker-1");
  if (run.phase == 0 && wc && wc->delay.count >= 5) {
    run.p99_before = wc->delay.p99_ns;
    CHECK_RC(weft_port_post(weft_worker_port(run.w), ktest_msg_u64(V_BLOCK)), 0);
    run.phase = 1;
  } else if (run.phase == 1 && wc && run.echoed == 1) {
    /* The late sample is taken by the worker's timer after its callback
     * returns, which may be after the echo got here: wait for two samples
     * published after the echo was seen. */
    run.count_at_echo = wc->delay.count;
    run.phase = 2;
  } else if (run.phase == 2 && wc && wc->delay.count >= run.count_at_echo + 2) {
    run.worker_seen = *wc;
    finish();
  }
  weft_metrics_snapshot_free(s);
}

static void delay_rises_when_blocked(void **state) {
  (void)state;
  memset(&run, 0, sizeof(run));
  run.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(run.rt);
  run.deadline = uv_hrtime() + DEADLINE_NS;
  weft_worker_options_t o = {.entry = worker_entry, .on_message = delay_on_reply,
                             .on_exit = on_exit_cb};
  assert_int_equal(weft_worker_spawn(ctx, &o, &run.w), 0);
  uv_timer_init(weft_ctx_loop(ctx), &run.poll);
  uv_timer_start(&run.poll, delay_poll, 5, 5);
  assert_int_equal(weft_runtime_run(run.rt), 0);
  const weft_metrics_hist_t *d = &run.worker_seen.delay;
  fprintf(stderr,
          "worker loop delay: p99 before %.3f ms; after a %u ms block: count=%llu min=%.3f "
          "mean=%.3f p50=%.3f p90=%.3f p99=%.3f max=%.3f ms\n",
          run.p99_before / 1e6, BLOCK_NS / 1000000u, (unsigned long long)d->count,
          d->min_ns / 1e6, d->mean_ns / 1e6, d->p50_ns / 1e6, d->p90_ns / 1e6, d->p99_ns / 1e6,
          d->max_ns / 1e6);
  assert_false(run.timed_out);
  /* The block delays the next sample by at least the block less the longest
   * interval (100 ms, an idle loop's). */
  assert_true(d->max_ns >= BLOCK_NS / 2);
  assert_true(d->min_ns <= d->p50_ns && d->p50_ns <= d->p90_ns && d->p90_ns <= d->p99_ns &&
              d->p99_ns <= d->max_ns);
  if (d->count <= 100) /* p99 is then the largest sample */
    assert_true(d->p99_ns >= BLOCK_NS / 2);
  assert_true(d->max_ns > run.p99_before);
  ktest_finish_runtime(run.rt);
}

/* ---- sources and formats ------------------------------------------------------------ */

static uint64_t collects;

static void collect(weft_metrics_source_t *src, void *data) {
  CHECK(data == &collects);
  collects++;
  CHECK_RC(weft_metrics_put(src, "ticks", NULL, NULL, WEFT_METRIC_COUNTER, (double)collects), 0);
  CHECK_RC(weft_metrics_put(src, "depth", "worker", "0", WEFT_METRIC_GAUGE, 3), 0);
  CHECK_RC(weft_metrics_put(src, "depth", "worker", "1\"x", WEFT_METRIC_GAUGE, 4), 0);
}

typedef struct {
  weft_runtime_t *rt;
  weft_metrics_source_t *src;
  uv_timer_t poll;
  uint64_t deadline;
  bool seen, gone, timed_out;
  char *prom, *json;
} src_run_t;

static src_run_t sr;

static void src_poll(uv_timer_t *t) {
  weft_metrics_snapshot_t *s;
  if (uv_hrtime() > sr.deadline) {
    sr.timed_out = true;
    uv_close((uv_handle_t *)t, NULL);
    return;
  }
  if (weft_metrics_snapshot(sr.rt, &s) != 0)
    return;
  const weft_metrics_value_t *v = find_value(s, "test", "ticks", NULL);
  if (!sr.seen && v && v->value >= 2) {
    size_t len;
    CHECK(strcmp(v->source, "src") == 0);
    CHECK(find_value(s, "test", "depth", "0") != NULL);
    CHECK_RC(weft_metrics_prometheus(s, &sr.prom, &len), 0);
    CHECK(sr.prom != NULL && strlen(sr.prom) == len);
    CHECK_RC(weft_metrics_json(s, &sr.json, &len), 0);
    weft_metrics_source_free(sr.src);
    sr.src = NULL;
    sr.seen = true;
  } else if (sr.seen && v == NULL) {
    sr.gone = true;
    uv_close((uv_handle_t *)t, NULL);
  }
  weft_metrics_snapshot_free(s);
}

/* Every sample line's family has # HELP and # TYPE before it. */
static void check_prometheus(const char *text) {
  char family[128] = "";
  int samples = 0;
  for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
    const char *end = strchr(line, '\n');
    assert_non_null(end);
    if (strncmp(line, "# TYPE ", 7) == 0) {
      sscanf(line + 7, "%127s", family);
    } else if (line[0] != '#') {
      size_t fl = strlen(family);
      assert_true(fl > 0);
      assert_int_equal(strncmp(line, family, fl), 0);
      const char *rest = line + fl;
      bool suffix = strncmp(rest, "_sum", 4) == 0 || strncmp(rest, "_count", 6) == 0;
      assert_true(*rest == '{' || *rest == ' ' || suffix);
      samples++;
    }
    if (end[1] == '\0')
      break;
  }
  assert_true(samples > 10);
}

static void sources_and_formats(void **state) {
  (void)state;
  memset(&sr, 0, sizeof(sr));
  collects = 0;
  sr.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(sr.rt);
  weft_metrics_source_t *bad;
  assert_int_equal(weft_metrics_source_new(ctx, "", "x", collect, NULL, &bad), WEFT_EINVAL);
  assert_int_equal(weft_metrics_source_new(ctx, "test", "src", NULL, NULL, &bad), WEFT_EINVAL);
  assert_int_equal(weft_metrics_source_new(ctx, "test", "src", collect, &collects, &sr.src), 0);
  assert_int_equal(weft_metrics_ctx_name(ctx, "front"), 0);
  sr.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &sr.poll);
  uv_timer_start(&sr.poll, src_poll, 5, 5);
  assert_int_equal(weft_runtime_run(sr.rt), 0);
  assert_false(sr.timed_out);
  assert_true(sr.seen && sr.gone);
  check_prometheus(sr.prom);
  assert_non_null(strstr(sr.prom, "# TYPE weft_loop_delay_seconds summary\n"));
  assert_non_null(strstr(sr.prom, "weft_loop_delay_seconds{ctx=\"front\",quantile=\"0.99\"} "));
  assert_non_null(strstr(sr.prom, "# TYPE weft_messages_received_total counter\n"));
  assert_non_null(strstr(sr.prom, "# TYPE weft_test_ticks_total counter\n"));
  assert_non_null(strstr(sr.prom, "weft_test_depth{test=\"src\",worker=\"0\"} 3\n"));
  assert_non_null(strstr(sr.prom, "weft_test_depth{test=\"src\",worker=\"1\\\"x\"} 4\n"));
  assert_non_null(strstr(sr.json, "\"contexts\":[{\"name\":\"front\""));
  assert_non_null(strstr(sr.json, "\"label_value\":\"1\\\"x\""));
  weft_free(sr.prom);
  weft_free(sr.json);
  ktest_finish_runtime(sr.rt);
}


/* ---- a pool as a source ----------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_pool_t *pool;
  uv_timer_t poll;
  uint64_t deadline, k, done;
  bool seen, timed_out;
  double completed, submitted, threads, wait_p99, thread_util;
} pool_run_t;

static pool_run_t pr;

static int pool_task(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  (void)args;
  *result = NULL;
  return 0;
}

static void pool_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  (void)data;
  CHECK_RC(err, 0);
  weft_msg_free(result);
  pr.done++;
}

static void pool_poll(uv_timer_t *t) {
  weft_metrics_snapshot_t *s;
  if (uv_hrtime() > pr.deadline)
    pr.timed_out = true;
  else if (weft_metrics_snapshot(pr.rt, &s) == 0) {
    const weft_metrics_value_t *v = find_value(s, "pool", "completed", NULL);
    if (pr.done == pr.k && v && v->value == (double)pr.k) {
      pr.completed = v->value;
      pr.submitted = find_value(s, "pool", "submitted", NULL)->value;
      pr.threads = find_value(s, "pool", "threads", NULL)->value;
      v = find_value(s, "pool", "wait_seconds", "0.99");
      pr.wait_p99 = v ? v->value : -1;
      v = find_value(s, "pool", "thread_utilization", "1");
      pr.thread_util = v ? v->value : -1;
      pr.seen = true;
    }
    weft_metrics_snapshot_free(s);
  }
  if (pr.seen || pr.timed_out) {
    uv_close((uv_handle_t *)t, NULL);
    CHECK_RC(weft_pool_close(pr.pool, NULL), 0);
  }
}

static void pool_source(void **state) {
  (void)state;
  memset(&pr, 0, sizeof(pr));
  pr.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(pr.rt);
  pr.k = ktest_scaled(2000, 100);
  weft_pool_options_t po = {.size = 2, .max_queue = (uint32_t)pr.k + 10};
  assert_int_equal(weft_pool_new(ctx, &po, &pr.pool), 0);
  for (uint64_t i = 0; i < pr.k; i++)
    assert_int_equal(
        weft_pool_submit(pr.pool, &(weft_pool_task_options_t){.fn = pool_task}, pool_done, NULL,
                         NULL),
        0);
  pr.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &pr.poll);
  uv_timer_start(&pr.poll, pool_poll, 5, 5);
  assert_int_equal(weft_runtime_run(pr.rt), 0);
  fprintf(stderr, "pool source: submitted %.0f completed %.0f (k=%llu) threads %.0f "
          "wait p99 %.6f s thread 1 utilisation %.4f\n", pr.submitted, pr.completed,
          (unsigned long long)pr.k, pr.threads, pr.wait_p99, pr.thread_util);
  assert_false(pr.timed_out);
  assert_true(pr.submitted == (double)pr.k && pr.completed == (double)pr.k);
  assert_true(pr.threads == 2);
  assert_true(pr.wait_p99 >= 0);
  assert_true(pr.thread_util >= 0 && pr.thread_util <= 1);
  assert_int_equal(weft_pool_release(pr.pool), 0);
  ktest_finish_runtime(pr.rt);
}


/* ---- a child process as a source (the parent's view) ------------------------------ */

typedef struct {
  weft_runtime_t *rt;
  weft_child_t *child;
  uv_timer_t poll;
  uint64_t deadline;
  int pid;
  double seen_pid, seen_exited;
  bool seen, exited, gone, timed_out;
} child_run_t;

static child_run_t cr;

static void child_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  CHECK(status == 0 && sig == 0);
  cr.exited = true;
}

static void child_poll(uv_timer_t *t) {
  weft_metrics_snapshot_t *s;
  char name[32];
  snprintf(name, sizeof(name), "child-%d", cr.pid);
  if (uv_hrtime() > cr.deadline) {
    cr.timed_out = true;
  } else if (weft_metrics_snapshot(cr.rt, &s) == 0) {
    const weft_metrics_value_t *v = find_value(s, "child", "pid", NULL);
    if (!cr.seen && v && strcmp(v->source, name) == 0) {
      cr.seen_pid = v->value;
      cr.seen_exited = find_value(s, "child", "exited", NULL)->value;
      cr.seen = true;
      CHECK_RC(weft_child_close_stdin(cr.child), 0); /* cat ends */
    } else if (cr.seen && cr.exited && v == NULL) {
      cr.gone = true; /* the source went with the handle */
    }
    weft_metrics_snapshot_free(s);
  }
  if (cr.gone || cr.timed_out)
    uv_close((uv_handle_t *)t, NULL);
}

static void child_source(void **state) {
  (void)state;
  memset(&cr, 0, sizeof(cr));
  cr.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(cr.rt);
  weft_child_options_t o = {.file = "cat", .channel = WEFT_CHANNEL_NONE, .on_exit = child_exit};
  o.stdio[0] = WEFT_STDIO_PIPE;
  o.stdio[1] = WEFT_STDIO_IGNORE;
  assert_int_equal(weft_child_spawn(ctx, &o, &cr.child), 0);
  cr.pid = weft_child_pid(cr.child);
  cr.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &cr.poll);
  uv_timer_start(&cr.poll, child_poll, 5, 5);
  assert_int_equal(weft_runtime_run(cr.rt), 0);
  fprintf(stderr, "child source: pid %d published as %.0f (exited %.0f), gone after exit: %d\n",
          cr.pid, cr.seen_pid, cr.seen_exited, cr.gone);
  assert_false(cr.timed_out);
  assert_true(cr.seen_pid == (double)cr.pid);
  assert_true(cr.seen_exited == 0);
  assert_true(cr.exited && cr.gone);
  ktest_finish_runtime(cr.rt);
}

/* ---- ports on demand ------------------------------------------------------------------ */

#define PK 50u
#define PBIG 600u /* bytes: counted by the byte bound (512 or more) */

typedef struct {
  weft_runtime_t *rt;
  weft_port_t *q[2], *r[2];
  uv_timer_t poll;
  uint64_t deadline, consumed;
  int phase, eagain_first, rc_over;
  bool timed_out;
  weft_metrics_port_t one, one_full, in_table, top, drained;
  size_t n_all, n_top;
  char *prom;
  atomic_bool stop;
  atomic_uint_fast64_t reads, bad_reads;
  uv_thread_t reader;
} ports_run_t;

static ports_run_t pt;

/* Another thread reads the stopped port while the loop runs: the depth is
 * never above what was posted, the bound never changes under it. */
static void port_reader(void *arg) {
  (void)arg;
  while (!atomic_load(&pt.stop)) {
    weft_metrics_port_t o;
    if (weft_metrics_port(pt.q[1], &o) != 0 || o.queue_depth > PK + 1 || o.hwm_msgs != PK + 1)
      atomic_fetch_add(&pt.bad_reads, 1);
    weft_metrics_port_t *all;
    size_t n;
    if (weft_metrics_ports(pt.rt, 0, &all, &n) == 0)
      weft_free(all);
    atomic_fetch_add(&pt.reads, 1);
  }
}

static weft_msg_t *big_msg(uint64_t i) {
  uint8_t p[PBIG] = {0xc5, (uint8_t)((PBIG - 3) >> 8), (uint8_t)(PBIG - 3)};
  p[3] = (uint8_t)i;
  weft_msg_t *m;
  CHECK_RC(weft_msg_new(&m), 0);
  CHECK_RC(weft_msg_set_payload(m, p, sizeof(p)), 0);
  return m;
}

static void pt_consume(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  pt.consumed++;
}

static void pt_finish(void) {
  /* The reader holds q[1] by pointer: it stops before the ports go. */
  atomic_store(&pt.stop, true);
  uv_thread_join(&pt.reader);
  uv_close((uv_handle_t *)&pt.poll, NULL);
  for (int i = 0; i < 2; i++) {
    weft_port_close(pt.q[i]);
    weft_port_close(pt.r[i]);
  }
}

static const weft_metrics_port_t *find_port(const weft_metrics_port_t *t, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (t[i].id == id)
      return &t[i];
  return NULL;
}

/* Phases: 0 the tables appear; 1 q[1] drained: its sampled peak stays. */
static void pt_poll(uv_timer_t *t) {
  (void)t;
  if (uv_hrtime() > pt.deadline) {
    pt.timed_out = true;
    pt_finish();
    return;
  }
  weft_metrics_port_t *all = NULL, *top = NULL;
  size_t n = 0, ntop = 0;
  if (weft_metrics_ports(pt.rt, 0, &all, &n) != 0)
    return;
  const weft_metrics_port_t *q = find_port(all, n, pt.one.id);
  if (pt.phase == 0 && q != NULL && q->queue_depth == PK) {
    pt.in_table = *q;
    pt.n_all = n;
    CHECK_RC(weft_metrics_ports(pt.rt, 1, &top, &ntop), 0);
    if (top != NULL)
      pt.top = top[0];
    pt.n_top = ntop;
    size_t len;
    CHECK_RC(weft_metrics_ports_prometheus(all, n, &pt.prom, &len), 0);
    weft_free(top);
    CHECK_RC(weft_port_start(pt.q[1], pt_consume), 0);
    pt.phase = 1;
  } else if (pt.phase == 1 && q != NULL && pt.consumed == PK && q->queue_depth == 0) {
    pt.drained = *q;
    pt_finish();
  }
  weft_free(all);
}

static void ports_on_demand(void **state) {
  (void)state;
  memset(&pt, 0, sizeof(pt));
  pt.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(pt.rt);
  weft_metrics_port_t *all;
  size_t n;
  pt.eagain_first = weft_metrics_ports(pt.rt, 0, &all, &n); /* turns the tables on */
  assert_int_equal(weft_channel_new(ctx, pt.q), 0);
  assert_int_equal(weft_channel_new(ctx, pt.r), 0);
  assert_int_equal(weft_port_set_hwm(pt.q[1], PK + 1, 0), 0);
  for (uint64_t i = 0; i < PK; i++) /* q[1] not started: they wait */
    assert_int_equal(weft_port_post(pt.q[0], big_msg(i)), 0);
  assert_int_equal(weft_port_post(pt.r[0], ktest_msg_u64(1)), 0); /* a smaller queue */
  assert_int_equal(weft_metrics_port(pt.q[1], &pt.one), 0);
  /* One more fills the bound; the next is refused: the port is full. */
  weft_msg_t *m = big_msg(PK);
  assert_int_equal(weft_port_post(pt.q[0], m), 0);
  m = big_msg(PK + 1);
  pt.rc_over = weft_port_post(pt.q[0], m);
  weft_msg_free(m);
  assert_int_equal(weft_metrics_port(pt.q[1], &pt.one_full), 0);
  weft_msg_t *back;
  assert_int_equal(weft_port_receive(pt.q[1], &back), 0); /* PK wait again */
  weft_msg_free(back);
  assert_int_equal(uv_thread_create(&pt.reader, port_reader, NULL), 0);
  pt.deadline = uv_hrtime() + DEADLINE_NS;
  uv_timer_init(weft_ctx_loop(ctx), &pt.poll);
  uv_timer_start(&pt.poll, pt_poll, 10, 10);
  assert_int_equal(weft_runtime_run(pt.rt), 0); /* pt_finish joined the reader */
  fprintf(stderr,
          "ports: first call %s; q[1] read at once depth %llu bytes %llu hwm %llu; over the "
          "bound %s, full %d; table: %zu ports, q[1] depth %llu peak %llu stalled %d ctx %s; "
          "top 1: %zu (depth %llu); drained: depth %llu peak %llu; %llu reads from another "
          "thread (%llu bad)\n",
          weft_err_name(pt.eagain_first), (unsigned long long)pt.one.queue_depth,
          (unsigned long long)pt.one.queue_bytes, (unsigned long long)pt.one.hwm_msgs,
          weft_err_name(pt.rc_over), pt.one_full.full, pt.n_all,
          (unsigned long long)pt.in_table.queue_depth, (unsigned long long)pt.in_table.queue_peak,
          pt.in_table.stalled, pt.in_table.ctx, pt.n_top, (unsigned long long)pt.top.queue_depth,
          (unsigned long long)pt.drained.queue_depth, (unsigned long long)pt.drained.queue_peak,
          (unsigned long long)atomic_load(&pt.reads),
          (unsigned long long)atomic_load(&pt.bad_reads));
  assert_false(pt.timed_out);
  assert_int_equal(pt.eagain_first, WEFT_EAGAIN);
  assert_int_equal(pt.one.queue_depth, PK);
  assert_int_equal(pt.one.queue_bytes, PK * PBIG);
  assert_int_equal(pt.one.hwm_msgs, PK + 1);
  assert_false(pt.one.full);
  assert_int_equal(pt.rc_over, WEFT_EAGAIN);
  assert_true(pt.one_full.full);
  assert_string_equal(pt.in_table.ctx, "main");
  assert_true(pt.in_table.stalled);
  assert_true(pt.in_table.queue_peak >= PK);
  assert_true(pt.n_all >= 4); /* q and r, both ends */
  assert_int_equal(pt.n_top, 1);
  assert_true(pt.top.id == pt.one.id);
  assert_int_equal(pt.drained.queue_depth, 0);
  assert_true(pt.drained.queue_peak >= PK); /* carried from table to table */
  assert_int_equal(atomic_load(&pt.bad_reads), 0);
  assert_true(atomic_load(&pt.reads) > 0);
  char line[128];
  snprintf(line, sizeof(line), "weft_port_queue_depth{ctx=\"main\",port=\"%016llx\"} %u\n",
           (unsigned long long)pt.one.id, PK);
  if (strstr(pt.prom, line) == NULL)
    fail_msg("no %s in %s", line, pt.prom);
  assert_non_null(strstr(pt.prom, "# TYPE weft_port_dropped_total counter\n"));
  weft_free(pt.prom);
  ktest_finish_runtime(pt.rt);
}

/* ---- off switch and argument errors ------------------------------------------------- */

static void metrics_off(void **state) {
  (void)state;
  setenv("WEFT_METRICS", "0", 1);
  weft_runtime_t *rt = ktest_new_runtime();
  unsetenv("WEFT_METRICS");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  assert_false(weft_metrics_enabled(rt));
  weft_metrics_snapshot_t *s;
  assert_int_equal(weft_metrics_snapshot(rt, &s), 0);
  assert_int_equal(s->nctx, 0);
  assert_int_equal(s->nvalues, 0);
  weft_metrics_snapshot_free(s);
  weft_metrics_source_t *src = (weft_metrics_source_t *)1;
  assert_int_equal(weft_metrics_source_new(ctx, "test", "x", collect, NULL, &src), UV_ENOTSUP);
  assert_null(src);
  assert_int_equal(weft_metrics_snapshot(NULL, &s), WEFT_EINVAL);
  assert_int_equal(weft_metrics_ctx_reset(NULL), WEFT_EINVAL);
  assert_int_equal(weft_metrics_ctx_name(ctx, NULL), WEFT_EINVAL);
  weft_metrics_port_t *ports = (weft_metrics_port_t *)1;
  size_t np = 9;
  assert_int_equal(weft_metrics_ports(rt, 0, &ports, &np), 0); /* off: no tables, no ports */
  assert_null(ports);
  assert_int_equal(np, 0);
  assert_int_equal(weft_metrics_ports(NULL, 0, &ports, &np), WEFT_EINVAL);
  assert_int_equal(weft_metrics_port(NULL, &(weft_metrics_port_t){0}), WEFT_EINVAL);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(counts_and_queues),
      T(delay_rises_when_blocked),
      T(sources_and_formats),
      T(pool_source),
      T(child_source),
      T(ports_on_demand),
      T(metrics_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
