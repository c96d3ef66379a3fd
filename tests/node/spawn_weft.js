// spawn_weft.js: Node as the parent of a weft program (test_node_interop.c,
// node_parent_weft_child).
//
// Usage: node spawn_weft.js <weft program> [args...]
// Spawns the program with an 'ipc' stdio slot (fd 3, 'json' serialization),
// sends it N records and checks every reply: the same record plus
// echoed_by: 'weft', in order, after one {ready} message. Then it passes the
// child a TCP socket (accepted from its own client), on which the child writes
// "hello from weft"; server.close() completes only if the child answers
// NODE_SOCKET_NOTIFY_CLOSE. Then it disconnects and waits for the child to
// exit 0. Prints "spawn_weft: ok ..." and exits 0 only if every check passed.
'use strict';
const assert = require('assert');
const net = require('net');
const { spawn } = require('child_process');

const N = 1000;
const [program, ...args] = process.argv.slice(2);

function record(i) {
  return {
    seq: i,
    text: `é€𝄞 line\n${i}`,
    nested: { list: [i, i * 0.5, null, true, 'x'], bytes: Buffer.from([i & 255, 0, 255]) },
  };
}

// What comes back: JSON's view of the record (a Buffer arrives as its
// toJSON() form), plus the field the weft child adds.
function expected(i) {
  return { ...JSON.parse(JSON.stringify(record(i))), echoed_by: 'weft' };
}

function fail(why) {
  console.error(`spawn_weft: FAIL ${why}`);
  process.exit(1);
}

const child = spawn(program, args, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
let ready = false;
let next = 0;
let socketOk = false;

child.on('error', (e) => fail(`spawn: ${e.message}`));
child.on('message', (m) => {
  if (!ready) {
    try {
      assert.deepStrictEqual(m, { ready: true, pid: child.pid });
    } catch (e) {
      fail(`first message: ${e.message}`);
    }
    ready = true;
    return;
  }
  try {
    assert.deepStrictEqual(m, expected(next));
  } catch (e) {
    fail(`reply ${next}: ${e.message}`);
  }
  if (++next === N)
    socketPhase();
});

function socketPhase() {
  const server = net.createServer((sock) => child.send({ tag: 'sock' }, sock));
  server.listen(0, '127.0.0.1', () => {
    const client = net.connect(server.address().port, '127.0.0.1');
    let got = '';
    client.setEncoding('utf8');
    client.on('data', (d) => {
      got += d;
      if (got !== 'hello from weft')
        return;
      socketOk = true;
      client.destroy();
      server.close(() => child.disconnect());
    });
  });
}
child.on('exit', (code, signal) => {
  if (next !== N || !socketOk)
    fail(`child exited (code ${code}, signal ${signal}) after ${next} of ${N} replies, ` +
         `socket ${socketOk ? 'ok' : 'not served'}`);
  if (code !== 0)
    fail(`child exit code ${code}, signal ${signal}`);
  console.log(`spawn_weft: ok ${N} replies in order, socket served, child exited 0`);
});

for (let i = 0; i < N; i++)
  child.send(record(i));
