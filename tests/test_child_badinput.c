/* test_child_badinput.c: a child that is not weft writes raw bytes on its
 * channel (fd 3), and the parent's port must close with a reason that names
 * the fault, then the parent must go on working (a second, well-behaved child
 * exchanges messages in the same runtime).
 *
 * Faults: an unknown frame type and a length below the header (malformed
 * headers), text instead of frames, a wrong version, a frame over max_frame,
 * a frame cut short by EOF, an fd that no frame announced (alone, and
 * followed by a frame), a MSG announcing an fd that never came, a memfd item
 * whose fd is not a memfd, a MSG before the HELLO, a second HELLO.
 *
 * This binary is its own child: with WEFT_ENTRY=raw_* it writes raw bytes
 * with write(2)/sendmsg(2) and never creates a runtime (weft_runtime_new would
 * adopt fd 3); with WEFT_ENTRY=echo it is a weft child that echoes. A raw
 * child waits for its parent to hang up (bounded: 10 s, then exit 42), so
 * each fault is seen as bytes, not as an early EOF. Each test ends with
 * weft_runtime_free() == 0, no CHECK failed and no weft allocation
 * outstanding. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktest.h"
#include "rawpeer.h"
#include "testutil.h"
#include "weft.h"
#include "wire.h"

/* ============================================================================
 * The raw child: bytes on fd 3, no weft runtime.
 * ========================================================================== */

static int raw_fd = -1;

static void raw_send(const void *p, size_t n, int fd) { rawpeer_send(raw_fd, p, n, fd); }
static void raw_hello(int fd) { rawpeer_hello(raw_fd, 4096, 1u << 26, fd); }

/* A MSG frame: items given as raw descriptor bytes, then a msgpack nil. */
static void raw_msg(uint16_t nfds, uint16_t nxfer, const uint8_t *items, size_t items_len,
                    int fd) {
  uint8_t b[128];
  size_t body = 2 + items_len + 1;
  size_t n =
      weft__wire_header(b, (uint32_t)(4 + body), WEFT__WIRE_VERSION, WEFT__WIRE_MSG, nfds);
  weft__wire_be16(b + n, nxfer);
  n += 2;
  memcpy(b + n, items, items_len);
  n += items_len;
  b[n++] = 0xc0; /* nil */
  raw_send(b, n, fd);
}

static int open_devnull(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    exit(RAWPEER_EXIT_SETUP);
  return fd;
}

static void raw_main(const char *entry) {
  raw_fd = rawpeer_fd();
  uint8_t b[64];
  uint8_t items[16];
  if (strcmp(entry, "raw_badtype") == 0) {
    raw_hello(-1);
    raw_send(b, weft__wire_header(b, 4, WEFT__WIRE_VERSION, 99, 0), -1);
  } else if (strcmp(entry, "raw_shortlen") == 0) {
    raw_send(b, weft__wire_header(b, 2, WEFT__WIRE_VERSION, WEFT__WIRE_HELLO, 0), -1);
  } else if (strcmp(entry, "raw_text") == 0) {
    static const char text[] = "GET / HTTP/1.1\r\nHost: weft\r\n\r\n";
    raw_send(text, sizeof(text) - 1, -1);
  } else if (strcmp(entry, "raw_version") == 0) {
    int n = weft__wire_put_hello(b, sizeof(b), 1u << 20, 4096, 1u << 26);
    b[4] = WEFT__WIRE_VERSION + 1;
    raw_send(b, (size_t)n, -1);
  } else if (strcmp(entry, "raw_oversize") == 0) {
    raw_hello(-1);
    raw_send(b, weft__wire_header(b, 5000, WEFT__WIRE_VERSION, WEFT__WIRE_MSG, 0), -1);
  } else if (strcmp(entry, "raw_truncated") == 0) {
    raw_hello(-1);
    size_t n = weft__wire_header(b, 100, WEFT__WIRE_VERSION, WEFT__WIRE_MSG, 0);
    memset(b + n, 0, 10);
    raw_send(b, n + 10, -1);
    exit(0); /* EOF in the middle of the frame */
  } else if (strcmp(entry, "raw_strayfd") == 0) {
    raw_hello(open_devnull());
  } else if (strcmp(entry, "raw_strayfd_then_credit") == 0) {
    raw_hello(open_devnull());
    int n = weft__wire_put_credit(b, sizeof(b), 1, 1);
    raw_send(b, (size_t)n, -1);
  } else if (strcmp(entry, "raw_missingfd") == 0) {
    raw_hello(-1);
    items[0] = WEFT__WIRE_X_SOCKET;
    raw_msg(1, 1, items, 1, -1);
  } else if (strcmp(entry, "raw_notmemfd") == 0) {
    raw_hello(-1);
    items[0] = WEFT__WIRE_X_MEMFD;
    weft__wire_be64(items + 1, 4096);
    raw_msg(1, 1, items, 9, open_devnull());
  } else if (strcmp(entry, "raw_msg_first") == 0) {
    raw_msg(0, 0, items, 0, -1);
  } else if (strcmp(entry, "raw_hello_twice") == 0) {
    raw_hello(-1);
    raw_hello(-1);
  } else {
    exit(RAWPEER_EXIT_SETUP);
  }
  rawpeer_wait_hangup(raw_fd, 10000);
}

/* ---- the well-behaved child: "echo" ------------------------------------------- */

static void echo_msg(weft_port_t *p, weft_msg_t *m) {
  int rc = weft_port_post(p, m);
  if (rc != 0) {
    CHECK_RC(rc, 0);
    weft_msg_free(m);
  }
}

static int entry_echo(weft_ctx_t *ctx, weft_msg_t *data) {
  (void)data;
  weft_port_t *p = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  CHECK(p != NULL);
  CHECK_RC(weft_port_start(p, echo_msg), 0);
  return 0;
}

/* In a child process: run it and exit. Returns in the test runner. */
static void child_main(void) {
  const char *entry = getenv("WEFT_ENTRY");
  if (entry != NULL && strncmp(entry, "raw_", 4) == 0)
    raw_main(entry); /* no runtime: it would adopt fd 3 */
  weft_runtime_t *rt = NULL;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_runtime_register(rt, "echo", entry_echo) != 0)
    exit(RAWPEER_EXIT_SETUP);
  int code = 0;
  int rc = weft_runtime_child_entry(rt, &code);
  if (rc == WEFT_ENOENT) {
    if (weft_runtime_free(rt) != 0)
      abort();
    return;
  }
  if (rc != 0)
    code = RAWPEER_EXIT_SETUP;
  if (weft_runtime_free(rt) != 0 || testutil_alloc_outstanding() != 0 ||
      atomic_load(&ktest_failures) != 0)
    code = 90;
  exit(code);
}

/* ============================================================================
 * The parent side.
 * ========================================================================== */

static const char *self_argv0;

typedef struct {
  int exits, closes, msgs;
  int64_t status;
  int sig;
  int reason;
  /* the good child */
  uint64_t n, recv, bad;
} kid_t;

static void kid_exit(weft_child_t *c, int64_t status, int sig) {
  kid_t *k = weft_child_data(c);
  k->exits++;
  k->status = status;
  k->sig = sig;
}

static void kid_close(weft_port_t *p, const weft_port_close_info_t *info) {
  kid_t *k = weft_port_data(p);
  k->closes++;
  k->reason = info->reason;
}

static void kid_msg(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  k->msgs++;
  weft_msg_free(m);
}

static weft_port_t *spawn(weft_runtime_t *rt, const char *entry, uint32_t max_frame, kid_t *k,
                          weft_port_message_cb on_message) {
  static const char *args[2];
  args[0] = self_argv0;
  args[1] = NULL;
  weft_child_options_t o = {.entry_name = entry, .args = args, .max_frame = max_frame,
                            .on_exit = kid_exit, .on_message = on_message, .data = k};
  weft_child_t *c = NULL;
  assert_int_equal(weft_child_spawn(weft_runtime_main(rt), &o, &c), 0);
  weft_port_t *p = weft_child_port(c);
  assert_non_null(p);
  weft_port_set_data(p, k);
  assert_int_equal(weft_port_on_close(p, kid_close), 0);
  return p;
}

/* The well-behaved child: n records there and back, in order. */
static void good_msg(weft_port_t *p, weft_msg_t *m) {
  kid_t *k = weft_port_data(p);
  uint64_t v = UINT64_MAX;
  CHECK_RC(weft_msg_get_u64(m, NULL, &v), 0);
  if (v != k->recv)
    k->bad++;
  k->recv++;
  weft_msg_free(m);
  if (k->recv == k->n)
    CHECK_RC(weft_port_close(p), 0);
}

static void good_child_works(weft_runtime_t *rt) {
  kid_t k = {.n = 100};
  weft_port_t *p = spawn(rt, "echo", 0, &k, good_msg);
  for (uint64_t i = 0; i < k.n; i++) {
    weft_msg_t *m = NULL;
    assert_int_equal(weft_msg_new(&m), 0);
    assert_int_equal(weft_msg_put_u64(m, NULL, i), 0);
    assert_int_equal(weft_port_post(p, m), 0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.status, 0);
  assert_int_equal(k.sig, 0);
  assert_int_equal(k.recv, k.n);
  assert_int_equal(k.bad, 0);
  assert_int_equal(k.closes, 1);
}

/* One fault: the port closes naming it, the raw child sees the hang-up, and
 * then a good child works in the same runtime. */
static void fault(const char *entry, uint32_t max_frame, int want) {
  weft_runtime_t *rt = ktest_live_runtime_new(NULL);
  kid_t k = {0};
  (void)spawn(rt, entry, max_frame, &k, kid_msg);
  assert_int_equal(weft_runtime_run(rt), 0);
  if (k.reason != want || k.status != 0)
    fprintf(stderr, "%s: close reason %s (want %s), exit %lld\n", entry, weft_err_name(k.reason),
            weft_err_name(want), (long long)k.status);
  assert_int_equal(k.exits, 1);
  assert_int_equal(k.closes, 1);
  assert_int_equal(k.msgs, 0);
  assert_int_equal(k.reason, want);
  assert_int_equal(k.status, 0); /* 42: we never hung up */
  assert_int_equal(k.sig, 0);
  good_child_works(rt);
  ktest_live_finish(rt);
}

static void unknown_frame_type(void **state) {
  (void)state;
  fault("raw_badtype", 0, WEFT_EPROTO);
}

static void length_below_header(void **state) {
  (void)state;
  fault("raw_shortlen", 0, WEFT_EFRAMESIZE);
}

static void text_instead_of_frames(void **state) {
  (void)state;
  fault("raw_text", 0, WEFT_EFRAMESIZE); /* "GET " read as a length: 1.2 GB */
}

static void wrong_version(void **state) {
  (void)state;
  fault("raw_version", 0, WEFT_EVERSION);
}

static void frame_over_max_frame(void **state) {
  (void)state;
  fault("raw_oversize", 4096, WEFT_EFRAMESIZE);
}

static void frame_cut_by_eof(void **state) {
  (void)state;
  fault("raw_truncated", 0, WEFT_EPEERDIED);
}

static void fd_nobody_announced(void **state) {
  (void)state;
  fault("raw_strayfd", 0, WEFT_EPROTO);
}

static void fd_nobody_announced_then_frame(void **state) {
  (void)state;
  fault("raw_strayfd_then_credit", 0, WEFT_EPROTO);
}

static void announced_fd_missing(void **state) {
  (void)state;
  fault("raw_missingfd", 0, WEFT_EPROTO);
}

static void memfd_item_not_a_memfd(void **state) {
  (void)state;
  fault("raw_notmemfd", 0, WEFT_EPROTO);
}

static void msg_before_hello(void **state) {
  (void)state;
  fault("raw_msg_first", 0, WEFT_EPROTO);
}

static void second_hello(void **state) {
  (void)state;
  fault("raw_hello_twice", 0, WEFT_EPROTO);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_live_teardown)

int main(int argc, char **argv) {
  (void)argc;
  self_argv0 = argv[0];
  ktest_init();
  child_main(); /* returns only in the test runner */
  const struct CMUnitTest tests[] = {
      T(unknown_frame_type),
      T(length_below_header),
      T(text_instead_of_frames),
      T(wrong_version),
      T(frame_over_max_frame),
      T(frame_cut_by_eof),
      T(fd_nobody_announced),
      T(fd_nobody_announced_then_frame),
      T(announced_fd_missing),
      T(memfd_item_not_a_memfd),
      T(msg_before_hello),
      T(second_hello),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
