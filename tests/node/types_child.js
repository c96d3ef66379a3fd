// types_child.js: the value mapping between weft and Node's 'json' IPC, both
// ways (test_node_interop.c, types_both_ways).
//
// Started by a weft parent with a WEFT_CHANNEL_NODE channel. At once it sends
// a record of every JSON type, then a few top-level values. It checks the one
// record weft sends (opts.msg, the channel's first message) against what the
// C side built, answers {ok} or {ok:false, why}, and disconnects: the weft
// port then closes with WEFT_ECLOSED, and this process exits 0.
'use strict';
const assert = require('assert');

// Newlines, CR, tab, quotes, backslash, a control character, 2-, 3- and
// 4-byte UTF-8 (the C side spells the same bytes).
const TEXT = 'line1\nline2\r\n\t"quoted" \\ back \u0001 é 日本語 🎉';

const fromWeft = {
  i: -42,
  u: 42,
  max_safe: Number.MAX_SAFE_INTEGER,
  neg_safe: -Number.MAX_SAFE_INTEGER,
  f: 0.1,
  half: -2.5,
  huge: 1.7976931348623157e308,
  whole: 3,
  s: TEXT,
  empty: '',
  n: null,
  t: true,
  fa: false,
  arr: [1, 'two', [3, { four: 4 }], []],
  m: { a: { b: { c: {} } } },
  bin: { type: 'Buffer', data: [0, 1, 127, 128, 255] },
  ebin: { type: 'Buffer', data: [] },
};

process.on('message', (m) => {
  let reply;
  try {
    assert.deepStrictEqual(m, fromWeft);
    reply = { ok: true };
  } catch (e) {
    reply = { ok: false, why: String(e.message).slice(0, 4000) };
  }
  process.send(reply, () => process.disconnect());
});

process.send({
  i: -42,
  max_safe: Number.MAX_SAFE_INTEGER,
  f: 0.1,
  whole: 3.0,
  s: TEXT,
  empty: '',
  n: null,
  t: true,
  fa: false,
  arr: [1, 'two', [3, { four: 4 }], []],
  m: { a: { b: { c: {} } } },
  buf: Buffer.from([0, 1, 127, 128, 255]),
  nan: NaN,
  inf: -Infinity,
  date: new Date(0),
  undef: undefined,
  fn() {},
});
process.send({ big: 1e20, small: 2 });
process.send('plain string');
process.send(42);
process.send(null);
process.send(true);
process.send([1, [2, [3]]]);
