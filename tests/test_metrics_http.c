/* test_metrics_http.c: the metrics endpoint (weft/metrics_http.h) over real
 * TCP on 127.0.0.1: a scrape of /metrics while a worker echoes a workload
 * shows the counts the workload made; /stats.json and HEAD answer; hostile
 * requests (slowloris, huge headers, a long URL, garbage, unknown paths,
 * other methods, more connections than allowed) get their error status or a
 * closed connection, while a well-behaved scrape made in the middle of them
 * still succeeds. Bad listen strings and a taken port are refused.
 *
 * The client is a plain thread with blocking sockets (10 s receive timeout:
 * a hang is a failure); the endpoint and the workload run on the loops. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktest.h"
#include "testutil.h"
#include "weft.h"
#include "weft/metrics_http.h"

#define HEADER_TIMEOUT_MS 400
#define MAX_CONNS 6

/* ---- a blocking HTTP client --------------------------------------------------- */

static int client_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0)
      return false;
    p += k;
    n -= (size_t)k;
  }
  return true;
}

/* Everything until EOF (malloc'd, NUL-terminated); NULL on a receive timeout. */
static char *read_all(int fd) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 4096 + 1 > cap)
      buf = realloc(buf, cap *= 2);
    ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
    if (k == 0)
      break;
    if (k < 0) {
      if (len > 0)
        break; /* reset after the answer (the server closed with our bytes unread) */
      free(buf);
      return NULL;
    }
    len += (size_t)k;
  }
  buf[len] = '\0';
  return buf;
}

static char *request(int port, const char *req, size_t len) {
  int fd = client_connect(port);
  if (fd < 0)
    return NULL;
  send_all(fd, req, len);
  char *r = read_all(fd);
  close(fd);
  return r;
}

static int status_of(const char *resp) {
  int code = 0;
  if (resp == NULL || sscanf(resp, "HTTP/1.1 %d", &code) != 1)
    return 0;
  return code;
}

static const char *body_of(const char *resp) {
  const char *b = strstr(resp, "\r\n\r\n");
  return b ? b + 4 : "";
}

/* The value of one sample line `name{labels} value`, or -1. */
static double sample(const char *text, const char *series) {
  const char *p = text;
  size_t n = strlen(series);
  while ((p = strstr(p, series)) != NULL) {
    if ((p == text || p[-1] == '\n') && p[n] == ' ')
      return strtod(p + n + 1, NULL);
    p += n;
  }
  return -1;
}

/* ---- the test ------------------------------------------------------------------- */

typedef struct {
  weft_runtime_t *rt;
  weft_worker_t *w;
  weft_metrics_http_t *http;
  uv_async_t done;
  int port;
  uint64_t n, echoed;
  bool closed;
  /* Client results. */
  double got_in, got_out, got_main_in;
  int scrape_status, json_status, head_status, notfound, badmethod, huge, longurl, garbage;
  int slow_status, slow_mid_scrape, extra_conn_len, over_status[MAX_CONNS], after_status;
  bool head_empty, has_allow, prom_type, json_ok;
} hs_t;

static hs_t hs;

static void worker_on_msg(weft_port_t *p, weft_msg_t *m) { CHECK_RC(weft_port_post(p, m), 0); }

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), worker_on_msg);
}

static void main_on_echo(weft_port_t *p, weft_msg_t *m) {
  (void)p;
  weft_msg_free(m);
  hs.echoed++;
}

static void on_http_closed(void *data) { *(bool *)data = true; }

static void on_done(uv_async_t *a) {
  uv_close((uv_handle_t *)a, NULL);
  CHECK_RC(weft_metrics_http_close(hs.http, on_http_closed, &hs.closed), 0);
  weft_worker_terminate(hs.w);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

static void scrape_until_counts(void) {
  uint64_t deadline = uv_hrtime() + 20ull * 1000000000u;
  while (uv_hrtime() < deadline) {
    char *r = request(hs.port, GET("/metrics"), strlen(GET("/metrics")));
    hs.scrape_status = status_of(r);
    if (r) {
      hs.prom_type = strstr(r, "Content-Type: text/plain; version=0.0.4") != NULL;
      const char *b = body_of(r);
      hs.got_in = sample(b, "weft_messages_received_total{ctx=\"worker-1\"}");
      hs.got_out = sample(b, "weft_messages_sent_total{ctx=\"worker-1\"}");
      hs.got_main_in = sample(b, "weft_messages_received_total{ctx=\"main\"}");
      free(r);
      if (hs.got_in == (double)hs.n && hs.got_out == (double)hs.n &&
          hs.got_main_in == (double)hs.n)
        return;
    }
  }
}

static int status_of_request(const char *req, size_t len) {
  char *r = request(hs.port, req, len);
  int s = status_of(r);
  if (s == 405 && strstr(r, "Allow: GET, HEAD\r\n"))
    hs.has_allow = true;
  free(r);
  return s;
}

static void hostile_requests(void) {
  hs.notfound = status_of_request(GET("/nope"), strlen(GET("/nope")));
  const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
  hs.badmethod = status_of_request(post, strlen(post));
  size_t big = 64 * 1024;
  char *huge = malloc(big + 128);
  int n = snprintf(huge, 128, "GET /metrics HTTP/1.1\r\nX-Big: ");
  memset(huge + n, 'a', big);
  memcpy(huge + n + big, "\r\n\r\n", 5);
  hs.huge = status_of_request(huge, strlen(huge));
  free(huge);
  char url[600] = "GET /";
  memset(url + 5, 'u', 400);
  strcpy(url + 405, " HTTP/1.1\r\n\r\n");
  hs.longurl = status_of_request(url, strlen(url));
  const char garbage[] = "\x01\x02\x03 not http at all\r\n\r\n";
  hs.garbage = status_of_request(garbage, sizeof(garbage) - 1);
  char *r = request(hs.port, "HEAD /metrics HTTP/1.1\r\n\r\n", 26);
  hs.head_status = status_of(r);
  hs.head_empty = r && body_of(r)[0] == '\0';
  free(r);
  r = request(hs.port, GET("/stats.json"), strlen(GET("/stats.json")));
  hs.json_status = status_of(r);
  hs.json_ok = r && strstr(r, "\"contexts\":[") && strstr(r, "\"name\":\"worker-1\"");
  free(r);
}

/* A slowloris holds a connection with half a request; a good scrape made
 * meanwhile succeeds; the slow one gets 408 at the deadline. */
static void slowloris(void) {
  int fd = client_connect(hs.port);
  send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n", 32);
  char *r = request(hs.port, GET("/metrics"), strlen(GET("/metrics")));
  hs.slow_mid_scrape = status_of(r);
  free(r);
  r = read_all(fd);
  hs.slow_status = status_of(r);
  free(r);
  close(fd);
}

/* MAX_CONNS idle connections fill the endpoint: one more is closed at once
 * (no bytes); each idle one gets 408; then scrapes work again. */
static void too_many(void) {
  int fds[MAX_CONNS];
  for (int i = 0; i < MAX_CONNS; i++)
    fds[i] = client_connect(hs.port);
  /* The endpoint counts a connection once its loop accepted it: a request on
   * the last one proves the others were accepted first (one listener, in
   * order). It is still inside its deadline, so a fresh connection now is
   * the (MAX_CONNS+1)-th. */
  int extra = client_connect(hs.port);
  char *r = read_all(extra);
  hs.extra_conn_len = r ? (int)strlen(r) : -1;
  free(r);
  close(extra);
  for (int i = 0; i < MAX_CONNS; i++) {
    r = read_all(fds[i]);
    hs.over_status[i] = status_of(r);
    free(r);
    close(fds[i]);
  }
  r = request(hs.port, GET("/metrics"), strlen(GET("/metrics")));
  hs.after_status = status_of(r);
  free(r);
}

static void client_main(void *arg) {
  (void)arg;
  scrape_until_counts();
  hostile_requests();
  slowloris();
  too_many();
  uv_async_send(&hs.done);
}

static void scrape_under_attack(void **state) {
  (void)state;
  memset(&hs, 0, sizeof(hs));
  hs.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(hs.rt);
  weft_metrics_http_options_t ho = {.listen = "127.0.0.1:0",
                                    .header_timeout_ms = HEADER_TIMEOUT_MS,
                                    .max_conns = MAX_CONNS};
  assert_int_equal(weft_metrics_http_start(ctx, &ho, &hs.http), 0);
  hs.port = weft_metrics_http_port(hs.http);
  assert_true(hs.port > 0);
  hs.n = ktest_scaled(10000, 500);
  weft_worker_options_t o = {.entry = worker_entry, .on_message = main_on_echo,
                             .port_hwm_msgs = (uint32_t)hs.n + 10};
  assert_int_equal(weft_worker_spawn(ctx, &o, &hs.w), 0);
  for (uint64_t i = 0; i < hs.n; i++)
    assert_int_equal(weft_port_post(weft_worker_port(hs.w), ktest_msg_u64(i)), 0);
  assert_int_equal(uv_async_init(weft_ctx_loop(ctx), &hs.done, on_done), 0);
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, client_main, NULL), 0);
  assert_int_equal(weft_runtime_run(hs.rt), 0);
  uv_thread_join(&tid);
  fprintf(stderr,
          "scrape %d: worker in=%.0f out=%.0f main in=%.0f (n=%llu); json %d head %d; "
          "404:%d 405:%d huge:%d long url:%d garbage:%d; slowloris %d (scrape meanwhile %d); "
          "conn over the limit got %d bytes; idle ones:",
          hs.scrape_status, hs.got_in, hs.got_out, hs.got_main_in, (unsigned long long)hs.n,
          hs.json_status, hs.head_status, hs.notfound, hs.badmethod, hs.huge, hs.longurl,
          hs.garbage, hs.slow_status, hs.slow_mid_scrape, hs.extra_conn_len);
  for (int i = 0; i < MAX_CONNS; i++)
    fprintf(stderr, " %d", hs.over_status[i]);
  fprintf(stderr, "; then scrape %d\n", hs.after_status);
  assert_true(hs.closed);
  assert_int_equal(hs.scrape_status, 200);
  assert_true(hs.prom_type);
  assert_true(hs.got_in == (double)hs.n && hs.got_out == (double)hs.n);
  assert_true(hs.got_main_in == (double)hs.n);
  assert_int_equal(hs.json_status, 200);
  assert_true(hs.json_ok);
  assert_int_equal(hs.head_status, 200);
  assert_true(hs.head_empty);
  assert_int_equal(hs.notfound, 404);
  assert_int_equal(hs.badmethod, 405);
  assert_true(hs.has_allow);
  assert_int_equal(hs.huge, 431);
  assert_int_equal(hs.longurl, 414);
  assert_int_equal(hs.garbage, 400);
  assert_int_equal(hs.slow_mid_scrape, 200);
  assert_int_equal(hs.slow_status, 408);
  assert_int_equal(hs.extra_conn_len, 0);
  for (int i = 0; i < MAX_CONNS; i++)
    assert_int_equal(hs.over_status[i], 408);
  assert_int_equal(hs.after_status, 200);
  ktest_finish_runtime(hs.rt);
}

/* ---- per-port tables on request ------------------------------------------------ */

#define PORT_K 37

typedef struct {
  weft_runtime_t *rt;
  weft_metrics_http_t *http;
  weft_port_t *q[2];
  uv_async_t done;
  int port;
  bool closed;
  int plain_status, json_status, prom_status;
  bool plain_has_ports, json_has_one, json_depth, prom_family;
  double prom_depth;
  char *json_body;
} ps_t;

static ps_t ps;

static void ports_done(uv_async_t *a) {
  uv_close((uv_handle_t *)a, NULL);
  weft_port_close(ps.q[0]);
  weft_port_close(ps.q[1]);
  CHECK_RC(weft_metrics_http_close(ps.http, on_http_closed, &ps.closed), 0);
}

static void ports_client(void *arg) {
  (void)arg;
  char *r = request(ps.port, GET("/metrics"), strlen(GET("/metrics")));
  ps.plain_status = status_of(r);
  ps.plain_has_ports = r && strstr(r, "weft_port_") != NULL;
  free(r);
  const char jreq[] = GET("/stats.json?ports=1&top=1");
  r = request(ps.port, jreq, strlen(jreq));
  ps.json_status = status_of(r);
  if (r) {
    const char *b = body_of(r), *arr = strstr(b, "\"ports\":[{");
    ps.json_has_one = arr && strchr(arr, '}') && strstr(strchr(arr, '}'), "},{") == NULL &&
                      strstr(b, "}]}\n") != NULL;
    char want[64];
    snprintf(want, sizeof(want), "\"ctx\":\"main\",\"queue_depth\":%d,", PORT_K);
    ps.json_depth = arr && strstr(arr, want) != NULL;
    ps.json_body = strdup(b);
  }
  free(r);
  const char preq[] = GET("/metrics?ports=1");
  r = request(ps.port, preq, strlen(preq));
  ps.prom_status = status_of(r);
  if (r) {
    const char *b = body_of(r), *line = strstr(b, "weft_port_queue_depth{ctx=\"main\",port=\"");
    ps.prom_family = strstr(b, "# TYPE weft_port_queue_depth gauge\n") != NULL &&
                     strstr(b, "# TYPE weft_loop_delay_seconds summary\n") != NULL;
    ps.prom_depth = -1;
    for (; line != NULL; line = strstr(line + 1, "weft_port_queue_depth{ctx=\"main\",port=\"")) {
      double v = strtod(strchr(line, '}') + 2, NULL);
      if (v > ps.prom_depth)
        ps.prom_depth = v;
    }
  }
  free(r);
  uv_async_send(&ps.done);
}

static void ports_on_request(void **state) {
  (void)state;
  memset(&ps, 0, sizeof(ps));
  ps.rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(ps.rt);
  assert_int_equal(weft_metrics_http_start(ctx, &(weft_metrics_http_options_t){0}, &ps.http), 0);
  ps.port = weft_metrics_http_port(ps.http);
  assert_int_equal(weft_channel_new(ctx, ps.q), 0);
  for (int i = 0; i < PORT_K; i++) /* q[1] is never started: they wait */
    assert_int_equal(weft_port_post(ps.q[0], ktest_msg_u64((uint64_t)i)), 0);
  assert_int_equal(uv_async_init(weft_ctx_loop(ctx), &ps.done, ports_done), 0);
  uv_thread_t tid;
  assert_int_equal(uv_thread_create(&tid, ports_client, NULL), 0);
  assert_int_equal(weft_runtime_run(ps.rt), 0);
  uv_thread_join(&tid);
  fprintf(stderr, "plain scrape %d (port families: %d); json?ports=1&top=1 %d: %.300s; "
          "metrics?ports=1 %d, busiest port depth %.0f\n", ps.plain_status,
          ps.plain_has_ports, ps.json_status, ps.json_body ? ps.json_body + strlen(ps.json_body) -
          (strlen(ps.json_body) > 300 ? 300 : strlen(ps.json_body)) : "", ps.prom_status,
          ps.prom_depth);
  free(ps.json_body);
  assert_true(ps.closed);
  assert_int_equal(ps.plain_status, 200);
  assert_false(ps.plain_has_ports); /* not by default */
  assert_int_equal(ps.json_status, 200);
  assert_true(ps.json_has_one);
  assert_true(ps.json_depth);
  assert_int_equal(ps.prom_status, 200);
  assert_true(ps.prom_family);
  assert_true(ps.prom_depth == PORT_K);
  ktest_finish_runtime(ps.rt);
}

static void start_errors(void **state) {
  (void)state;
  weft_runtime_t *rt = ktest_new_runtime();
  weft_ctx_t *ctx = weft_runtime_main(rt);
  weft_metrics_http_t *h = NULL, *h2 = NULL;
  static const char *bad[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
                              ":80", "no.such.host:80", "[::1:80"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    weft_metrics_http_options_t o = {.listen = bad[i]};
    assert_int_equal(weft_metrics_http_start(ctx, &o, &h), WEFT_EINVAL);
  }
  assert_int_equal(weft_metrics_http_start(NULL, NULL, &h), WEFT_EINVAL);
  assert_int_equal(weft_metrics_http_start(ctx, NULL, &h), 0);
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", weft_metrics_http_port(h));
  weft_metrics_http_options_t o = {.listen = addr};
  assert_int_equal(weft_metrics_http_start(ctx, &o, &h2), UV_EADDRINUSE);
  bool closed = false;
  assert_int_equal(weft_metrics_http_close(h, on_http_closed, &closed), 0);
  assert_int_equal(weft_runtime_run(rt), 0);
  assert_true(closed);
  ktest_finish_runtime(rt);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ktest_setup, ktest_teardown)

int main(void) {
  ktest_init();
  const struct CMUnitTest tests[] = {
      T(scrape_under_attack),
      T(ports_on_request),
      T(start_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
