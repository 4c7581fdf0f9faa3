// The composition root: listeners, clients, the pool registry and the janitor; start, reload and
// shutdown. Nothing imports it but main.ts.
import net from 'node:net';
import path from 'node:path';
import { sync, useMonotonic } from './clock.js';
import { Console, type AdminHost } from './admin/console.js';
import { CancelKeys, cancelKey, routeCancel, type KeyOrigin } from './client/cancel-keys.js';
import { ClientConn, type ClientHost } from './client/client-conn.js';
import { loadAuthRules, type AuthRules } from './client/hba.js';
import { ConfigError, formatProblem, loadConfig, settingsWithoutEffect } from './config/load.js';
import type { Config } from './config/types.js';
import type { ConsoleOutcome } from './admin/console.js';
import { workerSocketDir, type WorkerHost, type WorkerLink } from './cluster/worker-link.js';
import { Errors, type PoolerError } from './errors.js';
import { log, setVerbose, type Logger } from './log.js';
import { metricsOf, startMetrics, type MetricsServer, type WorkerSeries } from './metrics/prometheus.js';
import { reloads } from './metrics/stats.js';
import { probeHandles } from './net/io.js';
import { listenerProblem, openListeners, type Listeners } from './net/listener.js';
import { tcpSettingsWithoutEffect } from './net/tcp.js';
import { configureSyslog } from './net/syslog.js';
import { monotonicMs, trimHeap } from './net/native.js';
import { HandshakeGate, buildTlsContexts, type TlsContexts } from './net/tls.js';
import { encodeCancelRequest } from './protocol/startup.js';
import { PeerPool, Peers } from './pool/peer-pool.js';
import { zeroStats, type Pool } from './pool/pool.js';
import { Registry, type AuthLookup } from './pool/registry.js';
import type { CancelRequest } from './pool/types.js';
import { TxStatus } from './protocol/codes.js';

export const VERSION = '0.1.0';

export type ReloadResult = { ok: true; notice?: string } | { ok: false; error: string };

/** How often the janitor sweeps (PgBouncer: 1/3 s). */
const JANITOR_MS = 333;

export type ShutdownMode = 'immediate' | 'wait_for_servers' | 'wait_for_clients';

/** Client TLS handshakes in progress at once (see HandshakeGate). The bench's storm scenarios
 * measured this value against no bound (docs/benchmarks.md, runs 1 and 2); other values were not
 * compared. */
const MAX_CONCURRENT_HANDSHAKES = 32;
/** maybeTrimHeap: after this many closed client connections, at most this often. */
const TRIM_AFTER_CLOSED = 1000;
const TRIM_INTERVAL_MS = 10_000;

export class App implements ClientHost, AdminHost, WorkerHost {
  readonly version = VERSION;
  readonly console: Console;
  readonly registry: Registry;
  /** Every client connection, logging in or logged in. */
  readonly clients = new Set<ClientConn>();
  readonly consoleStats = zeroStats();
  private readonly cancelKeys = new CancelKeys<ClientConn>();
  /** Cancel requests forwarded to [peers]. */
  readonly peers = new Peers(() => this.cfg);
  private listeners: Listeners | null = null;
  private janitor: NodeJS.Timeout | null = null;
  private shuttingDown: ShutdownMode | null = null;
  private exitResolve: (() => void) | null = null;
  readonly exited: Promise<void>;
  /** The Prometheus endpoint, when metrics_port is set (opened at start, closed last). */
  private metrics: MetricsServer | null = null;

  tls: TlsContexts;
  auth: AuthRules;
  readonly handshakes = new HandshakeGate(MAX_CONCURRENT_HANDSHAKES);

  /** Cancel requests forwarded to the other workers of the instance, by worker index. */
  private readonly siblings = new Map<number, PeerPool>();

  /**
   * Throws when a TLS, hba or ident file is unusable (startup must fail with the reason). `link`:
   * this process is a worker of a multi-worker instance (cluster/), whose main process counts the
   * limits, answers the console for the whole instance and serves the metrics.
   */
  constructor(
    public cfg: Config,
    private readonly link: WorkerLink | null = null,
  ) {
    const problem = listenerProblem(cfg);
    if (problem !== null) throw new ConfigError([{ file: cfg.configFile ?? '<environment>', line: 0, ...problem }]);
    this.auth = authRules(cfg);
    this.tls = buildTlsContexts(cfg, certAuthPossible(cfg, this.auth));
    this.registry = new Registry(cfg, this.tls);
    this.registry.slots = link;
    this.console = new Console(this);
    this.exited = new Promise((r) => (this.exitResolve = r));
  }

  /** The instance this process is a worker of, for the console; null when it serves alone. */
  get instance(): WorkerLink | null {
    return this.link;
  }

  async start(): Promise<void> {
    const link = this.link;
    // A worker shares the TCP port with its siblings; its unix socket is its own (where they
    // forward cancels), the instance's being the main process's.
    const role = link === null ? null : { tcp: true, reusePort: true, unixDir: link.socketDir, ownPeer: false, pauseOnConnect: false };
    // The relay's clock without an allocation per read, when the addon is there (clock.ts).
    const monotonic = monotonicMs();
    if (monotonic !== null) useMonotonic(monotonic);
    // Before the first client: the hot path runs on Node's stream handles only if they behave.
    const noHandles = await probeHandles(process.env.PGPOOL_RELAY === 'streams');
    this.listeners = await openListeners(this.cfg, this.onConnection, role);
    this.janitor = setInterval(this.sweep, JANITOR_MS);
    // One line per socket, as PgBouncer: `listening on 127.0.0.1:6432`, `listening on unix:/tmp/.s.PGSQL.6432`.
    for (const a of this.listeners.addresses) log().info(`listening on ${a}`);
    if (noHandles === null) log().debug('relay: on stream handles');
    else log().warn({ reason: noHandles }, `relay: on the stream API (slower): ${noHandles}`);
    this.warnWithoutEffect(this.cfg);
    if (link !== null) {
      link.attach(this, () => void this.stop('immediate'));
      link.ready();
    } else if (this.cfg.metricsPort > 0) {
      this.metrics = await startMetrics(this);
      log().info(`metrics on http://${this.cfg.metricsListenAddr}:${this.metrics.port}/metrics`);
    }
  }

  // ---------------------------------------------------------------- WorkerHost

  runConsole(sql: string, admin: boolean): ConsoleOutcome | Promise<ConsoleOutcome> {
    return this.console.run(null, sql, admin);
  }

  closeIdleFor(by: 'pool' | 'db' | 'user', name: string, minIdleMs: number): boolean {
    return this.registry.closeIdleFor(by, name, minIdleMs);
  }

  private ownMetrics: ReturnType<typeof metricsOf> | null = null;

  async workerMetrics(): Promise<{ series: WorkerSeries; health: string | null }> {
    const m = (this.ownMetrics ??= metricsOf(this));
    return { series: await m.series(), health: await m.source.health() };
  }

  acceptUnix(socket: net.Socket): void {
    this.onConnection(socket, true, true);
    socket.resume();
  }

  /** Settings of the config pgpool-ts cannot act on, already named in the log. */
  private warned = new Set<string>();

  /** Name each setting that asks for something pgpool-ts cannot do, once (at start, and on a
   * reload that brings a new one). */
  private warnWithoutEffect(cfg: Config): void {
    const current = new Set([...settingsWithoutEffect(cfg), ...tcpSettingsWithoutEffect(cfg)]);
    for (const w of current) if (!this.warned.has(w)) log().warn(w);
    this.warned = current;
  }

  /** A shutdown is under way (for the console's RESUME and /healthz). */
  get stopping(): boolean {
    return this.shuttingDown !== null;
  }

  private readonly onConnection = (socket: net.Socket, isUnix: boolean, keep: boolean): void => {
    // While draining, the listeners kept open take cancel requests, and on the unix socket console
    // logins (the client refuses the rest).
    if (this.shuttingDown !== null && !keep) {
      socket.destroy();
      return;
    }
    this.clients.add(new ClientConn(socket, this, isUnix));
  };

  // ---------------------------------------------------------------- ClientHost

  poolFor(dbName: string, user: string, keys: { clientKey: Buffer; serverKey: Buffer } | null): Pool | PoolerError {
    return this.registry.poolFor(dbName, user, keys);
  }

  secretFor(dbName: string, user: string, clientLog: Logger): string | null | AuthLookup | PoolerError {
    const entry = this.cfg.authEntries.get(user);
    if (entry !== undefined) return entry.secret;
    return this.registry.authLookup(dbName, user, clientLog);
  }

  admit(client: ClientConn): PoolerError | null | Promise<PoolerError | null> {
    // The client asking is already in the set; the console is exempt from max_client_conn.
    if (this.link === null && !client.admin && this.clients.size > this.cfg.maxClientConn) return Errors.tooManyClients();
    client.counted = true;
    const local = this.registry.countClient(client.dbName, client.user, client.admin);
    if (this.link === null || client.admin) return local;
    // A worker: the main process counts the whole instance; these counts are for SHOW only.
    const admin = this.cfg.adminUsers.includes(client.user);
    return this.link
      .admit({
        db: client.dbName,
        user: client.user,
        maxClients: this.cfg.maxClientConn,
        maxDb: admin ? 0 : this.registry.maxDbClients(client.dbName, false),
        maxUser: admin ? 0 : this.registry.maxUserClients(client.user),
      })
      .then((refusal) => {
        if (refusal === null) {
          // The client may have gone while the instance answered.
          if (client.phase === 'closed') this.link?.leave(client.dbName, client.user);
          else this.admittedByInstance.add(client);
          return null;
        }
        return refusal === 'max_client_conn' ? Errors.tooManyClients() : Errors.clientLimit(refusal);
      });
  }

  /** Clients the instance admitted (workers): each is let go once it closes. */
  private readonly admittedByInstance = new Set<ClientConn>();

  /** Where this process is in the cancel key layout. */
  private get keyOrigin(): KeyOrigin {
    return { peerId: this.cfg.peerId, worker: this.link?.index ?? 0 };
  }

  /** A cancel for a client of another worker: to that worker's own unix socket. */
  private forwardToWorker(worker: number, key: Buffer, request: CancelRequest): void {
    const link = this.link;
    if (link === null || worker < 1 || worker > link.count) return request.done('cancel request names no worker of this instance');
    let pool = this.siblings.get(worker);
    if (pool === undefined) {
      const address = { unix: path.join(workerSocketDir(link.dir, worker), `.s.PGSQL.${this.cfg.listenPort}`) };
      pool = new PeerPool(worker, address, this.cfg.defaultPoolSize, () => this.cfg);
      this.siblings.set(worker, pool);
    }
    pool.forward(encodeCancelRequest(key.readInt32BE(0), key.subarray(4)), request);
  }

  mintCancelKey(secretLength: number, client: ClientConn): Buffer {
    return this.cancelKeys.mint(secretLength, this.keyOrigin, client);
  }

  /** PgBouncer's accept_cancel_request: each way a cancel ends closes its request with PgBouncer's
   * reason (the client itself is told nothing, as PostgreSQL tells it nothing). */
  cancel(pid: number, secret: Buffer, request: CancelRequest): void {
    const route = routeCancel(cancelKey(pid, secret), this.keyOrigin);
    if (route.to === 'drop') return request.done(route.reason);
    if (route.to === 'peer') {
      const packet = encodeCancelRequest(route.key.readInt32BE(0), route.key.subarray(4));
      if (!this.peers.forward(route.peerId, packet, request)) request.done('could not find peer to forward request to');
      return;
    }
    if (route.to === 'worker') return this.forwardToWorker(route.worker, route.key, request);
    const client = this.cancelKeys.get(route.key);
    if (client === undefined) return request.done('failed cancel request');
    if (client.admin) return request.done('cancel request for console client');
    // Only a query running for this client now: a server it no longer holds serves someone else.
    const server = client.server;
    if (server === null) return request.done('cancel request for idle client');
    server.sendCancel(request);
  }

  onClientClosed(client: ClientConn): void {
    this.clients.delete(client);
    if (client.counted) this.registry.uncountClient(client.dbName, client.user);
    if (this.admittedByInstance.delete(client)) this.link?.leave(client.dbName, client.user);
    this.closedSinceTrim++;
    if (client.cancelKey !== null) this.cancelKeys.delete(client.cancelKey);
    if (this.shuttingDown === 'wait_for_clients' && this.applicationClients() === 0) this.clientsDropped();
  }

  private clientsDropped(): void {
    log().info('client connections dropped, exiting');
    void this.finish();
  }

  /**
   * Clients a WAIT_FOR_CLIENTS shutdown waits for: every open one but the console's. PgBouncer
   * counts console sessions too, so a monitoring tool that keeps one open holds the exit until
   * the grace period's SIGKILL; here they are closed when the last application client leaves.
   */
  private applicationClients(): number {
    let n = 0;
    for (const c of this.clients) if (c.phase !== 'closed' && !c.admin) n++;
    return n;
  }

  // ---------------------------------------------------------------- janitor

  private readonly sweep = (): void => {
    const t = sync();
    const cfg = this.cfg;
    for (const c of this.clients) {
      if (c.phase === 'cancel') {
        // 0 is taken as 10 s (docs/configuration.md): a forward must not hang on for good.
        if (t - c.cancelSince >= (cfg.cancelWaitTimeout || 10) * 1000) c.close('cancel_wait_timeout', false);
        continue;
      }
      if (c.phase === 'startup' || c.phase === 'auth' || c.phase === 'welcome') {
        if (cfg.clientLoginTimeout > 0 && t - c.connectTime >= cfg.clientLoginTimeout * 1000) c.fail(Errors.loginTimeout(c.pool?.waitDetail()), 'timeout');
        continue;
      }
      if (c.phase !== 'ready') continue;
      const s = c.server;
      const user = cfg.users.get(c.user);
      if (s === null) {
        const idle = user?.clientIdleTimeout ?? cfg.clientIdleTimeout;
        if (idle > 0 && !c.pool?.clWaiting.has(c) && t - c.lastActivity >= idle * 1000) c.fail(Errors.clientIdleTimeout());
        continue;
      }
      // A replication stream is one request that may never end: no query or transaction timeout.
      if (c.replication !== null) continue;
      // Stalled in the middle of a message, the client holds its server while idle: as idle as a
      // client without one (a slowloris would otherwise pin every server of the pool).
      const idle = user?.clientIdleTimeout ?? cfg.clientIdleTimeout;
      if (idle > 0 && !c.atMessageBoundary && t - c.lastActivity >= idle * 1000) {
        c.fail(Errors.clientIdleTimeout());
        continue;
      }
      const qt = user?.queryTimeout ?? cfg.queryTimeout;
      if (qt > 0 && s.owed > 0 && t - s.requestTime >= qt * 1000) {
        s.close('query timeout');
        c.fail(Errors.queryTimeout());
        continue;
      }
      const it = user?.idleTransactionTimeout ?? cfg.idleTransactionTimeout;
      if (it > 0 && s.owed === 0 && s.txStatus !== TxStatus.Idle && t - s.readyTime >= it * 1000) {
        s.close('idle transaction timeout');
        c.fail(Errors.idleTransactionTimeout());
        continue;
      }
      // A statement outside a transaction block counts as a transaction of its own, as in PgBouncer.
      const tt = user?.transactionTimeout ?? cfg.transactionTimeout;
      if (tt > 0 && c.pool !== null && (s.owed > 0 || s.txStatus !== TxStatus.Idle) && t - c.pool.transactionStart(s) >= tt * 1000) {
        s.close('transaction timeout');
        c.fail(Errors.transactionTimeout());
      }
    }
    this.registry.sweep();
    this.peers.sweep();
    for (const s of this.siblings.values()) s.sweep();
    this.maybeTrimHeap(t);
  };

  /** Connections closed since the last heap trim. */
  private closedSinceTrim = 0;
  private lastTrim = 0;

  /**
   * After many closed connections, give their memory back to the system (see trimHeap): without
   * it a pooler that once held 10 000 TLS clients keeps ~700 MB of RSS for good. At most every
   * TRIM_INTERVAL_MS: a trim walks the whole heap (milliseconds on a large one).
   */
  private maybeTrimHeap(t: number): void {
    if (this.closedSinceTrim < TRIM_AFTER_CLOSED || t - this.lastTrim < TRIM_INTERVAL_MS) return;
    this.closedSinceTrim = 0;
    this.lastTrim = t;
    const started = performance.now();
    const released = trimHeap();
    log().debug({ released, ms: Math.round(performance.now() - started) }, 'heap trimmed after closed connections');
  }

  // ---------------------------------------------------------------- reload and shutdown

  /**
   * Re-read the config file; a bad file changes nothing and the problems are returned.
   * `overrides` are the admin console's SET values, applied over the file. SET gives TLS
   * settings one at a time, as PgBouncer allows (a key, then its certificate): with
   * `tlsOneAtATime`, TLS settings that do not work yet are taken and the TLS contexts in use are
   * kept until they do, which `notice` then says.
   */
  reload(overrides?: ReadonlyMap<string, string>, opts: { tlsOneAtATime?: boolean } = {}): ReloadResult {
    if (this.cfg.configFile === null) return { ok: false, error: 'configuration came from the environment; nothing to reload' };
    try {
      const cfg = loadConfig(this.cfg.configFile, overrides, { deferTls: opts.tlsOneAtATime });
      // Everything is built and validated before anything is swapped.
      const auth = authRules(cfg);
      let tls = this.tls;
      let notice: string | undefined;
      try {
        tls = buildTlsContexts(cfg, certAuthPossible(cfg, auth));
      } catch (err) {
        if (opts.tlsOneAtATime !== true) throw err;
        notice = `TLS settings could not be applied, still using old configuration: ${(err as Error).message}`;
        log().warn(notice);
      }
      this.cfg = cfg;
      this.auth = auth;
      this.tls = tls;
      this.registry.reload(cfg, tls);
      this.peers.reload();
      this.listeners?.retune(cfg);
      for (const c of this.clients) c.onReload();
      setVerbose(cfg.verbose);
      this.warnWithoutEffect(cfg);
      const noSyslog = configureSyslog(cfg);
      if (noSyslog !== null) log().warn(noSyslog);
      log().info('configuration reloaded');
      reloads.ok++;
      return notice === undefined ? { ok: true } : { ok: true, notice };
    } catch (err) {
      reloads.failed++;
      const msg = (err as Error).message;
      log().error({ reason: msg }, `reload failed, keeping old configuration: ${msg}`);
      return { ok: false, error: msg };
    }
  }

  /** The console's SHUTDOWN: this process, or every worker of the instance (through its main
   * process, as the matching signal would). */
  async shutdown(mode: ShutdownMode): Promise<void> {
    if (this.link !== null) return this.link.shutdown(mode);
    return this.stop(mode);
  }

  /** Stop this process: SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS], or a signal. */
  async stop(mode: ShutdownMode): Promise<void> {
    if (this.shuttingDown !== null && mode !== 'immediate') mode = 'immediate';
    // Suspended clients cannot finish, so a drain would never end (and RESUME is refused during a
    // shutdown): go down at once, as PgBouncer does ("suspend was in progress"), though with 0.
    if (this.registry.suspended && mode !== 'immediate') {
      log().info('suspend was in progress, going down immediately');
      mode = 'immediate';
    }
    // Stop taking new clients before saying so: whoever reads the line may rely on it at once. The
    // unix socket stays open until the exit, for the console (an operator can watch and steer the
    // drain: SHOW, a final SHUTDOWN) and, like the pooler's own [peers] address, for the cancel
    // requests peers forward to queries still running here. Before the mode is set: connections
    // accepted but not yet handed on (the accept thread's queue) arrive now, before the drain, and
    // are served.
    this.listeners?.drain();
    this.shuttingDown = mode;
    log().info({ mode }, `shutting down (${mode})`);
    if (mode === 'immediate') return this.finish();
    if (mode === 'wait_for_clients') {
      if (this.applicationClients() === 0) this.clientsDropped();
      return;
    }
    // wait_for_servers: no pool hands out a server again; at each tick the clients waiting for one
    // are dropped ("server shutting down", as PgBouncer's janitor), and the process exits once no
    // server is linked. An idle client stays until then, or until it asks for a server.
    this.registry.draining = true;
    const check = setInterval(() => {
      for (const p of this.registry.pools.values()) for (const c of [...p.clWaiting]) c.fail(Errors.serverShuttingDown());
      let linked = 0;
      for (const c of this.clients) if (c.server !== null) linked++;
      if (linked === 0) {
        clearInterval(check);
        log().info('server connections dropped, exiting');
        void this.finish();
      }
    }, JANITOR_MS);
  }

  private finishing = false;

  private async finish(): Promise<void> {
    // Failing the clients below reports each close back here (onClientClosed) while it runs.
    if (this.finishing) return;
    this.finishing = true;
    if (this.janitor !== null) clearInterval(this.janitor);
    this.janitor = null;
    // Stop accepting first. close() resolves only once every accepted connection has ended, so
    // awaiting it would hang for as long as any client keeps its end open (the console session
    // that asked for the shutdown included).
    const listeners = this.listeners;
    this.listeners = null;
    void listeners?.close();
    for (const c of [...this.clients]) c.fail(Errors.shuttingDown());
    this.registry.close();
    this.peers.close();
    await this.metrics?.close();
    this.exitResolve?.();
  }
}

/** hba and ident files for a config; their problems fail startup and RELOAD like the ini's, their
 * warnings are logged (or, for --check, printed). */
export function authRules(cfg: Config, warn: (line: string) => void = (line) => log().warn(line)): AuthRules {
  const rules = loadAuthRules(cfg);
  if (rules.problems.length > 0) throw new ConfigError(rules.problems);
  for (const w of rules.warnings) warn(`warning: ${formatProblem(w)}`);
  return rules;
}

/** A client certificate is asked for only when some login could use it. */
function certAuthPossible(cfg: Config, auth: AuthRules): boolean {
  return cfg.authType === 'cert' || (auth.hba ?? []).some((r) => r.method === 'cert');
}
