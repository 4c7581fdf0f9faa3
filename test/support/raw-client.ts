// A hand-written protocol client for integration tests: frontend bytes are built by the test
// (test/support/bytes.ts), backend messages are read back one by one off a plain socket or a TLS
// one. Deliberately independent of src/protocol, so that the pooler's framing is never checked
// with itself.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { cancelRequest, cstr, int32, msg, startupPacket, V3 } from './bytes.js';
import { hmac, md5hex, scramKeys } from './secrets.js';

export interface BackendMessage {
  type: string;
  body: Buffer;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_TIMEOUT_MS = 5_000;

/** A connected TCP (or unix) socket; rejects on error or after `timeoutMs`. */
export function connectSocket(opts: net.NetConnectOpts, timeoutMs = DEFAULT_CONNECT_TIMEOUT_MS): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(opts);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('raw connect timed out'));
    }, timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}

export interface RawConnOptions {
  /** Default wait of next(), until() and the other readers; 5 s unless set. */
  timeoutMs?: number;
  /** Defaults of until()'s `onError` and `onEnd` ('throw' unless set). */
  onError?: UntilOptions['onError'];
  onEnd?: UntilOptions['onEnd'];
}

export interface UntilOptions {
  /** How long to wait for each message; the connection's default unless set. */
  timeoutMs?: number;
  /** An ErrorResponse before `type`: 'throw', 'keep' reading, or 'stop' and return; the
   * connection's default (RawConnOptions.onError, else 'throw') unless set. */
  onError?: 'throw' | 'keep' | 'stop';
  /** The connection ends before `type`: 'throw', or 'return' what was seen; the connection's
   * default (RawConnOptions.onEnd, else 'throw') unless set. */
  onEnd?: 'throw' | 'return';
  /** Collects the messages as they arrive as well (filled in even when until() throws). */
  seen?: BackendMessage[];
}

export interface LoginOptions extends RawConnOptions {
  /** Protocol version of the StartupMessage (3.0 unless set). */
  version?: number;
  host?: string;
  /** A unix socket path to connect to instead of TCP. */
  path?: string;
}

/**
 * Backend messages off any stream. Bytes are kept as they come and cut into messages when asked,
 * so the single answer byte to an SSLRequest can be read too, and the rest handed to TLS.
 */
export class RawConn {
  private buf: Buffer = Buffer.alloc(0);
  /** Messages already cut off `buf` (only while onCopyData is set). */
  private queue: BackendMessage[] = [];
  private wake: (() => void) | null = null;
  private readonly timeoutMs: number;
  private readonly onError: UntilOptions['onError'];
  private readonly onEnd: UntilOptions['onEnd'];
  closed = false;
  error: Error | null = null;
  /** When the socket closed (Date.now()). */
  readonly closedAt: Promise<number>;
  /**
   * Called with each CopyData body instead of keeping it: messages are then cut as they arrive,
   * so a long COPY TO STDOUT never piles up in memory.
   */
  onCopyData: ((body: Buffer) => void) | null = null;

  constructor(readonly sock: Duplex, opts: RawConnOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.onError = opts.onError;
    this.onEnd = opts.onEnd;
    sock.on('data', (b: Buffer) => {
      this.buf = this.buf.length === 0 ? b : Buffer.concat([this.buf, b]);
      if (this.onCopyData !== null) this.cutAll();
      this.wake?.();
    });
    sock.on('error', (e: Error) => {
      this.error = e;
      this.wake?.();
    });
    this.closedAt = new Promise((resolve) =>
      sock.once('close', () => {
        this.closed = true;
        this.wake?.();
        resolve(Date.now());
      }),
    );
  }

  /** A TCP connection to `host`:`port` (127.0.0.1 unless set), Nagle off: each send() leaves at once,
   * so a message a test cuts in pieces reaches the pooler in those pieces. With `path`, the unix
   * socket there instead. */
  static async connect(port: number, opts: RawConnOptions & { host?: string; path?: string } = {}): Promise<RawConn> {
    if (opts.path !== undefined) return new RawConn(await connectSocket({ path: opts.path }), opts);
    const sock = await connectSocket({ host: opts.host ?? '127.0.0.1', port });
    sock.setNoDelay(true);
    return new RawConn(sock, opts);
  }

  /**
   * Connect, send a StartupMessage with `params` (a trust login: no password exchange) and read
   * every message up to the first ReadyForQuery, as until() does (an ErrorResponse on the way
   * throws unless `onError` says otherwise).
   */
  static async login(port: number, params: Record<string, string>, opts: LoginOptions = {}): Promise<{ conn: RawConn; login: BackendMessage[] }> {
    const conn = await RawConn.connect(port, opts);
    conn.send(startupPacket(params, opts.version ?? V3));
    try {
      const login = await conn.until('Z');
      return { conn, login };
    } catch (e) {
      conn.destroy();
      throw e;
    }
  }

  /** True once the connection closed or failed. */
  get ended(): boolean {
    return this.closed || this.error !== null;
  }

  /** Write `b`; false (nothing sent) once the socket is destroyed, or when the write is buffered. */
  send(b: Buffer): boolean {
    if (this.sock.destroyed) return false;
    return this.sock.write(b);
  }

  /** Stop consuming (before handing the socket to tls.connect); the bytes not read yet. */
  detach(): Buffer {
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('error');
    this.sock.removeAllListeners('close');
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  private complete(): boolean {
    return this.queue.length > 0 || (this.buf.length >= 5 && this.buf.length >= 1 + this.buf.readInt32BE(1));
  }

  private cut(): BackendMessage {
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    const len = this.buf.readInt32BE(1);
    const m = { type: String.fromCharCode(this.buf[0]!), body: this.buf.subarray(5, 1 + len) };
    this.buf = this.buf.subarray(1 + len);
    return m;
  }

  /** Cut every complete message off the buffer: CopyData to onCopyData, the rest to the queue. */
  private cutAll(): void {
    let pos = 0;
    while (this.buf.length - pos >= 5) {
      const len = this.buf.readUInt32BE(pos + 1);
      if (this.buf.length - pos < len + 1) break;
      const type = String.fromCharCode(this.buf[pos]!);
      const body = this.buf.subarray(pos + 5, pos + 1 + len);
      pos += len + 1;
      if (type === 'd' && this.onCopyData !== null) this.onCopyData(body);
      else this.queue.push({ type, body: Buffer.from(body) });
    }
    // Only a partial message is left over, so the next concat stays small.
    this.buf = pos === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(pos));
  }

  /** Waits until `have()`; false when the connection ended first, 'timeout' after `timeoutMs`. */
  private async waitFor(have: () => boolean, timeoutMs: number): Promise<boolean | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    while (!have()) {
      if (this.ended) return false;
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
    return true;
  }

  private timedOut(what: string, timeoutMs: number): Error {
    return new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${this.buf.length} bytes)`);
  }

  /** The next byte without consuming it, or null when the connection ended first. */
  async peek(timeoutMs = this.timeoutMs): Promise<number | null> {
    const got = await this.waitFor(() => this.buf.length >= 1, timeoutMs);
    if (got === 'timeout') throw this.timedOut('one byte', timeoutMs);
    return this.buf.length === 0 ? null : this.buf[0]!;
  }

  /** One byte (the answer to an SSLRequest), or null when the connection ended first. */
  async byte(timeoutMs = this.timeoutMs): Promise<number | null> {
    const b = await this.peek(timeoutMs);
    if (b !== null) this.buf = this.buf.subarray(1);
    return b;
  }

  /** The next backend message, or null when the connection ended first; throws on timeout. */
  async next(timeoutMs = this.timeoutMs): Promise<BackendMessage | null> {
    const got = await this.waitFor(() => this.complete(), timeoutMs);
    if (got === 'timeout') throw this.timedOut('a backend message', timeoutMs);
    return got ? this.cut() : null;
  }

  /** The next backend message, or null when none is complete within `timeoutMs` or the connection ended. */
  async poll(timeoutMs = this.timeoutMs): Promise<BackendMessage | null> {
    const got = await this.waitFor(() => this.complete(), timeoutMs);
    return got === true ? this.cut() : null;
  }

  /** The next backend message; throws when the connection ended first or on timeout. */
  async expectNext(timeoutMs = this.timeoutMs): Promise<BackendMessage> {
    const m = await this.next(timeoutMs);
    if (m === null) throw new Error('connection closed');
    return m;
  }

  /** Messages up to and including the next one of `type` (see UntilOptions for errors and the end). */
  async until(type: string, opts: UntilOptions = {}): Promise<BackendMessage[]> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const onError = opts.onError ?? this.onError;
    const onEnd = opts.onEnd ?? this.onEnd;
    const seen: BackendMessage[] = [];
    for (;;) {
      const m = await this.next(timeoutMs);
      if (m === null) {
        if (onEnd === 'return') return seen;
        throw new Error(`connection closed before '${type}'; saw ${types(seen)}${errorSummary(seen)}`);
      }
      seen.push(m);
      opts.seen?.push(m);
      if (m.type === type) return seen;
      if (m.type === 'E') {
        if (onError === 'stop') return seen;
        if (onError !== 'keep') throw new Error(`ErrorResponse before '${type}': ${JSON.stringify(errorFields(m))}`);
      }
    }
  }

  /** The fields of the next ErrorResponse (other messages are skipped), or null when the connection
   * ended first; `timeoutMs` is the wait for each message. */
  async errorResponse(timeoutMs = this.timeoutMs): Promise<Record<string, string> | null> {
    for (;;) {
      const m = await this.next(timeoutMs);
      if (m === null) return null;
      if (m.type === 'E') return errorFields(m);
    }
  }

  /** Every message up to and including the `n`th ReadyForQuery (NoticeResponses left out). */
  async untilReady(n: number, timeoutMs = this.timeoutMs): Promise<BackendMessage[]> {
    const seen: BackendMessage[] = [];
    let ready = 0;
    while (ready < n) {
      const m = await this.poll(timeoutMs);
      if (m === null) {
        throw new Error(`${this.ended ? 'connection closed' : 'timed out'} after ${types(seen)} (wanted ${n} ReadyForQuery)`);
      }
      if (m.type === 'N') continue;
      seen.push(m);
      if (m.type === 'Z') ready++;
    }
    return seen;
  }

  /** Send the messages as ONE write; return the replies up to the ReadyForQuery of each Sync/Query. */
  async exchange(...msgs: Buffer[]): Promise<BackendMessage[]> {
    const n = msgs.filter((m) => m[0] === 0x53 /* S */ || m[0] === 0x51 /* Q */).length;
    this.sock.write(Buffer.concat(msgs));
    const got = await this.untilReady(n);
    // Nothing may follow: a reply the client never asked for would show up here.
    const extra = await this.poll(100);
    if (extra !== null) got.push(extra);
    return got;
  }

  /** A simple query that must succeed; returns the first column of each row. */
  async query(sql: string): Promise<(string | null)[]> {
    const r = await this.exchange(msg('Q', cstr(sql)));
    const err = r.find((m) => m.type === 'E');
    if (err !== undefined) throw new Error(`${sql}: ${errorFields(err).M}`);
    return rows(r).map((row) => row[0] ?? null);
  }

  /** Resolves true if the peer closed (or the connection failed) within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    if (this.ended) return true;
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closedAt.then(() => true),
      new Promise<boolean>((res) => {
        t = setTimeout(() => res(false), ms);
      }),
    ]);
    clearTimeout(t);
    return r || this.ended;
  }

  /** Terminate, then close. */
  close(): void {
    if (!this.closed) this.sock.end(msg('X'));
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/**
 * A CancelRequest on a fresh connection, as libpq sends it; resolves once the pooler closed that
 * connection. Still open after `timeoutMs` (5 s): rejects, or resolves with `ifOpen: 'resolve'`.
 * With `path`, sent to the unix socket there instead of TCP `port`.
 */
export async function sendCancelRequest(port: number, pid: number, secret: Buffer, opts: { timeoutMs?: number; ifOpen?: 'reject' | 'resolve'; path?: string } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const conn = await RawConn.connect(port, { path: opts.path });
  try {
    conn.send(cancelRequest(pid, secret));
    const closed = await conn.closesWithin(timeoutMs);
    if (!closed && opts.ifOpen !== 'resolve') throw new Error(`the pooler kept the cancel connection open for ${timeoutMs} ms`);
  } finally {
    conn.destroy();
  }
}

// ------------------------------------------------------------------------------------------------
// Password exchanges by hand, so a test knows every response and proof it sent

/** The answer to AuthenticationMD5Password: 'md5' + md5(md5(password + user) + salt). */
export function md5Response(user: string, password: string, salt: Buffer): string {
  return 'md5' + md5hex(Buffer.concat([Buffer.from(md5hex(password + user)), salt]));
}

/**
 * Connect, send a StartupMessage for `user` and `database`, and answer the AuthenticationMD5Password
 * that must come first for `password`. The rest of the login is the caller's to read.
 */
export async function md5Start(port: number, user: string, password: string, database: string, opts: RawConnOptions = {}): Promise<{ conn: RawConn; sent: string }> {
  const conn = await RawConn.connect(port, opts);
  try {
    conn.send(startupPacket({ user, database }));
    const req = await conn.next();
    assert.ok(req !== null && req.type === 'R' && req.body.readInt32BE(0) === 5, `expected AuthenticationMD5Password for ${user}, got ${req?.type}`);
    const sent = md5Response(user, password, req.body.subarray(4, 8));
    conn.send(msg('p', cstr(sent)));
    return { conn, sent };
  } catch (e) {
    conn.destroy();
    throw e;
  }
}

export interface ScramSent {
  /** The server-first-message. */
  serverFirst: string;
  salted: Buffer;
  clientKey: Buffer;
  /** ClientProof, as sent in `p=`. */
  proof: Buffer;
}

/**
 * The client side of SCRAM-SHA-256 (RFC 5802) over a connection that got AuthenticationSASL:
 * client-first, then client-final with its proof once AuthenticationSASLContinue came. The server's
 * answer to the proof is the caller's to read.
 */
export async function scramExchange(conn: RawConn, password: string): Promise<ScramSent> {
  const nonce = randomBytes(18).toString('base64');
  const clientFirstBare = `n=,r=${nonce}`;
  const clientFirst = Buffer.from(`n,,${clientFirstBare}`);
  conn.send(msg('p', cstr('SCRAM-SHA-256'), int32(clientFirst.length), clientFirst));
  const cont = await conn.next();
  assert.ok(cont !== null && cont.type === 'R', `expected AuthenticationSASLContinue, got ${cont?.type}`);
  assert.equal(cont.body.readInt32BE(0), 11, 'AuthenticationSASLContinue');
  const serverFirst = cont.body.toString('utf8', 4);
  const attrs = new Map(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)] as const));
  const keys = scramKeys(password, Buffer.from(attrs.get('s') ?? '', 'base64'), Number(attrs.get('i')));
  const finalWithoutProof = `c=biws,r=${attrs.get('r') ?? ''}`;
  const signature = hmac(keys.storedKey, `${clientFirstBare},${serverFirst},${finalWithoutProof}`);
  const proof = Buffer.from(keys.clientKey.map((b, i) => b ^ signature[i]!));
  conn.send(msg('p', `${finalWithoutProof},p=${proof.toString('base64')}`));
  return { serverFirst, salted: keys.salted, clientKey: keys.clientKey, proof };
}

// ------------------------------------------------------------------------------------------------
// Decoding backend messages

/** The message types in a row, e.g. '12DCZ'. */
export function types(msgs: BackendMessage[]): string {
  return msgs.map((m) => m.type).join('');
}

/** The fields of an ErrorResponse or NoticeResponse (message or body), by field code. */
export function errorFields(m: BackendMessage | Buffer): Record<string, string> {
  const body = Buffer.isBuffer(m) ? m : m.body;
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const code = String.fromCharCode(body[pos]!);
    // A field without its NUL (a malformed message) runs to the end of the body.
    const nul = body.indexOf(0, pos + 1);
    const end = nul < 0 ? body.length : nul;
    out[code] = body.toString('utf8', pos + 1, end);
    pos = end + 1;
  }
  return out;
}

/** The fields of the first ErrorResponse among `msgs`, or null. */
export function firstErrorFields(msgs: BackendMessage[]): Record<string, string> | null {
  const e = msgs.find((m) => m.type === 'E');
  return e === undefined ? null : errorFields(e);
}

function errorSummary(msgs: BackendMessage[]): string {
  const errors = msgs.filter((m) => m.type === 'E').map((m) => errorFields(m).M);
  return errors.length === 0 ? '' : `: ${errors.join('; ')}`;
}

/** The columns of every DataRow, as text (null for SQL NULL). */
export function rows(msgs: BackendMessage[]): (string | null)[][] {
  return msgs.filter((m) => m.type === 'D').map((m) => {
    const n = m.body.readInt16BE(0);
    const out: (string | null)[] = [];
    let pos = 2;
    for (let i = 0; i < n; i++) {
      const len = m.body.readInt32BE(pos);
      pos += 4;
      if (len < 0) out.push(null);
      else {
        out.push(m.body.toString('utf8', pos, pos + len));
        pos += len;
      }
    }
    return out;
  });
}
