// auth_type = hba through the real pooler and real clients: first match wins, `hostnossl … reject`
// lines refuse every plain TCP connection whatever method a later line would pick (over IPv4 and
// IPv6), TLS connections get their line's method (md5, scram-sha-256, password, trust, cert),
// `local` lines apply to the unix socket, no match gets PostgreSQL's "no pg_hba.conf entry" text.
// Unlike PgBouncer, which skips a line it cannot parse (so a reject line can vanish), a bad line is
// an error with FILE:LINE at startup, in --check, and on RELOAD, where the old rules stay.

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { DATABASES, startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import type { LeafCert, Pki } from '../support/pki.js';
import { freePort, runMain, startPooler, type Pooler } from '../support/pooler.js';
import { conninfo, psql } from '../support/run-cmd.js';
import { dumpLogsOnFailure, logSince, messageOf, required } from '../support/suite.js';

const PSQL_TIMEOUT_MS = 15_000;

/** One hba line per method, each on its own pooler database (all of them PostgreSQL's p0). */
interface MethodCase {
  readonly method: string;
  readonly db: string;
  readonly user: string;
  readonly password: string;
  /** What the pooler logs as the login's method. */
  readonly logged: RegExp;
  readonly cert: boolean;
}

const METHODS: readonly MethodCase[] = [
  { method: 'md5', db: 'db_md5', user: USERS.md5.name, password: USERS.md5.password, logged: /^md5$/, cert: false },
  { method: 'scram-sha-256', db: 'db_scram', user: USERS.scram.name, password: USERS.scram.password, logged: /^scram-sha-256$/, cert: false },
  { method: 'password', db: 'db_password', user: USERS.md5.name, password: USERS.md5.password, logged: /^(password|plain)$/, cert: false },
  { method: 'trust', db: 'db_trust', user: USERS.trust.name, password: '', logged: /^trust$/, cert: false },
  { method: 'cert', db: 'db_cert', user: USERS.trust.name, password: '', logged: /^cert$/, cert: true },
];

const HBA_LINES = `# pgpool-ts hba test
local     all         ${USERS.trust.name}  trust
local     all         ${USERS.md5.name}    md5
hostnossl all         all                  0.0.0.0/0  reject
hostnossl all         all                  ::/0       reject
hostssl   db_md5      ${USERS.md5.name}    0.0.0.0/0  md5
hostssl   db_md5      ${USERS.md5.name}    ::/0       md5
hostssl   db_scram    ${USERS.scram.name}  all        scram-sha-256
hostssl   db_password ${USERS.md5.name}    all        password
hostssl   db_trust    ${USERS.trust.name}  all        trust
hostssl   db_cert     ${USERS.trust.name}  all        cert
`;

describe('auth_type = hba', () => {
  let cluster: Cluster | undefined;
  let pki: Pki;
  let work: string;
  let hbaFile: string;
  let clientCert: LeafCert;
  let p: Pooler | undefined;
  let hosts: string[] = ['127.0.0.1'];

  const c = required(() => cluster, 'cluster');
  const pooler = required(() => p, 'pooler');

  function ini(): Record<string, Record<string, string>> {
    const dbs: Record<string, string> = {};
    for (const m of METHODS) dbs[m.db] = `host=127.0.0.1 port=${c().port} dbname=${DATABASES[0]}`;
    return {
      pgbouncer: {
        // JSON lines: the tests read the auth method of a login from its fields.
        log_format: 'json',
        listen_addr: hosts.join(','),
        auth_type: 'hba',
        auth_hba_file: hbaFile,
        client_tls_sslmode: 'allow',
        client_tls_key_file: pki.server.key,
        client_tls_cert_file: pki.server.chain,
        client_tls_ca_file: pki.caBundle,
        log_connections: '1',
      },
      databases: dbs,
    };
  }

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'hba' });
    assert.ok(cluster.pki);
    pki = cluster.pki;
    if (cluster.ipv6) hosts = ['127.0.0.1', '::1'];
    clientCert = await pki.clientCert(USERS.trust.name);
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-hba-'));
    hbaFile = path.join(work, 'hba.conf');
    await fs.writeFile(hbaFile, HBA_LINES);
    p = await startPooler(ini(), {
      userlist: {
        [USERS.md5.name]: USERS.md5.password,
        [USERS.scram.name]: USERS.scram.password,
        [USERS.trust.name]: '',
      },
    });
  });

  dumpLogsOnFailure({ poolers: () => [p] });

  after(async () => {
    await p?.stop();
    await cluster?.destroy();
    if (work !== undefined) await fs.rm(work, { recursive: true, force: true });
  });

  function psqlTcp(host: string, m: Pick<MethodCase, 'db' | 'user' | 'password' | 'cert'>, sslmode: 'disable' | 'require') {
    return psql(
      conninfo({
        host,
        port: String(pooler().port),
        user: m.user,
        dbname: m.db,
        sslmode,
        password: m.password === '' ? undefined : m.password,
        sslcert: m.cert ? clientCert.chain : path.join(work, 'none.crt'),
        sslkey: m.cert ? clientCert.key : path.join(work, 'none.key'),
      }),
      'SELECT current_user',
      { timeoutMs: PSQL_TIMEOUT_MS },
    );
  }

  function psqlUnix(db: string, user: string, password?: string) {
    return psql(conninfo({ host: pooler().dir, port: String(pooler().port), user, dbname: db, password }), 'SELECT current_user', {
      timeoutMs: PSQL_TIMEOUT_MS,
    });
  }

  // ----------------------------------------------------------------------------------------------

  for (const m of METHODS) {
    it(`plain TCP to the ${m.method} line's database is refused by hostnossl … reject (IPv4 and IPv6)`, async () => {
      for (const host of hosts) {
        const r = await psqlTcp(host, m, 'disable');
        assert.notEqual(r.code, 0, `${host}: plain TCP must be refused:\n${r.stdout}`);
        assert.ok(
          r.stderr.includes(`pg_hba.conf rejects connection for host "${host}", user "${m.user}", database "${m.db}", no encryption`),
          `${host}: ${r.stderr}`,
        );
      }
    });

    it(`TLS to the ${m.method} line's database authenticates by ${m.method}${m.method === 'md5' ? ' (IPv4 and IPv6)' : ''}`, async () => {
      for (const host of m.method === 'md5' ? hosts : hosts.slice(0, 1)) {
        const from = pooler().logs().length;
        const r = await psqlTcp(host, m, 'require');
        assert.equal(r.code, 0, `${host}: ${r.stderr}`);
        assert.equal(r.stdout.trim(), m.user);
        const line = await logSince(pooler(), from, new RegExp(`login attempt: db=${m.db} user=${m.user} tls=TLSv1`));
        const method = (JSON.parse(line) as { method?: string }).method ?? '';
        assert.match(method, m.logged, `the pooler used ${method}`);
      }
    });

    if (m.password !== '') {
      it(`TLS with a wrong password on the ${m.method} line is refused`, async () => {
        const r = await psqlTcp(hosts[0]!, { ...m, password: 'wrong' }, 'require');
        assert.notEqual(r.code, 0, r.stdout);
        // PgBouncer's words for a failed SCRAM exchange; PostgreSQL's for the others.
        const refused = m.method === 'scram-sha-256' ? 'SASL authentication failed' : `password authentication failed for user "${m.user}"`;
        assert.match(r.stderr, new RegExp(refused));
      });
    }
  }

  it('TLS to the cert line without a client certificate is refused', async () => {
    const m = METHODS.find((x) => x.method === 'cert')!;
    const r = await psqlTcp(hosts[0]!, { ...m, cert: false }, 'require');
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /certificate/);
  });

  it('node-postgres over plain TCP gets SQLSTATE 28000 from the reject line', async () => {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: pooler().port,
      user: USERS.trust.name,
      database: 'db_trust',
      ssl: false,
      connectionTimeoutMillis: 10_000,
    });
    client.on('error', () => undefined);
    await assert.rejects(client.connect(), (err: Error & { code?: string }) => {
      assert.equal(err.code, '28000');
      assert.match(err.message, /pg_hba\.conf rejects connection for host "127\.0\.0\.1"/);
      return true;
    });
    await client.end().catch(() => undefined);
  });

  it('local lines apply to the unix socket (trust, md5), and nothing else does', async () => {
    const trust = await psqlUnix('db_md5', USERS.trust.name);
    assert.equal(trust.code, 0, trust.stderr);
    assert.equal(trust.stdout.trim(), USERS.trust.name);

    const md5 = await psqlUnix('db_trust', USERS.md5.name, USERS.md5.password);
    assert.equal(md5.code, 0, md5.stderr);
    const wrong = await psqlUnix('db_trust', USERS.md5.name, 'wrong');
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /password authentication failed for user "md5user"/);

    // scramuser has a hostssl line but no local line.
    const none = await psqlUnix('db_scram', USERS.scram.name, USERS.scram.password);
    assert.notEqual(none.code, 0, none.stdout);
    assert.ok(
      none.stderr.includes('no pg_hba.conf entry for host "[local]", user "scramuser", database "db_scram", no encryption'),
      none.stderr,
    );
  });

  it('no matching line over TLS: PostgreSQL\'s "no pg_hba.conf entry for host …" text', async () => {
    const r = await psqlTcp(hosts[0]!, { db: 'db_trust', user: USERS.scram.name, password: USERS.scram.password, cert: false }, 'require');
    assert.notEqual(r.code, 0, r.stdout);
    assert.ok(
      r.stderr.includes('no pg_hba.conf entry for host "127.0.0.1", user "scramuser", database "db_trust", SSL encryption'),
      r.stderr,
    );
  });

  // ----------------------------------------------------------------------------------------------

  describe('a line the pooler cannot parse', () => {
    const BROKEN = `hostnossl all all 0.0.0.0/0 reject
hostssl all all 127.0.0.1/32 trust
hostssl all all 127.0.0.1/32 ldap
`;

    it('fails startup with FILE:LINE (exit 1), and --check exits 1 with it', async () => {
      const bad = path.join(work, 'broken-hba.conf');
      await fs.writeFile(bad, BROKEN);
      const iniPath = path.join(work, 'broken.ini');
      await fs.writeFile(
        iniPath,
        `[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${await freePort()}
unix_socket_dir =
auth_type = hba
auth_hba_file = ${bad}
[databases]
p0 = host=127.0.0.1 port=${c().port} dbname=p0
`,
      );
      const start = await runMain(['-c', iniPath], { timeoutMs: 10_000 });
      assert.equal(start.timedOut, false, 'the pooler must not start with a broken hba file');
      assert.equal(start.code, 1, start.stdout + start.stderr);
      assert.ok((start.stdout + start.stderr).includes(`${bad}:3`), start.stdout + start.stderr);
      assert.match(start.stdout + start.stderr, /ldap/);

      const check = await runMain(['--check', '-c', iniPath], { timeoutMs: 10_000 });
      assert.equal(check.code, 1, check.stdout + check.stderr);
      assert.ok((check.stdout + check.stderr).includes(`${bad}:3`), check.stdout + check.stderr);
    });

    it('RELOAD (SIGHUP) with a broken hba keeps the old rules', async () => {
      const tlsTrust = METHODS.find((x) => x.method === 'trust')!;
      try {
        // A valid change first: proves RELOAD re-reads the file, so "kept" below is meaningful.
        await fs.writeFile(hbaFile, HBA_LINES.replace(/^hostssl\s+db_trust.*$/m, `hostssl db_trust ${USERS.trust.name} all reject`));
        let from = pooler().logs().length;
        pooler().reload();
        await logSince(pooler(), from, /configuration reloaded/, 5_000);
        const refused = await psqlTcp(hosts[0]!, tlsTrust, 'require');
        assert.notEqual(refused.code, 0, 'the reloaded reject line applies');
        assert.match(refused.stderr, /pg_hba\.conf rejects connection/);

        // Now a broken file: the reload fails and the rules above stay.
        await fs.writeFile(hbaFile, BROKEN);
        from = pooler().logs().length;
        pooler().reload();
        const failedLine = await logSince(pooler(), from, /reload failed/, 5_000);
        assert.ok(messageOf(failedLine).includes(`${hbaFile}:3`), failedLine);
        const stillRefused = await psqlTcp(hosts[0]!, tlsTrust, 'require');
        assert.notEqual(stillRefused.code, 0, `the broken file's trust line must not apply:\n${stillRefused.stdout}`);
        const md5 = METHODS.find((x) => x.method === 'md5')!;
        const works = await psqlTcp(hosts[0]!, md5, 'require');
        assert.equal(works.code, 0, `a client that worked still works: ${works.stderr}`);
        const plain = await psqlTcp(hosts[0]!, md5, 'disable');
        assert.notEqual(plain.code, 0);
        assert.match(plain.stderr, /pg_hba\.conf rejects connection/);
      } finally {
        await fs.writeFile(hbaFile, HBA_LINES);
        const from = pooler().logs().length;
        pooler().reload();
        await logSince(pooler(), from, /configuration reloaded/, 5_000).catch(() => undefined);
      }
    });
  });

  it('RELOAD takes what PgBouncer takes: blanks before a comma, an address with bits outside its mask (warned, never matching)', async () => {
    // Both lines made RELOAD fail ("empty entry in a comma-separated list", "bits set outside"),
    // so PgBouncer's own hba files could not be loaded.
    const md5 = METHODS.find((x) => x.method === 'md5')!;
    const accepted = HBA_LINES.replace(
      /^hostssl\s+db_md5\s+\S+\s+0\.0\.0\.0\/0\s+md5$/m,
      `hostssl   db_trust    ${USERS.trust.name}  192.168.1.1/0  reject\nhostssl   db_md5      nobody,${USERS.md5.name} , other  0.0.0.0/0  md5`,
    );
    assert.notEqual(accepted, HBA_LINES);
    try {
      await fs.writeFile(hbaFile, accepted);
      const from = pooler().logs().length;
      pooler().reload();
      await logSince(pooler(), from, /configuration reloaded/, 5_000);
      const warned = await logSince(pooler(), from, /never matches/, 5_000);
      assert.ok(messageOf(warned).includes(`${hbaFile}:6`), warned);
      const viaList = await psqlTcp(hosts[0]!, md5, 'require');
      assert.equal(viaList.code, 0, viaList.stderr);
      assert.equal(viaList.stdout.trim(), md5.user);
      // The reject line with the stray bits matches nobody, so the trust line behind it applies.
      const trust = await psqlTcp(hosts[0]!, METHODS.find((x) => x.method === 'trust')!, 'require');
      assert.equal(trust.code, 0, trust.stderr);
    } finally {
      await fs.writeFile(hbaFile, HBA_LINES);
      const from = pooler().logs().length;
      pooler().reload();
      await logSince(pooler(), from, /configuration reloaded/, 5_000).catch(() => undefined);
    }
  });
});
