/* metrics_flag.h: the examples' `--metrics HOST:PORT` flag (flagship.c,
 * cluster_http.c): serve /metrics and /stats.json on the main loop with
 * weft_metrics_http, when weft was built with http_parser. Static functions,
 * included by each example that takes the flag. */
#ifndef WEFT_EXAMPLES_METRICS_FLAG_H
#define WEFT_EXAMPLES_METRICS_FLAG_H

#include <stdio.h>
#include <string.h>

#include <weft.h>

#ifdef WEFT_HAVE_METRICS_HTTP
#include <weft/metrics_http.h>
static weft_metrics_http_t *metrics_http;
/* Serve /metrics and /stats.json on the main loop (tools/weft-top reads them). */
static int metrics_start(weft_ctx_t *ctx, const char *listen) {
  weft_metrics_http_options_t o = {.listen = listen};
  int err = weft_metrics_http_start(ctx, &o, &metrics_http);
  if (err == 0)
    printf("metrics on http://%.*s:%d/metrics\n", (int)(strrchr(listen, ':') - listen), listen,
           weft_metrics_http_port(metrics_http));
  return err;
}
/* Close it and let the loop finish closing (before weft_runtime_free). */
static void metrics_stop(weft_ctx_t *ctx) {
  if (metrics_http && weft_metrics_http_close(metrics_http, NULL, NULL) == 0)
    uv_run(weft_ctx_loop(ctx), UV_RUN_DEFAULT);
  metrics_http = NULL;
}
#else
static int metrics_start(weft_ctx_t *ctx, const char *listen) {
  (void)ctx;
  (void)listen;
  return UV_ENOTSUP; /* built without http_parser (libhttp-parser-dev) */
}
static void metrics_stop(weft_ctx_t *ctx) { (void)ctx; }
#endif

#endif /* WEFT_EXAMPLES_METRICS_FLAG_H */
