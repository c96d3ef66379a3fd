/* transfer_buffer.c: moving a 16 MiB buffer to a worker without copying it.
 *
 * Node:
 *   const ab = new ArrayBuffer(16 << 20);
 *   worker.postMessage({ ab }, [ab]);   // ab.byteLength is 0 afterwards
 *
 * weft: main fills an owned buffer and adds it to a message's transfer list
 * (weft_msg_add_buf). The bytes move into the message at once and main's
 * handle is detached: its length is 0 and any use of it is WEFT_EDETACHED. The
 * worker takes the buffer out of the message (weft_msg_take_buf), sums it and
 * answers with the checksum and how long the bytes took to arrive. For scale,
 * main also times one memcpy of the same 16 MiB: that is what a copy costs.
 *
 * Threads: main() and on_answer run on the main thread; worker_entry and
 * on_buffer on the worker thread. The bytes are touched by one of them at a
 * time: whoever holds the buffer.
 *
 * Usage: transfer_buffer [--demo]   (same behaviour either way) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define BUF_LEN (16u * 1024u * 1024u)

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "%s: %s (%s)\n", what, weft_err_name(err), weft_strerror(err));
    exit(1);
  }
}

/* The checksum both sides compute: the 64-bit words rotated and xored in. */
static uint64_t checksum(const void *p, size_t len) {
  const uint64_t *w = p;
  uint64_t sum = 0;
  for (size_t i = 0; i < len / sizeof(*w); i++)
    sum = ((sum << 7) | (sum >> 57)) ^ w[i];
  return sum;
}

/* ---- worker thread --------------------------------------------------------- */

static void on_buffer(weft_port_t *parent, weft_msg_t *msg) {
  uint64_t arrived_ns = uv_hrtime();
  uint64_t sent_ns = 0;
  weft_msg_get_u64(msg, "sent_ns", &sent_ns);

  weft_buf_t *buf;
  check(weft_msg_take_buf(msg, 0, &buf), "weft_msg_take_buf"); /* now ours */
  weft_msg_free(msg);
  uint64_t sum = checksum(weft_buf_ptr(buf), weft_buf_len(buf));
  printf("[worker] received %zu bytes, checksum %016llx\n", weft_buf_len(buf),
         (unsigned long long)sum);
  weft_buf_free(buf);

  weft_msg_t *answer;
  check(weft_msg_new(&answer), "weft_msg_new");
  weft_msg_put_map(answer, 2);
  weft_msg_put_u64(answer, "checksum", sum);
  weft_msg_put_u64(answer, "transit_ns", arrived_ns - sent_ns);
  check(weft_port_post(parent, answer), "weft_port_post");
}

static int worker_entry(weft_ctx_t *ctx, weft_msg_t *msg) {
  (void)msg;
  return weft_port_start(weft_ctx_parent_port(ctx), on_buffer);
}

/* ---- main thread ----------------------------------------------------------- */

static uint64_t expected_sum;
static int status = 1; /* becomes 0 once the worker's checksum matches */

static void on_answer(weft_port_t *port, weft_msg_t *msg) {
  uint64_t sum = 0, transit_ns = 0;
  weft_msg_get_u64(msg, "checksum", &sum);
  weft_msg_get_u64(msg, "transit_ns", &transit_ns);
  weft_msg_free(msg);
  printf("[main  ] bytes reached the worker %.1f us after the post\n", transit_ns / 1e3);
  printf("[main  ] worker checksum %016llx: %s\n", (unsigned long long)sum,
         sum == expected_sum ? "matches" : "MISMATCH");
  status = sum == expected_sum ? 0 : 1;
  weft_port_close(port); /* done: the worker exits */
}

/* What a copy would cost: one memcpy of the same size. */
static double memcpy_us(const void *src, size_t len) {
  void *dst = malloc(len);
  if (dst == NULL)
    return -1;
  memset(dst, 0, len); /* fault the pages in first: time the copy alone */
  uint64_t t0 = uv_hrtime();
  memcpy(dst, src, len);
  uint64_t t1 = uv_hrtime();
  volatile uint8_t sink = ((uint8_t *)dst)[len - 1];
  (void)sink;
  free(dst);
  return (t1 - t0) / 1e3;
}

static void send_buffer(weft_port_t *to_worker) {
  weft_buf_t *buf;
  check(weft_buf_new(&buf, BUF_LEN), "weft_buf_new");
  uint64_t *words = weft_buf_ptr(buf);
  for (size_t i = 0; i < BUF_LEN / sizeof(*words); i++)
    words[i] = i * 0x9E3779B97F4A7C15ull;
  expected_sum = checksum(words, BUF_LEN);
  printf("[main  ] filled %u bytes, checksum %016llx\n", BUF_LEN,
         (unsigned long long)expected_sum);
  printf("[main  ] for scale, one memcpy of them takes %.1f us\n", memcpy_us(words, BUF_LEN));

  weft_msg_t *m;
  check(weft_msg_new(&m), "weft_msg_new");
  uint64_t t0 = uv_hrtime();
  weft_msg_put_map(m, 1);
  weft_msg_put_u64(m, "sent_ns", t0);
  check(weft_msg_add_buf(m, buf), "weft_msg_add_buf"); /* bytes move; buf detached */
  check(weft_port_post(to_worker, m), "weft_port_post"); /* m taken */
  uint64_t t1 = uv_hrtime();

  void *p;
  size_t len;
  int err = weft_buf_bytes(buf, &p, &len);
  printf("[main  ] add_buf + post took %.1f us; my handle now: length %zu, "
         "weft_buf_bytes -> %s\n",
         (t1 - t0) / 1e3, weft_buf_len(buf), weft_err_name(err));
  weft_buf_free(buf); /* the detached handle is still ours to free */
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  weft_runtime_t *rt;
  check(weft_runtime_new(&rt, NULL), "weft_runtime_new");
  weft_worker_options_t opts = {.entry = worker_entry, .on_message = on_answer};
  weft_worker_t *w;
  check(weft_worker_spawn(weft_runtime_main(rt), &opts, &w), "weft_worker_spawn");

  send_buffer(weft_worker_port(w));

  check(weft_runtime_run(rt), "weft_runtime_run");
  check(weft_runtime_free(rt), "weft_runtime_free");
  return status;
}
