/* parent.c: scenarios against this process as a weft parent. Each spawns one
 * child with weft_child_spawn (a raw peer, or the weft victim) and plays the
 * program's side: start or stop the port, post until WEFT_EAGAIN, kill the
 * child at a random moment, close the port when done. A 10 ms timer samples
 * VmRSS and runs the scenario's clock.
 *
 * The port is started at spawn; a scenario that stops it stops it after its
 * posts (the documented pattern: stop on WEFT_EAGAIN, wait for the drain
 * callback). (A port never started is closed by weft_child when the channel
 * ends, so it would not show a port stopped for backpressure.)
 *
 * Checks: the port's close event and on_exit arrive within
 * SOAK_CLOSE_BOUND_MS of the moment the peer is gone (killed, or the program
 * closed the port); the flood's RSS peak stays within the window this process
 * granted plus SOAK_RSS_SLACK_KIB. A scenario whose channel does not end is
 * rescued (port started, child killed) so the soak goes on, and counted as a
 * failure. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "soak.h"

extern char **environ;
extern const char *soak_self;

typedef struct {
  const char *name, *role;
  weft_channel_t channel;
  bool stop_port;           /* the program does not consume (port stopped) */
  bool post_until_eagain;   /* the program posts until WEFT_EAGAIN, then waits */
  unsigned kill_lo, kill_hi; /* SIGKILL at a random moment in [lo, hi] ms (0: never) */
  unsigned resume_ms;       /* start the port again (0: never) */
  unsigned close_ms;        /* the program closes the port (0: never) */
  bool rss_window;          /* RSS bounded by the window granted */
} scenario_t;

static const scenario_t scenarios[] = {
    {"parent/flood", "flood", WEFT_CHANNEL_WEFT, true, false, 0, 0, 1500, 2000, true},
    {"parent/liar", "liar", WEFT_CHANNEL_WEFT, false, true, 0, 0, 0, 1000, false},
    {"parent/stall+kill", "stall", WEFT_CHANNEL_WEFT, false, true, 100, 600, 0, 0, false},
    {"parent/backpressured+kill", "victim", WEFT_CHANNEL_WEFT, true, true, 100, 800, 0, 0,
     false},
    {"parent/midframe+kill", "midframe", WEFT_CHANNEL_WEFT, false, false, 50, 400, 0, 0, false},
    {"parent/midbuf+kill", "midbuf", WEFT_CHANNEL_WEFT, false, false, 50, 400, 0, 0, false},
    {"parent/node-junk", "nodejunk", WEFT_CHANNEL_NODE, false, false, 0, 0, 0, 1000, false},
};

typedef struct {
  const scenario_t *s;
  weft_child_t *child;
  weft_port_t *port;        /* valid until closed */
  bool exited, closed, rescued, done;
  int reason;
  uint64_t undelivered;
  unsigned kill_at;
  uint64_t t0, gone_at;     /* gone_at: when the channel should end at the latest */
  long rss0, rss_peak;
  unsigned posted, eagain;
  uv_timer_t tick;
} run_t;

static void on_message(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void on_close(weft_port_t *p, const weft_port_close_info_t *info) {
  run_t *r = weft_port_data(p);
  r->closed = true;
  r->reason = info->reason;
  r->undelivered = info->undelivered;
  r->port = NULL;
  soak_stats.closed++;
}

static void on_exit_cb(weft_child_t *c, int64_t status, int sig) {
  run_t *r = weft_child_data(c);
  r->exited = true;
  r->child = NULL;
  if (sig == 0 && status == 42)
    soak_note(r->s->name, "the peer was never hung up on (it gave up waiting)");
  (void)status;
}

static void post_until_eagain(run_t *r) {
  for (unsigned i = 0; i < 200000 && r->port != NULL; i++) {
    weft_msg_t *m;
    if (weft_msg_new(&m) != 0)
      return;
    weft_msg_put_u64(m, NULL, i);
    int rc = weft_port_post(r->port, m);
    if (rc != 0) {
      weft_msg_free(m);
      if (rc == WEFT_EAGAIN)
        r->eagain++;
      return;
    }
    r->posted++;
  }
}

static void rescue(run_t *r, uint64_t now) {
  soak_fail(r->s->name,
            "channel not ended %u ms after its peer was gone (close event %s, on_exit %s, "
            "port %s)",
            SOAK_CLOSE_BOUND_MS, r->closed ? "seen" : "missing", r->exited ? "seen" : "missing",
            r->s->stop_port ? "stopped" : "started");
  r->rescued = true;
  if (r->port != NULL) {
    weft_port_start(r->port, on_message);
    weft_port_close(r->port);
  }
  if (r->child != NULL)
    weft_child_kill(r->child, SIGKILL);
  r->gone_at = now + SOAK_CLOSE_BOUND_MS;
}

static void on_tick(uv_timer_t *t) {
  run_t *r = t->data;
  uint64_t now = soak_now_ms(), el = now - r->t0;
  long rss = soak_status_kib(0, "VmRSS:");
  if (rss > r->rss_peak)
    r->rss_peak = rss;
  if (r->s->kill_lo && el >= r->kill_at && r->child != NULL && !r->gone_at) {
    weft_child_kill(r->child, SIGKILL);
    r->gone_at = now + SOAK_CLOSE_BOUND_MS;
  }
  if (r->s->resume_ms && el >= r->s->resume_ms && r->port != NULL && r->s->stop_port)
    weft_port_start(r->port, on_message);
  if (r->s->close_ms && el >= r->s->close_ms && !r->gone_at) {
    if (r->port != NULL)
      weft_port_close(r->port);
    r->gone_at = now + SOAK_CLOSE_BOUND_MS;
  }
  if (r->exited && r->closed) {
    r->done = true;
    uv_timer_stop(t);
  } else if (r->gone_at && now > r->gone_at) {
    if (r->rescued) {
      soak_fail(r->s->name, "not even a rescue ended the channel; abandoned");
      r->done = true;
      uv_timer_stop(t);
    } else {
      rescue(r, now);
    }
  }
}

static int spawn(run_t *r, weft_ctx_t *ctx) {
  size_t n = 0;
  while (environ[n])
    n++;
  const char **env = calloc(n + 2, sizeof(*env));
  char role[64];
  if (env == NULL)
    return WEFT_ENOMEM;
  snprintf(role, sizeof role, "SOAK_ROLE=%s", r->s->role);
  memcpy(env, environ, n * sizeof(*env));
  env[n] = role;
  const char *args[] = {soak_self, NULL};
  weft_child_options_t o = {.file = soak_self, .args = args, .env = env,
                            .stdio = {WEFT_STDIO_IGNORE, WEFT_STDIO_IGNORE, WEFT_STDIO_INHERIT},
                            .channel = r->s->channel,
                            .window_msgs = SOAK_PARENT_WINDOW_MSGS,
                            .window_bytes = SOAK_PARENT_WINDOW_BYTES,
                            .on_message = on_message, /* started, stopped later if asked */
                            .on_exit = on_exit_cb,
                            .data = r};
  int err = weft_child_spawn(ctx, &o, &r->child);
  free(env);
  if (err)
    return err;
  r->port = weft_child_port(r->child);
  weft_port_set_data(r->port, r);
  weft_port_on_close(r->port, on_close);
  soak_stats.opened++;
  return 0;
}

static void run_one(weft_runtime_t *rt, const scenario_t *s) {
  static run_t r;
  memset(&r, 0, sizeof r);
  r.s = s;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  uv_loop_t *loop = weft_ctx_loop(ctx);
  r.rss0 = r.rss_peak = soak_status_kib(0, "VmRSS:");
  r.t0 = soak_now_ms();
  r.kill_at = s->kill_lo ? soak_rand(s->kill_lo, s->kill_hi) : 0;
  int err = spawn(&r, ctx);
  if (err) {
    soak_fail(s->name, "spawn: %s", weft_err_name(err));
    return;
  }
  if (s->post_until_eagain)
    post_until_eagain(&r);
  if (s->stop_port && r.port != NULL)
    weft_port_stop(r.port);
  uv_timer_init(loop, &r.tick);
  r.tick.data = &r;
  uv_timer_start(&r.tick, on_tick, 10, 10);
  while (!r.done)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&r.tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  long growth = r.rss_peak - r.rss0;
  if (growth > soak_stats.rss_peak_growth_kib)
    soak_stats.rss_peak_growth_kib = growth;
  soak_note(s->name, "%s in %llu ms: reason %s, undelivered %llu, posted %u (EAGAIN %u), "
            "RSS peak +%ld KiB",
            r.rescued ? "rescued" : "ended", (unsigned long long)(soak_now_ms() - r.t0),
            r.closed ? weft_err_name(r.reason) : "-", (unsigned long long)r.undelivered,
            r.posted, r.eagain, growth);
  long bound = (long)(SOAK_PARENT_WINDOW_BYTES / 1024) + (long)SOAK_RSS_SLACK_KIB;
  if (SOAK_JUDGE_RSS && s->rss_window && growth > bound)
    soak_fail(s->name, "RSS grew %ld KiB while the port was stopped; the window granted is "
              "%u KiB (+%u KiB slack)",
              growth, SOAK_PARENT_WINDOW_BYTES / 1024, SOAK_RSS_SLACK_KIB);
}

void soak_parent_round(weft_runtime_t *rt) {
  for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
    run_one(rt, &scenarios[i]);
}
