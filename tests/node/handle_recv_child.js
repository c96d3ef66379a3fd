// handle_recv_child.js: sockets passed weft -> Node (test_node_interop.c,
// handle_weft_to_node). Usage (argv): <count>.
//
// The weft parent posts, <count> times, {tag:'sock', seq:odd} with a connected
// TCP socket, then {tag:'after', seq:even}. weft sends a socket as NODE_HANDLE
// type net.Native, so Node hands us the raw TCP handle; wrapped in a net.Socket
// it gets "pong" and a FIN. Node ACKs each handle, and weft sends nothing else
// until the ACK, so the seqs must arrive in order. The report
// {order, handleTypes} says what happened.
'use strict';
const net = require('net');

const count = Number(process.argv[2]);
const order = [];
const handleTypes = new Set();
let written = 0;

process.on('message', (m, handle) => {
  order.push(m.seq);
  if (m.tag === 'sock') {
    handleTypes.add(handle ? handle.constructor.name : 'none');
    if (handle) {
      const s = new net.Socket({ handle, readable: true, writable: true });
      s.on('error', () => {});
      s.end('pong', () => { written++; maybeReport(); });
    }
  }
  maybeReport();
});

function maybeReport() {
  if (written < count || order.length < 2 * count)
    return;
  process.send({ tag: 'report', order, handleTypes: [...handleTypes] });
  written = -1;
}
