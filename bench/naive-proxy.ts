// The floor line: one server connection per client, bytes piped both ways, no parsing, no pooling.
// Whatever a pooler costs beyond this is the price of understanding the protocol.
//   node dist/bench/naive-proxy.js LISTEN_PORT TARGET_HOST TARGET_PORT
import net from 'node:net';

const [listenPort, targetHost, targetPort] = process.argv.slice(2);
if (listenPort === undefined || targetHost === undefined || targetPort === undefined) {
  process.stderr.write('usage: naive-proxy LISTEN_PORT TARGET_HOST TARGET_PORT\n');
  process.exit(2);
}

const server = net.createServer((client) => {
  const upstream = net.connect({ host: targetHost, port: Number(targetPort) });
  // Small request/response messages: Nagle would add a delayed-ACK wait to every round trip.
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  client.pipe(upstream);
  upstream.pipe(client);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', close);
});

server.listen(Number(listenPort), '127.0.0.1', () => {
  process.stdout.write(`naive-proxy listening on 127.0.0.1:${listenPort} → ${targetHost}:${targetPort}\n`);
});

process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
