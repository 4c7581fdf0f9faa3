// Several poolers acting as one, as PgBouncer's peering has it: each has a peer_id and names the
// others (and itself) in [peers]; they share one port through so_reuseport, or listen on ports of
// their own behind a balancer. Each has its own unix socket dir, which is also where its peers
// reach it (unless `peerAddr` is 'tcp').

import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import type { PgError } from './pg-client.js';
import type { Cluster } from './pg-cluster.js';
import { waitFor, within } from './wait.js';
import { freePort, startPooler, type IniSections, type Pooler, type PoolerOptions } from './pooler.js';

export interface PeerLayout {
  /** peer_id → its TCP port (all the same with so_reuseport). */
  readonly ports: ReadonlyMap<number, number>;
  /** peer_id → its unix socket dir. */
  readonly dirs: ReadonlyMap<number, string>;
  /** How [peers] addresses each peer: its unix socket (default) or its TCP port. */
  readonly peerAddr: 'unix' | 'tcp';
}

/**
 * The layout of peers `ids`: one shared port (so_reuseport) unless `shared` is false, a fresh
 * unix socket dir each. Remove the dirs with removeLayout().
 */
export async function peerLayout(ids: readonly number[], opts: { shared?: boolean; peerAddr?: 'unix' | 'tcp' } = {}): Promise<PeerLayout> {
  const shared = opts.shared ?? true;
  const port = await freePort();
  const ports = new Map<number, number>();
  const dirs = new Map<number, string>();
  for (const id of ids) {
    ports.set(id, shared ? port : await freePort());
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `pgpool-peer${id}-`));
    // Reachable by a peer running as another OS user (a PgBouncer under root runs as postgres).
    await fsp.chmod(dir, 0o755);
    dirs.set(id, dir);
  }
  return { ports, dirs, peerAddr: opts.peerAddr ?? 'unix' };
}

export async function removeLayout(layout: PeerLayout): Promise<void> {
  for (const dir of layout.dirs.values()) await fsp.rm(dir, { recursive: true, force: true });
}

/** The ini of peer `id`: `base` plus its port, socket dir, peer_id and [peers] naming every peer. */
export function peerIni(layout: PeerLayout, id: number, base: IniSections): IniSections {
  const port = layout.ports.get(id)!;
  const shared = new Set(layout.ports.values()).size < layout.ports.size;
  const peers: Record<string, string> = {};
  for (const [other, dir] of layout.dirs) {
    const host = layout.peerAddr === 'unix' ? dir : '127.0.0.1';
    peers[String(other)] = `host=${host} port=${layout.ports.get(other)!}`;
  }
  return {
    ...base,
    pgbouncer: {
      ...base.pgbouncer,
      listen_addr: '127.0.0.1',
      listen_port: String(port),
      unix_socket_dir: layout.dirs.get(id)!,
      so_reuseport: shared ? '1' : '0',
      peer_id: String(id),
    },
    peers,
  };
}

/** Start peer `id`; resolves once it listens (the shared port may answer already for others). */
export async function startPeer(layout: PeerLayout, id: number, base: IniSections, opts: PoolerOptions = {}): Promise<Pooler> {
  const p = await startPooler(peerIni(layout, id, base), opts);
  await p.waitForLog(/listening on/);
  return p;
}

/** The peer_id a pooler put in a cancel key (PgBouncer's layout: bytes 1 and 2, little-endian). */
export function keyPeerId(pid: number): number {
  return ((pid >>> 16) & 0xff) | (((pid >>> 8) & 0xff) << 8);
}

/** The client's cancel key as BackendKeyData gave it (pg keeps the secret as a signed int32). */
export function keyOf(client: pg.Client): { pid: number; secret: Buffer } {
  const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
  const secret = Buffer.alloc(4);
  secret.writeInt32BE(secretKey);
  return { pid: processID, secret };
}

/** Until PostgreSQL runs the query marked `marker`. */
export function runs(cluster: Cluster, marker: string): Promise<void> {
  return waitFor(`${marker} running`, async () => {
    const r = await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, 'postgres', [marker]);
    return r.rowCount === 1;
  });
}

/** pg_sleep(seconds) on `client`, once PostgreSQL runs it; `work` is the query's outcome. */
export async function longQuery(cluster: Cluster, client: pg.Client, marker: string, seconds = 30): Promise<{ work: Promise<unknown> }> {
  const work = client.query(`SELECT pg_sleep(${seconds}) /* ${marker} */`);
  work.catch(() => undefined);
  await runs(cluster, marker);
  return { work };
}

/** `work` fails with 57014 (canceled) within 5 s. */
export async function canceled(work: Promise<unknown>, what: string): Promise<void> {
  const err = await within(5_000, what, work.then(() => assert.fail(`${what}: the query finished`), (e: PgError) => e));
  assert.equal(err.code, '57014', `${what}: ${err.message}`);
}
