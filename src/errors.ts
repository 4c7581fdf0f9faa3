// Errors are protocol values: a SQLSTATE, a severity and a message the client can show, plus
// whether the client connection must be closed. Socket handlers never throw; they end in
// disconnect(reason) with one of these.
import { SqlState } from './protocol/codes.js';

export type Severity = 'ERROR' | 'FATAL';

export class PoolerError {
  constructor(
    readonly sqlstate: string,
    readonly message: string,
    readonly severity: Severity = 'FATAL',
    readonly detail?: string,
  ) {}

  get fatal(): boolean {
    return this.severity === 'FATAL';
  }
}

const fatal = (code: string, message: string, detail?: string) => new PoolerError(code, message, 'FATAL', detail);

export const Errors = {
  protocolViolation: (why: string) => fatal(SqlState.ProtocolViolation, why),
  tooManyClients: () => fatal(SqlState.TooManyConnections, 'no more connections allowed (max_client_conn)'),
  // PgBouncer's wording and its default SQLSTATE for a pooler error (08P01).
  clientLimit: (setting: 'max_db_client_connections' | 'max_user_client_connections') =>
    fatal(SqlState.ProtocolViolation, `client connections exceeded (${setting})`),
  authFailed: (user: string) => fatal(SqlState.InvalidPassword, `password authentication failed for user "${user}"`),
  authRejected: (why: string) => fatal(SqlState.InvalidAuthorization, why),
  noSuchDatabase: (db: string) => fatal(SqlState.InvalidCatalogName, `no such database: ${db}`),
  /** auth_query found no row: PgBouncer says so plainly (it has no mock exchange there). */
  noSuchUser: () => fatal(SqlState.InvalidAuthorization, 'no such user'),
  /** A user no auth_file or auth_query knows, under trust / SCRAM: PgBouncer's words. */
  trustFailed: () => fatal(SqlState.InvalidAuthorization, '"trust" authentication failed'),
  saslFailed: () => fatal(SqlState.InvalidPassword, 'SASL authentication failed'),
  // The auth database cannot be used (its name is in the log): PgBouncer's words and its 08P01.
  bouncerConfig: () => fatal(SqlState.ProtocolViolation, 'bouncer config error'),
  authDatabaseDisabled: (db: string) => fatal(SqlState.ProtocolViolation, `authentication database "${db}" is disabled`),
  unsupportedParameter: (name: string) => fatal(SqlState.ProtocolViolation, `unsupported startup parameter: ${name}`),
  unsupportedParameterInOptions: (name: string) => fatal(SqlState.ProtocolViolation, `unsupported startup parameter in options: ${name}`),
  unsupportedOptions: () =>
    fatal(SqlState.ProtocolViolation, "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
  // A client that waited for a server: `detail` says why the server logins failed meanwhile.
  loginTimeout: (detail?: string) => fatal(SqlState.ProtocolViolation, 'client_login_timeout (server down)', detail),
  queryWaitTimeout: (detail?: string) => fatal(SqlState.TooManyConnections, 'query_wait_timeout', detail),
  clientIdleTimeout: () => fatal(SqlState.IdleSessionTimeout, 'client_idle_timeout'),
  idleTransactionTimeout: () => fatal(SqlState.IdleInTransactionTimeout, 'idle transaction timeout'),
  // PgBouncer 1.25's wording; PostgreSQL 17's SQLSTATE for its own transaction_timeout.
  transactionTimeout: () => fatal(SqlState.TransactionTimeout, 'transaction timeout'),
  // 08P01 as PgBouncer: clients (PostgREST) match on it.
  statementModeTransaction: () =>
    fatal(SqlState.ProtocolViolation, 'transaction blocks not allowed in statement pooling mode'),
  serverConnFailed: (why: string) => fatal(SqlState.ConnectionFailure, why),
  /** PgBouncer's fast fail: the pool's logins fail and it has no server left (the cause's code). */
  serverLoginFailing: (cause: { sqlstate: string; message: string }) =>
    fatal(cause.sqlstate, `server login has been failing, cached error: ${cause.message} (server_login_retry)`),
  shuttingDown: () => fatal(SqlState.AdminShutdown, 'pooler is shutting down'),
  /** A client that waits for (or asks for) a server during SHUTDOWN WAIT_FOR_SERVERS. */
  serverShuttingDown: () => fatal(SqlState.AdminShutdown, 'server shutting down'),
  databaseDisabled: (db: string) => fatal(SqlState.CannotConnectNow, `database "${db}" is disabled`),
  queryTimeout: (detail?: string) => fatal(SqlState.QueryCanceled, 'query_timeout', detail),
  featureNotSupported: (why: string) => fatal(SqlState.FeatureNotSupported, why),
  // disable_pqexec: PgBouncer's wording and default SQLSTATE.
  pqexecDisallowed: () => fatal(SqlState.ProtocolViolation, 'PQexec disallowed'),
  // server_fast_close ended the session (PgBouncer's wording and default SQLSTATE).
  databaseChanged: () => fatal(SqlState.ProtocolViolation, 'database configuration changed'),
  pooler: (why: string) => fatal(SqlState.InternalError, why),
};
