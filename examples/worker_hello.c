/* worker_hello.c: the smallest worker program.
 *
 * Node:
 *   if (isMainThread) new Worker(__filename, { workerData: 'hello' });
 *   else console.log('worker says', workerData);
 *
 * weft: the main thread creates a runtime and spawns a worker with an entry
 * function and a workerData message. Each side prints its initial phase (code
 * that runs before its loop starts) and arms a timer on its own loop; the
 * timer firing is printed from inside that loop. The worker's loop ends once
 * its timer is done (nothing keeps it alive any more), the worker exits, the
 * parent's on_exit runs, and then nothing keeps the main loop alive either.
 *
 * Threads: main() and on_* callbacks of the worker handle run on the main
 * thread; worker_entry and its timer run on the worker thread.
 *
 * Usage: worker_hello [--demo]   (same behaviour either way; exits by itself) */
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* Like Node's isMainThread: only a worker's context has a parent port. */
static const char *who(void) {
  return weft_ctx_parent_port(weft_ctx_current()) == NULL ? "main  " : "worker";
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

static void on_timer(uv_timer_t *t) {
  printf("[%s] timer fired after %llu ms (inside the loop)\n", who(),
         (unsigned long long)t->data);
  uv_close((uv_handle_t *)t, on_timer_closed); /* one-shot: done with it */
}

/* Arms a one-shot timer on the calling thread's loop. */
static int start_timer(uint64_t ms) {
  uv_timer_t *t = malloc(sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  int err = uv_timer_init(weft_ctx_loop(weft_ctx_current()), t);
  if (err) {
    free(t);
    return err;
  }
  t->data = (void *)(uintptr_t)ms;
  return uv_timer_start(t, on_timer, ms, 0);
}

/* Worker thread. msg is workerData; the kernel frees it after we return. */
static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)ctx;
  const char *s;
  size_t n;
  int err = weft_msg_get_str(msg, "greeting", &s, &n);
  if (err)
    return err; /* reported to the parent's on_error, exit code 1 */
  printf("[%s] initial phase: entry running, workerData.greeting = \"%.*s\"\n", who(),
         (int)n, s);
  /* Returning starts this thread's loop; the timer keeps it alive until it fires. */
  return start_timer(100);
}

static void on_online(weft_worker_t *w) {
  (void)w;
  printf("[main  ] worker is online\n");
}

static void on_error(weft_worker_t *w, int err) {
  (void)w;
  printf("[main  ] worker error: %s\n", weft_err_name(err));
}

static void on_worker_exit(weft_worker_t *w, int code) {
  (void)w;
  printf("[main  ] worker exited with code %d\n", code);
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_ctx_t *main_ctx = weft_runtime_main(rt);

  weft_msg_t *msg;
  check(weft_msg_new(&msg), "weft_msg_new");
  weft_msg_put_map(msg, 1);
  check(weft_msg_put_str(msg, "greeting", "hello"), "weft_msg_put_str");

  weft_worker_options_t opts = {
      .entry = worker_entry,
      .msg = msg, /* taken on success */
      .on_online = on_online,
      .on_error = on_error,
      .on_exit = on_worker_exit,
  };
  weft_worker_t *w;
  check(weft_worker_spawn(main_ctx, &opts, &w), "weft_worker_spawn");
  printf("[%s] initial phase: worker spawned, arming a timer\n", who());
  check(start_timer(50), "start_timer");

  check(weft_runtime_run(rt), "weft_runtime_run"); /* until nothing is left */
  printf("[main  ] loop ended, freeing the runtime\n");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return 0;
}
