/* nng_floor.c: weft-nng-floor, the floor under weft-bench's remote_* shapes:
 * nng's own pair1 protocol over tcp://127.0.0.1 between two processes, with
 * nothing of weft on the wire. Whatever weft's node layer adds is measured
 * against this.
 *
 *   weft-nng-floor <remote_oneway|remote_oneway_batch|remote_pingpong|
 *                   remote_transfer|all> [--n N] [--rep I]
 *
 * The process forks before touching nng (nng's threads do not survive a
 * fork): the child listens on port 0 and tells the parent the port through a
 * pipe, the parent dials; a hello/ready exchange proves the pipe is up before
 * any clock starts, and a final BYE from the parent tells the child that all
 * its replies arrived (nng_close does not wait for queued messages; the
 * parent closes only after the child has exited). Then, as JSON lines with
 * the fields of the matching local weft-bench shapes ("impl":"nng_pair1"):
 *
 *   remote_oneway        N messages of one 16-byte record {u64 seq, "hello"};
 *                        the child checks the order and answers DONE with
 *                        its count when it has all N. msgs_per_s over first
 *                        send -> DONE received.
 *   remote_oneway_batch  N records packed 4096 to a 64 KiB nng message, the
 *                        same check per record: msgs_per_s (records) and
 *                        mb_per_s.
 *   remote_pingpong      a 16-byte message echoed by the child; 2000 warm-up
 *                        round trips, then N: p50_us, p99_us, rt_per_s.
 *   remote_transfer      N (R) messages of 16 MiB, one at a time, each
 *                        acknowledged by the child after checking its length;
 *                        us_per_msg and ms_per_msg are the median. The message
 *                        is filled before the clock starts.
 *
 * NNG_OPT_RECVMAXSZ is set on both sockets to the largest message the side
 * expects (the parent: 16 bytes) plus pair1's header, never left unlimited. Bounded: send and
 * receive time out after 30 s, both processes have a 120 s alarm, and the
 * child dies with its parent (PR_SET_PDEATHSIG). Exit status 0, 1 if a run
 * failed (what failed is said on stderr), 2 for a bad command line.
 *
 * Threads: the main thread of each process; nng's own threads behind it. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include <weft.h>

#define RECORD 16u
#define BATCH_BYTES 65536u
#define BATCH_RECORDS (BATCH_BYTES / RECORD)
#define MiB (1024u * 1024u)
#define TRANSFER_BYTES (16u * MiB)
#define WARMUP 2000u
#define IO_TIMEOUT_MS 30000
#define ALARM_S 120u
#define TAG "hello\0\0"
/* RECVMAXSZ counts what the transport reads, pair1's own 4-byte header (hop
 * count) included: a limit of exactly the body size drops every message. */
#define HEADER_SLACK 64u
/* Socket send and receive queues, in messages (pair1's default is none: each
 * send then waits for nng's sender thread to take the message). */
#define QUEUE_MSGS 1024

typedef enum { ONEWAY, ONEWAY_BATCH, PINGPONG, TRANSFER, NMODES } mode_t_;

typedef struct {
  const char *name;
  size_t child_max; /* NNG_OPT_RECVMAXSZ on the child: its largest message */
  uint64_t default_n;
} mode_info_t;

static const mode_info_t modes[NMODES] = {
    [ONEWAY] = {"remote_oneway", RECORD, 100000},
    [ONEWAY_BATCH] = {"remote_oneway_batch", BATCH_BYTES, 20000000},
    [PINGPONG] = {"remote_pingpong", RECORD, 20000},
    [TRANSFER] = {"remote_transfer", TRANSFER_BYTES, 20},
};

/* ---- helpers ------------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fail(const char *who, const char *what, int err) {
  fprintf(stderr, "weft-nng-floor %s: %s: %s\n", who, what, nng_strerror(err));
  return err ? err : NNG_EINTERNAL;
}

static void put_record(uint8_t *p, uint64_t seq) {
  memcpy(p, &seq, sizeof(seq));
  memcpy(p + sizeof(seq), TAG, RECORD - sizeof(seq));
}

/* 0 if p holds the record for seq. */
static int check_record(const uint8_t *p, uint64_t seq) {
  uint64_t got;
  memcpy(&got, p, sizeof(got));
  return got != seq || memcmp(p + sizeof(got), TAG, RECORD - sizeof(got)) != 0;
}

static int send_bytes(nng_socket s, const void *data, size_t len) {
  nng_msg *m;
  int err = nng_msg_alloc(&m, len);
  if (err)
    return err;
  if (len)
    memcpy(nng_msg_body(m), data, len);
  err = nng_sendmsg(s, m, 0);
  if (err)
    nng_msg_free(m);
  return err;
}

/* Receives one message of exactly len bytes into out (may be NULL). */
static int recv_bytes(nng_socket s, void *out, size_t len) {
  nng_msg *m;
  int err = nng_recvmsg(s, &m, 0);
  if (err)
    return err;
  if (nng_msg_len(m) != len)
    err = NNG_EPROTO;
  else if (out)
    memcpy(out, nng_msg_body(m), len);
  nng_msg_free(m);
  return err;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* As weft-bench's bench_percentile: sorts v, the element at p/100*(n-1). */
static double percentile(double *v, size_t n, double p) {
  if (n == 0)
    return 0;
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static void emit(const char *shape, int rep, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
static void emit(const char *shape, int rep, const char *fields, ...) {
  va_list ap;
  printf("{\"shape\":\"%s\",\"impl\":\"nng_pair1\",\"rep\":%d,\"nng\":\"%s\",", shape, rep,
         nng_version());
  va_start(ap, fields);
  vprintf(fields, ap);
  va_end(ap);
  printf("}\n");
  fflush(stdout);
}

static int socket_open(nng_socket *s, size_t recv_max) {
  int err = nng_pair1_open(s);
  if (err)
    return err;
  if ((err = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, recv_max + HEADER_SLACK)) != 0 ||
      (err = nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, IO_TIMEOUT_MS)) != 0 ||
      (err = nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, IO_TIMEOUT_MS)) != 0 ||
      (err = nng_socket_set_int(*s, NNG_OPT_SENDBUF, QUEUE_MSGS)) != 0 ||
      (err = nng_socket_set_int(*s, NNG_OPT_RECVBUF, QUEUE_MSGS)) != 0)
    nng_close(*s);
  return err;
}

/* ---- child: the receiving / echoing side ---------------------------------- */

static int child_oneway(nng_socket s, uint64_t n, size_t per_msg) {
  uint64_t next = 0, bad = 0;
  while (next < n) {
    nng_msg *m;
    int err = nng_recvmsg(s, &m, 0);
    if (err)
      return err;
    const uint8_t *p = nng_msg_body(m);
    size_t len = nng_msg_len(m);
    if (len % RECORD != 0 || len / RECORD > per_msg)
      bad++;
    for (size_t off = 0; off + RECORD <= len && next < n; off += RECORD)
      bad += (uint64_t)check_record(p + off, next++);
    nng_msg_free(m);
  }
  uint64_t done[2] = {next, bad};
  return send_bytes(s, done, sizeof(done));
}

static int child_echo(nng_socket s, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    nng_msg *m;
    int err = nng_recvmsg(s, &m, 0);
    if (err)
      return err;
    err = nng_sendmsg(s, m, 0);
    if (err) {
      nng_msg_free(m);
      return err;
    }
  }
  return 0;
}

static int child_take(nng_socket s, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    nng_msg *m;
    int err = nng_recvmsg(s, &m, 0);
    if (err)
      return err;
    uint64_t ack[2] = {i, nng_msg_len(m) == TRANSFER_BYTES ? 0u : 1u};
    nng_msg_free(m);
    if ((err = send_bytes(s, ack, sizeof(ack))) != 0)
      return err;
  }
  return 0;
}

static int child_listen(nng_socket s, int port_fd) {
  nng_listener l;
  int err = nng_listen(s, "tcp://127.0.0.1:0", &l, 0);
  if (err)
    return err;
  int bound;
  if ((err = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &bound)) != 0)
    return err;
  uint16_t port = (uint16_t)bound;
  if (write(port_fd, &port, sizeof(port)) != (ssize_t)sizeof(port))
    return NNG_ESYSERR + errno;
  return 0;
}

static int child_run(mode_t_ mode, uint64_t n, int port_fd) {
  nng_socket s;
  int err = socket_open(&s, modes[mode].child_max);
  if (err)
    return fail("child", "opening the socket", err);
  err = child_listen(s, port_fd);
  close(port_fd);
  uint64_t hello[2];
  if (!err)
    err = recv_bytes(s, hello, sizeof(hello));
  if (!err)
    err = send_bytes(s, hello, sizeof(hello));
  if (!err) {
    if (mode == ONEWAY || mode == ONEWAY_BATCH)
      err = child_oneway(s, n, mode == ONEWAY ? 1 : BATCH_RECORDS);
    else if (mode == PINGPONG)
      err = child_echo(s, WARMUP + n);
    else
      err = child_take(s, n);
  }
  uint64_t bye[2];
  if (!err)
    err = recv_bytes(s, bye, sizeof(bye));
  if (err)
    fail("child", modes[mode].name, err);
  nng_close(s);
  return err ? 1 : 0;
}

/* ---- parent: the sending side ---------------------------------------------- */

static int parent_oneway(nng_socket s, uint64_t n, int rep) {
  uint64_t t0 = now_ns();
  for (uint64_t seq = 0; seq < n; seq++) {
    uint8_t rec[RECORD];
    put_record(rec, seq);
    int err = send_bytes(s, rec, sizeof(rec));
    if (err)
      return fail("parent", "sending a record", err);
  }
  uint64_t t_sent = now_ns(), done[2];
  int err = recv_bytes(s, done, sizeof(done));
  if (err)
    return fail("parent", "waiting for DONE", err);
  uint64_t t1 = now_ns();
  if (done[0] != n || done[1] != 0)
    return fail("parent", "the child's count", NNG_EPROTO);
  emit("remote_oneway", rep,
       "\"msgs_per_s\":%.0f,\"n\":%llu,\"records_per_msg\":1,\"queue_msgs\":%d,\"send_ms\":%.1f,"
       "\"done_ms\":%.1f",
       (double)n * 1e9 / (double)(t1 - t0), (unsigned long long)n, QUEUE_MSGS,
       (double)(t_sent - t0) / 1e6, (double)(t1 - t0) / 1e6);
  return 0;
}

static int send_batch(nng_socket s, uint64_t first, uint64_t count) {
  nng_msg *m;
  int err = nng_msg_alloc(&m, count * RECORD);
  if (err)
    return err;
  uint8_t *p = nng_msg_body(m);
  for (uint64_t i = 0; i < count; i++)
    put_record(p + i * RECORD, first + i);
  err = nng_sendmsg(s, m, 0);
  if (err)
    nng_msg_free(m);
  return err;
}

static int parent_oneway_batch(nng_socket s, uint64_t n, int rep) {
  uint64_t t0 = now_ns(), msgs = 0;
  for (uint64_t seq = 0; seq < n; seq += BATCH_RECORDS, msgs++) {
    uint64_t count = n - seq < BATCH_RECORDS ? n - seq : BATCH_RECORDS;
    int err = send_batch(s, seq, count);
    if (err)
      return fail("parent", "sending a batch", err);
  }
  uint64_t done[2];
  int err = recv_bytes(s, done, sizeof(done));
  if (err)
    return fail("parent", "waiting for DONE", err);
  uint64_t t1 = now_ns();
  if (done[0] != n || done[1] != 0)
    return fail("parent", "the child's count", NNG_EPROTO);
  double secs = (double)(t1 - t0) / 1e9;
  emit("remote_oneway", rep,
       "\"msgs_per_s\":%.0f,\"mb_per_s\":%.1f,\"n\":%llu,\"records_per_msg\":%u,"
       "\"nng_msgs\":%llu,\"queue_msgs\":%d,\"done_ms\":%.1f",
       (double)n / secs, (double)n * RECORD / secs / 1e6, (unsigned long long)n,
       BATCH_RECORDS, (unsigned long long)msgs, QUEUE_MSGS, secs * 1e3);
  return 0;
}

static int round_trip(nng_socket s, uint64_t seq, double *us) {
  uint8_t rec[RECORD], back[RECORD];
  put_record(rec, seq);
  uint64_t t0 = now_ns();
  int err = send_bytes(s, rec, sizeof(rec));
  if (!err)
    err = recv_bytes(s, back, sizeof(back));
  if (!err && check_record(back, seq))
    err = NNG_EPROTO;
  *us = (double)(now_ns() - t0) / 1e3;
  return err;
}

static int parent_pingpong(nng_socket s, uint64_t n, int rep) {
  double *lat = weft_calloc(n, sizeof(*lat));
  if (lat == NULL)
    return fail("parent", "allocating latencies", NNG_ENOMEM);
  int err = 0;
  double us;
  for (uint64_t i = 0; i < WARMUP && !err; i++)
    err = round_trip(s, i, &us);
  uint64_t t0 = now_ns();
  for (uint64_t i = 0; i < n && !err; i++)
    err = round_trip(s, WARMUP + i, &lat[i]);
  uint64_t t1 = now_ns();
  if (err)
    fail("parent", "a round trip", err);
  else
    emit("remote_pingpong", rep, "\"p50_us\":%.2f,\"p99_us\":%.2f,\"rt_per_s\":%.0f,\"n\":%llu",
         percentile(lat, n, 50), percentile(lat, n, 99),
         (double)n * 1e9 / (double)(t1 - t0), (unsigned long long)n);
  weft_free(lat);
  return err;
}

static int transfer_one(nng_socket s, const uint8_t *bytes, uint64_t i, double *ms) {
  nng_msg *m;
  int err = nng_msg_alloc(&m, TRANSFER_BYTES);
  if (err)
    return err;
  memcpy(nng_msg_body(m), bytes, TRANSFER_BYTES);
  uint64_t t0 = now_ns(), ack[2];
  err = nng_sendmsg(s, m, 0);
  if (err) {
    nng_msg_free(m);
    return err;
  }
  err = recv_bytes(s, ack, sizeof(ack));
  *ms = (double)(now_ns() - t0) / 1e6;
  if (!err && (ack[0] != i || ack[1] != 0))
    err = NNG_EPROTO;
  return err;
}

static int parent_transfer(nng_socket s, uint64_t n, int rep) {
  uint8_t *bytes = weft_malloc(TRANSFER_BYTES);
  double *ms = weft_calloc(n, sizeof(*ms));
  int err = bytes && ms ? 0 : NNG_ENOMEM;
  if (!err)
    memset(bytes, 'w', TRANSFER_BYTES);
  for (uint64_t i = 0; i < n && !err; i++)
    err = transfer_one(s, bytes, i, &ms[i]);
  if (err) {
    fail("parent", "a 16 MiB transfer", err);
  } else {
    double med = percentile(ms, n, 50);
    emit("remote_transfer", rep,
         "\"size_mib\":16,\"alloc\":\"nng_msg\",\"us_per_msg\":%.1f,\"ms_per_msg\":%.2f,"
         "\"min_ms\":%.2f,\"max_ms\":%.2f,\"n\":%llu",
         med * 1e3, med, ms[0], ms[n - 1], (unsigned long long)n);
  }
  weft_free(ms);
  weft_free(bytes);
  return err;
}

/* The child's port, written to the pipe once it listens; bounded wait. */
static int read_port(int fd, uint16_t *port) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, IO_TIMEOUT_MS) != 1)
    return NNG_ETIMEDOUT;
  return read(fd, port, sizeof(*port)) == (ssize_t)sizeof(*port) ? 0 : NNG_ECLOSED;
}

/* Measures over *s (opened here; the caller closes it once the child has
 * exited, even on failure) and says BYE. */
static int parent_run(mode_t_ mode, uint64_t n, int rep, int port_fd, nng_socket *sp) {
  uint16_t port;
  int err = read_port(port_fd, &port);
  if (err)
    return fail("parent", "learning the child's port", err);
  if ((err = socket_open(sp, RECORD)) != 0)
    return fail("parent", "opening the socket", err);
  nng_socket s = *sp;
  char url[64];
  snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", (unsigned)port);
  uint64_t hello[2] = {1, 2}, back[2];
  if ((err = nng_dial(s, url, NULL, 0)) != 0 || (err = send_bytes(s, hello, sizeof(hello))) != 0 ||
      (err = recv_bytes(s, back, sizeof(back))) != 0)
    return fail("parent", "connecting to the child", err);
  if (mode == ONEWAY)
    err = parent_oneway(s, n, rep);
  else if (mode == ONEWAY_BATCH)
    err = parent_oneway_batch(s, n, rep);
  else if (mode == PINGPONG)
    err = parent_pingpong(s, n, rep);
  else
    err = parent_transfer(s, n, rep);
  if (!err && (err = send_bytes(s, hello, sizeof(hello))) != 0)
    fail("parent", "saying BYE", err);
  return err;
}

/* ---- one run: fork, measure, reap ------------------------------------------ */

static int run_mode(mode_t_ mode, uint64_t n, int rep) {
  int fds[2];
  if (pipe(fds) != 0)
    return fail("parent", "pipe", NNG_ESYSERR + errno);
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0)
    return fail("parent", "fork", NNG_ESYSERR + errno);
  if (pid == 0) {
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(ALARM_S);
    _exit(child_run(mode, n, fds[1]));
  }
  close(fds[1]);
  alarm(ALARM_S);
  nng_socket s = NNG_SOCKET_INITIALIZER;
  int err = parent_run(mode, n, rep, fds[0], &s);
  close(fds[0]);
  if (err)
    kill(pid, SIGKILL); /* it may be waiting for what will not come */
  int status = 0;
  bool reaped = waitpid(pid, &status, 0) == pid;
  nng_close(s); /* after the child: BYE must not be dropped */
  if (!reaped || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "weft-nng-floor %s: the child failed (status 0x%x)\n", modes[mode].name,
            (unsigned)status);
    return 1;
  }
  return err ? 1 : 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: weft-nng-floor <remote_oneway|remote_oneway_batch|remote_pingpong|"
             "remote_transfer|all> [--n N] [--rep I]\n");
}

static int parse_args(int argc, char **argv, uint64_t *n, int *rep) {
  for (int i = 2; i + 1 < argc; i += 2) {
    char *end;
    unsigned long long v = strtoull(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0')
      return -1;
    if (strcmp(argv[i], "--n") == 0 && v > 0)
      *n = v;
    else if (strcmp(argv[i], "--rep") == 0 && v < 1000000)
      *rep = (int)v;
    else
      return -1;
  }
  return argc % 2 == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  uint64_t n = 0;
  int rep = 0;
  if (argc < 2 || parse_args(argc, argv, &n, &rep) != 0) {
    usage(stderr);
    return 2;
  }
  bool all = strcmp(argv[1], "all") == 0, found = false;
  int failed = 0;
  for (int m = 0; m < NMODES; m++) {
    if (!all && strcmp(argv[1], modes[m].name) != 0)
      continue;
    found = true;
    failed |= run_mode((mode_t_)m, n ? n : modes[m].default_n, rep);
  }
  if (!found) {
    usage(stderr);
    return 2;
  }
  return failed;
}
