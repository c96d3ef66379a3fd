/* main.c: a program outside the weft tree, built against an installed weft
 * (find_package or pkg-config). It proves the installed headers compile on
 * their own and the installed library links and runs. */
#include <stdio.h>
#include <string.h>

#include <weft.h>

int main(void) {
  const char *version = weft_version_string();
  const char *closed = weft_strerror(WEFT_ECLOSED);

  if (version == NULL || closed == NULL || strlen(closed) == 0)
    return 1;
  printf("weft version: %s\n", version);
  printf("WEFT_ECLOSED: %s\n", closed);
  printf("UV_EAGAIN: %s\n", weft_strerror(UV_EAGAIN));
  return 0;
}
