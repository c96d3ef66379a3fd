/* fuzz_channel.c: stateful libFuzzer target for a weft process channel.
 *
 * Each input is a script played against a real channel: weft__ipc_open on one
 * end of an AF_UNIX socketpair (the weft side, port A held by "the program"),
 * the fuzzer writing raw frames on the other end (the peer). The first byte
 * picks the window this side grants (1..8 messages, 512..8192 bytes); then
 * every byte is an operation, some followed by argument bytes:
 *
 *   peer:    HELLO (true or lying windows, wrong version, a second one), MSG
 *            (payload, inline buffers, memfd and socket items with and without
 *            the SCM_RIGHTS fds, fds nobody announced), CREDIT (any counts,
 *            near INT64_MAX / UINT64_MAX included), CLOSE, garbage bytes, a
 *            frame cut in two, reading what weft wrote
 *   program: post on A, start / stop A (consume or not), receive one, close A
 *   loop:    run the loop a bit
 *
 * At the end the peer hangs up and the loop runs (bounded) until the channel
 * is gone. Invariants, checked after every operation and at the end; a
 * violation aborts, so libFuzzer reports it:
 *   - no crash or undefined behaviour (the target and the library are built
 *     with -fsanitize=fuzzer,address,undefined);
 *   - port A never holds more than the granted window plus one message, in
 *     messages and in bytes (the receiver enforces the window);
 *   - A gets exactly one close event once the peer is gone, whatever state
 *     the program left it in (started, stopped, with messages waiting): at
 *     once, or, for a port stopped after an orderly close with messages
 *     waiting (they keep their place before the close), as soon as the
 *     program starts it again; and the transport frees itself;
 *   - no fd and no allocation outlives the input (/proc/self/fd is counted,
 *     weft's allocator is counted, weft_runtime_free returns 0).
 * A runtime is made and freed per input (its message pools would otherwise
 * hide leaks), which keeps an input at about a millisecond. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "weft_impl.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_FRAME (64u * 1024u)
#define END_SPIN_NS (2u * 1000u * 1000u * 1000u) /* the end must come well within this */

static void fail(const char *what) {
  fprintf(stderr, "fuzz_channel: %s\n", what);
  abort();
}

/* ---- counting allocator --------------------------------------------------- */

static atomic_long outstanding;

static void *c_malloc(size_t n) {
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&outstanding, 1);
  return p;
}

static void *c_calloc(size_t n, size_t s) {
  void *p = calloc(n, s);
  if (p)
    atomic_fetch_add(&outstanding, 1);
  return p;
}

static void *c_realloc(void *old, size_t n) {
  void *p = realloc(old, n);
  if (old == NULL && p != NULL)
    atomic_fetch_add(&outstanding, 1);
  return p;
}

static void c_free(void *p) {
  if (p) {
    atomic_fetch_sub(&outstanding, 1);
    free(p);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (weft_replace_allocator(c_malloc, c_realloc, c_calloc, c_free) != 0)
    fail("weft_replace_allocator");
  /* A first runtime opens what a process keeps for good (libuv's signal
   * pipe and the like): not a leak of any one input. */
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_runtime_free(rt) != 0)
    fail("warm-up runtime");
  return 0;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    fail("opendir /proc/self/fd");
  int n = 0;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

/* ---- the input ------------------------------------------------------------- */

typedef struct {
  const uint8_t *p;
  size_t n, at;
} input_t;

static uint8_t next(input_t *in) { return in->at < in->n ? in->p[in->at++] : 0; }

static uint32_t pick_u32(input_t *in) {
  static const uint32_t table[] = {0, 1, 2, 7, 4096, 65535, INT32_MAX, UINT32_MAX};
  uint8_t b = next(in);
  if (b < 8)
    return table[b];
  return (uint32_t)next(in) << 24 | (uint32_t)next(in) << 16 | (uint32_t)next(in) << 8 |
         next(in);
}

static uint64_t pick_u64(input_t *in) {
  static const uint64_t table[] = {0,         1,          511,          4096,
                                   1u << 20,  INT64_MAX,  (uint64_t)INT64_MAX + 1,
                                   UINT64_MAX - 1, UINT64_MAX};
  uint8_t b = next(in);
  if (b < 9)
    return table[b];
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | next(in);
  return v;
}

/* ---- one run ----------------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  uv_loop_t *loop;
  weft_port_t *a;          /* valid while a_alive */
  weft__ipc_t *ipc;        /* valid until ipc_done */
  bool a_alive, a_started;
  int closes;              /* close events of A */
  bool ipc_done;
  int peer;                /* the fuzzer's end; -1 once it hung up */
  bool peer_dead;          /* writes failed: weft closed its end */
  uint32_t window_msgs;
  uint64_t window_bytes;
  uint64_t max_weight;     /* the heaviest message the peer sent */
  uv_idle_t alive;         /* keeps the loop running whatever A's state */
  uint8_t frame[MAX_FRAME + 64];
} run_t;

static run_t R;

static void on_a_message(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void on_a_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)info;
  if (p != R.a)
    fail("close event for another port");
  R.closes++;
  R.a_alive = false;
}

static void on_idle(uv_idle_t *h) { (void)h; }

static void on_ipc_done(weft__ipc_t *ipc, void *data) {
  (void)ipc;
  (void)data;
  if (R.ipc_done)
    fail("transport finished twice");
  R.ipc_done = true;
}

/* Read and drop what weft wrote (its HELLO, credits, the program's posts),
 * closing any fd that came with it. */
static void peer_drain(void) {
  if (R.peer < 0)
    return;
  for (int i = 0; i < 64; i++) {
    uint8_t buf[16384];
    union {
      char b[CMSG_SPACE(sizeof(int) * 64)];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(R.peer, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0)
      return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[64];
        memcpy(fds, CMSG_DATA(c), k * sizeof(int));
        for (size_t j = 0; j < k; j++)
          close(fds[j]);
      }
  }
}

static void run_loop(int turns) {
  for (int i = 0; i < turns; i++) {
    uv_run(R.loop, UV_RUN_NOWAIT);
    peer_drain();
  }
}

/* Write bytes as the peer (fds, if any, with the first byte). When the
 * socket is full the loop runs so weft reads; a weft that closed its end
 * makes the peer dead (nothing more is written). */
static void peer_write(const void *p, size_t n, const int *fds, int nfds) {
  const uint8_t *b = p;
  int spins = 0;
  while (n > 0 && !R.peer_dead && R.peer >= 0) {
    union {
      char buf[CMSG_SPACE(sizeof(int) * 4)];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)b, .iov_len = n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
      memset(&ctl, 0, sizeof ctl);
      mh.msg_control = ctl.buf;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t w = sendmsg(R.peer, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (++spins > 2000) {
        R.peer_dead = true; /* weft stopped reading: give up writing */
        return;
      }
      run_loop(1);
      continue;
    }
    if (w < 0) {
      R.peer_dead = true;
      return;
    }
    b += w;
    n -= (size_t)w;
    nfds = 0;
  }
}

/* A sealed memfd of len bytes (what a weft sender would pass), or, with
 * bad_seals, one without seals. */
static int make_memfd(size_t len, bool bad_seals) {
  int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    fail("memfd_create");
  if (ftruncate(fd, (off_t)len) != 0)
    fail("ftruncate");
  if (!bad_seals && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0)
    fail("F_ADD_SEALS");
  return fd;
}

static int make_socket(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    fail("socketpair");
  close(sv[1]);
  return sv[0];
}

static void op_hello(input_t *in) {
  uint8_t flags = next(in);
  uint32_t mf = flags & 1 ? pick_u32(in) : MAX_FRAME;
  uint32_t wm = flags & 2 ? pick_u32(in) : 64;
  uint64_t wb = flags & 4 ? pick_u64(in) : 1u << 20;
  uint8_t b[32];
  int n = weft__wire_put_hello(b, sizeof b, mf, wm, wb);
  if (n <= 0)
    fail("put_hello");
  if (flags & 8)
    b[4] = next(in); /* any version */
  peer_write(b, (size_t)n, NULL, 0);
}

/* A MSG frame: a payload of 1..256 bytes, up to three items; each item is
 * inline (0..1024 bytes), a memfd or a socket, and the fds travel or not. */
static void op_msg(input_t *in) {
  uint8_t shape = next(in);
  size_t payload = 1 + (size_t)next(in);
  uint16_t nx = shape & 3;
  weft__wire_xfer_t x[3];
  int fds[4];
  int nfds = 0;
  uint16_t announced = 0;
  uint64_t weight = payload;
  for (uint16_t i = 0; i < nx; i++) {
    uint8_t k = next(in);
    switch (k % 3) {
    case 0:
      x[i].kind = WEFT__WIRE_X_INLINE;
      x[i].len = (uint64_t)next(in) * 4;
      x[i].data = R.frame; /* bytes do not matter */
      weight += x[i].len;
      break;
    case 1:
      x[i].kind = WEFT__WIRE_X_MEMFD;
      x[i].len = 1 + (uint64_t)next(in) * 16;
      announced++;
      if (!(k & 8))
        fds[nfds++] = make_memfd(k & 16 ? 1 : (size_t)x[i].len, (k & 32) != 0);
      weight += x[i].len;
      break;
    default:
      x[i].kind = WEFT__WIRE_X_SOCKET;
      x[i].len = 0;
      announced++;
      if (!(k & 8))
        fds[nfds++] = make_socket();
      break;
    }
  }
  if (shape & 4)
    fds[nfds++] = make_socket(); /* an fd nobody announced */
  if (weight > R.max_weight)
    R.max_weight = weight;
  int head = weft__wire_put_msg_head(R.frame, sizeof R.frame, x, nx, payload, announced);
  if (head <= 0)
    fail("put_msg_head");
  if (shape & 8)
    weft__wire_be16(R.frame + 6, (uint16_t)(announced + (shape & 16 ? 1 : 0xffff))); /* lying nfds */
  size_t n = (size_t)head;
  for (uint16_t i = 0; i < nx; i++)
    if (x[i].kind == WEFT__WIRE_X_INLINE) {
      memset(R.frame + n, 0xa5, (size_t)x[i].len);
      n += (size_t)x[i].len;
    }
  memset(R.frame + n, 0xc0, payload); /* msgpack nils; the transport does not read them */
  n += payload;
  size_t cut = shape & 32 ? n / 2 + 1 : n; /* a frame cut short (the rest never comes) */
  if (shape & 64)
    R.frame[4] = (uint8_t)(WEFT__WIRE_VERSION + 1);
  peer_write(R.frame, cut, fds, nfds);
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
}

static void op_credit(input_t *in) {
  uint8_t b[32];
  int n = weft__wire_put_credit(b, sizeof b, pick_u32(in), pick_u64(in));
  if (n <= 0)
    fail("put_credit");
  peer_write(b, (size_t)n, NULL, 0);
}

static void op_close(input_t *in) {
  uint8_t b[16];
  int n = weft__wire_put_close(b, sizeof b, (int32_t)pick_u32(in));
  if (n <= 0)
    fail("put_close");
  peer_write(b, (size_t)n, NULL, 0);
}

static void op_garbage(input_t *in) {
  uint8_t len = next(in) % 33, b[32];
  for (uint8_t i = 0; i < len; i++)
    b[i] = next(in);
  peer_write(b, len, NULL, 0);
}

/* A frame header announcing a length, with part of its body: the peer then
 * goes on with other frames, which the decoder reads as this body. */
static void op_header(input_t *in) {
  uint8_t b[16];
  weft__wire_be32(b, pick_u32(in));
  b[4] = WEFT__WIRE_VERSION;
  b[5] = next(in);
  weft__wire_be16(b + 6, next(in) & 3);
  weft__wire_be64(b + 8, 0);
  peer_write(b, 8 + next(in) % 9, NULL, 0);
}

static void op_post(input_t *in) {
  uint8_t k = 1 + next(in) % 16;
  for (uint8_t i = 0; i < k && R.a_alive; i++) {
    weft_msg_t *m;
    if (weft_msg_new(&m) != 0)
      fail("weft_msg_new");
    weft_msg_put_u64(m, NULL, i);
    int rc = weft_port_post(R.a, m);
    if (rc != 0) {
      weft_msg_free(m);
      if (rc != WEFT_EAGAIN && rc != WEFT_ECLOSED)
        fail("post on A: unexpected error");
      break;
    }
  }
}

static void op_program(input_t *in) {
  if (!R.a_alive)
    return;
  weft_msg_t *m;
  switch (next(in) % 4) {
  case 0:
    if (weft_port_start(R.a, on_a_message) == 0)
      R.a_started = true;
    break;
  case 1:
    weft_port_stop(R.a);
    R.a_started = false;
    break;
  case 2:
    if (weft_port_receive(R.a, &m) == 0)
      weft_msg_free(m);
    break;
  default:
    weft_port_close(R.a); /* the close event follows from the loop */
    break;
  }
}

/* A never holds more than the window it granted plus one message. pending
 * counts raised events too (close, drain): those are not messages. The byte
 * count covers messages of 512 bytes or more (port.c's BYTES_MIN). */
static void check_window(void) {
  if (!R.a_alive)
    return;
  int64_t n = atomic_load(&R.a->pending);
  uint32_t st = atomic_load(&R.a->state);
  n -= !!(st & WEFT__STATE_EV_CLOSE) + !!(st & WEFT__STATE_EV_DRAIN);
  int64_t bytes = atomic_load(&R.a->pending_bytes);
  if (n > (int64_t)R.window_msgs + 1) {
    fprintf(stderr, "fuzz_channel: %lld messages at A, window %u\n", (long long)n,
            R.window_msgs);
    fail("port A holds more messages than the window it granted");
  }
  if (bytes > 0 && (uint64_t)bytes > R.window_bytes + R.max_weight) {
    fprintf(stderr, "fuzz_channel: %lld bytes at A, window %llu\n", (long long)bytes,
            (unsigned long long)R.window_bytes);
    fail("port A holds more bytes than the window it granted");
  }
}

/* The peer hangs up; the channel must end: one close event at A, the
 * transport freed, within a bound (a hang is a failure). */
static void finish(bool start_first) {
  if (start_first && R.a_alive && weft_port_start(R.a, on_a_message) == 0)
    R.a_started = true;
  close(R.peer);
  R.peer = -1;
  uint64_t deadline = uv_hrtime() + END_SPIN_NS, resume = uv_hrtime() + 50u * 1000u * 1000u;
  while ((R.closes == 0 || !R.ipc_done) && uv_hrtime() < deadline) {
    uv_run(R.loop, UV_RUN_NOWAIT);
    check_window();
    /* A stopped port keeps what waits before an orderly close: the program
     * takes it once it starts the port again. */
    if (R.closes == 0 && R.ipc_done && !R.a_started && R.a_alive && uv_hrtime() > resume &&
        weft_port_start(R.a, on_a_message) == 0)
      R.a_started = true;
  }
  if (R.closes != 1 || !R.ipc_done) {
    fprintf(stderr, "fuzz_channel: %d close events, transport %s, A %s\n", R.closes,
            R.ipc_done ? "done" : "alive", R.a_started ? "started" : "stopped");
    if (!R.ipc_done)
      fprintf(stderr, "fuzz_channel: transport: b %s, poll %s%s, flush task %s, closed %d\n",
              R.ipc->b ? "open" : "closed", R.ipc->poll_open ? "open" : "closed",
              R.ipc->poll_closing ? " (closing)" : "", R.ipc->flush_queued ? "queued" : "idle",
              R.ipc->closed);
    if (!R.ipc_done)
      fprintf(stderr, "fuzz_channel: read_paused %d, poll events %d, eof %d, b stopped %d\n",
              R.ipc->read_paused, R.ipc->poll_events, R.ipc->eof, R.ipc->b_stopped);
    fail("the channel did not end after the peer hung up");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  input_t in = {.p = data, .n = size, .at = 0};
  int fds_before = count_fds();
  long allocs_before = atomic_load(&outstanding);

  memset(&R, 0, offsetof(run_t, alive));
  uint8_t cfg = next(&in);
  R.window_msgs = 1 + (cfg & 7);
  R.window_bytes = 512u * (1 + ((cfg >> 3) & 15));
  if (weft_runtime_new(&R.rt, NULL) != 0)
    fail("weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  R.loop = weft_ctx_loop(ctx);
  /* A stopped or closed port and the transport's handles do not keep a loop
   * alive (uv_run would not even poll): this handle stands for the rest of
   * a program that keeps running. */
  uv_idle_init(R.loop, &R.alive);
  uv_idle_start(&R.alive, on_idle);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    fail("socketpair");
  R.peer = sv[1];
  weft__ipc_options_t io = {.kind = WEFT__IPC_WEFT,
                            .max_frame = MAX_FRAME,
                            .window_msgs = R.window_msgs,
                            .window_bytes = R.window_bytes,
                            .on_done = on_ipc_done};
  if (weft__ipc_open(ctx, sv[0], &io, &R.ipc, &R.a) != 0)
    fail("weft__ipc_open");
  R.a_alive = true;
  if (weft_port_on_close(R.a, on_a_close) != 0)
    fail("weft_port_on_close");
  if (cfg & 0x80 && weft_port_start(R.a, on_a_message) == 0)
    R.a_started = true;

  while (in.at < in.n) {
    switch (next(&in) % 10) {
    case 0: op_hello(&in); break;
    case 1: case 2: op_msg(&in); break;
    case 3: op_credit(&in); break;
    case 4: op_close(&in); break;
    case 5: op_garbage(&in); break;
    case 6: op_header(&in); break;
    case 7: op_post(&in); break;
    case 8: op_program(&in); break;
    default: run_loop(1 + next(&in) % 8); break;
    }
    check_window();
  }
  finish((cfg & 0x40) != 0);

  uv_close((uv_handle_t *)&R.alive, NULL);
  if (weft_runtime_free(R.rt) != 0)
    fail("weft_runtime_free did not return 0");
  if (count_fds() != fds_before)
    fail("file descriptors leaked");
  if (atomic_load(&outstanding) != allocs_before)
    fail("weft allocations leaked");
  return 0;
}
