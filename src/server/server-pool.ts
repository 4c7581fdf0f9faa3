// The only importer of generic-pool: it creates server connections and destroys them. The pool
// above decides *when* to acquire (only as many as its limits allow, so the library never queues
// more requests than it can serve) and keeps an acquired server until it closes: between
// transactions it is idle in the pool's own list, handed to the next client with no promise, and
// the library's count of lent servers is the count of live ones.
//
// create() always resolves: a failed login resolves with a closed ServerConn, which the caller
// destroys. generic-pool would otherwise keep the acquire pending and retry create() at once in
// a loop against a server that is down; the pool's own server_login_retry decides instead.
import genericPool from 'generic-pool';
import type { ServerConn } from './server-conn.js';

export interface ServerFactory {
  create(): Promise<ServerConn>;
  destroy(server: ServerConn): void;
}

export class ServerPool {
  private readonly gp: genericPool.Pool<ServerConn>;

  constructor(factory: ServerFactory, max: number) {
    this.gp = genericPool.createPool<ServerConn>(
      {
        create: () => factory.create(),
        destroy: async (s) => factory.destroy(s),
      },
      {
        max: Math.max(1, max),
        min: 0,
        autostart: true,
        // No eviction timer: the janitor closes idle servers.
        evictionRunIntervalMillis: 0,
      },
    );
  }

  acquire(): Promise<ServerConn> {
    return this.gp.acquire();
  }

  destroy(server: ServerConn): void {
    void this.gp.destroy(server).catch(() => undefined);
  }

  /** Server connections lent out: every live one the pool holds, idle or not. */
  get borrowed(): number {
    return this.gp.borrowed;
  }

  /**
   * Stop lending. The pool has already closed every server it holds; the library's own cleanup
   * is not waited for, so an acquire still pending cannot hold a shutdown up.
   */
  close(): void {
    void this.gp.drain().then(() => this.gp.clear());
  }
}
