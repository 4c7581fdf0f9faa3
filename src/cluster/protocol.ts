// The messages between a multi-worker instance's main process and its workers, over the IPC
// channel of child_process.fork (advanced serialization: Buffers and nested objects pass as they
// are), and the request/reply plumbing both sides use.
import type { ConsoleOutcome } from '../admin/console.js';
import type { ShutdownMode } from '../app.js';
import type { WorkerSeries } from '../metrics/prometheus.js';
import type { ClientAsk, ClientRefusal, SlotAsk } from './limits.js';

/** Where a worker's server slot goes back: the pool, its database and its server user. */
export type SlotKey = Pick<SlotAsk, 'pool' | 'db' | 'user'>;

/** Worker → main. Those with an `id` are answered with a Reply of the same id. */
export type ToMain =
  | { readonly t: 'ready' }
  | { readonly t: 'admit'; readonly id: number; readonly ask: ClientAsk }
  | { readonly t: 'leave'; readonly db: string; readonly user: string }
  | { readonly t: 'slot'; readonly id: number; readonly ask: SlotAsk }
  | { readonly t: 'unslot'; readonly key: SlotKey }
  | { readonly t: 'console'; readonly id: number; readonly sql: string; readonly admin: boolean }
  | { readonly t: 'shutdown'; readonly mode: ShutdownMode }
  | Reply;

/** Main → worker. `conn` comes with a unix socket handle accepted by the main process. */
export type ToWorker =
  | { readonly t: 'run'; readonly id: number; readonly sql: string; readonly admin: boolean }
  | { readonly t: 'evict'; readonly id: number; readonly by: 'pool' | 'db' | 'user'; readonly name: string; readonly minIdleMs: number }
  | { readonly t: 'metrics'; readonly id: number }
  | { readonly t: 'conn' }
  | Reply;

export interface Reply {
  readonly t: 'reply';
  readonly id: number;
  readonly body: unknown;
}

/** Reply bodies, by request. */
export interface Answers {
  admit: ClientRefusal | null;
  slot: null;
  console: ConsoleOutcome;
  run: ConsoleOutcome;
  evict: boolean;
  metrics: { series: WorkerSeries; health: string | null };
}

/** Requests with ids, and the replies that settle them. */
export class Rpc<Out extends { t: string }> {
  private next = 1;
  private readonly pending = new Map<number, (body: unknown) => void>();

  constructor(private readonly send: (m: Out | Reply) => void) {}

  /** Send `m` with a fresh id; resolves with the reply's body (`lost` if the other side goes). */
  call<K extends keyof Answers>(make: (id: number) => Out, lost: Answers[K]): Promise<Answers[K]> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending.set(id, (body) => resolve(body === LOST ? lost : (body as Answers[K])));
      this.send(make(id));
    });
  }

  reply(id: number, body: unknown): void {
    this.send({ t: 'reply', id, body });
  }

  /** Settle the request `r` answers. */
  settle(r: Reply): void {
    const done = this.pending.get(r.id);
    this.pending.delete(r.id);
    done?.(r.body);
  }

  /** The other side is gone: every request still open gets its `lost` answer. */
  lose(): void {
    for (const done of this.pending.values()) done(LOST);
    this.pending.clear();
  }
}

const LOST = Symbol('lost');
