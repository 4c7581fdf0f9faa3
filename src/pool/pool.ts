// One pool per (database, user): the lists every client and server of that pair lives in, and the
// rules that move them. A state is membership in a list, so SHOW POOLS counts are list sizes.
//
// A client that needs a server joins cl_waiting; pump() asks generic-pool for exactly as many
// servers as the limits allow (pool_size, reserve after reserve_pool_timeout, max_db_connections,
// max_user_connections), once per transaction, statement or session. A server returns when its
// ReadyForQuery says the pool mode allows it.
import { now } from '../clock.js';
import type { Config, DatabaseDef, PoolMode, UserDef } from '../config/types.js';
import { Errors, PoolerError } from '../errors.js';
import { log } from '../log.js';
import { timings, type DbTimings } from '../metrics/stats.js';
import { TxStatus } from '../protocol/codes.js';
import { ServerConn, type CancelCounts, type LoginError, type ServerState, type ServerTarget } from '../server/server-conn.js';
import { ServerPool } from '../server/server-pool.js';
import type { TlsContexts } from '../net/tls.js';
import { StateList } from './list.js';
import type { PoolClient, ReplicationRequest } from './types.js';

/** What a pool asks of the registry that owns it (limits that span pools, the live config). */
export interface PoolHost {
  readonly cfg: Config;
  readonly tls: TlsContexts;
  /** Live server connections of a database / a server user, across pools. */
  serverCount(db: string | null, user: string | null): number;
  /** Close one idle server of another pool of this database / server user to make room. */
  evictIdleFor(pool: Pool, by: 'db' | 'user'): boolean;
  /** True while evictIdleFor closes a server (see pump). */
  readonly evicting: boolean;
  isPaused(db: string): boolean;
  /**
   * In a multi-worker instance, the instance's leave to open one more server of `pool` (its
   * limits are counted across workers); null when this process alone counts them. A granted
   * slot is given back with releaseServerSlot once its server is gone.
   */
  serverSlot(pool: Pool): Promise<void> | null;
  releaseServerSlot(pool: Pool): void;
}

export interface PoolStats {
  serverAssignments: number;
  xacts: number;
  queries: number;
  bytesReceived: number;
  bytesSent: number;
  xactTime: number;
  queryTime: number;
  waitTime: number;
  /** Named prepared statements: Parses from clients, Parses sent to servers, Binds (PgBouncer 1.24). */
  clientParses: number;
  serverParses: number;
  binds: number;
}


export function zeroStats(): PoolStats {
  return {
    serverAssignments: 0,
    xacts: 0,
    queries: 0,
    bytesReceived: 0,
    bytesSent: 0,
    xactTime: 0,
    queryTime: 0,
    waitTime: 0,
    clientParses: 0,
    serverParses: 0,
    binds: 0,
  };
}

/** Why a server beyond a lowered pool size is closed (PgBouncer's words). */
const TOO_MANY = 'too many servers in the pool';

export class Pool {
  // Clients: cl_active holds every logged-in client that is not waiting (linked or idle between
  // transactions, as PgBouncer counts them); cl_waiting is FIFO by insertion order.
  readonly clActive = new StateList<PoolClient>();
  readonly clWaiting = new StateList<PoolClient>();
  // Servers by state.
  readonly svLogin = new StateList<ServerConn>();
  readonly svIdle = new StateList<ServerConn>();
  readonly svActive = new StateList<ServerConn>();
  readonly svUsed = new StateList<ServerConn>();
  readonly svTested = new StateList<ServerConn>();
  /** Back from a client while cancels sent for it are still on their way (see giveBack). */
  readonly svBeingCanceled = new StateList<ServerConn>();
  /** Cancels sent for its clients' queries (ServerConn.sendCancel keeps the counts). */
  readonly cancels: CancelCounts = { waiting: 0, active: 0 };
  /** Replication clients waiting for a server of their own, in order (cl_waiting with clWaiting). */
  readonly replWaiting = new Set<PoolClient>();
  /** Dedicated replication servers, logging in or linked, and their client: they take pool_size
   * slots but never go back to the pool (PgBouncer 1.23+). */
  private readonly replServers = new Map<ServerConn, PoolClient>();

  readonly stats: PoolStats = zeroStats();

  /** The server's parameters as a new client sees them (from the first server login, learned
   * again after RECONNECT or a changed database: PgBouncer's welcome_msg_ready). */
  welcome: ReadonlyMap<string, string> | null = null;
  /** The last server login failure, until a login succeeds; within server_login_retry of it no
   * new login is tried (PgBouncer's last_connect_failed). */
  lastLoginError: LoginError | null = null;
  lastLoginFailAt = 0;
  /** Index in a multi-host database's host list where the next server goes (load_balance_hosts). */
  hostTurn = 0;
  /** Hosts whose last login failed, and when: passed over for server_login_retry (hostDown). */
  private readonly hostFailedAt = new Map<string, number>();
  /** Acquire requests in flight in generic-pool (each opens a server). */
  private acquiring = 0;
  /** Idle servers being checked (server_check_query) before a waiting client gets them. */
  private testing = 0;
  /**
   * Idle servers, the one that went idle last on top (PgBouncer's default, server_round_robin =
   * 0: the hottest server is reused, the others age out by server_idle_timeout; with it, taken
   * from the bottom). A server lent to a client stays lent to generic-pool while idle: the pool
   * hands idle servers out itself, with no promise or allocation per transaction, and
   * generic-pool only opens and destroys. Entries of servers that stopped being idle some other
   * way (closed) are skipped when met.
   */
  private idleStack: ServerConn[] = [];
  private readonly servers: ServerPool;
  /** The database's duration histograms, looked up once (observed three times a transaction). */
  private readonly timings: DbTimings;
  private readonly logins = new Map<ServerConn, (s: ServerConn) => void>();
  private closed = false;

  constructor(
    readonly host: PoolHost,
    /** Replaced on reload (pool sizes and limits are read from it live). */
    public db: DatabaseDef,
    /** The database name clients use (for '*' pools, the requested one). */
    readonly dbName: string,
    /** The pool's user: the forced db.user, or the user its clients log in as. */
    readonly userName: string,
    private readonly target: () => ServerTarget,
  ) {
    this.timings = timings(dbName);
    this.servers = new ServerPool(
      {
        create: () => this.createServer(),
        destroy: (s) => {
          if (s.state !== 'closed') s.close('pool removed it');
        },
      },
      // The pump enforces the real limits (they change on reload); the library's max only guards.
      10_000,
    );
  }

  get cfg(): Config {
    return this.host.cfg;
  }

  get tls(): TlsContexts {
    return this.host.tls;
  }

  get serverUser(): string {
    return this.db.user ?? this.userName;
  }

  /** This pool's [users] entry, looked up again only when a reload replaced the map: the pool
   * mode and sizes it may set are read per transaction. */
  private get userDef(): UserDef | undefined {
    const users = this.cfg.users;
    if (this.usersSeen !== users) {
      this.usersSeen = users;
      this.userSeen = users.get(this.userName);
    }
    return this.userSeen;
  }
  private usersSeen: ReadonlyMap<string, UserDef> | null = null;
  private userSeen: UserDef | undefined = undefined;

  get mode(): PoolMode {
    // A [users] pool_mode wins over the database's, as in PgBouncer.
    return this.userDef?.poolMode ?? this.db.poolMode ?? this.cfg.poolMode;
  }

  get poolSize(): number {
    const size = this.userDef?.poolSize ?? this.db.poolSize ?? this.cfg.defaultPoolSize;
    return size === 0 ? Number.MAX_SAFE_INTEGER : size;
  }

  get reservePoolSize(): number {
    return this.userDef?.reservePoolSize ?? this.db.reservePoolSize ?? this.cfg.reservePoolSize;
  }

  get minPoolSize(): number {
    return this.db.minPoolSize ?? this.cfg.minPoolSize;
  }

  get serverLifetime(): number {
    return this.db.serverLifetime ?? this.cfg.serverLifetime;
  }

  /** Servers beyond pool_size + reserve_pool_size (after a reload lowered them), else <= 0. */
  private get overSize(): number {
    return this.serverCount - (this.poolSize + this.reservePoolSize);
  }

  /** Live server connections (any state but closed). */
  get serverCount(): number {
    return this.svLogin.size + this.svIdle.size + this.svActive.size + this.svUsed.size + this.svTested.size + this.svBeingCanceled.size;
  }

  get clientCount(): number {
    return this.clActive.size + this.clWaiting.size + this.replWaiting.size;
  }

  /** Server connections this pool may have now: pool_size, plus the reserve once the oldest
   * waiting client has waited reserve_pool_timeout. */
  get serverCap(): number {
    const head = this.clWaiting.first();
    const reserve = head !== undefined && now - head.waitStart >= this.cfg.reservePoolTimeout * 1000;
    return reserve ? this.poolSize + this.reservePoolSize : this.poolSize;
  }

  /** max_db_connections of this pool's database; 0 = no limit. */
  get maxDbConnections(): number {
    return this.db.maxDbConnections ?? this.cfg.maxDbConnections;
  }

  /** max_user_connections of this pool's server user; 0 = no limit. */
  get maxUserConnections(): number {
    return this.cfg.users.get(this.serverUser)?.maxUserConnections ?? this.cfg.maxUserConnections;
  }

  /** Seconds the oldest waiting client has waited (SHOW POOLS maxwait). */
  maxWaitMs(): number {
    let oldest = now;
    for (const list of [this.clWaiting, this.replWaiting]) {
      for (const c of list) {
        oldest = Math.min(oldest, c.waitStart);
        break;
      }
    }
    return now - oldest;
  }

  // ---------------------------------------------------------------- clients

  addClient(client: PoolClient): void {
    this.clActive.add(client);
  }

  /** The client has something to send and no server: wait for one. */
  requestServer(client: PoolClient): void {
    if (this.closed) return client.fail(Errors.shuttingDown());
    if (this.failingFast()) return client.fail(Errors.serverLoginFailing(this.lastLoginError!));
    client.waitStart = now;
    client.waitNotified = false;
    if (this.clWaiting.size === 0 && this.linkIdle(client)) return;
    this.clActive.delete(client);
    this.clWaiting.add(client);
    this.pump();
  }

  /**
   * The usual request in transaction mode: nobody waits and a server is idle. It is linked at
   * once, without the client's trip through cl_waiting and a pump (every object a transaction
   * touches costs a cache miss or two on a machine whose cores the pooler shares with PostgreSQL
   * and the clients). False when the client must wait after all: the pool is paused, or the idle
   * server is due a server_check_query (left on the stack for the pump to check).
   */
  private linkIdle(client: PoolClient): boolean {
    if (this.host.evicting || this.host.isPaused(this.dbName)) return false;
    const server = this.popIdle();
    if (server === null) return false;
    if (this.checkDue(server)) {
      this.idleStack.push(server);
      return false;
    }
    this.assign(server, client);
    return true;
  }

  /** A replication client logged in: it waits for a server of its own. */
  requestReplication(client: PoolClient): void {
    if (this.closed) return client.fail(Errors.shuttingDown());
    this.replWaiting.add(client);
    client.waitStart = now;
    this.pump();
  }

  /** A client is gone: give back or close its server. */
  removeClient(client: PoolClient): void {
    this.clActive.delete(client);
    this.clWaiting.delete(client);
    this.replWaiting.delete(client);
    const server = client.server;
    if (server === null) return;
    client.server = null;
    server.unlink();
    if (this.replServers.has(server)) return server.close('replication client disconnected');
    if (!betweenTransactions(server, client)) {
      server.close('client disconnect while server was not ready');
      this.servers.destroy(server);
      this.pump();
      return;
    }
    const reset = this.mode === 'session' || this.cfg.serverResetQueryAlways;
    this.giveBack(server, reset);
  }

  /** Give waiting clients idle servers, then ask generic-pool for as many new ones as they still
   * need and the limits allow. */
  pump(): void {
    // The close of a server evicted for another pool pumps its own pool: that pump must not take
    // the slot the eviction freed for the pool that asked, or both open one and the cap is passed.
    if (this.closed || this.host.evicting || this.host.isPaused(this.dbName)) return;
    this.pumpReplication();
    while (this.clWaiting.size > this.acquiring + this.testing) {
      const idle = this.popIdle();
      if (idle !== null) {
        this.handOut(idle);
        continue;
      }
      if (!this.mayCreate()) break;
      this.acquiring++;
      this.servers.acquire().then(this.onAcquired, this.onAcquireFailed);
    }
  }

  /** The idle server to reuse next (server_round_robin: the one idle longest, else the one idle
   * least), or null; one that may not be reused any more is closed. */
  private popIdle(): ServerConn | null {
    const stack = this.idleStack;
    while (stack.length > 0) {
      const s = this.cfg.serverRoundRobin ? stack.shift()! : stack.pop()!;
      if (s.state !== 'idle') continue;
      if (s.usable && now - s.connectTime < this.serverLifetime * 1000) return s;
      s.close(s.closeNeeded ? 'obsolete connection' : s.usable ? 'server lifetime over' : 'idle server got dirty');
    }
    return null;
  }

  /** An idle server for the head waiting client: checked first when server_check_delay says so. */
  private handOut(server: ServerConn): void {
    if (!this.checkDue(server)) {
      const head = this.clWaiting.first();
      if (head !== undefined) this.assign(server, head);
      else this.idleStack.push(server);
      return;
    }
    this.testing++;
    server.setState('tested');
    const check = this.cfg.serverCheckQuery;
    server.sendInternal(check === '<empty>' ? '' : check, () => {
      this.testing--;
      // A failed check closes the server (it went bad); another is found or opened for the client.
      if (!server.usable) {
        if (server.state !== 'closed') server.close('server check failed');
        this.pump();
        return;
      }
      server.setState('idle');
      const head = this.clWaiting.first();
      if (head !== undefined && !this.closed) this.assign(server, head);
      else this.idleStack.push(server);
    });
  }

  /** Must this idle server run server_check_query before it serves (idle past server_check_delay)? */
  private checkDue(server: ServerConn): boolean {
    return this.cfg.serverCheckQuery !== '' && now - server.lastUsed >= this.cfg.serverCheckDelay * 1000;
  }

  /**
   * PgBouncer's check_fast_fail: a pool whose server it once knew, with no server left and logins
   * failing since, refuses a client at once rather than queue it. A pool still learning its
   * server (new, or after RECONNECT) queues clients instead, until the retry or their timeout.
   * After server_login_retry a login is started with no client, to learn whether the server is back.
   */
  private failingFast(): boolean {
    if (this.welcome === null || this.lastLoginError === null || this.serverCount > this.svLogin.size) return false;
    if (this.svLogin.size === 0 && this.acquiring === 0 && this.mayCreate()) this.openIdle(1);
    return true;
  }

  /** May one more server connection be opened now? */
  private mayCreate(): boolean {
    const borrowed = this.servers.borrowed + this.acquiring + this.replServers.size;
    const head = this.clWaiting.first();
    if (borrowed >= this.serverCap || this.retryPending()) return false;
    // A host list is probed with one login at a time until a server is up: logins racing to a
    // host that is down would all fail, where one failure is enough to move on to the next host.
    if (this.db.hosts.length > 1 && this.svLogin.size > 0 && this.serverCount === this.svLogin.size) return false;
    if (!this.withinSharedLimits()) return false;
    if (borrowed >= this.poolSize) head?.log.warn('taking connection from reserve_pool');
    return true;
  }

  /** Within server_login_retry of a failed login: clients wait for the retry (or their timeout). */
  private retryPending(): boolean {
    return this.lastLoginError !== null && now - this.lastLoginFailAt < this.cfg.serverLoginRetry * 1000;
  }

  /**
   * Under max_db_connections and max_user_connections. At a cap, with `evict`, an idle server of
   * another pool of the same database / server user is closed to make room (PgBouncer's
   * evict_connection; min_pool_size never evicts).
   */
  private withinSharedLimits(evict = true): boolean {
    const maxDb = this.maxDbConnections;
    if (maxDb > 0 && this.host.serverCount(this.db.name, null) >= maxDb && !(evict && this.host.evictIdleFor(this, 'db'))) return false;
    const maxUser = this.maxUserConnections;
    if (maxUser > 0 && this.host.serverCount(null, this.serverUser) >= maxUser && !(evict && this.host.evictIdleFor(this, 'user')))
      return false;
    return true;
  }

  /**
   * Open a server for each waiting replication client that has none yet, as the limits allow. It
   * takes a pool_size slot: at the cap, an idle server of this pool is closed to make room, as
   * PgBouncer does; with none idle the client waits for one.
   */
  private pumpReplication(): void {
    // Closing an idle server pumps this pool again (onServerClosed): that pump must not open
    // servers for the clients this one is serving. (Most pools never see one: no try/finally and
    // no iterator per transaction for them.)
    if (this.replPumping || this.replWaiting.size === 0) return;
    this.replPumping = true;
    try {
      for (const client of this.replWaiting) {
        if (client.server !== null || this.replSlotWaits.has(client)) continue;
        while (this.serverCount >= this.poolSize) {
          const idle = this.svIdle.values().next().value;
          if (idle === undefined) return;
          idle.close('evicted');
        }
        if (!this.withinSharedLimits()) return;
        // In a multi-worker instance the slot is the instance's, as for any server.
        const slot = this.host.serverSlot(this);
        if (slot === null) {
          this.openReplication(client, false);
          continue;
        }
        this.replSlotWaits.add(client);
        void slot.then(() => {
          this.replSlotWaits.delete(client);
          if (this.replWaiting.has(client) && !this.closed) this.openReplication(client, true);
          else this.host.releaseServerSlot(this);
        });
      }
    } finally {
      this.replPumping = false;
    }
  }

  private replPumping = false;
  /** Replication clients waiting for an instance slot (multi-worker) before their server opens. */
  private readonly replSlotWaits = new Set<PoolClient>();

  private openReplication(client: PoolClient, slotted: boolean): void {
    const server = new ServerConn(this, replicationTarget(this.target(), client.replication!), this.dbName);
    if (slotted) this.slotted.add(server);
    this.svLogin.add(server);
    this.replServers.set(server, client);
    client.server = server;
  }

  private readonly onAcquired = (server: ServerConn): void => {
    this.acquiring--;
    if (!server.usable) {
      // A failed login (handled in onServerLogin), a server that closed or went bad while idle,
      // or one marked close_needed: replace it through the limits. server_lifetime is not looked
      // at here but when a server comes back (and by the janitor), as PgBouncer does: with
      // server_lifetime = 0 ("use once") a new server would otherwise never be used, and each
      // acquire would open another.
      if (server.state !== 'closed') server.close(server.closeNeeded ? 'obsolete connection' : 'idle server got dirty');
      this.servers.destroy(server);
      this.pump();
      return;
    }
    const client = this.clWaiting.first();
    if (client === undefined) {
      this.giveBack(server, false);
      return;
    }
    this.assign(server, client);
  };

  private assign(server: ServerConn, client: PoolClient): void {
    this.clWaiting.delete(client);
    this.clActive.add(client);
    this.stats.serverAssignments++;
    this.stats.waitTime += (now - client.waitStart) * 1000;
    this.timings.wait.observe(now - client.waitStart);
    server.link(client);
    client.server = server;
    client.onLinked(server);
  }

  private readonly onAcquireFailed = (err: Error): void => {
    this.acquiring--;
    log().error({ err: err.message, db: this.dbName }, `pooler error: ${err.message}`);
  };

  /**
   * The linked server answered everything the client asked (ReadyForQuery, nothing owed). Unlink
   * them if the pool mode allows it now.
   */
  onServerReady(server: ServerConn): void {
    server.readyTime = now;
    const client = server.client as PoolClient | null;
    if (client === null) return;
    this.countTimes(server);
    // A replication client keeps its server for its whole session, whatever the pool mode.
    // (Most pools have none: no lookup per transaction for them.)
    if (this.replServers.size > 0 && this.replServers.has(server)) return;
    const mode = this.mode;
    if (mode === 'session' && !client.closing) return;
    if (!client.atMessageBoundary || client.inExtendedQuery) return;
    if (server.txStatus !== TxStatus.Idle) {
      if (mode === 'statement') {
        server.close('transaction blocks not allowed in statement pooling mode');
        client.fail(Errors.statementModeTransaction());
      }
      return;
    }
    client.server = null;
    server.unlink();
    client.onUnlinked();
    this.giveBack(server, this.cfg.serverResetQueryAlways);
  }

  /** When the linked server's current transaction began: its first request, or the request now
   * running when it has not answered one inside a transaction yet (transaction_timeout). */
  transactionStart(server: ServerConn): number {
    return server.xactStart >= 0 ? server.xactStart : server.requestTime;
  }

  /**
   * SHOW STATS query and transaction counts and times (µs) and the duration histograms, at each
   * ReadyForQuery the client was owed: a query ended, and a transaction too if the server is idle
   * again. Counted here rather than at unlink so session mode counts its transactions as well.
   * Only requests made during this link count: a server linked at login just to learn the
   * parameters answered none.
   */
  private countTimes(server: ServerConn): void {
    if (server.requestTime < server.lastUsed) return;
    const t = this.timings;
    const query = now - server.requestTime;
    this.stats.queryTime += query * 1000;
    t.query.observe(query);
    // (transactionStart() inline: a time returned from a call would be boxed, per transaction.)
    const start = server.xactStart >= 0 ? server.xactStart : server.requestTime;
    if (server.txStatus !== TxStatus.Idle) {
      server.xactStart = start;
      return;
    }
    server.xactStart = -1;
    this.stats.xacts++;
    this.stats.xactTime += (now - start) * 1000;
    t.xact.observe(now - start);
  }

  /** A server comes back from a client: reset it if asked, then make it idle (or close it). */
  private giveBack(server: ServerConn, reset: boolean): void {
    if (server.cancelsInFlight > 0 && server.usable) {
      // A cancel for the client it served is still on its way: no one else's query (not even the
      // reset query) runs on it until PostgreSQL has taken it.
      server.setState('being_canceled');
      return;
    }
    if (!server.usable || now - server.connectTime >= this.serverLifetime * 1000) {
      if (server.state !== 'closed') server.close(server.closeNeeded ? 'close_needed' : 'server lifetime over');
      this.servers.destroy(server);
      this.pump();
      return;
    }
    const query = this.cfg.serverResetQuery;
    if (reset && query !== '') {
      // DISCARD ALL / DEALLOCATE drop the server's prepared statements with everything else.
      if (/discard|deallocate/i.test(query)) server.prepared.clear();
      server.setState('used');
      server.sendInternal(query, () => this.release(server));
      return;
    }
    this.release(server);
  }

  private release(server: ServerConn): void {
    if (server.state === 'closed') {
      this.servers.destroy(server);
      return this.pump();
    }
    // A reload lowered the pool size: a server above it closes as it comes back instead of
    // going on to the next waiting client, or a busy pool would never shrink.
    if (this.overSize > 0) {
      server.close(TOO_MANY);
      this.servers.destroy(server);
      return this.pump();
    }
    // Idle, if only for a moment: its idle time (server_check_delay, the console) starts now.
    server.setState('idle');
    // A client is waiting: hand the server straight over, as PgBouncer does (no trip through
    // generic-pool, to which the server stays lent; see idleStack).
    if (this.clWaiting.size > 0 && !this.closed && !this.host.isPaused(this.dbName)) return this.handOut(server);
    this.idleStack.push(server);
  }

  private failWaiting(err: LoginError): void {
    const e = new PoolerError(err.sqlstate, err.message);
    for (const c of [...this.clWaiting]) c.fail(e);
  }

  /**
   * What a client whose wait for a server timed out is told besides PgBouncer's message: why the
   * logins failed meanwhile (a TLS verification error, a refused connection), which PgBouncer
   * leaves to its log.
   */
  waitDetail(): string | undefined {
    return this.lastLoginError === null ? undefined : `server login failed: ${this.lastLoginError.message}`;
  }

  /** Open `n` servers for nobody: they join the idle list (min_pool_size, a login after a
   * failing one). */
  private openIdle(n: number): void {
    for (let i = 0; i < n; i++) {
      this.acquiring++;
      this.servers.acquire().then((s) => {
        this.acquiring--;
        if (s.state === 'closed') this.servers.destroy(s);
        else this.giveBack(s, false);
      }, this.onAcquireFailed);
    }
  }

  // ---------------------------------------------------------------- servers

  private createServer(): Promise<ServerConn> {
    const slot = this.host.serverSlot(this);
    if (slot === null) return this.openServer(false);
    return slot.then(() => this.openServer(true));
  }

  /** Servers holding an instance slot (serverSlot), until they are gone. */
  private readonly slotted = new WeakSet<ServerConn>();

  private openServer(slotted: boolean): Promise<ServerConn> {
    return new Promise((resolve) => {
      const s = new ServerConn(this, this.target(), this.dbName);
      if (slotted) this.slotted.add(s);
      this.svLogin.add(s);
      this.logins.set(s, resolve);
    });
  }

  /** A server is gone (closed, or its login failed): give its instance slot back, once. */
  private releaseSlot(server: ServerConn): void {
    if (this.slotted.delete(server)) this.host.releaseServerSlot(this);
  }

  onServerLogin(server: ServerConn, error: LoginError | null): void {
    const repl = this.replServers.get(server);
    if (repl !== undefined) return this.onReplicationLogin(server, repl, error);
    const resolve = this.logins.get(server);
    this.logins.delete(server);
    if (error !== null) {
      this.releaseSlot(server);
      this.svLogin.delete(server);
      this.hostFailedAt.set(server.target.host, now);
      // Another host of the list may still be up: the next server goes there (the pump opens it
      // when the failed one is destroyed), and no client is failed for this host. (A single host
      // is never "another": with server_login_retry = 0 it would be tried again in a loop.)
      const failed = server.target.host;
      if (this.db.hosts.length > 1 && this.db.hosts.some((h) => h !== failed && !this.hostDown(h))) {
        resolve?.(server);
        return;
      }
      this.lastLoginError = error;
      this.lastLoginFailAt = now;
      // The clients waiting would get the same refusal: tell them now, unless servers of a known
      // welcome can still serve them (PgBouncer's kill_pool_logins).
      if (error.refused && (this.welcome === null || this.serverCount === this.svLogin.size)) this.failWaiting(error);
    } else {
      this.hostFailedAt.delete(server.target.host);
      this.lastLoginError = null;
      if (this.welcome === null) this.welcome = new Map(server.params);
      // Run connect_query once per new server, before any client sees it.
      if (this.db.connectQuery !== null) server.sendInternal(this.db.connectQuery);
      server.setState('idle');
    }
    resolve?.(server);
    // Clients that waited behind a probing login (mayCreate) may now get servers of their own.
    if (error === null) this.pump();
  }

  /**
   * A replication server logged in: it is linked to its client for good, and the client is
   * welcomed with this server's own parameters. A failed login fails only its client: other
   * clients of the pool may well get in (the failure is often the replication privilege or a
   * pg_hba line for replication), as in PgBouncer.
   */
  private onReplicationLogin(server: ServerConn, client: PoolClient, error: LoginError | null): void {
    this.replWaiting.delete(client);
    if (error !== null) {
      this.releaseSlot(server);
      this.svLogin.delete(server);
      this.replServers.delete(server);
      client.server = null;
      client.fail(new PoolerError(error.sqlstate, 'login failed', 'FATAL', error.message));
      return;
    }
    this.clActive.add(client);
    server.link(client);
    client.onLinked(server);
  }

  /** Whether a login to `host` failed within server_login_retry. */
  hostDown(host: string): boolean {
    const at = this.hostFailedAt.get(host);
    return at !== undefined && now - at < this.cfg.serverLoginRetry * 1000;
  }

  onCancelsDone(server: ServerConn): void {
    if (server.state === 'being_canceled') this.giveBack(server, this.mode === 'session' || this.cfg.serverResetQueryAlways);
  }

  onServerState(server: ServerConn, from: ServerState, to: ServerState): void {
    this.listOf(from)?.delete(server);
    this.listOf(to)?.add(server);
  }

  onServerClosed(server: ServerConn, reason: string): void {
    this.releaseSlot(server);
    const login = this.logins.get(server);
    // A server still logging in resolves generic-pool's create() (closed); any other is lent to
    // the library until destroyed (destroying it twice is harmless).
    if (login !== undefined) login(server);
    else if (!this.replServers.has(server)) this.servers.destroy(server);
    this.logins.delete(server);
    const repl = this.replServers.get(server);
    this.replServers.delete(server);
    // Closed by the pooler (RECONNECT, a shutdown) before it logged in: its client waits no more.
    if (repl !== undefined && this.replWaiting.delete(repl)) {
      repl.server = null;
      repl.fail(Errors.serverConnFailed(reason));
    }
    this.pump();
  }

  private listOf(state: ServerState): StateList<ServerConn> | null {
    switch (state) {
      case 'login':
        return this.svLogin;
      case 'idle':
        return this.svIdle;
      case 'active':
        return this.svActive;
      case 'used':
        return this.svUsed;
      case 'tested':
        return this.svTested;
      case 'being_canceled':
        return this.svBeingCanceled;
      case 'closed':
        return null;
    }
  }

  // ---------------------------------------------------------------- janitor

  /** One janitor pass over this pool's lists (PgBouncer janitor.c). */
  sweep(): void {
    const cfg = this.cfg;
    const t = now;
    // Above a lowered pool size, idle servers close at once (PgBouncer's check_pool_size).
    for (const s of [...this.svUsed, ...this.svIdle].slice(0, Math.max(0, this.overSize))) s.close(TOO_MANY);
    // Idle servers: lifetime, idle timeout (keeping min_pool_size), close_needed.
    let keep = this.serverCount;
    // Entries of servers that are no longer idle go (they are skipped anyway, but would pile up).
    if (this.idleStack.length > this.svIdle.size) this.idleStack = this.idleStack.filter((s) => s.state === 'idle');
    for (const s of this.svIdle) {
      if (s.closeNeeded) s.close('database configuration changed');
      else if (t - s.connectTime >= this.serverLifetime * 1000) s.close('server lifetime over');
      else if (cfg.serverIdleTimeout > 0 && t - s.lastUsed >= cfg.serverIdleTimeout * 1000 && keep > this.minPoolSize)
        s.close('server idle timeout');
      else continue;
      keep--;
    }
    for (const s of [...this.svLogin]) {
      if (t - s.connectTime >= cfg.serverConnectTimeout * 1000) s.loginTimedOut();
    }
    // server_fast_close: a session's server marked close_needed (RECONNECT, its database changed
    // on reload) goes at the end of the client's transaction, not when the client leaves. A
    // replication server goes at once, fast close or not: its stream may never end (PgBouncer).
    for (const s of [...this.svActive]) {
      const client = s.client as PoolClient | null;
      if (!s.closeNeeded || client === null) continue;
      if (!this.replServers.has(s) && !(cfg.serverFastClose && betweenTransactions(s, client))) continue;
      const err = Errors.databaseChanged();
      s.close(err.message);
      client.fail(err);
    }
    // Waiting clients: query_timeout counts the wait too, then query_wait_timeout (PgBouncer's
    // pool_client_maint); query_wait_notify tells a client, once per wait, that it is queued; and
    // the reserve pool opens after reserve_pool_timeout. The list is in waiting order: when its
    // head has not waited that long, no one has (and a thousand waiting clients are not copied and
    // walked three times a second for nothing).
    const head = this.clWaiting.first();
    const soonest = Math.min(...[cfg.queryTimeout, cfg.queryWaitTimeout, cfg.queryWaitNotify].map((x) => (x > 0 ? x : Infinity)));
    if (head !== undefined && t - head.waitStart >= soonest * 1000) {
      for (const c of [...this.clWaiting]) {
        const waited = t - c.waitStart;
        if (cfg.queryTimeout > 0 && waited >= cfg.queryTimeout * 1000) c.fail(Errors.queryTimeout(this.waitDetail()));
        else if (cfg.queryWaitTimeout > 0 && waited >= cfg.queryWaitTimeout * 1000) c.fail(Errors.queryWaitTimeout(this.waitDetail()));
        else if (cfg.queryWaitNotify > 0 && waited >= cfg.queryWaitNotify * 1000 && !c.waitNotified) c.waitNotified = c.notifyQueued();
      }
    }
    // min_pool_size, for pools that have clients or a forced user (PgBouncer's check_pool_size):
    // one login at a time, never past pool_size or the caps, never evicting for it.
    if (
      this.minPoolSize > 0 &&
      this.clWaiting.size === 0 &&
      this.acquiring === 0 &&
      this.svLogin.size === 0 &&
      (this.clientCount > 0 || this.db.user !== null) &&
      this.serverCount < Math.min(this.minPoolSize, this.poolSize) &&
      !this.host.isPaused(this.dbName) &&
      !this.retryPending() &&
      this.withinSharedLimits(false)
    ) {
      // Idle servers stay lent out (see idleStack): an acquire opens a new one.
      this.openIdle(1);
    }
    this.pump();
  }

  /**
   * RECONNECT, or a changed database definition (PgBouncer's tag_pool_dirty): every server is
   * replaced, and the parameters a client is welcomed with are learned again from a new one.
   */
  reconnect(reason: string): void {
    this.welcome = null;
    this.closeServers(reason, false);
  }

  /** Close every idle server now (PAUSE, RECONNECT, KILL); linked ones when they come back. */
  closeServers(reason: string, linkedToo: boolean): void {
    for (const s of [...this.svIdle, ...this.svUsed, ...this.svTested, ...this.svBeingCanceled, ...this.svLogin]) s.close(reason);
    for (const s of this.svActive) {
      if (linkedToo) s.close(reason);
      else s.markCloseNeeded();
    }
  }

  close(): void {
    this.closed = true;
    this.closeServers('pool closed', true);
    this.servers.close();
  }
}

/** The server owes the client nothing and the client is between transactions: the link may end. */
function betweenTransactions(server: ServerConn, client: PoolClient): boolean {
  return server.txStatus === TxStatus.Idle && server.owed === 0 && client.atMessageBoundary && !client.inExtendedQuery;
}

/** The startup packet of a replication client's own server: the pool's, plus the client's tracked
 * parameters, its `options` as they came, and `replication`. */
function replicationTarget(base: ServerTarget, req: ReplicationRequest): ServerTarget {
  const startup: Record<string, string> = { ...base.startup };
  for (const [name, value] of req.params) startup[name] = value;
  if (req.options !== null) startup.options = req.options;
  startup.replication = req.mode;
  return { ...base, startup, replication: req.mode };
}
