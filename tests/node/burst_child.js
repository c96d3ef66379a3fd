// burst_child.js: coalesced and split reads (test_node_interop.c, burst).
//
// Usage (argv): <count> <repeat>. In one synchronous loop it sends <count>
// records {seq, pad} (many lines reach the weft parent in one read), then one
// long string of <repeat> times "é€𝄞" (2-, 3- and 4-byte UTF-8, 9 bytes a
// period, so reads cut characters) followed by "end", then {done: count},
// then disconnects. It never waits for the parent: Node queues the writes.
'use strict';
const count = Number(process.argv[2]);
const repeat = Number(process.argv[3]);
for (let seq = 0; seq < count; seq++)
  process.send({ seq, pad: 'x'.repeat(seq % 61) });
process.send({ long: 'é€𝄞'.repeat(repeat) + 'end' });
process.send({ done: count }, () => process.disconnect());
