/* node_parent.c: a weft program as the child of a Node.js program.
 *
 * Node (examples/node_parent.js):
 *   const child = spawn(weftProgram, [], { stdio: ['inherit', 'inherit',
 *                                                  'inherit', 'ipc'] });
 *   child.send({ id, lo, hi });
 *   child.on('message', ({ id, primes }) => { ... });
 *
 * weft, as that child: a Node parent with an 'ipc' slot names the channel in
 * NODE_CHANNEL_FD; weft_runtime_new finds it, and weft_runtime_parent_port is
 * an ordinary port whose messages are Node's JSON values (objects arrive as
 * msgpack maps, numbers as ints or doubles). For each {id, lo, hi} we count
 * the primes in [lo, hi) and answer {id, lo, hi, primes, pid, ms}. When Node
 * disconnects the port closes, nothing keeps the loop alive, and we exit 0.
 *
 * Run by hand (or with --demo) there is no parent port: then this program
 * runs `node node_parent.js <this program>` with weft_exec and prints what
 * Node printed. The script is found at $WEFT_SOURCE_DIR/examples/, else at
 * ../../examples/ from this program's directory (build/examples/node_parent
 * in a build tree). Without node or the script it says so and exits 0.
 *
 * Usage: node_parent [--demo] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* ---- as Node's child ------------------------------------------------------------- */

static uint64_t count_primes(uint64_t lo, uint64_t hi) {
  uint64_t n = 0;
  for (uint64_t k = lo < 2 ? 2 : lo; k < hi; k++) {
    bool prime = k == 2 || k % 2 != 0;
    for (uint64_t d = 3; prime && d * d <= k; d += 2)
      prime = k % d != 0;
    n += prime;
  }
  return n;
}

static void on_range(weft_port_t *parent, weft_msg_t *msg) {
  int64_t id = -1, lo = 0, hi = 0;
  if (weft_msg_get_i64(msg, "id", &id) || weft_msg_get_i64(msg, "lo", &lo) ||
      weft_msg_get_i64(msg, "hi", &hi) || lo < 0 || hi < lo) {
    fprintf(stderr, "[weft] ignoring a message that is not {id, lo, hi}\n");
    weft_msg_free(msg);
    return;
  }
  weft_msg_free(msg);
  uint64_t t0 = uv_hrtime();
  uint64_t primes = count_primes((uint64_t)lo, (uint64_t)hi);
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 6);
  weft_msg_put_i64(m, "id", id);
  weft_msg_put_i64(m, "lo", lo);
  weft_msg_put_i64(m, "hi", hi);
  weft_msg_put_u64(m, "primes", primes);
  weft_msg_put_i64(m, "pid", uv_os_getpid());
  weft_msg_put_u64(m, "ms", (uv_hrtime() - t0) / 1000000);
  int err = weft_port_post(parent, m); /* arrives in Node as a plain object */
  if (err)
    weft_msg_free(m);
  check(err, "post to Node");
}

static void on_parent_closed(weft_port_t *parent, const weft_port_close_info_t *info) {
  (void)parent;
  printf("[weft] Node disconnected (%s): exiting\n", weft_err_name(info->reason));
}

static int serve_node(weft_runtime_t *rt, weft_port_t *parent) {
  printf("[weft] pid %d started by Node; waiting for ranges\n", uv_os_getpid());
  fflush(stdout);
  check(weft_port_on_close(parent, on_parent_closed), "weft_port_on_close");
  check(weft_port_start(parent, on_range), "weft_port_start");
  check(weft_runtime_run(rt), "weft_runtime_run"); /* until Node disconnects */
  check(weft_runtime_free(rt), "weft_runtime_free");
  return 0;
}

/* ---- run by hand: start Node, which starts us --------------------------------------- */

static int demo_status = 1;

static void on_node_done(const weft_exec_result_t *r, void *data) {
  (void)data;
  printf("---- node's output ----\n%.*s", (int)r->out_len, r->out);
  if (r->err_len)
    printf("---- node's stderr ----\n%.*s", (int)r->err_len, r->err_out);
  printf("---- node exited with code %lld, signal %d ----\n", (long long)r->exit_status,
         r->term_signal);
  demo_status = r->err == 0 && r->exit_status == 0 && r->term_signal == 0 ? 0 : 1;
}

static bool file_exists(uv_loop_t *loop, const char *path) {
  uv_fs_t req;
  int err = uv_fs_stat(loop, &req, path, NULL); /* no callback: synchronous */
  uv_fs_req_cleanup(&req);
  return err == 0;
}

/* The script: $WEFT_SOURCE_DIR/examples/node_parent.js, else
 * <dir of this program>/../../examples/node_parent.js. */
static bool find_script(uv_loop_t *loop, const char *exe, char *out, size_t size) {
  const char *src = getenv("WEFT_SOURCE_DIR");
  if (src != NULL && *src != '\0') {
    snprintf(out, size, "%s/examples/node_parent.js", src);
    if (file_exists(loop, out))
      return true;
  }
  const char *slash = strrchr(exe, '/');
  int dir_len = slash ? (int)(slash - exe) : 1;
  snprintf(out, size, "%.*s/../../examples/node_parent.js", dir_len, slash ? exe : ".");
  return file_exists(loop, out);
}

static int run_node(weft_runtime_t *rt) {
  weft_ctx_t *ctx = weft_runtime_main(rt);
  char exe[4096], script[4200];
  size_t exe_len = sizeof(exe);
  check(uv_exepath(exe, &exe_len), "uv_exepath");
  if (!find_script(weft_ctx_loop(ctx), exe, script, sizeof(script))) {
    printf("node_parent.js not found (set WEFT_SOURCE_DIR to the source tree): skipping\n");
    check(weft_runtime_free(rt), "weft_runtime_free");
    return 0;
  }
  const char *args[] = {"node", script, exe, NULL};
  weft_exec_options_t o = {.file = "node", .args = args, .cb = on_node_done};
  int err = weft_exec(ctx, &o);
  if (err == UV_ENOENT) {
    printf("node is not installed (not found in PATH): skipping\n");
    check(weft_runtime_free(rt), "weft_runtime_free");
    return 0;
  }
  check(err, "weft_exec(node)");
  printf("running: node %s %s\n", script, exe);
  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return demo_status;
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_port_t *parent = weft_runtime_parent_port(rt); /* non-NULL when Node started us */
  return parent != NULL ? serve_node(rt, parent) : run_node(rt);
}
