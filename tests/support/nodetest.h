/* nodetest.h: the node transport a node test runs on. ctest runs some node
 * tests twice: as themselves (the default transport: the node's loop) and
 * as <name>_nng with WEFT_TEST_NODE_TRANSPORT=nng in the environment
 * (tests/CMakeLists.txt), so the guarantees they check hold for both. */
#ifndef WEFT_NODETEST_H
#define WEFT_NODETEST_H

#include <stdlib.h>
#include <string.h>

#include <weft.h>

static inline weft_node_transport_t nodetest_transport(void) {
  const char *t = getenv("WEFT_TEST_NODE_TRANSPORT");
  return t != NULL && strcmp(t, "nng") == 0 ? WEFT_NODE_TRANSPORT_NNG
                                            : WEFT_NODE_TRANSPORT_DEFAULT;
}

static inline const char *nodetest_transport_name(void) {
  return nodetest_transport() == WEFT_NODE_TRANSPORT_NNG ? "nng" : "loop";
}

#endif /* WEFT_NODETEST_H */
