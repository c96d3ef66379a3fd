/* main.c: a program outside the weft tree, built against an installed weft
 * (find_package or pkg-config, with strict -std=c11 and no flags of its own).
 * It proves the installed headers compile on their own and the installed
 * library links and runs: a message goes through a channel and is read back
 * with the msgpack view (so <msgpack.h> is found through weft's own flags). */
#include <stdio.h>
#include <string.h>

#include <weft.h>

int main(void) {
  const char *version = weft_version_string();
  const char *closed = weft_strerror(WEFT_ECLOSED);
  if (version == NULL || closed == NULL || strlen(closed) == 0)
    return 1;
  weft_runtime_t *rt;
  weft_port_t *p[2];
  weft_msg_t *m, *got;
  const msgpack_object *view;
  if (weft_runtime_new(&rt, NULL) != 0 || weft_channel_new(weft_runtime_main(rt), p) != 0 ||
      weft_msg_new(&m) != 0 || weft_msg_put_u64(m, NULL, 42) != 0 || weft_port_post(p[0], m) != 0 ||
      weft_port_receive(p[1], &got) != 0 || weft_msg_view(got, &view) != 0 ||
      view->type != MSGPACK_OBJECT_POSITIVE_INTEGER || view->via.u64 != 42)
    return 2;
  weft_msg_free(got);
  weft_port_close(p[0]);
  weft_port_close(p[1]);
  if (weft_runtime_run(rt) != 0 || weft_runtime_free(rt) != 0)
    return 3;
  printf("weft version: %s\n", version);
  printf("WEFT_ECLOSED: %s\n", closed);
  printf("a message went through a channel and back\n");
  return 0;
}
