/* weft/metrics_http.h: an HTTP endpoint serving a runtime's metrics.
 *
 * Opt-in, in its own library (weft_metrics_http, built with the tree when
 * Debian's libhttp-parser-dev is found; link it next to weft). It listens on
 * a context's own loop (127.0.0.1 unless told otherwise) and answers:
 *   GET /metrics     the Prometheus text format (weft_metrics_prometheus)
 *   GET /stats.json  the same snapshot as JSON (weft_metrics_json; tools/weft-top)
 * with ?ports=1 either adds every port (weft_metrics_ports: the weft_port_*
 * families, or a "ports" member), &top=N only the N fullest; the first such
 * request waits on timers (never blocking the loop) for the tables to be
 * published, at most about a second, else 503.
 * HEAD is answered like GET without the body. Anything else gets an error
 * and the connection is closed: an unknown path 404, another method 405, a
 * request line or headers over max_header_bytes 431, a malformed request
 * 400, a request not complete within header_timeout_ms 408, more than
 * max_conns connections at once 503. Every response closes its connection.
 * The listener and connections are unref'd: the endpoint keeps no loop alive.
 *
 * Threads: all calls on the thread of the context it was started on. */
#ifndef WEFT_METRICS_HTTP_H
#define WEFT_METRICS_HTTP_H

#include "metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_metrics_http_s weft_metrics_http_t;

typedef struct {
  const char *listen;          /* "host:port" or "[v6]:port"; NULL: "127.0.0.1:0" (any port) */
  uint32_t header_timeout_ms;  /* whole request (and response write) deadline; 0: 5000 */
  uint32_t max_header_bytes;   /* request line + headers; 0: 8192 */
  uint32_t max_conns;          /* connections at once; 0: 64 */
} weft_metrics_http_options_t;

/* Called once when the endpoint has closed and been freed (ctx's thread). */
typedef void (*weft_metrics_http_close_cb)(void *data);

/* weft_metrics_http_start: listens on ctx's loop. opts may be NULL. All or
 * nothing. Returns 0 and *out, WEFT_EINVAL (bad listen string), WEFT_ENOMEM,
 * WEFT_EWRONGTHREAD, or a libuv bind/listen error (UV_EADDRINUSE ...). */
WEFT_EXTERN int weft_metrics_http_start(weft_ctx_t *ctx, const weft_metrics_http_options_t *opts,
                                        weft_metrics_http_t **out);
/* weft_metrics_http_port: the TCP port it listens on. */
WEFT_EXTERN int weft_metrics_http_port(const weft_metrics_http_t *h);
/* weft_metrics_http_close: closes the listener and every connection; cb
 * (may be NULL) is called with data once everything is closed and h freed.
 * Non-blocking. Returns 0 or WEFT_EINVAL. Call once. */
WEFT_EXTERN int weft_metrics_http_close(weft_metrics_http_t *h, weft_metrics_http_close_cb cb,
                                        void *data);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_METRICS_HTTP_H */
