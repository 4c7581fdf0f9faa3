// Hand-built protocol bytes for unit tests. Deliberately independent of src/protocol/encode.ts, so
// that the code under test never checks itself.

export type Part = Buffer | string | number[];

function toBuffer(p: Part): Buffer {
  if (typeof p === 'string') return Buffer.from(p, 'utf8');
  return Buffer.isBuffer(p) ? p : Buffer.from(p);
}

export function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  if (n < 0) b.writeInt32BE(n);
  else b.writeUInt32BE(n);
  return b;
}

export function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  if (n < 0) b.writeInt16BE(n);
  else b.writeUInt16BE(n);
  return b;
}

/** A NUL-terminated string. */
export function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

export function bytes(...parts: Part[]): Buffer {
  return Buffer.concat(parts.map(toBuffer));
}

/** A typed message: type byte, length (counting itself), body. Strings are raw, not C strings. */
export function msg(type: string, ...parts: Part[]): Buffer {
  const body = bytes(...parts);
  return Buffer.concat([Buffer.from(type, 'latin1'), int32(body.length + 4), body]);
}

/** An untyped first packet: length (counting itself), body. */
export function untyped(...parts: Part[]): Buffer {
  const body = bytes(...parts);
  return Buffer.concat([int32(body.length + 4), body]);
}

export const V3 = 3 * 65536;

export function startupPacket(
  params: Record<string, string> | [string, string][],
  version = V3,
): Buffer {
  const pairs = Array.isArray(params) ? params : Object.entries(params);
  return untyped(int32(version), ...pairs.flatMap(([k, v]) => [cstr(k), cstr(v)]), [0]);
}

export function sslRequest(): Buffer {
  return untyped(int32(1234 * 65536 + 5679));
}

export function gssencRequest(): Buffer {
  return untyped(int32(1234 * 65536 + 5680));
}

export function cancelRequest(pid: number, secret: Buffer): Buffer {
  return untyped(int32(1234 * 65536 + 5678), int32(pid), secret);
}

/** The body of an untyped packet, as the framer hands it over. */
export function packetBody(packet: Buffer): Buffer {
  return packet.subarray(4);
}
