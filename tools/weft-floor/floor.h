/* floor.h: weft-floor's own header. weft-floor measures what the machine
 * itself allows, in the same run as weft-bench and its peers, so that
 * tools/bench/run.sh can state weft's figures as ratios to a floor of this
 * run rather than to constants from another machine:
 *
 *   floor_uv_async   two threads, each parked in its own uv_loop, wake each
 *                    other with uv_async_send: the round trip, back to back
 *                    and with pings 10 ms apart (as weft-bench idle_cpu pings
 *                    a sleeping worker)
 *   floor_eventfd    the same with blocking read/write on two eventfds
 *   floor_spsc       a single-producer single-consumer ring between two
 *                    spinning threads: round trip (the cross-core cache
 *                    floor) and one-way throughput, with one release per item
 *                    and one per batch of 64
 *   floor_memcpy     copying 1, 16 and 64 MiB between touched buffers
 *
 * Every result is one JSON line on stdout: {"shape":...,"impl":"floor",...}.
 * Shapes return 0 or -1 (what failed is said on stderr). The whole process
 * runs under a 120 s alarm: a spinning or blocked thread whose peer never
 * answers ends the process instead of hanging the run. */
#ifndef WEFT_FLOOR_H
#define WEFT_FLOOR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t n; /* round trips or items; 0: the shape's default */
  int rep;    /* printed as "rep" */
} floor_args_t;

int floor_uv_async(const floor_args_t *args);
int floor_eventfd(const floor_args_t *args);
int floor_spsc(const floor_args_t *args);
int floor_memcpy(const floor_args_t *args);

/* ---- helpers (main.c) --------------------------------------------------- */

/* Monotonic clock in nanoseconds. Any thread. */
uint64_t floor_now_ns(void);
/* The p-th percentile (0..100) of v[0..n), sorting v in place; 0 if n is 0. */
double floor_percentile(double *v, size_t n, double p);
/* Prints {"shape":shape,"impl":"floor","rep":rep,<fields>} and a newline,
 * flushed. Main thread. */
void floor_emit(const char *shape, int rep, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
/* Says on stderr which step of shape failed (with strerror(err) if err > 0);
 * returns -1. */
int floor_fail(const char *shape, const char *what, int err);

/* Latencies of a ping-pong: warm-up round trips first, then n timed ones. */
typedef struct {
  uint64_t n, warmup, gap_us; /* gap_us: pause between pings (0: back to back) */
  double *lat_us;             /* n entries */
  uint64_t t0, t1;            /* first and last timed round trip, ns */
} floor_rtt_t;

/* Allocates lat_us; 0 or -1. */
int floor_rtt_init(floor_rtt_t *r, uint64_t n, uint64_t warmup, uint64_t gap_us);
/* Records round trip i (0-based, warm-up included) that took ns. */
void floor_rtt_record(floor_rtt_t *r, uint64_t i, uint64_t now, uint64_t ns);
/* Prints p50_us, p99_us, rt_per_s (back to back only), n and gap_us; frees. */
void floor_rtt_emit(floor_rtt_t *r, const char *shape, int rep, const char *extra);
void floor_rtt_fini(floor_rtt_t *r);

#endif /* WEFT_FLOOR_H */
