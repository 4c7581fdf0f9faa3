// `npm run fuzz [-- --count 1000000 --seed N --targets framer,startup --replay target:caseSeed]`
//
// Mutation fuzzing of every parser that reads bytes or text the pooler does not control: the
// framer, the untyped first packet, SCRAM in both roles, the auth flows (PasswordMessage,
// SASLInitialResponse, SASLResponse), the server's Authentication requests, ErrorResponse fields,
// the prepared-statement rewriter, and the operator-facing parsers (hba, ident, auth_file,
// connection strings, the whole ini loader).
//
// Each target generates one input from a small corpus of valid messages, mutates it (bit flips,
// interesting int32 lengths, truncation, splicing, random runs) and checks two kinds of property:
// "never throws / only the documented error type", and an oracle written here independently of
// src/ (a reference framer, a reference startup decoder, a hand-made SCRAM client), so a parser
// that accepts what it should refuse fails too. Inputs come from a seeded PRNG: every case has a
// seed of its own, printed with any failure, and `--replay target:seed` runs that one case again.
//
// test/unit/fuzz.test.ts runs the same targets for a ~15 s budget in CI; this entry point runs
// the long campaign (1 000 000 inputs by default) recorded in docs/reliability.md.

import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Console, type AdminHost } from '../src/admin/console.js';
import { authFlow } from '../src/client/auth.js';
import type { ClientConn } from '../src/client/client-conn.js';
import { matchHba, parseHba, parseIdentMap, type HbaConn } from '../src/client/hba.js';
import { ClientStatements, ReplyQueue, deallocation } from '../src/client/prepared.js';
import { parseAuthFile } from '../src/config/auth-file.js';
import { parseDatabaseDef, parseUserDef } from '../src/config/connstr.js';
import { ConfigError, loadConfig, settingRows } from '../src/config/load.js';
import { decodeErrorFields, encodeErrorResponse } from '../src/protocol/error-response.js';
import { FRAMER_STOPPED, Framer } from '../src/protocol/framer.js';
import { ScramClientSession, ScramServerSession, parseScramSecret, type ScramSecret } from '../src/protocol/scram.js';
import { decodeStartupPacket } from '../src/protocol/startup.js';
import { configureLog } from '../src/log.js';
import { buildTlsContexts } from '../src/net/tls.js';
import { Peers } from '../src/pool/peer-pool.js';
import { Registry } from '../src/pool/registry.js';
import { ServerAuth } from '../src/server/server-auth.js';

// ------------------------------------------------------------------------------------------------
// PRNG and mutator

/** sfc32: small, fast, and good enough to drive a fuzzer; one instance per case. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // All four words from the seed (splitmix32), so nearby seeds give unrelated streams.
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 15; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** 0 ≤ n' < n. */
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  chance(p: number): boolean {
    return this.u32() < p * 0x1_0000_0000;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A size skewed towards small values, sometimes large. */
  size(max = 300): number {
    const k = this.int(10);
    if (k < 5) return this.int(8);
    if (k < 9) return this.int(Math.min(max, 64));
    return this.int(max);
  }

  /** Printable ASCII, sometimes with the given specials mixed in. */
  text(n: number, specials = ''): string {
    let s = '';
    for (let i = 0; i < n; i++) {
      s += specials !== '' && this.chance(0.1) ? this.pick([...specials]) : String.fromCharCode(0x20 + this.int(95));
    }
    return s;
  }
}

const INTERESTING_INT32 = [0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 0x7fff, 0x8000, 0xffff, 0x10000, 10_000, 10_001, 0x7fffffff, -1, -2, -4, -0x80000000];
const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x2c /* , */, 0x3d /* = */, 0x22 /* " */, 0x27 /* ' */, 0x0a, 0x0d, 0x20, 0x5c /* \ */, 0xc3, 0xe2];

/** 1 to 4 random edits. `dict` holds fragments worth splicing in (tokens, other messages). */
export function mutate(r: Rng, input: Buffer, dict: readonly Buffer[] = []): Buffer {
  let buf = Buffer.from(input);
  const edits = 1 + r.int(4);
  for (let e = 0; e < edits; e++) {
    const n = buf.length;
    const at = r.int(n + 1);
    switch (r.int(11)) {
      case 0: // flip one bit
        if (n > 0) buf[r.int(n)]! ^= 1 << r.int(8);
        break;
      case 1: // random byte
        if (n > 0) buf[r.int(n)] = r.u32() & 0xff;
        break;
      case 2: // interesting byte
        if (n > 0) buf[r.int(n)] = r.pick(INTERESTING_BYTES);
        break;
      case 3: { // interesting int32 over 4 bytes (lengths, counts)
        if (n < 4) break;
        const pos = r.int(n - 3);
        const v = r.chance(0.8) ? r.pick(INTERESTING_INT32) : r.u32() | 0;
        buf.writeInt32BE(v | 0, pos);
        break;
      }
      case 4: { // delete a range
        const len = r.int(Math.min(n - at, 1 + r.size(64)) + 1);
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + len)]);
        break;
      }
      case 5: { // duplicate a range
        const from = r.int(n + 1);
        const len = r.int(Math.min(n - from, 64) + 1);
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(from, from + len), buf.subarray(at)]);
        break;
      }
      case 6: { // insert random bytes, rarely a long run
        const len = r.chance(0.03) ? r.int(20_000) : 1 + r.int(16);
        buf = Buffer.concat([buf.subarray(0, at), r.bytes(len), buf.subarray(at)]);
        break;
      }
      case 7: // truncate
        buf = buf.subarray(0, at);
        break;
      case 8: // splice a dictionary fragment
        if (dict.length > 0) buf = Buffer.concat([buf.subarray(0, at), r.pick(dict), buf.subarray(at)]);
        break;
      case 9: { // swap two bytes
        if (n < 2) break;
        const i = r.int(n);
        const j = r.int(n);
        const t = buf[i]!;
        buf[i] = buf[j]!;
        buf[j] = t;
        break;
      }
      default: { // repeat one byte many times (long names, long nonces)
        const len = r.chance(0.1) ? r.int(12_000) : r.int(600);
        buf = Buffer.concat([buf.subarray(0, at), Buffer.alloc(len, n > 0 ? buf[r.int(n)]! : 0x41), buf.subarray(at)]);
      }
    }
  }
  return buf;
}

function mutateText(r: Rng, text: string, dict: readonly string[] = []): string {
  return mutate(r, Buffer.from(text, 'utf8'), dict.map((d) => Buffer.from(d, 'utf8'))).toString('utf8');
}

// ------------------------------------------------------------------------------------------------
// Harness

/** What one case was fed, kept for the failure report. */
export interface CaseContext {
  input: unknown;
}

export interface Target {
  readonly name: string;
  /** Relative share of the cases in a mixed run (roughly inverse to the cost of one case). */
  readonly weight: number;
  /** One generated case; throws on any property violation (or when the code under test throws). */
  run(r: Rng, ctx: CaseContext): void;
}

export class FuzzFailure extends Error {}

function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new FuzzFailure(what);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
}

function typed(type: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), int32(body.length + 4), body]);
}

function cstr(s: string | Buffer): Buffer {
  return Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : s, Buffer.from([0])]);
}

// ------------------------------------------------------------------------------------------------
// Target: the framer, against a reference model, with allocation tracking

interface FrameEvent {
  type: number;
  body: Buffer;
  /** Offset in the whole stream just past what was delivered. */
  at: number;
}

/** What a correct framer delivers for `stream` (fed completely, in any chunking). */
export function referenceFrames(
  stream: Buffer,
  startup: boolean,
  wanted: ReadonlySet<number>,
  headerOnly: ReadonlySet<number>,
  maxPacket: number,
): { events: FrameEvent[]; error: boolean } {
  const events: FrameEvent[] = [];
  let pos = 0;
  let first = startup;
  for (;;) {
    const hs = first ? 4 : 5;
    if (pos + hs > stream.length) return { events, error: false };
    const type = first ? 0 : stream[pos]!;
    const len = stream.readInt32BE(first ? pos : pos + 1);
    if (len < (first ? 8 : 4) || len > maxPacket) return { events, error: true };
    first = false;
    const bodyStart = pos + hs;
    const bodyEnd = bodyStart + len - 4;
    if (wanted.has(type)) {
      if (bodyEnd > stream.length) return { events, error: false };
      events.push({ type, body: stream.subarray(bodyStart, bodyEnd), at: bodyEnd });
    } else if (headerOnly.has(type)) {
      events.push({ type, body: Buffer.alloc(0), at: bodyStart });
    }
    if (bodyEnd > stream.length) return { events, error: false };
    pos = bodyEnd;
  }
}

/** Split `stream` into chunks the way sockets might: one chunk, bytes, small or random pieces. */
export function chunkStream(r: Rng, stream: Buffer): Buffer[] {
  const mode = r.int(4);
  if (mode === 0 || stream.length === 0) return [stream];
  const chunks: Buffer[] = [];
  let pos = 0;
  while (pos < stream.length) {
    const size = mode === 1 && stream.length <= 4096 ? 1 : mode === 2 ? 1 + r.int(16) : 1 + r.int(stream.length);
    chunks.push(stream.subarray(pos, pos + size));
    pos += size;
  }
  return chunks;
}

// Allocation tracking: while on, the largest buffer the code asked Buffer for.
let allocMax = 0;
const real = { concat: Buffer.concat, alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, allocUnsafeSlow: Buffer.allocUnsafeSlow };

function trackAllocations(on: boolean): void {
  if (!on) {
    Object.assign(Buffer, real);
    return;
  }
  allocMax = 0;
  const note = (n: number) => {
    if (n > allocMax) allocMax = n;
  };
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    note(total ?? list.reduce((s, b) => s + b.length, 0));
    return real.concat(list, total);
  }) as typeof Buffer.concat;
  Buffer.alloc = ((size: number, ...rest: unknown[]) => {
    note(size);
    return (real.alloc as unknown as (...a: unknown[]) => Buffer)(size, ...rest);
  }) as unknown as typeof Buffer.alloc;
  Buffer.allocUnsafe = ((size: number) => {
    note(size);
    return real.allocUnsafe(size);
  }) as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = ((size: number) => {
    note(size);
    return real.allocUnsafeSlow(size);
  }) as typeof Buffer.allocUnsafeSlow;
}

const FRAMER_TYPES = [0, 0x70, 0x58, 0x51, 0x50, 0x42, 0x44, 0x43, 0x53, 0x48, 0x45, 0x46, 0x64, 0x63, 0x66];
const MAX_PACKETS = [8, 9, 16, 64, 300, 10_000, 65_536, 1 << 24, 0x7fffffff];

const framerTarget: Target = {
  name: 'framer',
  weight: 30,
  run(r, ctx) {
    const maxPacket = r.pick(MAX_PACKETS);
    const startup = r.chance(0.5);
    const wanted = new Set<number>();
    const headerOnly = new Set<number>();
    for (const t of FRAMER_TYPES) {
      if (r.chance(0.3)) wanted.add(t);
      else if (r.chance(0.3)) headerOnly.add(t);
    }
    if (r.chance(0.1)) wanted.add(r.int(256));
    const parts: Buffer[] = [];
    const count = r.int(12);
    for (let i = 0; i < count; i++) {
      const body = r.bytes(r.chance(0.03) ? r.int(70_000) : r.size(60));
      let len = body.length + 4;
      if (r.chance(0.08)) len = r.chance(0.7) ? r.pick([...INTERESTING_INT32, maxPacket, maxPacket + 1, maxPacket - 1]) : r.u32() | 0;
      const first = startup && i === 0;
      parts.push(first ? int32(len) : Buffer.concat([Buffer.from([r.chance(0.9) ? r.pick(FRAMER_TYPES) : r.int(256)]), int32(len)]), body);
    }
    let stream: Buffer = Buffer.concat(parts);
    if (r.chance(0.2)) stream = mutate(r, stream);
    if (r.chance(0.2)) stream = stream.subarray(0, r.int(stream.length + 1));
    const chunks = chunkStream(r, stream);
    ctx.input = { maxPacket, startup, wanted: [...wanted], headerOnly: [...headerOnly], chunks: chunks.map((c) => c.length), stream };

    const f = new Framer(wanted, maxPacket, startup, headerOnly);
    const got: FrameEvent[] = [];
    let base = 0;
    let stopped = false;
    trackAllocations(true);
    try {
      outer: for (const chunk of chunks) {
        let pos = 0;
        for (;;) {
          let lastEnd = -1;
          let refused = false;
          const from = pos;
          const ret = f.feed(chunk, pos, (type, body, end) => {
            check(!refused, 'sink called again after it returned false');
            check(end >= from && end <= chunk.length, `sink end ${end} outside [${from}, ${chunk.length}]`);
            got.push({ type, body, at: base + end });
            lastEnd = end;
            if (r.chance(0.15)) refused = true;
            return !refused;
          });
          if (ret === FRAMER_STOPPED) {
            stopped = true;
            break outer;
          }
          check(ret >= from && ret <= chunk.length, `feed returned ${ret} outside [${from}, ${chunk.length}]`);
          if (refused) check(ret === lastEnd, `feed returned ${ret} after the sink refused at ${lastEnd}`);
          else check(ret === chunk.length, `feed stopped at ${ret} of ${chunk.length} without being asked to`);
          if (ret < chunk.length) {
            pos = ret;
            continue;
          }
          break;
        }
        base += chunk.length;
      }
    } finally {
      trackAllocations(false);
    }
    const ref = referenceFrames(stream, startup, wanted, headerOnly, maxPacket);
    check(stopped === ref.error, `framer ${stopped ? 'stopped' : 'did not stop'}; a bad length was ${ref.error ? '' : 'not '}in the stream`);
    if (stopped) check(typeof f.error === 'string' && f.error.length > 0, 'FRAMER_STOPPED without an error message');
    else check(f.error === null, `error set without FRAMER_STOPPED: ${f.error}`);
    check(got.length === ref.events.length, `delivered ${got.length} messages, expected ${ref.events.length}`);
    for (let i = 0; i < got.length; i++) {
      const g = got[i]!;
      const e = ref.events[i]!;
      check(g.type === e.type && g.at === e.at && g.body.equals(e.body), `message ${i}: got type ${g.type} at ${g.at} (${g.body.length} B), expected type ${e.type} at ${e.at} (${e.body.length} B)`);
    }
    check(allocMax <= maxPacket, `allocated ${allocMax} bytes with max_packet_size ${maxPacket}`);
  },
};

// ------------------------------------------------------------------------------------------------
// Target: the untyped first packet

const SSL_CODE = 80877103;
const GSS_CODE = 80877104;
const CANCEL_CODE = 80877102;
const utf8Valid = (b: Buffer): boolean => Buffer.from(b.toString('utf8'), 'utf8').equals(b);

type RefStartup =
  | { kind: 'ssl' | 'gssenc' | 'invalid' }
  | { kind: 'cancel'; pid: number; secret: Buffer }
  | { kind: 'startup'; major: number; minor: number; params: [string, string][] };

/** The startup-packet rules, written again from the protocol docs and the pooler's limits. */
export function referenceStartup(body: Buffer): RefStartup {
  if (body.length < 4) return { kind: 'invalid' };
  const code = body.readUInt32BE(0);
  if (code === SSL_CODE) return { kind: body.length === 4 ? 'ssl' : 'invalid' };
  if (code === GSS_CODE) return { kind: body.length === 4 ? 'gssenc' : 'invalid' };
  if (code === CANCEL_CODE) {
    const keyLen = body.length - 8;
    return keyLen >= 4 && keyLen <= 256 ? { kind: 'cancel', pid: body.readInt32BE(4), secret: body.subarray(8) } : { kind: 'invalid' };
  }
  if (code >>> 16 !== 3) return { kind: 'invalid' };
  const params: [string, string][] = [];
  const names = new Set<string>();
  let pos = 4;
  for (;;) {
    const z = body.indexOf(0, pos);
    if (z < 0) return { kind: 'invalid' };
    if (z === pos) break;
    const z2 = body.indexOf(0, z + 1);
    if (z2 < 0) return { kind: 'invalid' };
    const name = body.subarray(pos, z);
    const value = body.subarray(z + 1, z2);
    if (!utf8Valid(name) || !utf8Valid(value)) return { kind: 'invalid' };
    const n = name.toString('utf8');
    if (names.has(n) || names.size === 1000) return { kind: 'invalid' };
    names.add(n);
    params.push([n, value.toString('utf8')]);
    pos = z2 + 1;
  }
  if (pos !== body.length - 1) return { kind: 'invalid' };
  return { kind: 'startup', major: 3, minor: code & 0xffff, params };
}

const PARAM_NAMES = ['user', 'database', 'options', 'application_name', 'client_encoding', 'replication', '_pq_.x', 'DateStyle', ''];
const VERSIONS = [0x30000, 0x30002, 0x30063, 0x20000, 0x40000, 0x3ffff, 0, SSL_CODE, GSS_CODE, CANCEL_CODE];

const MANY_PARAMS = [999, 1000, 1001].map((n) => {
  const parts = [int32(0x30000)];
  for (let i = 0; i < n; i++) parts.push(cstr(`p${i}`), cstr('v'));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
});

function startupCorpus(r: Rng): Buffer {
  switch (r.chance(0.03) ? 3 : r.pick([0, 1, 2, 4, 4, 4])) {
    case 0:
      return int32(SSL_CODE);
    case 1:
      return int32(GSS_CODE);
    case 2:
      return Buffer.concat([int32(CANCEL_CODE), int32(r.u32() | 0), r.bytes(r.pick([0, 3, 4, 5, 32, 256, 257, r.int(400)]))]);
    case 3: // many small parameters around the 1000 limit (costly: kept rare)
      return r.pick(MANY_PARAMS);
    default: {
      const parts = [int32(r.chance(0.8) ? 0x30000 : r.pick(VERSIONS))];
      const n = r.int(7);
      for (let i = 0; i < n; i++) {
        const name = r.chance(0.8) ? r.pick(PARAM_NAMES) : r.text(r.size(20), 'é€\u{1F600}');
        parts.push(cstr(name), cstr(r.chance(0.8) ? r.text(r.size(40), 'é€') : r.bytes(r.size(10)).toString('latin1')));
      }
      parts.push(Buffer.from([0]));
      return Buffer.concat(parts);
    }
  }
}

const startupTarget: Target = {
  name: 'startup',
  weight: 20,
  run(r, ctx) {
    let body = startupCorpus(r);
    if (r.chance(0.6)) body = mutate(r, body, [cstr('user'), cstr('database'), Buffer.from([0xff, 0xfe]), int32(SSL_CODE)]);
    ctx.input = body;
    const p = decodeStartupPacket(body, r.int(3));
    const ref = referenceStartup(body);
    check(p.kind === ref.kind, `decoded as ${p.kind}, expected ${ref.kind}`);
    if (p.kind === 'invalid') check(typeof p.reason === 'string' && p.reason.length > 0, 'invalid without a reason');
    if (p.kind === 'cancel' && ref.kind === 'cancel') {
      check(p.pid === ref.pid && p.secret.equals(ref.secret), 'cancel key differs');
    }
    if (p.kind === 'startup' && ref.kind === 'startup') {
      check(p.minor === ref.minor, 'minor version differs');
      check(JSON.stringify([...p.params]) === JSON.stringify(ref.params), 'parameters differ');
      // Round trip: encoding what was decoded gives back the exact packet.
      const again = Buffer.concat([body.subarray(0, 4), ...[...p.params].flatMap(([k, v]) => [cstr(k), cstr(v)]), Buffer.from([0])]);
      check(again.equals(body), 'parameters do not re-encode to the packet');
    }
  },
};

// ------------------------------------------------------------------------------------------------
// SCRAM, by hand (RFC 5802 / 7677), independent of src/protocol/scram.ts

const hmac = (key: Buffer, data: Buffer | string): Buffer => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
const xor = (a: Buffer, b: Buffer): Buffer => Buffer.from(a.map((x, i) => x ^ b[i]!));

interface KnownSecret {
  password: string;
  iterations: number;
  salt: Buffer;
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
  text: string;
  parsed: ScramSecret;
}

const secrets = new Map<number, KnownSecret>();

/** A SCRAM secret built here from a password (cached: PBKDF2 runs once per iteration count). */
function knownSecret(iterations: number): KnownSecret {
  let s = secrets.get(iterations);
  if (s !== undefined) return s;
  const password = `pencil-${iterations}`;
  const salt = createHash('sha256').update(`salt${iterations}`).digest().subarray(0, 16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  const storedKey = sha256(clientKey);
  const serverKey = hmac(salted, 'Server Key');
  const text = `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
  const parsed = parseScramSecret(text);
  if (parsed === null) throw new FuzzFailure(`parseScramSecret refused a well-formed secret: ${text}`);
  s = { password, iterations, salt, clientKey, storedKey, serverKey, text, parsed };
  secrets.set(iterations, s);
  return s;
}

const STRICT_B64_32 = /^[A-Za-z0-9+/]{43}=$/;

function clientNonce(r: Rng): string {
  switch (r.int(8)) {
    case 0:
      return r.text(r.pick([0, 1, 511, 512, 513, 2000, 9000]), ',=');
    case 1:
      return 'x'.repeat(r.pick([512, 513, 8200]));
    case 2:
      return r.bytes(r.size(40)).toString('latin1');
    default:
      return r.bytes(18).toString('base64');
  }
}

const GS2 = ['n,,', 'n,,', 'n,,', 'y,,', 'p=tls-server-end-point,,', 'n,a=someone,', 'x,,', 'n,', ''];

/** One client-first message; `valid` says whether a correct server must accept it. */
function clientFirst(r: Rng): { msg: Buffer; valid: boolean; nonce: string; flag: string } {
  const gs2 = r.pick(GS2);
  const nonce = clientNonce(r);
  const user = r.chance(0.8) ? '' : r.text(r.size(20), ',=');
  let bare = `n=${user},r=${nonce}`;
  if (r.chance(0.1)) bare = `m=ext,${bare}`;
  if (r.chance(0.1)) bare = `r=${nonce}`;
  if (r.chance(0.1)) bare += r.pick([',x=ext', ',1=bad', ',', ',zz']);
  const msg = Buffer.from(gs2 + bare, 'latin1');
  const valid = (gs2 === 'n,,' || gs2 === 'y,,') && /^n=[^,]*,r=[\x21-\x2b\x2d-\x7e]{1,512}(,[A-Za-z]=[^,]*)*$/.test(bare) && msg.length <= 8192;
  return { msg, valid, nonce, flag: gs2[0] ?? '' };
}

const scramServerTarget: Target = {
  name: 'scram-server',
  weight: 10,
  run(r, ctx) {
    const known = knownSecret(r.chance(0.5) ? 1 : 4096);
    const serverNonce = r.bytes(18).toString('base64');
    const session = new ScramServerSession(known.parsed, () => serverNonce);
    if (r.chance(0.03)) {
      // Out of order: a final before any first must fail.
      const early = session.handleClientFinal(Buffer.from(`c=biws,r=x,p=${Buffer.alloc(32).toString('base64')}`));
      check(!early.ok, 'client-final accepted before client-first');
      return;
    }
    const first = clientFirst(r);
    let firstMsg = first.msg;
    const mutatedFirst = r.chance(0.3);
    if (mutatedFirst) firstMsg = mutate(r, firstMsg, [Buffer.from(',r='), Buffer.from('n,,'), Buffer.from(',')]);
    ctx.input = { first: firstMsg.toString('latin1') };
    const r1 = session.handleClientFirst(firstMsg);
    if (!mutatedFirst) check(('serverFirst' in r1) === first.valid, `client-first ${first.valid ? 'refused' : 'accepted'}: ${'error' in r1 ? r1.error : ''}`);
    if ('error' in r1) {
      check(typeof r1.error === 'string' && r1.error.length > 0, 'error without text');
      check('error' in session.handleClientFirst(first.msg), 'a second client-first accepted after a failed one');
      return;
    }
    // Whatever was accepted must be well-formed: a printable nonce of bounded size.
    const s = firstMsg.toString('latin1');
    const nonce = /,r=([^,]*)/.exec(s.slice(3))?.[1] ?? /^r=([^,]*)/.exec(s.slice(3))?.[1] ?? '';
    check(firstMsg.length <= 8192, 'accepted an oversized client-first');
    check(/^[\x21-\x2b\x2d-\x7e]{1,512}$/.test(nonce), `accepted client nonce ${JSON.stringify(nonce.slice(0, 40))} (${nonce.length} chars)`);
    check(s[0] === 'n' || s[0] === 'y', 'accepted a GS2 flag other than n/y');
    const serverFirst = r1.serverFirst.toString('latin1');
    check(serverFirst === `r=${nonce}${serverNonce},s=${known.salt.toString('base64')},i=${known.iterations}`, `server-first ${serverFirst}`);

    const cbind = Buffer.from(`${s[0]},,`).toString('base64');
    let withoutProof = `c=${cbind},r=${nonce}${serverNonce}`;
    if (r.chance(0.1)) withoutProof += ',x=extension';
    const auth = Buffer.from(`${s.slice(3)},${serverFirst},${withoutProof}`, 'latin1');
    const proof = xor(known.clientKey, hmac(known.storedKey, auth));
    const valid = `${withoutProof},p=${proof.toString('base64')}`;
    let final: Buffer;
    switch (r.int(10)) {
      case 9: {
        // Correctly signed, but over another nonce or another channel binding: the server must
        // check them, not only the proof.
        const other = r.chance(0.5)
          ? `c=${cbind},r=${r.pick([nonce, `${nonce}${serverNonce}x`, `${nonce}${r.bytes(18).toString('base64')}`, serverNonce])}`
          : `c=${r.pick(['biws', 'eSws', 'cCws', 'biwsYQ==', ''].filter((c) => c !== cbind))},r=${nonce}${serverNonce}`;
        const otherAuth = Buffer.from(`${s.slice(3)},${serverFirst},${other}`, 'latin1');
        final = Buffer.from(`${other},p=${xor(known.clientKey, hmac(known.storedKey, otherAuth)).toString('base64')}`, 'latin1');
        break;
      }
      case 0:
        final = Buffer.from(`${withoutProof},p=${r.bytes(32).toString('base64')}`, 'latin1');
        break;
      case 1:
        final = Buffer.from(`${withoutProof},p=${r.pick(['', '!!!', 'AAAA', proof.toString('base64').slice(0, -1), proof.toString('base64') + 'AAAA', Buffer.concat([proof, proof]).toString('base64')])}`, 'latin1');
        break;
      case 2:
        final = Buffer.from(valid.replace(/^c=[^,]*,/, r.pick(['', 'c=,', 'c=eSws,', 'c=!!,'])), 'latin1');
        break;
      case 3:
        final = Buffer.from(`${withoutProof},x=${'a'.repeat(9000)},p=${proof.toString('base64')}`, 'latin1');
        break;
      case 4:
        final = r.bytes(r.size(200));
        break;
      case 5:
      case 6:
        final = mutate(r, Buffer.from(valid, 'latin1'), [Buffer.from(',p='), Buffer.from('==')]);
        break;
      default:
        final = Buffer.from(valid, 'latin1');
    }
    ctx.input = { first: s, final: final.toString('latin1') };
    const r2 = session.handleClientFinal(final);
    const f = final.toString('latin1');
    const at = f.lastIndexOf(',p=');
    const tail = f.slice(at + 3);
    const expectOk = final.length <= 8192 && at >= 0 && f.slice(0, at) === withoutProof && STRICT_B64_32.test(tail) && Buffer.from(tail, 'base64').equals(proof);
    check(r2.ok === expectOk, `client-final ${r2.ok ? 'accepted' : `refused (${r2.ok ? '' : r2.error})`}, expected ${expectOk ? 'accept' : 'refuse'}`);
    if (r2.ok) {
      check(r2.serverFinal.toString('latin1') === `v=${hmac(known.serverKey, auth).toString('base64')}`, 'wrong server signature');
      check(r2.clientKey.equals(known.clientKey), 'wrong ClientKey recovered');
    }
    check(!session.handleClientFinal(Buffer.from(valid, 'latin1')).ok, 'a second client-final accepted');
  },
};

// ------------------------------------------------------------------------------------------------
// Target: parseScramSecret (auth_file / auth_query secrets), iteration counts included

const ITERATION_TEXTS = ['0', '1', '4096', '2147483647', '2147483648', '4294967295', '4294967296', '-1', '-4096', '99999999999', '0004096', '1e3', '0x10', ' 4096', '4096 ', '', '４０９６', '4096.0', 'NaN', 'Infinity'];

const scramSecretTarget: Target = {
  name: 'scram-secret',
  weight: 10,
  run(r, ctx) {
    const known = knownSecret(1);
    const b64 = (n: number) => r.bytes(n).toString('base64');
    const iter = r.chance(0.7) ? r.pick(ITERATION_TEXTS) : String(r.u32() | 0);
    const salt = r.pick([known.salt.toString('base64'), '', '!!!!', b64(1), b64(16), b64(16).replace(/=+$/, '')]);
    const sk = r.pick([known.storedKey.toString('base64'), b64(31), b64(33), 'AAAA', '']);
    const svk = r.pick([known.serverKey.toString('base64'), b64(32), b64(64), '$$']);
    let text = `SCRAM-SHA-256$${iter}:${salt}$${sk}:${svk}`;
    if (r.chance(0.3)) text = mutateText(r, text, ['$', ':', '=', 'SCRAM-SHA-256$']);
    ctx.input = text;
    const p = parseScramSecret(text);
    if (p === null) return;
    check(Number.isInteger(p.iterations) && p.iterations >= 1 && p.iterations <= 0x7fffffff, `accepted iteration count ${p.iterations}`);
    check(/^SCRAM-SHA-256\$[0-9]{1,10}:/.test(text), 'accepted a secret whose iteration count is not plain digits');
    check(p.salt.length > 0 && p.storedKey.length === 32 && p.serverKey.length === 32, 'accepted wrong key or salt sizes');
  },
};

// ------------------------------------------------------------------------------------------------
// Target: the pooler as SCRAM client against a hostile server (iteration counts, nonces, salts)

const scramClientTarget: Target = {
  name: 'scram-client',
  weight: 10,
  run(r, ctx) {
    // Pass-through keys: no PBKDF2, so a hostile iteration count costs nothing here. A password is
    // used only with small, unmutated counts.
    const keys = { clientKey: r.bytes(32), serverKey: r.bytes(32) };
    const usePassword = r.chance(0.02);
    const session = new ScramClientSession(usePassword ? { password: 'pw' } : keys, { user: r.chance(0.5) ? '' : 'u,=x' });
    const first = session.clientFirst().toString('latin1');
    check(first.startsWith('n,,n='), `client-first ${first}`);
    const cnonce = /,r=([^,]*)$/.exec(first)?.[1] ?? '';
    const iterText = usePassword ? String(1 + r.int(16)) : r.chance(0.6) ? r.pick(ITERATION_TEXTS.concat(['10000000', '10000001', '999999999'])) : String(1 + r.int(100_000));
    const nonce = r.pick([`${cnonce}${r.bytes(18).toString('base64')}`, cnonce, `x${cnonce}`, `${cnonce},`, `${cnonce}\x01`, `${cnonce}${'A'.repeat(9000)}`]);
    const salt = r.pick([r.bytes(16).toString('base64'), '', '!!', 'QUJD']);
    let serverFirst: Buffer = Buffer.from(`r=${nonce},s=${salt},i=${iterText}${r.chance(0.1) ? ',x=1' : ''}`, 'latin1');
    if (r.chance(0.05)) serverFirst = Buffer.from(`m=ext,${serverFirst.toString('latin1')}`, 'latin1');
    const mutated = !usePassword && r.chance(0.3);
    if (mutated) serverFirst = mutate(r, serverFirst, [Buffer.from(',i='), Buffer.from(',s=')]);
    ctx.input = { serverFirst: serverFirst.toString('latin1') };
    const res = session.handleServerFirst(serverFirst);
    if (!Buffer.isBuffer(res)) {
      check(typeof res.error === 'string', 'error without text');
      return;
    }
    // Accepted: every field must have been sane.
    const sf = serverFirst.toString('latin1');
    const m = /^r=([^,]*),s=([^,]*),i=([^,]*)/.exec(sf);
    check(m !== null, `accepted server-first ${sf.slice(0, 80)}`);
    const [, rn = '', rs = '', ri = ''] = m;
    check(rn.startsWith(cnonce) && rn.length > cnonce.length && /^[\x21-\x2b\x2d-\x7e]+$/.test(rn), 'accepted a nonce that does not extend ours');
    check(/^[0-9]{1,9}$/.test(ri) && Number(ri) >= 1 && Number(ri) <= 10_000_000, `accepted iteration count "${ri}"`);
    check(rs.length > 0 && Buffer.from(rs, 'base64').length > 0, 'accepted an empty salt');
    const final = res.toString('latin1');
    const at = final.lastIndexOf(',p=');
    check(at > 0 && final.slice(0, at) === `c=biws,r=${rn}`, `client-final ${final.slice(0, 80)}`);
    if (usePassword) return;
    const auth = Buffer.from(`${first.slice(3)},${sf},${final.slice(0, at)}`, 'latin1');
    const expectedProof = xor(keys.clientKey, hmac(sha256(keys.clientKey), auth));
    check(final.slice(at + 3) === expectedProof.toString('base64'), 'wrong client proof');
    const signature = hmac(keys.serverKey, auth);
    let serverFinal: Buffer = Buffer.from(r.pick([`v=${signature.toString('base64')}`, `v=${r.bytes(32).toString('base64')}`, 'e=invalid-proof', 'v=', `v=${signature.toString('base64')},x=1`]), 'latin1');
    if (r.chance(0.3)) serverFinal = mutate(r, serverFinal);
    ctx.input = { serverFirst: sf, serverFinal: serverFinal.toString('latin1') };
    const v = session.verifyServerFinal(serverFinal);
    const sfinal = serverFinal.toString('latin1').split(',')[0] ?? '';
    const good = sfinal.startsWith('v=') && STRICT_B64_32.test(sfinal.slice(2)) && Buffer.from(sfinal.slice(2), 'base64').equals(signature) && serverFinal.length <= 8192;
    check((v === true) === good, `server-final ${v === true ? 'accepted' : 'refused'}, expected ${good ? 'accept' : 'refuse'}`);
  },
};

// ------------------------------------------------------------------------------------------------
// Target: client auth flows (PasswordMessage, SASLInitialResponse, SASLResponse bodies)

function md5hex(s: Buffer | string): string {
  return createHash('md5').update(s).digest('hex');
}

const authFlowTarget: Target = {
  name: 'auth-flow',
  weight: 8,
  run(r, ctx) {
    const user = r.pick(['alice', 'bob', 'ü', '']);
    const scram = knownSecret(1);
    // Rarely a plaintext secret with SCRAM (a PBKDF2 at 4096 per login, ~3 ms).
    const secretKind = r.chance(0.002) ? 'plain-scram' : r.pick(['plain', 'md5', 'scram', 'none']);
    const password = secretKind === 'scram' ? scram.password : 'correct horse';
    const secret =
      secretKind === 'plain' || secretKind === 'plain-scram' ? password
      : secretKind === 'md5' ? `md5${md5hex(password + user)}`
      : secretKind === 'scram' ? scram.text
      : null;
    let method = secretKind === 'plain-scram' ? 'scram-sha-256' : r.pick(['plain', 'md5', 'scram-sha-256', 'trust', 'any', 'cert'] as const);
    if (secretKind === 'plain' && method === 'scram-sha-256') method = 'md5';
    ctx.input = { method, secretKind, user };
    const flow = authFlow(method, user, secret, 4096);
    const start = flow.start();
    if ('ok' in start) {
      check(method === 'trust' || method === 'any', `${method} logged in without a password`);
      const again = flow.onPassword(r.bytes(r.size(50)));
      check('error' in again, `${method}: a password message after trust was accepted`);
      return;
    }
    if ('error' in start) return;
    const req = start.send;
    check(req[0] === 0x52 && req.readInt32BE(1) === req.length - 1, 'malformed authentication request');
    const code = req.readInt32BE(5);
    // The password the client "knows": right or wrong.
    const typed = r.chance(0.5) ? password : r.pick(['wrong', '', 'correct horse ', 'correct horsé']);
    if (code === 3 || code === 5) {
      let answer: Buffer;
      if (code === 3) answer = cstr(typed);
      else {
        const salt = req.subarray(9, 13);
        answer = cstr(`md5${md5hex(Buffer.concat([Buffer.from(md5hex(typed + user)), salt]))}`);
      }
      const mutated = r.chance(0.3);
      if (mutated) answer = mutate(r, answer, [Buffer.from('md5'), Buffer.from([0])]);
      else if (r.chance(0.05)) answer = answer.subarray(0, answer.length - 1); // no NUL
      ctx.input = { method, secretKind, user, typed, answer };
      const res = flow.onPassword(answer);
      const sent = answer.toString('utf8', 0, answer.indexOf(0) < 0 ? answer.length : answer.indexOf(0));
      const expected = code === 3 ? password : `md5${md5hex(Buffer.concat([Buffer.from(md5hex(password + user)), req.subarray(9, 13)]))}`;
      const mayPass = secret !== null && sent === expected;
      check(('ok' in res) === mayPass, `${method}/${secretKind}: password ${'ok' in res ? 'accepted' : 'refused'}, expected ${mayPass ? 'accept' : 'refuse'}`);
      return;
    }
    check(code === 10, `unexpected auth request code ${code}`);
    // SASL: SASLInitialResponse then SASLResponse, each maybe mutated.
    const first = clientFirst(r);
    const data = r.chance(0.8) ? Buffer.from(`n,,n=,r=${r.bytes(18).toString('base64')}`) : first.msg;
    let initial: Buffer = Buffer.concat([cstr(r.chance(0.95) ? 'SCRAM-SHA-256' : r.pick(['SCRAM-SHA-256-PLUS', 'PLAIN', ''])), int32(r.chance(0.95) ? data.length : r.pick(INTERESTING_INT32)), data]);
    const mutatedInitial = r.chance(0.2);
    if (mutatedInitial) initial = mutate(r, initial);
    ctx.input = { method, secretKind, user, initial: initial.toString('latin1') };
    const r1 = flow.onPassword(initial);
    if (!('send' in r1)) {
      check('error' in r1, 'SASLInitialResponse logged in');
      return;
    }
    const cont = r1.send;
    check(cont[0] === 0x52 && cont.readInt32BE(5) === 11, 'expected AuthenticationSASLContinue');
    const serverFirst = cont.subarray(9).toString('latin1');
    const m = /^r=([^,]+),s=([^,]+),i=([0-9]+)$/.exec(serverFirst);
    check(m !== null, `server-first ${serverFirst}`);
    const [, nonce = '', saltB64 = '', iters = ''] = m;
    // The client side, by hand: with the typed password, or with the known keys when it is right.
    const clientKey =
      typed === password && secret !== null && secretKind !== 'md5' ? (secretKind === 'scram' ? scram.clientKey : hmac(pbkdf2Sync(password, Buffer.from(saltB64, 'base64'), Number(iters), 32, 'sha256'), 'Client Key'))
      : r.bytes(32);
    const bare = initial.subarray(initial.indexOf(0) + 5 + 3).toString('latin1');
    const withoutProof = `c=biws,r=${nonce}`;
    const auth = `${bare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), auth));
    let final: Buffer = Buffer.from(`${withoutProof},p=${proof.toString("base64")}`, "latin1");
    const mutatedFinal = r.chance(0.2);
    if (mutatedFinal) final = mutate(r, final);
    ctx.input = { method, secretKind, user, initial: initial.toString('latin1'), final: final.toString('latin1') };
    const r2 = flow.onPassword(final);
    if ('ok' in r2) {
      check(secret !== null && secretKind !== 'md5', `SCRAM login with no usable secret (${secretKind})`);
      check(typed === password, 'SCRAM login with a wrong password');
    } else if (!mutatedInitial && !mutatedFinal && typed === password && secret !== null && secretKind !== 'md5' && initial.subarray(0, 14).toString() === 'SCRAM-SHA-256\0' && data !== first.msg) {
      throw new FuzzFailure(`a correct SCRAM exchange was refused: ${'error' in r2 ? r2.error.message : '?'}`);
    }
    check('error' in flow.onPassword(final), 'a third SASL message was accepted');
  },
};

// ------------------------------------------------------------------------------------------------
// Target: the pooler's side of server login (Authentication requests from a hostile server)

const serverAuthTarget: Target = {
  name: 'server-auth',
  weight: 8,
  run(r, ctx) {
    const creds = r.pick([
      { kind: 'none' as const },
      { kind: 'md5' as const, hash: `md5${md5hex('x')}` },
      { kind: 'scram-keys' as const, clientKey: r.bytes(32), serverKey: r.bytes(32) },
      { kind: 'password' as const, password: 'pw' },
    ]);
    const auth = new ServerAuth('u', creds);
    const steps = 1 + r.int(3);
    const fed: string[] = [];
    ctx.input = fed;
    for (let i = 0; i < steps; i++) {
      let body: Buffer;
      switch (r.int(7)) {
        case 0:
          body = int32(0);
          break;
        case 1:
          body = int32(3);
          break;
        case 2:
          body = Buffer.concat([int32(5), r.bytes(r.pick([0, 3, 4, 8]))]);
          break;
        case 3:
          body = Buffer.concat([int32(10), cstr(r.pick(['SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS', 'GSSAPI', ''])), Buffer.from([0])]);
          break;
        case 4: // server-first; with a password only small, unmutated iteration counts
          body = Buffer.concat([int32(11), Buffer.from(`r=${r.bytes(8).toString('base64')},s=QUJD,i=${creds.kind === 'password' ? 1 + r.int(8) : r.pick(ITERATION_TEXTS)}`)]);
          break;
        case 5:
          body = Buffer.concat([int32(12), Buffer.from(`v=${r.bytes(32).toString('base64')}`)]);
          break;
        default:
          body = r.bytes(r.size(40));
      }
      if (creds.kind !== 'password' && r.chance(0.3)) body = mutate(r, body);
      fed.push(body.toString('hex'));
      const step = auth.onAuthentication(body);
      check('reply' in step || 'done' in step || 'wait' in step || 'error' in step, 'unknown step');
      if ('error' in step) break;
      if ('reply' in step) check(step.reply[0] === 0x70 && step.reply.readInt32BE(1) === step.reply.length - 1, 'malformed reply');
    }
  },
};

// ------------------------------------------------------------------------------------------------
// Target: ErrorResponse / NoticeResponse fields

const errorFieldsTarget: Target = {
  name: 'error-fields',
  weight: 15,
  run(r, ctx) {
    const f = {
      severity: r.pick(['ERROR', 'FATAL', 'PANIC', '']),
      code: r.pick(['08P01', '28P01', '', 'XXXXXX']),
      message: r.text(r.size(80), 'é\0\u{1F600}'),
      detail: r.chance(0.5) ? r.text(r.size(40), '\0') : undefined,
      hint: r.chance(0.3) ? r.text(r.size(40)) : undefined,
    };
    const encoded = encodeErrorResponse(f);
    check(encoded.readInt32BE(1) === encoded.length - 1 && encoded[encoded.length - 1] === 0, 'malformed ErrorResponse');
    let body = encoded.subarray(5);
    const mutated = r.chance(0.7);
    if (mutated) body = r.chance(0.2) ? r.bytes(r.size(200)) : mutate(r, body);
    ctx.input = body;
    const d = decodeErrorFields(body);
    for (const k of Object.keys(d)) check(k.length === 1 && k !== '\0', `field key ${JSON.stringify(k)}`);
    if (!mutated) {
      const strip = (s: string) => s.replaceAll('\0', '');
      check(d.S === strip(f.severity) && d.V === strip(f.severity) && d.C === strip(f.code) && d.M === strip(f.message), 'round trip lost a field');
      check(d.D === (f.detail === undefined ? undefined : strip(f.detail)) && d.H === f.hint, 'round trip lost detail/hint');
    }
  },
};

// ------------------------------------------------------------------------------------------------
// Target: prepared-statement rewriting (Parse/Bind/Describe/Close bodies)

const preparedTarget: Target = {
  name: 'prepared',
  weight: 8,
  run(r, ctx) {
    const max = r.int(4);
    const stmts = new ClientStatements(max, { clientParses: 0, serverParses: 0, binds: 0 });
    const server = { inTransaction: r.chance(0.2), prepared: new Map<string, true>(), lastBound: null, replies: new ReplyQueue() };
    const names = ['', 's1', 's2', 'S_1', 'ü', 'PGPOOL_1'];
    const fed: string[] = [];
    ctx.input = fed;
    const steps = 1 + r.int(10);
    for (let i = 0; i < steps; i++) {
      const type = r.pick([0x50, 0x42, 0x44, 0x43]);
      let body: Buffer;
      if (type === 0x50) body = Buffer.concat([cstr(r.pick(names)), cstr(r.pick([`SELECT ${r.int(5)}`, 'DEALLOCATE s1', 'deallocate all', 'DISCARD ALL', 'DEALLOCATE "s2";'])), Buffer.from([0, r.int(2)]), r.bytes(4)]);
      else if (type === 0x42) body = Buffer.concat([cstr(r.pick(names)), cstr(r.pick(names)), Buffer.from([0, 0, 0, 0, 0, 0])]);
      else body = Buffer.concat([Buffer.from(r.pick(['S', 'P', 'X'])), cstr(r.pick(names))]);
      if (r.chance(0.4)) body = mutate(r, body);
      fed.push(`${String.fromCharCode(type)}:${body.toString('hex')}`);
      // The SQL peek behind DEALLOCATE / DISCARD ALL handling (short texts only, as the pooler).
      const d = deallocation(body.toString('utf8', 0, Math.min(body.length, 300)));
      check(d === null || ('all' in d && typeof d.discard === 'boolean') || ('name' in d && d.name.length > 0), 'bad deallocation() result');
      const out: Buffer[] = [];
      const changed = stmts.rewrite(type, body, server, out);
      if (!changed) check(out.length === 0, 'unchanged but produced messages');
      for (const m of out) {
        check(m.length >= 5 && m.readInt32BE(1) === m.length - 1, 'malformed rewritten message');
        check([0x50, 0x42, 0x44, 0x43].includes(m[0]!), `rewritten to type ${m[0]}`);
      }
      if (max > 0) check(server.prepared.size <= max, `server holds ${server.prepared.size} statements, max ${max}`);
    }
  },
};

// ------------------------------------------------------------------------------------------------
// Targets: operator-facing text (hba, ident, auth_file, connection strings, the ini loader)

const HBA_LINES = [
  'local all all trust',
  'host all all 127.0.0.1/32 md5',
  'host all all ::1/128 scram-sha-256',
  'hostssl p0,p1 alice,"b ob" 10.0.0.0/8 cert map=m1',
  'hostnossl sameuser all 0.0.0.0/0 reject',
  'host all +grp 192.168.0.0 255.255.0.0 password',
  'host replication all all peer',
  'host "all" all samehost trust',
  'host all @users.txt all md5',
  'include other.conf',
  '# a comment',
  'host all all fe80::1%eth0/64 md5',
  'host all all ::ffff:10.0.0.0/104 trust',
  'host all all all ldap ldapserver=x',
];

const hbaTarget: Target = {
  name: 'hba',
  weight: 6,
  run(r, ctx) {
    const lines: string[] = [];
    const n = 1 + r.int(6);
    for (let i = 0; i < n; i++) lines.push(r.pick(HBA_LINES));
    let text = lines.join(r.pick(['\n', '\r\n']));
    if (r.chance(0.7)) text = mutateText(r, text, ['"', ',', '/', ' ', '\\\n', 'all', '::', '/33', '/129']);
    ctx.input = text;
    const res = parseHba(text, path.join(os.tmpdir(), 'pgpool-fuzz-nonexistent', 'hba.conf'));
    check(Array.isArray(res.rules) && Array.isArray(res.problems), 'bad result shape');
    for (const p of res.problems) check(typeof p.message === 'string' && p.line >= 0, 'bad problem');
    for (let i = 0; i < 4; i++) {
      const conn: HbaConn = {
        unix: r.chance(0.2),
        tls: r.chance(0.5),
        addr: r.pick(['127.0.0.1', '::1', '10.1.2.3', '::ffff:10.1.2.3', 'fe80::1%eth0', 'garbage', '', '192.168.1.1']),
        database: r.pick(['p0', 'p1', 'alice', 'all']),
        user: r.pick(['alice', 'b ob', 'carol', 'all']),
        replication: r.chance(0.1),
      };
      const rule = matchHba(res.rules, conn);
      if (rule !== null) check(res.rules.includes(rule), 'matched a rule not in the list');
    }
  },
};

const IDENT_LINES = ['m1 alice bob', 'm1 "carol x" all', 'm2 /^(.*)$ \\1', 'm3 dave +grp', 'include_dir x', 'm4 "all" "all"', '# c', 'm5 a'];

const identTarget: Target = {
  name: 'ident',
  weight: 4,
  run(r, ctx) {
    let text = Array.from({ length: 1 + r.int(5) }, () => r.pick(IDENT_LINES)).join('\n');
    if (r.chance(0.7)) text = mutateText(r, text, ['"', ' ', '\n']);
    ctx.input = text;
    const res = parseIdentMap(text, 'ident.conf');
    check(res.maps instanceof Map && Array.isArray(res.problems), 'bad result shape');
  },
};

const AUTH_FILE_LINES = ['"alice" "secret"', '"b""ob" "md5' + '0'.repeat(32) + '"', '; comment', '"carol" ""', '"dave"', '"eve" "x" extra'];

const authFileTarget: Target = {
  name: 'auth-file',
  weight: 4,
  run(r, ctx) {
    const scram = knownSecret(1);
    let text = Array.from({ length: 1 + r.int(5) }, () => r.pick([...AUTH_FILE_LINES, `"sc" "${scram.text}"`])).join('\n');
    if (r.chance(0.7)) text = mutateText(r, text, ['"', '""', '$', ':']);
    ctx.input = text;
    const res = parseAuthFile(text, 'userlist.txt');
    check(res.entries instanceof Map && Array.isArray(res.problems), 'bad result shape');
  },
};

const DB_DEFS = [
  "host=127.0.0.1 port=5432 dbname=p0 user=u password='x y' pool_size=5 pool_mode=transaction",
  "host=a,b port=5432,5433 load_balance_hosts=round-robin connect_query='SELECT 1' auth_user=a",
  'host=/tmp dbname=p1 max_db_connections=3 server_lifetime=60 reserve_pool_size=2 min_pool_size=1',
  "dbname='it''s' application_name=x client_encoding=UTF8 datestyle=ISO timezone=UTC",
];
const USER_DEFS = ['pool_mode=session pool_size=3 max_user_connections=2', 'query_timeout=3 idle_transaction_timeout=1.5 client_idle_timeout=0', 'reserve_pool_size=x'];

const connstrTarget: Target = {
  name: 'connstr',
  weight: 6,
  run(r, ctx) {
    const user = r.chance(0.3);
    let text = r.pick(user ? USER_DEFS : DB_DEFS);
    if (r.chance(0.8)) text = mutateText(r, text, ["'", '\\', '=', ' ', ',']);
    ctx.input = text;
    const res = user ? parseUserDef('u', text) : parseDatabaseDef('p0', text);
    check(res.ok || (Array.isArray(res.problems) && res.problems.length > 0), 'refused without a problem');
  },
};

let configDir: string | null = null;
let configKeys: string[] = [];

function configBase(dir: string): string {
  return `[databases]
p0 = host=127.0.0.1 port=5432 dbname=p0
* = host=127.0.0.1
[users]
alice = pool_mode=session max_user_connections=3
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = md5
auth_file = ${dir}/userlist.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 20
server_tls_sslmode = prefer
admin_users = admin
stats_users = fuzzstats
ignore_startup_parameters = extra_float_digits
server_reset_query = DISCARD ALL; SELECT 1
%include ${dir}/inc.ini
`;
}

function configSetup(): string {
  if (configDir !== null) return configDir;
  // A file is written per case: on tmpfs when there is one (a disk write costs ~1 ms here).
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'pgpool-fuzz-config-'));
  fs.writeFileSync(path.join(dir, 'userlist.txt'), '"alice" "secret"\n"admin" "md5' + '0'.repeat(32) + '"\n');
  fs.writeFileSync(path.join(dir, 'inc.ini'), '[pgbouncer]\nmax_prepared_statements = 10\n');
  fs.writeFileSync(path.join(dir, 'pgpool.ini'), configBase(dir));
  configKeys = settingRows(loadConfig(path.join(dir, 'pgpool.ini'))).map((row) => row.key);
  configDir = dir;
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const CONFIG_VALUES = ['0', '1', '-1', '2147483648', '1e9', 'yes', 'off', '', '""', "'q'", 'garbage', '*', '127.0.0.1,::1', '/nonexistent/file', 'md5', 'transaction', '0.5', ' spaced '];

const configTarget: Target = {
  name: 'config',
  weight: 1,
  run(r, ctx) {
    const dir = configSetup();
    const lines = configBase(dir).split('\n');
    const extra = r.int(6);
    for (let i = 0; i < extra; i++) {
      const at = r.int(lines.length + 1);
      const key = r.chance(0.9) ? r.pick(configKeys) : r.text(r.size(12));
      lines.splice(at, 0, r.chance(0.1) ? r.pick(['[pgbouncer]', '[databases]', '[users]', '[peers]', '[nope]', '%include', `%include ${dir}/pgpool.ini`, `%include ${dir}/case.ini`, `%include ${dir}`]) : `${key} = ${r.chance(0.8) ? r.pick(CONFIG_VALUES) : r.text(r.size(30))}`);
    }
    let text = lines.join('\n');
    if (r.chance(0.5)) text = mutateText(r, text, ['=', '[', ']', '"', '%include ', '\n', ';']);
    ctx.input = text;
    const file = path.join(dir, 'case.ini');
    fs.writeFileSync(file, text);
    const userlist = r.chance(0.2);
    if (userlist) fs.writeFileSync(path.join(dir, 'userlist.txt'), mutateText(r, '"alice" "secret"\n"admin" "x"\n', ['"']));
    try {
      const cfg = loadConfig(file);
      check(typeof cfg === 'object' && cfg !== null, 'loadConfig returned no config');
    } catch (err) {
      if (err instanceof FuzzFailure || err instanceof ConfigError) return;
      throw new FuzzFailure(`loadConfig threw ${(err as Error).name}, not ConfigError: ${(err as Error).stack ?? String(err)}`);
    } finally {
      if (userlist) fs.writeFileSync(path.join(dir, 'userlist.txt'), '"alice" "secret"\n');
    }
  },
};

// ------------------------------------------------------------------------------------------------
// Target: the admin console's command parser, as a stats user (who cannot change anything)

let consoleState: { client: ClientConn; execute: (client: ClientConn, sql: string) => unknown } | null = null;

function consoleSetup(): NonNullable<typeof consoleState> {
  if (consoleState !== null) return consoleState;
  // The console logs every error it answers (PgBouncer's admin_error): not here, a million times.
  configureLog({ logfile: null, format: 'text', verbose: 0, quiet: true });
  const cfg = loadConfig(path.join(configSetup(), 'pgpool.ini'));
  const host = {
    cfg,
    registry: new Registry(cfg, buildTlsContexts(cfg, false)),
    clients: new Set<ClientConn>(),
    version: 'fuzz',
    stopping: false,
    instance: null,
    peers: new Peers(() => cfg),
    reload: () => ({ ok: false as const, error: 'not in the fuzzer' }),
    shutdown: async () => undefined,
  };
  const con = new Console(host as unknown as AdminHost);
  const client = { user: 'fuzzstats', phase: 'ready', admin: true, socket: { write: () => true } } as unknown as ClientConn;
  check(con.login(client) === null, 'the stats user was refused');
  // execute() is private: it is the parser and dispatcher, without the per-session promise chain.
  const execute = (con as unknown as { execute(c: ClientConn, sql: string): unknown }).execute.bind(con);
  consoleState = { client, execute };
  return consoleState;
}

/** One console command as the fuzzing stats user: the reply and how long the parser took. */
export function consoleExecute(sql: string): { reply: unknown; ms: number } {
  const { client, execute } = consoleSetup();
  const t0 = performance.now();
  const reply = execute(client, sql);
  return { reply, ms: performance.now() - t0 };
}

/** The directory holding the config fuzzer's files (a base pgpool.ini, userlist.txt, inc.ini). */
export function configFixtureDir(): string {
  return configSetup();
}

const CONSOLE_SQL = [
  'SHOW POOLS', 'SHOW HELP', 'SHOW CONFIG', 'SHOW DATABASES', 'SHOW CLIENTS', 'SHOW STATS', 'SHOW VERSION',
  'SET client_encoding = utf8', "SET default_pool_size = '3'", 'set application_name to "x"', 'PAUSE p0',
  'KILL_CLIENT 1', 'RELOAD;', 'SHOW "odd ""name"""', ';', '', 'SELECT 1',
];

const consoleTarget: Target = {
  name: 'console',
  weight: 4,
  run(r, ctx) {
    const { client, execute } = consoleSetup();
    let sql = r.pick(CONSOLE_SQL);
    if (r.chance(0.6)) sql = mutateText(r, sql, [' ', '"', "'", ';', '=', ' to ', 'show ', 'set ']);
    // Rarely, a long run of blanks: a linear parser answers in well under a millisecond.
    if (r.chance(0.001)) sql = `SET a${' '.repeat(20_000)}x`;
    ctx.input = sql.length > 300 ? `${sql.slice(0, 100)}… (${sql.length} chars)` : sql;
    const t0 = performance.now();
    const reply = execute(client, sql);
    const ms = performance.now() - t0;
    check(!(reply instanceof Promise), `a stats user's command started an asynchronous action: ${sql.slice(0, 60)}`);
    check(reply === null || Array.isArray(reply), 'bad reply shape');
    for (const m of (reply ?? []) as Buffer[]) check(Buffer.isBuffer(m) && m.length >= 5 && m.readInt32BE(1) === m.length - 1, 'malformed reply message');
    check(sql.length > 50_000 || ms < 200, `the console took ${ms.toFixed(0)} ms to answer ${sql.length} characters`);
  },
};

// ------------------------------------------------------------------------------------------------

export const TARGETS: readonly Target[] = [
  framerTarget,
  startupTarget,
  scramServerTarget,
  scramSecretTarget,
  scramClientTarget,
  authFlowTarget,
  serverAuthTarget,
  errorFieldsTarget,
  preparedTarget,
  hbaTarget,
  identTarget,
  authFileTarget,
  connstrTarget,
  configTarget,
  consoleTarget,
];

export interface Failure {
  target: string;
  caseSeed: number;
  error: string;
  input: string;
}

export interface FuzzReport {
  total: number;
  ms: number;
  perTarget: Record<string, { cases: number; failures: number; ms: number }>;
  failures: Failure[];
}

/** The seed of case `i` of target `t` in a campaign seeded with `seed`. */
function caseSeed(seed: number, t: number, i: number): number {
  let h = (seed ^ Math.imul(t + 1, 0x85ebca6b) ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

function describeInput(input: unknown): string {
  const s = JSON.stringify(input, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && (v as { type?: string }).type === 'Buffer') {
      const data = (v as { data: number[] }).data;
      return `hex:${Buffer.from(data.slice(0, 600)).toString('hex')}${data.length > 600 ? `…(${data.length} B)` : ''}`;
    }
    return v;
  });
  return s === undefined ? String(input) : s.length > 2000 ? `${s.slice(0, 2000)}…` : s;
}

/** Run one case; a failure or null. */
export function runCase(target: Target, seed: number): Failure | null {
  const ctx: CaseContext = { input: undefined };
  try {
    target.run(new Rng(seed), ctx);
    return null;
  } catch (err) {
    const e = err as Error;
    const error = err instanceof FuzzFailure ? e.message : `threw ${e.name}: ${e.message}\n${(e.stack ?? '').split('\n').slice(1, 6).join('\n')}`;
    return { target: target.name, caseSeed: seed, error, input: describeInput(ctx.input) };
  }
}

export interface FuzzOptions {
  seed: number;
  /** Stop after this many cases in all (split by weight)… */
  count?: number;
  /** …or after this long. */
  budgetMs?: number;
  targets?: readonly Target[];
  /** Called now and then with the cases run so far. */
  progress?: (done: number) => void;
}

/** Run targets round-robin by weight until `count` cases or `budgetMs` is reached. */
export function runFuzz(opts: FuzzOptions): FuzzReport {
  const targets = opts.targets ?? TARGETS;
  if (targets.length === 0) throw new Error('runFuzz: no targets');
  const started = performance.now();
  const perTarget: FuzzReport['perTarget'] = {};
  const failures: Failure[] = [];
  const indices = targets.map(() => 0);
  for (const t of targets) perTarget[t.name] = { cases: 0, failures: 0, ms: 0 };
  const limit = opts.count ?? Number.POSITIVE_INFINITY;
  const deadline = opts.budgetMs === undefined ? Number.POSITIVE_INFINITY : started + opts.budgetMs;
  let total = 0;
  let reported = 0;
  while (total < limit && performance.now() < deadline) {
    for (let ti = 0; ti < targets.length && total < limit; ti++) {
      const t = targets[ti]!;
      const stat = perTarget[t.name]!;
      const t0 = performance.now();
      for (let k = 0; k < t.weight && total < limit; k++) {
        const f = runCase(t, caseSeed(opts.seed, ti, indices[ti]!++));
        stat.cases++;
        total++;
        if (f !== null) {
          stat.failures++;
          if (failures.length < 200) failures.push(f);
        }
      }
      stat.ms += performance.now() - t0;
    }
    if (opts.progress !== undefined && total - reported >= 50_000) {
      reported = total;
      opts.progress(total);
    }
  }
  return { total, ms: performance.now() - started, perTarget, failures };
}

// ------------------------------------------------------------------------------------------------
// Command line

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}

function main(): void {
  const replay = arg('--replay');
  if (replay !== undefined) {
    const [name, seed] = replay.split(':');
    const t = TARGETS.find((x) => x.name === name);
    if (t === undefined || seed === undefined) throw new Error(`--replay target:seed; targets: ${TARGETS.map((x) => x.name).join(', ')}`);
    const f = runCase(t, Number(seed));
    console.log(f === null ? `${replay}: passes` : `${replay}: FAILS\n  ${f.error}\n  input: ${f.input}`);
    process.exit(f === null ? 0 : 1);
  }
  const count = Number(arg('--count') ?? 1_000_000);
  const seed = Number(arg('--seed') ?? (Date.now() >>> 0));
  const names = arg('--targets')?.split(',');
  const targets = names === undefined ? TARGETS : TARGETS.filter((t) => names.includes(t.name));
  if (targets.length === 0) throw new Error(`no such target: ${names?.join(',')}; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  const heap0 = process.memoryUsage();
  console.log(`fuzz: ${count} inputs over ${targets.length} targets, seed ${seed} (replay a case with --replay target:caseSeed)`);
  const report = runFuzz({
    seed,
    count,
    targets,
    progress: (n) => process.stderr.write(`\r  ${n} inputs…`),
  });
  process.stderr.write('\n');
  const heap1 = process.memoryUsage();
  const rows = Object.entries(report.perTarget).map(([name, s]) => [name, String(s.cases), String(s.failures), s.cases === 0 ? '-' : ((s.ms * 1000) / s.cases).toFixed(1)]);
  const head = ['target', 'inputs', 'failures', 'µs/input'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  console.log(`total: ${report.total} inputs in ${(report.ms / 1000).toFixed(1)} s (${Math.round(report.total / (report.ms / 1000))}/s), ${report.failures.length} failure(s)`);
  console.log(`memory: heapUsed ${(heap0.heapUsed / 2 ** 20).toFixed(0)} → ${(heap1.heapUsed / 2 ** 20).toFixed(0)} MB, rss ${(heap0.rss / 2 ** 20).toFixed(0)} → ${(heap1.rss / 2 ** 20).toFixed(0)} MB`);
  for (const f of report.failures.slice(0, 20)) {
    console.log(`\nFAIL ${f.target} (--replay ${f.target}:${f.caseSeed})\n  ${f.error}\n  input: ${f.input}`);
  }
  process.exit(report.failures.length === 0 ? 0 : 1);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
