/* test_nodejson.c: the Node.js 'json' IPC conversion layer (runtime/nodejson.c):
 * line reassembly (coalesced reads, a split at every byte, UTF-8 split inside
 * a character, the line limit checked before the buffer grows), each value
 * mapping both ways, round trips, the observed lines of the shared reference
 * (node-ipc-json.md), NODE_HANDLE / ACK / NACK / other classification, the
 * errors, the encoder's one-line guarantee, allocation-failure sweeps, and
 * decoders on bytes that end at a guard page. Every test ends with zero weft
 * allocations outstanding. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nodejson.h"
#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

/* The three messages Node sent in one 77-byte read (node-ipc-json.md §2). */
static const char ref_stream[] =
    "{\"a\":1,\"s\":\"x\\ny\",\"n\":null,\"d\":\"1970-01-01T00:00:00.000Z\"}\n"
    "\"plain string\"\n"
    "42\n";
static const char *const ref_lines[] = {
    "{\"a\":1,\"s\":\"x\\ny\",\"n\":null,\"d\":\"1970-01-01T00:00:00.000Z\"}",
    "\"plain string\"",
    "42",
};
#define NREF (sizeof(ref_lines) / sizeof(ref_lines[0]))

/* ---- helpers ---------------------------------------------------------------- */

typedef struct {
  char lines[8][256];
  size_t n;
} collected_t;

/* Takes every complete line out of lb into col. */
static void drain(weft__linebuf_t *lb, collected_t *col) {
  const char *line;
  size_t len;
  int rc;
  while ((rc = weft__linebuf_next(lb, &line, &len)) == 1) {
    assert_true(col->n < 8);
    assert_true(len < 256);
    assert_null(memchr(line, '\n', len));
    memcpy(col->lines[col->n], line, len);
    col->lines[col->n][len] = '\0';
    col->n++;
  }
  assert_int_equal(rc, 0);
}

static void decode_ok(const char *json, weft__nodejson_in_t *in) {
  int rc = weft__nodejson_decode(json, strlen(json), in);
  if (rc != 0)
    fail_msg("decode %s: %s", json, weft_err_name(rc));
}

static void decode_fails(const char *json, size_t len, int want) {
  weft__nodejson_in_t in;
  memset(&in, 0xA5, sizeof(in));
  int rc = weft__nodejson_decode(json, len, &in);
  if (rc != want)
    fail_msg("decode %.*s: got %s, want %s", (int)len, json, weft_err_name(rc),
             weft_err_name(want));
  assert_null(in.msg);
  if (want == WEFT_EUNREPRESENTABLE) { /* says what the line was */
    assert_int_not_equal(in.kind, 0);
    weft__nodejson_in_fini(&in);
    return;
  }
  assert_null(in.cmd);
  assert_null(in.handle_type);
  assert_null(in.key);
  assert_int_equal(in.kind, 0);
}

/* The payload of a USER line must be exactly these msgpack bytes. */
static void decodes_to(const char *json, const void *want, size_t n) {
  weft__nodejson_in_t in;
  decode_ok(json, &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_USER);
  assert_null(in.cmd);
  size_t len;
  const void *p = weft_msg_payload(in.msg, &len);
  if (len != n || memcmp(p, want, n) != 0)
    fail_msg("decode %s: payload differs", json);
  weft__nodejson_in_fini(&in);
}

/* Encodes and checks the one-line guarantee; returns the line (weft__free). */
static char *encode_ok(const void *payload, size_t len, const char *type, size_t *outlen) {
  char *out = NULL;
  int rc = weft__nodejson_encode(payload, len, type, &out, outlen);
  if (rc != 0)
    fail_msg("encode: %s", weft_err_name(rc));
  assert_true(*outlen >= 2);
  assert_int_equal(out[*outlen - 1], '\n');
  assert_int_equal(out[*outlen], '\0');
  assert_null(memchr(out, '\n', *outlen - 1));
  return out;
}

static void encodes_to(const void *payload, size_t len, const char *want) {
  size_t n;
  char *out = encode_ok(payload, len, NULL, &n);
  if (n != strlen(want) || memcmp(out, want, n) != 0)
    fail_msg("encode: got %s want %s", out, want);
  weft__free(out);
}

static void encode_fails(const void *payload, size_t len, int want) {
  char *out = (char *)"untouched";
  size_t n = 12345;
  int rc = weft__nodejson_encode(payload, len, NULL, &out, &n);
  if (rc != want)
    fail_msg("encode: got %s, want %s", weft_err_name(rc), weft_err_name(want));
  assert_string_equal(out, "untouched");
  assert_int_equal(n, 12345);
}

/* A msgpack payload built with msgpack-c into a weft message. */
typedef void (*build_fn)(msgpack_packer *pk);

static weft_msg_t *built(build_fn fn) {
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  fn(weft_msg_packer(m));
  assert_int_equal(weft_msg_error(m), 0);
  return m;
}

static void encode_built(build_fn fn, const char *want) {
  weft_msg_t *m = built(fn);
  size_t len;
  const void *p = weft_msg_payload(m, &len);
  encodes_to(p, len, want);
  weft_msg_free(m);
}

static void encode_built_fails(build_fn fn, int want) {
  weft_msg_t *m = built(fn);
  size_t len;
  const void *p = weft_msg_payload(m, &len);
  encode_fails(p, len, want);
  weft_msg_free(m);
}

/* ---- line reassembly ---------------------------------------------------------- */

static void coalesced_read_gives_three_lines(void **state) {
  (void)state;
  assert_int_equal(sizeof(ref_stream) - 1, 77); /* as measured */
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 0);
  assert_int_equal(weft__linebuf_feed(&lb, ref_stream, sizeof(ref_stream) - 1), 0);
  collected_t col = {.n = 0};
  drain(&lb, &col);
  assert_int_equal(col.n, NREF);
  for (size_t i = 0; i < NREF; i++)
    assert_string_equal(col.lines[i], ref_lines[i]);
  weft__linebuf_fini(&lb);
}

static void split_at_every_byte(void **state) {
  (void)state;
  size_t total = sizeof(ref_stream) - 1;
  for (size_t cut = 0; cut <= total; cut++) {
    weft__linebuf_t lb;
    weft__linebuf_init(&lb, 128);
    collected_t col = {.n = 0};
    assert_int_equal(weft__linebuf_feed(&lb, ref_stream, cut), 0);
    drain(&lb, &col);
    assert_int_equal(weft__linebuf_feed(&lb, ref_stream + cut, total - cut), 0);
    drain(&lb, &col);
    assert_int_equal(col.n, NREF);
    for (size_t i = 0; i < NREF; i++)
      assert_string_equal(col.lines[i], ref_lines[i]);
    weft__linebuf_fini(&lb);
  }
  /* And one byte per read. */
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 128);
  collected_t col = {.n = 0};
  for (size_t i = 0; i < total; i++) {
    assert_int_equal(weft__linebuf_feed(&lb, ref_stream + i, 1), 0);
    drain(&lb, &col);
  }
  assert_int_equal(col.n, NREF);
  for (size_t i = 0; i < NREF; i++)
    assert_string_equal(col.lines[i], ref_lines[i]);
  weft__linebuf_fini(&lb);
}

/* "é€𝄞" (2, 3 and 4 bytes) cut at every byte, inside each character too. */
static void utf8_split_inside_a_character(void **state) {
  (void)state;
  static const char stream[] = "{\"k\":\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"}\n";
  static const char chars[] = "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e";
  size_t total = sizeof(stream) - 1;
  for (size_t cut = 0; cut <= total; cut++) {
    weft__linebuf_t lb;
    weft__linebuf_init(&lb, 64);
    collected_t col = {.n = 0};
    assert_int_equal(weft__linebuf_feed(&lb, stream, cut), 0);
    drain(&lb, &col);
    assert_int_equal(weft__linebuf_feed(&lb, stream + cut, total - cut), 0);
    drain(&lb, &col);
    assert_int_equal(col.n, 1);
    weft__nodejson_in_t in;
    decode_ok(col.lines[0], &in);
    const char *s;
    size_t n;
    assert_int_equal(weft_msg_get_str(in.msg, "k", &s, &n), 0);
    assert_int_equal(n, sizeof(chars) - 1);
    assert_memory_equal(s, chars, n);
    weft__nodejson_in_fini(&in);
    weft__linebuf_fini(&lb);
  }
}

static void blank_lines_are_lines(void **state) {
  (void)state;
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 16);
  assert_int_equal(weft__linebuf_feed(&lb, "\n\n1\n2", 5), 0);
  collected_t col = {.n = 0};
  drain(&lb, &col);
  assert_int_equal(col.n, 3);
  assert_string_equal(col.lines[0], "");
  assert_string_equal(col.lines[1], "");
  assert_string_equal(col.lines[2], "1");
  assert_int_equal(weft__linebuf_feed(&lb, "\n", 1), 0);
  drain(&lb, &col);
  assert_int_equal(col.n, 4);
  assert_string_equal(col.lines[3], "2");
  /* A blank line is not a message. */
  decode_fails(col.lines[0], 0, WEFT_EPROTO);
  weft__linebuf_fini(&lb);
}

static void line_limit_checked_before_growing(void **state) {
  (void)state;
  weft__linebuf_t lb;
  const char *line;
  size_t len;
  /* Exactly max bytes is fine. */
  weft__linebuf_init(&lb, 8);
  assert_int_equal(weft__linebuf_feed(&lb, "12345678\n", 9), 0);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(len, 8);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 0);
  weft__linebuf_fini(&lb);

  /* One byte over, in a single read: nothing is allocated at all. */
  weft__linebuf_init(&lb, 8);
  uint64_t calls = testutil_alloc_calls();
  assert_int_equal(weft__linebuf_feed(&lb, "123456789", 9), 0);
  assert_int_equal(testutil_alloc_calls(), calls);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), WEFT_EFRAMESIZE);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), WEFT_EFRAMESIZE);
  assert_int_equal(weft__linebuf_feed(&lb, "\n", 1), WEFT_EFRAMESIZE);
  weft__linebuf_fini(&lb);

  /* Over across reads: the second read is refused before it is stored. */
  weft__linebuf_init(&lb, 8);
  assert_int_equal(weft__linebuf_feed(&lb, "12345", 5), 0);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 0);
  assert_int_equal(weft__linebuf_feed(&lb, "6789\n", 5), 0);
  assert_int_equal(lb.len, 5);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), WEFT_EFRAMESIZE);
  weft__linebuf_fini(&lb);

  /* Lines before the long one come out first; a megabyte without '\n' costs
   * one small block. */
  size_t big = (size_t)1 << 20;
  char *junk = malloc(big + 3);
  assert_non_null(junk);
  memcpy(junk, "ok\n", 3);
  memset(junk + 3, 'x', big);
  weft__linebuf_init(&lb, 1024);
  calls = testutil_alloc_calls();
  assert_int_equal(weft__linebuf_feed(&lb, junk, big + 3), 0);
  assert_int_equal(testutil_alloc_calls(), calls + 1);
  assert_true(lb.cap <= 1024);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(len, 2);
  assert_memory_equal(line, "ok", 2);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), WEFT_EFRAMESIZE);
  weft__linebuf_fini(&lb);
  free(junk);
}

/* The buffer compacts, and gives back a large block once empty. */
static void buffer_compacts_and_shrinks(void **state) {
  (void)state;
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 0);
  size_t big = (size_t)256 << 10;
  char *line = malloc(big + 1);
  assert_non_null(line);
  memset(line, '1', big);
  line[big] = '\n';
  const char *got;
  size_t len;
  assert_int_equal(weft__linebuf_feed(&lb, line, big + 1), 0);
  assert_int_equal(weft__linebuf_next(&lb, &got, &len), 1);
  assert_int_equal(len, big);
  assert_int_equal(testutil_alloc_outstanding(), 1);
  assert_int_equal(weft__linebuf_feed(&lb, "2\n", 2), 0);
  assert_true(lb.cap < big);
  assert_int_equal(weft__linebuf_next(&lb, &got, &len), 1);
  assert_int_equal(len, 1);
  assert_int_equal(got[0], '2');
  /* Many small reads keep the buffer small. */
  for (int i = 0; i < 10000; i++) {
    assert_int_equal(weft__linebuf_feed(&lb, "[1,2]\n[3", 8), 0);
    assert_int_equal(weft__linebuf_next(&lb, &got, &len), 1);
    assert_int_equal(weft__linebuf_feed(&lb, "]\n", 2), 0);
    assert_int_equal(weft__linebuf_next(&lb, &got, &len), 1);
    assert_int_equal(len, 3);
  }
  assert_true(lb.cap <= 256);
  weft__linebuf_fini(&lb);
  free(line);
}

static void linebuf_feed_out_of_memory(void **state) {
  (void)state;
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 0);
  testutil_alloc_fail_after(0);
  assert_int_equal(weft__linebuf_feed(&lb, "1\n2", 3), WEFT_ENOMEM);
  assert_false(testutil_alloc_fail_pending());
  const char *line;
  size_t len;
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 0);
  assert_int_equal(weft__linebuf_feed(&lb, "1\n2", 3), 0); /* retry: same bytes */
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(len, 1);
  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 0);
  weft__linebuf_fini(&lb);
}

/* ---- JSON -> msgpack ---------------------------------------------------------- */

static void json_to_msgpack_each_type(void **state) {
  (void)state;
  decodes_to("null", "\xc0", 1);
  decodes_to("true", "\xc3", 1);
  decodes_to("false", "\xc2", 1);
  decodes_to("0", "\x00", 1);
  decodes_to("42", "\x2a", 1);
  decodes_to("-1", "\xff", 1);
  decodes_to("200", "\xcc\xc8", 2);
  decodes_to("-129", "\xd1\xff\x7f", 3);
  decodes_to("9223372036854775807", "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
  decodes_to("-9223372036854775808", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
  decodes_to("1.5", "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
  decodes_to("2.0", "\xcb\x40\x00\x00\x00\x00\x00\x00\x00", 9);
  decodes_to("-0.0", "\xcb\x80\x00\x00\x00\x00\x00\x00\x00", 9);
  decodes_to("1e300", "\xcb\x7e\x37\xe4\x3c\x88\x00\x75\x9c", 9);
  decodes_to("\"\"", "\xa0", 1);
  decodes_to("\"ab\"", "\xa2" "ab", 3);
  decodes_to("\"x\\ny\\u0000\\u00e9\"", "\xa6" "x\ny\0\xc3\xa9", 7);
  decodes_to("\"\\ud834\\udd1e\"", "\xa4\xf0\x9d\x84\x9e", 5); /* a surrogate pair */
  decodes_to("[]", "\x90", 1);
  decodes_to("[1,[2]]", "\x92\x01\x91\x02", 4);
  decodes_to("{}", "\x80", 1);
  decodes_to("{\"a\":{\"b\":null}}", "\x81\xa1" "a" "\x81\xa1" "b" "\xc0", 7);
  decodes_to(" [ 1 , 2 ] \r", "\x92\x01\x02", 3); /* JSON whitespace */
  /* Duplicate keys: the last one wins, as in JSON.parse. */
  decodes_to("{\"a\":1,\"a\":2}", "\x81\xa1" "a" "\x02", 4);
}

static void buffer_form_becomes_bin(void **state) {
  (void)state;
  decodes_to("{\"type\":\"Buffer\",\"data\":[104,105]}", "\xc4\x02hi", 4);
  decodes_to("{\"data\":[0,255],\"type\":\"Buffer\"}", "\xc4\x02\x00\xff", 4);
  decodes_to("{\"type\":\"Buffer\",\"data\":[]}", "\xc4\x00", 2);
  decodes_to("[{\"type\":\"Buffer\",\"data\":[1]}]", "\x91\xc4\x01\x01", 4);
  /* Anything else of that shape is just a map. */
  decodes_to("{\"type\":\"Buffer\",\"data\":[256]}",
             "\x82\xa4type\xa6" "Buffer\xa4" "data\x91\xcd\x01\x00", 22);
  decodes_to("{\"type\":\"Buffer\",\"data\":[-1]}",
             "\x82\xa4type\xa6" "Buffer\xa4" "data\x91\xff", 20);
  decodes_to("{\"type\":\"Buffer\",\"data\":[1.5]}",
             "\x82\xa4type\xa6" "Buffer\xa4" "data\x91\xcb\x3f\xf8\0\0\0\0\0\0", 28);
  decodes_to("{\"type\":\"buffer\",\"data\":[]}",
             "\x82\xa4type\xa6" "buffer\xa4" "data\x90", 19);
  decodes_to("{\"type\":\"Buffer\",\"data\":\"hi\"}",
             "\x82\xa4type\xa6" "Buffer\xa4" "data\xa2hi", 21);
  decodes_to("{\"type\":\"Buffer\"}", "\x81\xa4type\xa6" "Buffer", 13);
  decodes_to("{\"type\":\"Buffer\",\"data\":[],\"x\":0}",
             "\x83\xa4type\xa6" "Buffer\xa4" "data\x90\xa1x\x00", 22);
}

static void integers_past_int64(void **state) {
  (void)state;
  weft__nodejson_in_t in;
  double f;
  int64_t i;
  /* JSON.stringify(1e20) */
  decode_ok("100000000000000000000", &in);
  assert_int_equal(weft_msg_get_f64(in.msg, NULL, &f), 0);
  assert_true(f == 1e20);
  assert_int_equal(weft_msg_get_i64(in.msg, NULL, &i), WEFT_ETYPE);
  weft__nodejson_in_fini(&in);
  /* Other numbers of that line keep their kind when they can. */
  decode_ok("{\"a\":2,\"b\":-18446744073709551616,\"c\":0.5,"
            "\"d\":{\"type\":\"Buffer\",\"data\":[7]}}", &in);
  assert_int_equal(weft_msg_get_i64(in.msg, "a", &i), 0);
  assert_int_equal(i, 2);
  assert_int_equal(weft_msg_get_f64(in.msg, "b", &f), 0);
  assert_true(f == -18446744073709551616.0);
  assert_int_equal(weft_msg_get_i64(in.msg, "b", &i), WEFT_ETYPE);
  assert_int_equal(weft_msg_get_f64(in.msg, "c", &f), 0);
  assert_true(f == 0.5);
  const void *p;
  size_t n;
  assert_int_equal(weft_msg_get_bin(in.msg, "d", &p, &n), 0);
  assert_int_equal(n, 1);
  weft__nodejson_in_fini(&in);
  decode_fails("1e400", 5, WEFT_EPROTO);
  decode_fails("[1e400,100000000000000000000]", strlen("[1e400,100000000000000000000]"),
               WEFT_EPROTO);
}

/* The observed lines of node-ipc-json.md, through the line buffer. */
static void reference_lines_decode(void **state) {
  (void)state;
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 0);
  assert_int_equal(weft__linebuf_feed(&lb, ref_stream, sizeof(ref_stream) - 1), 0);
  const char *line;
  size_t len;
  weft__nodejson_in_t in;
  const char *s;
  size_t n;
  int64_t i;

  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(weft__nodejson_decode(line, len, &in), 0);
  assert_int_equal(in.kind, WEFT__NODEJSON_USER);
  assert_int_equal(weft_msg_get_i64(in.msg, "a", &i), 0);
  assert_int_equal(i, 1);
  assert_int_equal(weft_msg_get_str(in.msg, "s", &s, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(s, "x\ny", 3);
  const msgpack_object *o;
  assert_int_equal(weft_msg_view(in.msg, &o), 0);
  assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(o->via.map.size, 4);
  assert_int_equal(o->via.map.ptr[2].val.type, MSGPACK_OBJECT_NIL);
  assert_int_equal(weft_msg_get_str(in.msg, "d", &s, &n), 0);
  assert_int_equal(n, 24);
  assert_memory_equal(s, "1970-01-01T00:00:00.000Z", 24);
  weft__nodejson_in_fini(&in);

  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(weft__nodejson_decode(line, len, &in), 0);
  assert_int_equal(in.kind, WEFT__NODEJSON_USER);
  assert_int_equal(weft_msg_get_str(in.msg, NULL, &s, &n), 0);
  assert_int_equal(n, 12);
  assert_memory_equal(s, "plain string", 12);
  weft__nodejson_in_fini(&in);

  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 1);
  assert_int_equal(weft__nodejson_decode(line, len, &in), 0);
  assert_int_equal(weft_msg_get_i64(in.msg, NULL, &i), 0);
  assert_int_equal(i, 42);
  weft__nodejson_in_fini(&in);

  assert_int_equal(weft__linebuf_next(&lb, &line, &len), 0);
  weft__linebuf_fini(&lb);
}

/* ---- classification ---------------------------------------------------------- */

static void node_handle_observed_examples(void **state) {
  (void)state;
  weft__nodejson_in_t in;
  const char *s;
  size_t n;
  decode_ok("{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Server\",\"msg\":{\"tag\":\"srv\"}}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE);
  assert_string_equal(in.cmd, "NODE_HANDLE");
  assert_string_equal(in.handle_type, "net.Server");
  assert_null(in.key);
  assert_int_equal(weft_msg_get_str(in.msg, "tag", &s, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(s, "srv", 3);
  assert_int_equal(weft_msg_xfer_count(in.msg), 0);
  /* The caller may keep the message. */
  weft_msg_t *kept = in.msg;
  in.msg = NULL;
  weft__nodejson_in_fini(&in);
  assert_int_equal(weft_msg_get_str(kept, "tag", &s, &n), 0);
  weft_msg_free(kept);

  decode_ok("{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"tag\":\"sock\"},"
            "\"key\":\"4:127.0.0.1:0\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE);
  assert_string_equal(in.handle_type, "net.Socket");
  assert_string_equal(in.key, "4:127.0.0.1:0");
  assert_int_equal(weft_msg_get_str(in.msg, "tag", &s, &n), 0);
  assert_memory_equal(s, "sock", 4);
  weft__nodejson_in_fini(&in);

  decode_ok("{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"back\":true}}", &in);
  assert_string_equal(in.handle_type, "net.Native");
  bool b = false;
  assert_int_equal(weft_msg_get_bool(in.msg, "back", &b), 0);
  assert_true(b);
  weft__nodejson_in_fini(&in);

  /* No "msg": the user payload is nil. */
  decode_ok("{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\"}", &in);
  size_t len;
  const uint8_t *p = weft_msg_payload(in.msg, &len);
  assert_int_equal(len, 1);
  assert_int_equal(p[0], 0xc0);
  weft__nodejson_in_fini(&in);

  /* A handle message needs a string type. */
  const char *bad;
  bad = "{\"cmd\":\"NODE_HANDLE\",\"msg\":1}";
  decode_fails(bad, strlen(bad), WEFT_EPROTO);
  bad = "{\"cmd\":\"NODE_HANDLE\",\"type\":1,\"msg\":1}";
  decode_fails(bad, strlen(bad), WEFT_EPROTO);
  bad = "{\"cmd\":\"NODE_HANDLE\",\"type\":\"a\\u0000b\",\"msg\":1}";
  decode_fails(bad, strlen(bad), WEFT_EPROTO);
}

static void ack_nack_and_other_commands(void **state) {
  (void)state;
  weft__nodejson_in_t in;
  decode_ok("{\"cmd\":\"NODE_HANDLE_ACK\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE_ACK);
  assert_string_equal(in.cmd, "NODE_HANDLE_ACK");
  assert_null(in.msg);
  weft__nodejson_in_fini(&in);
  decode_ok("{\"cmd\":\"NODE_HANDLE_NACK\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE_NACK);
  assert_null(in.msg);
  weft__nodejson_in_fini(&in);

  decode_ok("{\"cmd\":\"NODE_SOCKET_NOTIFY_CLOSE\",\"key\":\"4:127.0.0.1:0\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_OTHER);
  assert_string_equal(in.cmd, "NODE_SOCKET_NOTIFY_CLOSE");
  assert_string_equal(in.key, "4:127.0.0.1:0");
  const char *s;
  size_t n;
  assert_int_equal(weft_msg_get_str(in.msg, "cmd", &s, &n), 0); /* the whole object */
  assert_memory_equal(s, "NODE_SOCKET_NOTIFY_CLOSE", n);
  weft__nodejson_in_fini(&in);

  decode_ok("{\"cmd\":\"NODE_SOCKET_GET_COUNT\",\"key\":\"6:::1:8000\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_OTHER);
  assert_string_equal(in.key, "6:::1:8000");
  weft__nodejson_in_fini(&in);

  decode_ok("{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0,\"key\":7}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_OTHER);
  assert_string_equal(in.cmd, "NODE_CLUSTER");
  assert_null(in.key); /* not a string */
  uint64_t u = 1;
  assert_int_equal(weft_msg_get_u64(in.msg, "seq", &u), 0);
  assert_int_equal(u, 0);
  assert_int_equal(weft_msg_get_str(in.msg, "act", &s, &n), 0);
  assert_memory_equal(s, "online", 6);
  weft__nodejson_in_fini(&in);

  decode_ok("{\"cmd\":\"NODE_HANDLE_ACKX\"}", &in); /* exact names only */
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_OTHER);
  weft__nodejson_in_fini(&in);
}

static void what_is_not_internal(void **state) {
  (void)state;
  static const char *const user[] = {
      "{\"cmd\":\"NODE_\"}",           "{\"cmd\":\"node_HANDLE\"}",
      "{\"cmd\":\"XNODE_HANDLE\"}",    "{\"cmd\":5}",
      "{\"cmd\":null}",                "[\"NODE_HANDLE_ACK\"]",
      "\"NODE_HANDLE_ACK\"",           "{\"Cmd\":\"NODE_HANDLE_ACK\"}",
      "{\"cmd\":\"NODE_HANDLE_ACK\",\"cmd\":\"x\"}", /* last wins */
      "{\"x\":{\"cmd\":\"NODE_HANDLE_ACK\"}}",
  };
  for (size_t i = 0; i < sizeof(user) / sizeof(user[0]); i++) {
    weft__nodejson_in_t in;
    decode_ok(user[i], &in);
    if (in.kind != WEFT__NODEJSON_USER)
      fail_msg("%s: kind %d", user[i], in.kind);
    assert_null(in.cmd);
    assert_null(in.key);
    assert_non_null(in.msg);
    weft__nodejson_in_fini(&in);
  }
  weft__nodejson_in_t in;
  decode_ok("{\"cmd\":\"x\",\"cmd\":\"NODE_HANDLE_ACK\"}", &in);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE_ACK);
  weft__nodejson_in_fini(&in);
  const char *bad = "{\"cmd\":\"NODE_X\\u0000\"}";
  decode_fails(bad, strlen(bad), WEFT_EPROTO);
}

/* ---- decoder errors ------------------------------------------------------------ */

static void invalid_lines_are_rejected(void **state) {
  (void)state;
  static const char *const bad[] = {
      "", " ", "\r", "not json", "{", "}", "[1,2", "[1,2] x", "1 2", "{\"a\"}",
      "{a:1}", "'s'", "[1,]", "NaN", "Infinity", "undefined", "01", "+1", ".5",
      "\"\x01\"", "\"tab\tin string\"", ("\xef\xbb\xbf" "1"), "\"\\ud80\"",
      "\"\\udc0g\"", "{\"a\\u000\":1}", "\"\\x41\"",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    decode_fails(bad[i], strlen(bad[i]), WEFT_EPROTO);
  decode_fails("1\0", 2, WEFT_EPROTO);
  decode_fails("[1\0]", 4, WEFT_EPROTO);
  decode_fails("\0", 1, WEFT_EPROTO);
  decode_fails("\"a\0\"", 4, WEFT_EPROTO);
  decode_fails(NULL, 0, WEFT_EPROTO);
  weft__nodejson_in_t in;
  assert_int_equal(weft__nodejson_decode(NULL, 1, &in), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_decode("1", 1, NULL), WEFT_EINVAL);
  /* Only len bytes are read. */
  decode_ok("1", &in);
  weft__nodejson_in_fini(&in);
  assert_int_equal(weft__nodejson_decode("12x", 2, &in), 0);
  int64_t i;
  assert_int_equal(weft_msg_get_i64(in.msg, NULL, &i), 0);
  assert_int_equal(i, 12);
  weft__nodejson_in_fini(&in);
}

static void invalid_utf8_is_rejected(void **state) {
  (void)state;
  static const char *const bad[] = {
      "\"\xff\"",             /* never valid */
      "\"\xc0\x80\"",         /* overlong NUL */
      "\"\xe0\x80\xaf\"",     /* overlong '/' */
      "\"\xed\xa0\x80\"",     /* UTF-8 surrogate */
      "\"\xf4\x90\x80\x80\"", /* above U+10FFFF */
      "\"\xc3\"",             /* truncated */
      "\"\xe2\x82\"",         /* truncated */
      "\"\x80\"",             /* lone continuation */
      "{\"\xff\":1}",         /* in a key */
      "\xc3\xa9",             /* outside a string */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    decode_fails(bad[i], strlen(bad[i]), WEFT_EPROTO);
  decodes_to("\"\xf4\x8f\xbf\xbf\"", "\xa4\xf4\x8f\xbf\xbf", 5); /* U+10FFFF */
  decodes_to("\"\xe2\x80\xa8\"", "\xa3\xe2\x80\xa8", 4);         /* U+2028 raw */
}

/* text: depth times open, then inner, then depth times close. */
static char *nested(const char *open, const char *inner, const char *close, int depth) {
  size_t lo = strlen(open), li = strlen(inner), lc = strlen(close);
  char *s = malloc((lo + lc) * (size_t)depth + li + 1);
  assert_non_null(s);
  char *p = s;
  for (int i = 0; i < depth; i++, p += lo)
    memcpy(p, open, lo);
  memcpy(p, inner, li);
  p += li;
  for (int i = 0; i < depth; i++, p += lc)
    memcpy(p, close, lc);
  *p = '\0';
  return s;
}

static void depth_limit(void **state) {
  (void)state;
  enum { D = WEFT__NODEJSON_MAX_DEPTH };
  static const struct {
    const char *open, *inner, *close;
    int ok_depth; /* containers in the msgpack shape at the limit */
  } cases[] = {
      {"[", "", "]", D},
      {"[", "1", "]", D},
      {"{\"k\":", "{}", "}", D - 1},
      {"[", "{\"type\":\"Buffer\",\"data\":[1]}", "]", D}, /* a bin is a leaf */
      {"{\"k\":", "{\"type\":\"Buffer\",\"data\":[]}", "}", D},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    int d = cases[c].ok_depth;
    char *ok = nested(cases[c].open, cases[c].inner, cases[c].close, d);
    weft__nodejson_in_t in;
    decode_ok(ok, &in);
    /* What decodes, encodes, and decodes again. */
    size_t plen, n;
    const void *p = weft_msg_payload(in.msg, &plen);
    char *line = encode_ok(p, plen, NULL, &n);
    assert_int_equal(n, strlen(ok) + 1);
    assert_memory_equal(line, ok, n - 1);
    weft__free(line);
    weft__nodejson_in_fini(&in);
    free(ok);
    char *deep = nested(cases[c].open, cases[c].inner, cases[c].close, d + 1);
    decode_fails(deep, strlen(deep), WEFT_EUNREPRESENTABLE);
    free(deep);
  }
  /* Near the limit, a Buffer's data array is not a container; anything else
   * at that depth is. */
  char *notbuf = nested("[", "{\"type\":\"Buffer\",\"data\":[1,\"x\"]}", "]", D - 1);
  decode_fails(notbuf, strlen(notbuf), WEFT_EUNREPRESENTABLE);
  free(notbuf);
  notbuf = nested("[", "{\"type\":\"Buffer\",\"data\":[[]]}", "]", D - 1);
  decode_fails(notbuf, strlen(notbuf), WEFT_EUNREPRESENTABLE);
  free(notbuf);
  /* Past the limit, what follows still counts: a line malformed after it is
   * malformed, and an internal line says what it was. */
  char *deep = nested("[", "", "]", D + 1);
  size_t dl = strlen(deep);
  char *bad = malloc(dl + 3);
  assert_non_null(bad);
  memcpy(bad, deep, dl);
  memcpy(bad + dl, ",]", 3);
  decode_fails(bad, dl + 2, WEFT_EPROTO);
  free(bad);
  char *handle = malloc(dl + 64);
  assert_non_null(handle);
  int hl = snprintf(handle, dl + 64, "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":%s}",
                    deep);
  weft__nodejson_in_t in;
  assert_int_equal(weft__nodejson_decode(handle, (size_t)hl, &in), WEFT_EUNREPRESENTABLE);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE);
  assert_string_equal(in.handle_type, "net.Socket");
  assert_null(in.msg);
  weft__nodejson_in_fini(&in);
  free(handle);
  free(deep);
  /* A hostile line: 100 MiB of '[' (never closed), then 50 MiB of '[' and
   * as many ']': named errors, no deep C stack (the decoder is iterative and
   * keeps no frame past the limit). */
  size_t big = (size_t)100 << 20;
  char *flood = malloc(big);
  assert_non_null(flood);
  memset(flood, '[', big);
  decode_fails(flood, big, WEFT_EPROTO);
  memset(flood + big / 2, ']', big / 2);
  decode_fails(flood, big, WEFT_EUNREPRESENTABLE);
  free(flood);
}

/* Lone surrogates travel as WTF-8 (their 3-byte generalized UTF-8 form) and
 * go back to Node as the same escapes; a pair is one 4-byte character. */
static void lone_surrogates_round_trip(void **state) {
  (void)state;
  decodes_to("\"\\ud800\"", "\xa3\xed\xa0\x80", 4);
  decodes_to("\"\\udfff\"", "\xa3\xed\xbf\xbf", 4);
  decodes_to("\"a\\udc00b\"", "\xa5" "a\xed\xb0\x80" "b", 6);
  /* trail then lead: two lone ones, not a pair */
  decodes_to("\"\\udc00\\ud800\"", "\xa6\xed\xb0\x80\xed\xa0\x80", 7);
  /* a lead before a non-surrogate escape, before a raw character */
  decodes_to("\"\\ud800\\u0041\\uD83D\xc3\xa9\"", "\xa9\xed\xa0\x80" "A\xed\xa0\xbd\xc3\xa9", 10);
  decodes_to("{\"\\ud800\":1}", "\x81\xa3\xed\xa0\x80\x01", 6);
  /* Back to Node: the escapes JSON.stringify writes (lowercase). */
  static const char *const lines[] = {
      "\"\\ud800\"", "\"x\\udc00\\ud800y\"", "[\"\\udbff\",{\"\\udfff\":\"\\ud83d\"}]",
      "\"\\ud800\xf0\x9f\x98\x80\\udc00\"",
  };
  for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
    weft__nodejson_in_t in;
    decode_ok(lines[i], &in);
    size_t plen, n;
    const void *p = weft_msg_payload(in.msg, &plen);
    char *out = encode_ok(p, plen, NULL, &n);
    if (n != strlen(lines[i]) + 1 || memcmp(out, lines[i], n - 1) != 0)
      fail_msg("round trip:\n  in  %s\n  out %s", lines[i], out);
    weft__free(out);
    weft__nodejson_in_fini(&in);
  }
  /* Not WTF-8: a lead and a trail surrogate in 3-byte forms side by side
   * (that pair has a 4-byte form), a raw surrogate in a line. */
  encode_fails("\xa6\xed\xa0\x80\xed\xb0\x80", 7, WEFT_ETYPE);
  encode_fails("\x81\xa6\xed\xa0\x80\xed\xb0\x80\x01", 9, WEFT_ETYPE);
  encodes_to("\xa6\xed\xb0\x80\xed\xa0\x80", 7, "\"\\udc00\\ud800\"\n");
  decode_fails("\"\xed\xa0\x80\"", 5, WEFT_EPROTO);
}

/* Keys may hold NUL (msgpack strs carry any byte); so may strings. */
static void nul_in_keys(void **state) {
  (void)state;
  decodes_to("{\"a\\u0000b\":1}", "\x81\xa3" "a\0b" "\x01", 6);
  decodes_to("{\"\\u0000\":1,\"\":2}", "\x82\xa1\0\x01\xa0\x02", 6);
  /* distinct from "a": no last-one-wins between them */
  decodes_to("{\"a\":1,\"a\\u0000\":2}", "\x82\xa1" "a\x01\xa2" "a\0\x02", 8);
  encodes_to("\x81\xa3" "a\0b" "\x01", 6, "{\"a\\u0000b\":1}\n");
  /* weft's readers match whole keys: "a" is not "a\0b". */
  weft__nodejson_in_t in;
  decode_ok("{\"a\\u0000b\":1,\"a\":2}", &in);
  int64_t v;
  assert_int_equal(weft_msg_get_i64(in.msg, "a", &v), 0);
  assert_int_equal(v, 2);
  weft__nodejson_in_fini(&in);
  decode_ok("{\"a\\u0000b\":1}", &in);
  assert_int_equal(weft_msg_get_i64(in.msg, "a", &v), WEFT_ENOKEY);
  weft__nodejson_in_fini(&in);
}

/* Duplicate keys in every position, big objects included (sorted path). */
static void duplicate_keys(void **state) {
  (void)state;
  decodes_to("{\"a\":1,\"b\":2,\"a\":3}", "\x82\xa1" "a\x03\xa1" "b\x02", 7);
  decodes_to("{\"a\":[1,2],\"a\":{}}", "\x81\xa1" "a\x80", 4);
  decodes_to("{\"type\":\"x\",\"data\":[1],\"type\":\"Buffer\"}", "\xc4\x01\x01", 3);
  /* 40 keys k0..k19 twice: the second values win, first places kept. */
  char line[1024];
  int n = snprintf(line, sizeof(line), "{");
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 20; i++)
      n += snprintf(line + n, sizeof(line) - (size_t)n, "%s\"k%d\":%d", n > 1 ? "," : "", i,
                    r * 100 + i);
  n += snprintf(line + n, sizeof(line) - (size_t)n, "}");
  weft__nodejson_in_t in;
  decode_ok(line, &in);
  size_t plen, ol;
  const void *p = weft_msg_payload(in.msg, &plen);
  char *out = encode_ok(p, plen, NULL, &ol);
  char want[1024];
  int w = snprintf(want, sizeof(want), "{");
  for (int i = 0; i < 20; i++)
    w += snprintf(want + w, sizeof(want) - (size_t)w, "%s\"k%d\":%d", i ? "," : "", i, 100 + i);
  snprintf(want + w, sizeof(want) - (size_t)w, "}\n");
  assert_string_equal(out, want);
  weft__free(out);
  weft__nodejson_in_fini(&in);
}

/* ---- msgpack -> JSON ----------------------------------------------------------- */

static void pk_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void pk_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void pk_false(msgpack_packer *pk) { msgpack_pack_false(pk); }
static void pk_neg(msgpack_packer *pk) { msgpack_pack_int8(pk, -5); }
static void pk_int8_pos(msgpack_packer *pk) { msgpack_pack_int8(pk, 5); }
static void pk_u64_max_ok(msgpack_packer *pk) { msgpack_pack_uint64(pk, INT64_MAX); }
static void pk_u64_too_big(msgpack_packer *pk) { msgpack_pack_uint64(pk, (uint64_t)INT64_MAX + 1); }
static void pk_i64_min(msgpack_packer *pk) { msgpack_pack_int64(pk, INT64_MIN); }
static void pk_f64(msgpack_packer *pk) { msgpack_pack_double(pk, 1.5); }
static void pk_f64_tenth(msgpack_packer *pk) { msgpack_pack_double(pk, 0.1); }
static void pk_f64_whole(msgpack_packer *pk) { msgpack_pack_double(pk, 2.0); }
static void pk_f64_negzero(msgpack_packer *pk) { msgpack_pack_double(pk, -0.0); }
static void pk_f32(msgpack_packer *pk) { msgpack_pack_float(pk, 0.5f); }
static void pk_nan(msgpack_packer *pk) { msgpack_pack_double(pk, NAN); }
static void pk_inf(msgpack_packer *pk) { msgpack_pack_double(pk, -INFINITY); }
static void pk_f32_inf(msgpack_packer *pk) { msgpack_pack_float(pk, INFINITY); }
static void pk_str(msgpack_packer *pk) {
  msgpack_pack_str(pk, 12);
  msgpack_pack_str_body(pk, "x\ny\"\\\x01\t\xc3\xa9/\0\x7f", 12);
}
static void pk_str_2028(msgpack_packer *pk) {
  msgpack_pack_str(pk, 3);
  msgpack_pack_str_body(pk, "\xe2\x80\xa8", 3);
}
static void pk_bad_str(msgpack_packer *pk) {
  msgpack_pack_str(pk, 2);
  msgpack_pack_str_body(pk, "\xc0\x80", 2); /* overlong (a lone surrogate is WTF-8: fine) */
}
static void pk_bin(msgpack_packer *pk) {
  msgpack_pack_bin(pk, 3);
  msgpack_pack_bin_body(pk, "\x00hi", 3);
}
static void pk_bin_empty(msgpack_packer *pk) { msgpack_pack_bin(pk, 0); }
static void pk_ext(msgpack_packer *pk) {
  msgpack_pack_ext(pk, 1, 1);
  msgpack_pack_ext_body(pk, "x", 1);
}
static void pk_ext_inside(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  msgpack_pack_nil(pk);
  pk_ext(pk);
}
static void pk_array(msgpack_packer *pk) {
  msgpack_pack_array(pk, 4);
  msgpack_pack_int(pk, 1);
  msgpack_pack_array(pk, 0);
  msgpack_pack_map(pk, 0);
  pk_bin(pk);
}
static void pk_map(msgpack_packer *pk) {
  msgpack_pack_map(pk, 3);
  msgpack_pack_str_with_body(pk, "b", 1);
  msgpack_pack_int(pk, 1);
  msgpack_pack_str_with_body(pk, "a", 1);
  msgpack_pack_map(pk, 1);
  msgpack_pack_str_with_body(pk, "", 0);
  msgpack_pack_nil(pk);
  msgpack_pack_str_with_body(pk, "k\n", 2);
  msgpack_pack_true(pk);
}
static void pk_map_dup(msgpack_packer *pk) {
  msgpack_pack_map(pk, 2);
  msgpack_pack_str_with_body(pk, "a", 1);
  msgpack_pack_int(pk, 1);
  msgpack_pack_str_with_body(pk, "a", 1);
  msgpack_pack_int(pk, 2);
}
static void pk_map_int_key(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  msgpack_pack_int(pk, 1);
  msgpack_pack_int(pk, 1);
}
static void pk_map_bin_key(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  msgpack_pack_bin_with_body(pk, "a", 1);
  msgpack_pack_int(pk, 1);
}
static void pk_map_bad_key(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  msgpack_pack_str_with_body(pk, "\xff", 1);
  msgpack_pack_int(pk, 1);
}

static void msgpack_to_json_each_type(void **state) {
  (void)state;
  encode_built(pk_nil, "null\n");
  encode_built(pk_true, "true\n");
  encode_built(pk_false, "false\n");
  encode_built(pk_neg, "-5\n");
  encode_built(pk_int8_pos, "5\n");
  encode_built(pk_u64_max_ok, "9223372036854775807\n");
  encode_built(pk_i64_min, "-9223372036854775808\n");
  encode_built(pk_f64, "1.5\n");
  encode_built(pk_f64_tenth, "0.10000000000000001\n"); /* 17 digits: exact round trip */
  encode_built(pk_f64_whole, "2.0\n");
  encode_built(pk_f64_negzero, "-0.0\n");
  encode_built(pk_f32, "0.5\n");
  encode_built(pk_nan, "null\n"); /* like JSON.stringify */
  encode_built(pk_inf, "null\n");
  encode_built(pk_f32_inf, "null\n");
  encode_built(pk_str, "\"x\\ny\\\"\\\\\\u0001\\t\xc3\xa9/\\u0000\x7f\"\n");
  encode_built(pk_str_2028, "\"\xe2\x80\xa8\"\n");
  encode_built(pk_bin, "{\"type\":\"Buffer\",\"data\":[0,104,105]}\n");
  encode_built(pk_bin_empty, "{\"type\":\"Buffer\",\"data\":[]}\n");
  encode_built(pk_array, "[1,[],{},{\"type\":\"Buffer\",\"data\":[0,104,105]}]\n");
  encode_built(pk_map, "{\"b\":1,\"a\":{\"\":null},\"k\\n\":true}\n"); /* order kept */
  encode_built(pk_map_dup, "{\"a\":1,\"a\":2}\n"); /* JSON.parse keeps the last */
  encode_built_fails(pk_u64_too_big, WEFT_ETYPE);
  encode_built_fails(pk_bad_str, WEFT_ETYPE);
  encode_built_fails(pk_ext, WEFT_ETYPE);
  encode_built_fails(pk_ext_inside, WEFT_ETYPE);
  encode_built_fails(pk_map_int_key, WEFT_ETYPE);
  encode_built_fails(pk_map_bin_key, WEFT_ETYPE);
  encode_built_fails(pk_map_bad_key, WEFT_ETYPE);
}

static void encoder_rejects_bad_payloads(void **state) {
  (void)state;
  encode_fails("", 0, WEFT_EPROTO);
  encode_fails("\xc1", 1, WEFT_EPROTO);             /* never used */
  encode_fails("\x01\x02", 2, WEFT_EPROTO);         /* two values */
  encode_fails("\x92\x01", 2, WEFT_EPROTO);         /* truncated array */
  encode_fails("\xa3" "ab", 3, WEFT_EPROTO);        /* truncated str */
  encode_fails("\xdd\xff\xff\xff\xff", 5, WEFT_EPROTO); /* claims 4G elements */
  char *out;
  size_t n;
  assert_int_equal(weft__nodejson_encode(NULL, 1, NULL, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_encode("\xc0", 1, NULL, NULL, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_encode("\xc0", 1, NULL, &out, NULL), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_encode("\xc0", 1, "\xff", &out, &n), WEFT_EINVAL);
  /* Nesting: WEFT__NODEJSON_MAX_DEPTH containers encode, one more does not. */
  enum { D = WEFT__NODEJSON_MAX_DEPTH };
  uint8_t *deep = malloc(D + 1);
  assert_non_null(deep);
  memset(deep, 0x91, D + 1);
  deep[D - 1] = 0x90;
  char *line = encode_ok(deep, D, NULL, &n);
  assert_int_equal(n, (size_t)D * 2 + 1);
  weft__free(line);
  deep[D - 1] = 0x91;
  deep[D] = 0x90;
  encode_fails(deep, D + 1, WEFT_EUNREPRESENTABLE);
  free(deep);
}

static void handle_wrapper_and_control_lines(void **state) {
  (void)state;
  weft_msg_t *m = NULL;
  assert_int_equal(weft_msg_new(&m), 0);
  assert_int_equal(weft_msg_put_map(m, 1), 0);
  assert_int_equal(weft_msg_put_bool(m, "back", true), 0);
  size_t plen, n;
  const void *p = weft_msg_payload(m, &plen);
  char *line = encode_ok(p, plen, "net.Native", &n);
  assert_string_equal(line, "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"back\":true}}\n");
  /* ... and it decodes as what it is. */
  weft__nodejson_in_t in;
  assert_int_equal(weft__nodejson_decode(line, n - 1, &in), 0);
  assert_int_equal(in.kind, WEFT__NODEJSON_NODE_HANDLE);
  assert_string_equal(in.handle_type, "net.Native");
  size_t len2;
  const void *p2 = weft_msg_payload(in.msg, &len2);
  assert_int_equal(len2, plen);
  assert_memory_equal(p2, p, plen);
  weft__nodejson_in_fini(&in);
  weft__free(line);
  weft_msg_free(m);

  static const struct {
    const char *cmd, *key;
    int64_t count;
    const char *want;
  } ctl[] = {
      {"NODE_HANDLE_ACK", NULL, -1, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n"},
      {"NODE_HANDLE_NACK", NULL, -1, "{\"cmd\":\"NODE_HANDLE_NACK\"}\n"},
      {"NODE_SOCKET_ALL_CLOSED", "4:127.0.0.1:0", -1,
       "{\"cmd\":\"NODE_SOCKET_ALL_CLOSED\",\"key\":\"4:127.0.0.1:0\"}\n"},
      {"NODE_SOCKET_COUNT", "4:127.0.0.1:0", 0,
       "{\"cmd\":\"NODE_SOCKET_COUNT\",\"key\":\"4:127.0.0.1:0\",\"count\":0}\n"},
      {"NODE_SOCKET_COUNT", "k\"\n", 3,
       "{\"cmd\":\"NODE_SOCKET_COUNT\",\"key\":\"k\\\"\\n\",\"count\":3}\n"},
  };
  for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
    char *out = NULL;
    assert_int_equal(weft__nodejson_control(ctl[i].cmd, ctl[i].key, ctl[i].count, &out, &n), 0);
    assert_int_equal(n, strlen(ctl[i].want));
    assert_string_equal(out, ctl[i].want);
    assert_int_equal(weft__nodejson_decode(out, n - 1, &in), 0);
    assert_string_equal(in.cmd, ctl[i].cmd);
    weft__nodejson_in_fini(&in);
    weft__free(out);
  }
  char *out = NULL;
  assert_int_equal(weft__nodejson_control("NODE_", NULL, -1, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_control("HANDLE_ACK", NULL, -1, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_control(NULL, NULL, -1, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_control("NODE_X\xff", NULL, -1, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_control("NODE_X", "\xc3", -1, &out, &n), WEFT_EINVAL);
  assert_int_equal(weft__nodejson_control("NODE_X", NULL, -1, NULL, &n), WEFT_EINVAL);
  assert_null(out);
}

static void is_internal_question(void **state) {
  (void)state;
  static const struct {
    const char *bytes;
    size_t len;
    bool internal;
  } cases[] = {
      {"\x81\xa3" "cmd\xa6NODE_X", 12, true},
      {"\x81\xa3" "cmd\xa5NODE_", 11, false},
      {"\x81\xa3" "cmd\xa6node_x", 12, false},
      {"\x81\xa3" "cmd\x01", 6, false},
      {"\x81\xa4" "cmdx\xa6NODE_X", 13, false},
      {"\x91\xa6NODE_X", 8, false},
      {"\xa6NODE_X", 7, false},
      /* The last "cmd" survives encoding, so it decides. */
      {"\x82\xa3" "cmd\xa6NODE_X\xa3" "cmd\x01", 17, false},
      {"\x82\xa3" "cmd\x01\xa3" "cmd\xa6NODE_X", 17, true},
      {"\x82\xa1" "a\x91\x81\xa1" "b\x90\xa3" "cmd\xa6NODE_X", 19, true},
      {"\x81\xa3" "cmd\xa6NODE_X\xc0", 13, false}, /* trailing bytes: no line */
      {"\x81\xa3" "cmd\xa6NODE_", 11, false}, /* truncated */
      {"", 0, false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (weft__nodejson_is_internal(cases[i].bytes, cases[i].len) != cases[i].internal)
      fail_msg("case %zu", i);
    if (!cases[i].internal)
      continue;
    /* Agrees with what Node will see. */
    size_t n;
    char *line = encode_ok(cases[i].bytes, cases[i].len, NULL, &n);
    weft__nodejson_in_t in;
    assert_int_equal(weft__nodejson_decode(line, n - 1, &in), 0);
    assert_int_not_equal(in.kind, WEFT__NODEJSON_USER);
    weft__nodejson_in_fini(&in);
    weft__free(line);
  }
  assert_false(weft__nodejson_is_internal(NULL, 3));
}

/* ---- round trips ---------------------------------------------------------------- */

/* Compact lines the encoder writes back byte for byte. */
static void json_round_trips(void **state) {
  (void)state;
  static const char *const lines[] = {
      "{\"a\":1,\"s\":\"x\\ny\",\"n\":null,\"d\":\"1970-01-01T00:00:00.000Z\"}",
      "\"plain string\"",
      "42",
      "[1,-2,1.5,true,false,null,\"\xc3\xa9\",{\"type\":\"Buffer\",\"data\":[104,105]}]",
      "{}",
      "[]",
      "\"\"",
      "-9223372036854775808",
      "1.0715086071862673e301", /* 2^1000, 17 digits: printed as is */
      "0.10000000000000001",
      "{\"cmd\":\"NODE_CLUSTER\",\"act\":\"queryServer\",\"seq\":3,\"data\":null}",
      "{\"z\":{\"y\":[[[\"\\u0000\\u001f\\\"\\\\\"]]]}}",
      "\"\xf0\x9f\x98\x80 \\r\\t\\b\\f\"",
  };
  for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
    weft__nodejson_in_t in;
    decode_ok(lines[i], &in);
    size_t plen, n;
    const void *p = weft_msg_payload(in.msg, &plen);
    char *out = encode_ok(p, plen, NULL, &n);
    if (n != strlen(lines[i]) + 1 || memcmp(out, lines[i], n - 1) != 0)
      fail_msg("round trip:\n  in  %s\n  out %s", lines[i], out);
    weft__free(out);
    weft__nodejson_in_fini(&in);
  }
}

/* A payload with every type goes to JSON and back to the same bytes. */
static void pk_rich(msgpack_packer *pk) {
  msgpack_pack_map(pk, 9);
  msgpack_pack_str_with_body(pk, "u", 1);
  msgpack_pack_uint64(pk, 300);
  msgpack_pack_str_with_body(pk, "i", 1);
  msgpack_pack_int64(pk, -70000);
  msgpack_pack_str_with_body(pk, "f", 1);
  msgpack_pack_double(pk, 3.141592653589793);
  msgpack_pack_str_with_body(pk, "s", 1);
  msgpack_pack_str_with_body(pk, "h\xc3\xa9llo\n", 7);
  msgpack_pack_str_with_body(pk, "b", 1);
  msgpack_pack_bin_with_body(pk, "\x00\x01\xfe\xff", 4);
  msgpack_pack_str_with_body(pk, "t", 1);
  msgpack_pack_true(pk);
  msgpack_pack_str_with_body(pk, "n", 1);
  msgpack_pack_nil(pk);
  msgpack_pack_str_with_body(pk, "a", 1);
  msgpack_pack_array(pk, 3);
  msgpack_pack_int(pk, 1);
  msgpack_pack_array(pk, 0);
  msgpack_pack_double(pk, 1e-300);
  msgpack_pack_str_with_body(pk, "big", 3);
  msgpack_pack_uint64(pk, UINT32_MAX + 1ull);
}

static void msgpack_round_trips(void **state) {
  (void)state;
  weft_msg_t *m = built(pk_rich);
  size_t plen, n;
  const void *p = weft_msg_payload(m, &plen);
  char *line = encode_ok(p, plen, NULL, &n);
  weft__nodejson_in_t in;
  assert_int_equal(weft__nodejson_decode(line, n - 1, &in), 0);
  size_t len2;
  const void *p2 = weft_msg_payload(in.msg, &len2);
  assert_int_equal(len2, plen);
  assert_memory_equal(p2, p, plen);
  weft__nodejson_in_fini(&in);
  weft__free(line);
  weft_msg_free(m);
}

/* ---- failure sweeps and guard pages ----------------------------------------- */

static void decode_alloc_failure_sweep(void **state) {
  (void)state;
  static const char *const lines[] = {
      "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"tag\":\"a long enough "
      "string to leave the inline area of a message\",\"n\":[1,2,3]},\"key\":\"4:1:0\"}",
      "{\"cmd\":\"NODE_CLUSTER\",\"key\":\"k\",\"act\":\"online\",\"seq\":1,\"pad\":\"" 
      "0123456789012345678901234567890123456789\"}",
      "{\"cmd\":\"NODE_HANDLE_ACK\"}",
      "[\"0123456789012345678901234567890123456789012345678901234567890123\",{\"type\":"
      "\"Buffer\",\"data\":[1]}]",
  };
  static const long want_allocs[] = {8, 7, 4, 5}; /* out, frames, keys, message, strings */
  for (size_t l = 0; l < sizeof(lines) / sizeof(lines[0]); l++) {
    long n;
    for (n = 0;; n++) {
      weft__nodejson_in_t in;
      testutil_alloc_fail_after(n);
      int rc = weft__nodejson_decode(lines[l], strlen(lines[l]), &in);
      bool fired = !testutil_alloc_fail_pending();
      testutil_alloc_fail_after(-1);
      if (!fired) {
        assert_int_equal(rc, 0);
        weft__nodejson_in_fini(&in);
        break;
      }
      assert_int_equal(rc, WEFT_ENOMEM);
      assert_null(in.msg);
      assert_null(in.cmd);
      assert_int_equal(testutil_alloc_outstanding(), 0);
    }
    if (n != want_allocs[l])
      fail_msg("line %zu: %ld allocations", l, n);
  }
}

static void encode_alloc_failure_sweep(void **state) {
  (void)state;
  weft_msg_t *m = built(pk_rich);
  size_t plen;
  const void *p = weft_msg_payload(m, &plen);
  long held = testutil_alloc_outstanding(); /* m and its payload */
  long n;
  for (n = 0;; n++) {
    char *out = NULL;
    size_t len;
    testutil_alloc_fail_after(n);
    int rc = weft__nodejson_encode(p, plen, "net.Socket", &out, &len);
    bool fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    if (!fired) {
      assert_int_equal(rc, 0);
      weft__free(out);
      break;
    }
    assert_int_equal(rc, WEFT_ENOMEM);
    assert_null(out);
    assert_int_equal(testutil_alloc_outstanding(), held);
  }
  assert_true(n >= 2); /* the line grows */
  for (n = 0;; n++) {
    char *out = NULL;
    size_t len;
    testutil_alloc_fail_after(n);
    int rc = weft__nodejson_control("NODE_SOCKET_COUNT", "k", 1, &out, &len);
    bool fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    if (!fired) {
      assert_int_equal(rc, 0);
      weft__free(out);
      break;
    }
    assert_int_equal(rc, WEFT_ENOMEM);
  }
  weft_msg_free(m);
}

/* Every prefix of a line and of a payload, ending at a guard page. */
static void prefixes_at_guard_page(void **state) {
  (void)state;
  static const char line[] =
      "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"a\":[1,-2.5,\"\xc3\xa9\","
      "{\"type\":\"Buffer\",\"data\":[255]},null,true]},\"key\":\"4:127.0.0.1:0\"}";
  size_t total = sizeof(line) - 1;
  for (size_t len = 0; len <= total; len++) {
    testutil_guard_t g;
    testutil_guard_init(&g, line, len);
    weft__nodejson_in_t in;
    int rc = weft__nodejson_decode((const char *)g.bytes, len, &in);
    assert_int_equal(rc, len == total ? 0 : WEFT_EPROTO);
    weft__nodejson_in_fini(&in);
    testutil_guard_fini(&g);
  }
  weft_msg_t *m = built(pk_rich);
  size_t plen;
  const uint8_t *p = weft_msg_payload(m, &plen);
  for (size_t len = 0; len <= plen; len++) {
    testutil_guard_t g;
    testutil_guard_init(&g, p, len);
    char *out = NULL;
    size_t n;
    int rc = weft__nodejson_encode(g.bytes, len, NULL, &out, &n);
    assert_int_equal(rc, len == plen ? 0 : WEFT_EPROTO);
    weft__free(out);
    (void)weft__nodejson_is_internal(g.bytes, len);
    testutil_guard_fini(&g);
  }
  weft_msg_free(m);
}

/* The encoder never writes a blank line, whatever one-byte or two-byte
 * payload it is given; what it writes always decodes. */
static void encoder_never_emits_a_blank_line(void **state) {
  (void)state;
  int ok = 0;
  for (int a = 0; a < 256; a++) {
    for (int b = -1; b < 256; b++) {
      uint8_t buf[2] = {(uint8_t)a, (uint8_t)b};
      size_t len = b < 0 ? 1 : 2;
      char *out = NULL;
      size_t n = 0;
      int rc = weft__nodejson_encode(buf, len, NULL, &out, &n);
      if (rc != 0) {
        assert_true(rc == WEFT_EPROTO || rc == WEFT_ETYPE);
        continue;
      }
      ok++;
      assert_true(n >= 2);
      assert_int_equal(out[n - 1], '\n');
      assert_null(memchr(out, '\n', n - 1));
      weft__nodejson_in_t in;
      assert_int_equal(weft__nodejson_decode(out, n - 1, &in), 0);
      weft__nodejson_in_fini(&in);
      weft__free(out);
    }
  }
  assert_true(ok > 256);
}

/* ---- against real Node ------------------------------------------------------- */

/* Node writes the lines (JSON.stringify, as process.send does); they go
 * through the line buffer, the decoder and the encoder; a second Node parses
 * what weft wrote and writes it again. Node must write exactly the same
 * lines the second time: the same values, up to Node's own formatting. */
static const char node_writer[] =
    "const vals = [{a:1,s:'x\\ny',n:null,d:new Date(0)}, 'plain string', 42,\n"
    "  Buffer.from('hi'), [1,-2,1.5,true,false,null,[],{}], {x:{y:[1,{z:'\\u00e9\\u20ac\\u{1d11e}'}]}},\n"
    "  1e20, -1e21, -0, 0.1, 2**53, 2**63, 1e-7, 5e-324, Number.MAX_VALUE, '\\u2028\\u0000\\u001f\\\\\"',\n"
    "  {cmd:'NODE_HANDLE_ACK'}, {cmd:'NODE_HANDLE',type:'net.Native',msg:{back:true}}, NaN, -Infinity,\n"
    "  {u:undefined,f(){},m:new Map([[1,2]])}, {type:'Buffer',data:[1,2]}, {type:'Buffer',data:[300]},\n"
    "  {a:1,b:2,c:{d:[Buffer.alloc(3)]}}, '', [''], 'x'.repeat(5000)];\n"
    "let out = '';\n"
    "for (const v of vals) out += JSON.stringify(v) + '\\n';\n"
    "process.stdout.write(out);\n";
static const char node_rewriter[] =
    "let buf = '';\n"
    "process.stdin.on('data', (d) => { buf += d; });\n"
    "process.stdin.on('end', () => {\n"
    "  const lines = buf.split('\\n');\n"
    "  if (lines.pop() !== '') throw new Error('no final newline');\n"
    "  for (const l of lines) process.stdout.write(JSON.stringify(JSON.parse(l)) + '\\n');\n"
    "});\n";

static char *tmp_write(const char *text, size_t len) {
  char *path = strdup("/tmp/test_nodejson.XXXXXX");
  assert_non_null(path);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  return path;
}

/* Runs cmd and returns all it wrote on stdout (malloc'd, NUL-terminated). */
static char *run_capture(const char *cmd, size_t *len) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, n = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  size_t got;
  while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      cap *= 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
  }
  assert_int_equal(pclose(p), 0);
  out[n] = '\0';
  *len = n;
  return out;
}

static void node_agrees_on_every_line(void **state) {
  (void)state;
  const char *node = WEFT_NODE_EXECUTABLE;
  if (node[0] == '\0')
    skip();
  char *writer = tmp_write(node_writer, sizeof(node_writer) - 1);
  char *rewriter = tmp_write(node_rewriter, sizeof(node_rewriter) - 1);
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "'%s' '%s'", node, writer);
  size_t orig_len;
  char *orig = run_capture(cmd, &orig_len);

  /* Node's lines, in reads of 7 bytes, through weft and back to JSON. */
  weft__linebuf_t lb;
  weft__linebuf_init(&lb, 0);
  size_t cap = 1 << 16, ours_len = 0;
  char *ours = malloc(cap);
  assert_non_null(ours);
  int lines = 0;
  for (size_t off = 0; off < orig_len; off += 7) {
    size_t n = orig_len - off < 7 ? orig_len - off : 7;
    assert_int_equal(weft__linebuf_feed(&lb, orig + off, n), 0);
    const char *line;
    size_t len;
    while (weft__linebuf_next(&lb, &line, &len) == 1) {
      weft__nodejson_in_t in;
      assert_int_equal(weft__nodejson_decode(line, len, &in), 0);
      char *enc;
      size_t elen;
      if (in.kind == WEFT__NODEJSON_NODE_HANDLE_ACK) {
        assert_int_equal(weft__nodejson_control(in.cmd, NULL, -1, &enc, &elen), 0);
      } else {
        size_t plen;
        const void *p = weft_msg_payload(in.msg, &plen);
        assert_int_equal(weft__nodejson_encode(p, plen, in.handle_type, &enc, &elen), 0);
      }
      if (ours_len + elen > cap) {
        cap = 2 * (ours_len + elen);
        ours = realloc(ours, cap);
        assert_non_null(ours);
      }
      memcpy(ours + ours_len, enc, elen);
      ours_len += elen;
      weft__free(enc);
      weft__nodejson_in_fini(&in);
      lines++;
    }
  }
  weft__linebuf_fini(&lb);
  assert_int_equal(lines, 27);

  char *ours_path = tmp_write(ours, ours_len);
  snprintf(cmd, sizeof(cmd), "'%s' '%s' < '%s'", node, rewriter, ours_path);
  size_t again_len;
  char *again = run_capture(cmd, &again_len);
  if (again_len != orig_len || memcmp(again, orig, orig_len) != 0)
    fail_msg("Node disagrees:\n--- Node wrote\n%s--- weft wrote\n%.*s--- Node read that as\n%s",
             orig, (int)ours_len, ours, again);
  unlink(writer);
  unlink(rewriter);
  unlink(ours_path);
  free(writer);
  free(rewriter);
  free(ours_path);
  free(orig);
  free(ours);
  free(again);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(coalesced_read_gives_three_lines, no_leaks),
      cmocka_unit_test_teardown(split_at_every_byte, no_leaks),
      cmocka_unit_test_teardown(utf8_split_inside_a_character, no_leaks),
      cmocka_unit_test_teardown(blank_lines_are_lines, no_leaks),
      cmocka_unit_test_teardown(line_limit_checked_before_growing, no_leaks),
      cmocka_unit_test_teardown(buffer_compacts_and_shrinks, no_leaks),
      cmocka_unit_test_teardown(linebuf_feed_out_of_memory, no_leaks),
      cmocka_unit_test_teardown(json_to_msgpack_each_type, no_leaks),
      cmocka_unit_test_teardown(buffer_form_becomes_bin, no_leaks),
      cmocka_unit_test_teardown(integers_past_int64, no_leaks),
      cmocka_unit_test_teardown(reference_lines_decode, no_leaks),
      cmocka_unit_test_teardown(node_handle_observed_examples, no_leaks),
      cmocka_unit_test_teardown(ack_nack_and_other_commands, no_leaks),
      cmocka_unit_test_teardown(what_is_not_internal, no_leaks),
      cmocka_unit_test_teardown(invalid_lines_are_rejected, no_leaks),
      cmocka_unit_test_teardown(invalid_utf8_is_rejected, no_leaks),
      cmocka_unit_test_teardown(depth_limit, no_leaks),
    cmocka_unit_test_teardown(lone_surrogates_round_trip, no_leaks),
    cmocka_unit_test_teardown(nul_in_keys, no_leaks),
    cmocka_unit_test_teardown(duplicate_keys, no_leaks),
      cmocka_unit_test_teardown(msgpack_to_json_each_type, no_leaks),
      cmocka_unit_test_teardown(encoder_rejects_bad_payloads, no_leaks),
      cmocka_unit_test_teardown(handle_wrapper_and_control_lines, no_leaks),
      cmocka_unit_test_teardown(is_internal_question, no_leaks),
      cmocka_unit_test_teardown(json_round_trips, no_leaks),
      cmocka_unit_test_teardown(msgpack_round_trips, no_leaks),
      cmocka_unit_test_teardown(decode_alloc_failure_sweep, no_leaks),
      cmocka_unit_test_teardown(encode_alloc_failure_sweep, no_leaks),
      cmocka_unit_test_teardown(prefixes_at_guard_page, no_leaks),
      cmocka_unit_test_teardown(encoder_never_emits_a_blank_line, no_leaks),
      cmocka_unit_test_teardown(node_agrees_on_every_line, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
