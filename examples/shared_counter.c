/* shared_counter.c: four workers incrementing one counter in shared memory.
 *
 * Node:
 *   const sab = new SharedArrayBuffer(8);
 *   new Worker(file, { workerData: sab });   // x4
 *   Atomics.add(new BigInt64Array(workerData), 0, 1n);   // in each worker
 *
 * weft: main makes a shared buffer (weft_buf_new_shared: zero-filled,
 * refcounted) and puts it in each worker's workerData. Adding a shared buffer
 * to a message does not detach it: the message gets its own handle on the
 * same memory. Each worker takes its handle, adds to the counter with C11
 * atomics, frees its handle and returns; with nothing else to do its loop
 * ends and it exits. When all four have exited main reads the counter.
 * weft synchronises nothing inside shared bytes: that is what the atomics are
 * for.
 *
 * Usage: shared_counter [--demo]   (--demo: 1M increments per worker, else 20M) */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define WORKERS 4

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* The shared memory's layout. */
typedef struct {
  _Atomic uint64_t count;
} counter_t;

/* ---- worker threads -------------------------------------------------------- */

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  uint64_t iterations, id;
  int err = weft_msg_get_u64(msg, "iterations", &iterations);
  if (err == 0)
    err = weft_msg_get_u64(msg, "id", &id);
  weft_buf_t *shared;
  if (err == 0)
    err = weft_msg_take_buf(msg, 0, &shared); /* our own handle on the memory */
  if (err)
    return err;

  counter_t *c = weft_buf_ptr(shared);
  for (uint64_t i = 0; i < iterations && !weft_ctx_should_stop(ctx); i++)
    atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
  printf("[worker %llu] added %llu\n", (unsigned long long)id, (unsigned long long)iterations);
  weft_buf_free(shared); /* drops our reference; main still holds one */
  return 0;               /* nothing keeps the loop alive: the worker exits */
}

/* ---- main thread ----------------------------------------------------------- */

static weft_buf_t *shared;
static uint64_t iterations;
static int exited;
static int failures;

static void on_worker_exit(weft_worker_t *w, int code) {
  (void)w;
  if (code != 0)
    failures++;
  if (++exited < WORKERS)
    return;
  counter_t *c = weft_buf_ptr(shared);
  uint64_t got = atomic_load_explicit(&c->count, memory_order_relaxed);
  uint64_t want = iterations * WORKERS;
  printf("[main] all %d workers exited: count %llu, expected %llu: %s\n", WORKERS,
         (unsigned long long)got, (unsigned long long)want, got == want ? "ok" : "WRONG");
  printf("[main] handles left on the shared memory: %u (main's)\n", weft_buf_refcount(shared));
  if (got != want)
    failures++;
}

static void spawn_counter(weft_ctx_t *ctx, uint64_t id) {
  weft_msg_t *data;
  check(weft_msg_new(&data), "weft_msg_new");
  weft_msg_put_map(data, 2);
  weft_msg_put_u64(data, "id", id);
  weft_msg_put_u64(data, "iterations", iterations);
  check(weft_msg_add_buf(data, shared), "weft_msg_add_buf"); /* shared: not detached */
  weft_worker_options_t opts = {.entry = worker_entry, .msg = data, .on_exit = on_worker_exit};
  weft_worker_t *w;
  int err = weft_worker_spawn(ctx, &opts, &w); /* takes data on success */
  if (err)
    weft_msg_free(data);
  check(err, "weft_worker_spawn");
}

int main(int argc, char **argv) {
  bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
  iterations = demo ? 1000000 : 20000000;

  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  check(weft_buf_new_shared(&shared, sizeof(counter_t)), "weft_buf_new_shared");
  counter_t *c = weft_buf_ptr(shared);
  atomic_init(&c->count, 0);

  for (uint64_t id = 0; id < WORKERS; id++)
    spawn_counter(weft_runtime_main(rt), id);
  printf("[main] %d workers spawned, %llu increments each\n", WORKERS,
         (unsigned long long)iterations);

  check(weft_runtime_run(rt), "weft_runtime_run");
  weft_buf_free(shared); /* the last handle: the memory goes now */
  check(weft_runtime_free(rt), "weft_runtime_free");
  return failures == 0 ? 0 : 1;
}
