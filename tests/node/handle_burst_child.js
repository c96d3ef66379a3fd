// handle_burst_child.js: a handle sent to us while the weft side has stopped
// reading (test_node_interop.c, handle_while_reader_paused). Usage: <count>.
//
// At once it sends <count> records {seq}: more than the weft parent's port
// holds, so the weft side stops reading the channel until its port drains.
// Then it prints "sent" on stdout: the records are in the channel by then
// (process.send writes at once while nothing is queued), and the weft side
// starts its port only when it reads that line.
// The weft parent answers the first record with a socket (NODE_HANDLE); we
// ACK it (Node does), write "pong" on it, and report {tag:'got-handle', type}.
// The weft side can only send anything after the handle once it has read our
// ACK. {op:'bye'} disconnects.
// With a second argument 'leave' it disconnects once the records are written
// (eof_behind_waiting_messages): the handle then finds nobody, and the weft
// side reads our EOF while records still wait for room at its port.
'use strict';
const net = require('net');

const count = Number(process.argv[2]);
process.on('message', (m, handle) => {
  if (m && m.op === 'bye') {
    process.disconnect();
    return;
  }
  if (handle) {
    const s = new net.Socket({ handle, readable: true, writable: true });
    s.on('error', () => {});
    s.end('pong');
    process.send({ tag: 'got-handle', type: handle.constructor.name });
  }
});
const leave = process.argv[3] === 'leave';
for (let seq = 0; seq < count; seq++) {
  if (leave && seq === count - 1)
    process.send({ seq }, () => { console.log('sent'); process.disconnect(); });
  else
    process.send({ seq });
}
if (!leave)
  console.log('sent');
