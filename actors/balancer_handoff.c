/* balancer_handoff.c: how the balancer side hands connections to workers
 * (balancer_int.h; the design is in balancer.c's opening comment): picking
 * an available worker (round robin or least connections), sending it a
 * connection with a duplicate kept in flight until a STATUS acknowledges it,
 * re-handing the duplicates of a worker that exited, the pending ring of
 * connections nobody can take yet, and the balancer's own accept polls on
 * its listeners.
 *
 * Threads: the balancer's context thread only. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer_int.h"

/* ---- picking a worker ------------------------------------------------------------ */

static bool available(const inst_t *in) {
  return in && in->ready && !in->draining && !in->full && inst_port(in) != NULL;
}

static inst_t *pick(weft_balancer_t *b) {
  inst_t *best = NULL;
  size_t best_i = 0;
  for (size_t k = 0; k < b->nslots; k++) {
    size_t i = (b->rr + k) % b->nslots;
    inst_t *in = b->slots[i].cur;
    if (!available(in))
      continue;
    if (b->opts.policy != WEFT_BALANCER_LEAST_CONNECTIONS) {
      best = in, best_i = i;
      break;
    }
    if (best == NULL || open_of(in) < open_of(best))
      best = in, best_i = i;
  }
  if (best)
    b->rr = best_i + 1;
  return best;
}

/* ---- sending, in flight ------------------------------------------------------------ */

/* A full ring (*buf, cap, head; len == cap) doubles, its items moved to the
 * front in order. Returns 0 or WEFT_ENOMEM (also past max items). */
static int ring_grow(void **buf, size_t *cap, size_t *head, size_t elem, size_t max) {
  size_t ncap = *cap ? *cap * 2 : 64;
  char *n = ncap <= max ? weft_malloc(ncap * elem) : NULL;
  if (n == NULL)
    return WEFT_ENOMEM;
  size_t first = *cap - *head; /* items from head to the end, then the rest */
  if (*cap) {
    memcpy(n, (char *)*buf + *head * elem, first * elem);
    memcpy(n + first * elem, *buf, *head * elem);
  }
  weft_free(*buf);
  *buf = n, *cap = ncap, *head = 0;
  return 0;
}

static int fl_push(inst_t *in, uint64_t seq, int fd) {
  if (in->fl_len == in->fl_cap &&
      ring_grow((void **)&in->fl, &in->fl_cap, &in->fl_head, sizeof(flight_t), SIZE_MAX) != 0)
    return WEFT_ENOMEM;
  in->fl[(in->fl_head + in->fl_len++) % in->fl_cap] = (flight_t){seq, fd};
  return 0;
}

/* Hand fd to in. On success fd is the worker's and a duplicate is in flight
 * (without one if dup failed, e.g. out of fds); on failure fd is still ours. */
static int send_conn(inst_t *in, int fd) {
  int d = weft__bal_dup(fd);
  weft_msg_t *m;
  int err = weft__bal_msg(WEFT__BAL_CONN, in->b->pipe, fd, &m);
  if (err == 0 && (err = weft_port_post(inst_port(in), m)) != 0) {
    int back;
    weft_msg_take_socket(m, 0, &back);
    weft_msg_free(m);
  }
  if (err) {
    if (d >= 0)
      close(d);
    return err;
  }
  in->sent++;
  if (d >= 0 && fl_push(in, in->sent, d) != 0)
    close(d);  /* no safety net for this one, but it is handed */
  return 0;
}

void weft__bal_on_status(inst_t *in, const weft_msg_t *m) {
  weft_msg_get_u64(m, "taken", &in->taken);
  weft_msg_get_u64(m, "accepted", &in->accepted);
  weft_msg_get_u64(m, "closed", &in->closed);
  weft_msg_get_u64(m, "reqs", &in->reqs);
  while (in->fl_len > 0 && in->fl[in->fl_head].seq <= in->taken) {
    close(in->fl[in->fl_head].fd);
    in->fl_head = (in->fl_head + 1) % in->fl_cap;
    in->fl_len--;
  }
}

/* ---- hand-off and pending ------------------------------------------------------------ */

static int pending_push(weft_balancer_t *b, int fd) {
  if (b->p_len == b->p_cap &&
      ring_grow((void **)&b->pending, &b->p_cap, &b->p_head, sizeof(int), 65536) != 0)
    return WEFT_ENOMEM;
  b->pending[(b->p_head + b->p_len++) % b->p_cap] = fd;
  return 0;
}

static int pending_pop(weft_balancer_t *b) {
  int fd = b->pending[b->p_head];
  b->p_head = (b->p_head + 1) % b->p_cap;
  b->p_len--;
  return fd;
}

/* Give fd to an available worker, or keep it until one is. */
static void handoff(weft_balancer_t *b, int fd) {
  inst_t *in;
  while (serving(b) && (in = pick(b)) != NULL) {
    int err = send_conn(in, fd);
    if (err == 0)
      return;
    if (err == WEFT_EAGAIN) {
      in->full = true;  /* until its drain callback */
    } else if (err == WEFT_ECLOSED) {
      in->ready = false;  /* its exit follows */
    } else {  /* out of memory: this connection is lost, the workers are fine */
      close(fd);
      b->dropped++;
      return;
    }
  }
  if (!serving(b) || pending_push(b, fd) != 0) {
    close(fd);
    b->dropped++;
  }
  weft__bal_update_polls(b);
}

void weft__bal_flush_pending(weft_balancer_t *b) {
  while (b->p_len > 0 && pick(b) != NULL)
    handoff(b, pending_pop(b));
}

void weft__bal_drop_pending(weft_balancer_t *b) {
  while (b->p_len > 0) {
    close(pending_pop(b));
    b->dropped++;
  }
}

void weft__bal_on_port_drain(weft_port_t *port) {
  inst_t *in = weft_sup_child_data(weft_sup_child_from_port(port));
  if (in == NULL || in->port != port)
    return;
  in->full = false;
  weft__bal_flush_pending(in->b);
  weft__bal_update_polls(in->b);
}

int weft__bal_gate_claim(inst_t *in) {
  weft_balancer_t *b = in->b;
  weft__gate_t *g = weft__gate_of(b->gate);
  for (size_t i = 0; i < g->n; i++) {
    if (b->gate_owner[i] != NULL)
      continue;
    b->gate_owner[i] = in;
    in->gate = (int)i;
    atomic_store(&g->e[i].open, weft__gate_join_count(g));
    atomic_store(&g->e[i].active, 0);
    atomic_store(&g->e[i].paused, 0);
    return (int)i;
  }
  return -1;
}

/* A worker that exited (perhaps crashed) accepts no more: its entry leaves
 * the minimum, and those it held paused re-check. */
static void gate_release(inst_t *in) {
  if (in->gate < 0)
    return;
  weft__gate_leave(weft__gate_of(in->b->gate), (size_t)in->gate);
  in->b->gate_owner[in->gate] = NULL;
  in->gate = -1;
}

void weft__bal_inst_down(inst_t *in) {
  slot_t *s = in->slot;
  gate_release(in);
  size_t n = in->fl_len;
  in->ready = false;
  in->port = NULL;
  s->rehanded += n;
  s->conns += in->sent - n + in->accepted;
  s->reqs += in->reqs;
  in->sent = in->taken = in->accepted = in->closed = in->reqs = 0;
  while (in->fl_len > 0) {
    int fd = in->fl[in->fl_head].fd;
    in->fl_head = (in->fl_head + 1) % in->fl_cap;
    in->fl_len--;
    handoff(in->b, fd);
  }
}

/* ---- the balancer's own accept polls -------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  listener_t *l = h->data;
  weft_balancer_t *b = l->b;
  for (int i = 0; status == 0 && i < 64 && l->polling; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      break;  /* EAGAIN, or out of fds: the poll fires again */
    }
    b->accepted++;
    handoff(b, fd);
  }
}

void weft__bal_accept_queued(weft_balancer_t *b) {
  bool rr_lc = b->opts.policy == WEFT_BALANCER_ROUND_ROBIN ||
               b->opts.policy == WEFT_BALANCER_LEAST_CONNECTIONS;
  if (b->lis_closed || !rr_lc || !(b->lis[0].polling || b->gate))
    return;
  listener_t *l = &b->lis[0];
  bool was = l->polling;
  l->polling = true;  /* with a gate the workers accept: we do not poll it */
  on_poll(&l->poll, 0, UV_READABLE);
  l->polling = was;
}

void weft__bal_update_polls(weft_balancer_t *b) {
  if (b->lis_closed)
    return;  /* the poll handles are closing or closed */
  bool any = serving(b) && b->p_len == 0;
  if (any) {
    size_t rr = b->rr;
    any = pick(b) != NULL;
    b->rr = rr;
  }
  for (size_t i = 0; i < b->nlis; i++) {
    listener_t *l = &b->lis[i];
    bool hands = !b->gate && (b->opts.policy == WEFT_BALANCER_ROUND_ROBIN ||
                              b->opts.policy == WEFT_BALANCER_LEAST_CONNECTIONS);
    bool want = any && (hands ||
                        (l->slot && !available(l->slot->cur)));
    if (want && !l->polling)
      l->polling = uv_poll_start(&l->poll, UV_READABLE, on_poll) == 0;
    else if (!want && l->polling) {
      uv_poll_stop(&l->poll);
      l->polling = false;
    }
  }
}
