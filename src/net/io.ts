// The hot path's socket I/O: reads into a static buffer and writes from it on Node's stream handles,
// or, where those are missing or misbehave, on net.Socket's public stream API.
//
// Node's own `net.Socket` allocates a Buffer per read, goes through Readable/Writable for every
// chunk and schedules a callback per write. Its handle (a TCPWrap, or a TLSSocket's TLSWrap, both
// StreamBase objects) does the work underneath: `useUserBuffer(buf)` + `onread` read into one
// buffer of ours and call us with the byte count in `streamBaseState[kReadBytesOrError]`;
// `writeBuffer(req, buf)` writes, and `streamBaseState[kLastWriteWasAsync]` says whether it
// finished there (then nothing is held) or goes on, calling `req.oncomplete(status)` at the end.
// The rules we rely on, checked by `probeHandles()` before any client is accepted:
//  - A TCP write that goes on asynchronously keeps pointing into the buffer it was given: that
//    memory is lent until oncomplete. A socket reading into its own buffer then reads into a fresh
//    one (the value `onread` returns becomes the next read buffer); client sockets read into one
//    buffer shared by all of them, so their bytes are never written from it to a TCP socket but
//    copied into the destination's `out` first (a request is small; the copy allocates nothing).
//  - A TLSWrap encrypts a write at once (SSL_write copies it) and reports every write as
//    asynchronous, completing it on a later turn of the loop; a second write before that
//    completion aborts the process (`CHECK(!current_write_)`). So a TLS socket never holds our
//    buffer, but has at most one write in flight, and bytes for it queue in `out` meanwhile.
//  - The handle keeps only a pointer into what it writes: until oncomplete, the Buffer of an
//    unfinished write is held on its request (`req.buffer`, as Node's own writes do).
//  - A write request object is busy from an asynchronous write until just after its oncomplete
//    returns: each socket alternates two of them.
//  - After `readStop` a TLSWrap still delivers what it already decrypted in that read; TCP stops.
//    Reads after a pause are handed on like any other: the destination queues them.
//  - EOF and read errors arrive as a negative count; the socket is then closed through net.Socket,
//    whose 'close' event the connection already handles.
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { getSystemErrorName } from 'node:util';

/** What a connection does with its socket's bytes. */
export interface IoOwner {
  /** Bytes read. With handles they live in a buffer read into again after this call: whatever
   * must outlive it is copied. */
  onData(chunk: Buffer): void;
  /** A write returned false earlier (the socket was full); everything has left now: resume the
   * sources that were paused for it. */
  onWritable(): void;
}

export type IoMode = 'handles' | 'streams';

/** A StreamBase handle as net.Socket holds it (`_handle`): TCPWrap, PipeWrap, TLSWrap. */
export interface StreamHandle {
  onread: () => Buffer | undefined;
  useUserBuffer(buf: Buffer): void;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, buf: Buffer): number;
  reading: boolean;
}

/** A WriteWrap of process.binding('stream_wrap'). */
export interface WriteReq {
  oncomplete: (status: number) => void;
  /** Keeps the memory of an unfinished write alive: the handle holds only a pointer into it. */
  buffer: Buffer | null;
}

/** What process.binding('stream_wrap') gives (the parts the relay uses). */
export interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}

/** Past this many bytes waiting behind a write in flight, a write returns false. */
const HIGH_WATER = 64 * 1024;
/** Client sockets all read into one buffer (no memory per idle client). */
const SHARED_READ_SIZE = 64 * 1024;
/** A server socket reads into its own buffer, written straight to its client. */
const OWN_READ_SIZE = 64 * 1024;
const OUT_MIN = 4 * 1024;
/** Views [0, n) of a read or out buffer are kept for n up to this (a write of exactly the bytes
 * read allocates nothing); longer ones are made per use. */
const VIEW_CACHE_MAX = 16 * 1024;
const UV_EOF = -4095;
const UV_EALREADY = -os.constants.errno.EALREADY;

let mode: IoMode = 'streams';
let binding: StreamWrapBinding | null = null;
let sharedBuf: Buffer | null = null;
let sharedViews: Buffer[] = [];
/** Set while a shared-buffer read is being handled: a nested one would have overwritten it. */
let sharedBusy = false;

/** How the relay moves bytes, as settled by probeHandles(). */
export function ioMode(): IoMode {
  return mode;
}

function viewOf(buf: Buffer, views: Buffer[], n: number): Buffer {
  if (n > VIEW_CACHE_MAX) return buf.subarray(0, n);
  let v = views[n];
  if (v === undefined) {
    v = buf.subarray(0, n);
    views[n] = v;
  }
  return v;
}

/** Up to this many bytes are copied by a loop: cheaper than a call into a builtin for a request's
 * few dozen bytes, and Buffer#copy of part of a Buffer makes a view. */
const LOOP_COPY_MAX = 512;

/** TypedArray's own `set`, called directly: `buf.copy` is a JavaScript wrapper that validates its
 * arguments again, and optimized code loads it (a Buffer method) through V8's generic LoadIC. */
const typedArraySet = Uint8Array.prototype.set;

/** `buf[start, end)` into `out` at `pos`, with no view made for a small part. */
export function copyInto(out: Buffer, pos: number, buf: Buffer, start: number, end: number): void {
  if (end - start <= LOOP_COPY_MAX) {
    for (let i = start; i < end; i++) out[pos++] = buf[i]!;
  } else if (start === 0 && end === buf.length) {
    typedArraySet.call(out, buf, pos);
  } else {
    buf.copy(out, pos, start, end);
  }
}

function handleOf(socket: net.Socket): StreamHandle | null {
  return (socket as unknown as { _handle: StreamHandle | null })._handle;
}

/**
 * One connected socket on the hot path. Writes: `write` for bytes that may be lent (a Buffer of
 * our own making, a chunk Node allocated, or another Io's own read buffer), `append` + `flush` for
 * bytes that must be copied (the shared read buffer) or assembled (a rewritten request).
 */
export class Io {
  /** Reads into the buffer all client sockets share (its bytes are copied, never lent). */
  readonly shared: boolean;
  private readonly tls: boolean;
  private handle: StreamHandle | null = null;
  private buf: Buffer | null = null;
  private views: Buffer[] = [];
  /** A write holds on to this socket's read buffer: the next read goes into a new one. */
  private lent = false;
  private paused = false;
  private closed = false;
  /** Close once everything queued has been written. */
  private closing = false;

  /** Bytes to write that are not with the handle yet. */
  private out: Buffer | null = null;
  private outViews: Buffer[] = [];
  private outLen = 0;
  /** A handle write has not completed (TLS: always until a later turn; TCP: the kernel was full). */
  private inFlight = false;
  /** A write returned false: the owner is told when everything has left. */
  private needDrain = false;
  private readonly reqs: (WriteReq | null)[] = [null, null];
  private reqIndex = 0;
  /** net.Socket writes made before the handle was taken over have not all completed: until they
   * have, ours go the same way, after them. */
  private streamPending = false;

  private constructor(
    readonly socket: net.Socket,
    private readonly owner: IoOwner,
    shared: boolean,
  ) {
    this.shared = shared && mode === 'handles';
    this.tls = socket instanceof tls.TLSSocket;
  }

  /**
   * Take over a connected socket's reads and hot-path writes. The caller has removed its own
   * 'data' listener; 'close' and 'error' stay with the caller. `shared`: a client socket.
   * `leading`: bytes the caller read and kept, handed to the owner before anything else.
   */
  static attach(socket: net.Socket, owner: IoOwner, shared: boolean, leading: readonly Buffer[]): Io {
    const io = new Io(socket, owner, shared);
    socket.once('close', io.onClose);
    // Bytes net.Socket read but did not hand out yet (it was paused) come after the leading ones.
    const early: Buffer[] = [...leading];
    socket.pause();
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) early.push(chunk);
    if (mode === 'handles') io.takeOver();
    else {
      socket.on('data', owner.onData);
      socket.on('drain', io.onDrain);
      socket.resume();
    }
    // These are Buffers of their own (not a read buffer): the owner may pause meanwhile.
    for (const chunk of early) if (!io.closed) owner.onData(chunk);
    return io;
  }

  /** Pooler-made bytes for a connection's socket: through its Io once there is one. */
  static send(io: Io | null, socket: net.Socket, data: Buffer): void {
    if (io !== null) io.write(data, null);
    else socket.write(data);
  }

  static pauseReading(io: Io | null, socket: net.Socket): void {
    if (io !== null) io.pause();
    else socket.pause();
  }

  static resumeReading(io: Io | null, socket: net.Socket): void {
    if (io !== null) io.resume();
    else socket.resume();
  }

  private takeOver(): void {
    const socket = this.socket;
    const handle = handleOf(socket);
    if (handle === null || socket.destroyed) {
      this.closed = true;
      return;
    }
    this.streamPending = socket.writableLength > 0;
    this.handle = handle;
    if (this.shared) this.buf = sharedBuf ??= Buffer.allocUnsafe(SHARED_READ_SIZE);
    else this.buf = Buffer.allocUnsafe(OWN_READ_SIZE);
    handle.onread = this.onread;
    handle.useUserBuffer(this.buf);
    // `reading` stays true while we pause: net.Socket's own read path then never restarts the
    // handle behind our back (it calls readStart only when `reading` is false).
    handle.reading = true;
    // The handle may be reading already (EALREADY): net.Socket pauses its stream, not its handle.
    const started = handle.readStart();
    if (started !== 0 && started !== UV_EALREADY) this.fail(started, 'read');
  }

  private readonly onClose = (): void => {
    this.closed = true;
  };

  private readonly onDrain = (): void => {
    if (this.needDrain) {
      this.needDrain = false;
      this.owner.onWritable();
    }
  };

  // ---------------------------------------------------------------- reading

  private readonly onread = (): Buffer | undefined => {
    const b = binding!;
    const n = b.streamBaseState[b.kReadBytesOrError]!;
    if (n > 0) {
      if (this.closed) return undefined;
      if (!this.shared) {
        this.owner.onData(viewOf(this.buf!, this.views, n));
        if (!this.lent) return undefined;
        this.lent = false;
        this.buf = Buffer.allocUnsafe(OWN_READ_SIZE);
        this.views = [];
        return this.buf;
      }
      if (sharedBusy) {
        // Cannot happen (no read is delivered while JavaScript runs), and would corrupt both.
        this.socket.destroy(new Error('relay: a read was delivered during another read'));
        return undefined;
      }
      sharedBusy = true;
      try {
        this.owner.onData(viewOf(sharedBuf!, sharedViews, n));
      } finally {
        sharedBusy = false;
      }
      return undefined;
    }
    if (n === 0 || this.closed) return undefined;
    if (n === UV_EOF) this.end();
    else this.fail(n, 'read');
    return undefined;
  };

  /** Stop reading (backpressure, or no server to send to yet). */
  pause(): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    if (this.handle !== null) this.check(this.handle.readStop(), 'read');
    else this.socket.pause();
  }

  resume(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    if (this.handle !== null) this.check(this.handle.readStart(), 'read');
    else this.socket.resume();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Bytes written to this Io that the kernel does not have yet (as far as we know). */
  get unsentBytes(): number {
    return this.outLen + (this.inFlight ? 1 : 0);
  }

  /** The next read must go into a new buffer: a write went on with the current one. */
  private lend(): void {
    this.lent = true;
  }

  // ---------------------------------------------------------------- writing

  /**
   * Write all of `chunk`. `src` is the Io whose read buffer `chunk` lies in, if any: when the
   * write keeps pointing into it, that socket reads into a new buffer from then on. Returns false
   * when the source should pause until `onWritable`.
   */
  write(chunk: Buffer, src: Io | null): boolean {
    if (this.closed || chunk.length === 0) return true;
    if (this.handle === null) return this.streamWrite(chunk, false);
    if (this.streamPending && this.stillStreaming()) return this.streamWrite(chunk, src !== null);
    if (this.inFlight || (src !== null && src.shared && !this.tls)) {
      this.append(chunk, 0, chunk.length);
      return this.inFlight ? this.room() : this.flush();
    }
    if (this.handleWrite(chunk) !== ASYNC || this.tls) return true;
    // TCP: the unsent rest of `chunk` is queued in libuv, pointing into its memory.
    src?.lend();
    return this.full();
  }

  /** Queue bytes to go out with the next flush (copied: `buf` may be read into again). */
  append(buf: Buffer, start: number, end: number): void {
    const n = end - start;
    if (n <= 0 || this.closed) return;
    this.reserve(n);
    copyInto(this.out!, this.outLen, buf, start, end);
    this.outLen += n;
  }

  /** Bytes appended and not yet flushed (see truncate). */
  get queuedLength(): number {
    return this.outLen;
  }

  /** Take back what was appended since `queuedLength` was `length` (nothing was flushed since). */
  truncate(length: number): void {
    if (length < this.outLen) this.outLen = length;
  }

  /** Queue one whole message: type, length, then `body[start, end)`. */
  appendMessage(type: number, body: Buffer, start: number, end: number): void {
    if (this.closed) return;
    this.reserve(5 + end - start);
    const out = this.out!;
    out[this.outLen] = type;
    out.writeInt32BE(4 + end - start, this.outLen + 1);
    this.outLen += 5;
    this.append(body, start, end);
  }

  private reserve(n: number): void {
    const need = this.outLen + n;
    const out = this.out;
    if (out !== null && out.length >= need) return;
    const grown = Buffer.allocUnsafe(Math.max(OUT_MIN, need, out === null ? 0 : 2 * out.length));
    if (out !== null) out.copy(grown, 0, 0, this.outLen);
    this.out = grown;
    this.outViews = [];
  }

  /** Write what append queued. Returns false when the source should pause until onWritable. */
  flush(): boolean {
    if (this.outLen === 0 || this.closed) return true;
    if (this.handle === null || (this.streamPending && this.stillStreaming())) {
      const data = this.out!.subarray(0, this.outLen);
      // net.Socket keeps the Buffer until written: the next append starts a new one.
      this.out = null;
      this.outViews = [];
      this.outLen = 0;
      return this.streamWrite(data, false);
    }
    if (this.inFlight) return this.room();
    const r = this.handleWrite(viewOf(this.out!, this.outViews, this.outLen));
    this.outLen = 0;
    if (r !== ASYNC || this.tls) return true;
    // TCP: libuv writes the rest from `out` later; the next append starts a new one.
    this.out = null;
    this.outViews = [];
    return this.full();
  }

  private room(): boolean {
    return this.outLen <= HIGH_WATER || this.full();
  }

  private full(): boolean {
    this.needDrain = true;
    return false;
  }

  private handleWrite(view: Buffer): number {
    const b = binding!;
    let req = this.reqs[this.reqIndex] ?? null;
    if (req === null) {
      req = new b.WriteWrap();
      req.oncomplete = this.onWritten;
      req.buffer = null;
      this.reqs[this.reqIndex] = req;
    }
    const err = this.handle!.writeBuffer(req, view);
    if (err !== 0) {
      this.fail(err, 'write');
      return FAILED;
    }
    if (b.streamBaseState[b.kLastWriteWasAsync] === 0) return SYNC;
    // A TCP write goes on from `view`'s memory: it must outlive every reference of ours.
    if (!this.tls) req.buffer = view;
    this.reqIndex ^= 1;
    this.inFlight = true;
    return ASYNC;
  }

  private readonly onWritten = (status: number): void => {
    this.inFlight = false;
    // The request that completed is the other one now.
    this.reqs[this.reqIndex ^ 1]!.buffer = null;
    if (status < 0) return this.fail(status, 'write');
    if (this.closed) return;
    if (this.outLen > 0 && (!this.flush() || this.inFlight)) return;
    if (this.closing) return this.finishClose();
    this.onDrain();
  };

  /** net.Socket writes from before the takeover: are some still under way? */
  private stillStreaming(): boolean {
    if (this.socket.writableLength > 0) return true;
    this.streamPending = false;
    return false;
  }

  /** Through net.Socket (streams mode, or behind its own pending writes): it keeps `data`, so a
   * chunk of a read buffer is copied. */
  private streamWrite(data: Buffer, copy: boolean): boolean {
    if (this.socket.write(copy ? Buffer.from(data) : data, this.handle === null ? undefined : this.onStreamWritten)) return true;
    return this.full();
  }

  private readonly onStreamWritten = (): void => {
    if (this.closed || this.socket.writableLength > 0) return;
    this.streamPending = false;
    if (this.outLen > 0 && !this.flush()) return;
    if (this.closing && !this.inFlight) return this.finishClose();
    this.onDrain();
  };

  // ---------------------------------------------------------------- closing

  /** Close once what is queued has been written (the peer gets our last bytes, e.g. an error). */
  end(): void {
    if (this.closed) return;
    this.closing = true;
    if (this.outLen > 0) this.flush();
    if (!this.inFlight && this.outLen === 0) this.finishClose();
  }

  private finishClose(): void {
    this.closing = false;
    // Anything net.Socket still has queued goes before its end (destroySoon: end, then destroy).
    this.socket.destroySoon();
  }

  /** Close now. */
  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private fail(code: number, op: string): void {
    this.closed = true;
    this.socket.destroy(Object.assign(new Error(`${op} ${getSystemErrorName(code)}`), { code: getSystemErrorName(code) }));
  }

  private check(code: number, op: string): void {
    if (code !== 0) this.fail(code, op);
  }
}

const FAILED = -1;
const SYNC = 0;
const ASYNC = 1;

// ---------------------------------------------------------------- the startup probe

/**
 * Decide, once and before any client is accepted, whether the hot path runs on stream handles.
 * `forceStreams` (PGPOOL_RELAY=streams) skips them. Otherwise the internal binding must be there
 * with the shape we use, and a loopback TCP pair and a TLS pair must relay through `Io` exactly as
 * the rules above say. Returns why handles are not used, or null when they are.
 */
export async function probeHandles(forceStreams: boolean): Promise<string | null> {
  mode = 'streams';
  if (forceStreams) return 'PGPOOL_RELAY=streams';
  const b = loadBinding();
  if (typeof b === 'string') return b;
  binding = b;
  mode = 'handles';
  try {
    await withTimeout(probePair(false), 'TCP');
    await withTimeout(probePair(true), 'TLS');
    return null;
  } catch (err) {
    mode = 'streams';
    return `stream handles did not behave as expected: ${(err as Error).message}`;
  }
}

function loadBinding(): StreamWrapBinding | string {
  const p = process as unknown as { binding?: (name: string) => unknown };
  if (typeof p.binding !== 'function') return 'process.binding is not available';
  let b: Partial<StreamWrapBinding>;
  try {
    b = p.binding('stream_wrap') as Partial<StreamWrapBinding>;
  } catch (err) {
    return `process.binding('stream_wrap') failed: ${(err as Error).message}`;
  }
  if (
    typeof b.WriteWrap !== 'function' ||
    !(b.streamBaseState instanceof Int32Array) ||
    typeof b.kReadBytesOrError !== 'number' ||
    typeof b.kLastWriteWasAsync !== 'number'
  ) {
    return "process.binding('stream_wrap') lacks WriteWrap, streamBaseState, kReadBytesOrError or kLastWriteWasAsync";
  }
  return b as StreamWrapBinding;
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} probe timed out`)), 5_000);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Collects what an Io reads (copied: the read buffer is reused), or sends it back. */
class ProbeOwner implements IoOwner {
  io: Io | null = null;
  echo = false;
  got = Buffer.alloc(0);
  private waiting: { n: number; resolve: () => void } | null = null;

  readonly onData = (chunk: Buffer): void => {
    if (this.echo) {
      this.io!.write(chunk, this.io);
      return;
    }
    this.got = Buffer.concat([this.got, chunk]);
    if (this.waiting !== null && this.got.length >= this.waiting.n) this.waiting.resolve();
  };

  readonly onWritable = (): void => undefined;

  /** Resolves once `text` has been read, rejects when something else was. */
  async expect(text: string, what: string): Promise<void> {
    const n = Buffer.byteLength(text);
    if (this.got.length < n) await new Promise<void>((resolve) => (this.waiting = { n, resolve }));
    const got = this.got.toString();
    this.got = Buffer.alloc(0);
    if (got !== text) throw new Error(`${what}: read ${JSON.stringify(got)}, expected ${JSON.stringify(text)}`);
  }
}

/** A connected pair over loopback: TCP, or TLS with a pre-shared key (no certificate needed). */
async function connectedPair(overTls: boolean): Promise<[net.Socket, net.Socket]> {
  const psk = Buffer.alloc(32, 7);
  const options = { ciphers: 'PSK-AES128-GCM-SHA256', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;
  const server = overTls ? tls.createServer({ ...options, pskCallback: () => psk }) : net.createServer();
  try {
    const accepted = new Promise<net.Socket>((resolve, reject) => {
      server.once(overTls ? 'secureConnection' : 'connection', resolve);
      server.once('tlsClientError', reject);
      server.once('error', reject);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const client = overTls
      ? tls.connect({ port, host: '127.0.0.1', ...options, pskCallback: () => ({ psk, identity: 'probe' }), checkServerIdentity: () => undefined })
      : net.connect(port, '127.0.0.1');
    const connected = new Promise<net.Socket>((resolve, reject) => {
      client.once(overTls ? 'secureConnect' : 'connect', () => resolve(client));
      client.once('error', reject);
    });
    return await Promise.all([connected, accepted]);
  } finally {
    server.close();
  }
}

/**
 * Relay through two Ios as the pooler does: a pooler-made Buffer written and overwritten at once
 * (TLS must have encrypted it already), two writes in a row (the second queues behind a TLS write
 * in flight), and bytes sent back from the reader's own read buffer, as a server's reply goes to
 * its client.
 */
async function probePair(overTls: boolean): Promise<void> {
  const what = overTls ? 'TLS' : 'TCP';
  const [left, right] = await connectedPair(overTls);
  // A failure shows as a wrong or missing read; the error itself is not needed.
  for (const s of [left, right]) s.on('error', () => undefined);
  const a = new ProbeOwner();
  const b = new ProbeOwner();
  a.io = Io.attach(left, a, false, []);
  b.io = Io.attach(right, b, false, []);
  try {
    const first = Buffer.from('pgpool-ts probe 1;');
    a.io.write(first, null);
    first.fill(0x58);
    a.io.write(Buffer.from('probe 2;'), null);
    await b.expect('pgpool-ts probe 1;probe 2;', what);
    b.echo = true;
    a.io.write(Buffer.from('echo'), null);
    await a.expect('echo', `${what} echo`);
  } finally {
    a.io.destroy();
    b.io.destroy();
  }
}
