/* exec_and_spawn.c: running other programs: the whole output at once, or
 * streamed line by line, and writing to a child's stdin.
 *
 * Node:
 *   execFile('sh', ['-c', script], (err, stdout, stderr) => { ... });
 *   const ls = spawn('sh', ['-c', slow_script]);
 *   readline.createInterface({ input: ls.stdout }).on('line', (l) => { ... });
 *   ls.on('exit', (code) => { ... });
 *   const sort = spawn('sort'); sort.stdin.end('pear\napple\nfig\n');
 *
 * weft:
 *  1. weft_exec runs a command to completion and calls back once with its
 *     exit status and everything it wrote to stdout and stderr (capped at
 *     max_output per stream: past it the child is killed and the result
 *     says UV_ENOBUFS, so the buffers never grow without bound).
 *  2. weft_child_spawn with stdout/stderr as WEFT_STDIO_PIPE, no channel and
 *     output_lines: on_output gets each line as it is written (no '\n'),
 *     then data NULL at EOF; on_exit comes last.
 *  3. the same with stdin as a pipe: weft_child_write copies the bytes,
 *     weft_child_close_stdin gives the child its EOF.
 * The three run at the same time on one loop; the program ends when all
 * three children are done.
 *
 * Usage: exec_and_spawn [--demo]   (same behaviour either way; exits by itself) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

static int failures;

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* ---- 1. the whole output at once ------------------------------------------------ */

static void on_exec_done(const weft_exec_result_t *r, void *data) {
  (void)data;
  printf("[exec ] finished: err %s, exit code %lld, signal %d\n",
         r->err ? weft_err_name(r->err) : "none", (long long)r->exit_status, r->term_signal);
  printf("[exec ] stdout (%zu bytes): %.*s", r->out_len, (int)r->out_len, r->out);
  printf("[exec ] stderr (%zu bytes): %.*s", r->err_len, (int)r->err_len, r->err_out);
  if (r->err != 0 || r->exit_status != 3)
    failures++;
}

static void run_exec(weft_ctx_t *ctx) {
  static const char *const args[] = {
      "sh", "-c", "echo \"hello from $(uname -s)\"; echo 'a warning' >&2; exit 3", NULL};
  weft_exec_options_t o = {
      .file = "sh", /* PATH is searched */
      .args = args,
      .max_output = 64 * 1024,
      .cb = on_exec_done,
  };
  check(weft_exec(ctx, &o), "weft_exec");
  printf("[exec ] started: sh -c '...; exit 3'\n");
}

/* ---- 2. streamed, line by line ------------------------------------------------ */

static void on_line(weft_child_t *child, int fd, const char *line, size_t len) {
  (void)child;
  if (line == NULL) {
    printf("[lines] %s reached EOF\n", fd == 1 ? "stdout" : "stderr");
    return;
  }
  printf("[lines] %s: \"%.*s\"\n", fd == 1 ? "stdout" : "stderr", (int)len, line);
}

static void on_lines_exit(weft_child_t *child, int64_t status, int signal) {
  (void)child;
  printf("[lines] exited with code %lld, signal %d\n", (long long)status, signal);
  if (status != 0 || signal != 0)
    failures++;
}

static void run_streamed(weft_ctx_t *ctx) {
  /* Each line is written as it is produced, not at exit. */
  static const char *const args[] = {
      "sh", "-c", "for i in 1 2 3; do echo \"line $i\"; done; echo 'on stderr' >&2; "
                  "printf 'last, without a newline'",
      NULL};
  weft_child_options_t o = {
      .file = "sh",
      .args = args,
      .stdio = {WEFT_STDIO_IGNORE, WEFT_STDIO_PIPE, WEFT_STDIO_PIPE},
      .channel = WEFT_CHANNEL_NONE,
      .output_lines = true, /* a last line without '\n' still comes, before EOF */
      .on_output = on_line,
      .on_exit = on_lines_exit,
  };
  weft_child_t *child;
  check(weft_child_spawn(ctx, &o, &child), "weft_child_spawn(sh)");
  printf("[lines] started pid %d\n", weft_child_pid(child));
}

/* ---- 3. writing to stdin ---------------------------------------------------------- */

static void on_sorted(weft_child_t *child, int fd, const char *line, size_t len) {
  (void)child;
  if (line != NULL)
    printf("[sort ] %s: %.*s\n", fd == 1 ? "stdout" : "stderr", (int)len, line);
}

static void on_sort_exit(weft_child_t *child, int64_t status, int signal) {
  (void)child;
  printf("[sort ] exited with code %lld, signal %d\n", (long long)status, signal);
  if (status != 0 || signal != 0)
    failures++;
}

static void run_sort(weft_ctx_t *ctx) {
  static const char *const args[] = {"sort", NULL};
  weft_child_options_t o = {
      .file = "sort",
      .args = args,
      .stdio = {WEFT_STDIO_PIPE, WEFT_STDIO_PIPE, WEFT_STDIO_INHERIT},
      .channel = WEFT_CHANNEL_NONE,
      .output_lines = true,
      .on_output = on_sorted,
      .on_exit = on_sort_exit,
  };
  weft_child_t *child;
  check(weft_child_spawn(ctx, &o, &child), "weft_child_spawn(sort)");
  const char fruit[] = "pear\napple\nfig\n";
  check(weft_child_write(child, fruit, sizeof(fruit) - 1), "weft_child_write");
  check(weft_child_close_stdin(child), "weft_child_close_stdin"); /* sort sees EOF, sorts */
  printf("[sort ] started pid %d, wrote 3 lines to its stdin and closed it\n",
         weft_child_pid(child));
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *ctx = weft_runtime_main(rt);
  run_exec(ctx);
  run_streamed(ctx);
  run_sort(ctx);
  check(weft_runtime_run(rt), "weft_runtime_run"); /* until all three are done */
  check(weft_runtime_free(rt), "weft_runtime_free");
  printf("done: %d unexpected results\n", failures);
  return failures == 0 ? 0 : 1;
}
