// Replication connections through the pooler (PgBouncer 1.23+): a client whose startup packet
// says `replication=database` (logical) or `replication=true` (physical) gets a server connection
// of its own, opened with its parameters and `options`, linked for its whole session whatever the
// pool mode, and closed when it leaves. The tools are the real ones: pg_basebackup, pg_receivewal,
// a logical subscription of PostgreSQL itself, psql; with TLS on both sides and SCRAM passed
// through. The WAL stream is forwarded with backpressure: a reader that stops reading stops the
// walsender rather than growing the pooler.
//
// pg_basebackup refuses servers newer than itself, so the cluster runs on the same PostgreSQL 15
// binaries as the client tools (skipped when they are not installed).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cstr, msg, startupPacket } from '../support/bytes.js';
import { connectClient } from '../support/pg-client.js';
import type { Pooler } from '../support/pooler.js';
import { firstErrorFields, RawConn } from '../support/raw-client.js';
import { runCommand } from '../support/run-cmd.js';
import { scramSecret } from '../support/secrets.js';
import { usePooler, useSetup } from '../support/suite.js';
import { sleep, waitFor } from '../support/wait.js';

const PG15 = '/usr/lib/postgresql/15/bin';
const tools = fs.existsSync(path.join(PG15, 'pg_basebackup')) && fs.existsSync(path.join(PG15, 'postgres'));
const SKIP = tools ? false : `PostgreSQL 15 binaries not found in ${PG15}`;

const REPL_PASSWORD = 'replpass';
const SCRAM_PASSWORD = 'scrampass';
/** repl_scram's verifier, in PostgreSQL and in the pooler's auth_file alike: pass-through needs both. */
const SCRAM_VERIFIER = scramSecret(SCRAM_PASSWORD);

const HBA = `local all all trust
local replication all trust
host replication repl_scram all scram-sha-256
host all repl_scram all scram-sha-256
host replication norepl all reject
host replication all all trust
host all all all trust
`;

const setup = useSetup({
  cluster: {
    name: 'replication',
    ssl: true,
    hba: HBA,
    binDir: tools ? PG15 : undefined,
    conf: { wal_level: 'logical', max_wal_senders: '20', max_replication_slots: '20' },
  },
  prepare: async (c) => {
    await c.query(`CREATE ROLE repl LOGIN REPLICATION;
                   CREATE ROLE repl_scram LOGIN REPLICATION PASSWORD '${SCRAM_VERIFIER}';
                   CREATE ROLE norepl LOGIN`, 'postgres');
  },
  dumpLogs: { clusterLines: 80 },
});
const { c } = setup;

function libpqEnv(password = REPL_PASSWORD): Record<string, string> {
  return { PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' };
}

function conninfo(p: Pooler, extra: string): string {
  return `host=127.0.0.1 port=${p.port} ${extra}`;
}

/** Console rows as text (over TLS for a pooler that requires it). */
async function show(p: Pooler, what: string, tls = true): Promise<Record<string, string | null>[]> {
  const admin = await connectClient({
    host: '127.0.0.1', port: p.port, user: 'repl', password: REPL_PASSWORD, database: 'pgbouncer', ...(tls ? { ssl: { rejectUnauthorized: false } } : {}),
  });
  try {
    const r = await admin.query({ text: `SHOW ${what}`, rowMode: 'array', types: { getTypeParser: () => (v: string) => v } });
    return r.rows.map((row: (string | null)[]) => Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] ?? null])));
  } finally {
    await admin.end();
  }
}

describe('replication with TLS on both sides and SCRAM', { skip: SKIP }, () => {
  const { p } = usePooler({
    ini: () => {
      const pki = c().pki!;
      return {
        pgbouncer: {
          auth_type: 'scram-sha-256',
          admin_users: 'repl',
          pool_mode: 'transaction',
          client_tls_sslmode: 'require',
          client_tls_key_file: pki.server.key,
          client_tls_cert_file: pki.server.chain,
          server_tls_sslmode: 'verify-ca',
          server_tls_ca_file: pki.caBundle,
        },
        databases: {
          p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
          replication: `host=127.0.0.1 port=${c().port} dbname=replication`,
        },
      };
    },
    options: { userlist: { repl: REPL_PASSWORD, repl_scram: SCRAM_VERIFIER } },
    dumpLogs: { clusters: () => [setup.cluster], poolerLines: 300 },
  });

  it('pg_basebackup takes a base backup through the pooler', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-basebackup-'));
    try {
      const r = await runCommand(path.join(PG15, 'pg_basebackup'),
        ['-d', conninfo(p(), 'user=repl dbname=replication sslmode=require'), '-D', path.join(dir, 'data'), '--checkpoint=fast', '-X', 'stream', '--no-sync'],
        { env: libpqEnv(), timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      for (const f of ['PG_VERSION', 'backup_manifest', 'global/pg_control']) {
        assert.ok(fs.existsSync(path.join(dir, 'data', f)), `the backup has no ${f}`);
      }
      assert.ok(fs.readdirSync(path.join(dir, 'data', 'pg_wal')).length > 0, 'no WAL streamed with -X stream');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('pg_receivewal streams WAL over TLS on both legs and stops cleanly on SIGINT', async () => {
    // Reserved now, so the stream starts at WAL that exists (an idle cluster writes none).
    await c().query("SELECT pg_create_physical_replication_slot('recv_slot', true)", 'postgres');
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-receivewal-'));
    const child = spawn(path.join(PG15, 'pg_receivewal'),
      ['-d', conninfo(p(), 'user=repl sslmode=require application_name=recv'), '-S', 'recv_slot', '-D', dir, '--no-sync'],
      { env: { ...process.env, ...libpqEnv() }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('a WAL segment file', async () => (await fsp.readdir(dir)).length > 0, 20_000)
        .catch((e: Error) => assert.fail(`${e.message}\n${stderr}`));
      // The walsender's own connection, from the pooler, is encrypted.
      const ssl = await c().query<{ ssl: boolean }>(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'recv'", 'postgres');
      assert.deepEqual(ssl.rows, [{ ssl: true }]);
      const clients = (await show(p(), 'CLIENTS')).filter((r) => r.user === 'repl' && r.database !== 'pgbouncer');
      assert.deepEqual(clients.map((r) => [r.replication, r.state]), [['physical', 'active']]);
      assert.ok((await show(p(), 'SERVERS')).some((r) => r.replication === 'physical' && r.state === 'active'));
      child.kill('SIGINT');
      assert.equal(await exited, 0, stderr);
    } finally {
      child.kill('SIGKILL');
      await fsp.rm(dir, { recursive: true, force: true });
    }
    // Its server went with it.
    await waitFor('the walsender to exit', async () =>
      (await c().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = 'recv'", 'postgres')).rows[0]!.n === 0, 5_000);
  });

  it('a logical subscription whose connection string names the pooler replicates rows', async () => {
    await c().query(`CREATE TABLE sub_t (a int PRIMARY KEY);
                     INSERT INTO sub_t VALUES (1);
                     GRANT SELECT ON sub_t TO repl;
                     CREATE PUBLICATION pub FOR TABLE sub_t`, 'p0');
    await c().query("SELECT pg_create_logical_replication_slot('sub_slot', 'pgoutput')", 'p0');
    await c().query('CREATE TABLE sub_t (a int PRIMARY KEY)', 'p1');
    const conn = `host=127.0.0.1 port=${p().port} dbname=p0 user=repl password=${REPL_PASSWORD} sslmode=require`;
    await c().query(`CREATE SUBSCRIPTION sub CONNECTION '${conn}' PUBLICATION pub WITH (slot_name = sub_slot, create_slot = false)`, 'p1');
    const count = async () => (await c().query<{ n: number }>('SELECT count(*)::int AS n FROM sub_t', 'p1')).rows[0]!.n;
    try {
      await waitFor('the initial copy', async () => (await count()) === 1, 30_000);
      await c().query('INSERT INTO sub_t SELECT generate_series(2, 100)', 'p0');
      await waitFor('the streamed rows', async () => (await count()) === 100, 30_000);
      const clients = await show(p(), 'CLIENTS');
      assert.ok(clients.some((r) => r.replication === 'logical' && r.database === 'p0'), JSON.stringify(clients));
    } finally {
      await c().query('ALTER SUBSCRIPTION sub DISABLE', 'p1');
      await c().query('ALTER SUBSCRIPTION sub SET (slot_name = NONE)', 'p1');
      await c().query('DROP SUBSCRIPTION sub', 'p1');
      await waitFor('the slot to be released', async () =>
        (await c().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'sub_slot' AND active", 'postgres')).rows[0]!.n === 0, 10_000);
      await c().query("SELECT pg_drop_replication_slot('sub_slot')", 'postgres');
    }
  });

  it('passes SCRAM through: a SCRAM-only role runs replication commands through psql', async () => {
    for (const replication of ['database', 'true']) {
      const r = await runCommand(path.join(PG15, 'psql'),
        ['-X', '-A', '-t', '-d', conninfo(p(), `user=repl_scram dbname=p0 sslmode=require replication=${replication}`), '-c', 'IDENTIFY_SYSTEM'],
        { env: libpqEnv(SCRAM_PASSWORD) });
      assert.equal(r.code, 0, r.stderr);
      const systemid = (await c().query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()', 'postgres')).rows[0]!.id;
      assert.ok(r.stdout.startsWith(`${systemid}|`), r.stdout);
    }
  });
});

describe('replication connections and the pool', { skip: SKIP }, () => {
  const { p } = usePooler({
    ini: () => ({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', admin_users: 'repl', server_tls_sslmode: 'disable' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0 pool_size=2` },
    }),
    dumpLogs: { clusters: () => [setup.cluster], poolerLines: 300 },
  });

  it('refuses a replication login PostgreSQL refuses with "login failed" and its reason, and fails no one else', async () => {
    for (const replication of ['database', 'true']) {
      const conn = await RawConn.connect(p().port);
      try {
        conn.send(startupPacket({ user: 'norepl', database: 'p0', replication }));
        const err = firstErrorFields(await conn.until('Z', { onError: 'stop', onEnd: 'return' }));
        assert.equal(err?.M, 'login failed', JSON.stringify(err));
        assert.equal(err?.S, 'FATAL');
        // PostgreSQL's own reason: the hba `reject` line (physical), the missing REPLICATION
        // attribute (logical).
        assert.match(err?.D ?? '', replication === 'true' ? /pg_hba\.conf rejects replication connection/ : /replication role/);
      } finally {
        conn.destroy();
      }
    }
    const normal = await connectClient({ host: '127.0.0.1', port: p().port, user: 'norepl', database: 'p0' });
    assert.deepEqual((await normal.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    await normal.end();
  });

  it('a replication client takes a pool_size slot, closing an idle server to get one, and its server goes when it leaves', async () => {
    // Two normal clients leave two idle servers behind: the pool (pool_size=2) is full.
    const normals = await Promise.all([0, 1].map(() => connectClient({ host: '127.0.0.1', port: p().port, user: 'repl', database: 'p0' })));
    await Promise.all(normals.map((n) => n.query('SELECT pg_sleep(0.2)')));
    await Promise.all(normals.map((n) => n.end()));
    const from = p().logs().length;
    const { conn } = await RawConn.login(p().port, { user: 'repl', database: 'p0', replication: 'database', application_name: 'evictor' });
    try {
      conn.send(msg('Q', cstr('IDENTIFY_SYSTEM')));
      await conn.until('Z');
      assert.ok(p().logs().slice(from).some((l) => l.includes('closing because: evicted')), 'no idle server was evicted');
      const pools = await show(p(), 'POOLS', false);
      const row = pools.find((r) => r.database === 'p0' && r.user === 'repl');
      assert.equal(Number(row?.sv_active) + Number(row?.sv_idle), 2, JSON.stringify(row));
    } finally {
      conn.destroy();
    }
    await waitFor('the replication server to close', async () =>
      (await c().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'evictor'", 'postgres')).rows[0]!.n === 0, 5_000);
  });

  it('forwards the WAL stream with backpressure: a reader that stops reading stops the walsender, not the pooler\'s memory', async () => {
    const { conn } = await RawConn.login(p().port, { user: 'repl', database: 'p0', replication: 'true', application_name: 'slowreader' }, { timeoutMs: 20_000 });
    try {
      conn.send(msg('Q', cstr('IDENTIFY_SYSTEM')));
      const ident = await conn.until('Z');
      const row = ident.find((m) => m.type === 'D')!;
      // DataRow: systemid, timeline, xlogpos, dbname.
      let pos = 2;
      const cols: string[] = [];
      for (let i = 0; i < 3; i++) {
        const len = row.body.readInt32BE(pos);
        cols.push(row.body.toString('utf8', pos + 4, pos + 4 + len));
        pos += 4 + len;
      }
      let received = 0;
      conn.onCopyData = (body) => (received += body.length);
      conn.send(msg('Q', cstr(`START_REPLICATION PHYSICAL ${cols[2]} TIMELINE ${cols[1]}`)));
      await conn.until('W');
      conn.sock.pause();
      const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p().pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
      const before = rss();
      // About 100 MB of WAL.
      await c().query("CREATE TABLE wal_filler AS SELECT g, repeat(md5(g::text), 30) AS pad FROM generate_series(1, 100000) g", 'p0');
      await sleep(1_000);
      const lag = await c().query<{ lag: string }>(
        "SELECT (pg_current_wal_lsn() - sent_lsn)::text AS lag FROM pg_stat_replication WHERE application_name = 'slowreader'", 'postgres');
      const grown = rss() - before;
      assert.ok(Number(lag.rows[0]?.lag) > 40 * 1024 * 1024, `the walsender went on sending (lag ${lag.rows[0]?.lag} bytes)`);
      assert.ok(grown < 32 * 1024 * 1024, `the pooler grew by ${grown} bytes while the reader did not read`);
      conn.sock.resume();
      await waitFor('the stream to catch up', async () => received > 80 * 1024 * 1024, 60_000)
        .catch((e: Error) => assert.fail(`${e.message}: received ${received} bytes`));
    } finally {
      conn.destroy();
      await c().query('DROP TABLE IF EXISTS wal_filler', 'p0');
    }
  });
});

describe('replication connections in a multi-worker instance', { skip: SKIP }, () => {
  const { p } = usePooler({
    ini: () => ({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', workers: '2', server_tls_sslmode: 'disable' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0 pool_size=1` },
    }),
    options: { readyTimeoutMs: 20_000 },
    dumpLogs: { clusters: () => [setup.cluster], poolerLines: 200 },
  });

  const backends = async (): Promise<number> =>
    (await c().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'repl' AND backend_type IN ('client backend', 'walsender')", 'postgres')).rows[0]!.n;

  it('take turns on the instance\'s pool_size slot, whichever worker they land on', async () => {
    await p().waitForLog(/instance of 2 workers up/, 20_000);
    const holder = await connectClient({ host: '127.0.0.1', port: p().port, user: 'repl', database: 'p0' });
    await holder.query('BEGIN');
    await holder.query('SELECT 1');
    // Four logins spread over both workers; none gets a server while the holder has the only one.
    const logins = Array.from({ length: 4 }, () =>
      RawConn.login(p().port, { user: 'repl', database: 'p0', replication: 'database' }, { timeoutMs: 30_000 }));
    const done: RawConn[] = [];
    for (const l of logins) void l.then(({ conn }) => done.push(conn));
    await sleep(1_500);
    assert.equal(done.length, 0, 'a replication login got a server beyond pool_size = 1');
    assert.equal(await backends(), 1);
    await holder.query('COMMIT');
    await holder.end();
    // Each one in turn: it logs in once the slot is free, and frees it when it leaves.
    for (let i = 0; i < logins.length; i++) {
      await waitFor(`replication login ${i + 1}`, async () => done.length > i, 20_000);
      // The one before may take a moment to exit after its server was closed.
      await waitFor('one server under pool_size = 1', async () => (await backends()) <= 1, 3_000);
      done[i]!.destroy();
    }
  });
});
