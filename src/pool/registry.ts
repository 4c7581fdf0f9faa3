// All pools, keyed by (database, user), and the limits that span them. A reload swaps the config
// in one assignment; pools read it live, and those whose database definition (or the server TLS
// settings) changed have their
// servers marked close_needed, so they are replaced as they come back.
import path from 'node:path';
import { now } from '../clock.js';
import { ADMIN_DB, type Config, type DatabaseDef, type LoadBalanceHosts } from '../config/types.js';
import { Errors, type PoolerError } from '../errors.js';
import { log, type Logger } from '../log.js';
import { parseScramSecret } from '../protocol/scram.js';
import { serverTlsIdentity, type TlsContexts } from '../net/tls.js';
import type { ServerCredentials } from '../server/server-auth.js';
import type { ServerConn, ServerTarget } from '../server/server-conn.js';
import { Pool, type PoolHost } from './pool.js';

type ScramKeys = { clientKey: Buffer; serverKey: Buffer };

/** A pool's key: its database and user, or the database alone when [databases] forces a user.
 * The same in every worker of an instance. */
export function poolKey(dbName: string, user: string | null): string {
  return user === null ? `${dbName}\0` : `${dbName}\0${user}`;
}

/** Server connection slots counted across the workers of an instance (cluster/worker-link.ts). */
export interface ServerSlots {
  acquire(pool: Pool): Promise<void>;
  release(pool: Pool): void;
}

/** An auth_query to run for one login, on a server of the auth pool, with the user name as $1. */
export interface AuthLookup {
  readonly pool: Pool;
  readonly sql: string;
  /** What it found: the secret ('' when its password is NULL), or null for no row. */
  remember(secret: string | null): void;
}

const RESERVED_AUTH_DB = `cannot use the reserved "${ADMIN_DB}" database as an auth_dbname`;

export class Registry implements PoolHost {
  readonly pools = new Map<string, Pool>();
  /** Databases paused by PAUSE (all of them when `pausedAll`). */
  readonly paused = new Set<string>();
  pausedAll = false;
  /** Databases refused to new clients by the console's DISABLE (until ENABLE). */
  readonly disabled = new Set<string>();
  /** The console's SUSPEND: no pool gets a server until RESUME, as while paused. */
  suspended = false;
  /** SHUTDOWN WAIT_FOR_SERVERS: no pool gets a server again. */
  draining = false;
  /** SCRAM keys recovered from clients' logins, for pass-through to servers (per user). */
  private readonly scramKeys = new Map<string, ScramKeys>();
  /** Secrets found by auth_query: they also log the user in to PostgreSQL (as PgBouncer). */
  private readonly queriedSecrets = new Map<string, string>();
  /** Client connections per database name and per login user, counted from the startup packet
   * to the close (PgBouncer's client_connection_count; SHOW DATABASES / SHOW USERS). */
  readonly dbClients = new Map<string, number>();
  readonly userClients = new Map<string, number>();
  /** When each database known only through `*` was first seen with no client (autodb_idle_timeout). */
  private readonly unusedSince = new Map<string, number>();

  constructor(
    public cfg: Config,
    public tls: TlsContexts,
  ) {
    this.checkConfig(cfg);
  }

  /** The pool for a login, created on first use, or the reason there is none. */
  poolFor(dbName: string, user: string, keys: ScramKeys | null): Pool | PoolerError {
    const db = this.databaseDef(dbName);
    if (db === null) return Errors.noSuchDatabase(dbName);
    // DISABLE db: new clients are refused (clients call this at login).
    if (this.disabled.has(dbName)) return Errors.databaseDisabled(dbName);
    if (keys !== null) this.scramKeys.set(user, keys);
    const key = poolKey(dbName, db.user !== null ? null : user);
    let pool = this.pools.get(key);
    if (pool === undefined) {
      if (!this.cfg.databases.has(dbName) && !this.hasPool(dbName)) log().info(`registered new auto-database: ${dbName}`);
      // A forced user's pool is that user's: its [users] settings apply, not the first client's.
      pool = new Pool(this, db, dbName, db.user ?? user, () => this.target(pool!));
      this.pools.set(key, pool);
    }
    return pool;
  }

  /**
   * Count a client against max_db_client_connections and max_user_client_connections, as
   * PgBouncer's set_pool does at the startup packet: the counts go up first and stay up until
   * uncountClient, refused or not. Admin users on the console are exempt from both limits.
   */
  countClient(dbName: string, user: string, admin: boolean): PoolerError | null {
    const onDb = bump(this.dbClients, dbName, 1);
    const ofUser = bump(this.userClients, user, 1);
    if (admin && this.cfg.adminUsers.includes(user)) return null;
    const maxDb = this.maxDbClients(dbName, admin);
    if (maxDb > 0 && onDb > maxDb) return Errors.clientLimit('max_db_client_connections');
    const maxUser = this.maxUserClients(user);
    if (maxUser > 0 && ofUser > maxUser) return Errors.clientLimit('max_user_client_connections');
    return null;
  }

  uncountClient(dbName: string, user: string): void {
    bump(this.dbClients, dbName, -1);
    bump(this.userClients, user, -1);
  }

  /** A database's own limit, or the global one when it sets none (or 0, as in PgBouncer). The
   * console has no entry of its own (a `*` entry is not it). */
  maxDbClients(dbName: string, admin: boolean): number {
    const own = admin ? null : this.databaseDef(dbName)?.maxDbClientConnections;
    return own || this.cfg.maxDbClientConnections;
  }

  maxUserClients(user: string): number {
    return this.cfg.users.get(user)?.maxUserClientConnections || this.cfg.maxUserClientConnections;
  }

  /** Some pool serves `dbName`: a database known through `*` stays registered while one does. */
  private hasPool(dbName: string): boolean {
    for (const p of this.pools.values()) if (p.dbName === dbName) return true;
    return false;
  }

  private databaseDef(dbName: string): DatabaseDef | null {
    return this.cfg.databases.get(dbName) ?? this.cfg.databases.get('*') ?? null;
  }

  /** Where and how a pool's next server connection logs in (read at connect time, so live). */
  private target(pool: Pool): ServerTarget {
    const cfg = this.cfg;
    const db = this.databaseDef(pool.dbName) ?? pool.db;
    const host = db.hosts.length > 1 ? pickHost(pool, db.hosts, db.loadBalanceHosts) : (db.hosts[0] ?? cfg.unixSocketDir);
    const unix = host.startsWith('/');
    const user = db.user ?? pool.userName;
    const startup: Record<string, string> = { user, database: db.dbname ?? pool.dbName };
    for (const [k, v] of Object.entries(db.startupParams)) startup[k] = v;
    return {
      host: unix ? path.join(host, `.s.PGSQL.${db.port}`) : host,
      port: db.port,
      unix,
      startup,
      user,
      creds: this.credentials(db, user),
      replication: null,
    };
  }

  private credentials(db: DatabaseDef, user: string): ServerCredentials {
    if (db.password !== null) return { kind: 'password', password: db.password };
    const secret = this.cfg.authEntries.get(user)?.secret ?? this.queriedSecrets.get(user);
    if (secret === undefined || secret === '') return { kind: 'none' };
    if (parseScramSecret(secret) !== null) {
      // A SCRAM secret can only log in by passing through the client's own keys.
      const keys = db.user === null ? this.scramKeys.get(user) : undefined;
      return keys !== undefined ? { kind: 'scram-keys', ...keys } : { kind: 'scram-secret' };
    }
    if (/^md5[0-9a-f]{32}$/.test(secret)) return { kind: 'md5', hash: secret };
    return { kind: 'password', password: secret };
  }

  /**
   * How a user missing from the auth_file is looked up (PgBouncer's set_pool and
   * prepare_auth_database): null when no auth_user applies or the database is not configured
   * (the user is then unknown), else the auth_query to run in the auth pool, or why the login is
   * refused. The reasons go to `clientLog`, the client's logger, as PgBouncer logs them.
   */
  authLookup(dbName: string, user: string, clientLog: Logger): AuthLookup | PoolerError | null {
    const isConsole = dbName === ADMIN_DB;
    const db = isConsole ? null : this.databaseDef(dbName);
    if (!isConsole && db === null) return null;
    const authUser = db?.authUser ?? this.cfg.authUser;
    if (authUser === null) return null;
    const authDb = db?.authDbname ?? this.cfg.authDbname ?? dbName;
    if (authDb === ADMIN_DB) {
      clientLog.error(RESERVED_AUTH_DB);
      return Errors.bouncerConfig();
    }
    if (this.databaseDef(authDb) === null) {
      clientLog.error(`authentication database "${authDb}" is not configured.`);
      return Errors.bouncerConfig();
    }
    if (this.disabled.has(authDb)) return Errors.authDatabaseDisabled(authDb);
    const pool = this.poolFor(authDb, authUser, null);
    if (!(pool instanceof Pool)) return pool;
    return {
      pool,
      sql: db?.authQuery ?? this.cfg.authQuery,
      // The secret also logs the user in to PostgreSQL, as PgBouncer does with its dynamic users.
      remember: (secret) => {
        if (secret === null) this.queriedSecrets.delete(user);
        else this.queriedSecrets.set(user, secret);
      },
    };
  }

  /** PgBouncer refuses auth_dbname = pgbouncer when the config is loaded; here the logins it would
   * serve are refused (the console is no database to query), and the load says why. */
  private checkConfig(cfg: Config): void {
    if (cfg.authDbname === ADMIN_DB) log().error(RESERVED_AUTH_DB);
  }

  serverCount(db: string | null, user: string | null): number {
    let n = 0;
    for (const p of this.pools.values()) {
      if ((db === null || p.db.name === db) && (user === null || p.serverUser === user)) n += p.serverCount;
    }
    return n;
  }

  evicting = false;

  evictIdleFor(pool: Pool, by: 'db' | 'user'): boolean {
    return this.closeIdle((p) => p !== pool && (by === 'db' ? p.db.name === pool.db.name : p.serverUser === pool.serverUser), `max_${by}_connections: making room for another pool`);
  }

  /** Close one idle server (idle at least `minIdleMs`) of the first pool `which` picks; false if
   * none has one. */
  private closeIdle(which: (p: Pool) => boolean, reason: string, minIdleMs = 0): boolean {
    for (const p of this.pools.values()) {
      if (!which(p)) continue;
      let idle: ServerConn | undefined;
      for (const s of p.svIdle) {
        if (now - s.lastUsed < minIdleMs) continue;
        idle = s;
        break;
      }
      if (idle !== undefined) {
        this.evicting = true;
        try {
          idle.close(reason);
        } finally {
          this.evicting = false;
        }
        return true;
      }
    }
    return false;
  }

  /** The instance's server slots (a multi-worker instance), or null: this process counts alone. */
  slots: ServerSlots | null = null;

  serverSlot(pool: Pool): Promise<void> | null {
    return this.slots?.acquire(pool) ?? null;
  }

  releaseServerSlot(pool: Pool): void {
    this.slots?.release(pool);
  }

  /** Another worker of the instance waits for a slot under this limit: close one idle server
   * that has been idle at least `minIdleMs`. */
  closeIdleFor(by: 'pool' | 'db' | 'user', name: string, minIdleMs: number): boolean {
    const which = (p: Pool): boolean => (by === 'pool' ? poolKey(p.dbName, p.db.user !== null ? null : p.userName) === name : by === 'db' ? p.db.name === name : p.serverUser === name);
    return this.closeIdle(which, `making room for another worker (${by === 'pool' ? 'pool_size' : `max_${by}_connections`})`, minIdleMs);
  }

  isPaused(db: string): boolean {
    // Asked at every hand-out of a server: no lookup while nothing is paused.
    return this.draining || this.pausedAll || this.suspended || (this.paused.size > 0 && this.paused.has(db));
  }

  sweep(): void {
    // min_pool_size of a database with a forced user holds before any client comes (PgBouncer
    // 1.21+ creates those pools in its janitor); other pools fill once they have clients.
    for (const db of this.cfg.databases.values()) {
      if (db.user !== null && db.name !== '*' && (db.minPoolSize ?? this.cfg.minPoolSize) > 0) this.poolFor(db.name, db.user, null);
    }
    // A database known only through `*` (PgBouncer's autodb) that no client has used for
    // autodb_idle_timeout goes, its pools and their servers with it: anyone can name a database
    // before proving who they are, and every name would otherwise keep a pool for good.
    const inUse = new Set<string>();
    for (const p of this.pools.values()) {
      p.sweep();
      if (p.clientCount > 0) inUse.add(p.dbName);
    }
    const dropped = new Set<string>();
    for (const [key, p] of this.pools) {
      if (this.cfg.databases.has(p.dbName) || inUse.has(p.dbName)) {
        this.unusedSince.delete(p.dbName);
        continue;
      }
      const since = this.unusedSince.get(p.dbName);
      if (since === undefined) this.unusedSince.set(p.dbName, now);
      else if (now - since >= this.cfg.autodbIdleTimeout * 1000) {
        this.pools.delete(key);
        p.close();
        dropped.add(p.dbName);
      }
    }
    for (const db of dropped) {
      this.unusedSince.delete(db);
      log().warn(`dropping database '${db}' as it does not exist anymore or inactive auto-database`);
    }
  }

  /** Swap in a new config. Pools whose database definition changed get fresh servers. */
  reload(cfg: Config, tls: TlsContexts): void {
    const old = this.cfg;
    // New server TLS settings (or files) replace every server, as PgBouncer does: idle ones now,
    // linked ones when their client lets go.
    const tlsChanged = serverTlsIdentity(this.tls.server) !== serverTlsIdentity(tls.server);
    this.cfg = cfg;
    this.checkConfig(cfg);
    this.tls = tls;
    for (const p of this.pools.values()) {
      const before = old.databases.get(p.db.name);
      const after = cfg.databases.get(p.db.name);
      const defChanged = JSON.stringify(before) !== JSON.stringify(after);
      if (!defChanged && !tlsChanged) continue;
      if (after !== undefined) p.db = after;
      p.reconnect('database configuration changed');
    }
    for (const p of this.pools.values()) p.pump();
  }

  close(): void {
    for (const p of this.pools.values()) p.close();
  }
}

/**
 * The host of a list for a pool's next server: round-robin moves on by one for each new server,
 * disable stays on one host until a login to it fails (PgBouncer's load_balance_hosts). Either
 * way a host whose login failed within server_login_retry is passed over while another has not.
 */
function pickHost(pool: Pool, hosts: readonly string[], mode: LoadBalanceHosts): string {
  const n = hosts.length;
  let i = pool.hostTurn % n;
  for (let k = 0; k < n; k++) {
    const j = (pool.hostTurn + k) % n;
    if (!pool.hostDown(hosts[j]!)) {
      i = j;
      break;
    }
  }
  pool.hostTurn = mode === 'round-robin' ? i + 1 : i;
  return hosts[i]!;
}

/** Add `by` to a count; a count back at 0 leaves the map, so names a client merely tried do not
 * stay behind. Returns the new count. */
function bump(counts: Map<string, number>, key: string, by: number): number {
  const n = (counts.get(key) ?? 0) + by;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
  return n;
}
