/* test_node_interop.c: weft against the real Node.js, both directions, over
 * Node's 'json' IPC serialization (runtime/ipc_node.c; the wire in the shared
 * reference node-ipc-json.md).
 *
 * weft parent, Node child (weft_child_spawn, WEFT_CHANNEL_NODE, a script from
 * tests/node/):
 *  - every JSON type both ways, top-level scalars, Buffers <-> bins;
 *  - 10k messages echoed in order with tiny port bounds (backpressure on post
 *    and on read); a 1.5 MB line weft -> Node -> weft;
 *  - a burst of lines arriving coalesced, and a 1.8 MB line of multi-byte
 *    UTF-8 arriving in many reads (characters cut between reads);
 *  - on_exit comes last: after every message and the port's close callback,
 *    also for a port the program had stopped when the child exited;
 *  - sockets weft -> Node (NODE_HANDLE net.Native, 8 in a row, each followed
 *    by a message that must wait for Node's ACK), including while our reader
 *    is paused, and while our program takes no input until its output drains;
 *  - a socket Node -> weft (net.Socket with a key: Node's getConnections and
 *    server.close then depend on weft's NODE_SOCKET_* answers);
 *  - what cannot reach Node: refused at post, or dropped and counted;
 *  - a line over opts.max_frame (WEFT_EFRAMESIZE; the parent carries on);
 *  - a killed Node child.
 * Disconnect is EOF: the port closes with WEFT_ECLOSED.
 *
 * Node parent, weft child: tests/node/spawn_weft.js spawns this very binary
 * with `--node-child` and an 'ipc' stdio slot; in that mode main() runs
 * node_child_main (echo every record with a field added, serve one socket
 * Node passes, exit when Node disconnects). The test runs node through
 * weft_exec and checks its output.
 *
 * Node is WEFT_NODE_EXECUTABLE, found at configure time; without it every test
 * skips with a message. Only real processes and sockets, no sleeps: each test
 * runs its loop until nothing is left (two tests that would otherwise hang on
 * a deadlock arm a deadline timer that kills the child), then
 * weft_runtime_free() == 0, no CHECK failed and no weft allocation
 * outstanding. A watchdog aborts a hang. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"

#define NODE WEFT_NODE_EXECUTABLE

/* ---- scaffolding: tests/support/ktest.h (CHECK, watchdog, leak check) ----- */

/* The end of every test, called right after its loop ran and before its own
 * asserts (which read what the callbacks recorded), so that a failed assert
 * leaves no runtime behind to break the next test. */
static void finish_runtime(weft_runtime_t *rt) { ktest_finish_runtime(rt); }

static weft_runtime_t *new_runtime_batch(uint32_t hwm_msgs, uint32_t batch) {
  weft_runtime_options_t o = {.port_hwm_msgs = hwm_msgs, .batch = batch};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &o), 0);
  return rt;
}

static weft_runtime_t *new_runtime(uint32_t hwm_msgs) {
  weft_runtime_options_t o = {.port_hwm_msgs = hwm_msgs};
  weft_runtime_t *rt = NULL;
  assert_int_equal(weft_runtime_new(&rt, &o), 0);
  return rt;
}

#define REQUIRE_NODE()                                                           \
  do {                                                                           \
    if (NODE[0] == '\0') {                                                       \
      print_message("node was not found at configure time: skipping\n");        \
      skip();                                                                    \
    }                                                                            \
  } while (0)

/* ---- what a test saw ------------------------------------------------------ */

#define MAX_DUMPS 16

typedef struct {
  int closes, close_reason;
  uint64_t close_undelivered;
  int exits, closes_at_exit;
  uint64_t msgs_at_exit;
  int64_t exit_status;
  int term_signal;
  uint64_t msgs;
  char *dumps[MAX_DUMPS]; /* the first messages, as text (see dump_msg) */
  /* ordering / burst */
  uint64_t total, sent, next, eagain;
  bool long_ok, done_seen;
  /* sockets */
  uv_tcp_t server;
  uv_write_t write_req;
  bool report_seen;
  bool close_when_done; /* close the port once every peer saw EOF and Node reported */
  weft_child_t *child;
  weft_port_t *port; /* its port, kept: weft_child_port is NULL once the channel is done */
  int pid;
  int spawned;
} seen_t;

static seen_t S;

static void free_dumps(void) {
  for (int i = 0; i < MAX_DUMPS; i++) {
    free(S.dumps[i]);
    S.dumps[i] = NULL;
  }
}

static void reset_seen(void) {
  free_dumps(); /* left by a test that failed */
  memset(&S, 0, sizeof(S));
  S.close_reason = 1;
  S.exit_status = -1;
}

static void on_port_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  S.closes++;
  S.close_reason = info->reason;
  S.close_undelivered = info->undelivered;
  S.port = NULL; /* gone once this returns */
}

static void on_child_exit(weft_child_t *c, int64_t status, int sig) {
  (void)c;
  S.exits++;
  S.exit_status = status;
  S.term_signal = sig;
  S.closes_at_exit = S.closes;
  S.msgs_at_exit = S.msgs;
}

/* Spawns `node tests/node/<script> [a1 [a2]]` with a Node channel. o may
 * preset on_message, data, max_frame; the rest is filled in here. */
static weft_child_t *spawn_node(weft_ctx_t *ctx, weft_child_options_t *o, const char *script,
                                const char *a1, const char *a2) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/tests/node/%s", WEFT_TEST_SOURCE_DIR, script);
  const char *args[] = {NODE, path, a1, a1 ? a2 : NULL, NULL};
  o->file = NODE;
  o->args = args;
  o->channel = WEFT_CHANNEL_NODE;
  if (o->on_exit == NULL)
    o->on_exit = on_child_exit;
  weft_child_t *c = NULL;
  int rc = weft_child_spawn(ctx, o, &c);
  CHECK_RC(rc, 0);
  if (rc == 0) {
    CHECK(weft_child_port(c) != NULL);
    CHECK_RC(weft_port_on_close(weft_child_port(c), on_port_close), 0);
    S.spawned++;
  }
  return c;
}

/* ---- msgpack values as text ------------------------------------------------ */

typedef struct {
  char *p;
  size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
      abort();
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  sb_add(b, tmp, (size_t)n);
}

/* The shortest %g that reads back as d (what JavaScript prints). */
static void sb_double(sbuf_t *b, double d) {
  char tmp[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
    if (strtod(tmp, NULL) == d)
      break;
  }
  sb_printf(b, "~%s", tmp);
}

/* JSON-like text: strings raw in quotes, doubles as ~x, bins as b[hex], so
 * that ints, doubles, strings and bins stay apart. */
static void dump_obj(sbuf_t *b, const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    sb_add(b, "null", 4);
    break;
  case MSGPACK_OBJECT_BOOLEAN:
    sb_add(b, o->via.boolean ? "true" : "false", o->via.boolean ? 4 : 5);
    break;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    sb_printf(b, "%llu", (unsigned long long)o->via.u64);
    break;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    sb_printf(b, "%lld", (long long)o->via.i64);
    break;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    sb_double(b, o->via.f64);
    break;
  case MSGPACK_OBJECT_STR:
    sb_add(b, "\"", 1);
    sb_add(b, o->via.str.ptr, o->via.str.size);
    sb_add(b, "\"", 1);
    break;
  case MSGPACK_OBJECT_BIN:
    sb_add(b, "b[", 2);
    for (uint32_t i = 0; i < o->via.bin.size; i++)
      sb_printf(b, "%02x", (unsigned)(uint8_t)o->via.bin.ptr[i]);
    sb_add(b, "]", 1);
    break;
  case MSGPACK_OBJECT_ARRAY:
    sb_add(b, "[", 1);
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      if (i)
        sb_add(b, ",", 1);
      dump_obj(b, &o->via.array.ptr[i]);
    }
    sb_add(b, "]", 1);
    break;
  case MSGPACK_OBJECT_MAP:
    sb_add(b, "{", 1);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      if (i)
        sb_add(b, ",", 1);
      dump_obj(b, &o->via.map.ptr[i].key);
      sb_add(b, ":", 1);
      dump_obj(b, &o->via.map.ptr[i].val);
    }
    sb_add(b, "}", 1);
    break;
  default:
    sb_add(b, "?ext", 4);
    break;
  }
}

/* The payload as text (malloc'd; the caller frees), or NULL if it is not
 * exactly one msgpack value. */
static char *dump_msg(weft_msg_t *m) {
  const msgpack_object *o;
  if (weft_msg_view(m, &o) != 0)
    return NULL;
  sbuf_t b = {0};
  dump_obj(&b, o);
  return b.p;
}

/* Records the first MAX_DUMPS messages as text. */
static void on_message_dump(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  if (S.msgs < MAX_DUMPS) {
    S.dumps[S.msgs] = dump_msg(m);
    CHECK(S.dumps[S.msgs] != NULL);
  }
  S.msgs++;
  weft_msg_free(m);
}

/* ---- the same bytes the Node scripts spell -------------------------------- */

/* tests/node/types_child.js TEXT. */
#define TEXT "line1\nline2\r\n\t\"quoted\" \\ back \x01 é 日本語 🎉"

/* "é€𝄞" (2-, 3- and 4-byte UTF-8: 9 bytes) repeat times, then "end". */
static char *utf8_pattern(size_t repeat, size_t *len) {
  static const char unit[] = "é€𝄞";
  size_t u = sizeof(unit) - 1;
  char *s = malloc(u * repeat + 4);
  if (s == NULL)
    abort();
  for (size_t i = 0; i < repeat; i++)
    memcpy(s + i * u, unit, u);
  memcpy(s + u * repeat, "end", 4);
  *len = u * repeat + 3;
  return s;
}

/* ---- types both ways --------------------------------------------------------- */

/* tests/node/types_child.js fromWeft, built with the public record builders. */
static weft_msg_t *types_record(void) {
  static const uint8_t bin[] = {0, 1, 127, 128, 255};
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 17);
  weft_msg_put_i64(m, "i", -42);
  weft_msg_put_u64(m, "u", 42);
  weft_msg_put_i64(m, "max_safe", 9007199254740991LL);
  weft_msg_put_i64(m, "neg_safe", -9007199254740991LL);
  weft_msg_put_f64(m, "f", 0.1);
  weft_msg_put_f64(m, "half", -2.5);
  weft_msg_put_f64(m, "huge", 1.7976931348623157e308);
  weft_msg_put_f64(m, "whole", 3.0);
  weft_msg_put_str(m, "s", TEXT);
  weft_msg_put_str(m, "empty", "");
  weft_msg_put_nil(m, "n");
  weft_msg_put_bool(m, "t", true);
  weft_msg_put_bool(m, "fa", false);
  weft_msg_put_array(m, "arr", 4); /* [1, "two", [3, {four: 4}], []] */
  weft_msg_put_i64(m, NULL, 1);
  weft_msg_put_str(m, NULL, "two");
  weft_msg_put_array(m, NULL, 2);
  weft_msg_put_i64(m, NULL, 3);
  weft_msg_put_map(m, 1);
  weft_msg_put_i64(m, "four", 4);
  weft_msg_put_array(m, NULL, 0);
  weft_msg_put_str(m, NULL, "m"); /* {a: {b: {c: {}}}} */
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, NULL, "a");
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, NULL, "b");
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, NULL, "c");
  weft_msg_put_map(m, 0);
  weft_msg_put_bin(m, "bin", bin, sizeof(bin));
  assert_int_equal(weft_msg_put_bin(m, "ebin", NULL, 0), 0);
  assert_int_equal(weft_msg_error(m), 0);
  return m;
}

/* Node sends its values, checks weft's record, answers {ok}, disconnects. */
static void types_both_ways(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  weft_child_options_t o = {.on_message = on_message_dump, .msg = types_record()};
  S.child = spawn_node(weft_runtime_main(rt), &o, "types_child.js", NULL, NULL);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);

  static const char *const want[] = {
      "{\"i\":-42,\"max_safe\":9007199254740991,\"f\":~0.1,\"whole\":3,\"s\":\"" TEXT "\","
      "\"empty\":\"\",\"n\":null,\"t\":true,\"fa\":false,\"arr\":[1,\"two\",[3,{\"four\":4}],[]],"
      "\"m\":{\"a\":{\"b\":{\"c\":{}}}},\"buf\":b[00017f80ff],\"nan\":null,\"inf\":null,"
      "\"date\":\"1970-01-01T00:00:00.000Z\"}",
      "{\"big\":~1e+20,\"small\":2}", /* 1e20 is past int64: that line's numbers are doubles */
      "\"plain string\"",
      "42",
      "null",
      "true",
      "[1,[2,[3]]]",
      "{\"ok\":true}", /* Node's deepStrictEqual of weft's record */
  };
  size_t nwant = sizeof(want) / sizeof(want[0]);
  assert_int_equal(S.msgs, nwant);
  for (size_t i = 0; i < nwant; i++) {
    if (S.dumps[i] == NULL || strcmp(S.dumps[i], want[i]) != 0)
      fprintf(stderr, "message %zu:\n  got  %s\n  want %s\n", i,
              S.dumps[i] ? S.dumps[i] : "(none)", want[i]);
    assert_non_null(S.dumps[i]);
    assert_string_equal(S.dumps[i], want[i]);
  }
  /* EOF: Node's disconnect closes the port (peer closed), then on_exit. */
  assert_int_equal(S.closes, 1);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exits, 1);
  assert_int_equal(S.closes_at_exit, 1);
  assert_int_equal(S.exit_status, 0);
  assert_int_equal(S.term_signal, 0);
  free_dumps();
}

/* ---- 10k messages in order, with backpressure ------------------------------- */

static weft_msg_t *seq_record(uint64_t seq) {
  char pad[64 * 2 + 1];
  size_t n = seq % 64;
  for (size_t i = 0; i < n; i++)
    memcpy(pad + 2 * i, "é", 2);
  pad[2 * n] = '\0';
  weft_msg_t *m = NULL;
  if (weft_msg_new(&m) != 0)
    abort();
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "seq", seq);
  weft_msg_put_str(m, "pad", pad);
  return m;
}

static void post_bye(weft_port_t *p) {
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, "op", "bye");
  int rc = weft_port_post(p, m);
  CHECK_RC(rc, 0);
  if (rc)
    weft_msg_free(m);
}

/* Posts until done or WEFT_EAGAIN; the drain callback calls it again. */
static void pump(weft_port_t *p) {
  while (S.sent < S.total) {
    weft_msg_t *m = seq_record(S.sent);
    int rc = weft_port_post(p, m);
    if (rc != 0)
      weft_msg_free(m);
    if (rc == WEFT_EAGAIN) {
      S.eagain++;
      return;
    }
    CHECK_RC(rc, 0);
    if (rc)
      return;
    S.sent++;
  }
}

static void on_echo_seq(weft_port_t *p, weft_msg_t *m) {
  uint64_t seq = UINT64_MAX;
  const char *pad;
  size_t len = 0;
  CHECK_RC(weft_msg_get_u64(m, "seq", &seq), 0);
  CHECK_RC(weft_msg_get_str(m, "pad", &pad, &len), 0);
  if (seq != S.next)
    fprintf(stderr, "echo %llu arrived when %llu was due\n", (unsigned long long)seq,
            (unsigned long long)S.next);
  CHECK(seq == S.next);
  CHECK(len == 2 * (seq % 64));
  weft_msg_free(m);
  if (++S.next == S.total)
    post_bye(p);
}

static void ordering_with_backpressure(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  /* 32 messages per port queue: posts hit WEFT_EAGAIN at once, and the
   * channel's reader pauses whenever our queue is full. */
  weft_runtime_t *rt = new_runtime(32);
  S.total = 10000;
  weft_child_options_t o = {.on_message = on_echo_seq};
  S.child = spawn_node(weft_runtime_main(rt), &o, "echo_child.js", NULL, NULL);
  assert_non_null(S.child);
  weft_port_t *p = weft_child_port(S.child);
  assert_int_equal(weft_port_on_drain(p, pump), 0);
  pump(p);
  assert_true(S.eagain > 0); /* the bound was met before the loop ran */
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(S.sent, S.total);
  assert_int_equal(S.next, S.total);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exits, 1);
  assert_int_equal(S.closes_at_exit, 1);
  assert_int_equal(S.exit_status, 0);
}

/* ---- a long line weft -> Node -> weft ----------------------------------------- */

#define LONG_REPEAT 170000 /* 1.53 MB of UTF-8 */

static void on_echo_long(weft_port_t *p, weft_msg_t *m) {
  size_t want_len;
  char *want = utf8_pattern(LONG_REPEAT, &want_len);
  const char *s;
  size_t len = 0;
  CHECK_RC(weft_msg_get_str(m, "long", &s, &len), 0);
  CHECK(len == want_len && memcmp(s, want, len) == 0);
  S.long_ok = len == want_len && memcmp(s, want, len) == 0;
  free(want);
  weft_msg_free(m);
  post_bye(p);
}

static void long_line_round_trip(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  size_t len;
  char *s = utf8_pattern(LONG_REPEAT, &len);
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  assert_int_equal(weft_msg_put_strn(m, "long", s, len), 0);
  free(s);
  weft_child_options_t o = {.on_message = on_echo_long, .msg = m};
  S.child = spawn_node(weft_runtime_main(rt), &o, "echo_child.js", NULL, NULL);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_true(S.long_ok);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exit_status, 0);
}

/* ---- a burst from Node: coalesced and split reads -------------------------------- */

#define BURST_COUNT 20000
#define BURST_REPEAT 200000 /* 1.8 MB of UTF-8: many reads, characters cut */

static void on_burst(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  uint64_t v;
  const char *s;
  size_t len = 0;
  if (weft_msg_get_u64(m, "seq", &v) == 0) {
    CHECK(v == S.next);
    CHECK(!S.long_ok);
    CHECK_RC(weft_msg_get_str(m, "pad", &s, &len), 0);
    CHECK(len == v % 61);
    S.next = v + 1;
  } else if (weft_msg_get_str(m, "long", &s, &len) == 0) {
    size_t want_len;
    char *want = utf8_pattern(BURST_REPEAT, &want_len);
    CHECK(S.next == BURST_COUNT);
    CHECK(len == want_len && memcmp(s, want, len) == 0);
    S.long_ok = true;
    free(want);
  } else if (weft_msg_get_u64(m, "done", &v) == 0) {
    CHECK(v == BURST_COUNT);
    CHECK(S.long_ok);
    S.done_seen = true;
  } else {
    char *d = dump_msg(m);
    fprintf(stderr, "unexpected message %s\n", d ? d : "(bad)");
    free(d);
    CHECK(false);
  }
  weft_msg_free(m);
}

static void burst_and_split_reads(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  char count[32], repeat[32];
  snprintf(count, sizeof(count), "%d", BURST_COUNT);
  snprintf(repeat, sizeof(repeat), "%d", BURST_REPEAT);
  weft_child_options_t o = {.on_message = on_burst};
  S.child = spawn_node(weft_runtime_main(rt), &o, "burst_child.js", count, repeat);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(S.next, BURST_COUNT);
  assert_true(S.long_ok);
  assert_true(S.done_seen);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.closes_at_exit, 1);
  assert_int_equal(S.exit_status, 0);
}

/* ---- on_exit comes last ------------------------------------------------------------ */

#define LAST_COUNT 3000

/* True once process pid has exited (a zombie, not yet reaped), read from
 * /proc; waits for it, up to 10 s. */
static bool wait_exited(int pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  uint64_t deadline = uv_hrtime() + 10ull * 1000000000ull;
  while (uv_hrtime() < deadline) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
      return true; /* already reaped */
    char buf[512];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    if (paren != NULL && (paren[2] == 'Z' || paren[2] == 'X'))
      return true;
    sched_yield();
  }
  return false;
}

static void on_count(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  CHECK(S.closes == 0);
  if (S.msgs++ == 0)
    CHECK(wait_exited(S.pid)); /* the first delivery returns once Node has exited */
  weft_msg_free(m);
}

static void on_closed_nothing(uv_handle_t *h);
static uv_check_t all_read_watch;

/* After each poll: once every message waits in the port (all read; Node is
 * about to exit), start delivering. */
static void on_all_read(uv_check_t *h) {
  if (S.port != NULL && weft_port_pending(S.port) < LAST_COUNT + 2)
    return;
  uv_check_stop(h);
  uv_close((uv_handle_t *)h, on_closed_nothing);
  if (S.port != NULL)
    CHECK_RC(weft_port_start(S.port, on_count), 0);
}

/* child.h: on_exit comes once, last: after the process exited and its
 * channel closed, "so every message it sent was delivered first". Node sends
 * a burst, disconnects and exits. The port starts only once the whole burst
 * waits in it, its first delivery holds the loop until Node has exited, and
 * it delivers one message per batch: the exit is seen long before the other
 * 3000 messages are delivered. They, then the port's close callback, must
 * still all come before on_exit. */
static void exit_comes_last(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime_batch(0, 1);
  char count[32];
  snprintf(count, sizeof(count), "%d", LAST_COUNT);
  weft_child_options_t o = {0}; /* not started: see on_all_read */
  S.child = spawn_node(weft_runtime_main(rt), &o, "burst_child.js", count, "10");
  assert_non_null(S.child);
  S.pid = weft_child_pid(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(uv_check_init(weft_ctx_loop(weft_runtime_main(rt)), &all_read_watch), 0);
  assert_int_equal(uv_check_start(&all_read_watch, on_all_read), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  if (S.msgs_at_exit != S.msgs || S.closes_at_exit != 1)
    fprintf(stderr, "on_exit came after %llu of %llu messages and %d close callbacks\n",
            (unsigned long long)S.msgs_at_exit, (unsigned long long)S.msgs, S.closes_at_exit);
  assert_int_equal(S.exits, 1);
  assert_int_equal(S.exit_status, 0);
  assert_int_equal(S.msgs, LAST_COUNT + 2); /* the records, the long one, {done} */
  assert_int_equal(S.closes, 1);
  assert_int_equal(S.msgs_at_exit, LAST_COUNT + 2);
  assert_int_equal(S.closes_at_exit, 1);
}

/* ---- a paused port when the child exits ----------------------------------------------- */

static void on_count_pausing(weft_port_t *p, weft_msg_t *m) {
  CHECK(S.closes == 0);
  if (S.msgs++ == 0)
    CHECK_RC(weft_port_stop(p), 0); /* backpressure: take no more for now */
  weft_msg_free(m);
}

static uv_check_t exit_watch;

/* After each poll: once the process has exited (weft_child_kill says
 * UV_ESRCH), take messages again. */
static void on_exit_watch(uv_check_t *h) {
  if (S.exits == 0 && weft_child_kill(S.child, 0) != UV_ESRCH)
    return;
  uv_check_stop(h);
  uv_close((uv_handle_t *)h, on_closed_nothing);
  if (S.port == NULL) { /* closed meanwhile: what it held is lost */
    fprintf(stderr, "the paused port was closed before it could be started again\n");
    return;
  }
  CHECK_RC(weft_port_start(S.port, on_count_pausing), 0);
}

/* A program stops its port for a while (weft_port_stop: "messages queue")
 * and the child exits meanwhile. When it starts the port again, every
 * message the child sent is still there, and on_exit comes after them. */
static void paused_port_keeps_messages(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  char count[32];
  snprintf(count, sizeof(count), "%d", LAST_COUNT);
  weft_child_options_t o = {.on_message = on_count_pausing};
  S.child = spawn_node(weft_runtime_main(rt), &o, "burst_child.js", count, "10");
  assert_non_null(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(uv_check_init(weft_ctx_loop(weft_runtime_main(rt)), &exit_watch), 0);
  assert_int_equal(uv_check_start(&exit_watch, on_exit_watch), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  if (S.msgs != LAST_COUNT + 2 || S.msgs_at_exit != S.msgs || S.closes_at_exit != 1)
    fprintf(stderr, "got %llu of %d messages; on_exit came after %llu and %d close callbacks\n",
            (unsigned long long)S.msgs, LAST_COUNT + 2, (unsigned long long)S.msgs_at_exit,
            S.closes_at_exit);
  assert_int_equal(S.exits, 1);
  assert_int_equal(S.exit_status, 0);
  assert_int_equal(S.msgs, LAST_COUNT + 2);
  assert_int_equal(S.closes, 1);
  assert_int_equal(S.msgs_at_exit, LAST_COUNT + 2);
  assert_int_equal(S.closes_at_exit, 1);
}

/* ---- sockets weft -> Node ------------------------------------------------------ */

#define HANDLES 8 /* sockets passed in a row, each followed by a plain message */

/* One end of a TCP connection on our loop, and what it read until EOF. */
typedef struct {
  uv_tcp_t tcp;
  uv_connect_t req;
  char got[64];
  size_t got_len;
  bool eof;
} peer_t;

static peer_t peers[HANDLES];
static uv_tcp_t accepted[HANDLES];
static int naccepted, npeers_eof;

static void on_closed_nothing(uv_handle_t *h) { (void)h; }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char chunk[256];
  buf->base = chunk;
  buf->len = sizeof(chunk);
}

static void maybe_close_port(void) {
  if (S.close_when_done && npeers_eof == HANDLES && S.report_seen) {
    S.close_when_done = false;
    weft_port_close(weft_child_port(S.child)); /* Node sees the disconnect, exits */
  }
}

/* Collects what a peer reads; at EOF closes it. */
static void on_peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  peer_t *pe = s->data;
  if (n > 0) {
    size_t room = sizeof(pe->got) - 1 - pe->got_len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(pe->got + pe->got_len, buf->base, take);
    pe->got_len += take;
    return;
  }
  if (n < 0) {
    CHECK(n == UV_EOF);
    pe->eof = true;
    npeers_eof++;
    uv_close((uv_handle_t *)s, on_closed_nothing);
    maybe_close_port();
  }
}

static void post_tag(weft_port_t *p, const char *tag, uint64_t seq, int fd) {
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "tag", tag);
  weft_msg_put_u64(m, "seq", seq);
  if (fd >= 0)
    CHECK_RC(weft_msg_add_socket(m, fd), 0);
  int rc = weft_port_post(p, m);
  CHECK_RC(rc, 0);
  if (rc)
    weft_msg_free(m);
}

/* Our server accepted one of our clients: hand a copy of the accepted socket
 * to Node and post a plain message right behind it. */
static void on_connection(uv_stream_t *server, int status) {
  CHECK_RC(status, 0);
  uv_tcp_t *a = &accepted[naccepted];
  uint64_t seq = 2 * (uint64_t)naccepted + 1;
  CHECK_RC(uv_tcp_init(server->loop, a), 0);
  CHECK_RC(uv_accept(server, (uv_stream_t *)a), 0);
  uv_os_fd_t fd = -1;
  CHECK_RC(uv_fileno((uv_handle_t *)a, &fd), 0);
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  CHECK(copy >= 0);
  weft_port_t *p = weft_child_port(S.child);
  post_tag(p, "sock", seq, copy);
  post_tag(p, "after", seq + 1, -1);
  uv_close((uv_handle_t *)a, on_closed_nothing); /* Node's copy is the connection now */
  if (++naccepted == HANDLES)
    uv_close((uv_handle_t *)server, on_closed_nothing);
}

static void on_peer_connected(uv_connect_t *req, int status) {
  CHECK_RC(status, 0);
  CHECK_RC(uv_read_start(req->handle, on_alloc, on_peer_read), 0);
}

static void on_handle_report(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  char want[512];
  int n = snprintf(want, sizeof(want), "{\"tag\":\"report\",\"order\":[");
  for (int i = 1; i <= 2 * HANDLES; i++)
    n += snprintf(want + n, sizeof(want) - (size_t)n, i > 1 ? ",%d" : "%d", i);
  snprintf(want + n, sizeof(want) - (size_t)n, "],\"handleTypes\":[\"TCP\"]}");
  char *d = dump_msg(m);
  if (d == NULL || strcmp(d, want) != 0)
    fprintf(stderr, "node reported %s\n  want %s\n", d ? d : "(bad)", want);
  CHECK(d != NULL && strcmp(d, want) == 0);
  free(d);
  weft_msg_free(m);
  S.report_seen = true;
  maybe_close_port();
}

/* HANDLES connections to ourselves; each accepted socket goes to Node (which
 * writes "pong" on it and closes it), each followed by a plain message that
 * must not overtake it (weft holds it until Node's NODE_HANDLE_ACK). */
static void handle_weft_to_node(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  memset(peers, 0, sizeof(peers));
  naccepted = npeers_eof = 0;
  weft_runtime_t *rt = new_runtime(0);
  uv_loop_t *loop = weft_ctx_loop(weft_runtime_main(rt));
  char count[16];
  snprintf(count, sizeof(count), "%d", HANDLES);
  S.close_when_done = true;
  weft_child_options_t o = {.on_message = on_handle_report};
  S.child = spawn_node(weft_runtime_main(rt), &o, "handle_recv_child.js", count, NULL);
  assert_non_null(S.child);

  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_init(loop, &S.server), 0);
  assert_int_equal(uv_tcp_bind(&S.server, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&S.server, HANDLES, on_connection), 0);
  assert_int_equal(uv_tcp_getsockname(&S.server, (struct sockaddr *)&bound, &blen), 0);
  for (int i = 0; i < HANDLES; i++) {
    assert_int_equal(uv_tcp_init(loop, &peers[i].tcp), 0);
    peers[i].tcp.data = &peers[i];
    assert_int_equal(uv_tcp_connect(&peers[i].req, &peers[i].tcp,
                                    (const struct sockaddr *)&bound, on_peer_connected),
                     0);
  }
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);

  assert_true(S.report_seen);
  assert_int_equal(naccepted, HANDLES);
  for (int i = 0; i < HANDLES; i++) {
    assert_true(peers[i].eof);
    assert_string_equal(peers[i].got, "pong"); /* written by Node on the passed socket */
  }
  assert_int_equal(S.closes, 1);
  assert_int_equal(S.close_reason, 0); /* we closed it */
  assert_int_equal(S.exit_status, 0);
}

/* ---- a handle while our reader is paused ---------------------------------------------- */

#define PAUSED_BURST 200
#define PAUSED_QUEUE 8 /* messages a port holds: the burst overflows it */

static uv_pipe_t paused_pipe;
static uv_timer_t deadline;
static bool deadline_hit;

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    size_t room = sizeof(peers[0].got) - 1 - peers[0].got_len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(peers[0].got + peers[0].got_len, buf->base, take);
    peers[0].got_len += take;
  } else if (n < 0) {
    peers[0].eof = true;
    uv_close((uv_handle_t *)s, on_closed_nothing);
  }
}

static void paused_maybe_bye(weft_port_t *p) {
  if (S.next == PAUSED_BURST && S.report_seen && !S.done_seen) {
    S.done_seen = true;
    uv_timer_stop(&deadline);
    uv_close((uv_handle_t *)&deadline, on_closed_nothing);
    post_bye(p);
  }
}

static void on_paused_message(weft_port_t *p, weft_msg_t *m) {
  uint64_t seq;
  const char *tag;
  size_t n;
  if (weft_msg_get_u64(m, "seq", &seq) == 0) {
    CHECK(seq == S.next);
    S.next = seq + 1;
    if (seq == 0 && S.sent == 0) {
      /* The reader has stopped by now (the burst overflowed our port):
       * answer with a socket, whose ACK must still be read. */
      int sv[2];
      CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
      CHECK_RC(uv_pipe_init(weft_ctx_loop(weft_port_ctx(p)), &paused_pipe, 0), 0);
      CHECK_RC(uv_pipe_open(&paused_pipe, sv[0]), 0);
      CHECK_RC(uv_read_start((uv_stream_t *)&paused_pipe, on_alloc, on_pipe_read), 0);
      post_tag(p, "sock", 1, sv[1]);
    }
  } else if (weft_msg_get_str(m, "tag", &tag, &n) == 0) {
    char *d = dump_msg(m);
    CHECK(d != NULL && strcmp(d, "{\"tag\":\"got-handle\",\"type\":\"Pipe\"}") == 0);
    free(d);
    S.report_seen = true;
  }
  weft_msg_free(m);
  paused_maybe_bye(p);
}

/* Not a synchronisation: a bound on a deadlock, so that the test fails
 * instead of hanging. */
static void on_deadline(uv_timer_t *t) {
  deadline_hit = true;
  fprintf(stderr, "deadlock: %llu of %d records, handle report %s; killing the child\n",
          (unsigned long long)S.next, PAUSED_BURST, S.report_seen ? "seen" : "not seen");
  uv_close((uv_handle_t *)t, on_closed_nothing);
  if (uv_is_active((uv_handle_t *)&paused_pipe))
    uv_close((uv_handle_t *)&paused_pipe, on_closed_nothing);
  if (S.port != NULL)
    weft_port_close(S.port);
  if (S.exits == 0)
    CHECK_RC(weft_child_kill(S.child, SIGKILL), 0);
}

/* The records are all in the channel: start taking them. */
static void on_sent_line(weft_child_t *c, int fd, const char *line, size_t len) {
  (void)c;
  if (fd == 1 && line != NULL && len == 4 && memcmp(line, "sent", 4) == 0 && S.port != NULL)
    CHECK_RC(weft_port_start(S.port, on_paused_message), 0);
}

/* Node floods us past our port's bound, so the channel's reader stops until
 * the port drains; we start the port only once every record is in the
 * channel (Node says "sent" on stdout), so this happens every time. The first
 * record is answered with a socket, and nothing may follow it until Node's
 * ACK has been read. The reader must resume once our port has room (the
 * drain event of the transport's port B), although B stopped itself to wait
 * for the ACK in the same turn in which that event was raised. */
static void handle_while_reader_paused(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  memset(peers, 0, sizeof(peers));
  deadline_hit = false;
  weft_runtime_t *rt = new_runtime(PAUSED_QUEUE);
  char count[16];
  snprintf(count, sizeof(count), "%d", PAUSED_BURST);
  weft_child_options_t o = {.on_output = on_sent_line,
                            .output_lines = true,
                            .stdio = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_INHERIT}};
  S.child = spawn_node(weft_runtime_main(rt), &o, "handle_burst_child.js", count, NULL);
  assert_non_null(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &deadline), 0);
  assert_int_equal(uv_timer_start(&deadline, on_deadline, 10000, 0), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_false(deadline_hit);
  assert_int_equal(S.next, PAUSED_BURST);
  assert_true(S.report_seen);
  peers[0].got[peers[0].got_len] = '\0';
  assert_string_equal(peers[0].got, "pong");
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exit_status, 0);
}

/* ---- not reading while our output is blocked -------------------------------------------- */

#define BLOCKED_POSTS 40

/* Posts records to Node until all are out or WEFT_EAGAIN. Once all are out,
 * our output is no longer blocked: start taking input. */
static void blocked_pump(weft_port_t *p) {
  while (S.sent < BLOCKED_POSTS) {
    weft_msg_t *m = seq_record(S.sent);
    int rc = weft_port_post(p, m);
    if (rc != 0)
      weft_msg_free(m);
    if (rc == WEFT_EAGAIN) {
      S.eagain++;
      return; /* output blocked: take no input until the drain callback */
    }
    CHECK_RC(rc, 0);
    if (rc)
      return;
    S.sent++;
  }
  CHECK_RC(weft_port_start(p, on_paused_message), 0);
}

static void on_sent_line_blocked(weft_child_t *c, int fd, const char *line, size_t len) {
  (void)c;
  if (fd != 1 || line == NULL || len != 4 || memcmp(line, "sent", 4) != 0 || S.port == NULL)
    return;
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK_RC(uv_pipe_init(weft_ctx_loop(weft_port_ctx(S.port)), &paused_pipe, 0), 0);
  CHECK_RC(uv_pipe_open(&paused_pipe, sv[0]), 0);
  CHECK_RC(uv_read_start((uv_stream_t *)&paused_pipe, on_alloc, on_pipe_read), 0);
  post_tag(S.port, "sock", 1, sv[1]);
  blocked_pump(S.port);
}

/* A program that takes no input while its output is blocked (a proxy, say):
 * it sends Node a socket and then records until WEFT_EAGAIN, and starts its
 * port only once the drain callback let it post them all. Node has flooded
 * the channel first, so our reader stops (our port is full) before it reaches
 * Node's NODE_HANDLE_ACK, and our output waits for that ACK. The channel must
 * still read the ACK, or neither side ever moves again. */
static void stop_reading_while_output_blocked(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  memset(peers, 0, sizeof(peers));
  deadline_hit = false;
  weft_runtime_t *rt = new_runtime(PAUSED_QUEUE);
  char count[16];
  snprintf(count, sizeof(count), "%d", PAUSED_BURST);
  weft_child_options_t o = {.on_output = on_sent_line_blocked,
                            .output_lines = true,
                            .stdio = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_INHERIT}};
  S.child = spawn_node(weft_runtime_main(rt), &o, "handle_burst_child.js", count, NULL);
  assert_non_null(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(weft_port_on_drain(S.port, blocked_pump), 0);
  assert_int_equal(uv_timer_init(weft_ctx_loop(weft_runtime_main(rt)), &deadline), 0);
  assert_int_equal(uv_timer_start(&deadline, on_deadline, 10000, 0), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_false(deadline_hit);
  assert_true(S.eagain > 0);
  assert_int_equal(S.sent, BLOCKED_POSTS);
  assert_int_equal(S.next, PAUSED_BURST);
  assert_true(S.report_seen);
  peers[0].got[peers[0].got_len] = '\0';
  assert_string_equal(peers[0].got, "pong");
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exit_status, 0);
}

/* ---- end of input behind waiting messages ------------------------------------- */

static int leave_sock_rc;

static void on_leave_message(weft_port_t *p, weft_msg_t *m) {
  uint64_t seq;
  CHECK_RC(weft_msg_get_u64(m, "seq", &seq), 0);
  CHECK(seq == S.next);
  S.next = seq + 1;
  if (seq == 0) {
    /* a socket: the reader reads on for its ACK, which never comes. If Node
     * hung up before we started reading, the channel has ended already (a
     * paused reader still sees the hang-up) and the post says so. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    close(sv[0]);
    weft_msg_t *sock = NULL;
    CHECK_RC(weft_msg_new(&sock), 0);
    weft_msg_put_map(sock, 2);
    weft_msg_put_str(sock, "tag", "sock");
    weft_msg_put_u64(sock, "seq", 1);
    CHECK_RC(weft_msg_add_socket(sock, sv[1]), 0);
    leave_sock_rc = weft_port_post(p, sock);
    CHECK(leave_sock_rc == 0 || leave_sock_rc == WEFT_ECLOSED);
    if (leave_sock_rc)
      weft_msg_free(sock);
  }
  weft_msg_free(m);
}

static void on_sent_line_leave(weft_child_t *c, int fd, const char *line, size_t len) {
  (void)c;
  if (fd == 1 && line != NULL && len == 4 && memcmp(line, "sent", 4) == 0 && S.port != NULL)
    CHECK_RC(weft_port_start(S.port, on_leave_message), 0);
}

/* Node writes more records than our port holds and hangs up; we start the
 * port once all are written and answer the first with a socket, so the
 * reader reads on (for the ACK) past what the port has room for and meets
 * Node's EOF while records wait in the transport. Every record must still
 * arrive, in order, before the close event, which counts our socket as
 * undelivered: ECLOSED if Node's EOF was in before the socket left port B
 * (a closed channel takes nothing more), EPEERDIED if it was written or
 * being written when Node hung up. */
static void eof_behind_waiting_messages(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  leave_sock_rc = 0;
  weft_runtime_t *rt = new_runtime(PAUSED_QUEUE);
  char count[16];
  snprintf(count, sizeof(count), "%d", PAUSED_BURST);
  weft_child_options_t o = {.on_output = on_sent_line_leave,
                            .output_lines = true,
                            .stdio = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_INHERIT}};
  S.child = spawn_node(weft_runtime_main(rt), &o, "handle_burst_child.js", count, "leave");
  assert_non_null(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(S.next, PAUSED_BURST);
  assert_int_equal(S.closes, 1);
  if (S.close_reason != WEFT_EPEERDIED)
    assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.close_undelivered, leave_sock_rc == 0 ? 1 : 0);
  assert_int_equal(S.exit_status, 0);
}

/* ---- a socket Node -> weft ------------------------------------------------------- */

static void on_ping_written(uv_write_t *req, int status) {
  (void)req;
  CHECK_RC(status, 0);
}

static void on_handle_from_node(weft_port_t *p, weft_msg_t *m) {
  const char *tag = NULL;
  size_t n = 0;
  CHECK_RC(weft_msg_get_str(m, "tag", &tag, &n), 0);
  if (n == 4 && memcmp(tag, "sock", 4) == 0) {
    CHECK(weft_msg_xfer_count(m) == 1);
    CHECK(weft_msg_xfer_kind(m, 0) == WEFT_XFER_SOCKET);
    uv_os_sock_t fd = -1;
    CHECK_RC(weft_msg_take_socket(m, 0, &fd), 0);
    peer_t *pe = &peers[0];
    CHECK_RC(uv_tcp_init(weft_ctx_loop(weft_port_ctx(p)), &pe->tcp), 0);
    pe->tcp.data = pe;
    CHECK_RC(uv_tcp_open(&pe->tcp, fd), 0);
    CHECK_RC(uv_read_start((uv_stream_t *)&pe->tcp, on_alloc, on_peer_read), 0);
    uv_buf_t b = uv_buf_init((char *)"ping", 4);
    CHECK_RC(uv_write(&S.write_req, (uv_stream_t *)&pe->tcp, &b, 1, on_ping_written), 0);
    S.msgs++;
  } else {
    char *d = dump_msg(m);
    CHECK(S.msgs == 1);
    CHECK(peers[0].eof);
    /* count 0: weft answered NODE_SOCKET_GET_COUNT; the message at all: it
     * answered NODE_SOCKET_NOTIFY_CLOSE, or server.close() would hang. */
    CHECK(d != NULL &&
          strcmp(d, "{\"tag\":\"done\",\"got\":\"ping\",\"count\":0,\"err\":null}") == 0);
    if (d == NULL || strstr(d, "\"count\":0,") == NULL)
      fprintf(stderr, "node reported %s\n", d ? d : "(bad)");
    free(d);
    S.report_seen = true;
  }
  weft_msg_free(m);
}

/* Node's server accepts its own client and sends the accepted net.Socket; we
 * open it on our loop and talk over it. */
static void handle_node_to_weft(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  memset(peers, 0, sizeof(peers));
  naccepted = npeers_eof = 0;
  weft_runtime_t *rt = new_runtime(0);
  weft_child_options_t o = {.on_message = on_handle_from_node};
  S.child = spawn_node(weft_runtime_main(rt), &o, "handle_send_child.js", NULL, NULL);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_true(peers[0].eof);
  assert_string_equal(peers[0].got, "pong"); /* Node's client answered on the passed socket */
  assert_true(S.report_seen);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.closes_at_exit, 1);
  assert_int_equal(S.exit_status, 0);
}

/* ---- a line over max_frame ----------------------------------------------------- */

static void on_after_echo(weft_port_t *p, weft_msg_t *m) {
  char *d = dump_msg(m);
  CHECK(d != NULL && strcmp(d, "{\"after\":\"oversized\"}") == 0);
  free(d);
  weft_msg_free(m);
  S.done_seen = true;
  post_bye(p);
}

/* The first child is gone: the parent carries on with a second one. */
static void on_oversized_exit(weft_child_t *c, int64_t status, int sig) {
  on_child_exit(c, status, sig);
  CHECK(S.msgs == 1 && S.dumps[0] != NULL && strcmp(S.dumps[0], "{\"hello\":1}") == 0);
  CHECK(S.closes == 1);
  CHECK(S.close_reason == WEFT_EFRAMESIZE);
  CHECK(status == 0 && sig == 0);
  weft_msg_t *m = NULL;
  CHECK_RC(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_str(m, "after", "oversized");
  weft_child_options_t o = {.on_message = on_after_echo, .msg = m};
  S.child = spawn_node(weft_ctx_current(), &o, "echo_child.js", NULL, NULL);
  if (S.child == NULL)
    weft_msg_free(m);
}

static void oversized_line(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  weft_child_options_t o = {.on_message = on_message_dump,
                            .on_exit = on_oversized_exit,
                            .max_frame = 64 * 1024};
  S.child = spawn_node(weft_runtime_main(rt), &o, "huge_child.js", "1048576", NULL);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(S.spawned, 2);
  assert_true(S.done_seen);
  assert_int_equal(S.exits, 2);
  assert_int_equal(S.closes, 2);
  assert_int_equal(S.close_reason, WEFT_ECLOSED); /* the second child's bye */
  assert_int_equal(S.exit_status, 0);
  free_dumps();
}

/* ---- what cannot reach Node ------------------------------------------------------- */

static void on_echo_after_refused(weft_port_t *p, weft_msg_t *m) {
  char *d = dump_msg(m);
  CHECK(S.msgs == 0 && d != NULL && strcmp(d, "{\"seq\":7,\"pad\":\"ééééééé\"}") == 0);
  free(d);
  weft_msg_free(m);
  S.msgs++;
  post_bye(p);
}

static weft_msg_t *tag_msg(const char *key, const char *value) {
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  assert_int_equal(weft_msg_put_str(m, key, value), 0);
  return m;
}

/* Refused at post (the message stays ours): a port, a buffer, two sockets.
 * Accepted by post but dropped and counted by the codec: a payload Node would
 * take for its own internal message, and values JSON cannot carry. The
 * channel carries on: the next record is echoed. */
static void refused_values(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_child_options_t o = {.on_message = on_echo_after_refused};
  S.child = spawn_node(ctx, &o, "echo_child.js", NULL, NULL);
  assert_non_null(S.child);
  weft_port_t *p = weft_child_port(S.child);

  weft_port_t *ch[2];
  assert_int_equal(weft_channel_new(ctx, ch), 0);
  weft_msg_t *m = tag_msg("what", "port");
  assert_int_equal(weft_msg_add_port(m, ch[0]), 0);
  assert_int_equal(weft_port_post(p, m), WEFT_ETRANSFER);
  weft_msg_free(m); /* still ours: closes ch[0] */
  weft_port_close(ch[1]);

  weft_buf_t *buf = NULL;
  assert_int_equal(weft_buf_new(&buf, 16), 0);
  m = tag_msg("what", "buffer");
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  assert_int_equal(weft_port_post(p, m), WEFT_ETRANSFER);
  weft_msg_free(m);
  weft_buf_free(buf);

  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  m = tag_msg("what", "two sockets");
  assert_int_equal(weft_msg_add_socket(m, sv[0]), 0);
  assert_int_equal(weft_msg_add_socket(m, sv[1]), 0);
  assert_int_equal(weft_port_post(p, m), WEFT_ETRANSFER);
  weft_msg_free(m); /* closes both */

  weft_ctx_stats_t before, after;
  assert_int_equal(weft_ctx_stats(ctx, &before), 0);
  assert_int_equal(weft_port_post(p, tag_msg("cmd", "NODE_HANDLE_ACK")), 0);
  m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_u64(m, NULL, UINT64_MAX), 0); /* past int64: no JSON */
  assert_int_equal(weft_port_post(p, m), 0);
  assert_int_equal(weft_port_post(p, tag_msg("bad", "\xff\xfe")), 0); /* not UTF-8 */
  assert_int_equal(weft_port_post(p, seq_record(7)), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  int stats_rc = weft_ctx_stats(ctx, &after);
  finish_runtime(rt);
  assert_int_equal(stats_rc, 0);
  assert_int_equal(after.undeliverable - before.undeliverable, 3);
  assert_int_equal(S.msgs, 1);
  assert_int_equal(S.close_reason, WEFT_ECLOSED);
  assert_int_equal(S.exit_status, 0);
}

/* ---- a Node child killed --------------------------------------------------------- */

static void on_echo_then_kill(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  S.msgs++;
  CHECK_RC(weft_child_kill(S.child, SIGKILL), 0);
}

static void killed_child(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  weft_runtime_t *rt = new_runtime(0);
  weft_child_options_t o = {.on_message = on_echo_then_kill, .msg = seq_record(7)};
  S.child = spawn_node(weft_runtime_main(rt), &o, "echo_child.js", NULL, NULL);
  assert_non_null(S.child);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(S.msgs, 1);
  assert_int_equal(S.closes, 1);
  assert_true(S.close_reason == WEFT_ECLOSED || S.close_reason == WEFT_EPEERDIED);
  assert_int_equal(S.exits, 1);
  assert_int_equal(S.closes_at_exit, 1);
  assert_int_equal(S.term_signal, SIGKILL);
}

/* ---- Node parent, weft child -------------------------------------------------------- */

typedef struct {
  int calls, err;
  int64_t status;
  int sig;
  char *out, *err_out;
} exec_seen_t;

static char *copy_bytes(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL)
    abort();
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static void on_exec_done(const weft_exec_result_t *r, void *data) {
  exec_seen_t *x = data;
  x->calls++;
  x->err = r->err;
  x->status = r->exit_status;
  x->sig = r->term_signal;
  x->out = copy_bytes(r->out, r->out_len);
  x->err_out = copy_bytes(r->err_out, r->err_len);
}

static void node_parent_weft_child(void **state) {
  (void)state;
  REQUIRE_NODE();
  weft_runtime_t *rt = new_runtime(0);
  char exe[4096], script[4096];
  size_t sz = sizeof(exe);
  assert_int_equal(uv_exepath(exe, &sz), 0);
  snprintf(script, sizeof(script), "%s/tests/node/spawn_weft.js", WEFT_TEST_SOURCE_DIR);
  const char *args[] = {NODE, script, exe, "--node-child", NULL};
  exec_seen_t x = {0};
  weft_exec_options_t o = {.file = NODE, .args = args, .cb = on_exec_done, .data = &x};
  assert_int_equal(weft_exec(weft_runtime_main(rt), &o), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  assert_int_equal(x.calls, 1);
  if (x.status != 0 || strstr(x.out, "spawn_weft: ok") == NULL)
    fprintf(stderr, "node stdout:\n%s\nnode stderr:\n%s\n", x.out, x.err_out);
  assert_int_equal(x.err, 0);
  assert_int_equal(x.sig, 0);
  assert_int_equal(x.status, 0);
  assert_non_null(strstr(x.out, "spawn_weft: ok 1000 replies in order, socket served, child exited 0"));
  assert_non_null(strstr(x.out, "weft child: echoed 1000 records, served 1 socket, channel closed by Node"));
  free(x.out);
  free(x.err_out);
}

/* ---- this binary as the weft child of spawn_weft.js ----------------------------------- */

static struct {
  uint64_t echoed, sockets;
  int closes, reason, bad;
  uv_tcp_t tcp;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
} child;

static void child_tcp_closed(uv_handle_t *h) { (void)h; }

static void child_shut(uv_shutdown_t *req, int status) {
  if (status)
    child.bad++;
  uv_close((uv_handle_t *)req->handle, child_tcp_closed);
}

static void child_wrote(uv_write_t *req, int status) {
  if (status || uv_shutdown(&child.shutdown_req, req->handle, child_shut) != 0) {
    child.bad++;
    uv_close((uv_handle_t *)req->handle, child_tcp_closed);
  }
}

/* A socket from Node: say hello on it, then FIN. */
static void child_serve(weft_port_t *p, weft_msg_t *m) {
  uv_os_sock_t fd;
  uv_buf_t b = uv_buf_init((char *)"hello from weft", 15);
  if (child.sockets++ > 0 || weft_msg_take_socket(m, 0, &fd) != 0) {
    child.bad++;
    return;
  }
  if (uv_tcp_init(weft_ctx_loop(weft_port_ctx(p)), &child.tcp) != 0) {
    close(fd);
    child.bad++;
    return;
  }
  if (uv_tcp_open(&child.tcp, fd) != 0 ||
      uv_write(&child.write_req, (uv_stream_t *)&child.tcp, &b, 1, child_wrote) != 0) {
    child.bad++;
    uv_close((uv_handle_t *)&child.tcp, child_tcp_closed); /* closes fd */
  }
}

/* Echo: the record as it came, plus echoed_by: "weft". */
static void child_echo(weft_port_t *p, weft_msg_t *m) {
  const msgpack_object *o;
  weft_msg_t *r = NULL;
  if (weft_msg_xfer_count(m) > 0) {
    child_serve(p, m);
    weft_msg_free(m);
    return;
  }
  if (weft_msg_view(m, &o) != 0 || o->type != MSGPACK_OBJECT_MAP || weft_msg_new(&r) != 0) {
    child.bad++;
    weft_msg_free(m);
    return;
  }
  msgpack_packer *pk = weft_msg_packer(r);
  msgpack_pack_map(pk, o->via.map.size + 1);
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    msgpack_pack_object(pk, o->via.map.ptr[i].key);
    msgpack_pack_object(pk, o->via.map.ptr[i].val);
  }
  weft_msg_put_str(r, "echoed_by", "weft");
  weft_msg_free(m);
  int rc = weft_port_post(p, r);
  if (rc) {
    fprintf(stderr, "weft child: post: %s\n", weft_err_name(rc));
    weft_msg_free(r);
    child.bad++;
    return;
  }
  child.echoed++;
}

static void child_on_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  child.closes++;
  child.reason = info->reason;
}

/* main() in --node-child mode: 0 if every check passed. */
static int node_child_main(void) {
  testutil_alloc_install();
  weft_runtime_t *rt;
  int rc = weft_runtime_new(&rt, NULL);
  if (rc) {
    fprintf(stderr, "weft child: weft_runtime_new: %s\n", weft_err_name(rc));
    return 2;
  }
  weft_port_t *p = weft_runtime_parent_port(rt);
  if (p == NULL || getenv("NODE_CHANNEL_FD") != NULL) {
    fprintf(stderr, "weft child: no parent port, or NODE_CHANNEL_FD still set\n");
    weft_runtime_free(rt);
    return 3;
  }
  weft_msg_t *hello = NULL;
  if (weft_msg_new(&hello) == 0) {
    weft_msg_put_map(hello, 2);
    weft_msg_put_bool(hello, "ready", true);
    weft_msg_put_i64(hello, "pid", (int64_t)getpid());
    if (weft_port_post(p, hello) != 0) {
      weft_msg_free(hello);
      child.bad++;
    }
  }
  weft_port_on_close(p, child_on_close);
  weft_port_start(p, child_echo);
  rc = weft_runtime_run(rt); /* until Node disconnects */
  int frc = weft_runtime_free(rt);
  long left = testutil_alloc_outstanding();
  bool ok = rc == 0 && frc == 0 && left == 0 && child.bad == 0 && child.closes == 1 &&
            child.reason == WEFT_ECLOSED && child.sockets == 1;
  printf("weft child: echoed %llu records, served %llu socket, channel closed %s (%s)\n",
         (unsigned long long)child.echoed, (unsigned long long)child.sockets,
         child.reason == WEFT_ECLOSED ? "by Node" : "otherwise", weft_err_name(child.reason));
  if (!ok)
    fprintf(stderr, "weft child: run %d, free %d, %ld blocks left, %d bad, %d closes\n", rc, frc,
            left, child.bad, child.closes);
  return ok ? 0 : 4;
}

/* ---- what weft cannot represent: dropped alone ------------------------------------ */

#define UNREP_DEEP 4000 /* near this Node's JSON.stringify limit (4185 measured) */

static struct {
  int errs[8], nerrs;
  bool shape_ok[6];
  bool result_seen, result;
} U;

/* n arrays nested, the innermost empty: what nest(n) in the script sends. */
static bool is_nested(weft_msg_t *m, size_t n) {
  size_t len;
  const uint8_t *p = weft_msg_payload(m, &len);
  if (len != n)
    return false;
  for (size_t i = 0; i + 1 < n; i++)
    if (p[i] != 0x91)
      return false;
  return p[n - 1] == 0x90;
}

static bool has_bytes(weft_msg_t *m, const char *bytes, size_t n) {
  size_t len;
  const char *p = weft_msg_payload(m, &len);
  return memmem(p, len, bytes, n) != NULL;
}

static void on_unrep_message(weft_port_t *p, weft_msg_t *m) {
  uint64_t i = S.msgs++;
  const char *s;
  size_t n;
  bool ok = false;
  switch (i) {
  case 0:
  case 5:
    ok = weft_msg_get_str(m, "seq", &s, &n) == 0 && n == 3 && memcmp(s, i ? "ok2" : "ok1", 3) == 0;
    break;
  case 1: /* WTF-8: ED A0 80 is U+D800 alone; the pair is one 4-byte character */
    ok = weft_msg_get_str(m, NULL, &s, &n) == 0 && has_bytes(m, "lead \xed\xa0\x80,", 9) &&
         has_bytes(m, "\xf0\x9f\x98\x80", 4) && has_bytes(m, "\xed\xb0\x80\xed\xa0\x80", 6);
    break;
  case 2:
    ok = is_nested(m, 70);
    break;
  case 3:
    ok = is_nested(m, UNREP_DEEP);
    break;
  case 4: /* the keys as sent, NUL and all; "a" is its own key */
    ok = has_bytes(m, "\xa3" "a\0b\x01", 5) && has_bytes(m, "\xa1\0", 2) &&
         weft_msg_get_str(m, "a", &s, &n) == WEFT_ETYPE;
    break;
  default: {
    bool r = false;
    ok = weft_msg_get_bool(m, "result", &r) == 0;
    U.result_seen = true;
    U.result = r;
    if (!r && weft_msg_get_str(m, "why", &s, &n) == 0)
      print_message("node: %.*s\n", (int)n, s);
    weft_msg_free(m);
    return;
  }
  }
  U.shape_ok[i] = ok;
  if (weft_port_post(p, m) != 0) /* the echo */
    weft_msg_free(m);
}

static void on_unrep_drop(weft_port_t *p, int err) {
  CHECK(p == S.port);
  CHECK(weft_ctx_current() != NULL);
  if (U.nerrs < 8)
    U.errs[U.nerrs] = err;
  U.nerrs++;
}

static void on_unrep_exit(weft_child_t *c, int64_t status, int sig) {
  on_child_exit(c, status, sig);
}

static uint64_t unrep_dropped;

static void on_unrep_close(weft_port_t *p, const weft_port_close_info_t *info) {
  unrep_dropped = weft_port_dropped(p);
  on_port_close(p, info);
}

static void unrepresentable_keeps_serving(void **state) {
  (void)state;
  REQUIRE_NODE();
  reset_seen();
  memset(&U, 0, sizeof(U));
  unrep_dropped = 0;
  weft_runtime_t *rt = new_runtime(0);
  weft_child_options_t o = {.on_message = on_unrep_message, .on_exit = on_unrep_exit};
  char deep[16];
  snprintf(deep, sizeof(deep), "%d", UNREP_DEEP);
  S.child = spawn_node(weft_runtime_main(rt), &o, "unrepresentable_child.js", deep, NULL);
  assert_non_null(S.child);
  S.port = weft_child_port(S.child);
  assert_int_equal(weft_port_on_error(S.port, on_unrep_drop), 0);
  assert_int_equal(weft_port_on_close(S.port, on_unrep_close), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  finish_runtime(rt);
  print_message("messages %llu, dropped %llu, errors %d\n", (unsigned long long)S.msgs,
                (unsigned long long)unrep_dropped, U.nerrs);
  for (int i = 0; i < 6; i++)
    if (!U.shape_ok[i])
      fail_msg("message %d arrived changed", i);
  assert_true(U.result_seen);
  assert_true(U.result);          /* every echo equal to what Node sent, in order */
  assert_int_equal(S.msgs, 7);    /* 6 + the result: nothing lost after the drop */
  assert_int_equal(U.nerrs, 2);   /* once per dropped line, with its reason */
  assert_int_equal(U.errs[0], WEFT_EUNREPRESENTABLE);
  assert_int_equal(U.errs[1], WEFT_EPROTO);
  assert_int_equal(unrep_dropped, 2);
  assert_int_equal(S.closes, 1);
  assert_int_equal(S.close_reason, WEFT_ECLOSED); /* Node disconnected: no EPROTO */
  assert_int_equal(S.exit_status, 0);             /* no EPIPE in Node */
  assert_int_equal(S.term_signal, 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--node-child") == 0)
    return node_child_main();
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(types_both_ways),
      T(ordering_with_backpressure),
      T(long_line_round_trip),
      T(burst_and_split_reads),
      T(exit_comes_last),
      T(paused_port_keeps_messages),
      T(handle_weft_to_node),
      T(handle_while_reader_paused),
      T(stop_reading_while_output_blocked),
      T(eof_behind_waiting_messages),
      T(handle_node_to_weft),
      T(oversized_line),
      T(refused_values),
      T(unrepresentable_keeps_serving),
      T(killed_child),
      T(node_parent_weft_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
