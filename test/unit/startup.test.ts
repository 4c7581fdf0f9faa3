import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeStartupPacket, encodeCancelRequest, parseStartupOptions } from '../../src/protocol/startup.js';
import {
  V3,
  bytes,
  cancelRequest,
  cstr,
  gssencRequest,
  int32,
  packetBody,
  sslRequest,
  startupPacket,
} from '../support/bytes.js';

const SSL = 1234 * 65536 + 5679;
const GSSENC = 1234 * 65536 + 5680;
const CANCEL = 1234 * 65536 + 5678;

function decode(packet: Buffer) {
  return decodeStartupPacket(packetBody(packet));
}

function reasonOf(body: Buffer): string {
  const p = decodeStartupPacket(body);
  assert.equal(p.kind, 'invalid');
  return p.kind === 'invalid' ? p.reason : '';
}

test('SSLRequest and GSSENCRequest', () => {
  assert.deepEqual(decode(sslRequest()), { kind: 'ssl' });
  assert.deepEqual(decode(gssencRequest()), { kind: 'gssenc' });
});

test('SSLRequest and GSSENCRequest must be exactly 4 bytes of body', () => {
  assert.match(reasonOf(bytes(int32(SSL), int32(0))), /SSLRequest/);
  assert.match(reasonOf(bytes(int32(GSSENC), [0])), /GSSENCRequest/);
});

test('CancelRequest with a 3.0 key and with long 3.2 keys', () => {
  for (const secret of [Buffer.from([1, 2, 3, 4]), Buffer.alloc(32, 7), Buffer.alloc(256, 9)]) {
    assert.deepEqual(decode(cancelRequest(4321, secret)), { kind: 'cancel', pid: 4321, secret });
  }
});

test('CancelRequest secret is copied out of the packet', () => {
  const packet = cancelRequest(1, Buffer.from('abcd'));
  const p = decode(packet);
  assert.equal(p.kind, 'cancel');
  packet.fill(0);
  if (p.kind === 'cancel') assert.equal(p.secret.toString(), 'abcd');
});

test('CancelRequest with a key too short, too long or missing', () => {
  for (const body of [
    bytes(int32(CANCEL)),
    bytes(int32(CANCEL), int32(1)),
    bytes(int32(CANCEL), int32(1), [1, 2, 3]),
    bytes(int32(CANCEL), int32(1), Buffer.alloc(257)),
  ]) {
    assert.match(reasonOf(body), /cancel request/);
  }
});

test('encodeCancelRequest matches the hand-built packet and round-trips', () => {
  for (const secret of [Buffer.from('wxyz'), Buffer.alloc(256, 0x5a)]) {
    const packet = encodeCancelRequest(-7, secret);
    assert.deepEqual(packet, cancelRequest(-7, secret));
    assert.deepEqual(decode(packet), { kind: 'cancel', pid: -7, secret });
  }
  assert.throws(() => encodeCancelRequest(1, Buffer.alloc(3)), RangeError);
  assert.throws(() => encodeCancelRequest(1, Buffer.alloc(257)), RangeError);
});

test('StartupMessage 3.0 with parameters', () => {
  const p = decode(
    startupPacket({ user: 'alice', database: 'app', options: '', client_encoding: 'UTF8' }),
  );
  assert.deepEqual(p, {
    kind: 'startup',
    major: 3,
    minor: 0,
    params: new Map([
      ['user', 'alice'],
      ['database', 'app'],
      ['options', ''],
      ['client_encoding', 'UTF8'],
    ]),
  });
});

test('StartupMessage 3.2 and _pq_ options are left to the caller to negotiate', () => {
  const p = decode(startupPacket({ user: 'u', '_pq_.x': '1' }, V3 + 2));
  assert.equal(p.kind, 'startup');
  if (p.kind === 'startup') {
    assert.equal(p.minor, 2);
    assert.equal(p.params.get('_pq_.x'), '1');
  }
});

test('StartupMessage with no parameters at all', () => {
  assert.deepEqual(decode(startupPacket({})), {
    kind: 'startup',
    major: 3,
    minor: 0,
    params: new Map(),
  });
});

test('UTF-8 names and values, a leading BOM kept', () => {
  const p = decode(startupPacket({ user: 'żółw', application_name: '\uFEFFapp' }));
  assert.equal(p.kind, 'startup');
  if (p.kind === 'startup') {
    assert.equal(p.params.get('user'), 'żółw');
    assert.equal(p.params.get('application_name'), '\uFEFFapp');
  }
});

test('protocol 2.0 and other majors are refused in PostgreSQL wording', () => {
  assert.equal(
    reasonOf(packetBody(startupPacket({ user: 'u' }, 2 * 65536))),
    'unsupported frontend protocol 2.0: server supports 3.0 to 3.0',
  );
  const p = decodeStartupPacket(packetBody(startupPacket({ user: 'u' }, 4 * 65536 + 1)), 2);
  assert.deepEqual(p, {
    kind: 'invalid',
    reason: 'unsupported frontend protocol 4.1: server supports 3.0 to 3.2',
  });
  const odd = bytes(int32(1234 * 65536 + 1), [0]);
  assert.match(reasonOf(odd), /unsupported frontend protocol 1234\.1/);
});

test('a body shorter than the protocol code', () => {
  for (const body of [Buffer.alloc(0), Buffer.from([0, 3, 0])]) {
    assert.match(reasonOf(body), /invalid length/);
  }
});

test('missing terminator', () => {
  assert.match(reasonOf(bytes(int32(V3))), /terminator/);
  assert.match(reasonOf(bytes(int32(V3), cstr('user'), cstr('u'))), /terminator/);
});

test('bytes after the terminator', () => {
  assert.match(reasonOf(bytes(int32(V3), cstr('user'), cstr('u'), [0], 'x')), /terminator/);
  assert.match(reasonOf(bytes(int32(V3), [0, 0])), /terminator/);
});

test('a name without a value', () => {
  assert.match(reasonOf(bytes(int32(V3), cstr('user'))), /without value/);
  assert.match(reasonOf(bytes(int32(V3), cstr('user'), 'alice')), /without value/);
});

test('duplicate names', () => {
  const body = packetBody(startupPacket([
    ['user', 'a'],
    ['database', 'd'],
    ['user', 'b'],
  ]));
  assert.match(reasonOf(body), /duplicate startup parameter "user"/);
});

test('invalid UTF-8 in a name or a value', () => {
  const bad = Buffer.from([0x61, 0xc3, 0x28]);
  assert.match(reasonOf(bytes(int32(V3), bad, [0], cstr('v'), [0])), /UTF8/);
  assert.match(reasonOf(bytes(int32(V3), cstr('user'), bad, [0], [0])), /UTF8/);
  const surrogate = Buffer.from([0xed, 0xa0, 0x80]);
  assert.match(reasonOf(bytes(int32(V3), cstr('user'), surrogate, [0], [0])), /UTF8/);
});

test('at most 1000 parameters', () => {
  const params = (n: number) =>
    Array.from({ length: n }, (_, i): [string, string] => [`p${i}`, 'v']);
  const ok = decode(startupPacket(params(1000)));
  assert.equal(ok.kind, 'startup');
  if (ok.kind === 'startup') assert.equal(ok.params.size, 1000);
  assert.match(reasonOf(packetBody(startupPacket(params(1001)))), /too many startup parameters/);
});

test('property: any body decodes to a value, never a throw', () => {
  const body = fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    // Mostly well-formed packets with a random tail, to reach the parameter parser.
    fc
      .tuple(fc.constantFrom(V3, V3 + 2, CANCEL, SSL, GSSENC), fc.uint8Array({ maxLength: 200 }))
      .map(([v, tail]) => bytes(int32(v), Buffer.from(tail))),
  );
  fc.assert(
    fc.property(body, (b) => {
      const p = decodeStartupPacket(b);
      assert.ok(['ssl', 'gssenc', 'cancel', 'startup', 'invalid'].includes(p.kind));
    }),
    { numRuns: 2000 },
  );
});

test('options: -c and -- pairs, blanks, backslash escapes (PgBouncer test_options_startup_param)', () => {
  assert.deepEqual(parseStartupOptions('  -c    datestyle=German,\\ YMD'), [['datestyle', 'German, YMD']]);
  assert.deepEqual(parseStartupOptions('-ctimezone=Portugal  -cdatestyle=German,\\ YMD'), [['timezone', 'Portugal'], ['datestyle', 'German, YMD']]);
  assert.deepEqual(parseStartupOptions('--timezone=Portugal  --datestyle=German,\\ YMD '), [['timezone', 'Portugal'], ['datestyle', 'German, YMD']]);
  assert.deepEqual(parseStartupOptions('-c t\\imezone=\\P\\o\\r\\t\\ugal  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD'), [['timezone', 'Portugal'], ['datestyle', 'German, YMD']]);
  // The first = splits; the value may hold more of them, or be empty.
  assert.deepEqual(parseStartupOptions('-c a=b=c --x='), [['a', 'b=c'], ['x', '']]);
  assert.deepEqual(parseStartupOptions(''), []);
  assert.deepEqual(parseStartupOptions(' \t '), []);
  for (const bad of ['-d', '-c timezone', '-c', '--', '-c =x', 'timezone=UTC', '-c a=b -x', '-c a=b c=d']) {
    assert.equal(parseStartupOptions(bad), null, bad);
  }
});
