/* metrics_remote.h: NOT PUBLIC. A runtime's metrics snapshot as bytes, for
 * a child process to answer its parent's STATS_REQ (wire.h) and for the
 * parent to keep the answer in the child's metrics source (child.c). */
#ifndef WEFT_METRICS_REMOTE_H
#define WEFT_METRICS_REMOTE_H

#include "weft_impl.h"

/* Encode rt's snapshot in at most WEFT__WIRE_STATS_MAX bytes (contexts
 * first, then values, as many as fit; the rest is left out and a flag says
 * so). Any thread. Returns 0 and *out (weft__free it) of *len bytes, or
 * WEFT_ENOMEM. */
int weft__metrics_encode(weft_runtime_t *rt, uint8_t **out, size_t *len);

/* Decode p[0..n), an encoded snapshot from the child pid called name, and
 * make it src's remote part (what snapshots show of the child), received at
 * now. The source's context thread. Returns 0, WEFT_EPROTO (not a snapshot:
 * src keeps the last good one) or WEFT_ENOMEM. *truncated: the child left
 * some out. */
int weft__metrics_source_remote(weft_metrics_source_t *src, const uint8_t *p, size_t n, int pid,
                                const char *name, uint64_t now, bool *truncated);

#endif /* WEFT_METRICS_REMOTE_H */
