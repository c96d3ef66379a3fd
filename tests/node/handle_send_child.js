// handle_send_child.js: a socket passed Node -> weft (test_node_interop.c,
// handle_node_to_weft).
//
// A server on 127.0.0.1:0 accepts one connection from our own client and
// sends the accepted socket to the weft parent (NODE_HANDLE, type net.Socket,
// with a key). weft writes "ping" on it; the client answers "pong" and ends.
// Then server.getConnections() and server.close() ask the weft side about the
// sockets it got (NODE_SOCKET_GET_COUNT / NODE_SOCKET_NOTIFY_CLOSE): both
// callbacks run only because weft answers. Last: {tag:'done', got, count},
// then disconnect.
'use strict';
const net = require('net');

const server = net.createServer((sock) => {
  process.send({ tag: 'sock', port: server.address().port }, sock);
});

server.listen(0, '127.0.0.1', () => {
  const client = net.connect(server.address().port, '127.0.0.1');
  let got = '';
  client.setEncoding('utf8');
  client.on('data', (d) => {
    got += d;
    if (got === 'ping')
      client.end('pong');
  });
  client.on('close', () => {
    server.getConnections((err, count) => {
      server.close(() => {
        process.send({ tag: 'done', got, count, err: err ? String(err) : null },
                     () => process.disconnect());
      });
    });
  });
});
