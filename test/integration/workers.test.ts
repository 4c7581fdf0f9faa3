// Every core in one command (issue 14 §2): `workers = 2` starts two worker processes on one port
// under a main process, and the instance is still one pooler to use and to operate. Clients land
// on both workers, TCP and unix socket alike; cancels land whichever worker gets them; the console
// shows the whole instance (every client, pool totals); /metrics adds the workers up; the limits
// hold for the instance, pushed; RELOAD reaches every worker or none; PAUSE, RESUME and SHUTDOWN
// act on all; a worker killed with SIGKILL loses only its own clients and is started again; and
// the signals keep PgBouncer's meaning, with exit 0.

import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import type pg from 'pg';
import { connectClient, endAll, queryOnce, type PgError } from '../support/pg-client.js';
import { canceled, keyOf, longQuery } from '../support/peers.js';
import { freePort, startPooler, type IniSections, type Pooler } from '../support/pooler.js';
import { sendCancelRequest } from '../support/raw-client.js';
import { dumpLogsOnFailure, messageOf, useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const USER = 'k_workers';

const { c } = useSetup({ cluster: { name: 'workers' }, roles: [USER], dumpLogs: { clusterLines: 40 } });

const running: Pooler[] = [];
const all: Pooler[] = [];
dumpLogsOnFailure({ poolers: () => all, poolerLines: 120 });
after(async () => {
  await Promise.all(running.map((p) => p.stop('SIGQUIT', 5_000)));
  await c().terminateBackends({ user: USER }).catch(() => 0);
});

/** A fresh instance; the one before is stopped first, so the server connections PostgreSQL
 * lists are this one's. */
async function instance(pgbouncer: Record<string, string> = {}): Promise<Pooler & { metricsPort: number }> {
  await Promise.all(running.splice(0).map((p) => p.stop('SIGQUIT', 5_000)));
  await waitFor('no server connection left', async () => (await serverConnections()) === 0);
  const metricsPort = await freePort();
  const ini: IniSections = {
    pgbouncer: {
      auth_type: 'trust',
      pool_mode: 'transaction',
      workers: '2',
      admin_users: USER,
      default_pool_size: '4',
      metrics_port: String(metricsPort),
      ...pgbouncer,
    },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
  };
  const p = await startPooler(ini, { readyTimeoutMs: 20_000 });
  running.push(p);
  all.push(p);
  await p.waitForLog(/instance of 2 workers up/, 20_000);
  return Object.assign(p, { metricsPort });
}

function tcp(p: Pooler): pg.ClientConfig {
  return { host: '127.0.0.1', port: p.port, user: USER, database: 'p0', connectionTimeoutMillis: 10_000 };
}

function unix(p: Pooler, database = 'p0'): pg.ClientConfig {
  return { host: p.dir, port: p.port, user: USER, database, connectionTimeoutMillis: 10_000 };
}

/** The worker that minted a client's cancel key (byte 3 of the key). */
function workerOf(client: pg.Client): number {
  return keyOf(client).pid & 0xff;
}

function console_(p: Pooler, sql: string): Promise<Record<string, unknown>[]> {
  return queryOnce(unix(p, 'pgbouncer'), sql);
}

/** Connect until clients sit on both workers (the kernel spreads by a hash of the addresses). */
async function onBothWorkers(config: pg.ClientConfig, atLeast: number): Promise<pg.Client[]> {
  const clients: pg.Client[] = [];
  while (clients.length < atLeast || new Set(clients.map(workerOf)).size < 2) {
    assert.ok(clients.length < 64, 'every connection went to one worker');
    clients.push(await connectClient(config));
  }
  return clients;
}

/** The pid a worker logged its start with ("worker N of 2 up"), the last time it started. The
 * workers write to the output they share with the main process: a worker's line may come after
 * the main process's "instance … up". */
async function workerPid(p: Pooler, index: number): Promise<number> {
  await p.waitForLog(new RegExp(`worker ${index} of 2 up`));
  const line = p.logs().filter((l) => messageOf(l).includes(`worker ${index} of 2 up`)).at(-1);
  const pid = line === undefined ? null : (/"pid":(\d+)/.exec(line) ?? /\[(\d+)\]/.exec(line))?.[1];
  assert.ok(pid !== undefined && pid !== null, `no start line of worker ${index}`);
  return Number(pid);
}

async function serverConnections(): Promise<number> {
  const r = await c().query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'`, 'postgres', [USER]);
  return Number(r.rows[0]!.n);
}

describe('one instance, two workers', () => {
  it('clients land on both workers, over TCP and the unix socket; the console lists every client and totals the pools', async () => {
    const p = await instance();
    const clients = [...(await onBothWorkers(tcp(p), 8)), ...(await onBothWorkers(unix(p), 4))];
    try {
      for (const cl of clients) assert.deepEqual((await cl.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      const rows = (await console_(p, 'SHOW CLIENTS')).filter((r) => r.database === 'p0');
      assert.equal(rows.length, clients.length);
      const ids = rows.map((r) => Number(r.id));
      assert.equal(new Set(ids).size, ids.length, 'connection ids are unique in the instance');
      assert.deepEqual([...new Set(ids.map((id) => (id % 2) + 1))].sort(), [1, 2], 'an id says its worker');
      const pools = (await console_(p, 'SHOW POOLS')).filter((r) => r.database === 'p0');
      assert.equal(pools.length, 1, 'one row per pool for the instance');
      assert.equal(pools[0]!.cl_active, clients.length);
      const lists = Object.fromEntries((await console_(p, 'SHOW LISTS')).map((r) => [r.list, r.items]));
      assert.equal(lists.databases, 2);
      assert.ok(Number(lists.used_clients) >= clients.length);
      const state = Object.fromEntries((await console_(p, 'SHOW STATE')).map((r) => [r.key, r.value]));
      assert.deepEqual(state, { active: 'yes', paused: 'no', suspended: 'no' });
    } finally {
      await endAll(clients);
    }
  });

  it('cancels land whichever worker the kernel hands them to', async () => {
    const p = await instance();
    const clients = await onBothWorkers(tcp(p), 4);
    try {
      for (const [i, client] of clients.entries()) {
        const key = keyOf(client);
        for (let round = 0; round < 3; round++) {
          const { work } = await longQuery(c(), client, `w${i}r${round}`);
          await sendCancelRequest(p.port, key.pid, key.secret);
          await canceled(work, `client ${i} on worker ${workerOf(client)}, round ${round}`);
        }
      }
    } finally {
      await endAll(clients);
    }
  });

  it('/metrics adds the workers up (prom-client cluster aggregation); /healthz', async () => {
    const p = await instance();
    const clients = await onBothWorkers(tcp(p), 6);
    try {
      const text = await (await fetch(`http://127.0.0.1:${p.metricsPort}/metrics`)).text();
      const value = (series: string): number => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
      assert.equal(value(`pgbouncer_pools_client_active_connections{database="p0",user="${USER}"}`), clients.length, text);
      assert.equal(value('pgbouncer_up'), 1);
      assert.equal(value('pgbouncer_config_max_client_connections'), 100, 'a setting is not summed');
      assert.equal((await fetch(`http://127.0.0.1:${p.metricsPort}/healthz`)).status, 200);
    } finally {
      await endAll(clients);
    }
  });
});

describe('limits hold for the instance', () => {
  it('max_client_conn = 4: four clients in, whichever workers they land on; the fifth is refused', async () => {
    const p = await instance({ max_client_conn: '4' });
    const clients: pg.Client[] = [];
    let refused = 0;
    try {
      for (let i = 0; i < 10; i++) {
        try {
          clients.push(await connectClient(tcp(p)));
        } catch (e) {
          assert.match((e as PgError).message, /no more connections allowed \(max_client_conn\)/);
          refused++;
        }
      }
      assert.equal(clients.length, 4);
      assert.equal(refused, 6);
      // One leaves: one more gets in, on any worker.
      await clients.pop()!.end();
      await waitFor('a slot frees', async () => {
        const cl = await connectClient(tcp(p)).catch(() => null);
        if (cl !== null) clients.push(cl);
        return cl !== null;
      });
    } finally {
      await endAll(clients);
    }
  });

  for (const [name, setting, cap] of [
    ['pool_size = 2', { default_pool_size: '2' }, 2],
    ['max_db_connections = 3', { default_pool_size: '10', max_db_connections: '3' }, 3],
    ['max_user_connections = 2', { default_pool_size: '10', max_user_connections: '2' }, 2],
  ] as const) {
    it(`${name}: never more server connections, with busy clients on both workers; all of them served`, async () => {
      const p = await instance({ ...setting, server_idle_timeout: '60' });
      const clients = await onBothWorkers(tcp(p), 8);
      let most = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          most = Math.max(most, await serverConnections());
          await sleep(20);
        }
      })();
      try {
        // Two rounds: the second needs servers that the first left idle in the other worker.
        for (let round = 0; round < 2; round++) {
          await within(30_000, 'every query done', Promise.all(clients.map((cl) => cl.query('SELECT pg_sleep(0.2)'))));
        }
      } finally {
        sampling = false;
        await sampler;
        await endAll(clients);
      }
      assert.ok(most <= cap, `${most} server connections, ${name}`);
      assert.ok(most > 0);
    });
  }
});

describe('operating the instance', () => {
  it('RELOAD reaches every worker; a broken file changes none; SIGHUP likewise', async () => {
    const p = await instance();
    const reloaded = (from: number): number => p.logs().slice(from).filter((l) => messageOf(l) === 'configuration reloaded').length;
    let from = p.logs().length;
    await console_(p, 'RELOAD');
    await waitFor('both workers reloaded', async () => reloaded(from) === 2);
    const good = await fsp.readFile(p.iniPath, 'utf8');
    await fsp.writeFile(p.iniPath, `${good}\npool_mode = sometimes\n`);
    from = p.logs().length;
    await assert.rejects(console_(p, 'RELOAD'), /pool_mode/);
    p.reload();
    await p.waitForLog(/reload failed, keeping old configuration/);
    await sleep(300);
    assert.equal(reloaded(from), 0, 'no worker reloaded a broken file');
    await fsp.writeFile(p.iniPath, good);
    from = p.logs().length;
    p.reload();
    await waitFor('both workers reloaded on SIGHUP', async () => reloaded(from) === 2);
  });

  it('PAUSE and RESUME act on every worker; SHUTDOWN WAIT_FOR_CLIENTS stops the whole instance, exit 0', async () => {
    const p = await instance();
    const clients = await onBothWorkers(tcp(p), 4);
    try {
      const admin = await connectClient(unix(p, 'pgbouncer'));
      await admin.query('PAUSE');
      assert.deepEqual(Object.fromEntries((await admin.query('SHOW STATE')).rows.map((r: { key: string; value: string }) => [r.key, r.value])).paused, 'yes');
      const queries = clients.map((cl) => cl.query('SELECT 1 AS one'));
      assert.equal(await Promise.race([Promise.all(queries).then(() => 'done'), sleep(700).then(() => 'waiting')]), 'waiting', 'paused on both workers');
      await admin.query('RESUME');
      await within(5_000, 'resumed', Promise.all(queries));
      await admin.query('SHUTDOWN WAIT_FOR_CLIENTS');
      await sleep(500);
      await assert.rejects(connectClient(tcp(p)), 'no new clients on any worker');
      for (const cl of clients) await cl.query('SELECT 1');
      await endAll(clients);
      await admin.end().catch(() => undefined);
      assert.deepEqual(await within(15_000, 'the instance exits', p.exited), { code: 0, signal: null });
    } finally {
      await endAll(clients);
    }
  });

  it('a worker killed with SIGKILL loses only its own clients; it is started again', async () => {
    const p = await instance();
    const clients = await onBothWorkers(tcp(p), 6);
    const victim = 1;
    try {
      const from = p.logs().length;
      process.kill(await workerPid(p, victim), 'SIGKILL');
      await p.waitForLog(/worker 1 \(pid \d+\) exited with SIGKILL; restarting it in/);
      for (const cl of clients) {
        const r = cl.query('SELECT 1 AS one').then(() => 'ok', (e: Error) => e.message);
        if (workerOf(cl) === victim) assert.notEqual(await r, 'ok', 'a client of the killed worker is gone');
        else assert.equal(await r, 'ok', 'a client of the other worker goes on');
      }
      await waitFor('worker 1 back', async () => p.logs().slice(from).some((l) => messageOf(l).includes('worker 1 of 2 up')), 15_000);
      const again = await onBothWorkers(tcp(p), 2);
      await endAll(again);
    } finally {
      await endAll(clients);
    }
  });

  it('SIGTERM: no new clients on any worker, connected ones finish, exit 0 once they have left', async () => {
    const p = await instance();
    const clients = await onBothWorkers(tcp(p), 4);
    try {
      process.kill(p.pid, 'SIGTERM');
      await waitFor('both workers draining', async () => p.logs().filter((l) => /shutting down/.test(messageOf(l))).length >= 2);
      await assert.rejects(connectClient(tcp(p)));
      for (const cl of clients) await cl.query('SELECT 1');
      await endAll(clients);
      assert.deepEqual(await within(15_000, 'the instance exits', p.exited), { code: 0, signal: null });
    } finally {
      await endAll(clients);
    }
  });

  it('the main process killed with SIGKILL: the workers stop too, nothing is left on the port', async () => {
    const p = await instance();
    const pids = [await workerPid(p, 1), await workerPid(p, 2)];
    process.kill(p.pid, 'SIGKILL');
    await p.exited;
    const gone = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    };
    await waitFor('the workers exit', async () => pids.every(gone), 10_000);
    await assert.rejects(connectClient(tcp(p)));
  });
});
