// ErrorResponse ('E') and NoticeResponse ('N'): a list of (field letter, C string) pairs ended by
// a zero byte.

import { Backend } from './codes.js';

export interface ErrorFields {
  severity: string;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export function encodeErrorResponse(f: ErrorFields): Buffer {
  return encodeFields(Backend.ErrorResponse, f);
}

export function encodeNoticeResponse(f: ErrorFields): Buffer {
  return encodeFields(Backend.NoticeResponse, f);
}

/** Field letter → value. Never throws; a body cut short keeps its last, unterminated field. */
export function decodeErrorFields(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length) {
    const letter = body[pos]!;
    if (letter === 0) break;
    let end = body.indexOf(0, pos + 1);
    if (end < 0) end = body.length;
    fields[String.fromCharCode(letter)] = body.toString('utf8', pos + 1, end);
    pos = end + 1;
  }
  return fields;
}

function encodeFields(type: number, f: ErrorFields): Buffer {
  // We never localize, so S (localized, what old clients read) and V (since 9.6) are the same.
  const pairs: [number, string][] = [
    [0x53, f.severity], // S
    [0x56, f.severity], // V
    [0x43, f.code], // C
    [0x4d, f.message], // M
  ];
  if (f.detail !== undefined) pairs.push([0x44, f.detail]); // D
  if (f.hint !== undefined) pairs.push([0x48, f.hint]); // H
  let size = 1 + 4 + 1;
  for (const p of pairs) {
    p[1] = withoutNul(p[1]);
    size += 1 + Buffer.byteLength(p[1]) + 1;
  }
  const buf = Buffer.alloc(size);
  buf[0] = type;
  buf.writeInt32BE(size - 1, 1);
  let pos = 5;
  for (const [letter, value] of pairs) {
    buf[pos++] = letter;
    pos += buf.write(value, pos);
    buf[pos++] = 0;
  }
  // The last byte stays 0: the list terminator.
  return buf;
}

/** A NUL inside a field would end it early and turn the rest into bogus fields. Messages can quote
 * client-supplied text, so drop it rather than trust every caller. */
export function withoutNul(s: string): string {
  return s.includes('\0') ? s.replaceAll('\0', '') : s;
}
