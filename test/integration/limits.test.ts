// Connection limits through the real pooler, judged by what PostgreSQL itself sees: the backends in
// pg_stat_activity, sampled while real clients load the pool. PgBouncer's rules (reference §1.2):
// max_client_conn refuses the N+1th client with 53300; default_pool_size, a [databases] pool_size,
// max_db_connections (across users) and max_user_connections (across databases) cap the servers;
// min_pool_size fills a pool that has a client, and a forced user's pool from startup, within the
// caps; [users] settings of a forced user's database are that user's; the reserve pool opens only
// to clients that waited reserve_pool_timeout; query_wait_timeout ends a client that waited too
// long for a server.
//
// Each limit gets its own roles, so one test's idle servers never count in another's samples.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, type PgError } from '../support/pg-client.js';
import { type IniSections, type Pooler } from '../support/pooler.js';
import { type PoolerHandle, usePooler, useSetup } from '../support/suite.js';
import { sleep, waitFor } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 20_000;
const SAMPLE_EVERY_MS = 25;

/** Roles created for this file (trusted by the harness hba's `host all all all trust`). */
const ROLES = [
  'r_default', 'r_sized', 'r_min', 'r_mdb1', 'r_mdb2', 'r_muc', 'r_reserve', 'r_wait', 'r_maxcl', 'r_lowered',
  'r_minf', 'r_minmdb', 'r_minmu', 'r_forced', 'r_fsmall', 'r_small',
  'r_ev1', 'r_ev2', 'r_ev3', 'r_ev4', 'r_ev5',
];

const setup = useSetup({ cluster: { name: 'limits' }, roles: ROLES });
const c = setup.c;

/** A pooler for the calling suite; its output and the server log are printed if a test fails. */
function suitePooler(config: () => IniSections): PoolerHandle {
  return usePooler({ ini: config, stopTimeoutMs: 3_000, dumpLogs: { clusters: () => [setup.cluster] } });
}

function connect(p: Pooler, user: string, db: string): Promise<pg.Client> {
  // Pooler errors outside a query arrive as events; the test looks at queries instead.
  return connectClient({
    connectionString: p.url(user, '', db),
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
  });
}

/** `n` clients, connected at once, each running `sql`; resolves when all are done. */
async function load(p: Pooler, user: string, db: string, n: number, sql: string): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async () => {
      const client = await connect(p, user, db);
      try {
        await client.query(sql);
      } finally {
        await client.end().catch(() => undefined);
      }
    }),
  );
}

interface Sample {
  /** ms since sampling started, taken when the count came back (the snapshot is older). */
  at: number;
  n: number;
}

/**
 * Count the client backends of `users` (optionally of `dbs` only) every SAMPLE_EVERY_MS over a
 * private superuser connection until `work` settles; `work`'s failure is rethrown after sampling.
 */
async function sampleWhile(users: string[], work: () => Promise<void>, dbs: string[] | null = null): Promise<{ max: number; sustained: number; samples: Sample[] }> {
  const probe = await connectClient({ host: c().socketDir, port: c().port, user: 'postgres', database: 'postgres' });
  const samples: Sample[] = [];
  const t0 = Date.now();
  let done = false;
  const running = work().finally(() => {
    done = true;
  });
  // Awaited below; this only keeps a failure during sampling from counting as unhandled.
  running.catch(() => undefined);
  try {
    while (!done) {
      const r = await probe.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND usename = ANY($1) AND ($2::text[] IS NULL OR datname = ANY($2))`,
        [users, dbs],
      );
      samples.push({ at: Date.now() - t0, n: r.rows[0]?.n ?? -1 });
      await sleep(SAMPLE_EVERY_MS);
    }
    await running;
  } finally {
    await probe.end().catch(() => undefined);
  }
  return { max: Math.max(0, ...samples.map((s) => s.n)), sustained: sustainedMax(samples), samples };
}

/**
 * The highest count seen in two consecutive samples. A cap that spans pools is kept by evicting an
 * idle server of another pool and opening a new one at once (PgBouncer evict_connection); the
 * evicted backend may still be listed for the few milliseconds it takes to exit, so one sample can
 * be one over the cap even when the pooler is right. An overshoot that is still there a sample
 * later is the pooler's.
 */
function sustainedMax(samples: Sample[]): number {
  let max = 0;
  for (let i = 0; i + 1 < samples.length; i++) max = Math.max(max, Math.min(samples[i]!.n, samples[i + 1]!.n));
  return max;
}

/** Name the phase in a failure (a bare "query_wait_timeout" does not say which load it ended). */
function phase<T>(name: string, work: Promise<T>): Promise<T> {
  return work.catch((e: Error) => assert.fail(`${name}: ${e.message}`));
}

async function backendCount(users: string[]): Promise<number> {
  const r = await c().query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = ANY($1)`,
    'postgres', [users]);
  return r.rows[0]?.n ?? -1;
}

function ini(pgbouncer: Record<string, string>, databases: Record<string, string>, users: Record<string, string> = {}): IniSections {
  return {
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', ...pgbouncer },
    databases,
    ...(Object.keys(users).length > 0 ? { users } : {}),
  };
}

const target = (dbname: string, extra = ''): string => `host=127.0.0.1 port=${c().port} dbname=${dbname} ${extra}`.trim();

describe('pool sizes and server connection caps', () => {
  const { p } = suitePooler(() => ini(
    { default_pool_size: '2', query_wait_timeout: '5' },
    {
      p0: target('p0'),
      sized: target('p0', 'pool_size=3'),
      // PgBouncer fills min_pool_size only up to pool_size (janitor.c check_pool_size).
      minp: target('p0', 'pool_size=5 min_pool_size=3'),
      mdb: target('p0', 'pool_size=5 max_db_connections=2'),
      mu0: target('p0', 'pool_size=5'),
      mu1: target('p1', 'pool_size=5'),
      minforced: target('p0', 'user=r_minf pool_size=5 min_pool_size=2'),
      minmdb: target('p0', 'pool_size=5 min_pool_size=5 max_db_connections=2'),
      minmu: target('p1', 'pool_size=5 min_pool_size=5'),
      forced: target('p0', 'user=r_forced pool_size=2'),
      forcedsmall: target('p1', 'user=r_fsmall pool_size=3'),
      evict: target('p1', 'max_db_connections=4'),
    },
    { r_muc: 'max_user_connections=2', r_minmu: 'max_user_connections=2', r_small: 'pool_size=1', r_fsmall: 'pool_size=1' },
  ));

  it('never opens more than default_pool_size servers for ten busy clients of one user and database', async () => {
    const { max, samples } = await sampleWhile(['r_default'], () => load(p(), 'r_default', 'p0', 10, 'SELECT pg_sleep(0.3)'));
    assert.ok(max <= 2, `PostgreSQL saw ${max} backends with default_pool_size=2: ${JSON.stringify(samples)}`);
    assert.equal(max, 2, 'ten waiting clients should use the whole pool');
  });

  it('takes pool_size from the [databases] entry over default_pool_size', async () => {
    const { max, samples } = await sampleWhile(['r_sized'], () => load(p(), 'r_sized', 'sized', 10, 'SELECT pg_sleep(0.3)'));
    assert.ok(max <= 3, `PostgreSQL saw ${max} backends with pool_size=3: ${JSON.stringify(samples)}`);
    assert.equal(max, 3, 'ten waiting clients should use the whole pool of 3 (not default_pool_size=2)');
  });

  it('grows the servers of a pool with a client to min_pool_size, and no further', async () => {
    assert.equal(await backendCount(['r_min']), 0);
    const client = await connect(p(), 'r_min', 'minp');
    try {
      let seen = 0;
      await waitFor('min_pool_size=3 server connections', async () => (seen = await backendCount(['r_min'])) >= 3, 3_000)
        .catch((e: Error) => assert.fail(`${e.message}: PostgreSQL saw ${seen} backends of r_min`));
      // A few janitor rounds later it has not overshot.
      await sleep(1_000);
      assert.equal(await backendCount(['r_min']), 3);
      assert.deepEqual((await client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    } finally {
      await client.end();
    }
  });

  it('opens min_pool_size servers of a database with a forced user at startup, before any client (PgBouncer 1.21+)', async () => {
    let seen = 0;
    await waitFor('min_pool_size=2 servers of r_minf', async () => (seen = await backendCount(['r_minf'])) >= 2, 3_000)
      .catch((e: Error) => assert.fail(`${e.message}: PostgreSQL saw ${seen} backends of r_minf`));
    await sleep(1_000);
    assert.equal(await backendCount(['r_minf']), 2);
  });

  it('fills min_pool_size only up to max_db_connections and max_user_connections, evicting nothing', async () => {
    for (const [user, db] of [['r_minmdb', 'minmdb'], ['r_minmu', 'minmu']] as const) {
      const from = p().logs().length;
      const { sustained, samples } = await sampleWhile([user], () => load(p(), user, db, 1, 'SELECT pg_sleep(1.5)'));
      assert.equal(sustained, 2, `${db}: min_pool_size=5 under a cap of 2: PostgreSQL saw ${JSON.stringify(samples)}`);
      assert.ok(!p().logs().slice(from).some((l) => l.includes('making room for another pool')), `${db}: min_pool_size evicted a server`);
    }
  });

  it('sizes a forced user\'s pool by that user\'s [users] pool_size, not by the client\'s', async () => {
    // r_small (pool_size=1) is only the client: the pool is r_forced's, sized by its database (2).
    const forced = await sampleWhile(['r_forced'], () => load(p(), 'r_small', 'forced', 5, 'SELECT pg_sleep(0.3)'));
    assert.equal(forced.max, 2, `PostgreSQL saw ${JSON.stringify(forced.samples)}`);
    // r_fsmall's own pool_size=1 beats its database's pool_size=3, whoever the clients are.
    const small = await sampleWhile(['r_fsmall'], () => load(p(), 'r_default', 'forcedsmall', 5, 'SELECT pg_sleep(0.3)'));
    assert.equal(small.max, 1, `PostgreSQL saw ${JSON.stringify(small.samples)}`);
  });

  it('at max_db_connections, evicts only what the waiting clients need: the cap stays full (PgBouncer test_max_db_connections)', async () => {
    const users = ['r_ev1', 'r_ev2', 'r_ev3', 'r_ev4', 'r_ev5'];
    // A server handed back while an acquire was in flight for it was counted as taken, and a
    // third one opened by evicting another pool's: the database ended below its cap. Repeated,
    // as that depended on the order of logins.
    for (let round = 0; round < 10; round++) {
      await Promise.all(users.map((u) => load(p(), u, 'evict', 2, 'SELECT pg_sleep(0.3)')));
      assert.equal(await backendCount(users), 4, `round ${round}: the servers of a database at max_db_connections=4 after the load`);
    }
  });

  it('caps the servers of one database across two users at max_db_connections', async () => {
    const users = ['r_mdb1', 'r_mdb2'];
    const both = () => Promise.all(users.map((u) => load(p(), u, 'mdb', 4, 'SELECT pg_sleep(0.3)'))).then(() => undefined);
    const concurrent = await phase('concurrent load of both users', sampleWhile(users, both));
    assert.ok(concurrent.sustained <= 2, `concurrent load: PostgreSQL saw ${concurrent.sustained} backends of db mdb with max_db_connections=2: ${JSON.stringify(concurrent.samples)}`);
    // Now r_mdb1 alone fills the cap with servers that stay idle; r_mdb2 must still get served
    // (PgBouncer evicts an idle server of another pool of the database), not wait forever.
    await phase('r_mdb1 alone', load(p(), 'r_mdb1', 'mdb', 3, 'SELECT pg_sleep(0.2)'));
    const second = await phase('r_mdb2 after r_mdb1 filled the cap',
      sampleWhile(users, () => load(p(), 'r_mdb2', 'mdb', 3, 'SELECT pg_sleep(0.2)')));
    assert.ok(second.sustained <= 2, `r_mdb2 after r_mdb1 filled the cap: PostgreSQL saw ${second.sustained} backends of db mdb with max_db_connections=2: ${JSON.stringify(second.samples)}`);
  });

  it('caps the servers of one user across two databases at max_user_connections', async () => {
    const both = () => Promise.all(['mu0', 'mu1'].map((db) => load(p(), 'r_muc', db, 4, 'SELECT pg_sleep(0.3)'))).then(() => undefined);
    const concurrent = await phase('concurrent load of both databases', sampleWhile(['r_muc'], both));
    assert.ok(concurrent.sustained <= 2, `concurrent load: PostgreSQL saw ${concurrent.sustained} backends of r_muc with max_user_connections=2: ${JSON.stringify(concurrent.samples)}`);
    // mu0 alone fills the user's cap with idle servers; clients of mu1 must still get served
    // (PgBouncer evicts an idle server of the same user), within query_wait_timeout.
    await phase('mu0 alone', load(p(), 'r_muc', 'mu0', 3, 'SELECT pg_sleep(0.2)'));
    const second = await phase('mu1 after mu0 filled the cap',
      sampleWhile(['r_muc'], () => load(p(), 'r_muc', 'mu1', 3, 'SELECT pg_sleep(0.2)')));
    assert.ok(second.sustained <= 2, `mu1 after mu0 filled the cap: PostgreSQL saw ${second.sustained} backends of r_muc with max_user_connections=2: ${JSON.stringify(second.samples)}`);
  });
});

describe('reserve pool', () => {
  const { p } = suitePooler(() => ini(
    { default_pool_size: '2', reserve_pool_size: '2', reserve_pool_timeout: '1' },
    { p0: target('p0') },
  ));

  it('opens reserve_pool_size extra servers only to clients that waited reserve_pool_timeout', async () => {
    const { max, samples } = await sampleWhile(['r_reserve'], () => load(p(), 'r_reserve', 'p0', 6, 'SELECT pg_sleep(2)'));
    const detail = JSON.stringify(samples);
    assert.ok(max <= 4, `PostgreSQL saw ${max} backends with pool_size=2 + reserve_pool_size=2: ${detail}`);
    assert.equal(max, 4, `clients that waited 1 s should have got the 2 reserve servers: ${detail}`);
    // No client can have waited reserve_pool_timeout=1 s before 0.6 s into the run.
    const early = samples.filter((s) => s.at < 600);
    assert.ok(early.length > 0, 'no sample in the first 0.6 s');
    assert.ok(early.every((s) => s.n <= 2), `the reserve opened before reserve_pool_timeout: ${detail}`);
  });
});

describe('max_client_conn and query_wait_timeout', () => {
  const { p } = suitePooler(() => ini(
    { max_client_conn: '3', default_pool_size: '1', query_wait_timeout: '2' },
    { p0: target('p0') },
  ));

  it('refuses the client beyond max_client_conn with 53300, and admits one again after a client leaves', async () => {
    const clients = [];
    try {
      for (let i = 0; i < 3; i++) clients.push(await connect(p(), 'r_maxcl', 'p0'));
      await assert.rejects(connect(p(), 'r_maxcl', 'p0'), (e: PgError) => {
        assert.equal(e.code, '53300');
        assert.match(e.message, /no more connections allowed \(max_client_conn\)/);
        return true;
      });
      for (const cl of clients) assert.deepEqual((await cl.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      await clients.pop()?.end();
      // The pooler sees the close asynchronously: retry the login for a bounded while.
      let admitted: pg.Client | null = null;
      const deadline = Date.now() + 5_000;
      while (admitted === null) {
        try {
          admitted = await connect(p(), 'r_maxcl', 'p0');
        } catch (e) {
          if ((e as PgError).code !== '53300' || Date.now() > deadline) throw e;
          await sleep(100);
        }
      }
      clients.push(admitted);
      assert.deepEqual((await admitted.query('SELECT 2 AS x')).rows, [{ x: 2 }]);
    } finally {
      await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
    }
  });

  it('disconnects a client that waited query_wait_timeout for a server, naming the timeout', async () => {
    // Let the previous test's clients leave, so the three slots are free again.
    await waitFor('earlier clients to be gone', async () => {
      try {
        const probe = await connect(p(), 'r_wait', 'p0');
        await probe.end();
        return true;
      } catch {
        return false;
      }
    }, 5_000);
    const holder = await connect(p(), 'r_wait', 'p0');
    const waiter = await connect(p(), 'r_wait', 'p0');
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      const t0 = Date.now();
      const err = await waiter.query('SELECT 1').then(
        () => assert.fail('the second client got the only server while the first held it in a transaction'),
        (e: PgError) => e,
      );
      const waited = Date.now() - t0;
      assert.match(err.message, /query_wait_timeout/);
      assert.ok(waited >= 1_900, `failed after ${waited} ms, before query_wait_timeout=2 s`);
      assert.ok(waited < 5_000, `failed only after ${waited} ms with query_wait_timeout=2 s`);
      // The holder's transaction is untouched, and its server serves others after COMMIT.
      assert.deepEqual((await holder.query('SELECT 3 AS x')).rows, [{ x: 3 }]);
      await holder.query('COMMIT');
      const next = await connect(p(), 'r_wait', 'p0');
      try {
        assert.deepEqual((await next.query('SELECT 4 AS x')).rows, [{ x: 4 }]);
      } finally {
        await next.end();
      }
    } finally {
      await holder.end().catch(() => undefined);
      await waiter.end().catch(() => undefined);
    }
  });
});

describe('a reload that lowers the pool size', () => {
  const config = (size: number): IniSections => ini({ default_pool_size: String(size) }, { p0: target('p0') });
  const { p } = suitePooler(() => config(5));

  it('takes effect under load: servers above the new size close as they come back (5 stayed busy after lowering to 2)', async () => {
    let running = true;
    const errors: string[] = [];
    let done = 0;
    const clients = await Promise.all(Array.from({ length: 10 }, () => connect(p(), 'r_lowered', 'p0')));
    const load = Promise.all(clients.map(async (cl) => {
      while (running) {
        await cl.query('SELECT pg_sleep(0.02)').then(() => done++, (e: Error) => errors.push(e.message));
      }
    }));
    try {
      await waitFor('the whole pool of 5 in use', async () => (await backendCount(['r_lowered'])) === 5, 5_000);
      await p().writeIni(config(2));
      const from = p().logs().length;
      p().reload();
      await waitFor('the reload', async () => p().logs().slice(from).some((l) => l.includes('configuration reloaded')), 5_000);
      await waitFor('the pool down to 2 servers', async () => (await backendCount(['r_lowered'])) <= 2, 5_000);
      // And it stays there while the ten clients go on.
      const before = done;
      for (let i = 0; i < 10; i++) {
        await sleep(100);
        assert.ok((await backendCount(['r_lowered'])) <= 2, 'back above the lowered pool size');
      }
      assert.ok(done > before, 'the clients kept running');
    } finally {
      running = false;
      await load;
      await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
    }
    assert.deepEqual(errors, []);
  });
});
