// Session parameters through the real pooler (PgBouncer's varcache): what a client is told at
// login (ParameterStatus), and that each client keeps its own client_encoding, DateStyle,
// TimeZone, standard_conforming_strings, application_name and IntervalStyle (the default
// track_extra_parameters) while servers are shared in transaction mode. With pool_size 1 every
// client of a pool runs on the same backend, so each switch of client forces the pooler to put
// the right values back before the client's transaction runs; a missed or stale SET shows up as
// another client's value. Unknown startup parameters are refused unless ignore_startup_parameters
// lists them.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { startupPacket } from '../support/bytes.js';
import { connectClient } from '../support/pg-client.js';
import { startCluster, USERS, type Cluster } from '../support/pg-cluster.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { firstErrorFields, RawConn, type BackendMessage } from '../support/raw-client.js';
import { dumpLogsOnFailure, logSince, messageOf, required } from '../support/suite.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 15_000;
const USER = USERS.trust.name;

/** Log in with a raw startup packet; everything the pooler sent up to the first ReadyForQuery
 * (or the ErrorResponse that ended the login). */
async function rawLogin(port: number, params: Record<string, string>): Promise<BackendMessage[]> {
  const conn = await RawConn.connect(port, { timeoutMs: CONNECT_TIMEOUT_MS });
  try {
    conn.send(startupPacket(params));
    return await conn.until('Z', { onError: 'stop', onEnd: 'return' });
  } finally {
    conn.destroy();
  }
}

function parameterStatuses(msgs: BackendMessage[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of msgs) {
    if (m.type !== 'S') continue;
    const z = m.body.indexOf(0);
    out.set(m.body.toString('utf8', 0, z), m.body.toString('utf8', z + 1, m.body.length - 1));
  }
  return out;
}

function connect(port: number, database: string, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  return connectClient({
    host: '127.0.0.1', port, user: USER, database,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS, query_timeout: QUERY_TIMEOUT_MS, ...extra,
  });
}

async function one<T>(client: pg.Client, sql: string): Promise<T> {
  const r = await client.query<{ v: T }>(sql);
  return r.rows[0]!.v;
}

describe('session parameters', () => {
  let cluster: Cluster | undefined;
  let pooler: Pooler | undefined;
  let ignoring: Pooler | undefined;
  const port = (): number => required(() => pooler, 'pooler')().port;

  before(async () => {
    cluster = await startCluster({ name: 'params' });
    const target = `host=127.0.0.1 port=${cluster.port}`;
    [pooler, ignoring] = await Promise.all([
      startPooler({
        // pool_size 1: every client of a database shares one backend.
        pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1' },
        databases: { p0: `${target} dbname=p0`, p1: `${target} dbname=p1` },
      }),
      startPooler({
        pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', ignore_startup_parameters: 'foo, extra_float_digits' },
        databases: { p0: `${target} dbname=p0` },
      }),
    ]);
  });
  dumpLogsOnFailure({ clusters: () => [cluster], poolers: () => [pooler, ignoring], poolerLines: 200, clusterLines: 100 });
  after(async () => {
    await Promise.all([pooler?.stop(), ignoring?.stop()]);
    await cluster?.destroy();
  });

  it('reports the server parameters with ParameterStatus at login', async () => {
    for (const app of ['first-app', 'second-app']) {
      // The second login is answered from the pool's cached parameters: it must still carry
      // this client's own application_name.
      const msgs = await rawLogin(port(), { user: USER, database: 'p0', application_name: app });
      assert.equal(firstErrorFields(msgs), null);
      const ps = parameterStatuses(msgs);
      for (const name of ['server_version', 'client_encoding', 'DateStyle', 'TimeZone', 'integer_datetimes', 'standard_conforming_strings', 'application_name', 'IntervalStyle']) {
        assert.ok(ps.has(name), `no ParameterStatus for ${name}; got ${[...ps.keys()].join(', ')}`);
      }
      assert.equal(ps.get('application_name'), app);
      assert.equal(ps.get('integer_datetimes'), 'on');
      assert.match(ps.get('server_version') ?? '', /^\d+/);
      assert.ok(msgs.some((m) => m.type === 'K'), 'BackendKeyData');
    }
    // A value from the startup packet is what the client is told, as PostgreSQL would.
    const tz = parameterStatuses(await rawLogin(port(), { user: USER, database: 'p0', TimeZone: 'Asia/Tokyo', DateStyle: 'ISO, DMY' }));
    assert.equal(tz.get('TimeZone'), 'Asia/Tokyo');
    assert.equal(tz.get('DateStyle'), 'ISO, DMY');
    // pg records them too, as any driver does.
    const client = new pg.Client({ host: '127.0.0.1', port: port(), user: USER, database: 'p0', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    const seen = new Map<string, string>();
    (client as unknown as { connection: { on(e: 'parameterStatus', f: (m: { parameterName: string; parameterValue: string }) => void): void } })
      .connection.on('parameterStatus', (m) => seen.set(m.parameterName, m.parameterValue));
    await client.connect();
    await client.end();
    assert.equal(seen.get('client_encoding'), 'UTF8');
    assert.ok(seen.has('TimeZone') && seen.has('DateStyle') && seen.has('standard_conforming_strings'));
  });

  it('keeps each client\'s TimeZone across 1000 alternating transactions on one backend', async () => {
    // a: the timezone startup parameter (postgres.js sends arbitrary startup parameters).
    const a = postgres({
      host: '127.0.0.1', port: port(), user: USER, database: 'p0', prepare: false, max: 1,
      connect_timeout: 10, connection: { timezone: 'Asia/Tokyo' }, onnotice: () => undefined,
    });
    // b: SET TimeZone in its session.
    const b = await connect(port(), 'p0');
    try {
      await b.query(`SET TimeZone = 'America/New_York'`);
      const pids = new Set<number>();
      for (let i = 0; i < 500; i++) {
        const [ra] = await a<{ tz: string; pid: number }[]>`SELECT current_setting('TimeZone') AS tz, pg_backend_pid() AS pid`;
        assert.equal(ra?.tz, 'Asia/Tokyo', `transaction ${2 * i}`);
        pids.add(ra.pid);
        const rb = (await b.query<{ tz: string; pid: number }>(`SELECT current_setting('TimeZone') AS tz, pg_backend_pid() AS pid`)).rows[0];
        assert.equal(rb?.tz, 'America/New_York', `transaction ${2 * i + 1}`);
        pids.add(rb.pid);
      }
      assert.equal(pids.size, 1, 'pool_size 1: both clients ran on one backend');
      // A timestamp is rendered in each client's zone.
      const [ts] = await a<{ t: string }[]>`SELECT '2024-01-01 00:00:00+00'::timestamptz::text AS t`;
      assert.equal(ts?.t, '2024-01-01 09:00:00+09');
      assert.equal(await one<string>(b, `SELECT '2024-01-01 00:00:00+00'::timestamptz::text AS v`), '2023-12-31 19:00:00-05');
    } finally {
      await a.end({ timeout: 2 });
      await b.end();
    }
  });

  it('restores a SET undone by ROLLBACK', async () => {
    const a = await connect(port(), 'p0');
    const b = await connect(port(), 'p0');
    try {
      await a.query(`SET TimeZone = 'Europe/Paris'`);
      await a.query('BEGIN');
      await a.query(`SET TimeZone = 'Asia/Kolkata'`);
      await a.query('ROLLBACK');
      await b.query(`SET TimeZone = 'UTC'`);
      assert.equal(await one<string>(a, `SELECT current_setting('TimeZone') AS v`), 'Europe/Paris');
      assert.equal(await one<string>(b, `SELECT current_setting('TimeZone') AS v`), 'UTC');
      assert.equal(await one<string>(a, `SELECT current_setting('TimeZone') AS v`), 'Europe/Paris');
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('passes the startup application_name to the server and keeps a SET application_name', async () => {
    const a = await connect(port(), 'p0', { application_name: 'app-from-startup' });
    const b = await connect(port(), 'p0', { application_name: 'other-app' });
    try {
      assert.equal(await one<string>(a, `SELECT current_setting('application_name') AS v`), 'app-from-startup');
      assert.equal(await one<string>(b, `SELECT current_setting('application_name') AS v`), 'other-app');
      await a.query(`SET application_name = 'renamed-app'`);
      for (let i = 0; i < 20; i++) {
        assert.equal(await one<string>(b, `SELECT current_setting('application_name') AS v`), 'other-app');
        assert.equal(await one<string>(a, `SELECT current_setting('application_name') AS v`), 'renamed-app');
      }
      // PostgreSQL itself shows the name of whoever is running (pg_stat_activity).
      assert.equal(await one<string>(a, `SELECT application_name AS v FROM pg_stat_activity WHERE pid = pg_backend_pid()`), 'renamed-app');
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('keeps client_encoding LATIN1 for one client and UTF8 for another', async () => {
    // LATIN1 from the startup packet (postgres.js sends client_encoding there; pg does not).
    const latin = postgres({
      host: '127.0.0.1', port: port(), user: USER, database: 'p0', prepare: false, max: 1,
      connect_timeout: 10, connection: { client_encoding: 'LATIN1' }, onnotice: () => undefined,
    });
    const utf = await connect(port(), 'p0');
    try {
      for (let i = 0; i < 50; i++) {
        // Both drivers send é as two UTF-8 bytes: two LATIN1 characters, one UTF8 character.
        const [r] = await latin<{ enc: string; n: number }[]>`SELECT current_setting('client_encoding') AS enc, length('é') AS n`;
        assert.deepEqual({ ...r }, { enc: 'LATIN1', n: 2 });
        assert.equal(await one<string>(utf, `SELECT current_setting('client_encoding') AS v`), 'UTF8');
        assert.equal(await one<number>(utf, `SELECT length('é') AS v`), 1);
      }
    } finally {
      await Promise.all([latin.end({ timeout: 2 }), utf.end()]);
    }
  });

  it('keeps DateStyle per client', async () => {
    const german = await connect(port(), 'p0');
    const iso = await connect(port(), 'p0');
    try {
      await german.query(`SET DateStyle = 'German, DMY'`);
      for (let i = 0; i < 50; i++) {
        assert.equal(await one<string>(german, `SELECT '2024-03-04'::date::text AS v`), '04.03.2024');
        assert.equal(await one<string>(iso, `SELECT '2024-03-04'::date::text AS v`), '2024-03-04');
      }
      assert.equal(await one<string>(german, `SELECT current_setting('DateStyle') AS v`), 'German, DMY');
      assert.equal(await one<string>(iso, `SELECT current_setting('DateStyle') AS v`), 'ISO, MDY');
    } finally {
      await Promise.all([german.end(), iso.end()]);
    }
  });

  it('tracks IntervalStyle (track_extra_parameters default), from SET and from startup', async () => {
    await intervalStylesStayApart(port(), 'IntervalStyle', `SET IntervalStyle = 'iso_8601'`, 30);
  });

  it('track_extra_parameters is case-insensitive: "intervalstyle" tracks IntervalStyle', async () => {
    // The bug: the list was compared case-sensitively with the server's "IntervalStyle", so with
    // PgBouncer's test.ini spelling nothing was tracked and one client saw another's setting.
    const lower = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', track_extra_parameters: 'search_path, intervalstyle' },
      databases: { p1: `host=127.0.0.1 port=${required(() => cluster, 'cluster')().port} dbname=p1` },
    });
    try {
      await intervalStylesStayApart(lower.port, 'intervalstyle', `SET intervalstyle TO 'iso_8601'`, 10);
    } finally {
      await lower.stop();
    }
  });

  // A backend found in step with a client's values is not compared again while neither side's
  // values change (ServerConn.varcacheFor): the next two tests are the cases where they do.
  it('sends no SET while one backend goes between clients of the same values, and one as soon as a client changes the backend', async () => {
    const p = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', verbose: '1' },
      databases: { p0: `host=127.0.0.1 port=${required(() => cluster, 'cluster')().port} dbname=p0` },
    });
    const a = await connect(p.port, 'p0');
    const b = await connect(p.port, 'p0');
    try {
      const tz = `SELECT current_setting('TimeZone') AS v`;
      const initial = await one<string>(a, tz);
      const from = p.logs().length;
      for (let i = 0; i < 20; i++) {
        assert.equal(await one<string>(a, tz), initial);
        assert.equal(await one<string>(b, tz), initial);
      }
      // b's values are as they were, but the backend's changed under it: b gets a SET.
      await a.query(`SET TimeZone = 'Asia/Tokyo'`);
      assert.equal(await one<string>(b, tz), initial);
      assert.equal(await one<string>(a, tz), 'Asia/Tokyo');
      await logSince(p, from, /^varcache_apply: SET TimeZone='Asia\/Tokyo';$/);
      const sets = p.logs().slice(from).map(messageOf).filter((m) => m.startsWith('varcache_apply'));
      assert.deepEqual(sets, [`varcache_apply: SET TimeZone='${initial}';`, `varcache_apply: SET TimeZone='Asia/Tokyo';`]);
    } finally {
      await Promise.all([a.end(), b.end()]);
      await p.stop();
    }
  });

  it('sets a client\'s value again on the backend it had, after server_reset_query changed it', async () => {
    // The client and its backend are the same at every link, but the reset query (run at each
    // release with server_reset_query_always) changed the backend's TimeZone since, in a reply the
    // client never sees: the backend must be compared again, and set back, every time.
    const p = await startPooler({
      pgbouncer: {
        auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1',
        server_reset_query: `SET TimeZone = 'Europe/Paris'`, server_reset_query_always: '1',
      },
      databases: { p0: `host=127.0.0.1 port=${required(() => cluster, 'cluster')().port} dbname=p0` },
    });
    const a = await connect(p.port, 'p0');
    try {
      const sql = `SELECT current_setting('TimeZone') AS tz, pg_backend_pid() AS pid`;
      const first = (await a.query<{ tz: string; pid: number }>(sql)).rows[0];
      assert.ok(first !== undefined && first.tz !== 'Europe/Paris');
      for (let i = 0; i < 10; i++) {
        const r = (await a.query<{ tz: string; pid: number }>(sql)).rows[0];
        assert.equal(r?.tz, first.tz, `transaction ${i}`);
        assert.equal(r.pid, first.pid, 'one backend throughout');
      }
    } finally {
      await a.end();
      await p.stop();
    }
  });

  it('refuses an unknown startup parameter with "unsupported startup parameter: foo"', async () => {
    const msgs = await rawLogin(port(), { user: USER, database: 'p0', foo: 'bar' });
    const e = firstErrorFields(msgs);
    assert.ok(e !== null, `no ErrorResponse; got ${msgs.map((m) => m.type).join('')}`);
    assert.equal(e.S, 'FATAL');
    assert.equal(e.M, 'unsupported startup parameter: foo');
    assert.ok(!msgs.some((m) => m.type === 'R' && m.body.readInt32BE(0) === 0), 'no AuthenticationOk before the refusal');
  });

  it('accepts a startup parameter listed in ignore_startup_parameters, without passing it on', async () => {
    assert.ok(ignoring, 'pooler did not start');
    const msgs = await rawLogin(ignoring.port, { user: USER, database: 'p0', foo: 'bar', extra_float_digits: '2' });
    assert.equal(firstErrorFields(msgs), null);
    assert.equal(msgs.at(-1)?.type, 'Z');
    // The server never saw foo (it would refuse it) and the pooled session runs normally.
    const sql = postgres({
      host: '127.0.0.1', port: ignoring.port, user: USER, database: 'p0', prepare: false, max: 1,
      connect_timeout: 10, connection: { foo: 'bar' }, onnotice: () => undefined,
    });
    try {
      const [r] = await sql<{ v: number }[]>`SELECT 1 AS v`;
      assert.equal(r?.v, 1);
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});

/** Three clients of one pool in transaction mode, one that SETs IntervalStyle, one that leaves it,
 * one that sends it at startup (as `startupName`), each see their own style in every round. */
async function intervalStylesStayApart(port: number, startupName: string, set: string, rounds: number): Promise<void> {
  const setter = await connect(port, 'p1');
  const plain = await connect(port, 'p1');
  const fromStartup = postgres({
    host: '127.0.0.1', port, user: USER, database: 'p1', prepare: false, max: 1,
    connect_timeout: 10, connection: { [startupName]: 'sql_standard' }, onnotice: () => undefined,
  });
  try {
    await setter.query(set);
    for (let i = 0; i < rounds; i++) {
      assert.equal(await one<string>(setter, `SELECT interval '1 day 2 hours'::text AS v`), 'P1DT2H');
      assert.equal(await one<string>(plain, `SELECT interval '1 day 2 hours'::text AS v`), '1 day 02:00:00');
      const [r] = await fromStartup<{ v: string }[]>`SELECT interval '1 day 2 hours'::text AS v`;
      assert.equal(r?.v, '1 2:00:00');
    }
  } finally {
    await Promise.all([setter.end(), plain.end(), fromStartup.end({ timeout: 2 })]);
  }
}
