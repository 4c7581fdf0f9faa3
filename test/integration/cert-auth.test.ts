// Certificate authentication through the real pooler (auth_type = cert, and the `cert` hba method
// with map= and auth_ident_file), judged by PostgreSQL's rules rather than PgBouncer's looser ones:
// the handshake must have produced a VERIFIED client certificate, and its subject CN must equal
// the requested user exactly (case-sensitive), or be mapped to it. A mismatch is FATAL 28000 naming
// the CN and the user. auth_type = cert without client_tls_sslmode = verify-full and a CA file is a
// configuration error, at startup and in --check.

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { queryOnce, type PgError } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import type { LeafCert, Pki } from '../support/pki.js';
import { freePort, runMain, startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { conninfo, psql, runCommand } from '../support/run-cmd.js';
import { dumpLogsOnFailure, logSince, messageOf, required } from '../support/suite.js';

const CONNECT_TIMEOUT_MS = 10_000;
const PSQL_TIMEOUT_MS = 15_000;

type CertFiles = { chain: string; key: string };

describe('certificate authentication', () => {
  let cluster: Cluster | undefined;
  let pki: Pki;
  let work: string;
  let ca: string;
  const poolers: Pooler[] = [];

  const c = required(() => cluster, 'cluster');

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'cert-auth' });
    assert.ok(cluster.pki);
    pki = cluster.pki;
    ca = await fs.readFile(pki.caBundle, 'utf8');
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-cert-auth-'));
  });

  dumpLogsOnFailure({ poolers: () => poolers });

  after(async () => {
    await Promise.all(poolers.map((p) => p.stop()));
    await cluster?.destroy();
    if (work !== undefined) await fs.rm(work, { recursive: true, force: true });
  });

  function tlsFiles(): Record<string, string> {
    return {
      client_tls_key_file: pki.server.key,
      client_tls_cert_file: pki.server.chain,
      client_tls_ca_file: pki.caBundle,
      client_tls_crl_file: pki.crl,
    };
  }

  async function pooler(pgbouncer: Record<string, string>): Promise<Pooler> {
    const ini: IniSections = {
      // JSON lines: the tests read the auth method of a login from its fields.
      pgbouncer: { log_connections: '1', log_format: 'json', ...pgbouncer },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    };
    // The server login of md5user needs its password; cert auth itself never asks the client.
    const p = await startPooler(ini, { userlist: { [USERS.trust.name]: '', [USERS.md5.name]: USERS.md5.password } });
    poolers.push(p);
    return p;
  }

  /** psql as `user` with a client certificate (or none); never a password. */
  function psqlAs(p: Pooler, user: string, cert: CertFiles | null, sql = 'SELECT current_user') {
    return psql(
      conninfo({
        host: 'localhost',
        hostaddr: '127.0.0.1',
        port: String(p.port),
        user,
        dbname: 'p0',
        sslmode: 'verify-full',
        sslrootcert: pki.caBundle,
        sslcert: cert?.chain ?? path.join(work, 'none.crt'),
        sslkey: cert?.key ?? path.join(work, 'none.key'),
      }),
      sql,
      { timeoutMs: PSQL_TIMEOUT_MS },
    );
  }

  /** node-postgres as `user` with a client certificate (or none); resolves current_user. */
  async function pgAs(p: Pooler, user: string, cert: CertFiles | null): Promise<string> {
    const certs = cert === null ? {} : { cert: await fs.readFile(cert.chain, 'utf8'), key: await fs.readFile(cert.key, 'utf8') };
    const rows = await queryOnce<{ u: string }>({
      host: '127.0.0.1',
      port: p.port,
      user,
      database: 'p0',
      ssl: { ca, servername: 'localhost', ...certs },
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: CONNECT_TIMEOUT_MS,
    }, 'SELECT current_user AS u');
    return rows[0]?.u ?? '';
  }

  const pair = (leaf: { cert: string; key: string; chain?: string }): CertFiles => ({ chain: leaf.chain ?? leaf.cert, key: leaf.key });

  /** A certificate from the intermediate whose subject has two CNs (Node reports an array). */
  async function twoCnCert(): Promise<CertFiles> {
    const key = path.join(pki.dir, 'two-cn.key');
    const csr = path.join(pki.dir, 'two-cn.csr');
    const cert = path.join(pki.dir, 'two-cn.crt');
    const cnf = path.join(pki.dir, 'openssl.cnf');
    const run = async (args: string[]) => {
      const r = await runCommand('openssl', args, { cwd: pki.dir, timeoutMs: 30_000 });
      assert.equal(r.code, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
    };
    await run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
    await fs.chmod(key, 0o600);
    await run(['req', '-new', '-config', cnf, '-key', key, '-subj', `/CN=${USERS.trust.name}/CN=someone-else`, '-multivalue-rdn', '-out', csr]);
    await run(['ca', '-batch', '-notext', '-config', cnf, '-name', 'intermediate_ca', '-extensions', 'ext_client', '-days', '30', '-in', csr, '-out', cert]);
    return { chain: cert, key };
  }

  // ----------------------------------------------------------------------------------------------

  describe('auth_type = cert, client_tls_sslmode = verify-full', () => {
    let p: Pooler | undefined;
    let plainCert: LeafCert;
    let md5Cert: LeafCert;
    let upperCert: LeafCert;

    before(async () => {
      [plainCert, md5Cert, upperCert] = await Promise.all([
        pki.clientCert(USERS.trust.name),
        pki.clientCert(USERS.md5.name),
        pki.clientCert('PlainUser'),
      ]);
      p = await pooler({ auth_type: 'cert', client_tls_sslmode: 'verify-full', ...tlsFiles() });
    });

    it('a certificate with CN = user logs in with no password (psql)', async () => {
      assert.ok(p);
      const from = p.logs().length;
      const r = await psqlAs(p, USERS.trust.name, pair(plainCert), '\\conninfo');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /as user "plainuser"/);
      assert.match(r.stdout, /SSL connection/);
      const line = await logSince(p, from, /login attempt: db=p0 user=plainuser/);
      assert.match(line, /"method":"cert"/);
    });

    it('a certificate with CN = user logs in with no password (node-postgres), also for a password role', async () => {
      assert.ok(p);
      assert.equal(await pgAs(p, USERS.trust.name, pair(plainCert)), USERS.trust.name);
      assert.equal(await pgAs(p, USERS.md5.name, pair(md5Cert)), USERS.md5.name);
    });

    it('wrong CN: FATAL 28000 whose message names the CN and the user', async () => {
      assert.ok(p);
      await assert.rejects(pgAs(p, USERS.trust.name, pair(pki.wrongCnClient)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /wrong-cn/);
        assert.match(err.message, /plainuser/);
        return true;
      });
      // Another user's valid certificate is a wrong CN too.
      await assert.rejects(pgAs(p, USERS.trust.name, pair(md5Cert)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /md5user/);
        assert.match(err.message, /plainuser/);
        return true;
      });
    });

    it('the CN is compared case-sensitively: CN "PlainUser" is not user "plainuser"', async () => {
      assert.ok(p);
      await assert.rejects(pgAs(p, USERS.trust.name, pair(upperCert)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /PlainUser/);
        assert.match(err.message, /"plainuser"/);
        return true;
      });
      const r = await psqlAs(p, USERS.trust.name, pair(upperCert));
      assert.notEqual(r.code, 0, r.stdout);
    });

    it('a certificate with two CNs is refused', async () => {
      assert.ok(p);
      const two = await twoCnCert();
      await assert.rejects(pgAs(p, USERS.trust.name, two), (err: PgError) => {
        assert.equal(err.code, '28000');
        return true;
      });
    });

    for (const which of ['untrusted', 'selfSigned', 'expired', 'revoked'] as const) {
      it(`a ${which} certificate with CN = user is refused`, async () => {
        assert.ok(p);
        const from = p.logs().length;
        const r = await psqlAs(p, USERS.trust.name, pair(pki[which]));
        assert.notEqual(r.code, 0, `a ${which} certificate must not log in:\n${r.stdout}`);
        assert.match(r.stderr, /FATAL:.*certificate/);
        await assert.rejects(pgAs(p, USERS.trust.name, pair(pki[which])), (err: PgError) => {
          assert.equal(err.code, '28000');
          return true;
        });
        assert.ok(!p.logs().slice(from).some((l) => /login attempt:/.test(messageOf(l))), 'no login');
      });
    }

    it('no certificate is refused', async () => {
      assert.ok(p);
      const r = await psqlAs(p, USERS.trust.name, null);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /FATAL:.*certificate/);
      await assert.rejects(pgAs(p, USERS.trust.name, null), (err: PgError) => {
        assert.equal(err.code, '28000');
        return true;
      });
    });

    it('plain TCP is refused', async () => {
      assert.ok(p);
      const r = await psql(conninfo({ host: '127.0.0.1', port: String(p.port), user: USERS.trust.name, dbname: 'p0', sslmode: 'disable' }), 'SELECT 1', {
        timeoutMs: PSQL_TIMEOUT_MS,
      });
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /FATAL:\s+SSL required/);
    });
  });

  // ----------------------------------------------------------------------------------------------

  describe('auth_type = cert needs verify-full and a CA file', () => {
    async function writeIni(name: string, settings: Record<string, string>): Promise<string> {
      const iniPath = path.join(work, `${name}.ini`);
      const lines = Object.entries({
        listen_addr: '127.0.0.1',
        listen_port: String(await freePort()),
        unix_socket_dir: '',
        auth_type: 'cert',
        client_tls_key_file: pki.server.key,
        client_tls_cert_file: pki.server.chain,
        ...settings,
      }).map(([k, v]) => `${k} = ${v}`);
      await fs.writeFile(iniPath, `[pgbouncer]\n${lines.join('\n')}\n[databases]\np0 = host=127.0.0.1 port=${c().port} dbname=p0\n`);
      return iniPath;
    }

    const cases: [string, Record<string, string>, RegExp][] = [
      ['client_tls_sslmode = require', { client_tls_sslmode: 'require', client_tls_ca_file: '' }, /verify-full/],
      ['client_tls_sslmode = verify-ca', { client_tls_sslmode: 'verify-ca' }, /verify-full/],
      ['no client_tls_ca_file', { client_tls_sslmode: 'verify-full' }, /client_tls_ca_file/],
    ];
    for (const [label, settings, why] of cases) {
      it(`${label}: startup fails (exit 1) and --check exits 1, saying why`, async () => {
        const caSetting: Record<string, string> = label === 'no client_tls_ca_file' ? {} : { client_tls_ca_file: pki.caBundle };
        const iniPath = await writeIni(label.replace(/\W+/g, '-'), { ...caSetting, ...settings });
        const start = await runMain(['-c', iniPath], { timeoutMs: 10_000 });
        assert.equal(start.timedOut, false, 'the pooler must refuse to start');
        assert.equal(start.code, 1, start.stdout + start.stderr);
        assert.match(start.stdout + start.stderr, /auth_type/);
        assert.match(start.stdout + start.stderr, why);
        const check = await runMain(['--check', '-c', iniPath], { timeoutMs: 10_000 });
        assert.equal(check.code, 1, check.stdout + check.stderr);
        assert.match(check.stdout + check.stderr, why);
      });
    }

    it('verify-full with a CA file passes --check', async () => {
      const iniPath = await writeIni('ok', { client_tls_sslmode: 'verify-full', client_tls_ca_file: pki.caBundle });
      const check = await runMain(['--check', '-c', iniPath], { timeoutMs: 10_000 });
      assert.equal(check.code, 0, check.stdout + check.stderr);
    });
  });

  // ----------------------------------------------------------------------------------------------

  describe('hba `cert map=m` with auth_ident_file', () => {
    let p: Pooler | undefined;
    let alice: LeafCert;
    let ops: LeafCert;
    let plainCert: LeafCert;

    before(async () => {
      [alice, ops, plainCert] = await Promise.all([pki.clientCert('alice'), pki.clientCert('ops'), pki.clientCert(USERS.trust.name)]);
      const hba = path.join(work, 'hba.conf');
      const ident = path.join(work, 'ident.conf');
      await fs.writeFile(hba, 'hostssl all all 127.0.0.1/32 cert map=m\n');
      // CN alice may be plainuser only; CN plainuser may be md5user only (not itself); CN ops anyone.
      await fs.writeFile(ident, `m alice ${USERS.trust.name}\nm ${USERS.trust.name} ${USERS.md5.name}\nm ops all\n`);
      // require: the pooler still asks for (and verifies) a certificate, because a line can use it.
      p = await pooler({
        auth_type: 'hba',
        auth_hba_file: hba,
        auth_ident_file: ident,
        client_tls_sslmode: 'require',
        ...tlsFiles(),
      });
    });

    it('a mapped CN logs in as the db user it maps to, with no password', async () => {
      assert.ok(p);
      const from = p.logs().length;
      const r = await psqlAs(p, USERS.trust.name, pair(alice));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), USERS.trust.name);
      assert.match(await logSince(p, from, /login attempt: db=p0 user=plainuser/), /"method":"cert"/);
    });

    it('a CN mapped to `all` logs in as any user', async () => {
      assert.ok(p);
      assert.equal(await pgAs(p, USERS.trust.name, pair(ops)), USERS.trust.name);
      assert.equal(await pgAs(p, USERS.md5.name, pair(ops)), USERS.md5.name);
    });

    it('a CN mapped to another user is refused with 28000 naming the CN and the user', async () => {
      assert.ok(p);
      await assert.rejects(pgAs(p, USERS.md5.name, pair(alice)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /alice/);
        assert.match(err.message, /md5user/);
        return true;
      });
    });

    it('with map=, CN = user is not enough: CN plainuser logs in as md5user only', async () => {
      assert.ok(p);
      assert.equal(await pgAs(p, USERS.md5.name, pair(plainCert)), USERS.md5.name);
      await assert.rejects(pgAs(p, USERS.trust.name, pair(plainCert)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /plainuser/);
        return true;
      });
    });

    for (const which of ['untrusted', 'selfSigned', 'expired', 'revoked'] as const) {
      it(`a ${which} certificate whose CN is mapped is refused`, async () => {
        assert.ok(p);
        // CN plainuser maps to md5user: only the certificate's defect can refuse it.
        await assert.rejects(pgAs(p, USERS.md5.name, pair(pki[which])), (err: PgError) => {
          assert.equal(err.code, '28000');
          assert.match(err.message, /certificate/);
          return true;
        });
      });
    }

    it('an unknown CN is refused', async () => {
      assert.ok(p);
      await assert.rejects(pgAs(p, USERS.trust.name, pair(pki.wrongCnClient)), (err: PgError) => {
        assert.equal(err.code, '28000');
        assert.match(err.message, /wrong-cn/);
        return true;
      });
    });

    it('plain TCP is refused (client_tls_sslmode = require)', async () => {
      assert.ok(p);
      const r = await psql(conninfo({ host: '127.0.0.1', port: String(p.port), user: USERS.trust.name, dbname: 'p0', sslmode: 'disable' }), 'SELECT 1', {
        timeoutMs: PSQL_TIMEOUT_MS,
      });
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /FATAL:\s+SSL required/);
    });
  });
});
