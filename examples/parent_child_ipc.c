/* parent_child_ipc.c: records both ways between a parent and a child
 * process, with backpressure on both sides.
 *
 * Node (which has no backpressure on process.send: it queues without bound):
 *   // parent
 *   const child = fork(__filename, ['child']);
 *   for (let seq = 0; seq < N; seq++) child.send({ seq, text });
 *   child.on('message', ({ seq, len, sum }) => { ... });
 *   // child
 *   process.on('message', ({ seq, text }) => process.send({ seq, len, sum }));
 *
 * weft: the same executable is parent and child (entry "child"). The parent
 * posts N records {seq, text} on the child's port; the child answers each
 * with {seq, len, sum}. Every queue is small here (64 messages a port, and the
 * child may send 32 answers ahead), so both sides meet WEFT_EAGAIN and wait:
 *  - the parent posts until WEFT_EAGAIN, then waits for the drain callback
 *    (the child's side fell below half) and posts on;
 *  - the child, when an answer does not fit, keeps it and stops its port: it
 *    reads no more records until the drain callback, when it posts the answer
 *    and starts the port again. Records wait in the channel meanwhile, so the
 *    parent is slowed down in turn, and no queue anywhere grows. (A stopped
 *    port does not keep the loop alive, so a ref'd handle does meanwhile.)
 * When every answer is in, the parent closes the channel; the child's port
 * closes, the child exits 0, and the parent's on_exit runs last.
 *
 * Ownership: a successful post takes the message; on failure it is still
 * ours (we keep it and post it again later). A delivered message belongs to
 * the callback.
 *
 * Usage: parent_child_ipc [--demo]   (--demo: 20000 records, else 200000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define PORT_QUEUE 64  /* messages a port may hold before posts get WEFT_EAGAIN */
#define CHILD_AHEAD 32 /* answers the child may send before the parent reads them */

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

static uint64_t text_sum(const char *s, size_t n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (unsigned char)s[i];
  return sum;
}

/* ---- the child process ---------------------------------------------------------- */

static weft_msg_t *held;      /* an answer that did not fit yet */
static uint64_t answered, paused;
/* A stopped port does not keep the loop alive (port.h): while we wait for
 * the drain callback, this ref'd handle does. */
static uv_async_t waiting;

static void child_on_record(weft_port_t *parent, weft_msg_t *msg);

/* Posts the held answer. Returns false if it still does not fit. */
static bool child_flush(weft_port_t *parent) {
  int err = weft_port_post(parent, held);
  if (err == WEFT_EAGAIN)
    return false;
  check(err, "child post");
  held = NULL;
  answered++;
  return true;
}

static void child_on_record(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t seq = 0;
  const char *text = "";
  size_t n = 0;
  weft_msg_get_u64(msg, "seq", &seq);
  weft_msg_get_str(msg, "text", &text, &n);
  check(weft_msg_new(&held), "weft_msg_new");
  weft_msg_put_map(held, 3);
  weft_msg_put_u64(held, "seq", seq);
  weft_msg_put_u64(held, "len", n);
  weft_msg_put_u64(held, "sum", text_sum(text, n));
  weft_msg_free(msg);
  if (!child_flush(parent)) {
    paused++;
    weft_port_stop(parent); /* read nothing more until the answer is out */
    uv_ref((uv_handle_t *)&waiting);
  }
}

/* The parent's side has room again. */
static void child_on_drain(weft_port_t *parent) {
  if (held != NULL && child_flush(parent)) {
    uv_unref((uv_handle_t *)&waiting);
    weft_port_start(parent, child_on_record);
  }
}

static void child_on_close(weft_port_t *parent, const weft_port_close_info_t *info) {
  (void)parent;
  printf("[child ] channel closed (%s) after %llu answers; paused reading %llu times\n",
         weft_err_name(info->reason), (unsigned long long)answered,
         (unsigned long long)paused);
  weft_msg_free(held);
  held = NULL;
  uv_close((uv_handle_t *)&waiting, NULL);
}

static int child_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  weft_port_t *parent = weft_runtime_parent_port(weft_ctx_runtime(ctx));
  check(uv_async_init(weft_ctx_loop(ctx), &waiting, NULL), "uv_async_init");
  uv_unref((uv_handle_t *)&waiting);
  check(weft_port_on_drain(parent, child_on_drain), "weft_port_on_drain");
  check(weft_port_on_close(parent, child_on_close), "weft_port_on_close");
  return weft_port_start(parent, child_on_record);
}

/* ---- the parent process ------------------------------------------------------------ */

static uint64_t records, sent, received, waits, bad;
static weft_msg_t *next_record; /* built, not yet accepted by a post */

static weft_msg_t *make_record(uint64_t seq) {
  char text[48];
  snprintf(text, sizeof(text), "record %llu says hello", (unsigned long long)seq);
  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "seq", seq);
  weft_msg_put_str(m, "text", text);
  return m;
}

/* Posts until every record is out or the child's side is full. */
static void parent_pump(weft_port_t *port) {
  while (sent < records) {
    if (next_record == NULL)
      next_record = make_record(sent);
    int err = weft_port_post(port, next_record);
    if (err == WEFT_EAGAIN) {
      waits++; /* parent_pump runs again from the drain callback */
      return;
    }
    check(err, "parent post");
    next_record = NULL;
    sent++;
  }
}

static void parent_on_answer(weft_port_t *port, weft_msg_t *msg) {
  uint64_t seq = 0, len = 0, sum = 0;
  weft_msg_get_u64(msg, "seq", &seq);
  weft_msg_get_u64(msg, "len", &len);
  weft_msg_get_u64(msg, "sum", &sum);
  weft_msg_free(msg);
  weft_msg_t *expect = make_record(seq); /* what we sent as seq */
  const char *text;
  size_t n;
  weft_msg_get_str(expect, "text", &text, &n);
  if (seq != received || len != n || sum != text_sum(text, n))
    bad++;
  weft_msg_free(expect);
  if (++received % (records / 4) == 0)
    printf("[parent] %llu answers in (%llu posted, waited for drain %llu times)\n",
           (unsigned long long)received, (unsigned long long)sent,
           (unsigned long long)waits);
  if (received == records)
    weft_port_close(port); /* done: the child sees the close and exits */
}

static void parent_on_exit(weft_child_t *child, int64_t status, int signal) {
  (void)child;
  printf("[parent] child exited with code %lld, signal %d\n", (long long)status, signal);
  if (status != 0 || signal != 0)
    bad++;
}

int main(int argc, char **argv) {
  bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  records = demo ? 20000 : 200000;
  setvbuf(stdout, NULL, _IOLBF, 0);

  weft_runtime_options_t ro = {.port_hwm_msgs = PORT_QUEUE}; /* both processes */
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, &ro), "weft_runtime_new");
  check(weft_runtime_register(rt, "child", child_entry), "weft_runtime_register");
  int code;
  int err = weft_runtime_child_entry(rt, &code);
  if (err == 0) {
    check(weft_runtime_free(rt), "weft_runtime_free");
    return code;
  }
  if (err != WEFT_ENOENT)
    check(err, "weft_runtime_child_entry");

  weft_child_options_t opts = {
      .entry_name = "child",
      .window_msgs = CHILD_AHEAD,
      .on_message = parent_on_answer,
      .on_exit = parent_on_exit,
  };
  weft_child_t *child;
  check(weft_child_spawn(weft_runtime_main(rt), &opts, &child), "weft_child_spawn");
  weft_port_t *port = weft_child_port(child);
  check(weft_port_on_drain(port, parent_pump), "weft_port_on_drain");
  printf("[parent] child %d started; posting %llu records\n", weft_child_pid(child),
         (unsigned long long)records);
  parent_pump(port);

  check(weft_runtime_run(rt), "weft_runtime_run");
  weft_msg_free(next_record);
  printf("[parent] %llu records out, %llu answers in, %llu wrong; waited for drain %llu "
         "times\n",
         (unsigned long long)sent, (unsigned long long)received, (unsigned long long)bad,
         (unsigned long long)waits);
  check(weft_runtime_free(rt), "weft_runtime_free");
  return received == records && bad == 0 ? 0 : 1;
}
