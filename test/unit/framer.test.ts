import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { FRAMER_STOPPED, Framer, int32At } from '../../src/protocol/framer.js';
import {
  cancelRequest,
  cstr,
  int16,
  int32,
  msg,
  sslRequest,
  startupPacket,
} from '../support/bytes.js';

const MAX = 1 << 24;
const code = (t: string) => t.charCodeAt(0);
const ALL_TYPES = Array.from({ length: 256 }, (_, i) => i);

/** What the sink saw; `at` is the end offset translated into the whole stream. */
interface Delivery {
  type: number;
  body: Buffer;
  at: number;
}

/**
 * Feeds `chunks` in order, resuming after every stop. `stopAt(i)` makes the sink return false for
 * the i-th delivery; the framer must then return exactly that message's end offset.
 */
function feedAll(f: Framer, chunks: Buffer[], stopAt: (i: number) => boolean = () => false) {
  const out: Delivery[] = [];
  let base = 0;
  for (const chunk of chunks) {
    let pos = 0;
    do {
      let stoppedAt = -1;
      const next = f.feed(chunk, pos, (type, body, end) => {
        assert.equal(stoppedAt, -1, 'sink called after it returned false');
        assert.ok(end >= pos && end <= chunk.length, `end ${end} outside the chunk`);
        out.push({ type, body: Buffer.from(body), at: base + end });
        if (stopAt(out.length - 1)) stoppedAt = end;
        return stoppedAt === -1;
      });
      assert.notEqual(next, FRAMER_STOPPED, f.error ?? '');
      assert.equal(next, stoppedAt === -1 ? chunk.length : stoppedAt);
      pos = next;
    } while (pos < chunk.length);
    base += chunk.length;
  }
  return out;
}

/**
 * The deliveries a stream of whole packets must produce. Untyped packets report type 0. A
 * header-only type is reported with an empty body as soon as its header is complete; a type that
 * is also wanted whole is delivered whole.
 */
function expected(
  packets: Buffer[],
  wanted: Set<number>,
  firstUntyped = false,
  headerOnly = new Set<number>(),
): Delivery[] {
  const out: Delivery[] = [];
  let at = 0;
  packets.forEach((p, i) => {
    const headerSize = firstUntyped && i === 0 ? 4 : 5;
    const type = headerSize === 4 ? 0 : p[0]!;
    if (wanted.has(type)) out.push({ type, body: p.subarray(headerSize), at: at + p.length });
    else if (headerOnly.has(type)) out.push({ type, body: Buffer.alloc(0), at: at + headerSize });
    at += p.length;
  });
  return out;
}

function cut(stream: Buffer, offsets: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const o of [...offsets].sort((a, b) => a - b)) {
    chunks.push(stream.subarray(prev, o));
    prev = o;
  }
  chunks.push(stream.subarray(prev));
  return chunks;
}

const typed = [
  msg('S'),
  msg('Q', cstr('select 1')),
  msg('d', [0xff]),
  msg('Z', 'I'),
  msg('D', int16(2), int32(1), 'a', int32(-1)),
  msg('c'),
];

test('every typed message split at every offset is delivered whole', () => {
  for (const m of typed) {
    for (let k = 0; k <= m.length; k++) {
      const f = new Framer(ALL_TYPES, MAX, false);
      assert.deepEqual(feedAll(f, cut(m, [k])), expected([m], new Set(ALL_TYPES)), `split ${k}`);
      assert.ok(f.atBoundary);
    }
  }
});

test('startup packets split at every offset, then typed mode', () => {
  const firsts = [
    startupPacket({ user: 'alice', database: 'db', application_name: 'x' }),
    sslRequest(),
    cancelRequest(42, Buffer.from('abcd')),
  ];
  for (const first of firsts) {
    const packets = [first, msg('p', cstr('secret')), msg('X')];
    const stream = Buffer.concat(packets);
    for (let k = 0; k <= stream.length; k++) {
      const f = new Framer(ALL_TYPES, MAX, true);
      assert.deepEqual(feedAll(f, cut(stream, [k])), expected(packets, new Set(ALL_TYPES), true));
      assert.equal(f.startup, false);
    }
  }
});

test('two messages across a chunk boundary, every pair and every offset', () => {
  for (const a of typed) {
    for (const b of typed) {
      const stream = Buffer.concat([a, b]);
      for (let k = 0; k <= stream.length; k++) {
        const f = new Framer(ALL_TYPES, MAX, false);
        assert.deepEqual(feedAll(f, cut(stream, [k])), expected([a, b], new Set(ALL_TYPES)));
      }
    }
  }
});

test('three messages cut at every pair of offsets, with some types skipped', () => {
  const packets = [msg('Q', cstr('begin')), msg('S'), msg('D', int16(1), int32(3), 'abc')];
  const stream = Buffer.concat(packets);
  for (const wanted of [ALL_TYPES, [code('S')], [code('Q'), code('D')], []]) {
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j++) {
        const f = new Framer(wanted, MAX, false);
        assert.deepEqual(feedAll(f, cut(stream, [i, j])), expected(packets, new Set(wanted)));
      }
    }
  }
});

test('a 1 MB body fed in small chunks, wanted and unwanted', () => {
  const big = msg('d', randomBytes(1 << 20));
  const packets = [big, msg('Z', 'I')];
  const stream = Buffer.concat(packets);
  for (const size of [1000, 4093, 65536]) {
    const chunks: Buffer[] = [];
    for (let o = 0; o < stream.length; o += size) chunks.push(stream.subarray(o, o + size));
    for (const wanted of [[code('d'), code('Z')], [code('Z')]]) {
      const f = new Framer(wanted, MAX, false);
      assert.deepEqual(feedAll(f, chunks), expected(packets, new Set(wanted)), `size ${size}`);
    }
  }
});

test('a wanted body inside one chunk is lent, not copied', () => {
  const chunk = Buffer.concat([msg('Q', cstr('select 1')), msg('S')]);
  const f = new Framer([code('Q')], MAX, false);
  let body: Buffer | null = null;
  f.feed(chunk, 0, (_t, b) => {
    body = b;
    return true;
  });
  assert.ok(body !== null);
  assert.equal((body as Buffer).buffer, chunk.buffer);
});

test('returning false stops right after that message and feeding the rest resumes', () => {
  const packets = [msg('S'), msg('Q', cstr('x')), msg('S'), msg('Z', 'T'), msg('d', 'yy')];
  const stream = Buffer.concat(packets);
  const all = expected(packets, new Set(ALL_TYPES));
  for (let stop = 0; stop < packets.length; stop++) {
    for (let k = 0; k <= stream.length; k++) {
      const f = new Framer(ALL_TYPES, MAX, false);
      assert.deepEqual(
        feedAll(f, cut(stream, [k]), (i) => i === stop),
        all,
      );
    }
  }
  // Stopping at every message.
  const f = new Framer(ALL_TYPES, MAX, false);
  assert.deepEqual(feedAll(f, [stream], () => true), all);
});

test('a stop returns the offset the caller must resume from', () => {
  const a = msg('Q', cstr('one'));
  const b = msg('S');
  const c = msg('Q', cstr('two'));
  const chunk = Buffer.concat([a, b, c]);
  const f = new Framer([code('Q'), code('S')], MAX, false);
  const seen: string[] = [];
  const sink = (t: number, body: Buffer) => {
    seen.push(String.fromCharCode(t) + body.toString('latin1'));
    return false;
  };
  assert.equal(f.feed(chunk, 0, sink), a.length);
  assert.equal(f.feed(chunk, a.length, sink), a.length + b.length);
  assert.equal(f.feed(chunk, a.length + b.length, sink), chunk.length);
  assert.deepEqual(seen, ['Qone\0', 'S', 'Qtwo\0']);
});

test('invalid lengths stop the framer with an error, even with a split header', () => {
  const maxPacket = 1000;
  const header = (len: number) => Buffer.concat([Buffer.from('Q'), int32(len)]);
  const typedBad = [0, 3, -1, -(2 ** 31), 2 ** 31 - 1, maxPacket + 1];
  const startupBad = [0, 4, 7, -1, 2 ** 31 - 1, maxPacket + 1];
  const cases = [
    ...typedBad.map((len) => ({ bytes: header(len), startup: false })),
    ...startupBad.map((len) => ({ bytes: int32(len), startup: true })),
  ];
  for (const { bytes, startup } of cases) {
    for (let k = 0; k < bytes.length; k++) {
      const f = new Framer(ALL_TYPES, maxPacket, startup);
      const sink = () => assert.fail('no message expected');
      let result = k === 0 ? 0 : f.feed(bytes.subarray(0, k), 0, sink);
      assert.equal(result, k);
      result = f.feed(bytes.subarray(k), 0, sink);
      assert.equal(result, FRAMER_STOPPED, `${bytes.toString('hex')} split ${k}`);
      assert.ok(f.error !== null && f.error.length > 0);
    }
  }
});

test('int32At reads what readInt32BE reads, at any offset', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 12 }), fc.nat(), (bytes, k) => {
      const buf = Buffer.from(bytes);
      const at = k % (buf.length - 3);
      assert.equal(int32At(buf, at), buf.readInt32BE(at));
    }),
  );
});

test('a message of exactly max_packet_size is accepted', () => {
  const maxPacket = 64;
  const m = msg('d', Buffer.alloc(maxPacket - 4, 7));
  const f = new Framer([code('d')], maxPacket, false);
  assert.deepEqual(feedAll(f, [m]), expected([m], new Set([code('d')])));
  assert.equal(f.error, null);
});

test('atBoundary is false only inside a header or a body', () => {
  const m = msg('Q', cstr('abc'));
  const f = new Framer([], MAX, false);
  assert.ok(f.atBoundary);
  f.feed(m.subarray(0, 2), 0, () => true);
  assert.equal(f.atBoundary, false);
  f.feed(m.subarray(2, 7), 0, () => true);
  assert.equal(f.atBoundary, false);
  f.feed(m.subarray(7), 0, () => true);
  assert.ok(f.atBoundary);
});

test('want() changes which bodies are delivered', () => {
  const f = new Framer([code('R')], MAX, false);
  const packets = [msg('R', int32(0)), msg('Z', 'I')];
  assert.deepEqual(feedAll(f, packets), expected(packets, new Set([code('R')])));
  f.want([code('Z')]);
  assert.deepEqual(
    feedAll(f, packets).map((d) => d.type),
    [code('Z')],
  );
});

test('header-only types are reported at their header and their body streams past', () => {
  const q = msg('Q', cstr('select 1'));
  const packets = [q, msg('S'), msg('d', 'copy'), msg('Q', cstr('x'))];
  const stream = Buffer.concat(packets);
  const headerOnly = [code('Q'), code('S')];
  for (let k = 0; k <= stream.length; k++) {
    for (let stop = -1; stop < 3; stop++) {
      const f = new Framer([code('d')], MAX, false, headerOnly);
      assert.deepEqual(
        feedAll(f, cut(stream, [k]), (i) => i === stop),
        expected(packets, new Set([code('d')]), false, new Set(headerOnly)),
        `split ${k} stop ${stop}`,
      );
      assert.ok(f.atBoundary);
    }
  }
  // A stop at a header-only message leaves the framer inside its body.
  const f = new Framer([], MAX, false, [code('Q')]);
  assert.equal(f.feed(q, 0, () => false), 5);
  assert.equal(f.atBoundary, false);
  assert.equal(f.feed(q, 5, () => assert.fail('no second report')), q.length);
  assert.ok(f.atBoundary);
  // Wanting the body wins over header-only.
  const both = new Framer([code('Q')], MAX, false, [code('Q')]);
  assert.deepEqual(feedAll(both, [q]), expected([q], new Set([code('Q')])));
  both.want([], [code('Q')]);
  assert.deepEqual(feedAll(both, [q]).map((d) => d.at), [5]);
});

test('maxPacket can be raised after the startup packet', () => {
  const startup = startupPacket({ user: 'u' });
  const big = msg('d', Buffer.alloc(500));
  const f = new Framer([], startup.length, true);
  assert.deepEqual(feedAll(f, [startup]), []);
  assert.equal(f.feed(big, 0, () => true), FRAMER_STOPPED);
  const g = new Framer([], startup.length, true);
  feedAll(g, [startup]);
  g.maxPacket = 1000;
  assert.deepEqual(feedAll(g, [big]), []);
});

test('property: any message sequence cut into any chunks frames identically', () => {
  const types = ['S', 'Q', 'd', 'D', 'Z', 'E', 'p', 'X'].map(code);
  const message = fc.record({
    type: fc.constantFrom(...types),
    body: fc.uint8Array({ maxLength: 300 }),
  });
  fc.assert(
    fc.property(
      fc.option(fc.string({ maxLength: 40 }), { nil: undefined }),
      fc.array(message, { maxLength: 25 }),
      fc.subarray([0, ...types]),
      fc.subarray(types),
      fc.array(fc.nat(), { maxLength: 12 }),
      fc.array(fc.boolean(), { maxLength: 30 }),
      (appName, messages, wanted, headerOnly, rawCuts, stops) => {
        const packets = messages.map((m) => msg(String.fromCharCode(m.type), Buffer.from(m.body)));
        const withStartup = appName !== undefined;
        if (withStartup) packets.unshift(startupPacket({ user: 'u', application_name: appName }));
        const stream = Buffer.concat(packets);
        const cuts = rawCuts.map((c) => c % (stream.length + 1));
        const f = new Framer(wanted, MAX, withStartup, headerOnly);
        const got = feedAll(f, cut(stream, cuts), (i) => stops[i] === true);
        assert.deepEqual(got, expected(packets, new Set(wanted), withStartup, new Set(headerOnly)));
        assert.ok(f.atBoundary);
      },
    ),
    { numRuns: 500 },
  );
});

test('scan reads one buffer read into again and again: a wanted body split across reads arrives intact', () => {
  // The relay's reads land in one static buffer; the framer must copy what it keeps across reads.
  const stream = Buffer.concat([msg('Q', cstr('SELECT 1')), msg('P', Buffer.concat([cstr('s1'), cstr('SELECT 2'), int16(0)])), msg('S')]);
  const f = new Framer([code('P')], MAX, false, [code('Q'), code('S')]);
  const readBuffer = Buffer.alloc(64);
  const seen: string[] = [];
  for (let pos = 0; pos < stream.length; pos += 7) {
    const n = stream.copy(readBuffer, 0, pos, Math.min(pos + 7, stream.length));
    const stop = f.scan(readBuffer, 0, (type, buf, start, end, next) => {
      assert.ok(next <= n);
      seen.push(`${String.fromCharCode(type)}:${buf.toString('latin1', start, end)}`);
      return true;
    }, n);
    assert.equal(stop, n, 'scan went past the bytes it was given');
    readBuffer.fill(0x58);
  }
  assert.deepEqual(seen, ['Q:', 'P:s1\0SELECT 2\0\0\0', 'S:']);
});
