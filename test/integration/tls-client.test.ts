// TLS between clients and the pooler (pgpool-ts as the TLS server), driven by real clients against
// the real pooler process and a real PostgreSQL (ssl on):
//
// - the 36-cell matrix libpq sslmode (psql) × client_tls_sslmode, with the expected outcome of every
//   cell in ONE table (MATRIX below), checked from both ends: psql's \conninfo and the pooler's
//   `login attempt: … tls=…` log line; node-postgres for the cells it can express;
// - unix sockets never use TLS and `require` does not apply to them;
// - the protocol rules around the SSLRequest (CVE-2021-3935 style injected bytes, a second
//   SSLRequest inside TLS) and PostgreSQL 17 direct TLS with its ALPN rule, by raw sockets;
// - a presented certificate that does not verify in allow/prefer/require is "not trusted", never
//   "broken" (PgBouncer #275, which we deliberately fix);
// - the Node pitfall (peers.md 1.4): under verify-ca and verify-full, untrusted-CA, self-signed,
//   expired and revoked client certificates are all refused, with the reason;
// - client_tls_protocols, and private key files with loose modes.

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import pg from 'pg';
import { cstr, msg, sslRequest, startupPacket } from '../support/bytes.js';
import { connectClient } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import type { LeafCert, Pki } from '../support/pki.js';
import { freePort, MAIN_JS, startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { connectSocket, errorFields, RawConn } from '../support/raw-client.js';
import { conninfo, psql, runCommand } from '../support/run-cmd.js';
import { dumpLogsOnFailure, logSince, messageOf, required } from '../support/suite.js';

const CONNECT_TIMEOUT_MS = 10_000;
const PSQL_TIMEOUT_MS = 15_000;

const SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
type SslMode = (typeof SSLMODES)[number];

// ------------------------------------------------------------------------------------------------
// The expected outcome of every cell

type Outcome =
  | { readonly kind: 'tls' }
  | { readonly kind: 'plain' }
  | { readonly kind: 'refused'; readonly why: string; readonly error: RegExp; readonly pgError: RegExp };

const TLS: Outcome = { kind: 'tls' };
const PLAIN: Outcome = { kind: 'plain' };
/** The pooler refuses plain TCP (client_tls_sslmode require and stronger). */
const SSL_REQUIRED: Outcome = { kind: 'refused', why: 'the pooler requires TLS', error: /FATAL:\s+SSL required/, pgError: /^SSL required$/ };
/** The pooler answers the SSLRequest with N, and libpq's mode needs TLS. */
const NO_SSL: Outcome = {
  kind: 'refused',
  why: 'the pooler answers N and libpq requires TLS',
  error: /server does not support SSL, but SSL was required/,
  pgError: /does not support SSL/,
};

/**
 * Rows: libpq sslmode (psql; sslrootcert = the CA bundle in the verify modes; sslcert/sslkey = a
 * good client certificate, which libpq sends only when the pooler asks for one). Columns:
 * client_tls_sslmode. libpq `allow` tries plain first and retries with TLS when the server
 * refuses plain with an error; `prefer` tries TLS first and falls back on N.
 */
const MATRIX: Record<SslMode, Record<SslMode, Outcome>> = {
  //            client_tls_sslmode:  disable   allow   prefer  require       verify-ca     verify-full
  disable:       row(               PLAIN,    PLAIN,  PLAIN,  SSL_REQUIRED, SSL_REQUIRED, SSL_REQUIRED),
  allow:         row(               PLAIN,    PLAIN,  PLAIN,  TLS,          TLS,          TLS),
  prefer:        row(               PLAIN,    TLS,    TLS,    TLS,          TLS,          TLS),
  require:       row(               NO_SSL,   TLS,    TLS,    TLS,          TLS,          TLS),
  'verify-ca':   row(               NO_SSL,   TLS,    TLS,    TLS,          TLS,          TLS),
  'verify-full': row(               NO_SSL,   TLS,    TLS,    TLS,          TLS,          TLS),
};

function row(...cells: Outcome[]): Record<SslMode, Outcome> {
  assert.equal(cells.length, SSLMODES.length);
  return Object.fromEntries(SSLMODES.map((m, i) => [m, cells[i]!])) as Record<SslMode, Outcome>;
}

/** node-postgres can say "no TLS" (ssl: false), "TLS, no checks" and "TLS, verify against a CA". */
type PgSsl = 'false' | 'no-verify' | 'ca';
const PG_MATRIX: Record<PgSsl, Record<SslMode, Outcome>> = {
  //            client_tls_sslmode:  disable   allow   prefer  require       verify-ca     verify-full
  false:         row(               PLAIN,    PLAIN,  PLAIN,  SSL_REQUIRED, SSL_REQUIRED, SSL_REQUIRED),
  'no-verify':   row(               NO_SSL,   TLS,    TLS,    TLS,          TLS,          TLS),
  ca:            row(               NO_SSL,   TLS,    TLS,    TLS,          TLS,          TLS),
};

// ------------------------------------------------------------------------------------------------
// Helpers

/** The `msg` of the first pooler log line at or after index `from` that matches. */
async function logMsgSince(p: Pooler, from: number, pattern: RegExp): Promise<string> {
  return messageOf(await logSince(p, from, pattern));
}

/** Backend messages off any stream (a plain socket, or TLS after an upgrade); until() stops at an
 * ErrorResponse and returns what came when the connection ends. */
function readerOf(sock: Duplex): RawConn {
  return new RawConn(sock, { onError: 'stop', onEnd: 'return' });
}

/** Resolves with the TLS socket once the handshake is done, or with the handshake's error. */
function tlsHandshake(opts: tls.ConnectionOptions): Promise<{ sock: tls.TLSSocket } | { error: Error & { code?: string } }> {
  return new Promise((resolve) => {
    const sock = tls.connect(opts);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ error: new Error('TLS handshake timed out') });
    }, CONNECT_TIMEOUT_MS);
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve({ sock });
    });
    sock.once('error', (error) => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ error });
    });
  });
}

/** SSLRequest on a fresh TCP connection; the pooler's answer byte and the socket. */
async function sslRequestOn(port: number): Promise<{ answer: number | null; sock: net.Socket; reader: RawConn }> {
  const sock = await connectSocket({ host: '127.0.0.1', port });
  const reader = readerOf(sock);
  sock.write(sslRequest());
  return { answer: await reader.byte(), sock, reader };
}

interface PgOutcome {
  tls: boolean;
  user: string;
}

async function pgConnect(config: pg.ClientConfig): Promise<PgOutcome> {
  const client = await connectClient({ connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: CONNECT_TIMEOUT_MS, ...config });
  try {
    const r = await client.query<{ u: string }>('SELECT current_user AS u');
    const stream = (client as unknown as { connection: { stream: net.Socket & { encrypted?: boolean } } }).connection.stream;
    return { tls: stream.encrypted === true, user: r.rows[0]?.u ?? '' };
  } finally {
    await client.end().catch(() => undefined);
  }
}

// ------------------------------------------------------------------------------------------------

describe('client-side TLS (pgpool-ts as the TLS server)', () => {
  let cluster: Cluster | undefined;
  let pki: Pki;
  let work: string;
  let hbaFile: string;
  /** CN plainuser and CN md5user, from the intermediate. */
  let goodCert: LeafCert;
  let md5Cert: LeafCert;
  const poolers: Pooler[] = [];
  const c = required(() => cluster, 'cluster');

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'tls-client' });
    assert.ok(cluster.pki);
    pki = cluster.pki;
    [goodCert, md5Cert] = await Promise.all([pki.clientCert(USERS.trust.name), pki.clientCert(USERS.md5.name)]);
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-tls-client-'));
    hbaFile = path.join(work, 'hba.conf');
    // A `cert` line makes the pooler ask for client certificates in allow/prefer/require too
    // (it asks only when one could be used), so the "not trusted but not broken" rule is exercised.
    await fs.writeFile(
      hbaFile,
      `local all all trust
hostssl all ${USERS.md5.name} 127.0.0.1/32 cert
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
`,
    );
  });

  const failures = dumpLogsOnFailure({ poolers: () => poolers });

  after(async () => {
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
    if (work !== undefined) await fs.rm(work, { recursive: true, force: true });
  });

  function ini(mode: SslMode, extra: Record<string, string> = {}): IniSections {
    return {
      pgbouncer: {
        auth_type: 'hba',
        auth_hba_file: hbaFile,
        client_tls_sslmode: mode,
        client_tls_key_file: pki.server.key,
        client_tls_cert_file: pki.server.chain,
        client_tls_ca_file: pki.caBundle,
        server_tls_sslmode: 'disable',
        log_connections: '1',
        // JSON lines: the tests read the auth method of a login from its fields.
        log_format: 'json',
        ...extra,
      },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    };
  }

  async function pooler(mode: SslMode, extra: Record<string, string> = {}): Promise<Pooler> {
    const p = await startPooler(ini(mode, extra), {
      userlist: { [USERS.trust.name]: '', [USERS.md5.name]: USERS.md5.password },
    });
    poolers.push(p);
    return p;
  }

  async function stopPooler(p: Pooler | undefined): Promise<void> {
    if (p === undefined) return;
    await p.stop();
    if (!failures.failed) poolers.splice(poolers.indexOf(p), 1);
  }

  /** psql through the pooler over TCP as `user`, running \conninfo. */
  function psqlVia(p: Pooler, sslmode: string, opts: { user?: string; cert?: { chain: string; key: string } | null } = {}) {
    const cert = opts.cert === undefined ? goodCert : opts.cert;
    const verify = sslmode.startsWith('verify');
    return psql(
      conninfo({
        host: 'localhost',
        hostaddr: '127.0.0.1',
        port: String(p.port),
        user: opts.user ?? USERS.trust.name,
        dbname: 'p0',
        sslmode,
        sslrootcert: verify ? pki.caBundle : path.join(work, 'no-such-root.crt'),
        sslcert: cert === null ? path.join(work, 'no-such.crt') : cert.chain,
        sslkey: cert === null ? path.join(work, 'no-such.key') : cert.key,
        // Never a password: md5user logs in only by the hba cert line, so a password request
        // (or any other method) fails the login at once.
      }),
      '\\conninfo',
      { timeoutMs: PSQL_TIMEOUT_MS },
    );
  }

  // Certificates with one defect each, and what a refusal of each must say.
  const BAD_CERTS = ['untrusted', 'selfSigned', 'expired', 'revoked'] as const;
  type BadCert = (typeof BAD_CERTS)[number];
  /** What the refusal under verify-ca/verify-full must say. */
  const WHY: Record<BadCert, RegExp> = {
    untrusted: /not signed by a trusted CA|unable to get (local )?issuer|unknown ca|untrusted/i,
    selfSigned: /self[- ]signed/i,
    expired: /expired/i,
    revoked: /revoked/i,
  };
  const badPair = (which: BadCert): { chain: string; key: string } => {
    const kp = pki[which];
    return { chain: 'chain' in kp ? kp.chain : kp.cert, key: kp.key };
  };

  // ----------------------------------------------------------------------------------------------
  // The matrix

  for (const server of SSLMODES) {
    describe(`client_tls_sslmode=${server}`, () => {
      let p: Pooler | undefined;
      before(async () => {
        p = await pooler(server);
      });
      after(() => stopPooler(p));

      for (const client of SSLMODES) {
        const want = MATRIX[client][server];
        const label = want.kind === 'refused' ? `refused (${want.why})` : want.kind === 'tls' ? 'connects with TLS' : 'connects plain';
        it(`psql sslmode=${client}: ${label}`, async () => {
          assert.ok(p);
          const from = p.logs().length;
          const r = await psqlVia(p, client);
          if (want.kind === 'refused') {
            assert.notEqual(r.code, 0, `expected a refusal, got:\n${r.stdout}`);
            assert.match(r.stderr, want.error);
            return;
          }
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /connected to database "p0" as user "plainuser"/);
          const line = await logMsgSince(p, from, /login attempt: db=p0 user=plainuser tls=/);
          if (want.kind === 'tls') {
            assert.match(r.stdout, /SSL connection \(protocol: TLSv1\.[23]/, 'psql \\conninfo shows TLS');
            assert.match(line, /tls=TLSv1\.[23]\/\S+/, 'the pooler logged the TLS version and cipher');
          } else {
            assert.doesNotMatch(r.stdout, /SSL connection/, 'psql \\conninfo shows no TLS');
            assert.match(line, /tls=no replication=no$/);
          }
        });
      }

      for (const mode of ['false', 'no-verify', 'ca'] as const) {
        const want = PG_MATRIX[mode][server];
        const label = want.kind === 'refused' ? `refused (${want.why})` : want.kind === 'tls' ? 'connects with TLS' : 'connects plain';
        it(`node-postgres ssl=${mode}: ${label}`, async () => {
          assert.ok(p);
          const certs = { cert: await fs.readFile(goodCert.chain, 'utf8'), key: await fs.readFile(goodCert.key, 'utf8') };
          const ssl: pg.ClientConfig['ssl'] =
            mode === 'false' ? false
              : mode === 'no-verify' ? { rejectUnauthorized: false, ...certs }
                : { ca: await fs.readFile(pki.caBundle, 'utf8'), servername: 'localhost', ...certs };
          const config: pg.ClientConfig = { host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'p0', ssl };
          const from = p.logs().length;
          if (want.kind === 'refused') {
            await assert.rejects(pgConnect(config), (err: Error) => {
              assert.match(err.message, want.pgError);
              return true;
            });
            return;
          }
          const got = await pgConnect(config);
          assert.deepEqual(got, { tls: want.kind === 'tls', user: USERS.trust.name });
          const line = await logMsgSince(p, from, /login attempt: db=p0 user=plainuser tls=/);
          assert.match(line, want.kind === 'tls' ? /tls=TLSv1\.[23]\// : /tls=no replication=no$/);
        });
      }

      if (server === 'verify-ca' || server === 'verify-full') {
        it('psql with no client certificate: refused, the message says a certificate is needed', async () => {
          assert.ok(p);
          const r = await psqlVia(p, 'require', { cert: null });
          assert.notEqual(r.code, 0, r.stdout);
          assert.match(r.stderr, /FATAL:.*(valid client certificate|certificate)/);
        });

        // No CRL here: each certificate has exactly one defect, and the refusal must name it.
        for (const which of ['untrusted', 'selfSigned', 'expired'] as const) {
          it(`psql with a ${which} client certificate (no CRL configured): refused, and says why`, async () => {
            assert.ok(p);
            const from = p.logs().length;
            const r = await psqlVia(p, 'require', { cert: badPair(which) });
            assert.notEqual(r.code, 0, `a ${which} certificate must be refused:\n${r.stdout}`);
            assert.match(r.stderr, WHY[which]);
            assert.ok(!p.logs().slice(from).some((l) => /login attempt:/.test(messageOf(l))), 'no login was attempted');
          });
        }
      }
    });
  }

  // ----------------------------------------------------------------------------------------------
  // Unix sockets

  describe('unix socket', () => {
    let p: Pooler | undefined;
    before(async () => {
      p = await pooler('verify-full');
    });
    after(() => stopPooler(p));

    it('answers an SSLRequest with N and logs in plain: require/verify-full do not apply', async () => {
      assert.ok(p);
      const sock = await connectSocket({ path: path.join(p.dir, `.s.PGSQL.${p.port}`) });
      const reader = readerOf(sock);
      try {
        sock.write(sslRequest());
        assert.equal(await reader.byte(), 'N'.charCodeAt(0), 'a unix socket never negotiates TLS');
        const from = p.logs().length;
        sock.write(startupPacket({ user: USERS.trust.name, database: 'p0' }));
        const seen = await reader.until('Z');
        assert.deepEqual(seen.filter((m) => m.type === 'E').map((m) => errorFields(m.body).M), []);
        assert.equal(seen.at(-1)?.type, 'Z');
        const line = await logMsgSince(p, from, /login attempt: db=p0 user=plainuser tls=/);
        assert.match(line, /tls=no replication=no$/);
      } finally {
        sock.destroy();
      }
    });

    it('psql sslmode=require over the unix socket connects (without TLS)', async () => {
      assert.ok(p);
      const r = await psql(conninfo({ host: p.dir, port: String(p.port), user: USERS.trust.name, dbname: 'p0', sslmode: 'require' }), '\\conninfo', {
        timeoutMs: PSQL_TIMEOUT_MS,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /via socket/);
      assert.doesNotMatch(r.stdout, /SSL connection/);
    });
  });

  // ----------------------------------------------------------------------------------------------
  // Protocol rules around the handshake, and direct TLS

  describe('SSLRequest and direct TLS protocol rules', () => {
    let p: Pooler | undefined;
    let ca: string;
    before(async () => {
      p = await pooler('require');
      ca = await fs.readFile(pki.caBundle, 'utf8');
    });
    after(() => stopPooler(p));

    it('bytes after an SSLRequest, before the handshake: "received unencrypted data after SSL request"', async () => {
      assert.ok(p);
      const sock = await connectSocket({ host: '127.0.0.1', port: p.port });
      const reader = readerOf(sock);
      try {
        // One write: the StartupMessage arrives in the same segment as the SSLRequest.
        sock.write(Buffer.concat([sslRequest(), startupPacket({ user: USERS.trust.name, database: 'p0' })]));
        const first = await reader.peek();
        assert.notEqual(first, 'S'.charCodeAt(0), 'the pooler must not start a handshake');
        const err = await reader.next();
        assert.equal(err?.type, 'E', 'an ErrorResponse');
        assert.match(errorFields(err.body).M ?? '', /received unencrypted data after SSL request/);
        assert.ok(await reader.closesWithin(2_000), 'the connection is closed');
      } finally {
        sock.destroy();
      }
    });

    it('a second SSLRequest inside TLS closes the connection', async () => {
      assert.ok(p);
      const { answer, sock, reader } = await sslRequestOn(p.port);
      assert.equal(answer, 'S'.charCodeAt(0));
      reader.detach();
      const h = await tlsHandshake({ socket: sock, ca, servername: 'localhost' });
      assert.ok('sock' in h, `handshake: ${'error' in h ? h.error.message : ''}`);
      const inner = readerOf(h.sock);
      try {
        h.sock.write(sslRequest());
        assert.ok(await inner.closesWithin(3_000), 'the pooler closes the connection');
        assert.equal(await inner.byte(100).catch(() => null), null, 'no answer byte to the second SSLRequest');
      } finally {
        h.sock.destroy();
      }
    });

    it('direct TLS with ALPN "postgresql" logs in and runs a query', async () => {
      assert.ok(p);
      const from = p.logs().length;
      const h = await tlsHandshake({ host: '127.0.0.1', port: p.port, ca, servername: 'localhost', ALPNProtocols: ['postgresql'] });
      assert.ok('sock' in h, `handshake: ${'error' in h ? h.error.message : ''}`);
      const reader = readerOf(h.sock);
      try {
        assert.equal(h.sock.alpnProtocol, 'postgresql');
        h.sock.write(startupPacket({ user: USERS.trust.name, database: 'p0' }));
        const login = await reader.until('Z');
        assert.deepEqual(login.filter((m) => m.type === 'E').map((m) => errorFields(m.body).M), []);
        assert.equal(login.at(-1)?.type, 'Z');
        h.sock.write(msg('Q', cstr('SELECT 40 + 2')));
        const reply = await reader.until('Z');
        const row = reply.find((m) => m.type === 'D');
        assert.ok(row, `a DataRow; got ${reply.map((m) => m.type).join('')}`);
        assert.match(row.body.toString('latin1'), /42/);
        const line = await logMsgSince(p, from, /login attempt: db=p0 user=plainuser tls=/);
        assert.match(line, /tls=TLSv1\.3\//);
      } finally {
        h.sock.destroy();
      }
    });

    it('direct TLS without ALPN is refused', async () => {
      assert.ok(p);
      const h = await tlsHandshake({ host: '127.0.0.1', port: p.port, ca, servername: 'localhost' });
      if ('error' in h) {
        // Refusing in the handshake itself is fine too, as long as it is for the missing ALPN.
        assert.match(`${h.error.code ?? ''} ${h.error.message}`, /APPLICATION_PROTOCOL|application protocol|ALPN/i);
        return;
      }
      const reader = readerOf(h.sock);
      try {
        h.sock.write(startupPacket({ user: USERS.trust.name, database: 'p0' }));
        const seen = await reader.until('Z');
        assert.ok(!seen.some((m) => m.type === 'R' && m.body.readInt32BE(0) === 0), 'no AuthenticationOk');
        const err = seen.find((m) => m.type === 'E');
        assert.ok(err, `an ErrorResponse; got ${seen.map((m) => m.type).join('') || 'nothing'}`);
        assert.match(errorFields(err.body).M ?? '', /ALPN/);
        assert.ok(await reader.closesWithin(2_000), 'the connection is closed');
      } finally {
        h.sock.destroy();
      }
    });

    it('direct TLS with ALPN "http/1.1" fails the handshake', async () => {
      assert.ok(p);
      const h = await tlsHandshake({ host: '127.0.0.1', port: p.port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
      if ('sock' in h) h.sock.destroy();
      assert.ok('error' in h, 'the handshake must fail');
      assert.match(`${h.error.code ?? ''} ${h.error.message}`, /NO_APPLICATION_PROTOCOL|no application protocol/i);
    });
  });

  // ----------------------------------------------------------------------------------------------
  // Certificates that do not verify

  for (const mode of ['allow', 'prefer', 'require'] as const) {
    describe(`client_tls_sslmode=${mode} with a CA and a CRL: a certificate that does not verify is not trusted, but not broken`, () => {
      let p: Pooler | undefined;
      before(async () => {
        p = await pooler(mode, { client_tls_crl_file: pki.crl });
      });
      after(() => stopPooler(p));

      for (const which of BAD_CERTS) {
        it(`${which}: plainuser (trust) connects with TLS; md5user (hba cert) is refused`, async () => {
          assert.ok(p);
          const ok = await psqlVia(p, 'require', { cert: badPair(which) });
          assert.equal(ok.code, 0, `a ${which} certificate must not break the connection: ${ok.stderr}`);
          assert.match(ok.stdout, /SSL connection/);
          const refused = await psqlVia(p, 'require', { cert: badPair(which), user: USERS.md5.name });
          assert.notEqual(refused.code, 0, `cert auth must not trust a ${which} certificate`);
          assert.match(refused.stderr, /certificate/);
          assert.match(refused.stderr, WHY[which]);
        });
      }

      it('a good certificate is asked for and used: md5user logs in by hba cert', async () => {
        assert.ok(p);
        const from = p.logs().length;
        const r = await psqlVia(p, 'require', { cert: md5Cert, user: USERS.md5.name });
        assert.equal(r.code, 0, r.stderr);
        const line = await logMsgSince(p, from, /login attempt: db=p0 user=md5user/);
        assert.match(line, /tls=TLSv1/);
        const raw = p.logs().slice(from).find((l) => messageOf(l) === line) ?? '';
        assert.match(raw, /"method":"cert"/);
      });
    });
  }

  for (const mode of ['verify-ca', 'verify-full'] as const) {
    describe(`client_tls_sslmode=${mode} with client_tls_crl_file: Node pitfall regression (peers.md 1.4)`, () => {
      let p: Pooler | undefined;
      before(async () => {
        p = await pooler(mode, { client_tls_crl_file: pki.crl });
      });
      after(() => stopPooler(p));

      for (const which of BAD_CERTS) {
        it(`${which} client certificate is refused`, async () => {
          assert.ok(p);
          const from = p.logs().length;
          const r = await psqlVia(p, 'require', { cert: badPair(which) });
          assert.notEqual(r.code, 0, `a ${which} certificate must be refused under ${mode}:\n${r.stdout}`);
          assert.match(r.stderr, /FATAL:/);
          assert.ok(
            !p.logs().slice(from).some((l) => /login attempt: db=p0 user=plainuser/.test(messageOf(l))),
            'no login was attempted',
          );
        });

        it(`${which} client certificate: the refusal says why`, async () => {
          assert.ok(p);
          const r = await psqlVia(p, 'require', { cert: badPair(which) });
          assert.notEqual(r.code, 0);
          assert.match(r.stderr, WHY[which]);
        });
      }

      it('a good client certificate still verifies with the CRL configured', async () => {
        assert.ok(p);
        const r = await psqlVia(p, 'verify-full');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /SSL connection/);
      });

      it('node-postgres with a self-signed certificate is refused too', async () => {
        assert.ok(p);
        const pair = badPair('selfSigned');
        await assert.rejects(
          pgConnect({
            host: '127.0.0.1',
            port: p.port,
            user: USERS.trust.name,
            database: 'p0',
            ssl: { ca: await fs.readFile(pki.caBundle, 'utf8'), cert: await fs.readFile(pair.chain, 'utf8'), key: await fs.readFile(pair.key, 'utf8') },
          }),
          (err: Error & { code?: string }) => {
            assert.match(err.message, WHY.selfSigned);
            assert.equal(err.code, '28000');
            return true;
          },
        );
      });
    });
  }

  // ----------------------------------------------------------------------------------------------
  // client_tls_protocols

  describe('client_tls_protocols', () => {
    it('tlsv1.3 refuses a client limited to TLS 1.2 and accepts TLS 1.3', async () => {
      const p = await pooler('require', { client_tls_protocols: 'tlsv1.3' });
      try {
        const ca = await fs.readFile(pki.caBundle, 'utf8');
        const old = await sslRequestOn(p.port);
        assert.equal(old.answer, 'S'.charCodeAt(0));
        old.reader.detach();
        const h12 = await tlsHandshake({ socket: old.sock, ca, servername: 'localhost', maxVersion: 'TLSv1.2' });
        if ('sock' in h12) h12.sock.destroy();
        assert.ok('error' in h12, 'a TLS 1.2-only client must fail the handshake');
        assert.match(`${h12.error.code ?? ''} ${h12.error.message}`, /version|protocol/i);
        old.sock.destroy();

        const r = await psqlVia(p, 'require');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /SSL connection \(protocol: TLSv1\.3/);
      } finally {
        await stopPooler(p);
      }
    });

    it('tlsv1.2 makes psql negotiate TLS 1.2', async () => {
      const p = await pooler('require', { client_tls_protocols: 'tlsv1.2' });
      try {
        const from = p.logs().length;
        const r = await psqlVia(p, 'require');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /SSL connection \(protocol: TLSv1\.2/);
        assert.match(await logMsgSince(p, from, /login attempt: db=p0 user=plainuser/), /tls=TLSv1\.2\//);
      } finally {
        await stopPooler(p);
      }
    });
  });

  // ----------------------------------------------------------------------------------------------
  // Private key file modes

  describe('client_tls_key_file permissions', () => {
    async function iniWithKeyMode(mode: number): Promise<{ iniPath: string; keyPath: string }> {
      const dir = await fs.mkdtemp(path.join(work, 'keymode-'));
      const keyPath = path.join(dir, 'pooler.key');
      await fs.copyFile(pki.server.key, keyPath);
      await fs.chmod(keyPath, mode);
      const iniPath = path.join(dir, 'pgpool.ini');
      const port = await freePort();
      await fs.writeFile(
        iniPath,
        `[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
client_tls_sslmode = require
client_tls_key_file = ${keyPath}
client_tls_cert_file = ${pki.server.chain}
[databases]
p0 = host=127.0.0.1 port=${c().port} dbname=p0
`,
      );
      return { iniPath, keyPath };
    }

    it('mode 0644: startup fails with exit 1 naming the file and its mode; --check reports it', async () => {
      const { iniPath, keyPath } = await iniWithKeyMode(0o644);
      const run = await runCommand(process.execPath, [MAIN_JS, '-c', iniPath], { timeoutMs: 10_000 });
      assert.equal(run.timedOut, false, 'the pooler must not start with a world-readable key');
      assert.equal(run.code, 1, `exit code; output:\n${run.stdout}${run.stderr}`);
      const out = run.stdout + run.stderr;
      assert.ok(out.includes(keyPath), `the message names ${keyPath}:\n${out}`);
      assert.match(out, /0644/);

      const check = await runCommand(process.execPath, [MAIN_JS, '--check', '-c', iniPath], { timeoutMs: 10_000 });
      assert.equal(check.code, 1, `--check exit code; output:\n${check.stdout}${check.stderr}`);
      const checkOut = check.stdout + check.stderr;
      assert.ok(checkOut.includes(keyPath), checkOut);
      assert.match(checkOut, /0644/);
    });

    it('mode 0600 and 0640 are accepted by --check', async () => {
      for (const mode of [0o600, 0o640]) {
        const { iniPath } = await iniWithKeyMode(mode);
        const check = await runCommand(process.execPath, [MAIN_JS, '--check', '-c', iniPath], { timeoutMs: 10_000 });
        assert.equal(check.code, 0, `mode 0${mode.toString(8)}: ${check.stdout}${check.stderr}`);
      }
    });
  });
});
