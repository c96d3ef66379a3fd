/* copy.c: `floor_memcpy`: what copying a buffer costs on this machine, the
 * floor a buffer move must beat: memcpy between two buffers of 1, 16 and
 * 64 MiB, both touched beforehand (no page faults in the timing). Per size:
 * the median over ROUNDS(size) copies of us per copy and GiB/s.
 *
 * Threads: the calling thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "floor.h"

#define MIB (1024u * 1024u)
#define MAX_ROUNDS 64u
#define BYTES_PER_SIZE (512u * MIB) /* copied per size, at most MAX_ROUNDS copies */

static int copy_size(const floor_args_t *args, unsigned mib) {
  size_t size = (size_t)mib * MIB;
  unsigned char *src = malloc(size), *dst = malloc(size);
  if (src == NULL || dst == NULL) {
    free(src);
    free(dst);
    return floor_fail("floor_memcpy", "allocating the buffers", ENOMEM);
  }
  memset(src, 0x5a, size);
  memset(dst, 0, size);
  size_t rounds = BYTES_PER_SIZE / size;
  if (rounds > MAX_ROUNDS)
    rounds = MAX_ROUNDS;
  double us[MAX_ROUNDS];
  unsigned sum = 0;
  for (size_t i = 0; i < rounds; i++) {
    src[i] = (unsigned char)i; /* a different copy each time */
    uint64_t t = floor_now_ns();
    memcpy(dst, src, size);
    us[i] = (double)(floor_now_ns() - t) / 1e3;
    sum += dst[i] + dst[size - 1]; /* the copy is observed */
  }
  double p50 = floor_percentile(us, rounds, 50);
  floor_emit("floor_memcpy", args->rep,
             "\"size_mib\":%u,\"us_per_copy\":%.1f,\"gib_per_s\":%.2f,\"rounds\":%zu,"
             "\"check\":%u",
             mib, p50, (double)size / (1024.0 * MIB) / (p50 / 1e6), rounds, sum % 7u);
  free(src);
  free(dst);
  return 0;
}

int floor_memcpy(const floor_args_t *args) {
  static const unsigned sizes[] = {1, 16, 64};
  int err = 0;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
    err |= copy_size(args, sizes[i]);
  return err ? -1 : 0;
}
