// node_parent.js: a Node.js program that offloads CPU work to a weft program
// (examples/node_parent.c), over Node's own child_process IPC.
//
// Usage: node node_parent.js <path of the compiled node_parent example>
//
// It spawns the weft program with an 'ipc' stdio slot (the channel Node's
// fork() uses; 'json' serialization), splits "count the primes below LIMIT"
// into CHUNKS ranges, sends them all at once, and keeps its own event loop
// free while the weft program counts. Replies come back as plain objects.
// When every range is in, it disconnects: the weft program's parent port
// closes and it exits. Exit code 0 only if the total is right and the child
// exited 0.
'use strict';
const { spawn } = require('child_process');

const LIMIT = 1000000;
const CHUNKS = 8;
const KNOWN = 78498; // primes below 1,000,000

const program = process.argv[2];
if (!program) {
  console.error('usage: node node_parent.js <weft program>');
  process.exit(2);
}

const started = Date.now();
const child = spawn(program, [], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
let total = 0;
let replies = 0;

child.on('error', (e) => {
  console.error(`[node] could not start ${program}: ${e.message}`);
  process.exit(1);
});

child.on('message', (m) => {
  total += m.primes;
  replies++;
  console.log(`[node] range ${m.id}: [${m.lo}, ${m.hi}) has ${m.primes} primes ` +
              `(counted by weft pid ${m.pid} in ${m.ms} ms)`);
  if (replies === CHUNKS) {
    console.log(`[node] ${total} primes below ${LIMIT} (expected ${KNOWN}), ` +
                `${Date.now() - started} ms; disconnecting`);
    child.disconnect();
  }
});

child.on('exit', (code, signal) => {
  console.log(`[node] weft child exited with code ${code}, signal ${signal}`);
  process.exitCode = total === KNOWN && code === 0 ? 0 : 1;
});

const step = LIMIT / CHUNKS;
for (let id = 0; id < CHUNKS; id++)
  child.send({ id, lo: id * step, hi: (id + 1) * step });
console.log(`[node] sent ${CHUNKS} ranges to weft pid ${child.pid}; the Node loop stays free`);
