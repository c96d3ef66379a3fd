'use strict';
// child_oneway.js: Node.js peer of `weft-bench child_oneway`: the parent
// sends N records {seq, tag} to a child_process.fork() child over the IPC
// channel; the child checks the order and answers when it has all of them.
// msgs/s, with both of Node's serializations ('json' and 'advanced').
// Node's send() never refuses: the parent keeps sending while send() returns
// true and waits for its callback when it returns false, so its queue stays
// bounded like weft's.
const { fork } = require('child_process');
const { parseArgs, emit, nowNs, repeat } = require('./common');

function childMain() {
  let n = 0, next = 0, bad = 0;
  process.on('message', (m) => {
    if (m.n !== undefined) { n = m.n; process.send({ op: 'ready' }); return; }
    if (m.seq !== next || typeof m.tag !== 'string') bad++;
    if (++next === n) process.send({ op: 'done', count: next, bad });
  });
}

function run(n, serialization) {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--child'], { serialization });
    let t0;
    let i = 0;
    const pump = () => {
      while (i < n) {
        const ok = c.send({ seq: i, tag: 'hello' });
        i++;
        if (!ok) { setImmediate(pump); return; }
      }
    };
    c.on('message', (m) => {
      if (m.op === 'ready') { t0 = nowNs(); pump(); return; }
      const secs = Number(nowNs() - t0) / 1e9;
      c.disconnect();
      if (m.count !== n || m.bad) reject(new Error(`child saw ${m.count}, bad ${m.bad}`));
      else resolve(n / secs);
    });
    c.on('error', reject);
    c.send({ n });
  });
}

async function once(n, rep) {
  for (const s of ['json', 'advanced']) {
    const rate = await run(n, s);
    emit('child_oneway', rep, { serialization: s, msgs_per_s: Math.round(rate), n });
  }
}

if (process.argv.includes('--child')) childMain();
else {
  const args = parseArgs();
  repeat(args, (rep) => once(args.n || 300000, rep));
}
