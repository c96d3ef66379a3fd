/* service_demo.c: a service across nodes, with failover, and remote offload.
 *
 * nginx equivalent: `upstream echo { least_conn; server p0; server p1; }`
 * with `proxy_next_upstream error timeout`; Erlang: a pg group of two nodes.
 *
 * This one executable is every node. Run with --demo (or nothing), it is the
 * client: it listens on a free TCP port of 127.0.0.1 and starts itself twice
 * as providers (`service_demo --provider NAME URL`), which dial it, provide
 * the service "echo" and serve their CPU-offload pool as the service
 * "offload". The client sends 2000 idempotent requests, 32 at a time, and
 * SIGKILLs p1 halfway: the requests p1 held are retried on p0, none fails.
 * It prints per-provider counts, retries and failures. Then the same task
 * code as a local pool's runs on the surviving provider: a pool created
 * with a node and a service instead of threads. Then everything closes and
 * the client exits 0.
 *
 * Usage: service_demo [--demo]      (exits by itself) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define REQUESTS 2000
#define WINDOW 32
#define TASKS 10

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* The task code: the same on a local pool and on a provider's. */
static int square(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t x = 0;
  if (weft_msg_get_u64(args, "x", &x) != 0)
    return WEFT_EINVAL;
  int err = weft_msg_new(result);
  if (err == 0) {
    weft_msg_put_map(*result, 1);
    weft_msg_put_u64(*result, "y", x * x);
  }
  return err;
}

/* ---- a provider ---------------------------------------------------------------- */

static char my_name[16];
static weft_pool_t *my_pool;

static void echo(weft_service_t *svc, weft_msg_t *req, void *data) {
  (void)data;
  weft_msg_t *reply;
  check(weft_msg_new(&reply), "weft_msg_new");
  weft_msg_put_map(reply, 1);
  weft_msg_put_str(reply, "from", my_name);
  if (weft_service_reply(svc, req, reply) != 0) /* always takes req */
    weft_msg_free(reply);
}

static void provider_monitor(weft_node_t *node, const char *peer, bool up, int reason,
                             void *data) {
  (void)peer;
  (void)reason;
  (void)data;
  if (!up) { /* the client went: so do we */
    weft_node_close(node, NULL, NULL);
    weft_pool_close(my_pool, NULL);
  }
}

static int run_provider(const char *name, const char *url) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  snprintf(my_name, sizeof(my_name), "%s", name);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = name, .peers = peers, .on_monitor = provider_monitor};
  weft_node_t *node;
  check(weft_node_start(ctx, &o, &node), "weft_node_start");
  weft_service_t *svc, *off;
  check(weft_service_provide(node, "echo", echo, NULL, &svc), "weft_service_provide");
  check(weft_pool_new(ctx, &(weft_pool_options_t){.size = 1}, &my_pool), "weft_pool_new");
  check(weft_pool_register(my_pool, "square", square), "weft_pool_register");
  check(weft_pool_serve(my_pool, node, "offload", &off), "weft_pool_serve");
  check(weft_runtime_run(rt), "weft_runtime_run");
  weft_pool_release(my_pool);
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* ---- the client ------------------------------------------------------------------ */

static struct {
  weft_node_t *node;
  weft_service_client_t *cli;
  weft_pool_t *pool;
  uv_process_t procs[2];
  int exited, providers;
  uint32_t sent, done, failures, retried, per[2], tasks_done;
  uint64_t sum;
  bool killed;
} C;

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  int i = p == &C.procs[0] ? 0 : 1;
  printf("[client] p%d exited: status %d, signal %d\n", i, (int)status, sig);
  if (sig != 0 && !(i == 1 && sig == SIGKILL))
    exit(1);
  C.exited++;
  uv_close((uv_handle_t *)p, NULL);
}

static void spawn(const char *self, int i, const char *url) {
  char name[8];
  snprintf(name, sizeof(name), "p%d", i);
  char *args[] = {(char *)self, "--provider", name, (char *)url, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t po = {.file = self, .args = args, .exit_cb = on_proc_exit,
                             .stdio = stdio, .stdio_count = 3};
  check(uv_spawn(weft_ctx_loop(weft_ctx_current()), &C.procs[i], &po), "uv_spawn");
}

static void offload(void);
static void pump(void);

static void on_reply(weft_service_client_t *cli, weft_msg_t *reply, int err,
                     const weft_service_info_t *info, void *data) {
  (void)cli;
  (void)data;
  C.done++;
  if (info->attempts > 1)
    C.retried++;
  if (err != 0)
    C.failures++;
  else if (info->provider[0] == 'p')
    C.per[info->provider[1] == '1']++;
  weft_msg_free(reply);
  if (C.done == REQUESTS / 2) {
    printf("[client] %u answered (p0 %u, p1 %u); SIGKILL p1\n", C.done, C.per[0], C.per[1]);
    uv_process_kill(&C.procs[1], SIGKILL);
  }
  if (C.done == REQUESTS) {
    printf("[client] %u requests: p0 %u, p1 %u, retried %u, failed %u\n", C.done, C.per[0],
           C.per[1], C.retried, C.failures);
    offload();
    return;
  }
  pump();
}

static void pump(void) {
  while (C.sent < REQUESTS && C.sent - C.done < WINDOW) {
    weft_msg_t *m;
    check(weft_msg_new(&m), "weft_msg_new");
    weft_msg_put_map(m, 1);
    weft_msg_put_u64(m, "n", C.sent);
    check(weft_service_call(C.cli, m, WEFT_SERVICE_IDEMPOTENT, on_reply, NULL),
          "weft_service_call");
    C.sent++;
  }
}

static void on_provider(weft_service_client_t *cli, const char *node, bool up, void *data) {
  (void)cli;
  (void)data;
  printf("[client] provider %s %s\n", node, up ? "up" : "gone");
  if (up && ++C.providers == 2 && C.sent == 0)
    pump(); /* both are known: start */
}

/* ---- remote offload: the same task code, on the providers -------------------------- */

static void on_closed(weft_node_t *node, void *data) {
  (void)node;
  (void)data;
}

static void task_done(weft_pool_t *pool, int err, weft_msg_t *result, void *data) {
  (void)data;
  check(err, "remote task");
  uint64_t y = 0;
  weft_msg_get_u64(result, "y", &y);
  weft_msg_free(result);
  C.sum += y;
  if (++C.tasks_done < TASKS)
    return;
  printf("[client] %d remote tasks: sum of squares 1..%d = %llu\n", TASKS, TASKS,
         (unsigned long long)C.sum);
  weft_pool_release(pool);
  weft_service_client_close(C.cli, NULL, NULL);
  weft_node_close(C.node, on_closed, NULL); /* the providers exit */
}

static void offload(void) {
  weft_pool_options_t o = {.node = C.node, .service = "offload"}; /* instead of threads */
  check(weft_pool_new(weft_ctx_current(), &o, &C.pool), "weft_pool_new");
  check(weft_pool_register(C.pool, "square", square), "weft_pool_register");
  for (uint64_t x = 1; x <= TASKS; x++) {
    weft_msg_t *args;
    check(weft_msg_new(&args), "weft_msg_new");
    weft_msg_put_map(args, 1);
    weft_msg_put_u64(args, "x", x);
    weft_pool_task_options_t t = {.fn = square, .args = args, .flags = WEFT_POOL_IDEMPOTENT};
    check(weft_pool_submit(C.pool, &t, task_done, NULL, NULL), "weft_pool_submit");
  }
}

static int run_client(const char *self) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "client", .listen = listen};
  check(weft_node_start(ctx, &o, &C.node), "weft_node_start");
  weft_service_client_options_t co = {.service = "echo", .on_provider = on_provider};
  check(weft_service_client_new(C.node, &co, &C.cli), "weft_service_client_new");
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(C.node, 0));
  fflush(stdout);
  spawn(self, 0, url);
  spawn(self, 1, url);
  check(weft_runtime_run(rt), "weft_runtime_run");
  bool ok = C.done == REQUESTS && C.failures == 0 && C.tasks_done == TASKS && C.exited == 2 &&
            C.sum == 385;
  if (weft_runtime_free(rt) != 0 || !ok) {
    fprintf(stderr, "service_demo: failed\n");
    return 1;
  }
  printf("[client] done\n");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && strcmp(argv[1], "--provider") == 0)
    return run_provider(argv[2], argv[3]);
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "--demo") != 0)) {
    fprintf(stderr, "usage: %s [--demo]\n", argv[0]);
    return 2;
  }
  char self[4096];
  size_t len = sizeof(self);
  check(uv_exepath(self, &len), "uv_exepath");
  return run_client(self);
}
