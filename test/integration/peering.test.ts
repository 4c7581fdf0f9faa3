// Several pooler processes as one (issue 14 §1): so_reuseport puts them on one port and the
// kernel spreads the clients; cancel keys carry the peer_id in PgBouncer's layout, so a
// CancelRequest that lands on the wrong process is forwarded to the right one over [peers]
// (protocol 3.2's long keys too); SHOW PEERS and SHOW PEER_POOLS; a draining process still takes
// the cancels its peers forward until its last client has left; a rolling restart under pgbench
// loses nothing; and a real PgBouncer 1.21+ peer, when one is available, forwards our keys and we
// forward its keys.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { cstr, msg, startupPacket } from '../support/bytes.js';
import { connectClient, endAll, queryOnce, type PgError } from '../support/pg-client.js';
import { canceled, keyOf, keyPeerId, longQuery, peerIni, peerLayout, removeLayout, runs, startPeer, type PeerLayout } from '../support/peers.js';
import { iniText, runMain, type IniSections, type Pooler } from '../support/pooler.js';
import { RawConn, sendCancelRequest, type BackendMessage } from '../support/raw-client.js';
import { pgbench, runCommand } from '../support/run-cmd.js';
import { dumpLogsOnFailure, useSetup } from '../support/suite.js';
import { sleep, waitFor, within } from '../support/wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const USER = 'k_peering';
const V32 = 0x0003_0002;

const { c } = useSetup({ cluster: { name: 'peering' }, roles: [USER], dumpLogs: { clusterLines: 100 } });

function base(): IniSections {
  return {
    pgbouncer: { auth_type: 'trust', pool_mode: 'transaction', admin_users: USER, default_pool_size: '4' },
    databases: { p0: `host=127.0.0.1 port=${c().port} dbname=p0` },
  };
}

const running: Pooler[] = [];
const layouts: PeerLayout[] = [];
dumpLogsOnFailure({ poolers: () => running, poolerLines: 80 });
after(async () => {
  await Promise.all(running.map((p) => p.stop('SIGTERM', 3_000)));
  await c().terminateBackends({ user: USER }).catch(() => 0);
  for (const l of layouts) await removeLayout(l);
});

async function group(ids: number[], opts: { shared?: boolean; peerAddr?: 'unix' | 'tcp' } = {}): Promise<{ layout: PeerLayout; peers: Map<number, Pooler> }> {
  const layout = await peerLayout(ids, opts);
  layouts.push(layout);
  const peers = new Map<number, Pooler>();
  for (const id of ids) {
    const p = await startPeer(layout, id, base());
    running.push(p);
    peers.set(id, p);
  }
  return { layout, peers };
}

async function stopAll(peers: Map<number, Pooler>): Promise<void> {
  await Promise.all([...peers.values()].map((p) => p.stop('SIGQUIT', 3_000)));
}

function tcpConfig(layout: PeerLayout, id: number): pg.ClientConfig {
  return { host: '127.0.0.1', port: layout.ports.get(id)!, user: USER, database: 'p0', connectionTimeoutMillis: 10_000 };
}

function unixConfig(layout: PeerLayout, id: number, database = 'p0'): pg.ClientConfig {
  return { host: layout.dirs.get(id)!, port: layout.ports.get(id)!, user: USER, database, connectionTimeoutMillis: 10_000 };
}

function socketPath(layout: PeerLayout, id: number): string {
  return path.join(layout.dirs.get(id)!, `.s.PGSQL.${layout.ports.get(id)!}`);
}

/** `work` is still running after `ms`. */
async function notCanceled(work: Promise<unknown>, ms: number, what: string): Promise<void> {
  const early = await Promise.race([work.then(() => 'finished', (e: PgError) => e.code ?? e.message), sleep(ms).then(() => null)]);
  assert.equal(early, null, what);
}

/** For peers 1 and 2 each way: a query on one, canceled by a CancelRequest sent to the other's
 * unix socket; the session goes on. */
async function crossCancels(layout: PeerLayout, name: (id: number) => string): Promise<void> {
  for (const [own, other] of [[1, 2], [2, 1]] as const) {
    const client = await connectClient(unixConfig(layout, own));
    try {
      const key = keyOf(client);
      assert.equal(keyPeerId(key.pid), own);
      const { work } = await longQuery(c(), client, `cross${own}`);
      await sendCancelRequest(0, key.pid, key.secret, { path: socketPath(layout, other) });
      await canceled(work, `a query on ${name(own)} canceled through ${name(other)}`);
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

async function show(layout: PeerLayout, id: number, what: string): Promise<Record<string, unknown>[]> {
  return queryOnce(unixConfig(layout, id, 'pgbouncer'), `SHOW ${what}`);
}

describe('so_reuseport and cancel forwarding between peers', () => {
  let layout: PeerLayout;
  let peers: Map<number, Pooler>;
  before(async () => {
    ({ layout, peers } = await group([1, 2]));
  });
  after(() => stopAll(peers));

  it('two processes listen on one port and the kernel spreads the clients over both (the key names the process)', async () => {
    const clients: pg.Client[] = [];
    try {
      for (let i = 0; i < 24; i++) clients.push(await connectClient(tcpConfig(layout, 1)));
      const ids = clients.map((cl) => keyPeerId(keyOf(cl).pid));
      assert.deepEqual([...new Set(ids)].sort(), [1, 2], `landed on ${ids.join(',')}`);
      for (const cl of clients) assert.equal(keyOf(cl).pid >>> 31, 0, 'the process id of a key stays positive');
    } finally {
      await endAll(clients);
    }
  });

  it('a cancel sent to the other process is forwarded over [peers] and cancels the query', async () => {
    await crossCancels(layout, (id) => `peer ${id}`);
  });

  it('cancels through the shared port always land, whichever process the kernel hands them to', async () => {
    const client = await connectClient(tcpConfig(layout, 1));
    try {
      const key = keyOf(client);
      for (let i = 0; i < 10; i++) {
        const { work } = await longQuery(c(), client, `shared${i}`);
        await sendCancelRequest(layout.ports.get(1)!, key.pid, key.secret);
        await canceled(work, `round ${i}`);
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('protocol 3.2: a long key carries the peer id too and is forwarded whole', async () => {
    const { conn, login } = await RawConn.login(0, { user: USER, database: 'p0' }, { version: V32, path: socketPath(layout, 2), timeoutMs: 40_000 });
    try {
      const k = login.find((m: BackendMessage) => m.type === 'K');
      assert.ok(k !== undefined, 'no BackendKeyData');
      assert.equal(k.body.length, 4 + 32, 'a 32-byte secret');
      const pid = k.body.readInt32BE(0);
      assert.equal(keyPeerId(pid), 2);
      conn.send(msg('Q', cstr(`SELECT pg_sleep(30) /* long32 */`)));
      await runs(c(), 'long32');
      await sendCancelRequest(0, pid, Buffer.from(k.body.subarray(4)), { path: socketPath(layout, 1) });
      const reply = await conn.until('Z', { onError: 'keep' });
      const err = reply.find((m) => m.type === 'E');
      assert.ok(err !== undefined && err.body.includes(Buffer.from('C57014\0')), 'canceled with 57014');
    } finally {
      conn.destroy();
    }
  });

  it('SHOW PEERS lists [peers]; SHOW PEER_POOLS and SHOW LISTS count the peer pools used', async () => {
    assert.deepEqual(await show(layout, 1, 'PEERS'), [
      { peer_id: 1, host: layout.dirs.get(1), port: layout.ports.get(1), pool_size: 4 },
      { peer_id: 2, host: layout.dirs.get(2), port: layout.ports.get(2), pool_size: 4 },
    ]);
    // Peer 1 forwarded cancels to peer 2 above; nothing is in flight now.
    const pools = await show(layout, 1, 'PEER_POOLS');
    assert.deepEqual(pools, [{ peer_id: 2, cl_active_cancel_req: 0, cl_waiting_cancel_req: 0, sv_active_cancel: 0, sv_login: 0 }]);
    const lists = Object.fromEntries((await show(layout, 1, 'LISTS')).map((r) => [r.list, r.items]));
    assert.equal(lists.peers, 2);
    assert.equal(lists.peer_pools, 1);
  });

  it('a key whose forwards are spent, or that names no peer, is dropped; the query runs on', async () => {
    const client = await connectClient(unixConfig(layout, 1));
    try {
      const key = keyOf(client);
      const { work } = await longQuery(c(), client, 'spent');
      // Forwards left are the low two bits of the key's last byte (PgBouncer's TTL).
      const spent = Buffer.from(key.secret);
      spent[3] = spent[3]! & 0xfc;
      await sendCancelRequest(0, key.pid, spent, { path: socketPath(layout, 2) });
      // Peer id 99 is in no [peers].
      const unknownPid = (key.pid & ~0x00ffff00) | (99 << 16);
      await sendCancelRequest(0, unknownPid, key.secret, { path: socketPath(layout, 2) });
      await notCanceled(work, 1_000, 'a dropped cancel request must not cancel');
      await sendCancelRequest(0, key.pid, key.secret, { path: socketPath(layout, 2) });
      await canceled(work, 'the right key still works');
    } finally {
      await client.end().catch(() => undefined);
    }
  });
});

describe('a draining process', () => {
  it('keeps taking the cancels its peers forward until its last client has left (through the shared port)', async () => {
    const { layout, peers } = await group([1, 2]);
    try {
      const client = await connectClient(unixConfig(layout, 1));
      const key = keyOf(client);
      const { work } = await longQuery(c(), client, 'draining');
      const exited = peers.get(1)!.stop('SIGTERM', 20_000);
      await peers.get(1)!.waitForLog(/shutting down/);
      // The draining process no longer takes clients: the shared port is peer 2's alone.
      for (let i = 0; i < 8; i++) {
        const cl = await connectClient(tcpConfig(layout, 1));
        assert.equal(keyPeerId(keyOf(cl).pid), 2);
        await cl.end();
      }
      await sendCancelRequest(layout.ports.get(1)!, key.pid, key.secret);
      await canceled(work, 'a query on the draining process, canceled through the shared port');
      await client.end();
      assert.deepEqual(await within(10_000, 'the drained process exits', exited), { code: 0, signal: null });
    } finally {
      await stopAll(peers);
    }
  });
});

describe('a client in flight when the drain begins', () => {
  it('connected before SIGTERM, it logs in and is served: a rolling restart loses no connection being made', async () => {
    const layout = await peerLayout([1]);
    layouts.push(layout);
    const p = await startPeer(layout, 1, base());
    running.push(p);
    // The TCP connection is accepted; its StartupMessage comes only after the drain began.
    const conn = await RawConn.connect(layout.ports.get(1)!, { timeoutMs: 10_000 });
    try {
      // By its port: the start-up readiness probe's connection can still be a login client too.
      const port = (conn.sock as net.Socket).localPort;
      await waitFor('the pooler has the connection', async () => (await show(layout, 1, 'SOCKETS')).some((r) => r.state === 'cl_login' && Number(r.port) === port));
      const exited = p.stop('SIGTERM', 20_000);
      await p.waitForLog(/shutting down/);
      conn.send(startupPacket({ user: USER, database: 'p0' }));
      const login = await conn.until('Z', { onError: 'stop' });
      assert.deepEqual(login.filter((m) => m.type === 'E').map((m) => m.body.toString('latin1')), [], 'refused');
      conn.send(msg('Q', cstr('SELECT 1')));
      const reply = await conn.until('Z');
      assert.ok(reply.some((m) => m.type === 'D'), 'the query was answered');
      conn.send(msg('X'));
      assert.deepEqual(await within(10_000, 'the drained pooler exits', exited), { code: 0, signal: null });
    } finally {
      conn.destroy();
    }
  });
});

describe('rolling restart', () => {
  /** pgbench for `seconds` through the shared port while `restart` runs; its output. */
  async function underLoad(layout: PeerLayout, connectEach: boolean, restart: () => Promise<void>): Promise<string> {
    const script = path.join(layout.dirs.get(1)!, 'select.sql');
    await fsp.writeFile(script, 'SELECT 1;\n');
    const args = ['-n', '-f', script, '-c', '4', '-j', '2', '-T', '8', '-h', '127.0.0.1', '-p', String(layout.ports.get(1)!), '-U', USER, 'p0'];
    const bench = pgbench(connectEach ? ['-C', ...args] : args, { timeoutMs: 60_000 });
    await sleep(2_000);
    await restart();
    const r = await bench;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return r.stdout;
  }

  for (const connectEach of [false, true]) {
    it(`a new process on the port, then SIGTERM to the old: pgbench${connectEach ? ' -C (a connection per transaction)' : ''} reports 0 failed transactions`, async () => {
      const layout = await peerLayout([1, 2]);
      layouts.push(layout);
      const old = await startPeer(layout, 1, base());
      running.push(old);
      let fresh: Pooler | undefined;
      try {
        const out = await underLoad(layout, connectEach, async () => {
          fresh = await startPeer(layout, 2, base());
          running.push(fresh);
          const exited = old.stop('SIGTERM', 30_000);
          await old.waitForLog(/shutting down/);
          if (connectEach) assert.deepEqual(await within(10_000, 'the old process exits', exited), { code: 0, signal: null });
        });
        const tx = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);
        assert.ok(tx > 0, out);
        assert.match(out, /number of failed transactions: 0 /, out);
        assert.deepEqual(await old.exited, { code: 0, signal: null });
      } finally {
        await old.stop('SIGQUIT', 3_000);
        await fresh?.stop('SIGQUIT', 3_000);
      }
    });
  }
});

describe('so_reuseport without the native addon', () => {
  it('is a startup error that names the fix', async () => {
    // A copy of the compiled pooler with no native/ next to it, as after `npm ci --ignore-scripts`.
    const bare = await fsp.mkdtemp(path.join(os.tmpdir(), 'pgpool-noaddon-'));
    try {
      await fsp.cp(path.join(ROOT, 'dist/src'), path.join(bare, 'dist/src'), { recursive: true });
      await fsp.symlink(path.join(ROOT, 'node_modules'), path.join(bare, 'node_modules'));
      await fsp.copyFile(path.join(ROOT, 'package.json'), path.join(bare, 'package.json'));
      const ini = path.join(bare, 'pgpool.ini');
      await fsp.writeFile(ini, `[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 1\nunix_socket_dir =\nso_reuseport = 1\nauth_type = trust\n[databases]\np0 = host=127.0.0.1\n`);
      for (const args of [['-c', ini], ['--check', '-c', ini]]) {
        const r = await runCommand(process.execPath, [path.join(bare, 'dist/src/main.js'), ...args]);
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.match(r.stderr, /so_reuseport = 1 cannot be used because the native addon was not built; build it with "npm run build:native"/);
      }
    } finally {
      await fsp.rm(bare, { recursive: true, force: true });
    }
  });

  it('--check accepts it where the addon is built', async () => {
    const layout = await peerLayout([1]);
    layouts.push(layout);
    const ini = path.join(layout.dirs.get(1)!, 'check.ini');
    await fsp.writeFile(ini, iniText(peerIni(layout, 1, base())));
    const r = await runMain(['--check', '-c', ini]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
});

// ------------------------------------------------------------------------------------------------
// A real PgBouncer peer

/** A PgBouncer with peering as 1.21+ lays the key out: PGPOOL_TEST_PGBOUNCER, else pgbouncer on PATH. */
function pgbouncerWithPeering(): string | null {
  const bin = process.env.PGPOOL_TEST_PGBOUNCER || 'pgbouncer';
  try {
    const v = /PgBouncer (\d+)\.(\d+)/.exec(execFileSync(bin, ['--version'], { encoding: 'utf8' }));
    if (v !== null && (Number(v[1]) > 1 || Number(v[2]) >= 21)) return bin;
  } catch {
    // not installed
  }
  return null;
}

describe('interoperability with PgBouncer peers', () => {
  const bin = pgbouncerWithPeering();
  it('PgBouncer 1.21+ and pgpool-ts as peers forward each other\'s cancels', async (t) => {
    if (bin === null) return t.skip('needs PgBouncer 1.21+ (PGPOOL_TEST_PGBOUNCER=/path/to/pgbouncer, or on PATH)');
    // Ports of their own: the kernel puts only sockets of one user in a so_reuseport group, and
    // PgBouncer runs as postgres here (it refuses root). Sharing a port is shown above.
    const layout = await peerLayout([1, 2], { shared: false });
    layouts.push(layout);
    const ours = await startPeer(layout, 2, base());
    running.push(ours);
    const theirs = await startPgbouncer(bin, layout, 1);
    try {
      await crossCancels(layout, (id) => (id === 1 ? 'PgBouncer' : 'pgpool-ts'));
    } finally {
      await ours.stop('SIGQUIT', 3_000);
      await theirs();
    }
  });
});

/** PgBouncer as peer `id` (as the postgres OS user when we are root: it refuses root); its stop. */
async function startPgbouncer(bin: string, layout: PeerLayout, id: number): Promise<() => Promise<void>> {
  const dir = layout.dirs.get(id)!;
  const sections = peerIni(layout, id, base());
  // PgBouncer's trust still wants the user in an auth_file.
  const users = path.join(dir, 'userlist.txt');
  await fsp.writeFile(users, `"${USER}" ""\n`);
  sections.pgbouncer = { ...sections.pgbouncer, auth_file: users, logfile: path.join(dir, 'pgbouncer.log'), pidfile: path.join(dir, 'pgbouncer.pid') };
  const ini = path.join(dir, 'pgbouncer.ini');
  await fsp.writeFile(ini, iniText(sections));
  const root = process.getuid?.() === 0;
  if (root) execFileSync('chown', ['-R', 'postgres', dir]);
  const cmd = root ? ['runuser', '-u', 'postgres', '--', bin, '-d', ini] : [bin, '-d', ini];
  const r = await runCommand(cmd[0]!, cmd.slice(1));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const log = path.join(dir, 'pgbouncer.log');
  await waitFor('PgBouncer listens', async () => fs.existsSync(socketPath(layout, id))).catch((e: Error) => {
    throw new Error(`${e.message}\n${fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : 'no log'}`);
  });
  return async () => {
    const pid = Number(fs.readFileSync(path.join(dir, 'pgbouncer.pid'), 'utf8'));
    process.kill(pid, 'SIGINT');
    await waitFor('PgBouncer exits', async () => !fs.existsSync(path.join(dir, 'pgbouncer.pid')));
  };
}
