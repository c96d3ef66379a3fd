/* test_child.c: child processes with a weft channel, end to end, with real
 * processes: this test binary is its own child (main() runs a registered entry
 * when started with WEFT_ENTRY, see child_main).
 *
 * Covered: 100k small records each way with per-direction FIFO order; the
 * first message (opts.msg) arriving first; a 256 MiB memfd buffer checked in
 * the child; a TCP socket handed to a child that serves the parent's client;
 * credit exhaustion and recovery both ways (EAGAIN, then the drain callback,
 * then every message in order); SIGKILL mid-stream (WEFT_EPEERDIED with
 * undelivered messages, term_signal 9, the runtime lives on); messages a
 * child sends right before it ends; exit codes and signals; spawn errors;
 * ports refused at post time; stdio pipes in chunks and lines; stdin; the
 * environment and cwd a child gets.
 *
 * No sleeps synchronise anything: a child that must wait is released by a
 * message, a byte on its stdin, or its parent's hang-up; a parent that must
 * wait is released by a line on the child's stdout. Callbacks record
 * failures with CHECK; a child process reports them (and leaks) through its
 * exit code, which the parent checks. Each test ends with
 * weft_runtime_free() == 0, no CHECK failed and no weft allocation
 * outstanding (tests/support/ktest.h). A watchdog aborts a hung test, and a
 * child process has one of its own (child_watchdog), so none outlives it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

/* ---- messages both sides use ------------------------------------------------- */

/* A small record {seq, tag}. */
static weft_msg_t *rec_new(uint64_t seq) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0 || weft_msg_put_map(m, 2) != 0 ||
      weft_msg_put_u64(m, "seq", seq) != 0 || weft_msg_put_str(m, "tag", "rec") != 0)
    abort();
  return m;
}

static uint64_t rec_seq(const weft_msg_t *m) {
  uint64_t v = UINT64_MAX;
  (void)weft_msg_get_u64(m, "seq", &v);
  return v;
}

/* A one-key control message {key: v}. */
static weft_msg_t *ctl_new(const char *key, uint64_t v) {
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0 || weft_msg_put_map(m, 1) != 0 || weft_msg_put_u64(m, key, v) != 0)
    abort();
  return m;
}

static uint64_t ctl_get(const weft_msg_t *m, const char *key) {
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, key, &v), 0);
  return v;
}

/* The child's default window (child.h: window_msgs 0 means 4096): what a
 * parent may post ahead of a child that does not read. */
#define CHILD_WINDOW 4096u

/* The 256 MiB buffer: word i of the pattern, and a hash of some words. */
#define BIG_LEN (256ull * 1024 * 1024)
#define BIG_HASHED (4ull * 1024 * 1024) /* bytes hashed at each end */

static uint64_t pattern_word(uint64_t i) {
  return (i + 1) * 0x9E3779B97F4A7C15ull ^ (i >> 7);
}

static uint64_t hash_step(uint64_t h, uint64_t w) {
  return (h ^ w) * 0x100000001B3ull;
}

/* ============================================================================
 * The child side: entries run by child processes of this binary.
 * One entry per process, so its state is process-global.
 * ========================================================================== */

enum {
  CHILD_EXIT_CHECK = 90,   /* a CHECK failed in the child */
  CHILD_EXIT_LEAK = 91,    /* weft allocations left after weft_runtime_free */
  CHILD_EXIT_FREE = 92,    /* weft_runtime_free failed */
  CHILD_EXIT_SETUP = 93,   /* the runtime could not start */
  CHILD_EXIT_NOENTRY = 94, /* started with an entry name nobody registered */
  CHILD_EXIT_ORPHAN = 95,  /* the safety timer fired: the parent never ended us */
  CHILD_EXIT_HUNG = 96     /* child_watchdog fired (e.g. stuck in weft_runtime_free) */
};

static struct {
  weft_port_t *port; /* the parent port */
  uint64_t n, in, out, bad, eagain, drains;
  bool got_data;
  uv_timer_t safety;
  uv_pipe_t in_pipe;
  uv_tcp_t tcp;
  uv_write_t wreq;
  char got[8];
  size_t got_len;
  bool said_e;
} ch;

static weft_port_t *parent_port_of(weft_ctx_t *ctx) {
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  CHECK(p != NULL);
  return p;
}

/* "echo": every message goes back as it came; ends when the parent closes. */
static void echo_msg(weft_port_t *p, weft_msg_t *m) {
  int rc = weft_port_post(p, m);
  if (rc != 0) {
    CHECK_RC(rc, 0);
    weft_msg_free(m);
  }
}

static int entry_echo(weft_ctx_t *ctx, weft_msg_t *data) {
  CHECK(data == NULL);
  CHECK_RC(weft_port_start(parent_port_of(ctx), echo_msg), 0);
  return 0;
}

/* "stream": the first message says n; then n records each way, both checked
 * in order; posting waits for the drain callback after WEFT_EAGAIN. */
static void stream_pump(weft_port_t *p) {
  while (ch.out < ch.n) {
    weft_msg_t *m = rec_new(ch.out);
    int rc = weft_port_post(p, m);
    if (rc != 0) {
      weft_msg_free(m);
      if (rc == WEFT_EAGAIN)
        ch.eagain++;
      else
        CHECK_RC(rc, 0);
      return;
    }
    ch.out++;
  }
}

static void stream_drain(weft_port_t *p) {
  ch.drains++;
  stream_pump(p);
}

static void stream_msg(weft_port_t *p, weft_msg_t *m) {
  if (!ch.got_data) {
    ch.got_data = true;
    ch.n = ctl_get(m, "n");
    weft_msg_free(m);
    stream_pump(p);
    return;
  }
  if (rec_seq(m) != ch.in)
    ch.bad++;
  ch.in++;
  weft_msg_free(m);
}

static void stream_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  CHECK_RC(info->reason, WEFT_ECLOSED);
  CHECK(ch.in == ch.n);
  CHECK(ch.out == ch.n);
  CHECK(ch.bad == 0);
  CHECK(ch.drains >= ch.eagain);
}

static int entry_stream(weft_ctx_t *ctx, weft_msg_t *data) {
  CHECK(data == NULL);
  weft_port_t *p = parent_port_of(ctx);
  CHECK_RC(weft_port_on_drain(p, stream_drain), 0);
  CHECK_RC(weft_port_on_close(p, stream_close), 0);
  CHECK_RC(weft_port_start(p, stream_msg), 0);
  return 0;
}

/* "burst": the first message says n; posts n records (waiting for drains),
 * then closes its end at once and ends: what it posted must still arrive. */
static void burst_pump(weft_port_t *p) {
  stream_pump(p);
  if (ch.out == ch.n)
    CHECK_RC(weft_port_close(p), 0);
}

static void burst_drain(weft_port_t *p) {
  ch.drains++;
  burst_pump(p);
}

static void burst_msg(weft_port_t *p, weft_msg_t *m) {
  ch.n = ctl_get(m, "n");
  weft_msg_free(m);
  burst_pump(p);
}

static int entry_burst(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = parent_port_of(ctx);
  CHECK_RC(weft_port_on_drain(p, burst_drain), 0);
  CHECK_RC(weft_port_start(p, burst_msg), 0);
  return 0;
}

/* "bigbuf": takes the buffer of each message, checks the pattern every 4 KiB,
 * hashes both ends, writes to it (a private mapping), replies with
 * {len, bad, sum}. */
static void bigbuf_msg(weft_port_t *p, weft_msg_t *m) {
  weft_buf_t *b = NULL;
  CHECK(weft_msg_xfer_count(m) == 1);
  CHECK(weft_msg_xfer_kind(m, 0) == WEFT_XFER_BUF);
  CHECK_RC(weft_msg_take_buf(m, 0, &b), 0);
  void *data = NULL;
  size_t len = 0;
  uint64_t bad = 0, sum = 14695981039346656037ull;
  if (b != NULL && weft_buf_bytes(b, &data, &len) == 0 && len == BIG_LEN) {
    const uint64_t *w = data;
    size_t words = len / 8, hashed = BIG_HASHED / 8;
    for (size_t i = 0; i < words; i += 4096 / 8)
      bad += w[i] != pattern_word(i);
    bad += w[words - 1] != pattern_word(words - 1);
    for (size_t i = 0; i < hashed; i++)
      sum = hash_step(sum, w[i]);
    for (size_t i = words - hashed; i < words; i++)
      sum = hash_step(sum, w[i]);
    ((uint8_t *)data)[0] ^= 0xff; /* the receiver may write its copy */
  }
  weft_buf_free(b);
  weft_msg_free(m);
  weft_msg_t *r = NULL;
  if (weft_msg_new(&r) != 0 || weft_msg_put_map(r, 3) != 0 ||
      weft_msg_put_u64(r, "len", len) != 0 || weft_msg_put_u64(r, "bad", bad) != 0 ||
      weft_msg_put_u64(r, "sum", sum) != 0)
    abort();
  CHECK_RC(weft_port_post(p, r), 0);
}

static int entry_bigbuf(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = parent_port_of(ctx);
  /* The buffer counts against this port's byte bound (64 MiB by default). */
  CHECK_RC(weft_port_set_hwm(p, 0, 4 * BIG_LEN), 0);
  CHECK_RC(weft_port_start(p, bigbuf_msg), 0);
  return 0;
}

/* "sock": takes the socket of the first message, reads "ping" from it,
 * writes "pong", closes it and its parent port. */
static void sock_closed(uv_handle_t *h) {
  (void)h;
  CHECK_RC(weft_port_close(ch.port), 0);
}

static void sock_written(uv_write_t *req, int status) {
  (void)req;
  CHECK_RC(status, 0);
  uv_close((uv_handle_t *)&ch.tcp, sock_closed);
}

static void sock_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = ch.got + ch.got_len;
  buf->len = sizeof(ch.got) - ch.got_len;
}

static void sock_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n < 0) {
    CHECK(!"the client hung up before ping");
    uv_close((uv_handle_t *)s, sock_closed);
    return;
  }
  ch.got_len += (size_t)n;
  if (ch.got_len < 4)
    return;
  uv_read_stop(s);
  CHECK(ch.got_len == 4 && memcmp(ch.got, "ping", 4) == 0);
  static char pong[] = "pong";
  uv_buf_t b = uv_buf_init(pong, 4);
  CHECK_RC(uv_write(&ch.wreq, s, &b, 1, sock_written), 0);
}

static void sock_msg(weft_port_t *p, weft_msg_t *m) {
  uv_os_sock_t fd = -1;
  CHECK(weft_msg_xfer_kind(m, 0) == WEFT_XFER_SOCKET);
  CHECK_RC(weft_msg_take_socket(m, 0, &fd), 0);
  weft_msg_free(m);
  weft_port_stop(p);
  uv_loop_t *loop = weft_ctx_loop(weft_port_ctx(p));
  CHECK_RC(uv_tcp_init(loop, &ch.tcp), 0);
  CHECK_RC(uv_tcp_open(&ch.tcp, fd), 0);
  CHECK_RC(uv_read_start((uv_stream_t *)&ch.tcp, sock_alloc, sock_read), 0);
}

static int entry_sock(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  ch.port = parent_port_of(ctx);
  CHECK_RC(weft_port_start(ch.port, sock_msg), 0);
  return 0;
}

/* "slowstart": keeps its parent port stopped (bound: 16 messages) until a
 * byte arrives on stdin, then reads n records in order (the first message
 * says n). The parent closes when it has posted them all. */
static void slow_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  if (!ch.got_data) {
    ch.got_data = true;
    ch.n = ctl_get(m, "n");
  } else {
    if (rec_seq(m) != ch.in)
      ch.bad++;
    ch.in++;
  }
  weft_msg_free(m);
}

static void slow_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  CHECK_RC(info->reason, WEFT_ECLOSED);
  CHECK(ch.got_data);
  CHECK(ch.in == ch.n);
  CHECK(ch.bad == 0);
  if (ch.in != ch.n)
    fprintf(stderr, "[pid %d] slowstart: got %llu of %llu\n", (int)getpid(),
            (unsigned long long)ch.in, (unsigned long long)ch.n);
}

static void stdin_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = ch.got;
  buf->len = sizeof(ch.got);
}

static void stdin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n == 0)
    return;
  uv_read_stop(s);
  uv_close((uv_handle_t *)s, NULL);
  CHECK(n > 0); /* "go" (EOF would mean the parent went away first) */
  CHECK_RC(weft_port_start(ch.port, slow_msg), 0);
}

static int entry_slowstart(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  ch.port = parent_port_of(ctx);
  CHECK_RC(weft_port_set_hwm(ch.port, 16, 0), 0);
  CHECK_RC(weft_port_on_close(ch.port, slow_close), 0);
  CHECK_RC(uv_pipe_init(weft_ctx_loop(ctx), &ch.in_pipe, 0), 0);
  CHECK_RC(uv_pipe_open(&ch.in_pipe, 0), 0);
  CHECK_RC(uv_read_start((uv_stream_t *)&ch.in_pipe, stdin_alloc, stdin_read), 0);
  return 0;
}

/* "flood": (its runtime bounds every port at 64 messages) the first message
 * says n and w, the parent's window plus this child's own bound; posts n
 * records, and once a post fails with WEFT_EAGAIN after at least w were
 * accepted (so the parent's window was spent), prints "E" on stdout so that
 * the parent starts reading. */
static void flood_pump(weft_port_t *p) {
  stream_pump(p);
  if (ch.out < ch.n && ch.out >= ch.in && !ch.said_e) {
    ch.said_e = true;
    CHECK(write(1, "E\n", 2) == 2);
  }
}

static void flood_drain(weft_port_t *p) {
  ch.drains++;
  flood_pump(p);
}

static void flood_msg(weft_port_t *p, weft_msg_t *m) {
  if (!ch.got_data) {
    ch.got_data = true;
    ch.n = ctl_get(m, "n");
    ch.in = ctl_get(m, "w"); /* kept in `in`: this child receives nothing else */
    weft_msg_free(m);
    flood_pump(p);
    return;
  }
  CHECK(!"flood gets one message");
  weft_msg_free(m);
}

static void flood_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  CHECK_RC(info->reason, WEFT_ECLOSED);
  CHECK(ch.out == ch.n);
  CHECK(ch.said_e);
  CHECK(ch.eagain >= 1);
  CHECK(ch.drains >= ch.eagain);
}

static int entry_flood(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = parent_port_of(ctx);
  CHECK_RC(weft_port_on_drain(p, flood_drain), 0);
  CHECK_RC(weft_port_on_close(p, flood_close), 0);
  CHECK_RC(weft_port_start(p, flood_msg), 0);
  return 0;
}

/* "hold": never reads its parent port (bound: 16 messages); a ref'd timer
 * keeps it alive until it is killed (or ends it after a minute). */
static void safety_fired(uv_timer_t *t) {
  fprintf(stderr, "[pid %d] child: nobody ended me, leaving\n", (int)getpid());
  uv_close((uv_handle_t *)t, NULL);
  weft_port_close(ch.port);
  exit(CHILD_EXIT_ORPHAN);
}

static int entry_hold(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  ch.port = parent_port_of(ctx);
  CHECK_RC(weft_port_set_hwm(ch.port, 16, 0), 0);
  CHECK_RC(uv_timer_init(weft_ctx_loop(ctx), &ch.safety), 0);
  CHECK_RC(uv_timer_start(&ch.safety, safety_fired, 60000, 0), 0);
  return 0;
}

static int entry_ret7(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  (void)data;
  return 7;
}

static int entry_sigterm(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)ctx;
  (void)data;
  raise(SIGTERM);
  return 0;
}

/* A child's own watchdog: a child stuck (say in weft_runtime_free) must not
 * outlive the test. It ends the process with CHILD_EXIT_HUNG. */
static uv_thread_t child_watchdog_tid;

static void child_watchdog(void *arg) {
  (void)arg;
  uint64_t limit_s = SANITIZED ? 120 : 60;
  uv_sleep((unsigned)(limit_s * 1000)); /* not synchronisation: a bound on a hang */
  fprintf(stderr, "[pid %d] child watchdog: still running after %llu s\n", (int)getpid(),
          (unsigned long long)limit_s);
  _exit(CHILD_EXIT_HUNG);
}

/* A child process of this binary: run the entry named in the environment.
 * Returns only in the parent (the test runner). */
static void child_main(void) {
  const char *entry = getenv("WEFT_ENTRY");
  if (entry != NULL && uv_thread_create(&child_watchdog_tid, child_watchdog, NULL) != 0)
    exit(CHILD_EXIT_SETUP);
  weft_runtime_options_t opts = {0};
  if (entry != NULL && strcmp(entry, "flood") == 0)
    opts.port_hwm_msgs = 64;
  weft_runtime_t *rt = NULL;
  if (weft_runtime_new(&rt, &opts) != 0)
    exit(CHILD_EXIT_SETUP);
  static const struct {
    const char *name;
    weft_worker_entry_cb fn;
  } entries[] = {
      {"echo", entry_echo},       {"stream", entry_stream}, {"burst", entry_burst},
      {"bigbuf", entry_bigbuf},   {"sock", entry_sock},     {"slowstart", entry_slowstart},
      {"flood", entry_flood},     {"hold", entry_hold},     {"ret7", entry_ret7},
      {"sigterm", entry_sigterm},
  };
  for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
    if (weft_runtime_register(rt, entries[i].name, entries[i].fn) != 0)
      exit(CHILD_EXIT_SETUP);
  int code = 0;
  int rc = weft_runtime_child_entry(rt, &code);
  if (rc == WEFT_ENOENT) { /* the test runner itself */
    if (weft_runtime_free(rt) != 0)
      abort();
    return;
  }
  /* weft_runtime_new took the channel variables out of the environment. */
  CHECK(getenv("WEFT_CHANNEL_FD") == NULL);
  CHECK(getenv("WEFT_ENTRY") == NULL);
  if (rc == WEFT_ENOENTRY)
    code = CHILD_EXIT_NOENTRY;
  else if (rc != 0)
    code = CHILD_EXIT_SETUP;
  if (weft_runtime_free(rt) != 0)
    code = CHILD_EXIT_FREE;
  else if (testutil_alloc_outstanding() != 0)
    code = CHILD_EXIT_LEAK;
  if (atomic_load(&ktest_failures) != 0)
    code = CHILD_EXIT_CHECK;
  if (code >= CHILD_EXIT_CHECK)
    fprintf(stderr, "[pid %d] child %s: exit %d\n", (int)getpid(), entry, code);
  exit(code);
}

/* ============================================================================
 * The parent side.
 * ========================================================================== */

static const char *self_argv0;
static weft_ctx_t *main_ctx;

/* The parent's record of one child. */
typedef struct kid_s {
  weft_child_t *c;
  weft_port_t *port;
  int exits, closes;
  int64_t status;
  int sig;
  int reason;
  uint64_t undelivered;
  int closes_at_exit;
  uint64_t recv_at_exit;
  /* streams */
  uint64_t n, sent, recv, bad, eagain, drains, closed_after_drain;
  uint64_t release_at;        /* on_release at the first EAGAIN after this many posts */
  uint64_t sent_at_release;   /* posts accepted when the child was let go */
  bool released;
  bool close_when_sent;       /* close the port once all n are posted */
  bool close_when_received;   /* close the port once n arrived (and n were sent) */
  size_t pending_at_start;
  void (*after_exit)(struct kid_s *k);
  void (*on_release)(struct kid_s *k);
  /* replies */
  weft_msg_t *reply[4];
  int nreply;
} kid_t;

static void kid_exit(weft_child_t *c, int64_t status, int sig) {
  kid_t *k = weft_child_data(c);
  CHECK(k != NULL);
  k->exits++;
  k->status = status;
  k->sig = sig;
  k->closes_at_exit = k->closes;
  k->recv_at_exit = k->recv;
  CHECK(weft_child_port(c) == NULL); /* the channel is done */
  CHECK_RC(weft_child_kill(c, SIGTERM), UV_ESRCH);
  k->c = NULL;
  if (k->after_exit)
    k->after_exit(k);
}

static void kid_close(weft_port_t *p, const weft_port_close_info_t *info) {
  kid_t *k = weft_port_data(p);
  k->closes++;
  k->reason = info->reason;
  k->undelivered = info->undelivered;
  /* The port is still valid during its close callback: posts fail. */
  weft_msg_t *m = rec_new(0);
  CHECK_RC(weft_port_post(p, m), WEFT_ECLOSED);
  weft_msg_free(m);
  k->port = NULL;
}

static void kid_keep(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  if (k->nreply < 4)
    k->reply[k->nreply++] = m;
  else
    weft_msg_free(m);
}

static void kid_free_replies(kid_t *k) {
  for (int i = 0; i < k->nreply; i++)
    weft_msg_free(k->reply[i]);
  k->nreply = 0;
}

static const char *const *self_args(void) {
  static const char *args[2];
  args[0] = self_argv0;
  args[1] = NULL;
  return args;
}

static weft_child_options_t entry_opts(const char *entry, kid_t *k) {
  weft_child_options_t o = {.entry_name = entry, .args = self_args(), .on_exit = kid_exit,
                            .data = k};
  return o;
}

/* Spawn and hook the port's data, close and drain callbacks. */
static void kid_spawn(kid_t *k, const weft_child_options_t *o, weft_port_drain_cb drain) {
  int rc = weft_child_spawn(main_ctx, o, &k->c);
  assert_int_equal(rc, 0);
  assert_non_null(k->c);
  assert_true(weft_child_pid(k->c) > 0);
  assert_ptr_equal(weft_child_data(k->c), k);
  k->port = weft_child_port(k->c);
  assert_non_null(k->port);
  weft_port_set_data(k->port, k);
  assert_int_equal(weft_port_on_close(k->port, kid_close), 0);
  if (drain)
    assert_int_equal(weft_port_on_drain(k->port, drain), 0);
}

/* Post records until n or WEFT_EAGAIN (then wait for the drain callback). */
static void kid_pump(kid_t *k) {
  while (k->port != NULL && k->sent < k->n) {
    weft_msg_t *m = rec_new(k->sent);
    int rc = weft_port_post(k->port, m);
    if (rc != 0) {
      weft_msg_free(m); /* a failed post leaves the message with us */
      if (rc == WEFT_ECLOSED && k->drains > 0) {
        k->closed_after_drain++; /* the channel ended while we waited: the drain said so */
        return;
      }
      if (rc != WEFT_EAGAIN) {
        CHECK_RC(rc, 0);
        return;
      }
      k->eagain++;
      if (k->on_release && !k->released && k->sent >= k->release_at) {
        k->released = true;
        k->sent_at_release = k->sent;
        k->on_release(k);
      }
      return;
    }
    k->sent++;
  }
  if (k->port == NULL)
    return;
  if ((k->close_when_sent && k->sent == k->n) ||
      (k->close_when_received && k->sent == k->n && k->recv == k->n))
    CHECK_RC(weft_port_close(k->port), 0);
}

static void kid_drain(weft_port_t *p) {
  kid_t *k = weft_port_data(p);
  k->drains++;
  kid_pump(k);
}

static void kid_count(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  if (rec_seq(m) != k->recv)
    k->bad++;
  k->recv++;
  weft_msg_free(m);
  if (k->close_when_received && k->recv == k->n && k->sent == k->n)
    CHECK_RC(weft_port_close(p), 0);
}

static void run(weft_runtime_t *rt) { assert_int_equal(weft_runtime_run(rt), 0); }

static void kid_dump(const char *what, const kid_t *k) {
  if (getenv("WEFT_TEST_VERBOSE") == NULL)
    return;
  fprintf(stderr,
          "%s: exits %d status %lld sig %d closes %d (at exit %d, recv %llu) reason %s undelivered %llu "
          "n %llu sent %llu recv %llu bad %llu eagain %llu drains %llu\n",
          what, k->exits, (long long)k->status, k->sig, k->closes, k->closes_at_exit,
          (unsigned long long)k->recv_at_exit,
          weft_err_name(k->reason), (unsigned long long)k->undelivered,
          (unsigned long long)k->n, (unsigned long long)k->sent, (unsigned long long)k->recv,
          (unsigned long long)k->bad, (unsigned long long)k->eagain,
          (unsigned long long)k->drains);
}

/* ---- messages both ways ------------------------------------------------------ */

static void records_both_ways_in_order(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.n = ktest_scaled(100000, 5000), .close_when_received = true};
  weft_child_options_t o = entry_opts("stream", &k);
  o.msg = ctl_new("n", k.n);
  o.on_message = kid_count;
  kid_spawn(&k, &o, kid_drain);
  kid_pump(&k);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0); /* the child checked its side */
  assert_int_equal(k.sig, 0);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.closes_at_exit, 1);
  assert_int_equal(k.reason, 0); /* we closed it */
  assert_int_equal(k.sent, k.n);
  assert_int_equal(k.recv, k.n);
  assert_int_equal(k.bad, 0);
  assert_true(k.drains >= k.eagain);
  ktest_live_finish(rt);
}

/* A child posts n records and closes its end at once: every record arrives,
 * in order, then the close (reason ECLOSED), then on_exit. */
static void child_messages_before_its_end(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.n = ktest_scaled(100000, 5000)};
  weft_child_options_t o = entry_opts("burst", &k);
  o.msg = ctl_new("n", k.n);
  o.on_message = kid_count;
  kid_spawn(&k, &o, NULL);
  run(rt);
  kid_dump("burst", &k);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.recv, k.n);
  assert_int_equal(k.bad, 0);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.closes_at_exit, 1);
  assert_int_equal(k.reason, WEFT_ECLOSED);
  ktest_live_finish(rt);
}

/* ---- the first message -------------------------------------------------------- */

static void close_on_second_reply(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  kid_keep(p, m);
  if (k->nreply == 2)
    CHECK_RC(weft_port_close(p), 0);
}

static void data_arrives_first(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {0};
  weft_child_options_t o = entry_opts("echo", &k);
  o.msg = ctl_new("data", 42);
  o.on_message = close_on_second_reply;
  kid_spawn(&k, &o, NULL);
  /* Posted right after the spawn returned: it must come second. */
  assert_int_equal(weft_port_post(k.port, ctl_new("seq", 1)), 0);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.nreply, 2);
  assert_int_equal(ctl_get(k.reply[0], "data"), 42);
  assert_int_equal(ctl_get(k.reply[1], "seq"), 1);
  kid_free_replies(&k);
  ktest_live_finish(rt);
}

/* ---- a 256 MiB buffer by memfd ------------------------------------------------- */

static void big_buffer_by_memfd(void **state) {
  (void)state;
  /* The message weighs 256 MiB: raise the byte bound of every port (the
   * transport's own port included) above it. */
  weft_runtime_options_t ro = {.port_hwm_bytes = 4 * BIG_LEN};
  weft_runtime_t *rt = ktest_live_runtime_new(&ro);
  main_ctx = weft_runtime_main(rt);
  weft_buf_t *b = NULL;
  assert_int_equal(weft_buf_new(&b, BIG_LEN), 0);
  void *data = NULL;
  size_t len = 0;
  assert_int_equal(weft_buf_bytes(b, &data, &len), 0);
  assert_int_equal(len, BIG_LEN);
  uint64_t *w = data;
  size_t words = BIG_LEN / 8, hashed = BIG_HASHED / 8;
  for (size_t i = 0; i < words; i++)
    w[i] = pattern_word(i);
  uint64_t sum = 14695981039346656037ull;
  for (size_t i = 0; i < hashed; i++)
    sum = hash_step(sum, pattern_word(i));
  for (size_t i = words - hashed; i < words; i++)
    sum = hash_step(sum, pattern_word(i));

  kid_t k = {0};
  weft_child_options_t o = entry_opts("bigbuf", &k);
  o.on_message = close_on_second_reply;
  kid_spawn(&k, &o, NULL);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "big"), 0);
  assert_int_equal(weft_msg_add_buf(m, b), 0);
  assert_true(weft_buf_is_detached(b)); /* the bytes moved into the message */
  assert_int_equal(weft_buf_len(b), 0);
  assert_null(weft_buf_ptr(b));
  assert_int_equal(weft_msg_add_buf(m, b), WEFT_EDETACHED);
  weft_buf_free(b);
  assert_int_equal(weft_port_post(k.port, m), 0);
  /* A second message so that close_on_second_reply closes after both. */
  weft_buf_t *b2 = NULL;
  assert_int_equal(weft_buf_new(&b2, BIG_LEN), 0);
  assert_int_equal(weft_buf_bytes(b2, &data, &len), 0);
  w = data;
  for (size_t i = 0; i < words; i++)
    w[i] = pattern_word(i);
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_str(m, NULL, "big"), 0);
  assert_int_equal(weft_msg_add_buf(m, b2), 0);
  weft_buf_free(b2);
  assert_int_equal(weft_port_post(k.port, m), 0);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.nreply, 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(ctl_get(k.reply[i], "len"), BIG_LEN);
    assert_int_equal(ctl_get(k.reply[i], "bad"), 0);
    assert_true(ctl_get(k.reply[i], "sum") == sum);
  }
  kid_free_replies(&k);
  ktest_live_finish(rt);
}

/* ---- a socket to a child ------------------------------------------------------- */

static struct {
  uv_tcp_t server, client, accepted;
  uv_connect_t conn;
  uv_write_t wreq;
  char got[8];
  size_t got_len;
  int closed;
  kid_t *k;
} tt;

static void tt_closed(uv_handle_t *h) {
  (void)h;
  tt.closed++;
}

static void tt_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = tt.got + tt.got_len;
  buf->len = sizeof(tt.got) - tt.got_len;
}

static void tt_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n > 0)
    tt.got_len += (size_t)n;
  if (n < 0 || tt.got_len >= 4) {
    uv_read_stop(s);
    uv_close((uv_handle_t *)s, tt_closed);
  }
}

static void tt_written(uv_write_t *req, int status) {
  (void)req;
  CHECK_RC(status, 0);
}

static void tt_connected(uv_connect_t *req, int status) {
  CHECK_RC(status, 0);
  static char ping[] = "ping";
  uv_buf_t b = uv_buf_init(ping, 4);
  CHECK_RC(uv_write(&tt.wreq, req->handle, &b, 1, tt_written), 0);
  CHECK_RC(uv_read_start(req->handle, tt_alloc, tt_read), 0);
}

static void tt_connection(uv_stream_t *server, int status) {
  CHECK_RC(status, 0);
  CHECK_RC(uv_tcp_init(server->loop, &tt.accepted), 0);
  CHECK_RC(uv_accept(server, (uv_stream_t *)&tt.accepted), 0);
  uv_os_fd_t fd = -1;
  CHECK_RC(uv_fileno((uv_handle_t *)&tt.accepted, &fd), 0);
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  CHECK(dup_fd >= 0);
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  CHECK_RC(weft_msg_put_str(m, NULL, "serve"), 0);
  CHECK_RC(weft_msg_add_socket(m, dup_fd), 0);
  CHECK_RC(weft_port_post(tt.k->port, m), 0);
  /* Our copies go; the child holds the connection now. */
  uv_close((uv_handle_t *)&tt.accepted, tt_closed);
  uv_close((uv_handle_t *)server, tt_closed);
}

static void socket_served_by_child(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  uv_loop_t *loop = weft_ctx_loop(main_ctx);
  memset(&tt, 0, sizeof(tt));
  kid_t k = {0};
  tt.k = &k;
  weft_child_options_t o = entry_opts("sock", &k);
  o.on_message = kid_keep;
  kid_spawn(&k, &o, NULL);

  struct sockaddr_in addr;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_init(loop, &tt.server), 0);
  assert_int_equal(uv_tcp_bind(&tt.server, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&tt.server, 8, tt_connection), 0);
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  assert_int_equal(uv_tcp_getsockname(&tt.server, (struct sockaddr *)&bound, &blen), 0);
  assert_int_equal(uv_tcp_init(loop, &tt.client), 0);
  assert_int_equal(uv_tcp_connect(&tt.conn, &tt.client, (const struct sockaddr *)&bound,
                                  tt_connected), 0);
  run(rt);
  assert_int_equal(tt.closed, 3);
  assert_int_equal(tt.got_len, 4);
  assert_memory_equal(tt.got, "pong", 4);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.reason, WEFT_ECLOSED); /* the child closed its end */
  assert_int_equal(k.nreply, 0);
  ktest_live_finish(rt);
}

/* ---- credits: parent to child ---------------------------------------------------- */

static void let_child_read(kid_t *k) {
  CHECK_RC(weft_child_write(k->c, "go\n", 3), 0);
}

static void close_stdin_at_exit(weft_port_t *p, const weft_port_close_info_t *info) {
  kid_t *k = weft_port_data(p);
  kid_close(p, info);
  if (k->c != NULL)
    CHECK_RC(weft_child_close_stdin(k->c), 0);
}

static void credit_exhaustion_to_child(void **state) {
  (void)state;
  /* Every port here holds 64 messages: the transport's port too, so posts
   * fail soon after the child's window (4096) is spent. */
  weft_runtime_options_t ro = {.port_hwm_msgs = 64};
  weft_runtime_t *rt = ktest_live_runtime_new(&ro);
  main_ctx = weft_runtime_main(rt);
  /* Let the child read only at an EAGAIN after CHILD_WINDOW + 32 posts: at
   * most 64 wait in our stopped transport port, so nearly all the child's
   * window went out unread. (Posts stop for good at about CHILD_WINDOW + 64:
   * the window plus our port's bound.) */
  kid_t k = {.n = ktest_scaled(20000, 3 * CHILD_WINDOW), .close_when_sent = true,
             .on_release = let_child_read, .release_at = CHILD_WINDOW + 32};
  weft_child_options_t o = entry_opts("slowstart", &k);
  o.msg = ctl_new("n", k.n);
  o.on_message = kid_keep;
  o.stdio[0] = WEFT_STDIO_PIPE;
  kid_spawn(&k, &o, kid_drain);
  assert_int_equal(weft_port_on_close(k.port, close_stdin_at_exit), 0);
  kid_pump(&k);
  run(rt);
  kid_dump("slowstart", &k);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0); /* the child got n records in order */
  assert_true(k.released);
  /* Bounded: the child's window, what its stopped port holds, our port. */
  assert_true(k.sent_at_release >= CHILD_WINDOW + 32);
  assert_true(k.sent_at_release <= CHILD_WINDOW + 64 + 16 + 2); /* + what the child took in */
  assert_true(k.eagain >= 1);
  assert_true(k.drains >= k.eagain);
  assert_int_equal(k.sent, k.n);
  assert_int_equal(k.reason, 0);
  assert_int_equal(k.nreply, 0);
  ktest_live_finish(rt);
}

/* ---- credits: child to parent ------------------------------------------------------ */

static void start_on_e(weft_child_t *c, int fd, const char *line, size_t len) {
  kid_t *k = weft_child_data(c);
  if (line == NULL || fd != 1)
    return;
  CHECK(len == 1 && line[0] == 'E');
  if (k->released || k->port == NULL)
    return;
  k->released = true;
  k->pending_at_start = weft_port_pending(k->port);
  CHECK_RC(weft_port_start(k->port, kid_count), 0);
}

static void credit_exhaustion_from_child(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.close_when_received = true};
  k.n = ktest_scaled(20000, 2000);
  weft_child_options_t o = entry_opts("flood", &k);
  o.window_msgs = 64; /* what the child may send ahead */
  o.stdio[1] = WEFT_STDIO_PIPE;
  o.output_lines = true;
  o.on_output = start_on_e;
  weft_msg_t *d = NULL;
  assert_int_equal(weft_msg_new(&d), 0);
  assert_int_equal(weft_msg_put_map(d, 2), 0);
  assert_int_equal(weft_msg_put_u64(d, "n", k.n), 0);
  assert_int_equal(weft_msg_put_u64(d, "w", 64 + 64), 0);
  o.msg = d;
  /* No on_message: our port stays stopped until the child says "E". */
  kid_spawn(&k, &o, NULL);
  k.sent = k.n; /* we post nothing: close once n arrived */
  assert_int_equal(weft_port_set_hwm(k.port, 16, 0), 0);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0); /* the child met EAGAIN and drains */
  assert_true(k.released);
  /* A port fed by a process channel holds at most the channel's window
   * (64 here), whatever its own bound: credit returns as the program
   * consumes, so the reader never stops and control frames always get in. */
  assert_true(k.pending_at_start <= 64 + 1);
  assert_int_equal(k.recv, k.n);
  assert_int_equal(k.bad, 0);
  assert_int_equal(k.reason, 0);
  ktest_live_finish(rt);
}

/* ---- SIGKILL mid-stream ---------------------------------------------------------------- */

static void kill_child(kid_t *k) {
  CHECK_RC(weft_child_kill(k->c, SIGKILL), 0);
}

static kid_t second;

static void second_child(kid_t *k) {
  (void)k;
  memset(&second, 0, sizeof(second));
  weft_child_options_t o = entry_opts("echo", &second);
  o.on_message = close_on_second_reply;
  int rc = weft_child_spawn(main_ctx, &o, &second.c);
  CHECK_RC(rc, 0);
  if (rc != 0)
    return;
  second.port = weft_child_port(second.c);
  weft_port_set_data(second.port, &second);
  CHECK_RC(weft_port_on_close(second.port, kid_close), 0);
  CHECK_RC(weft_port_post(second.port, ctl_new("seq", 1)), 0);
  CHECK_RC(weft_port_post(second.port, ctl_new("seq", 2)), 0);
}

static void sigkill_mid_stream(void **state) {
  (void)state;
  /* Small port bounds: posts fail soon after the child's window is spent, so
   * it dies with thousands of messages sent and not acknowledged. */
  weft_runtime_options_t ro = {.port_hwm_msgs = 64};
  weft_runtime_t *rt = ktest_live_runtime_new(&ro);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.n = UINT64_MAX, .on_release = kill_child, .after_exit = second_child,
             .release_at = CHILD_WINDOW};
  weft_child_options_t o = entry_opts("hold", &k);
  o.on_message = kid_keep;
  kid_spawn(&k, &o, kid_drain);
  kid_pump(&k);
  run(rt);
  kid_dump("hold", &k);
  assert_true(k.released);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.sig, SIGKILL);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.reason, WEFT_EPEERDIED);
  assert_true(k.undelivered > 0);
  assert_true(k.undelivered <= k.sent);
  assert_int_equal(k.nreply, 0);
  /* We were waiting for a drain when the child died: it came, and the next
   * post said the channel had ended. */
  assert_int_equal(k.closed_after_drain, 1);
  /* The runtime went on: a second child worked. */
  assert_int_equal(second.exits, 1);
  assert_int_equal(second.status, 0);
  assert_int_equal(second.sig, 0);
  assert_int_equal(second.nreply, 2);
  assert_int_equal(ctl_get(second.reply[0], "seq"), 1);
  assert_int_equal(ctl_get(second.reply[1], "seq"), 2);
  kid_free_replies(&second);
  ktest_live_finish(rt);
}

/* ---- exit codes, signals, spawn errors ---------------------------------------------------- */

static void run_entry(weft_runtime_t *rt, kid_t *k, const char *entry) {
  weft_child_options_t o = entry_opts(entry, k);
  o.on_message = kid_keep;
  kid_spawn(k, &o, NULL);
  run(rt);
  assert_int_equal(k->exits, 1);
  assert_int_equal(k->closes, 1);
  assert_int_equal(k->closes_at_exit, 1);
}

static void exit_codes_and_signals(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {0};
  run_entry(rt, &k, "ret7");
  assert_int_equal(k.status, 7);
  assert_int_equal(k.sig, 0);
  assert_int_equal(k.reason, WEFT_ECLOSED); /* closed in order as it ended */

  memset(&k, 0, sizeof(k));
  run_entry(rt, &k, "sigterm");
  assert_int_equal(k.status, 0);
  assert_int_equal(k.sig, SIGTERM);
  assert_int_equal(k.reason, WEFT_EPEERDIED);

  memset(&k, 0, sizeof(k));
  run_entry(rt, &k, "no-such-entry");
  assert_int_equal(k.status, CHILD_EXIT_NOENTRY);
  assert_int_equal(k.sig, 0);
  ktest_live_finish(rt);
}

static void spawn_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {0};
  weft_child_t *c = NULL;
  static const char *const missing[] = {"/nonexistent/weft-no-such-program",
                                        "weft-no-such-program-on-path"};
  for (size_t i = 0; i < 2; i++) {
    weft_child_options_t o = {.file = missing[i], .on_exit = kid_exit, .data = &k};
    o.msg = ctl_new("data", 1);
    assert_int_equal(weft_child_spawn(main_ctx, &o, &c), UV_ENOENT);
    /* All or nothing: the data message is still ours. */
    assert_int_equal(ctl_get(o.msg, "data"), 1);
    weft_msg_free(o.msg);
    o.channel = WEFT_CHANNEL_NONE;
    assert_int_equal(weft_child_spawn(main_ctx, &o, &c), UV_ENOENT);
  }
  weft_child_options_t o = {0};
  assert_int_equal(weft_child_spawn(main_ctx, &o, &c), WEFT_EINVAL); /* no file, no entry */
  o.file = "/bin/true";
  assert_int_equal(weft_child_spawn(NULL, &o, &c), WEFT_EINVAL);
  assert_int_equal(weft_child_spawn(main_ctx, NULL, &c), WEFT_EINVAL);
  assert_int_equal(weft_child_spawn(main_ctx, &o, NULL), WEFT_EINVAL);
  assert_int_equal(weft_child_kill(NULL, SIGTERM), WEFT_EINVAL);
  assert_null(weft_child_port(NULL));
  run(rt);
  assert_int_equal(k.exits, 0); /* no callback after a failed spawn */
  ktest_live_finish(rt);
}

/* The same with output pipes: the spawn made pipe handles, which must be
 * closed (and live until closed) although no callback will come. */
static void spawn_error_with_pipes(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {0};
  weft_child_t *c = NULL;
  weft_child_options_t o = {.file = "/nonexistent/weft-no-such-program", .on_exit = kid_exit,
                            .data = &k, .channel = WEFT_CHANNEL_NONE};
  o.stdio[1] = WEFT_STDIO_PIPE;
  o.stdio[2] = WEFT_STDIO_PIPE;
  assert_int_equal(weft_child_spawn(main_ctx, &o, &c), UV_ENOENT);
  run(rt); /* runs the close of whatever the failed spawn left */
  assert_int_equal(k.exits, 0);
  ktest_live_finish(rt);
}

/* ---- ports cannot cross ----------------------------------------------------------------------- */

static void close_on_last_seq(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  uint64_t seq = UINT64_MAX;
  (void)weft_msg_get_u64(m, "seq", &seq);
  kid_keep(p, m);
  if (seq == k->n)
    CHECK_RC(weft_port_close(p), 0);
}

static void ports_cannot_cross(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.n = 2};
  weft_child_options_t o = entry_opts("echo", &k);
  o.on_message = close_on_last_seq;
  kid_spawn(&k, &o, NULL);
  weft_port_t *pair[2];
  assert_int_equal(weft_channel_new(main_ctx, pair), 0);
  weft_msg_t *m = ctl_new("seq", 1);
  assert_int_equal(weft_msg_add_port(m, pair[1]), 0);
  assert_int_equal(weft_port_post(k.port, m), WEFT_ETRANSFER);
  assert_int_equal(weft_port_post(k.port, m), WEFT_ETRANSFER); /* and again */
  /* Still ours, port included: freeing it closes the port (its peer sees it). */
  assert_int_equal(weft_msg_xfer_kind(m, 0), WEFT_XFER_PORT);
  assert_false(weft_port_is_closed(pair[0]));
  weft_msg_free(m);
  assert_int_equal(weft_port_post(k.port, ctl_new("seq", 1)), 0);
  assert_int_equal(weft_port_post(k.port, ctl_new("seq", 2)), 0);
  assert_int_equal(weft_port_close(pair[0]), 0);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.nreply, 2);
  assert_int_equal(ctl_get(k.reply[0], "seq"), 1);
  assert_int_equal(ctl_get(k.reply[1], "seq"), 2);
  kid_free_replies(&k);
  ktest_live_finish(rt);
}

/* The message refused above, its port taken back and posted again: it has an
 * empty transfer slot now, and must still reach the child (post said 0). */
static void retry_after_taking_the_port_back(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  main_ctx = weft_runtime_main(rt);
  kid_t k = {.n = 2};
  weft_child_options_t o = entry_opts("echo", &k);
  o.on_message = close_on_last_seq;
  kid_spawn(&k, &o, NULL);
  weft_port_t *pair[2];
  assert_int_equal(weft_channel_new(main_ctx, pair), 0);
  weft_msg_t *m = ctl_new("seq", 1);
  assert_int_equal(weft_msg_add_port(m, pair[1]), 0);
  assert_int_equal(weft_port_post(k.port, m), WEFT_ETRANSFER);
  weft_port_t *back = NULL;
  assert_int_equal(weft_msg_take_port(m, 0, &back), 0);
  assert_ptr_equal(back, pair[1]);
  assert_int_equal(weft_msg_xfer_kind(m, 0), 0);
  assert_int_equal(weft_port_post(k.port, m), 0);
  assert_int_equal(weft_port_post(k.port, ctl_new("seq", 2)), 0);
  assert_int_equal(weft_port_close(back), 0);
  assert_int_equal(weft_port_close(pair[0]), 0);
  run(rt);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  int n = k.nreply;
  uint64_t first = n > 0 ? ctl_get(k.reply[0], "seq") : 0;
  kid_free_replies(&k);
  assert_int_equal(n, 2); /* seq 2 came back: seq 1 must have come first */
  assert_int_equal(first, 1);
  ktest_live_finish(rt);
}

/* ---- stdio ------------------------------------------------------------------------------------- */

static struct {
  char out[2][256];
  size_t len[2];
  char lines[2][8][16];
  int nlines[2];
  int eofs[2];
  int exits;
  int64_t status;
  int sig;
  int eofs_at_exit;
} io;

static void io_chunk(weft_child_t *c, int fd, const char *p, size_t n) {
  (void)c;
  CHECK(fd == 1 || fd == 2);
  int i = fd == 2;
  if (p == NULL) {
    CHECK(n == 0);
    io.eofs[i]++;
    return;
  }
  CHECK(io.eofs[i] == 0);
  CHECK(n > 0 && io.len[i] + n <= sizeof(io.out[i]));
  if (n > 0 && io.len[i] + n <= sizeof(io.out[i])) {
    memcpy(io.out[i] + io.len[i], p, n);
    io.len[i] += n;
  }
}

static void io_line(weft_child_t *c, int fd, const char *p, size_t n) {
  (void)c;
  int i = fd == 2;
  if (p == NULL) {
    io.eofs[i]++;
    return;
  }
  CHECK(io.eofs[i] == 0);
  CHECK(memchr(p, '\n', n) == NULL);
  CHECK(io.nlines[i] < 8 && n < 16);
  if (io.nlines[i] < 8 && n < 16)
    memcpy(io.lines[i][io.nlines[i]++], p, n);
}

static void io_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  io.exits++;
  io.status = status;
  io.sig = sig;
  io.eofs_at_exit = io.eofs[0] + io.eofs[1];
}

static const char *const sh_abc[] = {"sh", "-c", "printf 'a\\nb\\nc'; printf err >&2", NULL};

static void run_sh(weft_runtime_t *rt, const char *const *args, bool lines, weft_channel_t chan,
                   const char *const *env, const char *cwd) {
  memset(&io, 0, sizeof(io));
  weft_child_options_t o = {.file = "/bin/sh", .args = args, .channel = chan, .env = env,
                            .cwd = cwd, .on_exit = io_exit, .output_lines = lines,
                            .on_output = lines ? io_line : io_chunk};
  o.stdio[0] = WEFT_STDIO_IGNORE;
  o.stdio[1] = WEFT_STDIO_PIPE;
  o.stdio[2] = WEFT_STDIO_PIPE;
  weft_child_t *c = NULL;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &o, &c), 0);
  assert_true(chan == WEFT_CHANNEL_NONE ? weft_child_port(c) == NULL : weft_child_port(c) != NULL);
  run(rt);
  assert_int_equal(io.exits, 1);
  assert_int_equal(io.eofs[0], 1);
  assert_int_equal(io.eofs[1], 1);
  assert_int_equal(io.eofs_at_exit, 2); /* on_exit comes last */
}

static void stdio_chunks_and_lines(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  run_sh(rt, sh_abc, false, WEFT_CHANNEL_NONE, NULL, NULL);
  assert_int_equal(io.status, 0);
  assert_int_equal(io.len[0], 5);
  assert_memory_equal(io.out[0], "a\nb\nc", 5);
  assert_int_equal(io.len[1], 3);
  assert_memory_equal(io.out[1], "err", 3);

  run_sh(rt, sh_abc, true, WEFT_CHANNEL_NONE, NULL, NULL);
  assert_int_equal(io.nlines[0], 3); /* "c" has no '\n': delivered at EOF */
  assert_string_equal(io.lines[0][0], "a");
  assert_string_equal(io.lines[0][1], "b");
  assert_string_equal(io.lines[0][2], "c");
  assert_int_equal(io.nlines[1], 1);
  assert_string_equal(io.lines[1][0], "err");

  /* A program that is not weft, given a channel anyway: it ignores fd 3. */
  run_sh(rt, sh_abc, true, WEFT_CHANNEL_WEFT, NULL, NULL);
  assert_int_equal(io.status, 0);
  assert_int_equal(io.nlines[0], 3);
  ktest_live_finish(rt);
}

static void environment_and_cwd(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  static const char *const show[] = {
      "sh", "-c", "printf '%s|%s|%s|%s' \"$FOO\" \"$(pwd)\" \"${WEFT_CHANNEL_FD-unset}\" "
                  "\"${WEFT_ENTRY-unset}\"", NULL};
  /* The caller's channel variables never reach the child: the spawn's own do. */
  static const char *const env[] = {"FOO=bar", "WEFT_CHANNEL_FD=99", "WEFT_ENTRY=x",
                                    "NODE_CHANNEL_FD=98", NULL};
  run_sh(rt, show, false, WEFT_CHANNEL_NONE, env, "/");
  assert_int_equal(io.status, 0);
  io.out[0][io.len[0]] = '\0';
  assert_string_equal(io.out[0], "bar|/|unset|unset");
  run_sh(rt, show, false, WEFT_CHANNEL_WEFT, env, "/");
  io.out[0][io.len[0]] = '\0';
  assert_string_equal(io.out[0], "bar|/|3|unset");
  ktest_live_finish(rt);
}

static void stdin_pipe_write_and_close(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  memset(&io, 0, sizeof(io));
  static const char *const cat[] = {"cat", NULL};
  weft_child_options_t o = {.file = "cat", .args = cat, .channel = WEFT_CHANNEL_NONE,
                            .on_exit = io_exit, .on_output = io_chunk};
  o.stdio[0] = WEFT_STDIO_PIPE;
  o.stdio[1] = WEFT_STDIO_PIPE;
  o.stdio[2] = WEFT_STDIO_INHERIT;
  weft_child_t *c = NULL;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &o, &c), 0);
  assert_int_equal(weft_child_write(c, "hello ", 6), 0);
  assert_int_equal(weft_child_write(c, "world", 5), 0);
  assert_int_equal(weft_child_close_stdin(c), 0);
  assert_int_equal(weft_child_write(c, "late", 4), WEFT_EINVAL);
  run(rt);
  assert_int_equal(io.exits, 1);
  assert_int_equal(io.status, 0);
  assert_int_equal(io.len[0], 11);
  assert_memory_equal(io.out[0], "hello world", 11);
  assert_int_equal(io.eofs[0], 1);
  ktest_live_finish(rt);
}

/* A child with a stdin pipe that exits on its own, while the parent never
 * closes that pipe: on_exit must still come (Node closes stdin at exit). */
static void stdin_pipe_left_open(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  memset(&io, 0, sizeof(io));
  static const char *const quit[] = {"sh", "-c", "exit 4", NULL};
  weft_child_options_t o = {.file = "/bin/sh", .args = quit, .channel = WEFT_CHANNEL_NONE,
                            .on_exit = io_exit};
  o.stdio[0] = WEFT_STDIO_PIPE;
  weft_child_t *c = NULL;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &o, &c), 0);
  run(rt);
  assert_int_equal(io.exits, 1);
  assert_int_equal(io.status, 4);
  ktest_live_finish(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  (void)argc;
  self_argv0 = argv[0];
  ktest_init();
  child_main(); /* returns only in the test runner */
  const struct CMUnitTest tests[] = {
      T(records_both_ways_in_order),
      T(child_messages_before_its_end),
      T(data_arrives_first),
      T(big_buffer_by_memfd),
      T(socket_served_by_child),
      T(credit_exhaustion_to_child),
      T(credit_exhaustion_from_child),
      T(sigkill_mid_stream),
      T(exit_codes_and_signals),
      T(ports_cannot_cross),
      T(retry_after_taking_the_port_back),
      T(stdio_chunks_and_lines),
      T(environment_and_cwd),
      T(stdin_pipe_write_and_close),
      T(stdin_pipe_left_open),
      /* Last: a failed spawn may leave a broken loop or crash the binary. */
      T(spawn_errors),
      T(spawn_error_with_pipes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
