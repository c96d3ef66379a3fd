/* rawpeer.h: a peer that is not weft, for tests that play a hostile process
 * on the other end of a weft channel: it writes frames (wire.h) by hand on
 * the channel's fd, with or without fds, honest or not. Blocking I/O, no
 * runtime (a weft runtime in that process would adopt the channel fd). */
#ifndef WEFT_RAWPEER_H
#define WEFT_RAWPEER_H

#include <stddef.h>
#include <stdint.h>

#define RAWPEER_EXIT_NOT_HUNG_UP 42 /* the other side kept the channel open */
#define RAWPEER_EXIT_SETUP 43

/* The channel fd this process was given (WEFT_CHANNEL_FD); exits 43 if none. */
int rawpeer_fd(void);

/* Send n bytes on fd, with one fd attached to the first byte if pass >= 0.
 * If the other side has hung up, the process exits 0 quietly. */
void rawpeer_send(int fd, const void *p, size_t n, int pass);

/* A HELLO granting window_msgs / window_bytes, max frame 1 MiB. */
void rawpeer_hello(int fd, uint32_t window_msgs, uint64_t window_bytes, int pass);

/* Append to out (cap bytes) a MSG frame with no items and a msgpack bin
 * payload of payload_len bytes (>= 0). Returns the bytes written. */
size_t rawpeer_put_msg(uint8_t *out, size_t cap, size_t payload_len);

/* Read and drop what comes until the other side hangs up: exit 0 then, or 42
 * after timeout_ms. */
void rawpeer_wait_hangup(int fd, int timeout_ms);

#endif /* WEFT_RAWPEER_H */
