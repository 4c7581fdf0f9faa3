// Real server-side failures under the real pooler: backends ended by pg_terminate_backend (linked
// to a client mid-transaction, or idle in the pool), PostgreSQL stopped or SIGKILLed and started
// again under a running pooler, and server sockets cut by the fault proxy in the middle of a large
// result or right after accept. PgBouncer's contract: the client that lost its server gets an
// error (never a truncated result that looks complete), its slot is freed, idle clients in
// transaction mode carry on with a new server (at most one failed query each), and a server
// connection that dies during login fails the waiting client instead of hanging it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { backendPid, type PgError, watchedClient, type Watched } from '../support/pg-client.js';
import { type IniSections, type Pooler } from '../support/pooler.js';
import { psql } from '../support/run-cmd.js';
import { findLogLine, type PoolerHandle, usePooler, useSetup } from '../support/suite.js';
import { within } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 20_000;

const ROLES = ['f_tx', 'f_idle', 'f_restart', 'f_cut', 'f_drop'];

/** ~20 MB of rows; the proxy cuts the server connection after 1 MB of it. */
const BIG_ROWS = 20_000;
const BIG_QUERY = `SELECT i, repeat('x', 1000) AS pad FROM generate_series(1, ${BIG_ROWS}) AS i`;
const CUT_AFTER = 1_000_000;

const setup = useSetup({ cluster: { name: 'failures' }, roles: ROLES });
const c = setup.c;

function connect(p: Pooler, user: string, db = 'p0'): Promise<Watched> {
  return watchedClient({
    connectionString: p.url(user, '', db),
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
  });
}

async function queryOnce<R extends pg.QueryResultRow>(p: Pooler, user: string, sql: string, db = 'p0'): Promise<R[]> {
  const { client } = await connect(p, user, db);
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Wait (bounded) for a pooler log line after `from` matching `pattern`; false if none came. */
async function sawLog(p: Pooler, from: number, pattern: RegExp, timeoutMs = 3_000): Promise<boolean> {
  return (await findLogLine(p, from, (l) => pattern.test(l), timeoutMs, 25)) !== null;
}

/** A pooler for the calling suite; the last of its output and the server log are printed if a test fails. */
function suitePooler(config: () => IniSections): PoolerHandle {
  return usePooler({ ini: config, stopTimeoutMs: 3_000, dumpLogs: { clusters: () => [setup.cluster], poolerLines: 300 } });
}

describe('backends terminated and sockets cut', () => {
  let cutProxy: FaultProxy | undefined;
  let dropProxy: FaultProxy | undefined;

  before(async () => {
    const pgAddr = { host: c().host, port: c().port };
    cutProxy = await startFaultProxy(pgAddr, { cutAfterBytes: CUT_AFTER });
    // Every connection is cut before the first server byte: the answer to the SSLRequest.
    dropProxy = await startFaultProxy(pgAddr, { cutAfterBytes: 0 });
  });
  const { p } = suitePooler(() => ({
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', query_wait_timeout: '5' },
    databases: {
      p0: `host=127.0.0.1 port=${c().port} dbname=p0`,
      cut: `host=127.0.0.1 port=${cutProxy!.port} dbname=p0`,
      drop: `host=127.0.0.1 port=${dropProxy!.port} dbname=p0`,
    },
  }));
  after(async () => {
    await cutProxy?.close();
    await dropProxy?.close();
  });

  it('pg_terminate_backend of a server linked mid-transaction errors that client and frees its slot', async () => {
    const a = await connect(p(), 'f_tx');
    try {
      await a.client.query('BEGIN');
      await a.client.query('CREATE TEMP TABLE t (x int)');
      assert.equal(await c().terminateBackends({ user: 'f_tx' }), 1);
      const err = await within(5_000, 'an error for the client whose server was terminated', a.error);
      assert.ok(err instanceof Error);
      await assert.rejects(a.client.query('SELECT 1'), 'the client went on as if its transaction still existed');
    } finally {
      await a.client.end().catch(() => undefined);
    }
    // default_pool_size=1: only a freed slot lets another client of the pool run.
    const rows = await within(8_000, 'a new client of the same pool (pool_size 1)', queryOnce<{ x: number }>(p(), 'f_tx', 'SELECT 1 AS x'));
    assert.deepEqual(rows, [{ x: 1 }]);
  });

  it('pg_terminate_backend of an idle pooled server: the next query of an idle client gets a new server', async () => {
    const { client } = await connect(p(), 'f_idle');
    try {
      const before = await backendPid(client);
      const mark = p().logs().length;
      assert.equal(await c().terminateBackends({ user: 'f_idle' }), 1);
      // Give the pooler the chance to read the FATAL its idle server got (both happen on sockets
      // the pooler reads; a client query racing it is not what this test is about).
      await sawLog(p(), mark, /server conn crashed|server error while idle|closing because/);
      const after = await backendPid(client);
      assert.ok(after !== undefined);
      assert.notEqual(after, before);
    } finally {
      await client.end();
    }
  });

  it('a server socket cut in the middle of a large result gives the client an error, never a short result', async () => {
    const cutsBefore = cutProxy!.cuts;
    const { client } = await connect(p(), 'f_cut', 'cut');
    try {
      const outcome = await client.query(BIG_QUERY).then(
        (r) => `a complete-looking result of ${r.rowCount} rows`,
        (e: PgError) => e,
      );
      assert.ok(outcome instanceof Error, `the client got ${String(outcome)} although the server connection was cut after ${CUT_AFTER} bytes`);
    } finally {
      await client.end().catch(() => undefined);
    }
    assert.equal(cutProxy!.cuts, cutsBefore + 1, 'the proxy did not cut the server connection');

    // psql too: a non-zero exit and no row count of a finished result.
    const r = await psql(p().url('f_cut', '', 'cut'), BIG_QUERY, { timeoutMs: 30_000 });
    assert.notEqual(r.code, 0, 'psql exited 0 for a result whose server connection was cut');
    assert.doesNotMatch(r.stdout.slice(-200), new RegExp(`^${BIG_ROWS}\\|x{1000}$`, 'm'), 'psql printed the last row');

    // The pooler is fine: the same database serves small results, the other one anything.
    assert.deepEqual(await queryOnce(p(), 'f_cut', 'SELECT 1 AS x', 'cut'), [{ x: 1 }]);
    assert.deepEqual(await queryOnce(p(), 'f_cut', 'SELECT count(*)::int AS n FROM generate_series(1, 1000)'), [{ n: 1000 }]);
  });

  it('a server connection closed right after connect is a failed login at once; the client waits for the retry until query_wait_timeout', async () => {
    // server_connect_timeout is the default 15 s; the socket is closed by the far end at once,
    // which the pooler sees immediately. As in PgBouncer, the client is not failed with that
    // (the next login may work): it waits for server_login_retry (15 s) or its own timeout.
    const t0 = Date.now();
    const mark = p().logs().length;
    const accepted = dropProxy!.accepted;
    const failure = connect(p(), 'f_drop', 'drop').then(
      () => assert.fail('logged in through a server that closes every connection'),
      (e: PgError) => e,
    );
    assert.ok(await sawLog(p(), mark, /server login failed: server closed the connection/), 'no failed login logged within 3 s');
    const err = await within(8_000, 'login through a server that closes the connection at once', failure);
    const ms = Date.now() - t0;
    assert.match(err.message, /query_wait_timeout/);
    assert.ok(ms >= 4_500, `the client got "${err.message}" after ${ms} ms, before query_wait_timeout (5 s)`);
    assert.equal(dropProxy!.accepted, accepted + 1, 'a new login within server_login_retry');
  });
});

describe('PostgreSQL restarted under a running pooler', () => {
  const { p } = suitePooler(() => ({
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '2', query_wait_timeout: '10' },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
  }));

  /** Each idle client's next query works, allowing at most one failed query per client. */
  async function idleClientsSurvive(outage: () => Promise<void>): Promise<void> {
    const clients = await Promise.all([0, 1, 2, 3].map(() => connect(p(), 'f_restart')));
    try {
      await Promise.all(clients.map(({ client }) => client.query('SELECT pg_sleep(0.1)')));
      await outage();
      const failures: string[] = [];
      for (const [i, { client }] of clients.entries()) {
        const first = await client.query<{ x: number }>('SELECT 1 AS x').then((r) => r.rows, (e: PgError) => e);
        if (!(first instanceof Error)) {
          assert.deepEqual(first, [{ x: 1 }]);
          continue;
        }
        failures.push(`client ${i}: ${first.message}`);
        const second = await client.query<{ x: number }>('SELECT 1 AS x').then((r) => r.rows, (e: PgError) => e);
        assert.ok(!(second instanceof Error),
          `client ${i} failed twice after the restart (${first.message}; then ${second instanceof Error ? second.message : ''})`);
        assert.deepEqual(second, [{ x: 1 }]);
      }
      if (failures.length > 0) console.error(`tolerated first-query failures: ${failures.join('; ')}`);
      // And new clients work.
      assert.deepEqual(await queryOnce(p(), 'f_restart', 'SELECT 2 AS x'), [{ x: 2 }]);
    } finally {
      await Promise.all(clients.map(({ client }) => client.end().catch(() => undefined)));
    }
  }

  it('idle clients carry on after a fast shutdown and start of PostgreSQL', () =>
    idleClientsSurvive(async () => {
      await c().stop();
      await c().start();
    }));

  it('idle clients carry on after PostgreSQL is SIGKILLed and started again', () =>
    idleClientsSurvive(async () => {
      await c().kill();
      await c().start();
    }));
});
