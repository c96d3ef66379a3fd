/* soak.h: weft-soak, hostile and dying peers against a weft parent and a
 * weft child, for a given time.
 *
 * The binary is its own peer: with SOAK_ROLE in its environment it is one of
 * the processes a scenario spawns (a raw peer that writes frames or lines by
 * hand, or a weft child, the victim); without, it is the soak driver.
 *
 *   soak.c    driver: options, rounds, the RSS / fd / close accounting, verdict
 *   parent.c  scenarios against this process as a weft parent (weft_child_spawn
 *             of raw peers and of a weft child that is killed)
 *   child.c   scenarios against a weft child (this process is the raw parent)
 *             and the victim child itself
 *   peer.c    the raw peers (frames and Node lines written by hand)
 *
 * Threads: one, everywhere. */
#ifndef WEFT_SOAK_H
#define WEFT_SOAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft.h"

/* Bounds (the verdict's thresholds, printed with the figures). */
#define SOAK_CLOSE_BOUND_MS 5000u   /* a channel closes this soon after its peer is gone */
#define SOAK_RSS_SLACK_KIB (24u * 1024u) /* allocator, libuv, msgpack, page cache noise */
/* ThreadSanitizer's shadow memory and allocator make RSS follow throughput
 * (several times what the program holds): under it the RSS figures are
 * printed, not judged. */
#if defined(__SANITIZE_THREAD__)
#define SOAK_JUDGE_RSS 0
#else
#define SOAK_JUDGE_RSS 1
#endif
#define SOAK_PARENT_WINDOW_MSGS 64u /* what the parent grants its hostile children */
#define SOAK_PARENT_WINDOW_BYTES (1u << 20)
#define SOAK_CHILD_WINDOW_KIB (4096u * 2u) /* a weft child's default window: 4096
                                              messages of the flood's ~1 KiB, doubled */
#define SOAK_FLOOD_MAX_BYTES (96u << 20) /* a flooding peer stops after this */
#define SOAK_FLOOD_PAYLOAD 1000u

typedef struct {
  unsigned opened, closed;  /* channels, and close events (or clean exits) seen */
  unsigned failures;
  long rss_peak_growth_kib; /* the worst growth seen over a window-bounded baseline */
} soak_stats_t;

extern soak_stats_t soak_stats;

/* A failed check: counted and printed with its scenario. */
void soak_fail(const char *scenario, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void soak_note(const char *scenario, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* VmRSS / VmHWM of pid (0: this process) in KiB, or -1. */
long soak_status_kib(int pid, const char *field);
int soak_count_fds(void);
uint64_t soak_now_ms(void);
/* A pseudo-random number in [lo, hi]. */
unsigned soak_rand(unsigned lo, unsigned hi);

/* Frames, written by hand (see runtime/wire.h for the format). Each returns
 * the bytes written into out. */
size_t soak_frame_hello(uint8_t *out, uint32_t max_frame, uint32_t wm, uint64_t wb);
size_t soak_frame_credit(uint8_t *out, uint32_t msgs, uint64_t bytes);
/* A MSG frame with no items and a msgpack str of n bytes ('x'). */
size_t soak_frame_msg(uint8_t *out, size_t n);
/* The head of a MSG frame with one inline buffer of n bytes (the buffer's
 * bytes and a 1-byte payload must follow). */
size_t soak_frame_msg_inline_head(uint8_t *out, uint32_t n);

/* The processes a scenario starts (SOAK_ROLE=<name>): never returns. */
void soak_peer_main(const char *role);
void soak_victim_main(void);

/* The scenarios of one round. */
void soak_parent_round(weft_runtime_t *rt);
void soak_child_round(void);

#endif /* WEFT_SOAK_H */
