// Client connection limits (PgBouncer 1.24+): max_db_client_connections counts the clients of a
// database, max_user_client_connections those of a login user, globally and per [databases] /
// [users] entry. As in PgBouncer's set_pool, a client is counted from its startup packet until it
// closes, refused or not; the one over the limit gets FATAL 08P01 "client connections exceeded
// (max_…)". Admin users on the console are exempt. SHOW DATABASES / SHOW USERS show the limit and
// the count under PgBouncer's column names.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { connectClient, endAll, type PgError } from '../support/pg-client.js';
import { psql } from '../support/run-cmd.js';
import { useSetup } from '../support/suite.js';
import { waitFor } from '../support/wait.js';

const ROLES = ['r_db', 'r_user', 'r_glob', 'r_pw', 'r_stats'];
const PASSWORD = 'clpass';
const ADMIN_PASSWORD = 'cladmin';

const setup = useSetup({
  cluster: { name: 'client-limits' },
  roles: ROLES,
  pooler: {
    ini: () => ({
      pgbouncer: {
        auth_type: 'md5',
        pool_mode: 'transaction',
        admin_users: 'admin',
        stats_users: 'r_stats',
        max_db_client_connections: '3',
        max_user_client_connections: '4',
        // Each client of `gone` makes the pooler try (and fail) a server login at once, rather than
        // wait for the retry after the last refusal, as clients of a pool that never had a server do.
        server_login_retry: '0',
      },
      databases: {
        p0: target('p0'),
        capped: target('p0', 'max_db_client_connections=2'),
        // A database PostgreSQL does not have: the server login fails after the client's succeeded.
        gone: target('no_such_db'),
      },
      users: { r_user: 'max_user_client_connections=1' },
    }),
    options: {
      userlist: {
        ...Object.fromEntries(ROLES.map((r) => [r, PASSWORD])),
        admin: ADMIN_PASSWORD,
      },
    },
  },
  dumpLogs: { poolerLines: 200, clusterLines: 50 },
});
const { c, p } = setup;

function target(dbname: string, extra = ''): string {
  return `host=127.0.0.1 port=${c().port} dbname=${dbname} ${extra}`.trim();
}

function connect(user: string, db: string, password = PASSWORD): Promise<pg.Client> {
  return connectClient({ connectionString: p().url(user, password, db), connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
}

type Row = Record<string, string | null>;

/** One console command as the admin user, rows as text. */
async function show(what: 'DATABASES' | 'USERS'): Promise<Row[]> {
  const admin = await connect('admin', 'pgbouncer', ADMIN_PASSWORD);
  try {
    const r = await admin.query({ text: `SHOW ${what}`, rowMode: 'array', types: { getTypeParser: () => (v: string) => v } });
    return r.rows.map((row: (string | null)[]) => Object.fromEntries(r.fields.map((f, i) => [f.name, row[i] ?? null])));
  } finally {
    await admin.end();
  }
}

async function database(name: string): Promise<Row> {
  const row = (await show('DATABASES')).find((r) => r.name === name);
  assert.ok(row, `no SHOW DATABASES row for ${name}`);
  return row;
}

async function user(name: string): Promise<Row> {
  const row = (await show('USERS')).find((r) => r.name === name);
  assert.ok(row, `no SHOW USERS row for ${name}`);
  return row;
}

/** The pooler counts a close when it sees it: wait until the count is back to `n`. */
async function clientsOfDb(name: string, n: number): Promise<void> {
  let seen: string | null | undefined;
  await waitFor(`${name} to have ${n} clients`, async () => (seen = (await database(name)).current_client_connections) === String(n), 5_000)
    .catch((e: Error) => assert.fail(`${e.message}; SHOW DATABASES says ${seen}`));
}

async function clientsOfUser(name: string, n: number): Promise<void> {
  let seen: string | null | undefined;
  await waitFor(`${name} to have ${n} clients`, async () => (seen = (await user(name)).current_client_connections) === String(n), 5_000)
    .catch((e: Error) => assert.fail(`${e.message}; SHOW USERS says ${seen}`));
}

function refusedFor(setting: string): (e: PgError) => boolean {
  return (e) => {
    assert.equal(e.code, '08P01');
    assert.equal(e.severity, 'FATAL');
    assert.equal(e.message, `client connections exceeded (${setting})`);
    return true;
  };
}

describe('max_db_client_connections', () => {
  it('refuses the client beyond a [databases] limit with 08P01, shows it in SHOW DATABASES, and admits one again once a client left', async () => {
    const clients = [await connect('r_db', 'capped'), await connect('r_db', 'capped')];
    try {
      const row = await database('capped');
      assert.equal(row.max_client_connections, '2');
      assert.equal(row.current_client_connections, '2');
      await assert.rejects(connect('r_db', 'capped'), refusedFor('max_db_client_connections'));
      // The refused client was counted while it was there, and is no longer.
      await clientsOfDb('capped', 2);
      for (const cl of clients) assert.deepEqual((await cl.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      await clients.pop()!.end();
      await clientsOfDb('capped', 1);
      clients.push(await connect('r_db', 'capped'));
      assert.deepEqual((await clients[1]!.query('SELECT 2 AS x')).rows, [{ x: 2 }]);
    } finally {
      await endAll(clients);
    }
    await clientsOfDb('capped', 0);
  });

  it('applies the global limit to a database without its own, and psql shows PgBouncer\'s message', async () => {
    assert.equal((await database('p0')).max_client_connections, '3');
    const clients = [await connect('r_glob', 'p0'), await connect('r_glob', 'p0'), await connect('r_db', 'p0')];
    try {
      const r = await psql(p().url('r_pw', PASSWORD, 'p0'), 'SELECT 1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /FATAL: {2}client connections exceeded \(max_db_client_connections\)/);
    } finally {
      await endAll(clients);
    }
    await clientsOfDb('p0', 0);
  });
});

describe('max_user_client_connections', () => {
  it('counts a user across databases against its [users] limit, which beats the global one', async () => {
    assert.equal((await user('r_user')).max_user_client_connections, '1');
    assert.equal((await user('r_glob')).max_user_client_connections, '4');
    const first = await connect('r_user', 'p0');
    try {
      assert.equal((await user('r_user')).current_client_connections, '1');
      await assert.rejects(connect('r_user', 'capped'), refusedFor('max_user_client_connections'));
      await assert.rejects(connect('r_user', 'p0'), refusedFor('max_user_client_connections'));
      await clientsOfUser('r_user', 1);
    } finally {
      await first.end();
    }
    await clientsOfUser('r_user', 0);
    const again = await connect('r_user', 'capped');
    await again.end();
  });

  it('drops the count of clients refused during login: a wrong password, and a server that refuses the login', async () => {
    for (let i = 0; i < 5; i++) {
      await assert.rejects(connect('r_pw', 'p0', 'wrong'), (e: PgError) => e.code === '28P01');
    }
    await clientsOfUser('r_pw', 0);
    await clientsOfDb('p0', 0);
    for (let i = 0; i < 5; i++) {
      // The client's own login succeeds; PostgreSQL then refuses the pooler's (no such database).
      await assert.rejects(connect('r_pw', 'gone'), (e: PgError) => e.code === '3D000');
    }
    await clientsOfUser('r_pw', 0);
    await clientsOfDb('gone', 0);
    // Four clients (the global limit) still get in.
    const clients: pg.Client[] = [];
    try {
      for (let i = 0; i < 2; i++) clients.push(await connect('r_pw', 'p0'), await connect('r_pw', 'capped'));
      await assert.rejects(connect('r_pw', 'p0'), refusedFor('max_user_client_connections'));
    } finally {
      await endAll(clients);
    }
  });
});

describe('the console', () => {
  it('exempts admin users from both limits and counts stats users like anyone', async () => {
    const admin = await connect('admin', 'pgbouncer', ADMIN_PASSWORD);
    try {
      await admin.query('SET max_db_client_connections = 1');
      await admin.query('SET max_user_client_connections = 1');
      // The admin's own session fills both limits already; another admin session still gets in.
      const second = await connect('admin', 'pgbouncer', ADMIN_PASSWORD);
      await second.end();
      await assert.rejects(connect('r_stats', 'pgbouncer'), refusedFor('max_db_client_connections'));
    } finally {
      await admin.query('SET max_db_client_connections = 3');
      await admin.query('SET max_user_client_connections = 4');
      await admin.end();
    }
    const row = await database('pgbouncer');
    assert.equal(row.max_client_connections, '3');
    // The session asking.
    assert.equal(row.current_client_connections, '1');
  });
});
