// Issue #4: passwords, SCRAM proofs and secrets never appear in any log line or error. test/run.js
// runs this file after all the others; it searches the output of every pooler the run started
// (collected by test/support/test-logs.ts under PGPOOL_TEST_LOG_DIR: poolers started by
// startPooler, `main.js` runs and spawns of the CLI tests) for
// - every secret the suite used: the passwords of the cluster roles (USERS, and each PASSWORD '…' a
//   test gave a role), each auth_file entry (a plaintext password and its md5 secret, an md5
//   secret, a SCRAM verifier with its StoredKey and ServerKey), each password= of an ini, and what
//   tests noted with noteSecret() (security.test.ts's SCRAM proofs, ClientKeys and md5 responses);
// - secrets by their shape, whatever their value: a SCRAM proof (`p=` and 32 bytes of base64), a
//   client-final message, a server signature, a SCRAM verifier, an md5 secret or response, and a
//   ClientKey, ServerKey, StoredKey or SaltedPassword followed by a value;
// and fails naming the file and line of every hit. So that it cannot pass on nothing, it fails
// as well when a test file listed in PGPOOL_TEST_LOG_FROM left no log, when it read fewer than
// PGPOOL_TEST_LOG_MIN_FILES files or PGPOOL_TEST_LOG_MIN_BYTES bytes (run.js sets all three from
// the files of the run), or when it has no secret to look for.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { USERS } from '../support/pg-cluster.js';
import { md5Secret, scramKeys } from '../support/secrets.js';
import { LOG_DIR_ENV, MIN_SECRET_LENGTH, POOLER_LOGS, SECRETS } from '../support/test-logs.js';

/** Secrets by shape: [what, pattern]. */
const SHAPES: [string, RegExp][] = [
  ['a SCRAM client proof (p=…)', /(?<![A-Za-z0-9])p=[A-Za-z0-9+/]{42,}={0,2}/],
  ['a SCRAM client-final message', /\bc=biws,r=/],
  ['a SCRAM server signature (v=…)', /(?<![A-Za-z0-9])v=[A-Za-z0-9+/]{42,}={0,2}/],
  ['a SCRAM verifier', /SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$/],
  ['an md5 secret or md5 response', /(?<![A-Za-z0-9])md5[0-9a-f]{32}(?![0-9a-f])/],
  ['a SCRAM key or SaltedPassword with a value', /(?:(?:client|server|stored)[ _-]?key|salted[ _-]?password)["']?\s*[:=]\s*["']?[A-Za-z0-9+/]{20,}/i],
];

interface Secret {
  label: string;
  value: string;
}

/** Finds the secrets (as whole tokens: no letter or digit right before or after) and the shapes. */
class Matcher {
  private readonly byValue = new Map<string, string>();
  private readonly any: RegExp | null;

  constructor(secrets: Secret[]) {
    for (const s of secrets) if (s.value.length >= MIN_SECRET_LENGTH && !this.byValue.has(s.value)) this.byValue.set(s.value, s.label);
    // Longest first, so that a secret containing another one is named as itself.
    const values = [...this.byValue.keys()].sort((a, b) => b.length - a.length);
    const escaped = values.map((v) => v.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&'));
    this.any = values.length === 0 ? null : new RegExp(`(?<![A-Za-z0-9])(?:${escaped.join('|')})(?![A-Za-z0-9])`, 'g');
  }

  get size(): number {
    return this.byValue.size;
  }

  /** What `line` holds: a label for each secret or shape found. */
  find(line: string): string[] {
    const found: string[] = [];
    if (this.any !== null) for (const m of line.matchAll(this.any)) found.push(this.byValue.get(m[0]) ?? m[0]);
    for (const [what, re] of SHAPES) if (re.test(line)) found.push(what);
    return found;
  }

  /** `line` with every secret found replaced by its label (a failure message must not repeat it). */
  mask(line: string): string {
    let out = this.any === null ? line : line.replace(this.any, (v) => `«${this.byValue.get(v) ?? 'secret'}»`);
    for (const [what, re] of SHAPES) out = out.replace(new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`), `«${what}»`);
    return out;
  }
}

function readSecrets(dir: string): Secret[] {
  const out: Secret[] = Object.values(USERS).flatMap((u) =>
    u.password === '' ? [] : [{ label: `cluster role ${u.name}'s password`, value: u.password }, { label: `cluster role ${u.name}'s md5 secret`, value: md5Secret(u.name, u.password) }]);
  const secretsDir = path.join(dir, SECRETS);
  for (const f of fs.existsSync(secretsDir) ? fs.readdirSync(secretsDir) : []) {
    for (const line of fs.readFileSync(path.join(secretsDir, f), 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      const s = JSON.parse(line) as Secret;
      out.push({ label: `${s.label} [${f.replace(/\.jsonl$/, '')}]`, value: s.value });
    }
  }
  return out;
}

function logFiles(dir: string): string[] {
  const d = path.join(dir, POOLER_LOGS);
  return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith('.log')).sort().map((f) => path.join(d, f)) : [];
}

describe('no secret in any pooler log of the run (issue #4)', () => {
  it('the search finds every kind of secret it looks for', () => {
    const keys = scramKeys('pw', Buffer.alloc(16, 7), 4096);
    const m = new Matcher([{ label: 'the test password', value: 'Sekrit-pw-1' }]);
    const hits = (line: string) => m.find(line).length;
    assert.equal(hits('{"level":"info","msg":"login of u with Sekrit-pw-1"}'), 1);
    assert.equal(hits('{"msg":"password=Sekrit-pw-1x"}'), 0, 'only whole tokens');
    assert.equal(hits(`{"msg":"c=biws,r=abc,p=${keys.clientKey.toString('base64')}"}`), 2);
    assert.equal(hits(`{"msg":"v=${keys.serverKey.toString('base64')}"}`), 1);
    assert.equal(hits(`{"secret":"SCRAM-SHA-256$4096:c2FsdA==$${keys.storedKey.toString('base64')}:x"}`), 1);
    assert.equal(hits(`{"msg":"got ${md5Secret('u', 'pw')}"}`), 1);
    assert.equal(hits(`{"clientKey":"${keys.clientKey.toString('base64')}"}`), 1);
    assert.equal(hits('SaltedPassword = ' + keys.salted.toString('base64')), 1);
    assert.equal(hits('{"level":"info","msg":"client_tls_key_file=/etc/k.pem, auth_type=scram-sha-256, md5 login ok"}'), 0);
    assert.equal(m.mask('x Sekrit-pw-1 y'), 'x «the test password» y');
  });

  it('no password, md5 hash, SCRAM verifier, key or proof in any line a pooler printed', (t) => {
    const dir = process.env[LOG_DIR_ENV];
    if (dir === undefined || dir === '') {
      t.skip(`${LOG_DIR_ENV} is not set: test/run.js sets it, and runs this file after the files whose poolers it searches`);
      return;
    }
    const from = (process.env.PGPOOL_TEST_LOG_FROM ?? '').split(',').filter((f) => f !== '');
    const minFiles = Number(process.env.PGPOOL_TEST_LOG_MIN_FILES ?? 1);
    const minBytes = Number(process.env.PGPOOL_TEST_LOG_MIN_BYTES ?? 1);
    const matcher = new Matcher(readSecrets(dir));
    const files = logFiles(dir);
    let bytes = 0;
    let lines = 0;
    const leaks: string[] = [];
    for (const file of files) {
      const text = fs.readFileSync(file, 'utf8');
      bytes += Buffer.byteLength(text);
      text.split('\n').forEach((line, i) => {
        if (line === '') return;
        lines++;
        const found = matcher.find(line);
        if (found.length > 0) leaks.push(`${file}:${i + 1}: ${[...new Set(found)].join('; ')}\n    ${matcher.mask(line).slice(0, 400)}`);
      });
    }
    console.log(`logs: ${lines} lines, ${files.length} files, ${(bytes / 1024).toFixed(0)} KiB from ${dir} searched for ${matcher.size} secrets and ${SHAPES.length} shapes`);
    assert.ok(leaks.length === 0, `secrets in ${leaks.length} pooler log line(s):\n${leaks.slice(0, 50).join('\n')}`);
    // Log files are named <test file>.<pid>.<n>.<what>.log (test-logs.ts).
    const sources = new Set(files.map((f) => path.basename(f).replace(/\.\d+\.\d+\.[^.]*\.log$/, '')));
    const silent = from.filter((f) => !sources.has(f));
    assert.ok(silent.length === 0, `no pooler log from ${silent.join(', ')}: is the output of their poolers still collected?`);
    assert.ok(files.length >= minFiles, `only ${files.length} pooler log file(s) under ${path.join(dir, POOLER_LOGS)}, expected at least ${minFiles}: is the output of the poolers still collected there?`);
    assert.ok(bytes >= minBytes, `only ${bytes} bytes of pooler logs, expected at least ${minBytes}`);
    assert.ok(matcher.size >= Object.keys(USERS).length, `only ${matcher.size} secrets to look for`);
  });
});
