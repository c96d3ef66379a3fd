/* metrics_main.c: a program outside the weft tree that links the installed
 * metrics endpoint (weft::weft_metrics_http) next to weft: it listens on any
 * port of 127.0.0.1, closes, and prints the version like main.c. */
#include <stdio.h>

#include <weft.h>
#include <weft/metrics_http.h>

int main(void) {
  weft_runtime_t *rt;
  weft_metrics_http_t *h;
  if (weft_runtime_new(&rt, NULL) != 0)
    return 1;
  if (weft_metrics_http_start(weft_runtime_main(rt), NULL, &h) != 0)
    return 2;
  if (weft_metrics_http_port(h) <= 0 || weft_metrics_http_close(h, NULL, NULL) != 0)
    return 3;
  if (weft_runtime_run(rt) != 0 || weft_runtime_free(rt) != 0)
    return 4;
  printf("weft version: %s\n", weft_version_string());
  return 0;
}
