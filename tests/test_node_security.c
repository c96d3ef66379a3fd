/* test_node_security.c: distribution's security (node.h): every byte from
 * the network is untrusted.
 *
 * The node under test ("srv") runs on this thread's runtime and listens on
 * 127.0.0.1 (tcp://, tls+tcp://). Its adversaries:
 *  - other nodes (another runtime on a thread of their own, real sockets):
 *    a wrong shared secret, a secret on one side only, TLS with a foreign
 *    client certificate, a wrong server name, plaintext to a TLS listener;
 *  - a raw peer: a plain TCP socket written by hand with netwire.h's
 *    encoders (non-blocking, driven from this thread between turns of the
 *    node's loop): a wrong version, an oversized frame length, garbage, a
 *    stall in the handshake, a message before the handshake, a flood past
 *    the window, credit it was never owed, channel ids out of order or
 *    reused, frames sent one byte per read, a peer that stops reading while
 *    srv sends it 16 MiB.
 *  - a node on the other transport (interop: loop and nng, tcp:// and ipc://).
 * Runs on the default transport (the node's loop) and, as
 * test_node_security_nng, on nng's.
 * After each one, a well-behaved node still looks "echo" up and gets an
 * answer. Every wait is for an event, with a deadline; every test ends with
 * the runtimes freed and no allocation outstanding.
 *
 * Last, an allocation-failure sweep: two nodes on one context (so the order
 * of allocations is one thread's), start + connect + lookup + request, with
 * allocation k failing, for every k until a run makes fewer allocations. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netwire.h"
#include "nodetest.h"
#include "testutil.h"
#include "weft.h"

#define WAIT_MS 30000u /* generous: 2 shared vCPUs, sanitizers */
#define SRV_WINDOW_MSGS 8u
#define SRV_WINDOW_BYTES (256u * 1024u)

static uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

/* ---- the node under test --------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_ctx_t *ctx;
  uv_loop_t *loop;
  weft_node_t *node;
  uv_timer_t pulse; /* bounds each turn of the loop while we wait */
  bool closed;
  /* a lookup this node made (of a raw peer's name) */
  bool found_done;
  int found_status;
  weft_port_t *found;
  int found_close_reason;
  bool found_closed;
  int first_refusal; /* last_refusal when srv first counted one */
} srv_t;

static srv_t S;

static void echo(weft_port_t *self, weft_msg_t *req) {
  (void)self;
  if (weft_msg_is_request(req)) {
    weft_msg_t *r;
    assert_int_equal(weft_msg_new(&r), 0);
    weft_msg_put_map(r, 1);
    weft_msg_put_u64(r, "n", 42);
    if (weft_msg_reply(req, r) != 0)
      weft_msg_free(r);
  }
  weft_msg_free(req);
}

static void on_pulse(uv_timer_t *t) { (void)t; }

static void srv_start(const weft_node_options_t *extra) {
  memset(&S, 0, sizeof(S));
  assert_int_equal(weft_runtime_new(&S.rt, NULL), 0);
  S.ctx = weft_runtime_main(S.rt);
  S.loop = weft_ctx_loop(S.ctx);
  weft_node_options_t o = *extra;
  o.name = "srv";
  o.window_msgs = SRV_WINDOW_MSGS;
  o.window_bytes = SRV_WINDOW_BYTES;
  int err = weft_node_start(S.ctx, &o, &S.node);
  if (err)
    fail_msg("weft_node_start(srv): %s", weft_err_name(err));
  weft_port_t *e;
  assert_int_equal(weft_actor_spawn(S.ctx, echo, NULL, &e), 0);
  assert_int_equal(weft_node_publish(S.node, "echo", e), 0);
  uv_timer_init(S.loop, &S.pulse);
  uv_timer_start(&S.pulse, on_pulse, 5, 5);
}

static weft_node_stats_t srv_stats(void);

/* The first refusal's reason: later ones may be of another kind (a refused
 * dialer that closes its node hangs up on a connection in its handshake). */
static void note_refusal(void) {
  if (S.closed)
    return;
  weft_node_stats_t st = srv_stats();
  if (S.first_refusal == 0 && st.refused > 0)
    S.first_refusal = st.last_refusal;
}

/* Run srv's loop until pred holds or ms pass. */
static bool pump_until(bool (*pred)(void *), void *arg, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (!pred(arg)) {
    if (now_ms() > end)
      return false;
    uv_run(S.loop, UV_RUN_ONCE);
    note_refusal();
  }
  return true;
}

static weft_node_stats_t srv_stats(void) {
  weft_node_stats_t st;
  assert_int_equal(weft_node_stats(S.node, &st), 0);
  return st;
}

static bool srv_refused_past(void *arg) { return srv_stats().refused > *(uint64_t *)arg; }
static bool srv_errors_past(void *arg) { return srv_stats().protocol_errors > *(uint64_t *)arg; }
static bool srv_is_closed(void *arg) { (void)arg; return S.closed; }

static void on_srv_closed(weft_node_t *n, void *data) {
  (void)n;
  (void)data;
  S.closed = true;
}

static void srv_stop(void) {
  assert_int_equal(weft_node_close(S.node, on_srv_closed, NULL), 0);
  assert_true(pump_until(srv_is_closed, NULL, WAIT_MS));
  uv_close((uv_handle_t *)&S.pulse, NULL);
  uv_run(S.loop, UV_RUN_NOWAIT);
  assert_int_equal(weft_runtime_run(S.rt), 0);
  assert_int_equal(weft_runtime_free(S.rt), 0);
}

/* Wait for a refusal the server counts, and check its reason. */
static void expect_refusal(uint64_t before, int reason) {
  if (!pump_until(srv_refused_past, &before, WAIT_MS))
    fail_msg("srv counted no refusal within %u ms", WAIT_MS);
  int got = before == 0 ? S.first_refusal : srv_stats().last_refusal;
  if (got != reason)
    fail_msg("srv refused with %s, expected %s", weft_err_name(got), weft_err_name(reason));
}

/* ---- a well-behaved (or misconfigured) node on a thread of its own ----------------- */

typedef struct {
  char name[32];
  char url[160];
  const char *secret;
  const char *cert, *key, *ca, *server_name;
  bool verify;
  uint32_t lookup_ms;
  bool other_transport; /* the one nodetest_transport() is not (interop) */
  /* results */
  int start_err;
  int lookup_status;
  bool answered;
  weft_node_stats_t stats;
  _Atomic bool done;
  weft_node_t *node;
  weft_port_t *echo;
} peer_t;

static void peer_finish(peer_t *p) {
  if (p->echo)
    weft_port_close(p->echo);
  p->echo = NULL;
  weft_node_stats(p->node, &p->stats);
  weft_node_close(p->node, NULL, NULL);
}

static void peer_on_reply(weft_msg_t *reply, int err, void *data) {

  peer_t *p = data;
  uint64_t n = 0;
  if (err == 0 && weft_msg_get_u64(reply, "n", &n) == 0 && n == 42)
    p->answered = true;
  weft_msg_free(reply);
  peer_finish(p);
}

static void peer_on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {

  (void)node;
  peer_t *p = data;
  p->lookup_status = status;
  if (status != 0) {
    peer_finish(p);
    return;
  }
  weft_msg_t *m;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "q", 1);
  p->echo = port;
  int err = weft_port_request(port, m, peer_on_reply, p, WAIT_MS);
  if (err) {
    weft_msg_free(m);
    peer_finish(p);
  }
}

static void *peer_main(void *arg) {
  peer_t *p = arg;
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0) {
    p->start_err = WEFT_ENOMEM;
    atomic_store(&p->done, true);
    return NULL;
  }
  const char *peers[] = {p->url, NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .name = p->name, .peers = peers, .redial_min_ms = 20,
                           .redial_max_ms = 200};
  if (p->other_transport)
    o.transport = o.transport == WEFT_NODE_TRANSPORT_NNG ? WEFT_NODE_TRANSPORT_DEFAULT
                                                         : WEFT_NODE_TRANSPORT_NNG;
  if (p->secret) {
    o.secret = p->secret;
    o.secret_len = strlen(p->secret);
  }
  o.tls_cert_file = p->cert;
  o.tls_key_file = p->key;
  o.tls_ca_file = p->ca;
  o.tls_server_name = p->server_name;
  o.tls_verify = p->verify;
  p->start_err = weft_node_start(weft_runtime_main(rt), &o, &p->node);
  if (p->start_err == 0) {
    p->lookup_status = 1;
    int err = weft_node_lookup(p->node, "srv", "echo", p->lookup_ms, peer_on_found, p);
    if (err) {
      p->lookup_status = err;
      peer_finish(p);
    }
    weft_runtime_run(rt);
  }
  if (weft_runtime_free(rt) != 0)
    p->start_err = WEFT_EBUSY;
  atomic_store(&p->done, true);
  return NULL;
}

static bool peer_done(void *arg) { return atomic_load(&((peer_t *)arg)->done); }

/* Run p against srv: its thread, while srv's loop turns here. */
static void peer_run(peer_t *p) {
  pthread_t t;
  atomic_store(&p->done, false);
  if (p->lookup_ms == 0)
    p->lookup_ms = WAIT_MS;
  assert_int_equal(pthread_create(&t, NULL, peer_main, p), 0);
  if (!pump_until(peer_done, p, 2u * WAIT_MS))
    fail_msg("peer %s did not finish within %u ms", p->name, 2u * WAIT_MS);
  pthread_join(t, NULL);
  assert_int_equal(p->start_err, 0);
}

static void tcp_url(char *out, size_t n) {
  snprintf(out, n, "tcp://127.0.0.1:%d", weft_node_port(S.node, 0));
}

/* A well-behaved node looks echo up on srv and gets its answer. */
static void expect_served(const char *url) {
  static int k;
  peer_t p = {0};
  snprintf(p.name, sizeof(p.name), "good%d", ++k);
  snprintf(p.url, sizeof(p.url), "%s", url);
  peer_run(&p);
  if (p.lookup_status != 0 || !p.answered)
    fail_msg("a well-behaved peer was not served: lookup %s, answered %d",
             weft_err_name(p.lookup_status), p.answered);
}

/* A node that must not get in: its lookup times out, it counted a refusal. */
static void expect_shut_out(peer_t *p, int peer_reason) {
  p->lookup_ms = 3000;
  peer_run(p);
  if (p->lookup_status != UV_ETIMEDOUT)
    fail_msg("%s: lookup ended with %s, expected a timeout", p->name,
             weft_err_name(p->lookup_status));
  assert_false(p->answered);
  assert_int_equal(p->stats.peers_up, 0);
  assert_int_equal(p->stats.connects, 0);
  if (p->stats.refused == 0)
    fail_msg("%s counted no refusal", p->name);
  if (peer_reason != 0 && p->stats.last_refusal != peer_reason)
    fail_msg("%s refused with %s, expected %s", p->name, weft_err_name(p->stats.last_refusal),
             weft_err_name(peer_reason));
}

static int no_leaks(void **state) {
  (void)state;
  testutil_alloc_fail_after(-1);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

/* ---- shared secret ------------------------------------------------------------------ */

static void secret_same_connects(void **state) {
  (void)state;
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen, .secret = "s3cret", .secret_len = 6};
  srv_start(&o);
  peer_t p = {.name = "good", .secret = "s3cret"};
  tcp_url(p.url, sizeof(p.url));
  peer_run(&p);
  assert_int_equal(p.lookup_status, 0);
  assert_true(p.answered);
  assert_int_equal(p.stats.refused, 0);
  assert_int_equal(srv_stats().refused, 0);
  assert_true(srv_stats().connects >= 1);
  srv_stop();
}

static void secret_wrong_is_refused_both_sides(void **state) {
  (void)state;
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen, .secret = "s3cret", .secret_len = 6};
  srv_start(&o);
  peer_t p = {.name = "intruder", .secret = "guess"};
  tcp_url(p.url, sizeof(p.url));
  expect_shut_out(&p, WEFT_EAUTH);
  expect_refusal(0, WEFT_EAUTH);
  assert_int_equal(srv_stats().connects, 0);
  /* the right secret still gets in */
  peer_t g = {.name = "good", .secret = "s3cret"};
  tcp_url(g.url, sizeof(g.url));
  peer_run(&g);
  assert_true(g.answered);
  srv_stop();
}

static void secret_on_one_side_only_is_refused(void **state) {
  (void)state;
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  /* the listener has a secret, the dialer none */
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen, .secret = "s3cret", .secret_len = 6};
  srv_start(&o);
  peer_t p = {.name = "nosecret"};
  tcp_url(p.url, sizeof(p.url));
  expect_shut_out(&p, WEFT_EAUTH);
  expect_refusal(0, WEFT_EAUTH);
  srv_stop();
  /* the dialer has one, the listener none */
  weft_node_options_t o2 = {.listen = listen};
  srv_start(&o2);
  peer_t q = {.name = "secretive", .secret = "s3cret"};
  tcp_url(q.url, sizeof(q.url));
  expect_shut_out(&q, WEFT_EAUTH);
  expect_refusal(0, WEFT_EAUTH);
  expect_served(q.url); /* a peer without a secret is served */
  srv_stop();
}

/* ---- TLS ------------------------------------------------------------------------------ */

static char tls_dir[64];

static bool sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  return system(cmd) == 0;
}

static const char *tls_path(const char *file) {
  static char bufs[8][160];
  static int k;
  char *b = bufs[k++ % 8];
  snprintf(b, sizeof(bufs[0]), "%s/%s", tls_dir, file);
  return b;
}

/* A CA, a server certificate for localhost / 127.0.0.1 and a client
 * certificate signed by it; a foreign CA and a client certificate signed by
 * that one. EC P-256 keys (fast to make). */
static bool make_pki(void) {
  snprintf(tls_dir, sizeof(tls_dir), "/tmp/weft-tls-XXXXXX");
  if (mkdtemp(tls_dir) == NULL)
    return false;
  const char *d = tls_dir;
  const char *key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  return sh("cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > srv.ext", d) &&
         sh("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 "
            "-subj /CN=weft-test-ca 2>/dev/null", d, key) &&
         sh("cd %s && openssl req -x509 %s -keyout rogue.key -out rogue.pem -days 2 "
            "-subj /CN=rogue-ca 2>/dev/null", d, key) &&
         sh("cd %s && openssl req %s -keyout srv.key -out srv.csr -subj /CN=localhost "
            "2>/dev/null && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
            "-CAcreateserial -out srv.pem -days 2 -extfile srv.ext 2>/dev/null", d, key) &&
         sh("cd %s && openssl req %s -keyout cli.key -out cli.csr -subj /CN=client "
            "2>/dev/null && openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key "
            "-CAcreateserial -out cli.pem -days 2 2>/dev/null", d, key) &&
         sh("cd %s && openssl req %s -keyout evil.key -out evil.csr -subj /CN=client "
            "2>/dev/null && openssl x509 -req -in evil.csr -CA rogue.pem -CAkey rogue.key "
            "-CAcreateserial -out evil.pem -days 2 2>/dev/null", d, key);
}

static int tls_setup(void **state) {
  (void)state;
  if (!sh("command -v openssl >/dev/null 2>&1")) {
    fprintf(stderr, "test_node_security: SKIP TLS: the openssl command is not installed "
                    "(needed to make certificates at test time)\n");
    tls_dir[0] = '\0';
    return 0;
  }
  if (!make_pki())
    fail_msg("openssl is there but could not make the test certificates in %s", tls_dir);
  return 0;
}

static int tls_teardown(void **state) {
  if (tls_dir[0])
    sh("rm -rf %s", tls_dir);
  return no_leaks(state);
}

/* srv: a TLS listener requiring client certificates signed by ca, and a
 * plain one (listener 1) for the raw checks. */
static void tls_srv_start(void) {
  const char *listen[] = {"tls+tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen,
                           .tls_cert_file = tls_path("srv.pem"),
                           .tls_key_file = tls_path("srv.key"),
                           .tls_ca_file = tls_path("ca.pem"),
                           .tls_verify = true};
  srv_start(&o);
}

static void tls_client(peer_t *p, const char *name, const char *cert, const char *key,
                       const char *server_name) {
  memset(p, 0, sizeof(*p));
  snprintf(p->name, sizeof(p->name), "%s", name);
  snprintf(p->url, sizeof(p->url), "tls+tcp://127.0.0.1:%d", weft_node_port(S.node, 0));
  p->cert = cert ? tls_path(cert) : NULL;
  p->key = key ? tls_path(key) : NULL;
  p->ca = tls_path("ca.pem");
  p->server_name = server_name;
  p->verify = true;
}

static void tls_mutual_auth_works(void **state) {
  (void)state;
  if (tls_dir[0] == '\0')
    skip();
  tls_srv_start();
  peer_t p;
  tls_client(&p, "tlsgood", "cli.pem", "cli.key", "localhost");
  peer_run(&p);
  if (p.lookup_status != 0 || !p.answered)
    fail_msg("mutual TLS: lookup %s, answered %d, peer refused %llu (%s)",
             weft_err_name(p.lookup_status), p.answered, (unsigned long long)p.stats.refused,
             weft_err_name(p.stats.last_refusal));
  assert_int_equal(srv_stats().refused, 0);
  srv_stop();
}

static void tls_foreign_client_cert_is_refused(void **state) {
  (void)state;
  if (tls_dir[0] == '\0')
    skip();
  tls_srv_start();
  peer_t p;
  tls_client(&p, "tlsevil", "evil.pem", "evil.key", "localhost");
  expect_shut_out(&p, 0);
  expect_refusal(0, WEFT_EAUTH); /* srv is the one that checks it */
  fprintf(stderr, "  foreign cert: srv refused %llu (last %s), client refused %llu (last %s)\n",
          (unsigned long long)srv_stats().refused, weft_err_name(srv_stats().last_refusal),
          (unsigned long long)p.stats.refused, weft_err_name(p.stats.last_refusal));
  assert_int_equal(srv_stats().connects, 0);
  /* no client certificate at all */
  peer_t q;
  tls_client(&q, "tlsanon", NULL, NULL, "localhost");
  expect_shut_out(&q, 0);
  assert_int_equal(srv_stats().connects, 0);
  peer_t g;
  tls_client(&g, "tlsgood", "cli.pem", "cli.key", "localhost");
  peer_run(&g);
  assert_true(g.answered);
  srv_stop();
}

static void tls_wrong_server_name_is_refused(void **state) {
  (void)state;
  if (tls_dir[0] == '\0')
    skip();
  tls_srv_start();
  peer_t p;
  tls_client(&p, "tlsname", "cli.pem", "cli.key", "evil.example");
  expect_shut_out(&p, WEFT_EAUTH); /* the dialer is the one that checks it */
  fprintf(stderr, "  wrong server name: client refused %llu (last %s)\n",
          (unsigned long long)p.stats.refused, weft_err_name(p.stats.last_refusal));
  assert_int_equal(srv_stats().connects, 0);
  srv_stop();
}

static void tls_plaintext_to_tls_listener_is_refused(void **state) {
  (void)state;
  if (tls_dir[0] == '\0')
    skip();
  tls_srv_start();
  peer_t p = {.name = "plain"};
  snprintf(p.url, sizeof(p.url), "tcp://127.0.0.1:%d", weft_node_port(S.node, 0));
  expect_shut_out(&p, 0);
  uint64_t none = 0;
  if (!pump_until(srv_refused_past, &none, WAIT_MS))
    fail_msg("srv counted no refusal of a plaintext dialer");
  fprintf(stderr, "  plaintext to TLS: srv refused %llu (last %s), client last %s\n",
          (unsigned long long)srv_stats().refused, weft_err_name(srv_stats().last_refusal),
          weft_err_name(p.stats.last_refusal));
  assert_int_equal(srv_stats().connects, 0);
  peer_t g;
  tls_client(&g, "tlsgood", "cli.pem", "cli.key", "localhost");
  peer_run(&g);
  assert_true(g.answered);
  srv_stop();
}

/* ---- the raw peer --------------------------------------------------------------------- */

typedef struct {
  int fd;
  uint8_t buf[2 * WEFT__NET_MAX_FRAME];
  size_t len;
  uint8_t frame[WEFT__NET_MAX_FRAME]; /* the last frame read (f points into it) */
  weft__net_frame_t f;
  bool eof;
} raw_t;

static raw_t *raw_connect(void) {
  raw_t *r = calloc(1, sizeof(*r));
  assert_non_null(r);
  r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(r->fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)weft_node_port(S.node, 0))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(fcntl(r->fd, F_SETFL, O_NONBLOCK), 0);
  return r;
}

static void raw_free(raw_t *r) {
  close(r->fd);
  free(r);
}

/* Write all of p (srv's loop turns while the socket is full). False if srv
 * hung up (or stopped reading for WAIT_MS). */
static bool raw_send(raw_t *r, const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t end = now_ms() + WAIT_MS;
  while (n > 0) {
    ssize_t w = send(r->fd, b, n, MSG_NOSIGNAL);
    if (w > 0) {
      b += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && now_ms() < end) {
      uv_run(S.loop, UV_RUN_ONCE);
      note_refusal();
      continue;
    }
    return false;
  }
  return true;
}

/* Read until a whole frame is there: 1 (in r->f), 0 (srv hung up), or fail. */
static int raw_frame(raw_t *r) {
  uint64_t end = now_ms() + WAIT_MS;
  for (;;) {
    size_t need;
    int n = weft__net_parse(r->buf, r->len, &r->f, &need);
    if (n < 0)
      fail_msg("srv sent a frame that does not parse: %s", weft_err_name(n));
    if (n > 0) {
      memcpy(r->frame, r->buf, (size_t)n);
      memmove(r->buf, r->buf + n, r->len - (size_t)n);
      r->len -= (size_t)n;
      assert_true(weft__net_parse(r->frame, (size_t)n, &r->f, NULL) == n);
      return 1;
    }
    ssize_t k = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
    if (k > 0) {
      r->len += (size_t)k;
      continue;
    }
    if (k == 0 || (k < 0 && errno == ECONNRESET)) {
      r->eof = true;
      return 0;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      fail_msg("recv: %s", strerror(errno));
    if (now_ms() > end)
      fail_msg("raw peer: nothing from srv within %u ms", WAIT_MS);
    uv_run(S.loop, UV_RUN_ONCE);
    note_refusal();
  }
}

/* Read frames until one of type (skipping PINGs and credits). */
static void raw_expect(raw_t *r, uint8_t type) {
  for (;;) {
    if (raw_frame(r) == 0)
      fail_msg("srv hung up while the raw peer waited for frame type %u", type);
    if (r->f.type == type)
      return;
    if (r->f.type != WEFT__NET_PING && r->f.type != WEFT__NET_CREDIT &&
        r->f.type != WEFT__NET_HELLO)
      fail_msg("raw peer: frame type %u while waiting for %u", r->f.type, type);
  }
}

/* srv hangs up on the raw peer (whatever it sent before): true, within the
 * deadline. Frames before it are dropped; a REFUSE's reason is returned in
 * *refuse (0: none came). */
static void raw_expect_hangup(raw_t *r, int *refuse) {
  *refuse = 0;
  while (raw_frame(r) == 1)
    if (r->f.type == WEFT__NET_REFUSE)
      *refuse = r->f.reason;
  assert_true(r->eof);
}

static void raw_hello(raw_t *r, const char *name, uint16_t version) {
  uint8_t b[256], nonce[WEFT__NET_NONCE] = {0};
  size_t n = weft__net_put_hello(b, 0, 7, nonce, 64, 1u << 20, 1u << 20, 1000, name,
                                 (uint8_t)strlen(name));
  b[WEFT__NET_HEAD + 8] = (uint8_t)(version >> 8);
  b[WEFT__NET_HEAD + 9] = (uint8_t)version;
  assert_true(raw_send(r, b, n));
}

static bool srv_found_done(void *arg) { (void)arg; return S.found_done; }
static bool srv_found_closed(void *arg) { (void)arg; return S.found_closed; }

static void on_srv_found(weft_node_t *n, int status, weft_port_t *port, void *data) {
  (void)n;
  (void)data;
  S.found_done = true;
  S.found_status = status;
  S.found = port;
}

static void on_found_close(weft_port_t *p, const weft_port_close_info_t *info) {
  (void)p;
  S.found_closed = true;
  S.found_close_reason = info->reason;
}

static void drop_msg(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
}

/* A raw peer past the handshake, with a channel srv opened to it (srv looked
 * "x" up on it: srv's port S.found, never started, so srv credits nothing
 * the peer sends on it). Returns the channel's id as the peer writes it. */
static raw_t *raw_up(const char *name, uint64_t *chan) {
  raw_t *r = raw_connect();
  raw_expect(r, WEFT__NET_HELLO);
  raw_hello(r, name, WEFT__NET_VERSION);
  S.found_done = S.found_closed = false;
  S.found = NULL;
  assert_int_equal(weft_node_lookup(S.node, name, "x", WAIT_MS, on_srv_found, NULL), 0);
  raw_expect(r, WEFT__NET_LOOKUP);
  assert_true((r->f.chan & WEFT__NET_OWN_BIT) != 0);
  *chan = r->f.chan ^ WEFT__NET_OWN_BIT;
  uint8_t b[WEFT__NET_HEAD];
  assert_true(raw_send(r, b, weft__net_put_simple(b, WEFT__NET_FOUND, *chan)));
  assert_true(pump_until(srv_found_done, NULL, WAIT_MS));
  assert_int_equal(S.found_status, 0);
  assert_int_equal(weft_port_on_close(S.found, on_found_close), 0);
  assert_true(weft_node_is_up(S.node, name));
  return r;
}

/* The raw peer was dropped after the handshake with reason: srv's port on
 * its channel closed with it, and srv counted a protocol error. */
static void expect_dropped_up(raw_t *r, uint64_t errors_before, int reason) {
  int refuse;
  raw_expect_hangup(r, &refuse);
  assert_true(pump_until(srv_errors_past, &errors_before, WAIT_MS));
  if (!S.found_closed) {
    int err = weft_port_start(S.found, drop_msg); /* a started port gets its close event */
    assert_true(err == 0 || err == WEFT_ECLOSED);
  }
  if (!pump_until(srv_found_closed, NULL, WAIT_MS))
    fail_msg("srv's port on the dropped peer's channel got no close event");
  if (S.found_close_reason != reason)
    fail_msg("srv's channel closed with %s, expected %s", weft_err_name(S.found_close_reason),
             weft_err_name(reason));
}

static void raw_srv_start(void) {
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen};
  srv_start(&o);
}

static void raw_wrong_version_is_refused(void **state) {
  (void)state;
  raw_srv_start();
  raw_t *r = raw_connect();
  raw_expect(r, WEFT__NET_HELLO);
  assert_int_equal(r->f.version, WEFT__NET_VERSION);
  raw_hello(r, "future", WEFT__NET_VERSION + 1);
  int refuse;
  raw_expect_hangup(r, &refuse);
  assert_int_equal(refuse, WEFT_EVERSION); /* the REFUSE is written before the hang-up */
  expect_refusal(0, WEFT_EVERSION);
  raw_free(r);
  char url[64];
  tcp_url(url, sizeof(url));
  expect_served(url);
  srv_stop();
}

static void raw_oversized_frame_is_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  /* in the handshake: only a header announcing ~4 GiB; srv must not wait
   * for (or make room for) the body */
  raw_t *r = raw_connect();
  raw_expect(r, WEFT__NET_HELLO);
  uint64_t calls = testutil_alloc_calls();
  uint8_t h[WEFT__NET_HEAD] = {0xff, 0xff, 0xff, 0xf0, WEFT__NET_MSG};
  assert_true(raw_send(r, h, sizeof(h)));
  int refuse;
  raw_expect_hangup(r, &refuse);
  expect_refusal(0, WEFT_EFRAMESIZE);
  /* The refusing node writes its REFUSE (after its HELLO, if that is still
   * on its way) and only then hangs up: the peer learns the reason. */
  assert_int_equal(refuse, WEFT_EFRAMESIZE);
  fprintf(stderr, "  oversized header: %llu weft allocations while it was refused\n",
          (unsigned long long)(testutil_alloc_calls() - calls));
  raw_free(r);
  /* one byte over the limit, after the handshake */
  uint64_t chan, errs = srv_stats().protocol_errors;
  r = raw_up("big", &chan);
  uint32_t len = WEFT__NET_MAX_FRAME - 4 + 1;
  uint8_t h2[WEFT__NET_HEAD] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                                (uint8_t)len, WEFT__NET_MSG};
  assert_true(raw_send(r, h2, sizeof(h2)));
  expect_dropped_up(r, errs, WEFT_EFRAMESIZE);
  raw_free(r);
  expect_served(url);
  srv_stop();
}

static void raw_garbage_is_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  static const char *junk[] = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n", /* a length of 'GET ': too big */
      "\x00\x00\x00\x09\x63\x00\x00\x00\x00\x00\x00\x00\x00", /* an unknown type */
      "\x00\x00\x00\x01\x01",                                  /* a length below the header */
  };
  static const size_t junk_len[] = {27, 13, 5};
  static const int why[] = {WEFT_EFRAMESIZE, WEFT_EPROTO, WEFT_EFRAMESIZE};
  for (size_t i = 0; i < 3; i++) {
    uint64_t before = srv_stats().refused;
    raw_t *r = raw_connect();
    assert_true(raw_send(r, junk[i], junk_len[i]));
    int refuse;
    raw_expect_hangup(r, &refuse);
    expect_refusal(before, why[i]);
    raw_free(r);
  }
  expect_served(url);
  srv_stop();
}

static void raw_stall_in_handshake_is_dropped(void **state) {
  (void)state;
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .listen = listen, .handshake_ms = 200};
  srv_start(&o);
  char url[64];
  tcp_url(url, sizeof(url));
  /* says nothing at all */
  uint64_t t0 = now_ms();
  raw_t *r = raw_connect();
  int refuse;
  raw_expect_hangup(r, &refuse);
  uint64_t took = now_ms() - t0;
  expect_refusal(0, UV_ETIMEDOUT);
  fprintf(stderr, "  silent peer dropped after %llu ms (handshake_ms 200)\n",
          (unsigned long long)took);
  assert_true(took >= 150);
  raw_free(r);
  /* half a hello */
  r = raw_connect();
  uint8_t b[256], nonce[WEFT__NET_NONCE] = {0};
  size_t n = weft__net_put_hello(b, 0, 1, nonce, 64, 1u << 20, 1u << 20, 1000, "half", 4);
  assert_true(raw_send(r, b, n / 2));
  raw_expect_hangup(r, &refuse);
  expect_refusal(1, UV_ETIMEDOUT);
  raw_free(r);
  expect_served(url);
  srv_stop();
}

static void raw_message_before_handshake_is_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  const char *names[] = {"echo"};
  for (int k = 0; k < 2; k++) {
    uint64_t before = srv_stats().refused;
    raw_t *r = raw_connect();
    uint8_t b[512];
    size_t n;
    if (k == 0) { /* a LOOKUP */
      n = weft__net_put_lookup(b, 1 | WEFT__NET_OWN_BIT, names[0], 4);
    } else { /* a MSG */
      n = weft__net_put_msg_head(b, 1 | WEFT__NET_OWN_BIT,
                                 WEFT__NET_F_FIRST | WEFT__NET_F_LAST, 1, NULL, 0, 1);
      b[n++] = 0xc0;
    }
    assert_true(raw_send(r, b, n));
    int refuse;
    raw_expect_hangup(r, &refuse);
    assert_int_equal(refuse, WEFT_EPROTO);
    expect_refusal(before, WEFT_EPROTO);
    raw_free(r);
  }
  assert_int_equal(srv_stats().connects, 0);
  expect_served(url);
  srv_stop();
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
      break;
  if (f)
    fclose(f);
  return v;
}

static void raw_flood_past_window_is_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  uint64_t chan, errs = srv_stats().protocol_errors;
  raw_t *r = raw_up("flood", &chan);
  long rss0 = rss_kib();
  /* 60 KiB messages, never waiting for credit, up to 256 MiB */
  static uint8_t frame[WEFT__NET_MAX_FRAME];
  const size_t body = 60u * 1024u;
  size_t h = weft__net_put_msg_head(frame, chan,
                                    WEFT__NET_F_FIRST | WEFT__NET_F_LAST, (uint32_t)body, NULL,
                                    0, body);
  memset(frame + h, 0xc0, body);
  uint64_t sent = 0;
  for (int i = 0; i < 4096 && raw_send(r, frame, h + body); i++)
    sent += h + body;
  long rss1 = rss_kib();
  expect_dropped_up(r, errs, WEFT_EWINDOW);
  fprintf(stderr, "  flood: the peer wrote %llu KiB before srv hung up (window %u KiB); "
                  "RSS %ld -> %ld KiB\n",
          (unsigned long long)(sent / 1024), SRV_WINDOW_BYTES / 1024, rss0, rss1);
  assert_true(sent < 64ull * 1024 * 1024); /* it was cut off, not read on */
  assert_true(rss1 - rss0 < 32 * 1024);
  raw_free(r);
  expect_served(url);
  srv_stop();
}

static void raw_credit_never_owed_is_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  uint64_t chan, errs = srv_stats().protocol_errors;
  raw_t *r = raw_up("liar", &chan);
  /* srv sends one message on the channel; the peer credits two */
  weft_msg_t *m;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_u64(m, NULL, 1);
  assert_int_equal(weft_port_post(S.found, m), 0);
  raw_expect(r, WEFT__NET_MSG);
  uint8_t b[64];
  assert_true(raw_send(r, b, weft__net_put_credit(b, chan, 1, 1)) == true);
  assert_true(raw_send(r, b, weft__net_put_credit(b, chan, 2, 0)));
  expect_dropped_up(r, errs, WEFT_ECREDIT);
  raw_free(r);
  expect_served(url);
  srv_stop();
}

static void raw_channel_ids_out_of_order_or_reused(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  for (int k = 0; k < 3; k++) {
    uint64_t chan, errs = srv_stats().protocol_errors;
    char name[16];
    snprintf(name, sizeof(name), "ids%d", k);
    raw_t *r = raw_up(name, &chan);
    uint8_t b[64];
    uint64_t first = 5, second = k == 0 ? 3 : 5; /* out of order; reused */
    assert_true(raw_send(r, b, weft__net_put_lookup(b, first | WEFT__NET_OWN_BIT, "echo", 4)));
    raw_expect(r, WEFT__NET_FOUND);
    assert_int_equal(r->f.chan, first);
    if (k == 2) { /* reused after its close */
      assert_true(raw_send(r, b, weft__net_put_reason(b, WEFT__NET_CLOSE,
                                                      first | WEFT__NET_OWN_BIT, 0)));
    }
    assert_true(raw_send(r, b, weft__net_put_lookup(b, second | WEFT__NET_OWN_BIT, "echo", 4)));
    expect_dropped_up(r, errs, WEFT_EPROTO);
    raw_free(r);
  }
  expect_served(url);
  srv_stop();
}

/* ---- the transport: a peer that dribbles, a peer that stops reading, interop ------------ */

static bool srv_bytes_in_past(void *arg);

/* Send p one byte at a time, each after srv has read the one before (its
 * bytes_in says so): every frame comes in pieces, across many reads. */
static void raw_dribble(raw_t *r, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t want = srv_stats().bytes_in + 1;
    assert_true(raw_send(r, p + i, 1));
    if (!pump_until(srv_bytes_in_past, &want, WAIT_MS))
      fail_msg("srv did not read byte %zu of %zu within %u ms", i, n, WAIT_MS);
  }
}

/* A peer that sends its handshake, an answer and a lookup one byte per read:
 * srv puts the frames together and serves it as any other. */
static void raw_dribbled_frames_are_taken(void **state) {
  (void)state;
  raw_srv_start();
  raw_t *r = raw_connect();
  raw_expect(r, WEFT__NET_HELLO);
  uint8_t b[256], nonce[WEFT__NET_NONCE] = {0};
  size_t n = weft__net_put_hello(b, 0, 7, nonce, 64, 1u << 20, 1u << 20, 1000, "drip", 4);
  raw_dribble(r, b, n);
  assert_true(weft_node_is_up(S.node, "drip"));
  /* srv asks it for "x": the answer comes byte by byte too */
  S.found_done = false;
  assert_int_equal(weft_node_lookup(S.node, "drip", "x", WAIT_MS, on_srv_found, NULL), 0);
  raw_expect(r, WEFT__NET_LOOKUP);
  size_t k = weft__net_put_simple(b, WEFT__NET_FOUND, r->f.chan ^ WEFT__NET_OWN_BIT);
  raw_dribble(r, b, k);
  assert_true(pump_until(srv_found_done, NULL, WAIT_MS));
  assert_int_equal(S.found_status, 0);
  /* and it looks "echo" up, byte by byte: srv answers FOUND */
  k = weft__net_put_lookup(b, 1 | WEFT__NET_OWN_BIT, "echo", 4); /* (ids as its writer sees them) */
  raw_dribble(r, b, k);
  raw_expect(r, WEFT__NET_FOUND);
  assert_int_equal(r->f.chan, 1);
  fprintf(stderr, "  dribble (%s): %zu frames' bytes taken one per read; srv up with it, "
                  "lookups answered both ways\n",
          nodetest_transport_name(), n + 2 * k);
  weft_port_close(S.found);
  raw_free(r);
  char url[64];
  tcp_url(url, sizeof(url));
  expect_served(url);
  srv_stop();
}

static bool srv_bytes_out_past(void *arg) { return srv_stats().bytes_out >= *(uint64_t *)arg; }

/* A peer that takes a 16 MiB buffer's channel and then stops reading: srv's
 * socket fills and its writer waits for room, but its loop goes on serving
 * others; memory stays within the buffer's own; closing srv with the write
 * half done ends cleanly (no hang, nothing leaked). */
static void raw_stops_reading_while_srv_sends_16mib(void **state) {
  (void)state;
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(), .listen = listen,
                           .heartbeat_ms = 30000}; /* the raw peer sends no pings */
  srv_start(&o);
  uint64_t chan;
  raw_t *r = raw_up("deaf", &chan);
  const size_t big = 16u << 20;
  weft_buf_t *buf;
  assert_int_equal(weft_buf_new(&buf, big), 0);
  memset(weft_buf_ptr(buf), 0xd5, big);
  weft_msg_t *m;
  assert_int_equal(weft_msg_new(&m), 0);
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "big", 1);
  assert_int_equal(weft_msg_add_buf(m, buf), 0);
  weft_buf_free(buf); /* detached: the bytes moved into m */
  long rss0 = rss_kib(); /* the buffer is there: what srv adds to it is measured */
  assert_int_equal(weft_port_post(S.found, m), 0);
  /* srv's batches start (bytes_out counts them); the socket then fills */
  uint64_t some = 1u << 20;
  assert_true(pump_until(srv_bytes_out_past, &some, WAIT_MS));
  char url[64];
  tcp_url(url, sizeof(url));
  long rss1 = rss_kib();
  expect_served(url); /* another peer, while this one's bytes wait */
  expect_served(url);
  weft_node_stats_t st = srv_stats();
  fprintf(stderr, "  deaf peer (%s): srv queued %llu KiB for it (the socket took what it "
                  "could), served 2 others meanwhile; RSS %ld -> %ld KiB\n",
          nodetest_transport_name(), (unsigned long long)(st.bytes_out / 1024), rss0, rss1);
  assert_true(rss1 - rss0 < 16 * 1024); /* written from where it lies: no copy of it */
  assert_true(weft_node_is_up(S.node, "deaf"));
  srv_stop(); /* with the write half done: the close completes, nothing leaks */
  assert_true(S.found_closed);
  raw_free(r);
}

/* A loop-transport node and an nng-transport node speak the same protocol:
 * srv on this test's transport, the peer on the other one, over tcp:// and
 * ipc://, both ways (the peer dials; srv's answer comes back). */
static void transports_interoperate(void **state) {
  (void)state;
  char dir[] = "/tmp/weft-interop.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char ipc[160];
  snprintf(ipc, sizeof(ipc), "ipc://%s/srv.sock", dir);
  const char *listen[] = {"tcp://127.0.0.1:0", ipc, NULL};
  weft_node_options_t o = {.transport = nodetest_transport(), .listen = listen};
  srv_start(&o);
  peer_t p = {.other_transport = true};
  snprintf(p.name, sizeof(p.name), "other-tcp");
  tcp_url(p.url, sizeof(p.url));
  peer_run(&p);
  if (p.lookup_status != 0 || !p.answered)
    fail_msg("tcp: a %s peer was not served by a %s node: lookup %s, answered %d",
             nodetest_transport() == WEFT_NODE_TRANSPORT_NNG ? "loop" : "nng",
             nodetest_transport_name(), weft_err_name(p.lookup_status), p.answered);
  peer_t q = {.other_transport = true};
  snprintf(q.name, sizeof(q.name), "other-ipc");
  snprintf(q.url, sizeof(q.url), "%s", ipc);
  peer_run(&q);
  if (q.lookup_status != 0 || !q.answered)
    fail_msg("ipc: the other transport's peer was not served: lookup %s, answered %d",
             weft_err_name(q.lookup_status), q.answered);
  srv_stop();
  char path[200];
  snprintf(path, sizeof(path), "%s/srv.sock", dir);
  assert_int_equal(access(path, F_OK), -1); /* the listener removed its socket file */
  assert_int_equal(rmdir(dir), 0);
}

/* IPv6 loopback both ways ([::1]:0 takes a free port, reported at once), and
 * a peer that dials a host name (resolved off the loop: localhost). */
static void ipv6_and_host_names(void **state) {
  (void)state;
  const char *listen[] = {"tcp://[::1]:0", "tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(), .listen = listen};
  srv_start(&o);
  assert_true(weft_node_port(S.node, 0) > 0);
  assert_true(weft_node_port(S.node, 1) > 0);
  peer_t p = {0};
  snprintf(p.name, sizeof(p.name), "six");
  snprintf(p.url, sizeof(p.url), "tcp://[::1]:%d", weft_node_port(S.node, 0));
  peer_run(&p);
  if (p.lookup_status != 0 || !p.answered)
    fail_msg("[::1]: not served: lookup %s, answered %d", weft_err_name(p.lookup_status),
             p.answered);
  peer_t q = {0};
  snprintf(q.name, sizeof(q.name), "named");
  snprintf(q.url, sizeof(q.url), "tcp://localhost:%d", weft_node_port(S.node, 1));
  peer_run(&q);
  if (q.lookup_status != 0 || !q.answered)
    fail_msg("localhost: not served: lookup %s, answered %d", weft_err_name(q.lookup_status),
             q.answered);
  srv_stop();
}

/* ---- DATA frames: a body that goes straight into the message ---------------------------- */

/* A first MSG frame on chan: a 1-byte payload and one buffer of buf_len
 * bytes, with `first` bytes of data (payload included), not LAST. */
static void raw_msg_first(raw_t *r, uint64_t chan, uint64_t buf_len, size_t first) {
  static uint8_t b[WEFT__NET_MAX_FRAME];
  weft__net_item_t it = {.kind = WEFT__NET_X_BUF, .len = buf_len};
  size_t h = weft__net_put_msg_head(b, chan, WEFT__NET_F_FIRST, 1, &it, 1, first);
  memset(b + h, 0x5a, first);
  assert_true(raw_send(r, b, h + first));
}

static void raw_data_head(raw_t *r, uint64_t chan, uint32_t len) {
  uint8_t b[WEFT__NET_HEAD];
  assert_true(raw_send(r, b, weft__net_put_data_head(b, chan, len)));
}

/* Send n body bytes of value v. */
static void raw_body(raw_t *r, size_t n, uint8_t v) {
  static uint8_t b[64 * 1024];
  memset(b, v, sizeof(b));
  while (n > 0) {
    size_t k = n < sizeof(b) ? n : sizeof(b);
    assert_true(raw_send(r, b, k));
    n -= k;
  }
}

static bool srv_bytes_in_past(void *arg) {
  return srv_stats().bytes_in >= *(uint64_t *)arg;
}

/* A DATA frame that lies: with no message in progress, longer than what the
 * message lacks (only its header is sent: srv must not wait for the body),
 * on a channel never introduced, with no body at all. Each is dropped with
 * WEFT_EPROTO, before anything is allocated for its body. */
static void raw_data_lies_are_dropped(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  for (int k = 0; k < 4; k++) {
    uint64_t chan, errs = srv_stats().protocol_errors;
    char name[16];
    snprintf(name, sizeof(name), "lie%d", k);
    raw_t *r = raw_up(name, &chan);
    uint64_t calls = testutil_alloc_calls();
    if (k == 0) { /* no message in progress */
      raw_data_head(r, chan, 4096);
    } else if (k == 1) { /* one byte more than the message lacks: 1 + 1 MiB - 100 */
      raw_msg_first(r, chan, 1u << 20, 100);
      calls = testutil_alloc_calls();
      raw_data_head(r, chan, (1u << 20) + 1 - 100 + 1);
    } else if (k == 2) { /* a channel never introduced */
      raw_data_head(r, 77 | WEFT__NET_OWN_BIT, 4096);
    } else { /* no body: a frame that moves nothing */
      uint8_t b[WEFT__NET_HEAD];
      weft__net_put_data_head(b, chan, 0);
      assert_true(raw_send(r, b, sizeof(b)));
    }
    expect_dropped_up(r, errs, WEFT_EPROTO);
    fprintf(stderr, "  lying DATA %d: dropped with EPROTO, %llu weft allocations meanwhile\n", k,
            (unsigned long long)(testutil_alloc_calls() - calls));
    raw_free(r);
  }
  expect_served(url);
  srv_stop();
}

static bool srv_found_gone(void *arg) {
  (void)arg;
  return !weft_node_is_up(S.node, "die");
}

/* The peer dies in the middle of a DATA body (part of it already read into
 * the message, a read armed for the rest): srv's port closes with
 * WEFT_EPEERDIED and nothing half-built is delivered or leaked. */
static void raw_dies_mid_data_body(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  uint64_t chan;
  raw_t *r = raw_up("die", &chan);
  const uint64_t len = 2u << 20;
  uint64_t target = srv_stats().bytes_in + 1000 + WEFT__NET_HEAD;
  raw_msg_first(r, chan, len, 1000);
  uint64_t rest = len + 1 - 1000;
  raw_data_head(r, chan, (uint32_t)rest);
  raw_body(r, (size_t)(rest / 2), 0x77);
  target += rest / 2; /* srv has read it all: some into rbuf, the rest in place */
  assert_true(pump_until(srv_bytes_in_past, &target, WAIT_MS));
  close(r->fd);
  r->fd = -1;
  assert_true(pump_until(srv_found_gone, NULL, WAIT_MS));
  if (!S.found_closed)
    assert_int_equal(weft_port_start(S.found, drop_msg), 0);
  assert_true(pump_until(srv_found_closed, NULL, WAIT_MS));
  if (S.found_close_reason != WEFT_EPEERDIED)
    fail_msg("the port on a peer that died mid-body closed with %s",
             weft_err_name(S.found_close_reason));
  fprintf(stderr, "  died mid-body: srv read %llu bytes, port closed with %s\n",
          (unsigned long long)srv_stats().bytes_in, weft_err_name(S.found_close_reason));
  free(r);
  expect_served(url);
  srv_stop();
}

/* The program closes its port while a DATA body is on its way into a message
 * of that channel (a read armed into the message): the connection keeps the
 * message until the body is over, then frees it; srv says CLOSE, drops what
 * the peer still sends on the channel (a whole message, DATA included) and
 * the connection goes on: a LOOKUP is answered, no protocol error. */
static void raw_channel_closed_mid_data_body(void **state) {
  (void)state;
  raw_srv_start();
  char url[64];
  tcp_url(url, sizeof(url));
  uint64_t chan, errs = srv_stats().protocol_errors;
  raw_t *r = raw_up("orphan", &chan);
  const uint64_t len = 2u << 20;
  uint64_t target = srv_stats().bytes_in + 1000 + WEFT__NET_HEAD + 300u * 1024u;
  raw_msg_first(r, chan, len, 1000);
  uint64_t rest = len + 1 - 1000;
  raw_data_head(r, chan, (uint32_t)rest);
  raw_body(r, 300u * 1024u, 0x11);
  assert_true(pump_until(srv_bytes_in_past, &target, WAIT_MS));
  assert_int_equal(weft_port_close(S.found), 0);
  raw_expect(r, WEFT__NET_CLOSE);
  assert_int_equal(r->f.chan, chan | WEFT__NET_OWN_BIT);
  raw_body(r, (size_t)(rest - 300u * 1024u), 0x22);
  /* a whole message more on the closed channel: its body is skipped */
  raw_msg_first(r, chan, 512u * 1024u, 4096);
  raw_data_head(r, chan, 512u * 1024u + 1 - 4096);
  raw_body(r, 512u * 1024u + 1 - 4096, 0x33);
  uint8_t b[64];
  assert_true(raw_send(r, b, weft__net_put_lookup(b, 9 | WEFT__NET_OWN_BIT, "echo", 4)));
  raw_expect(r, WEFT__NET_FOUND);
  assert_int_equal(srv_stats().protocol_errors, errs);
  assert_true(weft_node_is_up(S.node, "orphan"));
  fprintf(stderr, "  port closed mid-body: the rest (%llu bytes) and a message more were "
                  "dropped, the connection goes on\n",
          (unsigned long long)(rest - 300u * 1024u));
  raw_free(r);
  expect_served(url);
  srv_stop();
}

/* ---- allocation failures ---------------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_ctx_t *ctx;
  weft_node_t *a, *b;
  int closes;
  int status;     /* 1: pending; 0: answered; else an error */
  bool answered;
  weft_port_t *echo;
} sweep_t;

static void sweep_end(sweep_t *w, int status) {
  if (w->echo)
    weft_port_close(w->echo);
  w->echo = NULL;
  if (w->status == 1)
    w->status = status;
  if (w->a) weft_node_close(w->a, NULL, NULL);
  if (w->b) weft_node_close(w->b, NULL, NULL);
  w->a = w->b = NULL;
}

static void sweep_on_reply(weft_msg_t *reply, int err, void *data) {
  sweep_t *w = data;
  uint64_t n = 0;
  if (err == 0 && weft_msg_get_u64(reply, "n", &n) == 0 && n == 42)
    w->answered = true;
  weft_msg_free(reply);
  sweep_end(w, err ? err : (w->answered ? 0 : WEFT_EPROTO));
}

static void sweep_on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  sweep_t *w = data;
  if (status != 0) {
    sweep_end(w, status);
    return;
  }
  weft_msg_t *m;
  w->echo = port;
  int err = weft_msg_new(&m);
  if (err == 0) {
    weft_msg_put_u64(m, NULL, 1);
    err = weft_port_request(port, m, sweep_on_reply, w, 3000);
    if (err)
      weft_msg_free(m);
  }
  if (err)
    sweep_end(w, err);
}

/* echo, for runs where any allocation may fail. */
static void echo_if_can(weft_port_t *self, weft_msg_t *req) {
  (void)self;
  weft_msg_t *r;
  if (weft_msg_is_request(req) && weft_msg_new(&r) == 0) {
    weft_msg_put_map(r, 1);
    weft_msg_put_u64(r, "n", 42);
    if (weft_msg_reply(req, r) != 0)
      weft_msg_free(r);
  }
  weft_msg_free(req);
}

/* One run with the k-th allocation failing (k < 0: none): 0 if it was
 * answered, an error code otherwise; crashes and leaks are the sanitizers'
 * and the teardown's to catch. */
static int sweep_once(long k, bool *fired) {
  sweep_t w = {.status = 1};
  testutil_alloc_fail_after(k);
  int err = weft_runtime_new(&w.rt, NULL);
  if (err) {
    *fired = !testutil_alloc_fail_pending();
    testutil_alloc_fail_after(-1);
    return err;
  }
  w.ctx = weft_runtime_main(w.rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t oa = {.transport = nodetest_transport(),
                            .name = "a", .listen = listen, .redial_min_ms = 10,
                            .redial_max_ms = 50};
  err = weft_node_start(w.ctx, &oa, &w.a);
  if (err == 0) {
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(w.a, 0));
    const char *peers[] = {url, NULL};
    weft_node_options_t ob = {.transport = nodetest_transport(),
                              .name = "b", .peers = peers, .redial_min_ms = 10,
                              .redial_max_ms = 50};
    err = weft_node_start(w.ctx, &ob, &w.b);
  }
  weft_port_t *e = NULL;
  if (err == 0)
    err = weft_actor_spawn(w.ctx, echo_if_can, NULL, &e);
  if (err == 0 && (err = weft_node_publish(w.a, "echo", e)) != 0)
    weft_port_close(e);
  if (err == 0)
    err = weft_node_lookup(w.b, "a", "echo", 2000, sweep_on_found, &w);
  if (err)
    sweep_end(&w, err);
  weft_runtime_run(w.rt);
  *fired = !testutil_alloc_fail_pending();
  testutil_alloc_fail_after(-1);
  assert_int_equal(weft_runtime_free(w.rt), 0);
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return w.status;
}

static void node_allocation_failure_sweep(void **state) {
  (void)state;
  bool fired;
  assert_int_equal(sweep_once(-1, &fired), 0);
  long failed = 0, recovered = 0, k;
  uint64_t t0 = now_ms();
  for (k = 0; k < 5000; k++) {
    int rc = sweep_once(k, &fired);
    if (!fired)
      break; /* the run made fewer than k + 1 allocations: all swept */
    if (rc == 0)
      recovered++;
    else if (rc < 0)
      failed++;
    else
      fail_msg("allocation %ld: status %d is not an error code", k, rc);
  }
  fprintf(stderr, "  sweep: %ld allocations failed one at a time in %llu ms: %ld runs ended "
                  "with an error, %ld recovered and were answered\n",
          k, (unsigned long long)(now_ms() - t0), failed, recovered);
  assert_true(k > 10 && k < 5000);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest secret[] = {
      cmocka_unit_test_teardown(secret_same_connects, no_leaks),
      cmocka_unit_test_teardown(secret_wrong_is_refused_both_sides, no_leaks),
      cmocka_unit_test_teardown(secret_on_one_side_only_is_refused, no_leaks),
  };
  const struct CMUnitTest tls[] = {
      cmocka_unit_test_teardown(tls_mutual_auth_works, no_leaks),
      cmocka_unit_test_teardown(tls_foreign_client_cert_is_refused, no_leaks),
      cmocka_unit_test_teardown(tls_wrong_server_name_is_refused, no_leaks),
      cmocka_unit_test_teardown(tls_plaintext_to_tls_listener_is_refused, no_leaks),
  };
  const struct CMUnitTest raw[] = {
      cmocka_unit_test_teardown(raw_wrong_version_is_refused, no_leaks),
      cmocka_unit_test_teardown(raw_oversized_frame_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_garbage_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_stall_in_handshake_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_message_before_handshake_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_flood_past_window_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_credit_never_owed_is_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_channel_ids_out_of_order_or_reused, no_leaks),
      cmocka_unit_test_teardown(raw_data_lies_are_dropped, no_leaks),
      cmocka_unit_test_teardown(raw_dies_mid_data_body, no_leaks),
      cmocka_unit_test_teardown(raw_channel_closed_mid_data_body, no_leaks),
      cmocka_unit_test_teardown(raw_dribbled_frames_are_taken, no_leaks),
      cmocka_unit_test_teardown(raw_stops_reading_while_srv_sends_16mib, no_leaks),
  };
  const struct CMUnitTest interop[] = {
      cmocka_unit_test_teardown(transports_interoperate, no_leaks),
      cmocka_unit_test_teardown(ipv6_and_host_names, no_leaks),
  };
  const struct CMUnitTest oom[] = {
      cmocka_unit_test_teardown(node_allocation_failure_sweep, no_leaks),
  };
  int rc = cmocka_run_group_tests_name("secret", secret, NULL, NULL);
  rc += cmocka_run_group_tests_name("tls", tls, tls_setup, tls_teardown);
  rc += cmocka_run_group_tests_name("raw", raw, NULL, NULL);
  rc += cmocka_run_group_tests_name("interop", interop, NULL, NULL);
  rc += cmocka_run_group_tests_name("oom", oom, NULL, NULL);
  return rc;
}
