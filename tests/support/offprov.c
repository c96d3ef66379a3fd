/* offprov.c: see offprov.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "offprov.h"

static char node_name[32] = "local"; /* the provider's node name in its process */

uint64_t offprov_expected(uint64_t n, uint64_t seed) {
  uint64_t v = seed;
  for (uint64_t i = 0; i < n; i++)
    v = v * 6364136223846793005ull + 1442695040888963407ull + i;
  return v;
}

int offprov_mix(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  uint64_t n = 0, seed = 0;
  if (args == NULL || weft_msg_get_u64(args, "n", &n) != 0 ||
      weft_msg_get_u64(args, "seed", &seed) != 0)
    return WEFT_EINVAL;
  weft_msg_t *r;
  int err = weft_msg_new(&r);
  if (err != 0)
    return err;
  weft_msg_put_map(r, 2);
  weft_msg_put_u64(r, "v", offprov_expected(n, seed));
  weft_msg_put_str(r, "node", node_name);
  *result = r;
  return 0;
}

static int fnv(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result) {
  (void)task;
  size_t i;
  weft_buf_t *b;
  if (args == NULL || weft_msg_find_xfer(args, WEFT_XFER_BUF, 0, &i) != 0 ||
      weft_msg_take_buf(args, i, &b) != 0)
    return WEFT_EINVAL;
  const uint8_t *p = weft_buf_ptr(b);
  uint64_t h = 1469598103934665603ull;
  for (size_t k = 0; k < weft_buf_len(b); k++)
    h = (h ^ p[k]) * 1099511628211ull;
  weft_buf_free(b);
  weft_msg_t *r;
  int err = weft_msg_new(&r);
  if (err != 0)
    return err;
  weft_msg_put_map(r, 1);
  weft_msg_put_u64(r, "h", h);
  *result = r;
  return 0;
}

void offprov_register(weft_pool_t *pool) {
  if (weft_pool_register(pool, "mix", offprov_mix) != 0 ||
      weft_pool_register(pool, "fnv", fnv) != 0)
    abort();
}

/* ---- the provider process ----------------------------------------------------- */

static struct {
  weft_pool_t *pool;
  weft_node_t *node;
} P;

static void on_monitor(weft_node_t *node, const char *peer, bool up, int reason, void *data) {
  (void)peer;
  (void)reason;
  (void)data;
  if (up)
    return;
  weft_node_close(node, NULL, NULL); /* the service goes with it */
  weft_pool_close(P.pool, NULL);
}

int offprov_main(const char *name, const char *url) {
  weft_runtime_t *rt;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 3;
  weft_ctx_t *ctx = weft_runtime_main(rt);
  snprintf(node_name, sizeof(node_name), "%s", name);
  if (weft_pool_new(ctx, &(weft_pool_options_t){.size = 2}, &P.pool) != 0)
    return 4;
  offprov_register(P.pool);
  const char *peers[] = {url, NULL};
  weft_node_options_t o = {.name = name, .peers = peers, .on_monitor = on_monitor};
  if (weft_node_start(ctx, &o, &P.node) != 0)
    return 5;
  weft_service_t *svc;
  if (weft_pool_serve(P.pool, P.node, OFFPROV_SERVICE, &svc) != 0)
    return 6;
  if (weft_runtime_run(rt) < 0)
    return 7;
  weft_pool_release(P.pool);
  return weft_runtime_free(rt) == 0 ? 0 : 8;
}

bool offprov_wait(uv_loop_t *loop, const bool *flag, const uint32_t *count, uint32_t want,
                  uint64_t ms, const char *what) {
  uint64_t end = uv_hrtime() + ms * 1000000u;
  while (!(flag ? *flag : *count >= want)) {
    if (uv_hrtime() > end) {
      fprintf(stderr, "timed out after %llu ms waiting for %s\n", (unsigned long long)ms, what);
      return false;
    }
    uv_run(loop, UV_RUN_ONCE);
  }
  return true;
}
