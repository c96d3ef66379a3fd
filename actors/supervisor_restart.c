/* supervisor_restart.c: what a child's exit means (supervisor_int.h).
 *
 * Each exit is recorded (newest first, in a ring of WEFT__SUP_HIST entries
 * per child) with an English message, then decided on: a child that is not
 * restarted (temporary, or transient after a normal exit) is removed; else
 * the restart must stay within the intensity (at most max_restarts restarts
 * in any period_ms, a ring of timestamps in the supervisor) or the supervisor
 * gives up. A restart waits a jittered exponential back-off: the n-th
 * consecutive restart of a child waits uniformly in [d/2, d], d =
 * min(backoff_max_ms, backoff_min_ms * 2^n); the streak resets when the child
 * ran at least backoff_max_ms. The verdict (weft__sup_verdict_t) goes back to
 * supervisor.c, which acts on it: one_for_one restarts the child alone on its
 * own timer; one_for_all and rest_for_one restart a group.
 *
 * Threads: the supervisor's context thread only. */
#include <stdio.h>
#include <string.h>

#include "supervisor_int.h"

static uint64_t rng_next(weft_sup_t *s) {
  uint64_t x = s->rng;  /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return x * 2685821657736338717ull;
}

static uint32_t backoff_for(weft_sup_t *s, weft_sup_child_t *c) {
  uint32_t lo = weft__sup_lim(s->opts.limits.backoff_min_ms, 10);
  uint32_t hi = weft__sup_lim(s->opts.limits.backoff_max_ms, 2000);
  uint64_t d = lo;
  for (uint32_t i = 0; i < c->streak && d < hi; i++)
    d *= 2;
  if (d > hi)
    d = hi;
  c->streak++;
  uint64_t half = d / 2;
  return (uint32_t)(d - half + (half ? rng_next(s) % (half + 1) : 0));
}

void weft__sup_describe(weft_sup_exit_t *e) {
  if (e->stopped)
    snprintf(e->message, sizeof(e->message), "stopped by the supervisor");
  else if (e->error)
    snprintf(e->message, sizeof(e->message), "error %s: %s", weft_err_name(e->error),
             weft_strerror(e->error));
  else if (e->term_signal)
    snprintf(e->message, sizeof(e->message), "killed by signal %d (%s)", e->term_signal,
             strsignal(e->term_signal));
  else if (e->exit_code)
    snprintf(e->message, sizeof(e->message), "exited with code %lld", (long long)e->exit_code);
  else
    snprintf(e->message, sizeof(e->message), "exited normally");
}

static void record(weft_sup_child_t *c, weft_sup_exit_t *e) {
  c->hist_head = (c->hist_head + WEFT__SUP_HIST - 1) % WEFT__SUP_HIST;
  c->hist[c->hist_head] = *e;
  if (c->nhist < WEFT__SUP_HIST)
    c->nhist++;
}

/* True if one more restart now stays within the intensity. */
static bool intensity_ok(weft_sup_t *s, uint64_t now) {
  uint32_t max = weft__sup_lim(s->opts.limits.max_restarts, 3);
  uint32_t period = weft__sup_lim(s->opts.limits.period_ms, 5000);
  if (s->ntimes == max) {
    uint64_t oldest = s->times[s->times_head];
    if (now - oldest < period)
      return false;
    s->times_head = (s->times_head + 1) % max;
    s->ntimes--;
  }
  s->times[(s->times_head + s->ntimes) % max] = now;
  s->ntimes++;
  return true;
}

void weft__sup_notify_exit(weft_sup_child_t *c, const weft_sup_exit_t *e, bool final) {
  weft_sup_t *s = c->sup;
  if (s->opts.on_child_exit && !s->quiet)
    s->opts.on_child_exit(s, c, e, final);
}

/* The verdict on an exit that a restart may follow (not stopped, nothing
 * else going on). */
static weft__sup_verdict_t restart_verdict(weft_sup_child_t *c, const weft_sup_exit_t *e) {
  weft_sup_t *s = c->sup;
  bool restart = c->spec.restart == WEFT_SUP_PERMANENT ||
                 (c->spec.restart == WEFT_SUP_TRANSIENT && !e->normal);
  if (!restart)
    return WEFT__SUP_REMOVE;
  if (!intensity_ok(s, e->time_ms))
    return WEFT__SUP_GIVE_UP;
  s->restarts++;
  if (e->ran_ms >= weft__sup_lim(s->opts.limits.backoff_max_ms, 2000))
    c->streak = 0;
  c->backoff_ms = backoff_for(s, c);
  return s->opts.strategy == WEFT_SUP_ONE_FOR_ONE ? WEFT__SUP_RESTART : WEFT__SUP_GROUP;
}

weft__sup_verdict_t weft__sup_record_exit(weft_sup_child_t *c, int64_t code, int sig, int err,
                                          weft_sup_exit_t *e) {
  weft_sup_t *s = c->sup;
  uv_update_time(s->loop);
  uint64_t now = uv_now(s->loop);
  *e = (weft_sup_exit_t){
      .exit_code = code,
      .term_signal = sig,
      .error = err,
      .stopped = c->stop_req,
      .time_ms = now,
      .ran_ms = c->state != ST_IDLE ? now - c->started_ms : 0,
  };
  if (e->stopped && !e->error && c->spec.kind == WEFT_SUP_THREAD)
    e->error = WEFT_ETERMINATED;
  e->normal = code == 0 && sig == 0 && e->error == 0;
  weft__sup_describe(e);
  record(c, e);
  c->state = ST_IDLE;
  c->stop_req = false;
  uv_timer_stop(&c->timer);
  /* weft_sup_restart_child: started again at once, unless a group restart
   * (which starts it itself) or a give-up began meanwhile. */
  bool restart_now = c->restart_now && !c->in_group && s->phase <= PH_GROUP;
  c->restart_now = false;
  if (c->removing || s->phase == PH_CLOSING)
    return WEFT__SUP_REMOVE;
  if (restart_now)
    return WEFT__SUP_START_NOW;
  if (e->stopped || s->phase == PH_GIVING_UP || s->phase == PH_GAVE_UP)
    return WEFT__SUP_REPORT;
  return restart_verdict(c, e);
}
