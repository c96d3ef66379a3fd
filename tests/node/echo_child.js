// echo_child.js: sends every message straight back (test_node_interop.c:
// ordering, long messages both ways, the "parent keeps running" check).
//
// {op: 'bye'} is not echoed: the script disconnects instead, so the weft port
// closes with WEFT_ECLOSED and the process exits 0.
'use strict';
process.on('message', (m) => {
  if (m && m.op === 'bye') {
    process.disconnect();
    return;
  }
  process.send(m);
});
