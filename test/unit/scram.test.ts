import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import {
  ScramClientSession,
  ScramServerSession,
  makeScramSecret,
  md5PasswordHash,
  md5Response,
  parseScramSecret,
  type ScramSecret,
} from '../../src/protocol/scram.js';

// RFC 7677 section 3.
const RFC = {
  user: 'user',
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  salt: 'W22ZaJ0SNY7soEsUEjb6gQ==',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst:
    'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,' +
    'p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

const b = (s: string) => Buffer.from(s, 'latin1');

/** Reference key derivation written out here, independent of scram.ts. */
function referenceKeys(password: string, salt: Buffer, iterations: number) {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  return { clientKey, serverKey, storedKey };
}

function rfcSecret(): ScramSecret {
  return makeScramSecret(RFC.password, Buffer.from(RFC.salt, 'base64'), 4096);
}

function serverAfterFirst(secret: ScramSecret, clientFirst = RFC.clientFirst) {
  const server = new ScramServerSession(secret, () => RFC.serverNonce);
  const first = server.handleClientFirst(b(clientFirst));
  assert.ok('serverFirst' in first, JSON.stringify(first));
  return server;
}

function clientAfterFirst() {
  const client = new ScramClientSession(
    { password: RFC.password },
    { user: RFC.user, nonce: () => RFC.clientNonce },
  );
  return client;
}

function errorOf(r: unknown): string {
  assert.ok(typeof r === 'object' && r !== null && 'error' in r, `expected an error, got ${r}`);
  return String((r as { error: unknown }).error);
}

test('makeScramSecret matches an independent derivation', () => {
  const salt = Buffer.from(RFC.salt, 'base64');
  const ref = referenceKeys(RFC.password, salt, 4096);
  assert.deepEqual(rfcSecret(), {
    iterations: 4096,
    salt,
    storedKey: ref.storedKey,
    serverKey: ref.serverKey,
  });
  const random = makeScramSecret('x');
  assert.equal(random.salt.length, 16);
  assert.equal(random.iterations, 4096);
});

test('RFC 7677 vector, client side', () => {
  const client = clientAfterFirst();
  assert.equal(client.clientFirst().toString(), RFC.clientFirst);
  const final = client.handleServerFirst(b(RFC.serverFirst));
  assert.ok(Buffer.isBuffer(final), JSON.stringify(final));
  assert.equal(final.toString(), RFC.clientFinal);
  assert.equal(client.verifyServerFinal(b(RFC.serverFinal)), true);
});

test('RFC 7677 vector, server side, recovering the ClientKey', () => {
  const server = new ScramServerSession(rfcSecret(), () => RFC.serverNonce);
  const first = server.handleClientFirst(b(RFC.clientFirst));
  assert.ok('serverFirst' in first);
  assert.equal(first.serverFirst.toString(), RFC.serverFirst);
  const final = server.handleClientFinal(b(RFC.clientFinal));
  assert.ok(final.ok, final.ok ? '' : final.error);
  assert.equal(final.serverFinal.toString(), RFC.serverFinal);
  const ref = referenceKeys(RFC.password, Buffer.from(RFC.salt, 'base64'), 4096);
  assert.deepEqual(final.clientKey, ref.clientKey);
});

/** Runs a full exchange between the two session classes. */
function exchange(client: ScramClientSession, server: ScramServerSession) {
  const first = server.handleClientFirst(client.clientFirst());
  if ('error' in first) return first.error;
  const clientFinal = client.handleServerFirst(first.serverFirst);
  if (!Buffer.isBuffer(clientFinal)) return clientFinal.error;
  const final = server.handleClientFinal(clientFinal);
  if (!final.ok) return final.error;
  const verified = client.verifyServerFinal(final.serverFinal);
  return verified === true ? final.clientKey : verified.error;
}

test('full exchange with a password, random nonces and salt', () => {
  const secret = makeScramSecret('s3cr3t ünïcode', undefined, 1000);
  const key = exchange(
    new ScramClientSession({ password: 's3cr3t ünïcode' }),
    new ScramServerSession(secret),
  );
  assert.ok(Buffer.isBuffer(key), String(key));
  assert.deepEqual(key, referenceKeys('s3cr3t ünïcode', secret.salt, 1000).clientKey);
});

test('pass-through: the recovered ClientKey logs in to a server holding the same secret', () => {
  const secret = makeScramSecret('pw', undefined, 1000);
  const clientKey = exchange(
    new ScramClientSession({ password: 'pw' }),
    new ScramServerSession(secret),
  );
  assert.ok(Buffer.isBuffer(clientKey));
  // The pooler, as a client of PostgreSQL, knows only the ClientKey and the stored ServerKey.
  const passThrough = () => new ScramClientSession({ clientKey, serverKey: secret.serverKey });
  const upstream = exchange(passThrough(), new ScramServerSession(secret));
  assert.deepEqual(upstream, clientKey);
  // A server with another salt has other keys: its proof check fails.
  const other = makeScramSecret('pw', undefined, 1000);
  assert.equal(
    exchange(passThrough(), new ScramServerSession(other)),
    'SCRAM proof does not match',
  );
});

test('pass-through keys of the wrong size are an error, not a crash', () => {
  const client = new ScramClientSession({
    clientKey: Buffer.alloc(31),
    serverKey: Buffer.alloc(32),
  });
  const server = new ScramServerSession(makeScramSecret('pw', undefined, 1));
  const first = server.handleClientFirst(client.clientFirst());
  assert.ok('serverFirst' in first);
  assert.match(errorOf(client.handleServerFirst(first.serverFirst)), /32 bytes/);
});

test('wrong password fails on the server; a forged server signature fails on the client', () => {
  const right = new ScramServerSession(makeScramSecret('right'));
  assert.equal(
    exchange(new ScramClientSession({ password: 'wrong' }), right),
    'SCRAM proof does not match',
  );
  const client = clientAfterFirst();
  assert.ok(Buffer.isBuffer(client.handleServerFirst(b(RFC.serverFirst))));
  const forged = 'v=' + Buffer.alloc(32, 1).toString('base64');
  assert.match(errorOf(client.verifyServerFinal(b(forged))), /signature/);
});

test('a flipped proof bit fails in the server', () => {
  const server = serverAfterFirst(rfcSecret());
  const proof = Buffer.from('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', 'base64');
  proof[0]! ^= 1;
  const final = RFC.clientFinal.replace(/p=.*$/, `p=${proof.toString('base64')}`);
  const r = server.handleClientFinal(b(final));
  assert.deepEqual(r, { ok: false, error: 'SCRAM proof does not match' });
});

test('fakeSecret is deterministic per user and key, and never authenticates', () => {
  const key = randomBytes(32);
  const a = ScramServerSession.fakeSecret('ghost', key);
  assert.deepEqual(ScramServerSession.fakeSecret('ghost', key), a);
  assert.notDeepEqual(ScramServerSession.fakeSecret('ghost2', key), a);
  assert.notDeepEqual(ScramServerSession.fakeSecret('ghost', randomBytes(32)), a);
  assert.equal(a.salt.length, 16);
  assert.equal(a.iterations, 4096);
  const r = exchange(new ScramClientSession({ password: 'anything' }), new ScramServerSession(a));
  assert.equal(r, 'SCRAM proof does not match');
});

test('the y,, header (client could bind, server does not offer it) expects c=eSws', () => {
  const cf = 'y,,n=,r=abc';
  let server = serverAfterFirst(rfcSecret(), cf);
  const wrongBinding = `c=biws,r=abc${RFC.serverNonce},p=${'A'.repeat(43)}=`;
  assert.match(errorOf(server.handleClientFinal(b(wrongBinding))), /channel binding/);
  // With the right binding the exchange gets as far as the proof check.
  server = serverAfterFirst(rfcSecret(), cf);
  const rightBinding = `c=eSws,r=abc${RFC.serverNonce},p=${'A'.repeat(43)}=`;
  assert.deepEqual(server.handleClientFinal(b(rightBinding)), {
    ok: false,
    error: 'SCRAM proof does not match',
  });
});

test('hostile client-first messages are errors', () => {
  const cases: [string, RegExp][] = [
    ['', /GS2/],
    ['n', /GS2/],
    ['x,,n=,r=abc', /GS2/],
    ['n,x,n=,r=abc', /GS2/],
    ['p=tls-server-end-point,,n=,r=abc', /channel binding/],
    ['n,a=bob,n=,r=abc', /authorization identity/],
    ['n,,m=ext,n=,r=abc', /mandatory extension/],
    ['n,,r=abc', /malformed/],
    ['n,,n=', /malformed/],
    ['n,,n=,x=abc', /malformed/],
    ['n,,n=,r=abc,bogus', /malformed/],
    ['n,,n=,r=', /nonce/],
    ['n,,n=,r=a b', /nonce/],
    ['n,,n=,r=ab\x7f', /nonce/],
    ['n,,n=,r=ab\xe9', /nonce/],
    ['n,,n=,r=' + 'a'.repeat(513), /nonce too long/],
    ['n,,n=' + 'u'.repeat(9000) + ',r=abc', /too long/],
  ];
  for (const [m, want] of cases) {
    const server = new ScramServerSession(rfcSecret());
    assert.match(errorOf(server.handleClientFirst(b(m))), want, JSON.stringify(m));
    // A failed session stays failed.
    assert.equal(server.handleClientFinal(b(RFC.clientFinal)).ok, false);
  }
  const ok = new ScramServerSession(rfcSecret()).handleClientFirst(b('n,,n=,r=' + 'a'.repeat(512)));
  assert.ok('serverFirst' in ok);
  // Extensions after the nonce are tolerated, as PostgreSQL does.
  const withExtension = new ScramServerSession(rfcSecret()).handleClientFirst(b('n,,n=,r=abc,x=1'));
  assert.ok('serverFirst' in withExtension);
});

test('hostile client-final messages are errors', () => {
  const nonce = RFC.clientNonce + RFC.serverNonce;
  const proof = 'dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
  const cases: [string, RegExp][] = [
    ['', /no proof/],
    [`c=biws,r=${nonce}`, /no proof/],
    [`c=biws,r=${nonce},p=not*base64`, /bad proof/],
    [`c=biws,r=${nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ`, /bad proof/],
    [`c=biws,r=${nonce},p=${Buffer.alloc(31).toString('base64')}`, /bad proof/],
    [`c=biws,r=${nonce},p=${proof},x=1`, /bad proof/],
    [`r=${nonce},p=${proof}`, /malformed/],
    [`c=biws,p=${proof}`, /malformed/],
    [`c=eSws,r=${nonce},p=${proof}`, /channel binding/],
    [`c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=${nonce},p=${proof}`, /channel binding/],
    [`c=biws,r=${RFC.clientNonce},p=${proof}`, /nonce mismatch/],
    [`c=biws,r=${nonce}x,p=${proof}`, /nonce mismatch/],
    [`c=biws,r=${nonce},${'x=1,'.repeat(3000)}p=${proof}`, /too long/],
  ];
  for (const [m, want] of cases) {
    const r = serverAfterFirst(rfcSecret()).handleClientFinal(b(m));
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, want, m.slice(0, 80));
  }
});

test('server messages out of order are errors', () => {
  const server = new ScramServerSession(rfcSecret(), () => RFC.serverNonce);
  assert.match(errorOf(server.handleClientFinal(b(RFC.clientFinal))), /unexpected/);
  const fresh = serverAfterFirst(rfcSecret());
  assert.match(errorOf(fresh.handleClientFirst(b(RFC.clientFirst))), /unexpected/);
  const done = serverAfterFirst(rfcSecret());
  assert.ok(done.handleClientFinal(b(RFC.clientFinal)).ok);
  assert.match(errorOf(done.handleClientFinal(b(RFC.clientFinal))), /unexpected/);
});

test('hostile server-first messages are errors', () => {
  const n = RFC.clientNonce + RFC.serverNonce;
  const cases: [string, RegExp][] = [
    ['', /malformed/],
    [`r=${n},s=${RFC.salt}`, /malformed/],
    [`s=${RFC.salt},r=${n},i=4096`, /malformed/],
    [`m=x,r=${n},s=${RFC.salt},i=4096`, /mandatory extension/],
    [`r=${n},s=${RFC.salt},i=4096,junk`, /malformed/],
    [`r=${RFC.clientNonce},s=${RFC.salt},i=4096`, /does not extend/],
    [`r=someoneelse,s=${RFC.salt},i=4096`, /does not extend/],
    [`r=${n} x,s=${RFC.salt},i=4096`, /nonce/],
    [`r=${n},s=W22ZaJ0SNY7s*EsUEjb6gQ==,i=4096`, /salt/],
    [`r=${n},s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096`, /salt/],
    [`r=${n},s=,i=4096`, /salt/],
    [`r=${n},s=${RFC.salt},i=0`, /iteration/],
    [`r=${n},s=${RFC.salt},i=4294967296`, /iteration/],
    [`r=${n},s=${RFC.salt},i=10000001`, /iteration/],
    [`r=${n},s=${RFC.salt},i=-1`, /iteration/],
    [`r=${n},s=${RFC.salt},i=1e3`, /iteration/],
    [`r=${n},s=${RFC.salt},i=`, /iteration/],
    [`r=${n},s=${'A'.repeat(9000)},i=1`, /too long/],
  ];
  for (const [m, want] of cases) {
    const client = clientAfterFirst();
    assert.match(errorOf(client.handleServerFirst(b(m))), want, m.slice(0, 80));
    assert.match(errorOf(client.verifyServerFinal(b(RFC.serverFinal))), /unexpected/);
  }
});

test('hostile server-final messages are errors', () => {
  const cases: [string, RegExp][] = [
    ['e=invalid-proof', /rejected.*invalid-proof/],
    ['', /malformed/],
    ['v=', /malformed/],
    ['v=!!!!', /malformed/],
    ['v=' + Buffer.alloc(16).toString('base64'), /malformed/],
    ['x=' + RFC.serverFinal.slice(2), /malformed/],
    ['v' + 'A'.repeat(9000), /too long/],
  ];
  for (const [m, want] of cases) {
    const client = clientAfterFirst();
    assert.ok(Buffer.isBuffer(client.handleServerFirst(b(RFC.serverFirst))));
    assert.match(errorOf(client.verifyServerFinal(b(m))), want, m.slice(0, 80));
    // After a failure even the right signature is refused.
    assert.match(errorOf(client.verifyServerFinal(b(RFC.serverFinal))), /unexpected/);
  }
  const fresh = clientAfterFirst();
  assert.match(errorOf(fresh.verifyServerFinal(b(RFC.serverFinal))), /unexpected/);
});

test('parseScramSecret reads the pg_authid format', () => {
  const secret = rfcSecret();
  const text =
    `SCRAM-SHA-256$4096:${RFC.salt}$` +
    `${secret.storedKey.toString('base64')}:${secret.serverKey.toString('base64')}`;
  assert.deepEqual(parseScramSecret(text), secret);
});

test('parseScramSecret rejects malformed secrets', () => {
  const key = Buffer.alloc(32, 1).toString('base64');
  const short = Buffer.alloc(31, 1).toString('base64');
  for (const s of [
    '',
    'md5' + 'a'.repeat(32),
    `SCRAM-SHA-1$4096:${RFC.salt}$${key}:${key}`,
    `SCRAM-SHA-256$0:${RFC.salt}$${key}:${key}`,
    `SCRAM-SHA-256$4294967296:${RFC.salt}$${key}:${key}`,
    `SCRAM-SHA-256$-1:${RFC.salt}$${key}:${key}`,
    `SCRAM-SHA-256$abc:${RFC.salt}$${key}:${key}`,
    `SCRAM-SHA-256$4096:$${key}:${key}`,
    `SCRAM-SHA-256$4096:not*b64$${key}:${key}`,
    `SCRAM-SHA-256$4096:${RFC.salt}$${short}:${key}`,
    `SCRAM-SHA-256$4096:${RFC.salt}$${key}:${short}`,
    `SCRAM-SHA-256$4096:${RFC.salt}$${key}`,
    `SCRAM-SHA-256$4096:${RFC.salt}$${key}:${key}$extra`,
    `SCRAM-SHA-256$4096:${RFC.salt}$${key}:${key}\n`,
  ]) {
    assert.equal(parseScramSecret(s), null, s);
  }
});

test('property: random bytes never make a session throw', () => {
  const secret = rfcSecret();
  const junk = fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    fc.string({ maxLength: 100 }).map((s) => Buffer.from(s)),
  );
  fc.assert(
    fc.property(junk, junk, (x, y) => {
      const server = new ScramServerSession(secret);
      const first = server.handleClientFirst(x);
      const final = server.handleClientFinal(y);
      assert.ok('error' in first || !final.ok);
      const client = new ScramClientSession({ password: 'p' });
      const r = client.handleServerFirst(x);
      assert.ok(!Buffer.isBuffer(r));
      assert.notEqual(client.verifyServerFinal(y), true);
      parseScramSecret(x.toString('latin1'));
    }),
    { numRuns: 300 },
  );
});

test('md5 password hash and response, from a password or from the hash', () => {
  const md5 = (d: Buffer | string) => createHash('md5').update(d).digest('hex');
  const hash = 'md5' + md5('penciluser');
  assert.equal(md5PasswordHash('user', 'pencil'), hash);
  assert.match(hash, /^md5[0-9a-f]{32}$/);
  const salt = Buffer.from([0x01, 0x02, 0x03, 0x04]);
  const response = 'md5' + md5(Buffer.concat([Buffer.from(md5('penciluser')), salt]));
  assert.equal(md5Response('pencil', 'user', salt), response);
  assert.equal(md5Response(hash, 'user', salt), response);
  // Only the exact lowercase shape counts as a hash; anything else is a password.
  const upper = hash.toUpperCase().replace('MD5', 'md5');
  assert.equal(
    md5Response(upper, 'user', salt),
    'md5' + md5(Buffer.concat([Buffer.from(md5(upper + 'user')), salt])),
  );
  // Multi-byte characters are hashed as UTF-8.
  const utf8Hash = 'md5' + md5(Buffer.from('hasłożółw', 'utf8'));
  assert.equal(md5PasswordHash('żółw', 'hasło'), utf8Hash);
});
