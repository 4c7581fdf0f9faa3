// Handling of client connections: one ClientConn owns one client socket and its state machine.
//
// Life: startup (SSLRequest/GSSENCRequest/CancelRequest/StartupMessage) → auth → welcome (once the
// pool knows its server's parameters) → ready (the hot path) → closed. In `ready` the socket's
// reads go to relay/relay.ts (ClientRelay) through an Io (net/io.ts); the console's clients stay
// here. The state the relay acts on lives here: the linked server, the open pipeline, the named
// statements, the variable cache.
import type net from 'node:net';
import { now, refresh } from '../clock.js';
import { nextConnectionId } from '../ids.js';
import { ADMIN_DB, type AuthType, type Config } from '../config/types.js';
import { Errors, PoolerError } from '../errors.js';
import { closingBecause, connLogger, flushLog, sockAddr, type Logger } from '../log.js';
import { Frontend, SqlState } from '../protocol/codes.js';
import * as encode from '../protocol/encode.js';
import { FRAMER_STOPPED, Framer } from '../protocol/framer.js';
import { decodeStartupPacket, parseStartupOptions } from '../protocol/startup.js';
import { Io } from '../net/io.js';
import { ClientRelay } from '../relay/relay.js';
import type { Pool } from '../pool/pool.js';
import type { AuthLookup } from '../pool/registry.js';
import type { CancelRequest, PoolClient, ReplicationRequest } from '../pool/types.js';
import type { QueryResult, ServerConn } from '../server/server-conn.js';
import { acceptClientTls, type ClientTlsContext, type HandshakeGate, type PeerCert, type TlsContexts, type TlsInfo } from '../net/tls.js';
import { tuneSocket } from '../net/tcp.js';
import { isOwnUid, osUserName, peerCredAvailable, peerCredentials, peerPid } from '../net/peercred.js';
import { loginStats, type LoginRefusal } from '../metrics/stats.js';
import { authFlow, type AuthFlow, type AuthResult } from './auth.js';
import { identAllows, matchHba, noMatchMessage, type AuthRules } from './hba.js';
import { ClientStatements } from './prepared.js';
import { canonicalName, isTracked, setStatement, signature } from './varcache.js';

/** `cancel`: the connection sent a CancelRequest, which is being forwarded (it is closed when done). */
export type ClientPhase = 'startup' | 'auth' | 'welcome' | 'ready' | 'cancel' | 'closed';

/** What a client needs from the pooler around it. */
export interface ClientHost {
  readonly cfg: Config;
  /** The TLS contexts of the current config generation. */
  readonly tls: TlsContexts;
  /** hba rules and ident maps of the current config generation. */
  readonly auth: AuthRules;
  /** The admin console (the virtual database `pgbouncer`). */
  readonly console: AdminConsole;
  /** Find or create the pool for a login, or say why not. */
  poolFor(dbName: string, user: string, scramKeys: { clientKey: Buffer; serverKey: Buffer } | null): Pool | PoolerError;
  /**
   * A user's secret from the auth_file ('' = known, no password), null for an unknown user, the
   * auth_query lookup to run, or why the login is refused; reasons are logged to `log`.
   */
  secretFor(dbName: string, user: string, log: Logger): string | null | AuthLookup | PoolerError;
  /**
   * Admit the client under max_client_conn (console logins are exempt), max_db_client_connections
   * and max_user_client_connections, counted until it closes (onClientClosed): null, or the
   * limit's error. Asynchronous in a multi-worker instance, where the main process counts.
   */
  admit(client: ClientConn): PoolerError | null | Promise<PoolerError | null>;
  /** Bounds the TLS handshakes in progress at once. */
  readonly handshakes: HandshakeGate;
  /** A shutdown is under way: clients accepted from now on may only cancel or use the console. */
  readonly stopping: boolean;
  /** Forward a CancelRequest; `request.done` closes its connection once it is over. */
  cancel(pid: number, secret: Buffer, request: CancelRequest): void;
  /** A fresh cancel key (process id then a secret of `secretLength` bytes) for the client's
   * BackendKeyData, registered to it until it closes. */
  mintCancelKey(secretLength: number, client: ClientConn): Buffer;
  onClientClosed(client: ClientConn): void;
}

/** The admin console as the client sees it: a login check and one simple query at a time. */
export interface AdminConsole {
  /** May this authenticated user use the console? An error refuses the login. */
  login(client: ClientConn): PoolerError | null;
  /** Answer one simple-protocol query; writes the whole reply including ReadyForQuery. */
  query(client: ClientConn, sql: string): void;
  /** Resolves once every query the client sent so far has been answered. */
  settled(client: ClientConn): Promise<void>;
}

export { ADMIN_DB };

/** Startup parameters the pooler understands; anything else needs ignore_startup_parameters. */
const KNOWN_STARTUP = new Set(['user', 'database', 'replication']);

export class ClientConn implements PoolClient {
  readonly id = nextConnectionId();
  phase: ClientPhase = 'startup';
  log: Logger;
  user = '';
  dbName = '';
  pool: Pool | null = null;
  server: ServerConn | null = null;
  waitStart = 0;
  waitNotified = false;
  readonly connectTime = now;
  /** High-resolution accept time, for the login duration histogram (the cached clock is too
   * coarse for logins that take a millisecond). */
  private readonly acceptedAt = performance.now();
  /** Last time the client sent anything (client_idle_timeout). */
  lastActivity = now;
  /** The parameter values this client's session should have (variable cache); changed only by
   * setParameter, which drops their signature. */
  private readonly vars = new Map<string, string>();
  get params(): ReadonlyMap<string, string> {
    return this.vars;
  }
  /** signature(vars) (client/varcache.ts), made at the first link after a change. */
  private varsSig: string | null = null;

  private setParameter(name: string, value: string): void {
    this.vars.set(name, value);
    this.varsSig = null;
  }
  /** The pooler-minted cancel key the client was given (process id, then the secret). */
  cancelKey: Buffer | null = null;
  authMethod = '';
  /** The protocol minor version agreed with the client (0 or 2). */
  protocolMinor = 0;
  closing = false;
  inExtendedQuery = false;
  /** Counted in its database's and user's client counts (from the startup packet to the close). */
  counted = false;
  /** Accepted while the pooler drains (on a listener kept open for cancels and the console):
   * only those may log in. A client accepted before the drain began logs in as any other, so a
   * rolling restart loses none that connected just before it. */
  private readonly arrivedDraining: boolean;
  /** A replication connection (`replication=database` or true): a server of its own. */
  replication: ReplicationRequest | null = null;

  /** Links of the pool list it is in (cl_active, cl_waiting): pool/list.ts. */
  prevInList: unknown = null;
  nextInList: unknown = null;
  inList: unknown = null;

  readonly framer: Framer;
  /** The socket's hot-path I/O, and what reads it, from `ready` on (not for the console). */
  io: Io | null = null;
  private relay: ClientRelay | null = null;
  private flow: AuthFlow | null = null;
  /** Chunks read before `ready` (the socket is paused, so at most a few). */
  private queued: Buffer[] = [];

  /** Set once a TLS handshake completed (after SSLRequest or direct). */
  tls: TlsInfo | null = null;
  peer: PeerCert | null = null;
  /** The remote address and port, kept from the plain socket (a TLS socket wraps it). */
  readonly remoteAddress: string;
  readonly remotePort: number;

  constructor(
    public socket: net.Socket,
    private readonly host: ClientHost,
    readonly isUnix: boolean,
  ) {
    this.arrivedDraining = host.stopping;
    this.remoteAddress = isUnix ? '' : (socket.remoteAddress ?? '');
    this.remotePort = isUnix ? 0 : (socket.remotePort ?? 0);
    this.logAddr = isUnix ? unixLogAddr(socket, host.cfg.listenPort) : sockAddr(this.remoteAddress, this.remotePort);
    this.log = connLogger({ id: this.label, addr: this.logAddr });
    this.framer = new Framer(STARTUP_TYPES, Math.min(host.cfg.maxPacketSize, MAX_STARTUP), true);
    if (!isUnix) {
      socket.setNoDelay(true);
      tuneSocket(socket, host.cfg);
    }
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private detach(socket: net.Socket): void {
    socket.removeListener('data', this.onData);
    socket.removeListener('error', this.onError);
    socket.removeListener('close', this.onClose);
  }

  /** PgBouncer's log prefix shape (`C-0x…`), and SHOW CLIENTS `ptr`. */
  get label(): string {
    return `C-0x${this.id.toString(16)}`;
  }

  /** The address in the log prefix: `host:port`, or `unix(pid):port` for the unix socket. */
  private readonly logAddr: string;

  get atMessageBoundary(): boolean {
    return this.framer.atBoundary;
  }

  get addr(): string {
    return this.isUnix ? 'unix' : this.remoteAddress;
  }

  private readonly onError = (err: Error): void => {
    this.log.debug({ err: err.message }, 'client socket error');
  };

  private readonly onClose = (): void => {
    // Gone before sending a whole startup packet: a health check or a port probe, not worth a
    // line (PgBouncer logs nothing either). Any other close without Terminate is unexpected.
    this.close(this.phase === 'startup' && this.framer.atBoundary ? null : 'client unexpected eof', false);
  };

  private readonly onData = (chunk: Buffer): void => {
    refresh();
    this.lastActivity = now;
    if (this.phase === 'ready') return this.onReadyData(chunk);
    // Bytes after a CancelRequest (some drivers send them) mean nothing: PgBouncer ignores them too.
    if (this.phase === 'cancel') return;
    if (this.leaveHandshakeQueue !== null) return this.fail(Errors.protocolViolation(UNENCRYPTED_AFTER_SSL_REQUEST));
    if (this.phase === 'welcome') {
      // Logged in, waiting for the pool's parameters: keep what the client pipelined, and read no
      // more until then (a client could otherwise make the pooler buffer without limit).
      this.queued.push(chunk);
      this.socket.pause();
      return;
    }
    // Direct TLS (PostgreSQL 17): a TLS record where a length should be.
    if (this.phase === 'startup' && this.tls === null && this.framer.atBoundary && chunk[0] === TLS_HANDSHAKE) {
      return this.directTls(chunk);
    }
    this.chunkEnd = chunk.length;
    const stop = this.framer.feed(chunk, 0, this.onLoginMessage);
    if (stop === FRAMER_STOPPED) return this.fail(Errors.protocolViolation(this.framer.error ?? 'bad packet'));
    // The framer stops as soon as login ends; the client may have pipelined a query after it.
    if (stop < chunk.length && this.loggedIn) this.onData(chunk.subarray(stop));
  };

  /** Past authentication (read fresh: callbacks change the phase during a scan). */
  private get loggedIn(): boolean {
    return this.phase === 'welcome' || this.phase === 'ready';
  }

  private get inLogin(): boolean {
    return this.phase === 'startup' || this.phase === 'auth';
  }

  // ---------------------------------------------------------------- login

  private readonly onLoginMessage = (type: number, body: Buffer, end: number): boolean => {
    if (type === 0) {
      this.onStartupPacket(body, end);
      return this.inLogin && !this.upgrading;
    }
    if (this.phase === 'auth' && type === Frontend.Password && this.flow !== null) {
      this.onAuthResult(this.flow.onPassword(body));
      return this.inLogin;
    }
    if (type === Frontend.Terminate) {
      this.close('client close request', false);
      return false;
    }
    this.fail(Errors.protocolViolation(`unexpected message type '${String.fromCharCode(type)}' during login`));
    return false;
  };

  private onStartupPacket(body: Buffer, end: number): void {
    if (this.phase !== 'startup') return this.fail(Errors.protocolViolation('unexpected startup packet'));
    const p = decodeStartupPacket(body, NEWEST_MINOR);
    switch (p.kind) {
      case 'ssl': {
        // A second SSLRequest inside TLS is an attack or a broken client: PostgreSQL closes.
        if (this.tls !== null) return this.close('SSL req inside SSL', false);
        const ctx = this.isUnix ? null : this.host.tls.client;
        if (ctx === null) {
          this.socket.write(NO);
          this.framer.startup = true;
          return;
        }
        // Anything after the SSLRequest was sent in clear before the handshake (CVE-2021-3935).
        if (end < this.chunkEnd) return this.fail(Errors.protocolViolation(UNENCRYPTED_AFTER_SSL_REQUEST));
        // The 'S' waits for a handshake slot: the client sends nothing until it has it.
        this.leaveHandshakeQueue = this.host.handshakes.enter(() => {
          this.leaveHandshakeQueue = null;
          this.socket.write(YES);
          this.upgrade(ctx, null);
        });
        return;
      }
      case 'gssenc':
        this.socket.write(NO);
        this.framer.startup = true;
        return;
      case 'cancel':
        return this.requestCancel(p.pid, p.secret);
      case 'invalid':
        return this.fail(Errors.protocolViolation(p.reason));
      case 'startup':
        return this.startup(p.minor, p.params);
    }
  }

  /** Set while this connection's CancelRequest is forwarded (phase `cancel`). */
  private cancelRequest: CancelRequest | null = null;
  /** When the CancelRequest arrived (cancel_wait_timeout, applied by the janitor). */
  cancelSince = 0;

  private requestCancel(pid: number, secret: Buffer): void {
    this.phase = 'cancel';
    this.cancelSince = now;
    this.socket.pause();
    const request: CancelRequest = { done: (reason) => this.close(reason, false), abort: null };
    this.cancelRequest = request;
    this.host.cancel(pid, secret, request);
  }

  private startup(minor: number, params: Map<string, string>): void {
    const cfg = this.host.cfg;
    const user = params.get('user');
    if (user === undefined || user === '') {
      return this.fail(Errors.authRejected('no PostgreSQL user name specified in startup packet'));
    }
    this.user = user;
    this.dbName = params.get('database') || user;
    const replication = params.get('replication');
    const mode = replication === undefined ? null : replicationMode(replication);
    if (mode === undefined) return this.fail(Errors.protocolViolation(`invalid value for parameter "replication": "${replication}"`));
    if (mode !== null && this.dbName === ADMIN_DB) return this.fail(Errors.featureNotSupported('replication connections to the admin console are not supported'));
    // Its options go to its own server as they are: any setting PostgreSQL takes there.
    if (mode !== null) this.replication = { mode, params: this.params, options: params.get('options') ?? null };
    this.log = connLogger({ id: this.label, db: this.dbName, user, addr: this.logAddr });
    const tlsProblem = this.tlsPolicyProblem();
    if (tlsProblem !== null) return this.fail(tlsProblem, 'tls');
    const unsupported = this.takeParameters(params);
    if (unsupported instanceof PoolerError) return this.fail(unsupported);
    if (cfg.applicationNameAddHost && !this.isUnix) {
      const app = this.params.get('application_name') ?? '';
      this.setParameter('application_name', `${app} - ${this.remoteAddress}:${this.remotePort}`);
    }
    // Console logins are exempt from max_client_conn, so an operator can always get in.
    this.admin = this.dbName === ADMIN_DB;
    if (!this.admin && this.arrivedDraining) return this.fail(Errors.shuttingDown(), 'shutdown');
    const verdict = this.host.admit(this);
    if (!(verdict instanceof Promise)) return this.admitted(verdict, minor, unsupported);
    // The instance counts (workers): hold the client's bytes until it answers.
    this.socket.pause();
    void verdict.then((v) => {
      this.socket.resume();
      this.admitted(v, minor, unsupported);
    });
  }

  /** The login goes on once the client is admitted (or ends with the limit it passed). */
  private admitted(refusal: PoolerError | null, minor: number, unsupported: string[]): void {
    if (this.phase === 'closed') return;
    if (refusal !== null) return this.fail(refusal, refusal.sqlstate === SqlState.TooManyConnections ? undefined : 'client_limit');
    const user = this.user;

    // A minor version newer than ours, or _pq_ options: offer the newest we speak and list what
    // we do not know, as PostgreSQL does; the client then goes on with that version.
    this.protocolMinor = Math.min(minor, NEWEST_MINOR);
    if (minor > NEWEST_MINOR || unsupported.length > 0) {
      this.socket.write(encode.negotiateProtocolVersion(this.protocolMinor, unsupported));
    }

    this.phase = 'auth';
    // Every other type is reported by its header and refused at once, as PostgreSQL does, rather
    // than skipped (or waited for: an SSLRequest here reads as a 2 kB message) until
    // client_login_timeout.
    this.framer.want([Frontend.Password, Frontend.Terminate], EVERY_TYPE);
    if (this.admin && this.ownUserConsole()) return;
    const chosen = this.chooseMethod();
    if (chosen === null) return;
    const { method, map } = chosen;
    if (method === 'cert') return this.certAuth(map);
    if (method === 'peer') return this.peerAuth(map);
    const found = this.host.secretFor(this.dbName, user, this.log);
    if (found instanceof PoolerError) return this.fail(found);
    if (found === null || typeof found === 'string') return this.beginAuth(method, found);
    // auth_query: the client waits in the auth pool for a server, like any client (PgBouncer's
    // CL_WAITING_LOGIN), its bytes held until the secret is known.
    this.lookup = { method, found };
    this.pool = found.pool;
    this.socket.pause();
    found.pool.requestServer(this);
  }

  /**
   * Tracked parameters of the startup packet, and those set by `-c name=value` / `--name=value` in
   * its `options`, go into the variable cache; ignore_startup_parameters drops others (listing
   * `options` drops any unknown name inside it); anything else refuses the login, as in
   * PgBouncer. Returns the `_pq_.` protocol options to decline.
   */
  private takeParameters(params: Map<string, string>): string[] | PoolerError {
    const cfg = this.host.cfg;
    const extra = cfg.trackExtraParameters;
    const ignored = new Set(cfg.ignoreStartupParameters.map((n) => n.toLowerCase()));
    const unsupported: string[] = [];
    for (const [name, value] of params) {
      if (KNOWN_STARTUP.has(name)) continue;
      if (name.startsWith('_pq_.')) {
        unsupported.push(name);
        continue;
      }
      if (name === 'options' && this.replication !== null) continue;
      if (name === 'options') {
        const pairs = parseStartupOptions(value);
        if (pairs === null) return Errors.unsupportedOptions();
        for (const [key, v] of pairs) {
          if (isTracked(key, extra)) this.setParameter(canonicalName(key), v);
          else if (!ignored.has(key.toLowerCase()) && !ignored.has('options')) return Errors.unsupportedParameterInOptions(key);
        }
        continue;
      }
      if (isTracked(name, extra)) this.setParameter(canonicalName(name), value);
      else if (!ignored.has(name.toLowerCase())) return Errors.unsupportedParameter(name);
    }
    return unsupported;
  }

  /** The auth_query this client waits for a server to run, and the method to start after it. */
  private lookup: { method: AuthType; found: AuthLookup } | null = null;

  /** The auth pool lent a server: run auth_query on it. Counted as an extended query in flight,
   * so a client leaving meanwhile has that server closed rather than reused mid-reply. */
  private runLookup(server: ServerConn): void {
    this.inExtendedQuery = true;
    void server.queryRows(this.lookup!.found.sql, [this.user]).then(this.onLookup);
  }

  /** auth_query answered (PgBouncer's handle_auth_query_response). */
  private readonly onLookup = (r: QueryResult): void => {
    const lookup = this.lookup;
    // Closed meanwhile: its server was closed with it.
    if (this.phase !== 'auth' || lookup === null) return;
    this.lookup = null;
    this.inExtendedQuery = false;
    // Done with the auth pool: its server goes back there.
    this.pool?.removeClient(this);
    this.pool = null;
    const row = r.rows[0];
    if (r.error !== null || (row !== undefined && row.length !== 2)) {
      this.log.error(r.error !== null ? `error in auth_query: ${r.error}` : `expected 2 columns from auth_query, not ${row?.length}`);
      return this.fail(Errors.bouncerConfig());
    }
    if (row === undefined) {
      lookup.found.remember(null);
      this.log.info(`no such user: ${this.user}`);
      return this.fail(Errors.noSuchUser());
    }
    // A NULL password: the user exists and has none (trust lets it in, no password matches).
    const secret = row[1] ?? '';
    lookup.found.remember(secret);
    this.socket.resume();
    this.beginAuth(lookup.method, secret);
  };

  /** The auth method for this connection: auth_type, or the first matching hba line. */
  private chooseMethod(): { method: AuthType | 'peer'; map: string | null } | null {
    const cfg = this.host.cfg;
    if (cfg.authType !== 'hba') return { method: cfg.authType, map: null };
    const conn = {
      unix: this.isUnix, tls: this.tls !== null, addr: this.remoteAddress, database: this.dbName, user: this.user,
      replication: this.replication?.mode === 'yes',
    };
    const rule = matchHba(this.host.auth.hba ?? [], conn);
    if (rule === null) {
      this.fail(Errors.authRejected(noMatchMessage(conn)), 'hba');
      return null;
    }
    if (rule.method === 'reject') {
      const host = this.isUnix ? '[local]' : this.remoteAddress;
      const enc = this.tls !== null ? 'SSL encryption' : 'no encryption';
      this.fail(
        Errors.authRejected(`pg_hba.conf rejects connection for host "${host}", user "${this.user}", database "${this.dbName}", ${enc}`),
        'hba',
      );
      return null;
    }
    return { method: rule.method === 'password' ? 'plain' : rule.method, map: rule.map };
  }

  /**
   * Certificate authentication: a verified client certificate whose subject CN is the user name
   * exactly (case-sensitive, as PostgreSQL), or maps to it through auth_ident_file.
   */
  private certAuth(map: string | null): void {
    const peer = this.peer;
    const fail = (why: string) =>
      this.fail(Errors.authRejected(`certificate authentication failed for user "${this.user}": ${why}`), 'cert');
    if (this.tls === null) return fail('the connection does not use SSL');
    // Not verified with no verdict: no certificate at all.
    if (peer === null || (!peer.verified && peer.error === null)) return fail('no client certificate was presented');
    if (!peer.verified) return fail(`client certificate not trusted: ${peer.error ?? 'unknown reason'}`);
    if (typeof peer.cn !== 'string') {
      return fail(peer.cn === null ? 'client certificate has no CN' : 'client certificate has more than one CN');
    }
    const ok = map === null ? peer.cn === this.user : identAllows(this.host.auth.ident, map, peer.cn, this.user);
    if (!ok) {
      return fail(
        map === null
          ? `client certificate CN "${peer.cn}" does not match user "${this.user}"`
          : `client certificate CN "${peer.cn}" is not mapped to user "${this.user}" by map "${map}"`,
      );
    }
    this.authMethod = 'cert';
    this.onAuthResult({ ok: true, scramKeys: null });
  }

  /**
   * Peer authentication (hba `peer`, local lines only): the OS user of the process at the other
   * end of the unix socket is the user name exactly, or maps to it through auth_ident_file.
   */
  private peerAuth(map: string | null): void {
    const fail = (why: string) => this.fail(Errors.authRejected(`peer authentication failed for user "${this.user}": ${why}`), 'peer');
    const r = peerCredentials(this.socket);
    if ('error' in r) return fail(r.error);
    const osUser = osUserName(r.cred.uid);
    if (osUser === null) return fail(`could not look up local user ID ${r.cred.uid}`);
    const ok = map === null ? osUser === this.user : identAllows(this.host.auth.ident, map, osUser, this.user);
    if (!ok) {
      return fail(
        map === null
          ? `OS user "${osUser}" does not match user "${this.user}"`
          : `OS user "${osUser}" is not mapped to user "${this.user}" by map "${map}"`,
      );
    }
    this.authMethod = 'peer';
    this.onAuthResult({ ok: true, scramKeys: null });
  }

  /** Logged in by the pooler's own OS user (PgBouncer's own_user): admin rights on the console. */
  ownUser = false;

  /**
   * PgBouncer's console rule: user `pgbouncer` over the unix socket from a process running as the
   * pooler's own OS user logs in with no password and admin rights, before auth_type or hba are
   * consulted. Any other peer goes through the usual authentication. Returns true when it
   * settled the login (in or refused).
   */
  private ownUserConsole(): boolean {
    if (!this.isUnix || this.user !== OWN_CONSOLE_USER) return false;
    const r = peerCredentials(this.socket);
    if ('error' in r) {
      // Without the addon a listed pgbouncer user can still log in with its password; an
      // unlisted one would only be refused later for a less useful reason.
      const { adminUsers, statsUsers } = this.host.cfg;
      if (peerCredAvailable() || adminUsers.includes(this.user) || statsUsers.includes(this.user)) return false;
      this.fail(Errors.authRejected(`peer authentication failed for user "${this.user}": ${r.error}`), 'peer');
      return true;
    }
    if (!isOwnUid(r.cred)) return false;
    this.ownUser = true;
    this.authMethod = 'peer';
    if (this.host.cfg.logConnections) this.log.info({ method: 'peer', uid: r.cred.uid }, 'pgbouncer access from unix socket');
    this.onAuthResult({ ok: true, scramKeys: null });
    return true;
  }

  private beginAuth(method: AuthType, secret: string | null): void {
    // PgBouncer's trust still requires the user to be known, when users are listed somewhere.
    if (method === 'trust' && secret === null && (this.host.cfg.authFile !== null || this.host.cfg.authUser !== null)) {
      return this.fail(Errors.trustFailed());
    }
    this.flow = authFlow(method, this.user, secret, this.host.cfg.scramIterations);
    this.authMethod = this.flow.method;
    this.onAuthResult(this.flow.start());
  }

  private onAuthResult(r: AuthResult): void {
    if ('send' in r) {
      this.socket.write(r.send);
      return;
    }
    if ('error' in r) return this.fail(r.error);
    // The last SASL message, AuthenticationOk and the welcome (when the pool knows its server)
    // leave in one write: over TLS one record and one system call instead of three per login,
    // which a connection storm pays on the event loop that also has to accept.
    this.socket.cork();
    try {
      this.authenticated(r);
    } finally {
      this.socket.uncork();
    }
  }

  private authenticated(r: Extract<AuthResult, { ok: true }>): void {
    if (r.final !== undefined) this.socket.write(r.final);
    if (this.admin) return this.adminLogin();
    const pool = this.host.poolFor(this.dbName, this.user, r.scramKeys);
    if (pool instanceof PoolerError) return this.fail(pool);
    this.pool = pool;
    loginStats.loggedIn(this.tls !== null, performance.now() - this.acceptedAt);
    this.logLogin();
    this.phase = 'welcome';
    this.framer.want([Frontend.Terminate]);
    this.socket.write(encode.authenticationOk);
    if (this.replication !== null) return pool.requestReplication(this);
    pool.addClient(this);
    if (pool.welcome !== null && pool.mode !== 'session') this.welcome(pool.welcome);
    else pool.requestServer(this);
  }

  /** ParameterStatus for every server parameter (the client's own values where it set one),
   * BackendKeyData with a pooler-minted key, ReadyForQuery. */
  private welcome(serverParams: ReadonlyMap<string, string>): void {
    const parts: Buffer[] = [];
    for (const [name, value] of serverParams) {
      const mine = this.params.get(name);
      if (mine === undefined && isTracked(name, this.host.cfg.trackExtraParameters)) this.setParameter(name, value);
      parts.push(encode.parameterStatus(name, mine ?? value));
    }
    // Protocol 3.2 (PostgreSQL 18) keys have a 32-byte secret, as PostgreSQL sends; 3.0 keeps 4.
    const key = this.host.mintCancelKey(this.protocolMinor < 2 ? 4 : 32, this);
    this.cancelKey = key;
    parts.push(encode.backendKeyData(key.readInt32BE(0), key.subarray(4)), encode.readyForQuery(0x49));
    this.socket.write(Buffer.concat(parts));
    this.phase = 'ready';
    this.framer.maxPacket = this.host.cfg.maxPacketSize;
    if (this.admin) this.framer.want([Frontend.Query, Frontend.Terminate], EVERY_TYPE);
    else this.trackStatements();
    const queued = this.queued;
    this.queued = [];
    if (this.admin) {
      // Paused while queueing in 'welcome'; replaying may pause it again, which wins (resume acts
      // on the next tick).
      if (queued.length > 0) this.socket.resume();
      for (const chunk of queued) this.adminData(chunk);
      return;
    }
    // The relay reads this socket from now on, starting with what the client pipelined.
    this.socket.removeListener('data', this.onData);
    this.relay = new ClientRelay(this);
    this.io = Io.attach(this.socket, this.relay, true, queued);
  }

  /** PgBouncer's line for a login (log_connections); JSON adds the method and TLS details. */
  private logLogin(): void {
    if (!this.host.cfg.logConnections) return;
    const tls = this.tls === null ? 'no' : `${this.tls.version}/${this.tls.cipher}`;
    this.log.info(
      { method: this.authMethod, tls: this.tls?.version ?? null, cipher: this.tls?.cipher ?? null },
      `login attempt: db=${this.dbName} user=${this.user} tls=${tls} replication=${this.replication?.mode ?? 'no'}`,
    );
  }

  // ---------------------------------------------------------------- admin console

  /** A console client (database `pgbouncer`): no pool, simple queries answered by the console. */
  admin = false;

  private adminLogin(): void {
    const refused = this.host.console.login(this);
    if (refused !== null) return this.fail(refused, 'not_allowed');
    loginStats.loggedIn(this.tls !== null, performance.now() - this.acceptedAt);
    this.logLogin();
    this.socket.write(encode.authenticationOk);
    this.welcome(ADMIN_PARAMS);
  }

  private adminData(chunk: Buffer): void {
    const stop = this.framer.feed(chunk, 0, this.onAdminMessage);
    if (stop === FRAMER_STOPPED) return this.fail(Errors.protocolViolation(this.framer.error ?? 'bad packet'));
    if (this.phase === 'closed') return;
    // Read on only once these answers are out: a client that pipelines queries and never reads
    // would otherwise grow the pooler without limit.
    this.socket.pause();
    void this.host.console.settled(this).then(() => {
      if (this.socket.writableNeedDrain) this.socket.once('drain', this.resumeAfterDrain);
      else this.resumeReading();
    });
  }

  private readonly onAdminMessage = (type: number, body: Buffer): boolean => {
    if (type === Frontend.Query) {
      const z = body.indexOf(0);
      this.host.console.query(this, body.toString('utf8', 0, z < 0 ? body.length : z));
    } else if (type === Frontend.Terminate) {
      this.close('client close request', false);
      return false;
    } else if (type === Frontend.Sync) {
      this.socket.write(encode.readyForQuery(0x49));
    } else if (!CONSOLE_REFUSED.includes(type)) {
      // PostgreSQL's answer to a type it does not know: FATAL and close.
      this.fail(Errors.protocolViolation(`invalid frontend message type ${type}`));
      return false;
    } else if (!this.adminRefusedExtended) {
      // Answer the first message of an extended-protocol batch; the rest is skipped until Sync.
      this.adminRefusedExtended = true;
      this.socket.write(
        encode.errorResponse({ severity: 'ERROR', code: '08P01', message: 'extended query protocol not supported by the admin console' }),
      );
    }
    if (type === Frontend.Sync) this.adminRefusedExtended = false;
    return true;
  };

  private adminRefusedExtended = false;

  // ---------------------------------------------------------------- TLS

  private upgrading = false;
  /** Length of the chunk being framed during login (to see bytes after an SSLRequest). */
  private chunkEnd = 0;

  private directTls(chunk: Buffer): void {
    const ctx = this.isUnix ? null : this.host.tls.client;
    if (ctx === null) return this.close('direct TLS connection but TLS is disabled', false);
    this.upgrade(ctx, chunk);
  }

  /** Set while this client waits for a handshake slot (its SSLRequest not answered yet). */
  private leaveHandshakeQueue: (() => void) | null = null;

  private upgrade(ctx: ClientTlsContext, pending: Buffer | null): void {
    this.upgrading = true;
    const raw = this.socket;
    this.detach(raw);
    acceptClientTls(raw, ctx, pending).then((r) => {
      this.upgrading = false;
      if (pending === null) this.host.handshakes.leave();
      if ('error' in r) return this.close(r.error, false);
      this.socket = r.socket;
      this.tls = r.info;
      this.peer = r.peer;
      this.attach(r.socket);
      // Direct TLS must have negotiated ALPN "postgresql" (PostgreSQL refuses it otherwise, and
      // Node's server accepts a client that offers no ALPN at all).
      if (pending !== null && r.socket.alpnProtocol !== 'postgresql') {
        return this.fail(Errors.protocolViolation('received direct SSL connection request without ALPN protocol negotiation extension'));
      }
      this.framer.startup = true;
    });
  }

  /** client_tls_sslmode's verdict on this connection, checked at the StartupMessage. */
  private tlsPolicyProblem(): PoolerError | null {
    if (this.isUnix) return null;
    // The mode of the TLS in use: a SET may have named one whose files are not complete yet.
    const mode = this.host.tls.client?.side.sslmode ?? 'disable';
    if (this.tls === null) {
      return mode === 'require' || mode === 'verify-ca' || mode === 'verify-full' ? Errors.authRejected('SSL required') : null;
    }
    if (mode === 'verify-ca' || mode === 'verify-full') {
      const peer = this.peer;
      if (peer === null || (peer.cn === null && peer.error === null && !peer.verified))
        return Errors.authRejected('connection requires a valid client certificate');
      if (!peer.verified) return Errors.authRejected(`client certificate verification failed: ${peer.error ?? 'unknown'}`);
    }
    return null;
  }

  // ---------------------------------------------------------------- hot path

  /** Named prepared statements, tracked in transaction and statement mode (null: pass through). */
  stmts: ClientStatements | null = null;

  private onReadyData(chunk: Buffer): void {
    if (this.admin) this.adminData(chunk);
    else this.relay?.onData(chunk);
  }

  /** Bytes of the pooler's own for the client (errors, replies it answers itself). */
  send(data: Buffer): void {
    Io.send(this.io, this.socket, data);
  }

  /** SUSPEND: stop reading until resumeReading. */
  pauseReading(): void {
    Io.pauseReading(this.io, this.socket);
  }

  resumeReading(): void {
    if (this.phase !== 'closed') Io.resumeReading(this.io, this.socket);
  }

  private readonly resumeAfterDrain = (): void => this.resumeReading();

  /** Bytes written but not yet handed to the kernel (SUSPEND, SHOW SOCKETS). */
  get unsentBytes(): number {
    return (this.io?.unsentBytes ?? 0) + this.socket.writableLength;
  }

  // ---------------------------------------------------------------- pool callbacks

  onLinked(server: ServerConn): void {
    if (this.lookup !== null) return this.runLookup(server);
    if (this.phase === 'welcome') {
      this.welcome(server.params);
      // A session keeps its server; otherwise this server only taught us the parameters.
      // (Unless what the client pipelined before its welcome went to it already.)
      if (this.pool?.mode !== 'session' && server.owed === 0 && this.server === server) this.pool?.onServerReady(server);
      return;
    }
    const sets = this.parameterSync(server);
    if (sets !== '') this.sendSets(server, sets);
    this.relay?.linked(server);
  }

  /** Its own method: a closure in onLinked would make every link allocate its scope. */
  private sendSets(server: ServerConn, sets: string): void {
    server.sendInternal(sets, () => this.adoptCanonical(server));
  }

  onUnlinked(): void {
    this.inExtendedQuery = false;
    if (this.trackingStale) this.trackStatements();
    this.resumeReading();
  }

  /**
   * Named statements are tracked while max_prepared_statements > 0 and servers change under the
   * client (not in session mode), from the config of the moment: a reload applies to logged-in
   * clients too, as PgBouncer reads the setting per message.
   */
  private trackStatements(): void {
    this.trackingStale = false;
    if (this.statementsWanted) {
      this.stmts ??= new ClientStatements(this.host.cfg.maxPreparedStatements, this.pool!.stats);
      this.stmts.max = this.host.cfg.maxPreparedStatements;
      this.framer.want(STATEMENT_BODIES, HOT_HEADERS);
    } else {
      this.stmts?.clear();
      this.stmts = null;
      this.framer.want([Frontend.Terminate], HOT_HEADERS);
    }
  }

  private get statementsWanted(): boolean {
    return this.host.cfg.maxPreparedStatements > 0 && this.pool !== null && this.pool.mode !== 'session' && this.replication === null;
  }

  /** Set when a reload turned tracking on or off while a server was linked. */
  private trackingStale = false;

  /** The config was reloaded (RELOAD, SIGHUP, SET). */
  onReload(): void {
    if (this.phase !== 'ready' || this.admin) return;
    if (this.statementsWanted === (this.stmts !== null)) {
      if (this.stmts !== null) this.stmts.max = this.host.cfg.maxPreparedStatements;
    } else if (this.server === null && this.framer.atBoundary) this.trackStatements();
    // Turning tracking on or off changes what is decoded and owed: only between transactions.
    else this.trackingStale = true;
  }

  /** SET statements that give the server this client's parameter values (PgBouncer varcache).
   * It runs at every link. A server last found matching clients of these same values, with no
   * parameter changed since, needs none: the usual case (the client's previous server, or one
   * that served a client of the same values), decided by two comparisons. Otherwise the maps are
   * compared: a forEach with a callback made once, where a for-of over the Map would allocate an
   * entry per parameter. */
  private parameterSync(server: ServerConn): string {
    const sig = (this.varsSig ??= signature(this.vars));
    if (server.matchesVarcache(sig)) return '';
    this.syncServer = server;
    this.syncSql = '';
    this.vars.forEach(this.syncParameter);
    this.syncServer = null;
    const sql = this.syncSql;
    if (sql === '') server.matchedVarcache(sig);
    else server.log.debug(`varcache_apply: ${sql}`);
    return sql;
  }

  private syncServer: ServerConn | null = null;
  private syncSql = '';
  private readonly syncParameter = (value: string, name: string): void => {
    if (this.syncServer!.params.get(name) !== value) this.syncSql += setStatement(name, value);
  };

  writeFromServer(data: Buffer, src: Io | null): boolean {
    if (this.pool !== null) this.pool.stats.bytesSent += data.length;
    return this.io !== null ? this.io.write(data, src) : this.socket.write(data);
  }

  onServerParameter(name: string, value: string): void {
    if (isTracked(name, this.host.cfg.trackExtraParameters)) this.setParameter(name, value);
  }

  /**
   * After the SETs of parameterSync a server holds the client's values in their canonical form
   * ('ISO' is 'ISO, MDY'; an unchanged value is not even reported): the client keeps that form,
   * so the next server that has it gets no SET (PgBouncer's varcache_set_canonical).
   */
  private adoptCanonical(server: ServerConn): void {
    if (this.server !== server) return;
    for (const [name, mine] of this.vars) {
      const theirs = server.params.get(name);
      if (theirs === undefined || theirs === mine) continue;
      this.log.debug(`varcache_set_canonical: setting ${name} to its canonical version ${mine} -> ${theirs}`);
      this.setParameter(name, theirs);
    }
  }

  notifyQueued(): boolean {
    if (this.phase !== 'ready') return false;
    this.send(encode.noticeResponse({ severity: 'NOTICE', code: '00000', message: QUEUED_NOTICE }));
    return true;
  }

  onServerLost(reason: string): void {
    // Its auth_query server went away: PgBouncer's answer to a client not logged in yet.
    this.fail(this.inLogin ? Errors.bouncerConfig() : Errors.serverConnFailed(reason));
  }

  // ---------------------------------------------------------------- closing

  /**
   * Send the error to the client, then close it (PgBouncer disconnect_client_sqlstate). Before the
   * login completed this is a refused login, counted by `refusal` (by default from the SQLSTATE).
   */
  fail(err: PoolerError, refusal?: LoginRefusal): void {
    if (this.phase === 'closed') return;
    if (this.inLogin) loginStats.refused(refusal ?? refusalOf(err));
    this.close(err.message, true, err);
  }

  /** Close the client; `err` is sent to it first, after the lines saying why are written. A null
   * `reason` closes without a line. */
  close(reason: string | null, flush: boolean, err: PoolerError | null = null): void {
    if (this.phase === 'closed') return;
    const cfg = this.host.cfg;
    if (cfg.logDisconnections && reason !== null) this.log.info(closingBecause(reason, this.connectTime));
    if (err !== null) {
      if (cfg.logPoolerErrors) this.log.warn({ sqlstate: err.sqlstate }, `pooler error: ${err.message}`);
      if (!this.socket.destroyed && this.socket.writable) {
        // The log says why before the client knows: tail -f and fail2ban read it at once.
        flushLog();
        this.send(encode.errorResponse({ severity: err.severity, code: err.sqlstate, message: err.message, detail: err.detail }));
      }
    }
    this.phase = 'closed';
    this.closing = true;
    // A cancel still on its way is not sent any more once its requester is gone or has given up.
    const abort = this.cancelRequest?.abort ?? null;
    this.cancelRequest = null;
    abort?.();
    this.leaveHandshakeQueue?.();
    this.leaveHandshakeQueue = null;
    // Its statement names go; statements no other client names are forgotten pooler-wide.
    this.stmts?.clear();
    if (this.server !== null) this.server.owed = Math.max(0, this.server.owed);
    this.pool?.removeClient(this);
    this.host.onClientClosed(this);
    // destroySoon, not end: a client that never closes its own side (half-open) must not keep the
    // descriptor once our last bytes are out.
    if (this.io !== null) {
      if (flush) this.io.end();
      else this.io.destroy();
    } else if (flush) this.socket.destroySoon();
    else this.socket.destroy();
  }
}

/** What a console client is told at login (PgBouncer's fixed values for driver compatibility). */
const ADMIN_PARAMS: ReadonlyMap<string, string> = new Map([
  ['server_version', '15.0 (pgpool-ts)'],
  ['client_encoding', 'UTF8'],
  ['server_encoding', 'UTF8'],
  ['DateStyle', 'ISO, MDY'],
  ['TimeZone', 'GMT'],
  ['standard_conforming_strings', 'on'],
  ['integer_datetimes', 'on'],
  ['application_name', ''],
]);
/** Extended-protocol messages the console answers with an error. */
const CONSOLE_REFUSED: readonly number[] = [Frontend.Parse, Frontend.Bind, Frontend.Describe, Frontend.Execute, Frontend.Close, Frontend.Flush, Frontend.Sync, Frontend.FunctionCall];

/** PgBouncer 1.25's query_wait_notify message, word for word. */
const QUEUED_NOTICE = 'No server connection available in postgres backend, client being queued';
const NO = Buffer.from('N');
const YES = Buffer.from('S');
const UNENCRYPTED_AFTER_SSL_REQUEST = 'received unencrypted data after SSL request';
/** The first byte of a TLS handshake record. */
/** PgBouncer's `unix(pid):port`; `unix:port` when the peer's pid cannot be read. */
function unixLogAddr(socket: net.Socket, port: number): string {
  const pid = peerPid(socket);
  return pid === null ? `unix:${port}` : `unix(${pid}):${port}`;
}

const TLS_HANDSHAKE = 0x16;
const MAX_STARTUP = 10_000;
const STARTUP_TYPES = [0, Frontend.Password, Frontend.Terminate];
const EVERY_TYPE = Array.from({ length: 256 }, (_, t) => t);
/** With statement tracking, these bodies are read (names may be rewritten). */
const STATEMENT_BODIES = [Frontend.Terminate, Frontend.Parse, Frontend.Bind, Frontend.Describe, Frontend.Close];


/** The console user that the pooler's own OS user may be without a password (PgBouncer's rule). */
const OWN_CONSOLE_USER = 'pgbouncer';

/** A refused login's reason when the call site gave none: what its SQLSTATE says. */
function refusalOf(err: PoolerError): LoginRefusal {
  switch (err.sqlstate) {
    case SqlState.InvalidPassword:
      return 'password';
    case SqlState.InvalidAuthorization:
      return 'not_allowed';
    case SqlState.TooManyConnections:
      return 'max_client_conn';
    case SqlState.InvalidCatalogName:
    case SqlState.CannotConnectNow:
      return 'database';
    case SqlState.AdminShutdown:
      return 'shutdown';
    case SqlState.ProtocolViolation:
    case SqlState.FeatureNotSupported:
      return 'protocol';
    case SqlState.ConnectionFailure:
    case SqlState.ConnectionException:
    case SqlState.ConnectionRejected:
      return 'server';
    default:
      return 'other';
  }
}

/** The `replication` startup parameter as PostgreSQL reads it: `database` (logical) or a boolean
 * (true = physical, false = an ordinary connection); undefined for anything else. */
function replicationMode(value: string): 'database' | 'yes' | null | undefined {
  if (value === 'database') return 'database';
  const v = value.toLowerCase();
  if (['true', 'on', 'yes', '1', 't', 'y'].includes(v)) return 'yes';
  if (['false', 'off', 'no', '0', 'f', 'n'].includes(v)) return null;
  return undefined;
}

/** Protocol 3.2 (PostgreSQL 18) is the newest we speak: its only change is longer cancel keys. */
const NEWEST_MINOR = 2;


const HOT_HEADERS = [
  Frontend.Query,
  Frontend.Sync,
  Frontend.FunctionCall,
  Frontend.Parse,
  Frontend.Bind,
  Frontend.Describe,
  Frontend.Execute,
  Frontend.Close,
  Frontend.Flush,
];

