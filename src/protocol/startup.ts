// The untyped first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest or
// CancelRequest, told apart by the 32-bit "protocol version" that starts the body.

import { ProtocolCode } from './codes.js';

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: Buffer }
  | { kind: 'startup'; major: number; minor: number; params: Map<string, string> }
  | { kind: 'invalid'; reason: string };

const MAX_PARAMS = 1000;
// Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
const MIN_CANCEL_KEY = 4;
const MAX_CANCEL_KEY = 256;

// ignoreBOM keeps a leading U+FEFF in a value instead of silently dropping it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * `body` is the packet without its 4-byte length. `newestMinor` only words the error for an
 * unsupported major version; a newer minor version is accepted here and negotiated by the caller.
 */
export function decodeStartupPacket(body: Buffer, newestMinor = 0): StartupPacket {
  if (body.length < 4) return invalid(`invalid length of startup packet`);
  const code = body.readUInt32BE(0);
  switch (code) {
    case ProtocolCode.SSLRequest:
      return body.length === 4 ? { kind: 'ssl' } : invalid('invalid length of SSLRequest');
    case ProtocolCode.GSSENCRequest:
      return body.length === 4 ? { kind: 'gssenc' } : invalid('invalid length of GSSENCRequest');
    case ProtocolCode.CancelRequest: {
      const keyLen = body.length - 8;
      if (keyLen < MIN_CANCEL_KEY || keyLen > MAX_CANCEL_KEY) {
        return invalid('invalid length of cancel request');
      }
      // Copied so that a pending cancel does not pin the whole socket chunk.
      return { kind: 'cancel', pid: body.readInt32BE(4), secret: Buffer.from(body.subarray(8)) };
    }
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    return invalid(
      `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.${newestMinor}`,
    );
  }
  const params = decodeParams(body);
  return typeof params === 'string' ? invalid(params) : { kind: 'startup', major, minor, params };
}

/** Name/value C strings from offset 4, ended by an empty name that must be the last byte. */
function decodeParams(body: Buffer): Map<string, string> | string {
  const params = new Map<string, string>();
  let pos = 4;
  for (;;) {
    const nameEnd = body.indexOf(0, pos);
    if (nameEnd < 0) return 'invalid startup packet layout: expected terminator as last byte';
    if (nameEnd === pos) break;
    const valueEnd = body.indexOf(0, nameEnd + 1);
    if (valueEnd < 0) return 'invalid startup packet layout: parameter without value';
    const name = decodeUtf8(body, pos, nameEnd);
    const value = decodeUtf8(body, nameEnd + 1, valueEnd);
    if (name === null || value === null) return 'invalid byte sequence for encoding "UTF8"';
    if (params.has(name)) return `duplicate startup parameter "${name}"`;
    if (params.size === MAX_PARAMS) return `too many startup parameters (more than ${MAX_PARAMS})`;
    params.set(name, value);
    pos = valueEnd + 1;
  }
  if (pos !== body.length - 1) {
    return 'invalid startup packet layout: expected terminator as last byte';
  }
  return params;
}

/**
 * The `options` startup parameter as PgBouncer reads it: `-c name=value` and `--name=value`,
 * separated by blanks, where a backslash takes the next character literally (`-c a=x\ y` sets a
 * to `x y`). The pairs in order, or null when anything else is in it.
 */
export function parseStartupOptions(text: string): [string, string][] | null {
  const pairs: [string, string][] = [];
  const n = text.length;
  let i = 0;
  for (;;) {
    while (i < n && isBlank(text[i]!)) i++;
    if (i === n) return pairs;
    if (text.startsWith('-c', i)) {
      i += 2;
      while (i < n && isBlank(text[i]!)) i++;
    } else if (text.startsWith('--', i)) {
      i += 2;
    } else {
      return null;
    }
    let token = '';
    while (i < n && !isBlank(text[i]!)) {
      if (text[i] === '\\') i++;
      if (i < n) token += text[i++];
    }
    const eq = token.indexOf('=');
    if (eq <= 0) return null;
    pairs.push([token.slice(0, eq), token.slice(eq + 1)]);
  }
}

/** isspace() in the C locale, as PostgreSQL and PgBouncer split `options`. */
function isBlank(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
}

function decodeUtf8(body: Buffer, start: number, end: number): string | null {
  try {
    return utf8.decode(body.subarray(start, end));
  } catch {
    return null;
  }
}

function invalid(reason: string): StartupPacket {
  return { kind: 'invalid', reason };
}

/** A complete CancelRequest packet, length included, to send to a server. */
export function encodeCancelRequest(pid: number, secret: Buffer): Buffer {
  if (secret.length < MIN_CANCEL_KEY || secret.length > MAX_CANCEL_KEY) {
    throw new RangeError(`cancel key must be 4 to 256 bytes, got ${secret.length}`);
  }
  const buf = Buffer.alloc(12 + secret.length);
  buf.writeInt32BE(buf.length, 0);
  buf.writeInt32BE(ProtocolCode.CancelRequest, 4);
  buf.writeInt32BE(pid, 8);
  secret.copy(buf, 12);
  return buf;
}
