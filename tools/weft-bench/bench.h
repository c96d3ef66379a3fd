/* bench.h: weft-bench's own header: the shapes, their arguments and the small
 * helpers they share (clock, RSS, CPU time, percentiles, JSON output).
 *
 * Every shape builds its own runtime, measures, prints one JSON object per
 * result on stdout ({"shape":...,"impl":"weft",...}) and frees the runtime.
 * Shapes return 0 or a negative weft/libuv code; what failed is said on
 * stderr. Threads: the shapes run on the main thread; the worker-side code in
 * each file runs on weft worker threads and shares nothing with the main
 * thread except through ports (and, for results, the final message). */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

#include <weft.h>

typedef struct {
  uint64_t n;        /* messages, round trips, spawns, actors or hops; 0: shape default */
  uint64_t size;     /* transfer: buffer size in bytes; 0: 1, 16 and 64 MiB */
  int rep;           /* index of this repetition (printed as "rep") */
  bool fresh;        /* actor shapes: a new message per hop instead of forwarding */
} bench_args_t;

typedef int (*bench_shape_fn)(const bench_args_t *args);

/* Message opcodes between a shape and its worker ("op" key). */
enum {
  BENCH_OP_READY = 1, /* worker -> parent: online and listening */
  BENCH_OP_DONE = 2,  /* worker -> parent: all messages seen; "count", "bad" */
  BENCH_OP_PING = 3   /* parent -> worker: echo this back */
};

int bench_oneway(const bench_args_t *args);
int bench_pingpong(const bench_args_t *args);
int bench_transfer(const bench_args_t *args);
int bench_spawn(const bench_args_t *args);
int bench_idle_rss(const bench_args_t *args);
int bench_idle_cpu(const bench_args_t *args);
int bench_actor_spawn(const bench_args_t *args);
int bench_actor_pingpong(const bench_args_t *args);
int bench_actor_ring(const bench_args_t *args);
int bench_actor_oneway(const bench_args_t *args);
int bench_child_oneway(const bench_args_t *args);
int bench_child_pingpong(const bench_args_t *args);
int bench_child_transfer(const bench_args_t *args);
int bench_pool(const bench_args_t *args);
int bench_remote_oneway(const bench_args_t *args);
int bench_remote_pingpong(const bench_args_t *args);
int bench_remote_transfer(const bench_args_t *args);
/* weft-bench --remote-peer URL: the other node of the remote_* shapes
 * (remote.c). Returns the exit code. */
int bench_remote_peer_main(const char *url);
int bench_service_pingpong(const bench_args_t *args);
/* weft-bench --service-peer URL: the provider node of service_pingpong
 * (service.c). Returns the exit code. */
int bench_service_peer_main(const char *url);
/* The node transport of the remote_* and service_* shapes (both processes):
 * nng's if WEFT_BENCH_TRANSPORT=nng is in the environment (their rows are
 * then "impl":"weft-nng"), else the default (the node's loop). */
weft_node_transport_t bench_node_transport(void);
/* Their runtimes' options (both processes): NULL (the defaults), or with
 * spin_us from WEFT_BENCH_SPIN_US (-1: a context sleeps at once when it has
 * no work, instead of spinning up to 50 us for more). */
const weft_runtime_options_t *bench_node_runtime_options(void);

/* If this process was started as a child by a child_* shape, run its part
 * and return true with the exit code in *code (child.c). */
bool bench_child_main(int *code);

/* The pingpong worker (pingpong.c): starts its parent port, says READY, then
 * posts every message it gets back. Worker thread. */
int bench_echo_entry(weft_ctx_t *ctx, weft_msg_t *data);

/* ---- a stream of messages to a worker (stream.c) -------------------------- */

/* The worker says READY; the stream posts n messages made by make (the one
 * for seq s->sent), keeps one refused with WEFT_EAGAIN and posts it first from
 * the drain callback; the worker answers DONE {count, bad}. Main thread. */
typedef struct bench_stream_s bench_stream_t;
struct bench_stream_s {
  weft_port_t *port;
  uint64_t n, sent, eagain;
  weft_msg_t *held;
  uint64_t t0, t1, count, bad;
  int err;
  int (*make)(bench_stream_t *s, weft_msg_t **out);
};

/* Spawns the worker described by opts (entry and bounds; on_message and data
 * are filled in here, data = {n, size}) and ties the stream to its port. */
int bench_stream_start(weft_ctx_t *ctx, bench_stream_t *s, weft_worker_options_t *opts,
                       uint64_t size);
/* After the run: frees a held message; 0, or the failure (said on stderr). */
int bench_stream_check(const char *shape, bench_stream_t *s);

/* ---- helpers (util.c) ---------------------------------------------------- */

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);
/* Resident set size of the process in KiB (/proc/self/statm), or 0. */
uint64_t bench_rss_kib(void);
/* User + system CPU time of the process in nanoseconds (getrusage). */
uint64_t bench_cpu_ns(void);
/* The p-th percentile (0..100) of v[0..n), sorting v in place. 0 if n is 0. */
double bench_percentile(double *v, size_t n, double p);
/* Prints {"shape":shape,"impl":"weft","rep":rep,<fields>} and a newline.
 * fields is a printf format for the rest of the object, without braces. */
void bench_emit(const char *shape, int rep, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
/* Says on stderr which step failed and with what; returns err. */
int bench_fail(const char *shape, const char *what, int err);

/* A message {op: op} (plus nothing else). Returns 0 or an error code. */
int bench_msg_op(weft_msg_t **out, uint64_t op);
/* The "op" of msg, or 0. */
uint64_t bench_msg_get_op(const weft_msg_t *msg);
/* Posts {op: op} on port. Returns 0 or the error (the message is freed). */
int bench_post_op(weft_port_t *port, uint64_t op);
/* workerData for the shapes' workers: {n: n, size: size}. */
int bench_worker_data(weft_msg_t **out, uint64_t n, uint64_t size);

#endif /* WEFT_BENCH_H */
