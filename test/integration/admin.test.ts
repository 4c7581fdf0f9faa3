// The admin console (virtual database `pgbouncer`) through the real pooler, against a real
// PostgreSQL, judged by PgBouncer 1.25's behaviour (reference §3): the exact SHOW columns and
// types, counts that are the real state lists (checked against what PostgreSQL sees), the access
// rules of admin_users / stats_users / auth_type=any, and every control command's effect on real
// clients: PAUSE, RESUME, SUSPEND, DISABLE, ENABLE, RECONNECT, WAIT_CLOSE, KILL, KILL_CLIENT,
// RELOAD, SET and SHUTDOWN. psql is used where a person would use it (TCP and unix socket, the
// HELP notice); node-postgres where the test needs column types and notices.
//
// The expected column lists are written here from the reference, not taken from src/.

import assert from 'node:assert/strict';
import type net from 'node:net';
import { describe, it } from 'node:test';
import pg from 'pg';
import { backendPid, connectClient, type PgError } from '../support/pg-client.js';
import { USERS } from '../support/pg-cluster.js';
import { startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { runCommand } from '../support/run-cmd.js';
import { useSetup } from '../support/suite.js';
import { settlesWithin, sleep, waitFor } from '../support/wait.js';

const QUERY_TIMEOUT_MS = 20_000;
const PASSWORDS = { admin: 'adminpass', stats: 'statspass', other: 'otherpass' };

function ini(extra: Record<string, string> = {}): IniSections {
  const db = (name: string, more = '') => `host=127.0.0.1 port=${c().port} dbname=${name}${more}`;
  return {
    pgbouncer: {
      auth_type: 'md5',
      pool_mode: 'transaction',
      default_pool_size: '2',
      admin_users: 'admin',
      stats_users: 'stats',
      // Short stats_period so STATS averages have a period to show within the test.
      stats_period: '1',
      ...extra,
    },
    databases: { p0: db('p0'), p1: db('p1', ' pool_size=1') },
  };
}

const userlist = { ...PASSWORDS, [USERS.md5.name]: USERS.md5.password };

const { c, p } = useSetup({
  cluster: { name: 'admin' },
  pooler: {
    ini: () => ini(),
    options: { userlist },
    stopped: (s, pooler) => {
      if (s.code !== 0) process.stderr.write(pooler.logs().join('\n') + '\n');
    },
  },
});

/** Errors the pooler sent outside a query (a FATAL before closing), per client. */
const asyncErrors = new WeakMap<pg.Client, string[]>();

async function connect(user: string, password: string, db: string, target: Pooler = p()): Promise<pg.Client> {
  const errors: string[] = [];
  const client = await connectClient(
    { connectionString: target.url(user, password, db), query_timeout: QUERY_TIMEOUT_MS, connectionTimeoutMillis: 10_000 },
    (e) => errors.push(e.message),
  );
  asyncErrors.set(client, errors);
  return client;
}

/** The client was disconnected by the pooler with `message` (seen as the failing query's error,
 * or as an error event just before it). */
async function droppedWith(client: pg.Client, message: RegExp): Promise<void> {
  const seen: string[] = [];
  await client.query('SELECT 1').then(
    () => assert.fail('the session still works'),
    (e: Error) => seen.push(e.message),
  );
  seen.push(...(asyncErrors.get(client) ?? []));
  assert.ok(seen.some((m) => message.test(m)), `expected ${message}, got ${JSON.stringify(seen)}`);
}

const adminConsole = (target?: Pooler) => connect('admin', PASSWORDS.admin, 'pgbouncer', target);
const appClient = (db = 'p0') => connect(USERS.md5.name, USERS.md5.password, db);

type Row = Record<string, string | null>;

/** Run a console command; rows come back as text, as psql shows them. */
async function admin(client: pg.Client, sql: string): Promise<Row[]> {
  const r = await client.query({ text: sql, rowMode: 'array', types: { getTypeParser: () => (v: string) => v } });
  return r.rows.map((row: (string | null)[]) => Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] ?? null])));
}

async function rejects(promise: Promise<unknown>, message: RegExp, code?: string): Promise<void> {
  await assert.rejects(promise, (e: PgError) => {
    assert.match(e.message, message);
    if (code !== undefined) assert.equal(e.code, code);
    return true;
  });
}

function poolRow(rows: Row[], db: string): Row {
  const row = rows.find((r) => r.database === db && r.user === USERS.md5.name);
  assert.ok(row, `no SHOW POOLS row for ${db}: ${JSON.stringify(rows)}`);
  return row;
}

/** Backends of md5user in `db`, as PostgreSQL sees them. */
async function backends(db: string): Promise<number[]> {
  const r = await c().query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = $1 AND datname = $2 ORDER BY pid",
    'postgres', [USERS.md5.name, db]);
  return r.rows.map((x) => x.pid);
}

// ------------------------------------------------------------------------------------------------

// PgBouncer's tupdesc letters: s text (25), i int4 (23), q int8 (20), N numeric (1700).
const OIDS: Record<string, number> = { s: 25, i: 23, q: 20, N: 1700 };
const SOCKET = `type:s user:s database:s replication:s state:s addr:s port:i local_addr:s local_port:i connect_time:s
  request_time:s wait:i wait_us:i close_needed:i ptr:s link:s remote_pid:i tls:s application_name:s prepared_statements:i id:i`;
const COUNTERS = 'server_assignment_count xact_count query_count';
const EXPECTED: Record<string, string> = {
  POOLS: `database:s user:s cl_active:i cl_waiting:i cl_active_cancel_req:i cl_waiting_cancel_req:i sv_active:i
    sv_active_cancel:i sv_being_canceled:i sv_idle:i sv_used:i sv_tested:i sv_login:i maxwait:i maxwait_us:i pool_mode:s
    load_balance_hosts:s`,
  STATS: `database:s total_server_assignment_count:N total_xact_count:N total_query_count:N total_received:N total_sent:N
    total_xact_time:N total_query_time:N total_wait_time:N total_client_parse_count:N total_server_parse_count:N
    total_bind_count:N avg_server_assignment_count:N avg_xact_count:N avg_query_count:N avg_recv:N avg_sent:N
    avg_xact_time:N avg_query_time:N avg_wait_time:N avg_client_parse_count:N avg_server_parse_count:N avg_bind_count:N`,
  STATS_TOTALS: `database:s ${COUNTERS.replace(/(\w+)/g, '$1:N')} bytes_received:N bytes_sent:N xact_time:N query_time:N
    wait_time:N client_parse_count:N server_parse_count:N bind_count:N`,
  STATS_AVERAGES: `database:s ${COUNTERS.replace(/(\w+)/g, '$1:N')} bytes_received:N bytes_sent:N xact_time:N query_time:N
    wait_time:N avg_client_parse_count:N avg_server_parse_count:N avg_bind_count:N`,
  TOTALS: 'name:s value:N',
  CLIENTS: SOCKET,
  SERVERS: SOCKET,
  SOCKETS: `${SOCKET} recv_pos:i pkt_pos:i pkt_remain:i send_pos:i send_remain:i pkt_avail:i send_avail:i`,
  ACTIVE_SOCKETS: `${SOCKET} recv_pos:i pkt_pos:i pkt_remain:i send_pos:i send_remain:i pkt_avail:i send_avail:i`,
  DATABASES: `name:s host:s port:i database:s force_user:s pool_size:i min_pool_size:i reserve_pool_size:i
    server_lifetime:i pool_mode:s load_balance_hosts:s max_connections:i current_connections:i max_client_connections:i
    current_client_connections:i paused:i disabled:i`,
  USERS: `name:s pool_size:s reserve_pool_size:s pool_mode:s max_user_connections:i current_connections:i
    max_user_client_connections:i current_client_connections:i`,
  PEERS: 'peer_id:i host:s port:i pool_size:i',
  PEER_POOLS: 'peer_id:i cl_active_cancel_req:i cl_waiting_cancel_req:i sv_active_cancel:i sv_login:i',
  LISTS: 'list:s items:i',
  CONFIG: 'key:s value:s default:s changeable:s',
  MEM: 'name:s size:i used:i free:i memtotal:i',
  DNS_HOSTS: 'hostname:s ttl:q addrs:s',
  DNS_ZONES: 'zonename:s serial:q count:i',
  VERSION: 'version:s',
  STATE: 'key:s value:s',
};

describe('SHOW', () => {
  it('answers every SHOW with PgBouncer 1.25 column names, order and types', async () => {
    const con = await adminConsole();
    const app = await appClient();
    try {
      await app.query('SELECT 1');
      for (const [cmd, spec] of Object.entries(EXPECTED)) {
        const r = await con.query(`SHOW ${cmd}`);
        const want = spec.trim().split(/\s+/).map((s) => {
          const [name, t] = s.split(':');
          return [name, OIDS[t!]];
        });
        assert.deepEqual(r.fields.map((f) => [f.name, f.dataTypeID]), want, `SHOW ${cmd}`);
        assert.equal(r.command, 'SHOW');
      }
    } finally {
      await app.end();
      await con.end();
    }
  });

  it('answers the driver-compatibility SHOWs with fixed values', async () => {
    const con = await adminConsole();
    try {
      const want = {
        client_encoding: 'UTF-8', default_transaction_isolation: 'read committed', standard_conforming_strings: 'on',
        datestyle: 'ISO', timezone: 'GMT',
      };
      for (const [name, value] of Object.entries(want)) {
        assert.deepEqual(await admin(con, `SHOW ${name}`), [{ [name]: value }]);
      }
    } finally {
      await con.end();
    }
  });

  it('SHOW LISTS has every PgBouncer row, dns_* included; VERSION and STATE', async () => {
    const con = await adminConsole();
    try {
      const lists = await admin(con, 'SHOW LISTS');
      assert.deepEqual(lists.map((r) => r.list), [
        'databases', 'users', 'peers', 'pools', 'peer_pools', 'free_clients', 'used_clients', 'login_clients',
        'free_servers', 'used_servers', 'dns_names', 'dns_zones', 'dns_queries', 'dns_pending',
      ]);
      for (const r of lists) assert.match(r.items ?? '', /^\d+$/);
      assert.match((await admin(con, 'SHOW VERSION'))[0]?.version ?? '', /^pgpool-ts \d+\.\d+\.\d+$/);
      assert.deepEqual(await admin(con, 'SHOW STATE'), [
        { key: 'active', value: 'yes' }, { key: 'paused', value: 'no' }, { key: 'suspended', value: 'no' },
      ]);
      const config = await admin(con, 'SHOW CONFIG');
      assert.deepEqual(config.find((r) => r.key === 'listen_port'), { key: 'listen_port', value: String(p().port), default: '6432', changeable: 'no' });
      assert.deepEqual(config.find((r) => r.key === 'default_pool_size'), { key: 'default_pool_size', value: '2', default: '20', changeable: 'yes' });
    } finally {
      await con.end();
    }
  });

  it('SHOW POOLS, CLIENTS and SERVERS are the state lists: active, waiting, linked, as PostgreSQL sees them', async () => {
    const con = await adminConsole();
    // p1 has pool_size=1: a client in a transaction holds its only server, the next one waits.
    const holder = await appClient('p1');
    const waiter = await appClient('p1');
    try {
      await holder.query('BEGIN');
      const pid = await backendPid(holder);
      const waiting = waiter.query('SELECT 1');
      await waitFor('a waiting client', async () => poolRow(await admin(con, 'SHOW POOLS'), 'p1').cl_waiting === '1');
      await sleep(1100);
      const pool = poolRow(await admin(con, 'SHOW POOLS'), 'p1');
      assert.deepEqual(
        { cl_active: pool.cl_active, cl_waiting: pool.cl_waiting, sv_active: pool.sv_active, sv_idle: pool.sv_idle, pool_mode: pool.pool_mode },
        { cl_active: '1', cl_waiting: '1', sv_active: '1', sv_idle: '0', pool_mode: 'transaction' },
      );
      assert.ok(Number(pool.maxwait) >= 1, `maxwait ${pool.maxwait}`);
      assert.deepEqual(await backends('p1'), [pid]);

      const clients = (await admin(con, 'SHOW CLIENTS')).filter((r) => r.database === 'p1');
      const servers = (await admin(con, 'SHOW SERVERS')).filter((r) => r.database === 'p1');
      assert.deepEqual(clients.map((r) => r.state).sort(), ['active', 'waiting']);
      assert.equal(servers.length, 1);
      const server = servers[0]!;
      const active = clients.find((r) => r.state === 'active')!;
      assert.equal(server.state, 'active');
      assert.equal(server.remote_pid, String(pid));
      assert.equal(server.link, active.ptr);
      assert.equal(active.link, server.ptr);
      assert.equal(active.addr, '127.0.0.1');
      assert.equal(server.tls, '');
      assert.match(active.connect_time ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
      // The console's own session is listed too, in the pgbouncer pool.
      assert.ok((await admin(con, 'SHOW CLIENTS')).some((r) => r.database === 'pgbouncer' && r.user === 'admin'));

      await holder.query('COMMIT');
      await waiting;
      const after = poolRow(await admin(con, 'SHOW POOLS'), 'p1');
      assert.deepEqual([after.cl_waiting, after.sv_active, after.sv_idle, after.maxwait], ['0', '0', '1', '0']);
      const db = (await admin(con, 'SHOW DATABASES')).find((r) => r.name === 'p1')!;
      assert.deepEqual([db.pool_size, db.current_connections, db.current_client_connections, db.paused, db.disabled], ['1', '1', '2', '0', '0']);
    } finally {
      await holder.end();
      await waiter.end();
      await con.end();
    }
  });

  it('SHOW STATS counts transactions, queries and bytes per database; TOTALS and averages follow', async () => {
    const con = await adminConsole();
    const app = await appClient('p0');
    try {
      const stats = async () => (await admin(con, 'SHOW STATS_TOTALS')).find((r) => r.database === 'p0') ?? {};
      const before = await stats();
      for (let k = 0; k < 5; k++) await app.query('SELECT 1');
      await app.query('BEGIN');
      await app.query('SELECT pg_sleep(0.05)');
      await app.query('COMMIT');
      const now = await stats();
      const delta = (k: string) => Number(now[k] ?? 0) - Number(before[k] ?? 0);
      assert.equal(delta('xact_count'), 6);
      assert.equal(delta('query_count'), 8);
      assert.ok(delta('bytes_received') > 0 && delta('bytes_sent') > 0);
      assert.ok(delta('xact_time') >= 50_000, `xact_time grew by ${delta('xact_time')} µs`);
      assert.ok(delta('query_time') >= 50_000);
      const full = (await admin(con, 'SHOW STATS')).find((r) => r.database === 'p0')!;
      assert.equal(full.total_xact_count, now.xact_count);
      // Averages are per second over the last stats_period (1 s here).
      await sleep(2100);
      const avg = (await admin(con, 'SHOW STATS_AVERAGES')).find((r) => r.database === 'p0')!;
      for (const v of Object.values(avg).slice(1)) assert.match(v ?? '', /^\d+$/);
      const totals = await admin(con, 'SHOW TOTALS');
      assert.equal(totals.length, 22);
      assert.equal(totals[0]?.name, 'total_server_assignment_count');
      assert.equal(totals[11]?.name, 'avg_server_assignment_count');
    } finally {
      await app.end();
      await con.end();
    }
  });
});

describe('access and grammar', () => {
  it('stats_users may run every SHOW but no control command; other users are refused at login', async () => {
    const stats = await connect('stats', PASSWORDS.stats, 'pgbouncer');
    try {
      assert.ok((await admin(stats, 'SHOW POOLS')).length > 0);
      for (const cmd of ['PAUSE', 'RESUME', 'RELOAD', 'KILL p0', 'RECONNECT', 'SHUTDOWN', 'SET default_pool_size = 3', 'SHOW FDS']) {
        await rejects(stats.query(cmd), /^admin access needed$/, '42501');
      }
      // The fixed driver settings may be SET by anyone, and are ignored.
      assert.equal((await stats.query('SET client_encoding = UTF8')).command, 'SET');
    } finally {
      await stats.end();
    }
    await rejects(connect('other', PASSWORDS.other, 'pgbouncer'), /not allowed/);
  });

  it('commands are case-insensitive with an optional ";"; a bad one is an error and the session goes on', async () => {
    const con = await adminConsole();
    try {
      assert.equal((await admin(con, 'show version;'))[0]?.version?.startsWith('pgpool-ts'), true);
      assert.ok((await admin(con, '  ShOw   PoOlS  ;  ')).length > 0);
      assert.ok((await admin(con, 'select version')).length === 1);
      await rejects(con.query('SHOW NOPE'), /^invalid command 'SHOW NOPE', use SHOW HELP;$/, '42601');
      await rejects(con.query('SELECT 1'), /invalid command/);
      await rejects(con.query('SHOW POOLS; SHOW STATS'), /invalid command/);
      await rejects(con.query({ text: 'SHOW VERSION', values: [1] }), /extended query protocol not supported/);
      assert.equal((await admin(con, 'SHOW VERSION')).length, 1);
    } finally {
      await con.end();
    }
  });

  it('psql reaches the console over TCP and the unix socket; SHOW HELP is a notice', async () => {
    const env = { PGPASSWORD: PASSWORDS.admin, PGCONNECT_TIMEOUT: '10' };
    const tcp = await runCommand('psql', ['-X', '-h', '127.0.0.1', '-p', String(p().port), '-U', 'admin', 'pgbouncer', '-c', 'SHOW HELP'], { env });
    assert.equal(tcp.code, 0, tcp.stderr);
    assert.match(tcp.stderr, /NOTICE: {2}Console usage/);
    assert.match(tcp.stderr, /SHOW HELP\|CONFIG\|DATABASES/);
    assert.match(tcp.stderr, /SHUTDOWN WAIT_FOR_SERVERS\|WAIT_FOR_CLIENTS/);
    const unix = await runCommand('psql', ['-X', '-A', '-t', '-h', p().dir, '-p', String(p().port), '-U', 'admin', 'pgbouncer', '-c', 'SHOW LISTS'], { env });
    assert.equal(unix.code, 0, unix.stderr);
    assert.match(unix.stdout, /^databases\|3$/m);
    const tags = await runCommand('psql', ['-X', '-h', '127.0.0.1', '-p', String(p().port), '-U', 'admin', 'pgbouncer', '-c', 'WAIT_CLOSE', '-c', 'RECONNECT p0'], { env });
    assert.equal(tags.code, 0, tags.stderr);
    assert.equal(tags.stdout, 'WAIT_CLOSE\nRECONNECT\n');
    const bad = await runCommand('psql', ['-X', '-h', '127.0.0.1', '-p', String(p().port), '-U', 'admin', 'pgbouncer', '-c', 'PAUSE nosuch'], { env });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /ERROR: {2}no such database: nosuch/);
  });

  it('with auth_type=any, anyone may SHOW; only admin_users may control', async () => {
    const open = await startPooler(
      { pgbouncer: { auth_type: 'any', admin_users: 'admin', pool_mode: 'transaction' }, databases: { p0: `host=127.0.0.1 port=${c().port}` } },
    );
    try {
      const anyone = await connect('whoever', '', 'pgbouncer', open);
      try {
        assert.ok((await admin(anyone, 'SHOW POOLS')).length > 0);
        await rejects(anyone.query('PAUSE'), /admin access needed/);
      } finally {
        await anyone.end();
      }
      const boss = await connect('admin', '', 'pgbouncer', open);
      try {
        assert.equal((await boss.query('RECONNECT')).command, 'RECONNECT');
      } finally {
        await boss.end();
      }
    } finally {
      await open.stop('SIGTERM');
    }
  });
});

describe('control commands', () => {
  it('PAUSE waits for linked servers, closes them, holds new queries; RESUME lets them run', async () => {
    const con = await adminConsole();
    const busy = await appClient('p0');
    const later = await appClient('p0');
    try {
      await busy.query('BEGIN');
      const pause = con.query('PAUSE');
      assert.equal(await settlesWithin(pause, 500), false, 'PAUSE answered while a server was still linked');
      await busy.query('COMMIT');
      assert.equal((await pause).command, 'PAUSE');
      assert.deepEqual(await backends('p0'), [], 'paused pools keep no server');
      assert.deepEqual((await admin(con, 'SHOW STATE')).map((r) => r.value), ['no', 'yes', 'no']);
      await rejects(con.query('PAUSE'), /already suspended\/paused/);
      const held = later.query('SELECT 42 AS answer');
      assert.equal(await settlesWithin(held, 700), false, 'a query ran while paused');
      assert.equal((await con.query('RESUME')).command, 'RESUME');
      assert.equal((await held).rows[0].answer, 42);
      await rejects(con.query('RESUME'), /pooler is not paused\/suspended/);
    } finally {
      await con.query('RESUME').catch(() => undefined);
      await busy.end();
      await later.end();
      await con.end();
    }
  });

  it('PAUSE db and RESUME db act on that database only', async () => {
    const con = await adminConsole();
    const a = await appClient('p0');
    const b = await appClient('p1');
    try {
      assert.equal((await con.query('PAUSE p1')).command, 'PAUSE');
      assert.equal((await admin(con, 'SHOW DATABASES')).find((r) => r.name === 'p1')?.paused, '1');
      await a.query('SELECT 1');
      const held = b.query('SELECT 1');
      assert.equal(await settlesWithin(held, 500), false);
      await con.query('RESUME p1');
      await held;
      await rejects(con.query('RESUME p1'), /^database p1 is not paused$/);
      await rejects(con.query('PAUSE nosuch'), /^no such database: nosuch$/, '3D000');
      await rejects(con.query('PAUSE pgbouncer'), /^cannot pause admin db: pgbouncer$/);
    } finally {
      await a.end();
      await b.end();
      await con.end();
    }
  });

  it('DISABLE refuses new clients of a database (sessions in it go on); ENABLE admits them again', async () => {
    const con = await adminConsole();
    const inside = await appClient('p1');
    try {
      await rejects(con.query('DISABLE'), /a database is required/);
      assert.equal((await con.query('DISABLE p1')).command, 'DISABLE');
      await rejects(appClient('p1'), /database "p1" is disabled/, '57P03');
      await inside.query('SELECT 1');
      assert.equal((await admin(con, 'SHOW DATABASES')).find((r) => r.name === 'p1')?.disabled, '1');
      assert.equal((await con.query('ENABLE p1')).command, 'ENABLE');
      const again = await appClient('p1');
      await again.end();
    } finally {
      await con.query('ENABLE p1').catch(() => undefined);
      await inside.end();
      await con.end();
    }
  });

  it('RECONNECT replaces server connections; WAIT_CLOSE answers once the marked ones are gone', async () => {
    const con = await adminConsole();
    const app = await appClient('p0');
    try {
      await app.query('BEGIN');
      const old = await backendPid(app);
      assert.equal((await con.query('RECONNECT p0')).command, 'RECONNECT');
      const marked = (await admin(con, 'SHOW SERVERS')).filter((r) => r.database === 'p0');
      assert.deepEqual(marked.map((r) => [r.remote_pid, r.close_needed]), [[String(old), '1']]);
      const wait = con.query('WAIT_CLOSE p0');
      assert.equal(await settlesWithin(wait, 500), false, 'WAIT_CLOSE answered while a marked server was linked');
      await app.query('COMMIT');
      await wait;
      const fresh = await backendPid(app);
      assert.notEqual(fresh, old);
      await waitFor('the old backend to exit', async () => !(await backends('p0')).includes(old));
    } finally {
      await app.end();
      await con.end();
    }
  });

  it('KILL db drops its clients and servers and holds new ones until RESUME; KILL_CLIENT drops one client', async () => {
    const con = await adminConsole();
    const victim = await appClient('p1');
    const bystander = await appClient('p0');
    try {
      await victim.query('SELECT 1');
      assert.equal((await con.query('KILL p1')).command, 'KILL');
      await droppedWith(victim, /database removed/);
      await waitFor('p1 backends to exit', async () => (await backends('p1')).length === 0);
      await bystander.query('SELECT 1');
      const newcomer = await appClient('p1');
      try {
        const held = newcomer.query('SELECT 1');
        assert.equal(await settlesWithin(held, 500), false, 'a killed database served a query before RESUME');
        await con.query('RESUME p1');
        await held;
      } finally {
        await newcomer.end();
      }

      const row = (await admin(con, 'SHOW CLIENTS')).find((r) => r.database === 'p0' && r.user === USERS.md5.name);
      assert.ok(row?.id);
      await con.query(`KILL_CLIENT ${row.id}`);
      await droppedWith(bystander, /admin forced disconnect/);
      await rejects(con.query('KILL_CLIENT abc'), /^invalid client pointer supplied$/);
      await rejects(con.query('KILL_CLIENT 999999'), /^client not found$/);
    } finally {
      await con.query('RESUME p1').catch(() => undefined);
      await victim.end().catch(() => undefined);
      await bystander.end().catch(() => undefined);
      await con.end();
    }
  });

  it('SUSPEND stops traffic until RESUME', async () => {
    const con = await adminConsole();
    const app = await appClient('p0');
    try {
      await app.query('SELECT 1');
      assert.equal((await con.query('SUSPEND')).command, 'SUSPEND');
      assert.deepEqual((await admin(con, 'SHOW STATE')).map((r) => r.value), ['no', 'no', 'yes']);
      await rejects(con.query('SUSPEND'), /already suspended\/paused/);
      const held = app.query('SELECT 2 AS two');
      assert.equal(await settlesWithin(held, 500), false);
      await con.query('RESUME');
      assert.equal((await held).rows[0].two, 2);
    } finally {
      await con.query('RESUME').catch(() => undefined);
      await app.end();
      await con.end();
    }
  });

  it('SUSPEND waits up to suspend_timeout for unsent bytes, then drops a client that does not read; new logins are held at their first query', async () => {
    const con = await adminConsole();
    const stalled = await appClient('p0');
    const stream = (stalled as unknown as { connection: { stream: net.Socket } }).connection.stream;
    let late: pg.Client | undefined;
    try {
      await con.query('SET suspend_timeout = 1');
      await stalled.query('SELECT 1');
      // 50 MB of rows to a client that stops reading: the pooler is left holding unsent bytes.
      stream.pause();
      const big = stalled.query("SELECT repeat('x', 1000) FROM generate_series(1, 50000)").then(() => null, (e: Error) => e);
      await sleep(1000);
      assert.ok((await admin(con, 'SHOW CLIENTS')).some((r) => r.port === String(stream.localPort)), 'the stalled client is not listed');
      const started = Date.now();
      assert.equal((await con.query('SUSPEND')).command, 'SUSPEND');
      const took = Date.now() - started;
      assert.ok(took >= 900 && took < 5000, `SUSPEND answered after ${took} ms (suspend_timeout = 1 s)`);
      const clients = await admin(con, 'SHOW CLIENTS');
      assert.ok(!clients.some((r) => r.port === String(stream.localPort)), `the stalled client is still listed: ${JSON.stringify(clients)}`);

      // A login while suspended completes (the pool knows its server's parameters); its first
      // query waits for RESUME.
      late = await appClient('p0');
      const held = late.query('SELECT 7 AS seven');
      assert.equal(await settlesWithin(held, 500), false, 'a query ran while suspended');
      await con.query('RESUME');
      assert.equal((await held).rows[0].seven, 7);
      stream.resume();
      assert.ok((await big) instanceof Error, 'the dropped client\'s query succeeded');
    } finally {
      await con.query('RESUME').catch(() => undefined);
      await con.query('RELOAD');
      await late?.end();
      await stalled.end().catch(() => undefined);
      await con.end();
    }
  });

  it('RELOAD applies a valid file, and reports a broken one as an error while keeping the old', async () => {
    const con = await adminConsole();
    const setting = async (k: string) => (await admin(con, 'SHOW CONFIG')).find((r) => r.key === k)?.value;
    try {
      await p().writeIni(ini({ default_pool_size: '7' }));
      assert.equal((await con.query('RELOAD')).command, 'RELOAD');
      assert.equal(await setting('default_pool_size'), '7');
      await p().writeIni(ini({ default_pool_size: 'lots', pool_mode: 'sideways' }));
      // Every problem is reported, with file and line.
      await rejects(con.query('RELOAD'), /^RELOAD failed(?=[\s\S]*pgpool\.ini:\d+: default_pool_size: invalid value 'lots')(?=[\s\S]*pool_mode: invalid value 'sideways')/, 'F0000');
      assert.equal(await setting('default_pool_size'), '7');
      assert.equal(await setting('pool_mode'), 'transaction');
      await rejects(con.query('RELOAD now'), /invalid command/);
    } finally {
      await p().writeIni(ini());
      await con.query('RELOAD');
      await con.end();
    }
  });

  it('SET changes a reloadable setting; a bad value or a restart-only setting changes nothing and says why', async () => {
    const con = await adminConsole();
    const setting = async (k: string) => (await admin(con, 'SHOW CONFIG')).find((r) => r.key === k)?.value;
    const notices: string[] = [];
    con.on('notice', (n) => notices.push(n.message ?? ''));
    try {
      const r = await con.query('SET default_pool_size = 9');
      assert.equal(r.command, 'SET');
      assert.equal(await setting('default_pool_size'), '9');
      await con.query(`SET server_reset_query TO 'DISCARD ALL; SELECT ''x'''`);
      assert.equal(await setting('server_reset_query'), "DISCARD ALL; SELECT 'x'");
      assert.equal(await setting('default_pool_size'), '9', 'an earlier SET survives a later one');
      await rejects(con.query('SET default_pool_size = abc'), /SET failed: default_pool_size: invalid value 'abc'/, '22023');
      assert.equal(await setting('default_pool_size'), '9');
      await rejects(con.query('SET listen_port = 7000'), /^SET failed: listen_port cannot be changed without a restart$/);
      await rejects(con.query('SET no_such_thing = 1'), /^SET failed: unknown setting 'no_such_thing'$/);
      await con.query('SET extra_float_digits = 3');
      assert.deepEqual(notices, ['SET ignored']);
      // RELOAD: the file is the truth again.
      await con.query('RELOAD');
      assert.equal(await setting('default_pool_size'), '2');
    } finally {
      await con.end();
    }
  });
});

describe('SHUTDOWN', () => {
  it('SHUTDOWN WAIT_FOR_CLIENTS stops listening, lets sessions finish, then exits 0', async () => {
    const q = await startPooler(ini(), { userlist });
    const con = await adminConsole(q);
    const app = await connect(USERS.md5.name, USERS.md5.password, 'p0', q);
    assert.equal((await con.query('SHUTDOWN WAIT_FOR_CLIENTS')).command, 'SHUTDOWN');
    await con.end();
    await rejects(connect(USERS.md5.name, USERS.md5.password, 'p0', q), /ECONNREFUSED/);
    assert.equal((await app.query('SELECT 5 AS five')).rows[0].five, 5);
    assert.equal(await settlesWithin(q.exited, 300), false, 'exited with a session still open');
    await app.end();
    assert.deepEqual(await q.exited, { code: 0, signal: null });
  });

  it('SIGTERM during SUSPEND goes down at once, with 0 (suspended clients could never finish a drain)', async () => {
    const q = await startPooler(ini(), { userlist });
    const con = await adminConsole(q);
    const app = await connect(USERS.md5.name, USERS.md5.password, 'p0', q);
    try {
      await app.query('SELECT 1');
      await con.query('SUSPEND');
      process.kill(q.pid, 'SIGTERM');
      assert.equal(await settlesWithin(q.exited, 5000), true, 'still running 5 s after SIGTERM');
      assert.deepEqual(await q.exited, { code: 0, signal: null });
      assert.ok(q.logs().some((l) => l.includes('suspend was in progress, going down immediately')));
    } finally {
      await app.end().catch(() => undefined);
      await con.end().catch(() => undefined);
      await q.stop('SIGKILL');
    }
  });

  it('SHUTDOWN exits at once with 0', async () => {
    const q = await startPooler(ini(), { userlist });
    const con = await adminConsole(q);
    const gone = new Promise((r) => con.once('end', r));
    void con.query('SHUTDOWN').catch(() => undefined);
    assert.deepEqual(await q.exited, { code: 0, signal: null });
    await gone;
  });
});

describe("PgBouncer's counting and ids (issue 11)", () => {
  it('query_count counts extended-protocol queries, one per request up to its Sync, as PgBouncer does', async () => {
    // The bug: only Query and FunctionCall messages were counted, so node-postgres, psycopg and
    // JDBC traffic (Parse/Bind/Execute/Sync) showed total_query_count 0.
    const con = await adminConsole();
    const app = await appClient('p0');
    try {
      const stats = async () => (await admin(con, 'SHOW STATS_TOTALS')).find((r) => r.database === 'p0') ?? {};
      const before = await stats();
      for (let k = 0; k < 5; k++) await app.query('SELECT $1::int AS v', [k]);
      await app.query('BEGIN');
      await app.query('SELECT $1::text AS v', ['in a transaction']);
      await app.query('COMMIT');
      const now = await stats();
      const delta = (k: string) => Number(now[k] ?? 0) - Number(before[k] ?? 0);
      assert.equal(delta('query_count'), 8, '5 parameterised queries, BEGIN, one in the transaction, COMMIT');
      assert.equal(delta('xact_count'), 6);
    } finally {
      await app.end();
      await con.end();
    }
  });

  it("the console's own row counts each console query, as PgBouncer's does", async () => {
    const con = await adminConsole();
    try {
      const row = async () => (await admin(con, 'SHOW STATS_TOTALS')).find((r) => r.database === 'pgbouncer') ?? {};
      const before = Number((await row()).query_count);
      await admin(con, 'SHOW VERSION');
      const after = await row();
      // SHOW VERSION and the SHOW STATS_TOTALS that reads the row.
      assert.equal(Number(after.query_count) - before, 2);
      assert.equal(after.xact_count, after.query_count);
    } finally {
      await con.end();
    }
  });

  it('SHOW SOCKETS lists console clients; a server made for a client has the next id (one counter, as PgBouncer)', async () => {
    // Both were wrong: SHOW SOCKETS skipped the console's pool, and clients and servers counted
    // ids separately. Session mode with server_lifetime = 0 (PgBouncer's test_socket_id): each
    // client gets a server of its own, used once.
    const q = await startPooler(ini({ pool_mode: 'session', server_lifetime: '0' }), { userlist });
    const con = await adminConsole(q);
    try {
      const sockets = await admin(con, 'SHOW SOCKETS');
      const mine = sockets.filter((r) => r.type === 'C' && r.database === 'pgbouncer');
      assert.equal(mine.length, 1, JSON.stringify(sockets));
      assert.equal(mine[0]?.state, 'cl_active');
      const consoleId = Number(mine[0]?.id);
      for (let i = 1; i <= 3; i++) {
        const app = await connect(USERS.md5.name, USERS.md5.password, 'p0', q);
        await app.query('SELECT 1');
        const ids = (await admin(con, 'SHOW SOCKETS')).map((r) => `${r.type}${r.id}`).sort();
        assert.deepEqual(ids, [`C${consoleId}`, `C${consoleId + 2 * i - 1}`, `S${consoleId + 2 * i}`].sort());
        await app.end();
        // server_lifetime = 0: the server is closed once its client is done with it.
        await waitFor('the used server to close', async () => (await admin(con, 'SHOW SERVERS')).length === 0);
      }
    } finally {
      await con.end();
      await q.stop();
    }
  });
});
