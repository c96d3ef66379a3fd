/* weft.h: the public API of weft, a microkernel-style actor runtime on libuv.
 * Include this one header. See README.md for a tour and for the guarantees
 * under hostile and dying peers; each header in weft/ states its own. */
#ifndef WEFT_H
#define WEFT_H

#include "weft/common.h"
#include "weft/error.h"
#include "weft/buf.h"
#include "weft/msg.h"
#include "weft/port.h"
#include "weft/runtime.h"
#include "weft/worker.h"
#include "weft/actor.h"
#include "weft/child.h"
#include "weft/supervisor.h"
#include "weft/balancer.h"
#include "weft/pool.h"

#endif /* WEFT_H */
