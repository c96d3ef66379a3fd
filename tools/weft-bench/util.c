/* util.c: weft-bench's helpers: clocks, RSS and CPU readings, percentiles,
 * JSON lines and the tiny {op} messages the shapes exchange with workers.
 *
 * Output is line-buffered JSON on stdout (one object per line, flushed at
 * once so that run.sh sees partial results if a later shape fails); errors go
 * to stderr. Every helper may be called from any thread except bench_emit,
 * which the shapes call from the main thread only. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_ns(void) { return uv_hrtime(); }

uint64_t bench_rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  unsigned long size = 0, resident = 0;
  int got = fscanf(f, "%lu %lu", &size, &resident);
  fclose(f);
  if (got != 2)
    return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
}

uint64_t bench_cpu_ns(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
  return us * 1000u;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p) {
  if (n == 0)
    return 0;
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

const weft_runtime_options_t *bench_node_runtime_options(void) {
  static weft_runtime_options_t o;
  const char *v = getenv("WEFT_BENCH_SPIN_US");
  if (v == NULL)
    return NULL;
  o.spin_us = (int32_t)atoi(v);
  return &o;
}

weft_node_transport_t bench_node_transport(void) {
  const char *t = getenv("WEFT_BENCH_TRANSPORT");
  return t != NULL && strcmp(t, "nng") == 0 ? WEFT_NODE_TRANSPORT_NNG
                                            : WEFT_NODE_TRANSPORT_DEFAULT;
}

void bench_emit(const char *shape, int rep, const char *fields, ...) {
  va_list ap;
  /* the node shapes through nng's transport are their own row */
  bool nng = strncmp(shape, "remote_", 7) == 0 || strncmp(shape, "service_", 8) == 0
                 ? bench_node_transport() == WEFT_NODE_TRANSPORT_NNG
                 : false;
  printf("{\"shape\":\"%s\",\"impl\":\"%s\",\"rep\":%d,", shape, nng ? "weft-nng" : "weft",
         rep);
  va_start(ap, fields);
  vprintf(fields, ap);
  va_end(ap);
  printf("}\n");
  fflush(stdout);
}

int bench_fail(const char *shape, const char *what, int err) {
  fprintf(stderr, "weft-bench %s: %s failed: %s (%s)\n", shape, what, weft_err_name(err),
          weft_strerror(err));
  return err;
}

int bench_msg_op(weft_msg_t **out, uint64_t op) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 1);
  err = weft_msg_put_u64(m, "op", op);
  if (err) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}

uint64_t bench_msg_get_op(const weft_msg_t *msg) {
  uint64_t op = 0;
  if (weft_msg_get_u64(msg, "op", &op) != 0)
    return 0;
  return op;
}

int bench_post_op(weft_port_t *port, uint64_t op) {
  weft_msg_t *m;
  int err = bench_msg_op(&m, op);
  if (err)
    return err;
  err = weft_port_post(port, m);
  if (err)
    weft_msg_free(m);
  return err;
}

int bench_worker_data(weft_msg_t **out, uint64_t n, uint64_t size) {
  weft_msg_t *m;
  int err = weft_msg_new(&m);
  if (err)
    return err;
  weft_msg_put_map(m, 2);
  weft_msg_put_u64(m, "n", n);
  err = weft_msg_put_u64(m, "size", size);
  if (err) {
    weft_msg_free(m);
    return err;
  }
  *out = m;
  return 0;
}
