/* test_node_nodelay.c: node connections send small frames at once.
 *
 * Sockets start with Nagle's algorithm on (nng's byte streams too). A node
 * sends many
 * small frames (an answer, then a credit): with Nagle the second waits until
 * the first is acknowledged, and the peer delays its ACK (40 ms on Linux),
 * so a request/reply across nodes took ~40 ms instead of well under 1 ms
 * (seen in examples/dist_gateway: 322 requests/s over 8 connections). Both
 * ends of a TCP node connection, the dialed and the accepted, must have
 * TCP_NODELAY set. Checked on the sockets themselves (this process holds
 * both ends: node "a" on the main context, node "b" on a worker thread), not
 * by timing, on both transports (test_node_nodelay_nng). */
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <weft.h>

#include "nodetest.h"
#include "testutil.h"

static char a_url[64];  /* written before the worker starts, read by it */
static int a_port;
static int sockets_seen, sockets_nodelay;
static bool b_seen_up;

/* Counts this process's connected TCP sockets with port a_port at one end,
 * and how many of them have TCP_NODELAY. */
static void scan_sockets(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    struct sockaddr_in me, peer;
    socklen_t ml = sizeof(me), pl = sizeof(peer);
    if (fd <= 2 || getsockname(fd, (struct sockaddr *)&me, &ml) != 0 ||
        me.sin_family != AF_INET || getpeername(fd, (struct sockaddr *)&peer, &pl) != 0)
      continue;
    if (ntohs(me.sin_port) != a_port && ntohs(peer.sin_port) != a_port)
      continue;
    int on = 0;
    socklen_t ol = sizeof(on);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &ol), 0);
    sockets_seen++;
    sockets_nodelay += on != 0;
  }
  closedir(d);
}

/* ---- node b, on a worker thread: dials a, closes when a goes -------------------- */

static void b_closed(weft_node_t *node, void *data) {
  (void)node;
  weft_worker_exit(data, 0);
}

static void b_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer;
  (void)reason;
  if (!up)
    weft_node_close(node, b_closed, data);
}

static int b_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  const char *peers[] = {a_url, NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .name = "b", .peers = peers, .on_monitor = b_monitor, .data = ctx};
  weft_node_t *node;
  return weft_node_start(ctx, &o, &node) == 0 ? 0 : 1;
}

/* ---- node a, on the main context ----------------------------------------------- */

static void a_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)reason;
  (void)data;
  if (!up || strcmp(peer, "b") != 0)
    return;
  b_seen_up = true;
  scan_sockets(); /* both ends are open: b's dial completed before a heard it */
  weft_node_close(node, NULL, NULL);
}

static void on_b_exit(weft_worker_t *w, int code) {
  (void)code;
  weft_worker_release(w);
}

static void both_ends_of_a_tcp_node_connection_have_nodelay(void **state) {
  (void)state;
  weft_runtime_t *rt;
  assert_int_equal(weft_runtime_new(&rt, NULL), 0);
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.transport = nodetest_transport(),
                           .name = "a", .listen = listen, .on_monitor = a_monitor};
  weft_node_t *a;
  assert_int_equal(weft_node_start(ctx, &o, &a), 0);
  a_port = weft_node_port(a, 0);
  assert_true(a_port > 0);
  snprintf(a_url, sizeof(a_url), "tcp://127.0.0.1:%d", a_port);
  weft_worker_options_t wo = {.entry = b_entry, .on_exit = on_b_exit};
  weft_worker_t *w;
  assert_int_equal(weft_worker_spawn(ctx, &wo, &w), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_true(b_seen_up);
  if (sockets_seen != 2 || sockets_nodelay != 2)
    fail_msg("node connection sockets: %d found (want 2: dialed and accepted), %d with "
             "TCP_NODELAY (want 2)", sockets_seen, sockets_nodelay);
  assert_int_equal(weft_runtime_free(rt), 0);
  assert_int_equal(testutil_alloc_outstanding(), 0);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(both_ends_of_a_tcp_node_connection_have_nodelay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
