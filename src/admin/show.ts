// What SHOW prints, with PgBouncer 1.25's column names, order and types (src/admin.c,
// src/stats.c). The records here are read from the live state lists and the pools' plain-number
// stats each time they are asked for; the console encodes them and the Prometheus collector maps
// the same records onto the exporter's series, so the two can never disagree.
import { now } from '../clock.js';
import { ADMIN_DB, type ClientConn } from '../client/client-conn.js';
import { settingRows } from '../config/load.js';
import type { Config } from '../config/types.js';
import { dnsHosts, dnsPending } from '../net/dns.js';
import { log } from '../log.js';
import type { Column } from '../protocol/encode.js';
import { zeroStats, type Pool, type PoolStats } from '../pool/pool.js';
import type { Peers } from '../pool/peer-pool.js';
import type { Registry } from '../pool/registry.js';
import type { ReplicationMode, ServerConn } from '../server/server-conn.js';

/** What SHOW reads; App provides it. */
export interface ShowHost {
  readonly cfg: Config;
  readonly registry: Registry;
  readonly peers: Peers;
  readonly clients: ReadonlySet<ClientConn>;
  readonly version: string;
  /** The console's own row of SHOW STATS: each console query is a query and a transaction there,
   * as in PgBouncer (whose totals then include them). */
  readonly consoleStats: PoolStats;
}

export type Cell = string | number | null;

export interface ResultSet {
  readonly columns: readonly Column[];
  readonly rows: readonly (readonly Cell[])[];
}

// PgBouncer's tupdesc letters: s text, i int4, q int8, N numeric (its uint64 counters).
const OID: Record<string, number> = { s: 25, i: 23, q: 20, N: 1700 };

function columns(types: string, names: string): Column[] {
  const list = names.trim().split(/\s+/);
  if (list.length !== types.length) throw new Error(`bug: ${names} does not match ${types}`);
  return list.map((name, i) => ({ name, typeOid: OID[types[i]!]! }));
}

/** The console's own pool: PgBouncer lists it like any other, in statement mode, user pgbouncer. */
const ADMIN_POOL_SIZE = 2;

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints a time (in the process's zone; ours is UTC). */
function showTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

// ---------------------------------------------------------------------------------------------
// Records

/** Live pools sorted by (database, user), as PgBouncer keeps pool_list. */
function sortedPools(reg: Registry): Pool[] {
  return [...reg.pools.values()].sort((a, b) => byName(a.dbName, b.dbName) || byName(a.serverUser, b.serverUser));
}

function consoleClients(h: ShowHost): ClientConn[] {
  return [...h.clients].filter((c) => c.admin && c.phase === 'ready');
}

export interface PoolRecord {
  readonly database: string;
  readonly user: string;
  readonly clActive: number;
  readonly clWaiting: number;
  readonly svActive: number;
  readonly svIdle: number;
  readonly svUsed: number;
  readonly svTested: number;
  readonly svBeingCanceled: number;
  readonly svLogin: number;
  /** Cancel requests sent, until PostgreSQL closes their connection (also sv_active_cancel). */
  readonly clActiveCancelReq: number;
  /** Cancel requests whose connection to PostgreSQL is being opened. */
  readonly clWaitingCancelReq: number;
  /** How long the oldest waiting client has waited, in µs. */
  readonly maxwaitUs: number;
  readonly poolMode: string;
  readonly loadBalanceHosts: string | null;
}

export function poolRecords(h: ShowHost): PoolRecord[] {
  const admin: PoolRecord = {
    database: ADMIN_DB, user: ADMIN_DB, clActive: consoleClients(h).length, clWaiting: 0,
    svActive: 0, svIdle: 0, svUsed: 0, svTested: 0, svBeingCanceled: 0, svLogin: 0, clActiveCancelReq: 0, clWaitingCancelReq: 0,
    maxwaitUs: 0, poolMode: 'statement', loadBalanceHosts: null,
  };
  const pools = sortedPools(h.registry).map((p): PoolRecord => ({
    database: p.dbName,
    user: p.serverUser,
    clActive: p.clActive.size,
    clWaiting: p.clWaiting.size + p.replWaiting.size,
    svActive: p.svActive.size,
    svIdle: p.svIdle.size,
    svUsed: p.svUsed.size,
    svTested: p.svTested.size,
    svBeingCanceled: p.svBeingCanceled.size,
    svLogin: p.svLogin.size,
    clActiveCancelReq: p.cancels.active,
    clWaitingCancelReq: p.cancels.waiting,
    maxwaitUs: Math.max(0, p.maxWaitMs()) * 1000,
    poolMode: p.mode,
    loadBalanceHosts: p.db.hosts.length > 1 ? p.db.loadBalanceHosts : null,
  }));
  return [admin, ...pools].sort((a, b) => byName(a.database, b.database) || byName(a.user, b.user));
}

export interface DatabaseRecord {
  readonly name: string;
  readonly host: string | null;
  readonly port: number;
  readonly database: string;
  readonly forceUser: string | null;
  readonly poolSize: number;
  readonly minPoolSize: number;
  readonly reservePoolSize: number;
  readonly serverLifetime: number;
  readonly poolMode: string | null;
  readonly loadBalanceHosts: string | null;
  readonly maxConnections: number;
  readonly currentConnections: number;
  readonly maxClientConnections: number;
  readonly currentClientConnections: number;
  readonly paused: boolean;
  readonly disabled: boolean;
}

/** [databases] entries, databases made from the `*` fallback, and the console's own. */
export function databaseRecords(h: ShowHost): DatabaseRecord[] {
  const { cfg, registry: reg } = h;
  const names = new Set<string>();
  for (const name of cfg.databases.keys()) if (name !== '*') names.add(name);
  for (const p of reg.pools.values()) names.add(p.dbName);
  const out: DatabaseRecord[] = [];
  for (const name of names) {
    const def = cfg.databases.get(name) ?? cfg.databases.get('*');
    if (def === undefined) continue;
    let servers = 0;
    for (const p of reg.pools.values()) if (p.dbName === name) servers += p.serverCount;
    out.push({
      name,
      host: def.hosts.length > 0 ? def.hosts.join(',') : null,
      port: def.port,
      database: def.dbname ?? name,
      forceUser: def.user,
      poolSize: def.poolSize ?? cfg.defaultPoolSize,
      minPoolSize: def.minPoolSize ?? cfg.minPoolSize,
      reservePoolSize: def.reservePoolSize ?? cfg.reservePoolSize,
      serverLifetime: Math.floor(def.serverLifetime ?? cfg.serverLifetime),
      poolMode: def.poolMode,
      loadBalanceHosts: def.hosts.length > 1 ? def.loadBalanceHosts : null,
      maxConnections: def.maxDbConnections ?? cfg.maxDbConnections,
      currentConnections: servers,
      maxClientConnections: reg.maxDbClients(name, false),
      currentClientConnections: reg.dbClients.get(name) ?? 0,
      paused: reg.paused.has(name),
      disabled: reg.disabled.has(name),
    });
  }
  out.push({
    name: ADMIN_DB, host: null, port: cfg.listenPort, database: ADMIN_DB, forceUser: ADMIN_DB,
    poolSize: ADMIN_POOL_SIZE, minPoolSize: 0, reservePoolSize: 0, serverLifetime: 0, poolMode: 'statement',
    loadBalanceHosts: null, maxConnections: 0, currentConnections: 0, maxClientConnections: reg.maxDbClients(ADMIN_DB, true),
    currentClientConnections: reg.dbClients.get(ADMIN_DB) ?? 0, paused: false, disabled: false,
  });
  return out.sort((a, b) => byName(a.name, b.name));
}

interface UserRecord {
  readonly name: string;
  readonly poolSize: number | null;
  readonly reservePoolSize: number | null;
  readonly poolMode: string | null;
  readonly maxUserConnections: number;
  readonly currentConnections: number;
  readonly maxUserClientConnections: number;
  readonly currentClientConnections: number;
}

/** Users PgBouncer would know: [users], the auth_file, those with a pool, and pgbouncer. */
function userRecords(h: ShowHost): UserRecord[] {
  const { cfg, registry: reg } = h;
  const names = new Set<string>([ADMIN_DB, ...cfg.users.keys(), ...cfg.authEntries.keys()]);
  for (const p of reg.pools.values()) names.add(p.serverUser);
  return [...names].sort(byName).map((name) => {
    const def = cfg.users.get(name);
    return {
      name,
      poolSize: def?.poolSize ?? null,
      reservePoolSize: def?.reservePoolSize ?? null,
      poolMode: def?.poolMode ?? null,
      maxUserConnections: def?.maxUserConnections ?? cfg.maxUserConnections,
      currentConnections: reg.serverCount(null, name),
      maxUserClientConnections: reg.maxUserClients(name),
      currentClientConnections: reg.userClients.get(name) ?? 0,
    };
  });
}

/** SHOW LISTS rows, in PgBouncer's order. There is no slab cache, so the free_* lists are always
 * empty, and no DNS zone checking. */
export function listRecords(h: ShowHost): [string, number][] {
  let servers = 0;
  for (const p of h.registry.pools.values()) servers += p.serverCount;
  let login = 0;
  for (const c of h.clients) if (c.phase === 'startup' || c.phase === 'auth') login++;
  return [
    ['databases', databaseRecords(h).length],
    ['users', userRecords(h).length],
    ['peers', h.cfg.peers.size],
    ['pools', h.registry.pools.size + 1],
    ['peer_pools', h.peers.pools.size],
    ['free_clients', 0],
    ['used_clients', h.clients.size],
    ['login_clients', login],
    ['free_servers', 0],
    ['used_servers', servers],
    ['dns_names', dnsHosts().length],
    ['dns_zones', 0],
    ['dns_queries', dnsPending()],
    ['dns_pending', dnsPending()],
  ];
}

function addStats(into: PoolStats, s: PoolStats): void {
  for (const k of Object.keys(into) as (keyof PoolStats)[]) into[k] += s[k];
}

/** Totals since start per database (times in µs), sorted by name, the console's among them. */
export function statsTotals(h: ShowHost): Map<string, PoolStats> {
  const out = new Map<string, PoolStats>([[ADMIN_DB, { ...h.consoleStats }]]);
  for (const p of h.registry.pools.values()) {
    let s = out.get(p.dbName);
    if (s === undefined) out.set(p.dbName, (s = zeroStats()));
    addStats(s, p.stats);
  }
  return new Map([...out].sort(([a], [b]) => byName(a, b)));
}

// ---------------------------------------------------------------------------------------------
// Averages over stats_period (PgBouncer stats.c): totals are snapshotted every stats_period; an
// average is the change since the snapshot before the last one, over the time since then.

export class StatsPeriod {
  private older = new Map<string, PoolStats>();
  private newer = new Map<string, PoolStats>();
  private oldStamp: number;
  private newStamp: number;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly host: ShowHost) {
    this.newStamp = Date.now();
    this.oldStamp = this.newStamp - 1000;
    // A 1 s tick rather than a stats_period timer, so a reload that changes it takes effect.
    this.timer = setInterval(() => {
      if (Date.now() - this.newStamp >= this.host.cfg.statsPeriod * 1000) this.refresh();
    }, 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private refresh(): void {
    this.older = this.newer;
    this.newer = statsTotals(this.host);
    this.oldStamp = this.newStamp;
    this.newStamp = Date.now();
    if (!this.host.cfg.logStats) return;
    const total = zeroStats();
    const old = zeroStats();
    for (const s of this.newer.values()) addStats(total, s);
    for (const s of this.older.values()) addStats(old, s);
    const a = this.average(total, old);
    log().info(
      { stats: a },
      `stats: ${a.xacts} xacts/s, ${a.queries} queries/s, ${a.clientParses} client parses/s, ${a.serverParses} server parses/s, ${a.binds} binds/s, ` +
        `in ${a.bytesReceived} B/s, out ${a.bytesSent} B/s, xact ${a.xactTime} us, query ${a.queryTime} us, wait ${a.waitTime} us`,
    );
  }

  /** Per-second rates of the counters and per-event means of the times (µs), PgBouncer's way. */
  private average(cur: PoolStats, old: PoolStats): PoolStats {
    const durUs = (Date.now() - this.oldStamp) * 1000;
    const avg = zeroStats();
    if (durUs <= 0) return avg;
    const rate = (c: number, o: number): number => Math.floor((1e6 * (c - o)) / durUs);
    const mean = (t: number, ot: number, n: number): number => (n > 0 ? Math.floor((t - ot) / n) : 0);
    avg.serverAssignments = rate(cur.serverAssignments, old.serverAssignments);
    avg.xacts = rate(cur.xacts, old.xacts);
    avg.queries = rate(cur.queries, old.queries);
    avg.bytesReceived = rate(cur.bytesReceived, old.bytesReceived);
    avg.bytesSent = rate(cur.bytesSent, old.bytesSent);
    avg.clientParses = rate(cur.clientParses, old.clientParses);
    avg.serverParses = rate(cur.serverParses, old.serverParses);
    avg.binds = rate(cur.binds, old.binds);
    avg.xactTime = mean(cur.xactTime, old.xactTime, cur.xacts - old.xacts);
    avg.queryTime = mean(cur.queryTime, old.queryTime, cur.queries - old.queries);
    avg.waitTime = mean(cur.waitTime, old.waitTime, cur.serverAssignments - old.serverAssignments);
    return avg;
  }

  averages(db: string, cur: PoolStats): PoolStats {
    return this.average(cur, this.older.get(db) ?? zeroStats());
  }

  /** All databases together (SHOW TOTALS). */
  overall(totals: Iterable<PoolStats>): { total: PoolStats; avg: PoolStats } {
    const total = zeroStats();
    const old = zeroStats();
    for (const s of totals) addStats(total, s);
    for (const s of this.older.values()) addStats(old, s);
    return { total, avg: this.average(total, old) };
  }
}

// ---------------------------------------------------------------------------------------------
// Result sets

const int = Math.floor;

const POOLS = columns(
  'ssiiiiiiiiiiiiiss',
  `database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active sv_active_cancel
   sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us pool_mode load_balance_hosts`,
);

function showPools(h: ShowHost): ResultSet {
  return {
    columns: POOLS,
    rows: poolRecords(h).map((p) => [
      p.database, p.user, p.clActive, p.clWaiting, p.clActiveCancelReq, p.clWaitingCancelReq, p.svActive, p.clActiveCancelReq,
      p.svBeingCanceled, p.svIdle, p.svUsed, p.svTested, p.svLogin,
      int(p.maxwaitUs / 1e6), int(p.maxwaitUs % 1e6), p.poolMode, p.loadBalanceHosts,
    ]),
  };
}

const STAT_NAMES = 'server_assignment_count xact_count query_count';
const STATS = columns(
  's' + 'N'.repeat(22),
  `database total_server_assignment_count total_xact_count total_query_count total_received total_sent
   total_xact_time total_query_time total_wait_time total_client_parse_count total_server_parse_count
   total_bind_count avg_server_assignment_count avg_xact_count avg_query_count avg_recv avg_sent avg_xact_time
   avg_query_time avg_wait_time avg_client_parse_count avg_server_parse_count avg_bind_count`,
);
const STATS_TOTALS = columns(
  's' + 'N'.repeat(11),
  `database ${STAT_NAMES} bytes_received bytes_sent xact_time query_time wait_time client_parse_count
   server_parse_count bind_count`,
);
const STATS_AVERAGES = columns(
  's' + 'N'.repeat(11),
  `database ${STAT_NAMES} bytes_received bytes_sent xact_time query_time wait_time avg_client_parse_count
   avg_server_parse_count avg_bind_count`,
);

/** The counters in PgBouncer's order, the three prepared-statement ones last. */
function statCells(s: PoolStats): number[] {
  return [
    s.serverAssignments, s.xacts, s.queries, s.bytesReceived, s.bytesSent, int(s.xactTime), int(s.queryTime), int(s.waitTime),
    s.clientParses, s.serverParses, s.binds,
  ];
}

function showStats(h: ShowHost, period: StatsPeriod): ResultSet {
  const rows: Cell[][] = [];
  for (const [db, s] of statsTotals(h)) rows.push([db, ...statCells(s), ...statCells(period.averages(db, s))]);
  return { columns: STATS, rows };
}

function showStatsTotals(h: ShowHost): ResultSet {
  return { columns: STATS_TOTALS, rows: [...statsTotals(h)].map(([db, s]) => [db, ...statCells(s)]) };
}

function showStatsAverages(h: ShowHost, period: StatsPeriod): ResultSet {
  return { columns: STATS_AVERAGES, rows: [...statsTotals(h)].map(([db, s]) => [db, ...statCells(period.averages(db, s))]) };
}

const TOTALS = columns('sN', 'name value');
const TOTAL_NAMES = [
  'server_assignment_count', 'xact_count', 'query_count', 'client_bytes', 'server_bytes', 'xact_time', 'query_time',
  'wait_time', 'ps_client_parse_count', 'ps_server_parse_count', 'ps_bind_count',
];

function showTotals(h: ShowHost, period: StatsPeriod): ResultSet {
  const { total, avg } = period.overall(statsTotals(h).values());
  const t = statCells(total);
  const a = statCells(avg);
  return {
    columns: TOTALS,
    rows: [...TOTAL_NAMES.map((n, k) => [`total_${n}`, t[k]!]), ...TOTAL_NAMES.map((n, k) => [`avg_${n}`, a[k]!])],
  };
}

const SOCKET_NAMES = `type user database replication state addr port local_addr local_port connect_time request_time wait
  wait_us close_needed ptr link remote_pid tls application_name prepared_statements id`;
const CLIENTS = columns('ssssssisissiiississii', SOCKET_NAMES);
const SOCKETS = columns('ssssssisissiiississiiiiiiiii', `${SOCKET_NAMES} recv_pos pkt_pos pkt_remain send_pos send_remain pkt_avail send_avail`);

/** SHOW CLIENTS/SERVERS `replication`, PgBouncer's words. */
function replicationKind(mode: ReplicationMode | null): string {
  return mode === null ? 'none' : mode === 'database' ? 'logical' : 'physical';
}

function tlsText(info: { version: string; cipher: string } | null): string {
  return info === null ? '' : `${info.version}/${info.cipher}`;
}

function clientRow(h: ShowHost, c: ClientConn, state: string, debug: boolean): Cell[] {
  const waitMs = state === 'waiting' || state === 'cl_waiting' ? Math.max(0, now - c.waitStart) : 0;
  const unix = c.isUnix;
  const row: Cell[] = [
    'C', c.user, c.dbName, replicationKind(c.replication?.mode ?? null), state,
    unix ? 'unix' : c.remoteAddress, unix ? h.cfg.listenPort : c.remotePort,
    unix ? 'unix' : (c.socket.localAddress ?? ''), unix ? h.cfg.listenPort : (c.socket.localPort ?? 0),
    showTime(c.connectTime), showTime(c.lastActivity), int(waitMs / 1000), int((waitMs % 1000) * 1000), 0,
    c.label, c.server?.label ?? '', 0, tlsText(c.tls), c.params.get('application_name') ?? '', c.stmts?.size ?? 0, c.id,
  ];
  if (debug) row.push(0, 0, 0, 0, 0, 0, c.unsentBytes);
  return row;
}

function serverRow(s: ServerConn, pool: Pool, state: string, link: ClientConn | undefined, debug: boolean): Cell[] {
  const t = s.target;
  const row: Cell[] = [
    'S', t.user, pool.dbName, replicationKind(t.replication), state,
    t.unix ? 'unix' : t.host, t.port, t.unix ? 'unix' : (s.socket.localAddress ?? ''), s.socket.localPort ?? 0,
    showTime(s.connectTime), showTime(s.lastUsed), 0, 0, s.closeNeeded ? 1 : 0,
    s.label, link?.label ?? '', s.backendPid, tlsText(s.tls), s.params.get('application_name') ?? '', s.prepared.size, s.id,
  ];
  if (debug) row.push(0, 0, 0, 0, 0, 0, s.unsentBytes);
  return row;
}

/** The clients of each pool, in pool order (PgBouncer walks pool_list); logins are not listed. */
function clientsByPool(h: ShowHost): { console: ClientConn[]; pools: [Pool, ClientConn[], ClientConn[]][] } {
  const conn = new Map<unknown, ClientConn>();
  for (const c of h.clients) conn.set(c, c);
  const pick = (list: Iterable<unknown>): ClientConn[] => [...list].map((x) => conn.get(x)).filter((c) => c !== undefined);
  return {
    console: consoleClients(h),
    pools: sortedPools(h.registry).map((p) => [p, pick(p.clActive), [...pick(p.clWaiting), ...pick(p.replWaiting)]]),
  };
}

function linkedClients(h: ShowHost): Map<ServerConn, ClientConn> {
  const m = new Map<ServerConn, ClientConn>();
  for (const c of h.clients) if (c.server !== null) m.set(c.server, c);
  return m;
}

/** Rows of the console's pool and of each pool, in PgBouncer's pool_list order (by database,
 * then user), the console's among them. */
function inPoolOrder(h: ShowHost, console: (c: ClientConn) => Cell[][], pool: (p: Pool, active: ClientConn[], waiting: ClientConn[]) => Cell[][]): Cell[][] {
  const g = clientsByPool(h);
  const groups: [string, string, Cell[][]][] = [[ADMIN_DB, ADMIN_DB, g.console.flatMap(console)]];
  for (const [p, active, waiting] of g.pools) groups.push([p.dbName, p.serverUser, pool(p, active, waiting)]);
  groups.sort((a, b) => byName(a[0], b[0]) || byName(a[1], b[1]));
  return groups.flatMap((g) => g[2]);
}

function showClients(h: ShowHost): ResultSet {
  const rows = inPoolOrder(
    h,
    (c) => [clientRow(h, c, 'idle', false)],
    (_p, active, waiting) => [
      ...active.map((c) => clientRow(h, c, c.server !== null ? 'active' : 'idle', false)),
      ...waiting.map((c) => clientRow(h, c, 'waiting', false)),
    ],
  );
  return { columns: CLIENTS, rows };
}

const SERVER_LISTS: [keyof Pick<Pool, 'svActive' | 'svIdle' | 'svUsed' | 'svTested' | 'svBeingCanceled' | 'svLogin'>, string, string][] = [
  ['svActive', 'active', 'sv_active'],
  ['svIdle', 'idle', 'sv_idle'],
  ['svUsed', 'used', 'sv_used'],
  ['svTested', 'tested', 'sv_tested'],
  ['svBeingCanceled', 'being_canceled', 'sv_being_canceled'],
  ['svLogin', 'new', 'sv_login'],
];

function showServers(h: ShowHost): ResultSet {
  const links = linkedClients(h);
  const rows: Cell[][] = [];
  for (const p of sortedPools(h.registry)) {
    for (const [list, state] of SERVER_LISTS) for (const s of p[list]) rows.push(serverRow(s, p, state, links.get(s), false));
  }
  return { columns: CLIENTS, rows };
}

/** SHOW SOCKETS (every socket) and SHOW ACTIVE_SOCKETS (those with bytes still to send). */
function showSockets(h: ShowHost, onlyBusy: boolean): ResultSet {
  const links = linkedClients(h);
  const busy = (conn: { unsentBytes: number }): boolean => !onlyBusy || conn.unsentBytes > 0;
  const clients = (list: ClientConn[], state: string): Cell[][] => list.filter((c) => busy(c)).map((c) => clientRow(h, c, state, true));
  const rows = inPoolOrder(
    h,
    (c) => clients([c], 'cl_active'),
    (p, active, waiting) => {
      const out = [...clients(active, 'cl_active'), ...clients(waiting, 'cl_waiting')];
      for (const [list, , state] of SERVER_LISTS) {
        for (const s of p[list]) if (busy(s)) out.push(serverRow(s, p, state, links.get(s), true));
      }
      return out;
    },
  );
  for (const c of h.clients) {
    if ((c.phase === 'startup' || c.phase === 'auth') && busy(c)) rows.push(clientRow(h, c, 'cl_login', true));
  }
  return { columns: SOCKETS, rows };
}

const DATABASES = columns(
  'ssissiiiissiiiiii',
  `name host port database force_user pool_size min_pool_size reserve_pool_size server_lifetime pool_mode
   load_balance_hosts max_connections current_connections max_client_connections current_client_connections paused disabled`,
);

function showDatabases(h: ShowHost): ResultSet {
  return {
    columns: DATABASES,
    rows: databaseRecords(h).map((d) => [
      d.name, d.host, d.port, d.database, d.forceUser, d.poolSize, d.minPoolSize, d.reservePoolSize, d.serverLifetime,
      d.poolMode, d.loadBalanceHosts, d.maxConnections, d.currentConnections, d.maxClientConnections,
      d.currentClientConnections, d.paused ? 1 : 0, d.disabled ? 1 : 0,
    ]),
  };
}

const USERS = columns(
  'ssssiiii',
  'name pool_size reserve_pool_size pool_mode max_user_connections current_connections max_user_client_connections current_client_connections',
);

function showUsers(h: ShowHost): ResultSet {
  return {
    columns: USERS,
    rows: userRecords(h).map((u) => [
      // PgBouncer prints these two as text, empty when the user does not set them.
      u.name, u.poolSize === null ? '' : String(u.poolSize), u.reservePoolSize === null ? '' : String(u.reservePoolSize),
      u.poolMode, u.maxUserConnections, u.currentConnections, u.maxUserClientConnections, u.currentClientConnections,
    ]),
  };
}

const PEERS = columns('isii', 'peer_id host port pool_size');
const PEER_POOLS = columns('iiiii', 'peer_id cl_active_cancel_req cl_waiting_cancel_req sv_active_cancel sv_login');

function showPeers(h: ShowHost): ResultSet {
  const peers = [...h.cfg.peers.values()].sort((a, b) => a.id - b.id);
  return { columns: PEERS, rows: peers.map((p) => [p.id, p.host, p.port, p.poolSize ?? h.cfg.defaultPoolSize]) };
}

/** One row per peer a cancel request was forwarded to (PgBouncer creates them on first use). */
function showPeerPools(h: ShowHost): ResultSet {
  const pools = [...h.peers.pools.values()].sort((a, b) => a.id - b.id);
  return { columns: PEER_POOLS, rows: pools.map((p) => [p.id, p.active.size, p.waitingCount, p.active.size, p.login.size]) };
}

const empty = (types: string, names: string): (() => ResultSet) => {
  const cols = columns(types, names);
  return () => ({ columns: cols, rows: [] });
};

const LISTS = columns('si', 'list items');
const DNS_HOSTS = columns('sqs', 'hostname ttl addrs');
const CONFIG = columns('ssss', 'key value default changeable');
const STATE = columns('ss', 'key value');
const VERSION = columns('s', 'version');

/** SHOW <name> → its result set; HELP and FDS are the console's (a notice, a refusal). */
export const SHOW: Readonly<Record<string, (h: ShowHost, period: StatsPeriod) => ResultSet>> = {
  active_sockets: (h) => showSockets(h, true),
  clients: showClients,
  config: (h) => ({
    columns: CONFIG,
    rows: settingRows(h.cfg).map((r) => [r.key, r.value, r.default, r.changeable ? 'yes' : 'no']),
  }),
  databases: showDatabases,
  dns_hosts: () => ({ columns: DNS_HOSTS, rows: dnsHosts().map((d) => [d.hostname, d.ttl, d.addrs.join(',')]) }),
  dns_zones: empty('sqi', 'zonename serial count'),
  lists: (h) => ({ columns: LISTS, rows: listRecords(h) }),
  // PgBouncer reports its slab caches; Node's heap has no such breakdown, so the set is empty.
  mem: empty('siiii', 'name size used free memtotal'),
  peer_pools: showPeerPools,
  peers: showPeers,
  pools: showPools,
  servers: showServers,
  sockets: (h) => showSockets(h, false),
  state: (h) => {
    const r = h.registry;
    const yes = (b: boolean): string => (b ? 'yes' : 'no');
    return {
      columns: STATE,
      rows: [
        ['active', yes(!r.pausedAll && !r.suspended)],
        ['paused', yes(r.pausedAll)],
        ['suspended', yes(r.suspended)],
      ],
    };
  },
  stats: showStats,
  stats_averages: showStatsAverages,
  stats_totals: showStatsTotals,
  totals: showTotals,
  users: showUsers,
  version: (h) => ({ columns: VERSION, rows: [[`pgpool-ts ${h.version}`]] }),
};

/** Settings some drivers SHOW (or SET) on connect; fixed values, as PgBouncer answers them. */
export const FAKE_PARAMS: ReadonlyMap<string, string> = new Map([
  ['client_encoding', 'UTF-8'],
  ['default_transaction_isolation', 'read committed'],
  ['standard_conforming_strings', 'on'],
  ['datestyle', 'ISO'],
  ['timezone', 'GMT'],
  ['extra_float_digits', '2'],
]);

export const HELP_TEXT = [
  '',
  '\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION',
  '\tSHOW PEERS|PEER_POOLS',
  '\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE',
  '\tSHOW DNS_HOSTS|DNS_ZONES',
  '\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS',
  '\tSET key = arg',
  '\tRELOAD',
  '\tPAUSE [<db>]',
  '\tRESUME [<db>]',
  '\tDISABLE <db>',
  '\tENABLE <db>',
  '\tRECONNECT [<db>]',
  '\tKILL [<db>]',
  '\tKILL_CLIENT <client_id>',
  '\tSUSPEND',
  '\tSHUTDOWN',
  '\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS',
  '\tWAIT_CLOSE [<db>]',
].join('\n');
