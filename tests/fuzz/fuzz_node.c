/* fuzz_node.c: stateful libFuzzer target for a node's connection (node.c,
 * node_chan.c): the handshake and the multiplexing layer, fed sequences of
 * frames as a peer would send them.
 *
 * Each input makes a runtime and a real node ("fz", no listener, no dialer)
 * that publishes "echo" (an actor that answers requests) and "sink" (a port
 * whose consumer never reads, bounded to 2 messages: what does not fit waits
 * uncredited). A detached connection (weft__node_conn_detached: no stream;
 * what it writes goes nowhere) is fed the script below; the loop runs between
 * feeds so ports' callbacks, replies and credits happen.
 *
 * The first byte configures: bit 0 a shared secret on the node; bits 1-2
 * nonzero: start with a valid HELLO (and, with a secret, the right AUTH), so
 * most inputs get past the handshake. Then each byte is an operation:
 *   HELLO (version, flags, windows, name chosen), AUTH (right or wrong),
 *   LOOKUP (echo / sink / unknown, a channel id chosen), MSG first frame
 *   (payload, buffers, ports as plain or reply items, LAST or not), MSG
 *   continuation, DATA (a length chosen, the body now or not), CREDIT, CLOSE, FOUND / NOTFOUND / PING / REFUSE, raw bytes,
 *   a lookup made by the node itself (so the peer can answer it), a post on
 *   a port the node gave the program, running the loop.
 * Channel ids are drawn from a small set, with or without the sender bit, so
 * the fuzzer meets the channels it opened.
 *
 * Invariants (a violation aborts): no crash or undefined behaviour (ASan,
 * UBSan); a feed that ends the connection names one of weft's errors; the
 * published sink never holds more than its bound plus the window; at the end
 * the connection is released, the node closed, the runtime freed, and no
 * weft allocation is left. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/md.h>

#include "node_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define SECRET "fuzz-secret"
#define WINDOW_MSGS 4u
#define WINDOW_BYTES (64u * 1024u)
#define SINK_HWM 2u
#define END_SPIN_NS (2u * 1000u * 1000u * 1000u)

static void fail(const char *what) {
  fprintf(stderr, "fuzz_node: %s\n", what);
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
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_runtime_free(rt) != 0)
    fail("warm-up runtime");
  return 0;
}

/* ---- the input ------------------------------------------------------------- */

typedef struct {
  const uint8_t *p;
  size_t n, at;
} input_t;

static uint8_t next(input_t *in) { return in->at < in->n ? in->p[in->at++] : 0; }

static uint32_t pick_u32(input_t *in) {
  static const uint32_t table[] = {0, 1, 2, 4, 5, 65536, INT32_MAX, UINT32_MAX};
  uint8_t b = next(in);
  if (b < 8)
    return table[b];
  if (b < 128)
    return b - 8u;
  return (uint32_t)next(in) << 24 | (uint32_t)next(in) << 16 | (uint32_t)next(in) << 8 |
         next(in);
}

static uint64_t pick_u64(input_t *in) {
  static const uint64_t table[] = {0, 1, 100, 65536, 1u << 20, INT64_MAX,
                                   (uint64_t)INT64_MAX + 1, UINT64_MAX};
  uint8_t b = next(in);
  if (b < 8)
    return table[b];
  if (b < 128)
    return (uint64_t)(b - 8u) * 64u;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | next(in);
  return v;
}

/* A channel id as the peer writes it: small ids, its own (bit 63) or the
 * node's; now and then any id at all. */
static uint64_t pick_chan(input_t *in) {
  uint8_t b = next(in);
  if (b == 0xff)
    return pick_u64(in);
  uint64_t id = b & 0x0f;
  return b & 0x80 ? id | WEFT__NET_OWN_BIT : id;
}

/* ---- one run ----------------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  uv_loop_t *loop;
  weft_node_t *node;
  node_conn_t *conn;
  bool dead;
  bool node_closed;
  weft_port_t *sink;       /* the consumer end of "sink" */
  weft_port_t *given[8];   /* ports the node gave the program (lookups) */
  int ngiven;
  uv_idle_t alive;
  uint8_t frame[WEFT__NET_MAX_FRAME + 64];
} run_t;

static run_t R;

static void echo(weft_port_t *self, weft_msg_t *req) {
  (void)self;
  weft_msg_t *r;
  if (weft_msg_is_request(req) && weft_msg_new(&r) == 0) {
    weft_msg_put_u64(r, NULL, 42);
    if (weft_msg_reply(req, r) != 0)
      weft_msg_free(r);
  }
  weft_msg_free(req);
}

static void drop(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

static void on_idle(uv_idle_t *h) { (void)h; }

/* A port gone (its close event): the program forgets it. */
static void on_given_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)info;
  for (int i = 0; i < R.ngiven; i++)
    if (R.given[i] == p) {
      R.given[i] = R.given[--R.ngiven];
      return;
    }
}

static void on_lookup(weft_node_t *n, int status, weft_port_t *port, void *data) {
  (void)n;
  (void)data;
  if (status != 0)
    return;
  if (R.ngiven < 8 && weft_port_on_close(port, on_given_close) == 0)
    R.given[R.ngiven++] = port;
  else
    weft_port_close(port);
}

static void on_node_closed(weft_node_t *n, void *data) {
  (void)n;
  (void)data;
  R.node_closed = true;
}

static void check_sink(void) {
  if (R.sink == NULL)
    return;
  size_t n = weft_port_pending(R.sink);
  if (n > SINK_HWM + WINDOW_MSGS + 2)
    fail("the published sink holds more than its bound and the window");
}

static void feed(const uint8_t *p, size_t n) {
  if (R.dead || R.conn == NULL)
    return;
  int err = weft__node_conn_feed(R.conn, p, n);
  if (err == 0)
    return;
  if (err > 0 || weft_err_name(err) == NULL)
    fail("a feed ended the connection without a named error");
  /* A dead connection frees itself from its own tasks once they run: it is
   * released now, before the loop turns, and not touched again. */
  R.dead = true;
  weft__node_conn_release(R.conn);
  R.conn = NULL;
}

static void run_loop(int turns) {
  for (int i = 0; i < turns; i++)
    uv_run(R.loop, UV_RUN_NOWAIT);
  check_sink();
}

static void mac(const uint8_t *verifier_nonce, const uint8_t *prover_nonce, const char *prover,
                uint8_t out[WEFT__NET_MAC]) {
  static const char label[] = "weft-node-auth-1";
  uint8_t in[sizeof(label) + 2 * WEFT__NET_NONCE + 64];
  size_t k = 0;
  memcpy(in, label, sizeof(label));
  k += sizeof(label);
  memcpy(in + k, verifier_nonce, WEFT__NET_NONCE);
  k += WEFT__NET_NONCE;
  memcpy(in + k, prover_nonce, WEFT__NET_NONCE);
  k += WEFT__NET_NONCE;
  memcpy(in + k, prover, strlen(prover));
  k += strlen(prover);
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const uint8_t *)SECRET,
                  strlen(SECRET), in, k, out);
}

static const uint8_t PEER_NONCE[WEFT__NET_NONCE] = {1, 2, 3};

static void send_hello(uint16_t version, uint16_t flags, uint32_t wm, uint64_t wb,
                       const char *name, uint8_t name_len) {
  size_t n = weft__net_put_hello(R.frame, flags, 99, PEER_NONCE, wm, wb, 1u << 20, 1000, name,
                                 name_len);
  R.frame[WEFT__NET_HEAD + 8] = (uint8_t)(version >> 8);
  R.frame[WEFT__NET_HEAD + 9] = (uint8_t)version;
  feed(R.frame, n);
}

/* The peer proves it knows the secret (the node's nonce is in the
 * connection: a real peer read it from the node's HELLO). */
static void send_auth(bool right) {
  uint8_t m[WEFT__NET_MAC] = {0};
  if (R.conn == NULL || R.dead)
    return;
  if (right)
    mac(R.conn->nonce, PEER_NONCE, "peer", m);
  feed(R.frame, weft__net_put_auth(R.frame, m));
}

static void op_hello(input_t *in, bool secret) {
  uint8_t b = next(in);
  uint16_t version = b & 1 ? (uint16_t)next(in) : WEFT__NET_VERSION;
  uint16_t flags = b & 2 ? (uint16_t)next(in) : (secret ? 1 : 0);
  uint32_t wm = b & 4 ? pick_u32(in) : 64;
  uint64_t wb = b & 8 ? pick_u64(in) : 1u << 20;
  static const char *names[] = {"peer", "fz", "p\0eer", ""};
  const char *name = names[(b >> 4) & 3];
  uint8_t len = (uint8_t)((b >> 4 & 3) == 2 ? 5 : strlen(name));
  send_hello(version, flags, wm, wb, name, len);
}

static void op_lookup(input_t *in) {
  static const char *names[] = {"echo", "sink", "none", "echo\0"};
  uint8_t b = next(in);
  const char *name = names[b & 3];
  uint8_t len = (uint8_t)((b & 3) == 3 ? 5 : strlen(name));
  feed(R.frame, weft__net_put_lookup(R.frame, pick_chan(in), name, len));
}

/* A first MSG frame: payload, up to 4 items (buffers and ports), data (all
 * of the message or a part of it), LAST or not. */
static void op_msg_first(input_t *in) {
  uint8_t shape = next(in);
  uint64_t chan = pick_chan(in);
  uint32_t payload = shape & 0x40 ? pick_u32(in) : next(in);
  uint16_t nitems = shape & 3;
  weft__net_item_t items[4];
  uint64_t total = payload;
  for (uint16_t i = 0; i < nitems; i++) {
    uint8_t k = next(in);
    memset(&items[i], 0, sizeof(items[i]));
    if (k & 1) {
      items[i].kind = WEFT__NET_X_PORT;
      items[i].reply = (k & 2) != 0;
      items[i].chan = pick_chan(in);
      if ((items[i].chan & ~WEFT__NET_OWN_BIT) == 0)
        items[i].chan |= 1;
    } else {
      items[i].kind = WEFT__NET_X_BUF;
      items[i].len = k & 4 ? pick_u64(in) : (uint64_t)next(in) * 16;
      total += items[i].len;
    }
  }
  size_t data = shape & 0x80 ? next(in) : (size_t)(total < 4096 ? total : 4096);
  uint8_t flags = WEFT__NET_F_FIRST | (shape & 4 ? 0 : WEFT__NET_F_LAST);
  size_t h = weft__net_put_msg_head(R.frame, chan, flags, payload, items, nitems, data);
  memset(R.frame + h, 0xc0, data);
  feed(R.frame, h + data);
}

/* A DATA frame: its header, and its body now (up to 64 KiB of it) or not
 * (then raw bytes, or the next frames, are taken as the body). */
static void op_data(input_t *in) {
  static uint8_t body[64 * 1024];
  uint8_t b = next(in);
  uint64_t chan = pick_chan(in);
  uint32_t len = b & 1 ? pick_u32(in) : (uint32_t)next(in) * 64;
  feed(R.frame, weft__net_put_data_head(R.frame, chan, len));
  if (b & 2) {
    size_t k = len < sizeof(body) ? len : sizeof(body);
    memset(body, 0xd0, k);
    feed(body, k);
  }
}

static void op_msg_more(input_t *in) {
  uint8_t b = next(in);
  uint64_t chan = pick_chan(in);
  size_t data = b & 0x80 ? WEFT__NET_CHUNK : (size_t)next(in) * 8;
  uint8_t flags = b & 1 ? WEFT__NET_F_LAST : 0;
  size_t h = weft__net_put_msg_head(R.frame, chan, flags, 0, NULL, 0, data);
  memset(R.frame + h, 0xc0, data);
  feed(R.frame, h + data);
}

static void op_credit(input_t *in) {
  uint64_t chan = pick_chan(in);
  uint32_t msgs = pick_u32(in);
  uint64_t bytes = pick_u64(in);
  feed(R.frame, weft__net_put_credit(R.frame, chan, msgs, bytes));
}

static void op_reason(input_t *in) {
  static const uint8_t types[] = {WEFT__NET_CLOSE, WEFT__NET_CLOSE, WEFT__NET_FOUND,
                                  WEFT__NET_NOTFOUND, WEFT__NET_PING, WEFT__NET_REFUSE};
  uint8_t t = types[next(in) % 6];
  uint64_t chan = t == WEFT__NET_PING || t == WEFT__NET_REFUSE ? 0 : pick_chan(in);
  int32_t reason = (int32_t)pick_u32(in);
  size_t n = t == WEFT__NET_FOUND || t == WEFT__NET_PING
                 ? weft__net_put_simple(R.frame, t, chan)
                 : weft__net_put_reason(R.frame, t, chan, reason);
  feed(R.frame, n);
}

static void op_raw(input_t *in) {
  uint8_t len = next(in) % 48;
  uint8_t b[48];
  for (uint8_t i = 0; i < len; i++)
    b[i] = next(in);
  feed(b, len);
}

/* The program: the node looks a name up on the peer; posts on, starts or
 * closes a port it was given; the sink's consumer takes one. */
static void op_program(input_t *in) {
  uint8_t b = next(in);
  weft_msg_t *m;
  weft_port_t *p = R.ngiven ? R.given[b % R.ngiven] : NULL;
  switch ((b >> 4) % 5) {
  case 0:
    if (!R.node_closed)
      weft_node_lookup(R.node, "peer", "x", 1000, on_lookup, NULL);
    break;
  case 1:
    if (p != NULL && weft_msg_new(&m) == 0) {
      weft_msg_put_u64(m, NULL, b);
      if (weft_port_post(p, m) != 0)
        weft_msg_free(m);
    }
    break;
  case 2:
    if (p != NULL)
      weft_port_start(p, drop);
    break;
  case 3:
    if (p != NULL)
      weft_port_close(p); /* forgotten at its close event */
    break;
  default:
    if (R.sink != NULL && weft_port_receive(R.sink, &m) == 0)
      weft_msg_free(m);
    break;
  }
}

static bool setup(bool secret) {
  memset(&R, 0, offsetof(run_t, frame));
  if (weft_runtime_new(&R.rt, NULL) != 0)
    fail("weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(R.rt);
  R.loop = weft_ctx_loop(ctx);
  uv_idle_init(R.loop, &R.alive);
  uv_idle_start(&R.alive, on_idle);
  weft_node_options_t o = {.name = "fz", .window_msgs = WINDOW_MSGS,
                           .window_bytes = WINDOW_BYTES, .max_msg = 1u << 20,
                           .max_channels = 16, .heartbeat_ms = 60000,
                           .handshake_ms = 60000}; /* the tick never ends it */
  if (secret) {
    o.secret = SECRET;
    o.secret_len = strlen(SECRET);
  }
  if (weft_node_start(ctx, &o, &R.node) != 0)
    fail("weft_node_start");
  weft_port_t *e, *ports[2];
  if (weft_actor_spawn(ctx, echo, NULL, &e) != 0 || weft_node_publish(R.node, "echo", e) != 0)
    fail("publish echo");
  if (weft_channel_new(ctx, ports) != 0 || weft_port_set_hwm(ports[0], SINK_HWM, 0) != 0 ||
      weft_node_publish(R.node, "sink", ports[1]) != 0)
    fail("publish sink");
  R.sink = ports[0];
  R.conn = weft__node_conn_detached(R.node);
  if (R.conn == NULL)
    fail("weft__node_conn_detached");
  return true;
}

static void finish(void) {
  if (R.conn != NULL)
    weft__node_conn_release(R.conn);
  R.conn = NULL;
  run_loop(4);
  for (int i = 0; i < R.ngiven; i++)
    weft_port_close(R.given[i]);
  if (R.sink != NULL)
    weft_port_close(R.sink);
  R.sink = NULL;
  if (weft_node_close(R.node, on_node_closed, NULL) != 0)
    fail("weft_node_close");
  uint64_t end = uv_hrtime() + END_SPIN_NS;
  while (!R.node_closed && uv_hrtime() < end)
    uv_run(R.loop, UV_RUN_NOWAIT);
  if (!R.node_closed)
    fail("the node did not close");
  uv_close((uv_handle_t *)&R.alive, NULL);
  uv_run(R.loop, UV_RUN_NOWAIT);
  if (weft_runtime_free(R.rt) != 0)
    fail("weft_runtime_free did not return 0");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  input_t in = {.p = data, .n = size, .at = 0};
  long allocs_before = atomic_load(&outstanding);
  uint8_t cfg = next(&in);
  bool secret = cfg & 1;
  setup(secret);
  if (cfg & 6) {
    send_hello(WEFT__NET_VERSION, secret ? 1 : 0, 64, 1u << 20, "peer", 4);
    if (secret)
      send_auth(true);
  }
  run_loop(1);
  for (int ops = 0; in.at < in.n && ops < 4096; ops++) {
    switch (next(&in) % 13) {
    case 0: op_hello(&in, secret); break;
    case 1: send_auth(next(&in) & 1); break;
    case 2: op_lookup(&in); break;
    case 3: case 4: op_msg_first(&in); break;
    case 5: op_msg_more(&in); break;
    case 6: op_credit(&in); break;
    case 7: op_reason(&in); break;
    case 8: op_raw(&in); break;
    case 9: op_program(&in); break;
    case 10: op_data(&in); break;
    default: run_loop(1 + next(&in) % 4); break;
    }
    check_sink();
  }
  finish();
  if (atomic_load(&outstanding) != allocs_before)
    fail("weft allocations leaked");
  return 0;
}
