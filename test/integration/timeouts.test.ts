// Timeouts through the real pooler (reference §1.3-1.4), each with its own pooler whose ini sets
// just that timeout, small (1 s), so the test is quick. What is asserted is the PgBouncer contract:
// the client gets an error (never a hang) within the timeout plus janitor slack, the server
// connection involved is closed and never reused mid-transaction, idle servers go away, and
// server logins fail and are retried as PgBouncer's are (server_connect_timeout, server_login_retry).
//
// Upper bounds are semantic ("within timeout + 2 s"), not speed claims; lower bounds check that
// nothing fires before its timeout.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { cstr, msg } from '../support/bytes.js';
import { startDeafListener } from '../support/deaf-listener.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { backendPid, type PgError, watchedClient, type Watched } from '../support/pg-client.js';
import { freePort, startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { logSince, useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 20_000;
/** Janitor rounds are 1/3 s; a timeout may fire up to this much after it is due. */
const SLACK_MS = 2_000;

const ROLES = ['t_query', 't_cidle', 't_itx', 't_life', 't_sidle', 't_conn', 't_retry', 't_strand'];

const setup = useSetup({ cluster: { name: 'timeouts' }, roles: ROLES });
const c = setup.c;

const target = (dbname: string): string => `host=127.0.0.1 port=${c().port} dbname=${dbname}`;

function ini(pgbouncer: Record<string, string>, databases: Record<string, string> = { p0: target('p0') }): IniSections {
  return { pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', ...pgbouncer }, databases };
}

/** Start a pooler for one test; its log is printed if the test fails, and it is always stopped. */
async function withPooler(config: IniSections, body: (p: Pooler) => Promise<void>): Promise<void> {
  const p = await startPooler(config);
  try {
    await body(p);
  } catch (e) {
    console.error(`--- pooler log (last 200 lines) ---\n${p.logs().slice(-200).join('\n')}`);
    throw e;
  } finally {
    // How the pooler shuts down is not under test here; SIGKILL after 3 s keeps a stuck
    // shutdown from eating the file's time budget.
    await p.stop('SIGTERM', 3_000);
  }
}

/** One query through a new client, which is then closed. */
async function queryOnce(p: Pooler, sql: string, user = 't_retry', db = 'flaky'): Promise<void> {
  const { client } = await connect(p, user, db);
  try {
    await client.query(sql);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function connect(p: Pooler, user: string, db = 'p0'): Promise<Watched> {
  return watchedClient({
    connectionString: p.url(user, '', db),
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
  });
}

/** Resolve with the rejection of `work` and how long it took; fail if it resolves. */
async function failure(what: string, work: () => Promise<unknown>): Promise<{ err: PgError; ms: number }> {
  const t0 = Date.now();
  const err = await work().then(
    () => assert.fail(`${what} succeeded`),
    (e: PgError) => e,
  );
  return { err, ms: Date.now() - t0 };
}

async function backendPids(user: string): Promise<number[]> {
  return c().backendPids({ user });
}

/**
 * A stand-in PostgreSQL that refuses every login: 'N' to an SSLRequest, then FATAL `sqlstate` to the
 * StartupMessage. Counts the StartupMessages it saw.
 */
async function startRefusingServer(sqlstate: string, message: string): Promise<{ port: number; attempts(): number; close(): Promise<void> }> {
  let attempts = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 8 && buf.length >= buf.readInt32BE(0)) {
        const len = buf.readInt32BE(0);
        const code = buf.readInt32BE(4);
        buf = buf.subarray(len);
        if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
          sock.write('N');
          continue;
        }
        attempts++;
        sock.end(msg('E', 'S', cstr('FATAL'), 'V', cstr('FATAL'), 'C', cstr(sqlstate), 'M', cstr(message), [0]));
        return;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    attempts: () => attempts,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const SSL_REQUEST_CODE = 80877103;
const GSSENC_REQUEST_CODE = 80877104;

describe('client-side timeouts', () => {
  it('query_timeout ends a long query with an error soon after the timeout', () =>
    withPooler(ini({ query_timeout: '1' }), async (p) => {
      const { client } = await connect(p, 't_query');
      try {
        const { err, ms } = await failure('SELECT pg_sleep(10) with query_timeout=1', () => client.query('SELECT pg_sleep(10)'));
        assert.ok(ms >= 950, `the query failed after ${ms} ms, before query_timeout=1 s: ${err.message}`);
        assert.ok(ms < 1_000 + SLACK_MS, `the query failed only after ${ms} ms with query_timeout=1 s`);
        assert.match(err.message, /query.timeout|canceling statement/i);
      } finally {
        await client.end().catch(() => undefined);
      }
      // The pooler goes on serving.
      const again = await connect(p, 't_query');
      try {
        assert.deepEqual((await again.client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      } finally {
        await again.client.end();
      }
    }));

  it('client_idle_timeout disconnects an idle client with an error, and spares a busy one', () =>
    withPooler(ini({ client_idle_timeout: '1' }), async (p) => {
      const idle = await connect(p, 't_cidle');
      const busy = await connect(p, 't_cidle');
      try {
        await idle.client.query('SELECT 1');
        const t0 = Date.now();
        // The busy client sends a query every 0.3 s for longer than the timeout.
        const busyLoop = (async () => {
          while (Date.now() - t0 < 2_000) {
            await busy.client.query('SELECT 1');
            await sleep(300);
          }
        })();
        const err = await within(1_000 + SLACK_MS, 'an idle client with client_idle_timeout=1', idle.error);
        const ms = Date.now() - t0;
        // t0 is taken after the last query's answer, a little after the pooler last heard of it.
        assert.ok(ms >= 800, `disconnected after ${ms} ms, before client_idle_timeout=1 s`);
        assert.match(err.message, /client_idle_timeout/);
        await assert.rejects(idle.client.query('SELECT 1'));
        await busyLoop;
        assert.deepEqual((await busy.client.query('SELECT 2 AS x')).rows, [{ x: 2 }]);
      } finally {
        await idle.client.end().catch(() => undefined);
        await busy.client.end().catch(() => undefined);
      }
    }));

  it('idle_transaction_timeout disconnects a client idle in BEGIN and never reuses its server mid-transaction', () =>
    withPooler(ini({ idle_transaction_timeout: '1', default_pool_size: '1' }), async (p) => {
      const a = await connect(p, 't_itx');
      try {
        await a.client.query('BEGIN');
        const pidA = await backendPid(a.client);
        assert.ok(pidA !== undefined);
        const t0 = Date.now();
        const err = await within(1_000 + SLACK_MS, 'a client idle in transaction with idle_transaction_timeout=1', a.error);
        const ms = Date.now() - t0;
        assert.ok(ms >= 800, `disconnected after ${ms} ms, before idle_transaction_timeout=1 s`);
        assert.match(err.message, /idle.transaction.timeout/i);
        // Its backend is closed, not handed to the next client with the transaction still open.
        await waitFor(`backend ${pidA} of the timed-out transaction to exit`,
          async () => !(await backendPids('t_itx')).includes(pidA), 5_000);
        const b = await connect(p, 't_itx');
        try {
          const row = (await b.client.query<{ pid: number; fresh: boolean }>(
            'SELECT pg_backend_pid() AS pid, now() = statement_timestamp() AS fresh')).rows[0];
          assert.notEqual(row?.pid, pidA);
          assert.equal(row?.fresh, true, 'the next client ran inside a transaction left open');
        } finally {
          await b.client.end();
        }
      } finally {
        await a.client.end().catch(() => undefined);
      }
    }));

  it('idle_transaction_timeout counts from the server going idle in the transaction, not from the client\'s last message', () =>
    withPooler(ini({ idle_transaction_timeout: '1' }), async (p) => {
      // PgBouncer GH #125: a statement longer than the timeout inside a transaction is not idleness.
      const a = await connect(p, 't_itx');
      try {
        await a.client.query('BEGIN');
        await a.client.query('SELECT pg_sleep(1.5)');
        await sleep(400);
        assert.deepEqual((await a.client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
        await a.client.query('COMMIT');
      } finally {
        await a.client.end().catch(() => undefined);
      }
    }));
});

describe('server connection lifecycle', () => {
  it('server_lifetime replaces a server between transactions once it is older than the lifetime', () =>
    withPooler(ini({ server_lifetime: '1', default_pool_size: '1' }), async (p) => {
      const { client } = await connect(p, 't_life');
      try {
        const pid = () => backendPid(client);
        const first = await pid();
        await sleep(1_500);
        const second = await pid();
        assert.ok(first !== undefined && second !== undefined);
        assert.notEqual(second, first, 'the same backend served a transaction after server_lifetime=1 s');
        await waitFor(`the expired backend ${first} to exit`, async () => !(await backendPids('t_life')).includes(first), 5_000);
      } finally {
        await client.end();
      }
    }));

  it('server_idle_timeout closes idle server connections (min_pool_size 0)', () =>
    withPooler(ini({ server_idle_timeout: '1', min_pool_size: '0' }), async (p) => {
      const clients = await Promise.all([0, 1, 2].map(() => connect(p, 't_sidle')));
      try {
        await Promise.all(clients.map(({ client }) => client.query('SELECT pg_sleep(0.2)')));
        const busy = (await backendPids('t_sidle')).length;
        assert.ok(busy >= 1, 'no server connection after three queries');
        const t0 = Date.now();
        await waitFor('idle servers to be closed', async () => (await backendPids('t_sidle')).length === 0, 1_000 + SLACK_MS + 1_000);
        assert.ok(Date.now() - t0 >= 500, 'servers went away before server_idle_timeout=1 s');
        // The clients stay, and get a new server on their next query.
        assert.deepEqual((await clients[0]!.client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      } finally {
        await Promise.all(clients.map(({ client }) => client.end().catch(() => undefined)));
      }
    }));

  // Server logins as PgBouncer runs them (objects.c launch_new_connection, server.c
  // kill_pool_logins, check_fast_fail): a login that fails on the way (refused connection, no
  // answer, TLS) is retried after server_login_retry while clients wait for their own timeouts; a
  // login PostgreSQL refuses fails the waiting clients at once with its error.

  it('server_connect_timeout: a server that never answers fails the login, the client waits on until its query_timeout', async () => {
    const proxy = await startFaultProxy({ host: c().host, port: c().port }, { blackhole: true });
    try {
      await withPooler(
        ini({ server_connect_timeout: '1', query_timeout: '3', query_wait_timeout: '30', client_login_timeout: '30' }, { hang: `host=127.0.0.1 port=${proxy.port} dbname=p0` }),
        async (p) => {
          const { err, ms } = await within(3_000 + SLACK_MS + 2_000, 'a client of a server that never answers',
            failure('login through a server that never answers', () => connect(p, 't_conn', 'hang')));
          await logSince(p, 0, /server login failed: connect timeout/);
          // Connected, then no answer: PgBouncer's janitor reason.
          await logSince(p, 0, /closing because: connect timeout/);
          assert.match(err.message, /query_timeout/);
          assert.ok(ms >= 2_500, `the client got "${err.message}" after ${ms} ms: before its query_timeout (3 s), when only the server login had timed out`);
          // A connect timeout is a failed login: within server_login_retry (15 s by default) the
          // pooler does not open another connection.
          assert.equal(proxy.accepted, 1, `the pooler connected ${proxy.accepted} times although server_login_retry is 15 s`);
        });
    } finally {
      await proxy.close();
    }
  });

  it('server_connect_timeout while TCP still connects (its SYNs dropped) closes the server with "connect failed", as PgBouncer', async () => {
    const deaf = await startDeafListener();
    try {
      await withPooler(
        ini({ server_connect_timeout: '1', query_timeout: '2', query_wait_timeout: '30', client_login_timeout: '30' }, { deaf: `host=127.0.0.1 port=${deaf.port} dbname=p0` }),
        async (p) => {
          const { err } = await within(2_000 + SLACK_MS + 2_000, 'a client of a server that cannot be reached',
            failure('login through a server whose connect hangs', () => connect(p, 't_conn', 'deaf')));
          assert.match(err.message, /query_timeout/);
          await logSince(p, 0, /closing because: connect failed/);
        });
    } finally {
      await deaf.close();
    }
  });

  it('server_login_retry: a refused connection keeps the client waiting, and the retry gets it in once the server is up', async () => {
    const port = await freePort();
    await withPooler(
      ini({ server_login_retry: '2', query_wait_timeout: '30' }, { later: `host=127.0.0.1 port=${port} dbname=p0` }),
      async (p) => {
        const t0 = Date.now();
        const pending = connect(p, 't_retry', 'later');
        await logSince(p, 0, /server login failed: could not connect to server/);
        // PostgreSQL appears where the database points.
        const proxy = await startFaultProxy({ host: c().host, port: c().port }, {}, port);
        try {
          const { client } = await within(2_000 + SLACK_MS + 2_000, 'the client waiting for the retry', pending);
          const ms = Date.now() - t0;
          try {
            assert.deepEqual((await client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
          } finally {
            await client.end();
          }
          assert.ok(ms >= 1_500, `logged in after ${ms} ms, before server_login_retry (2 s) had passed`);
          assert.equal(proxy.accepted, 1, 'one login after the retry');
        } finally {
          await proxy.close();
        }
      });
  });

  it('server_login_retry: a login PostgreSQL refuses fails the waiting clients at once; a client in the retry window waits for the retry', async () => {
    const refuser = await startRefusingServer('28000', 'role "t_retry" is not permitted to log in');
    try {
      await withPooler(
        ini({ server_login_retry: '2', query_wait_timeout: '30' }, { refuse: `host=127.0.0.1 port=${refuser.port} dbname=p0` }),
        async (p) => {
          const first = await within(8_000, 'two clients of a server refusing logins',
            Promise.all([0, 1].map(() => failure('login', () => connect(p, 't_retry', 'refuse')))));
          for (const f of first) {
            assert.equal(f.err.message, 'role "t_retry" is not permitted to log in');
            assert.equal(f.err.code, '28000');
            assert.ok(f.ms < SLACK_MS, `a waiting client got the refusal only after ${f.ms} ms`);
          }
          // One login per waiting client was started; let the last of them be refused too.
          await sleep(300);
          const attempts = refuser.attempts();
          // Inside the window no login is tried: the client waits for the retry, then hears the
          // refusal of that new login.
          const second = await within(2_000 + SLACK_MS + 2_000, 'a client within server_login_retry',
            failure('login', () => connect(p, 't_retry', 'refuse')));
          assert.equal(second.err.message, 'role "t_retry" is not permitted to log in');
          assert.ok(second.ms >= 1_000, `the client within server_login_retry (2 s) was refused after ${second.ms} ms, without a new login`);
          assert.equal(refuser.attempts(), attempts + 1, 'one new login after the retry window');
        });
    } finally {
      await refuser.close();
    }
  });

  it('a pool whose server is gone and whose logins fail: waiting clients wait for the retry, a new one is refused at once with the cached error', async () => {
    const port = await freePort();
    let proxy = await startFaultProxy({ host: c().host, port: c().port }, {}, port);
    try {
      await withPooler(
        ini({ server_login_retry: '1', query_wait_timeout: '30' }, { flaky: `host=127.0.0.1 port=${port} dbname=p0` }),
        async (p) => {
          const a = await connect(p, 't_retry', 'flaky');
          const b = await connect(p, 't_retry', 'flaky');
          const d = await connect(p, 't_retry', 'flaky');
          try {
            assert.deepEqual((await a.client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
            // PostgreSQL goes away, and its server connection with it.
            await proxy.close();
            await logSince(p, 0, /closing because: server conn crashed/);
            const from = p.logs().length;
            const waiting = a.client.query('SELECT 2 AS x');
            await logSince(p, from, /server login failed: could not connect to server/);
            // PgBouncer's check_fast_fail: no server left and logins failing.
            await assert.rejects(b.client.query('SELECT 3 AS x'), (e: PgError) => {
              assert.match(e.message, /^server login has been failing, cached error: could not connect to server: .*\(server_login_retry\)$/);
              return true;
            });
            proxy = await startFaultProxy({ host: c().host, port: c().port }, {}, port);
            assert.deepEqual((await within(1_000 + SLACK_MS + 2_000, 'the waiting client', waiting)).rows, [{ x: 2 }]);
            assert.deepEqual((await d.client.query('SELECT 4 AS x')).rows, [{ x: 4 }]);
          } finally {
            await Promise.all([a, b, d].map(({ client }) => client.end().catch(() => undefined)));
          }
        });
    } finally {
      await proxy.close();
    }
  });

  it('after server_login_retry, a refused client starts a login with nobody waiting, and the next client gets in', async () => {
    const port = await freePort();
    let proxy = await startFaultProxy({ host: c().host, port: c().port }, {}, port);
    try {
      await withPooler(
        ini({ server_login_retry: '1', query_wait_timeout: '30', query_timeout: '1' }, { flaky: `host=127.0.0.1 port=${port} dbname=p0` }),
        async (p) => {
          const a = await connect(p, 't_retry', 'flaky');
          try {
            assert.deepEqual((await a.client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
            await proxy.close();
            await logSince(p, 0, /closing because: server conn crashed/);
            // The one client waiting through a failed login gives up (query_timeout): nobody waits.
            await assert.rejects(a.client.query('SELECT 2 AS x'), /query_timeout/);
          } finally {
            await a.client.end().catch(() => undefined);
          }
          proxy = await startFaultProxy({ host: c().host, port: c().port }, {}, port);
          await sleep(1_200);
          const accepted = proxy.accepted;
          await assert.rejects(queryOnce(p, 'SELECT 3'), /server login has been failing, cached error/);
          await waitFor('a login with no client waiting', async () => proxy.accepted > accepted, 2_000);
          await waitFor('the next client to get in', () => queryOnce(p, 'SELECT 4').then(() => true, () => false), 3_000);
        });
    } finally {
      await proxy.close();
    }
  });

  it('after RECONNECT, a refused login fails the waiting clients although a server is still linked (none is stranded)', () =>
    withPooler(ini({ default_pool_size: '1', admin_users: 't_strand' }), async (p) => {
      const holder = await connect(p, 't_strand');
      const con = await connect(p, 't_strand', 'pgbouncer');
      const waiters: Watched[] = [];
      try {
        await holder.client.query('BEGIN');
        await holder.client.query('SELECT 1');
        // New logins of this role now fail in PostgreSQL.
        await c().query('ALTER ROLE t_strand NOLOGIN', 'postgres');
        waiters.push(await connect(p, 't_strand'), await connect(p, 't_strand'));
        const queries = waiters.map(({ client }) => client.query('SELECT 2').then(() => null, (e: PgError) => e));
        // The pool's one server is held; RECONNECT marks it for closing, a larger pool logs in.
        await con.client.query('RECONNECT');
        await con.client.query('SET default_pool_size = 2');
        for (const e of await within(SLACK_MS + 3_000, 'the clients waiting behind the held server', Promise.all(queries))) {
          assert.match(e?.message ?? 'no error', /role "t_strand" is not permitted to log in/);
        }
        await holder.client.query('COMMIT');
      } finally {
        await c().query('ALTER ROLE t_strand LOGIN', 'postgres');
        await Promise.all([holder, con, ...waiters].map(({ client }) => client.end().catch(() => undefined)));
      }
    }));
});
