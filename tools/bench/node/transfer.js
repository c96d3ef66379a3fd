'use strict';
// transfer.js: Node.js peer of `weft-bench transfer`: the main thread moves N
// new ArrayBuffers of one size to a worker ({seq, buf} with buf in the
// transferList) and checks that its own copy is detached (byteLength 0); the
// worker checks the length. Neither side touches the bytes. us per message at
// 1, 16 and 64 MiB (or --size).
//
// The buffers come from Buffer.allocUnsafe(size).buffer: uninitialised, like
// weft_buf_new. `new ArrayBuffer(size)` would add calloc's zeroing, which on
// glibc costs about 1 ms per 16 MiB once the heap (not fresh mmap pages)
// serves the allocation.
//
// Node's postMessage never refuses, so the sender keeps at most 64 messages
// in flight, whatever their size, like the bounds weft-bench gives its port;
// the worker acknowledges every 16. A fixed window in messages keeps the
// number of sender stalls per message the same at every size.
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const { parseArgs, emit, nowNs, repeat, nextMessage } = require('./common');

const MiB = 1024 * 1024;
const WINDOW = 64; // messages in flight, whatever their size (as weft-bench)
const ACK_EVERY = WINDOW / 4;

function workerMain() {
  const { n, size } = workerData;
  let got = 0;
  let bad = 0;
  parentPort.on('message', (m) => {
    if (!(m.buf instanceof ArrayBuffer) || m.buf.byteLength !== size || m.seq !== got) bad++;
    got++;
    if (got === n) parentPort.postMessage({ op: 'done', count: got, bad });
    else if (got % ACK_EVERY === 0) parentPort.postMessage({ op: 'ack', count: got });
  });
  parentPort.postMessage({ op: 'ready' });
}

function stream(w, n, size) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let acked = 0;
    let notDetached = 0;
    const pump = () => {
      while (sent < n && sent - acked < WINDOW) {
        const buf = Buffer.allocUnsafe(size).buffer;
        w.postMessage({ seq: sent, buf }, [buf]);
        if (buf.byteLength !== 0) notDetached++;
        sent++;
      }
    };
    w.on('error', reject);
    w.on('message', (m) => {
      if (m.op === 'ack') {
        acked = m.count;
        pump();
      } else if (m.op === 'done') {
        resolve({ count: m.count, bad: m.bad + notDetached });
      }
    });
    pump();
  });
}

async function once(n, size, rep) {
  const w = new Worker(__filename, { workerData: { n, size } });
  await nextMessage(w);
  const t0 = nowNs();
  const d = await stream(w, n, size);
  const us = Number(nowNs() - t0) / 1e3;
  if (d.count !== n || d.bad !== 0) throw new Error(`transfer: worker saw ${d.count}, bad ${d.bad}`);
  emit('transfer', rep, { size_mib: size / MiB, alloc: 'new', us_per_msg: +(us / n).toFixed(3), n });
  await w.terminate();
}

if (isMainThread) {
  const args = parseArgs();
  const sizes = args.size ? [args.size] : [1 * MiB, 16 * MiB, 64 * MiB];
  repeat(args, async (rep) => {
    for (const size of sizes) await once(args.n || 1000, size, rep);
  });
} else {
  workerMain();
}
