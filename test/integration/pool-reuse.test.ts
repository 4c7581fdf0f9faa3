// Which server a pool hands out next, and when a pool goes away:
// - server_round_robin = 0 (PgBouncer's default) reuses the most recently used idle server, so the
//   others age out; 1 hands idle servers out in turn, spreading load over a round-robin address;
//   a reload switches between them;
// - autodb_idle_timeout: a database known only through `*` that no client used for this long is
//   dropped with its pools, and its servers are closed; one a client still uses stays.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, endAll } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import type { IniSections, Pooler } from '../support/pooler.js';
import { usePooler, useSetup } from '../support/suite.js';
import { sleep, waitFor } from '../support/wait.js';

const USER = USERS.trust.name;
const setup = useSetup({ cluster: { name: 'pool-reuse' } });
const { c } = setup;

function connect(p: Pooler, database = 'p0'): Promise<pg.Client> {
  return connectClient({ host: '127.0.0.1', port: p.port, user: USER, database, connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
}

async function pid(client: pg.Client): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** Three idle servers in the pool: three clients each hold one in a transaction, then let go. */
async function threeIdleServers(p: Pooler): Promise<number[]> {
  const holders = await Promise.all([0, 1, 2].map(() => connect(p)));
  try {
    await Promise.all(holders.map((h) => h.query('BEGIN')));
    const pids = await Promise.all(holders.map(pid));
    await Promise.all(holders.map((h) => h.query('COMMIT')));
    return pids;
  } finally {
    await endAll(holders);
  }
}

function ini(extra: Record<string, string>): IniSections {
  return {
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', admin_users: USER, ...extra },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0`, '*': `host=127.0.0.1 port=${c().port}` },
  };
}

describe('server_round_robin', () => {
  const { p } = usePooler({ ini: () => ini({}), dumpLogs: { clusters: () => [setup.cluster] } });

  it('0 reuses the most recently used idle server; 1 (after a reload) hands them out in turn', async () => {
    const servers = await threeIdleServers(p());
    const client = await connect(p());
    try {
      const lifo = new Set<number>();
      for (let i = 0; i < 6; i++) lifo.add(await pid(client));
      assert.equal(lifo.size, 1, `server_round_robin = 0 used ${[...lifo].join(', ')}`);

      await p().writeIni(ini({ server_round_robin: '1' }));
      p().reload();
      await p().waitForLog(/configuration reloaded/);
      const turns: number[] = [];
      for (let i = 0; i < 6; i++) turns.push(await pid(client));
      assert.deepEqual(new Set(turns), new Set(servers), `server_round_robin = 1 used ${turns.join(', ')}`);
      // Each of the three in turn, twice.
      assert.deepEqual(turns.slice(3), turns.slice(0, 3));
    } finally {
      await client.end();
    }
  });
});

describe('autodb_idle_timeout', () => {
  const { p } = usePooler({ ini: () => ini({ autodb_idle_timeout: '1' }), dumpLogs: { clusters: () => [setup.cluster] } });

  async function pools(): Promise<string[]> {
    const admin = await connect(p(), 'pgbouncer');
    try {
      return (await admin.query<{ database: string }>('SHOW POOLS')).rows.map((r) => r.database);
    } finally {
      await admin.end();
    }
  }

  async function backendsOf(db: string): Promise<number> {
    const r = await c().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = $1 AND usename = $2", 'postgres', [db, USER]);
    return r.rows[0]!.n;
  }

  it('drops a `*` database no client used for that long, closing its servers; keeps one in use and those with an entry', async () => {
    const used = await connect(p(), 'p1');
    try {
      const gone = await connect(p(), 'postgres');
      await gone.query('SELECT 1');
      await used.query('SELECT 1');
      const p0 = await connect(p(), 'p0');
      await p0.query('SELECT 1');
      await endAll([gone, p0]);
      assert.equal(await backendsOf('postgres'), 1);
      await waitFor('the idle auto-database to be dropped', async () => !(await pools()).includes('postgres'), 5_000);
      await waitFor('its server to close', async () => (await backendsOf('postgres')) === 0, 5_000);
      await sleep(1_500);
      const left = await pools();
      assert.ok(left.includes('p1'), `the auto-database in use went: ${left.join(', ')}`);
      assert.ok(left.includes('p0'), `the [databases] entry went: ${left.join(', ')}`);
      assert.deepEqual((await used.query('SELECT 2 AS x')).rows, [{ x: 2 }]);
      assert.ok(p().logs().some((l) => /dropping database 'postgres'/.test(l)));
    } finally {
      await used.end();
    }
  });
});
