/* balancer_worker.c: the worker side of the balancer (weft/balancer.h).
 *
 * A worker thread or process calls weft_balancer_worker_start: it takes over
 * its parent port and answers the balancer's HELLO with READY (after it
 * listens, when the HELLO carries a listening socket). Connections arrive as CONN messages (a
 * connected fd) or from its own listener; each becomes a weft_conn_t opened
 * on this loop and linked in `conns`. Counts go back in STATUS messages:
 * coalesced per loop iteration by a check handle when handed connections
 * come and go (the acknowledgement of CONN and least-connections need them
 * soon), and every 100 ms by a timer for the rest (requests, and connections
 * of our own listener: reporting each would wake the balancer's thread once
 * per connection, a third of the CPU a short connection costs).
 *
 * A listener (every policy's, when the HELLO carries one) is polled here and
 * accepted from with accept4, at most ACCEPT_BATCH per wake-up: not through
 * a libuv listener, whose connections can only be had as opened handles.
 * With on_first_data, a new connection's first bytes are read before its
 * handle is opened (open_conn): one closed in the callback never gets one
 * (no FIONBIO, no epoll ADD or DEL; weft_conn_close closes the socket and
 * closes the handle, which has no fd, for on_close to follow as usual).
 *
 * Worker threads of round robin, least connections and shared get the
 * accept gate's table with their HELLO
 * (balancer_gate.c): they accept while the gate lets them; a paused worker
 * waits for a wake-up on its entry's eventfd, one of its own connections
 * closing, or the gate's patience (it stops polling the listener only once
 * the listener shows a connection while it is paused). A connection counts
 * closed in the gate when weft_conn_close is called (its socket closes
 * then), not after the loop's closing phase: one served and closed within
 * on_first_data must not make its worker look busier than its peers while
 * it accepts on (it did: two syscalls more per connection, pausing and
 * resuming).
 *
 * Wake-one: libuv registers a polled fd for every waiter, so each
 * connection on the shared listener woke every sleeping worker, and all but
 * one found nothing to accept (per request, under wrk -c64 with two
 * workers: 0.6 accept4 failing with EAGAIN, one epoll_wait and about 0.7
 * context switches more than nginx, whose workers register their listener
 * with EPOLLEXCLUSIVE). Once libuv has registered the listener (its first
 * event), a worker replaces that registration in its loop's epoll
 * (uv_backend_fd) by one with EPOLLEXCLUSIVE: the kernel then wakes one
 * sleeping worker per connection (every worker that is busy still sees it
 * when it next polls). The handle stays started, so libuv never touches the
 * registration again; the event carries the same data libuv's would (the
 * fd). A paused worker must not be the one woken: it takes its
 * registration out (EPOLL_CTL_DEL) when it pauses and puts it back when it
 * resumes, one system call each. A worker woken for a connection that the
 * gate does not let it take passes the wake-up on (weft__gate_pass): the
 * kernel woke no one else for it (listener_waiting says when). Where EPOLLEXCLUSIVE is refused, the
 * plain registration is put back and nothing else changes.
 *
 * Lifetime: the object goes when the parent port has closed and every handle
 * of its own (check, timer, listener, connections) has closed. If the port
 * closes first (the balancer went away, or the context ends), everything is
 * closed at once.
 *
 * Threads: the worker's context thread only. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer_int.h"

#define REPORT_MS 100
#define ACCEPT_BATCH 16  /* connections accepted per wake-up at most */

struct weft_balancer_worker_s {
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_port_t *port;          /* NULL once closed */
  weft_balancer_worker_options_t opts;
  bool draining, drained, ready_sent;
  uint64_t taken, accepted, closed, reqs;
  uint64_t rep_taken, rep_accepted, rep_closed, rep_reqs;
  uv_check_t check;
  uv_timer_t timer;
  bool lis_open, pipe;
  /* the listener, when we have one; the gate when we accept through one */
  weft_buf_t *gbuf;           /* our handle of the gate table, or NULL (no gate) */
  weft__gate_t *gate;         /* its bytes, or NULL */
  size_t gidx;                /* our entry */
  int lfd;                    /* the listening socket (ours) */
  uv_poll_t lpoll;            /* on lfd; stopped lazily while paused (armed) */
  uv_poll_t wpoll;            /* gated: on our entry's eventfd (the balancer's) */
  uv_timer_t patience;        /* runs while paused (gate, or out of fds) */
  char *first;                /* on_first_data's buffer, or NULL */
  bool paused, forced;
  bool armed;                 /* lpoll is started (excl: lfd is in the epoll) */
  bool excl;                  /* lfd's registration is ours, with EPOLLEXCLUSIVE */
  bool excl_tried;            /* take_registration ran */
  weft_list_t conns;          /* weft_conn_t.link_ */
  size_t live;
  int handles;                /* our handles not yet closed */
};

static void maybe_free(weft_balancer_worker_t *w) {
  if (w->port == NULL && w->handles == 0) {
    weft_buf_free(w->gbuf);
    weft_free(w->first);
    weft_free(w);
  }
}

static void on_own_closed(uv_handle_t *h) {
  weft_balancer_worker_t *w = h->data;
  w->handles--;
  maybe_free(w);
}

static void close_own(weft_balancer_worker_t *w, uv_handle_t *h) {
  if (!uv_is_closing(h)) {
    h->data = w;
    uv_close(h, on_own_closed);
  }
}

/* ---- reporting ---------------------------------------------------------------- */

static bool changed(const weft_balancer_worker_t *w) {
  return w->taken != w->rep_taken || w->accepted != w->rep_accepted ||
         w->closed != w->rep_closed || w->reqs != w->rep_reqs;
}

static void report(weft_balancer_worker_t *w) {
  if (w->port == NULL || !changed(w))
    return;
  weft_msg_t *m;
  if (weft_msg_new(&m) != 0)
    return;
  weft_msg_put_map(m, 5);
  weft_msg_put_u64(m, "wb", WEFT__BAL_STATUS);
  weft_msg_put_u64(m, "taken", w->taken);
  weft_msg_put_u64(m, "accepted", w->accepted);
  weft_msg_put_u64(m, "closed", w->closed);
  weft_msg_put_u64(m, "reqs", w->reqs);
  if (weft_port_post(w->port, m) != 0) {
    weft_msg_free(m);  /* the next report carries the counts */
    return;
  }
  w->rep_taken = w->taken, w->rep_accepted = w->accepted;
  w->rep_closed = w->closed, w->rep_reqs = w->reqs;
}

static void on_check(uv_check_t *h) {
  weft_balancer_worker_t *w = h->data;
  uv_check_stop(h);
  report(w);
}

static void soon(weft_balancer_worker_t *w) {
  if (!uv_is_active((uv_handle_t *)&w->check) && !uv_is_closing((uv_handle_t *)&w->check))
    uv_check_start(&w->check, on_check);
}

static void on_timer(uv_timer_t *h) {
  weft_balancer_worker_t *w = h->data;
  report(w);
}

/* ---- the gate (balancer_gate.c) ---------------------------------------------------- */

static void on_readable(uv_poll_t *h, int status, int events);

/* lfd in the loop's epoll, waking one waiter per event (see the top). */
static int epoll_excl(weft_balancer_worker_t *w, int op) {
  struct epoll_event e;
  memset(&e, 0, sizeof(e));
  e.events = EPOLLIN | EPOLLEXCLUSIVE;
  e.data.fd = w->lfd;  /* what libuv looks its watcher up by */
  return epoll_ctl(uv_backend_fd(w->loop), op, w->lfd, &e);
}

/* Called at the first event (libuv has registered lfd by then). */
static void take_registration(weft_balancer_worker_t *w) {
  struct epoll_event e;
  memset(&e, 0, sizeof(e));
  w->excl_tried = true;
  if (epoll_ctl(uv_backend_fd(w->loop), EPOLL_CTL_DEL, w->lfd, &e) != 0)
    return;
  w->excl = epoll_excl(w, EPOLL_CTL_ADD) == 0;
  if (!w->excl) {  /* as libuv had it: UV_READABLE | UV_DISCONNECT */
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.fd = w->lfd;
    (void)epoll_ctl(uv_backend_fd(w->loop), EPOLL_CTL_ADD, w->lfd, &e);
  }
}

static void arm(weft_balancer_worker_t *w) {
  if (w->excl)  /* libuv's handle never stopped */
    w->armed = epoll_excl(w, EPOLL_CTL_ADD) == 0;
  else  /* libuv's uv_poll_start is an epoll DEL and an ADD */
    w->armed = uv_poll_start(&w->lpoll, UV_READABLE | UV_DISCONNECT, on_readable) == 0;
}

static void disarm(weft_balancer_worker_t *w) {
  if (w->armed && w->excl) {
    struct epoll_event e;
    memset(&e, 0, sizeof(e));
    (void)epoll_ctl(uv_backend_fd(w->loop), EPOLL_CTL_DEL, w->lfd, &e);
  } else if (w->armed) {
    uv_poll_stop(&w->lpoll);
  }
  w->armed = false;
}

static void gate_resume(weft_balancer_worker_t *w, bool force) {
  if (!w->paused || !w->lis_open)
    return;
  w->paused = false;
  w->forced = force;
  uv_timer_stop(&w->patience);
  if (!w->armed)
    arm(w);
}

/* With EPOLLEXCLUSIVE the kernel woke us, maybe us alone, for what waits:
 * a worker that pauses without taking it passes the wake-up on. One that
 * took a connection first passes it on only if another still waits (it
 * came while we were being woken and woke no one else; one that comes after
 * our registration is out wakes another worker itself). Without the check
 * the peer was woken for every connection we took alone and found nothing
 * (a context switch and a failed accept4 per connection). */
static bool listener_waiting(weft_balancer_worker_t *w) {
  struct pollfd p = {.fd = w->lfd, .events = POLLIN};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Paused for WEFT__GATE_PATIENCE_MS: if connections still wait, the eligible
 * workers took nothing for that long (a loop blocked): take one batch
 * regardless. If none wait, resume under the gate (a free batch later would
 * skew the next burst). */
static void on_patience(uv_timer_t *h) {
  weft_balancer_worker_t *w = h->data;
  unsigned one = 1;
  if (w->gate)
    atomic_compare_exchange_strong(&w->gate->e[w->gidx].paused, &one, 0);
  gate_resume(w, listener_waiting(w));
}

static void on_gate_wake(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  weft_balancer_worker_t *w = h->data;
  uint64_t v;
  ssize_t n = read(w->gate->e[w->gidx].efd, &v, sizeof(v));
  (void)n;  /* EAGAIN: another reader... none; a stale wake-up: harmless */
  if (!w->paused && w->armed && w->lis_open) {  /* passed on by a peer (gate_pass) */
    on_readable(&w->lpoll, 0, UV_READABLE);
    return;
  }
  gate_resume(w, false);  /* the accept re-checks the gate */
}

/* Paused, the listener stays polled until it shows a connection that we
 * must leave to the others (on_readable stops it then): under short
 * connections most pauses end, by a close or a peer's wake-up, before that,
 * and a pause then costs no system call instead of three (uv_poll_stop's
 * epoll DEL, then uv_poll_start's DEL and ADD). With EPOLLEXCLUSIVE it is
 * taken out at once: a paused worker asleep would take the wake-up meant
 * for one that may accept. */
static void gate_pause(weft_balancer_worker_t *w) {
  w->paused = true;
  if (w->excl)  /* registered, we could be the one woken: take it out */
    disarm(w);
  uv_timer_start(&w->patience, on_patience, WEFT__GATE_PATIENCE_MS, 0);
}

/* One of the connections we accepted closed: we may be the least loaded
 * now (nobody else becomes eligible by it). */
static void gate_conn_closed(weft_balancer_worker_t *w) {
  weft__gate_entry_t *e = &w->gate->e[w->gidx];
  if (w->gate->mode != WEFT__GATE_OPEN)
    return;  /* round robin counts turns taken */
  atomic_fetch_sub(&e->open, 1);
  if (w->paused && weft__gate_eligible(w->gate, w->gidx)) {
    unsigned one = 1;
    atomic_compare_exchange_strong(&e->paused, &one, 0);
    gate_resume(w, false);
  }
}

/* ---- connections ---------------------------------------------------------------- */

static void finish_drain(weft_balancer_worker_t *w);
static void gate_conn_closed(weft_balancer_worker_t *w);

static weft_conn_t *conn_of(weft_list_node_t *n) {
  return WEFT_LIST_ENTRY(n, weft_conn_t, link_);
}

static void unlink_conn(weft_balancer_worker_t *w, weft_conn_t *c) {
  weft_list_remove(&w->conns, &c->link_);
  w->live--;
  w->handles--;
}

static void on_conn_closed(uv_handle_t *h) {
  weft_conn_t *c = (weft_conn_t *)(void *)h;
  weft_balancer_worker_t *w = c->worker;
  unlink_conn(w, c);
  w->closed++;
  if (w->opts.on_close)
    w->opts.on_close(c);
  if (c->handed_)
    soon(w);
  weft_free(c);
  if (w->draining)
    finish_drain(w);
  maybe_free(w);
}

void weft_conn_close(weft_conn_t *c) {
  if (c == NULL || uv_is_closing((uv_handle_t *)&c->h.stream))
    return;
  if (c->fd_ >= 0) {  /* in on_first_data: h was never opened (no fd, no epoll) */
    close(c->fd_);
    c->fd_ = -1;
  }
  uv_close((uv_handle_t *)&c->h.stream, on_conn_closed);  /* an opened socket closes now too */
  /* The gate counts it closed now, not after the loop's closing phase: one
   * served and closed within on_first_data must not make its worker look
   * busier than its peers while it accepts on. */
  if (c->worker->gate && !c->handed_)
    gate_conn_closed(c->worker);
}

int weft_conn_try_write(weft_conn_t *c, const uv_buf_t bufs[], unsigned nbufs) {
  if (c == NULL || (bufs == NULL && nbufs > 0) || uv_is_closing((uv_handle_t *)&c->h.stream))
    return WEFT_EINVAL;
  if (c->fd_ < 0)
    return uv_try_write(&c->h.stream, bufs, nbufs);
  struct iovec iov[16];
  unsigned n = nbufs < 16 ? nbufs : 16;  /* a partial write, as the socket may make */
  for (unsigned i = 0; i < n; i++)
    iov[i].iov_base = bufs[i].base, iov[i].iov_len = bufs[i].len;
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
  ssize_t r;
  do
    r = sendmsg(c->fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
  return r > INT32_MAX ? INT32_MAX : (int)r;
}

void weft_conn_request_done(weft_conn_t *c) {
  if (c != NULL)
    c->worker->reqs++;
}

static weft_conn_t *conn_new(weft_balancer_worker_t *w) {
  size_t size = w->opts.conn_size > sizeof(weft_conn_t) ? w->opts.conn_size : sizeof(weft_conn_t);
  weft_conn_t *c = weft_calloc(1, size);
  if (c == NULL)
    return NULL;
  c->worker = w;
  c->fd_ = -1;
  /* libuv: both always succeed (no socket is made until the fd is opened). */
  if (w->pipe)
    (void)uv_pipe_init(w->loop, &c->h.pipe, 0);
  else
    (void)uv_tcp_init(w->loop, &c->h.tcp);
  weft_list_push_front(&w->conns, &c->link_);
  w->live++;
  w->handles++;
  return c;
}

/* A connection's socket (fd ours either way): its first bytes to
 * on_first_data if they are there, then (unless it closed the connection)
 * the handle opened for on_connection. */
static void open_conn(weft_balancer_worker_t *w, weft_conn_t *c, int fd) {
  if (w->first != NULL) {
    ssize_t n;
    do
      n = recv(fd, w->first, WEFT_CONN_FIRST_DATA_MAX, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
      c->fd_ = fd;
      w->opts.on_first_data(c, w->first, (size_t)n);
      if (c->fd_ < 0)
        return;  /* closed there */
      c->fd_ = -1;
    }
  }
  int err = w->pipe ? uv_pipe_open(&c->h.pipe, fd) : uv_tcp_open(&c->h.tcp, fd);
  if (err) {
    close(fd);
    weft_conn_close(c);
    return;
  }
  w->opts.on_connection(c);
}

/* A connected fd from the balancer: open it here. The fd is ours either way. */
static void adopt(weft_balancer_worker_t *w, int fd) {
  w->taken++;
  soon(w);
  weft_conn_t *c = conn_new(w);
  if (c == NULL) {
    close(fd);
    w->closed++;
    return;
  }
  c->handed_ = true;
  open_conn(w, c, fd);
}

/* A connection we accepted from our listener: open it here. */
static void adopt_accepted(weft_balancer_worker_t *w, int fd) {
  w->accepted++;
  if (w->gate)
    atomic_fetch_add(&w->gate->e[w->gidx].open, 1);
  weft_conn_t *c = conn_new(w);
  if (c == NULL) {
    close(fd);
    w->closed++;
    if (w->gate)
      gate_conn_closed(w);
    return;
  }
  open_conn(w, c, fd);  /* a failure there is counted closed, and in the gate */
}

/* The listener is readable: accept, with a gate while it lets us, at most
 * ACCEPT_BATCH (the others get their turn, and so does the rest of our loop). */
static void close_listener(weft_balancer_worker_t *w);

static void on_readable(uv_poll_t *h, int status, int events) {
  weft_balancer_worker_t *w = h->data;
  if (status < 0 || (events & UV_DISCONNECT)) {
    close_listener(w);  /* the balancer shut the listener down: it closes */
    return;
  }
  if (w->paused) { /* a connection for the others: stop looking until resumed */
    disarm(w);
    return;
  }
  if (!w->excl_tried && w->armed)
    take_registration(w);
  bool force = w->forced, took = false;
  w->forced = false;
  for (int i = 0; i < ACCEPT_BATCH && w->lis_open && !w->paused; i++) {
    if (w->gate && !force && !weft__gate_eligible(w->gate, w->gidx) &&
        weft__gate_pause(w->gate, w->gidx)) {
      gate_pause(w);
      if (w->excl && (!took || listener_waiting(w)))  /* see listener_waiting */
        weft__gate_pass(w->gate, w->gidx);
      break;
    }
    int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EINVAL) {  /* no longer listening (shut down) */
        close_listener(w);
        return;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {  /* out of fds or memory */
        disarm(w);  /* try again at the patience tick */
        w->paused = true;
        uv_timer_start(&w->patience, on_patience, WEFT__GATE_PATIENCE_MS, 0);
      }
      break;
    }
    took = true;
    adopt_accepted(w, fd);
  }
  if (took && w->gate)
    weft__gate_wake_eligible(w->gate, w->gidx);
}

/* A listening fd (with the gate's table when buf is not NULL): poll it
 * ourselves. On failure fd is closed and buf freed. */
static int listen_polled(weft_balancer_worker_t *w, int fd, weft_buf_t *buf, size_t idx) {
  weft__gate_t *g = buf ? weft__gate_of(buf) : NULL;
  int err = g == NULL || idx < g->n ? uv_poll_init_socket(w->loop, &w->lpoll, fd) : WEFT_EINVAL;
  if (err == 0 && g && (err = uv_poll_init(w->loop, &w->wpoll, g->e[idx].efd)) != 0)
    close_own(w, (uv_handle_t *)&w->lpoll), w->handles++;
  if (err) {
    close(fd);
    weft_buf_free(buf);
    return err;
  }
  (void)uv_timer_init(w->loop, &w->patience);
  uv_unref((uv_handle_t *)&w->patience);
  w->lpoll.data = w->patience.data = w;
  w->handles += 2;
  w->gbuf = buf, w->gate = g, w->gidx = idx, w->lfd = fd;
  w->lis_open = true;
  if (g) {
    uv_unref((uv_handle_t *)&w->wpoll);  /* the listener keeps the loop */
    w->wpoll.data = w;
    w->handles++;
    atomic_store(&g->e[idx].active, 1);
    (void)uv_poll_start(&w->wpoll, UV_READABLE, on_gate_wake);
  }
  w->armed = uv_poll_start(&w->lpoll, UV_READABLE | UV_DISCONNECT, on_readable) == 0;
  return 0;
}

/* ---- drain and shutdown -------------------------------------------------------- */

/* Stop accepting: the listener (ours is a duplicate; the balancer keeps its
 * own) and, gated, our gate entry, whose paused peers re-check without us. */
static void close_listener(weft_balancer_worker_t *w) {
  if (!w->lis_open)
    return;
  w->lis_open = false;
  if (w->gate) {
    weft__gate_leave(w->gate, w->gidx);
    close_own(w, (uv_handle_t *)&w->wpoll);
  }
  close_own(w, (uv_handle_t *)&w->lpoll);  /* stops polling now: fd may go */
  close(w->lfd);
  close_own(w, (uv_handle_t *)&w->patience);
}

static void close_all(weft_balancer_worker_t *w) {
  close_listener(w);
  close_own(w, (uv_handle_t *)&w->check);
  close_own(w, (uv_handle_t *)&w->timer);
  for (weft_list_node_t *n = weft_list_first(&w->conns); n != NULL; n = weft_list_next(n))
    weft_conn_close(conn_of(n));
}

/* Close everything of ours and the port. A thread exits now (what it posted
 * is already in the parent's queue). A process lets its loop run out, so that
 * its channel sends the last STATUS first; if the program keeps other handles,
 * the drain deadline stops it. */
static void leave(weft_balancer_worker_t *w, int code) {
  close_all(w);
  if (w->port)
    weft_port_close(w->port);
  weft_worker_exit(w->ctx, code);
}

static void finish_drain(weft_balancer_worker_t *w) {
  if (w->live > 0 || w->drained)
    return;
  w->drained = true;
  report(w);
  if (w->opts.on_drained) {
    w->opts.on_drained(w);
    return;
  }
  leave(w, 0);
}

static void start_drain(weft_balancer_worker_t *w) {
  if (w->draining)
    return;
  w->draining = true;
  close_listener(w);
  for (weft_list_node_t *n = weft_list_first(&w->conns), *next; n != NULL; n = next) {
    next = weft_list_next(n);
    weft_conn_t *c = conn_of(n);
    if (w->opts.on_drain && !uv_is_closing((uv_handle_t *)&c->h.stream))
      w->opts.on_drain(c);
  }
  finish_drain(w);
}

static void on_port_closed(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)info;
  weft_balancer_worker_t *w = weft_port_data(p);
  w->port = NULL;
  close_all(w);
  maybe_free(w);
}

/* ---- messages -------------------------------------------------------------------- */

static void on_hello(weft_balancer_worker_t *w, weft_msg_t *m) {
  bool pipe = false;
  weft_msg_get_bool(m, "pipe", &pipe);
  w->pipe = pipe;
  int fd;
  uint64_t gate;
  size_t bi;
  weft_buf_t *buf;
  if (weft_msg_get_u64(m, "gate", &gate) == 0 &&
      weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &bi) == 0 && weft_msg_take_buf(m, bi, &buf) == 0) {
    if (weft_msg_take_socket(m, 0, &fd) != 0) {
      weft_buf_free(buf);
      return;  /* not ready (cannot happen: the balancer sends both) */
    }
    if (listen_polled(w, fd, buf, (size_t)gate) != 0)
      return;  /* not ready: the supervisor restarts a worker that never is */
  } else if (weft_msg_take_socket(m, 0, &fd) == 0 && listen_polled(w, fd, NULL, 0) != 0) {
    return;  /* not ready: the balancer keeps serving that listener */
  }
  weft_msg_t *r;
  int err = weft__bal_msg(WEFT__BAL_READY, false, -1, &r);
  if (err == 0 && (err = weft_port_post(w->port, r)) != 0)
    weft_msg_free(r);
  if (err)
    leave(w, 1);  /* never ready otherwise: let the supervisor start another */
}

static void on_message(weft_port_t *p, weft_msg_t *m) {
  weft_balancer_worker_t *w = weft_port_data(p);
  int fd;
  switch (weft__bal_op(m)) {
  case WEFT__BAL_CONN:
    if (weft_msg_take_socket(m, 0, &fd) == 0)
      adopt(w, fd);
    break;
  case WEFT__BAL_HELLO:
    on_hello(w, m);
    break;
  case WEFT__BAL_DRAIN:
    start_drain(w);
    break;
  case 0:
    if (w->opts.on_message) {
      w->opts.on_message(p, m);
      return;
    }
    break;
  default:
    break;
  }
  weft_msg_free(m);
}

/* ---- public -------------------------------------------------------------------- */

int weft_balancer_worker_start(weft_ctx_t *ctx, const weft_balancer_worker_options_t *opts,
                               weft_balancer_worker_t **out) {
  if (ctx == NULL || opts == NULL || opts->on_connection == NULL)
    return WEFT_EINVAL;
  if (weft_ctx_current() != ctx)
    return WEFT_EWRONGTHREAD;
  weft_port_t *port = weft_ctx_parent_port(ctx);
  if (port == NULL)
    port = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  if (port == NULL)
    return WEFT_EINVAL;
  if (weft_port_is_closed(port))
    return WEFT_ECLOSED; /* it could not be started: nothing would ever come */
  weft_balancer_worker_t *w = weft_calloc(1, sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  if (opts->on_first_data && (w->first = weft_malloc(WEFT_CONN_FIRST_DATA_MAX)) == NULL) {
    weft_free(w);
    return WEFT_ENOMEM;
  }
  w->ctx = ctx;
  w->loop = weft_ctx_loop(ctx);
  w->port = port;
  w->opts = *opts;
  int err = weft_port_on_close(port, on_port_closed);
  if (err) {
    weft_free(w->first);
    weft_free(w);
    return err;
  }
  void *old_data = weft_port_data(port);
  weft_port_set_data(port, w);
  err = weft_port_start(port, on_message); /* delivers from the loop, not now */
  if (err) {
    weft_port_on_close(port, NULL);
    weft_port_set_data(port, old_data);
    weft_free(w->first);
    weft_free(w);
    return err;
  }
  /* libuv: these always succeed (a check or timer handle allocates nothing;
   * uv_timer_start fails only without a callback). */
  (void)uv_check_init(w->loop, &w->check);
  uv_unref((uv_handle_t *)&w->check);
  (void)uv_timer_init(w->loop, &w->timer);
  uv_unref((uv_handle_t *)&w->timer);
  w->check.data = w->timer.data = w;
  w->handles = 2;
  (void)uv_timer_start(&w->timer, on_timer, REPORT_MS, REPORT_MS);
  if (out)
    *out = w;
  return 0;
}

bool weft_balancer_worker_draining(const weft_balancer_worker_t *w) { return w && w->draining; }
void *weft_balancer_worker_data(const weft_balancer_worker_t *w) { return w ? w->opts.data : NULL; }
weft_port_t *weft_balancer_worker_port(const weft_balancer_worker_t *w) {
  return w ? w->port : NULL;
}
