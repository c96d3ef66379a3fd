/* test_cluster_http.c: examples/cluster_http as its users run it: a real
 * process on loopback, driven by signals and plain blocking clients.
 *
 *   give-up   worker processes SIGKILLed again and again: past
 *             --max-restarts it exits with status 1 within a bound, and
 *             clients are refused afterwards (not left hanging);
 *   SIGTERM   with a connection holding half a request: new clients are
 *             refused at once, the held request is answered
 *             (Connection: close), the process exits 0;
 *   SIGHUP    under load from short and kept-alive clients: a rolling
 *             reload (new worker pids, "reload done"), the process stays up,
 *             no request fails;
 *   timeouts  with --header-timeout-ms 200 --keepalive-timeout-ms 300: a
 *             silent connection and one with half a request line are
 *             closed after the header timeout, an idle kept-alive one after
 *             the keep-alive timeout, and an active one stays open;
 *   wake-one  200 connections one after another to 2 idle worker threads
 *             sharing a listener (shared, round robin): each wakes one
 *             worker, not both (EPOLLEXCLUSIVE): the workers' voluntary
 *             context switches (woken for the connection, for its request)
 *             stay near reuseport's in the same run (a listener per
 *             worker: one woken per connection). On a quiet machine,
 *             waking both added about 1.5 per connection (2.7-3.1 against
 *             reuseport's 1.2); under load the workers sleep less and it
 *             adds less (0.7 seen): the test tells them apart when quiet;
 *   many      100 silent connections, and 100 idle after a request, made
 *             in turns: each is closed after its own timeout (one timer
 *             per worker sweeps them all), none before it.
 *
 * Bounded: every wait has a deadline (a hang is a failure), the server is
 * SIGKILLed if it outlives its test. Skipped when the examples are not
 * built. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baltest.h"
#include "ktest.h"
#include "weft.h"

#define EXE WEFT_TEST_BINARY_DIR "/examples/cluster_http"

extern char **environ;

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- the server process -------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int out;             /* its stdout */
  int port;
  char buf[16384];
  size_t len;
} server_t;

/* Reads its output until needle appears, waiting at most timeout_ms (0:
 * only what is there already). */
static bool wait_output(server_t *s, const char *needle, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    s->buf[s->len] = 0;
    if (strstr(s->buf, needle) != NULL)
      return true;
    uint64_t now = now_ms();
    struct pollfd p = {.fd = s->out, .events = POLLIN};
    if (poll(&p, 1, now >= end ? 0 : (int)(end - now)) <= 0)
      return false;
    ssize_t n = read(s->out, s->buf + s->len, sizeof(s->buf) - 1 - s->len);
    if (n <= 0)
      return false;
    s->len += (size_t)n;
  }
}

static void server_start(server_t *s, const char *const *flags) {
  if (access(EXE, X_OK) != 0)
    skip();
  const char *argv[32] = {EXE, "--port", "0"};
  int argc = 3;
  for (; flags && *flags && argc < 31; flags++)
    argv[argc++] = *flags;
  argv[argc] = NULL;
  int fds[2];
  assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);  /* its complaints too */
  memset(s, 0, sizeof(*s));
  assert_int_equal(posix_spawn(&s->pid, EXE, &fa, NULL, (char *const *)argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  s->out = fds[0];
  assert_true(wait_output(s, "\n", 10000));
  char *at = strstr(s->buf, "127.0.0.1:");
  assert_non_null(at);
  s->port = atoi(at + 10);
  assert_true(s->port > 0);
}

/* Its exit status (waitpid's), or -1 if it is still running after
 * timeout_ms (then it is SIGKILLed). */
static int server_wait(server_t *s, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  int st = -1;
  while (waitpid(s->pid, &st, WNOHANG) == 0) {
    if (now_ms() >= end) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &st, 0);
      st = -1;
      break;
    }
    usleep(5000);  /* polls another process's exit, bounded */
  }
  close(s->out);
  return st;
}

/* The worker processes' pids (children of its main thread). */
static int server_children(const server_t *s, int *pids, int max) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)s->pid, (int)s->pid);
  FILE *f = fopen(path, "r");
  int n = 0;
  while (f && n < max && fscanf(f, "%d", &pids[n]) == 1)
    n++;
  if (f)
    fclose(f);
  return n;
}

/* ---- small blocking clients ------------------------------------------------------ */

static const char REQ[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
static const char REQ_CLOSE[] = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

static bool send_all(int fd, const char *p, size_t n) {
  return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* One request on fd and its reply: true if it was a 200. */
static bool request(int fd, const char *req, char *buf, size_t cap) {
  return send_all(fd, req, strlen(req)) && baltest_read_reply(fd, buf, cap) > 0 &&
         strstr(buf, "200 OK") != NULL;
}

/* Milliseconds until the server closes fd (EOF or reset), or -1 after
 * timeout_ms (fd's receive timeout is longer). */
static int ms_until_closed(int fd, int timeout_ms) {
  uint64_t t0 = now_ms();
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) <= 0)
    return -1;
  char c;
  ssize_t n = recv(fd, &c, 1, 0);
  return n <= 0 ? (int)(now_ms() - t0) : -2;  /* -2: data instead of a close */
}

/* ---- give-up ------------------------------------------------------------------------ */

static void give_up_exits_nonzero(void **state) {
  (void)state;
  server_t s;
  const char *flags[] = {"--processes", "--workers", "2", "--max-restarts", "3",
                         "--restart-period-ms", "60000", NULL};
  server_start(&s, flags);
  char buf[1024];
  int fd;
  assert_int_equal(baltest_connect(s.port, 5000, &fd), 0);
  assert_true(request(fd, REQ_CLOSE, buf, sizeof(buf)));
  close(fd);
  /* SIGKILL worker processes, each once, as they appear: the fourth exit
   * breaks --max-restarts 3. No more kills after that (a sanitizer's leak
   * check at exit runs in a child process of its own). Bounded. */
  uint64_t t0 = now_ms(), end = t0 + 15000;
  int kills = 0, st = -1;
  int killed[4];
  while (now_ms() < end && waitpid(s.pid, &st, WNOHANG) == 0) {
    int pids[16];
    int n = kills < 4 ? server_children(&s, pids, 16) : 0;
    for (int i = 0; i < n && kills < 4; i++) {
      bool seen = false;
      for (int k = 0; k < kills; k++)
        seen |= killed[k] == pids[i];
      if (!seen && kill(pids[i], SIGKILL) == 0)
        killed[kills++] = pids[i];
    }
    st = -1;
    wait_output(&s, "\x01", 0);  /* keep its output flowing */
    usleep(5000);  /* the storm's pace, not a synchronisation */
  }
  uint64_t took = now_ms() - t0;
  if (st == -1) {
    kill(s.pid, SIGKILL);
    waitpid(s.pid, &st, 0);
    st = -1;
  }
  s.buf[s.len] = 0;
  close(s.out);
  fprintf(stderr, "gave up: %d kills, exit status %d after %llu ms\n", kills,
          st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1, (unsigned long long)took);
  if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1))
    fprintf(stderr, "server said:\n%s\n", s.buf);
  assert_true(st >= 0 && WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 1);
  assert_int_equal(kills, 4);
  assert_true(took < 15000);
  assert_int_equal(baltest_connect(s.port, 2000, NULL), UV_ECONNREFUSED);
}

/* ---- SIGTERM: refuse at once, finish what is open --------------------------------------- */

/* plain: every connection is accepted at once (--plain-accept), so the
 * silent one is a drained connection the server must close. Else the
 * balancer defers the accept until a request arrives: the silent one is
 * never accepted, and once the server is gone the kernel resets it at its
 * first bytes (it must not be left hanging either way). */
static void sigterm_case(bool plain) {
  server_t s;
  const char *flags[] = {"--workers", "2", plain ? "--plain-accept" : NULL, NULL};
  server_start(&s, flags);
  char buf[1024];
  int fd;
  assert_int_equal(baltest_connect(s.port, 5000, &fd), 0);
  assert_true(request(fd, REQ, buf, sizeof(buf)));
  static const char half[] = "GET / HTTP/1.1\r\nHost: t\r\n";
  assert_true(send_all(fd, half, sizeof(half) - 1));
  int silent;  /* connected, never sends: must not hold the exit for long */
  assert_int_equal(baltest_connect(s.port, 5000, &silent), 0);
  uint64_t t0 = now_ms();
  assert_int_equal(kill(s.pid, SIGTERM), 0);
  assert_true(wait_output(&s, "draining", 5000));
  int first = baltest_connect(s.port, 2000, NULL);
  uint64_t refused_ms = now_ms() - t0;
  /* the held connection finishes its request and is closed after it */
  assert_true(send_all(fd, "\r\n", 2));
  int n = baltest_read_reply(fd, buf, sizeof(buf));
  bool answered = n > 0 && strstr(buf, "200 OK") && strstr(buf, "Connection: close");
  bool closed = ms_until_closed(fd, 5000) >= 0;
  close(fd);
  int m_silent = plain ? ms_until_closed(silent, 5000) : 0;
  int st = server_wait(&s, 5000);
  uint64_t took = now_ms() - t0;
  if (!plain)
    m_silent = send_all(silent, "GET", 3) ? ms_until_closed(silent, 5000) : 0;
  close(silent);
  fprintf(stderr, "SIGTERM: new connect %s after %llu ms, held request %s, silent one %s, "
          "exit %d in %llu ms\n",
          weft_err_name(first), (unsigned long long)refused_ms,
          answered ? "answered" : "lost", m_silent >= 0 ? "closed" : "open",
          st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1, (unsigned long long)took);
  assert_int_equal(first, UV_ECONNREFUSED);
  assert_true(answered);
  assert_true(closed);
  assert_true(m_silent >= 0);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_true(took < 3000);  /* not the 10 s drain deadline, nor the header timeout */
}

static void sigterm_refuses_and_finishes(void **state) {
  (void)state;
  sigterm_case(false);
}

static void sigterm_refuses_and_finishes_plain(void **state) {
  (void)state;
  sigterm_case(true);
}

/* ---- SIGHUP: a rolling reload under load ------------------------------------------------- */

static struct {
  int port;
  atomic_bool stop;
  atomic_int done, failed, retried;
} hup;

/* Short connections: one request each. Every failure counts. */
static void short_client(void *arg) {
  (void)arg;
  char buf[1024];
  while (!atomic_load(&hup.stop)) {
    int fd;
    if (baltest_connect(hup.port, 5000, &fd) != 0) {
      atomic_fetch_add(&hup.failed, 1);
      continue;
    }
    if (request(fd, REQ_CLOSE, buf, sizeof(buf)))
      atomic_fetch_add(&hup.done, 1);
    else
      atomic_fetch_add(&hup.failed, 1);
    close(fd);
  }
}

/* Kept-alive connections. A server may close one that is idle between
 * requests (a draining worker does): a request on a reused connection that
 * sees the close before any byte of reply is sent again on a new one, as
 * HTTP clients do (RFC 9112, 9.3.1); every other failure counts. */
static void keepalive_client(void *arg) {
  (void)arg;
  char buf[1024];
  int fd = -1;
  bool reused = false;
  while (!atomic_load(&hup.stop)) {
    if (fd < 0) {
      if (baltest_connect(hup.port, 5000, &fd) != 0) {
        atomic_fetch_add(&hup.failed, 1);
        fd = -1;
        continue;
      }
      reused = false;
    }
    int n = send_all(fd, REQ, sizeof(REQ) - 1) ? baltest_read_reply(fd, buf, sizeof(buf)) : 0;
    if (n > 0 && strstr(buf, "200 OK")) {
      atomic_fetch_add(&hup.done, 1);
      reused = true;
      if (strstr(buf, "Connection: close") == NULL)
        continue;
    } else if (reused && (n == 0 || n == UV_ECONNRESET)) {
      atomic_fetch_add(&hup.retried, 1);
    } else {
      atomic_fetch_add(&hup.failed, 1);
    }
    close(fd);
    fd = -1;
  }
  if (fd >= 0)
    close(fd);
}

static bool wait_done(int n, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  while (atomic_load(&hup.done) < n && now_ms() < end)
    usleep(2000);  /* polls a counter, bounded */
  return atomic_load(&hup.done) >= n;
}

static void sighup_reloads(void **state) {
  (void)state;
  server_t s;
  const char *flags[] = {"--processes", "--workers", "2", NULL};
  server_start(&s, flags);
  memset(&hup, 0, sizeof(hup));
  hup.port = s.port;
  int before[16], after[16];
  int nbefore = server_children(&s, before, 16);
  uv_thread_t th[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(uv_thread_create(&th[i], i < 2 ? short_client : keepalive_client, NULL), 0);
  bool loaded = wait_done(200, 10000);
  int at_hup = atomic_load(&hup.done);
  kill(s.pid, SIGHUP);
  bool reloaded = wait_output(&s, "reload done", 15000);
  bool more = wait_done(atomic_load(&hup.done) + 200, 10000);
  atomic_store(&hup.stop, true);
  for (int i = 0; i < 4; i++)
    uv_thread_join(&th[i]);
  bool alive = kill(s.pid, 0) == 0;
  int nafter = server_children(&s, after, 16);
  int same = 0;
  for (int i = 0; i < nbefore; i++)
    for (int j = 0; j < nafter; j++)
      same += before[i] == after[j];
  kill(s.pid, SIGTERM);
  int st = server_wait(&s, 10000);
  char *gen = strstr(s.buf, "reload done");
  fprintf(stderr, "SIGHUP: %d requests (%d at the signal), %d failed, %d retried on a "
          "kept-alive connection closed while idle; workers %d -> %d, %d kept; %.60s\n",
          atomic_load(&hup.done), at_hup, atomic_load(&hup.failed),
          atomic_load(&hup.retried), nbefore, nafter, same, gen ? gen : "no reload line");
  if (same || nafter != 2 || atomic_load(&hup.failed))
    fprintf(stderr, "server said:\n%s\n", s.buf);
  assert_true(loaded);
  assert_true(reloaded);
  assert_true(more);
  assert_true(alive);
  assert_int_equal(atomic_load(&hup.failed), 0);
  /* A draining worker gives an idle kept-alive connection 200 ms for its
   * next request instead of closing it under a request on its way: these
   * clients send at once, so none has to retry (a sanitizer build may stall
   * that long). */
  if (!SANITIZED)
    assert_int_equal(atomic_load(&hup.retried), 0);
  assert_int_equal(nbefore, 2);
  assert_int_equal(nafter, 2);
  assert_int_equal(same, 0);  /* both replaced */
  assert_non_null(strstr(s.buf, "generation 1, worker starts 2 2"));
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- timeouts ---------------------------------------------------------------------------- */

static void timeouts(void **state) {
  (void)state;
  server_t s;
  const char *flags[] = {"--workers", "2", "--header-timeout-ms", "200",
                         "--keepalive-timeout-ms", "300", NULL};
  server_start(&s, flags);
  char buf[1024];
  int silent, half, idle, active;
  assert_int_equal(baltest_connect(s.port, 5000, &silent), 0);
  assert_int_equal(baltest_connect(s.port, 5000, &half), 0);
  assert_int_equal(baltest_connect(s.port, 5000, &idle), 0);
  assert_int_equal(baltest_connect(s.port, 5000, &active), 0);
  uint64_t t0 = now_ms();
  assert_true(send_all(half, "GET / HT", 8));
  assert_true(request(idle, REQ, buf, sizeof(buf)));
  uint64_t t_idle = now_ms();
  /* the active one sends a request every 100 ms for 1.2 s: past both timeouts */
  int answered = 0;
  for (int i = 0; i < 12; i++) {
    answered += request(active, REQ, buf, sizeof(buf));
    usleep(100000);  /* the client's pace */
  }
  int m_silent = ms_until_closed(silent, 3000);
  int m_half = ms_until_closed(half, 3000);
  int m_idle = ms_until_closed(idle, 3000);
  /* measured from the start (they were closed while the active one ran) */
  uint64_t now = now_ms();
  bool active_open = request(active, REQ, buf, sizeof(buf));
  fprintf(stderr, "timeouts: silent %s, half line %s, idle %s (closed by %llu ms / %llu ms), "
          "active %d/12 answered and %s\n",
          m_silent >= 0 ? "closed" : "open", m_half >= 0 ? "closed" : "open",
          m_idle >= 0 ? "closed" : "open", (unsigned long long)(now - t0),
          (unsigned long long)(now - t_idle), answered, active_open ? "open" : "closed");
  close(silent), close(half), close(idle), close(active);
  kill(s.pid, SIGTERM);
  int st = server_wait(&s, 10000);
  assert_true(m_silent >= 0);
  assert_true(m_half >= 0);
  assert_true(m_idle >= 0);
  assert_int_equal(answered, 12);
  assert_true(active_open);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

  /* And not too soon: a half request is not closed before its 200 ms. */
  server_start(&s, flags);
  assert_int_equal(baltest_connect(s.port, 5000, &half), 0);
  t0 = now_ms();
  assert_true(send_all(half, "GET / HT", 8));
  int m = ms_until_closed(half, 3000);
  uint64_t took = now_ms() - t0;
  close(half);
  kill(s.pid, SIGTERM);
  st = server_wait(&s, 10000);
  fprintf(stderr, "timeouts: half line closed after %llu ms\n", (unsigned long long)took);
  assert_true(m >= 0 && took >= 150 && took < 2000);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- many deadlines at once ----------------------------------------------------------- */

#define MANY 100

static void many_timeouts(void **state) {
  (void)state;
  server_t s;
  const char *flags[] = {"--workers", "2", "--header-timeout-ms", "300",
                         "--keepalive-timeout-ms", "600", NULL};
  server_start(&s, flags);
  char buf[1024];
  int silent[MANY], idle[MANY];
  uint64_t t0 = now_ms();
  for (int i = 0; i < MANY; i++) {
    assert_int_equal(baltest_connect(s.port, 5000, &silent[i]), 0);
    assert_int_equal(baltest_connect(s.port, 5000, &idle[i]), 0);
    assert_true(request(idle[i], REQ, buf, sizeof(buf)));
  }
  uint64_t t_made = now_ms();
  /* none is closed before the first timeout could have passed */
  int early = 0, silent_closed = 0, idle_closed = 0;
  uint64_t last_silent = 0, last_idle = 0;
  for (int i = 0; i < MANY; i++) {
    struct pollfd p = {.fd = silent[i], .events = POLLIN};
    early += now_ms() < t0 + 250 && poll(&p, 1, 0) == 1;
  }
  for (int i = 0; i < MANY; i++) {
    if (ms_until_closed(silent[i], 5000) >= 0)
      silent_closed++, last_silent = now_ms();
  }
  for (int i = 0; i < MANY; i++) {
    if (ms_until_closed(idle[i], 5000) >= 0)
      idle_closed++, last_idle = now_ms();
  }
  for (int i = 0; i < MANY; i++)
    close(silent[i]), close(idle[i]);
  kill(s.pid, SIGTERM);
  int st = server_wait(&s, 10000);
  fprintf(stderr, "many: %d connections made in %llu ms; silent %d/%d closed (last at %llu ms), "
          "idle %d/%d closed (last at %llu ms), %d early\n", 2 * MANY,
          (unsigned long long)(t_made - t0), silent_closed, MANY,
          (unsigned long long)(last_silent - t0), idle_closed, MANY,
          (unsigned long long)(last_idle - t0), early);
  assert_int_equal(silent_closed, MANY);
  assert_int_equal(idle_closed, MANY);
  assert_int_equal(early, 0);
  /* each closed after its own timeout: the last silent one was made at
   * t_made at the latest, the last idle one answered then */
  assert_true(last_silent >= t0 + 300 && last_idle >= t0 + 600);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- wake-one ------------------------------------------------------------------------- */

/* Voluntary context switches of each thread of pid but its main one (the
 * balancer's): the worker threads. Returns how many (at most max). */
static int worker_switches(pid_t pid, long *out, int max) {
  char path[96];
  snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  int n = 0;
  struct dirent *e;
  while (d && n < max && (e = readdir(d)) != NULL) {
    int tid = atoi(e->d_name);
    if (tid <= 0 || tid == (int)pid)
      continue;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, tid);
    FILE *f = fopen(path, "r");
    char line[128];
    while (f && fgets(line, sizeof(line), f))
      if (sscanf(line, "voluntary_ctxt_switches: %ld", &out[n]) == 1)
        n++;
    if (f)
      fclose(f);
  }
  if (d)
    closedir(d);
  return n;
}

#define SEQ 200

typedef struct {
  double switches;  /* the worker threads' voluntary context switches per connection */
  double threads;   /* how many of them slept (switched) in a connection's window */
} wake_t;

/* Connections one at a time, each sent, answered and closed before the
 * next. Each connection's window (from before its connect to its close)
 * counts the worker threads whose voluntary switch count moved: the ones
 * that woke and slept again. A thread that sleeps more than once in a
 * window (waiting for the request's bytes on a loaded machine) counts
 * once there, so `threads` says how many workers a connection woke
 * whatever the load; a thread that goes back to sleep after the window
 * closed counts in the next one (the mean stays the same). */
static wake_t wake_one(const char *policy) {
  server_t s;
  const char *flags[] = {"--workers", "2", "--policy", policy, NULL};
  server_start(&s, flags);
  char buf[1024];
  /* a first request on each side, so that both workers run and poll */
  int warm = 0;
  for (int i = 0; i < 4; i++) {
    int fd;
    if (baltest_connect(s.port, 5000, &fd) != 0)
      continue;
    warm += request(fd, REQ_CLOSE, buf, sizeof(buf));
    close(fd);
  }
  long first[8], before[8], after[8];  /* the workers (and, under TSan, its own thread) */
  int n = worker_switches(s.pid, first, 8), same = 1;
  memcpy(before, first, sizeof(before));
  int answered = 0, threads = 0;
  for (int i = 0; i < SEQ; i++) {
    int fd;
    if (baltest_connect(s.port, 5000, &fd) != 0)
      continue;
    answered += request(fd, REQ_CLOSE, buf, sizeof(buf));
    answered -= ms_until_closed(fd, 5000) < 0;  /* closed after its answer */
    close(fd);
    same &= worker_switches(s.pid, after, 8) == n;
    for (int t = 0; t < n; t++)
      threads += after[t] != before[t];
    memcpy(before, after, sizeof(before));
  }
  kill(s.pid, SIGTERM);  /* before any assertion: a failed one leaves no server behind */
  int st = server_wait(&s, 10000);
  assert_int_equal(warm, 4);
  assert_true(n >= 2);
  assert_true(same);
  long total = 0;
  for (int t = 0; t < n; t++)
    total += after[t] - first[t];
  wake_t r = {(double)total / SEQ, (double)threads / SEQ};
  fprintf(stderr, "wake-one %s: %d connections one at a time, %d answered; worker threads' "
          "voluntary context switches %ld (%.2f per connection), threads that slept %.2f per "
          "connection\n", policy, SEQ, answered, total, r.switches, r.threads);
  assert_int_equal(answered, SEQ);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  return r;
}

/* Shared: one worker woken per connection. Beside reuseport in the same
 * run (a listener per worker: the floor). Woken together, both workers
 * would sleep again in each window (2 threads per connection). */
static void wake_one_shared(void **state) {
  (void)state;
  wake_t floor = wake_one("reuseport"), shared = wake_one("shared");
  fprintf(stderr, "wake-one: shared %.2f threads (%.2f switches) per connection, reuseport %.2f "
          "(%.2f)\n", shared.threads, shared.switches, floor.threads, floor.switches);
  assert_true(shared.threads < floor.threads + 0.4);
}

/* Round robin's gate pauses a worker after its turn and wakes the other
 * (whose turn it is) through its eventfd: two threads per connection by
 * design, so what is checked is that no more than that happens. */
static void wake_one_round_robin(void **state) {
  (void)state;
  wake_t floor = wake_one("reuseport"), rr = wake_one("round_robin");
  fprintf(stderr, "wake-one: round robin %.2f threads (%.2f switches) per connection, reuseport "
          "%.2f (%.2f)\n", rr.threads, rr.switches, floor.threads, floor.switches);
  assert_true(rr.switches < floor.switches + 1.2);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(give_up_exits_nonzero),
      cmocka_unit_test(sigterm_refuses_and_finishes),
      cmocka_unit_test(sigterm_refuses_and_finishes_plain),
      cmocka_unit_test(sighup_reloads),
      cmocka_unit_test(timeouts),
      cmocka_unit_test(many_timeouts),
      cmocka_unit_test(wake_one_shared),
      cmocka_unit_test(wake_one_round_robin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
