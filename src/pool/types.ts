// What a pool needs of a client connection. Declared here, implemented by client/client-conn.ts,
// so the pool layer depends on an interface and the client layer imports the pool (not the reverse).
import type { PoolerError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ReplicationMode, ServerConn, ServerPeer } from '../server/server-conn.js';
import type { ListMember } from './list.js';

/** What a replication client asks for: its server gets these in its startup packet. */
export interface ReplicationRequest {
  readonly mode: ReplicationMode;
  /** The client's tracked parameters (physical replication allows no SET). */
  readonly params: ReadonlyMap<string, string>;
  /** The client's `options`, passed on as they are (CREATE SUBSCRIPTION sets extra_float_digits). */
  readonly options: string | null;
}

/**
 * A CancelRequest connection, held open while its cancel is forwarded, as PgBouncer holds it
 * (cl_waiting_cancel_req, then cl_active_cancel_req): the client learns that its cancel reached
 * the server when the pooler closes the connection, as PostgreSQL itself tells it.
 */
export interface CancelRequest {
  /** The forward is over (sent and closed by the server, failed, or not made): close the
   * connection with PgBouncer's reason. Calls after the first do nothing. */
  done(reason: string): void;
  /** Set by the forwarder while its forward is under way: stops it (the request timed out or
   * its client went away). */
  abort: (() => void) | null;
}

export interface PoolClient extends ServerPeer, ListMember {
  /** Lines about this client (the pool logs its reserve use under it, as PgBouncer does). */
  readonly log: Logger;
  /** The linked server, or null between transactions / while waiting. */
  server: ServerConn | null;
  /** When it started waiting for a server (cl_waiting, maxwait, query_wait_timeout). */
  waitStart: number;
  /** Told in this wait that it is queued (query_wait_notify). */
  waitNotified: boolean;
  /** Set for a replication connection: it gets a server of its own for its whole session. */
  readonly replication: ReplicationRequest | null;
  /** Set once the client is leaving: a session-mode server may then be given back. */
  readonly closing: boolean;
  /** No client message is half-forwarded: the server may be handed to someone else. */
  readonly atMessageBoundary: boolean;
  /** Extended-protocol messages were sent since the last Sync: the server is still needed. */
  readonly inExtendedQuery: boolean;
  /** A server was linked: sync parameters and forward what the client has queued. */
  onLinked(server: ServerConn): void;
  /** The pool took the server back after a transaction. */
  onUnlinked(): void;
  /** Send PgBouncer's NOTICE that the client is queued for a server; false if it is still
   * logging in (it gets none then). */
  notifyQueued(): boolean;
  /** Send the error and close the client. */
  fail(err: PoolerError): void;
}
