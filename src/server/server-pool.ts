// The only importer of generic-pool: it creates server connections, lends them and takes them
// back. The pool above decides *when* to acquire (once per transaction, statement or session,
// only as many as its limits allow), so the library never queues more requests than it can serve.
//
// create() always resolves: a failed login resolves with a closed ServerConn, which the caller
// destroys. generic-pool would otherwise keep the acquire pending and retry create() at once in
// a loop against a server that is down; the pool's own server_login_retry decides instead.
import genericPool from 'generic-pool';
import type { ServerConn } from './server-conn.js';

export interface ServerFactory {
  create(): Promise<ServerConn>;
  /** Reuse checks done on borrow: lifetime, close_needed, the server check query. */
  validate(server: ServerConn): Promise<boolean>;
  destroy(server: ServerConn): void;
}

export class ServerPool {
  private readonly gp: genericPool.Pool<ServerConn>;

  constructor(factory: ServerFactory, max: number) {
    this.gp = genericPool.createPool<ServerConn>(
      {
        create: () => factory.create(),
        destroy: async (s) => factory.destroy(s),
        validate: (s) => factory.validate(s),
      },
      {
        max: Math.max(1, max),
        min: 0,
        // LIFO, as PgBouncer's default (server_round_robin = 0): the hottest server is reused and
        // the others age out by server_idle_timeout. release() can ask for round robin instead.
        fifo: false,
        testOnBorrow: true,
        autostart: true,
        // No eviction timer: the janitor closes idle servers and validate() reaps them.
        evictionRunIntervalMillis: 0,
      },
    );
  }

  acquire(): Promise<ServerConn> {
    return this.gp.acquire();
  }

  /**
   * Take a server back. `roundRobin` (server_round_robin) queues it behind the other idle ones, so
   * they are handed out in turn, instead of in front. generic-pool reads its `fifo` option at each
   * release and has no setter, so it is set here, on the one pool this module owns (a version
   * without it keeps LIFO; tests/integration/round-robin.test.ts would say so).
   */
  release(server: ServerConn, roundRobin: boolean): void {
    const options = (this.gp as unknown as { _config?: { fifo: boolean } })._config;
    if (options !== undefined) options.fifo = roundRobin;
    void this.gp.release(server).catch(() => undefined);
  }

  destroy(server: ServerConn): void {
    void this.gp.destroy(server).catch(() => undefined);
  }

  /** Server connections lent out, idle in the library's list, and requests not yet served. */
  get borrowed(): number {
    return this.gp.borrowed;
  }
  get available(): number {
    return this.gp.available;
  }
  get pending(): number {
    return this.gp.pending;
  }
  get size(): number {
    return this.gp.size;
  }

  /**
   * Stop lending. The pool has already closed every server it holds; the library's own cleanup
   * is not waited for, so an acquire still pending cannot hold a shutdown up.
   */
  close(): void {
    void this.gp.drain().then(() => this.gp.clear());
  }
}
