// Timeouts through the real pooler (reference §1.3-1.4), each with its own pooler whose ini sets
// just that timeout, small (1 s), so the test is quick. What is asserted is the PgBouncer contract:
// the client gets an error (never a hang) within the timeout plus janitor slack, the server
// connection involved is closed and never reused mid-transaction, idle servers go away, and a
// server that cannot be reached fails clients promptly, also during server_login_retry.
//
// Upper bounds are semantic ("within timeout + 2 s"), not speed claims; lower bounds check that
// nothing fires before its timeout.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { cstr, msg } from '../support/bytes.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { backendPid, type PgError, watchedClient, type Watched } from '../support/pg-client.js';
import { freePort, startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 20_000;
/** Janitor rounds are 1/3 s; a timeout may fire up to this much after it is due. */
const SLACK_MS = 2_000;

const ROLES = ['t_query', 't_cidle', 't_itx', 't_life', 't_sidle', 't_conn', 't_retry'];

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
 * A stand-in PostgreSQL that refuses every login the way a starting-up server does: 'N' to an
 * SSLRequest, then FATAL 57P03 to the StartupMessage. Counts the StartupMessages it saw.
 */
async function startRefusingServer(): Promise<{ port: number; attempts(): number; close(): Promise<void> }> {
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
        sock.end(msg('E', 'S', cstr('FATAL'), 'V', cstr('FATAL'), 'C', cstr('57P03'),
          'M', cstr('the database system is starting up'), [0]));
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

  it('server_connect_timeout fails a client whose server accepts but never answers, and counts as a failed login', async () => {
    const proxy = await startFaultProxy({ host: c().host, port: c().port }, { blackhole: true });
    try {
      await withPooler(
        ini({ server_connect_timeout: '1', query_wait_timeout: '30', client_login_timeout: '30' }, { hang: `host=127.0.0.1 port=${proxy.port} dbname=p0` }),
        async (p) => {
          const t0 = Date.now();
          // A connect timeout is a failed login: within server_login_retry (15 s by default) the
          // pooler must not open another connection (PgBouncer: last_connect_failed).
          const attemptsIn3s = sleep(3_000).then(() => proxy.accepted);
          const outcome = await Promise.race([
            connect(p, 't_conn', 'hang').then(
              ({ client }) => {
                void client.end();
                return 'logged in through a server that never answers';
              },
              (e: PgError) => e,
            ),
            sleep(8_000).then(() => null),
          ]);
          const ms = Date.now() - t0;
          const attempts = await attemptsIn3s;
          const seen = outcome === null ? 'no error after 8 s' : outcome instanceof Error ? `"${outcome.message}" after ${ms} ms` : outcome;
          assert.ok(outcome instanceof Error && ms < 1_000 + SLACK_MS,
            `with server_connect_timeout=1 the client got ${seen}; the pooler connected ${attempts} times in the first 3 s`);
          assert.equal(attempts, 1, `the pooler connected ${attempts} times in 3 s although server_login_retry is 15 s`);
        });
    } finally {
      await proxy.close();
    }
  });

  it('server_login_retry: a closed port fails the first client promptly, and a second one during the retry window too', async () => {
    const closedPort = await freePort();
    await withPooler(
      ini({ server_login_retry: '5', query_wait_timeout: '30' }, { down: `host=127.0.0.1 port=${closedPort} dbname=p0` }),
      async (p) => {
        const first = await within(8_000, 'the first client of an unreachable server',
          failure('login to an unreachable server', () => connect(p, 't_retry', 'down')));
        assert.ok(first.ms < SLACK_MS, `the first client got "${first.err.message}" only after ${first.ms} ms`);
        // Inside server_login_retry=5 s the pooler does not try again; the client must not wait for it.
        const second = await within(8_000, 'a second client within server_login_retry',
          failure('login during server_login_retry', () => connect(p, 't_retry', 'down')));
        assert.ok(second.ms < SLACK_MS, `the second client got "${second.err.message}" only after ${second.ms} ms`);
      });
  });

  it('server_login_retry: no new login attempt within the retry window, one after it', async () => {
    const refuser = await startRefusingServer();
    try {
      await withPooler(
        ini({ server_login_retry: '2', query_wait_timeout: '30' }, { refuse: `host=127.0.0.1 port=${refuser.port} dbname=p0` }),
        async (p) => {
          const first = await within(8_000, 'the first client of a server refusing logins',
            failure('login', () => connect(p, 't_retry', 'refuse')));
          assert.match(first.err.message, /the database system is starting up/, 'the server\'s own error is passed on');
          const failedAt = Date.now();
          await within(8_000, 'a second client within server_login_retry', failure('login', () => connect(p, 't_retry', 'refuse')));
          // Well inside the 2 s window: still only the first attempt.
          await sleep(Math.max(0, failedAt + 1_000 - Date.now()));
          assert.equal(refuser.attempts(), 1,
            `the pooler logged in ${refuser.attempts()} times within 1 s of a failed login, with server_login_retry=2`);
          // After the window a new client makes the pooler try again.
          await sleep(Math.max(0, failedAt + 2_500 - Date.now()));
          await within(8_000, 'a client after server_login_retry', failure('login', () => connect(p, 't_retry', 'refuse')));
          assert.ok(refuser.attempts() >= 2, 'no new attempt after server_login_retry');
        });
    } finally {
      await refuser.close();
    }
  });
});
