/* remote_stream.c: a producer streams records to a slow consumer on another
 * node, with backpressure end to end.
 *
 * Erlang would send without limit (a slow receiver's mailbox grows until the
 * node runs out of memory); here the consumer's node grants the producer a
 * window and credits it back only as the consumer's port takes records, so
 * the producer's weft_port_post returns WEFT_EAGAIN, the record stays with
 * it, and the drain callback says when to go on. Memory on both nodes is
 * bounded by the windows and the ports' bounds, however long the stream.
 *
 * This one executable is both nodes. Run without arguments (or with
 * --demo), it is the "producer": it listens on a free TCP port of
 * 127.0.0.1 and starts itself again as the "consumer" (`remote_stream
 * --consumer URL`), which dials it and publishes a port under "sink". The
 * producer looks "sink" up, sends a first message carrying a port for
 * progress reports (it arrives on the consumer as a port that routes back),
 * then RECORDS records {seq, payload}: 1000 payload bytes derived from seq.
 * The consumer takes records in bursts (BURST records, then it sleeps a
 * millisecond: a consumer far slower than the network), checks that every
 * record arrives in order and intact, and reports its count and RSS every
 * REPORT_EVERY records and at the end. The producer prints both processes'
 * RSS at each report and its stalls (WEFT_EAGAIN episodes) at the end;
 * then it closes its node, the consumer sees it go and exits, and the
 * producer reaps it. Exit status 0 only if every record arrived, in order,
 * and the producer was held back at least once.
 *
 * The producer's runtime bounds every port at PORT_HWM messages (the
 * default, 65536, would let more wait on this side before WEFT_EAGAIN:
 * still bounded, only later).
 *
 * Usage: remote_stream [--demo]      (exits by itself) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <weft.h>

#define RECORDS 100000u
#define PAYLOAD 1000u
#define PORT_HWM 256u      /* producer: each port's inbound bound */
#define SINK_HWM 256u      /* consumer: what waits for the slow program */
#define BURST 64u          /* consumer: records taken between two naps */
#define REPORT_EVERY 20000u
#define WATCHDOG_MS 60000u /* a run that takes longer is a failure */

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

static bool op_is(const weft_msg_t *m, const char *op) {
  const char *s;
  size_t n;
  return weft_msg_get_str(m, "op", &s, &n) == 0 && n == strlen(op) && memcmp(s, op, n) == 0;
}

static double rss_mib(void) {
  size_t rss = 0;
  uv_resident_set_memory(&rss);
  return rss / (1024.0 * 1024.0);
}

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static void fill_payload(uint8_t *p, uint64_t seq) {
  for (uint32_t i = 0; i < PAYLOAD; i++)
    p[i] = (uint8_t)(seq * 31u + i);
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "remote_stream: no end after %u ms: giving up\n", WATCHDOG_MS);
  exit(1); /* the consumer sees its peer go and exits too */
}

static void start_watchdog(weft_ctx_t *ctx, uv_timer_t *t) {
  uv_timer_init(weft_ctx_loop(ctx), t);
  uv_timer_start(t, on_watchdog, WATCHDOG_MS, 0);
  uv_unref((uv_handle_t *)t); /* watches; does not keep the loop alive */
}

/* ---- the consumer's node ------------------------------------------------------------ */

static struct {
  weft_node_t *node;
  weft_port_t *mine;     /* takes what is posted on the published port */
  weft_port_t *progress; /* the producer's port, carried in the first message */
  uint64_t got, in_burst;
  bool in_order;
  uv_timer_t watchdog;
} cons = {.in_order = true};

static void report(const char *op) {
  if (cons.progress == NULL)
    return;
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 5);
  weft_msg_put_str(m, "op", op);
  weft_msg_put_u64(m, "got", cons.got);
  weft_msg_put_bool(m, "in_order", cons.in_order);
  weft_msg_put_f64(m, "rss", rss_mib());
  weft_msg_put_f64(m, "peak", peak_rss_mib());
  int err = weft_port_post(cons.progress, m);
  if (err) /* a report the producer no longer waits for */
    weft_msg_free(m);
}

static void on_record(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  uint64_t seq;
  const void *payload;
  size_t len;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0) {
    uint8_t want[PAYLOAD];
    fill_payload(want, seq);
    if (seq != cons.got || weft_msg_get_bin(msg, "payload", &payload, &len) != 0 ||
        len != PAYLOAD || memcmp(payload, want, PAYLOAD) != 0)
      cons.in_order = false;
    cons.got++;
    if (cons.got % REPORT_EVERY == 0 && cons.got < RECORDS)
      report("progress");
    if (++cons.in_burst == BURST) { /* the slow part: a nap every BURST records */
      cons.in_burst = 0;
      nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
  } else if (op_is(msg, "hello")) {
    check(weft_msg_take_port(msg, 0, &cons.progress), "weft_msg_take_port");
  } else if (op_is(msg, "end")) {
    report("final");
  }
  weft_msg_free(msg);
}

static void consumer_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                             void *data) {
  (void)data;
  printf("[consumer %d] %s is %s%s%s\n", (int)uv_os_getpid(), peer, up ? "up" : "down",
         up ? "" : ": ", up ? "" : weft_err_name(reason));
  if (up)
    return;
  if (cons.progress)
    weft_port_close(cons.progress);
  weft_port_close(cons.mine);
  weft_node_close(node, NULL, NULL); /* closes the published port too */
}

static int run_consumer(const char *url) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  start_watchdog(ctx, &cons.watchdog);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = "consumer", .peers = peers, .on_monitor = consumer_monitor};
  check(weft_node_start(ctx, &o, &cons.node), "weft_node_start");
  weft_port_t *ports[2];
  check(weft_channel_new(ctx, ports), "weft_channel_new");
  cons.mine = ports[1];
  /* The records wait here for the slow program; past this bound they wait
   * in the node, uncredited, and the producer runs out of window. */
  check(weft_port_set_hwm(cons.mine, SINK_HWM, 0), "weft_port_set_hwm");
  check(weft_port_start(cons.mine, on_record), "weft_port_start");
  check(weft_node_publish(cons.node, "sink", ports[0]), "weft_node_publish");
  printf("[consumer %d] published \"sink\", dialling %s\n", (int)uv_os_getpid(), url);
  check(weft_runtime_run(rt), "weft_runtime_run");
  uv_close((uv_handle_t *)&cons.watchdog, NULL);
  uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* ---- the producer's node ------------------------------------------------------------ */

static struct {
  weft_node_t *node;
  weft_port_t *sink;     /* the consumer's "sink", from the lookup */
  weft_port_t *progress; /* the consumer reports here */
  uint64_t sent, stalls;
  weft_msg_t *held;      /* refused with WEFT_EAGAIN: posted again first */
  bool end_sent, final_ok, consumer_ok;
  uint64_t t0;
  uv_process_t consumer;
  uv_timer_t watchdog;
} prod;

static weft_msg_t *next_record(void) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  if (prod.sent == RECORDS) {
    weft_msg_put_str(m, "op", "end");
    weft_msg_put_u64(m, "records", RECORDS);
    return m;
  }
  uint8_t payload[PAYLOAD];
  fill_payload(payload, prod.sent);
  weft_msg_put_u64(m, "seq", prod.sent);
  weft_msg_put_bin(m, "payload", payload, PAYLOAD);
  return m;
}

/* Posts until the stream is done or the sink's bound says wait. */
static void pump(void) {
  while (!prod.end_sent) {
    weft_msg_t *m = prod.held ? prod.held : next_record();
    prod.held = NULL;
    int err = weft_port_post(prod.sink, m);
    if (err == WEFT_EAGAIN) { /* m is still ours: keep it for the drain */
      prod.held = m;
      prod.stalls++;
      return;
    }
    if (err)
      weft_msg_free(m);
    check(err, "weft_port_post");
    if (prod.sent == RECORDS)
      prod.end_sent = true;
    else
      prod.sent++;
  }
}

static void on_sink_drain(weft_port_t *port) {
  (void)port;
  pump();
}

static void on_sink_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  if (info->reason != 0)
    printf("[producer %d] sink closed: %s, %llu undelivered\n", (int)uv_os_getpid(),
           weft_err_name(info->reason), (unsigned long long)info->undelivered);
  weft_msg_free(prod.held);
  prod.held = NULL;
  prod.sink = NULL;
}

static void on_progress(weft_port_t *port, weft_msg_t *msg) {
  uint64_t got = 0;
  bool in_order = false;
  double rss = 0, peak = 0;
  weft_msg_get_u64(msg, "got", &got);
  weft_msg_get_bool(msg, "in_order", &in_order);
  weft_msg_get_f64(msg, "rss", &rss);
  weft_msg_get_f64(msg, "peak", &peak);
  bool final = op_is(msg, "final");
  weft_msg_free(msg);
  printf("[producer %d] %6llu records taken by the consumer, %6llu posted, %4llu stalls; "
         "RSS producer %.1f MiB, consumer %.1f MiB\n",
         (int)uv_os_getpid(), (unsigned long long)got, (unsigned long long)prod.sent,
         (unsigned long long)prod.stalls, rss_mib(), rss);
  if (!final)
    return;
  double secs = (uv_hrtime() - prod.t0) / 1e9;
  prod.final_ok = got == RECORDS && in_order;
  printf("[producer %d] done: %llu/%u records in order: %s, in %.2f s (%.0f records/s); "
         "%llu WEFT_EAGAIN stalls; peak RSS producer %.1f MiB, consumer %.1f MiB\n",
         (int)uv_os_getpid(), (unsigned long long)got, RECORDS, prod.final_ok ? "yes" : "NO",
         secs, got / secs, (unsigned long long)prod.stalls, peak_rss_mib(), peak);
  weft_port_close(port);
  if (prod.sink)
    weft_port_close(prod.sink);
  weft_node_close(prod.node, NULL, NULL); /* the consumer sees us go and exits */
}

static void on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  check(status, "weft_node_lookup");
  prod.sink = port;
  check(weft_port_on_drain(port, on_sink_drain), "weft_port_on_drain");
  check(weft_port_on_close(port, on_sink_closed), "weft_port_on_close");
  /* The first message carries the port the consumer reports on. */
  weft_port_t *ports[2];
  check(weft_channel_new(weft_ctx_current(), ports), "weft_channel_new");
  prod.progress = ports[0];
  check(weft_port_start(prod.progress, on_progress), "weft_port_start");
  weft_msg_t *hello;
  check(weft_msg_new(&hello), "weft_msg_new");
  weft_msg_put_map(hello, 1);
  weft_msg_put_str(hello, "op", "hello");
  check(weft_msg_add_port(hello, ports[1]), "weft_msg_add_port");
  int err = weft_port_post(port, hello);
  if (err)
    weft_msg_free(hello);
  check(err, "weft_port_post");
  printf("[producer %d] found \"sink\" on the consumer; streaming %u records of %u bytes "
         "(RSS %.1f MiB)\n", (int)uv_os_getpid(), RECORDS, PAYLOAD, rss_mib());
  prod.t0 = uv_hrtime();
  pump();
}

static void producer_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                             void *data) {
  (void)data;
  printf("[producer %d] %s is %s%s%s\n", (int)uv_os_getpid(), peer, up ? "up" : "down",
         up ? "" : ": ", up ? "" : weft_err_name(reason));
  if (up && strcmp(peer, "consumer") == 0)
    check(weft_node_lookup(node, peer, "sink", 10000, on_found, NULL), "weft_node_lookup");
}

static void on_consumer_exit(uv_process_t *p, int64_t status, int sig) {
  printf("[producer %d] consumer exited with status %d, signal %d\n", (int)uv_os_getpid(),
         (int)status, sig);
  prod.consumer_ok = status == 0 && sig == 0;
  uv_close((uv_handle_t *)p, NULL);
  uv_close((uv_handle_t *)&prod.watchdog, NULL);
}

static int run_producer(const char *self) {
  weft_runtime_options_t ro = {.port_hwm_msgs = PORT_HWM};
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, &ro), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  start_watchdog(ctx, &prod.watchdog);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "producer", .listen = listen,
                           .on_monitor = producer_monitor};
  check(weft_node_start(ctx, &o, &prod.node), "weft_node_start");
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(prod.node, 0));
  printf("[producer %d] listening on %s; starting the consumer\n", (int)uv_os_getpid(), url);
  char *args[] = {(char *)self, "--consumer", url, NULL};
  uv_process_options_t po = {.file = self, .args = args, .exit_cb = on_consumer_exit};
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  po.stdio = stdio;
  po.stdio_count = 3;
  check(uv_spawn(weft_ctx_loop(ctx), &prod.consumer, &po), "uv_spawn");
  check(weft_runtime_run(rt), "weft_runtime_run");
  int rc = weft_runtime_free(rt) == 0 ? 0 : 1;
  if (!prod.final_ok || !prod.consumer_ok || prod.stalls == 0) {
    fprintf(stderr, "remote_stream: FAILED (records in order: %s, consumer exit ok: %s, "
            "stalls: %llu)\n", prod.final_ok ? "yes" : "no", prod.consumer_ok ? "yes" : "no",
            (unsigned long long)prod.stalls);
    return 1;
  }
  return rc;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "--consumer") == 0)
    return run_consumer(argv[2]);
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "--demo") != 0)) {
    fprintf(stderr, "usage: %s [--demo]\n", argv[0]);
    return 2;
  }
  char self[4096];
  size_t len = sizeof(self);
  check(uv_exepath(self, &len), "uv_exepath");
  return run_producer(self);
}
