// net/io.ts: the hot path's socket I/O on Node's stream handles (and on net.Socket streams), as
// the relay uses it: bytes read from one socket written to another, with the destination too
// slow to take them, so writes go asynchronous, the source pauses, and its read buffer is lent
// to a write in flight. Whatever goes through must arrive byte for byte, in order, in bounded
// memory, over TCP and TLS, from a socket's own read buffer and from the buffer clients share.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { after, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Io, ioMode, probeHandles, type IoOwner } from '../../src/net/io.js';

// Collections during the relay: memory a write still points into must not be collected.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const PSK = Buffer.alloc(32, 3);
const PSK_OPTIONS = { ciphers: 'PSK-AES128-GCM-SHA256', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;

/** A connected pair over loopback; TLS with a pre-shared key (no certificate needed). */
async function pair(overTls: boolean): Promise<[net.Socket, net.Socket]> {
  const server = overTls ? tls.createServer({ ...PSK_OPTIONS, pskCallback: () => PSK }) : net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once(overTls ? 'secureConnection' : 'connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const client = overTls
    ? tls.connect({ port, host: '127.0.0.1', ...PSK_OPTIONS, pskCallback: () => ({ psk: PSK, identity: 'test' }), checkServerIdentity: () => undefined })
    : net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once(overTls ? 'secureConnect' : 'connect', () => resolve()));
  const other = await accepted;
  server.close();
  for (const s of [client, other]) s.on('error', () => undefined);
  return [client, other];
}

/** Deterministic bytes that differ at every offset, so a lost, doubled or stale chunk shows. */
function payload(size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = 12345;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface RelayRun {
  got: Buffer;
  /** The source was paused at least once (backpressure reached it). */
  paused: boolean;
  /** Most bytes the destination Io held at once, not yet with the kernel. */
  maxQueued: number;
}

/**
 * producer → [src Io | dst Io] → consumer: the relay in the middle writes what src reads to dst
 * (straight from src's read buffer, or copied when src reads into the shared buffer), pausing src
 * when dst says so. The consumer reads nothing for a while, then slowly.
 */
async function relayThrough(srcTls: boolean, dstTls: boolean, shared: boolean, data: Buffer): Promise<RelayRun> {
  const [producer, srcSock] = await pair(srcTls);
  const [dstSock, consumer] = await pair(dstTls);
  const run: RelayRun = { got: Buffer.alloc(0), paused: false, maxQueued: 0 };
  let src: Io | null = null;
  let dst: Io | null = null;
  const srcOwner: IoOwner = {
    onData(chunk) {
      let ok: boolean;
      if (shared) {
        dst!.append(chunk, 0, chunk.length);
        ok = dst!.flush();
      } else ok = dst!.write(chunk, src);
      run.maxQueued = Math.max(run.maxQueued, dst!.unsentBytes);
      if (!ok) {
        src!.pause();
        run.paused = true;
      }
    },
    onWritable: () => undefined,
  };
  const dstOwner: IoOwner = { onData: () => undefined, onWritable: () => src!.resume() };
  src = Io.attach(srcSock, srcOwner, shared, []);
  dst = Io.attach(dstSock, dstOwner, false, []);

  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    let n = 0;
    consumer.on('data', (c: Buffer) => {
      chunks.push(c);
      n += c.length;
      if (n >= data.length) resolve();
    });
  });
  consumer.pause();
  for (let off = 0; off < data.length; off += 100_000) {
    if (!producer.write(data.subarray(off, off + 100_000))) await new Promise((r) => producer.once('drain', r));
  }
  // A slow reader: nothing for a while, then a little at a time.
  await new Promise((r) => setTimeout(r, 300));
  const slow = setInterval(() => {
    gc();
    consumer.resume();
    setTimeout(() => consumer.pause(), 2);
  }, 10);
  await done;
  clearInterval(slow);
  run.got = Buffer.concat(chunks);
  for (const s of [producer, consumer]) s.destroy();
  src.destroy();
  dst.destroy();
  return run;
}

const SIZE = 6 * 1024 * 1024;
const DATA = payload(SIZE);

for (const mode of ['handles', 'streams'] as const) {
  describe(`Io on ${mode}`, () => {
    it(`probes: ${mode === 'handles' ? 'stream handles behave as the relay needs on this Node' : 'PGPOOL_RELAY=streams forces the public API'}`, async () => {
      const why = await probeHandles(mode === 'streams');
      if (mode === 'handles') assert.equal(why, null);
      else assert.equal(why, 'PGPOOL_RELAY=streams');
      assert.equal(ioMode(), mode);
    });

    for (const [srcTls, dstTls, shared] of [
      [false, false, false],
      [false, false, true],
      [true, false, false],
      [false, true, false],
      [true, true, true],
    ] as const) {
      const name = `${srcTls ? 'TLS' : 'TCP'} → ${dstTls ? 'TLS' : 'TCP'}${shared ? ', from the shared read buffer' : ''}`;
      it(`${name}: a slow reader gets every byte in order, the source pauses, the relay holds little`, async () => {
        const run = await relayThrough(srcTls, dstTls, shared, DATA);
        assert.equal(run.got.length, SIZE);
        assert.equal(sha(run.got), sha(DATA), 'the bytes that arrived differ from those sent');
        assert.ok(run.paused, 'the source was never paused');
        assert.ok(run.maxQueued <= 512 * 1024, `the relay held ${run.maxQueued} bytes at once`);
      });
    }

    it('writes made with net.Socket before the takeover go first, then the Io’s, in order', async () => {
      const [a, b] = await pair(true);
      const got: Buffer[] = [];
      b.on('data', (c: Buffer) => got.push(c));
      // A TLS write completes on a later turn: it is still under way when the Io takes over.
      a.write('before;');
      const io = Io.attach(a, { onData: () => undefined, onWritable: () => undefined }, false, []);
      io.write(Buffer.from('after;'), null);
      io.append(Buffer.from('xx appended;'), 3, 12);
      io.flush();
      await new Promise<void>((resolve) => {
        const check = () => (Buffer.concat(got).length >= 22 ? resolve() : setTimeout(check, 5));
        check();
      });
      assert.equal(Buffer.concat(got).toString(), 'before;after;appended;');
      io.destroy();
      b.destroy();
    });

    it('hands the owner what net.Socket had read and kept, after the leading bytes, then the rest', async () => {
      const [a, b] = await pair(false);
      b.pause();
      a.write('kept by net.Socket;');
      await new Promise((r) => setTimeout(r, 50));
      const seen: string[] = [];
      const owner: IoOwner = { onData: (c) => void seen.push(c.toString()), onWritable: () => undefined };
      const io = Io.attach(b, owner, true, [Buffer.from('leading;')]);
      a.write('read by the Io;');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(seen.join(''), 'leading;kept by net.Socket;read by the Io;');
      io.destroy();
      a.destroy();
    });

    it('end() writes what is queued, then closes; the peer sees EOF after every byte', async () => {
      const [a, b] = await pair(true);
      const io = Io.attach(a, { onData: () => undefined, onWritable: () => undefined }, false, []);
      const big = payload(300_000);
      io.write(big.subarray(0, 100_000), null);
      io.append(big, 100_000, 300_000);
      io.end();
      const got: Buffer[] = [];
      await new Promise<void>((resolve) => {
        b.on('data', (c: Buffer) => got.push(c));
        b.on('end', resolve);
        b.on('close', resolve);
      });
      assert.equal(sha(Buffer.concat(got)), sha(big));
      b.destroy();
    });

    it('a peer that closes is seen as the socket closing (EOF through the handle)', async () => {
      const [a, b] = await pair(false);
      Io.attach(b, { onData: () => undefined, onWritable: () => undefined }, true, []);
      const closed = new Promise<void>((resolve) => b.once('close', () => resolve()));
      a.end();
      await closed;
    });
  });
}

after(() => probeHandles(false));
