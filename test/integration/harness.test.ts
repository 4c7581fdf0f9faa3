// Proves the test harness itself before any pooler test leans on it: the PostgreSQL cluster (auth
// methods, faults, reloads), the PKI (each broken certificate fails for its one reason, with
// openssl and with a real server), the command runner, and the pooler launcher (driven by a
// stand-in entry script, since it must work before and independently of the real pooler).

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import pg from 'pg';
import { DEFAULT_HBA, startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { makePki, type Pki } from '../support/pki.js';
import { freePort, startPooler } from '../support/pooler.js';
import { pgbench, psql, runCommand } from '../support/run-cmd.js';

/** Connect, run one query, disconnect; the connection is bounded so a hang fails the test. */
async function queryOnce<R extends pg.QueryResultRow>(config: pg.ClientConfig, sql: string): Promise<R[]> {
  const client = new pg.Client({ connectionTimeoutMillis: 10_000, query_timeout: 10_000, ...config });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Print the server log once if any test in the suite failed (PgBouncer's pg_log fixture). */
function dumpLogOnFailure(cluster: () => Cluster | undefined): void {
  let failed = false;
  afterEach((t) => {
    if ('passed' in t && !t.passed) failed = true;
  });
  after(async () => {
    const c = cluster();
    if (failed && c !== undefined) console.error(`--- ${c.logFile} ---\n${await c.readLog()}`);
  });
}

describe('pg-cluster', () => {
  let cluster: Cluster | undefined;
  const c = () => {
    assert.ok(cluster, 'cluster did not start');
    return cluster;
  };
  const tcp = (user: string, password: string, db = 'p0', host: string = c().host): pg.ClientConfig =>
    ({ host, port: c().port, user, password, database: db });

  before(async () => {
    cluster = await startCluster({ name: 'harness' });
  });
  dumpLogOnFailure(() => cluster);
  after(() => cluster?.destroy());

  it('applies the harness settings', async () => {
    const rows = (await c().query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings
        WHERE name IN ('max_connections', 'fsync', 'password_encryption', 'port') ORDER BY name`)).rows;
    assert.deepEqual(rows, [
      { name: 'fsync', setting: 'off' },
      { name: 'max_connections', setting: '300' },
      { name: 'password_encryption', setting: 'scram-sha-256' },
      { name: 'port', setting: String(c().port) },
    ]);
  });

  it('authenticates md5user by MD5 with a password stored as md5', async () => {
    const rows = await queryOnce<{ u: string }>(tcp(USERS.md5.name, USERS.md5.password), 'SELECT current_user AS u');
    assert.deepEqual(rows, [{ u: USERS.md5.name }]);
    const stored = await c().query<{ p: string }>('SELECT rolpassword AS p FROM pg_authid WHERE rolname = $1', 'p0', [USERS.md5.name]);
    assert.match(stored.rows[0]?.p ?? '', /^md5[0-9a-f]{32}$/);
    await assert.rejects(queryOnce(tcp(USERS.md5.name, 'wrong'), 'SELECT 1'), { code: '28P01' });
  });

  it('authenticates scramuser by SCRAM-SHA-256 on p1', async () => {
    const rows = await queryOnce<{ u: string; d: string }>(tcp(USERS.scram.name, USERS.scram.password, 'p1'),
      'SELECT current_user AS u, current_database() AS d');
    assert.deepEqual(rows, [{ u: USERS.scram.name, d: 'p1' }]);
    const stored = await c().query<{ p: string }>('SELECT rolpassword AS p FROM pg_authid WHERE rolname = $1', 'p0', [USERS.scram.name]);
    assert.match(stored.rows[0]?.p ?? '', /^SCRAM-SHA-256\$/);
    await assert.rejects(queryOnce(tcp(USERS.scram.name, 'wrong'), 'SELECT 1'), { code: '28P01' });
  });

  it('trusts plainuser without a password, on IPv4 and IPv6 loopback', async () => {
    const rows = await queryOnce<{ u: string }>(tcp(USERS.trust.name, ''), 'SELECT current_user AS u');
    assert.deepEqual(rows, [{ u: USERS.trust.name }]);
    if (c().ipv6) {
      const v6 = await queryOnce<{ a: string }>(tcp(USERS.trust.name, '', 'p0', '::1'), 'SELECT inet_client_addr()::text AS a');
      assert.deepEqual(v6, [{ a: '::1/128' }]);
    }
  });

  it('runs psql against the superuser URL', async () => {
    const r = await psql(c().superuserUrl('p1'), 'SELECT current_database()');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'p1');
    const bad = await psql(c().superuserUrl('p1'), 'SELECT nope');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /column "nope" does not exist/);
  });

  it('lets plainuser run pgbench (CREATE on schema public)', async () => {
    const url = `postgresql://${USERS.trust.name}@${c().host}:${c().port}/p1`;
    const init = await pgbench(['-i', '-q', '-s', '1', url]);
    assert.equal(init.code, 0, init.stderr);
    const run = await pgbench(['-n', '-S', '-c', '2', '-t', '20', url]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /number of transactions actually processed: 40/);
  });

  it('terminates backends selected by user', async () => {
    const victim = new pg.Client({ ...tcp(USERS.trust.name, ''), connectionTimeoutMillis: 10_000 });
    // pg reports the FATAL and then the closed socket: keep listening for both.
    const errored = new Promise<Error>((resolve) => victim.on('error', resolve));
    await victim.connect();
    try {
      const [pid] = (await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows.map((r) => r.pid);
      assert.deepEqual(await c().backendPids({ user: USERS.trust.name }), [pid]);
      assert.equal(await c().terminateBackends({ user: USERS.trust.name }), 1);
      assert.equal(((await errored) as Error & { code?: string }).code, '57P01');
      assert.deepEqual(await c().backendPids({ user: USERS.trust.name }), []);
    } finally {
      await victim.end().catch(() => undefined);
    }
  });

  it('applies a new pg_hba.conf on reload', async () => {
    await c().setHba(`host all ${USERS.trust.name} all reject\nhost all all all trust\n`);
    await c().reload();
    await assert.rejects(queryOnce(tcp(USERS.trust.name, ''), 'SELECT 1'), { code: '28000' });
    assert.ok((await c().query('SELECT 1')).rowCount === 1, 'the harness connection survives any hba');
    await c().setHba(DEFAULT_HBA);
    await c().reload();
    await queryOnce(tcp(USERS.trust.name, ''), 'SELECT 1');
  });

  it('applies a postmaster-level setting on restart', async () => {
    await c().setConf('max_connections', '123');
    await c().restart();
    assert.equal((await c().query<{ v: string }>("SELECT current_setting('max_connections') AS v")).rows[0]?.v, '123');
  });

  it('survives SIGKILL of the postmaster and starts again on the same data', async () => {
    await c().query('CREATE TABLE survivor (x int); INSERT INTO survivor VALUES (42); GRANT SELECT ON survivor TO PUBLIC');
    const session = new pg.Client({ ...tcp(USERS.trust.name, ''), connectionTimeoutMillis: 10_000 });
    const sessionError = new Promise<Error>((resolve) => session.on('error', resolve));
    await session.connect();
    try {
      await c().kill();
      await sessionError;
      await assert.rejects(queryOnce(tcp(USERS.trust.name, ''), 'SELECT 1'), { code: 'ECONNREFUSED' });
      await c().start();
      const rows = await queryOnce<{ x: number }>(tcp(USERS.trust.name, ''), 'SELECT x FROM survivor');
      assert.deepEqual(rows, [{ x: 42 }]);
      assert.match(await c().readLog(), /database system was not properly shut down/);
    } finally {
      await session.end().catch(() => undefined);
    }
  });
});

describe('pki', () => {
  let pki: Pki | undefined;
  const k = () => {
    assert.ok(pki, 'pki was not generated');
    return pki;
  };
  let dir = '';

  /** `openssl verify` with the root as the only anchor and the intermediate as untrusted chain. */
  const verify = (cert: string, ...extra: string[]) =>
    runCommand('openssl', ['verify', '-CAfile', k().rootCa, '-untrusted', k().intermediateCa, ...extra, cert]);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-pki-test-'));
    pki = await makePki(path.join(dir, 'ec'));
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('issues a server certificate valid for localhost, 127.0.0.1 and ::1 through the intermediate', async () => {
    const r = await verify(k().server.cert, '-purpose', 'sslserver', '-verify_hostname', 'localhost');
    assert.equal(r.code, 0, r.stderr);
    for (const ip of ['127.0.0.1', '::1']) {
      assert.equal((await verify(k().server.cert, '-verify_ip', ip)).code, 0);
    }
    const chain = await fs.readFile(k().server.chain, 'utf8');
    assert.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2);
  });

  it('issues client certificates on demand, once per CN', async () => {
    const a = await k().clientCert('md5user');
    assert.deepEqual(await k().clientCert('md5user'), a);
    const r = await verify(a.cert, '-purpose', 'sslclient');
    assert.equal(r.code, 0, r.stderr);
    const subject = await runCommand('openssl', ['x509', '-noout', '-subject', '-in', a.cert]);
    assert.match(subject.stdout, /CN ?= ?md5user/);
  });

  it('makes each broken certificate fail for its own reason', async () => {
    const expired = await verify(k().expired.cert);
    assert.match(expired.stdout + expired.stderr, /certificate has expired/);
    const untrusted = await verify(k().untrusted.cert);
    assert.match(untrusted.stdout + untrusted.stderr, /unable to get local issuer certificate/);
    const selfSigned = await verify(k().selfSigned.cert);
    assert.match(selfSigned.stdout + selfSigned.stderr, /self[- ]signed certificate/);
    const wrongHost = await verify(k().wrongHostServer.cert, '-verify_hostname', 'localhost');
    assert.match(wrongHost.stdout + wrongHost.stderr, /hostname mismatch/);
    for (const r of [expired, untrusted, selfSigned, wrongHost]) assert.notEqual(r.code, 0);

    // Revocation: rejected with the CRL, accepted without it, so the CRL is the only reason.
    assert.equal((await verify(k().revoked.cert)).code, 0);
    const revoked = await verify(k().revoked.cert, '-crl_check', '-CRLfile', k().crl);
    assert.notEqual(revoked.code, 0);
    assert.match(revoked.stdout + revoked.stderr, /certificate revoked/);
    // The CRL file covers the whole chain, as Node's tls (CRL_CHECK_ALL) requires.
    const good = await verify(k().wrongCnClient.cert, '-crl_check_all', '-CRLfile', k().crl);
    assert.equal(good.code, 0, good.stderr);
  });

  it('writes every private key with mode 0600', async () => {
    const keys = (await fs.readdir(k().dir)).filter((f) => f.endsWith('.key'));
    assert.ok(keys.length >= 10, keys.join());
    for (const f of keys) assert.equal((await fs.stat(path.join(k().dir, f))).mode & 0o777, 0o600, f);
  });

  it('reuses a complete PKI already in the directory', async () => {
    const again = await makePki(k().dir);
    assert.equal(again.server.cert, k().server.cert);
    const fresh = await import(`../support/pki.js?again=${Date.now()}`) as typeof import('../support/pki.js');
    const before = (await fs.stat(k().caBundle)).mtimeMs;
    const reloaded = await fresh.makePki(k().dir);
    assert.equal((await fs.stat(reloaded.caBundle)).mtimeMs, before, 'files were regenerated');
  });

  it('makes RSA 2048 keys on request', async () => {
    const rsa = await makePki(path.join(dir, 'rsa'), { keyType: 'rsa' });
    const text = await runCommand('openssl', ['pkey', '-noout', '-text', '-in', rsa.server.key]);
    assert.match(text.stdout, /Private-Key: \(2048 bit/);
  });
});

describe('pg-cluster with ssl', () => {
  let cluster: Cluster | undefined;
  const c = () => {
    assert.ok(cluster?.pki, 'ssl cluster did not start');
    return { cluster, pki: cluster.pki };
  };

  before(async () => {
    cluster = await startCluster({ ssl: true, name: 'harness-ssl' });
  });
  dumpLogOnFailure(() => cluster);
  after(() => cluster?.destroy());

  const sslQuery = async (ssl: pg.ClientConfig['ssl'], user: string = USERS.trust.name) =>
    queryOnce<{ ssl: boolean }>({ host: c().cluster.host, port: c().cluster.port, user, database: 'p0', ssl },
      'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');

  it('serves TLS that verifies fully against the CA bundle as "localhost"', async () => {
    const ca = await fs.readFile(c().pki.caBundle, 'utf8');
    assert.deepEqual(await sslQuery({ ca, servername: 'localhost' }), [{ ssl: true }]);
    // Checked against the IP SAN when no name is given.
    assert.deepEqual(await sslQuery({ ca }), [{ ssl: true }]);
  });

  it('fails verification for another host name or an unrelated CA', async () => {
    const ca = await fs.readFile(c().pki.caBundle, 'utf8');
    await assert.rejects(sslQuery({ ca, servername: 'other.example' }), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    const untrusted = await fs.readFile(c().pki.untrustedCa, 'utf8');
    await assert.rejects(sslQuery({ ca: untrusted, servername: 'localhost' }), { code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
  });

  it('verifies client certificates against ssl_ca_file and ssl_crl_file', async () => {
    const { cluster: cl, pki } = c();
    await cl.setHba(`hostssl all ${USERS.trust.name} all cert\nhost all all all reject\n`);
    await cl.setConf('ssl_crl_file', pki.crl);
    await cl.reload();
    const ca = await fs.readFile(pki.caBundle, 'utf8');
    const withCert = async (pair: { cert: string; key: string }) =>
      ({ ca, servername: 'localhost', cert: await fs.readFile(pair.cert, 'utf8'), key: await fs.readFile(pair.key, 'utf8') });

    assert.deepEqual(await sslQuery(await withCert(await pki.clientCert(USERS.trust.name))), [{ ssl: true }]);
    await assert.rejects(sslQuery({ ca, servername: 'localhost' }), { code: '28000' });
    await assert.rejects(sslQuery(await withCert(pki.wrongCnClient)), { code: '28000' });
    // PostgreSQL reports a rejected client certificate as a TLS alert, so only the failure is certain.
    for (const bad of [pki.revoked, pki.expired, pki.untrusted, pki.selfSigned]) {
      await assert.rejects(sslQuery(await withCert(bad)), Error, bad.cert);
    }
  });
});

describe('run-cmd and pooler launcher', () => {
  let dir = '';
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-launcher-test-'));
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  /** A stand-in pooler: reads `-c <ini>`, listens where the ini says, logs signals. */
  const standIn = `
import fs from 'node:fs';
import net from 'node:net';
const ini = fs.readFileSync(process.argv[process.argv.indexOf('-c') + 1], 'utf8');
const port = Number(/^listen_port = (\\d+)/m.exec(ini)[1]);
const srv = net.createServer((s) => s.end()).listen(port, '127.0.0.1', () => console.log('listening on ' + port));
process.on('SIGHUP', () => console.log('reloaded'));
process.on('SIGTERM', () => { console.error('shutting down'); srv.close(() => process.exit(0)); });
`;

  it('kills a command at its timeout', async () => {
    const t0 = Date.now();
    const r = await runCommand('sleep', ['10'], { timeoutMs: 200 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(Date.now() - t0 < 5_000);
    const echoed = await runCommand('cat', [], { input: 'in' });
    assert.deepEqual([echoed.code, echoed.stdout], [0, 'in']);
  });

  it('starts a pooler from an ini object, waits for its port and stops it by signal', async () => {
    const main = path.join(dir, 'stand-in.mjs');
    await fs.writeFile(main, standIn);
    const p = await startPooler({ databases: { p0: 'host=127.0.0.1 port=5432 dbname=p0' }, pgbouncer: { auth_type: 'md5' } },
      { main, userlist: { md5user: 'md5pass', 'we"ird': 'x' } });
    const ini = await fs.readFile(p.iniPath, 'utf8');
    assert.match(ini, new RegExp(`^listen_port = ${p.port}$`, 'm'));
    assert.match(ini, new RegExp(`^auth_file = ${p.authFile}$`, 'm'));
    assert.match(ini, /^auth_type = md5$/m);
    assert.equal(await fs.readFile(p.authFile, 'utf8'), '"md5user" "md5pass"\n"we""ird" "x"\n');
    assert.equal(p.url('md5user', 'p@ss', 'p0'), `postgresql://md5user:p%40ss@127.0.0.1:${p.port}/p0`);
    await p.waitForLog(/^listening on/);

    await p.writeIni({ pgbouncer: { auth_type: 'trust' } });
    assert.match(await fs.readFile(p.iniPath, 'utf8'), new RegExp(`^listen_port = ${p.port}$`, 'm'));
    p.reload();
    await p.waitForLog(/^reloaded$/);

    assert.deepEqual(await p.stop(), { code: 0, signal: null });
    assert.ok(p.logs().includes('shutting down'));
    await assert.rejects(fs.access(p.dir), 'the temp dir is removed after exit');
  });

  it('fails with the pooler output when it exits before listening', async () => {
    const main = path.join(dir, 'bad-config.mjs');
    await fs.writeFile(main, `console.error('FATAL bad setting: nope'); process.exit(1);`);
    await assert.rejects(startPooler({ pgbouncer: {} }, { main }),
      /exited before accepting connections \(code 1[\s\S]*FATAL bad setting: nope/);
  });

  it('gives up after the ready timeout and kills the process', async () => {
    const main = path.join(dir, 'never-listens.mjs');
    await fs.writeFile(main, `setInterval(() => {}, 1000);`);
    const port = await freePort();
    await assert.rejects(startPooler(`[pgbouncer]\nlisten_port = ${port}\n`, { main, readyTimeoutMs: 300 }),
      new RegExp(`did not accept connections on 127.0.0.1:${port} within 300 ms`));
  });
});
