// unrepresentable_child.js: one line weft cannot represent must not end the
// channel (test_node_interop.c, unrepresentable_keeps_serving).
//
// Sends, in order: ok1; a string of lone surrogates (JSON.stringify writes
// them as \udxxx escapes); arrays nested 70 deep and argv[2] deep (about the
// most this Node's JSON.stringify manages); an object with NUL in its keys.
// Then two raw lines no process.send can write: arrays nested 10000 deep
// (past weft's limit) and a malformed line; then ok2. weft echoes every
// message it got: each echo must equal what was sent (lossless round trip),
// in order, with nothing for the two raw lines. Answers {result: true} or
// {result: false, why}, then disconnects and exits 0 (no EPIPE).
'use strict';
const fs = require('fs');

function nest(n) {
  let v = [];
  for (let i = 1; i < n; i++) v = [v];
  return v;
}

const DEEP = Number(process.argv[2] || 4000);
const sent = [
  { seq: 'ok1' },
  'lead \ud800, trail \udc00, pair \ud83d\ude00, reversed \udc00\ud800, end \udbff',
  nest(70),
  nest(DEEP),
  { 'a\u0000b': 1, '\u0000': 'nul key', a: 2 },
];
const ok2 = { seq: 'ok2' };
const echoes = [];

function sendAll(i, done) {
  if (i === sent.length) return done();
  process.send(sent[i], (err) => {
    if (err) throw err;
    sendAll(i + 1, done);
  });
}

function writeRaw(line) {
  const b = Buffer.from(line + '\n');
  for (let off = 0; off < b.length;) {
    try {
      off += fs.writeSync(process.channel.fd, b, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e; // the pipe is non-blocking: try again
    }
  }
}

process.on('message', (m) => {
  echoes.push(m);
  if (echoes.length < sent.length + 1) return;
  let reply;
  // deepStrictEqual recurses past the stack at 4000 levels: compare the
  // strings exactly and the rest by their JSON (exact for these values,
  // key order included).
  const want = [...sent, ok2];
  const bad = want.findIndex((w, i) =>
    typeof w === 'string' ? echoes[i] !== w : JSON.stringify(echoes[i]) !== JSON.stringify(w));
  if (bad < 0) {
    reply = { result: true };
  } else {
    const got = JSON.stringify(echoes[bad]);
    reply = { result: false, why: `echo ${bad} differs: ${String(got).slice(0, 500)}` };
  }
  process.send(reply, () => process.disconnect());
});

// Everything sent so far has been written (the callbacks ran), so the raw
// lines land after it and before ok2.
sendAll(0, () => {
  writeRaw('['.repeat(10000) + ']'.repeat(10000));
  writeRaw('{"not json"');
  process.send(ok2);
});
