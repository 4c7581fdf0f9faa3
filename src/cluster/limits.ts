// The limits of a multi-worker instance, counted for the whole instance by its main process, so
// that max_client_conn, max_db_client_connections, max_user_client_connections, pool sizes,
// max_db_connections and max_user_connections mean what they mean for one process. A worker asks
// before it admits a client and before it opens a server connection, and says when either goes;
// the numbers it asks with are its config's (every worker runs the same one). A server slot that
// does not fit waits, in arrival order per blocking limit, until one is released; the main process
// then asks workers holding idle servers under that limit to close one (evictionCandidates).
// Pure bookkeeping: no I/O, no timers.

export type ClientRefusal = 'max_client_conn' | 'max_db_client_connections' | 'max_user_client_connections';

export interface ClientAsk {
  readonly db: string;
  readonly user: string;
  readonly maxClients: number;
  /** 0 = no limit; the db/user limits do not apply to admin users on the console. */
  readonly maxDb: number;
  readonly maxUser: number;
}

export interface SlotAsk {
  /** The pool's key, the same in every worker (database and user names). */
  readonly pool: string;
  /** The [databases] entry (max_db_connections) and the server user (max_user_connections). */
  readonly db: string;
  readonly user: string;
  /** pool_size, with the reserve when the pool may use it now; 0 = no limit, as the others. */
  readonly cap: number;
  readonly maxDb: number;
  readonly maxUser: number;
}

export interface SlotRequest {
  readonly worker: number;
  readonly id: number;
  readonly ask: SlotAsk;
}

type Counter = Map<string, number>;

function bump(m: Counter, key: string, by: number): number {
  const n = (m.get(key) ?? 0) + by;
  if (n === 0) m.delete(key);
  else m.set(key, n);
  return n;
}

const clientKeys = (db: string, user: string): string[] => ['c', `cd\0${db}`, `cu\0${user}`];
const slotKeys = (a: Pick<SlotAsk, 'pool' | 'db' | 'user'>): string[] => [`sp\0${a.pool}`, `sd\0${a.db}`, `su\0${a.user}`];

export class InstanceLimits {
  /** Instance-wide counts, and per worker the same (for a worker that dies). */
  private readonly total: Counter = new Map();
  private readonly byWorker = new Map<number, Counter>();
  private readonly waiting: SlotRequest[] = [];

  private add(worker: number, keys: readonly string[], by: number): void {
    let mine = this.byWorker.get(worker);
    if (mine === undefined) this.byWorker.set(worker, (mine = new Map()));
    for (const k of keys) {
      bump(this.total, k, by);
      bump(mine, k, by);
    }
  }

  private count(key: string): number {
    return this.total.get(key) ?? 0;
  }

  /** Admit a client (counted until leave()), or the limit it would pass. */
  admit(worker: number, a: ClientAsk): ClientRefusal | null {
    if (this.count('c') >= a.maxClients) return 'max_client_conn';
    if (a.maxDb > 0 && this.count(`cd\0${a.db}`) >= a.maxDb) return 'max_db_client_connections';
    if (a.maxUser > 0 && this.count(`cu\0${a.user}`) >= a.maxUser) return 'max_user_client_connections';
    this.add(worker, clientKeys(a.db, a.user), 1);
    return null;
  }

  leave(worker: number, db: string, user: string): void {
    this.add(worker, clientKeys(db, user), -1);
  }

  /** The limit `a` would pass now, or null if one more server fits. */
  private blocking(a: SlotAsk): 'pool' | 'db' | 'user' | null {
    const [p, d, u] = slotKeys(a) as [string, string, string];
    if (a.cap > 0 && this.count(p) >= a.cap) return 'pool';
    if (a.maxDb > 0 && this.count(d) >= a.maxDb) return 'db';
    if (a.maxUser > 0 && this.count(u) >= a.maxUser) return 'user';
    return null;
  }

  /** Grant a server slot now (true), or queue the request until one frees (false). */
  requestSlot(r: SlotRequest): boolean {
    // Behind a request of the same pool already waiting: first come, first served.
    if (this.blocking(r.ask) === null && !this.waiting.some((w) => w.ask.pool === r.ask.pool)) {
      this.add(r.worker, slotKeys(r.ask), 1);
      return true;
    }
    this.waiting.push(r);
    return false;
  }

  /** A granted slot's server is gone; the waiting requests that fit now, granted. */
  releaseSlot(worker: number, a: Pick<SlotAsk, 'pool' | 'db' | 'user'>): SlotRequest[] {
    this.add(worker, slotKeys(a), -1);
    return this.grantWaiting();
  }

  /** Withdraw a waiting request (its worker no longer needs it). */
  cancelSlot(worker: number, id: number): void {
    const i = this.waiting.findIndex((w) => w.worker === worker && w.id === id);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /** A worker exited: its clients, slots and requests are gone; what fits now is granted. */
  workerGone(worker: number): SlotRequest[] {
    const mine = this.byWorker.get(worker);
    if (mine !== undefined) for (const [k, n] of mine) bump(this.total, k, -n);
    this.byWorker.delete(worker);
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i]!.worker === worker) this.waiting.splice(i, 1);
    return this.grantWaiting();
  }

  private grantWaiting(): SlotRequest[] {
    const granted: SlotRequest[] = [];
    const blockedPools = new Set<string>();
    for (let i = 0; i < this.waiting.length; i++) {
      const r = this.waiting[i]!;
      if (blockedPools.has(r.ask.pool) || this.blocking(r.ask) !== null) {
        blockedPools.add(r.ask.pool);
        continue;
      }
      this.waiting.splice(i--, 1);
      this.add(r.worker, slotKeys(r.ask), 1);
      granted.push(r);
    }
    return granted;
  }

  /** Waiting requests, oldest first. */
  get pending(): readonly SlotRequest[] {
    return this.waiting;
  }

  /**
   * For a waiting request: the workers holding servers under the limit that blocks it, most
   * first, with that limit, to be asked to close an idle one (for a pool, not the asking worker:
   * it would have used its own idle server). `richer`: the worker holds more than one server more
   * than the asking one, so any idle server of it may go; otherwise only one that has not been
   * used for a while, or two busy workers would take servers from each other at every
   * transaction. Empty when nothing blocks the request.
   */
  evictionCandidates(r: SlotRequest): { worker: number; by: 'pool' | 'db' | 'user'; name: string; richer: boolean }[] {
    const by = this.blocking(r.ask);
    if (by === null) return [];
    const name = by === 'pool' ? r.ask.pool : by === 'db' ? r.ask.db : r.ask.user;
    const key = slotKeys(r.ask)[by === 'pool' ? 0 : by === 'db' ? 1 : 2]!;
    const held = (w: number): number => this.byWorker.get(w)?.get(key) ?? 0;
    return [...this.byWorker.keys()]
      .filter((w) => (by !== 'pool' || w !== r.worker) && held(w) > 0)
      .sort((a, b) => held(b) - held(a))
      .map((worker) => ({ worker, by, name, richer: held(worker) > held(r.worker) + 1 }));
  }

  /** Instance-wide server connections granted under a pool, database or user (tests, SHOW). */
  servers(by: 'pool' | 'db' | 'user', name: string): number {
    return this.count(`s${by === 'pool' ? 'p' : by === 'db' ? 'd' : 'u'}\0${name}`);
  }

  clients(): number {
    return this.count('c');
  }
}
