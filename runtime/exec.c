/* exec.c: weft_exec, a command run to completion with its output collected
 * (Node's execFile), built on weft_child_spawn.
 *
 * Each stream is collected in a buffer that doubles up to max_output bytes;
 * one byte more and the child is killed (SIGKILL) and the result says
 * UV_ENOBUFS: the buffer never grows past the cap. The callback runs once, from the child's on_exit.
 * Threads: the spawning context's only. */
#include <signal.h>
#include <string.h>

#include "weft_impl.h"

#define DEFAULT_MAX_OUTPUT (1u << 20)

typedef struct {
  weft_exec_options_t opts;
  char *buf[2];
  size_t len[2], cap[2];
  int err;
} exec_t;

static void on_output(weft_child_t *c, int fd, const char *p, size_t n) {
  exec_t *x = weft_child_data(c);
  int i = fd == 2;
  if (p == NULL || x->err)
    return;
  if (n > x->opts.max_output - x->len[i]) {
    x->err = UV_ENOBUFS;
    weft_child_kill(c, SIGKILL);
    return;
  }
  if (x->len[i] + n > x->cap[i]) {
    size_t cap = x->cap[i] ? x->cap[i] : 4096;
    while (cap < x->len[i] + n)
      cap *= 2;
    if (cap > x->opts.max_output)
      cap = x->opts.max_output;
    char *grown = weft__realloc(x->buf[i], cap);
    if (grown == NULL) {
      x->err = WEFT_ENOMEM;
      weft_child_kill(c, SIGKILL);
      return;
    }
    x->buf[i] = grown;
    x->cap[i] = cap;
  }
  memcpy(x->buf[i] + x->len[i], p, n);
  x->len[i] += n;
}

static void on_exit_cb(weft_child_t *c, int64_t status, int sig) {
  exec_t *x = weft_child_data(c);
  weft_exec_result_t r = {
      .err = x->err,
      .exit_status = status,
      .term_signal = sig,
      .out = x->buf[0] ? x->buf[0] : "",
      .out_len = x->len[0],
      .err_out = x->buf[1] ? x->buf[1] : "",
      .err_len = x->len[1],
  };
  x->opts.cb(&r, x->opts.data);
  weft__free(x->buf[0]);
  weft__free(x->buf[1]);
  weft__free(x);
}

int weft_exec(weft_ctx_t *ctx, const weft_exec_options_t *opts) {
  if (ctx == NULL || opts == NULL || opts->file == NULL || opts->cb == NULL)
    return WEFT_EINVAL;
  exec_t *x = weft__calloc(1, sizeof(*x));
  if (x == NULL)
    return WEFT_ENOMEM;
  x->opts = *opts;
  if (x->opts.max_output == 0)
    x->opts.max_output = DEFAULT_MAX_OUTPUT;
  weft_child_options_t co = {
      .file = opts->file,
      .args = opts->args,
      .env = opts->env,
      .cwd = opts->cwd,
      .stdio = {WEFT_STDIO_IGNORE, WEFT_STDIO_PIPE, WEFT_STDIO_PIPE},
      .channel = WEFT_CHANNEL_NONE,
      .on_output = on_output,
      .on_exit = on_exit_cb,
      .data = x,
  };
  weft_child_t *c;
  int err = weft_child_spawn(ctx, &co, &c);
  if (err)
    weft__free(x);
  return err;
}
