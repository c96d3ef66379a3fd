/* offload_server.c: a TCP service whose requests do real CPU work, with and
 * without the weft pool, and what each does to its event loop.
 *
 * The service: on 127.0.0.1, a request is 4 bytes (N, big-endian), the answer
 * 8 bytes: how many primes lie below N. With --offload=off the count runs in
 * the read callback, on the loop that also accepts and reads; with on, the
 * read callback submits it to a weft_pool and the answer is written from the
 * task's callback (on the same loop, which stays free meanwhile).
 *
 * This is the "existing libuv program" case: main() owns a plain uv_loop_t
 * and attaches weft to it (weft_runtime_options_t.loop); the pool's callbacks
 * run on that loop.
 *
 * A built-in client (its own thread and loop) keeps C connections busy, one
 * request at a time each, for S seconds, and checks every answer. The probe:
 * another thread posts a timestamp to the server loop every millisecond
 * (uv_async_send) and the loop records how long it waited before its callback
 * ran: the delay any new connection or request would see. Printed per
 * setting: requests/s and that delay's p50/p99/max.
 *
 * Threads: the server, the pool's callbacks and the probe callback run on the
 * main thread; primes_task on pool threads; the client and the probe's
 * sampler on their own threads (they share only atomics and uv_async_send).
 *
 * Usage: offload_server [--offload=off|on|both] [--seconds=S] [--n=N]
 *                       [--conns=C] [--threads=T] [--demo]
 * --demo: both settings, 1 s each, N = 40000; exits by itself. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>
#include "weft/pool.h"

#define REQ_LEN 4
#define RESP_LEN 8

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

typedef struct {
  const char *offload; /* "off", "on", "both" */
  double seconds;
  uint32_t n, conns, threads;
} config_t;

/* ---- the work (pure, any thread) ------------------------------------------- */

static bool is_prime(uint32_t n) {
  if (n < 2)
    return false;
  if (n % 2 == 0)
    return n == 2;
  for (uint32_t d = 3; d * d <= n; d += 2)
    if (n % d == 0)
      return false;
  return true;
}

static uint64_t count_primes(uint32_t n) {
  uint64_t k = 0;
  for (uint32_t i = 0; i < n; i++)
    k += is_prime(i);
  return k;
}

/* The pool task: {n} -> primes below n. */
static int primes_task(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t n = 0;
  int err = weft_msg_get_u64(args, NULL, &n);
  if (err == 0)
    err = weft_msg_new(result);
  if (err == 0)
    err = weft_msg_put_u64(*result, NULL, count_primes((uint32_t)n));
  return err;
}

/* ---- the probe: how long a new event waits for the loop ---------------------- */

typedef struct {
  uv_async_t async;           /* on the server loop */
  uv_thread_t tid;
  _Atomic uint64_t posted_at; /* oldest unserved post (uv_hrtime), 0: none */
  atomic_bool stop;
  uint64_t *ns;
  size_t n, cap;
} probe_t;

static void probe_main(void *arg) {
  probe_t *p = arg;
  while (!atomic_load(&p->stop)) {
    uint64_t none = 0;
    atomic_compare_exchange_strong(&p->posted_at, &none, uv_hrtime());
    uv_async_send(&p->async);
    uv_sleep(1); /* the sampling period, not synchronisation */
  }
}

static void on_probe(uv_async_t *a) {
  probe_t *p = a->data;
  uint64_t t = atomic_exchange(&p->posted_at, 0);
  if (t == 0)
    return;
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 4096;
    p->ns = realloc(p->ns, p->cap * sizeof(*p->ns));
    check(p->ns ? 0 : UV_ENOMEM, "realloc");
  }
  p->ns[p->n++] = uv_hrtime() - t;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double probe_pct_ms(probe_t *p, double pct) {
  if (p->n == 0)
    return 0;
  qsort(p->ns, p->n, sizeof(*p->ns), cmp_u64);
  size_t i = (size_t)(pct / 100.0 * (double)(p->n - 1) + 0.5);
  return (double)p->ns[i] / 1e6;
}

/* ---- the server ------------------------------------------------------------------ */

typedef struct {
  uv_loop_t *loop;
  uv_tcp_t listener;
  weft_pool_t *pool; /* NULL: offload off */
  probe_t probe;
  uv_async_t client_done;
  weft_pool_stats_t pool_st; /* read just before the pool closes */
} server_t;

typedef struct {
  uv_tcp_t tcp;
  server_t *srv;
  uint8_t in[REQ_LEN], out[RESP_LEN];
  size_t have;
  uv_write_t wr;
  bool busy, closed; /* a task in flight; the handle closed */
} conn_t;

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  c->closed = true;
  if (!c->busy)
    free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  *buf = uv_buf_init((char *)c->in + c->have, (unsigned)(REQ_LEN - c->have));
}

static void on_written(uv_write_t *wr, int status) {
  conn_t *c = wr->data;
  if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

static void reply(conn_t *c, uint64_t primes) {
  for (int i = 0; i < RESP_LEN; i++)
    c->out[i] = (uint8_t)(primes >> (56 - 8 * i));
  uv_buf_t b = uv_buf_init((char *)c->out, RESP_LEN);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
    conn_close(c);
}

static void on_task_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)pool;
  conn_t *c = data;
  uint64_t primes = 0;
  if (err == 0)
    err = weft_msg_get_u64(result, NULL, &primes);
  weft_msg_free(result);
  c->busy = false;
  if (c->closed)
    free(c);
  else if (err != 0)
    conn_close(c);
  else
    reply(c, primes);
}

static void handle_request(conn_t *c) {
  uint32_t n = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 | (uint32_t)c->in[2] << 8 |
               c->in[3];
  c->have = 0;
  if (c->srv->pool == NULL) {
    reply(c, count_primes(n)); /* the loop is busy until this returns */
    return;
  }
  weft_msg_t *args;
  check(weft_msg_new(&args), "weft_msg_new");
  weft_msg_put_u64(args, NULL, n);
  weft_pool_task_options_t o = {.fn = primes_task, .args = args};
  int err = weft_pool_submit(c->srv->pool, &o, on_task_done, c, NULL);
  if (err != 0) { /* e.g. WEFT_EAGAIN: a real service would answer "busy" */
    weft_msg_free(args);
    conn_close(c);
    return;
  }
  c->busy = true;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->have += (size_t)nread;
  if (c->have == REQ_LEN) {
    uv_read_stop(s); /* one request at a time per connection */
    handle_request(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  server_t *srv = listener->data;
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  check(c ? 0 : UV_ENOMEM, "calloc");
  c->srv = srv;
  check(uv_tcp_init(srv->loop, &c->tcp), "uv_tcp_init");
  c->tcp.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

static int server_listen(server_t *srv) {
  struct sockaddr_in addr;
  check(uv_ip4_addr("127.0.0.1", 0, &addr), "uv_ip4_addr");
  check(uv_tcp_init(srv->loop, &srv->listener), "uv_tcp_init");
  srv->listener.data = srv;
  check(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0), "uv_tcp_bind");
  check(uv_listen((uv_stream_t *)&srv->listener, 128, on_connection), "uv_listen");
  struct sockaddr_in bound;
  int len = sizeof(bound);
  check(uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len), "getsockname");
  return ntohs(bound.sin_port);
}

/* ---- the built-in client (its own thread and loop) ------------------------------ */

typedef struct {
  uv_loop_t loop;
  uv_thread_t tid;
  int port;
  uint32_t n, conns;
  uint64_t want, deadline, t0, t1;
  uint64_t answers, wrong, failed;
  uv_async_t *done; /* on the server loop */
} client_t;

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t cr;
  uv_write_t wr;          /* reused: the next request waits for its callback */
  uint8_t req[REQ_LEN], resp[RESP_LEN];
  size_t have;
  bool written, answered; /* the current request's write is done; its answer is in */
  client_t *cl;
} cconn_t;

static void cconn_closed(uv_handle_t *h) { free(h->data); }

static void cl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void cl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  cconn_t *k = h->data;
  *buf = uv_buf_init((char *)k->resp + k->have, (unsigned)(RESP_LEN - k->have));
}

static void cl_fail(cconn_t *k) {
  k->cl->failed++;
  if (!uv_is_closing((uv_handle_t *)&k->tcp))
    uv_close((uv_handle_t *)&k->tcp, cconn_closed);
}

static void cl_next(cconn_t *k);

static void cl_written(uv_write_t *wr, int status) {
  cconn_t *k = wr->data;
  if (status == UV_ECANCELED)
    return; /* closing */
  if (status < 0) {
    cl_fail(k);
    return;
  }
  k->written = true;
  if (k->answered)
    cl_next(k);
}

static void cl_send(cconn_t *k) {
  uv_buf_t b = uv_buf_init((char *)k->req, REQ_LEN);
  k->have = 0;
  k->written = k->answered = false;
  k->wr.data = k;
  if (uv_write(&k->wr, (uv_stream_t *)&k->tcp, &b, 1, cl_written) != 0 ||
      uv_read_start((uv_stream_t *)&k->tcp, cl_alloc, cl_read) != 0)
    cl_fail(k);
}

/* Both halves of a request are done: the next one, or the end. */
static void cl_next(cconn_t *k) {
  uint64_t now = uv_hrtime();
  if (now < k->cl->deadline) {
    cl_send(k);
    return;
  }
  k->cl->t1 = now;
  uv_close((uv_handle_t *)&k->tcp, cconn_closed);
}

static void cl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  cconn_t *k = s->data;
  client_t *cl = k->cl;
  if (nread < 0) {
    cl_fail(k);
    return;
  }
  k->have += (size_t)nread;
  if (k->have < RESP_LEN)
    return;
  uint64_t v = 0;
  for (int i = 0; i < RESP_LEN; i++)
    v = v << 8 | k->resp[i];
  cl->answers++;
  cl->wrong += v != cl->want;
  uv_read_stop(s);
  k->answered = true;
  if (k->written)
    cl_next(k);
}

static void cl_connected(uv_connect_t *cr, int status) {
  cconn_t *k = cr->data;
  if (status < 0) {
    cl_fail(k);
    return;
  }
  cl_send(k);
}

static void client_main(void *arg) {
  client_t *cl = arg;
  check(uv_loop_init(&cl->loop), "uv_loop_init");
  struct sockaddr_in addr;
  check(uv_ip4_addr("127.0.0.1", cl->port, &addr), "uv_ip4_addr");
  for (uint32_t i = 0; i < cl->conns; i++) {
    cconn_t *k = calloc(1, sizeof(*k));
    check(k ? 0 : UV_ENOMEM, "calloc");
    k->cl = cl;
    for (int b = 0; b < REQ_LEN; b++)
      k->req[b] = (uint8_t)(cl->n >> (24 - 8 * b));
    check(uv_tcp_init(&cl->loop, &k->tcp), "uv_tcp_init");
    k->tcp.data = k->cr.data = k;
    check(uv_tcp_connect(&k->cr, &k->tcp, (const struct sockaddr *)&addr, cl_connected),
          "uv_tcp_connect");
  }
  uv_run(&cl->loop, UV_RUN_DEFAULT);
  uv_loop_close(&cl->loop);
  uv_async_send(cl->done);
}

/* ---- one setting ---------------------------------------------------------------- */

/* The client is done: stop probing, then close everything on the loop. */
static void on_client_done(uv_async_t *a) {
  server_t *srv = a->data;
  atomic_store(&srv->probe.stop, true);
  uv_thread_join(&srv->probe.tid);
  uv_close((uv_handle_t *)&srv->probe.async, NULL);
  uv_close((uv_handle_t *)&srv->client_done, NULL);
  uv_close((uv_handle_t *)&srv->listener, NULL);
  if (srv->pool) {
    weft_pool_stats(srv->pool, &srv->pool_st);
    check(weft_pool_close(srv->pool, NULL), "weft_pool_close");
  }
}

static void run_setting(const config_t *cfg, bool offload) {
  uv_loop_t loop; /* the program's own loop; weft attaches to it */
  check(uv_loop_init(&loop), "uv_loop_init");
  weft_runtime_t *rt;
  weft_runtime_options_t ro = {.loop = &loop};
  check(weft_runtime_new(&rt, &ro), "weft_runtime_new");
  server_t srv = {.loop = &loop};
  if (offload) {
    weft_pool_options_t po = {.size = cfg->threads};
    check(weft_pool_new(weft_runtime_main(rt), &po, &srv.pool), "weft_pool_new");
  }
  client_t cl = {.port = server_listen(&srv), .n = cfg->n, .conns = cfg->conns,
                 .want = count_primes(cfg->n), .done = &srv.client_done};
  check(uv_async_init(&loop, &srv.probe.async, on_probe), "uv_async_init");
  check(uv_async_init(&loop, &srv.client_done, on_client_done), "uv_async_init");
  srv.probe.async.data = &srv.probe;
  srv.client_done.data = &srv;
  check(uv_thread_create(&srv.probe.tid, probe_main, &srv.probe), "probe thread");
  cl.t0 = uv_hrtime();
  cl.deadline = cl.t0 + (uint64_t)(cfg->seconds * 1e9);
  check(uv_thread_create(&cl.tid, client_main, &cl), "client thread");

  check(uv_run(&loop, UV_RUN_DEFAULT), "uv_run");
  uv_thread_join(&cl.tid);
  double secs = (double)(cl.t1 - cl.t0) / 1e9;
  char label[32];
  snprintf(label, sizeof(label), offload ? "on (%u threads)" : "off", cfg->threads);
  printf("offload=%-15s %7.0f req/s; loop delay p50 %.3f ms, p99 %.3f ms, max %.3f ms "
         "(%zu probes)%s\n",
         label, (double)cl.answers / secs, probe_pct_ms(&srv.probe, 50),
         probe_pct_ms(&srv.probe, 99), probe_pct_ms(&srv.probe, 100), srv.probe.n,
         cl.wrong || cl.failed ? "  ERRORS" : "");
  if (offload)
    printf("    pool: %llu tasks, queue wait p50 %.3f ms p99 %.3f ms, run p50 %.3f ms, "
           "thread utilisation %.0f%%\n",
           (unsigned long long)srv.pool_st.completed, (double)srv.pool_st.wait.p50_ns / 1e6,
           (double)srv.pool_st.wait.p99_ns / 1e6, (double)srv.pool_st.run.p50_ns / 1e6,
           100.0 * srv.pool_st.utilization);
  if (cl.wrong || cl.failed) {
    fprintf(stderr, "%llu wrong answers, %llu failed connections\n",
            (unsigned long long)cl.wrong, (unsigned long long)cl.failed);
    exit(1);
  }
  free(srv.probe.ns);
  check(weft_runtime_free(rt), "weft_runtime_free");
  check(uv_loop_close(&loop), "uv_loop_close");
}

/* ---- main ---------------------------------------------------------------------- */

static void parse(int argc, char **argv, config_t *cfg) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--demo") == 0) {
      cfg->offload = "both";
      cfg->seconds = 1.0;
      cfg->n = 40000;
    } else if (strncmp(a, "--offload=", 10) == 0) {
      cfg->offload = a + 10;
    } else if (strncmp(a, "--seconds=", 10) == 0) {
      cfg->seconds = strtod(a + 10, NULL);
    } else if (strncmp(a, "--n=", 4) == 0) {
      cfg->n = (uint32_t)strtoul(a + 4, NULL, 10);
    } else if (strncmp(a, "--conns=", 8) == 0) {
      cfg->conns = (uint32_t)strtoul(a + 8, NULL, 10);
    } else if (strncmp(a, "--threads=", 10) == 0) {
      cfg->threads = (uint32_t)strtoul(a + 10, NULL, 10);
    } else {
      fprintf(stderr, "usage: offload_server [--offload=off|on|both] [--seconds=S] [--n=N]\n"
                      "                      [--conns=C] [--threads=T] [--demo]\n");
      exit(2);
    }
  }
  bool known = strcmp(cfg->offload, "off") == 0 || strcmp(cfg->offload, "on") == 0 ||
               strcmp(cfg->offload, "both") == 0;
  if (!known || cfg->seconds <= 0 || cfg->seconds > 3600 || cfg->n == 0 || cfg->conns == 0 ||
      cfg->conns > 1000 || cfg->threads == 0) {
    fprintf(stderr, "offload_server: bad option value\n");
    exit(2);
  }
}

int main(int argc, char **argv) {
  config_t cfg = {.offload = "both", .seconds = 3.0, .n = 100000, .conns = 8,
                  .threads = weft_available_parallelism()};
  parse(argc, argv, &cfg);
  printf("offload_server: %u connections on 127.0.0.1, each request counts the primes "
         "below %u, %.1f s per setting\n",
         cfg.conns, cfg.n, cfg.seconds);
  if (strcmp(cfg.offload, "on") != 0)
    run_setting(&cfg, false);
  if (strcmp(cfg.offload, "off") != 0)
    run_setting(&cfg, true);
  return 0;
}
