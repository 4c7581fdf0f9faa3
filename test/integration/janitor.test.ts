// What the janitor does that PgBouncer 1.25 added, through the real pooler and a real PostgreSQL:
// - server_fast_close: in session mode a server marked close_needed (RECONNECT, its database
//   changed on reload) is closed at the end of the client's transaction, and the client gets
//   "database configuration changed", instead of keeping the old server until it leaves;
// - transaction_timeout: a transaction (or a single statement) open longer than this closes the
//   client and its server, globally or per [users] entry;
// - query_wait_notify: a client queued this long for a server gets PgBouncer's NOTICE, once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, endAll, watchedClient, type PgError } from '../support/pg-client.js';
import { psql } from '../support/run-cmd.js';
import type { IniSections, Pooler } from '../support/pooler.js';
import { usePooler, useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const ROLES = ['r_fast', 'r_tt', 'r_tt_long', 'r_wait'];
const setup = useSetup({ cluster: { name: 'janitor' }, roles: ROLES, dumpLogs: { clusterLines: 50 } });
const { c } = setup;

function ini(pgbouncer: Record<string, string>, users: Record<string, string> = {}): () => IniSections {
  return () => ({
    pgbouncer: { auth_type: 'trust', admin_users: 'r_fast', ...pgbouncer },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0`, p1: `host=127.0.0.1 port=${c().port} dbname=p1` },
    ...(Object.keys(users).length > 0 ? { users } : {}),
  });
}

function config(p: Pooler, user: string, db = 'p0'): pg.ClientConfig {
  return { host: '127.0.0.1', port: p.port, user, database: db, connectionTimeoutMillis: 10_000, query_timeout: 15_000 };
}

async function pid(client: pg.Client): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

async function backendAlive(backend: number): Promise<boolean> {
  const r = await c().query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', 'postgres', [backend]);
  return r.rows[0]!.n === 1;
}

async function consoleCommand(p: Pooler, sql: string): Promise<void> {
  const admin = await connectClient(config(p, 'r_fast', 'pgbouncer'));
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

describe('server_fast_close', () => {
  const { p } = usePooler({ ini: ini({ pool_mode: 'session', server_fast_close: '1' }), dumpLogs: { clusters: () => [setup.cluster] } });
  const { p: slow } = usePooler({ ini: ini({ pool_mode: 'session' }) });

  it('lets the transaction finish, then closes the session with "database configuration changed"', async () => {
    const { client, error } = await watchedClient(config(p(), 'r_fast'));
    try {
      const backend = await pid(client);
      await client.query('BEGIN');
      await client.query('CREATE TEMP TABLE t (a int)');
      await consoleCommand(p(), 'RECONNECT p0');
      // Several janitor rounds: the open transaction is not cut.
      await sleep(1_000);
      await client.query('INSERT INTO t VALUES (1)');
      await client.query('COMMIT');
      const err = await within(3_000, 'the close after COMMIT', error);
      assert.equal(err.message, 'database configuration changed');
      assert.equal(err.code, '08P01');
      await waitFor('the old backend to exit', async () => !(await backendAlive(backend)), 5_000);
    } finally {
      await client.end().catch(() => undefined);
    }
    // A new session gets a new server.
    const next = await connectClient(config(p(), 'r_fast'));
    assert.deepEqual((await next.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    await next.end();
  });

  it('closes an idle session at once on a reload that changes its database', async () => {
    const { client, error } = await watchedClient(config(p(), 'r_fast', 'p1'));
    try {
      await client.query('SELECT 1');
      const next = ini({ pool_mode: 'session', server_fast_close: '1' })();
      next.databases!.p1 = `host=127.0.0.1 port=${c().port} dbname=p1 application_name=changed`;
      await p().writeIni(next);
      await consoleCommand(p(), 'RELOAD');
      assert.equal((await within(3_000, 'the close after RELOAD', error)).message, 'database configuration changed');
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('without it, a session keeps its server across RECONNECT until it leaves', async () => {
    const client = await connectClient(config(slow(), 'r_fast'));
    try {
      const before = await pid(client);
      await consoleCommand(slow(), 'RECONNECT p0');
      await sleep(1_000);
      assert.equal(await pid(client), before);
    } finally {
      await client.end();
    }
  });
});

describe('transaction_timeout', () => {
  const { p } = usePooler({
    ini: ini({ pool_mode: 'transaction', transaction_timeout: '1' }, { r_tt_long: 'transaction_timeout=0' }),
    dumpLogs: { clusters: () => [setup.cluster] },
  });

  async function endsWithTimeout(work: (client: pg.Client) => Promise<unknown>): Promise<void> {
    const { client, error } = await watchedClient(config(p(), 'r_tt'));
    try {
      const backend = await pid(client);
      const seen = await work(client).then(
        () => assert.fail('the transaction outlived transaction_timeout'),
        (e: PgError) => e,
      );
      const err = seen.code !== undefined ? seen : await within(1_000, 'the FATAL', error);
      assert.equal(err.code, '25P04');
      assert.equal(err.message, 'transaction timeout');
      await waitFor('its backend to exit', async () => !(await backendAlive(backend)), 5_000);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  it('ends a transaction that runs longer than transaction_timeout, with its server', async () => {
    await endsWithTimeout(async (cl) => {
      await cl.query('BEGIN');
      await cl.query('SELECT pg_sleep(3)');
    });
  });

  it('ends a transaction left idle past it, and a single statement that runs past it', async () => {
    await endsWithTimeout(async (cl) => {
      await cl.query('BEGIN');
      await cl.query('SELECT 1');
      await sleep(2_000);
      await cl.query('SELECT 2');
    });
    await endsWithTimeout((cl) => cl.query('SELECT pg_sleep(3)'));
  });

  it('leaves transactions shorter than it alone, however long the session', async () => {
    const client = await connectClient(config(p(), 'r_tt'));
    try {
      for (let i = 0; i < 6; i++) {
        await client.query('BEGIN');
        await client.query('SELECT pg_sleep(0.3)');
        await client.query('COMMIT');
      }
    } finally {
      await client.end();
    }
  });

  it('a [users] transaction_timeout replaces the global one (0 = none for that user)', async () => {
    const client = await connectClient(config(p(), 'r_tt_long'));
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_sleep(2)');
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
  });

  it('psql sees PgBouncer\'s message', async () => {
    const r = await psql(`postgresql://r_tt@127.0.0.1:${p().port}/p0`, 'BEGIN; SELECT pg_sleep(3); COMMIT');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /FATAL: {2}transaction timeout/);
  });
});

describe('query_wait_notify', () => {
  const { p } = usePooler({
    ini: ini({ pool_mode: 'transaction', default_pool_size: '1', query_wait_notify: '1' }),
    dumpLogs: { clusters: () => [setup.cluster] },
  });

  it('tells a client queued longer than query_wait_notify, once per wait, and serves it when a server frees up', async () => {
    const holder = await connectClient(config(p(), 'r_wait'));
    const waiter = await connectClient(config(p(), 'r_wait'));
    const notices: { message?: string; severity?: string; code?: string }[] = [];
    waiter.on('notice', (n) => notices.push(n));
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      const queued = waiter.query<{ x: number }>('SELECT 7 AS x');
      await sleep(2_500);
      await holder.query('COMMIT');
      assert.deepEqual((await queued).rows, [{ x: 7 }]);
      assert.equal(notices.length, 1, JSON.stringify(notices));
      assert.equal(notices[0]!.message, 'No server connection available in postgres backend, client being queued');
      assert.equal(notices[0]!.severity, 'NOTICE');
      assert.equal(notices[0]!.code, '00000');
      // A query that gets a server at once gets no notice.
      await waiter.query('SELECT 1');
      assert.equal(notices.length, 1);
    } finally {
      await endAll([holder, waiter]);
    }
  });
});
