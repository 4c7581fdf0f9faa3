// Query cancellation through the real pooler. A client only knows the pooler-minted key from its
// BackendKeyData; a CancelRequest with that key must reach the PostgreSQL backend the client is
// linked to at that moment, which ends the query with 57014. Checked with node-postgres (the key
// sent over a raw socket, as libpq does), with psql (SIGINT makes it send the CancelRequest), with
// keys that match nothing (ignored: the query runs on and the pooler is unharmed), in transaction
// mode with two clients whose queries run on two servers at once, and with cancels still on their
// way when their client's server goes to another client (they must not cancel that one's query).
// The CancelRequest's own connection is held as PgBouncer holds it: closed once the cancel has
// landed, listed in SHOW POOLS meanwhile, and given up at cancel_wait_timeout when it cannot land.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { backendPid, connectClient, type PgError } from '../support/pg-client.js';
import { startDeafListener } from '../support/deaf-listener.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startPooler, type Pooler } from '../support/pooler.js';
import { sendCancelRequest } from '../support/raw-client.js';
import { required, useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const USER = 'k_cancel';
const CONNECT_TIMEOUT_MS = 10_000;
/** Longer than any test: only a cancel ends these queries in time. */
const SLEEP_S = 30;
/** From sending the CancelRequest to the client seeing the error. */
const CANCEL_BOUND_MS = 2_000;

const { c, p } = useSetup({
  cluster: { name: 'cancel' },
  roles: [USER],
  pooler: {
    ini: () => ({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '2' },
      databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
    }),
    stopTimeoutMs: 3_000,
    // A cancel test that failed leaves pg_sleep(30) behind; do not wait for it.
    stopped: () => c().terminateBackends({ user: USER }).catch(() => 0),
  },
  dumpLogs: { poolerLines: 200 },
});

function connect(): Promise<pg.Client> {
  return connectClient({ connectionString: p().url(USER, '', 'p0'), connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
}

/** The client's key as BackendKeyData gave it (pg keeps the secret as a signed int32). */
function keyOf(client: pg.Client): { pid: number; secret: Buffer } {
  const { processID, secretKey } = client as unknown as { processID: number | null; secretKey: number | null };
  assert.ok(processID !== null && secretKey !== null, 'no BackendKeyData');
  const secret = Buffer.alloc(4);
  secret.writeInt32BE(secretKey);
  return { pid: processID, secret };
}

/** A CancelRequest on a fresh connection to the pooler, as libpq sends it; resolves when closed. */
function sendCancel(pid: number, secret: Buffer): Promise<void> {
  return sendCancelRequest(p().port, pid, secret);
}

/** Backends running a query that contains `marker`, as pg_stat_activity shows them. */
async function running(marker: string): Promise<{ pid: number; state: string }[]> {
  const r = await c().query<{ pid: number; state: string }>(
    `SELECT pid, state FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%' || $2 || '%'`, 'postgres', [USER, marker]);
  return r.rows;
}

async function waitActive(marker: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const active = (await running(marker)).filter((r) => r.state === 'active');
    if (active.length === 1) return active[0]!.pid;
    assert.ok(Date.now() < deadline, `the query ${marker} never showed up as active`);
    await sleep(25);
  }
}

/** `sql`'s rejection and the ms from `since()` to it; fails if it succeeds or takes 10 s. */
async function rejection(work: Promise<unknown>, since: () => number): Promise<{ err: PgError; ms: number }> {
  let timer: NodeJS.Timeout | undefined;
  const err = await Promise.race([
    work.then(() => assert.fail('the query finished instead of being canceled'), (e: PgError) => e),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the query was still running 10 s after the cancel')), 10_000);
    }),
  ]).finally(() => clearTimeout(timer));
  return { err, ms: Date.now() - since() };
}

describe('cancel through the pooler', () => {
  it('cancels a node-postgres query with the key from BackendKeyData: 57014 within 2 s', async () => {
    const client = await connect();
    try {
      const marker = 'cancel-pg';
      const q = client.query(`SELECT pg_sleep(${SLEEP_S}) /* ${marker} */`);
      // The cancel may land before sendCancel() returns; rejection() looks at it after.
      q.catch(() => undefined);
      await waitActive(marker);
      const { pid, secret } = keyOf(client);
      const sentAt = Date.now();
      await sendCancel(pid, secret);
      const { err, ms } = await rejection(q, () => sentAt);
      assert.equal(err.code, '57014', err.message);
      assert.ok(ms < CANCEL_BOUND_MS, `canceled only ${ms} ms after the CancelRequest`);
      // The session goes on.
      assert.deepEqual((await client.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('cancels a psql query on SIGINT (psql sends the CancelRequest): 57014 within 2 s', async () => {
    const marker = 'cancel-psql';
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined) env[k] = v;
    env.PGCONNECT_TIMEOUT = '10';
    const child = spawn('psql', ['-X', '-v', 'VERBOSITY=verbose', '-d', p().url(USER, '', 'p0'),
      '-c', `SELECT pg_sleep(${SLEEP_S}) /* ${marker} */`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdout.on('data', () => undefined);
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      await waitActive(marker);
      const sentAt = Date.now();
      child.kill('SIGINT');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        exited,
        new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), 10_000); }),
      ]).finally(() => clearTimeout(timer));
      const ms = Date.now() - sentAt;
      assert.notEqual(code, 'timeout', `psql still running 10 s after SIGINT; stderr: ${stderr}`);
      assert.match(stderr, /57014: canceling statement due to user request/, stderr);
      assert.notEqual(code, 0);
      assert.ok(ms < CANCEL_BOUND_MS, `psql ended only ${ms} ms after SIGINT`);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });

  it('ignores CancelRequests whose key matches no client: the query runs on, the pooler is unharmed', async () => {
    const client = await connect();
    try {
      const marker = 'cancel-wrong';
      const q = client.query(`SELECT pg_sleep(${SLEEP_S}) /* ${marker} */`);
      let settled = false;
      void q.then(() => (settled = true), () => (settled = true));
      const backend = await waitActive(marker);
      const { pid, secret } = keyOf(client);
      const wrongSecret = Buffer.from(secret.map((b) => b ^ 0xff));
      await sendCancel(pid, wrongSecret);
      await sendCancel(pid ^ 0x5a5a5a, secret);
      await sendCancel(0, Buffer.alloc(4));
      await sleep(1_000);
      assert.equal(settled, false, 'a CancelRequest with a wrong key ended the query');
      assert.deepEqual(await running(marker), [{ pid: backend, state: 'active' }]);
      // The pooler still serves everyone (the other server of the pool).
      const other = await connect();
      try {
        assert.deepEqual((await other.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      } finally {
        await other.end();
      }
      // The right key still works.
      const sentAt = Date.now();
      await sendCancel(pid, secret);
      const { err } = await rejection(q, () => sentAt);
      assert.equal(err.code, '57014', err.message);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('in transaction mode, cancels on the server the client is linked to at that moment, and only there', async (t) => {
    const a = await connect();
    const b = await connect();
    try {
      // A's first transaction ran on some server; B then takes a server for a transaction (the
      // one A just released, when servers are reused LIFO), so A's next query runs elsewhere.
      const aBefore = await backendPid(a);
      await b.query('BEGIN');
      const bPid = await backendPid(b);
      const qa = a.query(`SELECT pg_sleep(${SLEEP_S}) /* cancel-tx-a */`);
      qa.catch(() => undefined);
      const qb = b.query(`SELECT pg_sleep(${SLEEP_S}) /* cancel-tx-b */`);
      let bSettled = false;
      void qb.then(() => (bSettled = true), () => (bSettled = true));
      const aBackend = await waitActive('cancel-tx-a');
      const bBackend = await waitActive('cancel-tx-b');
      assert.equal(bBackend, bPid);
      assert.notEqual(aBackend, bBackend);
      t.diagnostic(`A ran first on backend ${aBefore}; at the cancel A is on ${aBackend}, B on ${bBackend}`);

      const aKey = keyOf(a);
      const sentAt = Date.now();
      await sendCancel(aKey.pid, aKey.secret);
      const { err, ms } = await rejection(qa, () => sentAt);
      assert.equal(err.code, '57014', err.message);
      assert.ok(ms < CANCEL_BOUND_MS, `canceled only ${ms} ms after the CancelRequest`);
      // B's query, on the other server, was not touched.
      await sleep(300);
      assert.equal(bSettled, false, "A's cancel ended B's query");
      assert.deepEqual(await running('cancel-tx-b'), [{ pid: bBackend, state: 'active' }]);

      const bKey = keyOf(b);
      const sentB = Date.now();
      await sendCancel(bKey.pid, bKey.secret);
      const rb = await rejection(qb, () => sentB);
      assert.equal(rb.err.code, '57014', rb.err.message);
      await b.query('ROLLBACK');
      // Both sessions go on.
      assert.deepEqual((await a.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
      assert.deepEqual((await b.query('SELECT 2 AS x')).rows, [{ x: 2 }]);
    } finally {
      await a.end().catch(() => undefined);
      await b.end().catch(() => undefined);
    }
  });
});

/** A pooler (trust, transaction mode, `pgbouncer` on top) whose database `db` reaches PostgreSQL
 * through a fault proxy, started before the describe block's tests and stopped after them. */
function proxiedPooler(pgbouncer: Record<string, string>, db: string): { px: () => FaultProxy; pp: () => Pooler } {
  let proxy: FaultProxy | undefined;
  let pooler: Pooler | undefined;
  before(async () => {
    proxy = await startFaultProxy({ host: c().host, port: c().port });
    pooler = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', ...pgbouncer },
      databases: { [db]: `host=127.0.0.1 port=${proxy.port} dbname=p0` },
    });
  });
  after(async () => {
    await pooler?.stop('SIGTERM', 3_000);
    await proxy?.close();
  });
  return { px: required(() => proxy, 'proxy'), pp: required(() => pooler, 'pooler') };
}

// PgBouncer's test_cancel_race: a cancel aimed at one client, still on its way to PostgreSQL when
// that client's query has ended and its server went to the next client, must not cancel the next
// client's query. PgBouncer keeps such a server out of use (SV_BEING_CANCELED) until every cancel
// sent for it has finished. Here PostgreSQL is behind a fault proxy that delays the pooler's cancel
// connections, so a cancel can be made to land while the server would already run another query.
describe('a late cancel never reaches the next client of the server', () => {
  const { px, pp } = proxiedPooler({ default_pool_size: '1' }, 'slowcancel');

  const client = () => connectClient({ connectionString: pp().url(USER, '', 'slowcancel'), connectionTimeoutMillis: CONNECT_TIMEOUT_MS });

  /** Send a CancelRequest whose forwarded connection the proxy delays by `delayMs`; resolves once
   * the pooler has opened that connection (later ones get other delays), with the request's close
   * to wait for: the pooler closes it once the cancel has landed. */
  async function cancelDelayed(key: { pid: number; secret: Buffer }, delayMs: number): Promise<{ closed: Promise<void> }> {
    const accepted = px().accepted;
    px().set({ delayMs });
    const closed = sendCancelRequest(pp().port, key.pid, key.secret);
    closed.catch(() => undefined);
    await waitFor('the pooler to forward the cancel', async () => px().accepted > accepted, 2_000);
    return { closed };
  }

  /** One round: A's long query is canceled by the cancels `send` sends, while B waits for the
   * pool's one server with a query of `bSleepS`; B's query must succeed. */
  async function round(a: pg.Client, b: pg.Client, bSleepS: number, send: () => Promise<void>): Promise<void> {
    const qa = a.query(`SELECT pg_sleep(${SLEEP_S}) /* race-a */`).then(() => null, (e: PgError) => e);
    await waitActive('race-a');
    const qb = b.query(`SELECT pg_sleep(${bSleepS}) AS slept`).then((r) => r.rows, (e: PgError) => e);
    await send();
    px().set({ delayMs: 0, jitterMs: 0 });
    const ea = await within(10_000, "A's canceled query", qa);
    assert.equal(ea?.code, '57014', `A: ${ea?.message ?? 'not canceled'}`);
    const rb = await within(10_000, "B's query", qb);
    assert.ok(!(rb instanceof Error), `a cancel sent for A canceled B's query on the reused server: ${rb instanceof Error ? rb.message : ''}`);
  }

  it('a cancel landing after the first one ended the query waits with the server until it is done', async () => {
    const [a, b] = [await client(), await client()];
    try {
      // The first cancel lands after 100 ms, the second after 700 ms: by then the server would run
      // B's one-second query.
      await round(a, b, 1, async () => {
        const first = await cancelDelayed(keyOf(a), 100);
        const second = await cancelDelayed(keyOf(a), 700);
        await Promise.all([first.closed, second.closed]);
      });
      assert.deepEqual((await a.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    } finally {
      await Promise.all([a.end().catch(() => undefined), b.end().catch(() => undefined)]);
    }
  });

  it('hammered: 10 rounds of 20 cancels at once, landing over 600 ms, cancel only the client they were for', async () => {
    const [a, b] = [await client(), await client()];
    try {
      for (let r = 0; r < 10; r++) {
        await round(a, b, 0.3, async () => {
          px().set({ jitterMs: 600 });
          const key = keyOf(a);
          await Promise.all(Array.from({ length: 20 }, () => sendCancelRequest(pp().port, key.pid, key.secret)));
        });
      }
    } finally {
      await Promise.all([a.end().catch(() => undefined), b.end().catch(() => undefined)]);
    }
  });
});

// The connection a CancelRequest came on, as PgBouncer keeps it (cl_waiting_cancel_req, then
// cl_active_cancel_req): open until PostgreSQL has closed the connection the cancel was forwarded
// on, so a client's cancel call returns once the cancel has landed, as it does against PostgreSQL
// (a query sent after it is not hit by it); closed with PgBouncer's reason; and ended by
// cancel_wait_timeout when the forward is slow, the forward going on. PostgreSQL is behind a fault
// proxy that delays the forwarded connections.
describe('a CancelRequest connection is held until its cancel has landed', () => {
  const { px, pp } = proxiedPooler({ default_pool_size: '2', admin_users: USER, cancel_wait_timeout: '1' }, 'held');

  const client = (db = 'held') => connectClient({ connectionString: pp().url(USER, '', db), connectionTimeoutMillis: CONNECT_TIMEOUT_MS });

  /** `columns` of SHOW POOLS' row for `held`, as "name=value ...". */
  async function poolColumns(con: pg.Client, columns: string[]): Promise<string> {
    const r = await con.query({ text: 'SHOW POOLS', rowMode: 'array' });
    const names = r.fields.map((f) => f.name);
    const row = (r.rows as unknown[][]).find((x) => x[names.indexOf('database')] === 'held');
    assert.ok(row, 'no SHOW POOLS row for held');
    return columns.map((n) => `${n}=${String(row[names.indexOf(n)])}`).join(' ');
  }
  const CANCEL_COLUMNS = ['cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active_cancel'];

  it('stays open while the forward is on its way, listed in SHOW POOLS, and closes once PostgreSQL has acted on it', async () => {
    const [a, con] = [await client(), await client('pgbouncer')];
    try {
      const q = a.query(`SELECT pg_sleep(${SLEEP_S}) /* held-a */`).then(() => null, (e: PgError) => e);
      await waitActive('held-a');
      px().set({ delayMs: 500 });
      const key = keyOf(a);
      const t0 = Date.now();
      const cancel = sendCancelRequest(pp().port, key.pid, key.secret);
      await waitFor('SHOW POOLS to list the cancel on its way', async () =>
        (await poolColumns(con, CANCEL_COLUMNS)) === 'cl_active_cancel_req=1 cl_waiting_cancel_req=0 sv_active_cancel=1', 2_000);
      await cancel;
      const ms = Date.now() - t0;
      assert.ok(ms >= 400, `the cancel connection closed after ${ms} ms, before its forward (delayed 500 ms) could land`);
      const e = await within(5_000, 'the canceled query', q);
      assert.equal(e?.code, '57014', `not canceled: ${e?.message ?? 'it finished'}`);
      await pp().waitForLog(/closing because: successfully sent cancel request/, 2_000);
      assert.equal(await poolColumns(con, CANCEL_COLUMNS), 'cl_active_cancel_req=0 cl_waiting_cancel_req=0 sv_active_cancel=0');
    } finally {
      px().set({ delayMs: 0 });
      await Promise.all([a.end().catch(() => undefined), con.end().catch(() => undefined)]);
    }
  });

  it('cancel_wait_timeout closes a request whose cancel has not landed; one already sent still holds its server until it has', async () => {
    const [a, con] = [await client(), await client('pgbouncer')];
    const openBefore = px().open;
    try {
      const q = a.query('SELECT pg_sleep(1.5) AS slept /* held-b */').then((r) => r.rows, (e: PgError) => e);
      await waitActive('held-b');
      // The forwarded packet reaches PostgreSQL after 3 s, past cancel_wait_timeout (1 s) and
      // after the query's end.
      px().set({ delayMs: 3_000 });
      const key = keyOf(a);
      const t0 = Date.now();
      await sendCancelRequest(pp().port, key.pid, key.secret, { timeoutMs: 5_000 });
      const ms = Date.now() - t0;
      assert.ok(ms >= 900 && ms < 2_500, `the cancel connection closed after ${ms} ms; cancel_wait_timeout is 1 s`);
      await pp().waitForLog(/closing because: cancel_wait_timeout/, 2_000);
      const rows = await within(5_000, 'the query', q);
      assert.ok(!(rows instanceof Error), `the query failed: ${rows instanceof Error ? rows.message : ''}`);
      // Its cancel is still on its way: the server waits for it, serving no one.
      assert.equal(await poolColumns(con, ['sv_being_canceled', 'sv_active_cancel']), 'sv_being_canceled=1 sv_active_cancel=1');
      await waitFor('the cancel to land', async () => px().open <= openBefore + 1, 5_000);
      await waitFor('the server to be free again', async () =>
        (await poolColumns(con, ['sv_being_canceled', 'sv_active_cancel'])) === 'sv_being_canceled=0 sv_active_cancel=0', 2_000);
    } finally {
      px().set({ delayMs: 0 });
      await Promise.all([a.end().catch(() => undefined), con.end().catch(() => undefined)]);
    }
  });

  it('a key that matches nothing, or a client with no query running, is closed at once with its reason', async () => {
    const a = await client();
    try {
      await sendCancelRequest(pp().port, 12345, Buffer.from([1, 2, 3, 4]), { timeoutMs: 1_000 });
      await pp().waitForLog(/closing because: failed cancel request/, 2_000);
      const key = keyOf(a);
      await sendCancelRequest(pp().port, key.pid, key.secret, { timeoutMs: 1_000 });
      await pp().waitForLog(/closing because: cancel request for idle client/, 2_000);
      assert.deepEqual((await a.query('SELECT 1 AS x')).rows, [{ x: 1 }]);
    } finally {
      await a.end().catch(() => undefined);
    }
  });
});

// A cancel whose connection to PostgreSQL never completes (its SYNs dropped, as when a firewall
// drops packets: PgBouncer's test_cancel_wait_timeout) is given up at cancel_wait_timeout and never
// sent, and the server it was for goes back to the pool. PostgreSQL is behind a fault proxy; once
// the query runs, the proxy stops listening and a listener with a full accept queue takes its port.
describe('a cancel that cannot be forwarded', () => {
  it('is closed at cancel_wait_timeout and not sent later; its server serves the next query', async () => {
    const proxy = await startFaultProxy({ host: c().host, port: c().port });
    const pooler = await startPooler({
      pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', default_pool_size: '1', cancel_wait_timeout: '1' },
      databases: { deaf: `host=127.0.0.1 port=${proxy.port} dbname=p0` },
    });
    let deaf: { close(): Promise<void> } | undefined;
    try {
      const a = await connectClient({ connectionString: pooler.url(USER, '', 'deaf'), connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
      try {
        const q = a.query('SELECT pg_sleep(2) AS slept /* deaf-a */').then((r) => r.rows, (e: PgError) => e);
        await waitActive('deaf-a');
        await proxy.stopListening();
        deaf = await startDeafListener(proxy.port);
        const key = keyOf(a);
        const t0 = Date.now();
        await sendCancelRequest(pooler.port, key.pid, key.secret, { timeoutMs: 5_000 });
        const ms = Date.now() - t0;
        assert.ok(ms >= 900 && ms < 2_500, `the cancel connection closed after ${ms} ms; cancel_wait_timeout is 1 s`);
        await pooler.waitForLog(/closing because: cancel_wait_timeout/, 2_000);
        const rows = await within(5_000, 'the query', q);
        assert.ok(!(rows instanceof Error), `the query failed: ${rows instanceof Error ? rows.message : ''}`);
        // The server was not held for the cancel that was never sent.
        assert.deepEqual((await within(2_000, 'the next query', a.query('SELECT 1 AS x'))).rows, [{ x: 1 }]);
      } finally {
        await a.end().catch(() => undefined);
      }
    } finally {
      await pooler.stop('SIGTERM', 3_000);
      await deaf?.close();
      await proxy.close();
    }
  });
});
