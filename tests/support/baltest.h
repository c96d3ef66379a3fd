/* baltest.h: what the balancer tests (test_balancer, test_balancer_oom)
 * share: the worker, a minimal HTTP/1.1 server ("http", a thread entry and
 * the entry of a worker process of the test binary), and the client loop on
 * the main context that counts every failed request.
 *
 * The client loop and the balancer under test are one each per test:
 * baltest_new_runtime resets both; when the clients are through
 * (on_finished) the balancer closes and its final stats land in baltest_bal.
 * Everything runs on the main context's thread. */
#ifndef WEFT_BALTEST_H
#define WEFT_BALTEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weft.h"
#include "weft/balancer.h"

typedef struct {
  union {
    uv_stream_t s;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t cr;
  uv_write_t wr;
  char buf[1024];
  size_t len;
  bool busy;       /* a request is out */
  bool open;
} baltest_client_t;

typedef struct {
  int target;         /* requests to complete */
  int done, failed, out;
  bool keepalive;
  int nclients, open;
  int connects, max_connects;  /* connections made; 0: no limit */
  baltest_client_t clients[16];
  struct sockaddr_storage addr;
  const char *path;
  uv_loop_t *loop;
  void (*on_progress)(int done);
  void (*on_finished)(void);
} baltest_load_t;

typedef struct {
  weft_balancer_t *b;
  const char *host, *path;
  weft_balancer_stats_t final[4];
  size_t nfinal;
  int closed, reloaded, exits, normal_exits;
  uint64_t served;
} baltest_bal_t;

extern baltest_load_t baltest_load;
/* A worker that got {"block": ms} sets baltest_blocking to 1, blocks its loop
 * for ms (a long CPU turn), then adds 1 to baltest_blocks_done. */
extern atomic_int baltest_blocking, baltest_blocks_done;
extern baltest_bal_t baltest_bal;

/* baltest_http_entry: the worker's entry: weft_balancer_worker_start with the
 * HTTP server. A user message {"stall": ms} makes it stop taking messages
 * (CONN ones queue up undelivered), then exit after ms. */
int baltest_http_entry(weft_ctx_t *ctx, weft_msg_t *data);

/* baltest_worker_main: main() of the test binary started as a worker process
 * (WEFT_CHANNEL_FD set): runs the "http" entry; returns the exit code.
 * baltest_worker_main_with: the same with one more entry registered (name,
 * entry), for a test's own worker. */
int baltest_worker_main(void);
int baltest_worker_main_with(const char *name, weft_worker_entry_cb entry);

/* baltest_new_runtime: a runtime with the "http" entry registered (asserts);
 * baltest_load and baltest_bal reset (host 127.0.0.1; when the clients are
 * through, baltest_bal.b closes and its stats go to baltest_bal.final). */
weft_runtime_t *baltest_new_runtime(void);

/* baltest_load_start: starts baltest_load.nclients clients against b (on
 * host, or on the Unix socket path if not NULL). */
void baltest_load_start(weft_balancer_t *b, const char *host, const char *path);

/* baltest_client_end: closes c; a request it had out counts failed if
 * failed. The client reconnects while requests remain to be made. */
void baltest_client_end(baltest_client_t *c, bool failed);

/* baltest_connect: a TCP connection to 127.0.0.1:port, made with a bounded
 * wait (a listener nobody accepts from still completes handshakes, so a hang
 * shows as 0 here, not as a timeout). Returns 0 and sets *fd (blocking, with
 * receive and send timeouts of timeout_ms) or closes it when fd is NULL;
 * else a negative errno (UV_ECONNREFUSED, UV_ETIMEDOUT ...). Any thread. */
int baltest_connect(int port, int timeout_ms, int *fd);

/* baltest_read_reply: reads one HTTP reply of the test server (its head and
 * 12 body bytes) from a blocking fd into buf (NUL-terminated). Returns its
 * length, 0 on EOF before any byte, or a negative errno (UV_EAGAIN: the
 * receive timeout passed). */
int baltest_read_reply(int fd, char *buf, size_t cap);

#endif /* WEFT_BALTEST_H */
