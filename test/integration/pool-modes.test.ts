// Pool modes through the real pooler, against a real PostgreSQL: when a server is handed back,
// who gets it next, and what is left of the previous client's session when they do. PgBouncer's
// rules are the expected answer: session mode keeps one backend per client session and runs
// server_reset_query when the client leaves; transaction mode hands the server back at the
// ReadyForQuery that ends a transaction (never inside one, nor inside an extended-protocol
// pipeline that has not reached its last Sync); statement mode refuses transaction blocks.
//
// Backends are told apart by pg_backend_pid(); what the pooler sends itself (reset and check
// queries) is read back from PostgreSQL's own statement log.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { cstr, int16, int32, msg } from '../support/bytes.js';
import { backendPid, connectClient, endAll, type PgError } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { RawConn, rows, type BackendMessage } from '../support/raw-client.js';
import { pgbench } from '../support/run-cmd.js';
import { dumpLogsOnFailure, required } from '../support/suite.js';
import { sleep } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 15_000;
const USER = USERS.trust.name;
/** A role only the reset/check pooler uses, so its statements can be picked out of the log. */
const LOGGED_USER = 'loggeduser';

// ------------------------------------------------------------------------------------------------
// Raw protocol client (hand-built bytes out, backend messages in)

/** Connect and log in (trust): returns once the first ReadyForQuery arrived. */
async function rawLogin(port: number, database: string): Promise<RawConn> {
  return (await RawConn.login(port, { user: USER, database }, { timeoutMs: QUERY_TIMEOUT_MS })).conn;
}

/** Extended-protocol messages for one unnamed statement, without Sync. */
function parseBindExecute(sql: string): Buffer {
  return Buffer.concat([
    msg('P', cstr(''), cstr(sql), int16(0)),
    msg('B', cstr(''), cstr(''), int16(0), int16(0), int16(0)),
    msg('E', cstr(''), int32(0)),
  ]);
}

const SYNC = msg('S');
const FLUSH = msg('H');

/** The first column of every DataRow, as text. */
function dataRows(msgs: BackendMessage[]): string[] {
  return rows(msgs).map((r) => r[0] ?? '');
}

// ------------------------------------------------------------------------------------------------
// pg helpers

function connect(port: number, database: string, user: string = USER): Promise<pg.Client> {
  return connectClient({
    host: '127.0.0.1', port, user, database,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS,
  });
}

// ------------------------------------------------------------------------------------------------

describe('pool modes', () => {
  let cluster: Cluster | undefined;
  let pooler: Pooler | undefined;
  /** server_reset_query_always + server_check_delay=0, for the logged role. */
  let checking: Pooler | undefined;
  const c = required(() => cluster, 'cluster');
  const port = (): number => required(() => pooler, 'pooler')().port;
  const checkingPort = (): number => required(() => checking, 'pooler')().port;

  before(async () => {
    cluster = await startCluster({ name: 'pool-modes' });
    const target = `host=127.0.0.1 port=${cluster.port}`;
    // Statement logging only for the role whose pooler-sent queries are counted.
    await cluster.query(`CREATE ROLE ${LOGGED_USER} LOGIN; ALTER ROLE ${LOGGED_USER} SET log_statement = 'all'`);
    // pgbench tables live in p1, made directly on PostgreSQL.
    const init = await pgbench(['-i', '-q', '-s', '1', `postgresql://${USER}@127.0.0.1:${cluster.port}/p1`]);
    assert.equal(init.code, 0, init.stderr);
    [pooler, checking] = await Promise.all([
      startPooler({
        pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '2', max_client_conn: '200' },
        databases: {
          tx: `${target} dbname=p0 pool_mode=transaction pool_size=2`,
          stmt: `${target} dbname=p0 pool_mode=statement pool_size=2`,
          sess: `${target} dbname=p0 pool_mode=session pool_size=2`,
          sess1: `${target} dbname=p0 pool_mode=session pool_size=1`,
          bench: `${target} dbname=p1 pool_mode=transaction pool_size=4`,
        },
      }),
      startPooler({
        pgbouncer: {
          auth_type: 'trust',
          pool_mode: 'transaction',
          default_pool_size: '1',
          server_reset_query_always: '1',
          server_check_delay: '0',
          server_check_query: "SELECT 'pgpool-check'",
        },
        databases: { p0: `${target} dbname=p0` },
      }),
    ]);
  });
  dumpLogsOnFailure({ clusters: () => [cluster], poolers: () => [pooler, checking], poolerLines: 300, clusterLines: 200 });
  after(async () => {
    await Promise.all([pooler?.stop(), checking?.stop()]);
    await cluster?.destroy();
  });

  describe('transaction mode', () => {
    it('shares pool_size servers among 10 concurrent clients', async () => {
      const clients = await Promise.all(Array.from({ length: 10 }, () => connect(port(), 'tx')));
      try {
        const seen = await Promise.all(clients.map(async (cl) => {
          const pids = new Set<number>();
          for (let i = 0; i < 20; i++) pids.add(await backendPid(cl));
          return pids;
        }));
        const all = new Set(seen.flatMap((s) => [...s]));
        assert.ok(all.size <= 2, `${all.size} distinct backends for pool_size 2: ${[...all].join(', ')}`);
        // 10 clients, all connected at once, all answered, by at most 2 backends: shared.
        assert.ok(seen.every((s) => s.size >= 1));
      } finally {
        await endAll(clients);
      }
    });

    it('moves a client to another backend when its last one is busy in someone else\'s transaction', async () => {
      const [x, y] = await Promise.all([connect(port(), 'tx'), connect(port(), 'tx')]);
      try {
        const a = await backendPid(x);
        await y.query('BEGIN');
        // The only idle server is the one x just gave back, so y's transaction holds it.
        const held = await backendPid(y);
        assert.equal(held, a);
        const b = await backendPid(x);
        assert.notEqual(b, a, 'x got the backend held by y\'s open transaction');
        await y.query('COMMIT');
      } finally {
        await endAll([x, y]);
      }
    });

    it('keeps a transaction on one backend from BEGIN to COMMIT while others run', async () => {
      const clients = await Promise.all(Array.from({ length: 10 }, () => connect(port(), 'tx')));
      try {
        await Promise.all(clients.map(async (cl) => {
          for (let t = 0; t < 5; t++) {
            await cl.query('BEGIN');
            const first = await backendPid(cl);
            await cl.query('SELECT pg_sleep(0.002)');
            const second = await backendPid(cl);
            const xid = await cl.query<{ x: string }>('SELECT txid_current()::text AS x');
            const xid2 = await cl.query<{ x: string }>('SELECT txid_current()::text AS x');
            await cl.query('COMMIT');
            assert.equal(second, first, 'backend changed inside a transaction');
            assert.equal(xid2.rows[0]?.x, xid.rows[0]?.x, 'transaction id changed inside a transaction');
          }
        }));
      } finally {
        await endAll(clients);
      }
    });

    it('keeps a failed transaction\'s server until ROLLBACK', async () => {
      const [a, ...others] = await Promise.all(Array.from({ length: 4 }, () => connect(port(), 'tx')));
      assert.ok(a);
      try {
        await a.query('BEGIN');
        const held = await backendPid(a);
        await assert.rejects(a.query('SELECT 1/0'), { code: '22012' });
        // Others keep working on the other server and never get a's.
        const pids = await Promise.all(others.map(async (cl) => {
          const out: number[] = [];
          for (let i = 0; i < 10; i++) out.push(await backendPid(cl));
          return out;
        }));
        assert.ok(!pids.flat().includes(held), 'another client was given the server of a failed transaction');
        // Still on that server: PostgreSQL says the transaction is aborted.
        await assert.rejects(a.query('SELECT 1'), { code: '25P02' });
        await a.query('ROLLBACK');
        assert.deepEqual((await a.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      } finally {
        await endAll([a, ...others]);
      }
    });

    it('keeps an extended-protocol pipeline on one server until its Sync', async () => {
      const raw = await rawLogin(port(), 'tx');
      const others = await Promise.all(Array.from({ length: 3 }, () => connect(port(), 'tx')));
      try {
        raw.send(Buffer.concat([parseBindExecute('SELECT pg_backend_pid()'), FLUSH]));
        const first = dataRows(await raw.until('C'));
        assert.equal(first.length, 1);
        const held = Number(first[0]);
        // The pipeline is open (no Sync yet): its server must not serve anyone else.
        const pids = await Promise.all(others.map(async (cl) => {
          const out: number[] = [];
          for (let i = 0; i < 10; i++) out.push(await backendPid(cl));
          return out;
        }));
        assert.ok(!pids.flat().includes(held), 'another client got the server of an open pipeline');
        raw.send(Buffer.concat([parseBindExecute('SELECT pg_backend_pid()'), SYNC]));
        const second = dataRows(await raw.until('Z'));
        assert.deepEqual(second, [String(held)], 'the pipeline moved to another backend before its Sync');
      } finally {
        raw.destroy();
        await endAll(others);
      }
    });

    it('keeps a pipeline of several Syncs on one server until the last ReadyForQuery', async () => {
      const raw = await rawLogin(port(), 'tx');
      const others = await Promise.all(Array.from({ length: 3 }, () => connect(port(), 'tx')));
      const stop = { now: false };
      // Concurrent load, so a server handed back early would be taken at once (and its
      // remaining replies would reach the wrong client).
      const load = Promise.all(others.map(async (cl) => {
        while (!stop.now) await backendPid(cl);
      }));
      load.catch(() => undefined);
      try {
        for (let round = 0; round < 10; round++) {
          const n = 20;
          const parts: Buffer[] = [];
          for (let i = 0; i < n; i++) parts.push(parseBindExecute(`SELECT pg_backend_pid()::text || ':${i}'`), SYNC);
          // One write: 20 Syncs in flight; a simple Query at the end makes 21 ReadyForQuery.
          parts.push(msg('Q', cstr('SELECT pg_backend_pid()::text || \':q\'')));
          raw.send(Buffer.concat(parts));
          const rows: string[] = [];
          for (let z = 0; z < n + 1; z++) rows.push(...dataRows(await raw.until('Z')));
          assert.equal(rows.length, n + 1);
          const backends = new Set(rows.map((r) => r.split(':')[0]));
          assert.equal(backends.size, 1, `one pipeline ran on ${backends.size} backends: ${rows.join(' ')}`);
          assert.deepEqual(rows.map((r) => r.split(':')[1]), [...Array.from({ length: n }, (_, i) => String(i)), 'q']);
        }
        stop.now = true;
        // The other clients' queries all succeeded too.
        await load;
      } finally {
        stop.now = true;
        await load.catch(() => undefined);
        raw.destroy();
        await endAll(others);
      }
    });

    it('runs pgbench -S with 16 clients with no failed transaction', async () => {
      const r = await pgbench(['-n', '-S', '-c', '16', '-j', '2', '-t', '100', `postgresql://${USER}@127.0.0.1:${port()}/bench`]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /number of transactions actually processed: 1600\/1600/);
      assert.match(r.stdout, /number of failed transactions: 0 /);
    });

    it('runs pgbench -S over the extended protocol (unnamed statements) with 16 clients', async () => {
      const r = await pgbench(['-n', '-S', '-M', 'extended', '-c', '16', '-j', '2', '-t', '100', `postgresql://${USER}@127.0.0.1:${port()}/bench`]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /number of transactions actually processed: 1600\/1600/);
      assert.match(r.stdout, /number of failed transactions: 0 /);
    });

    it('runs the pgbench TPC-B script with 8 clients with no failed transaction', async () => {
      const r = await pgbench(['-n', '-c', '8', '-j', '2', '-t', '50', `postgresql://${USER}@127.0.0.1:${port()}/bench`]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /number of transactions actually processed: 400\/400/);
      assert.match(r.stdout, /number of failed transactions: 0 /);
      // Every transaction committed: the history table grew by exactly one row per transaction.
      const h = await c().query<{ n: number }>('SELECT count(*)::int AS n FROM pgbench_history', 'p1');
      assert.equal(h.rows[0]?.n, 400);
    });
  });

  describe('statement mode', () => {
    it('runs single statements, sharing servers', async () => {
      const clients = await Promise.all(Array.from({ length: 10 }, () => connect(port(), 'stmt')));
      try {
        const pids = await Promise.all(clients.map(async (cl) => {
          const out: number[] = [];
          for (let i = 0; i < 10; i++) out.push(await backendPid(cl));
          return out;
        }));
        assert.ok(new Set(pids.flat()).size <= 2);
      } finally {
        await endAll(clients);
      }
    });

    it('refuses a transaction block with "transaction blocks not allowed in statement pooling mode"', async () => {
      const cl = await connect(port(), 'stmt');
      const lateError = new Promise<PgError>((resolve) => cl.on('error', resolve));
      try {
        // PgBouncer closes the client at the ReadyForQuery that shows the open transaction,
        // without forwarding it: the query itself fails with FATAL 08P01.
        const outcome = await cl.query('BEGIN; SELECT 1').then(
          async (r) => {
            const late = await Promise.race([lateError, sleep(2_000).then(() => null)]);
            return `the query succeeded (command ${r.command}), then ${late === null ? 'nothing' : `an error event: ${late.severity} ${late.code} ${late.message}`}`;
          },
          (e: PgError) => e,
        );
        assert.ok(outcome instanceof Error, String(outcome));
        assert.match(outcome.message, /transaction blocks not allowed in statement pooling mode/);
        assert.equal(outcome.code, '08P01');
        assert.equal(outcome.severity, 'FATAL');
      } finally {
        await cl.end().catch(() => undefined);
      }
      // The pool is still usable afterwards.
      const again = await connect(port(), 'stmt');
      try {
        assert.deepEqual((await again.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      } finally {
        await again.end();
      }
    });
  });

  describe('session mode', () => {
    it('keeps one backend per client session; 10 clients share 2 servers one session at a time', async () => {
      const sessions = await Promise.all(Array.from({ length: 10 }, async () => {
        const cl = await connect(port(), 'sess');
        try {
          const pids: number[] = [];
          for (let i = 0; i < 5; i++) {
            pids.push(await backendPid(cl));
            await sleep(5);
          }
          return pids;
        } finally {
          await cl.end();
        }
      }));
      for (const pids of sessions) assert.equal(new Set(pids).size, 1, `a session moved between backends: ${pids.join(',')}`);
      const all = new Set(sessions.flat());
      assert.ok(all.size <= 2, `${all.size} backends for pool_size 2`);
    });

    it('runs server_reset_query (DISCARD ALL) when the client leaves', async () => {
      const one = await connect(port(), 'sess1');
      const first = await backendPid(one);
      await one.query(`CREATE TEMP TABLE left_behind (x int);
        SET work_mem = '1234kB';
        PREPARE left_stmt AS SELECT 1`);
      await one.end();
      const two = await connect(port(), 'sess1');
      try {
        assert.equal(await backendPid(two), first, 'pool_size 1: the second client gets the same backend');
        const r = await two.query<{ t: string | null; wm: string; n: number }>(
          `SELECT to_regclass('pg_temp.left_behind')::text AS t, current_setting('work_mem') AS wm,
                  (SELECT count(*)::int FROM pg_prepared_statements) AS n`);
        assert.deepEqual(r.rows, [{ t: null, wm: '4MB', n: 0 }]);
      } finally {
        await two.end();
      }
    });
  });

  describe('server_reset_query_always and server_check_query', () => {
    const logged = async (text: string): Promise<number> => {
      const log = await c().readLog();
      return log.split('\n').filter((l) => l.includes(`${LOGGED_USER}@p0 LOG:  statement: ${text}`)).length;
    };

    it('runs server_reset_query after every transaction in transaction mode when asked', async () => {
      const cl = await connect(checkingPort(), 'p0', LOGGED_USER);
      try {
        const before = await logged('DISCARD ALL');
        const first = await backendPid(cl);
        await cl.query(`CREATE TEMP TABLE gone (x int)`);
        await cl.query(`SET work_mem = '1234kB'`);
        // pool_size 1: the same backend, but reset between transactions.
        assert.equal(await backendPid(cl), first);
        const r = await cl.query<{ t: string | null; wm: string }>(
          `SELECT to_regclass('pg_temp.gone')::text AS t, current_setting('work_mem') AS wm`);
        assert.deepEqual(r.rows, [{ t: null, wm: '4MB' }]);
        // Transactions so far: pid, CREATE, SET, pid, SELECT: a reset after each.
        let after = 0;
        for (let i = 0; i < 40 && (after = await logged('DISCARD ALL')) - before < 4; i++) await sleep(50);
        assert.ok(after - before >= 4, `${after - before} DISCARD ALL logged for 5 transactions`);
      } finally {
        await cl.end();
      }
    });

    it('runs server_check_query before every reuse with server_check_delay = 0', async () => {
      const check = "SELECT 'pgpool-check'";
      const before = await logged(check);
      const cl = await connect(checkingPort(), 'p0', LOGGED_USER);
      try {
        for (let i = 0; i < 5; i++) await cl.query('SELECT 1');
      } finally {
        await cl.end();
      }
      let after = 0;
      for (let i = 0; i < 40 && (after = await logged(check)) - before < 4; i++) await sleep(50);
      // Five transactions on one server: at least the four reuses were checked first.
      assert.ok(after - before >= 4, `${after - before} server_check_query runs logged for 5 reuses`);
    });
  });
});
