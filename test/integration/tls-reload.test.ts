// RELOAD / SIGHUP and TLS, through the real pooler process and a real PostgreSQL with ssl on:
//
// (a) The pooler's certificate and key files are replaced in place (same paths) by a new
//     certificate from the test PKI (another CN and serial) and the pooler gets SIGHUP: a
//     connection opened before the reload keeps working on the context it was made with, and every
//     new connection (SSLRequest and direct TLS, raw Node TLS, node-postgres, psql) is served the
//     new certificate, checked by serial number and SHA-256 fingerprint.
// (b) A broken TLS file (certificate or key replaced by garbage, key made 0644, CA or CRL file
//     replaced by garbage) and a SIGHUP: the pooler logs "reload failed, keeping old
//     configuration: …" naming the file that failed; new connections are still served the OLD
//     certificate and still trust the OLD CA; the console's RELOAD reports the same as an ERROR.
// (c) A reload that leaves the TLS settings unchanged (a bare SIGHUP, and one that changes an
//     unrelated setting) does not close pooled server connections: with pool_size=1 the client
//     sees the same backend pid before and after, in session and in transaction mode, with
//     server_tls_sslmode=require against PostgreSQL with ssl on. What a reload that DOES change
//     the server-side TLS settings does (nothing to open server connections; RECONNECT applies it)
//     is pinned down as well, because docs/tls.md documents it.

import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import tls from 'node:tls';
import pg from 'pg';
import { sslRequest } from '../support/bytes.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { makePki, type LeafCert, type Pki } from '../support/pki.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { psql, runCommand } from '../support/run-cmd.js';
import { messageOf } from '../support/suite.js';

const CONNECT_TIMEOUT_MS = 10_000;
const PSQL_TIMEOUT_MS = 15_000;
const RELOAD_TIMEOUT_MS = 5_000;
/** CN of the certificate the pooler is switched to in (a). */
const NEW_CN = 'pgpool-reloaded.test';
const ADMIN = 'admin';

// ------------------------------------------------------------------------------------------------
// Helpers

/** libpq keyword/value string. */
function conninfo(kv: Record<string, string>): string {
  return Object.entries(kv)
    .map(([k, v]) => `${k}='${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/**
 * SIGHUP, then the message of the pooler's verdict: "configuration reloaded" or
 * "reload failed, keeping old configuration: …".
 */
async function sighup(p: Pooler): Promise<string> {
  const from = p.logs().length;
  p.reload();
  return reloadVerdict(p, from);
}

async function reloadVerdict(p: Pooler, from: number): Promise<string> {
  const deadline = Date.now() + RELOAD_TIMEOUT_MS;
  for (;;) {
    for (const line of p.logs().slice(from)) {
      const text = messageOf(line);
      if (/^(configuration reloaded|reload failed)/.test(text)) return text;
    }
    if (Date.now() > deadline) throw new Error(`no reload verdict in the pooler's log:\n${p.logs().slice(from).join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function reloadOk(p: Pooler): Promise<void> {
  const verdict = await sighup(p);
  assert.equal(verdict, 'configuration reloaded', 'the reload must succeed');
}

/** What identifies a certificate. */
interface CertId {
  readonly serial: string;
  readonly fingerprint256: string;
  readonly cn: string;
}

function idOf(cert: tls.PeerCertificate): CertId {
  const cn = cert.subject?.CN;
  return { serial: cert.serialNumber.toUpperCase(), fingerprint256: cert.fingerprint256, cn: Array.isArray(cn) ? cn.join('+') : (cn ?? '') };
}

async function fileCertId(file: string): Promise<CertId> {
  // The first certificate of a chain file is the leaf.
  const pem = (await fs.readFile(file, 'utf8')).match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/)?.[0];
  assert.ok(pem !== undefined, `no certificate in ${file}`);
  const x = new X509Certificate(pem);
  const cn = /^CN=(.*)$/m.exec(x.subject)?.[1] ?? '';
  return { serial: x.serialNumber.toUpperCase(), fingerprint256: x.fingerprint256, cn };
}

/** Resolves once the TLS handshake is done (the socket), or rejects with its error. */
function handshake(opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect(opts);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('TLS handshake timed out'));
    }, CONNECT_TIMEOUT_MS);
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

/**
 * The certificate a NEW connection is served, from a plain Node TLS client that verifies it
 * (CA bundle, host name localhost): after an SSLRequest, or by direct TLS (ALPN postgresql).
 */
async function servedCert(port: number, ca: string, how: 'sslrequest' | 'direct'): Promise<CertId> {
  let sock: tls.TLSSocket;
  if (how === 'direct') {
    sock = await handshake({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['postgresql'] });
  } else {
    const raw = net.connect({ host: '127.0.0.1', port });
    const answer = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer to the SSLRequest')), CONNECT_TIMEOUT_MS);
      raw.once('error', reject);
      raw.once('data', (b: Buffer) => {
        clearTimeout(timer);
        raw.removeAllListeners('error');
        resolve(b[0]!);
      });
      raw.write(sslRequest());
    });
    assert.equal(String.fromCharCode(answer), 'S', 'the pooler accepts the SSLRequest');
    sock = await handshake({ socket: raw, ca, servername: 'localhost' });
  }
  try {
    return idOf(sock.getPeerCertificate());
  } finally {
    sock.destroy();
  }
}

/** A node-postgres client over TLS, verifying the pooler's certificate (CA bundle, localhost). */
async function tlsClient(p: Pooler, ca: string, db: string, extra: Partial<pg.ClientConfig> = {}, ssl: object = {}): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: p.port,
    user: USERS.trust.name,
    database: db,
    ssl: { ca, servername: 'localhost', ...ssl },
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: CONNECT_TIMEOUT_MS,
    ...extra,
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

function streamOf(client: pg.Client): tls.TLSSocket {
  return (client as unknown as { connection: { stream: tls.TLSSocket } }).connection.stream;
}

/** The backend pid and whether the pooler's server connection uses TLS. */
async function backend(client: pg.Client): Promise<{ pid: number; ssl: boolean }> {
  const r = await client.query<{ pid: number; ssl: boolean }>('SELECT pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
  const row = r.rows[0];
  assert.ok(row, 'pg_stat_ssl has a row for the backend');
  return row;
}

async function writeKey(file: string, pem: string): Promise<void> {
  await fs.writeFile(file, pem, { mode: 0o600 });
  await fs.chmod(file, 0o600);
}

/** A server certificate (SANs localhost, 127.0.0.1, ::1) with CN `cn`, issued by the test PKI's
 * intermediate with a random serial, key mode 0600; the chain file holds leaf + intermediate. */
async function issueServerCert(pki: Pki, dir: string, cn: string): Promise<LeafCert> {
  const key = path.join(dir, 'new-server.key');
  const csr = path.join(dir, 'new-server.csr');
  const cert = path.join(dir, 'new-server.crt');
  const chain = path.join(dir, 'new-server.chain.crt');
  const ext = path.join(dir, 'new-server.ext');
  const openssl = async (args: string[]) => {
    const r = await runCommand('openssl', args, { cwd: dir, timeoutMs: 30_000 });
    assert.equal(r.code, 0, `openssl ${args.join(' ')}:\n${r.stderr}`);
  };
  await fs.writeFile(
    ext,
    `[v3]
basicConstraints = critical, CA:false
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
`,
  );
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  await fs.chmod(key, 0o600);
  await openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', csr]);
  await openssl([
    'x509', '-req', '-in', csr, '-CA', pki.intermediateCa, '-CAkey', path.join(pki.dir, 'intermediate_ca.key'),
    '-set_serial', `0x1${randomBytes(8).toString('hex')}`, '-days', '30', '-sha256', '-extfile', ext, '-extensions', 'v3', '-out', cert,
  ]);
  await fs.writeFile(chain, (await fs.readFile(cert, 'utf8')) + (await fs.readFile(pki.intermediateCa, 'utf8')));
  return { cert, key, chain };
}

// ------------------------------------------------------------------------------------------------

describe('TLS and RELOAD', () => {
  let cluster: Cluster | undefined;
  let pki: Pki;
  let work: string;
  let caPem: string;
  const poolers: Pooler[] = [];
  let failed = false;

  const c = (): Cluster => {
    assert.ok(cluster, 'cluster did not start');
    return cluster;
  };

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'tls-reload' });
    assert.ok(cluster.pki);
    pki = cluster.pki;
    caPem = await fs.readFile(pki.caBundle, 'utf8');
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-tls-reload-'));
  });

  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });

  after(async () => {
    if (failed) {
      for (const p of poolers) console.error(`--- pooler ${p.port} (${p.iniPath}) ---\n${p.logs().join('\n')}`);
    }
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
    if (work !== undefined && process.env.PGPOOL_TEST_KEEP !== '1') await fs.rm(work, { recursive: true, force: true });
  });

  // ----------------------------------------------------------------------------------------------
  // (a) and (b): the pooler's own certificate, key, CA and CRL files

  describe('client side (client_tls_sslmode = require): the files behind the SecureContext', () => {
    let p: Pooler | undefined;
    /** The pooler's TLS files: the paths in its ini never change, their contents do. */
    const files = { cert: '', key: '', ca: '', crl: '', hba: '' };
    /** Good contents, to restore after a broken-file case. */
    const good = { cert: '', key: '', ca: '', crl: '' };
    /** The certificate served first (the harness's server certificate) and after (a). */
    let oldId: CertId;
    let newCert: LeafCert;
    let newId: CertId;
    /** Opened before any reload; must keep working through all of them. */
    let early: pg.Client | undefined;
    /** CN md5user: logs in by the hba `cert` line, so it shows which CA the pooler trusts. */
    let md5Cert: LeafCert;

    const P = (): Pooler => {
      assert.ok(p, 'pooler did not start');
      return p;
    };

    before(async () => {
      const dir = await fs.mkdtemp(path.join(work, 'client-side-'));
      files.cert = path.join(dir, 'pooler.crt');
      files.key = path.join(dir, 'pooler.key');
      files.ca = path.join(dir, 'ca.crt');
      files.crl = path.join(dir, 'crl.pem');
      files.hba = path.join(dir, 'hba.conf');
      await fs.copyFile(pki.server.chain, files.cert);
      await writeKey(files.key, await fs.readFile(pki.server.key, 'utf8'));
      await fs.copyFile(pki.caBundle, files.ca);
      await fs.copyFile(pki.crl, files.crl);
      // md5user only by a verified client certificate (the CA file matters); everyone else trust.
      await fs.writeFile(
        files.hba,
        `local all all trust
hostssl all ${USERS.md5.name} 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
`,
      );
      [newCert, md5Cert] = await Promise.all([issueServerCert(pki, dir, NEW_CN), pki.clientCert(USERS.md5.name)]);
      oldId = await fileCertId(pki.server.cert);
      newId = await fileCertId(newCert.cert);
      assert.notEqual(oldId.serial, newId.serial);
      assert.notEqual(oldId.fingerprint256, newId.fingerprint256);

      const ini: IniSections = {
        pgbouncer: {
          auth_type: 'hba',
          auth_hba_file: files.hba,
          admin_users: ADMIN,
          pool_mode: 'session',
          client_tls_sslmode: 'require',
          client_tls_cert_file: files.cert,
          client_tls_key_file: files.key,
          client_tls_ca_file: files.ca,
          client_tls_crl_file: files.crl,
          server_tls_sslmode: 'require',
          log_connections: '1',
        },
        databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
      };
      p = await startPooler(ini, { userlist: { [USERS.trust.name]: '', [USERS.md5.name]: USERS.md5.password, [ADMIN]: '' } });
      poolers.push(p);
      for (const k of ['cert', 'key', 'ca', 'crl'] as const) good[k] = await fs.readFile(files[k], 'utf8');

      early = await tlsClient(p, caPem, 'p0');
      assert.equal((await early.query('SELECT 1 AS one')).rows[0].one, 1);
    });

    after(async () => {
      await early?.end().catch(() => undefined);
    });

    /** The early connection still runs queries, on the TLS session it was opened with. */
    async function earlyStillWorks(): Promise<void> {
      const e = early;
      assert.ok(e);
      for (let i = 0; i < 3; i++) {
        const r: pg.QueryResult<{ n: number }> = await e.query<{ n: number }>('SELECT $1::int AS n', [i]);
        assert.equal(r.rows[0]?.n, i, 'the connection opened before the reload runs queries');
      }
      assert.deepEqual(idOf(streamOf(e).getPeerCertificate()), oldId, 'it still has the certificate it was opened with');
    }

    /** Every way of opening a new connection is served `want`. */
    async function newConnectionsGet(want: CertId, what: string): Promise<void> {
      const pp = P();
      assert.deepEqual(await servedCert(pp.port, caPem, 'sslrequest'), want, `SSLRequest: ${what}`);
      assert.deepEqual(await servedCert(pp.port, caPem, 'direct'), want, `direct TLS: ${what}`);
      const client = await tlsClient(pp, caPem, 'p0');
      try {
        assert.deepEqual(idOf(streamOf(client).getPeerCertificate()), want, `node-postgres: ${what}`);
        assert.equal((await client.query('SELECT 2 AS two')).rows[0].two, 2);
      } finally {
        await client.end().catch(() => undefined);
      }
    }

    /** md5user logs in by its client certificate: the CA file in use is a good one. */
    async function certLoginWorks(): Promise<void> {
      const client = await tlsClient(
        P(),
        caPem,
        'p0',
        { user: USERS.md5.name },
        { cert: await fs.readFile(md5Cert.chain, 'utf8'), key: await fs.readFile(md5Cert.key, 'utf8') },
      );
      try {
        assert.equal((await client.query<{ u: string }>('SELECT current_user AS u')).rows[0]?.u, USERS.md5.name);
      } finally {
        await client.end().catch(() => undefined);
      }
    }

    /** psql -d pgbouncer -c RELOAD as an admin_users member, over TLS (verify-full). */
    function consoleReload() {
      return psql(
        conninfo({
          host: 'localhost',
          hostaddr: '127.0.0.1',
          port: String(P().port),
          user: ADMIN,
          dbname: 'pgbouncer',
          sslmode: 'verify-full',
          sslrootcert: pki.caBundle,
          // Never ~/.postgresql/postgresql.crt.
          sslcert: path.join(work, 'no-such.crt'),
          sslkey: path.join(work, 'no-such.key'),
        }),
        'RELOAD',
        { timeoutMs: PSQL_TIMEOUT_MS },
      );
    }

    it('before any reload: the harness certificate is served, and cert login works', async () => {
      await newConnectionsGet(oldId, 'the certificate the pooler started with');
      await certLoginWorks();
      const r = await consoleReload();
      assert.equal(r.code, 0, `console RELOAD with good files: ${r.stderr}`);
      assert.match(r.stdout, /^RELOAD$/m);
    });

    it('(a) new certificate + key under the same paths, SIGHUP: the open connection keeps working, new connections get the new certificate', async () => {
      // Key first, then certificate: the reload comes after both.
      await writeKey(files.key, await fs.readFile(newCert.key, 'utf8'));
      await fs.writeFile(files.cert, await fs.readFile(newCert.chain, 'utf8'));
      good.cert = await fs.readFile(files.cert, 'utf8');
      good.key = await fs.readFile(files.key, 'utf8');
      await reloadOk(P());

      await earlyStillWorks();
      await newConnectionsGet(newId, `the new certificate (CN ${NEW_CN})`);
      assert.equal(newId.cn, NEW_CN);
      // psql (libpq verify-full) agrees, and the console works over the new certificate.
      const r = await consoleReload();
      assert.equal(r.code, 0, r.stderr);
      await certLoginWorks();
    });

    /** The broken-file cases of (b): how to break it, and what the message must contain. */
    const BROKEN: readonly {
      readonly name: string;
      readonly file: keyof typeof good;
      readonly breakIt: (file: string) => Promise<void>;
      /** Beyond the file's path. */
      readonly says?: RegExp;
    }[] = [
      { name: 'the certificate file replaced by garbage', file: 'cert', breakIt: (f) => fs.writeFile(f, 'this is not a certificate\n') },
      { name: 'the key file made mode 0644', file: 'key', breakIt: (f) => fs.chmod(f, 0o644), says: /0644/ },
      { name: 'the key file replaced by garbage', file: 'key', breakIt: (f) => writeKey(f, 'this is not a key\n') },
      { name: 'the CA file replaced by garbage', file: 'ca', breakIt: (f) => fs.writeFile(f, 'this is not a CA certificate\n') },
      { name: 'the CRL file replaced by garbage', file: 'crl', breakIt: (f) => fs.writeFile(f, 'this is not a CRL\n') },
    ];

    for (const bc of BROKEN) {
      it(`(b) ${bc.name}, SIGHUP: "reload failed" names the file, the old context stays, console RELOAD reports an ERROR`, async () => {
        const file = files[bc.file];
        let restored = '';
        try {
          await bc.breakIt(file);
          const verdict = await sighup(P());
          assert.match(verdict, /^reload failed, keeping old configuration: /, `the reload must fail; the pooler said: ${verdict}`);
          assert.ok(verdict.includes(file), `the message must name ${file}: ${verdict}`);
          if (bc.says !== undefined) assert.match(verdict, bc.says);

          // The old context: the certificate of (a), and the CA that verifies md5user's certificate.
          await newConnectionsGet(newId, `still the certificate loaded by (a) after a failed reload (${bc.name})`);
          await certLoginWorks();
          await earlyStillWorks();

          const r = await consoleReload();
          assert.notEqual(r.code, 0, `console RELOAD must fail: ${r.stdout}`);
          assert.match(r.stderr, /ERROR:\s+RELOAD failed, keeping the old configuration: /);
          assert.ok(r.stderr.includes(file), `the console's error must name ${file}: ${r.stderr}`);
          // Still the old context after the console's attempt too.
          await newConnectionsGet(newId, 'after the failed console RELOAD');
        } finally {
          // Restore for the next case (whatever happened above).
          if (bc.file === 'key') await writeKey(file, good.key);
          else await fs.writeFile(file, good[bc.file]);
          restored = await sighup(P());
        }
        assert.equal(restored, 'configuration reloaded', 'the restored file loads again');
        await newConnectionsGet(newId, 'after restoring the file');
      });
    }

    it('after all of the above, the connection opened first is still working', async () => {
      await earlyStillWorks();
    });
  });

  // ----------------------------------------------------------------------------------------------
  // (c) server connections across reloads

  describe('SET takes TLS settings one at a time, as PgBouncer does', () => {
    it('a key, then its certificate, then its CA: each SET is taken, and the TLS in use changes once they fit together', async () => {
      // A key SET before its certificate was refused ("key values mismatch", or "server_tls_key_file
      // and server_tls_cert_file go together"), so PgBouncer's one-setting-at-a-time order failed.
      const other = await makePki(path.join(work, 'other-ca'));
      const otherCa = await fs.readFile(other.caBundle, 'utf8');
      const p = await startPooler(
        {
          pgbouncer: {
            auth_type: 'trust',
            admin_users: ADMIN,
            client_tls_sslmode: 'require',
            client_tls_key_file: pki.server.key,
            client_tls_cert_file: pki.server.chain,
            client_tls_ca_file: pki.caBundle,
            server_tls_sslmode: 'require',
          },
          databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
        },
        { userlist: { [USERS.trust.name]: '', [ADMIN]: '' } },
      );
      poolers.push(p);
      const con = await tlsClient(p, caPem, 'pgbouncer', { user: ADMIN });
      const notices: string[] = [];
      con.on('notice', (n) => notices.push(n.message ?? ''));
      const set = async (key: string, value: string): Promise<string[]> => {
        notices.length = 0;
        assert.equal((await con.query(`SET ${key} = '${value}'`)).command, 'SET');
        return [...notices];
      };
      const works = async (ca: string): Promise<boolean> => {
        try {
          const cl = await tlsClient(p, ca, 'p0');
          await cl.query('SELECT 1');
          await cl.end();
          return true;
        } catch {
          return false;
        }
      };
      try {
        const half = await set('client_tls_key_file', other.server.key);
        assert.equal(half.length, 1, 'a notice says the TLS in use stays');
        assert.match(half[0]!, /^TLS settings could not be applied, still using old configuration/);
        assert.equal(await works(caPem), true, 'the old certificate is still served');
        assert.deepEqual(await set('client_tls_cert_file', other.server.chain), []);
        assert.equal(await works(caPem), false, 'the old CA no longer verifies the pooler');
        assert.equal(await works(otherCa), true, 'the new certificate is served');
        assert.deepEqual(await set('client_tls_ca_file', other.caBundle), []);
        // Server side: a client certificate for PostgreSQL (signed by the CA it trusts), key first.
        const mine = await pki.clientCert(USERS.trust.name);
        assert.match((await set('server_tls_key_file', mine.key))[0] ?? '', /still using old configuration.*go together/);
        assert.deepEqual(await set('server_tls_cert_file', mine.chain), []);
        assert.equal(await works(otherCa), true, 'the server side works with the pair in place');
        const config = (await con.query<{ key: string; value: string }>('SHOW CONFIG')).rows;
        assert.equal(config.find((r) => r.key === 'server_tls_key_file')?.value, mine.key);
      } finally {
        await con.end().catch(() => undefined);
        await p.stop();
      }
    });
  });

  describe('server side (server_tls_sslmode = require, PostgreSQL with ssl on): pooled server connections across reloads', () => {
    let p: Pooler | undefined;
    const P = (): Pooler => {
      assert.ok(p, 'pooler did not start');
      return p;
    };

    function ini(extra: Record<string, string> = {}): IniSections {
      return {
        pgbouncer: {
          auth_type: 'trust',
          client_tls_sslmode: 'require',
          client_tls_cert_file: pki.server.chain,
          client_tls_key_file: pki.server.key,
          server_tls_sslmode: 'require',
          // Nothing may close an idle server during the test but a reload (server_lifetime stays
          // at its default, 3600 s: 0 would mean "use each server once", as in PgBouncer).
          server_idle_timeout: '0',
          ...extra,
        },
        databases: {
          sess: `host=127.0.0.1 port=${c().port} dbname=p0 pool_size=1 pool_mode=session`,
          tx: `host=127.0.0.1 port=${c().port} dbname=p1 pool_size=1 pool_mode=transaction`,
        },
      };
    }

    before(async () => {
      p = await startPooler(ini(), { userlist: { [USERS.trust.name]: '', [ADMIN]: '' } });
      poolers.push(p);
    });

    /** A reload with the TLS settings unchanged: a bare SIGHUP, then one that changes an unrelated
     * setting (the ini is rewritten), then the original ini again. */
    async function unchangedTlsReloads(check: (step: string) => Promise<void>): Promise<void> {
      await reloadOk(P());
      await check('after a bare SIGHUP');
      await P().writeIni(ini({ stats_period: '17', log_pooler_errors: '0' }));
      await reloadOk(P());
      await check('after a reload that changed stats_period and log_pooler_errors');
      await P().writeIni(ini());
      await reloadOk(P());
      await check('after reloading the original ini');
    }

    it('(c) session mode, pool_size=1: the same backend before and after reloads that leave TLS unchanged', async () => {
      const first = await tlsClient(P(), caPem, 'sess');
      let pid: number;
      try {
        const b = await backend(first);
        assert.equal(b.ssl, true, 'the server connection uses TLS');
        pid = b.pid;
        await unchangedTlsReloads(async (step) => {
          assert.deepEqual(await backend(first), { pid, ssl: true }, `the session keeps its server ${step}`);
        });
      } finally {
        await first.end().catch(() => undefined);
      }
      // The server went back to the pool (reset, idle); a reload must not close it there either.
      await unchangedTlsReloads(async (step) => {
        const next = await tlsClient(P(), caPem, 'sess');
        try {
          assert.deepEqual(await backend(next), { pid, ssl: true }, `a new session gets the same pooled server ${step}`);
        } finally {
          await next.end().catch(() => undefined);
        }
      });
      assert.ok((await c().backendPids({ db: 'p0', user: USERS.trust.name })).includes(pid), 'PostgreSQL still has that backend');
    });

    it('(c) transaction mode, pool_size=1: the same backend before and after reloads that leave TLS unchanged', async () => {
      const client = await tlsClient(P(), caPem, 'tx');
      try {
        const { pid, ssl } = await backend(client);
        assert.equal(ssl, true, 'the server connection uses TLS');
        await unchangedTlsReloads(async (step) => {
          assert.deepEqual(await backend(client), { pid, ssl: true }, `the next transaction runs on the same server ${step}`);
          const other = await tlsClient(P(), caPem, 'tx');
          try {
            assert.deepEqual(await backend(other), { pid, ssl: true }, `another client's transaction too, ${step}`);
          } finally {
            await other.end().catch(() => undefined);
          }
        });
        assert.ok((await c().backendPids({ db: 'p1', user: USERS.trust.name })).includes(pid), 'PostgreSQL still has that backend');
      } finally {
        await client.end().catch(() => undefined);
      }
    });

    it('a reload that changes the server TLS settings replaces pooled server connections, as PgBouncer does', async () => {
      // They were kept (only a changed [databases] entry recycled servers), so a new
      // server_tls_sslmode, CA or protocol list reached no connection until RECONNECT.
      const client = await tlsClient(P(), caPem, 'tx');
      try {
        const first = await backend(client);
        assert.equal(first.ssl, true);
        await P().writeIni(ini({ server_tls_sslmode: 'disable' }));
        await reloadOk(P());
        const plain = await backend(client);
        assert.notEqual(plain.pid, first.pid, 'server_tls_sslmode=disable: a new server connection');
        assert.equal(plain.ssl, false, 'and it follows the new mode');
        await P().writeIni(ini({ server_tls_protocols: 'tlsv1.3' }));
        await reloadOk(P());
        const tls13 = await backend(client);
        assert.notEqual(tls13.pid, plain.pid, 'back to require, TLS 1.3 only: a new server connection');
        assert.equal(tls13.ssl, true);
        await reloadOk(P());
        assert.deepEqual(await backend(client), tls13, 'an unchanged reload keeps it');
        await P().writeIni(ini());
        await reloadOk(P());
        assert.notEqual((await backend(client)).pid, tls13.pid, 'the protocol list changed back: a new server connection');
      } finally {
        await client.end().catch(() => undefined);
        await P().writeIni(ini());
        await sighup(P());
      }
    });
  });
});
