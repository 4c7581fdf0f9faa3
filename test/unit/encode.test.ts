import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as enc from '../../src/protocol/encode.js';
import {
  decodeErrorFields,
  encodeErrorResponse,
  encodeNoticeResponse,
} from '../../src/protocol/error-response.js';
import { bytes, cstr, int32, msg } from '../support/bytes.js';

/** A cursor over one message, written for the tests only. */
class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  byte(): number {
    const b = this.buf[this.pos];
    assert.ok(b !== undefined, 'read past the end');
    this.pos++;
    return b;
  }

  int16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  cstr(): string {
    const end = this.buf.indexOf(0, this.pos);
    assert.ok(end >= 0, 'unterminated string');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }

  take(n: number): Buffer {
    assert.ok(this.pos + n <= this.buf.length, 'read past the end');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  done(): void {
    assert.equal(this.pos, this.buf.length, 'trailing bytes');
  }
}

/** Checks the header of a typed message and returns a reader over its body. */
function open(m: Buffer, type: string): Reader {
  assert.equal(String.fromCharCode(m[0]!), type);
  assert.equal(m.readInt32BE(1), m.length - 1, 'length field');
  return new Reader(m.subarray(5));
}

test('constant authentication messages', () => {
  let r = open(enc.authenticationOk, 'R');
  assert.equal(r.int32(), 0);
  r.done();
  r = open(enc.authenticationCleartextPassword, 'R');
  assert.equal(r.int32(), 3);
  r.done();
});

test('AuthenticationMD5Password carries the 4-byte salt', () => {
  const r = open(enc.authenticationMD5Password(Buffer.from([1, 2, 3, 4])), 'R');
  assert.equal(r.int32(), 5);
  assert.deepEqual(r.take(4), Buffer.from([1, 2, 3, 4]));
  r.done();
  assert.throws(() => enc.authenticationMD5Password(Buffer.alloc(3)), RangeError);
});

test('AuthenticationSASL lists mechanisms and ends with an empty one', () => {
  const r = open(enc.authenticationSASL(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']), 'R');
  assert.equal(r.int32(), 10);
  assert.equal(r.cstr(), 'SCRAM-SHA-256-PLUS');
  assert.equal(r.cstr(), 'SCRAM-SHA-256');
  assert.equal(r.cstr(), '');
  r.done();
});

test('AuthenticationSASLContinue and SASLFinal carry raw data', () => {
  const data = Buffer.from('r=abc,s=c2FsdA==,i=4096');
  let r = open(enc.authenticationSASLContinue(data), 'R');
  assert.equal(r.int32(), 11);
  assert.deepEqual(r.take(data.length), data);
  r.done();
  r = open(enc.authenticationSASLFinal(Buffer.from('v=xyz')), 'R');
  assert.equal(r.int32(), 12);
  assert.equal(r.take(5).toString(), 'v=xyz');
  r.done();
});

test('ParameterStatus, with multi-byte UTF-8', () => {
  const r = open(enc.parameterStatus('application_name', 'café ☕'), 'S');
  assert.equal(r.cstr(), 'application_name');
  assert.equal(r.cstr(), 'café ☕');
  r.done();
});

test('a NUL inside a C string is dropped instead of splitting the field', () => {
  const r = open(enc.parameterStatus('a\0b', 'c\0'), 'S');
  assert.equal(r.cstr(), 'ab');
  assert.equal(r.cstr(), 'c');
  r.done();
});

test('BackendKeyData with a 3.0 key and a long 3.2 key', () => {
  for (const secret of [Buffer.from([9, 8, 7, 6]), Buffer.alloc(32, 0xab), Buffer.alloc(256, 1)]) {
    const r = open(enc.backendKeyData(-12345, secret), 'K');
    assert.equal(r.int32(), -12345);
    assert.deepEqual(r.take(secret.length), secret);
    r.done();
  }
  assert.throws(() => enc.backendKeyData(1, Buffer.alloc(3)), RangeError);
  assert.throws(() => enc.backendKeyData(1, Buffer.alloc(257)), RangeError);
});

test('ReadyForQuery is prebuilt for each status', () => {
  for (const s of ['I', 'T', 'E']) {
    const m = enc.readyForQuery(s.charCodeAt(0));
    assert.deepEqual(m, msg('Z', s));
    assert.equal(enc.readyForQuery(s.charCodeAt(0)), m, 'same instance');
  }
  assert.throws(() => enc.readyForQuery(0x58), RangeError);
});

test('NegotiateProtocolVersion', () => {
  let r = open(enc.negotiateProtocolVersion(2, ['_pq_.foo', '_pq_.bar']), 'v');
  assert.equal(r.int32(), (3 << 16) | 2, 'version 3.2 as PostgreSQL encodes it');
  assert.equal(r.int32(), 2);
  assert.equal(r.cstr(), '_pq_.foo');
  assert.equal(r.cstr(), '_pq_.bar');
  r.done();
  r = open(enc.negotiateProtocolVersion(0, []), 'v');
  assert.equal(r.int32(), 3 << 16);
  assert.equal(r.int32(), 0);
  r.done();
});

test('RowDescription in text format with fixed widths for int4 and int8', () => {
  const cols = [
    { name: 'database', typeOid: 25 },
    { name: 'cl_active', typeOid: 23 },
    { name: 'total_xact_count', typeOid: 20 },
    { name: 'naïve', typeOid: 1043 },
  ];
  const r = open(enc.rowDescription(cols), 'T');
  assert.equal(r.int16(), cols.length);
  for (const c of cols) {
    assert.equal(r.cstr(), c.name);
    assert.equal(r.int32(), 0, 'table oid');
    assert.equal(r.int16(), 0, 'attnum');
    assert.equal(r.int32(), c.typeOid);
    assert.equal(r.int16(), c.typeOid === 23 ? 4 : c.typeOid === 20 ? 8 : -1, 'typlen');
    assert.equal(r.int32(), -1, 'typmod');
    assert.equal(r.int16(), 0, 'format');
  }
  r.done();
});

test('DataRow with NULLs, empty strings and UTF-8', () => {
  const values = ['pgbouncer', null, '', 'żółw', '42'];
  const r = open(enc.dataRow(values), 'D');
  assert.equal(r.int16(), values.length);
  for (const v of values) {
    const n = r.int32();
    if (v === null) assert.equal(n, -1);
    else assert.equal(r.take(n).toString('utf8'), v);
  }
  r.done();
  assert.deepEqual(enc.dataRow([]), msg('D', [0, 0]));
});

test('CommandComplete and EmptyQueryResponse', () => {
  assert.deepEqual(enc.commandComplete('SHOW'), msg('C', cstr('SHOW')));
  assert.deepEqual(enc.commandComplete('SELECT 3'), msg('C', cstr('SELECT 3')));
  assert.deepEqual(enc.emptyQueryResponse, msg('I'));
});

test('dynamic messages are fresh buffers, never a shared scratch area', () => {
  const a = enc.dataRow(['a']);
  const p = enc.parameterStatus('x', 'y');
  const k = enc.backendKeyData(1, Buffer.from('abcd'));
  const again = [
    enc.dataRow(['a']),
    enc.parameterStatus('x', 'y'),
    enc.backendKeyData(1, Buffer.from('abcd')),
  ];
  for (const m of [a, p, k]) m.fill(0);
  assert.deepEqual(again, [
    msg('D', [0, 1], int32(1), 'a'),
    msg('S', cstr('x'), cstr('y')),
    msg('K', int32(1), 'abcd'),
  ]);
});

test('ErrorResponse and NoticeResponse carry S, V, C, M, D, H and a terminator', () => {
  const fields = {
    severity: 'FATAL',
    code: '08P01',
    message: 'bad packet',
    detail: 'length 3',
    hint: 'check the client',
  };
  const e = encodeErrorResponse(fields);
  const expectedBody = bytes(
    'S', cstr('FATAL'), 'V', cstr('FATAL'), 'C', cstr('08P01'), 'M', cstr('bad packet'),
    'D', cstr('length 3'), 'H', cstr('check the client'), [0],
  );
  assert.deepEqual(e, msg('E', expectedBody));
  assert.deepEqual(enc.errorResponse(fields), e);
  assert.deepEqual(encodeNoticeResponse(fields), msg('N', expectedBody));
  assert.deepEqual(enc.noticeResponse(fields), msg('N', expectedBody));

  const short = encodeErrorResponse({ severity: 'ERROR', code: '57014', message: 'canceled' });
  assert.deepEqual(decodeErrorFields(short.subarray(5)), {
    S: 'ERROR',
    V: 'ERROR',
    C: '57014',
    M: 'canceled',
  });
});

test('decodeErrorFields reads a server error and tolerates truncation', () => {
  const body = bytes(
    'S', cstr('ERROR'), 'C', cstr('42P01'), 'M', cstr('relation "x" does not exist'),
    'P', cstr('15'), [0],
  );
  assert.deepEqual(decodeErrorFields(body), {
    S: 'ERROR',
    C: '42P01',
    M: 'relation "x" does not exist',
    P: '15',
  });
  const noTerminator = bytes('S', cstr('FATAL'), 'M', 'cut sh');
  assert.deepEqual(decodeErrorFields(noTerminator), { S: 'FATAL', M: 'cut sh' });
  assert.deepEqual(decodeErrorFields(Buffer.alloc(0)), {});
  assert.deepEqual(decodeErrorFields(Buffer.from('S')), { S: '' });
});

test('property: decodeErrorFields never throws and inverts encodeErrorResponse', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (raw) => {
      decodeErrorFields(Buffer.from(raw));
    }),
  );
  const text = fc.string({ maxLength: 50 }).map((s) => s.replaceAll('\0', ''));
  fc.assert(
    fc.property(text, text, text, fc.option(text, { nil: undefined }), (s, c, m, d) => {
      const e = encodeErrorResponse({ severity: s, code: c, message: m, detail: d });
      assert.equal(e.readInt32BE(1), e.length - 1);
      const got = decodeErrorFields(e.subarray(5));
      const want: Record<string, string> = { S: s, V: s, C: c, M: m };
      if (d !== undefined) want['D'] = d;
      // Lone surrogates cannot survive UTF-8; compare what UTF-8 can carry.
      for (const k of Object.keys(want)) want[k] = Buffer.from(want[k]!).toString();
      assert.deepEqual(got, want);
    }),
  );
});
