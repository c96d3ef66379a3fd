'use strict';
// common.js: what the Node.js peers of weft-bench share: the command line
// (--n N, --repeat R, --size BYTES; N may end in k or M) and the JSON line
// printed per result: {"shape":...,"impl":"node","rep":...,...}.

function parseCount(s) {
  const m = /^(\d+)([kKM]?)$/.exec(s);
  if (!m) throw new Error(`bad number: ${s}`);
  const mul = m[2] === 'M' ? 1e6 : m[2] ? 1e3 : 1;
  return Number(m[1]) * mul;
}

function parseArgs(argv = process.argv.slice(2)) {
  const args = { n: 0, repeat: 1, size: 0 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) throw new Error(`usage: --n N --repeat R --size BYTES`);
    args[key] = parseCount(argv[++i]);
  }
  return args;
}

function emit(shape, rep, fields) {
  process.stdout.write(JSON.stringify({ shape, impl: 'node', rep, ...fields }) + '\n');
}

function nowNs() {
  return process.hrtime.bigint();
}

function usSince(t0) {
  return Number(process.hrtime.bigint() - t0) / 1e3;
}

function percentile(values, p) {
  if (values.length === 0) return 0;
  const v = Float64Array.from(values).sort();
  const i = Math.round((p / 100) * (v.length - 1));
  return v[Math.min(i, v.length - 1)];
}

// Runs once(rep) for each repetition, one after the other; exits 1 on error.
async function repeat(args, once) {
  try {
    for (let rep = 0; rep < args.repeat; rep++) await once(rep);
  } catch (err) {
    console.error(err);
    process.exitCode = 1;
  }
}

// Resolves with the next 'message' of w (or rejects on 'error').
function nextMessage(w) {
  return new Promise((resolve, reject) => {
    const onError = (e) => reject(e);
    w.once('error', onError);
    w.once('message', (m) => {
      w.off('error', onError);
      resolve(m);
    });
  });
}

module.exports = { parseArgs, emit, nowNs, usSince, percentile, repeat, nextMessage };
