// node-postgres clients as the integration tests use them: connected with the test's own config,
// errors outside a query either ignored or kept for the test, and a few one-line queries.

import assert from 'node:assert/strict';
import pg from 'pg';

/** What node-postgres rejects with: the server's fields where there was an ErrorResponse. */
export type PgError = Error & { code?: string; severity?: string; routine?: string };

/**
 * A connected client with exactly `config`. Errors reported outside a query (a pooler FATAL, a
 * closed socket) go to `onError`, ignored unless set: the tests look at their queries instead.
 */
export async function connectClient(config: pg.ClientConfig, onError: (e: PgError) => void = () => undefined): Promise<pg.Client> {
  const client = new pg.Client(config);
  client.on('error', onError);
  await client.connect();
  return client;
}

export interface Watched {
  client: pg.Client;
  /** The first error the connection reports outside a query (a pooler FATAL, a closed socket). */
  error: Promise<PgError>;
}

/** A connected client, with the first error it reports outside a query kept as a promise. */
export async function watchedClient(config: pg.ClientConfig): Promise<Watched> {
  let report: (e: PgError) => void = () => undefined;
  const error = new Promise<PgError>((resolve) => { report = resolve; });
  const client = await connectClient(config, (e) => report(e));
  return { client, error };
}

/** Connect with `config`, run one query, disconnect; the rows. */
export async function queryOnce<R extends pg.QueryResultRow>(config: pg.ClientConfig, sql: string): Promise<R[]> {
  const client = await connectClient(config);
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The PostgreSQL backend the client's query runs on. */
export async function backendPid(client: pg.Client): Promise<number> {
  const r = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const v = r.rows[0]?.pid;
  assert.ok(typeof v === 'number', 'no pg_backend_pid()');
  return v;
}

/** end() every client, whatever state it is in. */
export async function endAll(clients: pg.Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
}
