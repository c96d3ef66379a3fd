'use strict';
// child_transfer.js: Node.js peer of `weft-bench child_transfer`: 16 MiB
// Buffers sent to a child_process.fork() child with the 'advanced'
// serialization (Node cannot move memory to another process: it serializes
// the bytes), at most 3 in flight; the child answers each. us per message.
const { fork } = require('child_process');
const { parseArgs, emit, nowNs, repeat } = require('./common');

const SIZE = 16 << 20;
const WINDOW = 3;

function childMain() {
  process.on('message', (m) => process.send({ ok: m.length === SIZE }));
  process.send({ ready: true });
}

function once(n, rep) {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--child'], { serialization: 'advanced' });
    let sent = 0, done = 0, inflight = 0, t0 = 0n, bad = 0;
    const send = () => {
      while (inflight < WINDOW && sent < n) {
        c.send(Buffer.allocUnsafe(SIZE));
        sent++;
        inflight++;
      }
    };
    c.on('message', (m) => {
      if (m.ready) { t0 = nowNs(); send(); return; }
      inflight--;
      if (!m.ok) bad++;
      if (++done === n) {
        const us = Number(nowNs() - t0) / 1e3 / n;
        c.disconnect();
        if (bad) reject(new Error(`${bad} bad buffers`));
        emit('child_transfer', rep, { size_mib: 16, us_per_msg: +us.toFixed(2), n });
        resolve();
      } else send();
    });
    c.on('error', reject);
  });
}

if (process.argv.includes('--child')) childMain();
else {
  const args = parseArgs();
  repeat(args, (rep) => once(args.n || 100, rep));
}
