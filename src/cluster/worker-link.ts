// A worker's side of a multi-worker instance: its place (index, count, the instance's private
// socket directory), and its requests to the main process: admitting clients and opening server
// connections under the instance's limits, console commands for the whole instance, SHUTDOWN.
// It answers the main process's requests through the WorkerHost the App gives it.
import path from 'node:path';
import type net from 'node:net';
import type { ConsoleOutcome } from '../admin/console.js';
import type { ShutdownMode } from '../app.js';
import type { WorkerSeries } from '../metrics/prometheus.js';
import type { Pool } from '../pool/pool.js';
import { poolKey, type ServerSlots } from '../pool/registry.js';
import type { ClientAsk, ClientRefusal, SlotAsk } from './limits.js';
import { Rpc, type ToMain, type ToWorker } from './protocol.js';

/** The environment variable that makes main.js a worker: `index/count/dir`. */
export const WORKER_ENV = 'PGPOOL_TS_WORKER';

/** What the main process asks of a worker's App. */
export interface WorkerHost {
  runConsole(sql: string, admin: boolean): ConsoleOutcome | Promise<ConsoleOutcome>;
  closeIdleFor(by: 'pool' | 'db' | 'user', name: string, minIdleMs: number): boolean;
  workerMetrics(): Promise<{ series: WorkerSeries; health: string | null }>;
  /** A client that came in on the instance's unix socket, handed over by the main process. */
  acceptUnix(socket: net.Socket): void;
}

/** The private unix socket directory of worker `index` under the instance's `dir`: where its
 * siblings forward cancel requests for its clients. */
export function workerSocketDir(dir: string, index: number): string {
  return path.join(dir, `w${index}`);
}

export class WorkerLink implements ServerSlots {
  private readonly rpc: Rpc<ToMain>;

  constructor(
    /** 1..count. */
    readonly index: number,
    readonly count: number,
    /** The instance's private directory (worker sockets). */
    readonly dir: string,
  ) {
    this.rpc = new Rpc((m) => process.send?.(m));
  }

  /** From WORKER_ENV, or null when this process is not a worker. */
  static fromEnv(env: NodeJS.ProcessEnv): WorkerLink | null {
    const v = env[WORKER_ENV];
    const m = v === undefined ? null : /^(\d+)\/(\d+)\/(.+)$/.exec(v);
    if (m === null) return null;
    return new WorkerLink(Number(m[1]), Number(m[2]), m[3]!);
  }

  /** This worker's own socket directory. */
  get socketDir(): string {
    return workerSocketDir(this.dir, this.index);
  }

  /** Answer the main process's requests; a lost main process (it crashed) stops this worker. */
  attach(host: WorkerHost, lost: () => void): void {
    process.on('message', (m: ToWorker, handle?: net.Socket) => {
      switch (m.t) {
        case 'reply':
          return this.rpc.settle(m);
        case 'run':
          return void Promise.resolve(host.runConsole(m.sql, m.admin)).then((o) => this.rpc.reply(m.id, o));
        case 'evict':
          return this.rpc.reply(m.id, host.closeIdleFor(m.by, m.name, m.minIdleMs));
        case 'metrics':
          return void host.workerMetrics().then((r) => this.rpc.reply(m.id, r));
        case 'conn':
          if (handle !== undefined) host.acceptUnix(handle);
          return;
      }
    });
    process.on('disconnect', () => {
      this.rpc.lose();
      lost();
    });
  }

  ready(): void {
    process.send?.({ t: 'ready' } satisfies ToMain);
  }

  admit(ask: ClientAsk): Promise<ClientRefusal | null> {
    // With the main process gone there is no instance left to admit into.
    return this.rpc.call<'admit'>((id) => ({ t: 'admit', id, ask }), 'max_client_conn');
  }

  leave(db: string, user: string): void {
    process.send?.({ t: 'leave', db, user } satisfies ToMain);
  }

  acquire(pool: Pool): Promise<void> {
    return this.rpc.call<'slot'>((id) => ({ t: 'slot', id, ask: slotAsk(pool) }), null).then(() => undefined);
  }

  release(pool: Pool): void {
    const { pool: key, db, user } = slotAsk(pool);
    process.send?.({ t: 'unslot', key: { pool: key, db, user } } satisfies ToMain);
  }

  console(sql: string, admin: boolean): Promise<ConsoleOutcome> {
    return this.rpc.call<'console'>((id) => ({ t: 'console', id, sql, admin }), { reply: null }).then(reviveBuffers);
  }

  shutdown(mode: ShutdownMode): void {
    process.send?.({ t: 'shutdown', mode } satisfies ToMain);
  }
}

function slotAsk(pool: Pool): SlotAsk {
  return {
    pool: poolKey(pool.dbName, pool.db.user !== null ? null : pool.userName),
    db: pool.db.name,
    user: pool.serverUser,
    cap: pool.serverCap,
    maxDb: pool.maxDbConnections,
    maxUser: pool.maxUserConnections,
  };
}

/** IPC gives Buffers back as plain Uint8Arrays: make them Buffers again for the socket writes. */
function reviveBuffers(o: ConsoleOutcome): ConsoleOutcome {
  if (!('reply' in o) || o.reply === null) return o;
  return { reply: o.reply.map((b: Uint8Array) => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength))) };
}
