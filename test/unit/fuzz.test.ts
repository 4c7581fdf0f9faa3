// Fuzzing of the client-facing parsers, the CI sample (~5 s): fast-check properties first, then
// the mutation targets of bench/fuzz.ts for a time budget. `npm run fuzz` runs the long campaign
// (≥ 1 000 000 inputs, figures in docs/reliability.md).
//
// The seed is random per run and printed; a failure prints the case seed, and
//   PGPOOL_FUZZ_SEED=<seed> node --test dist/test/unit/fuzz.test.js
//   node dist/bench/fuzz.js --replay <target>:<caseSeed>
// run the same inputs again. PGPOOL_FUZZ_BUDGET_MS changes the mutation budget (default 3 s).

import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { configFixtureDir, consoleExecute, referenceFrames, referenceStartup, runFuzz, TARGETS } from '../../bench/fuzz.js';
import { parseHba, parseIdentMap } from '../../src/client/hba.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { decodeErrorFields, encodeErrorResponse } from '../../src/protocol/error-response.js';
import { FRAMER_STOPPED, Framer } from '../../src/protocol/framer.js';
import { ScramServerSession, parseScramSecret } from '../../src/protocol/scram.js';
import { decodeStartupPacket } from '../../src/protocol/startup.js';
import { cstr, int32 } from '../support/bytes.js';

const SEED = Number(process.env.PGPOOL_FUZZ_SEED ?? (Date.now() >>> 0));
const BUDGET_MS = Number(process.env.PGPOOL_FUZZ_BUDGET_MS ?? 3_000);

/** Inputs run by each part of this file, printed at the end. */
const counts: Record<string, number> = {};
const started = performance.now();

/** fc.assert with this file's seed, counting the inputs. */
function property<Ts>(name: string, numRuns: number, prop: fc.IProperty<Ts>): void {
  const out = fc.check(prop, { seed: SEED, numRuns });
  counts[name] = (counts[name] ?? 0) + out.numRuns;
  if (out.failed) throw new Error(fc.defaultReportMessage(out) ?? `property ${name} failed`);
}

after(() => {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const parts = Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ');
  console.log(`fuzz.test: ${total} generated inputs in ${((performance.now() - started) / 1000).toFixed(1)} s, seed ${SEED} (${parts})`);
});

// ------------------------------------------------------------------------------------------------
// fast-check properties

const interestingLength = fc.oneof(
  fc.constantFrom(0, 1, 3, 4, 5, 7, 8, 9, 10_000, 10_001, 0x7fffffff, -1, -0x80000000),
  fc.integer({ min: -0x80000000, max: 0x7fffffff }),
);

test('framer: any messages, any lengths, any chunking: never throws, matches the reference, allocates ≤ max_packet_size', () => {
  const message = fc.record({
    type: fc.constantFrom(0x51, 0x50, 0x42, 0x58, 0x70, 0x53, 0x64, 0),
    body: fc.uint8Array({ maxLength: 120 }),
    badLength: fc.option(interestingLength, { freq: 6 }),
  });
  property(
    'framer',
    1500,
    fc.property(
      fc.boolean(),
      fc.constantFrom(8, 12, 64, 200, 10_000, 0x7fffffff),
      fc.array(message, { maxLength: 10 }),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
      fc.subarray([0, 0x51, 0x50, 0x42, 0x58, 0x70]),
      fc.subarray([0x51, 0x53, 0x64]),
      (startup, maxPacket, messages, cuts, wantedList, headerList) => {
        const stream = Buffer.concat(
          messages.map((m, i) => {
            const len = m.badLength ?? m.body.length + 4;
            const header = startup && i === 0 ? int32(len) : Buffer.concat([Buffer.from([m.type]), int32(len)]);
            return Buffer.concat([header, m.body]);
          }),
        );
        const wanted = new Set(wantedList);
        const headerOnly = new Set(headerList.filter((t) => !wanted.has(t)));
        const f = new Framer(wanted, maxPacket, startup, headerOnly);
        const got: { type: number; body: Buffer }[] = [];
        let pos = 0;
        let stopped = false;
        for (let i = 0; pos < stream.length && !stopped; i++) {
          const chunk = stream.subarray(pos, pos + (cuts[i % cuts.length] ?? 1));
          const ret = f.feed(chunk, 0, (type, body) => {
            assert.ok(body.length <= maxPacket, 'a body larger than max_packet_size');
            got.push({ type, body: Buffer.from(body) });
            return true;
          });
          if (ret === FRAMER_STOPPED) stopped = true;
          else assert.equal(ret, chunk.length);
          pos += chunk.length;
        }
        const ref = referenceFrames(stream, startup, wanted, headerOnly, maxPacket);
        assert.equal(stopped, ref.error, 'FRAMER_STOPPED exactly when a length is invalid');
        if (stopped) assert.match(f.error ?? '', /length/);
        assert.deepEqual(got.map((g) => [g.type, g.body.toString('hex')]), ref.events.map((e) => [e.type, e.body.toString('hex')]));
      },
    ),
  );
});

test('decodeStartupPacket: arbitrary bytes agree with the reference decoder; parameters round-trip', () => {
  property(
    'startup-bytes',
    3000,
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(80877103, 80877104, 80877102, 0x30000, 0x30002, 0x20000), fc.boolean(), (raw, code, prefix) => {
      const body = Buffer.from(prefix ? Buffer.concat([int32(code), raw]) : raw);
      const p = decodeStartupPacket(body);
      assert.equal(p.kind, referenceStartup(body).kind);
    }),
  );
  const name = fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }).filter((s) => !s.includes('\0'));
  property(
    'startup-params',
    1500,
    fc.property(fc.uniqueArray(fc.tuple(name, fc.string({ maxLength: 30, unit: 'grapheme' }).map((s) => s.replaceAll('\0', ''))), { selector: (t) => t[0], maxLength: 12 }), (params) => {
      const body = Buffer.concat([int32(0x30000), ...params.flatMap(([k, v]) => [cstr(k), cstr(v)]), Buffer.from([0])]);
      const p = decodeStartupPacket(body);
      assert.equal(p.kind, 'startup');
      assert.deepEqual(p.kind === 'startup' ? [...p.params] : null, params);
    }),
  );
});

test('SCRAM server: an honest exchange always succeeds; a changed byte of client-final succeeds only when it changes nothing signed', () => {
  const hmac = (k: Buffer, d: Buffer | string) => createHmac('sha256', k).update(d).digest();
  const salt = randomBytes(16);
  const salted = pbkdf2Sync('pw', salt, 1, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = hmac(salted, 'Server Key');
  const secret = parseScramSecret(`SCRAM-SHA-256$1:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`);
  assert.ok(secret);
  const printable = fc.string({ minLength: 1, maxLength: 512, unit: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x2c).map((c) => String.fromCharCode(c)) });
  property(
    'scram',
    1500,
    fc.property(printable, fc.constantFrom('n', 'y'), fc.option(fc.nat(), { freq: 2 }), fc.integer({ min: 1, max: 255 }), (nonce, flag, flipAt, flip) => {
      const session = new ScramServerSession(secret, () => 'SERVERNONCE');
      const bare = `n=,r=${nonce}`;
      const first = session.handleClientFirst(Buffer.from(`${flag},,${bare}`, 'latin1'));
      assert.ok('serverFirst' in first, `client-first refused: ${'error' in first ? first.error : ''}`);
      const serverFirst = first.serverFirst.toString('latin1');
      const withoutProof = `c=${Buffer.from(`${flag},,`).toString('base64')},r=${nonce}SERVERNONCE`;
      const auth = `${bare},${serverFirst},${withoutProof}`;
      const proof = Buffer.from(clientKey.map((b, i) => b ^ hmac(storedKey, auth)[i]!));
      const final = Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'latin1');
      if (flipAt !== null) final[flipAt % final.length]! ^= flip;
      const res = session.handleClientFinal(final);
      const f = final.toString('latin1');
      const at = f.lastIndexOf(',p=');
      const tail = f.slice(at + 3);
      const same = at >= 0 && f.slice(0, at) === withoutProof && /^[A-Za-z0-9+/]{43}=$/.test(tail) && Buffer.from(tail, 'base64').equals(proof);
      assert.equal(res.ok, same, res.ok ? 'accepted a changed client-final' : `refused: ${res.error}`);
    }),
  );
});

test('decodeErrorFields: never throws, keys are single letters; encode → decode round-trips', () => {
  property(
    'error-bytes',
    3000,
    fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
      const fields = decodeErrorFields(Buffer.from(raw));
      for (const k of Object.keys(fields)) assert.ok(k.length === 1 && k !== '\0');
    }),
  );
  const text = fc.string({ maxLength: 60, unit: 'grapheme' });
  property(
    'error-roundtrip',
    1000,
    fc.property(text, text, text, (severity, code, message) => {
      const d = decodeErrorFields(encodeErrorResponse({ severity, code, message }).subarray(5));
      const strip = (s: string) => s.replaceAll('\0', '');
      assert.deepEqual([d.S, d.C, d.M], [strip(severity), strip(code), strip(message)]);
    }),
  );
});

test('hba and ident parsers: any text gives rules and problems, never an exception', () => {
  const word = fc.constantFrom('host', 'hostssl', 'local', 'all', 'md5', 'trust', 'cert', 'map=x', '127.0.0.1/32', '::1/128', '"a b"', ',', '@f', '+g', '/re', '255.0.0.0', '#');
  const line = fc.oneof(fc.string({ maxLength: 60 }), fc.array(word, { maxLength: 7 }).map((w) => w.join(' ')));
  property(
    'hba',
    2000,
    fc.property(fc.array(line, { maxLength: 6 }), (lines) => {
      const text = lines.join('\n');
      const hba = parseHba(text, path.join(os.tmpdir(), 'pgpool-fuzz-nonexistent', 'hba.conf'));
      assert.ok(Array.isArray(hba.rules) && Array.isArray(hba.problems));
      const ident = parseIdentMap(text, 'ident.conf');
      assert.ok(ident.maps instanceof Map);
    }),
  );
});

test('config loader: random ini text gives a Config or a ConfigError, nothing else', () => {
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'pgpool-fuzz-ini-'));
  try {
    const file = path.join(dir, 'x.ini');
    const key = fc.constantFrom('listen_port', 'pool_mode', 'auth_type', 'max_client_conn', 'default_pool_size', 'auth_file', 'client_tls_sslmode', 'server_lifetime', 'ignore_startup_parameters', 'admin_users', 'p0', '*', 'nonsense');
    const value = fc.oneof(fc.constantFrom('0', '-1', '6432', '1e9', 'yes', '', '"q"', 'host=127.0.0.1', 'transaction', '/nonexistent'), fc.string({ maxLength: 20 }));
    const line = fc.oneof(
      fc.tuple(key, value).map(([k, v]) => `${k} = ${v}`),
      fc.constantFrom('[pgbouncer]', '[databases]', '[users]', '[peers]', '[x]', '%include', `%include ${file}`, ';c'),
      fc.string({ maxLength: 40 }),
    );
    property(
      'config',
      400,
      fc.property(fc.array(line, { maxLength: 12 }), (lines) => {
        fs.writeFileSync(file, lines.join('\n'));
        try {
          loadConfig(file);
        } catch (err) {
          assert.ok(err instanceof ConfigError, `loadConfig threw ${(err as Error).stack}`);
        }
      }),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------------------------
// Inputs the mutation fuzzer found, pinned so that a sample that happens to miss them still fails

test('console: a command with a long run of blanks is parsed in linear time (found by the console target)', () => {
  // 20 000 blanks: a linear parser needs about a millisecond; the backtracking one 0.3 s once V8
  // has compiled the expression and seconds before, while the pooler's only thread serves nobody.
  for (const sql of [`SET a${' '.repeat(20_000)}x`, `SHOW${' '.repeat(20_000)}x`, `SET a =${' '.repeat(20_000)}x`, `${'"'.repeat(20_000)}`]) {
    const { ms } = consoleExecute(sql);
    counts['pinned'] = (counts['pinned'] ?? 0) + 1;
    assert.ok(ms < 100, `${ms.toFixed(0)} ms to answer ${JSON.stringify(sql.slice(0, 12))}… (${sql.length} chars)`);
  }
});

test('config: auth_file naming a directory is a ConfigError, not a raw EISDIR (found by the config target)', () => {
  const dir = configFixtureDir();
  const file = path.join(dir, 'dir-auth-file.ini');
  fs.writeFileSync(file, `[databases]\np0 = host=127.0.0.1\n[pgbouncer]\nauth_file = ${dir}\n`);
  counts['pinned'] = (counts['pinned'] ?? 0) + 1;
  assert.throws(() => loadConfig(file), (err: Error) => {
    assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
    assert.match(err.message, /auth_file/);
    return true;
  });
});

// ------------------------------------------------------------------------------------------------
// Mutation fuzzing: every target of bench/fuzz.ts, for a time budget

test(`mutation fuzzing of ${TARGETS.length} targets for ${BUDGET_MS / 1000} s: no exception, no oracle violation`, () => {
  const report = runFuzz({ seed: SEED, budgetMs: BUDGET_MS });
  for (const [name, s] of Object.entries(report.perTarget)) counts[`mutation:${name}`] = s.cases;
  const lines = report.failures.slice(0, 10).map((f) => `${f.target} (node dist/bench/fuzz.js --replay ${f.target}:${f.caseSeed}): ${f.error}\n    input: ${f.input.slice(0, 400)}`);
  assert.equal(report.failures.length, 0, `${report.failures.length} failing input(s) of ${report.total}:\n${lines.join('\n')}`);
  // A sample too small to mean anything is a failure of the test itself (a very slow machine).
  assert.ok(report.total >= 10_000, `only ${report.total} inputs in ${BUDGET_MS} ms`);
});
