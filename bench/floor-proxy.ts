// Node's floor: the least a Node proxy can spend per byte it relays. One server connection per
// client, bytes passed both ways on Node's stream handles (a static read buffer per connection,
// `useUserBuffer`/`onread`, `writeBuffer`), no stream machinery, no parsing, no pooling. With
// --tls it terminates TLS on both sides as a pooler does (SSLRequest answered with 'S' to the
// client, SSLRequest + verify-full TLS to PostgreSQL), so its cost is what Node's TLS costs.
// Whatever pgpool-ts spends beyond this is its own work.
//   node dist/bench/floor-proxy.js LISTEN_PORT TARGET_HOST TARGET_PORT [--tls CERT KEY CA]
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

// The handle types only (nothing of pgpool-ts runs here).
import type { StreamHandle, StreamWrapBinding, WriteReq } from '../src/net/io.js';

const [listenPort, targetHost, targetPort, tlsFlag, certFile, keyFile, caFile] = process.argv.slice(2);
if (listenPort === undefined || targetHost === undefined || targetPort === undefined || (tlsFlag !== undefined && caFile === undefined)) {
  process.stderr.write('usage: floor-proxy LISTEN_PORT TARGET_HOST TARGET_PORT [--tls CERT KEY CA]\n');
  process.exit(2);
}
const wrap = (process as unknown as { binding(name: string): StreamWrapBinding }).binding('stream_wrap');
const { WriteWrap, streamBaseState: state, kReadBytesOrError, kLastWriteWasAsync } = wrap;
const serverCtx = tlsFlag === undefined ? null : tls.createSecureContext({ cert: fs.readFileSync(certFile!), key: fs.readFileSync(keyFile!) });
const ca = tlsFlag === undefined ? null : fs.readFileSync(caFile!);
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const BUF_SIZE = 65536;
/** Past this much queued behind a write in flight, the source stops reading. */
const HIGH_WATER = 65536;

/** One socket of a pair on its handle: its read buffer, its write in flight and what waits behind. */
class End {
  peer!: End;
  readonly handle: StreamHandle;
  buf = Buffer.allocUnsafe(BUF_SIZE);
  /** Views [0, n) of `buf`, so a write of the n bytes read allocates nothing. */
  views: Buffer[] = [];
  /** Two write requests, alternating after a write that went asynchronous: a request is busy
   * until just after its oncomplete returns, and the next write may be issued from inside it. */
  private readonly reqs: (WriteReq | null)[] = [null, null];
  private reqIndex = 0;
  inFlight = false;
  pending: Buffer | null = null;
  pendLen = 0;
  paused = false;
  closed = false;

  constructor(
    readonly socket: net.Socket,
    readonly tls: boolean,
  ) {
    this.handle = (socket as unknown as { _handle: StreamHandle })._handle;
  }

  start(): void {
    const leftover = this.socket.read() as Buffer | null;
    this.socket.pause();
    this.socket.on('close', () => this.close());
    this.socket.on('error', () => this.close());
    this.handle.onread = this.onread;
    this.handle.useUserBuffer(this.buf);
    this.handle.reading = true;
    this.handle.readStart();
    if (leftover !== null) this.peer.send(leftover, leftover.length, false);
  }

  view(n: number): Buffer {
    return (this.views[n] ??= this.buf.subarray(0, n));
  }

  readonly onread = (): Buffer | undefined => {
    const n = state[kReadBytesOrError]!;
    if (n < 0) {
      this.close();
      return undefined;
    }
    if (n === 0 || this.closed) return undefined;
    if (this.peer.send(this.view(n), n, true)) return undefined;
    // The write went on asynchronously from our buffer: read into a new one from now on.
    this.buf = Buffer.allocUnsafe(BUF_SIZE);
    this.views = [];
    this.pause();
    return this.buf;
  };

  /** Write `n` bytes of `data`; true unless the write holds on to `data` (a TCP write that went
   * asynchronous: the source must read into another buffer). */
  send(data: Buffer, n: number, fromReadBuffer: boolean): boolean {
    if (this.closed) return true;
    if (this.inFlight) {
      this.queue(data, n);
      return true;
    }
    let req = this.reqs[this.reqIndex];
    if (req === null || req === undefined) {
      req = new WriteWrap();
      req.oncomplete = this.onWritten;
      this.reqs[this.reqIndex] = req;
    }
    if (this.handle.writeBuffer(req, data) !== 0) {
      this.close();
      return true;
    }
    if (state[kLastWriteWasAsync] === 0) return true;
    req.buffer = data;
    this.reqIndex ^= 1;
    this.inFlight = true;
    // TLS encrypts the bytes at once (SSL_write) and only finishes the write later.
    if (this.tls || !fromReadBuffer) return true;
    return false;
  }

  private queue(data: Buffer, n: number): void {
    if (this.pending === null || this.pending.length < this.pendLen + n) {
      const grown = Buffer.allocUnsafe(Math.max(BUF_SIZE, 2 * (this.pendLen + n)));
      if (this.pending !== null) this.pending.copy(grown, 0, 0, this.pendLen);
      this.pending = grown;
    }
    data.copy(this.pending, this.pendLen, 0, n);
    this.pendLen += n;
    if (this.pendLen > HIGH_WATER) this.peer.pause();
  }

  private readonly onWritten = (status: number): void => {
    this.inFlight = false;
    this.reqs[this.reqIndex ^ 1]!.buffer = null;
    if (status < 0) return this.close();
    if (this.pendLen > 0 && this.pending !== null) {
      const out = this.pending.subarray(0, this.pendLen);
      // A TCP write may go on from `pending`: never reuse it.
      this.pending = this.tls ? this.pending : null;
      this.pendLen = 0;
      this.send(out, out.length, false);
      if (this.inFlight && !this.tls) return;
    }
    this.peer.resume();
  };

  pause(): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.handle.readStop();
  }

  resume(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    this.handle.readStart();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.peer.close();
  }
}

function relay(client: net.Socket, server: net.Socket, tlsBoth: boolean): void {
  const c = new End(client, tlsBoth);
  const s = new End(server, tlsBoth);
  c.peer = s;
  s.peer = c;
  c.start();
  s.start();
}

/** The first bytes a socket sends (the SSLRequest, or the server's one-byte answer). */
function first(sock: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < n) return;
      sock.off('data', onData);
      sock.pause();
      resolve(got);
    };
    sock.on('data', onData);
    sock.once('error', reject);
    sock.once('close', () => reject(new Error('closed')));
  });
}

async function tlsPair(raw: net.Socket): Promise<void> {
  const req = await first(raw, 8);
  if (!req.equals(SSL_REQUEST)) throw new Error('expected an SSLRequest');
  raw.write('S');
  const client = new tls.TLSSocket(raw, { isServer: true, secureContext: serverCtx! });
  await new Promise<void>((resolve, reject) => {
    client.once('secure', resolve);
    client.once('error', reject);
  });
  const up = net.connect({ host: targetHost, port: Number(targetPort), noDelay: true });
  await new Promise<void>((resolve, reject) => up.once('connect', resolve).once('error', reject));
  up.write(SSL_REQUEST);
  const answer = await first(up, 1);
  if (answer[0] !== 0x53) throw new Error('server refused TLS');
  const server = tls.connect({ socket: up, ca: ca!, checkServerIdentity: (_h, cert) => tls.checkServerIdentity(targetHost!, cert) });
  await new Promise<void>((resolve, reject) => server.once('secureConnect', resolve).once('error', reject));
  relay(client, server, true);
}

const listener = net.createServer({ noDelay: true }, (client) => {
  if (serverCtx !== null) {
    tlsPair(client).catch(() => client.destroy());
    return;
  }
  const up = net.connect({ host: targetHost, port: Number(targetPort), noDelay: true });
  up.once('connect', () => relay(client, up, false));
  up.once('error', () => client.destroy());
});

listener.listen(Number(listenPort), '127.0.0.1', () => {
  process.stdout.write(`floor-proxy${serverCtx === null ? '' : ' (TLS both sides)'} listening on 127.0.0.1:${listenPort} → ${targetHost}:${targetPort}\n`);
});

process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
