// Handling of server connections: one ServerConn owns one socket to PostgreSQL and its state.
//
// Life: login (connect, optional TLS, StartupMessage, authentication, ParameterStatus, until the
// first ReadyForQuery) → idle ⇄ active (linked to a client) → closed. After login the socket's
// reads go to relay/relay.ts (ServerRelay) through an Io (net/io.ts); the state they act on lives
// here: what the linked client is owed, the transaction status, the statements this server holds.
// Queries the pooler sends itself (SET for the variable cache, the reset and check queries) are
// counted in `internal`; their replies are swallowed, never shown to a client.
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { now, refresh } from '../clock.js';
import { nextConnectionId } from '../ids.js';
import { closingBecause, connLogger, sockAddr, type Logger } from '../log.js';
import { Backend, SqlState, TxStatus } from '../protocol/codes.js';
import { decodeErrorFields } from '../protocol/error-response.js';
import { FRAMER_STOPPED, Framer } from '../protocol/framer.js';
import { encodeCancelRequest } from '../protocol/startup.js';
import { cachedLookup, isDnsError } from '../net/dns.js';
import { Io } from '../net/io.js';
import { sizedSocket, tuneSocket } from '../net/tcp.js';
import { connectServerTls, effectiveServerMode, type TlsContexts, type TlsInfo } from '../net/tls.js';
import type { Config, PoolMode } from '../config/types.js';
import type { CancelRequest } from '../pool/types.js';
import { Frontend, ServerAuth, type ServerCredentials } from './server-auth.js';
import { ReplyQueue, type Statement } from '../client/prepared.js';
import { ServerRelay } from '../relay/relay.js';

/** Each state is a list in the owning pool (SHOW POOLS counts are those lists' sizes). */
export type ServerState = 'login' | 'idle' | 'active' | 'used' | 'tested' | 'being_canceled' | 'closed';

/** What the server connection needs from its pool and its linked client (kept as types only, so
 * imports point down the layers). */
export interface ServerOwner {
  readonly cfg: Config;
  readonly mode: PoolMode;
  readonly tls: TlsContexts;
  onServerState(server: ServerConn, from: ServerState, to: ServerState): void;
  onServerLogin(server: ServerConn, error: LoginError | null): void;
  onServerClosed(server: ServerConn, reason: string): void;
  /** The last cancel sent for this server's backend has finished (see sendCancel). */
  onCancelsDone(server: ServerConn): void;
  /** Cancels for the pool's servers on their way (SHOW POOLS). */
  readonly cancels: CancelCounts;
  /** A linked server reached a point where the client may be unlinked (ReadyForQuery, owed = 0). */
  onServerReady(server: ServerConn): void;
}

/** SHOW POOLS' cancel columns: requests whose connection to PostgreSQL is being opened
 * (cl_waiting_cancel_req), and those sent, until PostgreSQL closes it (cl_active_cancel_req,
 * sv_active_cancel). */
export interface CancelCounts {
  waiting: number;
  active: number;
}

export interface ServerPeer {
  /** Server bytes for the client (`src`: the server's Io, whose read buffer they lie in); false =
   * the client's socket is full, pause the server until the client's Io is writable. */
  writeFromServer(data: Buffer, src: Io | null): boolean;
  /** The server's socket drained: read from the client again. */
  resumeReading(): void;
  /** The server told the client's session a new parameter value (SET seen in ParameterStatus). */
  onServerParameter(name: string, value: string): void;
  onServerLost(reason: string, fields: Record<string, string> | null): void;
}

export interface LoginError {
  /** What waiting clients are told. */
  readonly message: string;
  /** The server's SQLSTATE when it sent an ErrorResponse, else a connection-failure code. */
  readonly sqlstate: string;
  /**
   * PostgreSQL refused the login, or the pooler cannot answer its authentication request: every
   * login fails the same way until something changes, so the clients waiting for one are told
   * now (PgBouncer's kill_pool_logins). False when the connection failed or timed out, or the
   * server is starting up or shutting down (57P03): the next try may work, and clients wait.
   */
  readonly refused: boolean;
}

/**
 * How a failed login is logged: `detail` after "server login failed: " when it says more than the
 * clients are told, the server's severity before it, and `why`, PgBouncer's reason on the closing
 * line (both default to the error's message).
 */
interface LoginLog {
  readonly detail?: string;
  readonly severity?: string;
  readonly why?: string;
}

/** A login that failed on the way (connect, TLS, a dead socket, a timeout): worth retrying. */
function connectFailure(message: string): LoginError {
  return { message, sqlstate: SqlState.ConnectionFailure, refused: false };
}

/** A replication connection's kind, as the startup parameter says it: logical or physical. */
export type ReplicationMode = 'database' | 'yes';

export interface ServerTarget {
  /** A unix socket path, or a TCP host. */
  readonly host: string;
  readonly port: number;
  readonly unix: boolean;
  readonly startup: Record<string, string>;
  readonly user: string;
  readonly creds: ServerCredentials;
  /** A dedicated replication connection for one client (sent in the startup packet), or null. */
  readonly replication: ReplicationMode | null;
}

export class ServerConn {
  readonly id = nextConnectionId();
  readonly log: Logger;
  state: ServerState = 'login';
  socket: net.Socket;
  /** The socket's hot-path I/O, from the end of the login on. */
  io: Io | null = null;
  tls: TlsInfo | null = null;

  /** Parameter values the server reported (its session's state); changed only by
   * storeParameter, which counts each change in paramsVersion. */
  private readonly reported = new Map<string, string>();
  get params(): ReadonlyMap<string, string> {
    return this.reported;
  }
  private paramsVersion = 0;
  /** The signature of the client parameters (client/varcache.ts) this server's were last found
   * to match, and paramsVersion then: while the version holds, a client with that signature needs
   * no SET here, and the pool's hand-out skips the comparison of the two maps. */
  private varcacheFor: string | null = null;
  private varcacheVersion = -1;
  backendPid = 0;
  backendSecret: Buffer = Buffer.alloc(0);
  txStatus: number = TxStatus.Idle;

  /** The linked client, while active. */
  client: ServerPeer | null = null;
  /** ReadyForQuery messages the linked client is still owed (one per Query, Sync, FunctionCall). */
  owed = 0;
  /** ReadyForQuery messages of pooler-sent queries still to swallow. */
  internal = 0;
  /** Pooler-named prepared statements this server holds, least recently used first. */
  readonly prepared = new Map<string, true>();
  /** What is owed for each Parse/Close sent while statements are tracked (client/prepared.ts). */
  readonly replies = new ReplyQueue();
  lastBound: Statement | null = null;
  /** Set when the server must not be reused (RECONNECT, a reload changed its database). */
  closeNeeded = false;
  /** Set when something went wrong mid-protocol: destroy instead of reuse. */
  bad = false;
  /** Links of the pool list its state is (sv_idle, sv_active, …): pool/list.ts. */
  prevInList: unknown = null;
  nextInList: unknown = null;
  inList: unknown = null;

  readonly connectTime = now;
  /** When it last became idle or active (SHOW SERVERS request_time, idle and check timeouts). */
  lastUsed = now;
  /** When the linked client's current request started (query_timeout). */
  requestTime = 0;
  /** When it last answered everything it owed, set by the pool: idle_transaction_timeout counts
   * from there (PgBouncer: from the server's idle information, not the client's last message). */
  readyTime = 0;
  /** When the transaction running on it began (xact_time, transaction_timeout); -1 between
   * transactions. Kept by the pool (a field: a map updated per transaction would allocate). */
  xactStart = -1;

  readonly framer: Framer;
  private auth: ServerAuth;
  private loginDone = false;
  /** Why the login failed, for the pool to report (see server-pool.ts). */
  loginError: LoginError | null = null;
  private internalDone: (() => void) | null = null;
  private closing = false;
  /** A pooler query whose rows are wanted (auth_query), answered once its ReadyForQuery comes. */
  collector: Collector | null = null;

  constructor(
    readonly owner: ServerOwner,
    readonly target: ServerTarget,
    readonly dbName: string,
  ) {
    const addr = target.unix ? `unix:${target.port}` : sockAddr(target.host, target.port);
    this.log = connLogger({ id: this.label, db: dbName, user: target.user, addr });
    this.framer = new Framer(LOGIN_TYPES, owner.cfg.maxPacketSize, false);
    this.auth = new ServerAuth(target.user, target.creds);
    this.socket = new net.Socket();
    this.connect();
  }

  /** PgBouncer's log prefix shape (`S-0x…`), and SHOW SERVERS `ptr`. */
  get label(): string {
    return `S-0x${this.id.toString(16)}`;
  }

  setState(to: ServerState): void {
    const from = this.state;
    if (from === to || from === 'closed') return;
    this.state = to;
    if (to === 'idle' || to === 'active') this.lastUsed = now;
    this.owner.onServerState(this, from, to);
  }

  /** server_tls_sslmode=allow: the plain attempt was refused, this is the TLS one (libpq). */
  private allowRetry = false;

  private connect(): void {
    const { host, port, unix } = this.target;
    if (unix) return this.connectSocket(this.socket, { path: host });
    const cfg = this.owner.cfg;
    const lookup = cachedLookup(cfg.dnsMaxTtl, cfg.dnsNxdomainTtl);
    if (cfg.tcpSocketBuffer === 0) return this.connectSocket(this.socket, { host, port, lookup });
    // tcp_socket_buffer goes on a socket made for the address's family before it connects.
    lookup(host, {}, (err, address, family) => {
      if (this.closing) return;
      if (err !== null || typeof address !== 'string') return this.connectFailed(err ?? new Error(`no address for ${host}`));
      this.socket = sizedSocket(family ?? 4, cfg) ?? this.socket;
      this.connectSocket(this.socket, { host: address, port });
    });
  }

  private connectFailed(err: NodeJS.ErrnoException): void {
    const host = this.target.host;
    if (isDnsError(err)) this.loginFailed(connectFailure(`server DNS lookup failed: ${host} (${err.code ?? err.message})`), { why: 'server DNS lookup failed' });
    else this.loginFailed(connectFailure(`could not connect to server: ${err.message}`), { why: 'connect failed' });
  }

  private connectSocket(sock: net.Socket, to: net.NetConnectOpts): void {
    const { host, unix } = this.target;
    const ctx = this.owner.tls.server;
    const useTls = !unix && ctx !== null && (effectiveServerMode(ctx.side) !== 'allow' || this.allowRetry);
    sock.once('error', (err: NodeJS.ErrnoException) => this.connectFailed(err));
    const onConnect = (): void => {
      sock.removeAllListeners('error');
      // Set after connect: on a socket not yet connected Node does not apply it to TCP.
      if (!unix) sock.setNoDelay(true);
      const cfg = this.owner.cfg;
      if (cfg.logConnections) {
        this.log.info(unix ? 'new connection to server' : `new connection to server (from ${sockAddr(sock.localAddress ?? '', sock.localPort ?? 0)})`);
      }
      if (!unix) tuneSocket(sock, cfg);
      if (!useTls || ctx === null) {
        this.startLogin();
        return;
      }
      connectServerTls(sock, ctx, host).then(
        (r) => {
          if ('error' in r) return this.loginFailed(connectFailure(r.error));
          if (r.socket) {
            this.socket = r.socket;
            this.tls = r.info;
            if (cfg.logConnections) this.log.info(`SSL established: ${r.info.version}/${r.info.cipher}`);
          }
          this.startLogin();
        },
        (err: Error) => this.loginFailed(connectFailure(`TLS: ${err.message}`)),
      );
    };
    sock.connect(to, onConnect);
  }

  private detachSocket(): void {
    const sock = this.socket;
    sock.removeListener('data', this.onData);
    sock.removeListener('error', this.onError);
    sock.removeListener('close', this.onClose);
    sock.destroy();
  }

  private startLogin(): void {
    const sock = this.socket;
    sock.on('data', this.onData);
    sock.on('error', this.onError);
    sock.on('close', this.onClose);
    sock.write(Frontend.startup(this.target.startup));
  }

  private readonly onError = (err: Error): void => {
    this.log.debug({ err: err.message }, 'server socket error');
    // 'close' follows and does the cleanup.
  };

  private readonly onClose = (): void => {
    if (!this.loginDone) this.loginFailed(connectFailure('server closed the connection unexpectedly'));
    else this.lost('server conn crashed?');
  };

  /** Login only: after it, reads go to the ServerRelay. */
  private readonly onData = (chunk: Buffer): void => {
    refresh();
    this.loginData(chunk);
  };

  // ---------------------------------------------------------------- pooler queries with rows

  /** Run one parameterised query of the pooler's own (auth_query) on this idle server. */
  queryRows(sql: string, params: string[]): Promise<QueryResult> {
    return new Promise((resolve) => {
      this.collector = { rows: [], error: null, resolve };
      this.framer.want(COLLECT_TYPES);
      this.send(Frontend.execParams(sql, params));
    });
  }

  /** A read while a pooler query's rows are collected (the relay hands it here). */
  collect(chunk: Buffer): void {
    const stop = this.framer.feed(chunk, 0, this.onCollectMessage);
    if (stop === FRAMER_STOPPED) {
      this.bad = true;
      this.finishCollect();
      return this.lost(`protocol error from server: ${this.framer.error}`);
    }
    if (this.collector === null && stop < chunk.length) this.relay!.relay(chunk.subarray(stop));
  }

  private readonly onCollectMessage = (type: number, body: Buffer): boolean => {
    const c = this.collector!;
    if (type === Backend.DataRow) c.rows.push(decodeDataRow(body));
    else if (type === Backend.ErrorResponse) c.error = decodeErrorFields(body).M ?? 'query failed';
    else if (type === Backend.ParameterStatus) this.storeParameter(body);
    else if (type === Backend.ReadyForQuery) {
      this.txStatus = body[0] ?? TxStatus.Idle;
      this.finishCollect();
      return false;
    }
    return true;
  };

  private finishCollect(): void {
    const c = this.collector;
    if (c === null) return;
    this.collector = null;
    this.framer.want(RELAY_TYPES, RELAY_HEADERS);
    c.resolve({ rows: c.rows, error: c.error });
  }

  // ---------------------------------------------------------------- login

  private loginData(chunk: Buffer): void {
    const stop = this.framer.feed(chunk, 0, this.onLoginMessage);
    if (stop === FRAMER_STOPPED) return this.loginFailed(connectFailure(`protocol error from server: ${this.framer.error}`));
    if (this.loginDone && stop < chunk.length) this.relay?.onData(chunk.subarray(stop));
  }

  /** The relay of this server's reads, from the end of the login on. */
  private relay: ServerRelay | null = null;

  private readonly onLoginMessage = (type: number, body: Buffer): boolean => {
    if (this.loginDone) return false;
    switch (type) {
      case Backend.Authentication: {
        const step = this.auth.onAuthentication(body);
        if ('reply' in step) this.socket.write(step.reply);
        else if ('error' in step) {
          // No answer the pooler could give would do: the next login fails the same way.
          this.loginFailed({ message: step.error, sqlstate: SqlState.ConnectionFailure, refused: true }, { detail: step.log });
          return false;
        }
        return true;
      }
      case Backend.ParameterStatus:
        this.storeParameter(body);
        return true;
      case Backend.BackendKeyData:
        // A reply shorter than its pid is a broken server, not a reason to crash the pooler.
        if (body.length < 4) {
          this.loginFailed(connectFailure('invalid BackendKeyData from server'));
          return false;
        }
        this.backendPid = body.readInt32BE(0);
        this.backendSecret = Buffer.from(body.subarray(4));
        return true;
      case Backend.ErrorResponse: {
        const f = decodeErrorFields(body);
        if (this.retryWithTls(f.M)) return false;
        const message = f.M ?? 'server login failed';
        const sqlstate = f.C ?? SqlState.ConnectionFailure;
        this.loginFailed(
          { message, sqlstate, refused: sqlstate !== SqlState.CannotConnectNow },
          // A replication login is refused for reasons of its own (PgBouncer's reason names none).
          { severity: f.S ?? f.V ?? 'FATAL', why: this.target.replication !== null ? 'login failed' : message },
        );
        return false;
      }
      case Backend.ReadyForQuery:
        this.loginDone = true;
        this.framer.want(RELAY_TYPES, RELAY_HEADERS);
        // From here on the relay reads this socket (the rest of this read is handed to it).
        this.socket.removeListener('data', this.onData);
        this.relay = new ServerRelay(this);
        this.io = Io.attach(this.socket, this.relay, false, []);
        this.log.debug({ pid: this.backendPid, tls: this.tls?.version }, `server login done (backend pid ${this.backendPid})`);
        this.owner.onServerLogin(this, null);
        return false;
      default:
        // NoticeResponse, NegotiateProtocolVersion: nothing to do.
        return true;
    }
  };

  /**
   * server_connect_timeout passed before the login finished: a failed login, as PgBouncer. Its
   * closing reason says where: "connect failed" while TCP still connects (PgBouncer's connect()
   * timing out), "connect timeout" once connected (its janitor).
   */
  loginTimedOut(): void {
    this.loginFailed(connectFailure('connect timeout'), {
      detail: `connect timeout (server_connect_timeout ${this.owner.cfg.serverConnectTimeout} s)`,
      why: this.socket.connecting ? 'connect failed' : 'connect timeout',
    });
  }

  /**
   * server_tls_sslmode=allow: plain text first; if the server refuses it (an error, not a dead
   * socket), the same login again over TLS (libpq). True when that retry started.
   */
  private retryWithTls(reason: string | undefined): boolean {
    const side = this.owner.tls.server?.side;
    if (side === undefined || effectiveServerMode(side) !== 'allow' || this.allowRetry || this.target.unix) return false;
    this.allowRetry = true;
    this.log.debug({ reason }, 'plain connection refused, retrying with TLS (server_tls_sslmode=allow)');
    this.detachSocket();
    this.framer.reset();
    this.auth = new ServerAuth(this.target.user, this.target.creds);
    this.reported.clear();
    this.paramsVersion++;
    this.socket = new net.Socket();
    this.connect();
    return true;
  }

  /** The login cannot complete: log it (see LoginLog), and let the pool decide what its waiting
   * clients hear. */
  private loginFailed(error: LoginError, logged: LoginLog = {}): void {
    if (this.loginDone || this.closing) return;
    this.closing = true;
    const text = logged.detail ?? error.message;
    this.log.warn({ reason: text }, `server login failed: ${logged.severity === undefined ? '' : `${logged.severity} `}${text}`);
    this.logClosing(logged.why ?? error.message);
    this.socket.destroy();
    this.state = 'closed';
    this.loginError = error;
    this.owner.onServerLogin(this, error);
  }

  storeParameter(body: Buffer): [string, string] | null {
    const z1 = body.indexOf(0);
    if (z1 < 0) return null;
    const z2 = body.indexOf(0, z1 + 1);
    const name = body.toString('utf8', 0, z1);
    const value = body.toString('utf8', z1 + 1, z2 < 0 ? body.length : z2);
    this.reported.set(name, value);
    this.paramsVersion++;
    return [name, value];
  }

  /** Whether this server's parameters were found to match a client's of signature `sig` and have
   * not changed since (see varcacheFor). */
  matchesVarcache(sig: string): boolean {
    return this.varcacheVersion === this.paramsVersion && this.varcacheFor === sig;
  }

  /** A comparison found this server's parameters matching those of signature `sig`. */
  matchedVarcache(sig: string): void {
    this.varcacheFor = sig;
    this.varcacheVersion = this.paramsVersion;
  }

  // ---------------------------------------------------------------- the relay's state changes

  /** The ReadyForQuery ending a pooler-sent query's reply arrived. */
  internalAnswered(): void {
    if (--this.internal === 0 && this.internalDone !== null) {
      const done = this.internalDone;
      this.internalDone = null;
      done();
    }
  }

  /** Bytes of the pooler's own (queries, Terminate): through the Io once the login is done. */
  send(data: Buffer): void {
    Io.send(this.io, this.socket, data);
  }

  /** SUSPEND: stop reading until resumeReading. */
  pauseReading(): void {
    Io.pauseReading(this.io, this.socket);
  }

  resumeReading(): void {
    if (this.state !== 'closed') Io.resumeReading(this.io, this.socket);
  }

  /** Bytes written but not yet handed to the kernel (SUSPEND waits for none). */
  get unsentBytes(): number {
    return (this.io?.unsentBytes ?? 0) + this.socket.writableLength;
  }

  /**
   * Send a query of the pooler's own; its reply is swallowed. `done` runs once every pooler query
   * sent so far has been answered. Client bytes may follow at once: the server answers in order.
   */
  sendInternal(sql: string, done: (() => void) | null = null): void {
    this.internal++;
    this.internalDone = done;
    this.send(Frontend.query(sql));
  }

  link(client: ServerPeer): void {
    this.client = client;
    this.owed = 0;
    this.setState('active');
  }

  unlink(): void {
    this.client = null;
    // Paused for the client's backpressure: that client is not this server's concern any more.
    this.resumeReading();
  }

  /**
   * Cancel requests sent for this backend whose connection has not closed yet. Until PostgreSQL
   * has taken the last of them, the server serves nobody else: a late one would cancel the next
   * client's query (PgBouncer's SV_BEING_CANCELED).
   */
  cancelsInFlight = 0;

  /**
   * Send a client's cancel to this server's backend, over a connection of its own. PostgreSQL
   * closes it once it has signalled the backend; the request is closed then. A request that times
   * out (cancel_wait_timeout, the janitor's) stops a forward still connecting; one already sent
   * goes on, and this server serves no one else until PostgreSQL has closed it (being_canceled):
   * the cancel may still land.
   */
  sendCancel(request: CancelRequest): void {
    const t = this.target;
    const counts = this.owner.cancels;
    this.cancelsInFlight++;
    counts.waiting++;
    let sent = false;
    const sock = t.unix ? net.connect({ path: t.host }) : net.connect({ host: t.host, port: t.port });
    request.abort = () => sock.destroy();
    sock.on('error', (err) => {
      this.log.debug({ err: err.message }, 'cancel connection failed');
      sock.destroy();
    });
    sock.on('connect', () => {
      sent = true;
      request.abort = null;
      counts.waiting--;
      counts.active++;
      sock.end(encodeCancelRequest(this.backendPid, this.backendSecret));
    });
    sock.on('close', () => {
      if (sent) counts.active--;
      else counts.waiting--;
      request.abort = null;
      request.done(sent ? 'successfully sent cancel request' : 'failed to send cancel request');
      if (--this.cancelsInFlight === 0) this.owner.onCancelsDone(this);
    });
  }

  /** Close for a reason of the pooler's (timeout, reload, kill); sends Terminate first. */
  close(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.logClosing(reason);
    if (this.loginDone && !this.socket.destroyed) this.send(Frontend.terminate);
    if (this.io !== null) this.io.destroy();
    else this.socket.destroy();
    this.finish(reason);
  }

  /** The socket went away under us, or the server broke the protocol. */
  lost(reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.logClosing(reason);
    if (this.io !== null) this.io.destroy();
    else this.socket.destroy();
    const client = this.client;
    this.finish(reason);
    client?.onServerLost(reason, null);
  }

  private logClosing(reason: string): void {
    if (this.owner.cfg.logDisconnections) this.log.info(closingBecause(reason, this.connectTime));
  }

  private finish(reason: string): void {
    // A pooler query in flight (a server check) is answered by the close.
    if (this.internalDone !== null) {
      const done = this.internalDone;
      this.internalDone = null;
      queueMicrotask(done);
    }
    if (this.collector !== null) {
      this.collector.error ??= reason;
      this.finishCollect();
    }
    this.client = null;
    this.setState('closed');
    this.owner.onServerClosed(this, reason);
  }

  get inTransaction(): boolean {
    return this.txStatus !== TxStatus.Idle;
  }

  get usable(): boolean {
    return this.state !== 'closed' && !this.bad && !this.closeNeeded && !this.closing;
  }

  /** For RECONNECT on a linked server, and a reload changing its database. */
  markCloseNeeded(): void {
    this.closeNeeded = true;
  }

  /** Idle servers hold TLS state too: report it in SHOW SERVERS. */
  get tlsSocket(): TLSSocket | null {
    return this.tls ? (this.socket as TLSSocket) : null;
  }
}

export interface QueryResult {
  readonly rows: (string | null)[][];
  readonly error: string | null;
}

export interface Collector {
  rows: (string | null)[][];
  error: string | null;
  resolve: (r: QueryResult) => void;
}

/** Text columns of a DataRow (only for the pooler's own queries; the hot path never decodes). */
function decodeDataRow(body: Buffer): (string | null)[] {
  if (body.length < 2) return [];
  const n = body.readInt16BE(0);
  const out: (string | null)[] = [];
  let pos = 2;
  for (let i = 0; i < n && pos + 4 <= body.length; i++) {
    const len = body.readInt32BE(pos);
    pos += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.toString('utf8', pos, pos + len));
      pos += len;
    }
  }
  return out;
}

const COLLECT_TYPES = [Backend.DataRow, Backend.ErrorResponse, Backend.ReadyForQuery, Backend.ParameterStatus];
const LOGIN_TYPES = [
  Backend.Authentication,
  Backend.ParameterStatus,
  Backend.BackendKeyData,
  Backend.ErrorResponse,
  Backend.ReadyForQuery,
  Backend.NoticeResponse,
  Backend.NegotiateProtocolVersion,
];
const RELAY_TYPES = [Backend.ReadyForQuery, Backend.ParameterStatus, Backend.ErrorResponse];
/** Header events: the replies to Parse and Close, counted while prepared statements are tracked. */
const RELAY_HEADERS = [Backend.ParseComplete, Backend.CloseComplete];
