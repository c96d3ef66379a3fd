// huge_child.js: a message longer than the weft parent accepts
// (test_node_interop.c, oversized_line). Usage (argv): <bytes>.
//
// Sends {hello: 1} (delivered), then a valid line of about <bytes> bytes: the
// weft parent closes the channel with WEFT_EFRAMESIZE. Node sees the channel
// go and this script exits 0.
'use strict';
const bytes = Number(process.argv[2]);
process.on('disconnect', () => process.exit(0));
process.send({ hello: 1 });
process.send({ big: 'x'.repeat(bytes) });
