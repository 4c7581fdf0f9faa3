// Backend messages the pooler sends itself: login replies and the admin console's result sets.
// Each dynamic message is a fresh Buffer of its exact size: socket.write() keeps a reference, so a
// shared scratch buffer would be overwritten before it is sent. Constant messages are built once.

import { AuthCode, Backend, TxStatus } from './codes.js';
import { encodeErrorResponse, encodeNoticeResponse, withoutNul } from './error-response.js';

export const errorResponse = encodeErrorResponse;
export const noticeResponse = encodeNoticeResponse;

class MessageWriter {
  readonly buf: Buffer;
  private pos = 5;

  constructor(type: number, bodySize: number) {
    this.buf = Buffer.alloc(5 + bodySize);
    this.buf[0] = type;
    this.buf.writeInt32BE(4 + bodySize, 1);
  }

  int16(n: number): this {
    this.pos = this.buf.writeInt16BE(n, this.pos);
    return this;
  }

  int32(n: number): this {
    this.pos = this.buf.writeInt32BE(n, this.pos);
    return this;
  }

  bytes(b: Buffer): this {
    this.pos += b.copy(this.buf, this.pos);
    return this;
  }

  /** `s` must be free of NULs (withoutNul) and sized with cstrSize. */
  cstr(s: string): this {
    this.pos += this.buf.write(s, this.pos);
    this.buf[this.pos++] = 0;
    return this;
  }

  /** A string as counted bytes (DataRow values), no terminator. */
  str(s: string): this {
    this.pos += this.buf.write(s, this.pos);
    return this;
  }
}

function cstrSize(s: string): number {
  return Buffer.byteLength(s) + 1;
}

function authMessage(code: number, extra: Buffer | null): Buffer {
  const w = new MessageWriter(Backend.Authentication, 4 + (extra?.length ?? 0)).int32(code);
  if (extra !== null) w.bytes(extra);
  return w.buf;
}

export const authenticationOk = authMessage(AuthCode.Ok, null);
export const authenticationCleartextPassword = authMessage(AuthCode.CleartextPassword, null);

export function authenticationMD5Password(salt: Buffer): Buffer {
  if (salt.length !== 4) throw new RangeError(`md5 salt must be 4 bytes, got ${salt.length}`);
  return authMessage(AuthCode.MD5Password, salt);
}

export function authenticationSASL(mechanisms: string[]): Buffer {
  const names = mechanisms.map(withoutNul);
  let size = 4 + 1;
  for (const m of names) size += cstrSize(m);
  const w = new MessageWriter(Backend.Authentication, size).int32(AuthCode.SASL);
  for (const m of names) w.cstr(m);
  return w.buf;
}

export function authenticationSASLContinue(data: Buffer): Buffer {
  return authMessage(AuthCode.SASLContinue, data);
}

export function authenticationSASLFinal(data: Buffer): Buffer {
  return authMessage(AuthCode.SASLFinal, data);
}

export function parameterStatus(name: string, value: string): Buffer {
  const n = withoutNul(name);
  const v = withoutNul(value);
  return new MessageWriter(Backend.ParameterStatus, cstrSize(n) + cstrSize(v)).cstr(n).cstr(v).buf;
}

/** The secret is 4 bytes in protocol 3.0 and up to 256 in 3.2. */
export function backendKeyData(pid: number, secret: Buffer): Buffer {
  if (secret.length < 4 || secret.length > 256) {
    throw new RangeError(`cancel key must be 4 to 256 bytes, got ${secret.length}`);
  }
  return new MessageWriter(Backend.BackendKeyData, 4 + secret.length).int32(pid).bytes(secret).buf;
}

function readyForQueryMessage(status: number): Buffer {
  const buf = new MessageWriter(Backend.ReadyForQuery, 1).buf;
  buf[5] = status;
  return buf;
}

const rfqIdle = readyForQueryMessage(TxStatus.Idle);
const rfqInTransaction = readyForQueryMessage(TxStatus.InTransaction);
const rfqFailed = readyForQueryMessage(TxStatus.Failed);

/** Returns a shared constant: never mutate it. */
export function readyForQuery(status: number): Buffer {
  switch (status) {
    case TxStatus.Idle:
      return rfqIdle;
    case TxStatus.InTransaction:
      return rfqInTransaction;
    case TxStatus.Failed:
      return rfqFailed;
    default:
      throw new RangeError(`invalid transaction status ${status}`);
  }
}

/** Tells a client asking for a newer minor version, or for `_pq_.` options, what we accept.
 * The version field is a whole protocol version (major 3 in the high 16 bits), as PostgreSQL sends. */
export function negotiateProtocolVersion(newestMinor: number, unsupported: string[]): Buffer {
  const names = unsupported.map(withoutNul);
  let size = 4 + 4;
  for (const n of names) size += cstrSize(n);
  const w = new MessageWriter(Backend.NegotiateProtocolVersion, size)
    .int32((3 << 16) | newestMinor)
    .int32(names.length);
  for (const n of names) w.cstr(n);
  return w.buf;
}

export interface Column {
  name: string;
  typeOid: number;
}

// pg_type.typlen of the fixed-width types the admin console reports; others are sent as varlena.
const TYPLEN = new Map<number, number>([
  [16, 1], // bool
  [20, 8], // int8
  [21, 2], // int2
  [23, 4], // int4
  [26, 4], // oid
  [701, 8], // float8
]);

export function rowDescription(columns: Column[]): Buffer {
  const names = columns.map((c) => withoutNul(c.name));
  let size = 2;
  for (const n of names) size += cstrSize(n) + 18;
  const w = new MessageWriter(Backend.RowDescription, size).int16(columns.length);
  columns.forEach((c, i) => {
    w.cstr(names[i]!)
      .int32(0) // table oid
      .int16(0) // attnum
      .int32(c.typeOid)
      .int16(TYPLEN.get(c.typeOid) ?? -1)
      .int32(-1) // typmod
      .int16(0); // text format
  });
  return w.buf;
}

export function dataRow(values: (string | null)[]): Buffer {
  const lengths = values.map((v) => (v === null ? -1 : Buffer.byteLength(v)));
  let size = 2;
  for (const n of lengths) size += 4 + Math.max(n, 0);
  const w = new MessageWriter(Backend.DataRow, size).int16(values.length);
  values.forEach((v, i) => {
    w.int32(lengths[i]!);
    if (v !== null) w.str(v);
  });
  return w.buf;
}

export function commandComplete(tag: string): Buffer {
  const t = withoutNul(tag);
  return new MessageWriter(Backend.CommandComplete, cstrSize(t)).cstr(t).buf;
}

export const emptyQueryResponse = new MessageWriter(Backend.EmptyQueryResponse, 0).buf;
