/* node_hello.c: two nodes. One publishes an actor under a name, the other
 * looks it up and asks it questions with reply ports.
 *
 * Erlang:
 *   %% on beta@host
 *   register(greeter, spawn(fun Loop() -> receive {From, Ref, Name} ->
 *       From ! {Ref, "hello " ++ Name}, Loop() end end)).
 *   %% on alpha@host
 *   {greeter, 'beta@host'} ! {self(), Ref = make_ref(), "alpha"},
 *   receive {Ref, Greeting} -> io:format("~s~n", [Greeting]) end.
 *
 * weft: this one executable is both nodes. Run without arguments (or with
 * --demo), it is "alpha": it listens on a free TCP port of 127.0.0.1, starts
 * itself again as "beta" (`node_hello --beta URL`), which dials it and
 * publishes its greeter actor. alpha's monitor hears beta come up, looks
 * "greeter" up on beta, and sends three requests (weft_port_request: each
 * carries a reply port across the connection). After the third answer alpha
 * closes its node; beta's monitor hears alpha go, beta closes its own node
 * and exits; alpha reaps it and exits too.
 *
 * Usage: node_hello [--demo]      (exits by itself) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define QUESTIONS 3

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* ---- beta: the greeter's node ---------------------------------------------------- */

static void greet(weft_port_t *self, weft_msg_t *req) {
  char from[32] = "?";
  weft_msg_get_strcpy(req, "from", from, sizeof(from), NULL);
  uint64_t n = 0;
  weft_msg_get_u64(req, "n", &n);
  weft_msg_t *reply;
  check(weft_msg_new(&reply), "weft_msg_new");
  char text[96];
  snprintf(text, sizeof(text), "hello %s, this is beta (pid %d), answer %llu", from,
           (int)uv_os_getpid(), (unsigned long long)n);
  weft_msg_put_map(reply, 1);
  weft_msg_put_str(reply, "greeting", text);
  if (weft_msg_reply(req, reply) != 0)
    weft_msg_free(reply);
  weft_msg_free(req);
  (void)self;
}

static void beta_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)data;
  printf("[beta  %d] %s is %s%s%s\n", (int)uv_os_getpid(), peer, up ? "up" : "down",
         up ? "" : ": ", up ? "" : weft_err_name(reason));
  if (!up)
    weft_node_close(node, NULL, NULL); /* the greeter goes with its published port */
}

static int run_beta(const char *url) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = "beta", .peers = peers, .on_monitor = beta_monitor};
  weft_node_t *node;
  check(weft_node_start(ctx, &o, &node), "weft_node_start");
  weft_port_t *greeter;
  check(weft_actor_spawn(ctx, greet, NULL, &greeter), "weft_actor_spawn");
  check(weft_node_publish(node, "greeter", greeter), "weft_node_publish");
  printf("[beta  %d] published \"greeter\", dialling %s\n", (int)uv_os_getpid(), url);
  check(weft_runtime_run(rt), "weft_runtime_run");
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

/* ---- alpha: asks ------------------------------------------------------------------ */

typedef struct {
  weft_node_t *node;
  weft_port_t *greeter;
  int answered;
  uv_process_t beta;
} alpha_t;

static void ask(alpha_t *a, uint64_t n);

static void on_answer(weft_msg_t *reply, int err, void *data) {
  alpha_t *a = data;
  check(err, "request");
  char text[128] = "";
  weft_msg_get_strcpy(reply, "greeting", text, sizeof(text), NULL);
  printf("[alpha %d] answer: \"%s\"\n", (int)uv_os_getpid(), text);
  weft_msg_free(reply);
  if (++a->answered < QUESTIONS) {
    ask(a, (uint64_t)a->answered);
    return;
  }
  weft_port_close(a->greeter);
  weft_node_close(a->node, NULL, NULL);
}

static void ask(alpha_t *a, uint64_t n) {
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "from", "alpha");
  weft_msg_put_u64(m, "n", n);
  check(weft_port_request(a->greeter, m, on_answer, a, 5000), "weft_port_request");
}

static void on_found(weft_node_t *node, int status, weft_port_t *port, void *data) {
  (void)node;
  alpha_t *a = data;
  check(status, "weft_node_lookup");
  printf("[alpha %d] found \"greeter\" on beta\n", (int)uv_os_getpid());
  a->greeter = port;
  ask(a, 0);
}

static void alpha_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  printf("[alpha %d] %s is %s%s%s\n", (int)uv_os_getpid(), peer, up ? "up" : "down",
         up ? "" : ": ", up ? "" : weft_err_name(reason));
  if (up)
    check(weft_node_lookup(node, peer, "greeter", 5000, on_found, data), "weft_node_lookup");
}

static void on_beta_exit(uv_process_t *p, int64_t status, int sig) {
  printf("[alpha %d] beta exited with status %d, signal %d\n", (int)uv_os_getpid(),
         (int)status, sig);
  uv_close((uv_handle_t *)p, NULL);
  if (status != 0 || sig != 0)
    exit(1);
}

static int run_alpha(const char *self) {
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  alpha_t a = {0};
  const char *listen[] = {"tcp://127.0.0.1:0", NULL};
  weft_node_options_t o = {.name = "alpha", .listen = listen, .on_monitor = alpha_monitor,
                           .data = &a};
  check(weft_node_start(ctx, &o, &a.node), "weft_node_start");
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", weft_node_port(a.node, 0));
  printf("[alpha %d] listening on %s; starting beta\n", (int)uv_os_getpid(), url);
  char *args[] = {(char *)self, "--beta", url, NULL};
  uv_process_options_t po = {.file = self, .args = args, .exit_cb = on_beta_exit};
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                   {.flags = UV_INHERIT_FD, .data.fd = 1},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  po.stdio = stdio;
  po.stdio_count = 3;
  fflush(stdout);
  check(uv_spawn(weft_ctx_loop(ctx), &a.beta, &po), "uv_spawn");
  check(weft_runtime_run(rt), "weft_runtime_run");
  if (a.answered != QUESTIONS) {
    fprintf(stderr, "alpha: %d answers of %d\n", a.answered, QUESTIONS);
    return 1;
  }
  printf("[alpha %d] done: %d answers\n", (int)uv_os_getpid(), a.answered);
  return weft_runtime_free(rt) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 3 && strcmp(argv[1], "--beta") == 0)
    return run_beta(argv[2]);
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "--demo") != 0)) {
    fprintf(stderr, "usage: %s [--demo]\n", argv[0]);
    return 2;
  }
  char self[4096];
  size_t len = sizeof(self);
  check(uv_exepath(self, &len), "uv_exepath");
  return run_alpha(self);
}
