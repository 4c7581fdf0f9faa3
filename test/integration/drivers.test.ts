// Real drivers through the real pooler in transaction mode, as applications use it: node-postgres
// (simple and unnamed parameterised extended queries, transactions on a checked-out client),
// postgres.js with prepare: false (which pipelines many Parse/Bind/Execute/Sync on each
// connection), psql (-c, a script with \copy in both directions) and pgbench, over TCP and over
// the pooler's unix socket. Clients log in with SCRAM, as drivers do by default today.
//
// Named prepared statements across transactions need prepared-statement support (a later issue)
// and are deliberately not used here.

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { connectClient } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { pgbench, psql, psqlFile, type RunResult } from '../support/run-cmd.js';
import { dumpLogsOnFailure, required } from '../support/suite.js';

const USER = USERS.trust.name;
const PASSWORD = 'drvpass';
const POOL_SIZE = 4;
const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 15_000;

/** psql reading a script file, with no libpq variables from the developer's shell. */
function psqlScript(conn: string, file: string): Promise<RunResult> {
  return psqlFile(conn, file, { env: { PGPASSWORD: PASSWORD }, timeoutMs: 60_000 });
}

describe('drivers in transaction mode', () => {
  let cluster: Cluster | undefined;
  let pooler: Pooler | undefined;
  let tmp = '';
  const c = required(() => cluster, 'cluster');
  const p = required(() => pooler, 'pooler');
  const pgConfig = (): pg.ClientConfig => ({
    host: '127.0.0.1', port: p().port, user: USER, password: PASSWORD, database: 'p0',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS,
  });
  const pgjs = (max: number) => postgres({
    host: '127.0.0.1', port: p().port, user: USER, password: PASSWORD, database: 'p0',
    prepare: false, max, connect_timeout: 10, idle_timeout: 5, onnotice: () => undefined,
  });

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pgpool-drivers-'));
    cluster = await startCluster({ name: 'drivers' });
    await cluster.query(`CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);
      CREATE TABLE ledger (client int NOT NULL, n int NOT NULL);
      GRANT ALL ON items, ledger TO PUBLIC`);
    const init = await pgbench(['-i', '-q', '-s', '1', `postgresql://${USER}@127.0.0.1:${cluster.port}/p1`]);
    assert.equal(init.code, 0, init.stderr);
    pooler = await startPooler(
      {
        pgbouncer: {
          auth_type: 'scram-sha-256',
          pool_mode: 'transaction',
          default_pool_size: String(POOL_SIZE),
          max_client_conn: '200',
          unix_socket_mode: '0770',
        },
        databases: {
          p0: `host=127.0.0.1 port=${cluster.port} dbname=p0`,
          p1: `host=127.0.0.1 port=${cluster.port} dbname=p1`,
        },
      },
      { userlist: { [USER]: PASSWORD } },
    );
  });
  dumpLogsOnFailure({ clusters: () => [cluster], poolers: () => [pooler], poolerLines: 200, clusterLines: 100 });
  after(async () => {
    await pooler?.stop();
    await cluster?.destroy();
    if (tmp !== '') await fs.rm(tmp, { recursive: true, force: true });
  });

  describe('node-postgres', () => {
    it('runs simple and parameterised queries from a pg.Pool of 10 connections', async () => {
      const pool = new pg.Pool({ ...pgConfig(), max: 10 });
      pool.on('error', () => undefined);
      try {
        const results = await Promise.all(Array.from({ length: 400 }, async (_, i) => {
          if (i % 2 === 0) {
            // Simple protocol (no parameters).
            const r = await pool.query<{ v: number; pid: number }>(`SELECT ${i} AS v, pg_backend_pid() AS pid`);
            return { want: i, got: r.rows[0]?.v, pid: r.rows[0]?.pid };
          }
          // Extended protocol, unnamed statement, text and binary-looking parameters.
          const r = await pool.query<{ v: number; s: string; pid: number }>(
            'SELECT $1::int AS v, $2::text AS s, pg_backend_pid() AS pid', [i, `é-${i}`]);
          assert.equal(r.rows[0]?.s, `é-${i}`);
          return { want: i, got: r.rows[0]?.v, pid: r.rows[0]?.pid };
        }));
        for (const r of results) assert.equal(r.got, r.want);
        const pids = new Set(results.map((r) => r.pid));
        assert.ok(pids.size <= POOL_SIZE, `${pids.size} backends for pool_size ${POOL_SIZE}`);
      } finally {
        await pool.end();
      }
    });

    it('runs transactions on checked-out clients, committing and rolling back', async () => {
      const pool = new pg.Pool({ ...pgConfig(), max: 8 });
      pool.on('error', () => undefined);
      try {
        await pool.query('DELETE FROM ledger');
        await Promise.all(Array.from({ length: 8 }, async (_, client) => {
          const cl = await pool.connect();
          try {
            for (let t = 0; t < 10; t++) {
              await cl.query('BEGIN');
              const pid = (await cl.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p;
              await cl.query('INSERT INTO ledger (client, n) VALUES ($1, $2)', [client, t]);
              const mine = await cl.query<{ n: number }>('SELECT count(*)::int AS n FROM ledger WHERE client = $1', [client]);
              assert.equal((await cl.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p, pid);
              if (t % 2 === 0) {
                await cl.query('COMMIT');
              } else {
                // Inside the transaction the row is visible (with the committed ones before it); the
                // rollback takes it away.
                assert.equal(mine.rows[0]?.n, (t + 1) / 2 + 1);
                await cl.query('ROLLBACK');
              }
            }
          } finally {
            cl.release();
          }
        }));
        const r = await pool.query<{ client: number; n: number }>(
          'SELECT client, count(*)::int AS n FROM ledger GROUP BY client ORDER BY client');
        assert.deepEqual(r.rows, Array.from({ length: 8 }, (_, client) => ({ client, n: 5 })));
      } finally {
        await pool.end();
      }
    });

    it('reports a query error and goes on with the next query on the same connection', async () => {
      const cl = await connectClient(pgConfig());
      try {
        await assert.rejects(cl.query('SELECT $1::int', ['not a number']), { code: '22P02' });
        await assert.rejects(cl.query('SELECT * FROM no_such_table'), { code: '42P01' });
        assert.deepEqual((await cl.query('SELECT $1::int AS v', [7])).rows, [{ v: 7 }]);
      } finally {
        await cl.end();
      }
    });
  });

  describe('postgres.js (prepare: false)', () => {
    it('answers 1000 concurrent queries over 10 pipelining connections, each with its own result', async () => {
      const sql = pgjs(10);
      try {
        const rows = await Promise.all(Array.from({ length: 1000 }, async (_, i) => {
          const [r] = await sql<{ i: number; t: string; pid: number }[]>`SELECT ${i}::int AS i, ${'v' + i}::text AS t, pg_backend_pid() AS pid`;
          return { i, r };
        }));
        for (const { i, r } of rows) {
          assert.equal(r?.i, i);
          assert.equal(r.t, `v${i}`);
        }
        const pids = new Set(rows.map(({ r }) => r?.pid));
        assert.ok(pids.size <= POOL_SIZE, `${pids.size} backends for pool_size ${POOL_SIZE}`);
      } finally {
        await sql.end({ timeout: 5 });
      }
    });

    it('runs sql.begin transactions concurrently, committing and rolling back', async () => {
      const sql = pgjs(10);
      try {
        await sql`DELETE FROM items`;
        const outcomes = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
          const work = sql.begin(async (tx) => {
            const [{ pid } = { pid: 0 }] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
            await tx`INSERT INTO items (id, label) VALUES (${i}, ${'item ' + i})`;
            const [seen] = await tx<{ n: number }[]>`SELECT count(*)::int AS n FROM items WHERE id = ${i}`;
            assert.equal(seen?.n, 1);
            const [again] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
            assert.equal(again?.pid, pid, 'a transaction moved between backends');
            if (i % 4 === 3) throw new Error('roll me back');
            return pid;
          });
          return work.then(() => 'committed', (e: Error) => (e.message === 'roll me back' ? 'rolled back' : e.message));
        }));
        assert.deepEqual(outcomes, Array.from({ length: 40 }, (_, i) => (i % 4 === 3 ? 'rolled back' : 'committed')));
        const [count] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM items`;
        assert.equal(count?.n, 30);
      } finally {
        await sql.end({ timeout: 5 });
      }
    });
  });

  describe('psql', () => {
    it('runs psql -c, one and several statements', async () => {
      const url = p().url(USER, PASSWORD, 'p0');
      const r = await psql(url, 'SELECT 1; SELECT current_database()');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), ['1', 'p0']);
      const bad = await psql(url, 'SELECT 1/0');
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /division by zero/);
    });

    it('runs a script with \\copy in and out through the pooler', async () => {
      const csvIn = path.join(tmp, 'in.csv');
      const csvOut = path.join(tmp, 'out.csv');
      const script = path.join(tmp, 'copy.sql');
      // 20 000 rows: the COPY data spans many packets in both directions.
      const lines = Array.from({ length: 20_000 }, (_, i) => `${100_000 + i},"label, with comma ""${i}"""`);
      await fs.writeFile(csvIn, lines.join('\n') + '\n');
      await fs.writeFile(script, [
        'DELETE FROM items WHERE id >= 100000;',
        `\\copy items FROM '${csvIn}' WITH (FORMAT csv)`,
        'SELECT count(*), min(id), max(id) FROM items WHERE id >= 100000;',
        `\\copy (SELECT id, label FROM items WHERE id >= 100000 ORDER BY id) TO '${csvOut}' WITH (FORMAT csv)`,
        // A failed COPY leaves the connection usable.
        `\\set ON_ERROR_STOP 0`,
        `\\copy items FROM '${csvIn}' WITH (FORMAT csv)`,
        `\\set ON_ERROR_STOP 1`,
        'SELECT count(*) FROM items WHERE id >= 100000;',
        '',
      ].join('\n'));
      const r = await psqlScript(p().url(USER, PASSWORD, 'p0'), script);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), ['20000|100000|119999', '20000']);
      assert.match(r.stderr, /duplicate key value violates unique constraint/);
      assert.equal(await fs.readFile(csvOut, 'utf8'), lines.join('\n') + '\n');
    });
  });

  describe('pgbench', () => {
    it('runs pgbench -S and TPC-B with no failed transaction', async () => {
      const url = `postgresql://${USER}@127.0.0.1:${p().port}/p1`;
      const env = { PGPASSWORD: PASSWORD };
      const s = await pgbench(['-n', '-S', '-c', '16', '-j', '2', '-t', '50', url], { env });
      assert.equal(s.code, 0, s.stderr + s.stdout);
      assert.match(s.stdout, /number of transactions actually processed: 800\/800/);
      assert.match(s.stdout, /number of failed transactions: 0 /);
      const b = await pgbench(['-n', '-c', '8', '-j', '2', '-t', '25', url], { env });
      assert.equal(b.code, 0, b.stderr + b.stdout);
      assert.match(b.stdout, /number of transactions actually processed: 200\/200/);
      assert.match(b.stdout, /number of failed transactions: 0 /);
    });
  });

  describe('unix socket', () => {
    it('listens on unix_socket_dir/.s.PGSQL.<port> with unix_socket_mode', async () => {
      const sock = path.join(p().dir, `.s.PGSQL.${p().port}`);
      const st = await fs.stat(sock);
      assert.ok(st.isSocket(), `${sock} is not a socket`);
      assert.equal((st.mode & 0o777).toString(8), '770');
    });

    it('serves psql, pg and pgbench over the unix socket', async () => {
      const r = await psql(`host=${p().dir} port=${p().port} user=${USER} dbname=p0`, 'SELECT current_user, inet_client_addr() IS NOT NULL',
        { env: { PGPASSWORD: PASSWORD } });
      assert.equal(r.code, 0, r.stderr);
      // The pooler reaches PostgreSQL over TCP, whatever the client used.
      assert.equal(r.stdout.trim(), `${USER}|t`);

      const cl = await connectClient({ ...pgConfig(), host: p().dir });
      try {
        assert.deepEqual((await cl.query('SELECT $1::text AS v', ['over unix'])).rows, [{ v: 'over unix' }]);
      } finally {
        await cl.end();
      }

      const b = await pgbench(['-n', '-S', '-c', '4', '-t', '25', '-h', p().dir, '-p', String(p().port), '-U', USER, 'p1'],
        { env: { PGPASSWORD: PASSWORD } });
      assert.equal(b.code, 0, b.stderr + b.stdout);
      assert.match(b.stdout, /number of transactions actually processed: 100\/100/);
    });
  });

  it('leaves no more server connections than pool_size per pool', async () => {
    const perDb = await c().query<{ d: string; n: number }>(
      `SELECT datname AS d, count(*)::int AS n FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND usename = $1 GROUP BY datname ORDER BY datname`, 'postgres', [USER]);
    for (const row of perDb.rows) assert.ok(row.n <= POOL_SIZE, `${row.n} server connections to ${row.d}`);
  });
});
