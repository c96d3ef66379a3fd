/* balancer_gate.c: the accept gate of worker threads that share one
 * listening socket (policies shared, round robin and least connections with
 * worker threads; balancer_int.h).
 *
 * Without it, whichever worker wakes first takes every connection waiting in
 * the queue (libuv accepts until EAGAIN): a burst of 64 keep-alive clients
 * lands on one worker. With it, each worker publishes a count (connections
 * open: shared and least connections; accepted since it joined: round
 * robin) and accepts only while its count is at most the least active one's
 * plus a small slack (weft__gate_slack); otherwise it pauses (stops polling
 * the listener) until a peer wakes it. The kernel still decides which awake
 * worker gets a connection; the gate bounds how far ahead one can get. This
 * costs a worker no more than accepting itself does (no hand-off through
 * the balancer's thread: one wake-up per connection, not three), plus a
 * pause and a wake-up when the counts drift apart past the slack.
 *
 * The table is a shared buffer (weft/buf.h) made by the balancer: one
 * cache line per entry, twice as many entries as worker places (a reload
 * runs an old and a new worker of one place at once). An entry belongs to
 * one run of one worker, from the HELLO that names it to that worker's exit
 * (the balancer hands it out and takes it back). Each entry has an eventfd,
 * made and closed by the balancer; worker threads share its descriptor
 * table, so the number is enough.
 *
 * No lost wake-up (why the minimum worker is never left paused):
 *   a pausing worker   stores paused = 1, then loads every open count;
 *   an accepting one   adds to its open count, then loads every paused flag.
 * Both seq_cst: in their single total order one of the two comes second and
 * sees the other's write, so either the pausing worker sees that it may
 * accept after all (and goes on) or the accepting one sees it paused and
 * wakes it. A close only lowers the minimum (no one else becomes eligible);
 * its own worker re-checks itself. A worker that stops accepting (drain,
 * exit) clears active and wakes every paused one; so does the balancer when
 * a worker's exit is reported (a crashed worker cleared nothing). The waker
 * takes paused from 1 to 0 by CAS before it writes the eventfd, so each
 * pause is woken once.
 *
 * A worker whose loop is blocked holds its count still, and could hold the
 * others at its count + the slack: a paused worker therefore also gives up
 * waiting after WEFT__GATE_PATIENCE_MS and, if connections still wait,
 * accepts one batch regardless (see balancer_worker.c). Fairness is for
 * workers that run; a stuck one only slows the others down to a batch per
 * patience period at worst.
 *
 * Threads: any (entries are atomics); the balancer's thread makes and frees
 * the table. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "balancer_int.h"

weft__gate_t *weft__gate_of(const weft_buf_t *buf) {
  uintptr_t p = (uintptr_t)weft_buf_ptr(buf);
  return (weft__gate_t *)((p + 63) & ~(uintptr_t)63);
}

int weft__gate_new(size_t nentries, unsigned mode, weft_buf_t **out) {
  weft_buf_t *buf;
  size_t len = 63 + sizeof(weft__gate_t) + nentries * sizeof(weft__gate_entry_t);
  int err = weft_buf_new_shared(&buf, len);  /* zero-filled */
  if (err)
    return err;
  weft__gate_t *g = weft__gate_of(buf);
  g->n = nentries;
  g->mode = mode;
  size_t i;
  for (i = 0; i < nentries; i++) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      err = -errno;
      break;
    }
    g->e[i].efd = fd;
  }
  if (err) {
    while (i-- > 0)
      close(g->e[i].efd);
    weft_buf_free(buf);
    return err;
  }
  *out = buf;
  return 0;
}

void weft__gate_free(weft_buf_t *buf) {
  if (buf == NULL)
    return;
  weft__gate_t *g = weft__gate_of(buf);
  for (size_t i = 0; i < g->n; i++)
    close(g->e[i].efd);
  weft_buf_free(buf);
}

/* The least open count of the active entries (INT64_MAX if none). */
static int64_t min_open(weft__gate_t *g) {
  int64_t m = INT64_MAX;
  for (size_t i = 0; i < g->n; i++) {
    if (!atomic_load(&g->e[i].active))
      continue;
    int64_t v = atomic_load(&g->e[i].open);
    m = v < m ? v : m;
  }
  return m;
}

int64_t weft__gate_slack(int64_t m) { return m < 8 ? 0 : m < 64 ? 1 : 4; }

int64_t weft__gate_join_count(weft__gate_t *g) {
  int64_t m = g->mode == WEFT__GATE_ACCEPTED ? min_open(g) : 0;
  return m == INT64_MAX ? 0 : m;
}

bool weft__gate_eligible(weft__gate_t *g, size_t i) {
  int64_t m = min_open(g);
  return m == INT64_MAX || atomic_load(&g->e[i].open) <= m + weft__gate_slack(m);
}

bool weft__gate_pause(weft__gate_t *g, size_t i) {
  atomic_store(&g->e[i].paused, 1);
  if (!weft__gate_eligible(g, i))
    return true;
  unsigned one = 1;  /* eligible after all; take the flag back unless a waker did */
  atomic_compare_exchange_strong(&g->e[i].paused, &one, 0);
  return false;
}

/* Wake entry j (once per pause). */
static void wake(weft__gate_t *g, size_t j) {
  unsigned one = 1;
  if (!atomic_compare_exchange_strong(&g->e[j].paused, &one, 0))
    return;
  uint64_t v = 1;
  ssize_t n = write(g->e[j].efd, &v, sizeof(v));
  (void)n;  /* only fails if the counter is saturated: it is readable anyway */
}

void weft__gate_wake_eligible(weft__gate_t *g, size_t self) {
  for (size_t j = 0; j < g->n; j++)
    if (j != self && atomic_load(&g->e[j].paused) && atomic_load(&g->e[j].active) &&
        weft__gate_eligible(g, j))
      wake(g, j);
}

void weft__gate_pass(weft__gate_t *g, size_t self) {
  for (size_t j = 0; j < g->n; j++) {
    if (j == self || !atomic_load(&g->e[j].active) || !weft__gate_eligible(g, j))
      continue;
    if (atomic_load(&g->e[j].paused)) {
      wake(g, j);
    } else {
      uint64_t v = 1;
      ssize_t n = write(g->e[j].efd, &v, sizeof(v));
      (void)n;  /* saturated: readable anyway */
    }
  }
}

void weft__gate_wake_all(weft__gate_t *g) {
  for (size_t j = 0; j < g->n; j++)
    if (atomic_load(&g->e[j].paused))
      wake(g, j);
}

void weft__gate_leave(weft__gate_t *g, size_t i) {
  atomic_store(&g->e[i].active, 0);
  atomic_store(&g->e[i].paused, 0);
  weft__gate_wake_all(g);
}
