/* process_hello.c: the smallest child-process program.
 *
 * Node:
 *   if (process.argv[2] === 'child') {
 *     process.on('message', (m) => process.send({ reply: 'hi ' + m.greeting }));
 *   } else {
 *     const child = fork(__filename, ['child']);
 *     child.send({ greeting: 'hello' });
 *     child.on('message', (m) => { console.log(m); child.disconnect(); });
 *     child.on('exit', (code) => console.log('exit', code));
 *   }
 *
 * weft: the same executable is both. main() registers the entry "child" and
 * asks weft_runtime_child_entry whether this process was started to run it.
 * The parent spawns itself with entry_name "child" and a first message
 * (opts.msg); the child starts its parent port, answers, and waits. When the
 * parent has the answer it closes its end: the child's port closes, nothing
 * keeps the child's loop alive, the child exits 0, and the parent's on_exit
 * runs last (after every message the child sent was delivered).
 *
 * Each side prints its phases, prefixed [parent] or [child ] with its pid.
 *
 * Usage: process_hello [--demo]   (same behaviour either way; exits by itself) */
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

/* ---- the child process -------------------------------------------------------- */

static void child_on_message(weft_port_t *parent, weft_msg_t *msg) {
  const char *greeting = "?";
  size_t n = 1;
  weft_msg_get_str(msg, "greeting", &greeting, &n);
  printf("[child  %d] got {greeting: \"%.*s\"} from the parent\n", uv_os_getpid(), (int)n,
         greeting);
  char reply[64];
  snprintf(reply, sizeof(reply), "hi, %.*s", (int)n, greeting);
  weft_msg_free(msg); /* delivered messages are ours */

  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  weft_msg_put_str(m, "reply", reply);
  weft_msg_put_i64(m, "pid", uv_os_getpid());
  int err = weft_port_post(parent, m);
  if (err)
    weft_msg_free(m); /* a failed post leaves the message with us */
  check(err, "child post");
  printf("[child  %d] replied; waiting for the parent to close the channel\n",
         uv_os_getpid());
}

static void child_on_close(weft_port_t *parent, const weft_port_close_info_t *info) {
  (void)parent;
  printf("[child  %d] channel closed (%s): nothing left to do, exiting\n", uv_os_getpid(),
         weft_err_name(info->reason));
}

/* Runs in the child, on its main context, before its loop. */
static int child_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg; /* NULL: the parent's opts.msg arrives as the first message */
  weft_port_t *parent = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  printf("[child  %d] initial phase: entry \"child\" running\n", uv_os_getpid());
  check(weft_port_on_close(parent, child_on_close), "weft_port_on_close");
  /* A started port keeps the loop alive until the channel closes. */
  return weft_port_start(parent, child_on_message);
}

/* ---- the parent process --------------------------------------------------------- */

static bool got_reply;
static int64_t child_status = -1;

static void parent_on_message(weft_port_t *port, weft_msg_t *msg) {
  const char *reply = "?";
  size_t n = 1;
  int64_t pid = 0;
  weft_msg_get_str(msg, "reply", &reply, &n);
  weft_msg_get_i64(msg, "pid", &pid);
  printf("[parent %d] got {reply: \"%.*s\", pid: %lld}; closing the channel\n",
         uv_os_getpid(), (int)n, reply, (long long)pid);
  weft_msg_free(msg);
  got_reply = true;
  weft_port_close(port); /* like child.disconnect() */
}

static void parent_on_exit(weft_child_t *child, int64_t status, int signal) {
  (void)child;
  child_status = signal ? -1 : status;
  printf("[parent %d] child exited with code %lld, signal %d\n", uv_os_getpid(),
         (long long)status, signal);
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  setvbuf(stdout, NULL, _IOLBF, 0); /* parent and child share the terminal */
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  check(weft_runtime_register(rt, "child", child_entry), "weft_runtime_register");

  /* Started by weft_child_spawn with entry_name "child"? Then run it. */
  int code;
  int err = weft_runtime_child_entry(rt, &code);
  if (err == 0) {
    check(weft_runtime_free(rt), "weft_runtime_free");
    return code;
  }
  if (err != WEFT_ENOENT)
    check(err, "weft_runtime_child_entry");

  printf("[parent %d] initial phase: spawning myself with entry \"child\"\n", uv_os_getpid());
  weft_msg_t *hello;
  check(weft_msg_new(&hello), "weft_msg_new");
  weft_msg_put_map(hello, 1);
  weft_msg_put_str(hello, "greeting", "hello");
  weft_child_options_t opts = {
      .entry_name = "child", /* file NULL: this executable */
      .msg = hello,         /* the first message; taken on success */
      .on_message = parent_on_message,
      .on_exit = parent_on_exit,
  };
  weft_child_t *child;
  err = weft_child_spawn(weft_runtime_main(rt), &opts, &child);
  if (err)
    weft_msg_free(hello); /* all or nothing: still ours */
  check(err, "weft_child_spawn");
  printf("[parent %d] child %d started; running the loop\n", uv_os_getpid(),
         weft_child_pid(child));

  check(weft_runtime_run(rt), "weft_runtime_run"); /* until on_exit has run */
  printf("[parent %d] loop ended, freeing the runtime\n", uv_os_getpid());
  check(weft_runtime_free(rt), "weft_runtime_free");
  return got_reply && child_status == 0 ? 0 : 1;
}
