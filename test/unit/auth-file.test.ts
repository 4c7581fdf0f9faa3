import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, pbkdf2Sync, createHmac, randomBytes } from 'node:crypto';
import { parseAuthFile, secretKind } from '../../src/config/auth-file.js';

const md5Secret = (user: string, password: string): string => 'md5' + createHash('md5').update(password + user).digest('hex');

/** A real SCRAM-SHA-256 verifier, built the way PostgreSQL builds one. */
function scramSecret(password: string): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, 4096, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$4096:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

test('plain, md5 and SCRAM secrets, comments, blank lines and trailing text', () => {
  const md5 = md5Secret('bob', 'secret');
  const scram = scramSecret('pw');
  const text = [
    '; a comment',
    '# another comment',
    '',
    '"alice" "plain password"',
    `"bob"   "${md5}"   anything after the secret is ignored`,
    `  "carol" "${scram}"`,
  ].join('\n');
  const r = parseAuthFile(text, 'userlist.txt');
  assert.deepEqual(r.problems, []);
  assert.deepEqual([...r.entries.keys()], ['alice', 'bob', 'carol']);
  assert.deepEqual(r.entries.get('alice'), { user: 'alice', secret: 'plain password' });
  assert.equal(r.entries.get('bob')?.secret, md5);
  assert.equal(r.entries.get('carol')?.secret, scram);
  assert.equal(secretKind('plain password'), 'plain');
  assert.equal(secretKind(md5), 'md5');
  assert.equal(secretKind(scram), 'scram-sha-256');
  // "md5" followed by something that is not 32 hex digits is just a password.
  assert.equal(secretKind('md5isnotahash'), 'plain');
});

test('"" inside quotes is one "', () => {
  const r = parseAuthFile('"we""ird" "pa""ss"""\r\n', 'u.txt');
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.entries.get('we"ird'), { user: 'we"ird', secret: 'pa"ss"' });
});

test('a user listed twice keeps the later secret', () => {
  const r = parseAuthFile('"a" "one"\n"a" "two"\n', 'u.txt');
  assert.equal(r.entries.get('a')?.secret, 'two');
});

test('malformed lines are problems with file and line; good lines still load', () => {
  const text = [
    '"ok" "fine"',
    'alice secret',
    '"open',
    '"nosecret"',
    '"x" "unterminated',
    '"" "empty user"',
    '"s" "SCRAM-SHA-256$4096:c2FsdA==$short:short"',
    '"t" "SCRAM-SHA-256$garbage"',
  ].join('\n');
  const r = parseAuthFile(text, '/etc/pgbouncer/userlist.txt');
  assert.deepEqual([...r.entries.keys()], ['ok']);
  assert.deepEqual(
    r.problems.map((p) => `${p.file}:${p.line}: ${p.setting}: ${p.message}`),
    [
      '/etc/pgbouncer/userlist.txt:2: auth_file: expected "user" "secret"',
      '/etc/pgbouncer/userlist.txt:3: auth_file: unterminated quoted user name',
      '/etc/pgbouncer/userlist.txt:4: auth_file: expected a quoted secret after "nosecret"',
      '/etc/pgbouncer/userlist.txt:5: auth_file: unterminated quoted secret for "x"',
      '/etc/pgbouncer/userlist.txt:6: auth_file: empty user name',
      '/etc/pgbouncer/userlist.txt:7: auth_file: malformed SCRAM secret (StoredKey and ServerKey must be 32 bytes of base64) for "s"',
      '/etc/pgbouncer/userlist.txt:8: auth_file: malformed SCRAM secret (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>) for "t"',
    ],
  );
});
