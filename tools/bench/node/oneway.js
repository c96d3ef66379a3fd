'use strict';
// oneway.js: Node.js peer of `weft-bench oneway`: the main thread posts N
// records {seq, tag} to a worker (worker.postMessage, i.e. the worker's
// parentPort MessagePort); the worker reads both fields back and checks the
// order. msgs/s from the worker's 'ready' to its 'done'. Node's postMessage
// never refuses, so the sender simply posts all N in one loop.
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const { parseArgs, emit, nowNs, repeat, nextMessage } = require('./common');

const TAG = 'hello';

function workerMain() {
  const n = workerData.n;
  let next = 0;
  let bad = 0;
  parentPort.on('message', (m) => {
    if (m.seq !== next || typeof m.tag !== 'string' || m.tag.length !== TAG.length) bad++;
    if (++next === n) parentPort.postMessage({ op: 'done', count: next, bad });
  });
  parentPort.postMessage({ op: 'ready' });
}

async function once(n, rep) {
  const w = new Worker(__filename, { workerData: { n } });
  await nextMessage(w);
  const done = nextMessage(w);
  const t0 = nowNs();
  for (let i = 0; i < n; i++) w.postMessage({ seq: i, tag: TAG });
  const d = await done;
  const secs = Number(nowNs() - t0) / 1e9;
  if (d.count !== n || d.bad !== 0) throw new Error(`oneway: worker saw ${d.count}, bad ${d.bad}`);
  emit('oneway', rep, { msgs_per_s: Math.round(n / secs), n });
  await w.terminate();
}

if (isMainThread) {
  const args = parseArgs();
  repeat(args, (rep) => once(args.n || 1000000, rep));
} else {
  workerMain();
}
