/* child.c: scenarios against a weft child. This process is the raw parent:
 * it starts the victim (this binary with SOAK_ROLE=victim) with one end of a
 * socketpair as fd 3, named by WEFT_CHANNEL_FD (or NODE_CHANNEL_FD for a Node
 * 'json' channel), writes frames or lines by hand, then hangs up.
 *
 * The victim follows the documented backpressure pattern: it posts to its
 * parent until WEFT_EAGAIN, stops its port and waits for the drain callback;
 * it exits 0 from its close callback (its loop then ends). If no close event
 * comes it exits 3 after 30 s; the raw parent does not wait that long: a
 * victim still running SOAK_CLOSE_BOUND_MS after the hang-up is a failure
 * (it is killed, so no orphan is left).
 *
 * Checks: the victim's RSS peak stays within its window (4096 messages of the
 * flood's size) plus slack; it exits 0 within the bound once its parent is
 * gone. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soak.h"

extern char **environ;
extern const char *soak_self;

#define VICTIM_BOUND_MS 30000u

/* ---- the victim (a weft child) --------------------------------------------- */

static bool victim_closed;
static uv_timer_t victim_bound;

static void victim_on_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  (void)info;
  victim_closed = true;
  uv_close((uv_handle_t *)&victim_bound, NULL);
}

static void victim_on_bound(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "weft-soak victim: no close event %u ms after start\n", VICTIM_BOUND_MS);
  _exit(3);
}

static void victim_on_drain(weft_port_t *p) { (void)p; }

void soak_victim_main(void) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    _exit(2);
  weft_port_t *p = weft_runtime_parent_port(rt);
  if (p == NULL)
    _exit(2);
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  uv_timer_init(loop, &victim_bound);
  uv_timer_start(&victim_bound, victim_on_bound, VICTIM_BOUND_MS, 0);
  weft_port_on_close(p, victim_on_close);
  weft_port_on_drain(p, victim_on_drain);
  for (unsigned i = 0; i < 200000; i++) {
    weft_msg_t *m;
    if (weft_msg_new(&m) != 0)
      break;
    weft_msg_put_u64(m, NULL, i);
    if (weft_port_post(p, m) != 0) {
      weft_msg_free(m);
      break;
    }
  }
  weft_port_stop(p); /* backpressured: wait for the drain callback */
  weft_runtime_run(rt);
  weft_runtime_free(rt);
  _exit(victim_closed ? 0 : 4);
}

/* ---- the raw parent ----------------------------------------------------------- */

typedef struct {
  const char *name;
  bool node;
  bool flood;
  unsigned hangup_lo, hangup_hi; /* hang up after a random time in [lo, hi] ms */
} cscenario_t;

static const cscenario_t cscenarios[] = {
    {"child/flood+hangup", false, true, 1500, 1500},
    {"child/backpressured+hangup", false, false, 50, 500},
    {"child/node-junk+hangup", true, false, 100, 400},
};

static pid_t start_victim(const cscenario_t *s, int *chan) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return -1;
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 4, sizeof(*env));
  if (env == NULL)
    return -1;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "WEFT_", 5) != 0 && strncmp(environ[i], "NODE_CHANNEL", 12) != 0)
      env[k++] = environ[i];
  env[k++] = "SOAK_ROLE=victim";
  env[k++] = s->node ? "NODE_CHANNEL_FD=3" : "WEFT_CHANNEL_FD=3";
  if (s->node)
    env[k++] = "NODE_CHANNEL_SERIALIZATION_MODE=json";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3); /* dup2 clears FD_CLOEXEC */
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  char *args[] = {(char *)soak_self, NULL};
  pid_t pid;
  int err = posix_spawn(&pid, soak_self, &fa, NULL, args, env);
  posix_spawn_file_actions_destroy(&fa);
  free(env);
  close(sv[1]);
  if (err) {
    close(sv[0]);
    return -1;
  }
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  *chan = sv[0];
  return pid;
}

/* Read and drop what the victim sends. */
static void drain_input(int fd) {
  char buf[65536];
  for (int i = 0; i < 64; i++)
    if (read(fd, buf, sizeof buf) <= 0)
      return;
}

/* Write as much of p as the socket takes now; returns bytes written, or -1
 * once the victim has closed its end. */
static ssize_t write_some(int fd, const void *p, size_t n) {
  ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
  return w;
}

static void write_junk_lines(int fd) {
  static const char junk[] = "{not json\n\"\\ud800\"\n\x01\xff garbage\n{\"ok\":1}\n{\"half\":";
  if (write_some(fd, junk, sizeof junk - 1) < 0)
    return;
}

/* Feed the victim for ms milliseconds (flood frames or nothing), sampling
 * its RSS. Returns the peak VmRSS in KiB. */
static long feed(const cscenario_t *s, int fd, pid_t pid, unsigned ms, uint64_t *flooded) {
  static uint8_t f[SOAK_FLOOD_PAYLOAD + 64];
  size_t n = soak_frame_msg(f, SOAK_FLOOD_PAYLOAD), off = 0;
  uint64_t end = soak_now_ms() + ms, next_sample = 0;
  long peak = 0;
  bool dead = false;
  while (soak_now_ms() < end) {
    uint64_t now = soak_now_ms();
    if (now >= next_sample) {
      long rss = soak_status_kib(pid, "VmRSS:");
      if (rss > peak)
        peak = rss;
      next_sample = now + 20;
    }
    drain_input(fd);
    if (!s->flood || dead || *flooded >= SOAK_FLOOD_MAX_BYTES) {
      poll(NULL, 0, 5);
      continue;
    }
    ssize_t w = write_some(fd, f + off, n - off);
    if (w < 0) {
      dead = true; /* the victim closed the channel (a window enforced) */
      continue;
    }
    if (w == 0) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, 5);
      continue;
    }
    *flooded += (uint64_t)w;
    off = (off + (size_t)w) % n;
  }
  return peak;
}

/* Wait up to ms for pid; returns its wait status, or -1 (then it is killed). */
static int wait_exit(pid_t pid, unsigned ms) {
  uint64_t end = soak_now_ms() + ms;
  int st;
  do {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    poll(NULL, 0, 5);
  } while (soak_now_ms() < end);
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return -1;
}

static void run_child(const cscenario_t *s) {
  int fd;
  uint64_t t0 = soak_now_ms();
  pid_t pid = start_victim(s, &fd);
  if (pid < 0) {
    soak_fail(s->name, "cannot start the victim");
    return;
  }
  soak_stats.opened++;
  if (s->node) {
    write_junk_lines(fd);
  } else {
    uint8_t h[32];
    write_some(fd, h, soak_frame_hello(h, 1u << 20, 16, 1u << 20));
  }
  /* The victim's baseline: once its runtime is up (it has written to us). */
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  poll(&pfd, 1, 2000);
  poll(NULL, 0, 50);
  long rss0 = soak_status_kib(pid, "VmRSS:");
  uint64_t flooded = 0;
  long peak = feed(s, fd, pid, soak_rand(s->hangup_lo, s->hangup_hi), &flooded);
  close(fd); /* the parent is gone */
  uint64_t gone = soak_now_ms();
  int st = wait_exit(pid, SOAK_CLOSE_BOUND_MS);
  long growth = rss0 > 0 && peak > rss0 ? peak - rss0 : 0;
  if (growth > soak_stats.rss_peak_growth_kib)
    soak_stats.rss_peak_growth_kib = growth;
  soak_note(s->name, "victim %s %llu ms after the hang-up; flooded %llu KiB; victim RSS %ld KiB, "
            "peak +%ld KiB (run %llu ms)",
            st < 0 ? "still running" : "exited", (unsigned long long)(soak_now_ms() - gone),
            (unsigned long long)(flooded >> 10), rss0, growth,
            (unsigned long long)(soak_now_ms() - t0));
  if (st < 0)
    soak_fail(s->name, "the victim had no close event %u ms after its parent hung up (killed)",
              SOAK_CLOSE_BOUND_MS);
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    soak_fail(s->name, "the victim ended with status %d signal %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  else
    soak_stats.closed++;
  if (SOAK_JUDGE_RSS && s->flood && growth > (long)(SOAK_CHILD_WINDOW_KIB + SOAK_RSS_SLACK_KIB))
    soak_fail(s->name, "the victim's RSS grew %ld KiB while its port was stopped; its window "
              "is %u KiB (+%u KiB slack)",
              growth, SOAK_CHILD_WINDOW_KIB, SOAK_RSS_SLACK_KIB);
}

void soak_child_round(void) {
  for (size_t i = 0; i < sizeof cscenarios / sizeof cscenarios[0]; i++)
    run_child(&cscenarios[i]);
}
