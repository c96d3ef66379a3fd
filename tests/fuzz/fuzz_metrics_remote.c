/* fuzz_metrics_remote.c: libFuzzer target for the decoder of a child's
 * metrics snapshot (metrics_remote.c), the body of a STATS frame that a
 * parent receives from a child it does not trust.
 *
 * The input is the body. The decoder must accept it whole or refuse it
 * (WEFT_EPROTO) leaving the source's last snapshot untouched; what it
 * accepts must have as many records as the length says, NUL-terminated
 * strings, valid types, and every record labelled with a pid. Abort on a
 * mismatch; ASan and UBSan catch the rest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"
#include "metrics_remote.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "fuzz_metrics_remote: %s\n", what);
  abort();
}

static bool terminated(const char *s, size_t cap) { return memchr(s, '\0', cap) != NULL; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static weft_metrics_source_t src;
  static bool ready;
  if (!ready) {
    if (uv_mutex_init(&src.lock) != 0)
      fail("mutex");
    ready = true;
  }
  weft_metrics_ctx_t *before = src.rctx;
  bool truncated = false;
  int rc = weft__metrics_source_remote(&src, data, size, 42, "fuzz", 1, &truncated);
  if (rc != 0) {
    if (rc != WEFT_EPROTO && rc != WEFT_ENOMEM)
      fail("unexpected error code");
    if (src.rctx != before)
      fail("a refused snapshot replaced the last one");
    return 0;
  }
  if (size != 8 + src.nrctx * 224 + src.nrval * 208)
    fail("records do not add up to the length");
  for (size_t i = 0; i < src.nrctx; i++) {
    const weft_metrics_ctx_t *c = &src.rctx[i];
    if (!terminated(c->name, sizeof c->name) || !terminated(c->child, sizeof c->child) ||
        c->pid == 0 || c->utilization < 0)
      fail("a context record out of shape");
  }
  for (size_t i = 0; i < src.nrval; i++) {
    const weft_metrics_value_t *v = &src.rval[i];
    if (!terminated(v->kind, sizeof v->kind) || !terminated(v->name, sizeof v->name) ||
        !terminated(v->source, sizeof v->source) ||
        !terminated(v->label_key, sizeof v->label_key) ||
        !terminated(v->label_value, sizeof v->label_value) || v->pid == 0 ||
        (v->type != WEFT_METRIC_COUNTER && v->type != WEFT_METRIC_GAUGE))
      fail("a value record out of shape");
  }
  return 0;
}
