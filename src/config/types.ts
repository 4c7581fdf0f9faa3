// The one typed shape of a pgpool-ts configuration. load.ts builds it from a pgbouncer.ini and
// deep-freezes it; everything else only reads it. Times are seconds as floats, as in PgBouncer.
// Imports nothing, so any layer may import it.

/** The virtual database of the admin console; no [databases] entry may take its name. */
export const ADMIN_DB = 'pgbouncer';

export type PoolMode = 'session' | 'transaction' | 'statement';
export type LogFormat = 'text' | 'json';
export type AuthType = 'trust' | 'any' | 'plain' | 'md5' | 'scram-sha-256' | 'cert' | 'hba';
export type LoadBalanceHosts = 'round-robin' | 'disable';
export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

/** One `[databases]` entry (or the `*` fallback, with `name` = '*'). */
export interface DatabaseDef {
  readonly name: string;
  /** Unix socket directory (starts with '/'), or host names; empty = unix socket in unix_socket_dir. */
  readonly hosts: readonly string[];
  readonly port: number;
  /** Server-side database name; null = the name the client used. */
  readonly dbname: string | null;
  /** Forced server user (one pool per database), or null. */
  readonly user: string | null;
  readonly password: string | null;
  readonly authUser: string | null;
  /** Per-database auth_query / auth_dbname overrides (PgBouncer 1.22); null = the global one. */
  readonly authQuery: string | null;
  readonly authDbname: string | null;
  readonly poolSize: number | null;
  readonly minPoolSize: number | null;
  readonly reservePoolSize: number | null;
  readonly poolMode: PoolMode | null;
  readonly maxDbConnections: number | null;
  /** Client connections to this database; null (or 0, as PgBouncer) = the global value. */
  readonly maxDbClientConnections: number | null;
  readonly serverLifetime: number | null;
  readonly connectQuery: string | null;
  /** How a host list is used: each new server on the next host, or one host until it fails. */
  readonly loadBalanceHosts: LoadBalanceHosts;
  /** Startup parameters sent to the server: client_encoding, datestyle, timezone, application_name. */
  readonly startupParams: Readonly<Record<string, string>>;
}

/** One `[users]` entry. */
export interface UserDef {
  readonly name: string;
  readonly poolMode: PoolMode | null;
  readonly poolSize: number | null;
  readonly reservePoolSize: number | null;
  readonly maxUserConnections: number | null;
  /** Client connections of this login user; null (or 0, as PgBouncer) = the global value. */
  readonly maxUserClientConnections: number | null;
  readonly queryTimeout: number | null;
  readonly idleTransactionTimeout: number | null;
  readonly transactionTimeout: number | null;
  readonly clientIdleTimeout: number | null;
}

/** One `[peers]` entry: where a cancel request whose key carries this peer id is forwarded. */
export interface PeerDef {
  readonly id: number;
  /** A host name or address, or a unix socket directory (starts with '/'). */
  readonly host: string;
  readonly port: number;
  /** Forwards open to this peer at once; null = default_pool_size. */
  readonly poolSize: number | null;
}

/** A parsed auth_file entry: the secret as written (plain, `md5…` or `SCRAM-SHA-256$…`). */
export interface AuthEntry {
  readonly user: string;
  readonly secret: string;
}

export interface TlsSide {
  readonly sslmode: SslMode;
  readonly keyFile: string | null;
  readonly certFile: string | null;
  /** A PEM file, or 'system' (server side only). */
  readonly caFile: string | null;
  readonly crlFile: string | null;
  readonly protocols: string;
  readonly ciphers: string;
  readonly tls13Ciphers: string;
}

export interface ClientTls extends TlsSide {
  readonly ecdhCurve: string;
  readonly dheParams: string;
}

export interface Config {
  /** The ini file it came from (absolute), for RELOAD and messages; null when generated from the environment. */
  readonly configFile: string | null;

  // --- listening and process
  readonly listenAddr: readonly string[];
  readonly listenPort: number;
  readonly listenBacklog: number;
  readonly unixSocketDir: string;
  readonly unixSocketMode: number;
  readonly unixSocketGroup: string | null;
  readonly logfile: string | null;
  readonly pidfile: string | null;
  readonly user: string | null;
  /** Bind TCP listeners with SO_REUSEPORT, so several processes share the port. */
  readonly soReuseport: boolean;

  // --- peering: cancel keys carry peer_id; [peers] says where other ids are forwarded
  readonly peerId: number;
  readonly peers: ReadonlyMap<number, PeerDef>;

  // --- auth
  readonly authType: AuthType;
  readonly authFile: string | null;
  readonly authHbaFile: string | null;
  readonly authIdentFile: string | null;
  readonly authUser: string | null;
  readonly authQuery: string;
  readonly authDbname: string | null;
  /** auth_file contents, read at load time so a RELOAD swaps them with the rest. */
  readonly authEntries: ReadonlyMap<string, AuthEntry>;

  // --- pooling and limits
  readonly poolMode: PoolMode;
  readonly maxClientConn: number;
  readonly defaultPoolSize: number;
  readonly minPoolSize: number;
  readonly reservePoolSize: number;
  readonly reservePoolTimeout: number;
  readonly maxDbConnections: number;
  readonly maxUserConnections: number;
  /** Client connections per database / per login user, counted from the startup packet; 0 = no limit. */
  readonly maxDbClientConnections: number;
  readonly maxUserClientConnections: number;
  readonly serverRoundRobin: boolean;

  // --- server connection lifecycle
  readonly serverResetQuery: string;
  readonly serverResetQueryAlways: boolean;
  /** '' disables the check; '<empty>' (the default) sends an empty query. */
  readonly serverCheckQuery: string;
  readonly serverCheckDelay: number;
  readonly serverLifetime: number;
  readonly serverIdleTimeout: number;
  readonly serverConnectTimeout: number;
  readonly serverLoginRetry: number;
  /** Close a session's close_needed server at the end of the client's transaction. */
  readonly serverFastClose: boolean;
  /** How long a resolved server host name is kept / a name that did not resolve (seconds, 0 = not). */
  readonly dnsMaxTtl: number;
  readonly dnsNxdomainTtl: number;

  // --- timeouts
  readonly queryTimeout: number;
  readonly queryWaitTimeout: number;
  readonly clientIdleTimeout: number;
  readonly clientLoginTimeout: number;
  readonly idleTransactionTimeout: number;
  /** A transaction (or a single statement) open longer than this closes the client and its server. */
  readonly transactionTimeout: number;
  /** A client waiting this long for a server gets a NOTICE that it is queued (once per wait). */
  readonly queryWaitNotify: number;
  readonly suspendTimeout: number;
  readonly cancelWaitTimeout: number;
  /** Pools of databases known only through `*` are dropped after this long unused. */
  readonly autodbIdleTimeout: number;

  // --- protocol
  readonly ignoreStartupParameters: readonly string[];
  readonly trackExtraParameters: readonly string[];
  readonly applicationNameAddHost: boolean;
  readonly maxPacketSize: number;
  readonly maxPreparedStatements: number;
  /** Refuse the simple query protocol: a client that sends Query is closed (PQexec disallowed). */
  readonly disablePqexec: boolean;
  /** PBKDF2 iterations of the SCRAM verifier made from a plain-text auth_file password. */
  readonly scramIterations: number;

  // --- network
  readonly tcpKeepalive: boolean;
  readonly tcpKeepcnt: number;
  readonly tcpKeepidle: number;
  readonly tcpKeepintvl: number;
  readonly tcpUserTimeout: number;
  readonly tcpDeferAccept: boolean;
  /** SO_SNDBUF / SO_RCVBUF of every TCP socket, bytes; 0 = the system's. */
  readonly tcpSocketBuffer: number;

  // --- console, logging, stats
  readonly adminUsers: readonly string[];
  readonly statsUsers: readonly string[];
  readonly logConnections: boolean;
  readonly logDisconnections: boolean;
  readonly logPoolerErrors: boolean;
  readonly logStats: boolean;
  readonly statsPeriod: number;
  readonly verbose: number;
  /** How the console and `logfile` lines are written (pgpool-ts only). */
  readonly logFormat: LogFormat;
  /** Log lines of level LOG and up to the local syslog daemon as well (RFC 3164 datagrams). */
  readonly syslog: boolean;
  readonly syslogIdent: string;
  readonly syslogFacility: string;
  /** Where the syslog daemon listens (pgpool-ts only; PgBouncer's syslog(3) always uses /dev/log). */
  readonly syslogSocket: string;

  // --- TLS
  readonly clientTls: ClientTls;
  readonly serverTls: TlsSide;

  // --- metrics (pgpool-ts only)
  readonly metricsListenAddr: string;
  /** 0 = no HTTP listener. */
  readonly metricsPort: number;
  /** Worker processes sharing the port (1: this process serves; `auto` is resolved to the CPUs). */
  readonly workers: number;

  readonly databases: ReadonlyMap<string, DatabaseDef>;
  readonly users: ReadonlyMap<string, UserDef>;

  /** PgBouncer settings that are accepted and validated so an existing pgbouncer.ini loads, but
   * that pgpool-ts does not act on (syslog, dns_*, ...): name → value as SHOW CONFIG
   * prints it, defaults included. */
  readonly otherSettings: ReadonlyMap<string, string>;
}

/** One problem found while loading: where, which setting, what is wrong. */
export interface ConfigProblem {
  readonly file: string;
  readonly line: number;
  readonly setting: string;
  readonly message: string;
}
