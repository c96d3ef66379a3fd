/* node_down.c: a node dies mid-stream; nothing is lost silently.
 *
 * Erlang: monitor_node(Victim, true), then {nodedown, Victim} arrives when
 * the node goes; what was sent to it is simply gone. weft says how much:
 * every remote port to the dead node closes with WEFT_EPEERDIED and counts
 * the messages it sent that the other node never acknowledged, so
 *
 *   sent = acknowledged + undelivered
 *
 * where acknowledged means the victim's node took the message into the
 * published port's queue (it credited it back). What the victim's program
 * had in that queue but not yet handled when it died is the one loss no
 * transport can report: the "last report" line below shows it.
 *
 * This one executable is both nodes. Run without arguments (or with
 * --demo), it is the "survivor": it listens on a free TCP port of 127.0.0.1
 * and starts itself again as the "victim" (`node_down --victim URL`), which
 * dials it and publishes "sink", a slow consumer that reports how many
 * records it handled every REPORT_EVERY, on a port the survivor sent it.
 * The survivor streams records to "sink" without end (WEFT_EAGAIN, then the
 * drain callback), and once the victim reports KILL_AFTER records it kills
 * the victim with SIGKILL. Then it waits for: the monitor saying the victim
 * is down, the sink port's close (WEFT_EPEERDIED, undelivered count), the
 * report port's close, and the process's exit; prints sent, acknowledged
 * and undelivered, checks they add up, closes its node and exits (0 only
 * if every check held).
 *
 * Usage: node_down [--demo]      (exits by itself) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft.h>

#define KILL_AFTER 5000u   /* records the victim handles before it is killed */
#define REPORT_EVERY 500u
#define SINK_HWM 128u      /* victim: what waits for its slow program */
#define BURST 32u          /* victim: records handled between two naps */
#define HEARTBEAT_MS 500u  /* both nodes; a silent peer is down after this */
#define PORT_HWM 256u      /* survivor: each port's inbound bound */
#define WATCHDOG_MS 60000u

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "node_down: no end after %u ms: giving up\n", WATCHDOG_MS);
  exit(1);
}

static void start_watchdog(weft_ctx_t *ctx, uv_timer_t *t) {
  uv_timer_init(weft_ctx_loop(ctx), t);
  uv_timer_start(t, on_watchdog, WATCHDOG_MS, 0);
  uv_unref((uv_handle_t *)t); /* watches; does not keep the loop alive */
}

/* ---- the victim's node -------------------------------------------------------------- */

static struct {
  weft_port_t *mine, *reports;
  uint64_t got, in_burst;
  uv_timer_t watchdog;
} vic;

static void on_record(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  uint64_t seq;
  if (weft_msg_get_u64(msg, "seq", &seq) == 0) {
    vic.got++;
    if (vic.got % REPORT_EVERY == 0 && vic.reports != NULL) {
      weft_msg_t *m;
      check(weft_msg_new(&m), "weft_msg_new");
      weft_msg_put_map(m, 1);
      weft_msg_put_u64(m, "handled", vic.got);
      if (weft_port_post(vic.reports, m) != 0)
        weft_msg_free(m);
    }
    if (++vic.in_burst == BURST) { /* slow: a nap every BURST records */
      vic.in_burst = 0;
      nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
  } else if (weft_msg_xfer_count(msg) == 1 && vic.reports == NULL) {
    check(weft_msg_take_port(msg, 0, &vic.reports), "weft_msg_take_port");
  }
  weft_msg_free(msg);
}

static void victim_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                           void *data) {
  (void)data;
  (void)reason;
  if (up)
    return;
  /* Only if the survivor goes first (it should not): do not linger. */
  fprintf(stderr, "[victim   %d] %s went away\n", (int)uv_os_getpid(), peer);
  if (vic.reports)
    weft_port_close(vic.reports);
  weft_port_close(vic.mine);
  weft_node_close(node, NULL, NULL);
}

static int run_victim(const char *url) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  start_watchdog(ctx, &vic.watchdog);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = "victim", .peers = peers, .heartbeat_ms = HEARTBEAT_MS,
                           .on_monitor = victim_monitor};
  weft_node_t *node;
  check(weft_node_start(ctx, &o, &node), "weft_node_start");
  weft_port_t *ports[2];
  check(weft_channel_new(ctx, ports), "weft_channel_new");
  vic.mine = ports[1];
  check(weft_port_set_hwm(vic.mine, SINK_HWM, 0), "weft_port_set_hwm");
  check(weft_port_start(vic.mine, on_record), "weft_port_start");
  check(weft_node_publish(node, "sink", ports[0]), "weft_node_publish");
  printf("[victim   %d] published \"sink\", dialling %s\n", (int)uv_os_getpid(), url);
  check(weft_runtime_run(rt), "weft_runtime_run");
  uv_close((uv_handle_t *)&vic.watchdog, NULL);
  uv_run(weft_ctx_loop(ctx), UV_RUN_NOWAIT);
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* ---- the survivor's node ------------------------------------------------------------ */

static struct {
  weft_node_t *node;
  weft_port_t *sink, *reports;
  uint64_t sent, stalls, last_report;
  weft_msg_t *held;         /* refused with WEFT_EAGAIN: posted again first */
  uint64_t kill_ns, down_ns;
  bool killed, down, sink_closed, reports_closed, exited, finished;
  int down_reason, sink_reason, exit_signal;
  int64_t exit_status;
  uint64_t undelivered;
  uv_process_t victim;
  uv_timer_t watchdog;
} sur;

static const char *pid_tag(void) {
  static char tag[32];
  snprintf(tag, sizeof(tag), "[survivor %d]", (int)uv_os_getpid());
  return tag;
}

static void finish(void) {
  if (sur.finished || !sur.down || !sur.sink_closed || !sur.reports_closed || !sur.exited)
    return;
  sur.finished = true;
  uint64_t acked = sur.sent - sur.undelivered;
  printf("%s sent %llu, acknowledged by the victim's node %llu, undelivered %llu "
         "(%llu + %llu = %llu: %s)\n", pid_tag(), (unsigned long long)sur.sent,
         (unsigned long long)acked, (unsigned long long)sur.undelivered,
         (unsigned long long)acked, (unsigned long long)sur.undelivered,
         (unsigned long long)(acked + sur.undelivered),
         acked + sur.undelivered == sur.sent && sur.undelivered <= sur.sent ? "adds up"
                                                                            : "WRONG");
  printf("%s the victim's last report: %llu handled; so %llu acknowledged records were in "
         "its queue, not yet handled, when it died\n", pid_tag(),
         (unsigned long long)sur.last_report, (unsigned long long)(acked - sur.last_report));
  printf("%s down %.1f ms after the SIGKILL (heartbeat %u ms: the connection's close told "
         "first); %llu WEFT_EAGAIN stalls on the way\n", pid_tag(),
         (sur.down_ns - sur.kill_ns) / 1e6, HEARTBEAT_MS, (unsigned long long)sur.stalls);
  weft_node_close(sur.node, NULL, NULL);
  uv_close((uv_handle_t *)&sur.watchdog, NULL);
}

static bool all_checks_hold(void) {
  return sur.finished && sur.down_reason == WEFT_EPEERDIED &&
         sur.sink_reason == WEFT_EPEERDIED && sur.exit_signal == SIGKILL &&
         sur.undelivered > 0 && sur.undelivered <= sur.sent &&
         sur.last_report >= KILL_AFTER && sur.last_report <= sur.sent - sur.undelivered;
}

static weft_msg_t *next_record(void) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "seq", sur.sent);
  weft_msg_put_str(m, "text", "a record the victim may never see");
  return m;
}

/* Streams until the sink says wait (or closes): a stream without end. */
static void pump(void) {
  while (sur.sink != NULL) {
    weft_msg_t *m = sur.held ? sur.held : next_record();
    sur.held = NULL;
    int err = weft_port_post(sur.sink, m);
    if (err == WEFT_EAGAIN) {
      sur.held = m;
      sur.stalls++;
      return;
    }
    if (err) { /* WEFT_ECLOSED: the victim is gone; its close event follows */
      weft_msg_free(m);
      return;
    }
    sur.sent++;
  }
}

static void on_sink_drain(weft_port_t *port) {
  (void)port;
  pump();
}

static void on_sink_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  sur.sink = NULL;
  weft_msg_free(sur.held); /* ours, never posted: not counted as sent */
  sur.held = NULL;
  sur.sink_closed = true;
  sur.sink_reason = info->reason;
  sur.undelivered = info->undelivered;
  printf("%s sink port closed: %s, %llu undelivered\n", pid_tag(), weft_err_name(info->reason),
         (unsigned long long)info->undelivered);
  finish();
}

static void on_report(weft_port_t *port, weft_msg_t *msg) {
  (void)port;
  weft_msg_get_u64(msg, "handled", &sur.last_report);
  weft_msg_free(msg);
  if (sur.killed || sur.last_report < KILL_AFTER)
    return;
  printf("%s the victim handled %llu records (%llu sent); SIGKILL\n", pid_tag(),
         (unsigned long long)sur.last_report, (unsigned long long)sur.sent);
  sur.killed = true;
  sur.kill_ns = uv_hrtime();
  check(uv_process_kill(&sur.victim, SIGKILL), "uv_process_kill");
}

static void on_reports_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)port;
  printf("%s report port closed: %s\n", pid_tag(), weft_err_name(info->reason));
  sur.reports = NULL;
  sur.reports_closed = true;
  finish();
}

static void on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  (void)data;
  check(status, "weft_node_lookup");
  sur.sink = port;
  check(weft_port_on_drain(port, on_sink_drain), "weft_port_on_drain");
  check(weft_port_on_close(port, on_sink_closed), "weft_port_on_close");
  weft_port_t *ports[2];
  check(weft_channel_new(weft_ctx_current(), ports), "weft_channel_new");
  sur.reports = ports[0];
  check(weft_port_on_close(sur.reports, on_reports_closed), "weft_port_on_close");
  check(weft_port_start(sur.reports, on_report), "weft_port_start");
  weft_msg_t *hello;
  check(weft_msg_new(&hello), "weft_msg_new");
  weft_msg_put_map(hello, 0);
  check(weft_msg_add_port(hello, ports[1]), "weft_msg_add_port");
  int err = weft_port_post(port, hello);
  if (err)
    weft_msg_free(hello);
  check(err, "weft_port_post");
  printf("%s found \"sink\" on the victim; streaming\n", pid_tag());
  pump();
}

static void survivor_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                             void *data) {
  (void)data;
  if (strcmp(peer, "victim") != 0)
    return;
  if (up) {
    printf("%s victim is up\n", pid_tag());
    if (!sur.killed)
      check(weft_node_lookup(node, peer, "sink", 10000, on_found, NULL), "weft_node_lookup");
    return;
  }
  if (sur.finished)
    return; /* our own close */
  sur.down = true;
  sur.down_ns = uv_hrtime();
  sur.down_reason = reason;
  printf("%s monitor: victim is down: %s\n", pid_tag(), weft_err_name(reason));
  finish();
}

static void on_victim_exit(uv_process_t *p, int64_t status, int sig) {
  printf("%s victim exited with status %d, signal %d%s\n", pid_tag(), (int)status, sig,
         sig == SIGKILL ? " (SIGKILL)" : "");
  sur.exited = true;
  sur.exit_status = status;
  sur.exit_signal = sig;
  uv_close((uv_handle_t *)p, NULL);
  finish();
}

static int run_survivor(const char *self) {
  /* Small port bounds: the stream stalls (WEFT_EAGAIN) soon after the
   * victim's window is used up, rather than after 65536 more records. */
  weft_runtime_options_t ro = {.port_hwm_msgs = PORT_HWM};
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, &ro), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  start_watchdog(ctx, &sur.watchdog);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "survivor", .listen = listen, .heartbeat_ms = HEARTBEAT_MS,
                           .on_monitor = survivor_monitor};
  check(weft_node_start(ctx, &o, &sur.node), "weft_node_start");
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(sur.node, 0));
  printf("%s listening on %s; starting the victim\n", pid_tag(), url);
  char *args[] = {(char *)self, "--victim", url, NULL};
  uv_process_options_t po = {.file = self, .args = args, .exit_cb = on_victim_exit};
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  po.stdio = stdio;
  po.stdio_count = 3;
  check(uv_spawn(weft_ctx_loop(ctx), &sur.victim, &po), "uv_spawn");
  check(weft_runtime_run(rt), "weft_runtime_run");
  int rc = weft_runtime_free(rt) == 0 ? 0 : 1;
  if (!all_checks_hold()) {
    fprintf(stderr, "node_down: FAILED (down: %s, sink closed: %s, exit signal %d, "
            "sent %llu, undelivered %llu, last report %llu)\n",
            sur.down ? weft_err_name(sur.down_reason) : "no",
            sur.sink_closed ? weft_err_name(sur.sink_reason) : "no", sur.exit_signal,
            (unsigned long long)sur.sent, (unsigned long long)sur.undelivered,
            (unsigned long long)sur.last_report);
    return 1;
  }
  printf("%s all checks passed\n", pid_tag());
  return rc;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "--victim") == 0)
    return run_victim(argv[2]);
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "--demo") != 0)) {
    fprintf(stderr, "usage: %s [--demo]\n", argv[0]);
    return 2;
  }
  char self[4096];
  size_t len = sizeof(self);
  check(uv_exepath(self, &len), "uv_exepath");
  return run_survivor(self);
}
