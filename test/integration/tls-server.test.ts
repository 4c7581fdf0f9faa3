// TLS between the pooler and PostgreSQL (pgpool-ts as the TLS client), against real PostgreSQL
// servers: one with ssl and the harness's good certificate (A), one without ssl (B), and one whose
// certificate, CA and pg_hba.conf the tests change (C; it starts with a certificate that names only
// wrong.example). All certificates come from A's PKI.
//
// - The matrix server_tls_sslmode × server_tls_ca_file (none / good / wrong) × PostgreSQL (ssl by IP,
//   ssl by name, no ssl, wrong host name), with the expected outcome of each cell in ONE table,
//   judged by libpq's rules (peers.md 1.1): allow = plain first; prefer = TLS when offered, no
//   checks; require = TLS, no checks unless a CA file is set (then the chain is verified);
//   verify-ca = chain; verify-full = chain + host name (SAN DNS and IP).
// - A server connection that fails TLS is a failed login: as in PgBouncer the waiting client waits
//   for the retry or its own timeout (query_wait_timeout, 1 s here), and that error's DETAIL names
//   the TLS reason (PgBouncer leaves it to its log). PostgreSQL's own refusal comes at once.
// - allow retries with TLS when PostgreSQL refuses plain text; disable gets PostgreSQL's own error.
// - server_tls_crl_file, a client certificate for PostgreSQL's `cert` method, and pooled server
//   connections that stay TLS.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import type tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, type PgError } from '../support/pg-client.js';
import { DEFAULT_HBA, startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import type { LeafCert, Pki } from '../support/pki.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { psql } from '../support/run-cmd.js';
import { dumpLogsOnFailure, findLogLine, parseLogLine, required } from '../support/suite.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** "Within seconds": query_wait_timeout (1 s below) plus janitor slack, far below
 * client_login_timeout (set to 60 s below, PgBouncer's default). */
const PROMPT_MS = 5_000;

// ------------------------------------------------------------------------------------------------
// The expected outcome of every cell

type Outcome = { readonly kind: 'tls' } | { readonly kind: 'plain' } | { readonly kind: 'error'; readonly why: string; readonly error: RegExp };

const TLS: Outcome = { kind: 'tls' };
const PLAIN: Outcome = { kind: 'plain' };
const NO_SSL: Outcome = { kind: 'error', why: 'PostgreSQL has no ssl', error: /server does not support SSL/ };
const BAD_CA: Outcome = { kind: 'error', why: 'chain does not verify', error: /not signed by a trusted CA|unable to get (local )?issuer|unable to verify/i };
const BAD_HOST: Outcome = {
  kind: 'error',
  why: 'host name not in the certificate',
  error: /(host ?name|altnames?).*(localhost|127\.0\.0\.1|wrong\.example)|(localhost|127\.0\.0\.1).*(host ?name|altnames?)/i,
};

/** The pooler's [databases]: each cell of a row is one of these. */
const TARGETS = ['ssl_ip', 'ssl_localhost', 'nossl', 'wronghost'] as const;
type Target = (typeof TARGETS)[number];

type CaChoice = 'none' | 'good' | 'wrong';

interface MatrixRow {
  readonly mode: 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
  readonly ca: CaChoice;
  readonly cells: Record<Target, Outcome>;
}

/**
 * Columns: ssl_ip = A by 127.0.0.1 (IP SAN), ssl_localhost = A by "localhost" (DNS SAN),
 * nossl = B (ssl off), wronghost = C by "localhost" (its certificate names only wrong.example).
 * ca: server_tls_ca_file unset, the CA bundle that signed every server certificate, or an
 * unrelated CA.
 */
const MATRIX: readonly MatrixRow[] = [
  //                                         ssl_ip   ssl_localhost  nossl    wronghost
  { mode: 'disable',     ca: 'none',  cells: cells(PLAIN,   PLAIN,         PLAIN,   PLAIN) },
  { mode: 'disable',     ca: 'wrong', cells: cells(PLAIN,   PLAIN,         PLAIN,   PLAIN) },
  { mode: 'allow',       ca: 'none',  cells: cells(PLAIN,   PLAIN,         PLAIN,   PLAIN) },
  { mode: 'allow',       ca: 'wrong', cells: cells(PLAIN,   PLAIN,         PLAIN,   PLAIN) },
  { mode: 'prefer',      ca: 'none',  cells: cells(TLS,     TLS,           PLAIN,   TLS) },
  { mode: 'prefer',      ca: 'wrong', cells: cells(TLS,     TLS,           PLAIN,   TLS) },
  { mode: 'require',     ca: 'none',  cells: cells(TLS,     TLS,           NO_SSL,  TLS) },
  { mode: 'require',     ca: 'good',  cells: cells(TLS,     TLS,           NO_SSL,  TLS) },
  { mode: 'require',     ca: 'wrong', cells: cells(BAD_CA,  BAD_CA,        NO_SSL,  BAD_CA) },
  { mode: 'verify-ca',   ca: 'good',  cells: cells(TLS,     TLS,           NO_SSL,  TLS) },
  { mode: 'verify-ca',   ca: 'wrong', cells: cells(BAD_CA,  BAD_CA,        NO_SSL,  BAD_CA) },
  { mode: 'verify-ca',   ca: 'none',  cells: cells(BAD_CA,  BAD_CA,        NO_SSL,  BAD_CA) },
  { mode: 'verify-full', ca: 'good',  cells: cells(TLS,     TLS,           NO_SSL,  BAD_HOST) },
  { mode: 'verify-full', ca: 'wrong', cells: cells(BAD_CA,  BAD_CA,        NO_SSL,  BAD_CA) },
];

function cells(...o: Outcome[]): Record<Target, Outcome> {
  assert.equal(o.length, TARGETS.length);
  return Object.fromEntries(TARGETS.map((t, i) => [t, o[i]!])) as Record<Target, Outcome>;
}

// ------------------------------------------------------------------------------------------------
// Helpers

/** uid/gid of the `postgres` OS user when we are root (the server must own its key file). */
function serverOwner(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  assert.ok(uid !== undefined && gid !== undefined, 'no postgres OS user');
  return { uid: Number(uid), gid: Number(gid) };
}

async function writeOwned(file: string, text: string, mode: number): Promise<void> {
  await fs.writeFile(file, text, { mode });
  await fs.chmod(file, mode);
  const owner = serverOwner();
  if (owner !== null) await fs.chown(file, owner.uid, owner.gid);
}

interface RunResult {
  ok: boolean;
  ssl: boolean | null;
  error: PgError | null;
  ms: number;
}

/** Through the pooler (plain TCP on the client side): is the server connection TLS? */
async function sslViaPooler(p: Pooler, db: string, user: string = USERS.trust.name, password?: string): Promise<RunResult> {
  const t0 = Date.now();
  const client = new pg.Client({
    host: '127.0.0.1',
    port: p.port,
    user,
    password,
    database: db,
    ssl: false,
    // Longer than PROMPT_MS, so "prompt" is measured, not imposed by the driver.
    connectionTimeoutMillis: 30_000,
    query_timeout: 30_000,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const r = await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return { ok: true, ssl: r.rows[0]?.ssl ?? null, error: null, ms: Date.now() - t0 };
  } catch (err) {
    return { ok: false, ssl: null, error: err as PgError, ms: Date.now() - t0 };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Waits for the pooler's `server login failed` line for database `db`, naming the reason. */
async function serverLoginFailure(p: Pooler, from: number, db: string, reason: RegExp): Promise<void> {
  const hit = await findLogLine(p, from, (line) => {
    const l = parseLogLine(line);
    return /server login failed/.test(l.msg) && l.db === db && reason.test(l.msg);
  });
  if (hit === null) assert.fail(`the pooler did not log the reason (${reason}) for ${db}:\n${p.logs().slice(from).join('\n')}`);
}

function assertOutcome(r: RunResult, want: Outcome, where: string): void {
  if (want.kind === 'error') {
    assert.equal(r.ok, false, `${where}: expected an error (${want.why}), got ssl=${r.ssl}`);
    const msg = `${r.error?.message ?? ''} ${(r.error as { detail?: string } | null)?.detail ?? ''}`;
    assert.match(msg, want.error, `${where}: the message must name the reason (${want.why})`);
    assert.doesNotMatch(msg, /client_login_timeout/, where);
    assert.ok(r.ms < PROMPT_MS, `${where}: the error took ${r.ms} ms (must come within seconds)`);
    return;
  }
  assert.equal(r.ok, true, `${where}: ${r.error?.message ?? ''}`);
  assert.equal(r.ssl, want.kind === 'tls', `${where}: server connection ${want.kind === 'tls' ? 'must' : 'must not'} use TLS`);
}

// ------------------------------------------------------------------------------------------------

describe('server-side TLS (pgpool-ts as the TLS client of PostgreSQL)', () => {
  let a: Cluster | undefined;
  let b: Cluster | undefined;
  let cc: Cluster | undefined;
  let pki: Pki;
  const poolers: Pooler[] = [];

  const A = required(() => a, 'cluster A');
  const B = required(() => b, 'cluster B');
  const C = required(() => cc, 'cluster C');

  /** Make C serve `leaf` (and trust A's CA for client certificates); waits until it does. */
  async function serveOnC(leaf: LeafCert, tag: string): Promise<void> {
    const c = C();
    const cert = `${c.dataDir}/${tag}.crt`;
    const key = `${c.dataDir}/${tag}.key`;
    const ca = `${c.dataDir}/a-ca.crt`;
    await writeOwned(cert, await fs.readFile(leaf.chain, 'utf8'), 0o644);
    await writeOwned(key, await fs.readFile(leaf.key, 'utf8'), 0o600);
    await writeOwned(ca, await fs.readFile(pki.caBundle, 'utf8'), 0o644);
    await c.setConf('ssl_cert_file', cert);
    await c.setConf('ssl_key_file', key);
    await c.setConf('ssl_ca_file', ca);
    await c.setConf('ssl', 'on');
    await c.reload();
    const want = new X509Certificate(await fs.readFile(leaf.cert)).serialNumber.toUpperCase();
    const got = await servedSerial(c);
    assert.equal(got, want, `C does not serve ${tag} after the reload; log:\n${await c.readLog()}`);
  }

  /** The serial number of the certificate a cluster presents (direct, no verification). */
  async function servedSerial(c: Cluster): Promise<string> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: c.port,
      user: 'postgres',
      database: 'p0',
      ssl: { rejectUnauthorized: false },
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    });
    client.on('error', () => undefined);
    try {
      await client.connect().catch(() => undefined);
      const stream = (client as unknown as { connection: { stream: net.Socket } }).connection.stream as tls.TLSSocket;
      return (stream.getPeerCertificate?.()?.serialNumber ?? '').toUpperCase();
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  before(async () => {
    [a, b, cc] = await Promise.all([
      startCluster({ ssl: true, name: 'tls-server-a' }),
      startCluster({ name: 'tls-server-b' }),
      startCluster({ name: 'tls-server-c' }),
    ]);
    assert.ok(a.pki);
    pki = a.pki;
    await serveOnC(pki.wrongHostServer, 'wrong-host');
  });

  const failures = dumpLogsOnFailure({ poolers: () => poolers });

  after(async () => {
    await Promise.all(poolers.map((p) => p.stop()));
    await Promise.all([a?.destroy(), b?.destroy(), cc?.destroy()]);
  });

  function databases(): Record<string, string> {
    return {
      ssl_ip: `host=127.0.0.1 port=${A().port} dbname=p0`,
      ssl_localhost: `host=localhost port=${A().port} dbname=p0`,
      nossl: `host=127.0.0.1 port=${B().port} dbname=p0`,
      wronghost: `host=localhost port=${C().port} dbname=p0`,
    };
  }

  function caFile(ca: CaChoice): Record<string, string> {
    if (ca === 'none') return {};
    return { server_tls_ca_file: ca === 'good' ? pki.caBundle : pki.untrustedCa };
  }

  async function pooler(server: Record<string, string>, extra: Record<string, string> = {}): Promise<Pooler> {
    const p = await startPooler(
      {
        pgbouncer: {
          auth_type: 'trust',
          client_tls_sslmode: 'disable',
          client_login_timeout: '60',
          query_wait_timeout: '1',
          log_connections: '1',
          ...server,
          ...extra,
        },
        databases: databases(),
      },
      { userlist: { [USERS.trust.name]: '', [USERS.md5.name]: USERS.md5.password } },
    );
    poolers.push(p);
    return p;
  }

  async function stopPooler(p: Pooler): Promise<void> {
    await p.stop();
    if (!failures.failed) poolers.splice(poolers.indexOf(p), 1);
  }

  // ----------------------------------------------------------------------------------------------
  // The matrix

  for (const row of MATRIX) {
    it(`server_tls_sslmode=${row.mode}, server_tls_ca_file=${row.ca}: ${TARGETS.map((t) => `${t}→${row.cells[t].kind}`).join(', ')}`, async () => {
      const p = await pooler({ server_tls_sslmode: row.mode, ...caFile(row.ca) });
      try {
        // At once (each cell is its own pool and measures its own time): a failing cell waits for
        // query_wait_timeout.
        const from = p.logs().length;
        const results = await Promise.all(TARGETS.map((target) => sslViaPooler(p, target)));
        for (const [i, target] of TARGETS.entries()) {
          const want = row.cells[target];
          assertOutcome(results[i]!, want, `${row.mode}/${row.ca}/${target}`);
          if (want.kind === 'error') await serverLoginFailure(p, from, target, want.error);
        }
      } finally {
        await stopPooler(p);
      }
    });
  }

  it('psql sees the TLS reason promptly too (verify-full, wrong host name)', async () => {
    const p = await pooler({ server_tls_sslmode: 'verify-full', ...caFile('good') });
    try {
      const t0 = Date.now();
      const r = await psql(`host=127.0.0.1 port=${p.port} user=${USERS.trust.name} dbname=wronghost sslmode=disable`, 'SELECT 1', { timeoutMs: 30_000 });
      const ms = Date.now() - t0;
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, BAD_HOST.kind === 'error' ? BAD_HOST.error : /./);
      assert.ok(ms < PROMPT_MS, `took ${ms} ms`);
    } finally {
      await stopPooler(p);
    }
  });

  // ----------------------------------------------------------------------------------------------
  // Revocation and expiry of the server's certificate

  describe('server_tls_crl_file', () => {
    it('a CRL that does not list the server certificate: verify-full connects', async () => {
      const p = await pooler({ server_tls_sslmode: 'verify-full', ...caFile('good'), server_tls_crl_file: pki.crl });
      try {
        assertOutcome(await sslViaPooler(p, 'ssl_localhost'), TLS, 'good certificate with a CRL');
      } finally {
        await stopPooler(p);
      }
    });

    it('a revoked server certificate fails the server connection promptly, saying "revoked"', async () => {
      await serveOnC(pki.revoked, 'revoked');
      const p = await pooler({ server_tls_sslmode: 'verify-full', ...caFile('good'), server_tls_crl_file: pki.crl });
      try {
        // C serves the revoked certificate, which names localhost: only revocation can fail it.
        assertOutcome(await sslViaPooler(p, 'wronghost'), { kind: 'error', why: 'revoked', error: /revoked/i }, 'revoked');
      } finally {
        await stopPooler(p);
      }
      // Without the CRL the same certificate is accepted: the CRL is the only reason.
      const q = await pooler({ server_tls_sslmode: 'verify-full', ...caFile('good') });
      try {
        assertOutcome(await sslViaPooler(q, 'wronghost'), TLS, 'revoked certificate without a CRL');
      } finally {
        await stopPooler(q);
      }
    });

    it('an expired server certificate fails verify-ca promptly, saying "expired"', async () => {
      await serveOnC(pki.expired, 'expired');
      const p = await pooler({ server_tls_sslmode: 'verify-ca', ...caFile('good') });
      try {
        assertOutcome(await sslViaPooler(p, 'wronghost'), { kind: 'error', why: 'expired', error: /expired/i }, 'expired');
      } finally {
        await stopPooler(p);
      }
    });
  });

  // ----------------------------------------------------------------------------------------------
  // pg_hba.conf on the PostgreSQL side

  describe('PostgreSQL with hostnossl … reject', () => {
    before(async () => {
      await serveOnC(pki.server, 'good');
      await C().setHba('hostnossl all all all reject\nhostssl all all all trust\n');
      await C().reload();
    });
    after(async () => {
      await C().setHba(DEFAULT_HBA);
      await C().reload();
    });

    it('allow: plain first, refused by PostgreSQL, then TLS works (libpq allow)', async () => {
      const p = await pooler({ server_tls_sslmode: 'allow' });
      try {
        assertOutcome(await sslViaPooler(p, 'wronghost'), TLS, 'allow against hostnossl reject');
      } finally {
        await stopPooler(p);
      }
    });

    it('prefer and verify-full work', async () => {
      for (const server of [{ server_tls_sslmode: 'prefer' }, { server_tls_sslmode: 'verify-full', ...caFile('good') }]) {
        const p = await pooler(server);
        try {
          assertOutcome(await sslViaPooler(p, 'wronghost'), TLS, server.server_tls_sslmode);
        } finally {
          await stopPooler(p);
        }
      }
    });

    it("disable: the client promptly gets PostgreSQL's error text", async () => {
      const p = await pooler({ server_tls_sslmode: 'disable' });
      try {
        assertOutcome(
          await sslViaPooler(p, 'wronghost'),
          { kind: 'error', why: "PostgreSQL's hba reject", error: /pg_hba\.conf rejects connection for host "(127\.0\.0\.1|::1)", user "plainuser", database "p0", no encryption/ },
          'disable against hostnossl reject',
        );
      } finally {
        await stopPooler(p);
      }
    });
  });

  describe('a client certificate for PostgreSQL (hostssl … cert)', () => {
    let plainCert: LeafCert;
    before(async () => {
      plainCert = await pki.clientCert(USERS.trust.name);
      await serveOnC(pki.server, 'good');
      await C().setHba('hostssl all all all cert\n');
      await C().reload();
    });
    after(async () => {
      await C().setHba(DEFAULT_HBA);
      await C().reload();
    });

    it('server_tls_cert_file/key_file (CN = user) log in; pg_stat_ssl shows the certificate; the unix-socket sidecar set-up works', async () => {
      const p = await pooler({
        server_tls_sslmode: 'verify-full',
        ...caFile('good'),
        server_tls_cert_file: plainCert.chain,
        server_tls_key_file: plainCert.key,
      });
      try {
        const client = await connectClient({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'wronghost', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
        try {
          const r = await client.query<{ ssl: boolean; dn: string | null }>('SELECT ssl, client_dn AS dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
          assert.equal(r.rows[0]?.ssl, true);
          assert.match(r.rows[0]?.dn ?? '', /CN=plainuser/);
        } finally {
          await client.end().catch(() => undefined);
        }
        // The sidecar: the application talks to the pooler over its unix socket, in clear; the
        // pooler talks to PostgreSQL with verify-full and a client certificate whose CN is the user.
        const viaSocket = await psql(
          `host=${p.dir} port=${p.port} user=${USERS.trust.name} dbname=wronghost`,
          'SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
          { timeoutMs: 15_000 },
        );
        assert.equal(viaSocket.code, 0, viaSocket.stderr);
        assert.match(viaSocket.stdout.trim(), /^t\|.*CN=plainuser/);
      } finally {
        await stopPooler(p);
      }
    });

    it("without a client certificate the client promptly gets PostgreSQL's refusal", async () => {
      const p = await pooler({ server_tls_sslmode: 'verify-full', ...caFile('good') });
      try {
        assertOutcome(
          await sslViaPooler(p, 'wronghost'),
          { kind: 'error', why: 'PostgreSQL requires a client certificate', error: /certificate/i },
          'no client certificate',
        );
      } finally {
        await stopPooler(p);
      }
    });
  });

  // ----------------------------------------------------------------------------------------------

  it('pooled server connections stay TLS across many transactions', async () => {
    const p = await pooler(
      { server_tls_sslmode: 'verify-full', ...caFile('good') },
      { pool_mode: 'transaction', default_pool_size: '2' },
    );
    try {
      const pids = new Set<number>();
      let total = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          const client = await connectClient({ host: '127.0.0.1', port: p.port, user: USERS.trust.name, database: 'ssl_localhost', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
          try {
            for (let i = 0; i < 25; i++) {
              const r = await client.query<{ ssl: boolean; pid: number }>('SELECT ssl, pid FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
              assert.equal(r.rows[0]?.ssl, true, `transaction ${i} ran on a plain server connection`);
              pids.add(r.rows[0]?.pid ?? -1);
              total++;
            }
          } finally {
            await client.end().catch(() => undefined);
          }
        }),
      );
      assert.equal(total, 100);
      assert.ok(pids.size >= 1 && pids.size <= 2, `transactions shared at most 2 server connections (saw ${pids.size})`);
    } finally {
      await stopPooler(p);
    }
  });
});
