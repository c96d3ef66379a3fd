'use strict';
// embed_equivalent.js: the Node.js program that examples/embed_libuv.c is
// compared with, line for line (README, Examples): the same TCP line
// protocol on 127.0.0.1 (primes N on a pool of 2 threads with piscina, stats
// from a stats worker over a reply MessagePort with a 1 s timeout, a 64 MiB
// ArrayBuffer transferred to that worker, a child process's output, quit),
// and the same --demo client. Not run in CI; it exists for the line count
// (non-blank, non-comment lines, as for the C file). Needs piscina
// (`npm install` in this directory). Usage: node embed_equivalent.js [--port=P] [--demo]
const net = require('net');
const { execFile } = require('child_process');
const { Worker, MessageChannel, isMainThread, parentPort, workerData } = require('worker_threads');
const Piscina = require('piscina');

if (workerData === 'stats') {
  // the stats worker
  let hits = 0;
  parentPort.on('message', ({ op, buf, port }) => {
    if (op === 'hit') hits++;
    else if (op === 'stats') port.postMessage(hits);
    else if (op === 'big') {
      const bytes = new Uint8Array(buf);
      let sum = 0;
      for (let i = 0; i < bytes.length; i++) sum += bytes[i];
      port.postMessage({ len: bytes.length, sum });
    }
    if (port) port.close();
  });
} else if (!isMainThread) {
  // the pool task (piscina runs this file's export)
  module.exports = (n) => {
    let k = 0;
    for (let i = 2; i < n; i++) {
      let d = 2;
      while (d * d <= i && i % d !== 0) d++;
      if (d * d > i) k++;
    }
    return k;
  };
} else {
  const demo = process.argv.includes('--demo');
  const portArg = process.argv.find((a) => a.startsWith('--port='));
  const pool = new Piscina({ filename: __filename, maxThreads: 2 });
  const stats = new Worker(__filename, { workerData: 'stats' });

  function request(msg, transfer = []) {
    return new Promise((resolve, reject) => {
      const { port1, port2 } = new MessageChannel();
      const timer = setTimeout(() => { port1.close(); reject(new Error('ETIMEDOUT')); }, 1000);
      port1.once('message', (reply) => { clearTimeout(timer); port1.close(); resolve(reply); });
      port1.once('close', () => { clearTimeout(timer); reject(new Error('ECLOSED')); });
      stats.postMessage({ ...msg, port: port2 }, [port2, ...transfer]);
    });
  }

  async function handle(sock, line) {
    stats.postMessage({ op: 'hit' });
    const m = /^primes (\d+)$/.exec(line);
    try {
      if (m) sock.write(`primes ${await pool.run(Number(m[1]))}\n`);
      else if (line === 'stats') sock.write(`stats ${await request({ op: 'stats' })} requests\n`);
      else if (line === 'big') {
        const buf = new ArrayBuffer(64 * 1024 * 1024);
        new Uint8Array(buf).fill(1);
        const r = await request({ op: 'big', buf }, [buf]);
        sock.write(`big ${r.len} bytes moved, sum ${r.sum}\n`);
      } else if (line === 'child') {
        execFile('echo', ['hello from a child process'], (err, out) => sock.write(`child ${out}`));
      } else if (line === 'quit') {
        server.close();
        for (const s of conns) s.destroy();
        pool.destroy();
        stats.terminate();
      }
    } catch (err) {
      sock.write(`${line.split(' ')[0]} error ${err.message}\n`);
    }
  }

  const conns = new Set();
  const server = net.createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    let have = '';
    sock.on('data', (d) => {
      have += d;
      let nl;
      while ((nl = have.indexOf('\n')) >= 0) {
        handle(sock, have.slice(0, nl));
        have = have.slice(nl + 1);
      }
    });
  });

  server.listen(demo ? 0 : Number(portArg ? portArg.slice(7) : 7070), '127.0.0.1', () => {
    const port = server.address().port;
    console.log(`listening on 127.0.0.1:${port}`);
    if (!demo) return;
    // the demo's client: one command at a time
    const lines = ['primes 200000', 'stats', 'big', 'child', 'stats'];
    let answers = 0;
    let have = '';
    const c = net.connect(port, '127.0.0.1', () => { console.log(`> ${lines[0]}`); c.write(`${lines[0]}\n`); });
    c.on('data', (d) => {
      have += d;
      let nl;
      while ((nl = have.indexOf('\n')) >= 0) {
        console.log(`< ${have.slice(0, nl)}`);
        have = have.slice(nl + 1);
        const next = ++answers < lines.length ? lines[answers] : 'quit';
        console.log(`> ${next}`);
        c.write(`${next}\n`);
        if (next === 'quit') c.end();
      }
    });
  });
}
